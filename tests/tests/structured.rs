//! Structured layer-wise pruning: every search against brute force on
//! layers small enough to enumerate, the refit against its closed form
//! computed independently, the scores against their formulas on raw
//! inputs, exact counts, and the same groups on every backend.

use prunus_core::methods::layerwise::{
    GroupLayout, GroupScore, GroupSearch, LayerStats, StructuredConfig, StructuredLayer,
    StructuredPruned, group_scores, kept_objective, structured, structured_error,
};
use prunus_core::{Dense, Matrix, ReferenceBackend};
use prunus_cpu::{CpuBackend, Par};
use prunus_lab::calibration::{correlated_inputs, layer_weights};
use prunus_tests::gpu::wgpu_backend;

/// A layer `[out, cols]`, a bias, `tokens` correlated inputs with an offset
/// (so the means matter) and their statistics.
struct Case {
    w: Matrix,
    bias: Vec<f64>,
    x: Vec<f32>,
    stats: LayerStats,
}

fn case(out: usize, cols: usize, tokens: usize, seed: u64) -> Case {
    let w = Matrix::from_f32(out, cols, &layer_weights(out, cols, seed)).unwrap();
    let mut x = correlated_inputs(&ReferenceBackend, tokens, cols, seed + 1000).unwrap();
    for (i, v) in x.iter_mut().enumerate() {
        *v += 0.3 * ((i % cols) as f32 / cols as f32 - 0.2);
    }
    let mut stats = LayerStats::new(cols, true).unwrap();
    stats.push(&x, tokens).unwrap();
    let bias = (0..out).map(|r| 0.1 * (r as f64 - 1.5)).collect();
    Case { w, bias, x, stats }
}

const SEARCHES: [GroupSearch; 6] = [
    GroupSearch::Backward,
    GroupSearch::Forward,
    GroupSearch::Score(GroupScore::Obs),
    GroupSearch::Score(GroupScore::Wanda),
    GroupSearch::Score(GroupScore::Fluctuation),
    GroupSearch::Score(GroupScore::Magnitude),
];

/// Every kept set that removes exactly `remove` groups from each set.
fn subsets(lay: &GroupLayout, remove: usize) -> Vec<Vec<bool>> {
    let n = lay.count();
    (0u32..1 << n)
        .filter(|bits| {
            (0..lay.sets()).all(|s| {
                let per = lay.per_set();
                (s * per..(s + 1) * per)
                    .filter(|&g| bits & (1 << g) == 0)
                    .count()
                    == remove
            })
        })
        .map(|bits| (0..n).map(|g| bits & (1 << g) != 0).collect())
        .collect()
}

fn kept_flags(p: &StructuredPruned, count: usize) -> Vec<bool> {
    (0..count).map(|g| p.kept.contains(&g)).collect()
}

/// On layers of at most 14 groups (widths 1 and 3, one and two sets, with
/// and without a bias): no search beats the enumerated optimum, swaps never
/// make a search worse, the reported objective is the kept set's, and the
/// counts are exact. Prints how often each search reaches the optimum.
#[test]
fn searches_against_brute_force() {
    let shapes: [(usize, usize, usize, bool); 4] = [
        (1, 12, 1, false),
        (1, 14, 2, true),
        (3, 8, 2, false),
        (2, 10, 1, true),
    ];
    let mut hits = vec![[0usize; 2]; SEARCHES.len()];
    let mut problems = 0;
    for (shape, &(width, count, sets, with_bias)) in shapes.iter().enumerate() {
        for seed in 0..6u64 {
            let cols = width * count;
            let c = case(5, cols, 3 * cols, 100 * shape as u64 + seed);
            let lay = GroupLayout::new(width, count)
                .unwrap()
                .in_sets(sets)
                .unwrap();
            let mut layer = StructuredLayer::new(&c.w, &c.stats, lay);
            if with_bias {
                layer = layer.bias(&c.bias);
            }
            for remove in [1, lay.per_set() / 2, lay.per_set() - 2] {
                problems += 1;
                let all = subsets(&lay, remove);
                let best = all
                    .iter()
                    .map(|k| kept_objective(&ReferenceBackend, &layer, k, 0.01).unwrap())
                    .fold(f64::INFINITY, f64::min);
                for (s, &search) in SEARCHES.iter().enumerate() {
                    let plain = StructuredConfig::new(search, remove).swaps(0);
                    let a = structured(&ReferenceBackend, &layer, &plain).unwrap();
                    let b = structured(&ReferenceBackend, &layer, &plain.swaps(50)).unwrap();
                    let (oa, ob) = (a.objective.unwrap(), b.objective.unwrap());
                    let tol = 1e-9 * best.abs().max(1e-12);
                    assert!(
                        oa >= best - tol && ob >= best - tol,
                        "{search:?} beat brute force"
                    );
                    assert!(
                        ob <= oa + tol,
                        "{search:?}: swaps made it worse ({oa} -> {ob})"
                    );
                    for p in [&a, &b] {
                        let k = kept_flags(p, count);
                        let direct = kept_objective(&ReferenceBackend, &layer, &k, 0.01).unwrap();
                        assert!(
                            (direct - p.objective.unwrap()).abs() <= 1e-9 * direct.abs().max(1.0)
                        );
                        for set in 0..sets {
                            let per = lay.per_set();
                            let gone = p.removed.iter().filter(|&&g| g / per == set).count();
                            assert_eq!(gone, remove, "{search:?}: exact count per set");
                        }
                        assert_eq!(p.weights.cols(), (count - remove * sets) * width);
                    }
                    hits[s][0] += usize::from(oa <= best + tol);
                    hits[s][1] += usize::from(ob <= best + tol);
                }
            }
        }
    }
    for (s, search) in SEARCHES.iter().enumerate() {
        println!(
            "{search:?}: optimal in {}/{problems} alone, {}/{problems} with swaps",
            hits[s][0], hits[s][1]
        );
    }
    // The exact searches with swaps reach the optimum in most problems
    // (measured: see the printout); a regression would fall well below.
    assert!(
        hits[0][1] * 10 >= problems * 9,
        "backward + swaps: {:?}",
        hits[0]
    );
    assert!(
        hits[1][1] * 10 >= problems * 9,
        "forward + swaps: {:?}",
        hits[1]
    );
}

/// `A⁻¹` by Gauss–Jordan elimination (independent of prunus's Cholesky).
fn inverse(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut m: Vec<Vec<f64>> = a
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut r = row.clone();
            r.extend((0..n).map(|j| f64::from(u8::from(i == j))));
            r
        })
        .collect();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&x, &y| m[x][c].abs().total_cmp(&m[y][c].abs()))
            .unwrap();
        m.swap(c, p);
        let d = m[c][c];
        m[c].iter_mut().for_each(|v| *v /= d);
        for r in 0..n {
            if r != c {
                let f = m[r][c];
                let pivot = m[c].clone();
                m[r].iter_mut().zip(&pivot).for_each(|(v, p)| *v -= f * p);
            }
        }
    }
    m.into_iter().map(|r| r[n..].to_vec()).collect()
}

/// The refit equals `W H_{:,S} (H_SS)⁻¹` (and, with a bias, the same on
/// `[X, 1]`), built here from the raw inputs; the undamped error equals
/// `‖(W − Ŵ) Xᵀ + (b − b̂)1ᵀ‖²` computed on the raw inputs.
#[test]
#[allow(clippy::needless_range_loop)] // matrix formulas read best indexed
fn refit_is_the_closed_form() {
    for with_bias in [false, true] {
        let (out, cols, tokens) = (4, 9, 40);
        let c = case(out, cols, tokens, 7);
        let lay = GroupLayout::new(3, 3).unwrap();
        let mut layer = StructuredLayer::new(&c.w, &c.stats, lay);
        if with_bias {
            layer = layer.bias(&c.bias);
        }
        let p = structured(
            &ReferenceBackend,
            &layer,
            &StructuredConfig::new(GroupSearch::Backward, 1).percdamp(0.0),
        )
        .unwrap();
        // Columns of the regression: the kept inputs, and 1 with a bias.
        let kept: Vec<usize> = p.kept.iter().flat_map(|&g| lay.columns(g)).collect();
        let m = kept.len() + usize::from(with_bias);
        let feature = |t: usize, a: usize| -> f64 {
            if a < kept.len() {
                f64::from(c.x[t * cols + kept[a]])
            } else {
                1.0
            }
        };
        let mut hss = vec![vec![0.0; m]; m];
        for t in 0..tokens {
            for a in 0..m {
                for b in 0..m {
                    hss[a][b] += feature(t, a) * feature(t, b);
                }
            }
        }
        let inv = inverse(&hss);
        for r in 0..out {
            // y_t = w_r · x_t + b_r; the refit solves (FᵀF) θ = Fᵀ y.
            let y: Vec<f64> = (0..tokens)
                .map(|t| {
                    (0..cols)
                        .map(|j| c.w.get(r, j) * f64::from(c.x[t * cols + j]))
                        .sum::<f64>()
                        + if with_bias { c.bias[r] } else { 0.0 }
                })
                .collect();
            let fy: Vec<f64> = (0..m)
                .map(|a| (0..tokens).map(|t| feature(t, a) * y[t]).sum())
                .collect();
            for a in 0..m {
                let want: f64 = (0..m).map(|b| inv[a][b] * fy[b]).sum();
                let got = if a < kept.len() {
                    p.weights.get(r, a)
                } else {
                    p.bias.as_ref().unwrap()[r]
                };
                assert!(
                    (got - want).abs() <= 1e-8 * (1.0 + want.abs()),
                    "row {r} col {a}: {got} vs {want}"
                );
            }
        }
        // The error on the raw inputs.
        let wide = p.widened(&lay);
        let mut direct = 0.0;
        for t in 0..tokens {
            for r in 0..out {
                let mut d: f64 = (0..cols)
                    .map(|j| (c.w.get(r, j) - wide.get(r, j)) * f64::from(c.x[t * cols + j]))
                    .sum();
                if with_bias {
                    d += c.bias[r] - p.bias.as_ref().unwrap()[r];
                }
                direct += d * d;
            }
        }
        let reported = structured_error(&ReferenceBackend, &layer, &p).unwrap();
        assert!(
            (reported - direct).abs() <= 1e-8 * direct.max(1.0),
            "{reported} vs {direct}"
        );
    }
}

/// The scores equal their formulas on the raw inputs.
#[test]
fn scores_are_their_formulas() {
    let (out, cols, tokens) = (3, 8, 30);
    let c = case(out, cols, tokens, 11);
    let lay = GroupLayout::new(2, 4).unwrap();
    let tied = [0.5, 0.0, 2.0, 1.0];
    let layer = StructuredLayer::new(&c.w, &c.stats, lay).tied_squares(&tied);
    let x = &c.x;
    let col = |j: usize| (0..tokens).map(move |t| f64::from(x[t * cols + j]));
    let mag = group_scores(&ReferenceBackend, &layer, GroupScore::Magnitude, 0.01).unwrap();
    let wanda = group_scores(&ReferenceBackend, &layer, GroupScore::Wanda, 0.01).unwrap();
    let fluct = group_scores(&ReferenceBackend, &layer, GroupScore::Fluctuation, 0.01).unwrap();
    for g in 0..4 {
        let mut m = tied[g];
        let (mut w, mut f) = (0.0, 0.0);
        for j in lay.columns(g) {
            let sq: f64 = (0..out).map(|r| c.w.get(r, j).powi(2)).sum();
            let abs: f64 = (0..out).map(|r| c.w.get(r, j).abs()).sum();
            m += sq;
            w += abs * col(j).map(|v| v * v).sum::<f64>().sqrt();
            let mean = col(j).sum::<f64>() / tokens as f64;
            let var = col(j).map(|v| (v - mean).powi(2)).sum::<f64>() / tokens as f64;
            f += var * sq;
        }
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1e-9);
        assert!(close(mag[g], m.sqrt()), "magnitude {g}");
        assert!(close(wanda[g], w), "wanda {g}");
        assert!(close(fluct[g], f), "fluctuation {g}");
    }
    // A score-based cut without refit removes exactly the lowest.
    let p = structured(
        &ReferenceBackend,
        &layer,
        &StructuredConfig::new(GroupSearch::Score(GroupScore::Magnitude), 2)
            .refit(false)
            .swaps(0),
    )
    .unwrap();
    let mut order: Vec<usize> = (0..4).collect();
    order.sort_by(|&a, &b| mag[a].total_cmp(&mag[b]));
    let mut want = order[..2].to_vec();
    want.sort();
    assert_eq!(p.removed, want);
    assert_eq!(p.objective, None);
    assert_eq!(
        p.weights,
        c.w.select_cols(
            &p.kept
                .iter()
                .flat_map(|&g| lay.columns(g))
                .collect::<Vec<_>>()
        )
    );
}

/// FLAP without refit shifts the bias by `W_:,P mean(X_P)`.
#[test]
fn fluctuation_compensates_the_bias() {
    let c = case(3, 6, 25, 5);
    let lay = GroupLayout::new(1, 6).unwrap();
    let layer = StructuredLayer::new(&c.w, &c.stats, lay).bias(&c.bias);
    let p = structured(
        &ReferenceBackend,
        &layer,
        &StructuredConfig::new(GroupSearch::Score(GroupScore::Fluctuation), 2)
            .refit(false)
            .swaps(0),
    )
    .unwrap();
    let sums = c.stats.sums().unwrap();
    for r in 0..3 {
        let shift: f64 = p
            .removed
            .iter()
            .map(|&j| c.w.get(r, j) * sums[j] / 25.0)
            .sum();
        assert!((p.bias.as_ref().unwrap()[r] - c.bias[r] - shift).abs() < 1e-12);
    }
}

/// Bad requests are errors, never panics.
#[test]
fn bad_requests_are_errors() {
    let c = case(3, 6, 20, 3);
    let lay = GroupLayout::new(2, 3).unwrap();
    let layer = StructuredLayer::new(&c.w, &c.stats, lay);
    let run =
        |l: &StructuredLayer<'_>, cfg: StructuredConfig| structured(&ReferenceBackend, l, &cfg);
    // Removing every group.
    assert!(run(&layer, StructuredConfig::new(GroupSearch::Backward, 3)).is_err());
    // A layout that does not cover the columns.
    let wrong = StructuredLayer::new(&c.w, &c.stats, GroupLayout::new(4, 2).unwrap());
    assert!(run(&wrong, StructuredConfig::new(GroupSearch::Backward, 1)).is_err());
    // Sets that do not divide the groups; zero widths.
    assert!(GroupLayout::new(2, 3).unwrap().in_sets(2).is_err());
    assert!(GroupLayout::new(0, 3).is_err());
    // NaN weights.
    let mut nan = c.w.clone();
    nan.data_mut()[4] = f64::NAN;
    let bad = StructuredLayer::new(&nan, &c.stats, lay);
    assert!(run(&bad, StructuredConfig::new(GroupSearch::Forward, 1)).is_err());
    // Fluctuation without column sums, the refit without a Gram matrix.
    let imported = LayerStats::from_sums(20, c.stats.sum_squares().to_vec(), None).unwrap();
    let no_sums = StructuredLayer::new(&c.w, &imported, lay);
    let flap = StructuredConfig::new(GroupSearch::Score(GroupScore::Fluctuation), 1)
        .refit(false)
        .swaps(0);
    assert!(run(&no_sums, flap).is_err());
    assert!(
        run(
            &no_sums,
            StructuredConfig::new(GroupSearch::Score(GroupScore::Wanda), 1)
        )
        .is_err()
    );
    // A zero batch, a negative dampening, a bias of the wrong length.
    assert!(
        run(
            &layer,
            StructuredConfig::new(GroupSearch::Backward, 1).batch(0)
        )
        .is_err()
    );
    assert!(
        run(
            &layer,
            StructuredConfig::new(GroupSearch::Backward, 1).percdamp(-1.0)
        )
        .is_err()
    );
    let short = [0.0; 2];
    assert!(
        run(
            &layer.bias(&short),
            StructuredConfig::new(GroupSearch::Backward, 1)
        )
        .is_err()
    );
}

/// Batched searches keep exact counts and stay close to the one-at-a-time
/// search; on a wide layer the automatic batch is 1 below `MAX_STEPS`.
#[test]
fn batched_searches_keep_counts() {
    let c = case(6, 48, 200, 17);
    let lay = GroupLayout::new(1, 48).unwrap().in_sets(4).unwrap();
    let layer = StructuredLayer::new(&c.w, &c.stats, lay);
    for search in [GroupSearch::Backward, GroupSearch::Forward] {
        let one = structured(
            &ReferenceBackend,
            &layer,
            &StructuredConfig::new(search, 6).swaps(0),
        )
        .unwrap();
        let four = structured(
            &ReferenceBackend,
            &layer,
            &StructuredConfig::new(search, 6).swaps(0).batch(4),
        )
        .unwrap();
        for p in [&one, &four] {
            assert_eq!(p.removed.len(), 24);
            for s in 0..4 {
                assert_eq!(p.removed.iter().filter(|&&g| g / 12 == s).count(), 6);
            }
        }
        println!(
            "{search:?}: batch 1 {:.6e}, batch 4 {:.6e}",
            one.objective.unwrap(),
            four.objective.unwrap()
        );
    }
}

/// The same groups, and refit weights within the backend's rounding, on
/// the reference loops, the CPU backend on one and two threads, and the GPU.
#[test]
fn same_groups_on_every_backend() {
    let mut dense: Vec<(String, Box<dyn Dense>)> = vec![
        (
            "cpu(seq)".into(),
            Box::new(CpuBackend::new(Par::Seq).unwrap()),
        ),
        (
            "cpu(2)".into(),
            Box::new(CpuBackend::new(Par::Rayon(2)).unwrap()),
        ),
    ];
    if let Some(g) = wgpu_backend() {
        dense.push(("wgpu".into(), Box::new(g)));
    }
    let c = case(24, 64, 256, 31);
    for (width, sets) in [(1, 1), (8, 2)] {
        let lay = GroupLayout::new(width, 64 / width)
            .unwrap()
            .in_sets(sets)
            .unwrap();
        let layer = StructuredLayer::new(&c.w, &c.stats, lay).bias(&c.bias);
        let remove = lay.per_set() / 2;
        let run = |d: &dyn Dense| -> Vec<StructuredPruned> {
            SEARCHES
                .iter()
                .map(|&s| structured(d, &layer, &StructuredConfig::new(s, remove)).unwrap())
                .collect()
        };
        let want = run(&ReferenceBackend);
        for (name, d) in &dense {
            let got = run(d.as_ref());
            let tol = d.unit_roundoff() * 1e5;
            for (s, (g, r)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.kept, r.kept, "{name} width {width} search {s}: groups");
                for (a, b) in g.weights.data().iter().zip(r.weights.data()) {
                    assert!(
                        (a - b).abs() <= tol * (1.0 + b.abs()),
                        "{name} search {s}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
