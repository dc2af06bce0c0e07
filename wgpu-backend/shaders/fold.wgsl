// Adds a window's 32-bit histogram into the call's 64-bit one (held as
// (low, high) word pairs) and clears it for the next window.

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> bins: array<u32>;
@group(0) @binding(2) var<storage, read_write> total: array<u32>;

@compute @workgroup_size(WG)
fn fold_histogram(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    for (var b = gid.x; b < params.n; b += nwg.x * WG) {
        let sum = add64(vec2<u32>(total[2u * b], total[2u * b + 1u]), vec2<u32>(bins[b], 0u));
        total[2u * b] = sum.x;
        total[2u * b + 1u] = sum.y;
        bins[b] = 0u;
    }
}
