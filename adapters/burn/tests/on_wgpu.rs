//! prunus-burn on burn's wgpu device against the same model on ndarray:
//! pruning in place, the masks, and every data-dependent method of the
//! host.
//!
//! The same weights and data give the same masks where the scores are
//! exact (magnitude, random: the weights are read back bit for bit), the
//! same gradients, activations and training within f32 rounding (the GPU's
//! reductions add in another order), and masks from gradient scores that
//! agree as far as measured here. Skipped with a printed reason where wgpu
//! finds no adapter; failed instead when `PRUNUS_REQUIRE_GPU=1` (CI sets
//! it and runs them on Mesa's software Vulkan, llvmpipe).

#![cfg(feature = "wgpu")]

use std::sync::OnceLock;

use burn::module::Module;
use burn::nn::{LinearConfig, Relu};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor, TensorData};
use prunus_burn::{BurnHost, HostConfig, MaskSet, Pruner, TapLinear};
use prunus_core::methods::flow::{self, Measure, MeasureConfig};
use prunus_core::methods::imp::consistency::Flow;
use prunus_core::methods::imp::{ImpConfig, Observer, Rewind, Step, StopRule, run_imp};
use prunus_core::{
    Backend, Granularity, Grouping, Host, Mask, NofM, Objective, PruneConfig, Samples, Split,
};
use prunus_lab::network::Network;

/// Whether `PRUNUS_REQUIRE_GPU=1` makes a missing adapter a failure.
fn gpu_required() -> bool {
    std::env::var("PRUNUS_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// burn's wgpu device, opened once per test process, or `None` (with the
/// reason printed) where there is no adapter. Panics when there is none
/// and `PRUNUS_REQUIRE_GPU=1`.
fn gpu() -> Option<Device> {
    static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
    let d = DEVICE.get_or_init(|| prunus_burn::device::wgpu().map_err(|e| e.to_string()));
    match d {
        Ok(d) => Some(d.clone()),
        Err(e) if gpu_required() => {
            panic!("PRUNUS_REQUIRE_GPU=1 but burn's wgpu device failed: {e}")
        }
        Err(e) => {
            eprintln!("skipping the burn wgpu tests: {e}");
            None
        }
    }
}

mod common;

use common::*;

/// A host on `device` holding the lab's Kaiming weights of `seed`.
fn host(device: &Device, seed: u64) -> Burn {
    let network = Network::mlp(&WIDTHS, true, seed).unwrap();
    let mut host = burn_host(device, seed);
    for i in 0..host.parameters().len() {
        host.set_weights(i, network.param(i).unwrap()).unwrap();
    }
    host
}

/// The ndarray host and the wgpu host with the same weights, or `None`
/// without an adapter.
fn pair(seed: u64) -> Option<(Burn, Burn)> {
    let gpu = gpu()?;
    Some((host(&cpu(), seed), host(&gpu, seed)))
}

fn stored<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// The fraction of entries on which two masks of one shape agree.
fn agreement(a: &Mask, b: &Mask) -> f64 {
    assert_eq!(a.len(), b.len());
    let same = (0..a.len()).filter(|&k| a.get(k) == b.get(k)).count();
    same as f64 / a.len() as f64
}

#[test]
fn the_device_opens_and_models_live_on_it() {
    let Some(gpu) = gpu() else { return };
    let model = Mlp::new(&gpu);
    assert_eq!(model.devices(), vec![gpu.clone()]);
    let (_, host) = pair(1).unwrap();
    assert_eq!(host.model().devices(), vec![gpu.autodiff()]);
}

#[test]
fn magnitude_masks_and_pruned_weights_are_bit_identical() {
    let Some((mut on_cpu, mut on_gpu)) = pair(2) else {
        return;
    };
    let params = prunable(&on_cpu);
    let configs = [
        PruneConfig::new(0.7).local(),
        PruneConfig::new(0.7).global(),
        PruneConfig::new(0.5).granularity(Granularity::NofM(NofM::new(2, 4).unwrap())),
        PruneConfig::new(0.5)
            .global()
            .granularity(Granularity::Groups(Grouping::Rows)),
        PruneConfig::new(0.6).global().min_density(0.35),
    ];
    let mc = MeasureConfig::default();
    for (c, config) in configs.iter().enumerate() {
        // Through the host...
        for m in [Measure::Magnitude, Measure::Random { seed: 7 }] {
            let a =
                flow::prune_host(&backend(), &mut on_cpu, m, &params, &[], config, &mc).unwrap();
            let b =
                flow::prune_host(&backend(), &mut on_gpu, m, &params, &[], config, &mc).unwrap();
            assert_eq!(a, b, "{m} {config:?}");
        }
        // ... and in place, through the module tree.
        let config = config.clone().skip("fc3.weight");
        let (pa, ma) = Pruner::default()
            .prune(on_cpu.model(), &config, None)
            .unwrap();
        let (pb, mb) = Pruner::default()
            .prune(on_gpu.model(), &config, None)
            .unwrap();
        assert_eq!(pb.devices(), on_gpu.model().devices(), "stays on the GPU");
        for (name, (wa, wb)) in [
            ("fc1", (pa.fc1.weight.val(), pb.fc1.weight.val())),
            ("fc2", (pa.fc2.weight.val(), pb.fc2.weight.val())),
            ("fc3", (pa.fc3.weight.val(), pb.fc3.weight.val())),
        ] {
            let (wa, wb) = (stored(wa), stored(wb));
            let bits = |w: &[f32]| w.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&wa), bits(&wb), "{name} {config:?}");
            let m = mb.get(&format!("{name}.weight")).unwrap();
            assert_eq!(Some(m), ma.get(&format!("{name}.weight")));
        }
        // A second, sparser round never revives what the first pruned (the
        // unguarded unstructured configs).
        if c < 2 {
            let (_, second) = Pruner::default()
                .prune(&pb, &config.clone().sparsity(0.8), Some(&mb))
                .unwrap();
            assert!(second.is_subset_of(&mb).unwrap());
            assert!(second.sparsity() > mb.sparsity());
        }
    }
}

#[test]
fn masks_applied_on_the_gpu_zero_exactly_the_pruned_weights() {
    let Some(gpu) = gpu() else { return };
    let model = Mlp::new(&gpu.clone().autodiff());
    let config = PruneConfig::new(0.8).global().skip("fc3.weight");
    // Masks made on the CPU fit a model on the GPU: they go by name.
    let dense = Mlp::new(&cpu())
        .fc1
        .weight
        .val()
        .dims()
        .iter()
        .product::<usize>();
    assert_eq!(dense, WIDTHS[0] * WIDTHS[1]);
    let (_, masks) = prunus_burn::prune(&model, &config).unwrap();
    masks.check(&model).unwrap();
    let before = stored(model.fc1.weight.val());
    let masked = masks.apply(model);
    assert!(masked.fc1.weight.val().is_require_grad());
    let after = stored(masked.fc1.weight.val());
    let (s, m) = masks.iter().next().unwrap();
    let (before, after) = (s.to_view(&before).unwrap(), s.to_view(&after).unwrap());
    for k in 0..m.len() {
        if m.get(k) {
            assert_eq!(after[k].to_bits(), before[k].to_bits(), "kept weight {k}");
        } else {
            assert_eq!(after[k], 0.0, "pruned weight {k}");
        }
    }
}

/// The first 100 training samples at temperature 5, as the lab's
/// comparisons use.
fn objective() -> Objective {
    Objective::new(Samples::first(Split::Train, 100)).temperature(5.0)
}

#[test]
fn gradients_evaluation_and_flow_scores_agree_with_ndarray() {
    let Some((mut on_cpu, mut on_gpu)) = pair(3) else {
        return;
    };
    let params = prunable(&on_cpu);
    let objective = objective();
    let ga = on_cpu.gradient(&objective).unwrap();
    let gb = on_gpu.gradient(&objective).unwrap();
    for (i, (a, b)) in ga.iter().zip(&gb).enumerate() {
        close(a, b, 1e-5, &format!("gradient of parameter {i}"));
    }
    let psa = on_cpu.per_sample_gradients(&objective, &params).unwrap();
    let psb = on_gpu.per_sample_gradients(&objective, &params).unwrap();
    close(&psa, &psb, 1e-5, "per-sample gradients");
    let ea = on_cpu.evaluate(&objective).unwrap();
    let eb = on_gpu.evaluate(&objective).unwrap();
    eprintln!("evaluation: ndarray {ea:?}, wgpu {eb:?}");
    assert!((ea.loss - eb.loss).abs() < 1e-5, "{ea:?} {eb:?}");
    assert_eq!(ea.samples, eb.samples);
    // A prediction may flip only where two logits tie within rounding.
    assert!((ea.accuracy - eb.accuracy).abs() <= 0.01, "{ea:?} {eb:?}");

    let backend = backend();
    let samples = Samples::first(Split::Train, 100);
    let mc = MeasureConfig::default().samples(samples);
    for m in [Measure::Snip, Measure::Grasp, Measure::GradNorm] {
        let score = |host: &mut Burn| {
            let s = flow::signals(host, m, &params, &[], &mc).unwrap();
            let w: Vec<_> = s
                .weights
                .iter()
                .zip(&params)
                .map(|(w, &i)| backend.upload(w, &host.parameters()[i].shape).unwrap())
                .collect();
            flow::scores(&backend, m, &s, &w, None)
                .unwrap()
                .iter()
                .map(|t| backend.download(t).unwrap())
                .collect::<Vec<_>>()
        };
        let (a, b) = (score(&mut on_cpu), score(&mut on_gpu));
        // GraSP's and GradNorm's Hg is a finite difference of two
        // gradients: their f32 differences are divided by its step.
        // Measured on llvmpipe: 1e-7 (SNIP), 3e-5 (GraSP), 1e-5 (GradNorm).
        let tol = if m.uses_hessian() { 1e-3 } else { 1e-5 };
        for (k, (a, b)) in a.iter().zip(&b).enumerate() {
            close(a, b, tol, &format!("{m} scores of tensor {k}"));
        }
        // The masks: exact counts; where scores tie within rounding a
        // weight may swap with its neighbour in the order.
        for config in [
            PruneConfig::new(0.7).global(),
            PruneConfig::new(0.5).local(),
        ] {
            let ma =
                flow::prune_host(&backend, &mut on_cpu, m, &params, &[], &config, &mc).unwrap();
            let mb =
                flow::prune_host(&backend, &mut on_gpu, m, &params, &[], &config, &mc).unwrap();
            for (k, (a, b)) in ma.iter().zip(&mb).enumerate() {
                assert_eq!(a.count_pruned(), b.count_pruned(), "{m} tensor {k}");
                let agree = agreement(a, b);
                eprintln!(
                    "{m} {:?} tensor {k}: masks agree on {:.4}",
                    config.scope, agree
                );
                assert!(agree >= 0.99, "{m} tensor {k}: masks agree on only {agree}");
            }
        }
    }
}

#[test]
fn training_keeps_the_masks_and_follows_ndarray() {
    let Some((mut on_cpu, mut on_gpu)) = pair(4) else {
        return;
    };
    let params = prunable(&on_cpu);
    let masks = flow::prune_host(
        &backend(),
        &mut on_cpu,
        Measure::Magnitude,
        &params,
        &[],
        &PruneConfig::new(0.6).global(),
        &MeasureConfig::default(),
    )
    .unwrap();
    let mut all: Vec<Option<Mask>> = vec![None; on_cpu.parameters().len()];
    for (k, &i) in params.iter().enumerate() {
        all[i] = Some(masks[k].clone());
    }
    on_cpu.set_masks(&all).unwrap();
    on_gpu.set_masks(&all).unwrap();
    let snapshot = on_gpu.snapshot().unwrap();
    // Twelve steps of batch 16 run past the 180 training samples' epoch.
    let la = on_cpu.train_steps(12).unwrap();
    let lb = on_gpu.train_steps(12).unwrap();
    eprintln!("12 steps: mean loss {la} on ndarray, {lb} on wgpu");
    assert!((la - lb).abs() < 1e-4 * la.abs().max(1.0), "{la} vs {lb}");
    let la = on_cpu.train_epoch().unwrap();
    let lb = on_gpu.train_epoch().unwrap();
    assert!((la - lb).abs() < 1e-3 * la.abs().max(1.0), "{la} vs {lb}");
    for (i, mask) in all.iter().enumerate() {
        let (a, b) = (on_cpu.weights(i).unwrap(), on_gpu.weights(i).unwrap());
        close(&a, &b, 1e-3, &format!("trained parameter {i}"));
        assert_ne!(b, snapshot.weights[i], "parameter {i} did not train");
        if let Some(m) = mask {
            for (k, &v) in b.iter().enumerate() {
                assert!(m.get(k) || v == 0.0, "pruned weight {k} of {i} is {v}");
            }
        }
    }
    // Restore puts back the snapshot bit for bit and resets the optimizer:
    // the next steps are the first steps again.
    on_gpu.restore(&snapshot).unwrap();
    for (i, w) in snapshot.weights.iter().enumerate() {
        assert_eq!(&on_gpu.weights(i).unwrap(), w, "parameter {i} restored");
    }
    let again = on_gpu.snapshot().unwrap();
    assert_eq!(again.weights, snapshot.weights);
}

#[test]
fn a_users_own_loop_on_the_gpu_keeps_the_masks() {
    let Some(gpu) = gpu() else { return };
    let device = gpu.autodiff();
    let model = Mlp::new(&device);
    let config = PruneConfig::new(0.8).global().skip("fc3.weight");
    let (mut model, masks): (Mlp, MaskSet) = prunus_burn::prune(&model, &config).unwrap();
    let mut optimizer = sgd();
    let data = dataset();
    let x = Tensor::<2>::from_data(
        TensorData::new(data.train.inputs[..32 * 16].to_vec(), [32, 16]),
        &device,
    );
    let y: Vec<i64> = data.train.labels[..32]
        .iter()
        .map(|&l| i64::from(l))
        .collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(y, [32]), &device);
    let first = stored(model.fc2.weight.val());
    for _ in 0..5 {
        let loss = prunus_burn::cross_entropy(model.forward(x.clone()), y.clone(), 1.0);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(0.05, model, grads);
        model = masks.apply(model);
    }
    assert_ne!(
        stored(model.fc2.weight.val()),
        first,
        "training moved nothing"
    );
    for (s, mask) in masks.iter() {
        let w = match s.name.as_str() {
            "fc1.weight" => stored(model.fc1.weight.val()),
            "fc2.weight" => stored(model.fc2.weight.val()),
            "fc3.weight" => stored(model.fc3.weight.val()),
            other => panic!("unexpected mask {other}"),
        };
        let view = s.to_view(&w).unwrap();
        for (k, &v) in view.iter().enumerate() {
            assert!(
                mask.get(k) || v == 0.0,
                "{} pruned weight {k} is {v}",
                s.name
            );
        }
    }
}

/// Keeps every round's masks.
#[derive(Default)]
struct Tickets(Vec<Vec<Option<Mask>>>);

impl Observer for Tickets {
    fn on_masks(&mut self, _round: usize, masks: &[Option<Mask>]) {
        self.0.push(masks.to_vec());
    }
}

#[test]
fn imp_with_rewinding_runs_on_the_gpu_as_on_ndarray() {
    let Some((mut on_cpu, mut on_gpu)) = pair(5) else {
        return;
    };
    // Two dense epochs (rewinding to the first), three rounds of 30% of the
    // survivors to 65.7% and a fourth stopping exactly at 70%, one epoch
    // each, the gradient flow recorded every epoch.
    let config = ImpConfig::classic(0.7)
        .step(Step::FixedRate(0.3))
        .rewind(Rewind::WarmUp, 1)
        .epochs(2, 1)
        .stop(StopRule::Epochs)
        .watch(&[Flow::Gradient])
        .flow_samples(Samples::first(Split::Validation, 40))
        .prune(PruneConfig::new(0.0).global())
        .max_rounds(10);
    let (mut ta, mut tb) = (Tickets::default(), Tickets::default());
    let a = run_imp(&backend(), &mut on_cpu, &config, &mut ta).unwrap();
    let b = run_imp(&backend(), &mut on_gpu, &config, &mut tb).unwrap();
    assert_eq!(a.rounds.len(), b.rounds.len());
    assert_eq!(ta.0.len(), tb.0.len());
    for (ra, rb) in a.rounds.iter().zip(&b.rounds) {
        // The fraction pruned is a count: exact.
        assert_eq!(ra.sparsity, rb.sparsity, "round {}", ra.index);
        eprintln!(
            "IMP round {}: validation loss {} vs {}, accuracy {} vs {}",
            ra.index,
            ra.validation.loss,
            rb.validation.loss,
            ra.validation.accuracy,
            rb.validation.accuracy
        );
        assert!(
            (ra.validation.loss - rb.validation.loss).abs() < 1e-2 * ra.validation.loss.max(1.0),
            "round {}: {:?} vs {:?}",
            ra.index,
            ra.validation,
            rb.validation
        );
        for (ea, eb) in ra.epochs_trace.iter().zip(&rb.epochs_trace) {
            for ((fa, da), (fb, db)) in ea.distances.iter().zip(&eb.distances) {
                assert_eq!(fa, fb);
                assert!(da.is_finite() && db.is_finite(), "{da} {db}");
            }
        }
    }
    assert!((b.last().sparsity - 0.7).abs() < 0.01);
    // Every round's masks on the GPU shrink the last round's.
    for w in tb.0.windows(2) {
        for (new, old) in w[1].iter().zip(&w[0]) {
            if let (Some(n), Some(o)) = (new, old) {
                assert!(n.is_subset_of(o).unwrap());
            }
        }
    }
    // The tickets: the training paths part by f32 rounding, so the final
    // magnitude masks may differ at near-ties; measured, they agree almost
    // everywhere.
    for (i, (ma, mb)) in a.masks.iter().zip(&b.masks).enumerate() {
        match (ma, mb) {
            (Some(ma), Some(mb)) => {
                assert_eq!(ma.count_pruned(), mb.count_pruned(), "parameter {i}");
                let agree = agreement(ma, mb);
                eprintln!("IMP parameter {i}: final masks agree on {agree:.4}");
                assert!(agree >= 0.97, "parameter {i}: masks agree on only {agree}");
            }
            (None, None) => {}
            _ => panic!("parameter {i} masked on one device only"),
        }
        if let Some(m) = mb {
            for (k, &v) in on_gpu.weights(i).unwrap().iter().enumerate() {
                assert!(m.get(k) || v == 0.0, "pruned weight {k} of {i} is {v}");
            }
        }
    }
}

#[derive(Module, Debug)]
struct TapMlp {
    fc1: TapLinear,
    fc2: TapLinear,
    fc3: TapLinear,
}

type Tapped = BurnHost<TapMlp, fn(&TapMlp, Tensor<2>) -> Tensor<2>, 2>;

fn tap_forward(m: &TapMlp, x: Tensor<2>) -> Tensor<2> {
    let relu = Relu::new();
    let x = relu.forward(m.fc1.forward(x));
    let x = relu.forward(m.fc2.forward(x));
    m.fc3.forward(x)
}

fn tapped(device: &Device, weights: &Burn) -> Tapped {
    let device = device.clone().autodiff();
    let layer =
        |i: usize| TapLinear::new(LinearConfig::new(WIDTHS[i], WIDTHS[i + 1]).init(&device));
    let model = TapMlp {
        fc1: layer(0),
        fc2: layer(1),
        fc3: layer(2),
    };
    let taps = [
        ("fc1.weight", model.fc1.tap.clone()),
        ("fc2.weight", model.fc2.tap.clone()),
        ("fc3.weight", model.fc3.tap.clone()),
    ];
    let config = HostConfig::default()
        .couple("fc1.weight", "fc2.weight", 1)
        .couple("fc2.weight", "fc3.weight", 1);
    let mut host: Tapped = BurnHost::new(
        model,
        tap_forward as fn(&TapMlp, Tensor<2>) -> Tensor<2>,
        splits(&dataset()),
        sgd(),
        config,
    )
    .unwrap()
    .with_taps(taps)
    .unwrap();
    for i in 0..host.parameters().len() {
        host.set_weights(i, &weights.weights(i).unwrap()).unwrap();
    }
    host
}

#[test]
fn taps_record_activations_and_scale_units_on_the_gpu() {
    let Some(gpu) = gpu() else { return };
    let reference = host(&cpu(), 6);
    let mut on_cpu = tapped(&cpu(), &reference);
    let mut on_gpu = tapped(&gpu, &reference);
    let samples = Samples::first(Split::Validation, 50);
    let a = on_cpu
        .activations(&samples, prunus_core::Tap::PreActivation)
        .unwrap();
    let b = on_gpu
        .activations(&samples, prunus_core::Tap::PreActivation)
        .unwrap();
    assert_eq!(a.len(), 3);
    for (a, b) in a.iter().zip(&b) {
        assert_eq!((a.parameter, a.width), (b.parameter, b.width));
        close(&a.values, &b.values, 1e-5, "pre-activations");
    }
    use prunus_core::methods::imp::consistency::information_flow;
    let fa = information_flow(&mut on_cpu, &samples).unwrap();
    let fb = information_flow(&mut on_gpu, &samples).unwrap();
    let (fa, fb): (Vec<f32>, Vec<f32>) = fa
        .iter()
        .zip(&fb)
        .map(|(x, y)| (*x as f32, *y as f32))
        .unzip();
    close(&fa, &fb, 1e-5, "information flow");

    let scales: Vec<f32> = (0..WIDTHS[2]).map(|u| [0.0, 1.5, 1.0][u % 3]).collect();
    let objective = Objective::new(Samples::all(Split::Validation));
    let plain = on_gpu.evaluate(&objective).unwrap();
    // fc2.weight (parameter 2): 12 units.
    on_cpu.set_unit_scales(2, Some(&scales)).unwrap();
    on_gpu.set_unit_scales(2, Some(&scales)).unwrap();
    let (ea, eb) = (
        on_cpu.evaluate(&objective).unwrap(),
        on_gpu.evaluate(&objective).unwrap(),
    );
    assert!((ea.loss - eb.loss).abs() < 1e-5, "{ea:?} {eb:?}");
    assert_ne!(eb.loss, plain.loss, "the scales changed nothing");
    on_gpu.set_unit_scales(2, None).unwrap();
    assert_eq!(on_gpu.evaluate(&objective).unwrap().loss, plain.loss);
}

/// Set by [`no_adapter_is_an_error_not_a_panic`] for the copy of this test
/// binary it runs with every graphics driver hidden.
const HIDDEN: &str = "PRUNUS_BURN_TEST_DRIVERS_HIDDEN";

#[test]
fn no_adapter_is_an_error_not_a_panic() {
    if std::env::var_os(HIDDEN).is_some() {
        // The child: wgpu should find nothing.
        let listed = Device::enumerate(burn::tensor::DeviceType::Wgpu);
        if !listed.is_empty() {
            eprintln!("drivers could not be hidden here ({listed:?}): nothing to check");
            return;
        }
        let e = prunus_burn::device::wgpu().unwrap_err();
        assert!(e.to_string().contains("no adapter"), "{e}");
        // Opening the device without asking first: burn panics inside,
        // the caller gets an error.
        let e = prunus_burn::device::open(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
            .unwrap_err();
        assert!(matches!(e, prunus_burn::Error::Device { .. }), "{e}");
        println!("child checked: {e}");
        return;
    }
    if gpu().is_none() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "no_adapter_is_an_error_not_a_panic",
            "--nocapture",
        ])
        .env(HIDDEN, "1")
        // Vulkan's loader and EGL's vendor library read these lists of
        // driver manifests: empty files hide every driver.
        .env("VK_DRIVER_FILES", "/dev/null")
        .env("VK_ICD_FILENAMES", "/dev/null")
        .env("__EGL_VENDOR_LIBRARY_FILENAMES", "/dev/null")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    eprintln!(
        "{}",
        stdout
            .lines()
            .find(|l| l.starts_with("child"))
            .unwrap_or("child skipped")
    );
}
