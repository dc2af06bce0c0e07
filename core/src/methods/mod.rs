//! The pruning methods, one module or folder per method family or paper
//! (METHODS.md): gradient-flow measures, second-order pruning and the
//! Combinatorial Brain Surgeon, iterative magnitude pruning with the
//! consistency rule, greedy forward selection with compaction, and the
//! layer-wise calibrated methods for large models.
//!
//! Methods stand on [`crate::contract`], [`crate::selection`] and
//! [`crate::host`]; none of those imports a method.

pub mod flow;
pub mod forward;
pub mod imp;
pub mod layerwise;
pub mod second_order;
