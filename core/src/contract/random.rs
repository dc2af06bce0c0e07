//! Counter-based random numbers: the value at an index depends only on
//! `(seed, stream, index)`, and is computed with 32-bit integer operations
//! alone, so every backend (WGSL has no 64-bit integers) produces the same
//! bits in any order and on any number of threads.

/// One round of the `lowbias32` integer hash (Wellons' hash prospector).
#[inline(always)]
pub fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x7FEB_352D);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846C_A68B);
    h ^= h >> 16;
    h
}

/// The 32-bit hash of `(seed, stream, index)`.
#[inline(always)]
pub fn hash(seed: u64, stream: u32, index: u64) -> u32 {
    let mut h = mix32(seed as u32 ^ 0x9E37_79B9);
    h = mix32(h ^ (seed >> 32) as u32);
    h = mix32(h ^ stream);
    h = mix32(h ^ index as u32);
    mix32(h ^ (index >> 32) as u32)
}

/// A uniform value in `[0, 1)` with 24 random bits.
///
/// ```
/// use prunus_core::contract::random::uniform;
/// let u = uniform(7, 0, 12345);
/// assert!((0.0..1.0).contains(&u));
/// assert_eq!(u, uniform(7, 0, 12345));
/// assert_ne!(u, uniform(8, 0, 12345));
/// ```
#[inline(always)]
pub fn uniform(seed: u64, stream: u32, index: u64) -> f32 {
    (hash(seed, stream, index) >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// A permutation of `0..n` that depends only on `(seed, epoch)`: the
/// shuffle of one training epoch (Fisher-Yates driven by [`hash`]), the same
/// for every host that trains on a split of `n` samples with that seed.
///
/// ```
/// use prunus_core::contract::random::permutation;
/// let p = permutation(10, 3, 0);
/// let mut sorted = p.clone();
/// sorted.sort();
/// assert_eq!(sorted, (0..10).collect::<Vec<_>>());
/// assert_eq!(p, permutation(10, 3, 0));
/// assert_ne!(p, permutation(10, 3, 1));
/// ```
pub fn permutation(n: usize, seed: u64, epoch: u64) -> alloc::vec::Vec<usize> {
    let mut order: alloc::vec::Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let r = hash(seed, epoch as u32 ^ 0x5EED, i as u64) as u64;
        let j = ((r * (i as u64 + 1)) >> 32) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roughly_uniform() {
        let n = 100_000u64;
        let mut buckets = [0u32; 10];
        for i in 0..n {
            buckets[(uniform(1, 2, i) * 10.0) as usize] += 1;
        }
        for b in buckets {
            assert!((9_000..11_000).contains(&b), "{buckets:?}");
        }
    }
}
