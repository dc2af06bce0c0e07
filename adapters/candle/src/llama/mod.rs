//! LLaMA-family decoders (`model_type` llama, mistral, qwen2, qwen3,
//! gemma2, gemma3_text, phi3) as a prunus [`Graph`], and the perplexity
//! that evaluates them.
//!
//! The graph follows Hugging Face's `LlamaForCausalLM` and its relatives
//! (`MistralForCausalLM`, `Qwen2ForCausalLM`, `Qwen3ForCausalLM`,
//! `Gemma2ForCausalLM`, `Gemma3ForCausalLM`, `Phi3ForCausalLM`) with eager
//! attention, computed in f32 whatever the checkpoint's dtype: token
//! embeddings (times `sqrt(hidden_size)` for Gemma); pre-norm blocks of
//! RMSNorm, grouped-query self-attention with rotary position embeddings
//! (the `rotate_half` convention, per-head query and key norms for Qwen3
//! and Gemma 3, LongRoPE and partial rotation for Phi-3, soft-capped scores
//! for Gemma 2) and a causal mask (and the sliding window on the blocks the
//! config marks), RMSNorm and a gated MLP (SwiGLU, or GeGLU for Gemma),
//! each with its residual (Gemma also norms each branch's output); then the
//! final RMSNorm and the LM head (the token embeddings when tied;
//! soft-capped logits for Gemma 2). A batch is one unpadded sequence
//! starting at position 0.
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

pub use config::{Activation, ExpertNames, LlamaConfig, ModelType, Moe, Rope, RopeScaling};

use std::fmt;

use candle_core::{D, DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::folder::ModelFolder;
use crate::graph::{
    ExpertSpan, Family, Graph, KvCache, Part, Producer, Structure, StructureSpan, Weights,
    check_tokens,
};
use crate::record::{Linear, Recorder, record};
use prunus_core::methods::layerwise::GroupLayout;

/// An RMSNorm's scale (`1 + w` already added for Gemma's).
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
    /// The MLP's input norm, or (Gemma) the attention output's norm.
    post_attention_norm: RmsNorm,
    /// Gemma's MLP input and output norms.
    feedforward_norms: Option<(RmsNorm, RmsNorm)>,
    /// The per-head query and key norms.
    qk_norms: Option<(RmsNorm, RmsNorm)>,
    /// The projections in checkpoint order: q, k, v, o, gate, up, down;
    /// or, fused, qkv, o, gate_up, down; or, for a mixture, q, k, v, o,
    /// then gate, up and down of each expert and of the shared expert.
    linears: Vec<Linear>,
    fused: bool,
    /// The routing of a mixture-of-experts MLP.
    moe: Option<Routing>,
}

/// A mixture's router and its settings.
#[derive(Clone, Debug)]
struct Routing {
    /// `[experts, hidden]`.
    router: Tensor,
    /// Qwen's shared expert gate `[1, hidden]`, with a shared expert.
    shared_gate: Option<Tensor>,
    experts: usize,
    top_k: usize,
    normalize: bool,
}

impl Block {
    /// The layers reading the attention's normed input.
    fn attention_inputs(&self) -> &[Linear] {
        &self.linears[..if self.fused { 1 } else { 3 }]
    }

    fn o(&self) -> &Linear {
        &self.linears[if self.fused { 1 } else { 3 }]
    }

    /// The layers reading the MLP's normed input.
    fn mlp_inputs(&self) -> &[Linear] {
        if self.fused {
            &self.linears[2..3]
        } else {
            &self.linears[4..6]
        }
    }

    fn down(&self) -> &Linear {
        self.linears.last().expect("a block has projections")
    }

    /// Expert `e`'s gate, up and down projections (`e` = the expert count:
    /// the shared expert's).
    fn expert(&self, e: usize) -> &[Linear] {
        &self.linears[4 + 3 * e..4 + 3 * e + 3]
    }

    /// The query and key heads the block has (structured pruning may have
    /// removed some): the output projection's input is the query heads'.
    fn heads(&self, head_dim: usize) -> Result<(usize, usize)> {
        let heads = self.o().weight().dim(1)? / head_dim;
        let kv_rows = if self.fused {
            (self.linears[0].weight().dim(0)? - heads * head_dim) / 2
        } else {
            self.linears[1].weight().dim(0)?
        };
        Ok((heads, kv_rows / head_dim))
    }
}

/// The layers as the recorder takes them.
fn refs(layers: &[Linear]) -> Vec<&Linear> {
    layers.iter().collect()
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

    fn norm(&self, weights: &dyn Weights, name: &str, width: usize) -> Result<RmsNorm> {
        let weight = self.tensor(weights, &format!("{name}.weight"), &[width])?;
        Ok(RmsNorm {
            weight: if self.config.norm_plus_one {
                // Gemma scales by 1 + w, computed in f32 as transformers does.
                (weight + 1.0)?
            } else {
                weight
            },
        })
    }

    fn load_block(&self, i: usize, weights: &dyn Weights) -> Result<Block> {
        let c = &self.config;
        let layer = format!("model.layers.{i}");
        let mut linears = Vec::with_capacity(7);
        for p in c.projections(i) {
            let name = format!("{layer}.{}", p.name);
            let weight = self.tensor(weights, &format!("{name}.weight"), &[p.out, p.inp])?;
            let bias = if p.bias {
                Some(self.tensor(weights, &format!("{name}.bias"), &[p.out])?)
            } else {
                None
            };
            linears.push(Linear::new(name, weight, bias)?);
        }
        let norm = |name: &str, width: usize| self.norm(weights, &format!("{layer}.{name}"), width);
        let h = c.hidden_size;
        Ok(Block {
            input_norm: norm("input_layernorm", h)?,
            post_attention_norm: norm("post_attention_layernorm", h)?,
            feedforward_norms: if c.sandwich_norms {
                Some((
                    norm("pre_feedforward_layernorm", h)?,
                    norm("post_feedforward_layernorm", h)?,
                ))
            } else {
                None
            },
            qk_norms: if c.qk_norm {
                Some((
                    norm("self_attn.q_norm", c.head_dim)?,
                    norm("self_attn.k_norm", c.head_dim)?,
                ))
            } else {
                None
            },
            linears,
            fused: c.fused_projections,
            moe: match c.moe_of(i) {
                None => None,
                Some(m) => {
                    let mut routers = c.routers(i).into_iter().map(|(name, rows)| {
                        self.tensor(
                            weights,
                            &format!("{layer}.{name}.weight"),
                            &[rows, c.hidden_size],
                        )
                    });
                    Some(Routing {
                        router: routers.next().expect("a mixture has a router")?,
                        shared_gate: routers.next().transpose()?,
                        experts: m.experts,
                        top_k: m.top_k,
                        normalize: m.normalize,
                    })
                }
            },
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
            norm: self.norm(weights, "model.norm", c.hidden_size)?,
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

    /// Block `i`'s rotary embedding's `cos` and `sin` for positions
    /// `offset..offset + seq`: `[seq, rotary_dim]` each, the frequencies
    /// repeated over both halves, times LongRoPE's attention factor.
    fn rotary(&self, i: usize, offset: usize, seq: usize) -> Result<(Tensor, Tensor)> {
        let d = self.config.rotary_dim;
        let rope = self.config.rope_of(i);
        let inv_freq = rope.inv_freq(d, offset + seq);
        let scale = rope.attention_factor();
        let mut cos = Vec::with_capacity(seq * d);
        let mut sin = Vec::with_capacity(seq * d);
        for p in offset..offset + seq {
            for _ in 0..2 {
                for &f in &inv_freq {
                    // f32 product, as transformers computes the angles.
                    let angle = p as f32 * f;
                    cos.push(angle.cos() * scale);
                    sin.push(angle.sin() * scale);
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
        let (heads, kv_heads) = block.heads(d)?;
        let split = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((b, seq, n, d))?.transpose(1, 2)?.contiguous()?)
        };
        let (q, k, v) = match block.attention_inputs() {
            [qkv] => {
                let all = qkv.forward(x)?;
                let (q, kv) = (heads * d, kv_heads * d);
                (
                    all.narrow(D::Minus1, 0, q)?,
                    all.narrow(D::Minus1, q, kv)?,
                    all.narrow(D::Minus1, q + kv, kv)?,
                )
            }
            [q, k, v] => (q.forward(x)?, k.forward(x)?, v.forward(x)?),
            _ => unreachable!("one fused or three separate attention inputs"),
        };
        let mut q = split(q, heads)?;
        let mut k = split(k, kv_heads)?;
        let v = split(v, kv_heads)?;
        if let Some((q_norm, k_norm)) = &block.qk_norms {
            q = q_norm.forward(&q, c.rms_norm_eps)?;
            k = k_norm.forward(&k, c.rms_norm_eps)?;
        }
        let offset = match &past {
            Some(Some((k, _))) => k.dim(2)?,
            _ => 0,
        };
        let (cos, sin) = self.rotary(i, offset, seq)?;
        let r = c.rotary_dim;
        let rotate = |t: &Tensor| -> Result<Tensor> {
            let part = t.narrow(D::Minus1, 0, r)?;
            let first = part.narrow(D::Minus1, 0, r / 2)?;
            let second = part.narrow(D::Minus1, r / 2, r / 2)?;
            let rotated = Tensor::cat(&[&second.neg()?, &first], D::Minus1)?;
            let turned = (part.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?;
            if r == d {
                return Ok(turned);
            }
            // Partial rotary: the last dimensions pass unrotated.
            Ok(Tensor::cat(
                &[&turned, &t.narrow(D::Minus1, r, d - r)?],
                D::Minus1,
            )?)
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
        let scale = 1.0 / c.query_pre_attn_scalar.unwrap_or(d as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
        if let Some(cap) = c.attn_logit_softcapping {
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
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

    /// The gated MLP's inner activations `act(gate(y)) · up(y)`.
    fn mlp_inner(&self, block: &Block, y: &Tensor) -> Result<Tensor> {
        let (gate, up) = match block.mlp_inputs() {
            [gate_up] => {
                let both = gate_up.forward(y)?;
                let f = both.dim(D::Minus1)? / 2;
                (both.narrow(D::Minus1, 0, f)?, both.narrow(D::Minus1, f, f)?)
            }
            [gate, up] => (gate.forward(y)?, up.forward(y)?),
            _ => unreachable!("one fused or two separate MLP inputs"),
        };
        Ok((self.activate(&gate)? * up)?)
    }

    /// The MLP's gate activation.
    fn activate(&self, gate: &Tensor) -> Result<Tensor> {
        Ok(match self.config.activation {
            Activation::Silu => gate.silu()?,
            Activation::GeluTanh => gate.gelu()?,
            Activation::Gelu => gate.gelu_erf()?,
        })
    }

    /// One gated MLP of `layers` (gate, up, down) on `x`, recording the
    /// inputs of each.
    fn gated(
        &self,
        layers: &[Linear],
        x: &Tensor,
        recorder: &mut Option<&mut Recorder<'_>>,
    ) -> Result<Tensor> {
        let [gate, up, down] = layers else {
            unreachable!("a gated MLP has three layers")
        };
        record(recorder, &[gate, up], x)?;
        let inner = (self.activate(&gate.forward(x)?)? * up.forward(x)?)?;
        record(recorder, &[down], &inner)?;
        down.forward(&inner)
    }

    /// A mixture of experts on `y` `[b, seq, hidden]`, as transformers
    /// computes it: each token's router softmax, its `top_k` experts (the
    /// largest weights; ties to the lower expert), their outputs weighted
    /// and summed expert by expert in ascending order, plus the gated
    /// shared expert. Each expert records only the tokens routed to it.
    fn mixture(
        &self,
        block: &Block,
        routing: &Routing,
        y: &Tensor,
        recorder: &mut Option<&mut Recorder<'_>>,
    ) -> Result<Tensor> {
        let (b, seq, h) = y.dims3()?;
        let n = b * seq;
        let x = y.reshape((n, h))?;
        let probs = candle_nn::ops::softmax_last_dim(&x.matmul(&routing.router.t()?)?)?;
        let probs: Vec<Vec<f32>> = probs.to_vec2()?;
        let mut routed: Vec<(Vec<u32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); routing.experts];
        let mut order: Vec<usize> = (0..routing.experts).collect();
        for (t, p) in probs.iter().enumerate() {
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            let top = &order[..routing.top_k];
            let sum: f32 = top.iter().map(|&e| p[e]).sum();
            for &e in top {
                routed[e].0.push(t as u32);
                routed[e]
                    .1
                    .push(if routing.normalize { p[e] / sum } else { p[e] });
            }
        }
        let mut out = Tensor::zeros((n, h), DType::F32, &self.device)?;
        for (e, (tokens, weights)) in routed.iter().enumerate() {
            if tokens.is_empty() {
                continue;
            }
            let ids = Tensor::from_slice(tokens, tokens.len(), &self.device)?;
            let xe = x.index_select(&ids, 0)?;
            let ye = self.gated(block.expert(e), &xe, recorder)?;
            let w = Tensor::from_slice(weights, (weights.len(), 1), &self.device)?;
            out = out.index_add(&ids, &ye.broadcast_mul(&w)?, 0)?;
        }
        if let Some(gate) = &routing.shared_gate {
            let shared = self.gated(block.expert(routing.experts), &x, recorder)?;
            let weight = candle_nn::ops::sigmoid(&x.matmul(&gate.t()?)?)?;
            out = (out + shared.broadcast_mul(&weight)?)?;
        }
        Ok(out.reshape((b, seq, h))?)
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
        record(&mut recorder, &refs(block.attention_inputs()), &x)?;
        let context = self.attention(i, block, &x, past)?;
        record(&mut recorder, &[block.o()], &context)?;
        let attended = block.o().forward(&context)?;
        let (h, y) = match &block.feedforward_norms {
            Some((pre, _)) => {
                let h = (hidden + block.post_attention_norm.forward(&attended, eps)?)?;
                let y = pre.forward(&h, eps)?;
                (h, y)
            }
            None => {
                let h = (hidden + attended)?;
                let y = block.post_attention_norm.forward(&h, eps)?;
                (h, y)
            }
        };
        let out = match &block.moe {
            Some(routing) => self.mixture(block, routing, &y, &mut recorder)?,
            None => {
                record(&mut recorder, &refs(block.mlp_inputs()), &y)?;
                let inner = self.mlp_inner(block, &y)?;
                record(&mut recorder, &[block.down()], &inner)?;
                block.down().forward(&inner)?
            }
        };
        let out = match &block.feedforward_norms {
            Some((_, post)) => post.forward(&out, eps)?,
            None => out,
        };
        Ok((h + out)?)
    }
}

impl Graph for Llama {
    fn device(&self) -> Device {
        self.device.clone()
    }

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
        if cache.len() + tokens.len() > self.config.max_position_embeddings {
            return Err(Error::request(format!(
                "{} cached and {} new tokens: {} takes at most {} (max_position_embeddings)",
                cache.len(),
                tokens.len(),
                self.config.model_type,
                self.config.max_position_embeddings
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
        // A loaded block may already have lost KV groups, heads or channels.
        let loaded = self.blocks.get(i).and_then(Option::as_ref);
        let (heads, kv_heads) = loaded
            .and_then(|b| b.heads(d).ok())
            .unwrap_or((c.num_attention_heads, c.num_key_value_heads));
        let channels = loaded
            .and_then(|b| b.down().weight().dim(1).ok())
            .unwrap_or(c.intermediate_size);
        let attn = format!("model.layers.{i}.self_attn");
        let mlp = format!("model.layers.{i}.mlp");
        let producer = |name: String, offset: usize, rows: usize| Producer { name, offset, rows };
        let fused = c.fused_projections;
        let mut spans = Vec::new();
        // transformers checks LongRoPE's factors against a head width of
        // hidden_size / num_attention_heads, whatever head_dim says: a
        // Phi-3 with fewer heads would not load there.
        let heads_fixed = matches!(c.rope.scaling, RopeScaling::LongRope { .. });
        if kv_heads > 0 && heads.is_multiple_of(kv_heads) && !heads_fixed {
            let per = heads / kv_heads;
            let query_rows = |rows| {
                if fused {
                    producer(format!("{attn}.qkv_proj"), 0, rows)
                } else {
                    producer(format!("{attn}.q_proj"), 0, rows)
                }
            };
            let key_value = if fused {
                let qkv = format!("{attn}.qkv_proj");
                vec![
                    producer(qkv.clone(), heads * d, d),
                    producer(qkv, (heads + kv_heads) * d, d),
                ]
            } else {
                vec![
                    producer(format!("{attn}.k_proj"), 0, d),
                    producer(format!("{attn}.v_proj"), 0, d),
                ]
            };
            if let Ok(layout) = GroupLayout::new(d * per, kv_heads) {
                spans.push(StructureSpan {
                    structure: Structure::KvGroups,
                    config: vec![("num_key_value_heads", 1), ("num_attention_heads", per)],
                    fixed: vec![("head_dim", d)],
                    consumer: format!("{attn}.o_proj"),
                    producers: std::iter::once(query_rows(d * per))
                        .chain(key_value)
                        .collect(),
                    layout,
                });
            }
            if let Ok(layout) = GroupLayout::new(d, heads).and_then(|l| l.in_sets(kv_heads)) {
                spans.push(StructureSpan {
                    structure: Structure::Heads,
                    config: vec![("num_attention_heads", 1)],
                    fixed: vec![("head_dim", d)],
                    consumer: format!("{attn}.o_proj"),
                    producers: vec![query_rows(d)],
                    layout,
                });
            }
        }
        if let Some(layout) = GroupLayout::new(1, channels)
            .ok()
            .filter(|_| c.moe_of(i).is_none())
        {
            let producers = if fused {
                let gate_up = format!("{mlp}.gate_up_proj");
                vec![
                    producer(gate_up.clone(), 0, 1),
                    producer(gate_up, channels, 1),
                ]
            } else {
                vec![
                    producer(format!("{mlp}.gate_proj"), 0, 1),
                    producer(format!("{mlp}.up_proj"), 0, 1),
                ]
            };
            spans.push(StructureSpan {
                structure: Structure::MlpChannels,
                config: vec![("intermediate_size", 1)],
                fixed: Vec::new(),
                consumer: format!("{mlp}.down_proj"),
                producers,
                layout,
            });
        }
        spans
    }

    fn experts(&self, i: usize) -> Option<ExpertSpan> {
        let moe = self.config.moe_of(i)?;
        let names = self.linear_names(i);
        let (router, _) = *self.config.routers(i).first()?;
        let prefix = match moe.names {
            ExpertNames::Mixtral => format!("model.layers.{i}.block_sparse_moe.experts."),
            ExpertNames::Qwen => format!("model.layers.{i}.mlp.experts."),
        };
        // After the attention's four: each expert's gate, up, down.
        let layers = names[4..4 + 3 * moe.experts]
            .chunks_exact(3)
            .map(|c| [c[0].clone(), c[1].clone(), c[2].clone()])
            .collect();
        Some(ExpertSpan {
            top_k: moe.top_k,
            layers,
            prefix,
            router: format!("model.layers.{i}.{router}.weight"),
        })
    }

    fn linear_names(&self, i: usize) -> Vec<String> {
        self.config
            .projections(i)
            .iter()
            .map(|p| format!("model.layers.{i}.{}", p.name))
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
        let c = &self.config;
        check_tokens(
            model.name(),
            tokens,
            c.max_position_embeddings,
            c.vocab_size,
        )?;
        let seq = tokens.len();
        let ids = Tensor::from_slice(tokens, seq, &self.device)?;
        let embedded = e.index_select(&ids, 0)?.unsqueeze(0)?;
        if self.config.scale_embeddings {
            // Gemma: times sqrt(hidden_size), rounded to f32 first.
            let scale = (self.config.hidden_size as f64).sqrt() as f32;
            return Ok((embedded * f64::from(scale))?);
        }
        Ok(embedded)
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
        let logits = head.lm_head.forward(&normed)?;
        match self.config.final_logit_softcapping {
            Some(cap) => Ok(((logits / cap)?.tanh()? * cap)?),
            None => Ok(logits),
        }
    }

    fn linears(&self, i: usize) -> Result<Vec<&Linear>> {
        Ok(self.loaded_block(i)?.linears.iter().collect())
    }

    fn linear_mut(&mut self, i: usize, name: &str) -> Result<&mut Linear> {
        self.loaded_block(i)?;
        let model = self.config.model_type;
        let block = self.blocks[i].as_mut().expect("checked loaded above");
        let names: Vec<String> = block.linears.iter().map(|l| l.name().to_string()).collect();
        match block.linears.iter_mut().find(|l| l.name() == name) {
            Some(l) => Ok(l),
            None => Err(Error::request(format!(
                "{model} block {i} has no linear layer {name}; it has {}",
                names.join(", ")
            ))),
        }
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
