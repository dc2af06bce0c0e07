//! Hugging Face model folders in and out: [`ModelFolder`] reads a folder
//! (`config.json`, the weights as `model.safetensors` or as shards listed by
//! `model.safetensors.index.json`, `tokenizer.json`) without ever writing
//! into it, and [`FolderWriter`] writes the pruned model as a new folder
//! that loads wherever the input loaded: same files, same shards, same
//! tensors in the same order with the same dtypes and shapes.
//!
//! Shards are memory-mapped and read tensor by tensor, and replaced tensors
//! are spilled to disk in their own dtype until the folder is written, so a
//! model larger than memory can be pruned. [`GlobalMagnitude`] selects
//! exactly across shards with the same streamed radix selection as
//! [`prunus_adapters::safetensors::prune_file`] does within one file.
//!
//! ```no_run
//! use prunus_candle::folder::{FolderWriter, ModelFolder, magnitude_global};
//!
//! let model = ModelFolder::open("minilm")?;
//! let mut out = FolderWriter::create(&model, "minilm-50".as_ref(), false)?;
//! let weights: Vec<String> = model
//!     .names()
//!     .iter()
//!     .filter(|n| n.ends_with(".weight") && model.info(n).is_some_and(|t| t.shape.len() == 2))
//!     .cloned()
//!     .collect();
//! let pruned = magnitude_global(&model, &weights, 0.5, &mut out)?;
//! let summary = out.finish(&[("prunus.method".into(), "magnitude".into())])?;
//! println!("{} tensors pruned, {} files written", pruned.len(), summary.files);
//! # Ok::<(), prunus_candle::Error>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Component, Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};
use prunus_adapters::safetensors::{Checkpoint, Dtype, TensorInfo, write_header};
use prunus_core::contract::histogram::{BINS, Histogram, KeyWindow, TensorCut};
use prunus_core::contract::key::KeyRule;
use prunus_core::selection::radix::RadixSelect;
use prunus_core::selection::select::units_to_prune;
use rayon::prelude::*;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::graph::Weights;

/// The model's architecture, read by every loader.
pub const CONFIG_FILE: &str = "config.json";
/// The weights of an unsharded checkpoint.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint: which shard holds each tensor.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The tokenizer that calibrated methods need.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The folder, inside a [`FolderWriter`]'s temporary folder, where replaced
/// tensors wait until [`FolderWriter::finish`].
const SPILL_DIR: &str = ".prunus-spill";

/// One safetensors file of the checkpoint.
struct Shard {
    /// Its path relative to the folder (`model.safetensors`,
    /// `model-00001-of-00003.safetensors`...).
    file: String,
    checkpoint: Checkpoint,
}

/// A Hugging Face model folder opened for reading: its config, its
/// safetensors weights (one file or shards, checked against each other and
/// memory-mapped, read lazily) and, on demand, its tokenizer. Nothing in the
/// folder is ever written.
pub struct ModelFolder {
    dir: PathBuf,
    config: Value,
    /// The parsed index file of a sharded checkpoint.
    index: Option<Value>,
    /// The index's `metadata.total_size`, when it gives one.
    index_total: Option<u64>,
    shards: Vec<Shard>,
    /// Every tensor's name in global index order.
    names: Vec<String>,
    /// Per tensor (global index order): its shard and its index there.
    places: Vec<(usize, usize)>,
    by_name: HashMap<String, usize>,
}

impl fmt::Debug for ModelFolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelFolder")
            .field("dir", &self.dir)
            .field("shards", &self.shard_files())
            .field("tensors", &self.names.len())
            .finish()
    }
}

impl ModelFolder {
    /// Opens the model folder `dir`: parses `config.json`, then opens the
    /// weights, `model.safetensors` or else the shards that
    /// `model.safetensors.index.json` lists. A sharded checkpoint is
    /// checked whole before anything is read: every shard named exists,
    /// each tensor of the index's `weight_map` is in the shard it names and
    /// no shard holds a tensor the map puts elsewhere or does not list, no
    /// tensor is named twice, and `metadata.total_size` (when given) is the
    /// tensors' total size in bytes. Every fault is an [`Error::Model`]
    /// naming the file and tensor, or an [`Error::Adapter`] for a
    /// malformed or truncated safetensors file.
    pub fn open(dir: impl AsRef<Path>) -> Result<ModelFolder> {
        let dir = dir.as_ref();
        let shown = dir.display();
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::model(&shown, "not a folder")),
            Err(e) => return Err(Error::io("open", &shown, e)),
        }
        let config = read_json(dir, CONFIG_FILE).map_err(|e| match e {
            JsonFault::Missing => Error::model(
                &shown,
                "no config.json; a Hugging Face model folder describes its architecture there \
                 (download the whole model repository, not only its weights)",
            ),
            other => other.into_error(dir, CONFIG_FILE),
        })?;
        if !config.is_object() {
            return Err(Error::model(&shown, "config.json is not a JSON object"));
        }
        let single = dir.join(WEIGHTS_FILE);
        let (shards, index, index_total) = if single.is_file() {
            let checkpoint = Checkpoint::open(&single)?;
            let shard = Shard {
                file: WEIGHTS_FILE.into(),
                checkpoint,
            };
            (vec![shard], None, None)
        } else if dir.join(INDEX_FILE).is_file() {
            open_shards(dir)?
        } else {
            let other = ["pytorch_model.bin", "pytorch_model.bin.index.json"]
                .iter()
                .find(|f| dir.join(f).exists());
            let hint = match other {
                Some(f) => format!(
                    "; it holds {f}, which prunus does not read: convert the weights to \
                     safetensors first"
                ),
                None => String::new(),
            };
            return Err(Error::model(
                &shown,
                format!("no weights: looked for {WEIGHTS_FILE} and {INDEX_FILE}{hint}"),
            ));
        };
        let mut names = Vec::new();
        let mut places = Vec::new();
        let mut by_name = HashMap::new();
        for (s, shard) in shards.iter().enumerate() {
            for (i, t) in shard.checkpoint.tensors().iter().enumerate() {
                if by_name.insert(t.name.clone(), names.len()).is_some() {
                    return Err(Error::model(
                        &shown,
                        format!(
                            "tensor '{}' is stored twice (again in {})",
                            t.name, shard.file
                        ),
                    ));
                }
                names.push(t.name.clone());
                places.push((s, i));
            }
        }
        Ok(ModelFolder {
            dir: dir.to_path_buf(),
            config,
            index,
            index_total,
            shards,
            names,
            places,
            by_name,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The config's `model_type` (`bert`, `llama`, `mistral`, ...).
    pub fn model_type(&self) -> Option<&str> {
        self.config.get("model_type").and_then(Value::as_str)
    }

    /// Whether the weights are shards listed by `model.safetensors.index.json`.
    pub fn is_sharded(&self) -> bool {
        self.index.is_some()
    }

    /// The weight files, relative to the folder, in the order of
    /// [`ModelFolder::names`] (sorted file names for a sharded checkpoint).
    pub fn shard_files(&self) -> Vec<&str> {
        self.shards.iter().map(|s| s.file.as_str()).collect()
    }

    /// Every tensor's name in global index order: shard by shard (in
    /// [`ModelFolder::shard_files`] order), within a shard in the order of
    /// the tensors' data in the file. Selections break ties by this order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The position of `name` in [`ModelFolder::names`].
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The header entry of tensor `name` (dtype, shape, offsets in its
    /// shard).
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        let (s, i) = self.places[self.index_of(name)?];
        Some(&self.shards[s].checkpoint.tensors()[i])
    }

    /// The weight file holding tensor `name`, relative to the folder.
    pub fn shard_of(&self, name: &str) -> Option<&str> {
        let (s, _) = self.places[self.index_of(name)?];
        Some(&self.shards[s].file)
    }

    /// Tensor `name`'s values as `f32` (exact for F32, F16 and BF16); an
    /// error naming the tensor and its dtype for any other dtype, and an
    /// [`Error::Model`] when there is no such tensor.
    pub fn values(&self, name: &str) -> Result<Vec<f32>> {
        let (s, i) = self.place(name)?;
        Ok(self.shards[s].checkpoint.values(i)?)
    }

    /// Where tensor `name` is stored, or an error naming it.
    fn place(&self, name: &str) -> Result<(usize, usize)> {
        self.index_of(name)
            .map(|g| self.places[g])
            .ok_or_else(|| Error::model(self.dir.display(), format!("no tensor called '{name}'")))
    }

    /// The tokenizer of `tokenizer.json`; an [`Error::Model`] when the
    /// folder has none or it cannot be parsed.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer> {
        let path = self.dir.join(TOKENIZER_FILE);
        if !path.is_file() {
            return Err(Error::model(
                self.dir.display(),
                "no tokenizer.json; calibrated methods (Wanda, SparseGPT, ...) tokenize their \
                 calibration text with it: add the model's tokenizer.json (a fast tokenizer), or \
                 prune by magnitude, which needs no data",
            ));
        }
        tokenizers::Tokenizer::from_file(&path).map_err(|e| {
            Error::model(
                self.dir.display(),
                format!("tokenizer.json cannot be read as a tokenizer: {e}"),
            )
        })
    }
}

impl Weights for ModelFolder {
    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let (s, i) = self.place(name)?;
        let checkpoint = &self.shards[s].checkpoint;
        let t = &checkpoint.tensors()[i];
        let stored = match t.dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 => DType::F16,
            Dtype::BF16 => DType::BF16,
            other => {
                return Err(Error::model(
                    self.dir.display(),
                    format!("tensor '{name}' is {other}; graphs read F32, F16 or BF16 weights"),
                ));
            }
        };
        if stored == dtype && cfg!(target_endian = "little") {
            // The stored bytes are already the asked dtype: no f32 copy.
            let data = checkpoint.data(i)?;
            return Ok(Tensor::from_raw_buffer(&data, dtype, &t.shape, device)?);
        }
        let values = checkpoint.values(i)?;
        Ok(Tensor::from_vec(values, t.shape.as_slice(), device)?.to_dtype(dtype)?)
    }

    fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

/// Why a JSON file of the folder cannot be used.
enum JsonFault {
    Missing,
    Io(std::io::Error),
    Parse(serde_json::Error),
}

impl JsonFault {
    fn into_error(self, dir: &Path, file: &str) -> Error {
        match self {
            JsonFault::Missing => Error::model(dir.display(), format!("no {file}")),
            JsonFault::Io(e) => Error::io("read", dir.join(file).display(), e),
            JsonFault::Parse(e) => {
                Error::model(dir.display(), format!("{file} is not valid JSON: {e}"))
            }
        }
    }
}

fn read_json(dir: &Path, file: &str) -> std::result::Result<Value, JsonFault> {
    let text = fs::read(dir.join(file)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => JsonFault::Missing,
        _ => JsonFault::Io(e),
    })?;
    serde_json::from_slice(&text).map_err(JsonFault::Parse)
}

/// A JSON object's entries in file order, duplicates kept (so they can be
/// refused: a map would silently keep the last).
struct WeightMap(Vec<(String, String)>);

impl<'de> Deserialize<'de> for WeightMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WeightMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object from tensor names to shard file names")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<WeightMap, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    out.push(entry);
                }
                Ok(WeightMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The parts of the index file that are checked.
#[derive(serde::Deserialize)]
struct IndexFile {
    weight_map: WeightMap,
}

/// Opens and cross-checks the shards that the index of `dir` lists.
fn open_shards(dir: &Path) -> Result<(Vec<Shard>, Option<Value>, Option<u64>)> {
    let shown = dir.display();
    let bad = |reason: String| Error::model(&shown, format!("{INDEX_FILE}: {reason}"));
    let path = dir.join(INDEX_FILE);
    let raw = fs::read(&path).map_err(|e| Error::io("read", path.display(), e))?;
    let index: Value = serde_json::from_slice(&raw)
        .map_err(|e| JsonFault::Parse(e).into_error(dir, INDEX_FILE))?;
    // Parsed again for duplicate names, which a JSON value would hide.
    let parsed: IndexFile =
        serde_json::from_slice(&raw).map_err(|e| bad(format!("no usable weight_map ({e})")))?;
    let total = match index.pointer("/metadata/total_size") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|x| x.fract() == 0.0 && *x >= 0.0)
                        .map(|x| x as u64)
                })
                .ok_or_else(|| bad(format!("metadata.total_size is {v}, not a byte count")))?,
        ),
    };
    let mut map: HashMap<&str, &str> = HashMap::new();
    for (name, file) in &parsed.weight_map.0 {
        if map.insert(name, file).is_some() {
            return Err(bad(format!(
                "tensor '{name}' is listed twice in weight_map"
            )));
        }
        let plain = Path::new(file)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if file.is_empty() || !plain {
            return Err(bad(format!(
                "tensor '{name}' is put in '{file}', which is not a file inside the folder"
            )));
        }
    }
    if map.is_empty() {
        return Err(bad("weight_map lists no tensor".into()));
    }
    let mut files: Vec<&str> = map
        .values()
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    files.sort_unstable();
    let mut shards = Vec::with_capacity(files.len());
    for file in files {
        let path = dir.join(file);
        if !path.is_file() {
            let listed = map.values().filter(|f| **f == file).count();
            let example = parsed
                .weight_map
                .0
                .iter()
                .find(|(_, f)| f == file)
                .map_or("", |(n, _)| n.as_str());
            return Err(bad(format!(
                "the shard {file} (holding {listed} tensors, such as '{example}') is missing \
                 from the folder; download it again"
            )));
        }
        let checkpoint = Checkpoint::open(&path)?;
        let mut held = HashSet::new();
        for t in checkpoint.tensors() {
            match map.get(t.name.as_str()) {
                Some(f) if *f == file => {
                    held.insert(t.name.as_str());
                }
                Some(f) => {
                    return Err(bad(format!(
                        "the shard {file} holds tensor '{}', which weight_map puts in {f}",
                        t.name
                    )));
                }
                None => {
                    return Err(bad(format!(
                        "the shard {file} holds tensor '{}', which weight_map does not list",
                        t.name
                    )));
                }
            }
        }
        if let Some((name, _)) = parsed
            .weight_map
            .0
            .iter()
            .find(|(n, f)| f == file && !held.contains(n.as_str()))
        {
            return Err(bad(format!(
                "weight_map puts tensor '{name}' in {file}, which does not hold it"
            )));
        }
        shards.push(Shard {
            file: file.to_string(),
            checkpoint,
        });
    }
    let bytes: u64 = shards
        .iter()
        .flat_map(|s| s.checkpoint.tensors())
        .map(TensorInfo::len)
        .sum();
    if let Some(declared) = total
        && declared != bytes
    {
        return Err(bad(format!(
            "metadata.total_size is {declared} bytes, but the shards' tensors hold {bytes} bytes"
        )));
    }
    Ok((shards, Some(index), total))
}

/// What [`FolderWriter::finish`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteSummary {
    /// The output folder.
    pub dir: PathBuf,
    /// Files written (weights and copies), relative to it.
    pub files: usize,
    /// Bytes written in all.
    pub bytes: u64,
    /// Tensors whose values were replaced.
    pub tensors_replaced: usize,
    /// Files copied as they were that look like weights in another format
    /// (`pytorch_model.bin`, `*.onnx`, ...): they still hold the unpruned
    /// model, and a loader that prefers them would not see the pruning.
    pub unpruned_weights: Vec<PathBuf>,
}

/// Writes a pruned copy of a [`ModelFolder`] as a new folder, atomically:
/// everything goes to a temporary folder beside the output, which is
/// renamed to the output once complete, and removed if the writer is
/// dropped before [`FolderWriter::finish`]. Replaced tensors wait on disk
/// in their own dtype, so memory stays bounded by one tensor.
pub struct FolderWriter<'a> {
    input: &'a ModelFolder,
    out: PathBuf,
    overwrite: bool,
    temp: tempfile::TempDir,
    /// Per tensor (global index order): whether it was replaced.
    replaced: Vec<bool>,
    /// Per tensor: its new shape, where a replacement changed it.
    shapes: Vec<Option<Vec<usize>>>,
    /// The output's `config.json`, where it differs from the input's.
    config: Option<Value>,
    /// Per tensor: its name in the output, `None` where it is dropped
    /// (blocks removed, later ones renumbered).
    out_names: Vec<Option<String>>,
    /// Output name to input index, where any tensor was renamed or dropped.
    by_out: Option<HashMap<String, usize>>,
}

impl fmt::Debug for FolderWriter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FolderWriter")
            .field("input", &self.input.dir)
            .field("out", &self.out)
            .field("temp", &self.temp.path())
            .finish()
    }
}

impl<'a> FolderWriter<'a> {
    /// A writer of `input`'s pruned copy to the folder `out`. Refuses an
    /// `out` that is the input folder, lies inside it or contains it
    /// (compared after resolving links), and an existing `out` unless
    /// `overwrite` (which replaces it only at [`FolderWriter::finish`]).
    /// Creates `out`'s parent folders when missing, and the temporary
    /// folder in that parent so the final rename is atomic.
    pub fn create(input: &'a ModelFolder, out: &Path, overwrite: bool) -> Result<FolderWriter<'a>> {
        let input_dir = fs::canonicalize(&input.dir)
            .map_err(|e| Error::io("resolve", input.dir.display(), e))?;
        let name = match out.components().next_back() {
            Some(Component::Normal(n)) => n.to_os_string(),
            _ => {
                return Err(Error::request(format!(
                    "the output {} does not name a folder; give a path such as ./pruned-model",
                    out.display()
                )));
            }
        };
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| Error::io("create", parent.display(), e))?;
        let parent =
            fs::canonicalize(&parent).map_err(|e| Error::io("resolve", parent.display(), e))?;
        let exists = fs::symlink_metadata(out).is_ok();
        let resolved = if exists {
            fs::canonicalize(out).map_err(|e| Error::io("resolve", out.display(), e))?
        } else {
            parent.join(&name)
        };
        let clash = if resolved == input_dir {
            Some("is the input folder")
        } else if resolved.starts_with(&input_dir) {
            Some("is inside the input folder")
        } else if input_dir.starts_with(&resolved) {
            Some("contains the input folder")
        } else {
            None
        };
        if let Some(clash) = clash {
            return Err(Error::request(format!(
                "the output folder {} {clash} {}; prunus never writes into its input: choose \
                 another output folder",
                out.display(),
                input.dir.display()
            )));
        }
        if exists {
            if !overwrite {
                return Err(Error::request(format!(
                    "{} exists; pass --force to replace it",
                    out.display()
                )));
            }
            if !resolved.is_dir() {
                return Err(Error::request(format!(
                    "{} exists and is not a folder; remove it or choose another output",
                    out.display()
                )));
            }
        }
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".prunus-tmp")
            .tempdir_in(&parent)
            .map_err(|e| Error::io("create a temporary folder in", parent.display(), e))?;
        let spill = temp.path().join(SPILL_DIR);
        fs::create_dir(&spill).map_err(|e| Error::io("create", spill.display(), e))?;
        Ok(FolderWriter {
            input,
            out: parent.join(&name),
            overwrite,
            temp,
            replaced: vec![false; input.names.len()],
            shapes: vec![None; input.names.len()],
            config: None,
            out_names: input.names.iter().cloned().map(Some).collect(),
            by_out: None,
        })
    }

    /// The model folder being copied.
    pub fn input(&self) -> &'a ModelFolder {
        self.input
    }

    /// The temporary folder the output is written into (renamed to the
    /// output by [`FolderWriter::finish`]).
    pub fn temp_dir(&self) -> &Path {
        self.temp.path()
    }

    /// Gives tensor `name` new values (`numel` of them, row-major), stored
    /// in its own dtype: F16 and BF16 rounded to nearest, ties to even.
    /// The encoded bytes go to a file in the temporary folder, not memory.
    /// Replacing a tensor again keeps the last values.
    pub fn replace(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let shape = self
            .input
            .info(name)
            .map(|t| t.shape.clone())
            .unwrap_or_default();
        self.replace_reshaped(name, &shape, values)
    }

    /// Gives tensor `name` a new shape and values (row-major, as many as
    /// the shape holds), in its own dtype: a structured pruning's smaller
    /// tensors. The output's header and index get the new shape; tensors
    /// keep their order.
    pub fn replace_reshaped(&mut self, name: &str, shape: &[usize], values: &[f32]) -> Result<()> {
        let g = self.out_index(name).ok_or_else(|| {
            Error::request(format!(
                "cannot replace tensor '{name}': the model in {} has no tensor of that name",
                self.input.dir.display()
            ))
        })?;
        let t = self
            .input
            .info(&self.input.names[g])
            .expect("indexed tensors have entries");
        if !t.dtype.is_prunable() {
            return Err(Error::request(format!(
                "cannot replace tensor '{name}': it is {}, and only F32, F16 and BF16 tensors \
                 are pruned",
                t.dtype
            )));
        }
        let numel = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d as u64));
        if numel != Some(values.len() as u64) {
            return Err(Error::request(format!(
                "cannot replace tensor '{name}' of shape {shape:?} ({} elements) with {} values",
                numel.map_or("too many".into(), |n| n.to_string()),
                values.len()
            )));
        }
        let path = self.spill_path(g);
        let file = File::create(&path).map_err(|e| Error::io("create", path.display(), e))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let mut bytes = Vec::with_capacity(1 << 18);
        for chunk in values.chunks(1 << 16) {
            bytes.clear();
            for &x in chunk {
                t.dtype.encode(x, &mut bytes);
            }
            w.write_all(&bytes)
                .map_err(|e| Error::io("write", path.display(), e))?;
        }
        w.flush()
            .map_err(|e| Error::io("write", path.display(), e))?;
        self.replaced[g] = true;
        self.shapes[g] = (shape != t.shape.as_slice()).then(|| shape.to_vec());
        Ok(())
    }

    /// The input index of the tensor called `name` in the output.
    fn out_index(&self, name: &str) -> Option<usize> {
        match &self.by_out {
            Some(map) => map.get(name).copied(),
            None => self.input.index_of(name),
        }
    }

    /// Renames and drops tensors: `rename(name)` gives each input
    /// tensor's name in the output, or `None` to leave it out (blocks
    /// removed, the later ones renumbered). Call it before replacing any
    /// tensor; replacements then name the output's tensors. Fails where
    /// two tensors would get the same name or a tensor was already
    /// replaced. Shards left empty are not written; the index is rebuilt.
    pub fn restructure(&mut self, rename: impl Fn(&str) -> Option<String>) -> Result<()> {
        if self.replaced.contains(&true) {
            return Err(Error::request("tensors are renamed before any is replaced"));
        }
        let out: Vec<Option<String>> = self.input.names.iter().map(|n| rename(n)).collect();
        let mut map = HashMap::new();
        for (g, name) in out.iter().enumerate() {
            if let Some(name) = name
                && map.insert(name.clone(), g).is_some()
            {
                return Err(Error::request(format!(
                    "two tensors would both be called {name} in the output"
                )));
            }
        }
        self.out_names = out;
        self.by_out = Some(map);
        Ok(())
    }

    /// Sets the output's `config.json` (a structured pruning's new sizes);
    /// without it the input's is copied as it is. Written pretty-printed.
    pub fn set_config(&mut self, config: Value) {
        self.config = Some(config);
    }

    /// The tensors of the shard whose first tensor has global index
    /// `first`, with replaced shapes and the data offsets that follow from
    /// them (in the shard's order).
    fn shard_tensors(&self, shard: &Shard, first: usize) -> Vec<(usize, TensorInfo)> {
        let mut at = 0u64;
        shard
            .checkpoint
            .tensors()
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let g = first + i;
                let name = self.out_names[g].as_ref()?;
                let mut t = t.clone();
                t.name = name.clone();
                if let Some(shape) = &self.shapes[g] {
                    t.shape = shape.clone();
                }
                let len = t.numel() * t.dtype.bits() as u64 / 8;
                t.start = at;
                t.end = at + len;
                at += len;
                Some((g, t))
            })
            .collect()
    }

    /// Whether tensor `name` was replaced.
    pub fn is_replaced(&self, name: &str) -> bool {
        self.out_index(name).is_some_and(|g| self.replaced[g])
    }

    fn spill_path(&self, g: usize) -> PathBuf {
        self.temp.path().join(SPILL_DIR).join(g.to_string())
    }

    /// Writes the output folder and renames it into place. Each weight
    /// file keeps its name and its tensors (order, dtypes, shapes, offsets);
    /// untouched tensors are copied byte for byte from the input, replaced
    /// ones from the spill, one tensor at a time. Each file's metadata keeps
    /// the input's entries and gets `metadata` (an entry with a key already
    /// there replaces its value). A weight file with nothing replaced and
    /// no metadata to add is copied as it is. A sharded folder gets its
    /// index again, with `metadata.total_size` recomputed. Every other file
    /// and subfolder of the input is copied, except `.git`. Everything is
    /// synced before the rename; an existing output (with `overwrite`) is
    /// moved aside, replaced, then deleted.
    pub fn finish(self, metadata: &[(String, String)]) -> Result<WriteSummary> {
        let root = self.temp.path().to_path_buf();
        let input = self.input;
        let mut summary = WriteSummary {
            dir: self.out.clone(),
            files: 0,
            bytes: 0,
            tensors_replaced: self.replaced.iter().filter(|&&r| r).count(),
            unpruned_weights: Vec::new(),
        };
        let mut skip: HashSet<PathBuf> = HashSet::new();
        let mut first = 0;
        // The output's tensors by shard file, for a rebuilt index.
        let mut weight_map = serde_json::Map::new();
        for shard in &input.shards {
            let count = shard.checkpoint.tensors().len();
            let replaced = &self.replaced[first..first + count];
            skip.insert(PathBuf::from(&shard.file));
            let tensors = self.shard_tensors(shard, first);
            if tensors.is_empty() {
                // Every tensor of this shard was dropped.
                first += count;
                continue;
            }
            for (_, t) in &tensors {
                weight_map.insert(t.name.clone(), Value::from(shard.file.clone()));
            }
            let path = root.join(&shard.file);
            create_parent(&path)?;
            let renamed = self.by_out.is_some();
            if metadata.is_empty() && !replaced.contains(&true) && !renamed {
                let n = copy_file(shard.checkpoint.path(), &path)?;
                if n != shard.checkpoint.file_len() {
                    return Err(Error::model(
                        input.dir.display(),
                        format!(
                            "{} holds {n} bytes where its header declared {}; it changed since                              it was opened",
                            shard.file,
                            shard.checkpoint.file_len()
                        ),
                    ));
                }
                summary.bytes += n;
            } else {
                summary.bytes += self.write_shard(shard, first, metadata, &path)?;
            }
            summary.files += 1;
            first += count;
        }
        if let Some(index) = &input.index {
            let mut first = 0;
            let (mut total, mut parameters) = (0u64, 0u64);
            for shard in &input.shards {
                for (_, t) in self.shard_tensors(shard, first) {
                    total += t.len();
                    parameters += t.numel();
                }
                first += shard.checkpoint.tensors().len();
            }
            let path = root.join(INDEX_FILE);
            if input.index_total == Some(total) && self.by_out.is_none() {
                summary.bytes += copy_file(&input.dir.join(INDEX_FILE), &path)?;
            } else {
                let mut index = index.clone();
                let object = index
                    .as_object_mut()
                    .expect("the index parsed as an object");
                let meta = object
                    .entry("metadata")
                    .or_insert_with(|| Value::Object(Default::default()));
                if !meta.is_object() {
                    *meta = Value::Object(Default::default());
                }
                let meta = meta.as_object_mut().expect("just made an object");
                meta.insert("total_size".into(), total.into());
                // Some writers also record the parameter count.
                if meta.contains_key("total_parameters") {
                    meta.insert("total_parameters".into(), parameters.into());
                }
                if self.by_out.is_some() {
                    object.insert("weight_map".into(), Value::Object(weight_map));
                }
                let mut text = serde_json::to_string_pretty(&index).expect("JSON serialises");
                text.push('\n');
                summary.bytes += text.len() as u64;
                write_synced(&path, text.as_bytes())?;
            }
            summary.files += 1;
            skip.insert(PathBuf::from(INDEX_FILE));
        }
        if let Some(config) = &self.config {
            let mut text = serde_json::to_string_pretty(config).expect("JSON serialises");
            text.push('\n');
            write_synced(&root.join(CONFIG_FILE), text.as_bytes())?;
            summary.bytes += text.len() as u64;
            summary.files += 1;
            skip.insert(PathBuf::from(CONFIG_FILE));
        }
        let spill = root.join(SPILL_DIR);
        fs::remove_dir_all(&spill).map_err(|e| Error::io("remove", spill.display(), e))?;
        skip.insert(PathBuf::from(".git"));
        copy_tree(&input.dir, &root, Path::new(""), &skip, &mut summary, 0)?;
        self.install(summary)
    }

    /// Writes one weight file, tensor by tensor; returns its size.
    fn write_shard(
        &self,
        shard: &Shard,
        first: usize,
        metadata: &[(String, String)],
        path: &Path,
    ) -> Result<u64> {
        let checkpoint = &shard.checkpoint;
        let mut meta: Vec<(String, String)> = checkpoint.metadata().to_vec();
        for (k, v) in metadata {
            match meta.iter_mut().find(|(old, _)| old == k) {
                Some(entry) => entry.1 = v.clone(),
                None => meta.push((k.clone(), v.clone())),
            }
        }
        let tensors = self.shard_tensors(shard, first);
        let infos: Vec<TensorInfo> = tensors.iter().map(|(_, t)| t.clone()).collect();
        let header = write_header(&infos, &meta);
        let shown = path.display();
        let file = File::create(path).map_err(|e| Error::io("create", &shown, e))?;
        let mut w = BufWriter::with_capacity(8 << 20, file);
        let mut put = |bytes: &[u8]| {
            w.write_all(bytes)
                .map_err(|e| Error::io("write", &shown, e))
        };
        put(&(header.len() as u64).to_le_bytes())?;
        put(&header)?;
        let mut written = 8 + header.len() as u64;
        for (g, t) in &tensors {
            let g = *g;
            if self.replaced[g] {
                let spilled = self.spill_path(g);
                let bytes =
                    fs::read(&spilled).map_err(|e| Error::io("read", spilled.display(), e))?;
                if bytes.len() as u64 != t.len() {
                    return Err(Error::request(format!(
                        "the spilled values of tensor '{}' hold {} bytes instead of {}; the \
                         temporary folder was changed while prunus wrote",
                        t.name,
                        bytes.len(),
                        t.len()
                    )));
                }
                put(&bytes)?;
            } else {
                put(&checkpoint.data(g - first)?)?;
            }
            written += t.len();
        }
        let file = w
            .into_inner()
            .map_err(|e| Error::io("write", &shown, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io("sync", &shown, e))?;
        Ok(written)
    }

    /// Syncs the temporary folder and renames it to the output, moving an
    /// existing output aside first and deleting it after.
    fn install(self, summary: WriteSummary) -> Result<WriteSummary> {
        let FolderWriter {
            input,
            out,
            overwrite,
            temp,
            ..
        } = self;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // A temporary folder is private (0700): give the output the
            // input's permissions, writable by its owner.
            if let Ok(m) = fs::metadata(&input.dir) {
                let mode = m.permissions().mode() | 0o700;
                let _ = fs::set_permissions(temp.path(), fs::Permissions::from_mode(mode));
            }
        }
        sync_dir(temp.path());
        let parent = out.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut aside = None;
        if fs::symlink_metadata(&out).is_ok() {
            if !overwrite {
                return Err(Error::request(format!(
                    "{} was created while prunus wrote; pass --force to replace it",
                    out.display()
                )));
            }
            let name = out.file_name().unwrap_or_default().to_string_lossy();
            let old = (0..1000)
                .map(|n| parent.join(format!(".{name}.prunus-old-{}-{n}", std::process::id())))
                .find(|p| fs::symlink_metadata(p).is_err())
                .ok_or_else(|| {
                    Error::request(format!(
                        "cannot find a free name beside {} to move it aside",
                        out.display()
                    ))
                })?;
            fs::rename(&out, &old).map_err(|e| Error::io("move aside", out.display(), e))?;
            aside = Some(old);
        }
        if let Err(e) = fs::rename(temp.path(), &out) {
            if let Some(old) = &aside {
                let _ = fs::rename(old, &out);
            }
            return Err(Error::io(
                "rename the temporary folder to",
                out.display(),
                e,
            ));
        }
        // Renamed: nothing is left to clean up at the temporary path.
        let _ = temp.keep();
        sync_dir(&parent);
        if let Some(old) = aside {
            // Best effort: the new output is complete whatever happens here.
            let _ = fs::remove_dir_all(old);
        }
        Ok(summary)
    }
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).map_err(|e| Error::io("create", p.display(), e))?;
    }
    Ok(())
}

/// Copies `from` to `to` and syncs it; returns its size.
fn copy_file(from: &Path, to: &Path) -> Result<u64> {
    let n = fs::copy(from, to).map_err(|e| Error::io("copy", from.display(), e))?;
    File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("sync", to.display(), e))?;
    Ok(n)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io("create", path.display(), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("write", path.display(), e))
}

/// Best effort: makes a folder's entries durable.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// File names that hold weights in formats other than the index's
/// safetensors.
fn looks_like_weights(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    [
        ".bin",
        ".pt",
        ".pth",
        ".ckpt",
        ".h5",
        ".msgpack",
        ".onnx",
        ".gguf",
        ".safetensors",
    ]
    .iter()
    .any(|ext| name.ends_with(ext))
}

/// Copies the folder `src/rel` into `dst/rel`, except the paths in `skip`
/// (relative to `src`); links are followed.
fn copy_tree(
    src: &Path,
    dst: &Path,
    rel: &Path,
    skip: &HashSet<PathBuf>,
    summary: &mut WriteSummary,
    depth: usize,
) -> Result<()> {
    let from = src.join(rel);
    if depth > 64 {
        return Err(Error::model(
            src.display(),
            format!("{} is nested too deep (a link loop?)", from.display()),
        ));
    }
    let mut entries: Vec<_> = fs::read_dir(&from)
        .map_err(|e| Error::io("list", from.display(), e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("list", from.display(), e))?;
    entries.sort();
    for name in entries {
        let r = rel.join(&name);
        if skip.contains(&r) {
            continue;
        }
        let path = src.join(&r);
        let meta = fs::metadata(&path).map_err(|e| Error::io("read", path.display(), e))?;
        let to = dst.join(&r);
        if meta.is_dir() {
            if !to.is_dir() {
                fs::create_dir(&to).map_err(|e| Error::io("create", to.display(), e))?;
            }
            copy_tree(src, dst, &r, skip, summary, depth + 1)?;
            sync_dir(&to);
        } else {
            summary.bytes += copy_file(&path, &to)?;
            summary.files += 1;
            if looks_like_weights(&r) {
                summary.unpruned_weights.push(r);
            }
        }
    }
    Ok(())
}

/// One tensor's share of a selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pruned {
    /// The tensor.
    pub name: String,
    /// Its element count.
    pub numel: u64,
    /// How many of its elements were selected (set to zero), counting any
    /// that were zero already.
    pub pruned: u64,
}

/// The exact global magnitude selection over tensors of a [`ModelFolder`],
/// possibly spread over several shards: of their `n` weights together the
/// `round(sparsity · n)` smallest by magnitude are pruned, ties going to
/// the lowest global index ([`ModelFolder::names`] order, then the flat
/// index), as [`prunus_core::select()`] would choose over them in one
/// sequence.
///
/// It is found with core's [`RadixSelect`] from histograms merged tensor by
/// tensor, one memory-mapped tensor at a time: one read of every tensor
/// (F16 and BF16 counted by bit pattern, F32 by the keys' high 16 bits),
/// and a second read of only the F32 tensors whose keys reach the
/// threshold's bucket. Memory stays at a few MiB of counts, whatever the
/// model's size.
#[derive(Clone, Debug)]
pub struct GlobalMagnitude {
    /// The selected tensors' global indices, increasing.
    members: Vec<usize>,
    cut: TensorCut,
    total: u64,
    target: u64,
}

/// The keys, magnitudes as core orders them, of a 16-bit dtype's patterns.
fn key_table(dtype: Dtype) -> Vec<u32> {
    (0..=u16::MAX)
        .map(|b| KeyRule::ABS.key(decode16(dtype, b)))
        .collect()
}

fn decode16(dtype: Dtype, bits: u16) -> f32 {
    match dtype {
        Dtype::F16 => f16::from_bits(bits).to_f32(),
        _ => bf16::from_bits(bits).to_f32(),
    }
}

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 20;

fn add_into(into: &mut [u64], from: &[u64]) {
    into.iter_mut().zip(from).for_each(|(a, b)| *a += b);
}

/// What one read of an F32 tensor counted: keys in the window, non-finite
/// values (and the first one's index), and the range of the keys' high
/// halves.
struct F32Scan {
    bins: Vec<u64>,
    bad: u64,
    first_bad: u64,
    lo: u16,
    hi: u16,
}

fn scan_f32(data: &[u8], window: KeyWindow) -> F32Scan {
    let empty = || F32Scan {
        bins: vec![0; BINS],
        bad: 0,
        first_bad: u64::MAX,
        lo: u16::MAX,
        hi: 0,
    };
    data.par_chunks(CHUNK * 4)
        .enumerate()
        .fold(empty, |mut s, (c, bytes)| {
            for (j, b) in bytes.chunks_exact(4).enumerate() {
                let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if !x.is_finite() {
                    s.bad += 1;
                    s.first_bad = s.first_bad.min((c * CHUNK + j) as u64);
                    continue;
                }
                let key = KeyRule::ABS.key(x);
                let high = (key >> 16) as u16;
                s.lo = s.lo.min(high);
                s.hi = s.hi.max(high);
                if let Some(bin) = window.bin(key) {
                    s.bins[bin] += 1;
                }
            }
            s
        })
        .reduce(empty, |mut a, b| {
            add_into(&mut a.bins, &b.bins);
            a.bad += b.bad;
            a.first_bad = a.first_bad.min(b.first_bad);
            a.lo = a.lo.min(b.lo);
            a.hi = a.hi.max(b.hi);
            a
        })
}

fn count_codes(data: &[u8]) -> Vec<u64> {
    data.par_chunks(CHUNK * 2)
        .fold(
            || vec![0u64; BINS],
            |mut counts, bytes| {
                for b in bytes.chunks_exact(2) {
                    counts[u16::from_le_bytes([b[0], b[1]]) as usize] += 1;
                }
                counts
            },
        )
        .reduce(
            || vec![0u64; BINS],
            |mut a, b| {
                add_into(&mut a, &b);
                a
            },
        )
}

impl GlobalMagnitude {
    /// Selects `round(sparsity · n)` of the `n` weights of the tensors
    /// `names` (any order; they are ranked in [`ModelFolder::names`]
    /// order). Fails for a name the folder lacks or gives twice, a tensor
    /// that is not F32, F16 or BF16, a sparsity outside `[0, 1]`, and
    /// non-finite weights (naming the tensor).
    pub fn select(
        folder: &ModelFolder,
        names: &[String],
        sparsity: f64,
    ) -> Result<GlobalMagnitude> {
        if !(0.0..=1.0).contains(&sparsity) {
            return Err(prunus_core::Error::SparsityOutOfRange { value: sparsity }.into());
        }
        let mut members = Vec::with_capacity(names.len());
        for name in names {
            let g = folder.index_of(name).ok_or_else(|| {
                Error::request(format!(
                    "cannot prune tensor '{name}': the model in {} has no tensor of that name",
                    folder.dir.display()
                ))
            })?;
            let t = folder.info(name).expect("indexed tensors have entries");
            if !t.dtype.is_prunable() {
                return Err(Error::request(format!(
                    "cannot prune tensor '{name}': it is {}, not F32, F16 or BF16",
                    t.dtype
                )));
            }
            members.push(g);
        }
        members.sort_unstable();
        if let Some(w) = members.windows(2).find(|w| w[0] == w[1]) {
            return Err(prunus_core::Error::DuplicateLayer {
                name: folder.names[w[0]].clone(),
            }
            .into());
        }
        let tensor = |g: usize| {
            let (s, i) = folder.places[g];
            (&folder.shards[s].checkpoint, i)
        };
        let total: u64 = members
            .iter()
            .map(|&g| {
                let (c, i) = tensor(g);
                c.tensors()[i].numel()
            })
            .sum();
        let target = units_to_prune(sparsity, total);
        let mut radix = RadixSelect::new(total, target)?;
        if radix.window().is_none() {
            return Ok(GlobalMagnitude {
                members,
                cut: TensorCut { key: 0, ties: 0 },
                total,
                target,
            });
        }
        // The scan: bit-pattern counts of F16 and BF16, high-half counts of
        // F32 with each tensor's range of high halves.
        let mut codes = [vec![0u64; BINS], vec![0u64; BINS]];
        let mut high = vec![0u64; BINS];
        let mut ranges: Vec<(usize, u16, u16)> = Vec::new();
        let non_finite = |g: usize, count: u64, first: u64| {
            Error::Adapter(prunus_adapters::Error::NonFinite {
                tensor: folder.names[g].clone(),
                count,
                first,
            })
        };
        for &g in &members {
            let (c, i) = tensor(g);
            let dtype = c.tensors()[i].dtype;
            let data = c.data(i)?;
            if dtype == Dtype::F32 {
                let s = scan_f32(&data, KeyWindow::High);
                if s.bad > 0 {
                    return Err(non_finite(g, s.bad, s.first_bad));
                }
                add_into(&mut high, &s.bins);
                ranges.push((g, s.lo, s.hi));
            } else {
                let counts = count_codes(&data);
                let bad: u64 = counts
                    .iter()
                    .enumerate()
                    .filter(|&(code, &n)| n > 0 && !decode16(dtype, code as u16).is_finite())
                    .map(|(_, &n)| n)
                    .sum();
                if bad > 0 {
                    let first = data
                        .chunks_exact(2)
                        .position(|b| {
                            !decode16(dtype, u16::from_le_bytes([b[0], b[1]])).is_finite()
                        })
                        .unwrap_or(0);
                    return Err(non_finite(g, bad, first as u64));
                }
                add_into(&mut codes[(dtype == Dtype::BF16) as usize], &counts);
            }
        }
        let tables = [key_table(Dtype::F16), key_table(Dtype::BF16)];
        while let Some(window) = radix.window() {
            let mut h = Histogram::new(0);
            for (counts, table) in codes.iter().zip(&tables) {
                for (code, &n) in counts.iter().enumerate() {
                    if n > 0
                        && let Some(bin) = window.bin(table[code])
                    {
                        h.bins[bin] += n;
                    }
                }
            }
            match window {
                KeyWindow::High => add_into(&mut h.bins, &high),
                KeyWindow::Low { high: bucket } => {
                    // Only the F32 tensors with keys in the bucket are read
                    // again.
                    for &(g, lo, hi) in &ranges {
                        if lo <= bucket && bucket <= hi {
                            let (c, i) = tensor(g);
                            let s = scan_f32(&c.data(i)?, window);
                            add_into(&mut h.bins, &s.bins);
                        }
                    }
                }
            }
            radix.absorb(&h)?;
        }
        let cut = radix.cut().expect("every window was absorbed").threshold();
        Ok(GlobalMagnitude {
            members,
            cut,
            total,
            target,
        })
    }

    /// The threshold, applied to the tensors as one sequence in
    /// [`ModelFolder::names`] order.
    pub fn cut(&self) -> TensorCut {
        self.cut
    }

    /// The weights of the selected tensors together.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// How many of them are pruned: `round(sparsity · total)`.
    pub fn target(&self) -> u64 {
        self.target
    }

    /// Applies the selection tensor by tensor in [`ModelFolder::names`]
    /// order: reads each tensor, sets its selected weights to zero, and
    /// passes its name, values and pruned count to `each` (which writes
    /// them somewhere). One tensor's values are held at a time.
    pub fn apply(
        &self,
        folder: &ModelFolder,
        mut each: impl FnMut(&str, &[f32], u64) -> Result<()>,
    ) -> Result<Vec<Pruned>> {
        let cut = self.cut;
        let partial = cut.ties > 0 && cut.ties != TensorCut::ALL;
        // Tied elements before the current tensor, in the sequence.
        let mut rank = 0u64;
        let mut out = Vec::with_capacity(self.members.len());
        for &g in &self.members {
            let name = &folder.names[g];
            let mut values = folder.values(name)?;
            // Per chunk: its tied elements, then their first rank.
            let tied: Vec<u64> = if partial {
                values
                    .par_chunks(CHUNK)
                    .map(|c| {
                        c.iter()
                            .filter(|&&x| KeyRule::ABS.key(x) == cut.key)
                            .count() as u64
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let starts: Vec<u64> = tied
                .iter()
                .scan(rank, |acc, &t| {
                    let s = *acc;
                    *acc += t;
                    Some(s)
                })
                .collect();
            let pruned: u64 = values
                .par_chunks_mut(CHUNK)
                .enumerate()
                .map(|(c, chunk)| {
                    let mut r = starts.get(c).copied().unwrap_or(0);
                    let mut n = 0u64;
                    for x in chunk {
                        let key = KeyRule::ABS.key(*x);
                        if cut.prunes(key, r) {
                            *x = 0.0;
                            n += 1;
                        }
                        r += (key == cut.key) as u64;
                    }
                    n
                })
                .sum();
            rank += tied.iter().sum::<u64>();
            each(name, &values, pruned)?;
            out.push(Pruned {
                name: name.clone(),
                numel: values.len() as u64,
                pruned,
            });
        }
        debug_assert_eq!(out.iter().map(|p| p.pruned).sum::<u64>(), self.target);
        Ok(out)
    }
}

/// Global magnitude pruning of the tensors `names` of `folder` into
/// `writer` (which must copy `folder`): the exact selection of
/// [`GlobalMagnitude`], each pruned tensor then given to
/// [`FolderWriter::replace`]. Returns each tensor's pruned count, in
/// [`ModelFolder::names`] order.
pub fn magnitude_global(
    folder: &ModelFolder,
    names: &[String],
    sparsity: f64,
    writer: &mut FolderWriter<'_>,
) -> Result<Vec<Pruned>> {
    if !std::ptr::eq(folder, writer.input) {
        return Err(Error::request(format!(
            "the writer copies {}, not {}: prune into a writer created from the same folder",
            writer.input.dir.display(),
            folder.dir.display()
        )));
    }
    let selection = GlobalMagnitude::select(folder, names, sparsity)?;
    selection.apply(folder, |name, values, _| writer.replace(name, values))
}
