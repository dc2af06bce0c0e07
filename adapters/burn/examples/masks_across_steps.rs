//! A burn training loop whose masks are property-tested across steps with
//! `prunus-testing`: for random schedules (sparsities rising round by
//! round), each round prunes the burn model by global magnitude through
//! `prunus_core::prune`, hands the masks to the model and trains it for a
//! few optimiser steps; after every step the invariants must hold:
//!
//! - each round prunes exactly `round(s · n)` of the prunable weights;
//! - masks only shrink from round to round;
//! - every pruned weight is zero after every optimiser step (momentum and
//!   weight decay must not move it). burn masks by multiplying, so a
//!   negative pruned weight reads `-0.0`: the Host contract's "zero" allows
//!   it, where `prunus_core::apply` writes `+0.0`;
//! - the model's gradient agrees with finite differences of its loss.
//!
//! proptest draws the schedules and shrinks a failing one to a small case;
//! a failure prints the invariant, the tensor and the element.
//!
//! ```sh
//! cargo run --release -p prunus-burn --example masks_across_steps
//! ```

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::SgdConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::tensor::{Device, Tensor};
use prunus_adapters::framework::{SplitData, Splits};
use prunus_burn::{BurnHost, HostConfig};
use prunus_core::{
    Backend, HasShape, Host, Layer, Mask, Objective, PruneConfig, ReferenceBackend, Samples, Split,
};
use prunus_testing::dense::Rng;
use prunus_testing::host::{
    GradientCheck, gradient_matches_finite_differences, masks_kept_through_training,
};
use prunus_testing::invariants::{exact_count, masks_only_shrink};
use prunus_testing::proptest::prelude::*;
use prunus_testing::proptest::test_runner::{Config, TestRunner};

/// burn's ndarray CPU backend (deprecated in burn 0.22 in favour of `flex`,
/// which this crate does not build).
#[allow(deprecated)]
fn cpu() -> Device {
    Device::ndarray()
}

const WIDTHS: [usize; 4] = [8, 16, 12, 3];

#[derive(Module, Debug)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl Mlp {
    fn new(device: &Device) -> Self {
        let linear = |i: usize| LinearConfig::new(WIDTHS[i], WIDTHS[i + 1]).init(device);
        Mlp {
            fc1: linear(0),
            fc2: linear(1),
            fc3: linear(2),
        }
    }
}

fn forward(m: &Mlp, x: Tensor<2>) -> Tensor<2> {
    let relu = Relu::new();
    let x = relu.forward(m.fc1.forward(x));
    let x = relu.forward(m.fc2.forward(x));
    m.fc3.forward(x)
}

type Model = BurnHost<Mlp, fn(&Mlp, Tensor<2>) -> Tensor<2>, 2>;

/// A small classification task: labels from the sign pattern of two input
/// coordinates, so that training has something to learn.
fn splits(seed: u64) -> Splits {
    let mut rng = Rng(seed);
    let mut split = |n: usize| {
        let inputs: Vec<f32> = (0..n * WIDTHS[0]).map(|_| rng.signed() as f32).collect();
        let labels = (0..n)
            .map(|i| {
                let x = &inputs[i * WIDTHS[0]..];
                u32::from(x[0] > 0.0) + u32::from(x[1] > 0.3)
            })
            .collect();
        SplitData { inputs, labels }
    };
    let (train, validation, test) = (split(96), split(32), split(32));
    Splits::new(&[WIDTHS[0]], WIDTHS[3], train, validation, test).expect("splits")
}

fn model(seed: u64) -> Model {
    let sgd = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
        .with_weight_decay(Some(WeightDecayConfig::new(5e-4)))
        .init();
    let config = HostConfig::default()
        .learning_rate(0.05)
        .batch(16)
        .seed(seed);
    let f: fn(&Mlp, Tensor<2>) -> Tensor<2> = forward;
    BurnHost::new(Mlp::new(&cpu().autodiff()), f, splits(seed), sgd, config).expect("burn host")
}

/// Global magnitude masks of the model's prunable weights at `sparsity`,
/// nested in `earlier`; `None` for the parameters left whole.
fn prune_model(
    host: &Model,
    sparsity: f64,
    earlier: &[Option<Mask>],
) -> Result<Vec<Option<Mask>>, prunus_core::Error> {
    let params = host.parameters();
    let prunable: Vec<usize> = (0..params.len()).filter(|&i| params[i].prunable).collect();
    let tensors = prunable
        .iter()
        .map(|&i| ReferenceBackend.upload(&host.weights(i)?, &params[i].shape))
        .collect::<Result<Vec<_>, _>>()?;
    let layers: Vec<Layer<'_, ReferenceBackend>> = prunable
        .iter()
        .zip(&tensors)
        .map(|(&i, t)| Layer::new(&params[i].name, t).with_mask(earlier[i].as_ref()))
        .collect();
    let masks = prunus_core::prune(&ReferenceBackend, &layers, &PruneConfig::new(sparsity))?;
    let mut out = vec![None; params.len()];
    for (&i, m) in prunable.iter().zip(masks) {
        out[i] = Some(m);
    }
    Ok(out)
}

/// One case: a seed and sparsities that rise round by round.
fn schedule() -> impl Strategy<Value = (u64, Vec<f64>)> {
    let rounds = prop::collection::vec(0.0..=0.3f64, 1..=4).prop_map(|steps| {
        let mut s = 0.0;
        steps
            .into_iter()
            .map(|d| {
                s = (s + d).min(0.95);
                s
            })
            .collect()
    });
    (any::<u64>(), rounds)
}

fn run(seed: u64, sparsities: &[f64]) -> Result<(), TestCaseError> {
    let mut host = model(seed);
    let objective = Objective::new(Samples::all(Split::Train));
    let fd = GradientCheck::default().step(1e-3).per_parameter(Some(4));
    let fail = |e: prunus_core::Error| TestCaseError::fail(e.to_string());
    let mut earlier: Vec<Option<Mask>> = vec![None; host.parameters().len()];
    for &s in sparsities {
        let masks = prune_model(&host, s, &earlier).map_err(fail)?;
        let chosen: Vec<Mask> = masks.iter().flatten().cloned().collect();
        exact_count("prunable weights", &chosen, s)?;
        let before: Vec<Mask> = earlier
            .iter()
            .zip(&masks)
            .filter_map(|(e, m)| {
                m.as_ref().map(|m| {
                    e.clone()
                        .unwrap_or_else(|| Mask::keep_all(m.shape().clone()))
                })
            })
            .collect();
        masks_only_shrink(&before, &chosen)?;
        // Three optimiser steps; every pruned weight stays zero after each.
        masks_kept_through_training(&mut host, &masks, 3)?;
        earlier = masks;
    }
    // Backprop through the pruned, trained model still matches the loss.
    gradient_matches_finite_differences(&mut host, &objective, &fd)?;
    Ok(())
}

fn main() {
    let mut runner = TestRunner::new(Config {
        cases: 8,
        // An example has no source file to keep regressions beside.
        failure_persistence: None,
        ..Config::default()
    });
    match runner.run(&schedule(), |(seed, sparsities)| run(seed, &sparsities)) {
        Ok(()) => println!(
            "8 schedules: counts exact, masks nested, pruned weights zero after every step"
        ),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
