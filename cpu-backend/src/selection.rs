//! The selection ops: key histograms, key counts, threshold masks and N:M
//! masks over many inputs at once, plus the bare read pass they are measured
//! against.
//!
//! Every op flattens its inputs into [`Chunk`]s of at most [`CHUNK`]
//! elements, each starting at a multiple of 64 within its input so that it
//! owns whole mask words, and runs the chunks on the backend's executor. The
//! split depends only on the input sizes, and all results are integer counts
//! or per-element decisions, so every thread count gives the same answer.

use prunus_core::contract::check;
use prunus_core::contract::histogram::{BINS, Histogram, KeyCount, KeyWindow, TensorCut};
use prunus_core::contract::key::KeyRule;
use prunus_core::contract::mask::words_for;
use prunus_core::{
    Candidate, CutMasks, HasShape, Mask, MaskBatch, NanPolicy, NofM, RangeMasks, Result, ScoreView,
    Transform,
};

use crate::CpuBackend;
use crate::exec::Exec;
use crate::keys::{
    BLOCK, KeyFn, abs_at_least, abs_at_least_counting, abs_low_window, abs_range, pack, read_ahead,
    scan, with_key_fn,
};
use crate::lanes::{Lanes, WithLanes};
use crate::simd::Isa;

/// Elements per chunk: large enough to amortise scheduling, small enough to
/// balance the load over the threads.
pub(crate) const CHUNK: usize = 1 << 18;

/// A contiguous range of one input.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chunk {
    /// The input's position in the call.
    pub(crate) input: usize,
    /// First element (a multiple of `size` in [`chunks`]).
    pub(crate) start: usize,
    /// One past the last element.
    pub(crate) end: usize,
}

impl Chunk {
    /// The chunk's elements.
    #[inline]
    fn of<'s>(&self, data: &'s [f32]) -> &'s [f32] {
        &data[self.start..self.end]
    }

    /// The chunk's words of a mask.
    #[inline]
    fn words<'s>(&self, words: &'s [u64]) -> &'s [u64] {
        &words[self.start / BLOCK..words_for(self.end)]
    }
}

/// The inputs of lengths `lens` cut into chunks of `size` elements (a
/// multiple of 64), input by input.
pub(crate) fn chunks(lens: impl Iterator<Item = usize>, size: usize) -> Vec<Chunk> {
    debug_assert!(size > 0 && size.is_multiple_of(BLOCK));
    let mut out = Vec::new();
    for (input, len) in lens.enumerate() {
        out.extend((0..len).step_by(size).map(|start| Chunk {
            input,
            start,
            end: (start + size).min(len),
        }));
    }
    out
}

/// One score view, as slices.
#[derive(Clone, Copy)]
struct Input<'s> {
    data: &'s [f32],
    survivors: Option<&'s [u64]>,
}

impl<'s> Input<'s> {
    fn all(views: &[ScoreView<'s, CpuBackend<'_>>]) -> Vec<Input<'s>> {
        views
            .iter()
            .map(|v| Input {
                data: v.scores.data(),
                survivors: v.survivors.map(Mask::words),
            })
            .collect()
    }
}

/// Scans one chunk of `input` with kernel `k` (see [`scan`]).
#[inline(always)]
fn scan_chunk<K: KeyFn, T: Copy + Default>(
    k: K,
    input: Input<'_>,
    c: &Chunk,
    map: impl Fn(u32) -> T,
    f: impl FnMut(usize, &[T]),
) -> u64 {
    scan(
        k,
        c.of(input.data),
        input.survivors.map(|w| c.words(w)),
        map,
        f,
    )
}

/// Counters per histogram bin.
pub(crate) const LANES: usize = 4;

/// The counters of a local histogram: [`LANES`] per bin.
pub(crate) type Counters = [u32; LANES * BINS];

/// A histogram being filled by one task. Every bin has [`LANES`]
/// interleaved `u32` counters, and consecutive elements count into
/// different lanes: a run of equal keys (zeros, pruned elements) then makes
/// four short chains of increments instead of one long chain through the
/// same memory word, which would stall on store-to-load forwarding. The
/// counters spill into `u64` before they could overflow.
struct LocalHistogram {
    lanes: Box<Counters>,
    wide: Vec<u64>,
    pending: u64,
    nan: Vec<u64>,
    /// Full-resolution counts of a key range (see [`histogram_with_range`]).
    fine: Vec<u32>,
    fine_wide: Vec<u64>,
}

impl LocalHistogram {
    fn new(inputs: usize) -> Self {
        let lanes = vec![0u32; LANES * BINS]
            .into_boxed_slice()
            .try_into()
            .expect("a full set of counters");
        LocalHistogram {
            lanes,
            wide: Vec::new(),
            pending: 0,
            nan: vec![0; inputs],
            fine: Vec::new(),
            fine_wide: Vec::new(),
        }
    }

    /// [`LocalHistogram::new`] that also counts `span` keys at full
    /// resolution.
    fn with_fine(inputs: usize, span: usize) -> Self {
        LocalHistogram {
            fine: vec![0; span],
            ..LocalHistogram::new(inputs)
        }
    }

    /// Makes room for `n` more counts.
    fn reserve(&mut self, n: usize) {
        if self.pending + n as u64 > u32::MAX as u64 {
            self.spill();
        }
        self.pending += n as u64;
    }

    fn spill(&mut self) {
        if self.wide.is_empty() {
            self.wide = vec![0; BINS];
        }
        for (w, lanes) in self.wide.iter_mut().zip(self.lanes.chunks_exact_mut(LANES)) {
            *w += lanes.iter().map(|&c| c as u64).sum::<u64>();
            lanes.fill(0);
        }
        if self.fine_wide.len() < self.fine.len() {
            self.fine_wide = vec![0; self.fine.len()];
        }
        for (w, c) in self.fine_wide.iter_mut().zip(&mut self.fine) {
            *w += *c as u64;
            *c = 0;
        }
        self.pending = 0;
    }

    fn finish(mut self) -> Histogram {
        self.spill();
        Histogram {
            bins: self.wide,
            nan: self.nan,
        }
    }
}

/// Counts `bins`, element `i` into lane `i % LANES`.
#[inline(always)]
fn count_bins(lanes: &mut Counters, bins: &[u16]) {
    let mut groups = bins.chunks_exact(LANES);
    for g in groups.by_ref() {
        for (lane, &b) in g.iter().enumerate() {
            lanes[b as usize * LANES + lane] += 1;
        }
    }
    for (lane, &b) in groups.remainder().iter().enumerate() {
        lanes[b as usize * LANES + lane] += 1;
    }
}

fn merge_histograms(mut a: Histogram, b: Histogram) -> Histogram {
    for (x, y) in a.bins.iter_mut().zip(&b.bins) {
        *x += y;
    }
    for (x, y) in a.nan.iter_mut().zip(&b.nan) {
        *x += y;
    }
    a
}

/// Adds one chunk to a histogram of `window`.
#[inline(always)]
fn histogram_chunk<K: KeyFn>(
    k: K,
    rule: KeyRule,
    input: Input<'_>,
    c: &Chunk,
    window: KeyWindow,
    h: &mut LocalHistogram,
) {
    h.reserve(c.end - c.start);
    let lanes = &mut *h.lanes;
    let nan = match window {
        KeyWindow::High => scan_chunk(
            k,
            input,
            c,
            |key| (key >> 16) as u16,
            |_, high| count_bins(lanes, high),
        ),
        KeyWindow::Low { high }
            if rule.transform == Transform::Abs && (0x8000..0xFF80).contains(&high) =>
        {
            abs_low_window(
                c.of(input.data),
                input.survivors.map(|w| c.words(w)),
                high,
                lanes,
            )
        }
        KeyWindow::Low { high } => {
            let base = (high as u32) << 16;
            scan_chunk(
                k,
                input,
                c,
                |key| key,
                |_, keys| {
                    // Few keys match: find out with a vectorisable compare
                    // whether any does, then visit the block.
                    if keys
                        .iter()
                        .fold(false, |any, &key| any | (key.wrapping_sub(base) < 1 << 16))
                    {
                        for (i, &key) in keys.iter().enumerate() {
                            if key.wrapping_sub(base) < 1 << 16 {
                                lanes[(key & 0xFFFF) as usize * LANES + i % LANES] += 1;
                            }
                        }
                    }
                },
            )
        }
    };
    h.nan[c.input] += nan;
}

pub(crate) fn histogram(
    exec: &Exec,
    views: &[ScoreView<'_, CpuBackend<'_>>],
    rule: KeyRule,
    window: KeyWindow,
) -> Result<Histogram> {
    check::score_views(views)?;
    let inputs = Input::all(views);
    let items = chunks(inputs.iter().map(|i| i.data.len()), CHUNK);
    let n = inputs.len();
    Ok(with_key_fn!(rule, |k| exec.fold(
        &items,
        || LocalHistogram::new(n),
        |mut h, c| {
            // Not dispatched: the counter increments are scattered stores
            // that wider vectors do not speed up, and the AVX2 build of this
            // loop measured 1.5x slower than the baseline one (Zen 1).
            histogram_chunk(k, rule, inputs[c.input], c, window, &mut h);
            h
        },
        LocalHistogram::finish,
        merge_histograms,
    )))
}

/// The widest range [`histogram_with_range`] counts: 64 buckets, 4 M
/// counters per task.
pub(crate) const MAX_RANGE_BUCKETS: u16 = 64;

pub(crate) fn histogram_with_range(
    exec: &Exec,
    views: &[ScoreView<'_, CpuBackend<'_>>],
    rule: KeyRule,
    (lo, hi): (u16, u16),
) -> Result<(Histogram, Vec<u64>)> {
    check::score_views(views)?;
    if lo > hi || hi - lo >= MAX_RANGE_BUCKETS {
        return Err(prunus_core::Error::InvalidArgument {
            what: "bucket range",
            expected: "a first bucket at most the last, at most 64 buckets",
        });
    }
    let inputs = Input::all(views);
    let items = chunks(inputs.iter().map(|i| i.data.len()), CHUNK);
    let n = inputs.len();
    let base = (lo as u32) << 16;
    let span = ((hi - lo) as usize + 1) << 16;
    let (h, fine) = with_key_fn!(rule, |k| exec.fold(
        &items,
        || LocalHistogram::with_fine(n, span),
        |mut h, c| {
            h.reserve(c.end - c.start);
            let (lanes, fine) = (&mut *h.lanes, &mut h.fine);
            h.nan[c.input] += scan_chunk(
                k,
                inputs[c.input],
                c,
                |key| key,
                |_, keys| {
                    for (i, &key) in keys.iter().enumerate() {
                        lanes[(key >> 16) as usize * LANES + i % LANES] += 1;
                    }
                    // Few keys fall in the range: a vectorisable compare
                    // says whether any does before the block is visited.
                    let inside = |key: u32| (key.wrapping_sub(base) as usize) < span;
                    if keys.iter().fold(false, |any, &key| any | inside(key)) {
                        for &key in keys {
                            if inside(key) {
                                fine[key.wrapping_sub(base) as usize] += 1;
                            }
                        }
                    }
                },
            );
            h
        },
        |mut h| {
            h.spill();
            let fine = std::mem::take(&mut h.fine_wide);
            (h.finish(), fine)
        },
        |(a, fa), (b, fb)| {
            let fine = fa.iter().zip(&fb).map(|(x, y)| x + y).collect();
            (merge_histograms(a, b), fine)
        },
    ));
    Ok((h, fine))
}

pub(crate) fn count_keys(
    exec: &Exec,
    isa: Isa,
    views: &[ScoreView<'_, CpuBackend<'_>>],
    rule: KeyRule,
    key: u32,
) -> Result<Vec<KeyCount>> {
    check::score_views(views)?;
    let inputs = Input::all(views);
    let items = chunks(inputs.iter().map(|i| i.data.len()), CHUNK);
    let per_chunk = with_key_fn!(rule, |k| exec.map(&items, |c| isa.run(
        #[inline(always)]
        || {
            let mut count = KeyCount::default();
            scan_chunk(
                k,
                inputs[c.input],
                c,
                |x| x,
                |_, keys| {
                    let (mut below, mut equal) = (0u32, 0u32);
                    for &x in keys {
                        below += (x < key) as u32;
                        equal += (x == key) as u32;
                    }
                    count.below += below as u64;
                    count.equal += equal as u64;
                },
            );
            count
        }
    )));
    let mut out = vec![KeyCount::default(); inputs.len()];
    for (c, count) in items.iter().zip(per_chunk) {
        out[c.input].below += count.below;
        out[c.input].equal += count.equal;
    }
    Ok(out)
}

/// How one chunk of a threshold mask is decided.
#[derive(Clone, Copy, Debug)]
enum Decide {
    /// Keep the keys `>= t` (`t` up to `2^32`, which keeps none).
    AtLeast(u64),
    /// The tie budget runs out inside this chunk: keep keys above `key`,
    /// and keys equal to it from the `ties - before`-th one on.
    Ranked { key: u32, ties: u64, before: u64 },
}

/// Fills the mask words of one chunk.
#[inline(always)]
fn mask_chunk<K: KeyFn>(
    k: K,
    isa: Isa,
    rule: KeyRule,
    input: Input<'_>,
    c: &Chunk,
    decide: Decide,
    out: &mut [u64],
) {
    let len = c.end - c.start;
    match decide {
        Decide::AtLeast(0) => {
            out.fill(u64::MAX);
            if !len.is_multiple_of(BLOCK)
                && let Some(last) = out.last_mut()
            {
                *last = (1u64 << (len % BLOCK)) - 1;
            }
        }
        Decide::AtLeast(t) if t > u32::MAX as u64 => out.fill(0),
        Decide::AtLeast(t)
            if rule.transform == Transform::Abs && (0x8000_0000..=0xFF80_0001).contains(&t) =>
        {
            isa.dispatch(AtLeast {
                x: c.of(input.data),
                survivors: input.survivors.map(|w| c.words(w)),
                t: t as u32,
                nan: rule.nan,
                out,
            });
        }
        Decide::AtLeast(t) => {
            let t = t as u32;
            scan_chunk(
                k,
                input,
                c,
                |key| (key >= t) as u8,
                |b, keep| out[b] = pack(keep),
            );
        }
        Decide::Ranked { key, ties, before } => {
            let mut rank = before;
            scan_chunk(
                k,
                input,
                c,
                |x| x,
                |b, keys| {
                    let mut w = 0u64;
                    for (i, &x) in keys.iter().enumerate() {
                        let pruned = TensorCut { key, ties }.prunes(x, rank);
                        rank += (x == key) as u64;
                        w |= (!pruned as u64) << i;
                    }
                    out[b] = w;
                },
            );
        }
    }
}

/// [`abs_at_least`] as a kernel for [`Isa::dispatch`].
struct AtLeast<'s> {
    x: &'s [f32],
    survivors: Option<&'s [u64]>,
    t: u32,
    nan: NanPolicy,
    out: &'s mut [u64],
}

impl WithLanes for AtLeast<'_> {
    type Output = ();
    #[inline(always)]
    fn run<L: Lanes>(self, lanes: L) {
        abs_at_least(lanes, self.x, self.survivors, self.t, self.nan, self.out)
    }
}

/// [`abs_range`] as a kernel for [`Isa::dispatch`].
struct Range<'s, 'g> {
    x: &'s [f32],
    survivors: Option<&'s [u64]>,
    lo: u32,
    hi: u32,
    nan: NanPolicy,
    out: &'s mut [u64],
    gathered: &'g mut Vec<(u32, u32)>,
}

impl WithLanes for Range<'_, '_> {
    type Output = u64;
    #[inline(always)]
    fn run<L: Lanes>(self, lanes: L) -> u64 {
        abs_range(
            lanes,
            self.x,
            self.survivors,
            self.lo,
            self.hi,
            self.nan,
            self.out,
            self.gathered,
        )
    }
}

/// Fills the mask words of one chunk keeping the keys `>= t` (`t` up to
/// `2^32`), and returns how many alive elements have the key `eq`.
#[inline(always)]
fn mask_chunk_counting<K: KeyFn>(
    k: K,
    rule: KeyRule,
    input: Input<'_>,
    c: &Chunk,
    t: u64,
    eq: u32,
    out: &mut [u64],
) -> u64 {
    if rule.transform == Transform::Abs
        && (0x8000_0000..=0xFF80_0001).contains(&t)
        && (0x8000_0000..=0xFF80_0000).contains(&eq)
    {
        return abs_at_least_counting(
            c.of(input.data),
            input.survivors.map(|w| c.words(w)),
            t as u32,
            eq,
            rule.nan,
            out,
        );
    }
    let mut count = 0u64;
    scan_chunk(
        k,
        input,
        c,
        |x| x,
        |b, keys| {
            let mut w = 0u64;
            let mut tied = 0u32;
            for (i, &x) in keys.iter().enumerate() {
                w |= ((x as u64 >= t) as u64) << i;
                tied += (x == eq) as u32;
            }
            out[b] = w;
            count += tied as u64;
        },
    );
    count
}

/// The threshold masks of `cut` over the inputs as one sequence.
///
/// One pass decides every element by its key alone — keys below the cut
/// pruned, keys above kept, tied keys all kept (or all pruned, for
/// [`TensorCut::ALL`]) — and counts the tied keys of every chunk. When only
/// part of the tied elements are to be pruned, the chunk counts, summed in
/// sequence order, say which chunks hold the first `ties` of them: only
/// those chunks are decided again, every tied key pruned, and the one chunk
/// where the budget runs out ranked element by element. With few ties that
/// is one chunk; the pass count stays at one whatever the ties.
pub(crate) fn threshold_masks(
    exec: &Exec,
    isa: Isa,
    views: &[ScoreView<'_, CpuBackend<'_>>],
    rule: KeyRule,
    cut: TensorCut,
) -> Result<CutMasks<Mask>> {
    check::score_views(views)?;
    let inputs = Input::all(views);
    let items = chunks(inputs.iter().map(|i| i.data.len()), CHUNK);
    let mut words = blank_words(&inputs);
    let key = cut.key as u64;
    let mut ties = vec![0u64; inputs.len()];

    if cut.ties == 0 {
        let tasks = chunk_words(&items, &mut words, |_| true);
        with_key_fn!(rule, |k| exec.for_each(tasks, |(c, out)| isa.run(
            #[inline(always)]
            || mask_chunk(k, isa, rule, inputs[c.input], &c, Decide::AtLeast(key), out)
        )));
    } else {
        // Tied keys pruned in the first pass only when all of them go.
        let t = if cut.ties == TensorCut::ALL {
            key + 1
        } else {
            key
        };
        let tasks = chunk_words(&items, &mut words, |_| true);
        let tied: Vec<u64> = with_key_fn!(rule, |k| exec.map_into(tasks, |(c, out)| isa.run(
            #[inline(always)]
            || mask_chunk_counting(k, rule, inputs[c.input], &c, t, cut.key, out)
        )));
        if cut.ties == TensorCut::ALL {
            for (c, n) in items.iter().zip(&tied) {
                ties[c.input] += n;
            }
        } else {
            let mut decisions = vec![None; items.len()];
            let mut before = 0u64;
            for (i, (c, &n)) in items.iter().zip(&tied).enumerate() {
                if n > 0 && before < cut.ties {
                    decisions[i] = Some(if before + n <= cut.ties {
                        Decide::AtLeast(key + 1)
                    } else {
                        Decide::Ranked {
                            key: cut.key,
                            ties: cut.ties,
                            before,
                        }
                    });
                    ties[c.input] += n.min(cut.ties - before);
                }
                before += n;
            }
            let mut again = decisions.iter().flatten();
            let tasks = chunk_words(&items, &mut words, |i| decisions[i].is_some());
            let tasks: Vec<_> = tasks
                .into_iter()
                .map(|(c, out)| (c, *again.next().expect("one decision per chunk"), out))
                .collect();
            with_key_fn!(rule, |k| exec.for_each(tasks, |(c, decide, out)| isa.run(
                #[inline(always)]
                || mask_chunk(k, isa, rule, inputs[c.input], &c, decide, out)
            )));
        }
    }
    let masks = finish_masks(views, words)?;
    Ok(CutMasks { masks, ties })
}

/// The masks of a key range and the elements inside it: see
/// [`prunus_core::Backend::range_masks`]. One pass; each chunk gathers its
/// own elements, concatenated in chunk (that is, sequence) order.
pub(crate) fn range_masks(
    exec: &Exec,
    isa: Isa,
    views: &[ScoreView<'_, CpuBackend<'_>>],
    rule: KeyRule,
    lo: u32,
    hi: u32,
) -> Result<RangeMasks<Mask>> {
    check::score_views(views)?;
    let inputs = Input::all(views);
    let items = chunks(inputs.iter().map(|i| i.data.len()), CHUNK);
    let mut words = blank_words(&inputs);
    let tasks = chunk_words(&items, &mut words, |_| true);
    let fast = rule.transform == Transform::Abs && lo >= 0x8000_0000 && hi < 0xFF80_0000;
    let gathered: Vec<RangeChunk> = with_key_fn!(rule, |k| exec.map_into(tasks, |(c, out)| isa
        .run(
            #[inline(always)]
            || {
                let input = inputs[c.input];
                let mut found = Vec::new();
                let nan = if fast {
                    isa.dispatch(Range {
                        x: c.of(input.data),
                        survivors: input.survivors.map(|w| c.words(w)),
                        lo,
                        hi,
                        nan: rule.nan,
                        out,
                        gathered: &mut found,
                    })
                } else {
                    scan_chunk(
                        k,
                        input,
                        &c,
                        |x| x,
                        |b, keys| {
                            let mut w = 0u64;
                            for (i, &x) in keys.iter().enumerate() {
                                w |= ((x >= lo) as u64) << i;
                                if (lo..=hi).contains(&x) {
                                    found.push(((b * BLOCK + i) as u32, x));
                                }
                            }
                            out[b] = w;
                        },
                    )
                };
                // Counted while the chunk's words are still in cache.
                let kept = out.iter().map(|w| w.count_ones() as u64).sum();
                RangeChunk { found, nan, kept }
            }
        )));
    let mut nan = vec![0u64; inputs.len()];
    let mut pruned: Vec<u64> = inputs.iter().map(|i| i.data.len() as u64).collect();
    for (c, r) in items.iter().zip(&gathered) {
        nan[c.input] += r.nan;
        pruned[c.input] -= r.kept;
    }
    let mut candidates = Vec::with_capacity(gathered.iter().map(|r| r.found.len()).sum());
    for (c, r) in items.iter().zip(gathered) {
        candidates.extend(r.found.into_iter().map(|(i, key)| Candidate {
            input: c.input as u32,
            key,
            index: (c.start + i as usize) as u64,
        }));
    }
    let masks = finish_masks(views, words)?;
    Ok(RangeMasks {
        masks,
        candidates,
        nan,
        pruned,
    })
}

/// What one chunk of a range pass finds: the elements in the range (index
/// in the chunk, key), its NaN scores and its kept elements.
struct RangeChunk {
    found: Vec<(u32, u32)>,
    nan: u64,
    kept: u64,
}

/// The keys of the runs of `run` elements at every `run * every` elements
/// of each input: see [`prunus_core::Backend::sample_keys`]. Each chunk
/// takes the runs that start in it, so the keys come out in sequence order.
pub(crate) fn sample_keys(
    exec: &Exec,
    isa: Isa,
    views: &[ScoreView<'_, CpuBackend<'_>>],
    rule: KeyRule,
    run: usize,
    every: usize,
) -> Result<Vec<u32>> {
    check::score_views(views)?;
    let (run, stride) = check::sample(run, every)?;
    let inputs = Input::all(views);
    let items = chunks(inputs.iter().map(|i| i.data.len()), CHUNK);
    let parts = with_key_fn!(rule, |k| exec.map(&items, |c| isa.run(
        #[inline(always)]
        || {
            let input = inputs[c.input];
            let mut keys = Vec::new();
            let mut start = c.start.div_ceil(stride) * stride;
            while start < c.end {
                let end = (start + run).min(input.data.len());
                if start.is_multiple_of(BLOCK) {
                    // Runs of whole blocks (the usual case) use the vector kernel.
                    scan(
                        k,
                        &input.data[start..end],
                        input.survivors.map(|w| &w[start / BLOCK..words_for(end)]),
                        |x| x,
                        |_, block| keys.extend_from_slice(block),
                    );
                } else {
                    for i in start..end {
                        let alive = input
                            .survivors
                            .is_none_or(|w| w[i / BLOCK] >> (i % BLOCK) & 1 == 1);
                        keys.push(rule.key_with(input.data[i], alive));
                    }
                }
                start += stride;
            }
            keys
        }
    )));
    Ok(parts.concat())
}

/// Zeroed mask words for every input.
fn blank_words(inputs: &[Input<'_>]) -> Vec<Vec<u64>> {
    inputs
        .iter()
        .map(|i| vec![0u64; words_for(i.data.len())])
        .collect()
}

/// The masks built in `words`, one per view.
fn finish_masks(
    views: &[ScoreView<'_, CpuBackend<'_>>],
    words: Vec<Vec<u64>>,
) -> Result<Vec<Mask>> {
    views
        .iter()
        .zip(words)
        .map(|(v, w)| Mask::from_words(v.scores.shape().clone(), w))
        .collect()
}

/// The chunks whose index passes `pick`, each with its own words of the
/// masks being built.
fn chunk_words<'w>(
    items: &[Chunk],
    words: &'w mut [Vec<u64>],
    pick: impl Fn(usize) -> bool,
) -> Vec<(Chunk, &'w mut [u64])> {
    let mut slices: Vec<std::slice::ChunksMut<'_, u64>> = words
        .iter_mut()
        .map(|w| w.chunks_mut(CHUNK / BLOCK))
        .collect();
    let mut tasks = Vec::new();
    for (i, c) in items.iter().enumerate() {
        let out = slices[c.input].next().expect("one word slice per chunk");
        if pick(i) {
            tasks.push((*c, out));
        }
    }
    tasks
}

/// Greatest common divisor.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Keeps the `n` largest of one N:M group by (key, index): sets their bits
/// in `out` (bit 0 is the chunk's first element), `at` being the group's
/// offset in the chunk.
#[inline(always)]
fn n_of_m_group(
    keys: &[u32],
    at: usize,
    pattern: NofM,
    order: &mut Vec<(u32, usize)>,
    out: &mut [u64],
) {
    let drop = pattern.m - pattern.n;
    let mut keep = |j: usize| {
        let i = at + j;
        out[i / BLOCK] |= 1 << (i % BLOCK);
    };
    if pattern.m <= 32 {
        // Rank by counting: element j is among the `drop` smallest when
        // fewer than `drop` elements precede it in (key, index) order.
        for (j, &kj) in keys.iter().enumerate() {
            let rank = keys
                .iter()
                .enumerate()
                .filter(|&(i, &ki)| ki < kj || (ki == kj && i < j))
                .count();
            if rank >= drop {
                keep(j);
            }
        }
    } else {
        order.clear();
        order.extend(keys.iter().enumerate().map(|(j, &k)| (k, j)));
        order.sort_unstable();
        for &(_, j) in &order[drop..] {
            keep(j);
        }
    }
}

pub(crate) fn n_of_m_masks(
    exec: &Exec,
    isa: Isa,
    views: &[ScoreView<'_, CpuBackend<'_>>],
    rule: KeyRule,
    pattern: NofM,
) -> Result<MaskBatch<Mask>> {
    check::score_views(views)?;
    check::n_of_m(views, pattern)?;
    let inputs = Input::all(views);
    // Chunks hold whole words and whole groups.
    let unit = BLOCK / gcd(BLOCK, pattern.m) * pattern.m;
    let size = CHUNK.div_ceil(unit) * unit;
    let items = chunks(inputs.iter().map(|i| i.data.len()), size);
    let mut words = blank_words(&inputs);
    let mut slices: Vec<_> = words
        .iter_mut()
        .map(|w| w.chunks_mut(size / BLOCK))
        .collect();
    let tasks: Vec<(Chunk, &mut [u64])> = items
        .iter()
        .map(|c| {
            (
                *c,
                slices[c.input].next().expect("one word slice per chunk"),
            )
        })
        .collect();
    drop(slices);
    let nan_per_chunk = with_key_fn!(rule, |k| exec.map_into(tasks, |(c, out)| isa.run(
        #[inline(always)]
        || {
            let mut keys = Vec::with_capacity(c.end - c.start);
            let nan = scan_chunk(
                k,
                inputs[c.input],
                &c,
                |x| x,
                |_, ks| keys.extend_from_slice(ks),
            );
            let mut order = Vec::new();
            for (g, group) in keys.chunks_exact(pattern.m).enumerate() {
                n_of_m_group(group, g * pattern.m, pattern, &mut order, out);
            }
            nan
        }
    )));
    let mut nan = vec![0u64; inputs.len()];
    for (c, n) in items.iter().zip(nan_per_chunk) {
        nan[c.input] += n;
    }
    let masks = finish_masks(views, words)?;
    Ok(MaskBatch { masks, nan })
}

/// One streaming read of every element, split like the selection passes,
/// reading ahead in software when `prefetch` is set.
pub(crate) fn read_pass(exec: &Exec, isa: Isa, data: &[&[f32]], prefetch: bool) -> u64 {
    let items = chunks(data.iter().map(|d| d.len()), CHUNK);
    let xor = exec.map(&items, |c| {
        isa.dispatch(Xor {
            x: c.of(data[c.input]),
            prefetch,
        })
    });
    xor.into_iter().fold(0u32, |a, x| a ^ x) as u64
}

/// The xor of the bits of `x`, as a kernel for [`Isa::dispatch`].
struct Xor<'s> {
    x: &'s [f32],
    prefetch: bool,
}

impl WithLanes for Xor<'_> {
    type Output = u32;
    #[inline(always)]
    fn run<L: Lanes>(self, lanes: L) -> u32 {
        let mut acc = [0u32; 16];
        let mut blocks = self.x.chunks_exact(BLOCK);
        for b in blocks.by_ref() {
            if self.prefetch {
                read_ahead(lanes, b);
            }
            for sixteen in b.chunks_exact(16) {
                for (a, x) in acc.iter_mut().zip(sixteen) {
                    *a ^= x.to_bits();
                }
            }
        }
        let tail = blocks.remainder().iter().fold(0, |a, x| a ^ x.to_bits());
        acc.iter().fold(tail, |a, &x| a ^ x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_whole_words_and_cover_inputs() {
        let c = chunks([0, 1, 130, 3 * 128 + 5].into_iter(), 128);
        let spans: Vec<(usize, usize, usize)> =
            c.iter().map(|c| (c.input, c.start, c.end)).collect();
        assert_eq!(
            spans,
            [
                (1, 0, 1),
                (2, 0, 128),
                (2, 128, 130),
                (3, 0, 128),
                (3, 128, 256),
                (3, 256, 384),
                (3, 384, 389)
            ]
        );
        let words = vec![0u64; words_for(389)];
        assert_eq!(c[6].words(&words).len(), 1);
        assert_eq!(c[5].words(&words).len(), 2);
    }

    #[test]
    fn local_histogram_spills_before_overflow() {
        let mut h = LocalHistogram::new(1);
        count_bins(&mut h.lanes, &[7, 7, 7, 7, 7, 9]);
        h.reserve(6);
        // Pretend almost 2^32 counts are pending: the next reserve spills.
        h.pending = u32::MAX as u64 - 2;
        h.reserve(5);
        assert_eq!(h.pending, 5);
        assert!(h.lanes.iter().all(|&c| c == 0));
        count_bins(&mut h.lanes, &[9, 0xFFFF]);
        let out = h.finish();
        assert_eq!(out.bins[7], 5);
        assert_eq!(out.bins[9], 2);
        assert_eq!(out.bins[0xFFFF], 1);
        assert_eq!(out.total(), 8);
    }
}
