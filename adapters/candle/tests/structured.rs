//! Structured pruning of model folders: the pruned tiny decoders committed
//! by `tests/fixtures/make_structured.py` run in prunus's graph exactly as
//! transformers runs them; every structure and method on the three tiny
//! decoders keeps exact, uniform counts and a valid grouped-query layout,
//! writes a config that matches its tensors, and loads back; bad requests
//! are errors that leave nothing behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use prunus_candle::blocks::BlockScore;
use prunus_candle::llama::LlamaConfig;
use prunus_candle::model::token_samples;
use prunus_candle::structured::{StructuredMethod, StructuredSettings, prune_folder_structured};
use prunus_candle::{FolderWriter, ModelFolder, Structure, open_graph};
use prunus_cpu::{CpuBackend, Par};
use serde_json::Value;

/// Allowed difference against transformers, relative to the largest
/// reference logit where that exceeds 1 (f32 on both sides).
const TOLERANCE: f64 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Structures and the fraction of each to remove.
type Parts = Vec<(Structure, f64)>;

fn calibration_lines() -> Vec<String> {
    std::fs::read_to_string(fixture("make_llama.py"))
        .unwrap()
        .lines()
        .take(200)
        .map(str::to_string)
        .collect()
}

#[test]
fn pruned_folders_match_transformers() {
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("structured_reference.json")).unwrap(),
    )
    .unwrap();
    let reference =
        candle_core::safetensors::load(fixture("structured_reference.safetensors"), &Device::Cpu)
            .unwrap();
    for (model, m) in meta["models"].as_object().unwrap() {
        let folder = ModelFolder::open(fixture(&format!("structured/{model}"))).unwrap();
        for field in [
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
            "head_dim",
        ] {
            assert_eq!(folder.config()[field], m[field], "{model} {field}");
        }
        let c = folder.config();
        let experts = c
            .get("num_local_experts")
            .filter(|v| !v.is_null())
            .or_else(|| c.get("num_experts"))
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(experts, m["experts"], "{model} experts");
        let mut graph = open_graph(&folder, &Device::Cpu).unwrap();
        graph.load_all(&folder).unwrap();
        let ids: Vec<u32> = m["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = graph.forward(&ids).unwrap().squeeze(0).unwrap();
        let want = &reference[&format!("{model}.logits")];
        assert_eq!(got.dims(), want.dims(), "{model}");
        let scale = max_abs(want).max(1.0);
        let diff = max_abs(&(got - want).unwrap());
        let rel = f64::from(diff / scale);
        println!("{model}: logits differ from transformers' by {rel:e} (relative)");
        assert!(rel < TOLERANCE, "{model}: {rel:e}");
        let params: u64 = folder
            .names()
            .iter()
            .map(|n| folder.info(n).unwrap().numel())
            .sum();
        assert_eq!(
            params,
            m["parameters"].as_u64().unwrap(),
            "{model} parameters"
        );
    }
}

/// The largest magnitude in `t` (f32).
fn max_abs(t: &candle_core::Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The shape of every tensor in a folder.
fn shapes(folder: &ModelFolder) -> BTreeMap<String, Vec<usize>> {
    folder
        .names()
        .iter()
        .map(|n| (n.clone(), folder.info(n).unwrap().shape.clone()))
        .collect()
}

/// Prunes the tiny `model` into `out` with `parts` by `method`.
fn prune(
    model: &str,
    out: &Path,
    method: StructuredMethod,
    parts: &[(Structure, f64)],
    blocks: Option<usize>,
) -> prunus_candle::Result<prunus_candle::pruning::Report> {
    let folder = ModelFolder::open(fixture(&format!("tiny-{model}"))).unwrap();
    let mut graph = open_graph(&folder, &Device::Cpu).unwrap();
    let samples = token_samples(&folder, &*graph, &calibration_lines(), 4, 48).unwrap();
    let mut settings = StructuredSettings::new(method, parts.iter().copied().collect());
    settings.blocks = blocks;
    settings.block_score = BlockScore::Skip;
    let cpu = CpuBackend::new(Par::Rayon(2)).unwrap();
    let mut writer = FolderWriter::create(&folder, out, false)?;
    let report = prune_folder_structured(
        &cpu,
        &folder,
        &mut *graph,
        &Device::Cpu,
        Some(&samples),
        &settings,
        &mut writer,
        &mut |_| {},
    )?;
    writer.finish(&[])?;
    Ok(report)
}

#[test]
fn every_structure_and_method_keeps_the_model_valid() {
    let dir = tempfile::tempdir().unwrap();
    let methods = [
        StructuredMethod::Magnitude,
        StructuredMethod::Wanda,
        StructuredMethod::Fluctuation,
        StructuredMethod::Obs,
        StructuredMethod::Forward,
    ];
    // mistral and gemma3 have one KV group: their query heads go, not
    // their groups. phi3's fused gate_up_proj loses the rows of both parts
    // (its LongRoPE keeps its heads; see removed_groups_are_their_zeroed_columns
    // for its fused qkv_proj).
    let specs: [(&str, Parts, Option<usize>); 12] = [
        (
            "llama",
            vec![(Structure::KvGroups, 0.5), (Structure::MlpChannels, 0.25)],
            None,
        ),
        ("llama", vec![(Structure::Heads, 0.5)], Some(1)),
        (
            "mistral",
            vec![(Structure::Heads, 0.5), (Structure::MlpChannels, 0.5)],
            Some(1),
        ),
        (
            "qwen2",
            vec![
                (Structure::KvGroups, 0.5),
                (Structure::Heads, 0.5),
                (Structure::MlpChannels, 0.75),
            ],
            None,
        ),
        (
            "qwen3",
            vec![(Structure::KvGroups, 0.5), (Structure::MlpChannels, 0.5)],
            None,
        ),
        (
            "gemma2",
            vec![(Structure::Heads, 0.5), (Structure::MlpChannels, 0.25)],
            Some(1),
        ),
        (
            "gemma3",
            vec![(Structure::Heads, 0.5), (Structure::MlpChannels, 0.5)],
            Some(1),
        ),
        ("phi3", vec![(Structure::MlpChannels, 0.5)], None),
        ("phi3", vec![(Structure::MlpChannels, 0.25)], Some(1)),
        // Mixtures of experts: attention structures and blocks.
        ("mixtral", vec![(Structure::KvGroups, 0.5)], Some(1)),
        ("qwen2_moe", vec![(Structure::Heads, 0.5)], Some(1)),
        (
            "qwen3_moe",
            vec![(Structure::KvGroups, 0.5), (Structure::Heads, 0.5)],
            None,
        ),
    ];
    for (k, (model, parts, blocks)) in specs.iter().enumerate() {
        let input = ModelFolder::open(fixture(&format!("tiny-{model}"))).unwrap();
        let c = input.config();
        let size = |f: &str| c[f].as_u64().unwrap() as usize;
        let (layers, heads, kv, inter) = (
            size("num_hidden_layers"),
            size("num_attention_heads"),
            size("num_key_value_heads"),
            size("intermediate_size"),
        );
        let fraction = |s: Structure| parts.iter().find(|p| p.0 == s).map(|p| p.1);
        let mut want_kv = kv;
        let mut want_heads = heads;
        if let Some(f) = fraction(Structure::KvGroups) {
            want_kv = kv - (f * kv as f64).round() as usize;
            want_heads = want_kv * (heads / kv);
        }
        if let Some(f) = fraction(Structure::Heads) {
            let per = want_heads / want_kv;
            want_heads = want_kv * (per - (f * per as f64).round() as usize);
        }
        let want_inter = fraction(Structure::MlpChannels)
            .map_or(inter, |f| inter - (f * inter as f64).round() as usize);
        let want_layers = layers - blocks.unwrap_or(0);
        for method in methods {
            let out = dir.path().join(format!("{k}-{}", method.name()));
            let report = prune(model, &out, method, parts, *blocks)
                .unwrap_or_else(|e| panic!("{model} {parts:?} {}: {e}", method.name()));
            let folder = ModelFolder::open(&out).unwrap();
            let cfg = folder.config();
            let got = |f: &str| cfg[f].as_u64().unwrap() as usize;
            let what = format!("{model} {parts:?} {}", method.name());
            assert_eq!(got("num_hidden_layers"), want_layers, "{what}");
            assert_eq!(got("num_key_value_heads"), want_kv, "{what}");
            assert_eq!(got("num_attention_heads"), want_heads, "{what}");
            assert_eq!(got("intermediate_size"), want_inter, "{what}");
            assert_eq!(
                got("num_attention_heads") % got("num_key_value_heads"),
                0,
                "{what}: GQA"
            );
            // Every tensor has the shape the new config implies, and every
            // block is there, renumbered from 0.
            let implied: BTreeMap<String, Vec<usize>> = LlamaConfig::from_value(cfg, &what)
                .unwrap()
                .tensor_shapes()
                .into_iter()
                .collect();
            assert_eq!(shapes(&folder), implied, "{what}");
            // Exact counts in the report: each block's layer lost its share.
            for l in &report.layers {
                let g = l.groups.as_ref().unwrap();
                let f = fraction(g.structure).unwrap();
                let per_set = match g.structure {
                    Structure::Heads => g.before / want_kv,
                    _ => g.before,
                };
                let sets = g.before / per_set;
                assert_eq!(
                    g.removed.len(),
                    sets * (f * per_set as f64).round() as usize,
                    "{what}"
                );
            }
            assert_eq!(
                report.blocks.as_ref().map(|b| b.removed.len()),
                *blocks,
                "{what}"
            );
            // The output loads in prunus's graph and runs.
            let mut graph = open_graph(&folder, &Device::Cpu).unwrap();
            graph.load_all(&folder).unwrap();
            let logits = graph.forward(&[3, 17, 42, 5]).unwrap();
            let finite = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(finite.iter().all(|v| v.is_finite()), "{what}");
        }
    }
}

/// The refit (on by default) reconstructs each layer better than the plain
/// cut of the same method, and obs is never worse than the score methods.
#[test]
fn refit_and_exact_search_lower_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let parts = [(Structure::MlpChannels, 0.5)];
    let error = |method, refit: bool, name: &str| -> f64 {
        let folder = ModelFolder::open(fixture("tiny-llama")).unwrap();
        let mut graph = open_graph(&folder, &Device::Cpu).unwrap();
        let samples = token_samples(&folder, &*graph, &calibration_lines(), 4, 48).unwrap();
        let mut settings = StructuredSettings::new(method, parts.iter().copied().collect());
        settings.refit = refit;
        let cpu = CpuBackend::new(Par::Seq).unwrap();
        let out = dir.path().join(name);
        let mut writer = FolderWriter::create(&folder, &out, false).unwrap();
        let report = prune_folder_structured(
            &cpu,
            &folder,
            &mut *graph,
            &Device::Cpu,
            Some(&samples),
            &settings,
            &mut writer,
            &mut |_| {},
        )
        .unwrap();
        // Block 0 sees the same inputs in every run.
        report.layers[0].error.unwrap()
    };
    let wanda_plain = error(StructuredMethod::Wanda, false, "wp");
    let wanda = error(StructuredMethod::Wanda, true, "wr");
    let flap = error(StructuredMethod::Fluctuation, true, "fr");
    let obs = error(StructuredMethod::Obs, true, "or");
    println!(
        "block 0 errors: wanda-sp {wanda_plain:.4e}, wanda + refit {wanda:.4e}, flap + refit {flap:.4e}, obs {obs:.4e}"
    );
    assert!(wanda < wanda_plain);
    assert!(obs <= wanda && obs <= flap);
}

#[test]
fn bad_requests_are_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Parts, Option<usize>, &str); 5] = [
        // One KV group: removing one removes all.
        (
            "mistral",
            vec![(Structure::KvGroups, 0.5)],
            None,
            "keep at least one",
        ),
        // Every channel.
        (
            "llama",
            vec![(Structure::MlpChannels, 0.999)],
            None,
            "keep at least one",
        ),
        // Every block.
        ("llama", vec![], Some(2), "keep at least one"),
        // Nothing at all.
        ("llama", vec![], None, "no structure"),
        // transformers would not load a LongRoPE Phi-3 with fewer heads.
        (
            "phi3",
            vec![(Structure::Heads, 0.5)],
            None,
            "no heads structure prunus can remove (supported here: mlp)",
        ),
    ];
    for (k, (model, parts, blocks, says)) in cases.into_iter().enumerate() {
        let out = dir.path().join(format!("bad-{k}"));
        let err = prune(model, &out, StructuredMethod::Wanda, &parts, blocks)
            .err()
            .unwrap_or_else(|| panic!("{model} {parts:?} {blocks:?} was accepted"));
        assert!(err.to_string().contains(says), "{err}");
        assert!(!out.exists(), "{out:?} was written");
    }
    // Calibrated methods need calibration samples.
    let folder = ModelFolder::open(fixture("tiny-llama")).unwrap();
    let mut graph = open_graph(&folder, &Device::Cpu).unwrap();
    let settings = StructuredSettings::new(
        StructuredMethod::Obs,
        [(Structure::MlpChannels, 0.5)].into_iter().collect(),
    );
    let cpu = CpuBackend::new(Par::Seq).unwrap();
    let out = dir.path().join("no-samples");
    let mut writer = FolderWriter::create(&folder, &out, false).unwrap();
    let err = prune_folder_structured(
        &cpu,
        &folder,
        &mut *graph,
        &Device::Cpu,
        None,
        &settings,
        &mut writer,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("calibration"), "{err}");
    drop(writer);
    assert!(!out.exists());
}

/// The real all-MiniLM-L6-v2 in `../shared/data` (skipped, with a notice,
/// where it is missing): prunus's magnitude, Wanda-sp and FLAP scores of
/// every block's MLP channels, FLAP's bias compensation and the
/// least-squares refit equal the Python references written from the
/// papers (`tests/fixtures/minilm_structured.py`) on the same 512
/// calibration sentences, up to the two frameworks' f32 forward passes.
#[test]
fn minilm_scores_match_the_python_references() {
    use prunus_candle::Recorder;
    use prunus_candle::calibration::read_lines;
    use prunus_core::Matrix;
    use prunus_core::methods::layerwise::{
        GroupLayout, GroupScore, GroupSearch, StructuredConfig, StructuredLayer, group_scores,
        refit, structured,
    };
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let (model, text) = (
        data.join("minilm-l6-v2"),
        data.join("text/python-docstrings.txt"),
    );
    if !model.exists() || !text.exists() {
        eprintln!(
            "skipping: {} is missing (the shared data folder is not here)",
            model.display()
        );
        return;
    }
    let reference =
        candle_core::safetensors::load(fixture("minilm_structured.safetensors"), &Device::Cpu)
            .unwrap();
    let get = |name: &str| -> Vec<f64> {
        reference[name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    };
    let folder = ModelFolder::open(&model).unwrap();
    let mut graph = open_graph(&folder, &Device::Cpu).unwrap();
    graph.load_all(&folder).unwrap();
    let lines = read_lines(&text).unwrap();
    let samples = token_samples(&folder, &*graph, &lines, 512, 0).unwrap();
    let cpu = CpuBackend::new(Par::Rayon(2)).unwrap();
    let blocks = graph.blocks();
    let names: Vec<String> = (0..blocks)
        .map(|i| format!("encoder.layer.{i}.output.dense"))
        .collect();
    let wanted = |n: &str| names.iter().any(|m| m == n);
    let mut recorders: Vec<Recorder<'_>> = (0..blocks)
        .map(|_| Recorder::new(&cpu, true, &wanted))
        .collect();
    for s in &samples {
        let mut h = graph.embed(s).unwrap();
        for (i, r) in recorders.iter_mut().enumerate() {
            h = graph.block(i, &h, Some(r)).unwrap();
        }
    }
    let stats: Vec<_> = recorders
        .into_iter()
        .zip(&names)
        .map(|(r, n)| r.finish().unwrap().stats(n).unwrap().clone())
        .collect();
    let linear = |i: usize, name: &str| {
        let l = graph
            .linears(i)
            .unwrap()
            .into_iter()
            .find(|l| l.name() == format!("encoder.layer.{i}.{name}"))
            .unwrap()
            .clone();
        let (r, c) = l.weight().dims2().unwrap();
        let w =
            Matrix::from_f32(r, c, &l.weight().flatten_all().unwrap().to_vec1().unwrap()).unwrap();
        let b: Vec<f64> = l
            .bias()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        (w, b)
    };
    let worst = |got: &[f64], want: &[f64]| -> f64 {
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        got.iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs() / scale)
            .fold(0.0, f64::max)
    };
    for (i, stats) in stats.iter().enumerate() {
        let (w, b) = linear(i, "output.dense");
        let (up, _) = linear(i, "intermediate.dense");
        let tied: Vec<f64> = (0..up.rows())
            .map(|r| up.row(r).iter().map(|v| v * v).sum())
            .collect();
        let lay = GroupLayout::new(1, w.cols()).unwrap();
        let layer = StructuredLayer::new(&w, stats, lay)
            .bias(&b)
            .tied_squares(&tied);
        for (score, name) in [
            (GroupScore::Magnitude, "magnitude"),
            (GroupScore::Wanda, "wanda"),
            (GroupScore::Fluctuation, "fluctuation"),
        ] {
            let got = group_scores(&cpu, &layer, score, 0.01).unwrap();
            let want = get(&format!("b{i}.{name}"));
            let d = worst(&got, &want);
            println!("block {i} {name}: largest difference {d:.2e} of the largest score");
            assert!(d < 1e-4, "block {i} {name}: {d:e}");
        }
        if i == 0 {
            let flap = structured(
                &cpu,
                &layer,
                &StructuredConfig::new(GroupSearch::Score(GroupScore::Fluctuation), 768)
                    .refit(false)
                    .swaps(0),
            )
            .unwrap();
            let d = worst(flap.bias.as_ref().unwrap(), &get("b0.flap_bias"));
            println!("block 0 FLAP bias: largest difference {d:.2e}");
            assert!(d < 1e-4, "FLAP bias: {d:e}");
            let even: Vec<bool> = (0..w.cols()).map(|j| j % 2 == 0).collect();
            let fitted = refit(&cpu, &layer, &even, 0.01).unwrap();
            let d = worst(fitted.weights.data(), &get("b0.refit"));
            let db = worst(fitted.bias.as_ref().unwrap(), &get("b0.refit_bias"));
            println!("block 0 refit: largest difference {d:.2e} (weights), {db:.2e} (bias)");
            assert!(d < 1e-3 && db < 1e-3, "refit: {d:e} {db:e}");
        }
    }
}

/// Removing blocks keeps every kept block's attention window: qwen2's
/// `max_window_layers` moves down by the removed blocks below it, a
/// `layer_types` list loses the removed entries.
#[test]
fn removed_blocks_keep_the_windows_of_the_rest() {
    use prunus_candle::blocks::config_without;
    let config = serde_json::json!({
        "num_hidden_layers": 6,
        "max_window_layers": 3,
        "layer_types": ["full", "full", "full", "sliding", "sliding", "sliding"],
    });
    let out = config_without(&config, &[1, 4]).unwrap();
    assert_eq!(out["num_hidden_layers"], 4);
    // Kept blocks 0, 2, 3, 5 become 0..4; windows from old block 3, new 2.
    assert_eq!(out["max_window_layers"], 2);
    assert_eq!(
        out["layer_types"],
        serde_json::json!(["full", "full", "sliding", "sliding"])
    );
    assert!(config_without(&serde_json::json!({"layers": 2}), &[0]).is_err());

    // Gemma 3's transformers 4 config states a window pattern (sliding,
    // global, sliding here): the kept blocks' types are written out.
    let gemma3: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("tiny-gemma3/config.json")).unwrap())
            .unwrap();
    assert!(gemma3.get("layer_types").is_none());
    let out = config_without(&gemma3, &[0]).unwrap();
    assert_eq!(
        out["layer_types"],
        serde_json::json!(["full_attention", "sliding_attention"])
    );
    let config = prunus_candle::llama::LlamaConfig::from_value(&out, "<out>").unwrap();
    assert_eq!((config.window(0), config.window(1)), (None, Some(24)));

    // A Qwen MoE keeps its dense blocks dense: the fixture's block 1 is
    // (mlp_only_layers); with decoder_sparse_step 2, every even block is.
    let qwen: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-qwen2_moe/config.json")).unwrap(),
    )
    .unwrap();
    let sparse = |c: &serde_json::Value| {
        prunus_candle::llama::LlamaConfig::from_value(c, "<c>")
            .unwrap()
            .moe
            .unwrap()
            .sparse
    };
    assert_eq!(sparse(&qwen), [true, false, true]);
    let out = config_without(&qwen, &[0]).unwrap();
    assert_eq!(sparse(&out), [false, true]);
    let out = config_without(&qwen, &[1]).unwrap();
    assert_eq!(sparse(&out), [true, true]);
    let mut stepped = qwen.clone();
    stepped["num_hidden_layers"] = 4.into();
    stepped["decoder_sparse_step"] = 2.into();
    stepped["mlp_only_layers"] = serde_json::json!([]);
    assert_eq!(sparse(&stepped), [false, true, false, true]);
    let out = config_without(&stepped, &[0]).unwrap();
    assert_eq!(sparse(&out), [true, false, true]);
}

/// The tensors structured pruning wrote, over the folder it read.
struct Written<'a> {
    new: std::collections::HashMap<String, candle_core::Tensor>,
    base: &'a ModelFolder,
}

impl prunus_candle::pruning::Sink for Written<'_> {
    fn put(&mut self, _: &str, _: &[f32]) -> prunus_candle::Result<()> {
        unreachable!("structured pruning writes whole tensors")
    }

    fn put_tensor(&mut self, name: &str, shape: &[usize], v: &[f32]) -> prunus_candle::Result<()> {
        let t = candle_core::Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap();
        self.new.insert(name.to_string(), t);
        Ok(())
    }
}

impl prunus_candle::Weights for Written<'_> {
    fn tensor(
        &self,
        name: &str,
        dtype: candle_core::DType,
        device: &Device,
    ) -> prunus_candle::Result<candle_core::Tensor> {
        match self.new.get(name) {
            Some(t) => Ok(t.to_dtype(dtype)?.to_device(device)?),
            None => self.base.tensor(name, dtype, device),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.new.contains_key(name) || self.base.contains(name)
    }
}

/// Removing groups without a refit (magnitude) is the dense model with
/// those groups' consumer columns zeroed: the producers lost exactly the
/// rows tied to them, in separate projections (llama) and in Phi-3's fused
/// `qkv_proj` and `gate_up_proj` (whose query, key, value, gate and up
/// parts each lose their own rows).
#[test]
fn removed_groups_are_their_zeroed_columns() {
    use prunus_candle::llama::Llama;
    use prunus_candle::structured::prune_structured;
    use prunus_candle::{Graph, Weights};

    let cpu = CpuBackend::new(Par::Rayon(2)).unwrap();
    let tokens: Vec<u32> = (0..30u32).map(|t| (t * 53 + 7) % 380 + 2).collect();
    let runs: [Parts; 2] = [
        vec![(Structure::KvGroups, 0.5), (Structure::MlpChannels, 0.5)],
        vec![(Structure::Heads, 0.5)],
    ];
    for model in ["llama", "phi3"] {
        let folder = ModelFolder::open(fixture(&format!("tiny-{model}"))).unwrap();
        let mut config = folder.config().clone();
        if model == "phi3" {
            // LongRoPE fixes the head count for transformers: run plain RoPE.
            let object = config.as_object_mut().unwrap();
            object.remove("rope_parameters");
            object.insert("rope_theta".into(), 10000.0.into());
            object.insert("partial_rotary_factor".into(), 0.5.into());
        }
        let json = config;
        let config = LlamaConfig::from_value(&json, model).unwrap();
        assert_eq!(config.fused_projections, model == "phi3");
        for parts in &runs {
            let mut graph = Llama::new(config.clone(), Device::Cpu).unwrap();
            let settings = StructuredSettings::new(
                StructuredMethod::Magnitude,
                parts.iter().copied().collect(),
            );
            let mut written = Written {
                new: Default::default(),
                base: &folder,
            };
            let (report, changes) = prune_structured(
                &cpu,
                &mut graph,
                &folder as &dyn Weights,
                None,
                &settings,
                &mut written,
                &mut |_| {},
            )
            .unwrap();
            let mut smaller = json.clone();
            for (field, value) in &changes {
                smaller[*field] = (*value).into();
            }
            let mut pruned = Llama::new(
                LlamaConfig::from_value(&smaller, model).unwrap(),
                Device::Cpu,
            )
            .unwrap();
            pruned.load_all(&written).unwrap();
            let mut zeroed = Llama::new(config.clone(), Device::Cpu).unwrap();
            zeroed.load_all(&folder).unwrap();
            for layer in &report.layers {
                let groups = layer.groups.as_ref().unwrap();
                let linear = zeroed.linear_mut(layer.block, &layer.name).unwrap();
                let (out, cols) = linear.weight().dims2().unwrap();
                let width = cols / groups.before;
                let mut w: Vec<f32> = linear.weight().flatten_all().unwrap().to_vec1().unwrap();
                for &g in &groups.removed {
                    for r in 0..out {
                        w[r * cols + g * width..r * cols + (g + 1) * width].fill(0.0);
                    }
                }
                linear
                    .set_weight(
                        candle_core::Tensor::from_vec(w, (out, cols), &Device::Cpu).unwrap(),
                    )
                    .unwrap();
            }
            let a = pruned.forward(&tokens).unwrap();
            let b = zeroed.forward(&tokens).unwrap();
            let diff = max_abs(&(a - &b).unwrap());
            let scale = max_abs(&b);
            println!(
                "{model} {parts:?}: the pruned model differs by {diff:e} (logits up to {scale})"
            );
            assert!(diff <= 1e-5 * scale.max(1.0), "{model} {parts:?}: {diff:e}");
        }
    }
}

/// experts=F drops whole experts from every mixture: the expert count in
/// the config, the tensors (the rest renumbered, their weights as they
/// were), the router's rows; calibrated, the experts of least output
/// energy go; magnitude, those of least weight norm. The output runs.
#[test]
fn experts_go_whole_and_the_rest_are_renumbered() {
    use prunus_candle::experts::expert_usage;
    let dir = tempfile::tempdir().unwrap();
    let cpu = CpuBackend::new(Par::Rayon(2)).unwrap();
    for (model, experts, key) in [
        ("mixtral", 4, "num_local_experts"),
        ("qwen2_moe", 6, "num_experts"),
        ("qwen3_moe", 8, "num_experts"),
    ] {
        let input = ModelFolder::open(fixture(&format!("tiny-{model}"))).unwrap();
        for method in [StructuredMethod::Magnitude, StructuredMethod::Obs] {
            let out = dir.path().join(format!("{model}-{}", method.name()));
            let mut graph = open_graph(&input, &Device::Cpu).unwrap();
            let samples = token_samples(&input, &*graph, &calibration_lines(), 4, 48).unwrap();
            let mut settings = StructuredSettings::new(method, BTreeMap::new());
            settings.experts = Some(0.5);
            let mut writer = FolderWriter::create(&input, &out, false).unwrap();
            let report = prune_folder_structured(
                &cpu,
                &input,
                &mut *graph,
                &Device::Cpu,
                Some(&samples),
                &settings,
                &mut writer,
                &mut |_| {},
            )
            .unwrap();
            writer.finish(&[]).unwrap();
            let what = format!("{model} {}", method.name());
            let folder = ModelFolder::open(&out).unwrap();
            assert_eq!(folder.config()[key], experts / 2, "{what}");
            let config = LlamaConfig::from_value(folder.config(), &what).unwrap();
            let implied: BTreeMap<String, Vec<usize>> =
                config.tensor_shapes().into_iter().collect();
            assert_eq!(shapes(&folder), implied, "{what}");
            // The choice: the least used, by the method's measure.
            let mut dense = open_graph(&input, &Device::Cpu).unwrap();
            let calibrated = Some(samples.as_slice()).filter(|_| method.is_calibrated());
            let usage = expert_usage(&cpu, &mut *dense, &input, calibrated).unwrap();
            assert_eq!(
                report.layers.len(),
                usage.iter().flatten().count(),
                "{what}"
            );
            for layer in &report.layers {
                let g = layer.groups.as_ref().unwrap();
                assert_eq!((g.structure, g.before), (Structure::Experts, experts));
                assert_eq!(g.removed.len(), experts / 2, "{what}");
                let u = usage[layer.block].as_ref().unwrap();
                let kept: Vec<usize> = (0..experts).filter(|e| !g.removed.contains(e)).collect();
                for &r in &g.removed {
                    for &k in &kept {
                        assert!(u[r].score <= u[k].score, "{what}: {r} went before {k}");
                    }
                }
                // Kept experts renumbered with their weights; router rows.
                let i = layer.block;
                let router_in = input.values(&format!("{}.weight", layer.name)).unwrap();
                let router_out = folder.values(&format!("{}.weight", layer.name)).unwrap();
                let h = router_in.len() / experts;
                for (new, &old) in kept.iter().enumerate() {
                    assert_eq!(
                        router_out[new * h..(new + 1) * h],
                        router_in[old * h..(old + 1) * h],
                        "{what}"
                    );
                    let (a, b) = if model == "mixtral" {
                        ("block_sparse_moe.experts", "w2")
                    } else {
                        ("mlp.experts", "down_proj")
                    };
                    let name = |e: usize| format!("model.layers.{i}.{a}.{e}.{b}.weight");
                    assert_eq!(
                        folder.values(&name(new)).unwrap(),
                        input.values(&name(old)).unwrap(),
                        "{what}"
                    );
                }
            }
            let mut pruned = open_graph(&folder, &Device::Cpu).unwrap();
            pruned.load_all(&folder).unwrap();
            let logits = pruned.forward(&[3, 17, 42, 5]).unwrap();
            let values = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(values.iter().all(|v| v.is_finite()), "{what}");
        }
    }
    // Refused: other structures alongside, too many, a model without experts.
    for (model, parts, fraction, says) in [
        ("mixtral", vec![(Structure::Heads, 0.5)], 0.5, "on its own"),
        (
            "mixtral",
            vec![],
            0.75,
            "keep at least num_experts_per_tok = 2",
        ),
        ("llama", vec![], 0.5, "no mixture of experts"),
    ] {
        let input = ModelFolder::open(fixture(&format!("tiny-{model}"))).unwrap();
        let mut graph = open_graph(&input, &Device::Cpu).unwrap();
        let mut settings =
            StructuredSettings::new(StructuredMethod::Magnitude, parts.into_iter().collect());
        settings.experts = Some(fraction);
        let out = dir.path().join(format!("bad-{model}-{fraction}"));
        let mut writer = FolderWriter::create(&input, &out, false).unwrap();
        let err = prune_folder_structured(
            &cpu,
            &input,
            &mut *graph,
            &Device::Cpu,
            None,
            &settings,
            &mut writer,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
    }
}
