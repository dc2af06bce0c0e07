//! The LLaMA-family graph against Hugging Face transformers on three tiny
//! random models (llama with GQA and llama3 RoPE scaling, mistral in
//! bfloat16 with a sliding window, qwen2 with biases and tied embeddings;
//! fixtures written by `tests/fixtures/make_llama.py`), and its recording,
//! loading and configuration errors.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use prunus_candle::llama::{
    Activation, Llama, LlamaConfig, ModelType, Perplexity, RopeScaling, next_token_nll, perplexity,
};
use prunus_candle::{Error, Graph, ModelFolder, Part, Recorder};
use prunus_cpu::{CpuBackend, Par};
use serde_json::Value;

/// Allowed difference against transformers: absolute, or relative to the
/// largest reference value where that exceeds 1 (f32 on both sides).
const TOLERANCE: f64 = 1e-4;

/// Perplexity agrees more closely than single logits: relative.
const PERPLEXITY_TOLERANCE: f64 = 1e-6;

/// The fixtures: those of `make_llama.py`, then those of
/// `make_families.py` (the same tokenizer, sequences and stream).
const MODELS: [&str; 10] = [
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3",
    "phi3",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn folder(model: &str) -> PathBuf {
    fixture(&format!("tiny-{model}"))
}

/// `llama_reference.json` with the models of `families_reference.json`.
fn meta() -> Value {
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
    };
    let mut meta = read("llama_reference.json");
    let families = read("families_reference.json");
    assert_eq!(meta["sequences"], families["sequences"]);
    assert_eq!(meta["perplexity"], families["perplexity"]);
    let models = meta["models"].as_object_mut().unwrap();
    for (name, model) in families["models"].as_object().unwrap() {
        models.insert(name.clone(), model.clone());
    }
    meta
}

fn reference() -> HashMap<String, Tensor> {
    let mut tensors =
        candle_core::safetensors::load(fixture("llama_reference.safetensors"), &Device::Cpu)
            .unwrap();
    tensors.extend(
        candle_core::safetensors::load(fixture("families_reference.safetensors"), &Device::Cpu)
            .unwrap(),
    );
    tensors
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as u32)
        .collect()
}

/// Every tensor of a sharded folder, shard by shard, as stored (f32 or bf16).
fn shard_weights(dir: &Path) -> HashMap<String, Tensor> {
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let shards: BTreeSet<&str> = index["weight_map"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        shards.len() >= 2,
        "{}: the fixture is sharded",
        dir.display()
    );
    let mut weights = HashMap::new();
    for shard in shards {
        weights.extend(candle_core::safetensors::load(dir.join(shard), &Device::Cpu).unwrap());
    }
    weights
}

fn loaded(model: &str) -> (Llama, HashMap<String, Tensor>) {
    let dir = folder(model);
    let weights = shard_weights(&dir);
    let config = LlamaConfig::from_folder(&dir).unwrap();
    let mut llama = Llama::new(config, Device::Cpu).unwrap();
    llama.load_all(&weights).unwrap();
    (llama, weights)
}

/// `max |a - b|` and that divided by `max(1, max |b|)`.
fn difference(a: &Tensor, b: &Tensor) -> (f64, f64) {
    assert_eq!(a.dims(), b.dims());
    let scalar = |t: Tensor| {
        t.to_dtype(DType::F64)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let diff = scalar((a - b).unwrap());
    let scale = scalar(b.clone()).max(1.0);
    (diff, diff / scale)
}

/// Every 8th column of `[seq, vocab]`, as the fixture keeps the long
/// sequence's logits.
fn every_8th_column(t: &Tensor) -> Tensor {
    let vocab = t.dim(1).unwrap();
    let columns: Vec<u32> = (0..vocab as u32).step_by(8).collect();
    let columns = Tensor::from_vec(columns.clone(), columns.len(), &Device::Cpu).unwrap();
    t.index_select(&columns, 1).unwrap()
}

#[test]
fn tiny_models_match_transformers() {
    let meta = meta();
    let reference = reference();
    let sequences: Vec<Vec<u32>> = meta["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    for model in MODELS {
        let (llama, _) = loaded(model);
        let mut worst = [(0f64, 0f64); 3];
        for (k, tokens) in sequences.iter().enumerate() {
            let mut h = llama.embed(tokens).unwrap();
            h = llama.block(0, &h, None).unwrap();
            let block0 = h.squeeze(0).unwrap();
            for i in 1..llama.blocks() {
                h = llama.block(i, &h, None).unwrap();
            }
            let norm = llama.final_norm(&h).unwrap().squeeze(0).unwrap();
            let logits = llama.head(&h).unwrap().squeeze(0).unwrap();
            // The default forward pass is the same computation.
            assert_eq!(
                difference(&llama.forward(tokens).unwrap().squeeze(0).unwrap(), &logits).0,
                0.0
            );
            let logits = if k == 0 {
                logits
            } else {
                every_8th_column(&logits)
            };
            let got = [block0, norm, logits];
            for (j, (what, t)) in ["block0", "norm", "logits"].iter().zip(&got).enumerate() {
                let expected = &reference[&format!("{model}.s{k}.{what}")];
                let (abs, rel) = difference(t, expected);
                worst[j] = (worst[j].0.max(abs), worst[j].1.max(rel));
            }
        }
        println!(
            "{model}: max abs (relative) difference vs transformers: block 0 {:.2e} ({:.2e}), \
             final norm {:.2e} ({:.2e}), logits {:.2e} ({:.2e})",
            worst[0].0, worst[0].1, worst[1].0, worst[1].1, worst[2].0, worst[2].1
        );
        for (what, (_, rel)) in ["block 0", "final norm", "logits"].iter().zip(worst) {
            assert!(rel < TOLERANCE, "{model} {what}: difference {rel:e}");
        }
    }
}

#[test]
fn perplexity_matches_transformers() {
    let meta = meta();
    let ppl = &meta["perplexity"];
    let stream = ids(&ppl["stream"]);
    let seq_len = ppl["seq_len"].as_u64().unwrap() as usize;
    for model in MODELS {
        let (llama, _) = loaded(model);
        let expected = &meta["models"][model];
        let got = perplexity(&llama, &stream, seq_len).unwrap();
        let want = expected["perplexity"].as_f64().unwrap();
        let rel = (got.perplexity - want).abs() / want;
        println!(
            "{model}: perplexity {:.6} vs transformers {want:.6} (relative {rel:.2e}) over {} tokens",
            got.perplexity, got.predicted
        );
        assert_eq!(
            got.predicted as u64,
            expected["predicted"].as_u64().unwrap()
        );
        assert!(
            rel < PERPLEXITY_TOLERANCE,
            "{model}: perplexity relative difference {rel:e}"
        );
        let nll = expected["mean_nll"].as_f64().unwrap();
        assert!((got.mean_nll - nll).abs() < PERPLEXITY_TOLERANCE * nll);
    }
}

#[test]
fn rust_tokenizer_gives_the_python_ids() {
    let text = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/text/python-docstrings.txt"
    ));
    let meta = meta();
    for model in MODELS {
        let tokenizer = ModelFolder::open(folder(model))
            .unwrap()
            .tokenizer()
            .unwrap();
        let newline = tokenizer.encode("\n", false).unwrap().get_ids().to_vec();
        assert_eq!(newline, ids(&meta["newline_ids"]));
        if !text.exists() {
            println!("skipped the text check: no {}", text.display());
            continue;
        }
        let content = std::fs::read_to_string(text).unwrap();
        let lines: Vec<&str> = content
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        for (line, expected) in lines.iter().zip(meta["line_ids"].as_array().unwrap()) {
            let got = tokenizer.encode(*line, false).unwrap();
            assert_eq!(got.get_ids(), ids(expected).as_slice(), "{line}");
        }
        // The whole perplexity stream: each line's tokens, then a newline's.
        let count = meta["perplexity"]["lines"].as_u64().unwrap() as usize;
        let mut stream = Vec::new();
        for line in &lines[..count] {
            stream.extend_from_slice(tokenizer.encode(*line, false).unwrap().get_ids());
            stream.extend_from_slice(&newline);
        }
        assert_eq!(stream, ids(&meta["perplexity"]["stream"]));
    }
}

#[test]
fn model_folder_gives_the_same_graph() {
    let tokens = ids(&meta()["sequences"][0]);
    for model in MODELS {
        let (reference, _) = loaded(model);
        let dir = ModelFolder::open(folder(model)).unwrap();
        assert!(dir.is_sharded());
        let mut llama = Llama::from_model_folder(&dir, Device::Cpu).unwrap();
        assert_eq!(llama.config(), reference.config());
        // The graph reads exactly the checkpoint's tensors, with their shapes.
        let shapes = llama.config().tensor_shapes();
        let names: BTreeSet<&str> = shapes.iter().map(|(n, _)| n.as_str()).collect();
        let stored: BTreeSet<&str> = dir.names().iter().map(String::as_str).collect();
        assert_eq!(names, stored, "{model}");
        for (name, dims) in &shapes {
            assert_eq!(&dir.info(name).unwrap().shape, dims, "{model} {name}");
        }
        llama.load_all(&dir).unwrap();
        let (diff, _) = difference(
            &llama.forward(&tokens).unwrap(),
            &reference.forward(&tokens).unwrap(),
        );
        assert_eq!(diff, 0.0, "{model}");
    }
}

#[test]
fn fixture_configs_are_read_as_written() {
    let llama = LlamaConfig::from_folder(folder("llama")).unwrap();
    assert_eq!(llama.model_type, ModelType::Llama);
    assert_eq!(
        (
            llama.num_attention_heads,
            llama.num_key_value_heads,
            llama.head_dim
        ),
        (4, 2, 16)
    );
    assert_eq!(llama.rope.theta, 500000.0);
    assert_eq!(
        llama.rope.scaling,
        RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 256
        }
    );
    assert!(llama.mlp_bias && !llama.qkv_bias && !llama.o_bias && !llama.tie_word_embeddings);
    assert_eq!(llama.window(1), None);

    let mistral = LlamaConfig::from_folder(folder("mistral")).unwrap();
    assert_eq!((mistral.head_dim, mistral.num_key_value_heads), (32, 1));
    assert_eq!(mistral.rope.scaling, RopeScaling::None);
    assert_eq!((mistral.window(0), mistral.window(2)), (Some(48), Some(48)));
    assert!(!mistral.qkv_bias && !mistral.mlp_bias);

    let qwen2 = LlamaConfig::from_folder(folder("qwen2")).unwrap();
    assert!(qwen2.qkv_bias && !qwen2.o_bias && qwen2.tie_word_embeddings);
    assert_eq!(qwen2.rope.theta, 1e6);
    assert_eq!(qwen2.window(1), None);

    let qwen3 = LlamaConfig::from_folder(folder("qwen3")).unwrap();
    assert_eq!((qwen3.model_type, qwen3.head_dim), (ModelType::Qwen3, 32));
    assert!(qwen3.qk_norm && !qwen3.qkv_bias && !qwen3.norm_plus_one);

    let gemma2 = LlamaConfig::from_folder(folder("gemma2")).unwrap();
    assert_eq!(gemma2.activation, Activation::GeluTanh);
    assert!(gemma2.norm_plus_one && gemma2.sandwich_norms && gemma2.scale_embeddings);
    assert!(gemma2.tie_word_embeddings && !gemma2.qk_norm);
    assert_eq!(
        (
            gemma2.attn_logit_softcapping,
            gemma2.final_logit_softcapping
        ),
        (Some(5.0), Some(3.0))
    );
    assert_eq!(gemma2.query_pre_attn_scalar, Some(24.0));
    let windows: Vec<_> = (0..3).map(|i| gemma2.window(i)).collect();
    assert_eq!(windows, [Some(24), None, Some(24)]);

    // Gemma 3's transformers 4 layout: flat RoPE keys and a window pattern.
    let gemma3 = LlamaConfig::from_folder(folder("gemma3")).unwrap();
    assert!(gemma3.qk_norm && gemma3.attn_logit_softcapping.is_none());
    let windows: Vec<_> = (0..3).map(|i| gemma3.window(i)).collect();
    assert_eq!(windows, [Some(24), None, Some(24)]);
    assert_eq!(
        gemma3.rope_of(1).scaling,
        RopeScaling::Linear { factor: 4.0 }
    );
    assert_eq!(gemma3.rope_of(1).theta, 1e6);
    assert_eq!(
        (gemma3.rope_of(0).theta, &gemma3.rope_of(0).scaling),
        (10000.0, &RopeScaling::None)
    );

    let phi3 = LlamaConfig::from_folder(folder("phi3")).unwrap();
    assert!(phi3.fused_projections);
    assert_eq!((phi3.head_dim, phi3.rotary_dim), (16, 8));
    let RopeScaling::LongRope {
        original_max_position_embeddings,
        attention_factor,
        ..
    } = phi3.rope.scaling
    else {
        panic!("phi3 runs LongRoPE: {:?}", phi3.rope.scaling)
    };
    assert_eq!(original_max_position_embeddings, 64);
    // sqrt(1 + ln(512 / 64) / ln(64)).
    assert!((attention_factor - (1.5f64).sqrt()).abs() < 1e-12);
    let short = phi3.rope.inv_freq(8, 64);
    let long = phi3.rope.inv_freq(8, 65);
    assert_eq!(short[1], 1.0 / (1.3 * 10000f32.powf(0.25)));
    assert_eq!(long[3], 1.0 / (7.5 * 10000f32.powf(0.75)));

    // The llama3 scaling keeps high frequencies, divides low ones, and
    // interpolates between (wavelengths 64 and 256 here).
    let mut plain = llama.clone();
    plain.rope.scaling = RopeScaling::None;
    let (scaled, plain) = (llama.rope.inv_freq(16, 1), plain.rope.inv_freq(16, 1));
    assert_eq!(scaled.len(), 8);
    let mut kinds = BTreeSet::new();
    for (s, p) in scaled.iter().zip(&plain) {
        let wavelen = 2.0 * std::f32::consts::PI / p;
        if wavelen < 64.0 {
            assert_eq!(s, p);
            kinds.insert("kept");
        } else if wavelen > 256.0 {
            assert_eq!(*s, p / 8.0);
            kinds.insert("divided");
        } else {
            assert!(*s < *p && *s > p / 8.0);
            kinds.insert("interpolated");
        }
    }
    assert_eq!(kinds.len(), 3, "the fixture covers all three llama3 cases");
}

#[test]
fn the_sliding_window_changes_long_sequences_only() {
    let meta = meta();
    let reference = reference();
    let (windowed, weights) = loaded("mistral");
    let mut config = windowed.config().clone();
    config.sliding_window = None;
    let mut full = Llama::new(config, Device::Cpu).unwrap();
    full.load_all(&weights).unwrap();
    // 40 tokens, shorter than the window of 48: the same.
    let short = ids(&meta["sequences"][0]);
    let (diff, _) = difference(
        &full.forward(&short).unwrap(),
        &windowed.forward(&short).unwrap(),
    );
    assert_eq!(diff, 0.0);
    // 100 tokens: without the window, far from transformers.
    let long = ids(&meta["sequences"][1]);
    let logits = every_8th_column(&full.forward(&long).unwrap().squeeze(0).unwrap());
    let (_, rel) = difference(&logits, &reference["mistral.s1.logits"]);
    assert!(
        rel > 1e-2,
        "the window matters on the long sequence: {rel:e}"
    );

    // qwen2's window is on the blocks from max_window_layers on.
    let mut text: Value = serde_json::from_str(
        &std::fs::read_to_string(folder("qwen2").join("config.json")).unwrap(),
    )
    .unwrap();
    text["use_sliding_window"] = Value::Bool(true);
    text["sliding_window"] = 16.into();
    text["max_window_layers"] = 1.into();
    text.as_object_mut().unwrap().remove("layer_types");
    let config = LlamaConfig::from_value(&text, "<qwen2>").unwrap();
    assert_eq!((config.window(0), config.window(1)), (None, Some(16)));
    text["layer_types"] = serde_json::json!(["full_attention", "sliding_attention"]);
    let config = LlamaConfig::from_value(&text, "<qwen2>").unwrap();
    assert_eq!((config.window(0), config.window(1)), (None, Some(16)));
    // Any pattern of layer types, as Gemma alternates them.
    text["layer_types"] = serde_json::json!(["sliding_attention", "full_attention"]);
    let config = LlamaConfig::from_value(&text, "<qwen2>").unwrap();
    assert_eq!((config.window(0), config.window(1)), (Some(16), None));
    text["layer_types"] = serde_json::json!(["sliding_attention", "chunked_attention"]);
    let e = LlamaConfig::from_value(&text, "<qwen2>").unwrap_err();
    assert!(e.to_string().contains("chunked_attention"), "{e}");
}

#[test]
fn recording_sees_each_input_once_per_group() {
    let (mistral, weights) = loaded("mistral");
    let tokens = ids(&meta()["sequences"][1]);
    let dense = CpuBackend::new(Par::Seq).unwrap();
    let all = |_: &str| true;
    let mut recorder = Recorder::new(&dense, true, &all);
    let mut h = mistral.embed(&tokens).unwrap();
    let block0_input = h.clone();
    for i in 0..mistral.blocks() {
        h = mistral.block(i, &h, Some(&mut recorder)).unwrap();
    }
    // Recording does not change the computation.
    let (diff, _) = difference(
        &mistral.head(&h).unwrap(),
        &mistral.forward(&tokens).unwrap(),
    );
    assert_eq!(diff, 0.0);

    let recorder = recorder.finish().unwrap();
    assert_eq!(recorder.names().count(), 7 * mistral.blocks());
    for i in 0..mistral.blocks() {
        let names: Vec<String> = mistral
            .linears(i)
            .unwrap()
            .iter()
            .map(|l| l.name().to_string())
            .collect();
        let l = format!("model.layers.{i}");
        let expected: Vec<String> = [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ]
        .iter()
        .map(|n| format!("{l}.{n}"))
        .collect();
        assert_eq!(names, expected);
        let stats = |n: &str| recorder.stats(&format!("{l}.{n}")).unwrap();
        for other in ["self_attn.k_proj", "self_attn.v_proj"] {
            assert!(std::ptr::eq(stats("self_attn.q_proj"), stats(other)));
        }
        assert!(std::ptr::eq(stats("mlp.gate_proj"), stats("mlp.up_proj")));
        assert!(!std::ptr::eq(
            stats("self_attn.q_proj"),
            stats("self_attn.o_proj")
        ));
        assert!(!std::ptr::eq(
            stats("mlp.gate_proj"),
            stats("mlp.down_proj")
        ));
        // One row per token; widths hidden (64), heads × head_dim (128),
        // hidden, intermediate (128).
        for (n, columns) in [
            ("self_attn.q_proj", 64),
            ("self_attn.o_proj", 128),
            ("mlp.gate_proj", 64),
            ("mlp.down_proj", 128),
        ] {
            assert_eq!(stats(n).rows(), tokens.len() as u64, "{l}.{n}");
            assert_eq!(stats(n).columns(), columns, "{l}.{n}");
        }
    }
    // Four statistics per block: q/k/v share one, gate/up another; each
    // holds its sums and sums of squares (16 bytes a column) and its Gram.
    let c = 64u64;
    let f = 128u64;
    let per_block = (16 * c + 8 * c * c) * 2 + (16 * f + 8 * f * f) * 2;
    assert_eq!(recorder.bytes(), per_block * mistral.blocks() as u64);

    // The q/k/v input is block 0's input after input_layernorm, in f64 here.
    let x: Vec<Vec<f64>> = block0_input
        .squeeze(0)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec2()
        .unwrap();
    let w: Vec<f64> = weights["model.layers.0.input_layernorm.weight"]
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap();
    let eps = mistral.config().rms_norm_eps;
    let recorded = recorder
        .stats("model.layers.0.self_attn.v_proj")
        .unwrap()
        .sum_squares();
    for (j, &s) in recorded.iter().enumerate() {
        let direct: f64 = x
            .iter()
            .map(|row| {
                let ms = row.iter().map(|v| v * v).sum::<f64>() / row.len() as f64;
                let y = row[j] / (ms + eps).sqrt() * w[j];
                y * y
            })
            .sum();
        assert!(
            (s - direct).abs() <= 1e-4 * direct.max(1.0),
            "column {j}: recorded {s}, direct {direct}"
        );
    }
}

#[test]
fn unloaded_parts_and_bad_inputs_are_errors() {
    let config = LlamaConfig::from_folder(folder("qwen2")).unwrap();
    let weights = shard_weights(&folder("qwen2"));
    let mut llama = Llama::new(config, Device::Cpu).unwrap();
    let request = |r: prunus_candle::Result<()>| match r {
        Err(Error::Request { reason }) => reason,
        Err(other) => panic!("expected a request error, got {other}"),
        Ok(()) => panic!("expected an error"),
    };
    let hidden = Tensor::zeros((1, 3, 64), DType::F32, &Device::Cpu).unwrap();
    let reason = request(llama.embed(&[1, 2]).map(drop));
    assert!(reason.contains("embeddings are not loaded"), "{reason}");
    let reason = request(llama.block(0, &hidden, None).map(drop));
    assert!(reason.contains("block 0 is not loaded"), "{reason}");
    let reason = request(llama.head(&hidden).map(drop));
    assert!(
        reason.contains("head") && reason.contains("not loaded"),
        "{reason}"
    );
    assert!(llama.linears(1).is_err());
    assert!(llama.linear_mut(0, "model.layers.0.mlp.up_proj").is_err());
    assert!(llama.forward(&[1, 2]).is_err());

    llama.load(Part::Block(1), &weights).unwrap();
    assert!(llama.is_loaded(Part::Block(1)) && !llama.is_loaded(Part::Block(0)));
    assert_eq!(llama.linears(1).unwrap().len(), 7);
    assert!(llama.block(1, &hidden, None).is_ok());
    let reason = request(llama.block(0, &hidden, None).map(drop));
    assert!(reason.contains("block 0 is not loaded"), "{reason}");
    let reason = request(llama.block(2, &hidden, None).map(drop));
    assert!(reason.contains("does not exist"), "{reason}");
    assert!(llama.load(Part::Block(2), &weights).is_err());
    let reason = request(llama.linear_mut(1, "model.layers.1.mlp.fc1").map(drop));
    assert!(reason.contains("mlp.up_proj"), "{reason}");
    assert!(llama.linear_mut(1, "model.layers.1.mlp.up_proj").is_ok());
    llama.release(Part::Block(1));
    assert!(llama.block(1, &hidden, None).is_err());
    llama.release(Part::Block(7)); // nothing to release: no panic

    llama.load_all(&weights).unwrap();
    let reason = request(llama.embed(&[]).map(drop));
    assert!(reason.contains("0 tokens"), "{reason}");
    let reason = request(llama.embed(&[1, 384]).map(drop));
    assert!(reason.contains("384"), "{reason}");
    let bad_hidden = Tensor::zeros((1, 3, 32), DType::F32, &Device::Cpu).unwrap();
    assert!(llama.block(0, &bad_hidden, None).is_err());
    assert!(llama.embed(&vec![1; 513]).is_err());

    // A missing or misshapen tensor names itself.
    let mut missing = weights.clone();
    missing.remove("model.layers.0.self_attn.k_proj.bias");
    match llama.load(Part::Block(0), &missing) {
        Err(Error::Model { reason, .. }) => {
            assert!(reason.contains("k_proj.bias"), "{reason}")
        }
        other => panic!("expected a model error, got {:?}", other.err()),
    }
    let mut misshapen = weights.clone();
    misshapen.insert(
        "model.norm.weight".into(),
        Tensor::zeros(63, DType::F32, &Device::Cpu).unwrap(),
    );
    match llama.load(Part::Head, &misshapen) {
        Err(Error::Model { reason, .. }) => {
            assert!(
                reason.contains("model.norm.weight") && reason.contains("[63]"),
                "{reason}"
            )
        }
        other => panic!("expected a model error, got {:?}", other.err()),
    }

    // Perplexity needs windows of 2+ tokens and a stream that predicts one.
    assert!(perplexity(&llama, &[1, 2, 3], 1).is_err());
    assert!(perplexity(&llama, &[1], 8).is_err());
    assert!(perplexity(&llama, &[1, 2, 3], 10_000).is_err());
    // A last window of one token predicts nothing and is left out.
    assert_eq!(
        perplexity(&llama, &[1, 2, 3, 4, 5], 4).unwrap().predicted,
        3
    );
    assert_eq!(
        perplexity(&llama, &[1, 2, 3, 4, 5, 6], 4)
            .unwrap()
            .predicted,
        4
    );
}

#[test]
fn next_token_nll_is_the_cross_entropy() {
    let logits = Tensor::new(
        &[[0.0f32, 1.0, 2.0], [3.0, -1.0, 0.5], [9.0, 9.0, 9.0]],
        &Device::Cpu,
    )
    .unwrap();
    let tokens = [0u32, 2, 1];
    let lse = |r: [f64; 3]| r.iter().map(|x| x.exp()).sum::<f64>().ln();
    let expected = (lse([0.0, 1.0, 2.0]) - 2.0) + (lse([3.0, -1.0, 0.5]) + 1.0);
    let got = next_token_nll(&logits, &tokens).unwrap();
    assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    assert_eq!(
        next_token_nll(&logits.unsqueeze(0).unwrap(), &tokens).unwrap(),
        got
    );
    assert!(next_token_nll(&logits, &[0, 1]).is_err());
    assert!(next_token_nll(&logits, &[0, 1, 3]).is_err());
    let p = Perplexity::from_total(2.0 * 3.0f64.ln(), 2);
    assert!((p.perplexity - 3.0).abs() < 1e-12 && p.predicted == 2);
}

fn config_error(json: &str) -> String {
    match LlamaConfig::from_json(json, "<test>") {
        Err(Error::Model { reason, .. }) => reason,
        Err(other) => panic!("expected a model error, got {other}"),
        Ok(c) => panic!("expected an error, got {c:?}"),
    }
}

#[test]
fn configs_prunus_cannot_run_are_errors() {
    let base = r#""hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 384"#;
    let ok =
        LlamaConfig::from_json(&format!(r#"{{"model_type": "llama", {base}}}"#), "<t>").unwrap();
    assert_eq!(
        (ok.num_key_value_heads, ok.head_dim, ok.rope.theta),
        (4, 16, 10000.0)
    );

    let e = config_error(&format!(r#"{{"model_type": "gpt2", {base}}}"#));
    assert!(
        e.contains("\"gpt2\"")
            && e.contains("llama, mistral, qwen2, qwen3, gemma2, gemma3_text, phi3"),
        "{e}"
    );
    let e = config_error(&format!(r#"{{{base}}}"#));
    assert!(e.contains("no model_type"), "{e}");
    let e = config_error(&format!(
        r#"{{"model_type": "mistral", "hidden_act": "relu", {base}}}"#
    ));
    assert!(
        e.contains("hidden_act") && e.contains("relu") && e.contains("silu"),
        "{e}"
    );
    let e = config_error(r#"{"model_type": "llama", "hidden_size": 64}"#);
    assert!(e.contains("intermediate_size"), "{e}");
    let e = config_error(&format!(
        r#"{{"model_type": "llama", "num_key_value_heads": 3, {base}}}"#
    ));
    assert!(e.contains("num_key_value_heads = 3"), "{e}");
    let e = config_error(&format!(
        r#"{{"model_type": "llama", "rope_scaling": {{"rope_type": "yarn", "factor": 4.0}}, {base}}}"#
    ));
    assert!(e.contains("\"yarn\"") && e.contains("llama3"), "{e}");
    let e = config_error(&format!(
        r#"{{"model_type": "qwen2", "rope_parameters": {{"rope_type": "dynamic", "rope_theta": 1e6}}, {base}}}"#
    ));
    assert!(e.contains("\"dynamic\""), "{e}");
    let e = config_error(&format!(
        r#"{{"model_type": "llama", "rope_scaling": {{"type": "llama3", "factor": 8.0}}, {base}}}"#
    ));
    assert!(e.contains("low_freq_factor"), "{e}");
    let e = config_error(&format!(
        r#"{{"model_type": "llama", "partial_rotary_factor": 0.5, {base}}}"#
    ));
    assert!(e.contains("partial_rotary_factor"), "{e}");
    let e = config_error(&format!(
        r#"{{"model_type": "llama", "head_dim": 15, {base}}}"#
    ));
    assert!(e.contains("head_dim = 15"), "{e}");
    let e = config_error(&format!(
        r#"{{"model_type": "mistral", "sliding_window": -4, {base}}}"#
    ));
    assert!(e.contains("sliding_window"), "{e}");
    let e = config_error("[1, 2]");
    assert!(e.contains("not a JSON object"), "{e}");

    // The old "type" key and linear scaling are read.
    let linear = LlamaConfig::from_json(
        &format!(
            r#"{{"model_type": "llama", "rope_scaling": {{"type": "linear", "factor": 2.0}}, {base}}}"#
        ),
        "<t>",
    )
    .unwrap();
    assert_eq!(linear.rope.scaling, RopeScaling::Linear { factor: 2.0 });
    let halves: Vec<f32> = ok.rope.inv_freq(16, 1).iter().map(|f| f / 2.0).collect();
    assert_eq!(linear.rope.inv_freq(16, 1), halves);
    // Phi-3's transformers 4 layout: LongRoPE as "su" in rope_scaling, the
    // pre-training context at the top level; 8 heads of 8, 4 rotated pairs.
    let phi3 = |factors: &str| {
        format!(
            r#"{{"model_type": "phi3", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 8, "vocab_size": 384,
            "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
            "rope_theta": 10000.0, "rope_scaling": {{"type": "su", {factors}}}}}"#
        )
    };
    let v4 = LlamaConfig::from_json(
        &phi3(r#""short_factor": [1, 1, 1, 1], "long_factor": [1, 2, 3, 4]"#),
        "<t>",
    )
    .unwrap();
    let RopeScaling::LongRope {
        original_max_position_embeddings,
        attention_factor,
        ..
    } = v4.rope.scaling
    else {
        panic!("{:?}", v4.rope.scaling)
    };
    assert_eq!(original_max_position_embeddings, 4096);
    let want = (1.0 + 32f64.ln() / 4096f64.ln()).sqrt();
    assert!((attention_factor - want).abs() < 1e-12);
    assert_eq!(v4.rope.attention_factor(), want as f32);
    let e = config_error(&phi3(
        r#""short_factor": [1, 1], "long_factor": [1, 2, 3, 4]"#,
    ));
    assert!(e.contains("longrope factors have 2"), "{e}");
    let e = config_error(&phi3(r#""short_factor": [1, 1, 1, 1]"#));
    assert!(e.contains("long_factor"), "{e}");
    // Set by hand, the same mismatch is refused by the graph, not a panic.
    let mut short = v4.clone();
    short.rope.scaling = RopeScaling::LongRope {
        short_factor: vec![1.0],
        long_factor: vec![1.0; 4],
        original_max_position_embeddings: 4096,
        attention_factor: 1.0,
    };
    assert!(Llama::new(short, Device::Cpu).is_err());
    // Gemma defaults: tanh GELU, tied embeddings, both soft-caps for gemma2.
    let gemma2 =
        LlamaConfig::from_json(&format!(r#"{{"model_type": "gemma2", {base}}}"#), "<t>").unwrap();
    assert_eq!(
        (
            gemma2.activation,
            gemma2.head_dim,
            gemma2.tie_word_embeddings,
            gemma2.attn_logit_softcapping,
            gemma2.final_logit_softcapping
        ),
        (Activation::GeluTanh, 256, true, Some(50.0), Some(30.0))
    );
    let e = config_error(&format!(
        r#"{{"model_type": "gemma3_text", "use_bidirectional_attention": true, {base}}}"#
    ));
    assert!(e.contains("use_bidirectional_attention"), "{e}");

    // Inconsistent sizes set by hand are refused by the graph.
    let mut odd = ok;
    odd.num_key_value_heads = 3;
    assert!(Llama::new(odd, Device::Cpu).is_err());
}

/// Decoding against the key and value cache gives the logits of the whole
/// sequence run at once: a prompt, then one token per call, past
/// mistral's sliding window of 48. Phi-3's LongRoPE switches to its long
/// factors when a call reaches past 64 positions, for the whole call as in
/// transformers, so a cache filled before the switch holds keys rotated
/// otherwise: it is compared within those 64.
#[test]
fn cached_decoding_matches_the_full_forward() {
    for model in MODELS {
        let (llama, _) = loaded(model);
        let len = if model == "phi3" { 64 } else { 70 };
        let tokens: Vec<u32> = (0..len).map(|t| (t * 37 + 5) % 300 + 3).collect();
        let full = llama.forward(&tokens).unwrap().squeeze(0).unwrap();
        let mut cache = llama.cache().unwrap();
        assert!(cache.is_empty());
        let prompt = 20;
        let mut rows = vec![
            llama
                .forward_cached(&tokens[..prompt], &mut cache)
                .unwrap()
                .squeeze(0)
                .unwrap(),
        ];
        for t in prompt..tokens.len() {
            rows.push(
                llama
                    .forward_cached(&tokens[t..t + 1], &mut cache)
                    .unwrap()
                    .squeeze(0)
                    .unwrap(),
            );
        }
        assert_eq!(cache.len(), tokens.len());
        let cached = Tensor::cat(&rows, 0).unwrap();
        let (_, rel) = difference(&cached, &full);
        assert!(
            rel < TOLERANCE,
            "{model}: cached decoding differs by {rel:e}"
        );
    }
}

/// A mixture's experts record only the tokens routed to them: each token
/// reaches `top_k` experts, so the experts' rows sum to `top_k` times the
/// tokens, and (qwen2_moe) their input sums to `top_k` times the shared
/// expert's, which sees every token. Dense blocks of a MoE model record as
/// any MLP; the router is never a recorded layer.
#[test]
fn experts_record_only_their_tokens() {
    let tokens = ids(&meta()["sequences"][1]);
    let n = tokens.len() as u64;
    let dense = CpuBackend::new(Par::Seq).unwrap();
    for (model, experts, top_k) in [("mixtral", 4, 2), ("qwen2_moe", 6, 2), ("qwen3_moe", 8, 2)] {
        let (graph, _) = loaded(model);
        let all = |_: &str| true;
        let mut recorder = Recorder::new(&dense, true, &all);
        let mut h = graph.embed(&tokens).unwrap();
        for i in 0..graph.blocks() {
            h = graph.block(i, &h, Some(&mut recorder)).unwrap();
        }
        let (diff, _) = difference(&graph.head(&h).unwrap(), &graph.forward(&tokens).unwrap());
        assert_eq!(diff, 0.0, "{model}: recording changes nothing");
        let recorded = recorder.finish().unwrap();
        let config = graph.config().clone();
        for i in 0..graph.blocks() {
            let l = format!("model.layers.{i}");
            let names: Vec<String> = graph
                .linears(i)
                .unwrap()
                .iter()
                .map(|x| x.name().to_string())
                .collect();
            assert!(
                names
                    .iter()
                    .all(|n| !n.ends_with(".gate") && !n.ends_with("expert_gate"))
            );
            let Some(moe) = config.moe_of(i) else {
                assert_eq!((model, i), ("qwen2_moe", 1), "only its block 1 is dense");
                let rows = recorded
                    .stats(&format!("{l}.mlp.gate_proj"))
                    .unwrap()
                    .rows();
                assert_eq!(rows, n);
                continue;
            };
            assert_eq!(moe.experts, experts);
            let (gate, down) = match model {
                "mixtral" => (
                    "block_sparse_moe.experts.{e}.w1",
                    "block_sparse_moe.experts.{e}.w2",
                ),
                _ => ("mlp.experts.{e}.gate_proj", "mlp.experts.{e}.down_proj"),
            };
            let mut rows = 0;
            let mut sums = vec![0.0f64; config.hidden_size];
            for e in 0..experts {
                let name =
                    |pattern: &str| format!("{l}.{}", pattern.replace("{e}", &e.to_string()));
                match recorded.stats(&name(gate)) {
                    None => assert!(recorded.stats(&name(down)).is_none()),
                    Some(s) => {
                        assert_eq!(recorded.stats(&name(down)).unwrap().rows(), s.rows());
                        assert!(s.rows() > 0 && s.rows() <= n);
                        rows += s.rows();
                        for (t, v) in sums.iter_mut().zip(s.sums().unwrap()) {
                            *t += v;
                        }
                    }
                }
            }
            assert_eq!(rows, top_k * n, "{model} block {i}");
            if model == "qwen2_moe" {
                let shared = recorded
                    .stats(&format!("{l}.mlp.shared_expert.gate_proj"))
                    .unwrap();
                assert_eq!(shared.rows(), n);
                for (got, all) in sums.iter().zip(shared.sums().unwrap()) {
                    assert!((got - top_k as f64 * all).abs() < 1e-6 * (1.0 + all.abs()));
                }
            }
        }
    }
}
