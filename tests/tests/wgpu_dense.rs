//! The f32 [`Dense`] of the wgpu backend and [`Offload`] against the f64
//! reference: every kernel at sizes that cross its tiles (GEMM 64, Cholesky
//! panels 32, solve blocks 64), the errors, determinism, Offload's routing,
//! and the Fisher, the OBS update and the selections on top of them. Skipped
//! with a printed reason when there is no adapter, unless
//! `PRUNUS_REQUIRE_GPU=1`.

use prunus_core::methods::second_order::fisher::{Blocks, Fisher, FisherConfig, Path};
use prunus_core::methods::second_order::surgeon::{
    SearchConfig, cbs_select, magnitude, woodfisher,
};
use prunus_core::{Dense, Error, Matrix, ReferenceBackend, Transpose};
use prunus_testing::dense::{Rng, assert_close, rel_diff};
use prunus_tests::gpu::wgpu_backend;
use prunus_wgpu::{GemmTile, Offload, WgpuBackend};

/// Relative tolerance of one f32 kernel call on values of order one with
/// inner dimensions up to a few hundred (f32's unit roundoff is 6e-8).
const KERNEL_TOL: f64 = 1e-5;

/// Sizes on both sides of every tile edge of the kernels.
const SIZES: [usize; 7] = [1, 5, 31, 33, 64, 65, 130];
const TRANSPOSES: [Transpose; 2] = [Transpose::No, Transpose::Yes];

fn gpu() -> Option<WgpuBackend> {
    wgpu_backend()
}

#[test]
fn the_device_reports_f32_rounding() {
    let Some(gpu) = gpu() else { return };
    assert_eq!(gpu.unit_roundoff(), 2f64.powi(-24));
    assert_eq!(ReferenceBackend.unit_roundoff(), 2f64.powi(-53));
    let split = Offload::new(&gpu, &ReferenceBackend);
    assert_eq!(split.unit_roundoff(), 2f64.powi(-24));
}

#[test]
fn matmul_matches_the_reference_across_tiles() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(1);
    let mut cases = 0;
    for (m, k, n) in [
        (1, 1, 1),
        (5, 130, 3),
        (33, 17, 65),
        (64, 64, 64),
        (65, 31, 130),
        (130, 65, 1),
        (1, 70, 130),
    ] {
        for ta in TRANSPOSES {
            for tb in TRANSPOSES {
                let a = match ta {
                    Transpose::No => rng.matrix(m, k),
                    Transpose::Yes => rng.matrix(k, m),
                };
                let b = match tb {
                    Transpose::No => rng.matrix(k, n),
                    Transpose::Yes => rng.matrix(n, k),
                };
                let c0 = rng.matrix(m, n);
                for (beta, alpha) in [(0.0, 1.0), (1.0, -2.0), (0.5, 0.25)] {
                    let mut want = c0.clone();
                    ReferenceBackend
                        .matmul(&mut want, beta, &a, ta, &b, tb, alpha)
                        .unwrap();
                    let mut got = c0.clone();
                    gpu.matmul(&mut got, beta, &a, ta, &b, tb, alpha).unwrap();
                    let what = format!("matmul {m}x{k}x{n} {ta:?}/{tb:?} beta {beta}");
                    assert_close(got.data(), want.data(), KERNEL_TOL, &what);
                    let mut again = c0.clone();
                    gpu.matmul(&mut again, beta, &a, ta, &b, tb, alpha).unwrap();
                    assert_eq!(again, got, "{what}: a second run differs");
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 7 * 4 * 3);
}

#[test]
fn matmul_with_zero_beta_ignores_nan_and_empty_inner_dimension_scales() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(2);
    let (a, b) = (rng.matrix(70, 9), rng.matrix(9, 33));
    let mut want = Matrix::zeros(70, 33);
    ReferenceBackend
        .matmul(&mut want, 0.0, &a, Transpose::No, &b, Transpose::No, 1.0)
        .unwrap();
    let mut c = Matrix::new(70, 33, vec![f64::NAN; 70 * 33]).unwrap();
    gpu.matmul(&mut c, 0.0, &a, Transpose::No, &b, Transpose::No, 1.0)
        .unwrap();
    assert_close(c.data(), want.data(), KERNEL_TOL, "beta 0 over NaN");
    // k = 0: c ← beta c.
    let (a, b) = (Matrix::zeros(3, 0), Matrix::zeros(0, 2));
    let mut c = Matrix::new(3, 2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    gpu.matmul(&mut c, 0.5, &a, Transpose::No, &b, Transpose::No, 1.0)
        .unwrap();
    assert_eq!(c.data(), &[0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
}

#[test]
fn gram_matches_the_reference_and_is_exactly_symmetric() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(3);
    for rows in [1, 33, 130] {
        for n in SIZES {
            let a = rng.matrix(rows, n);
            let s = rng.matrix(n, n);
            let c0 = Matrix::new(
                n,
                n,
                (0..n * n)
                    .map(|e| s.get(e / n, e % n) + s.get(e % n, e / n))
                    .collect(),
            )
            .unwrap();
            for alpha in [1.0, -0.5] {
                let mut want = c0.clone();
                ReferenceBackend.gram(&mut want, &a, alpha).unwrap();
                let mut got = c0.clone();
                gpu.gram(&mut got, &a, alpha).unwrap();
                let what = format!("gram {rows}x{n} alpha {alpha}");
                assert_close(got.data(), want.data(), KERNEL_TOL, &what);
                assert_eq!(got, got.transpose(), "{what}: not symmetric");
            }
        }
    }
}

/// A symmetric positive definite matrix with eigenvalues in about [0.5, 4].
fn random_spd(rng: &mut Rng, n: usize) -> Matrix {
    let b = rng.matrix(n, n);
    let mut a = Matrix::zeros(n, n);
    ReferenceBackend
        .matmul(
            &mut a,
            0.0,
            &b,
            Transpose::Yes,
            &b,
            Transpose::No,
            1.0 / n as f64,
        )
        .unwrap();
    a.add_diagonal(0.5);
    a
}

#[test]
fn cholesky_matches_the_reference_across_panels() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(4);
    for n in [1, 5, 31, 32, 33, 64, 65, 97, 130] {
        let a = random_spd(&mut rng, n);
        let mut want = a.clone();
        ReferenceBackend.cholesky(&mut want).unwrap();
        let mut got = a.clone();
        gpu.cholesky(&mut got).unwrap();
        let what = format!("cholesky {n}x{n}");
        for i in 0..n {
            for j in i + 1..n {
                assert_eq!(got.get(i, j), 0.0, "{what}: upper ({i}, {j}) not zeroed");
            }
        }
        assert_close(got.data(), want.data(), KERNEL_TOL, &what);
        let mut again = a.clone();
        gpu.cholesky(&mut again).unwrap();
        assert_eq!(again, got, "{what}: a second run differs");
    }
}

#[test]
fn cholesky_reports_the_first_bad_pivot_in_any_panel() {
    let Some(gpu) = gpu() else { return };
    let m = |n: usize, data: &[f64]| Matrix::new(n, n, data.to_vec()).unwrap();
    let mut cases = vec![
        ("minus identity", Matrix::scaled_identity(3, -1.0), 0),
        ("zero", Matrix::zeros(2, 2), 0),
        ("indefinite 2x2", m(2, &[1.0, 2.0, 2.0, 1.0]), 1),
        ("NaN at (0, 0)", m(2, &[f64::NAN, 0.0, 0.0, 1.0]), 0),
    ];
    // A failure in a later panel, and the first of two.
    for (n, bad) in [(70, vec![40]), (100, vec![64, 90]), (40, vec![31, 39])] {
        let mut a = Matrix::scaled_identity(n, 2.0);
        for &q in &bad {
            a.row_mut(q)[q] = -1.0;
        }
        cases.push(("diagonal with negatives", a, bad[0]));
    }
    // A NaN off the diagonal reaches the pivot of its row.
    let mut a = Matrix::scaled_identity(50, 1.0);
    a.row_mut(45)[3] = f64::NAN;
    a.row_mut(3)[45] = f64::NAN;
    cases.push(("NaN at (45, 3)", a, 45));
    for (what, a, pivot) in cases {
        let mut l = a.clone();
        match gpu.cholesky(&mut l) {
            Err(Error::NotPositiveDefinite { pivot: got }) => {
                assert_eq!(got, pivot, "{what}: pivot")
            }
            other => panic!("{what}: expected NotPositiveDefinite, got {other:?}"),
        }
        let bits = |m: &Matrix| m.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&l),
            bits(&a),
            "{what}: a failed cholesky wrote its input"
        );
    }
}

/// Both GEMM kernels, forced, on every call that runs one: products at
/// sizes around the 128 tile in every transpose, Gram matrices, the
/// Cholesky trailing updates (lower tiles only) and the solve updates.
#[test]
fn both_gemm_tiles_match_the_reference() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(12);
    let kernels = [GemmTile::Small, GemmTile::Large];
    let mut same_bits = 0;
    let mut compared = 0;
    for (m, k, n) in [(1, 3, 1), (127, 20, 129), (129, 130, 127), (257, 17, 200)] {
        for ta in TRANSPOSES {
            for tb in TRANSPOSES {
                let a = match ta {
                    Transpose::No => rng.matrix(m, k),
                    Transpose::Yes => rng.matrix(k, m),
                };
                let b = match tb {
                    Transpose::No => rng.matrix(k, n),
                    Transpose::Yes => rng.matrix(n, k),
                };
                let c0 = rng.matrix(m, n);
                let mut want = c0.clone();
                ReferenceBackend
                    .matmul(&mut want, 0.5, &a, ta, &b, tb, -1.5)
                    .unwrap();
                let got: Vec<Matrix> = kernels
                    .iter()
                    .map(|&tile| {
                        let mut c = c0.clone();
                        gpu.clone()
                            .with_gemm_tile(tile)
                            .matmul(&mut c, 0.5, &a, ta, &b, tb, -1.5)
                            .unwrap();
                        c
                    })
                    .collect();
                for (c, tile) in got.iter().zip(kernels) {
                    let what = format!("{tile:?} matmul {m}x{k}x{n} {ta:?} {tb:?}");
                    assert_close(c.data(), want.data(), KERNEL_TOL, &what);
                }
                compared += 1;
                same_bits += usize::from(got[0] == got[1]);
            }
        }
    }
    eprintln!("the two GEMM tiles gave the same bits in {same_bits} of {compared} products");
    for tile in kernels {
        let dense = gpu.clone().with_gemm_tile(tile);
        let a = rng.matrix(40, 260);
        let mut want = Matrix::scaled_identity(260, 2.0);
        ReferenceBackend.gram(&mut want, &a, 0.5).unwrap();
        let mut got = Matrix::scaled_identity(260, 2.0);
        dense.gram(&mut got, &a, 0.5).unwrap();
        assert_close(
            got.data(),
            want.data(),
            KERNEL_TOL,
            &format!("{tile:?} gram"),
        );

        let spd = random_spd(&mut rng, 290);
        let mut want = spd.clone();
        ReferenceBackend.cholesky(&mut want).unwrap();
        let mut got = spd.clone();
        dense.cholesky(&mut got).unwrap();
        assert_close(
            got.data(),
            want.data(),
            KERNEL_TOL,
            &format!("{tile:?} cholesky"),
        );

        let b = rng.matrix(200, 290);
        for t in TRANSPOSES {
            let mut want_x = b.clone();
            ReferenceBackend.solve_rows(&want, t, &mut want_x).unwrap();
            let mut got_x = b.clone();
            dense.solve_rows(&want, t, &mut got_x).unwrap();
            let what = format!("{tile:?} solve_rows {t:?}");
            assert_close(got_x.data(), want_x.data(), KERNEL_TOL, &what);
        }
    }
}

#[test]
fn solve_rows_matches_the_reference_across_blocks() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(5);
    for n in SIZES {
        let mut l = random_spd(&mut rng, n);
        ReferenceBackend.cholesky(&mut l).unwrap();
        for rows in [1, 7, 300] {
            let b = rng.matrix(rows, n);
            for t in TRANSPOSES {
                let mut want = b.clone();
                ReferenceBackend.solve_rows(&l, t, &mut want).unwrap();
                let mut got = b.clone();
                gpu.solve_rows(&l, t, &mut got).unwrap();
                let what = format!("solve_rows {t:?} {n}x{n}, {rows} rows");
                assert_close(got.data(), want.data(), KERNEL_TOL, &what);
            }
        }
    }
}

#[test]
fn bad_input_is_an_error_and_writes_nothing() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(6);
    let a = rng.matrix(2, 3);
    let c0 = rng.matrix(2, 2);
    let mut c = c0.clone();
    assert!(matches!(
        gpu.matmul(&mut c, 1.0, &a, Transpose::No, &a, Transpose::No, 1.0),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        gpu.gram(&mut c, &a, 1.0),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut rect = a.clone();
    assert!(matches!(
        gpu.cholesky(&mut rect),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut rows = rng.matrix(4, 2);
    assert!(matches!(
        gpu.solve_rows(&Matrix::scaled_identity(3, 1.0), Transpose::No, &mut rows),
        Err(Error::ShapeMismatch { .. })
    ));
    // f32 cannot hold 1e300: an error, not an infinity.
    let huge = Matrix::new(2, 2, vec![1.0, 0.0, 0.0, 1e300]).unwrap();
    assert!(matches!(
        gpu.matmul(&mut c, 0.0, &huge, Transpose::No, &huge, Transpose::No, 1.0),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        gpu.matmul(&mut c, 0.0, &c0, Transpose::No, &c0, Transpose::No, 1e300),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(c, c0, "a failed call wrote its output");
}

/// Offload keeps small and low-intensity calls on the host (bit for bit the
/// host's results) and sends compute-bound ones to the device (bit for bit
/// the device's).
#[test]
fn offload_routes_by_arithmetic_intensity() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(7);
    let a = rng.matrix(300, 200);
    let row = rng.matrix(1, 300);
    let host_only = Offload::new(&gpu, &ReferenceBackend);
    // A row vector times a matrix: half a flop per byte.
    let mut want = Matrix::zeros(1, 200);
    ReferenceBackend
        .matmul(&mut want, 0.0, &row, Transpose::No, &a, Transpose::No, 1.0)
        .unwrap();
    let mut got = Matrix::zeros(1, 200);
    host_only
        .matmul(&mut got, 0.0, &row, Transpose::No, &a, Transpose::No, 1.0)
        .unwrap();
    assert_eq!(got, want, "a matrix-vector product left the host");
    assert_eq!(host_only.flops(), (0, 2 * 300 * 200));

    // With no thresholds every call goes to the device.
    let all = Offload::new(&gpu, &ReferenceBackend)
        .min_intensity(0.0)
        .min_flops(0.0);
    let mut on_device = Matrix::zeros(1, 200);
    gpu.matmul(
        &mut on_device,
        0.0,
        &row,
        Transpose::No,
        &a,
        Transpose::No,
        1.0,
    )
    .unwrap();
    let mut got = Matrix::zeros(1, 200);
    all.matmul(&mut got, 0.0, &row, Transpose::No, &a, Transpose::No, 1.0)
        .unwrap();
    assert_eq!(got, on_device);
    let mut k = Matrix::scaled_identity(200, 1.0);
    all.gram(&mut k, &a, 1.0).unwrap();
    let mut k_dev = Matrix::scaled_identity(200, 1.0);
    gpu.gram(&mut k_dev, &a, 1.0).unwrap();
    assert_eq!(k, k_dev);
    assert_eq!(all.flops().1, 0, "a call stayed on the host");

    // A Gram product of 300 x 200 at the default thresholds: 2.4e7 flops,
    // below MIN_FLOPS, so it stays on the host; at 2,000 rows it goes.
    let split = Offload::new(&gpu, &ReferenceBackend);
    let mut k = Matrix::zeros(200, 200);
    split.gram(&mut k, &a, 1.0).unwrap();
    assert_eq!(split.flops().0, 0);
    let tall = rng.matrix(2_000, 200);
    let mut k = Matrix::zeros(200, 200);
    split.gram(&mut k, &tall, 1.0).unwrap();
    assert_eq!(split.flops().0, 2 * 2_000 * 200 * 200);
}

/// Per-sample gradients of a small MLP-like problem, and weights.
struct Problem {
    n: usize,
    sizes: Vec<usize>,
    grads: Vec<f32>,
    theta: Vec<f64>,
}

impl Problem {
    fn random(seed: u64, n: usize, sizes: &[usize]) -> Problem {
        let mut rng = Rng(seed);
        let d: usize = sizes.iter().sum();
        let scales: Vec<f64> = (0..d).map(|_| 0.05 + rng.signed().abs()).collect();
        let grads = (0..n * d)
            .map(|e| (rng.signed() * scales[e % d] * 0.2) as f32)
            .collect();
        let theta = (0..d).map(|_| rng.signed()).collect();
        Problem {
            n,
            sizes: sizes.to_vec(),
            grads,
            theta,
        }
    }

    fn fisher<'d, D: Dense + ?Sized>(&self, dense: &'d D, config: &FisherConfig) -> Fisher<'d, D> {
        Fisher::new(dense, &self.grads, self.n, &self.sizes, config).unwrap()
    }
}

/// The Fisher on the device (every call offloaded) against the f64
/// reference, on both paths and with blocks: the inverse diagonal, products,
/// both updates, and the masks of MP, WF-S and CBS-S. Damping 1e-3 as in the
/// CBS protocol, with `F_qq / λ` up to about 15 (printed).
#[test]
fn fisher_on_the_device_matches_the_reference() {
    let Some(gpu) = gpu() else { return };
    let all = Offload::new(&gpu, &ReferenceBackend)
        .min_intensity(0.0)
        .min_flops(0.0);
    let problem = Problem::random(8, 150, &[120, 70]);
    let sparsity_k = 133;
    let mut worst = [0.0f64; 5];
    for (blocks, path) in [
        (Blocks::Whole, Path::Woodbury),
        (Blocks::Whole, Path::Explicit),
        (Blocks::Parameters, Path::Auto),
        (Blocks::Size(40), Path::Auto),
    ] {
        let config = FisherConfig::default()
            .damping(1e-3)
            .blocks(blocks)
            .path(path);
        let want = problem.fisher(&ReferenceBackend, &config);
        let got = problem.fisher(&all, &config);
        let what = format!("{blocks:?} {path:?}");
        let ratio = want.fisher_diagonal().into_iter().fold(0.0, f64::max) / want.damping();
        worst[4] = worst[4].max(ratio);
        let diag_want = want.inverse_diagonal().unwrap();
        let diag_got = got.inverse_diagonal().unwrap();
        let e = rel_diff(&diag_got, &diag_want);
        worst[0] = worst[0].max(e);
        assert!(e < 1e-4, "{what}: inverse_diagonal {e:e}");

        let pruned_want = woodfisher(&problem.theta, &diag_want, sparsity_k).unwrap();
        let pruned_got = woodfisher(&problem.theta, &diag_got, sparsity_k).unwrap();
        assert_eq!(pruned_got, pruned_want, "{what}: WF-S mask");
        let mp = magnitude(&problem.theta, sparsity_k).unwrap();

        let e = rel_diff(
            &got.obs_update(&problem.theta, &mp).unwrap(),
            &want.obs_update(&problem.theta, &mp).unwrap(),
        );
        worst[1] = worst[1].max(e);
        assert!(e < 1e-3, "{what}: obs_update {e:e}");
        let e = rel_diff(
            &got.woodfisher_update(&problem.theta, &mp, &diag_got)
                .unwrap(),
            &want
                .woodfisher_update(&problem.theta, &mp, &diag_want)
                .unwrap(),
        );
        worst[2] = worst[2].max(e);
        assert!(e < 1e-3, "{what}: woodfisher_update {e:e}");

        // CBS-S, its true loss standing in by the reference objective: the
        // device's choice is as good as the reference's.
        let search = SearchConfig::default().trials(3).patience(3);
        let mut loss = |set: &[bool]| want.objective(&problem.theta, set);
        let on_device = cbs_select(&got, &problem.theta, sparsity_k, &search, &mut loss).unwrap();
        let mut loss = |set: &[bool]| want.objective(&problem.theta, set);
        let reference = cbs_select(&want, &problem.theta, sparsity_k, &search, &mut loss).unwrap();
        let (a, b) = (
            want.objective(&problem.theta, &on_device.pruned).unwrap(),
            reference.objective,
        );
        worst[3] = worst[3].max((a - b) / b);
        assert!(
            a <= b * (1.0 + 1e-3),
            "{what}: CBS-S objective {a} against {b}"
        );
    }
    eprintln!(
        "f32 device against f64: inverse diagonal {:.1e}, OBS update {:.1e}, WF update {:.1e}, \
         CBS-S objective {:+.1e}, at F_qq / λ up to {:.1}",
        worst[0], worst[1], worst[2], worst[3], worst[4]
    );
}
