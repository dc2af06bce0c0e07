//! The invariants of pruning as reusable checks. Each returns `Ok(())` or a
//! [`Violation`] that names the invariant, the layer and the element, so a
//! failing property says what went wrong rather than `assertion failed`.
//!
//! They hold for any pruning code that follows prunus's rules, not only for
//! [`prunus_core::prune()`]: a backend of your own, a framework's training
//! loop that keeps masks, or a pruning routine written by hand.
//!
//! | invariant | check |
//! |---|---|
//! | exactly `round(s · n)` pruned per scope | [`exact_count`], [`count_matches_config`] |
//! | ties pruned lowest global index first | [`ties_to_lowest_index`] |
//! | masks only shrink across steps | [`masks_only_shrink`] |
//! | every N:M group keeps `n` of `m` | [`n_of_m_valid`] |
//! | guards respected (skip, minimum density, never empty) | [`guards_respected`] |
//! | pruned weights are `+0.0` (zero of either sign through training) | [`pruned_weights_zero`], [`mask_applied`], [`pruned_weights_zero_either_sign`] |
//! | two mask sets equal bit for bit | [`masks_equal`] |
//!
//! ```
//! use prunus_core::{prune, Layer, PruneConfig, ReferenceBackend, Backend, Shape};
//! use prunus_testing::invariants::{exact_count, ties_to_lowest_index};
//! use prunus_testing::layers::HostLayer;
//!
//! let layer = HostLayer::new("w", &[2, 4], vec![0.5, -0.5, 0.1, 0.5, 2.0, -0.5, 0.0, 1.0]);
//! let t = ReferenceBackend.upload(&layer.data, &layer.shape)?;
//! let masks = prune(&ReferenceBackend, &[Layer::new("w", &t)], &PruneConfig::new(0.5))?;
//! exact_count("w", &masks, 0.5)?;
//! ties_to_lowest_index(&[layer], &masks, prunus_core::NanPolicy::Error)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cmp::Ordering;
use std::fmt;

use prunus_core::{Granularity, HasShape, Mask, NanPolicy, NofM, PruneConfig, Scope};

use crate::layers::HostLayer;

/// A broken invariant: which one, in which layer, at which element, with the
/// values that disagree.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Violation {
    /// A scope prunes a number of units other than `round(s · n)`.
    Count {
        /// The scope: a layer's name, or `(global)`.
        scope: String,
        /// Units pruned.
        pruned: u64,
        /// Units that should be: `round(sparsity · units)`.
        expected: u64,
        /// Units in the scope.
        units: u64,
        /// The sparsity asked for.
        sparsity: f64,
    },
    /// A kept element ranks below a pruned one: its score is lower, or equal
    /// with a lower global index (ties go to the lowest index first).
    TieOrder {
        /// The kept element: layer, flat index, score.
        kept: (String, usize, f32),
        /// The pruned element that should have been kept instead.
        pruned: (String, usize, f32),
    },
    /// An element an earlier mask pruned is kept again.
    Revived {
        /// The layer.
        layer: String,
        /// The element's flat index.
        index: usize,
    },
    /// An N:M group keeps the wrong number of elements.
    NofM {
        /// The layer.
        layer: String,
        /// The group's position (flat index / `m`).
        group: usize,
        /// Elements it keeps.
        kept: usize,
        /// The pattern.
        pattern: NofM,
    },
    /// A layer the guards skip was pruned.
    SkippedPruned {
        /// The layer.
        layer: String,
        /// The first element pruned that its earlier mask (if any) kept.
        index: usize,
    },
    /// A layer keeps fewer units than its minimum density or the never-empty
    /// guard allows.
    BelowFloor {
        /// The layer.
        layer: String,
        /// Units kept.
        kept: u64,
        /// Units it must keep at least.
        floor: u64,
        /// Units in the layer.
        units: u64,
    },
    /// A pruned weight is not `+0.0` (or, where the check allows either
    /// sign, not zero).
    PrunedNotZero {
        /// The layer.
        layer: String,
        /// The weight's flat index.
        index: usize,
        /// Its value.
        value: f32,
        /// Whether `-0.0` was allowed.
        either_sign: bool,
    },
    /// A kept weight changed when the mask was applied.
    KeptChanged {
        /// The layer.
        layer: String,
        /// The weight's flat index.
        index: usize,
        /// Its value before.
        before: f32,
        /// Its value after.
        after: f32,
    },
    /// Two mask sets differ at an element.
    MasksDiffer {
        /// The layer (or `mask i` for a position in a list).
        layer: String,
        /// The first element that differs.
        index: usize,
        /// Whether the first set keeps it (the second does the opposite).
        kept: bool,
        /// Elements the first set prunes in this layer.
        pruned: u64,
        /// Elements the second set prunes in this layer.
        expected_pruned: u64,
    },
    /// Two things that must have the same shape or length do not.
    Shape {
        /// What was compared.
        what: String,
        /// The first one's shape or length.
        found: String,
        /// The second one's.
        expected: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Count {
                scope,
                pruned,
                expected,
                units,
                sparsity,
            } => write!(
                f,
                "{scope}: {pruned} of {units} units pruned, expected exactly round({sparsity} * {units}) = {expected}"
            ),
            Violation::TieOrder { kept, pruned } => {
                let why = if kept.2 == pruned.2 || kept.2.is_nan() && pruned.2.is_nan() {
                    "ties must be pruned lowest global index first"
                } else {
                    "a lower score must be pruned first"
                };
                write!(
                    f,
                    "{}[{}] (score {}) is kept while {}[{}] (score {}) is pruned: {why}",
                    kept.0, kept.1, kept.2, pruned.0, pruned.1, pruned.2
                )
            }
            Violation::Revived { layer, index } => write!(
                f,
                "{layer}[{index}] is kept, but an earlier mask pruned it: masks may only shrink"
            ),
            Violation::NofM {
                layer,
                group,
                kept,
                pattern,
            } => write!(
                f,
                "{layer}: N:M group {group} (elements {}..{}) keeps {kept}, expected {} of {}",
                group * pattern.m,
                (group + 1) * pattern.m,
                pattern.n,
                pattern.m
            ),
            Violation::SkippedPruned { layer, index } => write!(
                f,
                "{layer} is skipped by the guards, yet element {index} was pruned"
            ),
            Violation::BelowFloor {
                layer,
                kept,
                floor,
                units,
            } => write!(
                f,
                "{layer} keeps {kept} of {units} units, below the {floor} its guards require"
            ),
            Violation::PrunedNotZero {
                layer,
                index,
                value,
                either_sign,
            } => write!(
                f,
                "{layer}[{index}] is pruned but holds {value} ({:#010x}), not {}",
                value.to_bits(),
                if *either_sign { "zero" } else { "+0.0" }
            ),
            Violation::KeptChanged {
                layer,
                index,
                before,
                after,
            } => write!(
                f,
                "{layer}[{index}] is kept but changed from {before} ({:#010x}) to {after} ({:#010x})",
                before.to_bits(),
                after.to_bits()
            ),
            Violation::MasksDiffer {
                layer,
                index,
                kept,
                pruned,
                expected_pruned,
            } => write!(
                f,
                "{layer}: masks differ first at element {index} ({} here, {} in the other); \
                 {pruned} pruned here, {expected_pruned} in the other",
                if *kept { "kept" } else { "pruned" },
                if *kept { "pruned" } else { "kept" },
            ),
            Violation::Shape {
                what,
                found,
                expected,
            } => write!(f, "{what}: {found} where {expected} was expected"),
        }
    }
}

impl std::error::Error for Violation {}

/// `round(s · n)`, half away from zero: the number of units a sparsity `s`
/// prunes out of `n`.
pub fn units_to_prune(sparsity: f64, units: u64) -> u64 {
    (sparsity * units as f64).round() as u64
}

fn same_len(what: impl Into<String>, found: usize, expected: usize) -> Result<(), Violation> {
    if found == expected {
        return Ok(());
    }
    Err(Violation::Shape {
        what: what.into(),
        found: found.to_string(),
        expected: expected.to_string(),
    })
}

fn same_shape(what: impl Into<String>, found: &Mask, expected: &Mask) -> Result<(), Violation> {
    if found.shape() == expected.shape() {
        return Ok(());
    }
    Err(Violation::Shape {
        what: what.into(),
        found: found.shape().to_string(),
        expected: expected.shape().to_string(),
    })
}

/// The masks of one scope together prune exactly `round(sparsity · n)` of
/// their `n` elements. Call it once with every mask for global pruning, once
/// per layer for local pruning.
pub fn exact_count(scope: &str, masks: &[Mask], sparsity: f64) -> Result<(), Violation> {
    let units: u64 = masks.iter().map(|m| m.len() as u64).sum();
    let pruned: u64 = masks.iter().map(|m| m.count_pruned()).sum();
    let expected = units_to_prune(sparsity, units);
    if pruned == expected {
        return Ok(());
    }
    Err(Violation::Count {
        scope: scope.to_string(),
        pruned,
        expected,
        units,
        sparsity,
    })
}

/// The masks `prune()` returned for `layers` under `config` prune exactly
/// `round(s · n)` units in every scope: all non-skipped layers together for
/// [`Scope::Global`], each non-skipped layer for [`Scope::Local`] and
/// [`Scope::PerLayer`] (with its own sparsity). Units are elements, or rows,
/// columns or blocks under [`Granularity::Groups`] (a unit counts as pruned
/// when none of its elements is kept). N:M selections have no sparsity
/// target: see [`n_of_m_valid`].
pub fn count_matches_config(
    layers: &[HostLayer],
    masks: &[Mask],
    config: &PruneConfig,
) -> Result<(), Violation> {
    same_len("number of masks", masks.len(), layers.len())?;
    if matches!(config.granularity, Granularity::NofM(_)) {
        return Ok(());
    }
    let units = |m: &Mask| -> Result<Mask, Violation> {
        match config.granularity {
            Granularity::Groups(g) => m.reduce_any(g).map_err(|e| Violation::Shape {
                what: format!("groups {g:?} of a mask"),
                found: m.shape().to_string(),
                expected: e.to_string(),
            }),
            _ => Ok(m.clone()),
        }
    };
    let active: Vec<(&HostLayer, Mask)> = layers
        .iter()
        .zip(masks)
        .filter(|(l, _)| !config.guards.skip.contains(&l.name))
        .map(|(l, m)| Ok((l, units(m)?)))
        .collect::<Result<_, Violation>>()?;
    match &config.scope {
        Scope::Local => active
            .iter()
            .try_for_each(|(l, m)| exact_count(&l.name, std::slice::from_ref(m), config.sparsity)),
        Scope::PerLayer(budget) => active.iter().try_for_each(|(l, m)| {
            let s = budget
                .iter()
                .find(|(name, _)| *name == l.name)
                .map_or(0.0, |&(_, s)| s);
            exact_count(&l.name, std::slice::from_ref(m), s)
        }),
        _ => {
            let all: Vec<Mask> = active.into_iter().map(|(_, m)| m).collect();
            exact_count("(global)", &all, config.sparsity)
        }
    }
}

/// An element's place in the pruning order: elements an earlier mask pruned
/// first, then NaN under [`NanPolicy::Lowest`], then scores by value (`-0.0`
/// equal to `0.0`), then NaN otherwise.
fn rank(score: f32, alive: bool, nan: NanPolicy) -> (u8, f32) {
    if !alive {
        (0, 0.0)
    } else if score.is_nan() {
        (if nan == NanPolicy::Lowest { 1 } else { 3 }, 0.0)
    } else {
        (2, if score == 0.0 { 0.0 } else { score })
    }
}

fn cmp_rank(a: (u8, f32), b: (u8, f32)) -> Ordering {
    a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))
}

/// The masks of one scope prune the lowest magnitudes `|w|` first and, among
/// equal magnitudes, the lowest global index first (layer order, then
/// row-major): the pruned elements are exactly a prefix of the order by
/// (magnitude, layer, index). Elements an earlier mask pruned
/// ([`HostLayer::mask`]) come first; NaN ranks by `nan`.
///
/// Pass every layer of a global scope together, or one layer at a time for
/// local pruning. The guards can stop a layer early (minimum density, never
/// empty), which breaks the prefix across layers: check global scopes whose
/// guards do not bind, or use [`guards_respected`]. For scores other than
/// magnitudes, put the scores in [`HostLayer::data`].
pub fn ties_to_lowest_index(
    layers: &[HostLayer],
    masks: &[Mask],
    nan: NanPolicy,
) -> Result<(), Violation> {
    same_len("number of masks", masks.len(), layers.len())?;
    let mut highest_pruned: Option<((u8, f32), usize, usize)> = None;
    let mut lowest_kept: Option<((u8, f32), usize, usize)> = None;
    for (li, (l, m)) in layers.iter().zip(masks).enumerate() {
        same_len(format!("{}: mask length", l.name), m.len(), l.data.len())?;
        for (e, &w) in l.data.iter().enumerate() {
            let alive = l.mask.as_ref().is_none_or(|p| p.get(e));
            let r = rank(w.abs(), alive, nan);
            let later = |a: &((u8, f32), usize, usize)| {
                cmp_rank(r, a.0).then((li, e).cmp(&(a.1, a.2))) == Ordering::Greater
            };
            if m.get(e) {
                if lowest_kept.as_ref().is_none_or(|k| !later(k)) {
                    lowest_kept = Some((r, li, e));
                }
            } else if highest_pruned.as_ref().is_none_or(later) {
                highest_pruned = Some((r, li, e));
            }
        }
    }
    let (Some(p), Some(k)) = (highest_pruned, lowest_kept) else {
        return Ok(());
    };
    if cmp_rank(p.0, k.0).then((p.1, p.2).cmp(&(k.1, k.2))) == Ordering::Less {
        return Ok(());
    }
    let at = |(_, l, e): ((u8, f32), usize, usize)| (layers[l].name.clone(), e, layers[l].data[e]);
    Err(Violation::TieOrder {
        kept: at(k),
        pruned: at(p),
    })
}

/// Every element an earlier mask pruned is still pruned in the later one
/// (iterative pruning and training keep masks nested), mask by mask.
pub fn masks_only_shrink(earlier: &[Mask], later: &[Mask]) -> Result<(), Violation> {
    same_len("number of masks", later.len(), earlier.len())?;
    for (i, (e, l)) in earlier.iter().zip(later).enumerate() {
        same_shape(format!("mask {i}"), l, e)?;
        if let Some(index) = (0..l.len()).find(|&j| l.get(j) && !e.get(j)) {
            return Err(Violation::Revived {
                layer: format!("mask {i}"),
                index,
            });
        }
    }
    Ok(())
}

/// Every group of `pattern.m` consecutive elements along a row of each
/// mask keeps exactly `pattern.n` (at most `n` where an earlier mask of
/// `earlier` pruned some, since masks only shrink). A row length that is not
/// a multiple of `m` is a [`Violation::Shape`].
pub fn n_of_m_valid(
    masks: &[Mask],
    pattern: NofM,
    earlier: Option<&[Mask]>,
) -> Result<(), Violation> {
    for (i, m) in masks.iter().enumerate() {
        let row = m.shape().matrix_view().1;
        if pattern.m == 0 || row % pattern.m != 0 {
            return Err(Violation::Shape {
                what: format!("mask {i}: rows of {}:{} groups", pattern.n, pattern.m),
                found: format!("rows of {row}"),
                expected: format!("a multiple of {}", pattern.m),
            });
        }
        let before = earlier.and_then(|e| e.get(i));
        for group in 0..m.len() / pattern.m {
            let members = group * pattern.m..(group + 1) * pattern.m;
            let kept = members.clone().filter(|&j| m.get(j)).count();
            let alive = members.filter(|&j| before.is_none_or(|b| b.get(j))).count();
            if kept != pattern.n.min(alive) {
                return Err(Violation::NofM {
                    layer: format!("mask {i}"),
                    group,
                    kept,
                    pattern,
                });
            }
        }
    }
    Ok(())
}

/// `ceil(d · n)` ignoring float noise (`0.1 · 10` is 1), as the minimum
/// density guard counts, or `floor(d · n) + 1` when the guard asks for
/// strictly more.
fn min_units(density: f64, n: u64, strictly_more: bool) -> u64 {
    let x = density * n as f64;
    let r = x.round();
    let exact = (x - r).abs() <= 1e-9 * x.max(1.0);
    let v = match (exact, strictly_more) {
        (true, false) => r,
        (true, true) => r + 1.0,
        (false, false) => x.ceil(),
        (false, true) => x.floor() + 1.0,
    };
    (v as u64).min(n)
}

/// The masks respect `config.guards`: a skipped layer keeps everything its
/// earlier mask kept; every other layer keeps at least its minimum density
/// of units (`ceil(d · n)`, or `floor(d · n) + 1` with
/// [`prunus_core::Guards::exceed_min_density`]) and at least one unit
/// unless [`prunus_core::Guards::allow_empty`], or as many as it had left
/// where an earlier mask already pruned more. Units are elements, or the
/// groups of [`Granularity::Groups`].
pub fn guards_respected(
    layers: &[HostLayer],
    masks: &[Mask],
    config: &PruneConfig,
) -> Result<(), Violation> {
    same_len("number of masks", masks.len(), layers.len())?;
    let guards = &config.guards;
    for (l, m) in layers.iter().zip(masks) {
        same_len(format!("{}: mask length", l.name), m.len(), l.numel())?;
        let earlier = |e: usize| l.mask.as_ref().is_none_or(|p| p.get(e));
        if guards.skip.contains(&l.name) {
            if let Some(index) = (0..m.len()).find(|&e| earlier(e) && !m.get(e)) {
                return Err(Violation::SkippedPruned {
                    layer: l.name.clone(),
                    index,
                });
            }
            continue;
        }
        let before = l
            .mask
            .clone()
            .unwrap_or_else(|| Mask::keep_all(l.shape.clone()));
        let (kept, had, units) = match config.granularity {
            Granularity::Groups(g) => {
                let count = |m: &Mask| m.reduce_any(g).map(|u| (u.count_kept(), u.len() as u64));
                let shape_error = |e: prunus_core::Error| Violation::Shape {
                    what: format!("{}: groups {g:?}", l.name),
                    found: l.shape.to_string(),
                    expected: e.to_string(),
                };
                let (kept, units) = count(m).map_err(shape_error)?;
                let (had, _) = count(&before).map_err(shape_error)?;
                (kept, had, units)
            }
            _ => (m.count_kept(), before.count_kept(), m.len() as u64),
        };
        let floor = min_units(guards.min_density, units, guards.exceed_min_density)
            .max(!guards.allow_empty as u64)
            .min(had);
        if kept < floor {
            return Err(Violation::BelowFloor {
                layer: l.name.clone(),
                kept,
                floor,
                units,
            });
        }
    }
    Ok(())
}

/// Every weight `mask` prunes is `+0.0` (not `-0.0`, not NaN): what
/// [`prunus_core::apply()`] writes, and what a host must keep through
/// training.
pub fn pruned_weights_zero(layer: &str, weights: &[f32], mask: &Mask) -> Result<(), Violation> {
    pruned_weights_vanish(layer, weights, mask, false)
}

/// Every weight `mask` prunes is zero of either sign: what the
/// [`prunus_core::Host`] contract asks of a host through training, where
/// frameworks mask by multiplying (`-w · 0` is `-0.0`).
pub fn pruned_weights_zero_either_sign(
    layer: &str,
    weights: &[f32],
    mask: &Mask,
) -> Result<(), Violation> {
    pruned_weights_vanish(layer, weights, mask, true)
}

fn pruned_weights_vanish(
    layer: &str,
    weights: &[f32],
    mask: &Mask,
    either_sign: bool,
) -> Result<(), Violation> {
    same_len(format!("{layer}: weights"), weights.len(), mask.len())?;
    let zero = |w: f32| w.to_bits() == 0 || (either_sign && w == 0.0);
    match (0..weights.len()).find(|&i| !mask.get(i) && !zero(weights[i])) {
        Some(index) => Err(Violation::PrunedNotZero {
            layer: layer.to_string(),
            index,
            value: weights[index],
            either_sign,
        }),
        None => Ok(()),
    }
}

/// `after` is `before` with `mask` applied: pruned weights `+0.0`, kept ones
/// unchanged bit for bit (NaN payloads included).
pub fn mask_applied(
    layer: &str,
    before: &[f32],
    after: &[f32],
    mask: &Mask,
) -> Result<(), Violation> {
    same_len(format!("{layer}: weights after"), after.len(), before.len())?;
    pruned_weights_zero(layer, after, mask)?;
    match (0..after.len()).find(|&i| mask.get(i) && after[i].to_bits() != before[i].to_bits()) {
        Some(index) => Err(Violation::KeptChanged {
            layer: layer.to_string(),
            index,
            before: before[index],
            after: after[index],
        }),
        None => Ok(()),
    }
}

/// The two mask sets are equal bit for bit, shape included; otherwise names
/// the first mask and element that differ.
pub fn masks_equal(got: &[Mask], want: &[Mask]) -> Result<(), Violation> {
    same_len("number of masks", got.len(), want.len())?;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        same_shape(format!("mask {i}"), g, w)?;
        if let Some(index) = (0..g.len()).find(|&e| g.get(e) != w.get(e)) {
            return Err(Violation::MasksDiffer {
                layer: format!("mask {i}"),
                index,
                kept: g.get(index),
                pruned: g.count_pruned(),
                expected_pruned: w.count_pruned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prunus_core::Shape;

    fn mask(bits: &[bool]) -> Mask {
        Mask::from_bools(Shape::vector(bits.len()), bits).unwrap()
    }

    #[test]
    fn counts_name_the_scope_and_the_target() {
        let m = [mask(&[false, true, true, true])];
        assert!(exact_count("w", &m, 0.25).is_ok());
        let e = exact_count("w", &m, 0.5).unwrap_err();
        assert_eq!(
            e.to_string(),
            "w: 1 of 4 units pruned, expected exactly round(0.5 * 4) = 2"
        );
    }

    #[test]
    fn ties_to_a_higher_index_are_named() {
        let layer = HostLayer::new("w", &[4], vec![0.5, 0.5, 1.0, 0.5]);
        let right = [mask(&[false, true, true, true])];
        assert!(
            ties_to_lowest_index(std::slice::from_ref(&layer), &right, NanPolicy::Error).is_ok()
        );
        let wrong = [mask(&[true, true, true, false])];
        let e = ties_to_lowest_index(std::slice::from_ref(&layer), &wrong, NanPolicy::Error)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "w[0] (score 0.5) is kept while w[3] (score 0.5) is pruned: \
             ties must be pruned lowest global index first"
        );
        let higher = [mask(&[true, true, false, true])];
        let e = ties_to_lowest_index(&[layer], &higher, NanPolicy::Error).unwrap_err();
        assert!(
            e.to_string().contains("a lower score must be pruned first"),
            "{e}"
        );
    }

    #[test]
    fn ties_run_across_layers_and_signed_zeros_tie() {
        let layers = [
            HostLayer::new("a", &[2], vec![0.0, 1.0]),
            HostLayer::new("b", &[2], vec![-0.0, 2.0]),
        ];
        let right = [mask(&[false, true]), mask(&[false, true])];
        assert!(ties_to_lowest_index(&layers, &right, NanPolicy::Error).is_ok());
        let first_only = [mask(&[false, true]), mask(&[true, true])];
        assert!(ties_to_lowest_index(&layers, &first_only, NanPolicy::Error).is_ok());
        let second_only = [mask(&[true, true]), mask(&[false, true])];
        let e = ties_to_lowest_index(&layers, &second_only, NanPolicy::Error).unwrap_err();
        assert!(matches!(e, Violation::TieOrder { .. }), "{e}");
    }

    #[test]
    fn revived_elements_are_named() {
        let before = [mask(&[true, false, true])];
        assert!(masks_only_shrink(&before, &[mask(&[false, false, true])]).is_ok());
        let e = masks_only_shrink(&before, &[mask(&[true, true, true])]).unwrap_err();
        assert_eq!(
            e,
            Violation::Revived {
                layer: "mask 0".into(),
                index: 1
            }
        );
    }

    #[test]
    fn n_of_m_groups_are_counted() {
        let p = NofM::TWO_FOUR;
        let good = [mask(&[true, false, true, false, false, true, true, false])];
        assert!(n_of_m_valid(&good, p, None).is_ok());
        let bad = [mask(&[true, false, true, false, true, true, true, false])];
        let e = n_of_m_valid(&bad, p, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "mask 0: N:M group 1 (elements 4..8) keeps 3, expected 2 of 4"
        );
        let short = [mask(&[true; 6])];
        assert!(matches!(
            n_of_m_valid(&short, p, None),
            Err(Violation::Shape { .. })
        ));
        // Where an earlier mask left one element of a group, one is enough.
        let earlier = [mask(&[true, false, false, false, true, true, true, true])];
        let after = [mask(&[true, false, false, false, true, true, false, false])];
        assert!(n_of_m_valid(&after, p, Some(&earlier)).is_ok());
    }

    #[test]
    fn guards_floor_and_skip() {
        let layers = [
            HostLayer::new("a", &[10], vec![1.0; 10]),
            HostLayer::new("b", &[4], vec![1.0; 4]),
        ];
        let config = PruneConfig::new(0.9).min_density(0.2).skip("b");
        let keeps = |k: usize, n: usize| mask(&(0..n).map(|i| i < k).collect::<Vec<_>>());
        assert!(guards_respected(&layers, &[keeps(2, 10), keeps(4, 4)], &config).is_ok());
        let e = guards_respected(&layers, &[keeps(1, 10), keeps(4, 4)], &config).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a keeps 1 of 10 units, below the 2 its guards require"
        );
        let e = guards_respected(&layers, &[keeps(2, 10), keeps(3, 4)], &config).unwrap_err();
        assert_eq!(
            e,
            Violation::SkippedPruned {
                layer: "b".into(),
                index: 3
            }
        );
        let empty = PruneConfig::new(1.0);
        let e = guards_respected(&layers[..1], &[keeps(0, 10)], &empty).unwrap_err();
        assert!(matches!(e, Violation::BelowFloor { floor: 1, .. }), "{e}");
        let allowed = PruneConfig::new(1.0).allow_empty(true);
        assert!(guards_respected(&layers[..1], &[keeps(0, 10)], &allowed).is_ok());
    }

    #[test]
    fn pruned_weights_must_be_positive_zero() {
        let m = mask(&[true, false, false]);
        assert!(pruned_weights_zero("w", &[3.0, 0.0, 0.0], &m).is_ok());
        let e = pruned_weights_zero("w", &[3.0, 0.0, -0.0], &m).unwrap_err();
        assert_eq!(
            e.to_string(),
            "w[2] is pruned but holds -0 (0x80000000), not +0.0"
        );
        let e = mask_applied("w", &[3.0, 1.0, 1.0], &[2.0, 0.0, 0.0], &m).unwrap_err();
        assert!(matches!(e, Violation::KeptChanged { index: 0, .. }), "{e}");
    }

    #[test]
    fn mask_sets_name_the_first_difference() {
        let a = [mask(&[true, true]), mask(&[true, false, true])];
        let b = [mask(&[true, true]), mask(&[true, true, false])];
        assert!(masks_equal(&a, &a).is_ok());
        let e = masks_equal(&a, &b).unwrap_err();
        assert_eq!(
            e.to_string(),
            "mask 1: masks differ first at element 1 (pruned here, kept in the other); \
             1 pruned here, 1 in the other"
        );
        let e = masks_equal(&a[..1], &b).unwrap_err();
        assert!(matches!(e, Violation::Shape { .. }), "{e}");
    }
}
