//! prunus on burn: prune a burn model in place, keep it pruned through
//! training, and run every data-dependent method of prunus on it.
//!
//! - [`prune`] / [`Pruner`]: prune a burn [`Module`](burn::module::Module)'s
//!   weights in place with any scope, granularity and guard of core's
//!   [`PruneConfig`](prunus_core::PruneConfig), parameters named by their
//!   path in the module tree (`fc1.weight`). burn's `Linear` stores its
//!   weight `[in, out]`; prunus reads it as core's `[out, in]`, so units
//!   (neurons) and N:M groups mean the same as everywhere else in prunus.
//! - [`MaskSet`]: the masks, re-applied after every optimizer step so the
//!   pruned weights stay zero through training.
//! - [`BurnHost`]: a user's model, loss, data and optimizer as a
//!   [`prunus_core::Host`]: gradients from burn's autodiff, per-sample
//!   gradients, Hessian-vector products by finite difference, masks,
//!   evaluation, training, snapshots. Gradient-flow measures
//!   ([`prunus_core::methods::flow`]), second-order methods and IMP with
//!   rewinding ([`prunus_core::methods::imp::run_imp`]) run on it as on the
//!   lab's networks.
//!
//! The data splits, the parameter layouts and the in-place selection are
//! shared with the candle adapter ([`prunus_adapters::framework`]), so the
//! same weights and data give the same masks through either framework and
//! through the lab.
//!
//! Any burn device works: everything takes the device from the model.
//! With the crate's `wgpu` feature (which turns on burn's; `vulkan` and
//! `metal` pin the graphics API), `device::wgpu()` opens burn's wgpu device
//! with a clear [`Error`] where wgpu finds no adapter, and a model made
//! there is pruned, masked and driven as a host on the GPU: the same masks
//! as on ndarray bit for bit for magnitude and random scores, gradients and
//! training to f32 rounding.
//!
//! `docs/burn.md` walks from "I have a model in burn" to a pruned model
//! saved with burn's recorder, and on to the GPU.
//!
//! ```
//! use burn::nn::{Linear, LinearConfig};
//! use burn::prelude::*;
//! use prunus_core::PruneConfig;
//!
//! #[derive(Module, Debug)]
//! struct Mlp { fc1: Linear, fc2: Linear }
//!
//! let device = Device::ndarray();
//! let model = Mlp { fc1: LinearConfig::new(16, 32).init(&device),
//!                   fc2: LinearConfig::new(32, 10).init(&device) };
//! let config = PruneConfig::new(0.9).global().skip("fc2.weight");
//! let (model, masks) = prunus_burn::prune(&model, &config)?;
//! assert_eq!(masks.get("fc1.weight").unwrap().count_pruned(), 461);
//! let zeros = model.fc1.weight.val().equal_elem(0.0).int().sum().into_scalar::<i64>();
//! assert_eq!(zeros, 461);
//! # Ok::<(), prunus_burn::Error>(())
//! ```

pub mod device;
mod error;
pub mod host;
pub mod mask;
pub mod pruning;
pub mod tap;
pub mod tree;

pub use error::{Error, Result};
pub use host::{BurnHost, HostConfig, Loss, cross_entropy};
pub use mask::MaskSet;
pub use pruning::{Pruner, prune};
pub use tap::{Tap, TapLinear};
pub use tree::Layouts;

/// `docs/burn.md`, compiled and run with the doc tests so that its
/// program stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/burn.md")]
pub struct Guide;
