#![doc = include_str!("../README.md")]

pub mod error;
pub mod report;
pub mod synthetic;

pub use error::{Error, Result};
pub use report::{Report, Row, write_atomic, write_text_atomic};
pub use synthetic::{LayerSpec, SyntheticLayer, layer_specs, synthetic_layers};
