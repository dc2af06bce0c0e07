//! [`Dense`] on the device, in f32, and [`Offload`], which sends each call
//! to the device or to an f64 host implementation by its arithmetic
//! intensity.
//!
//! WGSL has no portable f64, so the device computes in f32: values are
//! converted on upload and widened on download, and results agree with the
//! f64 implementations up to f32 rounding ([`Dense::unit_roundoff`] is
//! `2⁻²⁴`). On the CBS protocol that was measured to change neither masks nor
//! updates beyond 5e-6 relative (see `prunus_core::dense`).
//!
//! | call | device work | kernels |
//! |---|---|---|
//! | `matmul`, `gram` | one GEMM (`gram` computes the whole square, then mirrors its lower triangle) | `gemm`: 64 x 64 tiles, 4 x 4 outputs per thread; `gemm_large`: 128 x 128 tiles, 8 x 8 per thread, for outputs of 64 such tiles or more ([`GemmTile`]) |
//! | `cholesky` | right-looking, 32-column panels: the diagonal block in workgroup memory, the panel below it, then a rank-32 GEMM on the lower trailing tiles | `potrf_block`, `potrf_panel`, `gemm` |
//! | `solve_rows` | 64-column blocks: each row's block solved by one thread, then a GEMM on the columns still to solve | `trsm_block`, `gemm` |
//!
//! Every operand is uploaded per call and the result read back, so a call
//! pays `4 bytes x (operands + result)` of transfer, except for operands
//! retained on the device ([`Dense::retain`], kept in `crate::resident`):
//! those are bound where they are. [`Offload`] keeps on the host the calls
//! whose flops do not cover their transfer (matrix-vector products with
//! operands that are not kept, the small systems of the Woodbury
//! recursion).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prunus_core::contract::dense::{
    Matrix, check_gram, check_matmul, check_solve_rows, check_square,
};
use prunus_core::{Dense, Error, Result, Transpose};

use crate::WgpuBackend;
use crate::context::{Access, Batch, Buf, Kernel, Shader, backend_error};

static SHADER: Shader = Shader {
    name: "dense",
    source: include_str!("../shaders/dense.wgsl"),
};

/// A, B (read-only; the same buffer where both name one matrix) and the
/// destination.
const BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::ReadWrite];

fn kernel(entry: &'static str) -> Kernel {
    Kernel {
        shader: &SHADER,
        entry,
        bindings: BINDINGS,
    }
}

/// The output tile of the `gemm` kernel.
const TILE: usize = 64;
/// The output tile of the `gemm_large` kernel.
const LARGE: usize = 128;
/// The fewest 128 x 128 tiles for which [`GemmTile::Auto`] takes the large
/// kernel: fewer would leave most of a GPU's compute units idle.
const LARGE_MIN_TILES: u64 = 64;

/// Which GEMM kernel the dense calls run (every product, Gram matrix,
/// Cholesky trailing update and solve update is one). Both sum every
/// output's products in the same order; the large tile reads workgroup
/// memory half as often per product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GemmTile {
    /// On a GPU, 128 x 128 tiles where the output has at least 64 of them
    /// and 64 x 64 elsewhere; on a software adapter (a CPU), 64 x 64: Mesa's
    /// llvmpipe ran the Fisher's Gram products 1.5 to 2x slower with the
    /// large tile. The large tile's gain on a GPU has not been measured yet.
    #[default]
    Auto,
    /// 64 x 64 tiles, 4 x 4 outputs per thread, always.
    Small,
    /// 128 x 128 tiles, 8 x 8 outputs per thread, always.
    Large,
}
/// Columns per Cholesky panel (the shader's `PANEL`).
const PANEL: usize = 32;
/// Columns per block of the triangular solves.
const SOLVE_BLOCK: usize = 64;

/// Bits of [`Call::flags`] (the shader's constants).
const TRANS_A: u32 = 1;
const TRANS_B: u32 = 2;
const A_IN_DST: u32 = 4;
const B_IN_DST: u32 = 8;
const LOWER_TILES: u32 = 16;

/// One dispatch's parameters (the shader's `Dense` block).
#[derive(Clone, Copy, Default)]
struct Call {
    m: usize,
    k: usize,
    n: usize,
    flags: u32,
    off_a: usize,
    ld_a: usize,
    off_b: usize,
    ld_b: usize,
    off_c: usize,
    ld_c: usize,
    alpha: f32,
    beta: f32,
    status: usize,
}

impl Call {
    fn words(&self) -> [u32; 16] {
        let w = |v: usize| v as u32;
        [
            w(self.m),
            w(self.k),
            w(self.n),
            self.flags,
            w(self.off_a),
            w(self.ld_a),
            w(self.off_b),
            w(self.ld_b),
            w(self.off_c),
            w(self.ld_c),
            self.alpha.to_bits(),
            self.beta.to_bits(),
            w(self.status),
            0,
            0,
            0,
        ]
    }
}

/// The transpose flag of an operand.
fn trans(t: Transpose, bit: u32) -> u32 {
    if t == Transpose::Yes { bit } else { 0 }
}

/// A scalar as f32, or an error where f32 cannot hold it.
fn narrow(what: &'static str, v: f64) -> Result<f32> {
    if v.is_finite() && v.abs() > f32::MAX as f64 {
        return Err(Error::InvalidArgument {
            what,
            expected: "within f32 range (|x| ≤ 3.4e38) on the wgpu backend",
        });
    }
    Ok(v as f32)
}

/// The f32 values of `parts`, one after another.
fn narrow_all(parts: &[&[f64]]) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        for &v in *part {
            out.push(narrow("matrix element", v)?);
        }
    }
    Ok(out)
}

impl WgpuBackend {
    /// Fails unless `elements` f32 values fit one storage binding.
    fn fits(&self, op: &str, elements: usize) -> Result<()> {
        if !self.dense_fits(&[elements]) {
            return Err(backend_error(format!(
                "{op}: {elements} f32 values exceed one storage binding of this device ({} bytes)",
                self.gpu.max_binding()
            )));
        }
        Ok(())
    }

    /// Whether bindings of these element counts all fit the device.
    fn dense_fits(&self, bindings: &[usize]) -> bool {
        let limit = self.gpu.max_binding() / 4;
        bindings.iter().all(|&e| e as u64 <= limit)
    }

    fn dense_upload(&self, parts: &[&[f64]]) -> Result<Buf> {
        self.upload_bytes(&crate::le_bytes(&narrow_all(parts)?))
    }

    /// The device copy of an operand: the one kept where `m` was retained,
    /// else a fresh upload.
    fn operand(&self, m: &Matrix) -> Result<Arc<Buf>> {
        if let Some(buf) = self.gpu.residents().get(m) {
            self.gpu.count_kept(m.data().len() as u64 * 4);
            return Ok(buf);
        }
        Ok(Arc::new(self.dense_upload(&[m.data()])?))
    }

    /// The device copies of two operands, one buffer where both are the
    /// same matrix.
    fn operands(&self, a: &Matrix, b: &Matrix) -> Result<(Arc<Buf>, Arc<Buf>)> {
        let a_buf = self.operand(a)?;
        if a.id() != 0 && a.id() == b.id() {
            return Ok((Arc::clone(&a_buf), a_buf));
        }
        Ok((a_buf, self.operand(b)?))
    }

    /// Whether a copy of `m` is kept on the device.
    pub(crate) fn keeps(&self, m: &Matrix) -> bool {
        self.gpu.residents().holds(m)
    }

    fn record(
        &self,
        batch: &mut Batch<'_>,
        entry: &'static str,
        call: &Call,
        bufs: [&Buf; 3],
        groups: u32,
    ) {
        batch.dispatch(
            &kernel(entry),
            &call.words(),
            &[bufs[0].all(), bufs[1].all(), bufs[2].all()],
            groups,
        );
    }

    /// Records `gemm` over `call` (workgroups for its tiles).
    fn record_gemm(&self, batch: &mut Batch<'_>, call: &Call, bufs: [&Buf; 3]) {
        let large = (call.m.div_ceil(LARGE) * call.n.div_ceil(LARGE)) as u64;
        let use_large = match self.gemm {
            GemmTile::Small => false,
            GemmTile::Large => true,
            GemmTile::Auto => {
                self.gpu.info().kind != "Cpu"
                    && call.m >= LARGE
                    && call.n >= LARGE
                    && large >= LARGE_MIN_TILES
            }
        };
        let (entry, tiles) = if use_large {
            ("gemm_large", large)
        } else {
            (
                "gemm",
                (call.m.div_ceil(TILE) * call.n.div_ceil(TILE)) as u64,
            )
        };
        let groups = batch.groups_for(tiles * crate::context::WORKGROUP as u64);
        self.record(batch, entry, call, bufs, groups);
    }

    /// Submits `batch` and reads `len` f32 values of `buf` back as f64.
    fn read_f64(&self, batch: Batch<'_>, buf: &Buf, len: usize) -> Result<Vec<f64>> {
        let bytes = self.gpu.read(batch, &[buf.slice(0, len as u64 * 4)])?;
        Ok(crate::u32s(&bytes[0])
            .into_iter()
            .map(|b| f32::from_bits(b) as f64)
            .collect())
    }
}

impl Dense for WgpuBackend {
    fn unit_roundoff(&self) -> f64 {
        f32::EPSILON as f64 / 2.0
    }

    /// Uploads `m` once and keeps it within the resident budget
    /// ([`WgpuBackend::with_resident_budget`]); `false` where it does not
    /// fit the budget or one storage binding.
    fn retain(&self, m: &Matrix) -> Result<bool> {
        let residents = self.gpu.residents();
        if residents.hold_again(m) {
            return Ok(true);
        }
        let bytes = m.data().len() as u64 * 4;
        if m.data().is_empty() || !self.dense_fits(&[m.data().len()]) || !residents.fits(m, bytes) {
            return Ok(false);
        }
        let buf = self.dense_upload(&[m.data()])?;
        Ok(residents.keep(m, buf, bytes))
    }

    fn release(&self, m: &Matrix) {
        self.gpu.residents().release(m);
    }

    fn matmul(
        &self,
        c: &mut Matrix,
        beta: f64,
        a: &Matrix,
        ta: Transpose,
        b: &Matrix,
        tb: Transpose,
        alpha: f64,
    ) -> Result<()> {
        let (m, k, n) = check_matmul(c, a, ta, b, tb)?;
        let (alpha, beta) = (narrow("alpha", alpha)?, narrow("beta", beta)?);
        if m * n == 0 {
            return Ok(());
        }
        if k == 0 {
            let beta = beta as f64;
            for v in c.data_mut() {
                *v = if beta == 0.0 { 0.0 } else { beta * *v };
            }
            return Ok(());
        }
        self.fits("matmul", a.data().len())?;
        self.fits("matmul", b.data().len())?;
        self.fits("matmul", m * n)?;
        let (src_a, src_b) = self.operands(a, b)?;
        let dst = if beta == 0.0 {
            self.gpu.storage((m * n) as u64 * 4)?
        } else {
            self.dense_upload(&[c.data()])?
        };
        let call = Call {
            m,
            k,
            n,
            flags: trans(ta, TRANS_A) | trans(tb, TRANS_B),
            ld_a: a.cols(),
            ld_b: b.cols(),
            ld_c: n,
            alpha,
            beta,
            ..Call::default()
        };
        let mut batch = self.gpu.batch();
        self.record_gemm(&mut batch, &call, [&src_a, &src_b, &dst]);
        self.gpu.count_flops(2 * (m * k * n) as u64);
        let out = self.read_f64(batch, &dst, m * n)?;
        c.data_mut().copy_from_slice(&out);
        Ok(())
    }

    fn gram(&self, c: &mut Matrix, a: &Matrix, alpha: f64) -> Result<()> {
        check_gram(c, a)?;
        let alpha = narrow("alpha", alpha)?;
        let (rows, n) = (a.rows(), a.cols());
        if n == 0 || rows == 0 {
            return Ok(());
        }
        self.fits("gram", a.data().len())?;
        self.fits("gram", n * n)?;
        let src = self.operand(a)?;
        let dst = self.dense_upload(&[c.data()])?;
        let call = Call {
            m: n,
            k: rows,
            n,
            flags: TRANS_A,
            ld_a: n,
            ld_b: n,
            ld_c: n,
            alpha,
            beta: 1.0,
            ..Call::default()
        };
        let mut batch = self.gpu.batch();
        self.record_gemm(&mut batch, &call, [&src, &src, &dst]);
        self.gpu.count_flops(2 * (rows * n * n) as u64);
        let out = self.read_f64(batch, &dst, n * n)?;
        let data = c.data_mut();
        for i in 0..n {
            for j in 0..=i {
                data[i * n + j] = out[i * n + j];
                data[j * n + i] = out[i * n + j];
            }
        }
        Ok(())
    }

    fn cholesky(&self, a: &mut Matrix) -> Result<()> {
        check_square(a)?;
        let n = a.rows();
        if n == 0 {
            return Ok(());
        }
        self.fits("cholesky", n * n + 1)?;
        // The matrix, then the status word (first bad pivot + 1; 0 = none).
        let dst = self.dense_upload(&[a.data(), &[0.0]])?;
        let src = self.dummy()?;
        let status = n * n;
        let mut batch = self.gpu.batch();
        for k0 in (0..n).step_by(PANEL) {
            let b = PANEL.min(n - k0);
            let k1 = k0 + b;
            let step = Call {
                k: b,
                off_a: k0,
                ld_c: n,
                status,
                ..Call::default()
            };
            self.record(&mut batch, "potrf_block", &step, [&src, &src, &dst], 1);
            if k1 == n {
                break;
            }
            let groups = batch.groups_for((n - k1) as u64);
            self.record(&mut batch, "potrf_panel", &step, [&src, &src, &dst], groups);
            // Trailing update: A[k1.., k1..] -= L[k1.., k0..k1] L[k1.., k0..k1]ᵀ.
            let update = Call {
                m: n - k1,
                k: b,
                n: n - k1,
                flags: A_IN_DST | B_IN_DST | TRANS_B | LOWER_TILES,
                off_a: k1 * n + k0,
                ld_a: n,
                off_b: k1 * n + k0,
                ld_b: n,
                off_c: k1 * n + k1,
                ld_c: n,
                alpha: -1.0,
                beta: 1.0,
                status: 0,
            };
            self.record_gemm(&mut batch, &update, [&src, &src, &dst]);
        }
        let zero = Call {
            n,
            ..Call::default()
        };
        let groups = batch.groups_for((n * n) as u64);
        self.record(&mut batch, "zero_upper", &zero, [&src, &src, &dst], groups);
        self.gpu.count_flops((n * n * n / 3) as u64);
        let out = self.read_f64(batch, &dst, n * n + 1)?;
        if out[status] != 0.0 {
            return Err(Error::NotPositiveDefinite {
                pivot: out[status] as usize - 1,
            });
        }
        a.data_mut().copy_from_slice(&out[..status]);
        Ok(())
    }

    fn solve_rows(&self, l: &Matrix, t: Transpose, b: &mut Matrix) -> Result<()> {
        check_solve_rows(l, b)?;
        let (rows, n) = (b.rows(), l.rows());
        if rows == 0 || n == 0 {
            return Ok(());
        }
        self.fits("solve rows", n * n)?;
        self.fits("solve rows", rows * n)?;
        let src = self.operand(l)?;
        let dst = self.dense_upload(&[b.data()])?;
        let mut batch = self.gpu.batch();
        let row_groups = batch.groups_for(rows as u64);
        let backward = t == Transpose::Yes;
        let mut blocks: Vec<usize> = (0..n).step_by(SOLVE_BLOCK).collect();
        if backward {
            blocks.reverse();
        }
        for k0 in blocks {
            let k1 = (k0 + SOLVE_BLOCK).min(n);
            let solve = Call {
                m: rows,
                k: k1 - k0,
                n,
                flags: trans(t, TRANS_A),
                off_a: k0,
                ..Call::default()
            };
            self.record(
                &mut batch,
                "trsm_block",
                &solve,
                [&src, &src, &dst],
                row_groups,
            );
            // The solved columns X[:, k0..k1] leave the columns still to solve:
            // forward, B[:, k1..] -= X L[k1.., k0..k1]ᵀ; backward,
            // B[:, ..k0] -= X L[k0..k1, ..k0].
            let (off_c, cols, flags, off_b) = if backward {
                (0, k0, A_IN_DST, k0 * n)
            } else {
                (k1, n - k1, A_IN_DST | TRANS_B, k1 * n + k0)
            };
            if cols == 0 {
                continue;
            }
            let update = Call {
                m: rows,
                k: k1 - k0,
                n: cols,
                flags,
                off_a: k0,
                ld_a: n,
                off_b,
                ld_b: n,
                off_c,
                ld_c: n,
                alpha: -1.0,
                beta: 1.0,
                status: 0,
            };
            self.record_gemm(&mut batch, &update, [&src, &src, &dst]);
        }
        self.gpu.count_flops((rows * n * n) as u64);
        let out = self.read_f64(batch, &dst, rows * n)?;
        b.data_mut().copy_from_slice(&out);
        Ok(())
    }
}

/// Arithmetic intensity (flops per byte moved to and from the device) below
/// which [`Offload`] keeps a call on the host. Moving a byte over a link of
/// about 10 GB/s takes as long as a host doing about 100 f64 GFLOPS (faer on
/// two cores) takes for 10 flops, so a call needs a few times that before the
/// device can win; 32 leaves the matrix-vector products and small systems on
/// the host and sends the Fisher's Gram products, factorisations and many-row
/// solves to the device. Not tuned on a real GPU yet.
pub const MIN_INTENSITY: f64 = 32.0;

/// Calls of fewer flops than this stay on the host: a dispatch and a
/// readback cost tens of microseconds whatever the size.
pub const MIN_FLOPS: f64 = 1e8;

/// [`Dense`] split between the wgpu device (f32) and a host implementation
/// (f64, such as the CPU backend): each call goes to the device where its
/// flops per byte transferred reach [`Offload::min_intensity`], its flops
/// reach [`Offload::min_flops`], and its operands fit the device's bindings;
/// everything else runs on the host. Operands retained on the device
/// ([`Dense::retain`]) cost no transfer, so a matrix-vector product with a
/// retained matrix goes to the device. The choice depends only on the shapes
/// and on what was retained, so a run is as deterministic as its two parts.
///
/// ```no_run
/// use prunus_core::{Dense, ReferenceBackend};
/// use prunus_wgpu::{Offload, WgpuBackend};
/// let gpu = WgpuBackend::new()?;
/// let dense = Offload::new(&gpu, &ReferenceBackend);
/// assert_eq!(dense.unit_roundoff(), f32::EPSILON as f64 / 2.0);
/// # Ok::<(), prunus_core::Error>(())
/// ```
pub struct Offload<'a, H: ?Sized> {
    device: &'a WgpuBackend,
    host: &'a H,
    min_intensity: f64,
    min_flops: f64,
    device_flops: AtomicU64,
    host_flops: AtomicU64,
}

impl<H: ?Sized> std::fmt::Debug for Offload<'_, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload")
            .field("device", self.device)
            .field("min_intensity", &self.min_intensity)
            .field("min_flops", &self.min_flops)
            .finish()
    }
}

impl<'a, H: Dense + ?Sized> Offload<'a, H> {
    /// Splits calls between `device` and `host` with the default thresholds
    /// ([`MIN_INTENSITY`], [`MIN_FLOPS`]).
    pub fn new(device: &'a WgpuBackend, host: &'a H) -> Self {
        Offload {
            device,
            host,
            min_intensity: MIN_INTENSITY,
            min_flops: MIN_FLOPS,
            device_flops: AtomicU64::new(0),
            host_flops: AtomicU64::new(0),
        }
    }

    /// Sets the flops per transferred byte a call needs to go to the device
    /// (0 with [`Offload::min_flops`] 0 sends every call that fits).
    pub fn min_intensity(mut self, flops_per_byte: f64) -> Self {
        self.min_intensity = flops_per_byte;
        self
    }

    /// Sets the flops a call needs to go to the device.
    pub fn min_flops(mut self, flops: f64) -> Self {
        self.min_flops = flops;
        self
    }

    /// Flops run so far on the device and on the host (multiply and add
    /// counted as two).
    pub fn flops(&self) -> (u64, u64) {
        (
            self.device_flops.load(Ordering::Relaxed),
            self.host_flops.load(Ordering::Relaxed),
        )
    }

    /// Bytes an operand costs a device call: none where it is kept there.
    fn transfer(&self, m: &Matrix) -> f64 {
        if self.device.keeps(m) {
            0.0
        } else {
            4.0 * m.data().len() as f64
        }
    }

    /// Whether a call of `flops` moving `bytes` with bindings of these
    /// element counts goes to the device; counts its flops either way.
    fn route(&self, flops: f64, bytes: f64, bindings: &[usize]) -> bool {
        let device = flops >= self.min_flops
            && flops >= self.min_intensity * bytes
            && self.device.dense_fits(bindings);
        let counter = if device {
            &self.device_flops
        } else {
            &self.host_flops
        };
        counter.fetch_add(flops as u64, Ordering::Relaxed);
        device
    }
}

impl<H: Dense + ?Sized> Dense for Offload<'_, H> {
    fn unit_roundoff(&self) -> f64 {
        self.device.unit_roundoff().max(self.host.unit_roundoff())
    }

    fn matmul(
        &self,
        c: &mut Matrix,
        beta: f64,
        a: &Matrix,
        ta: Transpose,
        b: &Matrix,
        tb: Transpose,
        alpha: f64,
    ) -> Result<()> {
        let (m, k, n) = check_matmul(c, a, ta, b, tb)?;
        let (ea, eb, ec) = (m * k, k * n, m * n);
        let flops = 2.0 * (m * k * n) as f64;
        let same = a.id() != 0 && a.id() == b.id();
        let operands = self.transfer(a) + if same { 0.0 } else { self.transfer(b) };
        let bytes = operands + 4.0 * (ec + if beta == 0.0 { 0 } else { ec }) as f64;
        if self.route(flops, bytes, &[ea, eb, ec]) {
            Dense::matmul(self.device, c, beta, a, ta, b, tb, alpha)
        } else {
            self.host.matmul(c, beta, a, ta, b, tb, alpha)
        }
    }

    fn gram(&self, c: &mut Matrix, a: &Matrix, alpha: f64) -> Result<()> {
        check_gram(c, a)?;
        let (m, n) = (a.rows(), a.cols());
        let flops = 2.0 * (m * n * n) as f64;
        let bytes = self.transfer(a) + 4.0 * (2 * n * n) as f64;
        if self.route(flops, bytes, &[m * n, n * n]) {
            self.device.gram(c, a, alpha)
        } else {
            self.host.gram(c, a, alpha)
        }
    }

    fn cholesky(&self, a: &mut Matrix) -> Result<()> {
        check_square(a)?;
        let n = a.rows();
        let flops = (n * n * n) as f64 / 3.0;
        let bytes = 8.0 * (n * n) as f64;
        if self.route(flops, bytes, &[n * n + 1]) {
            self.device.cholesky(a)
        } else {
            self.host.cholesky(a)
        }
    }

    fn solve_rows(&self, l: &Matrix, t: Transpose, b: &mut Matrix) -> Result<()> {
        check_solve_rows(l, b)?;
        let (rows, n) = (b.rows(), l.rows());
        let flops = (rows * n * n) as f64;
        let bytes = self.transfer(l) + 4.0 * (2 * rows * n) as f64;
        if self.route(flops, bytes, &[n * n, rows * n]) {
            self.device.solve_rows(l, t, b)
        } else {
            self.host.solve_rows(l, t, b)
        }
    }

    /// Retains `m` on the device (the host reads it where it is).
    fn retain(&self, m: &Matrix) -> Result<bool> {
        self.device.retain(m)
    }

    fn release(&self, m: &Matrix) {
        self.device.release(m);
    }

    fn run_tasks(
        &self,
        count: usize,
        task: &(dyn Fn(usize) -> Box<dyn std::any::Any + Send> + Sync),
    ) -> Vec<Box<dyn std::any::Any + Send>> {
        self.host.run_tasks(count, task)
    }
}
