//! `dendrite lr-find`: the learning-rate range test on a config's training split.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dendrite::model;
use dendrite::nn::Sequential;
use dendrite::train::{self, FitOptions, RangeTest, RangeTestResult};

use crate::config::{Config, name_config};
use crate::plots::{self, Figure, Series};

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
        ..FitOptions::default()
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
    write_plot(&result, &out_dir)?;

    println!(
        "{} steps from learning rate {:.1e}{}; the smoothed loss is lowest at learning rate \
         {:.3e}",
        result.points.len(),
        settings.min_learning_rate,
        if result.diverged {
            format!(
                ", stopped when the loss diverged at learning rate {:.3e}",
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

/// Writes `lr-find.svg` and `lr-find.png` in `out_dir`: the batch losses and their smoothed
/// curve against the learning rate (as its base-10 logarithm), and the suggestion as a
/// vertical line. Batch losses above the highest smoothed loss are drawn at that level, so
/// that the divergence at the end does not flatten the rest.
///
/// # Errors
///
/// Fails if drawing fails or a file cannot be written.
fn write_plot(result: &RangeTestResult, out_dir: &Path) -> Result<()> {
    plots::write(&figure(result), out_dir, "lr-find")?;
    Ok(())
}

/// Returns the chart that [`write_plot`] draws.
fn figure(result: &RangeTestResult) -> Figure {
    let x = |learning_rate: f32| f64::from(learning_rate).log10();
    let (low, high) = result
        .points
        .iter()
        .map(|p| p.smoothed_loss)
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(y), b.max(y))
        });
    let (low, high) = if low.is_finite() {
        (low, high.max(low + 1e-9))
    } else {
        (0.0, 1.0)
    };

    let batch = Series {
        name: "batch loss".to_string(),
        points: result
            .points
            .iter()
            .filter(|p| p.loss.is_finite())
            .map(|p| (x(p.learning_rate), p.loss.min(high)))
            .collect(),
    };
    let bottom = batch.points.iter().map(|p| p.1).fold(low, f64::min);
    let smoothed = Series {
        name: "smoothed loss".to_string(),
        points: result
            .points
            .iter()
            .filter(|p| p.smoothed_loss.is_finite())
            .map(|p| (x(p.learning_rate), p.smoothed_loss))
            .collect(),
    };
    let suggestion = Series {
        name: format!("suggestion {:.2e}", result.suggestion),
        points: vec![(x(result.suggestion), bottom), (x(result.suggestion), high)],
    };
    Figure::Lines {
        title: "learning-rate range test".to_string(),
        x_label: "log10 of the learning rate".to_string(),
        y_label: "loss".to_string(),
        series: vec![batch, smoothed, suggestion],
        log_y: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dendrite::train::RangePoint;

    #[test]
    fn chart_caps_only_high_batch_losses() {
        let point = |learning_rate, loss, smoothed_loss| RangePoint {
            learning_rate,
            loss,
            smoothed_loss,
        };
        let result = RangeTestResult {
            points: vec![
                point(1e-3, 1.0, 1.0),
                point(1e-2, 0.2, 0.8),
                point(1e-1, 50.0, 1.5),
            ],
            min_loss_learning_rate: 1e-2,
            suggestion: 1e-3,
            diverged: true,
        };

        let Figure::Lines { series, .. } = figure(&result) else {
            panic!("the range test draws lines");
        };

        let losses: Vec<f64> = series[0].points.iter().map(|p| p.1).collect();
        assert_eq!(losses, [1.0, 0.2, 1.5]);
        let suggestion: Vec<f64> = series[2].points.iter().map(|p| p.1).collect();
        assert_eq!(suggestion, [0.2, 1.5]);
    }
}
