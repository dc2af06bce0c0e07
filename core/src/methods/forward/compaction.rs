//! Physical compaction: structured pruning made to pay. A layer that lost
//! units becomes a smaller dense layer, and the layer that reads it loses
//! the matching inputs.
//!
//! A [`UnitSelection`] names the units (rows of the matrix view: neurons,
//! filters) of one weight parameter that stay, optionally with a per-unit
//! scale (greedy forward selection's `D/|S|`). A [`CompactionPlan`] turns
//! the selections into index maps for every parameter it touches:
//!
//! - the selected weight keeps its kept rows, and its bias (the parameter of
//!   kind [`ParameterKind::Bias`] in the same layer) the same entries;
//! - the consumer ([`Coupling`]) keeps the columns of the kept units: unit
//!   `j` owns columns `j * inputs_per_unit .. (j + 1) * inputs_per_unit`
//!   (the 9 taps of a 3x3 kernel's input channel, or the `h * w` positions
//!   of a channel flattened into a linear layer);
//! - the scales are folded away ([`Fold`]), so the compacted network needs
//!   none.
//!
//! The compacted network computes what the masked and scaled one does, up
//! to float rounding (tested on the lab's MLPs and CNNs).
//!
//! ```
//! use prunus_core::methods::forward::compaction::{compact, Fold, UnitSelection};
//! use prunus_core::host::{Coupling, Parameter, ParameterKind};
//! use prunus_core::{Mask, Shape};
//! let p = |name: &str, dims: &[usize], kind, layer, coupling| Parameter {
//!     name: name.into(), shape: Shape::new(dims).unwrap(), kind, layer,
//!     prunable: true, coupling,
//! };
//! // fc1: 3 units reading 2 inputs, read by fc2 (1 output).
//! let params = [
//!     p("fc1.weight", &[3, 2], ParameterKind::Weight, 0,
//!       Some(Coupling { consumer: 1, inputs_per_unit: 1 })),
//!     p("fc2.weight", &[1, 3], ParameterKind::Weight, 1, None),
//! ];
//! let weights = vec![vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![10.0, 20.0, 30.0]];
//! // Keep units 0 and 2, each scaled by 1.5.
//! let keep = Mask::from_bools(Shape::vector(3), &[true, false, true])?;
//! let sel = UnitSelection::new(0, keep).with_scales(vec![1.5, 0.0, 1.5]);
//! let (params, weights) = compact(&params, &weights, &[sel], Fold::Consumer)?;
//! assert_eq!(params[0].shape.dims(), [2, 2]);
//! assert_eq!(weights[0], [1.0, 2.0, 5.0, 6.0]);
//! assert_eq!(weights[1], [15.0, 45.0]);
//! # Ok::<(), prunus_core::Error>(())
//! ```

use alloc::vec;
use alloc::vec::Vec;

use crate::contract::error::{Error, Result};
use crate::contract::mask::Mask;
use crate::contract::shape::{HasShape, Shape};
use crate::host::{Coupling, Parameter, ParameterKind};

/// Where a kept unit's scale goes when the network is compacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Fold {
    /// Into the consumer's columns of the unit, as greedy forward selection
    /// folds `D/|S|` into the next layer. Exact when the activation between
    /// the layers is positively homogeneous (`f(s x) = s f(x)` for `s ≥ 0`:
    /// ReLU, leaky ReLU, max pooling, identity); scales must be `≥ 0`.
    #[default]
    Consumer,
    /// Into the unit's own row and bias entry. Exact for any activation
    /// when the scale multiplies the unit's pre-activation, as
    /// [`crate::Host::set_unit_scales`] does.
    Producer,
}

/// The units of one weight parameter that survive compaction, with the
/// scales to fold.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitSelection {
    /// The weight parameter (index into the host's parameters).
    pub parameter: usize,
    /// One flag per unit (row of the matrix view): kept or removed.
    pub keep: Mask,
    /// One scale per unit (entries of removed units are ignored); `None`
    /// for no scaling.
    pub scales: Option<Vec<f32>>,
}

impl UnitSelection {
    /// Keeps the units `keep` flags, unscaled.
    pub fn new(parameter: usize, keep: Mask) -> Self {
        UnitSelection {
            parameter,
            keep,
            scales: None,
        }
    }

    /// The same selection with per-unit scales.
    pub fn with_scales(mut self, scales: Vec<f32>) -> Self {
        self.scales = Some(scales);
        self
    }

    /// Keeps the units whose scale is not zero and folds the scales: what a
    /// host's [`crate::Host::set_unit_scales`] vector means.
    ///
    /// ```
    /// use prunus_core::methods::forward::compaction::UnitSelection;
    /// let s = UnitSelection::from_scales(4, vec![0.0, 2.0, 0.0, 2.0]);
    /// assert_eq!(s.keep.kept().collect::<Vec<_>>(), [1, 3]);
    /// ```
    pub fn from_scales(parameter: usize, scales: Vec<f32>) -> Self {
        let keep = Mask::from_fn(Shape::vector(scales.len()), |i| scales[i] != 0.0);
        UnitSelection {
            parameter,
            keep,
            scales: Some(scales),
        }
    }
}

/// What compaction does to one parameter: which rows and columns of its
/// matrix view stay, and what multiplies them.
#[derive(Clone, Debug, PartialEq)]
struct ParameterPlan {
    shape: Shape,
    rows: Option<Vec<usize>>,
    cols: Option<Vec<usize>>,
    row_scale: Option<Vec<f32>>,
    col_scale: Option<Vec<f32>>,
}

impl ParameterPlan {
    fn identity(shape: &Shape) -> Self {
        ParameterPlan {
            shape: shape.clone(),
            rows: None,
            cols: None,
            row_scale: None,
            col_scale: None,
        }
    }
}

/// Index maps that compact a network's parameters: built once from the
/// selections, then applied to weights ([`CompactionPlan::weights`]) and
/// masks ([`CompactionPlan::mask`]) alike.
#[derive(Clone, Debug, PartialEq)]
pub struct CompactionPlan {
    plans: Vec<ParameterPlan>,
    /// Each parameter's matrix view before compaction.
    sources: Vec<(usize, usize)>,
}

impl CompactionPlan {
    /// The plan for `selections` over `parameters`.
    ///
    /// Fails when a selection names a parameter that is not a weight, names
    /// one twice, has a mask or scales of the wrong length, keeps no unit,
    /// has non-finite scales (or negative ones under [`Fold::Consumer`]),
    /// or belongs to a layer without a consumer (removing a classifier's
    /// rows would remove classes); and when a consumer's columns or a bias
    /// do not match the units they depend on.
    pub fn new(parameters: &[Parameter], selections: &[UnitSelection], fold: Fold) -> Result<Self> {
        let mut plans: Vec<ParameterPlan> = parameters
            .iter()
            .map(|p| ParameterPlan::identity(&p.shape))
            .collect();
        let mut seen = vec![false; parameters.len()];
        for s in selections {
            let p = parameters.get(s.parameter).ok_or(Error::UnknownParameter {
                index: s.parameter,
                count: parameters.len(),
            })?;
            if p.kind != ParameterKind::Weight {
                return Err(Error::InvalidArgument {
                    what: "unit selection",
                    expected: "a weight parameter (biases follow their weight)",
                });
            }
            if core::mem::replace(&mut seen[s.parameter], true) {
                return Err(Error::DuplicateLayer {
                    name: p.name.clone(),
                });
            }
            let units = p.units();
            crate::contract::check::same_shape(
                "unit selection",
                &Shape::vector(units),
                s.keep.shape(),
            )?;
            let kept: Vec<usize> = s.keep.kept().collect();
            if kept.is_empty() {
                return Err(Error::EmptyTensor {
                    layer: p.name.clone(),
                });
            }
            let scale = match &s.scales {
                Some(v) => {
                    crate::contract::check::same_len("unit scales", units, v.len())?;
                    if v.iter().any(|x| !x.is_finite()) {
                        return Err(Error::NonFinite {
                            what: "unit scales",
                        });
                    }
                    if fold == Fold::Consumer && kept.iter().any(|&j| v[j] < 0.0) {
                        return Err(Error::InvalidArgument {
                            what: "unit scales folded into the consumer",
                            expected: "scales >= 0 (only those commute with ReLU and max pooling; \
                                       fold into the producer instead)",
                        });
                    }
                    Some(kept.iter().map(|&j| v[j]).collect::<Vec<f32>>())
                }
                None => None,
            };
            let Some(coupling) = p.coupling else {
                return Err(Error::InvalidArgument {
                    what: "unit selection",
                    expected: "a layer whose outputs another layer reads (a classifier's \
                               units are its classes)",
                });
            };
            let own = &mut plans[s.parameter];
            let mut dims = own.shape.dims().to_vec();
            dims[0] = kept.len();
            own.shape = Shape::new(&dims)?;
            own.rows = Some(kept.clone());
            if fold == Fold::Producer {
                own.row_scale.clone_from(&scale);
            }
            for (b, bias) in parameters.iter().enumerate() {
                if bias.kind == ParameterKind::Bias && bias.layer == p.layer {
                    crate::contract::check::same_shape(
                        "bias of a compacted layer",
                        &Shape::vector(units),
                        &bias.shape,
                    )?;
                    // A vector's matrix view is one row: its units are columns.
                    let bp = &mut plans[b];
                    bp.shape = Shape::vector(kept.len());
                    bp.cols = Some(kept.clone());
                    if fold == Fold::Producer {
                        bp.col_scale.clone_from(&scale);
                    }
                }
            }
            consume(
                parameters,
                &mut plans,
                coupling,
                units,
                &kept,
                (fold == Fold::Consumer).then_some(scale).flatten(),
            )?;
        }
        let sources = parameters.iter().map(|p| p.shape.matrix_view()).collect();
        Ok(CompactionPlan { plans, sources })
    }

    /// The shape parameter `index` has after compaction.
    ///
    /// # Panics
    /// When `index` is not a parameter of the plan.
    #[track_caller]
    pub fn shape(&self, index: usize) -> &Shape {
        &self.plans[index].shape
    }

    /// The units (rows of the matrix view) of parameter `index` that stay,
    /// or `None` when its rows are untouched.
    ///
    /// # Panics
    /// When `index` is not a parameter of the plan.
    #[track_caller]
    pub fn kept_rows(&self, index: usize) -> Option<&[usize]> {
        self.plans[index].rows.as_deref()
    }

    /// The parameters with their compacted shapes (names, kinds, layers and
    /// couplings unchanged).
    pub fn parameters(&self, parameters: &[Parameter]) -> Result<Vec<Parameter>> {
        crate::contract::check::same_len("parameters", self.plans.len(), parameters.len())?;
        Ok(parameters
            .iter()
            .zip(&self.plans)
            .map(|(p, plan)| Parameter {
                shape: plan.shape.clone(),
                ..p.clone()
            })
            .collect())
    }

    /// The entries after compaction of all parameters together.
    pub fn parameter_count(&self) -> usize {
        self.plans.iter().map(|p| p.shape.numel()).sum()
    }

    /// Parameter `index`'s values compacted, with the scales folded.
    pub fn weights(&self, index: usize, values: &[f32]) -> Result<Vec<f32>> {
        let plan = self.plan(index)?;
        let (r, c) = self.source_view(index, values.len())?;
        let rows = plan.rows.as_deref();
        let cols = plan.cols.as_deref();
        let nr = rows.map_or(r, <[usize]>::len);
        let nc = cols.map_or(c, <[usize]>::len);
        let mut out = Vec::with_capacity(nr * nc);
        for i in 0..nr {
            let src = rows.map_or(i, |rows| rows[i]);
            let row = &values[src * c..(src + 1) * c];
            let rs = plan.row_scale.as_ref().map_or(1.0, |s| s[i]);
            match cols {
                None => out.extend(row.iter().map(|&v| v * rs)),
                Some(cols) => out.extend(cols.iter().enumerate().map(|(k, &j)| {
                    let cs = plan.col_scale.as_ref().map_or(1.0, |s| s[k]);
                    row[j] * rs * cs
                })),
            }
        }
        Ok(out)
    }

    /// Every parameter's values compacted ([`CompactionPlan::weights`]).
    pub fn apply(&self, weights: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        crate::contract::check::same_len("parameters", self.plans.len(), weights.len())?;
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| self.weights(i, w))
            .collect()
    }

    /// Parameter `index`'s mask compacted the same way (no scaling).
    pub fn mask(&self, index: usize, mask: &Mask) -> Result<Mask> {
        let plan = self.plan(index)?;
        let (_, c) = self.source_view(index, mask.len())?;
        let rows = plan.rows.as_deref();
        let cols = plan.cols.as_deref();
        let nc = cols.map_or(c, <[usize]>::len);
        Ok(Mask::from_fn(plan.shape.clone(), |i| {
            let (r, k) = (i / nc, i % nc);
            let src_r = rows.map_or(r, |rows| rows[r]);
            let src_c = cols.map_or(k, |cols| cols[k]);
            mask.get(src_r * c + src_c)
        }))
    }

    fn plan(&self, index: usize) -> Result<&ParameterPlan> {
        self.plans.get(index).ok_or(Error::UnknownParameter {
            index,
            count: self.plans.len(),
        })
    }

    /// Parameter `index`'s matrix view before compaction, checked against
    /// the length of a buffer given for it.
    fn source_view(&self, index: usize, len: usize) -> Result<(usize, usize)> {
        let (r, c) = self.sources[index];
        crate::contract::check::same_len("parameter values", r * c, len)?;
        Ok((r, c))
    }
}

/// Removes the columns of the units that go from the consumer, with the
/// kept units' scales on their columns when folding there.
fn consume(
    parameters: &[Parameter],
    plans: &mut [ParameterPlan],
    coupling: Coupling,
    units: usize,
    kept: &[usize],
    scale: Option<Vec<f32>>,
) -> Result<()> {
    let consumer = parameters
        .get(coupling.consumer)
        .ok_or(Error::UnknownParameter {
            index: coupling.consumer,
            count: parameters.len(),
        })?;
    let per = coupling.inputs_per_unit;
    let (_, cols) = consumer.shape.matrix_view();
    let bad = || Error::InvalidArgument {
        what: "coupling of a compacted layer",
        expected: "a consumer whose columns are the producer's units times inputs_per_unit, \
                   as [out, units * per] or [out, units, ...] with per = the product of the rest",
    };
    if per == 0 || units.checked_mul(per) != Some(cols) {
        return Err(bad());
    }
    let dims = consumer.shape.dims();
    let plan = &mut plans[coupling.consumer];
    // The consumer's rows may be compacted already (its own selection).
    let mut new_dims = plan.shape.dims().to_vec();
    match dims.len() {
        2 => new_dims[1] = kept.len() * per,
        n if n > 2 && dims[1] == units && dims[2..].iter().product::<usize>() == per => {
            new_dims[1] = kept.len();
        }
        _ => return Err(bad()),
    }
    if plan.cols.is_some() {
        return Err(Error::InvalidArgument {
            what: "coupling of a compacted layer",
            expected: "one producer per consumer",
        });
    }
    plan.shape = Shape::new(&new_dims)?;
    plan.cols = Some(kept.iter().flat_map(|&j| j * per..(j + 1) * per).collect());
    plan.col_scale = scale.map(|s| {
        s.iter()
            .flat_map(|&v| core::iter::repeat_n(v, per))
            .collect()
    });
    Ok(())
}

/// Compacts `weights` (one buffer per parameter) by `selections`: the
/// compacted parameters and their values. See the module docs.
pub fn compact(
    parameters: &[Parameter],
    weights: &[Vec<f32>],
    selections: &[UnitSelection],
    fold: Fold,
) -> Result<(Vec<Parameter>, Vec<Vec<f32>>)> {
    let plan = CompactionPlan::new(parameters, selections, fold)?;
    Ok((plan.parameters(parameters)?, plan.apply(weights)?))
}
