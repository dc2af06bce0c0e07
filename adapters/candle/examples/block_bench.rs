//! Calibration throughput, per-layer solve times and peak memory of the
//! block-by-block driver on a synthetic LLaMA block of 7B shapes (hidden
//! 4096, intermediate 11008, 32 heads), or of a real model folder.
//!
//! ```sh
//! cargo run --release -p prunus-candle --example block_bench -- sparsegpt 4 512
//! cargo run --release -p prunus-candle --example block_bench -- wanda 128 512 ../shared/data/minilm-l6-v2
//! cargo run --release -p prunus-candle --features cuda --example block_bench -- sparsegpt 128 2048 --device cuda
//! ```
//!
//! Arguments: method (magnitude, wanda, sparsegpt, obs), samples, tokens
//! per sample, and optionally a model folder (random token ids are used
//! either way: the figures are of speed and memory, not quality);
//! `--device cpu|cuda[:N]|metal` anywhere runs the forward and the
//! statistics there (the solves stay on the CPU backend). One
//! 7B block stands for all 32: the forward cost and the solves scale with
//! the number of blocks, the memory does not.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use prunus_candle::device::device_name;
use prunus_candle::llama::{Llama, LlamaConfig};
use prunus_candle::pruning::{Job, Method, Settings, Sink, prune_model};
use prunus_candle::{ComputeDevice, Graph, ModelFolder, Result, StatsPlace, Weights, open_graph};
use prunus_core::methods::layerwise::Target;
use prunus_cpu::{CpuBackend, Par};

/// Drops the pruned weights (only the timings matter).
struct Discard;

impl Sink for Discard {
    fn put(&mut self, _: &str, _: &[f32]) -> Result<()> {
        Ok(())
    }

    fn put_tensor(&mut self, _: &str, _: &[usize], _: &[f32]) -> Result<()> {
        Ok(())
    }
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn seven_b_block(device: &Device) -> Result<(Box<dyn Graph>, HashMap<String, Tensor>)> {
    // The default is Llama-2-7B; one block and a small vocabulary.
    let mut config = LlamaConfig::default();
    config.num_hidden_layers = 1;
    config.vocab_size = 1024;
    let mut weights = HashMap::new();
    for (name, shape) in config.tensor_shapes() {
        let t = if shape.len() == 1 {
            Tensor::ones(shape.as_slice(), candle_core::DType::F32, &Device::Cpu)?
        } else {
            (Tensor::randn(0f32, 1.0, shape.as_slice(), &Device::Cpu)? * 0.02)?
        };
        weights.insert(name, t);
    }
    Ok((Box::new(Llama::new(config, device.clone())?), weights))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let device: ComputeDevice = match args.iter().position(|a| a == "--device") {
        Some(i) => {
            let name = args.get(i + 1).cloned().unwrap_or_default();
            args.drain(i..(i + 2).min(args.len()));
            name.parse()?
        }
        None => ComputeDevice::Cpu,
    };
    let device = device.open()?;
    let method = match args.first().map(String::as_str).unwrap_or("sparsegpt") {
        "magnitude" => Method::Magnitude,
        "wanda" => Method::Wanda,
        "obs" => Method::Obs,
        _ => Method::SparseGpt,
    };
    let samples: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(4);
    let seq: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(512);
    let folder = args.get(3).map(ModelFolder::open).transpose()?;
    let (mut graph, memory, label) = match &folder {
        Some(f) => (open_graph(f, &device)?, None, f.dir().display().to_string()),
        None => {
            let (g, w) = seven_b_block(&device)?;
            (
                g,
                Some(w),
                "one synthetic 7B-shaped LLaMA block".to_string(),
            )
        }
    };
    let weights: &dyn Weights = match (&folder, &memory) {
        (Some(f), _) => f,
        (None, Some(w)) => w,
        (None, None) => unreachable!("one of the two is set"),
    };
    let vocab = if folder.is_some() { 1000 } else { 1024 };
    let seq = seq.min(graph.max_len());
    let tokens: Vec<Vec<u32>> = (0..samples)
        .map(|s| {
            (0..seq)
                .map(|t| ((s * 7919 + t * 104_729) % (vocab - 1)) as u32 + 1)
                .collect()
        })
        .collect();
    let cpu = CpuBackend::new(Par::Rayon(0))?;
    let all = |_: &str| true;
    let job = Job {
        backend: &cpu,
        dense: &cpu,
        device: &device,
        wanted: &all,
        stats: StatsPlace::Auto,
    };
    let settings = Settings::new(method, Target::Sparsity(0.5));
    let clock = Instant::now();
    let report = prune_model(
        &job,
        &mut *graph,
        weights,
        &tokens,
        &settings,
        &mut Discard,
        &mut |_| {},
    )?;
    println!(
        "{label}: {} on {samples} samples x {seq} tokens, {} blocks, on {}",
        method.name(),
        graph.blocks(),
        device_name(&device)
    );
    for l in &report.layers {
        println!(
            "  block {} {:<40} [{:>5}, {:>5}]  {:>8.2} s  relative error {:.4}",
            l.block,
            l.name,
            l.shape[0],
            l.shape[1],
            l.seconds,
            l.relative_error.unwrap_or(f64::NAN)
        );
    }
    println!(
        "forward (dense with recording, then pruned) {:.1} s: {:.0} calibration tokens/s; \
         solves {:.1} s; statistics {:.0} MiB; total {:.1} s; peak RSS {:.0} MiB",
        report.forward_seconds,
        report.tokens as f64 / report.forward_seconds.max(1e-9),
        report.solve_seconds,
        report.stats_bytes as f64 / (1u64 << 20) as f64,
        clock.elapsed().as_secs_f64(),
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    if let Some(b) = report.device_bytes {
        println!(
            "GPU memory in use after the block's recording: {:.0} MiB (weights, statistics, \
             hidden states)",
            b as f64 / (1u64 << 20) as f64
        );
    }
    Ok(())
}
