//! Prune `ndarray` arrays in place.

use ndarray::{ArrayViewMut, Dimension};
use prunus_core::{Mask, PruneConfig, Shape};
use prunus_cpu::CpuBackend;

use crate::error::{Error, Result};
use crate::framework::prune_slices;

/// Prunes `arrays` in place as `config` asks, zeroing the pruned weights, and
/// returns their masks. `names[i]` names `arrays[i]` (for guards, budgets and
/// errors); `previous`, when given, holds one earlier mask per array, which
/// the new masks never revive.
///
/// The arrays are used in place without a copy; they must be contiguous in
/// row-major (standard) order, or the call fails with
/// [`Error::NotContiguous`] before anything is changed. Nothing is written
/// unless the whole selection succeeded.
///
/// ```
/// use ndarray::array;
/// use prunus_adapters::ndarray::prune_arrays;
/// use prunus_core::PruneConfig;
/// use prunus_cpu::{CpuBackend, Par};
///
/// let backend = CpuBackend::new(Par::Seq)?;
/// let mut a = array![[0.5f32, -0.1], [0.3, 0.05]];
/// let mut b = array![-2.0f32, 0.2];
/// let masks = prune_arrays(
///     &backend,
///     &["fc1", "fc2"],
///     &mut [a.view_mut().into_dyn(), b.view_mut().into_dyn()],
///     None,
///     &PruneConfig::new(0.5),
/// )?;
/// assert_eq!(a, array![[0.5, 0.0], [0.3, 0.0]]);
/// assert_eq!(b, array![-2.0, 0.0]);
/// assert_eq!(masks[1].count_pruned(), 1);
/// # Ok::<(), prunus_adapters::Error>(())
/// ```
pub fn prune_arrays<'a, D: Dimension>(
    backend: &CpuBackend<'a>,
    names: &[&str],
    arrays: &'a mut [ArrayViewMut<'_, f32, D>],
    previous: Option<&[Mask]>,
    config: &PruneConfig,
) -> Result<Vec<Mask>> {
    let mut shapes = Vec::with_capacity(arrays.len());
    let mut slices = Vec::with_capacity(arrays.len());
    for (i, array) in arrays.iter_mut().enumerate() {
        shapes.push(Shape::new(array.shape())?);
        let layer = names
            .get(i)
            .map_or_else(|| format!("array {i}"), |n| n.to_string());
        slices.push(array.as_slice_mut().ok_or(Error::NotContiguous { layer })?);
    }
    prune_slices(backend, names, &shapes, slices, previous, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array4, array};
    use prunus_core::{Granularity, NofM};
    use prunus_cpu::Par;

    #[test]
    fn prunes_in_place_globally_and_keeps_earlier_masks() {
        let b = CpuBackend::new(Par::Rayon(2)).unwrap();
        let mut w = Array2::from_shape_fn((4, 8), |(i, j)| (i * 8 + j) as f32 - 16.0);
        let first = prune_arrays(
            &b,
            &["w"],
            &mut [w.view_mut()],
            None,
            &PruneConfig::new(0.25),
        )
        .unwrap();
        assert_eq!(w.iter().filter(|&&x| x == 0.0).count(), 8);
        let second = prune_arrays(
            &b,
            &["w"],
            &mut [w.view_mut()],
            Some(&first),
            &PruneConfig::new(0.5),
        )
        .unwrap();
        assert!(second[0].is_subset_of(&first[0]).unwrap());
        assert_eq!(second[0].count_pruned(), 16);
        // The 16 smallest magnitudes of -16..16 are zero now: |x| <= 8, ties
        // to the lowest index (-8 before 8).
        let expected: Vec<f32> = (0..32)
            .map(|i| i as f32 - 16.0)
            .map(|x| if x.abs() < 8.0 || x == -8.0 { 0.0 } else { x })
            .collect();
        assert_eq!(w.iter().copied().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn conv_kernels_take_n_of_m() {
        let b = CpuBackend::new(Par::Seq).unwrap();
        let mut k = Array4::from_shape_fn((2, 2, 2, 2), |(o, i, y, x)| {
            (o + 2 * i + 3 * y + 5 * x) as f32
        });
        let cfg = PruneConfig::new(0.0).granularity(Granularity::NofM(NofM::TWO_FOUR));
        let m = prune_arrays(&b, &["conv"], &mut [k.view_mut()], None, &cfg).unwrap();
        assert!(m[0].satisfies(NofM::TWO_FOUR).unwrap());
        assert_eq!(k.iter().filter(|&&x| x == 0.0).count(), 8);
    }

    #[test]
    fn rejects_non_contiguous_and_leaves_data_alone() {
        let b = CpuBackend::new(Par::Seq).unwrap();
        let mut w = array![[1.0f32, 2.0], [3.0, 4.0]];
        let before = w.clone();
        let t = w.view_mut().reversed_axes();
        let err = prune_arrays(&b, &["w"], &mut [t], None, &PruneConfig::new(0.5)).unwrap_err();
        assert_eq!(err, Error::NotContiguous { layer: "w".into() });
        assert_eq!(w, before);
    }

    #[test]
    fn errors_change_nothing() {
        let b = CpuBackend::new(Par::Seq).unwrap();
        let mut w = array![[1.0f32, f32::NAN], [3.0, 4.0]];
        let err = prune_arrays(
            &b,
            &["w"],
            &mut [w.view_mut()],
            None,
            &PruneConfig::new(0.5),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            Error::Core(prunus_core::Error::NanScores { count: 1, .. })
        ));
        assert_eq!(w[[0, 0]], 1.0);
        assert!(
            prune_arrays(
                &b,
                &["a", "b"],
                &mut [w.view_mut()],
                None,
                &PruneConfig::new(0.5)
            )
            .is_err()
        );
    }
}
