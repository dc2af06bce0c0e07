//! `prunus bench checkpoint`: prune a synthetic decoder-only transformer
//! checkpoint (dense, or a mixture of experts with tens of thousands of
//! small tensors) and compare with copying the same file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::{Args, ValueEnum};
use prunus_adapters::safetensors::Dtype;
use prunus_core::contract::random::uniform;
use prunus_lab::{Report, Row, write_atomic};
use rayon::prelude::*;

use crate::error::Error;
use crate::memory::{CpuTime, children_cpu};

/// The dtype of the synthetic weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum DtypeArg {
    /// bfloat16 (what most released decoders ship in).
    Bf16,
    /// IEEE half.
    F16,
    /// IEEE single.
    F32,
}

impl DtypeArg {
    fn dtype(self) -> Dtype {
        match self {
            DtypeArg::Bf16 => Dtype::BF16,
            DtypeArg::F16 => Dtype::F16,
            DtypeArg::F32 => Dtype::F32,
        }
    }
}

/// The tensor layout of the synthetic checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Layout {
    /// A dense LLaMA-style decoder (defaults: the 7B shapes).
    Decoder,
    /// A mixture-of-experts decoder: per layer the attention projections,
    /// a router and gate/up/down projections per expert (defaults: 130
    /// layers of 128 experts, 50,572 prunable tensors of at most 65,536
    /// weights, 0.87 B parameters).
    Moe,
}

/// Arguments of `prunus bench checkpoint`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Writes a checkpoint with the tensor names and shapes of a LLaMA-style decoder \
(embedding, per layer q/k/v/o projections, gate/up/down MLP projections and two \
RMS-norm scales, final norm, LM head; the defaults are the 7-billion-parameter \
shapes, 13.5 GB in bf16), syncs it, then times `cp` of the file (and `cp` plus \
`sync` of the copy, the same durability as prunus's output) against \
`prunus prune --sparsity S` run as a child process, whose peak resident memory is \
reported. Where the folder lacks room for the input and one output (plus 2%), the \
layer count is lowered to the largest that fits, and the run says so. Every file \
is written in a new folder of its own inside --dir and deleted at the end unless \
--keep.

--layout moe writes a mixture-of-experts decoder instead: per layer the four \
attention projections, a router [experts, hidden] and, per expert, gate and up \
[intermediate, hidden] and down [hidden, intermediate] projections. Its defaults \
(130 layers, 128 experts, hidden 256, expert intermediate 64, vocabulary 8192) \
make 50,572 prunable tensors, the case where selection memory must not grow with \
the tensor count.

The F32 comparison is `--dtype f32 --layers 4` (4.3 GB with the dense shapes).")]
pub(crate) struct CheckpointArgs {
    /// Tensor layout.
    #[arg(long, value_enum, default_value_t = Layout::Decoder)]
    pub(crate) layout: Layout,
    /// Decoder layers [default: 32, or 130 with --layout moe].
    #[arg(long)]
    pub(crate) layers: Option<usize>,
    /// Hidden size [default: 4096, or 256 with --layout moe].
    #[arg(long)]
    pub(crate) hidden: Option<usize>,
    /// MLP intermediate size, per expert with --layout moe [default: 11008,
    /// or 64 with --layout moe].
    #[arg(long)]
    pub(crate) intermediate: Option<usize>,
    /// Vocabulary size [default: 32000, or 8192 with --layout moe].
    #[arg(long)]
    pub(crate) vocab: Option<usize>,
    /// Experts per layer (--layout moe only).
    #[arg(long, default_value_t = 128)]
    pub(crate) experts: usize,
    /// Element type of every tensor.
    #[arg(long, value_enum, default_value_t = DtypeArg::Bf16)]
    pub(crate) dtype: DtypeArg,
    /// Global sparsity to prune to.
    #[arg(long, default_value_t = 0.5, value_parser = crate::args::parse_sparsity)]
    pub(crate) sparsity: f64,
    /// Folder for the files (it needs about twice the checkpoint's size).
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
    /// Keep the generated files.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Also write the results as a JSON report (written atomically).
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
}

/// One tensor of the synthetic decoder.
struct Spec {
    name: String,
    shape: Vec<usize>,
    /// Weights are uniform in `[-scale, scale)`; norm scales are 1.
    norm: bool,
}

/// A LLaMA-style decoder with a dense MLP per layer (`experts` = `None`),
/// or a mixture of experts: a router and `experts` small MLPs per layer.
fn decoder(
    layers: usize,
    hidden: usize,
    inter: usize,
    vocab: usize,
    experts: Option<usize>,
) -> Vec<Spec> {
    let w = |name: String, shape: Vec<usize>| Spec {
        name,
        shape,
        norm: false,
    };
    let n = |name: String| Spec {
        name,
        shape: vec![hidden],
        norm: true,
    };
    let mlp = |v: &mut Vec<Spec>, q: &str| {
        v.push(w(format!("{q}.gate_proj.weight"), vec![inter, hidden]));
        v.push(w(format!("{q}.up_proj.weight"), vec![inter, hidden]));
        v.push(w(format!("{q}.down_proj.weight"), vec![hidden, inter]));
    };
    let mut v = vec![w("model.embed_tokens.weight".into(), vec![vocab, hidden])];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            v.push(w(
                format!("{p}.self_attn.{proj}.weight"),
                vec![hidden, hidden],
            ));
        }
        match experts {
            None => mlp(&mut v, &format!("{p}.mlp")),
            Some(experts) => {
                v.push(w(format!("{p}.mlp.gate.weight"), vec![experts, hidden]));
                for e in 0..experts {
                    mlp(&mut v, &format!("{p}.mlp.experts.{e}"));
                }
            }
        }
        v.push(n(format!("{p}.input_layernorm.weight")));
        v.push(n(format!("{p}.post_attention_layernorm.weight")));
    }
    v.push(n("model.norm.weight".into()));
    v.push(w("lm_head.weight".into(), vec![vocab, hidden]));
    v
}

/// The shapes the arguments ask for, with `layers` layers.
fn specs(args: &CheckpointArgs, layers: usize) -> Vec<Spec> {
    let moe_layout = args.layout == Layout::Moe;
    let pick = |v: Option<usize>, dense: usize, experts: usize| {
        v.unwrap_or(if moe_layout { experts } else { dense })
    };
    let hidden = pick(args.hidden, 4096, 256);
    let inter = pick(args.intermediate, 11008, 64);
    let vocab = pick(args.vocab, 32000, 8192);
    match args.layout {
        Layout::Decoder => decoder(layers, hidden, inter, vocab, None),
        Layout::Moe => decoder(layers, hidden, inter, vocab, Some(args.experts)),
    }
}

fn numel(s: &Spec) -> u64 {
    s.shape.iter().map(|&d| d as u64).product()
}

/// Bytes free in `dir`, from `df` (POSIX output); `None` when unknown.
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.lines().nth(1)?;
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

/// Writes the synthetic checkpoint to `path` and syncs it.
fn generate(path: &Path, specs: &[Spec], dtype: Dtype) -> Result<u64, Error> {
    let io = |e: std::io::Error| {
        Error::Adapters(prunus_adapters::Error::Io {
            action: "write",
            path: path.display().to_string(),
            message: e.to_string(),
        })
    };
    let width = dtype.bits() / 8;
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({"format": "pt", "source": "prunus bench checkpoint (synthetic)"}),
    );
    let mut at = 0u64;
    for s in specs {
        let len = numel(s) * width as u64;
        header.insert(
            s.name.clone(),
            serde_json::json!({"dtype": dtype.name(), "shape": s.shape, "data_offsets": [at, at + len]}),
        );
        at += len;
    }
    let mut text = serde_json::Value::Object(header).to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let file = File::create(path).map_err(io)?;
    let mut w = BufWriter::with_capacity(8 << 20, &file);
    w.write_all(&(text.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(text.as_bytes()).map_err(io)?;
    const BLOCK: u64 = 16 << 20;
    let mut buf = Vec::new();
    for (t, s) in specs.iter().enumerate() {
        let n = numel(s);
        let mut start = 0u64;
        while start < n {
            let end = (start + BLOCK).min(n);
            buf.clear();
            buf.resize((end - start) as usize * width, 0);
            buf.par_chunks_mut(width * 4096).enumerate().for_each_init(
                Vec::new,
                |bytes, (c, out)| {
                    bytes.clear();
                    for j in 0..out.len() / width {
                        let i = start + (c * 4096 + j) as u64;
                        let x = if s.norm {
                            1.0
                        } else {
                            (uniform(42, t as u32, i) * 2.0 - 1.0) * 0.02
                        };
                        dtype.encode(x, bytes);
                    }
                    out.copy_from_slice(bytes);
                },
            );
            w.write_all(&buf).map_err(io)?;
            start = end;
        }
    }
    w.flush().map_err(io)?;
    drop(w);
    file.sync_all().map_err(io)?;
    Ok(8 + text.len() as u64 + at)
}

/// Seconds taken by `program args`, which must succeed.
fn timed(program: &str, args: &[&Path]) -> Result<f64, Error> {
    let t = Instant::now();
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|e| Error::system(format!("run {program}"), e))?;
    if !status.success() {
        return Err(Error::system(format!("run {program}"), status));
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Creates a new folder `prunus-bench-<pid>[-<i>]` in `dir`, never one that
/// exists.
fn scratch_dir(dir: &Path) -> Result<PathBuf, Error> {
    let base = format!("prunus-bench-{}", std::process::id());
    for i in 0..1000 {
        let name = if i == 0 {
            base.clone()
        } else {
            format!("{base}-{i}")
        };
        let path = dir.join(name);
        match std::fs::create_dir(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::system(format!("create {}", path.display()), e)),
        }
    }
    Err(Error::system(
        format!("create a scratch folder in {}", dir.display()),
        "a thousand names are taken",
    ))
}

/// Runs `prunus bench checkpoint`.
pub(crate) fn checkpoint(args: &CheckpointArgs) -> Result<(), Error> {
    let dtype = args.dtype.dtype();
    let width = dtype.bits() as u64 / 8;
    let size =
        |layers: usize| -> u64 { specs(args, layers).iter().map(|s| numel(s) * width).sum() };
    let asked = args
        .layers
        .unwrap_or(if args.layout == Layout::Moe { 130 } else { 32 });
    let mut layers = asked;
    let free = free_bytes(&args.dir);
    if let Some(free) = free {
        while layers > 1 && size(layers) * 204 / 100 > free {
            layers -= 1;
        }
        if size(layers) * 204 / 100 > free {
            return Err(Error::argument(
                "--dir",
                args.dir.display(),
                format!(
                    "a folder with room for two copies of one layer ({:.1} GB free there)",
                    free as f64 / 1e9
                ),
            ));
        }
    }
    if layers < asked {
        println!(
            "note: {} has {:.1} GB free, so the benchmark uses {layers} of the {asked} layers asked \
             for",
            args.dir.display(),
            free.unwrap_or(0) as f64 / 1e9,
        );
    }
    let specs = specs(args, layers);
    let shape = |name: &str, d: usize| {
        specs
            .iter()
            .find(|s| s.name == name)
            .map_or(0, |s| s.shape[d])
    };
    let (hidden, vocab) = (
        shape("model.embed_tokens.weight", 1),
        shape("model.embed_tokens.weight", 0),
    );
    let intermediate = match args.layout {
        Layout::Decoder => shape("model.layers.0.mlp.gate_proj.weight", 0),
        Layout::Moe => shape("model.layers.0.mlp.experts.0.gate_proj.weight", 0),
    };
    let prunable = specs.iter().filter(|s| !s.norm).count();
    let params: u64 = specs.iter().map(numel).sum();
    // A folder of the benchmark's own, so that no file already in --dir
    // (a user's, or one a killed earlier run left) is read, replaced or
    // refused as an existing output.
    let scratch = scratch_dir(&args.dir)?;
    let input = scratch.join("prunus-bench-decoder.safetensors");
    let copy = scratch.join("prunus-bench-decoder.copy.safetensors");
    let output = scratch.join("prunus-bench-decoder.pruned.safetensors");
    let cleanup = |paths: &[&Path]| {
        for p in paths {
            let _ = std::fs::remove_file(p);
        }
    };
    let t = Instant::now();
    let bytes = generate(&input, &specs, dtype)?;
    let gen_s = t.elapsed().as_secs_f64();
    let experts = match args.layout {
        Layout::Decoder => String::new(),
        Layout::Moe => format!(", {} experts", args.experts),
    };
    println!(
        "{:?} {layers} layers{experts}, hidden {hidden}, intermediate {intermediate}, vocab \
         {vocab}: {} tensors ({prunable} prunable), {:.2} B parameters, {dtype}, {:.2} GB \
         (written and synced in {gen_s:.1} s)",
        args.layout,
        specs.len(),
        params as f64 / 1e9,
        bytes as f64 / 1e9
    );
    // CPU times of cp and of prunus, each the difference around the child.
    type Cpu = (Option<CpuTime>, Option<CpuTime>);
    let result = (|| -> Result<(f64, f64, f64, Cpu, serde_json::Value), Error> {
        let cp_before = children_cpu();
        let cp_s = timed("cp", &[&input, &copy])?;
        let cp_cpu = cp_before.zip(children_cpu()).map(|(b, a)| a.since(b));
        let sync_s = timed("sync", &[&copy])?;
        cleanup(&[&copy]);
        let exe =
            std::env::current_exe().map_err(|e| Error::system("find the prunus binary", e))?;
        let cpu_before = children_cpu();
        let t = Instant::now();
        let out = Command::new(exe)
            .arg("prune")
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .args([
                "--sparsity",
                &args.sparsity.to_string(),
                "--json",
                "--quiet",
            ])
            .output()
            .map_err(|e| Error::system("run prunus prune", e))?;
        let prune_s = t.elapsed().as_secs_f64();
        // The child's user and system time, every thread: what the wall
        // time hides on a machine whose page cache decides the I/O.
        let cpu = cpu_before
            .zip(children_cpu())
            .map(|(before, after)| after.since(before));
        if !out.status.success() {
            return Err(Error::system(
                "prune the synthetic checkpoint",
                String::from_utf8_lossy(&out.stderr).trim(),
            ));
        }
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| Error::SelfCheck(format!("prunus prune printed no JSON: {e}")))?;
        Ok((cp_s, cp_s + sync_s, prune_s, (cp_cpu, cpu), report))
    })();
    if args.keep {
        eprintln!("kept the files in {}", scratch.display());
    } else {
        cleanup(&[&copy, &output, &input]);
        let _ = std::fs::remove_dir(&scratch);
    }
    let (cp_s, cp_sync_s, prune_s, (cp_cpu, cpu), report) = result?;
    let n = report["pruned_elements"].as_u64().unwrap_or(0);
    let zeros = report["zeros_after"].as_u64().unwrap_or(0);
    let k = prunus_core::selection::select::units_to_prune(args.sparsity, n);
    if zeros < k {
        return Err(Error::SelfCheck(format!(
            "the pruned file has {zeros} zeros among {n} pruned elements, fewer than the {k} asked"
        )));
    }
    let rss = report["peak_rss_mib"].as_f64();
    let read = report["bytes_read"].as_u64().unwrap_or(0);
    println!(
        "cp                {cp_s:>8.1} s  ({:.2} GB/s)",
        bytes as f64 / 1e9 / cp_s
    );
    println!("cp + sync         {cp_sync_s:>8.1} s");
    println!(
        "prunus prune      {prune_s:>8.1} s  = {:.2} x cp, {:.2} x cp + sync; peak RSS {}",
        prune_s / cp_s,
        prune_s / cp_sync_s,
        rss.map_or("unknown".into(), |m| format!("{m:.0} MiB"))
    );
    if let Some(c) = cpu {
        println!(
            "prunus CPU time   {:>8.1} s  (user {:.1} + system {:.1}, all threads: {:.2} cores \
             busy)",
            c.total(),
            c.user,
            c.system,
            c.total() / prune_s.max(1e-9)
        );
    }
    if let Some(c) = cp_cpu {
        // The kernel's copy of the file into the page cache: a floor under
        // prunus's system time, which writes as many bytes.
        println!(
            "cp CPU time       {:>8.1} s  (user {:.1} + system {:.1})",
            c.total(),
            c.user,
            c.system
        );
    }
    println!(
        "pruned {n} weights globally to {:.1}% (exactly {k} removed; {zeros} zero after); read \
         {:.2} GB = {:.2} x the file, write pass included",
        100.0 * zeros as f64 / n.max(1) as f64,
        read as f64 / 1e9,
        read as f64 / bytes as f64
    );
    if let Some(path) = &args.json {
        let mut r = Report::new("bench-checkpoint", "synthetic", vec![42]);
        r.set_config(
            "layout",
            match args.layout {
                Layout::Decoder => "decoder",
                Layout::Moe => "moe",
            },
        );
        r.set_config("layers", layers as u64);
        r.set_config("hidden", hidden as u64);
        r.set_config("intermediate", intermediate as u64);
        r.set_config("vocab", vocab as u64);
        if args.layout == Layout::Moe {
            r.set_config("experts", args.experts as u64);
        }
        r.set_config("tensors", specs.len() as u64);
        r.set_config("dtype", dtype.name());
        r.set_config("bytes", bytes);
        r.set_config("params", params);
        r.set_config("sparsity", args.sparsity);
        for (m, s) in [("cp", cp_s), ("cp+sync", cp_sync_s), ("prunus", prune_s)] {
            r.push(Row::new(m, "wall_s", vec![s])?);
        }
        if let Some(m) = rss {
            r.push(Row::new("prunus", "peak_rss_mb", vec![m])?);
        }
        for (m, c) in [("prunus", cpu), ("cp", cp_cpu)] {
            if let Some(c) = c {
                r.push(Row::new(m, "cpu_s", vec![c.total()])?);
                r.push(Row::new(m, "user_s", vec![c.user])?);
                r.push(Row::new(m, "system_s", vec![c.system])?);
            }
        }
        r.push(Row::new("prunus", "bytes_read", vec![read as f64])?);
        write_atomic(path, &r)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
