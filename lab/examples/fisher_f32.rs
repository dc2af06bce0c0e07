//! How far an f32 Woodbury computation of the CBS protocol's Fisher lands
//! from prunus's f64 one, on MLPNet trained on MNIST (the measurement behind
//! `prunus_core::dense`'s docs):
//!
//! ```sh
//! cargo run --release -p prunus-lab --example fisher_f32 -- ../shared/data/mnist
//! ```
//!
//! It trains the protocol's network (seed 0), builds the Fisher from all
//! 6,000 training gradients in f64 through `Fisher`, repeats the Woodbury
//! diagonal and the multi-weight OBS update (magnitude sets at 50% and 90%)
//! in f32 with faer, and prints the relative errors.

use faer::linalg::matmul::triangular::BlockStructure;
use faer::linalg::solvers::SolveCore;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use prunus_core::host::{Host, Objective, Samples, Split};
use prunus_core::methods::second_order::fisher::{Fisher, FisherConfig};
use prunus_cpu::{CpuBackend, Par as CPar};
use prunus_lab::data::Dataset;
use prunus_lab::host::{LabHost, Sgd};
use prunus_lab::network::Network;
use std::sync::Arc;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/data/mnist".into());
    let data = match Dataset::mnist(std::path::Path::new(&dir)) {
        Ok(d) => Arc::new(d),
        Err(e) => {
            eprintln!("error: {e} (pass the MNIST folder as the first argument)");
            std::process::exit(2);
        }
    };
    let mut host = LabHost::new(
        Network::mlp(&[784, 40, 20, 10], false, 0).unwrap(),
        data,
        Sgd::default(),
        0,
    )
    .unwrap();
    for e in 0..20 {
        if e == 14 {
            host.set_sgd(Sgd::default().learning_rate(0.005)).unwrap();
        }
        host.train_epoch().unwrap();
    }
    let n = 6000;
    let d = 32360;
    let g = host
        .per_sample_gradients(&Objective::new(Samples::first(Split::Train, n)), &[0, 1, 2])
        .unwrap();
    let lambda = 1e-3f64;
    let cpu = CpuBackend::new(CPar::Rayon(2)).unwrap();
    let fisher = Fisher::new(
        &cpu,
        &g,
        n,
        &[31360, 800, 200],
        &FisherConfig::default().damping(lambda),
    )
    .unwrap();
    let diag64 = fisher.inverse_diagonal().unwrap();
    // f32 Woodbury: K = NλI + G Gᵀ, L, W = L⁻¹ G, diag = (1 - |w_q|²)/λ
    let gm = MatRef::from_row_major_slice(&g, n, d);
    let mut k = Mat::<f32>::zeros(n, n);
    faer::linalg::matmul::triangular::matmul(
        k.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        gm,
        BlockStructure::Rectangular,
        gm.transpose(),
        BlockStructure::Rectangular,
        1.0f32,
        Par::rayon(2),
    );
    for i in 0..n {
        for j in 0..i {
            k[(j, i)] = k[(i, j)];
        }
        k[(i, i)] += (n as f64 * lambda) as f32;
    }
    let llt = k.as_ref().llt(faer::Side::Lower).unwrap();
    let mut w = g.clone();
    let wm = MatMut::from_row_major_slice_mut(&mut w, n, d);
    faer::linalg::triangular_solve::solve_lower_triangular_in_place(llt.L(), wm, Par::rayon(2));
    let mut norms = vec![0f32; d];
    for r in 0..n {
        for q in 0..d {
            norms[q] += w[r * d + q] * w[r * d + q];
        }
    }
    let fdiag = fisher.fisher_diagonal();
    let mut errs: Vec<f64> = Vec::new();
    let mut nonpos = 0;
    for q in 0..d {
        let v32 = (1.0 - norms[q] as f64) / lambda;
        if v32 <= 0.0 {
            nonpos += 1;
        }
        errs.push(((v32 - diag64[q]) / diag64[q]).abs());
    }
    errs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let ratio: Vec<f64> = {
        let mut r: Vec<f64> = fdiag.iter().map(|f| f / lambda).collect();
        r.sort_by(|a, b| a.partial_cmp(b).unwrap());
        r
    };
    println!(
        "F_qq/λ: median {:.3e}, 99% {:.3e}, max {:.3e}",
        ratio[d / 2],
        ratio[d * 99 / 100],
        ratio[d - 1]
    );
    println!(
        "f32 Woodbury diag(F̂⁻¹) relative error vs f64: median {:.3e}, 90% {:.3e}, 99% {:.3e}, max {:.3e}; non-positive {nonpos} of {d}",
        errs[d / 2],
        errs[d * 9 / 10],
        errs[d * 99 / 100],
        errs[d - 1]
    );
    // ranking agreement at 0.9: WF-S sets
    let theta: Vec<f64> =
        prunus_core::methods::second_order::surgeon::flat_weights(&host, &[0, 1, 2]).unwrap();
    let k90 = prunus_core::methods::second_order::surgeon::pruned_count(0.9, d).unwrap();
    let d32: Vec<f64> = (0..d)
        .map(|q| ((1.0 - norms[q] as f64) / lambda).max(1e-30))
        .collect();
    let a = prunus_core::methods::second_order::surgeon::woodfisher(&theta, &diag64, k90).unwrap();
    let b = prunus_core::methods::second_order::surgeon::woodfisher(&theta, &d32, k90).unwrap();
    let diff = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    println!("WF-S at 0.9: {diff} of {d} weights differ between the f32 and f64 diagonals");

    for s in [0.5f64, 0.9] {
        let kk = prunus_core::methods::second_order::surgeon::pruned_count(s, d).unwrap();
        let pr = prunus_core::methods::second_order::surgeon::magnitude(&theta, kk).unwrap();
        let d64 = fisher.obs_update(&theta, &pr).unwrap();
        let rset: Vec<usize> = (0..d).filter(|&q| !pr[q]).collect();
        let pset: Vec<usize> = (0..d).filter(|&q| pr[q]).collect();
        // y = G_P θ_P (N), b = G_Rᵀ y / N, all f32
        let mut y = vec![0f32; n];
        for r in 0..n {
            let row = &g[r * d..(r + 1) * d];
            y[r] = pset.iter().map(|&q| row[q] * theta[q] as f32).sum();
        }
        let mut b = vec![0f32; rset.len()];
        for r in 0..n {
            let row = &g[r * d..(r + 1) * d];
            for (i, &q) in rset.iter().enumerate() {
                b[i] += row[q] * y[r] / n as f32;
            }
        }
        // G_R as N x |R| f32
        let m = rset.len();
        let mut gr = vec![0f32; n * m];
        for r in 0..n {
            for (i, &q) in rset.iter().enumerate() {
                gr[r * m + i] = g[r * d + q];
            }
        }
        let grm = MatRef::from_row_major_slice(&gr, n, m);
        let delta32: Vec<f32> = if m < n {
            let mut f = Mat::<f32>::zeros(m, m);
            faer::linalg::matmul::matmul(
                f.as_mut(),
                Accum::Replace,
                grm.transpose(),
                grm,
                1.0f32 / n as f32,
                Par::rayon(2),
            );
            for i in 0..m {
                f[(i, i)] += lambda as f32;
            }
            let l = f.as_ref().llt(faer::Side::Lower).unwrap();
            let mut x = Mat::<f32>::from_fn(m, 1, |i, _| b[i]);
            l.solve_in_place_with_conj(faer::Conj::No, x.as_mut());
            (0..m).map(|i| x[(i, 0)]).collect()
        } else {
            let mut kr = Mat::<f32>::zeros(n, n);
            faer::linalg::matmul::matmul(
                kr.as_mut(),
                Accum::Replace,
                grm,
                grm.transpose(),
                1.0f32,
                Par::rayon(2),
            );
            for i in 0..n {
                kr[(i, i)] += (n as f64 * lambda) as f32;
            }
            let l = kr.as_ref().llt(faer::Side::Lower).unwrap();
            let mut yy = Mat::<f32>::zeros(n, 1);
            faer::linalg::matmul::matmul(
                yy.as_mut(),
                Accum::Replace,
                grm,
                MatRef::from_column_major_slice(&b, m, 1),
                1.0f32,
                Par::rayon(2),
            );
            l.solve_in_place_with_conj(faer::Conj::No, yy.as_mut());
            let mut z = Mat::<f32>::zeros(m, 1);
            faer::linalg::matmul::matmul(
                z.as_mut(),
                Accum::Replace,
                grm.transpose(),
                yy.as_ref(),
                1.0f32,
                Par::rayon(2),
            );
            (0..m).map(|i| (b[i] - z[(i, 0)]) / lambda as f32).collect()
        };
        let mut num = 0f64;
        let mut den = 0f64;
        for (i, &q) in rset.iter().enumerate() {
            num += (delta32[i] as f64 - d64[q]).powi(2);
            den += d64[q].powi(2);
        }
        println!(
            "OBS update at {s} ({} path): f32 vs f64 relative error {:.3e} (|δ_R| {:.3e})",
            if m < n { "kept-set" } else { "Woodbury" },
            (num / den).sqrt(),
            den.sqrt()
        );
    }
}
