//! The PQ-index of a weight vector and the adaptive pruning rate built on it
//! (METHODS.md §3; Diao et al., "Pruning deep neural networks from a
//! sparsity perspective").
//!
//! `I = 1 − M_p(w) / M_q(w)` with `M_r(w) = (Σ|w_i|^r / d)^{1/r}` over the
//! `d` surviving weights and `0 < p < q`: zero when every weight has the
//! same magnitude, near one when a few weights carry everything. The rate
//! keeps `m = d (1 + η)^{q/(p−q)} (1 − I)^{pq/(q−p)}` weights and prunes
//! `clamp(γ (1 − m/d), 0, β)` of the survivors: the more compressible the
//! weights look, the more a round removes.

use crate::contract::error::{Error, Result};

/// The PQ-index's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct PqIndex {
    /// `p`, with `0 < p < q`.
    pub p: f64,
    /// `q`.
    pub q: f64,
    /// `η ≥ 0`: a larger value keeps fewer weights.
    pub eta: f64,
    /// `γ > 0`: the rate's gain.
    pub gamma: f64,
    /// `β` in `(0, 1]`: the largest rate of a round.
    pub beta: f64,
}

impl Default for PqIndex {
    /// `p = 0.5, q = 1, η = 0, γ = 1, β = 0.9`, the official defaults.
    fn default() -> Self {
        PqIndex {
            p: 0.5,
            q: 1.0,
            eta: 0.0,
            gamma: 1.0,
            beta: 0.9,
        }
    }
}

impl PqIndex {
    /// The same settings with `p` and `q`.
    pub fn norms(mut self, p: f64, q: f64) -> Self {
        self.p = p;
        self.q = q;
        self
    }

    /// The same settings with `η`.
    pub fn eta(mut self, eta: f64) -> Self {
        self.eta = eta;
        self
    }

    /// The same settings with `γ` and `β`.
    pub fn clamp(mut self, gamma: f64, beta: f64) -> Self {
        self.gamma = gamma;
        self.beta = beta;
        self
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let finite = [self.p, self.q, self.eta, self.gamma, self.beta]
            .iter()
            .all(|v| v.is_finite());
        if !(finite && self.p > 0.0 && self.p < self.q) {
            return Err(Error::InvalidArgument {
                what: "PQ-index norms",
                expected: "finite with 0 < p < q",
            });
        }
        if !(self.eta >= 0.0 && self.gamma > 0.0 && self.beta > 0.0 && self.beta <= 1.0) {
            return Err(Error::InvalidArgument {
                what: "PQ-index rate settings",
                expected: "η ≥ 0, γ > 0 and β in (0, 1]",
            });
        }
        Ok(())
    }

    /// `I = 1 − M_p / M_q` over `weights` (the survivors). Fails on an
    /// empty, all-zero or non-finite vector.
    ///
    /// ```
    /// use prunus_core::methods::imp::pq_index::PqIndex;
    /// let pq = PqIndex::default();
    /// assert!(pq.index([2.0f32, -2.0, 2.0]).unwrap().abs() < 1e-12);
    /// // One weight of four carries everything: M_0.5 = 1/16, M_1 = 1/4.
    /// assert!((pq.index([1.0f32, 0.0, 0.0, 0.0]).unwrap() - 0.75).abs() < 1e-12);
    /// ```
    pub fn index(&self, weights: impl IntoIterator<Item = f32>) -> Result<f64> {
        self.validate()?;
        let (mut d, mut sp, mut sq) = (0usize, 0.0f64, 0.0f64);
        for w in weights {
            if !w.is_finite() {
                return Err(Error::NonFinite {
                    what: "weights for the PQ-index",
                });
            }
            let a = f64::from(w).abs();
            d += 1;
            sp += libm::pow(a, self.p);
            sq += libm::pow(a, self.q);
        }
        if d == 0 || sq == 0.0 {
            return Err(Error::InvalidArgument {
                what: "weights for the PQ-index",
                expected: "at least one non-zero surviving weight",
            });
        }
        let mean = |s: f64, r: f64| libm::pow(s / d as f64, 1.0 / r);
        Ok(1.0 - mean(sp, self.p) / mean(sq, self.q))
    }

    /// The fraction of the survivors to prune, for index `index`:
    /// `clamp(γ (1 − m/d), 0, β)`.
    ///
    /// ```
    /// use prunus_core::methods::imp::pq_index::PqIndex;
    /// // With p = 1/2 and q = 1 the exponent pq/(q−p) is 1, so m/d = 1 − I.
    /// assert!((PqIndex::default().rate(0.15) - 0.15).abs() < 1e-12);
    /// assert_eq!(PqIndex::default().rate(0.99), 0.9);
    /// ```
    pub fn rate(&self, index: f64) -> f64 {
        let (p, q) = (self.p, self.q);
        let kept = libm::pow(1.0 + self.eta, q / (p - q))
            * libm::pow((1.0 - index).max(0.0), p * q / (q - p));
        (self.gamma * (1.0 - kept)).clamp(0.0, self.beta)
    }

    /// The rate for `weights` directly: [`PqIndex::rate`] of
    /// [`PqIndex::index`].
    pub fn rate_of(&self, weights: impl IntoIterator<Item = f32>) -> Result<f64> {
        Ok(self.rate(self.index(weights)?))
    }
}
