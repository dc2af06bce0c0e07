//! A user's candle model as a [`prunus_core::Host`]: every data-dependent
//! method of prunus (SNIP, GraSP, gradient-norm preservation, WoodFisher
//! and CBS, IMP with rewinding and its stopping rules, greedy forward
//! selection) runs on it.
//!
//! The user gives the model (any [`Module`] whose variables live in a
//! [`VarMap`], returning logits), the data splits, and the optimiser's
//! settings; the host provides:
//!
//! | capability | how |
//! |---|---|
//! | gradient | candle's `backward` over chunks of the samples, summed in f64 |
//! | per-sample gradients | one batched product per [`Linear`] layer (`δᵀx` from the gradient of a zero variable added to each pre-activation), or a backward pass per sample ([`PerSample`]) |
//! | Hessian-vector product | core's central finite difference of two gradients: candle detaches its gradients, so there is no double backward |
//! | activations, unit scales | through the [`Linear`] layers the model is built with ([`CandleHost::with_probes`]) |
//! | masks | pruned weights zeroed after every optimiser step and in every write |
//! | training | the optimiser `O` (any `candle_nn::Optimizer`; [`Sgd`] has momentum) over the lab's seeded shuffle |
//! | snapshot, restore | the variables' values; restore rebuilds the optimiser (its state starts afresh) |
//!
//! The loss is the [`Objective`]'s: mean cross-entropy of
//! `softmax(logits / temperature)`. Gradients are zero on masked weights
//! (they are no longer parameters of the pruned network), as in the lab's
//! host, so a method sees the same numbers through either.

mod linear;
mod sgd;

pub use linear::{Linear, Probes};
pub use sgd::{Sgd, SgdConfig};

use std::sync::Arc;

use candle_core::{D, DType, Device, Module, Tensor, Var};
use candle_nn::{Optimizer, VarMap};
use prunus_adapters::framework::{Shuffle, Splits, Stored, Units, parameters};
use prunus_core::host::{
    Activation, Capability, Evaluation, Host, Objective, Parameter, ParameterKind, Samples,
    Snapshot,
};
use prunus_core::{HasShape, Mask, Split, Tap};

use crate::varmap::{set_values, values, vars_by_name};
use linear::Mode;

/// How [`Host::per_sample_gradients`] is computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PerSample {
    /// The batched product when every parameter asked for belongs to a
    /// [`Linear`] layer, a pass per sample otherwise.
    #[default]
    Auto,
    /// One forward and backward pass per sample: any parameter, any layer,
    /// slow.
    Loop,
    /// One pass per chunk and, per [`Linear`] layer, the product of its
    /// inputs and the gradients at its pre-activation: fast, linear layers
    /// only.
    OuterProduct,
}

/// How a [`CandleHost`] trains and computes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HostSettings {
    /// A name for messages.
    pub name: String,
    /// Samples per training step (64).
    pub batch: usize,
    /// The seed of the epochs' shuffle (0).
    pub seed: u64,
    /// Samples per forward pass when measuring (1,024): bounds memory.
    pub chunk: usize,
    /// The per-sample gradients' method.
    pub per_sample: PerSample,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            name: "candle model".into(),
            batch: 64,
            seed: 0,
            chunk: 1024,
            per_sample: PerSample::Auto,
        }
    }
}

impl HostSettings {
    /// The same settings under another name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The same settings with `batch` samples per step.
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// The same settings with the shuffle seeded by `seed`.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The same settings with another per-sample method.
    pub fn per_sample(mut self, per_sample: PerSample) -> Self {
        self.per_sample = per_sample;
        self
    }
}

/// A parameter's place in a [`Linear`] layer.
#[derive(Clone, Copy, Debug)]
struct Probed {
    layer: usize,
    kind: ParameterKind,
}

/// A candle model, its variables, data and optimiser as a
/// [`prunus_core::Host`] (see the [module docs](self)).
pub struct CandleHost<M: Module, O: Optimizer> {
    model: M,
    settings: HostSettings,
    vars: Vec<Var>,
    stored: Vec<Stored>,
    parameters: Vec<Parameter>,
    splits: Arc<Splits>,
    device: Device,
    optimizer: O,
    optimizer_config: O::Config,
    shuffle: Shuffle,
    masks: Vec<Option<Mask>>,
    factors: Vec<Option<Tensor>>,
    probes: Option<Probes>,
    probed: Vec<Option<Probed>>,
}

fn fail(e: impl std::fmt::Display) -> prunus_core::Error {
    prunus_core::Error::HostFailure {
        message: e.to_string(),
    }
}

impl<M: Module, O: Optimizer> CandleHost<M, O>
where
    O::Config: Clone,
{
    /// A host for `model`, whose variables are every float variable of
    /// `varmap` (layer by layer in natural name order, `fc2` before `fc10`,
    /// each layer's bias after its weight), training
    /// on `splits` with an optimiser `O` built from `optimizer`. The
    /// classifier (the last matrix) and every vector are not prunable, as
    /// in the lab's networks ([`CandleHost::with_prunable`] changes it).
    pub fn new(
        model: M,
        varmap: &VarMap,
        splits: Arc<Splits>,
        optimizer: O::Config,
        settings: HostSettings,
    ) -> crate::Result<Self> {
        if settings.batch == 0 || settings.chunk == 0 {
            return Err(crate::Error::request(
                "a host needs at least one sample per batch and per chunk",
            ));
        }
        let vars: Vec<(String, Var)> = vars_by_name(varmap)?
            .into_iter()
            .filter(|(_, v)| v.dtype().is_float())
            .collect();
        if vars.is_empty() {
            return Err(crate::Error::request(
                "the VarMap has no float variable: build the model from it first",
            ));
        }
        let device = vars[0].1.device().clone();
        let stored = vars
            .iter()
            .map(|(n, v)| Stored::new(n.clone(), v.dims(), Units::Rows))
            .collect::<prunus_core::Result<Vec<_>>>()?;
        let parameters = parameters(&stored, None)?;
        let vars: Vec<Var> = vars.into_iter().map(|(_, v)| v).collect();
        let optimizer_state = O::new(vars.clone(), optimizer.clone())?;
        let n = vars.len();
        Ok(CandleHost {
            model,
            shuffle: Shuffle::new(settings.seed),
            settings,
            vars,
            stored,
            parameters,
            splits,
            device,
            optimizer: optimizer_state,
            optimizer_config: optimizer,
            masks: vec![None; n],
            factors: vec![None; n],
            probes: None,
            probed: vec![None; n],
        })
    }

    /// Connects the [`Linear`] layers the model was built with: the host
    /// then records activations, scales units, and computes per-sample
    /// gradients in one batched product. Every layer's `<prefix>.weight`
    /// must be a variable of the host.
    pub fn with_probes(mut self, probes: Probes) -> crate::Result<Self> {
        for (layer, name) in probes.layers().iter().enumerate() {
            let mut found = false;
            for (kind, suffix) in [
                (ParameterKind::Weight, "weight"),
                (ParameterKind::Bias, "bias"),
            ] {
                if let Some(i) = self.index_of(&format!("{name}.{suffix}")) {
                    self.probed[i] = Some(Probed { layer, kind });
                    found |= kind == ParameterKind::Weight;
                }
            }
            if !found {
                return Err(crate::Error::request(format!(
                    "the layer {name} has no variable {name}.weight in the host's VarMap"
                )));
            }
        }
        self.probes = Some(probes);
        Ok(self)
    }

    /// Says which parameters methods may prune, by their stored layout
    /// (name, dims), instead of the default.
    pub fn with_prunable(mut self, rule: &dyn Fn(&Stored) -> bool) -> crate::Result<Self> {
        self.parameters = parameters(&self.stored, Some(rule))?;
        Ok(self)
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The optimiser, e.g. to change its learning rate between epochs
    /// (kept across [`Host::restore`]).
    pub fn optimizer_mut(&mut self) -> &mut O {
        &mut self.optimizer
    }

    /// The masks set by the last [`Host::set_masks`], one per parameter.
    pub fn masks(&self) -> &[Option<Mask>] {
        &self.masks
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.stored.iter().position(|s| s.name == name)
    }

    fn param(&self, index: usize) -> prunus_core::Result<&Var> {
        self.vars
            .get(index)
            .ok_or(prunus_core::Error::UnknownParameter {
                index,
                count: self.vars.len(),
            })
    }

    fn inputs(&self, x: &[f32]) -> candle_core::Result<Tensor> {
        let mut dims = vec![x.len() / self.splits.sample_len()];
        dims.extend(self.splits.sample_dims());
        Tensor::from_slice(x, dims, &self.device)
    }

    fn labels(&self, y: &[u32]) -> candle_core::Result<Tensor> {
        Tensor::from_slice(y, y.len(), &self.device)
    }

    /// Per-sample losses `[b]` of the model on `x`, `y` at `temperature`,
    /// and the logits.
    fn losses(
        &self,
        x: &[f32],
        y: &[u32],
        temperature: f32,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let logits = self.model.forward(&self.inputs(x)?)?;
        let scaled = if temperature == 1.0 {
            logits.clone()
        } else {
            (&logits / f64::from(temperature))?
        };
        let log_p = candle_nn::ops::log_softmax(&scaled.to_dtype(DType::F32)?, D::Minus1)?;
        let picked = log_p
            .gather(&self.labels(y)?.unsqueeze(1)?, 1)?
            .squeeze(1)?;
        Ok((picked.neg()?, logits))
    }

    fn check_temperature(objective: &Objective) -> prunus_core::Result<()> {
        if objective.temperature.is_finite() && objective.temperature > 0.0 {
            Ok(())
        } else {
            Err(prunus_core::Error::InvalidArgument {
                what: "temperature",
                expected: "a finite value > 0",
            })
        }
    }

    /// Multiplies a gradient (view layout) by its parameter's mask.
    fn mask_view(&self, index: usize, view: &mut [f32]) {
        if let Some(m) = &self.masks[index] {
            for i in m.not().kept() {
                view[i] = 0.0;
            }
        }
    }

    fn enforce(&self, index: usize) -> candle_core::Result<()> {
        if let Some(f) = &self.factors[index] {
            let v = &self.vars[index];
            v.set(&v.as_tensor().mul(f)?)?;
        }
        Ok(())
    }

    fn step(&mut self, x: &[f32], y: &[u32]) -> prunus_core::Result<f64> {
        let (losses, _) = self.losses(x, y, 1.0).map_err(fail)?;
        let loss = losses.mean_all().map_err(fail)?;
        let value = f64::from(loss.to_scalar::<f32>().map_err(fail)?);
        if !value.is_finite() {
            return Err(fail(format!(
                "the training loss is {value}: training diverged"
            )));
        }
        self.optimizer.backward_step(&loss).map_err(fail)?;
        for i in 0..self.vars.len() {
            self.enforce(i).map_err(fail)?;
        }
        Ok(value * y.len() as f64)
    }

    fn train_batches(&mut self, batches: Vec<Vec<usize>>) -> prunus_core::Result<f64> {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let (mut loss, mut samples) = (0.0, 0usize);
        let splits = Arc::clone(&self.splits);
        for batch in batches {
            splits.gather_train(&batch, &mut x, &mut y);
            loss += self.step(&x, &y)?;
            samples += batch.len();
        }
        Ok(loss / samples.max(1) as f64)
    }

    fn probes(&self, capability: Capability) -> prunus_core::Result<&Probes> {
        self.probes.as_ref().ok_or_else(|| self.missing(capability))
    }

    fn per_sample_loop(
        &mut self,
        objective: &Objective,
        parameters: &[usize],
    ) -> prunus_core::Result<Vec<f32>> {
        let (x, y) = self.splits.samples(&objective.samples)?;
        let size = self.splits.sample_len();
        let d: usize = parameters.iter().map(|&i| self.stored[i].numel()).sum();
        let mut out = Vec::with_capacity(y.len() * d);
        for n in 0..y.len() {
            let (losses, _) = self
                .losses(
                    &x[n * size..(n + 1) * size],
                    &y[n..n + 1],
                    objective.temperature,
                )
                .map_err(fail)?;
            let grads = losses.sum_all().and_then(|l| l.backward()).map_err(fail)?;
            for &i in parameters {
                let mut view = match grads.get(self.vars[i].as_tensor()) {
                    Some(g) => self.stored[i].to_view(&tensor_values(g).map_err(fail)?)?,
                    None => vec![0.0; self.stored[i].numel()],
                };
                self.mask_view(i, &mut view);
                out.extend_from_slice(&view);
            }
        }
        Ok(out)
    }

    fn per_sample_outer(
        &mut self,
        objective: &Objective,
        parameters: &[usize],
        probed: &[Probed],
    ) -> prunus_core::Result<Vec<f32>> {
        let probes = self.probes(Capability::PerSampleGradients)?.clone();
        let (x, y) = self.splits.samples(&objective.samples)?;
        let size = self.splits.sample_len();
        let d: usize = parameters.iter().map(|&i| self.stored[i].numel()).sum();
        let mut out = vec![0.0f32; y.len() * d];
        let chunk = self.settings.chunk;
        let result = (|| -> prunus_core::Result<()> {
            for start in (0..y.len()).step_by(chunk) {
                let end = (start + chunk).min(y.len());
                let b = end - start;
                probes.reset(Mode::PerSample);
                let (losses, _) = self
                    .losses(
                        &x[start * size..end * size],
                        &y[start..end],
                        objective.temperature,
                    )
                    .map_err(fail)?;
                let grads = losses.sum_all().and_then(|l| l.backward()).map_err(fail)?;
                let state = probes.lock();
                let mut offset = 0;
                for (&i, p) in parameters.iter().zip(probed) {
                    let layer = &state.layers[p.layer];
                    let (Some(input), Some(probe)) = (&layer.input, &layer.probe) else {
                        return Err(fail(format!(
                            "the layer {} was not run by the model's forward pass",
                            layer.name
                        )));
                    };
                    let delta = match grads.get(probe.as_tensor()) {
                        Some(g) => g.to_dtype(DType::F32).map_err(fail)?,
                        None => probe.as_tensor().to_dtype(DType::F32).map_err(fail)?,
                    };
                    let units = layer.units;
                    let delta = delta.reshape((b, (), units)).map_err(fail)?;
                    let values = match p.kind {
                        ParameterKind::Bias => delta.sum(1),
                        _ => {
                            let inputs = input
                                .to_dtype(DType::F32)
                                .and_then(|t| t.reshape((b, delta.dim(1)?, ())))
                                .map_err(fail)?;
                            delta.transpose(1, 2).and_then(|t| t.matmul(&inputs))
                        }
                    }
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(fail)?;
                    let width = self.stored[i].numel();
                    for n in 0..b {
                        let row =
                            &mut out[(start + n) * d + offset..(start + n) * d + offset + width];
                        row.copy_from_slice(&values[n * width..(n + 1) * width]);
                        self.mask_view(i, row);
                    }
                    offset += width;
                }
            }
            Ok(())
        })();
        probes.reset(Mode::Plain);
        result.map(|()| out)
    }

    fn record(&mut self, samples: &Samples) -> prunus_core::Result<()> {
        let probes = self.probes(Capability::Activations)?.clone();
        let (x, y) = self.splits.samples(samples)?;
        let size = self.splits.sample_len();
        probes.reset(Mode::Record);
        let result = (|| {
            for start in (0..y.len()).step_by(self.settings.chunk) {
                let end = (start + self.settings.chunk).min(y.len());
                self.model
                    .forward(&self.inputs(&x[start * size..end * size]).map_err(fail)?)
                    .map_err(fail)?;
            }
            Ok(())
        })();
        let mut state = probes.lock();
        state.mode = Mode::Plain;
        result
    }
}

/// A tensor's values as f32, row-major.
fn tensor_values(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

impl<M: Module, O: Optimizer> Host for CandleHost<M, O>
where
    O::Config: Clone,
{
    fn name(&self) -> String {
        self.settings.name.clone()
    }

    fn parameters(&self) -> &[Parameter] {
        &self.parameters
    }

    fn supports(&self, capability: Capability) -> bool {
        match capability {
            Capability::Activations | Capability::UnitScales => self.probes.is_some(),
            Capability::ExactHessianVectorProduct => false,
            _ => true,
        }
    }

    fn weights(&self, index: usize) -> prunus_core::Result<Vec<f32>> {
        let var = self.param(index)?;
        self.stored[index].to_view(&values(var).map_err(fail)?)
    }

    /// Writes the values (masked entries stay zero).
    fn set_weights(&mut self, index: usize, values: &[f32]) -> prunus_core::Result<()> {
        let var = self.param(index)?.clone();
        let stored = self.stored[index].from_view(values)?;
        if stored.iter().any(|v| !v.is_finite()) {
            return Err(prunus_core::Error::NonFinite {
                what: "parameter values",
            });
        }
        set_values(&var, &stored).map_err(fail)?;
        self.enforce(index).map_err(fail)
    }

    fn gradient(&mut self, objective: &Objective) -> prunus_core::Result<Vec<Vec<f32>>> {
        Self::check_temperature(objective)?;
        let (x, y) = self.splits.samples(&objective.samples)?;
        let size = self.splits.sample_len();
        let mut sums: Vec<Vec<f64>> = self.stored.iter().map(|s| vec![0.0; s.numel()]).collect();
        for start in (0..y.len()).step_by(self.settings.chunk) {
            let end = (start + self.settings.chunk).min(y.len());
            let (losses, _) = self
                .losses(
                    &x[start * size..end * size],
                    &y[start..end],
                    objective.temperature,
                )
                .map_err(fail)?;
            let grads = losses.sum_all().and_then(|l| l.backward()).map_err(fail)?;
            for (var, sum) in self.vars.iter().zip(&mut sums) {
                if let Some(g) = grads.get(var.as_tensor()) {
                    for (s, v) in sum.iter_mut().zip(tensor_values(g).map_err(fail)?) {
                        *s += f64::from(v);
                    }
                }
            }
        }
        let n = y.len() as f64;
        (0..self.vars.len())
            .map(|i| {
                let mean: Vec<f32> = sums[i].iter().map(|&s| (s / n) as f32).collect();
                let mut view = self.stored[i].to_view(&mean)?;
                self.mask_view(i, &mut view);
                Ok(view)
            })
            .collect()
    }

    fn per_sample_gradients(
        &mut self,
        objective: &Objective,
        parameters: &[usize],
    ) -> prunus_core::Result<Vec<f32>> {
        Self::check_temperature(objective)?;
        for &i in parameters {
            self.param(i)?;
        }
        let probed: Option<Vec<Probed>> = match &self.probes {
            Some(_) => parameters.iter().map(|&i| self.probed[i]).collect(),
            None => None,
        };
        match (self.settings.per_sample, probed) {
            (PerSample::Loop, _) | (PerSample::Auto, None) => {
                self.per_sample_loop(objective, parameters)
            }
            (_, Some(probed)) => self.per_sample_outer(objective, parameters, &probed),
            (PerSample::OuterProduct, None) => Err(fail(
                "per-sample gradients by outer product need every parameter asked for in a \
                 prunus_candle::host::Linear layer connected with with_probes",
            )),
        }
    }

    fn activations(&mut self, samples: &Samples, tap: Tap) -> prunus_core::Result<Vec<Activation>> {
        self.record(samples)?;
        let probes = self.probes(Capability::Activations)?.clone();
        let state = probes.lock();
        let mut layers: Vec<(usize, usize)> = self
            .probed
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Some(Probed {
                    layer,
                    kind: ParameterKind::Weight,
                }) => Some((i, *layer)),
                _ => None,
            })
            .collect();
        if tap == Tap::Output {
            layers.pop();
        }
        let mut out = Vec::with_capacity(layers.len());
        for (parameter, layer) in layers {
            let l = &state.layers[layer];
            let parts = if tap == Tap::Output { &l.post } else { &l.pre };
            let mut values = Vec::new();
            let mut width = 0;
            for t in parts {
                let b = t.dim(0).map_err(fail)?;
                width = t.elem_count() / b.max(1);
                values.extend(tensor_values(t).map_err(fail)?);
            }
            out.push(Activation {
                parameter,
                width,
                values,
            });
        }
        drop(state);
        probes.reset(Mode::Plain);
        Ok(out)
    }

    fn set_masks(&mut self, masks: &[Option<Mask>]) -> prunus_core::Result<()> {
        prunus_core::contract::check::same_len("masks", self.vars.len(), masks.len())?;
        for (p, m) in self.parameters.iter().zip(masks) {
            if let Some(m) = m {
                prunus_core::contract::check::same_shape("mask", &p.shape, m.shape())?;
            }
        }
        for (i, m) in masks.iter().enumerate() {
            self.factors[i] = match m {
                Some(m) => Some(
                    Tensor::from_vec(
                        self.stored[i].factors(m)?,
                        self.vars[i].dims(),
                        &self.device,
                    )
                    .and_then(|t| t.to_dtype(self.vars[i].dtype()))
                    .map_err(fail)?,
                ),
                None => None,
            };
            self.masks[i] = m.clone();
            self.enforce(i).map_err(fail)?;
        }
        Ok(())
    }

    fn set_unit_scales(
        &mut self,
        parameter: usize,
        scales: Option<&[f32]>,
    ) -> prunus_core::Result<()> {
        self.param(parameter)?;
        let probes = self.probes(Capability::UnitScales)?.clone();
        let Some(Probed {
            layer,
            kind: ParameterKind::Weight,
        }) = self.probed[parameter]
        else {
            return Err(fail(format!(
                "{} is not the weight of a prunus_candle::host::Linear layer",
                self.stored[parameter].name
            )));
        };
        let mut state = probes.lock();
        let units = state.layers[layer].units;
        state.layers[layer].scales = match scales {
            None => None,
            Some(s) => {
                prunus_core::contract::check::same_len("unit scales", units, s.len())?;
                if s.iter().any(|v| !v.is_finite()) {
                    return Err(prunus_core::Error::NonFinite {
                        what: "unit scales",
                    });
                }
                Some(Tensor::from_slice(s, units, &self.device).map_err(fail)?)
            }
        };
        Ok(())
    }

    fn evaluate(&mut self, objective: &Objective) -> prunus_core::Result<Evaluation> {
        Self::check_temperature(objective)?;
        let (x, y) = self.splits.samples(&objective.samples)?;
        let size = self.splits.sample_len();
        let (mut loss, mut correct) = (0.0f64, 0usize);
        for start in (0..y.len()).step_by(self.settings.chunk) {
            let end = (start + self.settings.chunk).min(y.len());
            let (losses, logits) = self
                .losses(
                    &x[start * size..end * size],
                    &y[start..end],
                    objective.temperature,
                )
                .map_err(fail)?;
            loss += tensor_values(&losses)
                .map_err(fail)?
                .iter()
                .map(|&l| f64::from(l))
                .sum::<f64>();
            let predicted = logits
                .argmax(D::Minus1)
                .and_then(|t| t.to_vec1::<u32>())
                .map_err(fail)?;
            correct += predicted
                .iter()
                .zip(&y[start..end])
                .filter(|(p, l)| p == l)
                .count();
        }
        let n = y.len();
        Ok(Evaluation {
            loss: loss / n as f64,
            accuracy: correct as f64 / n as f64,
            samples: n,
        })
    }

    fn split_len(&self, split: Split) -> prunus_core::Result<usize> {
        Ok(self.splits.len(split))
    }

    fn train_epoch(&mut self) -> prunus_core::Result<f64> {
        let batches = self
            .shuffle
            .epoch(self.splits.len(Split::Train), self.settings.batch)?;
        self.train_batches(batches)
    }

    fn train_steps(&mut self, steps: usize) -> prunus_core::Result<f64> {
        let batches =
            self.shuffle
                .steps(self.splits.len(Split::Train), self.settings.batch, steps)?;
        self.train_batches(batches)
    }

    /// Puts the weights back and rebuilds the optimiser at its current
    /// learning rate: training restarts from the snapshot.
    fn restore(&mut self, snapshot: &Snapshot) -> prunus_core::Result<()> {
        prunus_core::contract::check::same_len(
            "snapshot parameters",
            self.vars.len(),
            snapshot.weights.len(),
        )?;
        for (i, w) in snapshot.weights.iter().enumerate() {
            self.set_weights(i, w)?;
        }
        let lr = self.optimizer.learning_rate();
        self.optimizer = O::new(self.vars.clone(), self.optimizer_config.clone()).map_err(fail)?;
        self.optimizer.set_learning_rate(lr);
        Ok(())
    }
}
