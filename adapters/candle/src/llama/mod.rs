//! LLaMA-family decoders (`model_type` llama, mistral, qwen2) as a prunus
//! [`Graph`], and the perplexity that evaluates them.
//!
//! The graph follows Hugging Face's `LlamaForCausalLM`, `MistralForCausalLM`
//! and `Qwen2ForCausalLM` with eager attention, computed in f32 whatever the
//! checkpoint's dtype: token embeddings; pre-norm blocks of RMSNorm,
//! grouped-query self-attention with rotary position embeddings (the
//! `rotate_half` convention) and a causal mask (and the sliding window where
//! the config sets one), RMSNorm and a SwiGLU MLP, each with its residual;
//! then the final RMSNorm and the LM head (the token embeddings when tied).
//! A batch is one unpadded sequence starting at position 0.
//!
//! ```
//! use std::collections::HashMap;
//! use candle_core::{Device, Tensor};
//! use prunus_candle::llama::{Llama, LlamaConfig, perplexity};
//! use prunus_candle::Graph;
//!
//! let config = LlamaConfig::from_json(
//!     r#"{"model_type": "llama", "hidden_size": 8, "intermediate_size": 16,
//!         "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
//!         "vocab_size": 12, "max_position_embeddings": 32}"#,
//!     "<memory>",
//! )?;
//! let mut weights = HashMap::new();
//! for (name, dims) in config.tensor_shapes() {
//!     let n: usize = dims.iter().product();
//!     let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 0.3).collect();
//!     weights.insert(name, Tensor::from_vec(values, dims, &Device::Cpu)?);
//! }
//! let mut llama = Llama::new(config, Device::Cpu)?;
//! llama.load_all(&weights)?;
//! let logits = llama.forward(&[1, 5, 7, 2])?;
//! assert_eq!(logits.dims(), [1, 4, 12]);
//! let ppl = perplexity(&llama, &[1, 5, 7, 2, 9, 3, 3, 4, 0, 11], 4)?;
//! assert_eq!(ppl.predicted, 3 + 3 + 1);
//! assert!(ppl.perplexity > 1.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;

pub use config::{LlamaConfig, ModelType, RopeScaling};

use std::fmt;

use candle_core::{D, DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::folder::ModelFolder;
use crate::graph::{Family, Graph, KvCache, Part, Structure, StructureSpan, Weights};
use crate::record::{Linear, Recorder, record};
use prunus_core::methods::layerwise::GroupLayout;

/// An RMSNorm's scale.
#[derive(Clone, Debug)]
struct RmsNorm {
    weight: Tensor,
}

impl RmsNorm {
    /// `x / sqrt(mean(x²) + eps) · weight` over the last dimension.
    fn forward(&self, x: &Tensor, eps: f64) -> Result<Tensor> {
        let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
        Ok(x.broadcast_mul(&scale)?.broadcast_mul(&self.weight)?)
    }
}

/// One decoder block's weights.
#[derive(Clone, Debug)]
struct Block {
    input_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_attention_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Block {
    fn linears(&self) -> [&Linear; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }

    fn linears_mut(&mut self) -> [&mut Linear; 7] {
        [
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.o,
            &mut self.gate,
            &mut self.up,
            &mut self.down,
        ]
    }
}

/// The head's weights.
#[derive(Clone, Debug)]
struct Head {
    norm: RmsNorm,
    lm_head: Linear,
}

/// A LLaMA-family decoder as a [`Graph`] ([`Family::Decoder`]): the token
/// embedding, pre-norm blocks, and the logits as its head. Computes in f32
/// on the device it is given.
pub struct Llama {
    config: LlamaConfig,
    device: Device,
    origin: String,
    inv_freq: Vec<f32>,
    embeddings: Option<Tensor>,
    blocks: Vec<Option<Block>>,
    head: Option<Head>,
}

impl Llama {
    /// A graph for `config` computing on `device`; no part is loaded yet.
    /// Fails when the config's sizes are inconsistent.
    pub fn new(config: LlamaConfig, device: Device) -> Result<Llama> {
        config
            .check()
            .map_err(|reason| Error::model("<config>", reason))?;
        let blocks = (0..config.num_hidden_layers).map(|_| None).collect();
        Ok(Llama {
            inv_freq: config.inv_freq(),
            config,
            device,
            origin: "<weights>".into(),
            embeddings: None,
            blocks,
            head: None,
        })
    }

    /// A graph for the model in `folder` (its `config.json`), named after
    /// the folder in errors; no part is loaded yet.
    pub fn from_model_folder(folder: &ModelFolder, device: Device) -> Result<Llama> {
        let origin = folder.dir().display().to_string();
        let config = LlamaConfig::from_value(folder.config(), &origin)?;
        Ok(Llama::new(config, device)?.with_origin(origin))
    }

    /// Names the weights' origin (the model folder) in this graph's errors.
    pub fn with_origin(mut self, origin: impl fmt::Display) -> Llama {
        self.origin = origin.to_string();
        self
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The device the graph computes on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The final RMSNorm on `hidden` (the last block's output): the states
    /// the LM head reads. The head part must be loaded.
    pub fn final_norm(&self, hidden: &Tensor) -> Result<Tensor> {
        self.head_part()?
            .norm
            .forward(hidden, self.config.rms_norm_eps)
    }

    fn head_part(&self) -> Result<&Head> {
        self.head.as_ref().ok_or_else(|| {
            Error::request(format!(
                "{} head (final norm and LM head) is not loaded: load(Part::Head) first",
                self.config.model_type
            ))
        })
    }

    /// Whether `part`'s weights are loaded.
    pub fn is_loaded(&self, part: Part) -> bool {
        match part {
            Part::Embeddings => self.embeddings.is_some(),
            Part::Block(i) => matches!(self.blocks.get(i), Some(Some(_))),
            Part::Head => self.head.is_some(),
        }
    }

    /// The tensor `name`, checked against the shape the config implies.
    fn tensor(&self, weights: &dyn Weights, name: &str, dims: &[usize]) -> Result<Tensor> {
        let t = weights
            .tensor(name, DType::F32, &self.device)
            .map_err(|e| match e {
                Error::Model { reason, .. } => Error::model(
                    &self.origin,
                    format!(
                        "{reason} (a {} checkpoint needs it)",
                        self.config.model_type
                    ),
                ),
                other => other,
            })?;
        if t.dims() != dims {
            return Err(Error::model(
                &self.origin,
                format!(
                    "{name} has shape {:?} where config.json implies {dims:?}",
                    t.dims()
                ),
            ));
        }
        Ok(t)
    }

    fn norm(&self, weights: &dyn Weights, name: &str) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: self.tensor(
                weights,
                &format!("{name}.weight"),
                &[self.config.hidden_size],
            )?,
        })
    }

    fn load_block(&self, i: usize, weights: &dyn Weights) -> Result<Block> {
        let c = &self.config;
        let widths = [
            c.hidden_size,
            c.intermediate_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
        ];
        let layer = format!("model.layers.{i}");
        let mut linears = Vec::with_capacity(7);
        for (name, out, inp, bias) in c.projections() {
            let (out, inp) = (widths[out as usize], widths[inp as usize]);
            let name = format!("{layer}.{name}");
            let weight = self.tensor(weights, &format!("{name}.weight"), &[out, inp])?;
            let bias = if bias {
                Some(self.tensor(weights, &format!("{name}.bias"), &[out])?)
            } else {
                None
            };
            linears.push(Linear::new(name, weight, bias)?);
        }
        let mut linears = linears.into_iter();
        let mut next = || linears.next().expect("seven projections");
        Ok(Block {
            input_norm: self.norm(weights, &format!("{layer}.input_layernorm"))?,
            q: next(),
            k: next(),
            v: next(),
            o: next(),
            post_attention_norm: self
                .norm(weights, &format!("{layer}.post_attention_layernorm"))?,
            gate: next(),
            up: next(),
            down: next(),
        })
    }

    fn load_head(&self, weights: &dyn Weights) -> Result<Head> {
        let c = &self.config;
        let dims = [c.vocab_size, c.hidden_size];
        let (name, weight) = if c.tie_word_embeddings {
            let weight = match &self.embeddings {
                // Tied: the loaded embedding is the same tensor; share it.
                Some(e) => e.clone(),
                None => self.tensor(weights, "model.embed_tokens.weight", &dims)?,
            };
            ("model.embed_tokens", weight)
        } else {
            ("lm_head", self.tensor(weights, "lm_head.weight", &dims)?)
        };
        Ok(Head {
            norm: self.norm(weights, "model.norm")?,
            lm_head: Linear::new(name, weight, None)?,
        })
    }

    fn check_block_index(&self, i: usize) -> Result<()> {
        if i >= self.blocks.len() {
            return Err(Error::request(format!(
                "{} block {i} does not exist: the model has {} blocks (0..{})",
                self.config.model_type,
                self.blocks.len(),
                self.blocks.len()
            )));
        }
        Ok(())
    }

    fn loaded_block(&self, i: usize) -> Result<&Block> {
        self.check_block_index(i)?;
        self.blocks[i].as_ref().ok_or_else(|| {
            Error::request(format!(
                "{} block {i} is not loaded: load(Part::Block({i})) before running it",
                self.config.model_type
            ))
        })
    }

    /// The rotary embedding's `cos` and `sin` for positions
    /// `offset..offset + seq`: `[seq, head_dim]` each, the frequencies
    /// repeated over both halves.
    fn rotary(&self, offset: usize, seq: usize) -> Result<(Tensor, Tensor)> {
        let d = self.config.head_dim;
        let mut cos = Vec::with_capacity(seq * d);
        let mut sin = Vec::with_capacity(seq * d);
        for p in offset..offset + seq {
            for _ in 0..2 {
                for &f in &self.inv_freq {
                    // f32 product, as transformers computes the angles.
                    let angle = p as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        Ok((
            Tensor::from_vec(cos, (seq, d), &self.device)?,
            Tensor::from_vec(sin, (seq, d), &self.device)?,
        ))
    }

    /// The additive mask `[seq, offset + seq]` of queries at positions
    /// `offset..offset + seq` over keys `0..offset + seq`: 0 where query `q`
    /// sees key `k` (`k ≤ q`, and `k > q - window` with a window), −∞
    /// elsewhere.
    fn mask(&self, offset: usize, seq: usize, window: Option<usize>) -> Result<Tensor> {
        let keys = offset + seq;
        let mut m = Vec::with_capacity(seq * keys);
        for q in offset..keys {
            for k in 0..keys {
                let seen = k <= q && window.is_none_or(|w| k + w > q);
                m.push(if seen { 0.0f32 } else { f32::NEG_INFINITY });
            }
        }
        Ok(Tensor::from_vec(m, (seq, keys), &self.device)?)
    }

    /// Grouped-query causal self-attention: `x` `[b, seq, hidden]` (normed)
    /// in, the heads' concatenated context `[b, seq, heads · head_dim]` out.
    /// With `past`, the keys and values of the earlier tokens (rotated, as
    /// cached) come first and are replaced by those of all tokens seen.
    fn attention(
        &self,
        i: usize,
        block: &Block,
        x: &Tensor,
        past: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let c = &self.config;
        let d = c.head_dim;
        // The block's own head counts: structured pruning may have removed
        // heads or KV groups from it (its projections say how many are left).
        let heads = block.q.weight().dim(0)? / d;
        let kv_heads = block.k.weight().dim(0)? / d;
        let split = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((b, seq, n, d))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split(block.q.forward(x)?, heads)?;
        let k = split(block.k.forward(x)?, kv_heads)?;
        let v = split(block.v.forward(x)?, kv_heads)?;
        let offset = match &past {
            Some(Some((k, _))) => k.dim(2)?,
            _ => 0,
        };
        let (cos, sin) = self.rotary(offset, seq)?;
        let rotate = |t: &Tensor| -> Result<Tensor> {
            let first = t.narrow(D::Minus1, 0, d / 2)?;
            let second = t.narrow(D::Minus1, d / 2, d / 2)?;
            let rotated = Tensor::cat(&[&second.neg()?, &first], D::Minus1)?;
            Ok((t.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
        };
        let q = rotate(&q)?;
        let mut k = rotate(&k)?;
        let mut v = v;
        if let Some(cache) = past {
            if let Some((pk, pv)) = cache.take() {
                k = Tensor::cat(&[&pk, &k], 2)?.contiguous()?;
                v = Tensor::cat(&[&pv, &v], 2)?.contiguous()?;
            }
            *cache = Some((k.clone(), v.clone()));
        }
        let keys = k.dim(2)?;
        // Each kv head serves `heads / kv_heads` consecutive query heads.
        let repeat = |t: Tensor| -> Result<Tensor> {
            let groups = heads / kv_heads;
            if groups == 1 {
                return Ok(t);
            }
            Ok(t.unsqueeze(2)?
                .expand((b, kv_heads, groups, keys, d))?
                .reshape((b, heads, keys, d))?)
        };
        let k = repeat(k)?;
        let v = repeat(v)?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? * (1.0 / (d as f64).sqrt()))?;
        let scores = if seq > 1 || c.window(i).is_some_and(|w| keys > w) {
            scores.broadcast_add(&self.mask(offset, seq, c.window(i))?)?
        } else {
            scores
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs.matmul(&v.contiguous()?)?;
        Ok(context
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, seq, heads * d))?)
    }

    /// Block `i` on hidden states `[b, seq, hidden]`, recording into
    /// `recorder`, attending also to the cached earlier tokens with `past`.
    fn run_block(
        &self,
        i: usize,
        hidden: &Tensor,
        recorder: Option<&mut Recorder<'_>>,
        past: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let block = self.loaded_block(i)?;
        let mut recorder = recorder;
        let eps = self.config.rms_norm_eps;
        match hidden.dims() {
            &[_, seq, h] if h == self.config.hidden_size && seq > 0 => {}
            dims => {
                return Err(Error::request(format!(
                    "{} block {i}: hidden states of shape {dims:?}, expected [batch, seq, {}]",
                    self.config.model_type, self.config.hidden_size
                )));
            }
        }
        let x = block.input_norm.forward(hidden, eps)?;
        record(&mut recorder, &[&block.q, &block.k, &block.v], &x)?;
        let context = self.attention(i, block, &x, past)?;
        record(&mut recorder, &[&block.o], &context)?;
        let h = (hidden + block.o.forward(&context)?)?;
        let y = block.post_attention_norm.forward(&h, eps)?;
        record(&mut recorder, &[&block.gate, &block.up], &y)?;
        let inner = (block.gate.forward(&y)?.silu()? * block.up.forward(&y)?)?;
        record(&mut recorder, &[&block.down], &inner)?;
        Ok((h + block.down.forward(&inner)?)?)
    }
}

impl Graph for Llama {
    fn family(&self) -> Family {
        Family::Decoder
    }

    fn cache(&self) -> Option<KvCache> {
        Some(KvCache::new(self.blocks.len()))
    }

    fn forward_cached(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        if cache.blocks.len() != self.blocks.len() {
            return Err(Error::request(format!(
                "a key and value cache of {} blocks for a model of {}",
                cache.blocks.len(),
                self.blocks.len()
            )));
        }
        let mut h = self.embed(tokens)?;
        for (i, past) in cache.blocks.iter_mut().enumerate() {
            h = self.run_block(i, &h, None, Some(past))?;
        }
        self.head(&h)
    }

    fn block_prefix(&self, i: usize) -> Option<String> {
        Some(format!("model.layers.{i}."))
    }

    fn structures(&self, i: usize) -> Vec<StructureSpan> {
        let c = &self.config;
        let d = c.head_dim;
        // A loaded block may already have lost KV groups or heads.
        let (heads, kv_heads) = match self.blocks.get(i) {
            Some(Some(b)) => (
                b.q.weight().dim(0).map_or(c.num_attention_heads, |r| r / d),
                b.k.weight().dim(0).map_or(c.num_key_value_heads, |r| r / d),
            ),
            _ => (c.num_attention_heads, c.num_key_value_heads),
        };
        let attn = format!("model.layers.{i}.self_attn");
        let mlp = format!("model.layers.{i}.mlp");
        let mut spans = Vec::new();
        if kv_heads > 0 && heads.is_multiple_of(kv_heads) {
            let per = heads / kv_heads;
            if let Ok(layout) = GroupLayout::new(d * per, kv_heads) {
                spans.push(StructureSpan {
                    structure: Structure::KvGroups,
                    config: vec![("num_key_value_heads", 1), ("num_attention_heads", per)],
                    fixed: vec![("head_dim", d)],
                    consumer: format!("{attn}.o_proj"),
                    producers: vec![
                        (format!("{attn}.q_proj"), d * per),
                        (format!("{attn}.k_proj"), d),
                        (format!("{attn}.v_proj"), d),
                    ],
                    layout,
                });
            }
            if let Ok(layout) = GroupLayout::new(d, heads).and_then(|l| l.in_sets(kv_heads)) {
                spans.push(StructureSpan {
                    structure: Structure::Heads,
                    config: vec![("num_attention_heads", 1)],
                    fixed: vec![("head_dim", d)],
                    consumer: format!("{attn}.o_proj"),
                    producers: vec![(format!("{attn}.q_proj"), d)],
                    layout,
                });
            }
        }
        if let Ok(layout) = GroupLayout::new(1, c.intermediate_size) {
            spans.push(StructureSpan {
                structure: Structure::MlpChannels,
                config: vec![("intermediate_size", 1)],
                fixed: Vec::new(),
                consumer: format!("{mlp}.down_proj"),
                producers: vec![
                    (format!("{mlp}.gate_proj"), 1),
                    (format!("{mlp}.up_proj"), 1),
                ],
                layout,
            });
        }
        spans
    }

    fn linear_names(&self, i: usize) -> Vec<String> {
        self.config
            .projections()
            .iter()
            .map(|(name, ..)| format!("model.layers.{i}.{name}"))
            .collect()
    }

    fn blocks(&self) -> usize {
        self.config.num_hidden_layers
    }

    fn max_len(&self) -> usize {
        self.config.max_position_embeddings
    }

    fn load(&mut self, part: Part, weights: &dyn Weights) -> Result<()> {
        match part {
            Part::Embeddings => {
                let dims = [self.config.vocab_size, self.config.hidden_size];
                self.embeddings = Some(self.tensor(weights, "model.embed_tokens.weight", &dims)?);
            }
            Part::Block(i) => {
                self.check_block_index(i)?;
                self.blocks[i] = Some(self.load_block(i, weights)?);
            }
            Part::Head => self.head = Some(self.load_head(weights)?),
        }
        Ok(())
    }

    fn release(&mut self, part: Part) {
        match part {
            Part::Embeddings => self.embeddings = None,
            Part::Block(i) => {
                if let Some(slot) = self.blocks.get_mut(i) {
                    *slot = None;
                }
            }
            Part::Head => self.head = None,
        }
    }

    fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        let model = self.config.model_type;
        let e = self.embeddings.as_ref().ok_or_else(|| {
            Error::request(format!(
                "{model} embeddings are not loaded: load(Part::Embeddings) first"
            ))
        })?;
        let seq = tokens.len();
        if seq == 0 || seq > self.config.max_position_embeddings {
            return Err(Error::request(format!(
                "a sequence of {seq} tokens: {model} takes 1 to {} (max_position_embeddings)",
                self.config.max_position_embeddings
            )));
        }
        if let Some(&id) = tokens
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(Error::request(format!(
                "token id {id} is outside the vocabulary of {} tokens: was the text \
                 tokenised with this model's tokenizer?",
                self.config.vocab_size
            )));
        }
        let ids = Tensor::from_slice(tokens, seq, &self.device)?;
        Ok(e.index_select(&ids, 0)?.unsqueeze(0)?)
    }

    fn block(
        &self,
        i: usize,
        hidden: &Tensor,
        recorder: Option<&mut Recorder<'_>>,
    ) -> Result<Tensor> {
        self.run_block(i, hidden, recorder, None)
    }

    fn head(&self, hidden: &Tensor) -> Result<Tensor> {
        let head = self.head_part()?;
        let normed = head.norm.forward(hidden, self.config.rms_norm_eps)?;
        head.lm_head.forward(&normed)
    }

    fn linears(&self, i: usize) -> Result<Vec<&Linear>> {
        Ok(self.loaded_block(i)?.linears().to_vec())
    }

    fn linear_mut(&mut self, i: usize, name: &str) -> Result<&mut Linear> {
        self.loaded_block(i)?;
        let model = self.config.model_type;
        let block = self.blocks[i].as_mut().expect("checked loaded above");
        let mut names = Vec::new();
        for l in block.linears_mut() {
            if l.name() == name {
                return Ok(l);
            }
            names.push(l.name().to_string());
        }
        Err(Error::request(format!(
            "{model} block {i} has no linear layer {name}; it has {}",
            names.join(", ")
        )))
    }
}

/// A decoder's perplexity on a token stream.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Perplexity {
    /// `exp(mean_nll)`.
    pub perplexity: f64,
    /// The mean negative log-likelihood (nats) of the predicted tokens.
    pub mean_nll: f64,
    /// The number of predicted tokens: every token of a window but its
    /// first.
    pub predicted: usize,
}

impl Perplexity {
    /// The perplexity of `predicted` tokens whose negative log-likelihoods
    /// sum to `total_nll` (at least one token).
    pub fn from_total(total_nll: f64, predicted: usize) -> Perplexity {
        let mean_nll = total_nll / predicted.max(1) as f64;
        Perplexity {
            perplexity: mean_nll.exp(),
            mean_nll,
            predicted,
        }
    }
}

/// The perplexity of a decoder `graph` (every part loaded) on `tokens`:
/// the stream cut into non-overlapping windows of `seq_len` tokens (a last
/// shorter window kept when it has at least two), each run as one
/// sequence; in each window every token but the first is predicted from
/// those before it ([`next_token_nll`]); the negative log-likelihoods are
/// summed in f64 and `perplexity = exp(total / predicted)`. This is
/// transformers' cross entropy of `logits[:-1]` against `tokens[1:]` per
/// window, weighted by the window's predicted tokens.
pub fn perplexity(graph: &dyn Graph, tokens: &[u32], seq_len: usize) -> Result<Perplexity> {
    if graph.family() != Family::Decoder {
        return Err(Error::request(
            "perplexity is defined for decoders: an encoder does not predict the next token",
        ));
    }
    if seq_len < 2 || seq_len > graph.max_len() {
        return Err(Error::request(format!(
            "a perplexity window of {seq_len} tokens: give 2 to {} (the model's context)",
            graph.max_len()
        )));
    }
    let mut total = 0.0f64;
    let mut predicted = 0usize;
    for window in tokens.chunks(seq_len).filter(|w| w.len() >= 2) {
        let logits = graph.forward(window)?;
        total += next_token_nll(&logits, window)?;
        predicted += window.len() - 1;
    }
    if predicted == 0 {
        return Err(Error::request(format!(
            "a stream of {} tokens predicts none: perplexity needs at least 2 tokens",
            tokens.len()
        )));
    }
    Ok(Perplexity::from_total(total, predicted))
}

/// The summed negative log-likelihood (nats) of `tokens[1..]` under the
/// logits `[1, seq, vocab]` (or `[seq, vocab]`) of `tokens`: the log-softmax
/// of each of the first `seq - 1` rows, in f32, at the next token, summed
/// in f64.
pub fn next_token_nll(logits: &Tensor, tokens: &[u32]) -> Result<f64> {
    let logits = match logits.dims() {
        &[1, _, _] => logits.squeeze(0)?,
        &[_, _] => logits.clone(),
        dims => {
            return Err(Error::request(format!(
                "logits of shape {dims:?}: expected [1, seq, vocab] or [seq, vocab]"
            )));
        }
    };
    let (seq, vocab) = logits.dims2()?;
    if seq != tokens.len() || seq < 2 {
        return Err(Error::request(format!(
            "logits for {seq} positions and {} tokens: give the logits of the tokens, at least 2",
            tokens.len()
        )));
    }
    if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
        return Err(Error::request(format!(
            "token id {id} is outside the logits' vocabulary of {vocab}"
        )));
    }
    let log_probs = candle_nn::ops::log_softmax(
        &logits.narrow(0, 0, seq - 1)?.to_dtype(DType::F32)?,
        D::Minus1,
    )?;
    let targets = Tensor::from_slice(&tokens[1..], (seq - 1, 1), logits.device())?;
    let picked = log_probs
        .gather(&targets, 1)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(-picked.iter().map(|&x| f64::from(x)).sum::<f64>())
}
