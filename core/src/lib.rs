#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod contract;
pub mod host;
pub mod methods;
pub mod selection;
pub mod splits;

pub use contract::backend::{
    Backend, Candidate, CutMasks, LowestMasks, MaskBatch, RangeMasks, ScoreView, SelectionPlan,
};
pub use contract::dense::{Dense, Matrix};
pub use contract::error::{Error, Result};
pub use contract::granularity::{Granularity, Grouping, NofM, Reduction};
pub use contract::key::{KeyRule, NanPolicy, Transform};
pub use contract::mask::{Compaction, Mask};
pub use contract::op::{BinaryOp, Transpose, UnaryOp};
pub use contract::reference::{HostTensor, ReferenceBackend};
pub use contract::shape::{HasShape, Shape};
pub use host::{Capability, Host, Objective, Samples, Split, Tap};
pub use methods::flow::{Measure, MeasureConfig};
pub use selection::config::{Guards, Importance, PruneConfig, Scope};
pub use selection::prune::{apply, prune, prune_with_scores};
pub use selection::schedule::Schedule;
pub use selection::select::{Layer, select, units_to_prune};
