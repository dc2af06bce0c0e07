use std::fmt;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong when pruning a burn module or driving it as a host.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// An error of the pruning core (bad sparsity, NaN weights, shapes...).
    Core(prunus_core::Error),
    /// An error of the shared adapter code (in-place selection).
    Adapter(prunus_adapters::Error),
    /// A parameter name that the module does not have.
    UnknownParameter {
        /// The name asked for, e.g. `fc1.weight`.
        name: String,
        /// The names the module has.
        known: Vec<String>,
    },
    /// A parameter whose values burn could not hand over as `f32`.
    Values {
        /// The parameter.
        name: String,
        /// burn's message.
        message: String,
    },
    /// A model whose output is not `[samples, classes]` logits.
    Logits {
        /// The dims the forward function returned.
        dims: Vec<usize>,
        /// The samples and classes expected.
        expected: [usize; 2],
    },
    /// A burn device that could not be opened or failed a first round
    /// trip (no adapter for wgpu, a driver that fails).
    Device {
        /// The device asked for, as burn names it.
        device: String,
        /// What went wrong (burn's panic message, when it panicked).
        message: String,
    },
    /// A setting outside its range.
    Setting {
        /// Which setting.
        name: &'static str,
        /// The value given.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Core(e) => e.fmt(f),
            Error::Adapter(e) => e.fmt(f),
            Error::UnknownParameter { name, known } => write!(
                f,
                "the module has no float parameter `{name}`; its parameters are {}",
                known.join(", ")
            ),
            Error::Values { name, message } => {
                write!(f, "cannot read parameter `{name}` as f32: {message}")
            }
            Error::Logits { dims, expected } => write!(
                f,
                "the forward function returned dims {dims:?}; a host needs logits of \
                 [samples, classes] = {expected:?}"
            ),
            Error::Device { device, message } => {
                write!(f, "cannot use the burn device {device}: {message}")
            }
            Error::Setting {
                name,
                value,
                expected,
            } => write!(f, "{name} = {value} is invalid: expected {expected}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Core(e) => Some(e),
            Error::Adapter(e) => Some(e),
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
        match e {
            prunus_adapters::Error::Core(e) => Error::Core(e),
            other => Error::Adapter(other),
        }
    }
}

impl From<Error> for prunus_core::Error {
    /// Core errors pass through; the rest become [`prunus_core::Error::HostFailure`]
    /// with the message.
    fn from(e: Error) -> Self {
        match e {
            Error::Core(e) => e,
            other => prunus_core::Error::HostFailure {
                message: other.to_string(),
            },
        }
    }
}

/// The message of a caught panic (burn reports its own failures, shape
/// checks and device errors alike, by panicking).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "burn panicked without a message".into())
}
