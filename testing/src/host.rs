//! Checks for any [`Host`]: a network that data-dependent methods query
//! (the lab's reference networks, the candle and burn adapters, or your
//! own). Each returns `Ok` or a [`HostFailure`] naming the parameter, the
//! element and the values.
//!
//! - [`gradient_matches_finite_differences`]: [`Host::gradient`] against
//!   central differences of [`Host::evaluate`]'s loss;
//! - [`masks_kept_through_training`]: after [`Host::set_masks`], pruned
//!   weights are zero and stay so through [`Host::train_steps`].
//!
//! ```
//! use prunus_core::{Host, Objective, Samples, Split};
//! use prunus_testing::host::{GradientCheck, gradient_matches_finite_differences};
//! # fn check<H: Host>(host: &mut H) -> Result<(), Box<dyn std::error::Error>> {
//! let objective = Objective::new(Samples::first(Split::Train, 32));
//! gradient_matches_finite_differences(host, &objective, &GradientCheck::default())?;
//! # Ok(())
//! # }
//! ```

use std::fmt;

use prunus_core::{Host, Mask, Objective};

use crate::invariants::{Violation, pruned_weights_zero_either_sign};

/// A [`Host`] that broke a check.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum HostFailure {
    /// The host returned an error.
    Host(prunus_core::Error),
    /// A gradient entry differs from the finite difference by more than the
    /// tolerance.
    Gradient {
        /// The parameter's name.
        parameter: String,
        /// The entry's flat index.
        index: usize,
        /// What [`Host::gradient`] returned.
        gradient: f64,
        /// The central difference of the loss.
        numeric: f64,
        /// The allowed difference at this entry.
        tolerance: f64,
    },
    /// Every gradient entry checked was (near) zero: the check compared
    /// nothing. Use another objective, other samples or other weights.
    ZeroGradient {
        /// The largest magnitude seen.
        largest: f64,
    },
    /// A gradient buffer has the wrong length.
    Shape {
        /// The parameter's name.
        parameter: String,
        /// Entries returned.
        found: usize,
        /// Entries of the parameter.
        expected: usize,
    },
    /// A masked weight is not zero after `steps` training steps (0: right
    /// after [`Host::set_masks`]).
    MaskNotKept {
        /// Training steps taken when it was seen.
        steps: usize,
        /// What was wrong, naming the parameter and the element.
        violation: Violation,
    },
}

impl fmt::Display for HostFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostFailure::Host(e) => write!(f, "the host failed: {e}"),
            HostFailure::Gradient {
                parameter,
                index,
                gradient,
                numeric,
                tolerance,
            } => write!(
                f,
                "gradient of {parameter}[{index}] is {gradient:e}, the finite difference \
                 {numeric:e}: they differ by {:e}, more than {tolerance:e}",
                (gradient - numeric).abs()
            ),
            HostFailure::ZeroGradient { largest } => write!(
                f,
                "every gradient entry checked is below {largest:e}: the check would compare \
                 nothing (choose other samples or weights)"
            ),
            HostFailure::Shape {
                parameter,
                found,
                expected,
            } => write!(
                f,
                "the gradient of {parameter} has {found} entries, the parameter {expected}"
            ),
            HostFailure::MaskNotKept { steps, violation } => {
                write!(f, "after {steps} training steps: {violation}")
            }
        }
    }
}

impl std::error::Error for HostFailure {}

impl From<prunus_core::Error> for HostFailure {
    fn from(e: prunus_core::Error) -> Self {
        HostFailure::Host(e)
    }
}

/// Settings of [`gradient_matches_finite_differences`].
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct GradientCheck {
    /// The step `h` of the central difference `(L(w + h) − L(w − h)) / 2h`
    /// (taken on the f32 weights, so the actual step is what rounding
    /// leaves).
    pub step: f32,
    /// Relative tolerance, times the finite difference's magnitude.
    pub relative: f64,
    /// Absolute tolerance, added to the relative one.
    pub absolute: f64,
    /// Entries checked per parameter, spread evenly over it (`None`: all;
    /// each costs two evaluations).
    pub per_parameter: Option<usize>,
}

impl Default for GradientCheck {
    /// `h = 1e-3`, `2e-2` relative plus `1e-3` absolute, 16 entries per
    /// parameter: right for f32 networks of a few thousand weights and a
    /// mean loss of order one.
    fn default() -> Self {
        GradientCheck {
            step: 1e-3,
            relative: 2e-2,
            absolute: 1e-3,
            per_parameter: Some(16),
        }
    }
}

impl GradientCheck {
    /// The same check with step `h`.
    pub fn step(self, step: f32) -> Self {
        GradientCheck { step, ..self }
    }

    /// The same check with these tolerances.
    pub fn tolerance(self, relative: f64, absolute: f64) -> Self {
        GradientCheck {
            relative,
            absolute,
            ..self
        }
    }

    /// The same check on every entry (`None`) or `n` per parameter.
    pub fn per_parameter(self, n: Option<usize>) -> Self {
        GradientCheck {
            per_parameter: n,
            ..self
        }
    }
}

/// The entries of a parameter of `len` a check looks at.
fn entries(len: usize, per_parameter: Option<usize>) -> Vec<usize> {
    match per_parameter {
        Some(n) if n < len => (0..n).map(|i| i * len / n).collect(),
        _ => (0..len).collect(),
    }
}

/// [`Host::gradient`] of `objective` equals central differences of
/// [`Host::evaluate`]'s loss, in f64 around the f32 weights, within
/// `check`'s tolerances, on the entries it picks of every parameter. The
/// weights are put back afterwards. Needs [`prunus_core::Capability::Gradient`]
/// and [`prunus_core::Capability::Evaluate`].
///
/// At a kink (a ReLU input at zero, a max-pooling tie) the two sides
/// differ; a small step makes hitting one unlikely on random data. A
/// gradient that is zero everywhere checked is a failure, since it would
/// compare nothing.
pub fn gradient_matches_finite_differences<H: Host + ?Sized>(
    host: &mut H,
    objective: &Objective,
    check: &GradientCheck,
) -> Result<(), HostFailure> {
    let gradient = host.gradient(objective)?;
    let snapshot = host.snapshot()?;
    let outcome = compare_gradient(host, objective, check, &gradient, &snapshot.weights);
    host.restore(&snapshot)?;
    outcome
}

fn compare_gradient<H: Host + ?Sized>(
    host: &mut H,
    objective: &Objective,
    check: &GradientCheck,
    gradient: &[Vec<f32>],
    weights: &[Vec<f32>],
) -> Result<(), HostFailure> {
    let names: Vec<String> = host.parameters().iter().map(|p| p.name.clone()).collect();
    let mut largest = 0.0f64;
    for (p, w0) in weights.iter().enumerate() {
        let g = gradient.get(p).map_or(&[][..], |g| &g[..]);
        if g.len() != w0.len() {
            return Err(HostFailure::Shape {
                parameter: names[p].clone(),
                found: g.len(),
                expected: w0.len(),
            });
        }
        let mut w = w0.clone();
        for j in entries(w0.len(), check.per_parameter) {
            w[j] = w0[j] + check.step;
            let up = f64::from(w[j]);
            host.set_weights(p, &w)?;
            let plus = host.evaluate(objective)?.loss;
            w[j] = w0[j] - check.step;
            let down = f64::from(w[j]);
            host.set_weights(p, &w)?;
            let minus = host.evaluate(objective)?.loss;
            w[j] = w0[j];
            host.set_weights(p, &w)?;
            let numeric = (plus - minus) / (up - down);
            let exact = f64::from(g[j]);
            let tolerance = check.absolute + check.relative * numeric.abs();
            largest = largest.max(exact.abs()).max(numeric.abs());
            if (exact - numeric).abs() > tolerance || exact.is_nan() {
                return Err(HostFailure::Gradient {
                    parameter: names[p].clone(),
                    index: j,
                    gradient: exact,
                    numeric,
                    tolerance,
                });
            }
        }
    }
    if largest <= check.absolute {
        return Err(HostFailure::ZeroGradient { largest });
    }
    Ok(())
}

/// After [`Host::set_masks`]`(masks)`, every weight a mask prunes is zero,
/// and stays zero after each of `steps` calls of [`Host::train_steps`]`(1)`
/// (the optimiser must not move it, whatever its momentum or weight decay).
/// Either sign of zero passes, as the [`Host`] contract says "zero" and
/// frameworks mask by multiplying (`-w · 0` is `-0.0`); hold a host to
/// `+0.0` with [`crate::invariants::pruned_weights_zero`]. Needs [`prunus_core::Capability::Masks`] and
/// [`prunus_core::Capability::Train`]. The host keeps the masks and the
/// trained weights.
pub fn masks_kept_through_training<H: Host + ?Sized>(
    host: &mut H,
    masks: &[Option<Mask>],
    steps: usize,
) -> Result<(), HostFailure> {
    host.set_masks(masks)?;
    masks_hold(host, masks, 0)?;
    for step in 1..=steps {
        host.train_steps(1)?;
        masks_hold(host, masks, step)?;
    }
    Ok(())
}

/// Every weight that `masks` prunes is zero now.
fn masks_hold<H: Host + ?Sized>(
    host: &H,
    masks: &[Option<Mask>],
    steps: usize,
) -> Result<(), HostFailure> {
    for (p, mask) in masks.iter().enumerate() {
        let Some(mask) = mask else { continue };
        let name = host
            .parameters()
            .get(p)
            .map_or_else(|| format!("parameter {p}"), |p| p.name.clone());
        let w = host.weights(p)?;
        pruned_weights_zero_either_sign(&name, &w, mask)
            .map_err(|violation| HostFailure::MaskNotKept { steps, violation })?;
    }
    Ok(())
}
