//! A training file with its column roles, column kinds and targets, and the splits built
//! from it.

use super::columns::{self, ColumnKind, quoted_list};
use super::{CsvConfig, Table, TabularPreprocessor, TabularTask, TransformReport};
use crate::data::split::{RowSplit, k_fold, split_rows, stratified_k_fold};
use crate::data::{Dataset, Targets};
use crate::error::{Error, Result};

/// A CSV training file, read and typed: which columns are features (and of which kind) and
/// the target of every row.
///
/// The column kinds are inferred from all rows of the file, because a kind is a property of
/// the column, not a statistic. Everything fitted to values, such as means and categories,
/// comes from [`TabularSource::fit`] on training rows only.
#[derive(Debug, Clone)]
pub struct TabularSource {
    table: Table,
    features: Vec<(usize, ColumnKind)>,
    targets: Targets,
    warnings: Vec<String>,
}

/// The splits of a CSV data source, preprocessed and ready to train on.
#[derive(Debug, Clone)]
pub struct PreparedTabular {
    /// The training rows.
    pub train: Dataset,
    /// The validation rows, if any.
    pub validation: Option<Dataset>,
    /// The test rows, from the test split or the test file, if any.
    pub test: Option<Dataset>,
    /// The preprocessing fitted on the training rows.
    pub preprocessor: TabularPreprocessor,
    /// The weight of each class in the training loss, if class weights are configured.
    pub class_weights: Option<Vec<f32>>,
    /// Warnings about the data: column kinds that look wrong and unknown categories.
    pub warnings: Vec<String>,
    /// Notes about imputed values.
    pub notes: Vec<String>,
}

impl TabularSource {
    /// Reads the training file of `config` and assigns the column roles.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] for invalid settings (see [`CsvConfig::validate`]),
    /// and [`Error::Io`] or [`Error::InvalidData`] as [`TabularSource::from_table`] and
    /// [`Table::read`] do.
    pub fn read(config: &CsvConfig) -> Result<TabularSource> {
        config.validate()?;
        let table = Table::read(&config.train, config.delimiter_byte()?)?;
        TabularSource::from_table(table, config)
    }

    /// Assigns the column roles of `config` to `table`: the target, ID and ignored columns
    /// by name, every other column a feature of its configured or inferred kind. Then parses
    /// the targets.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] for invalid settings (see [`CsvConfig::validate`]).
    /// Returns [`Error::InvalidData`] naming the file if a configured column is not in the
    /// header, if no feature column is left, or if a feature column has no values. The
    /// error names the line if a target is missing or, for regression, not a number.
    pub fn from_table(table: Table, config: &CsvConfig) -> Result<TabularSource> {
        config.validate()?;
        let targets = config.target_names();
        let named = targets
            .iter()
            .map(|name| (name, "target"))
            .chain(config.id_column.iter().map(|name| (name, "id_column")))
            .chain(config.ignore.iter().map(|name| (name, "ignore")))
            .chain(
                config
                    .column_types
                    .keys()
                    .map(|name| (name, "column_types")),
            );
        for (name, key) in named {
            if table.column(name).is_none() {
                return Err(Error::invalid_data(
                    table.path(),
                    format!(
                        "column \"{name}\" of data.{key} is not in the header; the file has the \
                         columns {}",
                        quoted_list(table.header())
                    ),
                ));
            }
        }

        let mut warnings = Vec::new();
        let mut features = Vec::new();
        for (column, name) in table.header().iter().enumerate() {
            let has_role = targets.contains(name)
                || config.id_column.as_ref() == Some(name)
                || config.ignore.contains(name);
            if has_role {
                continue;
            }
            let kind = match config.column_types.get(name) {
                Some(&kind) => kind,
                None => {
                    let (kind, warning) =
                        columns::infer_kind(&table, column, &config.missing_values)?;
                    warnings.extend(warning);
                    kind
                }
            };
            features.push((column, kind));
        }
        if features.is_empty() {
            return Err(Error::invalid_data(
                table.path(),
                "no feature column is left after the target, ID and ignored columns",
            ));
        }

        let target_positions: Vec<usize> = targets
            .iter()
            .map(|name| {
                table
                    .column(name)
                    .expect("target columns were checked above")
            })
            .collect();
        let targets = match config.task {
            TabularTask::Classification => {
                columns::read_classes(&table, target_positions[0], &config.missing_values)?
            }
            TabularTask::Regression => {
                columns::read_values(&table, &target_positions, &config.missing_values)?
            }
        };

        Ok(TabularSource {
            table,
            features,
            targets,
            warnings,
        })
    }

    /// Returns the table as read.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Returns the number of rows.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Returns true if there are no rows. A source read from a file always has rows.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Returns the name and kind of every feature column, in file order.
    pub fn feature_columns(&self) -> Vec<(&str, ColumnKind)> {
        self.features
            .iter()
            .map(|&(column, kind)| (self.table.header()[column].as_str(), kind))
            .collect()
    }

    /// Returns the targets of all rows.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// Returns the class label of every row, or `None` for regression.
    pub fn labels(&self) -> Option<&[usize]> {
        match &self.targets {
            Targets::Classes { labels, .. } => Some(labels),
            Targets::Values(_) => None,
        }
    }

    /// Returns the class names, or `None` for regression.
    pub fn class_names(&self) -> Option<&[String]> {
        match &self.targets {
            Targets::Classes { class_names, .. } => Some(class_names),
            Targets::Values(_) => None,
        }
    }

    /// Returns warnings about the column kinds, such as a categorical column whose values
    /// are mostly distinct.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Splits the rows into training, validation and test rows with the fractions of
    /// `config`: stratified by class for classification, at random for regression.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] for invalid fractions.
    pub fn split(&self, config: &CsvConfig, seed: u64) -> Result<RowSplit> {
        split_rows(
            self.labels(),
            self.len(),
            config.validation_split,
            config.test_split,
            seed,
        )
    }

    /// Splits the rows for `k`-fold cross-validation: one [`RowSplit`] per fold, whose test
    /// rows are the fold and whose training and validation rows come from the other folds.
    ///
    /// The test split of `config` (`test_split`) is set aside first, as
    /// [`TabularSource::split`] takes it, and is in no fold. The folds are stratified by class
    /// for classification. Within each fold, validation rows are taken from the training
    /// rows in the proportion that `validation_split` has to the rows outside the test
    /// split, for early stopping.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] for invalid fractions or if `k` is below 2 or above
    /// the number of rows outside the test split.
    pub fn cv_splits(&self, config: &CsvConfig, k: usize, seed: u64) -> Result<Vec<RowSplit>> {
        let outer = self.split(config, seed)?;
        let mut development: Vec<usize> = outer.train;
        development.extend(outer.validation);
        development.sort_unstable();

        let labels: Option<Vec<usize>> = self
            .labels()
            .map(|labels| development.iter().map(|&row| labels[row]).collect());
        let folds = match &labels {
            Some(labels) => stratified_k_fold(labels, k, seed)?,
            None => k_fold(development.len(), k, seed)?,
        };
        let validation = config.validation_split / (1.0 - config.test_split);

        let mut splits = Vec::with_capacity(k);
        for (i, fold) in folds.iter().enumerate() {
            // Positions into `development`, then mapped back to rows of the table.
            let rest: Vec<usize> = folds
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .flat_map(|(_, other)| other.iter().copied())
                .collect();
            let rest_labels: Option<Vec<usize>> = labels
                .as_ref()
                .map(|labels| rest.iter().map(|&position| labels[position]).collect());
            let inner = split_rows(rest_labels.as_deref(), rest.len(), validation, 0.0, seed)?;

            let to_rows = |positions: &[usize]| -> Vec<usize> {
                let mut rows: Vec<usize> = positions.iter().map(|&p| development[p]).collect();
                rows.sort_unstable();
                rows
            };
            let train: Vec<usize> = inner.train.iter().map(|&p| rest[p]).collect();
            let validation_rows: Vec<usize> = inner.validation.iter().map(|&p| rest[p]).collect();
            splits.push(RowSplit {
                train: to_rows(&train),
                validation: to_rows(&validation_rows),
                test: to_rows(fold),
            });
        }
        Ok(splits)
    }

    /// Fits the preprocessing on the training `rows` only.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidData`] naming the line and column if a numeric cell is not a
    /// number or a missing value is rejected, or naming a column that has no value in
    /// `rows`.
    pub fn fit(&self, rows: &[usize], config: &CsvConfig) -> Result<TabularPreprocessor> {
        TabularPreprocessor::fit(&self.table, rows, &self.features, config)
    }

    /// Builds the dataset of `rows` with a fitted preprocessing.
    ///
    /// # Errors
    ///
    /// As [`TabularPreprocessor::transform_rows`].
    pub fn dataset(
        &self,
        preprocessor: &TabularPreprocessor,
        rows: &[usize],
    ) -> Result<(Dataset, TransformReport)> {
        let (features, report) = preprocessor.transform_rows(&self.table, rows)?;
        let dataset = Dataset::new(features, self.targets.subset(rows))?;
        Ok((dataset, report))
    }

    /// Fits the preprocessing on the training rows of `split` and builds the dataset of
    /// each part of it, with the class weights of `config` resolved on the training rows.
    /// A validation or test part without rows gives `None`.
    ///
    /// # Errors
    ///
    /// As [`TabularSource::fit`] and [`TabularSource::dataset`], and
    /// [`Error::InvalidConfig`] for class weights that name unknown classes.
    pub fn prepare(&self, config: &CsvConfig, split: &RowSplit) -> Result<PreparedTabular> {
        let preprocessor = self.fit(&split.train, config)?;
        let (train, _) = self.dataset(&preprocessor, &split.train)?;

        let mut warnings = self.warnings.clone();
        let mut notes = Vec::new();
        let mut holdout = |name: &str, rows: &[usize]| -> Result<Option<Dataset>> {
            if rows.is_empty() {
                return Ok(None);
            }
            let (dataset, report) = self.dataset(&preprocessor, rows)?;
            let source = format!("{name} split of {}", self.table.path().display());
            warnings.extend(report.unknown_warning(&source));
            notes.extend(report.imputed_note(&source));
            Ok(Some(dataset))
        };
        let validation = holdout("validation", &split.validation)?;
        let test = holdout("test", &split.test)?;

        let class_weights = match (&config.class_weights, train.labels()) {
            (Some(weights), Some(labels)) => {
                let class_names = train.class_names().expect("classification has class names");
                Some(weights.resolve(labels, class_names)?)
            }
            _ => None,
        };

        Ok(PreparedTabular {
            train,
            validation,
            test,
            preprocessor,
            class_weights,
            warnings,
            notes,
        })
    }
}

impl CsvConfig {
    /// Reads the training file (and the test file, if any), splits the rows, fits the
    /// preprocessing on the training rows and builds every split.
    ///
    /// The test rows are either the test file or the `test_split` fraction of the training
    /// file. They are transformed with the fitted preprocessing and used for nothing else.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] for invalid settings, [`Error::Io`] if a file cannot
    /// be read and [`Error::InvalidData`] naming the file, line, column and value for bad
    /// content.
    pub fn prepare(&self, seed: u64) -> Result<PreparedTabular> {
        let source = TabularSource::read(self)?;
        let split = source.split(self, seed)?;

        let mut prepared = source.prepare(self, &split)?;

        if let Some(path) = &self.test {
            let table = prepared.preprocessor.read_table(path)?;
            let (features, report) = prepared.preprocessor.transform(&table)?;
            let targets = prepared
                .preprocessor
                .read_targets(&table, source.class_names())?;
            let source_name = path.display().to_string();
            prepared
                .warnings
                .extend(report.unknown_warning(&source_name));
            prepared.notes.extend(report.imputed_note(&source_name));
            prepared.test = Some(Dataset::new(features, targets)?);
        }
        Ok(prepared)
    }
}
