//! The errors of the `prunus` binary and their exit statuses.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | a check failed: a result failed prunus's own check (a bug), or the file `inspect --check` checked does not conform |
//! | 2 | a usage or input error: a bad argument, an unreadable or malformed file, a failed write, a missing device |

use std::fmt;

/// Everything that stops a command.
#[derive(Debug)]
pub(crate) enum Error {
    /// An argument that parsed but cannot be used as given.
    Argument {
        /// The flag, e.g. `--json`.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What it must be instead.
        expected: String,
    },
    /// The lab could not do what was asked (bad settings, data, I/O, a backend failure).
    Lab(prunus_lab::Error),
    /// A checkpoint could not be read, pruned or written.
    Adapters(prunus_adapters::Error),
    /// A model folder could not be read, run, pruned or written.
    #[cfg(feature = "transformers")]
    Model(prunus_candle::Error),
    /// The system refused something the command needs (threads, a child process).
    System {
        /// What was being done, e.g. `start 4 threads`.
        action: String,
        /// The operating system's message.
        message: String,
    },
    /// A file does not pass the check the user asked for (`inspect --check`).
    Nonconforming(String),
    /// A result failed prunus's own check: a bug in prunus, not in the request.
    SelfCheck(String),
}

impl Error {
    /// An [`Error::Argument`] for `flag` given `value`.
    pub(crate) fn argument(
        flag: &'static str,
        value: impl fmt::Display,
        expected: impl Into<String>,
    ) -> Error {
        Error::Argument {
            flag,
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    /// An [`Error::System`] for `action`.
    pub(crate) fn system(action: impl Into<String>, message: impl fmt::Display) -> Error {
        Error::System {
            action: action.into(),
            message: message.to_string(),
        }
    }

    /// The process exit status: 1 for a failed check, 2 for everything else.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Error::Nonconforming(_) | Error::SelfCheck(_) => 1,
            Error::Argument { .. } | Error::Lab(_) | Error::Adapters(_) | Error::System { .. } => 2,
            #[cfg(feature = "transformers")]
            Error::Model(_) => 2,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Argument {
                flag,
                value,
                expected,
            } => write!(f, "{flag} {value}: expected {expected}"),
            Error::Lab(e) => fmt::Display::fmt(e, f),
            Error::Adapters(e) => fmt::Display::fmt(e, f),
            #[cfg(feature = "transformers")]
            Error::Model(e) => fmt::Display::fmt(e, f),
            Error::System { action, message } => write!(f, "cannot {action}: {message}"),
            Error::Nonconforming(m) => f.write_str(m),
            Error::SelfCheck(m) => write!(f, "{m} (this is a bug in prunus; please report it)"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Lab(e) => Some(e),
            Error::Adapters(e) => Some(e),
            #[cfg(feature = "transformers")]
            Error::Model(e) => Some(e),
            _ => None,
        }
    }
}

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

#[cfg(feature = "transformers")]
impl From<prunus_candle::Error> for Error {
    fn from(e: prunus_candle::Error) -> Self {
        Error::Model(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_exit_1_and_everything_else_2() {
        assert_eq!(Error::SelfCheck("count".into()).exit_code(), 1);
        assert_eq!(Error::Nonconforming("2:4".into()).exit_code(), 1);
        assert_eq!(Error::argument("--json", "/", "a file").exit_code(), 2);
        assert_eq!(Error::system("run cp", "not found").exit_code(), 2);
        let lab = prunus_lab::Error::InvalidSetting {
            name: "epochs",
            value: "0".into(),
            expected: "at least 1".into(),
        };
        assert_eq!(Error::from(lab).exit_code(), 2);
    }

    #[test]
    fn messages_name_the_flag_and_what_to_do() {
        let e = Error::argument("--plot", "out/", "a file name, not a directory");
        assert_eq!(
            e.to_string(),
            "--plot out/: expected a file name, not a directory"
        );
        assert!(
            Error::SelfCheck("pruned 3, expected 4".into())
                .to_string()
                .contains("please report it")
        );
        assert_eq!(
            Error::system("start 4 threads", "EAGAIN").to_string(),
            "cannot start 4 threads: EAGAIN"
        );
    }
}
