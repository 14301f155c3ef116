//! `dendrite train`.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dendrite::data::{Dataset, Targets};
use dendrite::model::{self, DecisionThreshold, ModelInfo, Task};
use dendrite::nn::Sequential;
use dendrite::train::{self, Callback, EpochRecord, Evaluation, FitOptions, StepRecord};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};

use crate::config::{Config, ModelConfig, PreparedData, name_config};
use crate::html_report;
use crate::resume::{self, CheckpointFlags};
use crate::run_files::{self, DataSummary, RunInfo, Timing};
use crate::runlog::{GRADIENT_NORM_INTERVAL, RunLog};

/// A line printed after an error: the command that continues the work.
#[derive(Debug)]
pub struct NextStep(pub String);

impl std::fmt::Display for NextStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "continue with: {}", self.0)
    }
}

/// Returns which model a run stopped by non-finite values left in `out_dir`: the initial
/// weights if no epoch finished, else the last ones without non-finite values.
pub fn kept_model(error: &dendrite::Error, out_dir: &Path, resumed: bool) -> String {
    match error {
        dendrite::Error::NonFinite { epoch: 1, .. } if !resumed => format!(
            "training stopped before the first epoch finished; the model in {} has its \
             initial weights",
            out_dir.display()
        ),
        _ => format!(
            "training stopped; the last model without non-finite values is in {}",
            out_dir.display()
        ),
    }
}

/// Runs `dendrite train CONFIG [--out DIR] [--tensorboard] [--resume DIR]`.
pub fn run(
    config_path: &Path,
    out: Option<PathBuf>,
    quiet: bool,
    tensorboard: bool,
    recovery: Recovery,
) -> Result<()> {
    let started = Instant::now();
    let config = Config::load(config_path)?;
    if let crate::config::DataConfig::Series(series) = &config.data {
        return crate::forecast::train(
            config_path,
            &config,
            series,
            out,
            quiet,
            tensorboard,
            started,
        );
    }

    // Everything that can fail on bad input is checked before the output folder is touched.
    let PreparedData {
        train: train_set,
        validation: validation_set,
        test,
        preprocessing,
        tabular,
        class_weights,
        warnings,
        notes,
    } = config
        .data
        .prepare(config.training.seed)
        .map_err(|e| name_config(e, config_path))?;
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    for note in &notes {
        eprintln!("note: {note}");
    }
    let mut model = Sequential::new(
        train_set.feature_shape(),
        config.model.layers.clone(),
        config.training.seed,
    )
    .with_context(|| format!("{}: [model]", config_path.display()))?;
    let target_names = tabular
        .as_ref()
        .map(|tabular| tabular.targets.clone())
        .unwrap_or_default();
    let task = task_of(&train_set, target_names);
    let decision_threshold = decision_threshold(&config.model, &task)
        .with_context(|| format!("{}: [model]", config_path.display()))?;
    let info = ModelInfo {
        loss: config.training.loss,
        task,
        preprocessing,
        tabular,
        series: None,
        decision_threshold,
    };
    let decision = info.binary_decision()?;

    let resume_from = match &recovery.resume {
        Some(dir) => Some(resume::find_checkpoint(dir)?),
        None => None,
    };
    // Without --out, a resumed run writes into the run folder of its checkpoint.
    let resumed_run = resume_from.as_ref().and_then(resume::run_folder);
    let out_dir = out.or_else(|| resumed_run.clone()).unwrap_or_else(|| {
        let stem = config_path
            .file_stem()
            .map_or_else(|| "run".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from("runs").join(stem)
    });
    // Checkpoints in the output folder belong to another run unless this run continues
    // them.
    let continues_in_place =
        resumed_run.is_some() && resumed_run == std::fs::canonicalize(&out_dir).ok();
    if !continues_in_place {
        resume::check_no_earlier_checkpoints(&out_dir)?;
    }

    println!(
        "training on {} rows, validating on {}, testing on {}; {} parameters",
        train_set.len(),
        validation_set.as_ref().map_or(0, |v| v.len()),
        test.as_ref().map_or(0, |t| t.len()),
        model.params().numel()
    );

    let checkpoints = resume::checkpoint_options(
        &out_dir,
        config.checkpoint.as_ref(),
        recovery.checkpoint_flags,
        resume_from
            .as_ref()
            .and_then(|c| c.state.checkpoint.as_ref()),
    )
    .with_context(|| format!("{}: [training.checkpoint]", config_path.display()))?;
    let interrupt = resume::interrupt_flag()?;

    let mut progress = Progress {
        out_dir: &out_dir,
        bar: None,
        quiet,
        metrics: None,
        last_save: Instant::now(),
        rows_in_epoch: 0,
        info: &info,
        epochs: config.training.epochs,
        log: RunLog::new(&out_dir, tensorboard),
    };
    if let Some(checkpoint) = &resume_from {
        println!(
            "resuming from {} (epoch {}, step {})",
            checkpoint.path.display(),
            checkpoint.state.epoch,
            checkpoint.state.steps
        );
        progress.metrics = Some(resume::rewind_logs(&out_dir, checkpoint)?);
        progress.log.append_to_steps()?;
    }
    let training_started = Instant::now();
    let options = FitOptions {
        class_weights,
        checkpoints: Some(checkpoints),
        non_finite: config.non_finite,
        resume: resume_from,
        interrupt: Some(interrupt),
    };
    let fitted = train::fit_with(
        &mut model,
        &train_set,
        validation_set.as_ref(),
        &config.training,
        &options,
        &mut progress,
    );
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    let training_seconds = training_started.elapsed().as_secs_f64();
    let history = match fitted {
        Ok(history) => history,
        Err(error @ dendrite::Error::NonFinite { .. }) => {
            // `fit` has put back the last finite weights; keep them on disk.
            model::save(&out_dir, &model, &info)?;
            let message = kept_model(&error, &out_dir, options.resume.is_some());
            return Err(anyhow::Error::new(error).context(message));
        }
        Err(error @ dendrite::Error::Interrupted { .. }) => {
            let dendrite::Error::Interrupted { checkpoint, .. } = &error else {
                unreachable!("matched above");
            };
            let command = checkpoint
                .is_some()
                .then(|| resume::resume_command(config_path, &out_dir));
            let error = anyhow::Error::new(error);
            return Err(match command {
                Some(command) => error.context(NextStep(command)),
                None => error,
            });
        }
        Err(error) => return Err(error.into()),
    };
    if history.stopped_early {
        println!("early stopping after epoch {}", history.epochs.len());
    }
    if let Some(best) = history.best_epoch {
        println!("the model holds the weights of epoch {best}");
    }

    // Final figures; the test split is evaluated here and nowhere else.
    let evaluation_started = Instant::now();
    let batch = config.training.batch_size.max(256);
    let names = output_names(&info.task);
    let evaluate =
        |dataset: &Dataset| train::evaluate_with(&model, dataset, info.loss, batch, decision);
    let mut summary = Map::new();
    let train_eval = evaluate(&train_set);
    summary.insert("train".into(), train_eval.to_json(&names));
    let validation_eval = validation_set.as_ref().map(evaluate);
    if let Some(evaluation) = &validation_eval {
        summary.insert("validation".into(), evaluation.to_json(&names));
    }
    let test_eval = test.as_ref().map(evaluate);
    if let Some(evaluation) = &test_eval {
        summary.insert("test".into(), evaluation.to_json(&names));
    }

    let evaluation_seconds = evaluation_started.elapsed().as_secs_f64();
    let evaluation_split = match (&test, &validation_set) {
        (Some(test), _) => Some(("test", test)),
        (None, Some(validation)) => Some(("validation", validation)),
        (None, None) => None,
    };
    if let Some((split, dataset)) = evaluation_split {
        run_files::write_predictions(&out_dir, &model, &info, decision, split, dataset)?;
    }

    model::save(&out_dir, &model, &info)?;
    let mut json = serde_json::to_vec_pretty(&Value::Object(summary))?;
    json.push(b'\n');
    model::write_atomic(&out_dir.join("summary.json"), &json)?;
    let run_info = RunInfo {
        config_path: config_path.display().to_string(),
        config: fs::read_to_string(config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?,
        data: DataSummary::new(&train_set, validation_set.as_ref(), test.as_ref()),
        timing: Timing {
            total_seconds: started.elapsed().as_secs_f64(),
            training_seconds,
            evaluation_seconds,
            epochs: history.epochs.len(),
        },
        threads: rayon::current_num_threads(),
        parameters: model.params().numel(),
    };
    run_files::write_json(&out_dir.join(run_files::RUN_FILE), &run_info)?;
    let report = html_report::build(&out_dir)?;

    print_final("train", &train_eval);
    if let Some(evaluation) = &validation_eval {
        print_final("validation", evaluation);
    }
    if let Some(evaluation) = &test_eval {
        print_final("test", evaluation);
    }
    println!(
        "model written to {} in {:.1} s",
        out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    println!("report written to {}", report.display());
    Ok(())
}

/// Returns the task of a model trained on `dataset`: its classes, or regression with the
/// target column names (empty for data without column names).
pub fn task_of(dataset: &Dataset, target_names: Vec<String>) -> Task {
    match &dataset.targets {
        Targets::Classes { class_names, .. } => Task::Classification {
            class_names: class_names.clone(),
        },
        Targets::Values(_) => Task::Regression { target_names },
    }
}

/// Returns the class names of a classifier or the target names of a regression model.
pub fn output_names(task: &Task) -> Vec<String> {
    match task {
        Task::Classification { class_names } => class_names.clone(),
        Task::Regression { target_names } => target_names.clone(),
    }
}

/// Returns the decision rule to store for a binary classifier: the configured positive class
/// and threshold, or the second class at 0.5. Returns `None` for other models.
///
/// # Errors
///
/// Fails if a positive class or threshold is set for a model that is not a binary
/// classifier, if the positive class is not one of the two classes, or if the threshold is
/// not in `[0, 1]`.
pub fn decision_threshold(model: &ModelConfig, task: &Task) -> Result<Option<DecisionThreshold>> {
    let class_names = match task {
        Task::Classification { class_names } if class_names.len() == 2 => class_names,
        _ => {
            if model.positive_class.is_some() || model.decision_threshold.is_some() {
                bail!(
                    "positive_class and decision_threshold apply to binary classifiers only, but \
                     this model has {}",
                    match task {
                        Task::Classification { class_names } =>
                            format!("{} classes", class_names.len()),
                        Task::Regression { .. } => "regression targets".to_string(),
                    }
                );
            }
            return Ok(None);
        }
    };

    let positive_class = match &model.positive_class {
        Some(name) if class_names.contains(name) => name.clone(),
        Some(name) => bail!(
            "positive_class = \"{name}\" is not one of the classes {}",
            class_names.join(", ")
        ),
        None => class_names[1].clone(),
    };
    let stored = DecisionThreshold {
        positive_class,
        threshold: model.decision_threshold.unwrap_or(0.5),
    };
    model::binary_decision(task, Some(&stored))?;
    Ok(Some(stored))
}

fn print_final(split: &str, evaluation: &Evaluation) {
    let metrics: Vec<String> = evaluation
        .to_map()
        .iter()
        .map(|(name, value)| format!("{name} {value:.4}"))
        .collect();
    println!("{split}: {}", metrics.join(", "));
}

/// The fault-tolerance settings of `dendrite train` given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// The folder to resume from.
    pub resume: Option<PathBuf>,
    /// Checkpoint intervals that replace those of the config.
    pub checkpoint_flags: CheckpointFlags,
}

/// How often the model is written to disk during training.
const SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// Prints the epochs, drives the progress bar, appends to `metrics.jsonl` after every epoch
/// and writes the model every [`SAVE_INTERVAL`].
pub(crate) struct Progress<'a> {
    pub(crate) out_dir: &'a Path,
    pub(crate) bar: Option<ProgressBar>,
    pub(crate) quiet: bool,
    pub(crate) metrics: Option<BufWriter<fs::File>>,
    pub(crate) last_save: Instant,
    pub(crate) rows_in_epoch: usize,
    pub(crate) info: &'a ModelInfo,
    pub(crate) epochs: usize,
    pub(crate) log: RunLog,
}

impl Callback for Progress<'_> {
    fn on_epoch_begin(&mut self, epoch: usize, batches: usize) {
        if self.quiet {
            return;
        }
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} batches, {msg}")
                .expect("template is valid")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{}", self.epochs));
        self.rows_in_epoch = 0;
        self.bar = Some(bar);
    }

    fn on_batch_end(&mut self, rows: usize, loss: f32) {
        self.rows_in_epoch += rows;
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if bar.position() % 16 == 0 {
                let seconds = bar.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "loss {loss:.4}, {:.0} samples/s",
                    self.rows_in_epoch as f64 / seconds
                ));
            }
        }
    }

    fn gradient_norm_interval(&self) -> u64 {
        GRADIENT_NORM_INTERVAL
    }

    fn on_step_end(&mut self, record: &StepRecord) {
        self.log.on_step_end(record);
    }

    fn on_epoch_end(&mut self, record: &EpochRecord, model: &Sequential) -> dendrite::Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.log.on_epoch_end(record)?;

        // Long runs of tiny epochs print about 50 lines, not one per epoch.
        let print_every = self.epochs.div_ceil(50);
        if record.epoch == 1
            || record.epoch.is_multiple_of(print_every)
            || record.epoch == self.epochs
        {
            let mut line = format!(
                "epoch {:>3}/{}  train_loss {:.4}",
                record.epoch, self.epochs, record.train_loss
            );
            if let Some(val_loss) = record.val_loss {
                line.push_str(&format!("  val_loss {val_loss:.4}"));
            }
            if let Some(accuracy) = record.val_accuracy {
                line.push_str(&format!("  val_accuracy {accuracy:.4}"));
            }
            if let (Some(clipped), Some(norm)) = (record.clipped_steps, record.max_gradient_norm) {
                line.push_str(&format!(
                    "  clipped {clipped} steps (max gradient norm {norm:.3})"
                ));
            }
            line.push_str(&format!("  {:.0} samples/s", record.samples_per_second));
            println!("{line}");
        }

        let metrics_path = self.out_dir.join("metrics.jsonl");
        if self.metrics.is_none() {
            fs::create_dir_all(self.out_dir).map_err(|e| dendrite::Error::io(self.out_dir, e))?;
            let file = fs::File::create(&metrics_path)
                .map_err(|e| dendrite::Error::io(&metrics_path, e))?;
            self.metrics = Some(BufWriter::new(file));
        }
        if let Some(metrics) = &mut self.metrics {
            let line = resume::metrics_line(record);
            writeln!(metrics, "{line}")
                .and_then(|()| metrics.flush())
                .map_err(|e| dendrite::Error::io(&metrics_path, e))?;
        }
        resume::append_timing(self.out_dir, record)?;

        // The model on disk follows training at most every few seconds; the final model is
        // written after training either way.
        if self.last_save.elapsed() >= SAVE_INTERVAL {
            model::save(self.out_dir, model, self.info)?;
            self.last_save = Instant::now();
        }
        Ok(())
    }

    fn on_warning(&mut self, message: &str) {
        eprintln!("warning: {message}");
    }
}
