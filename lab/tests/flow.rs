//! The gradient-flow protocol on a tiny synthetic task, and the lab's
//! checkpoints.

use std::sync::Arc;

use prunus_core::ReferenceBackend;
use prunus_lab::checkpoint::{load, save};
use prunus_lab::data::{Dataset, TeacherStudent};
use prunus_lab::flow::{FlowConfig, run_flow};
use prunus_lab::network::{CnnSpec, Network};
use prunus_lab::{Error, ProtocolResult};

fn tiny_config() -> FlowConfig {
    let mut c = FlowConfig::default();
    c.seeds = vec![0, 1];
    c.measures = vec![
        "magnitude".into(),
        "snip".into(),
        "grasp".into(),
        "random".into(),
    ];
    c.channels = vec![4, 6];
    c.rounds = 3;
    c.epochs = 2;
    c.sparsity = 0.6;
    c.calibration = 64;
    c
}

fn tiny_data() -> Arc<Dataset> {
    let spec = TeacherStudent::default().input([1, 8, 8]).samples(400);
    Arc::new(Dataset::teacher_student(&spec).unwrap())
}

#[test]
fn the_schedule_removes_exactly_p_after_n_rounds() {
    let mut c = FlowConfig::default();
    for (p, n) in [(0.8, 5), (0.5, 1), (0.9, 3), (0.0, 4)] {
        c.sparsity = p;
        c.rounds = n;
        let mut present = 1.0;
        for k in 1..=n {
            // Round k removes r_k of what is present.
            let r = p / (k as f64 * p + n as f64 * (1.0 - p));
            present *= 1.0 - r;
            assert!(
                (c.removed_after(k) - (1.0 - present)).abs() < 1e-12,
                "p {p} n {n} k {k}"
            );
        }
        assert_eq!(c.removed_after(n), p);
    }
}

#[test]
fn a_tiny_protocol_runs_prunes_exactly_and_is_deterministic() {
    let data = tiny_data();
    let config = tiny_config();
    let mut epochs_seen = 0;
    let result = run_flow(&ReferenceBackend, Arc::clone(&data), &config, &mut |p| {
        epochs_seen += 1;
        assert!(p.epoch <= p.epochs && p.run < p.runs);
    })
    .unwrap();
    assert_eq!(epochs_seen, 8 * 5);
    assert_eq!(result.runs.len(), 8);
    for r in &result.runs {
        assert_eq!(r.train_loss.len(), 5);
        // 10 filters, 60% removed: exactly 4 kept, at least 1 per layer.
        assert_eq!(r.filters.iter().sum::<usize>(), 4, "{}", r.measure);
        assert!(r.filters.iter().all(|&f| f >= 1));
        assert!((0.0..=100.0).contains(&r.test_acc));
    }
    // The same settings give the same runs.
    let again = run_flow(&ReferenceBackend, data, &config, &mut |_| {}).unwrap();
    let strip = |r: &prunus_lab::flow::FlowResult| {
        r.runs
            .iter()
            .map(|x| (x.train_loss.clone(), x.test_acc, x.filters.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&result), strip(&again));
    // The report has the schema's names.
    let report = result.report().unwrap();
    assert_eq!(report.protocol, "flow");
    assert_eq!(report.seeds, [0, 1]);
    for m in ["magnitude", "snip", "grasp", "random"] {
        let rows: Vec<_> = report.rows.iter().filter(|r| r.method == m).collect();
        assert_eq!(
            rows.iter().filter(|r| r.metric == "train_loss").count(),
            5,
            "{m}"
        );
        let acc = rows.iter().find(|r| r.metric == "test_acc").unwrap();
        assert_eq!(acc.values.len(), 2);
    }
    let table = result.table();
    for needle in ["magnitude", "(i)", "(ii)", "(iii)", "test acc"] {
        assert!(table.contains(needle), "{needle} missing from\n{table}");
    }
    let svg = result.chart().to_svg().unwrap();
    assert!(svg.contains("grasp") && svg.contains("<polyline"));
}

#[test]
fn bad_settings_are_refused_before_any_work() {
    let data = tiny_data();
    type Edit = fn(&mut FlowConfig);
    let cases: [(&str, Edit); 5] = [
        ("measure", |c| c.measures = vec!["obs".into()]),
        ("sparsity", |c| c.sparsity = 1.0),
        ("rounds", |c| c.rounds = 0),
        ("seeds", |c| c.seeds.clear()),
        ("calibration", |c| c.calibration = 0),
    ];
    for (name, edit) in cases {
        let mut c = tiny_config();
        edit(&mut c);
        let mut called = false;
        let e = run_flow(&ReferenceBackend, Arc::clone(&data), &c, &mut |_| {
            called = true
        })
        .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidSetting { name: n, .. } if *n == name),
            "{e}"
        );
        assert!(!called);
    }
}

fn scratch(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("prunus-lab-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small_cnn(seed: u64) -> Network {
    let spec = CnnSpec {
        input: [1, 8, 8],
        channels: vec![3],
        classes: 4,
        bias: true,
    };
    Network::cnn(&spec, seed).unwrap()
}

#[test]
fn weights_and_masks_round_trip_through_safetensors() {
    let dir = scratch("checkpoint");
    let path = dir.join("net.safetensors");
    let mut net = small_cnn(1);
    let mut masks = vec![None; net.parameters().len()];
    masks[0] = Some(prunus_core::Mask::from_fn(
        net.parameters()[0].shape.clone(),
        |i| i % 4 != 1,
    ));
    net.set_masks(&masks).unwrap();
    save(&net, &path).unwrap();
    let mut other = small_cnn(2);
    assert_ne!(other.values(), net.values());
    load(&mut other, &path).unwrap();
    assert_eq!(other.values(), net.values());
    assert_eq!(other.masks(), net.masks());
    // Only the file itself: no temporary left beside it.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[test]
fn malformed_weight_files_are_clear_errors_and_change_nothing() {
    let dir = scratch("checkpoint-bad");
    let good = dir.join("good.safetensors");
    save(&small_cnn(1), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let write = |name: &str, b: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let mut other_arch = Network::mlp(&[64, 4], true, 0).unwrap();
    let truncated = write("truncated.safetensors", &bytes[..bytes.len() - 10]);
    let garbage = write("garbage.safetensors", b"not a checkpoint at all");
    let mut net = small_cnn(3);
    let before = net.clone();
    for (path, needle) in [
        (&truncated, "not a valid safetensors file"),
        (&garbage, "not a valid safetensors file"),
    ] {
        let e = load(&mut net, path).unwrap_err();
        assert!(
            matches!(e, Error::Data { .. }) && e.to_string().contains(needle),
            "{e}"
        );
        assert_eq!(net, before);
    }
    let e = load(&mut other_arch, &good).unwrap_err();
    assert!(e.to_string().contains("is not a parameter of"), "{e}");
    // A non-finite weight names its tensor.
    let mut nan = small_cnn(1);
    let mut w = nan.values()[0].clone();
    w[2] = 1.0;
    nan.set_param(0, &w).unwrap();
    save(&nan, &good).unwrap();
    let mut raw = std::fs::read(&good).unwrap();
    let one = 1.0f32.to_le_bytes();
    let at = raw.windows(4).rposition(|x| x == one).unwrap();
    raw[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let bad = write("nan.safetensors", &raw);
    let e = load(&mut net, &bad).unwrap_err();
    assert!(e.to_string().contains("non-finite"), "{e}");
    assert_eq!(net, before);
    let e = load(&mut net, &dir.join("missing.safetensors")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

#[test]
fn mnist_loads_with_the_protocol_split() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mnist");
    if !dir.exists() {
        eprintln!("skipped: no MNIST files at {}", dir.display());
        return;
    }
    let data = Dataset::mnist(&dir).unwrap();
    assert_eq!(
        (data.train.len(), data.validation.len(), data.test.len()),
        (6000, 2000, 2000)
    );
    assert_eq!(data.input, [1, 28, 28]);
    assert!(data.train.inputs.iter().all(|&p| (0.0..=1.0).contains(&p)));
    // Every class appears in every split.
    for split in [&data.train, &data.validation, &data.test] {
        for c in 0..10u8 {
            assert!(split.labels.contains(&c));
        }
    }
    let e = Dataset::mnist(std::path::Path::new("/nonexistent")).unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
}

#[test]
fn the_synthetic_task_is_learnable_and_balanced_enough() {
    let data = Dataset::teacher_student(&TeacherStudent::default()).unwrap();
    assert_eq!(
        (data.train.len(), data.validation.len(), data.test.len()),
        (6000, 2000, 2000)
    );
    let mut counts = [0usize; 10];
    for &y in &data.train.labels {
        counts[usize::from(y)] += 1;
    }
    // Every class holds at least 2% of the samples.
    assert!(counts.iter().all(|&c| c >= 120), "{counts:?}");
    assert_eq!(
        data,
        Dataset::teacher_student(&TeacherStudent::default()).unwrap()
    );
    assert_ne!(
        data.train.labels,
        Dataset::teacher_student(&TeacherStudent::default().seed(1))
            .unwrap()
            .train
            .labels
    );
    let host_check = prunus_lab::host::LabHost::new(
        small_cnn(0),
        Arc::new(data),
        prunus_lab::host::Sgd::default(),
        0,
    );
    // An 8x8 network does not fit 28x28 data.
    assert!(host_check.is_err());
}
