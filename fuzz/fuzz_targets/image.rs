//! One PNG or JPEG file decoded by `load_image_file`, as `dendrite predict` reads a single
//! image.
//!
//! The first input byte picks the color mode and whether the image is resized to 8x8.

#![no_main]

use dendrite::data::{ColorMode, load_image_file};
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    // The loader guesses the format from the bytes and falls back to the extension.
    let name = if mode & 4 == 0 {
        "image.png"
    } else {
        "image.jpg"
    };
    let path = common::write_scratch(name, body);
    let color = if mode & 1 == 0 {
        ColorMode::Grayscale
    } else {
        ColorMode::Rgb
    };
    let size = (mode & 2 != 0).then_some((8, 8));
    let _ = load_image_file(&path, color, size);
});
