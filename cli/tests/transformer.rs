//! End-to-end runs of `prunus prune MODEL_DIR` and `prunus eval`: the tiny
//! sharded decoders committed as fixtures with every method, and the real
//! all-MiniLM-L6-v2 in `../shared/data` (skipped, with a notice, where it
//! is missing).

#![cfg(feature = "transformers")]

mod common;

use std::path::{Path, PathBuf};

use common::{prunus, scratch};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../adapters/candle/tests/fixtures")
        .join(name)
}

fn data(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} is missing (the shared data folder is not here)",
            p.display()
        );
        None
    }
}

/// A calibration text: the fixture generator's own sentences where the
/// shared data has them, else a built-in paragraph.
fn text(dir: &Path, lines: usize) -> PathBuf {
    let body = match data("text/python-docstrings.txt") {
        Some(p) => std::fs::read_to_string(p).unwrap(),
        None => "Return the sum of the two numbers given.\n\
                 Open the file and read every line into a list.\n\
                 Raise a ValueError when the argument is negative.\n"
            .repeat(40),
    };
    let path = dir.join(format!("text-{lines}.txt"));
    let kept: Vec<&str> = body.lines().take(lines).collect();
    std::fs::write(&path, kept.join("\n")).unwrap();
    path
}

fn json_of(out: &std::process::Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every zero (+0 or -0) among the named tensors of the safetensors files
/// in `dir`, stored as f32 or bf16.
fn zeros(dir: &Path, names: &[String]) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let bytes = std::fs::read(&path).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            for (name, view) in st.tensors() {
                if names.contains(&name) {
                    total += match view.dtype() {
                        safetensors::Dtype::F32 => view
                            .data()
                            .chunks_exact(4)
                            .filter(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) == 0.0)
                            .count(),
                        safetensors::Dtype::BF16 => view
                            .data()
                            .chunks_exact(2)
                            .filter(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7fff == 0)
                            .count(),
                        other => panic!("{name}: {other:?}"),
                    } as u64;
                }
            }
        }
    }
    total
}

/// Every family's tiny fixture (f32 and bf16, separate and fused
/// projections) with its linear layers: magnitude (global and per layer), Wanda 2:4,
/// SparseGPT, OBS and OBS 2:4, each pruning exactly half of them, the
/// output loading back and evaluating.
#[test]
fn tiny_decoders_prune_with_every_method_and_load_back() {
    for (name, linears) in [
        ("llama", 14),
        ("qwen3", 14),
        ("gemma2", 21),
        ("gemma3", 21),
        ("phi3", 8),
        // Attention's 4 and each expert's 3 (with qwen2_moe's shared
        // expert; its block 1 is dense); routers stay dense.
        ("mixtral", 2 * (4 + 4 * 3)),
        ("qwen2_moe", 2 * (4 + 6 * 3 + 3) + 7),
        ("qwen3_moe", 2 * (4 + 8 * 3)),
    ] {
        prunes_with_every_method_and_loads_back(name, linears);
    }
}

/// Experts no calibration token reaches are pruned by magnitude, counted,
/// and still lose exactly their share; the others report the tokens routed
/// to them. One sample of 3 tokens reaches at most 6 of an 8-expert
/// mixture (2 per token).
#[test]
fn experts_the_calibration_misses_are_pruned_by_magnitude() {
    let dir = scratch("tiny-qwen3_moe-unreached");
    let model = fixture("tiny-qwen3_moe");
    let calib = text(&dir, 5);
    let out = dir.join("out");
    let report = json_of(&prunus(&[
        "prune",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
        "-q",
        "--method",
        "sparsegpt",
        "--sparsity",
        "0.5",
        "--calibration",
        calib.to_str().unwrap(),
        "--samples",
        "1",
        "--seq-len",
        "3",
    ]));
    let layers = report["layers"].as_array().unwrap();
    let unreached = report["unreached_layers"].as_u64().unwrap();
    // Two blocks, each with at least 2 experts of 3 layers unreached.
    assert!(unreached >= 2 * 2 * 3, "{unreached}");
    let zero_token: Vec<&Value> = layers
        .iter()
        .filter(|l| l["calibration_tokens"] == 0)
        .collect();
    assert_eq!(zero_token.len() as u64, unreached);
    for l in &zero_token {
        assert!(l["name"].as_str().unwrap().contains(".experts."), "{l}");
        assert!(l["relative_error"].is_null());
    }
    // Attention sees all 3 tokens; a reached expert 1 to 3; every layer
    // loses exactly half.
    for l in layers {
        let tokens = l["calibration_tokens"].as_u64().unwrap();
        let name = l["name"].as_str().unwrap();
        if name.contains("self_attn") {
            assert_eq!(tokens, 3, "{name}");
        } else {
            assert!(tokens <= 3, "{name}");
        }
        let shape = l["shape"].as_array().unwrap();
        let n = shape[0].as_u64().unwrap() * shape[1].as_u64().unwrap();
        assert_eq!(l["pruned"].as_u64().unwrap(), n / 2, "{name}");
    }
}

fn prunes_with_every_method_and_loads_back(name: &str, linears: usize) {
    let dir = scratch(&format!("tiny-{name}"));
    let model = fixture(&format!("tiny-{name}"));
    let calib = text(&dir, 40);
    let eval = text(&dir, 80);
    let runs: [&[&str]; 6] = [
        &[
            "--method",
            "magnitude",
            "--sparsity",
            "0.5",
            "--scope",
            "global",
        ],
        &["--method", "magnitude", "--sparsity", "0.5"],
        &["--method", "wanda", "--pattern", "2:4"],
        &[
            "--method",
            "sparsegpt",
            "--sparsity",
            "0.5",
            "--block-size",
            "32",
        ],
        &["--method", "obs", "--sparsity", "0.5"],
        &["--method", "obs", "--pattern", "2:4", "--block-size", "32"],
    ];
    for (i, flags) in runs.iter().enumerate() {
        let out_dir = dir.join(format!("out-{i}"));
        let (o, c) = (out_dir.to_str().unwrap(), calib.to_str().unwrap());
        let mut args = vec!["prune", model.to_str().unwrap(), "-o", o, "--json", "-q"];
        args.extend_from_slice(flags);
        if flags[1] != "magnitude" {
            args.extend_from_slice(&["--calibration", c, "--samples", "8", "--seq-len", "32"]);
        }
        let report = json_of(&prunus(&args));
        let layers = report["layers"].as_array().unwrap();
        // Every block's projections; nothing else pruned.
        assert_eq!(layers.len(), linears, "{name} {flags:?}");
        let n = report["layer_weights"].as_u64().unwrap();
        assert_eq!(report["pruned_weights"].as_u64(), Some(n / 2), "{flags:?}");
        let names: Vec<String> = layers
            .iter()
            .map(|l| format!("{}.weight", l["name"].as_str().unwrap()))
            .collect();
        assert!(zeros(&out_dir, &names) >= n / 2, "{flags:?}");
        // Same sharding, an index, the tokenizer copied.
        for f in std::fs::read_dir(&model).unwrap() {
            let f = f.unwrap().file_name();
            assert!(out_dir.join(&f).exists(), "{flags:?}: {f:?} missing");
        }
        let index: Value = serde_json::from_slice(
            &std::fs::read(out_dir.join("model.safetensors.index.json")).unwrap(),
        )
        .unwrap();
        assert!(index["weight_map"].as_object().unwrap().len() > linears);
        // The output loads back and runs.
        let e = eval.to_str().unwrap();
        let r = json_of(&prunus(&[
            "eval",
            o,
            "--text",
            e,
            "--reference",
            model.to_str().unwrap(),
            "--seq-len",
            "64",
            "--json",
        ]));
        let p = r["perplexity"].as_f64().unwrap();
        assert!(p.is_finite() && p > 1.0, "{flags:?}: {r}");
        assert!(r["reference_perplexity"].as_f64().unwrap().is_finite());
        if flags[1] != "magnitude" {
            assert!(
                layers
                    .iter()
                    .all(|l| l["relative_error"].as_f64().unwrap() >= 0.0)
            );
        }
    }
}

#[test]
fn global_magnitude_is_exact_across_shards() {
    let dir = scratch("tiny-qwen2-global");
    let model = fixture("tiny-qwen2");
    let out_dir = dir.join("out");
    let report = json_of(&prunus(&[
        "prune",
        model.to_str().unwrap(),
        "-o",
        out_dir.to_str().unwrap(),
        "--method",
        "magnitude",
        "--sparsity",
        "0.37",
        "--scope",
        "global",
        "--json",
        "-q",
    ]));
    let n = report["layer_weights"].as_u64().unwrap();
    let pruned = report["pruned_weights"].as_u64().unwrap();
    assert_eq!(pruned, (0.37 * n as f64).round() as u64);
    let names: Vec<String> = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("{}.weight", l["name"].as_str().unwrap()))
        .collect();
    // qwen2 stores bf16; count in the written dtype through prunus inspect.
    let inspect_total: u64 = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .map(|p| {
            let r = json_of(&prunus(&["inspect", p.to_str().unwrap(), "--json"]));
            r["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| names.iter().any(|n| n == t["name"].as_str().unwrap()))
                .map(|t| t["zeros"].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(inspect_total, pruned);
    // prunus's settings are in the metadata.
    let first = out_dir.join("model-00001-of-00003.safetensors");
    let r = json_of(&prunus(&["inspect", first.to_str().unwrap(), "--json"]));
    assert_eq!(r["metadata"]["prunus_method"], "magnitude");
    assert_eq!(r["metadata"]["prunus_scope"], "global");
}

#[test]
fn bad_requests_fail_with_clear_errors() {
    let dir = scratch("transformer-errors");
    let model = fixture("tiny-llama");
    let m = model.to_str().unwrap();
    let out = dir.join("out");
    let o = out.to_str().unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n   \n").unwrap();
    let no_tok = dir.join("no-tokenizer");
    std::fs::create_dir_all(&no_tok).unwrap();
    for f in std::fs::read_dir(&model).unwrap() {
        let f = f.unwrap();
        if f.file_name() != "tokenizer.json" {
            std::fs::copy(f.path(), no_tok.join(f.file_name())).unwrap();
        }
    }
    let calib = text(&dir, 20);
    let c = calib.to_str().unwrap();
    let shard = model.join("model-00001-of-00003.safetensors");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "prune",
                m,
                "-o",
                o,
                "--method",
                "wanda",
                "--sparsity",
                "0.5",
            ],
            "--calibration",
        ),
        (
            vec![
                "prune",
                m,
                "-o",
                o,
                "--method",
                "wanda",
                "--sparsity",
                "0.5",
                "--calibration",
                empty.to_str().unwrap(),
            ],
            "no line with text",
        ),
        (
            vec![
                "prune",
                no_tok.to_str().unwrap(),
                "-o",
                o,
                "--method",
                "sparsegpt",
                "--sparsity",
                "0.5",
                "--calibration",
                c,
            ],
            "no tokenizer.json",
        ),
        (
            vec![
                "prune",
                m,
                "-o",
                o,
                "--method",
                "wanda",
                "--sparsity",
                "0.5",
                "--scope",
                "global",
                "--calibration",
                c,
            ],
            "magnitude only",
        ),
        (
            vec![
                "prune",
                m,
                "-o",
                o,
                "--method",
                "random",
                "--sparsity",
                "0.5",
            ],
            "random",
        ),
        (
            vec![
                "prune",
                m,
                "-o",
                o,
                "--sparsity",
                "0.5",
                "--include",
                "nothing-matches",
            ],
            "no linear layer",
        ),
        (
            vec!["prune", m, "-o", m, "--sparsity", "0.5"],
            "does not exist yet",
        ),
        // This build has no CUDA, or this machine no GPU: either way a
        // clear error naming the device, never a panic.
        (
            vec!["prune", m, "-o", o, "--sparsity", "0.5", "--device", "cuda"],
            "--device cuda:0",
        ),
        (
            vec!["prune", m, "-o", o, "--sparsity", "0.5", "--device", "tpu"],
            "give cpu, cuda, cuda:N, metal or metal:N",
        ),
        (
            vec!["eval", m, "--text", c, "--device", "metal:1"],
            "--device metal:1",
        ),
        (
            vec![
                "prune",
                shard.to_str().unwrap(),
                "-o",
                o,
                "--sparsity",
                "0.5",
                "--device",
                "cuda",
            ],
            "cpu for a single .safetensors file",
        ),
    ];
    for (args, says) in cases {
        let r = prunus(&args);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error:") && stderr.contains(says),
            "{args:?}: {stderr}"
        );
        assert!(!out.exists(), "{args:?} left an output");
    }
    // The input was never written: still byte-identical to the fixture.
    assert!(model.join("tokenizer.json").exists());
}

/// The real MiniLM: Wanda at 50% on 64 calibration sentences keeps the
/// embeddings close (the README's table uses 512), magnitude 2:4 without
/// data; the output keeps every file of the input.
#[test]
fn minilm_prunes_and_keeps_its_embeddings() {
    let (Some(model), Some(_)) = (data("minilm-l6-v2"), data("text/python-docstrings.txt")) else {
        return;
    };
    let dir = scratch("minilm");
    let calib = text(&dir, 64);
    let full = data("text/python-docstrings.txt").unwrap();
    let m = model.to_str().unwrap();
    let out = dir.join("wanda");
    let report = json_of(&prunus(&[
        "prune",
        m,
        "-o",
        out.to_str().unwrap(),
        "--method",
        "wanda",
        "--sparsity",
        "0.5",
        "--calibration",
        calib.to_str().unwrap(),
        "--json",
        "-q",
    ]));
    assert_eq!(report["layers"].as_array().unwrap().len(), 36);
    assert_eq!(report["samples"], 64);
    for l in report["layers"].as_array().unwrap() {
        assert_eq!(l["sparsity"].as_f64(), Some(0.5), "{l}");
    }
    for f in std::fs::read_dir(&model).unwrap() {
        let f = f.unwrap().file_name();
        assert!(out.join(&f).exists(), "{f:?} missing from the output");
    }
    let e = json_of(&prunus(&[
        "eval",
        out.to_str().unwrap(),
        "--text",
        full.to_str().unwrap(),
        "--skip",
        "512",
        "--lines",
        "300",
        "--reference",
        m,
        "--json",
    ]));
    assert_eq!(e["sentences"], 300);
    let wanda = e["mean_cosine"].as_f64().unwrap();
    assert!(wanda > 0.8, "{e}");

    let out = dir.join("magnitude");
    json_of(&prunus(&[
        "prune",
        m,
        "-o",
        out.to_str().unwrap(),
        "--pattern",
        "2:4",
        "--json",
        "-q",
    ]));
    let e = json_of(&prunus(&[
        "eval",
        out.to_str().unwrap(),
        "--text",
        full.to_str().unwrap(),
        "--skip",
        "512",
        "--lines",
        "300",
        "--reference",
        m,
        "--json",
    ]));
    let magnitude = e["mean_cosine"].as_f64().unwrap();
    assert!(
        magnitude < wanda,
        "magnitude 2:4 {magnitude} vs Wanda 50% {wanda}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--backend wgpu`: Wanda's masks equal the CPU's (the written shards are
/// byte for byte the same), SparseGPT's weights agree to f32 tolerance.
#[test]
fn wgpu_backend_gives_the_cpu_masks() {
    if !common::gpu_expected() {
        return;
    }
    let dir = scratch("tiny-llama-wgpu");
    let model = fixture("tiny-llama");
    let calib = text(&dir, 40);
    let run = |backend: &str, method: &str| {
        let out = dir.join(format!("{method}-{backend}"));
        json_of(&prunus(&[
            "prune",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--method",
            method,
            "--sparsity",
            "0.5",
            "--calibration",
            calib.to_str().unwrap(),
            "--samples",
            "8",
            "--seq-len",
            "32",
            "--backend",
            backend,
            "--json",
            "-q",
        ]));
        out
    };
    let (cpu, gpu) = (run("cpu", "wanda"), run("wgpu", "wanda"));
    for f in std::fs::read_dir(&cpu).unwrap() {
        let name = f.unwrap().file_name();
        if name.to_string_lossy().ends_with(".safetensors") {
            assert!(
                std::fs::read(cpu.join(&name)).unwrap() == std::fs::read(gpu.join(&name)).unwrap(),
                "{name:?} differs between the CPU and the GPU"
            );
        }
    }
    let (cpu, gpu) = (run("cpu", "sparsegpt"), run("wgpu", "sparsegpt"));
    let values = |dir: &Path| -> Vec<f32> {
        let mut all = Vec::new();
        for i in 1..=3 {
            let bytes =
                std::fs::read(dir.join(format!("model-0000{i}-of-00003.safetensors"))).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
            names.sort();
            for n in names.iter().filter(|n| n.contains("layers.")) {
                let v = st.tensor(n).unwrap();
                all.extend(
                    v.data()
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
        }
        all
    };
    let (a, b) = (values(&cpu), values(&gpu));
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= 1e-3 * scale,
        "SparseGPT weights differ by {worst} (scale {scale})"
    );
}

/// Structured pruning from the command line: every structure of the tiny
/// llama in one call, reported as JSON, then evaluated with its speed.
#[test]
fn structured_pruning_writes_a_smaller_model_that_evaluates() {
    let dir = scratch("structured");
    let model = fixture("tiny-llama");
    let calib = text(&dir, 40);
    let out = dir.join("out");
    let r = prunus(&[
        "prune",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--structured",
        "blocks=1,kv-heads=0.5,mlp=0.5",
        "--method",
        "obs",
        "--calibration",
        calib.to_str().unwrap(),
        "--samples",
        "4",
        "--seq-len",
        "32",
        "--json",
    ]);
    let j = json_of(&r);
    assert_eq!(j["blocks"]["removed"].as_array().unwrap().len(), 1);
    assert_eq!(
        j["layers"].as_array().unwrap().len(),
        2,
        "one block left, two structures"
    );
    assert!(j["output_weight_bytes"].as_u64().unwrap() < j["input_weight_bytes"].as_u64().unwrap());
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 1);
    assert_eq!(config["num_key_value_heads"], 1);
    assert_eq!(config["num_attention_heads"], 2);
    assert_eq!(config["intermediate_size"], 64);
    let e = json_of(&prunus(&[
        "eval",
        out.to_str().unwrap(),
        "--reference",
        model.to_str().unwrap(),
        "--text",
        calib.to_str().unwrap(),
        "--seq-len",
        "32",
        "--speed",
        "--generate",
        "4",
        "--json",
    ]));
    assert!(e["perplexity"].as_f64().unwrap().is_finite());
    assert!(e["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(e["reference_prefill_tokens_per_s"].as_f64().unwrap() > 0.0);
    // Every weight file records which groups of which layer went.
    let mut recorded = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let bytes = std::fs::read(&path).unwrap();
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            let m = meta.metadata().clone().unwrap();
            let removed: Value = serde_json::from_str(&m["prunus_removed_groups"]).unwrap();
            assert_eq!(removed.as_object().unwrap().len(), 2);
            assert_eq!(m["prunus_structured"], "blocks=1,kv-heads=0.5,mlp=0.5");
            recorded += 1;
        }
    }
    assert!(recorded > 0);
    // The smaller model can be pruned again, unstructured.
    let again = dir.join("again");
    let j = json_of(&prunus(&[
        "prune",
        out.to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
        "--method",
        "sparsegpt",
        "--sparsity",
        "0.5",
        "--calibration",
        calib.to_str().unwrap(),
        "--samples",
        "4",
        "--seq-len",
        "32",
        "--json",
    ]));
    assert_eq!(
        j["pruned_weights"].as_u64().unwrap() * 2,
        j["layer_weights"].as_u64().unwrap()
    );
}

/// Bad structured requests: exit status 2, a message naming the problem,
/// nothing written.
#[test]
fn structured_requests_fail_with_clear_errors() {
    let dir = scratch("structured-errors");
    let llama = fixture("tiny-llama");
    let mistral = fixture("tiny-mistral");
    let (l, mi) = (llama.to_str().unwrap(), mistral.to_str().unwrap());
    let shard = llama.join("model-00001-of-00003.safetensors");
    let calib = text(&dir, 20);
    let c = calib.to_str().unwrap();
    let out = dir.join("out");
    let o = out.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "prune",
                l,
                "-o",
                o,
                "--structured",
                "mlp=0.5",
                "--pattern",
                "2:4",
            ],
            "N:M",
        ),
        (
            vec!["prune", l, "-o", o, "--structured", "mlp=1.5"],
            "fraction",
        ),
        (
            vec!["prune", l, "-o", o, "--structured", "experts=0.5"],
            "experts",
        ),
        (
            vec!["prune", l, "-o", o, "--structured", "blocks=0"],
            "blocks=0",
        ),
        (
            vec![
                "prune",
                l,
                "-o",
                o,
                "--structured",
                "mlp=0.5",
                "--method",
                "wanda",
            ],
            "--calibration",
        ),
        (
            vec![
                "prune",
                l,
                "-o",
                o,
                "--structured",
                "mlp=0.5",
                "--method",
                "sparsegpt",
            ],
            "--structured",
        ),
        (
            vec![
                "prune",
                l,
                "-o",
                o,
                "--method",
                "fluctuation",
                "--sparsity",
                "0.5",
            ],
            "--structured",
        ),
        (
            vec!["prune", l, "-o", o, "--no-refit", "--sparsity", "0.5"],
            "--structured",
        ),
        (
            vec![
                "prune",
                shard.to_str().unwrap(),
                "-o",
                o,
                "--structured",
                "mlp=0.5",
            ],
            "model folder",
        ),
        (
            vec![
                "prune",
                mi,
                "-o",
                o,
                "--structured",
                "kv-heads=0.5",
                "--calibration",
                c,
            ],
            "keep at least one",
        ),
        (
            vec![
                "prune",
                l,
                "-o",
                o,
                "--structured",
                "blocks=2",
                "--calibration",
                c,
            ],
            "keep at least one",
        ),
        (
            vec!["prune", l, "-o", o, "--structured", "mlp=0.999"],
            "keep at least one",
        ),
        (
            vec!["prune", l, "-o", o, "--structured", "blocks=1"],
            "--calibration",
        ),
    ];
    for (args, says) in cases {
        let r = prunus(&args);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("error") && stderr.contains(says),
            "{args:?}: {stderr}"
        );
        assert!(!out.exists(), "{args:?} left an output");
    }
}

/// A structure the model type lacks: BERT's heads (transformers 5 cannot
/// load a BERT with fewer heads), refused before any work.
#[test]
fn bert_refuses_heads() {
    let Some(model) = data("minilm-l6-v2") else {
        return;
    };
    let dir = scratch("bert-heads");
    let calib = text(&dir, 8);
    let out = dir.join("out");
    let r = prunus(&[
        "prune",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--structured",
        "heads=0.5",
        "--method",
        "wanda",
        "--calibration",
        calib.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no heads structure") && stderr.contains("mlp"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// `--structured experts=F` on a mixture of experts: a smaller model with
/// the expert count lowered, the removed experts in the report; with
/// another structure, or on a model without experts, exit 2 and nothing
/// written.
#[test]
fn experts_are_removed_whole_from_the_command_line() {
    let dir = scratch("tiny-mixtral-experts");
    let calib = text(&dir, 40);
    let model = fixture("tiny-mixtral");
    let out = dir.join("out");
    let report = json_of(&prunus(&[
        "prune",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--structured",
        "experts=0.5",
        "--method",
        "obs",
        "--calibration",
        calib.to_str().unwrap(),
        "--samples",
        "4",
        "--seq-len",
        "32",
        "--json",
        "-q",
    ]));
    let config: Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["num_local_experts"], 2);
    assert_eq!(report["layers"].as_array().unwrap().len(), 2, "{report}");
    for (bad, says, input) in [
        ("experts=0.5,heads=0.5", "on its own", "tiny-mixtral"),
        ("experts=0.5", "no mixture of experts", "tiny-llama"),
    ] {
        let out = dir.join(format!("bad-{input}"));
        let r = prunus(&[
            "prune",
            fixture(input).to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--structured",
            bad,
            "--method",
            "magnitude",
            "--no-refit",
        ]);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(!out.exists());
    }
}
