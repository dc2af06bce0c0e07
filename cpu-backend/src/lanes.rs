//! Hand-vectorised block kernels, one implementation per instruction set,
//! for the passes that dominate a selection (the range and threshold mask
//! passes). Loops written for the auto-vectoriser turn a compare into a mask
//! word poorly (through bytes and a multiply); these use the processor's
//! own compare-to-bitmask instructions: `pmovmskb` of packed compares on SSE2
//! and AVX2, mask registers on AVX-512.
//!
//! All of it is safe code: the intrinsics of a statically enabled feature
//! (SSE2 on x86-64) are safe to call, and those of AVX2 and AVX-512 are
//! reached through [`pulp`]'s tokens, whose existence proves the processor
//! has the features. Every implementation computes the same words as
//! [`Portable`], which the tests check.

use crate::keys::{BLOCK, INF_BITS, pack};

/// A way to run the block kernels: a zero-sized proof of an instruction set.
pub(crate) trait Lanes: Copy + Send + Sync {
    /// For 64 values whose bits with the sign cleared are `b_i`, bounds
    /// `lo`, `hi` in `0..=0x7FFF_FFFF` and `top` either `0x7FFF_FFFF`
    /// (everything) or [`INF_BITS`] (NaN excluded): which of them lie in
    /// `lo..=top` and in `lo..=hi`, and whether any is a NaN.
    fn range_block(self, xs: &[f32; BLOCK], lo: u32, hi: u32, top: u32) -> RangeWords;

    /// Asks for the cache line at `p` ahead of its use (a hint: any
    /// address, valid or not, is harmless).
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        let _ = p;
    }
}

/// What [`Lanes::range_block`] finds in a block of 64 values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RangeWords {
    /// Bit `i` set when `lo <= b_i <= top`.
    pub keep: u64,
    /// Bit `i` set when `lo <= b_i <= hi`.
    pub inside: u64,
    /// Whether any `b_i` is a NaN (above [`INF_BITS`]).
    pub nan: bool,
}

/// Plain loops, for targets without a hand-written kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl Lanes for Portable {
    #[inline(always)]
    fn range_block(self, xs: &[f32; BLOCK], lo: u32, hi: u32, top: u32) -> RangeWords {
        let mut keep = [0u8; BLOCK];
        let mut inside = [0u8; BLOCK];
        let mut nan = false;
        for ((k, i), &v) in keep.iter_mut().zip(&mut inside).zip(xs) {
            let b = v.to_bits() & 0x7FFF_FFFF;
            *k = (b >= lo && b <= top) as u8;
            *i = (b >= lo && b <= hi) as u8;
            nan |= b > INF_BITS;
        }
        RangeWords {
            keep: pack(&keep),
            inside: pack(&inside),
            nan,
        }
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
    fn prefetch(self, p: *const f32) {
        self.sse
            ._mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }

    #[inline(always)]
    fn range_block(self, xs: &[f32; BLOCK], lo: u32, hi: u32, top: u32) -> RangeWords {
        let sse2 = self.sse2;
        // Every value is at most 0x7FFF_FFFF, so signed compares order them
        // as unsigned ones would; `lo - 1` may be -1.
        let abs = sse2._mm_set1_epi32(0x7FFF_FFFF);
        let below = sse2._mm_set1_epi32(lo as i32 - 1);
        let (hi, top, inf) = (
            sse2._mm_set1_epi32(hi as i32),
            sse2._mm_set1_epi32(top as i32),
            sse2._mm_set1_epi32(INF_BITS as i32),
        );
        let (mut keep_word, mut inside_word) = (0u64, 0u64);
        let mut nan = sse2._mm_setzero_si128();
        // Sixteen values at a time: the four compare results of each word
        // are packed to bytes (saturation keeps 0 and -1) and read with one
        // `pmovmskb`, rather than a `movmskps` and a shift per four values.
        for (j, sixteen) in xs.chunks_exact(16).enumerate() {
            let mut keep = [sse2._mm_setzero_si128(); 4];
            let mut inside = [sse2._mm_setzero_si128(); 4];
            for (q, quad) in sixteen.chunks_exact(4).enumerate() {
                let v: [f32; 4] = quad.try_into().expect("4 lanes");
                let b = sse2._mm_and_si128(bytemuck::cast(v), abs);
                let ge = sse2._mm_cmpgt_epi32(b, below);
                keep[q] = sse2._mm_andnot_si128(sse2._mm_cmpgt_epi32(b, top), ge);
                inside[q] = sse2._mm_andnot_si128(sse2._mm_cmpgt_epi32(b, hi), ge);
                nan = sse2._mm_or_si128(nan, sse2._mm_cmpgt_epi32(b, inf));
            }
            let bits = |w: [core::arch::x86_64::__m128i; 4]| {
                let lo = sse2._mm_packs_epi32(w[0], w[1]);
                let hi = sse2._mm_packs_epi32(w[2], w[3]);
                (sse2._mm_movemask_epi8(sse2._mm_packs_epi16(lo, hi)) as u64 & 0xFFFF) << (16 * j)
            };
            keep_word |= bits(keep);
            inside_word |= bits(inside);
        }
        RangeWords {
            keep: keep_word,
            inside: inside_word,
            nan: sse2._mm_movemask_epi8(nan) != 0,
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Lanes for pulp::x86::V3 {
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        self.sse
            ._mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }

    #[inline(always)]
    fn range_block(self, xs: &[f32; BLOCK], lo: u32, hi: u32, top: u32) -> RangeWords {
        let (avx, avx2) = (self.avx, self.avx2);
        let abs = avx._mm256_set1_epi32(0x7FFF_FFFF);
        let below = avx._mm256_set1_epi32(lo as i32 - 1);
        let (hi, top, inf) = (
            avx._mm256_set1_epi32(hi as i32),
            avx._mm256_set1_epi32(top as i32),
            avx._mm256_set1_epi32(INF_BITS as i32),
        );
        // `vpackssdw` and `vpacksswb` pack within 128-bit lanes; this
        // permutation puts the 32 bytes back in value order.
        let order = avx._mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let (mut keep_word, mut inside_word) = (0u64, 0u64);
        let mut nan = avx._mm256_setzero_si256();
        // Thirty-two values at a time, packed to bytes for one `vpmovmskb`
        // per word (as in the SSE2 kernel).
        for (j, half) in xs.chunks_exact(32).enumerate() {
            let mut keep = [avx._mm256_setzero_si256(); 4];
            let mut inside = [avx._mm256_setzero_si256(); 4];
            for (o, oct) in half.chunks_exact(8).enumerate() {
                let v: [f32; 8] = oct.try_into().expect("8 lanes");
                let b = avx2._mm256_and_si256(bytemuck::cast(v), abs);
                let ge = avx2._mm256_cmpgt_epi32(b, below);
                keep[o] = avx2._mm256_andnot_si256(avx2._mm256_cmpgt_epi32(b, top), ge);
                inside[o] = avx2._mm256_andnot_si256(avx2._mm256_cmpgt_epi32(b, hi), ge);
                nan = avx2._mm256_or_si256(nan, avx2._mm256_cmpgt_epi32(b, inf));
            }
            let bits = |w: [core::arch::x86_64::__m256i; 4]| {
                let lo = avx2._mm256_packs_epi32(w[0], w[1]);
                let hi = avx2._mm256_packs_epi32(w[2], w[3]);
                let bytes =
                    avx2._mm256_permutevar8x32_epi32(avx2._mm256_packs_epi16(lo, hi), order);
                (avx2._mm256_movemask_epi8(bytes) as u32 as u64) << (32 * j)
            };
            keep_word |= bits(keep);
            inside_word |= bits(inside);
        }
        RangeWords {
            keep: keep_word,
            inside: inside_word,
            nan: avx._mm256_testz_si256(nan, nan) == 0,
        }
    }
}

#[cfg(all(target_arch = "x86_64", feature = "avx512"))]
impl Lanes for pulp::x86::V4 {
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        self.sse
            ._mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }

    #[inline(always)]
    fn range_block(self, xs: &[f32; BLOCK], lo: u32, hi: u32, top: u32) -> RangeWords {
        let f = self.avx512f;
        let abs = f._mm512_set1_epi32(0x7FFF_FFFF);
        let below = f._mm512_set1_epi32(lo as i32 - 1);
        let (hi, inf) = (
            f._mm512_set1_epi32(hi as i32),
            f._mm512_set1_epi32(INF_BITS as i32),
        );
        // `top` is either everything or [`INF_BITS`] (NaN ranked lowest):
        // one compare against infinity serves both the NaN flag and the
        // keep mask.
        debug_assert!(top == 0x7FFF_FFFF || top == INF_BITS);
        let nan_pruned = top == INF_BITS;
        let mut keep = [0u16; 4];
        let mut inside = [0u16; 4];
        let mut nan = [0u16; 4];
        for (j, hex) in xs.chunks_exact(16).enumerate() {
            let v: [f32; 16] = hex.try_into().expect("16 lanes");
            let b = f._mm512_and_si512(bytemuck::cast(v), abs);
            let ge = f._mm512_cmpgt_epi32_mask(b, below);
            inside[j] = f._mm512_mask_cmple_epi32_mask(ge, b, hi);
            nan[j] = f._mm512_cmpgt_epi32_mask(b, inf);
            keep[j] = ge;
        }
        let word = |m: [u16; 4]| {
            m[0] as u64 | (m[1] as u64) << 16 | (m[2] as u64) << 32 | (m[3] as u64) << 48
        };
        let nan = word(nan);
        RangeWords {
            keep: if nan_pruned {
                word(keep) & !nan
            } else {
                word(keep)
            },
            inside: word(inside),
            nan: nan != 0,
        }
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
        type Output = RangeWords;
        fn run<L: Lanes>(self, lanes: L) -> RangeWords {
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
