//! `prunus prune` and `prunus inspect`: safetensors checkpoints from the
//! command line.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use prunus_adapters::safetensors::{
    Checkpoint, Filter, Options, Progress, Report, Request, TensorReport, TensorStats, inspect,
    prune_file,
};
use prunus_core::{Granularity, Importance, NofM, PruneConfig};
use serde_json::json;

use crate::args::{check_output, parse_fraction, parse_pattern, parse_sparsity};
use crate::backend::{BackendJob, BackendKind, BackendSpec, Device, dispatch};
use crate::error::Error;
use crate::memory::peak_rss_mib;
use crate::progress::Bars;

/// How weights are scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Method {
    /// |w|: the smallest magnitudes go first.
    Magnitude,
    /// Uniform random scores from --seed (a baseline; files only).
    Random,
    /// Wanda, |W| times the input norms, per output row (model folders,
    /// with --calibration).
    Wanda,
    /// SparseGPT with its weight update (model folders, with
    /// --calibration).
    Sparsegpt,
    /// Layer-wise OBS with its weight update: exact per row, or in column
    /// blocks of --block-size (model folders, with --calibration). With
    /// --structured: greedy backward elimination of groups by their exact
    /// OBS cost, H⁻¹ downdated after every removal, then swaps.
    Obs,
    /// FLAP's fluctuation, Var(X) times the squared column norms (model
    /// folders with --structured and --calibration).
    Fluctuation,
    /// Greedy forward selection of the groups to keep on each layer's
    /// reconstruction error, then swaps (model folders with --structured
    /// and --calibration).
    Forward,
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

/// Arguments of `prunus prune`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
IN is a .safetensors file or a Hugging Face model folder.

A MODEL FOLDER (config.json with model_type bert, llama, mistral, qwen2, \
qwen3, gemma2, gemma3_text or phi3, model.safetensors or a sharded \
checkpoint, tokenizer.json) is pruned layer by \
layer: by default every linear layer inside the transformer blocks (attention \
projections and MLP), while embeddings, norms, the LM head and the pooler are \
left alone (--include and --exclude narrow this, matched against the weight \
tensor names). Wanda, SparseGPT and OBS run the model block by block on \
--calibration text (one sample per line; an encoder takes one sentence per \
sample, a decoder packs lines into --seq-len tokens): the dense block is run \
recording each linear layer's inputs, its layers are pruned, and the pruned \
block gives the next one its inputs. Magnitude needs no text (given text, it \
reports each layer's reconstruction error). Each layer loses the target \
(--scope layer, the default for folders); magnitude can instead take one \
threshold over all of them (--scope global). OUT is a new folder that loads \
wherever IN loaded: the same files, sharding and dtypes, every other file \
copied, prunus's settings in the safetensors metadata, written into a \
temporary folder and renamed. Memory: one block's weights and statistics \
plus the calibration hidden states.

STRUCTURED pruning of a model folder (--structured mlp=F,heads=F,kv-heads=F,blocks=N, \
any subset) removes whole MLP channels, query heads, KV groups and blocks, \
the same number from every block, and writes a smaller dense model whose \
config.json has the new sizes (and head_dim stated), loadable by \
transformers' from_pretrained and by prunus. BERT takes mlp and blocks \
(transformers 5 cannot load a BERT with fewer heads), and so does a phi3 \
with LongRoPE scaling (transformers checks its factors against \
hidden_size / num_attention_heads). Blocks go first, \
judged on the calibration text by --block-score; then, block by block, KV \
groups, query heads and channels, each a group of input columns of the \
consuming layer (down_proj, o_proj) with the producing rows tied to it \
(in Phi-3's fused qkv_proj and gate_up_proj, the rows of each part). \
experts=F (mixtral, qwen2_moe, qwen3_moe; on its own) removes whole \
experts: those whose down projection gives the least output energy on the \
tokens routed to them (by weight norm with magnitude); the router's rows \
go too and the rest are renumbered; nothing is refit. \
The methods: magnitude, the L2 norm of every weight a group spans (no \
text, no refit, one block in memory); wanda, Wanda-sp's |W| times the \
input norms; fluctuation, FLAP's input variance times the squared column \
norms (with --no-refit, FLAP's bias compensation); obs, greedy backward \
elimination by the exact OBS cost of each group with the rest refit, the \
inverse Hessian downdated after every removal, then --swaps exchanges of a \
kept and a removed group while the error falls (about in^2 x removed \
multiply-adds per layer, in the consuming layer's input width: seconds \
for MiniLM, minutes for a 7B down_proj); forward, greedy forward \
selection of the groups to keep on the layer's reconstruction error, then \
swaps (about in^2 x kept). Every method but magnitude then refits the kept \
columns by least squares on the calibration statistics, the bias as an \
intercept, damped as SparseGPT damps (--no-refit keeps them as they are). \
Structured and N:M pruning do not mix in one call: prune the structured \
output again.

A SINGLE FILE: only F32, F16 and BF16 tensors of rank 2 or more (weight matrices, conv kernels, \
embeddings) are pruned. 1-D tensors such as biases and norm scales, scalars and \
other dtypes are copied bit for bit. Pruned weights become zero in their own dtype; \
nothing else changes. The output is written to a temporary file beside OUT and \
renamed when complete, so OUT is never left half-written; IN is only read.

Unstructured selection is exact and streamed: the file is read tensor by tensor \
(twice for F16/BF16, up to three times for F32), so checkpoints larger than memory \
can be pruned with memory bounded by the largest tensor.

The output lists the totals and the pruned tensors that stand out: fully \
pruned, untouched (no weight removed), or more than 20 percentage points \
from the target sparsity. --verbose lists every tensor; --json gives every \
tensor as JSON.")]
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
    /// One threshold over all pruned tensors, or the same sparsity in each
    /// (default: global for a file, local (each layer) for a model folder).
    #[arg(long, value_enum)]
    pub(crate) scope: Option<ScopeKind>,
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
    #[arg(long, value_name = "D", default_value_t = 0.0, value_parser = parse_fraction)]
    pub(crate) min_density: f64,
    /// Also write each pruned tensor's mask as `<name>.mask` (U8, packed
    /// bits, bit i%8 of byte i/8 set where weight i is kept).
    #[arg(long)]
    pub(crate) masks: bool,
    /// Where N:M patterns are chosen (unstructured selection streams on the
    /// CPU, bound by reading the file).
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub(crate) backend: BackendKind,
    /// CPU threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// Allow OUT to be IN (replaced atomically when done).
    #[arg(long)]
    pub(crate) in_place: bool,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub(crate) force: bool,
    /// List every tensor, not only the totals and the tensors that stand out.
    #[arg(long, short)]
    pub(crate) verbose: bool,
    /// Model folders: calibration text, UTF-8, one sample per line.
    #[arg(long, value_name = "FILE")]
    pub(crate) calibration: Option<PathBuf>,
    /// Model folders: calibration samples (sentences for an encoder,
    /// packed sequences for a decoder).
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub(crate) samples: usize,
    /// Model folders: tokens per decoder calibration sample (default 512,
    /// cut to the model's context); encoders take one sentence each.
    #[arg(long, value_name = "L")]
    pub(crate) seq_len: Option<usize>,
    /// Model folders: the column block of SparseGPT (default 128) and of
    /// OBS (default: exact, every row solved whole).
    #[arg(long, value_name = "B")]
    pub(crate) block_size: Option<usize>,
    /// Model folders: dampening added to the Hessian's diagonal, as a
    /// fraction of its mean.
    #[arg(long, value_name = "D", default_value_t = 0.01)]
    pub(crate) dampening: f64,
    /// Model folders: OBS swap passes per row after the greedy removal
    /// (with --structured: swaps of one kept and one removed group after
    /// the obs and forward searches).
    #[arg(long, default_value_t = 8)]
    pub(crate) swaps: usize,
    /// Model folders: remove whole structures and write a smaller dense
    /// model, its config.json changed to match; comma-separated parts:
    /// mlp=F removes round(F x intermediate_size) MLP channels from every
    /// block; heads=F removes round(F x query heads per KV group) query
    /// heads from every KV group (for a model without GQA, that fraction
    /// of its heads); kv-heads=F removes round(F x num_key_value_heads)
    /// whole KV groups with their query heads; blocks=N removes the N
    /// blocks of least importance on the calibration text (--block-score),
    /// renumbering the rest. BERT takes mlp and blocks:
    /// transformers 5 derives BERT's head size from hidden_size /
    /// num_attention_heads and no longer reads pruned_heads, so a BERT with
    /// fewer heads would not load; so does a phi3 with LongRoPE scaling,
    /// whose factors transformers checks against that same width.
    /// experts=F removes round(F x experts) whole experts from every
    /// mixture of a mixtral, qwen2_moe or qwen3_moe model (their router
    /// rows too; the expert count in config.json lowered), those of least
    /// output energy on the calibration text (by weight norm with
    /// magnitude); it runs on its own, without other structures.
    #[arg(long, value_name = "PARTS", value_parser = parse_structured)]
    pub(crate) structured: Option<StructuredParts>,
    /// Model folders with --structured: keep the surviving columns as they
    /// are instead of refitting them by least squares on the calibration
    /// statistics (the plain baselines; fluctuation then shifts the bias
    /// by the removed channels' mean, as FLAP does).
    #[arg(long)]
    pub(crate) no_refit: bool,
    /// Model folders with --structured blocks=N: influence is ShortGPT's
    /// 1 - cos(block input, block output) over the calibration tokens (one
    /// pass, one block in memory); skip is what skipping the block alone
    /// costs: a decoder's next-token loss, an encoder's output cosine (one
    /// pass per block, the whole model in memory).
    #[arg(long, value_enum, default_value_t = BlockScoreArg::Influence)]
    pub(crate) block_score: BlockScoreArg,
    #[command(flatten)]
    pub(crate) show: Show,
}

/// How `--structured blocks=N` judges blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum BlockScoreArg {
    /// ShortGPT's block influence.
    Influence,
    /// The loss (or output) change when the block alone is skipped.
    Skip,
}

/// The parts of `--structured`: structure name and fraction (a count for
/// blocks).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StructuredParts(pub(crate) Vec<(String, f64)>);

/// Parses `mlp=0.5[,heads=0.25,...]`: each part once, each fraction in
/// (0, 1).
pub(crate) fn parse_structured(s: &str) -> Result<StructuredParts, String> {
    let mut parts: Vec<(String, f64)> = Vec::new();
    for item in s.split(',') {
        let (name, value) = item
            .split_once('=')
            .ok_or_else(|| format!("{item:?} is not NAME=F (for example mlp=0.5)"))?;
        let name = name.trim();
        if !["mlp", "heads", "kv-heads", "experts", "blocks"].contains(&name) {
            return Err(format!(
                "{name:?}: prunus removes mlp=F (MLP channels), heads=F (query heads in every \
                 KV group), kv-heads=F (whole KV groups), experts=F (whole experts of a \
                 mixture) and blocks=N (whole blocks)"
            ));
        }
        if name == "blocks" {
            let n: usize = value
                .trim()
                .parse()
                .map_err(|_| format!("blocks={value}: give a whole number of blocks to remove"))?;
            if n == 0 {
                return Err("blocks=0 removes nothing: give at least 1".into());
            }
            if parts.iter().any(|(n, _)| n == name) {
                return Err(format!("{name} is given twice"));
            }
            parts.push((name.to_string(), n as f64));
            continue;
        }
        let f: f64 = value
            .trim()
            .parse()
            .map_err(|_| format!("{name}={value}: the fraction is not a number"))?;
        if !(f.is_finite() && f > 0.0 && f < 1.0) {
            return Err(format!(
                "{name}={value}: give a fraction in (0, 1); every block keeps at least one group"
            ));
        }
        if parts.iter().any(|(n, _)| n == name) {
            return Err(format!("{name} is given twice"));
        }
        parts.push((name.to_string(), f));
    }
    Ok(StructuredParts(parts))
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
    /// Fail with exit status 1 unless every float tensor of rank 2 or more
    /// conforms to --pattern.
    #[arg(long)]
    pub(crate) check: bool,
    #[command(flatten)]
    pub(crate) show: Show,
}

/// Runs `prunus prune`.
pub(crate) fn prune(args: &PruneArgs) -> Result<(), Error> {
    if args.input.is_dir() {
        #[cfg(feature = "transformers")]
        return crate::transformer::prune(args);
        #[cfg(not(feature = "transformers"))]
        return Err(Error::argument(
            "IN",
            args.input.display(),
            "a .safetensors file (this prunus was built without the transformers feature, \
             which prunes model folders)",
        ));
    }
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
