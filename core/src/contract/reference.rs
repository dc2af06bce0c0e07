//! The scalar reference backend: plain loops over host memory, no
//! parallelism, no unsafe. It defines what every other backend must produce
//! and runs anywhere `alloc` does, microcontrollers included.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::contract::backend::{Backend, Candidate, CutMasks, MaskBatch, RangeMasks, ScoreView};
use crate::contract::check;
use crate::contract::error::{Error, Result};
use crate::contract::granularity::{Grouping, NofM, Reduction};
use crate::contract::histogram::{Histogram, KeyCount, KeyWindow, TensorCut};
use crate::contract::key::KeyRule;
use crate::contract::mask::Mask;
use crate::contract::op::{BinaryOp, Transpose, UnaryOp};
use crate::contract::shape::{HasShape, Shape};

/// A host tensor of the reference backend.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    shape: Shape,
    data: Vec<f32>,
}

impl HostTensor {
    /// A tensor from data and shape; fails when the lengths disagree.
    pub fn new(data: Vec<f32>, shape: Shape) -> Result<Self> {
        check::same_len("tensor data", shape.numel(), data.len())?;
        Ok(HostTensor { shape, data })
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The elements, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The elements, by value.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }
}

impl HasShape for HostTensor {
    fn shape(&self) -> &Shape {
        &self.shape
    }
}

/// The scalar reference backend. See the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceBackend;

/// Keys of one score view, in index order.
fn keys<'a>(
    v: &'a ScoreView<'_, ReferenceBackend>,
    rule: KeyRule,
) -> impl Iterator<Item = u32> + 'a {
    v.scores
        .data
        .iter()
        .enumerate()
        .map(move |(i, &x)| rule.key_with(x, v.survivors.is_none_or(|m| m.get(i))))
}

fn nan_count(v: &ScoreView<'_, ReferenceBackend>, rule: KeyRule) -> u64 {
    v.scores
        .data
        .iter()
        .enumerate()
        .filter(|&(i, &x)| v.survivors.is_none_or(|m| m.get(i)) && rule.transform.apply(x).is_nan())
        .count() as u64
}

fn map(x: &HostTensor, f: impl Fn(f32) -> f32) -> HostTensor {
    HostTensor {
        shape: x.shape.clone(),
        data: x.data.iter().map(|&v| f(v)).collect(),
    }
}

impl Backend for ReferenceBackend {
    type Tensor = HostTensor;
    type Mask = Mask;

    fn name(&self) -> String {
        "reference".into()
    }

    fn upload(&self, data: &[f32], shape: &Shape) -> Result<HostTensor> {
        HostTensor::new(data.to_vec(), shape.clone())
    }

    fn download(&self, tensor: &HostTensor) -> Result<Vec<f32>> {
        Ok(tensor.data.clone())
    }

    fn upload_mask(&self, mask: &Mask) -> Result<Mask> {
        Ok(mask.clone())
    }

    fn download_masks(&self, masks: Vec<Mask>) -> Result<Vec<Mask>> {
        Ok(masks)
    }

    fn unary(&self, op: UnaryOp, x: &HostTensor) -> Result<HostTensor> {
        Ok(map(x, |v| op.apply(v)))
    }

    fn binary(&self, op: BinaryOp, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        check::same_shape("binary op", &a.shape, &b.shape)?;
        Ok(HostTensor {
            shape: a.shape.clone(),
            data: a
                .data
                .iter()
                .zip(&b.data)
                .map(|(&x, &y)| op.apply(x, y))
                .collect(),
        })
    }

    fn reduce_groups(
        &self,
        x: &HostTensor,
        grouping: Grouping,
        reduction: Reduction,
    ) -> Result<HostTensor> {
        grouping.validate()?;
        let units = grouping.units(&x.shape);
        let data = (0..units)
            .map(|u| reduction.reduce(grouping.members(&x.shape, u).map(|i| x.data[i])))
            .collect();
        HostTensor::new(data, Shape::vector(units))
    }

    fn random_uniform(&self, shape: &Shape, seed: u64, stream: u32) -> Result<HostTensor> {
        let data = (0..shape.numel() as u64)
            .map(|i| crate::contract::random::uniform(seed, stream, i))
            .collect();
        HostTensor::new(data, shape.clone())
    }

    fn histogram(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        window: KeyWindow,
    ) -> Result<Histogram> {
        check::score_views(inputs)?;
        let mut h = Histogram::new(inputs.len());
        for (t, v) in inputs.iter().enumerate() {
            for key in keys(v, rule) {
                if let Some(b) = window.bin(key) {
                    h.bins[b] += 1;
                }
            }
            h.nan[t] = nan_count(v, rule);
        }
        Ok(h)
    }

    fn count_keys(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        key: u32,
    ) -> Result<Vec<KeyCount>> {
        check::score_views(inputs)?;
        Ok(inputs
            .iter()
            .map(|v| {
                let mut c = KeyCount::default();
                for k in keys(v, rule) {
                    c.below += (k < key) as u64;
                    c.equal += (k == key) as u64;
                }
                c
            })
            .collect())
    }

    fn threshold_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        cut: TensorCut,
    ) -> Result<CutMasks<Mask>> {
        check::score_views(inputs)?;
        let mut rank = 0u64;
        let mut masks = Vec::with_capacity(inputs.len());
        let mut ties = Vec::with_capacity(inputs.len());
        for v in inputs {
            let mut tied = 0u64;
            let keep: Vec<bool> = keys(v, rule)
                .map(|k| {
                    let pruned = cut.prunes(k, rank);
                    if k == cut.key {
                        rank += 1;
                        tied += pruned as u64;
                    }
                    !pruned
                })
                .collect();
            masks.push(Mask::from_fn(v.scores.shape.clone(), |i| keep[i]));
            ties.push(tied);
        }
        Ok(CutMasks { masks, ties })
    }

    fn range_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        lo: u32,
        hi: u32,
    ) -> Result<RangeMasks<Mask>> {
        check::score_views(inputs)?;
        let mut masks = Vec::with_capacity(inputs.len());
        let mut candidates = Vec::new();
        let nan = inputs.iter().map(|v| nan_count(v, rule)).collect();
        for (t, v) in inputs.iter().enumerate() {
            let k: Vec<u32> = keys(v, rule).collect();
            for (i, &key) in k.iter().enumerate() {
                if (lo..=hi).contains(&key) {
                    candidates.push(Candidate {
                        input: t as u32,
                        key,
                        index: i as u64,
                    });
                }
            }
            masks.push(Mask::from_fn(v.scores.shape.clone(), |i| k[i] >= lo));
        }
        let pruned = masks.iter().map(Mask::count_pruned).collect();
        Ok(RangeMasks {
            masks,
            candidates,
            nan,
            pruned,
        })
    }

    fn sample_keys(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        run: usize,
        every: usize,
    ) -> Result<Vec<u32>> {
        check::score_views(inputs)?;
        let (run, stride) = check::sample(run, every)?;
        Ok(inputs
            .iter()
            .flat_map(|v| keys(v, rule).enumerate())
            .filter(|(i, _)| i % stride < run)
            .map(|(_, k)| k)
            .collect())
    }

    fn n_of_m_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        pattern: NofM,
    ) -> Result<MaskBatch<Mask>> {
        check::score_views(inputs)?;
        check::n_of_m(inputs, pattern)?;
        let mut masks = Vec::with_capacity(inputs.len());
        let mut nan = Vec::with_capacity(inputs.len());
        for v in inputs {
            let k: Vec<u32> = keys(v, rule).collect();
            let mut keep = vec![true; k.len()];
            for g in (0..k.len()).step_by(pattern.m) {
                // Prune the m - n smallest by (key, index): sort the group's
                // positions by that order and drop the first ones.
                let mut order: Vec<usize> = (g..g + pattern.m).collect();
                order.sort_by_key(|&i| (k[i], i));
                for &i in &order[..pattern.m - pattern.n] {
                    keep[i] = false;
                }
            }
            masks.push(Mask::from_fn(v.scores.shape.clone(), |i| keep[i]));
            nan.push(nan_count(v, rule));
        }
        Ok(MaskBatch { masks, nan })
    }

    fn apply_mask(&self, weights: &mut HostTensor, mask: &Mask) -> Result<()> {
        check::same_shape("apply mask", &weights.shape, mask.shape())?;
        for (i, w) in weights.data.iter_mut().enumerate() {
            if !mask.get(i) {
                *w = 0.0;
            }
        }
        Ok(())
    }

    fn gemv(&self, a: &HostTensor, x: &HostTensor) -> Result<HostTensor> {
        let (m, n) = check::gemv_dims(&a.shape, &x.shape)?;
        let data = (0..m)
            .map(|i| (0..n).fold(0.0f32, |acc, j| acc + a.data[i * n + j] * x.data[j]))
            .collect();
        HostTensor::new(data, Shape::vector(m))
    }

    fn gemm(
        &self,
        a: &HostTensor,
        ta: Transpose,
        b: &HostTensor,
        tb: Transpose,
    ) -> Result<HostTensor> {
        let (m, k, n) = check::gemm_dims(&a.shape, ta, &b.shape, tb)?;
        let (_, ac) = a.shape.matrix_view();
        let (_, bc) = b.shape.matrix_view();
        let at = |i: usize, p: usize| match ta {
            Transpose::No => a.data[i * ac + p],
            Transpose::Yes => a.data[p * ac + i],
        };
        let bt = |p: usize, j: usize| match tb {
            Transpose::No => b.data[p * bc + j],
            Transpose::Yes => b.data[j * bc + p],
        };
        let mut data = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                data[i * n + j] = (0..k).fold(0.0f32, |acc, p| acc + at(i, p) * bt(p, j));
            }
        }
        HostTensor::new(data, Shape::matrix(m, n)?)
    }

    fn rank1_update(
        &self,
        a: &mut HostTensor,
        alpha: f32,
        x: &HostTensor,
        y: &HostTensor,
    ) -> Result<()> {
        let (m, n) = check::matrix("rank-1 update matrix", &a.shape)?;
        check::same_shape("rank-1 update x", &Shape::vector(m), &x.shape)?;
        check::same_shape("rank-1 update y", &Shape::vector(n), &y.shape)?;
        for i in 0..m {
            for j in 0..n {
                a.data[i * n + j] += alpha * x.data[i] * y.data[j];
            }
        }
        Ok(())
    }

    fn dot(&self, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        check::same_shape("dot", &a.shape, &b.shape)?;
        let d = a
            .data
            .iter()
            .zip(&b.data)
            .fold(0.0f32, |acc, (&x, &y)| acc + x * y);
        HostTensor::new(vec![d], Shape::vector(1))
    }

    fn cholesky_solve(&self, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
        let (n, r) = check::solve_dims(&a.shape, &b.shape)?;
        let l = cholesky(&a.data, n)?;
        let mut x = b.data.clone();
        for c in 0..r {
            // Forward then backward substitution on column c (stride r).
            for i in 0..n {
                let mut s = x[i * r + c];
                for p in 0..i {
                    s -= l[i * n + p] * x[p * r + c];
                }
                x[i * r + c] = s / l[i * n + i];
            }
            for i in (0..n).rev() {
                let mut s = x[i * r + c];
                for p in i + 1..n {
                    s -= l[p * n + i] * x[p * r + c];
                }
                x[i * r + c] = s / l[i * n + i];
            }
        }
        HostTensor::new(x, b.shape.clone())
    }
}

/// Lower Cholesky factor of a row-major `n x n` matrix, in f64 for stability.
pub fn cholesky(a: &[f32], n: usize) -> Result<Vec<f32>> {
    let mut l = vec![0.0f64; n * n];
    for j in 0..n {
        let mut d = a[j * n + j] as f64;
        for p in 0..j {
            d -= l[j * n + p] * l[j * n + p];
        }
        if d.is_nan() || d <= 0.0 {
            return Err(Error::NotPositiveDefinite { pivot: j });
        }
        let d = libm::sqrt(d);
        l[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j] as f64;
            for p in 0..j {
                s -= l[i * n + p] * l[j * n + p];
            }
            l[i * n + j] = s / d;
        }
    }
    Ok(l.into_iter().map(|v| v as f32).collect())
}
