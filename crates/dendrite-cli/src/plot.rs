//! The chart of the learning-rate range test, as SVG and PNG.

use std::path::Path;

use anyhow::Result;
use dendrite::train::RangeTestResult;

use crate::plots::{self, Figure, Series};

/// Writes `lr-find.svg` and `lr-find.png` in `out_dir`: the batch losses and their smoothed
/// curve against the learning rate (as its base-10 logarithm), and the suggestion as a
/// vertical line. Batch losses outside the range of the smoothed curve are drawn at its edge,
/// so that the divergence at the end does not flatten the rest.
///
/// # Errors
///
/// Fails if drawing fails or a file cannot be written.
pub fn range_test(result: &RangeTestResult, out_dir: &Path) -> Result<()> {
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
            .map(|p| (x(p.learning_rate), p.loss.clamp(low, high)))
            .collect(),
    };
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
        points: vec![(x(result.suggestion), low), (x(result.suggestion), high)],
    };
    let figure = Figure::Lines {
        title: "learning-rate range test".to_string(),
        x_label: "log10 of the learning rate".to_string(),
        y_label: "loss".to_string(),
        series: vec![batch, smoothed, suggestion],
        log_y: false,
    };
    plots::write(&figure, out_dir, "lr-find")?;
    Ok(())
}
