//! Exact layer-wise OBS (METHODS.md §5; Frantar, Singh, Alistarh 2022,
//! "Optimal Brain Compression"), with the Combinatorial Brain Surgeon's
//! swap search on top: the per-row problem solved exactly where SparseGPT
//! approximates it.
//!
//! For one output row `w` and the inverse Hessian `G = H⁻¹`, removing the
//! set `P` with the best update of the other weights costs
//! `c(P) = w_Pᵀ [G_PP]⁻¹ w_P` (`= δ H δᵀ`) and moves the row by
//! `δ = −w_P [G_PP]⁻¹ G_P,:`.
//!
//! **Greedy.** Remove the weight of least `w_q² / G_qq`, update the row by
//! `w −= (w_q / G_qq) G_:,q` and downdate `G −= G_:,q G_q,: / G_qq`;
//! repeat. Each step's cost is recorded. With
//! [`Allocation::Layer`] (the default, as OBC does) every row is run to the
//! end and the layer's `k` removals go to the `k` smallest step costs of all
//! rows (ties: lowest row, then earliest step), so rows lose different
//! numbers and the layer exactly `k`; [`Allocation::Row`] removes exactly
//! `round(s · in)` from every row.
//!
//! **Swaps.** Then, per row, the set `P` is refined by single swaps (a
//! removed weight `i` back, a kept `j` out) judged exactly: with
//! `M = [G_PP]⁻¹`, `a = M w_P`, `t_j = G_j,P a`, `z_j = M G_P,j`,
//! `s_j = G_jj − G_j,P z_j`, the swap changes the cost by
//! `−a_i²/M_ii + (w_j − t_j + z_ji a_i/M_ii)² / (s_j + z_ji²/M_ii)`. The
//! best swap over all pairs (same group for N:M) is applied while it lowers
//! the cost, up to [`ObsConfig::swaps`] times; so greedy + swaps is never
//! worse than greedy.
//!
//! **Blocks.** `G = H⁻¹` of a wide layer is large and the greedy costs
//! `in³/3` per row. With `block: Some(b)` the columns are taken in blocks
//! of `b`, as SparseGPT takes them: within a block the same exact greedy and
//! swaps run on `G_b = U_bbᵀ U_bb` (the block of the inverse of the trailing
//! Hessian `H[i1.., i1..]`, from the upper factor `U` of `H⁻¹`), which is the
//! exact OBS problem for the block's weights when the columns before it are
//! fixed and every column from the block on may compensate; the update of
//! the columns after the block is SparseGPT's lazy update. The layer's
//! count is spread over blocks as in [`super::sparsegpt()`]. With
//! `b = in` this is the exact path.

use alloc::vec;
use alloc::vec::Vec;

use crate::contract::dense::{Dense, Matrix, map_tasks};
use crate::contract::error::{Error, Result};
use crate::contract::granularity::NofM;
use crate::contract::mask::Mask;
use crate::contract::op::Transpose;
use crate::contract::reference::ReferenceBackend;
use crate::contract::shape::Shape;

use super::hessian::{PERCDAMP, damped_hessian, inverse_factor};
use super::sparsegpt::{ROWS_PER_TASK, check_block, lazy_update, zero_dead_columns};
use super::stats::LayerStats;
use super::{Pruned, Target, block_share, check_weights, pruned_total};

/// How a layer's removals are shared among its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Allocation {
    /// The layer loses exactly `round(s · out · in)`, rows as many as their
    /// greedy costs earn (OBC's rule).
    #[default]
    Layer,
    /// Every row loses exactly `round(s · in)`, so the layer loses
    /// `out · round(s · in)`, which may differ from `round(s · out · in)`.
    Row,
}

/// How [`obs()`] runs.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct ObsConfig {
    /// What to remove.
    pub target: Target,
    /// `None`: the exact per-row problem over all columns. `Some(b)`:
    /// column blocks of `b` (a multiple of `m` for N:M), far cheaper on wide
    /// layers; see the module docs.
    pub block: Option<usize>,
    /// Most swaps per row and block after the greedy (0: greedy only).
    pub swaps: usize,
    /// How removals are shared among rows (unstructured targets).
    pub allocation: Allocation,
    /// Dampening as a fraction of the mean diagonal of `H` (0.01).
    pub percdamp: f64,
}

impl ObsConfig {
    /// The exact path for a target: no blocks, 8 swaps per row, removals
    /// allocated across the layer, 1% dampening.
    pub fn new(target: Target) -> Self {
        ObsConfig {
            target,
            block: None,
            swaps: 8,
            allocation: Allocation::Layer,
            percdamp: PERCDAMP,
        }
    }

    /// Column blocks of `block` (`None` for the exact path).
    pub fn block(mut self, block: Option<usize>) -> Self {
        self.block = block;
        self
    }

    /// Another swap limit.
    pub fn swaps(mut self, swaps: usize) -> Self {
        self.swaps = swaps;
        self
    }

    /// Another allocation.
    pub fn allocation(mut self, allocation: Allocation) -> Self {
        self.allocation = allocation;
        self
    }

    /// Another dampening.
    pub fn percdamp(mut self, percdamp: f64) -> Self {
        self.percdamp = percdamp;
        self
    }
}

/// Exact layer-wise OBS on one layer `W: [out, in]` (f64) with its
/// statistics (the Gram matrix is needed); see the module docs. The
/// per-row work runs through [`Dense::run_tasks`] (in parallel on the CPU
/// backend) in f64 host arithmetic, the same on every backend; the
/// Cholesky, the triangular solve and the block updates go through `dense`.
///
/// Cost per row, for `k` removed of a block of `b` columns (`b = in` on
/// the exact path): the greedy `≈ b³/3` multiply-adds, the swap search
/// `≈ k²·(b − k) + k³/3` to set up (`≈ b³/8` at 50%) and `≈ 4·k·(b − k)`
/// per swap; so `≈ out · in³/2` for the exact path and `≈ out · in · b²/2`
/// with blocks. Memory `8 · b²` bytes per task in flight (twice with
/// swaps), plus the `3 · 8 in²` of the factorisation. Measured on 2 cores
/// (`prunus bench layerwise`): 0.9 s per row at `in = 1536`, so the exact
/// path suits layers up to a few thousand inputs; blocks of 128 stay
/// within seconds to minutes on 7B shapes and well below SparseGPT's error.
pub fn obs<D: Dense + ?Sized>(
    dense: &D,
    weights: &Matrix,
    stats: &LayerStats,
    config: &ObsConfig,
) -> Result<Pruned> {
    check_weights(weights, stats)?;
    let (out, cols) = (weights.rows(), weights.cols());
    config.target.validate("OBS layer", cols)?;
    let block = config.block.unwrap_or(cols);
    check_block(block, config.target)?;
    let hessian = damped_hessian(stats, config.percdamp)?;
    let dead = hessian.dead;
    let u = inverse_factor(dense, hessian.matrix)?;
    let mut w = weights.clone();
    zero_dead_columns(&mut w, &dead);
    let (layer_total, row_total) = match config.target {
        Target::Sparsity(s) => (pruned_total(s, out * cols), pruned_total(s, cols)),
        Target::NofM(_) => (0, 0),
    };
    let mut keep = vec![true; out * cols];
    let mut loss = 0.0;
    for i1 in (0..cols).step_by(block) {
        let i2 = (i1 + block).min(cols);
        let width = i2 - i1;
        let mut ubb = Matrix::zeros(width, width);
        for (t, i) in (i1..i2).enumerate() {
            ubb.row_mut(t).copy_from_slice(&u.row(i)[i1..i2]);
        }
        let mut g = Matrix::zeros(width, width);
        dense.matmul(&mut g, 0.0, &ubb, Transpose::Yes, &ubb, Transpose::No, 1.0)?;
        let (steps, group) = match (config.target, config.allocation) {
            (Target::NofM(p), _) => ((p.m - p.n) * (width / p.m), Some(p)),
            (Target::Sparsity(_), Allocation::Layer) => (width, None),
            (Target::Sparsity(_), Allocation::Row) => {
                (block_share(row_total, cols, i1, i2) as usize, None)
            }
        };
        let traces = per_row(dense, out, |r| greedy(&g, &w.row(r)[i1..i2], steps, group))?;
        let counts = match (config.target, config.allocation) {
            (Target::Sparsity(_), Allocation::Layer) => {
                allocate(&traces, block_share(layer_total, cols, i1, i2) as usize)
            }
            _ => vec![steps; out],
        };
        let rows = per_row(dense, out, |r| {
            let mut pruned = vec![false; width];
            for &q in &traces[r].order[..counts[r]] {
                pruned[q] = true;
            }
            let (a, cost) = refine(&g, &w.row(r)[i1..i2], &mut pruned, group, config.swaps)?;
            // e = U_bb[:, P] a: the row's error, fed to every column from i1.
            let mut e = vec![0.0; width];
            let members: Vec<usize> = (0..width).filter(|&q| pruned[q]).collect();
            for (l, el) in e.iter_mut().enumerate() {
                let urow = ubb.row(l);
                *el = members.iter().zip(&a).map(|(&p, ap)| urow[p] * ap).sum();
            }
            Ok((pruned, e, cost))
        })?;
        let mut errors = Matrix::zeros(out, width);
        for (r, (pruned, e, cost)) in rows.into_iter().enumerate() {
            let row = &mut w.row_mut(r)[i1..i2];
            for (j, v) in row.iter_mut().enumerate() {
                // Columns before j in the block are untouched by e_l, l > j.
                let delta: f64 = (0..=j).map(|l| e[l] * ubb.get(l, j)).sum();
                *v = if pruned[j] { 0.0 } else { *v - delta };
            }
            for (c, &p) in pruned.iter().enumerate() {
                keep[r * cols + i1 + c] = !p;
            }
            errors.row_mut(r).copy_from_slice(&e);
            loss += cost / 2.0;
        }
        lazy_update(dense, &mut w, &errors, &u, i1, i2)?;
    }
    let mask = Mask::from_bools(Shape::matrix(out, cols)?, &keep)?;
    Ok(Pruned {
        weights: w,
        mask,
        loss,
    })
}

/// `f(r)` for every row, in chunks through [`Dense::run_tasks`], the first
/// error returned.
fn per_row<D, T>(dense: &D, out: usize, f: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>>
where
    D: Dense + ?Sized,
    T: Send + 'static,
{
    let chunks = map_tasks(dense, out.div_ceil(ROWS_PER_TASK), |task| {
        let first = task * ROWS_PER_TASK;
        (first..(first + ROWS_PER_TASK).min(out))
            .map(&f)
            .collect::<Result<Vec<T>>>()
    })?;
    let mut rows = Vec::with_capacity(out);
    for chunk in chunks {
        rows.extend(chunk?);
    }
    Ok(rows)
}

/// The greedy's removal order and the cost of each step.
struct Trace {
    order: Vec<usize>,
    increments: Vec<f64>,
}

/// Rank-one downdates of [`greedy`] held back and applied to its buffer
/// in one sweep: the sweep reads and writes the `a × a` survivors once per
/// this many steps instead of once per step.
const LAZY: usize = 16;

/// Greedy exact OBS on one row: `steps` removals, each the weight of least
/// `w_q² / G_qq` (ties to the lowest index) among those its N:M group still
/// allows, with the row update and the downdate of `G` on the survivors.
///
/// The survivors' `G` is the leading `a × a` block of one `n × n` buffer
/// (row stride `n`) minus the pending downdates `c cᵀ / d` of the last
/// steps (at most [`LAZY`]); the diagonal is kept current, a step forms
/// only the pivot's column, and a removed position takes the last
/// survivor's row and column.
fn greedy(g: &Matrix, row: &[f64], steps: usize, group: Option<NofM>) -> Result<Trace> {
    let n = row.len();
    let mut alive: Vec<usize> = (0..n).collect();
    let mut m = g.data().to_vec();
    let mut diag: Vec<f64> = (0..n).map(|i| m[i * n + i]).collect();
    let mut pending: Vec<(Vec<f64>, f64)> = Vec::with_capacity(LAZY);
    let mut v = row.to_vec();
    let mut removed_in_group = vec![0usize; group.map_or(0, |p| n / p.m)];
    let mut order = Vec::with_capacity(steps);
    let mut increments = Vec::with_capacity(steps);
    for _ in 0..steps {
        let a = alive.len();
        let mut best: Option<(usize, f64)> = None;
        for (p, &q) in alive.iter().enumerate() {
            if let Some(pat) = group
                && removed_in_group[q / pat.m] >= pat.m - pat.n
            {
                continue;
            }
            let d = diag[p];
            if d.is_nan() || d <= 0.0 {
                return Err(Error::NotPositiveDefinite { pivot: q });
            }
            let score = v[p] * v[p] / d;
            let better = best.is_none_or(|(bp, s)| {
                score.total_cmp(&s).then(q.cmp(&alive[bp])) == core::cmp::Ordering::Less
            });
            if better {
                best = Some((p, score));
            }
        }
        let Some((p, score)) = best else {
            break;
        };
        let q = alive[p];
        let d = diag[p];
        // The pivot's current column: the buffer's minus the pending ones.
        let mut col: Vec<f64> = (0..a).map(|i| m[i * n + p]).collect();
        for (c, dk) in &pending {
            let f = c[p] / dk;
            for (x, y) in col.iter_mut().zip(c) {
                *x -= f * y;
            }
        }
        let f = v[p] / d;
        for ((vj, dj), cj) in v.iter_mut().zip(diag.iter_mut()).zip(&col) {
            *vj -= f * cj;
            *dj -= cj * cj / d;
        }
        pending.push((col, d));
        // Position p takes the last survivor's row and column.
        let last = a - 1;
        if p != last {
            m.copy_within(last * n..last * n + a, p * n);
            for i in 0..a {
                m[i * n + p] = m[i * n + last];
            }
        }
        for (c, _) in &mut pending {
            c.swap_remove(p);
        }
        v.swap_remove(p);
        diag.swap_remove(p);
        alive.swap_remove(p);
        if pending.len() == LAZY {
            for i in 0..last {
                let r = &mut m[i * n..i * n + last];
                for (c, dk) in &pending {
                    let f = c[i] / dk;
                    for (x, y) in r.iter_mut().zip(c) {
                        *x -= f * y;
                    }
                }
            }
            pending.clear();
        }
        if let Some(pat) = group {
            removed_in_group[q / pat.m] += 1;
        }
        order.push(q);
        increments.push(score);
    }
    Ok(Trace { order, increments })
}

/// Per-row counts: the `total` smallest step costs of all rows (ties: lowest
/// row, then earliest step), counted per row.
fn allocate(traces: &[Trace], total: usize) -> Vec<usize> {
    let mut steps: Vec<(f64, usize, usize)> = traces
        .iter()
        .enumerate()
        .flat_map(|(r, t)| {
            t.increments
                .iter()
                .enumerate()
                .map(move |(s, &c)| (c, r, s))
        })
        .collect();
    let total = total.min(steps.len());
    if total < steps.len() {
        steps.select_nth_unstable_by(total, |a, b| {
            a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2))
        });
    }
    let mut counts = vec![0; traces.len()];
    for &(_, r, _) in &steps[..total] {
        counts[r] += 1;
    }
    counts
}

/// `M = [G_PP]⁻¹` through the lower Cholesky factor `L` of `G_PP` over the
/// removed weights `P`; every loop runs along contiguous rows of `L`.
struct Removed {
    members: Vec<usize>,
    l: Matrix,
}

impl Removed {
    fn new(g: &Matrix, pruned: &[bool]) -> Result<Self> {
        let members: Vec<usize> = (0..pruned.len()).filter(|&q| pruned[q]).collect();
        let mut l = g.select(&members);
        ReferenceBackend.cholesky(&mut l)?;
        Ok(Removed { members, l })
    }

    /// `M x = L⁻ᵀ L⁻¹ x` for `x` over the members: two substitutions, `k²`.
    fn times(&self, x: &[f64]) -> Vec<f64> {
        let k = self.members.len();
        let mut y = x.to_vec();
        for i in 0..k {
            let r = self.l.row(i);
            y[i] = (y[i] - dot(&r[..i], &y[..i])) / r[i];
        }
        for i in (0..k).rev() {
            let r = self.l.row(i);
            y[i] /= r[i];
            let yi = y[i];
            for (t, lv) in y[..i].iter_mut().zip(&r[..i]) {
                *t -= yi * lv;
            }
        }
        y
    }

    /// `M` itself, `k × k` row-major: `X = L⁻¹` row by row, then `XᵀX`;
    /// `k³/3` multiply-adds.
    fn inverse(&self) -> Vec<f64> {
        let k = self.members.len();
        let mut x = vec![0.0; k * k];
        for i in 0..k {
            let r = self.l.row(i);
            let (done, rest) = x.split_at_mut(i * k);
            let xi = &mut rest[..k];
            xi[i] = 1.0;
            for (p, &f) in r[..i].iter().enumerate() {
                for (a, b) in xi[..=p].iter_mut().zip(&done[p * k..=p * k + p]) {
                    *a -= f * b;
                }
            }
            let inv = 1.0 / r[i];
            xi[..=i].iter_mut().for_each(|a| *a *= inv);
        }
        let mut m = vec![0.0; k * k];
        for l in 0..k {
            let xl = &x[l * k..=l * k + l];
            for (i, &f) in xl.iter().enumerate() {
                for (a, b) in m[i * k..=i * k + l].iter_mut().zip(xl) {
                    *a += f * b;
                }
            }
        }
        m
    }
}

/// `a = [G_PP]⁻¹ w_P` and the cost `w_Pᵀ a` of removing `pruned` from
/// `row`.
fn solution(g: &Matrix, row: &[f64], pruned: &[bool]) -> Result<(Vec<f64>, f64)> {
    if !pruned.iter().any(|&p| p) {
        return Ok((Vec::new(), 0.0));
    }
    let removed = Removed::new(g, pruned)?;
    let wp: Vec<f64> = removed.members.iter().map(|&q| row[q]).collect();
    let a = removed.times(&wp);
    let cost = wp.iter().zip(&a).map(|(x, y)| x * y).sum();
    Ok((a, cost))
}

/// The exact cost `w_Pᵀ [G_PP]⁻¹ w_P` of removing the `pruned` weights of
/// `row` with the best update of the others, `g` the inverse Hessian
/// (`H⁻¹`, or a block's `U_bbᵀ U_bb`). Fails where `G_PP` is not positive
/// definite.
pub fn row_cost(g: &Matrix, row: &[f64], pruned: &[bool]) -> Result<f64> {
    if g.rows() != row.len() || g.cols() != row.len() || pruned.len() != row.len() {
        return Err(Error::LengthMismatch {
            what: "row, mask and inverse Hessian sizes",
            expected: row.len(),
            found: if g.rows() != row.len() {
                g.rows()
            } else {
                pruned.len()
            },
        });
    }
    Ok(solution(g, row, pruned)?.1)
}

/// Swaps between two rebuilds of [`Swaps`] from scratch, which bounds the
/// rounding its rank-one updates accumulate.
const REFRESH: usize = 16;

/// Up to `swaps` exact best-improvement swaps of one row's removed set.
///
/// Each round judges every (removed, kept) pair (same group for N:M) by
/// the exact change of cost and applies the best while it lowers the cost;
/// [`Swaps`] keeps what the judgement needs up to date by rank-one updates.
/// The result is checked against the greedy's set by the exact cost, so it
/// is never worse. Returns [`solution`] for the final set. Cost: `≈ k²·(n − k)` multiply-adds to build the state
/// (and every [`REFRESH`] swaps), `≈ 4·k·(n − k)` per swap; memory
/// `8·k·n` bytes.
fn refine(
    g: &Matrix,
    row: &[f64],
    pruned: &mut [bool],
    group: Option<NofM>,
    swaps: usize,
) -> Result<(Vec<f64>, f64)> {
    let k = pruned.iter().filter(|&&p| p).count();
    if swaps == 0 || k == 0 || k == row.len() {
        return solution(g, row, pruned);
    }
    let initial = pruned.to_vec();
    let mut state = Swaps::new(g, pruned)?;
    for done in 0..swaps {
        if done > 0 && done % REFRESH == 0 {
            state = Swaps::new(g, pruned)?;
        }
        let Some(best) = state.best(row, group) else {
            break;
        };
        if best.change >= -1e-12 * best.cost.abs().max(f64::MIN_POSITIVE) {
            break;
        }
        pruned[state.members[best.removed]] = false;
        pruned[state.kept[best.kept]] = true;
        state.apply(best.removed, best.kept)?;
    }
    let swapped = solution(g, row, pruned)?;
    if pruned == initial.as_slice() {
        return Ok(swapped);
    }
    let greedy = solution(g, row, &initial)?;
    if swapped.1 > greedy.1 {
        pruned.copy_from_slice(&initial);
        return Ok(greedy);
    }
    Ok(swapped)
}

/// The best swap of a round: positions in [`Swaps::members`] and
/// [`Swaps::kept`], the change of cost and the cost before it.
struct Swap {
    removed: usize,
    kept: usize,
    change: f64,
    cost: f64,
}

/// What judging every swap of one row needs: with `P` the removed weights
/// ([`Swaps::members`], in the order of `M`'s rows), `M = [G_PP]⁻¹` and,
/// for every kept column `l`, `z_l = M G_P,l`. With `a = M w_P`,
/// `t_l = G_l,P a` and `s_l = G_ll − G_l,P z_l`, swapping removed `i` for
/// kept `l` changes the cost by
/// `−a_i²/M_ii + (w_l − t_l + z_li a_i/M_ii)² / (s_l + z_li²/M_ii)`.
struct Swaps<'a> {
    g: &'a Matrix,
    members: Vec<usize>,
    /// `M`, `k × k` in a buffer of row stride `k` (`k = members.len()`
    /// between swaps; one less halfway through one).
    m: Vec<f64>,
    kept: Vec<usize>,
    /// `z_l` for `kept[l]`, over the members' positions.
    z: Vec<Vec<f64>>,
}

impl<'a> Swaps<'a> {
    /// The state of a removed set, from the Cholesky factor of `G_PP`.
    fn new(g: &'a Matrix, pruned: &[bool]) -> Result<Self> {
        let removed = Removed::new(g, pruned)?;
        let m = removed.inverse();
        let kept: Vec<usize> = (0..pruned.len()).filter(|&j| !pruned[j]).collect();
        let mut state = Swaps {
            g,
            members: removed.members,
            m,
            kept,
            z: Vec::new(),
        };
        state.z = state.kept.iter().map(|&l| state.times_column(l)).collect();
        Ok(state)
    }

    /// `G_l,P` over the members.
    fn column(&self, l: usize) -> Vec<f64> {
        let grow = self.g.row(l);
        self.members.iter().map(|&p| grow[p]).collect()
    }

    /// `M G_P,l`.
    fn times_column(&self, l: usize) -> Vec<f64> {
        let k = self.members.len();
        let stride = self.m.len() / k.max(1);
        let gl = self.column(l);
        (0..k)
            .map(|i| dot(&self.m[i * stride..i * stride + k], &gl))
            .collect()
    }

    /// The best swap (ties: lowest kept column, then lowest removed one),
    /// `None` where no pair is allowed.
    fn best(&self, row: &[f64], group: Option<NofM>) -> Option<Swap> {
        let k = self.members.len();
        let wp: Vec<f64> = self.members.iter().map(|&q| row[q]).collect();
        let a: Vec<f64> = (0..k)
            .map(|i| dot(&self.m[i * k..(i + 1) * k], &wp))
            .collect();
        let cost = dot(&wp, &a);
        let diag: Vec<f64> = (0..k).map(|i| self.m[i * k + i]).collect();
        let mut best: Option<Swap> = None;
        let mut best_key = (usize::MAX, usize::MAX);
        for (lp, &l) in self.kept.iter().enumerate() {
            let gl = self.column(l);
            let zl = &self.z[lp];
            let t = dot(&gl, &a);
            let s = self.g.get(l, l) - dot(&gl, zl);
            for (ii, &i) in self.members.iter().enumerate() {
                if let Some(p) = group
                    && i / p.m != l / p.m
                {
                    continue;
                }
                let num = row[l] - t + zl[ii] * a[ii] / diag[ii];
                let den = s + zl[ii] * zl[ii] / diag[ii];
                let change = -a[ii] * a[ii] / diag[ii] + num * num / den;
                let key = (l, i);
                let better = best.as_ref().is_none_or(|b| {
                    change.total_cmp(&b.change).then(key.cmp(&best_key))
                        == core::cmp::Ordering::Less
                });
                if better {
                    best = Some(Swap {
                        removed: ii,
                        kept: lp,
                        change,
                        cost,
                    });
                    best_key = key;
                }
            }
        }
        best
    }

    /// Swaps `members[pi]` out and `kept[pl]` in: `M` and every `z` by one
    /// rank-one downdate (the removed weight leaves) and one bordering (the
    /// new one joins), `O(k·n)`.
    fn apply(&mut self, pi: usize, pl: usize) -> Result<()> {
        let k = self.members.len();
        let i = self.members[pi];
        let j = self.kept[pl];
        // i leaves P: M ← M₋ᵢ − mᵢmᵢᵀ/Mᵢᵢ, z ← z₋ᵢ − mᵢ zᵢ/Mᵢᵢ.
        let mi: Vec<f64> = self.m[pi * k..(pi + 1) * k].to_vec();
        let mii = mi[pi];
        for z in &mut self.z {
            let f = z[pi] / mii;
            for (zv, mv) in z.iter_mut().zip(&mi) {
                *zv -= mv * f;
            }
            z.swap_remove(pi);
        }
        for r in 0..k {
            let c = mi[r] / mii;
            for (x, y) in self.m[r * k..(r + 1) * k].iter_mut().zip(&mi) {
                *x -= c * y;
            }
        }
        let last = k - 1;
        if pi != last {
            self.m.copy_within(last * k..(last + 1) * k, pi * k);
            for r in 0..k {
                self.m[r * k + pi] = self.m[r * k + last];
            }
        }
        self.members.swap_remove(pi);
        // The k − 1 survivors of M sit in rows/columns 0..last (stride k).
        let survivors = |m: &[f64], r: usize| m[r * k..r * k + last].to_vec();
        let gi = self.column(i);
        let zi: Vec<f64> = (0..last)
            .map(|r| dot(&survivors(&self.m, r), &gi))
            .collect();
        self.kept.push(i);
        self.z.push(zi);
        // j joins P: with u = z_j and s = G_jj − G_j,P u, bordering.
        let u = self.z[pl].clone();
        let gj = self.column(j);
        let s = self.g.get(j, j) - dot(&gj, &u);
        if s.is_nan() || s <= 0.0 {
            return Err(Error::NotPositiveDefinite { pivot: j });
        }
        for (lp, &l) in self.kept.iter().enumerate() {
            if lp == pl {
                continue;
            }
            let z = &mut self.z[lp];
            let r = (self.g.get(j, l) - dot(&gj, z)) / s;
            for (zv, uv) in z.iter_mut().zip(&u) {
                *zv -= uv * r;
            }
            z.push(r);
        }
        for r in 0..last {
            let c = u[r] / s;
            for (x, y) in self.m[r * k..r * k + last].iter_mut().zip(&u) {
                *x += c * y;
            }
            self.m[r * k + last] = -c;
            self.m[last * k + r] = -c;
        }
        self.m[last * k + last] = 1.0 / s;
        self.members.push(j);
        self.kept.swap_remove(pl);
        self.z.swap_remove(pl);
        Ok(())
    }
}

/// `Σ xᵢ yᵢ`.
fn dot(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}
