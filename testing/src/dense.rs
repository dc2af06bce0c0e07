//! The conformance suite of the second-order linear algebra
//! ([`prunus_core::Dense`]), written once for every implementation, with its
//! test data: a tiny deterministic generator and relative error in the
//! 2-norm.
//!
//! Each `check_*` function runs one kernel of the contract on `d` against a
//! textbook loop written here and against [`ReferenceBackend`] (f64), and
//! panics with a message naming the kernel, the sizes and the relative
//! error. Tolerances scale with [`Dense::unit_roundoff`], so an
//! implementation that computes in f32 passes with f32 accuracy.
//! [`crate::dense_conformance_tests!`] turns every check into a `#[test]`.
//!
//! ```
//! use prunus_core::ReferenceBackend;
//! prunus_testing::dense::check_cholesky(&ReferenceBackend);
//! ```

use prunus_core::{Dense, Error, Matrix, ReferenceBackend, Transpose};

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

// ---------------------------------------------------------------------------
// The Dense conformance suite
// ---------------------------------------------------------------------------

/// The relative tolerance (2-norm) of one kernel call of `d` on values of
/// order one and sizes up to 70: `1e-10` in f64, `256 u` (about `1.5e-5`) in
/// f32, `u` being [`Dense::unit_roundoff`].
pub fn tolerance<D: Dense + ?Sized>(d: &D) -> f64 {
    1e-10f64.max(256.0 * d.unit_roundoff())
}

fn name<D: ?Sized>() -> &'static str {
    std::any::type_name::<D>()
}

/// Element `(i, j)` of `op(m)`.
fn at(m: &Matrix, t: Transpose, i: usize, j: usize) -> f64 {
    match t {
        Transpose::No => m.get(i, j),
        Transpose::Yes => m.get(j, i),
    }
}

/// `beta · c + alpha · op(a) op(b)` by the textbook triple loop (`c`
/// ignored when `beta` is zero).
fn naive_matmul(
    c: &Matrix,
    beta: f64,
    (a, ta): (&Matrix, Transpose),
    (b, tb): (&Matrix, Transpose),
    alpha: f64,
) -> Vec<f64> {
    let k = match ta {
        Transpose::No => a.cols(),
        Transpose::Yes => a.rows(),
    };
    let mut out = Vec::with_capacity(c.rows() * c.cols());
    for i in 0..c.rows() {
        for j in 0..c.cols() {
            let s: f64 = (0..k).map(|p| at(a, ta, i, p) * at(b, tb, p, j)).sum();
            let old = if beta == 0.0 { 0.0 } else { beta * c.get(i, j) };
            out.push(old + alpha * s);
        }
    }
    out
}

fn transposed(t: Transpose, rows: usize, cols: usize) -> (usize, usize) {
    match t {
        Transpose::No => (rows, cols),
        Transpose::Yes => (cols, rows),
    }
}

const SIZES: [usize; 4] = [1, 3, 17, 70];
const TRANSPOSES: [Transpose; 2] = [Transpose::No, Transpose::Yes];
/// `(beta, alpha)`: every beta of 0, 1 and 0.5 with alpha 1 and -2.
const BETA_ALPHA: [(f64, f64); 6] = [
    (0.0, 1.0),
    (1.0, 1.0),
    (0.5, 1.0),
    (0.0, -2.0),
    (1.0, -2.0),
    (0.5, -2.0),
];

#[track_caller]
fn ok<T>(what: &str, r: prunus_core::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: unexpected error {e:?} ({e})"))
}

/// `c ← beta c + alpha op(a) op(b)` equals the textbook triple loop for
/// every size in `{1, 3, 17, 70}³`, both transposes of both operands, and
/// betas 0, 1, 0.5 with alphas 1 and -2.
pub fn check_matmul<D: Dense + ?Sized>(d: &D) {
    let (who, tol) = (name::<D>(), tolerance(d));
    let mut rng = Rng(1);
    for m in SIZES {
        for k in SIZES {
            for n in SIZES {
                for ta in TRANSPOSES {
                    for tb in TRANSPOSES {
                        let (ar, ac) = transposed(ta, m, k);
                        let (br, bc) = transposed(tb, k, n);
                        let a = rng.matrix(ar, ac);
                        let b = rng.matrix(br, bc);
                        let c0 = rng.matrix(m, n);
                        for (beta, alpha) in BETA_ALPHA {
                            let want = naive_matmul(&c0, beta, (&a, ta), (&b, tb), alpha);
                            let what = format!(
                                "{who}: matmul {m}x{k}x{n} {ta:?}/{tb:?} beta {beta} alpha {alpha}"
                            );
                            let mut c = c0.clone();
                            ok(&what, d.matmul(&mut c, beta, &a, ta, &b, tb, alpha));
                            assert_close(c.data(), &want, tol, &what);
                        }
                    }
                }
            }
        }
    }
}

/// With `beta = 0` the old `c` is not read at all, NaN included (the BLAS
/// convention), and an empty inner dimension scales `c` by `beta`.
pub fn check_matmul_zero_beta<D: Dense + ?Sized>(d: &D) {
    let (who, tol) = (name::<D>(), tolerance(d));
    let mut rng = Rng(2);
    for (m, k, n) in [(1, 1, 1), (3, 17, 5), (17, 3, 70)] {
        let a = rng.matrix(m, k);
        let b = rng.matrix(k, n);
        let zero = Matrix::zeros(m, n);
        let no = Transpose::No;
        let want = naive_matmul(&zero, 0.0, (&a, no), (&b, no), -2.0);
        let what = format!("{who}: matmul {m}x{k}x{n} with beta 0 over NaN");
        let mut c = ok(&what, Matrix::new(m, n, vec![f64::NAN; m * n]));
        ok(&what, d.matmul(&mut c, 0.0, &a, no, &b, no, -2.0));
        assert_close(c.data(), &want, tol, &what);
    }
    let (a, b) = (Matrix::zeros(3, 0), Matrix::zeros(0, 2));
    let what = format!("{who}: matmul with an empty inner dimension");
    let mut c = ok(&what, Matrix::new(3, 2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    ok(
        &what,
        d.matmul(&mut c, 0.5, &a, Transpose::No, &b, Transpose::No, 1.0),
    );
    assert_close(c.data(), &[0.5, 1.0, 1.5, 2.0, 2.5, 3.0], tol, &what);
}

/// `c ← c + alpha aᵀ a` equals the textbook loop and is exactly symmetric
/// (both triangles written).
pub fn check_gram<D: Dense + ?Sized>(d: &D) {
    let (who, tol) = (name::<D>(), tolerance(d));
    let mut rng = Rng(3);
    for m in SIZES {
        for n in SIZES {
            let a = rng.matrix(m, n);
            // A symmetric non-zero c.
            let s = rng.matrix(n, n);
            let sym = (0..n * n)
                .map(|e| s.get(e / n, e % n) + s.get(e % n, e / n))
                .collect();
            let c0 = ok("symmetric c", Matrix::new(n, n, sym));
            for alpha in [1.0, -1.0] {
                let want = naive_matmul(&c0, 1.0, (&a, Transpose::Yes), (&a, Transpose::No), alpha);
                let what = format!("{who}: gram {m}x{n} alpha {alpha}");
                let mut c = c0.clone();
                ok(&what, d.gram(&mut c, &a, alpha));
                assert_close(c.data(), &want, tol, &what);
                for i in 0..n {
                    for j in 0..i {
                        assert_eq!(
                            c.get(i, j).to_bits(),
                            c.get(j, i).to_bits(),
                            "{what}: ({i}, {j}) and ({j}, {i}) differ"
                        );
                    }
                }
            }
        }
    }
}

/// A random symmetric positive definite `n x n` matrix, well conditioned.
pub fn random_spd(rng: &mut Rng, n: usize) -> Matrix {
    let b = rng.matrix(n + 3, n);
    let mut a = Matrix::zeros(n, n);
    let data = naive_matmul(&a, 0.0, (&b, Transpose::Yes), (&b, Transpose::No), 1.0);
    a.data_mut().copy_from_slice(&data);
    a.add_diagonal(0.5);
    a
}

/// `L Lᵀ` from the lower triangle of `l` only.
fn lower_times_transpose(l: &Matrix) -> Vec<f64> {
    let n = l.rows();
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..=i.min(j)).map(|p| l.get(i, p) * l.get(j, p)).sum();
        }
    }
    out
}

/// The Cholesky factor of random SPD matrices has a positive diagonal, a
/// zeroed upper part, reproduces the matrix and equals the reference's.
pub fn check_cholesky<D: Dense + ?Sized>(d: &D) {
    let (who, tol) = (name::<D>(), tolerance(d));
    let mut rng = Rng(4);
    for n in SIZES {
        let a = random_spd(&mut rng, n);
        let what = format!("{who}: cholesky {n}x{n}");
        let mut l = a.clone();
        ok(&what, d.cholesky(&mut l));
        for i in 0..n {
            assert!(l.get(i, i) > 0.0, "{what}: diagonal {i} is {}", l.get(i, i));
            for j in i + 1..n {
                assert_eq!(l.get(i, j), 0.0, "{what}: upper ({i}, {j}) not zeroed");
            }
        }
        assert_close(&lower_times_transpose(&l), a.data(), tol, &what);
        let mut want = a.clone();
        ok("reference cholesky", ReferenceBackend.cholesky(&mut want));
        assert_close(
            l.data(),
            want.data(),
            tol,
            &format!("{what} against the reference"),
        );
    }
}

/// `L x` or `Lᵀ x` for every row `x` of `b`, from the lower triangle of `l`.
fn triangular_times_rows(l: &Matrix, t: Transpose, b: &Matrix) -> Vec<f64> {
    let n = l.rows();
    let mut out = Vec::with_capacity(b.rows() * n);
    for r in 0..b.rows() {
        let x = b.row(r);
        for i in 0..n {
            out.push(match t {
                Transpose::No => (0..=i).map(|p| l.get(i, p) * x[p]).sum(),
                Transpose::Yes => (i..n).map(|p| l.get(p, i) * x[p]).sum(),
            });
        }
    }
    out
}

/// Triangular solves invert the factor (both transposes, many right-hand
/// sides) and equal the reference's.
pub fn check_solve_rows<D: Dense + ?Sized>(d: &D) {
    let (who, tol) = (name::<D>(), tolerance(d));
    let mut rng = Rng(5);
    for n in SIZES {
        // Lower triangular, diagonally dominant: well conditioned at any n.
        let mut l = Matrix::zeros(n, n);
        for i in 0..n {
            for j in 0..i {
                l.row_mut(i)[j] = rng.signed() / n as f64;
            }
            l.row_mut(i)[i] = 1.0 + rng.signed().abs();
        }
        for rows in SIZES {
            let b0 = rng.matrix(rows, n);
            for t in TRANSPOSES {
                let what = format!("{who}: solve_rows {t:?} {n}x{n}, {rows} rows");
                let mut x = b0.clone();
                ok(&what, d.solve_rows(&l, t, &mut x));
                assert_close(&triangular_times_rows(&l, t, &x), b0.data(), tol, &what);
                let mut want = b0.clone();
                ok(
                    "reference solve",
                    ReferenceBackend.solve_rows(&l, t, &mut want),
                );
                assert_close(
                    x.data(),
                    want.data(),
                    tol,
                    &format!("{what} against the reference"),
                );
            }
        }
    }
}

#[track_caller]
fn assert_shape_mismatch<T: std::fmt::Debug>(got: prunus_core::Result<T>, what: &str) {
    assert!(
        matches!(got, Err(Error::ShapeMismatch { .. })),
        "{what}: expected Err(ShapeMismatch), got {got:?}"
    );
}

/// Operands of mismatched shapes are [`Error::ShapeMismatch`] errors, and a
/// failed call writes nothing.
pub fn check_shape_errors<D: Dense + ?Sized>(d: &D) {
    let who = name::<D>();
    let mut rng = Rng(6);
    let (no, yes) = (Transpose::No, Transpose::Yes);
    let a = rng.matrix(2, 3);
    let b = rng.matrix(4, 2);
    let c0 = rng.matrix(2, 2);
    let mut c = c0.clone();
    // Inner dimensions 3 and 4.
    let what = format!("{who}: matmul with inner dimensions 3 and 4");
    assert_shape_mismatch(d.matmul(&mut c, 1.0, &a, no, &b, no, 1.0), &what);
    // op(a) = 3x2 and op(b) = 2x4: fine inside, but c is 2x2, not 3x4.
    let what = format!("{who}: matmul into a 2x2 output of 3x4");
    assert_shape_mismatch(d.matmul(&mut c, 1.0, &a, yes, &b, yes, 1.0), &what);
    let what = format!("{who}: matmul of 2x3 by 2x3");
    assert_shape_mismatch(d.matmul(&mut c, 0.0, &a, no, &a, no, 1.0), &what);
    assert_eq!(c, c0, "{who}: a failed matmul wrote its output");
    // gram of a 2x3 needs a 3x3 output.
    assert_shape_mismatch(d.gram(&mut c, &a, 1.0), &format!("{who}: gram"));
    assert_eq!(c, c0, "{who}: a failed gram wrote its output");
    let mut rect = a.clone();
    let what = format!("{who}: cholesky of a 2x3 matrix");
    assert_shape_mismatch(d.cholesky(&mut rect), &what);
    assert_eq!(rect, a, "{who}: a failed cholesky wrote its input");
    let mut rhs = rng.matrix(3, 3);
    let what = format!("{who}: solve_rows with a 2x3 factor");
    assert_shape_mismatch(d.solve_rows(&a, no, &mut rhs), &what);
    let l = Matrix::scaled_identity(3, 2.0);
    let mut short = rng.matrix(3, 2);
    let short0 = short.clone();
    for t in TRANSPOSES {
        let what = format!("{who}: solve_rows {t:?} of rows of 2 by a 3x3 factor");
        assert_shape_mismatch(d.solve_rows(&l, t, &mut short), &what);
    }
    assert_eq!(short, short0, "{who}: a failed solve_rows wrote its rows");
}

/// The Cholesky factorisation of a matrix that is not positive definite is
/// [`Error::NotPositiveDefinite`], naming the first bad pivot.
pub fn check_not_positive_definite<D: Dense + ?Sized>(d: &D) {
    let who = name::<D>();
    let m = |n: usize, data: &[f64]| ok("test matrix", Matrix::new(n, n, data.to_vec()));
    #[rustfmt::skip]
    let diag = [
        1.0, 0.0, 0.0, 0.0,
        0.0, 2.0, 0.0, 0.0,
        0.0, 0.0, -1.0, 0.0,
        0.0, 0.0, 0.0, 3.0,
    ];
    let cases = [
        (
            "minus identity",
            m(3, &[-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0]),
            Some(0),
        ),
        ("zero", Matrix::zeros(2, 2), Some(0)),
        ("indefinite 2x2", m(2, &[1.0, 2.0, 2.0, 1.0]), Some(1)),
        ("diag(1, 2, -1, 3)", m(4, &diag), Some(2)),
        ("singular psd", m(2, &[1.0, 1.0, 1.0, 1.0]), Some(1)),
        ("NaN", m(2, &[f64::NAN, 0.0, 0.0, 1.0]), None),
    ];
    for (what, a, pivot) in &cases {
        let mut l = a.clone();
        match (d.cholesky(&mut l), pivot) {
            (Err(Error::NotPositiveDefinite { pivot: got }), Some(want)) => {
                assert_eq!(got, *want, "{who}: cholesky of {what}: pivot")
            }
            (Err(Error::NotPositiveDefinite { .. }), None) => {}
            (other, _) => {
                panic!("{who}: cholesky of {what}: expected NotPositiveDefinite, got {other:?}")
            }
        }
    }
}

/// The names of the `pub fn check_*` functions declared in this module, read
/// from its source, in order: [`crate::dense_conformance_tests!`] compares
/// its list with them.
#[doc(hidden)]
pub fn declared_checks() -> Vec<&'static str> {
    crate::declared_in(include_str!("dense.rs"))
}
