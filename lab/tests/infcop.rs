//! The IMP-versus-InCoP protocol on a tiny synthetic task.

use std::sync::Arc;

use prunus_core::ReferenceBackend;
use prunus_core::methods::imp::Ending;
use prunus_cpu::{CpuBackend, Par};
use prunus_lab::data::{Dataset, TeacherStudent};
use prunus_lab::infcop::{InfcopConfig, METHODS, StepKind, run_infcop};
use prunus_lab::{Error, ProtocolResult};

fn tiny_config() -> InfcopConfig {
    let mut c = InfcopConfig::default();
    c.seeds = vec![0, 1];
    c.hidden = vec![12, 8];
    c.target = 0.6;
    c.dense_epochs = 3;
    c.max_epochs = 4;
    c
}

fn tiny_data() -> Arc<Dataset> {
    let spec = TeacherStudent::default().input([1, 6, 6]).samples(500);
    Arc::new(Dataset::teacher_student(&spec).unwrap())
}

#[test]
fn a_tiny_protocol_runs_every_method_to_the_same_sparsity() {
    let data = tiny_data();
    let config = tiny_config();
    let cpu = CpuBackend::new(Par::Rayon(2)).unwrap();
    let mut lines = Vec::new();
    let result = run_infcop(&cpu, Arc::clone(&data), &config, &mut |l| {
        lines.push(l.to_string())
    })
    .unwrap();
    assert_eq!(result.runs.len(), 2);
    let rounds = 5; // 0.2, 0.36, 0.488, 0.5904, 0.6
    for seed in &result.runs {
        let names: Vec<_> = seed.iter().map(|r| r.method).collect();
        assert_eq!(names, METHODS);
        // The same dense network for every method of a seed.
        let dense = &seed[0].run.rounds[0];
        for r in seed {
            assert_eq!(r.run.rounds[0].validation, dense.validation);
            assert_eq!(r.run.rounds.len(), rounds + 1, "{}", r.method);
            assert!((r.run.last().sparsity - 0.6).abs() < 0.01);
            assert!(r.run.retraining_epochs() <= rounds * 4);
        }
        // Classic IMP and imp-global always retrain fully.
        for r in &seed[..2] {
            assert_eq!(r.run.retraining_epochs(), rounds * 4);
            assert!(r.run.rounds[1..].iter().all(|x| x.ending == Ending::Limit));
        }
    }
    // Both thresholds calibrated on seed 0, within the tolerance there.
    assert_eq!(result.calibration.len(), 2);
    for c in &result.calibration {
        assert!(!c.given);
        assert!(c.epsilon > 0.0 && c.epsilon.is_finite());
        assert!(c.worst_drop <= config.tolerance + 1e-9);
        assert!(c.simulated_epochs <= c.trace_epochs);
        assert_eq!(c.rounds, rounds);
    }
    // One line per round and one per threshold.
    assert_eq!(lines.len(), 2 * 4 * (rounds + 1) + 2);
    let table = result.table();
    for needle in [
        "imp-global",
        "incop-if",
        "incop-gf",
        "% saved",
        "per round",
        "official ε",
    ] {
        assert!(table.contains(needle), "{needle} missing from\n{table}");
    }
    let report = result.report().unwrap();
    assert_eq!(report.protocol, "infcop");
    for m in METHODS {
        for metric in ["epochs", "wall_s", "test_acc", "val_acc", "rounds"] {
            let finals: Vec<_> = report
                .rows
                .iter()
                .filter(|r| r.method == m && r.metric == metric && r.round.is_none())
                .collect();
            assert_eq!(finals.len(), 1, "{m} {metric}");
            assert_eq!(finals[0].values.len(), 2);
        }
        let per_round = report
            .rows
            .iter()
            .filter(|r| r.method == m && r.metric == "test_acc" && r.round.is_some())
            .count();
        assert_eq!(per_round, rounds);
    }
    let epochs = report
        .rows
        .iter()
        .find(|r| r.method == "imp" && r.metric == "epochs" && r.round.is_none())
        .unwrap();
    assert_eq!(epochs.values, [20.0, 20.0]);
    let chart = result.chart();
    assert_eq!(chart.series.len(), 4);
    assert!(chart.series.iter().all(|s| s.points.len() == rounds + 1));

    // The same masks on the reference backend.
    let reference = run_infcop(&ReferenceBackend, Arc::clone(&data), &config, &mut |_| {}).unwrap();
    for (a, b) in reference
        .runs
        .iter()
        .flatten()
        .zip(result.runs.iter().flatten())
    {
        assert_eq!(a.run.masks, b.run.masks, "{}", a.method);
    }
}

#[test]
fn given_thresholds_and_the_pq_step_are_used() {
    let mut config = tiny_config();
    config.seeds = vec![1];
    config.step = StepKind::Pq;
    config.epsilon_if = Some(1.0);
    config.epsilon_gf = Some(1e-12);
    let result = run_infcop(&ReferenceBackend, tiny_data(), &config, &mut |_| {}).unwrap();
    let runs = &result.runs[0];
    assert!(result.calibration.iter().all(|c| c.given));
    // ε = 1 fires after the first epoch of every round; 1e-12 never fires.
    let incop_if = &runs[2].run;
    assert!(
        incop_if.rounds[1..]
            .iter()
            .all(|r| r.epochs == 1 && r.ending == Ending::Rule)
    );
    let incop_gf = &runs[3].run;
    assert_eq!(
        incop_gf.retraining_epochs(),
        4 * (incop_gf.rounds.len() - 1)
    );
    // The PQ-index step ends exactly at the target too.
    assert!((incop_gf.last().sparsity - 0.6).abs() < 0.01);
    assert!(result.table().contains("PQ-index global"));
}

#[test]
fn bad_settings_are_refused() {
    let data = tiny_data();
    let mut bad = Vec::new();
    let mut c = tiny_config();
    c.target = 1.5;
    bad.push(c);
    let mut c = tiny_config();
    c.tolerance = -1.0;
    bad.push(c);
    let mut c = tiny_config();
    c.epsilon_gf = Some(0.0);
    bad.push(c);
    let mut c = tiny_config();
    c.rate = 0.0;
    bad.push(c);
    let mut c = tiny_config();
    c.seeds.clear();
    bad.push(c);
    let mut c = tiny_config();
    c.warmup_epochs = 9;
    bad.push(c);
    for c in bad {
        let err = run_infcop(&ReferenceBackend, Arc::clone(&data), &c, &mut |_| {}).unwrap_err();
        assert!(
            matches!(err, Error::InvalidSetting { .. } | Error::Core(_)),
            "{err}"
        );
    }
}

#[test]
fn the_report_carries_the_calibration_trace() {
    let mut config = tiny_config();
    config.seeds = vec![0];
    config.target = 0.36;
    let result = run_infcop(&ReferenceBackend, tiny_data(), &config, &mut |_| {}).unwrap();
    let report = result.report().unwrap();
    for metric in ["val_acc", "information_distance", "gradient_distance"] {
        let rows: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.method == "imp-global" && r.metric == metric && r.epoch.is_some())
            .collect();
        // 2 rounds of 4 epochs.
        assert_eq!(rows.len(), 8, "{metric}");
        assert_eq!((rows[7].round, rows[7].epoch), (Some(2), Some(4)));
    }
}
