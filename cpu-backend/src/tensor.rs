//! Host tensors of the CPU backend: owned, or borrowed without a copy.

use prunus_core::contract::check;
use prunus_core::{HasShape, Result, Shape};

/// Where the elements of a [`CpuTensor`] live.
#[derive(Debug)]
enum Storage<'a> {
    /// A buffer the tensor owns.
    Owned(Vec<f32>),
    /// The caller's buffer, read only.
    Borrowed(&'a [f32]),
    /// The caller's buffer, written through by in-place ops.
    BorrowedMut(&'a mut [f32]),
}

/// A dense row-major f32 tensor of the CPU backend.
///
/// Its elements are either owned (results of ops, [`CpuTensor::from_vec`],
/// [`prunus_core::Backend::upload`]) or borrowed from the caller without a
/// copy ([`crate::CpuBackend::borrow`], [`crate::CpuBackend::borrow_mut`]).
/// In-place ops ([`prunus_core::Backend::apply_mask`],
/// [`prunus_core::Backend::rank1_update`]) write through a mutable borrow;
/// on a read-only borrow they first copy the elements into an owned buffer,
/// leaving the caller's data untouched.
///
/// ```
/// use prunus_core::{HasShape, Shape};
/// use prunus_cpu::CpuTensor;
/// let t = CpuTensor::from_vec(vec![1.0, 2.0, 3.0], Shape::vector(3))?;
/// assert_eq!(t.shape(), &Shape::vector(3));
/// assert_eq!(t.data(), [1.0, 2.0, 3.0]);
/// # Ok::<(), prunus_core::Error>(())
/// ```
#[derive(Debug)]
pub struct CpuTensor<'a> {
    shape: Shape,
    storage: Storage<'a>,
}

impl<'a> CpuTensor<'a> {
    /// An owned tensor; fails when `data.len()` is not `shape.numel()`.
    pub fn from_vec(data: Vec<f32>, shape: Shape) -> Result<Self> {
        check::same_len("tensor data", shape.numel(), data.len())?;
        Ok(CpuTensor {
            shape,
            storage: Storage::Owned(data),
        })
    }

    /// A read-only view of the caller's data; fails on a length mismatch.
    pub(crate) fn borrowed(data: &'a [f32], shape: &Shape) -> Result<Self> {
        check::same_len("tensor data", shape.numel(), data.len())?;
        Ok(CpuTensor {
            shape: shape.clone(),
            storage: Storage::Borrowed(data),
        })
    }

    /// A writable view of the caller's data; fails on a length mismatch.
    pub(crate) fn borrowed_mut(data: &'a mut [f32], shape: &Shape) -> Result<Self> {
        check::same_len("tensor data", shape.numel(), data.len())?;
        Ok(CpuTensor {
            shape: shape.clone(),
            storage: Storage::BorrowedMut(data),
        })
    }

    /// An owned tensor from data whose length is known to match.
    pub(crate) fn owned(data: Vec<f32>, shape: Shape) -> Self {
        debug_assert_eq!(data.len(), shape.numel());
        CpuTensor {
            shape,
            storage: Storage::Owned(data),
        }
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[f32] {
        match &self.storage {
            Storage::Owned(v) => v,
            Storage::Borrowed(s) => s,
            Storage::BorrowedMut(s) => s,
        }
    }

    /// The elements, writable. A read-only borrow is first copied into an
    /// owned buffer (the caller's data is never written through a shared
    /// borrow); a mutable borrow is written through.
    pub fn data_mut(&mut self) -> &mut [f32] {
        if let Storage::Borrowed(s) = self.storage {
            self.storage = Storage::Owned(s.to_vec());
        }
        match &mut self.storage {
            Storage::Owned(v) => v,
            Storage::BorrowedMut(s) => s,
            Storage::Borrowed(_) => unreachable!("a read-only borrow was just copied"),
        }
    }

    /// The elements by value (a copy for borrowed tensors).
    pub fn into_vec(self) -> Vec<f32> {
        match self.storage {
            Storage::Owned(v) => v,
            Storage::Borrowed(s) => s.to_vec(),
            Storage::BorrowedMut(s) => s.to_vec(),
        }
    }

    /// True when the elements are borrowed from the caller.
    pub fn is_borrowed(&self) -> bool {
        !matches!(self.storage, Storage::Owned(_))
    }
}

impl Clone for CpuTensor<'_> {
    /// Owned tensors and mutable borrows are copied into owned tensors; a
    /// read-only borrow stays a borrow of the same data.
    fn clone(&self) -> Self {
        let storage = match &self.storage {
            Storage::Borrowed(s) => Storage::Borrowed(s),
            _ => Storage::Owned(self.data().to_vec()),
        };
        CpuTensor {
            shape: self.shape.clone(),
            storage,
        }
    }
}

impl HasShape for CpuTensor<'_> {
    fn shape(&self) -> &Shape {
        &self.shape
    }
}
