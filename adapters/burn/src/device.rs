//! Opening a burn device with a clear [`Error`] where burn would panic.
//!
//! burn opens a device lazily, on its first tensor, and panics when it
//! cannot: a wgpu device on a machine without an adapter (no GPU driver,
//! no software Vulkan) fails deep inside the first `Linear::init`. These
//! functions open the device up front with one small round trip and return
//! [`Error::Device`] instead, so a program can fall back to the CPU or say
//! what to install.
//!
//! ```
//! use burn::tensor::Device;
//!
//! let cpu = prunus_burn::device::open(Device::ndarray())?;
//! # #[cfg(feature = "wgpu")]
//! let device = prunus_burn::device::wgpu().unwrap_or_else(|e| {
//!     eprintln!("{e}; pruning on the CPU instead");
//!     cpu.clone()
//! });
//! # Ok::<(), prunus_burn::Error>(())
//! ```
//!
//! burn's wgpu device needs the crate's `wgpu` feature (`vulkan` and
//! `metal` pin the graphics API). Everything else in this crate takes the
//! device from the model, so a model made on the device these return is
//! pruned, masked and driven as a host there.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::{Device, Tensor, TensorData};
#[cfg(feature = "wgpu")]
use burn::tensor::{DeviceKind, DeviceType};

use crate::error::{Error, Result, panic_message};

/// `device`, after one small tensor round trip on it (`[1, 2] + 1` written,
/// computed and read back), so that a device burn cannot open is an
/// [`Error::Device`] here rather than a panic at the model's first tensor.
/// burn's panic message, when it panicked, is the error's message (the
/// panic hook prints it to standard error as well).
pub fn open(device: Device) -> Result<Device> {
    let name = format!("{device:?}");
    let fail = |message: String| Error::Device {
        device: name.clone(),
        message,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let t = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0], [2]), &device);
        t.add_scalar(1.0).into_data().try_into_vec_as::<f32>()
    }));
    match outcome {
        Ok(Ok(v)) if v == [2.0, 3.0] => Ok(device),
        Ok(Ok(v)) => Err(fail(format!(
            "the round trip [1, 2] + 1 gave {v:?}, not [2, 3]"
        ))),
        Ok(Err(e)) => Err(fail(format!("the round trip's values are not f32: {e:?}"))),
        Err(panic) => Err(fail(format!(
            "burn panicked opening it ({}); for wgpu, is there an adapter (a GPU driver, or \
             Mesa's software Vulkan)?",
            panic_message(panic.as_ref())
        ))),
    }
}

/// burn's default wgpu device ([`Device::wgpu`] with
/// [`DeviceKind::DefaultDevice`]: a GPU where there is one, otherwise a
/// software adapter such as Mesa's llvmpipe), opened as [`open`] does.
/// Fails with [`Error::Device`] when wgpu lists no adapter on this machine.
#[cfg(feature = "wgpu")]
pub fn wgpu() -> Result<Device> {
    if Device::enumerate(DeviceType::Wgpu).is_empty() {
        return Err(Error::Device {
            device: "wgpu (default adapter)".into(),
            message: "wgpu finds no adapter on this machine: install a GPU driver with Vulkan, \
                      Metal or DirectX 12 support, or Mesa's software Vulkan \
                      (mesa-vulkan-drivers) to run on the CPU"
                .into(),
        });
    }
    open(Device::wgpu(DeviceKind::DefaultDevice))
}

/// burn's wgpu device pinned to Vulkan ([`Device::vulkan`], default
/// adapter), opened as [`open`] does. Fails with [`Error::Device`] when
/// Vulkan lists no adapter.
#[cfg(feature = "vulkan")]
pub fn vulkan() -> Result<Device> {
    if Device::enumerate(DeviceType::Vulkan).is_empty() {
        return Err(Error::Device {
            device: "vulkan (default adapter)".into(),
            message: "Vulkan finds no adapter on this machine: install a Vulkan driver, or \
                      Mesa's software Vulkan (mesa-vulkan-drivers)"
                .into(),
        });
    }
    open(Device::vulkan(DeviceKind::DefaultDevice))
}

/// burn's wgpu device pinned to Metal ([`Device::metal`], default
/// adapter), opened as [`open`] does. Fails with [`Error::Device`] when
/// Metal lists no adapter (any machine but a Mac).
#[cfg(feature = "metal")]
pub fn metal() -> Result<Device> {
    if Device::enumerate(DeviceType::Metal).is_empty() {
        return Err(Error::Device {
            device: "metal (default adapter)".into(),
            message: "Metal finds no adapter on this machine (Metal is macOS's)".into(),
        });
    }
    open(Device::metal(DeviceKind::DefaultDevice))
}
