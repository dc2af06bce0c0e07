//! Iterative magnitude pruning with rewinding (METHODS.md §3), driven
//! through any [`Host`].
//!
//! [`run_imp`] trains the dense network (saving the weights to rewind to
//! after `warmup_epochs`, or at initialisation), then runs rounds of
//!
//! 1. **prune** the current weights to the round's cumulative target
//!    ([`Step`]: a fixed fraction of what is left, or the PQ-index's
//!    adaptive rate), never reviving what an earlier round pruned;
//! 2. **rewind** the survivors to the saved weights (pruned ones are zero);
//! 3. **retrain** one epoch at a time until the [`StopRule`] fires (never
//!    before `min_epochs`) or `max_epochs` have run,
//!
//! until the target sparsity is reached. Rules read the validation samples
//! only; the test samples, when given, are evaluated once per round for the
//! records and never decide anything.
//!
//! Masks cover the host's prunable parameters; every round's mask is a
//! subset of the last one's (checked). Sparsity counts pruned entries of
//! the prunable parameters not skipped by the [`PruneConfig`]'s guards.
//!
//! Core has no clock: an [`Observer`] may supply one ([`Observer::now`]) for
//! the rounds' wall times, and sees every epoch and round as it ends.

pub mod consistency;
pub mod pq_index;

use alloc::vec;
use alloc::vec::Vec;

use crate::contract::backend::Backend;
use crate::contract::error::{Error, Result};
use crate::contract::granularity::Granularity;
use crate::contract::mask::Mask;
use crate::host::{Capability, Evaluation, Host, Objective, Samples, Snapshot, Split, require};
use crate::methods::imp::consistency::{Flow, distance};
use crate::methods::imp::pq_index::PqIndex;
use crate::selection::config::PruneConfig;
use crate::selection::prune::prune;
use crate::selection::schedule::Schedule;
use crate::selection::select::Layer;

/// Which weights the survivors go back to after each pruning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Rewind {
    /// The weights before any training (the original lottery-ticket rule).
    Initialization,
    /// The weights after the warm-up epochs (rewinding to early training,
    /// which is what works on larger networks).
    #[default]
    WarmUp,
}

/// How much a round prunes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Step {
    /// A fixed fraction, in `(0, 1]`, of the weights still present (classic
    /// IMP: 0.2). The last round stops exactly at the target.
    FixedRate(f64),
    /// The PQ-index's adaptive fraction of the survivors (all prunable
    /// survivors together), recomputed each round; at least one weight per
    /// round, and never past the target.
    PqIndex(PqIndex),
}

/// When retraining within a round stops (besides `max_epochs`).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum StopRule {
    /// Never early: every round trains `max_epochs` (classic IMP).
    Epochs,
    /// When validation accuracy is back within `tolerance` (a fraction,
    /// e.g. 0.005 for half a point) of the dense network's.
    Recovered {
        /// Accuracy below the dense level still accepted, in `[0, 1]`.
        tolerance: f64,
    },
    /// Information-Consistent Pruning: when `‖flow(pruned) − flow(dense)‖₂
    /// < epsilon` on the validation samples.
    Consistent {
        /// The flow compared.
        flow: Flow,
        /// The threshold `ε > 0`.
        epsilon: f64,
    },
}

/// The settings of an IMP run.
///
/// ```
/// use prunus_core::methods::imp::consistency::Flow;
/// use prunus_core::methods::imp::{ImpConfig, StopRule};
/// let classic = ImpConfig::classic(0.9);
/// assert_eq!(classic.stop, StopRule::Epochs);
/// let incop = ImpConfig::incop(0.9, Flow::Information, 0.05).epochs(20, 10);
/// assert_eq!(incop.max_epochs, 10);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ImpConfig {
    /// Final sparsity of the prunable weights, in `[0, 1]`.
    pub target: f64,
    /// How much each round prunes.
    pub step: Step,
    /// Scope, guards and importance of each round's selection (its
    /// `sparsity` is set per round; only unstructured selection is
    /// allowed).
    pub prune: PruneConfig,
    /// Where survivors go back to.
    pub rewind: Rewind,
    /// Epochs after which the weights are saved for [`Rewind::WarmUp`].
    pub warmup_epochs: usize,
    /// Epochs of dense training (the warm-up included) before round 1.
    pub dense_epochs: usize,
    /// The most epochs of retraining per round (`E`).
    pub max_epochs: usize,
    /// The fewest epochs of retraining per round, at least 1.
    pub min_epochs: usize,
    /// When retraining stops early.
    pub stop: StopRule,
    /// Flows to measure every epoch for the records, besides the rule's.
    pub watch: Vec<Flow>,
    /// The samples accuracy is measured on after every epoch (validation
    /// data).
    pub validation: Samples,
    /// The samples flows are measured on (validation data; a subset makes
    /// each measurement cheaper and noisier).
    pub flow_samples: Samples,
    /// Samples evaluated after each round for the records only.
    pub test: Option<Samples>,
    /// The most rounds before the run gives up.
    pub max_rounds: usize,
}

impl Default for ImpConfig {
    /// Classic IMP to 90%: 20% of each layer's survivors per round,
    /// rewinding to the weights after 1 warm-up epoch of 15 dense ones,
    /// 15 epochs of retraining per round, validation for rules, test for
    /// the records.
    fn default() -> Self {
        ImpConfig {
            target: 0.9,
            step: Step::FixedRate(0.2),
            prune: PruneConfig::new(0.0).local(),
            rewind: Rewind::WarmUp,
            warmup_epochs: 1,
            dense_epochs: 15,
            max_epochs: 15,
            min_epochs: 1,
            stop: StopRule::Epochs,
            watch: Vec::new(),
            validation: Samples::all(Split::Validation),
            flow_samples: Samples::all(Split::Validation),
            test: Some(Samples::all(Split::Test)),
            max_rounds: 100,
        }
    }
}

impl ImpConfig {
    /// Classic IMP to `target`: 20% per layer per round, full retraining.
    pub fn classic(target: f64) -> Self {
        ImpConfig {
            target,
            ..Default::default()
        }
    }

    /// Information-Consistent Pruning to `target`: global magnitude pruning
    /// at the PQ-index rate, retraining until `flow` is within `epsilon` of
    /// the dense network's.
    pub fn incop(target: f64, flow: Flow, epsilon: f64) -> Self {
        ImpConfig {
            target,
            step: Step::PqIndex(PqIndex::default()),
            prune: PruneConfig::new(0.0).global(),
            stop: StopRule::Consistent { flow, epsilon },
            ..Default::default()
        }
    }

    /// The same run to `target`.
    pub fn target(mut self, target: f64) -> Self {
        self.target = target;
        self
    }

    /// The same run with `step`.
    pub fn step(mut self, step: Step) -> Self {
        self.step = step;
        self
    }

    /// The same run selecting with `prune`'s scope, guards and importance.
    pub fn prune(mut self, prune: PruneConfig) -> Self {
        self.prune = prune;
        self
    }

    /// The same run rewinding to `rewind`, saved after `warmup_epochs`.
    pub fn rewind(mut self, rewind: Rewind, warmup_epochs: usize) -> Self {
        self.rewind = rewind;
        self.warmup_epochs = warmup_epochs;
        self
    }

    /// The same run with `dense` epochs before pruning and at most `max`
    /// per round.
    pub fn epochs(mut self, dense: usize, max: usize) -> Self {
        self.dense_epochs = dense;
        self.max_epochs = max;
        self
    }

    /// The same run retraining at least `min` epochs per round.
    pub fn min_epochs(mut self, min: usize) -> Self {
        self.min_epochs = min;
        self
    }

    /// The same run stopping by `stop`.
    pub fn stop(mut self, stop: StopRule) -> Self {
        self.stop = stop;
        self
    }

    /// The same run also recording `flows` every epoch.
    pub fn watch(mut self, flows: &[Flow]) -> Self {
        self.watch = flows.to_vec();
        self
    }

    /// The same run measuring accuracy and flows on `samples`.
    pub fn validation(mut self, samples: Samples) -> Self {
        self.validation = samples;
        self.flow_samples = samples;
        self
    }

    /// The same run measuring flows on `samples` only.
    pub fn flow_samples(mut self, samples: Samples) -> Self {
        self.flow_samples = samples;
        self
    }

    /// The same run evaluating `samples` (or nothing) for the records.
    pub fn test(mut self, samples: Option<Samples>) -> Self {
        self.test = samples;
        self
    }

    /// The same run giving up after `rounds` rounds.
    pub fn max_rounds(mut self, rounds: usize) -> Self {
        self.max_rounds = rounds;
        self
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.target) {
            return Err(Error::SparsityOutOfRange { value: self.target });
        }
        match self.step {
            Step::FixedRate(rate) if !(rate > 0.0 && rate <= 1.0) => {
                return Err(Error::FractionOutOfRange {
                    what: "IMP rate per round",
                    value: rate,
                });
            }
            Step::PqIndex(pq) => pq.validate()?,
            _ => {}
        }
        if self.prune.granularity != Granularity::Unstructured {
            return Err(Error::InvalidArgument {
                what: "IMP granularity",
                expected: "unstructured (IMP prunes single weights)",
            });
        }
        if self.warmup_epochs > self.dense_epochs {
            return Err(Error::InvalidArgument {
                what: "IMP warm-up epochs",
                expected: "at most the dense epochs",
            });
        }
        if self.min_epochs == 0 || self.min_epochs > self.max_epochs {
            return Err(Error::InvalidArgument {
                what: "IMP epochs per round",
                expected: "1 <= min_epochs <= max_epochs",
            });
        }
        if self.max_rounds == 0 {
            return Err(Error::InvalidArgument {
                what: "IMP max_rounds",
                expected: "at least 1",
            });
        }
        match self.stop {
            StopRule::Recovered { tolerance } if !(0.0..=1.0).contains(&tolerance) => {
                Err(Error::FractionOutOfRange {
                    what: "IMP recovery tolerance",
                    value: tolerance,
                })
            }
            StopRule::Consistent { epsilon, .. } if !(epsilon.is_finite() && epsilon > 0.0) => {
                Err(Error::InvalidArgument {
                    what: "information-consistency threshold ε",
                    expected: "finite and positive",
                })
            }
            _ => Ok(()),
        }
    }

    /// The flows measured every epoch: the rule's first, then the watched
    /// ones, each once.
    pub fn flows(&self) -> Vec<Flow> {
        let mut flows = Vec::new();
        if let StopRule::Consistent { flow, .. } = self.stop {
            flows.push(flow);
        }
        for &f in &self.watch {
            if !flows.contains(&f) {
                flows.push(f);
            }
        }
        flows
    }
}

/// One epoch of training, as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    /// The round (0 for dense training).
    pub round: usize,
    /// The epoch within the round, from 1.
    pub epoch: usize,
    /// The host's mean training loss of the epoch.
    pub train_loss: f64,
    /// Validation loss and accuracy after the epoch.
    pub validation: Evaluation,
    /// The distance of each measured flow to the dense reference (empty in
    /// round 0, before there is a reference).
    pub distances: Vec<(Flow, f64)>,
}

/// Why a round's retraining ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ending {
    /// Dense training (round 0) ran its epochs.
    Dense,
    /// The stop rule fired.
    Rule,
    /// `max_epochs` ran without the rule firing.
    Limit,
}

/// One round, as recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct Round {
    /// The round, from 1; 0 is dense training.
    pub index: usize,
    /// The fraction of prunable weights pruned after it.
    pub sparsity: f64,
    /// Epochs trained in it.
    pub epochs: usize,
    /// Why it ended.
    pub ending: Ending,
    /// Validation loss and accuracy at its end.
    pub validation: Evaluation,
    /// Test loss and accuracy at its end, when test samples were given.
    pub test: Option<Evaluation>,
    /// Seconds it took (pruning, rewinding, training and measuring), when
    /// the observer has a clock.
    pub wall_s: Option<f64>,
    /// Its epochs.
    pub epochs_trace: Vec<EpochRecord>,
}

/// What an IMP run did.
#[derive(Clone, Debug, PartialEq)]
pub struct ImpRun {
    /// Dense training (round 0), then every pruning round.
    pub rounds: Vec<Round>,
    /// The dense network's flow vectors, for each measured flow.
    pub reference: Vec<(Flow, Vec<f64>)>,
    /// The final mask of each parameter (`None` for those not pruned).
    pub masks: Vec<Option<Mask>>,
}

impl ImpRun {
    /// Epochs of retraining over all pruning rounds (dense training not
    /// counted).
    pub fn retraining_epochs(&self) -> usize {
        self.rounds.iter().skip(1).map(|r| r.epochs).sum()
    }

    /// The last round.
    pub fn last(&self) -> &Round {
        self.rounds.last().expect("a run records dense training")
    }
}

/// Sees an IMP run as it goes, and may supply a clock.
pub trait Observer {
    /// Seconds since any fixed instant, or `None` without a clock.
    fn now(&mut self) -> Option<f64> {
        None
    }

    /// Called after every epoch.
    fn on_epoch(&mut self, epoch: &EpochRecord) {
        let _ = epoch;
    }

    /// Called after the pruning of round `round`, with the masks of every
    /// parameter (`None` for those not pruned), before rewinding: the
    /// tickets, e.g. to save them.
    fn on_masks(&mut self, round: usize, masks: &[Option<Mask>]) {
        let _ = (round, masks);
    }

    /// Called after every round (round 0 is dense training).
    fn on_round(&mut self, round: &Round) {
        let _ = round;
    }
}

/// An observer that sees nothing and has no clock.
impl Observer for () {}

/// Runs IMP on `host` as `config` says, selecting on `backend`. The host
/// is left with the final round's weights and masks. Needs training,
/// evaluation and masks, plus what the measured flows need.
pub fn run_imp<B, H, O>(
    backend: &B,
    host: &mut H,
    config: &ImpConfig,
    observer: &mut O,
) -> Result<ImpRun>
where
    B: Backend + ?Sized,
    H: Host + ?Sized,
    O: Observer + ?Sized,
{
    config.validate()?;
    require(
        host,
        &[Capability::Train, Capability::Evaluate, Capability::Masks],
    )?;
    let flows = config.flows();
    for f in &flows {
        require(host, f.needs())?;
    }
    let params = host.parameters().to_vec();
    let skip = &config.prune.guards.skip;
    let prunable: Vec<usize> = (0..params.len())
        .filter(|&i| params[i].prunable && !skip.contains(&params[i].name))
        .collect();
    if prunable.is_empty() {
        return Err(Error::InvalidArgument {
            what: "host parameters",
            expected: "at least one prunable parameter that is not skipped",
        });
    }
    let mut driver = Driver {
        host,
        config,
        observer,
        flows,
        reference: Vec::new(),
        dense_accuracy: 0.0,
    };
    let (dense, saved) = driver.train_dense()?;
    let mut rounds = vec![dense];
    let mut masks: Vec<Option<Mask>> = vec![None; prunable.len()];
    let mut sparsity = 0.0;
    let targets = match config.step {
        Step::FixedRate(rate) => Schedule::FixedRate {
            rate,
            target: config.target,
        }
        .targets()?,
        Step::PqIndex(_) => Vec::new(),
    };
    while sparsity < config.target {
        let index = rounds.len();
        if index > config.max_rounds {
            return Err(Error::InvalidArgument {
                what: "IMP max_rounds",
                expected: "enough rounds to reach the target sparsity",
            });
        }
        let start = driver.observer.now();
        let next = match config.step {
            Step::FixedRate(_) => targets[index - 1],
            Step::PqIndex(pq) => {
                let rate = pq.rate_of(survivors(driver.host, &prunable, &masks)?)?;
                let step = 1.0 / prunable_total(&params, &prunable) as f64;
                (1.0 - (1.0 - sparsity) * (1.0 - rate))
                    .max(sparsity + step)
                    .min(config.target)
            }
        };
        masks = prune_round(backend, driver.host, &prunable, &masks, config, next)?;
        let all = per_parameter(params.len(), &prunable, &masks);
        driver.observer.on_masks(index, &all);
        driver.host.restore(&masked(&saved, &all))?;
        driver.host.set_masks(&all)?;
        let round = driver.retrain(index, pruned_fraction(&masks), start)?;
        rounds.push(round);
        sparsity = next;
    }
    Ok(ImpRun {
        rounds,
        reference: driver.reference,
        masks: per_parameter(params.len(), &prunable, &masks),
    })
}

/// The state a run carries between its phases.
struct Driver<'a, H: ?Sized, O: ?Sized> {
    host: &'a mut H,
    config: &'a ImpConfig,
    observer: &'a mut O,
    flows: Vec<Flow>,
    reference: Vec<(Flow, Vec<f64>)>,
    dense_accuracy: f64,
}

impl<H: Host + ?Sized, O: Observer + ?Sized> Driver<'_, H, O> {
    /// Trains the dense network, saves the rewinding point and measures the
    /// reference flows; returns round 0 and the saved weights.
    fn train_dense(&mut self) -> Result<(Round, Snapshot)> {
        let start = self.observer.now();
        let save_after = match self.config.rewind {
            Rewind::Initialization => 0,
            Rewind::WarmUp => self.config.warmup_epochs,
        };
        let mut saved = None;
        if save_after == 0 {
            saved = Some(self.host.snapshot()?);
        }
        let mut trace = Vec::new();
        for epoch in 1..=self.config.dense_epochs {
            let record = self.epoch(0, epoch)?;
            trace.push(record);
            if epoch == save_after {
                saved = Some(self.host.snapshot()?);
            }
        }
        let saved = saved.expect("warm-up epochs are at most the dense epochs");
        for &flow in &self.flows {
            let v = flow.measure(self.host, &self.config.flow_samples)?;
            self.reference.push((flow, v));
        }
        let validation = self.evaluate(self.config.validation)?;
        self.dense_accuracy = validation.accuracy;
        let round = self.finish(0, 0.0, Ending::Dense, validation, trace, start)?;
        Ok((round, saved))
    }

    /// Retrains round `index` until its rule fires or its epochs run out.
    fn retrain(&mut self, index: usize, sparsity: f64, start: Option<f64>) -> Result<Round> {
        let mut trace: Vec<EpochRecord> = Vec::new();
        let mut ending = Ending::Limit;
        for epoch in 1..=self.config.max_epochs {
            let record = self.epoch(index, epoch)?;
            let fires = epoch >= self.config.min_epochs && self.fires(&record);
            trace.push(record);
            if fires {
                ending = Ending::Rule;
                break;
            }
        }
        let validation = trace.last().expect("at least one epoch").validation;
        self.finish(index, sparsity, ending, validation, trace, start)
    }

    /// Trains one epoch and measures it.
    fn epoch(&mut self, round: usize, epoch: usize) -> Result<EpochRecord> {
        let train_loss = self.host.train_epoch()?;
        if !train_loss.is_finite() {
            return Err(Error::NonFinite {
                what: "training losses (the run diverged; lower the learning rate)",
            });
        }
        let validation = self.evaluate(self.config.validation)?;
        let mut distances = Vec::new();
        for (flow, reference) in &self.reference {
            let v = flow.measure(self.host, &self.config.flow_samples)?;
            distances.push((*flow, distance(&v, reference)?));
        }
        let record = EpochRecord {
            round,
            epoch,
            train_loss,
            validation,
            distances,
        };
        self.observer.on_epoch(&record);
        Ok(record)
    }

    fn fires(&self, record: &EpochRecord) -> bool {
        match self.config.stop {
            StopRule::Epochs => false,
            StopRule::Recovered { tolerance } => {
                record.validation.accuracy >= self.dense_accuracy - tolerance
            }
            StopRule::Consistent { flow, epsilon } => record
                .distances
                .iter()
                .any(|&(f, d)| f == flow && d < epsilon),
        }
    }

    fn evaluate(&mut self, samples: Samples) -> Result<Evaluation> {
        self.host.evaluate(&Objective::new(samples))
    }

    fn finish(
        &mut self,
        index: usize,
        sparsity: f64,
        ending: Ending,
        validation: Evaluation,
        trace: Vec<EpochRecord>,
        start: Option<f64>,
    ) -> Result<Round> {
        let test = match self.config.test {
            Some(samples) => Some(self.evaluate(samples)?),
            None => None,
        };
        let wall_s = match (start, self.observer.now()) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        let round = Round {
            index,
            sparsity,
            epochs: trace.len(),
            ending,
            validation,
            test,
            wall_s,
            epochs_trace: trace,
        };
        self.observer.on_round(&round);
        Ok(round)
    }
}

/// The prunable weights still present, in parameter order.
fn survivors<H: Host + ?Sized>(
    host: &H,
    prunable: &[usize],
    masks: &[Option<Mask>],
) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for (&i, m) in prunable.iter().zip(masks) {
        let w = host.weights(i)?;
        match m {
            Some(m) => out.extend(m.kept().map(|j| w[j])),
            None => out.extend(w),
        }
    }
    Ok(out)
}

fn prunable_total(params: &[crate::host::Parameter], prunable: &[usize]) -> u64 {
    prunable
        .iter()
        .map(|&i| params[i].shape.numel() as u64)
        .sum()
}

/// Selects round masks at cumulative sparsity `sparsity` from the host's
/// current weights, within `masks`.
fn prune_round<B: Backend + ?Sized, H: Host + ?Sized>(
    backend: &B,
    host: &H,
    prunable: &[usize],
    masks: &[Option<Mask>],
    config: &ImpConfig,
    sparsity: f64,
) -> Result<Vec<Option<Mask>>> {
    let params = host.parameters();
    let tensors = prunable
        .iter()
        .map(|&i| backend.upload(&host.weights(i)?, &params[i].shape))
        .collect::<Result<Vec<_>>>()?;
    let layers: Vec<Layer<'_, B>> = prunable
        .iter()
        .zip(&tensors)
        .zip(masks)
        .map(|((&i, t), m)| Layer::new(&params[i].name, t).with_mask(m.as_ref()))
        .collect();
    let fresh = prune(backend, &layers, &config.prune.clone().sparsity(sparsity))?;
    for (new, old) in fresh.iter().zip(masks) {
        if let Some(old) = old
            && !new.is_subset_of(old)?
        {
            return Err(Error::Backend {
                message: "an IMP round revived a pruned weight".into(),
            });
        }
    }
    Ok(fresh.into_iter().map(Some).collect())
}

/// One mask slot per parameter: `masks` at the `prunable` indices, `None`
/// elsewhere.
fn per_parameter(count: usize, prunable: &[usize], masks: &[Option<Mask>]) -> Vec<Option<Mask>> {
    let mut all = vec![None; count];
    for (&i, m) in prunable.iter().zip(masks) {
        all[i] = m.clone();
    }
    all
}

/// `saved` with the entries `masks` prune set to zero.
fn masked(saved: &Snapshot, masks: &[Option<Mask>]) -> Snapshot {
    let weights = saved
        .weights
        .iter()
        .zip(masks)
        .map(|(w, m)| match m {
            Some(m) => w
                .iter()
                .enumerate()
                .map(|(j, &v)| if m.get(j) { v } else { 0.0 })
                .collect(),
            None => w.clone(),
        })
        .collect();
    Snapshot { weights }
}

fn pruned_fraction(masks: &[Option<Mask>]) -> f64 {
    let (pruned, total) = masks.iter().flatten().fold((0u64, 0u64), |(p, t), m| {
        (p + m.count_pruned(), t + m.len() as u64)
    });
    if total == 0 {
        0.0
    } else {
        pruned as f64 / total as f64
    }
}
