//! Sequential calibration, block by block, as the official Wanda and
//! SparseGPT run it: the calibration samples' hidden states are held at a
//! block's input; the dense block runs on them, recording every linear
//! layer's input statistics; those layers are pruned; the pruned block runs
//! again to give the next block its inputs. Only one block's weights, its
//! statistics and the hidden states are in memory at a time.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use prunus_core::methods::layerwise::{
    LayerStats, ObsConfig, SparseGptConfig, Target, WandaLayer, WandaScope, obs,
    reconstruction_error, sparsegpt, wanda,
};
use prunus_core::{Backend, Dense, Granularity, Layer, Mask, Matrix, PruneConfig, Shape, prune};

use crate::blocks::BlockRemoval;
use crate::device::{device_memory_used, map_on};
use crate::error::{Error, Result};
use crate::folder::{FolderWriter, GlobalMagnitude, ModelFolder, magnitude_global};
use crate::graph::{Graph, Part, Structure, Weights};
use crate::record::{Recorded, Recorder, StatsPlace};

/// The layer-wise method that prunes each linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The smallest `|W|` go, in each layer or (with
    /// [`Settings::global`]) over all pruned layers together; calibration,
    /// when given, only measures the result.
    Magnitude,
    /// Wanda: `|W| · ‖X‖` per output row, no update.
    Wanda,
    /// SparseGPT with its weight update.
    SparseGpt,
    /// Layer-wise OBS (exact per row, or in column blocks) with swaps.
    Obs,
}

impl Method {
    /// The method's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Magnitude => "magnitude",
            Method::Wanda => "wanda",
            Method::SparseGpt => "sparsegpt",
            Method::Obs => "obs",
        }
    }

    /// Whether the method needs calibration data.
    pub fn is_calibrated(self) -> bool {
        self != Method::Magnitude
    }
}

/// How [`prune_model`] runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The method.
    pub method: Method,
    /// What to remove from each layer.
    pub target: Target,
    /// SparseGPT's column block (128 by default); for OBS `Some(b)` runs
    /// in column blocks of `b` and `None` solves each row exactly.
    pub block: Option<usize>,
    /// Dampening as a fraction of the mean diagonal of `H` (0.01).
    pub dampening: f64,
    /// OBS swaps per row and block after the greedy.
    pub swaps: usize,
    /// Magnitude only: one threshold over every pruned layer, removing
    /// exactly `round(s · n)` of their `n` weights together (a sparsity
    /// target only), rather than the target in each layer.
    pub global: bool,
}

impl Settings {
    /// A method and target with the official defaults: SparseGPT's blocks
    /// of 128, exact OBS with 8 swaps, 1% dampening.
    pub fn new(method: Method, target: Target) -> Settings {
        Settings {
            method,
            target,
            block: None,
            dampening: prunus_core::methods::layerwise::PERCDAMP,
            swaps: 8,
            global: false,
        }
    }

    /// Refuses settings no method honours, before any work.
    pub fn check(&self) -> Result<()> {
        if let Target::Sparsity(s) = self.target
            && !(0.0..=1.0).contains(&s)
        {
            return Err(prunus_core::Error::SparsityOutOfRange { value: s }.into());
        }
        if self.global && self.method != Method::Magnitude {
            return Err(Error::request(format!(
                "{} prunes each layer to the target; a global threshold is for magnitude only",
                self.method.name()
            )));
        }
        if self.global && matches!(self.target, Target::NofM(_)) {
            return Err(Error::request(
                "an N:M pattern holds in every row of every layer; it has no global scope",
            ));
        }
        if !(self.dampening.is_finite() && self.dampening >= 0.0) {
            return Err(Error::request(format!(
                "a dampening of {}: give a non-negative fraction of the mean diagonal of H",
                self.dampening
            )));
        }
        if self.block == Some(0) {
            return Err(Error::request("a column block of 0: give at least 1"));
        }
        Ok(())
    }
}

/// What happened to one linear layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerReport {
    /// The checkpoint name of the layer (its weight is `<name>.weight`).
    pub name: String,
    /// The block it belongs to.
    pub block: usize,
    /// `[out, in]`.
    pub shape: [usize; 2],
    /// Weights pruned.
    pub pruned: u64,
    /// `‖(W − Ŵ) Xᵀ‖²_F` on the calibration inputs (none without
    /// calibration).
    pub error: Option<f64>,
    /// The same relative to the layer's output energy `‖W Xᵀ‖²_F`.
    pub relative_error: Option<f64>,
    /// Seconds spent choosing the mask and updating the weights.
    pub seconds: f64,
    /// For structured pruning, the groups of this (consuming) layer and
    /// which of them went; `None` for unstructured pruning.
    pub groups: Option<GroupReport>,
    /// The calibration tokens (rows) the layer's input statistics hold
    /// (`None` without calibration): every token for most layers, those
    /// routed to it for a mixture's expert. An expert with 0 was never
    /// reached by the calibration text, and was pruned by magnitude.
    pub inputs: Option<u64>,
}

/// What structured pruning removed from one consuming layer.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupReport {
    /// The structure.
    pub structure: Structure,
    /// Groups before.
    pub before: usize,
    /// The groups removed, ascending.
    pub removed: Vec<usize>,
}

/// What happened to a model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Every pruned layer, in the order they were pruned.
    pub layers: Vec<LayerReport>,
    /// Calibration samples and their tokens.
    pub samples: usize,
    /// Tokens in the calibration samples.
    pub tokens: usize,
    /// Seconds running the graph (dense with recording, then pruned).
    pub forward_seconds: f64,
    /// Seconds in the layer-wise solves.
    pub solve_seconds: f64,
    /// The most bytes of layer statistics held at once.
    pub stats_bytes: u64,
    /// GPU memory in use after each block's recording (the block's
    /// weights, the statistics and the hidden states; other processes'
    /// memory included), the most seen; `None` on the CPU.
    pub device_bytes: Option<u64>,
    /// Whole blocks removed by structured pruning, if any.
    pub blocks: Option<BlockRemoval>,
}

impl Report {
    /// The layers the calibration text never reached (experts no token
    /// was routed to), pruned by magnitude instead.
    pub fn unreached(&self) -> usize {
        self.layers.iter().filter(|l| l.inputs == Some(0)).count()
    }
}

/// Progress of [`prune_model`], for a bar per block.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// A block starts.
    Block {
        /// Its index.
        index: usize,
        /// How many there are.
        blocks: usize,
    },
    /// A layer of the current block was pruned.
    Layer {
        /// Its name.
        name: &'a str,
        /// Layers of the block done, of `of`.
        done: usize,
        /// Layers of the block to prune.
        of: usize,
    },
}

/// Where the pruned weights go, layer by layer (the output folder's
/// writer, or a test's map).
pub trait Sink {
    /// Takes the pruned weights of `name` (`<name>.weight`), `[out, in]`
    /// row-major.
    fn put(&mut self, name: &str, values: &[f32]) -> Result<()>;

    /// Takes the tensor `tensor` (its full checkpoint name) with a new
    /// `shape`: a structured pruning's smaller weights and biases.
    fn put_tensor(&mut self, tensor: &str, shape: &[usize], values: &[f32]) -> Result<()>;
}

/// The pieces [`prune_model`] works with.
pub struct Job<'a, B: ?Sized> {
    /// The backend for Wanda's scores and masks.
    pub backend: &'a B,
    /// Dense linear algebra for the statistics and the solves.
    pub dense: &'a dyn Dense,
    /// The device candle runs the graph on.
    pub device: &'a Device,
    /// Which of the blocks' linear layers to prune, by name.
    pub wanted: &'a dyn Fn(&str) -> bool,
    /// Where the calibration statistics accumulate ([`StatsPlace::Auto`]:
    /// on the GPU when `device` is one, in f32, else on the host in f64).
    pub stats: StatsPlace,
}

/// Prunes every wanted linear layer of `graph`, block by block, on the
/// calibration `samples` (token sequences); the weights come from
/// `weights` and the pruned ones go to `sink` and into the graph. Parts are
/// loaded as they are needed and released after. Global magnitude needs
/// the whole model before the first block: use [`prune_folder`].
pub fn prune_model<B>(
    job: &Job<'_, B>,
    graph: &mut dyn Graph,
    weights: &dyn Weights,
    samples: &[Vec<u32>],
    settings: &Settings,
    sink: &mut dyn Sink,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Report>
where
    B: Backend + ?Sized,
{
    if settings.global {
        return Err(Error::request(
            "global magnitude chooses its threshold over the whole model: use prune_folder",
        ));
    }
    let run = Run {
        job,
        settings,
        given: None,
    };
    run.blocks(graph, weights, samples, sink, progress)
}

/// One calibrated run: what [`prune_model`] and [`prune_folder`] share.
struct Run<'a, 'j, B: ?Sized> {
    job: &'a Job<'j, B>,
    settings: &'a Settings,
    /// Masks chosen before the run (global magnitude), by layer name.
    given: Option<&'a HashMap<String, Mask>>,
}

impl<B: Backend + ?Sized> Run<'_, '_, B> {
    fn blocks(
        &self,
        graph: &mut dyn Graph,
        weights: &dyn Weights,
        samples: &[Vec<u32>],
        sink: &mut dyn Sink,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Report> {
        let (job, settings) = (self.job, self.settings);
        settings.check()?;
        let calibration = Calibration {
            dense: job.dense,
            gram: true,
            wanted: job.wanted,
            stats: job.stats,
        };
        calibration.run(
            graph,
            weights,
            samples,
            progress,
            &mut |graph, i, recorded, report, progress| {
                let names: Vec<String> = graph
                    .linears(i)?
                    .iter()
                    .map(|l| l.name().to_string())
                    .filter(|n| (job.wanted)(n))
                    .collect();
                for (done, name) in names.iter().enumerate() {
                    let layer = graph.linear_mut(i, name)?;
                    let (out, cols) = layer.weight().dims2()?;
                    let w: Vec<f32> = layer.weight().flatten_all()?.to_vec1()?;
                    let clock = Instant::now();
                    // (pruned, count, seconds, (error, relative), tokens)
                    let (pruned, count, seconds, errors, inputs) = match recorded.stats(name) {
                        // An expert no calibration token was routed to:
                        // magnitude, the one method needing no inputs.
                        None => {
                            let (pruned, count) = match self.given {
                                Some(_) => {
                                    let empty = LayerStats::new(cols, false)?;
                                    self.layer(name, &w, out, cols, &empty)?
                                }
                                None => {
                                    let target = self.settings.target;
                                    let mask =
                                        magnitude_mask(job.backend, name, &w, out, cols, target)?;
                                    masked(name, &w, &mask)?
                                }
                            };
                            (pruned, count, clock.elapsed().as_secs_f64(), None, 0)
                        }
                        Some(stats) => {
                            let (pruned, count) = self.layer(name, &w, out, cols, stats)?;
                            let seconds = clock.elapsed().as_secs_f64();
                            report.solve_seconds += seconds;
                            let original = Matrix::from_f32(out, cols, &w)?;
                            let updated = Matrix::from_f32(out, cols, &pruned)?;
                            let error =
                                reconstruction_error(job.dense, &original, &updated, stats)?;
                            let zero = Matrix::zeros(out, cols);
                            let energy = reconstruction_error(job.dense, &original, &zero, stats)?;
                            let relative = if energy > 0.0 { error / energy } else { 0.0 };
                            (
                                pruned,
                                count,
                                seconds,
                                Some((error, relative)),
                                stats.rows(),
                            )
                        }
                    };
                    layer.set_weight(Tensor::from_vec(pruned.clone(), (out, cols), job.device)?)?;
                    sink.put(name, &pruned)?;
                    report.layers.push(LayerReport {
                        name: name.clone(),
                        block: i,
                        shape: [out, cols],
                        pruned: count,
                        error: errors.map(|e| e.0),
                        relative_error: errors.map(|e| e.1),
                        seconds,
                        groups: None,
                        inputs: Some(inputs),
                    });
                    progress(Progress::Layer {
                        name,
                        done: done + 1,
                        of: names.len(),
                    });
                }
                Ok(())
            },
        )
    }

    /// One layer's pruned weights, `[out, in]` row-major, exactly `+0.0` where
    /// pruned, and how many the mask prunes.
    fn layer(
        &self,
        name: &str,
        w: &[f32],
        out: usize,
        cols: usize,
        stats: &LayerStats,
    ) -> Result<(Vec<f32>, u64)> {
        let (job, settings) = (self.job, self.settings);
        match settings.method {
            Method::Magnitude => {
                let mask = match self.given {
                    Some(masks) => masks.get(name).cloned().ok_or_else(|| {
                        Error::request(format!("no mask was chosen for layer {name}"))
                    })?,
                    None => magnitude_mask(job.backend, name, w, out, cols, settings.target)?,
                };
                masked(name, w, &mask)
            }
            Method::Wanda => {
                let tensor = job.backend.upload(w, &Shape::matrix(out, cols)?)?;
                let layer = WandaLayer {
                    name,
                    weights: &tensor,
                    stats,
                };
                let masks = wanda(job.backend, &[layer], settings.target, WandaScope::Row)?;
                masked(name, w, &masks[0])
            }
            Method::SparseGpt => {
                let config = SparseGptConfig::new(settings.target)
                    .block(settings.block.unwrap_or(128))
                    .percdamp(settings.dampening);
                let m = Matrix::from_f32(out, cols, w)?;
                Ok(updated(sparsegpt(job.dense, &m, stats, &config)?))
            }
            Method::Obs => {
                let config = ObsConfig::new(settings.target)
                    .block(settings.block)
                    .swaps(settings.swaps)
                    .percdamp(settings.dampening);
                let m = Matrix::from_f32(out, cols, w)?;
                Ok(updated(obs(job.dense, &m, stats, &config)?))
            }
        }
    }
}

/// What a block's pruning step is given: the graph (block `i` loaded),
/// the block's index, the statistics its dense run recorded, the report
/// and the progress callback.
pub(crate) type BlockStep<'s> = dyn FnMut(&mut dyn Graph, usize, &Recorded, &mut Report, &mut dyn FnMut(Progress<'_>)) -> Result<()>
    + 's;

/// Sequential calibration, block by block: the one loop every calibrated
/// pruning (unstructured and structured) runs.
pub(crate) struct Calibration<'a> {
    /// Dense linear algebra for the statistics.
    pub(crate) dense: &'a dyn Dense,
    /// Whether the statistics keep the Gram matrix.
    pub(crate) gram: bool,
    /// Which linear layers to record.
    pub(crate) wanted: &'a dyn Fn(&str) -> bool,
    /// Where the statistics accumulate.
    pub(crate) stats: StatsPlace,
}

impl Calibration<'_> {
    /// Embeds `samples`, then for every block: loads it, runs it dense on
    /// the held hidden states recording its layers' inputs, lets `step`
    /// prune it, runs the pruned block to give the next one its inputs,
    /// and releases it.
    pub(crate) fn run(
        &self,
        graph: &mut dyn Graph,
        weights: &dyn Weights,
        samples: &[Vec<u32>],
        progress: &mut dyn FnMut(Progress<'_>),
        step: &mut BlockStep<'_>,
    ) -> Result<Report> {
        if samples.is_empty() || samples.iter().any(|s| s.is_empty()) {
            return Err(Error::request("no calibration sample (or an empty one)"));
        }
        let mut report = Report {
            samples: samples.len(),
            tokens: samples.iter().map(Vec::len).sum(),
            ..Report::default()
        };
        let clock = Instant::now();
        let mut hidden = embed_all(graph, weights, samples)?;
        report.forward_seconds += clock.elapsed().as_secs_f64();
        let blocks = graph.blocks();
        for i in 0..blocks {
            progress(Progress::Block { index: i, blocks });
            graph.load(Part::Block(i), weights)?;
            let clock = Instant::now();
            let mut recorder =
                Recorder::new(self.dense, self.gram, self.wanted).with_place(self.stats);
            for h in &hidden {
                graph.block(i, h, Some(&mut recorder))?;
            }
            report.forward_seconds += clock.elapsed().as_secs_f64();
            // The device holds the block, the statistics and the hidden
            // states now: its most.
            let device = hidden.first().map(|h| h.device().clone());
            let used = device.as_ref().and_then(device_memory_used);
            report.device_bytes = report.device_bytes.max(used);
            let recorded = recorder.finish()?;
            report.stats_bytes = report.stats_bytes.max(recorded.bytes());
            step(graph, i, &recorded, &mut report, progress)?;
            drop(recorded);
            let clock = Instant::now();
            let g: &dyn Graph = graph;
            hidden = map_on(&g.device(), &hidden, |h| g.block(i, h, None))?;
            report.forward_seconds += clock.elapsed().as_secs_f64();
            graph.release(Part::Block(i));
        }
        Ok(report)
    }
}

/// The hidden states entering block 0 for every sample, the embeddings
/// loaded for it and released after.
pub(crate) fn embed_all(
    graph: &mut dyn Graph,
    weights: &dyn Weights,
    samples: &[Vec<u32>],
) -> Result<Vec<Tensor>> {
    graph.load(Part::Embeddings, weights)?;
    let hidden = samples
        .iter()
        .map(|s| graph.embed(s))
        .collect::<Result<_>>();
    graph.release(Part::Embeddings);
    hidden
}

/// `w` with the weights `mask` prunes set to `+0.0`, and their count.
fn masked(name: &str, w: &[f32], mask: &Mask) -> Result<(Vec<f32>, u64)> {
    if mask.len() != w.len() {
        return Err(Error::request(format!(
            "the mask of layer {name} has {} entries for {} weights",
            mask.len(),
            w.len()
        )));
    }
    let values = w
        .iter()
        .enumerate()
        .map(|(j, &v)| if mask.get(j) { v } else { 0.0 })
        .collect();
    Ok((values, mask.count_pruned()))
}

/// The magnitude mask of one `[out, cols]` layer: the target's share of
/// its smallest `|w|` (ties to the lowest index), or N:M along its rows.
pub fn magnitude_mask<B: Backend + ?Sized>(
    backend: &B,
    name: &str,
    w: &[f32],
    out: usize,
    cols: usize,
    target: Target,
) -> Result<Mask> {
    target.validate(name, cols)?;
    let tensor = backend.upload(w, &Shape::matrix(out, cols)?)?;
    let config = match target {
        Target::Sparsity(s) => PruneConfig::new(s).local(),
        Target::NofM(p) => PruneConfig::new(0.0).granularity(Granularity::NofM(p)),
        other => {
            return Err(Error::request(format!(
                "magnitude cannot prune to {other:?}"
            )));
        }
    };
    let mut masks = prune(backend, &[Layer::new(name, &tensor)], &config)?;
    Ok(masks.remove(0))
}

/// The updated weights in f32 and the count the mask prunes.
fn updated(pruned: prunus_core::methods::layerwise::Pruned) -> (Vec<f32>, u64) {
    (pruned.weights_f32(), pruned.mask.count_pruned())
}

impl Sink for FolderWriter<'_> {
    fn put(&mut self, name: &str, values: &[f32]) -> Result<()> {
        self.replace(&format!("{name}.weight"), values)
    }

    fn put_tensor(&mut self, tensor: &str, shape: &[usize], values: &[f32]) -> Result<()> {
        self.replace_reshaped(tensor, shape, values)
    }
}

/// The linear layers of `graph`'s blocks that `wanted` admits, block by
/// block in checkpoint order: what [`prune_folder`] prunes.
pub fn layer_names(graph: &dyn Graph, wanted: &dyn Fn(&str) -> bool) -> Vec<String> {
    (0..graph.blocks())
        .flat_map(|i| graph.linear_names(i))
        .filter(|n| wanted(n))
        .collect()
}

/// Prunes the model in `folder` (its `graph`) into `writer`, which copies
/// the folder: every linear layer of the blocks that `job.wanted` admits.
///
/// Calibrated methods run [`prune_model`] on `samples`. Magnitude needs no
/// samples: without them it streams one layer at a time (the global
/// threshold through [`GlobalMagnitude`], exact over shards), and with them
/// it also runs the blocks to report each layer's reconstruction error.
/// Fails when no layer is admitted or a calibrated method has no samples.
#[allow(clippy::too_many_arguments)]
pub fn prune_folder<B>(
    job: &Job<'_, B>,
    folder: &ModelFolder,
    graph: &mut dyn Graph,
    samples: Option<&[Vec<u32>]>,
    settings: &Settings,
    writer: &mut FolderWriter<'_>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Report>
where
    B: Backend + ?Sized,
{
    settings.check()?;
    let layers = layer_names(graph, job.wanted);
    if layers.is_empty() {
        return Err(Error::request(
            "no linear layer of the blocks is admitted: check --include and --exclude against \
             the tensor names (`prunus inspect` lists them)",
        ));
    }
    let weight_names: Vec<String> = layers.iter().map(|n| format!("{n}.weight")).collect();
    let global = match (settings.global, settings.target) {
        (true, Target::Sparsity(s)) => Some(s),
        _ => None,
    };
    match (samples, settings.method) {
        (Some(samples), _) => {
            let masks = match global {
                Some(s) => Some(global_masks(folder, &layers, &weight_names, s)?),
                None => None,
            };
            let run = Run {
                job,
                settings,
                given: masks.as_ref(),
            };
            run.blocks(graph, folder, samples, writer, progress)
        }
        (None, Method::Magnitude) => {
            let clock = Instant::now();
            let mut report = Report::default();
            let pruned = match global {
                Some(s) => magnitude_global(folder, &weight_names, s, writer)?,
                None => {
                    let mut out = Vec::with_capacity(layers.len());
                    for (name, weight) in layers.iter().zip(&weight_names) {
                        let w = folder.values(weight)?;
                        let [rows, cols] = matrix_shape(folder, weight)?;
                        let mask =
                            magnitude_mask(job.backend, name, &w, rows, cols, settings.target)?;
                        let (values, count) = masked(name, &w, &mask)?;
                        writer.replace(weight, &values)?;
                        out.push(crate::folder::Pruned {
                            name: weight.clone(),
                            numel: w.len() as u64,
                            pruned: count,
                        });
                    }
                    out
                }
            };
            report.solve_seconds = clock.elapsed().as_secs_f64();
            for (done, p) in pruned.iter().enumerate() {
                let name = p.name.strip_suffix(".weight").unwrap_or(&p.name);
                report.layers.push(LayerReport {
                    name: name.to_string(),
                    block: block_of(graph, name),
                    shape: matrix_shape(folder, &p.name)?,
                    pruned: p.pruned,
                    error: None,
                    relative_error: None,
                    seconds: 0.0,
                    groups: None,
                    inputs: None,
                });
                progress(Progress::Layer {
                    name,
                    done: done + 1,
                    of: pruned.len(),
                });
            }
            Ok(report)
        }
        (None, method) => Err(Error::request(format!(
            "{} needs calibration text: give a file with one sample per line",
            method.name()
        ))),
    }
}

/// The global magnitude masks of `layers`, by layer name: a weight is
/// pruned where the selection left it zero, so a weight that was already
/// zero counts as pruned even where the selection's tie rule kept it (the
/// written values are the same either way).
fn global_masks(
    folder: &ModelFolder,
    layers: &[String],
    weight_names: &[String],
    sparsity: f64,
) -> Result<HashMap<String, Mask>> {
    let selection = GlobalMagnitude::select(folder, weight_names, sparsity)?;
    let mut masks = HashMap::with_capacity(layers.len());
    selection.apply(folder, |weight, values, _| {
        let name = weight.strip_suffix(".weight").unwrap_or(weight);
        let [rows, cols] = matrix_shape(folder, weight)?;
        let mask = Mask::from_fn(Shape::matrix(rows, cols)?, |j| values[j] != 0.0);
        masks.insert(name.to_string(), mask);
        Ok(())
    })?;
    Ok(masks)
}

/// `[out, in]` of the weight tensor `name`.
fn matrix_shape(folder: &ModelFolder, name: &str) -> Result<[usize; 2]> {
    match folder.info(name).map(|t| t.shape.as_slice()) {
        Some(&[rows, cols]) => Ok([rows, cols]),
        Some(shape) => Err(Error::model(
            folder.dir().display(),
            format!("{name} has shape {shape:?}, not a linear layer's [out, in]"),
        )),
        None => Err(Error::model(
            folder.dir().display(),
            format!("no tensor called {name}"),
        )),
    }
}

/// The block whose linear layers include `name`.
fn block_of(graph: &dyn Graph, name: &str) -> usize {
    (0..graph.blocks())
        .find(|&i| graph.linear_names(i).iter().any(|n| n == name))
        .unwrap_or(0)
}
