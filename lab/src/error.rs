//! The one error type of prunus-lab.

use std::fmt;
use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in prunus-lab, with the offending setting,
/// value or path so that a message can say what to change.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A setting with a value it cannot take.
    InvalidSetting {
        /// The setting, as a user would name it (e.g. `params`).
        name: &'static str,
        /// The value given.
        value: String,
        /// What it must be instead.
        expected: String,
    },
    /// A report row with no value: mean and standard deviation need at least one.
    EmptyRow {
        /// The row's method.
        method: String,
        /// The row's metric.
        metric: String,
    },
    /// Reading or writing a file failed.
    Io {
        /// What was being done (`create temporary file`, `rename`, ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A data or weights file that is not what it claims to be (wrong
    /// magic, truncated, inconsistent sizes, unknown tensor, ...).
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and where.
        problem: String,
    },
    /// A report could not be encoded or decoded as JSON.
    Json(serde_json::Error),
    /// An error from prunus-core (boxed: it carries shapes inline).
    Core(Box<prunus_core::Error>),
    /// A chart could not be drawn.
    Chart {
        /// What the plotting library reported.
        message: String,
    },
}

impl Error {
    /// [`Error::InvalidSetting`], as a `Result` for early returns.
    pub(crate) fn setting<T>(
        name: &'static str,
        value: String,
        expected: &str,
    ) -> Result<T, Error> {
        Err(Error::InvalidSetting {
            name,
            value,
            expected: expected.into(),
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidSetting {
                name,
                value,
                expected,
            } => write!(f, "{name} = {value} is invalid: {expected}"),
            Error::EmptyRow { method, metric } => write!(
                f,
                "report row ({method}, {metric}) has no value; give at least one"
            ),
            Error::Io {
                action,
                path,
                source,
            } => write!(f, "cannot {action} '{}': {source}", path.display()),
            Error::Data { path, problem } => write!(f, "'{}': {problem}", path.display()),
            Error::Json(e) => write!(f, "report JSON: {e}"),
            Error::Core(e) => fmt::Display::fmt(e, f),
            Error::Chart { message } => write!(f, "cannot draw the chart: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Json(e) => Some(e),
            Error::Core(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

impl From<prunus_core::Error> for Error {
    fn from(e: prunus_core::Error) -> Self {
        Error::Core(Box::new(e))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(e)
    }
}
