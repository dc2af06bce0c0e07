//! `prunus lab ...`: the founding papers' protocols on the lab's networks.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use prunus_core::methods::forward::Sampling;
use prunus_lab::cbs::{CbsConfig, CbsResult, run_cbs};
use prunus_lab::data::{Dataset, TeacherStudent};
use prunus_lab::flow::{FlowConfig, FlowResult, Progress, run_flow};
use prunus_lab::forward::{ForwardLabConfig, ForwardResult, Task, run_forward_lab};
use prunus_lab::infcop::{InfcopConfig, InfcopResult, StepKind, run_infcop};
use prunus_lab::{ProtocolResult, Report, write_atomic, write_text_atomic};

use crate::args::check_output;
use crate::backend::{BackendJob, BackendKind, BackendSpec, Device, dispatch};
use crate::error::Error;
use crate::progress::Bars;

/// Arguments of `prunus lab flow`.
#[derive(Debug, Args)]
#[command(after_help = "\
The gradient-flow paper's protocol (Lubana & Dick, ICLR 2021) at small scale: a CNN \
(3x3 conv layers of --channels filters, each followed by ReLU and 2x2 max pooling, then a \
linear classifier) is pruned by whole filters from initialisation in --rounds \
prune-and-train rounds of one epoch each (round k removes p / (k p + n (1 - p)) of the \
filters still present, so exactly --sparsity of them are gone after round n; global ranking \
on raw scores; every layer keeps at least floor(0.05 width) + 1 filters; the classifier is \
never pruned), then trained --epochs more (learning rate / 10 for the last third). Every \
measure (magnitude, snip, snip-biased, taylor, grasp, grad-norm, random) runs once per \
seed. Prints a table with test accuracy and training-loss figures and answers the paper's \
three claims from it.

Data: --data DIR reads MNIST-format IDX files (t10k-images-idx3-ubyte.gz and \
t10k-labels-idx1-ubyte.gz) and splits them by index mod 5 (0-2 train, 3 validation, 4 \
test); without --data a synthetic teacher-student task of the same size is used.

Example: prunus lab flow --data ../shared/data/mnist --json flow.json --plot flow.svg")]
pub(crate) struct FlowArgs {
    /// Measures to compare, comma-separated (default: all seven).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub(crate) measures: Option<Vec<String>>,
    /// Fraction of filters removed in all, in [0, 1).
    #[arg(long, value_name = "P", default_value_t = 0.8)]
    pub(crate) sparsity: f64,
    /// Prune-and-train rounds.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub(crate) rounds: usize,
    /// Training epochs after the last round.
    #[arg(long, value_name = "E", default_value_t = 15)]
    pub(crate) epochs: usize,
    /// Filters of each conv layer, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_values_t = [16, 32])]
    pub(crate) channels: Vec<usize>,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// Runs `prunus lab flow`.
pub(crate) fn flow(args: &FlowArgs) -> Result<(), Error> {
    let mut config = FlowConfig::default();
    config.seeds = args.run.seeds()?;
    if let Some(m) = &args.measures {
        config.measures = m.clone();
    }
    config.sparsity = args.sparsity;
    config.rounds = args.rounds;
    config.epochs = args.epochs;
    config.channels = args.channels.clone();
    run_protocol(&config, None, &args.run)
}

impl Protocol for FlowConfig {
    type Result = FlowResult;

    fn run<'d, B: Device<'d>>(
        &self,
        backend: &B,
        data: Arc<Dataset>,
        _threads: usize,
    ) -> Result<FlowResult, Error> {
        // A bar over every epoch of every run, and a line per finished run.
        let mut bars = Bars::new(false);
        let started = std::time::Instant::now();
        let mut report = |p: &Progress<'_>| {
            let line = format!(
                "[{:>2}/{}] {:<11} seed {} epoch {:>2}/{} loss {:.4}  ({:.0} s)",
                p.run + 1,
                p.runs,
                p.measure,
                p.seed,
                p.epoch,
                p.epochs,
                p.loss,
                started.elapsed().as_secs_f64()
            );
            let steps = (p.runs * p.epochs) as u64;
            let done = (p.run * p.epochs + p.epoch) as u64;
            bars.steps("train", done, steps, line.clone());
            if p.epoch == p.epochs {
                bars.println(&line);
            }
        };
        let result = run_flow(backend, data, self, &mut report);
        bars.clear();
        Ok(result?)
    }
}

/// Arguments of `prunus lab cbs`.
#[derive(Debug, Args)]
#[command(after_help = "\
The Combinatorial Brain Surgeon paper's MLPNet protocol (Yu et al., ICML 2022): per seed, \
MLPNet (784-40-20-10, ReLU, no biases) is trained --epochs epochs on the training split \
(learning rate / 10 for the last third); the empirical Fisher is built from the gradient of \
every training sample (one block, damping --damping); then the network is pruned one-shot \
at each sparsity, globally over all weights, by MP (magnitude), WF-S (WoodFisher \
selection), CBS-S (the combinatorial swap search, true loss on up to 5,000 training \
samples), WF (WF-S with WoodFisher's update) and CBS (CBS-S with the multi-weight OBS \
update), and the test accuracy is measured without fine-tuning. Prints the paper's table \
layout beside the published numbers and each method's gap to MP.

Data: --data DIR reads MNIST-format IDX files and splits them by index mod 5 (0-2 train, 3 \
validation, 4 test); without --data a synthetic teacher-student task of the same size is \
used.

Example: prunus lab cbs --data ../shared/data/mnist --seeds 5 --json cbs.json --plot cbs.svg")]
pub(crate) struct CbsArgs {
    /// Sparsities, comma-separated, each in [0, 1].
    #[arg(long, value_name = "LIST", value_delimiter = ',',
          default_values_t = prunus_lab::cbs::SPARSITIES)]
    pub(crate) sparsities: Vec<f64>,
    /// Training epochs.
    #[arg(long, value_name = "E", default_value_t = 20)]
    pub(crate) epochs: usize,
    /// Damping λ of the Fisher.
    #[arg(long, value_name = "λ", default_value_t = 1e-3)]
    pub(crate) damping: f64,
    /// Training samples of the Fisher (default: all).
    #[arg(long, value_name = "N")]
    pub(crate) fisher_samples: Option<usize>,
    /// Random-magnitude-perturbation starts of CBS-S.
    #[arg(long, value_name = "T", default_value_t = 50)]
    pub(crate) trials: usize,
    /// CBS-S ends when its best true loss is this many passes old.
    #[arg(long, value_name = "P", default_value_t = 5)]
    pub(crate) patience: usize,
    /// Multiplier of the WF and CBS updates of kept weights.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub(crate) update_scale: f64,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// Runs `prunus lab cbs`.
pub(crate) fn cbs(args: &CbsArgs) -> Result<(), Error> {
    let mut config = CbsConfig::default();
    config.seeds = args.run.seeds()?;
    config.sparsities = args.sparsities.clone();
    config.epochs = args.epochs;
    config.fisher = config.fisher.damping(args.damping);
    config.fisher_samples = args.fisher_samples;
    config.search = config.search.trials(args.trials).patience(args.patience);
    config.update_scale = args.update_scale;
    config.validate()?;
    run_protocol(&config, None, &args.run)
}

impl Protocol for CbsConfig {
    type Result = CbsResult;

    fn run<'d, B: Device<'d>>(
        &self,
        backend: &B,
        data: Arc<Dataset>,
        threads: usize,
    ) -> Result<CbsResult, Error> {
        let mut progress = |line: &str| eprintln!("{line}");
        backend.with_dense(threads, |dense, _| {
            Ok(run_cbs(dense, data, self, &mut progress)?)
        })
    }
}

/// The pruning step of the global methods of `prunus lab infcop`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StepArg {
    /// The same fixed rate per round as classic IMP (--rate).
    Fixed,
    /// The PQ-index's adaptive rate (p = 0.5, q = 1, γ = 1, β = 0.9).
    Pq,
}

/// Arguments of `prunus lab infcop`.
#[derive(Debug, Args)]
#[command(after_help = "\
Iterative magnitude pruning (IMP) with rewinding against Information-Consistent Pruning \
(Gharatappeh & Sekeh, 2025). Per seed, an MLP (784-300-100-10 with biases; biases and the \
classifier are never pruned) is trained --dense-epochs epochs, its weights saved after \
--warmup epochs; then rounds of prune -> rewind survivors to the saved weights -> retrain \
run until --target sparsity. Four methods, the same dense network for each:

  imp         classic IMP: --rate of each layer's survivors per round, --epochs per round
  imp-global  the same rate globally (one threshold across layers), --epochs per round
  incop-if    as imp-global, retraining stops once the information flow (cross-correlations \
of consecutive layers' standardised pre-activations, on validation data) is within ε_IF of \
the dense network's
  incop-gf    the same with the gradient flow (per-layer mean |dL/dW| and Frobenius norm of \
a fresh validation gradient) and ε_GF

Unless --epsilon-if/--epsilon-gf are given, each ε is chosen on validation data: the largest \
threshold whose simulated stops on the first seed's imp-global run lose at most --tolerance \
validation points in any round. The test split is only evaluated for the table. Prints \
retraining epochs, time and accuracy per method, the savings against imp and imp-global, \
and the test accuracy after every round.

Data: --data DIR reads MNIST-format IDX files and splits them by index mod 5 (0-2 train, 3 \
validation, 4 test); without --data a synthetic teacher-student task of the same size is \
used.

Example: prunus lab infcop --data ../shared/data/mnist --seeds 3 --json infcop.json --plot infcop.svg")]
pub(crate) struct InfcopArgs {
    /// Final sparsity of the prunable weights, in [0, 1].
    #[arg(long, value_name = "S", default_value_t = 0.95)]
    pub(crate) target: f64,
    /// Fraction of the survivors pruned per round, in (0, 1].
    #[arg(long, value_name = "R", default_value_t = 0.2)]
    pub(crate) rate: f64,
    /// The global methods' step.
    #[arg(long, value_enum, default_value_t = StepArg::Fixed)]
    pub(crate) step: StepArg,
    /// Hidden widths, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_values_t = [300, 100])]
    pub(crate) hidden: Vec<usize>,
    /// Dense training epochs before the first round.
    #[arg(long, value_name = "E", default_value_t = 15)]
    pub(crate) dense_epochs: usize,
    /// Epochs after which the weights are saved for rewinding.
    #[arg(long, value_name = "E", default_value_t = 1)]
    pub(crate) warmup: usize,
    /// The most retraining epochs per round (every round of imp and imp-global).
    #[arg(long, value_name = "E", default_value_t = 15)]
    pub(crate) epochs: usize,
    /// Learning rate of SGD (momentum 0.9, weight decay 5e-4, constant).
    #[arg(long, value_name = "η", default_value_t = 0.05)]
    pub(crate) learning_rate: f32,
    /// ε of incop-if (default: chosen on validation data).
    #[arg(long, value_name = "ε")]
    pub(crate) epsilon_if: Option<f64>,
    /// ε of incop-gf (default: chosen on validation data).
    #[arg(long, value_name = "ε")]
    pub(crate) epsilon_gf: Option<f64>,
    /// Validation accuracy points a chosen ε may lose in any round.
    #[arg(long, value_name = "POINTS", default_value_t = 0.5)]
    pub(crate) tolerance: f64,
    /// The most rounds of any run.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub(crate) max_rounds: usize,
    /// Measure the flows on the first N validation samples only (default: all):
    /// cheaper measurements, noisier distances.
    #[arg(long, value_name = "N")]
    pub(crate) flow_samples: Option<usize>,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// Runs `prunus lab infcop`.
pub(crate) fn infcop(args: &InfcopArgs) -> Result<(), Error> {
    let mut config = InfcopConfig::default();
    config.seeds = args.run.seeds()?;
    config.target = args.target;
    config.rate = args.rate;
    config.step = match args.step {
        StepArg::Fixed => StepKind::Fixed,
        StepArg::Pq => StepKind::Pq,
    };
    config.hidden = args.hidden.clone();
    config.dense_epochs = args.dense_epochs;
    config.warmup_epochs = args.warmup;
    config.max_epochs = args.epochs;
    config.sgd = config.sgd.learning_rate(args.learning_rate);
    config.epsilon_if = args.epsilon_if;
    config.epsilon_gf = args.epsilon_gf;
    config.tolerance = args.tolerance;
    config.max_rounds = args.max_rounds;
    config.flow_samples = args.flow_samples;
    config.validate()?;
    run_protocol(&config, None, &args.run)
}

impl Protocol for InfcopConfig {
    type Result = InfcopResult;

    fn run<'d, B: Device<'d>>(
        &self,
        backend: &B,
        data: Arc<Dataset>,
        _threads: usize,
    ) -> Result<InfcopResult, Error> {
        let mut progress = |line: &str| eprintln!("{line}");
        Ok(run_infcop(backend, data, self, &mut progress)?)
    }
}

/// The tasks of `prunus lab forward`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TaskArg {
    /// The MLP (--hidden) on the data (--data, or the synthetic default).
    Mlp,
    /// A two-layer student (--student-hidden) on a random teacher's labels.
    TeacherStudent,
}

/// Sampling of greedy forward selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SamplingArg {
    /// Each unit at most once (the official code).
    Without,
    /// Units may be chosen again (the paper's theory: a multiset average).
    With,
}

/// Arguments of `prunus lab forward`.
#[derive(Debug, Args)]
#[command(after_help = "\
Greedy forward selection (Ye et al., ICML 2020) against backward elimination and training \
from scratch at equal widths. Per task and seed a dense network is trained --dense-epochs at \
--learning-rate, then --finetune-epochs at --finetune-lr; \
then for each width setting three networks of the same hidden widths:

  forward   greedy forward selection: each hidden layer, input side first, is rebuilt from \
empty, adding per step the one of --candidates random unselected units that gives the lowest \
loss on a mini-batch of --batch training samples (selected units scaled by D/|S|), then \
fine-tuned --layer-epochs at --layer-lr
  backward  each layer keeps its units of largest L2 norm, the same per-layer fine-tune
  scratch   the small network from a fresh initialisation, trained as the dense one

The first setting (auto) takes the widths where the paper's stop rule ends each layer on \
the first seed (mini-batch accuracy >= --batch-fraction of the layer's starting accuracy, \
then the first --evaluation-samples validation samples within --tolerance of it, relative); \
the others keep each of --fractions of every layer. Pruned networks are compacted (removed \
units gone, the scales folded into the next layer), then every network is fine-tuned \
--finetune-epochs at --finetune-lr. Prints test accuracy before and after fine-tuning, test \
loss, parameters and inference time per width and method, and whether forward selection \
beats each baseline.

Tasks: mlp (--hidden on --data: MNIST-format IDX files split by index mod 5, 0-2 train, 3 \
validation, 4 test; without --data the synthetic default, which MLPs do not learn well) and \
teacher-student (a 32-input student with --student-hidden units on labels of a random \
two-layer ReLU teacher with 32 hidden units and 4 classes on 50,000 Gaussian inputs; always \
synthetic).

Example: prunus lab forward --data ../shared/data/mnist --seeds 3 --json forward.json --plot forward.svg")]
pub(crate) struct ForwardArgs {
    /// Tasks, comma-separated.
    #[arg(long, value_enum, value_name = "LIST", value_delimiter = ',',
          default_values_t = [TaskArg::Mlp, TaskArg::TeacherStudent])]
    pub(crate) tasks: Vec<TaskArg>,
    /// Hidden widths of the mlp task, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_values_t = [300, 100])]
    pub(crate) hidden: Vec<usize>,
    /// Hidden units of the teacher-student task's student.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub(crate) student_hidden: usize,
    /// Training epochs of the dense networks and of scratch.
    #[arg(long, value_name = "E", default_value_t = 15)]
    pub(crate) dense_epochs: usize,
    /// Learning rate of dense and scratch training (SGD, momentum 0.9, weight decay 5e-4).
    #[arg(long, value_name = "η", default_value_t = 0.05)]
    pub(crate) learning_rate: f32,
    /// Width budgets besides the stop rule's: fractions of each layer's units, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_values_t = [0.05, 0.1, 0.25])]
    pub(crate) fractions: Vec<f64>,
    /// Units evaluated per selection step.
    #[arg(long, value_name = "K", default_value_t = 50)]
    pub(crate) candidates: usize,
    /// Mini-batch of a selection step.
    #[arg(long, value_name = "B", default_value_t = 128)]
    pub(crate) batch: usize,
    /// Validation samples the stop rule checks.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub(crate) evaluation_samples: usize,
    /// Relative accuracy loss the stop rule accepts.
    #[arg(long, value_name = "TOL", default_value_t = 0.02)]
    pub(crate) tolerance: f64,
    /// Fraction of the starting accuracy a mini-batch must reach before the stop rule checks.
    #[arg(long, value_name = "F", default_value_t = 0.95)]
    pub(crate) batch_fraction: f64,
    /// Sampling of forward selection.
    #[arg(long, value_enum, default_value_t = SamplingArg::Without)]
    pub(crate) sampling: SamplingArg,
    /// Fine-tuning after each pruned layer, in epochs.
    #[arg(long, value_name = "E", default_value_t = 0.1)]
    pub(crate) layer_epochs: f64,
    /// Learning rate of the per-layer fine-tune.
    #[arg(long, value_name = "η", default_value_t = 2.5e-3)]
    pub(crate) layer_lr: f32,
    /// Final fine-tuning epochs of every network.
    #[arg(long, value_name = "E", default_value_t = 5)]
    pub(crate) finetune_epochs: usize,
    /// Learning rate of the final fine-tune.
    #[arg(long, value_name = "η", default_value_t = 0.01)]
    pub(crate) finetune_lr: f32,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// Runs `prunus lab forward`.
pub(crate) fn forward(args: &ForwardArgs) -> Result<(), Error> {
    let mut config = ForwardLabConfig::default();
    config.seeds = args.run.seeds()?;
    config.tasks = args
        .tasks
        .iter()
        .map(|t| match t {
            TaskArg::Mlp => Task::Mlp,
            TaskArg::TeacherStudent => Task::TeacherStudent,
        })
        .collect();
    config.hidden = args.hidden.clone();
    config.student_hidden = args.student_hidden;
    config.dense_epochs = args.dense_epochs;
    config.sgd = config.sgd.learning_rate(args.learning_rate);
    config.fractions = args.fractions.clone();
    config.candidates = args.candidates;
    config.batch = args.batch;
    config.evaluation_samples = args.evaluation_samples;
    config.tolerance = args.tolerance;
    config.batch_fraction = args.batch_fraction;
    config.sampling = match args.sampling {
        SamplingArg::Without => Sampling::WithoutReplacement,
        SamplingArg::With => Sampling::WithReplacement,
    };
    config.layer_epochs = args.layer_epochs;
    config.layer_learning_rate = args.layer_lr;
    config.finetune_epochs = args.finetune_epochs;
    config.finetune_learning_rate = args.finetune_lr;
    config.validate()?;
    // Without the mlp task the data is the teacher-student task's own.
    let data = (!config.tasks.contains(&Task::Mlp))
        .then(|| Dataset::teacher_student(&TeacherStudent::two_layer()).map(Arc::new))
        .transpose()?;
    run_protocol(&config, data, &args.run)
}

impl Protocol for ForwardLabConfig {
    type Result = ForwardResult;

    fn run<'d, B: Device<'d>>(
        &self,
        backend: &B,
        data: Arc<Dataset>,
        _threads: usize,
    ) -> Result<ForwardResult, Error> {
        let mut progress = |line: &str| eprintln!("{line}");
        Ok(run_forward_lab(backend, data, self, &mut progress)?)
    }
}

/// A lab protocol as the CLI runs it: its configuration, run once on
/// whichever backend `--backend` names, and what its result prints and
/// writes.
trait Protocol: Sync {
    /// The protocol's result.
    type Result: ProtocolResult + Send;

    /// Runs the protocol on `backend` (`threads` for a CPU helper of a GPU).
    fn run<'d, B: Device<'d>>(
        &self,
        backend: &B,
        data: Arc<Dataset>,
        threads: usize,
    ) -> Result<Self::Result, Error>;
}

/// A [`Protocol`] as a [`BackendJob`].
struct ProtocolJob<'a, P> {
    protocol: &'a P,
    data: &'a Arc<Dataset>,
    threads: usize,
}

impl<'d, P: Protocol> BackendJob<'d> for ProtocolJob<'_, P> {
    type Output = P::Result;

    fn run<B: Device<'d>>(self, backend: &B) -> Result<P::Result, Error> {
        self.protocol
            .run(backend, Arc::clone(self.data), self.threads)
    }
}

/// Runs `protocol` on `data` (by default what `run` names) and the backend
/// `run` names, prints its table and writes its report and chart where
/// `run` says.
fn run_protocol<P: Protocol>(
    protocol: &P,
    data: Option<Arc<Dataset>>,
    run: &RunArgs,
) -> Result<(), Error> {
    let data = match data {
        Some(d) => d,
        None => load(&run.data)?,
    };
    let job = ProtocolJob {
        protocol,
        data: &data,
        threads: run.threads,
    };
    let result = dispatch(&BackendSpec::new(run.backend, run.threads), job)?;
    println!("{}", result.table());
    run.outputs
        .write(|| Ok(result.report()?), run.backend, || Ok(result.svg()?))
}

/// What every lab protocol takes: its data, seeds, backend, threads and
/// outputs.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Folder of MNIST-format IDX files (default: the synthetic task).
    #[arg(long, value_name = "DIR")]
    pub(crate) data: Option<PathBuf>,
    /// Seeds 0..N, each initialising and training its own networks.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) seeds: u64,
    /// Backend of the pruning steps' scoring, selection and linear algebra
    /// (the networks train on the CPU).
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub(crate) backend: BackendKind,
    /// Threads for training and the CPU backend (0 = all cores); results
    /// are the same for any count.
    #[arg(long, value_name = "T", default_value_t = 0)]
    pub(crate) threads: usize,
    #[command(flatten)]
    pub(crate) outputs: Outputs,
}

impl RunArgs {
    /// The seeds, once the output paths are known to be usable (checked
    /// before any work).
    fn seeds(&self) -> Result<Vec<u64>, Error> {
        self.outputs.check()?;
        Ok((0..self.seeds).collect())
    }
}

/// MNIST from `dir`, or the synthetic task; says which on stderr.
fn load(dir: &Option<PathBuf>) -> Result<Arc<Dataset>, Error> {
    let data = Arc::new(match dir {
        Some(dir) => Dataset::mnist(dir)?,
        None => Dataset::teacher_student(&TeacherStudent::default())?,
    });
    eprintln!(
        "{} data: {} training, {} validation, {} test samples",
        data.name,
        data.train.len(),
        data.validation.len(),
        data.test.len()
    );
    Ok(data)
}

/// Where a protocol writes its JSON report and its SVG chart.
#[derive(Debug, Args)]
pub(crate) struct Outputs {
    /// Write the JSON report here (atomically).
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
    /// Write the protocol's SVG chart here (atomically): training-loss
    /// curves for flow, accuracy against sparsity for cbs.
    #[arg(long, value_name = "FILE.svg")]
    pub(crate) plot: Option<PathBuf>,
}

impl Outputs {
    /// Refuses unusable output paths before any work.
    fn check(&self) -> Result<(), Error> {
        for (flag, path) in [("--json", &self.json), ("--plot", &self.plot)] {
            if let Some(p) = path {
                check_output(flag, p)?;
            }
        }
        Ok(())
    }

    /// Writes the report (with the backend in its config) and the chart
    /// where asked.
    fn write(
        &self,
        report: impl FnOnce() -> Result<Report, Error>,
        backend: BackendKind,
        svg: impl FnOnce() -> Result<String, Error>,
    ) -> Result<(), Error> {
        if let Some(path) = &self.json {
            let mut report = report()?;
            report.set_config("backend", backend.name());
            write_atomic(path, &report)?;
            eprintln!("wrote {}", path.display());
        }
        if let Some(path) = &self.plot {
            write_text_atomic(path, &svg()?)?;
            eprintln!("wrote {}", path.display());
        }
        Ok(())
    }
}
