// Shared by every module of prunus-wgpu (compiled in front of each).
//
// Scores are read as raw u32 bit patterns and keys are computed with integer
// operations only, so a device that flushes subnormals or canonicalises NaNs
// still produces the reference backend's keys bit for bit.

const WG: u32 = 256u;

// The parameter block of every dispatch: what each word means is documented
// at each kernel. `zero` is always 0: OR-ing it into a product's bits keeps
// a compiler from fusing that product into a following add (an FMA would
// round differently from the reference).
struct Params {
    n: u32,
    flags: u32,
    base_lo: u32,
    base_hi: u32,
    a: u32,
    b: u32,
    c: u32,
    d: u32,
    e: u32,
    f: u32,
    g: u32,
    zero: u32,
}

// Bits of `Params.flags` for key rules.
const FLAG_ABS: u32 = 1u;
const FLAG_NAN_LOWEST: u32 = 2u;
const FLAG_SURVIVORS: u32 = 4u;

fn is_nan_bits(b: u32) -> bool {
    return (b & 0x7fffffffu) > 0x7f800000u;
}

// The score's bits after the rule's transform.
fn transformed(bits: u32, flags: u32) -> u32 {
    if ((flags & FLAG_ABS) != 0u) {
        return bits & 0x7fffffffu;
    }
    return bits;
}

// prunus_core::key::KeyRule::key on raw bits.
fn key_of(bits: u32, flags: u32) -> u32 {
    var b = transformed(bits, flags);
    if (is_nan_bits(b)) {
        if ((flags & FLAG_NAN_LOWEST) != 0u) {
            return 1u;
        }
        return 0xffffffffu;
    }
    if ((b & 0x7fffffffu) == 0u) {
        b = 0u;
    }
    if ((b & 0x80000000u) == 0u) {
        return b | 0x80000000u;
    }
    return ~b;
}

// a + b for 64-bit values held as (low, high) words.
fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let lo = a.x + b.x;
    return vec2<u32>(lo, a.y + b.y + select(0u, 1u, lo < a.x));
}

// a < b for 64-bit values held as (low, high) words.
fn less64(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.y < b.y || (a.y == b.y && a.x < b.x);
}

// a - b for a >= b.
fn sub64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(a.x - b.x, a.y - b.y - select(0u, 1u, a.x < b.x));
}
