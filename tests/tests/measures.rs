//! Gradient-flow measures: hand-computed scores, the same masks on the
//! reference and CPU backends, capability errors, and the finite-difference
//! Hessian-vector product on a host whose Hessian is known.

use std::sync::Arc;

use prunus_core::host::{
    Capability, Host, Objective, Parameter, ParameterKind, Samples, finite_difference_hvp,
};
use prunus_core::methods::flow::{Measure, MeasureConfig, prune_host, score};
use prunus_core::{
    Backend, Error, Granularity, Grouping, Mask, PruneConfig, ReferenceBackend, Shape, Split,
};
use prunus_cpu::{CpuBackend, Par};
use prunus_lab::data::Dataset;
use prunus_lab::host::{LabHost, Sgd};
use prunus_lab::network::{CnnSpec, Network};
use prunus_lab::synthetic::gaussian;

const ALL: [Measure; 7] = [
    Measure::Magnitude,
    Measure::Snip,
    Measure::SnipBiased,
    Measure::Taylor,
    Measure::Grasp,
    Measure::GradNorm,
    Measure::Random { seed: 5 },
];

/// θ, g and Hg of a 2x3 layer, and every measure's scores by hand.
#[test]
fn scores_match_hand_computed_values() {
    let theta = [1.0, -2.0, 0.5, 3.0, 0.0, -1.0];
    let g = [0.5, 0.25, -2.0, -1.0, 4.0, 1.0];
    let hg = [2.0, 1.0, 1.0, 0.5, -3.0, -2.0];
    // θg = [0.5, -0.5, -1, -3, 0, -1]; θ²g = [0.5, 1, -0.5, -9, 0, 1];
    // θHg = [2, -2, 0.5, 1.5, 0, 2].
    let cases: [(Measure, [f32; 6], [f32; 2]); 6] = [
        (
            Measure::Magnitude,
            [1.0, 2.0, 0.5, 3.0, 0.0, 1.0],
            [5.25, 10.0],
        ),
        (Measure::Snip, [0.5, 0.5, 1.0, 3.0, 0.0, 1.0], [2.0, 4.0]),
        (
            Measure::SnipBiased,
            [0.5, 1.0, 0.5, 9.0, 0.0, 1.0],
            [2.0, 10.0],
        ),
        (Measure::Taylor, [0.5, 0.5, 1.0, 3.0, 0.0, 1.0], [1.0, 4.0]),
        (Measure::Grasp, [2.0, -2.0, 0.5, 1.5, 0.0, 2.0], [0.5, 3.5]),
        (
            Measure::GradNorm,
            [2.0, 2.0, 0.5, 1.5, 0.0, 2.0],
            [0.5, 3.5],
        ),
    ];
    let shape = Shape::matrix(2, 3).unwrap();
    let check = |b: &dyn Fn(Measure, Option<Grouping>) -> Vec<f32>| {
        for (m, per_weight, per_row) in cases {
            assert_eq!(b(m, None), per_weight, "{m} per weight");
            assert_eq!(b(m, Some(Grouping::Rows)), per_row, "{m} per row");
        }
    };
    fn run<B: Backend>(
        b: &B,
        shape: &Shape,
        m: Measure,
        grouping: Option<Grouping>,
        x: [&[f32]; 3],
    ) -> Vec<f32> {
        let t = b.upload(x[0], shape).unwrap();
        let g = b.upload(x[1], shape).unwrap();
        let hg = b.upload(x[2], shape).unwrap();
        let s = score(b, m, &t, Some(&g), Some(&hg), grouping, 0).unwrap();
        b.download(&s).unwrap()
    }
    let cpu = CpuBackend::new(Par::Rayon(2)).unwrap();
    check(&|m, gr| run(&ReferenceBackend, &shape, m, gr, [&theta, &g, &hg]));
    check(&|m, gr| run(&cpu, &shape, m, gr, [&theta, &g, &hg]));
    // GraSP's sign matters: a unit with a negative sum ranks below zero.
    let neg = [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let s = run(
        &ReferenceBackend,
        &shape,
        Measure::Grasp,
        Some(Grouping::Rows),
        [&theta, &g, &neg],
    );
    assert_eq!(s, [-1.0, 0.0]);
    // A measure without its input is an error, not a guess.
    let t = ReferenceBackend.upload(&theta, &shape).unwrap();
    let e = score(&ReferenceBackend, Measure::Snip, &t, None, None, None, 0).unwrap_err();
    assert!(matches!(e, Error::MissingInput { .. }), "{e}");
}

fn tiny_cnn_host(seed: u64) -> LabHost {
    let d = 2 * 8 * 8;
    let n = 60;
    let x: Vec<f32> = (0..(n * d) as u64).map(|i| gaussian(seed, 1, i)).collect();
    let y: Vec<u8> = (0..n).map(|i| (i % 4) as u8).collect();
    let data = Arc::new(Dataset::from_samples("test", [2, 8, 8], 4, &x, &y).unwrap());
    let spec = CnnSpec {
        input: [2, 8, 8],
        channels: vec![6, 5],
        classes: 4,
        bias: true,
    };
    let mut host =
        LabHost::new(Network::cnn(&spec, seed).unwrap(), data, Sgd::default(), 0).unwrap();
    host.train_epoch().unwrap();
    host
}

/// The masks of `measure` on every prunable weight of a tiny trained CNN,
/// on the reference backend and on `backend`.
fn on_both<B: Backend>(
    backend: &B,
    seed: u64,
    measure: Measure,
    prune: &PruneConfig,
) -> (Vec<Mask>, Vec<Mask>) {
    let config = MeasureConfig::default().samples(Samples::all(Split::Train));
    let mut host = tiny_cnn_host(seed);
    let prunable: Vec<usize> = (0..host.parameters().len())
        .filter(|&i| host.parameters()[i].prunable)
        .collect();
    let a = prune_host(
        &ReferenceBackend,
        &mut host,
        measure,
        &prunable,
        &[],
        prune,
        &config,
    );
    let b = prune_host(backend, &mut host, measure, &prunable, &[], prune, &config);
    (a.unwrap(), b.unwrap())
}

#[test]
fn every_measure_gives_the_same_masks_on_reference_and_cpu() {
    let cpu = CpuBackend::new(Par::Rayon(2)).unwrap();
    for granularity in [Granularity::Unstructured, Granularity::NEURONS] {
        for m in ALL {
            let (a, b) = on_both(&cpu, 3, m, &PruneConfig::new(0.5).granularity(granularity));
            assert_eq!(a, b, "{m} {granularity:?}");
            // Exactly half of all units (or weights) are gone.
            let units: u64 = a
                .iter()
                .map(|mask| match granularity {
                    Granularity::Unstructured => mask.len() as u64,
                    _ => mask.reduce_any(Grouping::Rows).unwrap().len() as u64,
                })
                .sum();
            let pruned: u64 = a
                .iter()
                .map(|mask| match granularity {
                    Granularity::Unstructured => mask.count_pruned(),
                    _ => mask.reduce_any(Grouping::Rows).unwrap().count_pruned(),
                })
                .sum();
            assert_eq!(pruned, (units as f64 * 0.5).round() as u64, "{m}");
        }
    }
}

#[test]
fn measures_rank_by_their_own_formula() {
    // Selecting with prune_host equals selecting the lowest scores computed
    // here from the host's own g and Hg: the measure wiring (temperatures,
    // which vector multiplies θ) is what this checks.
    let config = MeasureConfig::default().samples(Samples::all(Split::Train));
    for m in [
        Measure::Snip,
        Measure::Grasp,
        Measure::GradNorm,
        Measure::SnipBiased,
    ] {
        let mut host = tiny_cnn_host(4);
        let t = if m == Measure::Grasp { 200.0 } else { 5.0 };
        let objective = Objective::new(Samples::all(Split::Train)).temperature(t);
        let g = host.gradient(&objective).unwrap();
        let hg = host.hessian_vector_product(&objective, &g).unwrap();
        let w = host.weights(0).unwrap();
        let per_weight: Vec<f32> = (0..w.len())
            .map(|i| match m {
                Measure::Snip => (w[i] * g[0][i]).abs(),
                Measure::SnipBiased => (w[i] * (w[i] * g[0][i])).abs(),
                Measure::Grasp => w[i] * hg[0][i],
                _ => (w[i] * hg[0][i]).abs(),
            })
            .collect();
        let mut order: Vec<usize> = (0..w.len()).collect();
        order.sort_by(|&a, &b| per_weight[a].total_cmp(&per_weight[b]).then(a.cmp(&b)));
        let k = w.len() / 3;
        let masks = prune_host(
            &ReferenceBackend,
            &mut host,
            m,
            &[0],
            &[],
            &PruneConfig::new(k as f64 / w.len() as f64),
            &config,
        )
        .unwrap();
        let mut want: Vec<usize> = order[..k].to_vec();
        want.sort_unstable();
        let got: Vec<usize> = (0..w.len()).filter(|&i| !masks[0].get(i)).collect();
        assert_eq!(got, want, "{m}");
    }
}

#[test]
fn earlier_masks_are_never_revived() {
    let config = MeasureConfig::default().samples(Samples::all(Split::Train));
    let mut host = tiny_cnn_host(5);
    let prune = PruneConfig::new(0.3).granularity(Granularity::NEURONS);
    let first = prune_host(
        &ReferenceBackend,
        &mut host,
        Measure::Snip,
        &[0, 2],
        &[],
        &prune,
        &config,
    )
    .unwrap();
    let earlier: Vec<Option<Mask>> = first.iter().cloned().map(Some).collect();
    let second = prune_host(
        &ReferenceBackend,
        &mut host,
        Measure::Grasp,
        &[0, 2],
        &earlier,
        &prune.clone().sparsity(0.6),
        &config,
    )
    .unwrap();
    for (a, b) in first.iter().zip(&second) {
        assert!(b.is_subset_of(a).unwrap());
    }
}

/// A host whose loss is `½ θᵀAθ − bᵀθ`, with no exact Hessian product and
/// only the capabilities listed.
struct Quadratic {
    params: Vec<Parameter>,
    theta: Vec<f32>,
    a: Vec<f64>,
    b: Vec<f64>,
    caps: Vec<Capability>,
}

impl Quadratic {
    fn new(caps: Vec<Capability>) -> Self {
        let n = 4;
        // A = Mᵀ M + I is symmetric positive definite.
        let m: Vec<f64> = (0..n * n).map(|i| ((i * 7 % 5) as f64) - 2.0).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| m[k * n + i] * m[k * n + j]).sum::<f64>()
                    + f64::from(u8::from(i == j));
            }
        }
        Quadratic {
            params: vec![Parameter {
                name: "w".into(),
                shape: Shape::matrix(2, 2).unwrap(),
                kind: ParameterKind::Weight,
                layer: 0,
                prunable: true,
                coupling: None,
            }],
            theta: vec![0.5, -1.0, 2.0, 0.25],
            a,
            b: vec![1.0, 0.0, -1.0, 0.5],
            caps,
        }
    }
}

impl Host for Quadratic {
    fn name(&self) -> String {
        "quadratic".into()
    }
    fn parameters(&self) -> &[Parameter] {
        &self.params
    }
    fn supports(&self, c: Capability) -> bool {
        self.caps.contains(&c)
    }
    fn weights(&self, _: usize) -> prunus_core::Result<Vec<f32>> {
        Ok(self.theta.clone())
    }
    fn set_weights(&mut self, _: usize, v: &[f32]) -> prunus_core::Result<()> {
        self.theta = v.to_vec();
        Ok(())
    }
    fn gradient(&mut self, _: &Objective) -> prunus_core::Result<Vec<Vec<f32>>> {
        if !self.supports(Capability::Gradient) {
            return Err(self.missing(Capability::Gradient));
        }
        let n = self.theta.len();
        Ok(vec![
            (0..n)
                .map(|i| {
                    ((0..n)
                        .map(|j| self.a[i * n + j] * f64::from(self.theta[j]))
                        .sum::<f64>()
                        - self.b[i]) as f32
                })
                .collect(),
        ])
    }
}

#[test]
fn finite_difference_hvp_recovers_a_known_hessian() {
    let mut host = Quadratic::new(vec![Capability::Gradient]);
    let v = vec![vec![1.0, -0.5, 0.25, 2.0]];
    let before = host.theta.clone();
    let hv =
        finite_difference_hvp(&mut host, &Objective::new(Samples::all(Split::Train)), &v).unwrap();
    for (i, &h) in hv[0].iter().enumerate() {
        let want: f64 = (0..4).map(|j| host.a[i * 4 + j] * f64::from(v[0][j])).sum();
        assert!(
            (f64::from(h) - want).abs() <= 1e-3 * want.abs().max(1.0),
            "{i}: {h} vs {want}"
        );
    }
    // The weights are put back exactly.
    assert_eq!(host.theta, before);
    // The trait's default product is this finite difference.
    let default = host
        .hessian_vector_product(&Objective::new(Samples::all(Split::Train)), &v)
        .unwrap();
    assert_eq!(default, hv);
}

#[test]
fn a_host_without_a_capability_gets_a_clear_error() {
    let mut host = Quadratic::new(vec![]);
    let config = MeasureConfig::default();
    for m in [Measure::Snip, Measure::Grasp] {
        let e = prune_host(
            &ReferenceBackend,
            &mut host,
            m,
            &[0],
            &[],
            &PruneConfig::new(0.5),
            &config,
        )
        .unwrap_err();
        let Error::MissingCapability {
            host: h,
            capability,
        } = &e
        else {
            panic!("{m}: {e}");
        };
        assert_eq!(
            (h.as_str(), *capability),
            ("quadratic", "mini-batch gradient")
        );
        assert!(e.to_string().contains("mini-batch gradient"), "{e}");
    }
    // Magnitude and random need nothing from the host.
    for m in [Measure::Magnitude, Measure::Random { seed: 1 }] {
        prune_host(
            &ReferenceBackend,
            &mut host,
            m,
            &[0],
            &[],
            &PruneConfig::new(0.5),
            &config,
        )
        .unwrap();
    }
    assert!(matches!(
        host.per_sample_gradients(&Objective::new(Samples::all(Split::Train)), &[0]),
        Err(Error::MissingCapability { .. })
    ));
    assert!(matches!(
        host.train_epoch(),
        Err(Error::MissingCapability { .. })
    ));
    // A parameter index the host does not have.
    let mut host = Quadratic::new(vec![Capability::Gradient]);
    assert!(
        prune_host(
            &ReferenceBackend,
            &mut host,
            Measure::Snip,
            &[3],
            &[],
            &PruneConfig::new(0.5),
            &config
        )
        .is_err()
    );
    // A non-positive temperature.
    let bad = MeasureConfig::default().temperature(0.0);
    assert!(
        prune_host(
            &ReferenceBackend,
            &mut host,
            Measure::Snip,
            &[0],
            &[],
            &PruneConfig::new(0.5),
            &bad
        )
        .is_err()
    );
}

#[test]
fn the_flow_floor_keeps_more_than_the_minimum_density() {
    // floor(0.05 * 16) + 1 = 1 and floor(0.05 * 40) + 1 = 3 (not ceil = 2).
    let b = ReferenceBackend;
    let w1 = b
        .upload(&[1.0; 16], &Shape::matrix(16, 1).unwrap())
        .unwrap();
    let w2 = b
        .upload(&[0.0; 40], &Shape::matrix(40, 1).unwrap())
        .unwrap();
    let layers = [
        prunus_core::Layer::new("a", &w1),
        prunus_core::Layer::new("b", &w2),
    ];
    let config = PruneConfig::new(0.9)
        .granularity(Granularity::NEURONS)
        .min_density(0.05)
        .exceed_min_density(true);
    let masks = prunus_core::prune(&b, &layers, &config).unwrap();
    // 0.9 * 56 = 50 go; b's zeros go first down to its floor of 3.
    assert_eq!(masks[1].count_kept(), 3);
    assert_eq!(masks[0].count_kept(), 3);
    let ceil = PruneConfig::new(0.9)
        .granularity(Granularity::NEURONS)
        .min_density(0.05);
    let masks = prunus_core::prune(&b, &layers, &ceil).unwrap();
    assert_eq!(masks[1].count_kept(), 2);
}

#[test]
fn every_measure_gives_the_same_masks_on_the_gpu() {
    let Some(gpu) = prunus_tests::gpu::wgpu_backend() else {
        return;
    };
    for granularity in [Granularity::Unstructured, Granularity::NEURONS] {
        for m in ALL {
            let (a, b) = on_both(&gpu, 6, m, &PruneConfig::new(0.4).granularity(granularity));
            assert_eq!(a, b, "{m} {granularity:?}");
        }
    }
}
