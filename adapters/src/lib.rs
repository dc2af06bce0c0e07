//! prunus adapters: prune weights where they already live.
//!
//! One feature per integration:
//! - `ndarray` (default): prune `ndarray` arrays in place, zero-copy, through
//!   the rayon CPU backend ([`ndarray::prune_arrays`]).
//! - `safetensors` (default): read, prune, write and inspect safetensors
//!   checkpoints of F32, F16 and BF16 tensors, streamed tensor by tensor so
//!   a checkpoint larger than memory can be pruned ([`safetensors`]).
//!
//! - [`framework`] (always): what the candle and burn hosts share: data
//!   splits, the stored-tensor layout and in-place pruning of framework
//!   tensors. The frameworks themselves live in their own crates
//!   (`prunus-candle`, `prunus-burn`).

mod error;
pub mod framework;
#[cfg(feature = "ndarray")]
pub mod ndarray;
#[cfg(feature = "safetensors")]
pub mod safetensors;

pub use error::{Error, Problem, Result};
