//! Measures dendrite's training throughput on one of three models, chosen with `--model`:
//!
//! - `mlp`: the MLP 784-256-128-10 with ReLU hidden layers and softmax cross-entropy, on the
//!   MNIST training digits, batch 64.
//! - `lenet`: the LeNet-5 style CNN (conv 5x5 1->6 padding 2, max pool, conv 5x5 6->16, max
//!   pool, dense 400-120-84-10) on the same digits as 28x28 images, batch 64.
//! - `lstm`: an LSTM with 64 units over windows of 32 steps of one feature, then a dense layer
//!   to 1 output, MSE loss, on 10,000 windows of a synthetic series, batch 32 (see
//!   [`series_dataset`]).
//!
//! The workload matches `benches/mlp_torch.py`: SGD with momentum 0.9 and learning rate 0.01,
//! and a fresh shuffle every epoch from a fixed seed, with the last partial batch kept. Each
//! framework draws its own shuffle order and initial weights, which changes the loss but not
//! the work per step. It trains through `dendrite::train::fit`, the loop the `dendrite` command
//! uses, so the figure is what users get. One warm-up epoch runs before the clock starts. The
//! program prints one JSON line, which `benches/run.sh` collects.

use std::process::ExitCode;

use dendrite::data::{Dataset, MNIST_NUM_CLASSES, Targets, load_idx_dataset};
use dendrite::nn::{Activation, Init, LayerSpec, Loss, Sequential};
use dendrite::optim::{OptimizerConfig, Schedule};
use dendrite::tensor::Tensor;
use dendrite::train::{self, Silent, TrainConfig};

const USAGE: &str = "\
Usage: mlp-throughput [OPTIONS]

Trains one model and prints one JSON line with the throughput. The models:
  mlp     the MLP 784-256-128-10 on MNIST digits
  lenet   the LeNet-5 style CNN on MNIST digits as 28x28 images
  lstm    an LSTM with 64 units and a dense layer to 1 output, on 10,000 windows of 32 steps
          of a synthetic series (no data files needed)

Options:
  --threads N     threads for rayon and the matrix multiply (default 1)
  --model M       mlp, lenet or lstm (default mlp)
  --epochs E      timed epochs, after one untimed warm-up epoch (default 3)
  --batch B       rows per mini-batch (default 64 for mlp and lenet, 32 for lstm)
  --seed S        seed for the weights and the shuffle order (default 0)
  --images PATH   IDX image file, raw or gzip, for mlp and lenet
                  (default data/mnist/train-images-idx3-ubyte.gz)
  --labels PATH   IDX label file, raw or gzip, for mlp and lenet
                  (default data/mnist/train-labels-idx1-ubyte.gz)
  -h, --help      print this help";

/// The values of `--model`.
const MODELS: [&str; 3] = ["mlp", "lenet", "lstm"];

/// Length of each training window of the `lstm` model, in steps.
const SERIES_LOOKBACK: usize = 32;

/// Number of training windows of the `lstm` model.
const SERIES_WINDOWS: usize = 10_000;

/// Command-line options.
struct Options {
    threads: usize,
    model: String,
    epochs: usize,
    /// Rows per mini-batch, or `None` for the model's default from [`default_batch`].
    batch: Option<usize>,
    seed: u64,
    images: String,
    labels: String,
}

fn parse_options() -> Result<Option<Options>, String> {
    let mut options = Options {
        threads: 1,
        model: "mlp".to_string(),
        epochs: 3,
        batch: None,
        seed: 0,
        images: "data/mnist/train-images-idx3-ubyte.gz".to_string(),
        labels: "data/mnist/train-labels-idx1-ubyte.gz".to_string(),
    };

    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }

        let value = args
            .next()
            .ok_or_else(|| format!("option {flag} is missing its value"))?;
        match flag.as_str() {
            "--threads" => options.threads = parse_positive(&flag, &value)?,
            "--epochs" => options.epochs = parse_positive(&flag, &value)?,
            "--batch" => options.batch = Some(parse_positive(&flag, &value)?),
            "--seed" => {
                options.seed = value
                    .parse()
                    .map_err(|_| format!("invalid {flag} value {value:?}: expected an integer"))?;
            }
            "--model" if MODELS.contains(&value.as_str()) => options.model = value,
            "--model" => {
                return Err(format!(
                    "unknown model {value:?}: expected mlp, lenet or lstm"
                ));
            }
            "--images" => options.images = value,
            "--labels" => options.labels = value,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(Some(options))
}

fn parse_positive(flag: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid {flag} value {value:?}: expected an integer of at least 1"
        )),
    }
}

/// Returns the default rows per mini-batch of `model`.
fn default_batch(model: &str) -> usize {
    if model == "lstm" { 32 } else { 64 }
}

/// Builds the synthetic series dataset of the `lstm` model: the series
/// `x_t = sin(0.1 t) + 0.5 sin(0.037 t)` for `t` from 0 to 10,031, computed in `f64` and rounded to
/// `f32` as `mlp_torch.py` does, cut into 10,000 windows. Window `i` has the inputs
/// `x_i..x_{i+31}` (shape `[32, 1]`) and the target `x_{i+32}`.
fn series_dataset() -> Result<Dataset, dendrite::Error> {
    let series: Vec<f32> = (0..SERIES_WINDOWS + SERIES_LOOKBACK)
        .map(|t| {
            let t = t as f64;
            ((0.1 * t).sin() + 0.5 * (0.037 * t).sin()) as f32
        })
        .collect();

    let mut features = Vec::with_capacity(SERIES_WINDOWS * SERIES_LOOKBACK);
    for start in 0..SERIES_WINDOWS {
        features.extend_from_slice(&series[start..start + SERIES_LOOKBACK]);
    }
    let targets = series[SERIES_LOOKBACK..].to_vec();

    Dataset::new(
        Tensor::from_vec(&[SERIES_WINDOWS, SERIES_LOOKBACK, 1], features),
        Targets::Values(Tensor::from_vec(&[SERIES_WINDOWS, 1], targets)),
    )
}

/// Returns the layers of the `mlp` or `lenet` model, for MNIST digits.
fn mnist_specs(model: &str) -> Vec<LayerSpec> {
    let dense = |units, activation, init| LayerSpec::Dense {
        units,
        activation,
        init,
        bias: true,
    };
    let relu = Some(Activation::Relu);
    let mut specs = Vec::new();
    if model == "lenet" {
        let conv = |filters, padding| LayerSpec::Conv2d {
            filters,
            kernel_size: 5,
            stride: 1,
            padding,
            dilation: 1,
            groups: 1,
            activation: relu,
            init: Init::HeUniform,
            bias: true,
        };
        let pool = LayerSpec::MaxPool2d {
            kernel_size: 2,
            stride: None,
            padding: 0,
        };
        specs.extend([
            conv(6, 2),
            pool.clone(),
            conv(16, 0),
            pool,
            LayerSpec::Flatten,
        ]);
        specs.push(dense(120, relu, Init::HeUniform));
        specs.push(dense(84, relu, Init::HeUniform));
    } else {
        specs.push(dense(256, relu, Init::HeUniform));
        specs.push(dense(128, relu, Init::HeUniform));
    }
    specs.push(dense(MNIST_NUM_CLASSES, None, Init::GlorotUniform));
    specs
}

/// Returns the layers of the `lstm` model: one LSTM layer with 64 units that returns its last
/// hidden state, then a dense layer to 1 output, with dendrite's default initializations.
fn lstm_specs() -> Vec<LayerSpec> {
    vec![
        LayerSpec::Lstm {
            units: 64,
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
    ]
}

fn run(options: &Options) -> Result<(), Box<dyn std::error::Error>> {
    // The same setup as the `dendrite` command: the training loop runs inside the pool.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .build()?;
    dendrite::tensor::set_gemm_threads(options.threads);

    let (dataset, specs, loss) = if options.model == "lstm" {
        (series_dataset()?, lstm_specs(), Loss::Mse)
    } else {
        let dataset = load_idx_dataset(&options.images, &options.labels, MNIST_NUM_CLASSES)?;
        (dataset, mnist_specs(&options.model), Loss::CrossEntropy)
    };
    let batch = options.batch.unwrap_or(default_batch(&options.model));
    let mut model = Sequential::new(dataset.feature_shape(), specs, options.seed)?;
    let config = TrainConfig {
        // The first epoch is a warm-up that sizes every buffer and the optimizer state.
        epochs: 1 + options.epochs,
        batch_size: batch,
        loss,
        optimizer: OptimizerConfig::Sgd {
            learning_rate: 0.01,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        },
        seed: options.seed,
        shuffle: true,
        schedule: Schedule::Constant,
        early_stopping: None,
        augment: dendrite::data::Augment::default(),
        clip_norm: None,
        clip_value: None,
    };
    let history = pool.install(|| train::fit(&mut model, &dataset, None, &config, &mut Silent))?;

    let timed = &history.epochs[1..];
    let seconds: f64 = timed.iter().map(|record| record.seconds).sum();
    let samples = dataset.len() * options.epochs;
    let steps = dataset.len().div_ceil(batch) * options.epochs;
    let loss = timed.last().map_or(f64::NAN, |record| record.train_loss);
    println!(
        "{{\"framework\":\"dendrite\",\"model\":\"{}\",\"version\":\"{}\",\"threads\":{},\"batch\":{},\
         \"epochs\":{},\"samples\":{},\"seconds\":{:.4},\"samples_per_s\":{:.1},\
         \"step_us\":{:.1},\"last_epoch_loss\":{:.5}}}",
        options.model,
        env!("CARGO_PKG_VERSION"),
        options.threads,
        batch,
        options.epochs,
        samples,
        seconds,
        samples as f64 / seconds,
        seconds * 1e6 / steps as f64,
        loss,
    );
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
