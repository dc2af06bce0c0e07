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
    /// `qwen3`: an RMSNorm over each query and key head (`q_norm`,
    /// `k_norm`) before the rotary embedding; optional biases on the four
    /// attention projections (`attention_bias`); qwen2's sliding window.
    Qwen3,
    /// `gemma2`: GeGLU MLPs (tanh GELU), RMSNorms scaling by `1 + w`, four
    /// norms per block (after attention and after the MLP too), embeddings
    /// times `sqrt(hidden_size)`, attention scaled by
    /// `query_pre_attn_scalar^-1/2`, soft-capped attention and final
    /// logits, sliding and global blocks alternating, tied embeddings.
    Gemma2,
    /// `gemma3_text` (Gemma 3's text models, `Gemma3ForCausalLM`): gemma2's
    /// block with query and key norms instead of attention soft-capping,
    /// five sliding blocks to one global, and its own RoPE base on the
    /// sliding blocks.
    Gemma3Text,
    /// `phi3` (Phi-3, Phi-3.5 and Phi-4-mini): fused `qkv_proj` and
    /// `gate_up_proj`, LongRoPE scaling and partial rotary embeddings.
    Phi3,
    /// `mixtral`: mistral's attention, every MLP a mixture of experts
    /// (`block_sparse_moe`, experts `w1`/`w3`/`w2`), the top-k routing
    /// weights renormalised.
    Mixtral,
    /// `qwen2_moe`: qwen2's attention (`qkv_bias`), mixtures of experts with
    /// a sigmoid-gated shared expert on the blocks `decoder_sparse_step`
    /// and `mlp_only_layers` choose, dense MLPs on the others.
    Qwen2Moe,
    /// `qwen3_moe`: qwen3's attention, mixtures of experts without a
    /// shared expert.
    Qwen3Moe,
}

impl ModelType {
    /// Every model type, in the order the documentation lists them.
    pub const ALL: [ModelType; 10] = [
        ModelType::Llama,
        ModelType::Mistral,
        ModelType::Qwen2,
        ModelType::Qwen3,
        ModelType::Gemma2,
        ModelType::Gemma3Text,
        ModelType::Phi3,
        ModelType::Mixtral,
        ModelType::Qwen2Moe,
        ModelType::Qwen3Moe,
    ];

    /// The model type called `name` in a `config.json`; `None` for another.
    pub fn from_name(name: &str) -> Option<ModelType> {
        ModelType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The `model_type` string.
    pub fn name(self) -> &'static str {
        match self {
            ModelType::Llama => "llama",
            ModelType::Mistral => "mistral",
            ModelType::Qwen2 => "qwen2",
            ModelType::Qwen3 => "qwen3",
            ModelType::Gemma2 => "gemma2",
            ModelType::Gemma3Text => "gemma3_text",
            ModelType::Phi3 => "phi3",
            ModelType::Mixtral => "mixtral",
            ModelType::Qwen2Moe => "qwen2_moe",
            ModelType::Qwen3Moe => "qwen3_moe",
        }
    }

    /// Whether this is a Gemma (norms by `1 + w`, scaled embeddings,
    /// four norms per block, tied embeddings by default).
    fn is_gemma(self) -> bool {
        matches!(self, ModelType::Gemma2 | ModelType::Gemma3Text)
    }
}

impl fmt::Display for ModelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The MLP's gate activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Activation {
    /// `silu` (SwiGLU): LLaMA, Mistral, Qwen, Phi-3.
    Silu,
    /// `gelu_pytorch_tanh` (GeGLU with the tanh approximation): Gemma.
    GeluTanh,
    /// `gelu`: the exact (erf) GELU.
    Gelu,
}

/// How a mixture-of-experts checkpoint names its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpertNames {
    /// Mixtral: `block_sparse_moe.gate` routes, experts' `w1` (gate), `w3`
    /// (up) and `w2` (down).
    Mixtral,
    /// Qwen: `mlp.gate` routes, experts' `gate_proj`, `up_proj` and
    /// `down_proj`, the shared expert's too and `mlp.shared_expert_gate`.
    Qwen,
}

/// A decoder's mixtures of experts, as transformers runs them: the router
/// (`[experts, hidden]`, never pruned) gives each token a softmax over the
/// experts; the `top_k` largest weigh their experts' gated MLPs (the weights
/// renormalised to sum to 1 when `normalize`); a shared expert, where
/// there is one, adds its MLP times `sigmoid(shared_expert_gate · x)`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Moe {
    /// Experts per mixture (`num_local_experts`, or `num_experts`).
    pub experts: usize,
    /// Experts per token (`num_experts_per_tok`).
    pub top_k: usize,
    /// Width of each expert's MLP.
    pub intermediate_size: usize,
    /// Whether the top-k weights are renormalised (`norm_topk_prob`;
    /// always for Mixtral).
    pub normalize: bool,
    /// The shared expert's width, where there is one.
    pub shared_intermediate_size: Option<usize>,
    /// Per block, whether its MLP is a mixture (Qwen's
    /// `decoder_sparse_step` and `mlp_only_layers`).
    pub sparse: Vec<bool>,
    /// The tensor names.
    pub names: ExpertNames,
}

/// How the rotary embedding's frequencies are rescaled for long contexts
/// (`rope_scaling`, or `rope_parameters` in transformers 5 configs).
#[derive(Clone, Debug, PartialEq)]
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
    /// `longrope` (also called `su`; Phi-3 and Phi-4 long-context models):
    /// each frequency divided by its own factor, the short ones while a
    /// forward pass ends within `original_max_position_embeddings`, the
    /// long ones beyond; `cos` and `sin` multiplied by `attention_factor`.
    LongRope {
        /// The divisors for sequences within the original context, one
        /// per rotated pair.
        short_factor: Vec<f64>,
        /// The divisors beyond it.
        long_factor: Vec<f64>,
        /// The context length of pre-training.
        original_max_position_embeddings: usize,
        /// The scale of `cos` and `sin`: given, else `sqrt(1 + ln(s) /
        /// ln(original))` with `s = max_position_embeddings / original`
        /// (1 when `s ≤ 1`).
        attention_factor: f64,
    },
}

/// One rotary embedding: its base and scaling.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Rope {
    /// The base, `rope_theta`.
    pub theta: f64,
    /// The long-context scaling.
    pub scaling: RopeScaling,
}

impl Rope {
    /// The inverse frequencies of the `dim / 2` rotated pairs of a
    /// `dim`-wide rotation, computed in f32 as transformers does
    /// (`1 / theta^(2i/d)`, then the scaling); for LongRoPE, those of a
    /// forward pass ending at position `end` (exclusive).
    pub fn inv_freq(&self, dim: usize, end: usize) -> Vec<f32> {
        let base = self.theta as f32;
        let exponent = |i: usize| (2 * i) as f32 / dim as f32;
        let plain = (0..dim / 2).map(|i| 1.0 / base.powf(exponent(i)));
        match &self.scaling {
            RopeScaling::None => plain.collect(),
            RopeScaling::Linear { factor } => plain.map(|f| f / *factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = *original_max_position_embeddings as f32;
                let (factor, low, high) = (
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
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
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                ..
            } => {
                let factors = if end > *original_max_position_embeddings {
                    long_factor
                } else {
                    short_factor
                };
                // transformers: 1 / (factor · base^(2i/d)), all in f32.
                (0..dim / 2)
                    .map(|i| 1.0 / (factors[i] as f32 * base.powf(exponent(i))))
                    .collect()
            }
        }
    }

    /// The scale of `cos` and `sin` (LongRoPE's attention factor; else 1).
    pub fn attention_factor(&self) -> f32 {
        match self.scaling {
            RopeScaling::LongRope {
                attention_factor, ..
            } => attention_factor as f32,
            _ => 1.0,
        }
    }
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
    /// How many of a head's leading dimensions the rotary embedding
    /// rotates (even; `head_dim` but for a `partial_rotary_factor` below 1).
    pub rotary_dim: usize,
    /// The RMSNorms' epsilon.
    pub rms_norm_eps: f64,
    /// The rotary embedding of the global blocks (every block but for
    /// [`LlamaConfig::local_rope`]).
    pub rope: Rope,
    /// The rotary embedding of the sliding-window blocks where it differs
    /// (Gemma 3).
    pub local_rope: Option<Rope>,
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
    /// The MLP's gate activation.
    pub activation: Activation,
    /// Whether queries and keys pass an RMSNorm over each head
    /// (`q_norm`, `k_norm`) before the rotary embedding.
    pub qk_norm: bool,
    /// Whether the RMSNorms scale by `1 + w` (Gemma) rather than `w`.
    pub norm_plus_one: bool,
    /// Whether the token embeddings are multiplied by `sqrt(hidden_size)`.
    pub scale_embeddings: bool,
    /// Whether a block has four norms (Gemma): `post_attention_layernorm`
    /// on the attention's output before its residual, and
    /// `pre_feedforward_layernorm` and `post_feedforward_layernorm`
    /// around the MLP. Otherwise `post_attention_layernorm` is the MLP's
    /// input norm.
    pub sandwich_norms: bool,
    /// Whether the query, key and value projections are one `qkv_proj`
    /// and the gate and up projections one `gate_up_proj` (Phi-3).
    pub fused_projections: bool,
    /// The attention scores' scale is `query_pre_attn_scalar^-1/2`
    /// (`head_dim^-1/2` when `None`).
    pub query_pre_attn_scalar: Option<f64>,
    /// Attention scores become `c · tanh(s / c)` before the mask.
    pub attn_logit_softcapping: Option<f64>,
    /// Logits become `c · tanh(l / c)`.
    pub final_logit_softcapping: Option<f64>,
    /// The sliding attention window: a token attends to itself and the
    /// `window - 1` tokens before it in the blocks [`LlamaConfig::sliding`]
    /// marks. `None`: every earlier token in every block.
    pub sliding_window: Option<usize>,
    /// Per block, whether it uses `sliding_window` (`layer_types`; empty
    /// means every block when there is a window).
    pub sliding: Vec<bool>,
    /// The mixtures of experts of a MoE decoder.
    pub moe: Option<Moe>,
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
            rotary_dim: 128,
            rms_norm_eps: 1e-5,
            rope: Rope {
                theta: 10000.0,
                scaling: RopeScaling::None,
            },
            local_rope: None,
            max_position_embeddings: 4096,
            vocab_size: 32000,
            tie_word_embeddings: false,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            activation: Activation::Silu,
            qk_norm: false,
            norm_plus_one: false,
            scale_embeddings: false,
            sandwich_norms: false,
            fused_projections: false,
            query_pre_attn_scalar: None,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
            sliding_window: None,
            sliding: Vec::new(),
            moe: None,
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

    /// An optional positive number: `None` when absent or null.
    fn optional_number(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            some => self.number(some, key, 1.0).map(Some),
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

/// The `model_type` names this module runs, for messages.
fn supported_names() -> String {
    ModelType::ALL.map(ModelType::name).join(", ")
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

    /// Reads a parsed `config.json`, in the transformers 4 or 5 layout.
    ///
    /// `model_type` (one of [`ModelType::ALL`]), `hidden_size`,
    /// `intermediate_size`, `num_hidden_layers`, `num_attention_heads` and
    /// `vocab_size` are required; `num_key_value_heads` defaults to the
    /// heads, `head_dim` to `hidden_size / num_attention_heads` (256 for
    /// Gemma), `rms_norm_eps` to 1e-6, the activation to silu (Gemma:
    /// `gelu_pytorch_tanh`), `tie_word_embeddings` to false (Gemma: true),
    /// `max_position_embeddings` to the architecture's transformers
    /// default. RoPE settings are read from `rope_theta` and
    /// `rope_scaling` (transformers 4) or `rope_parameters` (transformers
    /// 5, nested by layer type for Gemma 3; `rope_local_base_freq` in its
    /// transformers 4 configs); the scalings `default`, `linear`, `llama3`
    /// and `longrope` are supported, others are errors; a
    /// `partial_rotary_factor` below 1 only for phi3. Biases follow the
    /// architecture (qwen2: q/k/v; llama and qwen3: `attention_bias`,
    /// llama's `mlp_bias`; the others: none). The sliding window is
    /// `layer_types` where the config has it, else the family's rule
    /// (mistral and phi3: every block; qwen2 and qwen3 when
    /// `use_sliding_window`, from block `max_window_layers`; gemma2 every
    /// other block from the first; gemma3 all but every
    /// `sliding_window_pattern`-th). A mixture of experts (mixtral,
    /// qwen2_moe, qwen3_moe) reads its expert count from
    /// `num_local_experts` or `num_experts`, `num_experts_per_tok` (2),
    /// `norm_topk_prob` (Qwen; false), `moe_intermediate_size` (Qwen; the
    /// expert width, Mixtral's being `intermediate_size`),
    /// `shared_expert_intermediate_size` (qwen2_moe), and which blocks are
    /// mixtures from `decoder_sparse_step` (1) and `mlp_only_layers`.
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
                        "config.json: model_type = \"{name}\" is not a decoder prunus runs: it \
                         runs {}",
                        supported_names()
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
                    format!(
                        "config.json: no model_type; prunus runs these decoders: {}",
                        supported_names()
                    ),
                ));
            }
        };
        let fields = Fields {
            object,
            folder: &folder,
            model_type: model_type.name(),
        };
        let bad = |reason: String| fields.bad(reason);
        let gemma = model_type.is_gemma();

        let hidden_size = fields.size("hidden_size", None)?;
        let intermediate_size = fields.size("intermediate_size", None)?;
        let num_hidden_layers = fields.size("num_hidden_layers", None)?;
        let num_attention_heads = fields.size("num_attention_heads", None)?;
        let vocab_size = fields.size("vocab_size", None)?;
        let num_key_value_heads = fields.size("num_key_value_heads", Some(num_attention_heads))?;
        let head_dim = match fields.get("head_dim") {
            None if gemma => 256,
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
            ModelType::Qwen2 | ModelType::Qwen3 | ModelType::Qwen2Moe | ModelType::Qwen3Moe => {
                32768
            }
            ModelType::Mixtral => 4096 * 32,
            ModelType::Gemma2 => 8192,
            ModelType::Gemma3Text => 131_072,
            ModelType::Phi3 => 4096,
        };
        let max_position_embeddings =
            fields.size("max_position_embeddings", Some(default_positions))?;
        let rms_norm_eps = fields.number(fields.get("rms_norm_eps"), "rms_norm_eps", 1e-6)?;
        let activation = activation(&fields, gemma)?;
        if gemma && fields.flag("use_bidirectional_attention", false)? {
            return Err(bad(
                "use_bidirectional_attention = true (an embedding model): prunus runs Gemma as a \
                 causal decoder"
                    .into(),
            ));
        }
        let tie_word_embeddings = fields.flag("tie_word_embeddings", gemma)?;
        let (qkv_bias, o_bias, mlp_bias) = match model_type {
            ModelType::Llama => {
                let attention = fields.flag("attention_bias", false)?;
                (attention, attention, fields.flag("mlp_bias", false)?)
            }
            ModelType::Qwen3 | ModelType::Qwen3Moe => {
                let attention = fields.flag("attention_bias", false)?;
                (attention, attention, false)
            }
            ModelType::Qwen2 => (true, false, false),
            ModelType::Qwen2Moe => (fields.flag("qkv_bias", true)?, false, false),
            ModelType::Gemma2 | ModelType::Gemma3Text => {
                if fields.flag("attention_bias", false)? {
                    return Err(bad(
                        "attention_bias = true is not supported for Gemma".into()
                    ));
                }
                (false, false, false)
            }
            ModelType::Mistral | ModelType::Phi3 | ModelType::Mixtral => (false, false, false),
        };
        let (rope, local_rope, partial) = ropes(&fields, model_type, max_position_embeddings)?;
        if partial != 1.0 && model_type != ModelType::Phi3 {
            return Err(bad(format!(
                "partial_rotary_factor = {partial} is not supported for {model_type}: prunus \
                 rotates whole heads there"
            )));
        }
        let rotary_dim = (head_dim as f64 * partial) as usize;
        let (sliding_window, sliding) = sliding_window(&fields, model_type, num_hidden_layers)?;
        let softcap = |key: &str, fallback: Option<f64>| -> Result<Option<f64>> {
            if fields.object.contains_key(key) {
                fields.optional_number(key)
            } else {
                Ok(fallback)
            }
        };
        let (attn_logit_softcapping, final_logit_softcapping) = match model_type {
            ModelType::Gemma2 => (
                softcap("attn_logit_softcapping", Some(50.0))?,
                softcap("final_logit_softcapping", Some(30.0))?,
            ),
            ModelType::Gemma3Text => (
                softcap("attn_logit_softcapping", None)?,
                softcap("final_logit_softcapping", None)?,
            ),
            _ => (None, None),
        };
        let query_pre_attn_scalar = if gemma {
            Some(fields.number(
                fields.get("query_pre_attn_scalar"),
                "query_pre_attn_scalar",
                256.0,
            )?)
        } else {
            None
        };

        let config = LlamaConfig {
            model_type,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rotary_dim,
            rms_norm_eps,
            rope,
            local_rope,
            max_position_embeddings,
            vocab_size,
            tie_word_embeddings,
            qkv_bias,
            o_bias,
            mlp_bias,
            activation,
            qk_norm: matches!(
                model_type,
                ModelType::Qwen3 | ModelType::Qwen3Moe | ModelType::Gemma3Text
            ),
            norm_plus_one: gemma,
            scale_embeddings: gemma,
            sandwich_norms: gemma,
            fused_projections: model_type == ModelType::Phi3,
            query_pre_attn_scalar,
            attn_logit_softcapping,
            final_logit_softcapping,
            sliding_window,
            sliding,
            moe: moe(&fields, model_type, num_hidden_layers, intermediate_size)?,
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
        if !self.rotary_dim.is_multiple_of(2) || self.rotary_dim == 0 {
            return Err(if self.rotary_dim == self.head_dim {
                format!(
                    "head_dim = {} is odd; rotary embeddings rotate pairs of dimensions",
                    self.head_dim
                )
            } else {
                format!(
                    "the rotary embedding rotates {} of a head's {} dimensions; rotary \
                     embeddings rotate a positive number of pairs",
                    self.rotary_dim, self.head_dim
                )
            });
        }
        for rope in std::iter::once(&self.rope).chain(&self.local_rope) {
            if let RopeScaling::LongRope {
                short_factor,
                long_factor,
                ..
            } = &rope.scaling
                && (short_factor.len() != self.rotary_dim / 2
                    || long_factor.len() != self.rotary_dim / 2)
            {
                return Err(format!(
                    "the longrope factors have {} (short) and {} (long) entries where the \
                     rotation has {} pairs",
                    short_factor.len(),
                    long_factor.len(),
                    self.rotary_dim / 2
                ));
            }
        }
        if self.rotary_dim > self.head_dim {
            return Err(format!(
                "the rotary embedding rotates {} dimensions of a {}-wide head",
                self.rotary_dim, self.head_dim
            ));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope.theta > 0.0) {
            return Err(format!(
                "rms_norm_eps = {} and rope_theta = {} must be positive",
                self.rms_norm_eps, self.rope.theta
            ));
        }
        if self.sliding_window == Some(0) {
            return Err("sliding_window = 0; give a positive window or null".into());
        }
        if let Some(moe) = &self.moe {
            if moe.experts == 0 || moe.top_k == 0 || moe.top_k > moe.experts {
                return Err(format!(
                    "{} experts per token of {}: give 1 to the expert count",
                    moe.top_k, moe.experts
                ));
            }
            if moe.intermediate_size == 0 || moe.shared_intermediate_size == Some(0) {
                return Err("an expert of width 0".into());
            }
            if moe.sparse.len() != self.num_hidden_layers {
                return Err(format!(
                    "{} mixture flags for {} blocks",
                    moe.sparse.len(),
                    self.num_hidden_layers
                ));
            }
        }
        if !self.sliding.is_empty() && self.sliding.len() != self.num_hidden_layers {
            return Err(format!(
                "{} layer types for {} blocks",
                self.sliding.len(),
                self.num_hidden_layers
            ));
        }
        Ok(())
    }

    /// Whether block `i` is a sliding-window block (uses
    /// [`LlamaConfig::local_rope`] where there is one).
    pub fn is_sliding(&self, i: usize) -> bool {
        self.sliding_window.is_some() && self.sliding.get(i).copied().unwrap_or(true)
    }

    /// The attention window of block `i`: `Some(w)` when a token sees only
    /// itself and the `w - 1` tokens before it, `None` when it sees every
    /// earlier token.
    pub fn window(&self, i: usize) -> Option<usize> {
        self.sliding_window.filter(|_| self.is_sliding(i))
    }

    /// The rotary embedding of block `i`.
    pub fn rope_of(&self, i: usize) -> &Rope {
        match &self.local_rope {
            Some(local) if self.is_sliding(i) => local,
            _ => &self.rope,
        }
    }

    /// Every tensor the graph reads, with its shape, in checkpoint order:
    /// the token embedding, each block's, the final norm and (untied) the
    /// LM head. Builds test models.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let h = self.hidden_size;
        let mut shapes = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
        )];
        for i in 0..self.num_hidden_layers {
            let layer = format!("model.layers.{i}");
            for (name, width) in self.norms() {
                if name.starts_with("self_attn.") {
                    continue;
                }
                shapes.push((format!("{layer}.{name}.weight"), vec![width]));
            }
            for (name, width) in self.norms() {
                if name.starts_with("self_attn.") {
                    shapes.push((format!("{layer}.{name}.weight"), vec![width]));
                }
            }
            for p in self.projections(i) {
                shapes.push((format!("{layer}.{}.weight", p.name), vec![p.out, p.inp]));
                if p.bias {
                    shapes.push((format!("{layer}.{}.bias", p.name), vec![p.out]));
                }
            }
            for (name, rows) in self.routers(i) {
                shapes.push((format!("{layer}.{name}.weight"), vec![rows, h]));
            }
        }
        shapes.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            shapes.push(("lm_head.weight".to_string(), vec![self.vocab_size, h]));
        }
        shapes
    }

    /// A block's norms, by name within the block, with their widths: the
    /// input norm, `post_attention_layernorm`, Gemma's two feed-forward
    /// norms, and the per-head query and key norms.
    pub(super) fn norms(&self) -> Vec<(&'static str, usize)> {
        let h = self.hidden_size;
        let mut norms = vec![("input_layernorm", h), ("post_attention_layernorm", h)];
        if self.sandwich_norms {
            norms.push(("pre_feedforward_layernorm", h));
            norms.push(("post_feedforward_layernorm", h));
        }
        if self.qk_norm {
            norms.push(("self_attn.q_norm", self.head_dim));
            norms.push(("self_attn.k_norm", self.head_dim));
        }
        norms
    }

    /// The mixture of block `i`'s MLP, if it is one.
    pub fn moe_of(&self, i: usize) -> Option<&Moe> {
        self.moe
            .as_ref()
            .filter(|m| m.sparse.get(i).copied().unwrap_or(false))
    }

    /// Block `i`'s router weights (never pruned), by name within the block,
    /// with their rows: a mixture's router, and Qwen's shared expert gate.
    pub(super) fn routers(&self, i: usize) -> Vec<(&'static str, usize)> {
        match self.moe_of(i) {
            None => Vec::new(),
            Some(m) => match m.names {
                ExpertNames::Mixtral => vec![("block_sparse_moe.gate", m.experts)],
                ExpertNames::Qwen if m.shared_intermediate_size.is_some() => {
                    vec![("mlp.gate", m.experts), ("mlp.shared_expert_gate", 1)]
                }
                ExpertNames::Qwen => vec![("mlp.gate", m.experts)],
            },
        }
    }

    /// Block `i`'s linear layers, in checkpoint order: the attention's
    /// four (q, k, v, o; or fused qkv and o), then the MLP's three (gate,
    /// up, down; or fused gate_up and down) or, for a mixture, each
    /// expert's three and the shared expert's.
    pub(super) fn projections(&self, i: usize) -> Vec<Projection> {
        let (h, f) = (self.hidden_size, self.intermediate_size);
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let p = |name: String, out, inp, bias| Projection {
            name,
            out,
            inp,
            bias,
        };
        let mut all = if self.fused_projections {
            vec![
                p("self_attn.qkv_proj".into(), q + 2 * kv, h, self.qkv_bias),
                p("self_attn.o_proj".into(), h, q, self.o_bias),
            ]
        } else {
            vec![
                p("self_attn.q_proj".into(), q, h, self.qkv_bias),
                p("self_attn.k_proj".into(), kv, h, self.qkv_bias),
                p("self_attn.v_proj".into(), kv, h, self.qkv_bias),
                p("self_attn.o_proj".into(), h, q, self.o_bias),
            ]
        };
        let gated = |prefix: &str, width: usize, bias: bool| {
            vec![
                p(format!("{prefix}.gate_proj"), width, h, bias),
                p(format!("{prefix}.up_proj"), width, h, bias),
                p(format!("{prefix}.down_proj"), h, width, bias),
            ]
        };
        match self.moe_of(i) {
            Some(m) => {
                for e in 0..m.experts {
                    let fe = m.intermediate_size;
                    all.extend(match m.names {
                        ExpertNames::Mixtral => {
                            let x = format!("block_sparse_moe.experts.{e}");
                            vec![
                                p(format!("{x}.w1"), fe, h, false),
                                p(format!("{x}.w3"), fe, h, false),
                                p(format!("{x}.w2"), h, fe, false),
                            ]
                        }
                        ExpertNames::Qwen => gated(&format!("mlp.experts.{e}"), fe, false),
                    });
                }
                if let Some(fs) = m.shared_intermediate_size {
                    all.extend(gated("mlp.shared_expert", fs, false));
                }
            }
            None if self.fused_projections => {
                all.push(p("mlp.gate_up_proj".into(), 2 * f, h, self.mlp_bias));
                all.push(p("mlp.down_proj".into(), h, f, self.mlp_bias));
            }
            None => all.extend(gated("mlp", f, self.mlp_bias)),
        }
        all
    }
}

/// One linear layer of a block: its name within the block, its output and
/// input widths, whether it has a bias.
pub(super) struct Projection {
    pub(super) name: String,
    pub(super) out: usize,
    pub(super) inp: usize,
    pub(super) bias: bool,
}

/// The MLP's activation, from `hidden_activation` (Gemma) or `hidden_act`.
fn activation(fields: &Fields<'_>, gemma: bool) -> Result<Activation> {
    let value = if gemma {
        fields
            .get("hidden_activation")
            .or_else(|| fields.get("hidden_act"))
    } else {
        fields.get("hidden_act")
    };
    match value {
        None if gemma => Ok(Activation::GeluTanh),
        None => Ok(Activation::Silu),
        Some(Value::String(act)) => match act.as_str() {
            "silu" | "swish" => Ok(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_new" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::Gelu),
            _ => Err(fields.bad(format!(
                "hidden_act = \"{act}\" is not supported: prunus runs gated MLPs with silu, \
                 gelu_pytorch_tanh and gelu"
            ))),
        },
        Some(v) => Err(fields.bad(format!("hidden_act = {v} is not an activation name"))),
    }
}

/// The rotary embeddings (global, and the sliding blocks' own where the
/// family has one) and the `partial_rotary_factor`, from
/// `rope_parameters` (transformers 5, nested by layer type for Gemma 3) or
/// `rope_theta`, `rope_scaling` and `rope_local_base_freq`
/// (transformers 4).
fn ropes(
    fields: &Fields<'_>,
    model_type: ModelType,
    max_positions: usize,
) -> Result<(Rope, Option<Rope>, f64)> {
    let bad = |reason: String| fields.bad(reason);
    let params = match (fields.get("rope_parameters"), fields.get("rope_scaling")) {
        (Some(Value::Object(p)), _) => Some(p),
        (Some(v), _) => return Err(bad(format!("rope_parameters = {v} is not an object"))),
        (None, Some(Value::Object(p))) => Some(p),
        (None, Some(v)) => return Err(bad(format!("rope_scaling = {v} is not an object"))),
        (None, None) => None,
    };
    let nested = params.is_some_and(|p| p.values().any(Value::is_object));
    let gemma3 = model_type == ModelType::Gemma3Text;
    let default_theta = if gemma3 { 1_000_000.0 } else { 10000.0 };
    let (global, local) = if nested {
        let p = params.expect("nested parameters exist");
        if let Some(key) = p
            .keys()
            .find(|k| !matches!(k.as_str(), "full_attention" | "sliding_attention"))
        {
            return Err(bad(format!(
                "rope_parameters has {key:?}: prunus reads RoPE parameters per layer type for \
                 full_attention and sliding_attention only"
            )));
        }
        let part = |key: &str| -> Result<Option<&Map<String, Value>>> {
            match p.get(key).filter(|v| !v.is_null()) {
                None => Ok(None),
                Some(Value::Object(o)) => Ok(Some(o)),
                Some(v) => Err(bad(format!("rope_parameters.{key} = {v} is not an object"))),
            }
        };
        let global = rope(
            fields,
            part("full_attention")?,
            default_theta,
            max_positions,
        )?;
        let local = rope(fields, part("sliding_attention")?, 10000.0, max_positions)?;
        (global, Some(local))
    } else {
        let global = rope(fields, params, default_theta, max_positions)?;
        let local = if gemma3 {
            Some(Rope {
                theta: fields.number(
                    fields.get("rope_local_base_freq"),
                    "rope_local_base_freq",
                    10000.0,
                )?,
                scaling: RopeScaling::None,
            })
        } else {
            None
        };
        (global, local)
    };
    if local.is_some() && !gemma3 {
        return Err(bad(format!(
            "RoPE parameters given per layer type: prunus runs one rotary embedding for every \
             {model_type} block"
        )));
    }
    let partial = fields.number(
        params
            .filter(|_| !nested)
            .and_then(|p| p.get("partial_rotary_factor"))
            .or_else(|| fields.get("partial_rotary_factor")),
        "partial_rotary_factor",
        1.0,
    )?;
    if partial > 1.0 {
        return Err(bad(format!("partial_rotary_factor = {partial} is above 1")));
    }
    Ok((global, local, partial))
}

/// One rotary embedding from its parameters (`rope_parameters` or
/// `rope_scaling`, `None` for neither), with the top-level `rope_theta`
/// (else `default_theta`) where they name no base.
fn rope(
    fields: &Fields<'_>,
    params: Option<&Map<String, Value>>,
    default_theta: f64,
    max_positions: usize,
) -> Result<Rope> {
    let bad = |reason: String| fields.bad(reason);
    let top_theta = fields.get("rope_theta");
    let Some(params) = params else {
        return Ok(Rope {
            theta: fields.number(top_theta, "rope_theta", default_theta)?,
            scaling: RopeScaling::None,
        });
    };
    let theta = fields.number(
        params.get("rope_theta").or(top_theta),
        "rope_theta",
        default_theta,
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
    // Phi-3 states the pre-training context at the top level, where it
    // takes precedence (as in transformers).
    let original = || -> Result<usize> {
        let value = fields
            .get("original_max_position_embeddings")
            .or_else(|| params.get("original_max_position_embeddings"));
        match value.filter(|v| !v.is_null()) {
            None => Ok(max_positions),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(n as usize),
                _ => Err(bad(format!(
                    "original_max_position_embeddings = {v} is not a positive integer"
                ))),
            },
        }
    };
    let factors = |key: &str| -> Result<Vec<f64>> {
        let list = params
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| bad(format!("the {kind} RoPE scaling needs {key} (a list)")))?;
        list.iter()
            .map(|v| match v.as_f64() {
                Some(x) if x > 0.0 && x.is_finite() => Ok(x),
                _ => Err(bad(format!("{key} has {v}, not a positive number"))),
            })
            .collect()
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
            RopeScaling::Llama3 {
                factor: factor("factor")?,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: original()?,
            }
        }
        "longrope" | "su" => {
            let original = original()?;
            let scale = match params.get("factor").filter(|v| !v.is_null()) {
                Some(v) => fields.number(Some(v), "factor", 1.0)?,
                None => max_positions as f64 / original as f64,
            };
            let attention_factor = match params.get("attention_factor").filter(|v| !v.is_null()) {
                Some(v) => fields.number(Some(v), "attention_factor", 1.0)?,
                None if scale <= 1.0 => 1.0,
                None => (1.0 + scale.ln() / (original as f64).ln()).sqrt(),
            };
            RopeScaling::LongRope {
                short_factor: factors("short_factor")?,
                long_factor: factors("long_factor")?,
                original_max_position_embeddings: original,
                attention_factor,
            }
        }
        other => {
            return Err(bad(format!(
                "RoPE scaling type \"{other}\" is not supported: prunus runs default, linear, \
                 llama3 and longrope rotary embeddings"
            )));
        }
    };
    Ok(Rope { theta, scaling })
}

/// The mixtures of experts of a MoE family: the expert count under both
/// names configs use (`num_local_experts` in Mixtral's and in what
/// transformers 5 writes, `num_experts` in the Hub's Qwen MoE configs).
fn moe(
    fields: &Fields<'_>,
    model_type: ModelType,
    blocks: usize,
    intermediate_size: usize,
) -> Result<Option<Moe>> {
    let names = match model_type {
        ModelType::Mixtral => ExpertNames::Mixtral,
        ModelType::Qwen2Moe | ModelType::Qwen3Moe => ExpertNames::Qwen,
        _ => return Ok(None),
    };
    let experts = match (fields.get("num_local_experts"), fields.get("num_experts")) {
        (Some(_), _) => fields.size("num_local_experts", None)?,
        (None, Some(_)) => fields.size("num_experts", None)?,
        (None, None) => {
            return Err(fields.bad(format!(
                "no num_local_experts or num_experts: a {model_type} config needs the expert count"
            )));
        }
    };
    let top_k = fields.size("num_experts_per_tok", Some(2))?;
    let mixtral = names == ExpertNames::Mixtral;
    let expert_width = if mixtral {
        intermediate_size
    } else {
        fields.size("moe_intermediate_size", None)?
    };
    let shared = if model_type == ModelType::Qwen2Moe {
        Some(fields.size("shared_expert_intermediate_size", None)?)
    } else {
        None
    };
    let step = fields.size("decoder_sparse_step", Some(1))?;
    let dense: Vec<usize> = match fields.get("mlp_only_layers") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|a| {
                a.iter()
                    .map(|x| x.as_u64().map(|n| n as usize))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| fields.bad(format!("mlp_only_layers = {v} is not a list of blocks")))?,
    };
    let sparse = (0..blocks)
        .map(|i| mixtral || (!dense.contains(&i) && (i + 1) % step == 0))
        .collect();
    Ok(Some(Moe {
        experts,
        top_k,
        intermediate_size: expert_width,
        normalize: mixtral || fields.flag("norm_topk_prob", false)?,
        shared_intermediate_size: shared,
        sparse,
        names,
    }))
}

/// The sliding window and, per block, whether it uses it.
fn sliding_window(
    fields: &Fields<'_>,
    model_type: ModelType,
    blocks: usize,
) -> Result<(Option<usize>, Vec<bool>)> {
    let window = match model_type {
        ModelType::Llama => return Ok((None, Vec::new())),
        ModelType::Mistral | ModelType::Phi3 | ModelType::Mixtral => fields.get("sliding_window"),
        ModelType::Qwen2 | ModelType::Qwen3 | ModelType::Qwen2Moe | ModelType::Qwen3Moe => {
            if fields.flag("use_sliding_window", false)? {
                fields.get("sliding_window")
            } else {
                None
            }
        }
        ModelType::Gemma2 | ModelType::Gemma3Text => {
            Some(fields.get("sliding_window").unwrap_or(&Value::Null))
        }
    };
    let window = match (window, model_type.is_gemma()) {
        (None, _) => None,
        (Some(Value::Null), true) => Some(4096),
        (Some(_), _) => Some(fields.size("sliding_window", None)?),
    };
    let Some(window) = window else {
        return Ok((None, Vec::new()));
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
        return Ok((Some(window), sliding));
    }
    let sliding = match model_type {
        ModelType::Qwen2 | ModelType::Qwen3 | ModelType::Qwen2Moe | ModelType::Qwen3Moe => {
            let from = match fields.get("max_window_layers") {
                None => 28,
                Some(v) => v
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        fields.bad(format!("max_window_layers = {v} is not a block count"))
                    })?,
            };
            (0..blocks).map(|i| i >= from).collect()
        }
        ModelType::Gemma2 => (0..blocks).map(|i| i % 2 == 0).collect(),
        ModelType::Gemma3Text => {
            let pattern = fields.size("sliding_window_pattern", Some(6))?;
            (0..blocks).map(|i| (i + 1) % pattern != 0).collect()
        }
        _ => vec![true; blocks],
    };
    Ok((Some(window), sliding))
}
