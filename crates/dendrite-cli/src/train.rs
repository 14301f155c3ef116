//! `dendrite train`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dendrite::data::Targets;
use dendrite::model::{self, Columns, Preprocessing, Task};
use dendrite::nn::Sequential;
use dendrite::train::{self, Callback, EpochRecord, Evaluation};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Config, PreparedData};

/// Runs `dendrite train CONFIG [--out DIR]`.
pub fn run(config_path: &Path, out: Option<PathBuf>, quiet: bool) -> Result<()> {
    let started = Instant::now();
    let config = Config::load(config_path)?;

    // Everything that can fail on bad input is checked before the output folder is touched.
    let PreparedData {
        train: train_set,
        validation: validation_set,
        test,
        columns,
        preprocessing,
    } = config.data.prepare(config.training.seed)?;
    let mut model = Sequential::new(
        train_set.feature_shape(),
        config.model.layers.clone(),
        config.training.seed,
    )
    .with_context(|| format!("{}: [model]", config_path.display()))?;
    let task = match &train_set.targets {
        Targets::Classes { class_names, .. } => Task::Classification {
            class_names: class_names.clone(),
        },
        Targets::Values(_) => Task::Regression {
            target_names: columns
                .as_ref()
                .map(|(_, targets)| targets.clone())
                .unwrap_or_default(),
        },
    };
    let columns = columns.map(|(features, targets)| Columns { features, targets });

    let out_dir = out.unwrap_or_else(|| {
        let stem = config_path
            .file_stem()
            .map_or_else(|| "run".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from("runs").join(stem)
    });

    println!(
        "training on {} rows, validating on {}, testing on {}; {} parameters",
        train_set.len(),
        validation_set.as_ref().map_or(0, |v| v.len()),
        test.as_ref().map_or(0, |t| t.len()),
        model.params().numel()
    );

    let mut progress = Progress {
        out_dir: &out_dir,
        bar: None,
        quiet,
        metrics: None,
        last_save: Instant::now(),
        rows_in_epoch: 0,
        loss: config.training.loss,
        task: &task,
        columns: &columns,
        preprocessing: &preprocessing,
        epochs: config.training.epochs,
    };
    let fitted = train::fit(
        &mut model,
        &train_set,
        validation_set.as_ref(),
        &config.training,
        &mut progress,
    );
    if let Some(bar) = &progress.bar {
        bar.finish_and_clear();
    }
    let history = match fitted {
        Ok(history) => history,
        Err(error @ dendrite::Error::NonFinite { .. }) => {
            // `fit` has put back the last finite weights; keep them on disk.
            model::save_with_preprocessing(
                &out_dir,
                &model,
                config.training.loss,
                task.clone(),
                columns.clone(),
                preprocessing.clone(),
            )?;
            return Err(anyhow::Error::new(error).context(format!(
                "training stopped; the last good model is in {}",
                out_dir.display()
            )));
        }
        Err(error) => return Err(error.into()),
    };
    if history.stopped_early {
        println!("early stopping after epoch {}", history.epochs.len());
    }
    if let Some(best) = history.best_epoch {
        println!("the model holds the weights of epoch {best}");
    }

    // Final figures; the test split is read here and nowhere else.
    let batch = config.training.batch_size.max(256);
    let mut summary = BTreeMap::new();
    let train_eval = train::evaluate(&model, &train_set, config.training.loss, batch);
    summary.insert("train", train_eval.to_map());
    if let Some(validation) = &validation_set {
        summary.insert(
            "validation",
            train::evaluate(&model, validation, config.training.loss, batch).to_map(),
        );
    }
    let test_eval = test
        .as_ref()
        .map(|test| train::evaluate(&model, test, config.training.loss, batch));
    if let Some(test_eval) = &test_eval {
        summary.insert("test", test_eval.to_map());
    }

    model::save_with_preprocessing(
        &out_dir,
        &model,
        config.training.loss,
        task,
        columns,
        preprocessing,
    )?;
    let mut json = serde_json::to_vec_pretty(&summary)?;
    json.push(b'\n');
    model::write_atomic(&out_dir.join("summary.json"), &json)?;

    print_final("train", &train_eval);
    if let Some(test_eval) = &test_eval {
        print_final("test", test_eval);
    }
    println!(
        "model written to {} in {:.1} s",
        out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_final(split: &str, evaluation: &Evaluation) {
    let metrics: Vec<String> = evaluation
        .to_map()
        .iter()
        .map(|(name, value)| format!("{name} {value:.4}"))
        .collect();
    println!("{split}: {}", metrics.join(", "));
}

/// How often the model is written to disk during training.
const SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// Prints the epochs, drives the progress bar, appends to `metrics.jsonl` after every epoch
/// and writes the model every [`SAVE_INTERVAL`].
struct Progress<'a> {
    out_dir: &'a Path,
    bar: Option<ProgressBar>,
    quiet: bool,
    metrics: Option<BufWriter<fs::File>>,
    last_save: Instant,
    rows_in_epoch: usize,
    loss: dendrite::nn::Loss,
    task: &'a Task,
    columns: &'a Option<Columns>,
    preprocessing: &'a Option<Preprocessing>,
    epochs: usize,
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

    fn on_epoch_end(&mut self, record: &EpochRecord, model: &Sequential) -> dendrite::Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }

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
            let line = serde_json::to_string(record).expect("epoch record serializes");
            writeln!(metrics, "{line}")
                .and_then(|()| metrics.flush())
                .map_err(|e| dendrite::Error::io(&metrics_path, e))?;
        }

        // The model on disk follows training at most every few seconds; the final model is
        // written after training either way.
        if self.last_save.elapsed() >= SAVE_INTERVAL {
            model::save_with_preprocessing(
                self.out_dir,
                model,
                self.loss,
                self.task.clone(),
                self.columns.clone(),
                self.preprocessing.clone(),
            )?;
            self.last_save = Instant::now();
        }
        Ok(())
    }

    fn on_warning(&mut self, message: &str) {
        eprintln!("warning: {message}");
    }
}
