#![doc = include_str!("../README.md")]
//!
//! # Modules
//!
//! - [`strategies`]: proptest strategies for shapes, tensors (with and
//!   without ties, signed zeros, NaN, subnormals), distinct scores,
//!   sparsities, N:M patterns with shapes that fit, masks, named layer lists
//!   and schedules;
//! - [`invariants`]: the invariants of pruning as checks that return a
//!   [`Violation`] naming what differs and where;
//! - [`conformance`]: the conformance suite of [`prunus_core::Backend`],
//!   against [`prunus_core::ReferenceBackend`], instantiated by
//!   [`conformance_tests!`] or run as a whole by
//!   [`conformance::run_conformance`];
//! - [`dense`]: the same for [`prunus_core::Dense`] (the second-order linear
//!   algebra), instantiated by [`dense_conformance_tests!`];
//! - [`host`]: checks for any [`prunus_core::Host`]: gradients against finite
//!   differences, masks kept through training steps;
//! - [`layers`], [`oracle`] and [`compare`]: named layers in host memory, a
//!   naive sort-based model of [`prunus_core::prune()`], and assertions whose
//!   messages say where two results part ways.

pub mod compare;
pub mod conformance;
pub mod dense;
pub mod host;
pub mod invariants;
pub mod layers;
pub mod oracle;
pub mod strategies;

pub use conformance::{CheckFailure, ConformanceFailures, run_conformance};
pub use invariants::Violation;
/// The proptest this crate's strategies are written for, so that users need
/// not keep a second version in step.
pub use proptest;

/// Expands to a module `$module` with one `#[test]` per check of
/// [`conformance`], each running it on `$backend` (an expression evaluated
/// inside the module, which imports the caller's scope), plus a test that no
/// check of [`conformance`] is missing from the list. With `maybe:`, the
/// expression is an `Option` of a backend, and each test returns at once on
/// `None` (a device that is absent on this machine).
///
/// ```
/// use prunus_core::ReferenceBackend;
/// prunus_testing::conformance_tests!(reference, ReferenceBackend);
/// // A device that may be absent: every test returns at once on `None`.
/// prunus_testing::conformance_tests!(maybe_reference, maybe: Some(ReferenceBackend));
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($module:ident, maybe: $backend:expr) => {
        $crate::__with_backend_checks!(@tests $module, ($backend));
    };
    ($module:ident, $backend:expr) => {
        $crate::__with_backend_checks!(@tests $module, (Some($backend)));
    };
}

/// The one list of the checks of [`conformance`], handed to
/// [`__backend_checks`].
#[doc(hidden)]
#[macro_export]
macro_rules! __with_backend_checks {
    ($($args:tt)*) => {
        $crate::__backend_checks! { $($args)*;
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
            check_select_lowest,
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
        }
    };
}

/// Expands the list of [`__with_backend_checks`]: `@tests` into a test
/// module, `@list` into `(name, fn)` pairs for a backend type.
#[doc(hidden)]
#[macro_export]
macro_rules! __backend_checks {
    (@list $backend:ty; $($check:ident),* $(,)?) => {
        ::std::vec![$(
            (stringify!($check), $crate::conformance::$check::<$backend> as fn(&$backend))
        ),*]
    };
    (@tests $module:ident, $maybe:tt; $($check:ident),* $(,)?) => {
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
                let mut listed = ::std::vec![$(stringify!($check)),*];
                let mut declared = $crate::conformance::declared_checks();
                assert!(declared.len() > 30, "found only {declared:?} in conformance.rs");
                listed.sort_unstable();
                declared.sort_unstable();
                assert_eq!(listed, declared, "conformance_tests! must list every check of conformance.rs");
            }
        }
    };
}

/// Expands to a module `$module` with one `#[test]` per check of [`dense`],
/// each running it on `$dense` (an expression evaluated inside the module,
/// which imports the caller's scope; anything that implements
/// [`prunus_core::Dense`]), plus a test that no check of [`dense`] is
/// missing from the list. With `maybe:`, the expression is an `Option`, and
/// each test returns at once on `None`.
///
/// ```
/// use prunus_core::ReferenceBackend;
/// prunus_testing::dense_conformance_tests!(reference_dense, ReferenceBackend);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! dense_conformance_tests {
    ($module:ident, maybe: $dense:expr) => {
        $crate::__with_dense_checks!(@tests $module, ($dense));
    };
    ($module:ident, $dense:expr) => {
        $crate::__with_dense_checks!(@tests $module, (Some($dense)));
    };
}

/// The one list of the checks of [`dense`], handed to [`__dense_checks`].
#[doc(hidden)]
#[macro_export]
macro_rules! __with_dense_checks {
    ($($args:tt)*) => {
        $crate::__dense_checks! { $($args)*;
            check_matmul,
            check_matmul_zero_beta,
            check_gram,
            check_cholesky,
            check_solve_rows,
            check_shape_errors,
            check_not_positive_definite,
        }
    };
}

/// Expands the list of [`__with_dense_checks`] into a test module.
#[doc(hidden)]
#[macro_export]
macro_rules! __dense_checks {
    (@tests $module:ident, $maybe:tt; $($check:ident),* $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[test]
                fn $check() {
                    let Some(dense) = $maybe else { return };
                    $crate::dense::$check(&dense);
                }
            )*

            #[test]
            fn every_check_is_listed() {
                let mut listed = ::std::vec![$(stringify!($check)),*];
                let mut declared = $crate::dense::declared_checks();
                listed.sort_unstable();
                declared.sort_unstable();
                assert_eq!(listed, declared, "dense_conformance_tests! must list every check of dense.rs");
            }
        }
    };
}

/// The names of the `pub fn check_*` functions declared in `source`, in
/// order.
fn declared_in(source: &'static str) -> Vec<&'static str> {
    source
        .lines()
        .filter_map(|l| l.strip_prefix("pub fn "))
        .filter_map(|l| l.split('<').next())
        .filter(|n| n.starts_with("check_"))
        .collect()
}
