//! Structured pruning of a model folder: whole MLP channels removed from
//! every block, the consuming layer's kept columns refit on calibration
//! statistics, the producing layers sliced, and the model written as a
//! smaller dense model whose `config.json` says so (METHODS.md §6).
//!
//! Widths stay uniform: every block loses the same number of groups, so
//! the config stays valid and the output loads wherever the input loaded;
//! which groups go differs per block. With calibration text the blocks are
//! run in order, each pruned block feeding the next (as for unstructured
//! methods); magnitude needs no text and reads one block at a time.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use prunus_core::methods::layerwise::{
    GroupScore, GroupSearch, LayerStats, StructuredConfig, StructuredLayer, StructuredPruned,
    reconstruction_error, structured, structured_error,
};
use prunus_core::{Dense, Matrix};
use serde_json::Value;

use crate::blocks::{
    BlockMap, BlockRemoval, BlockScore, Renamed, block_importance, config_without, least_important,
};
use crate::error::{Error, Result};
use crate::experts::prune_experts;
use crate::folder::{FolderWriter, ModelFolder};
use crate::graph::{Graph, Part, Structure, StructureSpan, Weights};
use crate::model::open_graph_with;
use crate::pruning::{Calibration, GroupReport, LayerReport, Progress, Report, Sink};
use crate::record::{Recorded, StatsPlace};

/// How the groups of a structure are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StructuredMethod {
    /// The L2 norm of every weight a group spans (Torch-Pruning's group
    /// norm); needs no calibration and never refits.
    Magnitude,
    /// Wanda-sp: `Σ ‖X_j‖ Σ_i |W_ij|` over the group's columns.
    Wanda,
    /// FLAP's fluctuation `Σ Var(X_j) ‖W_:,j‖²`; without the refit, FLAP's
    /// bias compensation where the layer has a bias.
    Fluctuation,
    /// Greedy backward elimination by exact OBS cost with `H⁻¹` downdated,
    /// then swaps.
    Obs,
    /// Greedy forward selection on the layer's reconstruction error, then
    /// swaps.
    Forward,
}

impl StructuredMethod {
    /// The method's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            StructuredMethod::Magnitude => "magnitude",
            StructuredMethod::Wanda => "wanda",
            StructuredMethod::Fluctuation => "fluctuation",
            StructuredMethod::Obs => "obs",
            StructuredMethod::Forward => "forward",
        }
    }

    /// Whether the method needs calibration text.
    pub fn is_calibrated(self) -> bool {
        self != StructuredMethod::Magnitude
    }

    fn search(self) -> GroupSearch {
        match self {
            StructuredMethod::Magnitude => GroupSearch::Score(GroupScore::Magnitude),
            StructuredMethod::Wanda => GroupSearch::Score(GroupScore::Wanda),
            StructuredMethod::Fluctuation => GroupSearch::Score(GroupScore::Fluctuation),
            StructuredMethod::Obs => GroupSearch::Backward,
            StructuredMethod::Forward => GroupSearch::Forward,
        }
    }
}

/// How [`prune_structured`] runs.
#[derive(Clone, Debug)]
pub struct StructuredSettings {
    /// The method.
    pub method: StructuredMethod,
    /// The fraction of each structure's groups removed from every block
    /// (`round(F · count)`).
    pub parts: BTreeMap<Structure, f64>,
    /// Refit the kept columns (the default for calibrated methods).
    pub refit: bool,
    /// Swaps after the obs and forward searches.
    pub swaps: usize,
    /// Dampening as a fraction of the mean diagonal of `H` (0.01).
    pub dampening: f64,
    /// Groups per step of the obs and forward searches (`None`: automatic).
    pub batch: Option<usize>,
    /// Whole blocks to remove (before any other structure), chosen by
    /// `block_score` on the calibration text.
    pub blocks: Option<usize>,
    /// How blocks are judged.
    pub block_score: BlockScore,
    /// The fraction of every mixture's experts to remove (on its own, with
    /// no other structure; see [`crate::experts`]).
    pub experts: Option<f64>,
}

impl StructuredSettings {
    /// A method removing `parts`, with the refit on for calibrated
    /// methods, 8 swaps and 1% dampening.
    pub fn new(method: StructuredMethod, parts: BTreeMap<Structure, f64>) -> StructuredSettings {
        StructuredSettings {
            method,
            parts,
            refit: method.is_calibrated(),
            swaps: 8,
            dampening: prunus_core::methods::layerwise::PERCDAMP,
            batch: None,
            blocks: None,
            block_score: BlockScore::Influence,
            experts: None,
        }
    }

    /// Refuses settings no model honours, before any work.
    pub fn check(&self) -> Result<()> {
        if self.parts.is_empty() && self.blocks.is_none() && self.experts.is_none() {
            return Err(Error::request(
                "no structure to remove: give at least one of mlp=F, heads=F, kv-heads=F, \
                 experts=F, blocks=N",
            ));
        }
        if self.experts.is_some() && (!self.parts.is_empty() || self.blocks.is_some()) {
            return Err(Error::request(
                "experts=F runs on its own: remove experts, then prune the output again for \
                 the other structures",
            ));
        }
        if self.blocks == Some(0) {
            return Err(Error::request("blocks=0 removes nothing: give at least 1"));
        }
        for (s, &f) in &self.parts {
            if !(f.is_finite() && f > 0.0 && f < 1.0) {
                return Err(Error::request(format!(
                    "{}={f}: give a fraction of the groups in (0, 1); every block keeps at \
                     least one and loses at least one",
                    s.name()
                )));
            }
        }
        if self.refit && !self.method.is_calibrated() {
            return Err(Error::request(
                "magnitude uses no calibration statistics, so it cannot refit: it only slices",
            ));
        }
        if !(self.dampening.is_finite() && self.dampening >= 0.0) {
            return Err(Error::request(format!(
                "a dampening of {}: give a non-negative fraction of the mean diagonal of H",
                self.dampening
            )));
        }
        if self.batch == Some(0) {
            return Err(Error::request("a search batch of 0: give at least 1"));
        }
        Ok(())
    }

    fn config(&self, remove: usize) -> StructuredConfig {
        let swaps = match self.method {
            StructuredMethod::Obs | StructuredMethod::Forward => self.swaps,
            _ => 0,
        };
        let mut c = StructuredConfig::new(self.method.search(), remove)
            .refit(self.refit)
            .swaps(swaps)
            .percdamp(self.dampening);
        c.batch = self.batch;
        c
    }
}

/// The groups `fraction` removes from `count` per set: `round(F · count)`,
/// refused where it is 0 or all of them.
pub fn removed_count(structure: Structure, fraction: f64, per_set: usize) -> Result<usize> {
    let remove = (fraction * per_set as f64).round() as usize;
    if remove == 0 || remove >= per_set {
        return Err(Error::request(format!(
            "{}={fraction} removes {remove} of the {per_set} groups: a block must lose at least \
             one and keep at least one",
            structure.name()
        )));
    }
    Ok(remove)
}

/// The spans of block `i` that `settings` asks for, and how many groups
/// each loses per set; an error naming a structure the model lacks.
fn requested(
    graph: &dyn Graph,
    i: usize,
    settings: &StructuredSettings,
) -> Result<Vec<(StructureSpan, usize)>> {
    let spans = graph.structures(i);
    settings
        .parts
        .iter()
        .map(|(&s, &f)| {
            let span = find_span(&spans, s)?;
            let remove = removed_count(s, f, span.layout.per_set())?;
            Ok((span, remove))
        })
        .collect()
}

/// The span of `structure` among a block's `spans`. Query heads of a model
/// without grouped-query attention (one query head per KV group) go with
/// their key and value heads: there, `heads=F` removes that fraction of
/// the KV groups.
fn find_span(spans: &[StructureSpan], structure: Structure) -> Result<StructureSpan> {
    let find = |s: Structure| spans.iter().find(|sp| sp.structure == s).cloned();
    match find(structure) {
        Some(span) if structure == Structure::Heads && span.layout.per_set() == 1 => {
            find(Structure::KvGroups).ok_or_else(|| {
                Error::request("every KV group has one query head, and KV groups cannot go")
            })
        }
        Some(span) => Ok(span),
        None => Err(Error::request(format!(
            "this model has no {} structure prunus can remove (supported here: {})",
            structure.name(),
            if spans.is_empty() {
                "none".to_string()
            } else {
                spans
                    .iter()
                    .map(|sp| sp.structure.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))),
    }
}

/// A block's loaded linear layer's weight `[out, in]` and bias as f64 and
/// f32 host vectors.
fn read_linear(graph: &dyn Graph, i: usize, name: &str) -> Result<(Matrix, Option<Vec<f32>>)> {
    let layer = graph
        .linears(i)?
        .into_iter()
        .find(|l| l.name() == name)
        .ok_or_else(|| Error::request(format!("block {i} has no linear layer {name}")))?;
    let (out, cols) = layer.weight().dims2()?;
    let w: Vec<f32> = layer.weight().flatten_all()?.to_vec1()?;
    let bias = match layer.bias() {
        Some(b) => Some(b.to_vec1::<f32>()?),
        None => None,
    };
    Ok((Matrix::from_f32(out, cols, &w)?, bias))
}

/// Prunes one structure of block `i` and writes its new tensors into the
/// graph and `sink`.
#[allow(clippy::too_many_arguments)]
fn prune_span(
    dense: &dyn Dense,
    graph: &mut dyn Graph,
    i: usize,
    span: &StructureSpan,
    remove: usize,
    stats: Option<&LayerStats>,
    settings: &StructuredSettings,
    sink: &mut dyn Sink,
) -> Result<LayerReport> {
    let (w, bias) = read_linear(graph, i, &span.consumer)?;
    let (out, cols) = (w.rows(), w.cols());
    let lay = span.layout;
    // Magnitude's norm takes the producers' tied rows too. A fused layer
    // is read once however many ranges it has.
    let mut tied = vec![0.0f64; lay.count()];
    let mut producers: Vec<(&str, Matrix, Option<Vec<f32>>)> = Vec::new();
    for p in &span.producers {
        if !producers.iter().any(|(name, ..)| *name == p.name) {
            let (pw, pb) = read_linear(graph, i, &p.name)?;
            producers.push((&p.name, pw, pb));
        }
        let (_, pw, _) = producers
            .iter()
            .find(|(name, ..)| *name == p.name)
            .expect("read above");
        if p.offset + p.rows * lay.count() > pw.rows() {
            return Err(Error::request(format!(
                "{} has {} rows where {} groups of {} from row {} were expected",
                p.name,
                pw.rows(),
                lay.count(),
                p.rows,
                p.offset
            )));
        }
        for (g, t) in tied.iter_mut().enumerate() {
            let first = p.offset + g * p.rows;
            *t += (first..first + p.rows)
                .flat_map(|r| pw.row(r))
                .map(|v| v * v)
                .sum::<f64>();
        }
    }
    let empty;
    let stats = match stats {
        Some(s) => s,
        None => {
            empty = LayerStats::new(cols, false)?;
            &empty
        }
    };
    let bias64: Option<Vec<f64>> = bias
        .as_ref()
        .map(|b| b.iter().map(|&v| f64::from(v)).collect());
    let mut layer = StructuredLayer::new(&w, stats, lay).tied_squares(&tied);
    if let Some(b) = &bias64 {
        layer = layer.bias(b);
    }
    let clock = Instant::now();
    let pruned = structured(dense, &layer, &settings.config(remove))?;
    let seconds = clock.elapsed().as_secs_f64();
    let (error, relative_error) = if stats.rows() > 0 && stats.gram().is_some() {
        let error = structured_error(dense, &layer, &pruned)?;
        let energy = reconstruction_error(dense, &w, &Matrix::zeros(out, cols), stats)?;
        (
            Some(error),
            Some(if energy > 0.0 { error / energy } else { 0.0 }),
        )
    } else {
        (None, None)
    };
    write_consumer(graph, i, &span.consumer, &pruned, sink)?;
    let removed: std::collections::HashSet<usize> = pruned.removed.iter().copied().collect();
    for (name, pw, pb) in &producers {
        // Keep every row but those of the removed groups' ranges.
        let mut dropped = vec![false; pw.rows()];
        for p in span.producers.iter().filter(|p| p.name == *name) {
            for &g in &removed {
                let first = p.offset + g * p.rows;
                dropped[first..first + p.rows].fill(true);
            }
        }
        let keep: Vec<usize> = (0..pw.rows()).filter(|&r| !dropped[r]).collect();
        let sliced = pw.select_rows(&keep);
        let bias = pb
            .as_ref()
            .map(|b| keep.iter().map(|&r| b[r]).collect::<Vec<f32>>());
        write_linear(graph, i, name, &sliced, bias.as_deref(), sink)?;
    }
    Ok(LayerReport {
        name: span.consumer.clone(),
        block: i,
        shape: [out, cols],
        pruned: (out * (cols - pruned.weights.cols())) as u64,
        error,
        relative_error,
        seconds,
        groups: Some(GroupReport {
            structure: span.structure,
            before: lay.count(),
            removed: pruned.removed.clone(),
        }),
        inputs: (stats.rows() > 0).then(|| stats.rows()),
    })
}

fn write_consumer(
    graph: &mut dyn Graph,
    i: usize,
    name: &str,
    pruned: &StructuredPruned,
    sink: &mut dyn Sink,
) -> Result<()> {
    let bias: Option<Vec<f32>> = pruned
        .bias
        .as_ref()
        .map(|b| b.iter().map(|&v| v as f32).collect());
    write_linear(graph, i, name, &pruned.weights, bias.as_deref(), sink)
}

/// Sets a block's linear layer to new (smaller) weights and bias, in the
/// graph and in `sink`.
fn write_linear(
    graph: &mut dyn Graph,
    i: usize,
    name: &str,
    w: &Matrix,
    bias: Option<&[f32]>,
    sink: &mut dyn Sink,
) -> Result<()> {
    let values: Vec<f32> = w.data().iter().map(|&v| v as f32).collect();
    let (rows, cols) = (w.rows(), w.cols());
    let layer = graph.linear_mut(i, name)?;
    let device = layer.weight().device().clone();
    let weight = Tensor::from_vec(values.clone(), (rows, cols), &device)?;
    let bias_tensor = match bias {
        Some(b) => Some(Tensor::from_vec(b.to_vec(), rows, &device)?),
        None => None,
    };
    layer.reshape(weight, bias_tensor)?;
    sink.put_tensor(&format!("{name}.weight"), &[rows, cols], &values)?;
    if let Some(b) = bias {
        sink.put_tensor(&format!("{name}.bias"), &[rows], b)?;
    }
    Ok(())
}

/// What [`prune_structured`] changed in the config: each field and its
/// new (uniform) value.
pub type ConfigChanges = BTreeMap<&'static str, usize>;

/// The config fields a span's pruning sets: each counting field scaled by
/// the groups left, and the fields to state explicitly.
fn span_changes(span: &StructureSpan, remove: usize) -> Vec<(&'static str, usize)> {
    let left = span.layout.count() - remove * span.layout.sets();
    span.config
        .iter()
        .map(|&(field, unit)| (field, left * unit))
        .chain(span.fixed.iter().copied())
        .collect()
}

/// Records `new` into `changes`, refusing a value another block set
/// differently.
fn merge_changes(changes: &mut ConfigChanges, new: &[(&'static str, usize)]) -> Result<()> {
    for &(field, value) in new {
        if let Some(&other) = changes.get(field)
            && other != value
        {
            return Err(Error::request(format!(
                "the blocks would differ in {field} ({other} and {value}): structured pruning \
                 keeps widths uniform"
            )));
        }
        changes.insert(field, value);
    }
    Ok(())
}

/// Prunes the structures `settings` asks for from every block of `graph`
/// (weights from `weights`), with calibration `samples` where the method
/// needs them, writing the new tensors to `sink`. Returns the report and
/// the config fields to change.
///
/// Within a block, KV groups go first, then query heads, then MLP
/// channels. The statistics are those of the dense block: a head's
/// output does not depend on the other heads, so after KV groups go the
/// heads' statistics are the kept columns' own; the MLP's input
/// statistics are taken before the attention was pruned (as unstructured
/// methods prune every layer of a block from one recording).
pub fn prune_structured(
    dense: &dyn Dense,
    graph: &mut dyn Graph,
    weights: &dyn Weights,
    samples: Option<&[Vec<u32>]>,
    settings: &StructuredSettings,
    sink: &mut dyn Sink,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Report, ConfigChanges)> {
    settings.check()?;
    if graph.blocks() == 0 {
        return Err(Error::request("the model has no block to prune"));
    }
    if settings.experts.is_some() {
        return Err(Error::request(
            "experts=F renames and drops tensors: it runs on a model folder \
             (prune_folder_structured)",
        ));
    }
    // Check every block's request before any work.
    for i in 0..graph.blocks() {
        requested(graph, i, settings)?;
    }
    let mut changes = ConfigChanges::new();
    let mut step = |graph: &mut dyn Graph,
                    i: usize,
                    recorded: Option<&Recorded>,
                    report: &mut Report,
                    sink: &mut dyn Sink,
                    progress: &mut dyn FnMut(Progress<'_>)|
     -> Result<()> {
        let parts = settings.parts.len();
        let mut block_changes = ConfigChanges::new();
        // Per consuming layer, its current columns' original indices.
        let mut columns: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (done, (&structure, &fraction)) in settings.parts.iter().enumerate() {
            // Spans read afresh: an earlier structure may have changed them.
            let span = find_span(&graph.structures(i), structure)?;
            let remove = removed_count(structure, fraction, span.layout.per_set())?;
            let selected;
            let stats = match recorded {
                Some(r) => {
                    let all = r.stats(&span.consumer).ok_or_else(|| {
                        Error::request(format!("layer {} saw no calibration input", span.consumer))
                    })?;
                    match columns.get(&span.consumer) {
                        Some(cols) => {
                            selected = all.select_columns(cols)?;
                            Some(&selected)
                        }
                        None => Some(all),
                    }
                }
                None => None,
            };
            let layer = prune_span(dense, graph, i, &span, remove, stats, settings, sink)?;
            let width = span.layout.width();
            let kept: Vec<usize> = (0..span.layout.count())
                .filter(|g| {
                    layer
                        .groups
                        .as_ref()
                        .is_some_and(|r| !r.removed.contains(g))
                })
                .flat_map(|g| g * width..(g + 1) * width)
                .collect();
            let before = columns
                .remove(&span.consumer)
                .unwrap_or_else(|| (0..span.layout.total_columns()).collect());
            columns.insert(
                span.consumer.clone(),
                kept.iter().map(|&c| before[c]).collect(),
            );
            for (field, value) in span_changes(&span, remove) {
                block_changes.insert(field, value);
            }
            report.solve_seconds += layer.seconds;
            report.layers.push(layer);
            progress(Progress::Layer {
                name: &span.consumer,
                done: done + 1,
                of: parts,
            });
        }
        let block_changes: Vec<_> = block_changes.into_iter().collect();
        merge_changes(&mut changes, &block_changes)
    };
    let consumers = |graph: &dyn Graph, i: usize| -> Result<Vec<String>> {
        Ok(requested(graph, i, settings)?
            .into_iter()
            .map(|(s, _)| s.consumer)
            .collect())
    };
    let report = match (samples, settings.method.is_calibrated()) {
        (Some(samples), _) => {
            let mut names = std::collections::HashSet::new();
            for i in 0..graph.blocks() {
                names.extend(consumers(graph, i)?);
            }
            let wanted = move |name: &str| names.contains(name);
            let calibration = Calibration {
                dense,
                // Every method's reconstruction error is reported, so the
                // Gram matrix is kept even for the plain score methods.
                gram: true,
                wanted: &wanted,
                stats: StatsPlace::Auto,
            };
            calibration.run(
                graph,
                weights,
                samples,
                progress,
                &mut |graph, i, recorded, report, progress| {
                    step(graph, i, Some(recorded), report, sink, progress)
                },
            )?
        }
        (None, false) => {
            let mut report = Report::default();
            let blocks = graph.blocks();
            for i in 0..blocks {
                progress(Progress::Block { index: i, blocks });
                graph.load(Part::Block(i), weights)?;
                step(graph, i, None, &mut report, sink, progress)?;
                graph.release(Part::Block(i));
            }
            report
        }
        (None, true) => {
            return Err(Error::request(format!(
                "{} needs calibration text: give a file with one sample per line",
                settings.method.name()
            )));
        }
    };
    Ok((report, changes))
}

/// `config` with each changed field set to its new count: the config of
/// the pruned model.
pub fn updated_config(config: &Value, changes: &ConfigChanges) -> Result<Value> {
    let mut config = config.clone();
    let object = config
        .as_object_mut()
        .ok_or_else(|| Error::request("config.json is not a JSON object"))?;
    for (&field, &count) in changes {
        object.insert(field.to_string(), count.into());
    }
    Ok(config)
}

/// Prunes the model in `folder` (its `graph`, computing on `device`)
/// structurally into `writer`, which copies the folder, and gives the
/// writer the updated config. Blocks go first (judged on the dense model),
/// then the other structures from the blocks left.
#[allow(clippy::too_many_arguments)]
pub fn prune_folder_structured(
    dense: &dyn Dense,
    folder: &ModelFolder,
    graph: &mut dyn Graph,
    device: &Device,
    samples: Option<&[Vec<u32>]>,
    settings: &StructuredSettings,
    writer: &mut FolderWriter<'_>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Report> {
    settings.check()?;
    if let Some(fraction) = settings.experts {
        if settings.method.is_calibrated() && samples.is_none() {
            return Err(Error::request(format!(
                "{} needs calibration text: give a file with one sample per line",
                settings.method.name()
            )));
        }
        let samples = samples.filter(|_| settings.method.is_calibrated());
        return prune_experts(dense, folder, graph, samples, fraction, writer);
    }
    let Some(n) = settings.blocks else {
        let (report, changes) =
            prune_structured(dense, graph, folder, samples, settings, writer, progress)?;
        writer.set_config(updated_config(folder.config(), &changes)?);
        return Ok(report);
    };
    let samples = samples.ok_or_else(|| {
        Error::request(
            "blocks=N judges each block on calibration text: give a file with one sample per line",
        )
    })?;
    // Refuse a structure the model lacks before the blocks are measured.
    for i in 0..graph.blocks() {
        requested(graph, i, settings)?;
    }
    let importance = block_importance(graph, folder, samples, settings.block_score)?;
    let removed = least_important(&importance, n)?;
    let map = BlockMap::new(graph, &removed)?;
    writer.restructure(|name| map.rename(name))?;
    let config = config_without(folder.config(), &removed)?;
    let removal = BlockRemoval {
        score: settings.block_score,
        importance,
        removed,
    };
    if settings.parts.is_empty() {
        writer.set_config(config);
        return Ok(Report {
            samples: samples.len(),
            tokens: samples.iter().map(Vec::len).sum(),
            blocks: Some(removal),
            ..Report::default()
        });
    }
    let mut smaller = open_graph_with(folder, &config, device)?;
    let weights = Renamed {
        inner: folder,
        map: &map,
    };
    let (mut report, changes) = prune_structured(
        dense,
        &mut *smaller,
        &weights,
        Some(samples),
        settings,
        writer,
        progress,
    )?;
    writer.set_config(updated_config(&config, &changes)?);
    report.blocks = Some(removal);
    Ok(report)
}

/// Which groups of which layer went, as JSON (`{"layer": [groups]}`), for
/// the output's metadata.
pub fn removed_json(report: &Report) -> String {
    let map: serde_json::Map<String, Value> = report
        .layers
        .iter()
        .filter_map(|l| {
            l.groups
                .as_ref()
                .map(|g| (l.name.clone(), Value::from(g.removed.clone())))
        })
        .collect();
    Value::Object(map).to_string()
}
