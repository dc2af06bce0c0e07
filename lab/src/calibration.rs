//! Synthetic calibration data for the layer-wise methods: a linear layer's
//! weights and inputs with the structure that separates the methods on real
//! models, without a model or a file.
//!
//! Inputs are correlated and unevenly scaled, as a transformer's hidden
//! states are: `x = S (B z + σ ε)`, with `z` a standard normal vector of
//! `rank = max(1, in/8)` factors, `B` an `[in, rank]` mixing matrix of
//! standard normals scaled by `1/√rank`, `ε` standard normal noise of
//! weight `σ = 0.3`, and `S` a diagonal of per-feature scales
//! `exp(0.75 · N(0, 1))` with one feature in 64 scaled up 8x (the "outlier
//! features" of large models). Weights are `N(0, 1/in)`. Everything comes
//! from the counter-based generator, so a seed gives the same data on every
//! machine.

use prunus_core::contract::random::uniform;
use prunus_core::{Dense, Matrix, Result, Transpose};

/// Streams of the generator, one per quantity.
const WEIGHTS: u32 = 0x5700;
const FACTORS: u32 = 0x5701;
const MIXING: u32 = 0x5702;
const NOISE: u32 = 0x5703;
const SCALES: u32 = 0x5704;

/// A standard normal value at `(seed, stream, index)` (Box–Muller).
pub fn normal(seed: u64, stream: u32, index: u64) -> f64 {
    let u1 = f64::from(uniform(seed, stream, 2 * index)).max(1e-12);
    let u2 = f64::from(uniform(seed, stream, 2 * index + 1));
    (-2.0 * u1.ln()).sqrt() * (core::f64::consts::TAU * u2).cos()
}

/// Weights `[out, in]`, `N(0, 1/in)`, row-major.
pub fn layer_weights(out: usize, cols: usize, seed: u64) -> Vec<f32> {
    let scale = 1.0 / (cols as f64).sqrt();
    (0..out * cols)
        .map(|i| (normal(seed, WEIGHTS, i as u64) * scale) as f32)
        .collect()
}

/// `tokens` correlated inputs of width `cols`, `[tokens, cols]` row-major
/// (see the module docs); the mixing product runs through `dense`.
pub fn correlated_inputs<D: Dense + ?Sized>(
    dense: &D,
    tokens: usize,
    cols: usize,
    seed: u64,
) -> Result<Vec<f32>> {
    let rank = (cols / 8).max(1);
    let z = Matrix::new(
        tokens,
        rank,
        (0..tokens * rank)
            .map(|i| normal(seed, FACTORS, i as u64))
            .collect(),
    )?;
    let mix = 1.0 / (rank as f64).sqrt();
    let b = Matrix::new(
        cols,
        rank,
        (0..cols * rank)
            .map(|i| normal(seed, MIXING, i as u64) * mix)
            .collect(),
    )?;
    let mut x = Matrix::zeros(tokens, cols);
    dense.matmul(&mut x, 0.0, &z, Transpose::No, &b, Transpose::Yes, 1.0)?;
    let scales: Vec<f64> = (0..cols)
        .map(|j| {
            let s = (0.75 * normal(seed, SCALES, j as u64)).exp();
            if j % 64 == 0 { 8.0 * s } else { s }
        })
        .collect();
    Ok(x.data()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let j = i % cols;
            ((v + 0.3 * normal(seed, NOISE, i as u64)) * scales[j]) as f32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prunus_core::ReferenceBackend;

    #[test]
    fn inputs_are_correlated_and_reproducible() {
        let x = correlated_inputs(&ReferenceBackend, 400, 16, 7).unwrap();
        assert_eq!(x, correlated_inputs(&ReferenceBackend, 400, 16, 7).unwrap());
        assert_ne!(x, correlated_inputs(&ReferenceBackend, 400, 16, 8).unwrap());
        // Columns 1 and 2 share the two factors: their correlation is far
        // from the ~0.05 of independent columns over 400 samples.
        let col = |j: usize| {
            x.iter()
                .skip(j)
                .step_by(16)
                .map(|&v| f64::from(v))
                .collect::<Vec<_>>()
        };
        let corr = |a: &[f64], b: &[f64]| {
            let n = a.len() as f64;
            let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
            let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
            let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
            let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
            cov / (va * vb).sqrt()
        };
        let strongest = (1..16)
            .map(|j| corr(&col(0), &col(j)).abs())
            .fold(0.0, f64::max);
        assert!(
            strongest > 0.3,
            "largest |correlation| with column 0: {strongest}"
        );
        let w = layer_weights(3, 16, 1);
        let var = w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / 48.0;
        assert!((var - 1.0 / 16.0).abs() < 0.04, "weight variance {var}");
    }
}
