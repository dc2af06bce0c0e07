//! The BERT graph against Hugging Face transformers on the real MiniLM
//! (fixtures written by `tests/fixtures/bert_reference.py`), against a
//! plain f64 implementation on a tiny model built in memory, and its
//! recording, loading and configuration errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use prunus_candle::bert::{
    Activation, Bert, BertConfig, Pooling, SentencePooling, l2_normalize, mean_pool,
};
use prunus_candle::{Error, Graph, Part, Recorder};
use prunus_cpu::{CpuBackend, Par};

/// Max abs difference allowed against transformers (f32 on both sides).
const TOLERANCE: f32 = 1e-4;

fn minilm() -> Option<PathBuf> {
    let folder = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/minilm-l6-v2"
    ));
    if folder.join("model.safetensors").exists() {
        Some(folder.to_path_buf())
    } else {
        println!(
            "skipped: no MiniLM at {} (the shared data folder is not there)",
            folder.display()
        );
        None
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn minilm_matches_transformers() {
    let Some(folder) = minilm() else { return };
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("bert_reference.json")).unwrap())
            .unwrap();
    let reference =
        candle_core::safetensors::load(fixture("bert_reference.safetensors"), &Device::Cpu)
            .unwrap();
    let sentences: Vec<&str> = meta["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let ids: Vec<Vec<u32>> = meta["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|i| i.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    assert_eq!(sentences.len(), ids.len());

    // The tokenizers crate agrees with transformers' tokenizer. The folder's
    // tokenizer.json pads to 128: one unpadded sequence is what prunus runs.
    let mut tokenizer = tokenizers::Tokenizer::from_file(folder.join("tokenizer.json")).unwrap();
    tokenizer.with_padding(None);
    for (sentence, expected) in sentences.iter().zip(&ids) {
        let encoding = tokenizer.encode(*sentence, true).unwrap();
        assert_eq!(encoding.get_ids(), expected.as_slice(), "{sentence}");
    }

    let weights =
        candle_core::safetensors::load(folder.join("model.safetensors"), &Device::Cpu).unwrap();
    let config = BertConfig::from_folder(&folder).unwrap();
    assert_eq!(config.hidden_act, Activation::Gelu);
    let mut bert = Bert::new(config, &weights, Device::Cpu).unwrap();
    assert_eq!(bert.prefix(), "");
    bert.load_all(&weights).unwrap();
    let pooling = SentencePooling::from_folder(&folder).unwrap();
    assert_eq!(pooling, SentencePooling::default());
    let expected_embeddings = &reference["sentence_embeddings"];

    let mut worst = [0f32; 4];
    for (k, tokens) in ids.iter().enumerate() {
        let embedded = bert.embed(tokens).unwrap();
        let mut h = bert.block(0, &embedded, None).unwrap();
        let after_block0 = h.clone();
        for i in 1..bert.blocks() {
            h = bert.block(i, &h, None).unwrap();
        }
        let last = bert.head(&h).unwrap();
        let embedding = pooling.embed(&last).unwrap().squeeze(0).unwrap();
        let diffs = [
            max_abs_diff(
                &embedded.squeeze(0).unwrap(),
                &reference[&format!("s{k}.embeddings")],
            ),
            max_abs_diff(
                &after_block0.squeeze(0).unwrap(),
                &reference[&format!("s{k}.block0")],
            ),
            max_abs_diff(&last.squeeze(0).unwrap(), &reference[&format!("s{k}.last")]),
            max_abs_diff(&embedding, &expected_embeddings.get(k).unwrap()),
        ];
        for (w, d) in worst.iter_mut().zip(diffs) {
            *w = w.max(d);
        }
        // The default forward pass gives the same final states.
        assert_eq!(max_abs_diff(&bert.forward(tokens).unwrap(), &last), 0.0);
    }
    println!(
        "max abs difference vs transformers: embeddings {:.2e}, block 0 {:.2e}, last block {:.2e}, \
         sentence embeddings {:.2e}",
        worst[0], worst[1], worst[2], worst[3]
    );
    for (what, w) in ["embeddings", "block 0", "last block", "sentence embeddings"]
        .iter()
        .zip(worst)
    {
        assert!(w < TOLERANCE, "{what}: max abs difference {w:e}");
    }
}

/// A deterministic pseudo-random value in `[-scale, scale]` for element `i`
/// of a tensor whose name hashes to `salt`.
fn value(i: usize, salt: u64, scale: f32) -> f32 {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt;
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * scale
}

fn tiny_config(act: &str) -> BertConfig {
    BertConfig::from_json(
        &format!(
            r#"{{"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
                "intermediate_size": 24, "hidden_act": "{act}", "layer_norm_eps": 1e-12,
                "max_position_embeddings": 12, "type_vocab_size": 2, "vocab_size": 50,
                "position_embedding_type": "absolute", "model_type": "bert"}}"#
        ),
        "<tiny>",
    )
    .unwrap()
}

/// Random weights for `config`, named with `prefix`, plus a pooler the
/// graph must leave alone.
fn tiny_weights(config: &BertConfig, prefix: &str) -> HashMap<String, Tensor> {
    let mut weights = HashMap::new();
    for (name, dims) in config.tensor_shapes(prefix) {
        let salt = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with("LayerNorm.weight") {
            (0..n).map(|i| 1.0 + value(i, salt, 0.2)).collect()
        } else {
            (0..n).map(|i| value(i, salt, 0.5)).collect()
        };
        weights.insert(name, Tensor::from_vec(values, dims, &Device::Cpu).unwrap());
    }
    let h = config.hidden_size;
    weights.insert(
        format!("{prefix}pooler.dense.weight"),
        Tensor::zeros((h, h), DType::F32, &Device::Cpu).unwrap(),
    );
    weights
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    let t = t.to_dtype(DType::F64).unwrap();
    let t = if t.rank() == 3 {
        t.squeeze(0).unwrap()
    } else {
        t
    };
    t.to_vec2::<f64>().unwrap()
}

/// A plain f64 BERT (gelu_new activation), to check the candle graph and
/// the inputs it records. Returns the embeddings, and for each block its
/// output and the inputs of its linear layers (q/k/v, attention output,
/// intermediate, output).
struct Naive<'a> {
    w: &'a HashMap<String, Tensor>,
    prefix: String,
    heads: usize,
}

type Rows = Vec<Vec<f64>>;

impl Naive<'_> {
    fn get(&self, name: &str) -> Rows {
        rows(&self.w[&format!("{}{name}", self.prefix)])
    }

    fn vec(&self, name: &str) -> Vec<f64> {
        self.w[&format!("{}{name}", self.prefix)]
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    }

    fn linear(&self, x: &Rows, name: &str) -> Rows {
        let (w, b) = (
            self.get(&format!("{name}.weight")),
            self.vec(&format!("{name}.bias")),
        );
        x.iter()
            .map(|r| {
                w.iter()
                    .zip(&b)
                    .map(|(wr, bi)| bi + wr.iter().zip(r).map(|(a, c)| a * c).sum::<f64>())
                    .collect()
            })
            .collect()
    }

    fn norm(&self, x: &Rows, name: &str) -> Rows {
        let (g, b) = (
            self.vec(&format!("{name}.weight")),
            self.vec(&format!("{name}.bias")),
        );
        x.iter()
            .map(|r| {
                let n = r.len() as f64;
                let mean = r.iter().sum::<f64>() / n;
                let var = r.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                r.iter()
                    .zip(g.iter().zip(&b))
                    .map(|(v, (g, b))| (v - mean) / (var + 1e-12).sqrt() * g + b)
                    .collect()
            })
            .collect()
    }

    fn embed(&self, tokens: &[u32]) -> Rows {
        let (word, pos, ty) = (
            self.get("embeddings.word_embeddings.weight"),
            self.get("embeddings.position_embeddings.weight"),
            self.get("embeddings.token_type_embeddings.weight"),
        );
        let x: Rows = tokens
            .iter()
            .enumerate()
            .map(|(p, &t)| {
                (0..word[0].len())
                    .map(|j| word[t as usize][j] + pos[p][j] + ty[0][j])
                    .collect()
            })
            .collect();
        self.norm(&x, "embeddings.LayerNorm")
    }

    /// The block's output and its four recorded inputs.
    fn block(&self, i: usize, x: &Rows) -> (Rows, [Rows; 4]) {
        let l = format!("encoder.layer.{i}");
        let q = self.linear(x, &format!("{l}.attention.self.query"));
        let k = self.linear(x, &format!("{l}.attention.self.key"));
        let v = self.linear(x, &format!("{l}.attention.self.value"));
        let (seq, h) = (x.len(), x[0].len());
        let d = h / self.heads;
        let mut context = vec![vec![0.0; h]; seq];
        for head in 0..self.heads {
            let cols = head * d..(head + 1) * d;
            for s in 0..seq {
                let scores: Vec<f64> = (0..seq)
                    .map(|t| {
                        cols.clone().map(|c| q[s][c] * k[t][c]).sum::<f64>() / (d as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in cols.clone() {
                    context[s][c] = (0..seq).map(|t| e[t] / z * v[t][c]).sum();
                }
            }
        }
        let a = self.linear(&context, &format!("{l}.attention.output.dense"));
        let sum: Rows = a
            .iter()
            .zip(x)
            .map(|(a, x)| a.iter().zip(x).map(|(a, x)| a + x).collect())
            .collect();
        let h1 = self.norm(&sum, &format!("{l}.attention.output.LayerNorm"));
        let inner: Rows = self
            .linear(&h1, &format!("{l}.intermediate.dense"))
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .map(|x| {
                        let c = (2.0 / std::f64::consts::PI).sqrt();
                        0.5 * x * (1.0 + (c * (x + 0.044715 * x.powi(3))).tanh())
                    })
                    .collect()
            })
            .collect();
        let o = self.linear(&inner, &format!("{l}.output.dense"));
        let sum: Rows = o
            .iter()
            .zip(&h1)
            .map(|(a, x)| a.iter().zip(x).map(|(a, x)| a + x).collect())
            .collect();
        let out = self.norm(&sum, &format!("{l}.output.LayerNorm"));
        (out, [x.clone(), context, h1, inner])
    }
}

fn max_diff_rows(a: &Rows, b: &Rows) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(r, s)| {
            assert_eq!(r.len(), s.len());
            r.iter().zip(s).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f64::max)
}

const TOKENS: [u32; 9] = [1, 17, 4, 49, 0, 23, 23, 8, 2];

#[test]
fn tiny_bert_with_prefix_matches_plain_f64() {
    let config = tiny_config("gelu_new");
    let weights = tiny_weights(&config, "bert.");
    let mut bert = Bert::new(config, &weights, Device::Cpu).unwrap();
    assert_eq!(bert.prefix(), "bert.");
    assert_eq!(bert.max_len(), 12);
    bert.load_all(&weights).unwrap();
    let naive = Naive {
        w: &weights,
        prefix: "bert.".into(),
        heads: 4,
    };
    let mut expected = naive.embed(&TOKENS);
    let mut h = bert.embed(&TOKENS).unwrap();
    assert_eq!(h.dims(), [1, TOKENS.len(), 16]);
    assert!(max_diff_rows(&rows(&h), &expected) < 1e-5);
    for i in 0..bert.blocks() {
        expected = naive.block(i, &expected).0;
        h = bert.block(i, &h, None).unwrap();
        let d = max_diff_rows(&rows(&h), &expected);
        assert!(d < 1e-4, "block {i}: max abs difference {d:e}");
    }
    let names: Vec<&str> = bert.linears(1).unwrap().iter().map(|l| l.name()).collect();
    assert_eq!(
        names,
        [
            "bert.encoder.layer.1.attention.self.query",
            "bert.encoder.layer.1.attention.self.key",
            "bert.encoder.layer.1.attention.self.value",
            "bert.encoder.layer.1.attention.output.dense",
            "bert.encoder.layer.1.intermediate.dense",
            "bert.encoder.layer.1.output.dense",
        ]
    );

    // A pruned weight changes the output; setting the original back restores it.
    let before = bert.forward(&TOKENS).unwrap();
    let name = "bert.encoder.layer.1.intermediate.dense";
    let original = bert.linear_mut(1, name).unwrap().weight().clone();
    let zeroed = original.zeros_like().unwrap();
    bert.linear_mut(1, name)
        .unwrap()
        .set_weight(zeroed)
        .unwrap();
    assert!(max_abs_diff(&bert.forward(&TOKENS).unwrap(), &before) > 1e-3);
    bert.linear_mut(1, name)
        .unwrap()
        .set_weight(original)
        .unwrap();
    assert_eq!(max_abs_diff(&bert.forward(&TOKENS).unwrap(), &before), 0.0);
    assert!(bert.linear_mut(1, "bert.pooler.dense").is_err());
}

#[test]
fn recorder_sees_each_linear_layers_input() {
    let config = tiny_config("gelu_new");
    let weights = tiny_weights(&config, "");
    let mut bert = Bert::new(config, &weights, Device::Cpu).unwrap();
    bert.load_all(&weights).unwrap();
    let naive = Naive {
        w: &weights,
        prefix: String::new(),
        heads: 4,
    };
    let dense = CpuBackend::new(Par::Seq).unwrap();
    let all = |_: &str| true;
    let mut recorder = Recorder::new(&dense, true, &all);
    let h0 = bert.embed(&TOKENS).unwrap();
    let h1 = bert.block(0, &h0, Some(&mut recorder)).unwrap();
    let h2 = bert.block(1, &h1, Some(&mut recorder)).unwrap();
    // Recording does not change the computation.
    assert_eq!(max_abs_diff(&h2, &bert.forward(&TOKENS).unwrap()), 0.0);
    let recorder = recorder.finish().unwrap();

    let mut x = naive.embed(&TOKENS);
    for i in 0..2 {
        let (next, inputs) = naive.block(i, &x);
        let l = format!("encoder.layer.{i}");
        let q = recorder
            .stats(&format!("{l}.attention.self.query"))
            .unwrap();
        for other in ["key", "value"] {
            let s = recorder
                .stats(&format!("{l}.attention.self.{other}"))
                .unwrap();
            assert!(std::ptr::eq(q, s), "q and {other} share one statistics");
        }
        for (layer, input) in [
            "attention.self.query",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ]
        .iter()
        .zip(&inputs)
        {
            let stats = recorder.stats(&format!("{l}.{layer}")).unwrap();
            assert_eq!(stats.rows(), TOKENS.len() as u64, "{l}.{layer}");
            assert_eq!(stats.columns(), input[0].len(), "{l}.{layer}");
            let gram = stats.gram().unwrap();
            for (j, &s) in stats.sum_squares().iter().enumerate() {
                let direct: f64 = input.iter().map(|r| r[j] * r[j]).sum();
                assert!(
                    (s - direct).abs() <= 1e-4 * direct.max(1.0),
                    "{l}.{layer} column {j}: recorded {s}, direct {direct}"
                );
                assert!((gram.data()[j * input[0].len() + j] - s).abs() <= 1e-9 * s.max(1.0));
            }
        }
        x = next;
    }
    // Four statistics per block: q/k/v share one.
    assert_eq!(recorder.names().count(), 12);

    // The q/k/v input is exactly the block's input as the graph computed it.
    let direct = rows(&h0);
    let recorded = recorder
        .stats("encoder.layer.0.attention.self.key")
        .unwrap();
    for (j, &s) in recorded.sum_squares().iter().enumerate() {
        let d: f64 = direct.iter().map(|r| r[j] * r[j]).sum();
        assert!((s - d).abs() <= 1e-9 * d.max(1.0));
    }
}

#[test]
fn unloaded_parts_and_bad_inputs_are_errors() {
    let config = tiny_config("gelu");
    let weights = tiny_weights(&config, "");
    let mut bert = Bert::new(config, &weights, Device::Cpu).unwrap();
    let h = Tensor::zeros((1, 3, 16), DType::F32, &Device::Cpu).unwrap();
    let message = |e: Error| e.to_string();

    assert!(message(bert.embed(&[1, 2]).unwrap_err()).contains("not loaded"));
    let e = message(bert.block(0, &h, None).unwrap_err());
    assert!(e.contains("block 0 is not loaded"), "{e}");
    assert!(bert.linears(0).is_err());
    assert!(bert.linear_mut(0, "encoder.layer.0.output.dense").is_err());

    bert.load(Part::Block(0), &weights).unwrap();
    assert!(bert.is_loaded(Part::Block(0)) && !bert.is_loaded(Part::Block(1)));
    assert_eq!(bert.block(0, &h, None).unwrap().dims(), [1, 3, 16]);
    assert!(bert.block(1, &h, None).is_err());
    bert.release(Part::Block(0));
    assert!(bert.block(0, &h, None).is_err());

    assert!(message(bert.block(2, &h, None).unwrap_err()).contains("does not exist"));
    assert!(bert.load(Part::Block(2), &weights).is_err());
    let wrong_width = Tensor::zeros((1, 3, 8), DType::F32, &Device::Cpu).unwrap();
    bert.load(Part::Block(0), &weights).unwrap();
    assert!(bert.block(0, &wrong_width, None).is_err());

    bert.load(Part::Embeddings, &weights).unwrap();
    assert!(message(bert.embed(&[1, 50]).unwrap_err()).contains("token id 50"));
    assert!(bert.embed(&[]).is_err());
    assert!(bert.embed(&[1; 13]).is_err());
    assert_eq!(bert.embed(&[1; 12]).unwrap().dims(), [1, 12, 16]);

    // A tensor of the wrong shape, and a missing one, are named.
    let mut broken = weights.clone();
    broken.insert(
        "encoder.layer.1.output.dense.weight".into(),
        Tensor::zeros((16, 16), DType::F32, &Device::Cpu).unwrap(),
    );
    let e = message(bert.load(Part::Block(1), &broken).unwrap_err());
    assert!(
        e.contains("encoder.layer.1.output.dense.weight") && e.contains("[16, 24]"),
        "{e}"
    );
    broken.remove("encoder.layer.1.output.LayerNorm.bias");
    broken.insert(
        "encoder.layer.1.output.dense.weight".into(),
        weights["encoder.layer.1.output.dense.weight"].clone(),
    );
    let e = message(bert.load(Part::Block(1), &broken).unwrap_err());
    assert!(e.contains("encoder.layer.1.output.LayerNorm.bias"), "{e}");

    let empty: HashMap<String, Tensor> = HashMap::new();
    assert!(matches!(
        Bert::new(BertConfig::default(), &empty, Device::Cpu),
        Err(Error::Model { .. })
    ));
}

#[test]
fn configs_prunus_cannot_run_are_errors() {
    let base = r#""hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "intermediate_size": 24, "vocab_size": 50"#;
    let parse = |extra: &str| BertConfig::from_json(&format!("{{{base}{extra}}}"), "tiny");
    let error = |extra: &str| match parse(extra) {
        Err(e @ Error::Model { .. }) => e.to_string(),
        other => panic!("{extra}: expected a model error, got {other:?}"),
    };

    let e = error(r#", "hidden_act": "swish""#);
    assert!(e.contains("swish") && e.contains("not supported"), "{e}");
    let e = error(r#", "position_embedding_type": "relative_key""#);
    assert!(e.contains("relative_key"), "{e}");
    assert!(error(r#", "layer_norm_eps": -1"#).contains("layer_norm_eps"));
    assert!(error(r#", "max_position_embeddings": "512""#).contains("max_position_embeddings"));
    assert!(error(r#", "num_attention_heads": 5"#).contains("multiple"));
    let e = BertConfig::from_json(r#"{"hidden_size": 16}"#, "tiny").unwrap_err();
    assert!(e.to_string().contains("num_hidden_layers"), "{e}");
    assert!(BertConfig::from_json("[1, 2]", "tiny").is_err());
    assert!(BertConfig::from_json("{", "tiny").is_err());

    for (name, act) in [
        ("gelu", Activation::Gelu),
        ("gelu_new", Activation::GeluTanh),
        ("gelu_pytorch_tanh", Activation::GeluTanh),
        ("relu", Activation::Relu),
    ] {
        let c = parse(&format!(r#", "hidden_act": "{name}""#)).unwrap();
        assert_eq!(c.hidden_act, act);
    }
    let c = parse("").unwrap();
    assert_eq!((c.max_position_embeddings, c.type_vocab_size), (512, 2));
    assert_eq!(c.head_dim(), 4);
}

#[test]
fn pooling_configs_and_vectors() {
    let mode = |m: &str| {
        Pooling::from_json(
            &format!(
                r#"{{"word_embedding_dimension": 4, "pooling_mode_cls_token": {},
                    "pooling_mode_mean_tokens": {}, "pooling_mode_max_tokens": {},
                    "pooling_mode_mean_sqrt_len_tokens": {}}}"#,
                m.contains("cls"),
                m.contains("mean,"),
                m.contains("max"),
                m.contains("sqrt")
            ),
            "1_Pooling/config.json",
        )
    };
    assert_eq!(mode("mean,").unwrap(), Pooling::Mean);
    assert_eq!(mode("cls").unwrap(), Pooling::Cls);
    assert_eq!(mode("max").unwrap(), Pooling::Max);
    assert!(
        mode("sqrt")
            .unwrap_err()
            .to_string()
            .contains("mean_sqrt_len")
    );
    assert!(
        mode("mean,cls")
            .unwrap_err()
            .to_string()
            .contains("several")
    );
    assert!(
        mode("")
            .unwrap_err()
            .to_string()
            .contains("no pooling mode")
    );

    let hidden = Tensor::new(&[[[1f32, -2.0], [3.0, 6.0], [2.0, 2.0]]], &Device::Cpu).unwrap();
    let v = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(v(mean_pool(&hidden).unwrap()), [2.0, 2.0]);
    assert_eq!(mean_pool(&hidden).unwrap().dims(), [1, 2]);
    assert_eq!(v(Pooling::Cls.pool(&hidden).unwrap()), [1.0, -2.0]);
    assert_eq!(v(Pooling::Max.pool(&hidden).unwrap()), [3.0, 6.0]);
    assert_eq!(
        v(mean_pool(&hidden.squeeze(0).unwrap()).unwrap()),
        [2.0, 2.0]
    );
    let unit = v(l2_normalize(&Tensor::new(&[[3f32, 4.0]], &Device::Cpu).unwrap()).unwrap());
    assert_eq!(unit, [0.6, 0.8]);
    let zero = v(l2_normalize(&Tensor::new(&[[0f32, 0.0]], &Device::Cpu).unwrap()).unwrap());
    assert_eq!(zero, [0.0, 0.0]);
    let empty = Tensor::zeros((1, 0, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(mean_pool(&empty).is_err());
    assert!(mean_pool(&Tensor::new(&[1f32], &Device::Cpu).unwrap()).is_err());
}
