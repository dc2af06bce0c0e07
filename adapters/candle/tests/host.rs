//! The candle host against the lab's host on the same network, weights and
//! data: same masks for the data-free methods, the same gradients,
//! per-sample gradients, activations and evaluations to f32 tolerance, the
//! same training steps; masks that hold through training with momentum;
//! `prune_varmap` exact and safe.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Activation, Optimizer, VarBuilder, VarMap};
use prunus_adapters::framework::{Splits, Units};
use prunus_candle::host::{CandleHost, HostSettings, Linear, PerSample, Probes, Sgd, SgdConfig};
use prunus_candle::varmap::{Selection, prune_varmap};
use prunus_core::host::{Host, Objective, Samples, Split, Tap, finite_difference_hvp};
use prunus_core::methods::flow::{Measure, MeasureConfig, prune_host, signals};
use prunus_core::{Granularity, HasShape, Mask, NofM, PruneConfig};
use prunus_cpu::{CpuBackend, Par};
use prunus_lab::data::{Dataset, Inputs, TeacherStudent};
use prunus_lab::host::{LabHost, Sgd as LabSgd};
use prunus_lab::network::Network;

const WIDTHS: [usize; 4] = [12, 12, 8, 4];

/// The lab's MLP as a candle model: flatten, then `host::Linear` layers
/// with ReLU between them.
struct Mlp {
    layers: Vec<Linear>,
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.layers
            .iter()
            .try_fold(x.flatten_from(1)?, |x, l| l.forward(&x))
    }
}

fn data() -> Arc<Dataset> {
    let spec = TeacherStudent::default()
        .input([1, 1, WIDTHS[0]])
        .samples(400)
        .hidden(16)
        .classes(WIDTHS[3])
        .inputs(Inputs::Gaussian);
    Arc::new(Dataset::teacher_student(&spec).unwrap())
}

/// The lab's host and a candle host with the same weights and data.
fn pair(bias: bool, per_sample: PerSample) -> (LabHost, CandleHost<Mlp, Sgd>, VarMap) {
    let data = data();
    let network = Network::mlp(&WIDTHS, bias, 3).unwrap();
    let lab = LabHost::new(network, Arc::clone(&data), LabSgd::default().batch(16), 5).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let probes = Probes::new();
    let layers = (1..WIDTHS.len())
        .map(|i| {
            let l = Linear::new(
                vb.pp(format!("fc{i}")),
                WIDTHS[i - 1],
                WIDTHS[i],
                bias,
                &probes,
            )
            .unwrap();
            if i + 1 < WIDTHS.len() {
                l.with_activation(Activation::Relu)
            } else {
                l
            }
        })
        .collect();
    let mut varmap_set = varmap.clone();
    for (i, p) in lab.parameters().iter().enumerate() {
        let t = Tensor::from_vec(lab.weights(i).unwrap(), p.shape.dims(), &Device::Cpu).unwrap();
        varmap_set.set_one(&p.name, t).unwrap();
    }
    let splits: Arc<Splits> = Arc::new(data.splits().unwrap());
    let host = CandleHost::new(
        Mlp { layers },
        &varmap,
        splits,
        SgdConfig::default(),
        HostSettings::default()
            .batch(16)
            .seed(5)
            .per_sample(per_sample),
    )
    .unwrap()
    .with_probes(probes)
    .unwrap();
    (lab, host, varmap)
}

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}[{i}]: {x} against {y} (scale {scale})"
        );
    }
}

fn backend() -> CpuBackend<'static> {
    CpuBackend::new(Par::Seq).unwrap()
}

#[test]
fn parameters_and_weights_are_the_labs() {
    let (lab, host, _) = pair(true, PerSample::Auto);
    assert_eq!(host.parameters(), lab.parameters_without_couplings());
    for i in 0..lab.parameters().len() {
        assert_eq!(host.weights(i).unwrap(), lab.weights(i).unwrap());
    }
}

trait WithoutCouplings {
    fn parameters_without_couplings(&self) -> Vec<prunus_core::host::Parameter>;
}

impl WithoutCouplings for LabHost {
    /// The lab knows which layer feeds which; a framework host does not.
    fn parameters_without_couplings(&self) -> Vec<prunus_core::host::Parameter> {
        self.parameters()
            .iter()
            .cloned()
            .map(|mut p| {
                p.coupling = None;
                p
            })
            .collect()
    }
}

#[test]
fn data_free_methods_give_the_labs_masks() {
    let (mut lab, mut host, _) = pair(true, PerSample::Auto);
    let b = backend();
    let prunable: Vec<usize> = (0..lab.parameters().len())
        .filter(|&i| lab.parameters()[i].prunable)
        .collect();
    let configs = [
        PruneConfig::new(0.6).global(),
        PruneConfig::new(0.6).local(),
        PruneConfig::new(0.8).global().min_density(0.1),
        PruneConfig::new(0.5).granularity(Granularity::NofM(NofM::new(2, 4).unwrap())),
        PruneConfig::new(0.5).granularity(Granularity::Groups(prunus_core::Grouping::Rows)),
    ];
    for config in &configs {
        for measure in [Measure::Magnitude, Measure::Random { seed: 9 }] {
            let mc = MeasureConfig::default();
            let a = prune_host(&b, &mut lab, measure, &prunable, &[], config, &mc).unwrap();
            let c = prune_host(&b, &mut host, measure, &prunable, &[], config, &mc).unwrap();
            assert_eq!(a, c, "{measure} {config:?}");
        }
    }
}

#[test]
fn gradients_and_hessian_products_agree_with_the_lab() {
    let (mut lab, mut host, _) = pair(true, PerSample::Auto);
    for t in [1.0, 5.0, 200.0] {
        let obj = Objective::new(Samples::first(Split::Train, 200)).temperature(t);
        let a = lab.gradient(&obj).unwrap();
        let c = host.gradient(&obj).unwrap();
        for (i, (x, y)) in a.iter().zip(&c).enumerate() {
            close(x, y, 1e-4, &format!("gradient {i} at T={t}"));
        }
        // Both through core's finite difference: the same arithmetic on
        // the same gradients.
        let fd_lab = finite_difference_hvp(&mut lab, &obj, &a).unwrap();
        let fd_candle = host.hessian_vector_product(&obj, &c).unwrap();
        for (i, (x, y)) in fd_lab.iter().zip(&fd_candle).enumerate() {
            close(x, y, 2e-2, &format!("finite-difference Hg {i} at T={t}"));
        }
    }
}

#[test]
fn data_dependent_scores_agree_with_the_lab() {
    let (mut lab, mut host, _) = pair(false, PerSample::Auto);
    let prunable: Vec<usize> = (0..lab.parameters().len())
        .filter(|&i| lab.parameters()[i].prunable)
        .collect();
    let mc = MeasureConfig::default().samples(Samples::first(Split::Train, 200));
    for measure in [Measure::Snip, Measure::SnipBiased, Measure::Taylor] {
        let a = signals(&mut lab, measure, &prunable, &[], &mc).unwrap();
        let c = signals(&mut host, measure, &prunable, &[], &mc).unwrap();
        assert_eq!(a.weights, c.weights);
        for (x, y) in a.gradient.unwrap().iter().zip(&c.gradient.unwrap()) {
            close(x, y, 1e-4, measure.name());
        }
    }
    // Hg: the candle host's is core's finite difference, the lab's is
    // exact; the same finite difference on the lab's host gives the
    // candle host's to f32 rounding, and at the plain temperature the
    // finite difference is close to the exact product (a ReLU network is
    // piecewise linear, so only kinks crossed by the step differ).
    for (measure, t) in [(Measure::Grasp, 200.0), (Measure::GradNorm, 5.0)] {
        let c = signals(&mut host, measure, &prunable, &[], &mc).unwrap();
        let obj = Objective::new(mc.samples).temperature(t);
        let g = lab.gradient(&obj).unwrap();
        let fd = finite_difference_hvp(&mut lab, &obj, &g).unwrap();
        for (j, &i) in prunable.iter().enumerate() {
            close(
                &fd[i],
                &c.hessian_gradient.as_ref().unwrap()[j],
                2e-2,
                measure.name(),
            );
        }
    }
    let obj = Objective::new(mc.samples);
    let g = lab.gradient(&obj).unwrap();
    let exact = lab.hessian_vector_product(&obj, &g).unwrap();
    let fd = host.hessian_vector_product(&obj, &g).unwrap();
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (x, y) in exact.iter().flatten().zip(fd.iter().flatten()) {
        diff += f64::from(x - y).powi(2);
        norm += f64::from(*x).powi(2);
    }
    let relative = (diff / norm).sqrt();
    eprintln!("finite-difference Hg against the exact product: {relative:.3} relative");
    assert!(relative < 0.2, "{relative}");
}

#[test]
fn per_sample_gradients_both_ways_agree_with_the_lab() {
    let (mut lab, mut outer, _) = pair(true, PerSample::OuterProduct);
    let (_, mut looped, _) = pair(true, PerSample::Loop);
    let obj = Objective::new(Samples::first(Split::Train, 37)).temperature(2.0);
    let params: Vec<usize> = (0..lab.parameters().len()).collect();
    let a = lab.per_sample_gradients(&obj, &params).unwrap();
    let o = outer.per_sample_gradients(&obj, &params).unwrap();
    let l = looped.per_sample_gradients(&obj, &params).unwrap();
    close(&o, &l, 1e-5, "outer product against loop");
    close(&o, &a, 1e-4, "outer product against lab");
    // Masked weights have no gradient, in every form.
    let mask = Mask::from_fn(lab.parameters()[0].shape.clone(), |i| i % 3 != 0);
    let mut masks = vec![None; params.len()];
    masks[0] = Some(mask);
    outer.set_masks(&masks).unwrap();
    looped.set_masks(&masks).unwrap();
    let o = outer.per_sample_gradients(&obj, &[0]).unwrap();
    let l = looped.per_sample_gradients(&obj, &[0]).unwrap();
    close(&o, &l, 1e-5, "masked");
    let d = lab.parameters()[0].shape.numel();
    assert!(
        o.iter()
            .enumerate()
            .all(|(k, &g)| (k % d) % 3 != 0 || g == 0.0)
    );
}

#[test]
fn activations_scales_and_evaluation_agree_with_the_lab() {
    let (mut lab, mut host, _) = pair(true, PerSample::Auto);
    let samples = Samples::first(Split::Validation, 50);
    for tap in [Tap::PreActivation, Tap::Output] {
        let a = lab.activations(&samples, tap).unwrap();
        let c = host.activations(&samples, tap).unwrap();
        assert_eq!(a.len(), c.len(), "{tap:?}");
        for (x, y) in a.iter().zip(&c) {
            assert_eq!((x.parameter, x.width), (y.parameter, y.width));
            close(&x.values, &y.values, 1e-5, "activations");
        }
    }
    let scales = [1.0, 0.0, 0.5, 2.0, 1.0, 0.0, 1.0, 1.0, 0.3, 1.0, 1.5, 0.0];
    lab.set_unit_scales(0, Some(&scales)).unwrap();
    host.set_unit_scales(0, Some(&scales)).unwrap();
    let obj = Objective::new(Samples::all(Split::Test));
    let (a, c) = (lab.evaluate(&obj).unwrap(), host.evaluate(&obj).unwrap());
    assert_eq!((a.samples, a.accuracy), (c.samples, c.accuracy));
    assert!((a.loss - c.loss).abs() < 1e-5 * a.loss.max(1.0));
    assert!(host.set_unit_scales(0, Some(&[1.0])).is_err());
    assert!(host.set_unit_scales(0, Some(&[f32::NAN; 12])).is_err());
}

#[test]
fn training_follows_the_labs_steps_and_masks_hold_through_momentum() {
    let (mut lab, mut host, _) = pair(true, PerSample::Auto);
    let b = backend();
    let prunable: Vec<usize> = (0..lab.parameters().len())
        .filter(|&i| lab.parameters()[i].prunable)
        .collect();
    let config = PruneConfig::new(0.7).global();
    let masks = prune_host(
        &b,
        &mut host,
        Measure::Magnitude,
        &prunable,
        &[],
        &config,
        &MeasureConfig::default(),
    )
    .unwrap();
    let mut all = vec![None; lab.parameters().len()];
    for (&i, m) in prunable.iter().zip(masks) {
        all[i] = Some(m);
    }
    lab.set_masks(&all).unwrap();
    host.set_masks(&all).unwrap();
    let la = lab.train_steps(7).unwrap();
    let lc = host.train_steps(7).unwrap();
    assert!((la - lc).abs() < 1e-4 * la.max(1.0), "{la} against {lc}");
    for (i, mask) in all.iter().enumerate() {
        let (a, c) = (lab.weights(i).unwrap(), host.weights(i).unwrap());
        close(&a, &c, 1e-4, &format!("weights {i} after 7 steps"));
        if let Some(m) = mask {
            assert!(
                m.not().kept().all(|k| c[k] == 0.0),
                "a pruned weight of {i} moved"
            );
        }
    }
    lab.train_epoch().unwrap();
    host.train_epoch().unwrap();
    for (i, m) in all.iter().enumerate() {
        if let Some(m) = m {
            let c = host.weights(i).unwrap();
            assert!(m.not().kept().all(|k| c[k] == 0.0));
        }
    }
    // Restore clears the momentum in both: the same steps from the same
    // snapshot give the same weights again.
    let snap = lab.snapshot().unwrap();
    lab.restore(&snap).unwrap();
    host.restore(&snap).unwrap();
    lab.train_steps(3).unwrap();
    host.train_steps(3).unwrap();
    for i in 0..lab.parameters().len() {
        let (a, c) = (lab.weights(i).unwrap(), host.weights(i).unwrap());
        close(&a, &c, 1e-4, &format!("weights {i} after restore"));
    }
}

#[test]
fn varmap_pruning_is_exact_and_masks_hold_through_adamw() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let fc1 = candle_nn::linear(16, 12, vb.pp("fc1")).unwrap();
    let fc2 = candle_nn::linear(12, 4, vb.pp("fc2")).unwrap();
    let b = backend();
    let n = 16 * 12 + 12 * 4;
    let first = prune_varmap(&b, &varmap, &Selection::new(), None, &PruneConfig::new(0.5)).unwrap();
    assert_eq!(first.pruned(), (n / 2) as u64);
    let second = prune_varmap(
        &b,
        &varmap,
        &Selection::new(),
        Some(&first),
        &PruneConfig::new(0.75),
    )
    .unwrap();
    assert_eq!(second.pruned(), (n * 3 / 4) as u64);
    for (name, m) in second.masks() {
        assert!(m.is_subset_of(first.mask(name).unwrap()).unwrap());
    }
    let mut opt = candle_nn::AdamW::new_lr(varmap.all_vars(), 0.05).unwrap();
    let x = Tensor::randn(0f32, 1.0, (8, 16), &Device::Cpu).unwrap();
    for _ in 0..5 {
        let y = fc2
            .forward(&fc1.forward(&x).unwrap().relu().unwrap())
            .unwrap();
        opt.backward_step(&y.sqr().unwrap().mean_all().unwrap())
            .unwrap();
        assert!(
            second.pruned_nonzero().unwrap() > 0,
            "AdamW moves pruned weights"
        );
        second.apply().unwrap();
        assert_eq!(second.pruned_nonzero().unwrap(), 0);
    }
}

#[test]
fn varmap_units_in_columns_see_the_transpose() {
    // A weight stored [in, out] and applied as x W: its 2:4 groups run
    // along the input, which is the stored tensor's first axis.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    vb.get_with_hints((8, 3), "w", candle_nn::init::DEFAULT_KAIMING_NORMAL)
        .unwrap();
    let b = backend();
    let config = PruneConfig::new(0.5).granularity(Granularity::NofM(NofM::new(2, 4).unwrap()));
    let masks = prune_varmap(
        &b,
        &varmap,
        &Selection::new().units("w", Units::Columns),
        None,
        &config,
    )
    .unwrap();
    let m = masks.mask("w").unwrap();
    assert_eq!(m.shape().dims(), [3, 8]);
    let stored = varmap.data().lock().unwrap()["w"]
        .as_tensor()
        .to_vec2::<f32>()
        .unwrap();
    for col in 0..3 {
        for group in 0..2 {
            let zeros = (0..4).filter(|r| stored[group * 4 + r][col] == 0.0).count();
            assert!(zeros >= 2, "column {col}, group {group}: {stored:?}");
        }
    }
}

#[test]
fn bad_requests_are_errors_and_change_nothing() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let _ = candle_nn::linear(4, 4, vb.pp("fc")).unwrap();
    let b = backend();
    let before = varmap.data().lock().unwrap()["fc.weight"]
        .as_tensor()
        .to_vec2::<f32>()
        .unwrap();
    assert!(prune_varmap(&b, &varmap, &Selection::new(), None, &PruneConfig::new(1.5)).is_err());
    assert!(
        prune_varmap(
            &b,
            &varmap,
            &Selection::new().only(["nope"]),
            None,
            &PruneConfig::new(0.5)
        )
        .is_err()
    );
    let mut nan = before.clone();
    nan[1][1] = f32::NAN;
    let mut vm = varmap.clone();
    vm.set_one("fc.weight", Tensor::new(nan.clone(), &Device::Cpu).unwrap())
        .unwrap();
    assert!(prune_varmap(&b, &varmap, &Selection::new(), None, &PruneConfig::new(0.5)).is_err());
    let after = varmap.data().lock().unwrap()["fc.weight"]
        .as_tensor()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(after[0], nan[0]);

    let (_, mut host, _) = pair(false, PerSample::Auto);
    assert!(host.set_weights(0, &[1.0]).is_err());
    assert!(host.set_weights(99, &[1.0]).is_err());
    let d = host.parameters()[0].shape.numel();
    assert!(host.set_weights(0, &vec![f32::NAN; d]).is_err());
    assert!(
        host.gradient(&Objective::new(Samples::first(Split::Train, 1)).temperature(0.0))
            .is_err()
    );
    let past = Samples {
        split: Split::Test,
        first: 10_000,
        count: None,
    };
    assert!(host.evaluate(&Objective::new(past)).is_err());
    assert!(host.set_masks(&[None]).is_err());
}
