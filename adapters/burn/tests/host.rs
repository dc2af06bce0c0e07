//! The burn host against the lab's: the same weights and data give the same
//! masks, the same scores and the same training; masks hold through
//! training; bad input is an error, never a panic.

use std::sync::Arc;

use burn::module::Module;
use burn::nn::{LinearConfig, Relu};
use burn::tensor::Tensor;
use prunus_adapters::framework::{SplitData, Splits};
use prunus_burn::{BurnHost, HostConfig, Pruner};
use prunus_core::methods::flow::{self, Measure, MeasureConfig};
use prunus_core::{
    Backend, Granularity, Grouping, Host, Mask, NofM, Objective, PruneConfig, Samples, Split,
};
use prunus_lab::host::{LabHost, Sgd};
use prunus_lab::network::Network;

mod common;

use common::*;

/// The lab host and a burn host holding the same weights, data and
/// optimizer settings.
fn pair(seed: u64) -> (LabHost, Burn) {
    let network = Network::mlp(&WIDTHS, true, seed).unwrap();
    let lab = LabHost::new(network, dataset(), Sgd::default().batch(16), seed).unwrap();
    let mut burn = burn_host(&cpu(), seed);
    for i in 0..lab.parameters().len() {
        burn.set_weights(i, &lab.weights(i).unwrap()).unwrap();
    }
    (lab, burn)
}

#[test]
fn parameters_match_the_labs_and_linear_weights_are_transposed() {
    let (lab, burn) = pair(1);
    let strip = |h: &dyn Host| {
        h.parameters()
            .iter()
            .map(|p| {
                let c = p.coupling;
                (
                    p.name.clone(),
                    p.shape.clone(),
                    p.kind,
                    p.layer,
                    p.prunable,
                    c,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&lab), strip(&burn));
    // burn stores fc1.weight as [in, out]: the lab's [out, in], transposed.
    let w = lab.weights(0).unwrap();
    let stored: Vec<f32> = burn
        .model()
        .fc1
        .weight
        .val()
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap();
    let (outs, ins) = (WIDTHS[1], WIDTHS[0]);
    for o in 0..outs {
        for i in 0..ins {
            assert_eq!(stored[i * outs + o], w[o * ins + i]);
        }
    }
}

#[test]
fn data_free_masks_are_the_labs() {
    let (mut lab, mut burn) = pair(2);
    let params = prunable(&lab);
    let configs = [
        PruneConfig::new(0.7).local(),
        PruneConfig::new(0.7).global(),
        PruneConfig::new(0.5).granularity(Granularity::NofM(NofM::new(2, 4).unwrap())),
        PruneConfig::new(0.5)
            .global()
            .granularity(Granularity::Groups(Grouping::Rows)),
        PruneConfig::new(0.6).global().min_density(0.35),
    ];
    let measures = [Measure::Magnitude, Measure::Random { seed: 7 }];
    let mc = MeasureConfig::default();
    for config in &configs {
        for m in measures {
            let a = flow::prune_host(&backend(), &mut lab, m, &params, &[], config, &mc).unwrap();
            let b = flow::prune_host(&backend(), &mut burn, m, &params, &[], config, &mc).unwrap();
            assert_eq!(a, b, "{m} {config:?}");
        }
        // Pruning the module in place, through its tree, gives the same masks.
        let (pruned, masks) = Pruner::default()
            .prune(burn.model(), &config.clone().skip("fc3.weight"), None)
            .unwrap();
        let lab_masks = flow::prune_host(
            &backend(),
            &mut lab,
            Measure::Magnitude,
            &params,
            &[],
            config,
            &mc,
        )
        .unwrap();
        for (k, &i) in params.iter().enumerate() {
            let name = &lab.parameters()[i].name;
            assert_eq!(masks.get(name), Some(&lab_masks[k]), "{name} {config:?}");
        }
        assert_eq!(masks.get("fc3.weight").map(Mask::count_pruned), Some(0));
        // ... and zeroes exactly the pruned weights.
        let w: Vec<f32> = pruned
            .fc1
            .weight
            .val()
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        let view = burn.stored()[0].to_view(&w).unwrap();
        for (k, v) in view.iter().enumerate() {
            assert_eq!(
                *v == 0.0,
                !lab_masks[0].get(k),
                "fc1.weight[{k}] {config:?}"
            );
        }
    }
}

/// The lab's host without its exact Hessian-vector product: core's finite
/// difference instead, as the burn host has.
struct FiniteDifference<'a>(&'a mut LabHost);

impl Host for FiniteDifference<'_> {
    fn name(&self) -> String {
        self.0.name()
    }
    fn parameters(&self) -> &[prunus_core::host::Parameter] {
        self.0.parameters()
    }
    fn supports(&self, c: prunus_core::Capability) -> bool {
        c != prunus_core::Capability::ExactHessianVectorProduct && self.0.supports(c)
    }
    fn weights(&self, i: usize) -> prunus_core::Result<Vec<f32>> {
        self.0.weights(i)
    }
    fn set_weights(&mut self, i: usize, v: &[f32]) -> prunus_core::Result<()> {
        self.0.set_weights(i, v)
    }
    fn gradient(&mut self, o: &Objective) -> prunus_core::Result<Vec<Vec<f32>>> {
        self.0.gradient(o)
    }
}

#[test]
fn gradients_and_data_dependent_scores_match_the_labs() {
    let (mut lab, mut burn) = pair(3);
    let params = prunable(&lab);
    let objective = Objective::new(Samples::first(Split::Train, 100)).temperature(5.0);
    let ga = lab.gradient(&objective).unwrap();
    let gb = burn.gradient(&objective).unwrap();
    for (i, (a, b)) in ga.iter().zip(&gb).enumerate() {
        close(a, b, 1e-4, &format!("gradient of parameter {i}"));
    }
    let ea = lab.evaluate(&objective).unwrap();
    let eb = burn.evaluate(&objective).unwrap();
    assert!((ea.loss - eb.loss).abs() < 1e-5 && ea.accuracy == eb.accuracy);
    let psa = lab.per_sample_gradients(&objective, &params).unwrap();
    let psb = burn.per_sample_gradients(&objective, &params).unwrap();
    close(&psa, &psb, 1e-4, "per-sample gradients");

    let backend = backend();
    let mc = MeasureConfig::default().samples(Samples::first(Split::Train, 100));
    for m in [Measure::Snip, Measure::Grasp, Measure::GradNorm] {
        let score = |host: &mut dyn Host| {
            let s = flow::signals(host, m, &params, &[], &mc).unwrap();
            let w: Vec<_> = s
                .weights
                .iter()
                .zip(&params)
                .map(|(w, &i)| backend.upload(w, &host.parameters()[i].shape).unwrap())
                .collect();
            flow::scores(&backend, m, &s, &w, None)
                .unwrap()
                .iter()
                .map(|t| backend.download(t).unwrap())
                .collect::<Vec<_>>()
        };
        // The burn host's Hg is core's finite difference; the lab's exact
        // one differs from that on a ReLU network (the difference crosses
        // kinks: about 60% of |Hg| in the hidden layers here), so the lab
        // is asked for the finite difference too.
        let a = score(&mut FiniteDifference(&mut lab));
        let b = score(&mut burn);
        let tol = if m.uses_hessian() { 1e-3 } else { 1e-4 };
        for (k, (a, b)) in a.iter().zip(&b).enumerate() {
            close(a, b, tol, &format!("{m} scores of tensor {k}"));
        }
    }
}

#[test]
fn training_follows_the_lab_and_masks_hold() {
    let (mut lab, mut burn) = pair(4);
    let params = prunable(&lab);
    let config = PruneConfig::new(0.6).global();
    let mc = MeasureConfig::default();
    let masks = flow::prune_host(
        &backend(),
        &mut lab,
        Measure::Magnitude,
        &params,
        &[],
        &config,
        &mc,
    )
    .unwrap();
    let mut all: Vec<Option<Mask>> = vec![None; lab.parameters().len()];
    for (k, &i) in params.iter().enumerate() {
        all[i] = Some(masks[k].clone());
    }
    lab.set_masks(&all).unwrap();
    burn.set_masks(&all).unwrap();
    let before = burn.weights(0).unwrap();
    // Twelve steps of batch 16 run past the 180 training samples' epoch.
    let la = lab.train_steps(12).unwrap();
    let lb = burn.train_steps(12).unwrap();
    assert!((la - lb).abs() < 1e-4 * la.abs().max(1.0), "{la} vs {lb}");
    let la = lab.train_epoch().unwrap();
    let lb = burn.train_epoch().unwrap();
    assert!((la - lb).abs() < 1e-3 * la.abs().max(1.0), "{la} vs {lb}");
    for (i, mask) in all.iter().enumerate() {
        let (a, b) = (lab.weights(i).unwrap(), burn.weights(i).unwrap());
        close(&a, &b, 1e-3, &format!("trained parameter {i}"));
        if let Some(m) = mask {
            for (k, &v) in b.iter().enumerate() {
                assert!(m.get(k) || v == 0.0, "pruned weight {k} of {i} is {v}");
            }
        }
    }
    let after = burn.weights(0).unwrap();
    assert!(
        before.iter().zip(&after).any(|(x, y)| x != y),
        "training changed nothing"
    );
    assert_eq!(
        burn.masks().sparsity(),
        masks.iter().map(Mask::count_pruned).sum::<u64>() as f64
            / masks.iter().map(|m| m.len() as u64).sum::<u64>() as f64
    );

    // Restoring resets the optimizer as the lab's restore does: from the
    // same snapshot both hosts train on alike (stale momentum in either
    // would part them).
    let snapshot = lab.snapshot().unwrap();
    lab.restore(&snapshot).unwrap();
    burn.restore(&snapshot).unwrap();
    lab.train_steps(3).unwrap();
    burn.train_steps(3).unwrap();
    for i in 0..lab.parameters().len() {
        let (a, b) = (lab.weights(i).unwrap(), burn.weights(i).unwrap());
        close(&a, &b, 1e-3, &format!("parameter {i} after restore"));
    }
}

#[test]
fn a_users_own_loop_keeps_the_masks() {
    let device = cpu().autodiff();
    let model = Mlp::new(&device);
    let config = PruneConfig::new(0.8).global().skip("fc3.weight");
    let (mut model, masks) = prunus_burn::prune(&model, &config).unwrap();
    let mut optimizer = sgd();
    let data = dataset();
    let x = Tensor::<2>::from_data(
        burn::tensor::TensorData::new(data.train.inputs[..32 * 16].to_vec(), [32, 16]),
        &device,
    );
    let y: Vec<i64> = data.train.labels[..32]
        .iter()
        .map(|&l| i64::from(l))
        .collect();
    let y =
        Tensor::<1, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(y, [32]), &device);
    for _ in 0..5 {
        let loss = prunus_burn::cross_entropy(model.forward(x.clone()), y.clone(), 1.0);
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(0.05, model, grads);
        model = masks.apply(model);
    }
    let (stored, mask) = masks.iter().next().unwrap();
    let w: Vec<f32> = model
        .fc1
        .weight
        .val()
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap();
    let view = stored.to_view(&w).unwrap();
    for (k, &v) in view.iter().enumerate() {
        assert!(mask.get(k) || v == 0.0, "pruned weight {k} is {v}");
    }
    assert!(
        model.fc1.weight.val().is_require_grad(),
        "masking kept the parameter trainable"
    );
    // The masks of a second, sparser round contain none of what the first pruned.
    let (_, second) = Pruner::default()
        .prune(&model, &config.clone().sparsity(0.9), Some(&masks))
        .unwrap();
    assert!(second.is_subset_of(&masks).unwrap());
    assert!(second.sparsity() > masks.sparsity());
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let device = cpu().autodiff();
    let data = dataset();
    let model = Mlp::new(&device);
    // Sparsity outside [0, 1].
    for s in [-0.1, 1.5, f64::NAN] {
        let e = prunus_burn::prune(&model, &PruneConfig::new(s)).unwrap_err();
        assert!(
            matches!(
                e,
                prunus_burn::Error::Core(prunus_core::Error::SparsityOutOfRange { .. })
            ),
            "{e}"
        );
    }
    // An unknown tensor name.
    let e = Pruner::default()
        .tensors(["fc9.weight"])
        .prune(&model, &PruneConfig::new(0.5), None);
    assert!(e.unwrap_err().to_string().contains("fc9.weight"));
    // NaN weights: an error, and the model is as it was.
    let (_, mut host) = pair(5);
    let mut w = host.weights(0).unwrap();
    w[3] = f32::NAN;
    host.set_weights(0, &w).unwrap();
    let e = prunus_burn::prune(host.model(), &PruneConfig::new(0.5)).unwrap_err();
    assert!(e.to_string().to_lowercase().contains("nan"), "{e}");
    assert!(host.weights(0).unwrap()[3].is_nan());
    let params = prunable(&host);
    let e = flow::prune_host(
        &backend(),
        &mut host,
        Measure::Snip,
        &params,
        &[],
        &PruneConfig::new(0.5),
        &MeasureConfig::default(),
    );
    assert!(e.is_err());
    // Samples of the wrong size for the model: caught when the host is made.
    let narrow = Splits::new(
        &[10],
        4,
        SplitData {
            inputs: vec![0.5; 30],
            labels: vec![0, 1, 2],
        },
        SplitData::default(),
        SplitData::default(),
    )
    .unwrap();
    let e = BurnHost::new(
        Mlp::new(&device),
        forward,
        narrow,
        sgd(),
        HostConfig::default(),
    );
    assert!(e.is_err());
    // A rank that does not fit the samples, a model off autodiff, bad settings.
    let wrong_rank = BurnHost::new(
        Mlp::new(&device),
        |m: &Mlp, x: Tensor<3>| m.forward(x.flatten(1, 2)),
        splits(&data),
        sgd(),
        HostConfig::default(),
    );
    assert!(wrong_rank.is_err());
    let plain = BurnHost::new(
        Mlp::new(&cpu()),
        forward,
        splits(&data),
        sgd(),
        HostConfig::default(),
    );
    assert!(plain.is_err());
    let zero_batch = BurnHost::new(
        Mlp::new(&device),
        forward,
        splits(&data),
        sgd(),
        HostConfig::default().batch(0),
    );
    assert!(zero_batch.is_err());
    for (p, c, k) in [
        ("fc1.weight", "fc3.weight", 1),
        ("fc1.weight", "fc2.weight", 2),
        ("fc1.bias", "fc2.weight", 1),
    ] {
        let bad = BurnHost::new(
            Mlp::new(&device),
            forward,
            splits(&data),
            sgd(),
            HostConfig::default().couple(p, c, k),
        );
        assert!(bad.is_err(), "{p} -> {c}");
    }
    // Masks, weights and samples that do not fit.
    let (_, mut host) = pair(6);
    assert!(host.set_weights(0, &[1.0; 3]).is_err());
    assert!(host.set_weights(99, &[1.0; 3]).is_err());
    assert!(host.set_masks(&[None]).is_err());
    let mut wrong = vec![None; host.parameters().len()];
    wrong[0] = Some(Mask::keep_all(prunus_core::Shape::matrix(3, 3).unwrap()));
    assert!(host.set_masks(&wrong).is_err());
    // A loss that is not one value, or is off the autodiff tape.
    let (_, h) = pair(7);
    let mut per_sample = h.with_loss(|logits, labels, t| {
        let log_p = burn::tensor::activation::log_softmax(logits.div_scalar(t), 1);
        log_p
            .gather(1, labels.unsqueeze_dim::<2>(1))
            .neg()
            .flatten::<1>(0, 1)
    });
    assert!(per_sample.train_steps(1).is_err());
    assert!(
        per_sample
            .gradient(&Objective::new(Samples::all(Split::Train)))
            .is_err()
    );
    let (_, h) = pair(7);
    let mut detached =
        h.with_loss(|logits, labels, t| prunus_burn::cross_entropy(logits, labels, t).detach());
    assert!(detached.train_epoch().is_err());
    let past = Samples {
        split: Split::Train,
        first: 10_000,
        count: None,
    };
    assert!(host.gradient(&Objective::new(past)).is_err());
    assert!(host.evaluate(&Objective::new(past)).is_err());
}

#[derive(Module, Debug)]
struct TapMlp {
    fc1: prunus_burn::TapLinear,
    fc2: prunus_burn::TapLinear,
    fc3: prunus_burn::TapLinear,
}

#[test]
fn tapped_layers_give_the_labs_activations_and_unit_scales() {
    let data = dataset();
    let mut lab = LabHost::new(
        Network::mlp(&WIDTHS, true, 8).unwrap(),
        Arc::clone(&data),
        Sgd::default(),
        8,
    )
    .unwrap();
    let device = cpu().autodiff();
    let tapped = |i: usize| {
        prunus_burn::TapLinear::new(LinearConfig::new(WIDTHS[i], WIDTHS[i + 1]).init(&device))
    };
    let model = TapMlp {
        fc1: tapped(0),
        fc2: tapped(1),
        fc3: tapped(2),
    };
    let taps = [
        ("fc1.weight", model.fc1.tap.clone()),
        ("fc2.weight", model.fc2.tap.clone()),
        ("fc3.weight", model.fc3.tap.clone()),
    ];
    let forward = |m: &TapMlp, x: Tensor<2>| {
        let relu = Relu::new();
        let x = relu.forward(m.fc1.forward(x));
        let x = relu.forward(m.fc2.forward(x));
        m.fc3.forward(x)
    };
    let config = HostConfig::default()
        .couple("fc1.weight", "fc2.weight", 1)
        .couple("fc2.weight", "fc3.weight", 1);
    let mut burn = BurnHost::new(model, forward, splits(&data), sgd(), config)
        .unwrap()
        .with_taps(taps)
        .unwrap();
    for i in 0..lab.parameters().len() {
        burn.set_weights(i, &lab.weights(i).unwrap()).unwrap();
    }
    let samples = Samples::first(Split::Validation, 50);
    let a = lab
        .activations(&samples, prunus_core::Tap::PreActivation)
        .unwrap();
    let b = burn
        .activations(&samples, prunus_core::Tap::PreActivation)
        .unwrap();
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        assert_eq!((a.parameter, a.width), (b.parameter, b.width));
        close(&a.values, &b.values, 1e-5, "pre-activations");
    }
    use prunus_core::methods::imp::consistency::information_flow;
    let fa = information_flow(&mut lab, &samples).unwrap();
    let fb = information_flow(&mut burn, &samples).unwrap();
    let (fa, fb): (Vec<f32>, Vec<f32>) = fa
        .iter()
        .zip(&fb)
        .map(|(x, y)| (*x as f32, *y as f32))
        .unzip();
    close(&fa, &fb, 1e-4, "information flow");

    let scales: Vec<f32> = (0..WIDTHS[2]).map(|u| [0.0, 1.5, 1.0][u % 3]).collect();
    lab.set_unit_scales(2, Some(&scales)).unwrap();
    burn.set_unit_scales(2, Some(&scales)).unwrap();
    let objective = Objective::new(Samples::all(Split::Validation));
    let (ea, eb) = (
        lab.evaluate(&objective).unwrap(),
        burn.evaluate(&objective).unwrap(),
    );
    assert!(
        (ea.loss - eb.loss).abs() < 1e-5 && ea.accuracy == eb.accuracy,
        "{ea:?} {eb:?}"
    );
    burn.set_unit_scales(2, None).unwrap();
    lab.set_unit_scales(2, None).unwrap();
    let (ea, eb) = (
        lab.evaluate(&objective).unwrap(),
        burn.evaluate(&objective).unwrap(),
    );
    assert!((ea.loss - eb.loss).abs() < 1e-5, "{ea:?} {eb:?}");

    assert!(
        burn.activations(&samples, prunus_core::Tap::Output)
            .is_err()
    );
    assert!(burn.set_unit_scales(2, Some(&[1.0; 3])).is_err());
    assert!(burn.set_unit_scales(3, Some(&[1.0; 12])).is_err());
    assert!(burn.set_unit_scales(0, Some(&[f32::NAN; 24])).is_err());
    // Without taps, a clear missing capability.
    let (_, mut plain) = pair(9);
    assert!(!plain.supports(prunus_core::Capability::Activations));
    let e = plain
        .activations(&samples, prunus_core::Tap::PreActivation)
        .unwrap_err();
    assert!(
        matches!(e, prunus_core::Error::MissingCapability { .. }),
        "{e}"
    );
}
