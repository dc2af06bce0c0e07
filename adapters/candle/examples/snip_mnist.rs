//! SNIP at initialisation on a candle model, a few epochs of training
//! with the masks held, and the pruned model saved: the whole way a candle
//! user takes.
//!
//! ```sh
//! cargo run --release -p prunus-candle --example snip_mnist -- \
//!     [--data ../shared/data/mnist] [--sparsity 0.9] [--epochs 5] [--out lenet-snip.safetensors]
//! ```
//!
//! LeNet-300-100 (784-300-100-10, ReLU, biases) is built from a `VarMap`
//! with candle's own initialisation. SNIP scores `|θ g|` at initialisation
//! (g over 2,560 training samples at temperature 5, the official
//! setting) and prunes the hidden layers globally to `--sparsity`; the
//! network then trains with the masks held after every step, and is
//! compared with the same network trained dense and with magnitude
//! pruning at initialisation. Without MNIST in `--data` it runs on the
//! lab's synthetic task.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Activation, VarBuilder, VarMap};
use prunus_adapters::framework::Splits;
use prunus_candle::host::{CandleHost, HostSettings, Linear, Probes, Sgd, SgdConfig};
use prunus_core::host::{Host, Objective, Samples, Split, masks_with_biases};
use prunus_core::methods::flow::{Measure, MeasureConfig, prune_host};
use prunus_core::{Mask, PruneConfig};
use prunus_cpu::{CpuBackend, Par};
use prunus_lab::data::Dataset;

const WIDTHS: [usize; 4] = [784, 300, 100, 10];

/// LeNet-300-100 in candle.
struct LeNet {
    layers: Vec<Linear>,
}

impl Module for LeNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.layers
            .iter()
            .try_fold(x.flatten_from(1)?, |x, l| l.forward(&x))
    }
}

/// A fresh LeNet-300-100 with candle's initialisation, and its host.
fn lenet(
    splits: &Arc<Splits>,
    widths: &[usize],
) -> Result<(CandleHost<LeNet, Sgd>, VarMap), Box<dyn Error>> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let probes = Probes::new();
    let mut layers = Vec::new();
    for i in 1..widths.len() {
        let layer = Linear::new(
            vb.pp(format!("fc{i}")),
            widths[i - 1],
            widths[i],
            true,
            &probes,
        )?;
        layers.push(if i + 1 < widths.len() {
            layer.with_activation(Activation::Relu)
        } else {
            layer
        });
    }
    let host = CandleHost::new(
        LeNet { layers },
        &varmap,
        Arc::clone(splits),
        SgdConfig::default(),
        HostSettings::default().name("candle LeNet-300-100"),
    )?
    .with_probes(probes)?;
    Ok((host, varmap))
}

/// Prunes `host` at initialisation by `measure` (hidden layers, global),
/// trains `epochs`, and gives the test accuracy.
fn run(
    host: &mut CandleHost<LeNet, Sgd>,
    measure: Option<Measure>,
    sparsity: f64,
    epochs: usize,
) -> Result<(f64, f64), Box<dyn Error>> {
    let t = Instant::now();
    if let Some(measure) = measure {
        let backend = CpuBackend::new(Par::Rayon(0))?;
        let prunable: Vec<usize> = (0..host.parameters().len())
            .filter(|&i| host.parameters()[i].prunable)
            .collect();
        let masks = prune_host(
            &backend,
            host,
            measure,
            &prunable,
            &[],
            &PruneConfig::new(sparsity).global(),
            &MeasureConfig::default(),
        )?;
        let mut all: Vec<Option<Mask>> = vec![None; host.parameters().len()];
        for (&i, m) in prunable.iter().zip(masks) {
            all[i] = Some(m);
        }
        host.set_masks(&masks_with_biases(host.parameters(), all)?)?;
    }
    for e in 0..epochs {
        let loss = host.train_epoch()?;
        eprintln!(
            "  {}: epoch {} loss {loss:.4}",
            measure.map_or("dense", Measure::name),
            e + 1
        );
    }
    let accuracy = host
        .evaluate(&Objective::new(Samples::all(Split::Test)))?
        .accuracy;
    Ok((accuracy * 100.0, t.elapsed().as_secs_f64()))
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut data_dir = PathBuf::from("../shared/data/mnist");
    let (mut sparsity, mut epochs) = (0.9, 5);
    let mut out = std::env::temp_dir().join("lenet-snip.safetensors");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => data_dir = value()?.into(),
            "--sparsity" => sparsity = value()?.parse()?,
            "--epochs" => epochs = value()?.parse()?,
            "--out" => out = value()?.into(),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let data = match Dataset::mnist(&data_dir) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}: running on the synthetic teacher-student task instead");
            Dataset::teacher_student(&Default::default())?
        }
    };
    let splits = Arc::new(data.splits()?);
    let widths = [data.input_len(), WIDTHS[1], WIDTHS[2], data.classes];

    println!("| LeNet-300-100 in candle, {epochs} epochs | test accuracy | time |");
    println!("|---|---|---|");
    for measure in [None, Some(Measure::Magnitude), Some(Measure::Snip)] {
        let (mut host, varmap) = lenet(&splits, &widths)?;
        let (acc, secs) = run(&mut host, measure, sparsity, epochs)?;
        let name = measure.map_or("dense".to_string(), |m| {
            format!("{m} at init, {sparsity} of the hidden layers")
        });
        println!("| {name} | {acc:.2}% | {secs:.1} s |");
        if measure == Some(Measure::Snip) {
            // Save atomically: a temporary file beside the output, renamed
            // over it once complete.
            let dir = out.parent().filter(|d| !d.as_os_str().is_empty());
            let tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(".".as_ref()))?;
            varmap.save(tmp.path())?;
            tmp.persist(&out)?;
            let kept: usize = host
                .masks()
                .iter()
                .flatten()
                .map(|m| m.count_kept() as usize)
                .sum();
            let total: usize = host.masks().iter().flatten().map(Mask::len).sum();
            eprintln!(
                "saved {} ({kept} of {total} masked weights kept)",
                out.display()
            );
        }
    }
    Ok(())
}
