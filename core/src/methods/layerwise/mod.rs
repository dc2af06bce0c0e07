//! Layer-wise calibrated pruning (METHODS.md §5).
