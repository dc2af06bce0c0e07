//! The CPU backend against the scalar reference backend, op by op, on data
//! built to break things: heavy ties, zeros of both signs, infinities, NaNs,
//! survivor masks, sizes that are not multiples of 64, single elements, and
//! inputs larger than one work chunk. Every sequential and parallel setting
//! must give the reference's answer (dense linear algebra: up to rounding,
//! and then the same bits on every setting).

use prunus_core::contract::histogram::{KeyWindow, TensorCut};
use prunus_core::contract::key::{KEY_NAN_HIGHEST, KEY_NAN_LOWEST, KEY_PRUNED, order_key};
use prunus_core::contract::random::uniform;
use prunus_core::selection::radix::{Cut, RadixSelect};
use prunus_core::{
    Backend, BinaryOp, Error, Grouping, HasShape, KeyRule, Layer, Mask, NanPolicy, NofM,
    PruneConfig, Reduction, ReferenceBackend, ScoreView, Shape, Transform, Transpose, UnaryOp,
};
use prunus_cpu::{CpuBackend, CpuTensor, Par, SimdLevel};

const REF: ReferenceBackend = ReferenceBackend;

fn backends() -> Vec<CpuBackend<'static>> {
    [
        Par::Seq,
        Par::Rayon(1),
        Par::Rayon(2),
        Par::Rayon(3),
        Par::Rayon(8),
    ]
    .into_iter()
    .map(|p| CpuBackend::new(p).expect("thread pool"))
    .collect()
}

/// Values mostly quantised to a few levels, a third of them zero (both
/// signs), with infinities and (when `nan`) NaNs of both signs sprinkled in,
/// and a sixth spread out (so keys differ in their low bits too).
fn tied(n: usize, seed: u64, nan: bool) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let u = uniform(seed, 0, i);
            let level = (uniform(seed, 1, i) * 7.0).floor() - 3.0;
            match u {
                u if u < 0.17 => 0.0,
                u if u < 0.33 => -0.0,
                u if u < 0.34 => f32::INFINITY,
                u if u < 0.35 => f32::NEG_INFINITY,
                u if nan && u < 0.37 => f32::NAN,
                u if nan && u < 0.38 => -f32::NAN,
                u if u < 0.55 => (uniform(seed, 2, i) - 0.5) * 3.0,
                _ => level * 0.25,
            }
        })
        .collect()
}

/// Finite values with few ties.
fn spread(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| uniform(seed, 2, i) * 2.0 - 1.0)
        .collect()
}

fn survivors(shape: &Shape, seed: u64) -> Mask {
    Mask::from_fn(shape.clone(), |i| uniform(seed, 3, i as u64) < 0.7)
}

fn shapes() -> Vec<Shape> {
    [
        &[1][..],
        &[63],
        &[64],
        &[65],
        &[3, 43],
        &[2, 3, 4],
        &[1000],
        &[],
        &[0],
        &[(2 << 18) + 77],
    ]
    .iter()
    .map(|d| Shape::new(d).unwrap())
    .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Reference and CPU copies of the same inputs.
struct Inputs {
    shapes: Vec<Shape>,
    data: Vec<Vec<f32>>,
    masks: Vec<Option<Mask>>,
}

impl Inputs {
    fn new(shapes: Vec<Shape>, nan: bool, with_masks: bool, seed: u64) -> Self {
        let data = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| tied(s.numel(), seed + i as u64, nan))
            .collect();
        let masks = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| (with_masks && i % 3 != 1).then(|| survivors(s, seed + 100 + i as u64)))
            .collect();
        Inputs {
            shapes,
            data,
            masks,
        }
    }

    fn reference(&self) -> Vec<prunus_core::HostTensor> {
        self.data
            .iter()
            .zip(&self.shapes)
            .map(|(d, s)| REF.upload(d, s).unwrap())
            .collect()
    }

    fn cpu<'a>(&'a self, b: &CpuBackend<'a>) -> Vec<CpuTensor<'a>> {
        self.data
            .iter()
            .zip(&self.shapes)
            .map(|(d, s)| b.borrow(d, s).unwrap())
            .collect()
    }
}

fn views<'a, B: Backend<Mask = Mask>>(
    tensors: &'a [B::Tensor],
    masks: &'a [Option<Mask>],
) -> Vec<ScoreView<'a, B>> {
    tensors
        .iter()
        .zip(masks)
        .map(|(t, m)| ScoreView::with_survivors(t, m.as_ref()))
        .collect()
}

fn rules() -> Vec<KeyRule> {
    let mut out = Vec::new();
    for transform in [Transform::Abs, Transform::Identity] {
        for nan in [NanPolicy::Error, NanPolicy::Lowest, NanPolicy::Highest] {
            out.push(KeyRule { transform, nan });
        }
    }
    out
}

/// Input sets: one of every shape; several small inputs whose ties
/// straddle them; a single element.
fn input_sets(nan: bool, with_masks: bool) -> Vec<Inputs> {
    vec![
        Inputs::new(shapes(), nan, with_masks, 10),
        Inputs::new(
            (0..7).map(|i| Shape::vector(1 + 37 * i)).collect(),
            nan,
            with_masks,
            20,
        ),
        Inputs::new(vec![Shape::vector(1)], nan, with_masks, 30),
    ]
}

/// Windows worth asking for: the fullest bins of a High histogram, and
/// edge windows.
fn windows(h: &prunus_core::contract::histogram::Histogram) -> Vec<KeyWindow> {
    let mut bins: Vec<usize> = (0..h.bins.len()).filter(|&b| h.bins[b] > 0).collect();
    bins.sort_by_key(|&b| std::cmp::Reverse(h.bins[b]));
    let mut w: Vec<KeyWindow> = bins
        .iter()
        .take(4)
        .map(|&b| KeyWindow::Low { high: b as u16 })
        .collect();
    for high in [0u16, 0x7F80, 0x8000, 0xBE80, 0xFF7F, 0xFF80, 0xFFC0, 0xFFFF] {
        w.push(KeyWindow::Low { high });
    }
    w.push(KeyWindow::High);
    w
}

#[test]
fn histograms_match() {
    for nan in [false, true] {
        for with_masks in [false, true] {
            for set in input_sets(nan, with_masks) {
                let rt = set.reference();
                let rv = views::<ReferenceBackend>(&rt, &set.masks);
                for rule in rules() {
                    let high = REF.histogram(&rv, rule, KeyWindow::High).unwrap();
                    for window in windows(&high) {
                        let want = REF.histogram(&rv, rule, window).unwrap();
                        for b in backends() {
                            let ct = set.cpu(&b);
                            let cv = views::<CpuBackend<'_>>(&ct, &set.masks);
                            let got = b.histogram(&cv, rule, window).unwrap();
                            assert_eq!(
                                got,
                                want,
                                "{} {rule:?} {window:?} masks {with_masks}",
                                b.name()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn histograms_with_a_range_match_their_windows() {
    for nan in [false, true] {
        for with_masks in [false, true] {
            for set in input_sets(nan, with_masks) {
                let rt = set.reference();
                let rv = views::<ReferenceBackend>(&rt, &set.masks);
                for rule in rules() {
                    let high = REF.histogram(&rv, rule, KeyWindow::High).unwrap();
                    let full: Vec<u16> = (0..high.bins.len())
                        .filter(|&b| high.bins[b] > 0)
                        .map(|b| b as u16)
                        .collect();
                    let first = full[0];
                    let last = *full.last().unwrap();
                    // The first and last buckets alone, and runs of several.
                    let mut ranges = vec![(first, first), (last, last)];
                    ranges.push((first, first.saturating_add(3).min(last)));
                    ranges.push((last.saturating_sub(40).max(first), last));
                    for (lo, hi) in ranges {
                        let mut want = Vec::new();
                        for b in lo..=hi {
                            let w = REF.histogram(&rv, rule, KeyWindow::Low { high: b });
                            want.extend(w.unwrap().bins);
                        }
                        for b in backends() {
                            let ct = set.cpu(&b);
                            let cv = views::<CpuBackend<'_>>(&ct, &set.masks);
                            let (h, fine) = b.histogram_with_range(&cv, rule, (lo, hi)).unwrap();
                            assert_eq!(h, high, "{} {rule:?} high", b.name());
                            assert!(fine == want, "{} {rule:?} {lo:#x}..={hi:#x}", b.name());
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn histograms_with_a_range_refuse_reversed_and_too_wide_ranges() {
    let b = CpuBackend::new(Par::Seq).unwrap();
    let data = [1.0f32, 2.0];
    let t = b.borrow(&data, &Shape::vector(2)).unwrap();
    let v = [ScoreView::new(&t)];
    assert!(b.histogram_with_range(&v, KeyRule::ABS, (5, 4)).is_err());
    assert!(
        b.histogram_with_range(&v, KeyRule::ABS, (0, 0xFFFF))
            .is_err()
    );
    assert!(b.histogram_with_range(&v, KeyRule::ABS, (0, 63)).is_ok());
}

#[test]
fn count_keys_match() {
    for set in input_sets(true, true) {
        let rt = set.reference();
        let rv = views::<ReferenceBackend>(&rt, &set.masks);
        for rule in rules() {
            for key in [
                KEY_PRUNED,
                KEY_NAN_LOWEST,
                KEY_NAN_HIGHEST,
                order_key(0.0),
                order_key(0.25),
                order_key(-0.5),
                order_key(f32::INFINITY),
                order_key(0.3),
            ] {
                let want = REF.count_keys(&rv, rule, key).unwrap();
                for b in backends() {
                    let ct = set.cpu(&b);
                    let cv = views::<CpuBackend<'_>>(&ct, &set.masks);
                    assert_eq!(
                        b.count_keys(&cv, rule, key).unwrap(),
                        want,
                        "{} {rule:?} {key:#x}",
                        b.name()
                    );
                }
            }
        }
    }
}

/// The cut that prunes `k` of the inputs as one sequence, found by a radix
/// selection over the reference's histograms.
fn reference_cut(rv: &[ScoreView<'_, ReferenceBackend>], rule: KeyRule, k: u64) -> Cut {
    let n: u64 = rv.iter().map(|v| v.scores.shape().numel() as u64).sum();
    let mut sel = RadixSelect::new(n, k).unwrap();
    while let Some(w) = sel.window() {
        sel.absorb(&REF.histogram(rv, rule, w).unwrap()).unwrap();
    }
    sel.cut().unwrap_or(Cut::NONE)
}

/// Tie budgets for inputs holding `equal[t]` elements at the cut, as one
/// sequence: fixed ones (some past chunk-sized counts), all but one, all,
/// more than all and `ALL`; with `boundaries`, also budgets that run out at
/// and just after each input boundary (so also across inputs with no tied
/// element) and in the middle of each input.
fn tie_budgets(equal: &[u64], boundaries: bool) -> Vec<u64> {
    let total: u64 = equal.iter().sum();
    let mut budgets = vec![
        0,
        1,
        40_000,
        100_000,
        total.saturating_sub(1),
        total,
        total + 1,
        TensorCut::ALL,
    ];
    if boundaries {
        let mut before = 0u64;
        for &e in equal {
            budgets.extend([before, before + 1, before + e / 2]);
            before += e;
        }
    }
    budgets.sort_unstable();
    budgets.dedup();
    budgets
}

#[test]
fn threshold_masks_match() {
    let backends = backends();
    for nan in [false, true] {
        for with_masks in [false, true] {
            for set in input_sets(nan, with_masks) {
                let rt = set.reference();
                let rv = views::<ReferenceBackend>(&rt, &set.masks);
                let n: u64 = set.shapes.iter().map(|s| s.numel() as u64).sum();
                for rule in rules() {
                    // Thresholds of real selections (partial ties, mostly),
                    // with the number of elements at their key.
                    let mut cuts: Vec<(TensorCut, u64)> = [0.0, 0.1, 0.35, 0.5, 0.77, 0.9, 1.0]
                        .iter()
                        .map(|s| {
                            let cut = reference_cut(&rv, rule, (s * n as f64).round() as u64);
                            (cut.threshold(), cut.tied)
                        })
                        .collect();
                    // Hand-made cuts: every tie mode, the budget running
                    // out anywhere in the sequence.
                    for key in [
                        order_key(0.0),
                        order_key(0.25),
                        order_key(-0.25),
                        KEY_NAN_HIGHEST,
                        KEY_PRUNED,
                    ] {
                        let equal: Vec<u64> = REF
                            .count_keys(&rv, rule, key)
                            .unwrap()
                            .iter()
                            .map(|c| c.equal)
                            .collect();
                        let tied = equal.iter().sum();
                        for ties in tie_budgets(&equal, key == order_key(0.0)) {
                            cuts.push((TensorCut { key, ties }, tied));
                        }
                    }
                    for &(cut, tied) in &cuts {
                        let want = REF.threshold_masks(&rv, rule, cut).unwrap();
                        assert_eq!(
                            want.ties.iter().sum::<u64>(),
                            cut.ties.min(tied),
                            "reference {rule:?} {cut:?}: tie counts add up"
                        );
                        for b in &backends {
                            let ct = set.cpu(b);
                            let cv = views::<CpuBackend<'_>>(&ct, &set.masks);
                            let got = b.threshold_masks(&cv, rule, cut).unwrap();
                            assert_eq!(got.masks, want.masks, "{} {rule:?} {cut:?}", b.name());
                            assert_eq!(
                                got.ties,
                                want.ties,
                                "{} {rule:?} {cut:?}: tie counts",
                                b.name()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn n_of_m_masks_match() {
    let cases = [
        (
            NofM::TWO_FOUR,
            vec![
                Shape::matrix(3, 8).unwrap(),
                Shape::vector(4),
                Shape::new(&[5, 2, 20]).unwrap(),
            ],
        ),
        (
            NofM::new(1, 3).unwrap(),
            vec![Shape::matrix(7, 27).unwrap(), Shape::vector(3)],
        ),
        (
            NofM::new(3, 8).unwrap(),
            vec![Shape::matrix(1, (1 << 18) + 64).unwrap()],
        ),
        (
            NofM::new(5, 40).unwrap(),
            vec![Shape::matrix(9, 80).unwrap()],
        ),
        (
            NofM::new(63, 65).unwrap(),
            vec![Shape::matrix(70, 65).unwrap()],
        ),
    ];
    for (pattern, shapes) in cases {
        for nan in [false, true] {
            for with_masks in [false, true] {
                let set = Inputs::new(shapes.clone(), nan, with_masks, 40);
                let rt = set.reference();
                let rv = views::<ReferenceBackend>(&rt, &set.masks);
                for rule in rules() {
                    let want = REF.n_of_m_masks(&rv, rule, pattern).unwrap();
                    for b in backends() {
                        let ct = set.cpu(&b);
                        let cv = views::<CpuBackend<'_>>(&ct, &set.masks);
                        let got = b.n_of_m_masks(&cv, rule, pattern).unwrap();
                        assert_eq!(got.masks, want.masks, "{} {rule:?} {pattern:?}", b.name());
                        assert_eq!(got.nan, want.nan);
                    }
                }
            }
        }
    }
}

#[test]
fn elementwise_and_random_match() {
    for s in shapes() {
        let x = tied(s.numel(), 50, true);
        let y = spread(s.numel(), 51);
        let (rx, ry) = (REF.upload(&x, &s).unwrap(), REF.upload(&y, &s).unwrap());
        for b in backends() {
            let (cx, cy) = (b.upload(&x, &s).unwrap(), b.borrow(&y, &s).unwrap());
            assert_eq!(
                bits(&b.download(&cx).unwrap()),
                bits(&REF.download(&rx).unwrap())
            );
            for op in [
                UnaryOp::Abs,
                UnaryOp::Square,
                UnaryOp::Neg,
                UnaryOp::Scale(0.3),
            ] {
                let want = REF.unary(op, &rx).unwrap();
                let got = b.unary(op, &cx).unwrap();
                assert_eq!(got.shape(), &s);
                assert_eq!(bits(got.data()), bits(want.data()), "{op:?}");
            }
            for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul] {
                let want = REF.binary(op, &rx, &ry).unwrap();
                let got = b.binary(op, &cx, &cy).unwrap();
                assert_eq!(bits(got.data()), bits(want.data()), "{op:?}");
            }
            for (seed, stream) in [(0, 0), (7, 3), (u64::MAX, u32::MAX)] {
                let want = REF.random_uniform(&s, seed, stream).unwrap();
                let got = b.random_uniform(&s, seed, stream).unwrap();
                assert_eq!(bits(got.data()), bits(want.data()));
            }
        }
    }
}

#[test]
fn group_reductions_match() {
    let shapes = [
        Shape::matrix(600, 3).unwrap(),
        Shape::matrix(3, 600).unwrap(),
        Shape::new(&[5, 4, 3, 3]).unwrap(),
        Shape::matrix(257, 130).unwrap(),
        Shape::vector(70),
        Shape::new(&[]).unwrap(),
        Shape::matrix(0, 5).unwrap(),
        Shape::matrix(4, 0).unwrap(),
    ];
    let groupings = [
        Grouping::Rows,
        Grouping::Columns,
        Grouping::Blocks { rows: 2, cols: 3 },
        Grouping::Blocks { rows: 1, cols: 1 },
        Grouping::Blocks {
            rows: 300,
            cols: 64,
        },
    ];
    for s in &shapes {
        for data in [spread(s.numel(), 60), tied(s.numel(), 61, true)] {
            let rx = REF.upload(&data, s).unwrap();
            for g in groupings {
                for r in [
                    Reduction::Sum,
                    Reduction::L1,
                    Reduction::SumSquares,
                    Reduction::MaxAbs,
                ] {
                    let want = REF.reduce_groups(&rx, g, r).unwrap();
                    for b in backends() {
                        let cx = b.borrow(&data, s).unwrap();
                        let got = b.reduce_groups(&cx, g, r).unwrap();
                        assert_eq!(got.shape(), want.shape());
                        assert_eq!(
                            bits(got.data()),
                            bits(want.data()),
                            "{s} {g:?} {r:?} {}",
                            b.name()
                        );
                    }
                }
            }
        }
    }
    let b = CpuBackend::new(Par::Rayon(2)).unwrap();
    let x = b.upload(&[1.0; 6], &Shape::matrix(2, 3).unwrap()).unwrap();
    let bad = Grouping::Blocks { rows: 0, cols: 2 };
    let rx = REF
        .upload(&[1.0; 6], &Shape::matrix(2, 3).unwrap())
        .unwrap();
    assert_eq!(
        b.reduce_groups(&x, bad, Reduction::Sum).unwrap_err(),
        REF.reduce_groups(&rx, bad, Reduction::Sum).unwrap_err()
    );
}

#[test]
fn apply_mask_owned_borrowed_and_written_through() {
    for s in shapes() {
        let data = tied(s.numel(), 70, true);
        let mask = survivors(&s, 71);
        let mut rx = REF.upload(&data, &s).unwrap();
        REF.apply_mask(&mut rx, &mask).unwrap();
        let want = bits(rx.data());
        for b in backends() {
            // Owned.
            let mut t = b.upload(&data, &s).unwrap();
            b.apply_mask(&mut t, &mask).unwrap();
            assert_eq!(bits(t.data()), want);
            // Read-only borrow: copied, the caller's data untouched.
            let mut t = b.borrow(&data, &s).unwrap();
            assert!(t.is_borrowed());
            b.apply_mask(&mut t, &mask).unwrap();
            assert!(!t.is_borrowed());
            assert_eq!(bits(t.data()), want);
            assert_eq!(bits(&data), bits(&tied(s.numel(), 70, true)));
            // Mutable borrow: written through.
            let mut buf = data.clone();
            let mut t = b.borrow_mut(&mut buf, &s).unwrap();
            b.apply_mask(&mut t, &mask).unwrap();
            assert!(t.is_borrowed());
            assert_eq!(bits(&t.clone().into_vec()), want);
            drop(t);
            assert_eq!(bits(&buf), want);
        }
    }
    let b = CpuBackend::new(Par::Seq).unwrap();
    let mut t = b.upload(&[1.0; 4], &Shape::vector(4)).unwrap();
    let mut r = REF.upload(&[1.0; 4], &Shape::vector(4)).unwrap();
    let m = Mask::keep_all(Shape::vector(5));
    assert_eq!(
        b.apply_mask(&mut t, &m).unwrap_err(),
        REF.apply_mask(&mut r, &m).unwrap_err()
    );
}

#[test]
fn borrow_checks_length_and_reads_in_place() {
    let b = CpuBackend::default();
    assert!(b.threads() >= 1);
    let data = [1.0f32, 2.0, 3.0];
    assert!(matches!(
        b.borrow(&data, &Shape::vector(4)),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        b.upload(&data, &Shape::vector(2)),
        Err(Error::LengthMismatch { .. })
    ));
    let t = b.borrow(&data, &Shape::vector(3)).unwrap();
    assert!(std::ptr::eq(t.data().as_ptr(), data.as_ptr()));
    assert_eq!(t.into_vec(), data);
    assert_eq!(
        CpuBackend::new(Par::Rayon(3)).unwrap().name(),
        "cpu(3 threads)"
    );
    assert_eq!(CpuBackend::new(Par::Rayon(1)).unwrap().threads(), 1);
    assert_eq!(CpuBackend::new(Par::Seq).unwrap().name(), "cpu(sequential)");
}

#[test]
fn read_pass_is_the_same_everywhere() {
    let data: Vec<Vec<f32>> = shapes().iter().map(|s| spread(s.numel(), 80)).collect();
    let want = data.iter().flatten().fold(0u32, |a, x| a ^ x.to_bits()) as u64;
    for b in backends() {
        let ts: Vec<CpuTensor<'_>> = data
            .iter()
            .zip(shapes())
            .map(|(d, s)| b.borrow(d, &s).unwrap())
            .collect();
        let refs: Vec<&CpuTensor<'_>> = ts.iter().collect();
        for level in SimdLevel::supported() {
            let at = b.clone().with_simd(level).unwrap();
            for prefetch in [false, true] {
                assert_eq!(at.read_pass(&refs, prefetch), want, "{level}");
            }
        }
    }
}

fn close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "element {i}: {g} vs {w}"
        );
    }
}

/// The same bits on every setting, close to the reference.
fn dense_case(f: impl Fn(&CpuBackend<'_>) -> Vec<f32>, want: &[f32], tol: f32) {
    let mut first: Option<Vec<u32>> = None;
    for b in backends() {
        let got = f(&b);
        close(&got, want, tol);
        match &first {
            None => first = Some(bits(&got)),
            Some(f) => assert_eq!(&bits(&got), f, "{}", b.name()),
        }
    }
}

#[test]
fn dense_linear_algebra() {
    let (m, k, n) = (37, 70, 19);
    let a = spread(m * k, 90);
    let at = spread(k * m, 91);
    let bm = spread(k * n, 92);
    let bt = spread(n * k, 93);
    let sa = Shape::matrix(m, k).unwrap();
    let sat = Shape::matrix(k, m).unwrap();
    let sb = Shape::matrix(k, n).unwrap();
    let sbt = Shape::matrix(n, k).unwrap();
    for (ad, sa, ta) in [(&a, &sa, Transpose::No), (&at, &sat, Transpose::Yes)] {
        for (bd, sb, tb) in [(&bm, &sb, Transpose::No), (&bt, &sbt, Transpose::Yes)] {
            let want = REF
                .gemm(
                    &REF.upload(ad, sa).unwrap(),
                    ta,
                    &REF.upload(bd, sb).unwrap(),
                    tb,
                )
                .unwrap();
            dense_case(
                |b| {
                    let r = b
                        .gemm(
                            &b.upload(ad, sa).unwrap(),
                            ta,
                            &b.upload(bd, sb).unwrap(),
                            tb,
                        )
                        .unwrap();
                    assert_eq!(r.shape(), want.shape());
                    r.into_vec()
                },
                want.data(),
                1e-5,
            );
        }
    }
    let x = spread(k, 94);
    let want = REF
        .gemv(
            &REF.upload(&a, &sa).unwrap(),
            &REF.upload(&x, &Shape::vector(k)).unwrap(),
        )
        .unwrap();
    dense_case(
        |b| {
            b.gemv(
                &b.upload(&a, &sa).unwrap(),
                &b.upload(&x, &Shape::vector(k)).unwrap(),
            )
            .unwrap()
            .into_vec()
        },
        want.data(),
        1e-5,
    );
    let (xv, yv) = (spread(m, 95), spread(k, 96));
    let mut ra = REF.upload(&a, &sa).unwrap();
    REF.rank1_update(
        &mut ra,
        -0.7,
        &REF.upload(&xv, &Shape::vector(m)).unwrap(),
        &REF.upload(&yv, &Shape::vector(k)).unwrap(),
    )
    .unwrap();
    dense_case(
        |b| {
            let mut buf = a.clone();
            let mut t = b.borrow_mut(&mut buf, &sa).unwrap();
            b.rank1_update(
                &mut t,
                -0.7,
                &b.upload(&xv, &Shape::vector(m)).unwrap(),
                &b.upload(&yv, &Shape::vector(k)).unwrap(),
            )
            .unwrap();
            drop(t);
            buf
        },
        ra.data(),
        1e-6,
    );
    let long = spread(100_003, 97);
    let long2 = spread(100_003, 98);
    let s = Shape::vector(long.len());
    let want = REF
        .dot(
            &REF.upload(&long, &s).unwrap(),
            &REF.upload(&long2, &s).unwrap(),
        )
        .unwrap();
    dense_case(
        |b| {
            b.dot(
                &b.borrow(&long, &s).unwrap(),
                &b.borrow(&long2, &s).unwrap(),
            )
            .unwrap()
            .into_vec()
        },
        want.data(),
        1e-3,
    );
    // A symmetric positive definite system large enough for the parallel
    // factorisation, with several right-hand sides and one.
    let nn = 150;
    let g = spread(nn * nn, 99);
    let mut spd = vec![0.0f32; nn * nn];
    for i in 0..nn {
        for j in 0..nn {
            let mut s = 0.0f32;
            for p in 0..nn {
                s += g[i * nn + p] * g[j * nn + p];
            }
            spd[i * nn + j] = s / nn as f32 + if i == j { 1.0 } else { 0.0 };
        }
    }
    let sspd = Shape::matrix(nn, nn).unwrap();
    for rhs_shape in [Shape::matrix(nn, 3).unwrap(), Shape::vector(nn)] {
        let rhs = spread(rhs_shape.numel(), 100);
        let want = REF
            .cholesky_solve(
                &REF.upload(&spd, &sspd).unwrap(),
                &REF.upload(&rhs, &rhs_shape).unwrap(),
            )
            .unwrap();
        dense_case(
            |b| {
                let r = b
                    .cholesky_solve(
                        &b.upload(&spd, &sspd).unwrap(),
                        &b.upload(&rhs, &rhs_shape).unwrap(),
                    )
                    .unwrap();
                assert_eq!(r.shape(), &rhs_shape);
                r.into_vec()
            },
            want.data(),
            1e-4,
        );
    }
}

#[test]
fn errors_match_the_reference() {
    let b = CpuBackend::new(Par::Rayon(2)).unwrap();
    let up = |d: &[f32], s: &Shape| (REF.upload(d, s).unwrap(), b.upload(d, s).unwrap());
    let v3 = Shape::vector(3);
    let m23 = Shape::matrix(2, 3).unwrap();
    let (r3, c3) = up(&[1.0, 2.0, 3.0], &v3);
    let (r23, c23) = up(&[1.0; 6], &m23);
    let (r33, c33) = up(
        &[1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
        &Shape::matrix(3, 3).unwrap(),
    );
    assert_eq!(
        b.binary(BinaryOp::Add, &c3, &c23).unwrap_err(),
        REF.binary(BinaryOp::Add, &r3, &r23).unwrap_err()
    );
    assert_eq!(
        b.dot(&c3, &c23).unwrap_err(),
        REF.dot(&r3, &r23).unwrap_err()
    );
    assert_eq!(
        b.gemv(&c23, &c23).unwrap_err(),
        REF.gemv(&r23, &r23).unwrap_err()
    );
    assert_eq!(
        b.gemv(&c3, &c3).unwrap_err(),
        REF.gemv(&r3, &r3).unwrap_err()
    );
    assert_eq!(
        b.gemm(&c23, Transpose::No, &c23, Transpose::No)
            .unwrap_err(),
        REF.gemm(&r23, Transpose::No, &r23, Transpose::No)
            .unwrap_err()
    );
    assert_eq!(
        b.gemm(&c23, Transpose::No, &c3, Transpose::No).unwrap_err(),
        REF.gemm(&r23, Transpose::No, &r3, Transpose::No)
            .unwrap_err()
    );
    let (mut rm, mut cm) = up(&[1.0; 6], &m23);
    assert_eq!(
        b.rank1_update(&mut cm, 1.0, &c3, &c3).unwrap_err(),
        REF.rank1_update(&mut rm, 1.0, &r3, &r3).unwrap_err()
    );
    assert_eq!(
        b.cholesky_solve(&c33, &c3).unwrap_err(),
        REF.cholesky_solve(&r33, &r3).unwrap_err()
    );
    assert_eq!(
        b.cholesky_solve(&c23, &c3).unwrap_err(),
        REF.cholesky_solve(&r23, &r3).unwrap_err()
    );
    assert_eq!(
        b.cholesky_solve(&c33, &c23).unwrap_err(),
        REF.cholesky_solve(&r33, &r23).unwrap_err()
    );

    // Selection ops: survivor shapes, no inputs, patterns.
    let bad_mask = Some(Mask::keep_all(Shape::vector(4)));
    let rv = [ScoreView::<ReferenceBackend>::with_survivors(
        &r3,
        bad_mask.as_ref(),
    )];
    let cv = [ScoreView::<CpuBackend<'_>>::with_survivors(
        &c3,
        bad_mask.as_ref(),
    )];
    let rule = KeyRule::ABS;
    assert_eq!(
        b.histogram(&cv, rule, KeyWindow::High).unwrap_err(),
        REF.histogram(&rv, rule, KeyWindow::High).unwrap_err()
    );
    assert_eq!(
        b.count_keys(&cv, rule, 5).unwrap_err(),
        REF.count_keys(&rv, rule, 5).unwrap_err()
    );
    let cut = TensorCut { key: 0, ties: 0 };
    assert_eq!(
        b.threshold_masks(&cv, rule, cut).unwrap_err(),
        REF.threshold_masks(&rv, rule, cut).unwrap_err()
    );
    let none = b.threshold_masks(&[], rule, cut).unwrap();
    assert!(none.masks.is_empty() && none.ties.is_empty());
    let rv = [ScoreView::<ReferenceBackend>::new(&r23)];
    let cv = [ScoreView::<CpuBackend<'_>>::new(&c23)];
    for p in [
        NofM { n: 0, m: 4 },
        NofM { n: 4, m: 4 },
        NofM::TWO_FOUR,
        NofM { n: 1, m: 2 },
    ] {
        let (r, c) = (REF.n_of_m_masks(&rv, rule, p), b.n_of_m_masks(&cv, rule, p));
        match (r, c) {
            (Err(r), Err(c)) => assert_eq!(c, r),
            (Ok(r), Ok(c)) => assert_eq!(c.masks, r.masks),
            (r, c) => panic!("{p:?}: reference {r:?}, cpu {c:?}"),
        }
    }
}

#[test]
fn pruning_end_to_end_matches() {
    let shapes = [
        Shape::matrix(40, 30).unwrap(),
        Shape::vector(77),
        Shape::new(&[8, 3, 3, 3]).unwrap(),
        Shape::matrix(600, 520).unwrap(),
    ];
    let names = ["fc1", "bias", "conv", "big"];
    let set = Inputs::new(shapes.to_vec(), false, true, 110);
    let rt = set.reference();
    let configs = [
        PruneConfig::new(0.5),
        PruneConfig::new(0.9).local(),
        PruneConfig::new(0.3).min_density(0.8),
        PruneConfig::new(0.6).granularity(prunus_core::Granularity::NEURONS),
        PruneConfig::new(0.6).importance(prunus_core::Importance::Random { seed: 5 }),
    ];
    for config in &configs {
        for with_masks in [false, true] {
            let masks: Vec<Option<&Mask>> = set
                .masks
                .iter()
                .map(|m| m.as_ref().filter(|_| with_masks))
                .collect();
            let rl: Vec<Layer<'_, ReferenceBackend>> = names
                .iter()
                .zip(&rt)
                .zip(&masks)
                .map(|((n, t), m)| Layer::new(n, t).with_mask(*m))
                .collect();
            let want = prunus_core::prune(&REF, &rl, config);
            for b in backends() {
                let ct = set.cpu(&b);
                let cl: Vec<Layer<'_, CpuBackend<'_>>> = names
                    .iter()
                    .zip(&ct)
                    .zip(&masks)
                    .map(|((n, t), m)| Layer::new(n, t).with_mask(*m))
                    .collect();
                let got = prunus_core::prune(&b, &cl, config);
                assert_eq!(got, want, "{} {config:?}", b.name());
            }
        }
    }
}
