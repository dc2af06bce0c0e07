//! The conformance suite on the rayon CPU backend: sequential, and on its own
//! pools of one and two threads (the parallel paths must give the reference's
//! results bit for bit whatever the thread count), and with the histogram
//! selection plan of GPUs (the same masks by another path through core).

use prunus_core::SelectionPlan;
use prunus_cpu::{CpuBackend, Par};

prunus_testing::conformance_tests!(
    cpu_seq,
    CpuBackend::new(Par::Seq).expect("sequential cpu backend")
);
prunus_testing::conformance_tests!(
    cpu_rayon_1,
    CpuBackend::new(Par::Rayon(1)).expect("cpu backend, 1 thread")
);
prunus_testing::conformance_tests!(
    cpu_rayon_2,
    CpuBackend::new(Par::Rayon(2)).expect("cpu backend, 2 threads")
);
prunus_testing::conformance_tests!(
    cpu_histogram_plan,
    CpuBackend::new(Par::Rayon(2))
        .expect("cpu backend, 2 threads")
        .with_selection_plan(SelectionPlan::Histograms)
);
