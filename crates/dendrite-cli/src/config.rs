//! The TOML config that `dendrite train` reads, and the data it names.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use dendrite::data::{
    self, BadFilePolicy, ColorMode, CsvConfig, Dataset, ImageFolderConfig, SeriesConfig,
    TabularPreprocessor, Targets,
};
use dendrite::model::{InputKind, Preprocessing};
use dendrite::nn::LayerSpec;
use dendrite::train::{CheckpointConfig, NonFiniteConfig, TrainConfig};
use serde::Deserialize;

/// A whole training config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The data files and the validation split.
    pub data: DataConfig,
    /// The network.
    pub model: ModelConfig,
    /// The training settings.
    pub training: TrainConfig,
    /// The `[search]` table, accepted so that a tune config also trains; `dendrite tune`
    /// reads it from the TOML table itself.
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "only accepted here; dendrite tune reads the table"
    )]
    pub search: Option<toml::Table>,
    /// `[training.checkpoint]`, which [`Config::load`] takes out of `[training]`.
    #[serde(skip)]
    pub checkpoint: Option<CheckpointConfig>,
    /// `[training.non_finite]`, which [`Config::load`] takes out of `[training]`.
    #[serde(skip)]
    pub non_finite: NonFiniteConfig,
}

/// The `[model]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The layers, in order.
    pub layers: Vec<LayerSpec>,
    /// For a binary classifier, the class whose probability is compared with the decision
    /// threshold (default: the second class in sorted order).
    #[serde(default)]
    pub positive_class: Option<String>,
    /// For a binary classifier, the lowest probability of the positive class that predicts
    /// it (default 0.5).
    #[serde(default)]
    pub decision_threshold: Option<f32>,
}

/// The `[data]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataConfig {
    /// Images and labels in IDX files (the MNIST format), raw or gzip.
    Idx {
        train_images: PathBuf,
        train_labels: PathBuf,
        #[serde(default)]
        test_images: Option<PathBuf>,
        #[serde(default)]
        test_labels: Option<PathBuf>,
        #[serde(default = "default_classes")]
        num_classes: usize,
        #[serde(default = "default_validation_split")]
        validation_split: f64,
        /// Standardize each pixel with the mean and standard deviation of the training rows.
        #[serde(default)]
        normalize: bool,
    },
    /// A folder with one subfolder of PNG or JPEG images per class.
    ImageFolder {
        train: PathBuf,
        #[serde(default)]
        test: Option<PathBuf>,
        #[serde(default = "default_validation_split")]
        validation_split: f64,
        #[serde(default)]
        color: ColorMode,
        /// `[height, width]` that every image is resized to.
        #[serde(default)]
        size: Option<(usize, usize)>,
        #[serde(default)]
        on_bad_file: BadFilePolicy,
        /// Standardize each channel with the statistics of the training rows.
        #[serde(default = "default_true")]
        normalize: bool,
    },
    /// A CSV file with a header row, numeric and categorical columns.
    Csv(CsvConfig),
    Series(SeriesConfig),
}

fn default_classes() -> usize {
    10
}

fn default_validation_split() -> f64 {
    0.1
}

fn default_true() -> bool {
    true
}

impl Config {
    /// Reads and checks a config file. Relative data paths are resolved against the folder
    /// the config file is in.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let (mut config, checkpoint, non_finite) = crate::fault_config::parse(path, &text)?;
        config.checkpoint = checkpoint;
        config.non_finite = non_finite;
        config.finish(path)
    }

    /// Reads a config from a parsed TOML table, as if it were the file at `path` (relative
    /// data paths are resolved against its folder). Errors name the key but not the line.
    pub fn from_table(path: &Path, table: toml::Table) -> Result<Self> {
        // The checkpoint and non-finite tables are taken out of `[training]` as for a file.
        let text =
            toml::to_string(&table).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let (mut config, checkpoint, non_finite) = crate::fault_config::parse(path, &text)?;
        config.checkpoint = checkpoint;
        config.non_finite = non_finite;
        config.finish(path)
    }

    /// Resolves the data paths and checks the settings.
    fn finish(self, path: &Path) -> Result<Self> {
        let mut config = self;
        let base = path.parent().unwrap_or(Path::new(""));
        config.data.resolve_paths(base);
        config
            .training
            .validate()
            .with_context(|| format!("{}", path.display()))?;
        if let DataConfig::Csv(csv) = &config.data {
            csv.validate()
                .with_context(|| format!("{}", path.display()))?;
        }
        if let DataConfig::Series(series) = &config.data {
            series
                .validate()
                .with_context(|| format!("{}", path.display()))?;
        }
        let split = config.data.validation_split();
        if !(0.0..1.0).contains(&split) {
            bail!(
                "{}: data.validation_split = {split} is invalid; use a fraction in [0, 1) such as 0.1",
                path.display()
            );
        }
        Ok(config)
    }
}

/// Names the config file in front of `error` if it is an invalid setting, which is found
/// only once the data is read (such as class weights that name an unknown class). Errors
/// about data files already name the file.
pub fn name_config(error: anyhow::Error, path: &Path) -> anyhow::Error {
    let invalid_setting = matches!(
        error.downcast_ref::<dendrite::Error>(),
        Some(dendrite::Error::InvalidConfig(_))
    );
    if invalid_setting {
        error.context(path.display().to_string())
    } else {
        error
    }
}

/// Formats a TOML error on one line: file, line, and the parser's message (which names an
/// unknown key and lists the valid ones).
pub fn toml_error(path: &Path, text: &str, error: &toml::de::Error) -> String {
    let line = error.span().map(|span| {
        // The parser points an unknown key at its table (the whole inline table, or only the
        // header of a `[table]`), so the key's own line is searched from there.
        let start = span.start.min(text.len());
        let offset = unknown_field(error.message())
            .and_then(|key| key_offset(&text[start..], key))
            .map_or(start, |offset| start + offset);
        text[..offset].matches('\n').count() + 1
    });
    let message = error.message().trim().replace('\n', " ");
    match line {
        Some(line) => format!("{}:{line}: {message}", path.display()),
        None => format!("{}: {message}", path.display()),
    }
}

/// Returns `KEY` of a serde message that starts with ``unknown field `KEY` ``.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Returns the byte offset in `text` of the first `key = ...` (a bare key at the start of a
/// line or after `{` or `,`).
fn key_offset(text: &str, key: &str) -> Option<usize> {
    text.match_indices(key).map(|(i, _)| i).find(|&i| {
        let before = text[..i].trim_end_matches([' ', '\t']);
        let after = text[i + key.len()..].trim_start_matches([' ', '\t']);
        let starts_key = before.is_empty() || before.ends_with(['\n', '{', ',']);
        starts_key && after.starts_with('=')
    })
}

impl DataConfig {
    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        match self {
            DataConfig::Idx {
                train_images,
                train_labels,
                test_images,
                test_labels,
                ..
            } => {
                resolve(train_images);
                resolve(train_labels);
                test_images.iter_mut().for_each(resolve);
                test_labels.iter_mut().for_each(resolve);
            }
            DataConfig::Csv(CsvConfig { train, test, .. })
            | DataConfig::ImageFolder { train, test, .. } => {
                resolve(train);
                test.iter_mut().for_each(resolve);
            }
            DataConfig::Series(SeriesConfig { file, .. }) => resolve(file),
        }
    }

    /// The fraction of the training file held out for validation.
    pub fn validation_split(&self) -> f64 {
        match *self {
            DataConfig::Idx {
                validation_split, ..
            }
            | DataConfig::Csv(CsvConfig {
                validation_split, ..
            })
            | DataConfig::ImageFolder {
                validation_split, ..
            } => validation_split,
            // A series is split by validation_length, at the end of the training part.
            DataConfig::Series(_) => 0.0,
        }
    }

    /// Returns true if features are standardized with the statistics of the training rows.
    fn normalize(&self) -> bool {
        match *self {
            DataConfig::Idx { normalize, .. } | DataConfig::ImageFolder { normalize, .. } => {
                normalize
            }
            DataConfig::Csv(_) | DataConfig::Series(_) => false,
        }
    }

    /// Loads the data, takes the validation split from the training rows and, if configured,
    /// standardizes every split with the statistics of the training split. CSV data is
    /// prepared by the library, which fits its preprocessing on the training rows.
    pub fn prepare(&self, seed: u64) -> Result<PreparedData> {
        if let DataConfig::Csv(csv) = self {
            let prepared = csv.prepare(seed)?;
            return Ok(PreparedData {
                train: prepared.train,
                validation: prepared.validation,
                test: prepared.test,
                preprocessing: None,
                tabular: Some(prepared.preprocessor),
                class_weights: prepared.class_weights,
                warnings: prepared.warnings,
                notes: prepared.notes,
            });
        }

        let LoadedData {
            train: full_train,
            mut test,
            mut preprocessing,
        } = self.load()?;
        let (mut train, mut validation) =
            split_validation(&full_train, self.validation_split(), seed)?;
        drop(full_train);
        if let Some(test) = &test
            && test.feature_shape() != train.feature_shape()
        {
            bail!(
                "test rows have shape {:?} but training rows have shape {:?}",
                test.feature_shape(),
                train.feature_shape()
            );
        }

        if self.normalize() {
            let stats = crate::preprocess::channel_stats(&mut train.features)?;
            for dataset in [Some(&mut train), validation.as_mut(), test.as_mut()]
                .into_iter()
                .flatten()
            {
                crate::preprocess::standardize(&mut dataset.features, &stats)?;
            }
            if let Some(preprocessing) = &mut preprocessing {
                preprocessing.normalization = Some(stats);
            }
        }

        Ok(PreparedData {
            train,
            validation,
            test,
            preprocessing,
            tabular: None,
            class_weights: None,
            warnings: Vec::new(),
            notes: Vec::new(),
        })
    }

    /// Loads the image training data and, if configured, the test data. CSV data is read by
    /// [`CsvConfig::prepare`] instead.
    fn load(&self) -> Result<LoadedData> {
        match self {
            DataConfig::Idx {
                train_images,
                train_labels,
                test_images,
                test_labels,
                num_classes,
                ..
            } => {
                let train = data::load_idx_dataset(train_images, train_labels, *num_classes)?;
                let test = match (test_images, test_labels) {
                    (Some(images), Some(labels)) => {
                        Some(data::load_idx_dataset(images, labels, *num_classes)?)
                    }
                    (None, None) => None,
                    _ => bail!("data.test_images and data.test_labels must be given together"),
                };
                Ok(LoadedData {
                    train,
                    test,
                    preprocessing: Some(Preprocessing {
                        input: InputKind::Idx,
                        color: None,
                        size: None,
                        normalization: None,
                    }),
                })
            }
            DataConfig::ImageFolder {
                train,
                test,
                color,
                size,
                on_bad_file,
                ..
            } => {
                let config = ImageFolderConfig {
                    color: *color,
                    size: *size,
                    on_bad_file: *on_bad_file,
                };
                let train_set = crate::preprocess::load_folder(train, &config)?;
                let test_set = match test {
                    Some(path) => {
                        let test_set = crate::preprocess::load_folder(path, &config)?;
                        if test_set.class_names() != train_set.class_names() {
                            bail!(
                                "{}: class folders {:?} differ from those of the training \
                                 folder {} ({:?}); both need the same class folders",
                                path.display(),
                                test_set.class_names().unwrap_or_default(),
                                train.display(),
                                train_set.class_names().unwrap_or_default()
                            );
                        }
                        Some(test_set)
                    }
                    None => None,
                };
                Ok(LoadedData {
                    train: train_set,
                    test: test_set,
                    preprocessing: Some(Preprocessing {
                        input: InputKind::ImageFolder,
                        color: Some(*color),
                        size: *size,
                        normalization: None,
                    }),
                })
            }
            DataConfig::Csv(_) => unreachable!("CSV data is prepared by CsvConfig::prepare"),
            // An invalid-config error, so that `name_config` adds the file name.
            DataConfig::Series(_) => Err(dendrite::Error::InvalidConfig(
                "format = \"series\" works with `dendrite train`, `evaluate`, `forecast`, \
                 `inspect` and `report`, but not yet with this command"
                    .into(),
            )
            .into()),
        }
    }
}

/// The image datasets a config names, as read from disk.
struct LoadedData {
    train: Dataset,
    test: Option<Dataset>,
    /// The image preprocessing, without the channel statistics.
    preprocessing: Option<Preprocessing>,
}

/// The training, validation and test splits, preprocessed and ready to train on.
pub struct PreparedData {
    pub train: Dataset,
    pub validation: Option<Dataset>,
    pub test: Option<Dataset>,
    /// For image data, how inputs become features, to be stored with the model.
    pub preprocessing: Option<Preprocessing>,
    /// For CSV data, the preprocessing fitted on the training rows.
    pub tabular: Option<TabularPreprocessor>,
    /// The weight of each class in the training loss, if configured.
    pub class_weights: Option<Vec<f32>>,
    /// Warnings about the data, for standard error.
    pub warnings: Vec<String>,
    /// Notes about the data, such as imputed values, for standard error.
    pub notes: Vec<String>,
}

/// Splits `dataset` into training and validation rows: stratified by class for classifiers,
/// at random for regression.
pub fn split_validation(
    dataset: &Dataset,
    fraction: f64,
    seed: u64,
) -> Result<(Dataset, Option<Dataset>)> {
    if fraction == 0.0 {
        return Ok((dataset.clone(), None));
    }
    let (train, holdout) = match &dataset.targets {
        Targets::Classes { labels, .. } => data::stratified_split(labels, fraction, seed)?,
        Targets::Values(_) => data::random_split(dataset.len(), fraction, seed)?,
    };
    let validation = (!holdout.is_empty()).then(|| dataset.subset(&holdout));
    Ok((dataset.subset(&train), validation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Layer {
        units: usize,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Section {
        epochs: usize,
        #[serde(default)]
        layers: Vec<Layer>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct File {
        training: Section,
    }

    /// Returns the message `toml_error` gives for `text`, which must not parse.
    fn message(text: &str) -> String {
        let error = toml::from_str::<File>(text).unwrap_err();
        toml_error(Path::new("c.toml"), text, &error)
    }

    #[test]
    fn unknown_key_names_its_own_line() {
        let text = "\n[training]\nepochs = 3\nepocs = 4\n";
        let message = message(text);
        assert!(
            message.starts_with("c.toml:4: unknown field `epocs`"),
            "{message}"
        );
    }

    #[test]
    fn unknown_key_in_inline_table_names_its_line() {
        let text = "[training]\nepochs = 3\nlayers = [\n  { units = 4 },\n  { unit = 2 },\n]\n";
        let message = message(text);
        assert!(
            message.starts_with("c.toml:5: unknown field `unit`"),
            "{message}"
        );
    }

    #[test]
    fn unknown_key_after_comment_names_its_line() {
        let text = "[training]\nepochs = 3\nlayers = []\n# batch size\nbatch = 2\n";
        let message = message(text);
        assert!(
            message.starts_with("c.toml:5: unknown field `batch`"),
            "{message}"
        );
    }

    #[test]
    fn unknown_table_names_its_header_line() {
        let text = "[training]\nepochs = 3\n\n[training.optimizer]\ntype = \"sgd\"\n";
        let message = message(text);
        assert!(
            message.starts_with("c.toml:4: unknown field `optimizer`"),
            "{message}"
        );
    }

    #[test]
    fn wrong_type_names_the_value_line() {
        let text = "[training]\n\nepochs = \"ten\"\n";
        let message = message(text);
        assert!(message.starts_with("c.toml:3: "), "{message}");
    }
}
