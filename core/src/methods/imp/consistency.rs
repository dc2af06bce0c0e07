//! Information consistency (METHODS.md §3): the "flow" of a network, a short
//! vector that Information-Consistent Pruning compares between a pruned
//! network and its dense reference to decide when retraining has done
//! enough.
//!
//! - [`Flow::Information`]: for every weight layer its pre-activation
//!   output ([`Tap::PreActivation`]), averaged over spatial positions for
//!   convolutions; each unit standardised over the samples (population
//!   standard deviation, floored at [`STD_FLOOR`]); for consecutive layers
//!   `l, l+1` the mean of the cross-correlation matrix
//!   `C_l = E[z_l z_{l+1}ᵀ]`. The vector is `(mean C_1, ..., mean C_{L−1})`.
//! - [`Flow::Gradient`]: for every weight tensor, a fresh gradient's mean
//!   `|∂L/∂W|` over all its entries (pruned entries have gradient zero) and
//!   its Frobenius norm `‖∂L/∂W‖_F`, in parameter order. Both the pruned
//!   network and the reference are measured with the same statistics on the
//!   same samples (the official code compares two different ones).
//!
//! Every layer with a weight counts, the classifier included: the flow is a
//! property of the whole network, not only of the layers being pruned.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use crate::contract::error::{Error, Result};
use crate::host::{
    Activation, Capability, Host, Objective, Parameter, ParameterKind, Samples, Tap,
};

/// Standard deviations below this are raised to it before standardising, so
/// a unit that never varies contributes zero instead of dividing by zero.
pub const STD_FLOOR: f64 = 1e-6;

/// Which flow a rule compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// Cross-correlations of consecutive layers' standardised outputs
    /// (InCoP-IF).
    Information,
    /// Per-tensor gradient magnitudes (InCoP-GF).
    Gradient,
}

impl Flow {
    /// Both flows.
    pub const ALL: [Flow; 2] = [Flow::Information, Flow::Gradient];

    /// A short name: `information` or `gradient`.
    pub fn name(self) -> &'static str {
        match self {
            Flow::Information => "information",
            Flow::Gradient => "gradient",
        }
    }

    /// What measuring it needs of a host.
    pub fn needs(self) -> &'static [Capability] {
        match self {
            Flow::Information => &[Capability::Activations],
            Flow::Gradient => &[Capability::Gradient],
        }
    }

    /// The flow vector of `host` as it is now, over `samples`.
    pub fn measure<H: Host + ?Sized>(self, host: &mut H, samples: &Samples) -> Result<Vec<f64>> {
        match self {
            Flow::Information => information_flow(host, samples),
            Flow::Gradient => gradient_flow(host, &Objective::new(*samples)),
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The information-flow vector of `host` over `samples`
/// ([`Flow::Information`]). Needs [`Capability::Activations`].
pub fn information_flow<H: Host + ?Sized>(host: &mut H, samples: &Samples) -> Result<Vec<f64>> {
    crate::host::require(host, Flow::Information.needs())?;
    let activations = host.activations(samples, Tap::PreActivation)?;
    information_flow_of(host.parameters(), &activations)
}

/// The information-flow vector of pre-activation outputs `activations`
/// (input side first, as [`Host::activations`] gives them) of a network
/// with `parameters`: `L − 1` entries for `L ≥ 2` layers (fewer is an
/// error).
///
/// ```
/// use prunus_core::methods::imp::consistency::information_flow_of;
/// use prunus_core::host::{Activation, Parameter, ParameterKind};
/// use prunus_core::Shape;
/// let p = |dims: &[usize]| Parameter {
///     name: "w".into(), shape: Shape::new(dims).unwrap(), kind: ParameterKind::Weight,
///     layer: 0, prunable: true, coupling: None,
/// };
/// // Two one-unit layers over two samples: standardised, both are (-1, 1).
/// let a = Activation { parameter: 0, width: 1, values: vec![0.0, 2.0] };
/// let b = Activation { parameter: 1, width: 1, values: vec![-3.0, 5.0] };
/// let flow = information_flow_of(&[p(&[1, 1]), p(&[1, 1])], &[a, b])?;
/// assert!((flow[0] - 1.0).abs() < 1e-12);
/// # Ok::<(), prunus_core::Error>(())
/// ```
pub fn information_flow_of(
    parameters: &[Parameter],
    activations: &[Activation],
) -> Result<Vec<f64>> {
    // With one layer the vector would be empty and every distance zero:
    // a rule on it would fire at once, whatever the network.
    if activations.len() < 2 {
        return Err(Error::InvalidArgument {
            what: "information flow",
            expected: "measured on a network with at least two weight layers",
        });
    }
    let sums = activations
        .iter()
        .map(|a| standardised_sums(parameters, a))
        .collect::<Result<Vec<_>>>()?;
    let mut flow = Vec::with_capacity(sums.len().saturating_sub(1));
    for pair in sums.windows(2) {
        let ((s, a), (t, b)) = (&pair[0], &pair[1]);
        crate::contract::check::same_len("samples of consecutive layers", s.len(), t.len())?;
        // mean(C) = E[Σ_i z_i · Σ_j z'_j] / (a b).
        let products: f64 = s.iter().zip(t).map(|(x, y)| x * y).sum();
        flow.push(products / (s.len() as f64 * (*a as f64) * (*b as f64)));
    }
    Ok(flow)
}

/// Per sample, the sum over units of the standardised (spatially averaged)
/// outputs, with the number of units.
fn standardised_sums(parameters: &[Parameter], a: &Activation) -> Result<(Vec<f64>, usize)> {
    let units =
        parameters
            .get(a.parameter)
            .map(Parameter::units)
            .ok_or(Error::InvalidArgument {
                what: "activation's parameter",
                expected: "the index of one of the host's parameters",
            })?;
    if units == 0 || a.width == 0 || !a.width.is_multiple_of(units) {
        return Err(Error::InvalidArgument {
            what: "activation width",
            expected: "a positive multiple of its layer's units (units x spatial positions)",
        });
    }
    if a.values.is_empty() || !a.values.len().is_multiple_of(a.width) {
        return Err(Error::InvalidArgument {
            what: "activation values",
            expected: "at least one sample of `width` values each",
        });
    }
    if a.values.iter().any(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: "layer activations",
        });
    }
    let spatial = a.width / units;
    let n = a.values.len() / a.width;
    // Unit values per sample, averaged over positions.
    let z: Vec<f64> = a
        .values
        .chunks_exact(spatial)
        .map(|c| c.iter().map(|&v| f64::from(v)).sum::<f64>() / spatial as f64)
        .collect();
    let mut mean = vec![0.0; units];
    for row in z.chunks_exact(units) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0.0; units];
    for row in z.chunks_exact(units) {
        for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (v - m) * (v - m);
        }
    }
    let scale: Vec<f64> = var
        .iter()
        .map(|s| 1.0 / libm::sqrt(s / n as f64).max(STD_FLOOR))
        .collect();
    let sums = z
        .chunks_exact(units)
        .map(|row| {
            row.iter()
                .zip(&mean)
                .zip(&scale)
                .map(|((v, m), k)| (v - m) * k)
                .sum()
        })
        .collect();
    Ok((sums, units))
}

/// The gradient-flow vector of `host` for `objective` ([`Flow::Gradient`]):
/// a fresh gradient, then [`gradient_flow_of`]. Needs
/// [`Capability::Gradient`].
pub fn gradient_flow<H: Host + ?Sized>(host: &mut H, objective: &Objective) -> Result<Vec<f64>> {
    crate::host::require(host, Flow::Gradient.needs())?;
    let gradient = host.gradient(objective)?;
    gradient_flow_of(host.parameters(), &gradient)
}

/// `(mean |g|, ‖g‖_F)` of every weight tensor of `gradient` (one buffer per
/// parameter), flattened in parameter order; biases are left out.
///
/// ```
/// use prunus_core::methods::imp::consistency::gradient_flow_of;
/// use prunus_core::host::{Parameter, ParameterKind};
/// use prunus_core::Shape;
/// let p = |dims: &[usize], kind| Parameter {
///     name: "p".into(), shape: Shape::new(dims).unwrap(), kind, layer: 0,
///     prunable: true, coupling: None,
/// };
/// let params = [p(&[1, 2], ParameterKind::Weight), p(&[1], ParameterKind::Bias)];
/// let flow = gradient_flow_of(&params, &[vec![3.0, -4.0], vec![9.0]])?;
/// assert_eq!(flow, [3.5, 5.0]);
/// # Ok::<(), prunus_core::Error>(())
/// ```
pub fn gradient_flow_of(parameters: &[Parameter], gradient: &[Vec<f32>]) -> Result<Vec<f64>> {
    crate::contract::check::same_len("gradient buffers", parameters.len(), gradient.len())?;
    let mut flow = Vec::new();
    for (p, g) in parameters.iter().zip(gradient) {
        if p.kind != ParameterKind::Weight {
            continue;
        }
        crate::contract::check::same_len("gradient entries", p.shape.numel(), g.len())?;
        if g.is_empty() {
            return Err(Error::InvalidArgument {
                what: "weight tensor",
                expected: "non-empty",
            });
        }
        if g.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite { what: "gradients" });
        }
        let abs: f64 = g.iter().map(|&v| f64::from(v).abs()).sum();
        let squares: f64 = g.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        flow.push(abs / g.len() as f64);
        flow.push(libm::sqrt(squares));
    }
    Ok(flow)
}

/// `‖a − b‖₂`, the distance the stopping rule compares with `ε`.
pub fn distance(a: &[f64], b: &[f64]) -> Result<f64> {
    crate::contract::check::same_len("flow vector entries", a.len(), b.len())?;
    Ok(libm::sqrt(
        a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(),
    ))
}
