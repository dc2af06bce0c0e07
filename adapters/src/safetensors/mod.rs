//! Safetensors checkpoints: read (memory-mapped, tensor by tensor), prune
//! exactly, write back atomically, inspect.
//!
//! - [`Checkpoint`] opens a file read-only and checks its whole header
//!   before any data is read: header length, JSON, known dtypes, shapes
//!   against offsets, offsets inside the file, no overlap and no gap. Every
//!   fault is an [`Error::Malformed`](crate::Error::Malformed) naming the
//!   tensor.
//! - [`prune_file`] prunes F32, F16 and BF16 tensors of rank 2 or more,
//!   globally (one exact selection over every pruned tensor, streamed),
//!   locally, by per-tensor budgets, or to an N:M pattern; the output keeps
//!   every tensor's dtype, shape and untouched bits, optionally adds
//!   `<name>.mask` tensors, and records what was done in the metadata.
//! - [`inspect`] reports per-tensor sparsity and N:M conformance.
//!
//! Peak memory is bounded by the largest tensor (its mapping, a copy, and
//! its mask) plus a few MiB of merged counts and a few dozen bytes per
//! pruned tensor, whatever the file's size or tensor count. A global
//! selection reads the file once before the write (F32 after a sample of a
//! few thousand pages; again only where the sample missed, or for tensors a
//! guard saturates). The selection is the one of [`prunus_core::select()`],
//! mask for mask.
//!
//! ```no_run
//! use prunus_adapters::safetensors::{Checkpoint, Options, Request, prune_file};
//! use prunus_core::PruneConfig;
//! use prunus_cpu::{CpuBackend, Par};
//!
//! let backend = CpuBackend::new(Par::Rayon(0))?;
//! let input = Checkpoint::open("model.safetensors")?;
//! let request = Request::new(PruneConfig::new(0.5).global());
//! let report = prune_file(&backend, &input, "pruned.safetensors".as_ref(),
//!     Options::default(), &request, &mut |_| {})?;
//! let (n, _, zeros) = report.pruned_totals();
//! println!("{zeros} of {n} weights are zero");
//! # Ok::<(), prunus_adapters::Error>(())
//! ```

mod checkpoint;
mod dtype;
mod header;
mod inspect;
mod output;
mod prune;
mod stream;
#[cfg(test)]
mod tests;

pub use checkpoint::{Checkpoint, TensorData};
pub use dtype::Dtype;
pub use header::{MAX_HEADER, TensorInfo, write as write_header};
pub use inspect::{TensorStats, inspect};
pub use output::{Options, write_atomic};
pub use prune::{
    Filter, Kept, PRUNUS_VERSION, Progress, Report, Request, TensorReport, plan, prune_file,
    prune_to_writer,
};
