//! Elementwise maps, seeded random tensors and mask application, window by
//! window.

use prunus_core::contract::check;
use prunus_core::contract::random::mix32;
use prunus_core::{BinaryOp, HasShape, Result, Shape, UnaryOp};

use crate::context::{Access, Kernel, Shader};
use crate::window::WINDOW_ALIGN;
use crate::{WgpuBackend, WgpuMask, WgpuTensor};

static SHADER: Shader = Shader {
    name: "elementwise",
    source: include_str!("../shaders/elementwise.wgsl"),
};

const BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::ReadWrite];

fn kernel(entry: &'static str) -> Kernel {
    Kernel {
        shader: &SHADER,
        entry,
        bindings: BINDINGS,
    }
}

impl WgpuBackend {
    /// Runs `entry` over every window of `out`, with `x` and `y` bound at
    /// the same windows (a tiny placeholder where absent) and `a` as the
    /// kernel's extra parameter.
    fn elementwise(
        &self,
        entry: &'static str,
        x: Option<&WgpuTensor>,
        y: Option<&WgpuTensor>,
        out: &WgpuTensor,
        a: u32,
    ) -> Result<()> {
        let k = kernel(entry);
        let (dx, dy) = (self.dummy()?, self.dummy()?);
        let mut batch = self.gpu.batch();
        for w in self.windows(out.numel(), WINDOW_ALIGN) {
            let (off, len) = w.score_bytes();
            let params = [w.len as u32, 0, w.start as u32, (w.start >> 32) as u32, a];
            let groups = batch.groups_for(w.len);
            batch.dispatch(
                &k,
                &params,
                &[
                    x.map_or(dx.all(), |t| t.buf.slice(off, len)),
                    y.map_or(dy.all(), |t| t.buf.slice(off, len)),
                    out.buf.slice(off, len),
                ],
                groups,
            );
        }
        batch.submit()
    }

    pub(crate) fn map_unary(&self, op: UnaryOp, x: &WgpuTensor) -> Result<WgpuTensor> {
        let out = self.new_tensor(x.shape())?;
        let a = match op {
            UnaryOp::Scale(factor) => factor.to_bits(),
            _ => 0,
        };
        self.elementwise(op.wgsl_entry(), Some(x), None, &out, a)?;
        Ok(out)
    }

    pub(crate) fn map_binary(
        &self,
        op: BinaryOp,
        a: &WgpuTensor,
        b: &WgpuTensor,
    ) -> Result<WgpuTensor> {
        check::same_shape("binary op", a.shape(), b.shape())?;
        let out = self.new_tensor(a.shape())?;
        self.elementwise(op.wgsl_entry(), Some(a), Some(b), &out, 0)?;
        Ok(out)
    }

    pub(crate) fn random(&self, shape: &Shape, seed: u64, stream: u32) -> Result<WgpuTensor> {
        // The first rounds of prunus_core::contract::random::hash depend on the seed
        // and stream only.
        let mut h = mix32(seed as u32 ^ 0x9E37_79B9);
        h = mix32(h ^ (seed >> 32) as u32);
        h = mix32(h ^ stream);
        let out = self.new_tensor(shape)?;
        self.elementwise("random_uniform", None, None, &out, h)?;
        Ok(out)
    }

    pub(crate) fn zero_pruned(&self, weights: &mut WgpuTensor, mask: &WgpuMask) -> Result<()> {
        check::same_shape("apply mask", weights.shape(), mask.shape())?;
        let k = kernel("apply_mask");
        let dx = self.dummy()?;
        let n = weights.numel();
        let mut batch = self.gpu.batch();
        for w in self.windows(n, WINDOW_ALIGN) {
            let (off, len) = w.score_bytes();
            let (moff, mlen) = w.mask_bytes(n);
            let groups = batch.groups_for(w.len);
            batch.dispatch(
                &k,
                &[w.len as u32],
                &[
                    dx.all(),
                    mask.buf.slice(moff, mlen),
                    weights.buf.slice(off, len),
                ],
                groups,
            );
        }
        batch.submit()
    }
}
