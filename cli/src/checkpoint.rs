//! `prunus prune` and `prunus inspect`: safetensors checkpoints from the
//! command line.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use prunus_adapters::safetensors::{
    Checkpoint, Filter, Options, Progress, Report, Request, TensorReport, TensorStats, inspect,
    prune_file,
};
use prunus_core::{Granularity, Importance, NofM, PruneConfig};
use serde_json::json;

use crate::args::{check_output, parse_pattern};
use crate::backend::{BackendJob, BackendSpec, Device, dispatch};
use crate::error::Error;
use crate::memory::peak_rss_mib;
use crate::progress::Bars;
use crate::prune_args::{Method, PruneArgs, ScopeKind, Show};

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
    /// Fail with exit status 1 unless every float tensor of rank 2 or more
    /// conforms to --pattern.
    #[arg(long)]
    pub(crate) check: bool,
    #[command(flatten)]
    pub(crate) show: Show,
}

/// Runs `prunus prune` on a checkpoint file (`main` sends model folders
/// to the transformer paths).
pub(crate) fn prune(args: &PruneArgs) -> Result<(), Error> {
    if args.structured.is_some() || args.no_refit {
        return Err(Error::argument(
            if args.no_refit {
                "--no-refit"
            } else {
                "--structured"
            },
            "given",
            "a model folder (config.json, weights, tokenizer.json): structured pruning needs \
             the model's architecture to know what a channel spans",
        ));
    }
    let started = Instant::now();
    let request = request(args)?;
    let spec = BackendSpec::new(args.backend, args.threads);
    spec.check()?;
    let checkpoint = Checkpoint::open(&args.input)?;
    let job = PruneJob {
        checkpoint: &checkpoint,
        output: &args.output,
        options: Options {
            in_place: args.in_place,
            overwrite: args.force,
        },
        request: &request,
        quiet: args.show.quiet || args.show.json,
    };
    let report = dispatch(&spec, job)?;
    let wall = started.elapsed().as_secs_f64();
    if args.show.json {
        println!("{}", prune_json(args, &report, wall));
    } else {
        print_prune(args, &report, wall);
    }
    Ok(())
}

/// Pruning one checkpoint on one backend, with a bar per pass over the file.
struct PruneJob<'a> {
    checkpoint: &'a Checkpoint,
    output: &'a Path,
    options: Options,
    request: &'a Request,
    quiet: bool,
}

impl<'d> BackendJob<'d> for PruneJob<'_> {
    type Output = Report;

    fn run<B: Device<'d>>(self, backend: &B) -> Result<Report, Error> {
        let mut bars = Bars::new(self.quiet);
        let report = prune_file(
            backend,
            self.checkpoint,
            self.output,
            self.options,
            self.request,
            &mut |p| bars.bytes(p),
        );
        bars.clear();
        Ok(report?)
    }
}

/// The library request for `args`, checked.
fn request(args: &PruneArgs) -> Result<Request, Error> {
    let invalid =
        |flag: &'static str, value: String, expected: &str| Error::argument(flag, value, expected);
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
    config = match args.scope.unwrap_or(ScopeKind::Global) {
        ScopeKind::Global => config.global(),
        ScopeKind::Local => config.local(),
    };
    match args.method {
        Method::Magnitude => {}
        Method::Random => config = config.importance(Importance::Random { seed: args.seed }),
        Method::Wanda | Method::Sparsegpt | Method::Obs | Method::Fluctuation | Method::Forward => {
            return Err(invalid(
                "--method",
                format!("{:?}", args.method).to_lowercase(),
                "magnitude or random for a single file; the calibrated methods prune a model \
                 folder (config.json, weights, tokenizer.json), whose model they run",
            ));
        }
    }
    if args.calibration.is_some() {
        return Err(invalid(
            "--calibration",
            "given".into(),
            "a model folder as IN: a single file has no model to run on the text",
        ));
    }
    config = config.min_density(args.min_density);
    check_output("--output", &args.output)?;
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

/// A pruned tensor whose sparsity is further than this from the target
/// stands out.
const FAR_FROM_TARGET: f64 = 0.2;

/// Standouts listed by default; --verbose lists every tensor.
const STANDOUTS_SHOWN: usize = 20;

/// The sparsity `args` aim at: --sparsity, or 1 - N/M for a pattern.
fn target(args: &PruneArgs) -> f64 {
    match (args.sparsity, args.pattern) {
        (Some(s), _) => s,
        (None, Some(p)) => 1.0 - p.n as f64 / p.m as f64,
        (None, None) => 0.0,
    }
}

/// Why a tensor stands out of a run aiming at `target`, with the rank of
/// that reason (fully pruned first) and how far it is from the target.
fn standout(t: &TensorReport, target: f64) -> Option<(u8, f64, String)> {
    if t.kept.is_some() || t.numel == 0 {
        return None;
    }
    let (before, after) = (t.zeros_before?, t.zeros_after?);
    let sparsity = after as f64 / t.numel as f64;
    let off = sparsity - target;
    if after == t.numel && target < 1.0 {
        Some((0, off.abs(), "fully pruned".into()))
    } else if after == before && target > 0.0 {
        Some((1, off.abs(), "untouched (no weight removed)".into()))
    } else if off.abs() > FAR_FROM_TARGET {
        let side = if off > 0.0 { "above" } else { "below" };
        Some((
            2,
            off.abs(),
            format!("{:.1} points {side} target", 100.0 * off.abs()),
        ))
    } else {
        None
    }
}

/// Prints `rows` (a tensor and its note) as a table.
fn print_tensor_table(rows: &[(&TensorReport, String)]) {
    let width = rows
        .iter()
        .map(|(t, _)| t.name.len())
        .max()
        .unwrap_or(4)
        .max(6);
    println!(
        "{:<width$}  {:<18} {:<5} {:>9} {:>9}  note",
        "tensor", "shape", "dtype", "before %", "after %"
    );
    for (t, note) in rows {
        println!(
            "{:<width$}  {:<18} {:<5} {:>9} {:>9}  {note}",
            t.name,
            shape(&t.shape),
            t.dtype.name(),
            percent(t.zeros_before, t.numel),
            percent(t.zeros_after, t.numel),
        );
    }
}

fn print_prune(args: &PruneArgs, report: &Report, wall: f64) {
    let target = target(args);
    let (n, before, after) = report.pruned_totals();
    let pruned = report.tensors.iter().filter(|t| t.kept.is_none()).count();
    let all: u64 = report.tensors.iter().map(|t| t.numel).sum();
    if args.verbose {
        let rows: Vec<(&TensorReport, String)> = report
            .tensors
            .iter()
            .map(|t| {
                let note = match (t.kept, standout(t, target)) {
                    (Some(k), _) => format!("kept ({k})"),
                    (None, Some((_, _, why))) => format!("pruned: {why}"),
                    (None, None) => "pruned".into(),
                };
                (t, note)
            })
            .collect();
        print_tensor_table(&rows);
        println!();
    }
    println!(
        "pruned {pruned} of {} tensors ({n} of {all} elements): sparsity {}% -> {}%",
        report.tensors.len(),
        percent(Some(before), n),
        percent(Some(after), n)
    );
    let mut kept: Vec<(String, usize)> = Vec::new();
    for k in report.tensors.iter().filter_map(|t| t.kept) {
        let k = k.to_string();
        match kept.iter_mut().find(|(name, _)| *name == k) {
            Some((_, count)) => *count += 1,
            None => kept.push((k, 1)),
        }
    }
    if !kept.is_empty() {
        let reasons: Vec<String> = kept.iter().map(|(k, c)| format!("{c} {k}")).collect();
        println!(
            "kept {} tensors as they were: {}",
            report.tensors.len() - pruned,
            reasons.join(", ")
        );
    }
    if !args.verbose {
        let mut stand: Vec<(u8, f64, &TensorReport, String)> = report
            .tensors
            .iter()
            .filter_map(|t| standout(t, target).map(|(rank, off, why)| (rank, off, t, why)))
            .collect();
        // Fully pruned, then untouched, then furthest from the target; ties
        // in file order (the sort is stable).
        stand.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
        if stand.is_empty() {
            println!(
                "no pruned tensor stands out: none fully pruned or untouched, all within {:.0} \
                 points of the {:.2}% target (--verbose lists every tensor)",
                100.0 * FAR_FROM_TARGET,
                100.0 * target
            );
        } else {
            println!(
                "{} of the {pruned} pruned tensors stand out (--verbose lists every tensor):\n",
                stand.len()
            );
            let rows: Vec<(&TensorReport, String)> = stand
                .iter()
                .take(STANDOUTS_SHOWN)
                .map(|(_, _, t, why)| (*t, why.clone()))
                .collect();
            print_tensor_table(&rows);
            if stand.len() > STANDOUTS_SHOWN {
                println!("... and {} more", stand.len() - STANDOUTS_SHOWN);
            }
            println!();
        }
    }
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
        "scope": format!("{:?}", args.scope.unwrap_or(ScopeKind::Global)).to_lowercase(),
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
    let mut bars = Bars::new(args.show.quiet || args.show.json);
    let total: u64 = checkpoint
        .tensors()
        .iter()
        .filter(|t| t.dtype.is_prunable())
        .map(|t| t.len())
        .sum();
    let stats = inspect(&checkpoint, Some(args.pattern), &mut |done| {
        bars.bytes(Progress {
            stage: "read",
            done,
            total,
        })
    });
    bars.clear();
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
            return Err(Error::Nonconforming(format!(
                "{} of the float tensors of rank 2 or more do not conform to {label}; the first \
                 is '{}' ({})",
                failing.len(),
                first.name,
                first.violations.map_or(
                    format!("its rows are not a multiple of {}", p.m),
                    |v| format!("{v} groups hold more than {} non-zeros", p.n)
                )
            )));
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
