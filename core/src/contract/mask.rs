//! Bit-packed masks and their algebra.

use alloc::vec;
use alloc::vec::Vec;

use crate::contract::error::{Error, Result};
use crate::contract::granularity::{Grouping, NofM};
use crate::contract::shape::{HasShape, Shape};

/// Which elements of a tensor survive: bit `i` (flat row-major index) is `1`
/// when element `i` is kept and `0` when it is pruned, packed little-endian
/// into `u64` words (bit `i` is bit `i % 64` of word `i / 64`). Bits past the
/// end of the last word are always zero.
///
/// ```
/// use prunus_core::{Mask, Shape};
/// let a = Mask::from_bools(Shape::vector(4), &[true, true, false, true]).unwrap();
/// let b = Mask::from_bools(Shape::vector(4), &[true, false, false, true]).unwrap();
/// assert!(b.is_subset_of(&a).unwrap());
/// assert_eq!(a.and(&b).unwrap(), b);
/// assert_eq!(a.count_pruned(), 1);
/// ```
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Mask {
    shape: Shape,
    words: Vec<u64>,
}

/// Number of `u64` words that hold `len` bits.
pub fn words_for(len: usize) -> usize {
    len.div_ceil(64)
}

impl Mask {
    /// Everything kept.
    pub fn keep_all(shape: Shape) -> Self {
        let len = shape.numel();
        let mut words = vec![u64::MAX; words_for(len)];
        clear_tail(&mut words, len);
        Mask { shape, words }
    }

    /// Everything pruned.
    pub fn prune_all(shape: Shape) -> Self {
        let words = vec![0; words_for(shape.numel())];
        Mask { shape, words }
    }

    /// A mask from packed words. Fails when the word count does not match the
    /// shape or when padding bits past the end are set.
    pub fn from_words(shape: Shape, words: Vec<u64>) -> Result<Self> {
        let len = shape.numel();
        if words.len() != words_for(len) {
            return Err(Error::InvalidMask {
                reason: "word count does not match the shape",
            });
        }
        if !len.is_multiple_of(64) && words.last().is_some_and(|w| w >> (len % 64) != 0) {
            return Err(Error::InvalidMask {
                reason: "padding bits past the last element are set",
            });
        }
        Ok(Mask { shape, words })
    }

    /// A mask with `keep(i)` for every element.
    pub fn from_fn(shape: Shape, mut keep: impl FnMut(usize) -> bool) -> Self {
        let len = shape.numel();
        let mut words = vec![0u64; words_for(len)];
        for (w, word) in words.iter_mut().enumerate() {
            let base = w * 64;
            for b in 0..(len - base).min(64) {
                *word |= (keep(base + b) as u64) << b;
            }
        }
        Mask { shape, words }
    }

    /// A mask from one `bool` per element (`true` = kept).
    pub fn from_bools(shape: Shape, keep: &[bool]) -> Result<Self> {
        if keep.len() != shape.numel() {
            return Err(Error::LengthMismatch {
                what: "mask values",
                expected: shape.numel(),
                found: keep.len(),
            });
        }
        Ok(Mask::from_fn(shape, |i| keep[i]))
    }

    /// A mask from bytes packed least-significant bit first (bit `i` is bit
    /// `i % 8` of byte `i / 8`), the layout of `<name>.mask` tensors.
    pub fn from_bytes(shape: Shape, bytes: &[u8]) -> Result<Self> {
        let len = shape.numel();
        if bytes.len() != len.div_ceil(8) {
            return Err(Error::InvalidMask {
                reason: "byte count does not match the shape",
            });
        }
        let mut words = vec![0u64; words_for(len)];
        for (i, &b) in bytes.iter().enumerate() {
            words[i / 8] |= (b as u64) << (8 * (i % 8));
        }
        Mask::from_words(shape, words)
    }

    /// The packed bytes of [`Mask::from_bytes`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let n = self.len().div_ceil(8);
        (0..n)
            .map(|i| (self.words[i / 8] >> (8 * (i % 8))) as u8)
            .collect()
    }

    /// The packed words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Number of elements covered.
    pub fn len(&self) -> usize {
        self.shape.numel()
    }

    /// True when the mask covers no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether element `i` is kept.
    ///
    /// # Panics
    /// When `i >= self.len()` (a programming error).
    #[track_caller]
    pub fn get(&self, i: usize) -> bool {
        assert!(i < self.len(), "mask index {i} out of range {}", self.len());
        self.words[i / 64] >> (i % 64) & 1 == 1
    }

    /// Keeps (`true`) or prunes (`false`) element `i`.
    ///
    /// # Panics
    /// When `i >= self.len()` (a programming error).
    #[track_caller]
    pub fn set(&mut self, i: usize, keep: bool) {
        assert!(i < self.len(), "mask index {i} out of range {}", self.len());
        let bit = 1u64 << (i % 64);
        if keep {
            self.words[i / 64] |= bit;
        } else {
            self.words[i / 64] &= !bit;
        }
    }

    /// Number of kept elements.
    pub fn count_kept(&self) -> u64 {
        self.words.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// Number of pruned elements.
    pub fn count_pruned(&self) -> u64 {
        self.len() as u64 - self.count_kept()
    }

    /// Fraction kept (1 for an empty mask).
    pub fn density(&self) -> f64 {
        if self.is_empty() {
            1.0
        } else {
            self.count_kept() as f64 / self.len() as f64
        }
    }

    /// Fraction pruned (0 for an empty mask).
    pub fn sparsity(&self) -> f64 {
        1.0 - self.density()
    }

    /// Indices of kept elements, ascending.
    pub fn kept(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            core::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let b = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(w * 64 + b)
            })
        })
    }

    fn zip(&self, other: &Mask, op: &'static str, f: impl Fn(u64, u64) -> u64) -> Result<Mask> {
        if self.shape != other.shape {
            return Err(Error::shape_mismatch(op, &self.shape, &other.shape));
        }
        let words = self
            .words
            .iter()
            .zip(&other.words)
            .map(|(&a, &b)| f(a, b))
            .collect();
        Ok(Mask {
            shape: self.shape.clone(),
            words,
        })
    }

    /// Kept in both.
    pub fn and(&self, other: &Mask) -> Result<Mask> {
        self.zip(other, "mask and", |a, b| a & b)
    }

    /// Kept in either.
    pub fn or(&self, other: &Mask) -> Result<Mask> {
        self.zip(other, "mask or", |a, b| a | b)
    }

    /// Kept here and not in `other`.
    pub fn and_not(&self, other: &Mask) -> Result<Mask> {
        self.zip(other, "mask and-not", |a, b| a & !b)
    }

    /// Kept in exactly one.
    pub fn xor(&self, other: &Mask) -> Result<Mask> {
        self.zip(other, "mask xor", |a, b| a ^ b)
    }

    /// Kept where this is pruned and vice versa.
    pub fn not(&self) -> Mask {
        let mut words: Vec<u64> = self.words.iter().map(|w| !w).collect();
        clear_tail(&mut words, self.len());
        Mask {
            shape: self.shape.clone(),
            words,
        }
    }

    /// True when everything kept here is kept in `other` too: an IMP round's
    /// mask is always a subset of the previous round's.
    pub fn is_subset_of(&self, other: &Mask) -> Result<bool> {
        let d = self.and_not(other)?;
        Ok(d.words.iter().all(|&w| w == 0))
    }

    /// Expands a unit mask (one bit per unit of `grouping`) to the mask of a
    /// weight tensor of shape `weights`: every element takes its unit's bit.
    pub fn expand(&self, grouping: Grouping, weights: &Shape) -> Result<Mask> {
        grouping.validate()?;
        let units = grouping.unit_shape(weights);
        if self.len() != units.numel() {
            return Err(Error::shape_mismatch("mask expand", &units, &self.shape));
        }
        let (_, c) = weights.matrix_view();
        Ok(match grouping {
            Grouping::Rows => Mask::from_fn(weights.clone(), |i| self.get(i / c)),
            _ => Mask::from_fn(weights.clone(), |i| self.get(grouping.unit_of(weights, i))),
        })
    }

    /// The unit mask of `grouping` in which a unit is kept when any of its
    /// elements is kept: the inverse of [`Mask::expand`] on expanded masks.
    pub fn reduce_any(&self, grouping: Grouping) -> Result<Mask> {
        grouping.validate()?;
        let units = grouping.unit_shape(&self.shape);
        let mut out = Mask::prune_all(units);
        for i in self.kept() {
            out.set(grouping.unit_of(&self.shape, i), true);
        }
        Ok(out)
    }

    /// Number of N:M groups along the rows of the matrix view with more than `n` kept. Fails
    /// when the pattern is invalid or the row length is not a multiple of `m`.
    pub fn n_of_m_violations(&self, pattern: NofM) -> Result<usize> {
        pattern.validate()?;
        pattern.check_shape("mask", &self.shape)?;
        let m = pattern.m;
        let groups = self.len() / m;
        Ok((0..groups)
            .filter(|g| (0..m).filter(|j| self.get(g * m + j)).count() > pattern.n)
            .count())
    }

    /// True when every group of `m` consecutive elements of a row
    /// keeps at most `n`.
    pub fn satisfies(&self, pattern: NofM) -> Result<bool> {
        Ok(self.n_of_m_violations(pattern)? == 0)
    }

    /// Which rows and columns of the matrix view keep at least one element:
    /// the dense layer that remains after compaction.
    pub fn compaction(&self) -> Compaction {
        let (r, c) = self.shape.matrix_view();
        let mut rows = vec![false; r];
        let mut cols = vec![false; c];
        for i in self.kept() {
            rows[i / c] = true;
            cols[i % c] = true;
        }
        Compaction {
            rows: (0..r).filter(|&i| rows[i]).collect(),
            cols: (0..c).filter(|&j| cols[j]).collect(),
        }
    }
}

impl HasShape for Mask {
    fn shape(&self) -> &Shape {
        &self.shape
    }
}

/// What survives compaction of a structured mask: the indices of rows and
/// columns of the matrix view that keep at least one element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compaction {
    /// Surviving rows (output units), ascending.
    pub rows: Vec<usize>,
    /// Surviving columns (inputs), ascending.
    pub cols: Vec<usize>,
}

fn clear_tail(words: &mut [u64], len: usize) {
    if !len.is_multiple_of(64)
        && let Some(last) = words.last_mut()
    {
        *last &= (1u64 << (len % 64)) - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: usize) -> Shape {
        Shape::vector(n)
    }

    #[test]
    fn not_keeps_padding_clear() {
        let m = Mask::prune_all(v(70)).not();
        assert_eq!(m.count_kept(), 70);
        assert_eq!(m, Mask::keep_all(v(70)));
        assert!(Mask::from_words(v(70), m.words().to_vec()).is_ok());
        assert!(Mask::from_words(v(70), alloc::vec![u64::MAX, u64::MAX]).is_err());
    }

    #[test]
    fn bytes_round_trip() {
        let m = Mask::from_fn(v(77), |i| i % 3 == 0);
        let b = m.to_bytes();
        assert_eq!(b.len(), 10);
        assert_eq!(b[0], 0b0100_1001);
        assert_eq!(Mask::from_bytes(v(77), &b).unwrap(), m);
    }

    #[test]
    fn expand_and_reduce_rows() {
        let w = Shape::new(&[3, 2, 2]).unwrap();
        let units = Mask::from_bools(v(3), &[true, false, true]).unwrap();
        let e = units.expand(Grouping::Rows, &w).unwrap();
        let kept: Vec<usize> = e.kept().collect();
        assert_eq!(kept, [0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(e.reduce_any(Grouping::Rows).unwrap(), units);
        let c = e.compaction();
        assert_eq!(c.rows, [0, 2]);
        assert_eq!(c.cols, [0, 1, 2, 3]);
    }

    #[test]
    fn n_of_m_check() {
        let p = NofM::TWO_FOUR;
        let ok = Mask::from_bools(
            Shape::matrix(1, 8).unwrap(),
            &[true, false, true, false, false, false, true, true],
        )
        .unwrap();
        assert!(ok.satisfies(p).unwrap());
        let bad = Mask::keep_all(Shape::matrix(1, 8).unwrap());
        assert_eq!(bad.n_of_m_violations(p).unwrap(), 2);
        assert!(Mask::keep_all(v(6)).satisfies(p).is_err());
    }

    #[test]
    fn algebra_rejects_shape_mismatch() {
        assert!(matches!(
            Mask::keep_all(v(3)).and(&Mask::keep_all(v(4))),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}
