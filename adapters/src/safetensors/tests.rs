//! The streamed selection's paths, each forced, against core's in-memory
//! masks: the sample hitting and missing the threshold, small tensors
//! counted key by key and large ones by histogram, guards saturating, and
//! guards whose key equals the threshold.

use std::path::Path;

use proptest::prelude::*;
use prunus_core::{Backend, Importance, Layer, PruneConfig, Shape};
use prunus_cpu::{CpuBackend, Par};

use super::checkpoint::Checkpoint;
use super::dtype::Dtype;
use super::prune::{Request, prune_tuned};
use super::stream::{Reads, Tuning};

/// A safetensors file of rank-2 tensors `(dtype, rows, values)`, named
/// `t0`, `t1`, ... in data order.
fn file(tensors: &[(Dtype, usize, Vec<f32>)]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (i, (dtype, rows, values)) in tensors.iter().enumerate() {
        let start = data.len();
        values.iter().for_each(|&v| dtype.encode(v, &mut data));
        header += &format!(
            "{}\"t{i}\":{{\"dtype\":\"{}\",\"shape\":[{rows},{}],\"data_offsets\":[{start},{}]}}",
            if i > 0 { "," } else { "" },
            dtype.name(),
            values.len() / rows,
            data.len()
        );
    }
    header.push('}');
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}

/// The masks (`.mask` tensors' bytes) of pruning `bytes` under `config`
/// with `tuning`, and the reads the selection took.
fn streamed(bytes: &[u8], config: &PruneConfig, tuning: Tuning) -> (Vec<Vec<u8>>, Reads) {
    let c = Checkpoint::from_bytes(bytes.to_vec()).unwrap();
    let mut request = Request::new(config.clone());
    request.masks = true;
    let mut out = Vec::new();
    let backend = CpuBackend::new(Par::Rayon(2)).unwrap();
    let (_, reads) = prune_tuned(
        &backend,
        &c,
        &request,
        &mut out,
        Path::new("<out>"),
        &mut |_| {},
        tuning,
    )
    .unwrap();
    let o = Checkpoint::from_bytes(out).unwrap();
    let masks = (0..o.tensors().len())
        .filter(|&i| o.tensors()[i].name.ends_with(".mask"))
        .map(|i| o.data(i).unwrap().to_vec())
        .collect();
    (masks, reads)
}

/// Core's masks for the same tensors, in memory.
fn core(bytes: &[u8], config: &PruneConfig) -> Vec<Vec<u8>> {
    let c = Checkpoint::from_bytes(bytes.to_vec()).unwrap();
    let b = CpuBackend::new(Par::Rayon(2)).unwrap();
    let tensors: Vec<_> = (0..c.tensors().len())
        .map(|i| {
            b.upload(
                &c.values(i).unwrap(),
                &Shape::new(&c.tensors()[i].shape).unwrap(),
            )
            .unwrap()
        })
        .collect();
    let names: Vec<String> = c.tensors().iter().map(|t| t.name.clone()).collect();
    let layers: Vec<Layer<'_, CpuBackend<'_>>> = names
        .iter()
        .zip(&tensors)
        .map(|(n, t)| Layer::new(n, t))
        .collect();
    prunus_core::prune(&b, &layers, config)
        .unwrap()
        .iter()
        .map(|m| m.to_bytes())
        .collect()
}

/// Deterministic values in `[-1, 1)` rounded to `levels` steps (ties when
/// `levels` is small).
fn values(n: usize, seed: u32, levels: f32) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let u = prunus_core::contract::random::uniform(7, seed, i) * 2.0 - 1.0;
            (u * levels).round() / levels
        })
        .collect()
}

/// A tuning that samples small inputs: runs of 16, no size floor.
fn sampling(small: u64) -> Tuning {
    Tuning {
        sampled_min: 0,
        sample_run: 16,
        sample_runs: 4096,
        sample_every: 2,
        max_buckets: 64,
        small,
        ..Tuning::default()
    }
}

#[test]
fn sampled_f32_selection_reads_once_and_matches_core() {
    // Large enough for a sample whose margin (four standard deviations of
    // its quantile) holds under 1/64 of it.
    let bytes = file(&[
        (Dtype::F32, 64, values(64 * 6000, 0, 1e6)),
        (Dtype::F32, 32, values(32 * 3000, 1, 1e6)),
        (Dtype::BF16, 16, values(16 * 64, 2, 1e6)),
    ]);
    for small in [0, u64::MAX] {
        for s in [0.1, 0.3, 0.7] {
            let config = PruneConfig::new(s).global();
            let every = Tuning {
                sample_every: 1,
                sample_runs: u64::MAX,
                ..sampling(small)
            };
            let (masks, reads) = streamed(&bytes, &config, every);
            assert_eq!(masks, core(&bytes, &config), "sparsity {s}, small {small}");
            assert!(reads.sampled, "sparsity {s}: the sample gave no range");
            assert_eq!(reads.fallbacks, 0, "sparsity {s}: the sample missed");
        }
    }
}

#[test]
fn a_missed_sample_falls_back_to_a_second_read_with_the_same_masks() {
    let bytes = file(&[
        (Dtype::F32, 64, values(64 * 300, 3, 1e6)),
        (Dtype::F16, 8, values(8 * 40, 4, 1e6)),
        (Dtype::F32, 32, values(32 * 500, 5, 1e6)),
    ]);
    // Bucket 0 holds no magnitude key (those set the top bit): a miss.
    let missed = Tuning {
        force_range: Some((0, 3)),
        ..sampling(0)
    };
    for s in [0.2, 0.5, 0.65] {
        let config = PruneConfig::new(s).global().min_density(0.3);
        let (masks, reads) = streamed(&bytes, &config, missed);
        assert_eq!(masks, core(&bytes, &config), "sparsity {s}");
        assert_eq!(reads.fallbacks, 1, "sparsity {s}");
    }
}

#[test]
fn guards_saturate_tensors_whose_key_equals_the_threshold() {
    // Heavy ties: each tensor's guard key tends to equal the global
    // threshold, whose ties are spread over the tensors in file order.
    let t = |seed, n| values(n, seed, 3.0);
    let bytes = file(&[
        (Dtype::BF16, 4, t(10, 400)),
        (Dtype::F32, 4, t(11, 400)),
        (Dtype::F16, 4, t(12, 400)),
        (Dtype::F32, 2, t(13, 100)),
    ]);
    let mut tied = 0;
    for small in [0, u64::MAX] {
        for s in [0.3, 0.45, 0.5, 0.62, 0.7] {
            for d in [0.3, 0.45, 0.5] {
                if s + d > 0.95 {
                    continue;
                }
                let config = PruneConfig::new(s).global().min_density(d);
                let (masks, reads) = streamed(&bytes, &config, sampling(small));
                assert_eq!(masks, core(&bytes, &config), "s {s} d {d} small {small}");
                tied += reads.tie_counts;
            }
        }
    }
    assert!(tied > 0, "no case had a guard key at the threshold");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Every path (sampled or not, small or histogram tallies, local or
    /// global, magnitude or random, with guards) prunes what core prunes.
    #[test]
    fn every_path_matches_core(
        sizes in prop::collection::vec((1usize..5, 1usize..40), 1..6),
        dtypes in prop::collection::vec(0u8..3, 6),
        levels in prop_oneof![Just(2.0f32), Just(16.0), Just(1e6)],
        sparsity in 0.0f64..1.0,
        min_density in prop_oneof![Just(0.0), 0.0f64..0.7],
        global in any::<bool>(),
        random in any::<bool>(),
        small in prop_oneof![Just(0u64), Just(u64::MAX), Just(30)],
        force in prop::option::of((0u16..0xC000, 0u16..4)),
    ) {
        let tensors: Vec<(Dtype, usize, Vec<f32>)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &(rows, cols))| {
                let dtype = [Dtype::F32, Dtype::F16, Dtype::BF16][dtypes[i] as usize];
                (dtype, rows, values(rows * cols * 8, i as u32, levels))
            })
            .collect();
        let bytes = file(&tensors);
        let mut config = PruneConfig::new(sparsity).min_density(min_density);
        config = if global { config.global() } else { config.local() };
        if random {
            config = config.importance(Importance::Random { seed: 9 });
        }
        let tuning = Tuning {
            force_range: force.map(|(lo, w)| (lo, lo + w)),
            ..sampling(small)
        };
        let c = Checkpoint::from_bytes(bytes.clone()).unwrap();
        // Only configurations core accepts (the guards can refuse).
        let n: u64 = c.tensors().iter().map(|t| t.numel()).sum();
        let cap: u64 = c
            .tensors()
            .iter()
            .map(|t| prunus_core::selection::select::prunable_units(t.numel(), &config.guards))
            .sum();
        let local_ok = c.tensors().iter().all(|t| {
            prunus_core::selection::select::units_to_prune(sparsity, t.numel())
                <= prunus_core::selection::select::prunable_units(t.numel(), &config.guards)
        });
        let ok = if global {
            prunus_core::selection::select::units_to_prune(sparsity, n) <= cap
        } else {
            local_ok
        };
        prop_assume!(ok);
        let (masks, _) = streamed(&bytes, &config, tuning);
        prop_assert_eq!(masks, core(&bytes, &config));
    }
}

#[test]
fn runs_join_small_neighbours_within_the_limits() {
    use super::stream::{RUN_BYTES, runs};
    let mb = 1u64 << 20;
    // Small spans back to back, a large one, small ones across a wide gap,
    // and enough small ones to pass the run size.
    let mut spans = vec![(0, 10, true), (10, 20, true), (20, 5 * mb, false)];
    spans.push((5 * mb, 5 * mb + 10, true));
    spans.push((7 * mb, 7 * mb + 10, true));
    let mut at = 8 * mb;
    for _ in 0..3 {
        spans.push((at, at + RUN_BYTES / 2, true));
        at += RUN_BYTES / 2;
    }
    let got = runs(&spans);
    assert_eq!(got, vec![0..2, 2..3, 3..4, 4..6, 6..8]);
}

#[test]
fn a_local_target_reads_small_tensors_once_and_a_global_one_twice() {
    let tensors: Vec<(Dtype, usize, Vec<f32>)> = (0..40)
        .map(|i| {
            let dtype = [Dtype::F32, Dtype::BF16, Dtype::F16][i % 3];
            (dtype, 4, values(4 * 24, i as u32, 16.0))
        })
        .collect();
    let bytes = file(&tensors);
    let c = Checkpoint::from_bytes(bytes.clone()).unwrap();
    let data: u64 = c.tensors().iter().map(|t| t.len()).sum();
    let backend = CpuBackend::new(Par::Rayon(2)).unwrap();
    // A global target reads twice at least (the scan, then the write; the
    // F32 tensors a third time here, for the threshold's low window).
    for (config, passes) in [
        (PruneConfig::new(0.4).local(), 1),
        (PruneConfig::new(0.4).global(), 2),
    ] {
        let mut out = Vec::new();
        let (report, _) = prune_tuned(
            &backend,
            &c,
            &Request::new(config.clone()),
            &mut out,
            Path::new("<out>"),
            &mut |_| {},
            Tuning::default(),
        )
        .unwrap();
        if passes == 1 {
            assert_eq!(report.bytes_read, data, "{:?}", config.scope);
        } else {
            assert!(report.bytes_read >= passes * data, "{:?}", config.scope);
        }
        let (masks, _) = streamed(&bytes, &config, Tuning::default());
        assert_eq!(masks, core(&bytes, &config), "{:?}", config.scope);
    }
}
