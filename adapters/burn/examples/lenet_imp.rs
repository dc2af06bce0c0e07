//! LeNet-300-100 trained in burn, then iterative magnitude pruning with
//! rewinding to 90% sparsity, each round's retraining stopped by the
//! gradient-flow rule (InCoP-GF), through `prunus_core::methods::imp::run_imp`
//! on a [`BurnHost`]. With `--lab` the lab's host runs the same protocol
//! from the same initial weights, for comparison: it is the `incop-gf` run
//! of `prunus lab infcop --seeds 1 --target 0.9 --epsilon-gf 4.81e-2`.
//!
//! ```sh
//! cargo run --release -p prunus-burn --example lenet_imp -- --lab
//! ```
//!
//! Options: `--data DIR` (MNIST-format IDX files; default
//! `../shared/data/mnist`, the synthetic teacher-student task when the
//! folder is absent), `--epochs E` (dense epochs and the most per round,
//! default 15), `--target S` (0.9), `--rate R` (0.2), `--epsilon E`
//! (4.81e-2, the lab's calibrated ε of the gradient flow on MNIST),
//! `--seed N` (0), `--lab`, `--save FILE` (the pruned model, burnpack).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::SgdConfig;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::tensor::{Device, Tensor};
use prunus_adapters::framework::{SplitData, Splits};
use prunus_burn::{BurnHost, HostConfig};
use prunus_core::host::Samples;
use prunus_core::methods::imp::consistency::Flow;
use prunus_core::methods::imp::{
    ImpConfig, ImpRun, Observer, Rewind, Round, Step, StopRule, run_imp,
};
use prunus_core::{Host, Mask, PruneConfig, Split};
use prunus_cpu::{CpuBackend, Par};
use prunus_lab::data::{Dataset, TeacherStudent};
use prunus_lab::host::{LabHost, Sgd};
use prunus_lab::network::Network;

/// burn's ndarray CPU backend (deprecated in burn 0.22 in favour of `flex`,
/// which this crate does not build).
#[allow(deprecated)]
fn cpu() -> Device {
    Device::ndarray()
}

/// LeNet-300-100: 784-300-100-10, ReLU, biases.
#[derive(Module, Debug)]
struct LeNet {
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl LeNet {
    fn new(widths: &[usize; 4], device: &Device) -> Self {
        let linear = |i: usize| LinearConfig::new(widths[i], widths[i + 1]).init(device);
        LeNet {
            fc1: linear(0),
            fc2: linear(1),
            fc3: linear(2),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let relu = Relu::new();
        let x = relu.forward(self.fc1.forward(x));
        let x = relu.forward(self.fc2.forward(x));
        self.fc3.forward(x)
    }
}

struct Args {
    data: PathBuf,
    epochs: usize,
    target: f64,
    rate: f64,
    epsilon: f64,
    seed: u64,
    lab: bool,
    save: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        data: PathBuf::from("../shared/data/mnist"),
        epochs: 15,
        target: 0.9,
        rate: 0.2,
        epsilon: 4.81e-2,
        seed: 0,
        lab: false,
        save: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--data" => a.data = PathBuf::from(value()?),
            "--epochs" => a.epochs = number(value()?)? as usize,
            "--target" => a.target = number(value()?)?,
            "--rate" => a.rate = number(value()?)?,
            "--epsilon" => a.epsilon = number(value()?)?,
            "--seed" => a.seed = number(value()?)? as u64,
            "--lab" => a.lab = true,
            "--save" => a.save = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

/// The lab's `incop-gf` settings (`prunus_lab::infcop`): global magnitude
/// at a fixed rate, rewinding to the weights after epoch 1, the gradient
/// flow on all validation samples against `ε`.
fn protocol(a: &Args) -> ImpConfig {
    ImpConfig::classic(a.target)
        .step(Step::FixedRate(a.rate))
        .rewind(Rewind::WarmUp, 1)
        .epochs(a.epochs, a.epochs)
        .max_rounds(100)
        .flow_samples(Samples::all(Split::Validation))
        .prune(PruneConfig::new(0.0).global())
        .stop(StopRule::Consistent {
            flow: Flow::Gradient,
            epsilon: a.epsilon,
        })
}

/// Prints rounds as they end, times them, and checks that every round's
/// masks are a subset of the last round's.
struct Progress {
    label: &'static str,
    start: Instant,
    last: Option<Vec<Option<Mask>>>,
}

impl Observer for Progress {
    fn now(&mut self) -> Option<f64> {
        Some(self.start.elapsed().as_secs_f64())
    }

    fn on_masks(&mut self, round: usize, masks: &[Option<Mask>]) {
        if let Some(last) = &self.last {
            for (m, l) in masks.iter().zip(last) {
                if let (Some(m), Some(l)) = (m, l) {
                    assert!(
                        m.is_subset_of(l).expect("same shapes"),
                        "round {round} revived a pruned weight"
                    );
                }
            }
        }
        self.last = Some(masks.to_vec());
    }

    fn on_round(&mut self, r: &Round) {
        eprintln!(
            "{} round {:>2}: sparsity {:.4}, {:>2} epochs ({:?}), validation {:.2}%, {:.1} s",
            self.label,
            r.index,
            r.sparsity,
            r.epochs,
            r.ending,
            r.validation.accuracy * 100.0,
            self.start.elapsed().as_secs_f64()
        );
    }
}

fn table(label: &str, run: &ImpRun, wall_s: f64) -> String {
    let pct = |r: &Round| r.test.map_or(f64::NAN, |e| e.accuracy * 100.0);
    let mut out = format!(
        "\n{label}\n\n| round | sparsity % | epochs | stop | val acc % | test acc % | s |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for r in &run.rounds {
        out += &format!(
            "| {} | {:.2} | {} | {:?} | {:.2} | {:.2} | {:.1} |\n",
            r.index,
            r.sparsity * 100.0,
            r.epochs,
            r.ending,
            r.validation.accuracy * 100.0,
            pct(r),
            r.wall_s.unwrap_or(f64::NAN)
        );
    }
    out += &format!(
        "\nfinal: sparsity {:.2}%, {} retraining epochs, test accuracy {:.2}% (dense {:.2}%), {:.1} s\n",
        run.last().sparsity * 100.0,
        run.retraining_epochs(),
        pct(run.last()),
        pct(&run.rounds[0]),
        wall_s
    );
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args()?;
    let data = if a.data.exists() {
        Dataset::mnist(&a.data)?
    } else {
        eprintln!(
            "{} not found: the synthetic teacher-student task instead",
            a.data.display()
        );
        Dataset::teacher_student(&TeacherStudent::default())?
    };
    let data = Arc::new(data);
    let widths = [data.input_len(), 300, 100, data.classes];
    let config = protocol(&a);
    config.validate()?;
    let backend = CpuBackend::new(Par::Seq)?;
    eprintln!(
        "LeNet-300-100 ({}) on {}: {} train / {} validation / {} test samples; IMP to {:.0}% \
         at {:.0}% global per round, rewind to epoch 1, {} dense epochs, at most {} per round, \
         gradient-flow stop at ε = {:e}; SGD 0.05, momentum 0.9, weight decay 5e-4, batch 64; \
         seed {}",
        widths.map(|w| w.to_string()).join("-"),
        data.name,
        data.train.len(),
        data.validation.len(),
        data.test.len(),
        a.target * 100.0,
        a.rate * 100.0,
        a.epochs,
        a.epochs,
        a.epsilon,
        a.seed
    );

    // The lab's initial weights (Kaiming-normal, zero biases) for both runs.
    let network = Network::mlp(&widths, true, a.seed)?;
    let device = cpu().autodiff();
    let split = |s: Split| {
        let d = data.split(s);
        SplitData {
            inputs: d.inputs.clone(),
            labels: d.labels.iter().map(|&l| u32::from(l)).collect(),
        }
    };
    let splits = Splits::new(
        &[data.input_len()],
        data.classes,
        split(Split::Train),
        split(Split::Validation),
        split(Split::Test),
    )?;
    // PyTorch's SGD, as the lab's: no dampening.
    let optimizer = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new().with_momentum(0.9).with_dampening(0.0),
        ))
        .with_weight_decay(Some(WeightDecayConfig::new(5e-4)))
        .init();
    let mut host = BurnHost::new(
        LeNet::new(&widths, &device),
        |m: &LeNet, x| m.forward(x),
        splits,
        optimizer,
        HostConfig::default()
            .learning_rate(0.05)
            .batch(64)
            .seed(a.seed)
            .name("burn LeNet-300-100"),
    )?;
    for i in 0..host.parameters().len() {
        host.set_weights(i, network.param(i)?)?;
    }

    let start = Instant::now();
    let mut progress = Progress {
        label: "burn",
        start,
        last: None,
    };
    let run = run_imp(&backend, &mut host, &config, &mut progress)?;
    let burn_s = start.elapsed().as_secs_f64();
    assert!(
        run.last().sparsity >= a.target - 1e-9,
        "reached {} only",
        run.last().sparsity
    );
    // The model trained with the masks on: every pruned weight is zero.
    for (stored, mask) in host.masks().iter() {
        let i = host
            .parameters()
            .iter()
            .position(|p| p.name == stored.name)
            .expect("a host parameter");
        let w = host.weights(i)?;
        assert!(mask.kept().count() as u64 == mask.count_kept());
        assert!(
            (0..w.len()).all(|k| mask.get(k) || w[k] == 0.0),
            "{} has a pruned weight off zero",
            stored.name
        );
    }
    print!("{}", table("burn (prunus-burn BurnHost)", &run, burn_s));

    if let Some(path) = &a.save {
        host.into_model().valid().save_file(path)?;
        println!("saved the pruned model to {}", path.display());
    }

    if a.lab {
        let sgd = Sgd::default();
        let mut lab = LabHost::new(network, Arc::clone(&data), sgd, a.seed)?;
        let start = Instant::now();
        let mut progress = Progress {
            label: "lab ",
            start,
            last: None,
        };
        let lab_run = run_imp(&backend, &mut lab, &config, &mut progress)?;
        let lab_s = start.elapsed().as_secs_f64();
        print!("{}", table("lab (prunus-lab LabHost)", &lab_run, lab_s));
        let test = |r: &ImpRun| r.last().test.map_or(f64::NAN, |e| e.accuracy * 100.0);
        println!(
            "\ntest accuracy: burn {:.2}%, lab {:.2}% (difference {:+.2} points)",
            test(&run),
            test(&lab_run),
            test(&run) - test(&lab_run)
        );
    }
    Ok(())
}
