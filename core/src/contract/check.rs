//! Argument checks shared by every backend, so that all of them reject the
//! same inputs with the same errors.

use crate::contract::backend::{Backend, ScoreView};
use crate::contract::error::{Error, Result};
use crate::contract::granularity::NofM;
use crate::contract::op::Transpose;
use crate::contract::shape::{HasShape, Shape};

/// Fails unless `found == expected`.
pub fn same_shape(op: &'static str, expected: &Shape, found: &Shape) -> Result<()> {
    if expected != found {
        return Err(Error::shape_mismatch(op, expected, found));
    }
    Ok(())
}

/// Fails unless `found == expected`.
pub fn same_len(what: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected != found {
        return Err(Error::LengthMismatch {
            what,
            expected,
            found,
        });
    }
    Ok(())
}

/// Every survivor mask has its scores' shape.
pub fn score_views<B: Backend + ?Sized>(inputs: &[ScoreView<'_, B>]) -> Result<()> {
    for v in inputs {
        if let Some(m) = v.survivors {
            same_shape("survivor mask", v.scores.shape(), m.shape())?;
        }
    }
    Ok(())
}

/// The pattern is valid and every row of every input splits into whole groups.
pub fn n_of_m<B: Backend + ?Sized>(inputs: &[ScoreView<'_, B>], pattern: NofM) -> Result<()> {
    pattern.validate()?;
    for (i, v) in inputs.iter().enumerate() {
        pattern.check_shape(&alloc::format!("input {i}"), v.scores.shape())?;
    }
    Ok(())
}

/// Rank-2 shape `(rows, cols)`.
pub fn matrix(op: &'static str, s: &Shape) -> Result<(usize, usize)> {
    match s.dims() {
        [r, c] => Ok((*r, *c)),
        _ => Err(Error::shape_mismatch(op, &Shape::matrix(0, 0)?, s)),
    }
}

/// `(m, k, n)` of `op(a) op(b)`.
pub fn gemm_dims(
    a: &Shape,
    ta: Transpose,
    b: &Shape,
    tb: Transpose,
) -> Result<(usize, usize, usize)> {
    let (ar, ac) = matrix("gemm lhs", a)?;
    let (br, bc) = matrix("gemm rhs", b)?;
    let (m, k) = if ta == Transpose::Yes {
        (ac, ar)
    } else {
        (ar, ac)
    };
    let (k2, n) = if tb == Transpose::Yes {
        (bc, br)
    } else {
        (br, bc)
    };
    if k != k2 {
        return Err(Error::shape_mismatch(
            "gemm inner dimension",
            &Shape::vector(k),
            &Shape::vector(k2),
        ));
    }
    Ok((m, k, n))
}

/// `(m, n)` of `a x` with `a` of `[m, n]` and `x` of `[n]`.
pub fn gemv_dims(a: &Shape, x: &Shape) -> Result<(usize, usize)> {
    let (m, n) = matrix("gemv matrix", a)?;
    same_shape("gemv vector", &Shape::vector(n), x)?;
    Ok((m, n))
}

/// `(n, r)` of a Cholesky solve with `a` of `[n, n]` and `b` of `[n, r]` or `[n]`.
pub fn solve_dims(a: &Shape, b: &Shape) -> Result<(usize, usize)> {
    let (n, n2) = matrix("cholesky matrix", a)?;
    if n != n2 {
        return Err(Error::shape_mismatch(
            "cholesky matrix (must be square)",
            &Shape::matrix(n, n)?,
            a,
        ));
    }
    match b.dims() {
        [m] if *m == n => Ok((n, 1)),
        [m, r] if *m == n => Ok((n, *r)),
        _ => Err(Error::shape_mismatch(
            "cholesky right-hand side",
            &Shape::vector(n),
            b,
        )),
    }
}

/// `(run, run * every)` of a key sample; both must be at least 1.
pub fn sample(run: usize, every: usize) -> Result<(usize, usize)> {
    match run.checked_mul(every) {
        Some(stride) if run > 0 && every > 0 => Ok((run, stride)),
        _ => Err(Error::FractionOutOfRange {
            what: "sample run and spacing (both at least 1)",
            value: if run == 0 { 0.0 } else { every as f64 },
        }),
    }
}
