//! Exploding gradients in an LSTM: a learning rate far too high for the targets ends the run
//! with the NaN message without clipping, and trains with finite losses with clipping.

use dendrite::data::{Dataset, Targets};
use dendrite::nn::{Init, LayerSpec, Loss, Sequential};
use dendrite::optim::{OptimizerConfig, Schedule};
use dendrite::rng::Rng;
use dendrite::tensor::Tensor;
use dendrite::train::{self, Silent, TrainConfig};

/// 64 noisy sine sequences of 16 steps whose target, the next value times 1000, is far
/// outside the range the network starts in.
fn sequences() -> Dataset {
    let mut rng = Rng::new(5);
    let (rows, time) = (64, 16);
    let mut inputs = Vec::with_capacity(rows * time);
    let mut targets = Vec::with_capacity(rows);
    for _ in 0..rows {
        let phase = rng.uniform() * 6.3;
        for t in 0..=time {
            let value = (phase + 0.4 * t as f32).sin() + 0.05 * rng.normal();
            if t < time {
                inputs.push(value);
            } else {
                targets.push(1000.0 * value);
            }
        }
    }
    Dataset::new(
        Tensor::from_vec(&[rows, time, 1], inputs),
        Targets::Values(Tensor::from_vec(&[rows, 1], targets)),
    )
    .unwrap()
}

fn lstm() -> Sequential {
    let specs = vec![
        LayerSpec::Lstm {
            units: 8,
            num_layers: 1,
            return_sequences: false,
            init: Init::GlorotUniform,
            recurrent_init: Init::Orthogonal,
        },
        LayerSpec::Dense {
            units: 1,
            activation: None,
            init: Init::GlorotUniform,
            bias: true,
        },
    ];
    Sequential::new(&[16, 1], specs, 0).unwrap()
}

fn config(clip_norm: Option<f32>) -> TrainConfig {
    TrainConfig {
        epochs: 20,
        batch_size: 16,
        loss: Loss::Mse,
        optimizer: OptimizerConfig::Sgd {
            learning_rate: 0.5,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        },
        seed: 1,
        shuffle: true,
        schedule: Schedule::Constant,
        early_stopping: None,
        augment: dendrite::data::Augment::default(),
        clip_norm,
        clip_value: None,
    }
}

#[test]
fn lstm_without_clipping_stops_on_nan() {
    let data = sequences();
    let mut model = lstm();
    let error = train::fit(&mut model, &data, None, &config(None), &mut Silent).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, dendrite::Error::NonFinite { .. }),
        "{message}"
    );
    assert!(message.contains("non-finite"), "{message}");
    assert!(message.contains("lower the learning rate"), "{message}");
}

#[test]
fn lstm_with_clipping_keeps_finite_losses() {
    let data = sequences();
    let mut model = lstm();
    let history = train::fit(&mut model, &data, None, &config(Some(1.0)), &mut Silent).unwrap();
    assert_eq!(history.epochs.len(), 20);
    for record in &history.epochs {
        assert!(record.train_loss.is_finite(), "epoch {}", record.epoch);
        assert!(record.clipped_steps.unwrap() > 0, "epoch {}", record.epoch);
    }
    let first = history.epochs[0].train_loss;
    let last = history.epochs.last().unwrap().train_loss;
    assert!(last < first, "loss went from {first} to {last}");
    assert!(model.params().values().iter().all(Tensor::is_finite));
}

#[test]
fn clipping_by_value_keeps_finite_losses() {
    let data = sequences();
    let mut model = lstm();
    let mut settings = config(None);
    settings.clip_value = Some(0.01);
    let history = train::fit(&mut model, &data, None, &settings, &mut Silent).unwrap();
    assert!(history.epochs.iter().all(|r| r.train_loss.is_finite()));
}

#[test]
fn invalid_clip_limits_are_rejected() {
    for (norm, value) in [
        (Some(0.0), None),
        (None, Some(-1.0)),
        (Some(f32::NAN), None),
    ] {
        let mut settings = config(norm);
        settings.clip_value = value;
        let message = settings.validate().unwrap_err().to_string();
        assert!(message.contains("use a positive finite limit"), "{message}");
    }
}
