// Grouped reductions in prunus_core's canonical order: the members of a unit
// (row-major within the unit) are folded sequentially in chunks of 256,
// starting from 0.0, and the chunk results are then folded sequentially.
//
// `reduce_fold` runs once per window of the tensor: one thread per (unit,
// chunk) continues its chunk's fold over the members inside the window, so a
// unit may span any number of windows. `reduce_finish` folds the chunks.
//
// Params: n = window length, base_lo = window start (flat index), a =
// grouping (0 rows, 1 columns, 2 blocks), b = rows, c = cols of the matrix
// view, d = block rows, e = block cols, f = reduction (0 sum, 1 L1, 2 sum of
// squares, 3 max-abs), g = chunks per unit, flags = units.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> state: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const CHUNK: u32 = 256u;

// The value one element contributes (Reduction::term).
fn term(bits: u32) -> f32 {
    switch params.f {
        case 0u: { return bitcast<f32>(bits); }
        case 2u: {
            let v = bitcast<f32>(bits);
            return bitcast<f32>(bitcast<u32>(v * v) | params.zero);
        }
        default: { return bitcast<f32>(bits & 0x7fffffffu); }
    }
}

// Reduction::combine on bits (a NaN result canonical). Max-abs compares bit patterns: every operand
// is non-negative, where bit order is value order (and a subnormal is never
// mistaken for zero).
fn combine(a: u32, b: u32) -> u32 {
    if (params.f == 3u) {
        if (is_nan_bits(a) || is_nan_bits(b)) {
            return 0x7fc00000u;
        }
        return max(a, b);
    }
    // A NaN sum is the canonical quiet NaN, as on the host.
    let s = bitcast<u32>(bitcast<f32>(a) + bitcast<f32>(b));
    if (is_nan_bits(s)) {
        return 0x7fc00000u;
    }
    return s;
}

// The block grid's columns.
fn grid_cols() -> u32 {
    return (params.c + params.e - 1u) / params.e;
}

// Members of unit u.
fn members(u: u32) -> u32 {
    switch params.a {
        case 0u: { return params.c; }
        case 1u: { return params.b; }
        default: {
            let gc = grid_cols();
            let bi = u / gc;
            let bj = u % gc;
            return min(params.d, params.b - bi * params.d) * min(params.e, params.c - bj * params.e);
        }
    }
}

// The flat index of member m of unit u.
fn flat(u: u32, m: u32) -> u32 {
    switch params.a {
        case 0u: { return u * params.c + m; }
        case 1u: { return m * params.c + u; }
        default: {
            let gc = grid_cols();
            let bi = u / gc;
            let bj = u % gc;
            let bw = min(params.e, params.c - bj * params.e);
            return (bi * params.d + m / bw) * params.c + bj * params.e + m % bw;
        }
    }
}

@compute @workgroup_size(WG)
fn reduce_fold(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let units = params.flags;
    let chunks = params.g;
    let lo = params.base_lo;
    let hi = lo + params.n;
    for (var p = gid.x; p < units * chunks; p += nwg.x * WG) {
        // Neighbouring threads take neighbouring columns of the same rows
        // (coalesced reads) for column units, neighbouring chunks of one
        // unit otherwise.
        var u = p / chunks;
        var q = p % chunks;
        if (params.a == 1u) {
            u = p % units;
            q = p / units;
        }
        let count = members(u);
        let first = q * CHUNK;
        if (first >= count) {
            continue;
        }
        let last = min(first + CHUNK, count);
        // Members' flat indices increase with m: skip chunks outside the window.
        if (flat(u, last - 1u) < lo || flat(u, first) >= hi) {
            continue;
        }
        let slot = u * chunks + q;
        var acc = state[slot];
        for (var m = first; m < last; m++) {
            let i = flat(u, m);
            if (i < lo) {
                continue;
            }
            if (i >= hi) {
                break;
            }
            acc = combine(acc, bitcast<u32>(term(x[i - lo])));
        }
        state[slot] = acc;
    }
}

@compute @workgroup_size(WG)
fn reduce_finish(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let units = params.flags;
    let chunks = params.g;
    for (var u = gid.x; u < units; u += nwg.x * WG) {
        let used = (members(u) + CHUNK - 1u) / CHUNK;
        var total = 0u;
        for (var q = 0u; q < used; q++) {
            total = combine(total, state[u * chunks + q]);
        }
        out[u] = total;
    }
}
