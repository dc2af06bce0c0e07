//! What a layer's calibration inputs contribute to its pruning: the rows
//! seen, the per-column sums (FLAP's means) and sums of squares (Wanda's
//! `‖X_j‖₂²`) and, when asked, the Gram matrix `XᵀX` (SparseGPT's and
//! OBS's `H`, up to scale).

use alloc::vec;
use alloc::vec::Vec;

use crate::contract::dense::{Dense, Matrix};
use crate::contract::error::{Error, Result};
use crate::contract::reference::ReferenceBackend;

/// Mergeable statistics of the inputs `X: [tokens, in]` of one linear layer
/// `W: [out, in]`, in f64.
///
/// Statistics add: pushing two batches, or pushing them into two values and
/// [`merge`](LayerStats::merge)-ing those (threads, shards, machines), gives
/// the same sums up to the order of the floating-point additions, which is
/// fixed for a given order of calls. Statistics computed elsewhere (another
/// framework's hooks, a GPU) come in through [`LayerStats::from_sums`].
///
/// ```
/// use prunus_core::methods::layerwise::LayerStats;
/// let mut s = LayerStats::new(2, true)?;
/// s.push(&[1.0, 2.0, 3.0, 0.0], 2)?; // two tokens of two features
/// assert_eq!(s.rows(), 2);
/// assert_eq!(s.sum_squares(), [10.0, 4.0]);
/// assert_eq!(s.gram().unwrap().data(), [10.0, 2.0, 2.0, 4.0]);
/// # Ok::<(), prunus_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LayerStats {
    columns: usize,
    rows: u64,
    /// `Σ x_j` per column; `None` for statistics imported without them.
    sums: Option<Vec<f64>>,
    sum_squares: Vec<f64>,
    gram: Option<Matrix>,
}

impl LayerStats {
    /// Empty statistics for a layer with `columns` inputs; with the Gram
    /// matrix when `gram` is set (SparseGPT and OBS need it, Wanda does
    /// not; it costs `8 · columns²` bytes).
    pub fn new(columns: usize, gram: bool) -> Result<Self> {
        if columns == 0 {
            return Err(Error::InvalidArgument {
                what: "layer statistics' input width",
                expected: "at least 1",
            });
        }
        Ok(LayerStats {
            columns,
            rows: 0,
            sums: Some(vec![0.0; columns]),
            sum_squares: vec![0.0; columns],
            gram: gram.then(|| Matrix::zeros(columns, columns)),
        })
    }

    /// Statistics from sums computed elsewhere: `rows` inputs seen, their
    /// per-column sums of squares, and optionally their Gram matrix
    /// `Σ xᵀx`. Fails on a length or shape that does not match, on NaN or
    /// infinite values, and on a negative sum of squares.
    pub fn from_sums(rows: u64, sum_squares: Vec<f64>, gram: Option<Matrix>) -> Result<Self> {
        let columns = sum_squares.len();
        let mut stats = LayerStats::new(columns, false)?;
        if sum_squares.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "the sums of squares",
            });
        }
        if sum_squares.iter().any(|&v| v < 0.0) {
            return Err(Error::InvalidArgument {
                what: "sum of squares",
                expected: "non-negative",
            });
        }
        if let Some(g) = &gram {
            if g.rows() != columns || g.cols() != columns {
                return Err(Error::LengthMismatch {
                    what: "Gram matrix rows and columns (one per input column)",
                    expected: columns,
                    found: if g.rows() != columns {
                        g.rows()
                    } else {
                        g.cols()
                    },
                });
            }
            if g.data().iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what: "the Gram matrix",
                });
            }
        }
        stats.rows = rows;
        stats.sums = None;
        stats.sum_squares = sum_squares;
        stats.gram = gram;
        Ok(stats)
    }

    /// Adds the per-column sums `Σ x_j` to statistics made by
    /// [`LayerStats::from_sums`] (FLAP's fluctuation and the bias of a
    /// structured refit need the columns' means). Fails on a length that is
    /// not the width or on NaN or infinite values.
    pub fn with_column_sums(mut self, sums: Vec<f64>) -> Result<Self> {
        if sums.len() != self.columns {
            return Err(Error::LengthMismatch {
                what: "column sums (one per input column)",
                expected: self.columns,
                found: sums.len(),
            });
        }
        if sums.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "the column sums",
            });
        }
        self.sums = Some(sums);
        Ok(self)
    }

    /// Adds `tokens` input rows, `x` row-major `[tokens, columns]`, with the
    /// Gram matrix (if kept) computed by the scalar reference loops. For wide
    /// layers use [`LayerStats::push_with`] and a fast [`Dense`].
    pub fn push(&mut self, x: &[f32], tokens: usize) -> Result<()> {
        self.push_with(&ReferenceBackend, x, tokens)
    }

    /// [`LayerStats::push`] with the Gram update `XᵀX` done by `dense`
    /// (faer on the CPU backend, a GEMM on the GPU). Fails, changing
    /// nothing, on a length that is not `tokens · columns` or on NaN or
    /// infinite inputs.
    pub fn push_with<D: Dense + ?Sized>(
        &mut self,
        dense: &D,
        x: &[f32],
        tokens: usize,
    ) -> Result<()> {
        let expected = tokens
            .checked_mul(self.columns)
            .ok_or(Error::ShapeOverflow)?;
        if x.len() != expected {
            return Err(Error::LengthMismatch {
                what: "calibration inputs (tokens × input width)",
                expected,
                found: x.len(),
            });
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "the calibration inputs",
            });
        }
        if tokens == 0 {
            return Ok(());
        }
        if let Some(g) = &mut self.gram {
            let a = Matrix::new(
                tokens,
                self.columns,
                x.iter().map(|&v| f64::from(v)).collect(),
            )?;
            dense.gram(g, &a, 1.0)?;
        }
        for row in x.chunks_exact(self.columns) {
            for (s, &v) in self.sum_squares.iter_mut().zip(row) {
                let v = f64::from(v);
                *s += v * v;
            }
            if let Some(sums) = &mut self.sums {
                for (s, &v) in sums.iter_mut().zip(row) {
                    *s += f64::from(v);
                }
            }
        }
        self.rows += tokens as u64;
        Ok(())
    }

    /// Adds another layer's statistics of the same width (another batch,
    /// thread, shard or machine). Both must keep the Gram matrix or neither.
    pub fn merge(&mut self, other: &LayerStats) -> Result<()> {
        if other.columns != self.columns {
            return Err(Error::LengthMismatch {
                what: "input width of merged layer statistics",
                expected: self.columns,
                found: other.columns,
            });
        }
        match (&mut self.gram, &other.gram) {
            (Some(a), Some(b)) => {
                for (x, y) in a.data_mut().iter_mut().zip(b.data()) {
                    *x += y;
                }
            }
            (None, None) => {}
            _ => {
                return Err(Error::InvalidArgument {
                    what: "merged layer statistics",
                    expected: "both with a Gram matrix or both without",
                });
            }
        }
        for (x, y) in self.sum_squares.iter_mut().zip(&other.sum_squares) {
            *x += y;
        }
        // Sums survive a merge only where both sides kept them.
        self.sums = match (self.sums.take(), &other.sums) {
            (Some(mut a), Some(b)) => {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
                Some(a)
            }
            _ => None,
        };
        self.rows += other.rows;
        Ok(())
    }

    /// The statistics of the columns `cols` alone (in that order): what
    /// the same inputs give a layer that reads only those columns. Fails on
    /// an index out of range or no column.
    pub fn select_columns(&self, cols: &[usize]) -> Result<LayerStats> {
        if cols.is_empty() {
            return Err(Error::InvalidArgument {
                what: "selected columns",
                expected: "at least one",
            });
        }
        if let Some(&bad) = cols.iter().find(|&&c| c >= self.columns) {
            return Err(Error::LengthMismatch {
                what: "selected column (an index below the width)",
                expected: self.columns,
                found: bad,
            });
        }
        Ok(LayerStats {
            columns: cols.len(),
            rows: self.rows,
            sums: self
                .sums
                .as_ref()
                .map(|s| cols.iter().map(|&c| s[c]).collect()),
            sum_squares: cols.iter().map(|&c| self.sum_squares[c]).collect(),
            gram: self.gram.as_ref().map(|g| g.select(cols)),
        })
    }

    /// The layer's input width.
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// Input rows (tokens) seen.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// `Σ x_j²` per input column.
    pub fn sum_squares(&self) -> &[f64] {
        &self.sum_squares
    }

    /// `Σ x_j` per input column, where known (statistics imported by
    /// [`LayerStats::from_sums`] have them only after
    /// [`LayerStats::with_column_sums`]).
    pub fn sums(&self) -> Option<&[f64]> {
        self.sums.as_deref()
    }

    /// The population variance `Σx_j²/n − (Σx_j/n)²` per input column
    /// (clamped at 0 against rounding): FLAP's fluctuation. Fails without
    /// rows or without column sums.
    pub fn column_variances(&self) -> Result<Vec<f64>> {
        self.require_rows()?;
        let sums = self.sums.as_ref().ok_or(Error::MissingInput {
            what: "column sums of the calibration inputs (add them with with_column_sums)",
        })?;
        let n = self.rows as f64;
        Ok(sums
            .iter()
            .zip(&self.sum_squares)
            .map(|(&s, &q)| {
                let mean = s / n;
                (q / n - mean * mean).max(0.0)
            })
            .collect())
    }

    /// `‖X_j‖₂` per input column: Wanda's activation norms.
    pub fn column_norms(&self) -> Vec<f64> {
        self.sum_squares.iter().map(|&s| libm::sqrt(s)).collect()
    }

    /// The Gram matrix `XᵀX`, if kept.
    pub fn gram(&self) -> Option<&Matrix> {
        self.gram.as_ref()
    }

    /// Fails unless some rows were seen.
    pub(crate) fn require_rows(&self) -> Result<()> {
        if self.rows == 0 {
            return Err(Error::MissingInput {
                what: "calibration inputs (the layer statistics saw no rows)",
            });
        }
        Ok(())
    }

    /// The Gram matrix, or an error naming the method that needs it.
    pub(crate) fn require_gram(&self) -> Result<&Matrix> {
        self.require_rows()?;
        self.gram.as_ref().ok_or(Error::MissingInput {
            what: "Gram matrix XᵀX (create the statistics with gram = true)",
        })
    }
}
