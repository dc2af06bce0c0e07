//! The one module that talks to wgpu: adapter and device, the pipeline cache,
//! the buffer pool, command recording and readback. The ops never touch
//! wgpu; they record [`Batch`]es of [`Kernel`] dispatches over [`Slice`]s of
//! pooled [`Buf`]fers and read small results back with [`Gpu::read`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use prunus_core::{Error, Result};
use wgpu::util::DeviceExt;

use crate::resident::Residents;

/// Threads per workgroup of every kernel (the `WG` constant of the shaders).
pub(crate) const WORKGROUP: u32 = 256;

/// Buffers up to this size are pooled in power-of-two buckets.
const BUCKETED: u64 = 64 << 20;

/// `u32` words of the shaders' parameter block (`Params` in the prelude).
const PARAM_WORDS: usize = 12;

/// Byte alignment of buffer sizes and copies.
const ALIGN: u64 = wgpu::COPY_BUFFER_ALIGNMENT;

/// A WGSL module: a name for the pipeline cache and its source, which is
/// compiled after the shared prelude.
pub(crate) struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

/// The prelude every module is compiled with: workgroup size, the parameter
/// block and the key functions.
const PRELUDE: &str = include_str!("../shaders/prelude.wgsl");

/// How a kernel binds a storage buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Access {
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
}

/// The bindings of a module: binding 0 is the parameter block, bindings
/// `1..` are storage buffers with these accesses. Every kernel of a module
/// shares them.
pub(crate) struct Kernel {
    pub shader: &'static Shader,
    pub entry: &'static str,
    pub bindings: &'static [Access],
}

/// A byte range of a buffer.
#[derive(Clone, Copy)]
pub(crate) struct Slice<'a> {
    pub buf: &'a Buf,
    pub offset: u64,
    pub size: u64,
}

/// A pooled device buffer; goes back to its pool when dropped.
pub(crate) struct Buf {
    raw: Option<wgpu::Buffer>,
    class: Class,
    pool: Arc<Pool>,
}

impl Buf {
    /// The whole buffer.
    pub(crate) fn all(&self) -> Slice<'_> {
        Slice {
            buf: self,
            offset: 0,
            size: self.size(),
        }
    }

    /// `size` bytes from `offset`.
    pub(crate) fn slice(&self, offset: u64, size: u64) -> Slice<'_> {
        Slice {
            buf: self,
            offset,
            size,
        }
    }

    /// The capacity in bytes (a power of two from 16 bytes to 64 MiB, whole
    /// MiB above).
    pub(crate) fn size(&self) -> u64 {
        self.raw().size()
    }

    fn raw(&self) -> &wgpu::Buffer {
        self.raw.as_ref().expect("a live buffer has its handle")
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            self.pool.give_back(self.class, raw);
        }
    }
}

/// What a pooled buffer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Class {
    /// Storage, copy source and destination.
    Storage,
    /// Mappable for reading, copy destination.
    Staging,
}

/// Free buffers by class and size, up to a byte budget.
struct Pool {
    free: Mutex<PoolState>,
    budget: u64,
}

#[derive(Default)]
struct PoolState {
    buffers: HashMap<(Class, u64), Vec<wgpu::Buffer>>,
    bytes: u64,
}

impl Pool {
    fn take(&self, class: Class, size: u64) -> Option<wgpu::Buffer> {
        let mut s = lock(&self.free);
        let b = s.buffers.get_mut(&(class, size))?.pop()?;
        s.bytes -= size;
        Some(b)
    }

    fn give_back(&self, class: Class, raw: wgpu::Buffer) {
        let size = raw.size();
        let mut s = lock(&self.free);
        if s.bytes + size <= self.budget {
            s.bytes += size;
            s.buffers.entry((class, size)).or_default().push(raw);
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which adapter a backend runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AdapterChoice {
    /// The adapter named by `WGPU_ADAPTER_NAME` (a case-insensitive
    /// substring) if set, else the first discrete GPU, then integrated,
    /// virtual, and finally software adapters. `WGPU_BACKEND` (for example
    /// `vulkan`, `metal`, `dx12`, `gl`) restricts the search.
    #[default]
    Auto,
    /// The adapter at this position of [`crate::adapters`].
    Index(usize),
    /// The first adapter whose name contains this (case-insensitive).
    Named(String),
}

/// What [`crate::adapters`] reports about one adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// The adapter's name, e.g. `NVIDIA H200` or `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub name: String,
    /// The graphics API, e.g. `Vulkan`.
    pub api: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` or `Other`.
    pub kind: String,
    /// Whether it runs compute shaders (adapters that cannot are never chosen).
    pub compute: bool,
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

fn summary(a: &wgpu::Adapter) -> AdapterSummary {
    let info = a.get_info();
    AdapterSummary {
        name: info.name,
        api: format!("{:?}", info.backend),
        kind: format!("{:?}", info.device_type),
        compute: a
            .get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS),
    }
}

/// Every adapter the instance finds (honouring `WGPU_BACKEND`).
pub(crate) fn list_adapters() -> Vec<AdapterSummary> {
    let inst = instance();
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(summary)
        .collect()
}

fn no_adapter(why: String, found: usize) -> Error {
    let backend = std::env::var("WGPU_BACKEND").unwrap_or_else(|_| "any".into());
    let advice = if found == 0 {
        "install a Vulkan, Metal or DX12 driver (on Debian, Mesa's software Vulkan: apt install \
         mesa-vulkan-drivers libvulkan1) or use the cpu backend"
    } else {
        "`prunus adapters` lists the adapters there are"
    };
    backend_error(format!(
        "no usable GPU adapter ({why}; WGPU_BACKEND={backend}): {advice}"
    ))
}

pub(crate) fn backend_error(message: String) -> Error {
    Error::Backend { message }
}

fn choose(choice: &AdapterChoice) -> Result<wgpu::Adapter> {
    let inst = instance();
    let all = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()));
    let usable = |a: &wgpu::Adapter| summary(a).compute;
    let by_name = |name: &str| {
        let name = name.to_lowercase();
        all.iter()
            .find(|a| usable(a) && a.get_info().name.to_lowercase().contains(&name))
            .cloned()
            .ok_or_else(|| no_adapter(format!("no adapter named like {name:?}"), all.len()))
    };
    match choice {
        AdapterChoice::Index(i) => match all.get(*i) {
            Some(a) if usable(a) => Ok(a.clone()),
            Some(_) => Err(no_adapter(
                format!("adapter {i} cannot run compute shaders"),
                all.len(),
            )),
            None => Err(no_adapter(
                format!("adapter {i} asked for, {} found", all.len()),
                all.len(),
            )),
        },
        AdapterChoice::Named(name) => by_name(name),
        AdapterChoice::Auto => {
            if let Ok(name) = std::env::var("WGPU_ADAPTER_NAME") {
                return by_name(&name);
            }
            use wgpu::DeviceType as T;
            let rank = |t: T| match t {
                T::DiscreteGpu => 0,
                T::IntegratedGpu => 1,
                T::VirtualGpu => 2,
                T::Cpu => 3,
                T::Other => 4,
            };
            all.iter()
                .filter(|a| usable(a))
                .min_by_key(|a| rank(a.get_info().device_type))
                .cloned()
                .ok_or_else(|| {
                    no_adapter(
                        format!("{} adapters found, none with compute shaders", all.len()),
                        all.len(),
                    )
                })
        }
    }
}

/// A device with its queue, caches and pool.
pub(crate) struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: AdapterSummary,
    limits: wgpu::Limits,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    layouts: Mutex<HashMap<&'static [Access], (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
    pipelines: Mutex<HashMap<(&'static str, &'static str, u32), wgpu::ComputePipeline>>,
    pool: Arc<Pool>,
    /// The first error wgpu reported outside a call's own checks.
    fault: Arc<Mutex<Option<String>>>,
    /// Bytes brought back to the host so far.
    read_back: AtomicU64,
    /// Read-backs (synchronisations that brought bytes back) so far.
    read_backs: AtomicU64,
    /// Dispatches recorded so far.
    dispatches: AtomicU64,
    /// Passes over scores so far, as the ops report them.
    passes: AtomicU64,
    /// Bytes written from the host so far.
    uploaded: AtomicU64,
    /// Operand bytes dense calls found kept on the device so far.
    kept: AtomicU64,
    /// Flops of dense calls run on the device so far.
    flops: AtomicU64,
    /// Candidates device selection listed so far.
    candidates: AtomicU64,
    /// Matrices retained on the device.
    residents: Residents,
}

/// What a device has done since it was opened: how the tests and
/// `prunus bench select` see how a selection used the device. Shared by
/// every clone of a backend; subtract two snapshots
/// ([`Counters::since`]) to see what one call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Passes over scores: sweeps that read every element of a call's
    /// inputs (one pass may take several dispatches where the inputs need
    /// more bindings than one dispatch has). Device selection counts only
    /// the passes the device actually ran, not those an early exit skipped.
    pub passes: u64,
    /// Read-backs: synchronisations that brought bytes to the host.
    pub read_backs: u64,
    /// Bytes brought back to the host.
    pub bytes_read_back: u64,
    /// Bytes written from the host to the device (the few parameter words
    /// of each dispatch aside).
    pub bytes_uploaded: u64,
    /// Operand bytes that dense linear algebra found kept on the device
    /// (matrices retained with [`prunus_core::Dense::retain`]) instead of
    /// uploading them again.
    pub bytes_kept: u64,
    /// Flops of dense linear algebra run on the device (multiply and add
    /// counted as two).
    pub flops: u64,
    /// Elements device selection's second radix pass wrote to its candidate
    /// list (key and position, 8 bytes each), which the third pass and the
    /// tie search read instead of the scores.
    pub candidates: u64,
}

impl Counters {
    /// What happened between `earlier` and `self` (saturating at zero).
    pub fn since(self, earlier: Counters) -> Counters {
        Counters {
            dispatches: self.dispatches.saturating_sub(earlier.dispatches),
            passes: self.passes.saturating_sub(earlier.passes),
            read_backs: self.read_backs.saturating_sub(earlier.read_backs),
            bytes_read_back: self.bytes_read_back.saturating_sub(earlier.bytes_read_back),
            bytes_uploaded: self.bytes_uploaded.saturating_sub(earlier.bytes_uploaded),
            bytes_kept: self.bytes_kept.saturating_sub(earlier.bytes_kept),
            flops: self.flops.saturating_sub(earlier.flops),
            candidates: self.candidates.saturating_sub(earlier.candidates),
        }
    }
}

impl Gpu {
    /// Opens the chosen adapter with every limit it supports.
    pub(crate) fn open(choice: &AdapterChoice) -> Result<Self> {
        let adapter = choose(choice)?;
        let info = summary(&adapter);
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("prunus"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| backend_error(format!("cannot open {}: {e}", info.name)))?;
        let fault = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&fault);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            lock(&sink).get_or_insert_with(|| e.to_string());
        }));
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            modules: Mutex::default(),
            layouts: Mutex::default(),
            pipelines: Mutex::default(),
            pool: Arc::new(Pool {
                free: Mutex::default(),
                budget: 1 << 30,
            }),
            fault,
            read_back: AtomicU64::new(0),
            read_backs: AtomicU64::new(0),
            dispatches: AtomicU64::new(0),
            passes: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            kept: AtomicU64::new(0),
            flops: AtomicU64::new(0),
            candidates: AtomicU64::new(0),
            residents: Residents::new(),
        })
    }

    /// The counters since the device was opened.
    pub(crate) fn counters(&self) -> Counters {
        Counters {
            dispatches: self.dispatches.load(Ordering::Relaxed),
            passes: self.passes.load(Ordering::Relaxed),
            read_backs: self.read_backs.load(Ordering::Relaxed),
            bytes_read_back: self.read_back.load(Ordering::Relaxed),
            bytes_uploaded: self.uploaded.load(Ordering::Relaxed),
            bytes_kept: self.kept.load(Ordering::Relaxed),
            flops: self.flops.load(Ordering::Relaxed),
            candidates: self.candidates.load(Ordering::Relaxed),
        }
    }

    /// The matrices retained on this device.
    pub(crate) fn residents(&self) -> &Residents {
        &self.residents
    }

    /// Counts `bytes` of dense operands found kept on the device.
    pub(crate) fn count_kept(&self, bytes: u64) {
        self.kept.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `flops` of dense linear algebra run on the device.
    pub(crate) fn count_flops(&self, flops: u64) {
        self.flops.fetch_add(flops, Ordering::Relaxed);
    }

    /// Counts `n` candidates listed by device selection.
    pub(crate) fn count_candidates(&self, n: u64) {
        self.candidates.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` passes over scores.
    pub(crate) fn count_passes(&self, n: u64) {
        self.passes.fetch_add(n, Ordering::Relaxed);
    }

    /// The most storage buffers one kernel may bind.
    pub(crate) fn max_storage_bindings(&self) -> u32 {
        self.limits
            .max_storage_buffers_per_shader_stage
            .min(self.limits.max_bindings_per_bind_group.saturating_sub(1))
    }

    /// Bytes brought back to the host since the device was opened.
    pub(crate) fn bytes_read_back(&self) -> u64 {
        self.read_back.load(Ordering::Relaxed)
    }

    /// The adapter.
    pub(crate) fn info(&self) -> &AdapterSummary {
        &self.info
    }

    /// The largest storage binding, in bytes.
    pub(crate) fn max_binding(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// The largest buffer, in bytes.
    pub(crate) fn max_buffer(&self) -> u64 {
        self.limits.max_buffer_size
    }

    /// Fails with the first error wgpu reported since the last check.
    pub(crate) fn check(&self) -> Result<()> {
        match lock(&self.fault).take() {
            Some(m) => Err(backend_error(format!("{}: {m}", self.info.name))),
            None => Ok(()),
        }
    }

    /// A storage buffer of at least `bytes` (contents undefined).
    pub(crate) fn storage(&self, bytes: u64) -> Result<Buf> {
        self.alloc(Class::Storage, bytes)
    }

    fn alloc(&self, class: Class, bytes: u64) -> Result<Buf> {
        // Power-of-two buckets up to 64 MiB; above, whole MiB (a bucket
        // would waste up to half of a large tensor's memory).
        let bytes = bytes.max(16);
        let size = if bytes <= BUCKETED {
            bytes.next_power_of_two()
        } else {
            bytes.div_ceil(1 << 20) << 20
        };
        if size > self.max_buffer() {
            return Err(backend_error(format!(
                "a buffer of {bytes} bytes exceeds the largest {} allows ({} bytes)",
                self.info.name,
                self.max_buffer()
            )));
        }
        let raw = match self.pool.take(class, size) {
            Some(raw) => raw,
            None => self.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage: match class {
                    Class::Storage => {
                        wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_SRC
                            | wgpu::BufferUsages::COPY_DST
                    }
                    Class::Staging => wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                },
                mapped_at_creation: false,
            }),
        };
        self.check()?;
        Ok(Buf {
            raw: Some(raw),
            class,
            pool: Arc::clone(&self.pool),
        })
    }

    /// Writes host bytes at `offset` (a multiple of 4; the length is padded
    /// with zeros to a multiple of 4), ordered before the next submission.
    pub(crate) fn write(&self, buf: &Buf, offset: u64, bytes: &[u8]) {
        self.uploaded
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let whole = bytes.len() - bytes.len() % ALIGN as usize;
        if whole > 0 {
            self.queue.write_buffer(buf.raw(), offset, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; ALIGN as usize];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue
                .write_buffer(buf.raw(), offset + whole as u64, &tail);
        }
    }

    /// A new batch of commands.
    pub(crate) fn batch(&self) -> Batch<'_> {
        Batch {
            gpu: self,
            encoder: self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None }),
        }
    }

    fn module(&self, shader: &'static Shader) -> wgpu::ShaderModule {
        lock(&self.modules)
            .entry(shader.name)
            .or_insert_with(|| {
                let source = format!("{PRELUDE}\n{}", shader.source);
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(shader.name),
                        source: wgpu::ShaderSource::Wgsl(source.into()),
                    })
            })
            .clone()
    }

    fn layout(&self, bindings: &'static [Access]) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
        lock(&self.layouts)
            .entry(bindings)
            .or_insert_with(|| {
                let entry =
                    |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
                        binding,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty,
                            has_dynamic_offset: false,
                            min_binding_size: None,
                        },
                        count: None,
                    };
                let mut entries = vec![entry(0, wgpu::BufferBindingType::Uniform)];
                for (i, a) in bindings.iter().enumerate() {
                    let read_only = *a == Access::Read;
                    entries.push(entry(
                        i as u32 + 1,
                        wgpu::BufferBindingType::Storage { read_only },
                    ));
                }
                let bgl = self
                    .device
                    .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                        label: None,
                        entries: &entries,
                    });
                let pl = self
                    .device
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: None,
                        bind_group_layouts: &[Some(&bgl)],
                        immediate_size: 0,
                    });
                (bgl, pl)
            })
            .clone()
    }

    fn pipeline(&self, kernel: &Kernel) -> wgpu::ComputePipeline {
        let key = (kernel.shader.name, kernel.entry, WORKGROUP);
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return p.clone();
        }
        let module = self.module(kernel.shader);
        let (_, layout) = self.layout(kernel.bindings);
        let p = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: Default::default(),
                cache: None,
            });
        lock(&self.pipelines).insert(key, p.clone());
        p
    }

    /// Submits `batch`, copies `slices` to one staging buffer, waits for
    /// the device and returns their bytes (one synchronisation).
    pub(crate) fn read(&self, mut batch: Batch<'_>, slices: &[Slice<'_>]) -> Result<Vec<Vec<u8>>> {
        let mut offsets = Vec::with_capacity(slices.len());
        let mut total = 0u64;
        for s in slices {
            offsets.push(total);
            total += s.size.div_ceil(8) * 8;
        }
        if total == 0 {
            batch.submit()?;
            return Ok(slices.iter().map(|_| Vec::new()).collect());
        }
        let staging = self.alloc(Class::Staging, total)?;
        for (s, &o) in slices.iter().zip(&offsets) {
            let size = s.size.div_ceil(ALIGN) * ALIGN;
            if size > 0 {
                batch
                    .encoder
                    .copy_buffer_to_buffer(s.buf.raw(), s.offset, staging.raw(), o, size);
            }
        }
        batch.submit()?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging
            .raw()
            .map_async(wgpu::MapMode::Read, 0..total, move |r| {
                let _ = tx.send(r);
            });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| {
                backend_error(format!("{}: waiting for the device: {e}", self.info.name))
            })?;
        rx.recv()
            .map_err(|_| backend_error("readback was never answered".into()))?
            .map_err(|e| backend_error(format!("{}: readback failed: {e}", self.info.name)))?;
        self.read_back.fetch_add(
            slices.iter().map(|s| s.size).sum::<u64>(),
            Ordering::Relaxed,
        );
        self.read_backs.fetch_add(1, Ordering::Relaxed);
        let out = {
            let view = staging
                .raw()
                .get_mapped_range(0..total)
                .map_err(|e| backend_error(format!("{}: readback failed: {e}", self.info.name)))?;
            slices
                .iter()
                .zip(&offsets)
                .map(|(s, &o)| view[o as usize..(o + s.size) as usize].to_vec())
                .collect()
        };
        staging.raw().unmap();
        self.check()?;
        Ok(out)
    }
}

/// Commands recorded for one submission.
pub(crate) struct Batch<'g> {
    gpu: &'g Gpu,
    encoder: wgpu::CommandEncoder,
}

impl Batch<'_> {
    /// Runs `kernel` over `groups` workgroups (at most the device's limit per
    /// dimension: kernels loop over their items with a grid stride) with the
    /// parameter words `params` and storage `bindings`.
    pub(crate) fn dispatch(
        &mut self,
        kernel: &Kernel,
        params: &[u32],
        bindings: &[Slice<'_>],
        groups: u32,
    ) {
        debug_assert_eq!(bindings.len(), kernel.bindings.len(), "{}", kernel.entry);
        let gpu = self.gpu;
        gpu.dispatches.fetch_add(1, Ordering::Relaxed);
        let mut words = params.to_vec();
        words.resize(words.len().max(PARAM_WORDS), 0);
        let uniform = gpu
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let (bgl, _) = gpu.layout(kernel.bindings);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (i, s) in bindings.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: s.buf.raw(),
                    offset: s.offset,
                    size: wgpu::BufferSize::new(s.size.max(4)),
                }),
            });
        }
        let group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &bgl,
            entries: &entries,
        });
        let pipeline = gpu.pipeline(kernel);
        let mut pass = self
            .encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(kernel.entry),
                timestamp_writes: None,
            });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(groups.max(1), 1, 1);
    }

    /// Workgroups for `items` work items of one thread each, capped at the
    /// device's limit (kernels grid-stride over the rest).
    pub(crate) fn groups_for(&self, items: u64) -> u32 {
        let cap = self
            .gpu
            .limits
            .max_compute_workgroups_per_dimension
            .min(65_535) as u64;
        items.div_ceil(WORKGROUP as u64).clamp(1, cap) as u32
    }

    /// Zeroes a range (offset and size multiples of 4).
    pub(crate) fn clear(&mut self, s: Slice<'_>) {
        if s.size > 0 {
            self.encoder
                .clear_buffer(s.buf.raw(), s.offset, Some(s.size.div_ceil(ALIGN) * ALIGN));
        }
    }

    /// Sends the commands to the queue without waiting.
    pub(crate) fn submit(self) -> Result<()> {
        self.gpu.queue.submit([self.encoder.finish()]);
        self.gpu.check()
    }
}
