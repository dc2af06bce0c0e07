#![doc = include_str!("../README.md")]

pub mod calibration;
pub mod cbs;
pub mod chart;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod flow;
pub mod forward;
pub mod host;
pub mod idx;
pub mod infcop;
pub mod network;
pub mod report;
pub mod synthetic;

pub use error::{Error, Result};
pub use report::{ProtocolResult, Report, Row, write_atomic, write_text_atomic};
pub use synthetic::{LayerSpec, SyntheticLayer, layer_specs, synthetic_layers};
