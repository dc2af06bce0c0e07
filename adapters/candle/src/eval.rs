//! What pruning cost, measured on text: a decoder's perplexity, an
//! encoder's sentence embeddings against the dense model's.

use rayon::prelude::*;

use crate::bert::SentencePooling;
use crate::error::{Error, Result};
use crate::graph::{Family, Graph};

/// The sentence embedding of each token sequence: the graph's final hidden
/// states (every part loaded) pooled as `pooling` says, one `Vec` per
/// sequence.
pub fn sentence_embeddings(
    graph: &dyn Graph,
    pooling: &SentencePooling,
    sequences: &[Vec<u32>],
) -> Result<Vec<Vec<f32>>> {
    if graph.family() != Family::Encoder {
        return Err(Error::request(
            "sentence embeddings come from encoders; evaluate a decoder by perplexity",
        ));
    }
    sequences
        .par_iter()
        .map(|s| {
            let hidden = graph.forward(s)?;
            Ok(pooling.embed(&hidden)?.flatten_all()?.to_vec1::<f32>()?)
        })
        .collect()
}

/// How close a model's sentence embeddings are to a reference model's on
/// the same sentences.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// Sentences compared.
    pub sentences: usize,
    /// The mean over sentences of the cosine between the two embeddings.
    pub mean_cosine: f64,
    /// The smallest of those cosines.
    pub min_cosine: f64,
    /// The fraction of sentences whose nearest other sentence (by cosine)
    /// is the same under both models (ties to the lowest index).
    pub neighbours: f64,
}

fn unit(v: &[f32]) -> Vec<f64> {
    let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    v.iter().map(|&x| f64::from(x) * scale).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The index of each vector's nearest other vector by cosine (`units` are
/// unit vectors), ties to the lowest index.
fn nearest(units: &[Vec<f64>]) -> Vec<usize> {
    (0..units.len())
        .into_par_iter()
        .map(|i| {
            let mut best = (f64::NEG_INFINITY, usize::MAX);
            for (j, u) in units.iter().enumerate() {
                if j != i {
                    let c = dot(&units[i], u);
                    if c > best.0 {
                        best = (c, j);
                    }
                }
            }
            best.1
        })
        .collect()
}

/// Compares `model`'s embeddings with `reference`'s, sentence by sentence.
/// Fails unless both hold the same number (at least two) of vectors of one
/// width, all finite.
pub fn agreement(model: &[Vec<f32>], reference: &[Vec<f32>]) -> Result<Agreement> {
    if model.len() != reference.len() || model.len() < 2 {
        return Err(Error::request(format!(
            "{} and {} embeddings: compare the same sentences, at least two",
            model.len(),
            reference.len()
        )));
    }
    let width = reference[0].len();
    if model.iter().chain(reference).any(|v| v.len() != width) {
        return Err(Error::request(
            "embeddings of different widths: the model and the reference must share the \
             architecture",
        ));
    }
    if model
        .iter()
        .chain(reference)
        .flatten()
        .any(|x| !x.is_finite())
    {
        return Err(Error::request(
            "an embedding is not finite: the model computes NaN or infinity on this text",
        ));
    }
    let a: Vec<Vec<f64>> = model.iter().map(|v| unit(v)).collect();
    let b: Vec<Vec<f64>> = reference.iter().map(|v| unit(v)).collect();
    let cosines: Vec<f64> = a.iter().zip(&b).map(|(x, y)| dot(x, y)).collect();
    let same = nearest(&a)
        .iter()
        .zip(nearest(&b))
        .filter(|(x, y)| **x == *y)
        .count();
    let n = cosines.len();
    Ok(Agreement {
        sentences: n,
        mean_cosine: cosines.iter().sum::<f64>() / n as f64,
        min_cosine: cosines.iter().copied().fold(f64::INFINITY, f64::min),
        neighbours: same as f64 / n as f64,
    })
}
