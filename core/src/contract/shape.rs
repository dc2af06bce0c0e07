//! Tensor shapes: small, stack-allocated, row-major.

use core::fmt;

use crate::contract::error::{Error, Result};

/// The largest rank a [`Shape`] can hold.
pub const MAX_RANK: usize = 8;

/// The dimensions of a row-major tensor, at most [`MAX_RANK`] of them.
///
/// Every tensor prunus handles is also viewed as a matrix
/// ([`Shape::matrix_view`]): the first axis is the output axis (neurons of a
/// linear layer, filters of a convolution) and everything after it is the
/// input side, flattened. N:M groups run along the rows of that view.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Shape {
    dims: heapless::Vec<usize, MAX_RANK>,
}

impl Shape {
    /// A shape from its dimensions.
    ///
    /// Fails with [`Error::RankTooLarge`] above [`MAX_RANK`] dimensions and with
    /// [`Error::ShapeOverflow`] when the element count does not fit in `usize`.
    pub fn new(dims: &[usize]) -> Result<Self> {
        if dims.len() > MAX_RANK {
            return Err(Error::RankTooLarge { rank: dims.len() });
        }
        dims.iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or(Error::ShapeOverflow)?;
        let mut v = heapless::Vec::new();
        for &d in dims {
            // Capacity was checked above.
            let _ = v.push(d);
        }
        Ok(Shape { dims: v })
    }

    /// A one-dimensional shape of `n` elements.
    pub fn vector(n: usize) -> Self {
        let mut dims = heapless::Vec::new();
        let _ = dims.push(n);
        Shape { dims }
    }

    /// A two-dimensional shape, `rows x cols`.
    ///
    /// Fails with [`Error::ShapeOverflow`] when `rows * cols` overflows.
    pub fn matrix(rows: usize, cols: usize) -> Result<Self> {
        Shape::new(&[rows, cols])
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// The number of elements (1 for a rank-0 shape).
    pub fn numel(&self) -> usize {
        // Overflow was excluded at construction.
        self.dims.iter().product()
    }

    /// True when the shape holds no element.
    pub fn is_empty(&self) -> bool {
        self.numel() == 0
    }

    /// The `(rows, cols)` matrix view: rank 0 is `1 x 1`, rank 1 is one row of
    /// `d0`, higher ranks are `d0 x (d1 * d2 * ...)` (a conv kernel
    /// `[out, in, kh, kw]` becomes `out x (in * kh * kw)`).
    pub fn matrix_view(&self) -> (usize, usize) {
        match self.dims.len() {
            0 => (1, 1),
            1 => (1, self.dims[0]),
            _ => (self.dims[0], self.dims[1..].iter().product()),
        }
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Anything that carries a [`Shape`]: backend tensors and masks.
pub trait HasShape {
    /// The shape of this value.
    fn shape(&self) -> &Shape;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_view_flattens_trailing_axes() {
        assert_eq!(Shape::new(&[4, 3, 3, 3]).unwrap().matrix_view(), (4, 27));
        assert_eq!(Shape::vector(5).matrix_view(), (1, 5));
        assert_eq!(Shape::new(&[]).unwrap().matrix_view(), (1, 1));
    }

    #[test]
    fn rejects_rank_and_overflow() {
        assert!(matches!(
            Shape::new(&[1; 9]),
            Err(Error::RankTooLarge { rank: 9 })
        ));
        assert!(matches!(
            Shape::new(&[usize::MAX, 2]),
            Err(Error::ShapeOverflow)
        ));
    }
}
