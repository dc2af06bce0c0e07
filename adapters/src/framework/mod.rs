//! What every framework host shares, whatever the framework: the data a
//! host trains and measures on ([`Splits`], from core), how a framework's stored
//! tensors map to core's parameter view ([`layout`]), and pruning stored
//! tensors in place ([`prune_views`]).
//!
//! The candle adapter (`prunus-candle`) and the burn adapter
//! (`prunus-burn`) build their [`prunus_core::Host`]s on these, so the two
//! hosts slice batches, shuffle epochs, name parameters and select weights
//! the same way, and the same way as the lab's host: the same weights and
//! data give the same masks through any of them.

pub mod layout;

pub use layout::{Stored, Units, parameters};
pub use prunus_core::splits::{Shuffle, SplitData, Splits};

use prunus_core::{Backend, Layer, Mask, PruneConfig, Shape, prune};
use prunus_cpu::CpuBackend;

use crate::error::Result;

/// Prunes row-major buffers in place as `config` asks, zeroing the pruned
/// weights, and returns their masks. `names[i]` names `buffers[i]`, whose
/// shape is `shapes[i]` (core's view: units on the rows; see
/// [`Stored::to_view`]); `previous`, when given, holds one earlier mask per
/// buffer, which the new masks never revive. Nothing is written unless the
/// whole selection succeeded.
///
/// ```
/// use prunus_adapters::framework::prune_views;
/// use prunus_core::{PruneConfig, Shape};
/// use prunus_cpu::{CpuBackend, Par};
///
/// let backend = CpuBackend::new(Par::Seq)?;
/// let mut w = vec![vec![0.5f32, -0.1, 0.3, 0.05]];
/// let masks = prune_views(&backend, &["fc1.weight"], &[Shape::matrix(2, 2)?], &mut w, None,
///                         &PruneConfig::new(0.5))?;
/// assert_eq!(w[0], [0.5, 0.0, 0.3, 0.0]);
/// assert_eq!(masks[0].count_pruned(), 2);
/// # Ok::<(), prunus_adapters::Error>(())
/// ```
pub fn prune_views(
    backend: &CpuBackend<'_>,
    names: &[&str],
    shapes: &[Shape],
    buffers: &mut [Vec<f32>],
    previous: Option<&[Mask]>,
    config: &PruneConfig,
) -> Result<Vec<Mask>> {
    let slices = buffers.iter_mut().map(Vec::as_mut_slice).collect();
    prune_slices(backend, names, shapes, slices, previous, config)
}

/// [`prune_views`] on borrowed slices: the one path of in-place pruning
/// that the `ndarray` adapter shares too.
pub(crate) fn prune_slices<'a>(
    backend: &CpuBackend<'a>,
    names: &[&str],
    shapes: &[Shape],
    slices: Vec<&'a mut [f32]>,
    previous: Option<&[Mask]>,
    config: &PruneConfig,
) -> Result<Vec<Mask>> {
    let same = |what, found| prunus_core::contract::check::same_len(what, slices.len(), found);
    same("tensor names", names.len())?;
    same("tensor shapes", shapes.len())?;
    if let Some(p) = previous {
        same("earlier masks", p.len())?;
    }
    let mut tensors = Vec::with_capacity(slices.len());
    for (slice, shape) in slices.into_iter().zip(shapes) {
        tensors.push(backend.borrow_mut(slice, shape)?);
    }
    let masks = {
        let layers: Vec<Layer<'_, CpuBackend<'a>>> = names
            .iter()
            .zip(&tensors)
            .enumerate()
            .map(|(i, (name, t))| Layer::new(name, t).with_mask(previous.map(|p| &p[i])))
            .collect();
        prune(backend, &layers, config)?
    };
    for (t, m) in tensors.iter_mut().zip(&masks) {
        backend.apply_mask(t, m)?;
    }
    Ok(masks)
}
