//! [`BurnHost`]: a user's burn model, its loss, its data and its optimizer
//! as a [`prunus_core::Host`], so every data-dependent method of prunus
//! (gradient-flow measures, second-order methods, IMP with rewinding) runs
//! on it.
//!
//! What it provides, and how:
//!
//! - **gradients** from burn's autodiff (one backward pass per chunk of
//!   [`HostConfig::eval_batch`] samples, chunks weighted by size);
//! - **per-sample gradients** by a loop: one backward pass per sample;
//! - **Hessian-vector products** by core's central finite difference of two
//!   gradients: burn 0.22 differentiates once only (a gradient comes back
//!   as a plain tensor outside the autodiff graph, and `Device::autodiff()`
//!   does not nest), so there is no double backward to build an exact one on;
//! - **masks** kept through training: after every optimizer step the masks
//!   are multiplied back in ([`MaskSet::apply`]);
//! - **evaluation** on the validation-mode copy of the model
//!   ([`Module::valid`]), training through the user's [`ModuleOptimizer`];
//!   **restore** also resets the optimizer to the state it was given in.
//!
//! - **activations and unit scales** through the [`Tap`]s of
//!   [`crate::TapLinear`] layers the user puts in the model in place of
//!   `Linear` and hands to the host ([`BurnHost::with_taps`]): burn modules
//!   have no forward hooks. Without taps the host does not offer them.
//!
//! Not provided: an exact Hessian-vector product.
//!
//! Gradients, like the lab's, are zero on masked weights: they are no
//! longer parameters of the pruned network.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};
use prunus_adapters::framework::{Shuffle, Splits, Stored, parameters};
use prunus_core::host::{
    Activation, Capability, Coupling, Evaluation, Host, Objective, Parameter, ParameterKind,
    Snapshot,
};
use prunus_core::{HasShape, Mask, Samples, Split, Tap as TapPoint};

use crate::error::{Error, Result, panic_message};
use crate::mask::MaskSet;
use crate::tap::Tap;
use crate::tree::{self, Layouts};

/// The mean loss of a batch: `(logits [samples, classes], labels [samples],
/// temperature) -> [1]`. The default is [`cross_entropy`].
pub type Loss = Box<dyn Fn(Tensor<2>, Tensor<1, Int>, f32) -> Tensor<1>>;

/// The mean cross-entropy of `softmax(logits / temperature)` against
/// `labels`: the loss of core's [`Objective`] contract.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>, temperature: f32) -> Tensor<1> {
    let log_p = log_softmax(logits.div_scalar(temperature), 1);
    log_p.gather(1, labels.unsqueeze_dim::<2>(1)).mean().neg()
}

/// How a [`BurnHost`] trains and reads its model.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HostConfig {
    /// The optimizer's learning rate (constant).
    pub learning_rate: f64,
    /// Samples per training step.
    pub batch: usize,
    /// The seed of the epochs' shuffles (the lab's shuffle: the same seed
    /// visits the samples in the same order as the lab's host).
    pub seed: u64,
    /// The most samples per forward pass when taking gradients and
    /// evaluating (bounds memory; the results do not depend on it beyond
    /// float rounding).
    pub eval_batch: usize,
    /// Where each tensor's units are.
    pub layouts: Layouts,
    /// Weights that methods must leave dense, by name.
    pub dense: Vec<String>,
    /// Whether the classifier (the last weight of rank 2 or more in module
    /// order) may be pruned; by default it may not, as in the lab.
    pub prune_classifier: bool,
    /// The host's name in messages (default: `burn model (N parameters)`).
    pub name: Option<String>,
    /// Which weight reads which layer's outputs: `(producer, consumer,
    /// inputs per unit)` by weight name, e.g. `("fc1.weight",
    /// "fc2.weight", 1)`. burn's module tree does not say how layers
    /// connect; methods that remove whole units (greedy forward selection)
    /// need it.
    pub couplings: Vec<(String, String, usize)>,
}

impl Default for HostConfig {
    /// Learning rate 0.05, batches of 64, seed 0, forward passes of at most
    /// 1,000 samples, burn's layouts, the classifier dense.
    fn default() -> Self {
        HostConfig {
            learning_rate: 0.05,
            batch: 64,
            seed: 0,
            eval_batch: 1000,
            layouts: Layouts::default(),
            dense: Vec::new(),
            prune_classifier: false,
            name: None,
            couplings: Vec::new(),
        }
    }
}

impl HostConfig {
    /// The same settings with learning rate `lr`.
    pub fn learning_rate(mut self, lr: f64) -> Self {
        self.learning_rate = lr;
        self
    }

    /// The same settings with batches of `batch`.
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// The same settings shuffling with `seed`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The same settings with forward passes of at most `samples`.
    pub fn eval_batch(mut self, samples: usize) -> Self {
        self.eval_batch = samples;
        self
    }

    /// The same settings reading tensors with `layouts`.
    pub fn layouts(mut self, layouts: Layouts) -> Self {
        self.layouts = layouts;
        self
    }

    /// The same settings keeping the weight `name` dense.
    pub fn dense(mut self, name: impl Into<String>) -> Self {
        self.dense.push(name.into());
        self
    }

    /// The same settings letting methods prune the classifier (or not).
    pub fn prune_classifier(mut self, prune: bool) -> Self {
        self.prune_classifier = prune;
        self
    }

    /// The same settings with the outputs of weight `producer`'s layer read
    /// by weight `consumer`, `inputs_per_unit` of its inputs per unit (1
    /// between linear layers; `h * w` where a conv layer's channel is
    /// flattened into a linear one).
    pub fn couple(
        mut self,
        producer: impl Into<String>,
        consumer: impl Into<String>,
        inputs_per_unit: usize,
    ) -> Self {
        self.couplings
            .push((producer.into(), consumer.into(), inputs_per_unit));
        self
    }

    /// The same settings naming the host `name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    fn validate(&self) -> Result<()> {
        let bad = |name, value: String, expected| {
            Err(Error::Setting {
                name,
                value,
                expected,
            })
        };
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(
                "learning rate",
                self.learning_rate.to_string(),
                "finite and positive",
            );
        }
        if self.batch == 0 {
            return bad("batch", "0".into(), "at least 1 sample");
        }
        if self.eval_batch == 0 {
            return bad("eval batch", "0".into(), "at least 1 sample");
        }
        Ok(())
    }
}

/// Sets the couplings of `params` (weights named by `couplings`), checking
/// that each consumer has `units x inputs per unit` inputs.
fn couple(
    params: &mut [Parameter],
    stored: &[Stored],
    couplings: &[(String, String, usize)],
) -> Result<()> {
    let weight = |params: &[Parameter], name: &str| {
        params
            .iter()
            .position(|p| p.name == name && p.kind == ParameterKind::Weight)
            .ok_or_else(|| tree::unknown(name, stored))
    };
    for (producer, consumer, per_unit) in couplings {
        let (p, c) = (weight(params, producer)?, weight(params, consumer)?);
        let inputs = params[c].shape.matrix_view().1;
        if p == c || *per_unit == 0 || params[p].units() * per_unit != inputs {
            return Err(Error::Setting {
                name: "coupling",
                value: format!(
                    "{producer} ({} units) -> {consumer} ({inputs} inputs), {per_unit} per unit",
                    params[p].units()
                ),
                expected: "two weights, the consumer with units x inputs-per-unit inputs",
            });
        }
        params[p].coupling = Some(Coupling {
            consumer: c,
            inputs_per_unit: *per_unit,
        });
    }
    Ok(())
}

/// A burn model as a [`Host`]: the model (any [`Module`], its parameters on
/// an autodiff device), a forward function from a batch of inputs
/// `[samples, sample dims...]` (rank `D`) to logits `[samples, classes]`,
/// the data, the optimizer and a [`HostConfig`].
///
/// ```
/// use burn::nn::{Linear, LinearConfig, Relu};
/// use burn::optim::SgdConfig;
/// use burn::prelude::*;
/// use prunus_adapters::framework::{SplitData, Splits};
/// use prunus_burn::{BurnHost, HostConfig};
/// use prunus_core::{Host, Objective, Samples, Split};
///
/// #[derive(Module, Debug)]
/// struct Mlp { fc1: Linear, fc2: Linear }
/// impl Mlp {
///     fn forward(&self, x: Tensor<2>) -> Tensor<2> {
///         self.fc2.forward(Relu::new().forward(self.fc1.forward(x)))
///     }
/// }
///
/// let device = Device::ndarray().autodiff();
/// let model = Mlp { fc1: LinearConfig::new(4, 8).init(&device),
///                   fc2: LinearConfig::new(8, 3).init(&device) };
/// let split = |n: usize| SplitData {
///     inputs: (0..n * 4).map(|i| (i % 7) as f32 / 7.0).collect(),
///     labels: (0..n as u32).map(|i| i % 3).collect(),
/// };
/// let splits = Splits::new(&[4], 3, split(30), split(10), split(10))?;
/// let mut host = BurnHost::new(model, |m: &Mlp, x| m.forward(x), splits,
///                              SgdConfig::new().init(), HostConfig::default())?;
/// let g = host.gradient(&Objective::new(Samples::all(Split::Train)))?;
/// assert_eq!(g[0].len(), 8 * 4); // fc1.weight in core's view: [out, in]
/// assert!(host.train_epoch()?.is_finite());
/// # Ok::<(), prunus_burn::Error>(())
/// ```
pub struct BurnHost<M, F, const D: usize>
where
    M: Module,
    F: Fn(&M, Tensor<D>) -> Tensor<2>,
{
    model: M,
    forward: F,
    loss: Loss,
    splits: Arc<Splits>,
    optimizer: ModuleOptimizer,
    fresh: ModuleOptimizer,
    config: HostConfig,
    shuffle: Shuffle,
    device: Device,
    name: String,
    stored: Vec<Stored>,
    params: Vec<Parameter>,
    masks: Vec<Option<Mask>>,
    mask_set: MaskSet,
    taps: Vec<(usize, Tap)>,
}

impl<M, F, const D: usize> BurnHost<M, F, D>
where
    M: Module,
    F: Fn(&M, Tensor<D>) -> Tensor<2>,
{
    /// A host for `model` on `splits`, training with `optimizer` (kept as
    /// given, and cloned afresh on [`Host::restore`]). Fails when the model
    /// has no float parameter, when its parameters are not on an autodiff
    /// device, when `D` is not one more than the samples' rank, or when a
    /// forward pass on one sample does not give `[1, classes]` logits
    /// (burn's own shape checks, which panic, are caught and reported).
    pub fn new(
        model: M,
        forward: F,
        splits: impl Into<Arc<Splits>>,
        optimizer: ModuleOptimizer,
        config: HostConfig,
    ) -> Result<Self> {
        config.validate()?;
        let splits = splits.into();
        if D != splits.sample_dims().len() + 1 {
            return Err(Error::Setting {
                name: "input rank",
                value: format!("{D} (samples of dims {:?})", splits.sample_dims()),
                expected: "one more than the samples' rank: [samples, sample dims...]",
            });
        }
        let device = match model.devices().as_slice() {
            [d] => d.clone(),
            other => {
                return Err(Error::Setting {
                    name: "model devices",
                    value: format!("{other:?}"),
                    expected: "every parameter on one device",
                });
            }
        };
        if !device.is_autodiff() {
            return Err(Error::Setting {
                name: "model device",
                value: format!("{device:?}"),
                expected: "an autodiff device (e.g. Device::ndarray().autodiff())",
            });
        }
        let stored = tree::stored(&model, &config.layouts)?;
        for name in &config.dense {
            if !stored.iter().any(|s| s.name == *name) {
                return Err(tree::unknown(name, &stored));
            }
        }
        let classifier = stored
            .iter()
            .rposition(tree::is_matrix)
            .filter(|_| !config.prune_classifier);
        let prunable = |s: &Stored| {
            tree::is_matrix(s)
                && !config.dense.contains(&s.name)
                && classifier.is_none_or(|c| stored[c].name != s.name)
        };
        let mut params = parameters(&stored, Some(&prunable))?;
        couple(&mut params, &stored, &config.couplings)?;
        let name = config.name.clone().unwrap_or_else(|| {
            let count: usize = stored.iter().map(Stored::numel).sum();
            format!("burn model ({count} parameters)")
        });
        let host = BurnHost {
            model,
            forward,
            loss: Box::new(cross_entropy),
            splits,
            fresh: optimizer.clone(),
            optimizer,
            shuffle: Shuffle::new(config.seed),
            config,
            device,
            name,
            masks: vec![None; params.len()],
            stored,
            params,
            mask_set: MaskSet::default(),
            taps: Vec::new(),
        };
        host.probe()?;
        Ok(host)
    }

    /// The same host with `loss` in place of [`cross_entropy`].
    pub fn with_loss(
        mut self,
        loss: impl Fn(Tensor<2>, Tensor<1, Int>, f32) -> Tensor<1> + 'static,
    ) -> Self {
        self.loss = Box::new(loss);
        self
    }

    /// The same host reading activations and setting unit scales through
    /// the [`Tap`]s of the [`crate::TapLinear`] layers whose weights are
    /// named: `("fc1.weight", model.fc1.tap.clone())`, one per layer, taken
    /// before the model moved into the host. With taps the host supports
    /// [`Capability::Activations`] (pre-activations: the outputs of the
    /// tapped layers) and [`Capability::UnitScales`] (on tapped layers).
    pub fn with_taps<S: Into<String>>(
        mut self,
        taps: impl IntoIterator<Item = (S, Tap)>,
    ) -> Result<Self> {
        let mut found = Vec::new();
        for (name, tap) in taps {
            let name = name.into();
            let index = self
                .params
                .iter()
                .position(|p| p.name == name && p.kind == ParameterKind::Weight)
                .ok_or_else(|| tree::unknown(&name, &self.stored))?;
            if found.iter().any(|(i, _)| *i == index) {
                return Err(Error::Core(prunus_core::Error::DuplicateLayer { name }));
            }
            found.push((index, tap));
        }
        found.sort_by_key(|(i, _)| *i);
        self.taps = found;
        Ok(self)
    }

    /// The model as it is (masks applied).
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, leaving the host.
    pub fn into_model(self) -> M {
        self.model
    }

    /// The masks set last ([`Host::set_masks`]), by parameter name.
    pub fn masks(&self) -> &MaskSet {
        &self.mask_set
    }

    /// The data.
    pub fn splits(&self) -> &Splits {
        &self.splits
    }

    /// The stored tensors behind [`Host::parameters`], in the same order.
    pub fn stored(&self) -> &[Stored] {
        &self.stored
    }

    /// The settings.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Clears the optimizer's state, as [`Host::restore`] does.
    pub fn reset_optimizer(&mut self) {
        self.optimizer = self.fresh.clone();
    }

    /// Runs the forward pass on one training sample and checks the logits.
    fn probe(&self) -> Result<()> {
        let (x, _) = self
            .splits
            .samples(&prunus_core::Samples::first(Split::Train, 1))?;
        let input = self.input(x.to_vec(), 1, &self.device.clone().without_autodiff());
        let model = self.model.valid();
        let outcome = catch_unwind(AssertUnwindSafe(|| (self.forward)(&model, input).dims()));
        match outcome {
            Ok(dims) if dims == [1, self.splits.classes()] => Ok(()),
            Ok(dims) => Err(Error::Logits {
                dims: dims.to_vec(),
                expected: [1, self.splits.classes()],
            }),
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                Err(Error::Setting {
                    name: "samples",
                    value: format!(
                        "dims {:?} ({message})",
                        [&[1][..], self.splits.sample_dims()].concat()
                    ),
                    expected: "inputs the model's forward pass accepts",
                })
            }
        }
    }

    fn input(&self, values: Vec<f32>, samples: usize, device: &Device) -> Tensor<D> {
        let dims = [&[samples][..], self.splits.sample_dims()].concat();
        Tensor::<D>::from_data(TensorData::new(values, dims), device)
    }

    fn labels(labels: &[u32], device: &Device) -> Tensor<1, Int> {
        let values: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
        Tensor::<1, Int>::from_data(TensorData::new(values, [labels.len()]), device)
    }

    fn logits(&self, model: &M, x: &[f32], n: usize, device: &Device) -> Result<Tensor<2>> {
        let logits = (self.forward)(model, self.input(x.to_vec(), n, device));
        let dims = logits.dims();
        if dims != [n, self.splits.classes()] {
            return Err(Error::Logits {
                dims: dims.to_vec(),
                expected: [n, self.splits.classes()],
            });
        }
        Ok(logits)
    }

    /// The loss of `logits`, checked to be one value.
    fn loss_of(&self, logits: Tensor<2>, labels: Tensor<1, Int>, t: f32) -> Result<Tensor<1>> {
        let loss = (self.loss)(logits, labels, t);
        match loss.dims() {
            [1] => Ok(loss),
            [n] => Err(Error::Setting {
                name: "loss",
                value: format!("{n} values"),
                expected: "the mean loss of the batch: one value",
            }),
        }
    }

    /// The gradients of `loss`, which must be on the autodiff tape.
    fn backward(loss: &Tensor<1>) -> Result<Gradients> {
        if loss.is_tracked() {
            Ok(loss.backward())
        } else {
            Err(Error::Setting {
                name: "loss",
                value: "a tensor off the autodiff tape".into(),
                expected: "a loss computed from the logits without detaching them",
            })
        }
    }

    fn names(&self, indices: &[usize]) -> Vec<&str> {
        indices
            .iter()
            .map(|&i| self.stored[i].name.as_str())
            .collect()
    }

    fn check_index(&self, index: usize) -> Result<()> {
        if index < self.params.len() {
            Ok(())
        } else {
            Err(Error::Core(prunus_core::Error::UnknownParameter {
                index,
                count: self.params.len(),
            }))
        }
    }

    /// The gradient (core's view, zero on masked weights) of the mean loss
    /// over `x, y` at `temperature`, for the parameters `indices`, summed
    /// over chunks weighted by `weight` per sample.
    fn gradient_of(
        &self,
        x: &[f32],
        y: &[u32],
        temperature: f32,
        indices: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        let n = y.len();
        let d = self.splits.sample_len();
        let names = self.names(indices);
        let mut total: Vec<Vec<f32>> = indices
            .iter()
            .map(|&i| vec![0.0; self.stored[i].numel()])
            .collect();
        let chunk = self.config.eval_batch;
        for start in (0..n).step_by(chunk) {
            let end = (start + chunk).min(n);
            let model = self.model.clone();
            let logits = self.logits(&model, &x[start * d..end * d], end - start, &self.device)?;
            let loss = self.loss_of(
                logits,
                Self::labels(&y[start..end], &self.device),
                temperature,
            )?;
            let grads = Self::backward(&loss)?;
            let g = tree::gradients(&model, &grads, &names)?;
            let weight = (end - start) as f32 / n as f32;
            for (t, g) in total.iter_mut().zip(&g) {
                for (a, &b) in t.iter_mut().zip(g) {
                    *a += weight * b;
                }
            }
        }
        indices
            .iter()
            .zip(total)
            .map(|(&i, g)| {
                let mut view = self.stored[i].to_view(&g)?;
                if let Some(m) = &self.masks[i] {
                    for (k, v) in view.iter_mut().enumerate() {
                        if !m.get(k) {
                            *v = 0.0;
                        }
                    }
                }
                Ok(view)
            })
            .collect()
    }

    /// The forward pass of the validation-mode model over `n` samples `x`,
    /// in chunks, for what the taps record.
    fn run_forward(&self, x: &[f32], n: usize) -> Result<()> {
        let d = self.splits.sample_len();
        let model = self.model.valid();
        let device = self.device.clone().without_autodiff();
        for start in (0..n).step_by(self.config.eval_batch) {
            let end = (start + self.config.eval_batch).min(n);
            self.logits(&model, &x[start * d..end * d], end - start, &device)?;
        }
        Ok(())
    }

    /// One optimizer step on the training samples `batch`; returns the
    /// batch's summed loss before the step.
    fn step(&mut self, batch: &[usize], x: &mut Vec<f32>, y: &mut Vec<u32>) -> Result<f64> {
        self.splits.gather_train(batch, x, y);
        let model = self.model.clone();
        let logits = self.logits(&model, x, batch.len(), &self.device)?;
        let loss = self.loss_of(logits, Self::labels(y, &self.device), 1.0)?;
        let value = f64::from(loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(Self::backward(&loss)?, &model);
        let model = self.optimizer.step(self.config.learning_rate, model, grads);
        self.model = self.mask_set.apply(model);
        Ok(value * batch.len() as f64)
    }
}

impl<M, F, const D: usize> Host for BurnHost<M, F, D>
where
    M: Module,
    F: Fn(&M, Tensor<D>) -> Tensor<2>,
{
    fn name(&self) -> String {
        self.name.clone()
    }

    fn parameters(&self) -> &[Parameter] {
        &self.params
    }

    fn supports(&self, capability: Capability) -> bool {
        match capability {
            Capability::Gradient
            | Capability::PerSampleGradients
            | Capability::Masks
            | Capability::Evaluate
            | Capability::Train => true,
            Capability::Activations | Capability::UnitScales => !self.taps.is_empty(),
            _ => false,
        }
    }

    fn weights(&self, index: usize) -> prunus_core::Result<Vec<f32>> {
        self.check_index(index)?;
        let s = &self.stored[index];
        let stored = tree::read(&self.model, &[s.name.as_str()])?;
        s.to_view(&stored[0])
    }

    /// Replaces the values (core's view) of parameter `index`; masked
    /// entries stay zero.
    fn set_weights(&mut self, index: usize, values: &[f32]) -> prunus_core::Result<()> {
        self.check_index(index)?;
        let s = &self.stored[index];
        let mut view = values.to_vec();
        prunus_core::contract::check::same_len("weights", s.numel(), view.len())?;
        if let Some(m) = &self.masks[index] {
            for (k, v) in view.iter_mut().enumerate() {
                if !m.get(k) {
                    *v = 0.0;
                }
            }
        }
        let stored = s.from_view(&view)?;
        let model = self.model.clone();
        self.model = tree::write(model, HashMap::from([(s.name.clone(), stored)]));
        Ok(())
    }

    /// The gradient of the mean loss; zero on masked weights.
    fn gradient(&mut self, objective: &Objective) -> prunus_core::Result<Vec<Vec<f32>>> {
        let (x, y) = self.splits.samples(&objective.samples)?;
        let all: Vec<usize> = (0..self.params.len()).collect();
        Ok(self.gradient_of(x, y, objective.temperature, &all)?)
    }

    /// One backward pass per sample (a loop: burn has no vectorised
    /// per-sample gradients); zero on masked weights.
    fn per_sample_gradients(
        &mut self,
        objective: &Objective,
        parameters: &[usize],
    ) -> prunus_core::Result<Vec<f32>> {
        for &i in parameters {
            self.check_index(i)?;
        }
        let (x, y) = self.splits.samples(&objective.samples)?;
        let d = self.splits.sample_len();
        let width: usize = parameters.iter().map(|&i| self.stored[i].numel()).sum();
        let mut out = Vec::with_capacity(y.len() * width);
        for s in 0..y.len() {
            let g = self.gradient_of(
                &x[s * d..(s + 1) * d],
                &y[s..s + 1],
                objective.temperature,
                parameters,
            )?;
            for g in g {
                out.extend_from_slice(&g);
            }
        }
        Ok(out)
    }

    /// Sets the masks and zeroes the pruned weights; every optimizer step
    /// re-applies them.
    fn set_masks(&mut self, masks: &[Option<Mask>]) -> prunus_core::Result<()> {
        prunus_core::contract::check::same_len("masks", self.params.len(), masks.len())?;
        let mut entries = Vec::new();
        for (i, m) in masks.iter().enumerate() {
            if let Some(m) = m {
                prunus_core::contract::check::same_shape("mask", &self.params[i].shape, m.shape())?;
                entries.push((self.stored[i].clone(), m.clone()));
            }
        }
        let mask_set = MaskSet::new(entries)?;
        self.model = mask_set.apply(self.model.clone());
        self.mask_set = mask_set;
        self.masks = masks.to_vec();
        Ok(())
    }

    /// The outputs of the tapped layers over `samples`, input side first.
    /// Only [`TapPoint::PreActivation`] is recorded (a tap sees its layer's
    /// output, not the nonlinearity after it).
    fn activations(
        &mut self,
        samples: &Samples,
        tap: TapPoint,
    ) -> prunus_core::Result<Vec<Activation>> {
        if self.taps.is_empty() {
            return Err(self.missing(Capability::Activations));
        }
        if tap != TapPoint::PreActivation {
            return Err(prunus_core::Error::HostFailure {
                message: format!(
                    "{} records its TapLinear layers' outputs, the pre-activations; \
                     {tap:?} is not available",
                    self.name
                ),
            });
        }
        let (x, _) = self.splits.samples(samples)?;
        let n = x.len() / self.splits.sample_len();
        for (_, t) in &self.taps {
            t.take();
            t.record(true);
        }
        let run = self.run_forward(x, n);
        for (_, t) in &self.taps {
            t.record(false);
        }
        let recorded: Vec<Vec<f32>> = self.taps.iter().map(|(_, t)| t.take()).collect();
        run?;
        self.taps
            .iter()
            .zip(recorded)
            .map(|((i, _), values)| {
                let width = values.len() / n;
                if width * n != values.len() || width == 0 {
                    return Err(prunus_core::Error::HostFailure {
                        message: format!(
                            "the tap of {} recorded {} values over {n} samples; is its \
                             TapLinear in the forward pass?",
                            self.params[*i].name,
                            values.len()
                        ),
                    });
                }
                Ok(Activation {
                    parameter: *i,
                    width,
                    values,
                })
            })
            .collect()
    }

    /// Sets the factors of the tapped layer of weight `parameter`: one per
    /// unit, finite.
    fn set_unit_scales(
        &mut self,
        parameter: usize,
        scales: Option<&[f32]>,
    ) -> prunus_core::Result<()> {
        self.check_index(parameter)?;
        let Some((_, tap)) = self.taps.iter().find(|(i, _)| *i == parameter) else {
            return Err(prunus_core::Error::HostFailure {
                message: format!(
                    "{} has no tap on {}: make that layer a TapLinear and pass its tap to \
                     BurnHost::with_taps",
                    self.name, self.params[parameter].name
                ),
            });
        };
        if let Some(s) = scales {
            prunus_core::contract::check::same_len(
                "unit scales",
                self.params[parameter].units(),
                s.len(),
            )?;
            if s.iter().any(|v| !v.is_finite()) {
                return Err(prunus_core::Error::NonFinite {
                    what: "unit scales",
                });
            }
        }
        tap.set_scales(scales.map(<[f32]>::to_vec));
        Ok(())
    }

    fn evaluate(&mut self, objective: &Objective) -> prunus_core::Result<Evaluation> {
        let (x, y) = self.splits.samples(&objective.samples)?;
        let n = y.len();
        let d = self.splits.sample_len();
        let model = self.model.valid();
        let device = self.device.clone().without_autodiff();
        let (mut loss, mut correct) = (0.0f64, 0usize);
        for start in (0..n).step_by(self.config.eval_batch) {
            let end = (start + self.config.eval_batch).min(n);
            let logits = self.logits(&model, &x[start * d..end * d], end - start, &device)?;
            let labels = Self::labels(&y[start..end], &device);
            let predicted = logits.clone().argmax(1).squeeze_dim::<1>(1);
            correct += predicted
                .equal(labels.clone())
                .int()
                .sum()
                .into_scalar::<i64>() as usize;
            let l = self
                .loss_of(logits, labels, objective.temperature)?
                .into_scalar::<f32>();
            loss += f64::from(l) * (end - start) as f64;
        }
        Ok(Evaluation {
            loss: loss / n as f64,
            accuracy: correct as f64 / n as f64,
            samples: n,
        })
    }

    fn split_len(&self, split: Split) -> prunus_core::Result<usize> {
        Ok(self.splits.len(split))
    }

    /// One epoch in the lab's shuffle of the seed (the last batch may be
    /// smaller); returns the mean of the batch losses, weighted by batch
    /// size, each taken before its step.
    fn train_epoch(&mut self) -> prunus_core::Result<f64> {
        let n = self.splits.len(Split::Train);
        let batches = self.shuffle.epoch(n, self.config.batch)?;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let mut loss = 0.0;
        for b in &batches {
            loss += self.step(b, &mut x, &mut y)?;
        }
        Ok(loss / n as f64)
    }

    /// `steps` steps continuing the current epoch's shuffle; returns the
    /// mean loss over their samples.
    fn train_steps(&mut self, steps: usize) -> prunus_core::Result<f64> {
        let n = self.splits.len(Split::Train);
        let batches = self.shuffle.steps(n, self.config.batch, steps)?;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let (mut loss, mut samples) = (0.0, 0usize);
        for b in &batches {
            loss += self.step(b, &mut x, &mut y)?;
            samples += b.len();
        }
        Ok(loss / samples.max(1) as f64)
    }

    /// Puts the weights back and resets the optimizer to the state it was
    /// given in: training restarts from the snapshot.
    fn restore(&mut self, snapshot: &Snapshot) -> prunus_core::Result<()> {
        prunus_core::contract::check::same_len(
            "snapshot parameters",
            self.params.len(),
            snapshot.weights.len(),
        )?;
        for (i, w) in snapshot.weights.iter().enumerate() {
            self.set_weights(i, w)?;
        }
        self.reset_optimizer();
        Ok(())
    }
}
