//! The arguments of `prunus prune`: what is pruned, by which method, at
//! which target, and how the result is shown. Both the checkpoint path and
//! the model-folder paths read them.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use prunus_core::NofM;

use crate::args::{parse_fraction, parse_pattern, parse_sparsity};
use crate::backend::BackendKind;

#[cfg(feature = "transformers")]
pub(crate) use prunus_candle::ComputeDevice;

/// Where candle runs a model folder; a build without model folders runs
/// nothing there, so only the CPU is named.
#[cfg(not(feature = "transformers"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum ComputeDevice {
    /// The CPU.
    #[default]
    Cpu,
}

#[cfg(not(feature = "transformers"))]
impl std::fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cpu")
    }
}

#[cfg(not(feature = "transformers"))]
impl std::str::FromStr for ComputeDevice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(ComputeDevice::Cpu),
            _ => Err(format!(
                "device {s:?}: this prunus was built without model folders (the transformers \
                 feature), which is what runs on a GPU; give cpu"
            )),
        }
    }
}

/// Parses `--device`: cpu, cuda, cuda:N, metal or metal:N.
pub(crate) fn parse_device(s: &str) -> Result<ComputeDevice, String> {
    s.parse::<ComputeDevice>().map_err(|e| e.to_string())
}
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
    /// Model folders: where candle runs the model's forward and records the
    /// layers' statistics (cpu, cuda, cuda:N, metal); the solves run on
    /// --backend. CUDA and Metal need a prunus built with the cuda or
    /// metal feature.
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = parse_device)]
    pub(crate) device: ComputeDevice,
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

#[cfg(feature = "transformers")]
impl PruneArgs {
    /// The calibration samples of `path` for the model in `folder`:
    /// sentences for an encoder, packed sequences of `--seq-len` for a
    /// decoder, at most `--samples` of them.
    pub(crate) fn calibration_samples(
        &self,
        path: &std::path::Path,
        folder: &prunus_candle::ModelFolder,
        graph: &dyn prunus_candle::Graph,
    ) -> Result<Vec<Vec<u32>>, crate::error::Error> {
        let lines = prunus_candle::calibration::read_lines(path)?;
        let seq_len = self
            .seq_len
            .unwrap_or(prunus_candle::model::DECODER_SEQ_LEN);
        Ok(prunus_candle::model::token_samples(
            folder,
            graph,
            &lines,
            self.samples,
            seq_len,
        )?)
    }
}
