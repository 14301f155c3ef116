//! A reader for small CSV files whose cells are all numbers, such as the tiny example files.
//!
//! The first row is the header. The named target columns become the targets and every other
//! column, in file order, becomes a feature.

use std::collections::BTreeSet;
use std::path::Path;

use csv::{ReaderBuilder, StringRecord, Trim};

use super::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Reads a CSV file with a header row and numeric cells into a dataset.
///
/// Features have shape `[n, f]`, where `f` is the number of columns not listed in
/// `target_columns`. With `classification` true, `target_columns` must name exactly one
/// column of integer labels, written like `3` or `3.0`. The distinct labels, sorted
/// numerically, become the classes, so labels `{3, 7}` give class indices 0 and 1 and class
/// names `"3"` and `"7"`. Otherwise the targets are a `[n, k]` tensor of the `k` target
/// columns in the order given. Cells are trimmed of surrounding spaces and blank lines are
/// skipped.
///
/// # Errors
///
/// Returns [`Error::Io`] if the file cannot be read. Returns [`Error::InvalidConfig`] if
/// `target_columns` is empty, repeats a name, or names several columns for classification.
/// Returns [`Error::InvalidData`] if
///
/// - the header row is missing, lacks a target column, or repeats a target column's name,
/// - every column is a target column, so no feature column is left,
/// - there are no data rows,
/// - a row has a different number of cells than the header,
/// - a cell is not a finite number, or a class label is not an integer.
pub fn read_numeric_csv(
    path: impl AsRef<Path>,
    target_columns: &[String],
    classification: bool,
) -> Result<Dataset> {
    let path = path.as_ref();
    check_target_names(target_columns, classification)?;

    let mut reader = ReaderBuilder::new()
        .has_headers(true)
        .trim(Trim::All)
        .from_path(path)
        .map_err(|e| csv_error(path, e))?;
    let header = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    let target_indices = find_target_columns(path, &header, target_columns)?;
    let feature_indices: Vec<usize> = (0..header.len())
        .filter(|i| !target_indices.contains(i))
        .collect();
    if feature_indices.is_empty() {
        return Err(Error::invalid_data(
            path,
            "every column is a target column, so no feature column is left",
        ));
    }

    let mut features = Vec::new();
    let mut targets = Vec::new();
    let mut labels = Vec::new();
    let mut rows = 0;
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map_or(0, csv::Position::line);
        let cell = |column: usize| Cell {
            path,
            line,
            column: &header[column],
            text: &record[column],
        };

        for &column in &feature_indices {
            features.push(cell(column).parse_number()?);
        }
        if classification {
            labels.push(cell(target_indices[0]).parse_label()?);
        } else {
            for &column in &target_indices {
                targets.push(cell(column).parse_number()?);
            }
        }
        rows += 1;
    }

    if rows == 0 {
        return Err(Error::invalid_data(
            path,
            "the file has no data rows after the header",
        ));
    }

    let features = Tensor::from_vec(&[rows, feature_indices.len()], features);
    let targets = if classification {
        class_targets(&labels)
    } else {
        Targets::Values(Tensor::from_vec(&[rows, target_indices.len()], targets))
    };
    Dataset::new(features, targets)
}

/// Returns the names of the feature columns of a CSV file: every header name not listed in
/// `target_columns`, in file order, as [`read_numeric_csv`] uses them.
///
/// # Errors
///
/// Returns [`Error::Io`] if the file cannot be read and [`Error::InvalidData`] if the header
/// is missing or lacks a target column.
pub fn feature_names(path: impl AsRef<Path>, target_columns: &[String]) -> Result<Vec<String>> {
    let path = path.as_ref();
    let mut reader = ReaderBuilder::new()
        .has_headers(true)
        .trim(Trim::All)
        .from_path(path)
        .map_err(|e| csv_error(path, e))?;
    let header = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    let target_indices = find_target_columns(path, &header, target_columns)?;
    Ok((0..header.len())
        .filter(|i| !target_indices.contains(i))
        .map(|i| header[i].to_string())
        .collect())
}

/// One cell with its location, for error messages.
struct Cell<'a> {
    path: &'a Path,
    line: u64,
    column: &'a str,
    text: &'a str,
}

impl Cell<'_> {
    fn parse_number(&self) -> Result<f32> {
        match self.text.parse::<f32>() {
            Ok(value) if value.is_finite() => Ok(value),
            Ok(_) => Err(self.error("is not a finite number")),
            Err(_) => Err(self.error("is not a number")),
        }
    }

    fn parse_label(&self) -> Result<i64> {
        if let Ok(label) = self.text.parse::<i64>() {
            return Ok(label);
        }

        // Accept labels written as whole floats ("1.0"), which some tools export.
        match self.text.parse::<f64>() {
            Ok(value) if value.fract() == 0.0 && value.abs() < 2f64.powi(53) => Ok(value as i64),
            _ => Err(self.error("is not an integer class label")),
        }
    }

    fn error(&self, problem: &str) -> Error {
        Error::invalid_data(
            self.path,
            format!(
                "line {}, column \"{}\": value \"{}\" {problem}",
                self.line, self.column, self.text
            ),
        )
    }
}

fn check_target_names(target_columns: &[String], classification: bool) -> Result<()> {
    if target_columns.is_empty() {
        return Err(Error::InvalidConfig(
            "no target column given; name at least one".to_string(),
        ));
    }
    if classification && target_columns.len() != 1 {
        return Err(Error::InvalidConfig(format!(
            "classification needs exactly one target column, got {}: {}",
            target_columns.len(),
            target_columns.join(", ")
        )));
    }

    for (i, name) in target_columns.iter().enumerate() {
        if target_columns[..i].contains(name) {
            return Err(Error::InvalidConfig(format!(
                "target column \"{name}\" is listed twice"
            )));
        }
    }
    Ok(())
}

/// Returns the header position of each target column, in the order of `target_columns`.
fn find_target_columns(
    path: &Path,
    header: &StringRecord,
    target_columns: &[String],
) -> Result<Vec<usize>> {
    if header.is_empty() {
        return Err(Error::invalid_data(
            path,
            "the file is empty; expected a header row",
        ));
    }

    let mut indices = Vec::with_capacity(target_columns.len());
    for name in target_columns {
        let mut matches = header
            .iter()
            .enumerate()
            .filter(|(_, column)| column == name);
        let Some((index, _)) = matches.next() else {
            return Err(Error::invalid_data(
                path,
                format!(
                    "target column \"{name}\" not found; the header has columns: {}",
                    header.iter().collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        if matches.next().is_some() {
            return Err(Error::invalid_data(
                path,
                format!("the header has more than one column named \"{name}\""),
            ));
        }
        indices.push(index);
    }
    Ok(indices)
}

/// Maps integer labels to class indices in ascending numeric order.
fn class_targets(raw_labels: &[i64]) -> Targets {
    let classes: Vec<i64> = raw_labels
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let labels = raw_labels
        .iter()
        .map(|label| {
            classes
                .binary_search(label)
                .expect("every label is in the class list")
        })
        .collect();
    let class_names = classes.iter().map(i64::to_string).collect();

    Targets::Classes {
        labels,
        class_names,
    }
}

/// Converts a CSV error to [`Error::Io`] for read failures and [`Error::InvalidData`] for
/// malformed content. The csv crate's message gives the line of malformed rows.
fn csv_error(path: &Path, error: csv::Error) -> Error {
    if error.is_io_error() {
        if let csv::ErrorKind::Io(io_error) = error.into_kind() {
            return Error::io(path, io_error);
        }
        unreachable!("is_io_error returned true for a non-I/O error");
    }
    Error::invalid_data(path, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempCsv(std::path::PathBuf);

    impl TempCsv {
        fn new(name: &str, contents: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("dendrite-csv-unit-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, contents).unwrap();
            TempCsv(path)
        }
    }

    impl Drop for TempCsv {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn names(columns: &[&str]) -> Vec<String> {
        columns.iter().map(|c| c.to_string()).collect()
    }

    fn read_error(name: &str, contents: &str, targets: &[&str], classification: bool) -> String {
        let file = TempCsv::new(name, contents);
        read_numeric_csv(&file.0, &names(targets), classification)
            .unwrap_err()
            .to_string()
    }

    fn tiny(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../data/tiny")
            .join(name)
    }

    #[test]
    fn reads_linear7_regression() {
        let dataset = read_numeric_csv(tiny("linear7.csv"), &names(&["y"]), false).unwrap();

        assert_eq!(dataset.len(), 7);
        assert_eq!(dataset.features.shape(), &[7, 1]);
        assert_eq!(dataset.features.data(), &[1., 2., 3., 4., 5., 6., 7.]);
        let Targets::Values(values) = &dataset.targets else {
            panic!("expected regression targets, got {:?}", dataset.targets);
        };
        assert_eq!(values.shape(), &[7, 1]);
        assert_eq!(values.data()[0], 2.82);
        assert_eq!(values.data()[6], 14.56);
    }

    #[test]
    fn reads_xor_classification() {
        let dataset = read_numeric_csv(tiny("xor.csv"), &names(&["y"]), true).unwrap();

        assert_eq!(dataset.features.shape(), &[4, 2]);
        assert_eq!(dataset.features.data(), &[0., 0., 0., 1., 1., 0., 1., 1.]);
        assert_eq!(dataset.labels(), Some(&[0, 1, 1, 0][..]));
        assert_eq!(dataset.class_names(), Some(&names(&["0", "1"])[..]));
    }

    #[test]
    fn classes_sort_numerically() {
        let file = TempCsv::new("classes.csv", "label,a\n10,1\n2,2\n-1,3\n2.0,4\n");

        let dataset = read_numeric_csv(&file.0, &names(&["label"]), true).unwrap();

        assert_eq!(dataset.class_names(), Some(&names(&["-1", "2", "10"])[..]));
        assert_eq!(dataset.labels(), Some(&[2, 1, 0, 1][..]));
        assert_eq!(dataset.features.data(), &[1., 2., 3., 4.]);
    }

    #[test]
    fn targets_keep_order_and_trim() {
        let file = TempCsv::new("two-targets.csv", "a, t1 ,b,t2\n1, 2,3,4\n\n5,6 ,7,8\n");

        let dataset = read_numeric_csv(&file.0, &names(&["t2", "t1"]), false).unwrap();

        assert_eq!(dataset.features.data(), &[1., 3., 5., 7.]);
        assert_eq!(
            dataset.targets,
            Targets::Values(Tensor::from_vec(&[2, 2], vec![4., 2., 8., 6.]))
        );
    }

    #[test]
    fn bad_cell_names_line_and_column() {
        let message = read_error("bad-cell.csv", "x,y\n1,2\n2,abc\n", &["y"], false);

        assert!(message.contains("bad-cell.csv"), "{message}");
        assert!(message.contains("line 3, column \"y\""), "{message}");
        assert!(message.contains("\"abc\" is not a number"), "{message}");
    }

    #[test]
    fn non_finite_cell_is_rejected() {
        let message = read_error("nan.csv", "x,y\nNaN,2\n", &["y"], false);

        assert!(message.contains("line 2, column \"x\""), "{message}");
        assert!(message.contains("not a finite number"), "{message}");
    }

    #[test]
    fn fractional_label_is_rejected() {
        let message = read_error("fraction.csv", "x,y\n1,0\n2,0.5\n", &["y"], true);

        assert!(message.contains("line 3"), "{message}");
        assert!(
            message.contains("\"0.5\" is not an integer class label"),
            "{message}"
        );
    }

    #[test]
    fn missing_target_lists_header() {
        let message = read_error("no-target.csv", "x1,x2,y\n0,0,0\n", &["label"], true);

        assert!(
            message.contains("target column \"label\" not found"),
            "{message}"
        );
        assert!(message.contains("x1, x2, y"), "{message}");
    }

    #[test]
    fn ragged_row_is_rejected() {
        let message = read_error("ragged.csv", "x,y\n1,2\n3\n", &["y"], false);

        assert!(message.contains("line: 3"), "{message}");
    }

    #[test]
    fn header_only_file_is_rejected() {
        let message = read_error("header-only.csv", "x,y\n", &["y"], false);
        assert!(message.contains("no data rows"), "{message}");

        let message = read_error("empty.csv", "", &["y"], false);
        assert!(message.contains("expected a header row"), "{message}");
    }

    #[test]
    fn invalid_target_lists_are_rejected() {
        let message = read_error("no-features.csv", "y\n1\n", &["y"], false);
        assert!(message.contains("no feature column"), "{message}");

        let err = read_numeric_csv(tiny("xor.csv"), &[], false).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");

        let err = read_numeric_csv(tiny("xor.csv"), &names(&["x1", "y"]), true).unwrap_err();
        assert!(
            err.to_string().contains("exactly one target column"),
            "{err}"
        );

        let err = read_numeric_csv(tiny("xor.csv"), &names(&["y", "y"]), false).unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
    }

    #[test]
    fn missing_file_names_path() {
        let err =
            read_numeric_csv("/nonexistent/dendrite/file.csv", &names(&["y"]), false).unwrap_err();

        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/dendrite/file.csv"),
            "{err}"
        );
    }
}
