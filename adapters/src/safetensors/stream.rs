//! Exact selection over a checkpoint, streamed tensor by tensor.
//!
//! The same counting rule and tie-break as [`prunus_core::select()`]: the `k`
//! lowest scores by (score, global index) are pruned, the global index being
//! the order of the tensors' data in the file, then the flat index within a
//! tensor. Core's [`RadixSelect`] finds the cut from histograms; this module
//! computes them by reading one memory-mapped tensor at a time:
//!
//! - F16 and BF16 magnitudes: one read. Each tensor's histogram counts its
//!   65,536 bit patterns, from which the histogram of every key window
//!   follows without reading again.
//! - F32 magnitudes: one read for the high 16 key bits, and a second read of
//!   the tensors whose counts the threshold's bucket needs.
//! - Random scores are computed from (seed, tensor, index), never read; the
//!   data is read once to check it is finite.
//!
//! Only 512 KiB of counts per tensor stay in memory. A global selection
//! whose share of a tensor would exceed the tensor's guard saturates that
//! tensor at its cap and selects again among the rest, as core does.

use std::sync::OnceLock;

use prunus_core::key::KeyRule;
use prunus_core::radix::{BINS, Cut, Histogram, KeyWindow, RadixSelect, TensorCut};
use prunus_core::random::uniform;
use rayon::prelude::*;

use super::checkpoint::Checkpoint;
use super::dtype::Dtype;
use crate::error::{Error, Result};

/// Elements per parallel chunk (a multiple of 64, so chunks own whole mask
/// bytes).
pub(crate) const CHUNK: usize = 1 << 20;

/// Where the scores come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Scores {
    /// `|w|`.
    Magnitude,
    /// Uniform in `[0, 1)` from the seed, the tensor's position among the
    /// pruned ones (core's stream) and the flat index.
    Random {
        /// The seed.
        seed: u64,
    },
}

/// One tensor taking part in a selection.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    /// Its index among the checkpoint's tensors.
    pub index: usize,
    /// Its position among the pruned tensors (the random stream).
    pub stream: u32,
    /// Its dtype (prunable).
    pub dtype: Dtype,
    /// Its element count.
    pub numel: u64,
    /// The most of its elements the guards allow to prune.
    pub cap: u64,
}

/// How a member's elements become keys.
#[derive(Clone, Copy)]
pub(crate) struct Keys {
    scores: Scores,
    dtype: Dtype,
    stream: u32,
    /// Keys of the 65,536 bit patterns of a 16-bit dtype, for magnitudes.
    table: Option<&'static [u32]>,
}

impl Keys {
    /// The keys of `member`'s elements under `scores`.
    pub(crate) fn new(scores: Scores, member: &Member) -> Keys {
        let table = match (scores, member.dtype) {
            (Scores::Magnitude, Dtype::F16 | Dtype::BF16) => Some(key_table(member.dtype)),
            _ => None,
        };
        Keys {
            scores,
            dtype: member.dtype,
            stream: member.stream,
            table,
        }
    }

    /// The key of the element at flat `index` stored in `bytes`.
    #[inline(always)]
    pub(crate) fn key(&self, index: u64, bytes: &[u8]) -> u32 {
        match (self.scores, self.table) {
            (Scores::Random { seed }, _) => {
                KeyRule::IDENTITY.key(uniform(seed, self.stream, index))
            }
            (Scores::Magnitude, Some(t)) => t[u16::from_le_bytes([bytes[0], bytes[1]]) as usize],
            (Scores::Magnitude, None) => KeyRule::ABS.key(self.dtype.decode(bytes)),
        }
    }

    /// Whether keys are a function of the 16-bit pattern alone.
    fn coded(&self) -> bool {
        self.table.is_some()
    }
}

/// The magnitude keys of every bit pattern of a 16-bit dtype (F16 or
/// BF16), computed once.
fn key_table(dtype: Dtype) -> &'static [u32] {
    static TABLES: OnceLock<[Vec<u32>; 2]> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        let table = |d: Dtype| -> Vec<u32> {
            (0..=u16::MAX)
                .map(|b| KeyRule::ABS.key(d.decode16(b)))
                .collect()
        };
        [table(Dtype::F16), table(Dtype::BF16)]
    });
    match dtype {
        Dtype::F16 => &tables[0],
        _ => &tables[1],
    }
}

/// What one read of a tensor found.
#[derive(Clone, Debug)]
pub(crate) struct Census {
    /// Counts per key's high 16 bits, or per bit pattern when keys are
    /// coded.
    counts: Vec<u64>,
    /// Elements equal to zero (either sign).
    pub zeros: u64,
}

/// Counts of the low window last computed for a member.
struct Low {
    high: u16,
    bins: Vec<u64>,
}

/// The streaming selector over `members` of `checkpoint`.
pub(crate) struct Selector<'c> {
    checkpoint: &'c Checkpoint,
    members: Vec<Member>,
    scores: Scores,
    census: Vec<Census>,
    low: Vec<Option<Low>>,
    /// Bytes read so far (for progress).
    pub read: u64,
}

impl<'c> Selector<'c> {
    /// Reads every member once: checks that its values are finite, counts
    /// its zeros and its keys' high bits (or bit patterns). `progress` gets
    /// the bytes read after each tensor.
    pub(crate) fn scan(
        checkpoint: &'c Checkpoint,
        members: Vec<Member>,
        scores: Scores,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Self> {
        let mut s = Selector {
            checkpoint,
            census: Vec::with_capacity(members.len()),
            low: members.iter().map(|_| None).collect(),
            members,
            scores,
            read: 0,
        };
        for m in 0..s.members.len() {
            let c = s.read_census(m)?;
            s.census.push(c);
            progress(s.read);
        }
        Ok(s)
    }

    /// What the scan found for member `m`.
    pub(crate) fn census(&self, m: usize) -> &Census {
        &self.census[m]
    }

    /// How member `m`'s elements become keys.
    pub(crate) fn keys(&self, m: usize) -> Keys {
        Keys::new(self.scores, &self.members[m])
    }

    fn read_census(&mut self, m: usize) -> Result<Census> {
        let member = &self.members[m];
        let keys = self.keys(m);
        let w = member.dtype.width();
        let data = self.checkpoint.data(member.index)?;
        self.read += data.len() as u64;
        if keys.coded() {
            return self.coded_census(m, &data);
        }
        let empty = || Tally {
            counts: vec![0u64; BINS],
            zeros: 0,
            bad: 0,
            first_bad: u64::MAX,
        };
        let t = data
            .par_chunks(CHUNK * w)
            .enumerate()
            .fold(empty, |mut t, (c, bytes)| {
                let base = (c * CHUNK) as u64;
                for (j, b) in bytes.chunks_exact(w).enumerate() {
                    let x = member.dtype.decode(b);
                    if !x.is_finite() {
                        t.bad += 1;
                        t.first_bad = t.first_bad.min(base + j as u64);
                        continue;
                    }
                    t.zeros += (x == 0.0) as u64;
                    t.counts[(keys.key(base + j as u64, b) >> 16) as usize] += 1;
                }
                t
            })
            .reduce(empty, Tally::merge);
        if t.bad > 0 {
            let name = &self.checkpoint.tensors()[member.index].name;
            return Err(Error::NonFinite {
                tensor: name.clone(),
                count: t.bad,
                first: t.first_bad,
            });
        }
        Ok(Census {
            counts: t.counts,
            zeros: t.zeros,
        })
    }

    /// The census of a 16-bit member from the counts of its bit patterns
    /// alone: zeros and non-finite values follow from the patterns.
    fn coded_census(&self, m: usize, data: &[u8]) -> Result<Census> {
        let member = &self.members[m];
        let counts = data
            .par_chunks(CHUNK * 2)
            .fold(
                || vec![0u64; BINS],
                |mut counts, bytes| {
                    for b in bytes.chunks_exact(2) {
                        counts[u16::from_le_bytes([b[0], b[1]]) as usize] += 1;
                    }
                    counts
                },
            )
            .reduce(|| vec![0u64; BINS], add_bins);
        let (mut zeros, mut bad) = (0u64, 0u64);
        for (code, &c) in counts.iter().enumerate() {
            let x = member.dtype.decode16(code as u16);
            zeros += c * (x == 0.0) as u64;
            bad += c * (!x.is_finite()) as u64;
        }
        if bad > 0 {
            let first = data
                .chunks_exact(2)
                .position(|b| !member.dtype.decode(b).is_finite())
                .unwrap_or(0) as u64;
            return Err(Error::NonFinite {
                tensor: self.checkpoint.tensors()[member.index].name.clone(),
                count: bad,
                first,
            });
        }
        Ok(Census { counts, zeros })
    }

    /// Adds member `m`'s histogram of the keys in `window` to `into`.
    fn add_window(&mut self, m: usize, window: KeyWindow, into: &mut [u64]) -> Result<()> {
        let counts = &self.census[m].counts;
        if let Some(table) = self.keys(m).table {
            for (code, &c) in counts.iter().enumerate() {
                if c > 0
                    && let Some(b) = window.bin(table[code])
                {
                    into[b] += c;
                }
            }
            return Ok(());
        }
        let bins = match window {
            KeyWindow::High => counts,
            KeyWindow::Low { high } => {
                if self.low[m].as_ref().is_none_or(|l| l.high != high) {
                    let bins = self.read_low(m, high)?;
                    self.low[m] = Some(Low { high, bins });
                }
                &self.low[m].as_ref().expect("just computed").bins
            }
        };
        into.iter_mut().zip(bins).for_each(|(x, y)| *x += y);
        Ok(())
    }

    /// Member `m`'s counts of keys whose high half is `high`, by their low
    /// half: recomputed for random scores, read again for F32 magnitudes.
    fn read_low(&mut self, m: usize, high: u16) -> Result<Vec<u64>> {
        let window = KeyWindow::Low { high };
        let member = self.members[m].clone();
        let keys = self.keys(m);
        if let Scores::Random { .. } = self.scores {
            let chunks = member.numel.div_ceil(CHUNK as u64);
            return Ok((0..chunks)
                .into_par_iter()
                .fold(
                    || vec![0u64; BINS],
                    |mut bins, c| {
                        let end = ((c + 1) * CHUNK as u64).min(member.numel);
                        for i in c * CHUNK as u64..end {
                            if let Some(b) = window.bin(keys.key(i, &[])) {
                                bins[b] += 1;
                            }
                        }
                        bins
                    },
                )
                .reduce(|| vec![0u64; BINS], add_bins));
        }
        let w = member.dtype.width();
        let data = self.checkpoint.data(member.index)?;
        self.read += data.len() as u64;
        Ok(data
            .par_chunks(CHUNK * w)
            .enumerate()
            .fold(
                || vec![0u64; BINS],
                |mut bins, (c, bytes)| {
                    let base = (c * CHUNK) as u64;
                    for (j, b) in bytes.chunks_exact(w).enumerate() {
                        if let Some(bin) = window.bin(keys.key(base + j as u64, b)) {
                            bins[bin] += 1;
                        }
                    }
                    bins
                },
            )
            .reduce(|| vec![0u64; BINS], add_bins))
    }

    /// The cut pruning the `k` lowest keys of the members `pool`, taken as
    /// one sequence in order.
    fn cut(&mut self, pool: &[usize], k: u64) -> Result<Cut> {
        let n = pool.iter().map(|&m| self.members[m].numel).sum();
        let mut radix = RadixSelect::new(n, k)?;
        while let Some(w) = radix.window() {
            let mut h = Histogram::new(0);
            for &m in pool {
                self.add_window(m, w, &mut h.bins)?;
            }
            radix.absorb(&h)?;
        }
        Ok(radix.cut().unwrap_or(Cut::NONE))
    }

    /// Member `m`'s elements below `cut.key`, and at it (only counted when
    /// the cut prunes some tied elements).
    fn below_equal(&mut self, m: usize, cut: Cut) -> Result<(u64, u64)> {
        let high = (cut.key >> 16) as usize;
        let low = (cut.key & 0xFFFF) as usize;
        let mut bins = vec![0u64; BINS];
        self.add_window(m, KeyWindow::High, &mut bins)?;
        let mut below: u64 = bins[..high].iter().sum();
        let mut equal = 0;
        if low > 0 || cut.ties > 0 {
            bins.fill(0);
            self.add_window(m, KeyWindow::Low { high: high as u16 }, &mut bins)?;
            below += bins[..low].iter().sum::<u64>();
            equal = bins[low];
        }
        Ok((below, equal))
    }

    /// The cut of each member when each prunes its own `k[m]` lowest.
    pub(crate) fn local(&mut self, k: &[u64]) -> Result<Vec<TensorCut>> {
        (0..self.members.len())
            .map(|m| Ok(self.cut(&[m], k[m])?.threshold()))
            .collect()
    }

    /// The cut of each member when the `k` lowest of all members are
    /// pruned, no member beyond its cap.
    pub(crate) fn global(&mut self, k: u64) -> Result<Vec<TensorCut>> {
        let mut out: Vec<Option<TensorCut>> = vec![None; self.members.len()];
        let mut pool: Vec<usize> = (0..self.members.len()).collect();
        let mut k_pool = k;
        while !pool.is_empty() {
            let cut = self.cut(&pool, k_pool)?;
            let mut counts = Vec::with_capacity(pool.len());
            for &m in &pool {
                counts.push(self.below_equal(m, cut)?);
            }
            let equal: Vec<u64> = counts.iter().map(|c| c.1).collect();
            let shares = cut.distribute(&equal);
            let over: Vec<usize> = pool
                .iter()
                .zip(&counts)
                .zip(&shares)
                .filter(|((m, c), s)| c.0 + s.ties > self.members[**m].cap)
                .map(|((m, _), _)| *m)
                .collect();
            if over.is_empty() {
                for ((&m, s), &tied) in pool.iter().zip(shares).zip(&equal) {
                    // As a cut of its own: a member losing all its tied
                    // elements needs no ranks.
                    out[m] = Some(
                        Cut {
                            key: s.key,
                            ties: s.ties,
                            tied,
                        }
                        .threshold(),
                    );
                }
                break;
            }
            for &m in &over {
                let cap = self.members[m].cap;
                out[m] = Some(self.cut(&[m], cap)?.threshold());
                k_pool -= cap;
            }
            pool.retain(|m| !over.contains(m));
        }
        Ok(out
            .into_iter()
            .map(|c| c.unwrap_or(TensorCut { key: 0, ties: 0 }))
            .collect())
    }
}

/// `a + b`, bin by bin (histograms of the same window add).
fn add_bins(mut a: Vec<u64>, b: Vec<u64>) -> Vec<u64> {
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}

/// A partial scan of one thread.
struct Tally {
    counts: Vec<u64>,
    zeros: u64,
    bad: u64,
    first_bad: u64,
}

impl Tally {
    fn merge(mut a: Tally, b: Tally) -> Tally {
        a.counts = add_bins(a.counts, b.counts);
        a.zeros += b.zeros;
        a.bad += b.bad;
        a.first_bad = a.first_bad.min(b.first_bad);
        a
    }
}

/// What a cut does to one key.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Fate {
    Prune = 0,
    Keep = 1,
    /// At the threshold: pruned while tied elements remain to prune.
    Tie = 2,
}

impl Fate {
    #[inline(always)]
    fn of(key: u32, cut: TensorCut) -> Fate {
        match key.cmp(&cut.key) {
            std::cmp::Ordering::Less => Fate::Prune,
            std::cmp::Ordering::Equal if cut.ties == TensorCut::ALL => Fate::Prune,
            std::cmp::Ordering::Equal if cut.ties > 0 => Fate::Tie,
            _ => Fate::Keep,
        }
    }
}

/// Packed keep bits (bit `i % 8` of byte `i / 8`, 1 = kept) of a tensor of
/// `numel` elements stored in `data`, under `cut` applied to the tensor as
/// one sequence: keys below the cut are pruned, and of the keys equal to it
/// the first `cut.ties` in index order.
pub(crate) fn keep_bits(data: &[u8], numel: u64, keys: Keys, cut: TensorCut) -> Vec<u8> {
    let w = keys.dtype.width();
    // For 16-bit magnitudes the fate of each bit pattern is known up front.
    let fates: Option<Vec<Fate>> = keys
        .table
        .map(|t| t.iter().map(|&k| Fate::of(k, cut)).collect());
    let fate = |index: u64, b: &[u8]| match &fates {
        Some(f) => f[u16::from_le_bytes([b[0], b[1]]) as usize],
        None => Fate::of(keys.key(index, b), cut),
    };
    let partial = cut.ties > 0 && cut.ties != TensorCut::ALL;
    let mut bits = vec![0u8; numel.div_ceil(8) as usize];
    let chunks = data.par_chunks(CHUNK * w);
    // Tied elements seen before each chunk, when some but not all ties go.
    let before: Vec<u64> = if partial {
        let per: Vec<u64> = chunks
            .clone()
            .enumerate()
            .map(|(c, bytes)| {
                let base = (c * CHUNK) as u64;
                bytes
                    .chunks_exact(w)
                    .enumerate()
                    .filter(|(j, b)| fate(base + *j as u64, b) == Fate::Tie)
                    .count() as u64
            })
            .collect();
        per.iter()
            .scan(0u64, |acc, &x| {
                let b = *acc;
                *acc += x;
                Some(b)
            })
            .collect()
    } else {
        Vec::new()
    };
    bits.par_chunks_mut(CHUNK / 8)
        .zip(chunks)
        .enumerate()
        .for_each(|(c, (out, bytes))| {
            let base = (c * CHUNK) as u64;
            match (&fates, partial) {
                (Some(f), false) => {
                    // The hot path: a table lookup per element, no ranks.
                    for (o, group) in out.iter_mut().zip(bytes.chunks(8 * w)) {
                        let mut byte = 0u8;
                        for (k, b) in group.chunks_exact(2).enumerate() {
                            byte |= (f[u16::from_le_bytes([b[0], b[1]]) as usize] as u8 & 1) << k;
                        }
                        *o = byte;
                    }
                }
                _ => {
                    let mut rank = before.get(c).copied().unwrap_or(0);
                    for (j, b) in bytes.chunks_exact(w).enumerate() {
                        let keep = match fate(base + j as u64, b) {
                            Fate::Keep => true,
                            Fate::Prune => false,
                            Fate::Tie => {
                                rank += 1;
                                rank > cut.ties
                            }
                        };
                        out[j / 8] |= (keep as u8) << (j % 8);
                    }
                }
            }
        });
    bits
}
