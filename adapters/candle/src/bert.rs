//! The BERT encoder as a prunus [`Graph`], and the sentence-transformers
//! pooling that turns its final hidden states into sentence embeddings.
//!
//! The graph follows Hugging Face's `BertModel` with absolute position
//! embeddings and post-LayerNorm blocks (BERT, MiniLM, all-MiniLM-L6-v2,
//! BGE, E5...). A batch is one unpadded sequence, so attention needs no
//! mask and every token type is 0. Weights are named exactly as in the
//! checkpoint, with or without the `bert.` prefix that `BertForMaskedLM`
//! and friends save; the pooler and any task head are left alone.
//!
//! ```
//! use std::collections::HashMap;
//! use candle_core::{Device, Tensor};
//! use prunus_candle::bert::{Bert, BertConfig};
//! use prunus_candle::Graph;
//!
//! let config = BertConfig::from_json(
//!     r#"{"hidden_size": 4, "num_hidden_layers": 1, "num_attention_heads": 2,
//!         "intermediate_size": 8, "vocab_size": 10}"#,
//!     "<memory>",
//! )?;
//! let mut weights = HashMap::new();
//! for (name, dims) in config.tensor_shapes("") {
//!     let n: usize = dims.iter().product();
//!     let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 0.2).collect();
//!     weights.insert(name, Tensor::from_vec(values, dims, &Device::Cpu)?);
//! }
//! let mut bert = Bert::new(config, &weights, Device::Cpu)?;
//! bert.load_all(&weights)?;
//! let hidden = bert.forward(&[1, 5, 7, 2])?;
//! assert_eq!(hidden.dims(), [1, 4, 4]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::graph::{
    Family, Graph, Part, Producer, Structure, StructureSpan, Weights, check_tokens,
};
use crate::record::{Linear, Recorder, record};
use prunus_core::methods::layerwise::GroupLayout;

/// The activation of a BERT block's intermediate layer (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activation {
    /// `gelu`: the exact GELU, `x · Φ(x)` with the error function.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation
    /// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
    GeluTanh,
    /// `relu`.
    Relu,
}

impl Activation {
    /// The activation called `name` in a `config.json`; `None` for one
    /// prunus does not implement.
    pub fn from_name(name: &str) -> Option<Activation> {
        match name {
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }

    /// The activation applied elementwise.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Gelu => x.gelu_erf()?,
            Activation::GeluTanh => x.gelu()?,
            Activation::Relu => x.relu()?,
        })
    }
}

/// A BERT model's shape and numerics, as its `config.json` gives them.
///
/// [`Default`] is `bert-base-uncased`; set the fields to describe another.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct BertConfig {
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Number of attention heads; divides `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of each block's intermediate (feed-forward) layer.
    pub intermediate_size: usize,
    /// The intermediate layer's activation.
    pub hidden_act: Activation,
    /// The LayerNorms' epsilon.
    pub layer_norm_eps: f64,
    /// Rows of the position embedding: the longest sequence.
    pub max_position_embeddings: usize,
    /// Rows of the token type embedding.
    pub type_vocab_size: usize,
    /// Rows of the word embedding.
    pub vocab_size: usize,
}

impl Default for BertConfig {
    fn default() -> Self {
        BertConfig {
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-12,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            vocab_size: 30522,
        }
    }
}

impl BertConfig {
    /// Reads `folder/config.json`.
    pub fn from_folder(folder: impl AsRef<Path>) -> Result<BertConfig> {
        let folder = folder.as_ref();
        let path = folder.join("config.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| Error::io("read", path.display(), e))?;
        BertConfig::from_json(&text, folder.display())
    }

    /// Parses the text of a `config.json`; `folder` names it in errors.
    ///
    /// The four sizes (`hidden_size`, `num_hidden_layers`,
    /// `num_attention_heads`, `intermediate_size`) and `vocab_size` are
    /// required; the others default to BERT's values (`gelu`, `1e-12`,
    /// 512 positions, 2 token types). Fails on a position embedding type
    /// other than `absolute` and on an activation [`Activation::from_name`]
    /// does not know.
    pub fn from_json(text: &str, folder: impl std::fmt::Display) -> Result<BertConfig> {
        let folder = folder.to_string();
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::model(&folder, format!("config.json is not JSON: {e}")))?;
        BertConfig::from_value(&value, folder)
    }

    /// Reads a parsed `config.json` (see [`BertConfig::from_json`]).
    pub fn from_value(value: &Value, folder: impl std::fmt::Display) -> Result<BertConfig> {
        let folder = folder.to_string();
        let bad = |reason: String| Error::model(&folder, format!("config.json: {reason}"));
        let Some(object) = value.as_object() else {
            return Err(bad("not a JSON object".into()));
        };
        let default = BertConfig::default();
        let size = |key: &str, fallback: Option<usize>| -> Result<usize> {
            match object.get(key) {
                None | Some(Value::Null) => fallback.ok_or_else(|| {
                    bad(format!(
                        "no {key}: a BERT config needs it (a positive integer)"
                    ))
                }),
                Some(v) => match v.as_u64() {
                    Some(n) if n > 0 => usize::try_from(n)
                        .map_err(|_| bad(format!("{key} = {n} is too large for this machine"))),
                    _ => Err(bad(format!("{key} = {v} is not a positive integer"))),
                },
            }
        };
        let hidden_size = size("hidden_size", None)?;
        let num_hidden_layers = size("num_hidden_layers", None)?;
        let num_attention_heads = size("num_attention_heads", None)?;
        let intermediate_size = size("intermediate_size", None)?;
        let vocab_size = size("vocab_size", None)?;
        let max_position_embeddings = size(
            "max_position_embeddings",
            Some(default.max_position_embeddings),
        )?;
        let type_vocab_size = size("type_vocab_size", Some(default.type_vocab_size))?;
        let hidden_act = match object.get("hidden_act") {
            None | Some(Value::Null) => default.hidden_act,
            Some(Value::String(name)) => Activation::from_name(name).ok_or_else(|| {
                bad(format!(
                    "hidden_act = \"{name}\" is not supported: prunus runs gelu (exact), \
                     gelu_new, gelu_pytorch_tanh, gelu_fast (tanh approximation) and relu"
                ))
            })?,
            Some(v) => return Err(bad(format!("hidden_act = {v} is not an activation name"))),
        };
        let layer_norm_eps = match object.get("layer_norm_eps") {
            None | Some(Value::Null) => default.layer_norm_eps,
            Some(v) => match v.as_f64() {
                Some(e) if e > 0.0 && e.is_finite() => e,
                _ => {
                    return Err(bad(format!(
                        "layer_norm_eps = {v} is not a positive number"
                    )));
                }
            },
        };
        match object.get("position_embedding_type") {
            None | Some(Value::Null) => {}
            Some(Value::String(kind)) if kind == "absolute" => {}
            Some(v) => {
                return Err(bad(format!(
                    "position_embedding_type = {v} is not supported: prunus runs BERT with \
                     absolute position embeddings only"
                )));
            }
        }
        if hidden_size % num_attention_heads != 0 {
            return Err(bad(format!(
                "hidden_size = {hidden_size} is not a multiple of num_attention_heads = \
                 {num_attention_heads}"
            )));
        }
        Ok(BertConfig {
            hidden_size,
            num_hidden_layers,
            num_attention_heads,
            intermediate_size,
            hidden_act,
            layer_norm_eps,
            max_position_embeddings,
            type_vocab_size,
            vocab_size,
        })
    }

    /// The width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Every tensor the graph reads, with its shape, named with `prefix`
    /// (`""` or `"bert."`): the embeddings, then each block's in checkpoint
    /// order. Builds test models; the pooler is not among them.
    pub fn tensor_shapes(&self, prefix: &str) -> Vec<(String, Vec<usize>)> {
        let (h, f) = (self.hidden_size, self.intermediate_size);
        let mut shapes = vec![
            (
                format!("{prefix}embeddings.word_embeddings.weight"),
                vec![self.vocab_size, h],
            ),
            (
                format!("{prefix}embeddings.position_embeddings.weight"),
                vec![self.max_position_embeddings, h],
            ),
            (
                format!("{prefix}embeddings.token_type_embeddings.weight"),
                vec![self.type_vocab_size, h],
            ),
            (format!("{prefix}embeddings.LayerNorm.weight"), vec![h]),
            (format!("{prefix}embeddings.LayerNorm.bias"), vec![h]),
        ];
        for i in 0..self.num_hidden_layers {
            let layer = format!("{prefix}encoder.layer.{i}");
            for (name, (out, inp)) in
                BLOCK_LINEARS
                    .iter()
                    .zip([(h, h), (h, h), (h, h), (h, h), (f, h), (h, f)])
            {
                shapes.push((format!("{layer}.{name}.weight"), vec![out, inp]));
                shapes.push((format!("{layer}.{name}.bias"), vec![out]));
            }
            for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
                shapes.push((format!("{layer}.{norm}.weight"), vec![h]));
                shapes.push((format!("{layer}.{norm}.bias"), vec![h]));
            }
        }
        shapes
    }
}

/// A LayerNorm's scale and shift.
#[derive(Clone, Debug)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    /// Two passes (mean, then the variance of the centred values): candle's
    /// fused CPU kernel takes `E[x²] − E[x]²` in f32, which cancels when a
    /// row's mean is large against its spread (on MiniLM's embeddings it
    /// triples the error against transformers).
    fn forward(&self, x: &Tensor, eps: f64) -> Result<Tensor> {
        let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(variance + eps)?.sqrt()?)?;
        Ok(normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?)
    }
}

/// The embedding part's weights.
#[derive(Clone, Debug)]
struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: Norm,
}

/// One block's weights.
#[derive(Clone, Debug)]
struct Block {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

impl Block {
    fn linears(&self) -> [&Linear; 6] {
        [
            &self.query,
            &self.key,
            &self.value,
            &self.attention_output,
            &self.intermediate,
            &self.output,
        ]
    }

    fn linears_mut(&mut self) -> [&mut Linear; 6] {
        [
            &mut self.query,
            &mut self.key,
            &mut self.value,
            &mut self.attention_output,
            &mut self.intermediate,
            &mut self.output,
        ]
    }
}

/// A block's linear layers, after `encoder.layer.{i}.`, in checkpoint
/// order.
const BLOCK_LINEARS: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

/// The BERT encoder as a [`Graph`]: embeddings (word + position + token
/// type 0, LayerNorm), post-LayerNorm blocks, and the final hidden states
/// as its head. Computes in f32 on the device it is given.
pub struct Bert {
    config: BertConfig,
    device: Device,
    prefix: String,
    origin: String,
    embeddings: Option<Embeddings>,
    blocks: Vec<Option<Block>>,
}

impl Bert {
    /// A graph for `config` whose tensor names are found in `weights`
    /// (with or without the `bert.` prefix, see [`Bert::detect_prefix`]);
    /// no part is loaded yet.
    pub fn new(config: BertConfig, weights: &dyn Weights, device: Device) -> Result<Bert> {
        let prefix = Bert::detect_prefix(weights)?;
        Ok(Bert::with_prefix(config, prefix, device))
    }

    /// A graph for `config` whose tensors are named `<prefix>embeddings...`,
    /// `<prefix>encoder.layer.{i}...`; no part is loaded yet.
    pub fn with_prefix(config: BertConfig, prefix: impl Into<String>, device: Device) -> Bert {
        let blocks = (0..config.num_hidden_layers).map(|_| None).collect();
        Bert {
            config,
            device,
            prefix: prefix.into(),
            origin: "<weights>".into(),
            embeddings: None,
            blocks,
        }
    }

    /// Names the weights' origin (the model folder) in this graph's errors.
    pub fn with_origin(mut self, origin: impl std::fmt::Display) -> Bert {
        self.origin = origin.to_string();
        self
    }

    /// The prefix of a BERT checkpoint's tensor names: `""` for a saved
    /// `BertModel` (sentence-transformers folders), `"bert."` for one saved
    /// by `BertForMaskedLM`, `BertForSequenceClassification`...; an
    /// [`Error::Model`] when `weights` has no BERT word embedding.
    pub fn detect_prefix(weights: &dyn Weights) -> Result<String> {
        for prefix in ["", "bert."] {
            if weights.contains(&format!("{prefix}embeddings.word_embeddings.weight")) {
                return Ok(prefix.to_string());
            }
        }
        Err(Error::model(
            "<weights>",
            "no embeddings.word_embeddings.weight nor bert.embeddings.word_embeddings.weight: \
             not a BERT checkpoint prunus can read",
        ))
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The prefix of the tensor names (`""` or `"bert."`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The device the graph computes on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether `part`'s weights are loaded.
    pub fn is_loaded(&self, part: Part) -> bool {
        match part {
            Part::Embeddings => self.embeddings.is_some(),
            Part::Block(i) => matches!(self.blocks.get(i), Some(Some(_))),
            Part::Head => true,
        }
    }

    /// The tensor `name`, checked against the shape the config implies.
    fn tensor(&self, weights: &dyn Weights, name: &str, dims: &[usize]) -> Result<Tensor> {
        let t = weights.tensor(name, DType::F32, &self.device)?;
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

    fn linear(
        &self,
        weights: &dyn Weights,
        name: String,
        out: usize,
        inp: usize,
    ) -> Result<Linear> {
        let weight = self.tensor(weights, &format!("{name}.weight"), &[out, inp])?;
        let bias = self.tensor(weights, &format!("{name}.bias"), &[out])?;
        Linear::new(name, weight, Some(bias))
    }

    /// A LayerNorm called `base`, as `weight`/`bias` or, in checkpoints from
    /// the TensorFlow era, `gamma`/`beta`.
    fn norm(&self, weights: &dyn Weights, base: &str) -> Result<Norm> {
        let h = [self.config.hidden_size];
        let (w, b) = if weights.contains(&format!("{base}.gamma"))
            && !weights.contains(&format!("{base}.weight"))
        {
            ("gamma", "beta")
        } else {
            ("weight", "bias")
        };
        Ok(Norm {
            weight: self.tensor(weights, &format!("{base}.{w}"), &h)?,
            bias: self.tensor(weights, &format!("{base}.{b}"), &h)?,
        })
    }

    fn load_embeddings(&self, weights: &dyn Weights) -> Result<Embeddings> {
        let c = &self.config;
        let p = &self.prefix;
        let h = c.hidden_size;
        Ok(Embeddings {
            word: self.tensor(
                weights,
                &format!("{p}embeddings.word_embeddings.weight"),
                &[c.vocab_size, h],
            )?,
            position: self.tensor(
                weights,
                &format!("{p}embeddings.position_embeddings.weight"),
                &[c.max_position_embeddings, h],
            )?,
            token_type: self.tensor(
                weights,
                &format!("{p}embeddings.token_type_embeddings.weight"),
                &[c.type_vocab_size, h],
            )?,
            norm: self.norm(weights, &format!("{p}embeddings.LayerNorm"))?,
        })
    }

    fn load_block(&self, i: usize, weights: &dyn Weights) -> Result<Block> {
        let (h, f) = (self.config.hidden_size, self.config.intermediate_size);
        let layer = format!("{}encoder.layer.{i}", self.prefix);
        let linear =
            |name: &str, out, inp| self.linear(weights, format!("{layer}.{name}"), out, inp);
        Ok(Block {
            query: linear("attention.self.query", h, h)?,
            key: linear("attention.self.key", h, h)?,
            value: linear("attention.self.value", h, h)?,
            attention_output: linear("attention.output.dense", h, h)?,
            attention_norm: self.norm(weights, &format!("{layer}.attention.output.LayerNorm"))?,
            intermediate: linear("intermediate.dense", f, h)?,
            output: linear("output.dense", h, f)?,
            output_norm: self.norm(weights, &format!("{layer}.output.LayerNorm"))?,
        })
    }

    fn check_block_index(&self, i: usize) -> Result<()> {
        if i >= self.blocks.len() {
            return Err(Error::request(format!(
                "BERT block {i} does not exist: the model has {} blocks (0..{})",
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
                "BERT block {i} is not loaded: load(Part::Block({i})) before running it"
            ))
        })
    }

    /// Multi-head self-attention without a mask: `[b, seq, hidden]` in, the
    /// heads' concatenated context `[b, seq, hidden]` out.
    fn attention(&self, block: &Block, x: &Tensor) -> Result<Tensor> {
        let (b, seq, hidden) = x.dims3()?;
        let heads = self.config.num_attention_heads;
        let d = self.config.head_dim();
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, seq, heads, d))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(block.query.forward(x)?)?;
        let k = split(block.key.forward(x)?)?;
        let v = split(block.value.forward(x)?)?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (d as f64).sqrt())?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = probs.matmul(&v)?;
        Ok(context
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, seq, hidden))?)
    }
}

impl Graph for Bert {
    fn device(&self) -> Device {
        self.device.clone()
    }

    fn family(&self) -> Family {
        Family::Encoder
    }

    fn block_prefix(&self, i: usize) -> Option<String> {
        Some(format!("{}encoder.layer.{i}.", self.prefix))
    }

    fn structures(&self, i: usize) -> Vec<StructureSpan> {
        let layer = format!("{}encoder.layer.{i}", self.prefix);
        // A config with no channel has no structure to remove.
        let Ok(layout) = GroupLayout::new(1, self.config.intermediate_size) else {
            return Vec::new();
        };
        vec![StructureSpan {
            structure: Structure::MlpChannels,
            config: vec![("intermediate_size", 1)],
            fixed: Vec::new(),
            consumer: format!("{layer}.output.dense"),
            producers: vec![Producer {
                name: format!("{layer}.intermediate.dense"),
                offset: 0,
                rows: 1,
            }],
            layout,
        }]
    }

    fn linear_names(&self, i: usize) -> Vec<String> {
        let layer = format!("{}encoder.layer.{i}", self.prefix);
        BLOCK_LINEARS
            .iter()
            .map(|name| format!("{layer}.{name}"))
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
            Part::Embeddings => self.embeddings = Some(self.load_embeddings(weights)?),
            Part::Block(i) => {
                self.check_block_index(i)?;
                self.blocks[i] = Some(self.load_block(i, weights)?);
            }
            // The final hidden states are the output: no weights. A pooler,
            // if the checkpoint has one, is not part of the sentence
            // embedding and is left alone.
            Part::Head => {}
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
            Part::Head => {}
        }
    }

    fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        let e = self.embeddings.as_ref().ok_or_else(|| {
            Error::request("BERT embeddings are not loaded: load(Part::Embeddings) first")
        })?;
        check_tokens(
            "BERT",
            tokens,
            self.config.max_position_embeddings,
            self.config.vocab_size,
        )?;
        let seq = tokens.len();
        let ids = Tensor::from_slice(tokens, seq, &self.device)?;
        let words = e.word.index_select(&ids, 0)?;
        let positions = e.position.narrow(0, 0, seq)?;
        let token_type = e.token_type.narrow(0, 0, 1)?;
        let x = (words + positions)?.broadcast_add(&token_type)?;
        e.norm
            .forward(&x, self.config.layer_norm_eps)?
            .unsqueeze(0)
            .map_err(Error::from)
    }

    fn block(
        &self,
        i: usize,
        hidden: &Tensor,
        recorder: Option<&mut Recorder<'_>>,
    ) -> Result<Tensor> {
        let block = self.loaded_block(i)?;
        let mut recorder = recorder;
        let eps = self.config.layer_norm_eps;
        match hidden.dims() {
            &[_, _, h] if h == self.config.hidden_size => {}
            dims => {
                return Err(Error::request(format!(
                    "BERT block {i}: hidden states of shape {dims:?}, expected [batch, seq, {}]",
                    self.config.hidden_size
                )));
            }
        }
        record(
            &mut recorder,
            &[&block.query, &block.key, &block.value],
            hidden,
        )?;
        let context = self.attention(block, hidden)?;
        record(&mut recorder, &[&block.attention_output], &context)?;
        let attended = block.attention_output.forward(&context)?;
        let h1 = block.attention_norm.forward(&(attended + hidden)?, eps)?;
        record(&mut recorder, &[&block.intermediate], &h1)?;
        let inner = self
            .config
            .hidden_act
            .apply(&block.intermediate.forward(&h1)?)?;
        record(&mut recorder, &[&block.output], &inner)?;
        let out = block.output.forward(&inner)?;
        block.output_norm.forward(&(out + h1)?, eps)
    }

    fn head(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(hidden.clone())
    }

    fn linears(&self, i: usize) -> Result<Vec<&Linear>> {
        Ok(self.loaded_block(i)?.linears().to_vec())
    }

    fn linear_mut(&mut self, i: usize, name: &str) -> Result<&mut Linear> {
        self.loaded_block(i)?;
        let block = self.blocks[i].as_mut().expect("checked loaded above");
        let mut names = Vec::new();
        for l in block.linears_mut() {
            if l.name() == name {
                return Ok(l);
            }
            names.push(l.name().to_string());
        }
        Err(Error::request(format!(
            "BERT block {i} has no linear layer {name}; it has {}",
            names.join(", ")
        )))
    }
}

/// How sentence-transformers' `Pooling` module reduces the token states of
/// a sequence to one vector (its `1_Pooling/config.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pooling {
    /// The mean over tokens (`pooling_mode_mean_tokens`).
    Mean,
    /// The first token, `[CLS]` (`pooling_mode_cls_token`).
    Cls,
    /// The elementwise maximum over tokens (`pooling_mode_max_tokens`).
    Max,
}

impl Pooling {
    /// Parses a Pooling module's `config.json` text; `path` names it in
    /// errors. Exactly one of the supported modes must be set (mean, cls,
    /// max); the others (mean_sqrt_len, weightedmean, lasttoken, several at
    /// once) are errors.
    pub fn from_json(text: &str, path: impl std::fmt::Display) -> Result<Pooling> {
        let path = path.to_string();
        let bad = |reason: String| Error::model(&path, reason);
        let value: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let Some(object) = value.as_object() else {
            return Err(bad("not a JSON object".into()));
        };
        let mut modes = Vec::new();
        for (key, v) in object {
            let Some(mode) = key
                .strip_prefix("pooling_mode_")
                .map(|m| m.trim_end_matches("_tokens").trim_end_matches("_token"))
            else {
                continue;
            };
            if v.as_bool() == Some(true) {
                modes.push(mode.to_string());
            }
        }
        if let Some(Value::String(mode)) = object.get("pooling_mode") {
            modes.push(mode.trim_end_matches("_tokens").to_string());
            modes.sort();
            modes.dedup();
        }
        match modes.as_slice() {
            [mode] => match mode.as_str() {
                "mean" => Ok(Pooling::Mean),
                "cls" => Ok(Pooling::Cls),
                "max" => Ok(Pooling::Max),
                other => Err(bad(format!(
                    "pooling mode {other} is not supported: prunus pools by mean, cls or max"
                ))),
            },
            [] => Err(bad("no pooling mode is set".into())),
            several => Err(bad(format!(
                "several pooling modes at once ({}) are not supported: set one of mean, cls, max",
                several.join(", ")
            ))),
        }
    }

    /// The pooled vectors of `hidden` `[batch, seq, hidden]` (or `[seq,
    /// hidden]`): `[batch, hidden]` (or `[hidden]`). Every token counts: a
    /// batch is unpadded sequences.
    pub fn pool(self, hidden: &Tensor) -> Result<Tensor> {
        match self {
            Pooling::Mean => mean_pool(hidden),
            Pooling::Cls => {
                token_axis(hidden)?;
                Ok(hidden.narrow(D::Minus2, 0, 1)?.squeeze(D::Minus2)?)
            }
            Pooling::Max => {
                token_axis(hidden)?;
                Ok(hidden.max(D::Minus2)?)
            }
        }
    }
}

/// The second-to-last axis (tokens) of `hidden`; an error when it is
/// missing or empty.
fn token_axis(hidden: &Tensor) -> Result<usize> {
    let dims = hidden.dims();
    if dims.len() < 2 || dims[dims.len() - 2] == 0 {
        return Err(Error::request(format!(
            "pooling hidden states of shape {dims:?}: expected [batch, seq, hidden] or \
             [seq, hidden] with at least one token"
        )));
    }
    Ok(dims[dims.len() - 2])
}

/// The mean of the token states `hidden` `[batch, seq, hidden]` (or `[seq,
/// hidden]`) over all tokens: `[batch, hidden]` (or `[hidden]`).
///
/// sentence-transformers' `Pooling` with `pooling_mode_mean_tokens` on
/// unpadded sequences.
pub fn mean_pool(hidden: &Tensor) -> Result<Tensor> {
    token_axis(hidden)?;
    Ok(hidden.mean(D::Minus2)?)
}

/// Each vector of `x` (over the last axis) divided by its L2 norm, or by
/// `1e-12` when the norm is smaller: sentence-transformers' `Normalize`.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

/// How a sentence-transformers folder turns final hidden states into
/// sentence embeddings: a [`Pooling`], then optionally [`l2_normalize`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentencePooling {
    /// The pooling.
    pub pooling: Pooling,
    /// Whether the pooled vectors are L2-normalised.
    pub normalize: bool,
}

impl SentencePooling {
    /// Reads a model folder's sentence-transformers modules.
    ///
    /// With a `modules.json`: the `Pooling` module's config (its `path`,
    /// usually `1_Pooling`) and whether a `Normalize` module follows; any
    /// other module (`Dense`, `LayerNorm`...) is an error since prunus would
    /// not apply it. Without one: `1_Pooling/config.json` if present, else
    /// mean pooling, and no normalisation (what sentence-transformers does
    /// with a plain transformers folder).
    pub fn from_folder(folder: impl AsRef<Path>) -> Result<SentencePooling> {
        let folder = folder.as_ref();
        let modules_path = folder.join("modules.json");
        let (pooling_dir, normalize) = if modules_path.exists() {
            let text = std::fs::read_to_string(&modules_path)
                .map_err(|e| Error::io("read", modules_path.display(), e))?;
            let bad =
                |reason: String| Error::model(folder.display(), format!("modules.json: {reason}"));
            let modules: Value =
                serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
            let Some(modules) = modules.as_array() else {
                return Err(bad("not a list of modules".into()));
            };
            let mut pooling_dir = None;
            let mut normalize = false;
            for m in modules {
                let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
                let short = kind.rsplit('.').next().unwrap_or(kind);
                match short {
                    "Transformer" => {}
                    "Pooling" => {
                        let dir = m.get("path").and_then(Value::as_str).unwrap_or("1_Pooling");
                        pooling_dir = Some(folder.join(dir));
                    }
                    "Normalize" => normalize = true,
                    _ => {
                        return Err(bad(format!(
                            "module {kind:?} is not supported: prunus embeds sentences with a \
                             Transformer, a Pooling and an optional Normalize only"
                        )));
                    }
                }
            }
            (pooling_dir, normalize)
        } else {
            (Some(folder.join("1_Pooling")), false)
        };
        let pooling = match pooling_dir.map(|d| d.join("config.json")) {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Error::io("read", path.display(), e))?;
                Pooling::from_json(&text, path.display())?
            }
            _ => Pooling::Mean,
        };
        Ok(SentencePooling { pooling, normalize })
    }

    /// Sentence embeddings from final hidden states `[batch, seq, hidden]`:
    /// `[batch, hidden]`.
    pub fn embed(&self, hidden: &Tensor) -> Result<Tensor> {
        let pooled = self.pooling.pool(hidden)?;
        if self.normalize {
            l2_normalize(&pooled)
        } else {
            Ok(pooled)
        }
    }
}

impl Default for SentencePooling {
    /// Mean pooling, then L2 normalisation (all-MiniLM-L6-v2 and most
    /// sentence-transformers models).
    fn default() -> Self {
        SentencePooling {
            pooling: Pooling::Mean,
            normalize: true,
        }
    }
}
