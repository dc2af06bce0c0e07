//! Sparsity schedules: the cumulative target of each pruning round.
//!
//! Every schedule is non-decreasing and ends exactly at its target, so an
//! iterative driver that prunes round `t` to `targets()[t]` with the previous
//! round's mask gets nested masks (each a subset of the last) and the exact
//! final count.

use alloc::vec::Vec;

use crate::contract::error::{Error, Result};

/// The longest schedule any variant may produce.
pub const MAX_ROUNDS: usize = 100_000;

/// How sparsity grows over pruning rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Schedule {
    /// Everything in one round.
    OneShot {
        /// Final sparsity.
        target: f64,
    },
    /// Remove `rate` of what is left each round (classic IMP: 0.2), until the
    /// target; the last round stops exactly at it.
    FixedRate {
        /// Fraction of the remaining units pruned per round, in `(0, 1]`.
        rate: f64,
        /// Final sparsity.
        target: f64,
    },
    /// The same fraction of what is left each round, chosen so that `rounds`
    /// rounds end exactly at the target: `s_t = 1 - (1 - target)^(t / R)`.
    Geometric {
        /// Final sparsity.
        target: f64,
        /// Number of rounds, at least 1.
        rounds: usize,
    },
    /// Gradual pruning (Zhu & Gupta): `s_t = s_f + (s_0 - s_f)(1 - t/T)^3`
    /// for `t = 0, 1, ..., T`.
    Cubic {
        /// Sparsity at the first step.
        initial: f64,
        /// Final sparsity, at least `initial`.
        target: f64,
        /// `T`, at least 1; the schedule has `T + 1` rounds.
        steps: usize,
    },
}

fn fraction(v: f64) -> Result<()> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::SparsityOutOfRange { value: v })
    }
}

impl Schedule {
    /// The cumulative sparsity after each round.
    ///
    /// ```
    /// use prunus_core::Schedule;
    /// let s = Schedule::FixedRate { rate: 0.2, target: 0.5 }.targets().unwrap();
    /// assert_eq!(s.len(), 4);
    /// assert!((s[1] - 0.36).abs() < 1e-12);
    /// assert_eq!(*s.last().unwrap(), 0.5);
    /// ```
    pub fn targets(&self) -> Result<Vec<f64>> {
        match *self {
            Schedule::OneShot { target } => {
                fraction(target)?;
                Ok(alloc::vec![target])
            }
            Schedule::FixedRate { rate, target } => {
                fraction(target)?;
                if !(rate > 0.0 && rate <= 1.0) {
                    return Err(Error::FractionOutOfRange {
                        what: "rate per round",
                        value: rate,
                    });
                }
                let mut out = Vec::new();
                let mut kept = 1.0f64;
                loop {
                    kept *= 1.0 - rate;
                    let s = 1.0 - kept;
                    // Float noise (1 - 0.8^2 = 0.35999...) must not add a round.
                    if s >= target - 1e-12 || out.len() + 1 >= MAX_ROUNDS {
                        out.push(target);
                        return Ok(out);
                    }
                    out.push(s);
                }
            }
            Schedule::Geometric { target, rounds } => {
                fraction(target)?;
                if rounds == 0 || rounds > MAX_ROUNDS {
                    return Err(Error::InvalidSchedule {
                        reason: "geometric schedules need between 1 and 100000 rounds",
                    });
                }
                Ok((1..=rounds)
                    .map(|t| {
                        if t == rounds {
                            target
                        } else {
                            1.0 - libm::pow(1.0 - target, t as f64 / rounds as f64)
                        }
                    })
                    .collect())
            }
            Schedule::Cubic {
                initial,
                target,
                steps,
            } => {
                fraction(initial)?;
                fraction(target)?;
                if initial > target {
                    return Err(Error::InvalidSchedule {
                        reason: "cubic schedules need initial <= target",
                    });
                }
                if steps == 0 || steps >= MAX_ROUNDS {
                    return Err(Error::InvalidSchedule {
                        reason: "cubic schedules need between 1 and 99999 steps",
                    });
                }
                Ok((0..=steps)
                    .map(|t| {
                        if t == steps {
                            target
                        } else {
                            let r = 1.0 - t as f64 / steps as f64;
                            (target + (initial - target) * r * r * r).clamp(initial, target)
                        }
                    })
                    .collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_monotone_and_exact() {
        let all = [
            Schedule::OneShot { target: 0.7 },
            Schedule::FixedRate {
                rate: 0.2,
                target: 0.98,
            },
            Schedule::FixedRate {
                rate: 0.2,
                target: 1.0,
            },
            Schedule::Geometric {
                target: 0.9,
                rounds: 5,
            },
            Schedule::Cubic {
                initial: 0.1,
                target: 0.8,
                steps: 10,
            },
        ];
        for s in all {
            let t = s.targets().unwrap();
            assert!(t.windows(2).all(|w| w[0] <= w[1]), "{s:?}: {t:?}");
            let want = match s {
                Schedule::OneShot { target }
                | Schedule::FixedRate { target, .. }
                | Schedule::Geometric { target, .. }
                | Schedule::Cubic { target, .. } => target,
            };
            assert_eq!(*t.last().unwrap(), want);
        }
        let g = Schedule::Geometric {
            target: 0.75,
            rounds: 2,
        }
        .targets()
        .unwrap();
        assert!((g[0] - 0.5).abs() < 1e-12);
        let c = Schedule::Cubic {
            initial: 0.0,
            target: 0.8,
            steps: 2,
        }
        .targets()
        .unwrap();
        assert!((c[1] - 0.7).abs() < 1e-12);
    }

    #[test]
    fn rejects_bad_settings() {
        assert!(Schedule::OneShot { target: 1.5 }.targets().is_err());
        assert!(
            Schedule::FixedRate {
                rate: 0.0,
                target: 0.5
            }
            .targets()
            .is_err()
        );
        assert!(
            Schedule::Geometric {
                target: 0.5,
                rounds: 0
            }
            .targets()
            .is_err()
        );
        assert!(
            Schedule::Cubic {
                initial: 0.9,
                target: 0.5,
                steps: 3
            }
            .targets()
            .is_err()
        );
        assert!(Schedule::OneShot { target: f64::NAN }.targets().is_err());
    }
}
