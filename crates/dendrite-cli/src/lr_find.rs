//! `dendrite lr-find`: the learning-rate range test on a config's training split.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dendrite::model;
use dendrite::nn::Sequential;
use dendrite::train::{self, FitOptions, RangeTest};

use crate::config::{Config, name_config};

/// Runs `dendrite lr-find CONFIG`. Only the training split is used: the validation and test
/// rows are held out as in `dendrite train`, and a separate test source is not read.
pub fn run(config_path: &Path, out: Option<PathBuf>, settings: RangeTest) -> Result<()> {
    let setup = crate::tune::read_config_without_test(config_path)?;
    let config = Config::from_table(config_path, setup)?;
    let prepared = config
        .data
        .prepare(config.training.seed)
        .map_err(|e| name_config(e, config_path))?;
    let mut model = Sequential::new(
        prepared.train.feature_shape(),
        config.model.layers.clone(),
        config.training.seed,
    )
    .with_context(|| format!("{}: [model]", config_path.display()))?;
    let options = FitOptions {
        class_weights: prepared.class_weights.clone(),
    };
    let result = train::lr_range_test(
        &mut model,
        &prepared.train,
        &config.training,
        &options,
        &settings,
    )
    .map_err(|e| name_config(e.into(), config_path))?;

    let out_dir = out.unwrap_or_else(|| {
        let stem = config_path
            .file_stem()
            .map_or_else(|| "run".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from("runs").join(format!("{stem}-lr-find"))
    });
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let mut csv = String::from("step,learning_rate,loss,smoothed_loss\n");
    for (step, point) in result.points.iter().enumerate() {
        csv.push_str(&format!(
            "{},{},{},{}\n",
            step + 1,
            point.learning_rate,
            point.loss,
            point.smoothed_loss
        ));
    }
    model::write_atomic(&out_dir.join("lr-find.csv"), csv.as_bytes())?;
    crate::plot::range_test(&result, &out_dir)?;

    println!(
        "{} steps from learning rate {:.1e}{}; the smoothed loss is lowest at {:.3e}",
        result.points.len(),
        settings.min_learning_rate,
        if result.diverged {
            format!(
                ", stopped when the loss diverged at {:.3e}",
                result.points.last().map_or(0.0, |p| p.learning_rate)
            )
        } else {
            format!(" to {:.1e}", settings.max_learning_rate)
        },
        result.min_loss_learning_rate
    );
    println!(
        "suggested learning rate: {:.3e} (a tenth of the rate with the lowest loss)",
        result.suggestion
    );
    println!(
        "curve written to {} (lr-find.csv, lr-find.svg, lr-find.png)",
        out_dir.display()
    );
    Ok(())
}
