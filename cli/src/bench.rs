//! `prunus bench select`: global magnitude selection against the
//! memory-bandwidth floor of the same weights.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use prunus_core::prune;
use prunus_core::{Backend, HostTensor, Layer, PruneConfig, ReferenceBackend, SelectionPlan};
use prunus_cpu::{CpuBackend, CpuTensor, Par};
use prunus_lab::{Report, Row, synthetic_layers, write_atomic};
use prunus_wgpu::{AdapterChoice, WgpuBackend, WgpuTensor};

use crate::error::Error;
use crate::memory::peak_rss_mib;

/// The backend to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendKind {
    /// The rayon CPU backend, on --threads threads.
    Cpu,
    /// The scalar reference backend of prunus-core (sequential, the oracle).
    Reference,
    /// The wgpu compute-shader backend, on the adapter `WGPU_ADAPTER_NAME`
    /// names (else the first discrete GPU; `WGPU_BACKEND` restricts the
    /// graphics APIs searched).
    Wgpu,
}

/// A selection plan ([`SelectionPlan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum PlanKind {
    /// Sample the keys, gather the elements near the threshold, settle them
    /// on the host: the fewest passes.
    Gather,
    /// Histogram passes and a tie-resolving mask pass: only histograms come
    /// back before the masks.
    Histograms,
}

impl From<PlanKind> for SelectionPlan {
    fn from(p: PlanKind) -> Self {
        match p {
            PlanKind::Gather => SelectionPlan::Gather,
            PlanKind::Histograms => SelectionPlan::Histograms,
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
    /// software GPUs, histograms on GPUs); the masks are the same.
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

/// A sparsity in `[0, 1]`, with core's message otherwise.
pub(crate) fn parse_sparsity(s: &str) -> Result<f64, String> {
    let value: f64 = s.trim().parse().map_err(|_| {
        format!("'{s}' is not a number; give the fraction of weights to remove, e.g. 0.9")
    })?;
    if !(0.0..=1.0).contains(&value) {
        return Err(prunus_core::Error::SparsityOutOfRange { value }.to_string());
    }
    Ok(value)
}

/// Per-repeat measurements of one backend.
struct Measurements {
    /// Milliseconds of each read pass.
    floor_ms: Vec<f64>,
    /// Milliseconds of each pruning call.
    prunus_ms: Vec<f64>,
    /// Weights pruned by each call.
    pruned: Vec<u64>,
}

/// Runs `prunus bench select`.
pub(crate) fn select(args: &SelectArgs) -> Result<(), Error> {
    let started = Instant::now();
    // Settings are checked before minutes of work, not after.
    prunus_lab::layer_specs(args.params, args.tensors)?;
    if args.adapter.is_some() && args.backend != BackendKind::Wgpu {
        return Err(Error::Lab(prunus_lab::Error::InvalidSetting {
            name: "--adapter",
            value: args.adapter.clone().unwrap_or_default(),
            expected: "to be given with --backend wgpu only".into(),
        }));
    }
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
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let mask_bytes: u64 = layers
        .iter()
        .map(|l| l.data.len().div_ceil(64) as u64 * 8)
        .sum();

    let mut adapter = None;
    let mut plan = SelectionPlan::Gather;
    let (backend, threads, m) = match args.backend {
        BackendKind::Cpu => {
            let par = match args.threads {
                1 => Par::Seq,
                n => Par::Rayon(n),
            };
            let mut b = CpuBackend::new(par)?;
            eprintln!("cpu kernels: {} (PRUNUS_SIMD forces a level)", b.simd());
            if let Some(p) = args.plan {
                b = b.with_selection_plan(p.into());
            }
            // Zero-copy: the backend reads the generated buffers in place.
            let tensors = layers
                .iter()
                .map(|l| b.borrow(&l.data, &l.shape).map_err(Error::from))
                .collect::<Result<Vec<CpuTensor<'_>>, Error>>()?;
            let refs: Vec<&CpuTensor<'_>> = tensors.iter().collect();
            let m = measure(
                &b,
                &names,
                &tensors,
                || Ok(b.read_pass(&refs)),
                args,
                expected,
            )?;
            plan = b.selection_plan();
            (b.name(), b.threads(), m)
        }
        BackendKind::Wgpu => {
            let choice = match args.adapter.as_deref() {
                None => AdapterChoice::Auto,
                Some(a) => a
                    .parse()
                    .map_or_else(|_| AdapterChoice::Named(a.into()), AdapterChoice::Index),
            };
            let mut b = WgpuBackend::with_adapter(&choice)?;
            if let Some(p) = args.plan {
                b = b.with_selection_plan(p.into());
            }
            eprintln!("uploading to {}...", b.name());
            let t = Instant::now();
            let tensors = layers
                .iter()
                .map(|l| b.upload(&l.data, &l.shape).map_err(Error::from))
                .collect::<Result<Vec<WgpuTensor>, Error>>()?;
            eprintln!("uploaded in {:.2} s", t.elapsed().as_secs_f64());
            let refs: Vec<&WgpuTensor> = tensors.iter().collect();
            // The floor is one device read pass of every weight, waited for.
            let m = measure(
                &b,
                &names,
                &tensors,
                || Ok(b.read_pass(&refs)? as u64),
                args,
                expected,
            )?;
            adapter = Some((b.adapter().clone(), b.flushes_subnormals()));
            plan = b.selection_plan();
            (b.name(), 1, m)
        }
        BackendKind::Reference => {
            if args.plan.is_some_and(|p| p != PlanKind::Gather) {
                return Err(Error::Lab(prunus_lab::Error::InvalidSetting {
                    name: "--plan",
                    value: "histograms".into(),
                    expected: "gather (the reference backend has no other plan)".into(),
                }));
            }
            let b = ReferenceBackend;
            // The generated buffers move into the tensors: no copy either.
            let tensors = layers
                .into_iter()
                .map(|l| HostTensor::new(l.data, l.shape).map_err(Error::from))
                .collect::<Result<Vec<HostTensor>, Error>>()?;
            let m = measure(
                &b,
                &names,
                &tensors,
                || Ok(sequential_sum(&tensors)),
                args,
                expected,
            )?;
            (b.name(), 1, m)
        }
    };
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
        "floor (one read pass)", floor_med, floor_min
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
    if let Some((a, flushes)) = &adapter {
        report.set_config("flushes_subnormals", *flushes);
        report.set_config("adapter", a.name.clone());
        report.set_config("adapter_api", a.api.clone());
        report.set_config("adapter_kind", a.kind.clone());
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

/// Times `floor` and `prune` alternately, `args.repeat` times after one
/// warm-up, checking that every call prunes exactly `expected` weights.
fn measure<B: Backend>(
    backend: &B,
    names: &[String],
    tensors: &[B::Tensor],
    floor: impl Fn() -> Result<u64, Error>,
    args: &SelectArgs,
    expected: u64,
) -> Result<Measurements, Error> {
    let layers: Vec<Layer<'_, B>> = names
        .iter()
        .zip(tensors)
        .map(|(n, t)| Layer::new(n, t))
        .collect();
    // Plain global selection: with the never-empty guard off, every
    // sparsity in [0, 1] is reachable and the count is exactly `expected`.
    let config = PruneConfig::new(args.sparsity).global().allow_empty(true);
    let run = || -> Result<(f64, f64, u64), Error> {
        let t = Instant::now();
        black_box(floor()?);
        let floor_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let masks = prune(backend, &layers, &config)?;
        let prunus_ms = t.elapsed().as_secs_f64() * 1e3;
        let pruned: u64 = masks.iter().map(|m| m.count_pruned()).sum();
        if pruned != expected {
            return Err(Error::Check(format!(
                "global selection pruned {pruned} weights, expected exactly round({} * {}) = {expected}",
                args.sparsity, args.params
            )));
        }
        Ok((floor_ms, prunus_ms, pruned))
    };
    eprintln!("warm-up on {}...", backend.name());
    let (f, p, _) = run()?;
    eprintln!("warm-up: floor {f:.1} ms, prunus {p:.1} ms");
    let mut m = Measurements {
        floor_ms: Vec::new(),
        prunus_ms: Vec::new(),
        pruned: Vec::new(),
    };
    for r in 1..=args.repeat {
        let (f, p, k) = run()?;
        eprintln!(
            "repeat {r}/{}: floor {f:.1} ms, prunus {p:.1} ms",
            args.repeat
        );
        m.floor_ms.push(f);
        m.prunus_ms.push(p);
        m.pruned.push(k);
    }
    Ok(m)
}

/// The floor of the reference backend: one sequential pass summing every
/// element (independent lanes, so the loop vectorises instead of waiting
/// on one chain of additions).
fn sequential_sum(tensors: &[HostTensor]) -> u64 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    for t in tensors {
        let mut chunks = t.data().chunks_exact(LANES);
        for c in &mut chunks {
            for (a, x) in acc.iter_mut().zip(c) {
                *a += x;
            }
        }
        for (a, x) in acc.iter_mut().zip(chunks.remainder()) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>().to_bits() as u64
}

/// Fails early when the report could not be written at the end.
/// Checks, before any work, that `path` (given with `flag`) can be written:
/// not a directory, in a directory that exists.
pub(crate) fn check_output(flag: &'static str, path: &Path) -> Result<(), Error> {
    let invalid = |expected: &str| {
        Error::Lab(prunus_lab::Error::InvalidSetting {
            name: flag,
            value: path.display().to_string(),
            expected: expected.into(),
        })
    };
    if path.is_dir() {
        return Err(invalid("a file name, not a directory"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(invalid("a file in an existing directory"));
    }
    Ok(())
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
    fn sparsity_parser() {
        assert_eq!(parse_sparsity("0.37"), Ok(0.37));
        assert_eq!(parse_sparsity("1"), Ok(1.0));
        assert!(
            parse_sparsity("1.5")
                .unwrap_err()
                .contains("outside [0, 1]")
        );
        assert!(parse_sparsity("NaN").is_err());
        assert!(
            parse_sparsity("ninety")
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(min(&[4.0, 1.0, 2.0]), 1.0);
    }

    #[test]
    fn sequential_sum_covers_every_element() {
        let t = HostTensor::new(vec![1.0; 37], prunus_core::Shape::vector(37)).unwrap();
        assert_eq!(f32::from_bits(sequential_sum(&[t]) as u32), 37.0);
    }
}
