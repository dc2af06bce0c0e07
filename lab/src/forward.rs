//! Greedy forward selection against backward elimination and training from
//! scratch at equal widths (METHODS.md §4): does building a layer up from
//! the trained network's best units beat removing its weakest ones, and
//! beat a network of the same size trained from scratch?
//!
//! Two tasks:
//!
//! - `mlp`: an MLP (784-300-100-10 with biases) on the dataset (MNIST with
//!   `--data`, else the synthetic default), both hidden layers selected;
//! - `teacher-student`: a two-layer student (32-256-4) on labels of a random
//!   two-layer ReLU teacher with 32 hidden units on Gaussian inputs
//!   ([`TeacherStudent::two_layer`]), its one hidden layer selected. Always
//!   synthetic: it needs no file.
//!
//! Per task and seed the dense network is trained once. Then, per width
//! setting (the accuracy stop rule's widths, found on the first seed and
//! reused on the others; then each `--fractions` budget), three networks
//! of exactly the same widths:
//!
//! - `forward`: greedy forward selection from the dense network, layers in
//!   order, each followed by a brief fine-tune (`--layer-epochs` at
//!   `--layer-lr`, as the official code);
//! - `backward`: from the same dense network, each layer keeps its units of
//!   largest L2 norm, with the same per-layer fine-tune;
//! - `scratch`: the small architecture from a fresh initialisation, trained
//!   as the dense network was.
//!
//! The pruned networks are compacted (unselected units removed, the
//! forward scales folded into the next layer) and run compacted from then
//! on. Dense and scratch training is `--dense-epochs` at the training rate,
//! then `--finetune-epochs` at `--finetune-lr` (a learning-rate drop).
//! "Before fine-tuning" is the pruned, compacted network (for scratch: after
//! that training); then every network trains `--finetune-epochs` more at
//! `--finetune-lr`, so all three have had the same training budget. The
//! stop rule and selection read training and validation samples; the test
//! split is evaluated for the table only.

use std::sync::Arc;
use std::time::Instant;

use prunus_core::host::{Evaluation, Host, Objective, Samples};
use prunus_core::methods::forward::compaction::Fold;
use prunus_core::methods::forward::{
    ForwardConfig, ForwardRun, LayerRecord, Observer, Sampling, Stop, run_backward, run_forward,
};
use prunus_core::{Backend, Split};
use serde_json::json;

use crate::chart::{Chart, Series, grid};
use crate::data::{Dataset, TeacherStudent};
use crate::error::{Error, Result};
use crate::flow::fmt_mean;
use crate::host::{LabHost, Sgd};
use crate::network::Network;
use crate::report::{ProtocolResult, Report, Row, mean_std};

/// The methods, in run order.
pub const METHODS: [&str; 3] = ["forward", "backward", "scratch"];

/// A network and the data it learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    /// The MLP on the protocol's dataset.
    Mlp,
    /// The two-layer student on the teacher's synthetic labels.
    TeacherStudent,
}

impl Task {
    /// The task's name in tables and reports.
    pub fn name(self) -> &'static str {
        match self {
            Task::Mlp => "mlp",
            Task::TeacherStudent => "teacher-student",
        }
    }
}

/// Settings of the protocol.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ForwardLabConfig {
    /// Seeds: each initialises and trains its own networks.
    pub seeds: Vec<u64>,
    /// The tasks, in order.
    pub tasks: Vec<Task>,
    /// Hidden widths of the MLP task.
    pub hidden: Vec<usize>,
    /// Hidden width of the teacher–student task's student.
    pub student_hidden: usize,
    /// Training epochs of the dense networks (and of scratch) at the
    /// training rate, before `finetune_epochs` at the fine-tuning rate.
    pub dense_epochs: usize,
    /// The optimiser of dense and scratch training.
    pub sgd: Sgd,
    /// Width budgets, as fractions of each selected layer's units (each
    /// layer keeps `max(1, round(f · D))`), besides the stop rule's widths.
    pub fractions: Vec<f64>,
    /// Units evaluated per selection step (official: 50).
    pub candidates: usize,
    /// Mini-batch of a selection step (official: 128).
    pub batch: usize,
    /// Validation samples of the stop rule.
    pub evaluation_samples: usize,
    /// The stop rule's relative accuracy tolerance (official: 0.02).
    pub tolerance: f64,
    /// The stop rule's mini-batch fraction (official: 0.95).
    pub batch_fraction: f64,
    /// With or without replacement.
    pub sampling: Sampling,
    /// Fine-tuning after each pruned layer, in epochs (official: 0.1).
    pub layer_epochs: f64,
    /// Learning rate of that fine-tune (official: 2.5e-3).
    pub layer_learning_rate: f32,
    /// Fine-tuning epochs of every network at the end.
    pub finetune_epochs: usize,
    /// Learning rate of the final fine-tune.
    pub finetune_learning_rate: f32,
}

impl Default for ForwardLabConfig {
    /// Seeds 0-2; both tasks; LeNet-300-100 and a 256-unit student; 15 dense
    /// epochs at SGD 0.05; budgets of 5%, 10% and 25% of each layer; the
    /// official selection settings; 5 final fine-tuning epochs at 0.01.
    fn default() -> Self {
        ForwardLabConfig {
            seeds: vec![0, 1, 2],
            tasks: vec![Task::Mlp, Task::TeacherStudent],
            hidden: vec![300, 100],
            student_hidden: 256,
            dense_epochs: 15,
            sgd: Sgd::default(),
            fractions: vec![0.05, 0.1, 0.25],
            candidates: 50,
            batch: 128,
            evaluation_samples: 1000,
            tolerance: 0.02,
            batch_fraction: 0.95,
            sampling: Sampling::WithoutReplacement,
            layer_epochs: 0.1,
            layer_learning_rate: 2.5e-3,
            finetune_epochs: 5,
            finetune_learning_rate: 0.01,
        }
    }
}

impl ForwardLabConfig {
    /// Checks the settings before any work.
    pub fn validate(&self) -> Result<()> {
        if self.seeds.is_empty() {
            return Error::setting("seeds", "none".into(), "at least one seed");
        }
        if self.tasks.is_empty() {
            return Error::setting("tasks", "none".into(), "at least one task");
        }
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return Error::setting(
                "hidden",
                format!("{:?}", self.hidden),
                "at least one hidden layer, none empty",
            );
        }
        if self.student_hidden == 0 {
            return Error::setting("student-hidden", "0".into(), "at least one unit");
        }
        if let Some(f) = self
            .fractions
            .iter()
            .find(|f| !(f.is_finite() && **f > 0.0 && **f <= 1.0))
        {
            return Error::setting("fractions", f.to_string(), "fractions in (0, 1]");
        }
        if self.candidates == 0 || self.batch == 0 || self.evaluation_samples == 0 {
            return Error::setting(
                "candidates, batch, evaluation samples",
                format!(
                    "{}, {}, {}",
                    self.candidates, self.batch, self.evaluation_samples
                ),
                "at least 1 each",
            );
        }
        if !(self.layer_epochs.is_finite() && self.layer_epochs >= 0.0) {
            return Error::setting(
                "layer-epochs",
                self.layer_epochs.to_string(),
                "a fraction of an epoch >= 0",
            );
        }
        for (name, lr) in [
            ("layer-lr", self.layer_learning_rate),
            ("finetune-lr", self.finetune_learning_rate),
        ] {
            if !(lr.is_finite() && lr > 0.0) {
                return Error::setting(name, lr.to_string(), "a positive learning rate");
            }
        }
        if !(self.batch_fraction > 0.0 && self.batch_fraction <= 1.0) {
            return Error::setting(
                "batch-fraction",
                self.batch_fraction.to_string(),
                "a fraction in (0, 1]",
            );
        }
        if !(0.0..=1.0).contains(&self.tolerance) {
            return Error::setting(
                "tolerance",
                self.tolerance.to_string(),
                "a relative tolerance in [0, 1]",
            );
        }
        Ok(())
    }

    /// The selection settings of a run.
    fn selection(&self, train: usize, stop: Stop, seed: u64) -> ForwardConfig {
        let steps = (self.layer_epochs * train as f64 / self.batch as f64).ceil() as usize;
        ForwardConfig::default()
            .candidates(self.candidates)
            .batch(self.batch)
            .evaluation(Samples::first(Split::Validation, self.evaluation_samples))
            .sampling(self.sampling)
            .stop(stop)
            .fine_tune_steps(steps)
            .seed(seed)
    }

    fn layer_sgd(&self) -> Sgd {
        self.sgd
            .learning_rate(self.layer_learning_rate)
            .batch(self.batch)
    }

    fn finetune_sgd(&self) -> Sgd {
        self.sgd.learning_rate(self.finetune_learning_rate)
    }
}

/// Test loss and accuracy (percent) of a network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// Mean test loss.
    pub loss: f64,
    /// Test accuracy, percent.
    pub accuracy: f64,
}

impl From<Evaluation> for Score {
    fn from(e: Evaluation) -> Self {
        Score {
            loss: e.loss,
            accuracy: e.accuracy * 100.0,
        }
    }
}

/// One method's network at one width setting and seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Before the final fine-tune (compacted; scratch: after its training).
    pub before: Score,
    /// After it.
    pub after: Score,
    /// Parameters of the compacted network.
    pub params: usize,
    /// Milliseconds to evaluate 1,000 test samples (median of 5).
    pub infer_ms: f64,
    /// Seconds the method took, fine-tuning included.
    pub wall_s: f64,
    /// The selection's per-layer records (forward and backward).
    pub layers: Vec<LayerRecord>,
}

/// One width setting of a task: the widths and each method's outcome per
/// seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// `auto` (the stop rule's widths) or the budget fraction.
    pub label: String,
    /// Kept units per selected layer.
    pub widths: Vec<usize>,
    /// Per seed, one outcome per method in [`METHODS`] order.
    pub outcomes: Vec<Vec<Outcome>>,
}

impl Setting {
    /// Hidden units kept in all.
    pub fn units(&self) -> usize {
        self.widths.iter().sum()
    }

    fn values(&self, m: usize, f: impl Fn(&Outcome) -> f64) -> Vec<f64> {
        self.outcomes.iter().map(|o| f(&o[m])).collect()
    }
}

/// What one task gave.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskResult {
    /// The task.
    pub task: Task,
    /// The dataset's name.
    pub dataset: String,
    /// The dense network's name.
    pub network: String,
    /// The selected layers' units before pruning.
    pub units: Vec<usize>,
    /// The dense network per seed.
    pub dense: Vec<Outcome>,
    /// The width settings, the stop rule's first.
    pub settings: Vec<Setting>,
}

/// What the protocol gave.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardResult {
    /// The settings.
    pub config: ForwardLabConfig,
    /// One result per task.
    pub tasks: Vec<TaskResult>,
    /// Seconds the protocol took.
    pub wall_s: f64,
}

/// Reports each selected layer.
struct Progress<'a> {
    label: String,
    out: &'a mut dyn FnMut(&str),
}

impl Observer for Progress<'_> {
    fn on_layer(&mut self, l: &LayerRecord) {
        (self.out)(&format!(
            "{}: layer {} kept {} of {} units in {} steps ({:?}), validation {:.2}% -> {:.2}%{}",
            self.label,
            l.parameter,
            l.kept,
            l.units,
            l.steps,
            l.ending,
            l.start.accuracy * 100.0,
            l.selected.accuracy * 100.0,
            l.fine_tuned.map_or(String::new(), |e| format!(
                " ({:.2}% fine-tuned)",
                e.accuracy * 100.0
            ))
        ));
    }
}

/// Runs the protocol: the MLP task on `data`, the teacher–student task on
/// its own synthetic data; backward elimination selects on `backend`.
/// `progress` gets one line per layer and method.
pub fn run_forward_lab<B: Backend + ?Sized>(
    backend: &B,
    data: Arc<Dataset>,
    config: &ForwardLabConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<ForwardResult> {
    config.validate()?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for &task in &config.tasks {
        let (data, hidden) = match task {
            Task::Mlp => (Arc::clone(&data), config.hidden.clone()),
            Task::TeacherStudent => (
                Arc::new(Dataset::teacher_student(&TeacherStudent::two_layer())?),
                vec![config.student_hidden],
            ),
        };
        tasks.push(run_task(backend, task, data, &hidden, config, progress)?);
    }
    Ok(ForwardResult {
        config: config.clone(),
        tasks,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

fn widths_of(data: &Dataset, hidden: &[usize]) -> Vec<usize> {
    let mut w = vec![data.input_len()];
    w.extend(hidden);
    w.push(data.classes);
    w
}

fn run_task<B: Backend + ?Sized>(
    backend: &B,
    task: Task,
    data: Arc<Dataset>,
    hidden: &[usize],
    config: &ForwardLabConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<TaskResult> {
    let train = data.train.len();
    let mut settings: Vec<Setting> = Vec::new();
    let mut dense = Vec::new();
    let network = Network::mlp(&widths_of(&data, hidden), true, 0)?
        .name()
        .to_string();
    for (s, &seed) in config.seeds.iter().enumerate() {
        let t = Instant::now();
        let mut host = LabHost::new(
            Network::mlp(&widths_of(&data, hidden), true, seed)?,
            Arc::clone(&data),
            config.sgd,
            seed,
        )?;
        train_schedule(&mut host, config)?;
        let d = outcome(&mut host, None, t, Vec::new())?;
        progress(&format!(
            "{} seed {seed}: dense {:.2}% test",
            task.name(),
            d.after.accuracy
        ));
        dense.push(d);
        // The stop rule's widths on the first seed, then the budgets.
        let mut plans: Vec<(String, Option<Vec<usize>>)> = vec![(
            "auto".into(),
            settings.first().map(|x: &Setting| x.widths.clone()),
        )];
        for &f in &config.fractions {
            let w = hidden
                .iter()
                .map(|&d| ((f * d as f64).round() as usize).clamp(1, d))
                .collect();
            plans.push((format!("{f}"), Some(w)));
        }
        for (k, (label, widths)) in plans.into_iter().enumerate() {
            let stop = widths.clone().map_or(
                Stop::Accuracy {
                    batch_fraction: config.batch_fraction,
                    tolerance: config.tolerance,
                },
                Stop::Width,
            );
            let name = |m: &str| format!("{} seed {seed} {label:>5} {m:<8}", task.name());
            // Forward selection.
            let t = Instant::now();
            let mut f = host.clone();
            f.reset_optimizer();
            f.set_sgd(config.layer_sgd())?;
            let select = config.selection(train, stop, seed);
            let run = run_forward(
                &mut f,
                &select,
                &mut Progress {
                    label: name("forward"),
                    out: progress,
                },
            )?;
            let widths = run.widths();
            let forward = finish(&mut f, &run, config, t)?;
            // Backward elimination at the same widths.
            let t = Instant::now();
            let mut b = host.clone();
            b.reset_optimizer();
            b.set_sgd(config.layer_sgd())?;
            let eliminate = config.selection(train, Stop::Width(widths.clone()), seed);
            let run = run_backward(
                backend,
                &mut b,
                &eliminate,
                &mut Progress {
                    label: name("backward"),
                    out: progress,
                },
            )?;
            let backward = finish(&mut b, &run, config, t)?;
            // The same widths from scratch.
            let t = Instant::now();
            let mut sc = LabHost::new(
                Network::mlp(&widths_of(&data, &widths), true, seed)?,
                Arc::clone(&data),
                config.sgd,
                seed,
            )?;
            train_schedule(&mut sc, config)?;
            let scratch = outcome(&mut sc, Some(config), t, Vec::new())?;
            progress(&format!(
                "{}: widths {widths:?}, test % after fine-tuning: forward {:.2}, backward {:.2}, scratch {:.2}",
                name(""),
                forward.after.accuracy,
                backward.after.accuracy,
                scratch.after.accuracy
            ));
            if s == 0 {
                settings.push(Setting {
                    label,
                    widths,
                    outcomes: Vec::new(),
                });
            } else if settings[k].widths != widths {
                return Err(Error::InvalidSetting {
                    name: "widths",
                    value: format!("{widths:?} on seed {seed}"),
                    expected: format!("the first seed's {:?}", settings[k].widths),
                });
            }
            settings[k].outcomes.push(vec![forward, backward, scratch]);
        }
    }
    Ok(TaskResult {
        task,
        dataset: data.name.clone(),
        network,
        units: hidden.to_vec(),
        dense,
        settings,
    })
}

/// The dense (and scratch) training: `dense_epochs` at the training rate,
/// then `finetune_epochs` at the fine-tuning rate, so that pruning starts
/// from a network that has had the same learning-rate drop.
fn train_schedule(host: &mut LabHost, config: &ForwardLabConfig) -> Result<()> {
    for _ in 0..config.dense_epochs {
        host.train_epoch()?;
    }
    host.reset_optimizer();
    host.set_sgd(config.finetune_sgd())?;
    for _ in 0..config.finetune_epochs {
        host.train_epoch()?;
    }
    host.reset_optimizer();
    host.set_sgd(config.sgd)?;
    Ok(())
}

/// Compacts a selected network, then scores and fine-tunes it.
fn finish(
    host: &mut LabHost,
    run: &ForwardRun,
    config: &ForwardLabConfig,
    t: Instant,
) -> Result<Outcome> {
    host.compact(Fold::Consumer)?;
    outcome(host, Some(config), t, run.layers.clone())
}

/// Scores `host` on the test split, fine-tunes it when `config` is given
/// and scores it again, and times its inference.
fn outcome(
    host: &mut LabHost,
    config: Option<&ForwardLabConfig>,
    t: Instant,
    layers: Vec<LayerRecord>,
) -> Result<Outcome> {
    let test = Objective::new(Samples::all(Split::Test));
    let before: Score = host.evaluate(&test)?.into();
    let after = match config {
        Some(c) => {
            host.reset_optimizer();
            host.set_sgd(c.finetune_sgd())?;
            for _ in 0..c.finetune_epochs {
                host.train_epoch()?;
            }
            host.evaluate(&test)?.into()
        }
        None => before,
    };
    let wall_s = t.elapsed().as_secs_f64();
    Ok(Outcome {
        before,
        after,
        params: host.network().parameter_count(),
        infer_ms: inference_ms(host)?,
        wall_s,
        layers,
    })
}

/// Milliseconds per 1,000 test samples of a forward pass (median of 5).
fn inference_ms(host: &mut LabHost) -> Result<f64> {
    let test = Objective::new(Samples::all(Split::Test));
    let mut times = Vec::with_capacity(5);
    let mut samples = 1;
    for _ in 0..5 {
        let t = Instant::now();
        samples = host.evaluate(&test)?.samples.max(1);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[2] * 1e3 * 1000.0 / samples as f64)
}

impl TaskResult {
    /// The task's table: widths, then per method test accuracy before and
    /// after fine-tuning, test loss after, parameters; then the answers.
    pub fn table(&self, config: &ForwardLabConfig) -> String {
        let mut out = String::new();
        let dense_acc: Vec<f64> = self.dense.iter().map(|o| o.after.accuracy).collect();
        let dense_loss: Vec<f64> = self.dense.iter().map(|o| o.after.loss).collect();
        out.push_str(&format!(
            "{} ({}) on {}: {} seeds; dense test accuracy {} %, loss {}, {} parameters, {:.3} ms per 1,000 samples\n",
            self.task.name(),
            self.network,
            self.dataset,
            self.dense.len(),
            fmt_mean(&dense_acc, 2),
            fmt_mean(&dense_loss, 4),
            self.dense.first().map_or(0, |o| o.params),
            mean_std(&self.dense.iter().map(|o| o.infer_ms).collect::<Vec<_>>()).map_or(0.0, |x| x.0),
        ));
        out.push_str(&format!(
            "{:<7} {:<12} {:<9} {:>16} {:>16} {:>16} {:>9} {:>9}\n",
            "setting",
            "widths",
            "method",
            "test % before ft",
            "test % after ft",
            "test loss",
            "params",
            "ms/1k"
        ));
        for s in &self.settings {
            let w = s
                .widths
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("-");
            for (m, name) in METHODS.iter().enumerate() {
                out.push_str(&format!(
                    "{:<7} {:<12} {:<9} {:>16} {:>16} {:>16} {:>9} {:>9.3}\n",
                    s.label,
                    w,
                    name,
                    fmt_mean(&s.values(m, |o| o.before.accuracy), 2),
                    fmt_mean(&s.values(m, |o| o.after.accuracy), 2),
                    fmt_mean(&s.values(m, |o| o.after.loss), 4),
                    s.outcomes.first().map_or(0, |o| o[m].params),
                    mean_std(&s.values(m, |o| o.infer_ms)).map_or(0.0, |x| x.0),
                ));
            }
        }
        out.push_str(&self.answers(config));
        out
    }

    /// Whether forward selection beats each baseline, setting by setting,
    /// in test loss and accuracy after fine-tuning (paired by seed).
    fn answers(&self, config: &ForwardLabConfig) -> String {
        let mut out = String::new();
        for (base, name) in [(1, "backward elimination"), (2, "training from scratch")] {
            let mut loss_wins = 0;
            let mut acc_wins = 0;
            let mut lines = Vec::new();
            for s in &self.settings {
                let diff = |f: fn(&Outcome) -> f64| -> Vec<f64> {
                    s.outcomes.iter().map(|o| f(&o[0]) - f(&o[base])).collect()
                };
                let dl = diff(|o| o.after.loss);
                let da = diff(|o| o.after.accuracy);
                let (ml, _) = mean_std(&dl).unwrap_or((0.0, 0.0));
                let (ma, _) = mean_std(&da).unwrap_or((0.0, 0.0));
                loss_wins += usize::from(ml < 0.0);
                acc_wins += usize::from(ma > 0.0);
                lines.push(format!(
                    "{} ({} units): Δloss {}, Δacc {} points",
                    s.label,
                    s.units(),
                    fmt_mean(&dl, 4),
                    fmt_mean(&da, 2)
                ));
            }
            out.push_str(&format!(
                "forward vs {name}: lower test loss at {loss_wins} of {n} widths, higher test accuracy at {acc_wins} of {n} (after {} fine-tuning epochs; mean ± std over seeds of forward − {})\n  {}\n",
                config.finetune_epochs,
                METHODS[base],
                lines.join("; "),
                n = self.settings.len(),
            ));
        }
        out
    }
}

impl ForwardResult {}

impl ProtocolResult for ForwardResult {
    /// The JSON report: per task (`task`), width (`width`: hidden units
    /// kept in all) and method, `test_acc`, `test_acc_before_ft`,
    /// `test_loss`, `test_loss_before_ft`, `params`, `infer_ms` and
    /// `wall_s`; the dense networks as method `dense`.
    fn report(&self) -> Result<Report> {
        let c = &self.config;
        let dataset = self
            .tasks
            .iter()
            .find(|t| t.task == Task::Mlp)
            .map_or("synthetic".to_string(), |t| t.dataset.clone());
        let mut report = Report::new("forward", dataset, c.seeds.clone());
        let mut models = serde_json::Map::new();
        for t in &self.tasks {
            models.insert(
                t.task.name().into(),
                json!({"model": t.network, "dataset": t.dataset, "selected_units": t.units,
                       "widths": t.settings.iter().map(|s| json!({"setting": s.label, "widths": s.widths}))
                                   .collect::<Vec<_>>()}),
            );
        }
        report.set_config("tasks", serde_json::Value::Object(models));
        report.set_config("dense_epochs", c.dense_epochs as u64);
        report.set_config("sgd", c.sgd.to_json("none (constant)"));
        report.set_config("fractions", c.fractions.clone());
        report.set_config(
            "selection",
            json!({"candidates": c.candidates, "batch": c.batch,
                   "evaluation": format!("first {} validation samples", c.evaluation_samples),
                   "tolerance": c.tolerance, "batch_fraction": c.batch_fraction,
                   "sampling": format!("{:?}", c.sampling),
                   "auto_widths": "the stop rule's widths on the first seed, budgets on the others"}),
        );
        report.set_config(
            "fine_tuning",
            json!({"per_layer_epochs": c.layer_epochs, "per_layer_learning_rate": c.layer_learning_rate,
                   "final_epochs": c.finetune_epochs, "final_learning_rate": c.finetune_learning_rate,
                   "dense_and_scratch": "dense_epochs at the learning rate, then final_epochs at the final rate; pruned networks and scratch then get final_epochs more"}),
        );
        for t in &self.tasks {
            let task = t.task.name();
            let dense = |f: fn(&Outcome) -> f64| t.dense.iter().map(f).collect::<Vec<f64>>();
            let units: u64 = t.units.iter().sum::<usize>() as u64;
            for (metric, values) in [
                ("test_acc", dense(|o| o.after.accuracy)),
                ("test_loss", dense(|o| o.after.loss)),
                ("params", dense(|o| o.params as f64)),
                ("infer_ms", dense(|o| o.infer_ms)),
            ] {
                report.push(Row::new("dense", metric, values)?.width(units).task(task));
            }
            for s in &t.settings {
                for (m, name) in METHODS.iter().enumerate() {
                    for (metric, values) in [
                        ("test_acc", s.values(m, |o| o.after.accuracy)),
                        ("test_acc_before_ft", s.values(m, |o| o.before.accuracy)),
                        ("test_loss", s.values(m, |o| o.after.loss)),
                        ("test_loss_before_ft", s.values(m, |o| o.before.loss)),
                        ("params", s.values(m, |o| o.params as f64)),
                        ("infer_ms", s.values(m, |o| o.infer_ms)),
                        ("wall_s", s.values(m, |o| o.wall_s)),
                    ] {
                        report.push(
                            Row::new(*name, metric, values)?
                                .width(s.units() as u64)
                                .task(task),
                        );
                    }
                }
            }
        }
        for (m, name) in METHODS.iter().enumerate() {
            let total: f64 = self
                .tasks
                .iter()
                .flat_map(|t| &t.settings)
                .flat_map(|s| s.values(m, |o| o.wall_s))
                .sum();
            report.set_timing(*name, total);
        }
        report.set_timing("total", self.wall_s);
        Ok(report)
    }

    /// Every task's table, then the time taken.
    fn table(&self) -> String {
        let mut out = String::new();
        for t in &self.tasks {
            out.push_str(&t.table(&self.config));
            out.push('\n');
        }
        out.push_str(&format!("total {:.1} s\n", self.wall_s));
        out
    }

    /// Per task, test accuracy after fine-tuning against hidden units kept
    /// (seed means), one line per method, with the dense level: one panel
    /// per task, as an SVG document.
    fn svg(&self) -> Result<String> {
        let charts: Vec<Chart> = self
            .tasks
            .iter()
            .map(|t| {
                let mut settings: Vec<&Setting> = t.settings.iter().collect();
                settings.sort_by_key(|s| s.units());
                let mut chart = Chart::new(
                    format!("{} on {}", t.network, t.dataset),
                    "hidden units kept (count, all layers)",
                    "test accuracy after fine-tuning (%)",
                );
                let mean = |v: &[f64]| mean_std(v).map_or(f64::NAN, |x| x.0);
                for (m, name) in METHODS.iter().enumerate() {
                    let points = settings
                        .iter()
                        .map(|s| (s.units() as f64, mean(&s.values(m, |o| o.after.accuracy))))
                        .collect();
                    chart = chart.series(Series::new(*name, points));
                }
                let dense = mean(&t.dense.iter().map(|o| o.after.accuracy).collect::<Vec<_>>());
                if let (Some(lo), Some(hi)) = (settings.first(), settings.last()) {
                    chart = chart.series(Series::new(
                        "dense",
                        vec![(lo.units() as f64, dense), (hi.units() as f64, dense)],
                    ));
                }
                chart
            })
            .collect();
        grid(
            "Greedy forward selection vs backward elimination vs scratch",
            &charts,
            2,
        )
    }
}
