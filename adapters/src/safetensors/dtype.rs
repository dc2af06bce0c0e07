//! Element types of safetensors files, and conversion of the float ones to
//! and from `f32`.

use half::{bf16, f16};

/// A tensor's element type as its header names it.
///
/// Every dtype of the safetensors format is recognised (so its tensors are
/// copied through); only `F32`, `F16` and `BF16` are pruned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dtype {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE single precision.
    F32,
    /// Any other dtype of the format, by its header name and bit width.
    Other {
        /// The header's name for it (`I64`, `U8`, `F8_E4M3`, ...).
        name: &'static str,
        /// Bits per element.
        bits: usize,
    },
}

/// The dtypes of the format that prunus copies through without pruning.
const OTHERS: [(&str, usize); 16] = [
    ("BOOL", 8),
    ("U8", 8),
    ("I8", 8),
    ("F8_E5M2", 8),
    ("F8_E4M3", 8),
    ("F8_E8M0", 8),
    ("F4", 4),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("I16", 16),
    ("U16", 16),
    ("I32", 32),
    ("U32", 32),
    ("F64", 64),
    ("I64", 64),
    ("U64", 64),
];

impl Dtype {
    /// The dtype a header names, or `None` for a name the format lacks.
    pub fn parse(name: &str) -> Option<Dtype> {
        match name {
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::BF16),
            "F32" => Some(Dtype::F32),
            _ => OTHERS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|&(name, bits)| Dtype::Other { name, bits }),
        }
    }

    /// The header's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F32 => "F32",
            Dtype::Other { name, .. } => name,
        }
    }

    /// Bits per element.
    pub fn bits(self) -> usize {
        match self {
            Dtype::F16 | Dtype::BF16 => 16,
            Dtype::F32 => 32,
            Dtype::Other { bits, .. } => bits,
        }
    }

    /// Whether prunus can prune tensors of this dtype.
    pub fn is_prunable(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::BF16 | Dtype::F32)
    }

    /// Bytes per element of a prunable dtype (2 or 4).
    pub(crate) fn width(self) -> usize {
        self.bits() / 8
    }

    /// The value of the element stored in `bytes` (little-endian, of this
    /// prunable dtype's width), exactly as `f32`.
    #[inline(always)]
    pub(crate) fn decode(self, bytes: &[u8]) -> f32 {
        match self {
            Dtype::F32 => f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            Dtype::F16 => f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32(),
            Dtype::BF16 => bf16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])).to_f32(),
            Dtype::Other { .. } => f32::NAN,
        }
    }

    /// The value of a 16-bit element from its bit pattern (`F16` or `BF16`).
    #[inline(always)]
    pub(crate) fn decode16(self, bits: u16) -> f32 {
        match self {
            Dtype::F16 => f16::from_bits(bits).to_f32(),
            _ => bf16::from_bits(bits).to_f32(),
        }
    }

    /// `x` rounded to this prunable dtype (nearest, ties to even), as
    /// little-endian bytes appended to `out`.
    pub fn encode(self, x: f32, out: &mut Vec<u8>) {
        match self {
            Dtype::F16 => out.extend_from_slice(&f16::from_f32(x).to_le_bytes()),
            Dtype::BF16 => out.extend_from_slice(&bf16::from_f32(x).to_le_bytes()),
            _ => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_fail() {
        for name in ["F16", "BF16", "F32", "I64", "U8", "BOOL", "F8_E4M3", "F4"] {
            assert_eq!(Dtype::parse(name).unwrap().name(), name);
        }
        assert_eq!(Dtype::parse("F128"), None);
        assert_eq!(Dtype::parse("f32"), None);
        assert!(Dtype::BF16.is_prunable() && !Dtype::parse("F64").unwrap().is_prunable());
    }

    #[test]
    fn float_values_round_trip_exactly() {
        for d in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            for x in [0.0f32, -0.0, 1.0, -2.5, 0.125, 4096.0] {
                let mut b = Vec::new();
                d.encode(x, &mut b);
                assert_eq!(b.len(), d.width());
                assert_eq!(d.decode(&b).to_bits(), x.to_bits(), "{d} {x}");
            }
        }
        let mut b = Vec::new();
        Dtype::BF16.encode(1.0, &mut b);
        assert_eq!(Dtype::BF16.decode16(u16::from_le_bytes([b[0], b[1]])), 1.0);
    }
}
