//! Stochastic gradient descent with momentum and weight decay for candle,
//! which ships SGD without momentum only.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::Optimizer;

/// The settings of [`Sgd`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate `η`.
    pub learning_rate: f64,
    /// Momentum `μ` (0 for none).
    pub momentum: f64,
    /// Weight decay `λ`.
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    /// `η = 0.05, μ = 0.9, λ = 5e-4`, the lab's optimiser.
    fn default() -> Self {
        SgdConfig {
            learning_rate: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
        }
    }
}

/// SGD as PyTorch's `torch.optim.SGD` and the lab's optimiser:
/// `v = μ v + g + λ θ; θ -= η v`, the velocity starting at zero.
#[derive(Debug)]
pub struct Sgd {
    vars: Vec<(Var, Option<Tensor>)>,
    config: SgdConfig,
}

impl Optimizer for Sgd {
    type Config = SgdConfig;

    fn new(vars: Vec<Var>, config: SgdConfig) -> candle_core::Result<Self> {
        let vars = vars
            .into_iter()
            .filter(|v| v.dtype().is_float())
            .map(|v| (v, None))
            .collect();
        Ok(Sgd { vars, config })
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        let SgdConfig {
            learning_rate,
            momentum,
            weight_decay,
        } = self.config;
        for (var, velocity) in &mut self.vars {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let mut d = g.clone();
            if weight_decay != 0.0 {
                d = d.add(&(var.as_tensor() * weight_decay)?)?;
            }
            let v = match velocity.take() {
                Some(v) if momentum != 0.0 => ((v * momentum)? + d)?,
                _ => d,
            };
            var.set(&var.as_tensor().sub(&(&v * learning_rate)?)?)?;
            *velocity = Some(v);
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.config.learning_rate
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.learning_rate = lr;
    }
}
