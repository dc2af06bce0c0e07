//! Cross-backend conformance suite and property tests of prunus.
//!
//! - [`conformance`]: `check_*` functions generic over [`prunus_core::Backend`],
//!   with the reference backend as the oracle;
//! - [`conformance_tests!`]: one `#[test]` per check for a backend instance;
//! - [`oracle`]: a naive sort-based model of `prune()`;
//! - [`strategies`]: shared proptest strategies;
//! - [`host`] and [`compare`]: test data and assertions;
//! - [`dense`]: the same for the second-order linear algebra.
//!
//! ```
//! // One #[test] per check, for the reference backend:
//! prunus_tests::conformance_tests!(reference, prunus_core::ReferenceBackend);
//! # fn main() {}
//! ```

pub mod compare;
pub mod conformance;
pub mod dense;
pub mod gpu;
pub mod host;
pub mod oracle;
pub mod strategies;

/// Expands to a module `$module` with one `#[test]` per conformance check,
/// each running it on a fresh `$backend` (an expression evaluated inside the
/// module, which imports the caller's scope), plus a test that no check of
/// [`conformance`] is missing from the list. With `maybe:`, the expression
/// is an `Option` of a backend, and each test returns at once on `None` (a
/// device that is absent: see [`gpu::wgpu_backend`]).
///
/// ```
/// use prunus_cpu::{CpuBackend, Par};
/// prunus_tests::conformance_tests!(cpu_seq, CpuBackend::new(Par::Seq).unwrap());
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, maybe: $backend:expr) => {
        $crate::conformance_tests!(@list $module, ($backend));
    };
    ($module:ident, $backend:expr) => {
        $crate::conformance_tests!(@list $module, (Some($backend)));
    };
    (@list $module:ident, $maybe:tt) => {
        $crate::conformance_tests!(@checks $module, $maybe;
            check_upload_download,
            check_mask_transfer,
            check_unary_ops,
            check_binary_ops,
            check_reduce_groups,
            check_random_uniform,
            check_histogram,
            check_histogram_merge,
            check_count_keys,
            check_threshold_masks,
            check_threshold_masks_hand_computed,
            check_range_masks,
            check_sample_keys,
            check_n_of_m_masks,
            check_selection_large,
            check_apply_mask,
            check_gemv,
            check_gemm,
            check_rank1_update,
            check_dot,
            check_cholesky_solve,
            check_prune_unstructured,
            check_prune_hand_computed_global,
            check_prune_hand_computed_local,
            check_select_signed_scores,
            check_prune_ties_across_layers,
            check_prune_large,
            check_prune_sampled,
            check_prune_groups,
            check_prune_groups_hand_computed,
            check_prune_n_of_m,
            check_prune_n_of_m_hand_computed,
            check_prune_random_importance,
            check_prune_guards,
            check_prune_nan_policies,
            check_prune_survivors,
            check_prune_iterative,
            check_prune_errors,
            check_apply,
            check_layer_api,
        );
    };
    (@checks $module:ident, $maybe:tt; $($check:ident),* $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[test]
                fn $check() {
                    let Some(backend) = $maybe else { return };
                    $crate::conformance::$check(&backend);
                }
            )*

            #[test]
            fn every_check_is_listed() {
                let mut listed = vec![$(stringify!($check)),*];
                let mut declared = $crate::declared_checks();
                assert!(declared.len() > 30, "found only {declared:?} in conformance.rs");
                listed.sort_unstable();
                declared.sort_unstable();
                assert_eq!(listed, declared, "conformance_tests! must list every check of conformance.rs");
            }
        }
    };
}

/// The names of the `pub fn check_*` functions declared in [`conformance`],
/// read from its source, in order.
#[doc(hidden)]
pub fn declared_checks() -> Vec<&'static str> {
    const SOURCE: &str = include_str!("conformance.rs");
    SOURCE
        .lines()
        .filter_map(|l| l.strip_prefix("pub fn "))
        .filter_map(|l| l.split('<').next())
        .filter(|n| n.starts_with("check_"))
        .collect()
}
