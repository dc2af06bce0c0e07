//! The conformance suite on the CPU backend once per instruction-set level
//! ([`SimdLevel`]): every level the processor supports must give the
//! reference backend's masks bit for bit (ties, NaN policies, N:M,
//! local/global scopes, survivors), under both selection plans. A level the
//! processor lacks is skipped with a printed reason; set
//! `PRUNUS_REQUIRE_SIMD=avx512` (a comma-separated list of levels) to make a
//! missing level a failure instead, on machines that are known to have it.

use prunus_core::SelectionPlan;
use prunus_cpu::{CpuBackend, Par, SimdLevel};

/// A two-thread backend whose kernels run on `level`, or `None` (with the
/// reason printed) when this processor lacks it.
fn at(level: SimdLevel, plan: SelectionPlan) -> Option<CpuBackend<'static>> {
    if !level.is_supported() {
        assert!(
            !required().contains(&level),
            "PRUNUS_REQUIRE_SIMD asks for {level}, which this processor lacks (it supports {:?})",
            SimdLevel::supported()
        );
        eprintln!("skipped: this processor cannot run the {level} kernels");
        return None;
    }
    let b = CpuBackend::new(Par::Rayon(2))
        .expect("cpu backend, 2 threads")
        .with_simd(level)
        .expect("a supported level")
        .with_selection_plan(plan);
    assert_eq!(b.simd(), level);
    Some(b)
}

/// The levels `PRUNUS_REQUIRE_SIMD` says must be present.
fn required() -> Vec<SimdLevel> {
    std::env::var("PRUNUS_REQUIRE_SIMD")
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.parse().expect("PRUNUS_REQUIRE_SIMD lists levels"))
        .collect()
}

prunus_testing::conformance_tests!(
    simd_baseline,
    maybe: at(SimdLevel::Baseline, SelectionPlan::Gather)
);
prunus_testing::conformance_tests!(
    simd_baseline_histogram_plan,
    maybe: at(SimdLevel::Baseline, SelectionPlan::Histograms)
);
prunus_testing::conformance_tests!(
    simd_avx2,
    maybe: at(SimdLevel::Avx2, SelectionPlan::Gather)
);
prunus_testing::conformance_tests!(
    simd_avx2_histogram_plan,
    maybe: at(SimdLevel::Avx2, SelectionPlan::Histograms)
);
prunus_testing::conformance_tests!(
    simd_avx512,
    maybe: at(SimdLevel::Avx512, SelectionPlan::Gather)
);
prunus_testing::conformance_tests!(
    simd_avx512_histogram_plan,
    maybe: at(SimdLevel::Avx512, SelectionPlan::Histograms)
);
prunus_testing::conformance_tests!(
    simd_neon,
    maybe: at(SimdLevel::Neon, SelectionPlan::Gather)
);
prunus_testing::conformance_tests!(
    simd_neon_histogram_plan,
    maybe: at(SimdLevel::Neon, SelectionPlan::Histograms)
);

/// Every level has its modules above, so a new level cannot go untested.
#[test]
fn every_level_is_listed() {
    let listed = ["baseline", "avx2", "avx512", "neon"];
    let all: Vec<&str> = SimdLevel::ALL.iter().map(|l| l.name()).collect();
    assert_eq!(all, listed);
}

/// A level the processor lacks is refused with the levels it has, never
/// silently replaced.
#[test]
fn unsupported_level_is_an_error() {
    for level in SimdLevel::ALL {
        let b = CpuBackend::new(Par::Seq)
            .expect("sequential cpu backend")
            .with_simd(level);
        match b {
            Ok(b) => assert_eq!(b.simd(), level),
            Err(e) => {
                assert!(!level.is_supported());
                let e = e.to_string();
                assert!(
                    e.contains(level.name()) && e.contains("it supports: baseline"),
                    "{e}"
                );
            }
        }
    }
}
