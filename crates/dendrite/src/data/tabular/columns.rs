//! Column kinds, their inference, and the parsing of target cells.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::Table;
use crate::data::Targets;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The kind of a feature column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// Numbers, standardized into one feature.
    Numeric,
    /// Categories, one-hot encoded into one feature per category of the training rows.
    Categorical,
}

/// The lowest number of distinct values at which an inferred categorical column draws a
/// warning, when at least half of its values are distinct too.
const MANY_CATEGORIES: usize = 20;

/// Parses a numeric cell. Returns `None` for text that is not a finite number.
pub(crate) fn parse_number(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|value| value.is_finite())
}

/// Parses an integer class label, written like `3` or `3.0`.
fn parse_integer_label(text: &str) -> Option<i64> {
    if let Ok(label) = text.parse::<i64>() {
        return Some(label);
    }

    // Accept labels written as whole floats ("1.0"), which some tools export.
    match text.parse::<f64>() {
        Ok(value) if value.fract() == 0.0 && value.abs() < 2f64.powi(53) => Some(value as i64),
        _ => None,
    }
}

/// Returns true if `text` is one of the configured missing-value markers.
pub(crate) fn is_missing(text: &str, missing_values: &[String]) -> bool {
    missing_values.iter().any(|marker| marker == text)
}

/// Infers the kind of `column` from all rows of `table`: numeric if every present value is a
/// finite number, categorical otherwise. Returns the kind and, for a categorical column
/// whose values are mostly distinct, a warning that the column may be meant as numeric.
///
/// # Errors
///
/// Returns [`Error::InvalidData`] if every value of the column is missing.
pub(crate) fn infer_kind(
    table: &Table,
    column: usize,
    missing_values: &[String],
) -> Result<(ColumnKind, Option<String>)> {
    let name = &table.header()[column];
    let mut present = 0;
    let mut numeric = true;
    let mut distinct = BTreeSet::new();

    for row in 0..table.len() {
        let text = table.cell(row, column);
        if is_missing(text, missing_values) {
            continue;
        }
        present += 1;
        if numeric && parse_number(text).is_none() {
            numeric = false;
        }
        if distinct.len() <= table.len() / 2 {
            distinct.insert(text);
        }
    }

    if present == 0 {
        return Err(Error::invalid_data(
            table.path(),
            format!("column \"{name}\" has no values, only missing ones; add it to data.ignore"),
        ));
    }
    if numeric {
        return Ok((ColumnKind::Numeric, None));
    }

    let warning = (distinct.len() >= MANY_CATEGORIES && distinct.len() * 2 > present).then(|| {
        format!(
            "column \"{name}\" of {} is categorical with {} or more distinct values in {present} \
             rows; if it is numeric, look for cells that are not numbers, or set \
             data.column_types.{name}",
            table.path().display(),
            distinct.len()
        )
    });
    Ok((ColumnKind::Categorical, warning))
}

/// Parses the class labels of `column` in every row of `table`.
///
/// The classes are the distinct labels. If every label is an integer (written like `3` or
/// `3.0`), the classes are sorted numerically and named by the integer (`"3"`). Otherwise
/// they are sorted as text, byte by byte. So the class order depends only on the set of
/// labels, never on the row order.
///
/// # Errors
///
/// Returns [`Error::InvalidData`] naming the line if a label is missing.
pub(crate) fn read_classes(
    table: &Table,
    column: usize,
    missing_values: &[String],
) -> Result<Targets> {
    let texts = (0..table.len())
        .map(|row| {
            let text = table.cell(row, column);
            if is_missing(text, missing_values) {
                Err(missing_target(table, row, column))
            } else {
                Ok(text)
            }
        })
        .collect::<Result<Vec<&str>>>()?;

    let integers: Option<Vec<i64>> = texts.iter().map(|t| parse_integer_label(t)).collect();
    let class_names: Vec<String> = match &integers {
        Some(values) => values
            .iter()
            .copied()
            .collect::<BTreeSet<i64>>()
            .iter()
            .map(i64::to_string)
            .collect(),
        None => texts
            .iter()
            .copied()
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .map(str::to_string)
            .collect(),
    };

    let labels = (0..table.len())
        .map(|row| class_index(table.cell(row, column), &class_names))
        .collect::<Option<Vec<usize>>>()
        .expect("every label is one of the classes built from the labels");
    Ok(Targets::Classes {
        labels,
        class_names,
    })
}

/// Returns the index of the class that the label `text` names among `class_names`: the
/// class of that exact name, or for an integer label such as `3.0`, the class named by the
/// integer (`"3"`). Returns `None` if no class matches.
pub fn class_index(text: &str, class_names: &[String]) -> Option<usize> {
    if let Some(index) = class_names.iter().position(|name| name == text) {
        return Some(index);
    }
    let canonical = parse_integer_label(text)?.to_string();
    class_names.iter().position(|name| *name == canonical)
}

/// Maps the labels of `column` in every row of `table` to the classes of a trained model.
///
/// # Errors
///
/// Returns [`Error::InvalidData`] naming the line if a label is missing or is not one of
/// `class_names`.
pub(crate) fn read_known_classes(
    table: &Table,
    column: usize,
    class_names: &[String],
    missing_values: &[String],
) -> Result<Targets> {
    let labels = (0..table.len())
        .map(|row| {
            let text = table.cell(row, column);
            if is_missing(text, missing_values) {
                return Err(missing_target(table, row, column));
            }
            class_index(text, class_names).ok_or_else(|| {
                Error::invalid_data(
                    table.path(),
                    format!(
                        "line {}, column \"{}\": class \"{text}\" did not occur in the training \
                         file; the model knows the classes {}",
                        table.line(row),
                        table.header()[column],
                        quoted_list(class_names)
                    ),
                )
            })
        })
        .collect::<Result<Vec<usize>>>()?;

    Ok(Targets::Classes {
        labels,
        class_names: class_names.to_vec(),
    })
}

/// Parses the numeric targets of `columns` in every row of `table` into a `[n, k]` tensor.
///
/// # Errors
///
/// Returns [`Error::InvalidData`] naming the line and column if a value is missing or is not
/// a finite number.
pub(crate) fn read_values(
    table: &Table,
    columns: &[usize],
    missing_values: &[String],
) -> Result<Targets> {
    let mut values = Vec::with_capacity(table.len() * columns.len());
    for row in 0..table.len() {
        for &column in columns {
            let text = table.cell(row, column);
            if is_missing(text, missing_values) {
                return Err(missing_target(table, row, column));
            }
            let value = parse_number(text).ok_or_else(|| {
                Error::invalid_data(
                    table.path(),
                    format!(
                        "line {}, column \"{}\": target value \"{text}\" is not a finite number; \
                         regression needs numeric targets",
                        table.line(row),
                        table.header()[column]
                    ),
                )
            })?;
            values.push(value as f32);
        }
    }

    Ok(Targets::Values(Tensor::from_vec(
        &[table.len(), columns.len()],
        values,
    )))
}

fn missing_target(table: &Table, row: usize, column: usize) -> Error {
    Error::invalid_data(
        table.path(),
        format!(
            "line {}, column \"{}\": the target is missing (\"{}\"); fill it in or remove the row",
            table.line(row),
            table.header()[column],
            table.cell(row, column)
        ),
    )
}

/// Formats names as `"a", "b", "c"` for messages.
pub(crate) fn quoted_list(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ")
}
