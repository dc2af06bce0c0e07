//! End-to-end runs of `prunus bench layerwise` on small layers.

mod common;

use common::{prunus, refused_before_work, scratch};

use serde_json::Value;

/// The value of one report row.
fn value(v: &Value, method: &str, task: &str, metric: &str) -> f64 {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["method"] == method && r["task"] == task && r["metric"] == metric)
        .unwrap_or_else(|| panic!("no row {method} {task} {metric}"))["values"][0]
        .as_f64()
        .unwrap()
}

#[test]
fn small_layers_rank_the_methods_and_write_the_schema() {
    let dir = scratch("layerwise");
    let json = dir.join("layerwise.json");
    let out = prunus(&[
        "bench",
        "layerwise",
        "--shapes",
        "24x64,16x32",
        "--samples",
        "256",
        "--targets",
        "0.5,2:4",
        "--block",
        "16",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| 24x64 | 2:4 | obs |"), "{stdout}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["protocol"], "bench-layerwise");
    let rows = v["rows"].as_array().unwrap();
    // 2 shapes x 2 targets x 5 methods x 3 metrics, and the peak RSS.
    assert!(rows.len() >= 60, "{} rows", rows.len());
    assert!(rows.iter().any(|r| r["layer"] == "16x32"));
    for task in ["50%", "2:4"] {
        let error = |m: &str| value(&v, m, task, "reconstruction_error");
        // On correlated inputs every step up in method lowers the error.
        assert!(
            error("obs") <= error("obs-blocked") * (1.0 + 1e-9),
            "{task}"
        );
        assert!(error("obs-blocked") < error("sparsegpt"), "{task}");
        assert!(error("sparsegpt") < error("wanda"), "{task}");
        assert!(error("wanda") < error("magnitude"), "{task}");
        let rel = value(&v, "sparsegpt", task, "relative_error");
        assert!(rel > 0.0 && rel < 1.0, "{task}: {rel}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_are_refused() {
    refused_before_work(&["bench", "layerwise", "--shapes", "0x8"]);
    refused_before_work(&["bench", "layerwise", "--shapes", "8x"]);
    refused_before_work(&["bench", "layerwise", "--targets", "1.5"]);
    refused_before_work(&["bench", "layerwise", "--targets", "2:4", "--block", "6"]);
    refused_before_work(&["bench", "layerwise", "--shapes", "8x6", "--targets", "2:4"]);
}
