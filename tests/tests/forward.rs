//! Greedy forward selection, backward elimination and compaction: the
//! compacted network computes what the scaled one does, every step picks
//! the loss-minimising unit (checked by brute force), and the stop rules
//! fire where they should.

use std::sync::Arc;

use prunus_core::host::{
    Capability, Coupling, Evaluation, Host, Objective, Parameter, ParameterKind, Samples,
};
use prunus_core::methods::forward::compaction::{CompactionPlan, Fold, UnitSelection, compact};
use prunus_core::methods::forward::{
    ForwardConfig, LayerEnding, Observer, Sampling, StepRecord, Stop, run_backward, run_forward,
};
use prunus_core::{Error, Mask, ReferenceBackend, Shape, Split, Tap};
use prunus_cpu::{CpuBackend, Par};
use prunus_lab::data::{Dataset, TeacherStudent};
use prunus_lab::host::{LabHost, Sgd};
use prunus_lab::network::{CnnSpec, Network};

/// Deterministic scales in `[0.25, 2)`, with every third unit removed.
fn scales(n: usize, salt: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            if (i as u64 + salt).is_multiple_of(3) {
                0.0
            } else {
                0.25 + 1.75 * prunus_core::contract::random::uniform(salt, 7, i as u64)
            }
        })
        .collect()
}

/// The logits of `net` on `x`.
fn logits(net: &Network, x: &[f32], n: usize) -> Vec<f32> {
    let labels = vec![0u8; n];
    let acts = net.activations(x, &labels, Tap::PreActivation).unwrap();
    acts.last().unwrap().2.clone()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = a.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * scale,
            "{what}: entry {i}: {x} vs {y}"
        );
    }
}

fn inputs(n: usize, d: usize) -> Vec<f32> {
    (0..n * d)
        .map(|j| prunus_core::contract::random::uniform(3, 1, j as u64) - 0.3)
        .collect()
}

#[test]
fn a_compacted_mlp_computes_what_the_scaled_one_does() {
    for fold in [Fold::Consumer, Fold::Producer] {
        let mut net = Network::mlp(&[20, 12, 9, 4], true, 5).unwrap();
        // Biases non-zero, so a removed unit's bias must go too.
        for i in [1, 3] {
            let b: Vec<f32> = (0..net.param(i).unwrap().len())
                .map(|j| 0.1 * j as f32 - 0.3)
                .collect();
            net.set_param(i, &b).unwrap();
        }
        net.set_unit_scales(0, Some(&scales(12, 1))).unwrap();
        net.set_unit_scales(2, Some(&scales(9, 2))).unwrap();
        let small = net.compacted(fold).unwrap();
        assert_eq!(small.name(), "mlp 20-8-6-4");
        let x = inputs(40, 20);
        assert_close(
            &logits(&net, &x, 40),
            &logits(&small, &x, 40),
            &format!("{fold:?}"),
        );
        assert_eq!(small.parameter_count(), 20 * 8 + 8 + 8 * 6 + 6 + 6 * 4 + 4);
    }
}

#[test]
fn a_compacted_cnn_computes_what_the_scaled_one_does() {
    let spec = CnnSpec {
        input: [2, 8, 8],
        channels: vec![5, 6],
        classes: 3,
        bias: true,
    };
    for fold in [Fold::Consumer, Fold::Producer] {
        let mut net = Network::cnn(&spec, 9).unwrap();
        net.set_unit_scales(0, Some(&scales(5, 4))).unwrap();
        net.set_unit_scales(2, Some(&scales(6, 5))).unwrap();
        let small = net.compacted(fold).unwrap();
        assert_eq!(small.name(), "cnn 2x8x8 conv4-4 fc3");
        // The classifier reads 4 channels of 2x2 after two poolings.
        assert_eq!(small.parameters()[4].shape.dims(), [3, 16]);
        let x = inputs(7, 128);
        assert_close(
            &logits(&net, &x, 7),
            &logits(&small, &x, 7),
            &format!("{fold:?}"),
        );
    }
}

#[test]
fn compaction_carries_masks_and_refuses_what_it_cannot_do() {
    let mut net = Network::mlp(&[6, 4, 3], false, 1).unwrap();
    let mask = Mask::from_fn(Shape::matrix(4, 6).unwrap(), |i| i % 2 == 0);
    net.set_masks(&[Some(mask), None]).unwrap();
    net.set_unit_scales(0, Some(&[1.0, 0.0, 2.0, 0.0])).unwrap();
    let small = net.compacted(Fold::Consumer).unwrap();
    let m = small.masks()[0].as_ref().unwrap();
    assert_eq!(m.len(), 12);
    assert_eq!(m.count_kept(), 6, "rows 0 and 2 keep their even columns");

    let params = net.parameters().to_vec();
    let weights = net.values().to_vec();
    let keep = |bits: &[bool]| Mask::from_bools(Shape::vector(bits.len()), bits).unwrap();
    let plan = |s: Vec<UnitSelection>, f| CompactionPlan::new(&params, &s, f);
    // The classifier's units are its classes.
    assert!(matches!(
        plan(
            vec![UnitSelection::new(1, keep(&[true, true, false]))],
            Fold::Consumer
        ),
        Err(Error::InvalidArgument { .. })
    ));
    // Nothing kept.
    assert!(matches!(
        plan(
            vec![UnitSelection::new(0, keep(&[false; 4]))],
            Fold::Consumer
        ),
        Err(Error::EmptyTensor { .. })
    ));
    // A negative scale cannot pass a ReLU; it can be folded into the producer.
    let negative = UnitSelection::new(0, keep(&[true; 4])).with_scales(vec![1.0, -1.0, 1.0, 1.0]);
    assert!(matches!(
        plan(vec![negative.clone()], Fold::Consumer),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(plan(vec![negative], Fold::Producer).is_ok());
    // Wrong lengths, twice the same layer, non-finite scales, unknown index.
    assert!(matches!(
        plan(
            vec![UnitSelection::new(0, keep(&[true; 3]))],
            Fold::Consumer
        ),
        Err(Error::ShapeMismatch { .. })
    ));
    let twice = UnitSelection::new(0, keep(&[true; 4]));
    assert!(matches!(
        plan(vec![twice.clone(), twice], Fold::Consumer),
        Err(Error::DuplicateLayer { .. })
    ));
    let nan = UnitSelection::new(0, keep(&[true; 4])).with_scales(vec![f32::NAN; 4]);
    assert!(matches!(
        plan(vec![nan], Fold::Producer),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        plan(
            vec![UnitSelection::new(7, keep(&[true; 4]))],
            Fold::Consumer
        ),
        Err(Error::UnknownParameter { .. })
    ));
    // A buffer of the wrong length.
    let ok = plan(
        vec![UnitSelection::new(0, keep(&[true, false, true, true]))],
        Fold::Consumer,
    )
    .unwrap();
    assert!(ok.weights(0, &weights[0][1..]).is_err());
    assert_eq!(ok.kept_rows(0), Some(&[0usize, 2, 3][..]));
    assert_eq!(ok.parameter_count(), 3 * 6 + 3 * 3);
}

#[test]
fn a_consumer_with_inconsistent_columns_is_refused() {
    let p = |name: &str, dims: &[usize], layer, coupling| Parameter {
        name: name.into(),
        shape: Shape::new(dims).unwrap(),
        kind: ParameterKind::Weight,
        layer,
        prunable: true,
        coupling,
    };
    let params = [
        p(
            "a",
            &[3, 2],
            0,
            Some(Coupling {
                consumer: 1,
                inputs_per_unit: 2,
            }),
        ),
        p("b", &[1, 5], 1, None),
    ];
    let keep = Mask::keep_all(Shape::vector(3));
    let w = vec![vec![0.0; 6], vec![0.0; 5]];
    assert!(matches!(
        compact(&params, &w, &[UnitSelection::new(0, keep)], Fold::Consumer),
        Err(Error::InvalidArgument { .. })
    ));
}

/// The teacher–student data at a test size.
fn small_data(samples: usize) -> Arc<Dataset> {
    Arc::new(Dataset::teacher_student(&TeacherStudent::two_layer().samples(samples)).unwrap())
}

/// A trained two-layer student.
fn student(hidden: usize, data: &Arc<Dataset>) -> LabHost {
    let net = Network::mlp(&[32, hidden, 4], true, 2).unwrap();
    let mut host = LabHost::new(net, Arc::clone(data), Sgd::default(), 2).unwrap();
    for _ in 0..3 {
        host.train_epoch().unwrap();
    }
    host
}

#[derive(Default)]
struct Steps(Vec<StepRecord>);

impl Observer for Steps {
    fn on_step(&mut self, step: &StepRecord) {
        self.0.push(step.clone());
    }
}

/// Every step added the unit of lowest mini-batch loss among all
/// candidates (lowest index among equals), found by evaluating each one
/// with the plain `set_unit_scales` + `evaluate` path.
#[test]
fn with_every_unit_a_candidate_each_step_picks_the_loss_minimising_unit() {
    let data = small_data(1000);
    for sampling in [Sampling::WithoutReplacement, Sampling::WithReplacement] {
        let dense = student(10, &data);
        let mut host = dense.clone();
        let config = ForwardConfig::default()
            .layers(vec![0])
            .candidates(100)
            .batch(64)
            .sampling(sampling)
            .widths(vec![6])
            .seed(11);
        let mut steps = Steps::default();
        let run = run_forward(&mut host, &config, &mut steps).unwrap();
        assert_eq!(run.layers[0].kept, 6);
        let mut oracle = dense.clone();
        let d = 10usize;
        let mut counts = vec![0u32; d];
        for (t, s) in steps.0.iter().enumerate() {
            let pool: Vec<usize> = (0..d)
                .filter(|&i| sampling == Sampling::WithReplacement || counts[i] == 0)
                .collect();
            assert_eq!(
                s.candidates, pool,
                "step {t}: every eligible unit is a candidate"
            );
            let mut best: Option<(f64, usize)> = None;
            for &u in &pool {
                counts[u] += 1;
                let m: u32 = counts.iter().sum();
                let sc: Vec<f32> = counts
                    .iter()
                    .map(|&c| (d as f64 * f64::from(c) / f64::from(m)) as f32)
                    .collect();
                counts[u] -= 1;
                oracle.set_unit_scales(0, Some(&sc)).unwrap();
                let e = oracle.evaluate(&Objective::new(s.batch)).unwrap();
                if best.is_none_or(|(l, _)| e.loss < l) {
                    best = Some((e.loss, u));
                }
            }
            let (loss, unit) = best.unwrap();
            assert_eq!(s.unit, unit, "{sampling:?} step {t}");
            assert_eq!(s.chosen.loss, loss, "the shared-prefix path is bit-exact");
            counts[unit] += 1;
        }
        // The host is left with the selection's scales.
        let m: u32 = counts.iter().sum();
        let expected: Vec<f32> = counts
            .iter()
            .map(|&c| (d as f64 * f64::from(c) / f64::from(m)) as f32)
            .collect();
        assert_eq!(run.layers[0].scales.as_deref(), Some(&expected[..]));
    }
}

#[test]
fn the_shared_prefix_evaluation_equals_the_plain_one_on_a_cnn() {
    let spec = CnnSpec {
        input: [1, 28, 28],
        channels: vec![4, 6],
        classes: 10,
        bias: true,
    };
    let data = Arc::new(Dataset::teacher_student(&TeacherStudent::default().samples(200)).unwrap());
    let mut host = LabHost::new(Network::cnn(&spec, 3).unwrap(), data, Sgd::default(), 3).unwrap();
    let candidates: Vec<Vec<f32>> = (0..5).map(|k| scales(6, k)).collect();
    // Temperature 2.5 too: the shared path must honour it.
    for temperature in [1.0, 2.5] {
        let objective = Objective::new(Samples::first(Split::Train, 50)).temperature(temperature);
        let fast = host
            .evaluate_unit_scales(2, &candidates, &objective)
            .unwrap();
        for (c, f) in candidates.iter().zip(&fast) {
            host.set_unit_scales(2, Some(c)).unwrap();
            assert_eq!(*f, host.evaluate(&objective).unwrap());
        }
    }
}

#[test]
fn steps_continue_the_shuffle_and_a_whole_epoch_of_them_is_an_epoch() {
    let data = small_data(500);
    let mut a = student(8, &data);
    let mut b = a.clone();
    a.train_epoch().unwrap();
    let batches = data.train.len().div_ceil(a.sgd().batch);
    b.train_steps(3).unwrap();
    b.train_steps(batches - 3).unwrap();
    assert_eq!(a.network().values(), b.network().values());
    assert_eq!(
        a.epochs(),
        b.epochs() + 1,
        "the epoch completes on the next step"
    );
}

/// A host whose losses and accuracies are scripted: unit `i` has value
/// `v[i]`; the mini-batch loss is minus the scaled average of the values
/// (so the unit of highest value is added first), and accuracies depend
/// only on how many distinct units are selected.
struct Scripted {
    params: Vec<Parameter>,
    values: Vec<f32>,
    scales: Option<Vec<f32>>,
    batch_acc: Vec<f64>,
    eval_acc: Vec<f64>,
    fine_tunes: usize,
    train: bool,
}

impl Scripted {
    fn new(values: Vec<f32>, batch_acc: Vec<f64>, eval_acc: Vec<f64>) -> Self {
        let d = values.len();
        let p = |name: &str, dims: &[usize], layer, coupling: Option<Coupling>| Parameter {
            name: name.into(),
            shape: Shape::new(dims).unwrap(),
            kind: ParameterKind::Weight,
            layer,
            prunable: coupling.is_some(),
            coupling,
        };
        Scripted {
            params: vec![
                p(
                    "hidden",
                    &[d, 2],
                    0,
                    Some(Coupling {
                        consumer: 1,
                        inputs_per_unit: 1,
                    }),
                ),
                p("out", &[2, d], 1, None),
            ],
            values,
            scales: None,
            batch_acc,
            eval_acc,
            fine_tunes: 0,
            train: true,
        }
    }

    fn distinct(&self) -> usize {
        self.scales.as_ref().map_or(self.values.len(), |s| {
            s.iter().filter(|&&x| x != 0.0).count()
        })
    }
}

impl Host for Scripted {
    fn name(&self) -> String {
        "scripted".into()
    }
    fn parameters(&self) -> &[Parameter] {
        &self.params
    }
    fn supports(&self, c: Capability) -> bool {
        c != Capability::Train || self.train
    }
    fn weights(&self, index: usize) -> prunus_core::Result<Vec<f32>> {
        Ok(vec![1.0; self.params[index].shape.numel()])
    }
    fn set_weights(&mut self, _: usize, _: &[f32]) -> prunus_core::Result<()> {
        Ok(())
    }
    fn set_unit_scales(&mut self, _: usize, s: Option<&[f32]>) -> prunus_core::Result<()> {
        self.scales = s.map(<[f32]>::to_vec);
        Ok(())
    }
    fn evaluate(&mut self, o: &Objective) -> prunus_core::Result<Evaluation> {
        let d = self.values.len() as f32;
        let avg: f32 = match &self.scales {
            Some(s) => s.iter().zip(&self.values).map(|(a, b)| a * b).sum::<f32>() / d,
            None => self.values.iter().sum::<f32>() / d,
        };
        let k = self.distinct();
        let accuracy = match o.samples.split {
            Split::Train => self.batch_acc[k],
            _ => self.eval_acc[k],
        };
        Ok(Evaluation {
            loss: f64::from(-avg),
            accuracy,
            samples: 10,
        })
    }
    fn split_len(&self, _: Split) -> prunus_core::Result<usize> {
        Ok(1000)
    }
    fn train_steps(&mut self, _: usize) -> prunus_core::Result<f64> {
        self.fine_tunes += 1;
        Ok(0.0)
    }
}

#[test]
fn the_accuracy_rule_checks_the_evaluation_samples_only_after_the_batch_passes() {
    let values = vec![0.1, 0.9, 0.5, 0.7, 0.3];
    // Index: distinct units selected (the last entry is all 5, the start).
    // The batch reaches 0.95 of the start (0.8) at 2 units, but the
    // evaluation samples are within 2% (0.784) only at 3.
    let batch = vec![0.0, 0.5, 0.77, 0.9, 0.9, 0.8];
    let eval = vec![0.0, 0.99, 0.70, 0.79, 0.8, 0.8];
    let mut host = Scripted::new(values, batch, eval);
    let config = ForwardConfig::default().layers(vec![0]).fine_tune_steps(2);
    let mut steps = Steps::default();
    let run = run_forward(&mut host, &config, &mut steps).unwrap();
    let layer = &run.layers[0];
    assert_eq!(layer.ending, LayerEnding::Accuracy);
    assert_eq!(layer.kept, 3);
    let units: Vec<usize> = steps.0.iter().map(|s| s.unit).collect();
    assert_eq!(units, [1, 3, 2], "highest value first");
    // Step 1's batch accuracy (0.5) is below 0.76: the evaluation samples
    // (where 0.99 would have passed) are not read.
    assert!(steps.0[0].evaluation.is_none());
    assert_eq!(steps.0[1].evaluation.map(|e| e.accuracy), Some(0.70));
    assert_eq!(host.fine_tunes, 1);
    assert_eq!(
        layer.scales.as_deref(),
        Some(&[0.0, 5.0 / 3.0, 5.0 / 3.0, 5.0 / 3.0, 0.0][..])
    );
}

#[test]
fn a_layer_the_rule_never_ends_is_left_unpruned_and_not_fine_tuned() {
    // The mini-batch never reaches 0.95 of the start, so the evaluation
    // samples are never checked.
    let values = vec![0.1, 0.9, 0.5];
    let batch = vec![0.0, 0.1, 0.1, 0.1];
    let mut host = Scripted::new(values.clone(), batch.clone(), vec![0.9; 4]);
    let config = ForwardConfig::default().layers(vec![0]).fine_tune_steps(2);
    let run = run_forward(&mut host, &config, &mut ()).unwrap();
    assert_eq!(run.layers[0].ending, LayerEnding::AllUnits);
    assert_eq!(
        (run.layers[0].kept, run.layers[0].scales.as_ref()),
        (3, None)
    );
    assert!(host.scales.is_none() && host.fine_tunes == 0);
    assert!(run.selections().is_empty());

    // With replacement the step limit ends it instead.
    let mut host = Scripted::new(values, batch, vec![0.9; 4]);
    let config = config.sampling(Sampling::WithReplacement).max_steps(7);
    let run = run_forward(&mut host, &config, &mut ()).unwrap();
    assert_eq!(run.layers[0].ending, LayerEnding::StepLimit);
    assert_eq!(run.layers[0].steps, 7);
    assert!(host.scales.is_none());
}

#[test]
fn width_budgets_end_layers_exactly_and_backward_keeps_the_largest_rows() {
    let data = small_data(1000);
    let dense = student(12, &data);
    let mut host = dense.clone();
    let config = ForwardConfig::default()
        .widths(vec![5])
        .candidates(4)
        .seed(3);
    let run = run_forward(&mut host, &config, &mut ()).unwrap();
    assert_eq!((run.layers[0].kept, run.layers[0].steps), (5, 5));
    assert_eq!(run.layers[0].ending, LayerEnding::Width);
    assert_eq!(run.selections()[0].keep.count_kept(), 5);

    let mut host = dense.clone();
    let backend = CpuBackend::new(Par::Seq).unwrap();
    let run = run_backward(&backend, &mut host, &config, &mut ()).unwrap();
    let w = dense.weights(0).unwrap();
    let norm = |r: usize| w[r * 32..(r + 1) * 32].iter().map(|v| v * v).sum::<f32>();
    let mut order: Vec<usize> = (0..12).collect();
    order.sort_by(|&a, &b| norm(b).total_cmp(&norm(a)).then(a.cmp(&b)));
    let kept: Vec<usize> = run.selections()[0].keep.kept().collect();
    let mut expected = order[..5].to_vec();
    expected.sort_unstable();
    assert_eq!(kept, expected);
    // The same on the reference backend.
    let mut again = dense.clone();
    let reference = run_backward(&ReferenceBackend, &mut again, &config, &mut ()).unwrap();
    assert_eq!(reference, run);
    // Backward elimination needs budgets.
    let rule = ForwardConfig::default();
    assert!(run_backward(&backend, &mut dense.clone(), &rule, &mut ()).is_err());
}

#[test]
fn bad_settings_and_missing_capabilities_are_errors() {
    let mk = || Scripted::new(vec![0.5; 3], vec![1.0; 4], vec![1.0; 4]);
    let bad = [
        ForwardConfig::default().candidates(0),
        ForwardConfig::default().batch(0),
        ForwardConfig::default().max_steps(0),
        ForwardConfig::default().widths(vec![0]),
        ForwardConfig::default().widths(vec![4]),
        ForwardConfig::default().widths(vec![1, 1]),
        ForwardConfig::default().stop(Stop::Accuracy {
            batch_fraction: 0.0,
            tolerance: 0.02,
        }),
        ForwardConfig::default().stop(Stop::Accuracy {
            batch_fraction: 0.95,
            tolerance: f64::NAN,
        }),
        ForwardConfig::default().layers(vec![1]),
        ForwardConfig::default().layers(vec![5]),
        ForwardConfig::default().layers(vec![0, 0]),
    ];
    for c in bad {
        let mut h = mk();
        assert!(run_forward(&mut h, &c, &mut ()).is_err(), "{c:?}");
        assert!(h.scales.is_none(), "refused before any work: {c:?}");
    }
    let mut h = mk();
    h.train = false;
    let c = ForwardConfig::default().fine_tune_steps(1);
    assert!(matches!(
        run_forward(&mut h, &c, &mut ()),
        Err(Error::MissingCapability { .. })
    ));
}
