//! A `dendrite train` config file parsed and checked by the command's own `Config::load`.
//!
//! The parser lives in the binary crate, which has no library part, so its three source
//! files are compiled into this target as they are.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "common.rs"]
mod common;

#[allow(dead_code)]
#[path = "../../crates/dendrite-cli/src/config.rs"]
mod config;
#[allow(dead_code)]
#[path = "../../crates/dendrite-cli/src/fault_config.rs"]
mod fault_config;
#[allow(dead_code)]
#[path = "../../crates/dendrite-cli/src/preprocess.rs"]
mod preprocess;

fuzz_target!(|data: &[u8]| {
    let path = common::write_scratch("config.toml", data);
    let _ = config::Config::load(&path);
});
