//! Logs written while training runs: `steps.jsonl` (loss, learning rate and gradient norms
//! per step) and, with `--tensorboard`, TensorBoard event files.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use dendrite::train::{EpochRecord, StepRecord};
use tfrecord::{EventMeta, EventWriter, EventWriterConfig};

use crate::run_files::STEPS_FILE;

/// Steps between two records of the gradient norms. Each record is one pass over the
/// gradients, about as much work as the optimizer's update, so every 10th step costs a few
/// percent of one step's update at most.
pub const GRADIENT_NORM_INTERVAL: u64 = 10;

/// The folder of the TensorBoard event files inside a run folder.
pub const TENSORBOARD_DIR: &str = "tensorboard";

/// Writes `steps.jsonl` and the TensorBoard scalars. The files are created at the first step,
/// so a run that fails before training leaves no files.
pub struct RunLog {
    dir: PathBuf,
    steps: Option<BufWriter<fs::File>>,
    tensorboard: bool,
    events: Option<EventWriter<BufWriter<fs::File>>>,
    /// The first write error, returned at the end of the epoch.
    error: Option<dendrite::Error>,
}

impl RunLog {
    pub fn new(dir: &Path, tensorboard: bool) -> Self {
        RunLog {
            dir: dir.to_path_buf(),
            steps: None,
            tensorboard,
            events: None,
            error: None,
        }
    }

    /// Makes the run append to an existing `steps.jsonl`, as a resumed run does.
    ///
    /// # Errors
    ///
    /// Returns [`dendrite::Error::Io`] if the file cannot be opened.
    pub fn append_to_steps(&mut self) -> dendrite::Result<()> {
        let path = self.dir.join(STEPS_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| dendrite::Error::io(&path, e))?;
        self.steps = Some(BufWriter::new(file));
        Ok(())
    }

    /// Records one step: a line in `steps.jsonl` when it carries gradient norms, and the
    /// batch loss in TensorBoard.
    pub fn on_step_end(&mut self, record: &StepRecord) {
        if self.error.is_some() {
            return;
        }
        if let Err(error) = self.write_step(record) {
            self.error = Some(error);
        }
    }

    fn write_step(&mut self, record: &StepRecord) -> dendrite::Result<()> {
        let steps_path = self.dir.join(STEPS_FILE);
        if self.steps.is_none() {
            fs::create_dir_all(&self.dir).map_err(|e| dendrite::Error::io(&self.dir, e))?;
            let file =
                fs::File::create(&steps_path).map_err(|e| dendrite::Error::io(&steps_path, e))?;
            self.steps = Some(BufWriter::new(file));
        }
        if !record.gradient_norms.is_empty()
            && let Some(steps) = &mut self.steps
        {
            let line = serde_json::to_string(record).expect("a step record serializes");
            writeln!(steps, "{line}").map_err(|e| dendrite::Error::io(&steps_path, e))?;
        }
        if let Some(events) = self.events()? {
            events
                .write_scalar(
                    "batch/loss",
                    EventMeta::new(record.step as i64, wall_time()),
                    record.loss,
                )
                .map_err(tensorboard_error)?;
        }
        Ok(())
    }

    /// Records the epoch's losses, validation metrics and learning rate in TensorBoard, with
    /// the epoch number as the step, and flushes both logs.
    ///
    /// # Errors
    ///
    /// Returns the first error of a write since the last epoch.
    pub fn on_epoch_end(&mut self, record: &EpochRecord) -> dendrite::Result<()> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        if let Some(steps) = &mut self.steps {
            let path = self.dir.join(STEPS_FILE);
            steps.flush().map_err(|e| dendrite::Error::io(&path, e))?;
        }
        let Some(events) = self.events()? else {
            return Ok(());
        };
        let step = record.epoch as i64;
        let mut scalars = vec![
            ("loss/train".to_string(), record.train_loss),
            ("learning_rate".to_string(), f64::from(record.learning_rate)),
        ];
        if let Some(loss) = record.val_loss {
            scalars.push(("loss/validation".into(), loss));
        }
        for (name, value) in &record.val_metrics {
            scalars.push((format!("validation/{name}"), *value));
        }
        for (tag, value) in scalars {
            events
                .write_scalar(tag, EventMeta::new(step, wall_time()), value as f32)
                .map_err(tensorboard_error)?;
        }
        events.flush().map_err(tensorboard_error)
    }

    /// Returns the TensorBoard writer, creating its file on first use, or `None` without
    /// `--tensorboard`.
    fn events(&mut self) -> dendrite::Result<Option<&mut EventWriter<BufWriter<fs::File>>>> {
        if !self.tensorboard {
            return Ok(None);
        }
        if self.events.is_none() {
            let dir = self.dir.join(TENSORBOARD_DIR);
            fs::create_dir_all(&dir).map_err(|e| dendrite::Error::io(&dir, e))?;
            // TensorBoard finds files whose name contains "tfevents"; the seconds since 1970
            // keep the files of repeated runs apart and in order.
            let seconds = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let path = dir.join(format!("events.out.tfevents.{seconds}.dendrite"));
            let writer = EventWriter::create(&path, EventWriterConfig::default()).map_err(|e| {
                dendrite::Error::InvalidConfig(format!(
                    "cannot create the TensorBoard file {}: {e}",
                    path.display()
                ))
            })?;
            self.events = Some(writer);
        }
        Ok(self.events.as_mut())
    }
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn tensorboard_error(error: tfrecord::Error) -> dendrite::Error {
    dendrite::Error::InvalidConfig(format!("cannot write the TensorBoard file: {error}"))
}
