//! `dendrite inspect`: the layers, parameter counts and stored preprocessing of a saved model.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use dendrite::data::ColorMode;
use dendrite::data::series::{ColumnScale, SeriesPreprocessor};
use dendrite::data::tabular::ColumnEncoding;
use dendrite::model::{self, InputKind, ModelMeta, SavedModel, Task};
use dendrite::nn::Sequential;

/// Runs `dendrite inspect MODEL`.
pub fn run(model_path: &Path) -> Result<()> {
    let saved = model::load(model_path)?;
    print!("{}", describe(model_path, &saved));
    Ok(())
}

/// Formats the model's task, layer table, parameter total and preprocessing.
pub fn describe(model_path: &Path, saved: &SavedModel) -> String {
    let SavedModel { model, meta } = saved;
    let mut text = String::new();
    let mut line = |args: std::fmt::Arguments<'_>| {
        text.write_fmt(args)
            .expect("writing to a String cannot fail");
        text.push('\n');
    };
    line(format_args!(
        "model       {}",
        model::model_dir(model_path).display()
    ));
    line(format_args!(
        "written by  dendrite {} (model.json format {})",
        meta.dendrite_version, meta.format_version
    ));
    line(format_args!("task        {}", task_line(&meta.task)));
    line(format_args!("loss        {}", serde_name(&meta.loss)));
    line(format_args!("input shape {:?}", meta.input_shape));
    text.push('\n');
    text.push_str(&layer_table(model));
    text.push('\n');
    text.push_str(&preprocessing_text(meta));
    text
}

/// Formats one row per layer with its output shape and parameter count, then the totals.
pub fn layer_table(model: &Sequential) -> String {
    let summary = model.summary();
    let rows: Vec<(String, String, String)> = summary
        .iter()
        .map(|layer| {
            (
                layer.name.clone(),
                format!("{:?}", layer.output_shape),
                thousands(layer.parameters),
            )
        })
        .collect();
    let name_width = rows.iter().map(|r| r.0.len()).chain([5]).max().unwrap_or(5);
    let shape_width = rows
        .iter()
        .map(|r| r.1.len())
        .chain(["output shape".len()])
        .max()
        .unwrap_or(0);
    let mut text = format!(
        "{:<name_width$}  {:<shape_width$}  {:>10}\n",
        "layer", "output shape", "parameters"
    );
    for (name, shape, parameters) in &rows {
        writeln!(
            text,
            "{name:<name_width$}  {shape:<shape_width$}  {parameters:>10}"
        )
        .expect("writing to a String cannot fail");
    }
    let total: usize = summary.iter().map(|layer| layer.parameters).sum();
    let buffers: usize = summary.iter().map(|layer| layer.buffers).sum();
    writeln!(text, "total parameters {}", thousands(total))
        .expect("writing to a String cannot fail");
    if buffers > 0 {
        writeln!(
            text,
            "buffers {} (saved with the model, not trained)",
            thousands(buffers)
        )
        .expect("writing to a String cannot fail");
    }
    text
}

/// Formats the preprocessing that `evaluate` and `predict` apply to new inputs.
fn preprocessing_text(meta: &ModelMeta) -> String {
    let mut text = String::from("preprocessing\n");
    let mut found = false;
    if let Some(image) = &meta.preprocessing {
        found = true;
        let input = match image.input {
            InputKind::Idx => "IDX images",
            InputKind::ImageFolder => "image folder",
        };
        let color = match image.color {
            Some(ColorMode::Grayscale) | None => "grayscale",
            Some(ColorMode::Rgb) => "RGB",
        };
        writeln!(text, "  input        {input}, {color}").expect("writing to a String cannot fail");
        match image.size {
            Some((height, width)) => writeln!(text, "  resize to    {height} x {width} pixels"),
            None => writeln!(text, "  resize to    none (images keep their size)"),
        }
        .expect("writing to a String cannot fail");
        match &image.normalization {
            Some(stats) => writeln!(
                text,
                "  standardize  mean {:?}, standard deviation {:?} per channel",
                stats.mean, stats.std
            ),
            None => writeln!(text, "  standardize  no"),
        }
        .expect("writing to a String cannot fail");
    }
    if let Some(tabular) = &meta.tabular {
        found = true;
        writeln!(
            text,
            "  CSV columns  {} features from {} columns; targets {}",
            tabular.width(),
            tabular.columns.len(),
            tabular.targets.join(", ")
        )
        .expect("writing to a String cannot fail");
        if let Some(id) = &tabular.id_column {
            writeln!(text, "  id column    {id}").expect("writing to a String cannot fail");
        }
        writeln!(
            text,
            "  missing      {:?}; unknown categories: {}",
            tabular.missing_values,
            serde_name(&tabular.unknown_category)
        )
        .expect("writing to a String cannot fail");
        for column in &tabular.columns {
            let encoding = match &column.encoding {
                ColumnEncoding::Numeric {
                    center,
                    scale,
                    fill,
                } => {
                    let fill = fill.map_or(String::new(), |f| format!(", missing -> {f}"));
                    format!("numeric, (x - {center:.6}) / {scale:.6}{fill}")
                }
                ColumnEncoding::Categorical { categories, fill } => {
                    let fill = fill
                        .as_ref()
                        .map_or(String::new(), |f| format!(", missing -> {f}"));
                    format!(
                        "one-hot over {} categories ({}){fill}",
                        categories.len(),
                        abbreviate(categories, 6)
                    )
                }
            };
            let indicator = if column.missing_indicator {
                " + missing indicator"
            } else {
                ""
            };
            writeln!(text, "    {}: {encoding}{indicator}", column.name)
                .expect("writing to a String cannot fail");
        }
    }
    if let Some(series) = &meta.series {
        found = true;
        text.push_str(&series_text(series));
    }
    if let Some(decision) = &meta.decision_threshold {
        writeln!(
            text,
            "  decision     predict {} when its probability >= {}",
            decision.positive_class, decision.threshold
        )
        .expect("writing to a String cannot fail");
    }
    if !found {
        text.push_str("  none (inputs are used as given)\n");
    }
    text
}

/// Formats the windowing, differencing and scaling of a forecaster, fitted on the training
/// part, which `evaluate` and `forecast` apply to a series file.
fn series_text(series: &SeriesPreprocessor) -> String {
    let mut text = String::new();
    let mut line = |args: std::fmt::Arguments<'_>| {
        text.write_fmt(args)
            .expect("writing to a String cannot fail");
        text.push('\n');
    };
    let time = match (&series.time_column, series.time_format) {
        (Some(column), Some(format)) => format!(
            "column {column} ({}), step {}",
            format.describe(),
            series.time_step
        ),
        (Some(column), None) => format!("column {column}"),
        (None, _) => "row order".to_string(),
    };
    line(format_args!("  series       time from {time}"));
    line(format_args!(
        "  values       {}",
        series.value_columns.join(", ")
    ));
    if !series.feature_columns.is_empty() {
        line(format_args!(
            "  features     {}",
            series.feature_columns.join(", ")
        ));
    }
    line(format_args!(
        "  windows      lookback {}, horizon {}, forecast {}",
        series.lookback,
        series.horizon,
        serde_name(&series.forecast)
    ));
    if series.difference > 0 {
        line(format_args!(
            "  difference   y_t - y_(t-{})",
            series.difference
        ));
    } else {
        line(format_args!("  difference   none"));
    }
    let scales = |columns: &[String], scales: &[ColumnScale]| {
        columns
            .iter()
            .zip(scales)
            .map(|(name, s)| format!("{name}: (x - {:.6}) / {:.6}", s.center, s.scale))
            .collect::<Vec<_>>()
            .join("; ")
    };
    line(format_args!(
        "  scaling      {} ({})",
        serde_name(&series.scaling),
        scales(&series.value_columns, &series.value_scales)
    ));
    if !series.feature_columns.is_empty() {
        line(format_args!(
            "               features: {}",
            scales(&series.feature_columns, &series.feature_scales)
        ));
    }
    line(format_args!(
        "  parts        test: the last {} steps; validation: the {} steps before them",
        series.test_length, series.validation_length
    ));
    line(format_args!(
        "  missing      {}",
        serde_name(&series.missing)
    ));
    text
}

fn task_line(task: &Task) -> String {
    match task {
        Task::Classification { class_names } => format!(
            "classification, {} classes: {}",
            class_names.len(),
            abbreviate(class_names, 12)
        ),
        Task::Regression { target_names } if target_names.is_empty() => "regression".into(),
        Task::Regression { target_names } => {
            format!("regression of {}", target_names.join(", "))
        }
    }
}

/// Joins the first `max` names and counts the rest.
fn abbreviate(names: &[String], max: usize) -> String {
    if names.len() <= max {
        return names.join(", ");
    }
    format!(
        "{}, ... ({} more)",
        names[..max].join(", "),
        names.len() - max
    )
}

/// Returns the name serde writes for a unit enum variant, such as `cross_entropy`.
fn serde_name(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// Formats `n` with commas between groups of three digits: 61706 -> "61,706".
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(61706), "61,706");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
