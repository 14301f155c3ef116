//! The search journal: one JSON line per finished trial, so that a stopped search continues
//! where it stopped.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrialRecord;
use crate::error::{Error, Result};

/// One line of the journal: the search it belongs to and a finished trial.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    search: String,
    #[serde(flatten)]
    record: TrialRecord,
}

/// An append-only journal of finished trials.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    key: String,
    file: File,
}

impl Journal {
    /// Opens the journal at `path` for the search identified by `key` (a hash of the config
    /// and the search seed), creating it if needed, and returns it with the trials it
    /// already contains. A last line cut off by a killed process is ignored and overwritten
    /// by the next record.
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] if the file cannot be read or written, and
    /// [`Error::InvalidConfig`] if it belongs to another search or a line other than the last
    /// is not a trial record.
    pub fn open(path: &Path, key: &str) -> Result<(Journal, Vec<TrialRecord>)> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut records = Vec::new();
        let mut valid_bytes = 0u64;
        if path.exists() {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            let lines: Vec<String> = BufReader::new(file)
                .lines()
                .collect::<std::io::Result<_>>()
                .map_err(|e| Error::io(path, e))?;
            for (number, text) in lines.iter().enumerate() {
                if text.trim().is_empty() {
                    valid_bytes += text.len() as u64 + 1;
                    continue;
                }
                let line: Line = match serde_json::from_str(text) {
                    Ok(line) => line,
                    Err(_) if number + 1 == lines.len() => break,
                    Err(error) => {
                        return Err(Error::InvalidConfig(format!(
                            "{}:{}: not a trial record ({error}); delete the journal to start \
                             the search over",
                            path.display(),
                            number + 1
                        )));
                    }
                };
                if line.search != key {
                    return Err(Error::InvalidConfig(format!(
                        "{} belongs to another search (its config or search seed differ); \
                         choose another output folder with --out, or delete the journal to \
                         start over",
                        path.display()
                    )));
                }
                records.push(line.record);
                valid_bytes += text.len() as u64 + 1;
            }
        }

        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        // Drop a partial last line, so that the next record starts on a line of its own.
        if file.metadata().map_err(|e| Error::io(path, e))?.len() > valid_bytes {
            file.set_len(valid_bytes).map_err(|e| Error::io(path, e))?;
        }
        Ok((
            Journal {
                path: path.to_path_buf(),
                key: key.to_string(),
                file,
            },
            records,
        ))
    }

    /// Appends a finished trial and waits until it is on disk (fsync).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] if the journal cannot be written.
    pub fn append(&mut self, record: &TrialRecord) -> Result<()> {
        let line = Line {
            search: self.key.clone(),
            record: record.clone(),
        };
        let mut text = serde_json::to_string(&line).expect("trial records serialize");
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// Returns a stable 64-bit FNV-1a hash of `bytes` in hexadecimal, to key a journal.
pub fn fingerprint(bytes: &[u8]) -> String {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in bytes {
        hash ^= *byte as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}
