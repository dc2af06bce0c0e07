//! Matrices retained on the wgpu device ([`Dense::retain`]): a retained
//! operand is bound where it is kept instead of uploaded again, results are
//! the same bits as without it, a changed matrix is never read from a stale
//! copy, the budget is honoured, and the Fisher keeps its gradients and
//! factor on the device for every call after it is built. The counters of
//! the device are exact, so this file holds one test: nothing else runs on
//! its device meanwhile. Skipped with a printed reason when there is no
//! adapter, unless `PRUNUS_REQUIRE_GPU=1`.

use prunus_core::methods::second_order::fisher::{Fisher, FisherConfig, Path};
use prunus_core::{Dense, Matrix, ReferenceBackend, Transpose};
use prunus_testing::dense::Rng;
use prunus_tests::gpu::wgpu_backend;
use prunus_wgpu::{Counters, DEFAULT_RESIDENT_BUDGET, Offload, WgpuBackend};

/// Bytes of a matrix's f32 copy.
fn bytes(m: &Matrix) -> u64 {
    m.data().len() as u64 * 4
}

/// `row · a` on `dense`, with what the device did meanwhile.
fn product(gpu: &WgpuBackend, dense: &dyn Dense, row: &Matrix, a: &Matrix) -> (Matrix, Counters) {
    let before = gpu.counters();
    let mut c = Matrix::zeros(1, a.cols());
    dense
        .matmul(&mut c, 0.0, row, Transpose::No, a, Transpose::No, 1.0)
        .unwrap();
    (c, gpu.counters().since(before))
}

/// A symmetric positive definite `n x n` matrix's lower Cholesky factor.
fn factor(rng: &mut Rng, n: usize) -> Matrix {
    let g = rng.matrix(n + 3, n);
    let mut k = Matrix::scaled_identity(n, n as f64);
    ReferenceBackend.gram(&mut k, &g, 1.0).unwrap();
    ReferenceBackend.cholesky(&mut k).unwrap();
    k
}

#[test]
fn retained_operands_stay_on_the_device() {
    let Some(gpu) = wgpu_backend() else { return };
    let mut rng = Rng(11);
    let a = rng.matrix(300, 200);
    let row = rng.matrix(1, 300);

    // Not retained: both operands travel.
    let (plain, seen) = product(&gpu, &gpu, &row, &a);
    assert_eq!(seen.bytes_uploaded, bytes(&row) + bytes(&a));
    assert_eq!(seen.bytes_kept, 0);
    assert_eq!(seen.read_backs, 1);
    assert_eq!(seen.flops, 2 * 300 * 200);

    // Retained: only the row travels, the same bits come back, and a clone
    // (the same elements) finds the copy too.
    assert!(gpu.retain(&a).unwrap());
    assert_eq!(gpu.resident_bytes(), bytes(&a));
    for operand in [&a, &a.clone()] {
        let (kept, seen) = product(&gpu, &gpu, &row, operand);
        assert_eq!(kept, plain, "a retained operand changed the result");
        assert_eq!(seen.bytes_uploaded, bytes(&row));
        assert_eq!(seen.bytes_kept, bytes(&a));
        assert_eq!(seen.read_backs, 1);
    }

    // A changed matrix is a new matrix: uploaded, never read from the copy.
    let mut changed = a.clone();
    changed.row_mut(0)[0] += 1.0;
    let (got, seen) = product(&gpu, &gpu, &row, &changed);
    assert_eq!(seen.bytes_kept, 0);
    assert_eq!(seen.bytes_uploaded, bytes(&row) + bytes(&a));
    let mut want = Matrix::zeros(1, 200);
    ReferenceBackend
        .matmul(
            &mut want,
            0.0,
            &row,
            Transpose::No,
            &changed,
            Transpose::No,
            1.0,
        )
        .unwrap();
    let shift = got.get(0, 0) - plain.get(0, 0);
    assert!(
        (shift - row.get(0, 0)).abs() < 1e-4,
        "the change did not reach the device: {shift}"
    );
    let e = prunus_testing::dense::rel_diff(got.data(), want.data());
    assert!(e < 1e-5, "row · changed: {e:e}");

    // Retains count: two retains need two releases.
    assert!(gpu.retain(&a).unwrap());
    gpu.release(&a);
    assert_eq!(gpu.resident_bytes(), bytes(&a));
    gpu.release(&a);
    assert_eq!(gpu.resident_bytes(), 0);
    let (_, seen) = product(&gpu, &gpu, &row, &a);
    assert_eq!(seen.bytes_kept, 0, "a released copy was still used");

    // The budget: what does not fit is not kept, and the results are the same.
    let small = gpu.clone().with_resident_budget(bytes(&a) - 4);
    assert!(!small.retain(&a).unwrap());
    assert_eq!(small.resident_bytes(), 0);
    let (again, _) = product(&gpu, &small, &row, &a);
    assert_eq!(again, plain);
    let gpu = gpu.with_resident_budget(DEFAULT_RESIDENT_BUDGET);

    // Triangular solves bind a retained factor where it is.
    let l = factor(&mut rng, 70);
    let b = rng.matrix(5, 70);
    let mut plain = b.clone();
    gpu.solve_rows(&l, Transpose::Yes, &mut plain).unwrap();
    assert!(gpu.retain(&l).unwrap());
    let before = gpu.counters();
    let mut kept = b.clone();
    gpu.solve_rows(&l, Transpose::Yes, &mut kept).unwrap();
    let seen = gpu.counters().since(before);
    assert_eq!(kept, plain);
    assert_eq!(
        (seen.bytes_uploaded, seen.bytes_kept),
        (bytes(&b), bytes(&l))
    );
    gpu.release(&l);

    // Offload counts no transfer for a retained operand: a matrix-vector
    // product (half a flop per byte) stays on the host until its matrix is
    // retained, then goes to the device.
    let split = Offload::new(&gpu, &ReferenceBackend).min_flops(0.0);
    let (on_host, seen) = product(&gpu, &split, &row, &a);
    assert_eq!((split.flops().0, seen.dispatches), (0, 0));
    assert!(split.retain(&a).unwrap());
    let (on_device, seen) = product(&gpu, &split, &row, &a);
    assert_eq!(split.flops().0, 2 * 300 * 200);
    assert_eq!(on_device, plain_product(&gpu, &row, &a));
    assert!((on_device.get(0, 3) - on_host.get(0, 3)).abs() < 1e-4);
    assert_eq!(seen.bytes_uploaded, bytes(&row));
    split.release(&a);
    assert_eq!(gpu.resident_bytes(), 0);

    // The Fisher retains each block's gradients and its factor: the inverse
    // diagonal uploads only the rows it solves for, never the factor again,
    // and dropping the Fisher frees the device memory.
    let (n, d) = (90, 400);
    let grads: Vec<f32> = (0..n * d).map(|_| rng.signed() as f32 * 0.1).collect();
    let all = Offload::new(&gpu, &ReferenceBackend)
        .min_intensity(0.0)
        .min_flops(0.0);
    let config = FisherConfig::default().path(Path::Woodbury);
    let fisher = Fisher::new(&all, &grads, n, &[d], &config).unwrap();
    let (a_bytes, l_bytes) = (4 * (d * n) as u64, 4 * (n * n) as u64);
    assert_eq!(gpu.resident_bytes(), a_bytes + l_bytes);
    let before = gpu.counters();
    let diagonal = fisher.inverse_diagonal().unwrap();
    let seen = gpu.counters().since(before);
    assert_eq!(seen.bytes_uploaded, a_bytes, "the rows solved for, once");
    assert_eq!(
        seen.bytes_kept, l_bytes,
        "the factor, bound where it is kept"
    );
    let reference = Fisher::new(&ReferenceBackend, &grads, n, &[d], &config).unwrap();
    let want = reference.inverse_diagonal().unwrap();
    for (g, w) in diagonal.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4 * w.abs(), "{g} vs {w}");
    }
    // A Woodbury solve: both products with the gradients on the device,
    // which upload only their vectors.
    let v: Vec<f64> = (0..d).map(|_| rng.signed()).collect();
    let before = gpu.counters();
    let got = fisher.inverse_times(&v).unwrap();
    let seen = gpu.counters().since(before);
    assert_eq!(seen.bytes_kept, 2 * a_bytes + 2 * l_bytes);
    assert_eq!(seen.bytes_uploaded, 4 * (d + 2 * n + n) as u64);
    let want = reference.inverse_times(&v).unwrap();
    let e = prunus_testing::dense::rel_diff(&got, &want);
    assert!(e < 1e-4, "F̂⁻¹ v on the device: {e:e}");
    drop(fisher);
    assert_eq!(gpu.resident_bytes(), 0);
}

/// `row · a` on the device without anything retained.
fn plain_product(gpu: &WgpuBackend, row: &Matrix, a: &Matrix) -> Matrix {
    let copy = Matrix::new(a.rows(), a.cols(), a.data().to_vec()).unwrap();
    product(gpu, gpu, row, &copy).0
}
