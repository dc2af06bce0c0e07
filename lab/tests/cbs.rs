//! The CBS protocol on a tiny synthetic task.

use std::sync::Arc;

use prunus_core::ReferenceBackend;
use prunus_cpu::{CpuBackend, Par};
use prunus_lab::cbs::{CbsConfig, METHODS, run_cbs};
use prunus_lab::data::{Dataset, TeacherStudent};
use prunus_lab::{Error, ProtocolResult};

fn tiny_config() -> CbsConfig {
    let mut c = CbsConfig::default();
    c.seeds = vec![0, 1];
    c.sparsities = vec![0.0, 0.5, 0.9];
    c.hidden = vec![6, 5];
    c.epochs = 3;
    c.fisher_samples = Some(40);
    c.loss_samples = 100;
    c.search = c.search.trials(3).passes(5);
    c
}

fn tiny_data() -> Arc<Dataset> {
    let spec = TeacherStudent::default().input([1, 6, 6]).samples(400);
    Arc::new(Dataset::teacher_student(&spec).unwrap())
}

#[test]
fn a_tiny_protocol_runs_and_is_deterministic() {
    let data = tiny_data();
    let config = tiny_config();
    let cpu = CpuBackend::new(Par::Rayon(2)).unwrap();
    let mut lines = 0;
    let result = run_cbs(&cpu, Arc::clone(&data), &config, &mut |_| lines += 1).unwrap();
    // Per seed: trained, Fisher, one line per sparsity.
    assert_eq!(lines, 2 * (2 + 3));
    assert_eq!(result.runs.len(), 2);
    assert_eq!(result.fisher_samples, 40);
    for r in &result.runs {
        assert_eq!(r.test_acc.len(), 3);
        // Nothing pruned: every method is the dense network, update included.
        for (m, acc) in METHODS.iter().zip(r.test_acc[0]) {
            assert_eq!(acc, r.dense_acc, "{m} at sparsity 0");
        }
        assert!(
            r.test_acc
                .iter()
                .flatten()
                .all(|a| (0.0..=100.0).contains(a))
        );
        assert!(r.passes.iter().all(|&p| p <= 5));
    }
    let again = run_cbs(&cpu, Arc::clone(&data), &config, &mut |_| {}).unwrap();
    let strip = |r: &prunus_lab::cbs::CbsResult| {
        r.runs
            .iter()
            .map(|x| (x.dense_acc, x.test_acc.clone(), x.passes.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&result), strip(&again));
    let report = result.report().unwrap();
    assert_eq!(report.protocol, "cbs");
    for m in METHODS {
        let rows: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.method == m && r.metric == "test_acc")
            .collect();
        assert_eq!(rows.len(), 3, "{m}");
        assert!(
            rows.iter()
                .all(|r| r.values.len() == 2 && r.sparsity.is_some())
        );
    }
    for stage in ["train", "fisher", "select", "update", "total"] {
        assert!(report.timing_s.contains_key(stage), "{stage}");
    }
    let table = result.table();
    for needle in ["| 0.9 |", "paper: MP", "Gap to MP", "92.37"] {
        assert!(table.contains(needle), "{needle} missing from\n{table}");
    }
    assert!(result.chart().to_svg().unwrap().contains("CBS-S"));
}

#[test]
fn the_reference_loops_give_the_same_table() {
    let data = tiny_data();
    let mut config = tiny_config();
    config.seeds = vec![3];
    let cpu = CpuBackend::new(Par::Seq).unwrap();
    let a = run_cbs(&cpu, Arc::clone(&data), &config, &mut |_| {}).unwrap();
    let b = run_cbs(&ReferenceBackend, data, &config, &mut |_| {}).unwrap();
    assert_eq!(a.runs[0].test_acc, b.runs[0].test_acc);
}

#[test]
fn bad_settings_are_refused_before_any_work() {
    let data = tiny_data();
    type Edit = fn(&mut CbsConfig);
    let cases: [(&str, Edit); 5] = [
        ("sparsity", |c| c.sparsities = vec![0.5, 1.5]),
        ("seeds", |c| c.seeds.clear()),
        ("hidden", |c| c.hidden = vec![4, 0]),
        ("samples", |c| c.fisher_samples = Some(0)),
        ("damping", |c| c.fisher = c.fisher.damping(0.0)),
    ];
    for (name, edit) in cases {
        let mut c = tiny_config();
        edit(&mut c);
        let mut called = false;
        let e = run_cbs(&ReferenceBackend, Arc::clone(&data), &c, &mut |_| {
            called = true
        });
        assert!(
            matches!(e, Err(Error::InvalidSetting { .. })),
            "{name}: {e:?}"
        );
        assert!(!called, "{name}: work started");
    }
}
