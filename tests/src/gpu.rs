//! The GPU backend for tests, when this machine has an adapter.

use std::sync::OnceLock;

use prunus_core::{Backend, SelectionPlan};
use prunus_wgpu::WgpuBackend;

/// Whether `PRUNUS_REQUIRE_GPU=1` makes a missing adapter a failure.
pub fn gpu_required() -> bool {
    std::env::var("PRUNUS_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// One wgpu backend per test process, or `None` (with the reason printed
/// once) where no adapter exists. Panics when no adapter exists and
/// `PRUNUS_REQUIRE_GPU=1`.
pub fn wgpu_backend() -> Option<WgpuBackend> {
    static BACKEND: OnceLock<Option<WgpuBackend>> = OnceLock::new();
    let b = BACKEND.get_or_init(|| match WgpuBackend::new() {
        Ok(b) => {
            if b.flushes_subnormals() {
                eprintln!(
                    "{b:?} flushes subnormals: elementwise and reduction checks allow the \
                     flushed amounts where a subnormal value takes part"
                );
            }
            Some(b)
        }
        Err(e) if gpu_required() => panic!("PRUNUS_REQUIRE_GPU=1 but the GPU backend failed: {e}"),
        Err(e) => {
            eprintln!("skipping the GPU tests: {e}");
            None
        }
    });
    b.clone()
}

/// The wgpu backend with windows of 2048 elements, so that small test
/// tensors take the multi-window paths of large ones, and with the histogram
/// selection plan of real GPUs (the software adapter of CI defaults to the
/// gather plan, which [`wgpu_backend`] keeps).
pub fn wgpu_small_windows() -> Option<WgpuBackend> {
    wgpu_backend().map(|b| {
        b.with_max_window(2048)
            .with_selection_plan(SelectionPlan::Histograms)
    })
}

/// The wgpu backend under [`SelectionPlan::Device`], with the device's own
/// window size.
pub fn wgpu_device() -> Option<WgpuBackend> {
    wgpu_backend().map(|b| b.with_selection_plan(SelectionPlan::Device))
}

/// The wgpu backend under [`SelectionPlan::Device`] with windows of 2048
/// elements and 3 segments per dispatch, so that small test tensors take
/// the paths of calls with many tensors and of tensors over the binding
/// limit (passes of several dispatches, positions across dispatches), and
/// a candidate list that holds every bucket (the third pass and split ties
/// always go through it).
pub fn wgpu_device_windows() -> Option<WgpuBackend> {
    wgpu_device_share(1)
}

/// [`wgpu_device_windows`] with a candidate list of 1/`share` of a call's
/// elements (0: none, so every pass reads the scores and split ties take
/// the tie-block pass).
pub fn wgpu_device_share(share: u32) -> Option<WgpuBackend> {
    wgpu_backend().map(|b| {
        b.with_max_window(2048)
            .with_max_segments(3)
            .with_candidate_share(share)
            .with_selection_plan(SelectionPlan::Device)
    })
}
