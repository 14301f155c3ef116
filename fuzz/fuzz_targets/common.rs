//! Helpers shared by the fuzz targets: a scratch folder per process and file writing.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A folder of this fuzzing process under the system temp folder, created on first use.
/// Each run overwrites the files in it, so it does not grow.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dendrite-fuzz-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("cannot create the scratch folder");
        dir
    })
}

/// Writes `bytes` to `name` in the scratch folder and returns the path.
pub fn write_scratch(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    fs::write(&path, bytes).expect("cannot write a scratch file");
    path
}

/// Splits `data` into at most `parts` pieces at each occurrence of [`SEPARATOR`], so that
/// one fuzz input can hold several files. Missing pieces are empty.
pub fn split_files(data: &[u8], parts: usize) -> Vec<&[u8]> {
    let mut pieces = Vec::with_capacity(parts);
    let mut rest = data;
    while pieces.len() + 1 < parts {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                pieces.push(&rest[..at]);
                rest = &rest[at + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    pieces.push(rest);
    pieces.resize(parts, &[][..]);
    pieces
}

/// The bytes between two files in a multi-file fuzz input.
pub const SEPARATOR: &[u8] = b"\n--8<--\n";
