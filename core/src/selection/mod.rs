//! Exact selection on top of the backend contract: radix selection of the
//! k-th smallest key, the scopes and guards of a pruning request, sparsity
//! schedules, and data-free pruning of weight tensors.
//!
//! Imports only [`crate::contract`].

pub mod config;
pub mod prune;
pub mod radix;
pub mod schedule;
pub mod select;
