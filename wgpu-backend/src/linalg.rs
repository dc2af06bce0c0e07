//! Dense linear algebra for the second-order methods: gemv, gemm, rank-1
//! update and dot on the device; the Cholesky solve on the host.

use prunus_core::contract::check;
use prunus_core::{Backend, HasShape, HostTensor, ReferenceBackend, Result, Shape, Transpose};

use crate::context::{Access, Kernel, Shader, backend_error};
use crate::window::WINDOW_ALIGN;
use crate::{ReadWay, WgpuBackend, WgpuTensor};

static SHADER: Shader = Shader {
    name: "linalg",
    source: include_str!("../shaders/linalg.wgsl"),
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
    /// Fails unless every operand fits one binding (dense kernels index the
    /// whole operand).
    fn whole(&self, op: &str, tensors: &[&WgpuTensor]) -> Result<()> {
        let limit = self.gpu.max_binding() / 4;
        for t in tensors {
            if t.numel() > limit {
                return Err(backend_error(format!(
                    "{op}: an operand of {} elements exceeds one binding of this device ({} elements)",
                    t.numel(),
                    limit
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn matvec(&self, a: &WgpuTensor, x: &WgpuTensor) -> Result<WgpuTensor> {
        let (m, n) = check::gemv_dims(a.shape(), x.shape())?;
        self.whole("gemv", &[a, x])?;
        let out = self.new_tensor(&Shape::vector(m))?;
        let mut batch = self.gpu.batch();
        let groups = batch.groups_for(m as u64);
        batch.dispatch(
            &kernel("gemv"),
            &[0, 0, 0, 0, m as u32, n as u32],
            &[a.buf.all(), x.buf.all(), out.buf.all()],
            groups,
        );
        batch.submit()?;
        Ok(out)
    }

    pub(crate) fn matmul(
        &self,
        a: &WgpuTensor,
        ta: Transpose,
        b: &WgpuTensor,
        tb: Transpose,
    ) -> Result<WgpuTensor> {
        let (m, k, n) = check::gemm_dims(a.shape(), ta, b.shape(), tb)?;
        let out_shape = Shape::matrix(m, n)?;
        self.whole("gemm", &[a, b])?;
        if (m * n) as u64 > self.gpu.max_binding() / 4 {
            return Err(backend_error(format!(
                "gemm: a product of {m} x {n} exceeds one binding of this device"
            )));
        }
        let (_, ac) = a.shape().matrix_view();
        let (_, bc) = b.shape().matrix_view();
        let out = self.new_tensor(&out_shape)?;
        let t = |t: Transpose| (t == Transpose::Yes) as u32;
        let mut batch = self.gpu.batch();
        // One workgroup per 16 x 16 output tile (grid-strided past the limit).
        let tiles = (m.div_ceil(16) * n.div_ceil(16)) as u64;
        let groups = batch.groups_for(tiles * crate::context::WORKGROUP as u64);
        batch.dispatch(
            &kernel("gemm"),
            &[
                0,
                0,
                0,
                0,
                m as u32,
                k as u32,
                n as u32,
                t(ta),
                t(tb),
                ac as u32,
                bc as u32,
            ],
            &[a.buf.all(), b.buf.all(), out.buf.all()],
            groups,
        );
        batch.submit()?;
        Ok(out)
    }

    pub(crate) fn outer_update(
        &self,
        a: &mut WgpuTensor,
        alpha: f32,
        x: &WgpuTensor,
        y: &WgpuTensor,
    ) -> Result<()> {
        let (m, n) = check::matrix("rank-1 update matrix", a.shape())?;
        check::same_shape("rank-1 update x", &Shape::vector(m), x.shape())?;
        check::same_shape("rank-1 update y", &Shape::vector(n), y.shape())?;
        self.whole("rank-1 update", &[a, x, y])?;
        let mut batch = self.gpu.batch();
        let groups = batch.groups_for((m * n) as u64);
        batch.dispatch(
            &kernel("rank1_update"),
            &[0, 0, 0, 0, m as u32, n as u32, alpha.to_bits()],
            &[x.buf.all(), y.buf.all(), a.buf.all()],
            groups,
        );
        batch.submit()
    }

    pub(crate) fn inner(&self, a: &WgpuTensor, b: &WgpuTensor) -> Result<WgpuTensor> {
        check::same_shape("dot", a.shape(), b.shape())?;
        let windows = self.windows(a.numel(), WINDOW_ALIGN);
        let mut batch = self.gpu.batch();
        let groups: Vec<u32> = windows.iter().map(|w| batch.groups_for(w.len)).collect();
        let slots: u64 = groups.iter().map(|&g| g as u64).sum();
        let partials = self.gpu.storage(slots.max(1) * 4)?;
        let out = self.new_tensor(&Shape::vector(1))?;
        let mut slot = 0u32;
        for (w, &g) in windows.iter().zip(&groups) {
            let (off, len) = w.score_bytes();
            batch.dispatch(
                &kernel("dot_partial"),
                &[w.len as u32, 0, 0, 0, 0, 0, slot],
                &[a.buf.slice(off, len), b.buf.slice(off, len), partials.all()],
                g,
            );
            slot += g;
        }
        let dummy = self.dummy()?;
        batch.dispatch(
            &kernel("sum_partials"),
            &[slot],
            &[partials.all(), dummy.all(), out.buf.all()],
            1,
        );
        batch.submit()?;
        Ok(out)
    }

    /// One streaming read of every element of `tensors` on the device, the
    /// `way` way, and a wait for it: the bandwidth floor that selection is
    /// measured against (`prunus bench select --backend wgpu` takes the
    /// fastest way). Returns a checksum (the XOR of the elements' bits),
    /// the same either way, so that the read cannot be skipped.
    pub fn read_pass(&self, tensors: &[&WgpuTensor], way: ReadWay) -> Result<u32> {
        if way == ReadWay::Segments {
            return self.read_segments(tensors);
        }
        let mut batch = self.gpu.batch();
        let mut slots = 0u64;
        let mut work = Vec::new();
        for t in tensors {
            for w in self.windows(t.numel(), WINDOW_ALIGN) {
                let g = batch.groups_for(w.len);
                work.push((*t, w, g, slots as u32));
                slots += g as u64;
            }
        }
        let out = self.gpu.storage(slots.max(1) * 4)?;
        let dummy = self.dummy()?;
        for (t, w, g, slot) in work {
            let (off, len) = w.score_bytes();
            batch.dispatch(
                &kernel("read_pass"),
                &[w.len as u32, 0, 0, 0, 0, 0, slot],
                &[t.buf.slice(off, len), dummy.all(), out.all()],
                g,
            );
        }
        let back = self.gpu.read(batch, &[out.slice(0, slots * 4)])?;
        Ok(crate::u32s(&back[0]).into_iter().fold(0, |a, x| a ^ x))
    }

    /// The Cholesky solve runs on the host, in f64 like the reference
    /// backend: one download and one upload. It serves small systems (the
    /// second-order methods' blocks), where a device factorisation would
    /// bring neither speed nor the reference's precision.
    pub(crate) fn solve(&self, a: &WgpuTensor, b: &WgpuTensor) -> Result<WgpuTensor> {
        check::solve_dims(a.shape(), b.shape())?;
        let host = |t: &WgpuTensor| HostTensor::new(self.download(t)?, t.shape().clone());
        let x = ReferenceBackend.cholesky_solve(&host(a)?, &host(b)?)?;
        self.upload(x.data(), b.shape())
    }
}
