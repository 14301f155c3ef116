//! Charts of a run, drawn with `plotters` as SVG and PNG: line charts, the confusion matrix
//! as a heat map and predicted against actual values.
//!
//! PNG text is drawn with DejaVu Sans from the `dejavu` crate, so no system font library is
//! needed. SVG text names the `sans-serif` family and is drawn by the viewer.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Width and height of every chart in pixels.
const SIZE: (u32, u32) = (800, 480);

/// Line colors, from the Tableau 10 palette.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A named line of `(x, y)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart to draw.
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    /// Lines with a legend. With `log_y`, the y axis shows powers of ten; points with y <= 0
    /// are left out.
    Lines {
        title: String,
        x_label: String,
        y_label: String,
        series: Vec<Series>,
        log_y: bool,
    },
    /// A confusion matrix: `counts[true_class][predicted_class]`, each row shaded by its
    /// share of the row's total.
    Heatmap {
        title: String,
        labels: Vec<String>,
        counts: Vec<Vec<usize>>,
    },
    /// Points, such as predicted against actual values. With `diagonal`, both axes share
    /// one range and the line y = x is drawn. With `log_x`, the x axis is logarithmic and
    /// points with x <= 0 are left out; `diagonal` then has no effect.
    Scatter {
        title: String,
        x_label: String,
        y_label: String,
        points: Vec<(f64, f64)>,
        /// The legend entry of the points, such as "rows" or "trials".
        points_name: String,
        diagonal: bool,
        log_x: bool,
    },
}

impl Figure {
    pub fn title(&self) -> &str {
        match self {
            Figure::Lines { title, .. }
            | Figure::Heatmap { title, .. }
            | Figure::Scatter { title, .. } => title,
        }
    }
}

/// A chart written to disk as SVG and PNG: its title, the SVG text and the SVG path.
#[derive(Debug, Clone)]
pub struct WrittenPlot {
    pub title: String,
    pub svg: String,
    pub svg_path: PathBuf,
}

/// Writes `figure` as `dir/name.svg` and `dir/name.png`.
///
/// # Errors
///
/// Fails if drawing fails or a file cannot be written.
pub fn write(figure: &Figure, dir: &Path, name: &str) -> Result<WrittenPlot> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let svg = render_svg(figure)?;
    let svg_path = dir.join(format!("{name}.svg"));
    let png_path = dir.join(format!("{name}.png"));
    dendrite::model::write_atomic_all(&[
        (&svg_path, svg.as_bytes()),
        (&png_path, &render_png(figure)?),
    ])?;
    Ok(WrittenPlot {
        title: figure.title().to_string(),
        svg,
        svg_path,
    })
}

/// Draws `figure` as an SVG document.
///
/// # Errors
///
/// Fails if plotters cannot draw the chart.
pub fn render_svg(figure: &Figure) -> Result<String> {
    // Plotters measures SVG text with the registered font too.
    register_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, figure).map_err(|e| anyhow!("cannot draw {}: {e}", figure.title()))?;
        root.present()
            .map_err(|e| anyhow!("cannot draw {}: {e}", figure.title()))?;
    }
    Ok(svg)
}

/// Draws `figure` as a PNG file.
///
/// # Errors
///
/// Fails if plotters cannot draw the chart or the PNG encoder fails.
pub fn render_png(figure: &Figure) -> Result<Vec<u8>> {
    register_font();
    let (width, height) = SIZE;
    let mut pixels = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        draw(&root, figure).map_err(|e| anyhow!("cannot draw {}: {e}", figure.title()))?;
        root.present()
            .map_err(|e| anyhow!("cannot draw {}: {e}", figure.title()))?;
    }
    let image = image::RgbImage::from_raw(width, height, pixels)
        .context("the chart buffer has the size of the chart")?;
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .context("cannot encode the chart as PNG")?;
    Ok(png)
}

/// Registers the embedded DejaVu Sans as `sans-serif`, the family every chart uses.
fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans font is a valid font"));
    });
}

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, figure: &Figure) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    match figure {
        Figure::Lines {
            title,
            x_label,
            y_label,
            series,
            log_y,
        } => draw_lines(root, title, x_label, y_label, series, *log_y),
        Figure::Heatmap {
            title,
            labels,
            counts,
        } => draw_heatmap(root, title, labels, counts),
        Figure::Scatter {
            title,
            x_label,
            y_label,
            points,
            points_name,
            diagonal,
            log_x,
        } => draw_scatter(
            root,
            title,
            x_label,
            y_label,
            points,
            points_name,
            ScatterAxes {
                diagonal: *diagonal,
                log_x: *log_x,
            },
        ),
    }
}

/// Returns a range that contains every value, padded by 5% on each side, and a range of
/// width 1 around a single value.
fn padded_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (low, high) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !low.is_finite() {
        return 0.0..1.0;
    }
    if high - low < 1e-12 {
        return low - 0.5..high + 0.5;
    }
    let pad = (high - low) * 0.05;
    low - pad..high + pad
}

/// Formats a tick value with up to 4 decimals and no trailing zeros: 1000, 0.05, 2.5.
fn tick(value: f64) -> String {
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

fn draw_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> DrawResult<DB> {
    let transform = |y: f64| if log_y { y.log10() } else { y };
    let visible: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
                .map(|&(x, y)| (x, transform(y)))
                .collect()
        })
        .collect();
    let x_range = padded_range(visible.iter().flatten().map(|p| p.0));
    let y_range = padded_range(visible.iter().flatten().map(|p| p.1));

    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(x_range, y_range)?;
    let y_format = |v: &f64| {
        if log_y {
            format!("{:.0e}", 10f64.powf(*v))
        } else {
            tick(*v)
        }
    };
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&y_format)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;

    for (index, (line, points)) in series.iter().zip(visible).enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        let style = color.stroke_width(2);
        if points.len() == 1 {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?
                .label(&line.name)
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        } else {
            chart
                .draw_series(LineSeries::new(points, style))?
                .label(&line.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn draw_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    labels: &[String],
    counts: &[Vec<usize>],
) -> DrawResult<DB> {
    let n = counts.len();
    let label = |k: usize| labels.get(k).cloned().unwrap_or_else(|| k.to_string());
    // Row 0 (the first true class) is drawn at the top.
    let row_at = |y: usize| n.saturating_sub(1 + y);

    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d((0..n).into_segmented(), (0..n).into_segmented())?;
    let x_format = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(k) if *k < n => label(*k),
        _ => String::new(),
    };
    let y_format = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(k) if *k < n => label(row_at(*k)),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("predicted class")
        .y_desc("true class")
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .x_labels(n)
        .y_labels(n)
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()?;

    for (true_class, row) in counts.iter().enumerate() {
        let total: usize = row.iter().sum();
        let y = row_at(true_class);
        for (predicted, &count) in row.iter().enumerate() {
            let share = if total == 0 {
                0.0
            } else {
                count as f64 / total as f64
            };
            // White (no rows) to dark blue (every row of the true class).
            let shade = |full: u8| (255.0 - (255.0 - f64::from(full)) * share).round() as u8;
            let color = RGBColor(shade(8), shade(48), shade(107));
            chart.draw_series(std::iter::once(Rectangle::new(
                [
                    (SegmentValue::Exact(predicted), SegmentValue::Exact(y)),
                    (
                        SegmentValue::Exact(predicted + 1),
                        SegmentValue::Exact(y + 1),
                    ),
                ],
                color.filled(),
            )))?;
            let text_color = if share > 0.5 { WHITE } else { BLACK };
            let style = ("sans-serif", 14)
                .into_font()
                .color(&text_color)
                .pos(Pos::new(HPos::Center, VPos::Center));
            chart.draw_series(std::iter::once(Text::new(
                count.to_string(),
                (SegmentValue::CenterOf(predicted), SegmentValue::CenterOf(y)),
                style,
            )))?;
        }
    }
    Ok(())
}

/// The axis options of [`Figure::Scatter`].
#[derive(Debug, Clone, Copy)]
struct ScatterAxes {
    diagonal: bool,
    log_x: bool,
}

fn draw_scatter<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(f64, f64)],
    points_name: &str,
    axes: ScatterAxes,
) -> DrawResult<DB> {
    let ScatterAxes { diagonal, log_x } = axes;
    let diagonal = diagonal && !log_x;
    let finite: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_x || *x > 0.0))
        .map(|&(x, y)| (if log_x { x.log10() } else { x }, y))
        .collect();
    let (x_range, y_range) = if diagonal {
        let range = padded_range(finite.iter().flat_map(|&(x, y)| [x, y]));
        (range.clone(), range)
    } else {
        (
            padded_range(finite.iter().map(|p| p.0)),
            padded_range(finite.iter().map(|p| p.1)),
        )
    };
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(75)
        .build_cartesian_2d(x_range.clone(), y_range)?;
    // Ticks on a log axis fall between powers of ten, so they get two significant digits.
    let x_format = |v: &f64| {
        if log_x {
            let rounded: f64 = format!("{:.1e}", 10f64.powf(*v))
                .parse()
                .unwrap_or(f64::NAN);
            rounded.to_string()
        } else {
            tick(*v)
        }
    };
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&x_format)
        .y_label_formatter(&|v| tick(*v))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    if diagonal {
        let style = BLACK.mix(0.6).stroke_width(1);
        let (low, high) = (x_range.start, x_range.end);
        chart
            .draw_series(LineSeries::new([(low, low), (high, high)], style))?
            .label("predicted = actual")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    let color = PALETTE[0];
    chart
        .draw_series(
            finite
                .iter()
                .map(|&p| Circle::new(p, 3, color.mix(0.6).filled())),
        )?
        .label(points_name)
        .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled()));

    // A legend with a single entry repeats the title and could hide points.
    if diagonal {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns whether the SVG has a text element with exactly `text`.
    fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>"))
    }

    fn lines() -> Figure {
        Figure::Lines {
            title: "loss".into(),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            series: vec![
                Series {
                    name: "train".into(),
                    points: vec![(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)],
                },
                Series {
                    name: "validation".into(),
                    points: vec![(1.0, 2.2), (2.0, 1.3), (3.0, 0.9)],
                },
            ],
            log_y: false,
        }
    }

    #[test]
    fn svg_has_title_axes_and_legend() {
        let svg = render_svg(&lines()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..60]);
        for text in ["loss", "epoch", "train", "validation"] {
            assert!(has_text(&svg, text), "no text {text} in the SVG");
        }
    }

    #[test]
    fn png_has_size_and_ink() {
        let png = render_png(&lines()).unwrap();
        let image = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), SIZE);
        let dark = image
            .pixels()
            .filter(|p| p.0.iter().all(|&c| c < 80))
            .count();
        assert!(
            dark > 500,
            "only {dark} dark pixels: text and axes are missing"
        );
    }

    #[test]
    fn heatmap_prints_every_count() {
        let figure = Figure::Heatmap {
            title: "confusion matrix".into(),
            labels: vec!["cat".into(), "dog".into()],
            counts: vec![vec![17, 3], vec![5, 29]],
        };
        let svg = render_svg(&figure).unwrap();
        for text in ["17", "3", "5", "29", "cat", "dog", "true class"] {
            assert!(has_text(&svg, text), "no text {text} in the SVG");
        }
        render_png(&figure).unwrap();
    }

    #[test]
    fn empty_and_log_series_draw() {
        let figure = Figure::Lines {
            title: "gradient norms".into(),
            x_label: "step".into(),
            y_label: "L2 norm".into(),
            series: vec![Series {
                name: "layers.0".into(),
                points: vec![(1.0, 0.0), (2.0, 1e-3), (3.0, 10.0)],
            }],
            log_y: true,
        };
        let svg = render_svg(&figure).unwrap();
        // The axis spans 1e-3 to 1e1, so its labels include 1e-2 and 1e0.
        assert!(has_text(&svg, "1e-2"), "no label 1e-2");
        assert!(has_text(&svg, "1e0"), "no label 1e0");
        let empty = Figure::Scatter {
            title: "predicted against actual".into(),
            x_label: "actual".into(),
            y_label: "predicted".into(),
            points: Vec::new(),
            points_name: "rows".into(),
            diagonal: true,
            log_x: false,
        };
        render_svg(&empty).unwrap();
        render_png(&empty).unwrap();
    }
}
