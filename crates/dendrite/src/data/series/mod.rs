//! Time series from CSV files: reading and checking the series, chronological splits,
//! differencing and scaling fitted on the training part, and sliding windows gathered by
//! index.
//!
//! The steps, in order:
//!
//! 1. [`SeriesPreprocessor::read`] reads the time column (optional; without one the row order
//!    is the time order), the value columns and the extra feature columns. Timestamps must be
//!    strictly increasing, values numeric. Missing values (an empty cell, `NaN`, `NA`) are an
//!    error naming the column and the rows, unless `missing` is set to drop, forward-fill or
//!    interpolate them. Values a policy cannot fill stay gaps.
//! 2. The last `test_length` steps are the test part, the `validation_length` steps before
//!    them the validation part, and the rest the training part.
//! 3. [`SeriesConfig::prepare`] fits the scaling (after differencing, if configured) on the
//!    training part only and stores it in a [`SeriesPreprocessor`], which `model.json` keeps.
//! 4. A window has `lookback` input steps and the `horizon` steps after them as targets. A
//!    window belongs to the part that contains all of its targets. Its inputs come before its
//!    targets, so they never reach into a later part, and a training window lies wholly in
//!    the training part. No window contains a gap.
//!
//! Windows are [`SeriesWindows`]: the start index of each window into one shared matrix of
//! the transformed series. A batch copies its windows out when it is gathered, so memory grows
//! with the series length, not with the number of windows times the lookback.

mod time;

pub use time::{TimeFormat, regular_step};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Dataset;
use super::tabular::Table;
use crate::error::{Error, Result};
use crate::nn::Sequential;
use crate::tensor::Tensor;

/// The handling of missing values (an empty cell, `NaN` or `NA`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingPolicy {
    /// Stop with an error that names the column and the rows.
    #[default]
    Error,
    /// Leave the steps out: no window contains them.
    Drop,
    /// Repeat the last present value. Leading missing values stay gaps.
    ForwardFill,
    /// Interpolate linearly between the present values around them. Leading and trailing
    /// missing values stay gaps.
    Interpolate,
}

/// The scaling of the series values, with statistics of the training part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scaling {
    /// Subtract the mean and divide by the standard deviation.
    #[default]
    Standard,
    /// Map the training minimum and maximum to 0 and 1.
    MinMax,
    /// Leave the values as they are.
    None,
}

/// The way `dendrite forecast` predicts more steps than the model's horizon.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecastStrategy {
    /// Feed the predictions back as inputs and predict again, `horizon` steps at a time.
    #[default]
    Recursive,
    /// Predict all steps from the last window at once; the horizon must cover them.
    Direct,
}

/// The settings of a time-series data source, as written under `[data]` with
/// `format = "series"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesConfig {
    /// The CSV file (or gzip-compressed CSV) with the whole series.
    pub file: PathBuf,
    /// The time column; without it the rows are in time order.
    #[serde(default)]
    pub time_column: Option<String>,
    /// The columns to forecast; they are also inputs.
    pub value_columns: Vec<String>,
    /// Extra numeric input columns, such as the month of year. They are inputs only.
    #[serde(default)]
    pub feature_columns: Vec<String>,
    /// Input steps per window.
    pub lookback: usize,
    /// Steps predicted per window (default 1).
    #[serde(default = "default_one")]
    pub horizon: usize,
    /// Steps between the starts of consecutive windows (default 1).
    #[serde(default = "default_one")]
    pub stride: usize,
    /// The lag of differencing, `y_t - y_(t-lag)`, applied to the value columns before
    /// scaling; 0 (the default) turns it off, 1 is first differences, 12 seasonal
    /// differences of a monthly series.
    #[serde(default)]
    pub difference: usize,
    /// Scaling of values and features (default standard).
    #[serde(default)]
    pub scaling: Scaling,
    /// The season length for the seasonal naive baseline, in steps (12 for monthly data).
    #[serde(default)]
    pub season_length: Option<usize>,
    /// Steps at the end of the series held out as the test part.
    pub test_length: usize,
    /// Steps before the test part held out as the validation part (default 0).
    #[serde(default)]
    pub validation_length: usize,
    /// The way `dendrite forecast` predicts beyond the horizon (default recursive).
    #[serde(default)]
    pub forecast: ForecastStrategy,
    /// Missing values: error (default), drop, forward_fill or interpolate.
    #[serde(default)]
    pub missing: MissingPolicy,
    /// The largest single buffer, in MiB, that reading or batching may allocate (default
    /// 1024). Larger requests stop with an error before they allocate.
    #[serde(default = "default_max_memory_mib")]
    pub max_memory_mib: usize,
}

fn default_one() -> usize {
    1
}

fn default_max_memory_mib() -> usize {
    1024
}

impl SeriesConfig {
    /// Checks the settings that do not depend on the data.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] naming the invalid setting.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::InvalidConfig(format!("data.{message}")));
        if self.value_columns.is_empty() {
            return invalid("value_columns is empty; name at least one column to forecast".into());
        }
        for (name, value) in [
            ("lookback", self.lookback),
            ("horizon", self.horizon),
            ("stride", self.stride),
            ("max_memory_mib", self.max_memory_mib),
        ] {
            if value == 0 {
                return invalid(format!("{name} = 0; it must be at least 1"));
            }
        }
        if self.test_length == 0 {
            return invalid(
                "test_length = 0; hold out at least the horizon at the end of the series".into(),
            );
        }
        if self.season_length == Some(0) {
            return invalid("season_length = 0; use the steps per season, such as 12".into());
        }
        let mut all = self.value_columns.clone();
        all.extend(self.feature_columns.iter().cloned());
        all.extend(self.time_column.iter().cloned());
        all.sort();
        if let Some(pair) = all.windows(2).find(|w| w[0] == w[1]) {
            return invalid(format!(
                "column \"{}\" is named twice among time_column, value_columns and \
                 feature_columns",
                pair[0]
            ));
        }
        if self.forecast == ForecastStrategy::Recursive && !self.feature_columns.is_empty() {
            return invalid(
                "feature_columns need forecast = \"direct\": a recursive forecast would need \
                 their future values"
                    .into(),
            );
        }
        Ok(())
    }

    /// Reads the file, fits the preprocessing on the training part and builds the windows of
    /// the three parts.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] for invalid settings or a window longer than the
    /// training part, [`Error::InvalidData`] for a file that cannot be used (naming the row),
    /// and [`Error::Io`] if it cannot be read.
    pub fn prepare(&self) -> Result<PreparedSeries> {
        self.validate()?;
        let mut preprocessor = SeriesPreprocessor::unfitted(self);
        let series = preprocessor.read(&self.file)?;
        preprocessor.fit(&series)?;
        let matrix = Arc::new(preprocessor.input_matrix(&series)?);

        let parts = preprocessor.parts(series.len(), &self.file)?;
        let train = preprocessor.windows(&matrix, parts.train, self.stride)?;
        if train.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "{}: no training window fits: a window spans lookback {} + horizon {} = {} \
                 steps{}, but the training part has {} steps (rows 1 to {}) without a gap. \
                 Use a shorter lookback, a smaller test_length or validation_length, or a \
                 longer series",
                self.file.display(),
                self.lookback,
                self.horizon,
                self.lookback + self.horizon,
                if self.difference > 0 {
                    format!(" after {} steps lost to differencing", self.difference)
                } else {
                    String::new()
                },
                parts.train.1,
                parts.train.1
            )));
        }
        let validation = preprocessor.windows(&matrix, parts.validation, 1)?;
        let test = preprocessor.windows(&matrix, parts.test, 1)?;
        if test.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "{}: no test window fits in the last {} steps; test_length must be at least \
                 the horizon ({})",
                self.file.display(),
                self.test_length,
                self.horizon
            )));
        }
        let mut notes = series.notes.clone();
        notes.extend(gap_note(&series, &self.file));
        Ok(PreparedSeries {
            train,
            validation: (!validation.is_empty()).then_some(validation),
            test,
            preprocessor,
            series,
            notes,
        })
    }
}

/// A note on how many windows gaps left out, if any step is a gap.
fn gap_note(series: &Series, path: &Path) -> Option<String> {
    let gaps = series.values.iter().filter(|v| !v.is_finite()).count();
    (gaps > 0).then(|| {
        format!(
            "{}: {gaps} missing values stay gaps; windows that would contain them are left out",
            path.display()
        )
    })
}

/// The outcome of [`SeriesConfig::prepare`].
#[derive(Debug, Clone)]
pub struct PreparedSeries {
    /// The training windows.
    pub train: Dataset,
    /// The validation windows, if `validation_length` leaves any.
    pub validation: Option<Dataset>,
    /// The test windows.
    pub test: Dataset,
    /// The fitted preprocessing, for `model.json`.
    pub preprocessor: SeriesPreprocessor,
    /// The series as read.
    pub series: Series,
    /// Notes for the user: missing values filled, gaps left out.
    pub notes: Vec<String>,
}

/// A series as read from a file: timestamps, values and features, row by row, with gaps as
/// NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The time of each row as an ordinal of the time format, or the row index.
    pub times: Vec<i64>,
    /// `[rows, value columns]`, row-major, in the file's units.
    pub values: Vec<f64>,
    /// `[rows, feature columns]`, row-major.
    pub features: Vec<f64>,
    /// Missing values filled per column, and other notes on the reading.
    pub notes: Vec<String>,
    /// The number of missing values each policy filled, per value and feature column.
    pub filled: Vec<(String, usize)>,
}

impl Series {
    /// The number of rows.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether the series has no rows.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }
}

/// Sliding windows over one shared matrix of transformed series rows.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesWindows {
    matrix: Arc<Vec<f32>>,
    width: usize,
    starts: Vec<usize>,
    shape: [usize; 2],
}

impl SeriesWindows {
    /// Creates windows of `lookback` rows of a `[rows, width]` matrix, one per start row.
    ///
    /// # Panics
    ///
    /// Panics if a window runs past the end of the matrix.
    pub fn new(matrix: Arc<Vec<f32>>, width: usize, lookback: usize, starts: Vec<usize>) -> Self {
        let rows = matrix.len() / width.max(1);
        assert!(
            starts.iter().all(|&s| s + lookback <= rows),
            "a window of {lookback} rows runs past the {rows} rows of the series"
        );
        SeriesWindows {
            matrix,
            width,
            starts,
            shape: [lookback, width],
        }
    }

    /// The number of windows.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are no windows.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The first row of each window.
    pub fn starts(&self) -> &[usize] {
        &self.starts
    }

    /// `[lookback, width]`, the shape of one window.
    pub fn window_shape(&self) -> &[usize] {
        &self.shape
    }

    /// The windows in `indices`, sharing the matrix.
    pub fn subset(&self, indices: &[usize]) -> SeriesWindows {
        SeriesWindows {
            matrix: Arc::clone(&self.matrix),
            width: self.width,
            starts: indices.iter().map(|&i| self.starts[i]).collect(),
            shape: self.shape,
        }
    }

    /// Copies the windows in `indices`, in that order, into `out`.
    ///
    /// # Panics
    ///
    /// Panics if an index is out of range or `out` does not hold exactly
    /// `indices.len() * lookback * width` values.
    pub fn gather_into_slice(&self, indices: &[usize], out: &mut [f32]) {
        let len = self.shape[0] * self.width;
        assert_eq!(
            out.len(),
            indices.len() * len,
            "gather needs {} values for {} windows",
            indices.len() * len,
            indices.len()
        );
        for (&i, dst) in indices.iter().zip(out.chunks_exact_mut(len.max(1))) {
            let start = self.starts[i] * self.width;
            dst.copy_from_slice(&self.matrix[start..start + len]);
        }
    }

    /// The bytes all windows would take if each were stored on its own in f32, for
    /// comparison with the shared matrix.
    pub fn materialized_bytes(&self) -> u128 {
        self.starts.len() as u128 * (self.shape[0] * self.width) as u128 * 4
    }

    /// The bytes of the shared matrix.
    pub fn matrix_bytes(&self) -> usize {
        self.matrix.len() * 4
    }
}

/// The affine map `(x - center) / scale` of one column.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ColumnScale {
    /// Subtracted first.
    pub center: f64,
    /// Divided by next; 1 for a constant column.
    pub scale: f64,
}

/// The fitted preprocessing of a series: every setting of [`SeriesConfig`] that shapes the
/// inputs, the timestamps' format and step, and the scaling fitted on the training part.
/// `model.json` stores it, so that `evaluate` and `forecast` prepare a file the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPreprocessor {
    /// The time column, if any.
    pub time_column: Option<String>,
    /// The time format of the training file, if it has a time column.
    pub time_format: Option<TimeFormat>,
    /// The most common step between consecutive timestamps (1 without a time column).
    pub time_step: i64,
    /// The forecast columns.
    pub value_columns: Vec<String>,
    /// The extra input columns.
    pub feature_columns: Vec<String>,
    /// Input steps per window.
    pub lookback: usize,
    /// Steps predicted per window.
    pub horizon: usize,
    /// Lag of differencing, 0 for none.
    pub difference: usize,
    /// The kind of scaling.
    pub scaling: Scaling,
    /// Scaling of each value column (after differencing), fitted on the training part.
    pub value_scales: Vec<ColumnScale>,
    /// Scaling of each feature column, fitted on the training part.
    pub feature_scales: Vec<ColumnScale>,
    /// The season length of the seasonal naive baseline.
    pub season_length: Option<usize>,
    /// Steps of the test part.
    pub test_length: usize,
    /// Steps of the validation part.
    pub validation_length: usize,
    /// How forecasts beyond the horizon are made.
    pub forecast: ForecastStrategy,
    /// The missing-value policy.
    pub missing: MissingPolicy,
    /// The largest single buffer reading or batching may allocate, in MiB.
    pub max_memory_mib: usize,
}

/// The row ranges `(start, end)` of the three parts of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    /// Rows whose values train the model.
    pub train: (usize, usize),
    /// Rows whose values validate it.
    pub validation: (usize, usize),
    /// The last rows, for the test figures.
    pub test: (usize, usize),
}

/// Cell texts that mean a missing value.
fn is_missing(text: &str) -> bool {
    text.is_empty() || text.eq_ignore_ascii_case("nan") || text.eq_ignore_ascii_case("na")
}

/// Lists rows for a message: the first 20, then a count of the rest.
fn list_rows(rows: &[usize]) -> String {
    let mut text: Vec<String> = rows.iter().take(20).map(usize::to_string).collect();
    if rows.len() > 20 {
        text.push(format!("and {} more", rows.len() - 20));
    }
    text.join(", ")
}

impl SeriesPreprocessor {
    /// The settings of `config`, with no scaling fitted yet.
    pub fn unfitted(config: &SeriesConfig) -> Self {
        SeriesPreprocessor {
            time_column: config.time_column.clone(),
            time_format: None,
            time_step: 1,
            value_columns: config.value_columns.clone(),
            feature_columns: config.feature_columns.clone(),
            lookback: config.lookback,
            horizon: config.horizon,
            difference: config.difference,
            scaling: config.scaling,
            value_scales: Vec::new(),
            feature_scales: Vec::new(),
            season_length: config.season_length,
            test_length: config.test_length,
            validation_length: config.validation_length,
            forecast: config.forecast,
            missing: config.missing,
            max_memory_mib: config.max_memory_mib,
        }
    }

    /// The number of values per step of a window: value columns, then feature columns.
    pub fn width(&self) -> usize {
        self.value_columns.len() + self.feature_columns.len()
    }

    /// The number of outputs the model needs: `horizon` steps of every value column,
    /// step-major.
    pub fn outputs(&self) -> usize {
        self.horizon * self.value_columns.len()
    }

    /// Returns an error if `bytes` is over the memory limit, naming `what`.
    fn check_allocation(&self, what: &str, bytes: u128, path: &Path) -> Result<()> {
        let limit = self.max_memory_mib as u128 * 1024 * 1024;
        if bytes > limit {
            return Err(Error::invalid_data(
                path,
                format!(
                    "{what} would take {:.1} MiB, over the limit of {} MiB \
                     (data.max_memory_mib); use a shorter series, lookback or batch, or raise \
                     the limit",
                    bytes as f64 / (1024.0 * 1024.0),
                    self.max_memory_mib
                ),
            ));
        }
        Ok(())
    }

    /// Reads a series file with this preprocessor's columns and missing-value policy. On
    /// first use (no fitted time format yet) it infers the time format from the first row.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidData`], naming the file, the data row (from 1) and the line,
    /// for a missing column, a timestamp that does not parse or is not after the one before
    /// it, a non-numeric value, or a missing value under the `error` policy, and
    /// [`Error::Io`] if the file cannot be read.
    pub fn read(&mut self, path: &Path) -> Result<Series> {
        let metadata = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        // Text cells take a few times the bytes of the file; check before reading it.
        self.check_allocation("reading the file", metadata.len() as u128 * 4, path)?;
        let table = Table::read(path, None)?;
        let column = |name: &str| {
            table.column(name).ok_or_else(|| {
                Error::invalid_data(
                    path,
                    format!(
                        "column \"{name}\" is missing; the file has columns {}",
                        table.header().join(", ")
                    ),
                )
            })
        };
        let rows = table.len();
        let row_label = |row: usize| format!("data row {} (line {})", row + 1, table.line(row));

        let times = match &self.time_column {
            None => (0..rows as i64).collect(),
            Some(name) => {
                let index = column(name)?;
                let first = table.cell(0, index);
                let format = match self.time_format {
                    Some(format) => format,
                    None => TimeFormat::infer(first).ok_or_else(|| {
                        Error::invalid_data(
                            path,
                            format!(
                                "{}: time \"{first}\" in column \"{name}\" is not a timestamp; \
                                 use an integer (1700), YYYY-MM, YYYY-MM-DD or \
                                 YYYY-MM-DDTHH:MM:SS",
                                row_label(0)
                            ),
                        )
                    })?,
                };
                let mut times: Vec<i64> = Vec::with_capacity(rows);
                for row in 0..rows {
                    let text = table.cell(row, index);
                    let time = format.parse(text).ok_or_else(|| {
                        Error::invalid_data(
                            path,
                            format!(
                                "{}: time \"{text}\" in column \"{name}\" does not have the \
                                 form {} of the first row",
                                row_label(row),
                                format.describe()
                            ),
                        )
                    })?;
                    if let Some(&previous) = times.last() {
                        if time == previous {
                            return Err(Error::invalid_data(
                                path,
                                format!(
                                    "{}: duplicate timestamp \"{text}\", the same as the row \
                                     before; keep one row per time step",
                                    row_label(row)
                                ),
                            ));
                        }
                        if time < previous {
                            return Err(Error::invalid_data(
                                path,
                                format!(
                                    "{}: timestamp \"{text}\" is earlier than \"{}\" in the \
                                     row before; sort the file by column \"{name}\"",
                                    row_label(row),
                                    table.cell(row - 1, index)
                                ),
                            ));
                        }
                    }
                    times.push(time);
                }
                self.time_format = Some(format);
                self.time_step = regular_step(&times).unwrap_or(1);
                times
            }
        };

        let mut notes = Vec::new();
        let mut filled = Vec::new();
        let mut read_columns = |names: &[String]| -> Result<Vec<f64>> {
            let mut out = vec![0.0f64; rows * names.len()];
            for (c, name) in names.iter().enumerate() {
                let index = column(name)?;
                let mut column_values = Vec::with_capacity(rows);
                let mut missing_rows = Vec::new();
                for row in 0..rows {
                    let text = table.cell(row, index);
                    if is_missing(text) {
                        missing_rows.push(row);
                        column_values.push(f64::NAN);
                        continue;
                    }
                    let value: f64 = text
                        .parse()
                        .ok()
                        .filter(|v: &f64| v.is_finite())
                        .ok_or_else(|| {
                            Error::invalid_data(
                                path,
                                format!(
                                    "{}: value \"{text}\" in column \"{name}\" is not a number; \
                                 fix the cell, or leave it empty to mark a missing value",
                                    row_label(row)
                                ),
                            )
                        })?;
                    column_values.push(value);
                }
                if !missing_rows.is_empty() {
                    let data_rows: Vec<usize> = missing_rows.iter().map(|r| r + 1).collect();
                    let lines: Vec<usize> = missing_rows
                        .iter()
                        .map(|&r| table.line(r) as usize)
                        .collect();
                    if self.missing == MissingPolicy::Error {
                        return Err(Error::invalid_data(
                            path,
                            format!(
                                "column \"{name}\" has {} missing values, at data rows {} \
                                 (file lines {}); set data.missing to \"drop\", \
                                 \"forward_fill\" or \"interpolate\", or fill them in the file",
                                missing_rows.len(),
                                list_rows(&data_rows),
                                list_rows(&lines)
                            ),
                        ));
                    }
                    let count = fill_missing(&mut column_values, self.missing);
                    let left = missing_rows.len() - count;
                    notes.push(format!(
                        "{}: column \"{name}\" has {} missing values at data rows {}; {} \
                         filled them ({count} filled, {left} left as gaps)",
                        path.display(),
                        missing_rows.len(),
                        list_rows(&data_rows),
                        match self.missing {
                            MissingPolicy::Drop => "drop",
                            MissingPolicy::ForwardFill => "forward_fill",
                            MissingPolicy::Interpolate => "interpolate",
                            MissingPolicy::Error => unreachable!("returned above"),
                        }
                    ));
                    filled.push((name.clone(), count));
                }
                for (row, value) in column_values.into_iter().enumerate() {
                    out[row * names.len() + c] = value;
                }
            }
            Ok(out)
        };
        let values = read_columns(&self.value_columns)?;
        let features = read_columns(&self.feature_columns)?;
        Ok(Series {
            times,
            values,
            features,
            notes,
            filled,
        })
    }

    /// Splits `rows` steps into the three parts.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] if the test and validation parts leave no training
    /// part.
    pub fn parts(&self, rows: usize, path: &Path) -> Result<Parts> {
        let held_out = self.test_length + self.validation_length;
        if held_out >= rows {
            return Err(Error::InvalidConfig(format!(
                "{}: test_length {} + validation_length {} = {held_out} steps, but the series \
                 has only {rows} rows; hold out fewer steps",
                path.display(),
                self.test_length,
                self.validation_length
            )));
        }
        let test_start = rows - self.test_length;
        let validation_start = test_start - self.validation_length;
        Ok(Parts {
            train: (0, validation_start),
            validation: (validation_start, test_start),
            test: (test_start, rows),
        })
    }

    /// The differenced value columns, `[rows, values]`, NaN where a lagged value is missing
    /// or falls before the start.
    fn differenced(&self, series: &Series) -> Vec<f64> {
        let channels = self.value_columns.len();
        let lag = self.difference;
        if lag == 0 {
            return series.values.clone();
        }
        (0..series.values.len())
            .map(|i| {
                let row = i / channels;
                if row < lag {
                    f64::NAN
                } else {
                    series.values[i] - series.values[i - lag * channels]
                }
            })
            .collect()
    }

    /// Fits the scaling of values and features on the training part of `series`.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] if the parts do not fit the series.
    pub fn fit(&mut self, series: &Series) -> Result<()> {
        let parts = self.parts(series.len(), Path::new("series"))?;
        let end = parts.train.1;
        let values = self.differenced(series);
        let fit_columns = |data: &[f64], columns: usize| -> Vec<ColumnScale> {
            (0..columns)
                .map(|c| {
                    let present: Vec<f64> = (0..end)
                        .map(|row| data[row * columns + c])
                        .filter(|v| v.is_finite())
                        .collect();
                    fit_scale(&present, self.scaling)
                })
                .collect()
        };
        self.value_scales = fit_columns(&values, self.value_columns.len());
        self.feature_scales = fit_columns(&series.features, self.feature_columns.len());
        Ok(())
    }

    /// The transformed series, `[rows, width]` in f32: differenced and scaled values, then
    /// scaled features, with NaN at gaps.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidData`] if the matrix would be over the memory limit.
    pub fn input_matrix(&self, series: &Series) -> Result<Vec<f32>> {
        let width = self.width();
        let bytes = (series.len() * width) as u128 * 4;
        self.check_allocation("the series matrix", bytes, Path::new("series"))?;
        let channels = self.value_columns.len();
        let features = self.feature_columns.len();
        let values = self.differenced(series);
        let mut matrix = vec![0.0f32; series.len() * width];
        for (row, out) in matrix.chunks_exact_mut(width.max(1)).enumerate() {
            for c in 0..channels {
                let s = self.value_scales[c];
                out[c] = ((values[row * channels + c] - s.center) / s.scale) as f32;
            }
            for f in 0..features {
                let s = self.feature_scales[f];
                out[channels + f] =
                    ((series.features[row * features + f] - s.center) / s.scale) as f32;
            }
        }
        Ok(matrix)
    }

    /// Builds the windows whose targets lie in the rows `part` (start, end), every `stride`
    /// steps counted back from the last one, leaving out windows with a gap.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidData`] if the targets would be over the memory limit.
    pub fn windows(
        &self,
        matrix: &Arc<Vec<f32>>,
        part: (usize, usize),
        stride: usize,
    ) -> Result<Dataset> {
        let (lookback, horizon) = (self.lookback, self.horizon);
        let width = self.width();
        let channels = self.value_columns.len();
        let valid: Vec<bool> = matrix
            .chunks_exact(width.max(1))
            .map(|row| row.iter().all(|v| v.is_finite()))
            .collect();
        // Rows up to each index that are gaps, so that a window is checked in O(1).
        let mut gaps_before = Vec::with_capacity(valid.len() + 1);
        gaps_before.push(0usize);
        for &ok in &valid {
            gaps_before.push(gaps_before.last().copied().unwrap_or(0) + usize::from(!ok));
        }

        let (start, end) = part;
        let mut starts = Vec::new();
        if end >= start + horizon {
            // The first target row of a window runs over [start, end - horizon].
            let mut first_target = end - horizon;
            loop {
                if first_target >= lookback {
                    let s = first_target - lookback;
                    let span_end = first_target + horizon;
                    if gaps_before[span_end] == gaps_before[s] {
                        starts.push(s);
                    }
                }
                if first_target < start + stride {
                    break;
                }
                first_target -= stride;
            }
        }
        starts.reverse();

        let outputs = self.outputs();
        self.check_allocation(
            "the window targets",
            (starts.len() * outputs) as u128 * 4,
            Path::new("series"),
        )?;
        let mut targets = Vec::with_capacity(starts.len() * outputs);
        for &s in &starts {
            for h in 0..horizon {
                let row = s + lookback + h;
                targets.extend_from_slice(&matrix[row * width..row * width + channels]);
            }
        }
        let windows = SeriesWindows::new(Arc::clone(matrix), width, lookback, starts);
        let count = windows.len();
        Dataset::windowed(windows, Tensor::from_vec(&[count, outputs], targets))
    }

    /// Turns model outputs of the window starting at `start` (`[horizon, values]`, scaled
    /// and differenced) into values in the file's units, undoing the differencing from the
    /// known values before the targets and the predictions themselves.
    pub fn invert(&self, series_values: &[f64], start: usize, outputs: &[f32]) -> Vec<f64> {
        let channels = self.value_columns.len();
        let first_target = start + self.lookback;
        let mut predicted = vec![0.0f64; outputs.len()];
        for (i, &output) in outputs.iter().enumerate() {
            let (h, c) = (i / channels, i % channels);
            let s = self.value_scales[c];
            let mut value = output as f64 * s.scale + s.center;
            let lag = self.difference;
            if lag > 0 {
                value += if h >= lag {
                    predicted[(h - lag) * channels + c]
                } else {
                    series_values[(first_target + h - lag) * channels + c]
                };
            }
            predicted[i] = value;
        }
        predicted
    }

    /// Runs `model` over the windows of `dataset` in batches of 256 and returns the outputs,
    /// `[windows, outputs]` row-major.
    pub fn predict_windows(&self, model: &Sequential, dataset: &Dataset) -> Vec<f32> {
        let mut shape = vec![0];
        shape.extend_from_slice(dataset.feature_shape());
        let mut outputs = Vec::with_capacity(dataset.len() * self.outputs());
        let mut inputs = Vec::new();
        let indices: Vec<usize> = (0..dataset.len()).collect();
        for batch in indices.chunks(256) {
            dataset.gather_into(batch, &mut inputs);
            shape[0] = batch.len();
            let tensor = Tensor::from_vec(&shape, std::mem::take(&mut inputs));
            outputs.extend_from_slice(model.predict(&tensor, batch.len()).data());
            inputs = tensor.into_vec();
        }
        outputs
    }

    /// Evaluates `model` on the windows of `dataset` (built from `series`) in the file's
    /// units, next to the persistence and seasonal naive baselines on the same windows.
    ///
    /// # Panics
    ///
    /// Panics if `dataset` was not built by [`SeriesPreprocessor::windows`].
    pub fn evaluate(
        &self,
        model: &Sequential,
        series: &Series,
        dataset: &Dataset,
    ) -> ForecastEvaluation {
        let windows = dataset.windows().expect("a dataset of windows");
        let outputs = self.predict_windows(model, dataset);
        let channels = self.value_columns.len();
        let width = self.outputs();
        let mut model_errors = ErrorSums::default();
        let mut persistence = ErrorSums::default();
        let mut seasonal = ErrorSums::default();
        for (w, &start) in windows.starts().iter().enumerate() {
            let predicted =
                self.invert(&series.values, start, &outputs[w * width..(w + 1) * width]);
            let first_target = start + self.lookback;
            for (i, &prediction) in predicted.iter().enumerate() {
                let (h, c) = (i / channels, i % channels);
                let actual = series.values[(first_target + h) * channels + c];
                model_errors.add(prediction, actual);
                persistence.add(series.values[(first_target - 1) * channels + c], actual);
                if let Some(m) = self.season_length {
                    // The value one season before the target, or whole seasons earlier when
                    // the horizon reaches past one season.
                    let back = m * (h / m + 1);
                    if let Some(row) = (first_target + h).checked_sub(back) {
                        seasonal.add(series.values[row * channels + c], actual);
                    }
                }
            }
        }
        ForecastEvaluation {
            windows: windows.len(),
            model: model_errors.metrics(),
            persistence: persistence.metrics(),
            seasonal: self
                .season_length
                .filter(|_| seasonal.count > 0)
                .map(|_| seasonal.metrics()),
        }
    }

    /// Forecasts `steps` values of every value column after the end of `series`, with this
    /// preprocessor's strategy, and returns them with their timestamps as text.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] if `steps` is 0, a direct forecast asks for more
    /// steps than the horizon, or the last `lookback` rows contain a gap.
    pub fn forecast(
        &self,
        model: &Sequential,
        series: &Series,
        steps: usize,
    ) -> Result<Vec<(String, Vec<f64>)>> {
        if steps == 0 {
            return Err(Error::InvalidConfig(
                "the number of steps to forecast must be at least 1".into(),
            ));
        }
        if self.forecast == ForecastStrategy::Direct && steps > self.horizon {
            return Err(Error::InvalidConfig(format!(
                "the model predicts {} steps directly (forecast = \"direct\"), fewer than the \
                 {steps} requested; ask for at most {} steps, or train with a longer horizon \
                 or forecast = \"recursive\"",
                self.horizon, self.horizon
            )));
        }
        let channels = self.value_columns.len();
        let width = self.width();
        let rows = series.len();
        if rows < self.lookback + self.difference {
            return Err(Error::InvalidConfig(format!(
                "the series has {rows} rows, but a forecast needs the last lookback {} + \
                 difference {} rows",
                self.lookback, self.difference
            )));
        }
        let mut values = series.values.clone();
        let mut matrix = self.input_matrix(series)?;
        let mut produced = 0;
        while produced < steps {
            let end = values.len() / channels;
            let window = &matrix[(end - self.lookback) * width..end * width];
            if let Some(row) = window
                .chunks_exact(width)
                .position(|r| r.iter().any(|v| !v.is_finite()))
            {
                return Err(Error::InvalidConfig(format!(
                    "data row {} is a gap inside the last window; fill the missing values \
                     at the end of the file before forecasting",
                    end - self.lookback + row + 1
                )));
            }
            let mut shape = vec![1];
            shape.extend_from_slice(&[self.lookback, width]);
            let outputs = model.predict(&Tensor::from_vec(&shape, window.to_vec()), 1);
            let predicted = self.invert(&values, end - self.lookback, outputs.data());
            let take = self.horizon.min(steps - produced);
            for h in 0..take {
                let row = &predicted[h * channels..(h + 1) * channels];
                values.extend_from_slice(row);
                let scaled: Vec<f32> = outputs.data()[h * channels..(h + 1) * channels].to_vec();
                matrix.extend_from_slice(&scaled);
            }
            produced += take;
        }

        let last = series.times.last().copied().unwrap_or(-1);
        Ok((0..steps)
            .map(|k| {
                let time = last + (k as i64 + 1) * self.time_step;
                let label = match self.time_format {
                    Some(format) => format.format(time),
                    None => time.to_string(),
                };
                let row = (rows + k) * channels;
                (label, values[row..row + channels].to_vec())
            })
            .collect())
    }
}

/// Fills the missing (NaN) values of one column by `policy` and returns how many it filled.
fn fill_missing(values: &mut [f64], policy: MissingPolicy) -> usize {
    let mut count = 0;
    match policy {
        MissingPolicy::Error | MissingPolicy::Drop => {}
        MissingPolicy::ForwardFill => {
            let mut last = None;
            for v in values.iter_mut() {
                if v.is_nan() {
                    if let Some(previous) = last {
                        *v = previous;
                        count += 1;
                    }
                } else {
                    last = Some(*v);
                }
            }
        }
        MissingPolicy::Interpolate => {
            let mut previous: Option<usize> = None;
            for i in 0..values.len() {
                if values[i].is_nan() {
                    continue;
                }
                if let Some(p) = previous
                    && i > p + 1
                {
                    let (a, b) = (values[p], values[i]);
                    for (k, slot) in values[p + 1..i].iter_mut().enumerate() {
                        let t = (k + 1) as f64 / (i - p) as f64;
                        *slot = a + t * (b - a);
                        count += 1;
                    }
                }
                previous = Some(i);
            }
        }
    }
    count
}

fn fit_scale(values: &[f64], scaling: Scaling) -> ColumnScale {
    let identity = ColumnScale {
        center: 0.0,
        scale: 1.0,
    };
    if values.is_empty() {
        return identity;
    }
    let nonzero = |scale: f64| if scale > 1e-12 { scale } else { 1.0 };
    match scaling {
        Scaling::None => identity,
        Scaling::Standard => {
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            ColumnScale {
                center: mean,
                scale: nonzero(var.sqrt()),
            }
        }
        Scaling::MinMax => {
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            ColumnScale {
                center: min,
                scale: nonzero(max - min),
            }
        }
    }
}

#[derive(Debug, Default)]
struct ErrorSums {
    absolute: f64,
    squared: f64,
    percent: f64,
    count: usize,
    percent_count: usize,
}

impl ErrorSums {
    fn add(&mut self, prediction: f64, actual: f64) {
        let error = prediction - actual;
        self.absolute += error.abs();
        self.squared += error * error;
        self.count += 1;
        if actual != 0.0 {
            self.percent += (error / actual).abs();
            self.percent_count += 1;
        }
    }

    fn metrics(&self) -> ForecastMetrics {
        let n = self.count.max(1) as f64;
        ForecastMetrics {
            mae: self.absolute / n,
            rmse: (self.squared / n).sqrt(),
            mape: (self.percent_count > 0)
                .then(|| 100.0 * self.percent / self.percent_count as f64),
            values: self.count,
            zero_actuals: self.count - self.percent_count,
        }
    }
}

/// Forecast errors in the units of the file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ForecastMetrics {
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute percentage error, in percent, over the values whose actual value is not
    /// 0; `None` if all are 0.
    pub mape: Option<f64>,
    /// The number of predicted values (windows x horizon x value columns).
    pub values: usize,
    /// Actual values of 0, which MAPE leaves out.
    pub zero_actuals: usize,
}

/// The model's errors and the baselines' on the same windows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ForecastEvaluation {
    /// The number of windows.
    pub windows: usize,
    /// The model's errors.
    pub model: ForecastMetrics,
    /// Predicting the last input value for every target step.
    pub persistence: ForecastMetrics,
    /// Predicting the value one season earlier; `None` without `season_length`.
    pub seasonal: Option<ForecastMetrics>,
}

#[cfg(test)]
mod tests;
