//! Host-side test data: named layers kept in host memory, deterministic value
//! generators, and the glue that uploads layers to a backend and prunes them.

use prunus_core::contract::key::Transform;
use prunus_core::contract::random::uniform;
use prunus_core::prune;
use prunus_core::select;
use prunus_core::{Backend, Layer, Mask, PruneConfig, Result, Shape};

/// A named layer in host memory: weights (or scores), their shape and the
/// mask of an earlier round, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct HostLayer {
    /// The layer's name.
    pub name: String,
    /// The values, row-major.
    pub data: Vec<f32>,
    /// The shape.
    pub shape: Shape,
    /// The mask of an earlier round.
    pub mask: Option<Mask>,
}

impl HostLayer {
    /// A layer of shape `dims` holding `data`, with no earlier mask.
    ///
    /// # Panics
    /// When `dims` is not a valid shape (a mistake in the test itself).
    #[track_caller]
    pub fn new(name: impl Into<String>, dims: &[usize], data: Vec<f32>) -> Self {
        let shape = Shape::new(dims).expect("test shape");
        HostLayer {
            name: name.into(),
            data,
            shape,
            mask: None,
        }
    }

    /// The same layer with an earlier mask.
    pub fn with_mask(mut self, mask: Mask) -> Self {
        self.mask = Some(mask);
        self
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }
}

/// Uploads `layers` to `backend` and runs [`prune()`] on them.
pub fn prune_on<B: Backend>(
    backend: &B,
    layers: &[HostLayer],
    config: &PruneConfig,
) -> Result<Vec<Mask>> {
    let tensors = upload_all(backend, layers)?;
    let views = views::<B>(layers, &tensors);
    prune(backend, &views, config)
}

/// Uploads `layers` (as scores) to `backend` and runs [`select()`] on them.
pub fn select_on<B: Backend>(
    backend: &B,
    layers: &[HostLayer],
    config: &PruneConfig,
    transform: Transform,
) -> Result<Vec<Mask>> {
    let tensors = upload_all(backend, layers)?;
    let views = views::<B>(layers, &tensors);
    select(backend, &views, config, transform)
}

/// Uploads the values of every layer.
pub fn upload_all<B: Backend>(backend: &B, layers: &[HostLayer]) -> Result<Vec<B::Tensor>> {
    layers
        .iter()
        .map(|l| backend.upload(&l.data, &l.shape))
        .collect()
}

fn views<'a, B: Backend>(layers: &'a [HostLayer], tensors: &'a [B::Tensor]) -> Vec<Layer<'a, B>> {
    layers
        .iter()
        .zip(tensors)
        .map(|(l, t)| Layer::new(&l.name, t).with_mask(l.mask.as_ref()))
        .collect()
}

/// `n` values uniform in `[-1, 1)`, determined by `seed` (core's counter-based
/// generator, so every run and platform sees the same data).
pub fn uniform_values(seed: u64, n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|i| 2.0 * uniform(seed, 0x7E57, i) - 1.0)
        .collect()
}

/// `n` values from the `2 * levels + 1` quantised levels `j / levels`,
/// `j` in `-levels..=levels`: heavy ties. Zeros come as `0.0` and `-0.0` alike.
pub fn quantised_values(seed: u64, n: usize, levels: u32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = prunus_core::contract::random::hash(seed, 0x0A17, i);
            let j = (h % (2 * levels + 1)) as i64 - levels as i64;
            let v = j as f32 / levels as f32;
            // The top bit decides the sign of zero.
            if v == 0.0 && h >> 31 == 1 { -0.0 } else { v }
        })
        .collect()
}

/// `n` values of which about `zero_fraction` are zeros (`0.0` or `-0.0`), the
/// rest uniform in `[-1, 1)`.
pub fn sparse_values(seed: u64, n: usize, zero_fraction: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            if uniform(seed, 0x5EED, i) < zero_fraction {
                if i % 2 == 0 { 0.0 } else { -0.0 }
            } else {
                2.0 * uniform(seed, 0x7E57, i) - 1.0
            }
        })
        .collect()
}

/// `n` distinct values (a permutation of `k / 8` for `k` in `-n/2..`), in an
/// order fixed by `seed`.
pub fn distinct_values(seed: u64, n: usize) -> Vec<f32> {
    let mut v: Vec<(u32, f32)> = (0..n)
        .map(|i| {
            (
                prunus_core::contract::random::hash(seed, 0xD157, i as u64),
                (i as f32 - (n / 2) as f32) / 8.0,
            )
        })
        .collect();
    v.sort_by_key(|&(h, _)| h);
    v.into_iter().map(|(_, x)| x).collect()
}

/// Values whose magnitudes span many orders (`uniform * 10^(i % 9 - 4)`):
/// sums of them depend on the summation order, which reductions must follow.
pub fn wide_range_values(seed: u64, n: usize) -> Vec<f32> {
    uniform_values(seed, n)
        .into_iter()
        .enumerate()
        .map(|(i, x)| x * 10f32.powi(i as i32 % 9 - 4))
        .collect()
}

/// A NaN with a payload and the sign bit set, which copies must preserve.
pub const PAYLOAD_NAN: f32 = f32::from_bits(0xFFC0_1234);

/// Special floats every op must handle: signed zeros, infinities, NaN (with
/// and without payload and sign), subnormals and the extremes.
pub const SPECIAL_VALUES: [f32; 14] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    f32::NAN,
    PAYLOAD_NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MIN_POSITIVE,
    1e-45,
    -1e-45,
    f32::MAX,
    f32::MIN,
    0.5,
];

/// `n` values: the [`SPECIAL_VALUES`] first (cyclically), mixed with uniform
/// ones.
pub fn special_mix(seed: u64, n: usize) -> Vec<f32> {
    let u = uniform_values(seed, n);
    (0..n)
        .map(|i| {
            if i % 3 == 0 {
                SPECIAL_VALUES[(i / 3) % SPECIAL_VALUES.len()]
            } else {
                u[i]
            }
        })
        .collect()
}

/// A mask that keeps element `i` when `uniform(seed, .., i) >= prune_fraction`.
pub fn random_mask(seed: u64, shape: &Shape, prune_fraction: f32) -> Mask {
    Mask::from_fn(shape.clone(), |i| {
        uniform(seed, 0x3A5C, i as u64) >= prune_fraction
    })
}

/// A shape from dimensions.
///
/// # Panics
/// When `dims` is not a valid shape (a mistake in the test itself).
#[track_caller]
pub fn shape(dims: &[usize]) -> Shape {
    Shape::new(dims).expect("test shape")
}
