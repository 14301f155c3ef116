//! Datasets, file readers, train/validation splits and mini-batch order.
//!
//! A [`Dataset`] pairs a feature tensor of shape `[n, ...]` with `n` targets: class labels for
//! classification or a `[n, k]` tensor for regression. The readers build one from IDX files
//! (the MNIST format, see [`idx`]), from a CSV file of numeric and categorical columns (see
//! [`tabular`]) or from a folder of PNG and JPEG images with one subfolder per class (see
//! [`image_folder`]). Image features can be standardized per channel ([`ChannelStats`]) and
//! randomly augmented during training ([`Augment`]).

pub mod augment;
pub mod batch;
pub mod idx;
pub mod image_folder;
pub mod normalize;
pub mod series;
pub mod split;
pub mod tabular;
pub mod weights;

pub use augment::Augment;
pub use batch::{BatchIter, Batches, epoch_order};
pub use idx::{
    MNIST_NUM_CLASSES, load_idx_dataset, read_idx_images, read_idx_labels, write_idx_images,
    write_idx_labels,
};
pub use image_folder::{
    BadFilePolicy, ColorMode, ImageFolder, ImageFolderConfig, ResizedImage, load_image_file,
    load_image_folder, write_png_folder,
};
pub use normalize::{ChannelStats, MIN_CHANNEL_STD};
pub use series::{SeriesConfig, SeriesPreprocessor, SeriesWindows};
pub use split::{RowSplit, k_fold, random_split, split_rows, stratified_k_fold, stratified_split};
pub use tabular::{CsvConfig, TabularPreprocessor, TabularSource};
pub use weights::ClassWeights;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The targets of a dataset, one per row.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// Class indices for classification. Every label is below `class_names.len()`, and
    /// `class_names[label]` is the class name as it appeared in the source file.
    Classes {
        labels: Vec<usize>,
        class_names: Vec<String>,
    },

    /// Real-valued targets for regression, shape `[n, k]`.
    Values(Tensor),
}

impl Targets {
    /// Returns the number of rows.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes { labels, .. } => labels.len(),
            Targets::Values(values) => values.shape().first().copied().unwrap_or(0),
        }
    }

    /// Returns true if there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the targets of the rows in `indices`, in that order.
    ///
    /// # Panics
    ///
    /// Panics if an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Targets {
        match self {
            Targets::Classes {
                labels,
                class_names,
            } => Targets::Classes {
                labels: indices.iter().map(|&i| labels[i]).collect(),
                class_names: class_names.clone(),
            },
            Targets::Values(values) => Targets::Values(values.gather_rows(indices)),
        }
    }
}

/// Features and targets with the same number of rows.
///
/// [`Dataset::new`] checks that the parts fit together. Code that builds the struct directly
/// must keep the same invariants, because the methods rely on them.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The inputs, shape `[n, ...]`.
    pub features: Tensor,

    /// The expected outputs, one per row of `features`.
    pub targets: Targets,

    /// For a dataset of sliding windows over a series (see [`Dataset::windowed`]), the
    /// windows, which are gathered by index instead of being stored in `features`.
    windows: Option<Arc<SeriesWindows>>,
}

impl Dataset {
    /// Creates a dataset and checks that its parts fit together.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Shape`] if `features` has no batch dimension, if the row counts
    /// differ, if a class label is not below the number of class names, or if regression
    /// values are not of rank 2.
    pub fn new(features: Tensor, targets: Targets) -> Result<Self> {
        const OP: &str = "Dataset::new";

        let Some(&rows) = features.shape().first() else {
            return Err(Error::Shape {
                op: OP,
                message: "features must have a batch dimension, got a scalar".to_string(),
            });
        };

        if targets.len() != rows {
            return Err(Error::Shape {
                op: OP,
                message: format!(
                    "features have {rows} rows but there are {} targets",
                    targets.len()
                ),
            });
        }

        match &targets {
            Targets::Classes {
                labels,
                class_names,
            } => {
                if let Some((row, &label)) = labels
                    .iter()
                    .enumerate()
                    .find(|&(_, &label)| label >= class_names.len())
                {
                    return Err(Error::Shape {
                        op: OP,
                        message: format!(
                            "label {label} in row {row} is out of range for {} class names",
                            class_names.len()
                        ),
                    });
                }
            }
            Targets::Values(values) => {
                if values.rank() != 2 {
                    return Err(Error::Shape {
                        op: OP,
                        message: format!(
                            "regression targets must have shape [n, k], got {:?}",
                            values.shape()
                        ),
                    });
                }
            }
        }

        Ok(Dataset {
            features,
            targets,
            windows: None,
        })
    }

    /// Builds a dataset of sliding windows over a series: row `i` is window `i` of
    /// `windows`, gathered by index when a batch asks for it, so the windows are never
    /// stored one by one. `features` is then an empty tensor of shape `[0]`; read the rows
    /// with [`Dataset::gather_into`] and [`Dataset::gather_into_slice`].
    ///
    /// # Errors
    ///
    /// Returns [`Error::Shape`] if `targets` is not `[windows, k]`.
    pub fn windowed(windows: SeriesWindows, targets: Tensor) -> Result<Self> {
        if targets.rank() != 2 || targets.shape()[0] != windows.len() {
            return Err(Error::Shape {
                op: "Dataset::windowed",
                message: format!(
                    "{} windows need targets of shape [{}, k], got {:?}",
                    windows.len(),
                    windows.len(),
                    targets.shape()
                ),
            });
        }
        Ok(Dataset {
            features: Tensor::zeros(&[0]),
            targets: Targets::Values(targets),
            windows: Some(Arc::new(windows)),
        })
    }

    /// Returns the windows of a dataset built by [`Dataset::windowed`].
    pub fn windows(&self) -> Option<&SeriesWindows> {
        self.windows.as_deref()
    }

    /// Returns the number of rows.
    pub fn len(&self) -> usize {
        match &self.windows {
            Some(windows) => windows.len(),
            None => self.features.shape()[0],
        }
    }

    /// Returns true if the dataset has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the shape of one row of features, without the batch dimension.
    pub fn feature_shape(&self) -> &[usize] {
        match &self.windows {
            Some(windows) => windows.window_shape(),
            None => &self.features.shape()[1..],
        }
    }

    /// Returns the number of values in one row of features.
    pub fn feature_len(&self) -> usize {
        self.feature_shape().iter().product()
    }

    /// Returns the number of classes, or `None` for regression targets.
    pub fn num_classes(&self) -> Option<usize> {
        self.class_names().map(<[String]>::len)
    }

    /// Returns the class names, or `None` for regression targets.
    pub fn class_names(&self) -> Option<&[String]> {
        match &self.targets {
            Targets::Classes { class_names, .. } => Some(class_names),
            Targets::Values(_) => None,
        }
    }

    /// Returns the class label of every row, or `None` for regression targets.
    pub fn labels(&self) -> Option<&[usize]> {
        match &self.targets {
            Targets::Classes { labels, .. } => Some(labels),
            Targets::Values(_) => None,
        }
    }

    /// Copies the rows in `indices`, in that order, into a new dataset. Class names are kept,
    /// even for classes with no row in the subset.
    ///
    /// # Panics
    ///
    /// Panics if an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        match &self.windows {
            Some(windows) => Dataset {
                features: self.features.clone(),
                targets: self.targets.subset(indices),
                windows: Some(Arc::new(windows.subset(indices))),
            },
            None => Dataset {
                features: self.features.gather_rows(indices),
                targets: self.targets.subset(indices),
                windows: None,
            },
        }
    }

    /// Replaces the contents of `out` with the features of the rows in `indices`, flattened in
    /// row-major order, so `out.len()` becomes `indices.len() * self.feature_len()`. Reusing
    /// `out` across batches avoids an allocation per training step.
    ///
    /// # Panics
    ///
    /// Panics if an index is out of range.
    pub fn gather_into(&self, indices: &[usize], out: &mut Vec<f32>) {
        let cols = self.feature_len();
        out.clear();
        out.resize(indices.len() * cols, 0.0);
        self.gather_into_slice(indices, out);
    }

    /// Copies the features of the rows in `indices`, in that order, into `out`, which must
    /// hold exactly `indices.len() * feature_len()` values.
    ///
    /// # Panics
    ///
    /// Panics if an index is out of range or `out` has the wrong length.
    pub fn gather_into_slice(&self, indices: &[usize], out: &mut [f32]) {
        if let Some(windows) = &self.windows {
            windows.gather_into_slice(indices, out);
            return;
        }
        let (rows, cols) = self.features.dims2();
        let data = self.features.data();
        assert_eq!(
            out.len(),
            indices.len() * cols,
            "gather needs {} values for {} rows",
            indices.len() * cols,
            indices.len()
        );

        for (&i, dst) in indices.iter().zip(out.chunks_exact_mut(cols.max(1))) {
            assert!(i < rows, "row index {i} out of range for {rows} rows");
            dst.copy_from_slice(&data[i * cols..(i + 1) * cols]);
        }
    }

    /// Replaces the contents of `out` with the class labels of the rows in `indices`.
    ///
    /// # Panics
    ///
    /// Panics if the targets are regression values or if an index is out of range.
    pub fn gather_labels_into(&self, indices: &[usize], out: &mut Vec<usize>) {
        let Targets::Classes { labels, .. } = &self.targets else {
            panic!(
                "gather_labels_into needs class targets, but this dataset has regression values"
            );
        };

        out.clear();
        out.extend(indices.iter().map(|&i| labels[i]));
    }

    /// Replaces the contents of `out` with the regression targets of the rows in `indices`,
    /// flattened in row-major order (`indices.len() * k` values).
    ///
    /// # Panics
    ///
    /// Panics if the targets are class labels or if an index is out of range.
    pub fn gather_values_into(&self, indices: &[usize], out: &mut Vec<f32>) {
        let Targets::Values(values) = &self.targets else {
            panic!(
                "gather_values_into needs regression targets, but this dataset has class labels"
            );
        };
        let (rows, cols) = values.dims2();
        let data = values.data();

        out.clear();
        out.reserve(indices.len() * cols);
        for &i in indices {
            assert!(i < rows, "row index {i} out of range for {rows} rows");
            out.extend_from_slice(&data[i * cols..(i + 1) * cols]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_dataset() -> Dataset {
        let features = Tensor::from_vec(&[4, 2, 3], (0..24).map(|v| v as f32).collect());
        let targets = Targets::Classes {
            labels: vec![0, 1, 2, 1],
            class_names: vec!["a".into(), "b".into(), "c".into()],
        };
        Dataset::new(features, targets).unwrap()
    }

    fn value_dataset() -> Dataset {
        let features = Tensor::from_vec(&[3, 1], vec![1.0, 2.0, 3.0]);
        let targets = Targets::Values(Tensor::from_vec(
            &[3, 2],
            vec![10., 11., 20., 21., 30., 31.],
        ));
        Dataset::new(features, targets).unwrap()
    }

    #[test]
    fn dataset_reports_sizes() {
        let dataset = class_dataset();

        assert_eq!(dataset.len(), 4);
        assert!(!dataset.is_empty());
        assert_eq!(dataset.feature_shape(), &[2, 3]);
        assert_eq!(dataset.feature_len(), 6);
        assert_eq!(dataset.num_classes(), Some(3));
        assert_eq!(value_dataset().num_classes(), None);
    }

    #[test]
    fn subset_copies_rows_in_order() {
        let subset = class_dataset().subset(&[3, 0]);

        assert_eq!(subset.features.shape(), &[2, 2, 3]);
        assert_eq!(
            &subset.features.data()[..6],
            &[18., 19., 20., 21., 22., 23.]
        );
        assert_eq!(&subset.features.data()[6..], &[0., 1., 2., 3., 4., 5.]);
        assert_eq!(subset.labels(), Some(&[1, 0][..]));
        assert_eq!(subset.num_classes(), Some(3));

        let values = value_dataset().subset(&[2]);
        assert_eq!(
            values.targets,
            Targets::Values(Tensor::from_vec(&[1, 2], vec![30., 31.]))
        );
    }

    #[test]
    fn gather_into_reuses_buffers() {
        let dataset = class_dataset();
        let mut features = vec![99.0; 100];
        let mut labels = vec![7; 3];

        dataset.gather_into(&[1, 2], &mut features);
        dataset.gather_labels_into(&[1, 2], &mut labels);

        assert_eq!(features, (6..18).map(|v| v as f32).collect::<Vec<_>>());
        assert_eq!(labels, vec![1, 2]);

        let mut values = Vec::new();
        value_dataset().gather_values_into(&[2, 0], &mut values);
        assert_eq!(values, vec![30., 31., 10., 11.]);
    }

    #[test]
    #[should_panic(expected = "needs class targets")]
    fn gather_labels_panics_for_values() {
        value_dataset().gather_labels_into(&[0], &mut Vec::new());
    }

    #[test]
    fn new_rejects_mismatched_parts() {
        let features = Tensor::zeros(&[3, 2]);

        let short = Targets::Classes {
            labels: vec![0, 0],
            class_names: vec!["a".into()],
        };
        let err = Dataset::new(features.clone(), short).unwrap_err();
        assert!(
            err.to_string().contains("3 rows but there are 2 targets"),
            "{err}"
        );

        let out_of_range = Targets::Classes {
            labels: vec![0, 2, 0],
            class_names: vec!["a".into(), "b".into()],
        };
        let err = Dataset::new(features.clone(), out_of_range).unwrap_err();
        assert!(err.to_string().contains("label 2 in row 1"), "{err}");

        let rank_one = Targets::Values(Tensor::zeros(&[3]));
        let err = Dataset::new(features, rank_one).unwrap_err();
        assert!(err.to_string().contains("shape [n, k]"), "{err}");

        let scalar = Dataset::new(Tensor::zeros(&[]), Targets::Values(Tensor::zeros(&[1, 1])));
        assert!(scalar.is_err());
    }
}
