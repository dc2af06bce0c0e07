// Selection over scores that never leave the device: key histograms, key
// counts, threshold masks with the lowest-index tie-break, range masks with
// their candidates, key samples and N:M masks.
//
// Every kernel runs over one window of one input: `scores` and `survivors`
// are bound at the window, `n` is its length, (base_lo, base_hi) its first
// element's index within the input, and `flags` the key rule (FLAG_*).
// Mask words are written whole, one thread per 32 elements, so no two
// threads ever write the same word.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> scores: array<u32>;
@group(0) @binding(2) var<storage, read> survivors: array<u32>;
@group(0) @binding(3) var<storage, read_write> words: array<u32>;
@group(0) @binding(4) var<storage, read_write> counts: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> extra: array<u32>;

// Bins of a key histogram.
const BINS: u32 = 65536u;

var<workgroup> wg_count: array<atomic<u32>, 2>;
var<workgroup> wg_words: array<u32, 256>;

fn alive(i: u32) -> bool {
    if ((params.flags & FLAG_SURVIVORS) == 0u) {
        return true;
    }
    return ((survivors[i >> 5u] >> (i & 31u)) & 1u) != 0u;
}

// The key of element i of the window (KEY_PRUNED when an earlier mask
// pruned it).
fn key_at(i: u32) -> u32 {
    if (!alive(i)) {
        return 0u;
    }
    return key_of(scores[i], params.flags);
}

// The key of element i and whether it is a NaN score that an earlier mask
// keeps, from one read of the score and of the survivor word.
struct Keyed {
    key: u32,
    nan: bool,
}

fn keyed_at(i: u32) -> Keyed {
    if (!alive(i)) {
        return Keyed(0u, false);
    }
    let bits = scores[i];
    return Keyed(key_of(bits, params.flags), is_nan_bits(transformed(bits, params.flags)));
}

// Adds a thread's two counts into counts[slot] and counts[slot + 1], one
// atomic per workgroup. Must be called in uniform control flow.
fn flush_counts(lid: u32, first: u32, second: u32, slot: u32) {
    if (lid == 0u) {
        atomicStore(&wg_count[0], 0u);
        atomicStore(&wg_count[1], 0u);
    }
    workgroupBarrier();
    if (first > 0u) {
        atomicAdd(&wg_count[0], first);
    }
    if (second > 0u) {
        atomicAdd(&wg_count[1], second);
    }
    workgroupBarrier();
    if (lid == 0u) {
        let a = atomicLoad(&wg_count[0]);
        let b = atomicLoad(&wg_count[1]);
        if (a > 0u) {
            atomicAdd(&counts[slot], a);
        }
        if (b > 0u) {
            atomicAdd(&counts[slot + 1u], b);
        }
    }
}

// Histogram of the window's keys into counts[0..BINS), its NaN count into
// counts[BINS + c]. a: 0 for the high-half window (bin = key >> 16), 1 for
// a low-half window of keys whose high half is b (bin = key & 0xffff).
@compute @workgroup_size(WG)
fn histogram(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    var nan = 0u;
    for (var i = gid.x; i < params.n; i += nwg.x * WG) {
        let e = keyed_at(i);
        let k = e.key;
        if (e.nan) {
            nan += 1u;
        }
        if (params.a == 0u) {
            atomicAdd(&counts[k >> 16u], 1u);
        } else if ((k >> 16u) == params.b) {
            atomicAdd(&counts[k & 0xffffu], 1u);
        }
    }
    flush_counts(lid, nan, 0u, BINS + params.c);
}

// Keys below a and equal to a, into counts[c] and counts[c + 1].
@compute @workgroup_size(WG)
fn count_keys(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    var below = 0u;
    var equal = 0u;
    for (var i = gid.x; i < params.n; i += nwg.x * WG) {
        let k = key_at(i);
        below += select(0u, 1u, k < params.a);
        equal += select(0u, 1u, k == params.a);
    }
    flush_counts(lid, below, equal, params.c);
}

// Bits of word w's elements whose key equals `key`, and whose key is at
// least `key` but not equal (kept whatever the tie rank).
fn classify(w: u32, key: u32) -> vec2<u32> {
    var equal = 0u;
    var above = 0u;
    let first = w * 32u;
    let last = min(first + 32u, params.n);
    for (var i = first; i < last; i++) {
        let k = key_at(i);
        let bit = 1u << (i - first);
        if (k == key) {
            equal |= bit;
        } else if (k > key) {
            above |= bit;
        }
    }
    return vec2<u32>(equal, above);
}

// Tie-block counts: extra[d + b] = elements of tie block b (1024 elements,
// 32 words) of the window whose key equals a.
@compute @workgroup_size(WG)
fn tie_counts(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n_words = (params.n + 31u) / 32u;
    let tiles = (n_words + WG - 1u) / WG;
    for (var t = wid.x; t < tiles; t += nwg.x) {
        let w = t * WG + lid;
        var c = 0u;
        if (w < n_words) {
            c = countOneBits(classify(w, params.a).x);
        }
        wg_words[lid] = c;
        workgroupBarrier();
        if ((lid & 31u) == 0u && w < n_words) {
            var s = 0u;
            for (var j = lid; j < lid + 32u; j++) {
                s += wg_words[j];
            }
            extra[params.d + w / 32u] = s;
        }
        workgroupBarrier();
    }
}

var<workgroup> wg_sums: array<vec2<u32>, 256>;

// Turns the tie-block counts extra[0..a) of the whole call (every input's
// blocks, in sequence order) into budgets: how many of each block's tied
// elements are pruned, the first (b, c) = ties (low, high words) of the
// sequence. One workgroup.
@compute @workgroup_size(WG)
fn tie_budgets(@builtin(local_invocation_index) lid: u32) {
    let blocks = params.a;
    let ties = vec2<u32>(params.b, params.c);
    let per = (blocks + WG - 1u) / WG;
    let first = min(lid * per, blocks);
    let last = min(first + per, blocks);
    var sum = vec2<u32>(0u, 0u);
    for (var j = first; j < last; j++) {
        sum = add64(sum, vec2<u32>(extra[j], 0u));
    }
    wg_sums[lid] = sum;
    workgroupBarrier();
    if (lid == 0u) {
        var run = vec2<u32>(0u, 0u);
        for (var j = 0u; j < WG; j++) {
            let s = wg_sums[j];
            wg_sums[j] = run;
            run = add64(run, s);
        }
    }
    workgroupBarrier();
    var before = wg_sums[lid];
    for (var j = first; j < last; j++) {
        let c = extra[j];
        var budget = 0u;
        if (less64(before, ties)) {
            let left = sub64(ties, before);
            budget = select(min(left.x, c), c, left.y > 0u);
        }
        extra[j] = budget;
        before = add64(before, vec2<u32>(c, 0u));
    }
}

// Threshold masks: keys below a pruned, keys above kept, tied keys pruned
// while their rank in the sequence is below the tie budget. b: 0 prunes no
// tied element, 1 every one, 2 follows the budgets extra[d + block]. Tied
// elements pruned are counted into counts[c].
@compute @workgroup_size(WG)
fn threshold_masks(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n_words = arrayLength(&words);
    let tiles = (n_words + WG - 1u) / WG;
    var pruned_ties = 0u;
    for (var t = wid.x; t < tiles; t += nwg.x) {
        let w = t * WG + lid;
        var cls = vec2<u32>(0u, 0u);
        if (w * 32u < params.n) {
            cls = classify(w, params.a);
        }
        let equal = cls.x;
        wg_words[lid] = countOneBits(equal);
        workgroupBarrier();
        var cut = 0u;
        if (params.b == 1u) {
            cut = equal;
        } else if (params.b == 2u && w * 32u < params.n) {
            // Tied elements of this block before this word.
            var rank = 0u;
            for (var j = lid & ~31u; j < lid; j++) {
                rank += wg_words[j];
            }
            let budget = extra[params.d + w / 32u];
            var take = select(0u, budget - rank, budget > rank);
            var left = equal;
            while (take > 0u && left != 0u) {
                let low = left & (~left + 1u);
                cut |= low;
                left ^= low;
                take -= 1u;
            }
        }
        pruned_ties += countOneBits(cut);
        if (w < n_words) {
            words[w] = cls.y | (equal & ~cut);
        }
        workgroupBarrier();
    }
    flush_counts(lid, pruned_ties, 0u, params.c);
}

// Range masks: keys below a pruned, the rest kept; elements with a key in
// [a, b] are appended to extra as (input e, key, index low, index high)
// records while fewer than f are stored; counts[0] counts them all,
// counts[1 + 2c] the window's NaN scores and counts[2 + 2c] its kept
// elements.
@compute @workgroup_size(WG)
fn range_masks(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n_words = arrayLength(&words);
    let base = vec2<u32>(params.base_lo, params.base_hi);
    var nan = 0u;
    var kept = 0u;
    for (var w = gid.x; w < n_words; w += nwg.x * WG) {
        var keep = 0u;
        var hits = 0u;
        let first = w * 32u;
        let last = min(first + 32u, params.n);
        for (var i = first; i < last; i++) {
            let e = keyed_at(i);
            let k = e.key;
            if (e.nan) {
                nan += 1u;
            }
            if (k >= params.a) {
                keep |= 1u << (i - first);
                if (k <= params.b) {
                    hits |= 1u << (i - first);
                }
            }
        }
        words[w] = keep;
        kept += countOneBits(keep);
        if (hits != 0u) {
            var slot = atomicAdd(&counts[0], countOneBits(hits));
            var left = hits;
            while (left != 0u) {
                let j = firstTrailingBit(left);
                left &= left - 1u;
                if (slot < params.f) {
                    let index = add64(base, vec2<u32>(first + j, 0u));
                    extra[slot * 4u] = params.e;
                    extra[slot * 4u + 1u] = key_at(first + j);
                    extra[slot * 4u + 2u] = index.x;
                    extra[slot * 4u + 3u] = index.y;
                }
                slot += 1u;
            }
        }
    }
    flush_counts(lid, nan, kept, 1u + 2u * params.c);
}

// Key samples: element i (window position) is sampled when
// (a_phase + i) mod a < b, with c = the window's phase (its start mod a) and
// the key written to words[d + q * b + r - e], (q, r) being the quotient and
// remainder and e = min(c, b): the samples of the input before the window.
@compute @workgroup_size(WG)
fn sample_keys(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < params.n; i += nwg.x * WG) {
        let p = params.c + i;
        let r = p % params.a;
        if (r < params.b) {
            words[params.d + (p / params.a) * params.b + r - params.e] = key_at(i);
        }
    }
}

// N:M masks: in every group of a consecutive elements (the window starts at
// a group boundary), the a - b smallest by (key, index) are pruned. NaN
// scores are counted into counts[c].
@compute @workgroup_size(WG)
fn n_of_m_masks(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n_words = arrayLength(&words);
    let m = params.a;
    let drop = params.a - params.b;
    var nan = 0u;
    for (var w = gid.x; w < n_words; w += nwg.x * WG) {
        var keep = 0u;
        let first = w * 32u;
        let last = min(first + 32u, params.n);
        for (var i = first; i < last; i++) {
            let e = keyed_at(i);
            let k = e.key;
            if (e.nan) {
                nan += 1u;
            }
            let g = (i / m) * m;
            var rank = 0u;
            for (var j = g; j < g + m; j++) {
                let kj = key_at(j);
                rank += select(0u, 1u, kj < k || (kj == k && j < i));
            }
            if (rank >= drop) {
                keep |= 1u << (i - first);
            }
        }
        words[w] = keep;
    }
    flush_counts(lid, nan, 0u, params.c);
}
