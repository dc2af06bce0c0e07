//! prunus on candle: calibrated layer-wise pruning of Hugging Face model
//! folders (BERT-style encoders; LLaMA-family decoders: llama, mistral,
//! qwen2), run block by block on candle, with the layer-wise methods of
//! [`prunus_core::methods::layerwise`].

pub mod bert;
pub mod calibration;
mod error;
pub mod eval;
pub mod folder;
pub mod graph;
pub mod llama;
pub mod model;
pub mod pruning;
pub mod record;

pub use error::{Error, Result};
pub use folder::{FolderWriter, GlobalMagnitude, ModelFolder, WriteSummary, magnitude_global};
pub use graph::{Family, Graph, Part, Weights};
pub use model::open_graph;
pub use record::{Linear, Recorder};
