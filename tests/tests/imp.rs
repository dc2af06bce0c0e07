//! Iterative magnitude pruning and Information-Consistent Pruning
//! (METHODS.md §3): the flow vectors against hand-computed values, the
//! PQ-index rate against its formula, and the IMP driver on a toy host whose
//! every step is predictable (exact schedules, nested masks, exact
//! rewinding, stop rules firing where they should, errors for bad
//! settings), and on a lab network on both CPU backends.

use std::sync::Arc;

use proptest::prelude::*;

use prunus_core::host::{
    Activation, Capability, Evaluation, Host, Objective, Parameter, ParameterKind, Samples,
    Snapshot, Split,
};
use prunus_core::methods::imp::consistency::{
    Flow, STD_FLOOR, distance, gradient_flow_of, information_flow_of,
};
use prunus_core::methods::imp::pq_index::PqIndex;
use prunus_core::methods::imp::{
    Ending, EpochRecord, ImpConfig, Observer, Rewind, Round, Step, StopRule, run_imp,
};
use prunus_core::{
    Error, Granularity, Mask, NofM, PruneConfig, ReferenceBackend, Schedule, Shape, units_to_prune,
};
use prunus_cpu::{CpuBackend, Par};

fn parameter(name: &str, dims: &[usize], kind: ParameterKind, prunable: bool) -> Parameter {
    Parameter {
        name: name.into(),
        shape: Shape::new(dims).unwrap(),
        kind,
        layer: 0,
        prunable,
        coupling: None,
    }
}

#[test]
fn information_flow_matches_a_hand_computed_case() {
    // Layer 1: a conv of 3 filters over 2 positions; layer 2: 2 units;
    // layer 3: 1 unit; 2 samples. With two samples every unit that varies
    // standardises to (-1, 1) or (1, -1), and one that does not to (0, 0).
    let params = [
        parameter("conv", &[3, 1, 3, 3], ParameterKind::Weight, true),
        parameter("fc1", &[2, 6], ParameterKind::Weight, true),
        parameter("fc2", &[1, 2], ParameterKind::Weight, false),
    ];
    let conv = Activation {
        parameter: 0,
        width: 6,
        // Per sample: filter 0 at both positions, filter 1, filter 2.
        // Spatial means: sample 0 (0, 0, 3), sample 1 (2, 4, 3).
        values: vec![-1.0, 1.0, 0.0, 0.0, 3.0, 3.0, 1.0, 3.0, 4.0, 4.0, 2.0, 4.0],
    };
    // Both units go up: (-1, 1) each.
    let fc1 = Activation {
        parameter: 1,
        width: 2,
        values: vec![-1.0, 0.0, 7.0, 1.0],
    };
    // Goes down: (1, -1).
    let fc2 = Activation {
        parameter: 2,
        width: 1,
        values: vec![5.0, -5.0],
    };
    let flow = information_flow_of(&params, &[conv, fc1, fc2]).unwrap();
    // C_1 = [[1, 1], [1, 1], [0, 0]]: mean 4/6. C_2 = [[-1], [-1]]: mean -1.
    assert_eq!(flow.len(), 2);
    assert!((flow[0] - 2.0 / 3.0).abs() < 1e-12, "{flow:?}");
    assert!((flow[1] + 1.0).abs() < 1e-12, "{flow:?}");
}

/// `mean(E[z_l z_{l+1}ᵀ])` with the whole matrix formed, as the definition
/// reads.
fn flow_by_definition(layers: &[Vec<Vec<f64>>]) -> Vec<f64> {
    let standardise = |units: &Vec<Vec<f64>>| -> Vec<Vec<f64>> {
        units
            .iter()
            .map(|u| {
                let n = u.len() as f64;
                let mean = u.iter().sum::<f64>() / n;
                let std = (u.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n)
                    .sqrt()
                    .max(STD_FLOOR);
                u.iter().map(|v| (v - mean) / std).collect()
            })
            .collect()
    };
    let z: Vec<_> = layers.iter().map(standardise).collect();
    z.windows(2)
        .map(|w| {
            let n = w[0][0].len() as f64;
            let mut sum = 0.0;
            for a in &w[0] {
                for b in &w[1] {
                    sum += a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / n;
                }
            }
            sum / (w[0].len() * w[1].len()) as f64
        })
        .collect()
}

proptest! {
    #[test]
    fn information_flow_equals_the_definition(
        widths in prop::collection::vec(1usize..5, 2..4),
        samples in 2usize..7,
        seed in any::<u64>(),
    ) {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f64 / (1u64 << 24) as f64) * 4.0 - 2.0
        };
        let params: Vec<Parameter> = widths
            .iter()
            .map(|&w| parameter("w", &[w, 3], ParameterKind::Weight, true))
            .collect();
        let mut layers = Vec::new();
        let mut activations = Vec::new();
        for (i, &w) in widths.iter().enumerate() {
            let units: Vec<Vec<f64>> = (0..w)
                .map(|_| (0..samples).map(|_| (next() as f32) as f64).collect())
                .collect();
            let values = (0..samples)
                .flat_map(|n| units.iter().map(move |u| u[n] as f32))
                .collect();
            activations.push(Activation { parameter: i, width: w, values });
            layers.push(units);
        }
        let flow = information_flow_of(&params, &activations).unwrap();
        let expected = flow_by_definition(&layers);
        prop_assert_eq!(flow.len(), expected.len());
        for (a, b) in flow.iter().zip(&expected) {
            prop_assert!((a - b).abs() < 1e-9, "{} vs {}", a, b);
        }
    }
}

#[test]
fn flows_refuse_bad_input() {
    let params = [parameter("w", &[2, 3], ParameterKind::Weight, true)];
    // Each bad layer comes with a good one after it, so the error is the bad
    // layer's and not the one-layer refusal.
    let good = || Activation {
        parameter: 0,
        width: 2,
        values: vec![0.0, 1.0, 2.0, 3.0],
    };
    let bad_width = Activation {
        parameter: 0,
        width: 3,
        values: vec![0.0; 6],
    };
    assert!(matches!(
        information_flow_of(&params, &[bad_width, good()]),
        Err(Error::InvalidArgument {
            what: "activation width",
            ..
        })
    ));
    let nan = Activation {
        parameter: 0,
        width: 2,
        values: vec![0.0, f32::NAN],
    };
    assert!(matches!(
        information_flow_of(&params, &[nan, good()]),
        Err(Error::NonFinite { .. })
    ));
    let unknown = Activation {
        parameter: 4,
        width: 2,
        values: vec![0.0; 2],
    };
    assert!(matches!(
        information_flow_of(&params, &[unknown, good()]),
        Err(Error::InvalidArgument {
            what: "activation's parameter",
            ..
        })
    ));
    let no_samples = Activation {
        parameter: 0,
        width: 2,
        values: vec![],
    };
    assert!(matches!(
        information_flow_of(&params, &[no_samples, good()]),
        Err(Error::InvalidArgument {
            what: "activation values",
            ..
        })
    ));
    // Two good layers over different sample counts.
    let three = Activation {
        parameter: 0,
        width: 2,
        values: vec![0.0; 6],
    };
    assert!(matches!(
        information_flow_of(&params, &[good(), three]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        gradient_flow_of(&params, &[vec![0.0; 5]]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        gradient_flow_of(&params, &[vec![f32::INFINITY; 6]]),
        Err(Error::NonFinite { .. })
    ));
    // One layer has no pair to correlate.
    let single = Activation {
        parameter: 0,
        width: 2,
        values: vec![0.0, 1.0, 2.0, 3.0],
    };
    assert!(matches!(
        information_flow_of(&params, &[single]),
        Err(Error::InvalidArgument {
            what: "information flow",
            ..
        })
    ));
    assert!(distance(&[1.0], &[1.0, 2.0]).is_err());
    assert_eq!(distance(&[3.0, 0.0], &[0.0, 4.0]).unwrap(), 5.0);
}

/// The rate of METHODS.md §3 written out with `powf`.
fn pq_rate_by_formula(w: &[f64], p: f64, q: f64, eta: f64, gamma: f64, beta: f64) -> f64 {
    let d = w.len() as f64;
    let m = |r: f64| (w.iter().map(|x| x.abs().powf(r)).sum::<f64>() / d).powf(1.0 / r);
    let index = 1.0 - m(p) / m(q);
    let kept = d * (1.0 + eta).powf(q / (p - q)) * (1.0 - index).powf(p * q / (q - p));
    (gamma * (1.0 - kept / d)).clamp(0.0, beta)
}

proptest! {
    #[test]
    fn pq_rate_matches_its_formula(
        w in prop::collection::vec(-4.0f32..4.0, 1..60),
        p in 0.1f64..1.5,
        gap in 0.1f64..2.0,
        eta in 0.0f64..0.5,
        gamma in 0.5f64..3.0,
        beta in 0.05f64..1.0,
    ) {
        prop_assume!(w.iter().any(|&x| x != 0.0));
        let q = p + gap;
        let pq = PqIndex::default().norms(p, q).eta(eta).clamp(gamma, beta);
        let w64: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
        let expected = pq_rate_by_formula(&w64, p, q, eta, gamma, beta);
        let rate = pq.rate_of(w.iter().copied()).unwrap();
        prop_assert!((rate - expected).abs() < 1e-9, "{} vs {}", rate, expected);
        prop_assert!((0.0..=beta).contains(&rate));
        // The index is in [0, 1) and does not see the scale.
        let index = pq.index(w.iter().copied()).unwrap();
        prop_assert!((0.0..1.0).contains(&(index + 1e-12)));
        let scaled = pq.index(w.iter().map(|&x| x * 8.0)).unwrap();
        prop_assert!((index - scaled).abs() < 1e-9);
    }
}

#[test]
fn pq_index_refuses_what_it_cannot_measure() {
    let pq = PqIndex::default();
    assert!(pq.index(std::iter::empty()).is_err());
    assert!(pq.index([0.0f32; 4]).is_err());
    assert!(matches!(
        pq.index([1.0, f32::NAN]),
        Err(Error::NonFinite { .. })
    ));
    assert!(PqIndex::default().norms(1.0, 0.5).validate().is_err());
    assert!(PqIndex::default().clamp(1.0, 1.5).validate().is_err());
}

/// A host whose training is predictable: each epoch adds 1 to every weight
/// still present; accuracy climbs by 0.1 per epoch since the last restore
/// (from 0.5); the gradient is `1 / epochs since restore` on every weight
/// still present.
#[derive(Clone)]
struct Toy {
    params: Vec<Parameter>,
    values: Vec<Vec<f32>>,
    masks: Vec<Option<Mask>>,
    since_restore: usize,
    restores: usize,
    lacks: Option<Capability>,
}

impl Toy {
    fn new() -> Self {
        let params = vec![
            parameter("fc1.weight", &[6, 8], ParameterKind::Weight, true),
            parameter("fc1.bias", &[6], ParameterKind::Bias, false),
            parameter("fc2.weight", &[4, 6], ParameterKind::Weight, true),
            parameter("out.weight", &[3, 4], ParameterKind::Weight, false),
        ];
        let values = params
            .iter()
            .enumerate()
            .map(|(p, info)| {
                (0..info.shape.numel())
                    .map(|i| ((i * 37 + p * 11) % 23) as f32 - 11.0)
                    .collect()
            })
            .collect();
        Toy {
            masks: vec![None; params.len()],
            params,
            values,
            since_restore: 0,
            restores: 0,
            lacks: None,
        }
    }

    fn kept(&self, p: usize, i: usize) -> bool {
        self.masks[p].as_ref().is_none_or(|m| m.get(i))
    }
}

impl Host for Toy {
    fn name(&self) -> String {
        "toy".into()
    }

    fn parameters(&self) -> &[Parameter] {
        &self.params
    }

    fn supports(&self, c: Capability) -> bool {
        self.lacks != Some(c) && c != Capability::Activations
    }

    fn weights(&self, index: usize) -> prunus_core::Result<Vec<f32>> {
        Ok(self.values[index].clone())
    }

    fn set_weights(&mut self, index: usize, values: &[f32]) -> prunus_core::Result<()> {
        self.values[index] = values.to_vec();
        Ok(())
    }

    /// Scaled by `samples / 100`, so tests can see which samples were read.
    fn gradient(&mut self, objective: &Objective) -> prunus_core::Result<Vec<Vec<f32>>> {
        let share = objective.samples.count.unwrap_or(100) as f32 / 100.0;
        let g = share / self.since_restore.max(1) as f32;
        Ok((0..self.params.len())
            .map(|p| {
                (0..self.values[p].len())
                    .map(|i| if self.kept(p, i) { g } else { 0.0 })
                    .collect()
            })
            .collect())
    }

    fn set_masks(&mut self, masks: &[Option<Mask>]) -> prunus_core::Result<()> {
        self.masks = masks.to_vec();
        for p in 0..self.params.len() {
            for i in 0..self.values[p].len() {
                if !self.kept(p, i) {
                    self.values[p][i] = 0.0;
                }
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, objective: &Objective) -> prunus_core::Result<Evaluation> {
        Ok(Evaluation {
            loss: 1.0 / (1.0 + self.since_restore as f64),
            accuracy: (0.5 + 0.1 * self.since_restore as f64).min(1.0),
            samples: objective.samples.count.unwrap_or(100),
        })
    }

    fn train_epoch(&mut self) -> prunus_core::Result<f64> {
        for p in 0..self.params.len() {
            for i in 0..self.values[p].len() {
                if self.kept(p, i) {
                    self.values[p][i] += 1.0;
                }
            }
        }
        self.since_restore += 1;
        Ok(1.0 / self.since_restore as f64)
    }

    fn restore(&mut self, snapshot: &Snapshot) -> prunus_core::Result<()> {
        for (i, w) in snapshot.weights.iter().enumerate() {
            self.set_weights(i, w)?;
        }
        self.since_restore = 0;
        self.restores += 1;
        Ok(())
    }
}

/// Records every round's masks and every epoch.
#[derive(Default)]
struct Recorder {
    masks: Vec<(usize, Vec<Option<Mask>>)>,
    epochs: Vec<EpochRecord>,
    rounds: Vec<Round>,
}

impl Observer for Recorder {
    fn on_masks(&mut self, round: usize, masks: &[Option<Mask>]) {
        self.masks.push((round, masks.to_vec()));
    }

    fn on_epoch(&mut self, epoch: &EpochRecord) {
        self.epochs.push(epoch.clone());
    }

    fn on_round(&mut self, round: &Round) {
        self.rounds.push(round.clone());
    }
}

const PRUNABLE: [usize; 2] = [0, 2];

/// The masks of each round are nested and the counts exact.
fn check_nested(recorder: &Recorder) {
    for pair in recorder.masks.windows(2) {
        for &p in &PRUNABLE {
            let (a, b) = (
                pair[0].1[p].as_ref().unwrap(),
                pair[1].1[p].as_ref().unwrap(),
            );
            assert!(
                b.is_subset_of(a).unwrap(),
                "round {} revived weights",
                pair[1].0
            );
        }
    }
    for (_, masks) in &recorder.masks {
        for p in [1, 3] {
            assert!(masks[p].is_none(), "parameter {p} is not prunable");
        }
    }
}

#[test]
fn classic_imp_follows_its_schedule_with_nested_exact_masks() {
    let mut toy = Toy::new();
    let config = ImpConfig::classic(0.8)
        .epochs(3, 2)
        .rewind(Rewind::WarmUp, 1);
    let mut rec = Recorder::default();
    let run = run_imp(&ReferenceBackend, &mut toy, &config, &mut rec).unwrap();
    let targets = Schedule::FixedRate {
        rate: 0.2,
        target: 0.8,
    }
    .targets()
    .unwrap();
    assert_eq!(run.rounds.len(), targets.len() + 1);
    assert_eq!(rec.masks.len(), targets.len());
    check_nested(&rec);
    // Local scope: every layer prunes exactly round(s * n) each round.
    for ((_, masks), &s) in rec.masks.iter().zip(&targets) {
        for &p in &PRUNABLE {
            let m = masks[p].as_ref().unwrap();
            assert_eq!(m.count_pruned(), units_to_prune(s, m.len() as u64));
        }
    }
    assert_eq!(run.rounds[0].ending, Ending::Dense);
    assert_eq!(run.rounds[0].epochs, 3);
    assert!(
        run.rounds[1..]
            .iter()
            .all(|r| r.epochs == 2 && r.ending == Ending::Limit)
    );
    assert_eq!(run.retraining_epochs(), 2 * targets.len());
    assert!((run.last().sparsity - 0.8).abs() < 0.01);
    assert_eq!(run.masks, rec.masks.last().unwrap().1);
    assert_eq!(rec.rounds, run.rounds);
    // Test samples were evaluated for the records.
    assert!(run.rounds.iter().all(|r| r.test.is_some()));
}

#[test]
fn rewinding_restores_exactly_the_saved_survivors() {
    for (rewind, warmup) in [(Rewind::WarmUp, 2), (Rewind::Initialization, 2)] {
        let mut toy = Toy::new();
        let init = toy.values.clone();
        let config = ImpConfig::classic(0.5).epochs(4, 3).rewind(rewind, warmup);
        let mut rec = Recorder::default();
        let run = run_imp(&ReferenceBackend, &mut toy, &config, &mut rec).unwrap();
        // Saved at init + warm-up (each epoch adds 1), then the last round
        // adds its epochs; pruned weights are exactly zero.
        let saved_at = if rewind == Rewind::WarmUp { warmup } else { 0 };
        let last = run.last().epochs;
        for (p, start) in init.iter().enumerate() {
            for (i, &v) in toy.values[p].iter().enumerate() {
                let expected = if toy.kept(p, i) {
                    start[i] + (saved_at + last) as f32
                } else {
                    0.0
                };
                assert_eq!(v, expected, "{rewind:?}: parameter {p} entry {i}");
            }
        }
        assert_eq!(toy.restores, run.rounds.len() - 1);
    }
}

#[test]
fn global_scope_and_pq_rate_prune_what_they_say() {
    let mut toy = Toy::new();
    let pq = PqIndex::default();
    // The rate of round 1 comes from the dense weights after training.
    let mut trained = toy.clone();
    for _ in 0..2 {
        trained.train_epoch().unwrap();
    }
    let survivors: Vec<f32> = PRUNABLE
        .iter()
        .flat_map(|&p| trained.values[p].clone())
        .collect();
    let rate = pq.rate_of(survivors.iter().copied()).unwrap();
    let config = ImpConfig::classic(0.9)
        .step(Step::PqIndex(pq))
        .prune(PruneConfig::new(0.0).global())
        .epochs(2, 1);
    let mut rec = Recorder::default();
    let run = run_imp(&ReferenceBackend, &mut toy, &config, &mut rec).unwrap();
    check_nested(&rec);
    let total = 48 + 24;
    let pruned = |masks: &Vec<Option<Mask>>| -> u64 {
        PRUNABLE
            .iter()
            .map(|&p| masks[p].as_ref().unwrap().count_pruned())
            .sum()
    };
    assert_eq!(pruned(&rec.masks[0].1), units_to_prune(rate, total));
    // Every round prunes something and the last lands on the target.
    for pair in rec.masks.windows(2) {
        assert!(pruned(&pair[1].1) > pruned(&pair[0].1));
    }
    assert_eq!(
        pruned(&rec.masks.last().unwrap().1),
        units_to_prune(0.9, total)
    );
    assert!(run.rounds.len() > 2);
}

#[test]
fn stop_rules_fire_where_they_should() {
    // Recovered: dense accuracy is 0.5 + 0.1 * 5 = 1.0; within 0.25 means
    // 0.8, reached after 3 epochs since the rewind.
    let mut toy = Toy::new();
    let config = ImpConfig::classic(0.5)
        .epochs(5, 6)
        .stop(StopRule::Recovered { tolerance: 0.25 });
    let run = run_imp(&ReferenceBackend, &mut toy, &config, &mut ()).unwrap();
    assert!(
        run.rounds[1..]
            .iter()
            .all(|r| r.epochs == 3 && r.ending == Ending::Rule)
    );
    // min_epochs holds the rule back.
    let mut toy = Toy::new();
    let run = run_imp(
        &ReferenceBackend,
        &mut toy,
        &config.clone().min_epochs(4),
        &mut (),
    )
    .unwrap();
    assert!(run.rounds[1..].iter().all(|r| r.epochs == 4));

    // Gradient flow: the distance to the dense gradient shrinks as
    // 1 / epochs grows; the rule stops at the first epoch below ε, and
    // never when ε is below every distance.
    for epsilon in [0.5, 2.0, 1e-9] {
        let mut toy = Toy::new();
        let config = ImpConfig::classic(0.6)
            .epochs(4, 8)
            .stop(StopRule::Consistent {
                flow: Flow::Gradient,
                epsilon,
            });
        let mut rec = Recorder::default();
        let run = run_imp(&ReferenceBackend, &mut toy, &config, &mut rec).unwrap();
        assert_eq!(run.reference.len(), 1);
        assert_eq!(run.reference[0].0, Flow::Gradient);
        for r in &run.rounds[1..] {
            let d: Vec<f64> = r.epochs_trace.iter().map(|e| e.distances[0].1).collect();
            let first = d.iter().position(|&x| x < epsilon);
            match first {
                Some(i) => {
                    assert_eq!(r.epochs, i + 1, "ε {epsilon}: {d:?}");
                    assert_eq!(r.ending, Ending::Rule);
                }
                None => {
                    assert_eq!(r.epochs, 8);
                    assert_eq!(r.ending, Ending::Limit);
                }
            }
        }
        if epsilon == 1e-9 {
            assert_eq!(run.retraining_epochs(), 8 * (run.rounds.len() - 1));
        }
    }
}

#[test]
fn recorded_gradient_distances_are_the_flow_distances() {
    let mut toy = Toy::new();
    let config = ImpConfig::classic(0.36)
        .epochs(2, 3)
        .watch(&[Flow::Gradient]);
    let mut rec = Recorder::default();
    run_imp(&ReferenceBackend, &mut toy, &config, &mut rec).unwrap();
    // Dense: 2 epochs since no restore, every weight present: g = 1/2.
    let flow = |masks: &[Option<Mask>], t: usize| -> Vec<f64> {
        let g = 1.0 / t as f64;
        let mut v = Vec::new();
        for p in [0, 2, 3] {
            let n = toy.params[p].shape.numel();
            let kept = masks[p].as_ref().map_or(n as u64, Mask::count_kept) as f64;
            v.push(kept * g / n as f64);
            v.push(kept.sqrt() * g);
        }
        v
    };
    let reference = flow(&[None, None, None, None], 2);
    for e in rec.epochs.iter().filter(|e| e.round > 0) {
        let masks = &rec.masks[e.round - 1].1;
        let expected = distance(&flow(masks, e.epoch), &reference).unwrap();
        assert_eq!(e.distances[0].0, Flow::Gradient);
        assert!((e.distances[0].1 - expected).abs() < 1e-6 * expected.max(1.0));
    }
    assert!(
        rec.epochs
            .iter()
            .filter(|e| e.round == 0)
            .all(|e| e.distances.is_empty())
    );

    // Flows on half the samples: the toy's gradients, and so every
    // distance, halve; accuracy is still measured on all of them.
    let mut toy = Toy::new();
    let half = config.flow_samples(Samples::first(Split::Validation, 50));
    let mut rec_half = Recorder::default();
    run_imp(&ReferenceBackend, &mut toy, &half, &mut rec_half).unwrap();
    assert_eq!(rec.epochs.len(), rec_half.epochs.len());
    for (a, b) in rec.epochs.iter().zip(&rec_half.epochs) {
        assert_eq!(a.validation, b.validation);
        for (x, y) in a.distances.iter().zip(&b.distances) {
            assert!((x.1 / 2.0 - y.1).abs() < 1e-6, "{x:?} {y:?}");
        }
    }
}

#[test]
fn bad_settings_and_missing_capabilities_are_errors() {
    let run = |config: ImpConfig, toy: &mut Toy| run_imp(&ReferenceBackend, toy, &config, &mut ());
    let mut toy = Toy::new();
    assert!(matches!(
        run(ImpConfig::classic(1.5), &mut toy),
        Err(Error::SparsityOutOfRange { .. })
    ));
    assert!(matches!(
        run(ImpConfig::classic(0.5).step(Step::FixedRate(0.0)), &mut toy),
        Err(Error::FractionOutOfRange { .. })
    ));
    assert!(run(ImpConfig::incop(0.5, Flow::Gradient, 0.0), &mut toy).is_err());
    assert!(run(ImpConfig::incop(0.5, Flow::Gradient, f64::NAN), &mut toy).is_err());
    assert!(run(ImpConfig::classic(0.5).epochs(1, 0), &mut toy).is_err());
    assert!(
        run(
            ImpConfig::classic(0.5)
                .rewind(Rewind::WarmUp, 9)
                .epochs(3, 2),
            &mut toy
        )
        .is_err()
    );
    assert!(run(ImpConfig::classic(0.5).max_rounds(0), &mut toy).is_err());
    let nm = PruneConfig::new(0.0).granularity(Granularity::NofM(NofM::TWO_FOUR));
    assert!(run(ImpConfig::classic(0.5).prune(nm), &mut toy).is_err());
    // Too few rounds for the target.
    assert!(matches!(
        run(ImpConfig::classic(0.9).epochs(1, 1).max_rounds(3), &mut toy),
        Err(Error::InvalidArgument { .. })
    ));
    // The toy has no activations, so the information flow is refused.
    let mut toy = Toy::new();
    assert!(matches!(
        run(ImpConfig::incop(0.5, Flow::Information, 0.1), &mut toy),
        Err(Error::MissingCapability { .. })
    ));
    let mut toy = Toy::new();
    toy.lacks = Some(Capability::Train);
    assert!(matches!(
        run(ImpConfig::classic(0.5), &mut toy),
        Err(Error::MissingCapability { .. })
    ));
    // Nothing prunable once the guards skip both layers.
    let mut toy = Toy::new();
    let skip = PruneConfig::new(0.0).skip("fc1.weight").skip("fc2.weight");
    assert!(run(ImpConfig::classic(0.5).prune(skip), &mut toy).is_err());
    // Target 0: dense training only.
    let mut toy = Toy::new();
    let dense = run(ImpConfig::classic(0.0).epochs(2, 2), &mut toy).unwrap();
    assert_eq!(dense.rounds.len(), 1);
}

/// A lab network on the synthetic task: IMP's masks are nested, the final
/// sparsity exact, and the run identical on the reference, CPU and wgpu
/// backends and on 1 or 2 threads.
#[test]
fn lab_imp_is_nested_exact_and_the_same_on_every_backend() {
    use prunus_lab::data::{Dataset, TeacherStudent};
    use prunus_lab::host::{LabHost, Sgd};
    use prunus_lab::network::Network;
    let data = Arc::new(Dataset::teacher_student(&TeacherStudent::default().samples(600)).unwrap());
    let widths = [data.input_len(), 24, 12, data.classes];
    let config = ImpConfig::incop(0.8, Flow::Information, 0.02)
        .epochs(3, 3)
        .watch(&Flow::ALL);
    let go = |threads: usize, cpu: bool| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let net = Network::mlp(&widths, true, 7).unwrap();
            let mut host = LabHost::new(net, Arc::clone(&data), Sgd::default(), 7).unwrap();
            let mut rec = Recorder::default();
            let run = if cpu {
                run_imp(
                    &CpuBackend::new(Par::Rayon(threads)).unwrap(),
                    &mut host,
                    &config,
                    &mut rec,
                )
            } else {
                run_imp(&ReferenceBackend, &mut host, &config, &mut rec)
            }
            .unwrap();
            (run, rec, host)
        })
    };
    let (run, rec, host) = go(1, false);
    let prunable: Vec<usize> = (0..host.parameters().len())
        .filter(|&i| host.parameters()[i].prunable)
        .collect();
    for pair in rec.masks.windows(2) {
        for &p in &prunable {
            let (a, b) = (
                pair[0].1[p].as_ref().unwrap(),
                pair[1].1[p].as_ref().unwrap(),
            );
            assert!(b.is_subset_of(a).unwrap());
        }
    }
    let total: u64 = prunable
        .iter()
        .map(|&p| host.parameters()[p].shape.numel() as u64)
        .sum();
    let pruned: u64 = prunable
        .iter()
        .map(|&p| run.masks[p].as_ref().unwrap().count_pruned())
        .sum();
    assert_eq!(pruned, units_to_prune(0.8, total));
    // Pruned weights are zero in the host.
    for &p in &prunable {
        let w = host.weights(p).unwrap();
        let m = run.masks[p].as_ref().unwrap();
        assert!((0..w.len()).all(|i| m.get(i) || w[i] == 0.0));
    }
    assert!(
        run.rounds[1..]
            .iter()
            .all(|r| r.epochs_trace[0].distances.len() == 2)
    );
    for (threads, cpu) in [(2, false), (1, true), (2, true)] {
        let (other, _, other_host) = go(threads, cpu);
        assert_eq!(other.masks, run.masks, "{threads} threads, cpu {cpu}");
        assert_eq!(other_host.network().values(), host.network().values());
    }
    // And on the GPU, where there is one (skipped with a notice otherwise).
    if let Some(gpu) = prunus_tests::gpu::wgpu_backend() {
        let net = Network::mlp(&widths, true, 7).unwrap();
        let mut gpu_host = LabHost::new(net, Arc::clone(&data), Sgd::default(), 7).unwrap();
        let gpu_run = run_imp(&gpu, &mut gpu_host, &config, &mut ()).unwrap();
        assert_eq!(gpu_run.masks, run.masks, "wgpu");
        assert_eq!(gpu_host.network().values(), host.network().values());
    }
}
