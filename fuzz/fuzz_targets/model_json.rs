//! `model.json` read by `dendrite::model::load`, beside the weights of the XOR model.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "common.rs"]
mod common;
#[allow(dead_code)]
#[path = "model_common.rs"]
mod model_common;

fuzz_target!(|data: &[u8]| {
    common::write_scratch("model.json", data);
    common::write_scratch("model.safetensors", model_common::XOR_WEIGHTS);
    model_common::load_and_predict(common::scratch_dir());
});
