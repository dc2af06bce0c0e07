//! Exact selection over a checkpoint, streamed tensor by tensor.
//!
//! The same counting rule and tie-break as [`prunus_core::select()`]: the `k`
//! lowest scores by (score, global index) are pruned, the global index being
//! the order of the tensors' data in the file, then the flat index within a
//! tensor. Core's [`RadixSelect`] finds the cut from histograms; this module
//! computes them by reading one memory-mapped tensor at a time.
//!
//! A global selection keeps merged counts, never one histogram per tensor:
//!
//! - F16 and BF16 magnitudes: the counts of each dtype's 65,536 bit
//!   patterns, summed over the tensors, give every key window without
//!   reading again.
//! - F32 magnitudes (and random scores): the counts of the keys' high 16
//!   bits, and the full-resolution counts of a narrow key range that a
//!   sample of the keys, taken before the scan, says holds the threshold
//!   (core's Gather plan, on a file). When the threshold falls in that
//!   range the scan is the only read; when the sample missed, one more read
//!   of these tensors counts the threshold's bucket.
//!
//! Per tensor only its zero count and what its guard needs are kept: the key
//! of its `(cap + 1)`-th smallest element (or, for large F32 tensors, that
//! key's 16-bit bucket), so the tensors a global cut would push beyond their
//! cap are found without their histograms; those are read again, saturated
//! at their cap, and taken out of the merged counts, as core does. Ties at
//! the global threshold are resolved in the write pass by one running rank
//! in file order. A local selection finishes each tensor when it is read.
//!
//! Tensors of at most [`SMALL`] elements are counted element by element
//! rather than by histogram, so a checkpoint of many small tensors (a
//! mixture of experts) costs time and memory in proportion to its size, not
//! to its tensor count times the histogram size.

use std::sync::OnceLock;

use prunus_core::contract::histogram::{BINS, Histogram, KeyWindow, TensorCut};
use prunus_core::contract::key::KeyRule;
use prunus_core::contract::random::uniform;
use prunus_core::selection::radix::{Cut, RadixSelect, locate, sample_buckets};
use rayon::prelude::*;

use super::checkpoint::Checkpoint;
use super::dtype::Dtype;
use crate::error::{Error, Result};

/// Elements per parallel chunk (a multiple of 64, so chunks own whole mask
/// bytes).
pub(crate) const CHUNK: usize = 1 << 20;

/// Tensors of at most this many elements are counted one key at a time
/// (their keys fit in 256 KiB), larger ones by histogram.
pub(crate) const SMALL: u64 = 1 << 16;

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

/// How the sampled one-read attempt of a global F32 selection is tuned.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    /// Selections over fewer elements skip the sample.
    pub sampled_min: u64,
    /// Consecutive elements per sampled run (one 4 KiB page of F32).
    pub sample_run: u64,
    /// The most runs sampled.
    pub sample_runs: u64,
    /// At most one element in this many is sampled.
    pub sample_every: u64,
    /// The widest key range kept at full resolution, in 16-bit buckets
    /// (512 KiB of counts each).
    pub max_buckets: u32,
    /// Use this bucket range instead of the sample's (tests force a miss).
    pub force_range: Option<(u16, u16)>,
    /// Tensors of at most this many elements are counted key by key.
    pub small: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            sampled_min: 1 << 20,
            sample_run: 1024,
            sample_runs: 1024,
            sample_every: 64,
            max_buckets: 16,
            force_range: None,
            small: SMALL,
        }
    }
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

    /// Which merged pattern counts a coded member adds to.
    fn code_slot(&self) -> usize {
        (self.dtype == Dtype::BF16) as usize
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

/// The bit patterns of a 16-bit dtype in increasing key order, computed
/// once.
fn pattern_order(dtype: Dtype) -> &'static [u16] {
    static ORDERS: OnceLock<[Vec<u16>; 2]> = OnceLock::new();
    let orders = ORDERS.get_or_init(|| {
        let order = |d: Dtype| -> Vec<u16> {
            let table = key_table(d);
            let mut p: Vec<u16> = (0..=u16::MAX).collect();
            p.sort_by_key(|&c| table[c as usize]);
            p
        };
        [order(Dtype::F16), order(Dtype::BF16)]
    });
    match dtype {
        Dtype::F16 => &orders[0],
        _ => &orders[1],
    }
}

/// What one read of a member found.
struct Tally {
    /// Large tensors: counts per bit pattern (coded) or per high key half.
    hist: Vec<u64>,
    /// Small tensors: every bit pattern (coded) or key, in index order.
    items: Vec<u32>,
    /// Large uncoded tensors: the keys inside the sampled range.
    fine: Vec<u32>,
    /// Elements equal to zero (either sign).
    zeros: u64,
}

/// What a member's guard needs of it: where its `(cap + 1)`-th smallest
/// key lies. A global cut above that key prunes more than the cap.
#[derive(Clone, Copy, Debug)]
enum CapKey {
    /// The cap allows every element: never over it.
    Unbounded,
    /// The key, with the member's elements below it and at it.
    Exact { key: u32, below: u64, equal: u64 },
    /// Only the key's high half, with the member's elements in lower
    /// buckets.
    Bucket { high: u16, below: u64 },
}

/// Counts summed over the members of a global selection's pool.
struct Merged {
    /// Uncoded members' keys by high half.
    high: Vec<u64>,
    /// Coded members' bit patterns: F16, then BF16.
    codes: [Vec<u64>; 2],
    /// The sampled bucket range `[lo, hi]`, if any.
    range: Option<(u16, u16)>,
    /// Uncoded members' keys inside the range, by `key - (lo << 16)`.
    fine: Vec<u64>,
    /// Uncoded members' keys in one bucket by low half, from a fallback
    /// read.
    low: Option<(u16, Vec<u64>)>,
}

impl Merged {
    fn new(range: Option<(u16, u16)>) -> Merged {
        let fine = range.map_or(0, |(lo, hi)| (hi - lo + 1) as usize * BINS);
        Merged {
            high: vec![0; BINS],
            codes: [Vec::new(), Vec::new()],
            range,
            fine: vec![0; fine],
            low: None,
        }
    }

    /// The offset in `fine` of `key`, when the range holds it.
    fn fine_at(&self, key: u32) -> Option<usize> {
        let (lo, hi) = self.range?;
        let b = (key >> 16) as u16;
        (lo <= b && b <= hi).then(|| (key - ((lo as u32) << 16)) as usize)
    }

    /// Adds (or, for a member leaving the pool, subtracts) what `t` counted.
    fn apply(&mut self, keys: &Keys, t: &Tally, add: bool) {
        let bump = |x: &mut u64, c: u64| {
            if add { *x += c } else { *x -= c }
        };
        if keys.coded() {
            let codes = &mut self.codes[keys.code_slot()];
            if codes.is_empty() {
                codes.resize(BINS, 0);
            }
            if t.hist.is_empty() {
                t.items
                    .iter()
                    .for_each(|&c| bump(&mut codes[c as usize], 1));
            } else {
                codes.iter_mut().zip(&t.hist).for_each(|(x, &c)| bump(x, c));
            }
            return;
        }
        if t.hist.is_empty() {
            for &key in &t.items {
                bump(&mut self.high[(key >> 16) as usize], 1);
                if let Some(f) = self.fine_at(key) {
                    bump(&mut self.fine[f], 1);
                }
            }
        } else {
            self.high
                .iter_mut()
                .zip(&t.hist)
                .for_each(|(x, &c)| bump(x, c));
            for &key in &t.fine {
                let f = self.fine_at(key).expect("fine keys lie in the range");
                bump(&mut self.fine[f], 1);
            }
        }
    }
}

/// What a global selection decided: a cut of its own for each member a
/// guard saturated, and one shared cut for the rest, applied to them as one
/// sequence in file order.
pub(crate) struct Global {
    /// Per member: its own cut, or `None` for the shared one.
    pub own: Vec<Option<TensorCut>>,
    /// The shared cut.
    pub shared: TensorCut,
}

/// How many times a selection read beyond the scan (tests check the path
/// taken).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reads {
    /// The sample gave a key range.
    pub sampled: bool,
    /// Reads of the pool's uncoded members for the threshold's bucket,
    /// because the sample missed or was not taken.
    pub fallbacks: u32,
    /// Members read again to count their ties at the threshold (a guard's
    /// key equal to it).
    pub tie_counts: u32,
    /// Members read again because a guard saturated them, or to place
    /// their guard's key within a bucket.
    pub rereads: u32,
}

/// The streaming selector over `members` of `checkpoint`.
pub(crate) struct Selector<'c> {
    checkpoint: &'c Checkpoint,
    members: Vec<Member>,
    scores: Scores,
    tuning: Tuning,
    zeros: Vec<u64>,
    /// Bytes read so far (for progress and the report).
    pub read: u64,
    /// The reads beyond the scan.
    pub reads: Reads,
}

impl<'c> Selector<'c> {
    /// A selector over `members`; nothing is read yet.
    pub(crate) fn new(
        checkpoint: &'c Checkpoint,
        members: Vec<Member>,
        scores: Scores,
        tuning: Tuning,
    ) -> Self {
        Selector {
            checkpoint,
            members,
            scores,
            tuning,
            zeros: Vec::new(),
            read: 0,
            reads: Reads::default(),
        }
    }

    /// Member `m`'s zeros before pruning (after a selection).
    pub(crate) fn zeros(&self, m: usize) -> u64 {
        self.zeros[m]
    }

    /// How member `m`'s elements become keys.
    pub(crate) fn keys(&self, m: usize) -> Keys {
        Keys::new(self.scores, &self.members[m])
    }

    fn name(&self, m: usize) -> String {
        self.checkpoint.tensors()[self.members[m].index]
            .name
            .clone()
    }

    /// Reads member `m`: checks its values are finite, counts its zeros and
    /// its keys (keys in the bucket range `range` also at full resolution).
    fn read_tally(&mut self, m: usize, range: Option<(u16, u16)>) -> Result<Tally> {
        let member = self.members[m].clone();
        let keys = self.keys(m);
        let w = member.dtype.width();
        let data = self.checkpoint.data(member.index)?;
        self.read += data.len() as u64;
        let non_finite = |count: u64, first: u64| Error::NonFinite {
            tensor: self.name(m),
            count,
            first,
        };
        if member.numel <= self.tuning.small {
            let mut items = Vec::with_capacity(member.numel as usize);
            let (mut zeros, mut bad, mut first) = (0u64, 0u64, u64::MAX);
            for (j, b) in data.chunks_exact(w).enumerate() {
                let x = member.dtype.decode(b);
                if !x.is_finite() {
                    bad += 1;
                    first = first.min(j as u64);
                    continue;
                }
                zeros += (x == 0.0) as u64;
                items.push(if keys.coded() {
                    u16::from_le_bytes([b[0], b[1]]) as u32
                } else {
                    keys.key(j as u64, b)
                });
            }
            if bad > 0 {
                return Err(non_finite(bad, first));
            }
            return Ok(Tally {
                hist: Vec::new(),
                items,
                fine: Vec::new(),
                zeros,
            });
        }
        if keys.coded() {
            let hist = data
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
            for (code, &c) in hist.iter().enumerate() {
                let x = member.dtype.decode16(code as u16);
                zeros += c * (x == 0.0) as u64;
                bad += c * (!x.is_finite()) as u64;
            }
            if bad > 0 {
                let first = data
                    .chunks_exact(2)
                    .position(|b| !member.dtype.decode(b).is_finite())
                    .unwrap_or(0) as u64;
                return Err(non_finite(bad, first));
            }
            return Ok(Tally {
                hist,
                items: Vec::new(),
                fine: Vec::new(),
                zeros,
            });
        }
        let (lo, width) = range.map_or((0u32, 0u32), |(lo, hi)| (lo as u32, (hi - lo) as u32 + 1));
        let empty = || Scan {
            counts: vec![0u64; BINS],
            fine: Vec::new(),
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
                    let key = keys.key(base + j as u64, b);
                    t.counts[(key >> 16) as usize] += 1;
                    if (key >> 16).wrapping_sub(lo) < width {
                        t.fine.push(key);
                    }
                }
                t
            })
            .reduce(empty, Scan::merge);
        if t.bad > 0 {
            return Err(non_finite(t.bad, t.first_bad));
        }
        Ok(Tally {
            hist: t.counts,
            items: Vec::new(),
            fine: t.fine,
            zeros: t.zeros,
        })
    }

    /// Member `m`'s counts of keys whose high half is `high`, by their low
    /// half: recomputed for random scores, read again for magnitudes.
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

    /// Member `m`'s elements whose key is `key`, read again.
    fn count_equal(&mut self, m: usize, key: u32) -> Result<u64> {
        let high = (key >> 16) as u16;
        Ok(self.read_low(m, high)?[(key & 0xFFFF) as usize])
    }

    /// The low window at `high` of a member's tally, when the tally holds
    /// it without reading: small tensors, coded ones, and large uncoded
    /// ones whose range covers `high` (`range`).
    fn tally_low(
        &self,
        m: usize,
        t: &Tally,
        high: u16,
        range: Option<(u16, u16)>,
    ) -> Option<Vec<u64>> {
        let keys = self.keys(m);
        let window = KeyWindow::Low { high };
        let mut bins = vec![0u64; BINS];
        if !t.hist.is_empty() && !keys.coded() {
            let (lo, hi) = range?;
            if high < lo || high > hi {
                return None;
            }
            t.fine
                .iter()
                .filter_map(|&k| window.bin(k))
                .for_each(|b| bins[b] += 1);
            return Some(bins);
        }
        each_key(&keys, t, |key, c| {
            if let Some(b) = window.bin(key) {
                bins[b] += c;
            }
        });
        Some(bins)
    }

    /// The cut of member `m` alone pruning its `k` lowest, from its tally
    /// (reading it again for a large uncoded tensor's low window, unless
    /// the sampled `range` holds it).
    fn own_cut(
        &mut self,
        m: usize,
        t: &Tally,
        k: u64,
        range: Option<(u16, u16)>,
    ) -> Result<TensorCut> {
        let keys = self.keys(m);
        if k == 0 {
            return Ok(Cut::NONE.threshold());
        }
        if t.hist.is_empty() {
            let (key, below, equal) = nth_key(&keys, &t.items, k);
            return Ok(Cut {
                key,
                ties: k - below,
                tied: equal,
            }
            .threshold());
        }
        let mut radix = RadixSelect::new(self.members[m].numel, k)?;
        while let Some(w) = radix.window() {
            let mut h = Histogram::new(0);
            match w {
                KeyWindow::High if !keys.coded() => h.bins.copy_from_slice(&t.hist),
                KeyWindow::High => each_key(&keys, t, |key, c| h.bins[(key >> 16) as usize] += c),
                KeyWindow::Low { high } => {
                    h.bins = match self.tally_low(m, t, high, range) {
                        Some(b) => b,
                        None => self.read_low(m, high)?,
                    }
                }
            }
            radix.absorb(&h)?;
        }
        Ok(radix.cut().unwrap_or(Cut::NONE).threshold())
    }

    /// Where member `m`'s `(cap + 1)`-th smallest key lies, from its tally.
    fn cap_key(&self, m: usize, t: &Tally, range: Option<(u16, u16)>) -> CapKey {
        let member = &self.members[m];
        if member.cap >= member.numel {
            return CapKey::Unbounded;
        }
        let rank = member.cap + 1;
        let keys = self.keys(m);
        if t.hist.is_empty() {
            let (key, below, equal) = nth_key(&keys, &t.items, rank);
            return CapKey::Exact { key, below, equal };
        }
        if let Some(table) = keys.table {
            let order = pattern_order(member.dtype);
            let mut before = 0u64;
            let mut i = 0;
            while i < order.len() {
                let key = table[order[i] as usize];
                let mut equal = 0;
                while i < order.len() && table[order[i] as usize] == key {
                    equal += t.hist[order[i] as usize];
                    i += 1;
                }
                if before + equal >= rank {
                    return CapKey::Exact {
                        key,
                        below: before,
                        equal,
                    };
                }
                before += equal;
            }
            unreachable!("the rank is at most the element count");
        }
        let (bin, before) = locate(&t.hist, rank);
        let high = bin as u16;
        match self.tally_low(m, t, high, range) {
            Some(low) => {
                let (l, below) = locate(&low, rank - before);
                CapKey::Exact {
                    key: ((high as u32) << 16) | l as u32,
                    below: before + below,
                    equal: low[l],
                }
            }
            None => CapKey::Bucket {
                high,
                below: before,
            },
        }
    }

    /// [`CapKey::Bucket`] made exact by reading member `m` again.
    fn refine(&mut self, m: usize, high: u16, below: u64) -> Result<CapKey> {
        self.reads.rereads += 1;
        let low = self.read_low(m, high)?;
        let (l, before) = locate(&low, self.members[m].cap + 1 - below);
        Ok(CapKey::Exact {
            key: ((high as u32) << 16) | l as u32,
            below: below + before,
            equal: low[l],
        })
    }

    /// The bucket range `[lo, hi]` that a sample of the keys of `pool`
    /// says holds the `k`-th smallest, or `None` (small pools, coded-only
    /// pools, or a sample too spread out).
    fn sample(&mut self, pool: &[usize], k: u64) -> Result<Option<(u16, u16)>> {
        if pool.iter().all(|&m| self.keys(m).coded()) {
            return Ok(None);
        }
        if let Some(r) = self.tuning.force_range {
            return Ok(Some(r));
        }
        let n: u64 = pool.iter().map(|&m| self.members[m].numel).sum();
        let run = self.tuning.sample_run.max(1);
        if k == 0 || n < self.tuning.sampled_min {
            return Ok(None);
        }
        let runs = self
            .tuning
            .sample_runs
            .min(n / (run * self.tuning.sample_every.max(1)))
            .max(1);
        let mut sample = Vec::with_capacity((runs * run) as usize);
        let mut buf = Vec::new();
        let (mut j, mut start) = (0usize, 0u64);
        for r in 0..runs {
            let at = (r as u128 * n as u128 / runs as u128) as u64;
            while at >= start + self.members[pool[j]].numel {
                start += self.members[pool[j]].numel;
                j += 1;
            }
            let m = pool[j];
            let member = self.members[m].clone();
            let keys = self.keys(m);
            let off = at - start;
            let len = run.min(member.numel - off);
            if let Scores::Random { .. } = self.scores {
                sample.extend((off..off + len).map(|i| keys.key(i, &[])));
                continue;
            }
            let w = member.dtype.width();
            buf.resize(len as usize * w, 0);
            self.checkpoint
                .read_span(member.index, off * w as u64, &mut buf)?;
            self.read += buf.len() as u64;
            for (i, b) in (off..).zip(buf.chunks_exact(w)) {
                // Non-finite values are named by the scan.
                if member.dtype.decode(b).is_finite() {
                    sample.push(keys.key(i, b));
                }
            }
        }
        Ok(sample_range(&sample, n, k, self.tuning.max_buckets))
    }

    /// The cut pruning the `k_pool` lowest keys of `pool` (one sequence in
    /// file order), from the merged counts; reads the pool's uncoded
    /// members once more when the threshold's bucket lies outside the
    /// sampled range.
    fn pool_cut(&mut self, pool: &[usize], k_pool: u64, merged: &mut Merged) -> Result<Cut> {
        let n = pool.iter().map(|&m| self.members[m].numel).sum();
        let mut radix = RadixSelect::new(n, k_pool)?;
        let uncoded: Vec<usize> = pool
            .iter()
            .copied()
            .filter(|&m| !self.keys(m).coded())
            .collect();
        let tables = [key_table(Dtype::F16), key_table(Dtype::BF16)];
        while let Some(w) = radix.window() {
            let mut h = Histogram::new(0);
            for (codes, table) in merged.codes.iter().zip(tables) {
                for (code, &c) in codes.iter().enumerate() {
                    if c > 0
                        && let Some(b) = w.bin(table[code])
                    {
                        h.bins[b] += c;
                    }
                }
            }
            match w {
                KeyWindow::High => add_into(&mut h.bins, &merged.high),
                KeyWindow::Low { high } if !uncoded.is_empty() => {
                    if let Some(f) = merged.fine_at((high as u32) << 16) {
                        add_into(&mut h.bins, &merged.fine[f..f + BINS]);
                    } else {
                        if merged.low.as_ref().is_none_or(|(b, _)| *b != high) {
                            self.reads.fallbacks += 1;
                            let mut bins = vec![0u64; BINS];
                            for &m in &uncoded {
                                add_into(&mut bins, &self.read_low(m, high)?);
                            }
                            merged.low = Some((high, bins));
                        }
                        add_into(&mut h.bins, &merged.low.as_ref().expect("just read").1);
                    }
                }
                KeyWindow::Low { .. } => {}
            }
            radix.absorb(&h)?;
        }
        Ok(radix.cut().unwrap_or(Cut::NONE))
    }

    /// Each member's cut when it prunes its own `k[m]` lowest, read one
    /// member at a time. `progress` gets the bytes read after each.
    pub(crate) fn local(
        &mut self,
        k: &[u64],
        progress: &mut dyn FnMut(u64),
    ) -> Result<Vec<TensorCut>> {
        let mut cuts = Vec::with_capacity(self.members.len());
        for (m, &k) in k.iter().enumerate() {
            let t = self.read_tally(m, None)?;
            self.zeros.push(t.zeros);
            cuts.push(self.own_cut(m, &t, k, None)?);
            progress(self.read);
        }
        Ok(cuts)
    }

    /// The cuts when the `k` lowest of all members are pruned, no member
    /// beyond its cap. `progress` gets the bytes read after each member of
    /// the scan.
    pub(crate) fn global(&mut self, k: u64, progress: &mut dyn FnMut(u64)) -> Result<Global> {
        let count = self.members.len();
        let mut pool: Vec<usize> = (0..count).collect();
        let range = self.sample(&pool, k)?;
        self.reads.sampled = range.is_some();
        let mut merged = Merged::new(range);
        let mut caps = Vec::with_capacity(count);
        for m in 0..count {
            let t = self.read_tally(m, range)?;
            self.zeros.push(t.zeros);
            caps.push(self.cap_key(m, &t, range));
            merged.apply(&self.keys(m), &t, true);
            progress(self.read);
        }
        let mut own: Vec<Option<TensorCut>> = vec![None; count];
        let mut k_pool = k;
        while !pool.is_empty() {
            let cut = self.pool_cut(&pool, k_pool, &mut merged)?;
            let shared = cut.threshold();
            let over = self.over_cap(&pool, cut, &mut caps)?;
            if over.is_empty() {
                return Ok(Global { own, shared });
            }
            for &m in &over {
                self.reads.rereads += 1;
                let keys = self.keys(m);
                let t = self.read_tally(m, merged.range)?;
                merged.apply(&keys, &t, false);
                if !keys.coded()
                    && let Some((high, _)) = merged.low
                {
                    let low = match self.tally_low(m, &t, high, merged.range) {
                        Some(b) => b,
                        None => self.read_low(m, high)?,
                    };
                    let bins = &mut merged.low.as_mut().expect("checked").1;
                    bins.iter_mut().zip(&low).for_each(|(x, y)| *x -= y);
                }
                let cap = self.members[m].cap;
                own[m] = Some(self.own_cut(m, &t, cap, merged.range)?);
                k_pool -= cap;
            }
            pool.retain(|m| over.binary_search(m).is_err());
        }
        Ok(Global {
            own,
            shared: Cut::NONE.threshold(),
        })
    }

    /// The members of `pool` (in order) that `cut`, applied to the pool as
    /// one sequence, would prune beyond their cap.
    fn over_cap(&mut self, pool: &[usize], cut: Cut, caps: &mut [CapKey]) -> Result<Vec<usize>> {
        let shared = cut.threshold();
        let mut over = Vec::new();
        let mut tied = Vec::new();
        for &m in pool {
            if let CapKey::Bucket { high, below } = caps[m]
                && high as u32 == cut.key >> 16
            {
                caps[m] = self.refine(m, high, below)?;
            }
            match caps[m] {
                CapKey::Unbounded => {}
                CapKey::Bucket { high, .. } => {
                    if (high as u32) < cut.key >> 16 {
                        over.push(m);
                    }
                }
                CapKey::Exact { key, .. } if key < cut.key => over.push(m),
                CapKey::Exact { key, .. } if key > cut.key => {}
                // At the threshold: over when its share of the ties is.
                CapKey::Exact { .. } => match shared.ties {
                    TensorCut::ALL => over.push(m),
                    0 => {}
                    _ => tied.push(m),
                },
            }
        }
        if let Some(&last) = tied.last() {
            // The ties before each such member decide its share: count them.
            let mut before = 0u64;
            for &m in pool.iter().take_while(|&&m| m <= last) {
                let equal = match caps[m] {
                    CapKey::Exact { key, equal, .. } if key == cut.key => equal,
                    _ => {
                        self.reads.tie_counts += 1;
                        self.count_equal(m, cut.key)?
                    }
                };
                if tied.binary_search(&m).is_ok()
                    && let CapKey::Exact { below, .. } = caps[m]
                {
                    let share = equal.min(shared.ties.saturating_sub(before));
                    if below + share > self.members[m].cap {
                        over.push(m);
                    }
                }
                before += equal;
            }
            over.sort_unstable();
        }
        Ok(over)
    }
}

/// Calls `f(key, count)` for the keys a small or coded tally holds.
fn each_key(keys: &Keys, t: &Tally, mut f: impl FnMut(u32, u64)) {
    match (keys.table, t.hist.is_empty()) {
        (Some(table), true) => t.items.iter().for_each(|&c| f(table[c as usize], 1)),
        (None, true) => t.items.iter().for_each(|&k| f(k, 1)),
        (Some(table), false) => t
            .hist
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .for_each(|(code, &c)| f(table[code], c)),
        (None, false) => unreachable!("large uncoded tallies hold no keys"),
    }
}

/// The `rank`-th smallest (1-based) of a small tally's keys (`items` are
/// bit patterns when `keys` is coded), with the count below it and at it.
fn nth_key(keys: &Keys, items: &[u32], rank: u64) -> (u32, u64, u64) {
    let mut all: Vec<u32> = match keys.table {
        Some(table) => items.iter().map(|&c| table[c as usize]).collect(),
        None => items.to_vec(),
    };
    let (_, &mut key, _) = all.select_nth_unstable(rank as usize - 1);
    let below = all.iter().filter(|&&x| x < key).count() as u64;
    let equal = all.iter().filter(|&&x| x == key).count() as u64;
    (key, below, equal)
}

/// The bucket range `[lo, hi]` that a sample of keys says holds the `k`-th
/// smallest of `n` (core's [`sample_buckets`]: the margin of its Gather
/// plan, in whole buckets, which this stream's histograms count by); `None`
/// also when the range spans `max_buckets` buckets or more.
fn sample_range(sample: &[u32], n: u64, k: u64, max_buckets: u32) -> Option<(u16, u16)> {
    sample_buckets(sample, n, k).filter(|&(lo, hi)| ((hi - lo) as u32) < max_buckets)
}

/// `a + b`, bin by bin (histograms of the same window add).
fn add_bins(mut a: Vec<u64>, b: Vec<u64>) -> Vec<u64> {
    add_into(&mut a, &b);
    a
}

/// `into += b`, bin by bin.
fn add_into(into: &mut [u64], b: &[u64]) {
    into.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

/// A partial scan of one thread.
struct Scan {
    counts: Vec<u64>,
    fine: Vec<u32>,
    zeros: u64,
    bad: u64,
    first_bad: u64,
}

impl Scan {
    fn merge(mut a: Scan, mut b: Scan) -> Scan {
        a.counts = add_bins(a.counts, b.counts);
        a.fine.append(&mut b.fine);
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

/// The fates of a 16-bit dtype's bit patterns under a cut, kept for the
/// next tensors cut the same way (thousands of small tensors share one
/// global cut, and 65,536 fates per tensor would cost more than the tensor).
#[derive(Default)]
pub(crate) struct FateCache {
    entries: Vec<((Dtype, u32, u64), Vec<Fate>)>,
}

impl FateCache {
    fn get(&mut self, table: &[u32], dtype: Dtype, cut: TensorCut) -> &[Fate] {
        // Fates depend on the tie count only through its class.
        let class = match cut.ties {
            0 | TensorCut::ALL => cut.ties,
            _ => 1,
        };
        let id = (dtype, cut.key, class);
        let at = match self.entries.iter().position(|(k, _)| *k == id) {
            Some(at) => at,
            None => {
                if self.entries.len() == 8 {
                    self.entries.remove(0);
                }
                let fates = table.iter().map(|&k| Fate::of(k, cut)).collect();
                self.entries.push((id, fates));
                self.entries.len() - 1
            }
        };
        &self.entries[at].1
    }
}

/// Packed keep bits (bit `i % 8` of byte `i / 8`, 1 = kept) of a tensor of
/// `numel` elements stored in `data`, under `cut` applied to the tensor as
/// one sequence: keys below the cut are pruned, and of the keys equal to it
/// the first `cut.ties` in index order. Also returns the tensor's elements
/// at the cut's key when some but not all ties are asked for (0 otherwise),
/// so a caller spreading one cut over several tensors keeps a running rank.
///
/// Ties are first pruned optimistically while counted; only a tensor that
/// holds more ties than `cut.ties` (the last one a shared cut reaches) takes
/// a second pass over its data in memory to keep the later ones.
pub(crate) fn keep_bits(
    data: &[u8],
    numel: u64,
    keys: Keys,
    cut: TensorCut,
    cache: &mut FateCache,
) -> (Vec<u8>, u64) {
    let w = keys.dtype.width();
    // For 16-bit magnitudes the fate of each bit pattern is known up front.
    let fates: Option<&[Fate]> = keys.table.map(|t| cache.get(t, keys.dtype, cut));
    let fate = |index: u64, b: &[u8]| match fates {
        Some(f) => f[u16::from_le_bytes([b[0], b[1]]) as usize],
        None => Fate::of(keys.key(index, b), cut),
    };
    let partial = cut.ties > 0 && cut.ties != TensorCut::ALL;
    let mut bits = vec![0u8; numel.div_ceil(8) as usize];
    // Tied elements per chunk; a tie's bit stays clear (pruned) for now.
    let per: Vec<u64> = bits
        .par_chunks_mut(CHUNK / 8)
        .zip(data.par_chunks(CHUNK * w))
        .enumerate()
        .map(|(c, (out, bytes))| {
            let base = (c * CHUNK) as u64;
            let mut ties = 0u64;
            match fates {
                Some(f) => {
                    // The hot path: a table lookup per element.
                    for (o, group) in out.iter_mut().zip(bytes.chunks(8 * w)) {
                        let mut byte = 0u8;
                        for (k, b) in group.chunks_exact(2).enumerate() {
                            let fate = f[u16::from_le_bytes([b[0], b[1]]) as usize] as u8;
                            byte |= (fate & 1) << k;
                            ties += (fate >> 1) as u64;
                        }
                        *o = byte;
                    }
                }
                None => {
                    for (j, b) in bytes.chunks_exact(w).enumerate() {
                        let fate = fate(base + j as u64, b) as u8;
                        out[j / 8] |= (fate & 1) << (j % 8);
                        ties += (fate >> 1) as u64;
                    }
                }
            }
            ties
        })
        .collect();
    let tied: u64 = per.iter().sum();
    if !partial {
        return (bits, 0);
    }
    if tied <= cut.ties {
        return (bits, tied);
    }
    // Some ties are kept: each chunk's first rank is the ties before it.
    let before: Vec<u64> = per
        .iter()
        .scan(0u64, |acc, &x| {
            let b = *acc;
            *acc += x;
            Some(b)
        })
        .collect();
    bits.par_chunks_mut(CHUNK / 8)
        .zip(data.par_chunks(CHUNK * w))
        .enumerate()
        .filter(|(c, _)| per[*c] > 0 && before[*c] + per[*c] > cut.ties)
        .for_each(|(c, (out, bytes))| {
            let base = (c * CHUNK) as u64;
            let mut rank = before[c];
            for (j, b) in bytes.chunks_exact(w).enumerate() {
                if fate(base + j as u64, b) == Fate::Tie {
                    rank += 1;
                    if rank > cut.ties {
                        out[j / 8] |= 1 << (j % 8);
                    }
                }
            }
        });
    (bits, tied)
}
