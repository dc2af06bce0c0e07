//! `prunus bench select`: global magnitude selection against the
//! memory-bandwidth floor of the same weights.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use prunus_core::prune;
use prunus_core::{Layer, PruneConfig, SelectionPlan};
use prunus_lab::{Report, Row, SyntheticLayer, synthetic_layers, write_atomic};
use prunus_wgpu::Counters;

use crate::args::{check_output, parse_sparsity};
use crate::backend::{BackendJob, BackendKind, BackendSpec, Device, dispatch};
use crate::error::Error;
use crate::memory::peak_rss_mib;

/// A selection plan ([`SelectionPlan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum PlanKind {
    /// Sample the keys, gather the elements near the threshold, settle them
    /// on the host: the fewest passes.
    Gather,
    /// Histogram passes and a tie-resolving mask pass: only histograms come
    /// back before the masks.
    Histograms,
    /// The whole selection on the device (the wgpu backend): radix passes
    /// that choose their buckets there, then the masks; only the cut and the
    /// counts come back before the masks.
    Device,
}

impl From<PlanKind> for SelectionPlan {
    fn from(p: PlanKind) -> Self {
        match p {
            PlanKind::Gather => SelectionPlan::Gather,
            PlanKind::Histograms => SelectionPlan::Histograms,
            PlanKind::Device => SelectionPlan::Device,
        }
    }
}

/// Arguments of `prunus bench select`.
#[derive(Debug, Args)]
#[command(after_help = "\
Builds L synthetic Gaussian weight matrices (Kaiming scale) totalling N f32 weights, once, \
and measures in the same run: (a) one streaming read of all weights, the memory-bandwidth \
floor, and (b) prunus' global magnitude pruning to exactly round(S * N) weights, producing \
the masks. Each is repeated R times after one warm-up; the median and the minimum are \
printed. The pruned count is checked exactly (exit status 1 if it is wrong).

Example: prunus bench select --params 10000000 --sparsity 0.5 --json select.json")]
pub(crate) struct SelectArgs {
    /// Total number of f32 weights.
    #[arg(long, value_name = "N", default_value_t = 100_000_000)]
    pub(crate) params: usize,
    /// Number of weight tensors the weights are split into (at most N).
    #[arg(long, value_name = "L", default_value_t = 50)]
    pub(crate) tensors: usize,
    /// Fraction of weights to prune, in [0, 1].
    #[arg(long, value_name = "S", default_value_t = 0.9, value_parser = parse_sparsity)]
    pub(crate) sparsity: f64,
    /// Backend to measure.
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub(crate) backend: BackendKind,
    /// Threads of the CPU backend: 0 = all cores, 1 = the sequential path
    /// (no pool). The reference backend is always sequential.
    #[arg(long, value_name = "T", default_value_t = 0)]
    pub(crate) threads: usize,
    /// GPU adapter for --backend wgpu: its index in `prunus adapters` or a
    /// part of its name (default: WGPU_ADAPTER_NAME, else the first discrete
    /// GPU).
    #[arg(long, value_name = "INDEX|NAME")]
    pub(crate) adapter: Option<String>,
    /// Selection plan: the backend's own by default (gather on CPUs and
    /// software adapters, device on GPU adapters); the masks are the same.
    #[arg(long, value_enum)]
    pub(crate) plan: Option<PlanKind>,
    /// Seed of the synthetic weights.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// Timed repetitions of each measurement, after one warm-up.
    #[arg(long, value_name = "R", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) repeat: u32,
    /// Also write the results as a JSON report (written atomically).
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
}

/// Per-repeat measurements of one backend.
struct Measurements {
    /// Milliseconds of each read pass.
    floor_ms: Vec<f64>,
    /// Milliseconds of each pruning call.
    prunus_ms: Vec<f64>,
    /// Weights pruned by each call.
    pruned: Vec<u64>,
    /// What each call did on the device, for a GPU.
    counters: Vec<Counters>,
}

/// Runs `prunus bench select`.
pub(crate) fn select(args: &SelectArgs) -> Result<(), Error> {
    let started = Instant::now();
    // Settings are checked before minutes of work, not after.
    prunus_lab::layer_specs(args.params, args.tensors)?;
    let spec = BackendSpec::new(args.backend, args.threads)
        .adapter(args.adapter.clone())
        .plan(args.plan.map(SelectionPlan::from));
    spec.check()?;
    if let Some(path) = &args.json {
        check_output("--json", path)?;
    }
    let expected = (args.sparsity * args.params as f64).round() as u64;

    eprintln!(
        "generating {} f32 weights in {} tensors (seed {})...",
        args.params, args.tensors, args.seed
    );
    let t = Instant::now();
    let layers = synthetic_layers(args.params, args.tensors, args.seed)?;
    let generate_s = t.elapsed().as_secs_f64();
    eprintln!("generated in {generate_s:.2} s");
    let mask_bytes: u64 = layers
        .iter()
        .map(|l| l.data.len().div_ceil(64) as u64 * 8)
        .sum();
    let job = SelectJob {
        args,
        layers: &layers,
        expected,
    };
    let Selected {
        backend,
        threads,
        plan,
        describe,
        m,
    } = dispatch(&spec, job)?;
    let peak = peak_rss_mib();

    let bytes = args.params as f64 * 4.0;
    let gbps = |ms: f64| bytes / (ms * 1e-3) / 1e9;
    let ratios: Vec<f64> = m
        .prunus_ms
        .iter()
        .zip(&m.floor_ms)
        .map(|(p, f)| p / f)
        .collect();
    let (floor_med, floor_min) = (median(&m.floor_ms), min(&m.floor_ms));
    let (prunus_med, prunus_min) = (median(&m.prunus_ms), min(&m.prunus_ms));
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let footprint = bytes + mask_bytes as f64;

    println!(
        "bench select: {} f32 weights in {} tensors, sparsity {}, backend {backend}, {plan:?} plan, {} repeat(s) after a warm-up",
        args.params, args.tensors, args.sparsity, args.repeat
    );
    println!("{:<26}{:>13}{:>13}", "", "median", "min");
    println!(
        "{:<26}{:>10.2} ms{:>10.2} ms",
        "floor (fastest read pass)", floor_med, floor_min
    );
    println!(
        "{:<26}{:>8.2} GB/s{:>8.2} GB/s",
        "floor bandwidth",
        gbps(floor_med),
        gbps(floor_min)
    );
    println!(
        "{:<26}{:>10.2} ms{:>10.2} ms",
        "prunus (global select)", prunus_med, prunus_min
    );
    println!(
        "{:<26}{:>12.2}x{:>12.2}x",
        "ratio prunus / floor",
        prunus_med / floor_med,
        prunus_min / floor_min
    );
    println!(
        "{:<26}{expected} = round({} * {}), exact in every run",
        "pruned", args.sparsity, args.params
    );
    // Every call does the same work; the last one's counts stand for all.
    if let Some(c) = m.counters.last() {
        println!(
            "{:<26}{} dispatches, {} passes, {} read-backs of {} bytes, {} candidates listed",
            "device work per select",
            c.dispatches,
            c.passes,
            c.read_backs,
            c.bytes_read_back,
            c.candidates
        );
    }
    match peak {
        Some(p) => println!("{:<26}{p:.1} MiB", "peak memory (VmHWM)"),
        None => println!("{:<26}n/a", "peak memory (VmHWM)"),
    }
    println!(
        "{:<26}{:.1} MiB (weights {:.1} MiB + masks {:.1} MiB)",
        "expected footprint",
        mib(footprint),
        mib(bytes),
        mib(mask_bytes as f64)
    );

    let Some(path) = &args.json else {
        return Ok(());
    };
    let mut report = Report::new("bench-select", "synthetic", vec![args.seed]);
    report.set_config("params", args.params);
    report.set_config("tensors", args.tensors);
    report.set_config("sparsity", args.sparsity);
    report.set_config("scope", "global");
    report.set_config("importance", "magnitude");
    report.set_config("backend", backend);
    report.set_config("threads", threads);
    report.set_config("plan", format!("{plan:?}").to_lowercase());
    for (key, value) in describe {
        report.set_config(key, value);
    }
    report.set_config("repeat", args.repeat);
    let row = |metric: &str, values: Vec<f64>| -> Result<Row, Error> {
        Ok(Row::new("prunus", metric, values)?.sparsity(args.sparsity))
    };
    report.push(row("floor_ms", m.floor_ms.clone())?);
    report.push(row("prunus_ms", m.prunus_ms.clone())?);
    report.push(row("ratio", ratios)?);
    report.push(row("pruned", m.pruned.iter().map(|&p| p as f64).collect())?);
    report.push(row(
        "floor_gb_s",
        m.floor_ms.iter().map(|&ms| gbps(ms)).collect(),
    )?);
    if !m.counters.is_empty() {
        let per_call = |f: fn(&Counters) -> u64| m.counters.iter().map(|c| f(c) as f64).collect();
        report.push(row("dispatches", per_call(|c| c.dispatches))?);
        report.push(row("passes", per_call(|c| c.passes))?);
        report.push(row("read_backs", per_call(|c| c.read_backs))?);
        report.push(row("bytes_read_back", per_call(|c| c.bytes_read_back))?);
        report.push(row("candidates", per_call(|c| c.candidates))?);
    }
    if let Some(p) = peak {
        report.push(row("peak_rss_mb", vec![p])?);
    }
    report.push(row("footprint_mb", vec![mib(footprint)])?);
    report.set_timing("generate", generate_s);
    report.set_timing("total", started.elapsed().as_secs_f64());
    write_atomic(path, &report)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// `prunus bench select` on one backend: the weights made resident there
/// (in place on the CPU), then the floor and the selection timed.
struct SelectJob<'a, 'd> {
    args: &'a SelectArgs,
    layers: &'d [SyntheticLayer],
    expected: u64,
}

/// What [`SelectJob`] measured and where.
struct Selected {
    /// The backend's name.
    backend: String,
    /// Its host threads.
    threads: usize,
    /// The selection plan it used.
    plan: SelectionPlan,
    /// The device's entries of the report's config.
    describe: Vec<(&'static str, serde_json::Value)>,
    /// The timings.
    m: Measurements,
}

impl<'d> BackendJob<'d> for SelectJob<'_, 'd> {
    type Output = Selected;

    fn run<B: Device<'d>>(self, backend: &B) -> Result<Selected, Error> {
        if let Some(kernels) = backend.kernels() {
            eprintln!("cpu kernels: {kernels} (PRUNUS_SIMD forces a level)");
        }
        let t = Instant::now();
        let tensors = self
            .layers
            .iter()
            .map(|l| backend.resident(&l.data, &l.shape))
            .collect::<Result<Vec<B::Tensor>, Error>>()?;
        eprintln!(
            "{} resident in {:.2} s",
            backend.name(),
            t.elapsed().as_secs_f64()
        );
        let refs: Vec<&B::Tensor> = tensors.iter().collect();
        let m = measure(
            backend,
            self.layers,
            &tensors,
            &refs,
            self.args,
            self.expected,
        )?;
        Ok(Selected {
            backend: backend.name(),
            threads: backend.host_threads(),
            plan: backend.selection_plan(),
            describe: backend.describe(),
            m,
        })
    }
}

/// Times the fastest read pass and `prune` alternately, `args.repeat` times after
/// one warm-up, checking that every call prunes exactly `expected` weights.
fn measure<'d, B: Device<'d>>(
    backend: &B,
    synthetic: &[SyntheticLayer],
    tensors: &[B::Tensor],
    refs: &[&B::Tensor],
    args: &SelectArgs,
    expected: u64,
) -> Result<Measurements, Error> {
    let layers: Vec<Layer<'_, B>> = synthetic
        .iter()
        .zip(tensors)
        .map(|(l, t)| Layer::new(&l.name, t))
        .collect();
    // Plain global selection: with the never-empty guard off, every
    // sparsity in [0, 1] is reachable and the count is exactly `expected`.
    let config = PruneConfig::new(args.sparsity).global().allow_empty(true);
    let run = || -> Result<(f64, f64, u64, Option<Counters>), Error> {
        // The floor is the fastest way the backend knows to read the data.
        let mut floor_ms = f64::INFINITY;
        for way in 0..backend.read_ways() {
            let t = Instant::now();
            black_box(backend.read_pass(refs, way)?);
            floor_ms = floor_ms.min(t.elapsed().as_secs_f64() * 1e3);
        }
        let before = backend.counters();
        let t = Instant::now();
        let masks = prune(backend, &layers, &config)?;
        let prunus_ms = t.elapsed().as_secs_f64() * 1e3;
        let used = backend.counters().zip(before).map(|(a, b)| a.since(b));
        let pruned: u64 = masks.iter().map(|m| m.count_pruned()).sum();
        if pruned != expected {
            return Err(Error::SelfCheck(format!(
                "global selection pruned {pruned} weights, expected exactly round({} * {}) = {expected}",
                args.sparsity, args.params
            )));
        }
        Ok((floor_ms, prunus_ms, pruned, used))
    };
    eprintln!("warm-up on {}...", backend.name());
    let (f, p, _, _) = run()?;
    eprintln!("warm-up: floor {f:.1} ms, prunus {p:.1} ms");
    let mut m = Measurements {
        floor_ms: Vec::new(),
        prunus_ms: Vec::new(),
        pruned: Vec::new(),
        counters: Vec::new(),
    };
    for r in 1..=args.repeat {
        let (f, p, k, used) = run()?;
        eprintln!(
            "repeat {r}/{}: floor {f:.1} ms, prunus {p:.1} ms",
            args.repeat
        );
        m.floor_ms.push(f);
        m.prunus_ms.push(p);
        m.pruned.push(k);
        m.counters.extend(used);
    }
    Ok(m)
}

/// The median (mean of the two middle values for an even count).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The smallest value.
fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(min(&[4.0, 1.0, 2.0]), 1.0);
    }
}
