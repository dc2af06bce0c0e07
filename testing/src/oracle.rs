//! A naive oracle for [`prunus_core::prune()`]: it sorts every unit by
//! (score, global index) and takes the lowest greedily, instead of radix
//! selection over key histograms. It shares no selection code with core, so
//! agreement checks core's selection logic itself, not only backends against
//! each other.
//!
//! Group scores use [`Reduction::reduce`], which defines the canonical
//! summation order, and random scores [`prunus_core::contract::random::uniform`], which
//! defines the random stream; both are definitions, not algorithms under test.

use std::cmp::Ordering;

use prunus_core::contract::random::uniform;
use prunus_core::{
    Error, Granularity, Grouping, Importance, Mask, NanPolicy, NofM, PruneConfig, Reduction, Scope,
    Shape,
};

use crate::layers::HostLayer;

/// The masks [`prunus_core::prune()`] must return for `layers` and `config`.
///
/// Models the errors that depend on the data and the selection —
/// [`Error::GuardsExceeded`], [`Error::TargetBelowPrevious`] and
/// [`Error::NanScores`] — with core's fields; the request must otherwise be
/// valid (sparsities in range, known and unique names, N:M shapes that fit).
///
/// # Panics
/// On requests that fail validation, which the oracle does not model.
pub fn expected_masks(layers: &[HostLayer], config: &PruneConfig) -> Result<Vec<Mask>, Error> {
    let active: Vec<usize> = (0..layers.len())
        .filter(|&i| !config.guards.skip.iter().any(|s| *s == layers[i].name))
        .collect();
    assert!(!active.is_empty(), "oracle: every layer skipped");
    let keep_all = |l: &HostLayer| {
        l.mask
            .clone()
            .unwrap_or_else(|| Mask::keep_all(l.shape.clone()))
    };
    let mut out: Vec<Mask> = layers.iter().map(keep_all).collect();
    if let Granularity::NofM(p) = config.granularity {
        return n_of_m(layers, config, p, &active, out);
    }
    let units: Vec<UnitScores> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| UnitScores::of(l, i, config))
        .collect();
    let keep = select_units(layers, config, &active, &units)?;
    for (&i, keep) in active.iter().zip(keep) {
        let l = &layers[i];
        let earlier = |e: usize| l.mask.as_ref().is_none_or(|m| m.get(e));
        out[i] = match config.granularity {
            Granularity::Groups(g) => Mask::from_fn(l.shape.clone(), |e| {
                keep[unit_of(g, &l.shape, e)] && earlier(e)
            }),
            _ => Mask::from_fn(l.shape.clone(), |e| keep[e] && earlier(e)),
        };
    }
    Ok(out)
}

/// One unit's place in the pruning order, lowest pruned first: units an
/// earlier mask pruned, then NaN under [`NanPolicy::Lowest`], then scores by
/// value (`-0.0` equal to `0.0`), then NaN under [`NanPolicy::Highest`].
#[derive(Clone, Copy, Debug)]
struct Rank {
    class: u8,
    value: f32,
}

impl Rank {
    fn new(score: f32, alive: bool, nan: NanPolicy) -> Self {
        let (class, value) = if !alive {
            (0, 0.0)
        } else if score.is_nan() {
            (if nan == NanPolicy::Lowest { 1 } else { 3 }, 0.0)
        } else {
            (2, if score == 0.0 { 0.0 } else { score })
        };
        Rank { class, value }
    }

    fn cmp(&self, other: &Rank) -> Ordering {
        self.class
            .cmp(&other.class)
            .then(self.value.total_cmp(&other.value))
    }
}

/// The scores and earlier survival of a layer's units.
struct UnitScores {
    scores: Vec<f32>,
    alive: Vec<bool>,
}

impl UnitScores {
    fn of(l: &HostLayer, layer: usize, config: &PruneConfig) -> Self {
        let earlier = |e: usize| l.mask.as_ref().is_none_or(|m| m.get(e));
        match config.granularity {
            Granularity::Groups(g) => {
                let members: Vec<Vec<usize>> = (0..unit_count(g, &l.shape))
                    .map(|u| members(g, &l.shape, u))
                    .collect();
                let scores = match config.importance {
                    Importance::Random { seed } => (0..members.len())
                        .map(|u| uniform(seed, layer as u32, u as u64))
                        .collect(),
                    _ => members
                        .iter()
                        // A unit is scored by its surviving weights only.
                        .map(|m| {
                            config
                                .group_norm
                                .reduce(m.iter().map(|&e| if earlier(e) { l.data[e] } else { 0.0 }))
                        })
                        .collect(),
                };
                let alive = members
                    .iter()
                    .map(|m| m.iter().any(|&e| earlier(e)))
                    .collect();
                UnitScores { scores, alive }
            }
            _ => UnitScores {
                scores: element_scores(l, layer, config),
                alive: (0..l.numel()).map(earlier).collect(),
            },
        }
    }
}

/// Per-element scores of unstructured and N:M selection.
fn element_scores(l: &HostLayer, layer: usize, config: &PruneConfig) -> Vec<f32> {
    match config.importance {
        Importance::Random { seed } => (0..l.numel())
            .map(|e| uniform(seed, layer as u32, e as u64))
            .collect(),
        _ => l.data.iter().map(|x| x.abs()).collect(),
    }
}

/// `ceil(d * n)`, ignoring float noise, as the minimum-density guard counts.
fn min_kept(density: f64, n: u64) -> u64 {
    let x = density * n as f64;
    let r = x.round();
    let v = if (x - r).abs() <= 1e-9 * x.max(1.0) {
        r
    } else {
        x.ceil()
    };
    (v as u64).min(n)
}

fn k_of(sparsity: f64, n: u64) -> u64 {
    // f64::round rounds half away from zero, the crate's counting rule.
    (sparsity * n as f64).round() as u64
}

/// Keep flags per unit of every active layer.
fn select_units(
    layers: &[HostLayer],
    config: &PruneConfig,
    active: &[usize],
    units: &[UnitScores],
) -> Result<Vec<Vec<bool>>, Error> {
    let n = |i: usize| units[i].scores.len() as u64;
    let pruned = |i: usize| units[i].alive.iter().filter(|&&a| !a).count() as u64;
    let cap = |i: usize| {
        let floor =
            min_kept(config.guards.min_density, n(i)).max(!config.guards.allow_empty as u64);
        (n(i) - floor.min(n(i))).max(pruned(i))
    };
    let ranks: Vec<Vec<Rank>> = units
        .iter()
        .map(|u| {
            u.scores
                .iter()
                .zip(&u.alive)
                .map(|(&s, &a)| Rank::new(s, a, config.nan))
                .collect()
        })
        .collect();
    let nan_count = |i: usize| {
        ranks[i]
            .iter()
            .filter(|r| r.class == 1 || r.class == 3)
            .count() as u64
    };
    let nan_error = |i: usize| -> Result<(), Error> {
        if config.nan == NanPolicy::Error && nan_count(i) > 0 {
            return Err(Error::NanScores {
                layer: layers[i].name.clone(),
                count: nan_count(i),
            });
        }
        Ok(())
    };
    let lowest_first = |i: usize| {
        let mut order: Vec<usize> = (0..ranks[i].len()).collect();
        order.sort_by(|&a, &b| ranks[i][a].cmp(&ranks[i][b]).then(a.cmp(&b)));
        order
    };
    let local = |i: usize, s: f64| -> Result<Vec<bool>, Error> {
        let k = k_of(s, n(i));
        if k > cap(i) {
            return Err(Error::GuardsExceeded {
                layer: layers[i].name.clone(),
                requested: k,
                allowed: cap(i),
            });
        }
        if k < pruned(i) {
            return Err(Error::TargetBelowPrevious {
                layer: layers[i].name.clone(),
                pruned: pruned(i),
                target: k,
            });
        }
        nan_error(i)?;
        let mut keep = vec![true; n(i) as usize];
        for &e in &lowest_first(i)[..k as usize] {
            keep[e] = false;
        }
        Ok(keep)
    };
    match &config.scope {
        Scope::Local => active.iter().map(|&i| local(i, config.sparsity)).collect(),
        Scope::PerLayer(budget) => active
            .iter()
            .map(|&i| {
                let s = budget
                    .iter()
                    .find(|(name, _)| *name == layers[i].name)
                    .map(|&(_, s)| s)
                    .expect("oracle: a budget for every active layer");
                local(i, s)
            })
            .collect(),
        _ => {
            let total: u64 = active.iter().map(|&i| n(i)).sum();
            let k = k_of(config.sparsity, total);
            let allowed: u64 = active.iter().map(|&i| cap(i)).sum();
            let already: u64 = active.iter().map(|&i| pruned(i)).sum();
            if k > allowed {
                return Err(Error::GuardsExceeded {
                    layer: "(global)".into(),
                    requested: k,
                    allowed,
                });
            }
            if k < already {
                return Err(Error::TargetBelowPrevious {
                    layer: "(global)".into(),
                    pruned: already,
                    target: k,
                });
            }
            for &i in active {
                nan_error(i)?;
            }
            // Every unit of every active layer, lowest (rank, layer, index) first.
            let mut all: Vec<(usize, usize)> = active
                .iter()
                .enumerate()
                .flat_map(|(t, &i)| (0..n(i) as usize).map(move |e| (t, e)))
                .collect();
            all.sort_by(|&(ta, ea), &(tb, eb)| {
                ranks[active[ta]][ea]
                    .cmp(&ranks[active[tb]][eb])
                    .then(ta.cmp(&tb))
                    .then(ea.cmp(&eb))
            });
            let mut keep: Vec<Vec<bool>> =
                active.iter().map(|&i| vec![true; n(i) as usize]).collect();
            let mut count = vec![0u64; active.len()];
            let caps: Vec<u64> = active.iter().map(|&i| cap(i)).collect();
            let mut taken = 0;
            for (t, e) in all {
                if taken == k {
                    break;
                }
                if count[t] < caps[t] {
                    keep[t][e] = false;
                    count[t] += 1;
                    taken += 1;
                }
            }
            Ok(keep)
        }
    }
}

fn n_of_m(
    layers: &[HostLayer],
    config: &PruneConfig,
    p: NofM,
    active: &[usize],
    mut out: Vec<Mask>,
) -> Result<Vec<Mask>, Error> {
    for &i in active {
        let l = &layers[i];
        let earlier = |e: usize| l.mask.as_ref().is_none_or(|m| m.get(e));
        let scores = element_scores(l, i, config);
        let ranks: Vec<Rank> = (0..l.numel())
            .map(|e| Rank::new(scores[e], earlier(e), config.nan))
            .collect();
        let nan = ranks
            .iter()
            .filter(|r| r.class == 1 || r.class == 3)
            .count() as u64;
        if config.nan == NanPolicy::Error && nan > 0 {
            return Err(Error::NanScores {
                layer: l.name.clone(),
                count: nan,
            });
        }
        let mut keep = vec![true; l.numel()];
        for g in (0..l.numel()).step_by(p.m) {
            let mut order: Vec<usize> = (g..g + p.m).collect();
            order.sort_by(|&a, &b| ranks[a].cmp(&ranks[b]).then(a.cmp(&b)));
            for &e in &order[..p.m - p.n] {
                keep[e] = false;
            }
        }
        out[i] = Mask::from_fn(l.shape.clone(), |e| keep[e] && earlier(e));
    }
    Ok(out)
}

/// `(rows, cols)` of the matrix view, computed here rather than by core.
pub fn matrix_view(shape: &Shape) -> (usize, usize) {
    match shape.dims() {
        [] => (1, 1),
        [n] => (1, *n),
        [r, rest @ ..] => (*r, rest.iter().product()),
    }
}

/// The number of units of `g` in a tensor of `shape`.
pub fn unit_count(g: Grouping, shape: &Shape) -> usize {
    let (r, c) = matrix_view(shape);
    match g {
        Grouping::Rows => r,
        Grouping::Columns => c,
        Grouping::Blocks { rows, cols } => r.div_ceil(rows) * c.div_ceil(cols),
        _ => panic!("oracle: unknown grouping {g:?}"),
    }
}

/// The unit of `g` holding element `e`.
pub fn unit_of(g: Grouping, shape: &Shape, e: usize) -> usize {
    let (_, c) = matrix_view(shape);
    let (i, j) = (e / c, e % c);
    match g {
        Grouping::Rows => i,
        Grouping::Columns => j,
        Grouping::Blocks { rows, cols } => (i / rows) * c.div_ceil(cols) + j / cols,
        _ => panic!("oracle: unknown grouping {g:?}"),
    }
}

/// The elements of unit `u`, row-major.
pub fn members(g: Grouping, shape: &Shape, u: usize) -> Vec<usize> {
    let (r, c) = matrix_view(shape);
    let (r0, r1, c0, c1) = match g {
        Grouping::Rows => (u, u + 1, 0, c),
        Grouping::Columns => (0, r, u, u + 1),
        Grouping::Blocks { rows, cols } => {
            let (bi, bj) = (u / c.div_ceil(cols), u % c.div_ceil(cols));
            (
                bi * rows,
                r.min((bi + 1) * rows),
                bj * cols,
                c.min((bj + 1) * cols),
            )
        }
        _ => panic!("oracle: unknown grouping {g:?}"),
    };
    (r0..r1)
        .flat_map(|i| (c0..c1).map(move |j| i * c + j))
        .collect()
}

/// The reduction of a group done the obvious way (sequential, one
/// accumulator), for checks that are exact whatever the order (integers).
pub fn plain_reduce(r: Reduction, values: &[f32]) -> f32 {
    match r {
        Reduction::Sum => values.iter().sum(),
        Reduction::L1 => values.iter().map(|x| x.abs()).sum(),
        Reduction::SumSquares => values.iter().map(|x| x * x).sum(),
        Reduction::MaxAbs => values.iter().fold(0.0, |a, x| a.max(x.abs())),
    }
}
