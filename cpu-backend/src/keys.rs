//! Branch-free key kernels: the order-preserving keys of
//! [`prunus_core::KeyRule::key_with`], computed 64 elements (one mask word)
//! at a time, specialised at compile time for the transform and for the
//! presence of a survivors mask.

use prunus_core::contract::key::{KEY_NAN_HIGHEST, KEY_NAN_LOWEST};
use prunus_core::{KeyRule, NanPolicy, Transform};

use crate::lanes::{Lanes, Portable, RangeWords};
use crate::selection::{Counters, LANES};

/// Elements per block: one mask word.
pub(crate) const BLOCK: usize = 64;

/// `|x|` bits above this are NaN.
pub(crate) const INF_BITS: u32 = 0x7F80_0000;

/// The key of one alive value, and whether its score is NaN (`0` or `1`).
pub(crate) trait KeyFn: Copy + Send + Sync {
    /// `(key, is_nan)`.
    fn key(self, x: f32) -> (u32, u32);
}

/// Keys of `|x|`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AbsKey {
    nan_key: u32,
}

/// Keys of `x`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IdentityKey {
    nan_key: u32,
}

/// The key a NaN score gets under `policy` (a placeholder for `Error`).
fn nan_key(policy: NanPolicy) -> u32 {
    match policy {
        NanPolicy::Lowest => KEY_NAN_LOWEST,
        NanPolicy::Error | NanPolicy::Highest => KEY_NAN_HIGHEST,
    }
}

impl KeyFn for AbsKey {
    #[inline(always)]
    fn key(self, x: f32) -> (u32, u32) {
        // |x| has the sign bit clear, so its order key is a plain `or`, and
        // -0.0 already became +0.0.
        let b = x.to_bits() & 0x7FFF_FFFF;
        let nan = b > INF_BITS;
        (if nan { self.nan_key } else { b | 0x8000_0000 }, nan as u32)
    }
}

impl KeyFn for IdentityKey {
    #[inline(always)]
    fn key(self, x: f32) -> (u32, u32) {
        let bits = x.to_bits();
        let nan = bits & 0x7FFF_FFFF > INF_BITS;
        let bits = if bits == 0x8000_0000 { 0 } else { bits };
        // Negative: invert every bit; positive: set the sign bit.
        let flip = ((bits as i32 >> 31) as u32) | 0x8000_0000;
        (if nan { self.nan_key } else { bits ^ flip }, nan as u32)
    }
}

/// Calls the right monomorphised kernel for `rule`.
macro_rules! with_key_fn {
    ($rule:expr, |$k:ident| $body:expr) => {
        match $rule.transform {
            prunus_core::Transform::Abs => {
                let $k = $crate::keys::AbsKey::new($rule);
                $body
            }
            prunus_core::Transform::Identity => {
                let $k = $crate::keys::IdentityKey::new($rule);
                $body
            }
        }
    };
}
pub(crate) use with_key_fn;

impl AbsKey {
    /// The kernel of `rule` (whose transform is `Abs`).
    pub(crate) fn new(rule: KeyRule) -> Self {
        debug_assert_eq!(rule.transform, Transform::Abs);
        AbsKey {
            nan_key: nan_key(rule.nan),
        }
    }
}

impl IdentityKey {
    /// The kernel of `rule` (whose transform is `Identity`).
    pub(crate) fn new(rule: KeyRule) -> Self {
        debug_assert_eq!(rule.transform, Transform::Identity);
        IdentityKey {
            nan_key: nan_key(rule.nan),
        }
    }
}

/// Streams the keys of `x` (a chunk that starts at a multiple of
/// [`BLOCK`]) one block at a time, each key mapped through `map` (inlined
/// into the vectorised key loop): `f(block, mapped)` gets the block's index
/// within the chunk and its mapped keys (64 of them, fewer in the last
/// block). `survivors` are the chunk's survivor words, when there is a mask;
/// pruned elements get the key [`prunus_core::contract::key::KEY_PRUNED`]. Returns the
/// number of alive NaN scores.
#[inline(always)]
pub(crate) fn scan<K: KeyFn, T: Copy + Default>(
    k: K,
    x: &[f32],
    survivors: Option<&[u64]>,
    map: impl Fn(u32) -> T,
    mut f: impl FnMut(usize, &[T]),
) -> u64 {
    let mut out = [T::default(); BLOCK];
    let mut nan = 0u64;
    let mut blocks = x.chunks_exact(BLOCK);
    match survivors {
        None => {
            for (b, xs) in blocks.by_ref().enumerate() {
                let mut n = 0u32;
                for (o, &v) in out.iter_mut().zip(xs) {
                    let (key, is_nan) = k.key(v);
                    *o = map(key);
                    n += is_nan;
                }
                nan += n as u64;
                f(b, &out);
            }
        }
        Some(words) => {
            for ((b, xs), &word) in blocks.by_ref().enumerate().zip(words) {
                nan += alive_block(k, xs, word, &map, &mut out) as u64;
                f(b, &out);
            }
        }
    }
    let rest = blocks.remainder();
    if !rest.is_empty() {
        let b = x.len() / BLOCK;
        let word = survivors.map_or(u64::MAX, |w| w[b]);
        nan += alive_block(k, rest, word, &map, &mut out) as u64;
        f(b, &out[..rest.len()]);
    }
    nan
}

/// For every byte of a survivors word, its eight bits as lane masks
/// (`u32::MAX` for a survivor, `0` for a pruned element): expanding a word
/// becomes eight table loads instead of 64 variable shifts, so the key loop
/// with survivors vectorises too.
static ALIVE_LANES: [[u32; 8]; 256] = {
    let mut table = [[0u32; 8]; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut bit = 0;
        while bit < 8 {
            if byte >> bit & 1 == 1 {
                table[byte][bit] = u32::MAX;
            }
            bit += 1;
        }
        byte += 1;
    }
    table
};

/// Mapped keys of up to 64 values, pruned where `word`'s bit is clear.
#[inline(always)]
fn alive_block<K: KeyFn, T>(
    k: K,
    xs: &[f32],
    word: u64,
    map: impl Fn(u32) -> T,
    out: &mut [T; BLOCK],
) -> u32 {
    let mut n = 0u32;
    let bytes = word.to_le_bytes();
    for ((xs, out), &byte) in xs.chunks(8).zip(out.chunks_mut(8)).zip(&bytes) {
        let alive = &ALIVE_LANES[byte as usize];
        for ((o, &v), &a) in out.iter_mut().zip(xs).zip(alive) {
            let (key, is_nan) = k.key(v);
            *o = map(key & a);
            n += is_nan & a;
        }
    }
    n
}

/// The Low-window pass of magnitude keys, for a window `high` in
/// `0x8000..0xFF80` (where neither a NaN key nor a pruned one can fall):
/// counts into `counters` (element `i` of a block into lane `i % LANES`)
/// the low 16 bits of the keys whose high 16 bits are `high`, and returns
/// the number of alive NaN scores. `survivors` are the words of `x`, when
/// there is a mask.
///
/// A key `|x| | 0x8000_0000` is in the window exactly when
/// `|x| >> 16 == high & 0x7FFF`. One vectorised test per 32 elements says
/// whether any of them is in the window or NaN (alive or not); only those
/// rare groups are visited element by element.
#[inline(always)]
pub(crate) fn abs_low_window(
    x: &[f32],
    survivors: Option<&[u64]>,
    high: u16,
    counters: &mut Counters,
) -> u64 {
    const GROUP: usize = 32;
    debug_assert!((0x8000..0xFF80).contains(&high));
    let want = (high & 0x7FFF) as u32;
    let mut nan = 0u64;
    for (g, xs) in x.chunks(GROUP).enumerate() {
        let mut flag = false;
        for &v in xs {
            let b = v.to_bits() & 0x7FFF_FFFF;
            flag |= (b >> 16 == want) | (b > INF_BITS);
        }
        if flag {
            let alive = survivors.map_or(u64::MAX, |w| w[g * GROUP / BLOCK] >> (g * GROUP % BLOCK));
            for (i, &v) in xs.iter().enumerate() {
                // One branch, on the rare event: survivors are random.
                let alive = alive >> i & 1 == 1;
                let b = v.to_bits() & 0x7FFF_FFFF;
                nan += ((b > INF_BITS) & alive) as u64;
                if (b >> 16 == want) & alive {
                    counters[(b & 0xFFFF) as usize * LANES + i % LANES] += 1;
                }
            }
        }
    }
    nan
}

/// The keep-mask words of magnitude keys `>= t`, for a threshold `t` in
/// `0x8000_0000..=0xFF80_0001` (at or above `+0.0`, at or below the first
/// NaN key, above the pruned key). There a key is `>= t` exactly when
/// `|x| >= t & 0x7FFF_FFFF` as bits, with NaN scores kept (their key is
/// `u32::MAX`) unless the policy ranks them lowest, and pruned elements
/// never kept. `survivors` are the words of `x`, when there is a mask.
#[inline(always)]
pub(crate) fn abs_at_least<L: Lanes>(
    lanes: L,
    x: &[f32],
    survivors: Option<&[u64]>,
    t: u32,
    nan: NanPolicy,
    out: &mut [u64],
) {
    debug_assert!((0x8000_0000..=0xFF80_0001).contains(&t));
    let lo = t & 0x7FFF_FFFF;
    let hi = if nan == NanPolicy::Lowest {
        INF_BITS
    } else {
        0x7FFF_FFFF
    };
    range_blocks(
        lanes,
        x,
        lo,
        0,
        hi,
        out,
        #[inline(always)]
        |w, _, r| r.keep & survivors.map_or(u64::MAX, |s| s[w]),
    );
}

/// [`Lanes::range_block`] of up to 64 values: a short last block is padded
/// with zeros (never NaN), whose bits are cleared from the words.
#[inline(always)]
fn range_block<L: Lanes>(lanes: L, xs: &[f32], lo: u32, hi: u32, top: u32) -> RangeWords {
    match <&[f32; BLOCK]>::try_from(xs) {
        Ok(full) => lanes.range_block(full, lo, hi, top),
        Err(_) => {
            let mut padded = [0f32; BLOCK];
            padded[..xs.len()].copy_from_slice(xs);
            let words = Portable.range_block(&padded, lo, hi, top);
            let tail = (1u64 << xs.len()) - 1;
            RangeWords {
                keep: words.keep & tail,
                inside: words.inside & tail,
                nan: words.nan,
            }
        }
    }
}

/// [`abs_at_least`], also counting the alive elements whose key is `eq`
/// (for `eq` in `0x8000_0000..=0xFF80_0000`, keys of non-NaN `|x|`): the
/// mask pass of a threshold with a tie budget counts the tied keys of every
/// chunk in the same read.
#[inline(always)]
pub(crate) fn abs_at_least_counting(
    x: &[f32],
    survivors: Option<&[u64]>,
    t: u32,
    eq: u32,
    nan: NanPolicy,
    out: &mut [u64],
) -> u64 {
    debug_assert!((0x8000_0000..=0xFF80_0001).contains(&t));
    debug_assert!((0x8000_0000..=0xFF80_0000).contains(&eq));
    let lo = t & 0x7FFF_FFFF;
    let hi = if nan == NanPolicy::Lowest {
        INF_BITS
    } else {
        0x7FFF_FFFF
    };
    let e = eq & 0x7FFF_FFFF;
    let mut flags = [0u8; BLOCK];
    let mut count = 0u64;
    match survivors {
        None => {
            // Without survivors every element is alive: the tie count is a
            // plain sum of compare results, which vectorises.
            for (xs, word) in x.chunks(BLOCK).zip(out.iter_mut()) {
                let mut tied = 0u32;
                for (f, &v) in flags.iter_mut().zip(xs) {
                    let b = v.to_bits() & 0x7FFF_FFFF;
                    *f = (b >= lo && b <= hi) as u8;
                    tied += (b == e) as u32;
                }
                *word = pack(&flags[..xs.len()]);
                count += tied as u64;
            }
        }
        Some(alive) => {
            let mut tied = [0u8; BLOCK];
            for ((xs, word), &a) in x.chunks(BLOCK).zip(out.iter_mut()).zip(alive) {
                for ((f, q), &v) in flags.iter_mut().zip(tied.iter_mut()).zip(xs) {
                    let b = v.to_bits() & 0x7FFF_FFFF;
                    *f = (b >= lo && b <= hi) as u8;
                    *q = (b == e) as u8;
                }
                *word = pack(&flags[..xs.len()]) & a;
                count += (pack(&tied[..xs.len()]) & a).count_ones() as u64;
            }
        }
    }
    count
}

/// [`abs_at_least`] with `t = lo`, also gathering the elements whose key
/// lies in `[lo, hi]` as `(index in chunk, key)`, for a range of finite
/// `|x|` keys (`0x8000_0000 <= lo <= hi < 0xFF80_0000`, so neither NaN, nor
/// infinity, nor an element an earlier mask prunes is ever in it). Returns
/// the number of alive NaN scores.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn abs_range<L: Lanes>(
    lanes: L,
    x: &[f32],
    survivors: Option<&[u64]>,
    lo: u32,
    hi: u32,
    nan: NanPolicy,
    out: &mut [u64],
    gathered: &mut Vec<(u32, u32)>,
) -> u64 {
    debug_assert!(0x8000_0000 <= lo && lo <= hi && hi < 0xFF80_0000);
    let (lo_bits, hi_bits) = (lo & 0x7FFF_FFFF, hi & 0x7FFF_FFFF);
    let top = if nan == NanPolicy::Lowest {
        INF_BITS
    } else {
        0x7FFF_FFFF
    };
    // One tight pass of the block kernel over the chunk, keeping each
    // block's in-range word aside; then the few elements in the range are
    // gathered from those words, and NaN (rare) counted only if any block
    // saw one.
    let blocks = out.len();
    let mut inside = vec![0u64; blocks];
    let mut any_nan = false;
    let alive = |w: usize| survivors.map_or(u64::MAX, |s| s[w]);
    range_blocks(
        lanes,
        x,
        lo_bits,
        hi_bits,
        top,
        out,
        #[inline(always)]
        |w, _, r| {
            inside[w] = r.inside;
            any_nan |= r.nan;
            r.keep & alive(w)
        },
    );
    for (w, &word) in inside.iter().enumerate() {
        let mut hits = word & alive(w);
        while hits != 0 {
            let j = hits.trailing_zeros() as usize;
            hits &= hits - 1;
            let i = w * BLOCK + j;
            gathered.push((i as u32, (x[i].to_bits() & 0x7FFF_FFFF) | 0x8000_0000));
        }
    }
    if !any_nan {
        return 0;
    }
    let mut nans = 0u64;
    for (w, xs) in x.chunks(BLOCK).enumerate() {
        let mut flags = [0u8; BLOCK];
        for (f, &v) in flags.iter_mut().zip(xs) {
            *f = (v.to_bits() & 0x7FFF_FFFF > INF_BITS) as u8;
        }
        nans += (pack(&flags[..xs.len()]) & alive(w)).count_ones() as u64;
    }
    nans
}

/// Runs [`Lanes::range_block`] over `x` block by block, storing in `out[w]`
/// what `each(w, block, words)` returns for block `w`: full blocks in one
/// tight loop that reads ahead, then the short last block padded.
#[inline(always)]
fn range_blocks<L: Lanes>(
    lanes: L,
    x: &[f32],
    lo: u32,
    hi: u32,
    top: u32,
    out: &mut [u64],
    mut each: impl FnMut(usize, &[f32], RangeWords) -> u64,
) {
    let full = x.len() / BLOCK;
    let (head, tail) = x.split_at(full * BLOCK);
    for (w, (xs, word)) in head.chunks_exact(BLOCK).zip(&mut *out).enumerate() {
        read_ahead(lanes, xs);
        let xs: &[f32; BLOCK] = xs.try_into().expect("a full block");
        *word = each(w, xs, lanes.range_block(xs, lo, hi, top));
    }
    if !tail.is_empty() {
        out[full] = each(full, tail, range_block(lanes, tail, lo, hi, top));
    }
}

/// How far ahead of the block being read (in elements) the block kernels
/// ask for the data: the loops do enough per block that the processor's own
/// prefetching falls behind (8 KiB ahead measured best on a 2-core Xeon VM;
/// 2 and 16 KiB were slower).
const AHEAD: usize = 2048;

/// Asks for the four cache lines of the block [`AHEAD`] of `xs`.
#[inline(always)]
pub(crate) fn read_ahead<L: Lanes>(lanes: L, xs: &[f32]) {
    for line in 0..BLOCK / 16 {
        lanes.prefetch(xs.as_ptr().wrapping_add(AHEAD + 16 * line));
    }
}

/// Packs up to 64 flags (`0` or `1`) into a word, flag `i` into bit `i`.
#[inline(always)]
pub(crate) fn pack(flags: &[u8]) -> u64 {
    if let Ok(flags) = <&[u8; BLOCK]>::try_from(flags) {
        let mut w = 0u64;
        for (j, byte) in flags.chunks_exact(8).enumerate() {
            let v = u64::from_le_bytes(byte.try_into().expect("8 bytes"));
            // Gathers the low bit of each byte into the top byte.
            w |= (v.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * j);
        }
        w
    } else {
        flags
            .iter()
            .enumerate()
            .fold(0, |w, (i, &f)| w | (f as u64) << i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prunus_core::contract::key::KEY_PRUNED;

    fn specials() -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7F80_0001),
            f32::from_bits(0xFFC0_1234),
        ];
        v.extend((0..200).map(|i| prunus_core::contract::random::uniform(3, 0, i) * 4.0 - 2.0));
        v
    }

    #[test]
    fn kernels_match_key_rule() {
        let xs = specials();
        for transform in [Transform::Abs, Transform::Identity] {
            for nan in [NanPolicy::Error, NanPolicy::Lowest, NanPolicy::Highest] {
                let rule = KeyRule { transform, nan };
                let mut got = Vec::new();
                let n = with_key_fn!(rule, |k| scan(
                    k,
                    &xs,
                    None,
                    |k| k,
                    |_, ks| got.extend_from_slice(ks)
                ));
                let want: Vec<u32> = xs.iter().map(|&x| rule.key(x)).collect();
                assert_eq!(got, want, "{rule:?}");
                assert_eq!(n, 4);
                let words = [0xAAAA_AAAA_AAAA_AAAA_u64, u64::MAX, 0, 1];
                let mut got = Vec::new();
                let n = with_key_fn!(rule, |k| scan(
                    k,
                    &xs,
                    Some(&words),
                    |k| k,
                    |_, ks| got.extend_from_slice(ks)
                ));
                let alive = |i: usize| words[i / 64] >> (i % 64) & 1 == 1;
                let want: Vec<u32> = xs
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| rule.key_with(x, alive(i)))
                    .collect();
                assert_eq!(got, want, "{rule:?} with survivors");
                assert_eq!(n, 2, "NaNs at 12..16, alive at odd indices");
                assert!(got.iter().skip(193).all(|&k| k == KEY_PRUNED));
            }
        }
    }

    #[test]
    fn packing() {
        let at_least = |t: u32, n: u32| pack(&(0..n).map(|k| (k >= t) as u8).collect::<Vec<_>>());
        assert_eq!(at_least(0, 64), u64::MAX);
        assert_eq!(at_least(60, 64), 0xF << 60);
        assert_eq!(at_least(1, 3), 0b110);
        for seed in 0..20 {
            let flags: Vec<u8> = (0..64)
                .map(|i| (prunus_core::contract::random::uniform(seed, 1, i) < 0.5) as u8)
                .collect();
            let want = flags
                .iter()
                .enumerate()
                .fold(0u64, |w, (i, &f)| w | (f as u64) << i);
            assert_eq!(pack(&flags), want);
        }
    }
}
