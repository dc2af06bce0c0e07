//! What the block-by-block driver needs of a transformer: embed a sequence,
//! run one block (recording its linear layers' inputs), finish (logits or
//! final hidden states), and load or release the weights of one part at a
//! time so that a model larger than memory is never held whole in f32.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use prunus_core::methods::layerwise::GroupLayout;

use crate::error::{Error, Result};
use crate::record::{Linear, Recorder};

/// The two kinds of models prunus runs, which calibrate and evaluate
/// differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// A BERT-style encoder: one sentence per calibration sample; evaluated
    /// by its sentence embeddings.
    Encoder,
    /// A LLaMA-style decoder: calibration text packed into sequences;
    /// evaluated by perplexity.
    Decoder,
}

/// A part of a graph whose weights are loaded and released together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// What comes before the first block (token, position and type
    /// embeddings, the embedding norm).
    Embeddings,
    /// Transformer block `i`.
    Block(usize),
    /// What comes after the last block (final norm, LM head); nothing for
    /// an encoder without a pooler.
    Head,
}

/// A kind of structure that structured pruning removes from every block.
/// Within a block they are pruned in this order: whole KV groups, then
/// query heads within the groups left, then MLP channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Structure {
    /// Grouped-query attention's KV groups: one key and one value head
    /// with every query head that reads them.
    KvGroups,
    /// Query heads, the same number from every KV group (`head_dim`
    /// unchanged).
    Heads,
    /// MLP channels: one row of each up (and gate) projection, one column
    /// of the down projection.
    MlpChannels,
    /// Whole experts of a mixture: their three projections and their row
    /// of the router (see [`ExpertSpan`]).
    Experts,
}

impl Structure {
    /// The structure's name on the command line (`--structured mlp=F`).
    pub fn name(self) -> &'static str {
        match self {
            Structure::KvGroups => "kv-heads",
            Structure::Heads => "heads",
            Structure::MlpChannels => "mlp",
            Structure::Experts => "experts",
        }
    }
}

/// Where one kind of structure lives in one block: the groups are input
/// columns of the `consumer` layer, each tied to rows of the `producers`,
/// and `config.json` counts them. The folder writer and the pruner read
/// this one description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructureSpan {
    /// Which structure.
    pub structure: Structure,
    /// The `config.json` fields that count the groups, with how many of
    /// that field's units one group holds (`num_attention_heads` counts
    /// the query heads of a KV group).
    pub config: Vec<(&'static str, usize)>,
    /// `config.json` fields the pruned model must state explicitly
    /// (`head_dim`, which loaders otherwise derive from the head count).
    pub fixed: Vec<(&'static str, usize)>,
    /// The layer whose input columns the groups are (its weight is
    /// `<consumer>.weight`; its bias, if any, is refit, not sliced).
    pub consumer: String,
    /// The row ranges tied to the groups in the layers that produce the
    /// consumer's input (their weights and biases are sliced); a fused
    /// layer appears once per range.
    pub producers: Vec<Producer>,
    /// The groups over the consumer's input columns.
    pub layout: GroupLayout,
}

/// A block's mixture of experts, as removing whole experts sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertSpan {
    /// Experts per token.
    pub top_k: usize,
    /// Each expert's gate, up and down projections (names of linear
    /// layers, whose weights are `<name>.weight`), by expert index.
    pub layers: Vec<[String; 3]>,
    /// Expert `e`'s tensors are named `<prefix><e>.…`.
    pub prefix: String,
    /// The router's weight, `[experts, hidden]`: row `e` routes to expert
    /// `e`.
    pub router: String,
}

/// Rows of a producing layer tied to a [`StructureSpan`]'s groups: group
/// `g` spans rows `offset + g · rows .. offset + (g + 1) · rows` of layer
/// `name`; rows outside every range of that layer are kept as they are (a
/// fused `qkv_proj` losing query heads keeps its key and value rows).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Producer {
    /// The layer (its weight is `<name>.weight`).
    pub name: String,
    /// The first row of group 0.
    pub offset: usize,
    /// The rows of one group.
    pub rows: usize,
}

/// The keys and values of every block for the tokens a decoder's
/// [`Graph::forward_cached`] has seen.
#[derive(Clone, Debug)]
pub struct KvCache {
    /// Per block: keys and values `[batch, kv_heads, seen, head_dim]`.
    pub(crate) blocks: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// An empty cache for `blocks` blocks.
    pub fn new(blocks: usize) -> KvCache {
        KvCache {
            blocks: vec![None; blocks],
        }
    }

    /// Tokens seen.
    pub fn len(&self) -> usize {
        self.blocks
            .first()
            .and_then(|b| b.as_ref())
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    /// Whether no token was seen.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks one sequence of token ids for a `model` taking 1 to `max_len`
/// tokens from a vocabulary of `vocab`: a request error naming the
/// problem otherwise.
pub(crate) fn check_tokens(
    model: &str,
    tokens: &[u32],
    max_len: usize,
    vocab: usize,
) -> Result<()> {
    let seq = tokens.len();
    if seq == 0 || seq > max_len {
        return Err(Error::request(format!(
            "a sequence of {seq} tokens: {model} takes 1 to {max_len} (max_position_embeddings)"
        )));
    }
    if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(Error::request(format!(
            "token id {id} is outside the vocabulary of {vocab} tokens: was the text tokenised \
             with this model's tokenizer?"
        )));
    }
    Ok(())
}

/// Where a graph's weights come from: a model folder
/// ([`ModelFolder`](crate::folder::ModelFolder)) or tensors in memory.
pub trait Weights {
    /// The tensor called `name` on `device` as `dtype` (graphs compute in
    /// f32); an [`Error::Model`] naming it when there is none.
    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor>;

    /// Whether a tensor called `name` exists.
    fn contains(&self, name: &str) -> bool;
}

impl Weights for HashMap<String, Tensor> {
    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let t = self
            .get(name)
            .ok_or_else(|| Error::model("<memory>", format!("no tensor called {name}")))?;
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    }

    fn contains(&self, name: &str) -> bool {
        self.contains_key(name)
    }
}

/// A transformer that prunus can run block by block. Batches are one
/// sequence, `[1, seq]` token ids, with no padding: calibration and
/// evaluation then need no attention mask and every row is a real token.
pub trait Graph: Send + Sync {
    /// Encoder or decoder.
    fn family(&self) -> Family;

    /// The device the graph computes on (the CPU unless the graph says
    /// otherwise). prunus runs a batch of forwards on rayon's threads on
    /// the CPU, and one after another on a GPU, whose one queue host
    /// threads would only contend for.
    fn device(&self) -> Device {
        Device::Cpu
    }

    /// The number of transformer blocks.
    fn blocks(&self) -> usize;

    /// The longest sequence the model accepts (its position embeddings or
    /// context length).
    fn max_len(&self) -> usize;

    /// Loads the weights of `part` from `weights` (replacing any held).
    fn load(&mut self, part: Part, weights: &dyn Weights) -> Result<()>;

    /// Drops the weights of `part`.
    fn release(&mut self, part: Part);

    /// The hidden states entering block 0 for one sequence: `[1, seq, hidden]`.
    fn embed(&self, tokens: &[u32]) -> Result<Tensor>;

    /// Block `i` on one sequence's hidden states, recording the inputs of
    /// its linear layers into `recorder` when given.
    fn block(
        &self,
        i: usize,
        hidden: &Tensor,
        recorder: Option<&mut Recorder<'_>>,
    ) -> Result<Tensor>;

    /// After the last block: a decoder's logits `[1, seq, vocab]`, an
    /// encoder's final hidden states `[1, seq, hidden]`.
    fn head(&self, hidden: &Tensor) -> Result<Tensor>;

    /// The names of block `i`'s linear layers (their weights are
    /// `<name>.weight`), in the checkpoint's order, loaded or not: the
    /// layers calibrated pruning prunes by default.
    fn linear_names(&self, i: usize) -> Vec<String>;

    /// The prefix of block `i`'s tensor names (`model.layers.{i}.`), for
    /// removing whole blocks; `None` where blocks cannot be removed.
    fn block_prefix(&self, i: usize) -> Option<String> {
        let _ = i;
        None
    }

    /// The structures block `i` can lose, with the tensors they span
    /// (none by default: the graph supports no structured pruning).
    fn structures(&self, i: usize) -> Vec<StructureSpan> {
        let _ = i;
        Vec::new()
    }

    /// Block `i`'s mixture of experts, where its MLP is one (none by
    /// default).
    fn experts(&self, i: usize) -> Option<ExpertSpan> {
        let _ = i;
        None
    }

    /// The linear layers of block `i` (loaded), in the checkpoint's order.
    fn linears(&self, i: usize) -> Result<Vec<&Linear>>;

    /// The linear layer of block `i` called `name`, to set its pruned weight.
    fn linear_mut(&mut self, i: usize, name: &str) -> Result<&mut Linear>;

    /// An empty key and value cache for [`Graph::forward_cached`], where
    /// the graph decodes token by token (decoders); `None` otherwise.
    fn cache(&self) -> Option<KvCache> {
        None
    }

    /// The logits `[1, seq, vocab]` of `tokens` following the tokens the
    /// `cache` has seen (none at first), which it then holds too: a prompt
    /// in one call (prefill), then one generated token per call (decode),
    /// as serving runtimes run a model. Every part must be loaded. An
    /// error for a graph without a cache.
    fn forward_cached(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let _ = (tokens, cache);
        Err(Error::request("this model does not decode token by token"))
    }

    /// Loads every part: for evaluation and models that fit in memory.
    fn load_all(&mut self, weights: &dyn Weights) -> Result<()> {
        self.load(Part::Embeddings, weights)?;
        for i in 0..self.blocks() {
            self.load(Part::Block(i), weights)?;
        }
        self.load(Part::Head, weights)
    }

    /// The whole forward pass on one sequence: embeddings, every block,
    /// the head. Every part must be loaded.
    fn forward(&self, tokens: &[u32]) -> Result<Tensor> {
        let mut h = self.embed(tokens)?;
        for i in 0..self.blocks() {
            h = self.block(i, &h, None)?;
        }
        self.head(&h)
    }
}
