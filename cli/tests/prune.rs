//! End-to-end runs of `prunus prune`, `prunus inspect` and
//! `prunus bench checkpoint` at a small size.

mod common;

use std::path::{Path, PathBuf};

use common::{prunus, scratch};
use serde_json::Value;

/// A small checkpoint: two BF16 matrices, an F32 matrix, a 1-D norm and an
/// I64 tensor, with distinct magnitudes.
fn checkpoint(dir: &Path) -> PathBuf {
    let specs: [(&str, &str, Vec<usize>); 5] = [
        ("model.layers.0.attn.weight", "BF16", vec![8, 16]),
        ("model.layers.0.mlp.weight", "BF16", vec![16, 8]),
        ("model.norm.weight", "F32", vec![16]),
        ("lm_head.weight", "F32", vec![4, 16]),
        ("position_ids", "I64", vec![4]),
    ];
    write_checkpoint(&dir.join("model.safetensors"), &specs, |t, i| {
        ((i * 7 + t * 13) % 97) as f32 / 10.0 - 4.85
    })
}

/// Writes a checkpoint of `specs` (name, dtype, shape) to `path`, element
/// `i` of tensor `t` being `value(t, i)`.
fn write_checkpoint(
    path: &Path,
    specs: &[(&str, &str, Vec<usize>)],
    value: impl Fn(usize, usize) -> f32,
) -> PathBuf {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (t, (name, dtype, shape)) in specs.iter().enumerate() {
        let n: usize = shape.iter().product();
        let start = data.len();
        for i in 0..n {
            let x = value(t, i);
            match *dtype {
                "BF16" => data.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
                "F32" => data.extend_from_slice(&x.to_le_bytes()),
                _ => data.extend_from_slice(&(i as i64).to_le_bytes()),
            }
        }
        if t > 0 {
            header.push(',');
        }
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":[{}],\"data_offsets\":[{start},{}]}}",
            dims.join(","),
            data.len()
        ));
    }
    header.push('}');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    std::fs::write(path, file).unwrap();
    path.to_path_buf()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = prunus(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str], needle: &str) {
    fails_with(2, args, needle);
}

fn fails_with(status: i32, args: &[&str], needle: &str) {
    let out = prunus(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(status), "{args:?}: {stderr}");
    assert!(stderr.starts_with("error:"), "{stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
}

#[test]
fn prune_reports_each_tensor_and_writes_masks() {
    let dir = scratch("prune");
    let input = checkpoint(&dir);
    let before = std::fs::read(&input).unwrap();
    let out = dir.join("pruned.safetensors");
    let table = ok(&[
        "prune",
        s(&input),
        "-o",
        s(&out),
        "--sparsity",
        "0.75",
        "--masks",
        "--verbose",
    ]);
    for needle in [
        "model.layers.0.attn.weight",
        "kept (1-D)",
        "kept (dtype)",
        "pruned 3 of 5 tensors (320 of 340 elements): sparsity 0.00% -> 75.00%",
        "kept 2 tensors as they were: 1 1-D, 1 dtype",
    ] {
        assert!(table.contains(needle), "{needle}: {table}");
    }
    assert_eq!(std::fs::read(&input).unwrap(), before, "the input changed");
    // inspect sees the sparsity and the masks; JSON for scripts.
    let report: Value = serde_json::from_str(&ok(&["inspect", s(&out), "--json"])).unwrap();
    let tensors = report["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 8, "5 tensors and 3 masks");
    let zeros: u64 = tensors
        .iter()
        .filter(|t| t["dtype"] != "U8" && t["shape"].as_array().unwrap().len() == 2)
        .map(|t| t["zeros"].as_u64().unwrap())
        .sum();
    assert_eq!(zeros, 240);
    assert_eq!(report["metadata"]["prunus.sparsity"], "0.75");
    assert_eq!(report["metadata"]["prunus.scope"], "global");
    // The same run as JSON, with --force over the existing output.
    let json: Value = serde_json::from_str(&ok(&[
        "prune",
        s(&input),
        "-o",
        s(&out),
        "--sparsity",
        "0.75",
        "--json",
        "--force",
        "--scope",
        "local",
        "--exclude",
        "lm_head",
    ]))
    .unwrap();
    assert_eq!(json["pruned_elements"], 256);
    assert_eq!(json["zeros_after"], 192);
    let lm = json["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "lm_head.weight")
        .unwrap();
    assert_eq!(lm["kept_because"], "excluded");
    let _ = std::fs::remove_dir_all(dir);
}

/// By default only the totals and the tensors that stand out are listed;
/// `--verbose` lists every tensor.
#[test]
fn prune_lists_the_tensors_that_stand_out() {
    let dir = scratch("prune-standouts");
    let specs: [(&str, &str, Vec<usize>); 5] = [
        ("tiny.weight", "F32", vec![4, 16]),
        ("huge.weight", "F32", vec![4, 16]),
        ("spread.weight", "F32", vec![16, 16]),
        ("low.weight", "F32", vec![8, 16]),
        ("norm.weight", "F32", vec![16]),
    ];
    // Global 50% of 512 weights: the 64 zeros, all but one of the 128 low
    // ones (a layer is never emptied), none of the huge ones, a quarter of
    // the spread ones.
    let input = write_checkpoint(&dir.join("odd.safetensors"), &specs, |t, i| match t {
        0 => 0.0,
        1 => 100.0 + i as f32,
        3 => 0.5 + i as f32 * 1e-3,
        _ => 1.0 + i as f32 / 256.0,
    });
    let out = dir.join("pruned.safetensors");
    let args = ["prune", s(&input), "-o", s(&out), "--sparsity", "0.5"];
    let summary = ok(&args);
    for needle in [
        "pruned 4 of 5 tensors (512 of 528 elements): sparsity 12.50% -> 50.20%",
        "kept 1 tensors as they were: 1 1-D",
        "4 of the 4 pruned tensors stand out",
    ] {
        assert!(summary.contains(needle), "{needle}: {summary}");
    }
    // Fully pruned first, then untouched, then far from the target.
    let rows: Vec<&str> = summary.lines().filter(|l| l.contains(".weight")).collect();
    assert_eq!(rows.len(), 4, "{summary}");
    for (row, (name, why)) in rows.iter().zip([
        ("tiny.weight", "fully pruned"),
        ("huge.weight", "untouched (no weight removed)"),
        ("low.weight", "49.2 points above target"),
        ("spread.weight", "24.2 points below target"),
    ]) {
        assert!(row.starts_with(name) && row.ends_with(why), "{row}");
    }
    // --verbose: every tensor, the standouts noted.
    let mut verbose = args.to_vec();
    verbose.extend(["--force", "--verbose"]);
    let table = ok(&verbose);
    for needle in [
        "norm.weight",
        "kept (1-D)",
        "pruned: fully pruned",
        "pruned: untouched",
    ] {
        assert!(table.contains(needle), "{needle}: {table}");
    }
    // Local scope without the zero tensor: every tensor at the target,
    // nothing stands out.
    let mut local = args.to_vec();
    local.extend(["--force", "--scope", "local", "--exclude", "tiny"]);
    let summary = ok(&local);
    assert!(summary.contains("no pruned tensor stands out"), "{summary}");
    assert!(!summary.contains("tiny.weight"), "{summary}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn two_four_output_passes_the_conformance_check() {
    let dir = scratch("prune-nm");
    let input = checkpoint(&dir);
    let out = dir.join("nm.safetensors");
    // The dense input fails the check (status 1: a check, not an error);
    // the 2:4 output passes it.
    fails_with(
        1,
        &["inspect", s(&input), "--check"],
        "do not conform to 2:4",
    );
    ok(&[
        "prune",
        s(&input),
        "-o",
        s(&out),
        "--pattern",
        "2:4",
        "--quiet",
    ]);
    let table = ok(&["inspect", s(&out), "--check"]);
    assert!(
        table.contains("3 of 3 checkable tensors conform to 2:4"),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_requests_and_files_are_refused_with_the_reason() {
    let dir = scratch("prune-bad");
    let input = checkpoint(&dir);
    let out = dir.join("out.safetensors");
    let (i, o) = (s(&input), s(&out));
    fails(&["prune", i, "-o", i, "--sparsity", "0.5"], "--in-place");
    fails(&["prune", i, "-o", o], "--sparsity");
    fails(
        &["prune", i, "-o", o, "--sparsity", "0.5", "--pattern", "2:4"],
        "--pattern",
    );
    fails(
        &["prune", i, "-o", o, "--sparsity", "0.5", "--include", "("],
        "regular expression",
    );
    fails(
        &[
            "prune",
            i,
            "-o",
            o,
            "--sparsity",
            "0.5",
            "--include",
            "nothing",
        ],
        "no tensor",
    );
    fails(
        &[
            "prune",
            i,
            "-o",
            o,
            "--sparsity",
            "0.9",
            "--min-density",
            "0.5",
            "--scope",
            "local",
        ],
        "guards (minimum density, never empty a layer) allow at most",
    );
    assert!(!out.exists());
    let out2 = prunus(&["prune", i, "-o", o, "--sparsity", "1.5"]);
    assert_eq!(out2.status.code(), Some(2));
    // A truncated file names the tensor whose data is missing.
    let mut bytes = std::fs::read(&input).unwrap();
    bytes.truncate(bytes.len() - 10);
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, bytes).unwrap();
    fails(
        &["prune", s(&cut), "-o", o, "--sparsity", "0.5"],
        "tensor 'position_ids'",
    );
    fails(&["inspect", s(&cut)], "truncated");
    // In place, when asked for.
    ok(&["prune", i, "-o", i, "--sparsity", "0.5", "--in-place"]);
    let table = ok(&["inspect", i]);
    assert!(table.contains("prunus.sparsity = 0.5"), "{table}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        2,
        "no temporary file is left behind"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bench_checkpoint_runs_a_small_decoder() {
    let dir = scratch("bench-ckpt");
    let json = dir.join("bench.json");
    let out = ok(&[
        "bench",
        "checkpoint",
        "--layers",
        "1",
        "--hidden",
        "64",
        "--intermediate",
        "128",
        "--vocab",
        "100",
        "--dir",
        s(&dir),
        "--json",
        s(&json),
    ]);
    assert!(out.contains("prunus prune"), "{out}");
    assert!(out.contains("exactly"), "{out}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["protocol"], "bench-checkpoint");
    let methods: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert!(methods.contains(&"cp") && methods.contains(&"prunus"));
    // prunus's CPU time (user + system of the child) beside its wall time.
    let cpu = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["method"] == "prunus" && r["metric"] == "cpu_s")
        .unwrap_or_else(|| panic!("no cpu_s row: {report}"));
    assert!(cpu["values"][0].as_f64().unwrap() >= 0.0, "{cpu}");
    assert!(out.contains("prunus CPU time"), "{out}");
    // Only the report is left.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bench_checkpoint_runs_a_small_mixture_of_experts() {
    let dir = scratch("bench-moe");
    let json = dir.join("bench.json");
    let out = ok(&[
        "bench",
        "checkpoint",
        "--layout",
        "moe",
        "--layers",
        "3",
        "--experts",
        "40",
        "--hidden",
        "32",
        "--intermediate",
        "16",
        "--vocab",
        "64",
        "--dtype",
        "f32",
        "--dir",
        s(&dir),
        "--json",
        s(&json),
    ]);
    // 3 layers of 4 attention projections, a router and 40 x 3 experts,
    // plus the embedding and the head.
    assert!(out.contains("(377 prunable)"), "{out}");
    assert!(out.contains("exactly"), "{out}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["config"]["layout"], "moe");
    assert_eq!(report["config"]["experts"], 40);
    let _ = std::fs::remove_dir_all(dir);
}
