//! The layer Hessian `H = 2XᵀX/n` as SparseGPT prepares it (dead columns,
//! dampening) and the upper Cholesky factor `U` of its inverse, shared by
//! SparseGPT and exact OBS.

use alloc::vec::Vec;

use crate::contract::dense::{Dense, Matrix};
use crate::contract::error::{Error, Result};
use crate::contract::op::Transpose;

use super::stats::LayerStats;

/// SparseGPT's default dampening: 1% of the mean diagonal.
pub const PERCDAMP: f64 = 0.01;

/// The damped layer Hessian and what its preparation found.
#[derive(Clone, Debug, PartialEq)]
pub struct Hessian {
    /// `2XᵀX/n`, with `H_jj = 1` on dead columns and `λ` added to the
    /// diagonal.
    pub matrix: Matrix,
    /// Input columns that never saw a non-zero input (`H_jj = 0` before
    /// the fix): their weights are zeroed, as the official code does.
    pub dead: Vec<bool>,
    /// The `λ = percdamp · mean(diag H)` added to the diagonal.
    pub damping: f64,
}

/// `H = 2XᵀX/n` from the statistics, prepared as the official
/// `sparsegpt.py` does: every dead column (`H_jj = 0`) gets `H_jj = 1`, then
/// `λ = percdamp · mean(diag H)` is added to the diagonal.
pub fn damped_hessian(stats: &LayerStats, percdamp: f64) -> Result<Hessian> {
    if !percdamp.is_finite() || percdamp < 0.0 {
        return Err(Error::FractionOutOfRange {
            what: "dampening (percdamp, a fraction of the mean diagonal)",
            value: percdamp,
        });
    }
    let gram = stats.require_gram()?;
    let n = stats.columns();
    let scale = 2.0 / stats.rows() as f64;
    let mut matrix = gram.clone();
    matrix.data_mut().iter_mut().for_each(|v| *v *= scale);
    let mut dead = Vec::with_capacity(n);
    for j in 0..n {
        let d = &mut matrix.data_mut()[j * n + j];
        dead.push(*d == 0.0);
        if *d == 0.0 {
            *d = 1.0;
        }
    }
    let mean = (0..n).map(|j| matrix.get(j, j)).sum::<f64>() / n as f64;
    let damping = percdamp * mean;
    matrix.add_diagonal(damping);
    Ok(Hessian {
        matrix,
        dead,
        damping,
    })
}

/// The upper triangular `U` with `H⁻¹ = UᵀU` (the official code's
/// `cholesky(cholesky_inverse(cholesky(H)), upper=True)`), for a symmetric
/// positive definite `h`, which it consumes.
///
/// Row `i` of `U`, divided by `U_ii`, is the OBS update that removing
/// column `i` makes to the columns after it when the columns before it are
/// fixed; and `U[i.., i..]ᵀ U[i.., i..]` is the inverse of the trailing block
/// `H[i.., i..]`. Computed without forming `H⁻¹`: with `J` the reversal
/// permutation, `JHJ = L̃L̃ᵀ` gives `U = J L̃⁻¹ J`. Cost `n³/3 + n³/2`
/// multiply-adds (a Cholesky and a triangular solve), both through
/// `dense`; fails with [`Error::NotPositiveDefinite`] where `h` is not
/// (raise the dampening).
pub fn inverse_factor<D: Dense + ?Sized>(dense: &D, h: Matrix) -> Result<Matrix> {
    let n = h.rows();
    if h.cols() != n {
        return Err(Error::LengthMismatch {
            what: "Hessian columns (it must be square)",
            expected: n,
            found: h.cols(),
        });
    }
    let mut reversed = Matrix::zeros(n, n);
    for i in 0..n {
        let src = h.row(n - 1 - i);
        for (j, v) in reversed.row_mut(i).iter_mut().enumerate() {
            *v = src[n - 1 - j];
        }
    }
    drop(h);
    dense.cholesky(&mut reversed)?;
    let mut x = Matrix::scaled_identity(n, 1.0);
    dense.solve_rows(&reversed, Transpose::No, &mut x)?;
    drop(reversed);
    // x = (L̃⁻¹)ᵀ, so U[i][j] = L̃⁻¹[n-1-i][n-1-j] = x[n-1-j][n-1-i].
    let mut u = Matrix::zeros(n, n);
    for i in 0..n {
        let row = u.row_mut(i);
        for (j, v) in row.iter_mut().enumerate().skip(i) {
            *v = x.get(n - 1 - j, n - 1 - i);
        }
    }
    Ok(u)
}
