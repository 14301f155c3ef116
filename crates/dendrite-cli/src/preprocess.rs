//! Image preprocessing shared by `train`, `evaluate` and `predict`: loading image folders
//! with a report of skipped and resized files, and per-channel standardization.

use std::path::Path;

use anyhow::{Result, bail};
use dendrite::data::{ChannelStats, Dataset, ImageFolderConfig, load_image_folder};
use dendrite::tensor::Tensor;

/// How many skipped or resized files a report lists by name.
const LISTED_FILES: usize = 5;

/// Loads an image folder and reports on standard error how many files were skipped or
/// resized, naming the first few.
pub fn load_folder(root: &Path, config: &ImageFolderConfig) -> Result<Dataset> {
    let folder = load_image_folder(root, config)?;

    if !folder.skipped.is_empty() {
        eprintln!(
            "warning: skipped {} of {} image files in {} that could not be read:",
            folder.skipped.len(),
            folder.skipped.len() + folder.paths.len(),
            root.display()
        );
        for (path, reason) in folder.skipped.iter().take(LISTED_FILES) {
            eprintln!("  {}: {reason}", path.display());
        }
        if folder.skipped.len() > LISTED_FILES {
            eprintln!("  and {} more", folder.skipped.len() - LISTED_FILES);
        }
    }

    if let (Some((height, width)), false) = (config.size, folder.resized.is_empty()) {
        eprintln!(
            "note: resized {} of {} images in {} to {height}x{width} (height x width):",
            folder.resized.len(),
            folder.paths.len(),
            root.display()
        );
        for image in folder.resized.iter().take(LISTED_FILES) {
            let (original_height, original_width) = image.original_size;
            eprintln!(
                "  {} was {original_height}x{original_width}",
                image.path.display()
            );
        }
        if folder.resized.len() > LISTED_FILES {
            eprintln!("  and {} more", folder.resized.len() - LISTED_FILES);
        }
    }

    Ok(folder.dataset)
}

/// Computes the channel statistics of image features of shape `[n, c, h, w]`, or of
/// `[n, h, w]` as one channel.
pub fn channel_stats(features: &mut Tensor) -> Result<ChannelStats> {
    with_channels(features, |nchw| ChannelStats::compute(nchw))
}

/// Standardizes image features of shape `[n, c, h, w]`, or `[n, h, w]` as one channel, in
/// place with `stats`.
pub fn standardize(features: &mut Tensor, stats: &ChannelStats) -> Result<()> {
    let channels = match features.shape() {
        [_, _, _] => 1,
        [_, channels, _, _] => *channels,
        _ => 0,
    };
    if channels != stats.channels() {
        bail!(
            "inputs have {channels} channels but the model's normalization statistics have {}",
            stats.channels()
        );
    }
    with_channels(features, |nchw| stats.apply(nchw))
}

/// Runs `f` on `features` seen as `[n, c, h, w]`: a `[n, h, w]` tensor gets one channel for
/// the call and its own shape back afterwards.
fn with_channels<R>(features: &mut Tensor, f: impl FnOnce(&mut Tensor) -> R) -> Result<R> {
    let shape = features.shape().to_vec();
    match *shape.as_slice() {
        [_, _, _, _] => Ok(f(features)),
        [n, height, width] => {
            let mut nchw =
                std::mem::replace(features, Tensor::zeros(&[0])).reshape(&[n, 1, height, width]);
            let result = f(&mut nchw);
            *features = nchw.reshape(&shape);
            Ok(result)
        }
        _ => bail!(
            "normalization needs image rows of shape [height, width] or [channels, height, \
             width], but the rows have shape {:?}",
            &shape[1..]
        ),
    }
}
