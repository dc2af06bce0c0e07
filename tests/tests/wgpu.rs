//! The conformance suite on the wgpu backend: with the device's own window
//! size, and with windows of 2048 elements so that every multi-window path
//! (bindings over the storage limit) runs on small tensors too; under its
//! default selection plan, the histogram plan and the device plan. Skipped
//! with a printed reason when there is no adapter, unless
//! `PRUNUS_REQUIRE_GPU=1`.

use prunus_tests::gpu::{wgpu_backend, wgpu_device, wgpu_device_windows, wgpu_small_windows};

prunus_testing::conformance_tests!(wgpu_whole, maybe: wgpu_backend());
prunus_testing::conformance_tests!(wgpu_windows, maybe: wgpu_small_windows());
prunus_testing::conformance_tests!(wgpu_device_whole, maybe: wgpu_device());
prunus_testing::conformance_tests!(wgpu_device_segments, maybe: wgpu_device_windows());

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

/// The device plan reads back once per selection, the cut and the counts,
/// however many tensors take part (then core downloads the masks: a second
/// read-back); a selection's passes are at most three radix passes, a tie
/// pass and the mask pass.
#[test]
fn device_selection_reads_back_once() {
    use prunus_core::prune;
    use prunus_core::{Layer, PruneConfig, SelectionPlan};
    if wgpu_backend().is_none() {
        return;
    }
    // A device of its own: the shared one's counters move with the tests
    // running beside this one.
    let gpu = prunus_wgpu::WgpuBackend::new()
        .expect("a second device")
        .with_selection_plan(SelectionPlan::Device);
    for tensors in [1usize, 7, 40] {
        let data: Vec<Vec<f32>> = (0..tensors)
            .map(|t| {
                (0..3000 + 17 * t)
                    .map(|i| ((i * 7919 + t * 104_729) % 10_007) as f32 / 10_007.0 - 0.5)
                    .collect()
            })
            .collect();
        let weights: Vec<_> = data
            .iter()
            .map(|d| gpu.upload(d, &Shape::vector(d.len())).unwrap())
            .collect();
        let views: Vec<_> = weights.iter().map(ScoreView::new).collect();
        let n: u64 = data.iter().map(|d| d.len() as u64).sum();
        let before = gpu.counters();
        let got = gpu
            .select_lowest(&views, KeyRule::ABS, n / 3)
            .unwrap()
            .expect("the wgpu backend selects on the device");
        let used = gpu.counters().since(before);
        assert_eq!(used.read_backs, 1, "{tensors} tensors: {used:?}");
        assert!(
            used.bytes_read_back <= 64 + 16 * tensors as u64,
            "{tensors} tensors: {used:?}"
        );
        // Two radix passes over the scores, the third over the candidate
        // list (which also settles the split ties), and the mask pass.
        assert_eq!(used.passes, 3, "{tensors} tensors: {used:?}");
        assert!(used.candidates > 0, "{tensors} tensors: {used:?}");
        assert_eq!(got.pruned.iter().sum::<u64>(), n / 3);

        let names: Vec<String> = (0..tensors).map(|t| format!("w{t}")).collect();
        let layers: Vec<Layer<'_, _>> = weights
            .iter()
            .zip(&names)
            .map(|(w, name)| Layer::new(name, w))
            .collect();
        let config = PruneConfig::new(0.6).global();
        let before = gpu.counters();
        prune(&gpu, &layers, &config).unwrap();
        let used = gpu.counters().since(before);
        assert_eq!(
            used.read_backs, 2,
            "{tensors} tensors: the cut, then the masks: {used:?}"
        );
    }
}

/// Both ways of the read pass read every element once: their checksum is
/// the XOR of every element's bits, for one tensor and for 70 (more than a
/// dispatch's 64 segments), in windows of 2048 elements or whole.
#[test]
fn read_pass_reads_every_element_either_way() {
    use prunus_wgpu::ReadWay;
    let Some(gpu) = wgpu_backend() else {
        return;
    };
    for (tensors, window) in [(1usize, 2048u64), (70, 2048), (70, u64::MAX)] {
        let gpu = gpu.clone().with_max_window(window);
        let data: Vec<Vec<f32>> = (0..tensors)
            .map(|t| {
                (0..1000 + 997 * t)
                    .map(|i| f32::from_bits((i as u32).wrapping_mul(2_654_435_761) ^ t as u32))
                    .collect()
            })
            .collect();
        let want = data.iter().flatten().fold(0u32, |a, x| a ^ x.to_bits());
        let uploaded: Vec<_> = data
            .iter()
            .map(|d| gpu.upload(d, &Shape::vector(d.len())).unwrap())
            .collect();
        let refs: Vec<_> = uploaded.iter().collect();
        for way in ReadWay::ALL {
            assert_eq!(
                gpu.read_pass(&refs, way).unwrap(),
                want,
                "{tensors} tensors, {way:?}"
            );
        }
    }
}

/// A request for more elements than there are is an error, not a panic.
#[test]
fn device_selection_rejects_too_large_k() {
    let Some(gpu) = wgpu_device() else {
        return;
    };
    let w = gpu.upload(&[1.0, 2.0], &Shape::vector(2)).unwrap();
    assert!(
        gpu.select_lowest(&[ScoreView::new(&w)], KeyRule::ABS, 3)
            .is_err()
    );
}

/// Split ties go through the candidate list up to its 2,048 tied positions
/// (three passes over the scores), and beyond through the tie-block pass
/// (four); either way the first tied elements of the sequence are pruned,
/// as by the reference.
#[test]
fn device_ties_beyond_the_list_take_the_tie_pass() {
    use prunus_core::{LowestMasks, Mask};
    if wgpu_backend().is_none() {
        return;
    }
    let gpu = prunus_wgpu::WgpuBackend::new()
        .expect("a second device")
        .with_max_window(2048)
        .with_max_segments(2)
        .with_candidate_share(1)
        .with_selection_plan(prunus_core::SelectionPlan::Device);
    for tied in [2047usize, 2048, 2049, 5000] {
        // 3,000 small values, then `tied` copies of 2.0 across two inputs and
        // several windows, and larger values; a third of the ties pruned.
        let mut all: Vec<f32> = (0..3000).map(|i| i as f32 / 3000.0).collect();
        all.extend(std::iter::repeat_n(-2.0, tied));
        all.extend((0..1500).map(|i| 3.0 + i as f32));
        let (a, b) = all.split_at(4100);
        let k = 3000 + tied as u64 / 3;
        let inputs: Vec<_> = [a, b]
            .iter()
            .map(|d| gpu.upload(d, &Shape::vector(d.len())).unwrap())
            .collect();
        let views: Vec<_> = inputs.iter().map(ScoreView::new).collect();
        let before = gpu.counters();
        let got: LowestMasks<_> = gpu
            .select_lowest(&views, KeyRule::ABS, k)
            .unwrap()
            .expect("selects on the device");
        let used = gpu.counters().since(before);
        let passes = if tied <= 2048 { 3 } else { 4 };
        assert_eq!(used.passes, passes, "{tied} ties: {used:?}");
        assert_eq!(got.cut.ties, tied as u64 / 3, "{tied} ties");
        // The lowest k: the small values and the first tied elements.
        let want: Vec<Mask> = [a, b]
            .iter()
            .enumerate()
            .map(|(t, d)| {
                let offset = if t == 0 { 0 } else { a.len() };
                Mask::from_fn(Shape::vector(d.len()), |i| (offset + i) as u64 >= k)
            })
            .collect();
        assert_eq!(gpu.download_masks(got.masks).unwrap(), want, "{tied} ties");
    }
}

/// Device selection never reads a buffer it has not written: its masks are
/// the same when every pooled buffer it may reuse holds NaN bit patterns
/// (after other work on the same device) as on a fresh device.
#[test]
fn device_selection_ignores_reused_buffer_contents() {
    use prunus_core::selection::radix::RadixSelect;
    use prunus_core::{Mask, SelectionPlan};
    if wgpu_backend().is_none() {
        return;
    }
    let gpu = prunus_wgpu::WgpuBackend::new()
        .expect("a second device")
        .with_max_window(2048)
        .with_max_segments(3)
        .with_selection_plan(SelectionPlan::Device);
    let dirty = |gpu: &prunus_wgpu::WgpuBackend| {
        // Every pooled size up to 1 MiB, filled with NaN bits, then freed.
        let held: Vec<_> = (2..19)
            .map(|p| {
                let n = 1usize << p;
                gpu.upload(&vec![f32::from_bits(u32::MAX); n], &Shape::vector(n))
                    .unwrap()
            })
            .collect();
        drop(held);
    };
    let mut seed = 0x9E37_79B9u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for case in 0..24 {
        let n = [2048usize, 700, 5000][case % 3];
        let values: Vec<f32> = (0..n)
            .map(|_| match next() % 8 {
                0 => f32::NAN,
                1 => 0.0,
                _ => (next() % 2000) as f32 / 100.0 - 10.0,
            })
            .collect();
        let keep: Vec<bool> = (0..n).map(|_| next() % 2 == 0).collect();
        let survivors = Mask::from_fn(Shape::vector(n), |i| keep[i]);
        let q = [0.137, 0.3, 0.6, 0.05][case % 4];
        for share in [1u32, 8, 0] {
            let gpu = gpu.clone().with_candidate_share(share);
            dirty(&gpu);
            let shape = Shape::vector(n);
            let k = (q * n as f64).round() as u64;
            let g = gpu.upload(&values, &shape).unwrap();
            let gm = gpu.upload_mask(&survivors).unwrap();
            let r = ReferenceBackend.upload(&values, &shape).unwrap();
            let rule = KeyRule {
                transform: prunus_core::Transform::Identity,
                nan: prunus_core::NanPolicy::Lowest,
            };
            let got = gpu
                .select_lowest(&[ScoreView::with_survivors(&g, Some(&gm))], rule, k)
                .unwrap()
                .expect("selects on the device");
            let rv = [ScoreView::with_survivors(&r, Some(&survivors))];
            let mut radix = RadixSelect::new(n as u64, k).unwrap();
            while let Some(w) = radix.window() {
                radix
                    .absorb(&ReferenceBackend.histogram(&rv, rule, w).unwrap())
                    .unwrap();
            }
            let cut = radix.cut().unwrap().threshold();
            let want = ReferenceBackend.threshold_masks(&rv, rule, cut).unwrap();
            assert_eq!(
                gpu.download_masks(got.masks).unwrap(),
                want.masks,
                "case {case}, share {share}"
            );
        }
    }
}

mod device_properties {
    use proptest::prelude::*;
    use prunus_core::contract::key::NanPolicy;
    use prunus_core::selection::radix::RadixSelect;
    use prunus_core::{
        Backend, KeyRule, Layer, Mask, PruneConfig, ReferenceBackend, ScoreView, Shape, Transform,
        select,
    };
    use prunus_testing::strategies::{config, values_for};
    use prunus_tests::gpu::{wgpu_device, wgpu_device_share};

    /// One input: values and, maybe, the survivors of an earlier round.
    type Input = (Vec<f32>, Option<Mask>);

    /// An [`Input`]: values with ties, signed zeros, subnormals and NaN
    /// where the policy allows, of up to 9,000 elements (several 2048-element
    /// windows).
    fn input(nan: NanPolicy) -> impl Strategy<Value = Input> {
        prop_oneof![
            6 => 1usize..300,
            3 => 300usize..5000,
            1 => Just(2048usize),
            1 => 6000usize..9000,
        ]
        .prop_flat_map(move |n| {
            (
                values_for(nan, n),
                proptest::option::of(proptest::collection::vec(any::<bool>(), n)),
            )
        })
        .prop_map(|(values, keep)| {
            let mask = keep.map(|k| Mask::from_fn(Shape::vector(k.len()), |i| k[i]));
            (values, mask)
        })
    }

    /// A key rule, one to eleven inputs and a fraction of them to prune.
    fn case() -> impl Strategy<Value = (KeyRule, Vec<Input>, f64)> {
        (
            prop_oneof![Just(Transform::Identity), Just(Transform::Abs)],
            prop_oneof![
                Just(NanPolicy::Lowest),
                Just(NanPolicy::Highest),
                Just(NanPolicy::Error)
            ],
        )
            .prop_flat_map(|(transform, nan)| {
                (
                    Just(KeyRule { transform, nan }),
                    proptest::collection::vec(input(nan), 1..12),
                    0.0f64..=1.0,
                )
            })
    }

    proptest! {
        #![proptest_config(config(48))]

        /// The device's own selection of the k lowest equals the reference
        /// cut's threshold masks bit for bit, with several dispatches per
        /// pass and several windows per tensor, with a candidate list that
        /// holds every bucket, the default one and none.
        #[test]
        fn device_cut_matches_the_reference(
            (rule, inputs, q) in case(),
            share in prop_oneof![Just(0u32), Just(1), Just(8)],
        ) {
            let Some(gpu) = wgpu_device_share(share) else {
                return Ok(());
            };
            let shapes: Vec<Shape> = inputs.iter().map(|(v, _)| Shape::vector(v.len())).collect();
            let n: u64 = shapes.iter().map(|s| s.numel() as u64).sum();
            let k = (q * n as f64).round() as u64;
            let g: Vec<_> = inputs.iter().zip(&shapes).map(|((v, _), s)| gpu.upload(v, s).unwrap()).collect();
            let gm: Vec<_> = inputs.iter().map(|(_, m)| m.as_ref().map(|m| gpu.upload_mask(m).unwrap())).collect();
            let r: Vec<_> = inputs.iter().zip(&shapes).map(|((v, _), s)| ReferenceBackend.upload(v, s).unwrap()).collect();
            let rm: Vec<_> = inputs.iter().map(|(_, m)| m.clone()).collect();
            let gv: Vec<_> = g.iter().zip(&gm).map(|(t, m)| ScoreView::with_survivors(t, m.as_ref())).collect();
            let rv: Vec<_> = r.iter().zip(&rm).map(|(t, m)| ScoreView::with_survivors(t, m.as_ref())).collect();
            let got = gpu.select_lowest(&gv, rule, k).unwrap().expect("selects on the device");
            let mut radix = RadixSelect::new(n, k).unwrap();
            let mut nan = None;
            while let Some(w) = radix.window() {
                let h = ReferenceBackend.histogram(&rv, rule, w).unwrap();
                nan.get_or_insert(h.nan.clone());
                radix.absorb(&h).unwrap();
            }
            let cut = radix.cut().unwrap().threshold();
            let want = ReferenceBackend.threshold_masks(&rv, rule, cut).unwrap();
            let pruned: Vec<u64> = want.masks.iter().map(Mask::count_pruned).collect();
            prop_assert_eq!(&got.pruned, &pruned);
            if let Some(nan) = nan {
                prop_assert_eq!(&got.nan, &nan);
            }
            prop_assert_eq!(gpu.download_masks(got.masks).unwrap(), want.masks);
        }

        /// Core's global selection under the device plan gives the
        /// reference backend's masks, or the same error (NaN scores under
        /// the error policy, targets below an earlier round).
        #[test]
        fn device_plan_selects_as_the_reference((rule, inputs, q) in case()) {
            let Some(gpu) = wgpu_device() else {
                return Ok(());
            };
            let names: Vec<String> = (0..inputs.len()).map(|t| format!("l{t}")).collect();
            let shapes: Vec<Shape> = inputs.iter().map(|(v, _)| Shape::vector(v.len())).collect();
            let g: Vec<_> = inputs.iter().zip(&shapes).map(|((v, _), s)| gpu.upload(v, s).unwrap()).collect();
            let r: Vec<_> = inputs.iter().zip(&shapes).map(|((v, _), s)| ReferenceBackend.upload(v, s).unwrap()).collect();
            let gl: Vec<Layer<'_, _>> = g.iter().zip(&names).zip(&inputs).map(|((t, name), (_, m))| Layer::new(name, t).with_mask(m.as_ref())).collect();
            let rl: Vec<Layer<'_, _>> = r.iter().zip(&names).zip(&inputs).map(|((t, name), (_, m))| Layer::new(name, t).with_mask(m.as_ref())).collect();
            let mut config = PruneConfig::new(q).global().allow_empty(true);
            config.nan = rule.nan;
            let got = select(&gpu, &gl, &config, rule.transform);
            let want = select(&ReferenceBackend, &rl, &config, rule.transform);
            match (got, want) {
                (Ok(g), Ok(w)) => prop_assert_eq!(g, w),
                (Err(g), Err(w)) => prop_assert_eq!(g.to_string(), w.to_string()),
                (g, w) => prop_assert!(false, "device {:?}, reference {:?}", g.map(|_| ()), w.map(|_| ())),
            }
        }
    }
}
