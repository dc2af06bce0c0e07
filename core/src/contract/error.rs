//! The one error type of prunus-core.

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

use crate::contract::shape::Shape;

/// Result with [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Everything that can go wrong in prunus-core, with the offending names and
/// values so that a message can say what to change.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A sparsity (fraction of weights removed) outside `[0, 1]` or not finite.
    SparsityOutOfRange {
        /// The value given.
        value: f64,
    },
    /// A density (fraction kept), rate or other fraction outside its range.
    FractionOutOfRange {
        /// Which setting.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// Two tensors or masks whose shapes must agree do not.
    ShapeMismatch {
        /// The operation that compared them.
        op: &'static str,
        /// The shape it needed (boxed to keep `Result`s small).
        expected: Box<Shape>,
        /// The shape it got.
        found: Box<Shape>,
    },
    /// Two lists whose lengths must agree do not.
    LengthMismatch {
        /// What was counted.
        what: &'static str,
        /// The length it needed.
        expected: usize,
        /// The length it got.
        found: usize,
    },
    /// More dimensions than [`crate::contract::shape::MAX_RANK`].
    RankTooLarge {
        /// The rank given.
        rank: usize,
    },
    /// A shape whose element count overflows `usize`.
    ShapeOverflow,
    /// A layer with no element to prune or score.
    EmptyTensor {
        /// The layer's name.
        layer: String,
    },
    /// A pruning call with no layer at all.
    NoLayers,
    /// Every layer given was excluded by the skip guard.
    AllLayersSkipped,
    /// Two layers share a name.
    DuplicateLayer {
        /// The repeated name.
        name: String,
    },
    /// A name in a skip list or budget that matches no layer.
    UnknownLayer {
        /// The name given.
        name: String,
    },
    /// A per-layer budget without an entry for this layer.
    MissingBudget {
        /// The layer's name.
        layer: String,
    },
    /// Scores that are NaN while the NaN policy is [`crate::contract::key::NanPolicy::Error`].
    NanScores {
        /// The layer's name.
        layer: String,
        /// How many scores are NaN.
        count: u64,
    },
    /// An N:M pattern that is not `0 < N < M`.
    InvalidPattern {
        /// Kept per group.
        n: usize,
        /// Group size.
        m: usize,
    },
    /// A layer whose rows (input side of the matrix view) are not a multiple
    /// of the N:M group size.
    PatternMismatch {
        /// The layer's name.
        layer: String,
        /// The row length of the matrix view.
        len: usize,
        /// The group size.
        m: usize,
    },
    /// A block size with a zero side.
    InvalidBlock {
        /// Block rows.
        rows: usize,
        /// Block columns.
        cols: usize,
    },
    /// The guards (minimum density, never emptying a layer) keep more than the
    /// requested sparsity allows.
    GuardsExceeded {
        /// The layer's name, or `(global)`.
        layer: String,
        /// Units the target asks to prune.
        requested: u64,
        /// Units the guards allow to prune.
        allowed: u64,
    },
    /// A target that would prune fewer units than an earlier mask already did;
    /// masks never grow back.
    TargetBelowPrevious {
        /// The layer's name, or `(global)`.
        layer: String,
        /// Units already pruned.
        pruned: u64,
        /// Units the target asks to prune.
        target: u64,
    },
    /// A schedule whose settings cannot produce a valid sequence.
    InvalidSchedule {
        /// What is wrong.
        reason: &'static str,
    },
    /// A matrix that a Cholesky factorisation found not positive definite.
    NotPositiveDefinite {
        /// The pivot where it failed.
        pivot: usize,
    },
    /// A mask built from raw words whose length or padding is wrong.
    InvalidMask {
        /// What is wrong.
        reason: &'static str,
    },
    /// A parameter index beyond the host's parameters.
    UnknownParameter {
        /// The index given.
        index: usize,
        /// How many parameters the host has.
        count: usize,
    },
    /// A host network failed to do what it supports (bad sample range,
    /// diverged training, ...).
    HostFailure {
        /// The host's message.
        message: String,
    },
    /// A method asked a host network for something it cannot do.
    MissingCapability {
        /// The host's name.
        host: String,
        /// What was missing.
        capability: &'static str,
    },
    /// An argument that cannot be used, with what it must be instead.
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// An input the operation needs was not given.
    MissingInput {
        /// What was missing.
        what: &'static str,
    },
    /// Values that must be finite are not (NaN or infinite).
    NonFinite {
        /// What held them.
        what: &'static str,
    },
    /// A failure inside a backend (device lost, out of memory, inconsistent
    /// results).
    Backend {
        /// The backend's message.
        message: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::SparsityOutOfRange { value } => write!(
                f,
                "sparsity {value} is outside [0, 1]: give the fraction of weights to remove, e.g. 0.9"
            ),
            Error::FractionOutOfRange { what, value } => {
                write!(f, "{what} {value} is outside its allowed range")
            }
            Error::ShapeMismatch {
                op,
                expected,
                found,
            } => {
                write!(f, "{op}: expected shape {expected}, found {found}")
            }
            Error::LengthMismatch {
                what,
                expected,
                found,
            } => write!(f, "{what}: expected {expected} entries, found {found}"),
            Error::RankTooLarge { rank } => write!(
                f,
                "a tensor of rank {rank} has more than the {} dimensions prunus supports",
                crate::contract::shape::MAX_RANK
            ),
            Error::ShapeOverflow => f.write_str("shape element count overflows usize"),
            Error::EmptyTensor { layer } => {
                write!(f, "layer '{layer}' has no element; remove it or skip it")
            }
            Error::NoLayers => f.write_str("nothing to prune: no layer was given"),
            Error::AllLayersSkipped => {
                f.write_str("nothing to prune: every layer is in the skip list")
            }
            Error::DuplicateLayer { name } => {
                write!(
                    f,
                    "the name '{name}' is given twice; layer names and budget entries must be unique"
                )
            }
            Error::UnknownLayer { name } => write!(f, "no layer is named '{name}'"),
            Error::MissingBudget { layer } => write!(
                f,
                "the per-layer budget has no sparsity for layer '{layer}'; add one or skip the layer"
            ),
            Error::NanScores { layer, count } => write!(
                f,
                "layer '{layer}' has {count} NaN score(s); fix the weights or choose a NaN policy"
            ),
            Error::InvalidPattern { n, m } => {
                write!(f, "N:M pattern {n}:{m} is invalid: it needs 0 < N < M")
            }
            Error::PatternMismatch { layer, len, m } => write!(
                f,
                "layer '{layer}': its rows (inputs per output unit) have {len} elements, not a multiple of the N:M group size {m}"
            ),
            Error::InvalidBlock { rows, cols } => {
                write!(
                    f,
                    "block {rows}x{cols} is invalid: both sides must be at least 1"
                )
            }
            Error::GuardsExceeded {
                layer,
                requested,
                allowed,
            } => write!(
                f,
                "{layer}: the target prunes {requested} units but the guards (minimum density, \
                 never empty a layer) allow at most {allowed}; lower the sparsity or relax the guards"
            ),
            Error::TargetBelowPrevious {
                layer,
                pruned,
                target,
            } => write!(
                f,
                "{layer}: the previous mask already prunes {pruned} units, more than the target {target}; \
                 masks never grow back, so raise the sparsity"
            ),
            Error::InvalidSchedule { reason } => write!(f, "invalid schedule: {reason}"),
            Error::NotPositiveDefinite { pivot } => write!(
                f,
                "matrix is not positive definite (pivot {pivot}); add damping"
            ),
            Error::InvalidMask { reason } => write!(f, "invalid mask: {reason}"),
            Error::UnknownParameter { index, count } => write!(
                f,
                "parameter index {index} is out of range: the host has {count} parameters"
            ),
            Error::HostFailure { message } => write!(f, "host network: {message}"),
            Error::MissingCapability { host, capability } => write!(
                f,
                "this method needs the {capability} of the network, which host '{host}' does not provide"
            ),
            Error::InvalidArgument { what, expected } => {
                write!(f, "invalid {what}: it must be {expected}")
            }
            Error::MissingInput { what } => {
                write!(f, "this measure needs the {what}, which was not given")
            }
            Error::NonFinite { what } => write!(
                f,
                "{what} contain NaN or infinite values; check the weights and the data"
            ),
            Error::Backend { message } => write!(f, "backend failure: {message}"),
        }
    }
}

impl core::error::Error for Error {}

impl Error {
    /// A [`Error::ShapeMismatch`].
    pub fn shape_mismatch(op: &'static str, expected: &Shape, found: &Shape) -> Error {
        Error::ShapeMismatch {
            op,
            expected: Box::new(expected.clone()),
            found: Box::new(found.clone()),
        }
    }
}
