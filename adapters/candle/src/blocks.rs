//! Whole blocks removed from a model (METHODS.md §6): each block's
//! importance measured on calibration text, the least important removed,
//! the later blocks renumbered and `num_hidden_layers` lowered.
//!
//! Two measures ([`BlockScore`]):
//! - **influence** (ShortGPT, Men et al. 2024): `1 − E[cos(x_in, x_out)]`
//!   over the calibration tokens, one dense pass, one block in memory at a
//!   time;
//! - **skip**: what skipping the block alone costs the whole model: for a
//!   decoder the rise of the calibration text's mean next-token loss, for
//!   an encoder `1 − E[cos]` between the final hidden states with and
//!   without the block. One pass per block over the later blocks, with the
//!   whole model loaded.

use candle_core::{D, Tensor};

use crate::error::{Error, Result};
use crate::graph::{Family, Graph, Part, Weights};
use crate::llama::{LlamaConfig, next_token_nll};
use crate::pruning::embed_all;

/// How a block's importance is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockScore {
    /// ShortGPT's block influence, `1 − E[cos(x_in, x_out)]`.
    Influence,
    /// The model's loss (decoder) or output change (encoder) when the
    /// block alone is skipped.
    Skip,
}

impl BlockScore {
    /// The measure's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BlockScore::Influence => "influence",
            BlockScore::Skip => "skip",
        }
    }
}

/// `Σ_t cos(a_t, b_t)` over the tokens of two `[1, seq, hidden]` states,
/// and the token count.
fn cosine_sum(a: &Tensor, b: &Tensor) -> Result<(f64, usize)> {
    let dot = (a * b)?.sum(D::Minus1)?;
    let na = a.sqr()?.sum(D::Minus1)?.sqrt()?;
    let nb = b.sqr()?.sum(D::Minus1)?.sqrt()?;
    let cos: Vec<f32> = (dot / (na * nb)?)?.flatten_all()?.to_vec1()?;
    // A zero state has no direction: count it as unchanged.
    let sum = cos
        .iter()
        .map(|&c| if c.is_finite() { f64::from(c) } else { 1.0 })
        .sum();
    Ok((sum, cos.len()))
}

/// Each block's importance on the calibration `samples` (token
/// sequences), higher is more important; see the module docs.
pub fn block_importance(
    graph: &mut dyn Graph,
    weights: &dyn Weights,
    samples: &[Vec<u32>],
    score: BlockScore,
) -> Result<Vec<f64>> {
    if samples.is_empty() || samples.iter().any(|s| s.is_empty()) {
        return Err(Error::request("no calibration sample (or an empty one)"));
    }
    let blocks = graph.blocks();
    match score {
        BlockScore::Influence => {
            let mut hidden = embed_all(graph, weights, samples)?;
            let mut importance = Vec::with_capacity(blocks);
            for i in 0..blocks {
                graph.load(Part::Block(i), weights)?;
                let (mut sum, mut count) = (0.0, 0);
                for h in &mut hidden {
                    let out = graph.block(i, h, None)?;
                    let (s, n) = cosine_sum(h, &out)?;
                    sum += s;
                    count += n;
                    *h = out;
                }
                graph.release(Part::Block(i));
                importance.push(1.0 - sum / count.max(1) as f64);
            }
            Ok(importance)
        }
        BlockScore::Skip => {
            graph.load_all(weights)?;
            let family = graph.family();
            let mut importance = vec![0.0; blocks];
            let mut dense_loss = 0.0;
            let mut tokens = 0usize;
            for sample in samples {
                // The dense run, keeping every block's input.
                let mut inputs = Vec::with_capacity(blocks);
                let mut h = graph.embed(sample)?;
                for i in 0..blocks {
                    inputs.push(h.clone());
                    h = graph.block(i, &h, None)?;
                }
                let dense_out = graph.head(&h)?;
                if family == Family::Decoder {
                    dense_loss += next_token_nll(&dense_out, sample)?;
                    tokens += sample.len().saturating_sub(1);
                }
                for (skip, input) in inputs.into_iter().enumerate() {
                    let mut h = input;
                    for i in skip + 1..blocks {
                        h = graph.block(i, &h, None)?;
                    }
                    let out = graph.head(&h)?;
                    importance[skip] += match family {
                        Family::Decoder => next_token_nll(&out, sample)?,
                        Family::Encoder => {
                            let (s, n) = cosine_sum(&dense_out, &out)?;
                            tokens += usize::from(skip == 0) * n;
                            n as f64 - s
                        }
                    };
                }
            }
            let tokens = tokens.max(1) as f64;
            Ok(importance
                .into_iter()
                .map(|v| match family {
                    Family::Decoder => (v - dense_loss) / tokens,
                    Family::Encoder => v / tokens,
                })
                .collect())
        }
    }
}

/// Which blocks a model lost, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockRemoval {
    /// How the blocks were judged.
    pub score: BlockScore,
    /// Every input block's importance.
    pub importance: Vec<f64>,
    /// The blocks removed, ascending (input indices).
    pub removed: Vec<usize>,
}

/// The `n` blocks of least importance (ties: the lower index), ascending;
/// refused where `n` is 0 or all of them.
pub fn least_important(importance: &[f64], n: usize) -> Result<Vec<usize>> {
    if n == 0 || n >= importance.len() {
        return Err(Error::request(format!(
            "blocks={n} of {} blocks: remove at least one and keep at least one",
            importance.len()
        )));
    }
    let mut order: Vec<usize> = (0..importance.len()).collect();
    order.sort_by(|&a, &b| importance[a].total_cmp(&importance[b]).then(a.cmp(&b)));
    let mut removed = order[..n].to_vec();
    removed.sort_unstable();
    Ok(removed)
}

/// Block removal as tensor names: each block's prefix
/// (`model.layers.{i}.`), which blocks go, and the renumbering of the
/// others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMap {
    /// Per input block: its prefix, and its index in the output (`None`
    /// where it is removed).
    blocks: Vec<(String, Option<usize>)>,
    /// The output's block prefixes, by output index.
    prefixes: Vec<String>,
}

impl BlockMap {
    /// The map of `graph`'s blocks with `removed` (ascending) left out.
    /// Fails where the graph does not name its blocks.
    pub fn new(graph: &dyn Graph, removed: &[usize]) -> Result<BlockMap> {
        let mut blocks = Vec::with_capacity(graph.blocks());
        let mut next = 0;
        for i in 0..graph.blocks() {
            let prefix = graph
                .block_prefix(i)
                .ok_or_else(|| Error::request("this model's blocks cannot be removed"))?;
            let out = (!removed.contains(&i)).then(|| {
                next += 1;
                next - 1
            });
            blocks.push((prefix, out));
        }
        let prefixes: Vec<String> = (0..next)
            .map(|o| {
                let i = blocks
                    .iter()
                    .position(|(_, out)| *out == Some(o))
                    .expect("every output block comes from an input block");
                blocks[i].0.clone()
            })
            .collect();
        Ok(BlockMap { blocks, prefixes })
    }

    /// Blocks left.
    pub fn kept(&self) -> usize {
        self.prefixes.len()
    }

    /// The output name of the input tensor `name`: unchanged outside the
    /// blocks, renumbered in a kept block, `None` in a removed one.
    pub fn rename(&self, name: &str) -> Option<String> {
        for (prefix, out) in &self.blocks {
            if let Some(rest) = name.strip_prefix(prefix.as_str()) {
                return out.map(|o| format!("{}{rest}", prefix.replace_index(o)));
            }
        }
        Some(name.to_string())
    }

    /// The input name of the output tensor `name` (the inverse of
    /// [`BlockMap::rename`] for kept tensors).
    pub fn source(&self, name: &str) -> String {
        for (o, prefix) in self.prefixes.iter().enumerate() {
            let renamed = prefix.replace_index(o);
            if let Some(rest) = name.strip_prefix(renamed.as_str()) {
                return format!("{prefix}{rest}");
            }
        }
        name.to_string()
    }
}

/// A block prefix with its index replaced (`model.layers.7.` as block 3 is
/// `model.layers.3.`): the last run of digits before the final dot.
trait ReplaceIndex {
    fn replace_index(&self, index: usize) -> String;
}

impl ReplaceIndex for String {
    fn replace_index(&self, index: usize) -> String {
        let body = self.strip_suffix('.').unwrap_or(self);
        let digits = body.len() - body.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        format!("{}{index}.", &body[..body.len() - digits])
    }
}

/// The weights of a model with blocks removed, read from the input's:
/// the output's names mapped back through a [`BlockMap`].
pub struct Renamed<'a> {
    /// The input's weights.
    pub inner: &'a dyn Weights,
    /// The removal.
    pub map: &'a BlockMap,
}

impl Weights for Renamed<'_> {
    fn tensor(
        &self,
        name: &str,
        dtype: candle_core::DType,
        device: &candle_core::Device,
    ) -> Result<Tensor> {
        self.inner.tensor(&self.map.source(name), dtype, device)
    }

    fn contains(&self, name: &str) -> bool {
        self.inner.contains(&self.map.source(name))
    }
}

/// `config` with `removed` blocks left out: `num_hidden_layers` lowered, a
/// per-layer `layer_types` list (where the config has one) cut to match,
/// and qwen2's `max_window_layers` lowered by the removed blocks below it,
/// so every kept block keeps its attention window. A decoder whose blocks
/// differ in attention by a rule rather than a list (Gemma 2's alternation,
/// Gemma 3's `sliding_window_pattern`) gets the list written out first; a
/// Qwen mixture of experts with dense blocks gets them listed in
/// `mlp_only_layers` by their new indices (`decoder_sparse_step` 1).
pub fn config_without(config: &serde_json::Value, removed: &[usize]) -> Result<serde_json::Value> {
    let parsed = LlamaConfig::from_value(config, "<config>").ok();
    let implicit = match &parsed {
        Some(c) if c.sliding_window.is_some() && c.sliding.iter().any(|&s| !s) => {
            Some(c.sliding.clone())
        }
        _ => None,
    };
    // A Qwen MoE's dense blocks (mlp_only_layers, decoder_sparse_step):
    // the kept ones listed by their new indices, every other block sparse.
    let dense_blocks: Option<Vec<usize>> = parsed
        .as_ref()
        .and_then(|c| c.moe.as_ref())
        .filter(|m| m.sparse.iter().any(|&s| !s))
        .map(|m| {
            let kept = (0..m.sparse.len()).filter(|i| !removed.contains(i));
            kept.enumerate()
                .filter(|&(_, old)| !m.sparse[old])
                .map(|(new, _)| new)
                .collect()
        });
    let mut config = config.clone();
    if let (Some(dense), Some(object)) = (dense_blocks, config.as_object_mut()) {
        object.insert("decoder_sparse_step".into(), 1.into());
        object.insert("mlp_only_layers".into(), dense.into());
    }
    if let (Some(sliding), Some(object)) = (implicit, config.as_object_mut())
        && !object.contains_key("layer_types")
    {
        let types: Vec<serde_json::Value> = sliding
            .iter()
            .map(|&s| {
                if s {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
                .into()
            })
            .collect();
        object.insert("layer_types".into(), types.into());
    }
    let object = config
        .as_object_mut()
        .ok_or_else(|| Error::request("config.json is not a JSON object"))?;
    let layers = object
        .get("num_hidden_layers")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| Error::request("config.json has no num_hidden_layers"))?
        as usize;
    object.insert("num_hidden_layers".into(), (layers - removed.len()).into());
    // qwen2's window starts at block max_window_layers: keep it on the
    // same kept blocks.
    if let Some(from) = object
        .get("max_window_layers")
        .and_then(serde_json::Value::as_u64)
    {
        let before = removed.iter().filter(|&&i| (i as u64) < from).count() as u64;
        object.insert("max_window_layers".into(), (from - before).into());
    }
    if let Some(serde_json::Value::Array(types)) = object.get_mut("layer_types")
        && types.len() == layers
    {
        let kept: Vec<serde_json::Value> = types
            .iter()
            .enumerate()
            .filter(|(i, _)| !removed.contains(i))
            .map(|(_, v)| v.clone())
            .collect();
        *types = kept;
    }
    Ok(config)
}
