//! A worked example for backend authors: a toy third-party backend that
//! passes the whole conformance harness, and the same backend with one
//! planted bug (ties at the threshold pruned from the highest index instead
//! of the lowest) that the harness catches with a message naming the mask
//! and the element.
//!
//! The toy keeps tensors in host memory and hands every primitive to the
//! reference backend; a real one would run them on its device. It asks for
//! the histogram selection plan, as GPU backends do, so that `prune()` goes
//! through its `threshold_masks`, where the bug is planted.

use prunus_core::contract::backend::{CutMasks, MaskBatch, RangeMasks};
use prunus_core::contract::histogram::{Histogram, KeyCount, KeyWindow, TensorCut};
use prunus_core::{
    Backend, BinaryOp, Grouping, HasShape, HostTensor, KeyRule, Mask, NofM, Reduction,
    ReferenceBackend, Result, ScoreView, SelectionPlan, Shape, Transpose, UnaryOp,
};
use prunus_testing::conformance::{check_threshold_masks, run_check, run_conformance};

/// A backend of host tensors that delegates to the reference backend.
#[derive(Clone, Copy, Debug, Default)]
struct ToyBackend {
    /// The planted bug: tied elements at the threshold are pruned from the
    /// end of the sequence instead of its start.
    ties_from_the_end: bool,
}

const R: ReferenceBackend = ReferenceBackend;

/// The same inputs as views of the reference backend (the tensor types are
/// the same).
fn on_reference<'a>(inputs: &[ScoreView<'a, ToyBackend>]) -> Vec<ScoreView<'a, ReferenceBackend>> {
    inputs
        .iter()
        .map(|v| ScoreView::with_survivors(v.scores, v.survivors))
        .collect()
}

/// `mask` with its elements in reverse flat order.
fn reversed_mask(mask: &Mask) -> Mask {
    let n = mask.len();
    Mask::from_fn(mask.shape().clone(), |i| mask.get(n - 1 - i))
}

/// The bug: run the reference on the whole sequence reversed (inputs in
/// reverse order, each flattened and reversed), so that its "lowest index
/// first" becomes "highest index first", then turn the masks back.
fn threshold_from_the_end(
    inputs: &[ScoreView<'_, ToyBackend>],
    rule: KeyRule,
    cut: TensorCut,
) -> Result<CutMasks<Mask>> {
    let scores: Vec<HostTensor> = inputs
        .iter()
        .rev()
        .map(|v| {
            let data: Vec<f32> = v.scores.data().iter().rev().copied().collect();
            HostTensor::new(data, v.scores.shape().clone())
        })
        .collect::<Result<_>>()?;
    let survivors: Vec<Option<Mask>> = inputs
        .iter()
        .rev()
        .map(|v| v.survivors.map(reversed_mask))
        .collect();
    let views: Vec<ScoreView<'_, ReferenceBackend>> = scores
        .iter()
        .zip(&survivors)
        .map(|(s, m)| ScoreView::with_survivors(s, m.as_ref()))
        .collect();
    let out = R.threshold_masks(&views, rule, cut)?;
    Ok(CutMasks {
        masks: out.masks.iter().rev().map(reversed_mask).collect(),
        ties: out.ties.into_iter().rev().collect(),
    })
}

impl Backend for ToyBackend {
    type Tensor = HostTensor;
    type Mask = Mask;

    fn name(&self) -> String {
        if self.ties_from_the_end {
            "toy(ties from the end)".into()
        } else {
            "toy".into()
        }
    }

    fn selection_plan(&self) -> SelectionPlan {
        SelectionPlan::Histograms
    }

    fn upload(&self, data: &[f32], shape: &Shape) -> Result<HostTensor> {
        R.upload(data, shape)
    }

    fn download(&self, tensor: &HostTensor) -> Result<Vec<f32>> {
        R.download(tensor)
    }

    fn upload_mask(&self, mask: &Mask) -> Result<Mask> {
        R.upload_mask(mask)
    }

    fn download_masks(&self, masks: Vec<Mask>) -> Result<Vec<Mask>> {
        R.download_masks(masks)
    }

    fn unary(&self, op: UnaryOp, x: &HostTensor) -> Result<HostTensor> {
        R.unary(op, x)
    }

    fn binary(&self, op: BinaryOp, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        R.binary(op, a, b)
    }

    fn reduce_groups(
        &self,
        x: &HostTensor,
        grouping: Grouping,
        reduction: Reduction,
    ) -> Result<HostTensor> {
        R.reduce_groups(x, grouping, reduction)
    }

    fn random_uniform(&self, shape: &Shape, seed: u64, stream: u32) -> Result<HostTensor> {
        R.random_uniform(shape, seed, stream)
    }

    fn histogram(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        window: KeyWindow,
    ) -> Result<Histogram> {
        R.histogram(&on_reference(inputs), rule, window)
    }

    fn count_keys(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        key: u32,
    ) -> Result<Vec<KeyCount>> {
        R.count_keys(&on_reference(inputs), rule, key)
    }

    fn threshold_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        cut: TensorCut,
    ) -> Result<CutMasks<Mask>> {
        if self.ties_from_the_end {
            return threshold_from_the_end(inputs, rule, cut);
        }
        R.threshold_masks(&on_reference(inputs), rule, cut)
    }

    fn range_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        lo: u32,
        hi: u32,
    ) -> Result<RangeMasks<Mask>> {
        R.range_masks(&on_reference(inputs), rule, lo, hi)
    }

    fn sample_keys(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        run: usize,
        every: usize,
    ) -> Result<Vec<u32>> {
        R.sample_keys(&on_reference(inputs), rule, run, every)
    }

    fn n_of_m_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        pattern: NofM,
    ) -> Result<MaskBatch<Mask>> {
        R.n_of_m_masks(&on_reference(inputs), rule, pattern)
    }

    fn apply_mask(&self, weights: &mut HostTensor, mask: &Mask) -> Result<()> {
        R.apply_mask(weights, mask)
    }

    fn gemv(&self, a: &HostTensor, x: &HostTensor) -> Result<HostTensor> {
        R.gemv(a, x)
    }

    fn gemm(
        &self,
        a: &HostTensor,
        ta: Transpose,
        b: &HostTensor,
        tb: Transpose,
    ) -> Result<HostTensor> {
        R.gemm(a, ta, b, tb)
    }

    fn rank1_update(
        &self,
        a: &mut HostTensor,
        alpha: f32,
        x: &HostTensor,
        y: &HostTensor,
    ) -> Result<()> {
        R.rank1_update(a, alpha, x, y)
    }

    fn dot(&self, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        R.dot(a, b)
    }

    fn cholesky_solve(&self, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        R.cholesky_solve(a, b)
    }
}

// The correct toy passes every check of the harness, one #[test] each.
prunus_testing::conformance_tests!(toy, ToyBackend::default());

/// One check of the harness, its panic turned into a described failure: the
/// bug is caught, and the message names the backend, the case, the mask and
/// the first element that differs.
#[test]
fn the_planted_bug_fails_the_threshold_check_with_a_clear_message() {
    let buggy = ToyBackend {
        ties_from_the_end: true,
    };
    let failure = run_check(&buggy, "check_threshold_masks", check_threshold_masks)
        .expect_err("ties from the end must fail the threshold check");
    assert_eq!(failure.check, "check_threshold_masks");
    assert_eq!(failure.backend, "toy(ties from the end)");
    let message = failure.to_string();
    assert!(
        message.starts_with("check_threshold_masks failed on toy(ties from the end): "),
        "{message}"
    );
    assert!(
        message.contains("masks differ first at element"),
        "{message}"
    );
    // The correct toy passes the same check.
    run_check(
        &ToyBackend::default(),
        "check_threshold_masks",
        check_threshold_masks,
    )
    .expect("the correct toy passes");
}

/// The whole harness on the buggy toy: the failures are values, each with
/// its message; selection checks fail, the elementwise and linear algebra
/// checks (which the bug does not touch) pass.
#[test]
fn the_whole_harness_reports_the_planted_bug() {
    let buggy = ToyBackend {
        ties_from_the_end: true,
    };
    let report = run_conformance(&buggy).expect_err("the planted bug must be caught");
    assert_eq!(report.checks, 41);
    for check in [
        "check_threshold_masks",
        "check_threshold_masks_hand_computed",
        "check_selection_large",
        "check_prune_large",
    ] {
        let failure = report
            .failure(check)
            .unwrap_or_else(|| panic!("{check} missed the bug:\n{report}"));
        assert!(
            failure.message.contains("masks differ first at element"),
            "{failure}"
        );
    }
    for check in ["check_unary_ops", "check_gemm", "check_n_of_m_masks"] {
        assert!(report.failure(check).is_none(), "{check} failed:\n{report}");
    }
    assert!(
        report
            .to_string()
            .contains("of 41 conformance checks failed"),
        "{report}"
    );
}
