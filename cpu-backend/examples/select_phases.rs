//! Times the backend passes of a global magnitude selection one by one, at
//! every instruction-set level the processor supports: where `prunus bench
//! select`'s time goes.
//!
//! `cargo run --release -p prunus-cpu --example select_phases [N] [--seq]`

use std::time::Instant;

use prunus_core::prune;
use prunus_core::{Backend, KeyRule, Layer, PruneConfig, ScoreView, Shape};
use prunus_cpu::{CpuBackend, CpuTensor, Par, SimdLevel};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn main() -> Result<(), prunus_core::Error> {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map_or(100_000_000, |s| s.parse().expect("a count"));
    // `--seq` runs every pass on the calling thread alone.
    let par = if std::env::args().any(|a| a == "--seq") {
        Par::Seq
    } else {
        Par::Rayon(0)
    };
    let layers = 50;
    let per = n / layers;
    // Gaussian-like weights (sum of four uniforms), distinct per layer.
    let data: Vec<Vec<f32>> = (0..layers)
        .map(|l| {
            (0..per as u64)
                .map(|i| {
                    (0..4)
                        .map(|s| prunus_core::contract::random::uniform(l as u64, s, i))
                        .sum::<f32>()
                        - 2.0
                })
                .collect()
        })
        .collect();
    let shape = Shape::vector(per);
    for level in SimdLevel::supported() {
        let b = CpuBackend::new(par)?.with_simd(level)?;
        let tensors: Vec<CpuTensor<'_>> = data
            .iter()
            .map(|d| b.borrow(d, &shape))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&CpuTensor<'_>> = tensors.iter().collect();
        let views: Vec<ScoreView<'_, CpuBackend<'_>>> =
            tensors.iter().map(ScoreView::new).collect();
        let names: Vec<String> = (0..layers).map(|i| format!("l{i}")).collect();
        let ls: Vec<Layer<'_, CpuBackend<'_>>> = names
            .iter()
            .zip(&tensors)
            .map(|(n, t)| Layer::new(n, t))
            .collect();
        let config = PruneConfig::new(0.9).global().allow_empty(true);
        // The 90% quantile's 16-bit bucket, from the sample.
        let mut sample = b.sample_keys(&views, KeyRule::ABS, 64, 64)?;
        sample.sort_unstable();
        let q = sample[sample.len() * 9 / 10];
        let (lo, hi) = (q & 0xFFFF_0000, q | 0xFFFF);
        let reps = 9;
        let floor = [false, true]
            .map(|prefetch| {
                time(reps, || {
                    std::hint::black_box(b.read_pass(&refs, prefetch));
                })
            })
            .into_iter()
            .fold(f64::INFINITY, f64::min);
        let sample_ms = time(reps, || {
            std::hint::black_box(b.sample_keys(&views, KeyRule::ABS, 64, 64).unwrap());
        });
        let range_ms = time(reps, || {
            std::hint::black_box(b.range_masks(&views, KeyRule::ABS, lo, hi).unwrap());
        });
        let hist_ms = time(reps, || {
            std::hint::black_box(
                b.histogram(
                    &views,
                    KeyRule::ABS,
                    prunus_core::contract::histogram::KeyWindow::High,
                )
                .unwrap(),
            );
        });
        let prune_ms = time(reps, || {
            std::hint::black_box(prune(&b, &ls, &config).unwrap());
        });
        let gathered = b
            .range_masks(&views, KeyRule::ABS, lo, hi)?
            .candidates
            .len();
        println!(
            "{level:>8}: floor {floor:6.2} ms  sample {sample_ms:6.2}  range {range_ms:6.2} ({gathered} gathered)  histogram {hist_ms:6.2}  prune {prune_ms:6.2} ms"
        );
    }
    Ok(())
}
