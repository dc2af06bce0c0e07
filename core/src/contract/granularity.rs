//! What a pruning decision removes: single weights, N of every M, or whole
//! units (rows, columns, blocks) of a weight tensor's matrix view.

use crate::contract::error::{Error, Result};
use crate::contract::shape::Shape;

/// The unit of pruning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Granularity {
    /// Individual weights.
    #[default]
    Unstructured,
    /// In every group of `m` consecutive weights along the input side (a row
    /// of the matrix view), keep the `n` of highest score.
    NofM(NofM),
    /// Whole units of a [`Grouping`]: neurons, filters, input features, blocks.
    Groups(Grouping),
}

impl Granularity {
    /// Output neurons of a linear layer, or filters (output channels) of a
    /// convolution `[out, in, kh, kw]`: the rows of the matrix view.
    pub const NEURONS: Granularity = Granularity::Groups(Grouping::Rows);
    /// Conv output channels; the same rows as [`Granularity::NEURONS`].
    pub const CHANNELS: Granularity = Granularity::Groups(Grouping::Rows);

    /// Checks the parameters (pattern and block sizes).
    pub fn validate(self) -> Result<()> {
        match self {
            Granularity::Unstructured => Ok(()),
            Granularity::NofM(p) => p.validate(),
            Granularity::Groups(g) => g.validate(),
        }
    }
}

/// An N:M pattern: at most `n` of every `m` consecutive weights kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NofM {
    /// Weights kept per group.
    pub n: usize,
    /// Group size.
    pub m: usize,
}

impl NofM {
    /// The 2:4 pattern of sparse tensor cores.
    pub const TWO_FOUR: NofM = NofM { n: 2, m: 4 };

    /// A pattern; fails unless `0 < n < m`.
    pub fn new(n: usize, m: usize) -> Result<Self> {
        let p = NofM { n, m };
        p.validate()?;
        Ok(p)
    }

    /// Checks `0 < n < m`.
    pub fn validate(self) -> Result<()> {
        if self.n == 0 || self.n >= self.m {
            return Err(Error::InvalidPattern {
                n: self.n,
                m: self.m,
            });
        }
        Ok(())
    }

    /// Checks that every row of a tensor's matrix view
    /// ([`Shape::matrix_view`]) splits into whole groups: groups are `m`
    /// consecutive elements of a row in storage order (for a conv kernel
    /// `[out, in, kh, kw]`, along the flattened `in * kh * kw` axis).
    pub fn check_shape(self, layer: &str, shape: &Shape) -> Result<()> {
        let (_, cols) = shape.matrix_view();
        if !cols.is_multiple_of(self.m) {
            return Err(Error::PatternMismatch {
                layer: layer.into(),
                len: cols,
                m: self.m,
            });
        }
        Ok(())
    }
}

/// How the elements of a weight tensor's matrix view `rows x cols`
/// ([`Shape::matrix_view`]) are grouped into prunable units. Units are
/// numbered in row-major order of the unit grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Grouping {
    /// One unit per row: output neurons, or conv filters.
    Rows,
    /// One unit per column: input features of a linear layer.
    Columns,
    /// Tiles of `rows x cols`; edge tiles may be smaller.
    Blocks {
        /// Tile height.
        rows: usize,
        /// Tile width.
        cols: usize,
    },
}

impl Grouping {
    /// Checks block sizes.
    pub fn validate(self) -> Result<()> {
        match self {
            Grouping::Blocks { rows, cols } if rows == 0 || cols == 0 => {
                Err(Error::InvalidBlock { rows, cols })
            }
            _ => Ok(()),
        }
    }

    /// The unit grid `(unit_rows, unit_cols)` for a weight shape.
    pub fn grid(self, shape: &Shape) -> (usize, usize) {
        let (r, c) = shape.matrix_view();
        match self {
            Grouping::Rows => (r, 1),
            Grouping::Columns => (1, c),
            Grouping::Blocks { rows, cols } => (r.div_ceil(rows.max(1)), c.div_ceil(cols.max(1))),
        }
    }

    /// The number of units in a tensor of this shape.
    pub fn units(self, shape: &Shape) -> usize {
        let (a, b) = self.grid(shape);
        a * b
    }

    /// The shape of the per-unit score tensor: `[units]`.
    pub fn unit_shape(self, shape: &Shape) -> Shape {
        Shape::vector(self.units(shape))
    }

    /// The unit that holds the element at flat index `index`.
    #[inline]
    pub fn unit_of(self, shape: &Shape, index: usize) -> usize {
        let (_, c) = shape.matrix_view();
        let (i, j) = (index / c, index % c);
        match self {
            Grouping::Rows => i,
            Grouping::Columns => j,
            Grouping::Blocks { rows, cols } => {
                let (_, gc) = self.grid(shape);
                (i / rows) * gc + j / cols
            }
        }
    }

    /// The flat indices of a unit's elements in canonical order: row-major
    /// within the unit. This is the order in which reductions accumulate.
    pub fn members(self, shape: &Shape, unit: usize) -> impl Iterator<Item = usize> {
        let (r, c) = shape.matrix_view();
        let (r0, r1, c0, c1) = match self {
            Grouping::Rows => (unit, unit + 1, 0, c),
            Grouping::Columns => (0, r, unit, unit + 1),
            Grouping::Blocks { rows, cols } => {
                let (_, gc) = self.grid(shape);
                let (bi, bj) = (unit / gc.max(1), unit % gc.max(1));
                (
                    bi * rows,
                    ((bi + 1) * rows).min(r),
                    bj * cols,
                    ((bj + 1) * cols).min(c),
                )
            }
        };
        (r0..r1).flat_map(move |i| (c0..c1).map(move |j| i * c + j))
    }
}

/// How a group's elements reduce to one score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// Signed sum.
    Sum,
    /// Sum of absolute values (L1 norm).
    L1,
    /// Sum of squares: the squared L2 norm. Ranking by it is ranking by the L2
    /// norm, without a square root whose rounding may differ between backends.
    SumSquares,
    /// Largest absolute value (L-infinity norm).
    MaxAbs,
}

/// Reductions accumulate in this many consecutive elements per partial sum.
pub const REDUCE_CHUNK: usize = 256;

impl Reduction {
    /// The value one element contributes.
    #[inline(always)]
    pub fn term(self, x: f32) -> f32 {
        match self {
            Reduction::Sum => x,
            Reduction::L1 | Reduction::MaxAbs => x.abs_bits(),
            Reduction::SumSquares => x * x,
        }
    }

    /// Combines two partial results. A NaN result is always the canonical
    /// quiet NaN ([`f32::NAN`]): which operand's NaN an addition returns
    /// (and so its sign) is left to the compiler and the processor, and
    /// optimised builds were seen to differ from unoptimised ones.
    #[inline(always)]
    pub fn combine(self, a: f32, b: f32) -> f32 {
        match self {
            Reduction::MaxAbs => {
                // NaN propagates, as it does for the sums.
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else if b > a {
                    b
                } else {
                    a
                }
            }
            _ => {
                let s = a + b;
                if s.is_nan() { f32::NAN } else { s }
            }
        }
    }

    /// Reduces values in the canonical order every backend must follow, so
    /// that group scores (and therefore masks) agree bit for bit: elements
    /// are accumulated sequentially in chunks of [`REDUCE_CHUNK`], starting
    /// from `0.0`; the chunk results are then combined sequentially, again
    /// starting from `0.0`. An empty group reduces to `0.0`.
    pub fn reduce(self, values: impl IntoIterator<Item = f32>) -> f32 {
        let mut total = 0.0f32;
        let mut chunk = 0.0f32;
        let mut len = 0usize;
        for x in values {
            chunk = self.combine(chunk, self.term(x));
            len += 1;
            if len == REDUCE_CHUNK {
                total = self.combine(total, chunk);
                chunk = 0.0;
                len = 0;
            }
        }
        if len > 0 {
            total = self.combine(total, chunk);
        }
        total
    }
}

/// `abs` without std: clears the sign bit.
trait AbsBits {
    fn abs_bits(self) -> Self;
}

impl AbsBits for f32 {
    #[inline(always)]
    fn abs_bits(self) -> f32 {
        f32::from_bits(self.to_bits() & 0x7FFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn blocks_cover_every_element_once() {
        let shape = Shape::new(&[5, 7]).unwrap();
        let g = Grouping::Blocks { rows: 2, cols: 3 };
        assert_eq!(g.units(&shape), 9);
        let mut seen = [0u8; 35];
        for u in 0..g.units(&shape) {
            for i in g.members(&shape, u) {
                assert_eq!(g.unit_of(&shape, i), u);
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&s| s == 1));
    }

    #[test]
    fn columns_and_rows_members() {
        let shape = Shape::new(&[2, 3]).unwrap();
        let cols: Vec<usize> = Grouping::Columns.members(&shape, 1).collect();
        assert_eq!(cols, [1, 4]);
        let rows: Vec<usize> = Grouping::Rows.members(&shape, 1).collect();
        assert_eq!(rows, [3, 4, 5]);
    }

    #[test]
    fn reduction_is_chunked() {
        // 300 ones then a large value: chunking changes nothing for exact sums,
        // but the canonical order must be followed for inexact ones.
        let v: Vec<f32> = (0..600).map(|i| 1.0 + i as f32 * 1e-3).collect();
        let chunked = Reduction::Sum.reduce(v.iter().copied());
        let mut c1 = 0.0f32;
        for x in &v[..256] {
            c1 += x;
        }
        let mut c2 = 0.0f32;
        for x in &v[256..512] {
            c2 += x;
        }
        let mut c3 = 0.0f32;
        for x in &v[512..] {
            c3 += x;
        }
        assert_eq!(chunked, ((0.0 + c1) + c2) + c3);
        assert_eq!(Reduction::MaxAbs.reduce([1.0, -3.0, 2.0]), 3.0);
        assert_eq!(Reduction::SumSquares.reduce([3.0, -4.0]), 25.0);
        // NaN results are canonical whatever the operands' signs and payloads.
        let odd = [
            f32::from_bits(0xFFC0_0001),
            1.0,
            f32::from_bits(0x7FC0_0002),
        ];
        for r in [
            Reduction::Sum,
            Reduction::L1,
            Reduction::SumSquares,
            Reduction::MaxAbs,
        ] {
            assert_eq!(r.reduce(odd).to_bits(), 0x7FC0_0000, "{r:?}");
        }
        let inf = [f32::INFINITY, -f32::INFINITY];
        assert_eq!(Reduction::Sum.reduce(inf).to_bits(), 0x7FC0_0000);
        assert_eq!(Reduction::L1.reduce([]), 0.0);
    }
}
