//! Histograms of order-preserving keys, and the thresholds applied to them:
//! the data that [`crate::contract::backend::Backend`] computes for a radix
//! selection ([`crate::selection::radix`]) and the cuts it applies.

use alloc::vec;
use alloc::vec::Vec;

use crate::contract::error::{Error, Result};

/// Bits resolved per histogram pass.
pub const RADIX_BITS: u32 = 16;
/// Bins per histogram.
pub const BINS: usize = 1 << RADIX_BITS;

/// Which keys a histogram counts, and into which bin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyWindow {
    /// Every key, binned by its high 16 bits.
    High,
    /// Only keys whose high 16 bits equal `high`, binned by their low 16 bits.
    Low {
        /// The high half the keys must have.
        high: u16,
    },
}

impl KeyWindow {
    /// The bin of `key`, or `None` when the window excludes it.
    #[inline(always)]
    pub fn bin(self, key: u32) -> Option<usize> {
        match self {
            KeyWindow::High => Some((key >> 16) as usize),
            KeyWindow::Low { high } => {
                if (key >> 16) as u16 == high {
                    Some((key & 0xFFFF) as usize)
                } else {
                    None
                }
            }
        }
    }
}

/// Key counts per bin over a set of inputs, plus the NaN count of each input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// [`BINS`] counts.
    pub bins: Vec<u64>,
    /// NaN scores per input, in input order (counted whatever the policy).
    pub nan: Vec<u64>,
}

impl Histogram {
    /// All zero, for `inputs` inputs.
    pub fn new(inputs: usize) -> Self {
        Histogram {
            bins: vec![0; BINS],
            nan: vec![0; inputs],
        }
    }

    /// Adds another histogram of the same window over the same inputs (for
    /// example another shard of them): bins and NaN counts are added input by
    /// input, and a histogram over more inputs extends the NaN list. A caller
    /// streaming different tensors one at a time keeps each one's NaN count
    /// itself, to name the tensor in errors.
    pub fn merge(&mut self, other: &Histogram) -> Result<()> {
        if other.bins.len() != self.bins.len() {
            return Err(Error::LengthMismatch {
                what: "histogram bins",
                expected: self.bins.len(),
                found: other.bins.len(),
            });
        }
        for (a, b) in self.bins.iter_mut().zip(&other.bins) {
            *a += b;
        }
        if self.nan.len() < other.nan.len() {
            self.nan.resize(other.nan.len(), 0);
        }
        for (a, b) in self.nan.iter_mut().zip(&other.nan) {
            *a += b;
        }
        Ok(())
    }

    /// Total count over all bins.
    pub fn total(&self) -> u64 {
        self.bins.iter().sum()
    }
}

/// The keys below a threshold and at it, per input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KeyCount {
    /// Elements whose key is below the threshold.
    pub below: u64,
    /// Elements whose key equals it.
    pub equal: u64,
}

/// A threshold applied to a sequence of elements (one input, or several in
/// order): prune keys below `key` and the first `ties` elements of the
/// sequence whose key equals `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorCut {
    /// Threshold key.
    pub key: u32,
    /// Tied elements pruned; [`TensorCut::ALL`] for all of them.
    pub ties: u64,
}

impl TensorCut {
    /// Prune every tied element.
    pub const ALL: u64 = u64::MAX;

    /// Whether an element with `key` is pruned, `tie_rank` being the number
    /// of earlier elements of the sequence whose key equals `self.key`.
    #[inline(always)]
    pub fn prunes(self, key: u32, tie_rank: u64) -> bool {
        key < self.key || (key == self.key && tie_rank < self.ties)
    }
}
