//! What the burn host tests share: the MLP, its data, its optimizer, a host
//! made of them, and the comparisons.

// Each test file uses most of this, not all of it.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{ModuleOptimizer, SgdConfig, decay::WeightDecayConfig};
use burn::tensor::{Device, Tensor};
use prunus_adapters::framework::{SplitData, Splits};
use prunus_burn::{BurnHost, HostConfig};
use prunus_core::{Host, Split};
use prunus_cpu::{CpuBackend, Par};
use prunus_lab::data::{Dataset, Inputs, TeacherStudent};

/// burn's ndarray CPU backend (deprecated in burn 0.22 in favour of `flex`,
/// which this crate does not build): the reference.
#[allow(deprecated)]
pub(crate) fn cpu() -> Device {
    Device::ndarray()
}

/// The MLP's layer widths, input first.
pub(crate) const WIDTHS: [usize; 4] = [16, 24, 12, 4];

/// Three linear layers with ReLUs between them.
#[derive(Module, Debug)]
pub(crate) struct Mlp {
    pub(crate) fc1: Linear,
    pub(crate) fc2: Linear,
    pub(crate) fc3: Linear,
}

impl Mlp {
    pub(crate) fn new(device: &Device) -> Self {
        let linear = |i: usize| LinearConfig::new(WIDTHS[i], WIDTHS[i + 1]).init(device);
        Mlp {
            fc1: linear(0),
            fc2: linear(1),
            fc3: linear(2),
        }
    }

    pub(crate) fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let relu = Relu::new();
        let x = relu.forward(self.fc1.forward(x));
        let x = relu.forward(self.fc2.forward(x));
        self.fc3.forward(x)
    }
}

pub(crate) fn forward(m: &Mlp, x: Tensor<2>) -> Tensor<2> {
    m.forward(x)
}

pub(crate) type Burn = BurnHost<Mlp, fn(&Mlp, Tensor<2>) -> Tensor<2>, 2>;

/// The lab's teacher-student data for the MLP (built once per process).
pub(crate) fn dataset() -> Arc<Dataset> {
    static DATA: OnceLock<Arc<Dataset>> = OnceLock::new();
    DATA.get_or_init(|| {
        let spec = TeacherStudent::default()
            .input([WIDTHS[0], 1, 1])
            .hidden(8)
            .classes(WIDTHS[3])
            .samples(300)
            .inputs(Inputs::Gaussian);
        Arc::new(Dataset::teacher_student(&spec).unwrap())
    })
    .clone()
}

/// `data`'s splits, as the hosts take them.
pub(crate) fn splits(data: &Dataset) -> Splits {
    let split = |s: Split| {
        let d = data.split(s);
        SplitData {
            inputs: d.inputs.clone(),
            labels: d.labels.iter().map(|&l| u32::from(l)).collect(),
        }
    };
    Splits::new(
        &[data.input_len()],
        data.classes,
        split(Split::Train),
        split(Split::Validation),
        split(Split::Test),
    )
    .unwrap()
}

/// SGD as the lab's: `v = μ v + g + λ θ; θ -= η v` (burn's momentum with
/// no dampening).
pub(crate) fn sgd() -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .with_weight_decay(Some(WeightDecayConfig::new(5e-4)))
        .init()
}

/// A burn host of a fresh MLP on `device` (made autodiff here), with the
/// lab's training settings for `seed` and the MLP's couplings; the caller
/// sets its weights.
pub(crate) fn burn_host(device: &Device, seed: u64) -> Burn {
    let device = device.clone().autodiff();
    let config = HostConfig::default()
        .learning_rate(0.05)
        .batch(16)
        .seed(seed)
        .couple("fc1.weight", "fc2.weight", 1)
        .couple("fc2.weight", "fc3.weight", 1);
    BurnHost::new(
        Mlp::new(&device),
        forward as fn(&Mlp, Tensor<2>) -> Tensor<2>,
        splits(&dataset()),
        sgd(),
        config,
    )
    .unwrap()
}

pub(crate) fn backend() -> CpuBackend<'static> {
    CpuBackend::new(Par::Seq).unwrap()
}

pub(crate) fn prunable(host: &dyn Host) -> Vec<usize> {
    (0..host.parameters().len())
        .filter(|&i| host.parameters()[i].prunable)
        .collect()
}

/// `max |a - b| / max |a|`: the worst difference relative to the tensor's
/// scale.
pub(crate) fn relative(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths");
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Asserts `relative(a, b) <= tol`; prints the measured figure (shown with
/// `--nocapture`).
pub(crate) fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    let r = relative(a, b);
    eprintln!("{what}: relative difference {r:.2e} (tolerance {tol:.0e})");
    assert!(
        r <= tol,
        "{what}: max difference {r:e} of the scale > {tol:e}"
    );
}
