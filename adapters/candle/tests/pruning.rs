//! The block-by-block driver on a toy graph small enough to check by hand:
//! exact counts per method, N:M validity, the pruned weights in the sink
//! and the graph, and the sequential rule (block 1 is calibrated on what
//! the pruned block 0 outputs, not the dense one).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use prunus_candle::graph::{Family, Graph, Part, Weights};
use prunus_candle::pruning::{Job, Method, Settings, Sink, prune_model};
use prunus_candle::record::{Linear, Recorder, StatsPlace, record};
use prunus_candle::{Error, Result};
use prunus_core::methods::layerwise::{LayerStats, Target, reconstruction_error};
use prunus_core::{Backend, Layer, Matrix, NofM, PruneConfig, ReferenceBackend, Shape, prune};
use prunus_cpu::{CpuBackend, Par};

const VOCAB: usize = 16;
const HIDDEN: usize = 8;
const WIDE: usize = 16;
const BLOCKS: usize = 2;

/// `h + B relu(A h)` per block, embeddings a table.
struct Toy {
    embed: Option<Tensor>,
    blocks: Vec<Option<[Linear; 2]>>,
}

fn names(i: usize) -> [String; 2] {
    [format!("blocks.{i}.a"), format!("blocks.{i}.b")]
}

impl Graph for Toy {
    fn family(&self) -> Family {
        Family::Encoder
    }
    fn blocks(&self) -> usize {
        BLOCKS
    }
    fn max_len(&self) -> usize {
        64
    }
    fn linear_names(&self, i: usize) -> Vec<String> {
        names(i).to_vec()
    }
    fn load(&mut self, part: Part, weights: &dyn Weights) -> Result<()> {
        let dev = Device::Cpu;
        match part {
            Part::Embeddings => self.embed = Some(weights.tensor("embed", DType::F32, &dev)?),
            Part::Block(i) => {
                let [a, b] = names(i);
                let la = Linear::new(
                    &a,
                    weights.tensor(&format!("{a}.weight"), DType::F32, &dev)?,
                    None,
                )?;
                let lb = Linear::new(
                    &b,
                    weights.tensor(&format!("{b}.weight"), DType::F32, &dev)?,
                    None,
                )?;
                self.blocks[i] = Some([la, lb]);
            }
            Part::Head => {}
        }
        Ok(())
    }
    fn release(&mut self, part: Part) {
        match part {
            Part::Embeddings => self.embed = None,
            Part::Block(i) => self.blocks[i] = None,
            Part::Head => {}
        }
    }
    fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        let e = self
            .embed
            .as_ref()
            .ok_or_else(|| Error::request("embeddings not loaded"))?;
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        Ok(e.index_select(&ids, 0)?.unsqueeze(0)?)
    }
    fn block(&self, i: usize, h: &Tensor, mut rec: Option<&mut Recorder<'_>>) -> Result<Tensor> {
        let [a, b] = self.blocks[i]
            .as_ref()
            .ok_or_else(|| Error::request("block not loaded"))?;
        record(&mut rec, &[a], h)?;
        let mid = a.forward(h)?.relu()?;
        record(&mut rec, &[b], &mid)?;
        Ok((h + b.forward(&mid)?)?)
    }
    fn head(&self, h: &Tensor) -> Result<Tensor> {
        Ok(h.clone())
    }
    fn linears(&self, i: usize) -> Result<Vec<&Linear>> {
        let [a, b] = self.blocks[i]
            .as_ref()
            .ok_or_else(|| Error::request("block not loaded"))?;
        Ok(vec![a, b])
    }
    fn linear_mut(&mut self, i: usize, name: &str) -> Result<&mut Linear> {
        self.blocks[i]
            .as_mut()
            .and_then(|ls| ls.iter_mut().find(|l| l.name() == name))
            .ok_or_else(|| Error::request(format!("no layer {name}")))
    }
}

/// Deterministic values in [-1, 1) from a seed.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn weights() -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let mut w = HashMap::new();
    w.insert(
        "embed".into(),
        Tensor::from_vec(values(VOCAB * HIDDEN, 1), (VOCAB, HIDDEN), &dev).unwrap(),
    );
    for i in 0..BLOCKS {
        let [a, b] = names(i);
        w.insert(
            format!("{a}.weight"),
            Tensor::from_vec(values(WIDE * HIDDEN, 10 + i as u64), (WIDE, HIDDEN), &dev).unwrap(),
        );
        w.insert(
            format!("{b}.weight"),
            Tensor::from_vec(values(HIDDEN * WIDE, 20 + i as u64), (HIDDEN, WIDE), &dev).unwrap(),
        );
    }
    w
}

fn samples() -> Vec<Vec<u32>> {
    (0..6u32)
        .map(|s| (0..5 + s).map(|t| (t * 7 + s * 3) % VOCAB as u32).collect())
        .collect()
}

#[derive(Default)]
struct Collect(HashMap<String, Vec<f32>>);

impl Sink for Collect {
    fn put(&mut self, name: &str, v: &[f32]) -> Result<()> {
        self.0.insert(name.to_string(), v.to_vec());
        Ok(())
    }

    fn put_tensor(&mut self, tensor: &str, _: &[usize], v: &[f32]) -> Result<()> {
        self.0.insert(tensor.to_string(), v.to_vec());
        Ok(())
    }
}

fn run(settings: &Settings) -> (Collect, prunus_candle::pruning::Report) {
    run_with(settings, StatsPlace::Auto)
}

fn run_with(settings: &Settings, stats: StatsPlace) -> (Collect, prunus_candle::pruning::Report) {
    let cpu = CpuBackend::new(Par::Seq).unwrap();
    let job = Job {
        backend: &cpu,
        dense: &cpu,
        device: &Device::Cpu,
        wanted: &|_| true,
        stats,
    };
    let mut graph = Toy {
        embed: None,
        blocks: vec![None, None],
    };
    let mut sink = Collect::default();
    let report = prune_model(
        &job,
        &mut graph,
        &weights(),
        &samples(),
        settings,
        &mut sink,
        &mut |_| {},
    )
    .unwrap();
    (sink, report)
}

#[test]
fn every_method_prunes_exactly_the_count_asked() {
    for method in [Method::Wanda, Method::SparseGpt, Method::Obs] {
        let mut s = Settings::new(method, Target::Sparsity(0.5));
        s.block = Some(8);
        let (sink, report) = run(&s);
        assert_eq!(report.layers.len(), 2 * BLOCKS, "{method:?}");
        for l in &report.layers {
            let v = &sink.0[&l.name];
            let n = (l.shape[0] * l.shape[1]) as u64;
            assert_eq!(l.pruned, n / 2, "{method:?} {}", l.name);
            assert!(v.iter().filter(|x| **x == 0.0).count() as u64 >= n / 2);
            let r = l.relative_error.unwrap();
            assert!(r > 0.0 && r < 1.0, "{method:?} {l:?}");
        }
        assert_eq!(report.tokens, samples().iter().map(Vec::len).sum::<usize>());
    }
}

/// Largest `|a - b| / max(|b|, floor)` over two equally long slices.
fn relative_gap(a: &[f64], b: &[f64], floor: f64) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(floor))
        .fold(0.0, f64::max)
}

#[test]
fn statistics_accumulated_on_the_device_match_the_hosts() {
    // Inputs of several shapes and leading dimensions, recorded for two
    // layers sharing them, on the host in f64 and "on the device" (the CPU
    // device here: the same candle code runs on a GPU) in f32.
    let a = Linear::new(
        "a",
        Tensor::zeros((3, 8), DType::F32, &Device::Cpu).unwrap(),
        None,
    )
    .unwrap();
    let b = Linear::new(
        "b",
        Tensor::zeros((5, 8), DType::F32, &Device::Cpu).unwrap(),
        None,
    )
    .unwrap();
    let inputs: Vec<Tensor> = [(1usize, 7usize), (2, 11), (1, 1), (3, 40)]
        .iter()
        .enumerate()
        .map(|(i, &(batch, seq))| {
            let v: Vec<f32> = values(batch * seq * 8, 100 + i as u64)
                .into_iter()
                .map(|x| 3.0 * x + 0.5)
                .collect();
            Tensor::from_vec(v, (batch, seq, 8), &Device::Cpu).unwrap()
        })
        .collect();
    let all = |_: &str| true;
    let record_all = |place| {
        let mut r = Recorder::new(&ReferenceBackend, true, &all).with_place(place);
        for x in &inputs {
            r.record(&[&a, &b], x).unwrap();
        }
        r.finish().unwrap()
    };
    let host = record_all(StatsPlace::Host);
    let device = record_all(StatsPlace::Device);
    // On CPU inputs, Auto is the host path, bit for bit.
    assert_eq!(record_all(StatsPlace::Auto).stats("a"), host.stats("a"));
    for name in ["a", "b"] {
        let (h, d) = (host.stats(name).unwrap(), device.stats(name).unwrap());
        assert_eq!(d.rows(), h.rows());
        assert_eq!(d.rows(), 7 + 22 + 1 + 120);
        assert!(relative_gap(d.sum_squares(), h.sum_squares(), 1e-30) < 1e-6);
        assert!(relative_gap(d.sums().unwrap(), h.sums().unwrap(), 1.0) < 1e-6);
        let (hg, dg) = (h.gram().unwrap(), d.gram().unwrap());
        assert!(relative_gap(dg.data(), hg.data(), 1.0) < 1e-6, "{name}");
        assert_ne!(
            dg.data(),
            hg.data(),
            "f32 sums should differ in rounding from f64"
        );
    }
    // A NaN input is refused on the device path too, naming the layer.
    let mut bad = values(2 * 8, 7);
    bad[5] = f32::NAN;
    let bad = Tensor::from_vec(bad, (2, 8), &Device::Cpu).unwrap();
    let mut r = Recorder::new(&ReferenceBackend, true, &all).with_place(StatsPlace::Device);
    r.record(&[&a, &b], &inputs[0]).unwrap();
    let e = match r.record(&[&a, &b], &bad).and_then(|()| r.finish()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a NaN input was accepted"),
    };
    assert!(e.contains("linear layer a") && e.contains("NaN"), "{e}");
}

#[test]
fn pruning_on_device_statistics_agrees_with_the_host() {
    // Wanda: the same masks. SparseGPT and OBS: the same counts and weights
    // within f32 rounding of the statistics.
    for method in [Method::Wanda, Method::SparseGpt, Method::Obs] {
        let mut s = Settings::new(method, Target::Sparsity(0.5));
        s.block = Some(8);
        let (host, _) = run_with(&s, StatsPlace::Host);
        let (device, report) = run_with(&s, StatsPlace::Device);
        for l in &report.layers {
            let (h, d) = (&host.0[&l.name], &device.0[&l.name]);
            let zeros = |v: &[f32]| v.iter().map(|x| *x == 0.0).collect::<Vec<_>>();
            assert_eq!(l.pruned, (l.shape[0] * l.shape[1] / 2) as u64);
            if method == Method::Wanda {
                assert_eq!(d, h, "{method:?} {}", l.name);
                continue;
            }
            assert_eq!(zeros(d), zeros(h), "{method:?} {}: masks differ", l.name);
            let gap = d
                .iter()
                .zip(h)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(gap < 1e-4, "{method:?} {}: weights differ by {gap}", l.name);
        }
    }
}

#[test]
fn two_four_holds_in_every_group() {
    for method in [Method::Wanda, Method::SparseGpt, Method::Obs] {
        let mut s = Settings::new(method, Target::NofM(NofM::TWO_FOUR));
        s.block = Some(8);
        let (sink, report) = run(&s);
        for l in &report.layers {
            for group in sink.0[&l.name].chunks(4) {
                assert!(
                    group.iter().filter(|x| **x == 0.0).count() >= 2,
                    "{method:?} {}",
                    l.name
                );
            }
            assert_eq!(l.pruned, (l.shape[0] * l.shape[1] / 2) as u64);
        }
    }
}

#[test]
fn later_blocks_are_calibrated_on_the_pruned_outputs() {
    let s = Settings::new(Method::SparseGpt, Target::Sparsity(0.5));
    let (sink, report) = run(&s);
    // Rebuild block 1's statistics by hand: block 0 with its pruned weights.
    let dev = Device::Cpu;
    let mut w = weights();
    for (name, v) in &sink.0 {
        if name.starts_with("blocks.0") {
            let shape = w[&format!("{name}.weight")].dims().to_vec();
            w.insert(
                format!("{name}.weight"),
                Tensor::from_vec(v.clone(), shape, &dev).unwrap(),
            );
        }
    }
    let mut graph = Toy {
        embed: None,
        blocks: vec![None, None],
    };
    graph.load(Part::Embeddings, &w).unwrap();
    graph.load(Part::Block(0), &w).unwrap();
    graph.load(Part::Block(1), &weights()).unwrap();
    let wanted = |n: &str| n == "blocks.1.a";
    let mut rec = Recorder::new(&ReferenceBackend, true, &wanted);
    for t in samples() {
        let h = graph.block(0, &graph.embed(&t).unwrap(), None).unwrap();
        graph.block(1, &h, Some(&mut rec)).unwrap();
    }
    let rec = rec.finish().unwrap();
    let stats: &LayerStats = rec.stats("blocks.1.a").unwrap();
    let original = Matrix::from_f32(WIDE, HIDDEN, &values(WIDE * HIDDEN, 11)).unwrap();
    let pruned = Matrix::from_f32(WIDE, HIDDEN, &sink.0["blocks.1.a"]).unwrap();
    let expected = reconstruction_error(&ReferenceBackend, &original, &pruned, stats).unwrap();
    let got = report
        .layers
        .iter()
        .find(|l| l.name == "blocks.1.a")
        .unwrap()
        .error
        .unwrap();
    assert!(
        (got - expected).abs() <= 1e-9 * expected.max(1.0),
        "{got} vs {expected}"
    );
    // And it differs from the statistics of the dense block 0's outputs.
    let mut dense_rec = Recorder::new(&ReferenceBackend, true, &wanted);
    graph.load(Part::Block(0), &weights()).unwrap();
    for t in samples() {
        let h = graph.block(0, &graph.embed(&t).unwrap(), None).unwrap();
        graph.block(1, &h, Some(&mut dense_rec)).unwrap();
    }
    let dense = reconstruction_error(
        &ReferenceBackend,
        &original,
        &pruned,
        dense_rec.finish().unwrap().stats("blocks.1.a").unwrap(),
    )
    .unwrap();
    assert!(
        (dense - expected).abs() > 1e-6 * expected,
        "the sequential rule made no difference"
    );
}

#[test]
fn magnitude_prunes_each_layer_as_core_does_and_is_measured() {
    let cpu = CpuBackend::new(Par::Seq).unwrap();
    let s = Settings::new(Method::Magnitude, Target::Sparsity(0.3));
    let (sink, report) = run(&s);
    let w = weights();
    for l in &report.layers {
        let original: Vec<f32> = w[&format!("{}.weight", l.name)]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let layer_tensor = cpu
            .upload(&original, &Shape::matrix(l.shape[0], l.shape[1]).unwrap())
            .unwrap();
        let masks = prune(
            &cpu,
            &[Layer::new(&l.name, &layer_tensor)],
            &PruneConfig::new(0.3).local(),
        )
        .unwrap();
        let expected: Vec<f32> = original
            .iter()
            .enumerate()
            .map(|(j, &v)| if masks[0].get(j) { v } else { 0.0 })
            .collect();
        assert_eq!(sink.0[&l.name], expected, "{}", l.name);
        assert_eq!(l.pruned, (0.3 * (WIDE * HIDDEN) as f64).round() as u64);
        assert!(l.error.unwrap() > 0.0);
    }
}

#[test]
fn settings_no_method_honours_are_refused() {
    let cpu = CpuBackend::new(Par::Seq).unwrap();
    let job = Job {
        backend: &cpu,
        dense: &cpu,
        device: &Device::Cpu,
        wanted: &|_| true,
        stats: StatsPlace::Auto,
    };
    let mut graph = Toy {
        embed: None,
        blocks: vec![None, None],
    };
    let mut bad = vec![Settings::new(Method::Wanda, Target::Sparsity(1.5))];
    let mut global_wanda = Settings::new(Method::Wanda, Target::Sparsity(0.5));
    global_wanda.global = true;
    bad.push(global_wanda);
    let mut global_nm = Settings::new(Method::Magnitude, Target::NofM(NofM::TWO_FOUR));
    global_nm.global = true;
    bad.push(global_nm);
    let mut damp = Settings::new(Method::SparseGpt, Target::Sparsity(0.5));
    damp.dampening = f64::NAN;
    bad.push(damp);
    for s in &bad {
        let e = prune_model(
            &job,
            &mut graph,
            &weights(),
            &samples(),
            s,
            &mut Collect::default(),
            &mut |_| {},
        );
        assert!(e.is_err(), "{s:?}");
    }
}

#[test]
fn no_samples_is_an_error() {
    let cpu = CpuBackend::new(Par::Seq).unwrap();
    let job = Job {
        backend: &cpu,
        dense: &cpu,
        device: &Device::Cpu,
        wanted: &|_| true,
        stats: StatsPlace::Auto,
    };
    let mut graph = Toy {
        embed: None,
        blocks: vec![None, None],
    };
    let s = Settings::new(Method::Wanda, Target::Sparsity(0.5));
    for bad in [vec![], vec![vec![]]] {
        let e = prune_model(
            &job,
            &mut graph,
            &weights(),
            &bad,
            &s,
            &mut Collect::default(),
            &mut |_| {},
        );
        assert!(e.unwrap_err().to_string().contains("calibration sample"));
    }
}
