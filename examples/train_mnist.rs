//! Trains the MNIST multilayer perceptron of `examples/mnist-mlp.toml` through the library
//! API alone, without the `dendrite` command, and prints the accuracy on the test set.
//!
//! Run it from anywhere in the repository:
//!
//! ```text
//! cargo run --release --example train_mnist
//! ```
//!
//! It trains for 5 epochs instead of the config's 40, so it finishes in seconds.

use std::process::ExitCode;

use dendrite::data::{self, MNIST_NUM_CLASSES};
use dendrite::nn::{Activation, Init, LayerSpec, Loss, Sequential};
use dendrite::optim::{OptimizerConfig, Schedule};
use dendrite::train::{self, Callback, EpochRecord, TrainConfig};

/// The bundled MNIST files, found from this crate's folder so that the working directory
/// does not matter.
const DATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/mnist");

/// The fraction of the training digits held out for validation.
const VALIDATION_SPLIT: f64 = 0.1;

/// Prints one line per epoch.
struct PrintEpochs;

impl Callback for PrintEpochs {
    fn on_epoch_end(&mut self, record: &EpochRecord, _model: &Sequential) -> dendrite::Result<()> {
        println!(
            "epoch {}: train_loss {:.4}, val_loss {:.4}, val_accuracy {:.4}",
            record.epoch,
            record.train_loss,
            record.val_loss.unwrap_or(f64::NAN),
            record.val_accuracy.unwrap_or(f64::NAN),
        );
        Ok(())
    }

    fn on_warning(&mut self, message: &str) {
        eprintln!("warning: {message}");
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> dendrite::Result<()> {
    let seed = 0;

    // 10,000 training digits of shape [28, 28] with values in [0, 1], and labels 0 to 9.
    let full_train = data::load_idx_dataset(
        format!("{DATA_DIR}/train-images-idx3-ubyte.gz"),
        format!("{DATA_DIR}/train-labels-idx1-ubyte.gz"),
        MNIST_NUM_CLASSES,
    )?;
    let test = data::load_idx_dataset(
        format!("{DATA_DIR}/t10k-images-idx3-ubyte.gz"),
        format!("{DATA_DIR}/t10k-labels-idx1-ubyte.gz"),
        MNIST_NUM_CLASSES,
    )?;

    // Every digit keeps its share of rows in both parts of the split.
    let labels = full_train.labels().expect("IDX datasets have class labels");
    let (train_rows, validation_rows) = data::stratified_split(labels, VALIDATION_SPLIT, seed)?;
    let train_set = full_train.subset(&train_rows);
    let validation_set = full_train.subset(&validation_rows);
    println!(
        "training on {} digits, validating on {}, testing on {}",
        train_set.len(),
        validation_set.len(),
        test.len()
    );

    let dense = |units, activation| LayerSpec::Dense {
        units,
        activation,
        init: Init::HeUniform,
        bias: true,
    };
    let layers = vec![
        LayerSpec::Flatten,
        LayerSpec::Dropout { rate: 0.2 },
        dense(256, Some(Activation::Relu)),
        LayerSpec::Dropout { rate: 0.3 },
        dense(128, Some(Activation::Relu)),
        LayerSpec::Dropout { rate: 0.3 },
        dense(MNIST_NUM_CLASSES, None),
    ];
    let mut model = Sequential::new(train_set.feature_shape(), layers, seed)?;
    println!("{} parameters", model.params().numel());

    let config = TrainConfig {
        epochs: 5,
        batch_size: 64,
        loss: Loss::CrossEntropy,
        optimizer: OptimizerConfig::Sgd {
            learning_rate: 0.05,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0005,
        },
        seed,
        shuffle: true,
        schedule: Schedule::Cosine {
            warmup_epochs: 0.0,
            min_learning_rate: 0.0,
        },
        early_stopping: None,
        augment: dendrite::data::Augment::default(),
        clip_norm: None,
        clip_value: None,
    };
    train::fit(
        &mut model,
        &train_set,
        Some(&validation_set),
        &config,
        &mut PrintEpochs,
    )?;

    // The test set is used once, after all choices are made.
    let evaluation = train::evaluate(&model, &test, config.loss, 256);
    let accuracy = evaluation
        .accuracy()
        .expect("a classifier's evaluation has an accuracy");
    println!(
        "test: accuracy {accuracy:.4}, loss {:.4} on {} digits",
        evaluation.loss,
        test.len()
    );
    Ok(())
}
