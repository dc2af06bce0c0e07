//! Model folders in and out: opening single-file and sharded checkpoints,
//! their faults, the writer's output and refusals, and the exact global
//! magnitude selection across shards.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use half::{bf16, f16};
use prunus_adapters::safetensors::Checkpoint;
use prunus_candle::folder::{
    FolderWriter, GlobalMagnitude, INDEX_FILE, ModelFolder, WEIGHTS_FILE, magnitude_global,
};
use prunus_candle::{Error, Weights};
use safetensors::tensor::TensorView;

/// A tensor of a synthetic checkpoint.
struct T {
    name: &'static str,
    dtype: &'static str,
    shape: Vec<usize>,
    values: Vec<f64>,
}

fn t(name: &'static str, dtype: &'static str, shape: &[usize], values: Vec<f64>) -> T {
    T {
        name,
        dtype,
        shape: shape.to_vec(),
        values,
    }
}

/// Deterministic values in [-2, 2) with repeats (a hash of the position).
fn wave(n: usize, seed: u64) -> Vec<f64> {
    (0..n as u64)
        .map(|i| {
            let mut x =
                (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.wrapping_mul(0xD6E8_FEB8);
            x ^= x >> 29;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 32;
            ((x % 4096) as f64 - 2048.0) / 1024.0
        })
        .collect()
}

/// Values drawn from a handful of magnitudes (exact in every float dtype),
/// so that ties are everywhere.
fn tied(n: usize, seed: u64) -> Vec<f64> {
    let set = [0.25, -0.5, 0.5, 1.0, -1.0, 0.75, 2.0, -0.25];
    wave(n, seed)
        .iter()
        .map(|x| set[((x + 2.0) * 1024.0) as usize % set.len()])
        .collect()
}

fn st_dtype(d: &str) -> safetensors::Dtype {
    match d {
        "F32" => safetensors::Dtype::F32,
        "F16" => safetensors::Dtype::F16,
        "BF16" => safetensors::Dtype::BF16,
        "I64" => safetensors::Dtype::I64,
        _ => panic!("dtype {d}"),
    }
}

fn encode(dtype: &str, values: &[f64]) -> Vec<u8> {
    let mut out = Vec::new();
    for &v in values {
        match dtype {
            "F32" => out.extend_from_slice(&(v as f32).to_le_bytes()),
            "F16" => out.extend_from_slice(&f16::from_f64(v).to_le_bytes()),
            "BF16" => out.extend_from_slice(&bf16::from_f64(v).to_le_bytes()),
            "I64" => out.extend_from_slice(&(v as i64).to_le_bytes()),
            _ => panic!("dtype {dtype}"),
        }
    }
    out
}

/// `x` as stored in `dtype` and read back.
fn rounded(dtype: &str, x: f32) -> f32 {
    match dtype {
        "F16" => f16::from_f32(x).to_f32(),
        "BF16" => bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

fn write_safetensors(path: &Path, tensors: &[T]) {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| encode(t.dtype, &t.values)).collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            let view = TensorView::new(st_dtype(t.dtype), t.shape.clone(), b).unwrap();
            (t.name, view)
        })
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), path).unwrap();
}

/// The tensor names of a safetensors file in the order of their data, read
/// with the reference implementation.
fn data_order(path: &Path) -> Vec<String> {
    let bytes = fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut names: Vec<(usize, String)> = meta
        .tensors()
        .into_iter()
        .map(|(n, info)| (info.data_offsets.0, n))
        .collect();
    names.sort();
    names.into_iter().map(|(_, n)| n).collect()
}

const TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,"world":2},"unk_token":"[UNK]"}}"#;

/// The extra files of every fixture: config, tokenizer, a README and a
/// subfolder.
fn extras(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join("config.json"),
        r#"{"model_type": "bert", "hidden_size": 4}"#,
    )
    .unwrap();
    fs::write(dir.join("tokenizer.json"), TOKENIZER).unwrap();
    fs::write(dir.join("README.md"), "# a tiny model\n").unwrap();
    fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"pooling_mode_mean_tokens": true}"#,
    )
    .unwrap();
}

const SHARDS: [&str; 3] = [
    "model-00001-of-00003.safetensors",
    "model-00002-of-00003.safetensors",
    "model-00003-of-00003.safetensors",
];

/// The sharded fixture's tensors, shard by shard.
fn shard_tensors(values: fn(usize, u64) -> Vec<f64>) -> [Vec<T>; 3] {
    [
        vec![
            t("embed.weight", "F32", &[8, 4], values(32, 1)),
            t("layers.0.w", "BF16", &[4, 4], values(16, 2)),
            t("position_ids", "I64", &[6], (0..6).map(f64::from).collect()),
        ],
        vec![
            t("layers.1.w", "F16", &[4, 6], values(24, 3)),
            t("layers.1.b", "F32", &[6], values(6, 4)),
        ],
        vec![
            t("head.w", "F32", &[3, 4], values(12, 5)),
            t("norm", "BF16", &[4], values(4, 6)),
        ],
    ]
}

/// A sharded folder (3 shards, F32, BF16, F16 and I64 tensors) in `dir`.
fn sharded_folder(dir: &Path, values: fn(usize, u64) -> Vec<f64>) -> [Vec<T>; 3] {
    extras(dir);
    let shards = shard_tensors(values);
    let mut map = serde_json::Map::new();
    let mut total = 0u64;
    for (file, tensors) in SHARDS.iter().zip(&shards) {
        write_safetensors(&dir.join(file), tensors);
        for t in tensors {
            map.insert(t.name.into(), (*file).into());
            total += encode(t.dtype, &t.values).len() as u64;
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": map});
    fs::write(
        dir.join(INDEX_FILE),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
    shards
}

/// A single-file folder in `dir`.
fn single_folder(dir: &Path) -> Vec<T> {
    extras(dir);
    let tensors = vec![
        t("a.weight", "F32", &[5, 3], wave(15, 11)),
        t("b.weight", "BF16", &[2, 8], wave(16, 12)),
        t("b.bias", "F16", &[8], wave(8, 13)),
    ];
    write_safetensors(&dir.join(WEIGHTS_FILE), &tensors);
    tensors
}

/// Every file under `dir`, by relative path, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                walk(root, &r, out);
            } else {
                out.insert(r.clone(), fs::read(root.join(&r)).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, Path::new(""), &mut out);
    out
}

/// The entries of `dir` (names only).
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn message<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    r.expect_err("an error was expected").to_string()
}

#[test]
fn sharded_folder_opens_in_global_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    let shards = sharded_folder(&dir, wave);
    let f = ModelFolder::open(&dir).unwrap();
    assert!(f.is_sharded());
    assert_eq!(f.shard_files(), SHARDS);
    assert_eq!(f.model_type(), Some("bert"));
    assert_eq!(f.config()["hidden_size"], 4);
    assert_eq!(f.dir(), dir);
    let expected: Vec<String> = SHARDS
        .iter()
        .flat_map(|s| data_order(&dir.join(s)))
        .collect();
    assert_eq!(f.names(), expected);
    for (s, tensors) in shards.iter().enumerate() {
        for t in tensors {
            let info = f.info(t.name).unwrap();
            assert_eq!(info.shape, t.shape);
            assert_eq!(info.dtype.name(), t.dtype);
            assert_eq!(f.shard_of(t.name), Some(SHARDS[s]));
            if t.dtype == "I64" {
                assert!(message(f.values(t.name)).contains("I64"));
                continue;
            }
            let want: Vec<f32> = t
                .values
                .iter()
                .map(|&v| rounded(t.dtype, v as f32))
                .collect();
            assert_eq!(f.values(t.name).unwrap(), want, "{}", t.name);
        }
    }
    assert!(f.info("nope").is_none());
    assert!(message(f.values("nope")).contains("nope"));
    let tok = f.tokenizer().unwrap();
    let enc = tok.encode("hello world", false).unwrap();
    assert_eq!(enc.get_ids(), [1, 2]);
}

#[test]
fn weights_build_candle_tensors_for_each_dtype() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    sharded_folder(&dir, wave);
    let f = ModelFolder::open(&dir).unwrap();
    let cpu = Device::Cpu;
    for name in ["embed.weight", "layers.0.w", "layers.1.w", "norm"] {
        let want = f.values(name).unwrap();
        let shape = f.info(name).unwrap().shape.clone();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let x = f.tensor(name, dtype, &cpu).unwrap();
            assert_eq!(x.dtype(), dtype);
            assert_eq!(x.dims(), shape.as_slice());
            let got: Vec<f32> = x
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let expect: Vec<f32> = want
                .iter()
                .map(|&v| match dtype {
                    DType::F16 => f16::from_f32(v).to_f32(),
                    DType::BF16 => bf16::from_f32(v).to_f32(),
                    _ => v,
                })
                .collect();
            assert_eq!(got, expect, "{name} as {dtype:?}");
        }
    }
    assert!(f.contains("position_ids") && !f.contains("nope"));
    assert!(message(f.tensor("position_ids", DType::F32, &cpu)).contains("I64"));
    assert!(message(f.tensor("nope", DType::F32, &cpu)).contains("nope"));
}

#[test]
fn sharded_copy_replaces_tensors_and_keeps_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    let out = tmp.path().join("out");
    sharded_folder(&dir, wave);
    let before = snapshot(&dir);
    let f = ModelFolder::open(&dir).unwrap();
    let mut w = FolderWriter::create(&f, &out, false).unwrap();
    let new = |n: usize, seed: u64| -> Vec<f32> {
        wave(n, seed)
            .iter()
            .map(|&x| x as f32 * 1.001 + 0.0003)
            .collect()
    };
    w.replace("embed.weight", &new(32, 90)).unwrap();
    w.replace("embed.weight", &new(32, 91)).unwrap(); // the last one counts
    w.replace("layers.0.w", &new(16, 92)).unwrap();
    w.replace("layers.1.w", &new(24, 93)).unwrap();
    assert!(w.is_replaced("layers.0.w") && !w.is_replaced("head.w"));
    assert!(message(w.replace("layers.1.w", &new(23, 1))).contains("24 elements"));
    assert!(message(w.replace("position_ids", &new(6, 1))).contains("I64"));
    assert!(message(w.replace("ghost", &new(6, 1))).contains("ghost"));
    let meta = [
        ("prunus.method".to_string(), "magnitude".to_string()),
        ("format".to_string(), "pt".to_string()),
    ];
    let summary = w.finish(&meta).unwrap();
    assert_eq!(summary.tensors_replaced, 3);
    assert_eq!(summary.dir, fs::canonicalize(&out).unwrap());
    assert!(summary.unpruned_weights.is_empty());
    assert_eq!(snapshot(&dir), before, "the input folder changed");
    assert_eq!(entries(tmp.path()), ["in", "out"], "temporary folders left");

    let after = snapshot(&out);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert_eq!(summary.files, after.len());
    assert_eq!(
        summary.bytes,
        after.values().map(|b| b.len() as u64).sum::<u64>()
    );
    for (path, bytes) in &before {
        let name = path.to_string_lossy();
        if !name.ends_with(".safetensors") {
            assert_eq!(&after[path], bytes, "{name} changed");
        }
    }
    let g = ModelFolder::open(&out).unwrap();
    assert_eq!(g.names(), f.names());
    let replaced: HashMap<&str, Vec<f32>> = HashMap::from([
        ("embed.weight", new(32, 91)),
        ("layers.0.w", new(16, 92)),
        ("layers.1.w", new(24, 93)),
    ]);
    for file in SHARDS {
        let a = Checkpoint::open(dir.join(file)).unwrap();
        let b = Checkpoint::open(out.join(file)).unwrap();
        assert_eq!(a.tensors(), b.tensors(), "{file}: layout changed");
        let m = b.metadata();
        assert!(m.contains(&("format".into(), "pt".into())), "{m:?}");
        assert!(m.contains(&("prunus.method".into(), "magnitude".into())));
        assert_eq!(m.len(), 2);
        for (i, info) in a.tensors().iter().enumerate() {
            match replaced.get(info.name.as_str()) {
                Some(v) => {
                    let d = info.dtype.name();
                    let want: Vec<f32> = v.iter().map(|&x| rounded(d, x)).collect();
                    assert_eq!(b.values(i).unwrap(), want, "{}", info.name);
                }
                None => assert_eq!(&*a.data(i).unwrap(), &*b.data(i).unwrap(), "{}", info.name),
            }
        }
    }
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join(INDEX_FILE)).unwrap()).unwrap();
    let total: u64 = SHARDS
        .iter()
        .map(|s| {
            Checkpoint::open(out.join(s))
                .unwrap()
                .tensors()
                .iter()
                .map(|t| t.len())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(index["metadata"]["total_size"], total);
    assert_eq!(index["weight_map"].as_object().unwrap().len(), 7);
}

#[test]
fn index_total_size_is_recomputed_when_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    sharded_folder(&dir, wave);
    let path = dir.join(INDEX_FILE);
    let mut index: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let total = index["metadata"]["total_size"].clone();
    index.as_object_mut().unwrap().remove("metadata");
    fs::write(&path, index.to_string()).unwrap();
    let f = ModelFolder::open(&dir).unwrap();
    let out = tmp.path().join("out");
    FolderWriter::create(&f, &out, false)
        .unwrap()
        .finish(&[])
        .unwrap();
    let written: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join(INDEX_FILE)).unwrap()).unwrap();
    assert_eq!(written["metadata"]["total_size"], total);
    assert_eq!(written["weight_map"], index["weight_map"]);
}

#[test]
fn single_file_copy_without_changes_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    let tensors = single_folder(&dir);
    let f = ModelFolder::open(&dir).unwrap();
    assert!(!f.is_sharded());
    assert_eq!(f.shard_files(), [WEIGHTS_FILE]);
    assert_eq!(f.names(), data_order(&dir.join(WEIGHTS_FILE)));
    assert_eq!(f.names().len(), tensors.len());
    let out = tmp.path().join("nested/out");
    let s = FolderWriter::create(&f, &out, false)
        .unwrap()
        .finish(&[])
        .unwrap();
    assert_eq!(snapshot(&out), snapshot(&dir));
    assert_eq!(s.files, snapshot(&dir).len());
    assert_eq!(s.tensors_replaced, 0);
}

#[test]
fn single_file_replacement_keeps_metadata_and_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    single_folder(&dir);
    let f = ModelFolder::open(&dir).unwrap();
    let out = tmp.path().join("out");
    let mut w = FolderWriter::create(&f, &out, false).unwrap();
    let zeros = vec![0.0f32; 16];
    w.replace("b.weight", &zeros).unwrap();
    w.finish(&[("prunus.sparsity".into(), "1".into())]).unwrap();
    assert!(!out.join(INDEX_FILE).exists());
    let a = Checkpoint::open(dir.join(WEIGHTS_FILE)).unwrap();
    let b = Checkpoint::open(out.join(WEIGHTS_FILE)).unwrap();
    assert_eq!(a.tensors(), b.tensors());
    assert_eq!(
        b.metadata(),
        [
            ("format".to_string(), "pt".to_string()),
            ("prunus.sparsity".to_string(), "1".to_string())
        ]
    );
    let g = ModelFolder::open(&out).unwrap();
    assert_eq!(g.values("b.weight").unwrap(), zeros);
    assert_eq!(g.values("a.weight").unwrap(), f.values("a.weight").unwrap());
}

#[test]
fn writer_refuses_outputs_that_touch_the_input_or_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("models/in");
    single_folder(&dir);
    let before = snapshot(&dir);
    let f = ModelFolder::open(&dir).unwrap();
    let same = message(FolderWriter::create(&f, &dir, true));
    assert!(same.contains("is the input folder"), "{same}");
    let dotted = dir.join("../in");
    assert!(message(FolderWriter::create(&f, &dotted, true)).contains("is the input folder"));
    let inside = message(FolderWriter::create(&f, &dir.join("sub"), true));
    assert!(inside.contains("inside the input folder"), "{inside}");
    let above = message(FolderWriter::create(&f, &tmp.path().join("models"), true));
    assert!(above.contains("contains the input folder"), "{above}");
    #[cfg(unix)]
    {
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(message(FolderWriter::create(&f, &link, true)).contains("is the input folder"));
        fs::remove_file(&link).unwrap();
    }
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("old.txt"), "old").unwrap();
    let exists = message(FolderWriter::create(&f, &out, false));
    assert!(
        exists.contains("exists") && exists.contains("--force"),
        "{exists}"
    );
    let file = tmp.path().join("file");
    fs::write(&file, "x").unwrap();
    assert!(message(FolderWriter::create(&f, &file, true)).contains("not a folder"));
    // With overwrite, the old output is replaced whole.
    FolderWriter::create(&f, &out, true)
        .unwrap()
        .finish(&[])
        .unwrap();
    assert!(!out.join("old.txt").exists());
    assert_eq!(snapshot(&out), before);
    assert_eq!(snapshot(&dir), before);
    assert_eq!(entries(tmp.path()), ["file", "models", "out"]);
}

#[test]
fn temporary_folder_is_removed_on_drop_and_on_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    sharded_folder(&dir, wave);
    let f = ModelFolder::open(&dir).unwrap();
    let out = tmp.path().join("out");
    {
        let mut w = FolderWriter::create(&f, &out, false).unwrap();
        assert!(w.temp_dir().starts_with(tmp.path().canonicalize().unwrap()));
        w.replace("head.w", &[0.5; 12]).unwrap();
        assert!(w.temp_dir().join(".prunus-spill").is_dir());
        assert_eq!(entries(tmp.path()).len(), 2);
    }
    assert_eq!(entries(tmp.path()), ["in"]);
    // A shard cut short after opening fails the write, which leaves nothing.
    let mut w = FolderWriter::create(&f, &out, false).unwrap();
    w.replace("head.w", &[0.5; 12]).unwrap();
    let shard = fs::OpenOptions::new()
        .write(true)
        .open(dir.join(SHARDS[0]))
        .unwrap();
    let len = shard.metadata().unwrap().len();
    shard.set_len(len - 4).unwrap();
    let e = message(w.finish(&[]));
    assert!(e.contains(SHARDS[0]), "{e}");
    assert_eq!(entries(tmp.path()), ["in"]);
    // Also when the shard is copied as it is.
    let w = FolderWriter::create(&f, &out, false).unwrap();
    let e = message(w.finish(&[]));
    assert!(e.contains(SHARDS[0]), "{e}");
    assert_eq!(entries(tmp.path()), ["in"]);
}

/// Rewrites the index of `dir` through `edit`.
fn edit_index(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(INDEX_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    fs::write(&path, v.to_string()).unwrap();
}

#[test]
fn malformed_folders_fail_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let dir = tmp.path().join(name);
        sharded_folder(&dir, wave);
        dir
    };
    let open = |dir: &Path| message(ModelFolder::open(dir));

    let dir = fresh("missing-shard");
    fs::remove_file(dir.join(SHARDS[1])).unwrap();
    let e = open(&dir);
    assert!(e.contains(SHARDS[1]) && e.contains("missing"), "{e}");

    let dir = fresh("ghost");
    edit_index(&dir, |v| v["weight_map"]["ghost"] = SHARDS[0].into());
    let e = open(&dir);
    assert!(
        e.contains("'ghost'") && e.contains("does not hold it"),
        "{e}"
    );

    let dir = fresh("elsewhere");
    edit_index(&dir, |v| v["weight_map"]["head.w"] = SHARDS[1].into());
    let e = open(&dir);
    assert!(e.contains("'head.w'") && e.contains(SHARDS[1]), "{e}");

    let dir = fresh("unlisted");
    edit_index(&dir, |v| {
        v["weight_map"].as_object_mut().unwrap().remove("norm");
    });
    let e = open(&dir);
    assert!(e.contains("'norm'") && e.contains("does not list"), "{e}");

    let dir = fresh("twice");
    let text = fs::read_to_string(dir.join(INDEX_FILE)).unwrap();
    let text = text.replacen(
        "\"weight_map\": {",
        &format!("\"weight_map\": {{\n    \"norm\": \"{}\",", SHARDS[2]),
        1,
    );
    fs::write(dir.join(INDEX_FILE), text).unwrap();
    let e = open(&dir);
    assert!(e.contains("'norm'") && e.contains("twice"), "{e}");

    let dir = fresh("total");
    edit_index(&dir, |v| v["metadata"]["total_size"] = 12345.into());
    let e = open(&dir);
    assert!(e.contains("total_size is 12345"), "{e}");

    let dir = fresh("escape");
    edit_index(&dir, |v| {
        v["weight_map"]["norm"] = "../x.safetensors".into()
    });
    assert!(open(&dir).contains("not a file inside the folder"));

    let dir = fresh("truncated");
    let shard = dir.join(SHARDS[2]);
    let bytes = fs::read(&shard).unwrap();
    fs::write(&shard, &bytes[..bytes.len() - 3]).unwrap();
    let e = open(&dir);
    assert!(e.contains(SHARDS[2]), "{e}");

    let dir = fresh("index-json");
    fs::write(dir.join(INDEX_FILE), "{not json").unwrap();
    assert!(open(&dir).contains("not valid JSON"));

    let dir = fresh("no-config");
    fs::remove_file(dir.join("config.json")).unwrap();
    assert!(open(&dir).contains("no config.json"));

    let dir = fresh("bad-config");
    fs::write(dir.join("config.json"), "model_type: bert").unwrap();
    assert!(open(&dir).contains("config.json is not valid JSON"));

    let dir = fresh("no-weights");
    fs::remove_file(dir.join(INDEX_FILE)).unwrap();
    let e = open(&dir);
    assert!(e.contains(WEIGHTS_FILE) && e.contains(INDEX_FILE), "{e}");

    assert!(open(&tmp.path().join("nowhere")).contains("nowhere"));
}

#[test]
fn tokenizer_errors_say_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    single_folder(&dir);
    fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let f = ModelFolder::open(&dir).unwrap();
    let e = message(f.tokenizer());
    assert!(
        e.contains("no tokenizer.json") && e.contains("calibrat"),
        "{e}"
    );
    fs::write(dir.join("tokenizer.json"), r#"{"model": 3}"#).unwrap();
    let e = message(f.tokenizer());
    assert!(e.contains("cannot be read as a tokenizer"), "{e}");
}

/// The reference: the `round(s · n)` smallest magnitudes of `tensors` (in
/// this order, flat) by (magnitude, position) set to zero.
fn brute_force(tensors: &[Vec<f32>], sparsity: f64) -> Vec<Vec<f32>> {
    let all: Vec<f32> = tensors.iter().flatten().copied().collect();
    let k = (sparsity * all.len() as f64).round() as usize;
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by(|&a, &b| all[a].abs().total_cmp(&all[b].abs()).then(a.cmp(&b)));
    let mut flat = all.clone();
    for &i in &order[..k] {
        flat[i] = 0.0;
    }
    let mut out = Vec::new();
    let mut at = 0;
    for t in tensors {
        out.push(flat[at..at + t.len()].to_vec());
        at += t.len();
    }
    out
}

#[test]
fn magnitude_global_is_exact_across_shards_with_ties() {
    for values in [tied as fn(usize, u64) -> Vec<f64>, wave] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("in");
        sharded_folder(&dir, values);
        let f = ModelFolder::open(&dir).unwrap();
        // Given in another order than the folder's: ranked in its order.
        let names: Vec<String> = ["head.w", "layers.1.w", "embed.weight", "layers.0.w"]
            .map(String::from)
            .to_vec();
        let ordered: Vec<String> = f
            .names()
            .iter()
            .filter(|n| names.contains(n))
            .cloned()
            .collect();
        let originals: Vec<Vec<f32>> = ordered.iter().map(|n| f.values(n).unwrap()).collect();
        let n: usize = originals.iter().map(Vec::len).sum();
        for sparsity in [0.0, 0.1, 0.37, 0.5, 0.61, 0.9, 1.0] {
            let want = brute_force(&originals, sparsity);
            let k = (sparsity * n as f64).round() as u64;
            let sel = GlobalMagnitude::select(&f, &names, sparsity).unwrap();
            assert_eq!((sel.total(), sel.target()), (n as u64, k));
            let mut got = Vec::new();
            let pruned = sel
                .apply(&f, |name, v, p| {
                    got.push((name.to_string(), v.to_vec(), p));
                    Ok(())
                })
                .unwrap();
            assert_eq!(pruned.iter().map(|p| p.pruned).sum::<u64>(), k);
            for (j, (name, v, p)) in got.iter().enumerate() {
                assert_eq!(name, &ordered[j]);
                assert_eq!(v, &want[j], "{name} at sparsity {sparsity}");
                assert_eq!(pruned[j].pruned, *p);
                assert_eq!(pruned[j].numel, v.len() as u64);
            }
            let zeros: usize = got
                .iter()
                .map(|(_, v, _)| v.iter().filter(|&&x| x == 0.0).count())
                .sum();
            assert_eq!(zeros as u64, k, "the fixtures hold no zeros");
        }
        // Through the writer: the output folder holds the pruned values.
        let out = tmp.path().join("out");
        let mut w = FolderWriter::create(&f, &out, false).unwrap();
        let pruned = magnitude_global(&f, &names, 0.37, &mut w).unwrap();
        assert_eq!(
            pruned.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ordered
        );
        w.finish(&[]).unwrap();
        let g = ModelFolder::open(&out).unwrap();
        let want = brute_force(&originals, 0.37);
        for (j, name) in ordered.iter().enumerate() {
            assert_eq!(g.values(name).unwrap(), want[j], "{name}");
        }
        assert_eq!(g.values("norm").unwrap(), f.values("norm").unwrap());
    }
}

#[test]
fn magnitude_global_ranks_ties_across_large_tensors() {
    // Tensors longer than one parallel chunk (2^20 elements), almost all
    // tied, so the tie ranks carry across chunks and tensors.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    extras(&dir);
    let big = (1 << 20) + 4099;
    let a = tied(big, 7);
    let b: Vec<f64> = tied(big, 8).iter().map(|x| x * 2.0).collect();
    let shard = |file: &str, t: T| write_safetensors(&dir.join(file), &[t]);
    shard(SHARDS[0], t("a", "F32", &[big], a));
    shard(SHARDS[1], t("b", "BF16", &[big], b));
    let map = serde_json::json!({"weight_map": {"a": SHARDS[0], "b": SHARDS[1]}});
    fs::write(dir.join(INDEX_FILE), map.to_string()).unwrap();
    let f = ModelFolder::open(&dir).unwrap();
    let names = vec!["a".to_string(), "b".to_string()];
    let originals: Vec<Vec<f32>> = names.iter().map(|n| f.values(n).unwrap()).collect();
    for sparsity in [0.2, 0.45, 0.8] {
        let want = brute_force(&originals, sparsity);
        let sel = GlobalMagnitude::select(&f, &names, sparsity).unwrap();
        let mut j = 0;
        sel.apply(&f, |name, v, _| {
            assert!(v == want[j].as_slice(), "{name} at sparsity {sparsity}");
            j += 1;
            Ok(())
        })
        .unwrap();
    }
}

#[test]
fn magnitude_global_refuses_bad_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    sharded_folder(&dir, wave);
    let f = ModelFolder::open(&dir).unwrap();
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let e = message(GlobalMagnitude::select(
        &f,
        &names(&["head.w", "ghost"]),
        0.5,
    ));
    assert!(e.contains("ghost"), "{e}");
    let e = message(GlobalMagnitude::select(&f, &names(&["position_ids"]), 0.5));
    assert!(e.contains("I64"), "{e}");
    let e = message(GlobalMagnitude::select(
        &f,
        &names(&["head.w", "head.w"]),
        0.5,
    ));
    assert!(e.contains("head.w"), "{e}");
    assert!(GlobalMagnitude::select(&f, &names(&["head.w"]), 1.5).is_err());
    // Non-finite weights are named.
    let dir2 = tmp.path().join("nan");
    extras(&dir2);
    let mut v = wave(8, 1);
    v[5] = f64::NAN;
    write_safetensors(
        &dir2.join(WEIGHTS_FILE),
        &[t("w", "BF16", &[2, 4], v.clone()), t("x", "F32", &[8], v)],
    );
    let g = ModelFolder::open(&dir2).unwrap();
    for name in ["w", "x"] {
        let e = message(GlobalMagnitude::select(&g, &names(&[name]), 0.5));
        assert!(e.contains(&format!("'{name}'")) || e.contains(name), "{e}");
    }
    // A writer of another folder is refused.
    let out = tmp.path().join("out");
    let mut w = FolderWriter::create(&g, &out, false).unwrap();
    assert!(message(magnitude_global(&f, &names(&["head.w"]), 0.5, &mut w)).contains("writer"));
}

/// The MiniLM folder of the shared data, when present.
fn minilm() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/data/minilm-l6-v2"))
        .find(|p| p.join("config.json").is_file())
}

#[test]
fn minilm_folder_opens_tokenizes_and_copies_byte_for_byte() {
    let Some(dir) = minilm() else {
        eprintln!(
            "skipped: no shared/data/minilm-l6-v2 above {}",
            env!("CARGO_MANIFEST_DIR")
        );
        return;
    };
    let f = ModelFolder::open(&dir).unwrap();
    assert_eq!(f.model_type(), Some("bert"));
    assert!(!f.is_sharded());
    assert!(f.names().len() > 100);
    let word = f
        .names()
        .iter()
        .find(|n| n.ends_with("word_embeddings.weight"))
        .unwrap();
    let x = f.tensor(word, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(x.dims()[1], 384);
    let tok = f.tokenizer().unwrap();
    let enc = tok.encode("hello world", true).unwrap();
    let tokens = enc.get_tokens();
    assert!(
        tokens.iter().any(|t| t == "hello") && tokens.iter().any(|t| t == "world"),
        "{tokens:?}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("copy");
    let s = FolderWriter::create(&f, &out, false)
        .unwrap()
        .finish(&[])
        .unwrap();
    let (a, b) = (snapshot(&dir), snapshot(&out));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (path, bytes) in &a {
        assert!(&b[path] == bytes, "{} differs", path.display());
    }
    assert_eq!(s.files, a.len());
}
