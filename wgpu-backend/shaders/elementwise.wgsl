// Elementwise maps, seeded random values and mask application, one thread
// per element with a grid stride. `n` is the window's length; `x`, `y` and
// `out` are bound at the window.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> y: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

fn f(i: u32) -> f32 {
    return bitcast<f32>(x[i]);
}

fn g(i: u32) -> f32 {
    return bitcast<f32>(y[i]);
}

@compute @workgroup_size(WG)
fn unary_abs(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < params.n; i += nwg.x * WG) {
        out[i] = x[i] & 0x7fffffffu;
    }
}

@compute @workgroup_size(WG)
fn unary_neg(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < params.n; i += nwg.x * WG) {
        out[i] = x[i] ^ 0x80000000u;
    }
}

@compute @workgroup_size(WG)
fn unary_square(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < params.n; i += nwg.x * WG) {
        out[i] = bitcast<u32>(f(i) * f(i));
    }
}

// a: the factor's bits.
@compute @workgroup_size(WG)
fn unary_scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let factor = bitcast<f32>(params.a);
    for (var i = gid.x; i < params.n; i += nwg.x * WG) {
        out[i] = bitcast<u32>(f(i) * factor);
    }
}

@compute @workgroup_size(WG)
fn binary_add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < params.n; i += nwg.x * WG) {
        out[i] = bitcast<u32>(f(i) + g(i));
    }
}

@compute @workgroup_size(WG)
fn binary_sub(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < params.n; i += nwg.x * WG) {
        out[i] = bitcast<u32>(f(i) - g(i));
    }
}

@compute @workgroup_size(WG)
fn binary_mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < params.n; i += nwg.x * WG) {
        out[i] = bitcast<u32>(f(i) * g(i));
    }
}

// prunus_core::random::mix32.
fn mix32(v: u32) -> u32 {
    var h = v;
    h ^= h >> 16u;
    h *= 0x7feb352du;
    h ^= h >> 15u;
    h *= 0x846ca68bu;
    h ^= h >> 16u;
    return h;
}

// prunus_core::random::uniform. a: the hash of (seed, stream), computed on
// the host; base: the window's first index.
@compute @workgroup_size(WG)
fn random_uniform(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let base = vec2<u32>(params.base_lo, params.base_hi);
    for (var i = gid.x; i < params.n; i += nwg.x * WG) {
        let index = add64(base, vec2<u32>(i, 0u));
        let h = mix32(mix32(params.a ^ index.x) ^ index.y);
        out[i] = bitcast<u32>(f32(h >> 8u) * (1.0 / 16777216.0));
    }
}

// Zeroes the elements of `out` (the weights) whose bit in the mask words `y`
// is clear.
@compute @workgroup_size(WG)
fn apply_mask(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var i = gid.x; i < params.n; i += nwg.x * WG) {
        if (((y[i >> 5u] >> (i & 31u)) & 1u) == 0u) {
            out[i] = 0u;
        }
    }
}
