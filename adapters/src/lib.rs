//! prunus adapters: prune weights where they already live.
//!
//! One feature per integration:
//! - `ndarray` (default): prune `ndarray` arrays in place, zero-copy, through
//!   the rayon CPU backend ([`ndarray::prune_arrays`]).
//!
//! Safetensors checkpoints and framework adapters (candle, burn) follow.

mod error;
#[cfg(feature = "ndarray")]
pub mod ndarray;

pub use error::{Error, Result};
