//! Pruning a burn module in place: any scope, granularity and guard of
//! core's [`PruneConfig`], on the module's parameters by name.

use std::collections::HashMap;

use burn::module::Module;
use prunus_adapters::framework::{self, Stored};
use prunus_core::{Mask, PruneConfig};
use prunus_cpu::{CpuBackend, Par};

use crate::error::Result;
use crate::mask::MaskSet;
use crate::tree::{self, Layouts};

/// How [`Pruner::prune`] reads a module: which tensors it prunes, where
/// their units are, and the threads of the selection.
///
/// ```
/// use burn::nn::{Linear, LinearConfig};
/// use burn::prelude::*;
/// use prunus_burn::Pruner;
/// use prunus_core::{NofM, PruneConfig, Granularity};
///
/// #[derive(Module, Debug)]
/// struct Mlp { fc1: Linear, fc2: Linear }
///
/// let device = Device::ndarray();
/// let model = Mlp {
///     fc1: LinearConfig::new(8, 16).init(&device),
///     fc2: LinearConfig::new(16, 4).init(&device),
/// };
/// // 2:4 along each unit's inputs; the classifier stays dense.
/// let config = PruneConfig::new(0.5)
///     .granularity(Granularity::NofM(NofM::new(2, 4)?))
///     .skip("fc2.weight");
/// let (model, masks) = Pruner::default().prune(&model, &config, None)?;
/// assert_eq!(masks.get("fc1.weight").unwrap().count_pruned(), 64);
/// assert_eq!(masks.get("fc2.weight").unwrap().count_pruned(), 0);
/// # let _ = model;
/// # Ok::<(), prunus_burn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Pruner {
    /// Where each tensor's units are (burn's `Linear`: columns).
    pub layouts: Layouts,
    /// The tensors to prune, by name; `None`: every float parameter of rank
    /// 2 or more (linear and convolution weights, never biases or norms).
    pub tensors: Option<Vec<String>>,
    /// Threads of the selection.
    pub par: Par,
}

impl Default for Pruner {
    /// Every weight of rank 2 or more, burn's layouts, on the calling
    /// thread.
    fn default() -> Self {
        Pruner {
            layouts: Layouts::default(),
            tensors: None,
            par: Par::Seq,
        }
    }
}

impl Pruner {
    /// The same pruner reading tensors with `layouts`.
    pub fn layouts(mut self, layouts: Layouts) -> Self {
        self.layouts = layouts;
        self
    }

    /// The same pruner considering only the tensors `names`.
    pub fn tensors<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.tensors = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// The same pruner selecting on `par` threads.
    pub fn par(mut self, par: Par) -> Self {
        self.par = par;
        self
    }

    /// The tensors of `module` this pruner considers, in module order.
    pub fn targets<M: Module>(&self, module: &M) -> Result<Vec<Stored>> {
        let all = tree::stored(module, &self.layouts)?;
        match &self.tensors {
            None => Ok(all.into_iter().filter(tree::is_matrix).collect()),
            Some(names) => {
                for n in names {
                    if !all.iter().any(|s| s.name == *n) {
                        return Err(tree::unknown(n, &all));
                    }
                }
                Ok(all
                    .into_iter()
                    .filter(|s| names.contains(&s.name))
                    .collect())
            }
        }
    }

    /// Prunes a copy of `module` (burn's parameters are shared handles:
    /// the copy is cheap) as `config` asks and returns it with the masks of
    /// every tensor considered (pruned weights are zero). `previous` holds
    /// earlier masks, which are never revived (IMP). The global index that
    /// breaks ties is the module's order of tensors, each in core's view.
    /// On an error, `module` is as it was.
    pub fn prune<M: Module>(
        &self,
        module: &M,
        config: &PruneConfig,
        previous: Option<&MaskSet>,
    ) -> Result<(M, MaskSet)> {
        let targets = self.targets(module)?;
        let names: Vec<&str> = targets.iter().map(|s| s.name.as_str()).collect();
        let stored_values = tree::read(module, &names)?;
        let mut views = Vec::with_capacity(targets.len());
        let mut shapes = Vec::with_capacity(targets.len());
        for (s, v) in targets.iter().zip(&stored_values) {
            views.push(s.to_view(v)?);
            shapes.push(s.view_shape()?);
        }
        let earlier: Option<Vec<Mask>> = previous.map(|p| {
            targets
                .iter()
                .zip(&shapes)
                .map(|(s, shape)| {
                    p.get(&s.name)
                        .cloned()
                        .unwrap_or_else(|| Mask::keep_all(shape.clone()))
                })
                .collect()
        });
        let backend = CpuBackend::new(self.par)?;
        let masks = framework::prune_views(
            &backend,
            &names,
            &shapes,
            &mut views,
            earlier.as_deref(),
            config,
        )?;
        let mut values = HashMap::with_capacity(targets.len());
        for (s, v) in targets.iter().zip(&views) {
            values.insert(s.name.clone(), s.from_view(v)?);
        }
        let module = tree::write(module.clone(), values);
        let masks = MaskSet::new(targets.into_iter().zip(masks).collect())?;
        Ok((module, masks))
    }
}

/// Prunes every weight of rank 2 or more of `module` as `config` asks
/// ([`Pruner::default`]); returns the pruned module and its masks.
pub fn prune<M: Module>(module: &M, config: &PruneConfig) -> Result<(M, MaskSet)> {
    Pruner::default().prune(module, config, None)
}
