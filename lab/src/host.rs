//! [`LabHost`]: a lab network, its dataset and its optimiser, as a
//! [`prunus_core::Host`] every data-dependent method can drive.

use std::sync::Arc;

use prunus_core::contract::random::permutation;
use prunus_core::host::{
    Activation, Capability, Evaluation, Host, Objective, Parameter, Samples, Snapshot,
};
use prunus_core::{Mask, Split, Tap};

use crate::data::{Dataset, SplitData};
use crate::error::{Error, Result};
use crate::network::{Network, Want};

/// Stochastic gradient descent with momentum and weight decay, as PyTorch's
/// `SGD` (`v = μ v + g + λ θ; θ -= η v`).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Sgd {
    /// Learning rate `η`.
    pub learning_rate: f32,
    /// Momentum `μ`.
    pub momentum: f32,
    /// Weight decay `λ`.
    pub weight_decay: f32,
    /// Samples per step.
    pub batch: usize,
}

impl Default for Sgd {
    /// `η = 0.05, μ = 0.9, λ = 5e-4`, batches of 64.
    fn default() -> Self {
        Sgd {
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            batch: 64,
        }
    }
}

impl Sgd {
    /// The same optimiser with learning rate `η`.
    pub fn learning_rate(mut self, learning_rate: f32) -> Self {
        self.learning_rate = learning_rate;
        self
    }

    /// The same optimiser with batches of `batch`.
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// The settings as a report's `config` entry, with how the learning
    /// rate drops.
    pub fn to_json(&self, learning_rate_drop: &str) -> serde_json::Value {
        serde_json::json!({"learning_rate": self.learning_rate, "momentum": self.momentum,
                           "weight_decay": self.weight_decay, "batch": self.batch,
                           "learning_rate_drop": learning_rate_drop})
    }

    fn validate(&self) -> Result<()> {
        let ok = self.learning_rate.is_finite()
            && self.learning_rate > 0.0
            && (0.0..1.0).contains(&self.momentum)
            && self.weight_decay.is_finite()
            && self.weight_decay >= 0.0
            && self.batch > 0;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidSetting {
                name: "sgd",
                value: format!("{self:?}"),
                expected:
                    "a positive learning rate and batch, momentum in [0, 1), weight decay >= 0"
                        .into(),
            })
        }
    }
}

/// A network with its data and optimiser: the lab's [`Host`]. Training
/// shuffles the training split with a permutation that depends only on
/// the seed and the epoch number, and every pass sums its chunks in a
/// fixed order, so a run is the same on any number of threads.
#[derive(Clone, Debug)]
pub struct LabHost {
    network: Network,
    data: Arc<Dataset>,
    sgd: Sgd,
    velocity: Vec<Vec<f32>>,
    seed: u64,
    epoch: u64,
    /// Samples of epoch `epoch`'s shuffle already trained on by
    /// [`Host::train_steps`].
    cursor: usize,
}

impl LabHost {
    /// A host for `network` on `data`, training with `sgd`, shuffling with
    /// `seed`. Fails when the network does not fit the data.
    pub fn new(network: Network, data: Arc<Dataset>, sgd: Sgd, seed: u64) -> Result<LabHost> {
        sgd.validate()?;
        if network.input_len() != data.input_len() || network.classes() != data.classes {
            return Err(Error::InvalidSetting {
                name: "network",
                value: network.name().into(),
                expected: format!(
                    "{} inputs and {} classes, as the {} data has",
                    data.input_len(),
                    data.classes,
                    data.name
                ),
            });
        }
        let velocity = network
            .values()
            .iter()
            .map(|p| vec![0.0; p.len()])
            .collect();
        Ok(LabHost {
            network,
            data,
            sgd,
            velocity,
            seed,
            epoch: 0,
            cursor: 0,
        })
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The dataset.
    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// The optimiser's settings.
    pub fn sgd(&self) -> Sgd {
        self.sgd
    }

    /// Changes the optimiser's settings (momentum is kept).
    pub fn set_sgd(&mut self, sgd: Sgd) -> Result<()> {
        sgd.validate()?;
        self.sgd = sgd;
        Ok(())
    }

    /// Epochs trained so far (a partial epoch of [`Host::train_steps`]
    /// counts once it is complete).
    pub fn epochs(&self) -> u64 {
        self.epoch
    }

    /// Clears the optimiser's momentum: the next step starts afresh, as
    /// when a new training phase begins.
    pub fn reset_optimizer(&mut self) {
        for v in &mut self.velocity {
            v.fill(0.0);
        }
    }

    /// Replaces the network by its compacted form ([`Network::compacted`]):
    /// the units its unit scales remove are gone, the scales folded. The
    /// momentum is cleared (its buffers change shape).
    pub fn compact(&mut self, fold: prunus_core::methods::forward::compaction::Fold) -> Result<()> {
        let network = self.network.compacted(fold)?;
        self.velocity = network
            .values()
            .iter()
            .map(|p| vec![0.0; p.len()])
            .collect();
        self.network = network;
        Ok(())
    }

    /// The inputs and labels of `samples`, clamped to the split.
    fn batch(&self, samples: &Samples) -> Result<(&[f32], &[u8])> {
        let split: &SplitData = self.data.split(samples.split);
        let n = split.len();
        if samples.first >= n {
            return Err(Error::InvalidSetting {
                name: "samples",
                value: format!("from {} of the {} split", samples.first, samples.split),
                expected: format!("a first sample below its {n} samples"),
            });
        }
        let end = samples
            .count
            .map_or(n, |c| samples.first.saturating_add(c).min(n));
        let d = self.data.input_len();
        Ok((
            &split.inputs[samples.first * d..end * d],
            &split.labels[samples.first..end],
        ))
    }

    fn sgd_step(&mut self, gradient: &[Vec<f32>]) {
        let Sgd {
            learning_rate: lr,
            momentum: mu,
            weight_decay: wd,
            ..
        } = self.sgd;
        for (i, g) in gradient.iter().enumerate() {
            let v = &mut self.velocity[i];
            let p = &mut self.network.params_mut()[i];
            for ((w, v), &g) in p.iter_mut().zip(v.iter_mut()).zip(g) {
                *v = mu * *v + g + wd * *w;
                *w -= lr * *v;
            }
            // Masked weights, their gradient and their momentum are zero
            // already, so this changes nothing today; it keeps "pruned
            // weights stay zero" from resting on that.
            self.network.enforce_mask(i);
        }
    }

    /// One SGD step on the training samples `batch` (indices); returns the
    /// summed loss of the batch before the step.
    fn train_on(&mut self, batch: &[usize], x: &mut Vec<f32>, y: &mut Vec<u8>) -> Result<f64> {
        let train = self.data.split(Split::Train);
        let d = self.data.input_len();
        x.clear();
        y.clear();
        for &i in batch {
            x.extend_from_slice(&train.inputs[i * d..(i + 1) * d]);
            y.push(train.labels[i]);
        }
        let r = self.network.pass(x, y, 1.0, Want::Gradient)?;
        self.sgd_step(&r.gradient.unwrap_or_default());
        Ok(r.loss)
    }

    fn core(e: Error) -> prunus_core::Error {
        match e {
            Error::Core(e) => *e,
            other => prunus_core::Error::HostFailure {
                message: other.to_string(),
            },
        }
    }
}

impl Host for LabHost {
    fn name(&self) -> String {
        self.network.name().into()
    }

    fn parameters(&self) -> &[Parameter] {
        self.network.parameters()
    }

    fn supports(&self, _capability: Capability) -> bool {
        true
    }

    fn weights(&self, index: usize) -> prunus_core::Result<Vec<f32>> {
        self.network
            .param(index)
            .map(<[f32]>::to_vec)
            .map_err(Self::core)
    }

    fn set_weights(&mut self, index: usize, values: &[f32]) -> prunus_core::Result<()> {
        self.network.set_param(index, values).map_err(Self::core)
    }

    /// The gradient of the mean loss; zero on masked weights (they are no
    /// longer parameters of the pruned network).
    fn gradient(&mut self, objective: &Objective) -> prunus_core::Result<Vec<Vec<f32>>> {
        let (x, y) = self.batch(&objective.samples).map_err(Self::core)?;
        let r = self
            .network
            .pass(x, y, objective.temperature, Want::Gradient)
            .map_err(Self::core)?;
        Ok(r.gradient.unwrap_or_default())
    }

    fn per_sample_gradients(
        &mut self,
        objective: &Objective,
        parameters: &[usize],
    ) -> prunus_core::Result<Vec<f32>> {
        let (x, y) = self.batch(&objective.samples).map_err(Self::core)?;
        self.network
            .per_sample_gradients(x, y, objective.temperature, parameters)
            .map_err(Self::core)
    }

    /// The exact product (R-operator), restricted to unmasked weights: `v`
    /// is masked first and the result is zero on masked weights.
    fn hessian_vector_product(
        &mut self,
        objective: &Objective,
        v: &[Vec<f32>],
    ) -> prunus_core::Result<Vec<Vec<f32>>> {
        let (x, y) = self.batch(&objective.samples).map_err(Self::core)?;
        prunus_core::contract::check::same_len(
            "vector parameters",
            self.network.values().len(),
            v.len(),
        )?;
        let mut v = v.to_vec();
        self.network.mask_buffers(&mut v);
        let r = self
            .network
            .pass(x, y, objective.temperature, Want::HessianVector(&v))
            .map_err(Self::core)?;
        Ok(r.hessian_vector.unwrap_or_default())
    }

    fn activations(&mut self, samples: &Samples, tap: Tap) -> prunus_core::Result<Vec<Activation>> {
        let (x, y) = self.batch(samples).map_err(Self::core)?;
        Ok(self
            .network
            .activations(x, y, tap)
            .map_err(Self::core)?
            .into_iter()
            .map(|(parameter, width, values)| Activation {
                parameter,
                width,
                values,
            })
            .collect())
    }

    fn set_masks(&mut self, masks: &[Option<Mask>]) -> prunus_core::Result<()> {
        self.network.set_masks(masks).map_err(Self::core)?;
        let mut velocity = std::mem::take(&mut self.velocity);
        self.network.mask_buffers(&mut velocity);
        self.velocity = velocity;
        Ok(())
    }

    fn set_unit_scales(
        &mut self,
        parameter: usize,
        scales: Option<&[f32]>,
    ) -> prunus_core::Result<()> {
        self.network
            .set_unit_scales(parameter, scales)
            .map_err(Self::core)
    }

    fn evaluate(&mut self, objective: &Objective) -> prunus_core::Result<Evaluation> {
        let (x, y) = self.batch(&objective.samples).map_err(Self::core)?;
        let r = self
            .network
            .pass(x, y, objective.temperature, Want::Loss)
            .map_err(Self::core)?;
        Ok(Evaluation {
            loss: r.loss / y.len() as f64,
            accuracy: r.correct as f64 / y.len() as f64,
            samples: y.len(),
        })
    }

    /// One epoch of SGD over the training split in a seeded shuffle (the
    /// last batch may be smaller); returns the mean of the batch losses,
    /// weighted by batch size, each taken before its step.
    ///
    /// An epoch left partial by [`Host::train_steps`] is not finished: this
    /// one starts the next shuffle from its beginning.
    fn train_epoch(&mut self) -> prunus_core::Result<f64> {
        if self.cursor > 0 {
            self.epoch += 1;
            self.cursor = 0;
        }
        let n = self.data.split(Split::Train).len();
        let order = permutation(n, self.seed, self.epoch);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let mut loss = 0.0;
        for batch in order.chunks(self.sgd.batch) {
            loss += self.train_on(batch, &mut x, &mut y).map_err(Self::core)?;
        }
        self.epoch += 1;
        Ok(loss / n.max(1) as f64)
    }

    /// `steps` SGD steps that continue the current epoch's shuffle where
    /// the last call left it (a new epoch's shuffle starts when it runs
    /// out); returns the mean loss over the samples of those steps.
    fn train_steps(&mut self, steps: usize) -> prunus_core::Result<f64> {
        let n = self.data.split(Split::Train).len();
        if n == 0 {
            return Err(prunus_core::Error::EmptyTensor {
                layer: "training split".into(),
            });
        }
        let mut order = permutation(n, self.seed, self.epoch);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let (mut loss, mut samples) = (0.0, 0usize);
        for _ in 0..steps {
            if self.cursor >= n {
                self.epoch += 1;
                self.cursor = 0;
                order = permutation(n, self.seed, self.epoch);
            }
            let end = (self.cursor + self.sgd.batch).min(n);
            let batch = order[self.cursor..end].to_vec();
            self.cursor = end;
            loss += self.train_on(&batch, &mut x, &mut y).map_err(Self::core)?;
            samples += batch.len();
        }
        Ok(loss / samples.max(1) as f64)
    }

    fn split_len(&self, split: Split) -> prunus_core::Result<usize> {
        Ok(self.data.split(split).len())
    }

    /// Shares the layers before the scaled one across candidates
    /// ([`Network::evaluate_unit_scales`]).
    fn evaluate_unit_scales(
        &mut self,
        parameter: usize,
        candidates: &[Vec<f32>],
        objective: &Objective,
    ) -> prunus_core::Result<Vec<Evaluation>> {
        let (x, y) = self.batch(&objective.samples).map_err(Self::core)?;
        let n = y.len();
        Ok(self
            .network
            .evaluate_unit_scales(x, y, objective.temperature, parameter, candidates)
            .map_err(Self::core)?
            .into_iter()
            .map(|(loss, correct)| Evaluation {
                loss: loss / n as f64,
                accuracy: correct as f64 / n as f64,
                samples: n,
            })
            .collect())
    }

    /// Puts the weights back and clears the momentum: training restarts
    /// from the snapshot.
    fn restore(&mut self, snapshot: &Snapshot) -> prunus_core::Result<()> {
        prunus_core::contract::check::same_len(
            "snapshot parameters",
            self.network.values().len(),
            snapshot.weights.len(),
        )?;
        for (i, w) in snapshot.weights.iter().enumerate() {
            self.set_weights(i, w)?;
        }
        for v in &mut self.velocity {
            v.fill(0.0);
        }
        Ok(())
    }
}
