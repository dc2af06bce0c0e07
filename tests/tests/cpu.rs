//! The conformance suite on the rayon CPU backend: sequential, and on its own
//! pools of one and two threads (the parallel paths must give the reference's
//! results bit for bit whatever the thread count).

use prunus_cpu::{CpuBackend, Par};

prunus_tests::conformance_tests!(
    cpu_seq,
    CpuBackend::new(Par::Seq).expect("sequential cpu backend")
);
prunus_tests::conformance_tests!(
    cpu_rayon_1,
    CpuBackend::new(Par::Rayon(1)).expect("cpu backend, 1 thread")
);
prunus_tests::conformance_tests!(
    cpu_rayon_2,
    CpuBackend::new(Par::Rayon(2)).expect("cpu backend, 2 threads")
);
