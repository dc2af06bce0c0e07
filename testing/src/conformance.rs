//! The conformance suite, written once for every backend.
//!
//! Each `check_*` function runs one area of the [`Backend`] contract (or one
//! high-level path of [`prunus_core::prune()`] on top of it) against `b` and
//! panics with a message naming the backend, the case and the first
//! difference. The oracle is [`ReferenceBackend`]; selection paths are also
//! checked against the sort-based [`crate::oracle`] and against masks written
//! out by hand.
//!
//! What must agree how:
//! - masks, histograms, key counts, NaN counts and errors: exactly;
//! - elementwise ops, group reductions, mask application and random tensors:
//!   bit for bit (they are defined to be identical; NaN payloads may differ),
//!   except, on a backend that flushes subnormals (most GPUs: see
//!   [`Backend::flushes_subnormals`]), the elements a subnormal value took
//!   part in, which may differ by the flushed amounts;
//! - dense linear algebra: within a rounding-error bound.
//!
//! Two ways to run it:
//! - [`crate::conformance_tests!`] turns every check into a `#[test]` (one
//!   test per check, so a failure names its check and the others still
//!   run);
//! - [`run_conformance`] runs every check in turn and returns the failures
//!   as values ([`CheckFailure`]), for a harness of your own or a test that
//!   expects a backend to fail.
//!
//! ```
//! use prunus_core::ReferenceBackend;
//! use prunus_testing::conformance::{check_prune_ties_across_layers, run_check};
//!
//! // One check, its panic turned into a described failure.
//! run_check(&ReferenceBackend, "check_prune_ties_across_layers", check_prune_ties_across_layers)
//!     .expect("the reference backend is its own oracle");
//! ```

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use prunus_core::contract::granularity::REDUCE_CHUNK;
use prunus_core::contract::histogram::{Histogram, KeyCount, KeyWindow, TensorCut};
use prunus_core::contract::key::{
    KEY_NAN_HIGHEST, KEY_NAN_LOWEST, KEY_PRUNED, KeyRule, NanPolicy, Transform, order_key,
};
use prunus_core::contract::random::uniform;
use prunus_core::prune;
use prunus_core::selection::radix::{Cut, RadixSelect};
use prunus_core::{
    Backend, BinaryOp, Candidate, Error, Granularity, Grouping, HasShape, Importance, Layer, Mask,
    NofM, PruneConfig, Reduction, ReferenceBackend, Result, Schedule, ScoreView, Shape, Transpose,
    UnaryOp, apply,
};

use crate::compare::{
    Slack, assert_bits_eq, assert_bits_eq_within, assert_close, assert_masks_eq,
    assert_same_error_kind, assert_same_masks, kept, pruned, same_bits,
};
use crate::layers::{
    HostLayer, distinct_values, prune_on, quantised_values, random_mask, select_on, shape,
    sparse_values, special_mix, uniform_values, wide_range_values,
};
use crate::oracle::expected_masks;

/// The oracle backend.
const REF: ReferenceBackend = ReferenceBackend;

#[track_caller]
fn ok<T>(context: &str, r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{context}: unexpected error {e:?} ({e})"))
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `x`, or a zero of its sign where it is subnormal: what a device that
/// flushes subnormals makes of an operand or a result.
fn ftz(x: f32) -> f32 {
    if x.is_subnormal() {
        f32::from_bits(x.to_bits() & 0x8000_0000)
    } else {
        x
    }
}

/// What a backend that flushes subnormals may return instead of an
/// elementwise result whose operands or exact value touch the subnormal
/// range: `flushed` (the op on flushed operands, flushed), or a finite value
/// within the smallest normal (a flushed operand or result moves it by
/// less). `None`, bit for bit, where no subnormal takes part or the backend
/// keeps them.
fn elementwise_slack(flushes: bool, operands: &[f32], result: f32, flushed: f32) -> Option<Slack> {
    let touched = result.is_subnormal() || operands.iter().any(|x| x.is_subnormal());
    (flushes && touched).then_some(Slack {
        flushed,
        within: f32::MIN_POSITIVE as f64,
    })
}

/// The same for a group reduction in the canonical order of
/// [`Reduction::reduce`]: where a value, a term or a partial result is
/// subnormal, the result may be the flushed reduction, or differ by up to the
/// smallest normal lost to flushing in each of the `n` steps plus an ulp of
/// the largest partial result each.
fn reduction_slack(flushes: bool, r: Reduction, values: &[f32]) -> Option<Slack> {
    if !flushes {
        return None;
    }
    let (mut total, mut chunk, mut len) = (0.0f32, 0.0f32, 0usize);
    let (mut flushed_total, mut flushed_chunk) = (0.0f32, 0.0f32);
    let (mut touched, mut largest) = (false, 0.0f64);
    let mut note = |v: f32, touched: &mut bool| {
        *touched |= v.is_subnormal();
        if v.is_finite() {
            largest = largest.max(v.abs() as f64);
        }
    };
    for &x in values {
        let term = r.term(x);
        note(x, &mut touched);
        note(term, &mut touched);
        chunk = r.combine(chunk, term);
        note(chunk, &mut touched);
        flushed_chunk = ftz(r.combine(flushed_chunk, ftz(r.term(ftz(x)))));
        len += 1;
        if len == REDUCE_CHUNK {
            total = r.combine(total, chunk);
            note(total, &mut touched);
            flushed_total = ftz(r.combine(flushed_total, flushed_chunk));
            (chunk, flushed_chunk, len) = (0.0, 0.0, 0);
        }
    }
    if len > 0 {
        note(r.combine(total, chunk), &mut touched);
        flushed_total = ftz(r.combine(flushed_total, flushed_chunk));
    }
    let steps = values.len() as f64 + 1.0;
    touched.then_some(Slack {
        flushed: flushed_total,
        within: steps * (f32::MIN_POSITIVE as f64 + largest * f32::EPSILON as f64),
    })
}

// ---------------------------------------------------------------------------
// Transfers
// ---------------------------------------------------------------------------

const TRANSFER_SHAPES: [&[usize]; 11] = [
    &[],
    &[0],
    &[1],
    &[63],
    &[64],
    &[65],
    &[3, 5],
    &[2, 3, 4, 5],
    &[1, 1, 1, 1],
    &[4097],
    &[3, 0, 2],
];

/// Upload then download returns the same bits (NaN payloads included) and
/// the same shape; a data length that does not match the shape is an error.
pub fn check_upload_download<B: Backend>(b: &B) {
    let name = b.name();
    for (case, dims) in TRANSFER_SHAPES.iter().enumerate() {
        let s = shape(dims);
        let data = special_mix(case as u64, s.numel());
        let t = ok(&format!("{name}: upload {dims:?}"), b.upload(&data, &s));
        assert_eq!(t.shape(), &s, "{name}: uploaded tensor has the wrong shape");
        let back = ok(&format!("{name}: download {dims:?}"), b.download(&t));
        assert_eq!(
            bits(&back),
            bits(&data),
            "{name}: upload/download of {dims:?} changed bits"
        );
    }
    for (len, dims) in [(2usize, &[3usize][..]), (4, &[2, 3]), (1, &[0])] {
        let data = vec![1.0; len];
        let got = b.upload(&data, &shape(dims));
        let want = REF.upload(&data, &shape(dims));
        assert_same_error_kind(
            &format!("{name}: upload of {len} values as {dims:?}"),
            &got,
            &want,
        );
    }
}

/// Masks survive upload and download unchanged, in order, several at once.
pub fn check_mask_transfer<B: Backend>(b: &B) {
    let name = b.name();
    let masks: Vec<Mask> = TRANSFER_SHAPES
        .iter()
        .enumerate()
        .flat_map(|(i, dims)| {
            let s = shape(dims);
            [
                random_mask(i as u64, &s, 0.5),
                Mask::keep_all(s.clone()),
                Mask::prune_all(s.clone()),
                Mask::from_fn(s, |e| e % 64 == 63 || e % 7 == 0),
            ]
        })
        .collect();
    let up: Vec<B::Mask> = masks
        .iter()
        .map(|m| ok(&format!("{name}: upload mask"), b.upload_mask(m)))
        .collect();
    for (u, m) in up.iter().zip(&masks) {
        assert_eq!(
            u.shape(),
            m.shape(),
            "{name}: uploaded mask has the wrong shape"
        );
    }
    let back = ok(&format!("{name}: download masks"), b.download_masks(up));
    assert_masks_eq(&format!("{name}: mask round trip"), &back, &masks);
    let none = ok(
        &format!("{name}: download no masks"),
        b.download_masks(Vec::new()),
    );
    assert!(
        none.is_empty(),
        "{name}: downloading no masks returned some"
    );
}

// ---------------------------------------------------------------------------
// Elementwise ops and reductions
// ---------------------------------------------------------------------------

const UNARY_OPS: [UnaryOp; 7] = [
    UnaryOp::Abs,
    UnaryOp::Square,
    UnaryOp::Neg,
    UnaryOp::Scale(0.5),
    UnaryOp::Scale(-3.0),
    UnaryOp::Scale(0.0),
    UnaryOp::Scale(f32::INFINITY),
];

/// Every unary op is bit-exact against its scalar definition and the
/// reference, on special values, on sizes around word and chunk boundaries
/// and on rank-4 tensors.
pub fn check_unary_ops<B: Backend>(b: &B) {
    let name = b.name();
    for dims in [
        &[1usize][..],
        &[13],
        &[64],
        &[1000],
        &[2, 3, 4, 5],
        &[0],
        &[3, 70_001],
    ] {
        let s = shape(dims);
        let data = special_mix(dims.len() as u64 + 11, s.numel());
        let x = ok(&name, b.upload(&data, &s));
        let rx = ok("reference", REF.upload(&data, &s));
        for op in UNARY_OPS {
            let ctx = format!("{name}: unary {op:?} on {dims:?}");
            let y = ok(&ctx, b.unary(op, &x));
            assert_eq!(y.shape(), &s, "{ctx}: wrong shape");
            let got = ok(&ctx, b.download(&y));
            let defined: Vec<f32> = data.iter().map(|&v| op.apply(v)).collect();
            let slack: Vec<_> = (data.iter().zip(&defined))
                .map(|(&v, &d)| {
                    let flushed = ftz(op.apply(ftz(v)));
                    elementwise_slack(b.flushes_subnormals(), &[v], d, flushed)
                })
                .collect();
            assert_bits_eq_within(&ctx, &got, &defined, &slack);
            let reference = ok(&ctx, REF.download(&ok(&ctx, REF.unary(op, &rx))));
            assert_bits_eq(&format!("{ctx} (reference)"), &reference, &defined);
        }
    }
    // Abs clears the sign bit of -0.0 and of negative NaN alike.
    let x = ok(&name, b.upload(&[-0.0, -f32::NAN, -2.0], &shape(&[3])));
    let y = ok(&name, b.download(&ok(&name, b.unary(UnaryOp::Abs, &x))));
    assert_eq!(y[0].to_bits(), 0, "{name}: |-0.0| must be +0.0");
    assert!(
        y[1].is_nan() && y[1].is_sign_positive(),
        "{name}: |-NaN| must be +NaN"
    );
    assert_eq!(y[2], 2.0, "{name}: |-2| must be 2");
}

/// Every binary op is bit-exact against its scalar definition and the
/// reference; operands of different shapes are an error.
pub fn check_binary_ops<B: Backend>(b: &B) {
    let name = b.name();
    for dims in [
        &[1usize][..],
        &[13],
        &[65],
        &[3, 300],
        &[2, 3, 4, 5],
        &[0],
        &[200_003],
    ] {
        let s = shape(dims);
        let n = s.numel();
        let da = special_mix(3, n);
        // A different rotation of the specials, so every pair meets.
        let db: Vec<f32> = special_mix(4, n + 5)[5..].to_vec();
        let (xa, xb) = (ok(&name, b.upload(&da, &s)), ok(&name, b.upload(&db, &s)));
        let (ra, rb) = (
            ok("reference", REF.upload(&da, &s)),
            ok("reference", REF.upload(&db, &s)),
        );
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul] {
            let ctx = format!("{name}: binary {op:?} on {dims:?}");
            let y = ok(&ctx, b.binary(op, &xa, &xb));
            assert_eq!(y.shape(), &s, "{ctx}: wrong shape");
            let got = ok(&ctx, b.download(&y));
            let defined: Vec<f32> = da.iter().zip(&db).map(|(&p, &q)| op.apply(p, q)).collect();
            let slack: Vec<_> = (0..n)
                .map(|i| {
                    let flushed = ftz(op.apply(ftz(da[i]), ftz(db[i])));
                    elementwise_slack(b.flushes_subnormals(), &[da[i], db[i]], defined[i], flushed)
                })
                .collect();
            assert_bits_eq_within(&ctx, &got, &defined, &slack);
            let reference = ok(&ctx, REF.download(&ok(&ctx, REF.binary(op, &ra, &rb))));
            assert_bits_eq(&format!("{ctx} (reference)"), &reference, &defined);
        }
    }
    let x = ok(&name, b.upload(&[1.0; 6], &shape(&[2, 3])));
    let y = ok(&name, b.upload(&[1.0; 6], &shape(&[3, 2])));
    let (rx, ry) = (
        ok("", REF.upload(&[1.0; 6], &shape(&[2, 3]))),
        ok("", REF.upload(&[1.0; 6], &shape(&[3, 2]))),
    );
    assert_same_error_kind(
        &format!("{name}: binary op on [2, 3] and [3, 2]"),
        &b.binary(BinaryOp::Add, &x, &y).map(|_| ()),
        &REF.binary(BinaryOp::Add, &rx, &ry).map(|_| ()),
    );
}

const REDUCTIONS: [Reduction; 4] = [
    Reduction::Sum,
    Reduction::L1,
    Reduction::SumSquares,
    Reduction::MaxAbs,
];

fn groupings() -> [Grouping; 6] {
    [
        Grouping::Rows,
        Grouping::Columns,
        Grouping::Blocks { rows: 2, cols: 3 },
        Grouping::Blocks { rows: 1, cols: 1 },
        Grouping::Blocks { rows: 16, cols: 16 },
        Grouping::Blocks { rows: 5, cols: 300 },
    ]
}

/// Group reductions follow the canonical chunked order bit for bit, for
/// every grouping and reduction, on groups longer than a chunk, on rank-1 and
/// rank-4 tensors, with NaN and infinities; invalid blocks are an error.
pub fn check_reduce_groups<B: Backend>(b: &B) {
    let name = b.name();
    let cases: Vec<(&[usize], Vec<f32>)> = vec![
        (&[7, 9], wide_range_values(1, 63)),
        (
            &[3, 2 * REDUCE_CHUNK + 17],
            wide_range_values(2, 3 * (2 * REDUCE_CHUNK + 17)),
        ),
        (
            &[2 * REDUCE_CHUNK + 3, 2],
            wide_range_values(3, 2 * (2 * REDUCE_CHUNK + 3)),
        ),
        (&[600], wide_range_values(4, 600)),
        (&[4, 3, 3, 3], wide_range_values(5, 108)),
        (&[1], vec![-3.0]),
        (&[4, 0], vec![]),
        (&[0, 4], vec![]),
        (&[5, 8], special_mix(6, 40)),
        (&[33, 70], quantised_values(7, 33 * 70, 3)),
        (&[300, 40], wide_range_values(8, 12_000)),
    ];
    for (dims, data) in &cases {
        let s = shape(dims);
        let x = ok(&name, b.upload(data, &s));
        let rx = ok("reference", REF.upload(data, &s));
        for g in groupings() {
            for r in REDUCTIONS {
                let ctx = format!("{name}: reduce {r:?} over {g:?} of {dims:?}");
                let y = ok(&ctx, b.reduce_groups(&x, g, r));
                assert_eq!(y.shape(), &g.unit_shape(&s), "{ctx}: wrong shape");
                let got = ok(&ctx, b.download(&y));
                let groups: Vec<Vec<f32>> = (0..g.units(&s))
                    .map(|u| g.members(&s, u).map(|i| data[i]).collect())
                    .collect();
                let defined: Vec<f32> =
                    groups.iter().map(|v| r.reduce(v.iter().copied())).collect();
                let slack: Vec<_> = groups
                    .iter()
                    .map(|v| reduction_slack(b.flushes_subnormals(), r, v))
                    .collect();
                assert_bits_eq_within(&ctx, &got, &defined, &slack);
                let reference = ok(&ctx, REF.download(&ok(&ctx, REF.reduce_groups(&rx, g, r))));
                assert_bits_eq(&format!("{ctx} (reference)"), &reference, &defined);
            }
        }
    }
    // Exact integer sums pin down the grouping itself, whatever the order.
    let data: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let x = ok(&name, b.upload(&data, &shape(&[2, 3, 4])));
    let sums = |g| {
        ok(
            &name,
            b.download(&ok(&name, b.reduce_groups(&x, g, Reduction::Sum))),
        )
    };
    assert_eq!(
        sums(Grouping::Rows),
        [66.0, 210.0],
        "{name}: row sums of [2, 3, 4]"
    );
    let cols: Vec<f32> = (0..12).map(|j| (j + j + 12) as f32).collect();
    assert_eq!(
        sums(Grouping::Columns),
        cols,
        "{name}: column sums of [2, 3, 4]"
    );
    // Blocks 2x5 over the 2x12 view: columns 0-4, 5-9, 10-11.
    let blocks = [
        (0..5).chain(12..17),
        (5..10).chain(17..22),
        (10..12).chain(22..24),
    ]
    .map(|it| it.map(|i| i as f32).sum::<f32>());
    assert_eq!(
        sums(Grouping::Blocks { rows: 2, cols: 5 }),
        blocks,
        "{name}: 2x5 block sums of [2, 3, 4]"
    );
    let bad = Grouping::Blocks { rows: 0, cols: 2 };
    let rx = ok("", REF.upload(&data, &shape(&[2, 3, 4])));
    let got = b.reduce_groups(&x, bad, Reduction::Sum).map(|_| ());
    assert!(
        matches!(got, Err(Error::InvalidBlock { rows: 0, cols: 2 })),
        "{name}: block 0x2 gave {got:?}"
    );
    assert_same_error_kind(
        &format!("{name}: block 0x2"),
        &got,
        &REF.reduce_groups(&rx, bad, Reduction::Sum).map(|_| ()),
    );
}

/// Random tensors are `uniform(seed, stream, i)` bit for bit, in `[0, 1)`,
/// for seeds and streams with high bits set and indices past 2^16.
pub fn check_random_uniform<B: Backend>(b: &B) {
    let name = b.name();
    for dims in [
        &[0usize][..],
        &[1],
        &[1000],
        &[3, 7, 11],
        &[200_001],
        &[2, 3, 4, 5],
    ] {
        let s = shape(dims);
        for seed in [0u64, 1, 0xDEAD_BEEF_0000_0001, u64::MAX] {
            for stream in [0u32, 1, 7, u32::MAX] {
                let ctx = format!("{name}: random {dims:?} seed {seed:#x} stream {stream}");
                let t = ok(&ctx, b.random_uniform(&s, seed, stream));
                assert_eq!(t.shape(), &s, "{ctx}: wrong shape");
                let got = ok(&ctx, b.download(&t));
                let defined: Vec<f32> = (0..s.numel() as u64)
                    .map(|i| uniform(seed, stream, i))
                    .collect();
                assert_eq!(
                    bits(&got),
                    bits(&defined),
                    "{ctx}: differs from random::uniform"
                );
                assert!(
                    got.iter().all(|v| (0.0..1.0).contains(v)),
                    "{ctx}: value outside [0, 1)"
                );
            }
        }
    }
    let a = ok(
        &name,
        b.download(&ok(&name, b.random_uniform(&shape(&[64]), 5, 0))),
    );
    let c = ok(
        &name,
        b.download(&ok(&name, b.random_uniform(&shape(&[64]), 5, 1))),
    );
    assert_ne!(a, c, "{name}: streams 0 and 1 gave the same values");
}

// ---------------------------------------------------------------------------
// Selection primitives
// ---------------------------------------------------------------------------

/// Sets of score tensors the selection primitives are run on.
fn score_sets() -> Vec<(&'static str, Vec<HostLayer>)> {
    let big = shape(&[30, 701]);
    vec![
        (
            "uniform",
            vec![HostLayer::new("a", &[1000], uniform_values(1, 1000))],
        ),
        (
            "quantised with survivors",
            vec![
                HostLayer::new("a", &[63], quantised_values(2, 63, 4)),
                HostLayer::new("b", &[64], quantised_values(3, 64, 4)).with_mask(random_mask(
                    3,
                    &shape(&[64]),
                    0.3,
                )),
                HostLayer::new("c", &[2, 65], quantised_values(4, 130, 2)),
            ],
        ),
        (
            "specials",
            vec![
                HostLayer::new("a", &[65], special_mix(5, 65)),
                HostLayer::new("b", &[7, 9], special_mix(6, 63)).with_mask(random_mask(
                    6,
                    &shape(&[7, 9]),
                    0.5,
                )),
            ],
        ),
        (
            "large with ties",
            vec![
                HostLayer::new("big", big.dims(), quantised_values(7, big.numel(), 3))
                    .with_mask(random_mask(7, &big, 0.1)),
                HostLayer::new("small", &[5], vec![0.0, -0.0, 1.0, -1.0, 0.5]),
            ],
        ),
        (
            "conv and scalar",
            vec![
                HostLayer::new("conv", &[4, 3, 3, 3], sparse_values(8, 108, 0.6)),
                HostLayer::new("one", &[1], vec![-0.25]),
                HostLayer::new("rank0", &[], vec![0.25]),
            ],
        ),
    ]
}

const RULES: [KeyRule; 6] = [
    KeyRule::IDENTITY,
    KeyRule::ABS,
    KeyRule {
        transform: Transform::Identity,
        nan: NanPolicy::Lowest,
    },
    KeyRule {
        transform: Transform::Abs,
        nan: NanPolicy::Lowest,
    },
    KeyRule {
        transform: Transform::Identity,
        nan: NanPolicy::Highest,
    },
    KeyRule {
        transform: Transform::Abs,
        nan: NanPolicy::Highest,
    },
];

struct Uploaded<B: Backend> {
    tensors: Vec<B::Tensor>,
    masks: Vec<Option<B::Mask>>,
}

impl<B: Backend> Uploaded<B> {
    fn new(b: &B, layers: &[HostLayer]) -> Result<Self> {
        Ok(Uploaded {
            tensors: layers
                .iter()
                .map(|l| b.upload(&l.data, &l.shape))
                .collect::<Result<_>>()?,
            masks: layers
                .iter()
                .map(|l| l.mask.as_ref().map(|m| b.upload_mask(m)).transpose())
                .collect::<Result<_>>()?,
        })
    }

    fn views(&self) -> Vec<ScoreView<'_, B>> {
        self.tensors
            .iter()
            .zip(&self.masks)
            .map(|(t, m)| ScoreView::with_survivors(t, m.as_ref()))
            .collect()
    }
}

fn histogram_on<B: Backend>(
    b: &B,
    layers: &[HostLayer],
    rule: KeyRule,
    w: KeyWindow,
) -> Result<Histogram> {
    let up = Uploaded::new(b, layers)?;
    b.histogram(&up.views(), rule, w)
}

fn count_on<B: Backend>(
    b: &B,
    layers: &[HostLayer],
    rule: KeyRule,
    key: u32,
) -> Result<Vec<KeyCount>> {
    let up = Uploaded::new(b, layers)?;
    b.count_keys(&up.views(), rule, key)
}

/// `cut` over `views` as one sequence: the downloaded masks and the tied
/// elements each input pruned.
fn threshold_views<B: Backend>(
    b: &B,
    views: &[ScoreView<'_, B>],
    rule: KeyRule,
    cut: TensorCut,
) -> Result<(Vec<Mask>, Vec<u64>)> {
    let out = b.threshold_masks(views, rule, cut)?;
    Ok((b.download_masks(out.masks)?, out.ties))
}

fn threshold_on<B: Backend>(
    b: &B,
    layers: &[HostLayer],
    rule: KeyRule,
    cut: TensorCut,
) -> Result<(Vec<Mask>, Vec<u64>)> {
    let up = Uploaded::new(b, layers)?;
    threshold_views(b, &up.views(), rule, cut)
}

fn n_of_m_on<B: Backend>(
    b: &B,
    layers: &[HostLayer],
    rule: KeyRule,
    p: NofM,
) -> Result<(Vec<Mask>, Vec<u64>)> {
    let up = Uploaded::new(b, layers)?;
    let batch = b.n_of_m_masks(&up.views(), rule, p)?;
    Ok((b.download_masks(batch.masks)?, batch.nan))
}

/// The key of element `i` of `l` under `rule`, survivors included.
fn key_at(l: &HostLayer, rule: KeyRule, i: usize) -> u32 {
    rule.key_with(l.data[i], l.mask.as_ref().is_none_or(|m| m.get(i)))
}

/// Keys to probe in a set: some present (at spread positions), the special
/// keys, and keys no score has.
fn probe_keys(layers: &[HostLayer], rule: KeyRule) -> Vec<u32> {
    let mut keys = vec![
        0,
        1,
        2,
        0x007F_FFFF,
        order_key(0.0),
        order_key(-0.5),
        order_key(0.25),
        u32::MAX - 1,
    ];
    keys.push(u32::MAX);
    for l in layers {
        for i in [0, l.numel() / 3, l.numel() / 2, l.numel().saturating_sub(1)] {
            if i < l.numel() {
                keys.push(key_at(l, rule, i));
            }
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// NaN scores among the survivors of `l` under `rule`.
fn host_nan_count(l: &HostLayer, rule: KeyRule) -> u64 {
    (0..l.numel())
        .filter(|&i| {
            l.mask.as_ref().is_none_or(|m| m.get(i)) && rule.transform.apply(l.data[i]).is_nan()
        })
        .count() as u64
}

/// `range_masks` of `layers` over `[lo, hi]`: the downloaded masks, the
/// candidates, the NaN counts and the pruned counts.
type RangeOut = (Vec<Mask>, Vec<Candidate>, Vec<u64>, Vec<u64>);

/// [`RangeOut`] of `layers` on `b`.
fn range_on<B: Backend>(
    b: &B,
    layers: &[HostLayer],
    rule: KeyRule,
    lo: u32,
    hi: u32,
) -> Result<RangeOut> {
    let up = Uploaded::new(b, layers)?;
    let out = b.range_masks(&up.views(), rule, lo, hi)?;
    Ok((
        b.download_masks(out.masks)?,
        out.candidates,
        out.nan,
        out.pruned,
    ))
}

/// What `range_masks` must give, by a plain walk of the sequence: keys from
/// `lo` on kept, and every element whose key is in `[lo, hi]` (an element an
/// earlier mask prunes having the key 0) listed in sequence order.
fn naive_range(
    layers: &[HostLayer],
    rule: KeyRule,
    lo: u32,
    hi: u32,
) -> (Vec<Mask>, Vec<Candidate>) {
    let mut candidates = Vec::new();
    let masks = layers
        .iter()
        .enumerate()
        .map(|(t, l)| {
            for i in 0..l.numel() {
                let key = key_at(l, rule, i);
                if lo <= key && key <= hi {
                    candidates.push(Candidate {
                        input: t as u32,
                        key,
                        index: i as u64,
                    });
                }
            }
            Mask::from_fn(l.shape.clone(), |i| key_at(l, rule, i) >= lo)
        })
        .collect();
    (masks, candidates)
}

/// Range masks equal the reference's and a plain walk's exactly — masks,
/// candidates in sequence order, NaN and pruned counts — for every key rule, with survivors, NaN
/// and signed zeros, over ranges that are single keys, whole 16-bit buckets
/// (as selection uses them), spans of keys, everything and nothing, and on
/// inputs spanning many backend chunks.
pub fn check_range_masks<B: Backend>(b: &B) {
    let name = b.name();
    let mut sets = score_sets();
    let long = shape(&[700_001]);
    let rows = shape(&[300, 1001]);
    sets.push((
        "large continuous",
        vec![
            HostLayer::new("long", long.dims(), uniform_values(201, long.numel())),
            HostLayer::new("rows", rows.dims(), uniform_values(202, rows.numel()))
                .with_mask(random_mask(202, &rows, 0.4)),
        ],
    ));
    for (set, layers) in sets {
        let large = layers.iter().map(|l| l.numel()).sum::<usize>() > 100_000;
        for rule in RULES {
            let mut ranges = vec![(0, u32::MAX), (0, 0), (u32::MAX, u32::MAX), (5, 4)];
            let probes = probe_keys(&layers, rule);
            for &k in &probes {
                ranges.push((k & 0xFFFF_0000, k | 0xFFFF));
                if !large {
                    ranges.push((k, k));
                    ranges.push((k.saturating_sub(3000), k));
                }
            }
            for (lo, hi) in ranges {
                let ctx = format!(
                    "{name}: range_masks of {set} under {rule:?} in [{lo:#010x}, {hi:#010x}]"
                );
                let got = ok(&ctx, range_on(b, &layers, rule, lo, hi));
                let want = naive_range(&layers, rule, lo, hi);
                assert_eq!(got.0, want.0, "{ctx}: masks");
                assert_eq!(got.1.len(), want.1.len(), "{ctx}: candidate count");
                assert_eq!(got.1, want.1, "{ctx}: candidates");
                let nan: Vec<u64> = layers.iter().map(|l| host_nan_count(l, rule)).collect();
                assert_eq!(got.2, nan, "{ctx}: NaN counts");
                let pruned: Vec<u64> = want.0.iter().map(Mask::count_pruned).collect();
                assert_eq!(got.3, pruned, "{ctx}: pruned counts");
                if !large {
                    let reference = ok(&ctx, range_on(&REF, &layers, rule, lo, hi));
                    assert_eq!(got, reference, "{ctx}: against the reference");
                }
            }
        }
    }
    // A survivor mask of the wrong shape is an error, as for every selection op.
    let t = ok("upload", b.upload(&[1.0, 2.0], &shape(&[2])));
    let m = ok("mask", b.upload_mask(&Mask::keep_all(shape(&[3]))));
    let views = [ScoreView::with_survivors(&t, Some(&m))];
    assert!(
        matches!(
            b.range_masks(&views, KeyRule::ABS, 0, 1),
            Err(Error::ShapeMismatch { .. })
        ),
        "{name}: range_masks accepted a survivor mask of the wrong shape"
    );
}

/// Keys of a sample equal the reference's and a plain walk's (runs of `run`
/// elements at every `run * every`, survivors keyed 0, in sequence order),
/// for aligned and unaligned runs, every key rule, inputs spanning many
/// backend chunks, and bad spacings rejected.
pub fn check_sample_keys<B: Backend>(b: &B) {
    let name = b.name();
    let mut sets = score_sets();
    let long = shape(&[1_000_003]);
    sets.push((
        "long",
        vec![
            HostLayer::new("long", long.dims(), uniform_values(301, long.numel()))
                .with_mask(random_mask(301, &long, 0.2)),
            HostLayer::new("tail", &[77], uniform_values(302, 77)),
        ],
    ));
    for (set, layers) in sets {
        for rule in RULES {
            for (run, every) in [(64, 64), (1, 1), (3, 5), (64, 1), (100, 7), (1, 1000)] {
                let ctx =
                    format!("{name}: sample_keys of {set} under {rule:?}, run {run} every {every}");
                let up = ok(&ctx, Uploaded::new(b, &layers));
                let got = ok(&ctx, b.sample_keys(&up.views(), rule, run, every));
                let want: Vec<u32> = layers
                    .iter()
                    .flat_map(|l| (0..l.numel()).map(move |i| (l, i)))
                    .filter(|&(_, i)| i % (run * every) < run)
                    .map(|(l, i)| key_at(l, rule, i))
                    .collect();
                assert_eq!(got, want, "{ctx}");
            }
        }
    }
    let t = ok("upload", b.upload(&[1.0, 2.0], &shape(&[2])));
    let views = [ScoreView::new(&t)];
    for (run, every) in [(0, 1), (1, 0), (usize::MAX, 2)] {
        assert!(
            b.sample_keys(&views, KeyRule::ABS, run, every).is_err(),
            "{name}: sample_keys accepted run {run} every {every}"
        );
    }
}

/// Selections large enough for the sampled one-pass path agree with the
/// reference and the oracle whichever way it goes: the sample places the
/// threshold (continuous scores), misses it (an adversarial layout whose
/// sampled runs hold only small weights), or is refused (heavy ties), with
/// earlier masks and NaN ranked lowest.
pub fn check_prune_sampled<B: Backend>(b: &B) {
    let n = (1 << 20) + 4099;
    let continuous = vec![
        HostLayer::new("a", &[1024, 700], uniform_values(401, 716_800)),
        HostLayer::new("b", &[n - 716_800], uniform_values(402, n - 716_800)),
    ];
    // Runs of 64 at every 4096 elements are what selection samples: make
    // them all tiny, so the sample puts every quantile near zero.
    let misleading: Vec<f32> = (0..n)
        .map(|i| {
            let u = uniform(403, 1, i as u64);
            if i % 4096 < 64 { u * 1e-3 } else { 1.0 + u }
        })
        .collect();
    let adversarial = vec![HostLayer::new("m", &[n], misleading)];
    let ties = vec![HostLayer::new("q", &[n], quantised_values(404, n, 3))];
    let mut nan = uniform_values(405, n);
    for i in (0..n).step_by(997) {
        nan[i] = f32::NAN;
    }
    let with_nan =
        vec![HostLayer::new("x", &[n], nan).with_mask(random_mask(405, &shape(&[n]), 0.2))];
    for (set, layers) in [
        ("continuous", continuous),
        ("misleading sample", adversarial),
        ("heavy ties", ties),
        ("earlier masks and NaN", with_nan),
    ] {
        let total: u64 = layers.iter().map(|l| l.numel() as u64).sum();
        for s in [0.3, 0.9, 0.999] {
            let config = PruneConfig::new(s).nan_policy(NanPolicy::Lowest);
            let masks = ok(set, agree(b, set, &layers, &config, true));
            let pruned: u64 = masks.iter().map(|m| m.count_pruned()).sum();
            assert_eq!(
                pruned,
                (s * total as f64).round() as u64,
                "{}: {set} at {s}",
                b.name()
            );
        }
    }
}

/// Key histograms equal the reference's exactly (bins and NaN counts) in the
/// high window and in low windows of present, special and absent high
/// halves, for every key rule, with survivors; one histogram covers every
/// input; survivor masks of the wrong shape are an error.
pub fn check_histogram<B: Backend>(b: &B) {
    let name = b.name();
    for (set, layers) in score_sets() {
        let n: u64 = layers.iter().map(|l| l.numel() as u64).sum();
        for rule in RULES {
            let mut windows = vec![KeyWindow::High];
            windows.extend(probe_keys(&layers, rule).iter().map(|k| KeyWindow::Low {
                high: (k >> 16) as u16,
            }));
            windows.push(KeyWindow::Low { high: 0x1234 });
            windows.dedup();
            for w in windows {
                let ctx = format!("{name}: histogram of {set} under {rule:?} in {w:?}");
                let got = ok(&ctx, histogram_on(b, &layers, rule, w));
                let want = ok(&ctx, histogram_on(&REF, &layers, rule, w));
                assert_eq!(got.nan, want.nan, "{ctx}: NaN counts differ");
                if let Some(i) = (0..got.bins.len().max(want.bins.len()))
                    .find(|&i| got.bins.get(i) != want.bins.get(i))
                {
                    panic!(
                        "{ctx}: bin {i} is {:?}, expected {:?}",
                        got.bins.get(i),
                        want.bins.get(i)
                    );
                }
                if w == KeyWindow::High {
                    assert_eq!(
                        got.total(),
                        n,
                        "{ctx}: the high window must count every element"
                    );
                    let nan: Vec<u64> = layers.iter().map(|l| host_nan_count(l, rule)).collect();
                    assert_eq!(got.nan, nan, "{ctx}: NaN counts differ from the host count");
                }
            }
        }
    }
    let empty = ok(&name, b.histogram(&[], KeyRule::ABS, KeyWindow::High));
    assert_eq!(
        empty.total(),
        0,
        "{name}: histogram of no input counted something"
    );
    assert!(
        empty.nan.is_empty(),
        "{name}: histogram of no input has NaN counts"
    );
    let bad = [HostLayer::new("a", &[4], vec![1.0; 4]).with_mask(Mask::keep_all(shape(&[2, 2])))];
    assert_same_error_kind(
        &format!("{name}: histogram with a survivor mask of the wrong shape"),
        &histogram_on(b, &bad, KeyRule::ABS, KeyWindow::High),
        &histogram_on(&REF, &bad, KeyRule::ABS, KeyWindow::High),
    );
}

/// Histograms are plain counts: those of single inputs add up to the
/// histogram of all inputs together (how selection merges shards).
pub fn check_histogram_merge<B: Backend>(b: &B) {
    let name = b.name();
    for (set, layers) in score_sets() {
        for rule in [KeyRule::ABS, RULES[2]] {
            let key = key_at(&layers[0], rule, layers[0].numel() / 2);
            for w in [
                KeyWindow::High,
                KeyWindow::Low {
                    high: (key >> 16) as u16,
                },
            ] {
                let ctx = format!("{name}: merged histograms of {set} under {rule:?} in {w:?}");
                let all = ok(&ctx, histogram_on(b, &layers, rule, w));
                let mut merged = Histogram::new(0);
                let mut nan: Vec<u64> = Vec::new();
                for l in &layers {
                    let h = ok(&ctx, histogram_on(b, std::slice::from_ref(l), rule, w));
                    nan.extend(&h.nan);
                    ok(&ctx, merged.merge(&Histogram { nan: vec![], ..h }));
                }
                assert!(
                    merged.bins == all.bins,
                    "{ctx}: the sum of the shards' bins differs"
                );
                assert_eq!(nan, all.nan, "{ctx}: per-input NaN counts differ");
            }
        }
    }
}

/// Counts below and at a key equal the reference's exactly, for present,
/// special and absent keys, per input.
pub fn check_count_keys<B: Backend>(b: &B) {
    let name = b.name();
    for (set, layers) in score_sets() {
        for rule in RULES {
            for key in probe_keys(&layers, rule) {
                let ctx = format!("{name}: count_keys of {set} under {rule:?} at {key:#010x}");
                let got = ok(&ctx, count_on(b, &layers, rule, key));
                let want = ok(&ctx, count_on(&REF, &layers, rule, key));
                assert_eq!(got, want, "{ctx}");
                for (c, l) in got.iter().zip(&layers) {
                    let below = (0..l.numel()).filter(|&i| key_at(l, rule, i) < key).count() as u64;
                    let equal = (0..l.numel())
                        .filter(|&i| key_at(l, rule, i) == key)
                        .count() as u64;
                    assert_eq!(
                        (c.below, c.equal),
                        (below, equal),
                        "{ctx}: layer {} counted on the host",
                        l.name
                    );
                }
            }
        }
    }
}

/// Per input, the keys below `key` and equal to it, counted on the host.
fn host_counts(layers: &[HostLayer], rule: KeyRule, key: u32) -> Vec<KeyCount> {
    layers
        .iter()
        .map(|l| {
            let mut c = KeyCount::default();
            for i in 0..l.numel() {
                let k = key_at(l, rule, i);
                c.below += (k < key) as u64;
                c.equal += (k == key) as u64;
            }
            c
        })
        .collect()
}

/// What `cut` over `layers` as one sequence must give, by a plain walk of
/// the sequence (input order, then flat index): keys below the cut are
/// pruned, and a key at the cut is pruned while fewer than `cut.ties`
/// elements at the cut came before it anywhere in the sequence. Also counts
/// the tied elements each input prunes. Shares no code with the backends.
fn naive_threshold(layers: &[HostLayer], rule: KeyRule, cut: TensorCut) -> (Vec<Mask>, Vec<u64>) {
    let mut seen = 0u64;
    let mut masks = Vec::with_capacity(layers.len());
    let mut ties = Vec::with_capacity(layers.len());
    for l in layers {
        let mut pruned_ties = 0u64;
        let keep: Vec<bool> = (0..l.numel())
            .map(|i| {
                let k = key_at(l, rule, i);
                if k != cut.key {
                    return k > cut.key;
                }
                let prune = seen < cut.ties;
                seen += 1;
                pruned_ties += prune as u64;
                !prune
            })
            .collect();
        masks.push(Mask::from_fn(l.shape.clone(), |i| keep[i]));
        ties.push(pruned_ties);
    }
    (masks, ties)
}

/// Elements at `key` among the first `elements` of `layers` as one sequence.
fn ties_before(layers: &[HostLayer], rule: KeyRule, key: u32, elements: usize) -> u64 {
    let mut left = elements;
    let mut ties = 0u64;
    for l in layers {
        let n = left.min(l.numel());
        ties += (0..n).filter(|&i| key_at(l, rule, i) == key).count() as u64;
        left -= n;
    }
    ties
}

/// Tie budgets worth trying for inputs holding `equal[t]` elements at the
/// cut: none, one, running out in the middle of each input, just before, at
/// and just after each input boundary (so also across inputs with no tied
/// element), all but one, all, more than all, and [`TensorCut::ALL`].
fn tie_budgets(equal: &[u64]) -> Vec<u64> {
    let total: u64 = equal.iter().sum();
    let mut budgets = vec![
        0,
        1,
        total.saturating_sub(1),
        total,
        total + 1,
        total + 5,
        2 * total + 3,
        TensorCut::ALL - 1,
        TensorCut::ALL,
    ];
    let mut before = 0u64;
    for &e in equal {
        budgets.extend([
            before.saturating_sub(1),
            before,
            before + 1,
            before + e / 3,
            before + e / 2 + 1,
            before + e.saturating_sub(1),
        ]);
        before += e;
    }
    budgets.sort_unstable();
    budgets.dedup();
    budgets
}

/// Runs `cut` on `b` and checks it against the reference, the naive walk
/// ([`naive_threshold`]) and the counts `counts` (per input, from
/// [`host_counts`]): the same masks and tie counts, the tie budget filling
/// the inputs in order (`min(budget left, equal)` each, adding up to
/// `min(budget, tied)`), and each input pruning `below + ties`. Returns the
/// backend's masks and tie counts.
#[allow(clippy::too_many_arguments)]
#[track_caller]
fn check_cut<B: Backend>(
    ctx: &str,
    b: &B,
    views: &[ScoreView<'_, B>],
    reference: &[ScoreView<'_, ReferenceBackend>],
    layers: &[HostLayer],
    counts: &[KeyCount],
    rule: KeyRule,
    cut: TensorCut,
) -> (Vec<Mask>, Vec<u64>) {
    let (got, ties) = ok(ctx, threshold_views(b, views, rule, cut));
    let (want, want_ties) = ok(ctx, threshold_views(&REF, reference, rule, cut));
    let (naive, naive_ties) = naive_threshold(layers, rule, cut);
    assert_masks_eq(&format!("{ctx} (reference vs naive walk)"), &want, &naive);
    assert_eq!(
        want_ties, naive_ties,
        "{ctx}: tie counts of the reference vs the naive walk"
    );
    assert_masks_eq(ctx, &got, &want);
    assert_eq!(ties, want_ties, "{ctx}: tied elements pruned per input");
    let mut left = cut.ties;
    for (t, ((m, c), &tied)) in got.iter().zip(counts).zip(&ties).enumerate() {
        let expect = left.min(c.equal);
        assert_eq!(
            tied, expect,
            "{ctx}: input {t} pruned {tied} of its {} tied elements with {left} of the budget left",
            c.equal
        );
        assert_eq!(
            m.count_pruned(),
            c.below + tied,
            "{ctx}: input {t} must prune its {} keys below the cut and {tied} tied",
            c.below
        );
        left -= expect;
    }
    let total: u64 = counts.iter().map(|c| c.equal).sum();
    assert_eq!(
        ties.iter().sum::<u64>(),
        cut.ties.min(total),
        "{ctx}: the tie counts must add up to min(budget, {total} tied)"
    );
    (got, ties)
}

/// The same `cut` applied one input at a time, carrying the budget left on
/// from each call's tie count (how a caller streaming tensors uses it), and
/// as per-input cuts from [`prunus_core::selection::radix::Cut::distribute`] over the
/// backend's key counts: each gives the masks and tie counts of `whole`,
/// the selection over all inputs in one call.
fn check_cut_streamed<B: Backend>(
    ctx: &str,
    b: &B,
    views: &[ScoreView<'_, B>],
    rule: KeyRule,
    cut: TensorCut,
    whole: &(Vec<Mask>, Vec<u64>),
) {
    let mut left = cut.ties;
    let mut streamed = (Vec::new(), Vec::new());
    for (t, v) in views.iter().enumerate() {
        let ctx = format!("{ctx}, input {t} alone with {left} ties left");
        let (mut m, tied) = ok(
            &ctx,
            threshold_views(
                b,
                std::slice::from_ref(v),
                rule,
                TensorCut { ties: left, ..cut },
            ),
        );
        assert_eq!(
            (m.len(), tied.len()),
            (1, 1),
            "{ctx}: one mask and one tie count for one input"
        );
        if left != TensorCut::ALL {
            left -= tied[0];
        }
        streamed.0.push(m.remove(0));
        streamed.1.push(tied[0]);
    }
    assert_masks_eq(
        &format!("{ctx}: streamed one input at a time"),
        &streamed.0,
        &whole.0,
    );
    assert_eq!(
        streamed.1, whole.1,
        "{ctx}: tie counts streamed one input at a time"
    );

    let counts = ok(ctx, b.count_keys(views, rule, cut.key));
    let equal: Vec<u64> = counts.iter().map(|c| c.equal).collect();
    let global = Cut {
        key: cut.key,
        ties: cut.ties,
        tied: equal.iter().sum(),
    };
    let cuts = global.distribute(&equal);
    for (t, (v, c)) in views.iter().zip(&cuts).enumerate() {
        let ctx = format!("{ctx}: input {t} alone with the distributed cut {c:?}");
        let (m, tied) = ok(&ctx, threshold_views(b, std::slice::from_ref(v), rule, *c));
        assert_masks_eq(&ctx, &m, std::slice::from_ref(&whole.0[t]));
        assert_eq!(tied, [c.ties], "{ctx}: tie count");
    }
}

/// The cut that prunes `k` of all inputs together, from the reference's
/// histograms.
fn radix_cut(reference: &[ScoreView<'_, ReferenceBackend>], rule: KeyRule, k: u64) -> Cut {
    let n: u64 = reference
        .iter()
        .map(|v| v.scores.shape().numel() as u64)
        .sum();
    let mut sel = ok("radix selection", RadixSelect::new(n, k));
    while let Some(w) = sel.window() {
        let h = ok("reference histogram", REF.histogram(reference, rule, w));
        ok("radix selection", sel.absorb(&h));
    }
    sel.cut().expect("two passes suffice")
}

/// Threshold masks apply one cut to all inputs as one sequence (input
/// order, then flat index), the tie rank running across inputs: exactly the
/// reference's masks and a plain walk's, for cuts at present, special and
/// absent keys with tie budgets of none, some (running out inside an input,
/// at an input boundary, across inputs without ties), all, more than exist
/// and [`TensorCut::ALL`], under every key rule and with survivors; the tie
/// counts per input fill the budget in order; streaming the inputs one call
/// at a time (carrying the budget on) and per-input distributed cuts give
/// the same masks; cuts of a radix selection prune exactly `k`. A survivor
/// mask of the wrong shape is an error.
pub fn check_threshold_masks<B: Backend>(b: &B) {
    let name = b.name();
    for (set, layers) in score_sets() {
        let up = ok(&name, Uploaded::new(b, &layers));
        let rup = ok("reference", Uploaded::new(&REF, &layers));
        let (views, reference) = (up.views(), rup.views());
        let n: u64 = layers.iter().map(|l| l.numel() as u64).sum();
        for rule in RULES {
            for key in probe_keys(&layers, rule) {
                let counts = host_counts(&layers, rule, key);
                let equal: Vec<u64> = counts.iter().map(|c| c.equal).collect();
                for ties in tie_budgets(&equal) {
                    let cut = TensorCut { key, ties };
                    let ctx = format!(
                        "{name}: threshold masks of {set} under {rule:?} with {cut:?} \
                         ({equal:?} tied per input)"
                    );
                    let whole = check_cut(&ctx, b, &views, &reference, &layers, &counts, rule, cut);
                    check_cut_streamed(&ctx, b, &views, rule, cut, &whole);
                }
            }
            for s in [0.0, 0.1, 0.3337, 0.5, 0.77, 0.9, 1.0] {
                let k = (s * n as f64).round() as u64;
                let cut = radix_cut(&reference, rule, k);
                let tc = cut.threshold();
                let ctx = format!(
                    "{name}: threshold masks of {set} under {rule:?} pruning {k} with {cut:?}"
                );
                let counts = host_counts(&layers, rule, cut.key);
                let (masks, _) = check_cut(&ctx, b, &views, &reference, &layers, &counts, rule, tc);
                let pruned: u64 = masks.iter().map(|m| m.count_pruned()).sum();
                assert_eq!(pruned, k, "{ctx}: pruned in all");
            }
        }
    }
    let none = ok(
        &name,
        threshold_views(b, &[], KeyRule::ABS, TensorCut { key: 5, ties: 1 }),
    );
    assert!(
        none.0.is_empty() && none.1.is_empty(),
        "{name}: threshold masks of no input returned {none:?}"
    );
    let bad = [HostLayer::new("a", &[4], vec![1.0; 4]).with_mask(Mask::keep_all(shape(&[2, 2])))];
    let cut = TensorCut { key: 5, ties: 0 };
    assert_same_error_kind(
        &format!("{name}: threshold masks with a survivor mask of the wrong shape"),
        &threshold_on(b, &bad, KeyRule::ABS, cut),
        &threshold_on(&REF, &bad, KeyRule::ABS, cut),
    );
}

/// [`Backend::select_lowest`], where the backend implements it (a backend
/// that declines every call passes): for every score set and key rule, and
/// `k` from none to all, the masks prune exactly the `k` lowest by key and
/// sequence order (those of the reference's radix cut, bit for bit), the
/// counts per input are the masks' and the NaN counts the survivors' NaN
/// scores; one input alone gives the same masks as the walk over it alone.
pub fn check_select_lowest<B: Backend>(b: &B) {
    let name = b.name();
    for (set, layers) in score_sets() {
        let up = ok(&name, Uploaded::new(b, &layers));
        let rup = ok("reference", Uploaded::new(&REF, &layers));
        let (views, reference) = (up.views(), rup.views());
        let n: u64 = layers.iter().map(|l| l.numel() as u64).sum();
        for rule in RULES {
            let want_nan: Vec<u64> = layers.iter().map(|l| host_nan_count(l, rule)).collect();
            for s in [0.0, 1e-9, 0.1, 0.3337, 0.5, 0.77, 0.9, 1.0] {
                let k = ((s * n as f64).round() as u64).max((s > 0.0) as u64);
                let ctx = format!("{name}: select_lowest of {set} under {rule:?}, k = {k}");
                let Some(got) = ok(&ctx, b.select_lowest(&views, rule, k)) else {
                    continue;
                };
                let cut = radix_cut(&reference, rule, k).threshold();
                let (want, _) = naive_threshold(&layers, rule, cut);
                assert_eq!(got.nan, want_nan, "{ctx}: NaN counts");
                let pruned: Vec<u64> = want.iter().map(Mask::count_pruned).collect();
                assert_eq!(got.pruned, pruned, "{ctx}: pruned counts");
                let masks = ok(&ctx, b.download_masks(got.masks));
                assert_masks_eq(&ctx, &masks, &want);
            }
        }
        // Each input alone: its own k lowest.
        for (t, l) in layers.iter().enumerate() {
            let k = l.numel() as u64 / 2;
            let ctx = format!("{name}: select_lowest of {set}, input {t} alone, k = {k}");
            let Some(got) = ok(&ctx, b.select_lowest(&views[t..=t], KeyRule::ABS, k)) else {
                continue;
            };
            let cut = radix_cut(&reference[t..=t], KeyRule::ABS, k).threshold();
            let (want, _) = naive_threshold(std::slice::from_ref(l), KeyRule::ABS, cut);
            let masks = ok(&ctx, b.download_masks(got.masks));
            assert_masks_eq(&ctx, &masks, &want);
        }
    }
}

/// Threshold masks written out by hand: one cut over inputs whose tied
/// elements straddle them (one input holding none), the budget running out
/// inside an input, at an input boundary and past an input without ties;
/// ties among the elements an earlier mask pruned (key 0); NaN ties under
/// each NaN policy; a cut at a key no element has.
pub fn check_threshold_masks_hand_computed<B: Backend>(b: &B) {
    let name = b.name();
    let run = |set: &str, layers: &[HostLayer], rule: KeyRule, key: u32, table: &[Row]| {
        let up = ok(&name, Uploaded::new(b, layers));
        let rup = ok("reference", Uploaded::new(&REF, layers));
        let counts = host_counts(layers, rule, key);
        for (ties, want, want_ties) in table {
            let cut = TensorCut { key, ties: *ties };
            let ctx = format!("{name}: hand-computed threshold masks of {set} with {cut:?}");
            let whole = check_cut(
                &ctx,
                b,
                &up.views(),
                &rup.views(),
                layers,
                &counts,
                rule,
                cut,
            );
            let got: Vec<Vec<usize>> = whole.0.iter().map(pruned).collect();
            assert_eq!(&got, want, "{ctx}: pruned elements");
            assert_eq!(&whole.1, want_ties, "{ctx}: tie counts");
            check_cut_streamed(&ctx, b, &up.views(), rule, cut, &whole);
        }
    };
    type Row = (u64, Vec<Vec<usize>>, Vec<u64>);
    let row = |ties: u64, p: &[&[usize]], t: &[u64]| -> Row {
        (ties, p.iter().map(|p| p.to_vec()).collect(), t.to_vec())
    };
    const ALL: u64 = TensorCut::ALL;

    // Magnitudes at 1.0, in sequence order: a0 a2 a4 | (b has none) | c0 c1
    // c3 | d1 (d0 was pruned earlier: key 0, below the cut).
    let layers = [
        HostLayer::new("a", &[5], vec![1.0, 2.0, -1.0, 0.5, 1.0]),
        HostLayer::new("b", &[2], vec![3.0, 0.25]),
        HostLayer::new("c", &[2, 2], vec![1.0, -1.0, 4.0, 1.0]),
        HostLayer::new("d", &[3], vec![1.0, 1.0, 0.0])
            .with_mask(Mask::from_fn(shape(&[3]), |i| i != 0)),
    ];
    let a: &[usize] = &[0, 2, 3, 4];
    let everything = row(7, &[a, &[1], &[0, 1, 3], &[0, 1, 2]], &[3, 0, 3, 1]);
    let table = [
        row(0, &[&[3], &[1], &[], &[0, 2]], &[0, 0, 0, 0]),
        row(1, &[&[0, 3], &[1], &[], &[0, 2]], &[1, 0, 0, 0]),
        row(2, &[&[0, 2, 3], &[1], &[], &[0, 2]], &[2, 0, 0, 0]),
        row(3, &[a, &[1], &[], &[0, 2]], &[3, 0, 0, 0]),
        row(4, &[a, &[1], &[0], &[0, 2]], &[3, 0, 1, 0]),
        row(5, &[a, &[1], &[0, 1], &[0, 2]], &[3, 0, 2, 0]),
        row(6, &[a, &[1], &[0, 1, 3], &[0, 2]], &[3, 0, 3, 0]),
        everything.clone(),
        (8, everything.1.clone(), everything.2.clone()),
        (100, everything.1.clone(), everything.2.clone()),
        (ALL, everything.1.clone(), everything.2.clone()),
    ];
    for rule in [KeyRule::ABS, RULES[3], RULES[5]] {
        run("a, b, c, d", &layers, rule, order_key(1.0), &table);
    }
    // No element at 1.5: every key below it goes, whatever the budget.
    let below = row(0, &[a, &[1], &[0, 1, 3], &[0, 1, 2]], &[0, 0, 0, 0]);
    let absent: Vec<Row> = [0, 3, ALL]
        .iter()
        .map(|&t| (t, below.1.clone(), below.2.clone()))
        .collect();
    run("a, b, c, d", &layers, KeyRule::ABS, order_key(1.5), &absent);

    // Key 0: the elements an earlier mask pruned tie below everything.
    let earlier = [
        HostLayer::new("x", &[2], vec![5.0, 6.0]).with_mask(Mask::from_fn(shape(&[2]), |i| i != 0)),
        HostLayer::new("y", &[3], vec![0.0, -7.0, 0.0]).with_mask(Mask::prune_all(shape(&[3]))),
        HostLayer::new("z", &[1], vec![-0.0]),
    ];
    let table = [
        row(0, &[&[], &[], &[]], &[0, 0, 0]),
        row(1, &[&[0], &[], &[]], &[1, 0, 0]),
        row(2, &[&[0], &[0], &[]], &[1, 1, 0]),
        row(4, &[&[0], &[0, 1, 2], &[]], &[1, 3, 0]),
        row(ALL, &[&[0], &[0, 1, 2], &[]], &[1, 3, 0]),
    ];
    run("x, y, z", &earlier, KeyRule::ABS, KEY_PRUNED, &table);

    // NaN ties: first in the sequence under Lowest, last under Highest (and
    // under Error, where the key is a placeholder and prune() fails anyway).
    let nan = [
        HostLayer::new("n1", &[3], vec![f32::NAN, 2.0, -f32::NAN]),
        HostLayer::new("n2", &[2], vec![f32::NAN, -3.0]),
    ];
    let lowest = [
        row(0, &[&[], &[]], &[0, 0]),
        row(1, &[&[0], &[]], &[1, 0]),
        row(2, &[&[0, 2], &[]], &[2, 0]),
        row(ALL, &[&[0, 2], &[0]], &[2, 1]),
    ];
    run("n1, n2", &nan, RULES[2], KEY_NAN_LOWEST, &lowest);
    run("n1, n2", &nan, RULES[3], KEY_NAN_LOWEST, &lowest);
    let highest = [
        row(0, &[&[1], &[1]], &[0, 0]),
        row(1, &[&[0, 1], &[1]], &[1, 0]),
        row(2, &[&[0, 1, 2], &[1]], &[2, 0]),
        row(3, &[&[0, 1, 2], &[0, 1]], &[2, 1]),
        row(ALL, &[&[0, 1, 2], &[0, 1]], &[2, 1]),
    ];
    for rule in [KeyRule::IDENTITY, KeyRule::ABS, RULES[4], RULES[5]] {
        run("n1, n2", &nan, rule, KEY_NAN_HIGHEST, &highest);
    }
}

/// Selection primitives on inputs of several hundred thousand elements, so
/// that any internal chunking splits them (and their ties): histograms, key
/// counts, threshold masks whose tie budget runs out next to any chunk
/// boundary, at the boundary between the inputs and past it (tie ranks
/// running across both), and N:M masks, all exactly the reference's.
pub fn check_selection_large<B: Backend>(b: &B) {
    let name = b.name();
    let big = shape(&[700_001]);
    let masked = shape(&[300, 1001]);
    let layers = [
        HostLayer::new("big", big.dims(), quantised_values(101, big.numel(), 2)),
        HostLayer::new(
            "masked",
            masked.dims(),
            quantised_values(102, masked.numel(), 1),
        )
        .with_mask(random_mask(102, &masked, 0.3)),
    ];
    for rule in [KeyRule::ABS, RULES[2]] {
        let keys: Vec<u32> = [0.0f32, 0.5, 1.0, -1.0]
            .iter()
            .map(|&x| rule.key(x))
            .collect();
        for w in [
            KeyWindow::High,
            KeyWindow::Low {
                high: (keys[1] >> 16) as u16,
            },
        ] {
            let ctx = format!("{name}: large histogram under {rule:?} in {w:?}");
            assert!(
                ok(&ctx, histogram_on(b, &layers, rule, w))
                    == ok(&ctx, histogram_on(&REF, &layers, rule, w)),
                "{ctx}: differs from the reference"
            );
        }
        let up = ok(&name, Uploaded::new(b, &layers));
        let rup = ok("reference", Uploaded::new(&REF, &layers));
        let (views, reference) = (up.views(), rup.views());
        let mut cut_keys = keys;
        cut_keys.push(KEY_PRUNED);
        cut_keys.sort_unstable();
        cut_keys.dedup();
        for key in cut_keys {
            let ctx = format!("{name}: large count_keys under {rule:?} at {key:#010x}");
            let counts = host_counts(&layers, rule, key);
            assert_eq!(
                ok(&ctx, count_on(&REF, &layers, rule, key)),
                counts,
                "{ctx}"
            );
            assert_eq!(ok(&ctx, count_on(b, &layers, rule, key)), counts, "{ctx}");
            let equal: Vec<u64> = counts.iter().map(|c| c.equal).collect();
            let total: u64 = equal.iter().sum();
            // Budgets that run out next to element positions where chunks
            // of a power-of-two size would split the sequence, at and past
            // the boundary between the inputs, and past every tie.
            let split = [
                1 << 16,
                1 << 18,
                1 << 19,
                big.numel(),
                big.numel() + (1 << 18),
                1 << 20,
            ];
            let mut budgets = vec![
                1,
                equal[0] / 3,
                262_139,
                262_149,
                524_290,
                equal[0] + equal[1] / 2,
                total - 1,
                total,
                total + 1,
                TensorCut::ALL,
            ];
            for p in split {
                let t = ties_before(&layers, rule, key, p);
                budgets.extend([t.saturating_sub(1), t, t + 1]);
            }
            budgets.sort_unstable();
            budgets.dedup();
            for (i, ties) in budgets.into_iter().enumerate() {
                let cut = TensorCut { key, ties };
                let ctx = format!(
                    "{name}: large threshold masks under {rule:?} with {cut:?} ({equal:?} tied)"
                );
                let whole = check_cut(&ctx, b, &views, &reference, &layers, &counts, rule, cut);
                if i % 3 == 0 {
                    check_cut_streamed(&ctx, b, &views, rule, cut, &whole);
                }
            }
        }
    }
    let nm = [
        HostLayer::new("nm", &[512, 1024], quantised_values(103, 512 * 1024, 1)),
        HostLayer::new(
            "nm masked",
            &[3, 100_000],
            quantised_values(104, 300_000, 2),
        )
        .with_mask(random_mask(104, &shape(&[3, 100_000]), 0.5)),
    ];
    for p in [NofM::TWO_FOUR, NofM { n: 3, m: 8 }] {
        let ctx = format!("{name}: large {}:{} masks", p.n, p.m);
        let (got, nan) = ok(&ctx, n_of_m_on(b, &nm, KeyRule::ABS, p));
        let (want, want_nan) = ok(&ctx, n_of_m_on(&REF, &nm, KeyRule::ABS, p));
        assert_masks_eq(&ctx, &got, &want);
        assert_eq!(nan, want_nan, "{ctx}: NaN counts");
    }
}

fn n_of_m_patterns() -> [NofM; 8] {
    [
        (1, 2),
        (2, 4),
        (1, 4),
        (3, 4),
        (4, 8),
        (2, 8),
        (3, 5),
        (7, 16),
    ]
    .map(|(n, m)| NofM { n, m })
}

/// N:M masks and NaN counts equal the reference's exactly for many patterns,
/// ranks and tie-heavy data, with survivors and every key rule; every group
/// keeps exactly `n`; shapes that do not split into groups and invalid
/// patterns are errors.
pub fn check_n_of_m_masks<B: Backend>(b: &B) {
    let name = b.name();
    for p in n_of_m_patterns() {
        let m = p.m;
        let sets: Vec<Vec<HostLayer>> = vec![
            vec![HostLayer::new("v", &[m], quantised_values(1, m, 1))],
            vec![
                HostLayer::new("a", &[3, 2 * m], quantised_values(2, 6 * m, 2)),
                HostLayer::new("b", &[2, 3, 4, m], special_mix(3, 24 * m)),
            ],
            vec![
                HostLayer::new("big", &[257, 8 * m], quantised_values(4, 257 * 8 * m, 2))
                    .with_mask(random_mask(4, &shape(&[257, 8 * m]), 0.2)),
                HostLayer::new("zeros", &[2, m], vec![0.0; 2 * m]),
                HostLayer::new(
                    "signed zeros",
                    &[1, m],
                    (0..m)
                        .map(|i| if i % 2 == 0 { -0.0 } else { 0.0 })
                        .collect(),
                ),
            ],
        ];
        for (s, layers) in sets.iter().enumerate() {
            for rule in RULES {
                let ctx = format!("{name}: {}:{} masks of set {s} under {rule:?}", p.n, p.m);
                let (got, nan) = ok(&ctx, n_of_m_on(b, layers, rule, p));
                let (want, want_nan) = ok(&ctx, n_of_m_on(&REF, layers, rule, p));
                assert_masks_eq(&ctx, &got, &want);
                assert_eq!(nan, want_nan, "{ctx}: NaN counts");
                let host_nan: Vec<u64> = layers.iter().map(|l| host_nan_count(l, rule)).collect();
                assert_eq!(
                    nan, host_nan,
                    "{ctx}: NaN counts differ from the host count"
                );
                for mask in &got {
                    for g in 0..mask.len() / m {
                        let kept = (0..m).filter(|j| mask.get(g * m + j)).count();
                        assert_eq!(kept, p.n, "{ctx}: group {g} keeps {kept}");
                    }
                }
            }
        }
    }
    let ctx = format!("{name}: 2:4 masks of a [3, 6] tensor");
    let bad = [HostLayer::new("a", &[3, 6], vec![1.0; 18])];
    let got = n_of_m_on(b, &bad, KeyRule::ABS, NofM::TWO_FOUR);
    assert!(
        matches!(got, Err(Error::PatternMismatch { len: 6, m: 4, .. })),
        "{ctx}: {got:?}"
    );
    let good = [HostLayer::new("a", &[2, 4], vec![1.0; 8])];
    for (n, m) in [(0, 4), (4, 4), (5, 4)] {
        let got = n_of_m_on(b, &good, KeyRule::ABS, NofM { n, m });
        assert!(
            matches!(got, Err(Error::InvalidPattern { .. })),
            "{name}: pattern {n}:{m} must be invalid, got {got:?}"
        );
    }
}

/// Mask application zeroes pruned weights to `+0.0` (NaN and infinite
/// weights included) and leaves kept ones bit for bit; shape mismatches are
/// errors.
pub fn check_apply_mask<B: Backend>(b: &B) {
    let name = b.name();
    for (case, dims) in [
        &[1usize][..],
        &[13],
        &[64],
        &[65],
        &[3, 300],
        &[2, 3, 4, 5],
        &[0],
        &[200_003],
    ]
    .iter()
    .enumerate()
    {
        let s = shape(dims);
        let data = special_mix(case as u64, s.numel());
        for mask in [
            random_mask(case as u64, &s, 0.5),
            Mask::keep_all(s.clone()),
            Mask::prune_all(s.clone()),
        ] {
            let ctx = format!(
                "{name}: apply a mask pruning {} of {dims:?}",
                mask.count_pruned()
            );
            let mut w = ok(&ctx, b.upload(&data, &s));
            let m = ok(&ctx, b.upload_mask(&mask));
            ok(&ctx, b.apply_mask(&mut w, &m));
            let got = ok(&ctx, b.download(&w));
            let want: Vec<f32> = (0..data.len())
                .map(|i| if mask.get(i) { data[i] } else { 0.0 })
                .collect();
            assert_eq!(
                bits(&got),
                bits(&want),
                "{ctx}: pruned weights must become +0.0, kept stay as they are"
            );
        }
    }
    let mut w = ok(&name, b.upload(&[1.0; 6], &shape(&[2, 3])));
    let m = ok(&name, b.upload_mask(&Mask::keep_all(shape(&[3, 2]))));
    let mut rw = ok("", REF.upload(&[1.0; 6], &shape(&[2, 3])));
    let rm = Mask::keep_all(shape(&[3, 2]));
    assert_same_error_kind(
        &format!("{name}: apply a [3, 2] mask to [2, 3] weights"),
        &b.apply_mask(&mut w, &m),
        &REF.apply_mask(&mut rw, &rm),
    );
}

// ---------------------------------------------------------------------------
// Dense linear algebra
// ---------------------------------------------------------------------------

/// The rounding bound of a sum of `k` products whose absolute values sum to
/// `abs_sum`, for any summation order and either side's rounding.
fn dot_tolerance(k: usize, abs_sum: f64) -> f64 {
    2.0 * (k as f64 + 2.0) * f32::EPSILON as f64 * abs_sum
}

fn download_close<B: Backend>(b: &B, ctx: &str, t: &B::Tensor, want: &[f32], tol: &[f64]) {
    let got = ok(ctx, b.download(t));
    assert_close(ctx, &got, want, tol);
}

/// Matrix-vector products agree with the reference within the rounding
/// bound, including empty dimensions; wrong shapes are errors.
pub fn check_gemv<B: Backend>(b: &B) {
    let name = b.name();
    for (m, n) in [
        (1, 1),
        (3, 5),
        (64, 65),
        (17, 300),
        (0, 3),
        (3, 0),
        (1, 1000),
        (300, 50),
    ] {
        let ctx = format!("{name}: gemv [{m}, {n}]");
        let (da, dx) = (
            uniform_values(m as u64, m * n),
            uniform_values(n as u64 + 100, n),
        );
        let a = ok(&ctx, b.upload(&da, &shape(&[m, n])));
        let x = ok(&ctx, b.upload(&dx, &shape(&[n])));
        let y = ok(&ctx, b.gemv(&a, &x));
        assert_eq!(y.shape(), &shape(&[m]), "{ctx}: wrong shape");
        let ra = ok("", REF.upload(&da, &shape(&[m, n])));
        let rx = ok("", REF.upload(&dx, &shape(&[n])));
        let want = ok("", REF.download(&ok("", REF.gemv(&ra, &rx))));
        let tol: Vec<f64> = (0..m)
            .map(|i| {
                dot_tolerance(
                    n,
                    (0..n).map(|j| (da[i * n + j] * dx[j]).abs() as f64).sum(),
                )
            })
            .collect();
        download_close(b, &ctx, &y, &want, &tol);
    }
    let a = ok(&name, b.upload(&[1.0; 6], &shape(&[2, 3])));
    let x = ok(&name, b.upload(&[1.0; 2], &shape(&[2])));
    let v = ok(&name, b.upload(&[1.0; 6], &shape(&[6])));
    let ra = ok("", REF.upload(&[1.0; 6], &shape(&[2, 3])));
    let rx = ok("", REF.upload(&[1.0; 2], &shape(&[2])));
    let rv = ok("", REF.upload(&[1.0; 6], &shape(&[6])));
    assert_same_error_kind(
        &format!("{name}: gemv [2, 3] x [2]"),
        &b.gemv(&a, &x).map(|_| ()),
        &REF.gemv(&ra, &rx).map(|_| ()),
    );
    assert_same_error_kind(
        &format!("{name}: gemv with a rank-1 matrix"),
        &b.gemv(&v, &x).map(|_| ()),
        &REF.gemv(&rv, &rx).map(|_| ()),
    );
}

/// Matrix products with every transpose combination agree with the
/// reference within the rounding bound, including empty and rank-one
/// dimensions; mismatched inner dimensions are errors.
pub fn check_gemm<B: Backend>(b: &B) {
    let name = b.name();
    let both = [Transpose::No, Transpose::Yes];
    for (m, k, n) in [
        (1, 1, 1),
        (2, 3, 4),
        (17, 33, 9),
        (64, 1, 65),
        (5, 0, 3),
        (0, 4, 2),
        (8, 300, 7),
        (150, 20, 140),
    ] {
        for ta in both {
            for tb in both {
                let ctx = format!("{name}: gemm {m}x{k} ({ta:?}) by {k}x{n} ({tb:?})");
                let sa = if ta == Transpose::No { [m, k] } else { [k, m] };
                let sb = if tb == Transpose::No { [k, n] } else { [n, k] };
                let (da, db) = (
                    uniform_values(m as u64 * 7 + 1, m * k),
                    uniform_values(n as u64 * 7 + 2, k * n),
                );
                let at = |i: usize, p: usize| {
                    if ta == Transpose::No {
                        da[i * k + p]
                    } else {
                        da[p * m + i]
                    }
                };
                let bt = |p: usize, j: usize| {
                    if tb == Transpose::No {
                        db[p * n + j]
                    } else {
                        db[j * k + p]
                    }
                };
                let a = ok(&ctx, b.upload(&da, &shape(&sa)));
                let bb = ok(&ctx, b.upload(&db, &shape(&sb)));
                let c = ok(&ctx, b.gemm(&a, ta, &bb, tb));
                assert_eq!(c.shape(), &shape(&[m, n]), "{ctx}: wrong shape");
                let ra = ok("", REF.upload(&da, &shape(&sa)));
                let rb = ok("", REF.upload(&db, &shape(&sb)));
                let want = ok("", REF.download(&ok("", REF.gemm(&ra, ta, &rb, tb))));
                // An f64 product fixes the reference too: a wrong transpose
                // in both would otherwise go unnoticed.
                let exact: Vec<f32> = (0..m * n)
                    .map(|e| {
                        (0..k)
                            .map(|p| at(e / n, p) as f64 * bt(p, e % n) as f64)
                            .sum::<f64>() as f32
                    })
                    .collect();
                let tol: Vec<f64> = (0..m * n)
                    .map(|e| {
                        dot_tolerance(
                            k,
                            (0..k)
                                .map(|p| (at(e / n, p) * bt(p, e % n)).abs() as f64)
                                .sum(),
                        )
                    })
                    .collect();
                assert_close(&format!("{ctx} (reference vs f64)"), &want, &exact, &tol);
                download_close(b, &ctx, &c, &want, &tol);
            }
        }
    }
    let a = ok(&name, b.upload(&[1.0; 6], &shape(&[2, 3])));
    let ra = ok("", REF.upload(&[1.0; 6], &shape(&[2, 3])));
    for (ta, tb) in [
        (Transpose::No, Transpose::No),
        (Transpose::Yes, Transpose::Yes),
    ] {
        assert_same_error_kind(
            &format!("{name}: gemm [2, 3] ({ta:?}) by [2, 3] ({tb:?})"),
            &b.gemm(&a, ta, &a, tb).map(|_| ()),
            &REF.gemm(&ra, ta, &ra, tb).map(|_| ()),
        );
    }
}

/// Rank-one updates agree with the reference within rounding; wrong vector
/// lengths are errors.
pub fn check_rank1_update<B: Backend>(b: &B) {
    let name = b.name();
    for (m, n) in [(1, 1), (3, 5), (64, 65), (100, 3), (0, 4), (300, 40)] {
        for alpha in [1.0f32, -0.5, 0.0, 3.25] {
            let ctx = format!("{name}: rank-1 update [{m}, {n}] alpha {alpha}");
            let (da, dx, dy) = (
                uniform_values(1, m * n),
                uniform_values(2, m),
                uniform_values(3, n),
            );
            let mut a = ok(&ctx, b.upload(&da, &shape(&[m, n])));
            let x = ok(&ctx, b.upload(&dx, &shape(&[m])));
            let y = ok(&ctx, b.upload(&dy, &shape(&[n])));
            ok(&ctx, b.rank1_update(&mut a, alpha, &x, &y));
            let mut ra = ok("", REF.upload(&da, &shape(&[m, n])));
            let rx = ok("", REF.upload(&dx, &shape(&[m])));
            let ry = ok("", REF.upload(&dy, &shape(&[n])));
            ok("", REF.rank1_update(&mut ra, alpha, &rx, &ry));
            let want = ok("", REF.download(&ra));
            let tol: Vec<f64> = (0..m * n)
                .map(|e| {
                    4.0 * f32::EPSILON as f64
                        * (da[e].abs() as f64 + (alpha * dx[e / n] * dy[e % n]).abs() as f64)
                })
                .collect();
            download_close(b, &ctx, &a, &want, &tol);
        }
    }
    let mut a = ok(&name, b.upload(&[1.0; 6], &shape(&[2, 3])));
    let x = ok(&name, b.upload(&[1.0; 3], &shape(&[3])));
    let mut ra = ok("", REF.upload(&[1.0; 6], &shape(&[2, 3])));
    let rx = ok("", REF.upload(&[1.0; 3], &shape(&[3])));
    assert_same_error_kind(
        &format!("{name}: rank-1 update of [2, 3] with x of [3]"),
        &b.rank1_update(&mut a, 1.0, &x, &x),
        &REF.rank1_update(&mut ra, 1.0, &rx, &rx),
    );
}

/// Dot products of tensors of any rank agree with the reference within the
/// rounding bound and stay `[1]` tensors; mismatched shapes are errors.
pub fn check_dot<B: Backend>(b: &B) {
    let name = b.name();
    for dims in [
        &[0usize][..],
        &[1],
        &[7],
        &[1000],
        &[4097],
        &[2, 3, 4, 5],
        &[100_003],
    ] {
        let s = shape(dims);
        let ctx = format!("{name}: dot of {dims:?}");
        let (da, db) = (uniform_values(5, s.numel()), uniform_values(6, s.numel()));
        let x = ok(&ctx, b.upload(&da, &s));
        let y = ok(&ctx, b.upload(&db, &s));
        let d = ok(&ctx, b.dot(&x, &y));
        assert_eq!(d.shape(), &shape(&[1]), "{ctx}: wrong shape");
        let (rx, ry) = (ok("", REF.upload(&da, &s)), ok("", REF.upload(&db, &s)));
        let want = ok("", REF.download(&ok("", REF.dot(&rx, &ry))));
        let abs_sum = da.iter().zip(&db).map(|(p, q)| (p * q).abs() as f64).sum();
        download_close(b, &ctx, &d, &want, &[dot_tolerance(s.numel(), abs_sum)]);
    }
    let x = ok(&name, b.upload(&[1.0; 6], &shape(&[2, 3])));
    let y = ok(&name, b.upload(&[1.0; 6], &shape(&[6])));
    let rx = ok("", REF.upload(&[1.0; 6], &shape(&[2, 3])));
    let ry = ok("", REF.upload(&[1.0; 6], &shape(&[6])));
    assert_same_error_kind(
        &format!("{name}: dot of [2, 3] and [6]"),
        &b.dot(&x, &y).map(|_| ()),
        &REF.dot(&rx, &ry).map(|_| ()),
    );
}

/// A well-conditioned symmetric positive definite matrix: `M Mᵀ / n + I`.
fn spd(n: usize, seed: u64) -> Vec<f32> {
    let m = uniform_values(seed, n * n);
    let mut a = vec![0.0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            let s: f64 = (0..n)
                .map(|p| m[i * n + p] as f64 * m[j * n + p] as f64)
                .sum();
            a[i * n + j] = (s / n as f64) as f32 + if i == j { 1.0 } else { 0.0 };
        }
    }
    a
}

/// Cholesky solves of well-conditioned systems, with vector and matrix right
/// sides, agree with the reference and leave a small residual; matrices that
/// are not positive definite (or hold NaN) and wrong shapes are errors.
pub fn check_cholesky_solve<B: Backend>(b: &B) {
    let name = b.name();
    for n in [1usize, 2, 5, 40, 150] {
        let da = spd(n, n as u64);
        for r in [None, Some(1usize), Some(3)] {
            let ctx = format!("{name}: cholesky solve n = {n}, rhs {r:?}");
            let bs = match r {
                None => shape(&[n]),
                Some(r) => shape(&[n, r]),
            };
            let cols = r.unwrap_or(1);
            let db = uniform_values(n as u64 + 9, n * cols);
            let a = ok(&ctx, b.upload(&da, &shape(&[n, n])));
            let rhs = ok(&ctx, b.upload(&db, &bs));
            let x = ok(&ctx, b.cholesky_solve(&a, &rhs));
            assert_eq!(x.shape(), &bs, "{ctx}: wrong shape");
            let got = ok(&ctx, b.download(&x));
            let ra = ok("", REF.upload(&da, &shape(&[n, n])));
            let rb = ok("", REF.upload(&db, &bs));
            let want = ok("", REF.download(&ok("", REF.cholesky_solve(&ra, &rb))));
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
            assert_close(&ctx, &got, &want, &vec![1e-4 * scale + 1e-6; want.len()]);
            for c in 0..cols {
                for i in 0..n {
                    let ax: f64 = (0..n)
                        .map(|p| da[i * n + p] as f64 * got[p * cols + c] as f64)
                        .sum();
                    let res = (ax - db[i * cols + c] as f64).abs();
                    assert!(
                        res <= 1e-4 * (1.0 + scale),
                        "{ctx}: residual {res} in row {i}, column {c}"
                    );
                }
            }
        }
    }
    // (what, matrix, its shape, right-hand side shape)
    type Case = (&'static str, Vec<f32>, &'static [usize], &'static [usize]);
    let cases: [Case; 5] = [
        ("indefinite", vec![1.0, 2.0, 2.0, 1.0], &[2, 2], &[2]),
        ("zero", vec![0.0; 9], &[3, 3], &[3]),
        ("NaN", vec![f32::NAN, 0.0, 0.0, 1.0], &[2, 2], &[2]),
        ("non-square", vec![1.0; 6], &[2, 3], &[2]),
        ("wrong rhs", vec![1.0, 0.0, 0.0, 1.0], &[2, 2], &[3]),
    ];
    for (what, da, sa, sb) in cases {
        let db = vec![1.0; shape(sb).numel()];
        let got = b
            .upload(&da, &shape(sa))
            .and_then(|a| {
                b.upload(&db, &shape(sb))
                    .and_then(|r| b.cholesky_solve(&a, &r))
            })
            .map(|_| ());
        let want = REF
            .upload(&da, &shape(sa))
            .and_then(|a| {
                REF.upload(&db, &shape(sb))
                    .and_then(|r| REF.cholesky_solve(&a, &r))
            })
            .map(|_| ());
        assert_same_error_kind(
            &format!("{name}: cholesky solve of a {what} matrix"),
            &got,
            &want,
        );
    }
}

// ---------------------------------------------------------------------------
// High-level paths: prune()
// ---------------------------------------------------------------------------

/// Runs `config` on `b`, the reference and (when `oracle`) the sort-based
/// oracle, and panics unless all three agree exactly (masks or errors).
#[track_caller]
fn agree<B: Backend>(
    b: &B,
    context: &str,
    layers: &[HostLayer],
    config: &PruneConfig,
    oracle: bool,
) -> Result<Vec<Mask>> {
    let ctx = format!("{}: {context} with {config:?}", b.name());
    let got = prune_on(b, layers, config);
    let want = prune_on(&REF, layers, config);
    assert_same_masks(&ctx, &got, &want);
    if oracle {
        assert_same_masks(
            &format!("{ctx} (reference vs naive oracle)"),
            &want,
            &expected_masks(layers, config),
        );
    }
    if let Ok(masks) = &got {
        for (m, l) in masks.iter().zip(layers) {
            assert_eq!(
                m.shape(),
                &l.shape,
                "{ctx}: mask of {} has the wrong shape",
                l.name
            );
            if let Some(prev) = &l.mask {
                assert!(
                    ok(&ctx, m.is_subset_of(prev)),
                    "{ctx}: {} revived weights its earlier mask pruned",
                    l.name
                );
            }
        }
    }
    got
}

/// Layer sets of the unstructured checks.
fn layer_sets() -> Vec<(&'static str, Vec<HostLayer>)> {
    vec![
        (
            "uniform mlp",
            vec![
                HostLayer::new("fc1", &[16, 20], uniform_values(1, 320)),
                HostLayer::new("fc2", &[10, 16], uniform_values(2, 160)),
                HostLayer::new("out", &[10], uniform_values(3, 10)),
            ],
        ),
        (
            "quantised",
            vec![
                HostLayer::new("q1", &[7, 9], quantised_values(4, 63, 2)),
                HostLayer::new("q2", &[65], quantised_values(5, 65, 3)),
                HostLayer::new("q3", &[2, 3, 4, 5], quantised_values(6, 120, 1)),
            ],
        ),
        (
            "mostly zeros",
            vec![
                HostLayer::new("z1", &[130], sparse_values(7, 130, 0.7)),
                HostLayer::new("z2", &[64], sparse_values(8, 64, 0.95)),
                HostLayer::new("z3", &[1], vec![-0.0]),
            ],
        ),
        (
            "conv",
            vec![
                HostLayer::new("conv1", &[8, 3, 3, 3], uniform_values(9, 216)),
                HostLayer::new("conv2", &[4, 8, 1, 1], quantised_values(10, 32, 4)),
                HostLayer::new("fc", &[10, 32], distinct_values(11, 320)),
            ],
        ),
        (
            "one element each",
            vec![
                HostLayer::new("a", &[1], vec![0.5]),
                HostLayer::new("b", &[1, 1], vec![-0.5]),
                HostLayer::new("c", &[1, 1, 1, 1], vec![0.0]),
                HostLayer::new("d", &[], vec![2.0]),
            ],
        ),
        (
            "word edges",
            vec![
                HostLayer::new("w63", &[63], quantised_values(12, 63, 8)),
                HostLayer::new("w64", &[64], quantised_values(13, 64, 8)),
                HostLayer::new("w65", &[65], quantised_values(14, 65, 8)),
                HostLayer::new("w127", &[127], quantised_values(15, 127, 8)),
                HostLayer::new("w129", &[129], quantised_values(16, 129, 8)),
            ],
        ),
    ]
}

const SPARSITIES: [f64; 9] = [0.0, 0.05, 0.25, 0.5, 0.7, 0.9, 0.99, 0.999, 1.0];

fn budget(layers: &[HostLayer], s: f64) -> Vec<(String, f64)> {
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                l.name.clone(),
                (s * [1.0, 0.5, 0.9, 0.25, 0.75][i % 5]).min(1.0),
            )
        })
        .collect()
}

fn guard_variants(layers: &[HostLayer], config: PruneConfig) -> Vec<PruneConfig> {
    vec![
        config.clone(),
        config.clone().allow_empty(true),
        config.clone().min_density(0.2),
        config.clone().min_density(0.5).allow_empty(true),
        config.skip(layers[0].name.clone()),
    ]
}

/// Unstructured magnitude pruning with every scope and guard setting over
/// many sparsities, on tie-heavy, mostly-zero, conv-shaped, one-element and
/// word-edge layer sets: exactly the reference and the naive oracle (masks,
/// or the same error); where it succeeds, global pruning removes exactly
/// `round(s * n)` and local pruning `round(s * n_l)` per layer.
pub fn check_prune_unstructured<B: Backend>(b: &B) {
    for (set, layers) in layer_sets() {
        let n: u64 = layers.iter().map(|l| l.numel() as u64).sum();
        for s in SPARSITIES {
            let scopes = [
                PruneConfig::new(s).global(),
                PruneConfig::new(s).local(),
                PruneConfig::new(s).per_layer(budget(&layers, s)),
            ];
            for scope in scopes {
                for config in guard_variants(&layers, scope) {
                    let masks = agree(b, set, &layers, &config, true);
                    let Ok(masks) = masks else { continue };
                    let skipped = |name: &str| config.guards.skip.iter().any(|k| k == name);
                    match config.scope {
                        prunus_core::Scope::Global if config.guards.skip.is_empty() => {
                            let total: u64 = masks.iter().map(|m| m.count_pruned()).sum();
                            assert_eq!(
                                total,
                                (s * n as f64).round() as u64,
                                "{set} at {s}: global count"
                            );
                        }
                        prunus_core::Scope::Local => {
                            for (m, l) in
                                masks.iter().zip(&layers).filter(|(_, l)| !skipped(&l.name))
                            {
                                let want = (s * l.numel() as f64).round() as u64;
                                assert_eq!(
                                    m.count_pruned(),
                                    want,
                                    "{set} at {s}: local count of {}",
                                    l.name
                                );
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Two layers whose weights tie across the layer boundary: the expected
/// masks are written out by hand for each `k`, ties going to the lowest
/// global index (layer order, then row-major), and the guards stopping at
/// one weight per layer.
pub fn check_prune_hand_computed_global<B: Backend>(b: &B) {
    // Magnitudes: a = [.5 .1 .1 | 0 0 2], b = [.1 .1 3 0]; global indices 0-5
    // then 6-9. Order: a3 a4 b9(0) | a1 a2 b6 b7 (0.1) | a0 (0.5) | a5 | b8.
    let layers = [
        HostLayer::new("a", &[2, 3], vec![0.5, -0.1, 0.1, 0.0, -0.0, 2.0]),
        HostLayer::new("b", &[4], vec![0.1, -0.1, 3.0, 0.0]),
    ];
    let table: [(f64, &[usize], &[usize]); 10] = [
        (0.0, &[0, 1, 2, 3, 4, 5], &[0, 1, 2, 3]),
        (0.1, &[0, 1, 2, 4, 5], &[0, 1, 2, 3]),
        (0.2, &[0, 1, 2, 5], &[0, 1, 2, 3]),
        // 0.25 * 10 = 2.5 rounds half away from zero: 3 pruned.
        (0.25, &[0, 1, 2, 5], &[0, 1, 2]),
        (0.3, &[0, 1, 2, 5], &[0, 1, 2]),
        (0.4, &[0, 2, 5], &[0, 1, 2]),
        (0.5, &[0, 5], &[0, 1, 2]),
        (0.6, &[0, 5], &[1, 2]),
        (0.7, &[0, 5], &[2]),
        (0.8, &[5], &[2]),
    ];
    for (s, ka, kb) in table {
        let masks = ok(
            &b.name(),
            agree(
                b,
                "hand-computed global",
                &layers,
                &PruneConfig::new(s),
                true,
            ),
        );
        assert_eq!(
            (kept(&masks[0]), kept(&masks[1])),
            (ka.to_vec(), kb.to_vec()),
            "{}: s = {s}",
            b.name()
        );
    }
    // k = 9: a and b are both at their one-weight floor.
    let got = agree(
        b,
        "hand-computed global",
        &layers,
        &PruneConfig::new(0.9),
        true,
    );
    assert_eq!(
        got.err(),
        Some(Error::GuardsExceeded {
            layer: "(global)".into(),
            requested: 9,
            allowed: 8
        }),
        "{}",
        b.name()
    );
    let masks = ok(
        "",
        agree(
            b,
            "",
            &layers,
            &PruneConfig::new(0.9).allow_empty(true),
            true,
        ),
    );
    assert_eq!(
        (kept(&masks[0]), kept(&masks[1])),
        (vec![], vec![2]),
        "{}: s = 0.9, empty allowed",
        b.name()
    );
    // A density floor of 50% caps a at 3 pruned and b at 2: a3 a4 b3 a1 go,
    // a2 is skipped (a is full), b0 goes.
    let masks = ok(
        "",
        agree(
            b,
            "",
            &layers,
            &PruneConfig::new(0.5).min_density(0.5),
            true,
        ),
    );
    assert_eq!(
        (kept(&masks[0]), kept(&masks[1])),
        (vec![0, 2, 5], vec![1, 2]),
        "{}: s = 0.5, min density 0.5",
        b.name()
    );
    // Skipping a: only b's four weights count; 0.5 of 4 prunes b3 then b0.
    let masks = ok(
        "",
        agree(b, "", &layers, &PruneConfig::new(0.5).skip("a"), true),
    );
    assert_eq!(
        (kept(&masks[0]), kept(&masks[1])),
        (vec![0, 1, 2, 3, 4, 5], vec![1, 2]),
        "{}: skip a",
        b.name()
    );
}

/// Local and per-layer scopes on the hand-computed layers: each layer's own
/// lowest magnitudes, ties to the lowest index.
pub fn check_prune_hand_computed_local<B: Backend>(b: &B) {
    let layers = [
        HostLayer::new("a", &[2, 3], vec![0.5, -0.1, 0.1, 0.0, -0.0, 2.0]),
        HostLayer::new("b", &[4], vec![0.1, -0.1, 3.0, 0.0]),
    ];
    let masks = ok(
        "",
        agree(
            b,
            "hand-computed local",
            &layers,
            &PruneConfig::new(0.5).local(),
            true,
        ),
    );
    assert_eq!(
        (kept(&masks[0]), kept(&masks[1])),
        (vec![0, 2, 5], vec![1, 2]),
        "{}: local 0.5",
        b.name()
    );
    let budget = vec![("a".into(), 0.5), ("b".into(), 0.25)];
    let masks = ok(
        "",
        agree(
            b,
            "hand-computed budget",
            &layers,
            &PruneConfig::new(0.0).per_layer(budget),
            true,
        ),
    );
    assert_eq!(
        (kept(&masks[0]), kept(&masks[1])),
        (vec![0, 2, 5], vec![0, 1, 2]),
        "{}: budget",
        b.name()
    );
    // A global selection over one layer is the local one.
    for s in [0.1, 0.3, 0.5, 0.8] {
        let one = &layers[..1];
        let g = ok("", agree(b, "one layer", one, &PruneConfig::new(s), true));
        let l = ok(
            "",
            agree(b, "one layer", one, &PruneConfig::new(s).local(), true),
        );
        assert_masks_eq(
            &format!("{}: one layer, global vs local at {s}", b.name()),
            &g,
            &l,
        );
    }
}

/// Selection on signed scores (identity transform): `-0.0` ties with `0.0`
/// and loses to the lower index, negatives go first, infinities order
/// normally.
pub fn check_select_signed_scores<B: Backend>(b: &B) {
    let name = b.name();
    let layers = [HostLayer::new(
        "s",
        &[8],
        vec![
            -0.0,
            0.0,
            -1.0,
            0.0,
            f32::NEG_INFINITY,
            2.0,
            -0.0,
            f32::INFINITY,
        ],
    )];
    // Order: -inf(4) -1(2) 0(0) 0(1) 0(3) 0(6) 2(5) inf(7).
    let order = [4, 2, 0, 1, 3, 6, 5, 7];
    for k in 0..=8 {
        let config = PruneConfig::new(k as f64 / 8.0).allow_empty(true);
        let ctx = format!("{name}: signed scores, k = {k}");
        let got = select_on(b, &layers, &config, Transform::Identity);
        let want = select_on(&REF, &layers, &config, Transform::Identity);
        assert_same_masks(&ctx, &got, &want);
        let mut expected = order[..k].to_vec();
        expected.sort_unstable();
        assert_eq!(pruned(&ok(&ctx, got)[0]), expected, "{ctx}");
    }
}

/// Heavy ties straddling layers at every `k`: quantised weights in three
/// layers, where the threshold bucket spans all of them, agree exactly with
/// the reference and the naive oracle, with exact counts.
pub fn check_prune_ties_across_layers<B: Backend>(b: &B) {
    let layers = [
        HostLayer::new("t1", &[5, 7], quantised_values(21, 35, 1)),
        HostLayer::new("t2", &[33], quantised_values(22, 33, 1)),
        HostLayer::new("t3", &[3, 2, 2, 2], quantised_values(23, 24, 1)),
    ];
    let n = 92;
    for k in 0..=n {
        let config = PruneConfig::new(k as f64 / n as f64).allow_empty(true);
        let masks = ok("", agree(b, "ties across layers", &layers, &config, true));
        let total: u64 = masks.iter().map(|m| m.count_pruned()).sum();
        assert_eq!(total, k, "{}: ties across layers, k = {k}", b.name());
    }
}

/// Large tensors with few distinct values (ties spanning any internal chunk
/// or thread boundary), with and without earlier masks, globally and
/// locally: exactly the reference's masks and exact counts.
pub fn check_prune_large<B: Backend>(b: &B) {
    let big = shape(&[600, 701]);
    let layers = vec![
        HostLayer::new("big", big.dims(), quantised_values(31, big.numel(), 2)),
        HostLayer::new("mid", &[1000, 65], sparse_values(32, 65_000, 0.5)),
        HostLayer::new("tiny", &[3], vec![0.0, 0.5, -0.5]),
    ];
    let n: u64 = layers.iter().map(|l| l.numel() as u64).sum();
    for s in [0.1, 0.3337, 0.5, 0.77, 0.95] {
        let masks = ok("", agree(b, "large", &layers, &PruneConfig::new(s), false));
        let total: u64 = masks.iter().map(|m| m.count_pruned()).sum();
        assert_eq!(
            total,
            (s * n as f64).round() as u64,
            "{}: large global {s}",
            b.name()
        );
        agree(
            b,
            "large local",
            &layers,
            &PruneConfig::new(s).local(),
            false,
        )
        .ok();
    }
    let earlier: Vec<HostLayer> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| l.clone().with_mask(random_mask(i as u64, &l.shape, 0.25)))
        .collect();
    for s in [0.3, 0.6] {
        ok(
            "",
            agree(
                b,
                "large with earlier masks",
                &earlier,
                &PruneConfig::new(s).allow_empty(true),
                false,
            ),
        );
    }
}

fn group_sets() -> Vec<(&'static str, Vec<HostLayer>)> {
    vec![
        (
            "mlp",
            vec![
                HostLayer::new("fc1", &[12, 20], uniform_values(41, 240)),
                HostLayer::new("fc2", &[10, 12], quantised_values(42, 120, 2)),
            ],
        ),
        (
            "conv",
            vec![
                HostLayer::new("conv1", &[8, 3, 3, 3], quantised_values(43, 216, 3)),
                HostLayer::new("conv2", &[6, 8, 3, 3], sparse_values(44, 432, 0.5)),
                HostLayer::new("head", &[10], uniform_values(45, 10)),
            ],
        ),
        (
            "long rows",
            vec![
                HostLayer::new(
                    "wide",
                    &[5, 2 * REDUCE_CHUNK + 9],
                    wide_range_values(46, 5 * (2 * REDUCE_CHUNK + 9)),
                ),
                HostLayer::new(
                    "tall",
                    &[REDUCE_CHUNK + 3, 3],
                    wide_range_values(47, 3 * (REDUCE_CHUNK + 3)),
                ),
            ],
        ),
    ]
}

/// Structured pruning of rows (neurons, filters), columns and blocks, with
/// the L2 (sum of squares), L1, max and sum norms, in every scope and with
/// guards: exactly the reference and the naive oracle; every mask is a union
/// of whole units.
pub fn check_prune_groups<B: Backend>(b: &B) {
    let groupings = [
        Grouping::Rows,
        Grouping::Columns,
        Grouping::Blocks { rows: 2, cols: 4 },
        Grouping::Blocks { rows: 3, cols: 5 },
    ];
    for (set, layers) in group_sets() {
        for g in groupings {
            for norm in REDUCTIONS {
                for s in [0.0, 0.2, 0.5, 0.75, 1.0] {
                    let base = PruneConfig::new(s)
                        .granularity(Granularity::Groups(g))
                        .group_norm(norm);
                    let configs = [
                        base.clone(),
                        base.clone().allow_empty(true),
                        base.clone().local(),
                        base.clone().per_layer(budget(&layers, s)),
                        base.clone().min_density(0.3),
                        base.clone().skip(layers[0].name.clone()),
                    ];
                    for config in configs {
                        let Ok(masks) = agree(b, set, &layers, &config, true) else {
                            continue;
                        };
                        for (m, l) in masks.iter().zip(&layers) {
                            let units = ok("", m.reduce_any(g));
                            assert_eq!(
                                &ok("", units.expand(g, &l.shape)),
                                m,
                                "{}: {set} {g:?}: mask of {} is not whole units",
                                b.name(),
                                l.name
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Structured pruning whose expected masks are written out by hand: rows by
/// L2 and by L1 (which disagree), columns, 2x2 blocks with edge tiles, and
/// conv filters.
pub fn check_prune_groups_hand_computed<B: Backend>(b: &B) {
    let name = b.name();
    // Rows: r0 = [1 1 1 1] (L1 4, L2² 4), r1 = [2 0 0 0] (2, 4), r2 = [0 0 0 3] (3, 9).
    let w = vec![1.0, 1.0, 1.0, 1.0, -2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0];
    let layers = [HostLayer::new("w", &[3, 4], w)];
    let rows = |norm, s| {
        let c = PruneConfig::new(s)
            .granularity(Granularity::Groups(Grouping::Rows))
            .group_norm(norm);
        ok(&name, agree(b, "hand rows", &layers, &c, true)).remove(0)
    };
    // One row of three: L2 ties r0 and r1 at 4, the lower index goes.
    assert_eq!(
        pruned(&rows(Reduction::SumSquares, 1.0 / 3.0)),
        [0, 1, 2, 3],
        "{name}: L2 rows"
    );
    assert_eq!(
        pruned(&rows(Reduction::L1, 1.0 / 3.0)),
        [4, 5, 6, 7],
        "{name}: L1 rows"
    );
    assert_eq!(
        pruned(&rows(Reduction::L1, 2.0 / 3.0)),
        [4, 5, 6, 7, 8, 9, 10, 11],
        "{name}: L1 two rows"
    );
    // Columns: c0 = [1 -2 0] (L2² 5), c1 = c2 = [1 0 0] (1), c3 = [1 0 3] (10).
    let c = PruneConfig::new(0.5).granularity(Granularity::Groups(Grouping::Columns));
    let m = ok(&name, agree(b, "hand columns", &layers, &c, true)).remove(0);
    assert_eq!(kept(&m), [0, 3, 4, 7, 8, 11], "{name}: columns");
    // 2x2 blocks over 3x4: b0 rows 0-1 cols 0-1 (L2² 6), b1 rows 0-1 cols 2-3 (2),
    // b2 row 2 cols 0-1 (0), b3 row 2 cols 2-3 (9).
    let c = PruneConfig::new(0.5)
        .granularity(Granularity::Groups(Grouping::Blocks { rows: 2, cols: 2 }));
    let m = ok(&name, agree(b, "hand blocks", &layers, &c, true)).remove(0);
    assert_eq!(kept(&m), [0, 1, 4, 5, 10, 11], "{name}: blocks");
    // Conv filters [3, 1, 2, 2]: filter 1 is smallest, then filter 0.
    let conv = [HostLayer::new(
        "conv",
        &[3, 1, 2, 2],
        vec![0.5, 0.5, 0.5, 0.5, 0.1, -0.1, 0.1, 0.1, 1.0, 1.0, -1.0, 1.0],
    )];
    let c = PruneConfig::new(1.0 / 3.0).granularity(Granularity::CHANNELS);
    let m = ok(&name, agree(b, "hand filters", &conv, &c, true)).remove(0);
    assert_eq!(pruned(&m), [4, 5, 6, 7], "{name}: filters");
    assert_eq!(m.compaction().rows, [0, 2], "{name}: surviving filters");
}

/// N:M pruning for many patterns on rank-1 to rank-4 layers, with magnitude
/// and random importance, with earlier masks, with a skipped layer: exactly
/// the reference and the naive oracle; without earlier masks every group
/// keeps exactly `n`, and every result satisfies the pattern.
pub fn check_prune_n_of_m<B: Backend>(b: &B) {
    for p in n_of_m_patterns() {
        let m = p.m;
        let layers = vec![
            HostLayer::new("v", &[3 * m], quantised_values(51, 3 * m, 2)),
            HostLayer::new("fc", &[9, 4 * m], uniform_values(52, 36 * m)),
            HostLayer::new("conv", &[4, 3, 2, m], sparse_values(53, 24 * m, 0.5)),
            HostLayer::new("wide", &[3, 67 * m], quantised_values(54, 201 * m, 1)),
        ];
        let with_masks: Vec<HostLayer> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                l.clone()
                    .with_mask(random_mask(55 + i as u64, &l.shape, 0.3))
            })
            .collect();
        let base = PruneConfig::new(0.0).granularity(Granularity::NofM(p));
        let configs = [
            base.clone(),
            base.clone().importance(Importance::Random { seed: 7 }),
            base.clone().skip("fc"),
            // The target fields do not apply to N:M.
            base.clone().sparsity(0.9).local(),
        ];
        for config in &configs {
            let ctx = format!("{}: {}:{}", b.name(), p.n, p.m);
            let masks = ok(&ctx, agree(b, "N:M", &layers, config, true));
            for (mask, l) in masks.iter().zip(&layers) {
                if config.guards.skip.contains(&l.name) {
                    assert_eq!(
                        mask,
                        &Mask::keep_all(l.shape.clone()),
                        "{ctx}: skipped layer changed"
                    );
                    continue;
                }
                assert!(
                    ok(&ctx, mask.satisfies(p)),
                    "{ctx}: {} violates the pattern",
                    l.name
                );
                assert_eq!(
                    mask.count_kept() as usize,
                    mask.len() / m * p.n,
                    "{ctx}: {} keeps n per group",
                    l.name
                );
            }
            let masks = ok(
                &ctx,
                agree(b, "N:M with earlier masks", &with_masks, config, true),
            );
            for (mask, l) in masks.iter().zip(&with_masks) {
                if config.guards.skip.contains(&l.name) {
                    assert_eq!(Some(mask), l.mask.as_ref(), "{ctx}: skipped layer changed");
                } else {
                    assert!(
                        ok(&ctx, mask.satisfies(p)),
                        "{ctx}: with earlier masks, {} violates the pattern",
                        l.name
                    );
                }
            }
        }
    }
}

/// N:M masks written out by hand: 2:4 keeps the two largest magnitudes of
/// each group, all-equal groups keep their last two, signed zeros tie.
pub fn check_prune_n_of_m_hand_computed<B: Backend>(b: &B) {
    let layers = [HostLayer::new(
        "w",
        &[3, 4],
        vec![
            0.1, -0.5, 0.5, 0.2, // keeps 1 and 2
            1.0, 1.0, -1.0, 1.0, // all tie: prunes 4 and 5
            0.0, -0.0, 0.0, 1.0, // zeros tie: prunes 8 and 9
        ],
    )];
    let c = PruneConfig::new(0.0).granularity(Granularity::NofM(NofM::TWO_FOUR));
    let m = ok(&b.name(), agree(b, "hand 2:4", &layers, &c, true)).remove(0);
    assert_eq!(kept(&m), [1, 2, 6, 7, 10, 11], "{}: 2:4", b.name());
    // An earlier mask pruned 2 and 3: they count among the pruned two.
    let earlier = Mask::from_fn(shape(&[3, 4]), |i| i != 2 && i != 3);
    let layers = [layers[0].clone().with_mask(earlier)];
    let m = ok(
        &b.name(),
        agree(b, "hand 2:4 with earlier mask", &layers, &c, true),
    )
    .remove(0);
    assert_eq!(
        kept(&m),
        [0, 1, 6, 7, 10, 11],
        "{}: 2:4 with earlier mask",
        b.name()
    );
}

/// Random importance gives the reference's masks for unstructured, grouped
/// and N:M pruning; the masks are those of the host-computed random scores
/// (the oracle); different seeds give different masks.
pub fn check_prune_random_importance<B: Backend>(b: &B) {
    let layers = vec![
        HostLayer::new("conv", &[8, 3, 3, 4], uniform_values(75, 288)),
        HostLayer::new("fc", &[10, 32], uniform_values(76, 320)),
        HostLayer::new("odd", &[5, 12], uniform_values(77, 60)),
    ];
    for seed in [0u64, 1, 0xFFFF_FFFF_0000_0000] {
        for granularity in [
            Granularity::Unstructured,
            Granularity::Groups(Grouping::Rows),
            Granularity::Groups(Grouping::Blocks { rows: 2, cols: 3 }),
            Granularity::NofM(NofM::TWO_FOUR),
        ] {
            for s in [0.3, 0.6] {
                let c = PruneConfig::new(s)
                    .granularity(granularity)
                    .importance(Importance::Random { seed });
                ok("", agree(b, "random importance", &layers, &c, true));
                ok(
                    "",
                    agree(
                        b,
                        "random importance, local",
                        &layers,
                        &c.clone().local(),
                        true,
                    ),
                );
            }
        }
    }
    let c = |seed| PruneConfig::new(0.5).importance(Importance::Random { seed });
    let a = ok("", prune_on(b, &layers, &c(1)));
    let z = ok("", prune_on(b, &layers, &c(2)));
    assert_ne!(
        a,
        z,
        "{}: seeds 1 and 2 gave the same random mask",
        b.name()
    );
}

/// Skip, minimum density and never-empty guards: skipped layers keep their
/// mask and do not count; every layer keeps `ceil(d * n)`; a layer of zeros
/// saturates at one weight under global pruning and the rest of the target
/// comes from the other layers.
pub fn check_prune_guards<B: Backend>(b: &B) {
    let name = b.name();
    let layers = vec![
        HostLayer::new("zeros", &[40], vec![0.0; 40]),
        HostLayer::new(
            "small",
            &[8, 8],
            uniform_values(61, 64).iter().map(|x| x * 0.01).collect(),
        ),
        HostLayer::new("large", &[100], uniform_values(62, 100)),
    ];
    let n = 204u64;
    for s in [0.2, 0.3, 0.5, 0.8, 0.95] {
        let masks = ok(
            &name,
            agree(b, "never empty", &layers, &PruneConfig::new(s), true),
        );
        let total: u64 = masks.iter().map(|m| m.count_pruned()).sum();
        assert_eq!(total, (s * n as f64).round() as u64, "{name}: count at {s}");
        assert!(
            masks.iter().all(|m| m.count_kept() >= 1),
            "{name}: a layer emptied at {s}"
        );
        if s >= 0.2 {
            assert_eq!(
                masks[0].count_kept(),
                1,
                "{name}: the zero layer saturates at one weight at {s}"
            );
        }
        for d in [0.1, 0.25, 0.5] {
            let c = PruneConfig::new(s).min_density(d).allow_empty(true);
            let Ok(masks) = agree(b, "min density", &layers, &c, true) else {
                continue;
            };
            for (m, l) in masks.iter().zip(&layers) {
                let floor = (d * l.numel() as f64).ceil() as u64;
                assert!(
                    m.count_kept() >= floor,
                    "{name}: {} keeps {} < {floor} at {s}, {d}",
                    l.name,
                    m.count_kept()
                );
            }
        }
        let c = PruneConfig::new(s).skip("large");
        let masks = ok(&name, agree(b, "skip", &layers, &c, true));
        assert_eq!(
            masks[2],
            Mask::keep_all(layers[2].shape.clone()),
            "{name}: skipped layer pruned"
        );
        let total: u64 = masks.iter().map(|m| m.count_pruned()).sum();
        assert_eq!(
            total,
            (s * 104.0f64).round() as u64,
            "{name}: skipped layers do not count"
        );
    }
    // 0.1 * 10 is 1 weight kept, not 2: float noise must not round the floor up.
    let ten = [HostLayer::new("ten", &[10], uniform_values(63, 10))];
    let masks = ok(
        &name,
        agree(
            b,
            "min density 0.1 of 10",
            &ten,
            &PruneConfig::new(0.9).min_density(0.1),
            true,
        ),
    );
    assert_eq!(masks[0].count_kept(), 1, "{name}: min density 0.1 of 10");
}

fn with_nan(mut layers: Vec<HostLayer>, at: &[(usize, usize)]) -> Vec<HostLayer> {
    for &(l, i) in at {
        layers[l].data[i] = if i % 2 == 0 { f32::NAN } else { -f32::NAN };
    }
    layers
}

/// NaN scores: an error naming the first layer and its NaN count under the
/// default policy (unstructured, grouped and N:M, global and local); pruned
/// first under `Lowest`, kept under `Highest`; ignored in skipped layers and
/// where an earlier mask already pruned them; infinities order normally.
pub fn check_prune_nan_policies<B: Backend>(b: &B) {
    let name = b.name();
    let base = vec![
        HostLayer::new("a", &[4, 8], uniform_values(71, 32)),
        HostLayer::new("b", &[2, 3, 4], uniform_values(72, 24)),
        HostLayer::new("c", &[16], uniform_values(73, 16)),
    ];
    let layers = with_nan(base.clone(), &[(1, 3), (1, 17), (2, 5)]);
    let nan_b = Error::NanScores {
        layer: "b".into(),
        count: 2,
    };
    for config in [
        PruneConfig::new(0.5),
        PruneConfig::new(0.5).local(),
        PruneConfig::new(0.0),
    ] {
        let got = agree(b, "NaN error", &layers, &config, true);
        assert_eq!(got.err(), Some(nan_b.clone()), "{name}: {config:?}");
    }
    let nm = PruneConfig::new(0.0).granularity(Granularity::NofM(NofM::TWO_FOUR));
    assert_eq!(
        agree(b, "NaN N:M", &layers, &nm, true).err(),
        Some(nan_b.clone()),
        "{name}: N:M"
    );
    let rows = PruneConfig::new(0.5).granularity(Granularity::NEURONS);
    let got = agree(b, "NaN rows", &layers, &rows, true).err();
    // Elements 3 and 17 of b lie in rows 0 and 1 of its [2, 12] view.
    assert_eq!(got, Some(nan_b.clone()), "{name}: rows");
    for policy in [NanPolicy::Lowest, NanPolicy::Highest] {
        for config in [
            PruneConfig::new(0.5).nan_policy(policy),
            PruneConfig::new(0.5).local().nan_policy(policy),
            nm.clone().nan_policy(policy),
            rows.clone().nan_policy(policy),
            PruneConfig::new(0.97).allow_empty(true).nan_policy(policy),
        ] {
            let masks = ok(&name, agree(b, "NaN policy", &layers, &config, true));
            if config.granularity == Granularity::Unstructured {
                let nan_kept = [(1, 3), (1, 17), (2, 5)]
                    .iter()
                    .filter(|&&(l, i)| masks[l].get(i))
                    .count() as u64;
                let all_kept: u64 = masks.iter().map(|m| m.count_kept()).sum();
                match policy {
                    NanPolicy::Lowest => {
                        assert_eq!(nan_kept, 0, "{name}: Lowest keeps a NaN with {config:?}")
                    }
                    _ => assert_eq!(
                        nan_kept,
                        all_kept.min(3),
                        "{name}: Highest prunes a NaN with {config:?}"
                    ),
                }
            }
        }
    }
    // NaN only in a skipped layer, or only where an earlier mask pruned: fine.
    ok(
        &name,
        agree(
            b,
            "NaN in a skipped layer",
            &layers,
            &PruneConfig::new(0.5).skip("b").skip("c"),
            true,
        ),
    );
    let mut masked = layers.clone();
    for (l, i) in [(1usize, 3usize), (1, 17), (2, 5)] {
        let mut m = masked[l]
            .mask
            .clone()
            .unwrap_or_else(|| Mask::keep_all(masked[l].shape.clone()));
        m.set(i, false);
        masked[l].mask = Some(m);
    }
    ok(
        &name,
        agree(
            b,
            "NaN already pruned",
            &masked,
            &PruneConfig::new(0.5),
            true,
        ),
    );
    // Infinities are ordinary scores: +inf kept last, -inf is magnitude inf.
    let inf = [HostLayer::new(
        "inf",
        &[4],
        vec![f32::INFINITY, 1.0, f32::NEG_INFINITY, 2.0],
    )];
    let m = ok(
        &name,
        agree(
            b,
            "infinities",
            &inf,
            &PruneConfig::new(0.75).allow_empty(true),
            true,
        ),
    )
    .remove(0);
    assert_eq!(
        kept(&m),
        [2],
        "{name}: of two infinite magnitudes the lower index goes first"
    );
}

/// Earlier masks: the result is a subset of them, earlier-pruned weights
/// count towards the target, and the total is exact, for every granularity
/// and scope.
pub fn check_prune_survivors<B: Backend>(b: &B) {
    let (_, layers) = layer_sets().remove(3);
    for fraction in [0.1f32, 0.4] {
        let earlier: Vec<HostLayer> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                l.clone()
                    .with_mask(random_mask(80 + i as u64, &l.shape, fraction))
            })
            .collect();
        let n: u64 = layers.iter().map(|l| l.numel() as u64).sum();
        for s in [0.0, 0.3, 0.5, 0.9] {
            let masks = agree(
                b,
                "earlier masks",
                &earlier,
                &PruneConfig::new(s).allow_empty(true),
                true,
            );
            if let Ok(masks) = masks {
                let total: u64 = masks.iter().map(|m| m.count_pruned()).sum();
                assert_eq!(
                    total,
                    (s * n as f64).round() as u64,
                    "{}: exact with earlier masks at {s}",
                    b.name()
                );
            }
            agree(
                b,
                "earlier masks, local",
                &earlier,
                &PruneConfig::new(s).local().allow_empty(true),
                true,
            )
            .ok();
            let rows = PruneConfig::new(s)
                .granularity(Granularity::NEURONS)
                .allow_empty(true);
            agree(b, "earlier masks, rows", &earlier, &rows, true).ok();
        }
    }
}

fn schedules() -> [Schedule; 6] {
    [
        Schedule::OneShot { target: 0.8 },
        Schedule::FixedRate {
            rate: 0.2,
            target: 0.9,
        },
        Schedule::FixedRate {
            rate: 0.5,
            target: 1.0,
        },
        Schedule::Geometric {
            target: 0.95,
            rounds: 4,
        },
        Schedule::Cubic {
            initial: 0.0,
            target: 0.9,
            steps: 5,
        },
        Schedule::Cubic {
            initial: 0.3,
            target: 0.7,
            steps: 3,
        },
    ]
}

/// Iterative pruning driven round by round by every schedule, each round
/// fed the previous masks and new weights (as after retraining, so earlier
/// pruned weights may now be large): the reference's masks every round, each
/// a subset of the last, the exact count at the end.
pub fn check_prune_iterative<B: Backend>(b: &B) {
    let (_, base) = layer_sets().remove(1);
    let n: u64 = base.iter().map(|l| l.numel() as u64).sum();
    for schedule in schedules() {
        for scope in [
            PruneConfig::new(0.0).allow_empty(true),
            PruneConfig::new(0.0).local().allow_empty(true),
        ] {
            let mut layers = base.clone();
            let targets = ok("", schedule.targets());
            for (round, &t) in targets.iter().enumerate() {
                for (i, l) in layers.iter_mut().enumerate() {
                    l.data = quantised_values(1000 * round as u64 + i as u64, l.numel(), 4);
                }
                let ctx = format!("{}: {schedule:?} round to {t}", b.name());
                let masks = ok(
                    &ctx,
                    agree(b, "iterative", &layers, &scope.clone().sparsity(t), true),
                );
                for (l, m) in layers.iter_mut().zip(masks) {
                    l.mask = Some(m);
                }
            }
            let target = *targets.last().expect("a round");
            let total: u64 = layers
                .iter()
                .map(|l| l.mask.as_ref().map_or(0, |m| m.count_pruned()))
                .sum();
            if scope.scope == prunus_core::Scope::Global {
                assert_eq!(
                    total,
                    (target * n as f64).round() as u64,
                    "{}: {schedule:?} final count",
                    b.name()
                );
            }
        }
    }
}

/// Errors: every invalid request fails with the specific variant (and the
/// same fields as the reference), never a panic and never a mask.
pub fn check_prune_errors<B: Backend>(b: &B) {
    let name = b.name();
    let two = || {
        vec![
            HostLayer::new("a", &[4, 4], uniform_values(91, 16)),
            HostLayer::new("b", &[8], uniform_values(92, 8)),
        ]
    };
    let half = Mask::from_fn(shape(&[4, 4]), |i| i % 2 == 0);
    let nm = |n, m| PruneConfig::new(0.0).granularity(Granularity::NofM(NofM { n, m }));
    type Expect = fn(&Error) -> bool;
    let cases: Vec<(&str, Vec<HostLayer>, PruneConfig, Expect)> = vec![
        (
            "negative sparsity",
            two(),
            PruneConfig::new(-0.1),
            |e| matches!(e, Error::SparsityOutOfRange { value } if *value == -0.1),
        ),
        (
            "sparsity above 1",
            two(),
            PruneConfig::new(1.0 + 1e-9),
            |e| matches!(e, Error::SparsityOutOfRange { .. }),
        ),
        (
            "NaN sparsity",
            two(),
            PruneConfig::new(f64::NAN),
            |e| matches!(e, Error::SparsityOutOfRange { value } if value.is_nan()),
        ),
        (
            "infinite sparsity",
            two(),
            PruneConfig::new(f64::INFINITY),
            |e| matches!(e, Error::SparsityOutOfRange { .. }),
        ),
        (
            "NaN sparsity, local",
            two(),
            PruneConfig::new(f64::NAN).local(),
            |e| matches!(e, Error::SparsityOutOfRange { .. }),
        ),
        (
            "density above 1",
            two(),
            PruneConfig::new(0.5).min_density(1.5),
            |e| matches!(e, Error::FractionOutOfRange { .. }),
        ),
        (
            "NaN density",
            two(),
            PruneConfig::new(0.5).min_density(f64::NAN),
            |e| matches!(e, Error::FractionOutOfRange { .. }),
        ),
        (
            "NaN weights",
            with_nan(two(), &[(1, 0), (1, 7), (1, 4)]),
            PruneConfig::new(0.5),
            |e| matches!(e, Error::NanScores { layer, count: 3 } if layer == "b"),
        ),
        (
            "empty tensor",
            vec![
                HostLayer::new("a", &[4], vec![1.0; 4]),
                HostLayer::new("e", &[0], vec![]),
            ],
            PruneConfig::new(0.5),
            |e| matches!(e, Error::EmptyTensor { layer } if layer == "e"),
        ),
        (
            "empty conv tensor",
            vec![HostLayer::new("e", &[3, 0, 3, 3], vec![])],
            PruneConfig::new(0.5).local(),
            |e| matches!(e, Error::EmptyTensor { layer } if layer == "e"),
        ),
        (
            "empty tensor, N:M",
            vec![HostLayer::new("e", &[0, 4], vec![])],
            nm(2, 4),
            |e| matches!(e, Error::EmptyTensor { .. }),
        ),
        (
            "earlier mask of the wrong shape",
            vec![two()[0].clone().with_mask(Mask::keep_all(shape(&[16])))],
            PruneConfig::new(0.5),
            |e| matches!(e, Error::ShapeMismatch { .. }),
        ),
        (
            "earlier mask of the wrong shape, rows",
            vec![two()[0].clone().with_mask(Mask::keep_all(shape(&[2, 8])))],
            PruneConfig::new(0.5).granularity(Granularity::NEURONS),
            |e| matches!(e, Error::ShapeMismatch { .. }),
        ),
        (
            "earlier mask of the wrong shape, N:M",
            vec![two()[0].clone().with_mask(Mask::keep_all(shape(&[16])))],
            nm(2, 4),
            |e| matches!(e, Error::ShapeMismatch { .. }),
        ),
        (
            "duplicate names",
            vec![two()[0].clone(), HostLayer::new("a", &[8], vec![1.0; 8])],
            PruneConfig::new(0.5),
            |e| matches!(e, Error::DuplicateLayer { name } if name == "a"),
        ),
        (
            "unknown skip",
            two(),
            PruneConfig::new(0.5).skip("nope"),
            |e| matches!(e, Error::UnknownLayer { name } if name == "nope"),
        ),
        (
            "all skipped",
            two(),
            PruneConfig::new(0.5).skip("a").skip("b"),
            |e| matches!(e, Error::AllLayersSkipped),
        ),
        (
            "all skipped, N:M",
            two(),
            nm(2, 4).skip("a").skip("b"),
            |e| matches!(e, Error::AllLayersSkipped),
        ),
        ("no layers", vec![], PruneConfig::new(0.5), |e| {
            matches!(e, Error::NoLayers)
        }),
        (
            "N:M group size does not divide the rows",
            vec![HostLayer::new("odd", &[4, 6], vec![1.0; 24])],
            nm(2, 4),
            |e| matches!(e, Error::PatternMismatch { layer, len: 6, m: 4 } if layer == "odd"),
        ),
        (
            "N:M on a conv whose rows (in * kh * kw) are 9 long",
            vec![HostLayer::new("conv", &[4, 1, 3, 3], vec![1.0; 36])],
            nm(2, 4),
            |e| matches!(e, Error::PatternMismatch { len: 9, .. }),
        ),
        ("N:M with n = m", two(), nm(4, 4), |e| {
            matches!(e, Error::InvalidPattern { n: 4, m: 4 })
        }),
        ("N:M with n = 0", two(), nm(0, 4), |e| {
            matches!(e, Error::InvalidPattern { .. })
        }),
        (
            "zero-width block",
            two(),
            PruneConfig::new(0.5)
                .granularity(Granularity::Groups(Grouping::Blocks { rows: 2, cols: 0 })),
            |e| matches!(e, Error::InvalidBlock { rows: 2, cols: 0 }),
        ),
        (
            "local target empties a layer",
            two(),
            PruneConfig::new(1.0).local(),
            |e| matches!(e, Error::GuardsExceeded { layer, requested: 16, allowed: 15 } if layer == "a"),
        ),
        (
            "global target beyond the density floor",
            two(),
            PruneConfig::new(0.8).min_density(0.5),
            |e| matches!(e, Error::GuardsExceeded { layer, requested: 19, allowed: 12 } if layer == "(global)"),
        ),
        (
            "rows beyond the floor",
            two(),
            PruneConfig::new(1.0)
                .granularity(Granularity::NEURONS)
                .local(),
            |e| matches!(e, Error::GuardsExceeded { .. }),
        ),
        (
            "local target below the earlier mask",
            vec![two()[0].clone().with_mask(half.clone())],
            PruneConfig::new(0.3).local(),
            |e| matches!(e, Error::TargetBelowPrevious { layer, pruned: 8, target: 5 } if layer == "a"),
        ),
        (
            "global target below the earlier masks",
            vec![two()[0].clone().with_mask(half.clone()), two()[1].clone()],
            PruneConfig::new(0.25),
            |e| matches!(e, Error::TargetBelowPrevious { layer, pruned: 8, target: 6 } if layer == "(global)"),
        ),
        (
            "budget without a layer",
            two(),
            PruneConfig::new(0.0).per_layer(vec![("a".into(), 0.5)]),
            |e| matches!(e, Error::MissingBudget { layer } if layer == "b"),
        ),
        (
            "budget for an unknown layer",
            two(),
            PruneConfig::new(0.0).per_layer(vec![
                ("a".into(), 0.5),
                ("b".into(), 0.5),
                ("x".into(), 0.5),
            ]),
            |e| matches!(e, Error::UnknownLayer { name } if name == "x"),
        ),
        (
            "budget out of range",
            two(),
            PruneConfig::new(0.0).per_layer(vec![("a".into(), 0.5), ("b".into(), 2.0)]),
            |e| matches!(e, Error::SparsityOutOfRange { value } if *value == 2.0),
        ),
    ];
    for (what, layers, config, expect) in cases {
        let ctx = format!("{name}: {what}");
        let got = prune_on(b, &layers, &config);
        let want = prune_on(&REF, &layers, &config);
        match (&got, &want) {
            (Err(g), Err(w)) => {
                assert!(expect(g), "{ctx}: unexpected error {g:?}");
                // Display covers NaN fields too (NaN != NaN).
                assert_eq!(
                    g.to_string(),
                    w.to_string(),
                    "{ctx}: differs from the reference"
                );
            }
            _ => panic!("{ctx}: expected an error, got {got:?} (reference {want:?})"),
        }
    }
}

/// [`apply`] zeroes exactly the pruned weights of each tensor and fails when
/// the numbers of tensors and masks differ.
pub fn check_apply<B: Backend>(b: &B) {
    let name = b.name();
    let (_, layers) = layer_sets().remove(3);
    let masks = ok(&name, prune_on(b, &layers, &PruneConfig::new(0.6)));
    let mut tensors: Vec<B::Tensor> = layers
        .iter()
        .map(|l| ok(&name, b.upload(&l.data, &l.shape)))
        .collect();
    {
        let mut refs: Vec<&mut B::Tensor> = tensors.iter_mut().collect();
        ok(&name, apply(b, &mut refs, &masks));
    }
    for ((t, l), m) in tensors.iter().zip(&layers).zip(&masks) {
        let got = ok(&name, b.download(t));
        assert_eq!(got.len(), l.numel(), "{name}: apply changed the length");
        for (i, (&g, &w)) in got.iter().zip(&l.data).enumerate() {
            let want = if m.get(i) { w } else { 0.0 };
            assert!(same_bits(g, want), "{name}: apply, {} element {i}", l.name);
        }
    }
    let mut refs: Vec<&mut B::Tensor> = tensors.iter_mut().collect();
    let got = apply(b, &mut refs, &masks[..1]);
    assert!(
        matches!(got, Err(Error::LengthMismatch { .. })),
        "{name}: apply with too few masks gave {got:?}"
    );
    let wrong: Vec<Mask> = layers.iter().map(|_| Mask::keep_all(shape(&[2]))).collect();
    let mut refs: Vec<&mut B::Tensor> = tensors.iter_mut().collect();
    let got = apply(b, &mut refs, &wrong);
    assert!(
        matches!(got, Err(Error::ShapeMismatch { .. })),
        "{name}: apply with masks of the wrong shape gave {got:?}"
    );
}

/// The layer-borrowing API works on backend tensors directly: a
/// [`Layer`]-based call equals the host-layer helper's result.
pub fn check_layer_api<B: Backend>(b: &B) {
    let name = b.name();
    let w = ok(&name, b.upload(&[0.5, -0.1, 0.3, 0.05], &shape(&[2, 2])));
    let v = ok(&name, b.upload(&[-2.0, 0.2], &Shape::vector(2)));
    let layers = [Layer::new("fc1", &w), Layer::new("fc2", &v)];
    let masks = ok(&name, prune(b, &layers, &PruneConfig::new(0.5)));
    assert_eq!(kept(&masks[0]), [0, 2], "{name}: fc1");
    assert_eq!(kept(&masks[1]), [0], "{name}: fc2");
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: f32 = f32::from_bits(0x0040_0000); // 2^-127, subnormal

    fn slack_check(flushes: bool, got: f32, operands: &[f32], want: f32) -> bool {
        let flushed = ftz(operands.iter().map(|&x| ftz(x)).product());
        let slack = [elementwise_slack(flushes, operands, want, flushed)];
        std::panic::catch_unwind(|| assert_bits_eq_within("t", &[got], &[want], &slack)).is_ok()
    }

    #[test]
    fn flushed_elementwise_results_pass_only_on_a_flushing_backend() {
        // 2^-126 * 0.5 = 2^-127 is subnormal: a flushing device returns 0.
        let want = f32::MIN_POSITIVE * 0.5;
        assert_eq!(want, TINY);
        assert!(slack_check(true, 0.0, &[f32::MIN_POSITIVE, 0.5], want));
        assert!(!slack_check(false, 0.0, &[f32::MIN_POSITIVE, 0.5], want));
        // A subnormal operand flushed before an add moves the sum by it.
        let want = 1e-37 + TINY;
        assert!(slack_check(true, 1e-37, &[1e-37, TINY], want));
    }

    #[test]
    fn normal_values_stay_bit_exact_on_a_flushing_backend() {
        let want = 1.5f32 * 3.0;
        let off_by_an_ulp = f32::from_bits(want.to_bits() + 1);
        assert!(!slack_check(true, off_by_an_ulp, &[1.5, 3.0], want));
        // Even a result just above the subnormal range keeps no slack.
        let want = f32::MIN_POSITIVE * 2.0;
        assert!(!slack_check(true, 0.0, &[f32::MIN_POSITIVE, 2.0], want));
        // NaN and infinities are never within a slack.
        assert!(!slack_check(true, f32::INFINITY, &[TINY, 1.0], TINY));
    }

    #[test]
    fn a_flushed_operand_times_infinity_may_be_nan() {
        // The H200 returned NaN for Scale(inf) of a subnormal: 0 * inf.
        let want = TINY * f32::INFINITY;
        assert_eq!(want, f32::INFINITY);
        assert!(slack_check(true, f32::NAN, &[TINY, f32::INFINITY], want));
        assert!(!slack_check(false, f32::NAN, &[TINY, f32::INFINITY], want));
        // A normal operand times infinity must stay infinite.
        assert!(!slack_check(
            true,
            f32::NAN,
            &[1.0, f32::INFINITY],
            f32::INFINITY
        ));
    }

    #[test]
    fn reductions_get_slack_only_where_a_subnormal_takes_part() {
        assert_eq!(
            reduction_slack(true, Reduction::Sum, &[1.0, 2.0, -3.5]),
            None
        );
        assert_eq!(reduction_slack(false, Reduction::Sum, &[TINY, 1.0]), None);
        // A square that underflows into the subnormal range.
        let s = reduction_slack(true, Reduction::SumSquares, &[1e-20, 1.0]).expect("touched");
        assert!(s.within > 0.0 && s.within < 1e-6, "slack {s:?}");
        assert_eq!(s.flushed, 1.0);
        // A partial sum that cancels into the subnormal range.
        let a = f32::MIN_POSITIVE * 1.5;
        assert!(reduction_slack(true, Reduction::Sum, &[a, -f32::MIN_POSITIVE]).is_some());
        // The flushed sum of a subnormal and its negation is +0.
        let s = reduction_slack(true, Reduction::Sum, &[TINY, -TINY]).expect("touched");
        assert_eq!(s.flushed.to_bits(), 0);
    }
}

// ---------------------------------------------------------------------------
// Running the suite
// ---------------------------------------------------------------------------

/// One check that failed on a backend, with the check's own message (which
/// names the case and the first difference).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckFailure {
    /// The backend's [`Backend::name`].
    pub backend: String,
    /// The check, e.g. `check_range_masks`.
    pub check: &'static str,
    /// What the check found.
    pub message: String,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed on {}: {}",
            self.check, self.backend, self.message
        )
    }
}

impl std::error::Error for CheckFailure {}

/// Every check of the suite that failed on a backend, out of how many ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConformanceFailures {
    /// The checks that ran.
    pub checks: usize,
    /// The ones that failed, in the suite's order.
    pub failures: Vec<CheckFailure>,
}

impl ConformanceFailures {
    /// The failure of `check`, if it failed.
    pub fn failure(&self, check: &str) -> Option<&CheckFailure> {
        self.failures.iter().find(|f| f.check == check)
    }
}

impl fmt::Display for ConformanceFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} conformance checks failed",
            self.failures.len(),
            self.checks
        )?;
        for failure in &self.failures {
            write!(f, "\n- {failure}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConformanceFailures {}

/// A check of the suite and its name.
pub type Check<B> = (&'static str, fn(&B));

/// Every check of the suite, by name, for a backend type: what
/// [`crate::conformance_tests!`] instantiates and [`run_conformance`] runs.
pub fn checks<B: Backend>() -> Vec<Check<B>> {
    crate::__with_backend_checks!(@list B)
}

/// Runs `check` on `b`, turning its panic into a [`CheckFailure`] that
/// carries the panic message. The panic is still reported by the panic hook
/// (on stderr, or captured by the test harness).
pub fn run_check<B: Backend>(b: &B, name: &'static str, check: fn(&B)) -> Result<(), CheckFailure> {
    catch_unwind(AssertUnwindSafe(|| check(b))).map_err(|payload| {
        let message = if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else {
            "the check panicked with a payload that is not a message".to_string()
        };
        CheckFailure {
            backend: b.name(),
            check: name,
            message,
        }
    })
}

/// Runs every check of the suite on `b`, one after another, and returns the
/// number that ran, or every failure with its message. The whole suite takes
/// seconds on a CPU in a release build; [`crate::conformance_tests!`] runs
/// the checks as parallel tests instead.
pub fn run_conformance<B: Backend>(b: &B) -> Result<usize, ConformanceFailures> {
    let all = checks::<B>();
    let failures: Vec<CheckFailure> = all
        .iter()
        .filter_map(|&(name, check)| run_check(b, name, check).err())
        .collect();
    if failures.is_empty() {
        Ok(all.len())
    } else {
        Err(ConformanceFailures {
            checks: all.len(),
            failures,
        })
    }
}

/// The names of the `pub fn check_*` functions declared in this module, read
/// from its source, in order: [`crate::conformance_tests!`] compares its list
/// with them, so a new check cannot go uninstantiated.
#[doc(hidden)]
pub fn declared_checks() -> Vec<&'static str> {
    crate::declared_in(include_str!("conformance.rs"))
}
