//! prunus-burn's work on burn's wgpu device beside the same work on
//! ndarray, timed: an MLP (LeNet-300-100 by default) on the synthetic
//! teacher-student task, pruned in place by global magnitude, then driven
//! through a [`BurnHost`]: a gradient over the training samples, SNIP
//! through the host, a training epoch with the masks held, an evaluation.
//! Each stage runs once to warm up (burn compiles its GPU kernels on first
//! use) and is then timed `--repeat` times; the report keeps every time.
//!
//! It checks as it goes, and exits with an error when a check fails: the
//! in-place masks are the same on both devices (magnitude scores are the
//! weights, read back exactly), and every pruned weight is zero after the
//! epoch on the GPU.
//!
//! ```sh
//! cargo run --release -p prunus-burn --features wgpu --example wgpu_bench -- --json burn-wgpu.json
//! ```
//!
//! Options: `--small` (a 64-128-64-10 MLP on 1,000 samples, one repeat:
//! the CI size, for software Vulkan), `--repeat N` (default 3), `--json
//! FILE` (the report, in the lab's format: one row per device and stage,
//! metric `<stage>_s`), `--cpu-only` (skip wgpu, e.g. to time ndarray
//! alone). Without a wgpu adapter it says so and exits with status 3 (a
//! skip for `bench/device.sh`), unless `PRUNUS_REQUIRE_GPU=1`, when that
//! is a failure (status 1).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::SgdConfig;
use burn::optim::momentum::MomentumConfig;
use burn::tensor::{Device, Tensor};
use prunus_adapters::framework::{SplitData, Splits};
use prunus_burn::{BurnHost, HostConfig, MaskSet, Pruner};
use prunus_core::methods::flow::{self, Measure, MeasureConfig};
use prunus_core::{Host, Mask, Objective, PruneConfig, Samples, Split};
use prunus_cpu::{CpuBackend, Par};
use prunus_lab::data::{Dataset, TeacherStudent};
use prunus_lab::report::{Report, Row, write_atomic};

/// A three-layer ReLU MLP.
#[derive(Module, Debug)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl Mlp {
    fn new(widths: &[usize; 4], device: &Device) -> Self {
        let linear = |i: usize| LinearConfig::new(widths[i], widths[i + 1]).init(device);
        Mlp {
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

type Host2 = BurnHost<Mlp, fn(&Mlp, Tensor<2>) -> Tensor<2>, 2>;

struct Args {
    small: bool,
    repeat: usize,
    json: Option<PathBuf>,
    cpu_only: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        small: false,
        repeat: 3,
        json: None,
        cpu_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--small" => a.small = true,
            "--cpu-only" => a.cpu_only = true,
            "--repeat" => {
                let v = it.next().ok_or("--repeat needs a count")?;
                a.repeat = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("--repeat {v}: expected a count of at least 1"))?;
            }
            "--json" => a.json = Some(PathBuf::from(it.next().ok_or("--json needs a file")?)),
            other => return Err(format!("unknown option {other} (see the example's docs)")),
        }
    }
    Ok(a)
}

/// burn's ndarray CPU backend (deprecated in burn 0.22 in favour of `flex`,
/// which this crate does not build).
#[allow(deprecated)]
fn cpu() -> Device {
    Device::ndarray()
}

/// The stages' times on one device, in seconds, and what the checks need.
struct Timed {
    device: &'static str,
    stages: Vec<(&'static str, Vec<f64>)>,
    masks: MaskSet,
    accuracy: f64,
}

/// Runs `f` once to warm up, then `repeat` times, timed; `sync` waits for
/// the device's queued work after each run.
fn time<T>(
    repeat: usize,
    sync: &dyn Fn() -> Result<(), String>,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<(T, Vec<f64>), String> {
    let mut last = f()?;
    sync()?;
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat {
        let start = Instant::now();
        last = f()?;
        sync()?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok((last, times))
}

fn run(
    name: &'static str,
    device: &Device,
    widths: &[usize; 4],
    splits: &Arc<Splits>,
    weights: &[Vec<f32>],
    repeat: usize,
) -> Result<Timed, String> {
    let e = |e: prunus_burn::Error| e.to_string();
    let c = |e: prunus_core::Error| e.to_string();
    let device = device.clone().autodiff();
    let sync = || device.sync().map_err(|e| format!("{e:?}"));
    let start = Instant::now();
    let mut host: Host2 = BurnHost::new(
        Mlp::new(widths, &device),
        (|m: &Mlp, x| m.forward(x)) as fn(&Mlp, Tensor<2>) -> Tensor<2>,
        Arc::clone(splits),
        SgdConfig::new()
            .with_momentum(Some(MomentumConfig::new().with_momentum(0.9)))
            .init(),
        HostConfig::default().learning_rate(0.05).batch(64),
    )
    .map_err(e)?;
    for (i, w) in weights.iter().enumerate() {
        host.set_weights(i, w).map_err(c)?;
    }
    sync()?;
    let mut stages = vec![("setup", vec![start.elapsed().as_secs_f64()])];

    let config = PruneConfig::new(0.9).global().skip("fc3.weight");
    let ((_, masks), t) = time(repeat, &sync, || {
        Pruner::default()
            .prune(host.model(), &config, None)
            .map_err(e)
    })?;
    stages.push(("prune", t));

    let train = Objective::new(Samples::all(Split::Train));
    let (_, t) = time(repeat, &sync, || host.gradient(&train).map_err(c))?;
    stages.push(("gradient", t));

    let params: Vec<usize> = (0..host.parameters().len())
        .filter(|&i| host.parameters()[i].prunable)
        .collect();
    let backend = CpuBackend::new(Par::Seq).map_err(c)?;
    let mc = MeasureConfig::default().samples(Samples::first(Split::Train, 500));
    let snip = PruneConfig::new(0.9).global();
    let (snip_masks, t) = time(repeat, &sync, || {
        flow::prune_host(&backend, &mut host, Measure::Snip, &params, &[], &snip, &mc).map_err(c)
    })?;
    stages.push(("snip", t));

    let mut all: Vec<Option<Mask>> = vec![None; host.parameters().len()];
    for (k, &i) in params.iter().enumerate() {
        all[i] = Some(snip_masks[k].clone());
    }
    host.set_masks(&all).map_err(c)?;
    let (_, t) = time(repeat, &sync, || host.train_epoch().map_err(c))?;
    stages.push(("train_epoch", t));
    for (i, m) in all.iter().enumerate() {
        if let Some(m) = m {
            let w = host.weights(i).map_err(c)?;
            if let Some(k) = (0..m.len()).find(|&k| !m.get(k) && w[k] != 0.0) {
                return Err(format!(
                    "{name}: pruned weight {k} of parameter {i} is {} after training",
                    w[k]
                ));
            }
        }
    }

    let validation = Objective::new(Samples::all(Split::Validation));
    let (evaluation, t) = time(repeat, &sync, || host.evaluate(&validation).map_err(c))?;
    stages.push(("evaluate", t));
    Ok(Timed {
        device: name,
        stages,
        masks,
        accuracy: evaluation.accuracy,
    })
}

fn main() {
    match bench() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn bench() -> Result<i32, String> {
    let a = args()?;
    let (widths, samples) = if a.small {
        ([64, 128, 64, 10], 1_000)
    } else {
        ([784, 300, 100, 10], 10_000)
    };
    let repeat = if a.small { 1 } else { a.repeat };
    let side = (widths[0] as f64).sqrt() as usize;
    let spec = TeacherStudent::default()
        .input([1, side, widths[0] / side])
        .samples(samples);
    let data = Dataset::teacher_student(&spec).map_err(|e| e.to_string())?;
    let split = |s: Split| {
        let d = data.split(s);
        SplitData {
            inputs: d.inputs.clone(),
            labels: d.labels.iter().map(|&l| u32::from(l)).collect(),
        }
    };
    let splits = Arc::new(
        Splits::new(
            &[data.input_len()],
            data.classes,
            split(Split::Train),
            split(Split::Validation),
            split(Split::Test),
        )
        .map_err(|e| e.to_string())?,
    );
    // The lab's Kaiming weights (three weights, three biases), the same
    // on both devices.
    let network = prunus_lab::network::Network::mlp(&widths, true, 0).map_err(|e| e.to_string())?;
    let weights: Vec<Vec<f32>> = (0..6)
        .map(|i| network.param(i).map(<[f32]>::to_vec))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;

    let mut devices = vec![("ndarray", cpu())];
    let mut adapter = String::from("-");
    if !a.cpu_only {
        match prunus_burn::device::wgpu() {
            Ok(d) => {
                adapter = d.identity().map_or_else(
                    || format!("{d:?}"),
                    |i| format!("{} ({})", i.name, i.fingerprint),
                );
                eprintln!("wgpu adapter: {adapter}");
                devices.push(("wgpu", d));
            }
            Err(e) if std::env::var("PRUNUS_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
                return Err(format!("PRUNUS_REQUIRE_GPU=1 but {e}"));
            }
            Err(e) => {
                eprintln!("skipped: {e}");
                return Ok(3);
            }
        }
    }
    eprintln!(
        "MLP {} on {} train samples, batch 64; {repeat} timed run(s) per stage after a warm-up",
        widths.map(|w| w.to_string()).join("-"),
        data.train.len()
    );
    let mut runs = Vec::new();
    for (name, device) in &devices {
        let t = run(name, device, &widths, &splits, &weights, repeat)?;
        for (stage, times) in &t.stages {
            let median = {
                let mut s = times.clone();
                s.sort_by(f64::total_cmp);
                s[s.len() / 2]
            };
            println!("{name:<8} {stage:<12} {:>10.4} s", median);
        }
        println!("{name:<8} accuracy     {:>10.4}", t.accuracy);
        runs.push(t);
    }
    if let [cpu_run, gpu_run] = runs.as_slice() {
        for ((s, a), (_, b)) in cpu_run.masks.iter().zip(gpu_run.masks.iter()) {
            if a != b {
                return Err(format!(
                    "the magnitude masks of {} differ between ndarray and wgpu",
                    s.name
                ));
            }
        }
        println!("magnitude masks identical on ndarray and wgpu");
    }

    if let Some(path) = &a.json {
        let mut report = Report::new("bench-burn-wgpu", "synthetic", vec![0]);
        report.set_config("widths", widths.map(|w| w as u64).to_vec());
        report.set_config("train_samples", data.train.len() as u64);
        report.set_config("repeat", repeat as u64);
        report.set_config("adapter", adapter);
        for t in &runs {
            for (stage, times) in &t.stages {
                report.push(
                    Row::new(t.device, format!("{stage}_s"), times.clone())
                        .map_err(|e| e.to_string())?,
                );
            }
            report
                .push(Row::new(t.device, "accuracy", vec![t.accuracy]).map_err(|e| e.to_string())?);
        }
        write_atomic(path, &report).map_err(|e| e.to_string())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(0)
}
