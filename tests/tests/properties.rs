//! Properties of pruning that hold for any input: exact counts, agreement
//! with the naive oracle and across backends and thread counts, mask
//! algebra, N:M validity, nested iterative masks, and specific errors
//! instead of panics.

use proptest::prelude::*;
use proptest::sample::select;

use prunus_core::Backend;
use prunus_core::{
    Error, Granularity, Grouping, HasShape, Importance, Mask, NanPolicy, NofM, PruneConfig,
    ReferenceBackend, Result, Schedule, Shape, apply,
};
use prunus_cpu::{CpuBackend, Par};
use prunus_testing::compare::{assert_same_masks, same_bits};
use prunus_testing::layers::{HostLayer, prune_on, quantised_values};
use prunus_testing::oracle::{expected_masks, unit_count};
use prunus_testing::strategies::{
    config, grouping, invalid_fraction, layers, mask, masks, n_of_m_case, schedule, sparsity,
    with_earlier_masks,
};
use prunus_tests::gpu::wgpu_small_windows;

/// The result of `config` on every backend and thread count, by backend name
/// (the GPU backend too, with small windows, where an adapter exists).
fn on_every_backend(
    layers: &[HostLayer],
    config: &PruneConfig,
) -> Vec<(String, Result<Vec<Mask>>)> {
    let mut out = vec![(
        "reference".to_string(),
        prune_on(&ReferenceBackend, layers, config),
    )];
    for par in [Par::Seq, Par::Rayon(1), Par::Rayon(2)] {
        let b = CpuBackend::new(par).expect("cpu backend");
        out.push((b.name(), prune_on(&b, layers, config)));
    }
    if let Some(b) = wgpu_small_windows() {
        out.push((b.name(), prune_on(&b, layers, config)));
    }
    out
}

fn total_pruned(masks: &[Mask]) -> u64 {
    masks.iter().map(|m| m.count_pruned()).sum()
}

fn numel(layers: &[HostLayer]) -> u64 {
    layers.iter().map(|l| l.numel() as u64).sum()
}

fn round_units(s: f64, n: u64) -> u64 {
    (s * n as f64).round() as u64
}

/// Every backend gives the oracle's result (masks or error); returns it.
fn agree_everywhere(layers: &[HostLayer], config: &PruneConfig) -> Result<Vec<Mask>> {
    let want = expected_masks(layers, config);
    for (name, got) in on_every_backend(layers, config) {
        assert_same_masks(&format!("{name} with {config:?}"), &got, &want);
    }
    want
}

/// A random-enough configuration for unstructured and grouped pruning.
fn prune_config() -> impl Strategy<Value = PruneConfig> {
    let granularity = prop_oneof![
        2 => Just(Granularity::Unstructured),
        1 => grouping().prop_map(Granularity::Groups),
    ];
    let importance = prop_oneof![
        3 => Just(Importance::Magnitude),
        1 => any::<u64>().prop_map(|seed| Importance::Random { seed }),
    ];
    let norm = select(
        &[
            prunus_core::Reduction::SumSquares,
            prunus_core::Reduction::L1,
            prunus_core::Reduction::MaxAbs,
            prunus_core::Reduction::Sum,
        ][..],
    );
    (
        sparsity(),
        0usize..3,
        granularity,
        importance,
        norm,
        select(&[0.0, 0.1, 0.5][..]),
        any::<bool>(),
        select(&[NanPolicy::Error, NanPolicy::Lowest, NanPolicy::Highest][..]),
    )
        .prop_map(|(s, scope, g, imp, norm, d, empty, nan)| {
            let c = PruneConfig::new(s)
                .granularity(g)
                .importance(imp)
                .group_norm(norm)
                .min_density(d)
                .allow_empty(empty)
                .nan_policy(nan);
            if scope == 0 { c.global() } else { c.local() }
        })
}

/// Sets a few weights to NaN, by index modulo the layer size.
fn sprinkle_nan(layers: &mut [HostLayer], at: &[(usize, usize)]) {
    for &(l, i) in at {
        let l = l % layers.len();
        let n = layers[l].numel();
        layers[l].data[i % n] = f32::NAN;
    }
}

proptest! {
    #![proptest_config(config(96))]

    /// Global pruning removes exactly round(s * n) weights, whatever the ties,
    /// and the guards hold (or the request fails with GuardsExceeded exactly
    /// when the target is beyond them).
    #[test]
    fn global_prunes_exactly_round_s_n(layers in layers(4, 6), s in sparsity(), allow_empty in any::<bool>()) {
        let config = PruneConfig::new(s).allow_empty(allow_empty);
        let k = round_units(s, numel(&layers));
        let cap: u64 = layers.iter().map(|l| l.numel() as u64 - (!allow_empty) as u64).sum();
        match agree_everywhere(&layers, &config) {
            Ok(masks) => {
                prop_assert_eq!(total_pruned(&masks), k);
                prop_assert!(allow_empty || masks.iter().all(|m| m.count_kept() >= 1));
            }
            Err(e) => {
                prop_assert!(k > cap, "unexpected {:?}", e);
                let is_guards = matches!(e, Error::GuardsExceeded { .. });
                prop_assert!(is_guards, "{:?}", e);
            }
        }
    }

    /// Local pruning removes exactly round(s * n_l) of each layer.
    #[test]
    fn local_prunes_exactly_per_layer(layers in layers(4, 6), s in sparsity()) {
        let masks = agree_everywhere(&layers, &PruneConfig::new(s).local().allow_empty(true)).unwrap();
        for (m, l) in masks.iter().zip(&layers) {
            prop_assert_eq!(m.count_pruned(), round_units(s, l.numel() as u64), "layer {}", &l.name);
        }
    }

    /// An explicit budget prunes each layer to its own sparsity.
    #[test]
    fn per_layer_budget_prunes_each_layer_exactly(
        layers in layers(4, 6),
        budget in proptest::collection::vec(sparsity(), 4),
    ) {
        let b: Vec<(String, f64)> = layers.iter().zip(&budget).map(|(l, &s)| (l.name.clone(), s)).collect();
        let masks = agree_everywhere(&layers, &PruneConfig::new(0.0).per_layer(b).allow_empty(true)).unwrap();
        for ((m, l), &s) in masks.iter().zip(&layers).zip(&budget) {
            prop_assert_eq!(m.count_pruned(), round_units(s, l.numel() as u64), "layer {}", &l.name);
        }
    }

    /// prune() equals the sort-based oracle — masks, or the same error with the
    /// same fields — for any scope, granularity, importance, norm, guard, NaN
    /// policy, NaN placement and earlier masks.
    #[test]
    fn prune_matches_naive_oracle(
        layers in layers(3, 6).prop_flat_map(with_earlier_masks),
        config in prune_config(),
        nan in proptest::collection::vec((0usize..3, 0usize..1296), 0..3),
        skip_first in proptest::bool::weighted(0.2),
    ) {
        let mut layers = layers;
        sprinkle_nan(&mut layers, &nan);
        let config = if skip_first && layers.len() > 1 { config.skip("l0") } else { config };
        agree_everywhere(&layers, &config).ok();
    }

    /// A global selection over a single layer is the local one.
    #[test]
    fn global_on_one_layer_is_local(
        layers in layers(1, 8).prop_flat_map(with_earlier_masks),
        s in sparsity(),
        d in select(&[0.0, 0.25][..]),
        g in prop_oneof![Just(Granularity::Unstructured), grouping().prop_map(Granularity::Groups)],
    ) {
        let c = PruneConfig::new(s).min_density(d).granularity(g);
        let global = agree_everywhere(&layers, &c.clone().global());
        let local = agree_everywhere(&layers, &c.local());
        match (global, local) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "global {:?} vs local {:?}", a, b),
        }
    }

    /// N:M keeps exactly n of every group of m (no earlier mask), satisfies the
    /// pattern, and matches the oracle; with earlier masks it still satisfies
    /// it and never revives a weight.
    #[test]
    fn n_of_m_keeps_n_per_group(
        case in n_of_m_case(3),
        earlier in any::<bool>(),
        random in proptest::option::of(any::<u64>()),
    ) {
        let (p, layers) = case;
        let mut c = PruneConfig::new(0.0).granularity(Granularity::NofM(p));
        if let Some(seed) = random {
            c = c.importance(Importance::Random { seed });
        }
        let masks = agree_everywhere(&layers, &c).unwrap();
        for m in &masks {
            prop_assert!(m.satisfies(p).unwrap());
            prop_assert_eq!(m.n_of_m_violations(p).unwrap(), 0);
            for g in 0..m.len() / p.m {
                prop_assert_eq!((0..p.m).filter(|j| m.get(g * p.m + j)).count(), p.n);
            }
        }
        if earlier {
            // The first result as the earlier mask of a second pass with a
            // sparser pattern: still valid and nested.
            let q = NofM { n: p.n.div_ceil(2), m: p.m };
            let again: Vec<HostLayer> = layers.iter().cloned().zip(masks.clone()).map(|(l, m)| l.with_mask(m)).collect();
            let c2 = PruneConfig::new(0.0).granularity(Granularity::NofM(q));
            let second = agree_everywhere(&again, &c2).unwrap();
            for (s, f) in second.iter().zip(&masks) {
                prop_assert!(s.satisfies(q).unwrap());
                prop_assert!(s.is_subset_of(f).unwrap());
            }
        }
    }

    /// Driving prune() round by round with every schedule, feeding back the
    /// previous masks, gives nested masks, the exact count every round and
    /// exactly round(target * n) at the end.
    #[test]
    fn schedules_give_nested_exact_masks(
        layers in layers(3, 6),
        schedule in schedule(),
        mode in 0usize..3,
    ) {
        let base = match mode {
            0 => PruneConfig::new(0.0),
            1 => PruneConfig::new(0.0).local(),
            _ => PruneConfig::new(0.0).granularity(Granularity::NEURONS),
        }
        .allow_empty(true);
        let targets = schedule.targets().unwrap();
        let mut current = layers.clone();
        for (round, &t) in targets.iter().enumerate() {
            // New weights each round, as after retraining: rotate the values so
            // that weights pruned earlier may now score high.
            for (l, orig) in current.iter_mut().zip(&layers) {
                let n = orig.numel();
                l.data = (0..n).map(|i| orig.data[(i + round) % n]).collect();
            }
            let masks = agree_everywhere(&current, &base.clone().sparsity(t)).unwrap();
            for (l, m) in current.iter_mut().zip(masks) {
                if let Some(prev) = &l.mask {
                    prop_assert!(m.is_subset_of(prev).unwrap(), "round to {} revived weights", t);
                }
                l.mask = Some(m);
            }
            let counts: Vec<u64> = current
                .iter()
                .map(|l| {
                    let m = l.mask.as_ref().unwrap();
                    if mode == 2 { m.reduce_any(Grouping::Rows).unwrap().count_pruned() } else { m.count_pruned() }
                })
                .collect();
            let units: Vec<u64> = current
                .iter()
                .map(|l| if mode == 2 { unit_count(Grouping::Rows, &l.shape) as u64 } else { l.numel() as u64 })
                .collect();
            if mode == 1 {
                for (c, u) in counts.iter().zip(&units) {
                    prop_assert_eq!(*c, round_units(t, *u));
                }
            } else {
                prop_assert_eq!(counts.iter().sum::<u64>(), round_units(t, units.iter().sum()));
            }
        }
        let last = *targets.last().unwrap();
        let want = match schedule {
            Schedule::OneShot { target }
            | Schedule::FixedRate { target, .. }
            | Schedule::Geometric { target, .. }
            | Schedule::Cubic { target, .. } => target,
            _ => last,
        };
        prop_assert_eq!(last, want);
    }

    /// Schedules are non-decreasing fractions ending at the target; a fixed
    /// rate takes the fewest rounds that reach the target.
    #[test]
    fn schedules_are_monotone_and_minimal(schedule in schedule()) {
        let t = schedule.targets().unwrap();
        prop_assert!(!t.is_empty());
        prop_assert!(t.windows(2).all(|w| w[0] <= w[1]), "{:?}", t);
        prop_assert!(t.iter().all(|s| (0.0..=1.0).contains(s)));
        if let Schedule::FixedRate { rate, target } = schedule {
            // Round r removes `rate` of what is left: 1 - (1 - rate)^r, and no
            // round is a float-noise step (0.35999... then 0.36) short of the target.
            let (last, rest) = t.split_last().unwrap();
            for (r, s) in rest.iter().enumerate() {
                prop_assert!((s - (1.0 - (1.0 - rate).powi(r as i32 + 1))).abs() <= 1e-9, "{:?}", t);
                prop_assert!(*s < target - 1e-12, "round {} already reaches {}: {:?}", r, target, t);
            }
            prop_assert_eq!(*last, target);
        }
        if let Schedule::Geometric { rounds, .. } = schedule {
            prop_assert_eq!(t.len(), rounds);
        }
        if let Schedule::Cubic { steps, initial, .. } = schedule {
            prop_assert_eq!(t.len(), steps + 1);
            // s_0 = s_f + (s_0 - s_f) * 1 in floats: equal up to rounding.
            prop_assert!((t[0] - initial).abs() <= 1e-12, "{:?}", t);
        }
    }

    /// Random importance gives the oracle's mask (the host-computed random
    /// scores) on every backend.
    #[test]
    fn random_importance_is_the_same_everywhere(
        layers in layers(3, 6),
        seed in any::<u64>(),
        s in sparsity(),
        g in prop_oneof![Just(Granularity::Unstructured), grouping().prop_map(Granularity::Groups)],
    ) {
        let c = PruneConfig::new(s).granularity(g).importance(Importance::Random { seed }).allow_empty(true);
        agree_everywhere(&layers, &c).unwrap();
    }

    /// apply() zeroes exactly the pruned weights and keeps the rest bit for bit.
    #[test]
    fn apply_zeroes_exactly_the_pruned(layers in layers(3, 6), s in sparsity()) {
        let b = ReferenceBackend;
        let masks = prune_on(&b, &layers, &PruneConfig::new(s).allow_empty(true)).unwrap();
        let mut tensors = prunus_testing::layers::upload_all(&b, &layers).unwrap();
        let mut refs: Vec<_> = tensors.iter_mut().collect();
        apply(&b, &mut refs, &masks).unwrap();
        for ((t, l), m) in tensors.iter().zip(&layers).zip(&masks) {
            for i in 0..l.numel() {
                let want = if m.get(i) { l.data[i] } else { 0.0 };
                prop_assert!(same_bits(t.data()[i], want));
            }
        }
    }

    /// Mask algebra: De Morgan, commutativity, associativity, involution,
    /// xor and and-not identities, subsets, inclusion-exclusion of counts,
    /// byte and word round trips.
    #[test]
    fn mask_algebra_laws(case in masks(3)) {
        let (shape, m) = case;
        let (a, b, c) = (&m[0], &m[1], &m[2]);
        prop_assert_eq!(a.and(b).unwrap().not(), a.not().or(&b.not()).unwrap());
        prop_assert_eq!(a.or(b).unwrap().not(), a.not().and(&b.not()).unwrap());
        prop_assert_eq!(a.and(b).unwrap(), b.and(a).unwrap());
        prop_assert_eq!(a.or(b).unwrap(), b.or(a).unwrap());
        prop_assert_eq!(a.xor(b).unwrap(), b.xor(a).unwrap());
        prop_assert_eq!(a.and(b).unwrap().and(c).unwrap(), a.and(&b.and(c).unwrap()).unwrap());
        prop_assert_eq!(a.or(b).unwrap().or(c).unwrap(), a.or(&b.or(c).unwrap()).unwrap());
        prop_assert_eq!(a.xor(b).unwrap().xor(c).unwrap(), a.xor(&b.xor(c).unwrap()).unwrap());
        prop_assert_eq!(a.xor(a).unwrap(), Mask::prune_all(shape.clone()));
        prop_assert_eq!(&a.not().not(), a);
        prop_assert_eq!(a.and_not(b).unwrap(), a.and(&b.not()).unwrap());
        prop_assert_eq!(a.is_subset_of(b).unwrap(), &a.and(b).unwrap() == a);
        prop_assert!(a.and(b).unwrap().is_subset_of(a).unwrap());
        prop_assert!(a.is_subset_of(&a.or(b).unwrap()).unwrap());
        prop_assert_eq!(
            a.or(b).unwrap().count_kept() + a.and(b).unwrap().count_kept(),
            a.count_kept() + b.count_kept()
        );
        prop_assert_eq!(a.count_kept() + a.count_pruned(), shape.numel() as u64);
        prop_assert_eq!(a.not().count_kept(), a.count_pruned());
        prop_assert_eq!(&Mask::from_bytes(shape.clone(), &a.to_bytes()).unwrap(), a);
        prop_assert_eq!(&Mask::from_words(shape.clone(), a.words().to_vec()).unwrap(), a);
        let kept: Vec<usize> = (0..a.len()).filter(|&i| a.get(i)).collect();
        prop_assert_eq!(a.kept().collect::<Vec<_>>(), kept);
        let other = Mask::keep_all(Shape::vector(shape.numel() + 1));
        let mismatch = matches!(a.and(&other), Err(Error::ShapeMismatch { .. }));
        prop_assert!(mismatch);
    }

    /// Expanding a unit mask and reducing it back is the identity, the
    /// expansion is constant on every unit, and row compaction lists the kept
    /// rows.
    #[test]
    fn expand_then_reduce_is_identity(
        case in prunus_testing::strategies::shape(4, 7).prop_flat_map(|s| (Just(s), grouping())).prop_flat_map(|(s, g)| {
            let units = Shape::vector(unit_count(g, &s));
            (Just(s), Just(g), mask(units))
        }),
    ) {
        let (shape, g, units) = case;
        let e = units.expand(g, &shape).unwrap();
        prop_assert_eq!(e.shape(), &shape);
        prop_assert_eq!(&e.reduce_any(g).unwrap(), &units);
        for i in 0..e.len() {
            prop_assert_eq!(e.get(i), units.get(prunus_testing::oracle::unit_of(g, &shape, i)));
        }
        if g == Grouping::Rows {
            prop_assert_eq!(e.compaction().rows, units.kept().collect::<Vec<_>>());
        }
    }

    /// Sparsities and densities outside [0, 1], NaN and infinities are
    /// errors of their own kind in every scope and granularity.
    #[test]
    fn invalid_fractions_are_errors(
        layers in layers(3, 5),
        bad in invalid_fraction(),
        scope in 0usize..3,
        rows in any::<bool>(),
    ) {
        let g = if rows { Granularity::NEURONS } else { Granularity::Unstructured };
        let c = match scope {
            0 => PruneConfig::new(bad),
            1 => PruneConfig::new(bad).local(),
            _ => PruneConfig::new(0.0).per_layer(layers.iter().map(|l| (l.name.clone(), bad)).collect()),
        }
        .granularity(g);
        for (name, got) in on_every_backend(&layers, &c) {
            let ok = matches!(got, Err(Error::SparsityOutOfRange { .. }));
            prop_assert!(ok, "{}: {:?}", name, got);
        }
        let c = PruneConfig::new(0.5).min_density(bad).granularity(g);
        for (name, got) in on_every_backend(&layers, &c) {
            let ok = matches!(got, Err(Error::FractionOutOfRange { .. }));
            prop_assert!(ok, "{}: {:?}", name, got);
        }
    }

    /// Each kind of defective request fails with its specific error (and
    /// fields) on every backend instead of panicking or returning masks.
    #[test]
    fn defects_give_specific_errors(
        layers in layers(3, 5),
        defect in defect(),
        rows in any::<bool>(),
    ) {
        let g = if rows { Granularity::NEURONS } else { Granularity::Unstructured };
        let (layers, config, expect) = defect.apply(layers, g);
        for (name, got) in on_every_backend(&layers, &config) {
            match got {
                Err(e) => prop_assert!(expect(&e), "{}: {:?} gave {:?}", name, defect, e),
                Ok(_) => prop_assert!(false, "{}: {:?} gave masks", name, defect),
            }
        }
    }
}

proptest! {
    #![proptest_config(config(6))]

    /// Layers of a few hundred thousand weights with few distinct values
    /// (ties across any internal chunk and thread boundary): every backend and
    /// thread count gives the reference's masks, in every granularity.
    #[test]
    fn large_layers_agree_across_backends(
        seed in any::<u64>(),
        rows in 200usize..=700,
        levels in 1u32..=4,
        s in sparsity(),
        mode in 0usize..4,
    ) {
        let layers = vec![
            HostLayer::new("big", &[rows, 1000], quantised_values(seed, rows * 1000, levels)),
            HostLayer::new("small", &[8, 16], quantised_values(seed ^ 1, 128, levels)),
        ];
        let c = PruneConfig::new(s).allow_empty(true);
        let c = match mode {
            0 => c,
            1 => c.local(),
            2 => c.granularity(Granularity::NofM(NofM::TWO_FOUR)),
            _ => c.granularity(Granularity::Groups(Grouping::Blocks { rows: 3, cols: 7 })),
        };
        let runs = on_every_backend(&layers, &c);
        let (_, want) = &runs[0];
        for (name, got) in &runs[1..] {
            assert_same_masks(name, got, want);
        }
        if mode == 0 {
            let pruned = total_pruned(want.as_ref().unwrap());
            prop_assert_eq!(pruned, round_units(s, numel(&layers)));
        }
    }
}

/// A defect introduced into an otherwise valid request.
#[derive(Clone, Debug)]
enum Defect {
    NanWeight { layer: usize, at: usize },
    Empty { layer: usize },
    MaskShape { layer: usize },
    Duplicate,
    UnknownSkip,
    AllSkipped,
    NofMShape { m: usize, rest: usize },
    Guards,
    BelowPrevious { layer: usize },
}

fn defect() -> impl Strategy<Value = Defect> {
    prop_oneof![
        (0usize..3, 0usize..100).prop_map(|(layer, at)| Defect::NanWeight { layer, at }),
        (0usize..3).prop_map(|layer| Defect::Empty { layer }),
        (0usize..3).prop_map(|layer| Defect::MaskShape { layer }),
        Just(Defect::Duplicate),
        Just(Defect::UnknownSkip),
        Just(Defect::AllSkipped),
        (2usize..=8)
            .prop_flat_map(|m| (Just(m), 1..m))
            .prop_map(|(m, rest)| Defect::NofMShape { m, rest }),
        Just(Defect::Guards),
        (0usize..3).prop_map(|layer| Defect::BelowPrevious { layer }),
    ]
}

type Expect = Box<dyn Fn(&Error) -> bool>;

impl Defect {
    fn apply(
        &self,
        mut layers: Vec<HostLayer>,
        g: Granularity,
    ) -> (Vec<HostLayer>, PruneConfig, Expect) {
        let base = PruneConfig::new(0.5).allow_empty(true).granularity(g);
        let pick = |l: usize| l % layers.len();
        match *self {
            Defect::NanWeight { layer, at } => {
                let l = pick(layer);
                let n = layers[l].numel();
                layers[l].data[at % n] = -f32::NAN;
                let name = layers[l].name.clone();
                (
                    layers,
                    base,
                    Box::new(
                        move |e| matches!(e, Error::NanScores { layer, count: 1 } if *layer == name),
                    ),
                )
            }
            Defect::Empty { layer } => {
                let l = pick(layer);
                layers[l] = HostLayer::new(layers[l].name.clone(), &[0], vec![]);
                let name = layers[l].name.clone();
                (
                    layers,
                    base,
                    Box::new(move |e| matches!(e, Error::EmptyTensor { layer } if *layer == name)),
                )
            }
            Defect::MaskShape { layer } => {
                let l = pick(layer);
                let wrong = Mask::keep_all(Shape::vector(layers[l].numel() + 1));
                layers[l].mask = Some(wrong);
                (
                    layers,
                    base,
                    Box::new(|e| matches!(e, Error::ShapeMismatch { .. })),
                )
            }
            Defect::Duplicate => {
                let copy = layers[0].clone();
                layers.push(copy);
                (
                    layers,
                    base,
                    Box::new(|e| matches!(e, Error::DuplicateLayer { name } if name == "l0")),
                )
            }
            Defect::UnknownSkip => (
                layers,
                base.skip("missing"),
                Box::new(|e| matches!(e, Error::UnknownLayer { name } if name == "missing")),
            ),
            Defect::AllSkipped => {
                let c = layers.iter().fold(base, |c, l| c.skip(l.name.clone()));
                (
                    layers,
                    c,
                    Box::new(|e| matches!(e, Error::AllLayersSkipped)),
                )
            }
            Defect::NofMShape { m, rest } => {
                let len = 2 * m + rest;
                layers[0] = HostLayer::new("l0", &[2, len], vec![1.0; 2 * len]);
                let c = PruneConfig::new(0.0).granularity(Granularity::NofM(NofM { n: 1, m }));
                (
                    layers,
                    c,
                    Box::new(
                        move |e| matches!(e, Error::PatternMismatch { layer, len: l, m: mm } if layer == "l0" && *l == len && *mm == m),
                    ),
                )
            }
            Defect::Guards => {
                let c = PruneConfig::new(1.0).local().granularity(g);
                let name = layers[0].name.clone();
                (
                    layers,
                    c,
                    Box::new(
                        move |e| matches!(e, Error::GuardsExceeded { layer, .. } if *layer == name),
                    ),
                )
            }
            Defect::BelowPrevious { layer } => {
                let l = pick(layer);
                layers[l].mask = Some(Mask::prune_all(layers[l].shape.clone()));
                let name = layers[l].name.clone();
                let c = PruneConfig::new(0.0)
                    .local()
                    .allow_empty(true)
                    .granularity(g);
                (
                    layers,
                    c,
                    Box::new(
                        move |e| matches!(e, Error::TargetBelowPrevious { layer, target: 0, .. } if *layer == name),
                    ),
                )
            }
        }
    }
}

/// Classic IMP schedules take the textbook number of rounds: float noise
/// (1 - 0.8^2 = 0.35999...) must not add a final near-empty round.
#[test]
fn fixed_rate_rounds_are_not_padded_by_float_noise() {
    for (rate, target, rounds) in [
        (0.2, 0.36, 2),
        (0.2, 0.488, 3),
        (0.1, 0.19, 2),
        (0.2, 0.5904, 4),
        (0.5, 0.875, 3),
    ] {
        let t = Schedule::FixedRate { rate, target }.targets().unwrap();
        assert_eq!(t.len(), rounds, "rate {rate} to {target}: {t:?}");
        assert_eq!(*t.last().unwrap(), target);
    }
}
