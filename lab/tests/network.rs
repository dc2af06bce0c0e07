//! The lab networks' derivatives against finite differences, and their
//! determinism.

use std::sync::Arc;

use prunus_core::host::{Capability, Host, Objective, Samples, finite_difference_hvp};
use prunus_core::{Mask, Split, Tap};
use prunus_lab::data::Dataset;
use prunus_lab::host::{LabHost, Sgd};
use prunus_lab::network::{CnnSpec, Network, Want};
use prunus_lab::synthetic::gaussian;

/// A tiny dataset of random inputs and labels (no teacher needed here).
fn data(input: [usize; 3], classes: usize, n: usize, seed: u64) -> Arc<Dataset> {
    let d: usize = input.iter().product();
    let x: Vec<f32> = (0..(n * d) as u64).map(|i| gaussian(seed, 7, i)).collect();
    let y: Vec<u8> = (0..n).map(|i| ((i * 7 + 3) % classes) as u8).collect();
    Arc::new(Dataset::from_samples("test", input, classes, &x, &y).unwrap())
}

fn mlp_host(bias: bool) -> LabHost {
    let net = Network::mlp(&[6, 5, 4, 3], bias, 1).unwrap();
    LabHost::new(net, data([6, 1, 1], 3, 40, 2), Sgd::default(), 0).unwrap()
}

fn cnn_host() -> LabHost {
    let spec = CnnSpec {
        input: [2, 6, 6],
        channels: vec![3, 4],
        classes: 3,
        bias: true,
    };
    let net = Network::cnn(&spec, 3).unwrap();
    LabHost::new(net, data([2, 6, 6], 3, 30, 4), Sgd::default(), 0).unwrap()
}

fn loss(host: &mut LabHost, objective: &Objective) -> f64 {
    host.evaluate(objective).unwrap().loss
}

/// Central differences of the loss, in f64 around f32 weights, on every
/// coordinate.
fn numeric_gradient(host: &mut LabHost, objective: &Objective, h: f32) -> Vec<Vec<f32>> {
    let snapshot = host.snapshot().unwrap();
    let mut out = Vec::new();
    for p in 0..snapshot.weights.len() {
        let mut g = Vec::new();
        for j in 0..snapshot.weights[p].len() {
            let mut w = snapshot.weights[p].clone();
            w[j] += h;
            let up = f64::from(w[j]);
            host.set_weights(p, &w).unwrap();
            let plus = loss(host, objective);
            w[j] = snapshot.weights[p][j] - h;
            let down = f64::from(w[j]);
            host.set_weights(p, &w).unwrap();
            let minus = loss(host, objective);
            g.push(((plus - minus) / (up - down)) as f32);
            host.set_weights(p, &snapshot.weights[p]).unwrap();
        }
        out.push(g);
    }
    out
}

fn assert_close(what: &str, exact: &[Vec<f32>], numeric: &[Vec<f32>], rel: f32, abs: f32) {
    for (p, (a, b)) in exact.iter().zip(numeric).enumerate() {
        for (j, (&x, &y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= abs + rel * y.abs(),
                "{what}: parameter {p} entry {j}: exact {x}, numeric {y}"
            );
        }
    }
}

fn norm(x: &[Vec<f32>]) -> f64 {
    x.iter()
        .flatten()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

fn diff_norm(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn gradients_match_finite_differences() {
    for (name, mut host) in [
        ("mlp", mlp_host(true)),
        ("mlp without biases", mlp_host(false)),
        ("cnn", cnn_host()),
    ] {
        for temperature in [1.0, 5.0] {
            let objective = Objective::new(Samples::all(Split::Train)).temperature(temperature);
            let exact = host.gradient(&objective).unwrap();
            let numeric = numeric_gradient(&mut host, &objective, 1e-4);
            assert_close(
                &format!("{name} T={temperature}"),
                &exact,
                &numeric,
                2e-2,
                1e-3,
            );
            assert!(
                norm(&exact) > 1e-3,
                "{name}: a gradient of zero checks nothing"
            );
        }
    }
}

#[test]
fn per_sample_gradients_match_finite_differences_and_average_to_the_gradient() {
    for (name, mut host) in [("mlp", mlp_host(true)), ("cnn", cnn_host())] {
        let all = Objective::new(Samples::first(Split::Train, 10));
        let params: Vec<usize> = (0..host.parameters().len()).rev().collect();
        let d: usize = params
            .iter()
            .map(|&p| host.parameters()[p].shape.numel())
            .sum();
        let rows = host.per_sample_gradients(&all, &params).unwrap();
        assert_eq!(rows.len(), 10 * d);
        // Sample 3 alone, against finite differences of its own loss.
        let one = Objective::new(Samples {
            split: Split::Train,
            first: 3,
            count: Some(1),
        });
        let numeric = numeric_gradient(&mut host, &one, 1e-3);
        let mut at = 0;
        let row = &rows[3 * d..4 * d];
        let exact: Vec<Vec<f32>> = params
            .iter()
            .map(|&p| {
                let n = host.parameters()[p].shape.numel();
                at += n;
                row[at - n..at].to_vec()
            })
            .collect();
        let numeric: Vec<Vec<f32>> = params.iter().map(|&p| numeric[p].clone()).collect();
        assert_close(name, &exact, &numeric, 2e-2, 2e-4);
        // Their mean is the mini-batch gradient.
        let mean = host.gradient(&all).unwrap();
        let mut at = 0;
        for &p in &params {
            let n = host.parameters()[p].shape.numel();
            for j in 0..n {
                let s: f32 = (0..10).map(|r| rows[r * d + at + j]).sum::<f32>() / 10.0;
                assert!(
                    (s - mean[p][j]).abs() <= 1e-5 + 1e-4 * s.abs(),
                    "{name} p{p}[{j}]"
                );
            }
            at += n;
        }
    }
}

#[test]
fn hessian_vector_products_match_finite_differences() {
    for (name, mut host) in [("mlp", mlp_host(true)), ("cnn", cnn_host())] {
        // Away from initialisation, so that the curvature is not all softmax.
        for _ in 0..3 {
            host.train_epoch().unwrap();
        }
        for temperature in [1.0, 5.0, 200.0] {
            let objective = Objective::new(Samples::all(Split::Train)).temperature(temperature);
            let g = host.gradient(&objective).unwrap();
            let exact = host.hessian_vector_product(&objective, &g).unwrap();
            let numeric = finite_difference_hvp(&mut host, &objective, &g).unwrap();
            let err = diff_norm(&exact, &numeric) / norm(&numeric);
            assert!(norm(&numeric) > 0.0, "{name}: Hg is zero");
            assert!(err < 1e-2, "{name} T={temperature}: relative error {err}");
        }
        // Along a random direction too (the products differ from Hg).
        let objective = Objective::new(Samples::all(Split::Train));
        let v: Vec<Vec<f32>> = host
            .parameters()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (0..p.shape.numel() as u64)
                    .map(|j| gaussian(9, i as u32, j))
                    .collect()
            })
            .collect();
        let exact = host.hessian_vector_product(&objective, &v).unwrap();
        let numeric = finite_difference_hvp(&mut host, &objective, &v).unwrap();
        let err = diff_norm(&exact, &numeric) / norm(&numeric);
        assert!(err < 1e-2, "{name} random v: relative error {err}");
    }
}

#[test]
fn hessian_vector_product_is_symmetric() {
    // uᵀ H v = vᵀ H u, a property finite differences do not give exactly.
    let mut host = cnn_host();
    host.train_epoch().unwrap();
    let objective = Objective::new(Samples::all(Split::Train));
    let dir = |seed: u64| -> Vec<Vec<f32>> {
        host.parameters()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (0..p.shape.numel() as u64)
                    .map(|j| gaussian(seed, i as u32, j))
                    .collect()
            })
            .collect()
    };
    let (u, v) = (dir(1), dir(2));
    let hu = host.hessian_vector_product(&objective, &u).unwrap();
    let hv = host.hessian_vector_product(&objective, &v).unwrap();
    let dot = |a: &[Vec<f32>], b: &[Vec<f32>]| -> f64 {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum()
    };
    let (a, b) = (dot(&u, &hv), dot(&v, &hu));
    assert!((a - b).abs() <= 1e-4 * a.abs().max(b.abs()), "{a} vs {b}");
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut host = cnn_host();
            let l = host.train_epoch().unwrap();
            let objective = Objective::new(Samples::all(Split::Train));
            let g = host.gradient(&objective).unwrap();
            let hg = host.hessian_vector_product(&objective, &g).unwrap();
            (l.to_bits(), g, hg, host.snapshot().unwrap())
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn masked_weights_stay_zero_and_get_no_gradient() {
    let mut host = mlp_host(true);
    let p = &host.parameters()[0];
    let mask = Mask::from_fn(p.shape.clone(), |i| i % 3 != 0);
    let mut masks = vec![None; host.parameters().len()];
    masks[0] = Some(mask.clone());
    host.set_masks(&masks).unwrap();
    for _ in 0..2 {
        host.train_epoch().unwrap();
    }
    let w = host.weights(0).unwrap();
    let g = host
        .gradient(&Objective::new(Samples::all(Split::Train)))
        .unwrap();
    for i in 0..w.len() {
        if !mask.get(i) {
            assert_eq!((w[i], g[0][i]), (0.0, 0.0), "entry {i}");
        }
    }
    assert!(w.iter().enumerate().any(|(i, &v)| mask.get(i) && v != 0.0));
}

#[test]
fn unit_scales_scale_the_outputs() {
    // Scaling a hidden unit by 0 equals removing it: the loss matches the
    // network whose row of that unit is zero.
    let mut a = mlp_host(false);
    let mut b = mlp_host(false);
    a.set_unit_scales(0, Some(&[1.0, 0.0, 1.0, 1.0, 1.0]))
        .unwrap();
    let mut w = b.weights(0).unwrap();
    w[6..12].fill(0.0);
    b.set_weights(0, &w).unwrap();
    let objective = Objective::new(Samples::all(Split::Test));
    assert_eq!(
        a.evaluate(&objective).unwrap(),
        b.evaluate(&objective).unwrap()
    );
    // And a scale of 2 on every unit of a bias-free ReLU layer doubles the
    // next layer's input, as doubling the weights does.
    let mut c = mlp_host(false);
    c.set_unit_scales(0, Some(&[2.0; 5])).unwrap();
    let mut d = mlp_host(false);
    let w: Vec<f32> = d.weights(0).unwrap().iter().map(|v| v * 2.0).collect();
    d.set_weights(0, &w).unwrap();
    let (ec, ed) = (
        c.evaluate(&objective).unwrap(),
        d.evaluate(&objective).unwrap(),
    );
    assert!((ec.loss - ed.loss).abs() < 1e-6);
    // The gradient through a scaled layer matches finite differences.
    let train = Objective::new(Samples::all(Split::Train));
    a.set_unit_scales(1, Some(&[0.5, 1.5, 0.0, 2.0])).unwrap();
    let exact = a.gradient(&train).unwrap();
    let numeric = numeric_gradient(&mut a, &train, 1e-3);
    assert_close("scaled", &exact, &numeric, 2e-2, 2e-4);
}

#[test]
fn activations_are_the_hidden_relu_outputs() {
    let mut host = mlp_host(false);
    let acts = host
        .activations(&Samples::first(Split::Train, 5), Tap::Output)
        .unwrap();
    assert_eq!(acts.len(), 2);
    assert_eq!(
        (acts[0].parameter, acts[0].width, acts[0].values.len()),
        (0, 5, 25)
    );
    assert_eq!((acts[1].parameter, acts[1].width), (1, 4));
    // The first hidden layer by hand for sample 0.
    let w = host.weights(0).unwrap();
    let x = &host.data().train.inputs[..6];
    for j in 0..5 {
        let z: f32 = (0..6).map(|k| w[j * 6 + k] * x[k]).sum();
        assert!((acts[0].values[j] - z.max(0.0)).abs() < 1e-5);
    }
}

#[test]
fn pre_activations_are_every_weight_layer_before_its_relu() {
    let mut host = mlp_host(true);
    let samples = Samples::first(Split::Train, 5);
    let pre = host.activations(&samples, Tap::PreActivation).unwrap();
    let post = host.activations(&samples, Tap::Output).unwrap();
    // Hidden layers 5 and 4 wide, then the classifier's logits.
    let shape: Vec<_> = pre.iter().map(|a| (a.parameter, a.width)).collect();
    assert_eq!(shape, [(0, 5), (2, 4), (4, 3)]);
    for (a, b) in pre.iter().zip(&post) {
        assert_eq!(a.parameter, b.parameter);
        for (z, r) in a.values.iter().zip(&b.values) {
            assert_eq!(z.max(0.0), *r);
        }
    }
    // The first layer by hand for sample 1, bias included.
    let (w, bias) = (host.weights(0).unwrap(), host.weights(1).unwrap());
    let x = &host.data().train.inputs[6..12];
    assert!(pre[0].values.iter().any(|&z| z < 0.0));
    for j in 0..5 {
        let z: f32 = bias[j] + (0..6).map(|k| w[j * 6 + k] * x[k]).sum::<f32>();
        assert!((pre[0].values[5 + j] - z).abs() < 1e-5);
    }
}

#[test]
fn bad_requests_are_errors() {
    let mut host = mlp_host(true);
    assert!(host.set_weights(0, &[1.0]).is_err());
    assert!(host.set_weights(99, &[]).is_err());
    let mut w = host.weights(0).unwrap();
    w[0] = f32::NAN;
    assert!(host.set_weights(0, &w).is_err());
    let past = Samples {
        split: Split::Test,
        first: 10_000,
        count: None,
    };
    assert!(host.evaluate(&Objective::new(past)).is_err());
    assert!(
        host.hessian_vector_product(&Objective::new(Samples::all(Split::Train)), &[])
            .is_err()
    );
    assert!(host.set_unit_scales(1, Some(&[1.0])).is_err());
    assert!(host.supports(Capability::PerSampleGradients));
    let net = Network::mlp(&[6, 3], false, 0).unwrap();
    assert!(net.pass(&[0.0; 5], &[0], 1.0, Want::Loss).is_err());
    assert!(net.pass(&[0.0; 6], &[3], 1.0, Want::Loss).is_err());
    assert!(Network::mlp(&[6], false, 0).is_err());
    // A network that does not fit the data.
    assert!(LabHost::new(net, data([5, 1, 1], 3, 10, 0), Sgd::default(), 0).is_err());
}

#[test]
fn training_reduces_the_loss() {
    let mut host = cnn_host();
    let objective = Objective::new(Samples::all(Split::Train));
    let before = host.evaluate(&objective).unwrap().loss;
    host.set_sgd(Sgd::default().batch(4)).unwrap();
    for _ in 0..10 {
        host.train_epoch().unwrap();
    }
    let after = host.evaluate(&objective).unwrap().loss;
    assert!(after < 0.7 * before, "{before} -> {after}");
}
