//! The gradient-flow protocol (Lubana & Dick, ICLR 2021) at small scale:
//! filter pruning of a small CNN from initialisation in `n`
//! prune-and-train rounds, then training to convergence, for every
//! importance measure over several seeds.
//!
//! Per seed and measure: a fresh network (initialised by the seed); in round
//! `k = 1..n` the measure scores every filter of every conv layer (raw
//! scores, ranked globally; the classifier is never pruned) and the lowest
//! go until the fraction of filters removed is `1 − n(1 − p) / (k p + n(1 −
//! p))`: each round removes `r_k = p / (k p + n (1 − p))` of the filters still
//! present, so that exactly `p` are gone after round `n`. Every layer keeps
//! at least `floor(0.05 · width) + 1` filters. Each round is followed by one
//! training epoch; then the pruned network trains for `epochs` more, the
//! learning rate divided by 10 for the last third. Training loss is recorded
//! per epoch, test accuracy at the end.

use std::sync::Arc;
use std::time::Instant;

use prunus_core::host::{Host, Objective, Samples, masks_with_biases};
use prunus_core::methods::flow::{Measure, MeasureConfig, prune_host};
use prunus_core::{Backend, Granularity, Mask, PruneConfig, Split};

use crate::chart::{Chart, Series};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::host::{LabHost, Sgd};
use crate::network::{CnnSpec, Network};
use crate::report::{ProtocolResult, Report, Row, mean_std};

/// The protocol's settings.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FlowConfig {
    /// One run per seed and measure; the seed initialises the network and
    /// the shuffles (and the random measure).
    pub seeds: Vec<u64>,
    /// The measures compared, by [`Measure::name`].
    pub measures: Vec<String>,
    /// Filters of each conv layer of the CNN.
    pub channels: Vec<usize>,
    /// Fraction `p` of the filters removed in all.
    pub sparsity: f64,
    /// Prune-and-train rounds `n`.
    pub rounds: usize,
    /// Training epochs after the last round.
    pub epochs: usize,
    /// The optimiser (its learning rate is the initial one).
    pub sgd: Sgd,
    /// Training samples `g` and `Hg` average over.
    pub calibration: usize,
    /// The logit temperature of `g`.
    pub temperature: f32,
    /// The logit temperature of GraSP.
    pub grasp_temperature: f32,
    /// The per-layer floor: at least `floor(min_density · width) + 1`
    /// filters kept.
    pub min_density: f64,
}

impl Default for FlowConfig {
    /// Seeds 0, 1, 2; every measure; a CNN of 16 and 32 filters; 80% of the
    /// filters removed in 5 rounds; 15 epochs after; SGD at 0.05 with
    /// momentum 0.9; 2,560 calibration samples at temperatures 5 and 200.
    fn default() -> Self {
        FlowConfig {
            seeds: vec![0, 1, 2],
            measures: Measure::NAMES.iter().map(|s| s.to_string()).collect(),
            channels: vec![16, 32],
            sparsity: 0.8,
            rounds: 5,
            epochs: 15,
            sgd: Sgd::default(),
            calibration: 2560,
            temperature: 5.0,
            grasp_temperature: 200.0,
            min_density: 0.05,
        }
    }
}

impl FlowConfig {
    fn validate(&self) -> Result<()> {
        let bad = Error::setting;
        if self.seeds.is_empty() {
            return bad("seeds", "0".into(), "at least one seed");
        }
        if self.measures.is_empty() {
            return bad("measures", "none".into(), "at least one measure");
        }
        for m in &self.measures {
            if Measure::from_name(m, 0).is_none() {
                return bad(
                    "measure",
                    m.clone(),
                    &format!("one of {}", Measure::NAMES.join(", ")),
                );
            }
        }
        if !(0.0..1.0).contains(&self.sparsity) {
            return bad(
                "sparsity",
                self.sparsity.to_string(),
                "a fraction of filters in [0, 1)",
            );
        }
        if self.rounds == 0 {
            return bad("rounds", "0".into(), "at least one round");
        }
        if self.calibration == 0 {
            return bad("calibration", "0".into(), "at least one sample");
        }
        if self.channels.is_empty() || self.channels.contains(&0) {
            return bad(
                "channels",
                format!("{:?}", self.channels),
                "at least one conv layer, none of zero filters",
            );
        }
        // Every layer keeps floor(d * width) + 1 filters; the target must fit.
        let total: usize = self.channels.iter().sum();
        let floor: usize = self
            .channels
            .iter()
            .map(|&w| ((self.min_density * w as f64 + 1e-9).floor() as usize + 1).min(w))
            .sum();
        let removed = prunus_core::units_to_prune(self.sparsity, total as u64) as usize;
        if removed > total - floor {
            return bad(
                "sparsity",
                self.sparsity.to_string(),
                &format!(
                    "at most {} of the {total} filters can go while every layer keeps \
                     floor({} * width) + 1; lower the sparsity or add filters",
                    total - floor,
                    self.min_density
                ),
            );
        }
        Ok(())
    }

    /// The fraction of filters removed after round `k` (1-based).
    pub fn removed_after(&self, k: usize) -> f64 {
        let (p, n) = (self.sparsity, self.rounds as f64);
        if k >= self.rounds {
            return p;
        }
        1.0 - n * (1.0 - p) / (k as f64 * p + n * (1.0 - p))
    }
}

/// What one run recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowRun {
    /// The measure's name.
    pub measure: String,
    /// The seed.
    pub seed: u64,
    /// Mean training loss of every epoch (rounds first).
    pub train_loss: Vec<f64>,
    /// Final test accuracy, percent.
    pub test_acc: f64,
    /// Final validation accuracy, percent.
    pub val_acc: f64,
    /// Filters kept per conv layer at the end.
    pub filters: Vec<usize>,
    /// Seconds spent scoring and selecting.
    pub prune_s: f64,
    /// Seconds of the whole run.
    pub wall_s: f64,
}

/// What a run reports as it goes.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// The run (0-based) of `runs`.
    pub run: usize,
    /// Runs in all.
    pub runs: usize,
    /// The measure.
    pub measure: &'a str,
    /// The seed.
    pub seed: u64,
    /// Epochs done of `epochs`.
    pub epoch: usize,
    /// Epochs in all.
    pub epochs: usize,
    /// The last epoch's training loss.
    pub loss: f64,
}

/// All runs of a protocol.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowResult {
    /// The settings.
    pub config: FlowConfig,
    /// The dataset's name.
    pub dataset: String,
    /// The network's description.
    pub network: String,
    /// Every run, measure by measure, seed by seed.
    pub runs: Vec<FlowRun>,
    /// Seconds in all.
    pub wall_s: f64,
}

/// Runs the protocol on `data`, scoring and selecting on `backend`;
/// `progress` is called after every epoch.
pub fn run_flow<B: Backend + ?Sized>(
    backend: &B,
    data: Arc<Dataset>,
    config: &FlowConfig,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<FlowResult> {
    config.validate()?;
    let start = Instant::now();
    let spec = CnnSpec {
        input: data.input,
        channels: config.channels.clone(),
        classes: data.classes,
        bias: true,
    };
    let network = Network::cnn(&spec, 0)?.name().to_string();
    let runs_total = config.measures.len() * config.seeds.len();
    let mut runs = Vec::with_capacity(runs_total);
    for (i, name) in config.measures.iter().enumerate() {
        for (j, &seed) in config.seeds.iter().enumerate() {
            let run = i * config.seeds.len() + j;
            runs.push(run_one(
                backend,
                &data,
                config,
                &spec,
                name,
                seed,
                &mut |epoch, loss| {
                    progress(&Progress {
                        run,
                        runs: runs_total,
                        measure: name,
                        seed,
                        epoch,
                        epochs: config.rounds + config.epochs,
                        loss,
                    })
                },
            )?);
        }
    }
    Ok(FlowResult {
        config: config.clone(),
        dataset: data.name.clone(),
        network,
        runs,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

fn run_one<B: Backend + ?Sized>(
    backend: &B,
    data: &Arc<Dataset>,
    config: &FlowConfig,
    spec: &CnnSpec,
    name: &str,
    seed: u64,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<FlowRun> {
    let start = Instant::now();
    let network = Network::cnn(spec, seed)?;
    let mut host = LabHost::new(network, Arc::clone(data), config.sgd, seed)?;
    let params = host.parameters().to_vec();
    let prunable: Vec<usize> = (0..params.len()).filter(|&i| params[i].prunable).collect();
    let measure_config = MeasureConfig::default()
        .samples(Samples::first(Split::Train, config.calibration))
        .temperature(config.temperature)
        .grasp_temperature(config.grasp_temperature);
    let mut masks: Vec<Option<Mask>> = vec![None; prunable.len()];
    let mut train_loss = Vec::new();
    let mut prune_s = 0.0;
    let total = config.rounds + config.epochs;
    let late = config.rounds + config.epochs - config.epochs / 3;
    for k in 1..=config.rounds {
        let t = Instant::now();
        // The random measure draws afresh each round.
        let measure = Measure::from_name(name, seed.wrapping_mul(1_000_003) ^ k as u64)
            .ok_or_else(|| Error::InvalidSetting {
                name: "measure",
                value: name.into(),
                expected: Measure::NAMES.join(", "),
            })?;
        let prune = PruneConfig::new(config.removed_after(k))
            .granularity(Granularity::NEURONS)
            .min_density(config.min_density)
            .exceed_min_density(true);
        let fresh = prune_host(
            backend,
            &mut host,
            measure,
            &prunable,
            &masks,
            &prune,
            &measure_config,
        )?;
        masks = fresh.into_iter().map(Some).collect();
        let mut all = vec![None; params.len()];
        for (&i, m) in prunable.iter().zip(&masks) {
            all[i] = m.clone();
        }
        host.set_masks(&masks_with_biases(&params, all)?)?;
        prune_s += t.elapsed().as_secs_f64();
        let loss = host.train_epoch()?;
        train_loss.push(loss);
        progress(train_loss.len(), loss);
    }
    for epoch in config.rounds..total {
        if epoch == late {
            let sgd = host.sgd();
            host.set_sgd(sgd.learning_rate(sgd.learning_rate / 10.0))?;
        }
        let loss = host.train_epoch()?;
        train_loss.push(loss);
        progress(train_loss.len(), loss);
    }
    let accuracy = |host: &mut LabHost, split| -> Result<f64> {
        Ok(host
            .evaluate(&Objective::new(Samples::all(split)))?
            .accuracy
            * 100.0)
    };
    let test_acc = accuracy(&mut host, Split::Test)?;
    let val_acc = accuracy(&mut host, Split::Validation)?;
    let filters = prunable
        .iter()
        .zip(&masks)
        .map(|(&i, m)| match m {
            Some(m) => m
                .reduce_any(prunus_core::Grouping::Rows)
                .map(|u| u.count_kept() as usize),
            None => Ok(params[i].units()),
        })
        .collect::<prunus_core::Result<_>>()?;
    Ok(FlowRun {
        measure: name.into(),
        seed,
        train_loss,
        test_acc,
        val_acc,
        filters,
        prune_s,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// The measures the paper calls magnitude-agnostic: loss-preservation and
/// the Hessian-based ones.
const MAGNITUDE_AGNOSTIC: [&str; 4] = ["snip", "taylor", "grasp", "grad-norm"];

impl FlowResult {
    fn runs_of<'a>(&'a self, measure: &'a str) -> impl Iterator<Item = &'a FlowRun> + 'a {
        self.runs.iter().filter(move |r| r.measure == measure)
    }

    fn mean_of(&self, measure: &str, f: impl Fn(&FlowRun) -> f64) -> Option<(f64, f64)> {
        let values: Vec<f64> = self.runs_of(measure).map(f).collect();
        mean_std(&values)
    }

    /// Mean training loss over the epochs after pruning (the area under the
    /// loss curve: lower converged faster).
    fn post_pruning_loss(&self, run: &FlowRun) -> f64 {
        let tail = &run.train_loss[self.config.rounds.min(run.train_loss.len())..];
        if tail.is_empty() {
            return f64::NAN;
        }
        tail.iter().sum::<f64>() / tail.len() as f64
    }

    /// The paper's three claims, answered from the runs (where the measures
    /// they need were run). Two measures differ only where their means are
    /// more than one standard error of the difference apart
    /// (`sqrt(s_a²/n_a + s_b²/n_b)`, over seeds); closer is a tie.
    pub fn claims(&self) -> String {
        let mut out = String::from("\nThe paper's claims on these runs:\n");
        if self.config.seeds.len() < 2 {
            out.push_str(
                "not answered: telling a difference from noise needs the spread over at least 2 seeds (--seeds)\n",
            );
            return out;
        }
        let acc = |m: &str| -> Vec<f64> { self.runs_of(m).map(|r| r.test_acc).collect() };
        let after =
            |m: &str| -> Vec<f64> { self.runs_of(m).map(|r| self.post_pruning_loss(r)).collect() };
        let ran = |m: &str| self.config.measures.iter().any(|x| x == m);
        let others = |skip: &[&str]| -> Vec<String> {
            self.config
                .measures
                .iter()
                .filter(|m| !skip.contains(&m.as_str()))
                .cloned()
                .collect()
        };
        // (i) magnitude converges faster than magnitude-agnostic measures.
        let agnostic: Vec<&str> = MAGNITUDE_AGNOSTIC
            .iter()
            .copied()
            .filter(|m| ran(m))
            .collect();
        if ran("magnitude") && !agnostic.is_empty() {
            let mag = after("magnitude");
            let sides: Vec<(&str, Side)> = agnostic
                .iter()
                .map(|&m| (m, side(&mag, &after(m))))
                .collect();
            let (lower, higher) = count(&sides);
            out.push_str(&format!(
                "(i) magnitude converges faster than magnitude-agnostic measures: {} — mean post-pruning training \
                 loss {}; clearly lower than {} of {}, clearly higher than {} ({})\n",
                verdict(lower == sides.len(), lower == 0),
                fmt_mean(&mag, 4),
                lower,
                sides.len(),
                higher,
                describe(&sides, |m| fmt_mean(&after(m), 4))
            ));
        }
        // (ii) loss preservation suits barely trained networks.
        if ran("snip") && self.config.measures.len() > 1 {
            let snip = acc("snip");
            let rest = others(&["snip"]);
            let sides: Vec<(&str, Side)> = rest
                .iter()
                .map(|m| (m.as_str(), side(&snip, &acc(m))))
                .collect();
            let (below, above) = count(&sides);
            out.push_str(&format!(
                "(ii) loss preservation (snip) does well pruning a barely trained network: {} — test accuracy {}%; \
                 clearly above {} of the {} other measures, clearly below {} ({})\n",
                verdict(below == 0 && above > 0, below * 2 > sides.len()),
                fmt_mean(&snip, 2),
                above,
                sides.len(),
                below,
                describe(&sides, |m| fmt_mean(&acc(m), 2))
            ));
        }
        // (iii) GraSP (gradient-norm increasing) gives worse models.
        let rest = others(&["grasp", "random"]);
        if ran("grasp") && !rest.is_empty() {
            let grasp = acc("grasp");
            let sides: Vec<(&str, Side)> = rest
                .iter()
                .map(|m| (m.as_str(), side(&grasp, &acc(m))))
                .collect();
            let (below, above) = count(&sides);
            out.push_str(&format!(
                "(iii) GraSP gives worse models: {} — test accuracy {}%; clearly below {} of the {} other \
                 non-random measures, clearly above {} ({})\n",
                verdict(below == sides.len(), below == 0),
                fmt_mean(&grasp, 2),
                below,
                sides.len(),
                above,
                describe(&sides, |m| fmt_mean(&acc(m), 2))
            ));
        }
        out.push_str(
            "\"clearly\": the means differ by more than one standard error of their difference over the seeds.\n",
        );
        out
    }

    /// Mean training loss per epoch, one line per measure (log scale).
    pub fn chart(&self) -> Chart {
        let mut chart = Chart::new(
            format!(
                "{}: {:.0}% of filters pruned in {}",
                self.dataset,
                self.config.sparsity * 100.0,
                match self.config.rounds {
                    1 => "epoch 1".to_owned(),
                    n => format!("epochs 1-{n}"),
                }
            ),
            "training epoch",
            "mean training loss (cross-entropy, nats; log scale)",
        )
        .log_y(true);
        for m in &self.config.measures {
            let runs: Vec<&FlowRun> = self.runs_of(m).collect();
            let epochs = runs.iter().map(|r| r.train_loss.len()).min().unwrap_or(0);
            let points = (0..epochs)
                .map(|e| {
                    let values: Vec<f64> = runs.iter().map(|r| r.train_loss[e]).collect();
                    (e as f64 + 1.0, mean_std(&values).map_or(f64::NAN, |x| x.0))
                })
                .collect();
            chart = chart.series(Series::new(m.clone(), points));
        }
        chart
    }
}

impl ProtocolResult for FlowResult {
    /// The JSON report: `train_loss` per `epoch` and `test_acc` (and
    /// `val_acc`, `wall_s`) per method, one value per seed.
    fn report(&self) -> Result<Report> {
        let c = &self.config;
        let mut report = Report::new("flow", self.dataset.clone(), c.seeds.clone());
        report.set_config("model", self.network.clone());
        report.set_config("granularity", "filters");
        report.set_config("scope", "global, raw scores");
        report.set_config("sparsity", c.sparsity);
        report.set_config("rounds", c.rounds as u64);
        report.set_config("epochs_after_pruning", c.epochs as u64);
        report.set_config(
            "sgd",
            c.sgd
                .to_json("x0.1 for the last third of the epochs after pruning"),
        );
        report.set_config("calibration_samples", c.calibration as u64);
        report.set_config("temperature", c.temperature);
        report.set_config("grasp_temperature", c.grasp_temperature);
        report.set_config("min_filters", "floor(0.05 * width) + 1");
        for m in &c.measures {
            let runs: Vec<&FlowRun> = self.runs_of(m).collect();
            if runs.is_empty() {
                continue;
            }
            let epochs = runs.iter().map(|r| r.train_loss.len()).min().unwrap_or(0);
            for e in 0..epochs {
                let values = runs.iter().map(|r| r.train_loss[e]).collect();
                report.push(Row::new(m, "train_loss", values)?.epoch(e as u64 + 1));
            }
            let sparsity = c.sparsity;
            report.push(
                Row::new(m, "test_acc", runs.iter().map(|r| r.test_acc).collect())?
                    .sparsity(sparsity),
            );
            report.push(
                Row::new(m, "val_acc", runs.iter().map(|r| r.val_acc).collect())?
                    .sparsity(sparsity),
            );
            report.push(Row::new(
                m,
                "wall_s",
                runs.iter().map(|r| r.wall_s).collect(),
            )?);
        }
        report.set_timing("total", self.wall_s);
        report.set_timing("prune", self.runs.iter().map(|r| r.prune_s).sum());
        Ok(report)
    }

    /// The results table, then the paper's three claims answered from it.
    fn table(&self) -> String {
        let c = &self.config;
        let n = c.rounds;
        let mut out = format!(
            "{} on {}, {:.0}% of filters removed in {} rounds from initialisation, {} epochs after; {} seed(s)\n\n",
            self.network,
            self.dataset,
            c.sparsity * 100.0,
            n,
            c.epochs,
            c.seeds.len()
        );
        out.push_str(&format!(
            "{:<12} {:>15} {:>12} {:>12} {:>12} {:>12}  {}\n",
            "measure",
            "test acc (%)",
            format!("loss ep {}", n),
            format!("loss ep {}", n + 1),
            "loss after",
            "final loss",
            "filters kept"
        ));
        for m in &c.measures {
            let runs: Vec<&FlowRun> = self.runs_of(m).collect();
            let Some(first) = runs.first() else { continue };
            let at = |e: usize| {
                self.mean_of(m, |r| r.train_loss.get(e).copied().unwrap_or(f64::NAN))
                    .map_or(f64::NAN, |x| x.0)
            };
            let (acc, acc_std) = self.mean_of(m, |r| r.test_acc).unwrap_or((f64::NAN, 0.0));
            let after = self
                .mean_of(m, |r| self.post_pruning_loss(r))
                .map_or(f64::NAN, |x| x.0);
            let last = first.train_loss.len().saturating_sub(1);
            out.push_str(&format!(
                "{:<12} {:>8.2} ± {:<4.2} {:>12.4} {:>12.4} {:>12.4} {:>12.4}  {}\n",
                m,
                acc,
                acc_std,
                at(n.saturating_sub(1)),
                at(n),
                after,
                at(last),
                first
                    .filters
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            ));
        }
        out.push_str(&format!(
            "\nloss ep k: mean training loss of epoch k (epochs 1-{n} are the prune-and-train rounds);\n\
             loss after: mean over the {} epochs after pruning (lower = converged faster).\n",
            c.epochs
        ));
        out.push_str(&self.claims());
        out
    }

    fn svg(&self) -> Result<String> {
        self.chart().to_svg()
    }
}

/// Where measure A stands against measure B.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// A's mean is clearly below B's.
    Below,
    /// Within one standard error of the difference.
    Tie,
    /// A's mean is clearly above B's.
    Above,
}

fn side(a: &[f64], b: &[f64]) -> Side {
    let (Some((ma, sa)), Some((mb, sb))) = (mean_std(a), mean_std(b)) else {
        return Side::Tie;
    };
    let se = (sa * sa / a.len() as f64 + sb * sb / b.len() as f64).sqrt();
    if ma < mb - se {
        Side::Below
    } else if ma > mb + se {
        Side::Above
    } else {
        Side::Tie
    }
}

/// (clearly below, clearly above).
fn count(sides: &[(&str, Side)]) -> (usize, usize) {
    let n = |s| sides.iter().filter(|(_, x)| *x == s).count();
    (n(Side::Below), n(Side::Above))
}

fn describe(sides: &[(&str, Side)], value: impl Fn(&str) -> String) -> String {
    sides
        .iter()
        .map(|(m, s)| {
            let rel = match s {
                Side::Below => "<",
                Side::Tie => "≈",
                Side::Above => ">",
            };
            format!("{rel} {m} {}", value(m))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn fmt_mean(values: &[f64], decimals: usize) -> String {
    match mean_std(values) {
        Some((m, s)) => format!("{m:.decimals$} ± {s:.decimals$}"),
        None => "n/a".into(),
    }
}

fn verdict(yes: bool, no: bool) -> &'static str {
    match (yes, no) {
        (true, _) => "yes",
        (_, true) => "no",
        _ => "partly",
    }
}
