//! The single long-format JSON report of every lab protocol and benchmark.
//!
//! One schema for every command, so that results from different commands,
//! machines and versions can be compared by one script:
//!
//! ```json
//! {
//!   "protocol": "bench-select",
//!   "prunus_version": "0.1.0",
//!   "dataset": "synthetic",
//!   "seeds": [0],
//!   "config": {"params": 100000000, "sparsity": 0.9},
//!   "rows": [
//!     {"method": "prunus", "sparsity": 0.9, "metric": "prunus_ms",
//!      "values": [190.1, 188.7], "mean": 189.4, "std": 0.99}
//!   ],
//!   "timing_s": {"generate": 0.6, "total": 4.2}
//! }
//! ```
//!
//! `method`, `metric`, `values`, `mean` and `std` are always present in a
//! row; `sparsity`, `round`, `epoch`, `width`, `layer` and `task` appear
//! when set and say where the values were taken. A non-finite value (a diverged loss) is
//! written as `null` and read back as NaN.
//!
//! Reports are written with [`write_atomic`]: a reader never sees a partial
//! file, and a failed write leaves any earlier file in place.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The version of prunus that writes reports.
pub const PRUNUS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One result of a report: a metric of a method, one value per seed (or per
/// repeat of a benchmark), with their mean and sample standard deviation.
///
/// ```
/// use prunus_lab::Row;
/// let r = Row::new("CBS", "test_acc", vec![93.1, 92.8, 93.0])?.sparsity(0.9);
/// assert!((r.mean - 92.966_666).abs() < 1e-5);
/// assert!((r.std - 0.152_752).abs() < 1e-5);
/// let json = serde_json::to_string(&r).unwrap();
/// assert!(json.starts_with(r#"{"method":"CBS","sparsity":0.9,"metric":"test_acc""#));
/// # Ok::<(), prunus_lab::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Row {
    /// The method measured (`CBS`, `magnitude`, `prunus`, ...).
    pub method: String,
    /// The sparsity the values were taken at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<f64>,
    /// The pruning round (iterative schedules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u64>,
    /// The training epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// The network width (or another size being swept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u64>,
    /// The layer, for per-layer values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// The task (network and data), when a protocol runs several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// What was measured (`test_acc`, `train_loss`, `wall_s`, ...).
    pub metric: String,
    /// One value per seed or repeat.
    #[serde(deserialize_with = "nullable::values")]
    pub values: Vec<f64>,
    /// The mean of `values`.
    #[serde(deserialize_with = "nullable::value")]
    pub mean: f64,
    /// The sample standard deviation of `values` (divisor `n - 1`; 0 for a
    /// single value).
    #[serde(deserialize_with = "nullable::value")]
    pub std: f64,
}

impl Row {
    /// A row of `values` with their mean and sample standard deviation.
    ///
    /// Fails with [`Error::EmptyRow`] when `values` is empty.
    pub fn new(
        method: impl Into<String>,
        metric: impl Into<String>,
        values: Vec<f64>,
    ) -> Result<Self> {
        let method = method.into();
        let metric = metric.into();
        let Some((mean, std)) = mean_std(&values) else {
            return Err(Error::EmptyRow { method, metric });
        };
        Ok(Row {
            method,
            sparsity: None,
            round: None,
            epoch: None,
            width: None,
            layer: None,
            task: None,
            metric,
            values,
            mean,
            std,
        })
    }

    /// The same row taken at `sparsity`.
    pub fn sparsity(mut self, sparsity: f64) -> Self {
        self.sparsity = Some(sparsity);
        self
    }

    /// The same row taken at pruning round `round`.
    pub fn round(mut self, round: u64) -> Self {
        self.round = Some(round);
        self
    }

    /// The same row taken at training epoch `epoch`.
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// The same row taken at network width `width`.
    pub fn width(mut self, width: u64) -> Self {
        self.width = Some(width);
        self
    }

    /// The same row for layer `layer`.
    pub fn layer(mut self, layer: impl Into<String>) -> Self {
        self.layer = Some(layer.into());
        self
    }

    /// The same row for task `task`.
    pub fn task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }
}

/// The mean and sample standard deviation (divisor `n - 1`, 0 for one
/// value) of `values`; `None` when there is none.
///
/// ```
/// use prunus_lab::report::mean_std;
/// assert_eq!(mean_std(&[2.0, 4.0]), Some((3.0, 2f64.sqrt())));
/// assert_eq!(mean_std(&[5.0]), Some((5.0, 0.0)));
/// assert_eq!(mean_std(&[]), None);
/// ```
pub fn mean_std(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = if values.len() == 1 {
        0.0
    } else {
        (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0)).sqrt()
    };
    Some((mean, std))
}

/// A complete report: what ran, on what, with which settings, and the
/// results as long-format rows.
///
/// ```
/// use prunus_lab::{Report, Row};
/// let mut r = Report::new("cbs", "mnist", vec![0, 1, 2]);
/// r.set_config("damping", 0.001);
/// r.push(Row::new("CBS", "test_acc", vec![93.1, 92.8, 93.0])?.sparsity(0.9));
/// r.set_timing("total", 6.0);
/// let back = Report::from_json(&r.to_json()?)?;
/// assert_eq!(back, r);
/// # Ok::<(), prunus_lab::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Report {
    /// The protocol or benchmark: `flow`, `cbs`, `infcop`, `forward`,
    /// `bench-select`, `bench-prune`, ...
    pub protocol: String,
    /// The prunus version that produced it.
    pub prunus_version: String,
    /// The data: `mnist` or `synthetic`.
    pub dataset: String,
    /// The seeds the rows' values were taken with.
    pub seeds: Vec<u64>,
    /// Everything needed to rerun it.
    pub config: Map<String, Value>,
    /// The results.
    pub rows: Vec<Row>,
    /// Wall time per phase, in seconds (`total` for the whole run).
    pub timing_s: BTreeMap<String, f64>,
}

impl Report {
    /// An empty report of the running prunus version.
    pub fn new(protocol: impl Into<String>, dataset: impl Into<String>, seeds: Vec<u64>) -> Self {
        Report {
            protocol: protocol.into(),
            prunus_version: PRUNUS_VERSION.into(),
            dataset: dataset.into(),
            seeds,
            config: Map::new(),
            rows: Vec::new(),
            timing_s: BTreeMap::new(),
        }
    }

    /// Records a setting in `config` (replacing an earlier one of that name).
    pub fn set_config(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.config.insert(key.into(), value.into());
    }

    /// Adds a row.
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// Records the wall time of a phase, in seconds.
    pub fn set_timing(&mut self, phase: impl Into<String>, seconds: f64) {
        self.timing_s.insert(phase.into(), seconds);
    }

    /// The report as pretty-printed JSON, ending with a newline.
    pub fn to_json(&self) -> Result<String> {
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }

    /// A report from JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        Ok(serde_json::from_str(text)?)
    }

    /// Reads a report file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|source| Error::Io {
            action: "read report",
            path: path.into(),
            source,
        })?;
        Report::from_json(&text)
    }
}

/// What a finished protocol run shows: the table printed on a terminal,
/// the JSON report and the chart. Every protocol's result implements it,
/// so a front end (the CLI) handles them all one way.
pub trait ProtocolResult {
    /// The JSON report.
    fn report(&self) -> Result<Report>;

    /// The table printed on stdout.
    fn table(&self) -> String;

    /// The chart, as an SVG document.
    fn svg(&self) -> Result<String>;
}

/// Writes `report` as JSON to `path` atomically (see [`write_text_atomic`]).
pub fn write_atomic(path: impl AsRef<Path>, report: &Report) -> Result<()> {
    write_bytes_atomic(path.as_ref(), report.to_json()?.as_bytes())
}

/// Writes `text` to `path` atomically: into a new temporary file in the same
/// directory, flushed to disk, then renamed over `path`. Readers see the old
/// file or the complete new one, never a partial one; on failure the
/// temporary file is removed and an existing `path` is left untouched.
///
/// ```
/// let path = std::env::temp_dir().join(format!("prunus-doc-{}.txt", std::process::id()));
/// prunus_lab::write_text_atomic(&path, "hello\n")?;
/// assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello\n");
/// # std::fs::remove_file(&path).unwrap();
/// # Ok::<(), prunus_lab::Error>(())
/// ```
pub fn write_text_atomic(path: impl AsRef<Path>, text: &str) -> Result<()> {
    write_bytes_atomic(path.as_ref(), text.as_bytes())
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a
/// rename, so a reader never sees a partial file.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    let Some(name) = path.file_name() else {
        return Err(Error::InvalidSetting {
            name: "output path",
            value: path.display().to_string(),
            expected: "a path that ends in a file name".into(),
        });
    };
    if path.is_dir() {
        return Err(Error::InvalidSetting {
            name: "output path",
            value: path.display().to_string(),
            expected: "a file, not a directory".into(),
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (tmp, mut file) = create_temporary(dir, &name.to_string_lossy())?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io("write temporary file", &tmp));
    drop(file);
    let renamed = written.and_then(|()| fs::rename(&tmp, path).map_err(io("replace", path)));
    if let Err(e) = renamed {
        // The write failed: leave no temporary behind and the target as it was.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable where the platform allows it; the data
    // is already in place, so a failure here is not the caller's concern.
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A new file `.<pid>-<n>.<name>.tmp` in `dir` that no other writer uses.
fn create_temporary(dir: &Path, name: &str) -> Result<(PathBuf, File)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{}-{n}.{name}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => {
                return Err(Error::Io {
                    action: "create temporary file",
                    path: tmp,
                    source,
                });
            }
        }
    }
}

/// Reading `null` (how JSON writes a non-finite number) back as NaN.
mod nullable {
    use super::*;

    pub(super) fn value<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }

    pub(super) fn values<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let v = Vec::<Option<f64>>::deserialize(d)?;
        Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::new("cbs", "mnist", vec![0, 1, 2]);
        r.set_config("model", "784-40-20-10");
        r.set_config("fisher_samples", 6000);
        r.push(
            Row::new("CBS", "test_acc", vec![93.1, 92.8, 93.0])
                .unwrap()
                .sparsity(0.9),
        );
        r.push(
            Row::new("IMP", "train_loss", vec![0.25])
                .unwrap()
                .round(3)
                .epoch(7)
                .width(40)
                .layer("fc1"),
        );
        r.set_timing("fisher", 1.2);
        r.set_timing("total", 6.0);
        r
    }

    #[test]
    fn mean_and_sample_std() {
        let r = Row::new("m", "x", vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(r.mean, 2.5);
        assert!((r.std - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let one = Row::new("m", "x", vec![7.5]).unwrap();
        assert_eq!((one.mean, one.std), (7.5, 0.0));
        assert!(matches!(
            Row::new("m", "x", vec![]),
            Err(Error::EmptyRow { .. })
        ));
    }

    #[test]
    fn json_round_trip() {
        let r = sample();
        let text = r.to_json().unwrap();
        assert_eq!(Report::from_json(&text).unwrap(), r);
        // Unset optional keys are absent, set ones present.
        let v: Value = serde_json::from_str(&text).unwrap();
        let rows = v["rows"].as_array().unwrap();
        assert!(rows[0].get("round").is_none());
        assert_eq!(rows[0]["sparsity"], 0.9);
        assert_eq!(rows[1]["layer"], "fc1");
        for key in [
            "protocol",
            "prunus_version",
            "dataset",
            "seeds",
            "config",
            "rows",
            "timing_s",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
    }

    #[test]
    fn non_finite_values_round_trip_as_null() {
        let mut r = Report::new("flow", "synthetic", vec![0]);
        r.push(Row::new("m", "train_loss", vec![1.0, f64::INFINITY]).unwrap());
        let text = r.to_json().unwrap();
        assert!(text.contains("null"));
        let back = Report::from_json(&text).unwrap();
        let row = &back.rows[0];
        assert_eq!(row.values[0], 1.0);
        assert!(row.values[1].is_nan() && row.mean.is_nan());
    }

    fn scratch_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("prunus-lab-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = scratch_dir("atomic");
        let path = dir.join("out.json");
        fs::write(&path, "old contents that are longer than nothing").unwrap();
        let r = sample();
        write_atomic(&path, &r).unwrap();
        assert_eq!(Report::read(&path).unwrap(), r);
        assert_eq!(entries(&dir), ["out.json"]);
        write_text_atomic(&path, "short\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "short\n");
        assert_eq!(entries(&dir), ["out.json"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = scratch_dir("failed");
        let missing = dir.join("no-such-dir").join("out.json");
        assert!(matches!(
            write_text_atomic(&missing, "x"),
            Err(Error::Io { .. })
        ));
        // A directory in the way is refused and left as it was.
        let sub = dir.join("taken");
        fs::create_dir(&sub).unwrap();
        assert!(matches!(
            write_text_atomic(&sub, "x"),
            Err(Error::InvalidSetting { .. })
        ));
        assert_eq!(entries(&dir), ["taken"]);
        assert!(entries(&sub).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
