//! Elementwise operations: one definition per op, serving every backend. Each
//! op has a scalar function (the reference and CPU backends call it) and the
//! name of its WGSL entry point (for the GPU backend).

/// An elementwise operation of one operand.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum UnaryOp {
    /// `|x|`
    Abs,
    /// `x * x`
    Square,
    /// `-x`
    Neg,
    /// `x * factor`
    Scale(f32),
}

impl UnaryOp {
    /// The scalar definition.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnaryOp::Abs => f32::from_bits(x.to_bits() & 0x7FFF_FFFF),
            UnaryOp::Square => x * x,
            UnaryOp::Neg => -x,
            UnaryOp::Scale(factor) => x * factor,
        }
    }

    /// The WGSL entry point implementing this op.
    pub fn wgsl_entry(self) -> &'static str {
        match self {
            UnaryOp::Abs => "unary_abs",
            UnaryOp::Square => "unary_square",
            UnaryOp::Neg => "unary_neg",
            UnaryOp::Scale(_) => "unary_scale",
        }
    }
}

/// An elementwise operation of two operands of the same shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
}

impl BinaryOp {
    /// The scalar definition.
    #[inline(always)]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
        }
    }

    /// The WGSL entry point implementing this op.
    pub fn wgsl_entry(self) -> &'static str {
        match self {
            BinaryOp::Add => "binary_add",
            BinaryOp::Sub => "binary_sub",
            BinaryOp::Mul => "binary_mul",
        }
    }
}

/// Whether a matrix operand of [`crate::Backend::gemm`] is used as stored or
/// transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Transpose {
    /// As stored.
    #[default]
    No,
    /// Transposed.
    Yes,
}
