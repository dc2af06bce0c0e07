//! The Combinatorial Brain Surgeon paper's MLPNet protocol (METHODS.md §2):
//! train MLPNet (784-40-20-10, ReLU, no biases) on the training split, build
//! the empirical Fisher from every training sample's gradient, then prune it
//! one-shot at each sparsity with MP, WF-S, WF, CBS-S and CBS and measure
//! test accuracy without fine-tuning.
//!
//! All weights are pruned globally (the classifier too, as in the paper),
//! exactly `round(s · d)` of them. The Fisher is one block with damping
//! `λ = 1e-3`. CBS-S's start and pass selection use the true loss of the
//! first 5,000 training samples; CBS is CBS-S's set with the multi-weight
//! OBS update, WF is WF-S's set with WoodFisher's summed single-weight
//! update.

use std::sync::Arc;
use std::time::Instant;

use prunus_core::contract::dense::Dense;
use prunus_core::host::{Host, Objective, ParameterKind, Samples, Split};
use prunus_core::methods::second_order::fisher::{Fisher, FisherConfig, scale_update};
use prunus_core::methods::second_order::surgeon::{
    SearchConfig, cbs_select, flat_weights, magnitude, pruned_count, pruned_loss, woodfisher,
    write_pruned,
};
use serde_json::json;

use crate::chart::{Chart, Series};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::flow::fmt_mean;
use crate::host::{LabHost, Sgd};
use crate::network::Network;
use crate::report::{ProtocolResult, Report, Row, mean_std};

/// The methods, in the paper's column order.
pub const METHODS: [&str; 5] = ["MP", "WF-S", "CBS-S", "WF", "CBS"];

/// The paper's sparsities.
pub const SPARSITIES: [f64; 7] = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98];

/// The paper's MLPNet table (test accuracy %, mean of 5 seeds, dense 93.97),
/// one row per [`SPARSITIES`] entry, columns as [`METHODS`].
pub const PUBLISHED: [[f64; 5]; 7] = [
    [93.93, 93.93, 93.91, 94.02, 93.96],
    [93.78, 93.75, 93.85, 93.82, 93.96],
    [93.62, 93.48, 93.75, 93.77, 93.98],
    [92.89, 93.13, 93.59, 93.57, 93.90],
    [90.30, 90.77, 92.37, 91.69, 93.14],
    [83.64, 83.16, 88.24, 85.54, 88.92],
    [32.25, 34.55, 66.64, 38.26, 55.45],
];

/// Settings of the protocol.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct CbsConfig {
    /// Seeds: each trains its own network.
    pub seeds: Vec<u64>,
    /// Sparsities to prune at, each in `[0, 1]`.
    pub sparsities: Vec<f64>,
    /// Hidden widths (40, 20).
    pub hidden: Vec<usize>,
    /// Training epochs (the learning rate drops tenfold for the last third).
    pub epochs: usize,
    /// The optimiser.
    pub sgd: Sgd,
    /// Training samples whose gradients build the Fisher (`None`: all).
    pub fisher_samples: Option<usize>,
    /// Training samples of the true loss (5,000).
    pub loss_samples: usize,
    /// The Fisher's settings (`λ = 1e-3`, one block).
    pub fisher: FisherConfig,
    /// The CBS-S search's settings (the seed is the run's).
    pub search: SearchConfig,
    /// The multiplier of the CBS and WF updates of kept weights (1).
    pub update_scale: f64,
}

impl Default for CbsConfig {
    fn default() -> Self {
        CbsConfig {
            seeds: vec![0, 1, 2],
            sparsities: SPARSITIES.to_vec(),
            hidden: vec![40, 20],
            epochs: 20,
            sgd: Sgd::default(),
            fisher_samples: None,
            loss_samples: 5000,
            fisher: FisherConfig::default(),
            search: SearchConfig::default(),
            update_scale: 1.0,
        }
    }
}

impl CbsConfig {
    /// Checks every setting before any work.
    pub fn validate(&self) -> Result<()> {
        let bad = Error::setting;
        if self.seeds.is_empty() {
            return bad("seeds", "none".into(), "at least one seed");
        }
        if self.sparsities.is_empty() {
            return bad("sparsities", "none".into(), "at least one sparsity");
        }
        if let Some(s) = self.sparsities.iter().find(|s| !(0.0..=1.0).contains(*s)) {
            return bad("sparsity", s.to_string(), "a value in [0, 1]");
        }
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return bad(
                "hidden widths",
                format!("{:?}", self.hidden),
                "widths of at least 1",
            );
        }
        if self.fisher_samples == Some(0) || self.loss_samples == 0 {
            return bad("samples", "0".into(), "at least one sample");
        }
        if !(self.fisher.damping.is_finite() && self.fisher.damping > 0.0) {
            return bad(
                "damping",
                self.fisher.damping.to_string(),
                "a finite value > 0",
            );
        }
        if !self.update_scale.is_finite() {
            return bad(
                "update scale",
                self.update_scale.to_string(),
                "a finite value",
            );
        }
        Ok(())
    }
}

/// What one seed recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct CbsRun {
    /// The seed.
    pub seed: u64,
    /// Test accuracy of the dense network, percent.
    pub dense_acc: f64,
    /// Test accuracy per sparsity (rows) and method (columns as
    /// [`METHODS`]), percent.
    pub test_acc: Vec<[f64; 5]>,
    /// CBS-S's objective over magnitude's, per sparsity.
    pub objective_ratio: Vec<f64>,
    /// Swap passes CBS-S ran, per sparsity.
    pub passes: Vec<usize>,
    /// Seconds per stage: train, fisher, select, update, evaluate.
    pub timing: Timing,
}

/// Seconds spent per stage.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// Training the network.
    pub train: f64,
    /// Per-sample gradients, the Fisher's factorisation and `diag(F̂⁻¹)`.
    pub fisher: f64,
    /// Selections (CBS-S's loss evaluations included).
    pub select: f64,
    /// WF and CBS updates.
    pub update: f64,
    /// Test-set evaluations.
    pub evaluate: f64,
}

impl Timing {
    fn add(&mut self, other: &Timing) {
        self.train += other.train;
        self.fisher += other.fisher;
        self.select += other.select;
        self.update += other.update;
        self.evaluate += other.evaluate;
    }
}

/// All seeds of a protocol run.
#[derive(Clone, Debug, PartialEq)]
pub struct CbsResult {
    /// The settings.
    pub config: CbsConfig,
    /// The dataset's name.
    pub dataset: String,
    /// The network's description.
    pub network: String,
    /// Fisher samples used.
    pub fisher_samples: usize,
    /// One run per seed.
    pub runs: Vec<CbsRun>,
    /// Seconds in all.
    pub wall_s: f64,
}

/// Runs the protocol on `data` with `dense` doing the linear algebra;
/// `progress` gets a line after every seed's stage.
pub fn run_cbs<D: Dense + ?Sized>(
    dense: &D,
    data: Arc<Dataset>,
    config: &CbsConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<CbsResult> {
    config.validate()?;
    let start = Instant::now();
    let mut widths = vec![data.input_len()];
    widths.extend(&config.hidden);
    widths.push(data.classes);
    let network = Network::mlp(&widths, false, 0)?.name().to_string();
    let fisher_samples = config
        .fisher_samples
        .unwrap_or(data.train.labels.len())
        .min(data.train.labels.len());
    let mut runs = Vec::new();
    for &seed in &config.seeds {
        runs.push(run_seed(
            dense,
            &data,
            config,
            &widths,
            fisher_samples,
            seed,
            progress,
        )?);
    }
    Ok(CbsResult {
        config: config.clone(),
        dataset: data.name.clone(),
        network,
        fisher_samples,
        runs,
        wall_s: start.elapsed().as_secs_f64(),
    })
}

fn run_seed<D: Dense + ?Sized>(
    dense: &D,
    data: &Arc<Dataset>,
    config: &CbsConfig,
    widths: &[usize],
    fisher_samples: usize,
    seed: u64,
    progress: &mut dyn FnMut(&str),
) -> Result<CbsRun> {
    let mut timing = Timing::default();
    let t = Instant::now();
    let network = Network::mlp(widths, false, seed)?;
    let mut host = LabHost::new(network, Arc::clone(data), config.sgd, seed)?;
    let late = config.epochs - config.epochs / 3;
    for e in 0..config.epochs {
        if e == late {
            host.set_sgd(config.sgd.learning_rate(config.sgd.learning_rate / 10.0))?;
        }
        host.train_epoch()?;
    }
    timing.train = t.elapsed().as_secs_f64();
    let test = Objective::new(Samples::all(Split::Test));
    let dense_acc = host.evaluate(&test)?.accuracy * 100.0;
    progress(&format!(
        "seed {seed}: trained {} epochs in {:.1} s, dense test accuracy {dense_acc:.2}%",
        config.epochs, timing.train
    ));

    one_shot(
        dense,
        &mut host,
        config,
        fisher_samples,
        RunStart {
            seed,
            dense_acc,
            timing,
        },
        progress,
    )
}

/// What a run knows before its one-shot comparison: the seed, the
/// trained network's test accuracy (percent) and the time spent so far.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunStart {
    /// The seed (of CBS-S's search).
    pub seed: u64,
    /// Test accuracy of the dense network, percent.
    pub dense_acc: f64,
    /// Time spent so far (training).
    pub timing: Timing,
}

/// The protocol's one-shot comparison on a trained `host`, any
/// [`Host`] (the lab's networks, or a framework's model through its
/// adapter): the empirical Fisher of the weights from the first
/// `fisher_samples` training samples' gradients, then MP, WF-S, CBS-S, WF
/// and CBS at each of `config`'s sparsities, each tested on the test split
/// without fine-tuning, the host's weights restored after each. Every
/// [`ParameterKind::Weight`] is pruned, globally.
pub fn one_shot<D: Dense + ?Sized, H: Host + ?Sized>(
    dense: &D,
    host: &mut H,
    config: &CbsConfig,
    fisher_samples: usize,
    start: RunStart,
    progress: &mut dyn FnMut(&str),
) -> Result<CbsRun> {
    config.validate()?;
    let RunStart {
        seed,
        dense_acc,
        mut timing,
    } = start;
    let test = Objective::new(Samples::all(Split::Test));
    let t = Instant::now();
    let params: Vec<usize> = (0..host.parameters().len())
        .filter(|&i| host.parameters()[i].kind == ParameterKind::Weight)
        .collect();
    let sizes: Vec<usize> = params
        .iter()
        .map(|&i| host.parameters()[i].shape.numel())
        .collect();
    let theta = flat_weights(host, &params)?;
    let gradients = host.per_sample_gradients(
        &Objective::new(Samples::first(Split::Train, fisher_samples)),
        &params,
    )?;
    let fisher = Fisher::new(dense, &gradients, fisher_samples, &sizes, &config.fisher)?;
    drop(gradients);
    let diagonal = fisher.inverse_diagonal()?;
    timing.fisher = t.elapsed().as_secs_f64();
    progress(&format!(
        "seed {seed}: Fisher of {} weights from {fisher_samples} samples in {:.1} s",
        theta.len(),
        timing.fisher
    ));

    let snapshot = host.snapshot()?;
    let loss_samples = config.loss_samples.min(host.split_len(Split::Train)?);
    let loss_objective = Objective::new(Samples::first(Split::Train, loss_samples));
    let mut run = CbsRun {
        seed,
        dense_acc,
        test_acc: Vec::new(),
        objective_ratio: Vec::new(),
        passes: Vec::new(),
        timing,
    };
    for &sparsity in &config.sparsities {
        let k = pruned_count(sparsity, theta.len())?;
        let mut acc = [0.0; 5];
        let evaluate = |host: &mut H,
                        pruned: &[bool],
                        delta: Option<&[f64]>,
                        timing: &mut Timing|
         -> Result<f64> {
            let t = Instant::now();
            write_pruned(host, &params, &theta, delta, pruned)?;
            let a = host.evaluate(&test)?.accuracy * 100.0;
            host.set_masks(&vec![None; host.parameters().len()])?;
            host.restore(&snapshot)?;
            timing.evaluate += t.elapsed().as_secs_f64();
            Ok(a)
        };

        let t = Instant::now();
        let mp = magnitude(&theta, k)?;
        let wf_s = woodfisher(&theta, &diagonal, k)?;
        run.timing.select += t.elapsed().as_secs_f64();
        acc[0] = evaluate(host, &mp, None, &mut run.timing)?;
        acc[1] = evaluate(host, &wf_s, None, &mut run.timing)?;

        let t = Instant::now();
        let search = config.search.seed(seed);
        let chosen = cbs_select(&fisher, &theta, k, &search, &mut |p| {
            pruned_loss(host, &params, p, &loss_objective)
        })?;
        run.timing.select += t.elapsed().as_secs_f64();
        acc[2] = evaluate(host, &chosen.pruned, None, &mut run.timing)?;

        let t = Instant::now();
        let mut wf = fisher.woodfisher_update(&theta, &wf_s, &diagonal)?;
        scale_update(&mut wf, &wf_s, config.update_scale)?;
        let mut obs = fisher.obs_update(&theta, &chosen.pruned)?;
        scale_update(&mut obs, &chosen.pruned, config.update_scale)?;
        run.timing.update += t.elapsed().as_secs_f64();
        acc[3] = evaluate(host, &wf_s, Some(&wf), &mut run.timing)?;
        acc[4] = evaluate(host, &chosen.pruned, Some(&obs), &mut run.timing)?;

        let mp_objective = fisher.objective(&theta, &mp)?;
        run.objective_ratio.push(if mp_objective > 0.0 {
            chosen.objective / mp_objective
        } else {
            1.0
        });
        run.passes.push(chosen.passes);
        run.test_acc.push(acc);
        progress(&format!(
            "seed {seed}: sparsity {sparsity}: objective MP {mp_objective:.3e}, CBS-S {:.3e} \
             (start {}, best pass {} of {}, {} swaps); {}",
            chosen.objective,
            chosen.start,
            chosen.pass,
            chosen.passes,
            chosen.swaps,
            METHODS
                .iter()
                .zip(acc)
                .map(|(m, a)| format!("{m} {a:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(run)
}

impl CbsResult {
    fn values(&self, s: usize, m: usize) -> Vec<f64> {
        self.runs.iter().map(|r| r.test_acc[s][m]).collect()
    }

    fn timing(&self) -> Timing {
        let mut total = Timing::default();
        for r in &self.runs {
            total.add(&r.timing);
        }
        total
    }

    /// Mean test accuracy against sparsity, one line per method.
    pub fn chart(&self) -> Chart {
        let mut chart = Chart::new(
            format!("{} on {}: one-shot pruning", self.network, self.dataset),
            "sparsity (fraction of weights removed)",
            "test accuracy (%)",
        );
        for (m, name) in METHODS.iter().enumerate() {
            let points = (0..self.config.sparsities.len())
                .map(|s| {
                    let mean = mean_std(&self.values(s, m)).map_or(f64::NAN, |x| x.0);
                    (self.config.sparsities[s], mean)
                })
                .collect();
            chart = chart.series(Series::new(*name, points));
        }
        chart
    }
}

impl ProtocolResult for CbsResult {
    /// The JSON report: `test_acc` per method and `sparsity`, the dense
    /// network's as method `dense`, and CBS-S's `objective_ratio` and
    /// `passes`.
    fn report(&self) -> Result<Report> {
        let c = &self.config;
        let mut report = Report::new("cbs", self.dataset.clone(), c.seeds.clone());
        report.set_config("model", self.network.clone());
        report.set_config("fisher_samples", self.fisher_samples as u64);
        report.set_config("damping", c.fisher.damping);
        report.set_config("blocks", format!("{:?}", c.fisher.blocks));
        report.set_config("epochs", c.epochs as u64);
        report.set_config(
            "sgd",
            c.sgd.to_json("x0.1 for the last third of the epochs"),
        );
        report.set_config("loss_samples", c.loss_samples as u64);
        report.set_config(
            "search",
            json!({"trials": c.search.trials, "epsilon": c.search.epsilon,
                   "window": c.search.window, "misses": c.search.misses,
                   "passes": c.search.passes, "patience": c.search.patience}),
        );
        report.set_config("update_scale", c.update_scale);
        report.set_config("scope", "global over all weights, classifier included");
        report.push(Row::new(
            "dense",
            "test_acc",
            self.runs.iter().map(|r| r.dense_acc).collect(),
        )?);
        for (s, &sparsity) in c.sparsities.iter().enumerate() {
            for (m, name) in METHODS.iter().enumerate() {
                report.push(Row::new(*name, "test_acc", self.values(s, m))?.sparsity(sparsity));
            }
            let ratio = self.runs.iter().map(|r| r.objective_ratio[s]).collect();
            report.push(Row::new("CBS-S", "objective_ratio", ratio)?.sparsity(sparsity));
            let passes = self.runs.iter().map(|r| r.passes[s] as f64).collect();
            report.push(Row::new("CBS-S", "passes", passes)?.sparsity(sparsity));
        }
        let t = self.timing();
        report.set_timing("train", t.train);
        report.set_timing("fisher", t.fisher);
        report.set_timing("select", t.select);
        report.set_timing("update", t.update);
        report.set_timing("evaluate", t.evaluate);
        report.set_timing("total", self.wall_s);
        Ok(report)
    }

    /// The table in the paper's layout, the published numbers beside it,
    /// then each method's gap to MP here and in the paper.
    fn table(&self) -> String {
        let c = &self.config;
        let dense: Vec<f64> = self.runs.iter().map(|r| r.dense_acc).collect();
        let mut out = format!(
            "{} on {}, {} seed(s); Fisher from {} training samples, λ = {}; \
             test accuracy %, one-shot, no fine-tuning (dense {})\n\n",
            self.network,
            self.dataset,
            self.runs.len(),
            self.fisher_samples,
            c.fisher.damping,
            fmt_mean(&dense, 2)
        );
        out.push_str(&format!("| sparsity | {} |", METHODS.join(" | ")));
        out.push_str(" paper: MP | WF-S | CBS-S | WF | CBS |\n");
        out.push_str(&format!("|---|{}---|---|---|---|---|\n", "---|".repeat(5)));
        for (s, &sparsity) in c.sparsities.iter().enumerate() {
            out.push_str(&format!("| {sparsity} |"));
            for m in 0..5 {
                out.push_str(&format!(" {} |", fmt_mean(&self.values(s, m), 2)));
            }
            match published(sparsity) {
                Some(row) => {
                    for v in row {
                        out.push_str(&format!(" {v:.2} |"));
                    }
                }
                None => out.push_str(" | | | | |"),
            }
            out.push('\n');
        }
        out.push_str("\nGap to MP, percentage points (here / paper):\n\n");
        out.push_str(&format!(
            "| sparsity | {} |\n|---|---|---|---|---|\n",
            METHODS[1..].join(" | ")
        ));
        for (s, &sparsity) in c.sparsities.iter().enumerate() {
            let mp = mean_std(&self.values(s, 0)).map_or(f64::NAN, |x| x.0);
            out.push_str(&format!("| {sparsity} |"));
            for m in 1..5 {
                let here = mean_std(&self.values(s, m)).map_or(f64::NAN, |x| x.0) - mp;
                match published(sparsity) {
                    Some(row) => out.push_str(&format!(" {here:+.2} / {:+.2} |", row[m] - row[0])),
                    None => out.push_str(&format!(" {here:+.2} / |")),
                }
            }
            out.push('\n');
        }
        out.push_str("\nCBS-S objective θ_PᵀF_PPθ_P over magnitude's, and swap passes run:\n");
        for (s, &sparsity) in c.sparsities.iter().enumerate() {
            let ratio: Vec<f64> = self.runs.iter().map(|r| r.objective_ratio[s]).collect();
            let passes: Vec<f64> = self.runs.iter().map(|r| r.passes[s] as f64).collect();
            out.push_str(&format!(
                "  {sparsity}: ratio {}, passes {}\n",
                fmt_mean(&ratio, 3),
                fmt_mean(&passes, 1)
            ));
        }
        let t = self.timing();
        out.push_str(&format!(
            "\nseconds: train {:.1}, fisher {:.1}, select {:.1}, update {:.1}, evaluate {:.1}, total {:.1}\n",
            t.train, t.fisher, t.select, t.update, t.evaluate, self.wall_s
        ));
        out
    }

    fn svg(&self) -> Result<String> {
        self.chart().to_svg()
    }
}

/// The published row at `sparsity`, if the paper has one.
pub fn published(sparsity: f64) -> Option<[f64; 5]> {
    SPARSITIES
        .iter()
        .position(|&s| (s - sparsity).abs() < 1e-9)
        .map(|i| PUBLISHED[i])
}
