//! Order-preserving keys: scores become `u32`s whose unsigned order is the
//! float order, so selection can count instead of sort.

/// The key of an element that an earlier mask already pruned: below every
/// score, so it is always pruned first.
pub const KEY_PRUNED: u32 = 0;

/// The key of a NaN score under [`NanPolicy::Lowest`]: above [`KEY_PRUNED`],
/// below `-inf` (whose key is `0x007F_FFFF`).
pub const KEY_NAN_LOWEST: u32 = 1;

/// The key of a NaN score under [`NanPolicy::Highest`] (and, as a placeholder,
/// under [`NanPolicy::Error`], where the call fails anyway).
pub const KEY_NAN_HIGHEST: u32 = u32::MAX;

/// The order-preserving key of a non-NaN float: `-0.0` is first turned into
/// `+0.0`, then for `x >= 0` the sign bit is set and for `x < 0` all bits are
/// inverted.
///
/// ```
/// use prunus_core::contract::key::order_key;
/// assert!(order_key(-1.0) < order_key(-0.5));
/// assert!(order_key(-0.5) < order_key(0.0));
/// assert_eq!(order_key(-0.0), order_key(0.0));
/// assert!(order_key(1.0) < order_key(f32::INFINITY));
/// ```
#[inline(always)]
pub fn order_key(x: f32) -> u32 {
    let bits = if x == 0.0 { 0 } else { x.to_bits() };
    if bits & 0x8000_0000 == 0 {
        bits | 0x8000_0000
    } else {
        !bits
    }
}

/// The float whose [`order_key`] is `key` (the inverse, for keys of non-NaN
/// floats).
pub fn key_to_f32(key: u32) -> f32 {
    if key & 0x8000_0000 != 0 {
        f32::from_bits(key & 0x7FFF_FFFF)
    } else {
        f32::from_bits(!key)
    }
}

/// How a stored value becomes the score that is ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Transform {
    /// The value itself is the score.
    #[default]
    Identity,
    /// The absolute value is the score: magnitude pruning straight from the
    /// weights, without materialising a score tensor.
    Abs,
}

impl Transform {
    /// Applies the transform to one value.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Transform::Identity => x,
            Transform::Abs => f32::from_bits(x.to_bits() & 0x7FFF_FFFF),
        }
    }
}

/// What to do with NaN scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum NanPolicy {
    /// Fail with [`crate::Error::NanScores`], naming the layer (the default).
    #[default]
    Error,
    /// Treat NaN as the lowest score: pruned first.
    Lowest,
    /// Treat NaN as the highest score: kept.
    Highest,
}

/// The rule that turns a stored value into its key: a [`Transform`] and a
/// [`NanPolicy`]. Backends apply it on the fly, so scores are never copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct KeyRule {
    /// Value to score.
    pub transform: Transform,
    /// NaN handling.
    pub nan: NanPolicy,
}

impl KeyRule {
    /// Rank values as they are.
    pub const IDENTITY: KeyRule = KeyRule {
        transform: Transform::Identity,
        nan: NanPolicy::Error,
    };
    /// Rank values by magnitude.
    pub const ABS: KeyRule = KeyRule {
        transform: Transform::Abs,
        nan: NanPolicy::Error,
    };

    /// The same rule with another NaN policy.
    pub fn with_nan(self, nan: NanPolicy) -> Self {
        KeyRule { nan, ..self }
    }

    /// The key of a stored value that an earlier mask keeps.
    #[inline(always)]
    pub fn key(self, x: f32) -> u32 {
        let s = self.transform.apply(x);
        if s.is_nan() {
            match self.nan {
                NanPolicy::Lowest => KEY_NAN_LOWEST,
                NanPolicy::Error | NanPolicy::Highest => KEY_NAN_HIGHEST,
            }
        } else {
            order_key(s)
        }
    }

    /// The key of a stored value given whether an earlier mask keeps it.
    #[inline(always)]
    pub fn key_with(self, x: f32, alive: bool) -> u32 {
        if alive { self.key(x) } else { KEY_PRUNED }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_float_order() {
        let xs = [
            f32::NEG_INFINITY,
            -3.5,
            -1e-40,
            0.0,
            1e-45,
            1.0,
            2.0,
            f32::MAX,
            f32::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(order_key(w[0]) < order_key(w[1]), "{} vs {}", w[0], w[1]);
        }
        for &x in &xs {
            assert_eq!(key_to_f32(order_key(x)), x);
        }
        assert!(KEY_NAN_LOWEST < order_key(f32::NEG_INFINITY));
        const { assert!(KEY_PRUNED < KEY_NAN_LOWEST) };
    }

    #[test]
    fn nan_policy_places_nan() {
        let lo = KeyRule::IDENTITY.with_nan(NanPolicy::Lowest);
        let hi = KeyRule::IDENTITY.with_nan(NanPolicy::Highest);
        assert_eq!(lo.key(f32::NAN), KEY_NAN_LOWEST);
        assert_eq!(hi.key(-f32::NAN), KEY_NAN_HIGHEST);
        assert_eq!(KeyRule::ABS.key(-2.0), order_key(2.0));
        assert_eq!(KeyRule::ABS.key_with(5.0, false), KEY_PRUNED);
    }
}
