//! Reads `[training.checkpoint]` and `[training.non_finite]`, which the command handles
//! outside the library's [`TrainConfig`].

use std::path::Path;

use anyhow::{Result, anyhow};
use dendrite::train::{CheckpointConfig, NonFiniteConfig};
use serde::Deserialize;

use crate::config::{Config, toml_error};

/// Parses a config file's text into the config and its two fault-tolerance tables.
///
/// # Errors
///
/// Fails with the file name (and, where known, the line) for invalid TOML, an unknown key or
/// an invalid value.
pub fn parse(
    path: &Path,
    text: &str,
) -> Result<(Config, Option<CheckpointConfig>, NonFiniteConfig)> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| anyhow!(toml_error(path, text, &e)))?;
    let training = table
        .get_mut("training")
        .and_then(toml::Value::as_table_mut);
    let (checkpoint, non_finite) = match training {
        Some(training) => (training.remove("checkpoint"), training.remove("non_finite")),
        None => (None, None),
    };
    if checkpoint.is_none() && non_finite.is_none() {
        // The original text keeps the line numbers of errors.
        let config: Config =
            toml::from_str(text).map_err(|e| anyhow!(toml_error(path, text, &e)))?;
        return Ok((config, None, NonFiniteConfig::default()));
    }

    // NOTE: without the two tables, an error in the rest of the file is reported without
    // its line number.
    let config = Config::deserialize(toml::Value::Table(table))
        .map_err(|e| anyhow!("{}: {}", path.display(), e.message().trim()))?;
    let checkpoint = checkpoint
        .map(|value| {
            CheckpointConfig::deserialize(value).map_err(|e| {
                anyhow!(
                    "{}: [training.checkpoint]: {}",
                    path.display(),
                    e.message().trim()
                )
            })
        })
        .transpose()?;
    let non_finite = non_finite
        .map(|value| {
            NonFiniteConfig::deserialize(value).map_err(|e| {
                anyhow!(
                    "{}: [training.non_finite]: {}",
                    path.display(),
                    e.message().trim()
                )
            })
        })
        .transpose()?
        .unwrap_or_default();
    non_finite
        .validate()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if let Some(checkpoint) = &checkpoint {
        checkpoint
            .validate()
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    }
    Ok((config, checkpoint, non_finite))
}
