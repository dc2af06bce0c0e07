//! What a pruning call should do: plain structs with defaults and builders.

use alloc::string::String;
use alloc::vec::Vec;

use crate::contract::granularity::{Granularity, Reduction};
use crate::contract::key::NanPolicy;

/// Where the sparsity target applies.
#[derive(Clone, Debug, PartialEq, Default)]
#[non_exhaustive]
pub enum Scope {
    /// One threshold across all layers: exactly `round(s * n)` of the `n`
    /// units of all non-skipped layers together.
    #[default]
    Global,
    /// Each layer separately: exactly `round(s * n_l)` of each layer's `n_l`.
    Local,
    /// An explicit sparsity per layer name (each non-skipped layer needs one);
    /// the top-level sparsity is not used.
    PerLayer(Vec<(String, f64)>),
}

/// Constraints every selection honours.
#[derive(Clone, Debug, PartialEq, Default)]
#[non_exhaustive]
pub struct Guards {
    /// Layers (by exact name) left untouched; they do not count towards the
    /// sparsity target.
    pub skip: Vec<String>,
    /// Each layer keeps at least `ceil(d * n_l)` of its units (see
    /// [`Guards::exceed_min_density`]).
    pub min_density: f64,
    /// Keep strictly more than `d * n_l` units: `floor(d * n_l) + 1`
    /// instead of `ceil(d * n_l)`. The gradient-flow paper's per-layer floor
    /// is `min_density = 0.05` with this set.
    pub exceed_min_density: bool,
    /// Allow a layer to lose every unit; by default each keeps at least one.
    pub allow_empty: bool,
}

/// The data-free importance measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Importance {
    /// Magnitude: `|θ|` per weight, and the group norm of
    /// [`PruneConfig::group_norm`] per unit.
    #[default]
    Magnitude,
    /// Uniform random scores from a seed; the same mask on every backend and
    /// thread count.
    Random {
        /// The seed.
        seed: u64,
    },
}

/// A complete pruning request.
///
/// ```
/// use prunus_core::{Granularity, PruneConfig};
/// let c = PruneConfig::new(0.9).local().skip("classifier").min_density(0.05);
/// assert_eq!(c.sparsity, 0.9);
/// let nm = PruneConfig::new(0.0).granularity(Granularity::NofM(prunus_core::NofM::TWO_FOUR));
/// assert!(nm.granularity.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PruneConfig {
    /// Fraction of units to remove, in `[0, 1]`.
    pub sparsity: f64,
    /// Where the target applies.
    pub scope: Scope,
    /// What a unit is. For N:M the pattern fixes the sparsity; `sparsity` and
    /// `scope` are not used. For groups, `sparsity` counts units (rows,
    /// channels, blocks), not weights.
    pub granularity: Granularity,
    /// How units are scored.
    pub importance: Importance,
    /// The norm of a group under [`Importance::Magnitude`]:
    /// [`Reduction::SumSquares`] (L2, the default) or [`Reduction::L1`].
    pub group_norm: Reduction,
    /// Constraints.
    pub guards: Guards,
    /// What to do with NaN scores.
    pub nan: NanPolicy,
}

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig {
            sparsity: 0.0,
            scope: Scope::Global,
            granularity: Granularity::Unstructured,
            importance: Importance::Magnitude,
            group_norm: Reduction::SumSquares,
            guards: Guards::default(),
            nan: NanPolicy::Error,
        }
    }
}

impl PruneConfig {
    /// Global unstructured magnitude pruning to `sparsity`.
    pub fn new(sparsity: f64) -> Self {
        PruneConfig {
            sparsity,
            ..Default::default()
        }
    }

    /// The same request with another sparsity.
    pub fn sparsity(mut self, sparsity: f64) -> Self {
        self.sparsity = sparsity;
        self
    }

    /// One threshold across layers.
    pub fn global(mut self) -> Self {
        self.scope = Scope::Global;
        self
    }

    /// Each layer to the same sparsity.
    pub fn local(mut self) -> Self {
        self.scope = Scope::Local;
        self
    }

    /// An explicit sparsity per layer name.
    pub fn per_layer(mut self, budget: Vec<(String, f64)>) -> Self {
        self.scope = Scope::PerLayer(budget);
        self
    }

    /// The unit of pruning.
    pub fn granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }

    /// The importance measure.
    pub fn importance(mut self, importance: Importance) -> Self {
        self.importance = importance;
        self
    }

    /// The group norm for structured magnitude pruning.
    pub fn group_norm(mut self, norm: Reduction) -> Self {
        self.group_norm = norm;
        self
    }

    /// Leaves a layer untouched.
    pub fn skip(mut self, name: impl Into<String>) -> Self {
        self.guards.skip.push(name.into());
        self
    }

    /// A minimum fraction of units kept in every layer.
    pub fn min_density(mut self, density: f64) -> Self {
        self.guards.min_density = density;
        self
    }

    /// Each layer keeps strictly more than `min_density * n_l` units:
    /// `floor(d * n_l) + 1`.
    pub fn exceed_min_density(mut self, exceed: bool) -> Self {
        self.guards.exceed_min_density = exceed;
        self
    }

    /// Whether a layer may lose every unit.
    pub fn allow_empty(mut self, allow: bool) -> Self {
        self.guards.allow_empty = allow;
        self
    }

    /// The NaN policy.
    pub fn nan_policy(mut self, nan: NanPolicy) -> Self {
        self.nan = nan;
        self
    }
}
