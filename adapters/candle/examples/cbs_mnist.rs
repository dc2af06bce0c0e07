//! MLPNet trained in candle, then the Combinatorial Brain Surgeon paper's
//! one-shot comparison (MP, WF-S, CBS-S, WF, CBS) through the candle host,
//! beside the lab's run of the same protocol.
//!
//! ```sh
//! cargo run --release -p prunus-candle --example cbs_mnist -- \
//!     [--data ../shared/data/mnist] [--seeds 1] [--sparsities 0.9,0.95] \
//!     [--epochs 20] [--candle-init] [--no-lab]
//! ```
//!
//! MLPNet (784-40-20-10, ReLU, no biases) is a candle model built from a
//! `VarMap` with `prunus_candle::host::Linear` layers and trained with
//! `prunus_candle::host::Sgd` (0.05, momentum 0.9, weight decay 5e-4,
//! batches of 64, learning rate / 10 for the last third of the epochs);
//! `prunus_lab::cbs::one_shot` then builds the empirical Fisher from the
//! candle host's per-sample gradients and prunes every weight globally
//! with each method. By default the network starts from the lab's
//! initial weights for the seed, so the two tables can be compared row by
//! row; `--candle-init` starts from candle's own (unseeded) Kaiming init
//! instead. Without MNIST in `--data` it runs on the lab's synthetic task.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Activation, Optimizer, VarBuilder, VarMap};
use prunus_candle::host::{CandleHost, HostSettings, Linear, Probes, Sgd, SgdConfig};
use prunus_core::host::{Host, Objective, Samples, Split};
use prunus_cpu::{CpuBackend, Par};
use prunus_lab::ProtocolResult;
use prunus_lab::cbs::{CbsConfig, CbsResult, RunStart, Timing, one_shot, run_cbs};
use prunus_lab::data::Dataset;
use prunus_lab::network::Network;

const HIDDEN: [usize; 2] = [40, 20];

/// MLPNet in candle.
struct MlpNet {
    layers: Vec<Linear>,
}

impl Module for MlpNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.layers
            .iter()
            .try_fold(x.flatten_from(1)?, |x, l| l.forward(&x))
    }
}

struct Args {
    data: PathBuf,
    seeds: u64,
    sparsities: Vec<f64>,
    epochs: usize,
    candle_init: bool,
    lab: bool,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        data: PathBuf::from("../shared/data/mnist"),
        seeds: 1,
        sparsities: vec![0.9, 0.95],
        epochs: 20,
        candle_init: false,
        lab: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = value()?.into(),
            "--seeds" => a.seeds = value()?.parse()?,
            "--epochs" => a.epochs = value()?.parse()?,
            "--sparsities" => {
                a.sparsities = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--candle-init" => a.candle_init = true,
            "--no-lab" => a.lab = false,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = args()?;
    let data = Arc::new(match Dataset::mnist(&args.data) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}: running on the synthetic teacher-student task instead");
            Dataset::teacher_student(&Default::default())?
        }
    });
    let mut config = CbsConfig::default();
    config.seeds = (0..args.seeds).collect();
    config.sparsities = args.sparsities.clone();
    config.epochs = args.epochs;
    config.validate()?;
    let dense = CpuBackend::new(Par::Rayon(0))?;
    let splits = Arc::new(data.splits()?);
    let widths = [data.input_len(), HIDDEN[0], HIDDEN[1], data.classes];
    let fisher_samples = data.train.len();
    let mut progress = |line: &str| eprintln!("{line}");

    let start = Instant::now();
    let mut runs = Vec::new();
    for &seed in &config.seeds {
        let t = Instant::now();
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let probes = Probes::new();
        let mut layers = Vec::new();
        for i in 1..widths.len() {
            let layer = Linear::new(
                vb.pp(format!("fc{i}")),
                widths[i - 1],
                widths[i],
                false,
                &probes,
            )?;
            layers.push(if i + 1 < widths.len() {
                layer.with_activation(Activation::Relu)
            } else {
                layer
            });
        }
        if !args.candle_init {
            let lab = Network::mlp(&widths, false, seed)?;
            let mut vm = varmap.clone();
            for (p, values) in lab.parameters().iter().zip(lab.values()) {
                vm.set_one(
                    &p.name,
                    Tensor::from_slice(values, p.shape.dims(), &Device::Cpu)?,
                )?;
            }
        }
        let mut host: CandleHost<MlpNet, Sgd> = CandleHost::new(
            MlpNet { layers },
            &varmap,
            Arc::clone(&splits),
            SgdConfig::default(),
            HostSettings::default()
                .name("candle MLPNet 784-40-20-10")
                .seed(seed),
        )?
        .with_probes(probes)?;
        let late = config.epochs - config.epochs / 3;
        for e in 0..config.epochs {
            if e == late {
                let lr = host.optimizer_mut().learning_rate() / 10.0;
                host.optimizer_mut().set_learning_rate(lr);
            }
            host.train_epoch()?;
        }
        let timing = Timing {
            train: t.elapsed().as_secs_f64(),
            ..Timing::default()
        };
        let dense_acc = host
            .evaluate(&Objective::new(Samples::all(Split::Test)))?
            .accuracy
            * 100.0;
        eprintln!(
            "candle seed {seed}: trained {} epochs in {:.1} s, dense test accuracy {dense_acc:.2}%",
            config.epochs, timing.train
        );
        let start = RunStart {
            seed,
            dense_acc,
            timing,
        };
        runs.push(one_shot(
            &dense,
            &mut host,
            &config,
            fisher_samples,
            start,
            &mut progress,
        )?);
    }
    let candle = CbsResult {
        config: config.clone(),
        dataset: data.name.clone(),
        network: "candle MLPNet 784-40-20-10".into(),
        fisher_samples,
        runs,
        wall_s: start.elapsed().as_secs_f64(),
    };
    println!(
        "## through the candle host ({}, {:.1} s)\n\n{}",
        if args.candle_init {
            "candle's init"
        } else {
            "the lab's initial weights"
        },
        candle.wall_s,
        candle.table()
    );
    if args.lab {
        let lab = run_cbs(&dense, Arc::clone(&data), &config, &mut progress)?;
        println!(
            "## the lab's host, same protocol ({:.1} s)\n\n{}",
            lab.wall_s,
            lab.table()
        );
    }
    Ok(())
}
