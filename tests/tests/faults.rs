//! The suite can fail: a backend with one planted fault (a wrapper around the
//! reference backend) must make the check that covers that fault panic.
//! Guards against checks that compare nothing, or compare the reference
//! with itself.

use std::panic::{AssertUnwindSafe, catch_unwind};

use prunus_core::contract::backend::{CutMasks, MaskBatch, RangeMasks};
use prunus_core::contract::histogram::{Histogram, KeyCount, KeyWindow, TensorCut};
use prunus_core::{
    Backend, BinaryOp, Grouping, HasShape, HostTensor, KeyRule, Mask, NanPolicy, NofM, Reduction,
    ReferenceBackend, Result, ScoreView, Shape, Transpose, UnaryOp,
};
use prunus_testing::conformance;

/// One planted fault.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Upload replaces NaN payloads by the canonical NaN.
    UploadCanonicalisesNan,
    /// Mask upload clears the last element's bit.
    MaskDropsLastBit,
    /// `|x|` computed as `if x < 0 { -x } else { x }`: `-0.0` stays negative.
    AbsKeepsNegativeZero,
    /// `a - b` computed as `b - a`.
    SubSwapped,
    /// Group members reduced in reverse order.
    ReduceReversed,
    /// Random stream `s` gives stream `s ^ 1`.
    RandomWrongStream,
    /// Histograms report no NaN.
    HistogramForgetsNan,
    /// Key counts report one more tie.
    CountOneTieTooMany,
    /// Threshold masks prune the last tied elements of the sequence instead
    /// of the first.
    TiesFromTheEnd,
    /// Threshold masks count the tie rank within each input: every input
    /// gets the whole tie budget.
    TieRankPerInput,
    /// Threshold masks report every tied element of an input as pruned.
    TieCountsAllTied,
    /// Range candidates come back in reverse sequence order.
    RangeCandidatesReversed,
    /// Range masks prune the keys equal to the range's low end.
    RangePrunesLowEnd,
    /// Range candidates point past the end of their input.
    RangeIndexOutOfBounds,
    /// Range passes report one pruned element too many per input.
    RangeCountsOffByOne,
    /// Sampled keys perturbed (an exponent bit flipped): the threshold's
    /// guessed range goes wrong, which may cost speed but never a mask.
    SampleMisleads,
    /// N:M ties pruned from the highest index.
    NofMTiesFromTheEnd,
    /// Survivor masks ignored by every selection op.
    SurvivorsIgnored,
    /// NaN always ranked highest, whatever the policy.
    NanPolicyIgnored,
    /// Masks applied by multiplication (NaN * 0 stays NaN, -x * 0 is -0.0).
    ApplyByMultiplying,
    /// The transpose flags of gemm swapped.
    GemmSwapsTransposes,
    /// The dot product drops the last element.
    DotDropsLast,
    /// Rank-1 updates subtract.
    Rank1Subtracts,
    /// Cholesky solves return the right-hand side.
    CholeskyReturnsRhs,
}

struct Faulty(Fault);

const R: ReferenceBackend = ReferenceBackend;

fn strip<'a>(
    inputs: &[ScoreView<'a, Faulty>],
    fault: Fault,
) -> Vec<ScoreView<'a, ReferenceBackend>> {
    inputs
        .iter()
        .map(|v| {
            let survivors = if fault == Fault::SurvivorsIgnored {
                None
            } else {
                v.survivors
            };
            ScoreView::with_survivors(v.scores, survivors)
        })
        .collect()
}

/// The masks of `cut` with the last `cut.ties` tied elements of the whole
/// sequence pruned instead of the first.
fn ties_from_the_end(
    inputs: &[ScoreView<'_, ReferenceBackend>],
    rule: KeyRule,
    cut: TensorCut,
) -> CutMasks<Mask> {
    let keys: Vec<Vec<u32>> = inputs
        .iter()
        .map(|v| {
            (0..v.scores.data().len())
                .map(|i| rule.key_with(v.scores.data()[i], v.survivors.is_none_or(|m| m.get(i))))
                .collect()
        })
        .collect();
    let tied = keys.iter().flatten().filter(|&&k| k == cut.key).count() as u64;
    let spared = tied.saturating_sub(cut.ties);
    let mut rank = 0;
    let mut out = CutMasks {
        masks: Vec::new(),
        ties: Vec::new(),
    };
    for (v, keys) in inputs.iter().zip(&keys) {
        let mut pruned_ties = 0;
        out.masks.push(Mask::from_fn(v.scores.shape().clone(), |i| {
            let k = keys[i];
            if k == cut.key {
                rank += 1;
                pruned_ties += (rank > spared) as u64;
                rank <= spared
            } else {
                k > cut.key
            }
        }));
        out.ties.push(pruned_ties);
    }
    out
}

impl Faulty {
    fn rule(&self, rule: KeyRule) -> KeyRule {
        if self.0 == Fault::NanPolicyIgnored {
            rule.with_nan(NanPolicy::Highest)
        } else {
            rule
        }
    }
}

impl Backend for Faulty {
    type Tensor = HostTensor;
    type Mask = Mask;

    fn name(&self) -> String {
        format!("faulty({:?})", self.0)
    }

    fn upload(&self, data: &[f32], shape: &Shape) -> Result<HostTensor> {
        let mut t = R.upload(data, shape)?;
        if self.0 == Fault::UploadCanonicalisesNan {
            for x in t.data_mut() {
                if x.is_nan() {
                    *x = f32::NAN;
                }
            }
        }
        Ok(t)
    }

    fn download(&self, tensor: &HostTensor) -> Result<Vec<f32>> {
        R.download(tensor)
    }

    fn upload_mask(&self, mask: &Mask) -> Result<Mask> {
        let mut m = mask.clone();
        if self.0 == Fault::MaskDropsLastBit && !m.is_empty() {
            m.set(m.len() - 1, false);
        }
        Ok(m)
    }

    fn download_masks(&self, masks: Vec<Mask>) -> Result<Vec<Mask>> {
        Ok(masks)
    }

    fn unary(&self, op: UnaryOp, x: &HostTensor) -> Result<HostTensor> {
        let mut y = R.unary(op, x)?;
        if self.0 == Fault::AbsKeepsNegativeZero && op == UnaryOp::Abs {
            for (o, &v) in y.data_mut().iter_mut().zip(x.data()) {
                *o = if v < 0.0 { -v } else { v };
            }
        }
        Ok(y)
    }

    fn binary(&self, op: BinaryOp, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        if self.0 == Fault::SubSwapped && op == BinaryOp::Sub {
            return R.binary(op, b, a);
        }
        R.binary(op, a, b)
    }

    fn reduce_groups(
        &self,
        x: &HostTensor,
        grouping: Grouping,
        reduction: Reduction,
    ) -> Result<HostTensor> {
        if self.0 != Fault::ReduceReversed {
            return R.reduce_groups(x, grouping, reduction);
        }
        grouping.validate()?;
        let s = x.shape();
        let data = (0..grouping.units(s))
            .map(|u| {
                let m: Vec<usize> = grouping.members(s, u).collect();
                reduction.reduce(m.iter().rev().map(|&i| x.data()[i]))
            })
            .collect();
        HostTensor::new(data, grouping.unit_shape(s))
    }

    fn random_uniform(&self, shape: &Shape, seed: u64, stream: u32) -> Result<HostTensor> {
        let stream = if self.0 == Fault::RandomWrongStream {
            stream ^ 1
        } else {
            stream
        };
        R.random_uniform(shape, seed, stream)
    }

    fn histogram(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        window: KeyWindow,
    ) -> Result<Histogram> {
        let mut h = R.histogram(&strip(inputs, self.0), self.rule(rule), window)?;
        if self.0 == Fault::HistogramForgetsNan {
            h.nan.iter_mut().for_each(|n| *n = 0);
        }
        Ok(h)
    }

    fn count_keys(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        key: u32,
    ) -> Result<Vec<KeyCount>> {
        let mut c = R.count_keys(&strip(inputs, self.0), self.rule(rule), key)?;
        if self.0 == Fault::CountOneTieTooMany {
            c.iter_mut().for_each(|c| c.equal += 1);
        }
        Ok(c)
    }

    fn threshold_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        cut: TensorCut,
    ) -> Result<CutMasks<Mask>> {
        let plain = strip(inputs, self.0);
        let rule = self.rule(rule);
        match self.0 {
            Fault::TiesFromTheEnd => Ok(ties_from_the_end(&plain, rule, cut)),
            Fault::TieRankPerInput => {
                // Each input on its own: the budget starts afresh in each.
                let mut out = CutMasks {
                    masks: Vec::new(),
                    ties: Vec::new(),
                };
                for v in &plain {
                    let one = R.threshold_masks(std::slice::from_ref(v), rule, cut)?;
                    out.masks.extend(one.masks);
                    out.ties.extend(one.ties);
                }
                Ok(out)
            }
            Fault::TieCountsAllTied => {
                let mut out = R.threshold_masks(&plain, rule, cut)?;
                let counts = R.count_keys(&plain, rule, cut.key)?;
                for (t, c) in out.ties.iter_mut().zip(counts) {
                    *t = c.equal;
                }
                Ok(out)
            }
            _ => R.threshold_masks(&plain, rule, cut),
        }
    }

    fn range_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        lo: u32,
        hi: u32,
    ) -> Result<RangeMasks<Mask>> {
        let mut out = R.range_masks(&strip(inputs, self.0), self.rule(rule), lo, hi)?;
        match self.0 {
            Fault::RangeCandidatesReversed => out.candidates.reverse(),
            Fault::RangeIndexOutOfBounds => {
                if let Some(c) = out.candidates.first_mut() {
                    c.index += 1 << 40;
                }
            }
            Fault::RangePrunesLowEnd => {
                for c in &out.candidates {
                    if c.key == lo {
                        let (m, i) = (&mut out.masks[c.input as usize], c.index as usize);
                        out.pruned[c.input as usize] += m.get(i) as u64;
                        m.set(i, false);
                    }
                }
            }
            Fault::RangeCountsOffByOne => {
                for p in &mut out.pruned {
                    *p += 1;
                }
            }
            _ => {}
        }
        Ok(out)
    }

    fn sample_keys(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        run: usize,
        every: usize,
    ) -> Result<Vec<u32>> {
        let mut keys = R.sample_keys(&strip(inputs, self.0), self.rule(rule), run, every)?;
        if self.0 == Fault::SampleMisleads {
            for k in &mut keys {
                *k ^= 0x0080_0000;
            }
        }
        Ok(keys)
    }

    fn n_of_m_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        pattern: NofM,
    ) -> Result<MaskBatch<Mask>> {
        let plain = strip(inputs, self.0);
        let rule = self.rule(rule);
        if self.0 != Fault::NofMTiesFromTheEnd {
            return R.n_of_m_masks(&plain, rule, pattern);
        }
        let mut batch = R.n_of_m_masks(&plain, rule, pattern)?;
        for (m, v) in batch.masks.iter_mut().zip(&plain) {
            let keys: Vec<u32> = (0..v.scores.data().len())
                .map(|i| rule.key_with(v.scores.data()[i], v.survivors.is_none_or(|m| m.get(i))))
                .collect();
            for g in (0..keys.len()).step_by(pattern.m) {
                let mut order: Vec<usize> = (g..g + pattern.m).collect();
                order.sort_by_key(|&i| (keys[i], std::cmp::Reverse(i)));
                for (r, &i) in order.iter().enumerate() {
                    m.set(i, r >= pattern.m - pattern.n);
                }
            }
        }
        Ok(batch)
    }

    fn apply_mask(&self, weights: &mut HostTensor, mask: &Mask) -> Result<()> {
        if self.0 != Fault::ApplyByMultiplying {
            return R.apply_mask(weights, mask);
        }
        prunus_core::contract::check::same_shape("apply mask", weights.shape(), mask.shape())?;
        for (i, w) in weights.data_mut().iter_mut().enumerate() {
            *w *= mask.get(i) as u8 as f32;
        }
        Ok(())
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
        if self.0 == Fault::GemmSwapsTransposes {
            return R.gemm(a, tb, b, ta);
        }
        R.gemm(a, ta, b, tb)
    }

    fn rank1_update(
        &self,
        a: &mut HostTensor,
        alpha: f32,
        x: &HostTensor,
        y: &HostTensor,
    ) -> Result<()> {
        let alpha = if self.0 == Fault::Rank1Subtracts {
            -alpha
        } else {
            alpha
        };
        R.rank1_update(a, alpha, x, y)
    }

    fn dot(&self, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        let d = R.dot(a, b)?;
        if self.0 == Fault::DotDropsLast && !a.data().is_empty() {
            let last = a.data().len() - 1;
            return HostTensor::new(
                vec![d.data()[0] - a.data()[last] * b.data()[last]],
                d.shape().clone(),
            );
        }
        Ok(d)
    }

    fn cholesky_solve(&self, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        let x = R.cholesky_solve(a, b)?;
        if self.0 == Fault::CholeskyReturnsRhs {
            return Ok(b.clone());
        }
        Ok(x)
    }
}

type Check = fn(&Faulty);

#[track_caller]
fn must_fail(fault: Fault, checks: &[(&str, Check)]) {
    // The reference must pass each of these checks (the suite's own tests
    // cover that); here the planted fault must make each one fail.
    for (name, check) in checks {
        let b = Faulty(fault);
        let r = catch_unwind(AssertUnwindSafe(|| check(&b)));
        assert!(r.is_err(), "{name} did not notice the fault {fault:?}");
    }
}

#[test]
fn a_backend_that_returns_bad_candidates_gets_an_error_not_a_panic() {
    let b = Faulty(Fault::RangeIndexOutOfBounds);
    let data: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
    let t = b.upload(&data, &Shape::vector(1000)).expect("upload");
    let layers = [prunus_core::Layer::new("w", &t)];
    let got = prunus_core::prune(&b, &layers, &prunus_core::PruneConfig::new(0.5));
    assert!(
        matches!(got, Err(prunus_core::Error::Backend { .. })),
        "expected a backend error, got {got:?}"
    );
}

#[test]
fn a_misleading_sample_changes_no_mask() {
    // The sample only guesses where the threshold is: with every sampled key
    // wrong, selection falls back and every prune check still passes...
    let b = Faulty(Fault::SampleMisleads);
    conformance::check_prune_sampled(&b);
    conformance::check_prune_large(&b);
    // ...while the check of the sample itself notices.
    must_fail(
        Fault::SampleMisleads,
        &[("sample_keys", conformance::check_sample_keys)],
    );
}

#[test]
fn faultless_wrapper_passes() {
    // A fault that only touches an op no check below uses still passes the
    // selection checks: the wrapper itself is sound.
    let b = Faulty(Fault::DotDropsLast);
    conformance::check_prune_hand_computed_global(&b);
    conformance::check_threshold_masks(&b);
    conformance::check_threshold_masks_hand_computed(&b);
    conformance::check_n_of_m_masks(&b);
}

#[test]
fn transfers_and_elementwise_faults_are_caught() {
    must_fail(
        Fault::UploadCanonicalisesNan,
        &[("upload_download", conformance::check_upload_download)],
    );
    must_fail(
        Fault::MaskDropsLastBit,
        &[("mask_transfer", conformance::check_mask_transfer)],
    );
    must_fail(
        Fault::AbsKeepsNegativeZero,
        &[("unary_ops", conformance::check_unary_ops)],
    );
    must_fail(
        Fault::SubSwapped,
        &[("binary_ops", conformance::check_binary_ops)],
    );
    must_fail(
        Fault::ReduceReversed,
        &[
            ("reduce_groups", conformance::check_reduce_groups),
            ("prune_groups", conformance::check_prune_groups),
        ],
    );
    must_fail(
        Fault::RandomWrongStream,
        &[
            ("random_uniform", conformance::check_random_uniform),
            (
                "prune_random_importance",
                conformance::check_prune_random_importance,
            ),
        ],
    );
    must_fail(
        Fault::ApplyByMultiplying,
        &[("apply_mask", conformance::check_apply_mask)],
    );
}

#[test]
fn selection_faults_are_caught() {
    must_fail(
        Fault::HistogramForgetsNan,
        &[
            ("histogram", conformance::check_histogram),
            ("prune_nan_policies", conformance::check_prune_nan_policies),
            ("prune_errors", conformance::check_prune_errors),
        ],
    );
    must_fail(
        Fault::CountOneTieTooMany,
        &[
            ("count_keys", conformance::check_count_keys),
            // Per-input cuts distributed over the counts go wrong.
            ("threshold_masks", conformance::check_threshold_masks),
        ],
    );
    must_fail(
        Fault::TiesFromTheEnd,
        &[
            ("threshold_masks", conformance::check_threshold_masks),
            (
                "threshold_masks_hand_computed",
                conformance::check_threshold_masks_hand_computed,
            ),
            ("selection_large", conformance::check_selection_large),
            ("prune_large", conformance::check_prune_large),
        ],
    );
    // Tie ranks must run across inputs, not restart in each.
    must_fail(
        Fault::TieRankPerInput,
        &[
            ("threshold_masks", conformance::check_threshold_masks),
            (
                "threshold_masks_hand_computed",
                conformance::check_threshold_masks_hand_computed,
            ),
            ("selection_large", conformance::check_selection_large),
            ("prune_large", conformance::check_prune_large),
        ],
    );
    must_fail(
        Fault::TieCountsAllTied,
        &[
            ("threshold_masks", conformance::check_threshold_masks),
            (
                "threshold_masks_hand_computed",
                conformance::check_threshold_masks_hand_computed,
            ),
            ("selection_large", conformance::check_selection_large),
        ],
    );
    must_fail(
        Fault::RangeCandidatesReversed,
        &[
            ("range_masks", conformance::check_range_masks),
            // Ties inside the threshold's bucket go to the highest index.
            ("prune_survivors", conformance::check_prune_survivors),
        ],
    );
    must_fail(
        Fault::RangePrunesLowEnd,
        &[("range_masks", conformance::check_range_masks)],
    );
    must_fail(
        Fault::RangeCountsOffByOne,
        &[
            ("range_masks", conformance::check_range_masks),
            // Selection trusts the counts: the global count comes out wrong.
            ("prune_sampled", conformance::check_prune_sampled),
        ],
    );
    must_fail(
        Fault::NofMTiesFromTheEnd,
        &[
            ("n_of_m_masks", conformance::check_n_of_m_masks),
            (
                "prune_n_of_m_hand_computed",
                conformance::check_prune_n_of_m_hand_computed,
            ),
            ("prune_n_of_m", conformance::check_prune_n_of_m),
        ],
    );
    must_fail(
        Fault::SurvivorsIgnored,
        &[
            ("histogram", conformance::check_histogram),
            (
                "threshold_masks_hand_computed",
                conformance::check_threshold_masks_hand_computed,
            ),
            ("prune_survivors", conformance::check_prune_survivors),
            ("prune_iterative", conformance::check_prune_iterative),
        ],
    );
    must_fail(
        Fault::NanPolicyIgnored,
        &[
            ("histogram", conformance::check_histogram),
            (
                "threshold_masks_hand_computed",
                conformance::check_threshold_masks_hand_computed,
            ),
            ("prune_nan_policies", conformance::check_prune_nan_policies),
        ],
    );
}

#[test]
fn linear_algebra_faults_are_caught() {
    must_fail(
        Fault::GemmSwapsTransposes,
        &[("gemm", conformance::check_gemm)],
    );
    must_fail(Fault::DotDropsLast, &[("dot", conformance::check_dot)]);
    must_fail(
        Fault::Rank1Subtracts,
        &[("rank1_update", conformance::check_rank1_update)],
    );
    must_fail(
        Fault::CholeskyReturnsRhs,
        &[("cholesky_solve", conformance::check_cholesky_solve)],
    );
}
