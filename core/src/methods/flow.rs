//! Gradient-flow importance measures (Lubana & Dick, ICLR 2021): scores
//! from the weights `θ`, the mean gradient `g` and the Hessian-gradient
//! product `Hg` of a [`Host`] network, computed on any [`Backend`].
//!
//! | measure | per weight | per unit (sum over its weights) |
//! |---|---|---|
//! | [`Measure::Magnitude`] | `|θ|` | `‖θ_f‖₂` (ranked as `‖θ_f‖₂²`) |
//! | [`Measure::Snip`] | `|θ g|` | `Σ |θ g|` |
//! | [`Measure::SnipBiased`] | `|θ² g|` | `Σ |θ² g|` |
//! | [`Measure::Taylor`] | `|θ g|` | `|Σ θ g|` |
//! | [`Measure::Grasp`] | `θ Hg` | `Σ θ Hg` (signed) |
//! | [`Measure::GradNorm`] | `|θ Hg|` | `|Σ θ Hg|` |
//! | [`Measure::Random`] | uniform | uniform |
//!
//! The lowest score is pruned first, as everywhere in prunus: GraSP prunes
//! the most negative `θ Hg` first, whose removal raises the gradient norm.
//! Units are the rows of a weight's matrix view (neurons, conv filters);
//! biases do not enter the scores.
//!
//! `g` is the mean gradient over [`MeasureConfig::samples`] with logits
//! divided by [`MeasureConfig::temperature`]; GraSP takes `g` and `Hg` at
//! [`MeasureConfig::grasp_temperature`], as its official code does. `Hg` is
//! the host's exact product when it has one
//! ([`Capability::ExactHessianVectorProduct`]), otherwise core's central
//! finite difference ([`crate::host::finite_difference_hvp`]).

use alloc::vec::Vec;
use core::fmt;

use crate::contract::backend::Backend;
use crate::contract::error::{Error, Result};
use crate::contract::granularity::{Granularity, Grouping, Reduction};
use crate::contract::mask::Mask;
use crate::contract::op::{BinaryOp, UnaryOp};
use crate::contract::shape::HasShape;
use crate::host::{Capability, Host, Objective, Samples, Split, require};
use crate::selection::config::PruneConfig;
use crate::selection::prune::prune_with_scores;
use crate::selection::select::Layer;

/// An importance measure of the gradient-flow family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Measure {
    /// Magnitude `|θ|`; the L2 norm of a unit.
    Magnitude,
    /// Loss preservation (SNIP): `|θ g|`.
    Snip,
    /// Magnitude-biased loss preservation: `|θ² g|`.
    SnipBiased,
    /// First-order Taylor: `|Σ θ g|` over a unit (signed inside the sum).
    Taylor,
    /// GraSP: `θ Hg`, signed.
    Grasp,
    /// Gradient-norm preservation: `|θ Hg|`.
    GradNorm,
    /// Uniform random scores from a seed.
    Random {
        /// The seed.
        seed: u64,
    },
}

impl Measure {
    /// The names of every measure, as [`Measure::name`] gives them.
    pub const NAMES: [&'static str; 7] = [
        "magnitude",
        "snip",
        "snip-biased",
        "taylor",
        "grasp",
        "grad-norm",
        "random",
    ];

    /// The measure's report name: `magnitude`, `snip`, `snip-biased`,
    /// `taylor`, `grasp`, `grad-norm` or `random`.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Magnitude => "magnitude",
            Measure::Snip => "snip",
            Measure::SnipBiased => "snip-biased",
            Measure::Taylor => "taylor",
            Measure::Grasp => "grasp",
            Measure::GradNorm => "grad-norm",
            Measure::Random { .. } => "random",
        }
    }

    /// The measure named `name` ([`Measure::NAMES`]); `seed` is used by
    /// `random` only.
    ///
    /// ```
    /// use prunus_core::methods::flow::Measure;
    /// assert_eq!(Measure::from_name("grad-norm", 0), Some(Measure::GradNorm));
    /// assert_eq!(Measure::from_name("random", 7), Some(Measure::Random { seed: 7 }));
    /// assert_eq!(Measure::from_name("obs", 0), None);
    /// ```
    pub fn from_name(name: &str, seed: u64) -> Option<Self> {
        Some(match name {
            "magnitude" => Measure::Magnitude,
            "snip" => Measure::Snip,
            "snip-biased" => Measure::SnipBiased,
            "taylor" => Measure::Taylor,
            "grasp" => Measure::Grasp,
            "grad-norm" => Measure::GradNorm,
            "random" => Measure::Random { seed },
            _ => return None,
        })
    }

    /// Whether the measure uses the gradient `g`.
    pub fn uses_gradient(self) -> bool {
        !matches!(self, Measure::Magnitude | Measure::Random { .. })
    }

    /// Whether the measure uses `Hg`.
    pub fn uses_hessian(self) -> bool {
        matches!(self, Measure::Grasp | Measure::GradNorm)
    }

    /// What the host must provide.
    pub fn needs(self) -> &'static [Capability] {
        if self.uses_gradient() {
            &[Capability::Gradient]
        } else {
            &[]
        }
    }
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the derivatives of a measure are taken.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct MeasureConfig {
    /// The samples `g` and `Hg` average over (default: the first 2,560 of
    /// the training split, the official default).
    pub samples: Samples,
    /// The logit temperature of `g` (default 5).
    pub temperature: f32,
    /// The logit temperature of GraSP's `g` and `Hg` (default 200).
    pub grasp_temperature: f32,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        MeasureConfig {
            samples: Samples::first(Split::Train, 2560),
            temperature: 5.0,
            grasp_temperature: 200.0,
        }
    }
}

impl MeasureConfig {
    /// Averages over `samples`.
    pub fn samples(mut self, samples: Samples) -> Self {
        self.samples = samples;
        self
    }

    /// The logit temperature of `g`.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = temperature;
        self
    }

    /// The logit temperature of GraSP.
    pub fn grasp_temperature(mut self, temperature: f32) -> Self {
        self.grasp_temperature = temperature;
        self
    }
}

/// The host-side inputs of a measure for some parameters: their weights
/// and, where the measure uses them, `g` and `Hg` (one buffer per parameter,
/// in the order asked).
#[derive(Clone, Debug, PartialEq)]
pub struct Signals {
    /// The parameters, as indices into [`Host::parameters`].
    pub parameters: Vec<usize>,
    /// Their weights, pruned entries zeroed.
    pub weights: Vec<Vec<f32>>,
    /// The mean gradient, when the measure uses it.
    pub gradient: Option<Vec<Vec<f32>>>,
    /// `Hg`, when the measure uses it.
    pub hessian_gradient: Option<Vec<Vec<f32>>>,
}

/// Gathers what `measure` needs from `host` for `parameters`. `masks` (one
/// per parameter listed, or empty) zero the pruned weights, so that a host
/// that does not enforce masks is scored as pruned.
pub fn signals<H: Host + ?Sized>(
    host: &mut H,
    measure: Measure,
    parameters: &[usize],
    masks: &[Option<Mask>],
    config: &MeasureConfig,
) -> Result<Signals> {
    require(host, measure.needs())?;
    let count = host.parameters().len();
    if let Some(&index) = parameters.iter().find(|&&i| i >= count) {
        return Err(Error::UnknownParameter { index, count });
    }
    if !masks.is_empty() {
        crate::contract::check::same_len("masks", parameters.len(), masks.len())?;
    }
    let mut weights = Vec::with_capacity(parameters.len());
    for (j, &i) in parameters.iter().enumerate() {
        let mut w = host.weights(i)?;
        crate::contract::check::same_len("weights", host.parameters()[i].shape.numel(), w.len())?;
        if let Some(Some(m)) = masks.get(j) {
            crate::contract::check::same_shape("mask", &host.parameters()[i].shape, m.shape())?;
            for (k, x) in w.iter_mut().enumerate() {
                if !m.get(k) {
                    *x = 0.0;
                }
            }
        }
        weights.push(w);
    }
    let temperature = if matches!(measure, Measure::Grasp) {
        config.grasp_temperature
    } else {
        config.temperature
    };
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(Error::FractionOutOfRange {
            what: "temperature (must be finite and positive)",
            value: f64::from(temperature),
        });
    }
    let objective = Objective::new(config.samples).temperature(temperature);
    let (gradient, hessian_gradient) = if measure.uses_gradient() {
        let g = host.gradient(&objective)?;
        check_finite(&g, "gradients")?;
        let hg = if measure.uses_hessian() {
            let hg = host.hessian_vector_product(&objective, &g)?;
            check_finite(&hg, "Hessian-gradient products")?;
            Some(pick(&hg, parameters))
        } else {
            None
        };
        (Some(pick(&g, parameters)), hg)
    } else {
        (None, None)
    };
    Ok(Signals {
        parameters: parameters.to_vec(),
        weights,
        gradient,
        hessian_gradient,
    })
}

fn check_finite(x: &[Vec<f32>], what: &'static str) -> Result<()> {
    if x.iter().flatten().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(Error::NonFinite { what })
    }
}

fn pick(all: &[Vec<f32>], parameters: &[usize]) -> Vec<Vec<f32>> {
    parameters.iter().map(|&i| all[i].clone()).collect()
}

/// The scores of one tensor under `measure` on `backend`: per weight when
/// `grouping` is `None`, per unit (shape `[units]`) otherwise. `gradient`
/// and `hessian_gradient` are needed by the measures that use them;
/// `stream` tells apart the tensors of one random draw.
///
/// ```
/// use prunus_core::methods::flow::{Measure, score};
/// use prunus_core::{Backend, Grouping, ReferenceBackend, Shape};
/// let b = ReferenceBackend;
/// let s = Shape::matrix(2, 2)?;
/// let theta = b.upload(&[1.0, -2.0, 3.0, 0.5], &s)?;
/// let g = b.upload(&[0.5, 0.5, -1.0, 2.0], &s)?;
/// // Taylor per row: |1·0.5 − 2·0.5| = 0.5 and |3·(−1) + 0.5·2| = 2.
/// let t = score(&b, Measure::Taylor, &theta, Some(&g), None, Some(Grouping::Rows), 0)?;
/// assert_eq!(b.download(&t)?, [0.5, 2.0]);
/// # Ok::<(), prunus_core::Error>(())
/// ```
pub fn score<B: Backend + ?Sized>(
    backend: &B,
    measure: Measure,
    theta: &B::Tensor,
    gradient: Option<&B::Tensor>,
    hessian_gradient: Option<&B::Tensor>,
    grouping: Option<Grouping>,
    stream: u32,
) -> Result<B::Tensor> {
    let shape = theta.shape();
    let needed = |t: Option<&B::Tensor>, what: &'static str| -> Result<B::Tensor> {
        let t = t.ok_or(Error::MissingInput { what })?;
        crate::contract::check::same_shape(what, shape, t.shape())?;
        backend.binary(BinaryOp::Mul, theta, t)
    };
    // Per weight: |θ|, θg, θ²g or θHg before the absolute value or sum.
    let (terms, per_weight_abs, reduction, abs_after) = match measure {
        Measure::Random { seed } => {
            let shape = grouping.map_or_else(|| shape.clone(), |g| g.unit_shape(shape));
            return backend.random_uniform(&shape, seed, stream);
        }
        Measure::Magnitude => (
            backend.unary(UnaryOp::Scale(1.0), theta)?,
            true,
            Reduction::SumSquares,
            false,
        ),
        Measure::Snip => (needed(gradient, "gradient")?, true, Reduction::L1, false),
        Measure::SnipBiased => {
            let tg = needed(gradient, "gradient")?;
            (
                backend.binary(BinaryOp::Mul, theta, &tg)?,
                true,
                Reduction::L1,
                false,
            )
        }
        Measure::Taylor => (needed(gradient, "gradient")?, true, Reduction::Sum, true),
        Measure::Grasp => (
            needed(hessian_gradient, "Hessian-gradient product")?,
            false,
            Reduction::Sum,
            false,
        ),
        Measure::GradNorm => (
            needed(hessian_gradient, "Hessian-gradient product")?,
            true,
            Reduction::Sum,
            true,
        ),
    };
    match grouping {
        None if per_weight_abs => backend.unary(UnaryOp::Abs, &terms),
        None => Ok(terms),
        Some(g) => {
            let units = backend.reduce_groups(&terms, g, reduction)?;
            if abs_after {
                backend.unary(UnaryOp::Abs, &units)
            } else {
                Ok(units)
            }
        }
    }
}

/// Scores every tensor of `signals` on `backend` ([`score`]), per weight
/// or per unit of `grouping`. `weights` are `signals.weights` already on
/// the backend (the caller keeps them for selection; they are uploaded once).
pub fn scores<B: Backend + ?Sized>(
    backend: &B,
    measure: Measure,
    signals: &Signals,
    weights: &[B::Tensor],
    grouping: Option<Grouping>,
) -> Result<Vec<B::Tensor>> {
    crate::contract::check::same_len("weight tensors", signals.weights.len(), weights.len())?;
    let upload = |x: Option<&Vec<Vec<f32>>>, j: usize| -> Result<Option<B::Tensor>> {
        x.map(|x| backend.upload(&x[j], weights[j].shape()))
            .transpose()
    };
    (0..weights.len())
        .map(|j| {
            let g = upload(signals.gradient.as_ref(), j)?;
            let hg = upload(signals.hessian_gradient.as_ref(), j)?;
            score(
                backend,
                measure,
                &weights[j],
                g.as_ref(),
                hg.as_ref(),
                grouping,
                signals.parameters[j] as u32,
            )
        })
        .collect()
}

/// Prunes the `parameters` of `host` by `measure`: gathers the signals,
/// scores them on `backend` and selects as `config` asks (sparsity, scope,
/// guards; unstructured, N:M or groups). `masks` are the masks of an
/// earlier round, one per parameter listed (or empty): the result never
/// revives what they prune. Returns one weight mask per parameter listed;
/// the host is not changed (see [`Host::set_masks`]).
pub fn prune_host<B: Backend + ?Sized, H: Host + ?Sized>(
    backend: &B,
    host: &mut H,
    measure: Measure,
    parameters: &[usize],
    masks: &[Option<Mask>],
    config: &PruneConfig,
    measure_config: &MeasureConfig,
) -> Result<Vec<Mask>> {
    config.granularity.validate()?;
    let signals = signals(host, measure, parameters, masks, measure_config)?;
    let params = host.parameters();
    let shapes: Vec<crate::Shape> = parameters
        .iter()
        .map(|&i| params[i].shape.clone())
        .collect();
    let names: Vec<&str> = parameters
        .iter()
        .map(|&i| params[i].name.as_str())
        .collect();
    let grouping = match config.granularity {
        Granularity::Groups(g) => Some(g),
        _ => None,
    };
    let weights: Vec<B::Tensor> = signals
        .weights
        .iter()
        .zip(&shapes)
        .map(|(w, s)| backend.upload(w, s))
        .collect::<Result<_>>()?;
    let scores = scores(backend, measure, &signals, &weights, grouping)?;
    let layers: Vec<Layer<'_, B>> = names
        .iter()
        .zip(&weights)
        .enumerate()
        .map(|(j, (n, w))| Layer::new(n, w).with_mask(masks.get(j).and_then(Option::as_ref)))
        .collect();
    prune_with_scores(backend, &layers, &scores, config)
}
