//! The library's error type.
//!
//! Every fallible call at a boundary (file readers, model construction, configs) returns
//! [`Result`]. Shape mismatches between tensors that the library itself built are programming
//! errors and panic with the shapes in the message.

use std::path::PathBuf;

/// Errors returned by dendrite.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A data file has content that cannot be used.
    #[error("{path}: {message}")]
    InvalidData { path: PathBuf, message: String },

    /// A model or training setting is invalid.
    #[error("invalid config: {0}")]
    InvalidConfig(String),

    /// Two tensors or a tensor and a layer do not fit together.
    #[error("shape mismatch in {op}: {message}")]
    Shape { op: &'static str, message: String },

    /// Training produced a NaN or infinite value in batch `batch` (from 1) of epoch `epoch`.
    #[error(
        "non-finite {what} at epoch {epoch}, batch {batch}; the learning rate ({}) may be too \
         high or the inputs may need scaling, so lower the learning rate (for example by 10x) \
         or standardize the inputs, and train again",
        crate::train::short_number(f64::from(*learning_rate))
    )]
    NonFinite {
        what: String,
        epoch: usize,
        batch: usize,
        learning_rate: f32,
    },

    /// Training stopped on request (Ctrl-C) after finishing a step.
    #[error(
        "training interrupted after step {step} of epoch {epoch}{}",
        match checkpoint {
            Some(path) => format!("; the checkpoint {} holds the run", path.display()),
            None => String::new(),
        }
    )]
    Interrupted {
        epoch: usize,
        step: u64,
        checkpoint: Option<PathBuf>,
    },

    /// A saved model cannot be loaded.
    #[error("{path}: invalid model file: {message}")]
    InvalidModel { path: PathBuf, message: String },
}

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Builds an [`Error::InvalidData`] for `path`.
    pub fn invalid_data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::InvalidData {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
