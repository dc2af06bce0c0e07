//! Information-Consistent Pruning against classic IMP (METHODS.md §3): does
//! stopping each round's retraining when the network's flow matches the
//! dense network's save epochs, and what does it cost in accuracy?
//!
//! Per seed, four IMP runs of the same MLP from the same initialisation and
//! the same dense training, all to the same final sparsity, all rewinding
//! survivors to the weights after the warm-up epoch:
//!
//! - `imp`: classic IMP, 20% of each layer's survivors per round, every
//!   round retrained the full `E` epochs;
//! - `imp-global`: the same rate over all prunable weights together (global
//!   magnitude, as InCoP prunes), full retraining. It isolates the stop
//!   rule: the InCoP runs differ from it only in when retraining stops;
//! - `incop-if`: as `imp-global`, retraining until the information flow is
//!   within `ε_IF` of the dense network's (or `E` epochs);
//! - `incop-gf`: the same with the gradient flow and `ε_GF`.
//!
//! `--step pq` switches the last three to the PQ-index's adaptive rate.
//!
//! **Choosing ε on validation data.** Unless given, each `ε` is calibrated
//! on the first seed's `imp-global` run, which records both flows' distances
//! and the validation accuracy after every epoch: for each candidate `ε`
//! (midpoints between observed distances), simulate the rule on that trace
//! (stop at the first epoch with distance `< ε`); keep the largest `ε` whose
//! simulated stop is within `tolerance` points of the round's full-retraining
//! validation accuracy in every round. The simulation reuses weights that
//! were fully retrained in earlier rounds, which a real InCoP run does not
//! have; the real runs are then what is reported. Only validation data is
//! read; the test split is evaluated for the records.

use std::sync::Arc;
use std::time::Instant;

use prunus_core::host::Samples;
use prunus_core::methods::imp::consistency::Flow;
use prunus_core::methods::imp::pq_index::PqIndex;
use prunus_core::methods::imp::{
    ImpConfig, ImpRun, Observer, Rewind, Round, Step, StopRule, run_imp,
};
use prunus_core::{Backend, PruneConfig, Split};
use serde_json::json;

use crate::chart::{Chart, Series};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::flow::fmt_mean;
use crate::host::{LabHost, Sgd};
use crate::network::Network;
use crate::report::{ProtocolResult, Report, Row, mean_std};

/// The methods, in run order.
pub const METHODS: [&str; 4] = ["imp", "imp-global", "incop-if", "incop-gf"];

/// The official threshold of the InCoP code, reported for comparison.
pub const OFFICIAL_EPSILON: f64 = 1.0;

/// How the global methods choose each round's rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// The same fixed rate as classic IMP.
    Fixed,
    /// The PQ-index's adaptive rate (official defaults).
    Pq,
}

/// Settings of the protocol.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct InfcopConfig {
    /// Seeds: each initialises and trains its own networks.
    pub seeds: Vec<u64>,
    /// Hidden widths of the MLP (300, 100: LeNet-300-100). Biases are on and
    /// never pruned; the classifier is not pruned.
    pub hidden: Vec<usize>,
    /// Final sparsity of the prunable weights.
    pub target: f64,
    /// Fraction of survivors pruned per round (0.2).
    pub rate: f64,
    /// The global methods' step.
    pub step: StepKind,
    /// Dense epochs before round 1 (the warm-up included).
    pub dense_epochs: usize,
    /// Warm-up epochs: survivors rewind to the weights after them.
    pub warmup_epochs: usize,
    /// The most retraining epochs per round, `E`.
    pub max_epochs: usize,
    /// The optimiser (constant learning rate).
    pub sgd: Sgd,
    /// `ε` of InCoP-IF; calibrated on validation data when `None`.
    pub epsilon_if: Option<f64>,
    /// `ε` of InCoP-GF; calibrated on validation data when `None`.
    pub epsilon_gf: Option<f64>,
    /// Validation accuracy points a calibrated rule may lose against full
    /// retraining in any round.
    pub tolerance: f64,
    /// The most rounds of any run.
    pub max_rounds: usize,
    /// Validation samples the flows are measured on (`None`: all of them).
    pub flow_samples: Option<usize>,
}

impl Default for InfcopConfig {
    /// Seeds 0-2; LeNet-300-100 to 95% sparsity at 20% per round (14
    /// rounds); 15 dense epochs with 1 of warm-up, at most 15 per round;
    /// SGD at 0.05 with momentum 0.9; tolerance 0.5 points.
    fn default() -> Self {
        InfcopConfig {
            seeds: vec![0, 1, 2],
            hidden: vec![300, 100],
            target: 0.95,
            rate: 0.2,
            step: StepKind::Fixed,
            dense_epochs: 15,
            warmup_epochs: 1,
            max_epochs: 15,
            sgd: Sgd::default(),
            epsilon_if: None,
            epsilon_gf: None,
            tolerance: 0.5,
            max_rounds: 100,
            flow_samples: None,
        }
    }
}

impl InfcopConfig {
    /// Checks the settings before any work.
    pub fn validate(&self) -> Result<()> {
        if self.seeds.is_empty() {
            return Error::setting("seeds", "none".into(), "at least one seed");
        }
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return Error::setting(
                "hidden",
                format!("{:?}", self.hidden),
                "at least one hidden layer, none empty",
            );
        }
        if self.flow_samples == Some(0) {
            return Error::setting("flow-samples", "0".into(), "at least 1 validation sample");
        }
        if !(self.tolerance.is_finite() && (0.0..=100.0).contains(&self.tolerance)) {
            return Error::setting(
                "tolerance",
                self.tolerance.to_string(),
                "accuracy points in [0, 100]",
            );
        }
        for (name, eps) in [
            ("epsilon-if", self.epsilon_if),
            ("epsilon-gf", self.epsilon_gf),
        ] {
            if let Some(e) = eps
                && !(e.is_finite() && e > 0.0)
            {
                return Error::setting(name, e.to_string(), "a finite positive threshold");
            }
        }
        for m in METHODS {
            self.imp_config(m, 1.0, 1.0, false).validate()?;
        }
        Ok(())
    }

    /// The IMP settings of `method`.
    fn imp_config(&self, method: &str, eps_if: f64, eps_gf: f64, calibrating: bool) -> ImpConfig {
        let classic = ImpConfig::classic(self.target)
            .step(Step::FixedRate(self.rate))
            .rewind(Rewind::WarmUp, self.warmup_epochs)
            .epochs(self.dense_epochs, self.max_epochs)
            .max_rounds(self.max_rounds)
            .flow_samples(match self.flow_samples {
                Some(n) => Samples::first(Split::Validation, n),
                None => Samples::all(Split::Validation),
            });
        if method == "imp" {
            return classic;
        }
        let step = match self.step {
            StepKind::Fixed => Step::FixedRate(self.rate),
            StepKind::Pq => Step::PqIndex(PqIndex::default()),
        };
        let global = classic.step(step).prune(PruneConfig::new(0.0).global());
        match method {
            "incop-if" => global.stop(StopRule::Consistent {
                flow: Flow::Information,
                epsilon: eps_if,
            }),
            "incop-gf" => global.stop(StopRule::Consistent {
                flow: Flow::Gradient,
                epsilon: eps_gf,
            }),
            _ if calibrating => global.watch(&Flow::ALL),
            _ => global,
        }
    }

    fn step_label(&self, method: &str) -> String {
        match (method, self.step) {
            ("imp", _) => format!("{:.0}% per layer", self.rate * 100.0),
            (_, StepKind::Fixed) => format!("{:.0}% global", self.rate * 100.0),
            (_, StepKind::Pq) => "PQ-index global".into(),
        }
    }
}

/// How a threshold was chosen, and what the calibration trace says about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Calibration {
    /// The flow.
    pub flow: Flow,
    /// The threshold used.
    pub epsilon: f64,
    /// Whether it was given rather than calibrated.
    pub given: bool,
    /// Retraining epochs the rule would have taken on the trace.
    pub simulated_epochs: usize,
    /// Retraining epochs of the trace.
    pub trace_epochs: usize,
    /// The largest validation accuracy loss (points) of a simulated stop
    /// against the round's full retraining.
    pub worst_drop: f64,
    /// The smallest and largest distance on the trace.
    pub range: (f64, f64),
    /// Rounds in which [`OFFICIAL_EPSILON`] would stop at the first epoch.
    pub official_first_epoch: usize,
    /// Rounds of the trace.
    pub rounds: usize,
}

/// Per round of `rounds` (dense round 0 skipped), the epoch at which the
/// rule `distance < epsilon` stops on this trace, from 1 (the last epoch
/// when it never fires).
fn simulated_stops(rounds: &[Round], flow: Flow, epsilon: f64) -> Vec<usize> {
    rounds
        .iter()
        .skip(1)
        .map(|r| {
            r.epochs_trace
                .iter()
                .position(|e| e.distances.iter().any(|&(f, d)| f == flow && d < epsilon))
                .map_or(r.epochs_trace.len(), |i| i + 1)
        })
        .collect()
}

/// The most validation points the rule `distance < epsilon` loses on this
/// trace in any round, against the round's last epoch.
fn worst_drop(rounds: &[Round], flow: Flow, epsilon: f64) -> f64 {
    simulated_stops(rounds, flow, epsilon)
        .iter()
        .zip(rounds.iter().skip(1))
        .map(|(&stop, r)| {
            let full = r.epochs_trace.last().map_or(0.0, |e| e.validation.accuracy);
            (full - r.epochs_trace[stop - 1].validation.accuracy) * 100.0
        })
        .fold(0.0, f64::max)
}

/// Chooses `ε` for `flow` on a run that retrained every round fully and
/// recorded `flow`'s distances: the largest midpoint between observed
/// distances whose simulated stops lose at most `tolerance` validation
/// points against each round's last epoch. Below every distance, the rule
/// never fires and loses nothing, so a threshold always exists.
///
/// ```
/// use prunus_core::methods::imp::consistency::Flow;
/// use prunus_core::host::Evaluation;
/// use prunus_core::methods::imp::{EpochRecord, Ending, Round};
/// use prunus_lab::infcop::calibrate;
/// let epoch = |e, acc, d| EpochRecord {
///     round: 1, epoch: e, train_loss: 0.0,
///     validation: Evaluation { loss: 0.0, accuracy: acc, samples: 100 },
///     distances: vec![(Flow::Gradient, d)],
/// };
/// let round = |index, trace: Vec<EpochRecord>| Round {
///     index, sparsity: 0.5, epochs: trace.len(), ending: Ending::Limit,
///     validation: trace.last().map_or(Evaluation { loss: 0.0, accuracy: 0.9, samples: 100 },
///                                     |e| e.validation),
///     test: None, wall_s: None, epochs_trace: trace,
/// };
/// // Accuracy is back (within half a point) once the distance is 0.2.
/// let trace = vec![epoch(1, 0.80, 0.9), epoch(2, 0.897, 0.2), epoch(3, 0.90, 0.1)];
/// let c = calibrate(&[round(0, vec![]), round(1, trace)], Flow::Gradient, 0.5).unwrap();
/// assert!((c.epsilon - 0.55).abs() < 1e-12);
/// assert_eq!((c.simulated_epochs, c.trace_epochs), (2, 3));
/// ```
pub fn calibrate(rounds: &[Round], flow: Flow, tolerance: f64) -> Result<Calibration> {
    let mut seen: Vec<f64> = rounds
        .iter()
        .skip(1)
        .flat_map(|r| &r.epochs_trace)
        .flat_map(|e| e.distances.iter().filter(|d| d.0 == flow).map(|d| d.1))
        .collect();
    if seen.is_empty() || seen.iter().any(|d| !d.is_finite()) {
        return Err(Error::InvalidSetting {
            name: "calibration trace",
            value: format!("{} finite {flow} distances", seen.len()),
            expected: "a pruning run that recorded the flow's distance every epoch".into(),
        });
    }
    seen.sort_by(f64::total_cmp);
    seen.dedup();
    let (lo, hi) = (seen[0], seen[seen.len() - 1]);
    let mut candidates: Vec<f64> = seen.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
    candidates.push(hi * 2.0);
    let worst = |epsilon: f64| worst_drop(rounds, flow, epsilon);
    // Below every distance the rule never fires.
    let mut epsilon = lo / 2.0;
    for &c in candidates.iter().rev() {
        if worst(c) <= tolerance + 1e-9 {
            epsilon = c;
            break;
        }
    }
    Ok(summarise(
        rounds,
        flow,
        epsilon,
        false,
        (lo, hi),
        worst(epsilon),
    ))
}

fn summarise(
    rounds: &[Round],
    flow: Flow,
    epsilon: f64,
    given: bool,
    range: (f64, f64),
    worst_drop: f64,
) -> Calibration {
    let stops = simulated_stops(rounds, flow, epsilon);
    let official = simulated_stops(rounds, flow, OFFICIAL_EPSILON);
    Calibration {
        flow,
        epsilon,
        given,
        simulated_epochs: stops.iter().sum(),
        trace_epochs: rounds.iter().skip(1).map(|r| r.epochs_trace.len()).sum(),
        worst_drop,
        range,
        official_first_epoch: official.iter().filter(|&&s| s == 1).count(),
        rounds: stops.len(),
    }
}

/// One method's run on one seed.
#[derive(Clone, Debug, PartialEq)]
pub struct MethodRun {
    /// The method.
    pub method: &'static str,
    /// What IMP did.
    pub run: ImpRun,
    /// Seconds the whole run took (dense training included).
    pub wall_s: f64,
}

impl MethodRun {
    /// Seconds of the pruning rounds (dense training not counted).
    pub fn rounds_s(&self) -> f64 {
        self.run
            .rounds
            .iter()
            .skip(1)
            .filter_map(|r| r.wall_s)
            .sum()
    }

    fn test(&self, round: &Round) -> f64 {
        round.test.map_or(f64::NAN, |e| e.accuracy * 100.0)
    }
}

/// What the protocol measured.
#[derive(Clone, Debug, PartialEq)]
pub struct InfcopResult {
    /// The settings.
    pub config: InfcopConfig,
    /// The dataset's name.
    pub dataset: String,
    /// The network's name.
    pub network: String,
    /// Per seed, one run per method in [`METHODS`] order.
    pub runs: Vec<Vec<MethodRun>>,
    /// The thresholds of the InCoP methods (information, then gradient).
    pub calibration: Vec<Calibration>,
    /// Seconds the protocol took.
    pub wall_s: f64,
}

/// Times a run and reports its rounds.
struct Progress<'a> {
    start: Instant,
    label: String,
    out: &'a mut dyn FnMut(&str),
}

impl Observer for Progress<'_> {
    fn now(&mut self) -> Option<f64> {
        Some(self.start.elapsed().as_secs_f64())
    }

    fn on_round(&mut self, r: &Round) {
        (self.out)(&format!(
            "{} round {:>2}: sparsity {:.4}, {:>2} epochs ({:?}), validation {:.2}%",
            self.label,
            r.index,
            r.sparsity,
            r.epochs,
            r.ending,
            r.validation.accuracy * 100.0
        ));
    }
}

/// Runs the protocol on `data`, selecting on `backend`; `progress` gets one
/// line per round.
pub fn run_infcop<B: Backend + ?Sized>(
    backend: &B,
    data: Arc<Dataset>,
    config: &InfcopConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<InfcopResult> {
    config.validate()?;
    let start = Instant::now();
    let mut widths = vec![data.input_len()];
    widths.extend(&config.hidden);
    widths.push(data.classes);
    let network = Network::mlp(&widths, true, 0)?.name().to_string();
    let mut calibration: Vec<Calibration> = Vec::new();
    let mut runs = Vec::new();
    for (s, &seed) in config.seeds.iter().enumerate() {
        let mut seed_runs = Vec::new();
        for method in METHODS {
            let (eps_if, eps_gf) = match calibration.as_slice() {
                [i, g] => (i.epsilon, g.epsilon),
                _ => (1.0, 1.0),
            };
            let imp = config.imp_config(method, eps_if, eps_gf, s == 0);
            let t = Instant::now();
            let mut host = LabHost::new(
                Network::mlp(&widths, true, seed)?,
                Arc::clone(&data),
                config.sgd,
                seed,
            )?;
            let mut observer = Progress {
                start: t,
                label: format!("seed {seed} {method:<10}"),
                out: progress,
            };
            let run = run_imp(backend, &mut host, &imp, &mut observer)?;
            let wall_s = t.elapsed().as_secs_f64();
            if s == 0 && method == "imp-global" {
                calibration = thresholds(&run.rounds, config)?;
                for c in &calibration {
                    progress(&format!(
                        "ε for {} flow: {:.4e} ({}), simulated {} of {} epochs",
                        c.flow,
                        c.epsilon,
                        if c.given { "given" } else { "calibrated" },
                        c.simulated_epochs,
                        c.trace_epochs
                    ));
                }
            }
            seed_runs.push(MethodRun {
                method,
                run,
                wall_s,
            });
        }
        runs.push(seed_runs);
    }
    Ok(InfcopResult {
        config: config.clone(),
        dataset: data.name.clone(),
        network,
        runs,
        calibration,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

/// The thresholds of both InCoP methods from the calibration trace.
fn thresholds(rounds: &[Round], config: &InfcopConfig) -> Result<Vec<Calibration>> {
    [
        (Flow::Information, config.epsilon_if),
        (Flow::Gradient, config.epsilon_gf),
    ]
    .into_iter()
    .map(|(flow, given)| {
        let auto = calibrate(rounds, flow, config.tolerance)?;
        Ok(match given {
            None => auto,
            Some(e) => summarise(
                rounds,
                flow,
                e,
                true,
                auto.range,
                worst_drop(rounds, flow, e),
            ),
        })
    })
    .collect()
}

impl InfcopResult {
    fn method_runs(&self, m: usize) -> impl Iterator<Item = &MethodRun> {
        self.runs.iter().map(move |seed| &seed[m])
    }

    fn finals(&self, m: usize, f: impl Fn(&MethodRun) -> f64) -> Vec<f64> {
        self.method_runs(m).map(f).collect()
    }

    fn final_test(&self, m: usize) -> Vec<f64> {
        self.finals(m, |r| r.test(r.run.last()))
    }

    fn epochs(&self, m: usize) -> Vec<f64> {
        self.finals(m, |r| r.run.retraining_epochs() as f64)
    }

    fn rounds_s(&self, m: usize) -> Vec<f64> {
        self.finals(m, MethodRun::rounds_s)
    }

    fn rule_label(&self, method: &str) -> String {
        let c = |i: usize| self.calibration.get(i).map_or(f64::NAN, |c| c.epsilon);
        match method {
            "incop-if" => format!("IF, ε = {:.3e}", c(0)),
            "incop-gf" => format!("GF, ε = {:.3e}", c(1)),
            _ => format!("{} epochs", self.config.max_epochs),
        }
    }

    /// Each seed's retraining epochs, rounds time and final test accuracy.
    fn per_seed(&self) -> String {
        let mut out = String::from("\nper seed: retraining epochs / rounds wall s / test acc %\n");
        out.push_str(&format!("{:>5}", "seed"));
        for name in METHODS {
            out.push_str(&format!(" {name:>22}"));
        }
        out.push('\n');
        for (seed, runs) in self.config.seeds.iter().zip(&self.runs) {
            out.push_str(&format!("{seed:>5}"));
            for r in runs {
                let cell = format!(
                    "{} / {:.1} / {:.2}",
                    r.run.retraining_epochs(),
                    r.rounds_s(),
                    r.test(r.run.last())
                );
                out.push_str(&format!(" {cell:>22}"));
            }
            out.push('\n');
        }
        out
    }

    /// One line: method `m`'s epochs, time and accuracy against `base`.
    fn saving(&self, m: usize, base: usize, name: &str) -> String {
        let pairs = |f: &dyn Fn(&Self, usize) -> Vec<f64>| -> Vec<f64> {
            f(self, m)
                .iter()
                .zip(f(self, base))
                .map(|(a, b)| a - b)
                .collect()
        };
        let epochs = pairs(&|s, i| s.epochs(i));
        let fraction: Vec<f64> = self
            .epochs(m)
            .iter()
            .zip(self.epochs(base))
            .map(|(a, b)| 100.0 * (1.0 - a / b))
            .collect();
        let seconds = pairs(&|s, i| s.rounds_s(i));
        let test = pairs(&|s, i| s.final_test(i));
        format!(
            "{name} vs {}: Δ retraining epochs {} ({} % saved), Δ rounds time {} s, Δ test accuracy {} points\n",
            METHODS[base],
            fmt_mean(&epochs, 1),
            fmt_mean(&fraction, 1),
            fmt_mean(&seconds, 1),
            fmt_mean(&test, 2)
        )
    }

    /// Test accuracy and epochs per round (means over the seeds that ran
    /// the round).
    fn per_round(&self) -> String {
        let most = self
            .runs
            .iter()
            .flatten()
            .map(|r| r.run.rounds.len())
            .max()
            .unwrap_or(0);
        let mut out = String::from("\nper round: test accuracy % (retraining epochs), seed mean\n");
        out.push_str(&format!("{:>5} {:>9}", "round", "sparsity"));
        for name in METHODS {
            out.push_str(&format!(" {name:>18}"));
        }
        out.push('\n');
        for k in 0..most {
            let sparsity: Vec<f64> = self
                .method_runs(1)
                .filter_map(|r| r.run.rounds.get(k).map(|x| x.sparsity))
                .collect();
            out.push_str(&format!(
                "{:>5} {:>9.4}",
                k,
                mean_std(&sparsity).map_or(f64::NAN, |x| x.0)
            ));
            for m in 0..METHODS.len() {
                let (acc, epochs) = self.round_values(m, k);
                match (mean_std(&acc), mean_std(&epochs)) {
                    (Some(a), Some(e)) => out.push_str(&format!(" {:>11.2} ({:>4.1})", a.0, e.0)),
                    _ => out.push_str(&format!(" {:>18}", "-")),
                }
            }
            out.push('\n');
        }
        out
    }

    /// Test accuracies and epochs of round `k` of method `m`, over the seeds
    /// that ran it.
    fn round_values(&self, m: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
        self.method_runs(m)
            .filter_map(|r| r.run.rounds.get(k).map(|x| (r.test(x), x.epochs as f64)))
            .unzip()
    }

    /// Test accuracy after each round against cumulative retraining epochs
    /// (seed means over the rounds every seed ran).
    pub fn chart(&self) -> Chart {
        let mut chart = Chart::new(
            format!("{} on {}: IMP vs InCoP", self.network, self.dataset),
            "retraining epochs, cumulative",
            "test accuracy (%)",
        );
        for (m, name) in METHODS.iter().enumerate() {
            let common = self
                .method_runs(m)
                .map(|r| r.run.rounds.len())
                .min()
                .unwrap_or(0);
            let points = (0..common)
                .map(|k| {
                    let x: Vec<f64> = self
                        .method_runs(m)
                        .map(|r| r.run.rounds[1..=k].iter().map(|x| x.epochs as f64).sum())
                        .collect();
                    let (acc, _) = self.round_values(m, k);
                    let mean = |v: &[f64]| mean_std(v).map_or(f64::NAN, |x| x.0);
                    (mean(&x), mean(&acc))
                })
                .collect();
            chart = chart.series(Series::new(*name, points));
        }
        chart
    }
}

impl ProtocolResult for InfcopResult {
    /// The JSON report: per method `epochs`, `wall_s`, `test_acc`, `val_acc`
    /// and `rounds` of the whole run (at the final sparsity), and per round
    /// `test_acc` and `epochs` (values from the seeds that ran that round);
    /// then the calibration trace of the first seed's `imp-global` run, per
    /// round and epoch: `val_acc`, `information_distance` and
    /// `gradient_distance` (one value each).
    fn report(&self) -> Result<Report> {
        let c = &self.config;
        let mut report = Report::new("infcop", self.dataset.clone(), c.seeds.clone());
        report.set_config("model", self.network.clone());
        report.set_config("target", c.target);
        report.set_config("rate", c.rate);
        report.set_config(
            "step",
            match c.step {
                StepKind::Fixed => "fixed",
                StepKind::Pq => "pq",
            },
        );
        report.set_config("dense_epochs", c.dense_epochs as u64);
        report.set_config("warmup_epochs", c.warmup_epochs as u64);
        report.set_config("max_epochs", c.max_epochs as u64);
        report.set_config("sgd", c.sgd.to_json("none (constant)"));
        report.set_config("tolerance_points", c.tolerance);
        report.set_config(
            "flow_samples",
            c.flow_samples.map_or("all validation".into(), |n| json!(n)),
        );
        report.set_config(
            "epsilon",
            json!({
                "information": self.calibration.first().map(|x| x.epsilon),
                "gradient": self.calibration.get(1).map(|x| x.epsilon),
                "calibrated_on": format!("seed {} imp-global validation trace", c.seeds[0]),
                "trace_rows": "imp-global rows with an epoch: that seed only",
            }),
        );
        report.set_config(
            "scope",
            "imp: per layer; others: global over the prunable weights (hidden layers)",
        );
        let dense: Vec<f64> = self
            .method_runs(0)
            .map(|r| r.test(&r.run.rounds[0]))
            .collect();
        report.push(Row::new("dense", "test_acc", dense)?);
        for (m, name) in METHODS.iter().enumerate() {
            let sparsity =
                mean_std(&self.finals(m, |r| r.run.last().sparsity)).map_or(0.0, |x| x.0);
            let rows = [
                ("epochs", self.epochs(m)),
                ("wall_s", self.finals(m, |r| r.wall_s)),
                ("test_acc", self.final_test(m)),
                (
                    "val_acc",
                    self.finals(m, |r| r.run.last().validation.accuracy * 100.0),
                ),
                (
                    "rounds",
                    self.finals(m, |r| (r.run.rounds.len() - 1) as f64),
                ),
            ];
            for (metric, values) in rows {
                report.push(Row::new(*name, metric, values)?.sparsity(sparsity));
            }
            let most = self
                .method_runs(m)
                .map(|r| r.run.rounds.len())
                .max()
                .unwrap_or(0);
            for k in 1..most {
                let (acc, epochs) = self.round_values(m, k);
                let s: Vec<f64> = self
                    .method_runs(m)
                    .filter_map(|r| r.run.rounds.get(k).map(|x| x.sparsity))
                    .collect();
                let s = mean_std(&s).map_or(0.0, |x| x.0);
                report.push(
                    Row::new(*name, "test_acc", acc)?
                        .round(k as u64)
                        .sparsity(s),
                );
                report.push(
                    Row::new(*name, "epochs", epochs)?
                        .round(k as u64)
                        .sparsity(s),
                );
            }
        }
        // The calibration trace, epoch by epoch (its seed only).
        if let Some(trace) = self.runs.first().map(|seed| &seed[1].run) {
            for round in &trace.rounds[1..] {
                for e in &round.epochs_trace {
                    let at = |row: Row| row.round(e.round as u64).epoch(e.epoch as u64);
                    let val = e.validation.accuracy * 100.0;
                    report.push(at(Row::new("imp-global", "val_acc", vec![val])?));
                    for &(flow, d) in &e.distances {
                        let metric = format!("{flow}_distance");
                        report.push(at(Row::new("imp-global", metric, vec![d])?));
                    }
                }
            }
        }
        for (m, name) in METHODS.iter().enumerate() {
            report.set_timing(*name, self.finals(m, |r| r.wall_s).iter().sum());
        }
        report.set_timing("total", self.wall_s);
        Ok(report)
    }

    /// The table: per method its rounds, final sparsity, retraining epochs,
    /// time and accuracy; then the savings against classic IMP and
    /// `imp-global`, the thresholds, and test accuracy per round.
    fn table(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "IMP with rewinding vs Information-Consistent Pruning: {} on {}, {} seed(s), to {:.1}% \
             sparsity of the prunable weights (classifier and biases kept); {} dense epochs \
             (rewind to epoch {}), at most {} retraining epochs per round\n\n",
            self.network,
            self.dataset,
            c.seeds.len(),
            c.target * 100.0,
            c.dense_epochs,
            c.warmup_epochs,
            c.max_epochs
        );
        let dense: Vec<f64> = self
            .method_runs(0)
            .map(|r| r.test(&r.run.rounds[0]))
            .collect();
        out.push_str(&format!(
            "dense test accuracy: {} %\n\n",
            fmt_mean(&dense, 2)
        ));
        out.push_str(&format!(
            "{:<11} {:<16} {:<20} {:>7} {:>9} {:>16} {:>15} {:>15} {:>15}\n",
            "method",
            "pruning",
            "retraining stop",
            "rounds",
            "sparsity",
            "retrain epochs",
            "rounds wall s",
            "val acc %",
            "test acc %"
        ));
        for (m, name) in METHODS.iter().enumerate() {
            let rounds = self.finals(m, |r| (r.run.rounds.len() - 1) as f64);
            let sparsity = self.finals(m, |r| r.run.last().sparsity);
            let val = self.finals(m, |r| r.run.last().validation.accuracy * 100.0);
            out.push_str(&format!(
                "{:<11} {:<16} {:<20} {:>7} {:>9.4} {:>16} {:>15} {:>15} {:>15}\n",
                name,
                c.step_label(name),
                self.rule_label(name),
                fmt_mean(&rounds, 1),
                mean_std(&sparsity).map_or(f64::NAN, |x| x.0),
                fmt_mean(&self.epochs(m), 1),
                fmt_mean(&self.rounds_s(m), 1),
                fmt_mean(&val, 2),
                fmt_mean(&self.final_test(m), 2)
            ));
        }
        out.push_str(&format!(
            "(rounds wall s: pruning, rewinding, retraining and every measurement; on seed {} \
             imp-global also measures both flows every epoch, the calibration trace)\n\n",
            c.seeds[0]
        ));
        for (m, name) in METHODS.iter().enumerate().skip(2) {
            for base in [0, 1] {
                out.push_str(&self.saving(m, base, name));
            }
        }
        out.push('\n');
        for cal in &self.calibration {
            out.push_str(&format!(
                "{} flow: ε = {:.3e} ({}); on seed {}'s imp-global trace the distances span \
                 {:.2e} .. {:.2e}, the rule stops after {} of {} epochs with at most {:.2} \
                 validation points lost in a round; the official ε = {} fires after the first \
                 epoch in {} of {} rounds\n",
                cal.flow,
                cal.epsilon,
                if cal.given {
                    "given".to_string()
                } else {
                    format!("calibrated, tolerance {} points", c.tolerance)
                },
                c.seeds[0],
                cal.range.0,
                cal.range.1,
                cal.simulated_epochs,
                cal.trace_epochs,
                cal.worst_drop,
                OFFICIAL_EPSILON,
                cal.official_first_epoch,
                cal.rounds
            ));
        }
        out.push_str(&self.per_seed());
        out.push_str(&self.per_round());
        out
    }

    fn svg(&self) -> Result<String> {
        self.chart().to_svg()
    }
}
