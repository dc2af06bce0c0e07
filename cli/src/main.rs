//! `prunus`: prune neural-network weights exactly, and measure how fast.
//!
//! Exit status: 0 on success; 1 when a check fails (a result failed
//! prunus's own check, a bug to report, or a file failed `inspect --check`);
//! 2 on a usage or input error (the message starting with `error:` says
//! what to change).
//!
//! Every command that takes `--backend` runs through [`backend::dispatch`];
//! a new one writes a [`backend::BackendJob`].

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod args;
mod backend;
mod bench;
mod bench_checkpoint;
mod bench_layerwise;
mod bench_obs;
mod checkpoint;
mod error;
mod lab;
mod manual;
mod memory;
mod progress;
mod prune_args;
#[cfg(feature = "transformers")]
mod structured;
#[cfg(feature = "transformers")]
mod transformer;

/// Prune neural-network weights exactly: a sparsity of 0.9 removes exactly
/// round(0.9 * n) weights, the same ones on every backend and thread count.
#[derive(Debug, Parser)]
#[command(name = "prunus", version, propagate_version = true)]
#[command(
    after_help = "Exit status: 0 success, 1 a failed check (a result failed prunus's own \
check, or a file failed inspect --check), 2 a usage or input error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prune a safetensors checkpoint to an exact sparsity or an N:M
    /// pattern, writing a new file; or a Hugging Face model folder with
    /// magnitude, Wanda, SparseGPT or layer-wise OBS, writing a new folder.
    Prune(prune_args::PruneArgs),
    /// Measure what pruning cost a model folder on text: a decoder's
    /// perplexity, an encoder's sentence embeddings against the dense model.
    #[cfg(feature = "transformers")]
    Eval(transformer::EvalArgs),
    /// Per-tensor sparsity and N:M conformance of a safetensors checkpoint.
    Inspect(checkpoint::InspectArgs),
    /// Measure prunus on synthetic weights against the hardware's floor.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run a founding paper's protocol on the lab's reference networks.
    #[command(subcommand)]
    Lab(LabCommand),
    /// List the GPU adapters wgpu finds (`WGPU_BACKEND` restricts the
    /// graphics APIs searched); `--backend wgpu` takes the one named by
    /// `WGPU_ADAPTER_NAME`, else the first discrete GPU.
    Adapters,
    /// Print a shell completion script (e.g. `prunus completions bash >
    /// ~/.local/share/bash-completion/completions/prunus`).
    Completions(manual::CompletionsArgs),
    /// Print the man page, or write one page per command into a folder.
    Man(manual::ManArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time global magnitude pruning to an exact sparsity against one
    /// streaming read of the same weights (the memory-bandwidth floor).
    Select(bench::SelectArgs),
    /// Time the second-order stages (Fisher, WF-S, CBS-S, WoodFisher and
    /// OBS updates) on synthetic per-sample gradients.
    Obs(bench_obs::ObsArgs),
    /// Prune a synthetic decoder-only transformer checkpoint (7B shapes in
    /// bf16 by default) and compare with copying the file.
    Checkpoint(bench_checkpoint::CheckpointArgs),
    /// Time and reconstruction error of magnitude, Wanda, SparseGPT and
    /// layer-wise OBS on one layer of each 7B and MiniLM shape, with
    /// synthetic correlated calibration inputs.
    Layerwise(bench_layerwise::LayerwiseArgs),
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Gradient-flow importance measures (magnitude, SNIP, GraSP, ...):
    /// filter pruning of a small CNN from initialisation, then training.
    Flow(lab::FlowArgs),
    /// Second-order one-shot pruning (MP, WoodFisher, Combinatorial Brain
    /// Surgeon) of MLPNet, against the CBS paper's table.
    Cbs(lab::CbsArgs),
    /// Iterative magnitude pruning with rewinding against
    /// Information-Consistent Pruning's flow-based retraining stop.
    Infcop(lab::InfcopArgs),
    /// Greedy forward selection of neurons against backward elimination
    /// and training from scratch at equal widths, compacted.
    Forward(lab::ForwardArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Prune(args) => prune(&args),
        Command::Inspect(args) => checkpoint::inspect_file(&args),
        #[cfg(feature = "transformers")]
        Command::Eval(args) => transformer::eval(&args),
        Command::Bench(BenchCommand::Select(args)) => bench::select(&args),
        Command::Bench(BenchCommand::Obs(args)) => bench_obs::obs(&args),
        Command::Bench(BenchCommand::Checkpoint(args)) => bench_checkpoint::checkpoint(&args),
        Command::Bench(BenchCommand::Layerwise(args)) => bench_layerwise::layerwise(&args),
        Command::Lab(LabCommand::Flow(args)) => lab::flow(&args),
        Command::Lab(LabCommand::Cbs(args)) => lab::cbs(&args),
        Command::Lab(LabCommand::Infcop(args)) => lab::infcop(&args),
        Command::Lab(LabCommand::Forward(args)) => lab::forward(&args),
        Command::Adapters => {
            list_adapters();
            Ok(())
        }
        Command::Completions(args) => manual::completions(&args, Cli::command()),
        Command::Man(args) => manual::man(&args, Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs `prunus prune`: a model folder through the transformer paths
/// (structured or not), a file through the checkpoint path.
fn prune(args: &prune_args::PruneArgs) -> Result<(), error::Error> {
    if !args.input.is_dir() {
        if args.device != prune_args::ComputeDevice::Cpu {
            return Err(error::Error::argument(
                "--device",
                args.device,
                "cpu for a single .safetensors file (selection streams the file on the CPU; \
                 --device runs a model folder's forward)",
            ));
        }
        return checkpoint::prune(args);
    }
    #[cfg(feature = "transformers")]
    return match &args.structured {
        Some(parts) => structured::prune(args, parts),
        None => transformer::prune(args),
    };
    #[cfg(not(feature = "transformers"))]
    Err(error::Error::argument(
        "IN",
        args.input.display(),
        "a .safetensors file (this prunus was built without the transformers feature, \
         which prunes model folders)",
    ))
}

/// Prints one line per adapter.
fn list_adapters() {
    let all = prunus_wgpu::adapters();
    if all.is_empty() {
        println!("no GPU adapter found (install a Vulkan, Metal or DX12 driver)");
    }
    for (i, a) in all.iter().enumerate() {
        let compute = if a.compute {
            ""
        } else {
            " (no compute shaders)"
        };
        println!("{i}: {} [{}, {}]{compute}", a.name, a.api, a.kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_the_issue_size() {
        let cli = Cli::try_parse_from(["prunus", "bench", "select"]).unwrap();
        let Command::Bench(BenchCommand::Select(a)) = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(
            (a.params, a.tensors, a.sparsity, a.repeat),
            (100_000_000, 50, 0.9, 5)
        );
        assert_eq!(a.threads, 0);
        assert!(a.json.is_none());
    }

    #[test]
    fn rejects_sparsity_outside_unit_interval() {
        for s in ["1.5", "-0.1", "nan", "inf", "x"] {
            let e =
                Cli::try_parse_from(["prunus", "bench", "select", "--sparsity", s]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{s}");
        }
    }
}
