//! A model folder opened for running: its graph, chosen by `model_type`,
//! and its calibration and evaluation text turned into token sequences the
//! way that kind of model reads them.

use candle_core::Device;
use serde_json::Value;

use crate::bert::{Bert, BertConfig};
use crate::calibration::{bos_token, packed, sentences};
use crate::error::{Error, Result};
use crate::folder::ModelFolder;
use crate::graph::{Family, Graph};
use crate::llama::{Llama, LlamaConfig, ModelType};

/// The `model_type`s prunus runs.
pub const SUPPORTED: [&str; 11] = [
    "bert",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3_text",
    "phi3",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
];

/// The default sequence length of a decoder's calibration samples and
/// perplexity windows (cut to the model's context).
pub const DECODER_SEQ_LEN: usize = 512;

/// The graph of the model in `folder`, by its `config.json`'s
/// `model_type`, computing on `device`; no part is loaded yet. An
/// [`Error::Model`] for a `model_type` prunus cannot run.
pub fn open_graph(folder: &ModelFolder, device: &Device) -> Result<Box<dyn Graph>> {
    open_graph_with(folder, folder.config(), device)
}

/// [`open_graph`] with another `config.json` than the folder's (a model
/// whose blocks are being removed); the tensors are still `folder`'s.
pub fn open_graph_with(
    folder: &ModelFolder,
    config: &Value,
    device: &Device,
) -> Result<Box<dyn Graph>> {
    let origin = folder.dir().display().to_string();
    match folder.model_type() {
        Some("bert") => {
            let config = BertConfig::from_value(config, &origin)?;
            Ok(Box::new(
                Bert::new(config, folder, device.clone())?.with_origin(origin),
            ))
        }
        Some(name) if ModelType::from_name(name).is_some() => Ok(Box::new(
            Llama::new(LlamaConfig::from_value(config, &origin)?, device.clone())?
                .with_origin(origin),
        )),
        Some("gemma3") => Err(Error::model(
            origin,
            "config.json has model_type \"gemma3\", Gemma 3's image-text model: prunus runs its \
             text model, model_type \"gemma3_text\" (Gemma 3 1B, or the language model saved \
             on its own with Gemma3ForCausalLM)",
        )),
        other => Err(Error::model(
            origin,
            format!(
                "config.json has model_type {}; prunus runs {} (prune any other checkpoint by \
                 magnitude with `prunus prune FILE.safetensors`)",
                other.map_or("(none)".into(), |t| format!("{t:?}")),
                SUPPORTED.join(", ")
            ),
        )),
    }
}

/// The longest sentence an encoder in `folder` embeds: the
/// `max_seq_length` of its `sentence_bert_config.json` (as
/// sentence-transformers cuts sentences), else the graph's own limit.
pub fn sentence_len(folder: &ModelFolder, graph: &dyn Graph) -> usize {
    let path = folder.dir().join("sentence_bert_config.json");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|v| v.get("max_seq_length").and_then(Value::as_u64))
        .map_or(graph.max_len(), |n| (n as usize).clamp(2, graph.max_len()))
}

/// Token sequences from `lines` for the model in `folder`, tokenised with
/// its `tokenizer.json`: for an encoder one sentence per sequence (the
/// first `samples` lines, cut to [`sentence_len`]); for a decoder up to
/// `samples` packed sequences of `seq_len` tokens (cut to the context),
/// each starting with the beginning-of-sequence token where the tokenizer
/// has one (see [`crate::calibration`]).
pub fn token_samples(
    folder: &ModelFolder,
    graph: &dyn Graph,
    lines: &[String],
    samples: usize,
    seq_len: usize,
) -> Result<Vec<Vec<u32>>> {
    if samples == 0 {
        return Err(Error::request(
            "0 calibration samples: give at least one (--samples)",
        ));
    }
    let tokenizer = folder.tokenizer()?;
    match graph.family() {
        Family::Encoder => sentences(&tokenizer, lines, samples, sentence_len(folder, graph)),
        Family::Decoder => packed(
            &tokenizer,
            lines,
            samples,
            seq_len.min(graph.max_len()),
            bos_token(&tokenizer),
        ),
    }
}
