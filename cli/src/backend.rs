//! The one place a command gets its backend.
//!
//! [`Backend`] is not object-safe, so a command cannot hold "some backend"
//! in a variable. Instead it writes its work once as a [`BackendJob`],
//! generic over the backend, and [`dispatch`] builds the backend that
//! `--backend` names (with `--threads`, and for some commands `--adapter` and
//! `--plan`) and runs the job on it, inside a rayon pool of `--threads`
//! threads. A new command that takes `--backend` adds a job, not a `match`.
//! The tests' `Probe` is the smallest job.

use prunus_core::{Backend, Dense, HostTensor, ReferenceBackend, SelectionPlan, Shape};
use prunus_cpu::{CpuBackend, Par, SimdLevel};
use prunus_wgpu::{AdapterChoice, Counters, GemmTile, Offload, ReadWay, WgpuBackend};
use serde_json::Value;

use crate::error::Error;

/// The backend a command runs on (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BackendKind {
    /// The rayon CPU backend, on --threads threads (f64 dense linear
    /// algebra through faer).
    Cpu,
    /// The scalar reference backend of prunus-core (sequential, the oracle;
    /// slow).
    Reference,
    /// The wgpu compute-shader backend, on the adapter `WGPU_ADAPTER_NAME`
    /// names (else the first discrete GPU; `WGPU_BACKEND` restricts the
    /// graphics APIs searched). Dense linear algebra runs there in f32 for
    /// the compute-bound calls and on the CPU backend for the rest
    /// (`prunus_wgpu::Offload`).
    Wgpu,
}

impl BackendKind {
    /// The name in reports and on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Reference => "reference",
            BackendKind::Wgpu => "wgpu",
        }
    }
}

/// Everything [`dispatch`] needs to build a backend.
#[derive(Clone, Debug)]
pub(crate) struct BackendSpec {
    /// Which backend.
    pub(crate) kind: BackendKind,
    /// Threads of the rayon pool and the CPU backend: 0 = all cores, 1 =
    /// the CPU backend's sequential path.
    pub(crate) threads: usize,
    /// The wgpu adapter, by index in `prunus adapters` or part of its name
    /// (only with [`BackendKind::Wgpu`]).
    pub(crate) adapter: Option<String>,
    /// A selection plan other than the backend's own.
    pub(crate) plan: Option<SelectionPlan>,
    /// The wgpu backend's GEMM kernel (only with [`BackendKind::Wgpu`]).
    pub(crate) gemm: Option<GemmTile>,
}

impl BackendSpec {
    /// `kind` on `threads` threads, default adapter and plan.
    pub(crate) fn new(kind: BackendKind, threads: usize) -> Self {
        BackendSpec {
            kind,
            threads,
            adapter: None,
            plan: None,
            gemm: None,
        }
    }

    /// Sets the wgpu backend's GEMM kernel (`--gemm-tile`).
    pub(crate) fn gemm(mut self, gemm: Option<GemmTile>) -> Self {
        self.gemm = gemm;
        self
    }

    /// Sets the adapter (`--adapter`).
    pub(crate) fn adapter(mut self, adapter: Option<String>) -> Self {
        self.adapter = adapter;
        self
    }

    /// Sets the selection plan (`--plan`).
    pub(crate) fn plan(mut self, plan: Option<SelectionPlan>) -> Self {
        self.plan = plan;
        self
    }

    /// Refuses combinations no backend can honour, before any work.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if let Some(a) = &self.adapter
            && self.kind != BackendKind::Wgpu
        {
            return Err(Error::argument(
                "--adapter",
                a,
                "to be given with --backend wgpu only",
            ));
        }
        if let Some(g) = self.gemm
            && self.kind != BackendKind::Wgpu
        {
            return Err(Error::argument(
                "--gemm-tile",
                format!("{g:?}").to_lowercase(),
                "to be given with --backend wgpu only",
            ));
        }
        if self.kind == BackendKind::Reference
            && self.plan.is_some_and(|p| p != SelectionPlan::Gather)
        {
            let given = match self.plan {
                Some(SelectionPlan::Device) => "device",
                _ => "histograms",
            };
            return Err(Error::argument(
                "--plan",
                given,
                "gather (the reference backend has no other plan)",
            ));
        }
        Ok(())
    }

    /// The CPU backend's parallelism.
    fn par(&self) -> Par {
        match self.threads {
            1 => Par::Seq,
            n => Par::Rayon(n),
        }
    }

    /// The CPU backend these settings ask for.
    fn cpu<'d>(&self) -> Result<CpuBackend<'d>, Error> {
        let cpu = CpuBackend::new(self.par())?;
        Ok(match self.plan {
            Some(p) => cpu.with_selection_plan(p),
            None => cpu,
        })
    }

    /// The wgpu backend these settings ask for.
    fn wgpu(&self) -> Result<WgpuBackend, Error> {
        let choice = match self.adapter.as_deref() {
            None => AdapterChoice::Auto,
            Some(a) => a
                .parse()
                .map_or_else(|_| AdapterChoice::Named(a.into()), AdapterChoice::Index),
        };
        let gpu = WgpuBackend::with_adapter(&choice)?;
        let gpu = match self.gemm {
            Some(g) => gpu.with_gemm_tile(g),
            None => gpu,
        };
        Ok(match self.plan {
            Some(p) => gpu.with_selection_plan(p),
            None => gpu,
        })
    }
}

/// A command's work, written once for every backend.
///
/// `'d` is the lifetime of host data the job lets the backend read in
/// place ([`Device::resident`]); jobs that own their data take any.
pub(crate) trait BackendJob<'d> {
    /// What the job returns.
    type Output;

    /// Runs the job on `backend`.
    fn run<B: Device<'d>>(self, backend: &B) -> Result<Self::Output, Error>;
}

/// A backend as commands see it: the core contract and dense linear
/// algebra, plus what a command reports or measures of it.
pub(crate) trait Device<'d>: Backend + Dense {
    /// Host threads the backend computes on.
    fn host_threads(&self) -> usize;

    /// The CPU kernels' instruction-set level, for a CPU backend.
    fn kernels(&self) -> Option<String> {
        None
    }

    /// A tensor over `data`: read in place where the backend reads host
    /// memory (the CPU backend), else copied.
    fn resident(&self, data: &'d [f32], shape: &Shape) -> Result<Self::Tensor, Error>;

    /// How many ways of reading [`Device::read_pass`] knows (at least one).
    fn read_ways(&self) -> usize {
        1
    }

    /// One pass reading every element of `tensors` the `way`-th way (below
    /// [`Device::read_ways`]), waited for: the memory floor of any
    /// selection is the fastest of them. Returns a value derived from the
    /// data, so that the pass cannot be optimised away.
    fn read_pass(&self, tensors: &[&Self::Tensor], way: usize) -> Result<u64, Error>;

    /// What identifies the device in a report's config (the adapter and
    /// whether it flushes subnormals, for a GPU).
    fn describe(&self) -> Vec<(&'static str, Value)> {
        Vec::new()
    }

    /// The device's counters (dispatches, passes, read-backs) so far, for a
    /// GPU.
    fn counters(&self) -> Option<Counters> {
        None
    }

    /// Runs `job` on the dense linear algebra that fits this backend, with
    /// the host threads it uses: the backend itself on the CPU, the
    /// device with the CPU backend on `threads` threads for what the device
    /// does not pay for (`Offload`) on a GPU, reporting afterwards how the
    /// flops were split.
    fn with_dense<T>(
        &self,
        threads: usize,
        job: impl FnOnce(&dyn Dense, usize) -> Result<T, Error>,
    ) -> Result<T, Error>;
}

impl<'d> Device<'d> for CpuBackend<'d> {
    fn host_threads(&self) -> usize {
        self.threads()
    }

    fn kernels(&self) -> Option<String> {
        Some(self.simd().to_string())
    }

    fn resident(&self, data: &'d [f32], shape: &Shape) -> Result<Self::Tensor, Error> {
        Ok(self.borrow(data, shape)?)
    }

    /// Every level the processor supports, with and without reading ahead
    /// in software: which is fastest depends on the processor (on a 2-core
    /// Xeon VM, 512-bit loads streamed slower than 256-bit ones without
    /// prefetching and faster with it).
    fn read_ways(&self) -> usize {
        2 * SimdLevel::supported().len()
    }

    fn read_pass(&self, tensors: &[&Self::Tensor], way: usize) -> Result<u64, Error> {
        let levels = SimdLevel::supported();
        let level = *levels.get(way / 2).ok_or_else(|| {
            Error::SelfCheck(format!("no read way {way} of {}", 2 * levels.len()))
        })?;
        let at = self.clone().with_simd(level)?;
        Ok(at.read_pass(tensors, way % 2 == 1))
    }

    fn with_dense<T>(
        &self,
        _threads: usize,
        job: impl FnOnce(&dyn Dense, usize) -> Result<T, Error>,
    ) -> Result<T, Error> {
        job(self, self.threads())
    }
}

impl<'d> Device<'d> for ReferenceBackend {
    fn host_threads(&self) -> usize {
        1
    }

    fn resident(&self, data: &'d [f32], shape: &Shape) -> Result<Self::Tensor, Error> {
        Ok(HostTensor::new(data.to_vec(), shape.clone())?)
    }

    fn read_pass(&self, tensors: &[&Self::Tensor], _way: usize) -> Result<u64, Error> {
        Ok(sequential_sum(tensors))
    }

    fn with_dense<T>(
        &self,
        _threads: usize,
        job: impl FnOnce(&dyn Dense, usize) -> Result<T, Error>,
    ) -> Result<T, Error> {
        job(self, 1)
    }
}

impl<'d> Device<'d> for WgpuBackend {
    fn host_threads(&self) -> usize {
        1
    }

    fn resident(&self, data: &'d [f32], shape: &Shape) -> Result<Self::Tensor, Error> {
        Ok(self.upload(data, shape)?)
    }

    /// One dispatch for all the tensors' windows, or one per window.
    fn read_ways(&self) -> usize {
        ReadWay::ALL.len()
    }

    fn read_pass(&self, tensors: &[&Self::Tensor], way: usize) -> Result<u64, Error> {
        let way = *ReadWay::ALL.get(way).ok_or_else(|| {
            Error::SelfCheck(format!("no read way {way} of {}", ReadWay::ALL.len()))
        })?;
        Ok(u64::from(WgpuBackend::read_pass(self, tensors, way)?))
    }

    fn describe(&self) -> Vec<(&'static str, Value)> {
        let a = self.adapter();
        vec![
            ("flushes_subnormals", self.flushes_subnormals().into()),
            ("adapter", a.name.clone().into()),
            ("adapter_api", a.api.clone().into()),
            ("adapter_kind", a.kind.clone().into()),
        ]
    }

    fn counters(&self) -> Option<Counters> {
        Some(WgpuBackend::counters(self))
    }

    fn with_dense<T>(
        &self,
        threads: usize,
        job: impl FnOnce(&dyn Dense, usize) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let cpu = CpuBackend::new(Par::Rayon(threads))?;
        let dense = Offload::new(self, &cpu);
        let out = job(&dense, cpu.threads())?;
        let (device, host) = dense.flops();
        eprintln!(
            "{}: {:.1} GFLOP on the device (f32), {:.1} GFLOP on the host (f64)",
            self.name(),
            device as f64 / 1e9,
            host as f64 / 1e9
        );
        Ok(out)
    }
}

/// Builds the backend `spec` names and runs `job` on it, inside a rayon pool
/// of `spec.threads` threads (where the lab's networks train).
pub(crate) fn dispatch<'d, J>(spec: &BackendSpec, job: J) -> Result<J::Output, Error>
where
    J: BackendJob<'d> + Send,
    J::Output: Send,
{
    spec.check()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(spec.threads)
        .build()
        .map_err(|e| Error::system(format!("start {} threads", spec.threads), e))?;
    pool.install(|| match spec.kind {
        BackendKind::Cpu => job.run(&spec.cpu()?),
        BackendKind::Reference => job.run(&ReferenceBackend),
        BackendKind::Wgpu => job.run(&spec.wgpu()?),
    })
}

/// The floor of the reference backend: one sequential pass summing every
/// element (independent lanes, so the loop vectorises instead of waiting
/// on one chain of additions).
fn sequential_sum(tensors: &[&HostTensor]) -> u64 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    for t in tensors {
        let mut chunks = t.data().chunks_exact(LANES);
        for c in &mut chunks {
            for (a, x) in acc.iter_mut().zip(c) {
                *a += x;
            }
        }
        for (a, x) in acc.iter_mut().zip(chunks.remainder()) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>().to_bits() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job that reports which backend it ran on and what it read.
    struct Probe<'a>(&'a [f32]);

    impl<'d> BackendJob<'d> for Probe<'d> {
        type Output = (String, usize, f32);

        fn run<B: Device<'d>>(self, backend: &B) -> Result<Self::Output, Error> {
            let t = backend.resident(self.0, &Shape::vector(self.0.len()))?;
            let back = backend.download(&t)?;
            for way in 0..backend.read_ways() {
                backend.read_pass(&[&t], way)?;
            }
            Ok((backend.name(), backend.host_threads(), back.iter().sum()))
        }
    }

    #[test]
    fn one_job_runs_on_the_cpu_and_the_reference_backend() {
        let data: Vec<f32> = (0..37).map(|i| i as f32).collect();
        for (kind, threads) in [(BackendKind::Cpu, 2), (BackendKind::Reference, 0)] {
            let (name, host, sum) = dispatch(&BackendSpec::new(kind, threads), Probe(&data))
                .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            assert_eq!(sum, 666.0, "{name}");
            assert_eq!(host, if kind == BackendKind::Cpu { 2 } else { 1 });
        }
    }

    #[test]
    fn impossible_combinations_are_refused_before_any_work() {
        let e = BackendSpec::new(BackendKind::Cpu, 0)
            .adapter(Some("0".into()))
            .check()
            .unwrap_err();
        assert!(e.to_string().contains("--backend wgpu"), "{e}");
        let e = BackendSpec::new(BackendKind::Reference, 0)
            .plan(Some(SelectionPlan::Histograms))
            .check()
            .unwrap_err();
        assert!(e.to_string().contains("--plan"), "{e}");
        assert!(
            BackendSpec::new(BackendKind::Reference, 0)
                .plan(Some(SelectionPlan::Gather))
                .check()
                .is_ok()
        );
    }

    #[test]
    fn sequential_sum_covers_every_element() {
        let t = HostTensor::new(vec![1.0; 37], Shape::vector(37)).unwrap();
        assert_eq!(f32::from_bits(sequential_sum(&[&t]) as u32), 37.0);
    }
}
