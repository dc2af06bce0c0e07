//! Times global magnitude selection against one plain read of the weights.
//!
//! ```text
//! cargo run --release -p prunus-cpu --example select_speed -- [elements] [tensors] [threads] [zeros] [kept] [bf16]
//! ```
//!
//! Defaults: 100,000,000 f32 in 50 tensors, every core, sparsity 0.9. The
//! weights are roughly Gaussian with a different scale per tensor; with
//! `zeros` set to a fraction, that fraction of them is exactly zero (the
//! weights of an earlier pruning round), which piles keys into one bin; with
//! `kept` set to a fraction, every tensor comes with a survivors mask of an
//! earlier round keeping about that fraction; with `bf16` (or `1`), every
//! weight is rounded down to its top 16 bits, as bf16 weights stored in f32
//! are, so that thousands of weights tie at the threshold and the mask pass
//! has to rank ties across tensors (a partial tie budget).
//! Prints the threshold found, the best and median time of each pass over
//! several repetitions, and the ratio of the whole selection to one read
//! pass.

use std::time::{Duration, Instant};

use prunus_core::contract::histogram::KeyWindow;
use prunus_core::contract::random::uniform;
use prunus_core::select;
use prunus_core::selection::radix::RadixSelect;
use prunus_core::{Backend, KeyRule, Layer, Mask, PruneConfig, ScoreView, Shape};
use prunus_cpu::{CpuBackend, Par};
use rayon::prelude::*;

const REPS: usize = 7;

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Roughly N(0, scale²) weights (a sum of four uniforms), `zeros` of them 0,
/// each cut to its top 16 bits (a bf16 value) when `bf16`.
fn weights(len: usize, t: u32, zeros: f32, bf16: bool) -> Vec<f32> {
    let scale = 0.01 + 0.002 * t as f32;
    (0..len as u64)
        .into_par_iter()
        .map(|i| {
            let u = |s: u32| uniform(42, t * 8 + s, i);
            let x = if u(4) < zeros {
                0.0
            } else {
                (u(0) + u(1) + u(2) + u(3) - 2.0) * scale * 1.7
            };
            if bf16 {
                f32::from_bits(x.to_bits() & 0xFFFF_0000)
            } else {
                x
            }
        })
        .collect()
}

struct Timings(Vec<Duration>);

impl Timings {
    fn best(&self) -> f64 {
        self.0.iter().min().unwrap().as_secs_f64() * 1e3
    }
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    }
}

fn time<R>(t: &mut Timings, f: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let r = f();
    t.0.push(start.elapsed());
    r
}

fn main() -> prunus_core::Result<()> {
    let n: usize = arg(1, 100_000_000);
    let tensors: usize = arg(2, 50);
    let threads: usize = arg(3, 0);
    let zeros: f32 = arg(4, 0.0);
    let kept: f32 = arg(5, 0.0);
    let bf16 = std::env::args()
        .nth(6)
        .is_some_and(|s| matches!(s.as_str(), "bf16" | "1" | "true"));
    let sparsity = 0.9;

    let b = CpuBackend::new(if threads == 1 {
        Par::Seq
    } else {
        Par::Rayon(threads)
    })?;
    let per = n / tensors;
    let data: Vec<Vec<f32>> = (0..tensors)
        .map(|t| {
            weights(
                per + if t < n % tensors { 1 } else { 0 },
                t as u32,
                zeros,
                bf16,
            )
        })
        .collect();
    let shapes: Vec<Shape> = data.iter().map(|d| Shape::vector(d.len())).collect();
    let ts: Vec<_> = data
        .iter()
        .zip(&shapes)
        .map(|(d, s)| b.borrow(d, s))
        .collect::<prunus_core::Result<_>>()?;
    let refs: Vec<_> = ts.iter().collect();
    let masks: Vec<Option<Mask>> = shapes
        .iter()
        .enumerate()
        .map(|(t, s)| {
            (kept > 0.0)
                .then(|| Mask::from_fn(s.clone(), |i| uniform(7, t as u32, i as u64) < kept))
        })
        .collect();
    let views: Vec<ScoreView<'_, CpuBackend<'_>>> = ts
        .iter()
        .zip(&masks)
        .map(|(t, m)| ScoreView::with_survivors(t, m.as_ref()))
        .collect();
    let rule = KeyRule::ABS;
    let total = n as u64;
    let k = prunus_core::units_to_prune(sparsity, total);

    println!(
        "{}: {n} f32 in {tensors} tensors, sparsity {sparsity}, zeros {zeros}, \
         survivors {kept}, bf16 {bf16}",
        b.name()
    );
    let (mut read, mut high, mut low, mut mask, mut whole, mut e2e) = (
        Timings(vec![]),
        Timings(vec![]),
        Timings(vec![]),
        Timings(vec![]),
        Timings(vec![]),
        Timings(vec![]),
    );
    let mut checksum = 0u64;
    let mut found = None;
    for _ in 0..REPS {
        checksum ^= time(&mut read, || b.read_pass(&refs, true));
        let start = Instant::now();
        let mut sel = RadixSelect::new(total, k)?;
        let h = time(&mut high, || b.histogram(&views, rule, KeyWindow::High))?;
        sel.absorb(&h)?;
        if let Some(w) = sel.window() {
            let h = time(&mut low, || b.histogram(&views, rule, w))?;
            sel.absorb(&h)?;
        }
        let cut = sel.cut().expect("two passes suffice");
        // One mask pass over all tensors as one sequence: ties at the
        // threshold are ranked across tensors in the same pass.
        let out = time(&mut mask, || {
            b.threshold_masks(&views, rule, cut.threshold())
        })?;
        whole.0.push(start.elapsed());
        let pruned: u64 = out.masks.iter().map(|m| m.count_pruned()).sum();
        assert_eq!(pruned, k, "exactly k pruned");
        assert_eq!(
            out.ties.iter().sum::<u64>(),
            cut.ties,
            "the tie counts add up to the cut's"
        );
        found = Some(cut);

        let layers: Vec<String> = (0..tensors).map(|t| format!("layer{t}")).collect();
        let ls: Vec<Layer<'_, CpuBackend<'_>>> = layers
            .iter()
            .zip(&ts)
            .zip(&masks)
            .map(|((n, t), m)| Layer::new(n, t).with_mask(m.as_ref()))
            .collect();
        let config = PruneConfig::new(sparsity).allow_empty(true);
        let m = time(&mut e2e, || {
            select(&b, &ls, &config, prunus_core::Transform::Abs)
        })?;
        assert_eq!(m.iter().map(|m| m.count_pruned()).sum::<u64>(), k);
    }
    if let Some(cut) = found {
        let mode = match cut.threshold().ties {
            0 => "no tie pruned",
            prunus_core::contract::histogram::TensorCut::ALL => "every tie pruned",
            _ => "partial tie budget, ranked across tensors",
        };
        println!(
            "threshold key {:#010x} (|w| = {:e}): {} of {} tied weights pruned ({mode})",
            cut.key,
            prunus_core::contract::key::key_to_f32(cut.key),
            cut.ties,
            cut.tied
        );
    }
    let r = read.best();
    let row = |name: &str, t: &Timings| {
        println!(
            "{name:<28} best {:8.2} ms  median {:8.2} ms  ({:.2}x read)",
            t.best(),
            t.median(),
            t.best() / r
        );
    };
    row("read_pass", &read);
    row("histogram High", &high);
    if !low.0.is_empty() {
        row("histogram Low", &low);
    }
    row("threshold_masks", &mask);
    row("selection (all passes)", &whole);
    row("core::select end to end", &e2e);
    println!(
        "read bandwidth {:.1} GB/s; checksum {checksum:x}",
        n as f64 * 4.0 / r / 1e6
    );
    Ok(())
}
