//! proptest strategies for pruning: shapes of rank 1 to 4, tensors with and
//! without ties (signed zeros, subnormals, infinities, NaN where a
//! [`NanPolicy`] allows it), distinct scores, sparsities, N:M patterns with
//! shapes that fit them, masks, lists of named layers and schedules.
//!
//! Everything random comes from proptest's generators (no `rand` inside a
//! property), so failures shrink and replay from the regression files.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;

use prunus_core::{Grouping, Mask, NanPolicy, NofM, Schedule, Shape};

use crate::layers::HostLayer;

/// A proptest configuration with `cases` cases, unless the environment sets
/// `PROPTEST_CASES`.
pub fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        ..Config::default()
    }
}

/// Dimensions of rank 1 to `max_rank`, each in `1..=max_dim`.
pub fn dims(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Vec<usize>> {
    vec(1..=max_dim, 1..=max_rank)
}

/// A shape of rank 1 to `max_rank`, each dimension in `1..=max_dim`.
pub fn shape(max_rank: usize, max_dim: usize) -> impl Strategy<Value = Shape> {
    dims(max_rank, max_dim).prop_map(|d| Shape::new(&d).expect("small shape"))
}

/// Quantised values with `-0.0` and `0.0` among them: ties everywhere.
pub const TIED_LEVELS: [f32; 9] = [-2.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0, 0.25];

/// `n` values drawn from [`TIED_LEVELS`].
pub fn tied_values(n: usize) -> impl Strategy<Value = Vec<f32>> {
    vec(select(&TIED_LEVELS[..]), n)
}

/// `n` values in `[-10, 10]` (ties unlikely but possible).
pub fn continuous_values(n: usize) -> impl Strategy<Value = Vec<f32>> {
    vec(-10.0f32..=10.0, n)
}

/// `n` distinct values (quarters around zero), in any order.
pub fn distinct_values(n: usize) -> impl Strategy<Value = Vec<f32>> {
    let v: Vec<f32> = (0..n).map(|i| (i as f32 - (n / 2) as f32) * 0.25).collect();
    Just(v).prop_shuffle()
}

/// `n` values: tied, continuous or distinct.
pub fn values(n: usize) -> BoxedStrategy<Vec<f32>> {
    prop_oneof![tied_values(n), continuous_values(n), distinct_values(n)].boxed()
}

/// Floats at the edges of the order: signed zeros, the smallest subnormals
/// and normals of both signs, a subnormal in the middle of the range, the
/// extremes and the infinities. No NaN.
pub const EDGE_VALUES: [f32; 13] = [
    0.0,
    -0.0,
    1e-45,
    -1e-45,
    5.877_472e-39,
    -5.877_472e-39,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    1.0,
    f32::MAX,
    f32::MIN,
    f32::INFINITY,
    f32::NEG_INFINITY,
];

/// `n` values drawn from [`EDGE_VALUES`] and `[-10, 10]` alike: ties among
/// signed zeros and subnormals, which a backend that flushes subnormals or
/// compares floats instead of their bits gets wrong.
pub fn edge_values(n: usize) -> impl Strategy<Value = Vec<f32>> {
    vec(prop_oneof![select(&EDGE_VALUES[..]), -10.0f32..=10.0], n)
}

/// `n` values as [`values`] or [`edge_values`], with up to a quarter of them
/// NaN (some with the sign bit set) where `nan` is not
/// [`NanPolicy::Error`], which would refuse them.
pub fn values_for(nan: NanPolicy, n: usize) -> BoxedStrategy<Vec<f32>> {
    let base = prop_oneof![values(n), edge_values(n)];
    if nan == NanPolicy::Error || n == 0 {
        return base.boxed();
    }
    (base, vec((0..n, any::<bool>()), 0..=n.div_ceil(4)))
        .prop_map(|(mut v, at)| {
            for (i, negative) in at {
                v[i] = if negative { -f32::NAN } else { f32::NAN };
            }
            v
        })
        .boxed()
}

/// A shape of rank 1 to `max_rank` (each dimension `1..=max_dim`) and values
/// for it from `values` (e.g. [`values`], [`edge_values`], [`distinct_values`]).
pub fn tensor<S, F>(
    max_rank: usize,
    max_dim: usize,
    values: F,
) -> impl Strategy<Value = (Shape, Vec<f32>)>
where
    S: Strategy<Value = Vec<f32>>,
    F: Fn(usize) -> S,
{
    shape(max_rank, max_dim).prop_flat_map(move |s| {
        let n = s.numel();
        (Just(s), values(n))
    })
}

/// A sparsity in `[0, 1]`, the ends and the middle included often.
pub fn sparsity() -> impl Strategy<Value = f64> {
    prop_oneof![1 => Just(0.0), 1 => Just(1.0), 1 => Just(0.5), 6 => 0.0..=1.0f64]
}

/// A value outside `[0, 1]`: negative, above one, infinite or NaN.
pub fn invalid_fraction() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e6..-1e-12f64,
        (1.0 + 1e-12)..1e6f64,
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0001),
    ]
}

/// A layer named `name` of the given dimensions with values from `values`.
pub fn layer_of(name: String, dims: Vec<usize>) -> impl Strategy<Value = HostLayer> {
    let n: usize = dims.iter().product();
    values(n).prop_map(move |v| HostLayer::new(name.clone(), &dims, v))
}

/// One to `max_layers` layers named `l0, l1, ...`, of rank 1 to 4 and at
/// most `max_dim` per dimension.
pub fn layers(max_layers: usize, max_dim: usize) -> impl Strategy<Value = Vec<HostLayer>> {
    vec(dims(4, max_dim), 1..=max_layers).prop_flat_map(|all| {
        all.into_iter()
            .enumerate()
            .map(|(i, d)| layer_of(format!("l{i}"), d))
            .collect::<Vec<_>>()
    })
}

/// A mask of `shape` with arbitrary bits.
pub fn mask(shape: Shape) -> impl Strategy<Value = Mask> {
    vec(any::<bool>(), shape.numel())
        .prop_map(move |b| Mask::from_bools(shape.clone(), &b).expect("length"))
}

/// A shape (rank 1 to 4) and `count` masks of it.
pub fn masks(count: usize) -> impl Strategy<Value = (Shape, Vec<Mask>)> {
    shape(4, 9).prop_flat_map(move |s| (Just(s.clone()), vec(mask(s), count)))
}

/// The same layers, each with an earlier mask or not.
pub fn with_earlier_masks(layers: Vec<HostLayer>) -> impl Strategy<Value = Vec<HostLayer>> {
    layers
        .into_iter()
        .map(|l| {
            proptest::option::of(mask(l.shape.clone())).prop_map(move |m| HostLayer {
                mask: m,
                ..l.clone()
            })
        })
        .collect::<Vec<_>>()
}

/// An N:M pattern (`m` in 2..=8, `0 < n < m`) and layers (rank 1 to 4) whose
/// last axis is a multiple of `m`.
pub fn n_of_m_case(max_layers: usize) -> impl Strategy<Value = (NofM, Vec<HostLayer>)> {
    (2usize..=8).prop_flat_map(move |m| {
        let pattern = (1..m).prop_map(move |n| NofM { n, m });
        let shapes = vec((vec(1usize..=4, 0..=3), 1usize..=4), 1..=max_layers);
        let layers = shapes.prop_flat_map(move |all| {
            all.into_iter()
                .enumerate()
                .map(|(i, (mut d, groups))| {
                    d.push(groups * m);
                    layer_of(format!("l{i}"), d)
                })
                .collect::<Vec<_>>()
        });
        (pattern, layers)
    })
}

/// Rows, columns or blocks of up to 4 x 4.
pub fn grouping() -> impl Strategy<Value = Grouping> {
    prop_oneof![
        Just(Grouping::Rows),
        Just(Grouping::Columns),
        (1usize..=4, 1usize..=4).prop_map(|(rows, cols)| Grouping::Blocks { rows, cols }),
    ]
}

/// Any schedule variant with valid settings.
pub fn schedule() -> impl Strategy<Value = Schedule> {
    prop_oneof![
        sparsity().prop_map(|target| Schedule::OneShot { target }),
        (0.05..=1.0f64, sparsity()).prop_map(|(rate, target)| Schedule::FixedRate { rate, target }),
        // Targets a whole number of rounds away, where float noise bites.
        (select(&[0.1, 0.2, 0.25, 0.5][..]), 1i32..=6).prop_map(|(rate, r)| Schedule::FixedRate {
            rate,
            target: 1.0 - (1.0f64 - rate).powi(r)
        }),
        (sparsity(), 1usize..=8)
            .prop_map(|(target, rounds)| Schedule::Geometric { target, rounds }),
        (sparsity(), sparsity(), 1usize..=8).prop_map(|(a, b, steps)| Schedule::Cubic {
            initial: a.min(b),
            target: a.max(b),
            steps,
        }),
    ]
}
