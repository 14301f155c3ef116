//! `model.safetensors` loaded into the XOR model by `dendrite::model::load`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "common.rs"]
mod common;
#[allow(dead_code)]
#[path = "model_common.rs"]
mod model_common;

fuzz_target!(|data: &[u8]| {
    common::write_scratch("model.json", model_common::XOR_JSON);
    common::write_scratch("model.safetensors", data);
    model_common::load_and_predict(common::scratch_dir());
});
