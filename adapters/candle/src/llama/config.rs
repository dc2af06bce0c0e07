//! A LLaMA-family decoder's `config.json`: the architecture, its sizes, and the
//! numerics each family sets differently.

use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

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
    pub(super) fn check(&self) -> std::result::Result<(), String> {
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
    pub(super) fn projections(&self) -> [(&'static str, Width, Width, bool); 7] {
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

