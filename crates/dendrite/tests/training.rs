//! The training loop on small synthetic problems: convergence, early stopping, the NaN
//! guard, determinism and buffer reuse.

use dendrite::Error;
use dendrite::autograd::{Graph, Workspace};
use dendrite::data::{Dataset, Targets};
use dendrite::nn::{Activation, Init, LayerSpec, Loss, Sequential};
use dendrite::optim::{Optimizer, OptimizerConfig, Schedule};
use dendrite::rng::Rng;
use dendrite::tensor::Tensor;
use dendrite::train::{self, EarlyStopping, Silent, TrainConfig};

/// Two Gaussian blobs per class in 2-D, three classes.
fn blobs(rows: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let centers = [(-2.0, 0.0), (2.0, 0.0), (0.0, 2.5)];
    let mut features = Vec::with_capacity(rows * 2);
    let mut labels = Vec::with_capacity(rows);
    for i in 0..rows {
        let class = i % 3;
        features.push(centers[class].0 + 0.6 * rng.normal());
        features.push(centers[class].1 + 0.6 * rng.normal());
        labels.push(class);
    }
    let class_names = vec!["a".into(), "b".into(), "c".into()];
    Dataset::new(
        Tensor::from_vec(&[rows, 2], features),
        Targets::Classes {
            labels,
            class_names,
        },
    )
    .unwrap()
}

fn classifier(seed: u64) -> Sequential {
    let specs = vec![
        LayerSpec::Dense {
            units: 16,
            activation: Some(Activation::Relu),
            init: Init::HeUniform,
            bias: true,
        },
        LayerSpec::Dropout { rate: 0.1 },
        LayerSpec::Dense {
            units: 3,
            activation: None,
            init: Init::GlorotUniform,
            bias: true,
        },
    ];
    Sequential::new(&[2], specs, seed).unwrap()
}

fn config(epochs: usize, learning_rate: f32) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 32,
        loss: Loss::CrossEntropy,
        optimizer: OptimizerConfig::Sgd {
            learning_rate,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        },
        seed: 3,
        shuffle: true,
        schedule: Schedule::Constant,
        early_stopping: None,
        augment: dendrite::data::Augment::default(),
        clip_norm: None,
        clip_value: None,
    }
}

#[test]
fn fit_learns_separable_blobs() {
    let (train_set, validation) = (blobs(600, 1), blobs(300, 2));
    let mut model = classifier(0);
    let history = train::fit(
        &mut model,
        &train_set,
        Some(&validation),
        &config(10, 0.05),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(history.epochs.len(), 10);
    let first = history.epochs.first().unwrap().train_loss;
    let last = history.epochs.last().unwrap().train_loss;
    assert!(
        last < first / 2.0,
        "training loss went from {first} to {last}"
    );
    let accuracy = train::evaluate(&model, &validation, Loss::CrossEntropy, 64)
        .accuracy()
        .unwrap();
    assert!(accuracy > 0.95, "held-out accuracy {accuracy}");
}

#[test]
fn same_seed_gives_identical_weights() {
    let train_set = blobs(200, 1);
    let mut a = classifier(5);
    let mut b = classifier(5);
    let history_a = train::fit(&mut a, &train_set, None, &config(3, 0.05), &mut Silent).unwrap();
    let history_b = train::fit(&mut b, &train_set, None, &config(3, 0.05), &mut Silent).unwrap();
    assert_eq!(a.params(), b.params());
    let losses = |h: &train::History| {
        h.epochs
            .iter()
            .map(|r| r.train_loss.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&history_a), losses(&history_b));
}

#[test]
fn early_stopping_restores_best_weights() {
    // A tiny training set and a large learning rate overfit quickly, so the validation loss
    // stops improving long before the last epoch.
    let (train_set, validation) = (blobs(30, 1), blobs(300, 2));
    let mut model = classifier(0);
    let mut settings = config(200, 0.2);
    settings.early_stopping = Some(EarlyStopping {
        patience: 3,
        min_delta: 0.0,
        restore_best: true,
    });
    let history = train::fit(
        &mut model,
        &train_set,
        Some(&validation),
        &settings,
        &mut Silent,
    )
    .unwrap();
    assert!(
        history.stopped_early,
        "ran all {} epochs",
        history.epochs.len()
    );

    let best_epoch = history.best_epoch.unwrap();
    let best_loss = history.epochs[best_epoch - 1].val_loss.unwrap();
    let min_loss = history
        .epochs
        .iter()
        .filter_map(|r| r.val_loss)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(best_loss, min_loss);
    assert_eq!(history.epochs.len(), best_epoch + 3);
    let restored = train::evaluate(&model, &validation, Loss::CrossEntropy, 64).loss;
    assert!(
        (restored - best_loss).abs() < 1e-6,
        "restored model loss {restored}, best {best_loss}"
    );
}

#[test]
fn huge_learning_rate_stops_with_non_finite_error() {
    let train_set = blobs(200, 1);
    let mut model = classifier(0);
    let initial = model.params().clone();
    let error =
        train::fit(&mut model, &train_set, None, &config(5, 1e12), &mut Silent).unwrap_err();
    match &error {
        Error::NonFinite {
            epoch,
            batch,
            learning_rate,
            ..
        } => {
            assert!(*epoch >= 1, "epoch {epoch}");
            assert!(*batch >= 1, "batch {batch}");
            assert_eq!(*learning_rate, 1e12);
        }
        other => panic!("expected a non-finite error, got {other}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("learning rate") && message.contains("too high"),
        "{message}"
    );
    // The model has finite weights: those of the last finished epoch, or the initial ones.
    assert!(model.params().values().iter().all(Tensor::is_finite));
    if let Error::NonFinite { epoch: 1, .. } = error {
        assert_eq!(model.params(), &initial);
    }
}

#[test]
fn training_set_smaller_than_batch_still_steps() {
    let train_set = blobs(8, 1);
    let mut model = classifier(0);
    let mut settings = config(2, 0.05);
    settings.batch_size = 64;
    let history = train::fit(&mut model, &train_set, None, &settings, &mut Silent).unwrap();
    assert_eq!(history.warnings.len(), 1);
    assert!(
        history.warnings[0].contains("8 training rows < batch size 64"),
        "{}",
        history.warnings[0]
    );
    assert_eq!(history.epochs.last().unwrap().steps, 2);
}

#[test]
fn mismatched_output_units_are_rejected() {
    let train_set = blobs(30, 1);
    let specs = vec![LayerSpec::Dense {
        units: 4,
        activation: None,
        init: Init::GlorotUniform,
        bias: true,
    }];
    let mut model = Sequential::new(&[2], specs, 0).unwrap();
    let message = train::fit(&mut model, &train_set, None, &config(1, 0.1), &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("3 classes") && message.contains("4 units"),
        "{message}"
    );
}

#[test]
fn training_step_reuses_buffers() {
    let train_set = blobs(64, 1);
    let model = classifier(0);
    let mut params = model.params().clone();
    let mut optimizer = Optimizer::new(config(1, 0.05).optimizer).unwrap();
    let mut workspace = Workspace::new();
    let labels = train_set.labels().unwrap().to_vec();
    let mut capacities = Vec::new();
    for _ in 0..4 {
        let mut graph = Graph::new(&params, &mut workspace, true);
        let x = graph.input(&train_set.features);
        let y = model.forward(&mut graph, x);
        let loss = graph.cross_entropy(y, &labels);
        graph.backward(loss);
        optimizer.step(&mut params, workspace.gradients());
        capacities.push(workspace.capacity());
    }
    assert!(
        capacities[1..].iter().all(|&c| c == capacities[1]),
        "capacities {capacities:?}"
    );
}

#[test]
fn dropout_scales_in_training_and_passes_through_in_evaluation() {
    let params = dendrite::autograd::Parameters::new();
    let mut workspace = Workspace::with_seed(9);
    let ones = Tensor::full(&[100, 100], 1.0);

    let mut graph = Graph::new(&params, &mut workspace, true);
    let x = graph.input(&ones);
    let y = graph.dropout(x, 0.25);
    let values = graph.value(y);
    assert!(
        values
            .iter()
            .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6)
    );
    let kept = values.iter().filter(|&&v| v > 0.0).count() as f64 / values.len() as f64;
    assert!((kept - 0.75).abs() < 0.02, "kept {kept}");

    let mut graph = Graph::new(&params, &mut workspace, false);
    let x = graph.input(&ones);
    let y = graph.dropout(x, 0.25);
    assert_eq!(x, y);
}

#[test]
fn dropout_gradient_uses_the_mask() {
    let mut params = dendrite::autograd::Parameters::new();
    params.push("x", Tensor::full(&[4, 50], 2.0));
    let mut workspace = Workspace::with_seed(1);
    let mut graph = Graph::new(&params, &mut workspace, true);
    let x = graph.param(0);
    let y = graph.dropout(x, 0.5);
    let mask: Vec<f32> = graph.value(y).iter().map(|v| v / 2.0).collect();
    let zero = graph.input(&Tensor::zeros(&[4, 50]));
    let loss = graph.mse(y, zero);
    graph.backward(loss);
    // d/dx mean((m x)^2) = 2 m^2 x / n for each element.
    for (g, m) in workspace.gradient(0).iter().zip(&mask) {
        let expected = 2.0 * m * m * 2.0 / 200.0;
        assert!(
            (g - expected).abs() < 1e-6,
            "gradient {g}, expected {expected}"
        );
    }
}
