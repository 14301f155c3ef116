//! Preprocessing of CSV columns into features, fitted on the training rows and stored with
//! the model.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::columns::{self, is_missing, parse_number, quoted_list};
use super::{ColumnKind, CsvConfig, MissingPolicy, Table, UnknownCategoryPolicy};
use crate::data::Targets;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A standard deviation at or below this multiple of the mean's magnitude is rounding noise
/// of a constant column, and the column gets scale 1.
const CONSTANT_RELATIVE_STD: f64 = 1e-9;

/// The preprocessing of a CSV file into features, fitted on training rows.
///
/// Each feature column becomes one feature (numeric) or one feature per category seen in
/// training (categorical, one-hot), followed by a missing-value indicator if it has one.
/// Columns are found by name, so a file may order its columns differently and may have
/// extra columns. The struct serializes with serde, and `model.json` stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TabularPreprocessor {
    /// The feature columns, in the order of their features in a row.
    pub columns: Vec<FittedColumn>,

    /// The target column names.
    pub targets: Vec<String>,

    /// The column that identifies rows, copied into prediction output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_column: Option<String>,

    /// The configured delimiter, or `None` to detect it in each file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<char>,

    /// Cell texts that mean a missing value.
    pub missing_values: Vec<String>,

    /// The policy for a category that did not occur in the training rows.
    pub unknown_category: UnknownCategoryPolicy,
}

/// One feature column and how its cells become features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedColumn {
    /// The column name in the header.
    pub name: String,

    /// The encoding of a cell into features.
    pub encoding: ColumnEncoding,

    /// Whether one more feature follows, 1 where the cell was missing and imputed and 0
    /// elsewhere.
    #[serde(default)]
    pub missing_indicator: bool,
}

/// The encoding of the cells of one column into features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ColumnEncoding {
    /// One feature, `(value - center) / scale`.
    Numeric {
        /// The mean of the training rows, or 0 without standardization.
        center: f64,
        /// The population standard deviation of the training rows, or 1 without
        /// standardization or for a constant column.
        scale: f64,
        /// The value that replaces a missing cell, or `None` if a missing cell is an error.
        #[serde(default)]
        fill: Option<f64>,
    },
    /// One feature per category, 1 for the cell's category and 0 for the others.
    Categorical {
        /// The categories of the training rows, sorted byte by byte.
        categories: Vec<String>,
        /// The category that replaces a missing cell, or `None` if a missing cell is an
        /// error.
        #[serde(default)]
        fill: Option<String>,
    },
}

/// The counts of imputed cells and unknown categories of one transform.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransformReport {
    /// The number of rows transformed.
    pub rows: usize,
    /// The number of rows with at least one category that did not occur in training.
    pub rows_with_unknown: usize,
    /// The number of cells with an unknown category, by column.
    pub unknown: BTreeMap<String, usize>,
    /// The number of missing cells that were imputed, by column.
    pub imputed: BTreeMap<String, usize>,
}

impl TransformReport {
    /// Returns a warning about the rows with unknown categories, or `None` if there were
    /// none. `source` names the file or split at the start of the message.
    pub fn unknown_warning(&self, source: &str) -> Option<String> {
        if self.rows_with_unknown == 0 {
            return None;
        }
        Some(format!(
            "{source}: {} of {} rows have a category that did not occur in the training rows \
             ({}); each such value is encoded as all zeros",
            self.rows_with_unknown,
            self.rows,
            count_list(&self.unknown)
        ))
    }

    /// Returns a note about the imputed cells, or `None` if there were none.
    pub fn imputed_note(&self, source: &str) -> Option<String> {
        if self.imputed.is_empty() {
            return None;
        }
        let total: usize = self.imputed.values().sum();
        Some(format!(
            "{source}: imputed {total} missing values ({})",
            count_list(&self.imputed)
        ))
    }
}

/// Formats counts by column as `age: 3, income: 1`.
fn count_list(counts: &BTreeMap<String, usize>) -> String {
    let mut text = String::new();
    for (i, (column, count)) in counts.iter().enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        write!(text, "{column}: {count}").expect("writing to a String cannot fail");
    }
    text
}

impl TabularPreprocessor {
    /// Fits the preprocessing of the feature `columns` (header position and kind) on the
    /// training `rows` of `table`, with the settings of `config`.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidData`] naming the file, line and column if a numeric cell is
    /// not a number or a cell is missing under [`MissingPolicy::Error`], and if a column has
    /// no value in the training rows.
    pub(crate) fn fit(
        table: &Table,
        rows: &[usize],
        columns: &[(usize, ColumnKind)],
        config: &CsvConfig,
    ) -> Result<TabularPreprocessor> {
        let fitted = columns
            .iter()
            .map(|&(column, kind)| fit_column(table, rows, column, kind, config))
            .collect::<Result<Vec<_>>>()?;

        Ok(TabularPreprocessor {
            columns: fitted,
            targets: config.target_names(),
            id_column: config.id_column.clone(),
            delimiter: config.delimiter,
            missing_values: config.missing_values.clone(),
            unknown_category: config.unknown_category,
        })
    }

    /// Creates a preprocessing that passes numeric `features` through unchanged and rejects
    /// missing values, as CSV models of `model.json` format version 1 read their inputs.
    pub fn passthrough(features: Vec<String>, targets: Vec<String>) -> TabularPreprocessor {
        TabularPreprocessor {
            columns: features
                .into_iter()
                .map(|name| FittedColumn {
                    name,
                    encoding: ColumnEncoding::Numeric {
                        center: 0.0,
                        scale: 1.0,
                        fill: None,
                    },
                    missing_indicator: false,
                })
                .collect(),
            targets,
            id_column: None,
            delimiter: None,
            missing_values: vec![String::new()],
            unknown_category: UnknownCategoryPolicy::Error,
        }
    }

    /// Returns the number of features per row, `f` in `[n, f]`.
    pub fn width(&self) -> usize {
        self.columns.iter().map(FittedColumn::width).sum()
    }

    /// Returns the name of every feature, in row order: the column name for a numeric
    /// column, `column=category` for each category and `column_missing` for an indicator.
    pub fn feature_names(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(self.width());
        for column in &self.columns {
            match &column.encoding {
                ColumnEncoding::Numeric { .. } => names.push(column.name.clone()),
                ColumnEncoding::Categorical { categories, .. } => names.extend(
                    categories
                        .iter()
                        .map(|category| format!("{}={category}", column.name)),
                ),
            }
            if column.missing_indicator {
                names.push(format!("{}_missing", column.name));
            }
        }
        names
    }

    /// Reads a CSV file with this preprocessing's delimiter (or detection).
    ///
    /// # Errors
    ///
    /// As [`Table::read`].
    pub fn read_table(&self, path: impl AsRef<Path>) -> Result<Table> {
        let delimiter = self.delimiter.filter(char::is_ascii).map(|d| d as u8);
        Table::read(path, delimiter)
    }

    /// Transforms every row of `table` into features of shape `[n, f]`. Columns are found by
    /// name; their order and any other columns do not matter.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidData`] naming the file and every missing column if feature
    /// columns are missing. Returns one naming the line, column and value if a numeric cell
    /// is not a number, a missing cell has no imputed value, or a category is unknown under
    /// [`UnknownCategoryPolicy::Error`].
    pub fn transform(&self, table: &Table) -> Result<(Tensor, TransformReport)> {
        let rows: Vec<usize> = (0..table.len()).collect();
        self.transform_rows(table, &rows)
    }

    /// Transforms the `rows` of `table`, in that order, as [`TabularPreprocessor::transform`]
    /// does.
    ///
    /// # Errors
    ///
    /// As [`TabularPreprocessor::transform`].
    ///
    /// # Panics
    ///
    /// Panics if a row index is out of range.
    pub fn transform_rows(
        &self,
        table: &Table,
        rows: &[usize],
    ) -> Result<(Tensor, TransformReport)> {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        let positions = locate_columns(table, &names, "feature")?;
        let width = self.width();

        let mut values = Vec::with_capacity(rows.len() * width);
        let mut report = TransformReport {
            rows: rows.len(),
            ..TransformReport::default()
        };
        for &row in rows {
            let mut row_has_unknown = false;
            for (column, &position) in self.columns.iter().zip(&positions) {
                let cell = Cell {
                    table,
                    row,
                    column: position,
                };
                let imputed = column.encode(
                    cell,
                    &self.missing_values,
                    &mut values,
                    |unknown| match self.unknown_category {
                        UnknownCategoryPolicy::Error => Err(cell.error(&format!(
                            "category \"{unknown}\" did not occur in the training rows; set \
                             data.unknown_category = \"ignore\" to encode it as all zeros"
                        ))),
                        UnknownCategoryPolicy::Ignore => {
                            *report.unknown.entry(column.name.clone()).or_default() += 1;
                            row_has_unknown = true;
                            Ok(())
                        }
                    },
                )?;
                if imputed {
                    *report.imputed.entry(column.name.clone()).or_default() += 1;
                }
            }
            report.rows_with_unknown += usize::from(row_has_unknown);
        }

        Ok((Tensor::from_vec(&[rows.len(), width], values), report))
    }

    /// Reads the targets of every row of `table`: class labels mapped to `class_names` for a
    /// classifier, or numeric values for regression when `class_names` is `None`.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidData`] if a target column is missing, or naming the line if a
    /// target is missing, a class is not one of `class_names` or a value is not a number.
    pub fn read_targets(&self, table: &Table, class_names: Option<&[String]>) -> Result<Targets> {
        let names: Vec<&str> = self.targets.iter().map(String::as_str).collect();
        let positions = locate_columns(table, &names, "target")?;

        match class_names {
            Some(class_names) => {
                columns::read_known_classes(table, positions[0], class_names, &self.missing_values)
            }
            None => columns::read_values(table, &positions, &self.missing_values),
        }
    }

    /// Returns the ID of every row of `table`, or `None` if no ID column is configured.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidData`] if the ID column is missing from `table`.
    pub fn read_ids(&self, table: &Table) -> Result<Option<Vec<String>>> {
        let Some(id_column) = &self.id_column else {
            return Ok(None);
        };
        let position = locate_columns(table, &[id_column.as_str()], "ID")?[0];
        Ok(Some(
            (0..table.len())
                .map(|row| table.cell(row, position).to_string())
                .collect(),
        ))
    }
}

/// Returns the position of each of `names` in the header of `table`.
///
/// # Errors
///
/// Returns [`Error::InvalidData`] that lists every missing name.
fn locate_columns(table: &Table, names: &[&str], role: &str) -> Result<Vec<usize>> {
    let positions: Vec<Option<usize>> = names.iter().map(|name| table.column(name)).collect();
    let missing: Vec<String> = names
        .iter()
        .zip(&positions)
        .filter(|(_, position)| position.is_none())
        .map(|(name, _)| name.to_string())
        .collect();

    if !missing.is_empty() {
        let noun = if missing.len() == 1 {
            "column"
        } else {
            "columns"
        };
        return Err(Error::invalid_data(
            table.path(),
            format!(
                "missing {role} {noun} {}; the file has the columns {}",
                quoted_list(&missing),
                quoted_list(table.header())
            ),
        ));
    }
    Ok(positions.into_iter().flatten().collect())
}

/// One cell of a table, for reading and for error messages.
#[derive(Clone, Copy)]
struct Cell<'t> {
    table: &'t Table,
    row: usize,
    column: usize,
}

impl<'t> Cell<'t> {
    fn text(&self) -> &'t str {
        self.table.cell(self.row, self.column)
    }

    fn error(&self, problem: &str) -> Error {
        Error::invalid_data(
            self.table.path(),
            format!(
                "line {}, column \"{}\": {problem}",
                self.table.line(self.row),
                self.table.header()[self.column]
            ),
        )
    }

    fn missing_error(&self) -> Error {
        self.error(&format!(
            "missing value (\"{}\"); fix the cell, or set data.missing = \"mean\" or \
             \"most_frequent\" in the config to impute missing values and train again",
            self.text()
        ))
    }

    /// Parses the cell of a numeric column.
    fn number(&self) -> Result<f64> {
        parse_number(self.text()).ok_or_else(|| {
            self.error(&format!(
                "value \"{}\" is not a finite number, but the column is numeric; fix the cell, \
                 or add it to data.missing_values or set data.column_types.{} = \"categorical\" \
                 in the config and train again",
                self.text(),
                self.table.header()[self.column]
            ))
        })
    }
}

impl FittedColumn {
    /// Returns the number of features of this column.
    fn width(&self) -> usize {
        let values = match &self.encoding {
            ColumnEncoding::Numeric { .. } => 1,
            ColumnEncoding::Categorical { categories, .. } => categories.len(),
        };
        values + usize::from(self.missing_indicator)
    }

    /// Appends the features of `cell` to `out` and returns whether the cell was imputed.
    /// `on_unknown` decides what an unknown category does; the features stay all zeros
    /// when it returns `Ok`.
    fn encode(
        &self,
        cell: Cell<'_>,
        missing_values: &[String],
        out: &mut Vec<f32>,
        mut on_unknown: impl FnMut(&str) -> Result<()>,
    ) -> Result<bool> {
        let text = cell.text();
        let missing = is_missing(text, missing_values);

        match &self.encoding {
            ColumnEncoding::Numeric {
                center,
                scale,
                fill,
            } => {
                let value = match (missing, fill) {
                    (false, _) => cell.number()?,
                    (true, Some(fill)) => *fill,
                    (true, None) => return Err(cell.missing_error()),
                };
                let feature = ((value - center) / scale) as f32;
                if !feature.is_finite() {
                    return Err(cell.error(&format!(
                        "value \"{text}\" is too large to represent after standardization"
                    )));
                }
                out.push(feature);
            }
            ColumnEncoding::Categorical { categories, fill } => {
                let category = match (missing, fill) {
                    (false, _) => text,
                    (true, Some(fill)) => fill.as_str(),
                    (true, None) => return Err(cell.missing_error()),
                };
                let start = out.len();
                out.resize(start + categories.len(), 0.0);
                match categories.binary_search_by(|known| known.as_str().cmp(category)) {
                    Ok(index) => out[start + index] = 1.0,
                    Err(_) => on_unknown(category)?,
                }
            }
        }

        if self.missing_indicator {
            out.push(if missing { 1.0 } else { 0.0 });
        }
        Ok(missing)
    }
}

/// Fits one feature column on the training `rows`.
fn fit_column(
    table: &Table,
    rows: &[usize],
    column: usize,
    kind: ColumnKind,
    config: &CsvConfig,
) -> Result<FittedColumn> {
    let name = table.header()[column].clone();
    let mut present = Vec::with_capacity(rows.len());
    let mut missing_count = 0;
    for &row in rows {
        let cell = Cell { table, row, column };
        if is_missing(cell.text(), &config.missing_values) {
            if config.missing == MissingPolicy::Error {
                return Err(cell.missing_error());
            }
            missing_count += 1;
        } else {
            present.push(cell);
        }
    }

    if present.is_empty() {
        return Err(Error::invalid_data(
            table.path(),
            format!(
                "column \"{name}\" has no values in the training rows, only missing ones; add it \
                 to data.ignore"
            ),
        ));
    }

    let encoding = match kind {
        ColumnKind::Numeric => {
            let values = present
                .iter()
                .map(Cell::number)
                .collect::<Result<Vec<f64>>>()?;
            let (center, scale) = if config.standardize {
                mean_and_scale(&values)
            } else {
                (0.0, 1.0)
            };
            let fill = match config.missing {
                MissingPolicy::Error => None,
                MissingPolicy::Mean => Some(mean_and_scale(&values).0),
                MissingPolicy::MostFrequent => Some(most_frequent_number(&values)),
            };
            ColumnEncoding::Numeric {
                center,
                scale,
                fill,
            }
        }
        ColumnKind::Categorical => {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for cell in &present {
                *counts.entry(cell.text()).or_default() += 1;
            }
            let fill = (config.missing != MissingPolicy::Error).then(|| most_frequent(&counts));
            ColumnEncoding::Categorical {
                categories: counts.keys().map(|c| c.to_string()).collect(),
                fill,
            }
        }
    };

    Ok(FittedColumn {
        name,
        encoding,
        missing_indicator: config.missing_indicator && missing_count > 0,
    })
}

/// Returns the mean and the scale of `values`: their population standard deviation, or 1
/// for a constant column (see [`CONSTANT_RELATIVE_STD`]). Sums are taken in two passes, so
/// that a large mean does not swamp the spread.
///
/// # Panics
///
/// Panics if `values` is empty.
fn mean_and_scale(values: &[f64]) -> (f64, f64) {
    assert!(
        !values.is_empty(),
        "mean_and_scale needs at least one value"
    );
    let count = values.len() as f64;
    let mean = values.iter().sum::<f64>() / count;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count;
    let std = variance.sqrt();

    let scale = if std > 0.0 && std > CONSTANT_RELATIVE_STD * mean.abs() {
        std
    } else {
        1.0
    };
    (mean, scale)
}

/// Returns the value that occurs most often, and the smallest of them on a tie.
fn most_frequent_number(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);

    let (mut best, mut best_count) = (sorted[0], 0);
    for run in sorted.chunk_by(|a, b| a == b) {
        if run.len() > best_count {
            (best, best_count) = (run[0], run.len());
        }
    }
    best
}

/// Returns the category with the highest count, and the first in sorted order on a tie.
fn most_frequent(counts: &BTreeMap<&str, usize>) -> String {
    let mut best: Option<(&str, usize)> = None;
    for (&category, &count) in counts {
        if best.is_none_or(|(_, best_count)| count > best_count) {
            best = Some((category, count));
        }
    }
    best.map(|(category, _)| category.to_string())
        .expect("a fitted column has at least one value")
}
