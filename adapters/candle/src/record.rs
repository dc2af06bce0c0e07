//! The recording linear layer: candle has no forward hooks, so the graphs
//! prunus runs are written with this [`Linear`], and a [`Recorder`] passed
//! through a block's forward pass collects the statistics of every linear
//! layer's inputs ([`LayerStats`]) that the layer-wise methods need.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use prunus_core::Dense;
use prunus_core::contract::dense::Matrix;
use prunus_core::methods::layerwise::LayerStats;

use crate::error::{Error, Result};

/// A linear layer `y = x Wᵀ + b` with `W: [out, in]` as checkpoints store it,
/// named as its weight is in the checkpoint (without `.weight`).
#[derive(Clone, Debug)]
pub struct Linear {
    name: String,
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A layer from its weight `[out, in]` and optional bias `[out]`.
    pub fn new(name: impl Into<String>, weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        let name = name.into();
        let (out, _) = weight.dims2().map_err(|_| {
            Error::request(format!(
                "linear layer {name}: a weight of shape {:?} is not [out, in]",
                weight.dims()
            ))
        })?;
        if let Some(b) = &bias
            && b.dims() != [out]
        {
            return Err(Error::request(format!(
                "linear layer {name}: a bias of shape {:?} for {out} outputs",
                b.dims()
            )));
        }
        Ok(Linear { name, weight, bias })
    }

    /// The checkpoint name of the layer (its weight is `<name>.weight`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[out]`, if the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Replaces the weight (by a pruned one) of the same shape, dtype and
    /// device.
    pub fn set_weight(&mut self, weight: Tensor) -> Result<()> {
        if weight.dims() != self.weight.dims() || weight.dtype() != self.weight.dtype() {
            return Err(Error::request(format!(
                "linear layer {}: a new weight {:?} {:?} for one of {:?} {:?}",
                self.name,
                weight.dims(),
                weight.dtype(),
                self.weight.dims(),
                self.weight.dtype()
            )));
        }
        self.weight = weight;
        Ok(())
    }

    /// Replaces the weight and bias by ones of another shape (a structured
    /// pruning's smaller layer), on the same dtype and device; the bias
    /// must match the new weight's rows.
    pub fn reshape(&mut self, weight: Tensor, bias: Option<Tensor>) -> Result<()> {
        if weight.dtype() != self.weight.dtype() {
            return Err(Error::request(format!(
                "linear layer {}: a new weight of dtype {:?} for one of {:?}",
                self.name,
                weight.dtype(),
                self.weight.dtype()
            )));
        }
        if bias.is_some() != self.bias.is_some() {
            return Err(Error::request(format!(
                "linear layer {}: a bias must stay a bias, and none must stay none",
                self.name
            )));
        }
        *self = Linear::new(self.name.clone(), weight, bias)?;
        Ok(())
    }

    /// `x Wᵀ + b` over the last dimension of `x` (any leading dimensions).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.broadcast_matmul(&self.weight.t()?)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Rows of input a group gathers before one Gram update: large enough that
/// the `XᵀX` product runs at matrix-multiply speed, not per sentence.
const BATCH_ROWS: usize = 2048;

/// Rows a device accumulates in f32 before its sums are folded into the
/// host's f64 statistics: bounds the f32 rounding of long sums (about
/// `√rows · 2⁻²⁴` relative) while copying a Gram matrix back rarely.
const DEVICE_FOLD_ROWS: u64 = 1 << 16;

/// Where a [`Recorder`] accumulates the statistics of its inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatsPlace {
    /// On the host for inputs on the CPU, on their device for inputs on
    /// a GPU.
    #[default]
    Auto,
    /// On the host in f64: every input is copied to the host, its Gram
    /// update done by the recorder's [`Dense`].
    Host,
    /// On the inputs' device in f32 (candle's matrix product for
    /// `XᵀX`), folded into the host's f64 statistics every 65,536 rows
    /// and at the end: no input leaves the device, only the sums do. The
    /// statistics then differ from [`StatsPlace::Host`]'s by f32
    /// rounding (below `1e-6` relative in the tests), which leaves
    /// Wanda's masks as they are but may flip SparseGPT's near-ties.
    Device,
}

/// Sums accumulated on a device since the last fold, in f32.
struct DeviceSums {
    rows: u64,
    sums: Tensor,
    sum_squares: Tensor,
    gram: Option<Tensor>,
}

/// One set of layers reading the same input: their statistics and the rows
/// not yet folded into them (on the host, or on the inputs' device).
struct Group {
    /// The first layer's name, for errors.
    name: String,
    stats: LayerStats,
    pending: Vec<f32>,
    device: Option<DeviceSums>,
}

/// Collects the statistics of linear layers' inputs during forward passes.
///
/// Layers that read the same input (a block's query, key and value; a
/// gated MLP's gate and up projections) share one [`LayerStats`], so a
/// decoder block of a 7B model keeps four Gram matrices, not seven. Only
/// the layers the `wanted` rule accepts are recorded. Input rows are
/// gathered into batches of up to 2,048 before each Gram update;
/// [`Recorder::finish`] folds in the rest and gives the statistics.
pub struct Recorder<'a> {
    dense: &'a dyn Dense,
    gram: bool,
    place: StatsPlace,
    wanted: &'a dyn Fn(&str) -> bool,
    groups: Vec<Group>,
    by_name: BTreeMap<String, usize>,
}

impl<'a> Recorder<'a> {
    /// A recorder that keeps the Gram matrix `XᵀX` when `gram` (SparseGPT,
    /// OBS) or only the per-column sums of squares (Wanda), computing the
    /// Gram updates through `dense`.
    pub fn new(dense: &'a dyn Dense, gram: bool, wanted: &'a dyn Fn(&str) -> bool) -> Self {
        Recorder {
            dense,
            gram,
            place: StatsPlace::Auto,
            wanted,
            groups: Vec::new(),
            by_name: BTreeMap::new(),
        }
    }

    /// The recorder accumulating where `place` says ([`StatsPlace::Auto`]
    /// unless set).
    pub fn with_place(mut self, place: StatsPlace) -> Self {
        self.place = place;
        self
    }

    /// Records `input` (any shape `[..., in]`; every leading index is one
    /// row) as the input of each of `layers`, which must share their width.
    /// Fails on non-finite inputs (on a device, when its sums are folded:
    /// at the latest in [`Recorder::finish`]).
    pub fn record(&mut self, layers: &[&Linear], input: &Tensor) -> Result<()> {
        let wanted: Vec<&Linear> = layers
            .iter()
            .copied()
            .filter(|l| (self.wanted)(l.name()))
            .collect();
        let Some(first) = wanted.first() else {
            return Ok(());
        };
        let columns = first.weight.dim(1)?;
        if input.dims().last() != Some(&columns) {
            return Err(Error::request(format!(
                "linear layer {}: an input of shape {:?} for {columns} inputs",
                first.name(),
                input.dims()
            )));
        }
        let on_device = match self.place {
            StatsPlace::Auto => !input.device().is_cpu(),
            StatsPlace::Host => false,
            StatsPlace::Device => true,
        };
        let group = match self.by_name.get(first.name()) {
            Some(&g) => g,
            None => {
                self.groups.push(Group {
                    name: first.name().to_string(),
                    stats: LayerStats::new(columns, self.gram)?,
                    pending: Vec::new(),
                    device: None,
                });
                let g = self.groups.len() - 1;
                for l in &wanted {
                    self.by_name.insert(l.name().to_string(), g);
                }
                g
            }
        };
        let g = &mut self.groups[group];
        if on_device {
            return accumulate(g, input, columns, self.gram);
        }
        let x: Vec<f32> = input
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if x.iter().any(|v| !v.is_finite()) {
            return Err(not_finite(&g.name));
        }
        g.pending.extend_from_slice(&x);
        if g.pending.len() >= BATCH_ROWS * columns {
            flush(self.dense, g)?;
        }
        Ok(())
    }

    /// Bytes the statistics will hold (f64 Gram matrices, sums and sums of
    /// squares).
    pub fn bytes(&self) -> u64 {
        self.groups.iter().map(|g| stats_bytes(&g.stats)).sum()
    }

    /// Folds the rows still gathered into the statistics and gives them.
    pub fn finish(mut self) -> Result<Recorded> {
        for g in &mut self.groups {
            flush(self.dense, g)?;
        }
        Ok(Recorded {
            groups: self.groups.into_iter().map(|g| g.stats).collect(),
            by_name: self.by_name,
        })
    }
}

fn not_finite(layer: &str) -> Error {
    Error::request(format!(
        "linear layer {layer}: its input holds NaN or infinity (the model overflows on \
         this text, or its weights are not finite)"
    ))
}

/// Folds the rows gathered on the host, and the sums accumulated on a
/// device, into the group's statistics.
fn flush(dense: &dyn Dense, g: &mut Group) -> Result<()> {
    let columns = g.stats.columns();
    if !g.pending.is_empty() {
        g.stats
            .push_with(dense, &g.pending, g.pending.len() / columns)?;
        g.pending.clear();
    }
    fold(g)
}

/// Adds `input`'s rows to the group's f32 sums on the input's device.
fn accumulate(g: &mut Group, input: &Tensor, columns: usize, gram: bool) -> Result<()> {
    let rows = input.elem_count() / columns;
    if rows == 0 {
        return Ok(());
    }
    let x = input.to_dtype(DType::F32)?.reshape((rows, columns))?;
    let sums = x.sum(0)?;
    let sum_squares = x.sqr()?.sum(0)?;
    let xtx = if gram { Some(x.t()?.matmul(&x)?) } else { None };
    g.device = Some(match g.device.take() {
        None => DeviceSums {
            rows: rows as u64,
            sums,
            sum_squares,
            gram: xtx,
        },
        Some(d) => DeviceSums {
            rows: d.rows + rows as u64,
            sums: (d.sums + sums)?,
            sum_squares: (d.sum_squares + sum_squares)?,
            gram: match (d.gram, xtx) {
                (Some(a), Some(b)) => Some((a + b)?),
                _ => None,
            },
        },
    });
    if g.device
        .as_ref()
        .is_some_and(|d| d.rows >= DEVICE_FOLD_ROWS)
    {
        fold(g)?;
    }
    Ok(())
}

/// Copies the device's sums back and adds them, in f64, to the host's.
fn fold(g: &mut Group) -> Result<()> {
    let Some(d) = g.device.take() else {
        return Ok(());
    };
    let columns = g.stats.columns();
    let host = |t: &Tensor| -> Result<Vec<f64>> {
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(not_finite(&g.name));
        }
        Ok(v.into_iter().map(f64::from).collect())
    };
    let gram = match &d.gram {
        Some(t) => Some(Matrix::new(columns, columns, host(t)?)?),
        None => None,
    };
    let part = LayerStats::from_sums(d.rows, host(&d.sum_squares)?, gram)?
        .with_column_sums(host(&d.sums)?)?;
    g.stats.merge(&part)?;
    Ok(())
}

fn stats_bytes(s: &LayerStats) -> u64 {
    let c = s.columns() as u64;
    16 * c + if s.gram().is_some() { 8 * c * c } else { 0 }
}

/// The statistics a [`Recorder`] collected, by layer name.
pub struct Recorded {
    groups: Vec<LayerStats>,
    by_name: BTreeMap<String, usize>,
}

impl Recorded {
    /// The statistics recorded for the layer called `name`.
    pub fn stats(&self, name: &str) -> Option<&LayerStats> {
        self.by_name.get(name).map(|&g| &self.groups[g])
    }

    /// The names of the recorded layers, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Bytes held by the statistics (f64 Gram matrices and sums).
    pub fn bytes(&self) -> u64 {
        self.groups.iter().map(stats_bytes).sum()
    }
}

/// Records `input` for `layers` when a recorder is present: the one line a
/// graph writes before the layers that read `input`.
pub fn record(
    recorder: &mut Option<&mut Recorder<'_>>,
    layers: &[&Linear],
    input: &Tensor,
) -> Result<()> {
    match recorder {
        Some(r) => r.record(layers, input),
        None => Ok(()),
    }
}
