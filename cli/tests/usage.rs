//! Exit statuses, shell completions and man pages of the `prunus` binary.

mod common;

use common::{prunus, scratch};

/// 0 success, 1 a failed check, 2 a usage or input error: every status,
/// from the command line. (The prune and lab tests cover 0 and 2 for each
/// command; the prune tests cover 1 for `inspect --check`.)
#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    for args in [
        &["--bogus"][..],
        &[],
        &["prune"],
        &[
            "prune",
            "in.safetensors",
            "-o",
            "out.safetensors",
            "--sparsity",
            "2",
        ],
        &["completions", "tcsh-of-the-future"],
        &["lab", "flow", "--backend", "tpu"],
    ] {
        let out = prunus(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("error") || stderr.contains("Usage"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    for args in [&["--help"][..], &["--version"], &["prune", "--help"]] {
        assert_eq!(prunus(args).status.code(), Some(0), "{args:?}");
    }
    let help = String::from_utf8(prunus(&["--help"]).stdout).unwrap();
    assert!(
        help.contains("Exit status: 0 success, 1 a failed check"),
        "{help}"
    );
}

#[test]
fn a_missing_input_file_exits_2() {
    let out = prunus(&["inspect", "/nonexistent/model.safetensors"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error:"));
}

#[test]
fn completions_for_each_shell() {
    for (shell, needle) in [
        ("bash", "_prunus()"),
        ("zsh", "#compdef prunus"),
        ("fish", "complete -c prunus"),
    ] {
        let out = prunus(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(needle), "{shell}: {script}");
        // Subcommands and their flags are completed.
        assert!(
            script.contains("inspect") && script.contains("sparsity"),
            "{shell}"
        );
    }
}

#[test]
fn man_page_printed_and_written_per_command() {
    let out = prunus(&["man"]);
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq") || page.contains(".TH prunus"),
        "{page}"
    );
    assert!(
        page.contains("prune") && page.contains("Exit status"),
        "{page}"
    );

    let dir = scratch("man");
    let out = prunus(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in [
        "prunus.1",
        "prunus-prune.1",
        "prunus-bench-select.1",
        "prunus-lab-cbs.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".TH"), "{name}");
    }
    assert!(!dir.join("prunus-help.1").exists());
    let out = prunus(&["man", "--dir", "/nonexistent/man1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dir"));
    let _ = std::fs::remove_dir_all(dir);
}
