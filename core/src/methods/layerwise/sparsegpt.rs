//! SparseGPT (Frantar & Alistarh 2023; `IST-DASLab/sparsegpt`,
//! `sparsegpt.py`), as the official code does it, with exact counts.

use alloc::vec;
use alloc::vec::Vec;

use crate::contract::dense::{Dense, Matrix, map_tasks};
use crate::contract::error::{Error, Result};
use crate::contract::mask::Mask;
use crate::contract::op::Transpose;
use crate::contract::shape::Shape;
use crate::methods::second_order::surgeon::lowest;

use super::hessian::{PERCDAMP, damped_hessian, inverse_factor};
use super::stats::LayerStats;
use super::{Pruned, Target, block_share, check_weights, pruned_total};

/// Rows per task of the per-row loops.
pub(crate) const ROWS_PER_TASK: usize = 16;

/// How [`sparsegpt()`] runs.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct SparseGptConfig {
    /// What to remove.
    pub target: Target,
    /// Columns per block (the official `blocksize`, 128): the unstructured
    /// mask of a block is chosen at once, from the weights as the earlier
    /// blocks left them. A multiple of `m` for N:M.
    pub block: usize,
    /// Dampening as a fraction of the mean diagonal of `H` (0.01).
    pub percdamp: f64,
}

impl SparseGptConfig {
    /// The official defaults (blocks of 128, 1% dampening) for a target.
    pub fn new(target: Target) -> Self {
        SparseGptConfig {
            target,
            block: 128,
            percdamp: PERCDAMP,
        }
    }

    /// Another block size.
    pub fn block(mut self, block: usize) -> Self {
        self.block = block;
        self
    }

    /// Another dampening.
    pub fn percdamp(mut self, percdamp: f64) -> Self {
        self.percdamp = percdamp;
        self
    }
}

/// SparseGPT on one layer `W: [out, in]` (f64, use [`Matrix::from_f32`])
/// with its statistics (the Gram matrix is needed).
///
/// `H = 2XᵀX/n` prepared by [`damped_hessian`], `U` the upper Cholesky
/// factor of `H⁻¹` ([`inverse_factor`]); for each block of columns: the
/// unstructured mask of the whole block from `w² / U_jj²` of its current
/// weights (N:M: every `m` columns, per row, the `m − n` lowest of that
/// score among the updated weights); then column by column the kept value
/// `q` (zero where pruned), the error `e = (w − q) / U_ii` fed to the rest of
/// the block by `w −= e · U[i, i..]`; after the block, the lazy update
/// `W[:, i2..] −= E · U[i1..i2, i2..]` through `dense`.
///
/// One deliberate difference: the official code prunes every score `≤` the
/// `⌊s · numel⌋`-th of a block, at least one weight more per block than
/// asked, and more on ties. prunus prunes exactly `k = round(s · out · in)`
/// in the layer, spread over the blocks in proportion to their columns
/// (block `[c0, c1)` takes `⌊(k·c1 + ⌊in/2⌋)/in⌋ − ⌊(k·c0 + ⌊in/2⌋)/in⌋`),
/// the lowest scores of each block first, ties to the lowest index
/// (row-major); and exactly `m − n` of every `m` for N:M.
pub fn sparsegpt<D: Dense + ?Sized>(
    dense: &D,
    weights: &Matrix,
    stats: &LayerStats,
    config: &SparseGptConfig,
) -> Result<Pruned> {
    check_weights(weights, stats)?;
    let (out, cols) = (weights.rows(), weights.cols());
    config.target.validate("SparseGPT layer", cols)?;
    check_block(config.block, config.target)?;
    let hessian = damped_hessian(stats, config.percdamp)?;
    let dead = hessian.dead;
    let u = inverse_factor(dense, hessian.matrix)?;
    let mut w = weights.clone();
    zero_dead_columns(&mut w, &dead);
    let total = match config.target {
        Target::Sparsity(s) => pruned_total(s, out * cols),
        Target::NofM(_) => 0,
    };
    let mut keep = vec![true; out * cols];
    let mut loss = 0.0;
    for i1 in (0..cols).step_by(config.block) {
        let i2 = (i1 + config.block).min(cols);
        let width = i2 - i1;
        let block_pruned = match config.target {
            Target::Sparsity(_) => {
                let k = block_share(total, cols, i1, i2) as usize;
                let mut scores = Vec::with_capacity(out * width);
                for r in 0..out {
                    for c in i1..i2 {
                        let d = u.get(c, c);
                        scores.push(w.get(r, c) * w.get(r, c) / (d * d));
                    }
                }
                Some(lowest(&scores, k)?)
            }
            Target::NofM(_) => None,
        };
        let rows = map_tasks(dense, out.div_ceil(ROWS_PER_TASK), |task| {
            let first = task * ROWS_PER_TASK;
            (first..(first + ROWS_PER_TASK).min(out))
                .map(|r| {
                    let fixed = block_pruned
                        .as_ref()
                        .map(|p| &p[r * width..(r + 1) * width]);
                    prune_row_block(&u, &w.row(r)[i1..i2], i1, fixed, config.target)
                })
                .collect::<Vec<_>>()
        })?;
        let mut errors = Matrix::zeros(out, width);
        for (r, row) in rows.into_iter().flatten().enumerate() {
            w.row_mut(r)[i1..i2].copy_from_slice(&row.kept);
            errors.row_mut(r).copy_from_slice(&row.errors);
            for (c, &p) in row.pruned.iter().enumerate() {
                keep[r * cols + i1 + c] = !p;
            }
            loss += row.loss / 2.0;
        }
        lazy_update(dense, &mut w, &errors, &u, i1, i2)?;
    }
    let mask = Mask::from_bools(Shape::matrix(out, cols)?, &keep)?;
    for (v, &k) in w.data_mut().iter_mut().zip(&keep) {
        if !k {
            *v = 0.0;
        }
    }
    Ok(Pruned {
        weights: w,
        mask,
        loss,
    })
}

/// Fails unless `block` is positive and, for N:M, a multiple of `m`.
pub(crate) fn check_block(block: usize, target: Target) -> Result<()> {
    let ok = block > 0
        && match target {
            Target::NofM(p) => block.is_multiple_of(p.m),
            Target::Sparsity(_) => true,
        };
    if !ok {
        return Err(Error::InvalidArgument {
            what: "column block size",
            expected: "positive, and a multiple of m for an N:M target",
        });
    }
    Ok(())
}

/// Zeroes the weights of the columns that saw no input.
pub(crate) fn zero_dead_columns(w: &mut Matrix, dead: &[bool]) {
    if !dead.iter().any(|&d| d) {
        return;
    }
    for r in 0..w.rows() {
        for (v, &d) in w.row_mut(r).iter_mut().zip(dead) {
            if d {
                *v = 0.0;
            }
        }
    }
}

/// `W[:, i2..] −= E · U[i1..i2, i2..]`, the update a block's errors make to
/// the columns after it, as one product through `dense`.
pub(crate) fn lazy_update<D: Dense + ?Sized>(
    dense: &D,
    w: &mut Matrix,
    errors: &Matrix,
    u: &Matrix,
    i1: usize,
    i2: usize,
) -> Result<()> {
    let cols = w.cols();
    if i2 >= cols {
        return Ok(());
    }
    let rest = cols - i2;
    let mut tail = Matrix::zeros(i2 - i1, rest);
    for (t, i) in (i1..i2).enumerate() {
        tail.row_mut(t).copy_from_slice(&u.row(i)[i2..]);
    }
    let mut product = Matrix::zeros(w.rows(), rest);
    dense.matmul(
        &mut product,
        0.0,
        errors,
        Transpose::No,
        &tail,
        Transpose::No,
        1.0,
    )?;
    for r in 0..w.rows() {
        for (v, p) in w.row_mut(r)[i2..].iter_mut().zip(product.row(r)) {
            *v -= p;
        }
    }
    Ok(())
}

/// One row's block after SparseGPT's column loop.
struct RowBlock {
    kept: Vec<f64>,
    errors: Vec<f64>,
    pruned: Vec<bool>,
    loss: f64,
}

/// The column loop of one row over one block starting at column `i1`:
/// `fixed` is the block's mask for an unstructured target (chosen before
/// the loop); N:M chooses per group as the loop reaches it.
fn prune_row_block(
    u: &Matrix,
    row: &[f64],
    i1: usize,
    fixed: Option<&[bool]>,
    target: Target,
) -> RowBlock {
    let width = row.len();
    let mut w1 = row.to_vec();
    let mut pruned = fixed.map_or_else(|| vec![false; width], <[bool]>::to_vec);
    let mut kept = vec![0.0; width];
    let mut errors = vec![0.0; width];
    let mut loss = 0.0;
    for i in 0..width {
        if let Target::NofM(p) = target
            && i % p.m == 0
        {
            let mut group: Vec<usize> = (i..i + p.m).collect();
            let score = |j: usize| {
                let d = u.get(i1 + j, i1 + j);
                w1[j] * w1[j] / (d * d)
            };
            group.sort_by(|&a, &b| score(a).total_cmp(&score(b)).then(a.cmp(&b)));
            for &j in &group[..p.m - p.n] {
                pruned[j] = true;
            }
        }
        let d = u.get(i1 + i, i1 + i);
        let q = if pruned[i] { 0.0 } else { w1[i] };
        let e = (w1[i] - q) / d;
        loss += e * e;
        kept[i] = q;
        errors[i] = e;
        if e != 0.0 {
            let urow = &u.row(i1 + i)[i1..i1 + width];
            for j in i..width {
                w1[j] -= e * urow[j];
            }
        }
    }
    RowBlock {
        kept,
        errors,
        pruned,
        loss,
    }
}
