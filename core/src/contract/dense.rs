//! Dense f64 linear algebra for the second-order methods (OBS, WoodFisher,
//! CBS), in host memory.
//!
//! The backend trait's `gemm`/`cholesky_solve` work on f32 device tensors.
//! Second-order pruning is written against f64 instead, for headroom: the
//! Woodbury form `F̂⁻¹ = (I − Gᵀ (NλI + G Gᵀ)⁻¹ G) / λ` subtracts two
//! nearly equal terms and divides by the damping, so rounding in the `N x N`
//! solve is amplified by about `F_qq / λ`. How much that matters depends on
//! the network: on the CBS protocol's MLPNet (MNIST, λ = 1e-3, where
//! `F_qq / λ` is at most 2.1) an f32 computation was measured close to this
//! f64 one (diag(F̂⁻¹) within 1.2e-6 relative, the same WF-S mask at 90%, the
//! multi-weight OBS update within 4.7e-6); larger `F_qq / λ` (the paper's
//! λ = 1e-5 for CNNs) has not been measured. So [`Dense`] is a separate,
//! four-method contract on row-major f64 [`Matrix`] values: a backend
//! implements it where it has f64 arithmetic (the scalar [`ReferenceBackend`]
//! here; the CPU backend through faer). WGSL has no portable f64, so the wgpu
//! backend implements it in f32 (its [`Dense::unit_roundoff`] says so), which
//! the measurement above shows is enough on that protocol; its `Offload`
//! sends only the heavy, compute-bound calls to the device and the rest to an
//! f64 host implementation.
//!
//! Vectors are rows: a "rows" operation treats every row of its argument as
//! one vector, which is how a per-weight gradient (one row of `Gᵀ`) is laid
//! out in [`crate::methods::second_order::fisher::Fisher`].

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::any::Any;

use crate::contract::error::{Error, Result};
use crate::contract::op::Transpose;
use crate::contract::reference::ReferenceBackend;
use crate::contract::shape::Shape;

/// A dense row-major `rows x cols` f64 matrix.
///
/// Every matrix carries an identity ([`Matrix::id`]) that lets an
/// implementation of [`Dense`] keep a copy of it elsewhere (in device
/// memory) and know the copy is still current: equal non-zero ids mean equal
/// elements. Equality ([`PartialEq`]) compares shapes and elements only.
#[derive(Clone, Debug)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
    id: u64,
}

impl PartialEq for Matrix {
    fn eq(&self, other: &Matrix) -> bool {
        self.rows == other.rows && self.cols == other.cols && self.data == other.data
    }
}

/// A new matrix identity: unique for the life of the process where the
/// target has 64-bit atomics, 0 (no identity) elsewhere.
fn fresh_id() -> u64 {
    #[cfg(target_has_atomic = "64")]
    {
        use core::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
    #[cfg(not(target_has_atomic = "64"))]
    {
        0
    }
}

impl Matrix {
    /// Wraps row-major data of the right length, with a fresh identity.
    fn build(rows: usize, cols: usize, data: Vec<f64>) -> Matrix {
        Matrix {
            rows,
            cols,
            data,
            id: fresh_id(),
        }
    }

    /// A matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Matrix {
        Matrix::build(rows, cols, vec![0.0; rows * cols])
    }

    /// The matrix's identity, for caches of copies of it: every constructor
    /// gives a fresh one, a clone keeps its original's, and every mutable
    /// access ([`Matrix::data_mut`], [`Matrix::row_mut`],
    /// [`Matrix::add_diagonal`]) gives the matrix a fresh one, so two
    /// matrices with the same non-zero id hold the same elements. 0 means
    /// no identity (targets without 64-bit atomics): nothing may be cached
    /// under it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// `value · I`, `n x n`.
    pub fn scaled_identity(n: usize, value: f64) -> Matrix {
        let mut m = Matrix::zeros(n, n);
        for i in 0..n {
            m.data[i * n + i] = value;
        }
        m
    }

    /// Wraps row-major data; fails unless `data.len() == rows · cols`.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Result<Matrix> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::LengthMismatch {
                what: "matrix elements",
                expected: rows.saturating_mul(cols),
                found: data.len(),
            });
        }
        Ok(Matrix::build(rows, cols, data))
    }

    /// Widens row-major f32 data; fails unless `data.len() == rows · cols`.
    pub fn from_f32(rows: usize, cols: usize, data: &[f32]) -> Result<Matrix> {
        Matrix::new(rows, cols, data.iter().map(|&v| f64::from(v)).collect())
    }

    /// One row vector `1 x n`.
    pub fn row_vector(values: Vec<f64>) -> Matrix {
        Matrix::build(1, values.len(), values)
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[f64] {
        &self.data
    }

    /// The elements, row-major, mutably (the matrix takes a fresh
    /// [`Matrix::id`]).
    pub fn data_mut(&mut self) -> &mut [f64] {
        self.id = fresh_id();
        &mut self.data
    }

    /// The elements, by value.
    pub fn into_data(self) -> Vec<f64> {
        self.data
    }

    /// Row `i`.
    #[track_caller]
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Row `i`, mutably (the matrix takes a fresh [`Matrix::id`]).
    #[track_caller]
    pub fn row_mut(&mut self, i: usize) -> &mut [f64] {
        self.id = fresh_id();
        &mut self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Element `(i, j)`.
    #[track_caller]
    pub fn get(&self, i: usize, j: usize) -> f64 {
        assert!(j < self.cols, "column {j} of {}", self.cols);
        self.data[i * self.cols + j]
    }

    /// Adds `value` to every diagonal element.
    pub fn add_diagonal(&mut self, value: f64) {
        self.id = fresh_id();
        for i in 0..self.rows.min(self.cols) {
            self.data[i * self.cols + i] += value;
        }
    }

    /// The transpose, as a new matrix.
    pub fn transpose(&self) -> Matrix {
        let mut t = Matrix::zeros(self.cols, self.rows);
        for i in 0..self.rows {
            for (j, &v) in self.row(i).iter().enumerate() {
                t.data[j * self.rows + i] = v;
            }
        }
        t
    }

    /// The rows listed, in that order.
    #[track_caller]
    pub fn select_rows(&self, rows: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(rows.len() * self.cols);
        for &r in rows {
            data.extend_from_slice(self.row(r));
        }
        Matrix::build(rows.len(), self.cols, data)
    }

    /// The columns listed, in that order (all rows).
    pub fn select_cols(&self, cols: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(self.rows * cols.len());
        for i in 0..self.rows {
            let row = self.row(i);
            data.extend(cols.iter().map(|&j| row[j]));
        }
        Matrix::build(self.rows, cols.len(), data)
    }

    /// The submatrix of the rows and the columns listed, in those orders.
    pub fn select_block(&self, rows: &[usize], cols: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(rows.len() * cols.len());
        for &i in rows {
            let row = self.row(i);
            data.extend(cols.iter().map(|&j| row[j]));
        }
        Matrix::build(rows.len(), cols.len(), data)
    }

    /// The square submatrix of the rows and columns listed.
    #[track_caller]
    pub fn select(&self, indices: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(indices.len() * indices.len());
        for &r in indices {
            let row = self.row(r);
            data.extend(indices.iter().map(|&c| row[c]));
        }
        Matrix::build(indices.len(), indices.len(), data)
    }

    fn shape(&self) -> Shape {
        Shape::matrix(self.rows, self.cols).unwrap_or_else(|_| Shape::vector(self.data.len()))
    }

    /// `(rows, cols)` of `op(self)`.
    fn dims(&self, t: Transpose) -> (usize, usize) {
        match t {
            Transpose::No => (self.rows, self.cols),
            Transpose::Yes => (self.cols, self.rows),
        }
    }

    /// Element `(i, j)` of `op(self)`.
    fn at(&self, t: Transpose, i: usize, j: usize) -> f64 {
        match t {
            Transpose::No => self.data[i * self.cols + j],
            Transpose::Yes => self.data[j * self.cols + i],
        }
    }
}

/// Dense f64 linear algebra: what the OBS family needs, and no more. See the
/// module docs for why it is f64 and separate from [`crate::Backend`].
///
/// Every implementation gives the same results as [`ReferenceBackend`] up to
/// the rounding of its own arithmetic ([`Dense::unit_roundoff`]: f64 here
/// and on the CPU backend, f32 on a GPU); a given implementation and thread
/// count always gives the same bits.
pub trait Dense {
    /// The unit roundoff of the arithmetic: `2⁻⁵³` for f64 (the default),
    /// `2⁻²⁴` where any part of the work runs in f32. Tolerances that compare
    /// implementations should scale with it.
    fn unit_roundoff(&self) -> f64 {
        f64::EPSILON / 2.0
    }

    /// `c ← beta · c + alpha · op(a) · op(b)`.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &self,
        c: &mut Matrix,
        beta: f64,
        a: &Matrix,
        ta: Transpose,
        b: &Matrix,
        tb: Transpose,
        alpha: f64,
    ) -> Result<()>;

    /// `c ← c + alpha · aᵀ a` for `a` of `m x n` and a symmetric `c` of
    /// `n x n` (both triangles are written).
    fn gram(&self, c: &mut Matrix, a: &Matrix, alpha: f64) -> Result<()>;

    /// Replaces a symmetric positive definite `a` by its lower Cholesky
    /// factor `L` (`a = L Lᵀ`, strictly upper part zeroed); fails with
    /// [`Error::NotPositiveDefinite`] otherwise.
    fn cholesky(&self, a: &mut Matrix) -> Result<()>;

    /// Replaces every row `x` of `b` by `L⁻¹ x` (`Transpose::No`) or
    /// `L⁻ᵀ x` (`Transpose::Yes`), `l` a lower triangular factor.
    fn solve_rows(&self, l: &Matrix, t: Transpose, b: &mut Matrix) -> Result<()>;

    /// Asks the implementation to keep a copy of `m` where its calls run
    /// (device memory), because `m` will be an operand of many calls;
    /// returns whether it did. Later calls naming a matrix with the same
    /// [`Matrix::id`] use the copy instead of transferring `m` again, and
    /// give the same results as without it. Each retain is undone by one
    /// [`Dense::release`]. The default keeps nothing: a host implementation
    /// reads `m` where it is.
    fn retain(&self, m: &Matrix) -> Result<bool> {
        let _ = m;
        Ok(false)
    }

    /// Undoes one [`Dense::retain`] of `m` (nothing where none was kept).
    fn release(&self, m: &Matrix) {
        let _ = m;
    }

    /// Runs `task(i)` for every `i` in `0..count` and returns the results
    /// in index order: the host-side loops of the layer-wise methods (one
    /// task per output row or group of rows) go through it. The default
    /// runs the tasks one after another; an implementation with threads may
    /// run them in parallel (the CPU backend does, on its own pool). Tasks
    /// are independent, so the results are the same either way. Call it
    /// through [`map_tasks`], which keeps the result type.
    fn run_tasks(
        &self,
        count: usize,
        task: &(dyn Fn(usize) -> Box<dyn Any + Send> + Sync),
    ) -> Vec<Box<dyn Any + Send>> {
        (0..count).map(task).collect()
    }
}

/// `task(i)` for every `i` in `0..count`, in index order, run through
/// [`Dense::run_tasks`] (in parallel where the implementation has threads).
pub fn map_tasks<D, T>(dense: &D, count: usize, task: impl Fn(usize) -> T + Sync) -> Result<Vec<T>>
where
    D: Dense + ?Sized,
    T: Send + 'static,
{
    let boxed = dense.run_tasks(count, &|i| Box::new(task(i)) as Box<dyn Any + Send>);
    let results: Vec<T> = boxed
        .into_iter()
        .filter_map(|b| b.downcast::<T>().ok().map(|b| *b))
        .collect();
    if results.len() != count {
        return Err(Error::Backend {
            message: alloc::format!(
                "run_tasks returned {} results of the right type for {count} tasks",
                results.len()
            ),
        });
    }
    Ok(results)
}

/// Checks the shapes of [`Dense::matmul`].
pub fn check_matmul(
    c: &Matrix,
    a: &Matrix,
    ta: Transpose,
    b: &Matrix,
    tb: Transpose,
) -> Result<(usize, usize, usize)> {
    let (m, k) = a.dims(ta);
    let (k2, n) = b.dims(tb);
    if k != k2 {
        return Err(Error::shape_mismatch(
            "matmul inner",
            &a.shape(),
            &b.shape(),
        ));
    }
    if (c.rows, c.cols) != (m, n) {
        let want = Shape::matrix(m, n)?;
        return Err(Error::shape_mismatch("matmul output", &want, &c.shape()));
    }
    Ok((m, k, n))
}

/// Checks the shapes of [`Dense::gram`].
pub fn check_gram(c: &Matrix, a: &Matrix) -> Result<()> {
    if (c.rows, c.cols) != (a.cols, a.cols) {
        let want = Shape::matrix(a.cols, a.cols)?;
        return Err(Error::shape_mismatch("gram output", &want, &c.shape()));
    }
    Ok(())
}

/// Checks that `a` is square (Cholesky).
pub fn check_square(a: &Matrix) -> Result<()> {
    if a.rows != a.cols {
        let want = Shape::matrix(a.rows, a.rows)?;
        return Err(Error::shape_mismatch("cholesky", &want, &a.shape()));
    }
    Ok(())
}

/// Checks the shapes of [`Dense::solve_rows`].
pub fn check_solve_rows(l: &Matrix, b: &Matrix) -> Result<()> {
    check_square(l)?;
    if b.cols != l.rows {
        let want = Shape::matrix(b.rows, l.rows)?;
        return Err(Error::shape_mismatch("solve rows", &want, &b.shape()));
    }
    Ok(())
}

impl Dense for ReferenceBackend {
    fn matmul(
        &self,
        c: &mut Matrix,
        beta: f64,
        a: &Matrix,
        ta: Transpose,
        b: &Matrix,
        tb: Transpose,
        alpha: f64,
    ) -> Result<()> {
        let (m, k, n) = check_matmul(c, a, ta, b, tb)?;
        c.id = fresh_id();
        for i in 0..m {
            for j in 0..n {
                let s = (0..k).fold(0.0, |s, p| s + a.at(ta, i, p) * b.at(tb, p, j));
                let old = if beta == 0.0 {
                    0.0
                } else {
                    beta * c.data[i * n + j]
                };
                c.data[i * n + j] = old + alpha * s;
            }
        }
        Ok(())
    }

    fn gram(&self, c: &mut Matrix, a: &Matrix, alpha: f64) -> Result<()> {
        check_gram(c, a)?;
        c.id = fresh_id();
        let n = a.cols;
        for i in 0..n {
            for j in 0..=i {
                let s = (0..a.rows).fold(0.0, |s, p| s + a.data[p * n + i] * a.data[p * n + j]);
                c.data[i * n + j] += alpha * s;
                if j != i {
                    c.data[j * n + i] = c.data[i * n + j];
                }
            }
        }
        Ok(())
    }

    fn cholesky(&self, a: &mut Matrix) -> Result<()> {
        check_square(a)?;
        a.id = fresh_id();
        let n = a.rows;
        for j in 0..n {
            let mut d = a.data[j * n + j];
            for p in 0..j {
                d -= a.data[j * n + p] * a.data[j * n + p];
            }
            if d.is_nan() || d <= 0.0 {
                return Err(Error::NotPositiveDefinite { pivot: j });
            }
            let d = libm::sqrt(d);
            a.data[j * n + j] = d;
            for i in j + 1..n {
                let mut s = a.data[i * n + j];
                for p in 0..j {
                    s -= a.data[i * n + p] * a.data[j * n + p];
                }
                a.data[i * n + j] = s / d;
            }
        }
        for i in 0..n {
            for j in i + 1..n {
                a.data[i * n + j] = 0.0;
            }
        }
        Ok(())
    }

    fn solve_rows(&self, l: &Matrix, t: Transpose, b: &mut Matrix) -> Result<()> {
        check_solve_rows(l, b)?;
        let n = l.rows;
        for r in 0..b.rows {
            let x = b.row_mut(r);
            match t {
                Transpose::No => {
                    for i in 0..n {
                        let s = (0..i).fold(x[i], |s, p| s - l.data[i * n + p] * x[p]);
                        x[i] = s / l.data[i * n + i];
                    }
                }
                Transpose::Yes => {
                    for i in (0..n).rev() {
                        let s = (i + 1..n).fold(x[i], |s, p| s - l.data[p * n + i] * x[p]);
                        x[i] = s / l.data[i * n + i];
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_elements() {
        let a = Matrix::new(2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = Matrix::new(2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_ne!(a.id(), 0);
        assert_ne!(a.id(), b.id(), "two constructions share an id");
        assert_eq!(a, b, "equality looks at the elements only");
        let mut c = a.clone();
        assert_eq!(c.id(), a.id(), "a clone holds the same elements");
        c.data_mut()[0] = 5.0;
        let after_data = c.id();
        assert_ne!(after_data, a.id());
        c.row_mut(1)[0] = 6.0;
        assert_ne!(c.id(), after_data);
        let before = c.id();
        c.add_diagonal(1.0);
        assert_ne!(c.id(), before);
        // Every way of deriving a matrix gives a new identity.
        for derived in [a.transpose(), a.select(&[0, 1]), a.select_rows(&[0, 1])] {
            assert_ne!(derived.id(), a.id());
        }
    }

    #[test]
    fn reference_calls_renew_the_id_of_what_they_write() {
        let a = Matrix::new(2, 2, vec![4.0, 2.0, 2.0, 3.0]).unwrap();
        let mut c = Matrix::zeros(2, 2);
        let id = c.id();
        ReferenceBackend
            .matmul(&mut c, 0.0, &a, Transpose::No, &a, Transpose::No, 1.0)
            .unwrap();
        assert_ne!(c.id(), id);
        let id = c.id();
        ReferenceBackend.gram(&mut c, &a, 1.0).unwrap();
        assert_ne!(c.id(), id);
        let mut l = a.clone();
        ReferenceBackend.cholesky(&mut l).unwrap();
        assert_ne!(l.id(), a.id());
        let mut b = a.clone();
        ReferenceBackend
            .solve_rows(&l, Transpose::No, &mut b)
            .unwrap();
        assert_ne!(b.id(), a.id());
        assert!(
            !ReferenceBackend.retain(&a).unwrap(),
            "the host keeps no copies"
        );
    }
}
