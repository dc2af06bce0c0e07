//! `prunus bench obs`: the second-order machinery (empirical Fisher, WF-S,
//! CBS-S, the WoodFisher and multi-weight OBS updates) on synthetic
//! per-sample gradients, stage by stage.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use prunus_core::contract::random::uniform;
use prunus_core::methods::second_order::fisher::{Blocks, Fisher, FisherConfig};
use prunus_core::methods::second_order::surgeon::{
    SearchConfig, cbs_select, magnitude, pruned_count, woodfisher,
};
use prunus_lab::{Report, Row, write_atomic};
use prunus_wgpu::{Counters, GemmTile};

use crate::args::check_output;
use crate::backend::{BackendJob, BackendKind, BackendSpec, Device, dispatch};
use crate::error::Error;
use crate::memory::peak_rss_mib;

/// Arguments of `prunus bench obs`.
#[derive(Debug, Args)]
#[command(after_help = "\
Synthetic gradients: G[n][q] = (u - 0.5) * (1 + 4 [q mod 7 == 0]) + 0.3 (v - 0.5) with \
u, v uniform hashes of (seed, n, q), so weights differ in scale and share a common \
per-sample component; weights uniform in [-1, 1). Stages: build (gather G into blocks, \
Gram matrix or Woodbury recursion, Cholesky), diag (the diagonal of the damped inverse \
Fisher), select-mp, select-wf, select-cbs (the CBS-S search with the objective as its \
loss), update-wf, update-obs. Each is timed once; on the GPU backend each also reports the \
bytes uploaded, the bytes of retained operands found on the device instead, the bytes read \
back and the device's dense GFLOP/s.

Examples:
  prunus bench obs                                   # MLPNet size: d = 32,360, N = 6,000
  prunus bench obs --params 1048576 --samples 1000 --block 2048")]
pub(crate) struct ObsArgs {
    /// Weights d.
    #[arg(long, value_name = "D", default_value_t = 32_360,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) params: u64,
    /// Samples N (rows of the gradient matrix).
    #[arg(long, value_name = "N", default_value_t = 6_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) samples: u64,
    /// Fisher block size (default: one block).
    #[arg(long, value_name = "B")]
    pub(crate) block: Option<usize>,
    /// Damping λ.
    #[arg(long, value_name = "λ", default_value_t = 1e-3)]
    pub(crate) damping: f64,
    /// Sparsity of the selections and updates.
    #[arg(long, value_name = "S", default_value_t = 0.9)]
    pub(crate) sparsity: f64,
    /// CBS-S random starts.
    #[arg(long, value_name = "T", default_value_t = 5)]
    pub(crate) trials: usize,
    /// CBS-S passes at most.
    #[arg(long, value_name = "P", default_value_t = 20)]
    pub(crate) passes: usize,
    /// Dense linear algebra.
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    pub(crate) backend: BackendKind,
    /// The GEMM kernel of `--backend wgpu`: on a GPU 128 x 128 tiles where
    /// the output has at least 64 of them, 64 x 64 on a software adapter
    /// (auto); or always 64 x 64 (small) or 128 x 128 (large).
    #[arg(long, value_enum, value_name = "TILE")]
    pub(crate) gemm_tile: Option<GemmTileArg>,
    /// Threads of the CPU backend (0 = all cores).
    #[arg(long, value_name = "T", default_value_t = 0)]
    pub(crate) threads: usize,
    /// Write the JSON report here (atomically).
    #[arg(long, value_name = "FILE")]
    pub(crate) json: Option<PathBuf>,
}

/// Runs `prunus bench obs`.
pub(crate) fn obs(args: &ObsArgs) -> Result<(), Error> {
    if let Some(p) = &args.json {
        check_output("--json", p)?;
    }
    let (d, n) = (args.params as usize, args.samples as usize);
    let k = pruned_count(args.sparsity, d)?;
    let backend = args.backend.name();
    let t = Instant::now();
    let gradients = synthetic_gradients(n, d);
    let theta: Vec<f64> = (0..d)
        .map(|q| 2.0 * f64::from(uniform(7, 2, q as u64)) - 1.0)
        .collect();
    eprintln!(
        "generated G ({n} x {d}) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let job = ObsJob {
        args,
        gradients,
        theta,
        k,
    };
    let spec =
        BackendSpec::new(args.backend, args.threads).gemm(args.gemm_tile.map(GemmTile::from));
    let Stages {
        times: stages,
        traffic,
        blocks: fisher_blocks,
        ratio,
        passes,
        threads,
    } = dispatch(&spec, job)?;
    let peak = peak_rss_mib();
    println!(
        "d = {d}, N = {n}, {fisher_blocks} block(s), sparsity {}, {backend} ({threads} CPU threads): \
         CBS-S objective {ratio:.3} of magnitude's after {passes} passes; peak RSS {}",
        args.sparsity,
        peak.map_or("n/a".into(), |p| format!("{p:.0} MiB"))
    );
    for ((name, s), (_, moved)) in stages.iter().zip(&traffic) {
        match moved {
            Some(c) => println!(
                "  {name:<11} {s:>8.3} s  uploaded {:>9.1} MB  kept {:>9.1} MB  read back {:>8.1} MB  \
                 device {:>8.1} GFLOP/s",
                c.bytes_uploaded as f64 / 1e6,
                c.bytes_kept as f64 / 1e6,
                c.bytes_read_back as f64 / 1e6,
                gflop_per_s(c.flops, *s),
            ),
            None => println!("  {name:<11} {s:>8.3} s"),
        }
    }
    if let Some(path) = &args.json {
        let mut report = Report::new("bench-obs", "synthetic", vec![0]);
        report.set_config("params", d as u64);
        report.set_config("samples", n as u64);
        report.set_config("block", args.block.unwrap_or(d) as u64);
        report.set_config("damping", args.damping);
        report.set_config("sparsity", args.sparsity);
        report.set_config("threads", threads as u64);
        report.set_config("backend", backend);
        if let Some(t) = args.gemm_tile {
            report.set_config("gemm_tile", format!("{t:?}").to_lowercase());
        }
        for ((name, s), (_, moved)) in stages.iter().zip(&traffic) {
            report.push(Row::new(*name, "wall_s", vec![*s])?);
            report.set_timing(*name, *s);
            if let Some(c) = moved {
                report.push(Row::new(
                    *name,
                    "uploaded_bytes",
                    vec![c.bytes_uploaded as f64],
                )?);
                report.push(Row::new(*name, "kept_bytes", vec![c.bytes_kept as f64])?);
                report.push(Row::new(
                    *name,
                    "read_back_bytes",
                    vec![c.bytes_read_back as f64],
                )?);
                report.push(Row::new(*name, "device_flops", vec![c.flops as f64])?);
                report.push(Row::new(
                    *name,
                    "device_gflop_s",
                    vec![gflop_per_s(c.flops, *s)],
                )?);
            }
        }
        if let Some(p) = peak {
            report.push(Row::new("process", "peak_rss_mb", vec![p])?);
        }
        write_atomic(path, &report)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// `--gemm-tile` ([`GemmTile`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum GemmTileArg {
    /// The backend's choice ([`GemmTile::Auto`]).
    Auto,
    /// 64 x 64 tiles.
    Small,
    /// 128 x 128 tiles.
    Large,
}

impl From<GemmTileArg> for GemmTile {
    fn from(t: GemmTileArg) -> Self {
        match t {
            GemmTileArg::Auto => GemmTile::Auto,
            GemmTileArg::Small => GemmTile::Small,
            GemmTileArg::Large => GemmTile::Large,
        }
    }
}

/// The stages of `prunus bench obs`, on one backend's dense linear algebra.
struct ObsJob<'a> {
    args: &'a ObsArgs,
    /// The `N x d` gradient matrix, dropped once the Fisher is built.
    gradients: Vec<f32>,
    /// The weights.
    theta: Vec<f64>,
    /// Weights to prune.
    k: usize,
}

/// What the stages measured.
struct Stages {
    /// Seconds per stage, in order.
    times: Vec<(&'static str, f64)>,
    /// What the device did per stage (bytes each way, dense flops), in
    /// order; `None` on the CPU.
    traffic: Vec<(&'static str, Option<Counters>)>,
    /// Fisher blocks.
    blocks: usize,
    /// CBS-S's objective over magnitude's.
    ratio: f64,
    /// CBS-S passes.
    passes: usize,
    /// Host threads of the dense linear algebra.
    threads: usize,
}

impl<'d> BackendJob<'d> for ObsJob<'_> {
    type Output = Stages;

    fn run<B: Device<'d>>(self, backend: &B) -> Result<Stages, Error> {
        let ObsJob {
            args,
            gradients,
            theta,
            k,
        } = self;
        let (d, n) = (args.params as usize, args.samples as usize);
        let blocks = args.block.map_or(Blocks::Whole, Blocks::Size);
        let config = FisherConfig::default().damping(args.damping).blocks(blocks);
        let mut times = Vec::new();
        let mut traffic = Vec::new();
        let start = || (Instant::now(), backend.counters());
        let mut time = |name: &'static str, (t, before): (Instant, Option<Counters>)| {
            let s = t.elapsed().as_secs_f64();
            eprintln!("{name:<11} {s:>8.3} s");
            times.push((name, s));
            let moved = before.zip(backend.counters()).map(|(b, a)| a.since(b));
            traffic.push((name, moved));
        };
        let (blocks, ratio, passes, threads) =
            backend.with_dense(args.threads, |dense, threads| {
                let t = start();
                let fisher = Fisher::new(dense, &gradients, n, &[d], &config)?;
                time("build", t);
                drop(gradients);
                let t = start();
                let diagonal = fisher.inverse_diagonal()?;
                time("diag", t);
                let t = start();
                let mp = magnitude(&theta, k)?;
                time("select-mp", t);
                let t = start();
                let wf = woodfisher(&theta, &diagonal, k)?;
                time("select-wf", t);
                let t = start();
                let search = SearchConfig::default()
                    .trials(args.trials)
                    .passes(args.passes);
                let chosen = cbs_select(&fisher, &theta, k, &search, &mut |p| {
                    fisher.objective(&theta, p)
                })?;
                time("select-cbs", t);
                let t = start();
                fisher.woodfisher_update(&theta, &wf, &diagonal)?;
                time("update-wf", t);
                let t = start();
                fisher.obs_update(&theta, &chosen.pruned)?;
                time("update-obs", t);
                let ratio = chosen.objective / fisher.objective(&theta, &mp)?;
                Ok((fisher.blocks().count(), ratio, chosen.passes, threads))
            })?;
        Ok(Stages {
            times,
            traffic,
            blocks,
            ratio,
            passes,
            threads,
        })
    }
}

/// `flops` over `seconds`, in GFLOP/s (0 for an instant stage).
fn gflop_per_s(flops: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        flops as f64 / seconds / 1e9
    } else {
        0.0
    }
}

/// The synthetic `N x d` gradient matrix of the after-help text.
fn synthetic_gradients(n: usize, d: usize) -> Vec<f32> {
    let mut g = vec![0.0f32; n * d];
    for (s, row) in g.chunks_mut(d).enumerate() {
        let common = uniform(7, 1, s as u64) - 0.5;
        for (q, v) in row.iter_mut().enumerate() {
            let u = uniform(7, 0, (s * d + q) as u64) - 0.5;
            let scale = if q % 7 == 0 { 5.0 } else { 1.0 };
            *v = u * scale + 0.3 * common;
        }
    }
    g
}
