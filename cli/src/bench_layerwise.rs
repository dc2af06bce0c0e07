//! `prunus bench layerwise`: magnitude, Wanda, SparseGPT and layer-wise OBS
//! (blocked and exact) on one linear layer of each shape, with synthetic
//! correlated calibration inputs: time and reconstruction error, method by
//! method, on the same statistics.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use prunus_core::methods::layerwise::{
    LayerStats, ObsConfig, SparseGptConfig, Target, WandaLayer, WandaScope, obs,
    reconstruction_error, sparsegpt, wanda,
};
use prunus_core::{Dense, Granularity, Layer, Mask, Matrix, PruneConfig, Shape, prune};
use prunus_lab::calibration::{correlated_inputs, layer_weights};
use prunus_lab::{Report, Row, write_atomic};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::args::check_output;
use crate::backend::{BackendJob, BackendKind, BackendSpec, Device, dispatch};
use crate::error::Error;
use crate::memory::peak_rss_mib;

/// The layer shapes of a 7B LLaMA-style decoder: attention projections, the
/// MLP's gate and up projections, its down projection.
const SHAPES_7B: [(usize, usize); 3] = [(4096, 4096), (11008, 4096), (4096, 11008)];

/// The layer shapes of all-MiniLM-L6-v2: attention, intermediate, output.
const SHAPES_MINILM: [(usize, usize); 3] = [(384, 384), (1536, 384), (384, 1536)];

/// Arguments of `prunus bench layerwise`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each layer W [OUT, IN] has N(0, 1/IN) weights; its calibration inputs are SAMPLES rows of \
x = S (B z + 0.3 e): z standard normal of rank IN/8, B a fixed normal mixing matrix, e \
noise, S per-feature scales exp(0.75 N(0,1)) with every 64th feature 8x (as hidden states \
of transformers have). Layers of the same IN share their statistics. Every method prunes \
the same weights against the same Gram matrix; the error is ||(W - W') X^T||^2, also given \
relative to ||W X^T||^2.

Exact OBS costs about OUT * IN^3 / 3 multiply-adds (each row's greedy downdates its own \
copy of H^-1); where that exceeds --exact-gflop it runs on the first --exact-rows rows and \
then twice as many (one thread each), and the layer's time is extrapolated from the two as \
setup + OUT * (seconds per row) / threads (marked 'estimate'); its error is then given on \
those rows, next to SparseGPT's on the same rows. Where one row is predicted to take more \
than --exact-row-limit seconds (from the widest layer measured, by the IN^3 law), it is \
not run and the predicted time is shown.

Examples:
  prunus bench layerwise                                 # MiniLM and 7B shapes, 50% and 2:4
  prunus bench layerwise --shapes minilm --json layerwise.json
  prunus bench layerwise --shapes 64x128 --samples 256 --targets 0.7")]
pub(crate) struct LayerwiseArgs {
    /// Layer shapes OUTxIN, comma separated; `7b` and `minilm` name the
    /// three shapes of each model.
    #[arg(long, value_delimiter = ',', default_value = "minilm,7b", value_parser = parse_shapes)]
    pub(crate) shapes: Vec<Vec<(usize, usize)>>,
    /// Real layers instead of synthetic ones: a safetensors file with, per
    /// layer NAME, `NAME.weight [out, in]`, `NAME.gram [in, in]` (the
    /// inputs' XᵀX), `NAME.sum_squares [in]` and `NAME.rows [1]`, as
    /// `bench/layer_stats.py` writes from a BERT model folder and text.
    /// `--shapes`, `--samples` and `--seed` do not apply.
    #[arg(long, value_name = "FILE")]
    pub(crate) stats: Option<PathBuf>,
    /// Calibration rows n.
    #[arg(long, value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) samples: u64,
    /// Targets, comma separated: sparsities (0.5) and N:M patterns (2:4).
    #[arg(long, value_delimiter = ',', default_value = "0.5,2:4", value_parser = parse_target)]
    pub(crate) targets: Vec<Target>,
    /// Methods, comma separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "magnitude,wanda,sparsegpt,obs-blocked,obs"
    )]
    pub(crate) methods: Vec<Method>,
    /// Column block of SparseGPT and blocked OBS.
    #[arg(long, value_name = "B", default_value_t = 128)]
    pub(crate) block: usize,
    /// Swaps per row (and block) after the greedy of both OBS methods.
    #[arg(long, value_name = "K", default_value_t = 8)]
    pub(crate) swaps: usize,
    /// Exact OBS runs on the whole layer up to this many GFLOP (OUT * IN^3
    /// / 3 multiply-adds), else on sample rows and extrapolated.
    #[arg(long, value_name = "G", default_value_t = 200.0)]
    pub(crate) exact_gflop: f64,
    /// Rows of the first sample of an extrapolated exact OBS run (the
    /// second has twice as many).
    #[arg(long, value_name = "R", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) exact_rows: u64,
    /// Exact OBS is not sampled where one row is predicted (from the widest
    /// layer measured, by the in³ law) to take more than this many seconds.
    #[arg(long, value_name = "S", default_value_t = 120.0)]
    pub(crate) exact_row_limit: f64,
    /// Seed of the synthetic weights and inputs.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Dense linear algebra.
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub(crate) backend: BackendKind,
    /// Threads of the CPU backend (0 = all cores).
    #[arg(long, value_name = "T", default_value_t = 0)]
    pub(crate) threads: usize,
    /// Write the JSON report here (atomically).
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
}

/// A method of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Method {
    /// The smallest |W| of the layer (N:M: of each group); no update.
    Magnitude,
    /// |W_ij| ||X_j|| compared within rows; no update.
    Wanda,
    /// The official algorithm with exact counts, blocks of --block.
    Sparsegpt,
    /// Layer-wise OBS within column blocks of --block (the cheaper setting).
    ObsBlocked,
    /// Exact layer-wise OBS: greedy per row over the whole row, OBC's
    /// allocation across rows, swaps.
    Obs,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Magnitude => "magnitude",
            Method::Wanda => "wanda",
            Method::Sparsegpt => "sparsegpt",
            Method::ObsBlocked => "obs-blocked",
            Method::Obs => "obs",
        }
    }
}

fn parse_shapes(s: &str) -> Result<Vec<(usize, usize)>, String> {
    match s.trim() {
        "7b" => Ok(SHAPES_7B.to_vec()),
        "minilm" => Ok(SHAPES_MINILM.to_vec()),
        shape => {
            let bad = || format!("'{s}' is not a shape OUTxIN such as 384x1536, nor 7b or minilm");
            let (out, cols) = shape.split_once('x').ok_or_else(bad)?;
            let out: usize = out.trim().parse().map_err(|_| bad())?;
            let cols: usize = cols.trim().parse().map_err(|_| bad())?;
            if out == 0 || cols == 0 {
                return Err(bad());
            }
            Ok(vec![(out, cols)])
        }
    }
}

fn parse_target(s: &str) -> Result<Target, String> {
    if s.contains(':') {
        crate::args::parse_pattern(s).map(Target::NofM)
    } else {
        crate::args::parse_sparsity(s).map(Target::Sparsity)
    }
}

/// A target as the report names it: `50%` or `2:4`.
fn target_name(t: Target) -> String {
    match t {
        Target::NofM(p) => format!("{}:{}", p.n, p.m),
        Target::Sparsity(s) => format!("{}%", s * 100.0),
        _ => format!("{t:?}"),
    }
}

/// `v` to three significant digits.
fn significant(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

/// One measured (method, layer, target).
struct Measured {
    method: &'static str,
    /// `OUTxIN` for a synthetic layer, the tensor's name from `--stats`.
    layer: String,
    target: Target,
    wall_s: f64,
    /// `‖(W − Ŵ) Xᵀ‖²` and the same over `‖W Xᵀ‖²`.
    error: Option<(f64, f64)>,
    /// An extrapolated exact OBS run.
    estimate: Option<Estimate>,
}

struct Estimate {
    /// Rows measured (0: predicted from a narrower layer, not run).
    rows: usize,
    /// Seconds per row on one thread.
    per_row: f64,
    /// Relative errors of exact OBS and SparseGPT on the measured rows.
    errors: Option<(f64, f64)>,
}

/// Runs `prunus bench layerwise`.
pub(crate) fn layerwise(args: &LayerwiseArgs) -> Result<(), Error> {
    if let Some(p) = &args.json {
        check_output("--json", p)?;
    }
    if args.block == 0 {
        return Err(Error::argument(
            "--block",
            0,
            "a block of at least one column",
        ));
    }
    let shapes: Vec<(usize, usize)> = args.shapes.iter().flatten().copied().collect();
    let file_layers = args.stats.as_deref().map(read_stats).transpose()?;
    let widths: Vec<usize> = match &file_layers {
        Some(layers) => layers.iter().map(|l| l.cols).collect(),
        None => shapes.iter().map(|&(_, cols)| cols).collect(),
    };
    for &cols in &widths {
        for &t in &args.targets {
            t.validate("the benchmark layer", cols)?;
            if let Target::NofM(p) = t
                && !args.block.is_multiple_of(p.m)
            {
                return Err(Error::argument(
                    "--block",
                    args.block,
                    format!("a multiple of {} for the {}:{} target", p.m, p.n, p.m),
                ));
            }
        }
    }
    let spec = BackendSpec::new(args.backend, args.threads);
    let source = match &file_layers {
        Some(layers) => Source::File(layers),
        None => Source::Synthetic(&shapes),
    };
    let job = LayerwiseJob { args, source };
    let (measured, threads) = dispatch(&spec, job)?;
    let peak = peak_rss_mib();
    let inputs = match (&file_layers, &args.stats) {
        (Some(layers), Some(path)) => format!(
            "{} layers from {} ({} calibration rows in the first)",
            layers.len(),
            path.display(),
            layers.first().map_or(0, |l| l.stats.rows())
        ),
        _ => format!("{} synthetic calibration rows", args.samples),
    };
    println!(
        "\n{inputs}, {} ({threads} threads); error ||(W - W') X^T||^2 relative to \
         ||W X^T||^2; peak RSS {}\n",
        args.backend.name(),
        peak.map_or("n/a".into(), |p| format!("{p:.0} MiB"))
    );
    println!("| layer | target | method | relative error | wall s |");
    println!("|---|---|---|---|---|");
    for m in &measured {
        let error = match (&m.error, &m.estimate) {
            (Some((_, rel)), _) => significant(*rel),
            (None, Some(e)) => match e.errors {
                Some((obs, sgpt)) => format!(
                    "{} on {} rows (SparseGPT {})",
                    significant(obs),
                    e.rows,
                    significant(sgpt)
                ),
                None => "not run".into(),
            },
            (None, None) => "n/a".into(),
        };
        let wall = if let Some(e) = &m.estimate {
            let how = if e.rows == 0 { "predicted" } else { "estimate" };
            format!("{:.0} ({how}; {:.1} per row)", m.wall_s, e.per_row)
        } else {
            format!("{:.3}", m.wall_s)
        };
        println!(
            "| {} | {} | {} | {error} | {wall} |",
            m.layer,
            target_name(m.target),
            m.method
        );
    }
    if let Some(path) = &args.json {
        let dataset = match &args.stats {
            Some(path) => path.display().to_string(),
            None => "synthetic".into(),
        };
        let mut report = Report::new("bench-layerwise", &dataset, vec![args.seed]);
        report.set_config("samples", args.samples);
        report.set_config("block", args.block as u64);
        report.set_config("threads", threads as u64);
        report.set_config("backend", args.backend.name());
        report.set_config("exact_gflop", args.exact_gflop);
        report.set_config("swaps", args.swaps as u64);
        for m in &measured {
            let row = |metric: &str, v: f64| -> Result<Row, Error> {
                let mut row = Row::new(m.method, metric, vec![v])?
                    .layer(m.layer.clone())
                    .task(target_name(m.target));
                if let Target::Sparsity(s) = m.target {
                    row = row.sparsity(s);
                }
                Ok(row)
            };
            match (&m.error, &m.estimate) {
                (Some((abs, rel)), _) => {
                    report.push(row("reconstruction_error", *abs)?);
                    report.push(row("relative_error", *rel)?);
                    report.push(row("wall_s", m.wall_s)?);
                }
                (None, Some(e)) => {
                    report.push(row("wall_s_estimate", m.wall_s)?);
                    report.push(row("row_s", e.per_row)?);
                    report.push(row("sample_rows", e.rows as f64)?);
                    if let Some((obs, sgpt)) = e.errors {
                        report.push(row("relative_error_sample_rows", obs)?);
                        report.push(row("sparsegpt_relative_error_sample_rows", sgpt)?);
                    }
                }
                (None, None) => report.push(row("wall_s", m.wall_s)?),
            }
        }
        if let Some(p) = peak {
            report.push(Row::new("process", "peak_rss_mb", vec![p])?);
        }
        write_atomic(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The benchmark on one backend.
struct LayerwiseJob<'a> {
    args: &'a LayerwiseArgs,
    source: Source<'a>,
}

/// Where the benchmark's layers come from.
enum Source<'a> {
    /// Synthetic layers of these shapes `(out, in)`.
    Synthetic(&'a [(usize, usize)]),
    /// Real layers read by [`read_stats`].
    File(&'a [FileLayer]),
}

/// One layer of a `--stats` file.
struct FileLayer {
    name: String,
    cols: usize,
    weights: Vec<f32>,
    stats: LayerStats,
}

impl<'d> BackendJob<'d> for LayerwiseJob<'_> {
    type Output = (Vec<Measured>, usize);

    fn run<B: Device<'d>>(self, backend: &B) -> Result<Self::Output, Error> {
        let LayerwiseJob { args, source } = self;
        backend.with_dense(args.threads, |dense, threads| {
            let mut measured = Vec::new();
            let mut exact_rate = None;
            let mut layer = |name: String, w32: &[f32], cols: usize, stats: &LayerStats| {
                let w = Matrix::from_f32(w32.len() / cols, cols, w32)?;
                let baseline = output_energy(dense, &w, stats)?;
                for &target in &args.targets {
                    for &method in &args.methods {
                        let mut m = measure(
                            backend,
                            dense,
                            args,
                            method,
                            target,
                            w32,
                            &w,
                            stats,
                            baseline,
                            threads,
                            &mut exact_rate,
                        )?;
                        m.layer.clone_from(&name);
                        eprintln!(
                            "{name} {} {}: {:.3} s{}",
                            target_name(target),
                            m.method,
                            m.wall_s,
                            m.error
                                .map(|(_, r)| format!(", relative error {r:.4}"))
                                .unwrap_or_default()
                        );
                        measured.push(m);
                    }
                }
                Ok::<(), Error>(())
            };
            match source {
                Source::Synthetic(shapes) => {
                    // Layers of the same width share their statistics.
                    let mut cache: BTreeMap<usize, LayerStats> = BTreeMap::new();
                    for &(out, cols) in shapes {
                        let stats = match cache.entry(cols) {
                            Entry::Occupied(e) => e.into_mut(),
                            Entry::Vacant(e) => {
                                let t = Instant::now();
                                let n = args.samples as usize;
                                let x = correlated_inputs(dense, n, cols, args.seed + 1)?;
                                let mut s = LayerStats::new(cols, true)?;
                                s.push_with(dense, &x, n)?;
                                eprintln!(
                                    "statistics of {n} x {cols} inputs in {:.1} s",
                                    t.elapsed().as_secs_f64()
                                );
                                e.insert(s)
                            }
                        };
                        let w32 = layer_weights(out, cols, args.seed);
                        layer(format!("{out}x{cols}"), &w32, cols, stats)?;
                    }
                }
                Source::File(layers) => {
                    for l in layers {
                        layer(l.name.clone(), &l.weights, l.cols, &l.stats)?;
                    }
                }
            }
            Ok((measured, threads))
        })
    }
}

/// Reads the layers of a `--stats` file (see [`LayerwiseArgs::stats`]), in
/// the order of their names.
fn read_stats(path: &Path) -> Result<Vec<FileLayer>, Error> {
    let bad = |what: String| {
        Error::argument(
            "--stats",
            path.display(),
            format!("a statistics file as bench/layer_stats.py writes it; {what}"),
        )
    };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("it cannot be read: {e}")))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("it is not a safetensors file: {e}")))?;
    let mut names: Vec<String> = file
        .names()
        .into_iter()
        .filter_map(|n| n.strip_suffix(".gram").map(str::to_string))
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(bad("it has no NAME.gram tensor".into()));
    }
    let mut layers = Vec::with_capacity(names.len());
    for name in names {
        let tensor = |suffix: &str| {
            let key = format!("{name}.{suffix}");
            match file.tensor(&key) {
                Ok(t) => Ok((key, t)),
                Err(_) => Err(bad(format!("{key} is missing"))),
            }
        };
        let (key, weight) = tensor("weight")?;
        let &[out, cols] = weight.shape() else {
            return Err(bad(format!(
                "{key} has shape {:?}, not [out, in]",
                weight.shape()
            )));
        };
        if out == 0 || cols == 0 {
            return Err(bad(format!("{key} is empty")));
        }
        let weights: Vec<f32> = floats(&key, &weight)
            .map_err(&bad)?
            .iter()
            .map(|&v| v as f32)
            .collect();
        let (key, gram) = tensor("gram")?;
        if gram.shape() != [cols, cols] {
            return Err(bad(format!(
                "{key} has shape {:?}, not [{cols}, {cols}]",
                gram.shape()
            )));
        }
        let gram = Matrix::new(cols, cols, floats(&key, &gram).map_err(&bad)?)?;
        let (key, sums) = tensor("sum_squares")?;
        if sums.shape() != [cols] {
            return Err(bad(format!(
                "{key} has shape {:?}, not [{cols}]",
                sums.shape()
            )));
        }
        let sums = floats(&key, &sums).map_err(&bad)?;
        let (key, rows) = tensor("rows")?;
        let rows = match <[u8; 8]>::try_from(rows.data()) {
            Ok(b) if rows.dtype() == Dtype::I64 && rows.shape() == [1] => i64::from_le_bytes(b),
            _ => return Err(bad(format!("{key} is not one i64"))),
        };
        if rows <= 0 {
            return Err(bad(format!("{key} is {rows}: no calibration rows")));
        }
        let stats = LayerStats::from_sums(rows as u64, sums, Some(gram))
            .map_err(|e| bad(format!("{name}: {e}")))?;
        layers.push(FileLayer {
            name,
            cols,
            weights,
            stats,
        });
    }
    Ok(layers)
}

/// The values of an F32 or F64 tensor, as f64.
fn floats(key: &str, t: &TensorView<'_>) -> Result<Vec<f64>, String> {
    let data = t.data();
    match t.dtype() {
        Dtype::F32 => Ok(data
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect()),
        Dtype::F64 => Ok(data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect()),
        other => Err(format!("{key} is {other:?}; F32 or F64 expected")),
    }
}

/// Runs one method on one layer and target.
#[allow(clippy::too_many_arguments)]
fn measure<'d, B: Device<'d>>(
    backend: &B,
    dense: &dyn Dense,
    args: &LayerwiseArgs,
    method: Method,
    target: Target,
    w32: &[f32],
    w: &Matrix,
    stats: &LayerStats,
    baseline: f64,
    threads: usize,
    exact_rate: &mut Option<(usize, f64)>,
) -> Result<Measured, Error> {
    let (out, cols) = (w.rows(), w.cols());
    let done = |wall_s: f64, pruned: &Matrix| -> Result<Measured, Error> {
        let abs = reconstruction_error(dense, w, pruned, stats)?;
        Ok(Measured {
            method: method.name(),
            layer: String::new(),
            target,
            wall_s,
            error: Some((abs, abs / baseline)),
            estimate: None,
        })
    };
    let t = Instant::now();
    match method {
        Method::Magnitude | Method::Wanda => {
            let shape = Shape::matrix(out, cols)?;
            let tensor = backend.upload(w32, &shape)?;
            let mask = if method == Method::Magnitude {
                let config = match target {
                    Target::NofM(p) => PruneConfig::new(0.0).granularity(Granularity::NofM(p)),
                    Target::Sparsity(s) => PruneConfig::new(s),
                    _ => return Err(Error::argument("--targets", "?", "a sparsity or N:M")),
                };
                prune(backend, &[Layer::new("layer", &tensor)], &config)?
            } else {
                let layer = WandaLayer {
                    name: "layer",
                    weights: &tensor,
                    stats,
                };
                wanda(backend, &[layer], target, WandaScope::Row)?
            };
            let wall = t.elapsed().as_secs_f64();
            done(wall, &masked(w, &mask[0]))
        }
        Method::Sparsegpt => {
            let config = SparseGptConfig::new(target).block(args.block);
            let p = sparsegpt(dense, w, stats, &config)?;
            done(t.elapsed().as_secs_f64(), &p.weights)
        }
        Method::ObsBlocked => {
            let config = ObsConfig::new(target)
                .block(Some(args.block))
                .swaps(args.swaps);
            let p = obs(dense, w, stats, &config)?;
            done(t.elapsed().as_secs_f64(), &p.weights)
        }
        Method::Obs => {
            let config = ObsConfig::new(target).swaps(args.swaps);
            let gflop = out as f64 * (cols as f64).powi(3) / 3.0 / 1e9;
            let first = (args.exact_rows as usize).min(out);
            if gflop <= args.exact_gflop || 2 * first >= out {
                let p = obs(dense, w, stats, &config)?;
                return done(t.elapsed().as_secs_f64(), &p.weights);
            }
            let estimate =
                |per_row: f64, setup: f64, rows: usize, errors: Option<(f64, f64)>| Measured {
                    method: method.name(),
                    layer: String::new(),
                    target,
                    wall_s: setup + per_row * out as f64 / threads as f64,
                    error: None,
                    estimate: Some(Estimate {
                        rows,
                        per_row,
                        errors,
                    }),
                };
            // A row of this width predicted from the widest one measured,
            // by the greedy's in³ law: past the limit, it is not run.
            if let Some((c0, s0)) = *exact_rate {
                let predicted = s0 * (cols as f64 / c0 as f64).powi(3);
                if predicted > args.exact_row_limit {
                    return Ok(estimate(predicted, 0.0, 0, None));
                }
            }
            // Two samples of rows, each one task (serial): the time per row
            // and the shared setup (H, its inverse factor) from their
            // difference; the layer's rows then share the threads.
            let rows = |r: usize| Matrix::new(r, cols, w.data()[..r * cols].to_vec());
            let small = rows(first)?;
            let t1 = Instant::now();
            obs(dense, &small, stats, &config)?;
            let s1 = t1.elapsed().as_secs_f64();
            let sample = rows(2 * first)?;
            let t2 = Instant::now();
            let p = obs(dense, &sample, stats, &config)?;
            let s2 = t2.elapsed().as_secs_f64();
            let per_row = ((s2 - s1) / first as f64).max(0.0);
            let setup = (s1 - per_row * first as f64).max(0.0);
            if exact_rate.is_none_or(|(c0, _)| cols >= c0) {
                *exact_rate = Some((cols, per_row));
            }
            let sample_energy = output_energy(dense, &sample, stats)?;
            let obs_error = reconstruction_error(dense, &sample, &p.weights, stats)?;
            let sgpt = sparsegpt(
                dense,
                &sample,
                stats,
                &SparseGptConfig::new(target).block(args.block),
            )?;
            let sgpt_error = reconstruction_error(dense, &sample, &sgpt.weights, stats)?;
            Ok(estimate(
                per_row,
                setup,
                2 * first,
                Some((obs_error / sample_energy, sgpt_error / sample_energy)),
            ))
        }
    }
}

/// `W` with the pruned weights set to `+0.0`.
fn masked(w: &Matrix, mask: &Mask) -> Matrix {
    let mut m = w.clone();
    for (i, v) in m.data_mut().iter_mut().enumerate() {
        if !mask.get(i) {
            *v = 0.0;
        }
    }
    m
}

/// `‖W Xᵀ‖²`: the layer's output energy on the calibration inputs, the
/// scale errors are given relative to (the error of pruning every weight).
fn output_energy(dense: &dyn Dense, w: &Matrix, stats: &LayerStats) -> Result<f64, Error> {
    let nothing = Matrix::zeros(w.rows(), w.cols());
    Ok(reconstruction_error(dense, w, &nothing, stats)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prunus_core::NofM;

    #[test]
    fn shapes_and_targets_parse() {
        assert_eq!(parse_shapes("7b").unwrap().len(), 3);
        assert_eq!(parse_shapes("64x128").unwrap(), [(64, 128)]);
        assert!(parse_shapes("64x").is_err());
        assert!(parse_shapes("0x4").is_err());
        assert_eq!(parse_target("0.5").unwrap(), Target::Sparsity(0.5));
        assert_eq!(parse_target("2:4").unwrap(), Target::NofM(NofM::TWO_FOUR));
        assert!(parse_target("1.5").is_err());
        assert_eq!(target_name(Target::Sparsity(0.5)), "50%");
        assert_eq!(significant(0.000351), "0.000351");
        assert_eq!(significant(0.0713), "0.0713");
        assert_eq!(significant(1.5), "1.50");
    }
}
