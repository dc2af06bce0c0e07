//! Test data and assertions for the second-order linear algebra
//! ([`prunus_core::Dense`]): a tiny deterministic generator and relative
//! error in the 2-norm.

use prunus_core::Matrix;

/// splitmix64: a tiny deterministic generator.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`.
    pub fn signed(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `len` values uniform in `[-1, 1)`.
    pub fn values(&mut self, len: usize) -> Vec<f64> {
        (0..len).map(|_| self.signed()).collect()
    }

    /// A `rows x cols` matrix of values uniform in `[-1, 1)`.
    pub fn matrix(&mut self, rows: usize, cols: usize) -> Matrix {
        Matrix::new(rows, cols, self.values(rows * cols)).expect("rows x cols values")
    }

    /// `k` of `d` flags set, uniformly.
    pub fn subset(&mut self, d: usize, k: usize) -> Vec<bool> {
        let mut order: Vec<usize> = (0..d).collect();
        for i in 0..k {
            let j = i + self.below(d - i);
            order.swap(i, j);
        }
        let mut flags = vec![false; d];
        for &q in &order[..k] {
            flags[q] = true;
        }
        flags
    }
}

/// The Euclidean norm.
pub fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// `‖got − want‖ / ‖want‖`, absolute where `want` is zero (NaN stays NaN).
pub fn rel_diff(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let diff: Vec<f64> = got.iter().zip(want).map(|(g, w)| g - w).collect();
    let scale = norm(want);
    if scale == 0.0 {
        norm(&diff)
    } else {
        norm(&diff) / scale
    }
}

/// Fails with `what` unless `rel_diff(got, want) <= tol`.
#[track_caller]
pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    let e = rel_diff(got, want);
    assert!(
        e <= tol,
        "{what}: relative difference {e:e} > {tol:e}\n got {got:?}\nwant {want:?}"
    );
}
