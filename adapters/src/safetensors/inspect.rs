//! Per-tensor sparsity and N:M conformance of any checkpoint.

use prunus_core::{Mask, NofM, Shape};
use rayon::prelude::*;

use super::checkpoint::Checkpoint;
use super::dtype::Dtype;
use super::stream::CHUNK;
use crate::error::Result;

/// What [`inspect`] found in one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorStats {
    /// Its name.
    pub name: String,
    /// Its dtype.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its element count.
    pub numel: u64,
    /// Zero elements (F32, F16 and BF16 tensors only).
    pub zeros: Option<u64>,
    /// NaN or infinite elements (float tensors only).
    pub non_finite: Option<u64>,
    /// Groups breaking the N:M pattern asked for: `None` where the pattern
    /// does not apply (not a float tensor of rank 2 or more, or rows not a
    /// multiple of M), `Some(0)` for a conforming tensor.
    pub violations: Option<u64>,
}

impl TensorStats {
    /// Fraction of zero elements, if counted.
    pub fn sparsity(&self) -> Option<f64> {
        self.zeros.map(|z| {
            if self.numel == 0 {
                0.0
            } else {
                z as f64 / self.numel as f64
            }
        })
    }
}

/// Reads every tensor of `checkpoint` once, counting its zeros and non-finite
/// values and, for `pattern`, its groups of M consecutive elements along a
/// row (core's [`NofM`] groups) holding more than N non-zeros. `progress`
/// gets the bytes read after each tensor.
pub fn inspect(
    checkpoint: &Checkpoint,
    pattern: Option<NofM>,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<TensorStats>> {
    let mut read = 0u64;
    let mut out = Vec::with_capacity(checkpoint.tensors().len());
    for (i, t) in checkpoint.tensors().iter().enumerate() {
        let mut stats = TensorStats {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            numel: t.numel(),
            zeros: None,
            non_finite: None,
            violations: None,
        };
        if t.dtype.is_prunable() {
            let data = checkpoint.data(i)?;
            read += data.len() as u64;
            let w = t.dtype.width();
            let (zeros, bad) = data
                .par_chunks(CHUNK * w)
                .map(|c| {
                    c.chunks_exact(w).fold((0u64, 0u64), |(z, b), e| {
                        let x = t.dtype.decode(e);
                        (z + (x == 0.0) as u64, b + !x.is_finite() as u64)
                    })
                })
                .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            stats.zeros = Some(zeros);
            stats.non_finite = Some(bad);
            if let Some(p) = pattern
                && t.shape.len() >= 2
                && let Ok(shape) = Shape::new(&t.shape)
                && p.check_shape(&t.name, &shape).is_ok()
            {
                let nonzero = Mask::from_fn(shape, |j| t.dtype.decode(&data[j * w..]) != 0.0);
                stats.violations = Some(nonzero.n_of_m_violations(p)? as u64);
            }
        }
        progress(read);
        out.push(stats);
    }
    Ok(out)
}
