//! prunus on candle: calibrated layer-wise pruning of Hugging Face model
//! folders (BERT-style encoders; LLaMA-family decoders: llama, mistral,
//! qwen2, qwen3, gemma2, gemma3_text, phi3), run block by block on candle,
//! with the layer-wise methods of
//! [`prunus_core::methods::layerwise`]; and a user's own candle model as a
//! [`prunus_core::Host`] ([`host`]) or a `VarMap` pruned in place
//! ([`varmap`]), so every method of prunus runs on it.

pub mod bert;
pub mod blocks;
pub mod calibration;
pub mod device;
mod error;
pub mod eval;
pub mod experts;
pub mod folder;
pub mod graph;
pub mod host;
pub mod llama;
pub mod model;
pub mod pruning;
pub mod record;
pub mod structured;
pub mod varmap;

pub use device::ComputeDevice;
pub use error::{Error, Result};

/// The guide for candle users (`docs/candle.md`), compiled and run as a
/// doctest so its code stays right.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/candle.md")]
pub struct CandleGuide;
pub use folder::{FolderWriter, GlobalMagnitude, ModelFolder, WriteSummary, magnitude_global};
pub use graph::{
    ExpertSpan, Family, Graph, KvCache, Part, Producer, Structure, StructureSpan, Weights,
};
pub use host::{CandleHost, HostSettings, PerSample, Probes};
pub use model::{open_graph, open_graph_with};
pub use record::{Linear, Recorder, StatsPlace};
pub use varmap::{Selection, VarMasks, prune_varmap};
