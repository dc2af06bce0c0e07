//! Selection on arbitrary shapes, sparsities and tie-heavy scores: either a
//! clean error, or masks that prune exactly the promised count.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prunus_core::{Backend, Granularity, Grouping, Layer, NanPolicy, NofM, PruneConfig, ReferenceBackend, Shape, units_to_prune};
use prunus_core::prune;

#[derive(arbitrary::Arbitrary, Debug)]
struct Case {
    layers: Vec<(u8, u8, Vec<u8>)>,
    sparsity: f64,
    granularity: u8,
    local: bool,
    nan: u8,
    min_density: u8,
}

fuzz_target!(|case: Case| {
    let b = ReferenceBackend;
    let mut tensors = Vec::new();
    for (r, c, bytes) in case.layers.iter().take(6) {
        let (r, c) = (*r as usize % 9, *c as usize % 17);
        // Few distinct values: ties everywhere, plus signed zeros and NaN.
        let data: Vec<f32> = (0..r * c)
            .map(|i| match bytes.get(i).copied().unwrap_or(0) % 8 {
                0 => 0.0,
                1 => -0.0,
                2 => f32::NAN,
                3 => -1.0,
                v => v as f32 * 0.25,
            })
            .collect();
        let Ok(shape) = Shape::matrix(r, c) else { return };
        tensors.push(b.upload(&data, &shape).unwrap());
    }
    let names: Vec<String> = (0..tensors.len()).map(|i| format!("l{i}")).collect();
    let layers: Vec<Layer<'_, ReferenceBackend>> =
        tensors.iter().zip(&names).map(|(t, n)| Layer::new(n, t)).collect();
    let granularity = match case.granularity % 4 {
        0 => Granularity::Unstructured,
        1 => Granularity::NofM(NofM { n: 2, m: 4 }),
        2 => Granularity::Groups(Grouping::Rows),
        _ => Granularity::Groups(Grouping::Blocks { rows: 2, cols: 3 }),
    };
    let nan = [NanPolicy::Error, NanPolicy::Lowest, NanPolicy::Highest][case.nan as usize % 3];
    let mut config = PruneConfig::new(case.sparsity)
        .granularity(granularity)
        .nan_policy(nan)
        .min_density(case.min_density as f64 / 255.0);
    if case.local {
        config = config.local();
    }
    let Ok(masks) = prune(&b, &layers, &config) else { return };
    assert_eq!(masks.len(), layers.len());
    if granularity == Granularity::Unstructured && !case.local {
        let n: u64 = tensors.iter().map(|t| prunus_core::HasShape::shape(t).numel() as u64).sum();
        let pruned: u64 = masks.iter().map(|m| m.count_pruned()).sum();
        assert_eq!(pruned, units_to_prune(case.sparsity, n));
    }
});
