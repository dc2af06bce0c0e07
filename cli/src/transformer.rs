//! `prunus prune MODEL_DIR` and `prunus eval`: Hugging Face model folders
//! (BERT encoders; llama, mistral, qwen2, qwen3, gemma2, gemma3_text and
//! phi3 decoders) run on candle,
//! pruned block by block on calibration text and measured on other text.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device as CandleDevice;
use clap::Args;
use prunus_adapters::safetensors::{Filter, PRUNUS_VERSION};
use prunus_candle::bert::SentencePooling;
use prunus_candle::calibration::{read_lines, stream};
use prunus_candle::device::device_name;
use prunus_candle::eval::{agreement, decoder_speed, sentence_embeddings};
use prunus_candle::llama::perplexity;
use prunus_candle::model::{DECODER_SEQ_LEN, open_graph, sentence_len, token_samples};
use prunus_candle::pruning::{
    Job, LayerReport, Method as LayerMethod, Progress, Report, Settings, prune_folder,
};
use prunus_candle::{Family, FolderWriter, Graph, ModelFolder, StatsPlace, WriteSummary};
use prunus_core::methods::layerwise::Target;
use serde_json::{Value, json};

use crate::backend::{BackendJob, BackendSpec, Device, dispatch};
use crate::error::Error;
use crate::memory::peak_rss_mib;
use crate::progress::Bars;
use crate::prune_args::{ComputeDevice, Method, PruneArgs, ScopeKind, parse_device};

/// What `args` ask of a model folder, checked before any work.
fn settings(args: &PruneArgs) -> Result<Settings, Error> {
    let method = match args.method {
        Method::Magnitude => LayerMethod::Magnitude,
        Method::Wanda => LayerMethod::Wanda,
        Method::Sparsegpt => LayerMethod::SparseGpt,
        Method::Obs => LayerMethod::Obs,
        Method::Fluctuation | Method::Forward => {
            return Err(Error::argument(
                "--method",
                format!("{:?}", args.method).to_lowercase(),
                "magnitude, wanda, sparsegpt or obs without --structured (fluctuation and \
                 forward choose whole structures: give --structured mlp=F)",
            ));
        }
        Method::Random => {
            return Err(Error::argument(
                "--method",
                "random",
                "magnitude, wanda, sparsegpt or obs for a model folder (random scores are for \
                 single .safetensors files)",
            ));
        }
    };
    let target = match (args.sparsity, args.pattern) {
        (Some(s), None) => Target::Sparsity(s),
        (None, Some(p)) => Target::NofM(p),
        (Some(s), Some(_)) => {
            return Err(Error::argument(
                "--sparsity",
                s,
                "no sparsity with --pattern, which fixes it",
            ));
        }
        (None, None) => {
            return Err(Error::argument(
                "--sparsity",
                "nothing",
                "a fraction in [0, 1], or an N:M --pattern",
            ));
        }
    };
    if args.no_refit {
        return Err(Error::argument(
            "--no-refit",
            "given",
            "only with --structured (unstructured methods keep their own weight updates)",
        ));
    }
    for (flag, given) in [
        ("--masks", args.masks),
        ("--in-place", args.in_place),
        ("--min-density", args.min_density > 0.0),
    ] {
        if given {
            return Err(Error::argument(
                flag,
                "given",
                "not to be given for a model folder (single .safetensors files only)",
            ));
        }
    }
    if args.calibration.is_none() && method.is_calibrated() {
        return Err(Error::argument(
            "--calibration",
            "nothing",
            format!(
                "a UTF-8 text file, one sample per line: {} runs the model on it",
                method.name()
            ),
        ));
    }
    let mut s = Settings::new(method, target);
    s.global = args.scope == Some(ScopeKind::Global);
    s.block = args.block_size;
    s.dampening = args.dampening;
    s.swaps = args.swaps;
    s.check()
        .map_err(|e| Error::argument("--method", method.name(), e.to_string()))?;
    Ok(s)
}

/// Runs `prunus prune` on a model folder.
pub(crate) fn prune(args: &PruneArgs) -> Result<(), Error> {
    let started = Instant::now();
    let settings = settings(args)?;
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
    let filter = Filter::new(args.include.as_deref(), args.exclude.as_deref())?;
    let samples = match &args.calibration {
        Some(path) => Some(args.calibration_samples(path, &folder, &*graph)?),
        None => None,
    };
    let writer = FolderWriter::create(&folder, &args.output, args.force)?;
    let job = FolderJob {
        folder: &folder,
        graph: &mut *graph,
        samples: samples.as_deref(),
        settings: &settings,
        filter: &filter,
        device: &device,
        writer,
        quiet: args.show.quiet || args.show.json,
        threads: args.threads,
    };
    let (report, writer) = dispatch(&spec, job)?;
    let metadata = metadata(args, &settings, &report);
    let summary = writer.finish(&metadata)?;
    let wall = started.elapsed().as_secs_f64();
    let family = graph.family();
    let place = Placement::new(&device, args);
    if args.show.json {
        println!(
            "{}",
            prune_json(args, &settings, family, &report, &summary, &place, wall)
        );
    } else {
        print_prune(args, &settings, family, &report, &summary, &place, wall);
    }
    Ok(())
}

/// Where a model folder's pruning ran: candle's device for the forward and
/// the statistics, the backend for the solves.
pub(crate) struct Placement {
    /// The candle device (`cpu`, `cuda:0`, ...).
    pub(crate) device: String,
    /// Where the statistics accumulated, and in which precision.
    pub(crate) statistics: &'static str,
    /// The backend of the solves (and Wanda's masks).
    pub(crate) solves: &'static str,
}

impl Placement {
    pub(crate) fn new(device: &CandleDevice, args: &PruneArgs) -> Placement {
        Placement {
            device: device_name(device),
            statistics: if device.is_cpu() {
                "host, f64"
            } else {
                "device, f32 folded into f64 every 65,536 rows"
            },
            solves: args.backend.name(),
        }
    }

    /// The line the text report prints.
    pub(crate) fn line(&self) -> String {
        format!(
            "ran on {}: forward and statistics ({}) there, solves on the {} backend",
            self.device, self.statistics, self.solves
        )
    }
}

/// Pruning a model folder on one backend, with a bar per block.
struct FolderJob<'a, 'f> {
    folder: &'f ModelFolder,
    graph: &'a mut dyn Graph,
    samples: Option<&'a [Vec<u32>]>,
    settings: &'a Settings,
    filter: &'a Filter,
    device: &'a CandleDevice,
    writer: FolderWriter<'f>,
    quiet: bool,
    threads: usize,
}

impl<'d, 'f> BackendJob<'d> for FolderJob<'_, 'f> {
    type Output = (Report, FolderWriter<'f>);

    fn run<B: Device<'d>>(self, backend: &B) -> Result<Self::Output, Error> {
        let FolderJob {
            folder,
            graph,
            samples,
            settings,
            filter,
            device,
            mut writer,
            quiet,
            threads,
        } = self;
        let wanted = |name: &str| filter.admits(&format!("{name}.weight"));
        let mut bars = Bars::new(quiet);
        let mut block = (0, 0);
        let report = backend.with_dense(threads, |dense, _| {
            let job = Job {
                backend,
                dense,
                device,
                wanted: &wanted,
                stats: StatsPlace::Auto,
            };
            Ok(prune_folder(
                &job,
                folder,
                graph,
                samples,
                settings,
                &mut writer,
                &mut |p| match p {
                    Progress::Block { index, blocks } => {
                        block = (index, blocks);
                        bars.steps("block", index as u64, blocks as u64, String::new());
                    }
                    Progress::Layer { name, done, of } => {
                        let message = format!("{name} ({done}/{of})");
                        if block.1 == 0 {
                            bars.steps("layer", done as u64, of as u64, message);
                        } else {
                            bars.steps("block", block.0 as u64, block.1 as u64, message);
                        }
                    }
                },
            )?)
        })?;
        bars.clear();
        Ok((report, writer))
    }
}

fn target_name(target: Target) -> String {
    match target {
        Target::NofM(p) => format!("{}:{}", p.n, p.m),
        Target::Sparsity(s) => format!("{s}"),
        other => format!("{other:?}"),
    }
}

/// prunus's settings, recorded in every weight file's metadata.
fn metadata(args: &PruneArgs, s: &Settings, report: &Report) -> Vec<(String, String)> {
    let mut m = vec![
        ("prunus_version", PRUNUS_VERSION.to_string()),
        ("prunus_method", s.method.name().to_string()),
        ("prunus_target", target_name(s.target)),
        (
            "prunus_scope",
            if s.global { "global" } else { "layer" }.to_string(),
        ),
        ("prunus_layers", report.layers.len().to_string()),
    ];
    if let Some(path) = &args.calibration {
        let file = path.file_name().map_or(path.display().to_string(), |f| {
            f.to_string_lossy().into_owned()
        });
        m.push(("prunus_calibration", file));
        m.push(("prunus_samples", report.samples.to_string()));
        m.push(("prunus_tokens", report.tokens.to_string()));
        m.push(("prunus_dampening", s.dampening.to_string()));
        match s.method {
            LayerMethod::SparseGpt => {
                m.push(("prunus_block_size", s.block.unwrap_or(128).to_string()));
            }
            LayerMethod::Obs => {
                m.push((
                    "prunus_block_size",
                    s.block.map_or("exact".into(), |b| b.to_string()),
                ));
                m.push(("prunus_swaps", s.swaps.to_string()));
            }
            _ => {}
        }
    }
    if let Some(i) = &args.include {
        m.push(("prunus_include", i.clone()));
    }
    if let Some(e) = &args.exclude {
        m.push(("prunus_exclude", e.clone()));
    }
    m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn totals(report: &Report) -> (u64, u64) {
    let n = report
        .layers
        .iter()
        .map(|l| (l.shape[0] * l.shape[1]) as u64)
        .sum();
    let pruned = report.layers.iter().map(|l| l.pruned).sum();
    (pruned, n)
}

fn print_prune(
    args: &PruneArgs,
    s: &Settings,
    family: Family,
    report: &Report,
    summary: &WriteSummary,
    place: &Placement,
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
        "{:<width$}  {:<12} {:>8} {:>10} {:>8} {:>8}",
        "layer", "shape", "pruned %", "rel. error", "tokens", "seconds"
    );
    for l in &report.layers {
        println!(
            "{:<width$}  {:<12} {:>8.2} {:>10} {:>8} {:>8.2}",
            l.name,
            format!("[{}, {}]", l.shape[0], l.shape[1]),
            percent(l.pruned, (l.shape[0] * l.shape[1]) as u64),
            l.relative_error.map_or("-".into(), |e| format!("{e:.4}")),
            l.inputs.map_or("-".into(), |t| t.to_string()),
            l.seconds
        );
    }
    let (pruned, n) = totals(report);
    println!(
        "\n{} pruned {} linear layers of the {}: {pruned} of {n} weights ({:.2}%), target {}{}",
        s.method.name(),
        report.layers.len(),
        match family {
            Family::Encoder => "encoder's blocks",
            Family::Decoder => "decoder's blocks",
        },
        percent(pruned, n),
        target_name(s.target),
        if s.global {
            " over all of them"
        } else {
            " in each"
        },
    );
    if report.samples > 0 {
        let errors: Vec<f64> = report
            .layers
            .iter()
            .filter_map(|l| l.relative_error)
            .collect();
        let mean = errors.iter().sum::<f64>() / errors.len().max(1) as f64;
        println!(
            "calibrated on {} samples ({} tokens) of {}: forward {:.1} s ({:.0} calibration \
             tokens/s through the dense and the pruned blocks), solves {:.1} s; mean relative reconstruction error {mean:.4}; \
             statistics held at most {:.1} MiB",
            report.samples,
            report.tokens,
            args.calibration
                .as_deref()
                .map_or("-".into(), |p| p.display().to_string()),
            report.forward_seconds,
            report.tokens as f64 / report.forward_seconds.max(1e-9),
            report.solve_seconds,
            report.stats_bytes as f64 / (1 << 20) as f64,
        );
        if report.unreached() > 0 {
            println!(
                "{} expert layers saw no calibration token (the router sent none there): \
                 pruned by magnitude",
                report.unreached()
            );
        }
    }
    match report.device_bytes {
        Some(b) => println!(
            "{}; GPU memory in use after each block's recording at most {:.0} MiB",
            place.line(),
            b as f64 / (1 << 20) as f64
        ),
        None => println!("{}", place.line()),
    }
    println!(
        "wrote {} ({} files, {:.3} GB, {} tensors replaced) in {wall:.2} s; peak memory {}",
        summary.dir.display(),
        summary.files,
        summary.bytes as f64 / 1e9,
        summary.tensors_replaced,
        peak_rss_mib().map_or("unknown".into(), |m| format!("{m:.0} MiB"))
    );
    for w in &summary.unpruned_weights {
        println!(
            "note: {} was copied as it is (prunus does not read it as part of the model)",
            w.display()
        );
    }
}

fn layer_json(l: &LayerReport) -> Value {
    json!({
        "name": l.name,
        "block": l.block,
        "shape": l.shape,
        "pruned": l.pruned,
        "sparsity": l.pruned as f64 / (l.shape[0] * l.shape[1]).max(1) as f64,
        "reconstruction_error": l.error,
        "relative_error": l.relative_error,
        "seconds": l.seconds,
        "calibration_tokens": l.inputs,
    })
}

fn prune_json(
    args: &PruneArgs,
    s: &Settings,
    family: Family,
    report: &Report,
    summary: &WriteSummary,
    place: &Placement,
    wall: f64,
) -> Value {
    let (pruned, n) = totals(report);
    json!({
        "device": place.device,
        "statistics": place.statistics,
        "solves": place.solves,
        "input": args.input.display().to_string(),
        "output": summary.dir.display().to_string(),
        "prunus_version": PRUNUS_VERSION,
        "family": format!("{family:?}").to_lowercase(),
        "method": s.method.name(),
        "target": target_name(s.target),
        "scope": if s.global { "global" } else { "layer" },
        "calibration": args.calibration.as_ref().map(|p| p.display().to_string()),
        "samples": report.samples,
        "tokens": report.tokens,
        "block_size": s.block,
        "dampening": s.dampening,
        "layers": report.layers.iter().map(layer_json).collect::<Vec<_>>(),
        "unreached_layers": report.unreached(),
        "pruned_weights": pruned,
        "layer_weights": n,
        "forward_s": report.forward_seconds,
        "solve_s": report.solve_seconds,
        "stats_bytes": report.stats_bytes,
        "device_memory_mib": report.device_bytes.map(|b| b as f64 / (1 << 20) as f64),
        "files_written": summary.files,
        "bytes_written": summary.bytes,
        "tensors_replaced": summary.tensors_replaced,
        "wall_s": wall,
        "peak_rss_mib": peak_rss_mib(),
    })
}

/// Arguments of `prunus eval`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
A decoder (llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3) is \
measured by its perplexity on the text: \
the lines' tokens one after another (each line followed by a newline), cut \
into non-overlapping windows of --seq-len tokens, every token of a window \
but its first predicted. With --reference, the reference's perplexity on the \
same windows is given beside it.

An encoder (bert) is measured against --reference (required): each line is \
one sentence, embedded by both models (mean pooling over the tokens, L2-normalised, \
as the folder's 1_Pooling/config.json and modules.json say); prunus reports \
the mean and smallest cosine between the two embeddings of a sentence, and \
how often each sentence's nearest neighbour among the others stays the same.")]
pub(crate) struct EvalArgs {
    /// The model folder to measure (config.json, weights, tokenizer.json).
    #[arg(value_name = "MODEL_DIR")]
    pub(crate) model: PathBuf,
    /// UTF-8 text, one sample per line (use lines the model was not
    /// calibrated on).
    #[arg(long, value_name = "FILE")]
    pub(crate) text: PathBuf,
    /// The dense model to compare with (required for an encoder).
    #[arg(long, value_name = "DENSE_DIR")]
    pub(crate) reference: Option<PathBuf>,
    /// Skip this many usable lines of --text first (e.g. the calibration
    /// lines).
    #[arg(long, default_value_t = 0)]
    pub(crate) skip: usize,
    /// Use at most this many lines after --skip (0: all).
    #[arg(long, default_value_t = 0)]
    pub(crate) lines: usize,
    /// A decoder's perplexity window (default 512, cut to the context).
    #[arg(long, value_name = "L")]
    pub(crate) seq_len: Option<usize>,
    /// A decoder's speed too: the first window as a prompt in one pass
    /// (prefill), then --generate tokens one at a time against a key and
    /// value cache (decode), best of 3.
    #[arg(long)]
    pub(crate) speed: bool,
    /// Tokens generated to time decoding (with --speed).
    #[arg(long, default_value_t = 32)]
    pub(crate) generate: usize,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// Where candle runs the models (cpu, cuda, cuda:N, metal); CUDA and
    /// Metal need a prunus built with the cuda or metal feature.
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = parse_device)]
    pub(crate) device: ComputeDevice,
    /// Print JSON on stdout instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A model folder ready to run whole.
struct Loaded {
    folder: ModelFolder,
    graph: Box<dyn Graph>,
}

fn load(dir: &Path, device: &CandleDevice) -> Result<Loaded, Error> {
    let folder = ModelFolder::open(dir)?;
    let mut graph = open_graph(&folder, device)?;
    graph.load_all(&folder)?;
    Ok(Loaded { folder, graph })
}

/// Runs `prunus eval`.
pub(crate) fn eval(args: &EvalArgs) -> Result<(), Error> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build()
        .map_err(|e| Error::system(format!("start {} threads", args.threads), e))?;
    pool.install(|| run_eval(args))
}

fn run_eval(args: &EvalArgs) -> Result<(), Error> {
    let started = Instant::now();
    let device = args.device.open()?;
    let all = read_lines(&args.text)?;
    let lines: Vec<String> = all
        .into_iter()
        .skip(args.skip)
        .take(if args.lines == 0 {
            usize::MAX
        } else {
            args.lines
        })
        .collect();
    if lines.is_empty() {
        return Err(Error::argument(
            "--skip",
            args.skip,
            format!(
                "fewer than the usable lines of {} (nothing is left to evaluate on)",
                args.text.display()
            ),
        ));
    }
    let model = load(&args.model, &device)?;
    let reference = args
        .reference
        .as_deref()
        .map(|d| load(d, &device))
        .transpose()?;
    if let Some(r) = &reference
        && r.graph.family() != model.graph.family()
    {
        return Err(Error::argument(
            "--reference",
            r.folder.dir().display(),
            "a model of the same kind (encoder or decoder) as MODEL_DIR",
        ));
    }
    let tokenizer = model.folder.tokenizer()?;
    let mut out = json!({
        "model": args.model.display().to_string(),
        "reference": args.reference.as_ref().map(|p| p.display().to_string()),
        "text": args.text.display().to_string(),
        "lines": lines.len(),
        "skip": args.skip,
        "device": device_name(&device),
    });
    match model.graph.family() {
        Family::Decoder => {
            let seq_len = args
                .seq_len
                .unwrap_or(DECODER_SEQ_LEN)
                .min(model.graph.max_len());
            let ids = stream(&tokenizer, &lines)?;
            let p = perplexity(&*model.graph, &ids, seq_len)?;
            out["family"] = "decoder".into();
            out["seq_len"] = seq_len.into();
            out["tokens"] = ids.len().into();
            out["predicted"] = p.predicted.into();
            out["perplexity"] = p.perplexity.into();
            out["mean_nll"] = p.mean_nll.into();
            if let Some(r) = &reference {
                let q = perplexity(&*r.graph, &ids, seq_len)?;
                out["reference_perplexity"] = q.perplexity.into();
            }
            if args.speed {
                let prompt = &ids[..seq_len.min(ids.len())];
                let generate = args
                    .generate
                    .min(model.graph.max_len() - prompt.len())
                    .max(1);
                let s = decoder_speed(&*model.graph, prompt, generate, 3)?;
                out["prefill_tokens_per_s"] = s.prefill_tokens_per_s.into();
                out["decode_tokens_per_s"] = s.decode_tokens_per_s.into();
                out["prompt_tokens"] = s.prompt.into();
                out["generated_tokens"] = s.generated.into();
                if let Some(r) = &reference {
                    let q = decoder_speed(&*r.graph, prompt, generate, 3)?;
                    out["reference_prefill_tokens_per_s"] = q.prefill_tokens_per_s.into();
                    out["reference_decode_tokens_per_s"] = q.decode_tokens_per_s.into();
                }
            }
        }
        Family::Encoder => {
            let Some(r) = &reference else {
                return Err(Error::argument(
                    "--reference",
                    "nothing",
                    "the dense model's folder: an encoder is measured against it",
                ));
            };
            let samples = token_samples(
                &model.folder,
                &*model.graph,
                &lines,
                lines.len(),
                sentence_len(&model.folder, &*model.graph),
            )?;
            let tokens = samples.iter().map(Vec::len).sum::<usize>() as f64;
            let pooling = SentencePooling::from_folder(model.folder.dir())?;
            let clock = Instant::now();
            let a = sentence_embeddings(&*model.graph, &pooling, &samples)?;
            let model_s = clock.elapsed().as_secs_f64();
            let ref_pooling = SentencePooling::from_folder(r.folder.dir())?;
            let clock = Instant::now();
            let b = sentence_embeddings(&*r.graph, &ref_pooling, &samples)?;
            let reference_s = clock.elapsed().as_secs_f64();
            out["encode_tokens_per_s"] = (tokens / model_s.max(1e-12)).into();
            out["reference_encode_tokens_per_s"] = (tokens / reference_s.max(1e-12)).into();
            let g = agreement(&a, &b)?;
            out["family"] = "encoder".into();
            out["sentences"] = g.sentences.into();
            out["tokens"] = samples.iter().map(Vec::len).sum::<usize>().into();
            out["mean_cosine"] = g.mean_cosine.into();
            out["min_cosine"] = g.min_cosine.into();
            out["neighbour_agreement"] = g.neighbours.into();
        }
    }
    out["wall_s"] = started.elapsed().as_secs_f64().into();
    out["peak_rss_mib"] = peak_rss_mib().into();
    if args.json {
        println!("{out}");
    } else {
        print_eval(&out);
    }
    Ok(())
}

fn print_eval(out: &Value) {
    let f = |k: &str| out[k].as_f64().unwrap_or(f64::NAN);
    if out["family"] == "decoder" {
        print!(
            "perplexity {:.4} over {} predicted tokens (windows of {})",
            f("perplexity"),
            out["predicted"],
            out["seq_len"]
        );
        if out["reference_perplexity"].is_number() {
            print!("; reference {:.4}", f("reference_perplexity"));
        }
        println!();
        if out["decode_tokens_per_s"].is_number() {
            print!(
                "speed: prefill {:.0} tokens/s ({} prompt tokens), decode {:.1} tokens/s ({} \
                 generated, key and value cache)",
                f("prefill_tokens_per_s"),
                out["prompt_tokens"],
                f("decode_tokens_per_s"),
                out["generated_tokens"]
            );
            if out["reference_decode_tokens_per_s"].is_number() {
                print!(
                    "; reference prefill {:.0}, decode {:.1}",
                    f("reference_prefill_tokens_per_s"),
                    f("reference_decode_tokens_per_s")
                );
            }
            println!();
        }
    } else {
        println!(
            "{} sentences: mean cosine to the reference {:.4} (smallest {:.4}); nearest \
             neighbour kept for {:.1}% of sentences",
            out["sentences"],
            f("mean_cosine"),
            f("min_cosine"),
            100.0 * f("neighbour_agreement")
        );
        println!(
            "speed: {:.0} tokens/s embedding the sentences (reference {:.0})",
            f("encode_tokens_per_s"),
            f("reference_encode_tokens_per_s")
        );
    }
    println!(
        "{} lines of {} in {:.2} s on {}; peak memory {}",
        out["lines"],
        out["text"].as_str().unwrap_or(""),
        f("wall_s"),
        out["device"].as_str().unwrap_or("cpu"),
        out["peak_rss_mib"]
            .as_f64()
            .map_or("unknown".into(), |m| format!("{m:.0} MiB"))
    );
}
