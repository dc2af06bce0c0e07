//! The project's own use of the [`prunus_testing`] harness: the conformance
//! suite instantiated for the CPU backend at every SIMD level and thread
//! count, the wgpu backend and the reference backend (in `tests/`), the
//! property tests of pruning, the lab's and adapters' end-to-end tests, and
//! [`gpu`], the wgpu backend for tests where this machine has an adapter.
//!
//! Everything generic — strategies, invariants, the conformance checks, the
//! oracle — lives in the published `prunus-testing` crate, so that other
//! backends, hosts and pruning code are tested by the same harness.
//!
//! ```
//! // One #[test] per check, for the reference backend:
//! prunus_testing::conformance_tests!(reference, prunus_core::ReferenceBackend);
//! # fn main() {}
//! ```

pub mod gpu;
