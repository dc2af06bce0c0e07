//! Exact k-th smallest key by radix selection over histograms.
//!
//! [`RadixSelect`] holds no data: it asks for a histogram of keys in a
//! [`KeyWindow`], absorbs it, and after at most two passes returns the
//! [`Cut`] that prunes exactly `k` elements. Histograms are plain counts, so
//! they can be computed tensor by tensor, shard by shard or machine by machine
//! and added ([`Histogram::merge`]): the same selection runs in memory, over a
//! checkpoint streamed from disk, or across devices.

use alloc::vec;
use alloc::vec::Vec;

use crate::contract::error::{Error, Result};
use crate::contract::histogram::{BINS, Histogram, KeyWindow, TensorCut};

/// A global cut: prune every key below `key`, and of the elements whose key
/// equals `key`, the first `ties` in global index order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The k-th smallest key.
    pub key: u32,
    /// How many elements at `key` are pruned.
    pub ties: u64,
    /// How many elements are at `key` in total.
    pub tied: u64,
}

impl Cut {
    /// The cut that prunes nothing.
    pub const NONE: Cut = Cut {
        key: 0,
        ties: 0,
        tied: 0,
    };

    /// The threshold to apply to the inputs as one sequence, with
    /// [`TensorCut::ALL`] when every tied element is pruned (so a backend
    /// needs no tie ranks at all).
    pub fn threshold(self) -> TensorCut {
        TensorCut {
            key: self.key,
            ties: if self.ties >= self.tied && self.ties > 0 {
                TensorCut::ALL
            } else {
                self.ties
            },
        }
    }

    /// One cut per input, for callers that select input by input and know
    /// how many elements each holds at `key` (`equal[i]`): the tied elements
    /// pruned are the first `ties` in input order.
    pub fn distribute(self, equal: &[u64]) -> Vec<TensorCut> {
        let mut left = self.ties;
        equal
            .iter()
            .map(|&e| {
                let take = left.min(e);
                left -= take;
                TensorCut {
                    key: self.key,
                    ties: take,
                }
            })
            .collect()
    }
}

/// The bucket of keys (same high 16 bits) that holds the threshold, after
/// the first histogram pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// The keys' high 16 bits.
    pub high: u16,
    /// How many of the bucket's elements are pruned (its lowest, by key and
    /// sequence order).
    pub rank: u64,
    /// How many elements the bucket holds.
    pub count: u64,
}

#[derive(Clone, Copy, Debug)]
enum Stage {
    High,
    Low { high: u16, rank: u64, count: u64 },
    Done(Cut),
}

/// Finds the cut that prunes exactly `k` of `n` elements: the `k` smallest by
/// (key, global index).
///
/// ```
/// use prunus_core::contract::key::order_key;
/// use prunus_core::contract::histogram::Histogram;
/// use prunus_core::selection::radix::RadixSelect;
/// let scores = [0.5f32, 0.1, 0.3, 0.1, 0.9];
/// let mut sel = RadixSelect::new(5, 2).unwrap();
/// while let Some(window) = sel.window() {
///     let mut h = Histogram::new(1);
///     for &s in &scores {
///         if let Some(b) = window.bin(order_key(s)) {
///             h.bins[b] += 1;
///         }
///     }
///     sel.absorb(&h).unwrap();
/// }
/// let cut = sel.cut().unwrap();
/// let tc = cut.threshold();
/// let (mut rank, mut pruned) = (0, Vec::new());
/// for (i, &s) in scores.iter().enumerate() {
///     let key = order_key(s);
///     if tc.prunes(key, rank) {
///         pruned.push(i);
///     }
///     rank += (key == tc.key) as u64;
/// }
/// assert_eq!(pruned, [1, 3]);
/// ```
#[derive(Clone, Debug)]
pub struct RadixSelect {
    n: u64,
    k: u64,
    stage: Stage,
}

impl RadixSelect {
    /// Selection of `k` out of `n`; fails when `k > n`.
    pub fn new(n: u64, k: u64) -> Result<Self> {
        if k > n {
            return Err(Error::LengthMismatch {
                what: "elements to select",
                expected: n as usize,
                found: k as usize,
            });
        }
        let stage = if k == 0 {
            Stage::Done(Cut::NONE)
        } else {
            Stage::High
        };
        Ok(RadixSelect { n, k, stage })
    }

    /// The histogram window needed next, or `None` when the cut is known.
    pub fn window(&self) -> Option<KeyWindow> {
        match self.stage {
            Stage::High => Some(KeyWindow::High),
            Stage::Low { high, .. } => Some(KeyWindow::Low { high }),
            Stage::Done(_) => None,
        }
    }

    /// Takes the histogram of [`RadixSelect::window`]. Fails when its total
    /// does not match what the previous passes counted (a backend bug or
    /// data that changed between passes).
    pub fn absorb(&mut self, h: &Histogram) -> Result<()> {
        let total = h.total();
        match self.stage {
            Stage::High => {
                check_total(total, self.n)?;
                let (bin, before) = locate(&h.bins, self.k);
                let rank = self.k - before;
                let count = h.bins[bin];
                self.stage = if rank == count && bin + 1 < BINS {
                    // The whole bucket is pruned: no second pass needed.
                    Stage::Done(Cut {
                        key: ((bin + 1) << 16) as u32,
                        ties: 0,
                        tied: 0,
                    })
                } else {
                    Stage::Low {
                        high: bin as u16,
                        rank,
                        count,
                    }
                };
            }
            Stage::Low { high, rank, .. } => {
                if total < rank {
                    return Err(inconsistent(total, rank));
                }
                let (bin, before) = locate(&h.bins, rank);
                self.stage = Stage::Done(Cut {
                    key: ((high as u32) << 16) | bin as u32,
                    ties: rank - before,
                    tied: h.bins[bin],
                });
            }
            Stage::Done(_) => {}
        }
        Ok(())
    }

    /// Before the second pass: the bucket that holds the threshold. A caller
    /// that can gather its elements cheaply selects among them itself.
    pub fn bucket(&self) -> Option<Bucket> {
        match self.stage {
            Stage::Low { high, rank, count } => Some(Bucket { high, rank, count }),
            _ => None,
        }
    }

    /// The cut, once every window has been absorbed.
    pub fn cut(&self) -> Option<Cut> {
        match self.stage {
            Stage::Done(c) => Some(c),
            _ => None,
        }
    }
}

/// The bin holding the `rank`-th (1-based) smallest of the counted elements,
/// and the count before it (the last bin when `rank` exceeds the total).
pub fn locate(bins: &[u64], rank: u64) -> (usize, u64) {
    let mut before = 0u64;
    for (i, &c) in bins.iter().enumerate() {
        if before + c >= rank {
            return (i, before);
        }
        before += c;
    }
    (bins.len() - 1, before)
}

/// The range `[lo, hi]` of 16-bit key buckets (the keys' high halves) that a
/// sample of keys says holds the `k`-th smallest of `n`, with a margin of
/// four standard deviations of the sample quantile; `None` when the sample
/// is smaller than 1,024 keys or the range would hold more than 1/64 of the
/// sample. The streamed checkpoint selection uses it to place a cut before
/// its one pass.
pub fn sample_buckets(sample: &[u32], n: u64, k: u64) -> Option<(u16, u16)> {
    let range = SampleRange::new(sample, n, k)?;
    let lo = range.first.map_or(0, |r| range.bucket(r));
    let hi = range.bucket(range.last);
    let inside: u64 = range.bins[lo..=hi].iter().sum();
    (inside * 64 <= sample.len() as u64).then_some((lo as u16, hi as u16))
}

/// The key range `[lo, hi]` that a sample of keys says holds the `k`-th
/// smallest of `n`: [`sample_buckets`]'s margin, bounded by the sample's
/// own keys rather than whole buckets, so about two thirds as many elements
/// fall in it (core's Gather plan gathers them). `None` in the same cases.
pub fn sample_keys(sample: &[u32], n: u64, k: u64) -> Option<(u32, u32)> {
    let range = SampleRange::new(sample, n, k)?;
    let lo = range.first.map_or(0, |r| range.key(sample, r, 0));
    let hi = range.key(sample, range.last, u32::MAX);
    let inside = range.last.min(range.size) - range.first.unwrap_or(0) + 1;
    (inside * 64 <= sample.len() as u64).then_some((lo, hi))
}

/// The sample ranks around the `k`-th smallest of `n` that a range must
/// span, and the sample's 16-bit histogram.
struct SampleRange {
    bins: Vec<u64>,
    /// Sample size.
    size: u64,
    /// 0-based rank of the first sample key in the range (`None` when the
    /// margin reaches below the sample).
    first: Option<u64>,
    /// 0-based rank of the last one (`size` or more when the margin reaches
    /// above the sample).
    last: u64,
}

impl SampleRange {
    fn new(sample: &[u32], n: u64, k: u64) -> Option<SampleRange> {
        let s = sample.len();
        if s < 1024 || n == 0 {
            return None;
        }
        let mut bins = vec![0u64; BINS];
        for &key in sample {
            bins[(key >> 16) as usize] += 1;
        }
        let q = k as f64 / n as f64;
        let margin = 4.0 * libm::sqrt(s as f64 * q * (1.0 - q)) + 8.0;
        let first = libm::floor(q * s as f64 - margin);
        let first = (first >= 0.0).then_some(first as u64);
        let last = libm::ceil(q * s as f64 + margin) as u64;
        Some(SampleRange {
            bins,
            size: s as u64,
            first,
            last,
        })
    }

    /// The bucket of the sample key of rank `r` (the last bucket past the
    /// sample).
    fn bucket(&self, r: u64) -> usize {
        if r >= self.size {
            return BINS - 1;
        }
        locate(&self.bins, r + 1).0
    }

    /// The sample key of rank `r`; `edge` where `r` lies past the sample.
    fn key(&self, sample: &[u32], r: u64, edge: u32) -> u32 {
        if r >= self.size {
            return edge;
        }
        let (b, before) = locate(&self.bins, r + 1);
        let mut keys: Vec<u32> = sample
            .iter()
            .copied()
            .filter(|&key| key >> 16 == b as u32)
            .collect();
        *keys.select_nth_unstable((r - before) as usize).1
    }
}

fn check_total(total: u64, expected: u64) -> Result<()> {
    if total != expected {
        return Err(inconsistent(total, expected));
    }
    Ok(())
}

fn inconsistent(total: u64, expected: u64) -> Error {
    Error::Backend {
        message: alloc::format!(
            "histogram counted {total} keys where {expected} were expected; \
             the data changed between passes or the backend miscounted"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::key::order_key;

    fn select(scores: &[f32], k: u64) -> Cut {
        let mut sel = RadixSelect::new(scores.len() as u64, k).unwrap();
        while let Some(w) = sel.window() {
            let mut h = Histogram::new(1);
            for &s in scores {
                if let Some(b) = w.bin(order_key(s)) {
                    h.bins[b] += 1;
                }
            }
            sel.absorb(&h).unwrap();
        }
        sel.cut().unwrap()
    }

    fn pruned(scores: &[f32], cut: Cut) -> Vec<usize> {
        let mut rank = 0;
        let mut out = Vec::new();
        for (i, &s) in scores.iter().enumerate() {
            let key = order_key(s);
            let tc = TensorCut {
                key: cut.key,
                ties: cut.ties,
            };
            if tc.prunes(key, rank) {
                out.push(i);
            }
            if key == cut.key {
                rank += 1;
            }
        }
        out
    }

    #[test]
    fn exact_with_ties_lowest_index_first() {
        let s = [1.0, 0.0, 1.0, 1.0, -2.0, 1.0];
        for k in 0..=6u64 {
            let cut = select(&s, k);
            let p = pruned(&s, cut);
            assert_eq!(p.len() as u64, k, "k = {k}");
        }
        assert_eq!(pruned(&s, select(&s, 3)), [0, 1, 4]);
    }

    #[test]
    fn skips_second_pass_when_bucket_is_whole() {
        // Values whose keys share the low 16 bits land one per bucket.
        let s = [1.0f32, 2.0, 4.0];
        let mut sel = RadixSelect::new(3, 1).unwrap();
        let mut h = Histogram::new(1);
        for &x in &s {
            h.bins[KeyWindow::High.bin(order_key(x)).unwrap()] += 1;
        }
        sel.absorb(&h).unwrap();
        assert!(sel.window().is_none());
        assert_eq!(pruned(&s, sel.cut().unwrap()), [0]);
    }

    #[test]
    fn rejects_inconsistent_histogram() {
        let mut sel = RadixSelect::new(10, 3).unwrap();
        let h = Histogram::new(1);
        assert!(sel.absorb(&h).is_err());
        assert!(RadixSelect::new(2, 3).is_err());
    }

    #[test]
    fn distribute_fills_in_order() {
        let cut = Cut {
            key: 7,
            ties: 5,
            tied: 9,
        };
        let d = cut.distribute(&[2, 0, 4, 3]);
        let ties: Vec<u64> = d.iter().map(|c| c.ties).collect();
        assert_eq!(ties, [2, 0, 3, 0]);
        assert_eq!(cut.threshold().ties, 5);
        let all = Cut { ties: 9, ..cut };
        assert_eq!(all.threshold().ties, TensorCut::ALL);
        assert_eq!(Cut::NONE.threshold().ties, 0);
    }

    /// Keys of `n` continuous values, `|x|` of a sum of uniforms, as order
    /// keys, and every 16th run of 64 of them as the sample.
    fn population(n: u64) -> (Vec<u32>, Vec<u32>) {
        let keys: Vec<u32> = (0..n)
            .map(|i| {
                let x: f32 = (0..4)
                    .map(|s| crate::contract::random::uniform(3, s, i))
                    .sum::<f32>()
                    - 2.0;
                order_key(x.abs())
            })
            .collect();
        let sample = keys.chunks(64).step_by(16).flatten().copied().collect();
        (keys, sample)
    }

    #[test]
    fn sample_ranges_hold_the_threshold() {
        let (mut keys, sample) = population(1 << 21);
        let n = keys.len() as u64;
        keys.sort_unstable();
        for q in [0.001, 0.1, 0.5, 0.9, 0.999] {
            let k = (q * n as f64) as u64;
            let want = keys[k as usize - 1];
            let (lo, hi) = sample_keys(&sample, n, k).unwrap();
            let (blo, bhi) = sample_buckets(&sample, n, k).unwrap();
            assert!(
                lo <= want && want <= hi,
                "q {q}: {want:#x} outside {lo:#x}..={hi:#x}"
            );
            // Within the bucket range, and narrower than it.
            assert!((blo as u32) << 16 <= lo && hi <= ((bhi as u32) << 16 | 0xFFFF));
            let inside = |a: u32, b: u32| keys.iter().filter(|&&x| a <= x && x <= b).count();
            let whole = inside((blo as u32) << 16, (bhi as u32) << 16 | 0xFFFF);
            assert!(inside(lo, hi) < whole, "q {q}");
        }
        // Margins past either end of the sample reach the extreme keys.
        assert_eq!(sample_keys(&sample, n, 1).unwrap().0, 0);
        assert_eq!(sample_keys(&sample, n, n).unwrap().1, u32::MAX);
        // Too small a sample, or a range too full (heavy ties), gives none.
        assert_eq!(sample_keys(&sample[..1000], n, n / 2), None);
        assert_eq!(sample_keys(&[7; 4096], n, n / 2), None);
        assert_eq!(sample_buckets(&[7; 4096], n, n / 2), None);
    }
}
