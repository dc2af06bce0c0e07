//! [`TapLinear`]: burn's linear layer with a [`Tap`] that records its
//! outputs and scales its units, for what a forward hook would give a host
//! (burn modules have none): per-layer activations (information flow) and
//! per-unit scales (greedy forward selection, CBS pass selection).
//!
//! Put `TapLinear` where the model has `Linear`, and hand its tap to the
//! host ([`crate::BurnHost::with_taps`]):
//!
//! ```
//! use burn::nn::LinearConfig;
//! use burn::prelude::*;
//! use prunus_burn::TapLinear;
//!
//! let device = Device::ndarray();
//! let fc = TapLinear::new(LinearConfig::new(3, 2).init(&device));
//! let tap = fc.tap.clone();
//! tap.set_scales(Some(vec![0.0, 2.0]));
//! tap.record(true);
//! let y = fc.forward(Tensor::<2>::ones([4, 3], &device));
//! let recorded = tap.take();
//! assert_eq!(recorded.len(), 4 * 2);
//! assert!(recorded.iter().step_by(2).all(|&v| v == 0.0)); // unit 0 scaled to 0
//! # let _ = y;
//! ```

use std::sync::{Arc, Mutex, MutexGuard};

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::module::linear;
use burn::tensor::{Tensor, TensorData};

#[derive(Debug, Default)]
struct TapState {
    recording: bool,
    recorded: Vec<f32>,
    scales: Option<Vec<f32>>,
}

/// A handle on a [`TapLinear`]'s recording and unit scales; clones share
/// them, so the host's handle reaches the layer inside the model (and its
/// validation-mode copies).
#[derive(Clone, Debug, Default)]
pub struct Tap {
    state: Arc<Mutex<TapState>>,
}

impl Tap {
    /// A tap that neither records nor scales.
    pub fn new() -> Tap {
        Tap::default()
    }

    fn state(&self) -> MutexGuard<'_, TapState> {
        // A panic elsewhere while the lock was held leaves plain data behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts (`true`) or stops recording the layer's outputs.
    pub fn record(&self, on: bool) {
        self.state().recording = on;
    }

    /// The outputs recorded since the last call, sample-major (`samples x
    /// outputs per sample`), and clears them.
    pub fn take(&self) -> Vec<f32> {
        std::mem::take(&mut self.state().recorded)
    }

    /// Multiplies each unit's output by a factor (`None`: by 1). One factor
    /// per unit of the layer: the forward pass panics on another count
    /// (the host checks it before it sets them).
    pub fn set_scales(&self, scales: Option<Vec<f32>>) {
        self.state().scales = scales;
    }

    /// The units' factors, when set.
    pub fn scales(&self) -> Option<Vec<f32>> {
        self.state().scales.clone()
    }
}

/// burn's [`Linear`] (weight `[in, out]`, optional bias) whose output
/// `x W + b` is multiplied by the [`Tap`]'s unit scales, when set, and
/// recorded while the tap records. Its parameters are named and laid out as
/// `Linear`'s (`weight`, `bias`; units in the weight's columns).
#[derive(Module, Debug)]
pub struct TapLinear {
    /// The weight, `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// The bias, `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// The recording and scaling handle.
    #[module(skip)]
    pub tap: Tap,
}

impl TapLinear {
    /// `linear`'s parameters with a fresh tap.
    pub fn new(linear: Linear) -> Self {
        TapLinear {
            weight: linear.weight,
            bias: linear.bias,
            tap: Tap::new(),
        }
    }

    /// `x W + b`, scaled per unit and recorded as the tap says; `x` is
    /// `[..., in]`, the output `[..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mut y = linear(x, self.weight.val(), self.bias.as_ref().map(Param::val));
        let (scales, recording) = {
            let s = self.tap.state();
            (s.scales.clone(), s.recording)
        };
        if let Some(s) = scales {
            let n = s.len();
            let s = Tensor::<1>::from_data(TensorData::new(s, [n]), (&y.device(), y.dtype()));
            y = y.mul(s.unsqueeze::<D>());
        }
        if recording {
            let values = y
                .clone()
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap_or_default();
            self.tap.state().recorded.extend(values);
        }
        y
    }
}
