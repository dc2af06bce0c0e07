//! How a framework's stored tensors map to core's parameter view.
//!
//! Core reads every weight as `[out, in, ...]`: the layer's units (neurons,
//! filters) are the rows of its matrix view, and N:M groups run along the
//! input dimension. candle and PyTorch store linear weights that way; burn's
//! `Linear` stores `[in, out]`, its units in the columns. A [`Stored`]
//! tensor says which ([`Units`]) and converts between the two layouts, so
//! masks, scores and gradients always reach core in its view and the
//! framework in its own.

use prunus_core::host::{Parameter, ParameterKind};
use prunus_core::{Error, HasShape, Mask, Result, Shape};

/// Which axis of a stored tensor holds its layer's units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Units {
    /// The first axis, as core's view: `[out, in]`, `[out, in, kh, kw]`
    /// (candle, PyTorch, burn's convolutions), and every vector.
    #[default]
    Rows,
    /// The second axis of a matrix stored `[in, out]` (burn's `Linear`):
    /// the view is its transpose.
    Columns,
}

/// A framework's tensor as it is stored: its name, dims and where its
/// units are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The parameter's name or path, e.g. `fc1.weight`.
    pub name: String,
    /// Its dims as the framework stores them.
    pub dims: Vec<usize>,
    /// Which axis holds the units.
    pub units: Units,
}

impl Stored {
    /// A stored tensor; [`Units::Columns`] needs a matrix (rank 2).
    pub fn new(name: impl Into<String>, dims: &[usize], units: Units) -> Result<Stored> {
        let stored = Stored {
            name: name.into(),
            dims: dims.to_vec(),
            units,
        };
        stored.view_shape()?;
        Ok(stored)
    }

    /// The number of values.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// The shape of core's view: the stored dims, or the matrix's transpose
    /// when its units are columns.
    pub fn view_shape(&self) -> Result<Shape> {
        match (self.units, self.dims.as_slice()) {
            (Units::Rows, dims) => Shape::new(dims),
            (Units::Columns, &[rows, cols]) => Shape::matrix(cols, rows),
            (Units::Columns, _) => Err(Error::InvalidArgument {
                what: "units in columns",
                expected: "a matrix (rank 2) stored [in, out]",
            }),
        }
    }

    /// The stored values in core's view (a copy; transposed when the units
    /// are columns).
    pub fn to_view(&self, stored: &[f32]) -> Result<Vec<f32>> {
        self.check_len(stored.len())?;
        Ok(match (self.units, self.dims.as_slice()) {
            (Units::Columns, &[rows, cols]) => transpose(stored, rows, cols),
            _ => stored.to_vec(),
        })
    }

    /// Values in core's view back in the stored layout.
    pub fn from_view(&self, view: &[f32]) -> Result<Vec<f32>> {
        self.check_len(view.len())?;
        Ok(match (self.units, self.dims.as_slice()) {
            (Units::Columns, &[rows, cols]) => transpose(view, cols, rows),
            _ => view.to_vec(),
        })
    }

    /// A keep-mask of the view as 0/1 factors in the stored layout: what a
    /// framework multiplies the tensor by to zero its pruned entries.
    pub fn factors(&self, mask: &Mask) -> Result<Vec<f32>> {
        prunus_core::contract::check::same_shape("mask", &self.view_shape()?, mask.shape())?;
        let mut view = vec![0.0f32; self.numel()];
        for i in mask.kept() {
            view[i] = 1.0;
        }
        self.from_view(&view)
    }

    fn check_len(&self, found: usize) -> Result<()> {
        prunus_core::contract::check::same_len("tensor values", self.numel(), found)
    }

    /// The layer part of the name: everything before the last `.`.
    fn layer_key(&self) -> &str {
        self.name.rsplit_once('.').map_or("", |(layer, _)| layer)
    }

    fn is_bias(&self) -> bool {
        self.dims.len() == 1 && self.name.rsplit('.').next() == Some("bias")
    }
}

fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// The host parameters of `stored`, in order: a vector whose last name
/// segment is `bias` is its layer's [`ParameterKind::Bias`], everything
/// else a [`ParameterKind::Weight`]; tensors whose names share everything
/// before the last `.` share a layer (`fc1.weight`, `fc1.bias`), numbered in
/// order of first appearance. `prunable` says which may lose entries;
/// without it, as in the lab's networks, every weight of rank 2 or more
/// but the last one (the classifier) may. Fails on duplicate names and on
/// empty tensors.
pub fn parameters(
    stored: &[Stored],
    prunable: Option<&dyn Fn(&Stored) -> bool>,
) -> Result<Vec<Parameter>> {
    let classifier = stored.iter().rposition(|s| s.dims.len() >= 2);
    let default = |s: &Stored| s.dims.len() >= 2;
    let mut layers: Vec<&str> = Vec::new();
    let mut out = Vec::with_capacity(stored.len());
    for (i, s) in stored.iter().enumerate() {
        if stored[..i].iter().any(|t| t.name == s.name) {
            return Err(Error::DuplicateLayer {
                name: s.name.clone(),
            });
        }
        if s.numel() == 0 {
            return Err(Error::EmptyTensor {
                layer: s.name.clone(),
            });
        }
        let key = s.layer_key();
        let layer = match layers.iter().position(|&l| l == key) {
            Some(l) => l,
            None => {
                layers.push(key);
                layers.len() - 1
            }
        };
        out.push(Parameter {
            name: s.name.clone(),
            shape: s.view_shape()?,
            kind: if s.is_bias() {
                ParameterKind::Bias
            } else {
                ParameterKind::Weight
            },
            layer,
            prunable: match prunable {
                Some(rule) => rule(s),
                None => default(s) && Some(i) != classifier,
            },
            coupling: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_the_transpose_both_ways() {
        let s = Stored::new("fc.weight", &[2, 3], Units::Columns).unwrap();
        assert_eq!(s.view_shape().unwrap().dims(), [3, 2]);
        let stored = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let view = s.to_view(&stored).unwrap();
        assert_eq!(view, [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(s.from_view(&view).unwrap(), stored);
        let mask = Mask::from_fn(Shape::matrix(3, 2).unwrap(), |i| i != 1);
        assert_eq!(s.factors(&mask).unwrap(), [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
        assert!(Stored::new("conv.weight", &[2, 3, 3, 3], Units::Columns).is_err());
        assert!(s.to_view(&[1.0]).is_err());
    }

    #[test]
    fn names_give_layers_and_kinds() {
        let st = |n: &str, d: &[usize]| Stored::new(n, d, Units::Rows).unwrap();
        let stored = [
            st("fc1.weight", &[4, 3]),
            st("fc1.bias", &[4]),
            st("norm.weight", &[4]),
            st("fc2.weight", &[2, 4]),
        ];
        let p = parameters(&stored, None).unwrap();
        let kinds: Vec<_> = p.iter().map(|p| (p.kind, p.layer, p.prunable)).collect();
        assert_eq!(
            kinds,
            [
                (ParameterKind::Weight, 0, true),
                (ParameterKind::Bias, 0, false),
                (ParameterKind::Weight, 1, false),
                (ParameterKind::Weight, 2, false),
            ]
        );
        let all = parameters(&stored, Some(&|s: &Stored| s.dims.len() >= 2)).unwrap();
        assert!(all[3].prunable && !all[2].prunable);
        let twice = [st("a.weight", &[2, 2]), st("a.weight", &[2, 2])];
        assert!(matches!(
            parameters(&twice, None),
            Err(Error::DuplicateLayer { .. })
        ));
    }
}
