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

/// A statistics file as `bench/layer_stats.py` writes it: two layers of
/// different widths, with `tokens` correlated inputs each.
fn write_stats(path: &std::path::Path, tokens: usize) {
    use safetensors::tensor::TensorView;
    use safetensors::{Dtype, serialize_to_file};
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, out, cols) in [("blk.fc1", 12, 16), ("blk.fc2", 8, 24)] {
        let weights: Vec<u8> = (0..out * cols)
            .flat_map(|_| (next() as f32).to_le_bytes())
            .collect();
        // Correlated inputs: a shared factor plus noise, uneven scales.
        let mut gram = vec![0.0f64; cols * cols];
        let mut sums = vec![0.0f64; cols];
        for _ in 0..tokens {
            let f = next();
            let x: Vec<f64> = (0..cols)
                .map(|j| (f + 0.3 * next()) * (1.0 + j as f64 / 4.0))
                .collect();
            for i in 0..cols {
                sums[i] += x[i] * x[i];
                for j in 0..cols {
                    gram[i * cols + j] += x[i] * x[j];
                }
            }
        }
        let f64s = |v: &[f64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        buffers.push((
            format!("{name}.weight"),
            Dtype::F32,
            vec![out, cols],
            weights,
        ));
        buffers.push((
            format!("{name}.gram"),
            Dtype::F64,
            vec![cols, cols],
            f64s(&gram),
        ));
        buffers.push((
            format!("{name}.sum_squares"),
            Dtype::F64,
            vec![cols],
            f64s(&sums),
        ));
        let rows = (tokens as i64).to_le_bytes().to_vec();
        buffers.push((format!("{name}.rows"), Dtype::I64, vec![1], rows));
    }
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    serialize_to_file(views, None, path).unwrap();
}

#[test]
fn statistics_from_a_file_are_benchmarked_layer_by_layer() {
    let dir = scratch("layerwise-stats");
    let stats = dir.join("stats.safetensors");
    write_stats(&stats, 200);
    let json = dir.join("real.json");
    let out = prunus(&[
        "bench",
        "layerwise",
        "--stats",
        stats.to_str().unwrap(),
        "--block",
        "8",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("2 layers from"), "{stdout}");
    assert!(stdout.contains("| blk.fc2 | 2:4 | obs |"), "{stdout}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for layer in ["blk.fc1", "blk.fc2"] {
        let error = |m: &str| {
            v["rows"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| {
                    r["method"] == m && r["layer"] == layer && r["metric"] == "relative_error"
                })
                .unwrap_or_else(|| panic!("no {m} on {layer}"))["values"][0]
                .as_f64()
                .unwrap()
        };
        assert!(error("obs") < error("sparsegpt"), "{layer}");
        assert!(error("sparsegpt") < error("magnitude"), "{layer}");
    }

    // A truncated file, one with a tensor missing, and no file at all are
    // refused with the reason.
    let bytes = std::fs::read(&stats).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    refused_before_work(&["bench", "layerwise", "--stats", cut.to_str().unwrap()]);
    let text = dir.join("not.safetensors");
    std::fs::write(&text, b"hello").unwrap();
    refused_before_work(&["bench", "layerwise", "--stats", text.to_str().unwrap()]);
    let missing = dir.join("missing.safetensors");
    refused_before_work(&["bench", "layerwise", "--stats", missing.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
}
