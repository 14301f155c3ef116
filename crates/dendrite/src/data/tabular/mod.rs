//! Tabular data from CSV files: reading, column types, targets, and preprocessing fitted on
//! the training rows.
//!
//! The steps, in order:
//!
//! 1. [`Table`] reads a CSV file into text cells (delimiter detection, quoting, byte-order
//!    mark, blank lines, gzip).
//! 2. [`TabularSource`] gives every column a role (feature, target, ID or ignored), infers
//!    whether each feature column is numeric or categorical, and parses the targets: class
//!    labels or numeric values.
//! 3. [`TabularSource::fit`] fits a [`TabularPreprocessor`] on the training rows only:
//!    standardization of numeric columns, one-hot encoding of categorical columns and the
//!    values that replace missing cells. The preprocessor serializes with serde and is stored
//!    in `model.json`.
//! 4. [`TabularPreprocessor::transform`] turns any table with the same columns, in any order
//!    and with extra columns, into a feature tensor of shape `[n, f]`.
//!
//! [`CsvConfig`] contains the settings of all steps, as written under `[data]` with
//! `format = "csv"`, and [`CsvConfig::prepare`] runs them on the configured files.

mod columns;
mod preprocess;
mod reader;
mod source;

pub use columns::{ColumnKind, class_index};
pub use preprocess::{ColumnEncoding, FittedColumn, TabularPreprocessor, TransformReport};
pub use reader::{DELIMITER_CANDIDATES, Table, delimiter_name, detect_delimiter};
pub use source::{PreparedTabular, TabularSource};

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ClassWeights;
use crate::error::{Error, Result};

/// The settings of a CSV data source, as written under `[data]` with `format = "csv"`.
///
/// Only `train`, `target` and `task` are required; [`CsvConfig::new`] sets the defaults
/// that the other fields get in a config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// The training file. The validation and test splits, if any, are taken from it.
    pub train: PathBuf,

    /// A separate test file with the same columns, read once for the final figures.
    #[serde(default)]
    pub test: Option<PathBuf>,

    /// The target column, or several for regression with several outputs.
    pub target: TargetColumns,

    /// The kind of target: classes or numeric values.
    pub task: TabularTask,

    /// The fraction of the training file's rows held out for validation, in `[0, 1)`.
    #[serde(default)]
    pub validation_split: f64,

    /// The fraction of the training file's rows held out as a test split, in `[0, 1)`.
    /// Must be 0 when `test` names a file.
    #[serde(default)]
    pub test_split: f64,

    /// The delimiter: `','`, `';'`, `'\t'` or another ASCII character. Detected among the
    /// first three when not set.
    #[serde(default)]
    pub delimiter: Option<char>,

    /// Columns that are read but not used, such as free text.
    #[serde(default)]
    pub ignore: Vec<String>,

    /// A column that identifies each row. It is not a feature; `predict` copies it into its
    /// output.
    #[serde(default)]
    pub id_column: Option<String>,

    /// Column kinds that override the inferred ones, by column name.
    #[serde(default)]
    pub column_types: BTreeMap<String, ColumnKind>,

    /// Cell texts that mean a missing value, compared after trimming.
    #[serde(default = "default_missing_values")]
    pub missing_values: Vec<String>,

    /// The policy for missing feature values.
    #[serde(default)]
    pub missing: MissingPolicy,

    /// Whether each column with missing values in the training rows gets an extra 0/1
    /// feature that is 1 where the value was imputed.
    #[serde(default)]
    pub missing_indicator: bool,

    /// The policy for a category that did not occur in the training rows.
    #[serde(default)]
    pub unknown_category: UnknownCategoryPolicy,

    /// Whether numeric columns are standardized to mean 0 and standard deviation 1 with the
    /// statistics of the training rows.
    #[serde(default = "default_true")]
    pub standardize: bool,

    /// Weights of the classes in the training loss, for imbalanced classes.
    #[serde(default)]
    pub class_weights: Option<ClassWeights>,
}

/// One target column name or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetColumns {
    /// A single column.
    One(String),
    /// Several columns, for regression with several outputs.
    Many(Vec<String>),
}

impl TargetColumns {
    /// Returns the column names, in order.
    pub fn names(&self) -> Vec<String> {
        match self {
            TargetColumns::One(name) => vec![name.clone()],
            TargetColumns::Many(names) => names.clone(),
        }
    }
}

/// The kind of target of a CSV data source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TabularTask {
    /// One column of class labels: integers or text.
    Classification,
    /// One or more numeric columns.
    Regression,
}

/// The policy for a missing feature value: an empty cell or one of
/// [`CsvConfig::missing_values`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingPolicy {
    /// Stop with an error that names the file, line and column.
    #[default]
    Error,
    /// Impute the mean of the training rows in numeric columns and the most frequent value
    /// in categorical columns.
    Mean,
    /// Impute the most frequent value of the training rows in every column.
    MostFrequent,
}

/// The policy for a categorical value that did not occur in the training rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCategoryPolicy {
    /// Stop with an error that names the file, line, column and value.
    #[default]
    Error,
    /// Encode the value as all zeros and count the rows that had one.
    Ignore,
}

fn default_missing_values() -> Vec<String> {
    vec![String::new(), "NA".to_string(), "?".to_string()]
}

fn default_true() -> bool {
    true
}

impl CsvConfig {
    /// Creates a config for `train` with the defaults of a config file.
    ///
    /// The defaults are no test file, no validation or test split, a detected delimiter, no
    /// ignored or ID column and inferred column kinds. Missing values (`""`, `"NA"` and
    /// `"?"`) and unknown categories are rejected, numeric columns are standardized, and
    /// classes are not weighted.
    pub fn new(train: impl Into<PathBuf>, target: TargetColumns, task: TabularTask) -> Self {
        CsvConfig {
            train: train.into(),
            test: None,
            target,
            task,
            validation_split: 0.0,
            test_split: 0.0,
            delimiter: None,
            ignore: Vec::new(),
            id_column: None,
            column_types: BTreeMap::new(),
            missing_values: default_missing_values(),
            missing: MissingPolicy::default(),
            missing_indicator: false,
            unknown_category: UnknownCategoryPolicy::default(),
            standardize: true,
            class_weights: None,
        }
    }

    /// Returns the target column names.
    pub fn target_names(&self) -> Vec<String> {
        self.target.names()
    }

    /// Returns the delimiter as a byte, or `None` to detect it.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] if the delimiter is not an ASCII character or is a
    /// quote, a line break or a space.
    pub fn delimiter_byte(&self) -> Result<Option<u8>> {
        let Some(delimiter) = self.delimiter else {
            return Ok(None);
        };
        if !delimiter.is_ascii() || matches!(delimiter, '"' | '\n' | '\r' | ' ') {
            return Err(Error::InvalidConfig(format!(
                "data.delimiter = {delimiter:?} is invalid; use \",\", \";\", \"\\t\" or another \
                 ASCII character that is not a quote, a space or a line break"
            )));
        }
        Ok(Some(delimiter as u8))
    }

    /// Checks the settings that do not depend on the file contents.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] naming the setting if
    ///
    /// - a split fraction is outside `[0, 1)`, the two add up to 1 or more, or `test_split`
    ///   is set together with a test file,
    /// - there is no target, a target is listed twice, or classification has several,
    /// - a column has two roles (target, ID, ignored) or a type override names a target, ID
    ///   or ignored column,
    /// - the delimiter is invalid, or class weights are set for regression.
    pub fn validate(&self) -> Result<()> {
        for (key, fraction) in [
            ("validation_split", self.validation_split),
            ("test_split", self.test_split),
        ] {
            if !(0.0..1.0).contains(&fraction) {
                return Err(Error::InvalidConfig(format!(
                    "data.{key} = {fraction} is invalid; use a fraction in [0, 1) such as 0.2"
                )));
            }
        }
        if self.validation_split + self.test_split >= 1.0 {
            return Err(Error::InvalidConfig(format!(
                "data.validation_split ({}) and data.test_split ({}) leave no training rows; \
                 make their sum less than 1",
                self.validation_split, self.test_split
            )));
        }
        if self.test.is_some() && self.test_split > 0.0 {
            return Err(Error::InvalidConfig(
                "data.test and data.test_split are both set; use a test file or a test split, \
                 not both"
                    .to_string(),
            ));
        }

        let targets = self.target_names();
        if targets.is_empty() {
            return Err(Error::InvalidConfig(
                "data.target is empty; name the target column".to_string(),
            ));
        }
        if self.task == TabularTask::Classification && targets.len() != 1 {
            return Err(Error::InvalidConfig(format!(
                "classification needs exactly one target column, got {}: {}",
                targets.len(),
                targets.join(", ")
            )));
        }

        let mut roles: BTreeMap<&str, &str> = BTreeMap::new();
        let named = targets
            .iter()
            .map(|name| (name, "target"))
            .chain(self.id_column.iter().map(|name| (name, "id_column")))
            .chain(self.ignore.iter().map(|name| (name, "ignore")));
        for (name, role) in named {
            if let Some(previous) = roles.insert(name, role) {
                return Err(Error::InvalidConfig(if previous == role {
                    format!("column \"{name}\" is listed twice in data.{role}")
                } else {
                    format!(
                        "column \"{name}\" is named in both data.{previous} and data.{role}; \
                         give each column one role"
                    )
                }));
            }
        }
        if let Some((name, role)) = self
            .column_types
            .keys()
            .find_map(|name| roles.get(name.as_str()).map(|role| (name, role)))
        {
            return Err(Error::InvalidConfig(format!(
                "data.column_types names \"{name}\", which is in data.{role}; column types apply \
                 to feature columns only"
            )));
        }

        self.delimiter_byte()?;
        if self.task == TabularTask::Regression && self.class_weights.is_some() {
            return Err(Error::InvalidConfig(
                "data.class_weights is set, but the task is regression; remove it".to_string(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
