//! The conformance suite on the wgpu backend: with the device's own window
//! size, and with windows of 2048 elements so that every multi-window path
//! (bindings over the storage limit) runs on small tensors too. Skipped with
//! a printed reason when there is no adapter, unless `PRUNUS_REQUIRE_GPU=1`.

use prunus_tests::gpu::{wgpu_backend, wgpu_small_windows};

prunus_tests::conformance_tests!(wgpu_whole, maybe: wgpu_backend());
prunus_tests::conformance_tests!(wgpu_windows, maybe: wgpu_small_windows());
