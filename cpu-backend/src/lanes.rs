//! Hand-vectorised block kernels, one implementation per instruction set,
//! for the passes that dominate a selection (the range and threshold mask
//! passes). Loops written for the auto-vectoriser turn a compare into a mask
//! word poorly (through bytes and a multiply); these use the processor's
//! own compare-to-bitmask instructions: `movmskps` on SSE2 and AVX2, mask
//! registers on AVX-512.
//!
//! All of it is safe code: the intrinsics of a statically enabled feature
//! (SSE2 on x86-64) are safe to call, and those of AVX2 and AVX-512 are
//! reached through [`pulp`]'s tokens, whose existence proves the processor
//! has the features. Every implementation computes the same words as
//! [`Portable`], which the tests check.

use crate::keys::{BLOCK, INF_BITS, pack};

/// A way to run the block kernels: a zero-sized proof of an instruction set.
pub(crate) trait Lanes: Copy + Send + Sync {
    /// For 64 values whose bits with the sign cleared are `b_i`, and bounds
    /// `lo`, `hi`, `top` in `0..=0x7FFF_FFFF`: the word whose bit `i` says
    /// `lo <= b_i <= top`, and whether any `b_i` lies in `lo..=hi` or is a
    /// NaN (above [`INF_BITS`]).
    fn range_block(self, xs: &[f32; BLOCK], lo: u32, hi: u32, top: u32) -> (u64, bool);
}

/// Plain loops, for targets without a hand-written kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl Lanes for Portable {
    #[inline(always)]
    fn range_block(self, xs: &[f32; BLOCK], lo: u32, hi: u32, top: u32) -> (u64, bool) {
        let mut flags = [0u8; BLOCK];
        let mut any = 0u32;
        for (f, &v) in flags.iter_mut().zip(xs) {
            let b = v.to_bits() & 0x7FFF_FFFF;
            *f = (b >= lo && b <= top) as u8;
            any |= ((b >= lo && b <= hi) | (b > INF_BITS)) as u32;
        }
        (pack(&flags), any != 0)
    }
}

/// SSE2, which every x86-64 processor has: the baseline there.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sse2 {
    sse: pulp::core_arch::x86::Sse,
    sse2: pulp::core_arch::x86::Sse2,
}

#[cfg(target_arch = "x86_64")]
impl Sse2 {
    /// The token (`None` only on a processor that is not x86-64 at all).
    #[inline(always)]
    pub(crate) fn new() -> Option<Self> {
        Some(Sse2 {
            sse: pulp::core_arch::x86::Sse::try_new()?,
            sse2: pulp::core_arch::x86::Sse2::try_new()?,
        })
    }
}

#[cfg(target_arch = "x86_64")]
impl Lanes for Sse2 {
    #[inline(always)]
    fn range_block(self, xs: &[f32; BLOCK], lo: u32, hi: u32, top: u32) -> (u64, bool) {
        let (sse, sse2) = (self.sse, self.sse2);
        // Every value is at most 0x7FFF_FFFF, so signed compares order them
        // as unsigned ones would; `lo - 1` may be -1.
        let abs = sse2._mm_set1_epi32(0x7FFF_FFFF);
        let below = sse2._mm_set1_epi32(lo as i32 - 1);
        let (hi, top, inf) = (
            sse2._mm_set1_epi32(hi as i32),
            sse2._mm_set1_epi32(top as i32),
            sse2._mm_set1_epi32(INF_BITS as i32),
        );
        let mut word = 0u64;
        let mut any = sse2._mm_setzero_si128();
        for (j, quad) in xs.chunks_exact(4).enumerate() {
            let v: [f32; 4] = quad.try_into().expect("4 lanes");
            let b = sse2._mm_and_si128(bytemuck::cast(v), abs);
            let ge = sse2._mm_cmpgt_epi32(b, below);
            let keep = sse2._mm_andnot_si128(sse2._mm_cmpgt_epi32(b, top), ge);
            let inside = sse2._mm_andnot_si128(sse2._mm_cmpgt_epi32(b, hi), ge);
            let nan = sse2._mm_cmpgt_epi32(b, inf);
            any = sse2._mm_or_si128(any, sse2._mm_or_si128(inside, nan));
            word |= (sse._mm_movemask_ps(sse2._mm_castsi128_ps(keep)) as u64) << (4 * j);
        }
        (word, sse2._mm_movemask_epi8(any) != 0)
    }
}

#[cfg(target_arch = "x86_64")]
impl Lanes for pulp::x86::V3 {
    #[inline(always)]
    fn range_block(self, xs: &[f32; BLOCK], lo: u32, hi: u32, top: u32) -> (u64, bool) {
        let (avx, avx2) = (self.avx, self.avx2);
        let abs = avx._mm256_set1_epi32(0x7FFF_FFFF);
        let below = avx._mm256_set1_epi32(lo as i32 - 1);
        let (hi, top, inf) = (
            avx._mm256_set1_epi32(hi as i32),
            avx._mm256_set1_epi32(top as i32),
            avx._mm256_set1_epi32(INF_BITS as i32),
        );
        let mut word = 0u64;
        let mut any = avx._mm256_setzero_si256();
        for (j, oct) in xs.chunks_exact(8).enumerate() {
            let v: [f32; 8] = oct.try_into().expect("8 lanes");
            let b = avx2._mm256_and_si256(bytemuck::cast(v), abs);
            let ge = avx2._mm256_cmpgt_epi32(b, below);
            let keep = avx2._mm256_andnot_si256(avx2._mm256_cmpgt_epi32(b, top), ge);
            let inside = avx2._mm256_andnot_si256(avx2._mm256_cmpgt_epi32(b, hi), ge);
            let nan = avx2._mm256_cmpgt_epi32(b, inf);
            any = avx2._mm256_or_si256(any, avx2._mm256_or_si256(inside, nan));
            word |= (avx._mm256_movemask_ps(avx._mm256_castsi256_ps(keep)) as u64) << (8 * j);
        }
        (word, avx._mm256_testz_si256(any, any) == 0)
    }
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
impl Lanes for pulp::x86::V4 {
    #[inline(always)]
    fn range_block(self, xs: &[f32; BLOCK], lo: u32, hi: u32, top: u32) -> (u64, bool) {
        let f = self.avx512f;
        let abs = f._mm512_set1_epi32(0x7FFF_FFFF);
        let below = f._mm512_set1_epi32(lo as i32 - 1);
        let (hi, top, inf) = (
            f._mm512_set1_epi32(hi as i32),
            f._mm512_set1_epi32(top as i32),
            f._mm512_set1_epi32(INF_BITS as i32),
        );
        let mut word = 0u64;
        let mut any = 0u16;
        for (j, hex) in xs.chunks_exact(16).enumerate() {
            let v: [f32; 16] = hex.try_into().expect("16 lanes");
            let b = f._mm512_and_si512(bytemuck::cast(v), abs);
            let ge = f._mm512_cmpgt_epi32_mask(b, below);
            let keep = ge & !f._mm512_cmpgt_epi32_mask(b, top);
            let inside = ge & !f._mm512_cmpgt_epi32_mask(b, hi);
            any |= inside | f._mm512_cmpgt_epi32_mask(b, inf);
            word |= (keep as u64) << (16 * j);
        }
        (word, any != 0)
    }
}

/// A kernel generic over [`Lanes`], run by [`crate::simd::Isa::dispatch`].
pub(crate) trait WithLanes {
    /// What the kernel returns.
    type Output;
    /// Runs the kernel on `lanes`.
    fn run<L: Lanes>(self, lanes: L) -> Self::Output;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{Isa, SimdLevel};

    struct Block<'a> {
        xs: &'a [f32; BLOCK],
        lo: u32,
        hi: u32,
        top: u32,
    }

    impl WithLanes for Block<'_> {
        type Output = (u64, bool);
        fn run<L: Lanes>(self, lanes: L) -> (u64, bool) {
            lanes.range_block(self.xs, self.lo, self.hi, self.top)
        }
    }

    #[test]
    fn every_level_matches_the_portable_kernel() {
        let specials = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            1e-45,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7F80_0001),
        ];
        let mut blocks = Vec::new();
        for seed in 0..40u64 {
            let mut xs = [0f32; BLOCK];
            for (i, x) in xs.iter_mut().enumerate() {
                let u = prunus_core::contract::random::uniform(seed, 0, i as u64);
                *x = if seed % 4 == 0 && i % 7 == 0 {
                    specials[i % specials.len()]
                } else {
                    u * 4.0 - 2.0
                };
            }
            blocks.push(xs);
        }
        let bounds = [
            (0, 0, 0x7FFF_FFFF),
            (0x3F80_0000, 0x3F80_FFFF, 0x7FFF_FFFF),
            (0x3F80_0000, 0x3F80_FFFF, INF_BITS),
            (0x3F00_0000, 0x3FFF_FFFF, INF_BITS),
            (0x7F80_0000, 0x7F80_0000, 0x7FFF_FFFF),
            (0x7F80_0001, 0, 0x7FFF_FFFF),
            (1, 0, 0x7FFF_FFFF),
        ];
        for level in SimdLevel::supported() {
            let isa = Isa::new(level).expect("a supported level");
            for xs in &blocks {
                for &(lo, hi, top) in &bounds {
                    let want = Portable.range_block(xs, lo, hi, top);
                    let got = isa.dispatch(Block { xs, lo, hi, top });
                    assert_eq!(got, want, "{level} on {lo:#x}..={hi:#x}, top {top:#x}");
                }
            }
        }
    }
}
