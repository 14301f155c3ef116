//! A checkpoint folder read by `dendrite::train::checkpoint::load`: the checksum list, the
//! training state and the weight and optimizer files.
//!
//! The input holds up to four files separated by `common::SEPARATOR`: `state.json`,
//! `model.safetensors`, `optimizer.safetensors` and a fourth one. If bit 0 of the first
//! byte is set, the fourth file is `checksums.json` as given. Otherwise the target writes
//! matching checksums, so the fuzzer gets past them to the state and tensor parsers, and
//! with bit 1 set the fourth file becomes `best.safetensors`.

#![no_main]

use std::fmt::Write;

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

#[allow(dead_code)]
#[path = "common.rs"]
mod common;

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut hex, b| {
            write!(hex, "{b:02x}").unwrap();
            hex
        })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let files = common::split_files(body, 4);
    let dir = common::scratch_dir().join("checkpoint");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut named = vec![
        ("state.json", files[0]),
        ("model.safetensors", files[1]),
        ("optimizer.safetensors", files[2]),
    ];
    let checksums = if mode & 1 != 0 {
        files[3].to_vec()
    } else {
        if mode & 2 != 0 {
            named.push(("best.safetensors", files[3]));
        }
        let list: Vec<String> = named
            .iter()
            .map(|(name, bytes)| format!("\"{name}\": \"{}\"", sha256_hex(bytes)))
            .collect();
        format!("{{{}}}", list.join(", ")).into_bytes()
    };
    for (name, bytes) in &named {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    std::fs::write(dir.join("checksums.json"), checksums).unwrap();
    let _ = dendrite::train::checkpoint::load(&dir);
});
