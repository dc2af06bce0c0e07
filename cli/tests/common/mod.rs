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

/// Asserts that `prunus args` fails with an `error:` message before any work
/// starts (no data was loaded).
#[allow(dead_code)] // not every test binary that includes this module uses it
pub(crate) fn refused_before_work(args: &[&str]) {
    let out = prunus(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{args:?}");
    assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
    assert!(!stderr.contains("data:"), "{args:?} started work: {stderr}");
}

/// Whether the GPU path can run here: an adapter exists, or
/// `PRUNUS_REQUIRE_GPU=1` demands that it does.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub(crate) fn gpu_expected() -> bool {
    let out = prunus(&["adapters"]);
    assert_eq!(out.status.code(), Some(0));
    let listed = !String::from_utf8_lossy(&out.stdout).starts_with("no GPU adapter");
    let required = std::env::var("PRUNUS_REQUIRE_GPU").is_ok_and(|v| v == "1");
    if !listed && !required {
        eprintln!("skipping: no GPU adapter on this machine");
    }
    listed || required
}
