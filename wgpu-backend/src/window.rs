//! How a tensor is cut into windows that one binding and one dispatch can
//! cover: no binding exceeds the device's storage-binding limit, and every
//! window starts where its mask words, tie blocks and N:M groups start.

/// Elements every window start is a multiple of: a mask window then starts
/// at a 256-byte offset (the strictest storage offset alignment), and tie
/// blocks ([`TIE_BLOCK`]) never straddle windows.
pub(crate) const WINDOW_ALIGN: u64 = 2048;

/// Elements per tie block of threshold masks: ties are ranked block by block.
pub(crate) const TIE_BLOCK: u64 = 1024;

/// One window of a tensor: elements `start..start + len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub start: u64,
    pub len: u64,
}

impl Window {
    /// The byte range of the window's scores.
    pub(crate) fn score_bytes(self) -> (u64, u64) {
        (self.start * 4, self.len * 4)
    }

    /// The byte range of the window's mask words, given the tensor's length
    /// (the last window takes the mask's padding word with it).
    pub(crate) fn mask_bytes(self, numel: u64) -> (u64, u64) {
        let first = self.start / 32;
        let end = if self.start + self.len >= numel {
            mask_u32_words(numel)
        } else {
            (self.start + self.len) / 32
        };
        (first * 4, (end - first) * 4)
    }

    /// `u32` mask words the window writes.
    pub(crate) fn mask_words(self, numel: u64) -> u64 {
        self.mask_bytes(numel).1 / 4
    }
}

/// `u32` words of a mask of `numel` elements: whole `u64` words, as
/// [`prunus_core::Mask`] stores them.
pub(crate) fn mask_u32_words(numel: u64) -> u64 {
    numel.div_ceil(64) * 2
}

/// The windows of a tensor of `numel` elements, each at most `max` long and
/// starting at a multiple of `align` (which `max` is a multiple of).
pub(crate) fn windows(numel: u64, max: u64, align: u64) -> Vec<Window> {
    let max = (max / align).max(1) * align;
    (0..numel.div_ceil(max))
        .map(|i| {
            let start = i * max;
            Window {
                start,
                len: max.min(numel - start),
            }
        })
        .collect()
}

/// The least common multiple.
pub(crate) fn lcm(a: u64, b: u64) -> u64 {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_and_align() {
        let w = windows(10_000, 4096, 2048);
        assert_eq!(
            w,
            [
                Window {
                    start: 0,
                    len: 4096
                },
                Window {
                    start: 4096,
                    len: 4096
                },
                Window {
                    start: 8192,
                    len: 1808
                }
            ]
        );
        assert_eq!(
            w[2].mask_bytes(10_000),
            (8192 / 8, (mask_u32_words(10_000) - 256) * 4)
        );
        assert!(windows(0, 4096, 2048).is_empty());
        assert_eq!(windows(5, 100, 2048), [Window { start: 0, len: 5 }]);
        assert_eq!(lcm(2048, 3), 6144);
        assert_eq!(lcm(2048, 4), 2048);
    }
}
