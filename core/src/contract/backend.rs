//! The backend contract: the few primitives every pruning method is written
//! against.
//!
//! A backend owns tensors and masks (on a device or in host memory) and runs
//! a small set of primitives over them. Everything composite — scopes, guards,
//! importance measures, schedules — is written once in core on top of these.
//!
//! The contract is shaped for devices with asynchronous readback: operations
//! that produce tensors or masks return backend handles that may still be
//! pending; only [`Backend::download`] and [`Backend::download_masks`] bring
//! tensors and masks back, and the selection ops bring back small results
//! only: histograms and counts, a 1/64 key sample ([`Backend::sample_keys`]),
//! the few elements near the threshold ([`RangeMasks::candidates`]). The
//! selection ops take a whole slice of inputs so that one call (one readback)
//! covers every layer. Scores never leave the device during a selection.

use alloc::string::String;
use alloc::vec::Vec;

use crate::contract::error::Result;
use crate::contract::granularity::{Grouping, NofM, Reduction};
use crate::contract::histogram::{Histogram, KeyCount, KeyWindow, TensorCut};
use crate::contract::key::KeyRule;
use crate::contract::mask::Mask;
use crate::contract::op::{BinaryOp, Transpose, UnaryOp};
use crate::contract::shape::{HasShape, Shape};

/// One input of a selection op: scores on the backend and, optionally, the
/// mask of an earlier round. Elements that mask prunes get the key
/// [`crate::contract::key::KEY_PRUNED`] and so are pruned again first.
pub struct ScoreView<'a, B: Backend + ?Sized> {
    /// The scores (or the weights, ranked through a [`KeyRule`]).
    pub scores: &'a B::Tensor,
    /// The survivors of an earlier round, of the same shape.
    pub survivors: Option<&'a B::Mask>,
}

impl<B: Backend + ?Sized> Clone for ScoreView<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend + ?Sized> Copy for ScoreView<'_, B> {}

impl<'a, B: Backend + ?Sized> ScoreView<'a, B> {
    /// Scores with no earlier mask.
    pub fn new(scores: &'a B::Tensor) -> Self {
        ScoreView {
            scores,
            survivors: None,
        }
    }

    /// Scores restricted to the survivors of an earlier round.
    pub fn with_survivors(scores: &'a B::Tensor, survivors: Option<&'a B::Mask>) -> Self {
        ScoreView { scores, survivors }
    }
}

/// Masks of a threshold selection, and how many elements at the cut key
/// each input pruned.
#[derive(Debug)]
pub struct CutMasks<M> {
    /// One mask per input.
    pub masks: Vec<M>,
    /// Elements at the cut key pruned, per input.
    pub ties: Vec<u64>,
}

/// An element whose key lies in the range of [`Backend::range_masks`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The input's position in the call.
    pub input: u32,
    /// The element's key.
    pub key: u32,
    /// The element's flat index within its input.
    pub index: u64,
}

/// Masks of [`Backend::range_masks`] and the elements they leave undecided.
#[derive(Debug)]
pub struct RangeMasks<M> {
    /// One mask per input: keys below the range pruned, the rest kept.
    pub masks: Vec<M>,
    /// The elements whose key is in the range, in sequence order (input
    /// order, then flat index). Elements an earlier mask prunes have the key
    /// [`crate::contract::key::KEY_PRUNED`], as in histograms.
    pub candidates: Vec<Candidate>,
    /// NaN scores per input (counted whatever the policy), as in
    /// [`Histogram::nan`].
    pub nan: Vec<u64>,
    /// The number of elements each mask prunes (those an earlier mask
    /// pruned included), counted in the same pass, so that selection need
    /// not count the masks again.
    pub pruned: Vec<u64>,
}

/// Masks of an N:M selection and the NaN count of each input.
#[derive(Debug)]
pub struct MaskBatch<M> {
    /// One mask per input.
    pub masks: Vec<M>,
    /// NaN scores per input.
    pub nan: Vec<u64>,
}

/// How [`crate::select()`] trades passes over the scores against data
/// brought back to the host. Every plan prunes exactly the same elements;
/// only the speed differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SelectionPlan {
    /// Fewest passes: a 1/64 key sample places the threshold in a key range,
    /// one pass writes the masks and gathers the elements inside it (up to
    /// 1/64 of them), and the host settles those exactly. Right where a pass
    /// over the scores costs about as much as host work on the gathered
    /// elements: CPUs, and software GPUs.
    #[default]
    Gather,
    /// Only histograms and counts come back before the masks: a 16-bit
    /// histogram pass, a second one inside the threshold's bucket (or, when
    /// the bucket holds at most [`GATHER_MOST`] elements, a gather of it),
    /// then a mask pass that resolves ties itself. Right for GPUs, where a
    /// pass over the scores takes a millisecond but bringing millions of
    /// candidates back and sorting them takes far longer.
    Histograms,
    /// The whole selection on the backend: [`Backend::select_lowest`] finds
    /// the cut of the `k` lowest keys of all inputs together and writes the
    /// masks without bringing anything back between its passes; only the
    /// cut and per-input counts come back before the masks. Right for GPUs,
    /// where even a histogram read back between passes costs more than a
    /// pass. A backend that does not implement [`Backend::select_lowest`]
    /// (or declines a call) runs the [`SelectionPlan::Histograms`] plan
    /// instead.
    Device,
}

/// What [`Backend::select_lowest`] returns: the masks of the `k` lowest
/// elements and the facts core checks before bringing them back.
#[derive(Debug)]
pub struct LowestMasks<M> {
    /// One mask per input: exactly the `k` lowest elements of all inputs
    /// together, by key and then sequence order (input order, then flat
    /// index), pruned.
    pub masks: Vec<M>,
    /// The cut that was applied to the inputs as one sequence: keys below
    /// `cut.key` pruned, and the first `cut.ties` elements at it (a count,
    /// never [`TensorCut::ALL`]).
    pub cut: TensorCut,
    /// NaN scores per input (counted whatever the policy), as in
    /// [`Histogram::nan`].
    pub nan: Vec<u64>,
    /// The number of elements each mask prunes (those an earlier mask
    /// pruned included).
    pub pruned: Vec<u64>,
}

/// The most elements the [`SelectionPlan::Histograms`] plan gathers to the
/// host instead of running a second histogram pass.
pub const GATHER_MOST: u64 = 1 << 16;

/// A tensor backend: the contract every pruning method is written against.
///
/// Implementations must agree bit for bit with [`crate::ReferenceBackend`] on
/// every op that produces masks, histograms or counts, and on elementwise ops,
/// group reductions (which follow [`Reduction::reduce`]'s canonical order) and
/// random tensors. Dense linear algebra may differ by rounding. The one
/// exception is a device whose float arithmetic flushes subnormal operands
/// and results to zero (most GPUs; see [`Backend::flushes_subnormals`]): its
/// elementwise ops and group reductions may differ from the reference where,
/// and only where, a subnormal value takes part, by at most the flushed
/// amounts. Masks of magnitude and random importance never differ (keys are
/// integer operations on the weights' bits); group scores that are subnormal
/// can rank differently there.
///
/// Shapes of all inputs are validated by the backend; mismatches are
/// [`crate::Error::ShapeMismatch`] errors, never panics.
pub trait Backend {
    /// A dense f32 tensor owned by the backend.
    type Tensor: HasShape;
    /// A packed keep-mask owned by the backend.
    type Mask: HasShape;

    /// A short name for reports, e.g. `cpu(2 threads)`.
    fn name(&self) -> String;

    /// How selection should use this backend: [`SelectionPlan::Gather`]
    /// unless the backend says otherwise.
    fn selection_plan(&self) -> SelectionPlan {
        SelectionPlan::Gather
    }

    /// Whether this backend's float arithmetic flushes subnormal operands or
    /// results to zero (false unless the backend says otherwise). The
    /// conformance suite then allows elementwise ops and group reductions to
    /// differ from the reference where a subnormal value takes part.
    fn flushes_subnormals(&self) -> bool {
        false
    }

    /// Copies host data into a new tensor; fails when `data.len()` is not
    /// `shape.numel()`.
    fn upload(&self, data: &[f32], shape: &Shape) -> Result<Self::Tensor>;

    /// Copies a tensor back to the host (a synchronisation point).
    fn download(&self, tensor: &Self::Tensor) -> Result<Vec<f32>>;

    /// Copies a host mask to the backend.
    fn upload_mask(&self, mask: &Mask) -> Result<Self::Mask>;

    /// Brings masks back to the host, all in one synchronisation.
    fn download_masks(&self, masks: Vec<Self::Mask>) -> Result<Vec<Mask>>;

    /// Applies `op` to every element.
    fn unary(&self, op: UnaryOp, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Applies `op` elementwise to two tensors of the same shape.
    fn binary(&self, op: BinaryOp, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// One score per unit of `grouping` (shape `[units]`), each reduced in
    /// the canonical order of [`Reduction::reduce`] over
    /// [`Grouping::members`].
    fn reduce_groups(
        &self,
        x: &Self::Tensor,
        grouping: Grouping,
        reduction: Reduction,
    ) -> Result<Self::Tensor>;

    /// A tensor whose element `i` is [`crate::contract::random::uniform`]`(seed, stream, i)`.
    fn random_uniform(&self, shape: &Shape, seed: u64, stream: u32) -> Result<Self::Tensor>;

    /// The key histogram of all `inputs` together in `window`, with NaN
    /// counts per input. One synchronisation for all inputs.
    fn histogram(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        window: KeyWindow,
    ) -> Result<Histogram>;

    /// Per input, how many keys are below `key` and equal to it. Core's own
    /// selection does not need it; callers that select shard by shard use it
    /// with [`crate::selection::radix::Cut::distribute`].
    fn count_keys(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        key: u32,
    ) -> Result<Vec<KeyCount>>;

    /// One keep-mask per input for `cut` applied to the inputs as one
    /// sequence (input order, then flat index): an element is pruned when
    /// `cut.prunes(key, r)`, `r` being the number of elements before it in
    /// that sequence whose key equals `cut.key`. Ties are resolved in the
    /// same pass, so no counting pass is needed beforehand. Also returns, per
    /// input, how many elements at `cut.key` it pruned: a caller that streams
    /// tensors one call at a time carries the remaining tie budget on.
    fn threshold_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        cut: TensorCut,
    ) -> Result<CutMasks<Self::Mask>>;

    /// The masks that prune exactly the `k` lowest elements of all `inputs`
    /// together (by key, then sequence order: input order, then flat index,
    /// so ties at the cut go to the lowest index), the whole selection run by
    /// the backend itself with one small read-back, of the cut and the
    /// counts, at the end. The masks must equal, bit for bit, what
    /// [`Backend::threshold_masks`] writes for the cut that
    /// [`crate::selection::radix::RadixSelect`] finds over the same keys.
    ///
    /// Used under [`SelectionPlan::Device`]. `Ok(None)` means the backend
    /// does not do this (the default) or not for these inputs (for example
    /// too many elements for its counters), and core selects with the
    /// [`SelectionPlan::Histograms`] plan instead. Fails when `k` exceeds
    /// the number of elements.
    fn select_lowest(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        k: u64,
    ) -> Result<Option<LowestMasks<Self::Mask>>> {
        let _ = (inputs, rule, k);
        Ok(None)
    }

    /// One mask pass that settles everything outside a key range `[lo, hi]`
    /// known to hold the threshold: keys below `lo` are pruned, keys from
    /// `lo` on are kept, and the elements whose key lies in the range come
    /// back as [`Candidate`]s, so the caller settles them exactly
    /// without another pass over the scores. Use it when the range is known
    /// to hold few elements (after a histogram pass has counted them).
    fn range_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        lo: u32,
        hi: u32,
    ) -> Result<RangeMasks<Self::Mask>>;

    /// The keys of a fixed sample of the inputs, in sequence order: in every
    /// input, the runs of `run` consecutive elements that start at the
    /// multiples of `run * every` (every element when `every` is 1). Selection
    /// uses it to guess the threshold's key range; the result never depends on
    /// the guess, only the speed does.
    fn sample_keys(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        run: usize,
        every: usize,
    ) -> Result<Vec<u32>>;

    /// N:M masks: in every group of `pattern.m` consecutive elements along
    /// a row of the matrix view (the input side), the `m - n` smallest by (key, index) are pruned.
    fn n_of_m_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        pattern: NofM,
    ) -> Result<MaskBatch<Self::Mask>>;

    /// Zeroes the pruned elements of `weights` in place.
    fn apply_mask(&self, weights: &mut Self::Tensor, mask: &Self::Mask) -> Result<()>;

    /// `a x` for a matrix `a` of shape `[m, n]` and a vector `x` of `[n]`.
    fn gemv(&self, a: &Self::Tensor, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// `op(a) op(b)` for rank-2 tensors, `op` transposing where asked.
    fn gemm(
        &self,
        a: &Self::Tensor,
        ta: Transpose,
        b: &Self::Tensor,
        tb: Transpose,
    ) -> Result<Self::Tensor>;

    /// `a += alpha x yᵀ` in place, `a` of `[m, n]`, `x` of `[m]`, `y` of `[n]`.
    fn rank1_update(
        &self,
        a: &mut Self::Tensor,
        alpha: f32,
        x: &Self::Tensor,
        y: &Self::Tensor,
    ) -> Result<()>;

    /// The dot product of two tensors of the same shape, as a `[1]` tensor
    /// (it stays on the device).
    fn dot(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// Solves `a x = b` for a symmetric positive definite `a` of `[n, n]` and
    /// `b` of `[n, r]` (or `[n]`), by Cholesky factorisation.
    fn cholesky_solve(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
}
