//! End-to-end runs of `prunus lab flow` on the synthetic default data.

mod common;

use common::{prunus, scratch};

use serde_json::Value;

#[test]
fn a_small_flow_run_prints_the_table_and_writes_report_and_plot() {
    let dir = scratch("flow");
    let (json, svg) = (dir.join("flow.json"), dir.join("flow.svg"));
    let out = prunus(&[
        "lab",
        "flow",
        "--seeds",
        "2",
        "--measures",
        "magnitude,snip,grasp",
        "--rounds",
        "2",
        "--epochs",
        "1",
        "--channels",
        "4,6",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "on synthetic",
        "magnitude",
        "grasp",
        "(i) magnitude",
        "(iii) GraSP",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from\n{stdout}");
    }
    assert!(stderr.contains(" 6/6] grasp"), "{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["protocol"], "flow");
    assert_eq!(report["dataset"], "synthetic");
    let rows = report["rows"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["method"] == "snip" && r["metric"] == "test_acc")
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r["method"] == "grasp" && r["metric"] == "train_loss")
            .count(),
        3
    );
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("magnitude"));
}

#[test]
fn bad_requests_fail_with_a_message_and_status_2() {
    let dir = scratch("flow-bad");
    let cases: [(&[&str], &str); 6] = [
        (&["--channels", "2,3"], "at most 3 of the 5 filters can go"),
        (&["--measures", "obs"], "one of magnitude"),
        (&["--data", "/nonexistent/mnist"], "not found"),
        (&["--sparsity", "1.5"], "sparsity"),
        (&["--rounds", "0"], "rounds"),
        (&["--json", "/nonexistent/dir/x.json"], "--json"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["lab", "flow", "--seeds", "1"];
        args.extend_from_slice(extra);
        let out = prunus(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(stderr.contains(needle), "{extra:?}: {stderr}");
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}
