//! Second-order pruning (METHODS.md §2): the f64 [`Dense`] kernels of the CPU
//! backend against a naive product and the reference loops; the Fisher
//! inverse, the OBS and WoodFisher updates and the CBS-S objective against a
//! dense closed form built here in f64, on every path, block structure and
//! backend; CBS-S against brute-force enumeration; selection invariants; and
//! errors instead of panics on bad input.

use proptest::prelude::*;

use prunus_core::methods::second_order::fisher::{Blocks, Fisher, FisherConfig, Path};
use prunus_core::methods::second_order::surgeon::{
    SearchConfig, cbs_select, lowest, magnitude, perturbed_start, pruned_count,
};
use prunus_core::{Dense, Error, Matrix, ReferenceBackend};
use prunus_cpu::{CpuBackend, Par};
use prunus_testing::dense::{self, Rng, assert_close, norm, rel_diff};

/// Relative tolerance of everything that goes through `F̂⁻¹`.
const INVERSE_TOL: f64 = 1e-8;
/// Relative tolerance of the undamped products (no inverse involved).
const PRODUCT_TOL: f64 = 1e-12;

const BLOCKS: [Blocks; 3] = [Blocks::Whole, Blocks::Parameters, Blocks::Size(3)];
const PATHS: [Path; 3] = [Path::Auto, Path::Woodbury, Path::Explicit];

/// The reference loops and the CPU backend sequential and on two threads.
fn backends() -> Vec<(String, Box<dyn Dense>)> {
    vec![
        ("reference".to_string(), Box::new(ReferenceBackend)),
        (
            "cpu(seq)".to_string(),
            Box::new(CpuBackend::new(Par::Seq).unwrap()),
        ),
        (
            "cpu(2 threads)".to_string(),
            Box::new(CpuBackend::new(Par::Rayon(2)).unwrap()),
        ),
    ]
}

macro_rules! assert_err {
    ($e:expr, $p:pat, $what:expr) => {
        match $e {
            Err($p) => {}
            other => panic!(
                "{}: expected Err({}), got {:?}",
                $what,
                stringify!($p),
                other
            ),
        }
    };
}

// ---------------------------------------------------------------------------
// 1. Dense conformance: the checks of prunus-testing on every backend
// ---------------------------------------------------------------------------

/// Runs a Dense check of the harness on every backend, naming the backend
/// on stderr before each so that a failure says which one.
fn on_every_backend(check: impl Fn(&dyn Dense)) {
    for (name, dense) in backends() {
        eprintln!("on {name}");
        check(&*dense);
    }
}

#[test]
fn dense_matmul_matches_naive_product_on_every_backend() {
    on_every_backend(|d| dense::check_matmul(d));
}

/// With `beta = 0` the old `c` is not read at all, NaN included (BLAS
/// convention).
#[test]
fn dense_matmul_with_zero_beta_ignores_nan_output() {
    on_every_backend(|d| dense::check_matmul_zero_beta(d));
}

#[test]
fn dense_gram_matches_naive_and_writes_both_triangles() {
    on_every_backend(|d| dense::check_gram(d));
}

#[test]
fn dense_cholesky_factors_spd_matrices() {
    on_every_backend(|d| dense::check_cholesky(d));
}

#[test]
fn dense_solve_rows_inverts_the_triangular_factor() {
    on_every_backend(|d| dense::check_solve_rows(d));
}

#[test]
fn dense_shape_mismatches_are_errors_and_write_nothing() {
    on_every_backend(|d| dense::check_shape_errors(d));
    assert_err!(
        Matrix::new(2, 3, vec![0.0; 5]),
        Error::LengthMismatch { .. },
        "Matrix::new of 5 elements as 2x3"
    );
}

#[test]
fn dense_cholesky_of_non_positive_definite_is_an_error() {
    on_every_backend(|d| dense::check_not_positive_definite(d));
}

// ---------------------------------------------------------------------------
// 2. The Fisher and the updates against a dense closed form
// ---------------------------------------------------------------------------

/// `n` per-sample gradients (row-major `n x d`, f32) of `d` weights split
/// into parameters `sizes`, and weights `theta`.
struct Problem {
    n: usize,
    sizes: Vec<usize>,
    grads: Vec<f32>,
    theta: Vec<f64>,
}

impl Problem {
    /// Random gradients with column scales between 0.05 and 2.05, random
    /// weights of mixed signs.
    fn random(seed: u64, n: usize, sizes: &[usize]) -> Problem {
        let mut rng = Rng(seed);
        let d: usize = sizes.iter().sum();
        let scales: Vec<f64> = (0..d).map(|_| 0.05 + 2.0 * rng.signed().abs()).collect();
        let grads = (0..n * d)
            .map(|e| (rng.signed() * scales[e % d]) as f32)
            .collect();
        Problem {
            n,
            sizes: sizes.to_vec(),
            grads,
            theta: rng.values(d),
        }
    }

    fn dim(&self) -> usize {
        self.sizes.iter().sum()
    }

    fn fisher<'d>(
        &self,
        dense: &'d dyn Dense,
        config: &FisherConfig,
    ) -> Fisher<'d, dyn Dense + 'd> {
        Fisher::new(dense, &self.grads, self.n, &self.sizes, config)
            .unwrap_or_else(|e| panic!("Fisher::new with {config:?}: {e:?}"))
    }
}

/// The block of every weight, worked out independently of the library.
fn block_ids(sizes: &[usize], blocks: Blocks) -> Vec<usize> {
    let mut ids = Vec::new();
    let mut next = 0;
    for &s in sizes {
        for q in 0..s {
            ids.push(match blocks {
                Blocks::Whole => 0,
                Blocks::Parameters => next,
                Blocks::Size(b) => next + q / b,
            });
        }
        next += match blocks {
            Blocks::Whole => 0,
            Blocks::Parameters => 1,
            Blocks::Size(b) => s.div_ceil(b),
        };
    }
    ids
}

/// The inverse of a square row-major matrix by Gauss–Jordan elimination
/// with partial pivoting.
fn invert(a: &[f64], n: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| m[i * n + col].abs().total_cmp(&m[j * n + col].abs()))
            .unwrap();
        assert!(
            m[piv * n + col] != 0.0,
            "singular matrix in the closed form"
        );
        for j in 0..n {
            m.swap(piv * n + j, col * n + j);
            inv.swap(piv * n + j, col * n + j);
        }
        let p = m[col * n + col];
        for j in 0..n {
            m[col * n + j] /= p;
            inv[col * n + j] /= p;
        }
        for i in 0..n {
            let f = m[i * n + col];
            if i != col && f != 0.0 {
                for j in 0..n {
                    m[i * n + j] -= f * m[col * n + j];
                    inv[i * n + j] -= f * inv[col * n + j];
                }
            }
        }
    }
    inv
}

fn mat_vec(a: &[f64], v: &[f64]) -> Vec<f64> {
    let d = v.len();
    (0..d)
        .map(|i| (0..d).map(|j| a[i * d + j] * v[j]).sum())
        .collect()
}

fn quadratic(a: &[f64], v: &[f64]) -> f64 {
    mat_vec(a, v).iter().zip(v).map(|(x, y)| x * y).sum()
}

fn restricted(theta: &[f64], pruned: &[bool]) -> Vec<f64> {
    theta
        .iter()
        .zip(pruned)
        .map(|(&t, &p)| if p { t } else { 0.0 })
        .collect()
}

/// The dense closed form: `F` (undamped, cross-block entries zeroed),
/// `F̂ = λI + F` and `F̂⁻¹`, all `d x d` row-major f64.
struct ClosedForm {
    d: usize,
    f: Vec<f64>,
    damped: Vec<f64>,
    inv: Vec<f64>,
}

impl ClosedForm {
    fn new(p: &Problem, blocks: Blocks, damping: f64) -> ClosedForm {
        let d = p.dim();
        let ids = block_ids(&p.sizes, blocks);
        let g = |s: usize, q: usize| f64::from(p.grads[s * d + q]);
        let mut f = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                if ids[i] == ids[j] {
                    f[i * d + j] = (0..p.n).map(|s| g(s, i) * g(s, j)).sum::<f64>() / p.n as f64;
                }
            }
        }
        let mut damped = f.clone();
        for i in 0..d {
            damped[i * d + i] += damping;
        }
        let inv = invert(&damped, d);
        ClosedForm { d, f, damped, inv }
    }

    fn inverse_diagonal(&self) -> Vec<f64> {
        (0..self.d).map(|q| self.inv[q * self.d + q]).collect()
    }

    /// `δθ = −F̂⁻¹[:,P] (F̂⁻¹[P,P])⁻¹ θ_P`.
    fn obs(&self, theta: &[f64], pruned: &[bool]) -> Vec<f64> {
        let d = self.d;
        let p: Vec<usize> = (0..d).filter(|&q| pruned[q]).collect();
        let m = p.len();
        if m == 0 {
            return vec![0.0; d];
        }
        let sub: Vec<f64> = p
            .iter()
            .flat_map(|&i| p.iter().map(move |&j| self.inv[i * d + j]))
            .collect();
        let sub_inv = invert(&sub, m);
        let x: Vec<f64> = (0..m)
            .map(|a| (0..m).map(|b| sub_inv[a * m + b] * theta[p[b]]).sum())
            .collect();
        (0..d)
            .map(|i| -(0..m).map(|a| self.inv[i * d + p[a]] * x[a]).sum::<f64>())
            .collect()
    }

    /// `−F̂⁻¹ v`, `v_q = θ_q / [F̂⁻¹]_qq` on P, then `δ_P = −θ_P`.
    fn woodfisher(&self, theta: &[f64], pruned: &[bool]) -> Vec<f64> {
        let diag = self.inverse_diagonal();
        let v: Vec<f64> = (0..self.d)
            .map(|q| if pruned[q] { theta[q] / diag[q] } else { 0.0 })
            .collect();
        let mut delta: Vec<f64> = mat_vec(&self.inv, &v).iter().map(|x| -x).collect();
        for q in 0..self.d {
            if pruned[q] {
                delta[q] = -theta[q];
            }
        }
        delta
    }

    fn objective(&self, theta: &[f64], pruned: &[bool]) -> f64 {
        quadratic(&self.f, &restricted(theta, pruned))
    }
}

/// The pruned sets every problem is checked on: none, one, all but one,
/// all, each parameter exactly (one block hit, the others missed), every
/// other weight (every block hit), and random sets of several sizes.
fn pruned_sets(rng: &mut Rng, sizes: &[usize]) -> Vec<Vec<bool>> {
    let d: usize = sizes.iter().sum();
    let mut sets = vec![
        vec![false; d],
        rng.subset(d, 1),
        rng.subset(d, d - 1),
        vec![true; d],
        (0..d).map(|q| q % 2 == 0).collect(),
    ];
    let mut start = 0;
    for &s in sizes {
        sets.push((0..d).map(|q| (start..start + s).contains(&q)).collect());
        start += s;
    }
    for k in [d / 3, d / 2, (2 * d) / 3, d - 2, 10.min(d - 1)] {
        sets.push(rng.subset(d, k));
    }
    sets
}

/// Checks one Fisher against the closed form: its blocks, `F` entries and
/// products, `F̂⁻¹` diagonal and products, and on every pruned set the
/// objective, the OBS update (with its optimality) and the WoodFisher
/// update.
fn check_against_closed_form(
    what: &str,
    fisher: &Fisher<'_, dyn Dense + '_>,
    problem: &Problem,
    blocks: Blocks,
    cf: &ClosedForm,
    sets: &[Vec<bool>],
    rng: &mut Rng,
) {
    let d = cf.d;
    let theta = &problem.theta;
    assert_eq!(fisher.dim(), d, "{what}: dim");
    assert_eq!(fisher.samples(), problem.n, "{what}: samples");
    let mut ids = vec![usize::MAX; d];
    for (b, range) in fisher.blocks().enumerate() {
        for q in range {
            ids[q] = b;
        }
    }
    assert_eq!(ids, block_ids(&problem.sizes, blocks), "{what}: blocks");

    let fmax = cf.f.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for i in 0..d {
        for j in 0..d {
            let (got, want) = (fisher.entry(i, j), cf.f[i * d + j]);
            assert!(
                (got - want).abs() <= PRODUCT_TOL * fmax,
                "{what}: entry({i}, {j}) = {got}, want {want}"
            );
        }
    }
    let fdiag: Vec<f64> = (0..d).map(|q| cf.f[q * d + q]).collect();
    assert_close(
        &fisher.fisher_diagonal(),
        &fdiag,
        PRODUCT_TOL,
        &format!("{what}: fisher_diagonal"),
    );
    let v = rng.values(d);
    assert_close(
        &fisher.fisher_times(&v).unwrap(),
        &mat_vec(&cf.f, &v),
        PRODUCT_TOL,
        &format!("{what}: fisher_times"),
    );
    assert_close(
        &fisher.inverse_times(&v).unwrap(),
        &mat_vec(&cf.inv, &v),
        INVERSE_TOL,
        &format!("{what}: inverse_times"),
    );
    let diag = fisher.inverse_diagonal().unwrap();
    let want_diag = cf.inverse_diagonal();
    for q in 0..d {
        let e = (diag[q] - want_diag[q]).abs() / want_diag[q];
        assert!(
            e <= INVERSE_TOL,
            "{what}: inverse_diagonal[{q}] = {}, want {} (relative {e:e})",
            diag[q],
            want_diag[q]
        );
    }

    for (s, pruned) in sets.iter().enumerate() {
        let what = format!(
            "{what}, pruned set {s} ({} of {d})",
            pruned.iter().filter(|&&p| p).count()
        );
        assert_close(
            &[fisher.objective(theta, pruned).unwrap()],
            &[cf.objective(theta, pruned)],
            PRODUCT_TOL,
            &format!("{what}: objective"),
        );

        let delta = fisher.obs_update(theta, pruned).unwrap();
        let want_obs = cf.obs(theta, pruned);
        assert_close(
            &delta,
            &want_obs,
            INVERSE_TOL,
            &format!("{what}: obs_update"),
        );
        for q in 0..d {
            if pruned[q] {
                assert_eq!(
                    delta[q], -theta[q],
                    "{what}: obs_update leaves pruned weight {q}"
                );
            }
        }
        if let Some(v) = obs_optimality_violation(cf, theta, pruned, &delta, rng) {
            panic!("{what}: OBS update not optimal: {v}");
        }

        let wf = fisher.woodfisher_update(theta, pruned, &diag).unwrap();
        assert_close(
            &wf,
            &cf.woodfisher(theta, pruned),
            INVERSE_TOL,
            &format!("{what}: woodfisher_update"),
        );
        for q in 0..d {
            if pruned[q] {
                assert_eq!(
                    wf[q], -theta[q],
                    "{what}: woodfisher_update leaves pruned weight {q}"
                );
            }
        }
        // The optimality check has teeth: WoodFisher's summed single-weight
        // update, where it differs from OBS, is not optimal.
        if rel_diff(&wf, &want_obs) > 1e-3 {
            assert!(
                obs_optimality_violation(cf, theta, pruned, &wf, rng).is_some(),
                "{what}: the optimality check accepts the WoodFisher update"
            );
        }
    }
}

/// Among all `δ'` with `δ'_P = −θ_P`, the OBS update minimises `δ'ᵀ F̂ δ'`:
/// a violation is a random move `e` of the kept entries (either sign,
/// several scales) that lowers it. The change
/// `(δ+e)ᵀF̂(δ+e) − δᵀF̂δ = 2eᵀF̂δ + eᵀF̂e` is computed directly, free of the
/// cancellation of subtracting the two quadratics.
fn obs_optimality_violation(
    cf: &ClosedForm,
    theta: &[f64],
    pruned: &[bool],
    delta: &[f64],
    rng: &mut Rng,
) -> Option<String> {
    if pruned.iter().all(|&p| p) {
        return None;
    }
    let grad = mat_vec(&cf.damped, delta);
    let scale = norm(&restricted(theta, pruned)).max(1e-3);
    for t in [1e-1, 1e-3, 1e-6] {
        for _ in 0..3 {
            let e: Vec<f64> = pruned
                .iter()
                .map(|&p| if p { 0.0 } else { rng.signed() })
                .collect();
            let e_norm = norm(&e);
            for sign in [1.0, -1.0] {
                let e: Vec<f64> = e.iter().map(|x| sign * t * scale * x / e_norm).collect();
                let linear: f64 = 2.0 * e.iter().zip(&grad).map(|(x, g)| x * g).sum::<f64>();
                let change = linear + quadratic(&cf.damped, &e);
                if change < 0.0 {
                    return Some(format!(
                        "a move of the kept weights of norm {:e} changes δᵀF̂δ by {change:e}",
                        t * scale
                    ));
                }
            }
        }
    }
    None
}

#[test]
fn fisher_matches_the_dense_closed_form_everywhere() {
    let backends = backends();
    let mut checked = 0;
    for (seed, sizes) in [(10u64, vec![2usize, 3]), (11, vec![4, 5]), (12, vec![6, 8])] {
        for n in [3usize, 7, 40] {
            let problem = Problem::random(seed * 100 + n as u64, n, &sizes);
            let mut rng = Rng(seed ^ (n as u64) << 8);
            let sets = pruned_sets(&mut rng, &sizes);
            for damping in [1e-2, 1e-3] {
                for blocks in BLOCKS {
                    let cf = ClosedForm::new(&problem, blocks, damping);
                    for path in PATHS {
                        for rank in [1, 3] {
                            let config = FisherConfig::default()
                                .damping(damping)
                                .blocks(blocks)
                                .path(path)
                                .recursion_rank(rank);
                            for (name, dense) in &backends {
                                let what = format!(
                                    "{name}, sizes {sizes:?}, N {n}, λ {damping}, \
                                     {blocks:?}, {path:?}, rank {rank}"
                                );
                                let fisher = problem.fisher(dense.as_ref(), &config);
                                check_against_closed_form(
                                    &what, &fisher, &problem, blocks, &cf, &sets, &mut rng,
                                );
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert_eq!(checked, 3 * 3 * 2 * 3 * 3 * 2 * 3);
}

/// [`Path::Auto`]'s kept-set system (`|R| < N < d_b`): d = 14, N = 7 and
/// 8 to 13 weights pruned in one Woodbury block.
#[test]
fn auto_kept_set_system_matches_the_closed_form() {
    let backends = backends();
    let sizes = [6, 8];
    let problem = Problem::random(77, 7, &sizes);
    let mut rng = Rng(78);
    for damping in [1e-2, 1e-3] {
        let cf = ClosedForm::new(&problem, Blocks::Whole, damping);
        let sets: Vec<Vec<bool>> = (8..=13)
            .flat_map(|k| [rng.subset(14, k), rng.subset(14, k)])
            .collect();
        let config = FisherConfig::default().damping(damping).path(Path::Auto);
        for (name, dense) in &backends {
            let what = format!("{name}, Auto, N 7, d 14, λ {damping}");
            let fisher = problem.fisher(dense.as_ref(), &config);
            check_against_closed_form(
                &what,
                &fisher,
                &problem,
                Blocks::Whole,
                &cf,
                &sets,
                &mut rng,
            );
        }
    }
}

/// The Woodbury path and the explicit inverse (rank-1 and rank-3
/// recursion) give the same inverse diagonal, products and updates.
#[test]
fn woodbury_path_equals_explicit_path() {
    let backends = backends();
    for (seed, sizes) in [
        (20u64, vec![4usize, 5]),
        (21, vec![6, 8]),
        (22, vec![11, 9]),
    ] {
        for n in [3usize, 7, 40] {
            let problem = Problem::random(seed * 100 + n as u64, n, &sizes);
            let d = problem.dim();
            let mut rng = Rng(seed + 1000 * n as u64);
            let sets = pruned_sets(&mut rng, &sizes);
            let v = rng.values(d);
            for blocks in BLOCKS {
                for (name, dense) in &backends {
                    let fisher = |path, rank| {
                        let config = FisherConfig::default()
                            .damping(1e-3)
                            .blocks(blocks)
                            .path(path)
                            .recursion_rank(rank);
                        problem.fisher(dense.as_ref(), &config)
                    };
                    let woodbury = fisher(Path::Woodbury, 1);
                    let wdiag = woodbury.inverse_diagonal().unwrap();
                    let winv = woodbury.inverse_times(&v).unwrap();
                    for (path, rank) in [(Path::Explicit, 1), (Path::Explicit, 3), (Path::Auto, 3)]
                    {
                        let what = format!(
                            "{name}, sizes {sizes:?}, N {n}, {blocks:?}: Woodbury against {path:?} rank {rank}"
                        );
                        let other = fisher(path, rank);
                        let diag = other.inverse_diagonal().unwrap();
                        assert_close(
                            &wdiag,
                            &diag,
                            INVERSE_TOL,
                            &format!("{what}: inverse_diagonal"),
                        );
                        assert_close(
                            &winv,
                            &other.inverse_times(&v).unwrap(),
                            INVERSE_TOL,
                            &format!("{what}: inverse_times"),
                        );
                        for (s, pruned) in sets.iter().enumerate() {
                            assert_close(
                                &woodbury.obs_update(&problem.theta, pruned).unwrap(),
                                &other.obs_update(&problem.theta, pruned).unwrap(),
                                INVERSE_TOL,
                                &format!("{what}: obs_update of set {s}"),
                            );
                            assert_close(
                                &woodbury
                                    .woodfisher_update(&problem.theta, pruned, &wdiag)
                                    .unwrap(),
                                &other
                                    .woodfisher_update(&problem.theta, pruned, &diag)
                                    .unwrap(),
                                INVERSE_TOL,
                                &format!("{what}: woodfisher_update of set {s}"),
                            );
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 3. CBS-S against brute force
// ---------------------------------------------------------------------------

/// The lowest objective over all `C(d, k)` pruned sets.
fn enumerated_optimum(fisher: &Fisher<'_, dyn Dense + '_>, theta: &[f64], k: usize) -> f64 {
    let d = theta.len();
    let mut best = f64::INFINITY;
    for bits in 0u32..1 << d {
        if bits.count_ones() as usize != k {
            continue;
        }
        let pruned: Vec<bool> = (0..d).map(|q| bits >> q & 1 == 1).collect();
        best = best.min(fisher.objective(theta, &pruned).unwrap());
    }
    best
}

#[test]
fn cbs_select_against_brute_force_enumeration() {
    let cpu = CpuBackend::new(Par::Seq).unwrap();
    let instances = 60;
    let mut optimal = 0;
    let mut worst_gap = 0.0f64;
    for seed in 0..instances {
        let mut rng = Rng(5000 + seed);
        let d = 8 + rng.below(5);
        let k = d / 2 + rng.below(2);
        let n = 5 + rng.below(16);
        let sizes = [d / 2, d - d / 2];
        let problem = Problem::random(6000 + seed, n, &sizes);
        let dense: &dyn Dense = if seed % 2 == 0 {
            &ReferenceBackend
        } else {
            &cpu
        };
        let blocks = if seed % 3 == 0 {
            Blocks::Parameters
        } else {
            Blocks::Whole
        };
        let fisher = problem.fisher(dense, &FisherConfig::default().damping(1e-4).blocks(blocks));
        let theta = &problem.theta;
        let config = SearchConfig::default().epsilon(0.0).trials(4).seed(seed);
        let what = format!("instance {seed} (d {d}, k {k}, N {n}, {blocks:?})");
        let select = || {
            cbs_select(&fisher, theta, k, &config, &mut |p: &[bool]| {
                fisher.objective(theta, p)
            })
            .unwrap()
        };
        let selection = select();
        assert_eq!(
            selection,
            select(),
            "{what}: cbs_select is not deterministic"
        );
        assert_eq!(selection.pruned.len(), d, "{what}: flags");
        assert_eq!(
            selection.pruned.iter().filter(|&&p| p).count(),
            k,
            "{what}: pruned count"
        );
        let objective = fisher.objective(theta, &selection.pruned).unwrap();
        assert_eq!(selection.objective, objective, "{what}: reported objective");
        assert_eq!(
            selection.loss, objective,
            "{what}: reported loss (the objective here)"
        );
        let mp = fisher
            .objective(theta, &magnitude(theta, k).unwrap())
            .unwrap();
        assert!(
            objective <= mp,
            "{what}: CBS-S objective {objective} worse than magnitude's {mp}"
        );
        let best = enumerated_optimum(&fisher, theta, k);
        assert!(
            best <= objective,
            "{what}: enumeration {best} above CBS-S {objective}"
        );
        let gap = (objective - best) / best;
        worst_gap = worst_gap.max(gap);
        if gap <= 1e-12 {
            optimal += 1;
        }
    }
    println!(
        "CBS-S reached the enumerated optimum on {optimal} of {instances} instances \
         ({:.1}%); worst relative gap {worst_gap:.3e}",
        100.0 * optimal as f64 / instances as f64
    );
    assert!(
        2 * optimal > instances,
        "CBS-S reached the optimum on only {optimal} of {instances} instances"
    );
}

// ---------------------------------------------------------------------------
// 4. Selection invariants
// ---------------------------------------------------------------------------

/// Scores with many ties (small integers, infinities) and some spread.
fn score() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => (-3i32..4).prop_map(f64::from),
        4 => -1e6..1e6f64,
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
    ]
}

proptest! {
    #[test]
    fn lowest_prunes_the_k_lowest_with_ties_to_the_lowest_index(
        scores in prop::collection::vec(score(), 0..40),
        frac in 0.0..=1.0f64,
    ) {
        let k = (frac * scores.len() as f64).round() as usize;
        let pruned = lowest(&scores, k).unwrap();
        prop_assert_eq!(pruned.len(), scores.len());
        prop_assert_eq!(pruned.iter().filter(|&&p| p).count(), k);
        for (i, &pi) in pruned.iter().enumerate() {
            for (j, &pj) in pruned.iter().enumerate() {
                if pi && !pj {
                    prop_assert!(
                        scores[i] < scores[j] || (scores[i] == scores[j] && i < j),
                        "pruned {} (score {}) but kept {} (score {})", i, scores[i], j, scores[j]
                    );
                }
            }
        }
    }

    #[test]
    fn perturbed_start_prunes_exactly_k_and_is_deterministic(
        theta in prop::collection::vec(-10.0..10.0f64, 1..80),
        frac in 0.0..=1.0f64,
        seed in any::<u64>(),
        trial in any::<u32>(),
    ) {
        let k = (frac * theta.len() as f64).round() as usize;
        let start = perturbed_start(&theta, k, seed, trial).unwrap();
        prop_assert_eq!(start.len(), theta.len());
        prop_assert_eq!(start.iter().filter(|&&p| p).count(), k);
        prop_assert_eq!(&start, &perturbed_start(&theta, k, seed, trial).unwrap());
        let mp = magnitude(&theta, k).unwrap();
        prop_assert_eq!(mp.iter().filter(|&&p| p).count(), k);
    }

    #[test]
    fn pruned_count_is_round_of_s_times_d(s in 0.0..=1.0f64, d in 0usize..1_000_000) {
        prop_assert_eq!(pruned_count(s, d).unwrap(), (s * d as f64).round() as usize);
    }

    #[test]
    fn pruned_count_inverts_exact_fractions(d in 1usize..100_000, frac in 0.0..=1.0f64) {
        let k = (frac * d as f64).round() as usize;
        prop_assert_eq!(pruned_count(k as f64 / d as f64, d).unwrap(), k);
    }

    #[test]
    fn pruned_count_rejects_sparsity_outside_0_1(
        s in prop_oneof![-1e9..-1e-12f64, (1.0 + 1e-12)..1e9f64],
        d in 0usize..1000,
    ) {
        let rejected = matches!(pruned_count(s, d), Err(Error::SparsityOutOfRange { .. }));
        prop_assert!(rejected, "pruned_count({}, {}) accepted", s, d);
    }
}

#[test]
fn selections_of_no_weights() {
    assert_eq!(lowest(&[], 0).unwrap(), Vec::<bool>::new());
    assert_eq!(magnitude(&[], 0).unwrap(), Vec::<bool>::new());
    assert_eq!(perturbed_start(&[], 0, 1, 1).unwrap(), Vec::<bool>::new());
}

// ---------------------------------------------------------------------------
// 5. Errors instead of panics
// ---------------------------------------------------------------------------

#[test]
fn fisher_rejects_bad_construction_inputs() {
    let problem = Problem::random(90, 4, &[3, 2]);
    let (g, n, sizes) = (&problem.grads, problem.n, &problem.sizes[..]);
    let ok = FisherConfig::default();
    for (name, dense) in backends() {
        let dense = dense.as_ref();
        let new = |g: &[f32], n: usize, sizes: &[usize], config: &FisherConfig| {
            Fisher::new(dense, g, n, sizes, config)
        };
        assert!(new(g, n, sizes, &ok).is_ok(), "{name}: the valid input");
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut g = g.clone();
            g[7] = bad;
            assert_err!(
                new(&g, n, sizes, &ok),
                Error::NonFinite { .. },
                format!("{name}: gradient {bad}")
            );
        }
        assert_err!(
            new(&g[..g.len() - 1], n, sizes, &ok),
            Error::LengthMismatch { .. },
            format!("{name}: one gradient short")
        );
        assert_err!(
            new(g, n, &[3, 3], &ok),
            Error::LengthMismatch { .. },
            format!("{name}: sizes summing to 6 over gradients of 5")
        );
        assert_err!(
            new(g, n + 1, sizes, &ok),
            Error::LengthMismatch { .. },
            format!("{name}: one sample too many")
        );
        assert_err!(
            new(&[], 0, sizes, &ok),
            Error::InvalidArgument { .. },
            format!("{name}: no samples")
        );
        assert_err!(
            new(&[], 0, &[], &ok),
            Error::InvalidArgument { .. },
            format!("{name}: nothing")
        );
        assert_err!(
            new(&[], n, &[], &ok),
            Error::InvalidArgument { .. },
            format!("{name}: no parameters")
        );
        assert_err!(
            new(g, n, &[3, 0, 2], &ok),
            Error::InvalidArgument { .. },
            format!("{name}: an empty parameter")
        );
        for damping in [0.0, -0.0, -1e-3, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_err!(
                new(g, n, sizes, &ok.damping(damping)),
                Error::FractionOutOfRange { .. },
                format!("{name}: damping {damping}")
            );
        }
        assert_err!(
            new(g, n, sizes, &ok.blocks(Blocks::Size(0))),
            Error::InvalidArgument { .. },
            format!("{name}: Blocks::Size(0)")
        );
        assert_err!(
            new(g, n, sizes, &ok.path(Path::Explicit).recursion_rank(0)),
            Error::InvalidArgument { .. },
            format!("{name}: recursion rank 0")
        );
    }
}

#[test]
fn fisher_methods_reject_wrong_lengths() {
    let problem = Problem::random(91, 6, &[4, 5]);
    let d = problem.dim();
    for (name, dense) in backends() {
        for path in PATHS {
            let fisher = problem.fisher(dense.as_ref(), &FisherConfig::default().path(path));
            let what = format!("{name}, {path:?}");
            let theta = &problem.theta;
            let pruned = Rng(1).subset(d, 4);
            let diag = fisher.inverse_diagonal().unwrap();
            for len in [0, d - 1, d + 1] {
                let v = vec![0.5; len];
                let flags = vec![true; len];
                let what = format!("{what}, length {len} of {d}");
                assert_err!(
                    fisher.obs_update(&v, &pruned),
                    Error::LengthMismatch { .. },
                    format!("{what}: obs_update theta")
                );
                assert_err!(
                    fisher.obs_update(theta, &flags),
                    Error::LengthMismatch { .. },
                    format!("{what}: obs_update pruned")
                );
                assert_err!(
                    fisher.woodfisher_update(&v, &pruned, &diag),
                    Error::LengthMismatch { .. },
                    format!("{what}: woodfisher_update theta")
                );
                assert_err!(
                    fisher.woodfisher_update(theta, &flags, &diag),
                    Error::LengthMismatch { .. },
                    format!("{what}: woodfisher_update pruned")
                );
                assert_err!(
                    fisher.woodfisher_update(theta, &pruned, &v),
                    Error::LengthMismatch { .. },
                    format!("{what}: woodfisher_update diagonal")
                );
                assert_err!(
                    fisher.objective(theta, &flags),
                    Error::LengthMismatch { .. },
                    format!("{what}: objective pruned")
                );
                assert_err!(
                    fisher.inverse_times(&v),
                    Error::LengthMismatch { .. },
                    format!("{what}: inverse_times")
                );
                assert_err!(
                    fisher.fisher_times(&v),
                    Error::LengthMismatch { .. },
                    format!("{what}: fisher_times")
                );
                assert_err!(
                    fisher.quadratic(&v),
                    Error::LengthMismatch { .. },
                    format!("{what}: quadratic")
                );
                assert_err!(
                    cbs_select(
                        &fisher,
                        &v,
                        0,
                        &SearchConfig::default(),
                        &mut |_: &[bool]| Ok(0.0)
                    ),
                    Error::LengthMismatch { .. },
                    format!("{what}: cbs_select theta")
                );
            }
            let mut nan = theta.clone();
            nan[2] = f64::NAN;
            assert_err!(
                fisher.obs_update(&nan, &pruned),
                Error::NonFinite { .. },
                format!("{what}: obs_update of NaN")
            );
            assert_err!(
                cbs_select(
                    &fisher,
                    &nan,
                    3,
                    &SearchConfig::default(),
                    &mut |p: &[bool]| fisher.objective(theta, p)
                ),
                Error::NonFinite { .. },
                format!("{what}: cbs_select of NaN weights")
            );
            assert_err!(
                cbs_select(
                    &fisher,
                    theta,
                    3,
                    &SearchConfig::default(),
                    &mut |_: &[bool]| Ok(f64::NAN)
                ),
                Error::NonFinite { .. },
                format!("{what}: cbs_select of a NaN loss")
            );
            assert_err!(
                cbs_select(
                    &fisher,
                    theta,
                    d + 1,
                    &SearchConfig::default(),
                    &mut |p: &[bool]| fisher.objective(theta, p)
                ),
                Error::LengthMismatch { .. },
                format!("{what}: cbs_select of k > d")
            );
        }
    }
}

/// `objective` checks the length of `pruned` but not that of `theta`.
#[test]
fn objective_rejects_weights_of_wrong_length() {
    let problem = Problem::random(92, 6, &[4, 5]);
    let d = problem.dim();
    let fisher = problem.fisher(&ReferenceBackend, &FisherConfig::default());
    let pruned = Rng(2).subset(d, 4);
    for len in [0, d - 1, d + 1, 2 * d] {
        assert_err!(
            fisher.objective(&vec![0.5; len], &pruned),
            Error::LengthMismatch { .. },
            format!("objective of {len} weights of {d}")
        );
    }
}

#[test]
fn selections_reject_nan_scores_and_k_above_d() {
    assert_err!(
        lowest(&[1.0, f64::NAN, 0.0], 1),
        Error::NanScores { count: 1, .. },
        "lowest of a NaN score"
    );
    assert_err!(
        lowest(&[f64::NAN; 4], 0),
        Error::NanScores { count: 4, .. },
        "lowest of NaN scores, k = 0"
    );
    assert_err!(
        magnitude(&[1.0, f64::NAN], 1),
        Error::NanScores { .. },
        "magnitude of NaN weights"
    );
    assert_err!(
        lowest(&[1.0, 2.0], 3),
        Error::LengthMismatch { .. },
        "lowest k > d"
    );
    assert_err!(
        lowest(&[], 1),
        Error::LengthMismatch { .. },
        "lowest of nothing, k = 1"
    );
    assert_err!(
        magnitude(&[1.0, 2.0], 3),
        Error::LengthMismatch { .. },
        "magnitude k > d"
    );
    assert_err!(
        perturbed_start(&[1.0, 2.0], 3, 0, 1),
        Error::LengthMismatch { .. },
        "perturbed_start k > d"
    );
    assert_err!(
        prunus_core::methods::second_order::surgeon::woodfisher(&[1.0, 2.0], &[1.0], 1),
        Error::LengthMismatch { .. },
        "woodfisher with a short diagonal"
    );
    assert_err!(
        prunus_core::methods::second_order::surgeon::woodfisher(&[1.0, 2.0], &[1.0, 1.0], 3),
        Error::LengthMismatch { .. },
        "woodfisher k > d"
    );
    for s in [f64::NAN, f64::INFINITY, -f64::INFINITY, -0.1, 1.1] {
        assert_err!(
            pruned_count(s, 10),
            Error::SparsityOutOfRange { .. },
            format!("pruned_count({s})")
        );
    }
}

#[test]
fn scale_update_scales_kept_weights_only_and_rejects_mismatched_lengths() {
    use prunus_core::methods::second_order::fisher::scale_update;
    let mut delta = vec![1.0, -2.0, 3.0];
    scale_update(&mut delta, &[false, true, false], 0.5).unwrap();
    assert_eq!(delta, [0.5, -2.0, 1.5]);
    let e = scale_update(&mut delta, &[true, false], 0.5);
    assert!(matches!(e, Err(Error::LengthMismatch { .. })), "{e:?}");
    assert_eq!(delta, [0.5, -2.0, 1.5], "a refused call must not write");
}
