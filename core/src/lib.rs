#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod backend;
pub mod check;
pub mod compaction;
pub mod config;
pub mod consistency;
pub mod dense;
pub mod error;
pub mod fisher;
pub mod forward;
pub mod granularity;
pub mod host;
pub mod imp;
pub mod key;
pub mod mask;
pub mod measure;
pub mod op;
pub mod pq_index;
pub mod prune;
pub mod radix;
pub mod random;
pub mod reference;
pub mod schedule;
pub mod select;
pub mod shape;
pub mod surgeon;

pub use backend::{Backend, Candidate, CutMasks, MaskBatch, RangeMasks, ScoreView, SelectionPlan};
pub use config::{Guards, Importance, PruneConfig, Scope};
pub use dense::{Dense, Matrix};
pub use error::{Error, Result};
pub use granularity::{Granularity, Grouping, NofM, Reduction};
pub use host::{Capability, Host, Objective, Samples, Split, Tap};
pub use key::{KeyRule, NanPolicy, Transform};
pub use mask::{Compaction, Mask};
pub use measure::{Measure, MeasureConfig};
pub use op::{BinaryOp, Transpose, UnaryOp};
pub use prune::{apply, prune, prune_with_scores};
pub use reference::{HostTensor, ReferenceBackend};
pub use schedule::Schedule;
pub use select::{Layer, select, units_to_prune};
pub use shape::{HasShape, Shape};
