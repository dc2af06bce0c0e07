//! The empirical Fisher `F = Gᵀ G / N` and its damped inverse
//! `F̂⁻¹ = (λ I + F)⁻¹`, worked through the gradient matrix `G` (`N`
//! per-sample gradients of `d` weights) without ever forming `F` for
//! selection (METHODS.md §2).
//!
//! `F̂` may be block-diagonal ([`Blocks`]): one block, one per parameter, or
//! fixed-size blocks within parameters. Each block `b` of `d_b` weights keeps
//! its gradients as `A_b = G_bᵀ` (`d_b x N`, one row per weight) and one of
//! two representations of its inverse ([`Path`]):
//!
//! | representation | build | `[F̂⁻¹]_qq` for all q | `F̂⁻¹ v` | memory |
//! |---|---|---|---|---|
//! | Woodbury: `K = NλI + AᵀA = L Lᵀ`, `L` kept | `N² d_b + N³/3` | `N² d_b` (`(1 − ‖L⁻¹a_q‖²)/λ`) | `4 N d_b + 2 N²` | `N²` |
//! | explicit `F̂_b⁻¹`, by the Woodbury recursion `r` samples at a time | `2 N d_b²` | free | `2 d_b²` | `d_b²` |
//!
//! (flops, multiply and add counted as two; memory in f64 values, beside the
//! `d_b N` of `A_b` itself; `r = 1` is the rank-1 recursion
//! `F̂⁻¹ ← F̂⁻¹ − (F̂⁻¹g)(F̂⁻¹g)ᵀ / (N + gᵀF̂⁻¹g)` of the official code.)
//! [`Path::Auto`] takes the explicit inverse where `d_b ≤ N`, Woodbury
//! elsewhere.
//!
//! The multi-weight OBS update ([`Fisher::obs_update`]) removes a set `P`
//! and moves the kept weights `R` optimally:
//! `δθ = −F̂⁻¹[:,P] (F̂⁻¹[P,P])⁻¹ θ_P`, equivalently
//! `δθ_R = F̂_RR⁻¹ F̂_RP θ_P`. Per block, it solves whichever system is
//! smallest:
//!
//! | path | system | cost |
//! |---|---|---|
//! | explicit inverse | `F̂⁻¹[P,P]`, `|P| x |P|` | `|P|³/3 + 2 d_b |P|` |
//! | kept set, `|R| < N` ([`Path::Auto`]) | `λI + A_R A_Rᵀ/N`, `|R| x |R|` | `N |R|² + |R|³/3` |
//! | Woodbury on the kept set | `NλI + A_Rᵀ A_R`, `N x N` | `N² |R| + N³/3` |
//!
//! Everything goes through a [`Dense`] implementation: f64 on the reference
//! and CPU backends, f32 for the calls the wgpu backend takes (see
//! [`crate::contract::dense`] for the choice of f64 and what f32 was measured to give;
//! [`Dense::unit_roundoff`] says which).

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use crate::contract::dense::{Dense, Matrix};
use crate::contract::error::{Error, Result};
use crate::contract::op::Transpose;

/// How `F̂` is split into diagonal blocks (weights in different blocks are
/// treated as uncorrelated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Blocks {
    /// One block of all weights (the CBS paper's MLP setting).
    #[default]
    Whole,
    /// One block per parameter (the official code's per-layer blocks).
    Parameters,
    /// Blocks of at most this many weights, never straddling parameters.
    Size(usize),
}

/// How each block's inverse is represented (see the module docs for costs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Path {
    /// The cheapest: explicit where `d_b ≤ N`, Woodbury elsewhere, and for
    /// updates the smallest system.
    #[default]
    Auto,
    /// `N x N` Woodbury systems everywhere.
    Woodbury,
    /// The explicit `d_b x d_b` inverse everywhere.
    Explicit,
}

/// Settings of a [`Fisher`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct FisherConfig {
    /// The damping `λ > 0` of `F̂ = λI + F` (1e-3 for the CBS MLP, 1e-5
    /// for its CNNs).
    pub damping: f64,
    /// The block structure.
    pub blocks: Blocks,
    /// The representation of each block's inverse.
    pub path: Path,
    /// Samples folded in per step of the explicit inverse's recursion
    /// (1 is the official rank-1 recursion; larger is the same inverse up to
    /// rounding, faster through GEMM).
    pub recursion_rank: usize,
}

impl Default for FisherConfig {
    fn default() -> Self {
        FisherConfig {
            damping: 1e-3,
            blocks: Blocks::Whole,
            path: Path::Auto,
            recursion_rank: 64,
        }
    }
}

impl FisherConfig {
    /// With damping `λ`.
    pub fn damping(mut self, damping: f64) -> Self {
        self.damping = damping;
        self
    }

    /// With this block structure.
    pub fn blocks(mut self, blocks: Blocks) -> Self {
        self.blocks = blocks;
        self
    }

    /// With this inverse representation.
    pub fn path(mut self, path: Path) -> Self {
        self.path = path;
        self
    }

    /// With this many samples per recursion step.
    pub fn recursion_rank(mut self, rank: usize) -> Self {
        self.recursion_rank = rank;
        self
    }
}

/// One diagonal block's inverse.
#[derive(Clone, Debug)]
enum Inverse {
    /// The Cholesky factor `L` of `K = NλI + AᵀA`.
    Woodbury { l: Matrix },
    /// `F̂_b⁻¹` itself.
    Explicit(Matrix),
}

impl Inverse {
    /// The matrix kept: `L` or `F̂_b⁻¹`.
    fn matrix(&self) -> &Matrix {
        match self {
            Inverse::Woodbury { l } => l,
            Inverse::Explicit(inv) => inv,
        }
    }
}

#[derive(Clone, Debug)]
struct Block {
    /// The block's weights, as a range of the flat index.
    range: Range<usize>,
    /// `G_bᵀ`: one row of `N` per-sample gradients per weight.
    a: Matrix,
    inverse: Inverse,
}

/// The empirical Fisher of `d` weights from `N` per-sample gradients, with
/// its damped inverse; see the module docs.
pub struct Fisher<'d, D: Dense + ?Sized> {
    dense: &'d D,
    samples: usize,
    dim: usize,
    damping: f64,
    path: Path,
    blocks: Vec<Block>,
}

impl<D: Dense + ?Sized> core::fmt::Debug for Fisher<'_, D> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Fisher")
            .field("samples", &self.samples)
            .field("dim", &self.dim)
            .field("damping", &self.damping)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

/// Weights per chunk when the Woodbury diagonal solves rows.
impl<D: Dense + ?Sized> Drop for Fisher<'_, D> {
    /// Releases what [`Fisher::new`] retained.
    fn drop(&mut self) {
        for b in &self.blocks {
            self.dense.release(&b.a);
            self.dense.release(b.inverse.matrix());
        }
    }
}

const DIAGONAL_CHUNK: usize = 1024;

impl<'d, D: Dense + ?Sized> Fisher<'d, D> {
    /// Builds the Fisher of the row-major `samples x d` per-sample gradient
    /// matrix `gradients` (as [`crate::Host::per_sample_gradients`] gives
    /// it), `d` the sum of `sizes` (the parameters' lengths, in column
    /// order), and factors every block's inverse.
    ///
    /// Fails on no samples, an empty or zero-length parameter, a length
    /// mismatch, non-finite gradients, a damping that is not finite and
    /// positive, or a zero block size.
    pub fn new(
        dense: &'d D,
        gradients: &[f32],
        samples: usize,
        sizes: &[usize],
        config: &FisherConfig,
    ) -> Result<Self> {
        if samples == 0 {
            return Err(Error::InvalidArgument {
                what: "number of per-sample gradients",
                expected: "at least 1",
            });
        }
        if sizes.is_empty() || sizes.contains(&0) {
            return Err(Error::InvalidArgument {
                what: "parameter sizes of the Fisher",
                expected: "at least one parameter, none of them empty",
            });
        }
        if !(config.damping.is_finite() && config.damping > 0.0) {
            return Err(Error::FractionOutOfRange {
                what: "Fisher damping (must be finite and > 0)",
                value: config.damping,
            });
        }
        if config.recursion_rank == 0 || config.blocks == Blocks::Size(0) {
            return Err(Error::InvalidArgument {
                what: "Fisher block size or recursion rank",
                expected: "at least 1",
            });
        }
        let dim = sizes.iter().try_fold(0usize, |s, &n| s.checked_add(n));
        let dim = dim.ok_or(Error::ShapeOverflow)?;
        let expected = dim.checked_mul(samples).ok_or(Error::ShapeOverflow)?;
        if gradients.len() != expected {
            return Err(Error::LengthMismatch {
                what: "per-sample gradients (samples x weights)",
                expected,
                found: gradients.len(),
            });
        }
        if gradients.iter().any(|g| !g.is_finite()) {
            return Err(Error::NonFinite {
                what: "per-sample gradients",
            });
        }
        let mut fisher = Fisher {
            dense,
            samples,
            dim,
            damping: config.damping,
            path: config.path,
            blocks: Vec::new(),
        };
        // Each block's gradients and inverse are operands of every later
        // call: kept where the calls run (device memory) where the
        // implementation can, released when the Fisher is dropped (a block
        // is pushed before its inverse is built, so that an error on the way
        // releases what was retained).
        for range in block_ranges(sizes, config.blocks) {
            let a = gather_block(gradients, samples, dim, range.clone())?;
            dense.retain(&a)?;
            fisher.blocks.push(Block {
                range,
                a,
                inverse: Inverse::Explicit(Matrix::zeros(0, 0)),
            });
            let last = fisher.blocks.len() - 1;
            let inverse = fisher.invert(&fisher.blocks[last].a, config)?;
            dense.retain(inverse.matrix())?;
            fisher.blocks[last].inverse = inverse;
        }
        Ok(fisher)
    }

    /// The number of weights `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of samples `N`.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The damping `λ`.
    pub fn damping(&self) -> f64 {
        self.damping
    }

    /// The blocks, as ranges of the flat weight index.
    pub fn blocks(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.blocks.iter().map(|b| b.range.clone())
    }

    fn invert(&self, a: &Matrix, config: &FisherConfig) -> Result<Inverse> {
        let (len, n) = (a.rows(), self.samples);
        let explicit = match config.path {
            Path::Auto => len <= n,
            Path::Woodbury => false,
            Path::Explicit => true,
        };
        if !explicit {
            let mut l = Matrix::scaled_identity(n, n as f64 * self.damping);
            self.dense.gram(&mut l, a, 1.0)?;
            self.dense.cholesky(&mut l)?;
            return Ok(Inverse::Woodbury { l });
        }
        // F̂⁻¹ ← F̂⁻¹ − U (N I + Gₘᵀ U)⁻¹ Uᵀ with U = F̂⁻¹ Gₘ, r samples at a time.
        let mut inv = Matrix::scaled_identity(len, 1.0 / self.damping);
        let mut start = 0;
        while start < n {
            let r = config.recursion_rank.min(n - start);
            let mut gm = Matrix::zeros(len, r);
            for q in 0..len {
                gm.row_mut(q).copy_from_slice(&a.row(q)[start..start + r]);
            }
            let mut u = Matrix::zeros(len, r);
            self.dense
                .matmul(&mut u, 0.0, &inv, Transpose::No, &gm, Transpose::No, 1.0)?;
            let mut s = Matrix::scaled_identity(r, n as f64);
            self.dense
                .matmul(&mut s, 1.0, &gm, Transpose::Yes, &u, Transpose::No, 1.0)?;
            self.dense.cholesky(&mut s)?;
            // Rows of U become L⁻¹-solved: U S⁻¹ Uᵀ = U' U'ᵀ.
            self.dense.solve_rows(&s, Transpose::No, &mut u)?;
            self.dense.gram(&mut inv, &u.transpose(), -1.0)?;
            start += r;
        }
        Ok(Inverse::Explicit(inv))
    }

    /// The undamped diagonal `F_qq = ‖g_q‖² / N`.
    pub fn fisher_diagonal(&self) -> Vec<f64> {
        let n = self.samples as f64;
        let mut out = Vec::with_capacity(self.dim);
        for b in &self.blocks {
            out.extend((0..b.a.rows()).map(|q| dot(b.a.row(q), b.a.row(q)) / n));
        }
        out
    }

    /// One undamped entry `F_ij` (zero across blocks).
    #[track_caller]
    pub fn entry(&self, i: usize, j: usize) -> f64 {
        let (bi, bj) = (self.block_of(i), self.block_of(j));
        if bi != bj {
            return 0.0;
        }
        let b = &self.blocks[bi];
        let s = b.range.start;
        dot(b.a.row(i - s), b.a.row(j - s)) / self.samples as f64
    }

    /// Weight `q`'s `N` per-sample gradients, with the index of its block.
    #[track_caller]
    pub fn gradient_row(&self, q: usize) -> (usize, &[f64]) {
        let b = self.block_of(q);
        (b, self.blocks[b].a.row(q - self.blocks[b].range.start))
    }

    /// `G_b v_b` for every block `b` (`N` values each): the per-sample
    /// directional derivatives along `v`.
    pub fn sample_products(&self, v: &[f64]) -> Result<Vec<Vec<f64>>> {
        self.check_len(v.len())?;
        self.blocks
            .iter()
            .map(|b| self.samples_times(b, &v[b.range.clone()]))
            .collect()
    }

    fn block_of(&self, i: usize) -> usize {
        self.blocks.partition_point(|b| b.range.end <= i)
    }

    /// The diagonal of `F̂⁻¹`, the denominators of WoodFisher's scores.
    ///
    /// Each entry is at least `1 / F̂_qq` (Cauchy–Schwarz); a value that
    /// rounding takes below that bound is raised to it.
    pub fn inverse_diagonal(&self) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(self.dim);
        let fdiag = self.fisher_diagonal();
        for b in &self.blocks {
            match &b.inverse {
                Inverse::Explicit(inv) => out.extend((0..inv.rows()).map(|q| inv.get(q, q))),
                Inverse::Woodbury { l } => {
                    let mut q = 0;
                    while q < b.a.rows() {
                        let end = (q + DIAGONAL_CHUNK).min(b.a.rows());
                        let rows: Vec<usize> = (q..end).collect();
                        let mut w = b.a.select_rows(&rows);
                        self.dense.solve_rows(l, Transpose::No, &mut w)?;
                        out.extend(
                            (0..w.rows()).map(|r| (1.0 - dot(w.row(r), w.row(r))) / self.damping),
                        );
                        q = end;
                    }
                }
            }
            for q in b.range.clone() {
                out[q] = out[q].max(1.0 / (self.damping + fdiag[q]));
            }
        }
        Ok(out)
    }

    /// `F v` (undamped), block by block through `G`: `A (Aᵀ v) / N`.
    pub fn fisher_times(&self, v: &[f64]) -> Result<Vec<f64>> {
        let y = self.sample_products(v)?;
        self.gradient_products(&y)
    }

    /// `G_bᵀ y_b / N` for every block, concatenated: with `y` from
    /// [`Fisher::sample_products`] of `v`, this is `F v`.
    pub fn gradient_products(&self, y: &[Vec<f64>]) -> Result<Vec<f64>> {
        crate::contract::check::same_len("blocks of sample products", self.blocks.len(), y.len())?;
        let n = self.samples as f64;
        let mut out = vec![0.0; self.dim];
        for (b, y) in self.blocks.iter().zip(y) {
            crate::contract::check::same_len("sample products", self.samples, y.len())?;
            let mut z = Matrix::zeros(1, b.a.rows());
            let y = Matrix::row_vector(y.clone());
            self.dense
                .matmul(&mut z, 0.0, &y, Transpose::No, &b.a, Transpose::Yes, 1.0)?;
            for (o, &z) in out[b.range.clone()].iter_mut().zip(z.data()) {
                *o = z / n;
            }
        }
        Ok(out)
    }

    /// `vᵀ F v = Σ_b ‖G_b v_b‖² / N` (undamped): CBS-S's objective when
    /// `v` is `θ` restricted to the pruned set.
    pub fn quadratic(&self, v: &[f64]) -> Result<f64> {
        self.check_len(v.len())?;
        let mut total = 0.0;
        for b in &self.blocks {
            let y = self.samples_times(b, &v[b.range.clone()])?;
            total += dot(&y, &y);
        }
        Ok(total / self.samples as f64)
    }

    /// CBS-S's objective `θ_Pᵀ F_PP θ_P` of the pruned set `pruned`.
    pub fn objective(&self, theta: &[f64], pruned: &[bool]) -> Result<f64> {
        self.check_len(theta.len())?;
        self.check_len(pruned.len())?;
        self.quadratic(&restrict(theta, pruned))
    }

    /// `F̂⁻¹ v`.
    pub fn inverse_times(&self, v: &[f64]) -> Result<Vec<f64>> {
        self.check_len(v.len())?;
        let mut out = vec![0.0; self.dim];
        for b in &self.blocks {
            let vb = &v[b.range.clone()];
            let ob = &mut out[b.range.clone()];
            match &b.inverse {
                Inverse::Explicit(inv) => {
                    let mut z = Matrix::zeros(1, vb.len());
                    let row = Matrix::row_vector(vb.to_vec());
                    self.dense
                        .matmul(&mut z, 0.0, &row, Transpose::No, inv, Transpose::No, 1.0)?;
                    ob.copy_from_slice(z.data());
                }
                Inverse::Woodbury { l } => {
                    let z = self.woodbury_solve(&b.a, l, vb)?;
                    ob.copy_from_slice(&z);
                }
            }
        }
        Ok(out)
    }

    /// `(λI + A Aᵀ/N)⁻¹ v = (v − A K⁻¹ Aᵀ v) / λ` with `K = L Lᵀ`.
    fn woodbury_solve(&self, a: &Matrix, l: &Matrix, v: &[f64]) -> Result<Vec<f64>> {
        let mut y = Matrix::zeros(1, self.samples);
        let row = Matrix::row_vector(v.to_vec());
        self.dense
            .matmul(&mut y, 0.0, &row, Transpose::No, a, Transpose::No, 1.0)?;
        self.dense.solve_rows(l, Transpose::No, &mut y)?;
        self.dense.solve_rows(l, Transpose::Yes, &mut y)?;
        let mut z = Matrix::zeros(1, a.rows());
        self.dense
            .matmul(&mut z, 0.0, &y, Transpose::No, a, Transpose::Yes, 1.0)?;
        Ok(v.iter()
            .zip(z.data())
            .map(|(&v, &z)| (v - z) / self.damping)
            .collect())
    }

    /// `G_b v_b` (`N` values): `v_bᵀ A_b`.
    fn samples_times(&self, b: &Block, v: &[f64]) -> Result<Vec<f64>> {
        let mut y = Matrix::zeros(1, self.samples);
        let row = Matrix::row_vector(v.to_vec());
        self.dense
            .matmul(&mut y, 0.0, &row, Transpose::No, &b.a, Transpose::No, 1.0)?;
        Ok(y.into_data())
    }

    /// WoodFisher's update of removing `pruned` one weight at a time, summed:
    /// `δθ = −F̂⁻¹ v` with `v_q = θ_q / [F̂⁻¹]_qq` on the pruned set, then
    /// `δθ_P = −θ_P` so that pruned weights are exactly zero. `diagonal` is
    /// [`Fisher::inverse_diagonal`].
    pub fn woodfisher_update(
        &self,
        theta: &[f64],
        pruned: &[bool],
        diagonal: &[f64],
    ) -> Result<Vec<f64>> {
        self.check_len(theta.len())?;
        self.check_len(pruned.len())?;
        self.check_len(diagonal.len())?;
        if theta.iter().any(|t| !t.is_finite()) {
            return Err(Error::NonFinite { what: "weights" });
        }
        let v: Vec<f64> = (0..self.dim)
            .map(|q| {
                if pruned[q] {
                    theta[q] / diagonal[q]
                } else {
                    0.0
                }
            })
            .collect();
        let mut delta = self.inverse_times(&v)?;
        for q in 0..self.dim {
            delta[q] = if pruned[q] { -theta[q] } else { -delta[q] };
        }
        Ok(delta)
    }

    /// The exact multi-weight OBS update of removing `pruned`:
    /// `δθ = −F̂⁻¹[:,P] (F̂⁻¹[P,P])⁻¹ θ_P` (so `δθ_P = −θ_P`), solved per
    /// block through the smallest system (module docs).
    pub fn obs_update(&self, theta: &[f64], pruned: &[bool]) -> Result<Vec<f64>> {
        self.check_len(theta.len())?;
        self.check_len(pruned.len())?;
        if theta.iter().any(|t| !t.is_finite()) {
            return Err(Error::NonFinite { what: "weights" });
        }
        let mut delta = vec![0.0; self.dim];
        for b in &self.blocks {
            let s = b.range.start;
            let (p, r): (Vec<usize>, Vec<usize>) = (0..b.a.rows()).partition(|&q| pruned[s + q]);
            if p.is_empty() {
                continue;
            }
            for &q in &p {
                delta[s + q] = -theta[s + q];
            }
            if r.is_empty() {
                continue;
            }
            let kept = match &b.inverse {
                Inverse::Explicit(inv) => {
                    let theta_p = p.iter().map(|&q| theta[s + q]).collect();
                    self.update_explicit(inv, &p, &r, theta_p)?
                }
                Inverse::Woodbury { .. } => {
                    let range = b.range.clone();
                    self.update_kept(b, &r, &restrict(&theta[range.clone()], &pruned[range]))?
                }
            };
            for (&q, d) in r.iter().zip(kept) {
                delta[s + q] = d;
            }
        }
        Ok(delta)
    }

    /// `δθ_R = −F̂⁻¹[R,P] (F̂⁻¹[P,P])⁻¹ θ_P` from the explicit inverse.
    fn update_explicit(
        &self,
        inv: &Matrix,
        p: &[usize],
        r: &[usize],
        theta_p: Vec<f64>,
    ) -> Result<Vec<f64>> {
        let mut m = inv.select(p);
        self.dense.cholesky(&mut m)?;
        let mut x = Matrix::row_vector(theta_p);
        self.dense.solve_rows(&m, Transpose::No, &mut x)?;
        self.dense.solve_rows(&m, Transpose::Yes, &mut x)?;
        // xᵀ F̂⁻¹[P,:] = (F̂⁻¹[:,P] x)ᵀ by symmetry.
        let rows = inv.select_rows(p);
        let mut y = Matrix::zeros(1, inv.cols());
        self.dense
            .matmul(&mut y, 0.0, &x, Transpose::No, &rows, Transpose::No, 1.0)?;
        Ok(r.iter().map(|&q| -y.data()[q]).collect())
    }

    /// `δθ_R = F̂_RR⁻¹ F̂_RP θ_P` in a Woodbury block, through the kept set's
    /// `|R| x |R|` system or its `N x N` Woodbury system.
    /// `pruned_theta` is the block's `θ`, zero off `P`.
    fn update_kept(&self, b: &Block, r: &[usize], pruned_theta: &[f64]) -> Result<Vec<f64>> {
        let n = self.samples;
        let a_r = b.a.select_rows(r);
        // rhs = F̂_RP θ_P = A_R (A_Pᵀ θ_P) / N, A_Pᵀ θ_P read from the block
        // in place rather than from a copy of A_P.
        let y = Matrix::row_vector(self.samples_times(b, pruned_theta)?);
        let mut rhs = Matrix::zeros(1, r.len());
        self.dense.matmul(
            &mut rhs,
            0.0,
            &y,
            Transpose::No,
            &a_r,
            Transpose::Yes,
            1.0 / n as f64,
        )?;
        if self.path == Path::Auto && r.len() < n {
            let mut f = Matrix::scaled_identity(r.len(), self.damping);
            self.dense.gram(&mut f, &a_r.transpose(), 1.0 / n as f64)?;
            self.dense.cholesky(&mut f)?;
            self.dense.solve_rows(&f, Transpose::No, &mut rhs)?;
            self.dense.solve_rows(&f, Transpose::Yes, &mut rhs)?;
            return Ok(rhs.into_data());
        }
        let mut kr = Matrix::scaled_identity(n, n as f64 * self.damping);
        self.dense.gram(&mut kr, &a_r, 1.0)?;
        self.dense.cholesky(&mut kr)?;
        self.woodbury_solve(&a_r, &kr, rhs.data())
    }

    fn check_len(&self, found: usize) -> Result<()> {
        if found != self.dim {
            return Err(Error::LengthMismatch {
                what: "values per weight of the Fisher",
                expected: self.dim,
                found,
            });
        }
        Ok(())
    }
}

/// `θ` with every kept entry zeroed.
pub fn restrict(theta: &[f64], pruned: &[bool]) -> Vec<f64> {
    theta
        .iter()
        .zip(pruned)
        .map(|(&t, &p)| if p { t } else { 0.0 })
        .collect()
}

/// The blocks' ranges of the flat index.
fn block_ranges(sizes: &[usize], blocks: Blocks) -> Vec<Range<usize>> {
    let dim: usize = sizes.iter().sum();
    let mut out = Vec::new();
    let mut start = 0;
    for &size in sizes {
        match blocks {
            Blocks::Whole => {}
            Blocks::Parameters => out.push(start..start + size),
            Blocks::Size(b) => {
                let mut s = start;
                while s < start + size {
                    let e = (s + b).min(start + size);
                    out.push(s..e);
                    s = e;
                }
            }
        }
        start += size;
    }
    if blocks == Blocks::Whole {
        out.push(0..dim);
    }
    out
}

/// `A = G[:, range]ᵀ` in f64, from the row-major `samples x dim` `G`.
fn gather_block(g: &[f32], samples: usize, dim: usize, range: Range<usize>) -> Result<Matrix> {
    let len = range.len();
    let mut a = vec![0.0f64; len * samples];
    // Tiles of samples keep both the reads and the writes cache-friendly.
    const TILE: usize = 64;
    for n0 in (0..samples).step_by(TILE) {
        let n1 = (n0 + TILE).min(samples);
        for q in 0..len {
            let out = &mut a[q * samples..(q + 1) * samples];
            for n in n0..n1 {
                out[n] = f64::from(g[n * dim + range.start + q]);
            }
        }
    }
    Matrix::new(len, samples, a)
}

/// A dot product with four accumulators (a fixed order: deterministic).
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Multiplies the update of the kept weights by `scale` (the pruned ones
/// stay at `−θ_P`, so they still end at zero): `scale` < 1 damps a step
/// that overshoots far from the trained weights. Fails when the lengths
/// differ.
pub fn scale_update(delta: &mut [f64], pruned: &[bool], scale: f64) -> Result<()> {
    crate::contract::check::same_len("pruned flags of the update", delta.len(), pruned.len())?;
    for (d, &p) in delta.iter_mut().zip(pruned) {
        if !p {
            *d *= scale;
        }
    }
    Ok(())
}
