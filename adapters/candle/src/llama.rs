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

use std::fmt;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::folder::ModelFolder;
use crate::graph::{Family, Graph, KvCache, Part, Structure, StructureSpan, Weights};
use crate::record::{Linear, Recorder, record};
use prunus_core::methods::layerwise::GroupLayout;

/// The architectures this module runs, by their `config.json` `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelType {
    /// `llama`: LLaMA 1–3, TinyLlama, Vicuna...; optional biases on all
    /// four attention projections (`attention_bias`) and on the MLP
    /// (`mlp_bias`).
    Llama,
    /// `mistral`: no biases; a sliding attention window (`sliding_window`).
    Mistral,
    /// `qwen2`: biases on the query, key and value projections only; a
    /// sliding window on the upper blocks when `use_sliding_window`.
    Qwen2,
}

impl ModelType {
    /// The model type called `name` in a `config.json`; `None` for another.
    pub fn from_name(name: &str) -> Option<ModelType> {
        match name {
            "llama" => Some(ModelType::Llama),
            "mistral" => Some(ModelType::Mistral),
            "qwen2" => Some(ModelType::Qwen2),
            _ => None,
        }
    }

    /// The `model_type` string.
    pub fn name(self) -> &'static str {
        match self {
            ModelType::Llama => "llama",
            ModelType::Mistral => "mistral",
            ModelType::Qwen2 => "qwen2",
        }
    }
}

impl fmt::Display for ModelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the rotary embedding's frequencies are rescaled for long contexts
/// (`rope_scaling`, or `rope_parameters` in transformers 5 configs).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum RopeScaling {
    /// `default` (or no scaling): `inv_freq = 1 / theta^(2i/d)`.
    None,
    /// `linear`: every frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// `llama3` (Llama 3.1 and later): low frequencies divided by `factor`,
    /// high ones kept, those in between interpolated.
    Llama3 {
        /// The divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings /
        /// low_freq_factor` are divided by `factor`.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings /
        /// high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length of pre-training.
        original_max_position_embeddings: usize,
    },
}

/// A LLaMA-family decoder's shape and numerics, as its `config.json` gives
/// them.
///
/// [`Default`] is Llama-2-7B; set the fields to describe another.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LlamaConfig {
    /// The architecture.
    pub model_type: ModelType,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Width of each block's MLP (gate and up projections).
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key and value heads; divides `num_attention_heads` (each
    /// is shared by `num_attention_heads / num_key_value_heads` query heads).
    pub num_key_value_heads: usize,
    /// Width of one head (even).
    pub head_dim: usize,
    /// The RMSNorms' epsilon.
    pub rms_norm_eps: f64,
    /// The rotary embedding's base.
    pub rope_theta: f64,
    /// The rotary embedding's long-context scaling.
    pub rope_scaling: RopeScaling,
    /// The longest sequence.
    pub max_position_embeddings: usize,
    /// Rows of the token embedding and of the LM head.
    pub vocab_size: usize,
    /// Whether the LM head is the token embedding (no `lm_head.weight`).
    pub tie_word_embeddings: bool,
    /// Whether the query, key and value projections have biases.
    pub qkv_bias: bool,
    /// Whether the attention's output projection has a bias.
    pub o_bias: bool,
    /// Whether the MLP's three projections have biases.
    pub mlp_bias: bool,
    /// The sliding attention window: a token attends to itself and the
    /// `window - 1` tokens before it. `None`: every earlier token.
    pub sliding_window: Option<usize>,
    /// The first block that uses `sliding_window` (0 for mistral; qwen2's
    /// `max_window_layers`); the blocks before it attend to every earlier
    /// token.
    pub sliding_window_from: usize,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        LlamaConfig {
            model_type: ModelType::Llama,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: 32,
            head_dim: 128,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: RopeScaling::None,
            max_position_embeddings: 4096,
            vocab_size: 32000,
            tie_word_embeddings: false,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            sliding_window: None,
            sliding_window_from: 0,
        }
    }
}

/// Reads the fields of one `config.json`, naming the folder in its errors.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    folder: &'a str,
    model_type: &'a str,
}

impl Fields<'_> {
    fn bad(&self, reason: String) -> Error {
        Error::model(self.folder, format!("config.json: {reason}"))
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.object.get(key).filter(|v| !v.is_null())
    }

    fn size(&self, key: &str, fallback: Option<usize>) -> Result<usize> {
        match self.get(key) {
            None => fallback.ok_or_else(|| {
                self.bad(format!(
                    "no {key}: a {} config needs it (a positive integer)",
                    self.model_type
                ))
            }),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => usize::try_from(n)
                    .map_err(|_| self.bad(format!("{key} = {n} is too large for this machine"))),
                _ => Err(self.bad(format!("{key} = {v} is not a positive integer"))),
            },
        }
    }

    fn number(&self, value: Option<&Value>, key: &str, fallback: f64) -> Result<f64> {
        match value.filter(|v| !v.is_null()) {
            None => Ok(fallback),
            Some(v) => match v.as_f64() {
                Some(x) if x > 0.0 && x.is_finite() => Ok(x),
                _ => Err(self.bad(format!("{key} = {v} is not a positive number"))),
            },
        }
    }

    fn flag(&self, key: &str, fallback: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(fallback),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.bad(format!("{key} = {v} is not true or false"))),
        }
    }
}

impl LlamaConfig {
    /// Reads `folder/config.json`.
    pub fn from_folder(folder: impl AsRef<Path>) -> Result<LlamaConfig> {
        let folder = folder.as_ref();
        let path = folder.join("config.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| Error::io("read", path.display(), e))?;
        LlamaConfig::from_json(&text, folder.display())
    }

    /// Parses the text of a `config.json`; `folder` names it in errors (see
    /// [`LlamaConfig::from_value`]).
    pub fn from_json(text: &str, folder: impl fmt::Display) -> Result<LlamaConfig> {
        let folder = folder.to_string();
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::model(&folder, format!("config.json is not JSON: {e}")))?;
        LlamaConfig::from_value(&value, folder)
    }

    /// Reads a parsed `config.json`.
    ///
    /// `model_type` (llama, mistral or qwen2), `hidden_size`,
    /// `intermediate_size`, `num_hidden_layers`, `num_attention_heads` and
    /// `vocab_size` are required; `num_key_value_heads` defaults to the
    /// heads, `head_dim` to `hidden_size / num_attention_heads`,
    /// `rms_norm_eps` to 1e-6, `rope_theta` to 10000, `hidden_act` to silu,
    /// `tie_word_embeddings` to false, `max_position_embeddings` to the
    /// architecture's transformers default. RoPE settings are read from
    /// `rope_theta` and `rope_scaling` (transformers 4) or
    /// `rope_parameters` (transformers 5); the scalings `default`, `linear`
    /// and `llama3` are supported, others are errors. Biases follow the
    /// architecture (qwen2: q/k/v; llama: `attention_bias`, `mlp_bias`;
    /// mistral: none). The sliding window is mistral's `sliding_window`, or
    /// qwen2's when `use_sliding_window`, from block `max_window_layers`
    /// (or as `layer_types` says). Any activation but silu is an error.
    pub fn from_value(value: &Value, folder: impl fmt::Display) -> Result<LlamaConfig> {
        let folder = folder.to_string();
        let Some(object) = value.as_object() else {
            return Err(Error::model(&folder, "config.json: not a JSON object"));
        };
        let model_type = match object.get("model_type") {
            Some(Value::String(name)) => ModelType::from_name(name).ok_or_else(|| {
                Error::model(
                    &folder,
                    format!(
                        "config.json: model_type = \"{name}\" is not a decoder prunus runs: \
                         it runs llama, mistral and qwen2"
                    ),
                )
            })?,
            Some(v) => {
                return Err(Error::model(
                    &folder,
                    format!("config.json: model_type = {v} is not a model type name"),
                ));
            }
            None => {
                return Err(Error::model(
                    &folder,
                    "config.json: no model_type; prunus runs llama, mistral and qwen2 decoders",
                ));
            }
        };
        let fields = Fields {
            object,
            folder: &folder,
            model_type: model_type.name(),
        };
        let bad = |reason: String| fields.bad(reason);

        let hidden_size = fields.size("hidden_size", None)?;
        let intermediate_size = fields.size("intermediate_size", None)?;
        let num_hidden_layers = fields.size("num_hidden_layers", None)?;
        let num_attention_heads = fields.size("num_attention_heads", None)?;
        let vocab_size = fields.size("vocab_size", None)?;
        let num_key_value_heads = fields.size("num_key_value_heads", Some(num_attention_heads))?;
        let head_dim = match fields.get("head_dim") {
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(bad(format!(
                        "no head_dim, and hidden_size = {hidden_size} is not a multiple of \
                         num_attention_heads = {num_attention_heads}"
                    )));
                }
                hidden_size / num_attention_heads
            }
            Some(_) => fields.size("head_dim", None)?,
        };
        let default_positions = match model_type {
            ModelType::Llama => 2048,
            ModelType::Mistral => 4096 * 32,
            ModelType::Qwen2 => 32768,
        };
        let max_position_embeddings =
            fields.size("max_position_embeddings", Some(default_positions))?;
        let rms_norm_eps = fields.number(fields.get("rms_norm_eps"), "rms_norm_eps", 1e-6)?;
        match fields
            .get("hidden_act")
            .or_else(|| fields.get("hidden_activation"))
        {
            None => {}
            Some(Value::String(act)) if act == "silu" || act == "swish" => {}
            Some(v) => {
                return Err(bad(format!(
                    "hidden_act = {v} is not supported: prunus runs LLaMA-family MLPs with silu \
                     (SwiGLU) only"
                )));
            }
        }
        let tie_word_embeddings = fields.flag("tie_word_embeddings", false)?;
        let (qkv_bias, o_bias, mlp_bias) = match model_type {
            ModelType::Llama => {
                let attention = fields.flag("attention_bias", false)?;
                (attention, attention, fields.flag("mlp_bias", false)?)
            }
            ModelType::Mistral => (false, false, false),
            ModelType::Qwen2 => (true, false, false),
        };
        let (rope_theta, rope_scaling) = rope(&fields, max_position_embeddings)?;
        let (sliding_window, sliding_window_from) =
            sliding_window(&fields, model_type, num_hidden_layers)?;

        let config = LlamaConfig {
            model_type,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            vocab_size,
            tie_word_embeddings,
            qkv_bias,
            o_bias,
            mlp_bias,
            sliding_window,
            sliding_window_from,
        };
        config.check().map_err(bad)?;
        Ok(config)
    }

    /// What is inconsistent in the sizes, if anything.
    fn check(&self) -> std::result::Result<(), String> {
        let sizes = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, n)| *n == 0) {
            return Err(format!("{name} = 0; it must be positive"));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(format!(
                "num_attention_heads = {} is not a multiple of num_key_value_heads = {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "head_dim = {} is odd; rotary embeddings rotate pairs of dimensions",
                self.head_dim
            ));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return Err(format!(
                "rms_norm_eps = {} and rope_theta = {} must be positive",
                self.rms_norm_eps, self.rope_theta
            ));
        }
        if self.sliding_window == Some(0) {
            return Err("sliding_window = 0; give a positive window or null".into());
        }
        Ok(())
    }

    /// The attention window of block `i`: `Some(w)` when a token sees only
    /// itself and the `w - 1` tokens before it, `None` when it sees every
    /// earlier token.
    pub fn window(&self, i: usize) -> Option<usize> {
        self.sliding_window
            .filter(|_| i >= self.sliding_window_from)
    }

    /// The rotary embedding's inverse frequencies, `head_dim / 2` of them,
    /// computed in f32 as transformers does (`1 / theta^(2i/d)`, then the
    /// scaling).
    pub fn inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim;
        let base = self.rope_theta as f32;
        let plain = (0..d / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / d as f32));
        match self.rope_scaling {
            RopeScaling::None => plain.collect(),
            RopeScaling::Linear { factor } => plain.map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = original_max_position_embeddings as f32;
                let (factor, low, high) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                );
                let low_wavelen = old / low;
                let high_wavelen = old / high;
                plain
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// Every tensor the graph reads, with its shape, in checkpoint order:
    /// the token embedding, each block's, the final norm and (untied) the
    /// LM head. Builds test models.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, f) = (self.hidden_size, self.intermediate_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let mut shapes = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
        )];
        for i in 0..self.num_hidden_layers {
            let layer = format!("model.layers.{i}");
            shapes.push((format!("{layer}.input_layernorm.weight"), vec![h]));
            for (name, out, inp, bias) in self.projections() {
                let (out, inp) = ([h, f, q, kv][out as usize], [h, f, q, kv][inp as usize]);
                shapes.push((format!("{layer}.{name}.weight"), vec![out, inp]));
                if bias {
                    shapes.push((format!("{layer}.{name}.bias"), vec![out]));
                }
            }
            shapes.push((format!("{layer}.post_attention_layernorm.weight"), vec![h]));
        }
        shapes.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            shapes.push(("lm_head.weight".to_string(), vec![self.vocab_size, h]));
        }
        shapes
    }

    /// A block's seven projections: name, output and input width (as
    /// [`Width`]), whether it has a bias.
    fn projections(&self) -> [(&'static str, Width, Width, bool); 7] {
        use Width::{Hidden, Intermediate, KeyValue, Query};
        [
            ("self_attn.q_proj", Query, Hidden, self.qkv_bias),
            ("self_attn.k_proj", KeyValue, Hidden, self.qkv_bias),
            ("self_attn.v_proj", KeyValue, Hidden, self.qkv_bias),
            ("self_attn.o_proj", Hidden, Query, self.o_bias),
            ("mlp.gate_proj", Intermediate, Hidden, self.mlp_bias),
            ("mlp.up_proj", Intermediate, Hidden, self.mlp_bias),
            ("mlp.down_proj", Hidden, Intermediate, self.mlp_bias),
        ]
    }
}

/// The widths a projection maps between, indexing `[h, f, q, kv]`.
#[derive(Clone, Copy)]
enum Width {
    Hidden = 0,
    Intermediate = 1,
    Query = 2,
    KeyValue = 3,
}

/// `rope_theta` and the scaling, from `rope_parameters` (transformers 5)
/// or `rope_theta` and `rope_scaling` (transformers 4).
fn rope(fields: &Fields<'_>, max_positions: usize) -> Result<(f64, RopeScaling)> {
    let bad = |reason: String| fields.bad(reason);
    let top_theta = fields.get("rope_theta");
    let params = match (fields.get("rope_parameters"), fields.get("rope_scaling")) {
        (Some(Value::Object(p)), _) => Some(p),
        (Some(v), _) => return Err(bad(format!("rope_parameters = {v} is not an object"))),
        (None, Some(Value::Object(p))) => Some(p),
        (None, Some(v)) => return Err(bad(format!("rope_scaling = {v} is not an object"))),
        (None, None) => None,
    };
    let partial = fields.number(
        params
            .and_then(|p| p.get("partial_rotary_factor"))
            .or_else(|| fields.get("partial_rotary_factor")),
        "partial_rotary_factor",
        1.0,
    )?;
    if partial != 1.0 {
        return Err(bad(format!(
            "partial_rotary_factor = {partial} is not supported: prunus rotates whole heads"
        )));
    }
    let Some(params) = params else {
        return Ok((
            fields.number(top_theta, "rope_theta", 10000.0)?,
            RopeScaling::None,
        ));
    };
    if params.values().any(Value::is_object) {
        return Err(bad(
            "RoPE parameters given per layer type are not supported: prunus runs one rotary \
             embedding for every block"
                .into(),
        ));
    }
    let theta = fields.number(
        params.get("rope_theta").or(top_theta),
        "rope_theta",
        10000.0,
    )?;
    let kind = match params.get("rope_type").or_else(|| params.get("type")) {
        None | Some(Value::Null) => "default",
        Some(Value::String(s)) => s.as_str(),
        Some(v) => return Err(bad(format!("rope type {v} is not a name"))),
    };
    let factor = |key: &str| -> Result<f64> {
        match params.get(key).filter(|v| !v.is_null()) {
            None => Err(bad(format!(
                "the {kind} RoPE scaling needs {key} (a positive number)"
            ))),
            Some(v) => fields.number(Some(v), key, 1.0),
        }
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: factor("factor")?,
        },
        "llama3" => {
            let low_freq_factor = factor("low_freq_factor")?;
            let high_freq_factor = factor("high_freq_factor")?;
            if high_freq_factor <= low_freq_factor {
                return Err(bad(format!(
                    "llama3 RoPE scaling with high_freq_factor = {high_freq_factor} not above \
                     low_freq_factor = {low_freq_factor}"
                )));
            }
            let original = match params.get("original_max_position_embeddings") {
                None | Some(Value::Null) => max_positions,
                Some(v) => match v.as_u64() {
                    Some(n) if n > 0 => n as usize,
                    _ => {
                        return Err(bad(format!(
                            "original_max_position_embeddings = {v} is not a positive integer"
                        )));
                    }
                },
            };
            RopeScaling::Llama3 {
                factor: factor("factor")?,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: original,
            }
        }
        other => {
            return Err(bad(format!(
                "RoPE scaling type \"{other}\" is not supported: prunus runs default, linear and \
                 llama3 rotary embeddings"
            )));
        }
    };
    Ok((theta, scaling))
}

/// The sliding window and the first block using it.
fn sliding_window(
    fields: &Fields<'_>,
    model_type: ModelType,
    blocks: usize,
) -> Result<(Option<usize>, usize)> {
    let window = match model_type {
        ModelType::Llama => return Ok((None, 0)),
        ModelType::Mistral => fields.get("sliding_window"),
        ModelType::Qwen2 => {
            if fields.flag("use_sliding_window", false)? {
                fields.get("sliding_window")
            } else {
                None
            }
        }
    };
    let window = match window {
        None => None,
        Some(_) => Some(fields.size("sliding_window", None)?),
    };
    let mut from = match model_type {
        ModelType::Qwen2 => match fields.get("max_window_layers") {
            None => 28,
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    fields.bad(format!("max_window_layers = {v} is not a block count"))
                })?,
        },
        _ => 0,
    };
    if let Some(types) = fields.get("layer_types") {
        let Some(types) = types.as_array().filter(|t| t.len() == blocks) else {
            return Err(fields.bad(format!(
                "layer_types = {types} is not a list of {blocks} attention types"
            )));
        };
        let sliding: Vec<bool> = types
            .iter()
            .map(|t| match t.as_str() {
                Some("full_attention") => Ok(false),
                Some("sliding_attention") => Ok(true),
                _ => Err(fields.bad(format!(
                    "layer_types has {t}: prunus runs full_attention and sliding_attention"
                ))),
            })
            .collect::<Result<_>>()?;
        from = sliding.iter().position(|&s| s).unwrap_or(blocks);
        if sliding[from..].iter().any(|&s| !s) {
            return Err(fields.bad(
                "layer_types alternates full and sliding attention: prunus runs the sliding \
                 window on a last run of blocks only"
                    .into(),
            ));
        }
        if from == blocks {
            return Ok((None, 0));
        }
    }
    Ok((window, if window.is_some() { from } else { 0 }))
}

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
