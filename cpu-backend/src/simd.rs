//! Runtime instruction-set dispatch of the kernels.
//!
//! The kernels (keys, histograms, range and mask passes) are plain loops
//! written to vectorise. Compiled for the x86-64 baseline they use SSE2
//! only; [`Isa::run`] compiles the same loop again inside a function that
//! enables AVX2 or AVX-512, chosen once from what the processor reports, so
//! one binary runs everywhere and uses what it finds. The code is the same
//! integer arithmetic on every level, so the masks are bit for bit the same.
//!
//! [`pulp`] (already in the tree through faer) checks the processor and
//! hides the `unsafe` call into the target-feature function: this module
//! needs none.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use prunus_core::{Error, Result};

use crate::lanes::WithLanes;

/// The environment variable that forces a [`SimdLevel`] (read once per
/// process, see [`SimdLevel::from_env`]).
pub const SIMD_ENV: &str = "PRUNUS_SIMD";

/// An instruction set the CPU backend's kernels can run on.
///
/// A [`crate::CpuBackend`] uses the best level the processor supports
/// ([`SimdLevel::detect`]) unless `PRUNUS_SIMD` or
/// [`crate::CpuBackend::with_simd`] asks for another. Every level gives the
/// same results, bit for bit; only the speed differs.
///
/// ```
/// use prunus_cpu::{CpuBackend, Par, SimdLevel};
/// let best = SimdLevel::detect();
/// assert!(best.is_supported());
/// assert!(SimdLevel::supported().contains(&SimdLevel::Baseline));
/// let b = CpuBackend::new(Par::Seq)?.with_simd(SimdLevel::Baseline)?;
/// assert_eq!(b.simd(), SimdLevel::Baseline);
/// assert_eq!("avx2".parse::<SimdLevel>()?, SimdLevel::Avx2);
/// # Ok::<(), prunus_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SimdLevel {
    /// What the compilation target guarantees: SSE2 on x86-64 (more if the
    /// binary was built with a higher `target-cpu`), NEON on aarch64, plain
    /// scalar code elsewhere. Always supported.
    Baseline,
    /// x86-64-v3: AVX2 with FMA, BMI1/2, LZCNT, MOVBE (Haswell, Zen and
    /// later).
    Avx2,
    /// x86-64-v4: AVX-512 F, BW, CD, DQ, VL (Skylake-SP, Ice Lake, Zen 4
    /// and later). Needs the `avx512` feature of this crate (on by default).
    Avx512,
    /// aarch64 Advanced SIMD. NEON is part of every aarch64 target, so this
    /// level runs the same code as [`SimdLevel::Baseline`] there; it exists
    /// so that the level in use is named for what it is.
    Neon,
}

impl SimdLevel {
    /// Every level, lowest first.
    pub const ALL: [SimdLevel; 4] = [
        SimdLevel::Baseline,
        SimdLevel::Avx2,
        SimdLevel::Avx512,
        SimdLevel::Neon,
    ];

    /// The level's name, as `PRUNUS_SIMD` takes it: `baseline`, `avx2`,
    /// `avx512` or `neon`.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Baseline => "baseline",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
            SimdLevel::Neon => "neon",
        }
    }

    /// Whether this processor (and this build) can run the level.
    pub fn is_supported(self) -> bool {
        Isa::new(self).is_some()
    }

    /// The levels this processor supports, lowest first (always starting
    /// with [`SimdLevel::Baseline`]).
    pub fn supported() -> Vec<SimdLevel> {
        SimdLevel::ALL
            .into_iter()
            .filter(|l| l.is_supported())
            .collect()
    }

    /// The best level this processor supports (detected once, then
    /// cached).
    pub fn detect() -> SimdLevel {
        static BEST: OnceLock<SimdLevel> = OnceLock::new();
        *BEST.get_or_init(|| {
            [SimdLevel::Avx512, SimdLevel::Avx2, SimdLevel::Neon]
                .into_iter()
                .find(|l| l.is_supported())
                .unwrap_or(SimdLevel::Baseline)
        })
    }

    /// The level `PRUNUS_SIMD` asks for, or [`SimdLevel::detect`] when it is
    /// unset or empty. The variable is read once per process; the answer
    /// (or the error) is cached.
    ///
    /// Fails with [`Error::Backend`] when the value names no level, or a
    /// level this processor does not support: a forced level is never
    /// silently replaced by another.
    pub fn from_env() -> Result<SimdLevel> {
        static FORCED: OnceLock<std::result::Result<SimdLevel, String>> = OnceLock::new();
        FORCED
            .get_or_init(|| match std::env::var(SIMD_ENV) {
                Ok(v) if !v.trim().is_empty() => v
                    .parse::<SimdLevel>()
                    .and_then(SimdLevel::checked)
                    .map_err(|e| match e {
                        Error::Backend { message } => format!("{SIMD_ENV}={v}: {message}"),
                        e => format!("{SIMD_ENV}={v}: {e}"),
                    }),
                Ok(_) | Err(std::env::VarError::NotPresent) => Ok(SimdLevel::detect()),
                Err(std::env::VarError::NotUnicode(v)) => Err(format!(
                    "{SIMD_ENV}={v:?} is not valid text; give one of: {}",
                    names(&SimdLevel::ALL)
                )),
            })
            .clone()
            .map_err(|message| Error::Backend { message })
    }

    /// `self` if this processor supports it, else an error naming the
    /// levels it does support.
    pub fn checked(self) -> Result<SimdLevel> {
        if self.is_supported() {
            Ok(self)
        } else {
            Err(Error::Backend {
                message: format!(
                    "this processor (or build) cannot run the {} kernels; it supports: {}",
                    self.name(),
                    names(&SimdLevel::supported())
                ),
            })
        }
    }
}

/// `a, b, c`.
fn names(levels: &[SimdLevel]) -> String {
    levels
        .iter()
        .map(|l| l.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SimdLevel {
    type Err = Error;

    /// A level by its [`SimdLevel::name`], ignoring case and surrounding
    /// blanks (`avx-512` and `avx512f` are taken for `avx512`, `scalar` and
    /// `sse2` for `baseline`); whether the processor supports it is not
    /// checked here ([`SimdLevel::checked`]).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "baseline" | "scalar" | "sse2" => Ok(SimdLevel::Baseline),
            "avx2" | "x86-64-v3" => Ok(SimdLevel::Avx2),
            "avx512" | "avx-512" | "avx512f" | "x86-64-v4" => Ok(SimdLevel::Avx512),
            "neon" => Ok(SimdLevel::Neon),
            _ => Err(Error::Backend {
                message: format!(
                    "'{s}' is not an instruction-set level; give one of: {}",
                    names(&SimdLevel::ALL)
                ),
            }),
        }
    }
}

/// A proof that the processor runs a level: the token the kernels are
/// dispatched on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Isa {
    /// The compilation target's own features.
    Baseline,
    /// NEON on aarch64 (the baseline there).
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// x86-64-v3.
    #[cfg(target_arch = "x86_64")]
    V3(pulp::x86::V3),
    /// x86-64-v4.
    #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
    V4(pulp::x86::V4),
}

impl Isa {
    /// The token of `level`, if the processor runs it.
    pub(crate) fn new(level: SimdLevel) -> Option<Isa> {
        match level {
            SimdLevel::Baseline => Some(Isa::Baseline),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => pulp::x86::V3::try_new().map(Isa::V3),
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            SimdLevel::Avx512 => pulp::x86::V4::try_new().map(Isa::V4),
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => Some(Isa::Neon),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// The level of this token.
    pub(crate) fn level(self) -> SimdLevel {
        match self {
            Isa::Baseline => SimdLevel::Baseline,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => SimdLevel::Neon,
            #[cfg(target_arch = "x86_64")]
            Isa::V3(_) => SimdLevel::Avx2,
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            Isa::V4(_) => SimdLevel::Avx512,
        }
    }

    /// Runs kernel `k` with this level's [`crate::lanes::Lanes`], compiled
    /// for it.
    #[inline(always)]
    pub(crate) fn dispatch<K: WithLanes>(self, k: K) -> K::Output {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Baseline => match crate::lanes::Sse2::new() {
                Some(sse2) => k.run(sse2),
                None => k.run(crate::lanes::Portable),
            },
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Baseline => k.run(crate::lanes::Portable),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => k.run(crate::lanes::Portable),
            #[cfg(target_arch = "x86_64")]
            Isa::V3(simd) => simd.vectorize(
                #[inline(always)]
                || k.run(simd),
            ),
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            Isa::V4(simd) => simd.vectorize(
                #[inline(always)]
                || k.run(simd),
            ),
        }
    }

    /// Runs `f` compiled for this level. Only code inlined into `f` is
    /// compiled for it: give a closure marked `#[inline(always)]` that calls
    /// `#[inline(always)]` kernels.
    #[inline(always)]
    pub(crate) fn run<R>(self, f: impl FnOnce() -> R) -> R {
        match self {
            Isa::Baseline => f(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => f(),
            #[cfg(target_arch = "x86_64")]
            Isa::V3(simd) => simd.vectorize(f),
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            Isa::V4(simd) => simd.vectorize(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for l in SimdLevel::ALL {
            assert_eq!(l.name().parse::<SimdLevel>().unwrap(), l);
            assert_eq!(l.to_string(), l.name());
            assert_eq!(Isa::new(l).map(Isa::level).unwrap_or(l), l);
        }
        assert_eq!(" AVX2 ".parse::<SimdLevel>().unwrap(), SimdLevel::Avx2);
        let e = "avx3".parse::<SimdLevel>().unwrap_err().to_string();
        assert!(
            e.contains("'avx3'") && e.contains("baseline, avx2, avx512, neon"),
            "{e}"
        );
    }

    #[test]
    fn detection_is_consistent() {
        let all = SimdLevel::supported();
        assert_eq!(all[0], SimdLevel::Baseline);
        assert!(all.contains(&SimdLevel::detect()));
        assert_eq!(SimdLevel::detect(), *all.iter().max().unwrap());
        #[cfg(not(target_arch = "aarch64"))]
        {
            let e = SimdLevel::Neon.checked().unwrap_err().to_string();
            assert!(e.contains("cannot run the neon kernels"), "{e}");
        }
    }
}
