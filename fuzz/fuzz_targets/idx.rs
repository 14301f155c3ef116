//! IDX images and labels, raw or gzip-compressed, as `read_idx_images` and
//! `read_idx_labels` read them from disk.
//!
//! The first input byte picks the reader (bit 0) and whether the rest is gzip-compressed
//! before it is written (bit 1), so the fuzzer also reaches the IDX parser behind gzip.

#![no_main]

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let bytes = if mode & 2 != 0 {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(body).unwrap();
        encoder.finish().unwrap()
    } else {
        body.to_vec()
    };
    let path = common::write_scratch("input-idx-ubyte", &bytes);
    if mode & 1 == 0 {
        let _ = dendrite::data::read_idx_images(&path);
    } else {
        let _ = dendrite::data::read_idx_labels(&path);
    }
});
