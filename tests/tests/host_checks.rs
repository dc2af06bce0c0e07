//! The Host checks of prunus-testing on the lab's networks: gradients
//! against finite differences and masks kept through training pass on the
//! lab's host, and fail, with messages naming the parameter and the element,
//! on wrappers with one planted bug each.

use std::sync::Arc;

use prunus_core::host::{Capability, Host, Objective, Parameter, Samples, Split};
use prunus_core::{Mask, Result};
use prunus_lab::data::Dataset;
use prunus_lab::host::{LabHost, Sgd};
use prunus_lab::network::Network;
use prunus_lab::synthetic::gaussian;
use prunus_testing::host::{
    GradientCheck, HostFailure, gradient_matches_finite_differences, masks_kept_through_training,
};
use prunus_testing::invariants::Violation;
use prunus_testing::layers::random_mask;

fn mlp_host(seed: u64) -> LabHost {
    let (input, classes, n) = (6, 3, 40);
    let x: Vec<f32> = (0..(n * input) as u64)
        .map(|i| gaussian(seed, 7, i))
        .collect();
    let y: Vec<u8> = (0..n).map(|i| ((i * 7 + 3) % classes) as u8).collect();
    let data = Dataset::from_samples("test", [input, 1, 1], classes, &x, &y).unwrap();
    let net = Network::mlp(&[input, 5, 4, classes], true, seed).unwrap();
    LabHost::new(net, Arc::new(data), Sgd::default().batch(8), 0).unwrap()
}

/// A mask for every weight matrix (biases left whole).
fn weight_masks(host: &impl Host) -> Vec<Option<Mask>> {
    host.parameters()
        .iter()
        .enumerate()
        .map(|(i, p)| (p.shape.rank() == 2).then(|| random_mask(i as u64, &p.shape, 0.5)))
        .collect()
}

#[test]
fn the_lab_host_passes_the_host_checks() {
    let mut host = mlp_host(1);
    let objective = Objective::new(Samples::all(Split::Train));
    let check = GradientCheck::default().step(1e-4).per_parameter(None);
    gradient_matches_finite_differences(&mut host, &objective, &check).unwrap();
    let masks = weight_masks(&host);
    assert!(masks.iter().flatten().any(|m| m.count_pruned() > 0));
    masks_kept_through_training(&mut host, &masks, 5).unwrap();
}

/// A host whose gradient of one parameter is off by 10%, or that zeroes
/// masked weights once instead of keeping the masks (the classic bug of a
/// training loop that applies masks before training but not after each
/// optimiser step).
struct Planted {
    inner: LabHost,
    scaled_gradient: bool,
    masks_once: bool,
}

impl Host for Planted {
    fn name(&self) -> String {
        self.inner.name()
    }
    fn parameters(&self) -> &[Parameter] {
        self.inner.parameters()
    }
    fn supports(&self, capability: Capability) -> bool {
        self.inner.supports(capability)
    }
    fn weights(&self, index: usize) -> Result<Vec<f32>> {
        self.inner.weights(index)
    }
    fn set_weights(&mut self, index: usize, values: &[f32]) -> Result<()> {
        self.inner.set_weights(index, values)
    }
    fn gradient(&mut self, objective: &Objective) -> Result<Vec<Vec<f32>>> {
        let mut g = self.inner.gradient(objective)?;
        if self.scaled_gradient {
            g[0].iter_mut().for_each(|x| *x *= 1.1);
        }
        Ok(g)
    }
    fn evaluate(&mut self, objective: &Objective) -> Result<prunus_core::host::Evaluation> {
        self.inner.evaluate(objective)
    }
    fn set_masks(&mut self, masks: &[Option<Mask>]) -> Result<()> {
        if !self.masks_once {
            return self.inner.set_masks(masks);
        }
        for (i, mask) in masks.iter().enumerate() {
            if let Some(mask) = mask {
                let mut w = self.inner.weights(i)?;
                (0..w.len())
                    .filter(|&e| !mask.get(e))
                    .for_each(|e| w[e] = 0.0);
                self.inner.set_weights(i, &w)?;
            }
        }
        Ok(())
    }
    fn train_steps(&mut self, steps: usize) -> Result<f64> {
        self.inner.train_steps(steps)
    }
}

#[test]
fn a_wrong_gradient_is_named() {
    let mut host = Planted {
        inner: mlp_host(2),
        scaled_gradient: true,
        masks_once: false,
    };
    let objective = Objective::new(Samples::all(Split::Train));
    let check = GradientCheck::default().step(1e-4);
    let e = gradient_matches_finite_differences(&mut host, &objective, &check).unwrap_err();
    let HostFailure::Gradient { parameter, .. } = &e else {
        panic!("expected a gradient failure, got {e}");
    };
    assert_eq!(parameter, &host.parameters()[0].name);
    let message = e.to_string();
    assert!(
        message.starts_with(&format!("gradient of {parameter}[")) && message.contains("differ by"),
        "{message}"
    );
    // The weights are put back after the check.
    let mut reference = mlp_host(2);
    for p in 0..host.parameters().len() {
        assert_eq!(host.weights(p).unwrap(), reference.weights(p).unwrap());
    }
    gradient_matches_finite_differences(&mut reference, &objective, &check).unwrap();
}

#[test]
fn masks_applied_once_are_caught_after_a_training_step() {
    let mut host = Planted {
        inner: mlp_host(3),
        scaled_gradient: false,
        masks_once: true,
    };
    let masks = weight_masks(&host);
    let e = masks_kept_through_training(&mut host, &masks, 3).unwrap_err();
    match &e {
        HostFailure::MaskNotKept {
            steps: 1,
            violation: Violation::PrunedNotZero { .. },
        } => {}
        _ => panic!("expected a pruned weight revived by the first step, got {e}"),
    }
    let message = e.to_string();
    assert!(
        message.starts_with("after 1 training steps: ") && message.contains("is pruned but holds"),
        "{message}"
    );
}
