//! Tensors and masks in device memory.

use std::fmt;

use prunus_core::{HasShape, Shape};

use crate::context::Buf;

/// A dense f32 tensor in device memory, row-major.
pub struct WgpuTensor {
    pub(crate) shape: Shape,
    pub(crate) buf: Buf,
}

impl WgpuTensor {
    /// Elements.
    pub(crate) fn numel(&self) -> u64 {
        self.shape.numel() as u64
    }
}

impl HasShape for WgpuTensor {
    fn shape(&self) -> &Shape {
        &self.shape
    }
}

impl fmt::Debug for WgpuTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgpuTensor{:?}", self.shape.dims())
    }
}

/// A keep-mask in device memory: the words of [`prunus_core::Mask`], as
/// pairs of `u32` (bit `i` of the mask is bit `i % 32` of word `i / 32`).
pub struct WgpuMask {
    pub(crate) shape: Shape,
    pub(crate) buf: Buf,
}

impl WgpuMask {
    /// Elements.
    pub(crate) fn numel(&self) -> u64 {
        self.shape.numel() as u64
    }
}

impl HasShape for WgpuMask {
    fn shape(&self) -> &Shape {
        &self.shape
    }
}

impl fmt::Debug for WgpuMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WgpuMask{:?}", self.shape.dims())
    }
}
