//! Selection ops: key histograms, key counts, threshold, range and N:M
//! masks, key samples. Each covers every input in one submission, window by
//! window, and reads back only counts, samples, candidates and histograms.

use prunus_core::contract::check;
use prunus_core::contract::histogram::{BINS, Histogram, KeyCount, KeyWindow, TensorCut};
use prunus_core::{
    Candidate, CutMasks, KeyRule, MaskBatch, NanPolicy, NofM, RangeMasks, Result, ScoreView,
    Transform,
};

use crate::context::{Access, Batch, Buf, Kernel, Shader, Slice, backend_error};
use crate::window::{TIE_BLOCK, WINDOW_ALIGN, Window, lcm};
use crate::{WgpuBackend, WgpuMask, u32s};

static SELECT: Shader = Shader {
    name: "select",
    source: include_str!("../shaders/select.wgsl"),
};

static FOLD: Shader = Shader {
    name: "fold",
    source: include_str!("../shaders/fold.wgsl"),
};

const BINDINGS: &[Access] = &[
    Access::Read,
    Access::Read,
    Access::ReadWrite,
    Access::ReadWrite,
    Access::ReadWrite,
];

fn kernel(entry: &'static str) -> Kernel {
    Kernel {
        shader: &SELECT,
        entry,
        bindings: BINDINGS,
    }
}

/// Candidates read back together with the counts; more take a second read.
const EAGER_CANDIDATES: u64 = 1 << 13;

/// Bits of `Params.flags` (see the prelude).
const FLAG_ABS: u32 = 1;
const FLAG_NAN_LOWEST: u32 = 2;
const FLAG_SURVIVORS: u32 = 4;

/// One window of one input of a call.
struct Part {
    input: usize,
    window: Window,
}

/// The per-call state every selection op shares: the windows of every input
/// and placeholders for unused bindings.
struct Call<'a, 'v> {
    inputs: &'a [ScoreView<'v, WgpuBackend>],
    rule: KeyRule,
    parts: Vec<Part>,
    dummies: [Buf; 4],
}

impl<'a, 'v> Call<'a, 'v> {
    fn new(
        backend: &WgpuBackend,
        inputs: &'a [ScoreView<'v, WgpuBackend>],
        rule: KeyRule,
        align: u64,
    ) -> Result<Self> {
        check::score_views(inputs)?;
        // Every op of this module reads every score once.
        backend.gpu.count_passes(1);
        let parts = inputs
            .iter()
            .enumerate()
            .flat_map(|(input, v)| {
                backend
                    .windows(v.scores.numel(), align)
                    .into_iter()
                    .map(move |window| Part { input, window })
            })
            .collect();
        Ok(Call {
            inputs,
            rule,
            parts,
            dummies: [
                backend.dummy()?,
                backend.dummy()?,
                backend.dummy()?,
                backend.dummy()?,
            ],
        })
    }

    fn numel(&self, input: usize) -> u64 {
        self.inputs[input].scores.numel()
    }

    /// The first four parameter words of a part: length, key rule, start.
    fn head(&self, p: &Part) -> [u32; 4] {
        let mut flags = 0;
        if self.rule.transform == Transform::Abs {
            flags |= FLAG_ABS;
        }
        if self.rule.nan == NanPolicy::Lowest {
            flags |= FLAG_NAN_LOWEST;
        }
        if self.inputs[p.input].survivors.is_some() {
            flags |= FLAG_SURVIVORS;
        }
        [
            p.window.len as u32,
            flags,
            p.window.start as u32,
            (p.window.start >> 32) as u32,
        ]
    }

    /// Records `entry` over part `p` with the op-specific parameter words
    /// `tail` and the words, counts and extra bindings (placeholders where
    /// `None`); `items` is the number of threads the kernel wants.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        batch: &mut Batch<'_>,
        entry: &'static str,
        p: &Part,
        tail: &[u32],
        words: Option<Slice<'_>>,
        counts: Option<Slice<'_>>,
        extra: Option<Slice<'_>>,
        items: u64,
    ) {
        let v = &self.inputs[p.input];
        let n = v.scores.numel();
        let (off, len) = p.window.score_bytes();
        let (moff, mlen) = p.window.mask_bytes(n);
        let mut params = self.head(p).to_vec();
        params.extend_from_slice(tail);
        let [d0, d1, d2, d3] = &self.dummies;
        let groups = batch.groups_for(items);
        batch.dispatch(
            &kernel(entry),
            &params,
            &[
                v.scores.buf.slice(off, len),
                v.survivors.map_or(d0.all(), |m| m.buf.slice(moff, mlen)),
                words.unwrap_or(d1.all()),
                counts.unwrap_or(d2.all()),
                extra.unwrap_or(d3.all()),
            ],
            groups,
        );
    }

    /// One new mask per input.
    fn masks(&self, backend: &WgpuBackend) -> Result<Vec<WgpuMask>> {
        self.inputs
            .iter()
            .map(|v| backend.new_mask(&v.scores.shape))
            .collect()
    }

    /// Sums per-part counters into per-input totals.
    fn per_input(&self, per_part: impl Iterator<Item = u64>) -> Vec<u64> {
        let mut out = vec![0u64; self.inputs.len()];
        for (p, c) in self.parts.iter().zip(per_part) {
            out[p.input] += c;
        }
        out
    }
}

/// What one range-mask pass leaves.
struct RangePass {
    masks: Vec<WgpuMask>,
    /// Candidates found (stored only up to the capacity).
    found: u64,
    /// The counts, then the first candidate records, read back.
    back: Vec<Vec<u8>>,
    /// Every stored candidate record.
    records: Buf,
}

/// The mask words of part `p` of a mask.
fn words_of<'m>(m: &'m WgpuMask, p: &Part) -> Slice<'m> {
    let (off, len) = p.window.mask_bytes(m.numel());
    m.buf.slice(off, len)
}

impl WgpuBackend {
    pub(crate) fn key_histogram(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        window: KeyWindow,
    ) -> Result<Histogram> {
        let call = Call::new(self, inputs, rule, WINDOW_ALIGN)?;
        let (low, high) = match window {
            KeyWindow::High => (0, 0),
            KeyWindow::Low { high } => (1, high as u32),
        };
        let bins = BINS as u64;
        let counts = self.gpu.storage((bins + call.parts.len() as u64) * 4)?;
        let total = self.gpu.storage(bins * 8)?;
        let fold = Kernel {
            shader: &FOLD,
            entry: "fold_histogram",
            bindings: &[Access::ReadWrite, Access::ReadWrite],
        };
        // 32-bit bins overflow only past 2^32 elements: fold once at the end
        // unless the call is that large.
        let elements: u64 = (0..inputs.len()).map(|t| call.numel(t)).sum();
        let fold_each = elements >= u32::MAX as u64;
        let mut batch = self.gpu.batch();
        batch.clear(counts.all());
        batch.clear(total.all());
        let fold_into = |batch: &mut Batch<'_>| {
            let groups = batch.groups_for(bins);
            batch.dispatch(
                &fold,
                &[bins as u32],
                &[counts.slice(0, bins * 4), total.slice(0, bins * 8)],
                groups,
            );
        };
        for (j, p) in call.parts.iter().enumerate() {
            call.dispatch(
                &mut batch,
                "histogram",
                p,
                &[low, high, j as u32],
                None,
                Some(counts.all()),
                None,
                p.window.len,
            );
            if fold_each {
                fold_into(&mut batch);
            }
        }
        if !fold_each {
            fold_into(&mut batch);
        }
        let back = self.gpu.read(
            batch,
            &[
                total.slice(0, bins * 8),
                counts.slice(bins * 4, call.parts.len() as u64 * 4),
            ],
        )?;
        let words = u32s(&back[0]);
        let mut h = Histogram::new(inputs.len());
        for (b, pair) in words.chunks_exact(2).enumerate() {
            h.bins[b] = pair[0] as u64 | (pair[1] as u64) << 32;
        }
        h.nan = call.per_input(u32s(&back[1]).into_iter().map(u64::from));
        Ok(h)
    }

    pub(crate) fn key_counts(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        key: u32,
    ) -> Result<Vec<KeyCount>> {
        let call = Call::new(self, inputs, rule, WINDOW_ALIGN)?;
        let counts = self.gpu.storage(call.parts.len() as u64 * 8)?;
        let mut batch = self.gpu.batch();
        batch.clear(counts.all());
        for (j, p) in call.parts.iter().enumerate() {
            call.dispatch(
                &mut batch,
                "count_keys",
                p,
                &[key, 0, 2 * j as u32],
                None,
                Some(counts.all()),
                None,
                p.window.len,
            );
        }
        let back = self
            .gpu
            .read(batch, &[counts.slice(0, call.parts.len() as u64 * 8)])?;
        let c = u32s(&back[0]);
        let below = call.per_input(c.iter().step_by(2).map(|&x| x as u64));
        let equal = call.per_input(c.iter().skip(1).step_by(2).map(|&x| x as u64));
        Ok(below
            .into_iter()
            .zip(equal)
            .map(|(below, equal)| KeyCount { below, equal })
            .collect())
    }

    pub(crate) fn cut_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        cut: TensorCut,
    ) -> Result<CutMasks<WgpuMask>> {
        let call = Call::new(self, inputs, rule, WINDOW_ALIGN)?;
        let masks = call.masks(self)?;
        let nparts = call.parts.len() as u64;
        let counts = self.gpu.storage(nparts * 4)?;
        let mode = match cut.ties {
            0 => 0,
            TensorCut::ALL => 1,
            _ => 2,
        };
        // Tie blocks of every input, in sequence order.
        let mut block_base = Vec::with_capacity(inputs.len());
        let mut blocks = 0u64;
        for t in 0..inputs.len() {
            block_base.push(blocks);
            blocks += call.numel(t).div_ceil(TIE_BLOCK);
        }
        let budgets = if mode == 2 {
            Some(self.gpu.storage(blocks * 4)?)
        } else {
            None
        };
        let first_block = |p: &Part| (block_base[p.input] + p.window.start / TIE_BLOCK) as u32;
        let mut batch = self.gpu.batch();
        batch.clear(counts.all());
        if let (Some(b), Some(p0)) = (&budgets, call.parts.first()) {
            if blocks > u32::MAX as u64 {
                return Err(backend_error(format!("{blocks} tie blocks are too many")));
            }
            self.gpu.count_passes(1);
            for p in &call.parts {
                call.dispatch(
                    &mut batch,
                    "tie_counts",
                    p,
                    &[cut.key, 0, 0, first_block(p)],
                    None,
                    None,
                    Some(b.all()),
                    p.window.len.div_ceil(32),
                );
            }
            call.dispatch(
                &mut batch,
                "tie_budgets",
                p0,
                &[blocks as u32, cut.ties as u32, (cut.ties >> 32) as u32],
                None,
                None,
                Some(b.all()),
                1,
            );
        }
        for (j, p) in call.parts.iter().enumerate() {
            call.dispatch(
                &mut batch,
                "threshold_masks",
                p,
                &[cut.key, mode, j as u32, first_block(p)],
                Some(words_of(&masks[p.input], p)),
                Some(counts.all()),
                budgets.as_ref().map(|b| b.all()),
                p.window.mask_words(call.numel(p.input)),
            );
        }
        let back = self.gpu.read(batch, &[counts.slice(0, nparts * 4)])?;
        let ties = call.per_input(u32s(&back[0]).into_iter().map(u64::from));
        Ok(CutMasks { masks, ties })
    }

    pub(crate) fn key_range_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        lo: u32,
        hi: u32,
    ) -> Result<RangeMasks<WgpuMask>> {
        let call = Call::new(self, inputs, rule, WINDOW_ALIGN)?;
        let elements: u64 = (0..inputs.len()).map(|t| call.numel(t)).sum();
        let most = self.gpu.max_binding() / 16;
        let mut capacity = (4096 + elements / 32).min(elements).min(most);
        loop {
            let RangePass {
                masks,
                found,
                mut back,
                records,
            } = self.range_pass(&call, lo, hi, capacity)?;
            if found > capacity {
                if found > most {
                    return Err(backend_error(format!(
                        "{found} elements lie in the key range {lo:#x}..={hi:#x}: more than one \
                         binding of this device holds"
                    )));
                }
                capacity = found;
                continue;
            }
            let raw = if found > EAGER_CANDIDATES {
                let slice = records.slice(0, found * 16);
                self.gpu.read(self.gpu.batch(), &[slice])?.remove(0)
            } else {
                back.remove(1)
            };
            let words = u32s(&raw);
            let mut candidates: Vec<Candidate> = words
                .chunks_exact(4)
                .take(found as usize)
                .map(|r| Candidate {
                    input: r[0],
                    key: r[1],
                    index: r[2] as u64 | (r[3] as u64) << 32,
                })
                .collect();
            // Threads append in any order; the contract is sequence order.
            candidates.sort_unstable_by_key(|c| (c.input, c.index));
            let counts = u32s(&back[0]);
            let nan = call.per_input(counts[1..].iter().step_by(2).map(|&x| x as u64));
            let kept = call.per_input(counts[2..].iter().step_by(2).map(|&x| x as u64));
            let pruned = (0..inputs.len()).map(|t| call.numel(t) - kept[t]).collect();
            return Ok(RangeMasks {
                masks,
                candidates,
                nan,
                pruned,
            });
        }
    }

    /// One range-mask pass with room for `capacity` candidates.
    fn range_pass(
        &self,
        call: &Call<'_, '_>,
        lo: u32,
        hi: u32,
        capacity: u64,
    ) -> Result<RangePass> {
        let masks = call.masks(self)?;
        let nparts = call.parts.len() as u64;
        let counts = self.gpu.storage((1 + 2 * nparts) * 4)?;
        let records = self.gpu.storage(capacity.max(1) * 16)?;
        let mut batch = self.gpu.batch();
        batch.clear(counts.all());
        for (j, p) in call.parts.iter().enumerate() {
            call.dispatch(
                &mut batch,
                "range_masks",
                p,
                &[lo, hi, j as u32, 0, p.input as u32, capacity as u32],
                Some(words_of(&masks[p.input], p)),
                Some(counts.all()),
                Some(records.all()),
                p.window.mask_words(call.numel(p.input)),
            );
        }
        let eager = capacity.min(EAGER_CANDIDATES) * 16;
        let back = self.gpu.read(
            batch,
            &[
                counts.slice(0, (1 + 2 * nparts) * 4),
                records.slice(0, eager),
            ],
        )?;
        let found = u32s(&back[0])[0] as u64;
        Ok(RangePass {
            masks,
            found,
            back,
            records,
        })
    }

    pub(crate) fn key_samples(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        run: usize,
        every: usize,
    ) -> Result<Vec<u32>> {
        let (run, stride) = check::sample(run, every)?;
        let (run, stride) = (run as u64, stride as u64);
        let call = Call::new(self, inputs, rule, WINDOW_ALIGN)?;
        // Samples before element x of an input.
        let before = |x: u64| x / stride * run + (x % stride).min(run);
        let mut base = Vec::with_capacity(inputs.len());
        let mut total = 0u64;
        for t in 0..inputs.len() {
            base.push(total);
            total += before(call.numel(t));
        }
        if total * 4 > self.gpu.max_binding() || stride + self.window >= u32::MAX as u64 {
            return Err(backend_error(format!(
                "a sample of {total} keys with spacing {stride} does not fit one binding"
            )));
        }
        if total == 0 {
            return Ok(Vec::new());
        }
        let out = self.gpu.storage(total * 4)?;
        let mut batch = self.gpu.batch();
        for p in &call.parts {
            let s = p.window.start;
            let phase = s % stride;
            call.dispatch(
                &mut batch,
                "sample_keys",
                p,
                &[
                    stride as u32,
                    run as u32,
                    phase as u32,
                    (base[p.input] + before(s)) as u32,
                    phase.min(run) as u32,
                ],
                Some(out.slice(0, total * 4)),
                None,
                None,
                p.window.len,
            );
        }
        let back = self.gpu.read(batch, &[out.slice(0, total * 4)])?;
        Ok(u32s(&back[0]))
    }

    pub(crate) fn pattern_masks(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        pattern: NofM,
    ) -> Result<MaskBatch<WgpuMask>> {
        check::score_views(inputs)?;
        check::n_of_m(inputs, pattern)?;
        let align = lcm(WINDOW_ALIGN, pattern.m as u64);
        if align > (self.gpu.max_binding() / 4).min(crate::MAX_WINDOW) {
            return Err(backend_error(format!(
                "N:M groups of {} do not fit one binding of this device",
                pattern.m
            )));
        }
        let call = Call::new(self, inputs, rule, align)?;
        let masks = call.masks(self)?;
        let nparts = call.parts.len() as u64;
        let counts = self.gpu.storage(nparts * 4)?;
        let mut batch = self.gpu.batch();
        batch.clear(counts.all());
        for (j, p) in call.parts.iter().enumerate() {
            call.dispatch(
                &mut batch,
                "n_of_m_masks",
                p,
                &[pattern.m as u32, pattern.n as u32, j as u32],
                Some(words_of(&masks[p.input], p)),
                Some(counts.all()),
                None,
                p.window.mask_words(call.numel(p.input)),
            );
        }
        let back = self.gpu.read(batch, &[counts.slice(0, nparts * 4)])?;
        let nan = call.per_input(u32s(&back[0]).into_iter().map(u64::from));
        Ok(MaskBatch { masks, nan })
    }
}
