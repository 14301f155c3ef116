//! Loading a model folder and running it once, shared by the `model_json` and
//! `safetensors` targets.

use std::path::Path;

use dendrite::tensor::Tensor;

/// The model of `examples/xor.toml`, saved by `dendrite train`; each target replaces one of
/// its two files with the fuzz input.
pub const XOR_JSON: &[u8] = include_bytes!("../seeds/xor-model/model.json");
pub const XOR_WEIGHTS: &[u8] = include_bytes!("../seeds/xor-model/model.safetensors");

/// Inputs above this many values per row are not run, to keep each run fast.
const MAX_INPUT_LEN: usize = 1 << 12;

/// Loads the model in `dir` as `dendrite predict` does and, if it loads, predicts one row
/// of zeros, since a loaded model must also run.
pub fn load_and_predict(dir: &Path) {
    let Ok(saved) = dendrite::model::load(dir) else {
        return;
    };
    let _ = saved.model.summary();
    let input_shape = saved.model.input_shape();
    let row_len = input_shape
        .iter()
        .try_fold(1usize, |len, &side| len.checked_mul(side));
    if let Some(row_len) = row_len.filter(|&len| len <= MAX_INPUT_LEN) {
        let mut shape = vec![1];
        shape.extend_from_slice(input_shape);
        let inputs = Tensor::from_vec(&shape, vec![0.0; row_len]);
        let _ = saved.model.predict(&inputs, 1);
    }
}
