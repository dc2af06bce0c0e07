// Selection on the device: the cut of the k lowest keys of every input of a
// call, found by radix passes that never wait for the host, then the masks.
//
// A dispatch covers up to SLOTS segments (windows of inputs, in sequence
// order), each bound to its own bindings; the segment table says how long
// each is, which input it belongs to and where its tie blocks start. A pass
// over all inputs takes one dispatch per SLOTS segments (one for most
// calls); the code that reads a segment's bindings is written once per slot
// (the section between `@slot-begin` and `@slot-end`, copied with SLOT
// replaced by the slot's number), so that the slot is chosen once per
// segment tile, never per element. Work is dealt in tiles of 256 mask words
// (8,192 elements, eight tie blocks) that never straddle segments: a
// workgroup takes tiles wid, wid + groups, ... of its dispatch, so a small
// segment costs only the workgroups that hold its tiles. Keys are ranked in
// a compressed form (`compact`) that drops the sign bit |w| keys all share,
// and resolved 11 bits per pass from the top:
// each pass histograms the next digit of the keys that lie in the bucket
// the previous pass chose, in workgroup memory first, and the last
// workgroup to finish the pass chooses the next bucket into `state`.
//
// Params: n = segments in this dispatch, flags = key rule (FLAG_*), base_lo
// = this dispatch's first row of the segment table, a = the digit's shift,
// b = its width in bits, c = the previous digit's shift, d = workgroups of
// the whole pass (every dispatch of it), e = the pass's number (0 first),
// f = tiles of this dispatch.

@group(0) @binding(0) var<uniform> params: Params;

struct Segment {
    // Elements.
    len: u32,
    // u32 mask words the segment writes (the input's last segment includes
    // the mask's padding word).
    words: u32,
    // The input's position in the call.
    input: u32,
    // The call-wide number of the segment's first tie block.
    block: u32,
    // 1 when an earlier mask's survivors are bound.
    survivors: u32,
    // The dispatch-wide number of its first tile.
    tile: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(1) var<storage, read> segments: array<Segment>;
@group(0) @binding(2) var<storage, read_write> state: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read_write> ties: array<u32>;

// Layout of `state`, in u32 words.
const HIST: u32 = 0u;
const RADIX_BINS: u32 = 2048u;
// Workgroups that finished the current pass.
const ARRIVED: u32 = 2048u;
// The compact-key bits resolved so far: the chosen bucket's keys >> c.
const PREFIX: u32 = 2049u;
// The 1-based rank of the cut within that bucket.
const RANK: u32 = 2050u;
// Elements in that bucket.
const COUNT: u32 = 2051u;
// 1 once the cut is known.
const DONE: u32 = 2052u;
// The cut, as a compact key: keys below it are pruned, and the first TIES of
// the TIED elements at it.
const CUT: u32 = 2053u;
const TIES: u32 = 2054u;
const TIED: u32 = 2055u;
// 0: no tied element pruned, 1: every one, 2: the first TIES (budgets).
const MODE: u32 = 2056u;
// Passes that read the scores.
const PASSES: u32 = 2057u;
// Then per input: NaN scores, pruned elements.
const PER_INPUT: u32 = 2064u;

var<workgroup> wg_hist: array<atomic<u32>, 2048>;
var<workgroup> wg_flag: u32;
var<workgroup> wg_sums: array<u32, 256>;
var<workgroup> wg_count: atomic<u32>;

// The rule's key made compact: under FLAG_ABS every score key has the sign
// bit set, so the 31 bits below it (plus the two low special keys and the
// NaN-highest key) are ranked instead, an order-preserving bijection.
fn compact(key: u32) -> u32 {
    if ((params.flags & FLAG_ABS) == 0u || key < 2u) {
        return key;
    }
    if (key == 0xffffffffu) {
        return 0x7fffffffu;
    }
    return (key & 0x7fffffffu) + 2u;
}

// Elements of a tile (256 mask words).
const TILE: u32 = 8192u;

// The slot of the segment that holds tile t of the dispatch, searching on
// from slot `start` (a workgroup's tiles only grow).
fn segment_of(t: u32, start: u32) -> u32 {
    var s = start;
    while (s + 1u < params.n && segments[params.base_lo + s + 1u].tile <= t) {
        s += 1u;
    }
    return s;
}

// One radix pass: the histogram of digit (key >> a) & (2^b - 1) of the keys
// whose higher bits (key >> c) equal PREFIX (every key in pass 0, which
// also counts NaN scores per input). The last workgroup chooses the bucket
// that holds the cut and clears the histogram for the next pass. Passes
// after the cut is known return at once.
@compute @workgroup_size(WG)
fn radix_pass(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (lid == 0u) {
        wg_flag = atomicLoad(&state[DONE]);
    }
    let done = workgroupUniformLoad(&wg_flag);
    if (done != 0u && params.e != 0u) {
        return;
    }
    for (var j = lid; j < RADIX_BINS; j += WG) {
        atomicStore(&wg_hist[j], 0u);
    }
    let prefix = atomicLoad(&state[PREFIX]);
    workgroupBarrier();
    let first = params.e == 0u;
    let digits = (1u << params.b) - 1u;
    var s = 0u;
    for (var t = wid.x; t < params.f; t += nwg.x) {
        s = segment_of(t, s);
        let seg = segments[params.base_lo + s];
        let nan = histogram_tile(s, seg, t - seg.tile, lid, first, prefix, digits);
        if (first && nan > 0u) {
            atomicAdd(&state[PER_INPUT + 2u * seg.input], nan);
        }
    }
    workgroupBarrier();
    for (var j = lid; j <= digits; j += WG) {
        let c = atomicLoad(&wg_hist[j]);
        if (c > 0u) {
            atomicAdd(&state[HIST + j], c);
        }
    }
    // Publish this workgroup's bins before counting it as arrived.
    storageBarrier();
    if (lid == 0u) {
        wg_flag = select(0u, 1u, atomicAdd(&state[ARRIVED], 1u) + 1u == params.d);
    }
    let last = workgroupUniformLoad(&wg_flag);
    if (last == 0u) {
        return;
    }
    // The last workgroup: every other one has published its bins.
    storageBarrier();
    let per = (RADIX_BINS + WG - 1u) / WG;
    var sum = 0u;
    for (var j = lid * per; j < lid * per + per; j++) {
        let c = atomicLoad(&state[HIST + j]);
        atomicStore(&wg_hist[j], c);
        atomicStore(&state[HIST + j], 0u);
        sum += c;
    }
    wg_sums[lid] = sum;
    workgroupBarrier();
    if (lid != 0u) {
        return;
    }
    atomicStore(&state[ARRIVED], 0u);
    atomicAdd(&state[PASSES], 1u);
    if (done != 0u) {
        return;
    }
    let rank = atomicLoad(&state[RANK]);
    // The bin holding the rank-th key: first the thread's share, then the bin.
    var before = 0u;
    var t = 0u;
    while (t + 1u < WG && before + wg_sums[t] < rank) {
        before += wg_sums[t];
        t += 1u;
    }
    var bin = t * per;
    while (bin + 1u < (t + 1u) * per && before + atomicLoad(&wg_hist[bin]) < rank) {
        before += atomicLoad(&wg_hist[bin]);
        bin += 1u;
    }
    let count = atomicLoad(&wg_hist[bin]);
    let left = rank - before;
    let chosen = (prefix << params.b) | bin;
    if (params.a == 0u) {
        // The last digit: the cut is one key.
        atomicStore(&state[CUT], chosen);
        atomicStore(&state[TIES], left);
        atomicStore(&state[TIED], count);
        atomicStore(&state[MODE], select(2u, 1u, left == count));
        atomicStore(&state[DONE], 1u);
    } else if (left == count && chosen + 1u < (1u << (32u - params.a))) {
        // The whole bucket is pruned: cut at the next bucket's first key.
        atomicStore(&state[CUT], (chosen + 1u) << params.a);
        atomicStore(&state[MODE], 0u);
        atomicStore(&state[DONE], 1u);
    } else {
        atomicStore(&state[PREFIX], chosen);
        atomicStore(&state[RANK], left);
        atomicStore(&state[COUNT], count);
    }
}

var<workgroup> wg_words: array<u32, 256>;

// Under mode 2 only: ties[block] = elements of tie block `block` (1,024
// elements, 32 words, numbered across the call) whose key is the cut.
@compute @workgroup_size(WG)
fn radix_tie_counts(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (lid == 0u) {
        wg_flag = atomicLoad(&state[MODE]);
    }
    if (workgroupUniformLoad(&wg_flag) != 2u) {
        return;
    }
    let cut = atomicLoad(&state[CUT]);
    var s = 0u;
    for (var t = wid.x; t < params.f; t += nwg.x) {
        s = segment_of(t, s);
        let seg = segments[params.base_lo + s];
        tie_counts_tile(s, seg, t - seg.tile, lid, cut);
    }
}

// Under mode 2 only: turns the tie-block counts ties[0..a) of the whole
// call into budgets, how many of each block's tied elements are pruned (the
// first TIES of the sequence). One workgroup.
@compute @workgroup_size(WG)
fn radix_tie_budgets(@builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) {
        wg_flag = atomicLoad(&state[MODE]);
    }
    if (workgroupUniformLoad(&wg_flag) != 2u) {
        return;
    }
    let total = atomicLoad(&state[TIES]);
    let blocks = params.a;
    let per = (blocks + WG - 1u) / WG;
    let first = min(lid * per, blocks);
    let last = min(first + per, blocks);
    var sum = 0u;
    for (var j = first; j < last; j++) {
        sum += ties[j];
    }
    wg_sums[lid] = sum;
    workgroupBarrier();
    if (lid == 0u) {
        var run = 0u;
        for (var j = 0u; j < WG; j++) {
            let c = wg_sums[j];
            wg_sums[j] = run;
            run += c;
        }
    }
    workgroupBarrier();
    var before = wg_sums[lid];
    for (var j = first; j < last; j++) {
        let c = ties[j];
        var budget = 0u;
        if (before < total) {
            budget = min(total - before, c);
        }
        ties[j] = budget;
        before += c;
    }
}

// The masks: keys below the cut pruned, keys above kept, tied keys as MODE
// says (under mode 2, while their rank in their tie block is below the
// block's budget). Pruned elements are counted per input.
@compute @workgroup_size(WG)
fn radix_masks(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (lid == 0u) {
        wg_flag = atomicLoad(&state[MODE]);
    }
    let mode = workgroupUniformLoad(&wg_flag);
    let cut = atomicLoad(&state[CUT]);
    var s = 0u;
    for (var t = wid.x; t < params.f; t += nwg.x) {
        s = segment_of(t, s);
        let seg = segments[params.base_lo + s];
        let pruned = masks_tile(s, seg, t - seg.tile, lid, cut, mode);
        // One atomic per workgroup and tile.
        if (lid == 0u) {
            atomicStore(&wg_count, 0u);
        }
        workgroupBarrier();
        if (pruned > 0u) {
            atomicAdd(&wg_count, pruned);
        }
        workgroupBarrier();
        if (lid == 0u) {
            let p = atomicLoad(&wg_count);
            if (p > 0u) {
                atomicAdd(&state[PER_INPUT + 2u * seg.input + 1u], p);
            }
        }
    }
}

// What follows is written once per slot: SLOT becomes the slot's number,
// and `histogram_tile`, `tie_counts_tile` and `masks_tile` (generated after
// it) call the copy of the segment's slot.
// @slot-begin

// The compact key of element i of the segment in slot SLOT (0 where an
// earlier mask pruned it).
fn key_SLOT(seg: Segment, i: u32) -> u32 {
    if (seg.survivors != 0u && ((survivors_SLOT[i >> 5u] >> (i & 31u)) & 1u) == 0u) {
        return 0u;
    }
    return compact(key_of(scores_SLOT[i], params.flags));
}

// radix_pass over tile `tile` of the segment in slot SLOT: returns its NaN
// scores this thread read.
fn histogram_tile_SLOT(seg: Segment, tile: u32, lid: u32, first: bool, prefix: u32,
                       digits: u32) -> u32 {
    var nan = 0u;
    let end = min(tile * TILE + TILE, seg.len);
    for (var i = tile * TILE + lid; i < end; i += WG) {
        var key = 0u;
        if (seg.survivors == 0u || ((survivors_SLOT[i >> 5u] >> (i & 31u)) & 1u) != 0u) {
            let bits = scores_SLOT[i];
            key = compact(key_of(bits, params.flags));
            if (is_nan_bits(transformed(bits, params.flags))) {
                nan += 1u;
            }
        }
        if (first || (key >> params.c) == prefix) {
            atomicAdd(&wg_hist[(key >> params.a) & digits], 1u);
        }
    }
    return nan;
}

// Bits of word w of the segment in slot SLOT whose key equals `cut`, and
// whose key is above it.
fn classify_SLOT(seg: Segment, w: u32, cut: u32) -> vec2<u32> {
    var equal = 0u;
    var above = 0u;
    let first = w * 32u;
    let last = min(first + 32u, seg.len);
    for (var i = first; i < last; i++) {
        let k = key_SLOT(seg, i);
        let bit = 1u << (i - first);
        if (k == cut) {
            equal |= bit;
        } else if (k > cut) {
            above |= bit;
        }
    }
    return vec2<u32>(equal, above);
}

// radix_tie_counts over tile `tile` of the segment in slot SLOT.
fn tie_counts_tile_SLOT(seg: Segment, tile: u32, lid: u32, cut: u32) {
    let n_words = (seg.len + 31u) / 32u;
    let w = tile * WG + lid;
    var c = 0u;
    if (w < n_words) {
        c = countOneBits(classify_SLOT(seg, w, cut).x);
    }
    wg_words[lid] = c;
    workgroupBarrier();
    if ((lid & 31u) == 0u && w < n_words) {
        var sum = 0u;
        for (var j = lid; j < lid + 32u; j++) {
            sum += wg_words[j];
        }
        ties[seg.block + w / 32u] = sum;
    }
    workgroupBarrier();
}

// radix_masks over tile `tile` of the segment in slot SLOT: returns the
// elements this thread's word prunes.
fn masks_tile_SLOT(seg: Segment, tile: u32, lid: u32, cut_key: u32, mode: u32) -> u32 {
    let w = tile * WG + lid;
    var cls = vec2<u32>(0u, 0u);
    if (w * 32u < seg.len) {
        cls = classify_SLOT(seg, w, cut_key);
    }
    let equal = cls.x;
    wg_words[lid] = countOneBits(equal);
    workgroupBarrier();
    var cut = 0u;
    if (mode == 1u) {
        cut = equal;
    } else if (mode == 2u && w * 32u < seg.len) {
        // Tied elements of this block before this word.
        var rank = 0u;
        for (var j = lid & ~31u; j < lid; j++) {
            rank += wg_words[j];
        }
        let budget = ties[seg.block + w / 32u];
        var take = select(0u, budget - rank, budget > rank);
        var left = equal;
        while (take > 0u && left != 0u) {
            let low = left & (~left + 1u);
            cut |= low;
            left ^= low;
            take -= 1u;
        }
    }
    var pruned = 0u;
    if (w < seg.words) {
        let keep = cls.y | (equal & ~cut);
        masks_SLOT[w] = keep;
        if (w * 32u < seg.len) {
            pruned = min(32u, seg.len - w * 32u) - countOneBits(keep);
        }
    }
    workgroupBarrier();
    return pruned;
}
// @slot-end

// The slot bindings, the copies of the section above and the functions that
// choose among them are generated for SLOTS slots and appended.
