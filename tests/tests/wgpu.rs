//! The conformance suite on the wgpu backend: with the device's own window
//! size, and with windows of 2048 elements so that every multi-window path
//! (bindings over the storage limit) runs on small tensors too. Skipped with
//! a printed reason when there is no adapter, unless `PRUNUS_REQUIRE_GPU=1`.

use prunus_tests::gpu::{wgpu_backend, wgpu_small_windows};

prunus_testing::conformance_tests!(wgpu_whole, maybe: wgpu_backend());
prunus_testing::conformance_tests!(wgpu_windows, maybe: wgpu_small_windows());

use prunus_core::contract::histogram::TensorCut;
use prunus_core::contract::key::order_key;
use prunus_core::{Backend, KeyRule, NofM, ReferenceBackend, ScoreView, Shape};

/// Ties that straddle windows, tie blocks and inputs, with every partial
/// budget: the first `ties` tied elements of the sequence are pruned, on the
/// GPU as on the reference.
#[test]
fn tie_budgets_cross_windows_and_inputs() {
    let Some(gpu) = wgpu_small_windows() else {
        return;
    };
    // 0.5 everywhere except a few larger values; lengths not multiples of 32.
    let sizes = [5_000usize, 1, 3_333];
    let data: Vec<Vec<f32>> = sizes
        .iter()
        .enumerate()
        .map(|(t, &n)| {
            (0..n)
                .map(|i| if (i * 7 + t) % 13 == 0 { 0.75 } else { 0.5 })
                .collect()
        })
        .collect();
    let shapes: Vec<Shape> = sizes.iter().map(|&n| Shape::vector(n)).collect();
    let equal: u64 = data.iter().flatten().filter(|&&x| x == 0.5).count() as u64;
    let key = order_key(0.5);
    for ties in [
        1,
        31,
        1024,
        2047,
        2048,
        4999,
        5000,
        5001,
        equal - 1,
        equal,
        equal + 7,
    ] {
        let cut = TensorCut { key, ties };
        let g: Vec<_> = data
            .iter()
            .zip(&shapes)
            .map(|(d, s)| gpu.upload(d, s).unwrap())
            .collect();
        let r: Vec<_> = data
            .iter()
            .zip(&shapes)
            .map(|(d, s)| ReferenceBackend.upload(d, s).unwrap())
            .collect();
        let gv: Vec<_> = g.iter().map(ScoreView::new).collect();
        let rv: Vec<_> = r.iter().map(ScoreView::new).collect();
        let got = gpu.threshold_masks(&gv, KeyRule::IDENTITY, cut).unwrap();
        let want = ReferenceBackend
            .threshold_masks(&rv, KeyRule::IDENTITY, cut)
            .unwrap();
        assert_eq!(got.ties, want.ties, "ties {ties}");
        assert_eq!(
            gpu.download_masks(got.masks).unwrap(),
            want.masks,
            "ties {ties}"
        );
    }
}

/// N:M groups whose size does not divide the window (5 and 3 elements)
/// still never straddle one: windows start at group boundaries.
#[test]
fn n_of_m_groups_never_straddle_windows() {
    let Some(gpu) = wgpu_small_windows() else {
        return;
    };
    for (n, m) in [(3, 5), (1, 3), (2, 4)] {
        let shape = Shape::matrix(41, m * 97).unwrap();
        let data: Vec<f32> = (0..shape.numel())
            .map(|i| ((i * 2_654_435_761usize) % 1000) as f32 / 7.0 - 60.0)
            .collect();
        let g = gpu.upload(&data, &shape).unwrap();
        let r = ReferenceBackend.upload(&data, &shape).unwrap();
        let pattern = NofM::new(n, m).unwrap();
        let got = gpu
            .n_of_m_masks(&[ScoreView::new(&g)], KeyRule::ABS, pattern)
            .unwrap();
        let want = ReferenceBackend
            .n_of_m_masks(&[ScoreView::new(&r)], KeyRule::ABS, pattern)
            .unwrap();
        assert_eq!(
            gpu.download_masks(got.masks).unwrap(),
            want.masks,
            "{n}:{m}"
        );
    }
}

/// A request the device cannot hold is an error naming the limit, not a
/// panic or a device loss.
#[test]
fn oversized_requests_are_errors() {
    let Some(gpu) = wgpu_backend() else {
        return;
    };
    let huge = Shape::vector(usize::MAX / 8);
    let e = gpu.random_uniform(&huge, 1, 0).unwrap_err();
    assert!(e.to_string().contains("exceeds"), "{e}");
}

/// Scores stay on the device: a selection of n scores reads back at most the
/// packed masks (n / 8 bytes), a 1/64 key sample (n / 16 bytes) and 2 MiB of
/// histograms, counts and candidates: far less than the 4 n bytes of the
/// scores, in every path.
#[test]
fn selection_never_reads_the_scores_back() {
    use prunus_core::prune;
    use prunus_core::{Granularity, Grouping, Layer, PruneConfig, SelectionPlan};
    if wgpu_backend().is_none() {
        return;
    }
    // A device of its own: the shared one's byte count moves with the
    // tests running beside this one.
    let gpu = prunus_wgpu::WgpuBackend::new().expect("a second device");
    let n = 1 << 21;
    // Continuous scores (the sampled one-pass path) and two-level scores
    // (histogram and tie paths).
    let continuous: Vec<f32> = (0..n).map(|i| ((i * 7919) % n) as f32 - 1e6).collect();
    let two_level: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
    for (what, data) in [("continuous", continuous), ("two-level", two_level)] {
        let shape = Shape::matrix(1024, n / 1024).unwrap();
        let w = gpu.upload(&data, &shape).unwrap();
        for (granularity, plan) in [
            (Granularity::Unstructured, SelectionPlan::Gather),
            (Granularity::Unstructured, SelectionPlan::Histograms),
            (
                Granularity::Groups(Grouping::Columns),
                SelectionPlan::Gather,
            ),
        ] {
            let gpu = gpu.clone().with_selection_plan(plan);
            let config = PruneConfig::new(0.7).granularity(granularity);
            let before = gpu.bytes_read_back();
            let masks = prune(&gpu, &[Layer::new("w", &w)], &config).unwrap();
            let read = gpu.bytes_read_back() - before;
            assert_eq!(masks[0].len(), n);
            let most = n as u64 / 8 + n as u64 / 16 + (2 << 20);
            assert!(
                read <= most,
                "{what} {granularity:?} {plan:?}: {read} bytes read back for {n} scores"
            );
        }
    }
}

/// The subnormal probe tells the truth: where it says the device keeps
/// subnormals, sums and products with subnormal operands or results match
/// the host bit for bit; where it says they are flushed, some differ.
#[test]
fn subnormal_probe_matches_the_device() {
    use prunus_core::BinaryOp;
    let Some(gpu) = wgpu_backend() else {
        return;
    };
    let tiny = f32::from_bits(1);
    let a = [tiny, 3.0 * tiny, f32::MIN_POSITIVE, -2.5e-39, 1e-20, 1.5];
    let b = [tiny, -tiny, -f32::MIN_POSITIVE / 4.0, 1e-39, 1e-20, tiny];
    let shape = Shape::vector(a.len());
    let (ta, tb) = (
        gpu.upload(&a, &shape).unwrap(),
        gpu.upload(&b, &shape).unwrap(),
    );
    let mut same = true;
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul] {
        let got = gpu.download(&gpu.binary(op, &ta, &tb).unwrap()).unwrap();
        for i in 0..a.len() {
            same &= got[i].to_bits() == op.apply(a[i], b[i]).to_bits();
        }
    }
    assert_eq!(same, !gpu.flushes_subnormals(), "{gpu:?}");
}

/// A checkpoint pruned to 2:4 on the GPU (magnitude and random scores)
/// is the file the CPU backend writes, byte for byte.
#[test]
fn checkpoint_patterns_match_the_cpu() {
    use prunus_adapters::safetensors::{Checkpoint, Request, prune_to_writer};
    use prunus_core::{Granularity, Importance, PruneConfig};
    let Some(gpu) = wgpu_backend() else {
        return;
    };
    let cpu = prunus_cpu::CpuBackend::new(prunus_cpu::Par::Rayon(2)).unwrap();
    // One F32 matrix with ties, one 1-D tensor left alone.
    let n = 64 * 48;
    let mut data: Vec<u8> = (0..n)
        .flat_map(|i| (((i * 37) % 11) as f32 - 5.0).to_le_bytes())
        .collect();
    data.extend((0..8).flat_map(|i| (i as f32).to_le_bytes()));
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[64,48],"data_offsets":[0,{}]}},"b":{{"dtype":"F32","shape":[8],"data_offsets":[{},{}]}}}}"#,
        n * 4,
        n * 4,
        n * 4 + 32
    );
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    let checkpoint = Checkpoint::from_bytes(file).unwrap();
    for importance in [Importance::Magnitude, Importance::Random { seed: 3 }] {
        let config = PruneConfig::new(0.0)
            .granularity(Granularity::NofM(NofM::TWO_FOUR))
            .importance(importance);
        let mut request = Request::new(config);
        request.masks = true;
        let run = |b: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            b(&mut out);
            out
        };
        let on_gpu = run(&|out| {
            prune_to_writer(
                &gpu,
                &checkpoint,
                &request,
                out,
                "<gpu>".as_ref(),
                &mut |_| {},
            )
            .unwrap();
        });
        let on_cpu = run(&|out| {
            prune_to_writer(
                &cpu,
                &checkpoint,
                &request,
                out,
                "<cpu>".as_ref(),
                &mut |_| {},
            )
            .unwrap();
        });
        assert_eq!(on_gpu, on_cpu, "{importance:?}");
    }
}
