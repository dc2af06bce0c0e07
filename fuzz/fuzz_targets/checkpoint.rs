//! The safetensors reader and the checkpoint pruner on hostile files: a
//! file built from a structured description (so the fuzzer reaches the
//! pruning paths), then optionally corrupted, or raw bytes. Either a clean
//! error, or an output that reads back with exactly the promised count
//! pruned.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prunus_adapters::safetensors::{Checkpoint, Request, inspect, prune_to_writer};
use prunus_core::{Granularity, Importance, Mask, NofM, PruneConfig, Shape, units_to_prune};
use prunus_cpu::{CpuBackend, Par};

#[derive(arbitrary::Arbitrary, Debug)]
struct Tensor {
    dtype: u8,
    rows: u8,
    cols: u8,
    values: Vec<u8>,
}

#[derive(arbitrary::Arbitrary, Debug)]
enum Input {
    /// Raw bytes, as read from disk.
    Raw(Vec<u8>),
    /// A file from tensors, with one optional corruption.
    Built {
        tensors: Vec<Tensor>,
        corrupt: u8,
        at: u16,
        byte: u8,
    },
}

#[derive(arbitrary::Arbitrary, Debug)]
struct Case {
    input: Input,
    sparsity: u8,
    flags: u8,
    seed: u64,
}

const DTYPES: [&str; 4] = ["F32", "F16", "BF16", "I64"];

fn build(tensors: &[Tensor]) -> Vec<u8> {
    let mut header = String::from("{\"__metadata__\":{\"format\":\"pt\"}");
    let mut data = Vec::new();
    for (i, t) in tensors.iter().take(5).enumerate() {
        let dtype = DTYPES[t.dtype as usize % 4];
        let (r, c) = (t.rows as usize % 6, t.cols as usize % 9);
        let shape = if t.dtype & 0x80 != 0 { format!("[{c}]") } else { format!("[{r},{c}]") };
        let n = if t.dtype & 0x80 != 0 { c } else { r * c };
        let start = data.len();
        for j in 0..n {
            let v = t.values.get(j).copied().unwrap_or(0);
            // Few values: ties, signed zeros, and now and then inf or NaN.
            let x = match v % 16 {
                0 => 0.0,
                1 => -0.0,
                2 if v > 250 => f32::NAN,
                3 if v > 250 => f32::INFINITY,
                k => (k as f32 - 8.0) * 0.25,
            };
            match dtype {
                "F32" => data.extend_from_slice(&x.to_le_bytes()),
                "F16" => data.extend_from_slice(&half::f16::from_f32(x).to_le_bytes()),
                "BF16" => data.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes()),
                _ => data.extend_from_slice(&(v as i64).to_le_bytes()),
            }
        }
        header.push_str(&format!(
            ",\"t{i}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":[{start},{}]}}",
            data.len()
        ));
    }
    header.push('}');
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&data);
    file
}

fuzz_target!(|case: Case| {
    let bytes = match &case.input {
        Input::Raw(b) => b.clone(),
        Input::Built { tensors, corrupt, at, byte } => {
            let mut b = build(tensors);
            let at = *at as usize % b.len().max(1);
            match corrupt % 4 {
                0 => {}
                1 => b[at] = *byte,
                2 => b.truncate(at),
                _ => b.insert(at, *byte),
            }
            b
        }
    };
    let Ok(checkpoint) = Checkpoint::from_bytes(bytes) else {
        return;
    };
    let _ = inspect(&checkpoint, Some(NofM::TWO_FOUR), &mut |_| {});
    let sparsity = case.sparsity as f64 / 255.0;
    let mut config = PruneConfig::new(sparsity);
    if case.flags & 1 != 0 {
        config = config.local();
    }
    if case.flags & 2 != 0 {
        config = config.importance(Importance::Random { seed: case.seed });
    }
    let pattern = case.flags & 4 != 0;
    if pattern {
        config = config.granularity(Granularity::NofM(NofM::TWO_FOUR));
    }
    let mut request = Request::new(config);
    request.masks = true;
    let backend = CpuBackend::new(Par::Seq).unwrap();
    let mut out = Vec::new();
    let Ok(report) = prune_to_writer(
        &backend,
        &checkpoint,
        &request,
        &mut out,
        "<out>".as_ref(),
        &mut |_| {},
    ) else {
        return;
    };
    let pruned = Checkpoint::from_bytes(out).expect("prunus reads what it writes");
    let mut removed = 0u64;
    let mut total = 0u64;
    for (i, t) in report.tensors.iter().enumerate() {
        if t.kept.is_some() {
            continue;
        }
        let mask_name = format!("{}.mask", t.name);
        let m = pruned
            .tensors()
            .iter()
            .position(|x| x.name == mask_name)
            .expect("every pruned tensor has its mask");
        let mask = Mask::from_bytes(Shape::new(&t.shape).unwrap(), &pruned.data(m).unwrap())
            .expect("masks have the tensor's size");
        let values = pruned
            .values(pruned.tensors().iter().position(|x| x.name == t.name).unwrap())
            .unwrap();
        for (j, v) in values.iter().enumerate() {
            assert!(mask.get(j) || *v == 0.0, "a pruned weight of {} is not zero", t.name);
        }
        if pattern {
            assert!(mask.satisfies(NofM::TWO_FOUR).unwrap());
        } else if case.flags & 1 != 0 {
            assert_eq!(mask.count_pruned(), units_to_prune(sparsity, t.numel), "tensor {i}");
        }
        removed += mask.count_pruned();
        total += t.numel;
    }
    if !pattern && case.flags & 1 == 0 {
        assert_eq!(removed, units_to_prune(sparsity, total));
    }
});
