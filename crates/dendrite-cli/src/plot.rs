//! Plots of the learning-rate range test, as SVG and PNG.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Result, anyhow};
use dendrite::train::RangeTestResult;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Font files tried for the text of the plots; the first that exists is used.
const FONT_FILES: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers the first font found in [`FONT_FILES`] as "sans-serif" and returns true if one
/// was found.
fn register_font() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        for path in FONT_FILES {
            if let Ok(bytes) = std::fs::read(path) {
                // plotters keeps a reference to the font for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Writes `lr-find.svg` and `lr-find.png` in `out_dir`: the smoothed loss against the
/// learning rate on a log scale, the raw batch losses in grey and the suggestion as a
/// vertical line. Returns a note if no font was found, in which case the plots have no text.
///
/// # Errors
///
/// Fails if a file cannot be written.
pub fn range_test(result: &RangeTestResult, out_dir: &Path) -> Result<Option<String>> {
    let with_text = register_font();
    let svg = out_dir.join("lr-find.svg");
    let png = out_dir.join("lr-find.png");
    draw(
        SVGBackend::new(&svg, (800, 500)).into_drawing_area(),
        result,
        with_text,
    )
    .map_err(|e| anyhow!("cannot write {}: {e}", svg.display()))?;
    draw(
        BitMapBackend::new(&png, (800, 500)).into_drawing_area(),
        result,
        with_text,
    )
    .map_err(|e| anyhow!("cannot write {}: {e}", png.display()))?;
    Ok((!with_text).then(|| {
        "no font file was found, so the plots have no axis labels; lr-find.csv has the values"
            .to_string()
    }))
}

fn draw<DB: DrawingBackend>(
    area: DrawingArea<DB, Shift>,
    result: &RangeTestResult,
    with_text: bool,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let points = &result.points;
    let first = points.first().map_or(1e-7, |p| p.learning_rate as f64);
    let last = points
        .last()
        .map_or(10.0, |p| p.learning_rate as f64)
        .max(first * 10.0);
    let (low, high) = points
        .iter()
        .map(|p| p.smoothed_loss)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
            (a.min(y), b.max(y))
        });
    let (low, high) = if low.is_finite() {
        (low, high.max(low + 1e-9))
    } else {
        (0.0, 1.0)
    };
    let margin = 0.05 * (high - low);

    let mut builder = ChartBuilder::on(&area);
    builder.margin(20);
    if with_text {
        builder
            .caption("learning-rate range test", ("sans-serif", 22))
            .x_label_area_size(45)
            .y_label_area_size(60);
    }
    let mut chart =
        builder.build_cartesian_2d((first..last).log_scale(), (low - margin)..(high + margin))?;
    if with_text {
        chart
            .configure_mesh()
            .x_desc("learning rate")
            .y_desc("loss")
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .draw()?;
    }

    chart.draw_series(LineSeries::new(
        points.iter().map(|p| {
            (
                p.learning_rate as f64,
                p.loss.clamp(low - margin, high + margin),
            )
        }),
        RGBColor(200, 200, 200).stroke_width(1),
    ))?;
    let smoothed = chart.draw_series(LineSeries::new(
        points
            .iter()
            .map(|p| (p.learning_rate as f64, p.smoothed_loss)),
        BLUE.stroke_width(2),
    ))?;
    if with_text {
        smoothed
            .label("smoothed loss")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    }
    let suggestion = result.suggestion as f64;
    let marker = chart.draw_series(LineSeries::new(
        [(suggestion, low - margin), (suggestion, high + margin)],
        RED.stroke_width(2),
    ))?;
    if with_text {
        marker
            .label(format!("suggestion {suggestion:.2e}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    area.present()?;
    Ok(())
}
