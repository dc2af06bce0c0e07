//! [`Dense`] through faer: blocked, vectorised f64 GEMM, symmetric rank-k
//! update, Cholesky and triangular solves on the backend's thread pool.

use std::any::Any;

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor::{LltParams, LltRegularization, cholesky_in_place};
use faer::linalg::matmul::triangular::BlockStructure;
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::{Accum, MatMut, MatRef, Spec};
use prunus_core::contract::dense::{
    Matrix, check_gram, check_matmul, check_solve_rows, check_square,
};
use prunus_core::{Dense, Error, Result, Transpose};

use crate::CpuBackend;

fn view(m: &Matrix) -> MatRef<'_, f64> {
    MatRef::from_row_major_slice(m.data(), m.rows(), m.cols())
}

fn view_mut(m: &mut Matrix) -> MatMut<'_, f64> {
    let (rows, cols) = (m.rows(), m.cols());
    MatMut::from_row_major_slice_mut(m.data_mut(), rows, cols)
}

fn op(m: MatRef<'_, f64>, t: Transpose) -> MatRef<'_, f64> {
    match t {
        Transpose::No => m,
        Transpose::Yes => m.transpose(),
    }
}

impl Dense for CpuBackend<'_> {
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
        check_matmul(c, a, ta, b, tb)?;
        let accum = if beta == 0.0 {
            Accum::Replace
        } else {
            if beta != 1.0 {
                c.data_mut().iter_mut().for_each(|v| *v *= beta);
            }
            Accum::Add
        };
        self.exec.faer(self.threads(), |par| {
            faer::linalg::matmul::matmul(
                view_mut(c),
                accum,
                op(view(a), ta),
                op(view(b), tb),
                alpha,
                par,
            )
        });
        Ok(())
    }

    fn gram(&self, c: &mut Matrix, a: &Matrix, alpha: f64) -> Result<()> {
        check_gram(c, a)?;
        let a = view(a);
        self.exec.faer(self.threads(), |par| {
            faer::linalg::matmul::triangular::matmul(
                view_mut(c),
                BlockStructure::TriangularLower,
                Accum::Add,
                a.transpose(),
                BlockStructure::Rectangular,
                a,
                BlockStructure::Rectangular,
                alpha,
                par,
            )
        });
        mirror_lower(c);
        Ok(())
    }

    fn cholesky(&self, a: &mut Matrix) -> Result<()> {
        check_square(a)?;
        if a.data().iter().any(|v| v.is_nan()) {
            return Err(Error::NotPositiveDefinite { pivot: 0 });
        }
        let n = a.rows();
        let factored = self.exec.faer(self.threads(), |par| {
            let params: Spec<LltParams, f64> = Default::default();
            let mut mem = MemBuffer::new(
                faer::linalg::cholesky::llt::factor::cholesky_in_place_scratch::<f64>(
                    n, par, params,
                ),
            );
            cholesky_in_place(
                view_mut(a),
                LltRegularization::default(),
                par,
                MemStack::new(&mut mem),
                params,
            )
            .map(|_| ())
            .map_err(|e| match e {
                faer::linalg::cholesky::llt::factor::LltError::NonPositivePivot { index } => index,
            })
        });
        factored.map_err(|pivot| Error::NotPositiveDefinite { pivot })?;
        for i in 0..n {
            a.row_mut(i)[i + 1..].iter_mut().for_each(|v| *v = 0.0);
        }
        Ok(())
    }

    fn solve_rows(&self, l: &Matrix, t: Transpose, b: &mut Matrix) -> Result<()> {
        check_solve_rows(l, b)?;
        let l = view(l);
        self.exec.faer(self.threads(), |par| {
            let rhs = view_mut(b).transpose_mut();
            match t {
                Transpose::No => solve_lower_triangular_in_place(l, rhs, par),
                Transpose::Yes => solve_upper_triangular_in_place(l.transpose(), rhs, par),
            }
        });
        Ok(())
    }

    fn run_tasks(
        &self,
        count: usize,
        task: &(dyn Fn(usize) -> Box<dyn Any + Send> + Sync),
    ) -> Vec<Box<dyn Any + Send>> {
        let indices: Vec<usize> = (0..count).collect();
        self.exec.map(&indices, |&i| task(i))
    }
}

/// Copies the lower triangle of a square matrix onto its upper triangle.
fn mirror_lower(c: &mut Matrix) {
    let n = c.rows();
    let data = c.data_mut();
    for i in 0..n {
        for j in 0..i {
            data[j * n + i] = data[i * n + j];
        }
    }
}
