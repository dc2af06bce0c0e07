//! `prunus prune` and `prunus inspect`: safetensors checkpoints from the
//! command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use prunus_adapters::safetensors::{
    Checkpoint, Filter, Options, Progress, Report, Request, TensorStats, inspect, prune_file,
};
use prunus_core::{Granularity, Importance, NofM, PruneConfig};
use prunus_cpu::{CpuBackend, Par};
use prunus_wgpu::WgpuBackend;
use serde_json::json;

use crate::bench::parse_sparsity;
use crate::error::Error;
use crate::memory::peak_rss_mib;

/// How weights are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Method {
    /// |w|: the smallest magnitudes go first.
    Magnitude,
    /// Uniform random scores from --seed (a baseline).
    Random,
}

/// Over which tensors the sparsity is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ScopeKind {
    /// One threshold over every pruned tensor: exactly round(S * total)
    /// weights go.
    Global,
    /// Each pruned tensor loses exactly round(S * its size).
    Local,
}

/// Where N:M patterns are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendChoice {
    /// The rayon CPU backend.
    Cpu,
    /// The wgpu GPU backend (`WGPU_ADAPTER_NAME` picks the adapter).
    Wgpu,
}

/// Arguments of `prunus prune`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Only F32, F16 and BF16 tensors of rank 2 or more (weight matrices, conv kernels, \
embeddings) are pruned. 1-D tensors such as biases and norm scales, scalars and \
other dtypes are copied bit for bit. Pruned weights become zero in their own dtype; \
nothing else changes. The output is written to a temporary file beside OUT and \
renamed when complete, so OUT is never left half-written; IN is only read.

Unstructured selection is exact and streamed: the file is read tensor by tensor \
(twice for F16/BF16, up to three times for F32), so checkpoints larger than memory \
can be pruned with memory bounded by the largest tensor.")]
pub(crate) struct PruneArgs {
    /// The checkpoint to prune (.safetensors); only read.
    #[arg(value_name = "IN")]
    pub(crate) input: PathBuf,
    /// Where to write the pruned checkpoint.
    #[arg(short, long, value_name = "OUT")]
    pub(crate) output: PathBuf,
    /// Fraction of the pruned tensors' weights to remove, in [0, 1]
    /// (required unless --pattern gives it).
    #[arg(long, value_name = "S", value_parser = parse_sparsity)]
    pub(crate) sparsity: Option<f64>,
    /// How weights are scored.
    #[arg(long, value_enum, default_value_t = Method::Magnitude)]
    pub(crate) method: Method,
    /// Seed of --method random.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// One threshold over all pruned tensors, or the same sparsity in each.
    #[arg(long, value_enum, default_value_t = ScopeKind::Global)]
    pub(crate) scope: ScopeKind,
    /// N:M pattern instead of a sparsity: keep N of every M consecutive
    /// weights along each row (for example 2:4).
    #[arg(long, value_name = "N:M", value_parser = parse_pattern)]
    pub(crate) pattern: Option<NofM>,
    /// Prune only tensors whose name matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub(crate) include: Option<String>,
    /// Never prune tensors whose name matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub(crate) exclude: Option<String>,
    /// Each pruned tensor keeps at least this fraction of its weights.
    #[arg(long, value_name = "D", default_value_t = 0.0, value_parser = parse_density)]
    pub(crate) min_density: f64,
    /// Also write each pruned tensor's mask as `<name>.mask` (U8, packed
    /// bits, bit i%8 of byte i/8 set where weight i is kept).
    #[arg(long)]
    pub(crate) masks: bool,
    /// Where N:M patterns are chosen (unstructured selection streams on the
    /// CPU, bound by reading the file).
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    pub(crate) backend: BackendChoice,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// Allow OUT to be IN (replaced atomically when done).
    #[arg(long)]
    pub(crate) in_place: bool,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) show: Show,
}

/// How results are shown.
#[derive(Debug, Args)]
pub(crate) struct Show {
    /// Print JSON on stdout instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// Arguments of `prunus inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The checkpoint (.safetensors); only read.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// The N:M pattern to check each float tensor of rank 2 or more
    /// against.
    #[arg(long, value_name = "N:M", default_value = "2:4", value_parser = parse_pattern)]
    pub(crate) pattern: NofM,
    /// Fail (exit status 2) unless every float tensor of rank 2 or more
    /// conforms to --pattern.
    #[arg(long)]
    pub(crate) check: bool,
    #[command(flatten)]
    pub(crate) show: Show,
}

/// `N:M` with `0 < N < M`.
fn parse_pattern(s: &str) -> Result<NofM, String> {
    let bad = || format!("'{s}' is not an N:M pattern such as 2:4");
    let (n, m) = s.split_once(':').ok_or_else(bad)?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    let m: usize = m.trim().parse().map_err(|_| bad())?;
    NofM::new(n, m).map_err(|e| e.to_string())
}

/// A fraction in [0, 1].
fn parse_density(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is not a fraction in [0, 1]"));
    }
    Ok(v)
}

/// A progress bar on stderr, drawn only on a terminal and only when the
/// percentage changes.
struct Bar {
    on: bool,
    last: Option<(&'static str, u64)>,
}

impl Bar {
    fn new(quiet: bool) -> Bar {
        Bar {
            on: !quiet && std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn update(&mut self, p: Progress) {
        if !self.on || p.total == 0 {
            return;
        }
        let pct = p.done * 100 / p.total;
        if self.last == Some((p.stage, pct)) {
            return;
        }
        self.last = Some((p.stage, pct));
        let filled = (pct / 4) as usize;
        eprint!(
            "\r{:>5} [{}{}] {:>3}% {:.2} / {:.2} GB",
            p.stage,
            "#".repeat(filled),
            ".".repeat(25 - filled),
            pct,
            p.done as f64 / 1e9,
            p.total as f64 / 1e9
        );
    }

    fn finish(&self) {
        if self.on && self.last.is_some() {
            eprint!("\r{}\r", " ".repeat(60));
        }
    }
}

/// Runs `prunus prune`.
pub(crate) fn prune(args: &PruneArgs) -> Result<(), Error> {
    let started = Instant::now();
    let request = request(args)?;
    let checkpoint = Checkpoint::open(&args.input)?;
    let options = Options {
        in_place: args.in_place,
        overwrite: args.force,
    };
    let mut bar = Bar::new(args.show.quiet || args.show.json);
    let mut progress = |p: Progress| bar.update(p);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .map_err(|e| Error::Check(format!("cannot start threads: {e}")))?;
    let report = pool.install(|| match args.backend {
        BackendChoice::Cpu => prune_file(
            &CpuBackend::new(Par::Rayon(args.threads))?,
            &checkpoint,
            &args.output,
            options,
            &request,
            &mut progress,
        )
        .map_err(Error::from),
        BackendChoice::Wgpu => prune_file(
            &WgpuBackend::new()?,
            &checkpoint,
            &args.output,
            options,
            &request,
            &mut progress,
        )
        .map_err(Error::from),
    });
    bar.finish();
    let report = report?;
    let wall = started.elapsed().as_secs_f64();
    if args.show.json {
        println!("{}", prune_json(args, &report, wall));
    } else {
        print_prune(args, &report, wall);
    }
    Ok(())
}

/// The library request for `args`, checked.
fn request(args: &PruneArgs) -> Result<Request, Error> {
    let invalid = |name: &'static str, value: String, expected: &str| {
        Error::Lab(prunus_lab::Error::InvalidSetting {
            name,
            value,
            expected: expected.into(),
        })
    };
    let mut config = match (args.sparsity, args.pattern) {
        (Some(s), None) => PruneConfig::new(s),
        (None, Some(p)) => PruneConfig::new(0.0).granularity(Granularity::NofM(p)),
        (Some(s), Some(p)) => {
            return Err(invalid(
                "--sparsity",
                s.to_string(),
                &format!(
                    "no sparsity with --pattern {}:{}, which keeps {} of every {} weights",
                    p.n, p.m, p.n, p.m
                ),
            ));
        }
        (None, None) => {
            return Err(invalid(
                "--sparsity",
                "nothing".into(),
                "a fraction in [0, 1], or an N:M --pattern",
            ));
        }
    };
    config = match args.scope {
        ScopeKind::Global => config.global(),
        ScopeKind::Local => config.local(),
    };
    if args.method == Method::Random {
        config = config.importance(Importance::Random { seed: args.seed });
    }
    config = config.min_density(args.min_density);
    crate::bench::check_output("--output", &args.output)?;
    Ok(Request {
        config,
        filter: Filter::new(args.include.as_deref(), args.exclude.as_deref())?,
        masks: args.masks,
    })
}

fn percent(zeros: Option<u64>, n: u64) -> String {
    match zeros {
        Some(z) if n > 0 => format!("{:.2}", 100.0 * z as f64 / n as f64),
        _ => "-".into(),
    }
}

fn shape(s: &[usize]) -> String {
    let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

fn print_prune(args: &PruneArgs, report: &Report, wall: f64) {
    let width = report
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(4)
        .max(6);
    println!(
        "{:<width$}  {:<18} {:<5} {:>9} {:>9}  note",
        "tensor", "shape", "dtype", "before %", "after %"
    );
    for t in &report.tensors {
        let note = t
            .kept
            .map_or("pruned".to_string(), |k| format!("kept ({k})"));
        println!(
            "{:<width$}  {:<18} {:<5} {:>9} {:>9}  {note}",
            t.name,
            shape(&t.shape),
            t.dtype.name(),
            percent(t.zeros_before, t.numel),
            percent(t.zeros_after, t.numel),
        );
    }
    let (n, before, after) = report.pruned_totals();
    let pruned = report.tensors.iter().filter(|t| t.kept.is_none()).count();
    let all: u64 = report.tensors.iter().map(|t| t.numel).sum();
    println!(
        "\npruned {pruned} of {} tensors ({n} of {all} elements): sparsity {}% -> {}%",
        report.tensors.len(),
        percent(Some(before), n),
        percent(Some(after), n)
    );
    println!(
        "wrote {} ({:.3} GB) in {wall:.2} s; read {:.3} GB; peak memory {}",
        args.output.display(),
        report.bytes_written as f64 / 1e9,
        report.bytes_read as f64 / 1e9,
        peak_rss_mib().map_or("unknown".into(), |m| format!("{m:.0} MiB"))
    );
}

fn prune_json(args: &PruneArgs, report: &Report, wall: f64) -> serde_json::Value {
    let (n, before, after) = report.pruned_totals();
    json!({
        "input": args.input.display().to_string(),
        "output": args.output.display().to_string(),
        "prunus_version": prunus_adapters::safetensors::PRUNUS_VERSION,
        "method": format!("{:?}", args.method).to_lowercase(),
        "scope": format!("{:?}", args.scope).to_lowercase(),
        "pattern": args.pattern.map(|p| format!("{}:{}", p.n, p.m)),
        "sparsity": args.sparsity,
        "tensors": report.tensors.iter().map(|t| json!({
            "name": t.name,
            "dtype": t.dtype.name(),
            "shape": t.shape,
            "numel": t.numel,
            "pruned": t.kept.is_none(),
            "kept_because": t.kept.map(|k| k.to_string()),
            "zeros_before": t.zeros_before,
            "zeros_after": t.zeros_after,
        })).collect::<Vec<_>>(),
        "pruned_elements": n,
        "zeros_before": before,
        "zeros_after": after,
        "bytes_read": report.bytes_read,
        "bytes_written": report.bytes_written,
        "wall_s": wall,
        "peak_rss_mib": peak_rss_mib(),
    })
}

/// Runs `prunus inspect`.
pub(crate) fn inspect_file(args: &InspectArgs) -> Result<(), Error> {
    let checkpoint = Checkpoint::open(&args.file)?;
    let mut bar = Bar::new(args.show.quiet || args.show.json);
    let total: u64 = checkpoint
        .tensors()
        .iter()
        .filter(|t| t.dtype.is_prunable())
        .map(|t| t.len())
        .sum();
    let stats = inspect(&checkpoint, Some(args.pattern), &mut |done| {
        bar.update(Progress {
            stage: "read",
            done,
            total,
        })
    });
    bar.finish();
    let stats = stats?;
    let p = args.pattern;
    let label = format!("{}:{}", p.n, p.m);
    if args.show.json {
        let tensors: Vec<serde_json::Value> = stats
            .iter()
            .map(|s| {
                json!({
                    "name": s.name, "dtype": s.dtype.name(), "shape": s.shape, "numel": s.numel,
                    "zeros": s.zeros, "non_finite": s.non_finite, "violations": s.violations,
                })
            })
            .collect();
        println!(
            "{}",
            json!({"file": args.file.display().to_string(), "pattern": label,
                   "metadata": checkpoint.metadata().iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                   "tensors": tensors})
        );
    } else {
        print_inspect(&checkpoint, &stats, &label);
    }
    if args.check {
        let failing: Vec<&TensorStats> = stats
            .iter()
            .filter(|s| s.dtype.is_prunable() && s.shape.len() >= 2 && s.violations != Some(0))
            .collect();
        if let Some(first) = failing.first() {
            return Err(Error::Adapters(prunus_adapters::Error::Request {
                reason: format!(
                    "{} of the float tensors of rank 2 or more do not conform to {label}; the \
                     first is '{}' ({})",
                    failing.len(),
                    first.name,
                    first.violations.map_or(
                        format!("its rows are not a multiple of {}", p.m),
                        |v| format!("{v} groups hold more than {} non-zeros", p.n)
                    )
                ),
            }));
        }
    }
    Ok(())
}

fn print_inspect(checkpoint: &Checkpoint, stats: &[TensorStats], label: &str) {
    let width = stats.iter().map(|t| t.name.len()).max().unwrap_or(4).max(6);
    println!(
        "{:<width$}  {:<18} {:<7} {:>9}  {label}",
        "tensor", "shape", "dtype", "sparse %"
    );
    for s in stats {
        let conform = match s.violations {
            Some(0) => "yes".to_string(),
            Some(v) => format!("no ({v} groups)"),
            None => "-".into(),
        };
        let bad = match s.non_finite {
            Some(b) if b > 0 => format!("  {b} non-finite"),
            _ => String::new(),
        };
        println!(
            "{:<width$}  {:<18} {:<7} {:>9}  {conform}{bad}",
            s.name,
            shape(&s.shape),
            s.dtype.name(),
            percent(s.zeros, s.numel),
        );
    }
    let floats: Vec<&TensorStats> = stats.iter().filter(|s| s.zeros.is_some()).collect();
    let n: u64 = floats.iter().map(|s| s.numel).sum();
    let z: u64 = floats.iter().filter_map(|s| s.zeros).sum();
    let checked: Vec<&&TensorStats> = floats.iter().filter(|s| s.violations.is_some()).collect();
    let ok = checked.iter().filter(|s| s.violations == Some(0)).count();
    println!(
        "\n{} tensors, {} float elements, {}% zero; {ok} of {} checkable tensors conform to {label}",
        stats.len(),
        n,
        percent(Some(z), n),
        checked.len()
    );
    for (k, v) in checkpoint.metadata() {
        println!("metadata {k} = {v}");
    }
}
