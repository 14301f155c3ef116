//! Measures the training throughput of the MLP 784-256-128-10 on the MNIST training digits.
//!
//! The workload matches `benches/mlp_torch.py`: ReLU hidden layers, SGD with momentum 0.9 and
//! learning rate 0.01, softmax cross-entropy, and a fresh shuffle every epoch from a fixed seed,
//! with the last partial batch kept. Each framework draws its own shuffle order and initial
//! weights (He uniform here, PyTorch's default there), which changes the loss but not the work
//! per step. It trains through `dendrite::train::fit`, the loop the `dendrite` command uses, so
//! the figure is what users get. One warm-up epoch runs before the clock starts. The program
//! prints one JSON line, which `benches/run.sh` collects.

use std::process::ExitCode;

use dendrite::data::{MNIST_NUM_CLASSES, load_idx_dataset};
use dendrite::nn::{Activation, Init, LayerSpec, Loss, Sequential};
use dendrite::optim::{OptimizerConfig, Schedule};
use dendrite::train::{self, Silent, TrainConfig};

const USAGE: &str = "\
Usage: mlp-throughput [OPTIONS]

Trains the MLP 784-256-128-10 on MNIST digits and prints one JSON line with the throughput.

Options:
  --threads N     threads for rayon and the matrix multiply (default 1)
  --model M       mlp (784-256-128-10) or lenet (the LeNet-5 style CNN) (default mlp)
  --epochs E      timed epochs, after one untimed warm-up epoch (default 3)
  --batch B       rows per mini-batch (default 64)
  --seed S        seed for the weights and the shuffle order (default 0)
  --images PATH   IDX image file, raw or gzip (default data/mnist/train-images-idx3-ubyte.gz)
  --labels PATH   IDX label file, raw or gzip (default data/mnist/train-labels-idx1-ubyte.gz)
  -h, --help      print this help";

/// Command-line options.
struct Options {
    threads: usize,
    model: String,
    epochs: usize,
    batch: usize,
    seed: u64,
    images: String,
    labels: String,
}

fn parse_options() -> Result<Option<Options>, String> {
    let mut options = Options {
        threads: 1,
        model: "mlp".to_string(),
        epochs: 3,
        batch: 64,
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
            "--batch" => options.batch = parse_positive(&flag, &value)?,
            "--seed" => {
                options.seed = value
                    .parse()
                    .map_err(|_| format!("invalid {flag} value {value:?}: expected an integer"))?;
            }
            "--model" if value == "mlp" || value == "lenet" => options.model = value,
            "--model" => return Err(format!("unknown model {value:?}: expected mlp or lenet")),
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

fn run(options: &Options) -> Result<(), Box<dyn std::error::Error>> {
    // The same setup as the `dendrite` command: the training loop runs inside the pool.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .build()?;
    dendrite::tensor::set_gemm_threads(options.threads);

    let dataset = load_idx_dataset(&options.images, &options.labels, MNIST_NUM_CLASSES)?;
    let dense = |units, activation, init| LayerSpec::Dense {
        units,
        activation,
        init,
        bias: true,
    };
    let relu = Some(Activation::Relu);
    let mut specs = Vec::new();
    if options.model == "lenet" {
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
    let mut model = Sequential::new(dataset.feature_shape(), specs, options.seed)?;
    let config = TrainConfig {
        // The first epoch is a warm-up that sizes every buffer and the optimizer state.
        epochs: 1 + options.epochs,
        batch_size: options.batch,
        loss: Loss::CrossEntropy,
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
    let steps = dataset.len().div_ceil(options.batch) * options.epochs;
    let loss = timed.last().map_or(f64::NAN, |record| record.train_loss);
    println!(
        "{{\"framework\":\"dendrite\",\"model\":\"{}\",\"version\":\"{}\",\"threads\":{},\"batch\":{},\
         \"epochs\":{},\"samples\":{},\"seconds\":{:.4},\"samples_per_s\":{:.1},\
         \"step_us\":{:.1},\"last_epoch_loss\":{:.5}}}",
        options.model,
        env!("CARGO_PKG_VERSION"),
        options.threads,
        options.batch,
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
