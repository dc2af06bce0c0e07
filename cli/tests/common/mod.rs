//! Helpers shared by the end-to-end tests of the `prunus` binary.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the `prunus` binary with `args`.
pub(crate) fn prunus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_prunus"))
        .args(args)
        .output()
        .expect("the prunus binary runs")
}

/// A fresh, empty directory for one test.
pub(crate) fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("prunus-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
