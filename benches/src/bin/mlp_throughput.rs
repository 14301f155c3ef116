//! Measures the training throughput of the MLP 784-256-128-10 on the MNIST training digits.
//!
//! The network, optimizer and batch order match `benches/mlp_torch.py`: ReLU hidden layers,
//! SGD with momentum 0.9 and learning rate 0.01, softmax cross-entropy, and a fresh shuffle
//! every epoch from a fixed seed, with the last partial batch kept. One warm-up epoch runs
//! before the clock starts. The program prints one JSON line, which `benches/run.sh` collects.

use std::process::ExitCode;
use std::time::Instant;

use dendrite::autograd::{Graph, Workspace};
use dendrite::data::{Batches, Dataset, MNIST_NUM_CLASSES, load_idx_dataset};
use dendrite::nn::{Activation, Init, LayerSpec, Sequential};
use dendrite::optim::{Optimizer, OptimizerConfig};
use dendrite::rng::Rng;

const USAGE: &str = "\
Usage: mlp-throughput [OPTIONS]

Trains the MLP 784-256-128-10 on MNIST digits and prints one JSON line with the throughput.

Options:
  --threads N     threads for rayon and the matrix multiply (default 1)
  --epochs E      timed epochs, after one untimed warm-up epoch (default 3)
  --batch B       rows per mini-batch (default 64)
  --seed S        seed for the weights and the shuffle order (default 0)
  --images PATH   IDX image file, raw or gzip (default data/mnist/train-images-idx3-ubyte.gz)
  --labels PATH   IDX label file, raw or gzip (default data/mnist/train-labels-idx1-ubyte.gz)
  -h, --help      print this help";

/// Command-line options.
struct Options {
    threads: usize,
    epochs: usize,
    batch: usize,
    seed: u64,
    images: String,
    labels: String,
}

fn parse_options() -> Result<Option<Options>, String> {
    let mut options = Options {
        threads: 1,
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

/// The model and optimizer state of one benchmark run, with the buffers reused across steps.
struct Trainer {
    model: Sequential,
    optimizer: Optimizer,
    workspace: Workspace,
    features: Vec<f32>,
    labels: Vec<usize>,
}

impl Trainer {
    fn new(input_len: usize, seed: u64) -> dendrite::Result<Self> {
        let dense = |units, activation, init| LayerSpec::Dense {
            units,
            activation,
            init,
            bias: true,
        };
        let specs = vec![
            dense(256, Some(Activation::Relu), Init::HeUniform),
            dense(128, Some(Activation::Relu), Init::HeUniform),
            dense(MNIST_NUM_CLASSES, None, Init::GlorotUniform),
        ];
        let model = Sequential::new(&[input_len], specs, seed)?;
        let optimizer = Optimizer::new(OptimizerConfig::Sgd {
            learning_rate: 0.01,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
        })?;

        Ok(Trainer {
            model,
            optimizer,
            workspace: Workspace::new(),
            features: Vec::new(),
            labels: Vec::new(),
        })
    }

    /// Trains one epoch and returns the mean batch loss.
    fn train_epoch(&mut self, dataset: &Dataset, batches: &mut Batches, rng: &mut Rng) -> f64 {
        let input_len = dataset.feature_len();
        let mut loss_sum = 0.0f64;
        let mut steps = 0usize;

        for indices in batches.epoch(rng) {
            dataset.gather_into(indices, &mut self.features);
            dataset.gather_labels_into(indices, &mut self.labels);

            let loss = {
                let mut graph = Graph::new(self.model.params(), &mut self.workspace, true);
                let x = graph.input_slice(&[indices.len(), input_len], &self.features);
                let logits = self.model.forward(&mut graph, x);
                let loss = graph.cross_entropy(logits, &self.labels);
                let value = graph.value(loss)[0];
                graph.backward(loss);
                value
            };
            self.optimizer
                .step(self.model.params_mut(), self.workspace.gradients());

            loss_sum += f64::from(loss);
            steps += 1;
        }
        loss_sum / steps.max(1) as f64
    }
}

fn run(options: &Options) -> Result<(), Box<dyn std::error::Error>> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .build_global()?;
    dendrite::tensor::set_gemm_threads(options.threads);

    let dataset = load_idx_dataset(&options.images, &options.labels, MNIST_NUM_CLASSES)?;
    let mut trainer = Trainer::new(dataset.feature_len(), options.seed)?;
    let mut batches = Batches::new(dataset.len(), options.batch, true)?;
    let mut rng = Rng::new(options.seed);

    // The warm-up epoch sizes every workspace buffer and the optimizer state.
    trainer.train_epoch(&dataset, &mut batches, &mut rng);

    let start = Instant::now();
    let mut loss = 0.0;
    for _ in 0..options.epochs {
        loss = trainer.train_epoch(&dataset, &mut batches, &mut rng);
    }
    let seconds = start.elapsed().as_secs_f64();

    let samples = dataset.len() * options.epochs;
    let steps = batches.num_batches() * options.epochs;
    println!(
        "{{\"framework\":\"dendrite\",\"version\":\"{}\",\"threads\":{},\"batch\":{},\
         \"epochs\":{},\"samples\":{},\"seconds\":{:.4},\"samples_per_s\":{:.1},\
         \"step_us\":{:.1},\"last_epoch_loss\":{:.5}}}",
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
