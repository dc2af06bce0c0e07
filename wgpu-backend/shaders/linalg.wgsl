// Dense primitives of the second-order methods. One thread per output
// element, accumulating in the reference backend's order; a device may fuse
// multiply-adds, so results agree with the reference up to rounding.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// out = a x for a of [m, n] (params.a = m, params.b = n) and x = b.
@compute @workgroup_size(WG)
fn gemv(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = params.a;
    let n = params.b;
    for (var i = gid.x; i < m; i += nwg.x * WG) {
        var acc = 0.0;
        for (var j = 0u; j < n; j++) {
            acc += a[i * n + j] * b[j];
        }
        out[i] = acc;
    }
}

// out = op(a) op(b), [m, k] x [k, n]: params.a = m, b = k, c = n, d = a
// transposed, e = b transposed, f = a's stored columns, g = b's stored
// columns. Each workgroup computes 16 x 16 tiles of the output (looping over
// tiles with a grid stride), staging 16 x 16 tiles of both operands in
// workgroup memory; every output still sums p = 0, 1, ..., k - 1 in order.

var<workgroup> tile_a: array<f32, 256>;
var<workgroup> tile_b: array<f32, 256>;

fn a_at(i: u32, p: u32) -> f32 {
    if (params.d == 0u) {
        return a[i * params.f + p];
    }
    return a[p * params.f + i];
}

fn b_at(p: u32, j: u32) -> f32 {
    if (params.e == 0u) {
        return b[p * params.g + j];
    }
    return b[j * params.g + p];
}

@compute @workgroup_size(WG)
fn gemm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let m = params.a;
    let k = params.b;
    let n = params.c;
    let tiles_n = (n + 15u) / 16u;
    let tiles = ((m + 15u) / 16u) * tiles_n;
    let li = lid / 16u;
    let lj = lid % 16u;
    for (var t = wid.x; t < tiles; t += nwg.x) {
        let i = (t / tiles_n) * 16u + li;
        let j = (t % tiles_n) * 16u + lj;
        var acc = 0.0;
        for (var p0 = 0u; p0 < k; p0 += 16u) {
            var x = 0.0;
            if (i < m && p0 + lj < k) {
                x = a_at(i, p0 + lj);
            }
            var y = 0.0;
            if (p0 + li < k && j < n) {
                y = b_at(p0 + li, j);
            }
            tile_a[lid] = x;
            tile_b[lid] = y;
            workgroupBarrier();
            let last = min(16u, k - p0);
            for (var q = 0u; q < last; q++) {
                acc += tile_a[li * 16u + q] * tile_b[q * 16u + lj];
            }
            workgroupBarrier();
        }
        if (i < m && j < n) {
            out[i * n + j] = acc;
        }
    }
}

// out[i, j] += alpha x[i] y[j] for out of [m, n]: params.a = m, b = n, c =
// alpha's bits; x = a, y = b.
@compute @workgroup_size(WG)
fn rank1_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = params.a;
    let n = params.b;
    let alpha = bitcast<f32>(params.c);
    for (var o = gid.x; o < m * n; o += nwg.x * WG) {
        out[o] += alpha * a[o / n] * b[o % n];
    }
}

var<workgroup> partial: array<f32, 256>;

// Partial dot products of one window: out[c + workgroup] = the workgroup's
// share of sum a[i] b[i], i < n.
@compute @workgroup_size(WG)
fn dot_partial(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    var acc = 0.0;
    for (var i = gid.x; i < params.n; i += nwg.x * WG) {
        acc += a[i] * b[i];
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        out[params.c + wid.x] = partial[0];
    }
}

// out[0] = sum of a[0..n) in order (the partials of dot_partial).
@compute @workgroup_size(1)
fn sum_partials() {
    var acc = 0.0;
    for (var i = 0u; i < params.n; i++) {
        acc += a[i];
    }
    out[0] = acc;
}

var<workgroup> folded: atomic<u32>;

// One streaming read of a window, for the bandwidth floor: the XOR of every
// element's bits, per workgroup, into out[c + workgroup] (as bits).
@compute @workgroup_size(WG)
fn read_pass(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    if (lid == 0u) {
        atomicStore(&folded, 0u);
    }
    workgroupBarrier();
    var acc = 0u;
    for (var i = gid.x; i < params.n; i += nwg.x * WG) {
        acc ^= bitcast<u32>(a[i]);
    }
    atomicXor(&folded, acc);
    workgroupBarrier();
    if (lid == 0u) {
        out[params.c + wid.x] = bitcast<f32>(atomicLoad(&folded));
    }
}
