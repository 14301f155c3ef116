//! Config overrides by dotted key: the value tree of a TOML config edited before it is read,
//! so that an unknown key fails as it would in the file.

use std::path::Path;

use anyhow::{Result, bail};
use serde_json::Value;
use toml::Table;

/// Config keys a search must not set, because they change which rows are held out for
/// validation and test, or which files are read: trials compared on different validation
/// rows, or trained on test rows, give a biased selection.
const HELD_OUT_KEYS: [&str; 9] = [
    "training.seed",
    "data.validation_split",
    "data.test_split",
    "data.test",
    "data.test_images",
    "data.test_labels",
    "data.train",
    "data.train_images",
    "data.train_labels",
];

/// Keys of a separate test source under `[data]`, left out of every trial.
pub const TEST_KEYS: [&str; 3] = ["test", "test_images", "test_labels"];

/// Checks that a search may set `key`.
///
/// # Errors
///
/// Fails naming the parameter if `key` changes the held-out rows or the data files.
pub fn check_searchable(key: &str) -> Result<()> {
    if HELD_OUT_KEYS.contains(&key) {
        bail!(
            "search parameter {key} changes which rows are held out for validation and test, \
             so trials would be compared on different rows; remove it from [search]"
        );
    }
    Ok(())
}

/// Sets `key` (dotted, with array indices such as `model.layers.1.units`) in `table` to
/// `value`. Missing tables on the way are created, so that the config reader names an
/// unknown key.
///
/// # Errors
///
/// Fails naming the key if a part of it indexes past the end of an array, indexes a value
/// that is not a table or an array, or is not a number where an array is indexed.
pub fn set_key(table: &mut Table, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    let (first, rest) = parts
        .split_first()
        .expect("split returns at least one part");
    if rest.is_empty() {
        table.insert(first.to_string(), value);
        return Ok(());
    }
    let child = table
        .entry(first.to_string())
        .or_insert_with(|| toml::Value::Table(Table::new()));
    set_below(child, rest, key, first, value)
}

/// Sets the value at `parts` below `node`, which is at `walked` in the config.
fn set_below(
    node: &mut toml::Value,
    parts: &[&str],
    key: &str,
    walked: &str,
    value: toml::Value,
) -> Result<()> {
    let (part, rest) = parts.split_first().expect("callers pass at least one part");
    let child = match node {
        toml::Value::Table(inner) => {
            if rest.is_empty() {
                inner.insert(part.to_string(), value);
                return Ok(());
            }
            inner
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(Table::new()))
        }
        toml::Value::Array(items) => {
            let index = array_index(part, items.len(), key, walked)?;
            if rest.is_empty() {
                items[index] = value;
                return Ok(());
            }
            &mut items[index]
        }
        _ => bail!("search parameter {key}: {walked} is a single value, not a table or an array"),
    };
    set_below(child, rest, key, &format!("{walked}.{part}"), value)
}

fn array_index(part: &str, len: usize, key: &str, walked: &str) -> Result<usize> {
    let Ok(index) = part.parse::<usize>() else {
        bail!(
            "search parameter {key}: {walked} is an array; index it with a number, not \"{part}\""
        );
    };
    if index >= len {
        bail!(
            "search parameter {key}: {walked} has {len} entries, so index {index} is out of \
             range (indices start at 0)"
        );
    }
    Ok(index)
}

/// Converts a JSON value of the search journal to TOML. Whole numbers stay integers, and
/// `null` is rejected.
///
/// # Errors
///
/// Fails naming the key for `null`, which TOML cannot hold.
pub fn to_toml(key: &str, value: &Value) -> Result<toml::Value> {
    Ok(match value {
        Value::Null => bail!("search parameter {key}: null is not a TOML value"),
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(
            items
                .iter()
                .map(|item| to_toml(key, item))
                .collect::<Result<_>>()?,
        ),
        Value::Object(map) => {
            let mut table = Table::new();
            for (name, item) in map {
                table.insert(name.clone(), to_toml(key, item)?);
            }
            toml::Value::Table(table)
        }
    })
}

/// Makes the data paths of a config table absolute, so that a config written to another
/// folder reads the same files.
pub fn absolute_data_paths(table: &mut Table, config_path: &Path) {
    let base = config_path.parent().unwrap_or(Path::new(""));
    let base = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
    let Some(toml::Value::Table(data)) = table.get_mut("data") else {
        return;
    };
    for key in [
        "train",
        "test",
        "train_images",
        "train_labels",
        "test_images",
        "test_labels",
    ] {
        if let Some(toml::Value::String(path)) = data.get_mut(key)
            && Path::new(path.as_str()).is_relative()
        {
            *path = base.join(&*path).to_string_lossy().into_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        toml::from_str(
            "[model]\nlayers = [{ type = \"flatten\" }, { type = \"dense\", units = 8 }]\n\
             [training]\nepochs = 2\n[training.optimizer]\ntype = \"sgd\"\nlearning_rate = 0.1\n",
        )
        .unwrap()
    }

    #[test]
    fn set_key_edits_tables_and_arrays() {
        let mut table = table();
        set_key(&mut table, "model.layers.1.units", toml::Value::Integer(32)).unwrap();
        set_key(
            &mut table,
            "training.optimizer.learning_rate",
            toml::Value::Float(0.5),
        )
        .unwrap();
        set_key(&mut table, "training.epochs", toml::Value::Integer(7)).unwrap();
        assert_eq!(table["model"]["layers"][1]["units"].as_integer(), Some(32));
        assert_eq!(
            table["training"]["optimizer"]["learning_rate"].as_float(),
            Some(0.5)
        );
        assert_eq!(table["training"]["epochs"].as_integer(), Some(7));
    }

    #[test]
    fn set_key_errors_name_the_key() {
        let mut table = table();
        let error = set_key(&mut table, "model.layers.5.units", toml::Value::Integer(1))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("search parameter model.layers.5.units"),
            "{error}"
        );
        assert!(error.contains("out of range"), "{error}");
        let error = set_key(
            &mut table,
            "model.layers.first.units",
            toml::Value::Integer(1),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("index it with a number"), "{error}");
        let error = set_key(&mut table, "training.epochs.max", toml::Value::Integer(1))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("training.epochs is a single value"),
            "{error}"
        );
    }

    #[test]
    fn held_out_keys_are_rejected() {
        for key in ["data.test_split", "training.seed", "data.validation_split"] {
            let error = check_searchable(key).unwrap_err().to_string();
            assert!(error.contains(key), "{error}");
        }
        assert!(check_searchable("training.batch_size").is_ok());
    }
}
