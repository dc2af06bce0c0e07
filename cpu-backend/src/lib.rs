#![doc = include_str!("../README.md")]

mod dense;
mod elementwise;
mod exec;
mod keys;
mod lanes;
mod linalg;
mod selection;
mod simd;
mod tensor;

use std::marker::PhantomData;
use std::sync::Arc;

use prunus_core::contract::histogram::{Histogram, KeyCount, KeyWindow, TensorCut};
use prunus_core::{
    Backend, BinaryOp, CutMasks, Error, Grouping, KeyRule, Mask, MaskBatch, NofM, RangeMasks,
    Reduction, Result, ScoreView, SelectionPlan, Shape, Transpose, UnaryOp,
};

use crate::exec::Exec;
use crate::simd::Isa;
pub use crate::simd::{SIMD_ENV, SimdLevel};
pub use crate::tensor::CpuTensor;

/// How a [`CpuBackend`] runs its work.
///
/// Every choice gives the same results, bit for bit: the work is split into
/// pieces that do not depend on the thread count, and only integer counts
/// are ever combined across pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Par {
    /// On the calling thread, without a thread pool.
    Seq,
    /// On a rayon thread pool of this many threads, owned by the backend
    /// (never rayon's global pool); `0` means one per available core.
    Rayon(usize),
}

impl Default for Par {
    /// All available cores.
    fn default() -> Self {
        Par::Rayon(0)
    }
}

/// The rayon CPU backend over host memory.
///
/// `'a` is the lifetime of host data borrowed by its tensors
/// ([`CpuBackend::borrow`], [`CpuBackend::borrow_mut`]); tensors it creates
/// itself are owned. Cloning a backend shares its thread pool.
///
/// ```
/// use prunus_core::{Backend, Shape, UnaryOp};
/// use prunus_cpu::{CpuBackend, Par};
/// let b = CpuBackend::new(Par::Rayon(2))?;
/// assert_eq!(b.name(), "cpu(2 threads)");
/// let x = b.upload(&[-1.0, 2.0], &Shape::vector(2))?;
/// let y = b.unary(UnaryOp::Square, &x)?;
/// assert_eq!(b.download(&y)?, [1.0, 4.0]);
/// # Ok::<(), prunus_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct CpuBackend<'a> {
    exec: Exec,
    isa: Isa,
    threads: usize,
    plan: SelectionPlan,
    _data: PhantomData<&'a ()>,
}

impl<'a> CpuBackend<'a> {
    /// A backend running as `par` says. `Par::Rayon(n)` builds a thread
    /// pool of `n` threads (`0`: one per available core); fails with
    /// [`Error::Backend`] when the threads cannot be started.
    ///
    /// The kernels run on the instruction set `PRUNUS_SIMD` names, else on
    /// the best one the processor supports ([`SimdLevel::from_env`]); an
    /// unknown or unsupported `PRUNUS_SIMD` is an [`Error::Backend`].
    /// [`CpuBackend::with_simd`] chooses another.
    pub fn new(par: Par) -> Result<Self> {
        CpuBackend::with_isa(
            par,
            Isa::new(SimdLevel::from_env()?).unwrap_or(Isa::Baseline),
        )
    }

    /// [`CpuBackend::new`] on the instruction set of `isa`.
    fn with_isa(par: Par, isa: Isa) -> Result<Self> {
        let (exec, threads) = match par {
            Par::Seq => (Exec::Seq, 1),
            Par::Rayon(n) => {
                let n = if n == 0 {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                } else {
                    n
                };
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("prunus-cpu-{i}"))
                    .build()
                    .map_err(|e| Error::Backend {
                        message: format!("cannot start a thread pool of {n} threads: {e}"),
                    })?;
                (Exec::Pool(Arc::new(pool)), n)
            }
        };
        Ok(CpuBackend {
            exec,
            isa,
            threads,
            plan: SelectionPlan::Gather,
            _data: PhantomData,
        })
    }

    /// The same backend with another [`SelectionPlan`] (the default,
    /// [`SelectionPlan::Gather`], is the fast one on CPUs; the masks are the
    /// same under every plan).
    pub fn with_selection_plan(mut self, plan: SelectionPlan) -> Self {
        self.plan = plan;
        self
    }

    /// The same backend running its kernels on `level`; fails with
    /// [`Error::Backend`] when this processor does not support it
    /// ([`SimdLevel::supported`] lists those it does). Every level gives
    /// the same results, bit for bit.
    pub fn with_simd(mut self, level: SimdLevel) -> Result<Self> {
        self.isa = Isa::new(level.checked()?).unwrap_or(Isa::Baseline);
        Ok(self)
    }

    /// The instruction set the kernels run on.
    pub fn simd(&self) -> SimdLevel {
        self.isa.level()
    }

    /// The number of threads that run the work (1 for [`Par::Seq`]).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// A tensor that reads `data` in place, without a copy; fails when
    /// `data.len()` is not `shape.numel()`. In-place ops on it
    /// ([`Backend::apply_mask`], [`Backend::rank1_update`]) first copy it
    /// into an owned buffer and leave `data` unchanged; use
    /// [`CpuBackend::borrow_mut`] to write through.
    pub fn borrow(&self, data: &'a [f32], shape: &Shape) -> Result<CpuTensor<'a>> {
        CpuTensor::borrowed(data, shape)
    }

    /// A tensor that reads and writes `data` in place, without a copy;
    /// fails when `data.len()` is not `shape.numel()`. In-place ops on it
    /// ([`Backend::apply_mask`], [`Backend::rank1_update`]) write through
    /// to `data`.
    ///
    /// ```
    /// use prunus_core::{Backend, Mask, Shape};
    /// use prunus_cpu::CpuBackend;
    /// let b = CpuBackend::default();
    /// let mut w = [1.0f32, 2.0, 3.0];
    /// let shape = Shape::vector(3);
    /// let mut t = b.borrow_mut(&mut w, &shape)?;
    /// let mask = Mask::from_bools(shape, &[true, false, true])?;
    /// b.apply_mask(&mut t, &mask)?;
    /// drop(t);
    /// assert_eq!(w, [1.0, 0.0, 3.0]);
    /// # Ok::<(), prunus_core::Error>(())
    /// ```
    pub fn borrow_mut(&self, data: &'a mut [f32], shape: &Shape) -> Result<CpuTensor<'a>> {
        CpuTensor::borrowed_mut(data, shape)
    }

    /// Reads every element of `tensors` once (returning the xor of their
    /// bits, so the read cannot be optimised away), split over the threads
    /// exactly like the selection passes, on this backend's [`SimdLevel`],
    /// asking for the data ahead in software when `prefetch` is set (as the
    /// selection passes do): the memory-bandwidth floor that a selection
    /// pass is measured against. Which way reads fastest depends on the
    /// processor; a benchmark takes the fastest of every level both ways.
    pub fn read_pass(&self, tensors: &[&CpuTensor<'_>], prefetch: bool) -> u64 {
        let data: Vec<&[f32]> = tensors.iter().map(|t| t.data()).collect();
        selection::read_pass(&self.exec, self.isa, &data, prefetch)
    }

    /// The [`KeyWindow::High`] histogram of `inputs` together (as
    /// [`Backend::histogram`]), and in the same pass the counts of the keys
    /// whose high half lies in `buckets` (inclusive), at full resolution:
    /// entry `key - (buckets.0 << 16)`. A streaming selection that has
    /// guessed the bucket range of its threshold reads its data once with
    /// it, instead of once for the histogram and once more for the
    /// threshold's bucket. Fails on a range of more than 64 buckets, or
    /// whose first bucket is after its last.
    ///
    /// ```
    /// use prunus_core::{Backend, KeyRule, ScoreView, Shape};
    /// use prunus_cpu::CpuBackend;
    /// let b = CpuBackend::default();
    /// let t = b.upload(&[0.5, -0.25, 2.0], &Shape::new(&[3])?)?;
    /// let key = KeyRule::ABS.key(0.5);
    /// let high = (key >> 16) as u16;
    /// let (h, fine) = b.histogram_with_range(&[ScoreView::new(&t)], KeyRule::ABS, (high, high))?;
    /// assert_eq!(h.bins.iter().sum::<u64>(), 3);
    /// assert_eq!(fine[(key & 0xFFFF) as usize], 1);
    /// # Ok::<(), prunus_core::Error>(())
    /// ```
    pub fn histogram_with_range(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        buckets: (u16, u16),
    ) -> Result<(Histogram, Vec<u64>)> {
        selection::histogram_with_range(&self.exec, inputs, rule, buckets)
    }
}

impl Default for CpuBackend<'_> {
    /// One thread per available core ([`Par::Rayon`]`(0)`), or the calling
    /// thread alone when no thread can be started (same results, slower).
    /// The kernels run on the level `PRUNUS_SIMD` names; when it names none
    /// this processor supports, on the best one it does
    /// ([`SimdLevel::detect`]): use [`CpuBackend::new`] to have that
    /// reported as an error instead.
    fn default() -> Self {
        let isa = Isa::new(SimdLevel::from_env().unwrap_or_else(|_| SimdLevel::detect()))
            .unwrap_or(Isa::Baseline);
        CpuBackend::with_isa(Par::Rayon(0), isa).unwrap_or_else(|_| CpuBackend {
            exec: Exec::Seq,
            isa,
            threads: 1,
            plan: SelectionPlan::Gather,
            _data: PhantomData,
        })
    }
}

impl<'a> Backend for CpuBackend<'a> {
    type Tensor = CpuTensor<'a>;
    type Mask = Mask;

    fn name(&self) -> String {
        let plan = match self.plan {
            SelectionPlan::Gather => "",
            SelectionPlan::Histograms => ", histogram plan",
            SelectionPlan::Device => ", device plan",
        };
        match (&self.exec, self.threads) {
            (Exec::Seq, _) => format!("cpu(sequential{plan})"),
            (_, 1) => format!("cpu(1 thread{plan})"),
            (_, n) => format!("cpu({n} threads{plan})"),
        }
    }

    fn selection_plan(&self) -> SelectionPlan {
        self.plan
    }

    fn upload(&self, data: &[f32], shape: &Shape) -> Result<CpuTensor<'a>> {
        CpuTensor::from_vec(data.to_vec(), shape.clone())
    }

    fn download(&self, tensor: &CpuTensor<'a>) -> Result<Vec<f32>> {
        Ok(tensor.data().to_vec())
    }

    fn upload_mask(&self, mask: &Mask) -> Result<Mask> {
        Ok(mask.clone())
    }

    fn download_masks(&self, masks: Vec<Mask>) -> Result<Vec<Mask>> {
        Ok(masks)
    }

    fn unary(&self, op: UnaryOp, x: &CpuTensor<'a>) -> Result<CpuTensor<'a>> {
        Ok(elementwise::unary(&self.exec, op, x))
    }

    fn binary(&self, op: BinaryOp, a: &CpuTensor<'a>, b: &CpuTensor<'a>) -> Result<CpuTensor<'a>> {
        elementwise::binary(&self.exec, op, a, b)
    }

    fn reduce_groups(
        &self,
        x: &CpuTensor<'a>,
        grouping: Grouping,
        reduction: Reduction,
    ) -> Result<CpuTensor<'a>> {
        elementwise::reduce_groups(&self.exec, x, grouping, reduction)
    }

    fn random_uniform(&self, shape: &Shape, seed: u64, stream: u32) -> Result<CpuTensor<'a>> {
        Ok(elementwise::random_uniform(&self.exec, shape, seed, stream))
    }

    fn histogram(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        window: KeyWindow,
    ) -> Result<Histogram> {
        selection::histogram(&self.exec, inputs, rule, window)
    }

    fn count_keys(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        key: u32,
    ) -> Result<Vec<KeyCount>> {
        selection::count_keys(&self.exec, self.isa, inputs, rule, key)
    }

    fn threshold_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        cut: TensorCut,
    ) -> Result<CutMasks<Mask>> {
        selection::threshold_masks(&self.exec, self.isa, inputs, rule, cut)
    }

    fn range_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        lo: u32,
        hi: u32,
    ) -> Result<RangeMasks<Mask>> {
        selection::range_masks(&self.exec, self.isa, inputs, rule, lo, hi)
    }

    fn sample_keys(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        run: usize,
        every: usize,
    ) -> Result<Vec<u32>> {
        selection::sample_keys(&self.exec, self.isa, inputs, rule, run, every)
    }

    fn n_of_m_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        pattern: NofM,
    ) -> Result<MaskBatch<Mask>> {
        selection::n_of_m_masks(&self.exec, self.isa, inputs, rule, pattern)
    }

    /// Zeroes the pruned elements in place. A mutable borrow
    /// ([`CpuBackend::borrow_mut`]) is written through; a read-only borrow
    /// ([`CpuBackend::borrow`]) is first copied into an owned buffer, which
    /// is then masked (the borrowed data stays as it was).
    fn apply_mask(&self, weights: &mut CpuTensor<'a>, mask: &Mask) -> Result<()> {
        elementwise::apply_mask(&self.exec, self.isa, weights, mask)
    }

    fn gemv(&self, a: &CpuTensor<'a>, x: &CpuTensor<'a>) -> Result<CpuTensor<'a>> {
        linalg::gemv(&self.exec, a, x)
    }

    fn gemm(
        &self,
        a: &CpuTensor<'a>,
        ta: Transpose,
        b: &CpuTensor<'a>,
        tb: Transpose,
    ) -> Result<CpuTensor<'a>> {
        linalg::gemm(&self.exec, a, ta, b, tb)
    }

    /// `a += alpha x yᵀ` in place; like [`Backend::apply_mask`], it writes
    /// through a mutable borrow and copies a read-only one first.
    fn rank1_update(
        &self,
        a: &mut CpuTensor<'a>,
        alpha: f32,
        x: &CpuTensor<'a>,
        y: &CpuTensor<'a>,
    ) -> Result<()> {
        linalg::rank1_update(&self.exec, a, alpha, x, y)
    }

    fn dot(&self, a: &CpuTensor<'a>, b: &CpuTensor<'a>) -> Result<CpuTensor<'a>> {
        linalg::dot(&self.exec, a, b)
    }

    fn cholesky_solve(&self, a: &CpuTensor<'a>, b: &CpuTensor<'a>) -> Result<CpuTensor<'a>> {
        linalg::cholesky_solve(&self.exec, a, b)
    }
}
