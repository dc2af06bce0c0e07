#![doc = include_str!("../README.md")]

mod context;
mod dense;
mod elementwise;
mod linalg;
mod radix;
mod reduce;
mod resident;
mod selection;
mod tensor;
mod window;

use std::sync::Arc;

use prunus_core::contract::check;
use prunus_core::contract::histogram::{Histogram, KeyCount, KeyWindow, TensorCut};
use prunus_core::{
    Backend, BinaryOp, CutMasks, Grouping, HasShape, KeyRule, LowestMasks, Mask, MaskBatch, NofM,
    RangeMasks, Reduction, Result, ScoreView, SelectionPlan, Shape, Transpose, UnaryOp,
};

pub use crate::context::{AdapterChoice, AdapterSummary, Counters};
use crate::context::{Buf, Gpu};
pub use crate::dense::{GemmTile, MIN_FLOPS, MIN_INTENSITY, Offload};
pub use crate::resident::DEFAULT_BUDGET as DEFAULT_RESIDENT_BUDGET;
pub use crate::tensor::{WgpuMask, WgpuTensor};
use crate::window::{WINDOW_ALIGN, Window, mask_u32_words, windows};

/// The largest window, in elements: element indices within a window stay
/// far below `u32::MAX` in every kernel.
const MAX_WINDOW: u64 = 1 << 30;

/// Bytes uploaded per queue write: host staging stays bounded.
const UPLOAD_PIECE: usize = 64 << 20;

/// Every adapter wgpu finds on this machine (honouring `WGPU_BACKEND`), in
/// the order [`AdapterChoice::Index`] counts them.
pub fn adapters() -> Vec<AdapterSummary> {
    context::list_adapters()
}

/// The wgpu compute-shader backend.
///
/// Tensors and masks live in device memory; selection brings back only
/// histograms, counts, key samples, the few candidates near a threshold, and
/// finally packed masks. Tensors larger than the device's storage-binding
/// limit are processed in windows, and no dispatch exceeds the workgroup
/// limit (kernels loop with a grid stride). Cloning shares the device.
///
/// ```no_run
/// use prunus_core::{Backend, Shape, UnaryOp};
/// use prunus_wgpu::WgpuBackend;
/// let b = WgpuBackend::new()?;
/// let x = b.upload(&[-1.0, 2.0], &Shape::vector(2))?;
/// let y = b.unary(UnaryOp::Square, &x)?;
/// assert_eq!(b.download(&y)?, [1.0, 4.0]);
/// # Ok::<(), prunus_core::Error>(())
/// ```
#[derive(Clone)]
pub struct WgpuBackend {
    gpu: Arc<Gpu>,
    window: u64,
    /// The most segments (input windows) one device-selection dispatch binds.
    segments: u32,
    plan: SelectionPlan,
    /// The GEMM kernel of the dense calls.
    gemm: GemmTile,
    /// Device selection's candidate list holds 1/this of a call's elements
    /// (0: no list).
    candidates: u32,
    flushes_subnormals: bool,
}

/// How [`WgpuBackend::read_pass`] reads the tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadWay {
    /// One dispatch per 64 windows of any tensors, through the segment
    /// table of device selection (its radix passes read this way).
    Segments,
    /// One dispatch per window of each tensor.
    Windows,
}

impl ReadWay {
    /// Every way, in order.
    pub const ALL: [ReadWay; 2] = [ReadWay::Segments, ReadWay::Windows];
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuBackend")
            .field("adapter", self.gpu.info())
            .field("window", &self.window)
            .field("segments", &self.segments)
            .field("plan", &self.plan)
            .field("gemm", &self.gemm)
            .field("candidates", &self.candidates)
            .field("flushes_subnormals", &self.flushes_subnormals)
            .finish()
    }
}

impl WgpuBackend {
    /// The backend on the adapter [`AdapterChoice::Auto`] picks; a clear
    /// error when there is none.
    pub fn new() -> Result<Self> {
        Self::with_adapter(&AdapterChoice::Auto)
    }

    /// The backend on a chosen adapter.
    pub fn with_adapter(choice: &AdapterChoice) -> Result<Self> {
        let gpu = Gpu::open(choice)?;
        let window = (gpu.max_binding() / 4).min(MAX_WINDOW) / WINDOW_ALIGN * WINDOW_ALIGN;
        if window == 0 {
            return Err(context::backend_error(format!(
                "{} allows storage bindings of only {} bytes",
                gpu.info().name,
                gpu.max_binding()
            )));
        }
        // A software adapter is a CPU: gathering beats extra passes there.
        let plan = if gpu.info().kind == "Cpu" {
            SelectionPlan::Gather
        } else {
            SelectionPlan::Device
        };
        let mut backend = WgpuBackend {
            gpu: Arc::new(gpu),
            window,
            segments: radix::MAX_SLOTS,
            plan,
            gemm: GemmTile::Auto,
            candidates: radix::DEFAULT_CANDIDATE_SHARE,
            flushes_subnormals: false,
        };
        backend.flushes_subnormals = backend.probe_subnormals()?;
        Ok(backend)
    }

    /// Adds and multiplies values with subnormal operands and results on the
    /// device and compares with the host.
    fn probe_subnormals(&self) -> Result<bool> {
        let tiny = f32::from_bits(1);
        let a = [tiny, f32::MIN_POSITIVE, 2f32.powi(-100)];
        let b = [tiny, -f32::MIN_POSITIVE / 2.0, 2f32.powi(-40)];
        let shape = Shape::vector(a.len());
        let (ta, tb) = (self.upload(&a, &shape)?, self.upload(&b, &shape)?);
        let sum = self.download(&self.map_binary(BinaryOp::Add, &ta, &tb)?)?;
        let product = self.download(&self.map_binary(BinaryOp::Mul, &ta, &tb)?)?;
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let host_sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let host_product: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
        Ok(bits(&sum[..2]) != bits(&host_sum[..2]) || product[2] != host_product[2])
    }

    /// The same backend with another [`SelectionPlan`]. The default is
    /// [`SelectionPlan::Device`] on GPUs (passes over device memory are
    /// cheap, waiting for the host and sorting candidates there is not) and
    /// [`SelectionPlan::Gather`] on software adapters. The masks are the
    /// same under every plan.
    pub fn with_selection_plan(mut self, plan: SelectionPlan) -> Self {
        self.plan = plan;
        self
    }

    /// The same backend with windows of at most `elements` (rounded down to
    /// a multiple of 2048, at least 2048): small windows exercise on small
    /// tensors the paths that large tensors take.
    pub fn with_max_window(mut self, elements: u64) -> Self {
        self.window = self
            .window
            .min((elements / WINDOW_ALIGN).max(1) * WINDOW_ALIGN);
        self
    }

    /// The same backend binding at most `segments` input windows per
    /// dispatch of [`SelectionPlan::Device`] (at least 1; the device's
    /// binding limit and 64 cap it too): few segments make small calls take
    /// the several-dispatch passes of calls with many tensors.
    pub fn with_max_segments(mut self, segments: u32) -> Self {
        self.segments = segments.clamp(1, radix::MAX_SLOTS);
        self
    }

    /// The same backend with a candidate list of `1/share` of a call's
    /// elements for [`SelectionPlan::Device`] (8 by default; 0: no list).
    /// The second radix pass lists the keys of the first pass's bucket, with
    /// their positions, when the list holds them all; the third pass and the
    /// search for the last pruned tie then read the list instead of the
    /// scores, so a selection reads the scores three times rather than four
    /// or five. Each listed element takes 8 bytes of device memory.
    pub fn with_candidate_share(mut self, share: u32) -> Self {
        self.candidates = share;
        self
    }

    /// The same backend running its dense GEMMs with `tile` (default
    /// [`GemmTile::Auto`]); results agree to f32 rounding either way.
    pub fn with_gemm_tile(mut self, tile: GemmTile) -> Self {
        self.gemm = tile;
        self
    }

    /// The same backend keeping at most `bytes` of retained matrices
    /// ([`prunus_core::Dense::retain`]) in device memory (default
    /// [`DEFAULT_RESIDENT_BUDGET`], 2 GiB; shared by clones). A retain that
    /// would exceed it keeps nothing, and the matrix is uploaded per call.
    pub fn with_resident_budget(self, bytes: u64) -> Self {
        self.gpu.residents().set_budget(bytes);
        self
    }

    /// Bytes of retained matrices kept in device memory now.
    pub fn resident_bytes(&self) -> u64 {
        self.gpu.residents().bytes()
    }

    /// What the device has done since it was opened (shared by clones):
    /// dispatches, passes over scores, read-backs and bytes read back.
    /// Subtract two snapshots with [`Counters::since`] to see one call.
    pub fn counters(&self) -> Counters {
        self.gpu.counters()
    }

    /// Bytes brought back from the device to the host since it was opened
    /// (shared by clones): how the tests check that selection never reads
    /// the scores back.
    pub fn bytes_read_back(&self) -> u64 {
        self.gpu.bytes_read_back()
    }

    /// The adapter this backend runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        self.gpu.info()
    }

    /// The windows of a tensor of `numel` elements, starting at multiples of
    /// `align` (a multiple of [`WINDOW_ALIGN`]).
    fn windows(&self, numel: u64, align: u64) -> Vec<Window> {
        windows(numel, self.window.max(align) / align * align, align)
    }

    /// A tiny buffer for a binding a kernel does not use.
    fn dummy(&self) -> Result<Buf> {
        self.gpu.storage(16)
    }

    fn new_tensor(&self, shape: &Shape) -> Result<WgpuTensor> {
        Ok(WgpuTensor {
            shape: shape.clone(),
            buf: self.gpu.storage(shape.numel() as u64 * 4)?,
        })
    }

    fn new_mask(&self, shape: &Shape) -> Result<WgpuMask> {
        Ok(WgpuMask {
            shape: shape.clone(),
            buf: self.gpu.storage(mask_u32_words(shape.numel() as u64) * 4)?,
        })
    }

    /// Writes host bytes to a new storage buffer, piece by piece.
    fn upload_bytes(&self, bytes: &[u8]) -> Result<Buf> {
        let buf = self.gpu.storage(bytes.len() as u64)?;
        for (i, piece) in bytes.chunks(UPLOAD_PIECE).enumerate() {
            self.gpu.write(&buf, (i * UPLOAD_PIECE) as u64, piece);
            self.gpu.batch().submit()?;
        }
        Ok(buf)
    }
}

/// The little-endian bytes of host values (devices are little-endian):
/// the values' own memory on little-endian hosts, a byte-swapped copy
/// elsewhere.
fn le_bytes<T: bytemuck::Pod>(values: &[T]) -> std::borrow::Cow<'_, [u8]> {
    let bytes: &[u8] = bytemuck::cast_slice(values);
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytes)
    } else {
        std::borrow::Cow::Owned(
            bytes
                .chunks_exact(std::mem::size_of::<T>())
                .flat_map(|c| c.iter().rev().copied())
                .collect(),
        )
    }
}

/// Little-endian `u32`s from bytes.
fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Backend for WgpuBackend {
    type Tensor = WgpuTensor;
    type Mask = WgpuMask;

    fn name(&self) -> String {
        let info = self.gpu.info();
        format!("wgpu({}, {})", info.name, info.api)
    }

    fn selection_plan(&self) -> SelectionPlan {
        self.plan
    }

    /// Whether the device's float arithmetic flushes subnormal operands or
    /// results to zero (probed when the device is opened; NVIDIA's Vulkan
    /// driver does, Mesa's llvmpipe does not). Keys, and so the masks of
    /// magnitude and random importance, are computed with integer operations
    /// and never depend on it; elementwise ops and group reductions in which
    /// a subnormal value takes part then differ from the reference backend,
    /// which keeps them.
    fn flushes_subnormals(&self) -> bool {
        self.flushes_subnormals
    }

    fn upload(&self, data: &[f32], shape: &Shape) -> Result<WgpuTensor> {
        check::same_len("tensor data", shape.numel(), data.len())?;
        Ok(WgpuTensor {
            shape: shape.clone(),
            buf: self.upload_bytes(&le_bytes(data))?,
        })
    }

    fn download(&self, tensor: &WgpuTensor) -> Result<Vec<f32>> {
        let bytes = self
            .gpu
            .read(self.gpu.batch(), &[tensor.buf.slice(0, tensor.numel() * 4)])?;
        Ok(u32s(&bytes[0]).into_iter().map(f32::from_bits).collect())
    }

    fn upload_mask(&self, mask: &Mask) -> Result<WgpuMask> {
        Ok(WgpuMask {
            shape: mask.shape().clone(),
            buf: self.upload_bytes(&le_bytes(mask.words()))?,
        })
    }

    fn download_masks(&self, masks: Vec<WgpuMask>) -> Result<Vec<Mask>> {
        let slices: Vec<_> = masks
            .iter()
            .map(|m| m.buf.slice(0, mask_u32_words(m.numel()) * 4))
            .collect();
        let bytes = self.gpu.read(self.gpu.batch(), &slices)?;
        masks
            .iter()
            .zip(bytes)
            .map(|(m, b)| {
                let words = b
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                Mask::from_words(m.shape.clone(), words)
            })
            .collect()
    }

    fn unary(&self, op: UnaryOp, x: &WgpuTensor) -> Result<WgpuTensor> {
        self.map_unary(op, x)
    }

    fn binary(&self, op: BinaryOp, a: &WgpuTensor, b: &WgpuTensor) -> Result<WgpuTensor> {
        self.map_binary(op, a, b)
    }

    fn reduce_groups(
        &self,
        x: &WgpuTensor,
        grouping: Grouping,
        reduction: Reduction,
    ) -> Result<WgpuTensor> {
        self.reduce(x, grouping, reduction)
    }

    fn random_uniform(&self, shape: &Shape, seed: u64, stream: u32) -> Result<WgpuTensor> {
        self.random(shape, seed, stream)
    }

    fn histogram(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        window: KeyWindow,
    ) -> Result<Histogram> {
        self.key_histogram(inputs, rule, window)
    }

    fn count_keys(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        key: u32,
    ) -> Result<Vec<KeyCount>> {
        self.key_counts(inputs, rule, key)
    }

    fn threshold_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        cut: TensorCut,
    ) -> Result<CutMasks<WgpuMask>> {
        self.cut_masks(inputs, rule, cut)
    }

    /// Runs on the device: radix passes of 11 bits whose buckets the last
    /// workgroup of each pass chooses, a mask pass (after a tie-counting
    /// pass where the cut splits ties), and one read-back of the cut and the
    /// per-input counts. Declines (`Ok(None)`) calls of `u32::MAX` elements
    /// or more.
    fn select_lowest(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        k: u64,
    ) -> Result<Option<LowestMasks<WgpuMask>>> {
        self.device_select(inputs, rule, k)
    }

    fn range_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        lo: u32,
        hi: u32,
    ) -> Result<RangeMasks<WgpuMask>> {
        self.key_range_masks(inputs, rule, lo, hi)
    }

    fn sample_keys(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        run: usize,
        every: usize,
    ) -> Result<Vec<u32>> {
        self.key_samples(inputs, rule, run, every)
    }

    fn n_of_m_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        pattern: NofM,
    ) -> Result<MaskBatch<WgpuMask>> {
        self.pattern_masks(inputs, rule, pattern)
    }

    fn apply_mask(&self, weights: &mut WgpuTensor, mask: &WgpuMask) -> Result<()> {
        self.zero_pruned(weights, mask)
    }

    fn gemv(&self, a: &WgpuTensor, x: &WgpuTensor) -> Result<WgpuTensor> {
        self.matvec(a, x)
    }

    fn gemm(
        &self,
        a: &WgpuTensor,
        ta: Transpose,
        b: &WgpuTensor,
        tb: Transpose,
    ) -> Result<WgpuTensor> {
        self.matmul(a, ta, b, tb)
    }

    fn rank1_update(
        &self,
        a: &mut WgpuTensor,
        alpha: f32,
        x: &WgpuTensor,
        y: &WgpuTensor,
    ) -> Result<()> {
        self.outer_update(a, alpha, x, y)
    }

    fn dot(&self, a: &WgpuTensor, b: &WgpuTensor) -> Result<WgpuTensor> {
        self.inner(a, b)
    }

    fn cholesky_solve(&self, a: &WgpuTensor, b: &WgpuTensor) -> Result<WgpuTensor> {
        self.solve(a, b)
    }
}
