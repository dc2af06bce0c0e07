//! End-to-end runs of `prunus bench select` on small sizes.

mod common;

use common::{gpu_expected, prunus, scratch};

use serde_json::Value;

/// Runs a small selection benchmark and returns its JSON report.
fn report(tag: &str, extra: &[&str]) -> Value {
    let dir = scratch(tag);
    let json = dir.join("select.json");
    let json_arg = json.to_str().unwrap();
    let mut args = vec!["bench", "select", "--repeat", "1", "--json", json_arg];
    args.extend_from_slice(extra);
    let out = prunus(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ratio prunus / floor"), "{stdout}");
    // Only the report: no temporary file left next to it.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["select.json"]);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    v
}

fn row<'a>(v: &'a Value, metric: &str) -> &'a Value {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["metric"] == metric)
        .unwrap_or_else(|| panic!("no row {metric}"))
}

#[test]
fn small_run_prunes_exactly_and_writes_the_schema() {
    // Seed 3: the threshold key is held by exactly one weight (a tie at the cut).
    let v = report(
        "small",
        &[
            "--params",
            "100000",
            "--tensors",
            "7",
            "--sparsity",
            "0.37",
            "--seed",
            "3",
        ],
    );
    for key in [
        "protocol",
        "prunus_version",
        "dataset",
        "seeds",
        "config",
        "rows",
        "timing_s",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["protocol"], "bench-select");
    assert_eq!(v["dataset"], "synthetic");
    assert_eq!(v["seeds"], serde_json::json!([3]));
    for key in [
        "params", "tensors", "sparsity", "backend", "threads", "repeat",
    ] {
        assert!(v["config"].get(key).is_some(), "config misses {key}");
    }
    assert_eq!(v["config"]["params"], 100_000);
    assert_eq!(v["config"]["tensors"], 7);
    assert!(v["config"]["backend"].as_str().unwrap().starts_with("cpu"));
    for key in ["generate", "total"] {
        assert!(
            v["timing_s"][key].as_f64().unwrap() >= 0.0,
            "timing_s.{key}"
        );
    }
    for metric in ["floor_ms", "prunus_ms", "ratio", "pruned"] {
        let r = row(&v, metric);
        assert_eq!(r["method"], "prunus");
        assert_eq!(r["sparsity"], 0.37);
        assert_eq!(r["values"].as_array().unwrap().len(), 1, "{metric}");
        for key in ["mean", "std"] {
            assert!(r[key].is_number(), "{metric}.{key}");
        }
    }
    assert_eq!(row(&v, "pruned")["values"], serde_json::json!([37000.0]));
    #[cfg(target_os = "linux")]
    assert!(row(&v, "peak_rss_mb")["values"][0].as_f64().unwrap() > 0.0);
}

#[test]
fn every_backend_and_thread_count_rounds_half_up() {
    // round(0.5 * 1001) = 501: half a weight rounds away from zero.
    for extra in [
        &["--backend", "cpu", "--threads", "1"][..],
        &["--backend", "cpu", "--threads", "3"],
        &["--backend", "reference"],
    ] {
        let mut args = vec!["--params", "1001", "--tensors", "3", "--sparsity", "0.5"];
        args.extend_from_slice(extra);
        let v = report(&format!("half-{}", extra.join("")), &args);
        assert_eq!(
            row(&v, "pruned")["values"],
            serde_json::json!([501.0]),
            "{extra:?}"
        );
    }
}

#[test]
fn several_seeds_and_sparsities_are_exact() {
    for (seed, s, k) in [
        ("0", "0.9", 45_000.0),
        ("1", "0.37", 18_500.0),
        ("2", "0.123", 6_150.0),
        ("4", "0.999", 49_950.0),
    ] {
        let v = report(
            &format!("seeds-{seed}"),
            &[
                "--params",
                "50000",
                "--tensors",
                "11",
                "--sparsity",
                s,
                "--seed",
                seed,
            ],
        );
        assert_eq!(
            row(&v, "pruned")["values"],
            serde_json::json!([k]),
            "seed {seed}, sparsity {s}"
        );
    }
}

#[test]
fn extreme_sparsities_are_exact() {
    for (s, k) in [("0", 0.0), ("1", 5000.0)] {
        let v = report(
            &format!("extreme-{s}"),
            &["--params", "5000", "--tensors", "4", "--sparsity", s],
        );
        assert_eq!(
            row(&v, "pruned")["values"],
            serde_json::json!([k]),
            "sparsity {s}"
        );
    }
}

#[test]
fn bad_settings_exit_2_with_a_message() {
    for (args, needle) in [
        (&["bench", "select", "--sparsity", "1.5"][..], "1.5"),
        (
            &["bench", "select", "--params", "3", "--tensors", "4"],
            "params",
        ),
        (
            &["bench", "select", "--tensors", "0", "--params", "10"],
            "tensors",
        ),
        (&["bench", "select", "--repeat", "0"], "repeat"),
        (
            &[
                "bench",
                "select",
                "--json",
                "/nonexistent-dir/x.json",
                "--params",
                "10",
                "--tensors",
                "2",
            ],
            "--json",
        ),
    ] {
        let out = prunus(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("error:"), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn help_describes_the_benchmark() {
    let out = prunus(&["bench", "select", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--params",
        "--sparsity",
        "--backend",
        "--threads",
        "--json",
        "floor",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}

#[test]
fn wgpu_run_prunes_exactly_and_names_the_adapter() {
    if !gpu_expected() {
        return;
    }
    let v = report(
        "wgpu",
        &[
            "--params",
            "300000",
            "--tensors",
            "3",
            "--sparsity",
            "0.7",
            "--backend",
            "wgpu",
        ],
    );
    assert_eq!(row(&v, "pruned")["values"][0], 210_000.0);
    let backend = v["config"]["backend"].as_str().unwrap();
    let adapter = v["config"]["adapter"].as_str().unwrap();
    assert!(
        backend.starts_with("wgpu(") && backend.contains(adapter),
        "{backend} / {adapter}"
    );
}

#[test]
fn both_selection_plans_prune_exactly_and_are_reported() {
    for plan in ["gather", "histograms"] {
        let v = report(
            &format!("plan-{plan}"),
            &[
                "--params",
                "1500000",
                "--tensors",
                "4",
                "--sparsity",
                "0.35",
                "--plan",
                plan,
            ],
        );
        assert_eq!(row(&v, "pruned")["values"][0], 525_000.0);
        assert_eq!(v["config"]["plan"], plan);
    }
    let out = prunus(&[
        "bench",
        "select",
        "--backend",
        "reference",
        "--plan",
        "histograms",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn adapter_choice_is_checked() {
    let out = prunus(&["bench", "select", "--adapter", "0", "--params", "1000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--backend wgpu"));
    let out = prunus(&[
        "bench",
        "select",
        "--backend",
        "wgpu",
        "--adapter",
        "no such adapter",
        "--params",
        "1000",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no usable GPU adapter"));
}
