//! Layer-wise calibrated pruning (METHODS.md §5): what people use on large
//! models. A linear layer `W: [out, in]` is pruned so that its output on
//! calibration inputs `X: [n, in]` changes as little as possible; that
//! change, `‖(W − Ŵ) Xᵀ‖²_F = Σ_r δ_r (XᵀX) δ_rᵀ`, depends on the inputs only
//! through `XᵀX` and splits by output row.
//!
//! This module holds the math and never sees a model: the host (the candle
//! adapter, or any framework that can record a layer's inputs) fills one
//! [`LayerStats`] per layer; the methods turn weights and statistics into
//! masks and updated weights.
//!
//! | method | what it does | cost for one layer | memory |
//! |---|---|---|---|
//! | [`wanda()`] | scores `\|W_ij\| · ‖X_j‖₂`, the lowest removed per row (or layer, or across layers; N:M per group); no update | `O(out · in)` through [`Backend`](crate::Backend) | the scores |
//! | [`sparsegpt()`] | the official algorithm: column blocks, adaptive masks, OBS error fed forward, lazy block updates; exact counts | Cholesky and solve `≈ 0.8 in³`, updates `≈ out · in²` multiply-adds | `3 · 8 in²` + `8 · out · in` bytes |
//! | [`obs()`] exact (`block: None`) | per row, greedy exact OBS (remove the weight of least `w_q²/[H⁻¹]_qq`, downdate `H⁻¹`), rows' costs allocated across the layer as OBC does, then CBS-style swaps | `≈ out · in³ / 2` multiply-adds (greedy `in³/3`, swaps `≈ in³/8` per row) | `16 in²` per thread, plus SparseGPT's |
//! | [`obs()`] blocked (`block: Some(b)`) | the same within column blocks of `b`, compensating on every column from the block on | `≈ out · in · b² / 2` plus SparseGPT's | as SparseGPT's |
//!
//! All of them prune exactly the count asked: `round(s · n)` per layer (or
//! per row where the scope says so), exactly `m − n` of every `m` for N:M,
//! ties to the lowest index. [`reconstruction_error`] measures any result on
//! the same statistics, so methods can be compared without a model.
//!
//! ```
//! use prunus_core::methods::layerwise::{LayerStats, Target, SparseGptConfig, sparsegpt, reconstruction_error};
//! use prunus_core::{Matrix, ReferenceBackend};
//! let mut stats = LayerStats::new(4, true)?;
//! stats.push(&[1.0, 0.5, 0.0, 2.0, 0.3, 1.0, 1.0, -1.0, 0.2, 0.1, 0.9, 0.4, 1.5, -0.5, 0.3, 0.0], 4)?;
//! let w = Matrix::from_f32(2, 4, &[0.4, -0.2, 0.1, 0.3, 0.05, 0.6, -0.3, 0.2])?;
//! let pruned = sparsegpt(&ReferenceBackend, &w, &stats, &SparseGptConfig::new(Target::Sparsity(0.5)))?;
//! assert_eq!(pruned.mask.count_pruned(), 4);
//! let error = reconstruction_error(&ReferenceBackend, &w, &pruned.weights, &stats)?;
//! assert!(error >= 0.0);
//! # Ok::<(), prunus_core::Error>(())
//! ```

mod hessian;
mod obs;
mod sparsegpt;
mod stats;
mod structured;
mod wanda;

pub use hessian::{Hessian, PERCDAMP, damped_hessian, inverse_factor};
pub use obs::{Allocation, ObsConfig, obs, row_cost};
pub use sparsegpt::{SparseGptConfig, sparsegpt};
pub use stats::LayerStats;
pub use structured::{
    GroupLayout, GroupScore, GroupSearch, MAX_STEPS, StructuredConfig, StructuredLayer,
    StructuredPruned, group_scores, kept_objective, refit, structured, structured_error,
};
pub use wanda::{WandaLayer, WandaScope, wanda, wanda_scores};

use alloc::vec::Vec;

use crate::contract::dense::{Dense, Matrix};
use crate::contract::error::{Error, Result};
use crate::contract::granularity::NofM;
use crate::contract::mask::Mask;
use crate::contract::op::Transpose;
use crate::contract::shape::Shape;
use crate::selection::select::units_to_prune;

/// What a layer-wise method removes from a layer.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Target {
    /// This fraction of the weights, in `[0, 1]`: exactly `round(s · n)`.
    Sparsity(f64),
    /// At most `n` kept of every `m` consecutive weights of a row (the input
    /// side): exactly `m − n` removed per group. The row length must be a
    /// multiple of `m`.
    NofM(NofM),
}

impl Target {
    /// Checks the target against a layer of `cols` inputs.
    pub fn validate(self, layer: &str, cols: usize) -> Result<()> {
        match self {
            Target::Sparsity(s) if !(0.0..=1.0).contains(&s) => {
                Err(Error::SparsityOutOfRange { value: s })
            }
            Target::Sparsity(_) => Ok(()),
            Target::NofM(p) => {
                p.validate()?;
                p.check_shape(layer, &Shape::matrix(1, cols)?)
            }
        }
    }
}

/// Where a layer's pruned count `total` falls among its column blocks:
/// the columns `[0, c)` hold `⌊(total · c + ⌊cols/2⌋) / cols⌋` of it, so a
/// block `[c0, c1)` prunes the difference and the blocks add up to `total`
/// exactly, each within one of its proportional share.
pub(crate) fn block_share(total: u64, cols: usize, c0: usize, c1: usize) -> u64 {
    let upto = |c: usize| {
        let num = u128::from(total) * c as u128 + (cols / 2) as u128;
        (num / cols as u128) as u64
    };
    upto(c1) - upto(c0)
}

/// The number of weights a sparsity removes from `n`.
pub(crate) fn pruned_total(sparsity: f64, n: usize) -> u64 {
    units_to_prune(sparsity, n as u64)
}

/// The result of a layer-wise method that updates weights.
#[derive(Clone, Debug, PartialEq)]
pub struct Pruned {
    /// The updated weights `[out, in]` in f64, exactly `+0.0` where pruned.
    pub weights: Matrix,
    /// Which weights were pruned (`false`), of shape `[out, in]`.
    pub mask: Mask,
    /// The method's own objective, `½ Σ_r δ_r H δ_rᵀ` against the damped
    /// `H = 2XᵀX/n + λI` (for SparseGPT the sum of its per-column losses,
    /// the official code's "error").
    pub loss: f64,
}

impl Pruned {
    /// The updated weights in f32, row-major (pruned weights `+0.0`).
    pub fn weights_f32(&self) -> Vec<f32> {
        self.weights.data().iter().map(|&v| v as f32).collect()
    }
}

/// `‖(W − Ŵ) Xᵀ‖²_F = Σ_r δ_r (XᵀX) δ_rᵀ`: how much the layer's output on
/// the calibration inputs changed, from the statistics' Gram matrix alone
/// (undamped, unscaled). The one measure of quality every layer-wise method
/// is compared by. Cost `out · in²` multiply-adds through `dense`.
pub fn reconstruction_error<D: Dense + ?Sized>(
    dense: &D,
    original: &Matrix,
    pruned: &Matrix,
    stats: &LayerStats,
) -> Result<f64> {
    let gram = stats.require_gram()?;
    check_weights(original, stats)?;
    if (pruned.rows(), pruned.cols()) != (original.rows(), original.cols()) {
        return Err(Error::LengthMismatch {
            what: "pruned weights (the original's rows × columns)",
            expected: original.data().len(),
            found: pruned.data().len(),
        });
    }
    let delta = Matrix::new(
        original.rows(),
        original.cols(),
        pruned
            .data()
            .iter()
            .zip(original.data())
            .map(|(p, o)| p - o)
            .collect(),
    )?;
    let mut product = Matrix::zeros(delta.rows(), delta.cols());
    dense.matmul(
        &mut product,
        0.0,
        &delta,
        Transpose::No,
        gram,
        Transpose::No,
        1.0,
    )?;
    Ok(product
        .data()
        .iter()
        .zip(delta.data())
        .map(|(a, b)| a * b)
        .sum())
}

/// Checks a weight matrix against the statistics: its width, no NaN or
/// infinite weight, at least one row.
pub(crate) fn check_weights(weights: &Matrix, stats: &LayerStats) -> Result<()> {
    if weights.cols() != stats.columns() {
        return Err(Error::LengthMismatch {
            what: "weight columns (the layer statistics' input width)",
            expected: stats.columns(),
            found: weights.cols(),
        });
    }
    if weights.rows() == 0 {
        return Err(Error::EmptyTensor {
            layer: "layer-wise weights".into(),
        });
    }
    if weights.data().iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "the weights",
        });
    }
    Ok(())
}
