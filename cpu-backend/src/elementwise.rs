//! Elementwise maps, random tensors, mask application and group reductions:
//! each output element (or unit) is computed exactly as the reference
//! backend computes it, so splitting the work cannot change a bit.

use prunus_core::contract::check;
use prunus_core::contract::granularity::REDUCE_CHUNK;
use prunus_core::{BinaryOp, Grouping, HasShape, Mask, Reduction, Result, Shape, UnaryOp};

use crate::exec::Exec;
use crate::keys::BLOCK;
use crate::simd::Isa;
use crate::tensor::CpuTensor;

/// Elements per task of the elementwise ops (a multiple of 64, so a task
/// owns whole mask words).
const SPAN: usize = 1 << 16;

/// A new owned tensor of `shape` whose span `s` (starting at element
/// `s * SPAN`) is filled by `fill(start, out)`.
fn generate<'a>(
    exec: &Exec,
    shape: &Shape,
    fill: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> CpuTensor<'a> {
    let mut data = vec![0.0f32; shape.numel()];
    let tasks: Vec<(usize, &mut [f32])> = data.chunks_mut(SPAN).enumerate().collect();
    exec.for_each(tasks, |(s, out)| fill(s * SPAN, out));
    CpuTensor::owned(data, shape.clone())
}

pub(crate) fn unary<'a>(exec: &Exec, op: UnaryOp, x: &CpuTensor<'_>) -> CpuTensor<'a> {
    let xs = x.data();
    generate(exec, x.shape(), |start, out| {
        for (o, &v) in out.iter_mut().zip(&xs[start..]) {
            *o = op.apply(v);
        }
    })
}

pub(crate) fn binary<'a>(
    exec: &Exec,
    op: BinaryOp,
    a: &CpuTensor<'_>,
    b: &CpuTensor<'_>,
) -> Result<CpuTensor<'a>> {
    check::same_shape("binary op", a.shape(), b.shape())?;
    let (xs, ys) = (a.data(), b.data());
    Ok(generate(exec, a.shape(), |start, out| {
        for ((o, &x), &y) in out.iter_mut().zip(&xs[start..]).zip(&ys[start..]) {
            *o = op.apply(x, y);
        }
    }))
}

pub(crate) fn random_uniform<'a>(
    exec: &Exec,
    shape: &Shape,
    seed: u64,
    stream: u32,
) -> CpuTensor<'a> {
    generate(exec, shape, |start, out| {
        for (i, o) in out.iter_mut().enumerate() {
            *o = prunus_core::contract::random::uniform(seed, stream, (start + i) as u64);
        }
    })
}

pub(crate) fn apply_mask(
    exec: &Exec,
    isa: Isa,
    weights: &mut CpuTensor<'_>,
    mask: &Mask,
) -> Result<()> {
    check::same_shape("apply mask", weights.shape(), mask.shape())?;
    let words = mask.words();
    let tasks: Vec<(usize, &mut [f32])> = weights.data_mut().chunks_mut(SPAN).enumerate().collect();
    exec.for_each(tasks, |(s, out)| {
        isa.run(
            #[inline(always)]
            || {
                let words = &words[s * SPAN / BLOCK..];
                for (block, &word) in out.chunks_mut(BLOCK).zip(words) {
                    for (i, w) in block.iter_mut().enumerate() {
                        let keep = word >> i & 1 == 1;
                        *w = if keep { *w } else { 0.0 };
                    }
                }
            },
        )
    });
    Ok(())
}

/// Units per task of a group reduction.
const UNITS_PER_TASK: usize = 64;

pub(crate) fn reduce_groups<'a>(
    exec: &Exec,
    x: &CpuTensor<'_>,
    grouping: Grouping,
    reduction: Reduction,
) -> Result<CpuTensor<'a>> {
    grouping.validate()?;
    let shape = x.shape();
    let data = x.data();
    let units = grouping.units(shape);
    let (_, cols) = shape.matrix_view();
    let mut out = vec![0.0f32; units];
    let tasks: Vec<(usize, &mut [f32])> = out.chunks_mut(UNITS_PER_TASK).enumerate().collect();
    match grouping {
        Grouping::Rows => exec.for_each(tasks, |(t, out)| {
            for (j, o) in out.iter_mut().enumerate() {
                let r = t * UNITS_PER_TASK + j;
                *o = reduction.reduce(data[r * cols..(r + 1) * cols].iter().copied());
            }
        }),
        Grouping::Columns => exec.for_each(tasks, |(t, out)| {
            reduce_columns(data, cols, t * UNITS_PER_TASK, reduction, out);
        }),
        _ => exec.for_each(tasks, |(t, out)| {
            for (j, o) in out.iter_mut().enumerate() {
                let u = t * UNITS_PER_TASK + j;
                *o = reduction.reduce(grouping.members(shape, u).map(|i| data[i]));
            }
        }),
    }
    Ok(CpuTensor::owned(out, Shape::vector(units)))
}

/// Reduces the columns `first..first + out.len()` of a row-major matrix with
/// `cols` columns, sweeping the rows once (cache friendly) while following,
/// column by column, exactly the steps of [`Reduction::reduce`]: chunks of
/// [`REDUCE_CHUNK`] rows accumulated from `0.0`, then combined in order.
fn reduce_columns(data: &[f32], cols: usize, first: usize, reduction: Reduction, out: &mut [f32]) {
    let width = out.len();
    let mut chunk = vec![0.0f32; width];
    out.fill(0.0);
    let rows = data.len().checked_div(cols).unwrap_or(0);
    for r in 0..rows {
        let row = &data[r * cols + first..r * cols + first + width];
        for (c, &x) in chunk.iter_mut().zip(row) {
            *c = reduction.combine(*c, reduction.term(x));
        }
        if (r + 1).is_multiple_of(REDUCE_CHUNK) {
            for (o, c) in out.iter_mut().zip(chunk.iter_mut()) {
                *o = reduction.combine(*o, *c);
                *c = 0.0;
            }
        }
    }
    if !rows.is_multiple_of(REDUCE_CHUNK) {
        for (o, &c) in out.iter_mut().zip(&chunk) {
            *o = reduction.combine(*o, c);
        }
    }
}
