//! Prune a candle `VarMap` in place, and keep its weights pruned.
//!
//! [`prune_varmap`] runs core's selection (any scope, granularity, guard
//! and importance of [`PruneConfig`]) over the chosen variables of a
//! [`VarMap`], zeroes the pruned weights in place and returns their masks
//! as [`VarMasks`]; [`VarMasks::apply`] after each optimiser step keeps the
//! pruned weights at zero through training:
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{Optimizer, VarBuilder, VarMap};
//! use prunus_candle::varmap::{prune_varmap, Selection};
//! use prunus_core::PruneConfig;
//! use prunus_cpu::{CpuBackend, Par};
//!
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let fc = candle_nn::linear(8, 4, vb.pp("fc"))?;
//! let backend = CpuBackend::new(Par::Seq)?;
//! let masks = prune_varmap(&backend, &varmap, &Selection::new(), None, &PruneConfig::new(0.5))?;
//! assert_eq!(masks.pruned(), 16);
//!
//! let mut sgd = candle_nn::SGD::new(varmap.all_vars(), 0.1)?;
//! let x = Tensor::ones((2, 8), DType::F32, &Device::Cpu)?;
//! sgd.backward_step(&fc.forward(&x)?.sum_all()?)?;
//! masks.apply()?; // the pruned weights are zero again
//! assert_eq!(masks.pruned_nonzero()?, 0);
//! # Ok::<(), prunus_candle::Error>(())
//! ```

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;
use prunus_adapters::framework::{Stored, Units, prune_views};
use prunus_core::{Mask, PruneConfig};
use prunus_cpu::CpuBackend;

use crate::error::{Error, Result};

/// Which variables of a [`VarMap`] to prune, and where their units are.
///
/// By default every float variable of rank 2 or more is pruned (linear and
/// convolution kernels, embeddings), its units in the first axis as candle
/// stores them (`[out, in]`, `[out, in, kh, kw]`).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    only: Option<Vec<String>>,
    skip: Vec<String>,
    units: BTreeMap<String, Units>,
}

impl Selection {
    /// Every float variable of rank 2 or more, units in rows.
    pub fn new() -> Selection {
        Selection::default()
    }

    /// Only the variables named (an unknown name is an error).
    pub fn only<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.only = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Leaves the variable `name` out.
    pub fn skip(mut self, name: impl Into<String>) -> Self {
        self.skip.push(name.into());
        self
    }

    /// Says where the units of the matrix `name` are: [`Units::Columns`]
    /// for a weight stored `[in, out]` (applied as `x W`), so that
    /// structured and N:M selection see `[out, in]`.
    pub fn units(mut self, name: impl Into<String>, units: Units) -> Self {
        self.units.insert(name.into(), units);
        self
    }

    /// The chosen variables in parameter order (`fc1.weight`, `fc1.bias`,
    /// `fc2.weight`, ... `fc10.weight`), with their stored layout.
    fn pick(&self, varmap: &VarMap) -> Result<Vec<(Stored, Var)>> {
        let vars = vars_by_name(varmap)?;
        let named = self.only.iter().flatten();
        for name in named.chain(self.units.keys()).chain(&self.skip) {
            if !vars.iter().any(|(m, _)| m == name) {
                return Err(Error::request(format!("no variable {name} in the VarMap")));
            }
        }
        let mut out = Vec::new();
        for (name, var) in vars {
            let chosen = match &self.only {
                Some(only) => only.contains(&name),
                None => var.dims().len() >= 2 && var.dtype().is_float(),
            };
            if !chosen || self.skip.contains(&name) {
                continue;
            }
            let units = self.units.get(&name).copied().unwrap_or_default();
            out.push((Stored::new(name, var.dims(), units)?, var));
        }
        if out.is_empty() {
            return Err(Error::request(
                "no variable of the VarMap to prune (the default takes float variables of rank 2 or more)",
            ));
        }
        Ok(out)
    }
}

/// The variables of `varmap` in parameter order ([`parameter_order`]).
pub(crate) fn vars_by_name(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::request("the VarMap's lock is poisoned"))?;
    let mut vars: Vec<(String, Var)> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    drop(data);
    vars.sort_by(|a, b| parameter_order(&a.0, &b.0));
    Ok(vars)
}

/// The order of a model's parameters: by layer (the name before its last
/// `.`, in [`natural_order`]), a layer's bias after its other tensors:
/// `fc1.weight`, `fc1.bias`, `fc2.weight`, ..., `fc10.weight`.
pub(crate) fn parameter_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn split(s: &str) -> (&str, bool) {
        match s.rsplit_once('.') {
            Some((layer, last)) => (layer, last == "bias"),
            None => ("", s == "bias"),
        }
    }
    let ((la, ba), (lb, bb)) = (split(a), split(b));
    natural_order(la, lb)
        .then(ba.cmp(&bb))
        .then_with(|| natural_order(a, b))
}

/// Compares names with runs of digits as numbers: `fc2` < `fc10`.
pub(crate) fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then(x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o.is_ne() {
            return o;
        }
    }
    pa.len().cmp(&pb.len()).then(a.cmp(b))
}

/// A variable's values in stored (row-major) order, as f32.
pub(crate) fn values(var: &Var) -> Result<Vec<f32>> {
    Ok(var
        .as_tensor()
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Replaces a variable's values (stored order) keeping its dtype and device.
pub(crate) fn set_values(var: &Var, values: &[f32]) -> Result<()> {
    let t = Tensor::from_slice(values, var.dims(), var.device())?.to_dtype(var.dtype())?;
    var.set(&t)?;
    Ok(())
}

/// One masked variable.
#[derive(Clone, Debug)]
struct Entry {
    stored: Stored,
    var: Var,
    mask: Mask,
    factors: Tensor,
}

/// Masks of pruned variables, kept to re-apply: call [`VarMasks::apply`]
/// after every optimiser step and the pruned weights stay exactly zero,
/// whatever the optimiser's momentum or weight decay does to them.
#[derive(Clone, Debug, Default)]
pub struct VarMasks {
    entries: Vec<Entry>,
}

impl VarMasks {
    /// Masks over `vars` (in core's view of each, see [`Stored`]).
    pub(crate) fn new(parts: Vec<(Stored, Var, Mask)>) -> Result<VarMasks> {
        let entries = parts
            .into_iter()
            .map(|(stored, var, mask)| {
                let factors = Tensor::from_vec(stored.factors(&mask)?, var.dims(), var.device())?
                    .to_dtype(var.dtype())?;
                Ok(Entry {
                    stored,
                    var,
                    mask,
                    factors,
                })
            })
            .collect::<Result<_>>()?;
        Ok(VarMasks { entries })
    }

    /// Zeroes every pruned weight again (one multiply per variable).
    pub fn apply(&self) -> Result<()> {
        for e in &self.entries {
            e.var.set(&e.var.as_tensor().mul(&e.factors)?)?;
        }
        Ok(())
    }

    /// The masks by variable name, in core's view (`[out, in]`; a
    /// [`Units::Columns`] variable's mask is of its transpose).
    pub fn masks(&self) -> impl Iterator<Item = (&str, &Mask)> {
        self.entries
            .iter()
            .map(|e| (e.stored.name.as_str(), &e.mask))
    }

    /// The mask of the variable `name`.
    pub fn mask(&self, name: &str) -> Option<&Mask> {
        self.entries
            .iter()
            .find(|e| e.stored.name == name)
            .map(|e| &e.mask)
    }

    /// Weights pruned, over all masked variables.
    pub fn pruned(&self) -> u64 {
        self.entries.iter().map(|e| e.mask.count_pruned()).sum()
    }

    /// Weights the masks cover.
    pub fn len(&self) -> usize {
        self.entries.iter().map(|e| e.mask.len()).sum()
    }

    /// Whether no weight is masked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pruned weights that are not zero in their variables now: 0 right
    /// after [`VarMasks::apply`].
    pub fn pruned_nonzero(&self) -> Result<usize> {
        let mut count = 0;
        for e in &self.entries {
            let view = e.stored.to_view(&values(&e.var)?)?;
            count += e.mask.not().kept().filter(|&i| view[i] != 0.0).count();
        }
        Ok(count)
    }
}

/// Prunes the variables `selection` picks from `varmap` in place as
/// `config` asks and returns their masks. `previous`, when given, holds
/// earlier masks (of an earlier call with the same selection) that the new
/// ones never revive: iterative pruning only removes. Nothing is changed
/// unless the whole selection succeeded; NaN weights, a sparsity outside
/// `[0, 1]` and unknown names are errors.
pub fn prune_varmap(
    backend: &CpuBackend<'_>,
    varmap: &VarMap,
    selection: &Selection,
    previous: Option<&VarMasks>,
    config: &PruneConfig,
) -> Result<VarMasks> {
    let picked = selection.pick(varmap)?;
    let names: Vec<&str> = picked.iter().map(|(s, _)| s.name.as_str()).collect();
    let shapes = picked
        .iter()
        .map(|(s, _)| s.view_shape())
        .collect::<prunus_core::Result<Vec<_>>>()?;
    let mut views = picked
        .iter()
        .map(|(s, v)| Ok(s.to_view(&values(v)?)?))
        .collect::<Result<Vec<_>>>()?;
    let earlier = match previous {
        Some(p) => Some(
            names
                .iter()
                .map(|n| {
                    p.mask(n).cloned().ok_or_else(|| {
                        Error::request(format!("the earlier masks have none for {n}"))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    let masks = prune_views(
        backend,
        &names,
        &shapes,
        &mut views,
        earlier.as_deref(),
        config,
    )?;
    for ((s, v), view) in picked.iter().zip(&views) {
        set_values(v, &s.from_view(view)?)?;
    }
    VarMasks::new(
        picked
            .into_iter()
            .zip(masks)
            .map(|((s, v), m)| (s, v, m))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_come_layer_by_layer_weight_first() {
        let mut names = vec!["fc2.weight", "fc1.bias", "fc10.weight", "fc1.weight", "emb"];
        names.sort_by(|a, b| parameter_order(a, b));
        assert_eq!(
            names,
            ["emb", "fc1.weight", "fc1.bias", "fc2.weight", "fc10.weight"]
        );
    }

    #[test]
    fn natural_order_reads_numbers() {
        let mut names = vec!["fc10.weight", "fc2.weight", "fc1.bias", "fc1.weight", "a"];
        names.sort_by(|a, b| natural_order(a, b));
        assert_eq!(
            names,
            ["a", "fc1.bias", "fc1.weight", "fc2.weight", "fc10.weight"]
        );
    }
}
