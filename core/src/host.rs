//! What data-dependent methods need from the network they prune.
//!
//! Gradient-based measures, second-order methods, iterative pruning and
//! greedy selection need things only the framework that holds the network can
//! compute: gradients, Hessian-vector products, activations, losses under a
//! mask. The framework implements [`Host`] (the lab's reference networks do;
//! framework adapters can), declaring through [`Host::supports`] which
//! [`Capability`]s it has. Every method states the capabilities it needs
//! ([`require`]); asking a host for one it lacks is a
//! [`Error::MissingCapability`] naming both, never a panic.
//!
//! Parameters are plain host `f32` buffers in row-major order; methods move
//! them to a [`crate::Backend`] to score and select.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::contract::error::{Error, Result};
use crate::contract::mask::Mask;
use crate::contract::shape::Shape;

/// Which part of the host's data a request is about. Calibration (gradients,
/// Fisher, activations) uses [`Split::Train`]; stopping rules and model
/// selection use [`Split::Validation`]; reported accuracy uses [`Split::Test`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training data.
    Train,
    /// Validation data.
    Validation,
    /// Held-out test data.
    Test,
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        })
    }
}

/// A contiguous run of samples of a split, in the host's fixed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Samples {
    /// The split.
    pub split: Split,
    /// The first sample.
    pub first: usize,
    /// How many samples; `None` for all from `first` on. A host clamps a
    /// count that runs past the end of the split.
    pub count: Option<usize>,
}

impl Samples {
    /// Every sample of `split`.
    pub fn all(split: Split) -> Self {
        Samples {
            split,
            first: 0,
            count: None,
        }
    }

    /// The first `count` samples of `split`.
    pub fn first(split: Split, count: usize) -> Self {
        Samples {
            split,
            first: 0,
            count: Some(count),
        }
    }
}

/// The loss a derivative or an evaluation is taken of: mean cross-entropy of
/// `softmax(logits / temperature)` over `samples`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Objective {
    /// The samples the mean runs over.
    pub samples: Samples,
    /// The logits are divided by this before the softmax; 1 is the plain
    /// loss.
    pub temperature: f32,
}

impl Objective {
    /// The plain loss (temperature 1) over `samples`.
    pub fn new(samples: Samples) -> Self {
        Objective {
            samples,
            temperature: 1.0,
        }
    }

    /// The same samples at `temperature`.
    pub fn temperature(self, temperature: f32) -> Self {
        Objective {
            temperature,
            ..self
        }
    }
}

/// What a parameter is within its layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParameterKind {
    /// A weight matrix `[out, in]` or conv kernel `[out, in, kh, kw]`: its
    /// units (neurons, filters) are the rows of the matrix view.
    Weight,
    /// A bias `[out]`, one entry per unit of its layer's weight.
    Bias,
}

/// How the units of one layer feed the next: unit `j` of this layer's
/// output is read by columns `j * inputs_per_unit .. (j + 1) *
/// inputs_per_unit` of `consumer`'s matrix view (the 9 taps of a 3x3 kernel,
/// or the `h * w` positions of a channel flattened into a linear layer).
/// Removing the unit removes those columns too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Coupling {
    /// The index of the weight parameter that reads this layer's outputs.
    pub consumer: usize,
    /// Columns of the consumer per unit of this layer.
    pub inputs_per_unit: usize,
}

/// One parameter tensor of a host network and its structure.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter {
    /// A unique name, e.g. `conv1.weight`.
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// Weight or bias.
    pub kind: ParameterKind,
    /// The layer it belongs to (a weight and its bias share it).
    pub layer: usize,
    /// Whether pruning methods may remove its entries. Hosts usually leave
    /// the classifier's weights and all biases out.
    pub prunable: bool,
    /// For a weight whose layer feeds another: how.
    pub coupling: Option<Coupling>,
}

impl Parameter {
    /// The number of units (rows of the matrix view).
    pub fn units(&self) -> usize {
        self.shape.matrix_view().0
    }
}

/// What a host can do. Methods list what they need; see [`require`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// [`Host::gradient`].
    Gradient,
    /// [`Host::per_sample_gradients`].
    PerSampleGradients,
    /// An exact [`Host::hessian_vector_product`]. Without it, core's central
    /// finite difference of two gradients is used (it needs
    /// [`Capability::Gradient`]).
    ExactHessianVectorProduct,
    /// [`Host::activations`].
    Activations,
    /// [`Host::set_masks`].
    Masks,
    /// [`Host::set_unit_scales`].
    UnitScales,
    /// [`Host::evaluate`].
    Evaluate,
    /// [`Host::train_epoch`].
    Train,
}

impl Capability {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Gradient => "mini-batch gradient",
            Capability::PerSampleGradients => "per-sample gradients",
            Capability::ExactHessianVectorProduct => "exact Hessian-vector product",
            Capability::Activations => "per-layer activations",
            Capability::Masks => "weight masks",
            Capability::UnitScales => "per-unit scales",
            Capability::Evaluate => "evaluation",
            Capability::Train => "training",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Loss and accuracy of a host network over some samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean loss.
    pub loss: f64,
    /// Fraction of samples classified correctly, in `[0, 1]`.
    pub accuracy: f64,
    /// Samples evaluated.
    pub samples: usize,
}

/// Where in a layer its outputs are read (see [`Host::activations`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tap {
    /// After the nonlinearity, for every hidden layer (the classifier's
    /// logits are not included).
    Output,
    /// Before the nonlinearity (after any bias and per-unit scale), for
    /// every weight layer, the classifier included: what information-flow
    /// rules compare.
    PreActivation,
}

/// The outputs of one layer over a run of samples: `samples x units`
/// row-major (a conv layer's `channels x h x w` flattened per sample).
#[derive(Clone, Debug, PartialEq)]
pub struct Activation {
    /// The weight parameter of the layer that produced them.
    pub parameter: usize,
    /// Values per sample.
    pub width: usize,
    /// `samples * width` values, sample-major.
    pub values: Vec<f32>,
}

/// A copy of a host's weights, to restore later (rewinding).
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// One buffer per parameter, in [`Host::parameters`] order.
    pub weights: Vec<Vec<f32>>,
}

/// A network a data-dependent method can query. Only [`Host::name`],
/// [`Host::parameters`], [`Host::supports`], [`Host::weights`] and
/// [`Host::set_weights`] are required; every other method fails with
/// [`Error::MissingCapability`] unless the host provides it, except the
/// Hessian-vector product (a finite difference of gradients by default) and
/// snapshots (copies of the weights by default).
///
/// Gradients and Hessian-vector products come as one buffer per parameter,
/// in [`Host::parameters`] order, of the parameter's shape.
pub trait Host {
    /// A short name for messages, e.g. `mlp 784-40-20-10`.
    fn name(&self) -> String;

    /// The parameters, in a fixed order.
    fn parameters(&self) -> &[Parameter];

    /// Whether the host provides `capability`.
    fn supports(&self, capability: Capability) -> bool;

    /// The current values of parameter `index`.
    fn weights(&self, index: usize) -> Result<Vec<f32>>;

    /// Replaces the values of parameter `index` (a host that enforces masks
    /// keeps pruned entries at zero).
    fn set_weights(&mut self, index: usize, values: &[f32]) -> Result<()>;

    /// The gradient of `objective`'s mean loss.
    fn gradient(&mut self, objective: &Objective) -> Result<Vec<Vec<f32>>> {
        let _ = objective;
        Err(self.missing(Capability::Gradient))
    }

    /// Per-sample gradients of the parameters listed, as a row-major
    /// `samples x d` matrix, `d` the total size of those parameters
    /// (concatenated in the order listed).
    fn per_sample_gradients(
        &mut self,
        objective: &Objective,
        parameters: &[usize],
    ) -> Result<Vec<f32>> {
        let _ = (objective, parameters);
        Err(self.missing(Capability::PerSampleGradients))
    }

    /// `H v` for the Hessian `H` of `objective`'s mean loss with respect to
    /// all parameters. By default a central finite difference of two
    /// gradients ([`finite_difference_hvp`]).
    fn hessian_vector_product(
        &mut self,
        objective: &Objective,
        v: &[Vec<f32>],
    ) -> Result<Vec<Vec<f32>>> {
        finite_difference_hvp(self, objective, v)
    }

    /// The outputs of the layers `tap` names over `samples`, input side
    /// first.
    fn activations(&mut self, samples: &Samples, tap: Tap) -> Result<Vec<Activation>> {
        let _ = (samples, tap);
        Err(self.missing(Capability::Activations))
    }

    /// Sets one keep-mask per parameter (`None` keeps all): pruned weights
    /// become zero and stay zero through training.
    fn set_masks(&mut self, masks: &[Option<Mask>]) -> Result<()> {
        let _ = masks;
        Err(self.missing(Capability::Masks))
    }

    /// Multiplies each unit's output of the layer of weight `parameter` by a
    /// factor (`None` restores 1): 0 removes a unit, and greedy forward
    /// selection scales the units it keeps.
    fn set_unit_scales(&mut self, parameter: usize, scales: Option<&[f32]>) -> Result<()> {
        let _ = (parameter, scales);
        Err(self.missing(Capability::UnitScales))
    }

    /// Loss and accuracy of the network as it is (masks and scales applied).
    fn evaluate(&mut self, objective: &Objective) -> Result<Evaluation> {
        let _ = objective;
        Err(self.missing(Capability::Evaluate))
    }

    /// Loss and accuracy over `objective` with each of `candidates` as the
    /// unit scales of the layer of weight `parameter` in turn: what greedy
    /// forward selection asks at every step. The layer's scales are
    /// unspecified afterwards (set them). By default
    /// [`Host::set_unit_scales`] then [`Host::evaluate`] per candidate; a
    /// host can share the work before the layer across candidates, and
    /// must return what the default would.
    fn evaluate_unit_scales(
        &mut self,
        parameter: usize,
        candidates: &[Vec<f32>],
        objective: &Objective,
    ) -> Result<Vec<Evaluation>> {
        candidates
            .iter()
            .map(|s| {
                self.set_unit_scales(parameter, Some(s))?;
                self.evaluate(objective)
            })
            .collect()
    }

    /// The number of samples in `split` (a part of
    /// [`Capability::Evaluate`]: methods draw mini-batches from it).
    fn split_len(&self, split: Split) -> Result<usize> {
        let _ = split;
        Err(self.missing(Capability::Evaluate))
    }

    /// Trains one epoch on the training split with the host's own optimiser,
    /// keeping masked weights at zero; returns the mean training loss.
    fn train_epoch(&mut self) -> Result<f64> {
        Err(self.missing(Capability::Train))
    }

    /// Trains `steps` mini-batch steps with the host's own optimiser (a
    /// brief fine-tune, a fraction of an epoch), keeping masked weights at
    /// zero; returns the mean training loss of those steps.
    fn train_steps(&mut self, steps: usize) -> Result<f64> {
        let _ = steps;
        Err(self.missing(Capability::Train))
    }

    /// A copy of every parameter's values.
    fn snapshot(&self) -> Result<Snapshot> {
        let weights = (0..self.parameters().len())
            .map(|i| self.weights(i))
            .collect::<Result<_>>()?;
        Ok(Snapshot { weights })
    }

    /// Puts back a snapshot's values (a host with an optimiser also resets
    /// its state, as when training restarts from those weights).
    fn restore(&mut self, snapshot: &Snapshot) -> Result<()> {
        crate::contract::check::same_len(
            "snapshot parameters",
            self.parameters().len(),
            snapshot.weights.len(),
        )?;
        for (i, w) in snapshot.weights.iter().enumerate() {
            self.set_weights(i, w)?;
        }
        Ok(())
    }

    /// The error for a capability this host lacks.
    fn missing(&self, capability: Capability) -> Error {
        Error::MissingCapability {
            host: self.name(),
            capability: capability.name(),
        }
    }
}

/// Fails with [`Error::MissingCapability`] for the first of `needs` that
/// `host` lacks.
pub fn require<H: Host + ?Sized>(host: &H, needs: &[Capability]) -> Result<()> {
    match needs.iter().find(|&&c| !host.supports(c)) {
        Some(&c) => Err(host.missing(c)),
        None => Ok(()),
    }
}

/// Relative step of [`finite_difference_hvp`]: `ε = FD_STEP · ‖θ‖ / ‖v‖`.
pub const FD_STEP: f64 = 1e-3;

/// `H v ≈ (∇L(θ + εv) − ∇L(θ − εv)) / 2ε` with `ε = FD_STEP · ‖θ‖ / ‖v‖`
/// (`‖θ‖` taken as 1 when the weights are all zero), over all parameters.
/// Exact to second order in `ε` for smooth losses; at a kink of ReLU or max
/// pooling it averages the two sides. The weights are restored afterwards,
/// also when a gradient fails. Needs [`Capability::Gradient`].
pub fn finite_difference_hvp<H: Host + ?Sized>(
    host: &mut H,
    objective: &Objective,
    v: &[Vec<f32>],
) -> Result<Vec<Vec<f32>>> {
    require(host, &[Capability::Gradient])?;
    let params = host.parameters().to_vec();
    crate::contract::check::same_len("vector parameters", params.len(), v.len())?;
    for (p, vi) in params.iter().zip(v) {
        crate::contract::check::same_len("vector entries", p.shape.numel(), vi.len())?;
    }
    let theta = host.snapshot()?;
    let norm = |x: &[Vec<f32>]| {
        libm::sqrt(
            x.iter()
                .flatten()
                .map(|&a| f64::from(a) * f64::from(a))
                .sum::<f64>(),
        )
    };
    let v_norm = norm(v);
    if !v_norm.is_finite() {
        return Err(Error::NonFinite {
            what: "Hessian-vector product direction",
        });
    }
    if v_norm == 0.0 {
        return Ok(params.iter().map(|p| vec![0.0; p.shape.numel()]).collect());
    }
    let theta_norm = norm(&theta.weights);
    let eps = FD_STEP * if theta_norm > 0.0 { theta_norm } else { 1.0 } / v_norm;
    let shifted = |sign: f64| -> Snapshot {
        let weights = theta
            .weights
            .iter()
            .zip(v)
            .map(|(w, d)| {
                w.iter()
                    .zip(d)
                    .map(|(&a, &b)| (f64::from(a) + sign * eps * f64::from(b)) as f32)
                    .collect()
            })
            .collect();
        Snapshot { weights }
    };
    // Weights are set one by one rather than restored: a host's `restore`
    // may also reset its optimiser, which a derivative must not do.
    let set_all = |host: &mut H, s: &Snapshot| -> Result<()> {
        for (i, w) in s.weights.iter().enumerate() {
            host.set_weights(i, w)?;
        }
        Ok(())
    };
    let result = (|| {
        set_all(host, &shifted(1.0))?;
        let plus = host.gradient(objective)?;
        set_all(host, &shifted(-1.0))?;
        let minus = host.gradient(objective)?;
        Ok(plus
            .iter()
            .zip(&minus)
            .map(|(a, b)| {
                a.iter()
                    .zip(b)
                    .map(|(&x, &y)| ((f64::from(x) - f64::from(y)) / (2.0 * eps)) as f32)
                    .collect()
            })
            .collect())
    })();
    set_all(host, &theta)?;
    result
}

/// Completes weight masks with the masks of the biases they imply: where
/// every weight of a unit (a row of the matrix view) is pruned, the unit's
/// bias entry is pruned too, so the unit is gone and not left emitting a
/// constant. `masks` has one entry per parameter; bias entries that are
/// already masked keep what their mask prunes.
///
/// ```
/// use prunus_core::host::{masks_with_biases, Parameter, ParameterKind};
/// use prunus_core::{Mask, Shape};
/// let p = |name: &str, dims: &[usize], kind| Parameter {
///     name: name.into(), shape: Shape::new(dims).unwrap(), kind, layer: 0,
///     prunable: true, coupling: None,
/// };
/// let params = [p("w", &[2, 3], ParameterKind::Weight), p("b", &[2], ParameterKind::Bias)];
/// let row_1_gone = Mask::from_fn(Shape::matrix(2, 3)?, |i| i < 3);
/// let masks = masks_with_biases(&params, vec![Some(row_1_gone), None])?;
/// assert_eq!(masks[1].as_ref().unwrap().kept().collect::<Vec<_>>(), [0]);
/// # Ok::<(), prunus_core::Error>(())
/// ```
pub fn masks_with_biases(
    parameters: &[Parameter],
    mut masks: Vec<Option<Mask>>,
) -> Result<Vec<Option<Mask>>> {
    crate::contract::check::same_len("masks", parameters.len(), masks.len())?;
    for (i, p) in parameters.iter().enumerate() {
        if let Some(m) = &masks[i] {
            crate::contract::check::same_shape("mask", &p.shape, crate::HasShape::shape(m))?;
        }
    }
    for (b, bias) in parameters.iter().enumerate() {
        if bias.kind != ParameterKind::Bias {
            continue;
        }
        let weight = parameters
            .iter()
            .position(|w| w.kind == ParameterKind::Weight && w.layer == bias.layer);
        let Some(w) = weight else { continue };
        let Some(wm) = &masks[w] else { continue };
        if parameters[w].units() != bias.shape.numel() {
            return Err(Error::shape_mismatch(
                "bias of a masked layer",
                &Shape::vector(parameters[w].units()),
                &bias.shape,
            ));
        }
        let units = wm.reduce_any(crate::Grouping::Rows)?;
        masks[b] = Some(match &masks[b] {
            Some(prev) => prev.and(&units)?,
            None => units,
        });
    }
    Ok(masks)
}
