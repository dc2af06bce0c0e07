use std::fmt;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while reading, running, pruning or writing a model.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An error of the pruning core (bad sparsity, NaN weights, shapes...).
    Core(prunus_core::Error),
    /// An error of the safetensors adapter (a malformed or truncated shard...).
    Adapter(prunus_adapters::Error),
    /// An error inside candle while running a graph.
    Candle(candle_core::Error),
    /// A file could not be read or written.
    Io {
        /// What was being done (`read`, `write`, `rename`...).
        action: &'static str,
        /// The file or folder.
        path: String,
        /// The operating system's message.
        message: String,
    },
    /// A model folder that prunus cannot use as it is: no `config.json`, no
    /// weights, no tokenizer, a model type it has no graph for, a tensor the
    /// graph needs missing or of the wrong shape, an index naming a shard
    /// that is not there...
    Model {
        /// The folder.
        folder: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// Calibration or evaluation text that cannot be used (no usable line,
    /// not UTF-8...).
    Text {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A request that cannot be carried out as given.
    Request {
        /// What to change.
        reason: String,
    },
}

impl Error {
    /// An [`Error::Model`].
    pub fn model(folder: impl fmt::Display, reason: impl Into<String>) -> Error {
        Error::Model {
            folder: folder.to_string(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Io`] from an operating-system error.
    pub fn io(action: &'static str, path: impl fmt::Display, e: std::io::Error) -> Error {
        Error::Io {
            action,
            path: path.to_string(),
            message: e.to_string(),
        }
    }

    /// An [`Error::Request`].
    pub fn request(reason: impl Into<String>) -> Error {
        Error::Request {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Core(e) => write!(f, "{e}"),
            Error::Adapter(e) => write!(f, "{e}"),
            Error::Candle(e) => write!(f, "candle: {e}"),
            Error::Io {
                action,
                path,
                message,
            } => write!(f, "cannot {action} {path}: {message}"),
            Error::Model { folder, reason } => write!(f, "model folder {folder}: {reason}"),
            Error::Text { path, reason } => write!(f, "text file {path}: {reason}"),
            Error::Request { reason } => write!(f, "{reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Core(e) => Some(e),
            Error::Adapter(e) => Some(e),
            Error::Candle(e) => Some(e),
            _ => None,
        }
    }
}

impl From<prunus_core::Error> for Error {
    fn from(e: prunus_core::Error) -> Self {
        Error::Core(e)
    }
}

impl From<prunus_adapters::Error> for Error {
    fn from(e: prunus_adapters::Error) -> Self {
        Error::Adapter(e)
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Candle(e)
    }
}
