//! Exact, deterministic selection of the units to prune, for every scope.
//!
//! Counting rule: a target sparsity `s` over `n` units prunes
//! `k = round(s * n)` units, rounding half away from zero (`0.5` of a unit
//! rounds up), computed in `f64`. Exactly `k` units are pruned — never
//! "about" `k`: the `k` smallest by (score, global index), so ties at the
//! threshold go to the lowest index. The global index orders layers as they
//! are passed, then elements row-major within a layer.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::contract::backend::{
    Backend, Candidate, GATHER_MOST, LowestMasks, RangeMasks, ScoreView, SelectionPlan,
};
use crate::contract::error::{Error, Result};
use crate::contract::histogram::{Histogram, KeyWindow};
use crate::contract::key::{KeyRule, NanPolicy, Transform};
use crate::contract::mask::Mask;
use crate::contract::shape::HasShape;
use crate::selection::config::{Guards, PruneConfig, Scope};
use crate::selection::radix::{Cut, RadixSelect};

/// A named tensor taking part in a pruning call: the weights for
/// [`crate::prune()`], the scores for [`select`]; with the mask of an earlier
/// round, if any (masks only ever shrink: what it prunes stays pruned).
pub struct Layer<'a, B: Backend + ?Sized> {
    /// A unique name (used by guards, budgets and error messages).
    pub name: &'a str,
    /// The tensor.
    pub tensor: &'a B::Tensor,
    /// The earlier mask, of the tensor's shape.
    pub mask: Option<&'a Mask>,
}

impl<B: Backend + ?Sized> Clone for Layer<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend + ?Sized> Copy for Layer<'_, B> {}

impl<'a, B: Backend + ?Sized> Layer<'a, B> {
    /// A layer with no earlier mask.
    pub fn new(name: &'a str, tensor: &'a B::Tensor) -> Self {
        Layer {
            name,
            tensor,
            mask: None,
        }
    }

    /// The same layer restricted by an earlier mask.
    pub fn with_mask(self, mask: Option<&'a Mask>) -> Self {
        Layer { mask, ..self }
    }
}

/// `k = round(s * n)`, half away from zero: the counting rule of the crate.
pub fn units_to_prune(sparsity: f64, n: u64) -> u64 {
    libm::round(sparsity * n as f64) as u64
}

/// `round(d * n)` when `d * n` is within float noise of an integer, else
/// `rounding(d * n)`; at most `n`.
fn noiseless_units(density: f64, n: u64, rounding: fn(f64) -> f64) -> u64 {
    let x = density * n as f64;
    let r = libm::round(x);
    let v = if libm::fabs(x - r) <= 1e-9 * x.max(1.0) {
        r
    } else {
        rounding(x)
    };
    (v as u64).min(n)
}

/// `ceil(d * n)` that ignores float noise (`0.1 * 10` is 1, not 2).
fn ceil_units(density: f64, n: u64) -> u64 {
    noiseless_units(density, n, libm::ceil)
}

/// `floor(d * n)` that ignores float noise, as [`ceil_units`].
fn floor_units(density: f64, n: u64) -> u64 {
    noiseless_units(density, n, libm::floor)
}

/// The most of a layer's `units` units that `guards` allow to prune: all but
/// its minimum density (`ceil(d * n)`, or `floor(d * n) + 1` with
/// [`Guards::exceed_min_density`]), and all but one unless
/// [`Guards::allow_empty`]. Streaming selections outside this crate use it
/// to honour the same guards.
///
/// ```
/// use prunus_core::Guards;
/// use prunus_core::selection::select::prunable_units;
/// let mut g = Guards::default();
/// assert_eq!(prunable_units(10, &g), 9);
/// g.min_density = 0.25;
/// assert_eq!(prunable_units(10, &g), 7);
/// ```
pub fn prunable_units(units: u64, guards: &Guards) -> u64 {
    let floor = if guards.exceed_min_density {
        (floor_units(guards.min_density, units) + 1).min(units)
    } else {
        ceil_units(guards.min_density, units)
    }
    .max(!guards.allow_empty as u64);
    units - floor.min(units)
}

fn check_fraction(what: &'static str, v: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&v) {
        return Err(if what == "sparsity" {
            Error::SparsityOutOfRange { value: v }
        } else {
            Error::FractionOutOfRange { what, value: v }
        });
    }
    Ok(())
}

/// The checked facts about the layers of one call.
pub(crate) struct Plan {
    /// Indices of the layers not skipped, in order.
    pub active: Vec<usize>,
    /// Per layer: units.
    pub units: Vec<u64>,
    /// Per layer: units the guards allow to prune (at least what the earlier
    /// mask already pruned).
    pub cap: Vec<u64>,
    /// Per layer: units the earlier mask prunes.
    pub pruned: Vec<u64>,
}

/// Validates names, guards, budgets and shapes for `layers` whose unit
/// counts are `units`, with earlier masks `masks` (already at unit level).
pub(crate) fn plan(
    names: &[&str],
    units: &[u64],
    masks: &[Option<&Mask>],
    config: &PruneConfig,
) -> Result<Plan> {
    check_fraction("sparsity", config.sparsity)?;
    check_fraction("minimum density", config.guards.min_density)?;
    if names.is_empty() {
        return Err(Error::NoLayers);
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(Error::DuplicateLayer {
                name: (*name).into(),
            });
        }
        if units[i] == 0 {
            return Err(Error::EmptyTensor {
                layer: (*name).into(),
            });
        }
    }
    for s in &config.guards.skip {
        if !names.contains(&s.as_str()) {
            return Err(Error::UnknownLayer { name: s.clone() });
        }
    }
    if let Scope::PerLayer(budget) = &config.scope {
        for (j, (name, s)) in budget.iter().enumerate() {
            if budget[..j].iter().any(|(other, _)| other == name) {
                return Err(Error::DuplicateLayer { name: name.clone() });
            }
            if !names.contains(&name.as_str()) {
                return Err(Error::UnknownLayer { name: name.clone() });
            }
            check_fraction("sparsity", *s)?;
        }
    }
    let active: Vec<usize> = (0..names.len())
        .filter(|&i| !config.guards.skip.iter().any(|s| s == names[i]))
        .collect();
    if active.is_empty() {
        return Err(Error::AllLayersSkipped);
    }
    let pruned: Vec<u64> = masks
        .iter()
        .map(|m| m.map_or(0, |m| m.count_pruned()))
        .collect();
    let cap = (0..names.len())
        .map(|i| prunable_units(units[i], &config.guards).max(pruned[i]))
        .collect();
    Ok(Plan {
        active,
        units: units.to_vec(),
        cap,
        pruned,
    })
}

/// The per-layer target of a local or per-layer scope, checked against the
/// guards and the earlier mask.
fn local_target(name: &str, plan: &Plan, i: usize, sparsity: f64) -> Result<u64> {
    let k = units_to_prune(sparsity, plan.units[i]);
    if k > plan.cap[i] {
        return Err(Error::GuardsExceeded {
            layer: name.into(),
            requested: k,
            allowed: plan.cap[i],
        });
    }
    if k < plan.pruned[i] {
        return Err(Error::TargetBelowPrevious {
            layer: name.into(),
            pruned: plan.pruned[i],
            target: k,
        });
    }
    Ok(k)
}

/// Selects which units of `layers` to prune by their scores (lowest first),
/// following `config`'s sparsity, scope, guards and NaN policy; `transform`
/// says how a stored value becomes its score (use [`Transform::Abs`] to rank
/// weights by magnitude without a score tensor). Returns one host mask per
/// layer, skipped layers keeping their earlier mask (or everything).
///
/// Reads the scores once when a sample of the keys places the threshold
/// (large inputs, the usual case), otherwise two or three times: one
/// histogram pass, then either one pass that writes the masks and gathers
/// the few elements near the threshold, or (when many share the threshold's
/// bucket, as with heavily quantised scores) a second histogram pass and a
/// mask pass that resolves ties itself. The global scope repeats this once
/// more for each layer a guard saturates.
pub fn select<B: Backend + ?Sized>(
    backend: &B,
    layers: &[Layer<'_, B>],
    config: &PruneConfig,
    transform: Transform,
) -> Result<Vec<Mask>> {
    let names: Vec<&str> = layers.iter().map(|l| l.name).collect();
    let units: Vec<u64> = layers
        .iter()
        .map(|l| l.tensor.shape().numel() as u64)
        .collect();
    let host_masks: Vec<Option<&Mask>> = layers.iter().map(|l| l.mask).collect();
    for l in layers {
        if let Some(m) = l.mask {
            crate::contract::check::same_shape("earlier mask", l.tensor.shape(), m.shape())?;
        }
    }
    let plan = plan(&names, &units, &host_masks, config)?;
    let rule = KeyRule {
        transform,
        nan: config.nan,
    };
    let survivors: Vec<Option<B::Mask>> = layers
        .iter()
        .map(|l| l.mask.map(|m| backend.upload_mask(m)).transpose())
        .collect::<Result<_>>()?;
    let view = |i: usize| ScoreView::with_survivors(layers[i].tensor, survivors[i].as_ref());
    // Skipped layers keep their earlier mask (or everything); the others are
    // filled by the selection below.
    let mut out: Vec<Option<Mask>> = vec![None; layers.len()];
    for (i, l) in layers.iter().enumerate() {
        if !plan.active.contains(&i) {
            out[i] = Some(
                l.mask
                    .cloned()
                    .unwrap_or_else(|| Mask::keep_all(l.tensor.shape().clone())),
            );
        }
    }
    let sel = Selector {
        backend,
        rule,
        names: &names,
    };
    match &config.scope {
        Scope::Local => {
            for &i in &plan.active {
                let k = local_target(names[i], &plan, i, config.sparsity)?;
                out[i] = Some(sel.one(i, view(i), k)?);
            }
        }
        Scope::PerLayer(budget) => {
            for &i in &plan.active {
                let s = budget
                    .iter()
                    .find(|(n, _)| n == names[i])
                    .map(|(_, s)| *s)
                    .ok_or_else(|| Error::MissingBudget {
                        layer: names[i].into(),
                    })?;
                let k = local_target(names[i], &plan, i, s)?;
                out[i] = Some(sel.one(i, view(i), k)?);
            }
        }
        Scope::Global => {
            let n: u64 = plan.active.iter().map(|&i| plan.units[i]).sum();
            let k = units_to_prune(config.sparsity, n);
            let cap: u64 = plan.active.iter().map(|&i| plan.cap[i]).sum();
            let already: u64 = plan.active.iter().map(|&i| plan.pruned[i]).sum();
            if k > cap {
                return Err(Error::GuardsExceeded {
                    layer: "(global)".into(),
                    requested: k,
                    allowed: cap,
                });
            }
            if k < already {
                return Err(Error::TargetBelowPrevious {
                    layer: "(global)".into(),
                    pruned: already,
                    target: k,
                });
            }
            sel.global(&plan, &view, k, &mut out)?;
        }
    }
    Ok(out
        .into_iter()
        .map(|m| m.expect("every layer has a mask"))
        .collect())
}

/// Inputs smaller than this skip the sampled one-pass attempt.
const SAMPLED_MIN: u64 = 1 << 20;
/// Sampled runs are 64 consecutive elements (one mask word)...
const SAMPLE_RUN: usize = 64;
/// ...at every 64th run: 1/64 of the elements.
const SAMPLE_EVERY: usize = 64;

/// Masks and the number of elements each prunes.
struct Selected {
    masks: Vec<Mask>,
    pruned: Vec<u64>,
}

impl Selected {
    /// The downloaded masks of a range pass, with the counts it returned.
    fn from_range<B: Backend + ?Sized>(
        backend: &B,
        range: RangeMasks<B::Mask>,
    ) -> Result<(Selected, Vec<Candidate>)> {
        let masks = backend.download_masks(range.masks)?;
        if range.pruned.len() != masks.len() {
            return Err(Error::Backend {
                message: alloc::format!(
                    "range pass returned {} pruned counts for {} masks",
                    range.pruned.len(),
                    masks.len()
                ),
            });
        }
        let selected = Selected {
            masks,
            pruned: range.pruned,
        };
        Ok((selected, range.candidates))
    }

    /// Prunes the `k` lowest of the gathered `candidates` (by key, then
    /// sequence order), by the same radix selection over their keys.
    fn settle(&mut self, candidates: &[Candidate], k: u64) -> Result<()> {
        let (masks, pruned) = (&mut self.masks, &mut self.pruned);
        if let Some(c) = candidates.iter().find(|c| {
            masks
                .get(c.input as usize)
                .is_none_or(|m| c.index >= m.len() as u64)
        }) {
            return Err(Error::Backend {
                message: alloc::format!(
                    "range pass returned element {} of input {}, which does not exist",
                    c.index,
                    c.input
                ),
            });
        }
        let mut radix = RadixSelect::new(candidates.len() as u64, k)?;
        while let Some(w) = radix.window() {
            let mut h = Histogram::new(0);
            for c in candidates {
                if let Some(b) = w.bin(c.key) {
                    h.bins[b] += 1;
                }
            }
            radix.absorb(&h)?;
        }
        let cut = radix.cut().unwrap_or(Cut::NONE).threshold();
        let mut rank = 0u64;
        for c in candidates {
            let (mask, i) = (&mut masks[c.input as usize], c.index as usize);
            if cut.prunes(c.key, rank) && mask.get(i) {
                mask.set(i, false);
                pruned[c.input as usize] += 1;
            }
            rank += (c.key == cut.key) as u64;
        }
        Ok(())
    }
}

struct Selector<'s, B: Backend + ?Sized> {
    backend: &'s B,
    rule: KeyRule,
    names: &'s [&'s str],
}

impl<B: Backend + ?Sized> Selector<'_, B> {
    /// Host masks that prune exactly the `k` lowest of the `inputs` (whose
    /// layer indices are `ids`), checking NaN scores on the first pass.
    ///
    /// Large inputs first try one pass: a sample of 1/64 of the keys places
    /// the threshold in a narrow key range, and [`Backend::range_masks`]
    /// writes the masks and gathers that range's elements, which are settled
    /// here. If the count below the range shows the guess missed, or the
    /// range would hold too many elements, the histogram path runs instead:
    /// one pass finds the threshold's 16-bit bucket with its population; a
    /// small bucket is gathered the same way (two passes in all), a large
    /// one (heavy ties) takes a second histogram pass and a mask pass that
    /// resolves ties itself. Every path prunes exactly the same elements.
    ///
    /// Under [`SelectionPlan::Histograms`] the sample is skipped and only
    /// buckets of at most [`GATHER_MOST`] elements are gathered. Under
    /// [`SelectionPlan::Device`] the backend selects by itself
    /// ([`Backend::select_lowest`]); where it declines, the histogram plan
    /// runs.
    fn masks(&self, ids: &[usize], inputs: &[ScoreView<'_, B>], k: u64) -> Result<Selected> {
        let n: u64 = inputs.iter().map(|v| v.scores.shape().numel() as u64).sum();
        let plan = self.backend.selection_plan();
        if plan == SelectionPlan::Device
            && let Some(lowest) = self.backend.select_lowest(inputs, self.rule, k)?
        {
            return self.lowest(ids, lowest, k);
        }
        if plan == SelectionPlan::Gather
            && k > 0
            && n >= SAMPLED_MIN
            && let Some(masks) = self.sampled(ids, inputs, n, k)?
        {
            return Ok(masks);
        }
        let gather_most = match plan {
            SelectionPlan::Gather => (n / 128).max(4096),
            SelectionPlan::Histograms | SelectionPlan::Device => GATHER_MOST,
        };
        let mut radix = RadixSelect::new(n, k)?;
        let mut window = radix.window();
        if window.is_none() && self.rule.nan == NanPolicy::Error {
            // Nothing to prune, but NaN scores are still an error.
            window = Some(KeyWindow::High);
        }
        let mut first = true;
        while let Some(w) = window {
            if let Some(bucket) = radix.bucket()
                && bucket.count <= gather_most
            {
                let lo = (bucket.high as u32) << 16;
                let range = self
                    .backend
                    .range_masks(inputs, self.rule, lo, lo | 0xFFFF)?;
                if range.candidates.len() as u64 != bucket.count {
                    return Err(Error::Backend {
                        message: alloc::format!(
                            "range pass gathered {} elements where the histogram counted {}",
                            range.candidates.len(),
                            bucket.count
                        ),
                    });
                }
                let (mut selected, candidates) = Selected::from_range(self.backend, range)?;
                selected.settle(&candidates, bucket.rank)?;
                return Ok(selected);
            }
            let h = self.backend.histogram(inputs, self.rule, w)?;
            if first && self.rule.nan == NanPolicy::Error {
                self.check_nan(ids, &h.nan)?;
            }
            first = false;
            radix.absorb(&h)?;
            window = radix.window();
        }
        let cut = radix.cut().unwrap_or(Cut::NONE);
        let masks = self
            .backend
            .threshold_masks(inputs, self.rule, cut.threshold())?;
        let masks = self.backend.download_masks(masks.masks)?;
        let pruned = masks.iter().map(Mask::count_pruned).collect();
        Ok(Selected { masks, pruned })
    }

    /// Checks what [`Backend::select_lowest`] returned (NaN scores under the
    /// error policy, counts that add up to `k`) and brings its masks back.
    fn lowest(&self, ids: &[usize], lowest: LowestMasks<B::Mask>, k: u64) -> Result<Selected> {
        let inputs = ids.len();
        if lowest.masks.len() != inputs
            || lowest.nan.len() != inputs
            || lowest.pruned.len() != inputs
        {
            return Err(Error::Backend {
                message: alloc::format!(
                    "device selection returned {} masks, {} NaN counts and {} pruned counts \
                     for {inputs} inputs",
                    lowest.masks.len(),
                    lowest.nan.len(),
                    lowest.pruned.len()
                ),
            });
        }
        if self.rule.nan == NanPolicy::Error {
            self.check_nan(ids, &lowest.nan)?;
        }
        let pruned: u64 = lowest.pruned.iter().sum();
        if pruned != k {
            return Err(Error::Backend {
                message: alloc::format!(
                    "device selection pruned {pruned} elements where {k} were asked for \
                     (cut at key {:#x}, {} tied pruned)",
                    lowest.cut.key,
                    lowest.cut.ties
                ),
            });
        }
        let masks = self.backend.download_masks(lowest.masks)?;
        Ok(Selected {
            masks,
            pruned: lowest.pruned,
        })
    }

    /// The one-pass attempt of [`Selector::masks`]: `None` when the sample's
    /// range would be too heavy or missed the threshold.
    fn sampled(
        &self,
        ids: &[usize],
        inputs: &[ScoreView<'_, B>],
        n: u64,
        k: u64,
    ) -> Result<Option<Selected>> {
        let sample = self
            .backend
            .sample_keys(inputs, self.rule, SAMPLE_RUN, SAMPLE_EVERY)?;
        let Some((lo, hi)) = crate::selection::radix::sample_keys(&sample, n, k) else {
            return Ok(None);
        };
        let range = self.backend.range_masks(inputs, self.rule, lo, hi)?;
        if self.rule.nan == NanPolicy::Error {
            self.check_nan(ids, &range.nan)?;
        }
        let (mut selected, candidates) = Selected::from_range(self.backend, range)?;
        let below: u64 = selected.pruned.iter().sum();
        let gathered = candidates.len() as u64;
        if below > k || k > below + gathered {
            return Ok(None);
        }
        selected.settle(&candidates, k - below)?;
        Ok(Some(selected))
    }

    fn check_nan(&self, ids: &[usize], nan: &[u64]) -> Result<()> {
        match ids.iter().zip(nan).find(|&(_, &c)| c > 0) {
            Some((&i, &count)) => Err(Error::NanScores {
                layer: String::from(self.names[i]),
                count,
            }),
            None => Ok(()),
        }
    }

    /// Prunes exactly `k` units of one layer.
    fn one(&self, i: usize, input: ScoreView<'_, B>, k: u64) -> Result<Mask> {
        Ok(self.masks(&[i], &[input], k)?.masks.remove(0))
    }

    /// Prunes exactly `k` units over all active layers, the lowest scores
    /// first, within each layer's cap. A layer whose share would exceed its
    /// cap is saturated (pruned to its cap by its own lowest scores) and the
    /// rest re-selected without it: the result is the `k` lowest units under
    /// the caps, since constraining can only raise the global threshold.
    fn global<'v>(
        &self,
        plan: &Plan,
        view: &dyn Fn(usize) -> ScoreView<'v, B>,
        k: u64,
        out: &mut [Option<Mask>],
    ) -> Result<()>
    where
        B: 'v,
    {
        let mut pool: Vec<usize> = plan.active.clone();
        let mut k_pool = k;
        while !pool.is_empty() {
            let inputs: Vec<ScoreView<'v, B>> = pool.iter().map(|&i| view(i)).collect();
            let Selected { masks, pruned } = self.masks(&pool, &inputs, k_pool)?;
            let over: Vec<usize> = (0..pool.len())
                .filter(|&t| pruned[t] > plan.cap[pool[t]])
                .collect();
            if over.is_empty() {
                for (&i, m) in pool.iter().zip(masks) {
                    out[i] = Some(m);
                }
                return Ok(());
            }
            for &t in &over {
                let i = pool[t];
                out[i] = Some(self.one(i, view(i), plan.cap[i])?);
                k_pool -= plan.cap[i];
            }
            let saturated: Vec<usize> = over.iter().map(|&t| pool[t]).collect();
            pool.retain(|i| !saturated.contains(i));
        }
        Ok(())
    }
}
