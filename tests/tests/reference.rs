//! The conformance suite on the scalar reference backend (the oracle against
//! itself, and against the naive oracle and the hand-computed masks).

use prunus_core::ReferenceBackend;

prunus_testing::conformance_tests!(reference, ReferenceBackend);
