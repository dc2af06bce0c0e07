//! End-to-end runs of `prunus lab infcop` at a small size.

mod common;

use common::{prunus, refused_before_work, scratch};

use serde_json::Value;

#[test]
fn a_small_infcop_run_prints_the_table_and_writes_report_and_plot() {
    let dir = scratch("infcop");
    let (json, svg) = (dir.join("infcop.json"), dir.join("infcop.svg"));
    let out = prunus(&[
        "lab",
        "infcop",
        "--seeds",
        "1",
        "--hidden",
        "16,8",
        "--target",
        "0.5",
        "--dense-epochs",
        "2",
        "--epochs",
        "2",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains("ε for gradient flow"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "mlp 784-16-8-10 on synthetic",
        "incop-gf vs imp:",
        "per round",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from\n{stdout}");
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["protocol"], "infcop");
    assert_eq!(report["config"]["target"], 0.5);
    assert!(report["config"]["epsilon"]["gradient"].is_number());
    let rows = report["rows"].as_array().unwrap();
    for m in ["imp", "incop-if", "incop-gf"] {
        for metric in ["epochs", "wall_s", "test_acc"] {
            assert!(
                rows.iter()
                    .any(|r| r["method"] == m && r["metric"] == metric),
                "{m} {metric}"
            );
        }
        assert!(rows.iter().any(|r| r["method"] == m && r["round"] == 3));
    }
    assert!(report["timing_s"]["total"].is_number());
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("incop-gf"));
}

#[test]
fn bad_infcop_settings_fail_before_any_work() {
    for args in [
        &["lab", "infcop", "--target", "1.5"][..],
        &["lab", "infcop", "--rate", "0"],
        &["lab", "infcop", "--epsilon-if", "-1"],
        &["lab", "infcop", "--tolerance", "NaN"],
        &["lab", "infcop", "--warmup", "20", "--dense-epochs", "3"],
    ] {
        refused_before_work(args);
    }
}
