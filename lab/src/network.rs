//! The lab's reference networks: MLPs and small CNNs with exact backprop,
//! exact Hessian-vector products and per-sample gradients.
//!
//! A network is a sequence of [`Op`]s over one sample's activations, stored
//! channel-major (`c x h x w`, flattened). Samples are processed in fixed
//! chunks of [`CHUNK`] on the rayon pool and their contributions summed in
//! chunk order, so every result is the same on any number of threads.
//!
//! The Hessian-vector product is Pearlmutter's R-operator: one forward pass
//! that carries the directional derivative of every activation along `v`,
//! and one backward pass that carries the directional derivative of every
//! back-propagated error. ReLU and max pooling are piecewise linear, so the
//! only curvature comes from the weights entering twice and from the
//! softmax; the product is exact wherever the network is differentiable.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use prunus_core::host::{Coupling, Parameter, ParameterKind};
use prunus_core::methods::forward::compaction::{CompactionPlan, Fold, UnitSelection};
use prunus_core::{Mask, Shape, Tap};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::synthetic::gaussian;

/// Samples per unit of parallel work; contributions are summed in this
/// fixed order whatever the thread count.
pub const CHUNK: usize = 16;

/// One step of a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `z = s ⊙ (W x + b)` with `W` of `[outputs, inputs]`.
    Linear {
        /// The weight's parameter index.
        weight: usize,
        /// The bias's parameter index.
        bias: Option<usize>,
        /// Inputs per sample.
        inputs: usize,
        /// Outputs per sample.
        outputs: usize,
    },
    /// A 3x3 convolution, stride 1, zero padding 1 (the image keeps its
    /// size), kernel `[out, in, 3, 3]`, then per-filter scale and bias.
    Conv3x3 {
        /// The kernel's parameter index.
        weight: usize,
        /// The bias's parameter index.
        bias: Option<usize>,
        /// Input channels.
        channels_in: usize,
        /// Output channels (filters).
        channels_out: usize,
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
    },
    /// `max(x, 0)` over `len` values.
    Relu {
        /// Values per sample.
        len: usize,
    },
    /// 2x2 max pooling, stride 2, over `channels x height x width` (odd
    /// edges dropped). Ties go to the first position in the window.
    MaxPool2 {
        /// Channels.
        channels: usize,
        /// Input height.
        height: usize,
        /// Input width.
        width: usize,
    },
}

impl Op {
    /// Values per sample of the op's output.
    fn outputs(&self) -> usize {
        match *self {
            Op::Linear { outputs, .. } => outputs,
            Op::Conv3x3 {
                channels_out,
                height,
                width,
                ..
            } => channels_out * height * width,
            Op::Relu { len } => len,
            Op::MaxPool2 {
                channels,
                height,
                width,
            } => channels * (height / 2) * (width / 2),
        }
    }

    /// Values per sample of each unit of the op's output (a channel's
    /// `h * w` positions for a conv).
    fn per_unit(&self) -> usize {
        match *self {
            Op::Conv3x3 { height, width, .. } => height * width,
            _ => 1,
        }
    }

    /// The weight parameter of a linear or conv op.
    fn weight(&self) -> Option<usize> {
        match *self {
            Op::Linear { weight, .. } | Op::Conv3x3 { weight, .. } => Some(weight),
            _ => None,
        }
    }
}

/// A feed-forward classifier with its parameters, masks and unit scales.
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    name: String,
    input: [usize; 3],
    classes: usize,
    ops: Vec<Op>,
    info: Vec<Parameter>,
    params: Vec<Vec<f32>>,
    masks: Vec<Option<Mask>>,
    /// The masks unpacked to one flag per entry: every training step zeroes
    /// pruned entries twice, and flags make that a vectorised select.
    keep: Vec<Option<Vec<bool>>>,
    /// Per parameter (set on weights only): the per-unit output scales.
    scales: Vec<Option<Vec<f32>>>,
}

/// Where a layer being built reads from: `(channels, height, width)`.
type Dims = [usize; 3];

/// Builds a network op by op, creating its parameters.
struct Builder {
    ops: Vec<Op>,
    info: Vec<Parameter>,
    dims: Dims,
    layer: usize,
}

impl Builder {
    fn new(input: Dims) -> Self {
        Builder {
            ops: Vec::new(),
            info: Vec::new(),
            dims: input,
            layer: 0,
        }
    }

    fn param(&mut self, name: String, dims: &[usize], kind: ParameterKind) -> Result<usize> {
        self.info.push(Parameter {
            name,
            shape: Shape::new(dims)?,
            kind,
            layer: self.layer,
            prunable: kind == ParameterKind::Weight,
            coupling: None,
        });
        Ok(self.info.len() - 1)
    }

    /// Couples the previous weight layer to the weight `consumer`.
    fn couple(&mut self, consumer: usize, inputs_per_unit: usize) {
        let previous = self
            .ops
            .iter()
            .rev()
            .filter_map(Op::weight)
            .find(|&w| w != consumer);
        if let Some(p) = previous {
            self.info[p].coupling = Some(Coupling {
                consumer,
                inputs_per_unit,
            });
        }
    }

    fn linear(&mut self, name: &str, outputs: usize, bias: bool) -> Result<()> {
        let inputs = self.dims.iter().product();
        let per_unit = self.dims[1] * self.dims[2];
        let weight = self.param(
            format!("{name}.weight"),
            &[outputs, inputs],
            ParameterKind::Weight,
        )?;
        let bias = bias
            .then(|| self.param(format!("{name}.bias"), &[outputs], ParameterKind::Bias))
            .transpose()?;
        self.couple(weight, per_unit);
        self.ops.push(Op::Linear {
            weight,
            bias,
            inputs,
            outputs,
        });
        self.dims = [outputs, 1, 1];
        self.layer += 1;
        Ok(())
    }

    fn conv(&mut self, name: &str, channels_out: usize, bias: bool) -> Result<()> {
        let [channels_in, height, width] = self.dims;
        let weight = self.param(
            format!("{name}.weight"),
            &[channels_out, channels_in, 3, 3],
            ParameterKind::Weight,
        )?;
        let bias = bias
            .then(|| self.param(format!("{name}.bias"), &[channels_out], ParameterKind::Bias))
            .transpose()?;
        self.couple(weight, 9);
        self.ops.push(Op::Conv3x3 {
            weight,
            bias,
            channels_in,
            channels_out,
            height,
            width,
        });
        self.dims = [channels_out, height, width];
        self.layer += 1;
        Ok(())
    }

    fn relu(&mut self) {
        self.ops.push(Op::Relu {
            len: self.dims.iter().product(),
        });
    }

    fn pool(&mut self) {
        let [channels, height, width] = self.dims;
        self.ops.push(Op::MaxPool2 {
            channels,
            height,
            width,
        });
        self.dims = [channels, height / 2, width / 2];
    }

    /// The network, the last weight (the classifier) left unprunable, with
    /// Kaiming-normal weights (std `sqrt(2 / fan_in)`) and zero biases.
    fn finish(mut self, input: Dims, seed: u64) -> Result<Network> {
        let name = describe(input, &self.ops);
        let classes = self.dims[0];
        if let Some(last) = self.ops.iter().rev().find_map(Op::weight) {
            self.info[last].prunable = false;
        }
        let params = self
            .info
            .iter()
            .enumerate()
            .map(|(i, p)| match p.kind {
                ParameterKind::Weight => {
                    let fan_in = p.shape.matrix_view().1.max(1);
                    let std = (2.0 / fan_in as f32).sqrt();
                    (0..p.shape.numel() as u64)
                        .map(|j| gaussian(seed, i as u32, j) * std)
                        .collect()
                }
                _ => vec![0.0; p.shape.numel()],
            })
            .collect();
        let n = self.info.len();
        Ok(Network {
            name,
            input,
            classes,
            ops: self.ops,
            info: self.info,
            params,
            masks: vec![None; n],
            keep: vec![None; n],
            scales: vec![None; n],
        })
    }
}

/// A network's name from its ops: `mlp 784-300-100-10`, or `cnn 1x28x28
/// conv8-16 fc10`.
fn describe(input: Dims, ops: &[Op]) -> String {
    let join = |v: Vec<usize>| v.iter().map(usize::to_string).collect::<Vec<_>>().join("-");
    let convs: Vec<usize> = ops
        .iter()
        .filter_map(|op| match *op {
            Op::Conv3x3 { channels_out, .. } => Some(channels_out),
            _ => None,
        })
        .collect();
    let linears: Vec<usize> = ops
        .iter()
        .filter_map(|op| match *op {
            Op::Linear { outputs, .. } => Some(outputs),
            _ => None,
        })
        .collect();
    if convs.is_empty() {
        format!("mlp {}-{}", input.iter().product::<usize>(), join(linears))
    } else {
        let [c, h, w] = input;
        format!("cnn {c}x{h}x{w} conv{} fc{}", join(convs), join(linears))
    }
}

/// The settings of the lab's small CNN: `conv3x3(c1) relu pool2,
/// conv3x3(c2) relu pool2, ..., linear(classes)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CnnSpec {
    /// Input `(channels, height, width)`.
    pub input: [usize; 3],
    /// Filters of each conv layer.
    pub channels: Vec<usize>,
    /// Output classes.
    pub classes: usize,
    /// Whether layers have biases.
    pub bias: bool,
}

impl Network {
    /// An MLP with ReLU between layers: `widths[0]` inputs, then one linear
    /// layer per further width, the last being the classifier (named
    /// `fc1`, `fc2`, ...). Its input is an image of `input` dims whose
    /// product is `widths[0]`, or `[widths[0], 1, 1]`.
    ///
    /// ```
    /// use prunus_lab::network::Network;
    /// let net = Network::mlp(&[784, 40, 20, 10], false, 0)?;
    /// assert_eq!(net.parameter_count(), 784 * 40 + 40 * 20 + 20 * 10);
    /// assert_eq!(net.name(), "mlp 784-40-20-10");
    /// # Ok::<(), prunus_lab::Error>(())
    /// ```
    pub fn mlp(widths: &[usize], bias: bool, seed: u64) -> Result<Network> {
        if widths.len() < 2 || widths.contains(&0) {
            return Err(Error::InvalidSetting {
                name: "widths",
                value: format!("{widths:?}"),
                expected: "at least an input and an output width, none zero".into(),
            });
        }
        let input = [widths[0], 1, 1];
        let mut b = Builder::new(input);
        let last = widths.len() - 2;
        for (i, &w) in widths[1..].iter().enumerate() {
            b.linear(&format!("fc{}", i + 1), w, bias)?;
            if i < last {
                b.relu();
            }
        }
        b.finish(input, seed)
    }

    /// The small CNN of `spec` (conv layers `conv1`, `conv2`, ..., then
    /// `fc`); its filters are prunable, the classifier is not.
    ///
    /// ```
    /// use prunus_lab::network::{CnnSpec, Network};
    /// let spec = CnnSpec { input: [1, 28, 28], channels: vec![8, 16], classes: 10, bias: true };
    /// let net = Network::cnn(&spec, 0)?;
    /// assert_eq!(net.parameter_count(), 8 * 9 + 8 + 16 * 8 * 9 + 16 + 16 * 7 * 7 * 10 + 10);
    /// # Ok::<(), prunus_lab::Error>(())
    /// ```
    pub fn cnn(spec: &CnnSpec, seed: u64) -> Result<Network> {
        let bad = |expected: &str| Error::InvalidSetting {
            name: "cnn",
            value: format!("{spec:?}"),
            expected: expected.into(),
        };
        if spec.input.contains(&0) || spec.classes == 0 || spec.channels.contains(&0) {
            return Err(bad("no zero size"));
        }
        let mut b = Builder::new(spec.input);
        for (i, &c) in spec.channels.iter().enumerate() {
            if b.dims[1] < 2 || b.dims[2] < 2 {
                return Err(bad("an image large enough to pool after every conv layer"));
            }
            b.conv(&format!("conv{}", i + 1), c, spec.bias)?;
            b.relu();
            b.pool();
        }
        b.linear("fc", spec.classes, spec.bias)?;
        b.finish(spec.input, seed)
    }

    /// A short description, e.g. `mlp 784-40-20-10`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The input dims `(channels, height, width)`.
    pub fn input(&self) -> [usize; 3] {
        self.input
    }

    /// Values per input sample.
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    /// Output classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The parameters and their structure.
    pub fn parameters(&self) -> &[Parameter] {
        &self.info
    }

    /// The values of every parameter.
    pub fn values(&self) -> &[Vec<f32>] {
        &self.params
    }

    /// The values of parameter `index`.
    pub fn param(&self, index: usize) -> Result<&[f32]> {
        self.check_index(index)?;
        Ok(&self.params[index])
    }

    /// Total number of parameters.
    pub fn parameter_count(&self) -> usize {
        self.params.iter().map(Vec::len).sum()
    }

    /// The masks in force, one per parameter.
    pub fn masks(&self) -> &[Option<Mask>] {
        &self.masks
    }

    fn check_index(&self, index: usize) -> Result<()> {
        if index >= self.params.len() {
            return Err(Error::InvalidSetting {
                name: "parameter",
                value: index.to_string(),
                expected: format!("an index below {}", self.params.len()),
            });
        }
        Ok(())
    }

    /// Replaces parameter `index`'s values; masked entries stay zero.
    /// Non-finite values are refused.
    pub fn set_param(&mut self, index: usize, values: &[f32]) -> Result<()> {
        self.check_index(index)?;
        prunus_core::contract::check::same_len(
            "parameter values",
            self.params[index].len(),
            values.len(),
        )?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(prunus_core::Error::NonFinite {
                what: "parameter values",
            }
            .into());
        }
        self.params[index].copy_from_slice(values);
        self.enforce_mask(index);
        Ok(())
    }

    /// Sets one keep-mask per parameter (`None` keeps all) and zeroes the
    /// pruned weights.
    pub fn set_masks(&mut self, masks: &[Option<Mask>]) -> Result<()> {
        prunus_core::contract::check::same_len("masks", self.params.len(), masks.len())?;
        for (p, m) in self.info.iter().zip(masks) {
            if let Some(m) = m {
                prunus_core::contract::check::same_shape(
                    "mask",
                    &p.shape,
                    prunus_core::HasShape::shape(m),
                )?;
            }
        }
        self.masks = masks.to_vec();
        self.keep = masks
            .iter()
            .map(|m| m.as_ref().map(|m| (0..m.len()).map(|i| m.get(i)).collect()))
            .collect();
        for i in 0..self.params.len() {
            self.enforce_mask(i);
        }
        Ok(())
    }

    /// Sets per-unit output scales of the layer of weight `index` (`None`
    /// restores 1).
    pub fn set_unit_scales(&mut self, index: usize, scales: Option<&[f32]>) -> Result<()> {
        self.check_index(index)?;
        let p = &self.info[index];
        if p.kind != ParameterKind::Weight {
            return Err(Error::InvalidSetting {
                name: "unit scales",
                value: p.name.clone(),
                expected: "a weight parameter".into(),
            });
        }
        if let Some(s) = scales {
            prunus_core::contract::check::same_len("unit scales", p.units(), s.len())?;
            if s.iter().any(|v| !v.is_finite()) {
                return Err(prunus_core::Error::NonFinite {
                    what: "unit scales",
                }
                .into());
            }
        }
        self.scales[index] = scales.map(<[f32]>::to_vec);
        Ok(())
    }

    /// The smaller dense network this one computes: every layer with unit
    /// scales loses the units whose scale is 0 (and their inputs to the
    /// next layer), and the other scales are folded as `fold` says
    /// ([`prunus_core::methods::forward::compaction`]). Masks are compacted alike; the result
    /// has no unit scales. Its outputs equal this network's up to float
    /// rounding ([`Fold::Consumer`] needs scales `>= 0`, which ReLU and max
    /// pooling commute with).
    pub fn compacted(&self, fold: Fold) -> Result<Network> {
        let selections: Vec<UnitSelection> = self
            .scales
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| UnitSelection::from_scales(i, s.clone())))
            .collect();
        let plan = CompactionPlan::new(&self.info, &selections, fold)?;
        let info = plan.parameters(&self.info)?;
        let params = plan.apply(&self.params)?;
        let masks: Vec<Option<Mask>> = self
            .masks
            .iter()
            .enumerate()
            .map(|(i, m)| m.as_ref().map(|m| plan.mask(i, m)).transpose())
            .collect::<prunus_core::Result<_>>()?;
        let mut dims = self.input;
        let mut ops = Vec::with_capacity(self.ops.len());
        for op in &self.ops {
            let new = match *op {
                Op::Linear { weight, bias, .. } => {
                    let (outputs, inputs) = info[weight].shape.matrix_view();
                    Op::Linear {
                        weight,
                        bias,
                        inputs,
                        outputs,
                    }
                }
                Op::Conv3x3 {
                    weight,
                    bias,
                    height,
                    width,
                    ..
                } => Op::Conv3x3 {
                    weight,
                    bias,
                    channels_in: info[weight].shape.dims()[1],
                    channels_out: info[weight].shape.dims()[0],
                    height,
                    width,
                },
                Op::Relu { .. } => Op::Relu {
                    len: dims.iter().product(),
                },
                Op::MaxPool2 { height, width, .. } => Op::MaxPool2 {
                    channels: dims[0],
                    height,
                    width,
                },
            };
            dims = match new {
                Op::Linear {
                    inputs, outputs, ..
                } => {
                    prunus_core::contract::check::same_len(
                        "compacted layer inputs",
                        dims.iter().product(),
                        inputs,
                    )?;
                    [outputs, 1, 1]
                }
                Op::Conv3x3 {
                    channels_in,
                    channels_out,
                    height,
                    width,
                    ..
                } => {
                    prunus_core::contract::check::same_len(
                        "compacted conv channels",
                        dims[0],
                        channels_in,
                    )?;
                    [channels_out, height, width]
                }
                Op::MaxPool2 {
                    channels,
                    height,
                    width,
                } => [channels, height / 2, width / 2],
                Op::Relu { .. } => dims,
            };
            ops.push(new);
        }
        let n = info.len();
        let mut net = Network {
            name: describe(self.input, &ops),
            input: self.input,
            classes: self.classes,
            ops,
            info,
            params,
            masks: vec![None; n],
            keep: vec![None; n],
            scales: vec![None; n],
        };
        net.set_masks(&masks)?;
        Ok(net)
    }

    /// Zeroes the masked entries of parameter `i`.
    pub(crate) fn enforce_mask(&mut self, i: usize) {
        if let Some(k) = &self.keep[i] {
            zero_pruned(&mut self.params[i], k);
        }
    }

    /// Zeroes the masked entries of a buffer laid out like the parameters.
    pub(crate) fn mask_buffers(&self, x: &mut [Vec<f32>]) {
        for (xi, k) in x.iter_mut().zip(&self.keep) {
            if let Some(k) = k {
                zero_pruned(xi, k);
            }
        }
    }

    pub(crate) fn params_mut(&mut self) -> &mut [Vec<f32>] {
        &mut self.params
    }

    fn check_batch(&self, x: &[f32], labels: &[u8]) -> Result<()> {
        let n = labels.len();
        prunus_core::contract::check::same_len("input values", n * self.input_len(), x.len())?;
        if let Some(&bad) = labels.iter().find(|&&y| usize::from(y) >= self.classes) {
            return Err(Error::InvalidSetting {
                name: "label",
                value: bad.to_string(),
                expected: format!("a class below {}", self.classes),
            });
        }
        Ok(())
    }

    /// Runs `what` over `x` (`labels.len()` samples) in chunks and sums the
    /// chunks' results in order. Gradients are of the mean loss.
    pub fn pass(
        &self,
        x: &[f32],
        labels: &[u8],
        temperature: f32,
        what: Want<'_>,
    ) -> Result<PassResult> {
        self.check_batch(x, labels)?;
        let n = labels.len();
        if n == 0 {
            return Err(prunus_core::Error::EmptyTensor {
                layer: "batch (no sample)".into(),
            }
            .into());
        }
        if let Want::HessianVector(v) = what {
            prunus_core::contract::check::same_len(
                "vector parameters",
                self.params.len(),
                v.len(),
            )?;
            for (p, vi) in self.params.iter().zip(v) {
                prunus_core::contract::check::same_len("vector entries", p.len(), vi.len())?;
            }
        }
        let d = self.input_len();
        let scale = 1.0 / n as f32;
        let parts: Vec<PassResult> = labels
            .par_chunks(CHUNK)
            .zip(x.par_chunks(CHUNK * d))
            .map(|(y, xs)| self.chunk(xs, y, temperature, scale, what))
            .collect();
        let mut total = PassResult::empty(self, what);
        for p in parts {
            total.add(&p);
        }
        if let Some(g) = total.gradient.as_mut() {
            self.mask_buffers(g);
        }
        if let Some(h) = total.hessian_vector.as_mut() {
            self.mask_buffers(h);
        }
        let nonfinite = |b: &Option<Vec<Vec<f32>>>| {
            b.as_ref()
                .is_some_and(|b| b.iter().flatten().any(|v| !v.is_finite()))
        };
        if !total.loss.is_finite() || nonfinite(&total.gradient) || nonfinite(&total.hessian_vector)
        {
            return Err(prunus_core::Error::NonFinite {
                what: "loss or derivatives (the network diverged)",
            }
            .into());
        }
        Ok(total)
    }

    /// Per-sample gradients of the parameters listed: a `samples x d`
    /// row-major matrix, `d` the parameters' total size in the order listed.
    pub fn per_sample_gradients(
        &self,
        x: &[f32],
        labels: &[u8],
        temperature: f32,
        parameters: &[usize],
    ) -> Result<Vec<f32>> {
        self.check_batch(x, labels)?;
        for &p in parameters {
            self.check_index(p)?;
        }
        let d: usize = parameters.iter().map(|&p| self.params[p].len()).sum();
        let len = self.input_len();
        let mut out = vec![0.0; labels.len() * d];
        if d == 0 {
            return Ok(out);
        }
        out.par_chunks_mut(d).enumerate().for_each(|(s, row)| {
            let part = self.chunk(
                &x[s * len..(s + 1) * len],
                &labels[s..s + 1],
                temperature,
                1.0,
                Want::Gradient,
            );
            let mut g = part.gradient.unwrap_or_default();
            self.mask_buffers(&mut g);
            let mut at = 0;
            for &p in parameters {
                row[at..at + g[p].len()].copy_from_slice(&g[p]);
                at += g[p].len();
            }
        });
        if out.iter().any(|v| !v.is_finite()) {
            return Err(prunus_core::Error::NonFinite {
                what: "per-sample gradients",
            }
            .into());
        }
        Ok(out)
    }

    /// The outputs `tap` names, one buffer of `samples x width` per layer,
    /// with the weight parameter of that layer: every ReLU's output (the
    /// hidden layers after their nonlinearity) for [`Tap::Output`], every
    /// linear or conv op's output (after bias and unit scales) for
    /// [`Tap::PreActivation`].
    pub fn activations(
        &self,
        x: &[f32],
        labels: &[u8],
        tap: Tap,
    ) -> Result<Vec<(usize, usize, Vec<f32>)>> {
        self.check_batch(x, labels)?;
        let d = self.input_len();
        // `(op, weight, width)` of each tapped op. Each ReLU ends a hidden
        // layer; its weight is the last one before it.
        let hidden: Vec<(usize, usize, usize)> = match tap {
            Tap::Output => self
                .ops
                .iter()
                .enumerate()
                .filter_map(|(i, op)| match op {
                    Op::Relu { len } => self.ops[..i]
                        .iter()
                        .rev()
                        .find_map(Op::weight)
                        .map(|w| (i, w, *len)),
                    _ => None,
                })
                .collect(),
            Tap::PreActivation => self
                .ops
                .iter()
                .enumerate()
                .filter_map(|(i, op)| op.weight().map(|w| (i, w, op.outputs())))
                .collect(),
            _ => {
                return Err(Error::InvalidSetting {
                    name: "tap",
                    value: format!("{tap:?}"),
                    expected: "Output or PreActivation".into(),
                });
            }
        };
        let parts: Vec<Vec<Vec<f32>>> = x
            .par_chunks(CHUNK * d)
            .map(|xs| {
                let trace = self.forward(xs, xs.len() / d, None);
                hidden
                    .iter()
                    .map(|&(i, _, _)| trace.output_of(i).to_vec())
                    .collect()
            })
            .collect();
        Ok(hidden
            .iter()
            .enumerate()
            .map(|(k, &(_, w, width))| {
                let values = parts.iter().flat_map(|p| p[k].iter().copied()).collect();
                (w, width, values)
            })
            .collect())
    }

    /// The summed loss (at `temperature`) and the correct count over `x`
    /// (`labels.len()` samples) with each of `candidates` as the unit
    /// scales of the layer of weight `weight`, in place of its own. The
    /// work before that layer's scales is done once; the results equal
    /// [`Network::pass`]'s with the scales set, bit for bit (the same
    /// chunks, summed in the same order).
    pub fn evaluate_unit_scales(
        &self,
        x: &[f32],
        labels: &[u8],
        temperature: f32,
        weight: usize,
        candidates: &[Vec<f32>],
    ) -> Result<Vec<(f64, usize)>> {
        self.check_batch(x, labels)?;
        self.check_index(weight)?;
        let Some(at) = self.ops.iter().position(|op| op.weight() == Some(weight)) else {
            return Err(Error::InvalidSetting {
                name: "unit scales",
                value: self.info[weight].name.clone(),
                expected: "a weight parameter".into(),
            });
        };
        let units = self.info[weight].units();
        for c in candidates {
            prunus_core::contract::check::same_len("unit scales", units, c.len())?;
            if c.iter().any(|v| !v.is_finite()) {
                return Err(prunus_core::Error::NonFinite {
                    what: "unit scales",
                }
                .into());
            }
        }
        if labels.is_empty() {
            return Err(prunus_core::Error::EmptyTensor {
                layer: "batch (no sample)".into(),
            }
            .into());
        }
        let d = self.input_len();
        let per_unit = self.ops[at].per_unit();
        let prefixes: Vec<Vec<f32>> = x
            .par_chunks(CHUNK * d)
            .map(|xs| self.run_ops(0..at + 1, xs.to_vec(), xs.len() / d, Some(at)))
            .collect();
        let results: Vec<(f64, usize)> = candidates
            .par_iter()
            .map_with(Vec::with_capacity(self.classes), |p, scales| {
                let mut loss = 0.0;
                let mut correct = 0;
                for (z, y) in prefixes.iter().zip(labels.chunks(CHUNK)) {
                    let mut z = z.clone();
                    scale_units(&mut z, scales, per_unit);
                    let logits = self.run_ops(at + 1..self.ops.len(), z, y.len(), None);
                    let mut chunk_loss = 0.0;
                    for (s, &label) in y.iter().enumerate() {
                        let zs = &logits[s * self.classes..(s + 1) * self.classes];
                        let (l, ok, _) = sample_loss(zs, label, temperature, p);
                        chunk_loss += l;
                        correct += usize::from(ok);
                    }
                    loss += chunk_loss;
                }
                (loss, correct)
            })
            .collect();
        if results.iter().any(|(l, _)| !l.is_finite()) {
            return Err(prunus_core::Error::NonFinite {
                what: "loss (the network diverged)",
            }
            .into());
        }
        Ok(results)
    }

    /// Forward pass over `n` samples, with the tangent along `v` when given.
    fn forward(&self, x: &[f32], n: usize, v: Option<&[Vec<f32>]>) -> Trace {
        let mut inputs = Vec::with_capacity(self.ops.len() + 1);
        let mut tangents = Vec::with_capacity(self.ops.len() + 1);
        let mut argmax = Vec::with_capacity(self.ops.len());
        inputs.push(x.to_vec());
        tangents.push(v.map(|_| vec![0.0; x.len()]));
        for op in &self.ops {
            let a = inputs.last().expect("the input is pushed first");
            let ra = tangents.last().expect("the input is pushed first").as_ref();
            let (out, rout, arg) = self.op_forward(op, a, ra.map(Vec::as_slice), v, n, true);
            inputs.push(out);
            tangents.push(rout);
            argmax.push(arg);
        }
        Trace {
            inputs,
            tangents,
            argmax,
        }
    }

    /// The outputs of ops `ops` (no tangents) from their input `a`, over
    /// `n` samples; the op at `unscaled` leaves out its unit scales.
    fn run_ops(
        &self,
        ops: std::ops::Range<usize>,
        a: Vec<f32>,
        n: usize,
        unscaled: Option<usize>,
    ) -> Vec<f32> {
        ops.fold(a, |a, i| {
            self.op_forward(&self.ops[i], &a, None, None, n, Some(i) != unscaled)
                .0
        })
    }

    /// One op's output over `n` samples of its input `a`, the output's
    /// tangent when `v` and `ra` are given, and pooling's argmax. Unit
    /// scales apply when `scaled`.
    #[allow(clippy::type_complexity)]
    fn op_forward(
        &self,
        op: &Op,
        a: &[f32],
        ra: Option<&[f32]>,
        v: Option<&[Vec<f32>]>,
        n: usize,
        scaled: bool,
    ) -> (Vec<f32>, Option<Vec<f32>>, Option<Vec<u32>>) {
        match *op {
            Op::Linear {
                weight,
                bias,
                inputs: k,
                outputs: m,
            } => {
                let w = &self.params[weight];
                let b = bias.map(|b| self.params[b].as_slice());
                let mut z = linear_forward(a, w, b, n, k, m);
                let mut rz = v.map(|v| {
                    let mut rz =
                        linear_forward(a, &v[weight], bias.map(|b| v[b].as_slice()), n, k, m);
                    if let Some(ra) = ra {
                        add(&mut rz, &linear_forward(ra, w, None, n, k, m));
                    }
                    rz
                });
                if let Some(s) = self.scales[weight].as_ref().filter(|_| scaled) {
                    scale_units(&mut z, s, 1);
                    if let Some(rz) = rz.as_mut() {
                        scale_units(rz, s, 1);
                    }
                }
                (z, rz, None)
            }
            Op::Conv3x3 {
                weight,
                bias,
                channels_in,
                channels_out,
                height,
                width,
            } => {
                let g = ConvGeometry {
                    cin: channels_in,
                    cout: channels_out,
                    h: height,
                    w: width,
                };
                let w = &self.params[weight];
                let b = bias.map(|b| self.params[b].as_slice());
                let mut z = g.forward(a, w, b, n);
                let mut rz = v.map(|v| {
                    let mut rz = g.forward(a, &v[weight], bias.map(|b| v[b].as_slice()), n);
                    if let Some(ra) = ra {
                        add(&mut rz, &g.forward(ra, w, None, n));
                    }
                    rz
                });
                if let Some(s) = self.scales[weight].as_ref().filter(|_| scaled) {
                    scale_units(&mut z, s, height * width);
                    if let Some(rz) = rz.as_mut() {
                        scale_units(rz, s, height * width);
                    }
                }
                (z, rz, None)
            }
            Op::Relu { .. } => {
                let z: Vec<f32> = a.iter().map(|&x| x.max(0.0)).collect();
                let rz = ra.map(|ra| {
                    a.iter()
                        .zip(ra)
                        .map(|(&x, &r)| if x > 0.0 { r } else { 0.0 })
                        .collect()
                });
                (z, rz, None)
            }
            Op::MaxPool2 {
                channels,
                height,
                width,
            } => {
                let (z, arg) = max_pool(a, n, channels, height, width);
                let rz = ra.map(|ra| arg.iter().map(|&i| ra[i as usize]).collect());
                (z, rz, Some(arg))
            }
        }
    }

    /// Loss, accuracy and the requested derivatives of one chunk; `scale`
    /// multiplies the derivatives (1/N for the mean over N samples).
    fn chunk(
        &self,
        x: &[f32],
        labels: &[u8],
        temperature: f32,
        scale: f32,
        what: Want<'_>,
    ) -> PassResult {
        let n = labels.len();
        let v = match what {
            Want::HessianVector(v) => Some(v),
            _ => None,
        };
        let trace = self.forward(x, n, v);
        let logits = trace.inputs.last().expect("at least the input");
        let c = self.classes;
        let mut result = PassResult::empty(self, what);
        // δ = dℓ/dz = (p − e_y) / T; R{δ} = (p ⊙ Rz − p (pᵀ Rz)) / T².
        let mut delta = vec![0.0f32; n * c];
        let mut rdelta = v.map(|_| vec![0.0f32; n * c]);
        // The softmax of one sample, reused across samples.
        let mut p: Vec<f64> = Vec::with_capacity(c);
        for (s, &y) in labels.iter().enumerate() {
            let z = &logits[s * c..(s + 1) * c];
            let (loss, correct, sum) = sample_loss(z, y, temperature, &mut p);
            result.correct += usize::from(correct);
            result.loss += loss;
            let y = usize::from(y);
            for v in p.iter_mut() {
                *v /= sum;
            }
            for j in 0..c {
                let t = p[j] - f64::from(u8::from(j == y));
                delta[s * c + j] = (t / f64::from(temperature)) as f32 * scale;
            }
            if let (Some(rd), Some(rz)) = (
                rdelta.as_mut(),
                trace.tangents.last().and_then(Option::as_ref),
            ) {
                let rz = &rz[s * c..(s + 1) * c];
                let prz: f64 = p.iter().zip(rz).map(|(a, &b)| a * f64::from(b)).sum();
                let t2 = f64::from(temperature) * f64::from(temperature);
                for j in 0..c {
                    rd[s * c + j] = ((p[j] * f64::from(rz[j]) - p[j] * prz) / t2) as f32 * scale;
                }
            }
        }
        if matches!(what, Want::Loss) {
            return result;
        }
        self.backward(&trace, n, delta, rdelta, v, &mut result);
        result
    }

    /// Backward pass from the output error `delta` (and its tangent).
    fn backward(
        &self,
        trace: &Trace,
        n: usize,
        mut delta: Vec<f32>,
        mut rdelta: Option<Vec<f32>>,
        v: Option<&[Vec<f32>]>,
        result: &mut PassResult,
    ) {
        for (i, op) in self.ops.iter().enumerate().rev() {
            let a = &trace.inputs[i];
            let ra = trace.tangents[i].as_ref();
            let need_input = i > 0;
            match *op {
                Op::Linear {
                    weight,
                    bias,
                    inputs: k,
                    outputs: m,
                } => {
                    if let Some(s) = &self.scales[weight] {
                        scale_units(&mut delta, s, 1);
                        if let Some(rd) = rdelta.as_mut() {
                            scale_units(rd, s, 1);
                        }
                    }
                    let grads = result.gradient.as_mut().expect("a derivative pass");
                    linear_weight_grad(&mut grads[weight], &delta, a, n, k, m);
                    if let Some(b) = bias {
                        column_sums(&mut grads[b], &delta, n, m, 1);
                    }
                    if let (Some(hv), Some(rd)) = (result.hessian_vector.as_mut(), rdelta.as_ref())
                    {
                        linear_weight_grad(&mut hv[weight], rd, a, n, k, m);
                        if let Some(ra) = ra {
                            linear_weight_grad(&mut hv[weight], &delta, ra, n, k, m);
                        }
                        if let Some(b) = bias {
                            column_sums(&mut hv[b], rd, n, m, 1);
                        }
                    }
                    if need_input {
                        let w = &self.params[weight];
                        let next_r = rdelta.as_ref().map(|rd| {
                            let mut r = linear_input_grad(rd, w, n, k, m);
                            if let Some(v) = v {
                                add(&mut r, &linear_input_grad(&delta, &v[weight], n, k, m));
                            }
                            r
                        });
                        delta = linear_input_grad(&delta, w, n, k, m);
                        rdelta = next_r;
                    }
                }
                Op::Conv3x3 {
                    weight,
                    bias,
                    channels_in,
                    channels_out,
                    height,
                    width,
                } => {
                    let g = ConvGeometry {
                        cin: channels_in,
                        cout: channels_out,
                        h: height,
                        w: width,
                    };
                    let hw = height * width;
                    if let Some(s) = &self.scales[weight] {
                        scale_units(&mut delta, s, hw);
                        if let Some(rd) = rdelta.as_mut() {
                            scale_units(rd, s, hw);
                        }
                    }
                    let grads = result.gradient.as_mut().expect("a derivative pass");
                    g.weight_grad(&mut grads[weight], &delta, a, n);
                    if let Some(b) = bias {
                        column_sums(&mut grads[b], &delta, n, channels_out, hw);
                    }
                    if let (Some(hv), Some(rd)) = (result.hessian_vector.as_mut(), rdelta.as_ref())
                    {
                        g.weight_grad(&mut hv[weight], rd, a, n);
                        if let Some(ra) = ra {
                            g.weight_grad(&mut hv[weight], &delta, ra, n);
                        }
                        if let Some(b) = bias {
                            column_sums(&mut hv[b], rd, n, channels_out, hw);
                        }
                    }
                    if need_input {
                        let w = &self.params[weight];
                        let next_r = rdelta.as_ref().map(|rd| {
                            let mut r = g.input_grad(rd, w, n);
                            if let Some(v) = v {
                                add(&mut r, &g.input_grad(&delta, &v[weight], n));
                            }
                            r
                        });
                        delta = g.input_grad(&delta, w, n);
                        rdelta = next_r;
                    }
                }
                Op::Relu { .. } => {
                    for (d, &x) in delta.iter_mut().zip(a) {
                        if x <= 0.0 {
                            *d = 0.0;
                        }
                    }
                    if let Some(rd) = rdelta.as_mut() {
                        for (d, &x) in rd.iter_mut().zip(a) {
                            if x <= 0.0 {
                                *d = 0.0;
                            }
                        }
                    }
                }
                Op::MaxPool2 { .. } => {
                    let arg = trace.argmax[i]
                        .as_ref()
                        .expect("pooling records its argmax");
                    delta = unpool(&delta, arg, a.len());
                    rdelta = rdelta.as_deref().map(|d| unpool(d, arg, a.len()));
                }
            }
        }
    }
}

/// What a [`Network::pass`] computes besides loss and accuracy.
#[derive(Clone, Copy, Debug)]
pub enum Want<'a> {
    /// Loss and accuracy only.
    Loss,
    /// And the gradient of the mean loss.
    Gradient,
    /// And the gradient and the Hessian-vector product with this vector
    /// (one buffer per parameter).
    HessianVector(&'a [Vec<f32>]),
}

/// The sums a [`Network::pass`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct PassResult {
    /// Sum of the per-sample losses.
    pub loss: f64,
    /// Samples classified correctly.
    pub correct: usize,
    /// Gradient of the mean loss, one buffer per parameter.
    pub gradient: Option<Vec<Vec<f32>>>,
    /// Hessian-vector product, one buffer per parameter.
    pub hessian_vector: Option<Vec<Vec<f32>>>,
}

impl PassResult {
    fn empty(net: &Network, what: Want<'_>) -> Self {
        let zeros = || net.params.iter().map(|p| vec![0.0; p.len()]).collect();
        PassResult {
            loss: 0.0,
            correct: 0,
            gradient: (!matches!(what, Want::Loss)).then(zeros),
            hessian_vector: matches!(what, Want::HessianVector(_)).then(zeros),
        }
    }

    fn add(&mut self, other: &PassResult) {
        self.loss += other.loss;
        self.correct += other.correct;
        let sum = |a: &mut Option<Vec<Vec<f32>>>, b: &Option<Vec<Vec<f32>>>| {
            if let (Some(a), Some(b)) = (a.as_mut(), b.as_ref()) {
                for (x, y) in a.iter_mut().zip(b) {
                    add(x, y);
                }
            }
        };
        sum(&mut self.gradient, &other.gradient);
        sum(&mut self.hessian_vector, &other.hessian_vector);
    }
}

/// The activations of a forward pass: the input of every op and the
/// network output last, with their tangents.
struct Trace {
    inputs: Vec<Vec<f32>>,
    tangents: Vec<Option<Vec<f32>>>,
    argmax: Vec<Option<Vec<u32>>>,
}

impl Trace {
    fn output_of(&self, op: usize) -> &[f32] {
        &self.inputs[op + 1]
    }
}

/// The loss of one sample's logits `z` with label `y` at `temperature`,
/// whether the top logit (the first of equals) is `y`, and the softmax's
/// normaliser; `p` is left holding the unnormalised exponentials.
fn sample_loss(z: &[f32], y: u8, temperature: f32, p: &mut Vec<f64>) -> (f64, bool, f64) {
    let top = z
        .iter()
        .enumerate()
        .fold(0, |best, (j, &v)| if v > z[best] { j } else { best });
    let zmax = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    p.clear();
    p.extend(z.iter().map(|&v| f64::from((v - zmax) / temperature).exp()));
    let sum: f64 = p.iter().sum();
    let y = usize::from(y);
    let loss = sum.ln() - f64::from((z[y] - zmax) / temperature);
    (loss, top == y, sum)
}

/// Zeroes the entries whose flag in `keep` is false.
fn zero_pruned(x: &mut [f32], keep: &[bool]) {
    debug_assert_eq!(x.len(), keep.len());
    // A select, not a conditional store, so that it vectorises.
    for (v, &k) in x.iter_mut().zip(keep) {
        *v = if k { *v } else { 0.0 };
    }
}

fn add(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Multiplies unit `j` (a run of `per_unit` values per sample) by `s[j]`.
fn scale_units(x: &mut [f32], s: &[f32], per_unit: usize) {
    for sample in x.chunks_mut(s.len() * per_unit) {
        for (unit, &f) in sample.chunks_mut(per_unit).zip(s) {
            for v in unit {
                *v *= f;
            }
        }
    }
}

/// `out[j] += Σ_s Σ_t x[s, j, t]` for `x` of `n x m x per_unit`.
fn column_sums(out: &mut [f32], x: &[f32], n: usize, m: usize, per_unit: usize) {
    for s in 0..n {
        for (j, o) in out.iter_mut().enumerate() {
            let at = (s * m + j) * per_unit;
            *o += x[at..at + per_unit].iter().sum::<f32>();
        }
    }
}

fn view(x: &[f32], rows: usize, cols: usize) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((rows, cols), x).expect("buffer sizes are checked by the network")
}

fn view_mut(x: &mut [f32], rows: usize, cols: usize) -> ArrayViewMut2<'_, f32> {
    ArrayViewMut2::from_shape((rows, cols), x).expect("buffer sizes are checked by the network")
}

/// `z = x Wᵀ + b` for `x` of `n x k`, `W` of `m x k`.
fn linear_forward(
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    n: usize,
    k: usize,
    m: usize,
) -> Vec<f32> {
    let mut z = vec![0.0; n * m];
    if let Some(b) = b {
        for row in z.chunks_mut(m) {
            row.copy_from_slice(b);
        }
    }
    let beta = if b.is_some() { 1.0 } else { 0.0 };
    general_mat_mul(
        1.0,
        &view(x, n, k),
        &view(w, m, k).t(),
        beta,
        &mut view_mut(&mut z, n, m),
    );
    z
}

/// `dW += δᵀ x` for `δ` of `n x m`, `x` of `n x k`.
fn linear_weight_grad(dw: &mut [f32], delta: &[f32], x: &[f32], n: usize, k: usize, m: usize) {
    general_mat_mul(
        1.0,
        &view(delta, n, m).t(),
        &view(x, n, k),
        1.0,
        &mut view_mut(dw, m, k),
    );
}

/// `dx = δ W` for `δ` of `n x m`, `W` of `m x k`.
fn linear_input_grad(delta: &[f32], w: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
    let mut dx = vec![0.0; n * k];
    general_mat_mul(
        1.0,
        &view(delta, n, m),
        &view(w, m, k),
        0.0,
        &mut view_mut(&mut dx, n, k),
    );
    dx
}

/// 2x2 max pooling; returns the outputs and the flat index (within the
/// whole chunk) of each output's source.
fn max_pool(x: &[f32], n: usize, c: usize, h: usize, w: usize) -> (Vec<f32>, Vec<u32>) {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = Vec::with_capacity(n * c * oh * ow);
    let mut arg = Vec::with_capacity(n * c * oh * ow);
    for plane in 0..n * c {
        let base = plane * h * w;
        for i in 0..oh {
            for j in 0..ow {
                let mut best = base + 2 * i * w + 2 * j;
                for (di, dj) in [(0, 1), (1, 0), (1, 1)] {
                    let at = base + (2 * i + di) * w + 2 * j + dj;
                    if x[at] > x[best] {
                        best = at;
                    }
                }
                out.push(x[best]);
                arg.push(best as u32);
            }
        }
    }
    (out, arg)
}

/// The adjoint of pooling: each output's error goes back to its source.
fn unpool(d: &[f32], arg: &[u32], len: usize) -> Vec<f32> {
    let mut out = vec![0.0; len];
    for (&j, &g) in arg.iter().zip(d) {
        out[j as usize] += g;
    }
    out
}

/// The sizes of a 3x3, stride-1, padding-1 convolution.
struct ConvGeometry {
    cin: usize,
    cout: usize,
    h: usize,
    w: usize,
}

impl ConvGeometry {
    /// `cols[(c, ky, kx), (i, j)] = x[c, i + ky − 1, j + kx − 1]` (0 outside).
    fn im2col(&self, x: &[f32]) -> Vec<f32> {
        let (h, w) = (self.h, self.w);
        let mut cols = vec![0.0; self.cin * 9 * h * w];
        for c in 0..self.cin {
            let plane = &x[c * h * w..(c + 1) * h * w];
            for ky in 0..3 {
                for kx in 0..3 {
                    let row = &mut cols[((c * 9) + ky * 3 + kx) * h * w..][..h * w];
                    for i in 0..h {
                        let si = i + ky;
                        if si < 1 || si > h {
                            continue;
                        }
                        let src = &plane[(si - 1) * w..si * w];
                        let dst = &mut row[i * w..(i + 1) * w];
                        // dst[j] = src[j + kx − 1] where in range.
                        match kx {
                            0 => dst[1..].copy_from_slice(&src[..w - 1]),
                            1 => dst.copy_from_slice(src),
                            _ => dst[..w - 1].copy_from_slice(&src[1..]),
                        }
                    }
                }
            }
        }
        cols
    }

    /// The adjoint of [`ConvGeometry::im2col`]: adds `cols` back into an
    /// image.
    fn col2im(&self, cols: &[f32], x: &mut [f32]) {
        let (h, w) = (self.h, self.w);
        for c in 0..self.cin {
            let plane = &mut x[c * h * w..(c + 1) * h * w];
            for ky in 0..3 {
                for kx in 0..3 {
                    let row = &cols[((c * 9) + ky * 3 + kx) * h * w..][..h * w];
                    for i in 0..h {
                        let si = i + ky;
                        if si < 1 || si > h {
                            continue;
                        }
                        let dst = &mut plane[(si - 1) * w..si * w];
                        let src = &row[i * w..(i + 1) * w];
                        match kx {
                            0 => add(&mut dst[..w - 1], &src[1..]),
                            1 => add(dst, src),
                            _ => add(&mut dst[1..], &src[..w - 1]),
                        }
                    }
                }
            }
        }
    }

    fn forward(&self, x: &[f32], k: &[f32], b: Option<&[f32]>, n: usize) -> Vec<f32> {
        let hw = self.h * self.w;
        let mut z = vec![0.0; n * self.cout * hw];
        for (xs, zs) in x.chunks(self.cin * hw).zip(z.chunks_mut(self.cout * hw)) {
            let cols = self.im2col(xs);
            if let Some(b) = b {
                for (plane, &bias) in zs.chunks_mut(hw).zip(b) {
                    plane.fill(bias);
                }
            }
            let beta = if b.is_some() { 1.0 } else { 0.0 };
            general_mat_mul(
                1.0,
                &view(k, self.cout, self.cin * 9),
                &view(&cols, self.cin * 9, hw),
                beta,
                &mut view_mut(zs, self.cout, hw),
            );
        }
        z
    }

    fn weight_grad(&self, dk: &mut [f32], delta: &[f32], x: &[f32], n: usize) {
        let hw = self.h * self.w;
        for s in 0..n {
            let cols = self.im2col(&x[s * self.cin * hw..(s + 1) * self.cin * hw]);
            general_mat_mul(
                1.0,
                &view(
                    &delta[s * self.cout * hw..(s + 1) * self.cout * hw],
                    self.cout,
                    hw,
                ),
                &view(&cols, self.cin * 9, hw).t(),
                1.0,
                &mut view_mut(dk, self.cout, self.cin * 9),
            );
        }
    }

    fn input_grad(&self, delta: &[f32], k: &[f32], n: usize) -> Vec<f32> {
        let hw = self.h * self.w;
        let mut dx = vec![0.0; n * self.cin * hw];
        let mut cols = vec![0.0; self.cin * 9 * hw];
        for s in 0..n {
            general_mat_mul(
                1.0,
                &view(k, self.cout, self.cin * 9).t(),
                &view(
                    &delta[s * self.cout * hw..(s + 1) * self.cout * hw],
                    self.cout,
                    hw,
                ),
                0.0,
                &mut view_mut(&mut cols, self.cin * 9, hw),
            );
            self.col2im(&cols, &mut dx[s * self.cin * hw..(s + 1) * self.cin * hw]);
        }
        dx
    }
}
