//! What structured pruning buys on 7B shapes: a synthetic Llama-2-7B-shaped
//! model folder (hidden 4096, intermediate 11008, 32 heads, vocabulary
//! 32,000, bfloat16, random weights) with a few blocks, pruned by magnitude
//! (no calibration) to half of its MLP channels and three quarters of its
//! heads; then the files' sizes, the parameters, and candle's time for the
//! blocks' forward pass, a whole prefill and token-by-token decoding,
//! before and after.
//!
//! ```sh
//! cargo run --release -p prunus-candle --example structured_bench -- 2 128 /tmp
//! ```
//!
//! Arguments: blocks (2), prompt tokens (128), and the folder to write the
//! two models in (the system's temporary folder); both are removed after.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use prunus_candle::eval::decoder_speed;
use prunus_candle::llama::LlamaConfig;
use prunus_candle::structured::{StructuredMethod, StructuredSettings, prune_folder_structured};
use prunus_candle::{FolderWriter, Graph, ModelFolder, Part, Result, Structure, open_graph};
use prunus_cpu::{CpuBackend, Par};

/// Writes the synthetic model folder.
fn write_model(dir: &Path, blocks: usize) -> Result<()> {
    let mut config = LlamaConfig::default();
    config.num_hidden_layers = blocks;
    config.vocab_size = 32_000;
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
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    let json = serde_json::json!({
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": blocks,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
        "torch_dtype": "bfloat16",
    });
    std::fs::write(dir.join("config.json"), json.to_string())
        .map_err(|e| prunus_candle::Error::io("write", dir.display(), e))?;
    Ok(())
}

fn file_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("model.safetensors")).map_or(0, |m| m.len())
}

/// Seconds for the blocks alone and for a whole forward pass over
/// `tokens`, best of 3.
fn forward_seconds(graph: &dyn Graph, tokens: &[u32]) -> Result<(f64, f64)> {
    let (mut blocks, mut whole) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        let h0 = graph.embed(tokens)?;
        let clock = Instant::now();
        let mut h = h0;
        for i in 0..graph.blocks() {
            h = graph.block(i, &h, None)?;
        }
        blocks = blocks.min(clock.elapsed().as_secs_f64());
        let clock = Instant::now();
        graph.forward(tokens)?;
        whole = whole.min(clock.elapsed().as_secs_f64());
    }
    Ok((blocks, whole))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let blocks: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(2);
    let seq: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(128);
    let root = args.get(2).map_or_else(std::env::temp_dir, Into::into);
    let work = tempfile::tempdir_in(&root)
        .map_err(|e| prunus_candle::Error::io("create a folder in", root.display(), e))?;
    let dense_dir = work.path().join("dense");
    let pruned_dir = work.path().join("pruned");
    let clock = Instant::now();
    write_model(&dense_dir, blocks)?;
    println!(
        "wrote a 7B-shaped model of {blocks} blocks in {:.1} s",
        clock.elapsed().as_secs_f64()
    );

    let folder = ModelFolder::open(&dense_dir)?;
    let mut graph = open_graph(&folder, &Device::Cpu)?;
    let parts = [(Structure::MlpChannels, 0.5), (Structure::Heads, 0.25)];
    let settings =
        StructuredSettings::new(StructuredMethod::Magnitude, parts.into_iter().collect());
    let cpu = CpuBackend::new(Par::Rayon(0))?;
    let clock = Instant::now();
    let mut writer = FolderWriter::create(&folder, &pruned_dir, false)?;
    prune_folder_structured(
        &cpu,
        &folder,
        &mut *graph,
        &Device::Cpu,
        None,
        &settings,
        &mut writer,
        &mut |_| {},
    )?;
    writer.finish(&[])?;
    println!(
        "pruned by magnitude (mlp=0.5, heads=0.25) and wrote it in {:.1} s",
        clock.elapsed().as_secs_f64()
    );

    let pruned = ModelFolder::open(&pruned_dir)?;
    let params = |f: &ModelFolder, blocks_only: bool| -> u64 {
        f.names()
            .iter()
            .filter(|n| !blocks_only || n.starts_with("model.layers."))
            .map(|n| f.info(n).map_or(0, |t| t.numel()))
            .sum()
    };
    let (bytes_d, bytes_p) = (file_bytes(&dense_dir), file_bytes(&pruned_dir));
    println!(
        "file: {:.3} GB -> {:.3} GB ({:.3}); parameters: all {} -> {} ({:.3}), blocks {} -> {} ({:.3})",
        bytes_d as f64 / 1e9,
        bytes_p as f64 / 1e9,
        bytes_p as f64 / bytes_d as f64,
        params(&folder, false),
        params(&pruned, false),
        params(&pruned, false) as f64 / params(&folder, false) as f64,
        params(&folder, true),
        params(&pruned, true),
        params(&pruned, true) as f64 / params(&folder, true) as f64,
    );

    let tokens: Vec<u32> = (0..seq)
        .map(|t| ((t * 104_729) % 31_999) as u32 + 1)
        .collect();
    let mut timings = Vec::new();
    for (label, f) in [("dense", &folder), ("pruned", &pruned)] {
        let mut g = open_graph(f, &Device::Cpu)?;
        g.load_all(f)?;
        let (b, w) = forward_seconds(&*g, &tokens)?;
        let speed = decoder_speed(&*g, &tokens, 16, 3)?;
        println!(
            "{label:>6}: blocks {:.3} s, whole forward {:.3} s for {seq} tokens; prefill {:.0} \
             tokens/s, decode {:.2} tokens/s",
            b, w, speed.prefill_tokens_per_s, speed.decode_tokens_per_s
        );
        timings.push((b, w, speed));
        for i in 0..g.blocks() {
            g.release(Part::Block(i));
        }
    }
    let (d, p) = (&timings[0], &timings[1]);
    println!(
        "pruned / dense: blocks' forward time {:.3}, whole forward {:.3}; prefill speed-up {:.2}x, \
         decode speed-up {:.2}x",
        p.0 / d.0,
        p.1 / d.1,
        p.2.prefill_tokens_per_s / d.2.prefill_tokens_per_s,
        p.2.decode_tokens_per_s / d.2.decode_tokens_per_s
    );
    Ok(())
}
