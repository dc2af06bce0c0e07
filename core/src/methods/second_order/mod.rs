//! Second-order pruning (METHODS.md §2): the empirical Fisher and its
//! damped inverse, multi-weight OBS and WoodFisher updates, and the
//! Combinatorial Brain Surgeon's selection.

pub mod fisher;
pub mod surgeon;
