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
    /// A file could not be read or written.
    Io {
        /// What was being done (`read`, `write`, ...).
        action: &'static str,
        /// The file.
        path: String,
        /// The operating system's message.
        message: String,
    },
    /// A checkpoint is not a valid safetensors file.
    Malformed {
        /// The file (`<memory>` for bytes).
        path: String,
        /// The tensor at fault, when one is.
        tensor: Option<String>,
        /// What is wrong.
        problem: Problem,
    },
    /// A tensor to be pruned holds NaN or infinite values.
    NonFinite {
        /// The tensor.
        tensor: String,
        /// How many of its values are not finite.
        count: u64,
        /// The flat index of the first one.
        first: u64,
    },
    /// The output would overwrite the input.
    OutputIsInput {
        /// The input file.
        path: String,
    },
    /// A request that cannot be carried out as given (bad pattern, no
    /// tensor left to prune, a mask name already taken, ...).
    Request {
        /// What to change.
        reason: String,
    },
}

/// What is wrong with a malformed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The file is shorter than the 8-byte header length.
    TooShort {
        /// The file's length.
        len: u64,
    },
    /// The header length points past the end of the file.
    HeaderLength {
        /// The length the file declares.
        declared: u64,
        /// The bytes after the length field.
        available: u64,
    },
    /// The header is longer than the format allows.
    HeaderTooLarge {
        /// The length the file declares.
        declared: u64,
        /// The largest accepted.
        limit: u64,
    },
    /// The header is not UTF-8, not JSON, or not a JSON object.
    Header {
        /// The parser's message.
        message: String,
    },
    /// Two entries share a name.
    DuplicateTensor,
    /// An entry lacks a field or has one of the wrong type.
    Entry {
        /// What is wrong.
        message: String,
    },
    /// A dtype the format does not define.
    UnknownDtype {
        /// The header's dtype.
        dtype: String,
    },
    /// The shape's element count (or byte count) overflows.
    ShapeOverflow,
    /// The offsets do not span the shape's bytes.
    SizeMismatch {
        /// Bytes the dtype and shape need.
        expected: u64,
        /// Bytes between the offsets.
        found: u64,
    },
    /// The end offset is before the start.
    ReversedOffsets {
        /// The start offset.
        start: u64,
        /// The end offset.
        end: u64,
    },
    /// The data ends past the end of the file (a truncated file).
    OutOfRange {
        /// The end offset.
        end: u64,
        /// The bytes of data the file holds.
        available: u64,
    },
    /// The data overlaps another tensor's.
    Overlap {
        /// The other tensor.
        other: String,
    },
    /// Bytes that no tensor covers, before this tensor (or at the end).
    Gap {
        /// How many.
        bytes: u64,
    },
    /// The `__metadata__` entry is not an object of strings.
    Metadata {
        /// What is wrong.
        message: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::TooShort { len } => write!(
                f,
                "the file has {len} bytes, fewer than the 8-byte header length"
            ),
            Problem::HeaderLength {
                declared,
                available,
            } => write!(
                f,
                "the header length {declared} is past the end of the file ({available} bytes follow it)"
            ),
            Problem::HeaderTooLarge { declared, limit } => write!(
                f,
                "the header length {declared} is over the format's limit of {limit} bytes"
            ),
            Problem::Header { message } => write!(f, "the header is not valid: {message}"),
            Problem::DuplicateTensor => write!(f, "the header names this tensor twice"),
            Problem::Entry { message } => write!(f, "bad header entry: {message}"),
            Problem::UnknownDtype { dtype } => write!(f, "unknown dtype '{dtype}'"),
            Problem::ShapeOverflow => write!(f, "the shape's size overflows"),
            Problem::SizeMismatch { expected, found } => write!(
                f,
                "its dtype and shape need {expected} bytes but its offsets span {found}"
            ),
            Problem::ReversedOffsets { start, end } => {
                write!(f, "its data ends ({end}) before it starts ({start})")
            }
            Problem::OutOfRange { end, available } => write!(
                f,
                "its data ends at byte {end} of the data section, which holds only {available} \
                 (the file is truncated or the offsets are wrong)"
            ),
            Problem::Overlap { other } => write!(f, "its data overlaps tensor '{other}'"),
            Problem::Gap { bytes } => write!(f, "{bytes} bytes before it belong to no tensor"),
            Problem::Metadata { message } => write!(f, "bad __metadata__: {message}"),
        }
    }
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
            Error::Io {
                action,
                path,
                message,
            } => write!(f, "cannot {action} {path}: {message}"),
            Error::Malformed {
                path,
                tensor: Some(t),
                problem,
            } => write!(f, "{path}: tensor '{t}': {problem}"),
            Error::Malformed {
                path,
                tensor: None,
                problem,
            } => write!(f, "{path}: {problem}"),
            Error::NonFinite {
                tensor,
                count,
                first,
            } => write!(
                f,
                "tensor '{tensor}' holds {count} NaN or infinite values (the first at flat \
                 index {first}); prunus does not prune non-finite weights"
            ),
            Error::OutputIsInput { path } => write!(
                f,
                "the output is the input file {path}; choose another output, or pass \
                 --in-place to replace it (atomically)"
            ),
            Error::Request { reason } => f.write_str(reason),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Core(e) => Some(e),
            _ => None,
        }
    }
}

impl From<prunus_core::Error> for Error {
    fn from(e: prunus_core::Error) -> Self {
        Error::Core(e)
    }
}

impl Error {
    /// An I/O error while doing `action` on `path`.
    #[cfg(feature = "safetensors")]
    pub(crate) fn io(action: &'static str, path: &std::path::Path, e: &std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.display().to_string(),
            message: e.to_string(),
        }
    }
}
