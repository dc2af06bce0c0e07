//! Pruning a checkpoint: which tensors, the streamed selection, and the
//! output written tensor by tensor (atomically when it is a file).

use std::io::Write;
use std::ops::Range;
use std::path::Path;

use prunus_core::contract::histogram::TensorCut;
use prunus_core::selection::select::{prunable_units, units_to_prune};
use prunus_core::{Backend, Granularity, Importance, Layer, Mask, NofM, PruneConfig, Scope, Shape};
use rayon::prelude::*;
use regex::Regex;

use super::checkpoint::Checkpoint;
use super::dtype::Dtype;
use super::header::{self, TensorInfo};
use super::output;
use super::stream::{
    CHUNK, Keys, Member, Reads, SMALL_BYTES, Scores, Selector, Tuning, classify, f32_keep_bits,
    keep_bits, runs, small_cut, small_tally, tie_count,
};
use crate::error::{Error, Result};
use prunus_cpu::CpuBackend;

/// The version written into the metadata of pruned checkpoints.
pub const PRUNUS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Which tensors a request may prune, by name: those matching `include`
/// (all when absent) and not matching `exclude`. Only tensors of rank 2 or
/// more (weight matrices, conv kernels, embeddings) in F32, F16 or BF16 are
/// ever pruned; 1-D tensors such as biases and norms are left alone.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    include: Option<Regex>,
    exclude: Option<Regex>,
}

impl Filter {
    /// A filter from two regular expressions (searched anywhere in the
    /// name; anchor them with `^...$` for whole names).
    pub fn new(include: Option<&str>, exclude: Option<&str>) -> Result<Filter> {
        let compile = |flag: &str, p: Option<&str>| {
            p.map(|p| {
                Regex::new(p).map_err(|e| Error::Request {
                    reason: format!("{flag} '{p}' is not a valid regular expression: {e}"),
                })
            })
            .transpose()
        };
        Ok(Filter {
            include: compile("--include", include)?,
            exclude: compile("--exclude", exclude)?,
        })
    }

    /// Whether the name passes: it matches `include` (or there is none)
    /// and does not match `exclude`. Says nothing of rank or dtype.
    pub fn admits(&self, name: &str) -> bool {
        self.include.as_ref().is_none_or(|r| r.is_match(name))
            && !self.exclude.as_ref().is_some_and(|r| r.is_match(name))
    }
}

/// A request to prune a checkpoint.
///
/// `config` gives the sparsity, the scope (global, local or per-tensor
/// budgets), the granularity (unstructured, or N:M, which fixes the density
/// at `N/M` and ignores the sparsity), the importance (magnitude or seeded
/// random) and the guards (skipped names, minimum density, never emptying a
/// tensor); its NaN policy is not used, since non-finite weights are an
/// error here.
#[derive(Clone, Debug)]
pub struct Request {
    /// What to prune, and how.
    pub config: PruneConfig,
    /// Which tensors may be pruned.
    pub filter: Filter,
    /// Also write each pruned tensor's mask as `<name>.mask`: U8, shape
    /// `[ceil(n / 8)]`, bit `i % 8` of byte `i / 8` set where element `i`
    /// is kept.
    pub masks: bool,
}

impl Request {
    /// A request for `config` over every eligible tensor, without masks.
    pub fn new(config: PruneConfig) -> Request {
        Request {
            config,
            filter: Filter::default(),
            masks: false,
        }
    }
}

/// Why a tensor is left as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kept {
    /// Not F32, F16 or BF16.
    Dtype,
    /// Rank 0 or 1 (biases, norms, scalars).
    OneDimensional,
    /// No elements.
    Empty,
    /// More than 8 dimensions.
    RankTooLarge,
    /// Its name does not match `--include`.
    NotIncluded,
    /// Its name matches `--exclude`.
    Excluded,
    /// Named by the guards' skip list.
    Skipped,
}

impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kept::Dtype => "dtype",
            Kept::OneDimensional => "1-D",
            Kept::Empty => "empty",
            Kept::RankTooLarge => "rank > 8",
            Kept::NotIncluded => "not included",
            Kept::Excluded => "excluded",
            Kept::Skipped => "skipped",
        })
    }
}

/// What happened to one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorReport {
    /// Its name.
    pub name: String,
    /// Its dtype.
    pub dtype: Dtype,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its element count.
    pub numel: u64,
    /// `None` when pruned, else why not.
    pub kept: Option<Kept>,
    /// Zero elements before (float tensors only).
    pub zeros_before: Option<u64>,
    /// Zero elements after (float tensors only).
    pub zeros_after: Option<u64>,
}

/// What a pruning run did.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Report {
    /// One entry per input tensor, in data order.
    pub tensors: Vec<TensorReport>,
    /// Bytes of tensor data read (some tensors are read more than once).
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
}

impl Report {
    /// Elements of the pruned tensors, and how many of them are zero
    /// before and after.
    pub fn pruned_totals(&self) -> (u64, u64, u64) {
        self.tensors
            .iter()
            .filter(|t| t.kept.is_none())
            .fold((0, 0, 0), |(n, b, a), t| {
                (
                    n + t.numel,
                    b + t.zeros_before.unwrap_or(0),
                    a + t.zeros_after.unwrap_or(0),
                )
            })
    }
}

/// Progress of a run: `done` of `total` bytes through the current stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// `"scan"` (reading to select) or `"write"`.
    pub stage: &'static str,
    /// Bytes done.
    pub done: u64,
    /// Bytes in the stage.
    pub total: u64,
}

/// Which tensors of `checkpoint` `request` prunes: `None` for a pruned
/// tensor, else why it is kept. Fails when a skipped name is not in the
/// file or nothing is left to prune.
pub fn plan(checkpoint: &Checkpoint, request: &Request) -> Result<Vec<Option<Kept>>> {
    let tensors = checkpoint.tensors();
    for s in &request.config.guards.skip {
        if !tensors.iter().any(|t| &t.name == s) {
            return Err(prunus_core::Error::UnknownLayer { name: s.clone() }.into());
        }
    }
    let roles: Vec<Option<Kept>> = tensors
        .iter()
        .map(|t| {
            let f = &request.filter;
            if !t.dtype.is_prunable() {
                Some(Kept::Dtype)
            } else if t.shape.len() < 2 {
                Some(Kept::OneDimensional)
            } else if t.shape.len() > 8 {
                Some(Kept::RankTooLarge)
            } else if t.numel() == 0 {
                Some(Kept::Empty)
            } else if f.include.as_ref().is_some_and(|r| !r.is_match(&t.name)) {
                Some(Kept::NotIncluded)
            } else if f.exclude.as_ref().is_some_and(|r| r.is_match(&t.name)) {
                Some(Kept::Excluded)
            } else if request.config.guards.skip.contains(&t.name) {
                Some(Kept::Skipped)
            } else {
                None
            }
        })
        .collect();
    if roles.iter().all(Option::is_some) {
        return Err(Error::Request {
            reason: format!(
                "no tensor of {} can be pruned: of its {} tensors none is an F32, F16 or BF16 \
                 tensor of rank 2 or more that the filters and skip list allow",
                checkpoint.path().display(),
                tensors.len()
            ),
        });
    }
    Ok(roles)
}

/// How the pruned tensors' masks are decided.
enum Choice {
    /// Streamed selection: per member its own cut, or `None` for the
    /// shared one (applied to those members as one sequence, in file
    /// order); or, for a local target (`each`, the count per member), `None`
    /// for a small member cut from its data when it is written.
    Cuts {
        own: Vec<Option<TensorCut>>,
        shared: TensorCut,
        each: Option<Vec<u64>>,
    },
    /// N:M, decided tensor by tensor on the backend.
    Pattern(NofM),
}

/// Prunes `checkpoint` as `request` asks and writes the result to `out`
/// (`out_name` names it in errors). Tensors keep their order, dtypes and
/// shapes; pruned elements become zero (+0) in their own dtype, everything
/// else is copied bit for bit. Each pruned tensor's mask follows it when
/// masks are requested. The metadata keeps the input's entries and records
/// what was done under `prunus.*` keys.
///
/// Unstructured selection streams on the host, since it is bound by
/// reading the file: a checkpoint is read twice in all (once to select,
/// once to write), plus a sample of a few thousand pages of a large F32
/// one; a third read of F32 tensors where the sample missed the threshold
/// or for a local selection (each tensor right after its first read), and
/// of the tensors a guard saturates. N:M patterns are
/// chosen on `backend`, one tensor at a time, in the writing pass. Nothing
/// is written before every check that can fail without reading data has
/// passed; a non-finite weight found while writing an N:M pattern stops the
/// run with the output incomplete (so write to a file through
/// [`prune_file`], which then leaves no output).
pub fn prune_to_writer<B: Backend + ?Sized>(
    backend: &B,
    checkpoint: &Checkpoint,
    request: &Request,
    out: &mut dyn Write,
    out_name: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report> {
    prune_tuned(
        backend,
        checkpoint,
        request,
        out,
        out_name,
        progress,
        Tuning::default(),
    )
    .map(|(report, _)| report)
}

/// [`prune_to_writer`] with the sample tuned, also saying which reads the
/// selection took (tests force each path with it).
pub(crate) fn prune_tuned<B: Backend + ?Sized>(
    backend: &B,
    checkpoint: &Checkpoint,
    request: &Request,
    out: &mut dyn Write,
    out_name: &Path,
    progress: &mut dyn FnMut(Progress),
    tuning: Tuning,
) -> Result<(Report, Reads)> {
    let config = &request.config;
    check_fraction(config.sparsity, "sparsity")?;
    check_fraction(config.guards.min_density, "minimum density")?;
    let scores = match config.importance {
        Importance::Magnitude => Scores::Magnitude,
        Importance::Random { seed } => Scores::Random { seed },
        other => {
            return Err(Error::Request {
                reason: format!(
                    "importance {other:?} needs data; checkpoints take magnitude or random"
                ),
            });
        }
    };
    let roles = plan(checkpoint, request)?;
    let tensors = checkpoint.tensors();
    let members: Vec<Member> = roles
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_none())
        .enumerate()
        .map(|(stream, (index, _))| Member {
            index,
            stream: stream as u32,
            dtype: tensors[index].dtype,
            numel: tensors[index].numel(),
            cap: prunable_units(tensors[index].numel(), &config.guards),
        })
        .collect();
    if request.masks
        && let Some(m) = members.iter().find(|m| {
            let mask = format!("{}.mask", tensors[m.index].name);
            tensors.iter().any(|t| t.name == mask)
        })
    {
        return Err(Error::Request {
            reason: format!(
                "the input already holds a tensor named '{}.mask'; prune without --masks, or \
                 remove it first",
                tensors[m.index].name
            ),
        });
    }
    let mut read = 0;
    let mut reads = Reads::default();
    let mut each = None;
    let choice = match config.granularity {
        Granularity::Unstructured => {
            let targets = targets(&members, checkpoint, config)?;
            let total: u64 = members.iter().map(|m| tensors[m.index].len()).sum();
            let mut sel = Selector::new(checkpoint, members.clone(), scores, tuning);
            let mut scanned = |done| {
                progress(Progress {
                    stage: "scan",
                    done,
                    total,
                })
            };
            let (own, shared) = match targets {
                Target::Global(k) => {
                    let g = sel.global(k, &mut scanned)?;
                    (g.own, g.shared)
                }
                Target::Each(k) => {
                    // Small tensors are cut where they are written: one
                    // visit each.
                    let deferred: Vec<bool> = members
                        .iter()
                        .map(|m| tensors[m.index].len() <= SMALL_BYTES)
                        .collect();
                    let own = sel.local(&k, &deferred, &mut scanned)?;
                    each = Some(k);
                    (own, TensorCut { key: 0, ties: 0 })
                }
            };
            read = sel.read;
            reads = sel.reads;
            Choice::Cuts { own, shared, each }
        }
        Granularity::NofM(p) => {
            p.validate()?;
            for m in &members {
                let t = &tensors[m.index];
                p.check_shape(&t.name, &Shape::new(&t.shape)?)?;
            }
            Choice::Pattern(p)
        }
        _ => {
            return Err(Error::Request {
                reason: "structured pruning of checkpoints is not supported yet; prune \
                         unstructured or N:M"
                    .into(),
            });
        }
    };
    let job = Job {
        backend,
        cpu: CpuBackend::default(),
        checkpoint,
        request,
        roles,
        members,
        scores,
    };
    let mut report = job.write(&choice, out, out_name, progress)?;
    report.bytes_read += read;
    Ok((report, reads))
}

/// How many elements to prune: over all members together, or per member.
enum Target {
    Global(u64),
    Each(Vec<u64>),
}

/// The counts `config`'s scope asks for, checked against the guards as
/// core checks them.
fn targets(members: &[Member], checkpoint: &Checkpoint, config: &PruneConfig) -> Result<Target> {
    let name = |m: &Member| checkpoint.tensors()[m.index].name.as_str();
    let local = |m: &Member, s: f64| -> Result<u64> {
        let k = units_to_prune(s, m.numel);
        if k > m.cap {
            return Err(prunus_core::Error::GuardsExceeded {
                layer: name(m).into(),
                requested: k,
                allowed: m.cap,
            }
            .into());
        }
        Ok(k)
    };
    match &config.scope {
        Scope::Global => {
            let n: u64 = members.iter().map(|m| m.numel).sum();
            let cap: u64 = members.iter().map(|m| m.cap).sum();
            let k = units_to_prune(config.sparsity, n);
            if k > cap {
                return Err(prunus_core::Error::GuardsExceeded {
                    layer: "(global)".into(),
                    requested: k,
                    allowed: cap,
                }
                .into());
            }
            Ok(Target::Global(k))
        }
        Scope::Local => Ok(Target::Each(
            members
                .iter()
                .map(|m| local(m, config.sparsity))
                .collect::<Result<_>>()?,
        )),
        Scope::PerLayer(budget) => {
            for (j, (n, s)) in budget.iter().enumerate() {
                if budget[..j].iter().any(|(o, _)| o == n) {
                    return Err(prunus_core::Error::DuplicateLayer { name: n.clone() }.into());
                }
                if !members.iter().any(|m| name(m) == n) {
                    return Err(prunus_core::Error::UnknownLayer { name: n.clone() }.into());
                }
                check_fraction(*s, "sparsity")?;
            }
            Ok(Target::Each(
                members
                    .iter()
                    .map(|m| {
                        let s = budget
                            .iter()
                            .find(|(n, _)| n == name(m))
                            .map(|(_, s)| *s)
                            .ok_or_else(|| prunus_core::Error::MissingBudget {
                                layer: name(m).into(),
                            })?;
                        local(m, s)
                    })
                    .collect::<Result<_>>()?,
            ))
        }
        _ => Err(Error::Request {
            reason: "this scope is not supported for checkpoints".into(),
        }),
    }
}

fn check_fraction(v: f64, what: &'static str) -> Result<()> {
    if !(0.0..=1.0).contains(&v) {
        return Err(if what == "sparsity" {
            prunus_core::Error::SparsityOutOfRange { value: v }
        } else {
            prunus_core::Error::FractionOutOfRange { what, value: v }
        }
        .into());
    }
    Ok(())
}

/// One pruning run's fixed parts.
struct Job<'a, B: Backend + ?Sized> {
    backend: &'a B,
    /// The CPU backend whose kernels decide F32 magnitudes' keep bits.
    cpu: CpuBackend<'static>,
    checkpoint: &'a Checkpoint,
    request: &'a Request,
    roles: Vec<Option<Kept>>,
    members: Vec<Member>,
    scores: Scores,
}

impl<B: Backend + ?Sized> Job<'_, B> {
    /// The output's tensors, in order: each input tensor at its new offset,
    /// and each pruned tensor's mask after it when masks are requested.
    fn layout(&self) -> Vec<TensorInfo> {
        let mut at = 0u64;
        let mut out = Vec::new();
        for (i, t) in self.checkpoint.tensors().iter().enumerate() {
            out.push(TensorInfo {
                start: at,
                end: at + t.len(),
                ..t.clone()
            });
            at += t.len();
            if self.request.masks && self.roles[i].is_none() {
                let bytes = t.numel().div_ceil(8);
                out.push(TensorInfo {
                    name: format!("{}.mask", t.name),
                    dtype: Dtype::parse("U8").expect("U8 is a dtype"),
                    shape: vec![bytes as usize],
                    start: at,
                    end: at + bytes,
                });
                at += bytes;
            }
        }
        out
    }

    /// The input's metadata without earlier `prunus.*` entries, and this
    /// run's.
    fn metadata(&self) -> Vec<(String, String)> {
        let c = &self.request.config;
        let mut m: Vec<(String, String)> = self
            .checkpoint
            .metadata()
            .iter()
            .filter(|(k, _)| !k.starts_with("prunus."))
            .cloned()
            .collect();
        let method = match self.scores {
            Scores::Magnitude => "magnitude".to_string(),
            Scores::Random { seed } => format!("random (seed {seed})"),
        };
        let (pattern, scope) = match c.granularity {
            Granularity::NofM(p) => (format!("{}:{}", p.n, p.m), "per group".to_string()),
            _ => (
                "unstructured".to_string(),
                match &c.scope {
                    Scope::Global => "global".to_string(),
                    Scope::Local => "local".to_string(),
                    _ => "per tensor".to_string(),
                },
            ),
        };
        m.push(("prunus.version".into(), PRUNUS_VERSION.into()));
        m.push(("prunus.method".into(), method));
        m.push(("prunus.pattern".into(), pattern));
        m.push(("prunus.scope".into(), scope));
        if !matches!(c.granularity, Granularity::NofM(_)) {
            m.push(("prunus.sparsity".into(), c.sparsity.to_string()));
        }
        m.push((
            "prunus.min_density".into(),
            c.guards.min_density.to_string(),
        ));
        m.push((
            "prunus.pruned_tensors".into(),
            self.members.len().to_string(),
        ));
        m
    }

    /// Writes the output in file order: runs of small tensors read with one
    /// call and pruned in parallel, larger tensors one at a time.
    fn write(
        &self,
        choice: &Choice,
        out: &mut dyn Write,
        out_name: &Path,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Report> {
        let infos = self.layout();
        let head = header::write(&infos, &self.metadata());
        let total = 8 + head.len() as u64 + infos.last().map_or(0, |t| t.end);
        let mut written = 0u64;
        let mut put = |out: &mut dyn Write, bytes: &[u8]| -> Result<()> {
            out.write_all(bytes)
                .map_err(|e| Error::io("write", out_name, &e))?;
            written += bytes.len() as u64;
            progress(Progress {
                stage: "write",
                done: written,
                total,
            });
            Ok(())
        };
        put(out, &(head.len() as u64).to_le_bytes())?;
        put(out, &head)?;
        let tensors = self.checkpoint.tensors();
        // Each tensor's position among the members, when pruned.
        let mut next = 0;
        let member_of: Vec<Option<usize>> = self
            .roles
            .iter()
            .map(|r| {
                r.is_none().then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        // N:M masks come from the backend tensor by tensor.
        let runs_small = matches!(choice, Choice::Cuts { .. });
        let spans: Vec<(u64, u64, bool)> = tensors
            .iter()
            .map(|t| (t.start, t.end, runs_small && t.len() <= SMALL_BYTES))
            .collect();
        let mut state = WriteState {
            report: Report::default(),
            seen: 0,
        };
        let writer = RunWriter {
            checkpoint: self.checkpoint,
            roles: &self.roles,
            members: &self.members,
            scores: self.scores,
            masks: self.request.masks,
        };
        // A run's output is written while the next run is pruned on another
        // thread: the kernel's copy of the bytes overlaps the work.
        let (mut pending, mut next_out) = (Vec::new(), Vec::new());
        let mut buffer = Vec::new();
        for run in runs(&spans) {
            if spans[run.start].2 {
                let (pruned, wrote) = std::thread::scope(|s| {
                    let worker = s.spawn(|| {
                        writer.write_run(run, &member_of, choice, &mut state, &mut next_out)
                    });
                    let wrote = put(out, &pending);
                    (worker.join(), wrote)
                });
                wrote?;
                pruned.unwrap_or_else(|p| std::panic::resume_unwind(p))?;
                std::mem::swap(&mut pending, &mut next_out);
            } else {
                put(out, &pending)?;
                pending.clear();
                self.write_one(
                    run.start,
                    &member_of,
                    choice,
                    &mut state,
                    &mut buffer,
                    &mut |b| put(out, b),
                )?;
            }
        }
        put(out, &pending)?;
        out.flush().map_err(|e| Error::io("write", out_name, &e))?;
        let mut report = state.report;
        report.bytes_written = written;
        Ok(report)
    }

    /// Tensor `i` (and its mask) passed to `put` block by block, read on
    /// its own.
    fn write_one(
        &self,
        i: usize,
        member_of: &[Option<usize>],
        choice: &Choice,
        state: &mut WriteState,
        buffer: &mut Vec<u8>,
        put: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let t = &self.checkpoint.tensors()[i];
        let data = self.checkpoint.data(i)?;
        state.report.bytes_read += data.len() as u64;
        let mut entry = entry(self.checkpoint, &self.roles, i);
        match member_of[i] {
            None => {
                if t.dtype.is_prunable() {
                    let z = zeros(&data, t.dtype);
                    entry.zeros_before = Some(z);
                    entry.zeros_after = Some(z);
                }
                put(&data)?;
            }
            Some(member) => {
                let m = &self.members[member];
                let bits = match choice {
                    Choice::Cuts { own, .. } => {
                        let cut = member_cut(choice, member, state.seen);
                        let keys = Keys::new(self.scores, m);
                        let (bits, tied) =
                            if self.scores == Scores::Magnitude && m.dtype == Dtype::F32 {
                                f32_keep_bits(&self.cpu, &data, m.numel, cut)?
                            } else {
                                keep_bits(&data, m.numel, keys, cut)
                            };
                        if own[member].is_none() {
                            state.seen += tied;
                        }
                        bits
                    }
                    Choice::Pattern(p) => self.pattern(m, &data, *p)?,
                };
                let z = write_masked(&data, t.dtype, &bits, buffer, put)?;
                entry.zeros_before = Some(z.before);
                entry.zeros_after = Some(z.after);
                if self.request.masks {
                    put(&bits)?;
                }
            }
        }
        state.report.tensors.push(entry);
        Ok(())
    }

    /// Keep bits of member `m` (stored in `data`) under the N:M pattern `p`,
    /// chosen on the backend.
    fn pattern(&self, m: &Member, data: &[u8], p: NofM) -> Result<Vec<u8>> {
        let t = &self.checkpoint.tensors()[m.index];
        let values: Vec<f32> = data
            .par_chunks(m.dtype.width())
            .map(|b| m.dtype.decode(b))
            .collect();
        if let Some(first) = values.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite {
                tensor: t.name.clone(),
                count: values.iter().filter(|x| !x.is_finite()).count() as u64,
                first: first as u64,
            });
        }
        let shape = Shape::new(&t.shape)?;
        let b = self.backend;
        let w = b.upload(&values, &shape)?;
        drop(values);
        let layer = [Layer::new(&t.name, &w)];
        let config = PruneConfig::new(0.0).granularity(Granularity::NofM(p));
        let mask: Mask = match self.scores {
            Scores::Magnitude => prunus_core::prune(b, &layer, &config)?,
            Scores::Random { seed } => {
                let s = b.random_uniform(&shape, seed, m.stream)?;
                prunus_core::prune_with_scores(b, &layer, &[s], &config)?
            }
        }
        .remove(0);
        Ok(mask.to_bytes())
    }
}

/// Whether a float element's little-endian bytes hold zero (of either
/// sign): every bit but the sign is clear.
#[inline(always)]
fn is_zero(b: &[u8]) -> bool {
    let (last, rest) = b.split_last().expect("elements have bytes");
    last & 0x7F == 0 && rest.iter().all(|&x| x == 0)
}

/// Zero elements (either sign) of a float tensor's bytes.
fn zeros(data: &[u8], dtype: Dtype) -> u64 {
    let w = dtype.width();
    data.par_chunks(CHUNK * w)
        .map(|c| c.chunks_exact(w).filter(|b| is_zero(b)).count() as u64)
        .sum()
}

/// What writing runs of small tensors needs of a job: shared with the
/// thread that prunes the next run while the current one is written (the
/// job's backend need not be shared across threads).
struct RunWriter<'a> {
    checkpoint: &'a Checkpoint,
    roles: &'a [Option<Kept>],
    members: &'a [Member],
    scores: Scores,
    masks: bool,
}

impl RunWriter<'_> {
    /// The small tensors `run` (and their masks) into `output`: read
    /// with one call, pruned in parallel. The shared cut's ties go to the
    /// earliest elements in file order, as when written one by one: when
    /// some but not all of them are pruned, the run's members count theirs
    /// first.
    fn write_run(
        &self,
        run: Range<usize>,
        member_of: &[Option<usize>],
        choice: &Choice,
        state: &mut WriteState,
        output: &mut Vec<u8>,
    ) -> Result<()> {
        let Choice::Cuts { own, shared, each } = choice else {
            unreachable!("only streamed cuts are written in runs");
        };
        let tensors = self.checkpoint.tensors();
        let input = self.checkpoint.span(run.start, run.end - 1)?;
        state.report.bytes_read += input.len() as u64;
        let base = tensors[run.start].start;
        let data = |i: usize| {
            let t = &tensors[i];
            &input[(t.start - base) as usize..(t.end - base) as usize]
        };
        let (members, scores) = (self.members, self.scores);
        let keys = |member: usize| Keys::new(scores, &members[member]);
        let partial = shared.ties != 0 && shared.ties != TensorCut::ALL;
        // Ties at the shared key per shared member, while some are left.
        let tied: Vec<u64> = if partial && state.seen < shared.ties {
            let probe = TensorCut {
                key: shared.key,
                ties: 1,
            };
            run.clone()
                .into_par_iter()
                .map(|i| match member_of[i] {
                    Some(member) if own[member].is_none() && each.is_none() => {
                        tie_count(data(i), keys(member), probe)
                    }
                    _ => 0,
                })
                .collect()
        } else {
            vec![0; run.len()]
        };
        // Each member's cut, in file order.
        let mut plan = Vec::with_capacity(run.len());
        for (i, tied) in run.clone().zip(tied) {
            plan.push(member_of[i].map(|member| {
                // A local target's small members are cut here, from their
                // data; the others' cuts are known.
                let cut = match (own[member], each) {
                    (None, Some(k)) => Err(k[member]),
                    _ => Ok(member_cut(choice, member, state.seen)),
                };
                if own[member].is_none() {
                    state.seen += tied;
                }
                (member, cut)
            }));
        }
        // The output's stretch of each tensor (and its mask).
        let sizes: Vec<(usize, usize)> = run
            .clone()
            .map(|i| {
                let mask = match member_of[i] {
                    Some(_) if self.masks => tensors[i].numel().div_ceil(8) as usize,
                    _ => 0,
                };
                (tensors[i].len() as usize, mask)
            })
            .collect();
        output.resize(sizes.iter().map(|(d, m)| d + m).sum(), 0);
        let mut slices = Vec::with_capacity(run.len());
        let mut rest = output.as_mut_slice();
        for &(d, m) in &sizes {
            let (tensor, after) = rest.split_at_mut(d + m);
            slices.push(tensor.split_at_mut(d));
            rest = after;
        }
        type Done = std::result::Result<(Option<u64>, Option<u64>), (u64, u64)>;
        let done: Vec<Done> = (run.clone(), slices, plan)
            .into_par_iter()
            .map(|(i, (out, mask), plan)| {
                let (src, t) = (data(i), &tensors[i]);
                let Some((member, cut)) = plan else {
                    out.copy_from_slice(src);
                    let z = t.dtype.is_prunable().then(|| classify(t.dtype, src).0);
                    return Ok((z, z));
                };
                let m = &members[member];
                let cut = match cut {
                    Ok(cut) => cut,
                    Err(k) => {
                        small_cut(&keys(member), &small_tally(m, &keys(member), src)?.items, k)
                    }
                };
                let (bits, _) = keep_bits(src, m.numel, keys(member), cut);
                mask.copy_from_slice(&bits[..mask.len()]);
                let z = mask_into(out, src, t.dtype, &bits);
                Ok((Some(z.before), Some(z.after)))
            })
            .collect();
        for (i, done) in run.zip(done) {
            let (before, after) = done.map_err(|(count, first)| Error::NonFinite {
                tensor: tensors[i].name.clone(),
                count,
                first,
            })?;
            let mut entry = entry(self.checkpoint, self.roles, i);
            entry.zeros_before = before;
            entry.zeros_after = after;
            state.report.tensors.push(entry);
        }
        Ok(())
    }
}

/// Member `member`'s cut: its own, or the shared one with the ties still to
/// prune after `seen` of them in earlier members.
fn member_cut(choice: &Choice, member: usize, seen: u64) -> TensorCut {
    match choice {
        Choice::Cuts { own, shared, .. } => own[member].unwrap_or(TensorCut {
            key: shared.key,
            ties: match shared.ties {
                TensorCut::ALL => TensorCut::ALL,
                t => t.saturating_sub(seen),
            },
        }),
        Choice::Pattern(_) => TensorCut { key: 0, ties: 0 },
    }
}

/// The report entry of tensor `i` before its zeros are known.
fn entry(checkpoint: &Checkpoint, roles: &[Option<Kept>], i: usize) -> TensorReport {
    let t = &checkpoint.tensors()[i];
    TensorReport {
        name: t.name.clone(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        numel: t.numel(),
        kept: roles[i],
        zeros_before: None,
        zeros_after: None,
    }
}

/// `src` into `out` with the elements whose bit in `bits` is clear set to
/// +0; returns the zeros read and the zeros written (the tensor's zeros
/// before and after pruning). `W` is the element width (2 or 4). Eight
/// elements (one byte of bits) at a time as `W` words of 64 bits: each word
/// masked by its lanes' bits, and its zero lanes counted without a branch
/// (a lane with its sign cleared is nonzero exactly when adding the
/// all-but-sign value carries into its top bit).
#[inline(always)]
fn mask_chunk<const W: usize>(out: &mut [u8], src: &[u8], bits: &[u8]) -> Zeros {
    let abs: u64 = if W == 2 {
        0x7FFF_7FFF_7FFF_7FFF
    } else {
        0x7FFF_FFFF_7FFF_FFFF
    };
    let top = !abs;
    let lanes = 8 / W;
    // The lane masks of every pattern of `lanes` keep bits.
    let masks: [u64; 16] = std::array::from_fn(|p| {
        (0..lanes)
            .filter(|l| p >> l & 1 == 1)
            .fold(0u64, |m, l| m | (u64::MAX >> (64 - 8 * W)) << (8 * W * l))
    });
    // The top bits of the lanes summed by one multiply (no popcount on the
    // baseline instruction set): each lane's bit moved to its lowest bit,
    // then every lane added into the top lane.
    let low = top >> (8 * W - 1);
    let nonzero = |x: u64| {
        let set = (((x & abs) + abs) & top) >> (8 * W - 1);
        set.wrapping_mul(low) >> (64 - 8 * W)
    };
    let (mut before, mut after) = (0u64, 0u64);
    let groups = out.len() / (8 * W);
    let outs = out.chunks_exact_mut(8 * W);
    for ((o8, s8), &byte) in outs.zip(src.chunks_exact(8 * W)).zip(bits) {
        for i in 0..W {
            let at = 8 * i;
            let word = u64::from_le_bytes(s8[at..at + 8].try_into().expect("8 bytes"));
            let kept = word & masks[(byte as usize >> (lanes * i)) & ((1 << lanes) - 1)];
            before += nonzero(word);
            after += nonzero(kept);
            o8[at..at + 8].copy_from_slice(&kept.to_le_bytes());
        }
    }
    let mut zeros = Zeros {
        before: 8 * groups as u64 - before,
        after: 8 * groups as u64 - after,
    };
    let read = |s: &[u8]| {
        if W == 2 {
            u16::from_le_bytes([s[0], s[1]]) as u32
        } else {
            u32::from_le_bytes([s[0], s[1], s[2], s[3]])
        }
    };
    let sign = abs as u32;
    let done = groups * 8 * W;
    let tail = out[done..]
        .chunks_exact_mut(W)
        .zip(src[done..].chunks_exact(W));
    for (j, (o, s)) in tail.enumerate() {
        let j = done / W + j;
        let keep = 0u32.wrapping_sub(((bits[j / 8] >> (j % 8)) & 1) as u32);
        let x = read(s);
        let k = x & keep;
        zeros.before += (x & sign == 0) as u64;
        zeros.after += (k & sign == 0) as u64;
        o.copy_from_slice(&k.to_le_bytes()[..W]);
    }
    zeros
}

/// A pruned tensor's zero elements (either sign), before and after.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Zeros {
    before: u64,
    after: u64,
}

impl std::ops::Add for Zeros {
    type Output = Zeros;
    fn add(self, o: Zeros) -> Zeros {
        Zeros {
            before: self.before + o.before,
            after: self.after + o.after,
        }
    }
}

impl std::iter::Sum for Zeros {
    fn sum<I: Iterator<Item = Zeros>>(iter: I) -> Zeros {
        iter.fold(Zeros::default(), |a, b| a + b)
    }
}

/// `src` into `out` (as long) with the elements whose keep bit in `bits`
/// is clear set to +0; returns the zeros before and after. For the small
/// tensors of a run (one chunk each).
fn mask_into(out: &mut [u8], src: &[u8], dtype: Dtype, bits: &[u8]) -> Zeros {
    match dtype.width() {
        2 => mask_chunk::<2>(out, src, bits),
        _ => mask_chunk::<4>(out, src, bits),
    }
}

/// Chunks per block written at once.
const BLOCK_CHUNKS: usize = 16;

/// Passes `data` to `put` block by block with the elements whose keep bit
/// is clear set to +0, and returns the zeros before and after. Blocks are
/// filled in parallel into `buf`, reused from tensor to tensor.
fn write_masked(
    data: &[u8],
    dtype: Dtype,
    bits: &[u8],
    buf: &mut Vec<u8>,
    put: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<Zeros> {
    let w = dtype.width();
    let block = CHUNK * BLOCK_CHUNKS * w;
    let mut zeros = Zeros::default();
    for (k, src) in data.chunks(block).enumerate() {
        buf.resize(src.len(), 0);
        let first_bit = k * CHUNK * BLOCK_CHUNKS / 8;
        zeros = zeros
            + buf
                .par_chunks_mut(CHUNK * w)
                .zip(src.par_chunks(CHUNK * w))
                .zip(bits[first_bit..].par_chunks(CHUNK / 8))
                .map(|((out, src), bits)| match w {
                    2 => mask_chunk::<2>(out, src, bits),
                    _ => mask_chunk::<4>(out, src, bits),
                })
                .sum::<Zeros>();
        put(buf)?;
    }
    Ok(zeros)
}

/// What the write pass carries from tensor to tensor.
struct WriteState {
    report: Report,
    /// Ties of the shared cut met so far, in file order.
    seen: u64,
}

/// Prunes the checkpoint into the file `output`, atomically: the data goes
/// to a temporary file beside it, which is synced and then renamed over
/// `output`, so `output` is either untouched or complete. The input is
/// never opened for writing; `output` naming the input is refused unless
/// `in_place`, and an existing `output` is refused unless `overwrite`.
pub fn prune_file<B: Backend + ?Sized>(
    backend: &B,
    checkpoint: &Checkpoint,
    output: &Path,
    options: output::Options,
    request: &Request,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report> {
    output::write_atomic(checkpoint.path(), output, options, |w| {
        prune_to_writer(backend, checkpoint, request, w, output, progress)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The element-at-a-time definition of [`mask_chunk`].
    fn plain<const W: usize>(src: &[u8], bits: &[u8]) -> (Vec<u8>, u64) {
        let mut out = Vec::new();
        let mut zeros = 0;
        for (j, s) in src.chunks_exact(W).enumerate() {
            let keep = bits[j / 8] >> (j % 8) & 1 == 1;
            let v: Vec<u8> = if keep { s.to_vec() } else { vec![0; W] };
            let mut word = [0u8; 4];
            word[..W].copy_from_slice(&v);
            let sign = if W == 2 { 0x7FFF } else { 0x7FFF_FFFF };
            zeros += (u32::from_le_bytes(word) & sign == 0) as u64;
            out.extend(v);
        }
        (out, zeros)
    }

    fn check<const W: usize>() {
        for n in [0usize, 1, 7, 8, 9, 64, 203] {
            let src: Vec<u8> = (0..n * W)
                .map(|i| match i % 11 {
                    0 => 0,
                    3 => 0x80,
                    _ => (i * 37 % 251) as u8,
                })
                .collect();
            let bits: Vec<u8> = (0..n.div_ceil(8)).map(|i| (i * 89 % 256) as u8).collect();
            let mut out = vec![0xAAu8; n * W];
            let zeros = mask_chunk::<W>(&mut out, &src, &bits);
            let (want, after) = plain::<W>(&src, &bits);
            let before = src
                .chunks_exact(W)
                .filter(|s| {
                    let mut word = [0u8; 4];
                    word[..W].copy_from_slice(s);
                    u32::from_le_bytes(word) & if W == 2 { 0x7FFF } else { 0x7FFF_FFFF } == 0
                })
                .count() as u64;
            assert_eq!(
                (out, zeros),
                (want, Zeros { before, after }),
                "n {n}, width {W}"
            );
        }
    }

    #[test]
    fn mask_chunk_matches_the_plain_loop() {
        check::<2>();
        check::<4>();
    }
}
