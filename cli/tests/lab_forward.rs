//! End-to-end runs of `prunus lab forward` at a small size.

mod common;

use common::{prunus, refused_before_work, scratch};

use serde_json::Value;

#[test]
fn a_small_forward_run_prints_the_table_and_writes_report_and_plot() {
    let dir = scratch("forward");
    let (json, svg) = (dir.join("forward.json"), dir.join("forward.svg"));
    let out = prunus(&[
        "lab",
        "forward",
        "--seeds",
        "2",
        "--tasks",
        "teacher-student",
        "--student-hidden",
        "24",
        "--dense-epochs",
        "1",
        "--finetune-epochs",
        "1",
        "--fractions",
        "0.25",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stderr.contains("forward : layer 0 kept 6 of 24"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "teacher-student (mlp 32-24-4) on synthetic: 2 seeds",
        "forward vs backward elimination:",
        "forward vs training from scratch:",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from\n{stdout}");
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["protocol"], "forward");
    let rows = report["rows"].as_array().unwrap();
    for m in ["forward", "backward", "scratch"] {
        for metric in ["test_acc", "test_acc_before_ft", "params"] {
            let row = rows
                .iter()
                .find(|r| r["method"] == m && r["metric"] == metric && r["width"] == 6)
                .unwrap_or_else(|| panic!("{m} {metric} at width 6"));
            assert_eq!(row["values"].as_array().unwrap().len(), 2);
            assert_eq!(row["task"], "teacher-student");
        }
    }
    let params = rows
        .iter()
        .find(|r| r["method"] == "forward" && r["metric"] == "params" && r["width"] == 6)
        .unwrap();
    let compacted = f64::from(32 * 6 + 6 + 6 * 4 + 4);
    assert_eq!(
        params["mean"].as_f64(),
        Some(compacted),
        "the compacted network"
    );
    assert!(report["timing_s"]["total"].is_number());
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("scratch"));
}

#[test]
fn bad_forward_settings_are_refused_before_any_work() {
    for bad in [
        ["--fractions", "0"],
        ["--fractions", "1.5"],
        ["--candidates", "0"],
        ["--tolerance", "2"],
        ["--batch-fraction", "0"],
        ["--layer-lr", "-1"],
        ["--hidden", "0"],
    ] {
        let mut args = vec!["lab", "forward"];
        args.extend(bad);
        refused_before_work(&args);
    }
}
