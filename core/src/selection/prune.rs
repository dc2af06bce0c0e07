//! Data-free pruning of weight tensors: score, select, expand to weight masks.

use alloc::vec::Vec;

use crate::contract::backend::{Backend, ScoreView};
use crate::contract::error::{Error, Result};
use crate::contract::granularity::{Granularity, Grouping, NofM};
use crate::contract::key::{KeyRule, NanPolicy, Transform};
use crate::contract::mask::Mask;
use crate::contract::shape::HasShape;
use crate::selection::config::{Importance, PruneConfig};
use crate::selection::select::{Layer, plan, select};

/// Computes the weight masks that `config` asks for. `layers` hold the
/// weights (and the masks of an earlier round, which the result never
/// revives). Returns one host mask per layer, of its weights' shape; the
/// weights themselves are not changed (see [`apply`]).
///
/// ```
/// use prunus_core::{prune, Backend, Layer, PruneConfig, ReferenceBackend, Shape};
/// let b = ReferenceBackend;
/// let w1 = b.upload(&[0.5, -0.1, 0.3, 0.05], &Shape::matrix(2, 2)?)?;
/// let w2 = b.upload(&[-2.0, 0.2], &Shape::vector(2))?;
/// let layers = [Layer::new("fc1", &w1), Layer::new("fc2", &w2)];
/// let masks = prune(&b, &layers, &PruneConfig::new(0.5))?;
/// // The three smallest magnitudes of all six weights are pruned.
/// assert_eq!(masks[0].kept().collect::<Vec<_>>(), [0, 2]);
/// assert_eq!(masks[1].kept().collect::<Vec<_>>(), [0]);
/// # Ok::<(), prunus_core::Error>(())
/// ```
pub fn prune<B: Backend + ?Sized>(
    backend: &B,
    layers: &[Layer<'_, B>],
    config: &PruneConfig,
) -> Result<Vec<Mask>> {
    config.granularity.validate()?;
    match (config.granularity, config.importance) {
        (Granularity::Unstructured, Importance::Magnitude) => {
            select(backend, layers, config, Transform::Abs)
        }
        (Granularity::NofM(p), Importance::Magnitude) => {
            n_of_m(backend, layers, None, Transform::Abs, config, p)
        }
        (Granularity::Groups(g), Importance::Magnitude) => {
            check_not_empty(layers)?;
            let scores = group_norms(backend, layers, config, g)?;
            select_units(backend, layers, &scores, config, g)
        }
        (granularity, Importance::Random { seed }) => {
            let scores = random_scores(backend, layers, seed, |l| match granularity {
                Granularity::Groups(g) => g.unit_shape(l.tensor.shape()),
                _ => l.tensor.shape().clone(),
            })?;
            prune_with_scores(backend, layers, &scores, config)
        }
    }
}

/// Computes the weight masks of `config` from scores the caller computed
/// (lowest pruned first; `config.importance` is not used): one score tensor
/// per layer, of the weights' shape for unstructured and N:M pruning, of
/// shape `[units]` for groups ([`Grouping::unit_shape`]). `layers` give the
/// names, weight shapes and earlier masks. This is how data-dependent
/// measures ([`crate::methods::flow`]) select.
///
/// ```
/// use prunus_core::{prune_with_scores, Backend, Granularity, Layer, PruneConfig, ReferenceBackend, Shape};
/// let b = ReferenceBackend;
/// let w = b.upload(&[1.0; 6], &Shape::matrix(3, 2)?)?;
/// let unit_scores = b.upload(&[0.2, -1.0, 0.5], &Shape::vector(3))?;
/// let config = PruneConfig::new(1.0 / 3.0).granularity(Granularity::NEURONS);
/// let masks = prune_with_scores(&b, &[Layer::new("fc", &w)], &[unit_scores], &config)?;
/// // The row of lowest score (-1.0) goes.
/// assert_eq!(masks[0].kept().collect::<Vec<_>>(), [0, 1, 4, 5]);
/// # Ok::<(), prunus_core::Error>(())
/// ```
pub fn prune_with_scores<B: Backend + ?Sized>(
    backend: &B,
    layers: &[Layer<'_, B>],
    scores: &[B::Tensor],
    config: &PruneConfig,
) -> Result<Vec<Mask>> {
    config.granularity.validate()?;
    crate::contract::check::same_len("score tensors", layers.len(), scores.len())?;
    match config.granularity {
        Granularity::Unstructured => {
            for (l, s) in layers.iter().zip(scores) {
                crate::contract::check::same_shape("scores", l.tensor.shape(), s.shape())?;
            }
            let scored = rebind(layers, scores, |l| l.mask.cloned());
            let scored: Vec<Layer<'_, B>> = scored
                .iter()
                .map(|(l, m)| l.with_mask(m.as_ref()))
                .collect();
            select(backend, &scored, config, Transform::Identity)
        }
        Granularity::NofM(p) => n_of_m(
            backend,
            layers,
            Some(scores),
            Transform::Identity,
            config,
            p,
        ),
        Granularity::Groups(g) => {
            check_not_empty(layers)?;
            for (l, s) in layers.iter().zip(scores) {
                crate::contract::check::same_shape(
                    "unit scores",
                    &g.unit_shape(l.tensor.shape()),
                    s.shape(),
                )?;
            }
            select_units(backend, layers, scores, config, g)
        }
    }
}

/// Zeroes the pruned weights of each tensor in place.
pub fn apply<B: Backend + ?Sized>(
    backend: &B,
    weights: &mut [&mut B::Tensor],
    masks: &[Mask],
) -> Result<()> {
    crate::contract::check::same_len("masks", weights.len(), masks.len())?;
    for (w, m) in weights.iter_mut().zip(masks) {
        let m = backend.upload_mask(m)?;
        backend.apply_mask(w, &m)?;
    }
    Ok(())
}

fn random_scores<B: Backend + ?Sized>(
    backend: &B,
    layers: &[Layer<'_, B>],
    seed: u64,
    shape: impl Fn(&Layer<'_, B>) -> crate::Shape,
) -> Result<Vec<B::Tensor>> {
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| backend.random_uniform(&shape(l), seed, i as u32))
        .collect()
}

/// Layers with the same names over other tensors, with per-layer masks.
fn rebind<'a, B: Backend + ?Sized>(
    layers: &[Layer<'a, B>],
    tensors: &'a [B::Tensor],
    mask: impl Fn(&Layer<'a, B>) -> Option<Mask>,
) -> Vec<(Layer<'a, B>, Option<Mask>)> {
    layers
        .iter()
        .zip(tensors)
        .map(|(l, t)| (Layer::new(l.name, t), mask(l)))
        .collect()
}

/// A tensor of no element may still have units (rows of a `[3, 0]`
/// tensor): they must not take part in a group selection.
fn check_not_empty<B: Backend + ?Sized>(layers: &[Layer<'_, B>]) -> Result<()> {
    match layers.iter().find(|l| l.tensor.shape().is_empty()) {
        Some(l) => Err(Error::EmptyTensor {
            layer: l.name.into(),
        }),
        None => Ok(()),
    }
}

/// The group norm of each unit, over its surviving weights only.
fn group_norms<B: Backend + ?Sized>(
    backend: &B,
    layers: &[Layer<'_, B>],
    config: &PruneConfig,
    g: Grouping,
) -> Result<Vec<B::Tensor>> {
    layers
        .iter()
        .map(|l| match l.mask {
            // A unit is scored by its surviving weights only, whether or
            // not the caller has zeroed the pruned ones already.
            Some(m) => {
                crate::contract::check::same_shape("earlier mask", l.tensor.shape(), m.shape())?;
                let mut w = backend.unary(crate::UnaryOp::Scale(1.0), l.tensor)?;
                backend.apply_mask(&mut w, &backend.upload_mask(m)?)?;
                backend.reduce_groups(&w, g, config.group_norm)
            }
            None => backend.reduce_groups(l.tensor, g, config.group_norm),
        })
        .collect()
}

/// Selects whole units by their scores (`[units]` per layer) and expands
/// the unit masks to weight masks.
fn select_units<B: Backend + ?Sized>(
    backend: &B,
    layers: &[Layer<'_, B>],
    scores: &[B::Tensor],
    config: &PruneConfig,
    g: Grouping,
) -> Result<Vec<Mask>> {
    for l in layers {
        if let Some(m) = l.mask {
            crate::contract::check::same_shape("earlier mask", l.tensor.shape(), m.shape())?;
        }
    }
    let unit_masks: Vec<Option<Mask>> = layers
        .iter()
        .map(|l| l.mask.map(|m| m.reduce_any(g)).transpose())
        .collect::<Result<_>>()?;
    let scored = rebind(layers, scores, |_| None);
    let scored: Vec<Layer<'_, B>> = scored
        .iter()
        .zip(&unit_masks)
        .map(|((l, _), m)| l.with_mask(m.as_ref()))
        .collect();
    let units = select(backend, &scored, config, Transform::Identity)?;
    layers
        .iter()
        .zip(units)
        .map(|(l, u)| {
            let m = u.expand(g, l.tensor.shape())?;
            match l.mask {
                Some(prev) => m.and(prev),
                None => Ok(m),
            }
        })
        .collect()
}

/// N:M masks ranked by `scores` (the weights themselves when `None`)
/// through `transform`.
fn n_of_m<B: Backend + ?Sized>(
    backend: &B,
    layers: &[Layer<'_, B>],
    scores: Option<&[B::Tensor]>,
    transform: Transform,
    config: &PruneConfig,
    p: NofM,
) -> Result<Vec<Mask>> {
    let names: Vec<&str> = layers.iter().map(|l| l.name).collect();
    let units: Vec<u64> = layers
        .iter()
        .map(|l| l.tensor.shape().numel() as u64)
        .collect();
    let masks: Vec<Option<&Mask>> = layers.iter().map(|l| l.mask).collect();
    // The target fields do not apply to N:M; only names, skips and shapes are checked.
    let mut checked = config.clone();
    checked.sparsity = 0.0;
    checked.scope = crate::Scope::Global;
    let plan = plan(&names, &units, &masks, &checked)?;
    for &i in &plan.active {
        p.check_shape(names[i], layers[i].tensor.shape())?;
        if let Some(m) = layers[i].mask {
            crate::contract::check::same_shape(
                "earlier mask",
                layers[i].tensor.shape(),
                m.shape(),
            )?;
        }
    }
    if let Some(scores) = scores {
        for &i in &plan.active {
            crate::contract::check::same_shape(
                "scores",
                layers[i].tensor.shape(),
                scores[i].shape(),
            )?;
        }
    }
    let survivors: Vec<Option<B::Mask>> = plan
        .active
        .iter()
        .map(|&i| layers[i].mask.map(|m| backend.upload_mask(m)).transpose())
        .collect::<Result<_>>()?;
    let inputs: Vec<ScoreView<'_, B>> = plan
        .active
        .iter()
        .zip(&survivors)
        .map(|(&i, s)| {
            let t = scores.map_or(layers[i].tensor, |s| &s[i]);
            ScoreView::with_survivors(t, s.as_ref())
        })
        .collect();
    let rule = KeyRule {
        transform,
        nan: config.nan,
    };
    let batch = backend.n_of_m_masks(&inputs, rule, p)?;
    if config.nan == NanPolicy::Error
        && let Some((&i, &count)) = plan.active.iter().zip(&batch.nan).find(|&(_, &c)| c > 0)
    {
        return Err(Error::NanScores {
            layer: names[i].into(),
            count,
        });
    }
    let mut selected = backend.download_masks(batch.masks)?.into_iter();
    let mut active = plan.active.iter().peekable();
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let fresh = if active.peek() == Some(&&i) {
                active.next();
                selected.next()
            } else {
                None
            };
            match (fresh, l.mask) {
                (Some(m), Some(prev)) => m.and(prev),
                (Some(m), None) => Ok(m),
                (None, Some(prev)) => Ok(prev.clone()),
                (None, None) => Ok(Mask::keep_all(l.tensor.shape().clone())),
            }
        })
        .collect()
}
