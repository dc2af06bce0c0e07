//! What pruning cost, measured on text: a decoder's perplexity, an
//! encoder's sentence embeddings against the dense model's.

use rayon::prelude::*;

use crate::bert::SentencePooling;
use crate::device::map_on;
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
    map_on(&graph.device(), sequences, |s| {
        let hidden = graph.forward(s)?;
        Ok(pooling.embed(&hidden)?.flatten_all()?.to_vec1::<f32>()?)
    })
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

/// How fast a decoder runs through candle, as a serving runtime runs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Speed {
    /// Prompt tokens.
    pub prompt: usize,
    /// Prompt tokens per second, the prompt in one pass (prefill).
    pub prefill_tokens_per_s: f64,
    /// Generated tokens.
    pub generated: usize,
    /// Generated tokens per second, one at a time against the key and
    /// value cache (decode, greedy).
    pub decode_tokens_per_s: f64,
}

/// Times a decoder (every part loaded): `prompt` in one pass with a fresh
/// key and value cache, then `generate` tokens one at a time, each the
/// greedy choice of the last logits. The best of `repeat` runs of each.
pub fn decoder_speed(
    graph: &dyn Graph,
    prompt: &[u32],
    generate: usize,
    repeat: usize,
) -> Result<Speed> {
    use std::time::Instant;
    if prompt.is_empty() || generate == 0 || repeat == 0 {
        return Err(Error::request(
            "a speed measurement needs a prompt, tokens to generate and one run at least",
        ));
    }
    if prompt.len() + generate > graph.max_len() {
        return Err(Error::request(format!(
            "{} prompt and {generate} generated tokens exceed the model's context of {}",
            prompt.len(),
            graph.max_len()
        )));
    }
    let (mut prefill, mut decode) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..repeat {
        let mut cache = graph
            .cache()
            .ok_or_else(|| Error::request("this model does not decode token by token"))?;
        let clock = Instant::now();
        let logits = graph.forward_cached(prompt, &mut cache)?;
        let mut next = last_argmax(&logits)?;
        prefill = prefill.min(clock.elapsed().as_secs_f64());
        let clock = Instant::now();
        for _ in 0..generate {
            let logits = graph.forward_cached(&[next], &mut cache)?;
            next = last_argmax(&logits)?;
        }
        decode = decode.min(clock.elapsed().as_secs_f64());
    }
    Ok(Speed {
        prompt: prompt.len(),
        prefill_tokens_per_s: prompt.len() as f64 / prefill.max(1e-12),
        generated: generate,
        decode_tokens_per_s: generate as f64 / decode.max(1e-12),
    })
}

/// The index of the largest logit at the last position of `[1, seq, vocab]`.
fn last_argmax(logits: &candle_core::Tensor) -> Result<u32> {
    let seq = logits.dim(1)?;
    let last = logits.narrow(1, seq - 1, 1)?.flatten_all()?;
    Ok(last.argmax(0)?.to_scalar::<u32>()?)
}
