//! The backend contract: the [`Backend`](backend::Backend) and
//! [`Dense`](dense::Dense) traits and every type their signatures name
//! (shapes, ops, keys, histograms, granularities, masks, random streams,
//! errors), the argument checks all backends share, and the scalar
//! [`ReferenceBackend`](reference::ReferenceBackend) that defines what every
//! backend must produce.
//!
//! This folder imports nothing from the rest of the crate: selection, the
//! host and the methods stand on it.

pub mod backend;
pub mod check;
pub mod dense;
pub mod error;
pub mod granularity;
pub mod histogram;
pub mod key;
pub mod mask;
pub mod op;
pub mod random;
pub mod reference;
pub mod shape;
