//! Checkpoints, `--resume` and Ctrl-C for `dendrite train`.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use dendrite::model;
use dendrite::train::checkpoint::{self, Checkpoint};
use dendrite::train::{CheckpointConfig, CheckpointOptions, EpochRecord};

use crate::run_files::{METRICS_FILE, STEPS_FILE};

/// The folder of the checkpoints inside a run folder.
pub const CHECKPOINT_DIR: &str = "checkpoints";

/// The file of per-epoch timing inside a run folder. Timing varies from run to run, so it is
/// kept out of `metrics.jsonl`, which repeats bit for bit.
pub const TIMING_FILE: &str = "timing.jsonl";

/// Checkpoint intervals given on the command line; they replace those of the config.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckpointFlags {
    pub every_steps: Option<u64>,
    pub every_epochs: Option<usize>,
}

/// Returns where and how often the run writes checkpoints. Without `[training.checkpoint]`
/// and without flags, a resumed run keeps the intervals of the run it continues (`resumed`),
/// and a new run writes none except on Ctrl-C. With the table but no interval, one is written
/// every epoch.
pub fn checkpoint_options(
    out_dir: &Path,
    configured: Option<&CheckpointConfig>,
    flags: CheckpointFlags,
    resumed: Option<&CheckpointConfig>,
) -> Result<CheckpointOptions> {
    let mut config = configured.or(resumed).cloned();
    if flags.every_steps.is_some() || flags.every_epochs.is_some() {
        let keep = config
            .as_ref()
            .map_or(CheckpointConfig::default().keep, |c| c.keep);
        config = Some(CheckpointConfig {
            every_steps: flags.every_steps,
            every_epochs: flags.every_epochs,
            keep,
        });
    }
    if let Some(config) = &mut config
        && config.every_steps.is_none()
        && config.every_epochs.is_none()
    {
        config.every_epochs = Some(1);
    }
    if let Some(config) = &config {
        config.validate()?;
    }
    Ok(CheckpointOptions {
        dir: out_dir.join(CHECKPOINT_DIR),
        config: config.unwrap_or_default(),
    })
}

/// Returns the run folder of `checkpoint` (the parent of its `checkpoints/` folder), or
/// `None` for a checkpoint kept elsewhere.
pub fn run_folder(checkpoint: &Checkpoint) -> Option<PathBuf> {
    // A path such as `run/checkpoints/step-N/..` names its parent only once resolved.
    let path = fs::canonicalize(&checkpoint.path).ok()?;
    let root = path.parent()?;
    if root.file_name()? == CHECKPOINT_DIR {
        root.parent().map(Path::to_path_buf)
    } else {
        None
    }
}

/// Finds the checkpoint to resume from in `dir`: a checkpoint folder itself, a folder of
/// checkpoints, or a run folder with a `checkpoints/` folder. Damaged checkpoints are skipped
/// with a warning on standard error.
pub fn find_checkpoint(dir: &Path) -> Result<Checkpoint> {
    if dir.join("checksums.json").is_file() {
        return checkpoint::load(dir).with_context(|| {
            format!(
                "cannot resume from {}; pass its parent folder to resume from the newest valid \
                 checkpoint instead",
                dir.display()
            )
        });
    }
    let root = if dir.join(CHECKPOINT_DIR).is_dir() {
        dir.join(CHECKPOINT_DIR)
    } else {
        dir.to_path_buf()
    };
    let latest = checkpoint::latest(&root)
        .with_context(|| format!("cannot list the checkpoints in {}", root.display()))?;
    for warning in &latest.warnings {
        eprintln!("warning: {warning}");
    }
    match latest.checkpoint {
        Some(checkpoint) => Ok(checkpoint),
        None => bail!(
            "no valid checkpoint in {}; train without --resume to start over",
            root.display()
        ),
    }
}

/// Rewrites the logs of `out_dir` to end where `checkpoint` ends, so that the resumed run
/// appends to them: `metrics.jsonl` gets the checkpoint's epoch records, and `steps.jsonl`
/// and `timing.jsonl` lose their lines past the checkpoint. Returns the `metrics.jsonl`
/// writer, positioned at its end.
pub fn rewind_logs(out_dir: &Path, checkpoint: &Checkpoint) -> Result<BufWriter<fs::File>> {
    fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let state = &checkpoint.state;
    let mut metrics = Vec::new();
    for record in &state.history {
        metrics.extend_from_slice(metrics_line(record).as_bytes());
        metrics.push(b'\n');
    }
    let metrics_path = out_dir.join(METRICS_FILE);
    model::write_atomic(&metrics_path, &metrics)?;

    let steps = state.steps;
    let epochs = state.history.len() as u64;
    for (file, key, last) in [(STEPS_FILE, "step", steps), (TIMING_FILE, "epoch", epochs)] {
        let path = out_dir.join(file);
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let mut kept = String::new();
        for line in text.lines() {
            let value = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get(key).and_then(serde_json::Value::as_u64));
            if value.is_some_and(|v| v <= last) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        model::write_atomic(&path, kept.as_bytes())?;
    }

    let file = fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("cannot open {}", metrics_path.display()))?;
    Ok(BufWriter::new(file))
}

/// Returns the `metrics.jsonl` line of an epoch: its record without the timing fields.
pub fn metrics_line(record: &EpochRecord) -> String {
    let mut value = serde_json::to_value(record).expect("epoch record serializes");
    if let Some(fields) = value.as_object_mut() {
        fields.remove("seconds");
        fields.remove("samples_per_second");
    }
    value.to_string()
}

/// Appends an epoch's timing to `timing.jsonl`.
pub fn append_timing(out_dir: &Path, record: &EpochRecord) -> dendrite::Result<()> {
    let path = out_dir.join(TIMING_FILE);
    let line = serde_json::json!({
        "epoch": record.epoch,
        "seconds": record.seconds,
        "samples_per_second": record.samples_per_second,
    });
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| writeln!(file, "{line}"))
        .map_err(|e| dendrite::Error::io(&path, e))
}

/// Installs a Ctrl-C (SIGINT) handler and returns the flag it sets. The first Ctrl-C asks
/// training to stop after the current step; a second one exits at once with status 130.
pub fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = Arc::clone(&flag);
    ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt; exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("interrupt received; finishing the current step and writing a checkpoint");
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(flag)
}

/// Returns the command that continues an interrupted run from the checkpoints in
/// `out_dir`, with the thread count of this run.
pub fn resume_command(config_path: &Path, out_dir: &Path) -> String {
    format!(
        "dendrite --threads {} train {} --resume {}",
        rayon::current_num_threads(),
        config_path.display(),
        out_dir.display()
    )
}

/// Fails if `out_dir` has checkpoints of an earlier run: the checkpoints of a new run there
/// would be mixed with them, and `--resume` could load the earlier run's.
pub fn check_no_earlier_checkpoints(out_dir: &Path) -> Result<()> {
    let root = out_dir.join(CHECKPOINT_DIR);
    if !root.is_dir() {
        return Ok(());
    }
    let Some((step, _)) = checkpoint::list(&root)?.pop() else {
        return Ok(());
    };
    bail!(
        "{} has the checkpoints of an earlier run (the newest after step {step}); continue \
         that run with --resume {}, start over after removing {}, or write to another folder \
         with --out",
        root.display(),
        out_dir.display(),
        root.display()
    )
}
