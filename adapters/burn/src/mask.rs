//! [`MaskSet`]: the keep-masks of a burn module's parameters, which put
//! the pruned weights back to zero after every optimizer step.

use std::collections::HashMap;

use burn::module::Module;
use burn::tensor::TensorData;
use prunus_adapters::framework::Stored;
use prunus_core::{HasShape, Mask};

use crate::error::{Error, Result};
use crate::tree;

/// One mask per pruned parameter, by name, in core's view (units on the
/// rows; see [`Stored::to_view`]), with the 0/1 factors in burn's stored
/// layout that re-apply it.
///
/// An optimizer step moves pruned weights off zero (their gradient is not
/// zero, nor is their momentum); [`MaskSet::apply`] after every step puts
/// them back, so a pruned model trains as a sparse one:
///
/// ```no_run
/// # use burn::module::Module;
/// # fn train<M: Module>(mut model: M, masks: &prunus_burn::MaskSet,
/// #     mut optimizer: burn::optim::ModuleOptimizer, grads: burn::optim::GradientsParams) -> M {
/// model = optimizer.step(0.05, model, grads);
/// model = masks.apply(model);
/// # model }
/// ```
#[derive(Clone, Debug, Default)]
pub struct MaskSet {
    entries: Vec<(Stored, Mask)>,
    factors: HashMap<String, TensorData>,
}

impl MaskSet {
    /// Masks (core's view) of the stored tensors they belong to. Fails when
    /// a mask's shape is not its tensor's view shape or a name repeats.
    pub fn new(entries: Vec<(Stored, Mask)>) -> Result<MaskSet> {
        let mut factors = HashMap::with_capacity(entries.len());
        for (stored, mask) in &entries {
            let f = stored.factors(mask)?;
            let data = TensorData::new(f, stored.dims.clone());
            if factors.insert(stored.name.clone(), data).is_some() {
                return Err(Error::Core(prunus_core::Error::DuplicateLayer {
                    name: stored.name.clone(),
                }));
            }
        }
        Ok(MaskSet { entries, factors })
    }

    /// `module` with every masked parameter multiplied by its mask (on the
    /// parameter's device; ids, dtype and gradient requirements kept).
    /// Parameters are matched by name, so the masks also fit a copy of the
    /// model loaded from a record.
    pub fn apply<M: Module>(&self, module: M) -> M {
        tree::multiply(module, &self.factors)
    }

    /// Checks that every masked name is a float parameter of `module` with
    /// the dims the mask was made for.
    pub fn check<M: Module>(&self, module: &M) -> Result<()> {
        let stored = tree::stored(module, &crate::Layouts::default())?;
        for (s, _) in &self.entries {
            match stored.iter().find(|t| t.name == s.name) {
                None => return Err(tree::unknown(&s.name, &stored)),
                Some(t) if t.dims != s.dims => {
                    return Err(Error::Core(prunus_core::Error::LengthMismatch {
                        what: "mask entries (the parameter changed shape)",
                        expected: s.numel(),
                        found: t.numel(),
                    }));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The mask of parameter `name`, in core's view.
    pub fn get(&self, name: &str) -> Option<&Mask> {
        self.entries
            .iter()
            .find(|(s, _)| s.name == name)
            .map(|(_, m)| m)
    }

    /// The stored tensors and their masks, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Stored, &Mask)> {
        self.entries.iter().map(|(s, m)| (s, m))
    }

    /// The number of masked parameters.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no parameter is masked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pruned entries over all masked entries (0 when there are none).
    pub fn sparsity(&self) -> f64 {
        let (pruned, total) = self.entries.iter().fold((0u64, 0u64), |(p, t), (_, m)| {
            (p + m.count_pruned(), t + m.len() as u64)
        });
        if total == 0 {
            0.0
        } else {
            pruned as f64 / total as f64
        }
    }

    /// Whether every weight these masks keep is also kept by `earlier`'s
    /// mask of the same parameter (IMP's masks only ever shrink). A
    /// parameter `earlier` does not mask counts as fully kept there.
    pub fn is_subset_of(&self, earlier: &MaskSet) -> Result<bool> {
        for (s, m) in &self.entries {
            if let Some(e) = earlier.get(&s.name) {
                prunus_core::contract::check::same_shape("mask", e.shape(), m.shape())?;
                if !m.is_subset_of(e)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}
