// Dense f32 linear algebra of the second-order methods (prunus_core::Dense):
// a register-tiled GEMM, and the pieces of a blocked Cholesky factorisation
// and of blocked triangular solves with many right-hand sides. Matrices are
// row-major with a leading dimension (`ld_*`, in elements) and an element
// offset into their buffer; `src_a` and `src_b` (A and B, which may be the
// same buffer) are read-only, `dst` is updated in place.
// Every sum runs in a fixed order, so a device gives the same bits on every
// run (which order, and whether products are fused into adds, is the
// device's own: results agree with f64 up to f32 rounding).

struct Dense {
    m: u32,
    k: u32,
    n: u32,
    flags: u32,
    off_a: u32,
    ld_a: u32,
    off_b: u32,
    ld_b: u32,
    off_c: u32,
    ld_c: u32,
    alpha: f32,
    beta: f32,
    status: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Dense;
@group(0) @binding(1) var<storage, read> src_a: array<f32>;
@group(0) @binding(2) var<storage, read> src_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

// Bits of `p.flags`.
const TRANS_A: u32 = 1u;
const TRANS_B: u32 = 2u;
const A_IN_DST: u32 = 4u;
const B_IN_DST: u32 = 8u;
const LOWER_TILES: u32 = 16u;

// GEMM tiling: a workgroup computes a 64 x 64 tile of C; thread (ti, tj)
// owns rows ti + 16 r and columns tj + 16 c (r, c < 4), so that neighbouring
// threads read neighbouring words of workgroup memory and of C.
const TILE: u32 = 64u;
const DEPTH: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [DEPTH][TILE]: op(A)(i0 + i, p0 + q) at q * TILE + i
var<workgroup> tile_b: array<f32, 1024>; // [DEPTH][TILE]: op(B)(p0 + q, j0 + j) at q * TILE + j

// op(A)(i, q): A stored [m, k] (or [k, m] when transposed).
fn a_at(i: u32, q: u32) -> f32 {
    var index = p.off_a + i * p.ld_a + q;
    if ((p.flags & TRANS_A) != 0u) {
        index = p.off_a + q * p.ld_a + i;
    }
    if ((p.flags & A_IN_DST) != 0u) {
        return dst[index];
    }
    return src_a[index];
}

// op(B)(q, j): B stored [k, n] (or [n, k] when transposed).
fn b_at(q: u32, j: u32) -> f32 {
    var index = p.off_b + q * p.ld_b + j;
    if ((p.flags & TRANS_B) != 0u) {
        index = p.off_b + j * p.ld_b + q;
    }
    if ((p.flags & B_IN_DST) != 0u) {
        return dst[index];
    }
    return src_b[index];
}

// C = beta C + alpha op(A) op(B), C of [m, n] in dst, inner dimension k.
// beta = 0 never reads C. With LOWER_TILES, tiles wholly above the diagonal
// are skipped (the Cholesky trailing update needs only the lower triangle).
// A and B may be read from dst only where C does not overlap them.
@compute @workgroup_size(256)
fn gemm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tiles_n = (p.n + TILE - 1u) / TILE;
    let tiles = ((p.m + TILE - 1u) / TILE) * tiles_n;
    let ti = lid / 16u;
    let tj = lid % 16u;
    // Which element of the 64 x 16 operand tiles this thread stages: along
    // the stored rows, so that neighbouring threads read neighbouring words.
    let a_rows_contiguous = (p.flags & TRANS_A) == 0u;
    let b_rows_contiguous = (p.flags & TRANS_B) != 0u;
    for (var t = wid.x; t < tiles; t += nwg.x) {
        let i0 = (t / tiles_n) * TILE;
        let j0 = (t % tiles_n) * TILE;
        if ((p.flags & LOWER_TILES) != 0u && j0 > i0 + TILE - 1u) {
            continue;
        }
        var acc: array<f32, 16>;
        for (var p0 = 0u; p0 < p.k; p0 += DEPTH) {
            for (var r = 0u; r < 4u; r++) {
                let e = lid + 256u * r;
                var i = e / DEPTH;
                var q = e % DEPTH;
                if (!a_rows_contiguous) {
                    i = e % TILE;
                    q = e / TILE;
                }
                var x = 0.0;
                if (i0 + i < p.m && p0 + q < p.k) {
                    x = a_at(i0 + i, p0 + q);
                }
                tile_a[q * TILE + i] = x;
                var j = e % TILE;
                var q2 = e / TILE;
                if (b_rows_contiguous) {
                    j = e / DEPTH;
                    q2 = e % DEPTH;
                }
                var y = 0.0;
                if (j0 + j < p.n && p0 + q2 < p.k) {
                    y = b_at(p0 + q2, j0 + j);
                }
                tile_b[q2 * TILE + j] = y;
            }
            workgroupBarrier();
            let depth = min(DEPTH, p.k - p0);
            for (var q = 0u; q < depth; q++) {
                var av: array<f32, 4>;
                var bv: array<f32, 4>;
                for (var r = 0u; r < 4u; r++) {
                    av[r] = tile_a[q * TILE + ti + 16u * r];
                    bv[r] = tile_b[q * TILE + tj + 16u * r];
                }
                for (var r = 0u; r < 4u; r++) {
                    for (var c = 0u; c < 4u; c++) {
                        acc[r * 4u + c] += av[r] * bv[c];
                    }
                }
            }
            workgroupBarrier();
        }
        for (var r = 0u; r < 4u; r++) {
            let i = i0 + ti + 16u * r;
            for (var c = 0u; c < 4u; c++) {
                let j = j0 + tj + 16u * c;
                if (i < p.m && j < p.n) {
                    let o = p.off_c + i * p.ld_c + j;
                    var v = p.alpha * acc[r * 4u + c];
                    if (p.beta != 0.0) {
                        v += p.beta * dst[o];
                    }
                    dst[o] = v;
                }
            }
        }
    }
}

// The large GEMM: a workgroup computes a 128 x 128 tile of C, thread (ti,
// tj) owning rows ti + 16 r and columns tj + 16 c (r, c < 8): 64 products
// per 16 words read from workgroup memory, where `gemm` does 16 per 8.
// Every output sums its products in the same order as in `gemm` (depth
// blocks of 16, ascending), so both give the same bits on a device that
// compiles them alike.
const LARGE: u32 = 128u;

var<workgroup> large_a: array<f32, 2048>; // [DEPTH][LARGE]
var<workgroup> large_b: array<f32, 2048>; // [DEPTH][LARGE]

@compute @workgroup_size(256)
fn gemm_large(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tiles_n = (p.n + LARGE - 1u) / LARGE;
    let tiles = ((p.m + LARGE - 1u) / LARGE) * tiles_n;
    let ti = lid / 16u;
    let tj = lid % 16u;
    let a_rows_contiguous = (p.flags & TRANS_A) == 0u;
    let b_rows_contiguous = (p.flags & TRANS_B) != 0u;
    for (var t = wid.x; t < tiles; t += nwg.x) {
        let i0 = (t / tiles_n) * LARGE;
        let j0 = (t % tiles_n) * LARGE;
        if ((p.flags & LOWER_TILES) != 0u && j0 > i0 + LARGE - 1u) {
            continue;
        }
        var acc: array<f32, 64>;
        for (var p0 = 0u; p0 < p.k; p0 += DEPTH) {
            for (var r = 0u; r < 8u; r++) {
                let e = lid + 256u * r;
                var i = e / DEPTH;
                var q = e % DEPTH;
                if (!a_rows_contiguous) {
                    i = e % LARGE;
                    q = e / LARGE;
                }
                var x = 0.0;
                if (i0 + i < p.m && p0 + q < p.k) {
                    x = a_at(i0 + i, p0 + q);
                }
                large_a[q * LARGE + i] = x;
                var j = e % LARGE;
                var q2 = e / LARGE;
                if (b_rows_contiguous) {
                    j = e / DEPTH;
                    q2 = e % DEPTH;
                }
                var y = 0.0;
                if (j0 + j < p.n && p0 + q2 < p.k) {
                    y = b_at(p0 + q2, j0 + j);
                }
                large_b[q2 * LARGE + j] = y;
            }
            workgroupBarrier();
            let depth = min(DEPTH, p.k - p0);
            for (var q = 0u; q < depth; q++) {
                var av: array<f32, 8>;
                var bv: array<f32, 8>;
                for (var r = 0u; r < 8u; r++) {
                    av[r] = large_a[q * LARGE + ti + 16u * r];
                    bv[r] = large_b[q * LARGE + tj + 16u * r];
                }
                for (var r = 0u; r < 8u; r++) {
                    for (var c = 0u; c < 8u; c++) {
                        acc[r * 8u + c] += av[r] * bv[c];
                    }
                }
            }
            workgroupBarrier();
        }
        for (var r = 0u; r < 8u; r++) {
            let i = i0 + ti + 16u * r;
            for (var c = 0u; c < 8u; c++) {
                let j = j0 + tj + 16u * c;
                if (i < p.m && j < p.n) {
                    let o = p.off_c + i * p.ld_c + j;
                    var v = p.alpha * acc[r * 8u + c];
                    if (p.beta != 0.0) {
                        v += p.beta * dst[o];
                    }
                    dst[o] = v;
                }
            }
        }
    }
}

// Cholesky panel width: the diagonal block is factored in workgroup memory.
const PANEL: u32 = 32u;

var<workgroup> block: array<f32, 1024>; // PANEL x PANEL
var<workgroup> failed: u32;

// A pivot that is NaN, zero or negative (tested on its bits: a device may
// assume arithmetic never meets a NaN).
fn bad_pivot(d: f32) -> bool {
    let bits = bitcast<u32>(d);
    return is_nan_bits(bits) || (bits & 0x7fffffffu) == 0u || (bits & 0x80000000u) != 0u;
}

// Factors the diagonal block [k0, k0 + b) of the n x n matrix in dst (k0 =
// off_a, b = k, n = ld_c; b <= PANEL) in place, its strictly lower part
// already updated by earlier panels. The first bad pivot of the whole
// factorisation is recorded at dst[status] as pivot + 1 (0 = none yet).
@compute @workgroup_size(256)
fn potrf_block(@builtin(local_invocation_index) lid: u32) {
    let k0 = p.off_a;
    let b = p.k;
    let n = p.ld_c;
    for (var e = lid; e < b * b; e += 256u) {
        block[e] = dst[(k0 + e / b) * n + k0 + e % b];
    }
    if (lid == 0u) {
        failed = b;
    }
    workgroupBarrier();
    for (var j = 0u; j < b; j++) {
        if (lid == 0u) {
            var d = block[j * b + j];
            for (var q = 0u; q < j; q++) {
                d -= block[j * b + q] * block[j * b + q];
            }
            if (bad_pivot(d) && failed == b) {
                failed = j;
            }
            block[j * b + j] = sqrt(d);
        }
        workgroupBarrier();
        let i = lid;
        if (i > j && i < b) {
            var s = block[i * b + j];
            for (var q = 0u; q < j; q++) {
                s -= block[i * b + q] * block[j * b + q];
            }
            block[i * b + j] = s / block[j * b + j];
        }
        workgroupBarrier();
    }
    for (var e = lid; e < b * b; e += 256u) {
        if (e % b <= e / b) {
            dst[(k0 + e / b) * n + k0 + e % b] = block[e];
        }
    }
    if (lid == 0u && failed < b && dst[p.status] == 0.0) {
        dst[p.status] = f32(k0 + failed + 1u);
    }
}

// The panel below a factored diagonal block: every row i in [k0 + b, n) of
// columns [k0, k0 + b) becomes x L_kk⁻ᵀ (k0 = off_a, b = k, n = ld_c).
@compute @workgroup_size(256)
fn potrf_panel(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k0 = p.off_a;
    let b = p.k;
    let n = p.ld_c;
    for (var i = k0 + b + gid.x; i < n; i += nwg.x * 256u) {
        for (var j = k0; j < k0 + b; j++) {
            var s = dst[i * n + j];
            for (var q = k0; q < j; q++) {
                s -= dst[i * n + q] * dst[j * n + q];
            }
            dst[i * n + j] = s / dst[j * n + j];
        }
    }
}

// One diagonal block of a triangular solve with many right-hand sides: every
// row x of the m x n matrix in dst (ld n) gets its columns [k0, k0 + b)
// solved against the n x n lower factor L in src_a: forward with L_kk (x ←
// x L_kkᵀ⁻¹, for L⁻¹ x) or, with TRANS_A, backward (x ← x L_kk⁻¹, for
// L⁻ᵀ x). k0 = off_a, b = k. Columns outside the block were already updated.
@compute @workgroup_size(256)
fn trsm_block(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let k0 = p.off_a;
    let b = p.k;
    let n = p.n;
    let backward = (p.flags & TRANS_A) != 0u;
    for (var r = gid.x; r < p.m; r += nwg.x * 256u) {
        let row = r * n;
        for (var t = 0u; t < b; t++) {
            if (!backward) {
                let j = k0 + t;
                var s = dst[row + j];
                for (var q = k0; q < j; q++) {
                    s -= dst[row + q] * src_a[j * n + q];
                }
                dst[row + j] = s / src_a[j * n + j];
            } else {
                let j = k0 + b - 1u - t;
                var s = dst[row + j];
                for (var q = j + 1u; q < k0 + b; q++) {
                    s -= dst[row + q] * src_a[q * n + j];
                }
                dst[row + j] = s / src_a[j * n + j];
            }
        }
    }
}

// Zeroes the strictly upper triangle of the n x n matrix in dst (n = n).
@compute @workgroup_size(256)
fn zero_upper(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = p.n;
    for (var o = gid.x; o < n * n; o += nwg.x * 256u) {
        if (o % n > o / n) {
            dst[o] = 0.0;
        }
    }
}
