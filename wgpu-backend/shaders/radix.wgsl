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
// The second pass also writes the keys it histograms, with their
// positions, to the candidate list when the first pass's bucket fits it;
// the third pass then reads the candidates instead of the scores
// (radix_cands), and a cut that splits its ties finds the last pruned tied
// position among them (radix_tie_gather, radix_tie_select): a selection
// reads the scores three times (two radix passes and the masks), the list
// aside. A position is the element's index in the call's sequence of
// inputs, each input padded to whole tie blocks: seg.block * 1024 + i.
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
// Words [0, TIE_CAP): the tied positions radix_tie_gather collects; then
// candidate j as (compact key, position) at CAND_BASE + 2j.
@group(0) @binding(4) var<storage, read_write> cands: array<u32>;

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
// 0: no tied element pruned, 1: every one, 2: the first TIES (budgets),
// 3: those at positions up to TIE_POS.
const MODE: u32 = 2056u;
// Passes that read the scores.
const PASSES: u32 = 2057u;
// Candidates written by the second pass.
const CANDS: u32 = 2058u;
// 1 when the second pass writes (wrote) every key of its bucket.
const CAND_OK: u32 = 2059u;
// Candidates the list holds (set by the host; 0: no list).
const CAP: u32 = 2060u;
// Under mode 3, the position of the last tied element pruned.
const TIE_POS: u32 = 2061u;
// Tied positions radix_tie_gather collected.
const TIE_N: u32 = 2062u;
// Then per input: NaN scores, pruned elements.
const PER_INPUT: u32 = 2064u;

var<workgroup> wg_hist: array<atomic<u32>, 2048>;
var<workgroup> wg_flag: u32;
var<workgroup> wg_sums: array<u32, 256>;
var<workgroup> wg_count: atomic<u32>;
var<workgroup> wg_cand: u32;
var<workgroup> wg_base: u32;

// The tied positions a list can hold, and where the candidates start.
const TIE_CAP: u32 = 2048u;
const CAND_BASE: u32 = 2048u;

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
// Elements of a tie block.
const TIE_ELEMENTS: u32 = 1024u;

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
// also counts NaN scores per input); pass 1 also writes those keys to the
// candidate list when CAND_OK, and pass 2 then leaves the work to
// radix_cands. Passes after the cut is known return at once.
@compute @workgroup_size(WG)
fn radix_pass(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (lid == 0u) {
        wg_flag = atomicLoad(&state[DONE]);
        wg_cand = atomicLoad(&state[CAND_OK]);
    }
    let done = workgroupUniformLoad(&wg_flag);
    let cand_ok = workgroupUniformLoad(&wg_cand);
    if ((done != 0u && params.e != 0u) || (cand_ok != 0u && params.e == 2u)) {
        return;
    }
    let prefix = clear_histogram(lid);
    let first = params.e == 0u;
    let write = cand_ok != 0u && params.e == 1u;
    let digits = (1u << params.b) - 1u;
    var s = 0u;
    for (var t = wid.x; t < params.f; t += nwg.x) {
        s = segment_of(t, s);
        let seg = segments[params.base_lo + s];
        let nan = histogram_tile(s, seg, t - seg.tile, lid, first, prefix, digits, write);
        if (first && nan > 0u) {
            atomicAdd(&state[PER_INPUT + 2u * seg.input], nan);
        }
    }
    finish_pass(lid, done, prefix, digits, true);
}

// Pass 2 over the candidate list, when CAND_OK: the histogram of the last
// digit of the candidates in the bucket pass 1 chose.
@compute @workgroup_size(WG)
fn radix_cands(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (lid == 0u) {
        wg_flag = atomicLoad(&state[DONE]);
        wg_cand = atomicLoad(&state[CAND_OK]);
        wg_base = atomicLoad(&state[CANDS]);
    }
    let done = workgroupUniformLoad(&wg_flag);
    let cand_ok = workgroupUniformLoad(&wg_cand);
    let count = workgroupUniformLoad(&wg_base);
    if (done != 0u || cand_ok == 0u) {
        return;
    }
    let prefix = clear_histogram(lid);
    let digits = (1u << params.b) - 1u;
    for (var j = wid.x * WG + lid; j < count; j += nwg.x * WG) {
        let key = cands[CAND_BASE + 2u * j];
        if ((key >> params.c) == prefix) {
            atomicAdd(&wg_hist[(key >> params.a) & digits], 1u);
        }
    }
    finish_pass(lid, 0u, prefix, digits, false);
}

// The start of a pass (every workgroup): clears the workgroup histogram and
// returns the bucket's bits so far (PREFIX).
fn clear_histogram(lid: u32) -> u32 {
    for (var j = lid; j < RADIX_BINS; j += WG) {
        atomicStore(&wg_hist[j], 0u);
    }
    let prefix = atomicLoad(&state[PREFIX]);
    workgroupBarrier();
    return prefix;
}

// The end of a pass (every workgroup, wg_hist filled): the workgroup's
// non-zero bins go to the global histogram; the last workgroup of the pass
// (params.d of them) chooses the bucket that holds the cut and clears the
// histogram for the next pass. `counted`: the pass read the scores.
fn finish_pass(lid: u32, done: u32, prefix: u32, digits: u32, counted: bool) {
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
    if (counted) {
        atomicAdd(&state[PASSES], 1u);
    }
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
        if (params.e == 0u) {
            // Pass 1 keeps the bucket's keys if the list holds them all.
            atomicStore(&state[CAND_OK], select(0u, 1u, count <= atomicLoad(&state[CAP])));
        }
    }
}

// A slot of `count` candidates this thread writes, among its workgroup's
// (which takes its slots in one atomic): the first slot's number.
fn reserve(lid: u32, count: u32) -> u32 {
    if (lid == 0u) {
        atomicStore(&wg_count, 0u);
    }
    workgroupBarrier();
    var offset = 0u;
    if (count > 0u) {
        offset = atomicAdd(&wg_count, count);
    }
    workgroupBarrier();
    if (lid == 0u) {
        wg_base = atomicAdd(&state[CANDS], atomicLoad(&wg_count));
    }
    return workgroupUniformLoad(&wg_base) + offset;
}

// Whether ties are settled through the candidate list: the cut splits its
// tied elements (mode 2), the list holds them, and few enough to rank.
fn ties_from_list() -> bool {
    return atomicLoad(&state[MODE]) == 2u && atomicLoad(&state[CAND_OK]) != 0u
        && atomicLoad(&state[TIED]) <= TIE_CAP;
}

// The positions of the candidates whose key is the cut, into the list's
// first TIED words (in any order).
@compute @workgroup_size(WG)
fn radix_tie_gather(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (lid == 0u) {
        wg_flag = select(0u, 1u, ties_from_list());
        wg_base = atomicLoad(&state[CANDS]);
    }
    let go = workgroupUniformLoad(&wg_flag);
    let count = workgroupUniformLoad(&wg_base);
    if (go == 0u) {
        return;
    }
    let cut = atomicLoad(&state[CUT]);
    for (var j = wid.x * WG + lid; j < count; j += nwg.x * WG) {
        if (cands[CAND_BASE + 2u * j] == cut) {
            let at = atomicAdd(&state[TIE_N], 1u);
            if (at < TIE_CAP) {
                cands[at] = cands[CAND_BASE + 2u * j + 1u];
            }
        }
    }
}

// One workgroup: ranks the gathered tied positions and records the TIES-th
// lowest as TIE_POS (mode 3): the mask pass prunes the tied elements up to
// it, so the tie blocks need no pass of their own.
@compute @workgroup_size(WG)
fn radix_tie_select(@builtin(local_invocation_index) lid: u32) {
    if (lid == 0u) {
        wg_flag = select(0u, 1u, ties_from_list());
    }
    if (workgroupUniformLoad(&wg_flag) == 0u) {
        return;
    }
    let tied = atomicLoad(&state[TIED]);
    let take = atomicLoad(&state[TIES]);
    for (var j = lid; j < tied; j += WG) {
        atomicStore(&wg_hist[j], cands[j]);
    }
    workgroupBarrier();
    for (var j = lid; j < tied; j += WG) {
        let p = atomicLoad(&wg_hist[j]);
        var below = 0u;
        for (var i = 0u; i < tied; i++) {
            below += select(0u, 1u, atomicLoad(&wg_hist[i]) < p);
        }
        if (below + 1u == take) {
            atomicStore(&state[TIE_POS], p);
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        atomicStore(&state[MODE], 3u);
    }
}

// One streaming read of every segment, for the bandwidth floor: the XOR of
// the elements' bits into state[0].
@compute @workgroup_size(WG)
fn radix_read(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (lid == 0u) {
        atomicStore(&wg_count, 0u);
    }
    workgroupBarrier();
    var acc = 0u;
    var s = 0u;
    for (var t = wid.x; t < params.f; t += nwg.x) {
        s = segment_of(t, s);
        let seg = segments[params.base_lo + s];
        acc ^= read_tile(s, seg, t - seg.tile, lid);
    }
    atomicXor(&wg_count, acc);
    workgroupBarrier();
    if (lid == 0u) {
        atomicXor(&state[0], atomicLoad(&wg_count));
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
// block's budget; under mode 3, up to position TIE_POS). Pruned elements
// are counted per input.
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
    let tie_pos = atomicLoad(&state[TIE_POS]);
    var s = 0u;
    for (var t = wid.x; t < params.f; t += nwg.x) {
        s = segment_of(t, s);
        let seg = segments[params.base_lo + s];
        let pruned = masks_tile(s, seg, t - seg.tile, lid, cut, mode, tie_pos);
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

// The compact key of a score an earlier mask kept (`kept` non-zero), else 0.
fn kept_key(bits: u32, kept: u32) -> u32 {
    if (kept == 0u) {
        return 0u;
    }
    return compact(key_of(bits, params.flags));
}

// One score of radix_pass: adds its key's digit to the workgroup histogram
// when the key is in the bucket (every key in pass 0). Returns (1 if it is
// a NaN score, 1 if it was counted).
fn histogram_key(bits: u32, kept: bool, first: bool, prefix: u32, digits: u32) -> vec2<u32> {
    var key = 0u;
    var nan = 0u;
    if (kept) {
        key = compact(key_of(bits, params.flags));
        nan = select(0u, 1u, is_nan_bits(transformed(bits, params.flags)));
    }
    if (first || (key >> params.c) == prefix) {
        atomicAdd(&wg_hist[(key >> params.a) & digits], 1u);
        return vec2<u32>(nan, 1u);
    }
    return vec2<u32>(nan, 0u);
}

// Bit j of a mask word for a key: (equal to the cut, above it).
fn classify_key(key: u32, cut: u32, j: u32) -> vec2<u32> {
    let bit = 1u << j;
    if (key == cut) {
        return vec2<u32>(bit, 0u);
    }
    if (key > cut) {
        return vec2<u32>(0u, bit);
    }
    return vec2<u32>(0u);
}

// What follows is written once per slot: SLOT becomes the slot's number,
// and `histogram_tile`, `tie_counts_tile` and `masks_tile` (generated after
// it) call the copy of the segment's slot.
// @slot-begin

// Scores are read four at a time (`vec4<u32>`: the slot's binding is
// rounded up to whole quads); element i is component i % 4 of quad i / 4.
// The components are taken by name, never by a computed index, which some
// compilers turn into per-lane memory.

// Which of elements 4q .. 4q + 3 of the segment in slot SLOT an earlier
// mask kept (bits 0 to 3).
fn kept4_SLOT(seg: Segment, q: u32) -> u32 {
    if (seg.survivors == 0u) {
        return 15u;
    }
    return (survivors_SLOT[q >> 3u] >> ((q & 7u) * 4u)) & 15u;
}

// The compact keys of elements 4q .. 4q + 3 of the segment in slot SLOT (0
// where an earlier mask pruned the element; beyond the segment, whatever
// the buffer holds there).
fn key4_SLOT(seg: Segment, q: u32) -> vec4<u32> {
    let v = scores_SLOT[q];
    let kept = kept4_SLOT(seg, q);
    return vec4<u32>(
        kept_key(v.x, kept & 1u),
        kept_key(v.y, kept & 2u),
        kept_key(v.z, kept & 4u),
        kept_key(v.w, kept & 8u),
    );
}

// radix_pass over tile `tile` of the segment in slot SLOT: returns its NaN
// scores this thread read. With `write` (uniform), the keys histogrammed go
// to the candidate list with their positions.
fn histogram_tile_SLOT(seg: Segment, tile: u32, lid: u32, first: bool, prefix: u32,
                       digits: u32, write: bool) -> u32 {
    var tally = vec2<u32>(0u);
    // Bit 4r + c: component c of this thread's r-th quad was counted (a
    // thread reads at most TILE / WG = 32 elements of a tile).
    var counted = 0u;
    let end = min(tile * TILE + TILE, seg.len);
    let quads = (end + 3u) / 4u;
    var r = 0u;
    for (var q = tile * (TILE / 4u) + lid; q < quads; q += WG) {
        let v = scores_SLOT[q];
        let kept = kept4_SLOT(seg, q);
        let i = 4u * q;
        var t = histogram_key(v.x, (kept & 1u) != 0u, first, prefix, digits);
        tally += t;
        counted |= t.y << (4u * r);
        if (i + 1u < end) {
            t = histogram_key(v.y, (kept & 2u) != 0u, first, prefix, digits);
            tally += t;
            counted |= t.y << (4u * r + 1u);
        }
        if (i + 2u < end) {
            t = histogram_key(v.z, (kept & 4u) != 0u, first, prefix, digits);
            tally += t;
            counted |= t.y << (4u * r + 2u);
        }
        if (i + 3u < end) {
            t = histogram_key(v.w, (kept & 8u) != 0u, first, prefix, digits);
            tally += t;
            counted |= t.y << (4u * r + 3u);
        }
        r += 1u;
    }
    if (write) {
        // The counted elements again (from cache), now to their slots.
        var at = reserve(lid, tally.y);
        let room = (arrayLength(&cands) - CAND_BASE) / 2u;
        var left = counted;
        while (left != 0u && at < room) {
            let j = firstTrailingBit(left);
            left &= left - 1u;
            let q = tile * (TILE / 4u) + lid + (j / 4u) * WG;
            let c = j % 4u;
            let k = key4_SLOT(seg, q);
            cands[CAND_BASE + 2u * at] = select(select(k.x, k.y, c == 1u), select(k.z, k.w, c == 3u),
                                                c >= 2u);
            cands[CAND_BASE + 2u * at + 1u] = seg.block * TIE_ELEMENTS + 4u * q + c;
            at += 1u;
        }
    }
    return tally.x;
}

// radix_read over tile `tile` of the segment in slot SLOT: the XOR of the
// elements this thread read.
fn read_tile_SLOT(seg: Segment, tile: u32, lid: u32) -> u32 {
    var acc = vec4<u32>(0u);
    let end = min(tile * TILE + TILE, seg.len);
    let whole = end / 4u;
    for (var q = tile * (TILE / 4u) + lid; q < whole; q += WG) {
        acc ^= scores_SLOT[q];
    }
    // The segment's last, partial quad.
    if (whole * 4u < end && (whole - tile * (TILE / 4u)) % WG == lid) {
        let v = scores_SLOT[whole];
        let left = end - whole * 4u;
        acc.x ^= v.x;
        if (left > 1u) {
            acc.y ^= v.y;
        }
        if (left > 2u) {
            acc.z ^= v.z;
        }
    }
    return acc.x ^ acc.y ^ acc.z ^ acc.w;
}

// Bits of word w of the segment in slot SLOT whose key equals `cut`, and
// whose key is above it.
fn classify_SLOT(seg: Segment, w: u32, cut: u32) -> vec2<u32> {
    var bits = vec2<u32>(0u);
    let count = min(32u, seg.len - w * 32u);
    var kept = 0xffffffffu;
    if (seg.survivors != 0u) {
        kept = survivors_SLOT[w];
    }
    for (var j = 0u; j < count; j += 4u) {
        let v = scores_SLOT[w * 8u + j / 4u];
        bits |= classify_key(kept_key(v.x, kept & (1u << j)), cut, j);
        if (j + 1u < count) {
            bits |= classify_key(kept_key(v.y, kept & (2u << j)), cut, j + 1u);
        }
        if (j + 2u < count) {
            bits |= classify_key(kept_key(v.z, kept & (4u << j)), cut, j + 2u);
        }
        if (j + 3u < count) {
            bits |= classify_key(kept_key(v.w, kept & (8u << j)), cut, j + 3u);
        }
    }
    return bits;
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
fn masks_tile_SLOT(seg: Segment, tile: u32, lid: u32, cut_key: u32, mode: u32,
                   tie_pos: u32) -> u32 {
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
    } else if (mode == 3u && w * 32u < seg.len) {
        // Tied elements at positions up to tie_pos; the word's bit j is at
        // position first + j.
        let first = seg.block * TIE_ELEMENTS + w * 32u;
        if (tie_pos >= first + 31u) {
            cut = equal;
        } else if (tie_pos >= first) {
            cut = equal & ((2u << (tie_pos - first)) - 1u);
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
