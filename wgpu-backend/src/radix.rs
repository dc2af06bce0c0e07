//! Selection on the device ([`prunus_core::SelectionPlan::Device`]): the
//! cut of the `k` lowest keys of every input of a call, found by radix
//! passes whose buckets the device chooses itself, then the masks, with one
//! small read-back of the cut and the counts at the end.
//!
//! Every input is cut into windows (segments) that one binding holds; a
//! dispatch binds up to [`MAX_SLOTS`] segments at once (fewer where the
//! device allows fewer storage bindings), listed in a segment table, so a
//! pass over all inputs is one dispatch for most calls. The shader module is
//! generated for the number of slots: `shaders/radix.wgsl`, one binding per
//! slot, one copy per slot of the code that reads a slot's bindings, and the
//! functions that pick the copy once per tile of work.

use std::fmt::Write;
use std::sync::OnceLock;

use prunus_core::contract::check;
use prunus_core::contract::histogram::TensorCut;
use prunus_core::{Error, KeyRule, LowestMasks, NanPolicy, Result, ScoreView, Transform};

use crate::context::{Access, Kernel, Shader, WORKGROUP};
use crate::window::{TIE_BLOCK, WINDOW_ALIGN, Window};
use crate::{WgpuBackend, WgpuMask, u32s};

/// The slot counts a module is generated for (powers of two).
const SLOT_CHOICES: [u32; 7] = [1, 2, 4, 8, 16, 32, 64];

/// The most segments one dispatch binds.
pub(crate) const MAX_SLOTS: u32 = 64;

/// Storage bindings besides the slots': segment table, state, tie blocks,
/// candidate list.
const FIXED_BINDINGS: u32 = 4;

/// Bits of a key resolved per pass.
const DIGIT_BITS: u32 = 11;

/// Mask words of a tile, the unit of work of a workgroup (8,192 elements).
const TILE_WORDS: u64 = WORKGROUP as u64;

/// Tiles each workgroup takes, at least, before a dispatch takes more
/// workgroups: each workgroup clears and adds up a 2048-bin histogram, which
/// many small workgroups would pay for again and again.
const TILES_PER_GROUP: u64 = 2;

/// The most workgroups of one radix or mask dispatch: enough to fill a large
/// GPU, few enough that the workgroups' histograms add up quickly.
const MAX_GROUPS: u64 = 1024;

/// Words of the `state` buffer (see `shaders/radix.wgsl`).
const STATE_RANK: usize = 2050;
const STATE_COUNT: usize = 2051;
const STATE_DONE: usize = 2052;
const STATE_CUT: usize = 2053;
const STATE_CANDS: usize = 2058;
const STATE_CAP: usize = 2060;
const STATE_PER_INPUT: usize = 2064;

/// Words of the candidate list before the candidates: the tied positions
/// `radix_tie_select` ranks (at most this many; more take the tie-block
/// pass).
const TIE_CAP: u64 = 2048;

/// The candidate list holds at most 1/this of a call's elements by default:
/// 8 bytes a candidate, so at most a quarter of the scores' memory.
pub(crate) const DEFAULT_CANDIDATE_SHARE: u32 = 8;

/// Words of a segment-table row.
const SEGMENT_WORDS: usize = 8;

/// Bits of `Params.flags` (see the prelude).
const FLAG_ABS: u32 = 1;
const FLAG_NAN_LOWEST: u32 = 2;

const NAMES: [&str; 7] = [
    "radix1", "radix2", "radix4", "radix8", "radix16", "radix32", "radix64",
];

static SOURCES: [OnceLock<String>; 7] = [const { OnceLock::new() }; 7];
static SHADERS: [OnceLock<Shader>; 7] = [const { OnceLock::new() }; 7];
static LAYOUTS: [OnceLock<Vec<Access>>; 7] = [const { OnceLock::new() }; 7];

/// The module and bindings for `SLOT_CHOICES[v]` slots.
fn variant(v: usize) -> (&'static Shader, &'static [Access]) {
    let slots = SLOT_CHOICES[v];
    let source = SOURCES[v].get_or_init(|| radix_source(slots));
    let shader = SHADERS[v].get_or_init(|| Shader {
        name: NAMES[v],
        source,
    });
    let layout = LAYOUTS[v].get_or_init(|| {
        let mut a = vec![
            Access::Read,
            Access::ReadWrite,
            Access::ReadWrite,
            Access::ReadWrite,
        ];
        a.extend((0..slots).map(|_| Access::Read));
        a.extend((0..slots).map(|_| Access::Read));
        a.extend((0..slots).map(|_| Access::ReadWrite));
        a
    });
    (shader, layout)
}

/// `shaders/radix.wgsl` for `slots` slots: the bindings of every slot, the
/// per-slot section copied once per slot, and the functions that call the
/// copy of a segment's slot (one `switch` per segment, never per element).
fn radix_source(slots: u32) -> String {
    const BEGIN: &str = "// @slot-begin";
    const END: &str = "// @slot-end";
    let template = include_str!("../shaders/radix.wgsl");
    let (head, rest) = template.split_once(BEGIN).unwrap_or((template, ""));
    let (section, tail) = rest.split_once(END).unwrap_or(("", rest));
    let mut s = format!("{head}{tail}");
    let first = FIXED_BINDINGS + 1;
    for (what, access, base, item) in [
        ("scores", "read", first, "vec4<u32>"),
        ("survivors", "read", first + slots, "u32"),
        ("masks", "read_write", first + 2 * slots, "u32"),
    ] {
        for i in 0..slots {
            let _ = writeln!(
                s,
                "@group(0) @binding({}) var<storage, {access}> {what}_{i}: array<{item}>;",
                base + i
            );
        }
    }
    for i in 0..slots {
        s.push_str(&section.replace("SLOT", &i.to_string()));
    }
    let chooser = |signature: &str, call: &str, fallback: &str| -> String {
        let cases: String = (0..slots)
            .map(|i| {
                format!(
                    "        case {i}u: {{ {} }}\n",
                    call.replace("SLOT", &i.to_string())
                )
            })
            .collect();
        format!(
            "fn {signature} {{\n    switch s {{\n{cases}        default: {{ {fallback} }}\n    }}\n}}\n"
        )
    };
    s.push_str(&chooser(
        "histogram_tile(s: u32, seg: Segment, tile: u32, lid: u32, first: bool, prefix: u32, \
         digits: u32, write: bool) -> u32",
        "return histogram_tile_SLOT(seg, tile, lid, first, prefix, digits, write);",
        "return 0u;",
    ));
    s.push_str(&chooser(
        "read_tile(s: u32, seg: Segment, tile: u32, lid: u32) -> u32",
        "return read_tile_SLOT(seg, tile, lid);",
        "return 0u;",
    ));
    s.push_str(&chooser(
        "tie_counts_tile(s: u32, seg: Segment, tile: u32, lid: u32, cut: u32)",
        "tie_counts_tile_SLOT(seg, tile, lid, cut);",
        "",
    ));
    s.push_str(&chooser(
        "masks_tile(s: u32, seg: Segment, tile: u32, lid: u32, cut: u32, mode: u32, \
         tie_pos: u32) -> u32",
        "return masks_tile_SLOT(seg, tile, lid, cut, mode, tie_pos);",
        "return 0u;",
    ));
    s
}

/// The compact key of the shaders (`compact`) back to a key: under
/// [`Transform::Abs`] the sign bit every score key has is put back.
fn expand(compact: u32, abs: bool) -> u32 {
    if !abs || compact < 2 {
        compact
    } else if compact == 0x7FFF_FFFF {
        u32::MAX
    } else {
        (compact - 2) | 0x8000_0000
    }
}

/// The bytes of a window's scores as the shaders bind them: whole 16-byte
/// quads (they read `vec4<u32>`), which every buffer holds, its size being
/// a multiple of 16 (`Gpu::storage`).
fn quad_bytes(window: Window) -> (u64, u64) {
    let (offset, len) = window.score_bytes();
    (offset, len.next_multiple_of(16))
}

/// One window of one input, bound to one slot of a dispatch.
struct Segment {
    input: usize,
    window: Window,
    /// The call-wide number of its first tie block.
    block: u64,
}

/// A call's inputs cut into segments and dealt to dispatches of `slots`
/// segments each, with the segment table the shaders read.
struct Layout {
    segments: Vec<Segment>,
    slots: usize,
    /// Tie blocks of the call (each input padded to whole blocks).
    blocks: u64,
    /// The segment table, rows in sequence order.
    table: Vec<u32>,
    /// Tiles of each dispatch (numbered from 0 in each).
    tiles: Vec<u64>,
}

impl Layout {
    /// The segments of each dispatch.
    fn chunks(&self) -> std::slice::Chunks<'_, Segment> {
        self.segments.chunks(self.slots)
    }

    /// Workgroups of each dispatch.
    fn groups(&self) -> Vec<u32> {
        self.tiles
            .iter()
            .map(|t| t.div_ceil(TILES_PER_GROUP).clamp(1, MAX_GROUPS) as u32)
            .collect()
    }
}

impl WgpuBackend {
    /// `inputs` cut into windows and dealt to dispatches of `slots`.
    fn layout(&self, inputs: &[ScoreView<'_, Self>], slots: usize) -> Layout {
        let mut segments = Vec::new();
        let mut blocks = 0u64;
        for (input, view) in inputs.iter().enumerate() {
            let numel = view.scores.numel();
            for window in self.windows(numel, WINDOW_ALIGN) {
                segments.push(Segment {
                    input,
                    window,
                    block: blocks + window.start / TIE_BLOCK,
                });
            }
            blocks += numel.div_ceil(TIE_BLOCK);
        }
        let mut table = Vec::with_capacity(segments.len() * SEGMENT_WORDS);
        let mut tiles = Vec::new();
        for chunk in segments.chunks(slots) {
            let mut t = 0u64;
            for s in chunk {
                let view = &inputs[s.input];
                let words = s.window.mask_words(view.scores.numel());
                table.extend_from_slice(&[
                    s.window.len as u32,
                    words as u32,
                    s.input as u32,
                    s.block as u32,
                    view.survivors.is_some() as u32,
                    t as u32,
                    0,
                    0,
                ]);
                t += words.div_ceil(TILE_WORDS);
            }
            tiles.push(t);
        }
        Layout {
            segments,
            slots,
            blocks,
            table,
            tiles,
        }
    }

    /// The segment table on the device.
    fn table(&self, layout: &Layout) -> Result<crate::context::Buf> {
        let buf = self.gpu.storage(layout.table.len().max(1) as u64 * 4)?;
        self.gpu.write(&buf, 0, &crate::le_bytes(&layout.table));
        Ok(buf)
    }

    /// One streaming read of every element of `tensors` in one dispatch per
    /// [`MAX_SLOTS`] windows (the segment table of device selection), and
    /// a wait for it: the XOR of the elements' bits, so that the read
    /// cannot be skipped.
    pub(crate) fn read_segments(&self, tensors: &[&crate::WgpuTensor]) -> Result<u32> {
        let segments = self.segment_count(tensors.iter().map(|t| t.numel()));
        let Some(v) = self.radix_variant(segments) else {
            return Err(crate::context::backend_error(format!(
                "{} allows too few storage bindings per kernel ({})",
                self.gpu.info().name,
                self.gpu.max_storage_bindings()
            )));
        };
        let slots = SLOT_CHOICES[v] as usize;
        let (shader, bindings) = variant(v);
        let views: Vec<ScoreView<'_, Self>> = tensors.iter().map(|t| ScoreView::new(*t)).collect();
        let layout = self.layout(&views, slots);
        let table = self.table(&layout)?;
        let state = self.gpu.storage(4)?;
        self.gpu.write(&state, 0, &[0; 4]);
        let (dummy_read, dummy_write) = (self.dummy()?, self.dummy()?);
        let mut batch = self.gpu.batch();
        for ((c, chunk), groups) in layout.chunks().enumerate().zip(layout.groups()) {
            let mut b = vec![
                table.all(),
                state.all(),
                dummy_write.all(),
                dummy_write.all(),
            ];
            for i in 0..slots {
                b.push(chunk.get(i).map_or(dummy_read.all(), |s| {
                    let (off, len) = quad_bytes(s.window);
                    tensors[s.input].buf.slice(off, len)
                }));
            }
            b.extend((0..slots).map(|_| dummy_read.all()));
            b.extend((0..slots).map(|_| dummy_write.all()));
            let mut params = [0u32; 10];
            (params[0], params[2], params[9]) = (
                chunk.len() as u32,
                (c * slots) as u32,
                layout.tiles[c] as u32,
            );
            let kernel = Kernel {
                shader,
                entry: "radix_read",
                bindings,
            };
            batch.dispatch(&kernel, &params, &b, groups);
        }
        let back = self.gpu.read(batch, &[state.all()])?;
        Ok(u32s(&back[0])[0])
    }

    /// Slots per dispatch on this device (at most [`MAX_SLOTS`] and the
    /// backend's own cap), as an index into the generated variants; `None`
    /// when the device allows too few storage bindings for even one. Of
    /// the variants that fit, the smallest that holds a call of `segments`
    /// in one dispatch: a small call binds no more slots than it fills.
    fn radix_variant(&self, segments: usize) -> Option<usize> {
        let room = self
            .gpu
            .max_storage_bindings()
            .saturating_sub(FIXED_BINDINGS)
            / 3;
        let most = room.min(self.segments).min(MAX_SLOTS);
        let largest = SLOT_CHOICES.iter().rposition(|&c| c <= most)?;
        let fits = SLOT_CHOICES.iter().position(|&c| c as usize >= segments);
        Some(fits.map_or(largest, |v| v.min(largest)))
    }

    /// The number of windows (segments) of `numels`.
    fn segment_count(&self, numels: impl Iterator<Item = u64>) -> usize {
        numels.map(|n| self.windows(n, WINDOW_ALIGN).len()).sum()
    }

    pub(crate) fn device_select(
        &self,
        inputs: &[ScoreView<'_, Self>],
        rule: KeyRule,
        k: u64,
    ) -> Result<Option<LowestMasks<WgpuMask>>> {
        check::score_views(inputs)?;
        let n: u64 = inputs.iter().map(|v| v.scores.numel()).sum();
        if k > n {
            return Err(Error::LengthMismatch {
                what: "elements to select",
                expected: n as usize,
                found: k as usize,
            });
        }
        // Counts on the device are 32-bit.
        if n >= u32::MAX as u64 {
            return Ok(None);
        }
        let segments = self.segment_count(inputs.iter().map(|v| v.scores.numel()));
        let Some(v) = self.radix_variant(segments) else {
            return Ok(None);
        };
        let slots = SLOT_CHOICES[v] as usize;
        let (shader, bindings) = variant(v);
        let kernel = |entry: &'static str| Kernel {
            shader,
            entry,
            bindings,
        };

        let layout = self.layout(inputs, slots);
        let blocks = layout.blocks;
        let masks: Vec<WgpuMask> = inputs
            .iter()
            .map(|v| self.new_mask(&v.scores.shape))
            .collect::<Result<_>>()?;
        let mut nan = vec![0u64; inputs.len()];
        let mut pruned = vec![0u64; inputs.len()];
        if layout.segments.is_empty() {
            let cut = TensorCut { key: 0, ties: 0 };
            return Ok(Some(LowestMasks {
                masks,
                cut,
                nan,
                pruned,
            }));
        }

        let chunks: Vec<&[Segment]> = layout.chunks().collect();
        let chunk_tiles = &layout.tiles;
        // The candidate list: positions are u32, so the call's elements,
        // each input padded to whole tie blocks, must number 2^32 at most.
        let capacity = if self.candidates == 0 || blocks * TIE_BLOCK > 1 << 32 {
            0
        } else {
            n.div_ceil(self.candidates as u64)
                .min((self.gpu.max_binding() / 4).saturating_sub(TIE_CAP) / 2)
        };
        let cands = self.gpu.storage((TIE_CAP + 2 * capacity) * 4)?;
        let state_words = STATE_PER_INPUT + 2 * inputs.len();
        let mut state = vec![0u32; state_words];
        state[STATE_RANK] = k as u32;
        state[STATE_COUNT] = n as u32;
        state[STATE_CAP] = capacity as u32;
        if k == 0 {
            // Nothing to prune: the cut below every key (pass 0 still counts
            // the NaN scores).
            state[STATE_DONE] = 1;
        }
        let table_buf = self.table(&layout)?;
        let state_buf = self.gpu.storage(state_words as u64 * 4)?;
        self.gpu.write(&state_buf, 0, &crate::le_bytes(&state));
        let ties = self.gpu.storage(blocks * 4)?;
        let (dummy_read, dummy_write) = (self.dummy()?, self.dummy()?);

        let abs = rule.transform == Transform::Abs;
        let mut flags = 0;
        if abs {
            flags |= FLAG_ABS;
        }
        if rule.nan == NanPolicy::Lowest {
            flags |= FLAG_NAN_LOWEST;
        }
        let key_bits = if abs { 31 } else { 32 };
        // (shift, width, previous shift) of each digit, from the top.
        let digits = [
            (key_bits - DIGIT_BITS, DIGIT_BITS, 0),
            (key_bits - 2 * DIGIT_BITS, DIGIT_BITS, key_bits - DIGIT_BITS),
            (0, key_bits - 2 * DIGIT_BITS, key_bits - 2 * DIGIT_BITS),
        ];

        let chunk_groups = layout.groups();
        let pass_groups: u32 = chunk_groups.iter().sum();
        let bind = |chunk: &[Segment]| {
            let mut b = vec![table_buf.all(), state_buf.all(), ties.all(), cands.all()];
            for i in 0..slots {
                b.push(chunk.get(i).map_or(dummy_read.all(), |s| {
                    let (off, len) = quad_bytes(s.window);
                    inputs[s.input].scores.buf.slice(off, len)
                }));
            }
            for i in 0..slots {
                b.push(
                    chunk
                        .get(i)
                        .and_then(|s| {
                            let numel = inputs[s.input].scores.numel();
                            let (off, len) = s.window.mask_bytes(numel);
                            inputs[s.input].survivors.map(|m| m.buf.slice(off, len))
                        })
                        .unwrap_or(dummy_read.all()),
                );
            }
            for i in 0..slots {
                b.push(chunk.get(i).map_or(dummy_write.all(), |s| {
                    let numel = inputs[s.input].scores.numel();
                    let (off, len) = s.window.mask_bytes(numel);
                    masks[s.input].buf.slice(off, len)
                }));
            }
            b
        };

        let mut batch = self.gpu.batch();
        for (pass, &(shift, width, previous)) in digits.iter().enumerate() {
            for (c, chunk) in chunks.iter().enumerate() {
                let params = [
                    chunk.len() as u32,
                    flags,
                    (c * slots) as u32,
                    0,
                    shift,
                    width,
                    previous,
                    pass_groups,
                    pass as u32,
                    chunk_tiles[c] as u32,
                ];
                batch.dispatch(
                    &kernel("radix_pass"),
                    &params,
                    &bind(chunk),
                    chunk_groups[c],
                );
            }
        }
        // Pass 2 over the candidate list, when pass 1 wrote one (the
        // scores' pass 2 above then returned at once), and the tied
        // positions among the candidates.
        if capacity > 0 {
            let groups = capacity
                .div_ceil(TILE_WORDS * 32 * TILES_PER_GROUP)
                .clamp(1, MAX_GROUPS) as u32;
            let (shift, width, previous) = digits[2];
            let params = [0, flags, 0, 0, shift, width, previous, groups, 2];
            batch.dispatch(&kernel("radix_cands"), &params, &bind(chunks[0]), groups);
            batch.dispatch(
                &kernel("radix_tie_gather"),
                &params,
                &bind(chunks[0]),
                groups,
            );
            batch.dispatch(&kernel("radix_tie_select"), &params, &bind(chunks[0]), 1);
        }
        // The other kernels take the radix passes' parameter layout: n,
        // flags, base_lo and f.
        let tiled = |c: usize, chunk: &[Segment]| {
            let mut p = [0u32; 10];
            (p[0], p[1], p[2], p[9]) = (
                chunk.len() as u32,
                flags,
                (c * slots) as u32,
                chunk_tiles[c] as u32,
            );
            p
        };
        for (c, chunk) in chunks.iter().enumerate() {
            batch.dispatch(
                &kernel("radix_tie_counts"),
                &tiled(c, chunk),
                &bind(chunk),
                chunk_groups[c],
            );
        }
        batch.dispatch(
            &kernel("radix_tie_budgets"),
            &[0, flags, 0, 0, blocks as u32],
            &bind(chunks[0]),
            1,
        );
        for (c, chunk) in chunks.iter().enumerate() {
            batch.dispatch(
                &kernel("radix_masks"),
                &tiled(c, chunk),
                &bind(chunk),
                chunk_groups[c],
            );
        }
        let first = STATE_CUT as u64 * 4;
        let back = self.gpu.read(
            batch,
            &[state_buf.slice(first, state_words as u64 * 4 - first)],
        )?;
        let words = u32s(&back[0]);
        let at = |i: usize| words[i - STATE_CUT];
        let (cut, tie_budget, tied, mode, passes) = (
            at(STATE_CUT),
            at(STATE_CUT + 1),
            at(STATE_CUT + 2),
            at(STATE_CUT + 3),
            at(STATE_CUT + 4),
        );
        self.gpu.count_candidates(at(STATE_CANDS) as u64);
        for t in 0..inputs.len() {
            nan[t] = at(STATE_PER_INPUT + 2 * t) as u64;
            pruned[t] = at(STATE_PER_INPUT + 2 * t + 1) as u64;
        }
        // The radix passes the device ran, the mask pass, and the tie pass
        // where ties were split.
        self.gpu
            .count_passes(passes as u64 + 1 + (mode == 2) as u64);
        let ties = match mode {
            0 => 0,
            1 => tied as u64,
            // Split ties, settled by tie blocks (2) or positions (3).
            _ => tie_budget as u64,
        };
        Ok(Some(LowestMasks {
            masks,
            cut: TensorCut {
                key: expand(cut, abs),
                ties,
            },
            nan,
            pruned,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_keys_expand_back() {
        use prunus_core::contract::key::{KEY_NAN_HIGHEST, KEY_NAN_LOWEST, KEY_PRUNED};
        let abs = KeyRule::ABS;
        // The shader's `compact`.
        let compact = |key: u32| {
            if key < 2 {
                key
            } else if key == u32::MAX {
                0x7FFF_FFFF
            } else {
                (key & 0x7FFF_FFFF) + 2
            }
        };
        let keys = [
            KEY_PRUNED,
            KEY_NAN_LOWEST,
            abs.key(0.0),
            abs.key(f32::from_bits(1)),
            abs.key(-1.5),
            abs.key(f32::MAX),
            abs.key(f32::INFINITY),
            KEY_NAN_HIGHEST,
        ];
        for w in keys.windows(2) {
            assert!(compact(w[0]) < compact(w[1]));
        }
        for key in keys {
            assert!(compact(key) < 1 << 31);
            assert_eq!(expand(compact(key), true), key);
            assert_eq!(expand(key, false), key);
        }
    }

    #[test]
    fn generated_source_binds_every_slot() {
        let s = radix_source(4);
        assert!(s.contains("@binding(16) var<storage, read_write> masks_3: array<u32>"));
        assert!(s.contains("@binding(5) var<storage, read> scores_0: array<vec4<u32>>"));
        assert!(s.contains("fn masks_tile_3("));
        assert!(s.contains("case 3u: { tie_counts_tile_3(seg, tile, lid, cut); }"));
        assert!(!s.contains("scores_4") && !s.contains("_SLOT"));
    }
}
