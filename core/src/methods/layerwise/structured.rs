//! Structured layer-wise pruning (METHODS.md §6): whole groups of a
//! consuming layer's input columns removed (an MLP channel is one column of
//! `down_proj`; an attention head is `head_dim` columns of `o_proj`; a KV
//! group is every column its query heads write), the kept columns refit,
//! so the model that comes out is smaller and dense.
//!
//! Everything works on one consuming layer `W: [out, in]` and the
//! statistics of its input ([`LayerStats`]); the producing layers (the
//! rows a group spans in `gate_proj`/`up_proj`, `q/k/v_proj`) are only
//! sliced by the caller, and enter here only through magnitude's tied
//! norms.
//!
//! **The objective.** With `H = 2XᵀX/n` damped as SparseGPT damps it, and
//! `B = W H`, keeping the columns `S` and refitting them by least squares
//! leaves `E(S) = tr(W H Wᵀ) − tr(B_S (H_SS)⁻¹ B_Sᵀ)` of the layer's output
//! energy unexplained; the refit is `W_S' = B_S (H_SS)⁻¹`. Where the layer
//! has a bias and the statistics have column sums, the constant input `1`
//! joins `X` as a column that is always kept, so the refit also moves the
//! bias (FLAP's mean compensation, made exact).
//!
//! **Searches** ([`GroupSearch`]):
//! - by score ([`GroupScore`]): magnitude (L2 norm of every tied weight),
//!   Wanda-sp (`Σ_j ‖X_j‖ Σ_i |W_ij|`), FLAP's fluctuation
//!   (`Σ_j Var(X_j) ‖W_:,j‖²`), or each group's exact OBS cost alone
//!   (`tr(W_P [(H⁻¹)_PP]⁻¹ W_Pᵀ)`); the lowest go;
//! - backward: remove the group of least exact cost with the rest refit,
//!   downdate `H⁻¹ ← H⁻¹ − H⁻¹_{:,P} [(H⁻¹)_PP]⁻¹ H⁻¹_{P,:}` and the refit
//!   weights, repeat (ZipLM's rule);
//! - forward (seed 4's greedy, on the reconstruction objective): from no
//!   group, add the one whose inclusion with refit explains most of the
//!   output, through the Schur complements `H − H_{:,S}(H_SS)⁻¹H_{S,:}`.
//!
//! Either search may take `batch` groups per step (the cheapest of that
//! step): far fewer steps on wide layers, at the price of judging the batch
//! by costs computed before its own removals. Then **swaps** (seed 2's CBS):
//! one kept and one removed group of the same set are exchanged while the
//! exact objective falls, so search + swaps is never worse than the search.
//! A swap's effect is exact and costs `O(out · d²)` to evaluate (`d` the
//! group width) from one factorisation of `H_SS`.
//!
//! **Sets.** Groups fall in `sets` equal consecutive runs and exactly
//! `remove` go from every set: the same number of query heads from every
//! KV group, or (one set) the same number of channels from every layer, so
//! the model's config stays valid.
//!
//! ```
//! use prunus_core::methods::layerwise::{
//!     GroupLayout, GroupSearch, LayerStats, StructuredConfig, StructuredLayer, structured,
//! };
//! use prunus_core::{Matrix, ReferenceBackend};
//! let mut stats = LayerStats::new(4, true)?;
//! stats.push(&[1.0, 0.5, 0.0, 2.0, 0.3, 1.0, 1.0, -1.0, 0.2, 0.1, 0.9, 0.4, 1.5, -0.5, 0.3, 0.0], 4)?;
//! let w = Matrix::from_f32(2, 4, &[0.4, -0.2, 0.1, 0.3, 0.05, 0.6, -0.3, 0.2])?;
//! let layer = StructuredLayer::new(&w, &stats, GroupLayout::new(1, 4)?);
//! let pruned = structured(&ReferenceBackend, &layer, &StructuredConfig::new(GroupSearch::Backward, 2))?;
//! assert_eq!(pruned.kept.len(), 2);
//! assert_eq!((pruned.weights.rows(), pruned.weights.cols()), (2, 2));
//! # Ok::<(), prunus_core::Error>(())
//! ```

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use crate::contract::dense::{Dense, Matrix};
use crate::contract::error::{Error, Result};
use crate::contract::op::Transpose;

use super::hessian::PERCDAMP;
use super::stats::LayerStats;
use super::{check_weights, reconstruction_error};

/// How a consuming layer's input columns form groups: `count` groups of
/// `width` consecutive columns (`width · count` must be the layer's input
/// width), in `sets` equal consecutive runs of groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLayout {
    width: usize,
    count: usize,
    sets: usize,
}

impl GroupLayout {
    /// `count` groups of `width` columns, one set.
    pub fn new(width: usize, count: usize) -> Result<GroupLayout> {
        if width == 0 || count == 0 {
            return Err(Error::InvalidArgument {
                what: "group layout (width and count)",
                expected: "at least one group of at least one column",
            });
        }
        width.checked_mul(count).ok_or(Error::ShapeOverflow)?;
        Ok(GroupLayout {
            width,
            count,
            sets: 1,
        })
    }

    /// The groups split into `sets` equal consecutive runs (query heads by
    /// the KV group they read); `sets` must divide the count.
    pub fn in_sets(mut self, sets: usize) -> Result<GroupLayout> {
        if sets == 0 || !self.count.is_multiple_of(sets) {
            return Err(Error::InvalidArgument {
                what: "group sets",
                expected: "a divisor of the group count",
            });
        }
        self.sets = sets;
        Ok(self)
    }

    /// Columns per group.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Groups.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Sets.
    pub fn sets(&self) -> usize {
        self.sets
    }

    /// Groups per set.
    pub fn per_set(&self) -> usize {
        self.count / self.sets
    }

    /// The set group `g` belongs to.
    pub fn set_of(&self, g: usize) -> usize {
        g / self.per_set()
    }

    /// The input columns of group `g`.
    pub fn columns(&self, g: usize) -> Range<usize> {
        g * self.width..(g + 1) * self.width
    }

    /// Columns in all.
    pub fn total_columns(&self) -> usize {
        self.width * self.count
    }
}

/// What a score-based search ranks groups by (the lowest go).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupScore {
    /// The L2 norm of every weight the group spans: its columns of the
    /// consuming layer and the tied rows of the producing layers
    /// ([`StructuredLayer::tied_squares`]). Needs no calibration.
    Magnitude,
    /// Wanda-sp: `Σ_{j∈P} ‖X_j‖₂ Σ_i |W_ij|`.
    Wanda,
    /// FLAP's fluctuation: `Σ_{j∈P} Var_n(X_j) ‖W_:,j‖²` (needs the column
    /// sums).
    Fluctuation,
    /// The exact OBS cost of removing the group alone with the rest refit:
    /// `tr(W_P [(H⁻¹)_PP]⁻¹ W_Pᵀ)`.
    Obs,
}

/// How the groups to remove are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupSearch {
    /// The lowest scores go, `remove` per set (ties to the lowest index).
    Score(GroupScore),
    /// Greedy backward elimination by exact cost, `H⁻¹` downdated.
    Backward,
    /// Greedy forward selection on the reconstruction objective.
    Forward,
}

/// How [`structured`] runs.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct StructuredConfig {
    /// The search.
    pub search: GroupSearch,
    /// Groups removed from every set.
    pub remove: usize,
    /// Most swaps after the search (0: none).
    pub swaps: usize,
    /// Swaps consider the `swap_candidates` kept groups cheapest to remove
    /// and the as many removed groups most worth adding, per set (all of
    /// them where a set is that small).
    pub swap_candidates: usize,
    /// Refit the kept columns by least squares (on by default; off gives
    /// the plain baselines, and for fluctuation FLAP's mean compensation of
    /// the bias where the layer has one).
    pub refit: bool,
    /// Dampening as a fraction of the mean diagonal of `H` (0.01).
    pub percdamp: f64,
    /// Groups taken per step of the backward or forward search; `None`
    /// picks 1 unless that means more than [`MAX_STEPS`] steps.
    pub batch: Option<usize>,
}

/// The most steps an automatic batch lets a search take.
pub const MAX_STEPS: usize = 1024;

impl StructuredConfig {
    /// A search removing `remove` groups per set, with 8 swaps over 64
    /// candidates, refit on, 1% dampening, automatic batch.
    pub fn new(search: GroupSearch, remove: usize) -> StructuredConfig {
        StructuredConfig {
            search,
            remove,
            swaps: 8,
            swap_candidates: 64,
            refit: true,
            percdamp: PERCDAMP,
            batch: None,
        }
    }

    /// Another swap limit.
    pub fn swaps(mut self, swaps: usize) -> Self {
        self.swaps = swaps;
        self
    }

    /// Refit on or off.
    pub fn refit(mut self, refit: bool) -> Self {
        self.refit = refit;
        self
    }

    /// Another dampening.
    pub fn percdamp(mut self, percdamp: f64) -> Self {
        self.percdamp = percdamp;
        self
    }

    /// A fixed batch.
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = Some(batch);
        self
    }

    /// Whether the configuration needs the Gram matrix.
    pub fn needs_gram(&self) -> bool {
        self.refit
            || self.swaps > 0
            || matches!(
                self.search,
                GroupSearch::Backward | GroupSearch::Forward | GroupSearch::Score(GroupScore::Obs)
            )
    }
}

/// One consuming layer and what its groups span.
#[derive(Clone, Copy, Debug)]
pub struct StructuredLayer<'a> {
    /// `W: [out, in]`.
    pub weights: &'a Matrix,
    /// The layer's bias `[out]`, if it has one.
    pub bias: Option<&'a [f64]>,
    /// The statistics of the layer's input.
    pub stats: &'a LayerStats,
    /// The groups.
    pub layout: GroupLayout,
    /// Per group, the sum of squares of the producing layers' weights tied
    /// to it (magnitude's norm adds them); none: the consuming layer alone.
    pub tied_squares: Option<&'a [f64]>,
}

impl<'a> StructuredLayer<'a> {
    /// A layer without bias or tied weights.
    pub fn new(weights: &'a Matrix, stats: &'a LayerStats, layout: GroupLayout) -> Self {
        StructuredLayer {
            weights,
            bias: None,
            stats,
            layout,
            tied_squares: None,
        }
    }

    /// With a bias.
    pub fn bias(mut self, bias: &'a [f64]) -> Self {
        self.bias = Some(bias);
        self
    }

    /// With the producing layers' tied sums of squares.
    pub fn tied_squares(mut self, tied: &'a [f64]) -> Self {
        self.tied_squares = Some(tied);
        self
    }

    fn check(&self) -> Result<()> {
        check_weights(self.weights, self.stats)?;
        if self.layout.total_columns() != self.weights.cols() {
            return Err(Error::LengthMismatch {
                what: "grouped columns (group width × count: the layer's input width)",
                expected: self.weights.cols(),
                found: self.layout.total_columns(),
            });
        }
        if let Some(b) = self.bias {
            if b.len() != self.weights.rows() {
                return Err(Error::LengthMismatch {
                    what: "bias (one per output row)",
                    expected: self.weights.rows(),
                    found: b.len(),
                });
            }
            if b.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite { what: "the bias" });
            }
        }
        if let Some(t) = self.tied_squares {
            if t.len() != self.layout.count() {
                return Err(Error::LengthMismatch {
                    what: "tied sums of squares (one per group)",
                    expected: self.layout.count(),
                    found: t.len(),
                });
            }
            if t.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(Error::NonFinite {
                    what: "the tied sums of squares",
                });
            }
        }
        Ok(())
    }
}

/// The result of [`structured`].
#[derive(Clone, Debug, PartialEq)]
pub struct StructuredPruned {
    /// The groups kept, ascending.
    pub kept: Vec<usize>,
    /// The groups removed, ascending.
    pub removed: Vec<usize>,
    /// The consuming layer's new weights `[out, kept · width]`: the kept
    /// columns, refit unless the refit was off.
    pub weights: Matrix,
    /// The new bias, where the layer has one.
    pub bias: Option<Vec<f64>>,
    /// The search's objective on the damped `H`: the output energy the
    /// new weights leave unexplained (`E(S)` with the refit); `None` where
    /// no Gram matrix was needed (a plain score-based cut).
    pub objective: Option<f64>,
    /// Swaps applied.
    pub swaps: usize,
}

impl StructuredPruned {
    /// The new weights widened back to `[out, in]`, zeros in the removed
    /// columns: to measure them against the original.
    pub fn widened(&self, layout: &GroupLayout) -> Matrix {
        let out = self.weights.rows();
        let d = layout.width();
        let mut w = Matrix::zeros(out, layout.total_columns());
        for r in 0..out {
            let src = self.weights.row(r);
            let dst = w.row_mut(r);
            for (k, &g) in self.kept.iter().enumerate() {
                dst[layout.columns(g)].copy_from_slice(&src[k * d..(k + 1) * d]);
            }
        }
        w
    }
}

/// The score of every group (lower goes first) for a score-based search.
pub fn group_scores<D: Dense + ?Sized>(
    dense: &D,
    layer: &StructuredLayer<'_>,
    score: GroupScore,
    percdamp: f64,
) -> Result<Vec<f64>> {
    layer.check()?;
    let w = layer.weights;
    let lay = &layer.layout;
    let per_column = |f: &dyn Fn(usize) -> f64| -> Vec<f64> {
        (0..lay.count())
            .map(|g| lay.columns(g).map(f).sum::<f64>())
            .collect()
    };
    let column_sq = |j: usize| {
        (0..w.rows())
            .map(|r| w.get(r, j) * w.get(r, j))
            .sum::<f64>()
    };
    match score {
        GroupScore::Magnitude => {
            let own = per_column(&column_sq);
            Ok(own
                .iter()
                .enumerate()
                .map(|(g, &s)| libm::sqrt(s + layer.tied_squares.map_or(0.0, |t| t[g])))
                .collect())
        }
        GroupScore::Wanda => {
            layer.stats.require_rows()?;
            let norms = layer.stats.column_norms();
            Ok(per_column(&|j| {
                norms[j] * (0..w.rows()).map(|r| libm::fabs(w.get(r, j))).sum::<f64>()
            }))
        }
        GroupScore::Fluctuation => {
            let var = layer.stats.column_variances()?;
            Ok(per_column(&|j| var[j] * column_sq(j)))
        }
        GroupScore::Obs => {
            let problem = Problem::new(dense, layer, percdamp, false)?;
            let g = spd_inverse(dense, &problem.h)?;
            let groups: Vec<usize> = (0..lay.count()).collect();
            groups
                .iter()
                .map(|&q| problem.removal_cost(&problem.w, &g, q))
                .collect()
        }
    }
}

/// Prunes `config.remove` groups from every set of `layer`'s groups; see
/// the module docs. Fails on shapes that do not match, non-finite
/// weights, a removal that would empty a set (keep at least one group), a
/// method whose statistics are missing (the Gram matrix for calibrated
/// searches and the refit, the column sums for fluctuation), and a
/// Hessian that is not positive definite (raise the dampening).
///
/// Cost, with `n` the input width, `d` the group width and `out` rows:
/// one `n³` factorisation; backward `≈ n² · removed · d` for the
/// downdates plus `out · n · d` per step; forward `≈ n² · kept · d` plus
/// `out · n · d` per step; each swap `≈ (kept·d)³` to refactor and
/// `out · d²` per candidate pair.
pub fn structured<D: Dense + ?Sized>(
    dense: &D,
    layer: &StructuredLayer<'_>,
    config: &StructuredConfig,
) -> Result<StructuredPruned> {
    layer.check()?;
    let lay = layer.layout;
    if config.remove >= lay.per_set() {
        return Err(Error::InvalidArgument {
            what: "groups removed per set",
            expected: "fewer than the groups in a set (a layer keeps at least one)",
        });
    }
    if !config.percdamp.is_finite() || config.percdamp < 0.0 {
        return Err(Error::FractionOutOfRange {
            what: "dampening (percdamp, a fraction of the mean diagonal)",
            value: config.percdamp,
        });
    }
    if config.batch == Some(0) {
        return Err(Error::InvalidArgument {
            what: "search batch",
            expected: "at least 1 group per step",
        });
    }
    let removed_total = config.remove * lay.sets();
    let kept_total = lay.count() - removed_total;
    let steps_for = |n: usize| config.batch.unwrap_or_else(|| n.div_ceil(MAX_STEPS).max(1));
    if !config.needs_gram() {
        let GroupSearch::Score(score) = config.search else {
            unreachable!("searches other than by score need the Gram matrix");
        };
        let scores = group_scores(dense, layer, score, config.percdamp)?;
        let kept = lowest_per_set(&lay, &scores, config.remove);
        return sliced(layer, kept, score == GroupScore::Fluctuation);
    }
    let problem = Problem::new(dense, layer, config.percdamp, true)?;
    let mut kept = match config.search {
        GroupSearch::Score(score) => {
            let scores = group_scores(dense, layer, score, config.percdamp)?;
            lowest_per_set(&lay, &scores, config.remove)
        }
        GroupSearch::Backward => {
            problem.backward(dense, config.remove, steps_for(removed_total))?
        }
        GroupSearch::Forward => {
            problem.forward(dense, lay.per_set() - config.remove, steps_for(kept_total))?
        }
    };
    let mut swaps = 0;
    while swaps < config.swaps {
        match problem.best_swap(dense, &kept, config.swap_candidates)? {
            Some((i, j)) => {
                kept[i] = false;
                kept[j] = true;
                swaps += 1;
            }
            None => break,
        }
    }
    if !config.refit {
        let mut out = sliced(
            layer,
            kept,
            config.search == GroupSearch::Score(GroupScore::Fluctuation),
        )?;
        out.swaps = swaps;
        out.objective = Some(problem.objective_of_weights(dense, &out)?);
        return Ok(out);
    }
    let mut out = problem.compact(layer, &kept, dense)?;
    out.swaps = swaps;
    Ok(out)
}

/// `‖(W − Ŵ) Xᵀ + (b − b̂) 1ᵀ‖²_F` of a structured result against the
/// original layer, on the undamped statistics: how much the layer's output
/// on the calibration inputs changed. The bias term needs the column sums
/// (without them a bias change is ignored).
pub fn structured_error<D: Dense + ?Sized>(
    dense: &D,
    layer: &StructuredLayer<'_>,
    pruned: &StructuredPruned,
) -> Result<f64> {
    let widened = pruned.widened(&layer.layout);
    let mut error = reconstruction_error(dense, layer.weights, &widened, layer.stats)?;
    if let (Some(b), Some(nb), Some(sums)) = (layer.bias, &pruned.bias, layer.stats.sums()) {
        let n = layer.stats.rows() as f64;
        for r in 0..widened.rows() {
            let db = nb[r] - b[r];
            let cross: f64 = (0..widened.cols())
                .map(|j| (widened.get(r, j) - layer.weights.get(r, j)) * sums[j])
                .sum();
            error += 2.0 * db * cross + n * db * db;
        }
    }
    Ok(error)
}

/// `E(S)` for the kept groups `kept` (one flag per group) with the refit:
/// the objective every search minimises, for tests and brute force.
pub fn kept_objective<D: Dense + ?Sized>(
    dense: &D,
    layer: &StructuredLayer<'_>,
    kept: &[bool],
    percdamp: f64,
) -> Result<f64> {
    layer.check()?;
    if kept.len() != layer.layout.count() {
        return Err(Error::LengthMismatch {
            what: "kept flags (one per group)",
            expected: layer.layout.count(),
            found: kept.len(),
        });
    }
    let problem = Problem::new(dense, layer, percdamp, true)?;
    Ok(problem.refit(dense, kept)?.1)
}

/// The least-squares refit of `layer` keeping the groups flagged in
/// `kept` (one flag per group): `W_S' = B_S (H_SS)⁻¹` on the damped `H`,
/// with the bias as an intercept where the layer has one and the
/// statistics have column sums. What every calibrated search ends with,
/// for a set chosen elsewhere.
pub fn refit<D: Dense + ?Sized>(
    dense: &D,
    layer: &StructuredLayer<'_>,
    kept: &[bool],
    percdamp: f64,
) -> Result<StructuredPruned> {
    layer.check()?;
    let lay = layer.layout;
    if kept.len() != lay.count() || !kept.contains(&true) {
        return Err(Error::InvalidArgument {
            what: "kept flags",
            expected: "one per group, at least one set",
        });
    }
    let problem = Problem::new(dense, layer, percdamp, true)?;
    problem.compact(layer, kept, dense)
}

/// The `remove` lowest of `scores` in every set go (ties: lowest index
/// goes first); returns the kept flags.
fn lowest_per_set(lay: &GroupLayout, scores: &[f64], remove: usize) -> Vec<bool> {
    let mut kept = vec![true; lay.count()];
    let per = lay.per_set();
    for s in 0..lay.sets() {
        let mut order: Vec<usize> = (s * per..(s + 1) * per).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
        for &g in &order[..remove] {
            kept[g] = false;
        }
    }
    kept
}

/// The kept columns as they are (no refit); for fluctuation, FLAP's bias
/// compensation `b += W_:,P mean(X_P)` where the layer has a bias.
fn sliced(
    layer: &StructuredLayer<'_>,
    kept: Vec<bool>,
    compensate: bool,
) -> Result<StructuredPruned> {
    let lay = layer.layout;
    let w = layer.weights;
    let groups: Vec<usize> = (0..lay.count()).filter(|&g| kept[g]).collect();
    let removed: Vec<usize> = (0..lay.count()).filter(|&g| !kept[g]).collect();
    let d = lay.width();
    let mut weights = Matrix::zeros(w.rows(), groups.len() * d);
    for r in 0..w.rows() {
        for (k, &g) in groups.iter().enumerate() {
            weights.row_mut(r)[k * d..(k + 1) * d].copy_from_slice(&w.row(r)[lay.columns(g)]);
        }
    }
    let bias = match (layer.bias, compensate) {
        (Some(b), true) => {
            layer.stats.require_rows()?;
            let sums = layer.stats.sums().ok_or(Error::MissingInput {
                what: "column sums of the calibration inputs (FLAP's bias compensation)",
            })?;
            let n = layer.stats.rows() as f64;
            Some(
                (0..w.rows())
                    .map(|r| {
                        b[r] + removed
                            .iter()
                            .flat_map(|&g| lay.columns(g))
                            .map(|j| w.get(r, j) * sums[j] / n)
                            .sum::<f64>()
                    })
                    .collect(),
            )
        }
        (b, _) => b.map(<[f64]>::to_vec),
    };
    Ok(StructuredPruned {
        kept: groups,
        removed,
        weights,
        bias,
        objective: None,
        swaps: 0,
    })
}

/// The layer as the searches see it: the damped `H` (with the intercept
/// column where the layer has a bias and the statistics have sums), the
/// weights on the same columns, and the column ranges of every group.
struct Problem {
    /// Damped `H`, `m x m` (`m = in`, or `in + 1` with the intercept).
    h: Matrix,
    /// `W` (with the bias as the last column), `out x m`.
    w: Matrix,
    /// `B = W H`.
    b: Matrix,
    /// `tr(W H Wᵀ)`.
    energy: f64,
    /// The intercept's column, where there is one.
    intercept: Option<usize>,
    layout: GroupLayout,
}

impl Problem {
    fn new<D: Dense + ?Sized>(
        dense: &D,
        layer: &StructuredLayer<'_>,
        percdamp: f64,
        intercept: bool,
    ) -> Result<Problem> {
        let gram = layer.stats.require_gram()?;
        let n = layer.weights.cols();
        let rows = layer.stats.rows() as f64;
        let with_bias = match (intercept, layer.bias, layer.stats.sums()) {
            (true, Some(b), Some(sums)) => Some((b, sums)),
            _ => None,
        };
        let m = n + usize::from(with_bias.is_some());
        let scale = 2.0 / rows;
        let mut h = Matrix::zeros(m, m);
        for i in 0..n {
            for j in 0..n {
                h.row_mut(i)[j] = scale * gram.get(i, j);
            }
        }
        if let Some((_, sums)) = with_bias {
            for (j, &sum) in sums.iter().enumerate() {
                h.row_mut(n)[j] = scale * sum;
                h.row_mut(j)[n] = scale * sum;
            }
            h.row_mut(n)[n] = scale * rows;
        }
        for j in 0..m {
            let v = &mut h.row_mut(j)[j];
            if *v == 0.0 {
                *v = 1.0;
            }
        }
        let mean = (0..m).map(|j| h.get(j, j)).sum::<f64>() / m as f64;
        h.add_diagonal(percdamp * mean);
        let out = layer.weights.rows();
        let mut w = Matrix::zeros(out, m);
        for r in 0..out {
            w.row_mut(r)[..n].copy_from_slice(layer.weights.row(r));
            if let Some((b, _)) = with_bias {
                w.row_mut(r)[n] = b[r];
            }
        }
        let mut b = Matrix::zeros(out, m);
        dense.matmul(&mut b, 0.0, &w, Transpose::No, &h, Transpose::No, 1.0)?;
        let energy = b.data().iter().zip(w.data()).map(|(x, y)| x * y).sum();
        Ok(Problem {
            h,
            w,
            b,
            energy,
            intercept: with_bias.map(|_| n),
            layout: layer.layout,
        })
    }

    fn cols(&self, g: usize) -> Range<usize> {
        self.layout.columns(g)
    }

    /// `tr(W_P [G_PP]⁻¹ W_Pᵀ)` for group `q`: the OBS cost of removing it
    /// from the columns `G` is the inverse over.
    fn removal_cost(&self, w: &Matrix, g: &Matrix, q: usize) -> Result<f64> {
        let cols: Vec<usize> = self.cols(q).collect();
        let m = small_inverse(&g.select(&cols))?;
        Ok(quadratic_rows(w, &cols, &m))
    }

    /// Backward elimination: `remove` groups per set, `batch` per step.
    fn backward<D: Dense + ?Sized>(
        &self,
        dense: &D,
        remove: usize,
        batch: usize,
    ) -> Result<Vec<bool>> {
        let lay = self.layout;
        let mut g = spd_inverse(dense, &self.h)?;
        let mut w = self.w.clone();
        let mut kept = vec![true; lay.count()];
        let mut left = vec![remove; lay.sets()];
        while left.iter().any(|&l| l > 0) {
            let mut costs: Vec<(f64, usize)> = (0..lay.count())
                .filter(|&q| kept[q] && left[lay.set_of(q)] > 0)
                .map(|q| Ok((self.removal_cost(&w, &g, q)?, q)))
                .collect::<Result<_>>()?;
            costs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let step = take_step(&lay, &costs, batch, &mut left);
            let cols: Vec<usize> = step.iter().flat_map(|&q| self.cols(q)).collect();
            eliminate(dense, &mut g, &mut w, &cols)?;
            for &q in &step {
                kept[q] = false;
            }
        }
        Ok(kept)
    }

    /// Forward selection: `keep` groups per set, `batch` per step; the
    /// intercept is in from the start.
    fn forward<D: Dense + ?Sized>(
        &self,
        dense: &D,
        keep: usize,
        batch: usize,
    ) -> Result<Vec<bool>> {
        let lay = self.layout;
        let mut hr = self.h.clone();
        let mut br = self.b.clone();
        if let Some(c) = self.intercept {
            eliminate(dense, &mut hr, &mut br, &[c])?;
        }
        let mut kept = vec![false; lay.count()];
        let mut room = vec![keep; lay.sets()];
        while room.iter().any(|&l| l > 0) {
            let mut gains: Vec<(f64, usize)> = Vec::new();
            for q in (0..lay.count()).filter(|&q| !kept[q] && room[lay.set_of(q)] > 0) {
                let cols: Vec<usize> = self.cols(q).collect();
                let s = small_inverse(&hr.select(&cols))?;
                gains.push((quadratic_rows(&br, &cols, &s), q));
            }
            gains.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let step = take_step(&lay, &gains, batch, &mut room);
            let cols: Vec<usize> = step.iter().flat_map(|&q| self.cols(q)).collect();
            eliminate(dense, &mut hr, &mut br, &cols)?;
            for &q in &step {
                kept[q] = true;
            }
        }
        Ok(kept)
    }

    /// The kept columns (with the intercept), ascending.
    fn kept_columns(&self, kept: &[bool]) -> Vec<usize> {
        let mut cols: Vec<usize> = (0..self.layout.count())
            .filter(|&g| kept[g])
            .flat_map(|g| self.cols(g))
            .collect();
        cols.extend(self.intercept);
        cols
    }

    /// The refit `W' = B_S (H_SS)⁻¹`, widened to `out x m` (zeros off
    /// `S`), and `E(S)`.
    fn refit<D: Dense + ?Sized>(&self, dense: &D, kept: &[bool]) -> Result<(Matrix, f64)> {
        let cols = self.kept_columns(kept);
        let k = spd_inverse(dense, &self.h.select(&cols))?;
        let bs = self.b.select_cols(&cols);
        let mut ws = Matrix::zeros(bs.rows(), cols.len());
        dense.matmul(&mut ws, 0.0, &bs, Transpose::No, &k, Transpose::No, 1.0)?;
        let explained: f64 = ws.data().iter().zip(bs.data()).map(|(x, y)| x * y).sum();
        let mut wide = Matrix::zeros(self.w.rows(), self.w.cols());
        for r in 0..wide.rows() {
            for (c, &j) in cols.iter().enumerate() {
                wide.row_mut(r)[j] = ws.get(r, c);
            }
        }
        Ok((wide, self.energy - explained))
    }

    /// The refit on the kept groups, compacted to the kept columns.
    fn compact<D: Dense + ?Sized>(
        &self,
        layer: &StructuredLayer<'_>,
        kept: &[bool],
        dense: &D,
    ) -> Result<StructuredPruned> {
        let lay = self.layout;
        let (refit, objective) = self.refit(dense, kept)?;
        let groups: Vec<usize> = (0..lay.count()).filter(|&g| kept[g]).collect();
        let d = lay.width();
        let out_rows = layer.weights.rows();
        let mut weights = Matrix::zeros(out_rows, groups.len() * d);
        for r in 0..out_rows {
            for (k, &g) in groups.iter().enumerate() {
                for (c, j) in lay.columns(g).enumerate() {
                    weights.row_mut(r)[k * d + c] = refit.get(r, j);
                }
            }
        }
        let bias = layer.bias.map(|b| match self.intercept {
            Some(col) => (0..out_rows).map(|r| refit.get(r, col)).collect(),
            None => b.to_vec(),
        });
        Ok(StructuredPruned {
            removed: (0..lay.count()).filter(|&g| !kept[g]).collect(),
            kept: groups,
            weights,
            bias,
            objective: Some(objective),
            swaps: 0,
        })
    }

    /// `E` of sliced weights (no refit) on the damped `H`.
    fn objective_of_weights<D: Dense + ?Sized>(
        &self,
        dense: &D,
        pruned: &StructuredPruned,
    ) -> Result<f64> {
        let n = self.layout.total_columns();
        let widened = pruned.widened(&self.layout);
        let mut delta = self.w.clone();
        for r in 0..delta.rows() {
            for j in 0..n {
                delta.row_mut(r)[j] -= widened.get(r, j);
            }
            if let (Some(c), Some(b)) = (self.intercept, &pruned.bias) {
                delta.row_mut(r)[c] -= b[r];
            }
        }
        let mut hd = Matrix::zeros(delta.rows(), delta.cols());
        dense.matmul(
            &mut hd,
            0.0,
            &delta,
            Transpose::No,
            &self.h,
            Transpose::No,
            1.0,
        )?;
        Ok(hd.data().iter().zip(delta.data()).map(|(x, y)| x * y).sum())
    }

    /// The best single swap of a kept group `i` and a removed group `j` of
    /// the same set, if one lowers `E(S)`; see the module docs.
    fn best_swap<D: Dense + ?Sized>(
        &self,
        dense: &D,
        kept: &[bool],
        candidates: usize,
    ) -> Result<Option<(usize, usize)>> {
        let lay = self.layout;
        let d = lay.width();
        let cols = self.kept_columns(kept);
        let pos = |j: usize| cols.binary_search(&j).expect("a kept column");
        let k = spd_inverse(dense, &self.h.select(&cols))?;
        let bs = self.b.select_cols(&cols);
        let mut ws = Matrix::zeros(bs.rows(), cols.len());
        dense.matmul(&mut ws, 0.0, &bs, Transpose::No, &k, Transpose::No, 1.0)?;
        let removed: Vec<usize> = (0..lay.count()).filter(|&g| !kept[g]).collect();
        let rcols: Vec<usize> = removed.iter().flat_map(|&g| self.cols(g)).collect();
        // Z = K H_{S,P}, s_j = H_jj − H_{j,S} Z_j, R = B_P − W' H_{S,P}.
        let hsp = self.h.select_block(&cols, &rcols);
        let mut z = Matrix::zeros(cols.len(), rcols.len());
        dense.matmul(&mut z, 0.0, &k, Transpose::No, &hsp, Transpose::No, 1.0)?;
        let mut s = self.h.select(&rcols);
        dense.matmul(&mut s, 1.0, &hsp, Transpose::Yes, &z, Transpose::No, -1.0)?;
        let mut res = self.b.select_cols(&rcols);
        dense.matmul(&mut res, 1.0, &ws, Transpose::No, &hsp, Transpose::No, -1.0)?;
        let out = ws.rows();
        // Removal costs of kept groups and the standalone gains of removed.
        let mut best: Option<(f64, usize, usize)> = None;
        let scale = self.energy.abs().max(f64::MIN_POSITIVE);
        for set in 0..lay.sets() {
            let mut ins: Vec<(f64, usize)> = Vec::new();
            for g in (0..lay.count()).filter(|&g| kept[g] && lay.set_of(g) == set) {
                let local: Vec<usize> = self.cols(g).map(pos).collect();
                let kii = small_inverse(&k.select(&local))?;
                ins.push((quadratic_rows(&ws, &local, &kii), g));
            }
            let mut outs: Vec<(f64, usize, usize)> = Vec::new();
            for (idx, &g) in removed.iter().enumerate() {
                if lay.set_of(g) != set {
                    continue;
                }
                let local: Vec<usize> = (idx * d..(idx + 1) * d).collect();
                let sj = small_inverse(&s.select(&local))?;
                outs.push((quadratic_rows(&res, &local, &sj), g, idx));
            }
            ins.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            outs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            ins.truncate(candidates);
            outs.truncate(candidates);
            for &(cost_i, i) in &ins {
                let li: Vec<usize> = self.cols(i).map(pos).collect();
                let kinv = small_inverse(&k.select(&li))?;
                // W'_i K_ii⁻¹ (out x d).
                let mut wk = Matrix::zeros(out, d);
                for r in 0..out {
                    for a in 0..d {
                        wk.row_mut(r)[a] = (0..d).map(|c| ws.get(r, li[c]) * kinv.get(c, a)).sum();
                    }
                }
                for &(_, j, idx) in &outs {
                    // Z_ij (d x d): rows of i, columns of j.
                    let zij = Matrix::new(
                        d,
                        d,
                        li.iter()
                            .flat_map(|&a| (0..d).map(move |b| (a, idx * d + b)))
                            .map(|(a, b)| z.get(a, b))
                            .collect(),
                    )?;
                    let mut s2 = Matrix::zeros(d, d);
                    for a in 0..d {
                        for b in 0..d {
                            let mut v = s.get(idx * d + a, idx * d + b);
                            for x in 0..d {
                                for y in 0..d {
                                    v += zij.get(x, a) * kinv.get(x, y) * zij.get(y, b);
                                }
                            }
                            s2.row_mut(a)[b] = v;
                        }
                    }
                    let s2inv = small_inverse(&s2)?;
                    let mut gain = 0.0;
                    let mut r2 = vec![0.0; d];
                    for r in 0..out {
                        for (b, v) in r2.iter_mut().enumerate() {
                            *v = res.get(r, idx * d + b)
                                + (0..d).map(|a| wk.get(r, a) * zij.get(a, b)).sum::<f64>();
                        }
                        for a in 0..d {
                            for b in 0..d {
                                gain += r2[a] * s2inv.get(a, b) * r2[b];
                            }
                        }
                    }
                    let delta = cost_i - gain;
                    // Only a clear improvement counts: rounding must not
                    // make two equivalent sets swap back and forth.
                    if delta < -1e-12 * scale && best.is_none_or(|(b, ..)| delta < b) {
                        best = Some((delta, i, j));
                    }
                }
            }
        }
        Ok(best.map(|(_, i, j)| (i, j)))
    }
}

/// The groups of one search step: the first `batch` of `ranked` whose
/// set still has `budget` left (taken from it).
fn take_step(
    lay: &GroupLayout,
    ranked: &[(f64, usize)],
    batch: usize,
    budget: &mut [usize],
) -> Vec<usize> {
    let mut step = Vec::new();
    for &(_, q) in ranked {
        if step.len() == batch {
            break;
        }
        let s = lay.set_of(q);
        if budget[s] > 0 {
            budget[s] -= 1;
            step.push(q);
        }
    }
    step
}

/// `Σ_r w_{r,cols} M w_{r,cols}ᵀ`.
fn quadratic_rows(w: &Matrix, cols: &[usize], m: &Matrix) -> f64 {
    let d = cols.len();
    let mut total = 0.0;
    let mut v = vec![0.0; d];
    for r in 0..w.rows() {
        let row = w.row(r);
        for (x, &c) in v.iter_mut().zip(cols) {
            *x = row[c];
        }
        for a in 0..d {
            let ma = m.row(a);
            total += v[a] * (0..d).map(|b| ma[b] * v[b]).sum::<f64>();
        }
    }
    total
}

/// The inverse of a small symmetric positive definite matrix by the
/// reference Cholesky (host arithmetic, the same on every backend).
fn small_inverse(a: &Matrix) -> Result<Matrix> {
    spd_inverse(&crate::contract::reference::ReferenceBackend, a)
}

/// `a⁻¹` for a symmetric positive definite `a`: `L Lᵀ = a`, `X = L⁻ᵀ`
/// (the rows of `I` solved by `L`), `a⁻¹ = X Xᵀ`.
fn spd_inverse<D: Dense + ?Sized>(dense: &D, a: &Matrix) -> Result<Matrix> {
    let n = a.rows();
    let mut l = a.clone();
    dense.cholesky(&mut l)?;
    let mut x = Matrix::scaled_identity(n, 1.0);
    dense.solve_rows(&l, Transpose::No, &mut x)?;
    let mut inv = Matrix::zeros(n, n);
    dense.matmul(&mut inv, 0.0, &x, Transpose::No, &x, Transpose::Yes, 1.0)?;
    Ok(inv)
}

/// Eliminates the columns `p`: `a −= a_:,P [a_PP]⁻¹ a_P,:` and
/// `b −= b_:,P [a_PP]⁻¹ a_P,:` for a symmetric `a`, then zeroes the
/// columns `p` of both (and the rows of `a`). With `a = H⁻¹` and `b` the
/// weights this is OBS's removal of the columns `p` with the rest refit
/// (`H⁻¹` downdated); with `a` the Schur complement of `H` on the kept
/// columns and `b` the residual `W H`, it adds `p` to the kept columns.
fn eliminate<D: Dense + ?Sized>(
    dense: &D,
    a: &mut Matrix,
    b: &mut Matrix,
    p: &[usize],
) -> Result<()> {
    let m = spd_inverse(dense, &a.select(p))?;
    let ap = a.select_rows(p); // |P| x n: a_P,:
    let bp = b.select_cols(p);
    let mut bm = Matrix::zeros(bp.rows(), p.len());
    dense.matmul(&mut bm, 0.0, &bp, Transpose::No, &m, Transpose::No, 1.0)?;
    dense.matmul(b, 1.0, &bm, Transpose::No, &ap, Transpose::No, -1.0)?;
    let mut am = Matrix::zeros(ap.cols(), p.len());
    dense.matmul(&mut am, 0.0, &ap, Transpose::Yes, &m, Transpose::No, 1.0)?;
    dense.matmul(a, 1.0, &am, Transpose::No, &ap, Transpose::No, -1.0)?;
    for &c in p {
        for r in 0..b.rows() {
            b.row_mut(r)[c] = 0.0;
        }
        for r in 0..a.rows() {
            a.row_mut(r)[c] = 0.0;
        }
        a.row_mut(c).iter_mut().for_each(|v| *v = 0.0);
    }
    Ok(())
}
