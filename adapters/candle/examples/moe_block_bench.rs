//! SparseGPT on one mixture-of-experts block of a large shape, in one
//! block's memory: a synthetic `qwen3_moe` model folder (hidden 2048, 32
//! query heads and 4 KV heads of 128, 64 experts of width 768 with 8 per
//! token, the shape of a Qwen3-30B-A3B block with half its experts;
//! bfloat16, random weights, a vocabulary of 1,000) with one block, pruned
//! to 50% by SparseGPT on random calibration tokens. Reports the tokens
//! each expert saw, the statistics held, the time and the peak resident
//! memory (the block's weights in f32, every expert's Gram matrix, the
//! calibration hidden states), against the block's size.
//!
//! ```sh
//! cargo run --release -p prunus-candle --example moe_block_bench -- 16 256 /tmp
//! ```
//!
//! Arguments: calibration samples (16), tokens per sample (256), and the
//! folder to write the model and its pruned copy in (the system's
//! temporary folder); both are removed after.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use prunus_candle::llama::LlamaConfig;
use prunus_candle::pruning::{Job, Method, Settings, prune_folder};
use prunus_candle::{FolderWriter, ModelFolder, Result, StatsPlace, open_graph};
use prunus_core::methods::layerwise::Target;
use prunus_cpu::{CpuBackend, Par};

const EXPERTS: usize = 64;

fn config_json() -> serde_json::Value {
    serde_json::json!({
        "model_type": "qwen3_moe",
        "architectures": ["Qwen3MoeForCausalLM"],
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "moe_intermediate_size": 768,
        "num_hidden_layers": 1,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "num_experts": EXPERTS,
        "num_experts_per_tok": 8,
        "norm_topk_prob": true,
        "vocab_size": 1000,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": false,
        "torch_dtype": "bfloat16",
    })
}

/// Writes the synthetic model folder; its bytes.
fn write_model(dir: &Path) -> Result<u64> {
    let config = LlamaConfig::from_value(&config_json(), "<moe>")?;
    let mut tensors = HashMap::new();
    for (name, shape) in config.tensor_shapes() {
        let t = if shape.len() == 1 {
            Tensor::ones(shape.as_slice(), DType::F32, &Device::Cpu)?
        } else {
            (Tensor::randn(0f32, 1.0, shape.as_slice(), &Device::Cpu)?
                * (1.0 / (shape[1] as f64).sqrt()))?
        };
        tensors.insert(name, t.to_dtype(DType::BF16)?);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| prunus_candle::Error::io("create", dir.display(), e))?;
    let file = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &file)?;
    std::fs::write(dir.join("config.json"), config_json().to_string())
        .map_err(|e| prunus_candle::Error::io("write", dir.display(), e))?;
    Ok(std::fs::metadata(file).map_or(0, |m| m.len()))
}

/// The process's peak resident memory (VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let samples: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(16);
    let seq: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let root = args
        .get(2)
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from)
        .join(format!("prunus-moe-bench-{}", std::process::id()));
    let (input, output) = (root.join("dense"), root.join("sparse"));
    let clock = Instant::now();
    let bytes = write_model(&input)?;
    println!(
        "wrote a 1-block qwen3_moe of {EXPERTS} experts: {:.2} GB bf16 in {:.1} s",
        bytes as f64 / 1e9,
        clock.elapsed().as_secs_f64()
    );
    let rss_before = peak_rss_mib().unwrap_or(0.0);

    let folder = ModelFolder::open(&input)?;
    let mut graph = open_graph(&folder, &Device::Cpu)?;
    let tokens: Vec<Vec<u32>> = (0..samples)
        .map(|s| {
            (0..seq)
                .map(|t| ((s * 7919 + t * 104_729) % 997) as u32 + 2)
                .collect()
        })
        .collect();
    let cpu = CpuBackend::new(Par::Rayon(0))?;
    let job = Job {
        backend: &cpu,
        dense: &cpu,
        device: &Device::Cpu,
        wanted: &|_| true,
        stats: StatsPlace::Auto,
    };
    let settings = Settings::new(Method::SparseGpt, Target::Sparsity(0.5));
    let mut writer = FolderWriter::create(&folder, &output, false)?;
    let clock = Instant::now();
    let report = prune_folder(
        &job,
        &folder,
        &mut *graph,
        Some(&tokens),
        &settings,
        &mut writer,
        &mut |_| {},
    )?;
    writer.finish(&[])?;
    let wall = clock.elapsed().as_secs_f64();

    let mut counts: Vec<u64> = report
        .layers
        .iter()
        .filter(|l| l.name.ends_with(".gate_proj") && l.name.contains(".experts."))
        .map(|l| l.inputs.unwrap_or(0))
        .collect();
    counts.sort_unstable();
    let pruned: u64 = report.layers.iter().map(|l| l.pruned).sum();
    let total: u64 = report
        .layers
        .iter()
        .map(|l| (l.shape[0] * l.shape[1]) as u64)
        .sum();
    println!(
        "sparsegpt 50% on {} layers ({pruned} of {total} weights), {} samples x {seq} tokens: \
         {wall:.1} s (forward {:.1} s, solves {:.1} s)",
        report.layers.len(),
        samples,
        report.forward_seconds,
        report.solve_seconds
    );
    println!(
        "tokens per expert (of {} x 8 routed): min {}, median {}, max {}; {} experts unreached",
        samples * seq,
        counts.first().unwrap_or(&0),
        counts.get(counts.len() / 2).unwrap_or(&0),
        counts.last().unwrap_or(&0),
        report.unreached() / 3
    );
    println!(
        "statistics held at most {:.2} GB; peak resident memory {:.2} GB (after writing the \
         model: {:.2} GB); the block in f32: {:.2} GB",
        report.stats_bytes as f64 / 1e9,
        peak_rss_mib().unwrap_or(0.0) * 1.048576e-3,
        rss_before * 1.048576e-3,
        2.0 * bytes as f64 / 1e9
    );
    std::fs::remove_dir_all(&root)
        .map_err(|e| prunus_candle::Error::io("remove", root.display(), e))?;
    Ok(())
}
