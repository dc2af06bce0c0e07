//! Greedy forward selection of neurons and filters (METHODS.md §4), and
//! the backward-elimination baseline, driven through any [`Host`].
//!
//! [`run_forward`] builds each layer's kept set from empty, layers from
//! input to output. While a layer of `D` units is being selected its unit
//! `i` is scaled by `D · c_i / m`, `c_i` the times it was chosen and `m`
//! the steps so far (without replacement every `c_i` is 0 or 1, so the
//! scale is `D/|S|` on the selected units): the sub-layer is an average
//! over its units, as the full layer is over all of them. Each step
//!
//! 1. draws a mini-batch from the training split,
//! 2. draws up to `candidates` units (unselected ones without replacement,
//!    any unit with replacement),
//! 3. adds the one whose addition gives the lowest mini-batch loss (ties
//!    to the lowest unit index),
//!
//! until the [`Stop`] rule ends the layer. Under the accuracy rule a layer
//! that ends up with every unit (or at the step limit) is left unpruned.
//! After a pruned layer the host fine-tunes `fine_tune_steps` steps.
//!
//! [`run_backward`] is the baseline at given widths: each layer, in the
//! same order, keeps its units of largest L2 norm (weight rows), with the
//! same fine-tuning. Both leave the host with its selected unit scales
//! set, and return [`ForwardRun`], whose [`ForwardRun::selections`] feed
//! [`crate::methods::forward::compaction`].
//!
//! Mini-batches and candidates come from counter-based random numbers of
//! the seed and the global step, so a run is the same on every host that
//! evaluates the same way.

pub mod compaction;

use alloc::vec;
use alloc::vec::Vec;

use crate::contract::backend::Backend;
use crate::contract::error::{Error, Result};
use crate::contract::granularity::Granularity;
use crate::contract::random::hash;
use crate::host::{
    Capability, Evaluation, Host, Objective, ParameterKind, Samples, Split, require,
};
use crate::methods::forward::compaction::UnitSelection;
use crate::selection::config::PruneConfig;
use crate::selection::prune::prune;
use crate::selection::select::Layer;

/// Whether a unit can be chosen more than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Sampling {
    /// Each unit at most once; candidates are the unselected units (the
    /// official code).
    #[default]
    WithoutReplacement,
    /// A unit may be chosen again, weighting it by its count: the
    /// Frank–Wolfe multiset average of the paper's theory.
    WithReplacement,
}

/// When a layer's selection ends.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Stop {
    /// The paper's rule: once the step's mini-batch accuracy reaches
    /// `batch_fraction` of the layer's starting accuracy (on the
    /// evaluation samples), the evaluation samples are checked, and the
    /// layer ends when their accuracy is at least `1 − tolerance` of the
    /// starting one.
    Accuracy {
        /// Fraction of the starting accuracy the mini-batch must reach
        /// before the evaluation samples are checked (official: 0.95).
        batch_fraction: f64,
        /// Relative accuracy loss accepted (official: 0.02).
        tolerance: f64,
    },
    /// A width budget: each layer ends when it holds this many distinct
    /// units, one entry per selected layer.
    Width(Vec<usize>),
}

impl Stop {
    /// The official accuracy rule: batch fraction 0.95, tolerance 0.02.
    pub const OFFICIAL: Stop = Stop::Accuracy {
        batch_fraction: 0.95,
        tolerance: 0.02,
    };
}

/// A greedy forward selection run.
///
/// ```
/// use prunus_core::methods::forward::{ForwardConfig, Sampling, Stop};
/// let c = ForwardConfig::default().widths(vec![30, 10]).fine_tune_steps(5);
/// assert_eq!(c.candidates, 50);
/// assert_eq!(c.sampling, Sampling::WithoutReplacement);
/// assert_eq!(c.stop, Stop::Width(vec![30, 10]));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ForwardConfig {
    /// The weight parameters whose units are selected, input side first;
    /// empty for every prunable weight whose outputs another layer reads.
    pub layers: Vec<usize>,
    /// Units evaluated per step, at most (official: 50).
    pub candidates: usize,
    /// Mini-batch size (official: 128), drawn from the training split.
    pub batch: usize,
    /// The evaluation samples of the accuracy rule, and of the records.
    pub evaluation: Samples,
    /// With or without replacement.
    pub sampling: Sampling,
    /// When a layer ends.
    pub stop: Stop,
    /// Fine-tuning steps after each pruned layer (0: none).
    pub fine_tune_steps: usize,
    /// The most steps per layer; `None` for 4 × the layer's units (without
    /// replacement a layer is complete after as many steps as units).
    pub max_steps: Option<usize>,
    /// The seed of mini-batches and candidates.
    pub seed: u64,
}

impl Default for ForwardConfig {
    /// The official settings: 50 candidates, batches of 128, the accuracy
    /// rule on the first 1,000 validation samples, without replacement, no
    /// fine-tuning.
    fn default() -> Self {
        ForwardConfig {
            layers: Vec::new(),
            candidates: 50,
            batch: 128,
            evaluation: Samples::first(Split::Validation, 1000),
            sampling: Sampling::WithoutReplacement,
            stop: Stop::OFFICIAL,
            fine_tune_steps: 0,
            max_steps: None,
            seed: 0,
        }
    }
}

impl ForwardConfig {
    /// The same run over these weight parameters.
    pub fn layers(mut self, layers: Vec<usize>) -> Self {
        self.layers = layers;
        self
    }

    /// The same run with `candidates` per step.
    pub fn candidates(mut self, candidates: usize) -> Self {
        self.candidates = candidates;
        self
    }

    /// The same run with mini-batches of `batch`.
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// The same run judged on `evaluation`.
    pub fn evaluation(mut self, evaluation: Samples) -> Self {
        self.evaluation = evaluation;
        self
    }

    /// The same run sampling as `sampling` says.
    pub fn sampling(mut self, sampling: Sampling) -> Self {
        self.sampling = sampling;
        self
    }

    /// The same run with the stop rule `stop`.
    pub fn stop(mut self, stop: Stop) -> Self {
        self.stop = stop;
        self
    }

    /// The same run with a width budget per layer.
    pub fn widths(self, widths: Vec<usize>) -> Self {
        self.stop(Stop::Width(widths))
    }

    /// The same run fine-tuning `steps` after each pruned layer.
    pub fn fine_tune_steps(mut self, steps: usize) -> Self {
        self.fine_tune_steps = steps;
        self
    }

    /// The same run with at most `steps` steps per layer.
    pub fn max_steps(mut self, steps: usize) -> Self {
        self.max_steps = Some(steps);
        self
    }

    /// The same run with another seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Why a layer's selection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LayerEnding {
    /// The accuracy rule fired.
    Accuracy,
    /// The width budget was reached.
    Width,
    /// Every unit was selected before the rule fired: the layer is left
    /// unpruned.
    AllUnits,
    /// The step limit came first: the layer is left unpruned.
    StepLimit,
}

/// One step of a layer's selection.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord {
    /// The weight parameter of the layer.
    pub parameter: usize,
    /// The step within the layer, from 0.
    pub step: usize,
    /// The mini-batch.
    pub batch: Samples,
    /// The units evaluated, in the order drawn.
    pub candidates: Vec<usize>,
    /// The unit added.
    pub unit: usize,
    /// The mini-batch loss and accuracy with it added.
    pub chosen: Evaluation,
    /// Distinct units selected after the step.
    pub selected: usize,
    /// The evaluation samples, when the accuracy rule checked them.
    pub evaluation: Option<Evaluation>,
}

/// How one layer ended up.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerRecord {
    /// The weight parameter of the layer.
    pub parameter: usize,
    /// Its units before selection.
    pub units: usize,
    /// Units kept (all of them when left unpruned).
    pub kept: usize,
    /// Steps taken (0 for backward elimination).
    pub steps: usize,
    /// Why it ended.
    pub ending: LayerEnding,
    /// The evaluation samples before the layer was touched.
    pub start: Evaluation,
    /// The evaluation samples after selection, before fine-tuning.
    pub selected: Evaluation,
    /// The evaluation samples after fine-tuning, when it ran.
    pub fine_tuned: Option<Evaluation>,
    /// The unit scales left on the host; `None` when unpruned.
    pub scales: Option<Vec<f32>>,
}

/// What a run did, layer by layer.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ForwardRun {
    /// One record per selected layer, in order.
    pub layers: Vec<LayerRecord>,
}

impl ForwardRun {
    /// The pruned layers' selections (units with a non-zero scale stay,
    /// scales folded), for [`crate::methods::forward::compaction`].
    pub fn selections(&self) -> Vec<UnitSelection> {
        self.layers
            .iter()
            .filter_map(|l| {
                l.scales
                    .as_ref()
                    .map(|s| UnitSelection::from_scales(l.parameter, s.clone()))
            })
            .collect()
    }

    /// Units kept per selected layer, in order.
    pub fn widths(&self) -> Vec<usize> {
        self.layers.iter().map(|l| l.kept).collect()
    }
}

/// Sees a run as it goes (progress, traces).
pub trait Observer {
    /// Called after every selection step.
    fn on_step(&mut self, step: &StepRecord) {
        let _ = step;
    }

    /// Called after every layer.
    fn on_layer(&mut self, layer: &LayerRecord) {
        let _ = layer;
    }
}

/// An observer that sees nothing.
impl Observer for () {}

/// Random-number streams of a run.
const STREAM_BATCH: u32 = 0xF0_0001;
const STREAM_CANDIDATE: u32 = 0xF0_0002;

/// Runs greedy forward selection on `host` as `config` says. The host is
/// left with the selected unit scales set (and fine-tuned, when asked).
/// Needs evaluation and unit scales, and training when fine-tuning.
pub fn run_forward<H, O>(
    host: &mut H,
    config: &ForwardConfig,
    observer: &mut O,
) -> Result<ForwardRun>
where
    H: Host + ?Sized,
    O: Observer + ?Sized,
{
    let layers = checked_layers(host, config)?;
    let train = host.split_len(Split::Train)?;
    if train == 0 {
        return Err(Error::EmptyTensor {
            layer: "training split (no sample to draw mini-batches from)".into(),
        });
    }
    let batch = config.batch.min(train);
    let mut run = ForwardRun::default();
    let mut global_step = 0u64;
    for (li, &parameter) in layers.iter().enumerate() {
        let units = host.parameters()[parameter].units();
        host.set_unit_scales(parameter, None)?;
        let start = host.evaluate(&Objective::new(config.evaluation))?;
        let mut counts = vec![0u32; units];
        let mut steps = 0usize;
        let mut selected = 0usize;
        let limit = config.max_steps.unwrap_or(4 * units);
        let ending = loop {
            if let Stop::Width(w) = &config.stop
                && selected == w[li]
            {
                break LayerEnding::Width;
            }
            if selected == units {
                break LayerEnding::AllUnits;
            }
            if steps == limit {
                break LayerEnding::StepLimit;
            }
            let first = draw_below(config.seed, STREAM_BATCH, global_step, train - batch + 1);
            let samples = Samples {
                split: Split::Train,
                first,
                count: Some(batch),
            };
            let pool: Vec<usize> = match config.sampling {
                Sampling::WithoutReplacement => (0..units).filter(|&i| counts[i] == 0).collect(),
                Sampling::WithReplacement => (0..units).collect(),
            };
            let candidates = draw_candidates(config.seed, global_step, pool, config.candidates);
            let scale_sets: Vec<Vec<f32>> = candidates
                .iter()
                .map(|&c| {
                    counts[c] += 1;
                    let s = scales(&counts, steps + 1);
                    counts[c] -= 1;
                    s
                })
                .collect();
            let evals =
                host.evaluate_unit_scales(parameter, &scale_sets, &Objective::new(samples))?;
            crate::contract::check::same_len(
                "candidate evaluations",
                candidates.len(),
                evals.len(),
            )?;
            let mut best = 0;
            for (k, e) in evals.iter().enumerate() {
                if !e.loss.is_finite() {
                    return Err(Error::NonFinite {
                        what: "candidate loss",
                    });
                }
                let (l, b) = (e.loss, evals[best].loss);
                if l < b || (l == b && candidates[k] < candidates[best]) {
                    best = k;
                }
            }
            let unit = candidates[best];
            counts[unit] += 1;
            if counts[unit] == 1 {
                selected += 1;
            }
            steps += 1;
            global_step += 1;
            host.set_unit_scales(parameter, Some(&scales(&counts, steps)))?;
            let chosen = evals[best];
            let mut evaluation = None;
            let mut fired = false;
            if let Stop::Accuracy {
                batch_fraction,
                tolerance,
            } = config.stop
                && chosen.accuracy >= batch_fraction * start.accuracy
            {
                let e = host.evaluate(&Objective::new(config.evaluation))?;
                fired = e.accuracy >= (1.0 - tolerance) * start.accuracy;
                evaluation = Some(e);
            }
            observer.on_step(&StepRecord {
                parameter,
                step: steps - 1,
                batch: samples,
                candidates,
                unit,
                chosen,
                selected,
                evaluation,
            });
            if fired {
                break LayerEnding::Accuracy;
            }
        };
        let pruned = matches!(ending, LayerEnding::Accuracy | LayerEnding::Width);
        let scales = pruned.then(|| scales(&counts, steps));
        let record = finish_layer(host, config, parameter, units, steps, ending, start, scales)?;
        observer.on_layer(&record);
        run.layers.push(record);
    }
    Ok(run)
}

/// Runs backward elimination on `host`: each layer of `config.layers`, in
/// order, keeps the units of largest L2 norm of its weight rows (ties: the
/// lowest index goes first), as many as `config.stop`'s widths say (it
/// must be [`Stop::Width`]), then fine-tunes as forward selection does.
/// Kept units get scale 1, removed ones 0.
pub fn run_backward<B, H, O>(
    backend: &B,
    host: &mut H,
    config: &ForwardConfig,
    observer: &mut O,
) -> Result<ForwardRun>
where
    B: Backend + ?Sized,
    H: Host + ?Sized,
    O: Observer + ?Sized,
{
    let Stop::Width(widths) = &config.stop else {
        return Err(Error::InvalidArgument {
            what: "backward elimination stop rule",
            expected: "a width budget per layer",
        });
    };
    let layers = checked_layers(host, config)?;
    let mut run = ForwardRun::default();
    for (&parameter, &width) in layers.iter().zip(widths) {
        let p = host.parameters()[parameter].clone();
        let units = p.units();
        host.set_unit_scales(parameter, None)?;
        let start = host.evaluate(&Objective::new(config.evaluation))?;
        let weights = host.weights(parameter)?;
        let tensor = backend.upload(&weights, &p.shape)?;
        let removed = units - width;
        let sparsity = removed as f64 / units as f64;
        let masks = prune(
            backend,
            &[Layer::new(&p.name, &tensor)],
            &PruneConfig::new(sparsity)
                .local()
                .granularity(Granularity::NEURONS),
        )?;
        let keep = masks[0].reduce_any(crate::Grouping::Rows)?;
        if keep.count_kept() as usize != width {
            return Err(Error::Backend {
                message: alloc::format!(
                    "backward elimination kept {} units of {}, asked for {width}",
                    keep.count_kept(),
                    p.name
                ),
            });
        }
        let (ending, scales) = if width == units {
            (LayerEnding::AllUnits, None)
        } else {
            let s = (0..units)
                .map(|i| f32::from(u8::from(keep.get(i))))
                .collect();
            (LayerEnding::Width, Some(s))
        };
        let record = finish_layer(host, config, parameter, units, 0, ending, start, scales)?;
        observer.on_layer(&record);
        run.layers.push(record);
    }
    Ok(run)
}

/// Sets a finished layer's scales (or none), evaluates it, fine-tunes a
/// pruned layer and evaluates again.
#[allow(clippy::too_many_arguments)]
fn finish_layer<H: Host + ?Sized>(
    host: &mut H,
    config: &ForwardConfig,
    parameter: usize,
    units: usize,
    steps: usize,
    ending: LayerEnding,
    start: Evaluation,
    scales: Option<Vec<f32>>,
) -> Result<LayerRecord> {
    host.set_unit_scales(parameter, scales.as_deref())?;
    let objective = Objective::new(config.evaluation);
    let selected = host.evaluate(&objective)?;
    let fine_tuned = if scales.is_some() && config.fine_tune_steps > 0 {
        host.train_steps(config.fine_tune_steps)?;
        Some(host.evaluate(&objective)?)
    } else {
        None
    };
    let kept = scales
        .as_ref()
        .map_or(units, |s| s.iter().filter(|&&v| v != 0.0).count());
    Ok(LayerRecord {
        parameter,
        units,
        kept,
        steps,
        ending,
        start,
        selected,
        fine_tuned,
        scales,
    })
}

/// The layers of `config` (or the host's default ones), checked, with the
/// capabilities and settings the run needs.
fn checked_layers<H: Host + ?Sized>(host: &H, config: &ForwardConfig) -> Result<Vec<usize>> {
    let mut needs = vec![Capability::Evaluate, Capability::UnitScales];
    if config.fine_tune_steps > 0 {
        needs.push(Capability::Train);
    }
    require(host, &needs)?;
    let params = host.parameters();
    let layers: Vec<usize> = if config.layers.is_empty() {
        params
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind == ParameterKind::Weight && p.prunable && p.coupling.is_some())
            .map(|(i, _)| i)
            .collect()
    } else {
        config.layers.clone()
    };
    if layers.is_empty() {
        return Err(Error::NoLayers);
    }
    let mut last_layer = None;
    for &i in &layers {
        let p = params.get(i).ok_or(Error::UnknownParameter {
            index: i,
            count: params.len(),
        })?;
        if p.kind != ParameterKind::Weight || p.coupling.is_none() {
            return Err(Error::InvalidArgument {
                what: "forward selection layer",
                expected: "a weight whose outputs another layer reads (not a bias, not the classifier)",
            });
        }
        if last_layer.is_some_and(|l| p.layer <= l) {
            return Err(Error::InvalidArgument {
                what: "forward selection layers",
                expected: "distinct layers in input-to-output order",
            });
        }
        last_layer = Some(p.layer);
    }
    if config.candidates == 0 || config.batch == 0 {
        return Err(Error::InvalidArgument {
            what: "forward selection candidates and batch",
            expected: "at least 1 each",
        });
    }
    if config.max_steps == Some(0) {
        return Err(Error::InvalidArgument {
            what: "forward selection step limit",
            expected: "at least 1 step per layer",
        });
    }
    match &config.stop {
        Stop::Accuracy {
            batch_fraction,
            tolerance,
        } => {
            if !(*batch_fraction > 0.0 && *batch_fraction <= 1.0) {
                return Err(Error::FractionOutOfRange {
                    what: "batch fraction",
                    value: *batch_fraction,
                });
            }
            if !(0.0..=1.0).contains(tolerance) {
                return Err(Error::FractionOutOfRange {
                    what: "accuracy tolerance",
                    value: *tolerance,
                });
            }
        }
        Stop::Width(w) => {
            crate::contract::check::same_len("layer widths", layers.len(), w.len())?;
            for (&i, &w) in layers.iter().zip(w) {
                if w == 0 || w > params[i].units() {
                    return Err(Error::InvalidArgument {
                        what: "layer width",
                        expected: "between 1 and the layer's units",
                    });
                }
            }
        }
    }
    Ok(layers)
}

/// Unit `i`'s scale `D · c_i / m`.
fn scales(counts: &[u32], steps: usize) -> Vec<f32> {
    let d = counts.len() as f64;
    counts
        .iter()
        .map(|&c| (d * f64::from(c) / steps as f64) as f32)
        .collect()
}

/// A value in `0..n` (`n ≥ 1`) from the counter `(seed, stream, index)`.
fn draw_below(seed: u64, stream: u32, index: u64, n: usize) -> usize {
    ((u64::from(hash(seed, stream, index)) * n as u64) >> 32) as usize
}

/// Up to `k` units of `pool` drawn without repetition (all of them, in
/// order, when the pool is no larger).
fn draw_candidates(seed: u64, step: u64, mut pool: Vec<usize>, k: usize) -> Vec<usize> {
    if pool.len() <= k {
        return pool;
    }
    for i in 0..k {
        let index = step.wrapping_mul(k as u64).wrapping_add(i as u64);
        let j = i + draw_below(seed, STREAM_CANDIDATE, index, pool.len() - i);
        pool.swap(i, j);
    }
    pool.truncate(k);
    pool
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_distinct_and_from_the_pool() {
        let pool: Vec<usize> = (10..110).collect();
        let c = draw_candidates(3, 7, pool.clone(), 50);
        assert_eq!(c.len(), 50);
        let mut s = c.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 50);
        assert!(c.iter().all(|u| pool.contains(u)));
        assert_ne!(c, draw_candidates(3, 8, pool.clone(), 50));
        assert_eq!(draw_candidates(3, 7, vec![4, 2], 50), [4, 2]);
    }

    #[test]
    fn scales_average_the_multiset() {
        assert_eq!(scales(&[1, 0, 1, 0], 2), [2.0, 0.0, 2.0, 0.0]);
        assert_eq!(scales(&[2, 1, 0], 3), [2.0, 1.0, 0.0]);
    }
}
