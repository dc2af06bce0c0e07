//! `prunus prune MODEL_DIR --structured mlp=F`: whole structures removed
//! from a Hugging Face model folder, written as a smaller dense model.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::Device as CandleDevice;
use prunus_adapters::safetensors::PRUNUS_VERSION;
use prunus_candle::blocks::BlockScore;
use prunus_candle::model::open_graph;
use prunus_candle::pruning::{Progress, Report};
use prunus_candle::structured::{
    StructuredMethod, StructuredSettings, prune_folder_structured, removed_json,
};
use prunus_candle::{FolderWriter, ModelFolder, Structure, WriteSummary};
use serde_json::{Value, json};

use crate::backend::{BackendJob, BackendSpec, Device, dispatch};
use crate::error::Error;
use crate::memory::peak_rss_mib;
use crate::progress::Bars;
use crate::prune_args::{BlockScoreArg, Method, PruneArgs, ScopeKind, StructuredParts};
use crate::transformer::Placement;

/// What `args` ask of a structured pruning, checked before any work.
fn settings(args: &PruneArgs, parts: &StructuredParts) -> Result<StructuredSettings, Error> {
    let method = match args.method {
        Method::Magnitude => StructuredMethod::Magnitude,
        Method::Wanda => StructuredMethod::Wanda,
        Method::Fluctuation => StructuredMethod::Fluctuation,
        Method::Obs => StructuredMethod::Obs,
        Method::Forward => StructuredMethod::Forward,
        Method::Sparsegpt | Method::Random => {
            return Err(Error::argument(
                "--method",
                format!("{:?}", args.method).to_lowercase(),
                "magnitude, wanda, fluctuation, obs or forward with --structured",
            ));
        }
    };
    let refused: [(&'static str, bool, &str); 7] = [
        (
            "--sparsity",
            args.sparsity.is_some(),
            "--structured sets the sizes",
        ),
        (
            "--pattern",
            args.pattern.is_some(),
            "structured and N:M pruning in one call: run them one after the other (prune \
             the structured output again with --pattern)",
        ),
        (
            "--scope",
            args.scope == Some(ScopeKind::Global),
            "widths stay uniform: every block loses the same count",
        ),
        (
            "--block-size",
            args.block_size.is_some(),
            "it is for SparseGPT and unstructured OBS",
        ),
        (
            "--masks",
            args.masks,
            "a structured output has no pruned weights to mask",
        ),
        (
            "--in-place",
            args.in_place,
            "a model folder is never written in place",
        ),
        (
            "--min-density",
            args.min_density > 0.0,
            "it is for unstructured pruning",
        ),
    ];
    for (flag, given, why) in refused {
        if given {
            return Err(Error::argument(
                flag,
                "given",
                format!("not to be given with --structured: {why}"),
            ));
        }
    }
    if args.calibration.is_none() && method.is_calibrated() {
        return Err(Error::argument(
            "--calibration",
            "nothing",
            format!(
                "a UTF-8 text file, one sample per line: structured {} runs the model on it",
                method.name()
            ),
        ));
    }
    let mut map = BTreeMap::new();
    let mut blocks = None;
    let mut experts = None;
    for (name, f) in &parts.0 {
        let structure = match name.as_str() {
            "blocks" => {
                blocks = Some(*f as usize);
                continue;
            }
            "experts" => {
                experts = Some(*f);
                continue;
            }
            "mlp" => Structure::MlpChannels,
            "heads" => Structure::Heads,
            "kv-heads" => Structure::KvGroups,
            other => {
                return Err(Error::argument(
                    "--structured",
                    other,
                    "mlp=F, heads=F or kv-heads=F",
                ));
            }
        };
        map.insert(structure, *f);
    }
    let mut s = StructuredSettings::new(method, map);
    s.blocks = blocks;
    s.experts = experts;
    s.block_score = match args.block_score {
        BlockScoreArg::Influence => BlockScore::Influence,
        BlockScoreArg::Skip => BlockScore::Skip,
    };
    if blocks.is_some() && args.calibration.is_none() {
        return Err(Error::argument(
            "--calibration",
            "nothing",
            "a UTF-8 text file, one sample per line: blocks=N judges each block on it",
        ));
    }
    s.refit = method.is_calibrated() && !args.no_refit;
    s.swaps = args.swaps;
    s.dampening = args.dampening;
    s.check()
        .map_err(|e| Error::argument("--structured", describe(parts), e.to_string()))?;
    Ok(s)
}

fn describe(parts: &StructuredParts) -> String {
    parts
        .0
        .iter()
        .map(|(n, f)| format!("{n}={f}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `prunus prune MODEL_DIR --structured ...`.
pub(crate) fn prune(args: &PruneArgs, parts: &StructuredParts) -> Result<(), Error> {
    let started = Instant::now();
    let settings = settings(args, parts)?;
    let spec = BackendSpec::new(args.backend, args.threads);
    spec.check()?;
    let folder = ModelFolder::open(&args.input)?;
    if args.output.exists() && !args.force {
        return Err(Error::argument(
            "--output",
            args.output.display(),
            "a path that does not exist yet (or --force to replace it)",
        ));
    }
    let device = args.device.open()?;
    let mut graph = open_graph(&folder, &device)?;
    let samples = match &args.calibration {
        Some(path) if settings.method.is_calibrated() || settings.blocks.is_some() => {
            Some(args.calibration_samples(path, &folder, &*graph)?)
        }
        _ => None,
    };
    let writer = FolderWriter::create(&folder, &args.output, args.force)?;
    let job = StructuredJob {
        folder: &folder,
        graph: &mut *graph,
        device: &device,
        samples: samples.as_deref(),
        settings: &settings,
        writer,
        quiet: args.show.quiet || args.show.json,
        threads: args.threads,
    };
    let (report, writer) = dispatch(&spec, job)?;
    let mut metadata = vec![
        ("prunus_version".to_string(), PRUNUS_VERSION.to_string()),
        ("prunus_method".into(), settings.method.name().into()),
        ("prunus_structured".into(), describe(parts)),
        ("prunus_refit".into(), settings.refit.to_string()),
        ("prunus_removed_groups".into(), removed_json(&report)),
    ];
    if let Some(b) = &report.blocks {
        metadata.push(("prunus_block_score".into(), b.score.name().into()));
        metadata.push((
            "prunus_removed_blocks".into(),
            Value::from(b.removed.clone()).to_string(),
        ));
    }
    if let Some(path) = &args.calibration
        && (settings.method.is_calibrated() || settings.blocks.is_some())
    {
        let file = path.file_name().map_or(path.display().to_string(), |f| {
            f.to_string_lossy().into_owned()
        });
        metadata.push(("prunus_calibration".into(), file));
        metadata.push(("prunus_samples".into(), report.samples.to_string()));
        metadata.push(("prunus_dampening".into(), settings.dampening.to_string()));
    }
    let input_bytes = weight_bytes(&folder);
    let summary = writer.finish(&metadata)?;
    let wall = started.elapsed().as_secs_f64();
    let output_bytes = ModelFolder::open(&summary.dir)
        .map(|f| weight_bytes(&f))
        .ok();
    let place = Placement::new(&device, args);
    if args.show.json {
        let mut out = json_report(
            args,
            &settings,
            &report,
            &summary,
            input_bytes,
            output_bytes,
            wall,
        );
        out["device"] = place.device.clone().into();
        out["statistics"] = place.statistics.into();
        out["solves"] = place.solves.into();
        println!("{out}");
    } else {
        print_report(
            &settings,
            &report,
            &summary,
            input_bytes,
            output_bytes,
            wall,
        );
        println!("{}", place.line());
    }
    Ok(())
}

/// Bytes of the folder's safetensors tensors.
fn weight_bytes(folder: &ModelFolder) -> u64 {
    folder
        .names()
        .iter()
        .filter_map(|n| folder.info(n))
        .map(|t| t.len())
        .sum()
}

/// Structured pruning of a model folder on one backend, with a bar per
/// block.
struct StructuredJob<'a, 'f> {
    folder: &'f ModelFolder,
    graph: &'a mut dyn prunus_candle::Graph,
    device: &'a CandleDevice,
    samples: Option<&'a [Vec<u32>]>,
    settings: &'a StructuredSettings,
    writer: FolderWriter<'f>,
    quiet: bool,
    threads: usize,
}

impl<'d, 'f> BackendJob<'d> for StructuredJob<'_, 'f> {
    type Output = (Report, FolderWriter<'f>);

    fn run<B: Device<'d>>(self, backend: &B) -> Result<Self::Output, Error> {
        let StructuredJob {
            folder,
            graph,
            device,
            samples,
            settings,
            mut writer,
            quiet,
            threads,
        } = self;
        let mut bars = Bars::new(quiet);
        let mut block = (0, 0);
        let report = backend.with_dense(threads, |dense, _| {
            Ok(prune_folder_structured(
                dense,
                folder,
                graph,
                device,
                samples,
                settings,
                &mut writer,
                &mut |p| match p {
                    Progress::Block { index, blocks } => {
                        block = (index, blocks);
                        bars.steps("block", index as u64, blocks as u64, String::new());
                    }
                    Progress::Layer { name, .. } => {
                        bars.steps("block", block.0 as u64, block.1 as u64, name.to_string());
                    }
                },
            )?)
        })?;
        bars.clear();
        Ok((report, writer))
    }
}

fn ratio(a: u64, b: Option<u64>) -> Option<f64> {
    b.map(|b| b as f64 / a.max(1) as f64)
}

fn print_report(
    s: &StructuredSettings,
    report: &Report,
    summary: &WriteSummary,
    input_bytes: u64,
    output_bytes: Option<u64>,
    wall: f64,
) {
    let width = report
        .layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<width$}  {:>8} {:>10} {:>8}",
        "layer", "groups", "rel. error", "seconds"
    );
    for l in &report.layers {
        let groups = l.groups.as_ref().map_or("-".into(), |g| {
            format!("{} -> {}", g.before, g.before - g.removed.len())
        });
        println!(
            "{:<width$}  {:>8} {:>10} {:>8.2}",
            l.name,
            groups,
            l.relative_error.map_or("-".into(), |e| format!("{e:.4}")),
            l.seconds
        );
    }
    if let Some(b) = &report.blocks {
        println!(
            "block {} (lowest goes): {}; removed {:?}",
            b.score.name(),
            b.importance
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{i}: {v:.4}"))
                .collect::<Vec<_>>()
                .join(", "),
            b.removed
        );
    }
    println!(
        "\nstructured {} ({}) on {} layers{}; solves {:.1} s, forward {:.1} s",
        s.method.name(),
        match (s.experts, s.method.is_calibrated()) {
            (Some(_), true) => "experts of least output energy, nothing refit",
            (Some(_), false) => "experts of least weight norm, nothing refit",
            (None, _) if s.refit => "kept columns refit",
            (None, _) => "no refit",
        },
        report.layers.len(),
        if report.samples > 0 {
            format!(
                ", calibrated on {} samples ({} tokens)",
                report.samples, report.tokens
            )
        } else {
            String::new()
        },
        report.solve_seconds,
        report.forward_seconds,
    );
    println!(
        "weights {:.2} MB -> {} ({}); wrote {} ({} files) in {wall:.2} s; peak memory {}",
        input_bytes as f64 / 1e6,
        output_bytes.map_or("?".into(), |b| format!("{:.2} MB", b as f64 / 1e6)),
        ratio(input_bytes, output_bytes).map_or("?".into(), |r| format!("{:.1}%", 100.0 * r)),
        summary.dir.display(),
        summary.files,
        peak_rss_mib().map_or("unknown".into(), |m| format!("{m:.0} MiB"))
    );
}

fn json_report(
    args: &PruneArgs,
    s: &StructuredSettings,
    report: &Report,
    summary: &WriteSummary,
    input_bytes: u64,
    output_bytes: Option<u64>,
    wall: f64,
) -> Value {
    json!({
        "input": args.input.display().to_string(),
        "output": summary.dir.display().to_string(),
        "prunus_version": PRUNUS_VERSION,
        "method": s.method.name(),
        "structured": s.parts.iter().map(|(k, v)| (k.name().to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "refit": s.refit,
        "calibration": args.calibration.as_ref().map(|p| p.display().to_string()),
        "samples": report.samples,
        "tokens": report.tokens,
        "layers": report.layers.iter().map(|l| json!({
            "name": l.name,
            "block": l.block,
            "groups_before": l.groups.as_ref().map(|g| g.before),
            "removed": l.groups.as_ref().map(|g| g.removed.clone()),
            "reconstruction_error": l.error,
            "relative_error": l.relative_error,
            "seconds": l.seconds,
        })).collect::<Vec<_>>(),
        "blocks": report.blocks.as_ref().map(|b| json!({
            "score": b.score.name(),
            "importance": b.importance,
            "removed": b.removed,
        })),
        "input_weight_bytes": input_bytes,
        "output_weight_bytes": output_bytes,
        "forward_s": report.forward_seconds,
        "solve_s": report.solve_seconds,
        "wall_s": wall,
        "peak_rss_mib": peak_rss_mib(),
    })
}
