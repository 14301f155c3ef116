//! Checks that the test source of a search is independent of the rows it selects on.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use dendrite::data::CsvConfig;

use crate::config::DataConfig;

/// Checks the config's separate test file or folder against the training source, from
/// which the trials take their training and validation rows.
///
/// Returns warnings about test rows that also appear in the training file.
///
/// # Errors
///
/// Fails naming both paths if the test and training sources are the same file or folder, or
/// two files with the same contents.
pub fn check_test_source(data: &DataConfig) -> Result<Vec<String>> {
    let pairs: Vec<(&Path, &Path, &str)> = match data {
        DataConfig::Csv(CsvConfig {
            train,
            test: Some(test),
            ..
        }) => vec![(train, test, "data.test")],
        DataConfig::ImageFolder {
            train,
            test: Some(test),
            ..
        } => vec![(train, test, "data.test")],
        DataConfig::Idx {
            train_images,
            train_labels,
            test_images,
            test_labels,
            ..
        } => {
            let mut pairs = Vec::new();
            if let Some(test) = test_images {
                pairs.push((train_images.as_path(), test.as_path(), "data.test_images"));
            }
            if let Some(test) = test_labels {
                pairs.push((train_labels.as_path(), test.as_path(), "data.test_labels"));
            }
            pairs
        }
        _ => Vec::new(),
    };

    let mut warnings = Vec::new();
    for (train, test, key) in pairs {
        let same_path = match (train.canonicalize(), test.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => train == test,
        };
        if same_path {
            bail!(
                "{key} = {} is the training source itself, from which the validation split \
                 is taken; a test figure on it would not be independent of the search; use a \
                 separate test file",
                test.display()
            );
        }
        if train.is_file() && test.is_file() {
            let train_bytes =
                fs::read(train).with_context(|| format!("cannot read {}", train.display()))?;
            let test_bytes =
                fs::read(test).with_context(|| format!("cannot read {}", test.display()))?;
            if train_bytes == test_bytes {
                bail!(
                    "{key} = {} has the same contents as the training file {}, from which the \
                     validation split is taken; use a separate test file",
                    test.display(),
                    train.display()
                );
            }
            if let DataConfig::Csv(_) = data
                && let Some(shared) = shared_rows(&train_bytes, &test_bytes)
                && shared > 0
            {
                warnings.push(format!(
                    "{shared} rows of the test file {} also appear in the training file {}, \
                     from which the trials take their training and validation rows; the test \
                     figure will be too optimistic; remove them from one of the files",
                    test.display(),
                    train.display()
                ));
            }
        }
    }
    Ok(warnings)
}

/// Returns how many data rows of `test` (after the header) are also rows of `train`, compared
/// as text with surrounding spaces removed; `None` if either file is gzip-compressed or not
/// UTF-8.
fn shared_rows(train: &[u8], test: &[u8]) -> Option<usize> {
    let train = std::str::from_utf8(train).ok()?;
    let test = std::str::from_utf8(test).ok()?;
    let rows: HashSet<&str> = train
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Some(
        test.lines()
            .skip(1)
            .map(str::trim)
            .filter(|l| !l.is_empty() && rows.contains(l))
            .count(),
    )
}
