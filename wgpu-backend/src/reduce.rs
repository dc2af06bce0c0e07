//! Grouped reductions (rows, columns, blocks) in the canonical chunked
//! order, window by window.

use prunus_core::contract::granularity::REDUCE_CHUNK;
use prunus_core::{Grouping, HasShape, Reduction, Result};

use crate::context::{Access, Kernel, Shader, backend_error};
use crate::window::WINDOW_ALIGN;
use crate::{WgpuBackend, WgpuTensor};

static SHADER: Shader = Shader {
    name: "reduce",
    source: include_str!("../shaders/reduce.wgsl"),
};

const BINDINGS: &[Access] = &[Access::Read, Access::ReadWrite, Access::ReadWrite];

impl WgpuBackend {
    pub(crate) fn reduce(
        &self,
        x: &WgpuTensor,
        grouping: Grouping,
        reduction: Reduction,
    ) -> Result<WgpuTensor> {
        grouping.validate()?;
        let shape = x.shape();
        let n = x.numel();
        if n >= u32::MAX as u64 {
            return Err(backend_error(format!(
                "group reductions on the GPU take tensors of fewer than 2^32 elements, not {n}"
            )));
        }
        let (r, c) = shape.matrix_view();
        let units = grouping.units(shape);
        let (kind, block_rows, block_cols, longest) = match grouping {
            Grouping::Rows => (0, 1, 1, c),
            Grouping::Columns => (1, 1, 1, r),
            Grouping::Blocks { rows, cols } => (2, rows, cols, rows.min(r) * cols.min(c)),
            _ => {
                return Err(backend_error(format!(
                    "the GPU backend does not know the grouping {grouping:?}"
                )));
            }
        };
        let chunks = longest.div_ceil(REDUCE_CHUNK).max(1);
        let out = self.new_tensor(&grouping.unit_shape(shape))?;
        if units == 0 {
            return Ok(out);
        }
        let state = self.gpu.storage((units * chunks) as u64 * 4)?;
        let code = match reduction {
            Reduction::Sum => 0,
            Reduction::L1 => 1,
            Reduction::SumSquares => 2,
            Reduction::MaxAbs => 3,
        };
        let params = |n: u64, start: u64| {
            [
                n as u32,
                units as u32,
                start as u32,
                0,
                kind,
                r as u32,
                c as u32,
                block_rows.min(u32::MAX as usize) as u32,
                block_cols.min(u32::MAX as usize) as u32,
                code,
                chunks as u32,
            ]
        };
        let fold = Kernel {
            shader: &SHADER,
            entry: "reduce_fold",
            bindings: BINDINGS,
        };
        let finish = Kernel {
            entry: "reduce_finish",
            ..fold
        };
        let dummy = self.dummy()?;
        let mut batch = self.gpu.batch();
        batch.clear(state.all());
        for w in self.windows(n, WINDOW_ALIGN) {
            let (off, len) = w.score_bytes();
            let groups = batch.groups_for((units * chunks) as u64);
            batch.dispatch(
                &fold,
                &params(w.len, w.start),
                &[x.buf.slice(off, len), state.all(), dummy.all()],
                groups,
            );
        }
        let groups = batch.groups_for(units as u64);
        batch.dispatch(
            &finish,
            &params(0, 0),
            &[dummy.all(), state.all(), out.buf.slice(0, units as u64 * 4)],
            groups,
        );
        batch.submit()?;
        Ok(out)
    }
}
