//! Checkpoint pruning against core's in-memory selection, round trips
//! through the reference safetensors implementation, and every malformed
//! input the reader must refuse.

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use proptest::prelude::*;
use prunus_adapters::safetensors::{
    Checkpoint, Dtype, Kept, Options, Request, inspect, prune_file, prune_to_writer,
};
use prunus_adapters::{Error, Problem};
use prunus_core::{Backend, Granularity, Importance, Layer, Mask, NofM, PruneConfig, Shape};
use prunus_cpu::{CpuBackend, Par};
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};

/// A tensor to put in a test file.
struct T {
    name: &'static str,
    dtype: &'static str,
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn t(name: &'static str, dtype: &'static str, shape: &[usize], values: Vec<f32>) -> T {
    T {
        name,
        dtype,
        shape: shape.to_vec(),
        values,
    }
}

fn encode(dtype: &str, values: &[f32]) -> Vec<u8> {
    let d = Dtype::parse(dtype).unwrap();
    let mut out = Vec::new();
    match dtype {
        "U8" => out.extend(values.iter().map(|&v| v as u8)),
        "I64" => values
            .iter()
            .for_each(|&v| out.extend_from_slice(&(v as i64).to_le_bytes())),
        _ => values.iter().for_each(|&v| d.encode(v, &mut out)),
    }
    out
}

fn st_dtype(d: &str) -> StDtype {
    match d {
        "F32" => StDtype::F32,
        "F16" => StDtype::F16,
        "BF16" => StDtype::BF16,
        "I64" => StDtype::I64,
        "U8" => StDtype::U8,
        _ => panic!("{d}"),
    }
}

/// The file the reference implementation writes for `tensors`.
fn file_bytes(tensors: &[T]) -> Vec<u8> {
    let data: Vec<Vec<u8>> = tensors.iter().map(|x| encode(x.dtype, &x.values)).collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&data)
        .map(|(x, d)| {
            (
                x.name.to_string(),
                TensorView::new(st_dtype(x.dtype), x.shape.clone(), d).unwrap(),
            )
        })
        .collect();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(meta)).unwrap()
}

fn cpu() -> CpuBackend<'static> {
    CpuBackend::new(Par::Rayon(2)).unwrap()
}

/// Prunes in memory and returns the output bytes.
fn prune_bytes(
    input: Vec<u8>,
    request: &Request,
) -> Result<(Vec<u8>, prunus_adapters::safetensors::Report), Error> {
    let c = Checkpoint::from_bytes(input)?;
    let mut out = Vec::new();
    let r = prune_to_writer(
        &cpu(),
        &c,
        request,
        &mut out,
        Path::new("<out>"),
        &mut |_| {},
    )?;
    Ok((out, r))
}

/// Core's masks for the eligible tensors of `input` (rank >= 2 floats), in
/// data order: the oracle.
fn oracle(input: &[u8], config: &PruneConfig) -> Result<Vec<(String, Mask)>, prunus_core::Error> {
    let c = Checkpoint::from_bytes(input.to_vec()).unwrap();
    let b = cpu();
    let mut names = Vec::new();
    let mut tensors = Vec::new();
    for (i, info) in c.tensors().iter().enumerate() {
        if info.dtype.is_prunable() && info.shape.len() >= 2 && info.numel() > 0 {
            names.push(info.name.clone());
            tensors.push(
                b.upload(&c.values(i).unwrap(), &Shape::new(&info.shape).unwrap())
                    .unwrap(),
            );
        }
    }
    let layers: Vec<Layer<'_, CpuBackend<'_>>> = names
        .iter()
        .zip(&tensors)
        .map(|(n, t)| Layer::new(n, t))
        .collect();
    let masks = prunus_core::prune(&b, &layers, config)?;
    Ok(names.into_iter().zip(masks).collect())
}

/// The masks an output file holds, read back through the reference reader.
fn masks_in(out: &[u8]) -> Vec<(String, Vec<u8>)> {
    let st = SafeTensors::deserialize(out).unwrap();
    let mut m: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n.ends_with(".mask"))
        .map(|(n, v)| (n.trim_end_matches(".mask").to_string(), v.data().to_vec()))
        .collect();
    m.sort();
    m
}

fn quantised(values: &[i8], scale: f32) -> Vec<f32> {
    // Small integers times a power of two: exact in every float dtype, with
    // many ties.
    values.iter().map(|&v| v as f32 * scale).collect()
}

fn dtype_strategy() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("F32"), Just("F16"), Just("BF16")]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The streamed selection prunes exactly what core prunes in memory,
    /// for every scope, importance, guard and dtype mix, with heavy ties.
    #[test]
    fn streamed_selection_equals_core(
        a in prop::collection::vec(-6i8..6, 24),
        b in prop::collection::vec(-6i8..6, 30),
        c in prop::collection::vec(-100i8..100, 12),
        dtypes in prop::collection::vec(dtype_strategy(), 3),
        sparsity in 0.0f64..1.0,
        global in any::<bool>(),
        random in any::<bool>(),
        min_density in prop_oneof![Just(0.0), 0.0f64..0.6],
        seed in any::<u64>(),
    ) {
        let file = file_bytes(&[
            t("layer.0.weight", dtypes[0], &[4, 6], quantised(&a, 0.5)),
            t("layer.0.bias", "F32", &[4], vec![0.1, -0.2, 0.3, 0.0]),
            t("layer.1.weight", dtypes[1], &[5, 3, 2], quantised(&b, 0.25)),
            t("steps", "I64", &[2], vec![3.0, 4.0]),
            t("head", dtypes[2], &[3, 4], quantised(&c, 1.0 / 64.0)),
        ]);
        let mut config = PruneConfig::new(sparsity).min_density(min_density);
        config = if global { config.global() } else { config.local() };
        if random {
            config = config.importance(Importance::Random { seed });
        }
        let mut request = Request::new(config.clone());
        request.masks = true;
        let ours = prune_bytes(file.clone(), &request);
        // Core's own errors (the guards) must be ours too, word for word.
        match (ours, oracle(&file, &config)) {
            (Ok((out, _)), Ok(expected)) => {
                let got = masks_in(&out);
                let mut want: Vec<(String, Vec<u8>)> =
                    expected.into_iter().map(|(n, m)| (n, m.to_bytes())).collect();
                want.sort();
                prop_assert_eq!(got, want);
            }
            (Err(ours), Err(core)) => prop_assert_eq!(ours, Error::Core(core)),
            (ours, core) => prop_assert!(
                false,
                "prunus said {:?}, core said {:?}",
                ours.map(|_| ()).err(),
                core.map(|_| ()).err()
            ),
        }
    }

    /// Every pruned value is +0 in its dtype, every other byte is untouched,
    /// and the reference reader reads the output.
    #[test]
    fn output_changes_only_pruned_values(
        a in prop::collection::vec(-6i8..6, 32),
        dtype in dtype_strategy(),
        sparsity in 0.0f64..0.98,
    ) {
        let values = quantised(&a, 0.5);
        let file = file_bytes(&[
            t("w", dtype, &[4, 8], values.clone()),
            t("b", "F32", &[4], vec![1.0, 2.0, 3.0, 4.0]),
        ]);
        let mut request = Request::new(PruneConfig::new(sparsity));
        request.masks = true;
        let (out, report) = prune_bytes(file, &request).unwrap();
        let st = SafeTensors::deserialize(&out).unwrap();
        let mask = st.tensor("w.mask").unwrap();
        let mask = Mask::from_bytes(Shape::new(&[4, 8]).unwrap(), mask.data()).unwrap();
        let w = st.tensor("w").unwrap();
        prop_assert_eq!(format!("{:?}", w.dtype()), dtype);
        let d = Dtype::parse(dtype).unwrap();
        let width = d.bits() / 8;
        let original = encode(dtype, &values);
        for i in 0..32 {
            let got = &w.data()[i * width..(i + 1) * width];
            if mask.get(i) {
                prop_assert_eq!(got, &original[i * width..(i + 1) * width]);
            } else {
                prop_assert!(got.iter().all(|&x| x == 0));
            }
        }
        prop_assert_eq!(mask.count_pruned(), prunus_core::selection::select::units_to_prune(sparsity, 32));
        prop_assert_eq!(st.tensor("b").unwrap().data(), &encode("F32", &[1.0, 2.0, 3.0, 4.0])[..]);
        let zeros_after = report.tensors.iter().find(|t| t.name == "w").unwrap().zeros_after.unwrap();
        let zeros: u64 = (0..32).filter(|&i| !mask.get(i) || values[i] == 0.0).count() as u64;
        prop_assert_eq!(zeros_after, zeros);
    }
}

#[test]
fn each_dtype_round_trips_with_expected_values() {
    for dtype in ["F32", "F16", "BF16"] {
        // The 4 smallest magnitudes (0.5, 1, 2, 3) go at 50%.
        let values = vec![3.0, -1.0, 8.0, 2.0, -7.0, 4.0, 0.5, -6.0];
        let file = file_bytes(&[t("w", dtype, &[2, 4], values)]);
        let (out, report) = prune_bytes(file, &Request::new(PruneConfig::new(0.5))).unwrap();
        let c = Checkpoint::from_bytes(out).unwrap();
        assert_eq!(c.tensors()[0].dtype.name(), dtype);
        assert_eq!(
            c.values(0).unwrap(),
            [0.0, 0.0, 8.0, 0.0, -7.0, 4.0, 0.0, -6.0],
            "{dtype}"
        );
        assert_eq!(report.tensors[0].zeros_after, Some(4));
        let meta = c.metadata();
        let get = |k: &str| meta.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
        assert_eq!(get("format"), Some("pt"));
        assert_eq!(get("prunus.method"), Some("magnitude"));
        assert_eq!(get("prunus.sparsity"), Some("0.5"));
        assert_eq!(get("prunus.scope"), Some("global"));
        assert_eq!(get("prunus.version"), Some(env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn half_precision_values_decode_exactly() {
    let values = [1.5f32, -0.0, 65504.0, 6.1e-5, -2.0];
    for (dtype, f) in [
        (
            "F16",
            (|x: f32| f16::from_f32(x).to_f32()) as fn(f32) -> f32,
        ),
        ("BF16", |x: f32| bf16::from_f32(x).to_f32()),
    ] {
        let c =
            Checkpoint::from_bytes(file_bytes(&[t("w", dtype, &[5], values.to_vec())])).unwrap();
        let want: Vec<f32> = values.iter().map(|&x| f(x)).collect();
        assert_eq!(c.values(0).unwrap(), want);
    }
}

#[test]
fn n_of_m_output_conforms_and_masks_are_written() {
    let values: Vec<f32> = (0..64).map(|i| ((i * 37) % 17) as f32 - 8.0).collect();
    let file = file_bytes(&[
        t("a", "BF16", &[4, 16], values.clone()),
        t("b", "F32", &[8, 8], values.clone()),
        t("norm", "F32", &[8], vec![1.0; 8]),
    ]);
    for random in [false, true] {
        let mut config = PruneConfig::new(0.0).granularity(Granularity::NofM(NofM::TWO_FOUR));
        if random {
            config = config.importance(Importance::Random { seed: 9 });
        }
        let mut request = Request::new(config.clone());
        request.masks = true;
        let (out, report) = prune_bytes(file.clone(), &request).unwrap();
        let c = Checkpoint::from_bytes(out.clone()).unwrap();
        let stats = inspect(&c, Some(NofM::TWO_FOUR), &mut |_| {}).unwrap();
        let by = |n: &str| stats.iter().find(|s| s.name == n).unwrap().clone();
        assert_eq!(by("a").violations, Some(0));
        assert_eq!(by("b").violations, Some(0));
        assert_eq!(by("norm").violations, None);
        assert_eq!(by("a.mask").zeros, None);
        assert!(by("a").zeros.unwrap() >= 32);
        let norm = report.tensors.iter().find(|t| t.name == "norm").unwrap();
        assert_eq!(norm.kept, Some(Kept::OneDimensional));
        // The same masks as core in memory.
        let mut want: Vec<(String, Vec<u8>)> = oracle(&file, &config)
            .unwrap()
            .into_iter()
            .map(|(n, m)| (n, m.to_bytes()))
            .collect();
        want.sort();
        assert_eq!(masks_in(&out), want);
    }
    // The unpruned input does not conform.
    let c = Checkpoint::from_bytes(file).unwrap();
    let stats = inspect(&c, Some(NofM::TWO_FOUR), &mut |_| {}).unwrap();
    assert!(stats[0].violations.unwrap() > 0);
}

#[test]
fn filters_and_guards_choose_the_tensors() {
    let v = |n: usize| (1..=n).map(|i| i as f32).collect::<Vec<_>>();
    let file = file_bytes(&[
        t("model.layers.0.mlp.weight", "F32", &[4, 4], v(16)),
        t("model.layers.0.attn.weight", "F32", &[4, 4], v(16)),
        t("model.embed.weight", "F32", &[4, 4], v(16)),
        t("model.norm.weight", "F32", &[4], v(4)),
    ]);
    let mut request = Request::new(PruneConfig::new(0.5));
    request.filter =
        prunus_adapters::safetensors::Filter::new(Some("layers"), Some("attn")).unwrap();
    let (_, report) = prune_bytes(file.clone(), &request).unwrap();
    let kept: Vec<Option<Kept>> = report.tensors.iter().map(|t| t.kept).collect();
    // Data order is the reference writer's: by name within a dtype.
    let names: Vec<&str> = report.tensors.iter().map(|t| t.name.as_str()).collect();
    let of = |n: &str| kept[names.iter().position(|x| *x == n).unwrap()];
    assert_eq!(of("model.layers.0.mlp.weight"), None);
    assert_eq!(of("model.layers.0.attn.weight"), Some(Kept::Excluded));
    assert_eq!(of("model.embed.weight"), Some(Kept::NotIncluded));
    assert_eq!(of("model.norm.weight"), Some(Kept::OneDimensional));
    // A minimum density the sparsity cannot meet is core's error.
    let request = Request::new(PruneConfig::new(0.9).local().min_density(0.5));
    assert!(matches!(
        prune_bytes(file.clone(), &request).unwrap_err(),
        Error::Core(prunus_core::Error::GuardsExceeded { .. })
    ));
    // Nothing to prune is an error, not an empty success.
    let mut request = Request::new(PruneConfig::new(0.5));
    request.filter = prunus_adapters::safetensors::Filter::new(Some("nothing"), None).unwrap();
    assert!(matches!(
        prune_bytes(file.clone(), &request).unwrap_err(),
        Error::Request { .. }
    ));
    assert!(matches!(
        prunus_adapters::safetensors::Filter::new(Some("("), None).unwrap_err(),
        Error::Request { .. }
    ));
    // Bad sparsities are refused.
    for s in [-0.1, 1.5, f64::NAN] {
        assert!(matches!(
            prune_bytes(file.clone(), &Request::new(PruneConfig::new(s))).unwrap_err(),
            Error::Core(prunus_core::Error::SparsityOutOfRange { .. })
        ));
    }
}

#[test]
fn non_finite_weights_are_named() {
    for (dtype, bad) in [
        ("F32", f32::NAN),
        ("BF16", f32::INFINITY),
        ("F16", f32::NEG_INFINITY),
    ] {
        let mut values = vec![1.0f32; 12];
        values[7] = bad;
        let file = file_bytes(&[t("w", dtype, &[3, 4], values)]);
        for config in [
            PruneConfig::new(0.5),
            PruneConfig::new(0.0).granularity(Granularity::NofM(NofM::TWO_FOUR)),
        ] {
            let err = prune_bytes(file.clone(), &Request::new(config)).unwrap_err();
            assert_eq!(
                err,
                Error::NonFinite {
                    tensor: "w".into(),
                    count: 1,
                    first: 7
                },
                "{dtype}"
            );
        }
    }
}

/// A scratch folder removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("prunus-st-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn files_are_written_atomically_and_never_over_the_input() {
    let dir = Scratch::new("atomic");
    let original = file_bytes(&[t("w", "F32", &[2, 4], vec![1., 2., 3., 4., 5., 6., 7., 8.])]);
    let input = dir.file("in.safetensors", &original);
    let c = Checkpoint::open(&input).unwrap();
    let b = cpu();
    let req = Request::new(PruneConfig::new(0.5));
    let run = |out: &Path, o: Options| prune_file(&b, &c, out, o, &req, &mut |_| {});
    // The input as output: refused, and through another path too.
    let err = run(&input, Options::default()).unwrap_err();
    assert!(matches!(err, Error::OutputIsInput { .. }), "{err}");
    let link = dir.0.join("link.safetensors");
    std::fs::hard_link(&input, &link).unwrap();
    assert!(matches!(
        run(&link, Options::default()).unwrap_err(),
        Error::OutputIsInput { .. }
    ));
    std::fs::remove_file(&link).unwrap();
    assert_eq!(std::fs::read(&input).unwrap(), original);
    // A new output is written; an existing one needs --force.
    let out = dir.0.join("out.safetensors");
    run(&out, Options::default()).unwrap();
    let first = std::fs::read(&out).unwrap();
    assert_eq!(
        Checkpoint::open(&out).unwrap().values(0).unwrap(),
        [0., 0., 0., 0., 5., 6., 7., 8.]
    );
    assert!(matches!(
        run(&out, Options::default()).unwrap_err(),
        Error::Request { .. }
    ));
    run(
        &out,
        Options {
            overwrite: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), first);
    // A failure leaves neither the output nor a temporary file.
    let bad = file_bytes(&[t(
        "w",
        "F32",
        &[2, 4],
        vec![1., 2., f32::NAN, 4., 5., 6., 7., 8.],
    )]);
    let bad_in = dir.file("bad.safetensors", &bad);
    let cb = Checkpoint::open(&bad_in).unwrap();
    let nm = Request::new(PruneConfig::new(0.0).granularity(Granularity::NofM(NofM::TWO_FOUR)));
    let failed = dir.0.join("failed.safetensors");
    assert!(prune_file(&b, &cb, &failed, Options::default(), &nm, &mut |_| {}).is_err());
    assert_eq!(
        dir.entries(),
        ["bad.safetensors", "in.safetensors", "out.safetensors"]
    );
    // In place, when asked: the input is replaced by the pruned file.
    run(
        &input,
        Options {
            in_place: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(std::fs::read(&input).unwrap(), first);
}

/// The error of opening `bytes` as a file.
fn open_err(dir: &Scratch, bytes: &[u8]) -> Error {
    let p = dir.file("bad.safetensors", bytes);
    match Checkpoint::open(&p) {
        Ok(_) => panic!("opened a malformed file"),
        Err(e) => e,
    }
}

fn with_header(json: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (json.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(json.as_bytes());
    b.extend_from_slice(data);
    b
}

fn problem(e: Error) -> (Option<String>, Problem) {
    match e {
        Error::Malformed {
            tensor, problem, ..
        } => (tensor, problem),
        other => panic!("not a malformed-file error: {other}"),
    }
}

#[test]
fn malformed_files_get_errors_naming_the_tensor() {
    let dir = Scratch::new("malformed");
    let w = |dtype: &str, shape: &str, offsets: &str| {
        format!(r#"{{"w":{{"dtype":"{dtype}","shape":{shape},"data_offsets":{offsets}}}}}"#)
    };
    let cases: Vec<(Vec<u8>, Option<&str>, Problem)> = vec![
        (vec![1, 2, 3], None, Problem::TooShort { len: 3 }),
        (
            with_header("{}", &[])
                .into_iter()
                .take(8)
                .chain([b'{'])
                .collect(),
            None,
            Problem::HeaderLength {
                declared: 2,
                available: 1,
            },
        ),
        (
            u64::MAX.to_le_bytes().to_vec(),
            None,
            Problem::HeaderTooLarge {
                declared: u64::MAX,
                limit: 100_000_000,
            },
        ),
        (
            with_header(&w("F32", "[2]", "[0,8]"), &[0; 4]),
            Some("w"),
            Problem::OutOfRange {
                end: 8,
                available: 4,
            },
        ),
        (
            with_header(&w("Q4", "[2]", "[0,8]"), &[0; 8]),
            Some("w"),
            Problem::UnknownDtype { dtype: "Q4".into() },
        ),
        (
            with_header(&w("F32", "[3]", "[0,8]"), &[0; 8]),
            Some("w"),
            Problem::SizeMismatch {
                expected: 12,
                found: 8,
            },
        ),
        (
            with_header(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                &[0; 12],
            ),
            Some("b"),
            Problem::Overlap { other: "a".into() },
        ),
        (
            with_header(&w("F32", "[1]", "[0,4]"), &[0; 6]),
            None,
            Problem::Gap { bytes: 2 },
        ),
    ];
    for (bytes, tensor, want) in cases {
        let (t, p) = problem(open_err(&dir, &bytes));
        assert_eq!((t.as_deref(), &p), (tensor, &want));
        // The same from bytes in memory.
        let (t2, p2) = problem(Checkpoint::from_bytes(bytes).err().unwrap());
        assert_eq!((t2, p2), (t, p));
    }
    // Not JSON; not an object; duplicates.
    assert!(matches!(
        problem(open_err(&dir, &with_header("{\"w\":", &[]))).1,
        Problem::Header { .. }
    ));
    assert!(matches!(
        problem(open_err(&dir, &with_header("[]", &[]))).1,
        Problem::Header { .. }
    ));
    // Non-finite weights: see non_finite_weights_are_named. A file cut short
    // after opening is caught before mapping:
    let good = file_bytes(&[t("w", "F32", &[2, 2], vec![1.0; 4])]);
    let p = dir.file("cut.safetensors", &good);
    let c = Checkpoint::open(&p).unwrap();
    std::fs::write(&p, &good[..good.len() - 4]).unwrap();
    let (t, pr) = problem(c.data(0).err().unwrap());
    assert_eq!(t.as_deref(), Some("w"));
    assert!(matches!(pr, Problem::OutOfRange { .. }));
    // An index past the last tensor is an error, not a panic.
    let c = Checkpoint::from_bytes(good.clone()).unwrap();
    assert!(matches!(c.data(1).err().unwrap(), Error::Request { .. }));
    assert!(matches!(c.values(7).err().unwrap(), Error::Request { .. }));
    // Missing files name the path.
    assert!(matches!(
        Checkpoint::open(dir.0.join("missing.safetensors"))
            .err()
            .unwrap(),
        Error::Io { .. }
    ));
}

#[test]
fn mask_names_already_taken_are_refused_before_writing() {
    let file = file_bytes(&[
        t("w", "F32", &[2, 4], vec![1.0; 8]),
        t("w.mask", "U8", &[1], vec![255.0]),
    ]);
    let mut request = Request::new(PruneConfig::new(0.5));
    request.masks = true;
    let c = Checkpoint::from_bytes(file.clone()).unwrap();
    let mut out = Vec::new();
    let err = prune_to_writer(
        &cpu(),
        &c,
        &request,
        &mut out,
        Path::new("<out>"),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Request { reason } if reason.contains("'w.mask'")),
        "{err}"
    );
    assert!(out.is_empty());
    // Without masks the U8 tensor is copied like any other.
    request.masks = false;
    assert!(prune_bytes(file, &request).is_ok());
}

#[test]
fn pruned_files_keep_other_dtypes_and_metadata_bit_for_bit() {
    let file = file_bytes(&[
        t(
            "w",
            "BF16",
            &[2, 4],
            vec![1., -2., 3., -4., 5., -6., 7., -8.],
        ),
        t("ids", "I64", &[3], vec![1.0, 2.0, 3.0]),
        t("flags", "U8", &[4], vec![1.0, 0.0, 1.0, 0.0]),
    ]);
    let (out, report) = prune_bytes(file.clone(), &Request::new(PruneConfig::new(0.25))).unwrap();
    let a = SafeTensors::deserialize(&file).unwrap();
    let b = SafeTensors::deserialize(&out).unwrap();
    for n in ["ids", "flags"] {
        assert_eq!(a.tensor(n).unwrap().data(), b.tensor(n).unwrap().data());
    }
    assert_eq!(
        report
            .tensors
            .iter()
            .filter(|t| t.kept == Some(Kept::Dtype))
            .count(),
        2
    );
    assert_eq!(report.pruned_totals(), (8, 0, 2));
}

/// A mixture-of-experts layout in miniature: thousands of small tensors
/// of mixed dtypes, pruned globally with and without guards, exactly as
/// core prunes them in memory (the selection keeps merged counts, not one
/// histogram per tensor, and resolves ties by one running rank).
#[test]
fn thousands_of_small_tensors_prune_as_core_does() {
    const NAMES: usize = 3000;
    let names: Vec<&'static str> = (0..NAMES)
        .map(|i| &*Box::leak(format!("layers.{}.experts.{}.w", i / 64, i % 64).into_boxed_str()))
        .collect();
    let tensors: Vec<T> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let dtype = ["BF16", "F32", "F16"][i % 3];
            let n = 8 * (4 + i % 5);
            let values: Vec<i8> = (0..n)
                .map(|j| (((i * 31 + j * 17) ^ (j * 7)) % 23) as i8 - 11)
                .collect();
            t(name, dtype, &[8, n / 8], quantised(&values, 0.125))
        })
        .collect();
    let file = file_bytes(&tensors);
    for (sparsity, min_density) in [(0.5, 0.0), (0.55, 0.4), (0.35, 0.62)] {
        let config = PruneConfig::new(sparsity).global().min_density(min_density);
        let mut request = Request::new(config.clone());
        request.masks = true;
        let (out, report) = prune_bytes(file.clone(), &request).unwrap();
        let mut want: Vec<(String, Vec<u8>)> = oracle(&file, &config)
            .unwrap()
            .into_iter()
            .map(|(n, m)| (n, m.to_bytes()))
            .collect();
        want.sort();
        assert_eq!(
            masks_in(&out),
            want,
            "sparsity {sparsity}, min density {min_density}"
        );
        let (n, _, zeros) = report.pruned_totals();
        assert!(zeros >= prunus_core::units_to_prune(sparsity, n));
    }
}
