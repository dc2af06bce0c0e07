//! The linear layer a user puts in a candle model so that a
//! [`CandleHost`](super::CandleHost) can look inside it.
//!
//! candle has no forward hooks, so the host cannot watch an arbitrary
//! layer. A model built with this [`Linear`] (in place of
//! `candle_nn::Linear`, from the same `VarBuilder`, with the same
//! variable names `<prefix>.weight`, `<prefix>.bias`) gives the host the
//! layer's activations, per-unit output scales (greedy forward selection,
//! unit removal) and the per-sample gradients of its weights in one batched
//! product instead of a backward pass per sample. All layers of a model
//! share one [`Probes`], which the host holds too.

use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::{Module, Tensor, Var};
use candle_nn::{Activation, VarBuilder};

/// What the layers do besides their product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Nothing: the plain forward pass.
    #[default]
    Plain,
    /// Keep every layer's pre-activation and output.
    Record,
    /// Keep every layer's input and add a zero variable to its
    /// pre-activation, whose gradient is the per-sample `∂L/∂z`.
    PerSample,
}

/// One layer's state.
#[derive(Debug, Default)]
pub(crate) struct LayerState {
    /// The layer's prefix (`fc1`).
    pub name: String,
    /// Units (outputs).
    pub units: usize,
    /// Per-unit output factors.
    pub scales: Option<Tensor>,
    /// Recorded pre-activations, one tensor per forward pass.
    pub pre: Vec<Tensor>,
    /// Recorded outputs after the activation.
    pub post: Vec<Tensor>,
    /// The input of the last per-sample pass.
    pub input: Option<Tensor>,
    /// The zero variable added in the last per-sample pass.
    pub probe: Option<Var>,
}

/// The state shared by a model's [`Linear`] layers and its host.
#[derive(Debug, Default)]
pub(crate) struct ProbeState {
    pub mode: Mode,
    pub layers: Vec<LayerState>,
}

/// The handle that connects a model's [`Linear`] layers to its host: make
/// one, pass it to every layer, then to the host.
#[derive(Clone, Debug, Default)]
pub struct Probes(Arc<Mutex<ProbeState>>);

impl Probes {
    /// A handle with no layer yet.
    pub fn new() -> Probes {
        Probes::default()
    }

    /// The prefixes of the layers registered, in creation order.
    pub fn layers(&self) -> Vec<String> {
        self.lock().layers.iter().map(|l| l.name.clone()).collect()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ProbeState> {
        // A panic inside a forward pass cannot leave the state half
        // written in a way that matters: every field is replaced whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the mode and clears what the last passes left.
    pub(crate) fn reset(&self, mode: Mode) {
        let mut s = self.lock();
        s.mode = mode;
        for l in &mut s.layers {
            l.pre.clear();
            l.post.clear();
            l.input = None;
            l.probe = None;
        }
    }
}

/// A linear layer `y = act(s ⊙ (x Wᵀ + b))` with `W: [out, in]` and
/// `b: [out]` variables of a `VarBuilder`, an optional activation and
/// per-unit factors `s` (1 unless a host sets them).
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    activation: Option<Activation>,
    probes: Probes,
    index: usize,
}

impl Linear {
    /// A layer of `inputs` to `outputs` whose variables are
    /// `<vb prefix>.weight` (and `.bias` when `bias`), initialised as
    /// `candle_nn::linear` does; `probes` connects it to a host. Fails when
    /// `probes` already has a layer of that prefix.
    pub fn new(
        vb: VarBuilder<'_>,
        inputs: usize,
        outputs: usize,
        bias: bool,
        probes: &Probes,
    ) -> crate::Result<Linear> {
        let weight = vb.get_with_hints(
            (outputs, inputs),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
        )?;
        let bias = if bias {
            let bound = 1.0 / (inputs as f64).sqrt();
            Some(vb.get_with_hints(
                outputs,
                "bias",
                candle_nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?)
        } else {
            None
        };
        let name = vb.prefix();
        let mut state = probes.lock();
        if state.layers.iter().any(|l| l.name == name) {
            return Err(crate::Error::request(format!(
                "two layers named {name} share one Probes"
            )));
        }
        state.layers.push(LayerState {
            name,
            units: outputs,
            ..LayerState::default()
        });
        let index = state.layers.len() - 1;
        drop(state);
        Ok(Linear {
            weight,
            bias,
            activation: None,
            probes: probes.clone(),
            index,
        })
    }

    /// The same layer followed by `activation` (so the host can record the
    /// layer's output after it, [`prunus_core::Tap::Output`]). ReLU's
    /// derivative at 0 is 0 here, as in PyTorch and the lab's networks,
    /// where candle's own `relu` takes 1: with candle's, a unit whose
    /// inputs are all pruned and whose bias is 0 gets a gradient and comes
    /// back to life.
    pub fn with_activation(mut self, activation: Activation) -> Linear {
        self.activation = Some(activation);
        self
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut z = x.broadcast_matmul(&self.weight.t()?)?;
        if let Some(b) = &self.bias {
            z = z.broadcast_add(b)?;
        }
        let mut state = self.probes.lock();
        let mode = state.mode;
        let layer = &mut state.layers[self.index];
        if mode == Mode::PerSample {
            let probe = Var::zeros(z.shape(), z.dtype(), z.device())?;
            z = z.add(probe.as_tensor())?;
            layer.input = Some(x.detach());
            layer.probe = Some(probe);
        }
        if let Some(s) = &layer.scales {
            z = z.broadcast_mul(s)?;
        }
        let y = match &self.activation {
            // candle's relu has derivative 1 at 0 (`x >= 0`); PyTorch and
            // the lab take 0. A unit whose inputs are all pruned and whose
            // bias is 0 sits exactly at 0, and candle's convention would
            // train its bias back to life. Multiplying by the (gradient-free)
            // comparison gives PyTorch's derivative.
            Some(Activation::Relu) => z.mul(&z.gt(0.0)?.to_dtype(z.dtype())?)?,
            Some(a) => a.forward(&z)?,
            None => z.clone(),
        };
        if mode == Mode::Record {
            layer.pre.push(z.detach());
            layer.post.push(y.detach());
        }
        Ok(y)
    }
}
