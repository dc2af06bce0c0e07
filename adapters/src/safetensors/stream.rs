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
//! to its tensor count times the histogram size. Consecutive small tensors
//! are mapped together, up to [`RUN_BYTES`] at a time ([`runs`]), and
//! counted in parallel, one share of the merged counts per worker.
//!
//! F32 magnitudes are counted and decided by the CPU backend's kernels
//! ([`CpuBackend::histogram_with_range`], `threshold_masks`); 16-bit
//! magnitudes by their bit patterns, whose order is their keys' order.

use std::ops::Range;
use std::sync::OnceLock;

use prunus_core::contract::histogram::{BINS, Histogram, KeyWindow, TensorCut};
use prunus_core::contract::key::KeyRule;
use prunus_core::contract::random::uniform;
use prunus_core::selection::radix::{Cut, RadixSelect, locate, sample_buckets};
use prunus_core::{Backend, ScoreView, Shape};
use prunus_cpu::CpuBackend;
use rayon::prelude::*;

use super::checkpoint::{Checkpoint, TensorData};
use super::dtype::Dtype;
use crate::error::{Error, Result};

/// Elements per parallel chunk (a multiple of 64, so chunks own whole mask
/// bytes).
pub(crate) const CHUNK: usize = 1 << 20;

/// Tensors of at most this many elements are counted one key at a time
/// (their keys fit in 256 KiB), larger ones by histogram.
pub(crate) const SMALL: u64 = 1 << 16;

/// Tensors of at most this many bytes are written in runs ([`runs`]).
pub(crate) const SMALL_BYTES: u64 = SMALL * 4;

/// The most bytes one read of a run of small tensors spans.
pub(crate) const RUN_BYTES: u64 = 32 << 20;

/// The widest stretch of other bytes a run reads through between two of
/// its tensors.
const RUN_GAP: u64 = 1 << 20;

/// Cuts spans `(start, end, small)` of the data section, in file order,
/// into runs read with one call each: consecutive small spans while the
/// run spans at most [`RUN_BYTES`] and no gap between two exceeds
/// [`RUN_GAP`]; a span that is not small is a run of its own.
pub(crate) fn runs(spans: &[(u64, u64, bool)]) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    for (i, &(start, end, small)) in spans.iter().enumerate() {
        if let Some(run) = out.last_mut()
            && small
            && spans[run.start].2
            && start.saturating_sub(spans[run.end - 1].1) <= RUN_GAP
            && end.saturating_sub(spans[run.start].0) <= RUN_BYTES
        {
            run.end = i + 1;
            continue;
        }
        out.push(i..i + 1);
    }
    out
}

/// Zero and non-finite elements of a float tensor's bytes, and the index of
/// the first non-finite one (`u64::MAX` when none): whole words compared
/// against the dtype's exponent, in loops the compiler vectorises.
pub(crate) fn classify(dtype: Dtype, data: &[u8]) -> (u64, u64, u64) {
    fn count<const W: usize>(data: &[u8], inf: u32) -> (u64, u64) {
        let (mut zeros, mut bad) = (0u64, 0u64);
        for b in data.chunks_exact(W) {
            let bits = if W == 2 {
                u16::from_le_bytes([b[0], b[1]]) as u32 & 0x7FFF
            } else {
                u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7FFF_FFFF
            };
            zeros += (bits == 0) as u64;
            bad += (bits >= inf) as u64;
        }
        (zeros, bad)
    }
    let (zeros, bad) = match dtype {
        Dtype::F16 => count::<2>(data, 0x7C00),
        Dtype::BF16 => count::<2>(data, 0x7F80),
        _ => count::<4>(data, 0x7F80_0000),
    };
    let first = if bad == 0 {
        u64::MAX
    } else {
        let w = dtype.width();
        data.chunks_exact(w)
            .position(|b| !dtype.decode(b).is_finite())
            .map_or(u64::MAX, |p| p as u64)
    };
    (zeros, bad, first)
}

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
pub(crate) struct Tally {
    /// Large tensors: counts per bit pattern (coded) or per high key half.
    hist: Vec<u64>,
    /// Small tensors: every bit pattern (coded) or key, in index order.
    pub(crate) items: Vec<u32>,
    /// Large uncoded tensors: the counts of the keys inside the sampled
    /// range, by `key - (lo << 16)` (empty without a range).
    fine: Vec<u64>,
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

    /// The pattern counts of coded dtype `slot`, allocated on first use.
    fn codes_mut(&mut self, slot: usize) -> &mut [u64] {
        let codes = &mut self.codes[slot];
        if codes.is_empty() {
            codes.resize(BINS, 0);
        }
        codes
    }

    /// Adds the counts `other` holds (kept by another worker over the same
    /// range).
    fn absorb(&mut self, other: &Merged) {
        add_into(&mut self.high, &other.high);
        add_into(&mut self.fine, &other.fine);
        for slot in 0..2 {
            if !other.codes[slot].is_empty() {
                add_into(self.codes_mut(slot), &other.codes[slot]);
            }
        }
    }

    /// Counts one uncoded key.
    #[inline(always)]
    fn count_key(&mut self, key: u32) {
        self.high[(key >> 16) as usize] += 1;
        if let Some(f) = self.fine_at(key) {
            self.fine[f] += 1;
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
            let codes = self.codes_mut(keys.code_slot());
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
            // Read over the same range as these counts.
            self.fine
                .iter_mut()
                .zip(&t.fine)
                .for_each(|(x, &c)| bump(x, c));
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
    /// The CPU backend whose kernels count F32 magnitudes.
    cpu: CpuBackend<'static>,
    members: Vec<Member>,
    scores: Scores,
    tuning: Tuning,
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
            cpu: CpuBackend::default(),
            members,
            scores,
            tuning,
            read: 0,
            reads: Reads::default(),
        }
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

    /// Reads member `m`: checks its values are finite and counts its keys
    /// (keys in the bucket range `range` also at full resolution). F32
    /// magnitudes are counted by the CPU backend's kernels, 16-bit
    /// magnitudes by bit pattern.
    fn read_tally(&mut self, m: usize, range: Option<(u16, u16)>) -> Result<Tally> {
        let member = self.members[m].clone();
        let keys = self.keys(m);
        let data = self.checkpoint.data(member.index)?;
        self.read += data.len() as u64;
        let non_finite = |data: &[u8]| {
            let (_, bad, first) = classify(member.dtype, data);
            self.non_finite(m, (bad, first))
        };
        if member.numel <= self.tuning.small {
            return small_tally(&member, &keys, &data).map_err(|e| self.non_finite(m, e));
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
            let finite = |code: usize| member.dtype.decode16(code as u16).is_finite();
            if (0..BINS).any(|code| hist[code] > 0 && !finite(code)) {
                return Err(non_finite(&data));
            }
            return Ok(Tally {
                hist,
                items: Vec::new(),
                fine: Vec::new(),
            });
        }
        if self.scores == Scores::Magnitude {
            let (hist, fine, nan) = f32_histogram(&self.cpu, &data, range)?;
            // NaNs are counted apart; infinities have a bucket of their own.
            if nan + hist[INF_BUCKET] > 0 {
                return Err(non_finite(&data));
            }
            return Ok(Tally {
                hist,
                items: Vec::new(),
                fine,
            });
        }
        // Random scores: the values are only checked; keys come from the
        // seed and the index.
        if classify(member.dtype, &data).1 > 0 {
            return Err(non_finite(&data));
        }
        let (lo, width) = range.map_or((0u32, 0u32), |(lo, hi)| (lo as u32, (hi - lo) as u32 + 1));
        let chunks = member.numel.div_ceil(CHUNK as u64);
        let empty = || (vec![0u64; BINS], Vec::new());
        let (hist, inside) = (0..chunks)
            .into_par_iter()
            .fold(empty, |(mut counts, mut inside), c| {
                let end = ((c + 1) * CHUNK as u64).min(member.numel);
                for i in c * CHUNK as u64..end {
                    let key = keys.key(i, &[]);
                    counts[(key >> 16) as usize] += 1;
                    if (key >> 16).wrapping_sub(lo) < width {
                        inside.push(key);
                    }
                }
                (counts, inside)
            })
            .reduce(empty, |(a, mut ia), (b, mut ib)| {
                ia.append(&mut ib);
                (add_bins(a, b), ia)
            });
        let mut fine = vec![0u64; (width as usize) << 16];
        for key in inside {
            fine[(key - (lo << 16)) as usize] += 1;
        }
        Ok(Tally {
            hist,
            items: Vec::new(),
            fine,
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
        if member.dtype == Dtype::F32 {
            let mut bins = vec![0u64; BINS];
            f32_pieces(&data, |xs| {
                let t = self.cpu.borrow(xs, &Shape::vector(xs.len()))?;
                let h = self
                    .cpu
                    .histogram(&[ScoreView::new(&t)], KeyRule::ABS, window)?;
                add_into(&mut bins, &h.bins);
                Ok(())
            })?;
            return Ok(bins);
        }
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
            if high < lo || high > hi || t.fine.is_empty() {
                return None;
            }
            let at = ((high - lo) as usize) << 16;
            return Some(t.fine[at..at + BINS].to_vec());
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

    /// The members cut into runs read with one call each ([`runs`]): small
    /// members together, a large one alone.
    fn runs(&self) -> Vec<Range<usize>> {
        let tensors = self.checkpoint.tensors();
        let spans: Vec<(u64, u64, bool)> = self
            .members
            .iter()
            .map(|m| {
                let t = &tensors[m.index];
                (t.start, t.end, m.numel <= self.tuning.small)
            })
            .collect();
        runs(&spans)
    }

    /// Whether `run` holds small members, read together.
    fn is_small_run(&self, run: &Range<usize>) -> bool {
        self.members[run.start].numel <= self.tuning.small
    }

    /// Maps the members of `run` (one mapping for all).
    fn map_run(&mut self, run: &Range<usize>) -> Result<TensorData<'c>> {
        let (first, last) = (
            self.members[run.start].index,
            self.members[run.end - 1].index,
        );
        let data = self.checkpoint.span(first, last)?;
        self.read += data.len() as u64;
        Ok(data)
    }

    /// The bytes of each member of `run` within its mapping `data`.
    fn split_run<'d>(&self, run: &Range<usize>, data: &'d [u8]) -> Vec<&'d [u8]> {
        let tensors = self.checkpoint.tensors();
        let base = tensors[self.members[run.start].index].start;
        self.members[run.clone()]
            .iter()
            .map(|m| {
                let t = &tensors[m.index];
                &data[(t.start - base) as usize..(t.end - base) as usize]
            })
            .collect()
    }

    /// The error of member `m` holding `bad` non-finite values, the first
    /// at `first`.
    fn non_finite(&self, m: usize, (bad, first): (u64, u64)) -> Error {
        Error::NonFinite {
            tensor: self.name(m),
            count: bad,
            first,
        }
    }

    /// Each member's cut when it prunes its own `k[m]` lowest (`None` for
    /// the `deferred` members, cut from their data when they are written):
    /// small members a run at a time, in parallel, large ones one at a time.
    /// `progress` gets the bytes read after each run.
    pub(crate) fn local(
        &mut self,
        k: &[u64],
        deferred: &[bool],
        progress: &mut dyn FnMut(u64),
    ) -> Result<Vec<Option<TensorCut>>> {
        let mut cuts = vec![None; self.members.len()];
        for run in self.runs() {
            if run.clone().all(|m| deferred[m]) {
                continue;
            }
            if !self.is_small_run(&run) {
                let m = run.start;
                let t = self.read_tally(m, None)?;
                cuts[m] = Some(self.own_cut(m, &t, k[m], None)?);
                progress(self.read);
                continue;
            }
            let mapped = self.map_run(&run)?;
            let parts = self.split_run(&run, &mapped);
            let done: Vec<_> = (run.clone(), parts)
                .into_par_iter()
                .map(|(m, data)| {
                    if deferred[m] {
                        return Ok(None);
                    }
                    let member = &self.members[m];
                    let keys = Keys::new(self.scores, member);
                    small_tally(member, &keys, data).map(|t| Some(small_cut(&keys, &t.items, k[m])))
                })
                .collect();
            for (m, d) in run.zip(done) {
                cuts[m] = d.map_err(|e| self.non_finite(m, e))?;
            }
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
        let mut caps = vec![CapKey::Unbounded; count];
        // One share of the small members' counts per worker, merged at the
        // end: a run's members are counted in parallel.
        let mut shares: Vec<Merged> = Vec::new();
        for run in self.runs() {
            if !self.is_small_run(&run) {
                let m = run.start;
                let t = self.read_tally(m, range)?;
                caps[m] = self.cap_key(m, &t, range);
                merged.apply(&self.keys(m), &t, true);
                progress(self.read);
                continue;
            }
            if shares.is_empty() {
                shares = (0..rayon::current_num_threads())
                    .map(|_| Merged::new(range))
                    .collect();
            }
            let mapped = self.map_run(&run)?;
            let parts = self.split_run(&run, &mapped);
            let members: Vec<usize> = run.collect();
            let per = members.len().div_ceil(shares.len());
            let done: Vec<Vec<_>> = shares
                .par_iter_mut()
                .zip(members.par_chunks(per).zip(parts.par_chunks(per)))
                .map(|(share, (ms, datas))| {
                    ms.iter()
                        .zip(datas)
                        .map(|(&m, data)| {
                            let member = &self.members[m];
                            small_scan(member, &Keys::new(self.scores, member), data, share)
                        })
                        .collect()
                })
                .collect();
            for (&m, d) in members.iter().zip(done.into_iter().flatten()) {
                caps[m] = d.map_err(|e| self.non_finite(m, e))?;
            }
            progress(self.read);
        }
        for share in &shares {
            merged.absorb(share);
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

/// The bucket of `|x| = inf` under [`KeyRule::ABS`] (no finite value
/// shares it).
const INF_BUCKET: usize = 0xFF80;

/// Elements of an F32 tensor handed to the CPU backend per call (a
/// multiple of 64, so the pieces' masks join into whole bytes).
const PIECE: usize = 1 << 24;

/// Calls `f` on an F32 tensor's bytes as `f32` pieces of at most [`PIECE`]
/// elements, in order: borrowed where the bytes are aligned (mapped files
/// are, when their header keeps the usual 8-byte padding), copied otherwise.
pub(crate) fn f32_pieces(data: &[u8], mut f: impl FnMut(&[f32]) -> Result<()>) -> Result<()> {
    let mut copy: Vec<f32> = Vec::new();
    for bytes in data.chunks(PIECE * 4) {
        #[cfg(target_endian = "little")]
        if let Ok(xs) = bytemuck::try_cast_slice::<u8, f32>(bytes) {
            f(xs)?;
            continue;
        }
        copy.clear();
        copy.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        f(&copy)?;
    }
    Ok(())
}

/// An F32 tensor's magnitude keys by high half, the counts of the keys in
/// the bucket range `range` at full resolution (empty without a range),
/// and its NaNs: one pass of the CPU backend's kernels.
fn f32_histogram(
    cpu: &CpuBackend<'_>,
    data: &[u8],
    range: Option<(u16, u16)>,
) -> Result<(Vec<u64>, Vec<u64>, u64)> {
    let mut hist = vec![0u64; BINS];
    let mut fine = Vec::new();
    let mut nan = 0;
    f32_pieces(data, |xs| {
        let t = cpu.borrow(xs, &Shape::vector(xs.len()))?;
        let v = [ScoreView::new(&t)];
        let h = match range {
            Some(r) => {
                let (h, f) = cpu.histogram_with_range(&v, KeyRule::ABS, r)?;
                if fine.is_empty() {
                    fine = f;
                } else {
                    add_into(&mut fine, &f);
                }
                h
            }
            None => cpu.histogram(&v, KeyRule::ABS, KeyWindow::High)?,
        };
        add_into(&mut hist, &h.bins);
        nan += h.nan[0];
        Ok(())
    })?;
    Ok((hist, fine, nan))
}

/// A small member's tally: its keys (bit patterns when coded) in index
/// order; `Err((bad, first))` when it holds non-finite values.
pub(crate) fn small_tally(
    member: &Member,
    keys: &Keys,
    data: &[u8],
) -> std::result::Result<Tally, (u64, u64)> {
    let (_, bad, first) = classify(member.dtype, data);
    if bad > 0 {
        return Err((bad, first));
    }
    let items = if keys.coded() {
        data.chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as u32)
            .collect()
    } else {
        let w = member.dtype.width();
        (0..)
            .zip(data.chunks_exact(w))
            .map(|(j, b)| keys.key(j, b))
            .collect()
    };
    Ok(Tally {
        hist: Vec::new(),
        items,
        fine: Vec::new(),
    })
}

/// The cut of a small member pruning its own `k` lowest, from its keys
/// (`items`, bit patterns when `keys` is coded).
pub(crate) fn small_cut(keys: &Keys, items: &[u32], k: u64) -> TensorCut {
    if k == 0 {
        return Cut::NONE.threshold();
    }
    let (key, below, equal) = nth_key(keys, items, k);
    Cut {
        key,
        ties: k - below,
        tied: equal,
    }
    .threshold()
}

/// A small member of a global selection read in a run: its keys counted
/// into `into` (this worker's share of the merged counts), its guard's key
/// returned; `Err((bad, first))` when it holds non-finite
/// values. The guard's key needs the keys kept only when the cap is below
/// `numel - 1`; at `numel - 1` (the never-empty guard) it is the largest.
fn small_scan(
    member: &Member,
    keys: &Keys,
    data: &[u8],
    into: &mut Merged,
) -> std::result::Result<CapKey, (u64, u64)> {
    let n = member.numel;
    let w = member.dtype.width();
    let key_at = |j: u64, b: &[u8]| keys.key(j, b);
    if let Some(table) = keys.table {
        // One pass: the patterns counted, the largest magnitude found (it
        // says whether any value is not finite, and is the guard's key).
        let codes = into.codes_mut(keys.code_slot());
        let (mut top, mut equal) = (0u16, 0u64);
        for b in data.chunks_exact(2) {
            let c = u16::from_le_bytes([b[0], b[1]]);
            codes[c as usize] += 1;
            let a = c & 0x7FFF;
            if a > top {
                (top, equal) = (a, 0);
            }
            equal += (a == top) as u64;
        }
        let inf: u16 = if member.dtype == Dtype::F16 {
            0x7C00
        } else {
            0x7F80
        };
        if top >= inf {
            // The selection stops here with an error; the counts are moot.
            let (_, bad, first) = classify(member.dtype, data);
            return Err((bad, first));
        }
        if member.cap + 1 == n {
            return Ok(CapKey::Exact {
                key: table[top as usize],
                below: n - equal,
                equal,
            });
        }
    } else {
        let (_, bad, first) = classify(member.dtype, data);
        if bad > 0 {
            return Err((bad, first));
        }
        for (j, b) in (0..).zip(data.chunks_exact(w)) {
            into.count_key(key_at(j, b));
        }
    }
    let cap = if member.cap >= n {
        CapKey::Unbounded
    } else if member.cap + 1 == n {
        let (mut key, mut equal) = (0u32, 0u64);
        for (j, b) in (0..).zip(data.chunks_exact(w)) {
            let k = key_at(j, b);
            if k > key {
                (key, equal) = (k, 0);
            }
            equal += (k == key) as u64;
        }
        CapKey::Exact {
            key,
            below: n - equal,
            equal,
        }
    } else {
        let all: Vec<u32> = (0..)
            .zip(data.chunks_exact(w))
            .map(|(j, b)| key_at(j, b))
            .collect();
        let (key, below, equal) = nth_key(
            &Keys {
                table: None,
                ..*keys
            },
            &all,
            member.cap + 1,
        );
        CapKey::Exact { key, below, equal }
    };
    Ok(cap)
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

/// A cut on 16-bit magnitudes as a bound on the bit pattern with its sign
/// cleared: magnitude keys grow with that pattern over the finite values
/// (the only ones a selection lets through), so comparing the pattern
/// decides an element without looking its key up.
#[derive(Clone, Copy, Debug)]
struct PatternCut {
    /// The smallest finite pattern whose key is not below the cut's.
    at: u16,
    /// Whether pattern `at` has the cut's key (its elements are ties).
    equal: bool,
}

impl PatternCut {
    /// The bound of `cut` in `keys`'s dtype, when its keys are coded.
    fn of(keys: &Keys, cut: TensorCut) -> Option<PatternCut> {
        let table = keys.table?;
        // Patterns at and above this one are infinities and NaNs.
        let inf: u16 = if keys.dtype == Dtype::F16 {
            0x7C00
        } else {
            0x7F80
        };
        let finite = &table[..inf as usize];
        let at = finite.partition_point(|&k| k < cut.key);
        Some(PatternCut {
            at: at as u16,
            equal: finite.get(at) == Some(&cut.key),
        })
    }

    /// Whether the element stored as `b` is at the cut's key.
    #[inline(always)]
    fn ties(self, b: &[u8]) -> bool {
        self.equal && u16::from_le_bytes([b[0], b[1]]) & 0x7FFF == self.at
    }
}

/// The keep bits of eight 16-bit elements (`bytes`) whose sign-cleared
/// patterns are kept from `keep_from` on, and how many of them equal `at`:
/// two 64-bit words of four lanes each, compared without a branch (a lane
/// of at most `0x7FFF` plus `0x8000 - keep_from` reaches its top bit
/// exactly when it is at least `keep_from`).
#[inline(always)]
fn keep_byte16(bytes: &[u8; 16], keep_from: u32, at: u16) -> (u8, u64) {
    const ABS: u64 = 0x7FFF_7FFF_7FFF_7FFF;
    const TOP: u64 = 0x8000_8000_8000_8000;
    const ONES: u64 = 0x0001_0001_0001_0001;
    let add = (0x8000 - keep_from as u64) * ONES;
    let at = at as u64 * ONES;
    let (mut byte, mut equal) = (0u8, 0u64);
    for (i, half) in bytes.chunks_exact(8).enumerate() {
        let x = u64::from_le_bytes(half.try_into().expect("8 bytes")) & ABS;
        let g = ((x + add) & TOP) >> 15;
        let nibble = (g | g >> 15 | g >> 30 | g >> 45) & 0xF;
        byte |= (nibble as u8) << (4 * i);
        // Lanes equal to `at` are the zero lanes of the difference.
        equal += 4 - ((((x ^ at) & ABS) + ABS) & TOP).count_ones() as u64;
    }
    (byte, equal)
}

/// The elements of a tensor stored in `data` whose key equals `cut.key`.
pub(crate) fn tie_count(data: &[u8], keys: Keys, cut: TensorCut) -> u64 {
    match PatternCut::of(&keys, cut) {
        Some(p) if !p.equal => 0,
        Some(p) => data
            .chunks_exact(2)
            .map(|b| (u16::from_le_bytes([b[0], b[1]]) & 0x7FFF == p.at) as u64)
            .sum(),
        None => (0..)
            .zip(data.chunks_exact(keys.dtype.width()))
            .map(|(j, b)| (keys.key(j, b) == cut.key) as u64)
            .sum(),
    }
}

/// [`keep_bits`] of an F32 tensor under magnitude keys, by the CPU
/// backend's threshold kernels piece by piece, the tie budget carried from
/// piece to piece. Returns the bits and the elements at the cut's key it
/// pruned (which a caller spreading one cut over several tensors adds to
/// its running rank, as [`keep_bits`]'s tied count).
pub(crate) fn f32_keep_bits(
    cpu: &CpuBackend<'_>,
    data: &[u8],
    numel: u64,
    cut: TensorCut,
) -> Result<(Vec<u8>, u64)> {
    let mut bits = Vec::with_capacity(numel.div_ceil(8) as usize);
    let mut pruned = 0u64;
    f32_pieces(data, |xs| {
        let t = cpu.borrow(xs, &Shape::vector(xs.len()))?;
        let ties = match cut.ties {
            TensorCut::ALL => TensorCut::ALL,
            t => t - pruned,
        };
        let c = TensorCut { key: cut.key, ties };
        let mut m = cpu.threshold_masks(&[ScoreView::new(&t)], KeyRule::ABS, c)?;
        pruned += m.ties[0];
        let mask = m.masks.remove(0);
        let bytes = xs.len().div_ceil(8);
        // Mask words hold their elements from the lowest bit: on a
        // little-endian host their bytes are the keep bits in order.
        #[cfg(target_endian = "little")]
        bits.extend_from_slice(&bytemuck::cast_slice::<u64, u8>(mask.words())[..bytes]);
        #[cfg(not(target_endian = "little"))]
        bits.extend(
            mask.words()
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .take(bytes),
        );
        Ok(())
    })?;
    Ok((bits, pruned))
}

/// Packed keep bits (bit `i % 8` of byte `i / 8`, 1 = kept) of a tensor of
/// `numel` elements stored in `data`, under `cut` applied to the tensor as
/// one sequence: keys below the cut are pruned, and of the keys equal to it
/// the first `cut.ties` in index order. Also returns the tensor's elements
/// at the cut's key when some but not all ties are asked for (0 otherwise),
/// so a caller spreading one cut over several tensors keeps a running rank.
///
/// 16-bit magnitudes are decided by comparing bit patterns
/// ([`PatternCut`]), eight elements to a byte of bits.
///
/// Ties are first pruned optimistically while counted; only a tensor that
/// holds more ties than `cut.ties` (the last one a shared cut reaches) takes
/// a second pass over its data in memory to keep the later ones.
pub(crate) fn keep_bits(data: &[u8], numel: u64, keys: Keys, cut: TensorCut) -> (Vec<u8>, u64) {
    let w = keys.dtype.width();
    let pattern = PatternCut::of(&keys, cut);
    let is_tie = |index: u64, b: &[u8]| match pattern {
        Some(p) => p.ties(b),
        None => Fate::of(keys.key(index, b), cut) == Fate::Tie,
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
            match pattern {
                Some(p) => {
                    // The hot path. Equal patterns are pruned unless the
                    // cut keeps every tie.
                    let keep_from = p.at as u32 + (p.equal && cut.ties != 0) as u32;
                    let count_ties = p.equal && partial;
                    for (o, group) in out.iter_mut().zip(bytes.chunks(16)) {
                        let Ok(group) = <&[u8; 16]>::try_from(group) else {
                            // The last few elements.
                            let mut byte = 0u8;
                            for (k, b) in group.chunks_exact(2).enumerate() {
                                let a = (u16::from_le_bytes([b[0], b[1]]) & 0x7FFF) as u32;
                                byte |= ((a >= keep_from) as u8) << k;
                                ties += (count_ties && a == p.at as u32) as u64;
                            }
                            *o = byte;
                            continue;
                        };
                        let (byte, equal) = keep_byte16(group, keep_from, p.at);
                        *o = byte;
                        ties += if count_ties { equal } else { 0 };
                    }
                }
                None => {
                    for (j, b) in bytes.chunks_exact(w).enumerate() {
                        let fate = Fate::of(keys.key(base + j as u64, b), cut) as u8;
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
                if is_tie(base + j as u64, b) {
                    rank += 1;
                    if rank > cut.ties {
                        out[j / 8] |= 1 << (j % 8);
                    }
                }
            }
        });
    (bits, tied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_byte16_matches_the_plain_compare() {
        let mut state = 0x1234_5678_9ABC_DEF0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut bytes = [0u8; 16];
            // Patterns near the bound (ties included), both signs.
            let at = (next() % 0x7F81) as u16;
            for b in bytes.chunks_exact_mut(2) {
                let v = match next() % 4 {
                    0 => at,
                    1 => at.saturating_add((next() % 3) as u16).min(0x7F80),
                    2 => at.saturating_sub((next() % 3) as u16),
                    _ => (next() % 0x7F81) as u16,
                } | ((next() % 2) as u16) << 15;
                b.copy_from_slice(&v.to_le_bytes());
            }
            let keep_from = at as u32 + (round % 2) as u32;
            let (mut byte, mut equal) = (0u8, 0u64);
            for (k, b) in bytes.chunks_exact(2).enumerate() {
                let a = (u16::from_le_bytes([b[0], b[1]]) & 0x7FFF) as u32;
                byte |= ((a >= keep_from) as u8) << k;
                equal += (a == at as u32) as u64;
            }
            assert_eq!(
                keep_byte16(&bytes, keep_from, at),
                (byte, equal),
                "{bytes:?}"
            );
        }
    }
}
