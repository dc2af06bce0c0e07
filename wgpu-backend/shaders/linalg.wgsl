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
// columns.
@compute @workgroup_size(WG)
fn gemm(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let m = params.a;
    let k = params.b;
    let n = params.c;
    for (var o = gid.x; o < m * n; o += nwg.x * WG) {
        let i = o / n;
        let j = o % n;
        var acc = 0.0;
        for (var p = 0u; p < k; p++) {
            var x: f32;
            if (params.d == 0u) {
                x = a[i * params.f + p];
            } else {
                x = a[p * params.f + i];
            }
            var y: f32;
            if (params.e == 0u) {
                y = b[p * params.g + j];
            } else {
                y = b[j * params.g + p];
            }
            acc += x * y;
        }
        out[o] = acc;
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
