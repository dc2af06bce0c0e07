//! Assertions with messages that say where two results part ways.

use prunus_core::{Error, Mask};

use crate::invariants::masks_equal;

/// Two floats are the same bits, or both NaN (NaN payloads may differ
/// between devices).
pub fn same_bits(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Panics unless `got` and `want` agree bit for bit ([`same_bits`]).
#[track_caller]
pub fn assert_bits_eq(context: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{context}: length differs");
    if let Some(i) = (0..got.len()).find(|&i| !same_bits(got[i], want[i])) {
        panic!(
            "{context}: element {i} is {} ({:#010x}), expected {} ({:#010x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

/// What a backend that flushes subnormals may return instead of the exact
/// result, at an element a subnormal value took part in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slack {
    /// The result computed with every subnormal operand and result flushed
    /// to a zero of the same sign (which turns `subnormal * inf` into NaN).
    pub flushed: f32,
    /// How far a finite result may be from a finite exact one.
    pub within: f64,
}

/// Panics unless `got` and `want` agree bit for bit ([`same_bits`]), except
/// where `slack[i]` is given: there `got[i]` may instead be the flushed
/// result, bit for bit, or finite and within `within` of a finite `want[i]`.
/// The conformance suite gives slack only to the elements a subnormal value
/// took part in, on a backend that flushes subnormals
/// ([`prunus_core::Backend::flushes_subnormals`]).
#[track_caller]
pub fn assert_bits_eq_within(context: &str, got: &[f32], want: &[f32], slack: &[Option<Slack>]) {
    assert_eq!(got.len(), want.len(), "{context}: length differs");
    assert_eq!(got.len(), slack.len(), "{context}: one slack per element");
    let allowed = |i: usize| {
        slack[i].is_some_and(|s| {
            same_bits(got[i], s.flushed)
                || (got[i].is_finite()
                    && want[i].is_finite()
                    && (got[i] as f64 - want[i] as f64).abs() <= s.within)
        })
    };
    if let Some(i) = (0..got.len()).find(|&i| !same_bits(got[i], want[i]) && !allowed(i)) {
        let allowed = slack[i].map_or("bit for bit".into(), |s| {
            format!("or {} (flushed) or within {:e}", s.flushed, s.within)
        });
        panic!(
            "{context}: element {i} is {} ({:#010x}), expected {} ({:#010x}) {allowed}",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

/// Panics unless `|got_i - want_i| <= tolerance[i]` for every `i` (NaN and
/// infinities must match exactly).
#[track_caller]
pub fn assert_close(context: &str, got: &[f32], want: &[f32], tolerance: &[f64]) {
    assert_eq!(got.len(), want.len(), "{context}: length differs");
    for i in 0..got.len() {
        let (g, w) = (got[i] as f64, want[i] as f64);
        let ok = if g.is_finite() && w.is_finite() {
            (g - w).abs() <= tolerance[i]
        } else {
            same_bits(got[i], want[i])
        };
        assert!(
            ok,
            "{context}: element {i} is {g}, expected {w} (difference {}, tolerance {})",
            (g - w).abs(),
            tolerance[i]
        );
    }
}

/// Panics unless the masks are equal, naming the first layer and element that
/// differ ([`masks_equal`]).
#[track_caller]
pub fn assert_masks_eq(context: &str, got: &[Mask], want: &[Mask]) {
    if let Err(v) = masks_equal(got, want) {
        panic!("{context}: {v}");
    }
}

/// Panics unless both results are equal masks or equal errors.
#[track_caller]
pub fn assert_same_masks(
    context: &str,
    got: &Result<Vec<Mask>, Error>,
    want: &Result<Vec<Mask>, Error>,
) {
    match (got, want) {
        (Ok(g), Ok(w)) => assert_masks_eq(context, g, w),
        (Err(g), Err(w)) => assert_eq!(g, w, "{context}: different errors"),
        (Ok(_), Err(w)) => panic!("{context}: succeeded where the oracle fails with {w:?} ({w})"),
        (Err(g), Ok(_)) => panic!("{context}: failed with {g:?} ({g}) where the oracle succeeds"),
    }
}

/// Panics unless both results are errors of the same variant (fields may
/// differ, e.g. an operation name).
#[track_caller]
pub fn assert_same_error_kind<T, U>(
    context: &str,
    got: &Result<T, Error>,
    want: &Result<U, Error>,
) {
    let show = |r: Result<&Error, ()>| match r {
        Ok(e) => format!("{e:?}"),
        Err(()) => "Ok(..)".to_string(),
    };
    match (got, want) {
        (Err(g), Err(w)) => assert_eq!(
            std::mem::discriminant(g),
            std::mem::discriminant(w),
            "{context}: error {g:?} where the reference gives {w:?}"
        ),
        (g, w) => panic!(
            "{context}: expected an error like the reference's {}, got {}",
            show(w.as_ref().err().ok_or(())),
            show(g.as_ref().err().ok_or(()))
        ),
    }
}

/// Indices of the kept elements, for comparing with hand-written lists.
pub fn kept(mask: &Mask) -> Vec<usize> {
    mask.kept().collect()
}

/// Indices of the pruned elements, for comparing with hand-written lists.
pub fn pruned(mask: &Mask) -> Vec<usize> {
    (0..mask.len()).filter(|&i| !mask.get(i)).collect()
}
