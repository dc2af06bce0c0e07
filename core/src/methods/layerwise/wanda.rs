//! Wanda (Sun, Liu, Bair, Kolter 2023; `locuslab/wanda`): prune the weights
//! of least `|W_ij| · ‖X_j‖₂`, compared within each output row, with no
//! weight update.

use alloc::vec::Vec;

use crate::contract::backend::{Backend, ScoreView};
use crate::contract::error::{Error, Result};
use crate::contract::granularity::NofM;
use crate::contract::key::{KeyRule, Transform};
use crate::contract::mask::Mask;
use crate::contract::op::{BinaryOp, UnaryOp};
use crate::contract::shape::{HasShape, Shape};
use crate::selection::config::{PruneConfig, Scope};
use crate::selection::select::{Layer, select};

use super::stats::LayerStats;
use super::{Target, pruned_total};

/// Which weights Wanda's scores are compared among, for a sparsity target
/// (an N:M target always compares within each group of `m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WandaScope {
    /// Within each output row, as the paper does (its "per output"
    /// comparison group): exactly `round(s · in)` removed from every row.
    #[default]
    Row,
    /// Within each layer: exactly `round(s · out · in)` per layer, rows
    /// losing different numbers (the paper's ablation, worse on LLaMA).
    Layer,
    /// Across all the layers passed together: exactly `round(s · n)` of
    /// their `n` weights.
    Global,
}

/// One layer for [`wanda()`]: its weights `[out, in]` on the backend and the
/// statistics of its inputs.
pub struct WandaLayer<'a, B: Backend + ?Sized> {
    /// A unique name, used in errors.
    pub name: &'a str,
    /// The weights, `[out, in]`.
    pub weights: &'a B::Tensor,
    /// Its calibration statistics (the sums of squares are enough).
    pub stats: &'a LayerStats,
}

/// Wanda's scores `|W_ij| · ‖X_j‖₂` on the backend, the norm rounded to f32
/// from the f64 statistics and the product computed in f32 (the same bits
/// on every backend). Fails on a weight tensor that is not `[out, in]` with
/// `in` the statistics' width, and on statistics that saw no rows.
pub fn wanda_scores<B: Backend + ?Sized>(
    backend: &B,
    weights: &B::Tensor,
    stats: &LayerStats,
) -> Result<B::Tensor> {
    stats.require_rows()?;
    let shape = weights.shape();
    let (out, cols) = matrix_dims(shape, stats)?;
    let norms: Vec<f32> = stats.column_norms().iter().map(|&n| n as f32).collect();
    let mut broadcast = Vec::with_capacity(out * cols);
    for _ in 0..out {
        broadcast.extend_from_slice(&norms);
    }
    let norms = backend.upload(&broadcast, shape)?;
    let magnitude = backend.unary(UnaryOp::Abs, weights)?;
    backend.binary(BinaryOp::Mul, &magnitude, &norms)
}

fn matrix_dims(shape: &Shape, stats: &LayerStats) -> Result<(usize, usize)> {
    let dims = shape.dims();
    if dims.len() != 2 || dims[1] != stats.columns() {
        return Err(Error::shape_mismatch(
            "Wanda weights ([out, in], in = the statistics' width)",
            &Shape::matrix(dims.first().copied().unwrap_or(0).max(1), stats.columns())?,
            shape,
        ));
    }
    Ok((dims[0], dims[1]))
}

/// Wanda's masks (`false` = pruned), one per layer: exactly `m − n` of every
/// `m` for N:M, and for a sparsity exactly `round(s · n)` of each comparison
/// group of the [`WandaScope`]; the lowest scores first, ties to the lowest
/// index (the official code's ties fall to its sort's order). Apply them with
/// [`Backend::apply_mask`]: Wanda does not update the weights it keeps.
///
/// Everything runs on the backend: the scores, then the backend's N:M
/// selection with `m` = the row length for [`WandaScope::Row`] (a row is one
/// group), or [`select()`] for the others. NaN weights are an error.
pub fn wanda<B: Backend + ?Sized>(
    backend: &B,
    layers: &[WandaLayer<'_, B>],
    target: Target,
    scope: WandaScope,
) -> Result<Vec<Mask>> {
    if layers.is_empty() {
        return Err(Error::NoLayers);
    }
    let mut scores = Vec::with_capacity(layers.len());
    for l in layers {
        let (_, cols) = matrix_dims(l.weights.shape(), l.stats)?;
        target.validate(l.name, cols)?;
        scores.push(wanda_scores(backend, l.weights, l.stats)?);
    }
    let named: Vec<Layer<'_, B>> = layers
        .iter()
        .zip(&scores)
        .map(|(l, s)| Layer::new(l.name, s))
        .collect();
    match (target, scope) {
        (Target::NofM(pattern), _) => groups(backend, &named, |_| pattern),
        (Target::Sparsity(s), WandaScope::Row) => {
            let cols: Vec<usize> = named.iter().map(|l| l.tensor.shape().dims()[1]).collect();
            let k: Vec<u64> = cols.iter().map(|&c| pruned_total(s, c)).collect();
            if k.iter().zip(&cols).any(|(&k, &c)| k == 0 || k == c as u64) {
                // Nothing or everything per row: the same as per layer.
                return by_scope(backend, &named, s, Scope::Local);
            }
            groups(backend, &named, |i| NofM {
                n: cols[i] - k[i] as usize,
                m: cols[i],
            })
        }
        (Target::Sparsity(s), WandaScope::Layer) => by_scope(backend, &named, s, Scope::Local),
        (Target::Sparsity(s), WandaScope::Global) => by_scope(backend, &named, s, Scope::Global),
    }
}

fn groups<B: Backend + ?Sized>(
    backend: &B,
    layers: &[Layer<'_, B>],
    pattern: impl Fn(usize) -> NofM,
) -> Result<Vec<Mask>> {
    let mut masks = Vec::with_capacity(layers.len());
    for (i, l) in layers.iter().enumerate() {
        let view = ScoreView::new(l.tensor);
        let batch = backend.n_of_m_masks(&[view], KeyRule::IDENTITY, pattern(i))?;
        if let Some(&count) = batch.nan.first().filter(|&&c| c > 0) {
            return Err(Error::NanScores {
                layer: l.name.into(),
                count,
            });
        }
        masks.extend(backend.download_masks(batch.masks)?);
    }
    Ok(masks)
}

fn by_scope<B: Backend + ?Sized>(
    backend: &B,
    layers: &[Layer<'_, B>],
    sparsity: f64,
    scope: Scope,
) -> Result<Vec<Mask>> {
    let mut config = PruneConfig::new(sparsity).allow_empty(true);
    config.scope = scope;
    select(backend, layers, &config, Transform::Identity)
}
