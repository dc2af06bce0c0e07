//! Small dense linear algebra, parallel over output rows (or right-hand
//! sides). Every output element is accumulated sequentially in a fixed
//! order, so the result does not depend on the thread count; the orders are
//! the reference backend's wherever that costs nothing.

use prunus_core::contract::check;
use prunus_core::{Error, HasShape, Result, Shape, Transpose};

use crate::exec::Exec;
use crate::tensor::CpuTensor;

/// Rows per task.
const ROWS_PER_TASK: usize = 16;

pub(crate) fn gemv<'a>(exec: &Exec, a: &CpuTensor<'_>, x: &CpuTensor<'_>) -> Result<CpuTensor<'a>> {
    let (m, n) = check::gemv_dims(a.shape(), x.shape())?;
    let (ad, xd) = (a.data(), x.data());
    let mut out = vec![0.0f32; m];
    let tasks: Vec<(usize, &mut [f32])> = out.chunks_mut(ROWS_PER_TASK).enumerate().collect();
    exec.for_each(tasks, |(t, out)| {
        for (j, o) in out.iter_mut().enumerate() {
            let i = t * ROWS_PER_TASK + j;
            *o = ad[i * n..(i + 1) * n]
                .iter()
                .zip(xd)
                .fold(0.0f32, |acc, (&p, &q)| acc + p * q);
        }
    });
    Ok(CpuTensor::owned(out, Shape::vector(m)))
}

/// `x` of `[rows, cols]` transposed, row-major.
fn transposed(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; x.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = x[i * cols + j];
        }
    }
    t
}

pub(crate) fn gemm<'a>(
    exec: &Exec,
    a: &CpuTensor<'_>,
    ta: Transpose,
    b: &CpuTensor<'_>,
    tb: Transpose,
) -> Result<CpuTensor<'a>> {
    let (m, k, n) = check::gemm_dims(a.shape(), ta, b.shape(), tb)?;
    let (_, ac) = a.shape().matrix_view();
    let (br, bc) = b.shape().matrix_view();
    // op(b) as a row-major `k x n` matrix, so that every output row is a sum
    // of scaled rows of it (contiguous, vectorisable), accumulated over `p`
    // in the reference's order.
    let bt;
    let bk: &[f32] = match tb {
        Transpose::No => b.data(),
        Transpose::Yes => {
            bt = transposed(b.data(), br, bc);
            &bt
        }
    };
    let ad = a.data();
    let mut out = vec![0.0f32; m * n];
    if n > 0 {
        let tasks: Vec<(usize, &mut [f32])> =
            out.chunks_mut(n * ROWS_PER_TASK).enumerate().collect();
        exec.for_each(tasks, |(t, rows)| {
            for (j, row) in rows.chunks_mut(n).enumerate() {
                let i = t * ROWS_PER_TASK + j;
                for p in 0..k {
                    let aip = match ta {
                        Transpose::No => ad[i * ac + p],
                        Transpose::Yes => ad[p * ac + i],
                    };
                    for (o, &bv) in row.iter_mut().zip(&bk[p * n..(p + 1) * n]) {
                        *o += aip * bv;
                    }
                }
            }
        });
    }
    Ok(CpuTensor::owned(out, Shape::matrix(m, n)?))
}

pub(crate) fn rank1_update(
    exec: &Exec,
    a: &mut CpuTensor<'_>,
    alpha: f32,
    x: &CpuTensor<'_>,
    y: &CpuTensor<'_>,
) -> Result<()> {
    let (m, n) = check::matrix("rank-1 update matrix", a.shape())?;
    check::same_shape("rank-1 update x", &Shape::vector(m), x.shape())?;
    check::same_shape("rank-1 update y", &Shape::vector(n), y.shape())?;
    let (xd, yd) = (x.data(), y.data());
    if n == 0 {
        return Ok(());
    }
    let tasks: Vec<(usize, &mut [f32])> = a
        .data_mut()
        .chunks_mut(n * ROWS_PER_TASK)
        .enumerate()
        .collect();
    exec.for_each(tasks, |(t, rows)| {
        for (j, row) in rows.chunks_mut(n).enumerate() {
            let ax = alpha * xd[t * ROWS_PER_TASK + j];
            for (o, &yv) in row.iter_mut().zip(yd) {
                *o += ax * yv;
            }
        }
    });
    Ok(())
}

/// Elements per partial sum of [`dot`]: fixed, so the result does not depend
/// on the thread count.
const DOT_SPAN: usize = 1 << 14;

pub(crate) fn dot<'a>(exec: &Exec, a: &CpuTensor<'_>, b: &CpuTensor<'_>) -> Result<CpuTensor<'a>> {
    check::same_shape("dot", a.shape(), b.shape())?;
    let (ad, bd) = (a.data(), b.data());
    let spans: Vec<usize> = (0..ad.len()).step_by(DOT_SPAN).collect();
    let partial = exec.map(&spans, |&s| {
        let e = (s + DOT_SPAN).min(ad.len());
        // Eight interleaved accumulators: vectorisable, still a fixed order.
        let mut acc = [0.0f32; 8];
        let (xa, xb) = (&ad[s..e], &bd[s..e]);
        let mut ca = xa.chunks_exact(8);
        let mut cb = xb.chunks_exact(8);
        for (pa, pb) in ca.by_ref().zip(cb.by_ref()) {
            for ((c, &p), &q) in acc.iter_mut().zip(pa).zip(pb) {
                *c += p * q;
            }
        }
        let tail = ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .fold(0.0f32, |t, (&p, &q)| t + p * q);
        acc.iter().fold(0.0f32, |t, &c| t + c) + tail
    });
    let d = partial.into_iter().fold(0.0f32, |t, p| t + p);
    Ok(CpuTensor::owned(vec![d], Shape::vector(1)))
}

/// Columns of the Cholesky factor below which the rows are updated on the
/// calling thread (the result is the same either way).
const PARALLEL_ROWS: usize = 128;

/// The lower Cholesky factor of a row-major `n x n` matrix, in f64, with the
/// reference's arithmetic (so the same bits): column by column, the rows
/// below the diagonal in parallel.
fn cholesky(exec: &Exec, a: &[f32], n: usize) -> Result<Vec<f32>> {
    let mut l = vec![0.0f64; n * n];
    for j in 0..n {
        let mut d = a[j * n + j] as f64;
        for p in 0..j {
            d -= l[j * n + p] * l[j * n + p];
        }
        if d.is_nan() || d <= 0.0 {
            return Err(Error::NotPositiveDefinite { pivot: j });
        }
        let d = d.sqrt();
        l[j * n + j] = d;
        let (top, below) = l.split_at_mut((j + 1) * n);
        let lj = &top[j * n..j * n + j];
        let update = |(r, row): (usize, &mut [f64])| {
            let i = j + 1 + r;
            let mut s = a[i * n + j] as f64;
            for (p, &q) in row[..j].iter().zip(lj) {
                s -= p * q;
            }
            row[j] = s / d;
        };
        if n - j > PARALLEL_ROWS && exec.is_parallel() {
            let rows: Vec<(usize, &mut [f64])> = below.chunks_mut(n).enumerate().collect();
            exec.for_each(rows, update);
        } else {
            below.chunks_mut(n).enumerate().for_each(update);
        }
    }
    Ok(l.into_iter().map(|v| v as f32).collect())
}

pub(crate) fn cholesky_solve<'a>(
    exec: &Exec,
    a: &CpuTensor<'_>,
    b: &CpuTensor<'_>,
) -> Result<CpuTensor<'a>> {
    let (n, r) = check::solve_dims(a.shape(), b.shape())?;
    let l = cholesky(exec, a.data(), n)?;
    // One right-hand side per task, each solved in the reference's order.
    let mut cols = transposed(b.data(), n, r);
    let tasks: Vec<&mut [f32]> = if n == 0 {
        Vec::new()
    } else {
        cols.chunks_mut(n).collect()
    };
    exec.for_each(tasks, |x| {
        for i in 0..n {
            let mut s = x[i];
            for p in 0..i {
                s -= l[i * n + p] * x[p];
            }
            x[i] = s / l[i * n + i];
        }
        for i in (0..n).rev() {
            let mut s = x[i];
            for p in i + 1..n {
                s -= l[p * n + i] * x[p];
            }
            x[i] = s / l[i * n + i];
        }
    });
    Ok(CpuTensor::owned(transposed(&cols, r, n), b.shape().clone()))
}
