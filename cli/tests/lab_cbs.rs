//! End-to-end runs of `prunus lab cbs` and `prunus bench obs` at small sizes.

mod common;

use common::{gpu_expected, prunus, refused_before_work, scratch};

use serde_json::Value;

#[test]
fn a_small_cbs_run_prints_the_table_and_writes_report_and_plot() {
    let dir = scratch("cbs");
    let (json, svg) = (dir.join("cbs.json"), dir.join("cbs.svg"));
    let out = prunus(&[
        "lab",
        "cbs",
        "--seeds",
        "1",
        "--sparsities",
        "0.5,0.9",
        "--epochs",
        "1",
        "--fisher-samples",
        "60",
        "--trials",
        "2",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "mlp 784-40-20-10 on synthetic",
        "| 0.9 |",
        "paper: MP",
        "Gap to MP",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from\n{stdout}");
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["protocol"], "cbs");
    assert_eq!(report["config"]["fisher_samples"], 60);
    let rows = report["rows"].as_array().unwrap();
    for m in ["MP", "WF-S", "WF", "CBS-S", "CBS"] {
        let n = rows
            .iter()
            .filter(|r| r["method"] == m && r["metric"] == "test_acc")
            .count();
        assert_eq!(n, 2, "{m}");
    }
    for stage in ["fisher", "select", "update", "total"] {
        assert!(report["timing_s"][stage].is_number(), "{stage}");
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("CBS-S"));
}

#[test]
fn bad_cbs_settings_fail_before_any_work() {
    for args in [
        &["lab", "cbs", "--sparsities", "0.5,1.5"][..],
        &["lab", "cbs", "--damping", "0"],
        &["lab", "cbs", "--update-scale", "NaN"],
    ] {
        refused_before_work(args);
    }
}

#[test]
fn the_obs_benchmark_reports_every_stage() {
    let dir = scratch("obs");
    let json = dir.join("obs.json");
    let out = prunus(&[
        "bench",
        "obs",
        "--params",
        "3000",
        "--samples",
        "200",
        "--block",
        "1024",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("d = 3000, N = 200, 3 block(s)"), "{stdout}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["protocol"], "bench-obs");
    for stage in [
        "build",
        "diag",
        "select-mp",
        "select-wf",
        "select-cbs",
        "update-wf",
        "update-obs",
    ] {
        assert!(report["timing_s"][stage].is_number(), "{stage}");
    }
}

#[test]
fn bad_obs_benchmark_settings_are_errors_not_panics() {
    for args in [
        &["bench", "obs", "--params", "0"][..],
        &["bench", "obs", "--samples", "0"],
        &[
            "bench",
            "obs",
            "--params",
            "100",
            "--samples",
            "10",
            "--block",
            "0",
        ],
        &[
            "bench",
            "obs",
            "--params",
            "100",
            "--samples",
            "10",
            "--sparsity",
            "1.5",
        ],
    ] {
        let out = prunus(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// The CBS-S objective ratios and pass counts of a run (one seed).
fn search_rows(report: &Value) -> Vec<(String, f64)> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["metric"] == "objective_ratio" || r["metric"] == "passes")
        .map(|r| {
            (
                format!("{} {}", r["metric"], r["sparsity"]),
                r["values"][0].as_f64().unwrap(),
            )
        })
        .collect()
}

/// `--backend wgpu` sends the Fisher's Gram product, Cholesky factor and
/// many-row solves to the device (300 samples: enough flops per byte) and
/// finds what the CPU backend finds: the same CBS-S objective ratios, to
/// f32 rounding, and the same number of passes.
#[test]
fn the_wgpu_backend_offloads_the_fisher_and_finds_what_the_cpu_finds() {
    if !gpu_expected() {
        return;
    }
    let dir = scratch("cbs-wgpu");
    let mut reports = Vec::new();
    for backend in ["cpu", "wgpu"] {
        let json = dir.join(format!("{backend}.json"));
        let out = prunus(&[
            "lab",
            "cbs",
            "--seeds",
            "1",
            "--sparsities",
            "0.5,0.9",
            "--epochs",
            "1",
            "--fisher-samples",
            "300",
            "--trials",
            "2",
            "--backend",
            backend,
            "--json",
            json.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
        if backend == "wgpu" {
            let line = stderr
                .lines()
                .find(|l| l.contains("GFLOP on the device"))
                .unwrap_or_else(|| panic!("no flops line in\n{stderr}"));
            let device: f64 = line
                .split(": ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|g| g.parse().ok())
                .unwrap_or_else(|| panic!("unreadable flops line {line}"));
            assert!(device > 1.0, "only {device} GFLOP on the device: {line}");
        }
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        reports.push(search_rows(&report));
    }
    assert_eq!(reports[0].len(), 4);
    for ((what, cpu), (_, gpu)) in reports[0].iter().zip(&reports[1]) {
        assert!(
            (cpu - gpu).abs() <= 1e-4 * cpu.abs(),
            "{what}: cpu {cpu}, wgpu {gpu}"
        );
    }
}
