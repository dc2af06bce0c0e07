//! The errors of the `prunus` binary and their exit codes.

use std::fmt;

/// Everything that stops a command.
#[derive(Debug)]
pub(crate) enum Error {
    /// The library could not do what was asked (bad settings, I/O, ...).
    Lab(prunus_lab::Error),
    /// A checkpoint could not be read, pruned or written.
    Adapters(prunus_adapters::Error),
    /// A result failed its own check: a bug in prunus, not in the request.
    Check(String),
}

impl Error {
    /// 1 for a failed check, 2 for everything else.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Error::Check(_) => 1,
            Error::Lab(_) | Error::Adapters(_) => 2,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Lab(e) => fmt::Display::fmt(e, f),
            Error::Adapters(e) => fmt::Display::fmt(e, f),
            Error::Check(m) => write!(f, "{m} (this is a bug in prunus; please report it)"),
        }
    }
}

impl std::error::Error for Error {}

impl From<prunus_lab::Error> for Error {
    fn from(e: prunus_lab::Error) -> Self {
        Error::Lab(e)
    }
}

impl From<prunus_core::Error> for Error {
    fn from(e: prunus_core::Error) -> Self {
        Error::Lab(e.into())
    }
}

impl From<prunus_adapters::Error> for Error {
    fn from(e: prunus_adapters::Error) -> Self {
        Error::Adapters(e)
    }
}
