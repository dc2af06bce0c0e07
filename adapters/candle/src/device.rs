//! Where candle runs a model: the CPU, an NVIDIA GPU through CUDA, or an
//! Apple GPU through Metal, named as users name it (`cpu`, `cuda`,
//! `cuda:1`, `metal`) and opened with an error that says what to do when
//! this build or this machine cannot.
//!
//! ```
//! use prunus_candle::device::ComputeDevice;
//! let cpu: ComputeDevice = "cpu".parse()?;
//! assert!(cpu.open()?.is_cpu());
//! assert_eq!("cuda:1".parse::<ComputeDevice>()?, ComputeDevice::Cuda(1));
//! # Ok::<(), prunus_candle::Error>(())
//! ```

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::str::FromStr;

use candle_core::Device;
use rayon::prelude::*;

use crate::error::{Error, Result};

/// A device candle can compute on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ComputeDevice {
    /// The CPU (candle's own kernels, every core).
    #[default]
    Cpu,
    /// The CUDA GPU of this ordinal (`cuda` is `cuda:0`); needs a build
    /// with the `cuda` feature and an NVIDIA driver.
    Cuda(usize),
    /// The Metal GPU of this ordinal (`metal` is `metal:0`); needs a build
    /// with the `metal` feature on macOS.
    Metal(usize),
}

impl ComputeDevice {
    /// Whether this build of prunus has the kernels for the device (the
    /// CPU always; CUDA and Metal with their cargo features).
    pub fn compiled(self) -> bool {
        match self {
            ComputeDevice::Cpu => true,
            ComputeDevice::Cuda(_) => cfg!(feature = "cuda"),
            ComputeDevice::Metal(_) => cfg!(feature = "metal"),
        }
    }

    /// The candle device, ready to compute on. Fails with an
    /// [`Error::Request`] saying how to rebuild when this build lacks the
    /// device's kernels, and with the driver's message when the machine
    /// has no such GPU (no driver, no device of that ordinal); never
    /// panics, even where the GPU library does.
    pub fn open(self) -> Result<Device> {
        let (name, feature) = match self {
            ComputeDevice::Cpu => return Ok(Device::Cpu),
            ComputeDevice::Cuda(_) => ("CUDA", "cuda"),
            ComputeDevice::Metal(_) => ("Metal", "metal"),
        };
        if !self.compiled() {
            return Err(Error::request(format!(
                "--device {self}: this prunus was built without {name}; build it with \
                 `cargo build --release -p prunus-cli --features {feature}` (see the README's \
                 GPU section), or use --device cpu"
            )));
        }
        // A GPU library may panic where it should fail (a driver library
        // that cannot be loaded): keep that from reaching the user as a
        // panic, and keep its message for the error.
        let hook = panic::take_hook();
        panic::set_hook(Box::new(|_| {}));
        let opened = panic::catch_unwind(AssertUnwindSafe(|| match self {
            ComputeDevice::Cuda(n) => Device::new_cuda(n),
            ComputeDevice::Metal(n) => Device::new_metal(n),
            ComputeDevice::Cpu => Ok(Device::Cpu),
        }));
        panic::set_hook(hook);
        let reason = match opened {
            Ok(Ok(device)) => return Ok(device),
            // candle appends a backtrace where RUST_BACKTRACE asks for
            // one: the first line is the driver's answer.
            Ok(Err(e)) => e.to_string().lines().next().unwrap_or_default().to_string(),
            Err(payload) => payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the GPU library stopped without a message".into()),
        };
        Err(Error::request(format!(
            "--device {self}: no usable {name} device on this machine ({}); check the \
             driver (nvidia-smi for CUDA) and the ordinal, or use --device cpu",
            reason.trim()
        )))
    }
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComputeDevice::Cpu => write!(f, "cpu"),
            ComputeDevice::Cuda(n) => write!(f, "cuda:{n}"),
            ComputeDevice::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl FromStr for ComputeDevice {
    type Err = Error;

    /// `cpu`, `cuda`, `cuda:N`, `metal` or `metal:N` (case-insensitive).
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let (kind, ordinal) = match lower.split_once(':') {
            Some((k, n)) => {
                let n = n.parse::<usize>().map_err(|_| {
                    Error::request(format!(
                        "device {s:?}: the part after ':' must be a GPU ordinal such as 0 or 1"
                    ))
                })?;
                (k, n)
            }
            None => (lower.as_str(), 0),
        };
        match kind {
            "cpu" if !lower.contains(':') => Ok(ComputeDevice::Cpu),
            "cuda" => Ok(ComputeDevice::Cuda(ordinal)),
            "metal" => Ok(ComputeDevice::Metal(ordinal)),
            _ => Err(Error::request(format!(
                "device {s:?}: give cpu, cuda, cuda:N, metal or metal:N"
            ))),
        }
    }
}

/// A short name of a candle device for reports (`cpu`, `cuda:0`,
/// `metal:0`).
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// `f` over `items`, in order: on rayon's threads when `device` is the
/// CPU (one forward per core), one after another on a GPU.
pub(crate) fn map_on<T: Sync, R: Send>(
    device: &Device,
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync + Send,
) -> Result<Vec<R>> {
    if device.is_cpu() {
        items.par_iter().map(f).collect()
    } else {
        items.iter().map(f).collect()
    }
}

/// Bytes in use on a GPU device now (all of the device's memory that is
/// not free, other processes' included), or `None` on the CPU and where
/// the device cannot say. Sampled at chosen points, it bounds a run's
/// peak from below.
pub fn device_memory_used(device: &Device) -> Option<u64> {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => {
            let (free, total) = d.cuda_stream().context().mem_get_info().ok()?;
            Some(total.saturating_sub(free) as u64)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for (text, device) in [
            ("cpu", ComputeDevice::Cpu),
            ("CUDA", ComputeDevice::Cuda(0)),
            ("cuda:3", ComputeDevice::Cuda(3)),
            ("metal", ComputeDevice::Metal(0)),
            (" metal:1 ", ComputeDevice::Metal(1)),
        ] {
            let parsed: ComputeDevice = text.parse().unwrap();
            assert_eq!(parsed, device, "{text}");
            assert_eq!(parsed.to_string().parse::<ComputeDevice>().unwrap(), device);
        }
        for bad in ["", "gpu", "cuda:", "cuda:x", "cuda:-1", "cpu:0", "rocm"] {
            let e = bad.parse::<ComputeDevice>().unwrap_err().to_string();
            assert!(e.contains("device"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_cpu_opens_and_a_missing_gpu_is_an_error() {
        assert!(ComputeDevice::Cpu.open().unwrap().is_cpu());
        assert_eq!(device_name(&Device::Cpu), "cpu");
        assert_eq!(device_memory_used(&Device::Cpu), None);
        // This machine has no CUDA GPU, or the build has no CUDA: either
        // way an error naming the device, not a panic.
        if !cfg!(feature = "cuda") {
            let e = ComputeDevice::Cuda(0).open().unwrap_err().to_string();
            assert!(
                e.contains("--device cuda:0") && e.contains("--features cuda"),
                "{e}"
            );
        }
        if !cfg!(feature = "metal") {
            let e = ComputeDevice::Metal(0).open().unwrap_err().to_string();
            assert!(e.contains("--features metal"), "{e}");
        }
        // An ordinal no machine has: an error whatever the build.
        let e = ComputeDevice::Cuda(9999).open().unwrap_err().to_string();
        assert!(e.contains("cuda:9999"), "{e}");
    }
}
