//! Deterministic synthetic weights that need no files.
//!
//! [`layer_specs`] splits a parameter count into weight matrices laid out
//! like a stack of transformer blocks (`attn.q`, `attn.k`, `attn.v`,
//! `attn.o`, `mlp.up` four times taller, `mlp.down` four times wider); the
//! sizes sum exactly to the count asked for. [`fill_gaussian`] fills a
//! matrix with Gaussian values of the Kaiming scale `sqrt(2 / fan_in)`.
//!
//! Values are counter-based: element `j` of layer `i` depends only on
//! `(seed, i, j)` (Box-Muller over [`prunus_core::contract::random::uniform`]), so a
//! seed gives the same bits on any thread count and in any order, and a
//! caller can generate a tensor in pieces ([`fill_gaussian`] with an offset)
//! without ever holding all of it.

use prunus_core::Shape;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// The name, shape and scale of one synthetic weight matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    /// A unique name such as `blocks.3.mlp.up.weight`.
    pub name: String,
    /// `[rows, cols]` = `[fan_out, fan_in]`.
    pub shape: Shape,
    /// The standard deviation of its values: `sqrt(2 / fan_in)`.
    pub std: f32,
}

/// A synthetic weight matrix with its values.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticLayer {
    /// A unique name such as `blocks.3.mlp.up.weight`.
    pub name: String,
    /// `[rows, cols]` = `[fan_out, fan_in]`.
    pub shape: Shape,
    /// The values, row-major.
    pub data: Vec<f32>,
}

/// The parts of one transformer block, repeated: (name, relative size,
/// rows per column of the ideal aspect).
const BLOCK: [(&str, u128, f64); 6] = [
    ("attn.q", 1, 1.0),
    ("attn.k", 1, 1.0),
    ("attn.v", 1, 1.0),
    ("attn.o", 1, 1.0),
    ("mlp.up", 4, 4.0),
    ("mlp.down", 4, 0.25),
];

/// Sizes are handed out in multiples of this many weights where the total
/// allows it, so that shapes factor well.
const GRANULE: usize = 64;

/// Values are generated in pieces of this many (even, so Box-Muller pairs
/// never straddle two pieces).
const PIECE: usize = 1 << 16;

/// Splits `params` weights into `tensors` matrices whose sizes sum exactly
/// to `params`, with names, shapes and Kaiming scales.
///
/// Fails when `tensors` is 0 or above `u32::MAX`, or when `params` is below
/// `tensors` (every matrix holds at least one weight).
///
/// ```
/// let specs = prunus_lab::layer_specs(1_000_003, 7)?;
/// assert_eq!(specs.iter().map(|s| s.shape.numel()).sum::<usize>(), 1_000_003);
/// assert_eq!(specs[4].name, "blocks.0.mlp.up.weight");
/// # Ok::<(), prunus_lab::Error>(())
/// ```
pub fn layer_specs(params: usize, tensors: usize) -> Result<Vec<LayerSpec>> {
    if tensors == 0 || tensors > u32::MAX as usize {
        return Err(Error::InvalidSetting {
            name: "tensors",
            value: tensors.to_string(),
            expected: format!("between 1 and {}", u32::MAX),
        });
    }
    if params < tensors {
        return Err(Error::InvalidSetting {
            name: "params",
            value: params.to_string(),
            expected: format!(
                "at least the number of tensors ({tensors}): every tensor holds a weight"
            ),
        });
    }
    if params
        .checked_mul(size_of::<f32>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(Error::InvalidSetting {
            name: "params",
            value: params.to_string(),
            expected: "a count whose f32 values fit in memory".into(),
        });
    }
    let granule = if params >= GRANULE * tensors {
        GRANULE
    } else {
        1
    };
    let units = params / granule;
    let rest = params % granule;
    // Every tensor gets one unit, the others are shared by relative size;
    // what rounding leaves over goes one unit each to the first tensors.
    let weight = |i: usize| BLOCK[i % BLOCK.len()].1;
    let total_weight: u128 = (0..tensors).map(weight).sum();
    let spare = (units - tensors) as u128;
    let mut sizes: Vec<usize> = (0..tensors)
        .map(|i| 1 + (spare * weight(i) / total_weight) as usize)
        .collect();
    let left = units - sizes.iter().sum::<usize>();
    for s in &mut sizes[..left] {
        *s += 1;
    }
    for s in &mut sizes {
        *s *= granule;
    }
    sizes[tensors - 1] += rest;
    debug_assert_eq!(sizes.iter().sum::<usize>(), params);
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let (part, _, aspect) = BLOCK[i % BLOCK.len()];
            let cols = nearest_divisor(size, (size as f64 / aspect).sqrt());
            let shape = Shape::matrix(size / cols, cols)?;
            Ok(LayerSpec {
                name: format!("blocks.{}.{part}.weight", i / BLOCK.len()),
                shape,
                std: (2.0 / cols as f64).sqrt() as f32,
            })
        })
        .collect()
}

/// The divisor of `n >= 1` closest to `target` on a log scale.
fn nearest_divisor(n: usize, target: f64) -> usize {
    let distance = |d: usize| (d as f64 / target).ln().abs();
    let mut best = 1;
    let mut i = 1;
    while i <= n / i {
        if n.is_multiple_of(i) {
            for d in [i, n / i] {
                if distance(d) < distance(best) {
                    best = d;
                }
            }
        }
        i += 1;
    }
    best
}

/// Generates the layers of [`layer_specs`] with their values, in parallel on
/// the current rayon pool. The result depends only on the arguments.
///
/// ```
/// let a = prunus_lab::synthetic_layers(5_000, 3, 1)?;
/// let b = prunus_lab::synthetic_layers(5_000, 3, 1)?;
/// assert_eq!(a, b);
/// assert_ne!(a, prunus_lab::synthetic_layers(5_000, 3, 2)?);
/// # Ok::<(), prunus_lab::Error>(())
/// ```
pub fn synthetic_layers(params: usize, tensors: usize, seed: u64) -> Result<Vec<SyntheticLayer>> {
    let specs = layer_specs(params, tensors)?;
    let mut layers: Vec<SyntheticLayer> = specs
        .iter()
        .map(|s| SyntheticLayer {
            name: s.name.clone(),
            shape: s.shape.clone(),
            // Zeroed allocations are lazily mapped: the pages are first
            // touched by the parallel fill below.
            data: vec![0.0; s.shape.numel()],
        })
        .collect();
    layers
        .par_iter_mut()
        .zip(&specs)
        .enumerate()
        .for_each(|(i, (layer, spec))| fill_gaussian(&mut layer.data, 0, spec.std, seed, i as u32));
    Ok(layers)
}

/// Fills `out` with elements `first..first + out.len()` of the Gaussian
/// stream `(seed, stream)` of standard deviation `std`, in parallel on the
/// current rayon pool. Element `j` is [`gaussian`]`(seed, stream, j) * std`.
///
/// ```
/// use prunus_lab::synthetic::{fill_gaussian, gaussian};
/// let mut whole = vec![0.0; 10];
/// fill_gaussian(&mut whole, 0, 0.5, 9, 3);
/// let mut tail = vec![0.0; 3];
/// fill_gaussian(&mut tail, 7, 0.5, 9, 3);
/// assert_eq!(tail, whole[7..]);
/// assert_eq!(whole[4], gaussian(9, 3, 4) * 0.5);
/// ```
pub fn fill_gaussian(out: &mut [f32], first: u64, std: f32, seed: u64, stream: u32) {
    let key = StreamKey::new(seed, stream);
    // Align pieces to even indices so every Box-Muller pair lies in one piece.
    let head = (first % 2) as usize;
    let (lead, rest) = out.split_at_mut(head.min(out.len()));
    if let Some(x) = lead.first_mut() {
        *x = key.pair(first / 2)[1] * std;
    }
    let base = first + head as u64;
    rest.par_chunks_mut(PIECE)
        .enumerate()
        .for_each(|(c, piece)| {
            let start = base + (c * PIECE) as u64;
            let last_index = start + piece.len() as u64 - 1;
            let mut pairs = piece.chunks_exact_mut(2);
            for (p, two) in pairs.by_ref().enumerate() {
                let [a, b] = key.pair(start / 2 + p as u64);
                two[0] = a * std;
                two[1] = b * std;
            }
            if let [last] = pairs.into_remainder() {
                *last = key.pair(last_index / 2)[0] * std;
            }
        });
}

/// Element `index` of the standard Gaussian stream `(seed, stream)`: the
/// even and odd elements of a pair are the cosine and sine halves of one
/// Box-Muller transform of the uniforms at `index & !1` and `index | 1`.
pub fn gaussian(seed: u64, stream: u32, index: u64) -> f32 {
    StreamKey::new(seed, stream).pair(index / 2)[(index % 2) as usize]
}

/// [`prunus_core::contract::random::hash`] with the seed and stream rounds done once.
#[derive(Clone, Copy)]
struct StreamKey(u32);

impl StreamKey {
    fn new(seed: u64, stream: u32) -> Self {
        use prunus_core::contract::random::mix32;
        let h = mix32(seed as u32 ^ 0x9E37_79B9);
        let h = mix32(h ^ (seed >> 32) as u32);
        StreamKey(mix32(h ^ stream))
    }

    /// [`prunus_core::contract::random::uniform`] at `index`.
    #[inline(always)]
    fn uniform(self, index: u64) -> f32 {
        use prunus_core::contract::random::mix32;
        let h = mix32(mix32(self.0 ^ index as u32) ^ (index >> 32) as u32);
        (h >> 8) as f32 * (1.0 / 16_777_216.0)
    }

    /// Two independent standard Gaussians from pair `p`.
    #[inline(always)]
    fn pair(self, p: u64) -> [f32; 2] {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.uniform(2 * p);
        let u2 = self.uniform(2 * p + 1);
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (core::f32::consts::TAU * u2).sin_cos();
        [r * c, r * s]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_sum_exactly_and_shapes_match() {
        for (params, tensors) in [
            (1, 1),
            (7, 7),
            (100, 7),
            (1_000_003, 7),
            (100_000, 7),
            (65_537, 50),
            (100_000_000, 50),
            (12_345_678, 13),
        ] {
            let specs = layer_specs(params, tensors).unwrap();
            assert_eq!(specs.len(), tensors);
            assert_eq!(
                specs.iter().map(|s| s.shape.numel()).sum::<usize>(),
                params,
                "{params} in {tensors}"
            );
            for s in &specs {
                assert_eq!(s.shape.rank(), 2);
                assert!(s.shape.numel() >= 1);
                let cols = s.shape.dims()[1];
                assert_eq!(s.std, (2.0 / cols as f64).sqrt() as f32);
            }
            let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), tensors);
        }
    }

    #[test]
    fn shapes_are_realistic() {
        let specs = layer_specs(100_000_000, 50).unwrap();
        // Square attention matrices, tall up-projections, wide down-projections.
        let (r, c) = specs[0].shape.matrix_view();
        assert!(r.max(c) < 2 * r.min(c), "{}", specs[0].shape);
        let (r, c) = specs[4].shape.matrix_view();
        assert!(r > 2 * c, "{}", specs[4].shape);
        let (r, c) = specs[5].shape.matrix_view();
        assert!(c > 2 * r, "{}", specs[5].shape);
        let ratio = specs[4].shape.numel() as f64 / specs[0].shape.numel() as f64;
        assert!((ratio - 4.0).abs() < 1e-3, "{ratio}");
    }

    #[test]
    fn rejects_bad_counts() {
        for (params, tensors, name) in [
            (5, 0, "tensors"),
            (3, 4, "params"),
            (usize::MAX, 1, "params"),
        ] {
            match layer_specs(params, tensors) {
                Err(Error::InvalidSetting { name: n, .. }) => assert_eq!(n, name),
                other => panic!("({params}, {tensors}): {other:?}"),
            }
        }
        let msg = layer_specs(3, 4).unwrap_err().to_string();
        assert!(msg.contains("params = 3") && msg.contains("4"), "{msg}");
    }

    #[test]
    fn same_bits_on_any_thread_count() {
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| synthetic_layers(300_001, 5, 11).unwrap())
        };
        let one = run(1);
        assert_eq!(one, run(3));
        assert_eq!(one, run(8));
    }

    #[test]
    fn pieces_match_the_whole() {
        let n = 2 * PIECE + 5;
        let mut whole = vec![0.0; n];
        fill_gaussian(&mut whole, 0, 1.0, 4, 2);
        for (first, len) in [
            (0, 1),
            (1, 1),
            (3, 4),
            (PIECE - 1, 3),
            (PIECE + 1, PIECE + 4),
        ] {
            let mut part = vec![0.0; len];
            fill_gaussian(&mut part, first as u64, 1.0, 4, 2);
            assert_eq!(part, whole[first..first + len], "{first}+{len}");
        }
        for j in [0, 1, 2, 77, n - 1] {
            assert_eq!(whole[j], gaussian(4, 2, j as u64));
        }
    }

    #[test]
    fn uniform_agrees_with_core() {
        let key = StreamKey::new(0xDEAD_BEEF_0123, 17);
        for i in [0, 1, 99, 1 << 33, u64::MAX] {
            assert_eq!(
                key.uniform(i),
                prunus_core::contract::random::uniform(0xDEAD_BEEF_0123, 17, i)
            );
        }
    }

    #[test]
    fn gaussian_with_kaiming_scale() {
        let layers = synthetic_layers(400_000, 3, 5).unwrap();
        let specs = layer_specs(400_000, 3).unwrap();
        for (l, s) in layers.iter().zip(&specs) {
            let n = l.data.len() as f64;
            let mean = l.data.iter().map(|&x| x as f64).sum::<f64>() / n;
            let var = l
                .data
                .iter()
                .map(|&x| (x as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            let std = s.std as f64;
            assert!(mean.abs() < 0.02 * std, "{}: mean {mean}", l.name);
            assert!(
                (var.sqrt() / std - 1.0).abs() < 0.02,
                "{}: std {}",
                l.name,
                var.sqrt()
            );
            // About 68% within one standard deviation.
            let inside = l.data.iter().filter(|&&x| (x as f64).abs() < std).count() as f64 / n;
            assert!((inside - 0.6827).abs() < 0.01, "{}: {inside}", l.name);
            assert!(l.data.iter().all(|x| x.is_finite()));
        }
    }
}
