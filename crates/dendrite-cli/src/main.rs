//! The `dendrite` command: train, cross-validate, tune, evaluate and predict from a TOML
//! config.
//!
//! Exit codes: 0 on success, 1 when training stops on a NaN or infinite value, 130 when
//! Ctrl-C stopped training (after writing a checkpoint), 2 for any other error (bad config,
//! bad data, unreadable files).

mod config;
mod cv;
mod fault_config;
mod forecast;
mod html_report;
mod infer;
mod inspect;
mod lr_find;
mod plots;
mod preprocess;
mod report;
mod resume;
mod run_files;
mod runlog;
mod train;
mod tune;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

const CONFIG_HELP: &str = "\
CONFIG KEYS (TOML). Relative paths are resolved against the folder of the config file.

[data]
  format            \"idx\" (images + labels in the MNIST format, raw or gzip), \"image_folder\"
                    (one subfolder of PNG or JPEG images per class), \"csv\" or \"series\"
  validation_split  fraction of the training rows held out for validation, in [0, 1);
                    stratified by class for classifiers (default 0.1 for idx and
                    image_folder, 0 for csv)
  For format = \"idx\":
  train_images, train_labels   the training files (the validation split comes from these)
  test_images, test_labels     optional; used once, for the final test figure
  num_classes                  number of classes (default 10)
  normalize                    standardize pixels with the mean and standard deviation of
                               the training split (default false)
  For format = \"image_folder\" (class names are the subfolder names):
  train             the training folder (the validation split comes from it)
  test              optional test folder with the same class folders
  color             \"rgb\" (default) or \"grayscale\"
  size              [height, width] to resize every image to; without it, all images must
                    have one size
  on_bad_file       \"stop\" (default) or \"skip\" an image that cannot be read; skipped and
                    resized files are counted on standard error
  normalize         standardize each channel with the mean and standard deviation of the
                    training split (default true)
  The color mode, size and channel statistics are stored in model.json, and evaluate and
  predict apply them to new images.
  For format = \"csv\" (a header row; numeric and categorical columns):
  train             the training file (.csv, or gzip-compressed); the validation and test
                    splits come from it
  test              optional test file with the same columns, in any order
  target            the target column name, or a list of names for several outputs
  task              \"classification\" (integer or text labels) or \"regression\"
  test_split        fraction of the training file held out as the test split (default 0;
                    stratified by class for classifiers; not with test)
  delimiter         \",\", \";\", \"\\t\" or another character (default: detected among
                    comma, semicolon and tab)
  ignore            columns to leave out, such as free text: [\"comment\"]
  id_column         a column that names each row; not a feature, and predict copies it
  column_types      kinds that override the inferred ones:
                    { rate = \"categorical\", code = \"numeric\" }; a column is inferred numeric
                    if all its present values are numbers
  missing_values    cell texts that mean a missing value (default [\"\", \"NA\", \"?\"])
  missing           \"error\" (default), \"mean\" (mean of numeric columns, most frequent
                    category) or \"most_frequent\" (most frequent value of every column)
  missing_indicator add a 0/1 feature for each column with missing training values
                    (default false)
  unknown_category  a category not seen in training: \"error\" (default) or \"ignore\"
                    (encoded as all zeros; such rows are counted on standard error)
  standardize       scale numeric columns to mean 0 and standard deviation 1 (default true)
  class_weights     \"balanced\" or { bad = 5.0, good = 1.0 } (classes not listed get 1)
  The column kinds are inferred from the whole training file. Means, standard deviations,
  categories and imputed values come from the training split only; model.json stores them,
  and evaluate and predict apply them to new files.

  For format = \"series\" (a time series; see evaluate and forecast):
  file              the CSV file with the whole series
  time_column       optional; integers, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, strictly
                    increasing; without it the rows are in time order
  value_columns     the columns to forecast; they are also inputs
  feature_columns   extra numeric input columns (needs forecast = \"direct\")
  lookback          input steps per window
  horizon           steps predicted per window (default 1); the last layer needs
                    horizon x value columns units
  stride            steps between training windows (default 1)
  difference        lag of differencing before scaling, 0 (default) for none
  scaling           \"standard\" (default), \"min_max\" or \"none\", fitted on the training part
  season_length     steps per season, for the seasonal naive baseline
  test_length       steps at the end held out as the test part
  validation_length steps before the test part held out for validation (default 0)
  forecast          \"recursive\" (default) or \"direct\"
  missing           \"error\" (default), \"drop\", \"forward_fill\" or \"interpolate\"
  max_memory_mib    the largest buffer reading or batching may allocate (default 1024)

[model]
  positive_class    for two classes: the class whose probability decides (default: the
                    second class in sorted order)
  decision_threshold  for two classes: the lowest probability of the positive class that
                    predicts it (default 0.5); stored in model.json and used by evaluate
                    and predict
  layers            a list of tables, applied in order:
                    { type = \"dense\", units = N, activation = \"relu\", init = \"he_uniform\",
                      bias = true }
                    { type = \"activation\", activation = \"tanh\" }
                    { type = \"flatten\" }
                    { type = \"conv2d\", filters = N, kernel_size = K, stride = 1,
                      padding = 0, activation = \"relu\" }
                    { type = \"max_pool2d\", kernel_size = 2 }, { type = \"avg_pool2d\", ... },
                    { type = \"global_avg_pool2d\" }
                    { type = \"lstm\", units = N, num_layers = 1, return_sequences = false,
                      init = \"glorot_uniform\", recurrent_init = \"orthogonal\" }, also
                      \"rnn\" (tanh) and \"gru\"; input [time, features]
                    { type = \"conv1d\", filters = N, kernel_size = K, stride = 1,
                      padding = 0, activation = \"relu\" }; input [time, channels]
                    activations: identity, relu, gelu, sigmoid, tanh, step,
                      { leaky_relu = { slope = 0.01 } }, { elu = { alpha = 1.0 } }
                    inits: glorot_uniform (default), glorot_normal, he_uniform, he_normal,
                      lecun_normal, orthogonal, zeros

[training]
  epochs            passes over the training data
  batch_size        rows per minibatch (the last batch of an epoch may be smaller)
  loss              \"cross_entropy\", \"binary_cross_entropy\" or \"mse\"
  seed              seed for weights, validation split and shuffling (default 0)
  shuffle           shuffle the rows every epoch (default true)
  clip_norm         scale all gradients of a step when their global L2 norm exceeds this
                    (default off)
  clip_value        clamp every gradient value to [-clip_value, clip_value] (default off)
[training.optimizer]
  type = \"sgd\"      learning_rate, momentum (0), nesterov (false), weight_decay (0)
  type = \"adam\"     learning_rate (0.001), beta1 (0.9), beta2 (0.999), epsilon (1e-8),
                    weight_decay (0, added to the gradient)
  type = \"adamw\"    as adam, weight_decay (0.01, applied to the weights)
  type = \"rmsprop\"  learning_rate (0.01), alpha (0.99), epsilon (1e-8), momentum (0),
                    weight_decay (0)
[training.early_stopping]
  patience          epochs without a lower validation loss before stopping
  min_delta         smallest decrease that counts as lower (default 0)
  restore_best      put back the best epoch's weights at the end (default true)
[training.schedule] the learning rate over the epochs (default: constant)
  type = \"step\"          step_epochs, gamma: multiply by gamma every step_epochs epochs
  type = \"exponential\"   gamma: multiply by gamma after every epoch
  type = \"cosine\"        warmup_epochs (0): linear rise from 0, then half a cosine down to
                         min_learning_rate (0) at the end of the last epoch
  type = \"one_cycle\"     pct_start (0.3), div_factor (25), final_div_factor (1e4): half a
                         cosine up from learning_rate / div_factor to learning_rate over
                         pct_start of training, then down to learning_rate / (div_factor *
                         final_div_factor)
  type = \"reduce_on_plateau\"  factor (0.1), patience (3), min_delta (0),
                         min_learning_rate (0): multiply by factor after patience epochs
                         without a lower validation loss
  metrics.jsonl records the learning rate of each epoch's last step.
[training.augment]  random changes to training images only, drawn from the seed (all off)
  crop_padding      zero padding in pixels on each side before a random crop of the
                    original size
  horizontal_flip   mirror left to right with probability 1/2
  max_shift         random translation of up to this many pixels along each axis
[training.checkpoint]  checkpoints in OUT/checkpoints for --resume (train only)
  every_steps       write one every N optimizer steps
  every_epochs      write one every N epochs (default 1 when neither key is set)
  keep              the number of newest checkpoints kept (default 3)
[training.non_finite]  what a NaN or infinite loss or gradient does (train only)
  policy            \"stop\" (default), \"skip\" the batch, or \"rollback\" to the start of
                    the epoch and train it again with a lower learning rate
  learning_rate_factor  rollback divides the learning rate by this (default 10)
  max_rollbacks     the most rollbacks before training stops (default 3)
";

const SEARCH_HELP: &str = "\
THE [search] TABLE (dendrite train ignores it)

[search]
  strategy          \"random\" (default), \"grid\", \"tpe\" (Tree-structured Parzen Estimator
                    after startup_trials random trials) or \"halving\" (successive halving)
  trials            configs to try (for halving: the configs of the first rung)
  time_budget_seconds  start no new trials after this many seconds
  seed              seed of the proposals (default 0); the same seed proposes the same trials
  metric            \"accuracy\" (default for classifiers) or \"loss\" (default for regression),
                    on the validation split
  parallel          trials trained at once (default: one per 2 cores); each gets
                    cores / parallel threads
  retrain           retrain the best config and evaluate it once on the test split
                    (default true)
  grid_points       values per numeric parameter for the grid (default 3)
  reduction_factor  halving keeps 1 config in this many per rung (default 3)
  min_epochs        halving: fewest epochs of the first rung (default 1)
  startup_trials    tpe: random trials first (default max(5, trials / 4))
[[search.parameters]]  one table per searched config key
  key               dotted config key, with array indices: \"training.optimizer.learning_rate\",
                    \"model.layers.1.units\", \"training.batch_size\"
  distribution      \"log_uniform\" or \"uniform\" (low, high), \"int_uniform\" (integer low,
                    high, both included) or \"categorical\" (values = [...])
  Keys that change the held-out rows (training.seed, data.validation_split, data.test_split,
  the data files) cannot be searched.

OUTPUT FILES
  journal.jsonl     one line per finished trial; running the same command again continues
                    a stopped search
  trials.csv        every trial with its values and validation figures
  best.toml         the best config, for dendrite train
  best/             the best config retrained; its summary.json has the one test figure
  report.json       number of trials, the best trial, and the test figure
";

/// Train, cross-validate, tune, evaluate and use neural networks from a TOML config.
#[derive(Debug, Parser)]
#[command(name = "dendrite", version, about, max_term_width = 100)]
struct Cli {
    /// Number of threads for training and inference (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the model a config describes and write it with its metrics.
    ///
    /// Writes into the output folder: model.safetensors and model.json (the trained model),
    /// metrics.jsonl (one JSON line per epoch), timing.jsonl (seconds per epoch),
    /// checkpoints/ (with checkpoints configured, or on Ctrl-C), steps.jsonl (gradient norms every 10 steps),
    /// summary.json (the final metrics of the train, validation and test splits), run.json
    /// (config, data summary, timing), the charts in plots/ and report.html. The test split
    /// is evaluated once, at the end.
    #[command(after_long_help = CONFIG_HELP)]
    Train {
        /// The TOML config.
        config: PathBuf,
        /// Output folder (default: the run folder of --resume, else runs/<config file name
        /// without extension>).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Do not show the progress bar.
        #[arg(long)]
        quiet: bool,
        /// Also write TensorBoard event files (losses, validation metrics, learning rate) to
        /// the tensorboard/ folder of the output folder.
        #[arg(long)]
        tensorboard: bool,
        /// Continue a run from the newest valid checkpoint in DIR: a run folder, its
        /// checkpoints/ folder or one checkpoint folder. Damaged checkpoints are skipped with a
        /// warning. Use the config, data and --threads of the interrupted run.
        #[arg(long, value_name = "DIR")]
        resume: Option<PathBuf>,
        /// Write a checkpoint to OUT/checkpoints every N optimizer steps (replaces
        /// [training.checkpoint]).
        #[arg(long, value_name = "N")]
        checkpoint_every_steps: Option<u64>,
        /// Write a checkpoint to OUT/checkpoints every N epochs (replaces
        /// [training.checkpoint]).
        #[arg(long, value_name = "N")]
        checkpoint_every_epochs: Option<usize>,
    },
    /// Rebuild report.html and the charts of a run folder from its files.
    Report {
        /// The output folder of `dendrite train`.
        run_dir: PathBuf,
    },
    /// Print a saved model's layers with their output shapes and parameter counts, the
    /// total, and the preprocessing stored with it.
    Inspect {
        /// The model folder (or its model.json).
        model: PathBuf,
    },
    /// Estimate a config's test figures by k-fold cross-validation on its training file.
    ///
    /// Each fold trains a new model on the other folds, with the preprocessing fitted on
    /// them, and evaluates it on the fold. Prints each fold's metrics, then the mean and the
    /// sample standard deviation of each metric. The test split (data.test_split) is left
    /// out and a test file is not read. Only format = "csv" is supported.
    Cv {
        /// The TOML config.
        config: PathBuf,
        /// Number of folds, stratified by class for classifiers.
        #[arg(long, value_name = "K", default_value_t = 5)]
        folds: usize,
        /// Also write the per-fold metrics, means and standard deviations to FILE as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Search hyperparameters on the validation split, then evaluate the best config once on
    /// the test split.
    ///
    /// The [search] table of the config declares the parameters and the strategy. Each trial
    /// trains on the training split and is scored on the validation split; trials never read
    /// a test row. At the end, the table of trials is printed and written, report.html shows
    /// the trials and the validation score against each parameter, the best config is
    /// written as a TOML file, and the best config is retrained and evaluated once on the test
    /// split, reported on its own line. A stopped search continues from its journal.
    #[command(after_long_help = SEARCH_HELP)]
    Tune {
        /// The TOML config, with a [search] table.
        config: PathBuf,
        /// Output folder (default: runs/<config file name without extension>-tune).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Do not retrain the best config or read the test split.
        #[arg(long)]
        no_retrain: bool,
    },
    /// Run the learning-rate range test and suggest a learning rate.
    ///
    /// Trains from the config's initial weights with a learning rate that grows exponentially
    /// from --min-lr to --max-lr over --steps steps, and stops when the smoothed loss exceeds
    /// 4 times its lowest value. Suggests a tenth of the rate with the lowest smoothed loss.
    /// Uses the training split only. Writes lr-find.csv, lr-find.svg and lr-find.png.
    LrFind {
        /// The TOML config.
        config: PathBuf,
        /// Output folder (default: runs/<config file name without extension>-lr-find).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Optimizer steps of the ramp.
        #[arg(long, value_name = "N", default_value_t = 300)]
        steps: usize,
        /// The learning rate of the first step.
        #[arg(long, value_name = "RATE", default_value_t = 1e-7)]
        min_lr: f32,
        /// The learning rate of the last step.
        #[arg(long, value_name = "RATE", default_value_t = 10.0)]
        max_lr: f32,
    },
    /// Print the loss and metrics of a saved model on a labelled data set.
    ///
    /// Classifiers: accuracy, precision, recall and F1 per class and macro-averaged, ROC AUC
    /// for two classes, and the confusion matrix. Regression: MSE, RMSE, MAE and R².
    Evaluate {
        /// The model folder (or its model.json).
        model: PathBuf,
        /// An IDX image file (labels are found by MNIST naming or given with --labels), an image
        /// folder with one subfolder per class, or a CSV file with the model's feature and
        /// target columns (in any order).
        data: PathBuf,
        /// The IDX label file that goes with DATA.
        #[arg(long, value_name = "FILE")]
        labels: Option<PathBuf>,
        /// Also write the metrics to FILE as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Write the predicted class and the class probabilities (or the predicted values) of
    /// each row as CSV.
    ///
    /// The first column names the row: the model's ID column for CSV input if it has one,
    /// the file for image input, the row number otherwise. A binary classifier predicts with
    /// its stored decision threshold.
    Predict {
        /// The model folder (or its model.json).
        model: PathBuf,
        /// An image file (.png, .jpg, .jpeg), a folder of image files, an IDX image file, or a
        /// CSV file with the model's feature columns (in any order; other columns are
        /// ignored). A folder is searched recursively, and its rows are sorted and named by
        /// the path relative to it.
        input: PathBuf,
        /// Write the CSV to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Forecast the next K values after the end of a series with a model trained on
    /// `format = "series"`, and write them as CSV with their timestamps.
    ///
    /// The file is read and prepared with the preprocessing stored in model.json. The model
    /// predicts from the last `lookback` rows; with `forecast = "recursive"` it feeds its
    /// predictions back in to go past its horizon, with `forecast = "direct"` K may be at
    /// most the horizon. Timestamps continue from the last one by the most common step of
    /// the file.
    Forecast {
        /// The model folder (or its model.json).
        model: PathBuf,
        /// The series CSV file, with the columns the model was trained on.
        series: PathBuf,
        /// The number of steps to forecast.
        #[arg(long, value_name = "K")]
        steps: usize,
        /// Write the CSV to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Write IDX images as PNG files in an image folder: OUT_DIR/<label>/<row>.png.
    ///
    /// The result is the layout that `[data] format = "image_folder"` reads, for example from
    /// the bundled MNIST files.
    ExportImages {
        /// The IDX image file (raw or gzip).
        images: PathBuf,
        /// The IDX label file that goes with IMAGES.
        labels: PathBuf,
        /// The folder to write; class folders are created in it as needed.
        out_dir: PathBuf,
        /// Write only the first N images.
        #[arg(long, value_name = "N")]
        count: Option<usize>,
        /// Number of classes; labels must be below it.
        #[arg(long, value_name = "N", default_value_t = 10)]
        num_classes: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = cli.threads.unwrap_or(0);
    if cli.threads == Some(0) {
        eprintln!("error: --threads must be at least 1");
        return ExitCode::from(2);
    }
    dendrite::tensor::set_gemm_threads(threads);

    // The command runs on a thread of the pool, so that the thread driving training also
    // takes its share of each parallel kernel instead of waiting for the others.
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool,
        Err(error) => {
            eprintln!("error: cannot start {threads} threads: {error}");
            return ExitCode::from(2);
        }
    };
    let result = pool.install(|| match cli.command {
        Command::Train {
            config,
            out,
            quiet,
            tensorboard,
            resume,
            checkpoint_every_steps,
            checkpoint_every_epochs,
        } => train::run(
            &config,
            out,
            quiet,
            tensorboard,
            train::Recovery {
                resume,
                checkpoint_flags: resume::CheckpointFlags {
                    every_steps: checkpoint_every_steps,
                    every_epochs: checkpoint_every_epochs,
                },
            },
        ),
        Command::Report { run_dir } => html_report::run(&run_dir),
        Command::Inspect { model } => inspect::run(&model),
        Command::Cv {
            config,
            folds,
            json,
        } => cv::run(&config, folds, json.as_deref()),
        Command::Tune {
            config,
            out,
            no_retrain,
        } => tune::run(&config, tune::TuneOptions { out, no_retrain }),
        Command::LrFind {
            config,
            out,
            steps,
            min_lr,
            max_lr,
        } => lr_find::run(
            &config,
            out,
            dendrite::train::RangeTest {
                min_learning_rate: min_lr,
                max_learning_rate: max_lr,
                steps,
                ..Default::default()
            },
        ),
        Command::Evaluate {
            model,
            data,
            labels,
            json,
        } => infer::evaluate(&model, &data, labels.as_deref(), json.as_deref()),
        Command::Predict { model, input, out } => infer::predict(&model, &input, out.as_deref()),
        Command::Forecast {
            model,
            series,
            steps,
            out,
        } => forecast::forecast(&model, &series, steps, out.as_deref()),
        Command::ExportImages {
            images,
            labels,
            out_dir,
            count,
            num_classes,
        } => infer::export_images(&images, &labels, &out_dir, count, num_classes),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let non_finite = error.chain().any(|e| {
                matches!(
                    e.downcast_ref::<dendrite::Error>(),
                    Some(dendrite::Error::NonFinite { .. })
                )
            });
            let interrupted = error.chain().any(|e| {
                matches!(
                    e.downcast_ref::<dendrite::Error>(),
                    Some(dendrite::Error::Interrupted { .. })
                )
            });
            let next_step = error
                .downcast_ref::<train::NextStep>()
                .map(|n| n.to_string());
            eprintln!("error: {}", one_line(&error));
            if let Some(hint) = storage_hint(&error) {
                eprintln!("{hint}");
            }
            if let Some(next_step) = next_step {
                eprintln!("{next_step}");
            }
            ExitCode::from(match (non_finite, interrupted) {
                (true, _) => 1,
                (_, true) => 130,
                _ => 2,
            })
        }
    }
}

/// Returns what to do after a write failed on a full disk or a read-only file system. Every
/// file is written through a temporary file and a rename, so earlier files are intact.
fn storage_hint(error: &anyhow::Error) -> Option<&'static str> {
    let kind = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<std::io::Error>())?
        .kind();
    match kind {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Some(
            "the disk is full: free some space, or write to another disk with --out; \
             files written before this error are unchanged",
        ),
        std::io::ErrorKind::ReadOnlyFilesystem => Some(
            "the folder is on a read-only file system: write to another folder with --out; \
             the files already there are unchanged",
        ),
        _ => None,
    }
}

/// Joins an error and its causes into one line, skipping a cause already in the message and
/// a [`train::NextStep`], which is printed on a line of its own.
fn one_line(error: &anyhow::Error) -> String {
    let next_step = error
        .downcast_ref::<train::NextStep>()
        .map(ToString::to_string);
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) || next_step.as_ref() == Some(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
