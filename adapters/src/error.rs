use std::fmt;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in an adapter.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// An error of the pruning core (bad sparsity, NaN weights, shapes...).
    Core(prunus_core::Error),
    /// An array that is not contiguous in row-major order, so it cannot be
    /// pruned in place without a copy.
    NotContiguous {
        /// The layer's name.
        layer: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Core(e) => e.fmt(f),
            Error::NotContiguous { layer } => write!(
                f,
                "array '{layer}' is not contiguous in row-major order; \
                 copy it with `.as_standard_layout()` (or `.to_owned()`) first"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Core(e) => Some(e),
            Error::NotContiguous { .. } => None,
        }
    }
}

impl From<prunus_core::Error> for Error {
    fn from(e: prunus_core::Error) -> Self {
        Error::Core(e)
    }
}
