//! Reference values come from PyTorch 2.15 with this script, three steps on fixed gradients:
//!
//! ```python
//! import torch
//! grads = [[0.5, -1.0, 2.0], [0.1, 0.3, -0.7], [-0.4, 0.2, 0.05]]
//! def run(make):
//!     p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
//!     opt = make([p])
//!     for g in grads:
//!         p.grad = torch.tensor(g)
//!         opt.step()
//!     return p.detach().tolist()
//! run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01))  # and so on
//! ```

use super::*;
use crate::tensor::Tensor;

const GRADS: [[f32; 3]; 3] = [[0.5, -1.0, 2.0], [0.1, 0.3, -0.7], [-0.4, 0.2, 0.05]];

fn run(config: OptimizerConfig) -> Vec<f32> {
    let mut params = Parameters::new();
    params.push("p", Tensor::from_vec(&[3], vec![1.0, -2.0, 3.0]));
    let mut optimizer = Optimizer::new(config).unwrap();
    for grad in GRADS {
        optimizer.step(&mut params, &[grad.to_vec()]);
    }
    params.get(0).data().to_vec()
}

fn assert_close(got: &[f32], want: &[f32]) {
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 2e-6, "got {got:?}, want {want:?}");
    }
}

fn sgd(learning_rate: f32, momentum: f32, nesterov: bool, weight_decay: f32) -> OptimizerConfig {
    OptimizerConfig::Sgd {
        learning_rate,
        momentum,
        nesterov,
        weight_decay,
    }
}

#[test]
fn sgd_matches_pytorch() {
    assert_close(
        &run(sgd(0.1, 0.0, false, 0.0)),
        &[0.98, -1.9499999, 2.8649998],
    );
}

#[test]
fn sgd_momentum_matches_pytorch() {
    assert_close(
        &run(sgd(0.1, 0.9, false, 0.01)),
        &[0.8800948, -1.7951394, 2.569874],
    );
}

#[test]
fn sgd_nesterov_matches_pytorch() {
    assert_close(
        &run(sgd(0.1, 0.9, true, 0.0)),
        &[0.87695, -1.7753999, 2.4924],
    );
}

#[test]
fn adam_matches_pytorch() {
    let config = OptimizerConfig::Adam {
        learning_rate: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.01,
    };
    assert_close(&run(config), &[0.8072158, -1.8318349, 2.826304]);
}

#[test]
fn adamw_matches_pytorch() {
    let config = OptimizerConfig::AdamW {
        learning_rate: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.1,
    };
    assert_close(&run(config), &[0.7834181, -1.7797799, 2.7432525]);
}

#[test]
fn rmsprop_matches_pytorch() {
    let config = OptimizerConfig::RmsProp {
        learning_rate: 0.01,
        alpha: 0.99,
        epsilon: 1e-8,
        momentum: 0.0,
        weight_decay: 0.0,
    };
    assert_close(&run(config), &[0.9423911, -1.9478575, 2.9308016]);
}

#[test]
fn rmsprop_momentum_matches_pytorch() {
    let config = OptimizerConfig::RmsProp {
        learning_rate: 0.01,
        alpha: 0.99,
        epsilon: 1e-8,
        momentum: 0.5,
        weight_decay: 0.0,
    };
    assert_close(&run(config), &[0.8575378, -1.8872913, 2.8723934]);
}

#[test]
fn invalid_hyperparameters_are_rejected() {
    let message = Optimizer::new(sgd(-0.1, 0.0, false, 0.0))
        .unwrap_err()
        .to_string();
    assert!(message.contains("learning_rate = -0.1"), "{message}");
    let message = Optimizer::new(sgd(0.1, 1.5, false, 0.0))
        .unwrap_err()
        .to_string();
    assert!(message.contains("momentum = 1.5"), "{message}");
    let config = OptimizerConfig::Adam {
        learning_rate: 0.1,
        beta1: 1.0,
        beta2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.0,
    };
    assert!(
        Optimizer::new(config)
            .unwrap_err()
            .to_string()
            .contains("beta1")
    );
}
