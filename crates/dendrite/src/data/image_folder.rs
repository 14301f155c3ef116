//! Loading a folder of images with one subfolder per class, and writing one.
//!
//! The layout is `root/<class name>/<image file>`, as in torchvision's `ImageFolder`. Class
//! folders are sorted by name, and the class label is the position in that order. Image files
//! (`.png`, `.jpg` and `.jpeg`, in any letter case) are sorted by name within each class, so the
//! same folder always gives the same rows in the same order. Hidden entries (names starting
//! with `.`), other files and nested subfolders are ignored.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageBuffer, ImageError, ImageFormat, ImageReader, Luma};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The file name extensions that count as images, compared without regard to letter case.
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The channels that loaded images are converted to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColorMode {
    /// One channel. Color images are converted with the `image` crate's luma conversion, in
    /// `f32` with the Rec. 709 weights `0.2126 R + 0.7152 G + 0.0722 B`. PIL uses the Rec. 601
    /// weights, so gray values can differ slightly from a PyTorch pipeline.
    Grayscale,

    /// Three channels in the order red, green, blue. Gray images are replicated into all three
    /// channels.
    #[default]
    Rgb,
}

impl ColorMode {
    /// Returns the number of channels: 1 for grayscale and 3 for RGB.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Grayscale => 1,
            ColorMode::Rgb => 3,
        }
    }
}

/// The action for an image file that cannot be read or decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadFilePolicy {
    /// Return an error that names the file.
    #[default]
    Stop,

    /// Leave the file out and list it in [`ImageFolder::skipped`].
    Skip,
}

/// Settings for [`load_image_folder`]. In TOML, every field is optional:
///
/// ```toml
/// color = "grayscale"   # or "rgb" (the default)
/// size = [28, 28]       # [height, width]; leave out to require one size for all images
/// on_bad_file = "skip"  # or "stop" (the default)
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageFolderConfig {
    /// The channels of the loaded features.
    pub color: ColorMode,

    /// The `(height, width)` that every image is resized to, with a triangle (bilinear)
    /// filter. Without it, all images must already have the same size.
    pub size: Option<(usize, usize)>,

    /// The action for a file that cannot be read or decoded.
    pub on_bad_file: BadFilePolicy,
}

/// An image that [`load_image_folder`] resized because its size differed from the configured
/// one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizedImage {
    /// The image file.
    pub path: PathBuf,

    /// The size of the file as `(height, width)`, before resizing.
    pub original_size: (usize, usize),
}

/// A classification dataset loaded from an image folder, with the file behind each row.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFolder {
    /// Features of shape `[n, channels, height, width]` (NCHW) with values in `[0, 1]`, and
    /// the class folder names as class names.
    pub dataset: Dataset,

    /// The file of each row, in row order.
    pub paths: Vec<PathBuf>,

    /// The files left out under [`BadFilePolicy::Skip`], each with the reason.
    pub skipped: Vec<(PathBuf, String)>,

    /// The images whose size differed from [`ImageFolderConfig::size`] and were resized.
    pub resized: Vec<ResizedImage>,
}

/// One image file with its class label.
struct ImageFile {
    path: PathBuf,
    label: usize,
}

/// One decoded image with its values as `[channels, height, width]`.
struct DecodedImage {
    height: usize,
    width: usize,
    pixels: Vec<f32>,
}

/// Loads every image under `root/<class name>/` into a classification dataset.
///
/// The features have shape `[n, c, h, w]` with `c` from [`ImageFolderConfig::color`] and values
/// in `[0, 1]`. An 8-bit value `x` becomes exactly `x / 255` unless the image is converted from
/// color to grayscale or resized, and 16-bit images keep their full precision. Alpha channels
/// are dropped. With [`ImageFolderConfig::size`] set, images of
/// another size are resized with a triangle filter and listed in [`ImageFolder::resized`].
/// Each file's format is detected from its content, so a JPEG file named `.png` still loads.
///
/// # Errors
///
/// Every error names the path it is about.
///
/// - [`Error::Io`] if `root` does not exist or a folder cannot be listed.
/// - [`Error::InvalidData`] if `root` is not a folder, a class folder name is not valid
///   UTF-8, there are fewer than 2 class folders, or a class folder contains no images (or
///   only skipped ones).
/// - [`Error::InvalidData`] for the first file whose size differs from the most common size,
///   if the images have different sizes and no size is configured.
/// - With [`BadFilePolicy::Stop`], [`Error::Io`] for the first file, in load order, that
///   cannot be opened, or [`Error::InvalidData`] with the decoder's message for the first file
///   that cannot be decoded.
/// - [`Error::InvalidConfig`] if the configured height or width is 0 or above `u32::MAX`.
pub fn load_image_folder(
    root: impl AsRef<Path>,
    config: &ImageFolderConfig,
) -> Result<ImageFolder> {
    let root = root.as_ref();
    if let Some(size) = config.size {
        check_size(size)?;
    }

    let (class_names, files) = list_image_files(root)?;

    let decoded: Vec<Result<DecodedImage>> = files
        .par_iter()
        .map(|file| decode_image(&file.path, config))
        .collect();

    let mut kept = Vec::with_capacity(files.len());
    let mut skipped = Vec::new();
    for (file, result) in files.into_iter().zip(decoded) {
        match (result, config.on_bad_file) {
            (Ok(image), _) => kept.push((file, image)),
            (Err(err), BadFilePolicy::Stop) => return Err(err),
            (Err(err), BadFilePolicy::Skip) => skipped.push((file.path, err.to_string())),
        }
    }
    check_every_class_kept(root, &class_names, &kept, &skipped)?;

    let (height, width) = match config.size {
        Some(size) => size,
        None => common_size(&kept)?,
    };

    let channels = config.color.channels();
    let image_len = channels * height * width;
    let mut features = Vec::with_capacity(kept.len() * image_len);
    let mut labels = Vec::with_capacity(kept.len());
    let mut paths = Vec::with_capacity(kept.len());
    let mut resized = Vec::new();
    for (file, image) in kept {
        if (image.height, image.width) == (height, width) {
            features.extend_from_slice(&image.pixels);
        } else {
            features.extend(resize_pixels(&image, channels, (height, width)));
            resized.push(ResizedImage {
                path: file.path.clone(),
                original_size: (image.height, image.width),
            });
        }
        labels.push(file.label);
        paths.push(file.path);
    }

    let n = labels.len();
    let features = Tensor::from_vec(&[n, channels, height, width], features);
    let dataset = Dataset::new(
        features,
        Targets::Classes {
            labels,
            class_names,
        },
    )?;

    Ok(ImageFolder {
        dataset,
        paths,
        skipped,
        resized,
    })
}

/// Loads one image file as [`load_image_folder`] loads each file of a folder: converted to
/// `color` and, if `size` is given and differs from the file's size, resized to it with the
/// same filter.
///
/// Returns the features of shape `[channels, height, width]` with values in `[0, 1]`, and the
/// size of the file as `(height, width)` before any resizing.
///
/// # Errors
///
/// Returns [`Error::Io`] if the file cannot be opened, [`Error::InvalidData`] naming the file
/// if it cannot be decoded, and [`Error::InvalidConfig`] if a side of `size` is 0 or above
/// `u32::MAX`.
pub fn load_image_file(
    path: impl AsRef<Path>,
    color: ColorMode,
    size: Option<(usize, usize)>,
) -> Result<(Tensor, (usize, usize))> {
    if let Some(size) = size {
        check_size(size)?;
    }
    let config = ImageFolderConfig {
        color,
        size,
        on_bad_file: BadFilePolicy::Stop,
    };
    let image = decode_image(path.as_ref(), &config)?;
    let original_size = (image.height, image.width);
    let channels = color.channels();

    let (height, width, pixels) = match size {
        Some(target) if target != original_size => {
            (target.0, target.1, resize_pixels(&image, channels, target))
        }
        _ => (image.height, image.width, image.pixels),
    };
    Ok((
        Tensor::from_vec(&[channels, height, width], pixels),
        original_size,
    ))
}

fn check_size((height, width): (usize, usize)) -> Result<()> {
    let fits = |side: usize| side > 0 && u32::try_from(side).is_ok();
    if fits(height) && fits(width) {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "image size [{height}, {width}] (height, width) is invalid: both sides must be \
             between 1 and {}",
            u32::MAX
        )))
    }
}

/// Lists the class names and the image files of every class, both sorted by name.
fn list_image_files(root: &Path) -> Result<(Vec<String>, Vec<ImageFile>)> {
    let metadata = fs::metadata(root).map_err(|err| Error::io(root, err))?;
    if !metadata.is_dir() {
        return Err(Error::invalid_data(
            root,
            "is not a folder; an image folder contains one subfolder of images per class",
        ));
    }

    let mut class_dirs = Vec::new();
    for path in sorted_entries(root)? {
        if !path.is_dir() {
            continue;
        }
        let Some(name) = path.file_name().and_then(OsStr::to_str) else {
            return Err(Error::invalid_data(
                &path,
                "class folder name is not valid UTF-8; rename the folder",
            ));
        };
        class_dirs.push((name.to_string(), path.clone()));
    }

    if class_dirs.len() < 2 {
        let names: Vec<&str> = class_dirs.iter().map(|(name, _)| name.as_str()).collect();
        let found = match names.as_slice() {
            [] => "found 0 class folders".to_string(),
            [name] => format!("found 1 class folder ({name})"),
            _ => unreachable!("fewer than 2 class folders"),
        };
        return Err(Error::invalid_data(
            root,
            format!(
                "{found} in {}; a classifier needs at least 2, each a subfolder of images",
                root.display()
            ),
        ));
    }

    let mut class_names = Vec::with_capacity(class_dirs.len());
    let mut files = Vec::new();
    for (label, (name, dir)) in class_dirs.into_iter().enumerate() {
        let before = files.len();
        for path in sorted_entries(&dir)? {
            if has_image_extension(&path) && path.is_file() {
                files.push(ImageFile { path, label });
            }
        }

        if files.len() == before {
            return Err(Error::invalid_data(
                &dir,
                format!(
                    "class folder contains no images ({}); add images or remove the folder",
                    extension_list()
                ),
            ));
        }
        class_names.push(name);
    }

    Ok((class_names, files))
}

/// Returns the paths of the non-hidden entries of `dir`, sorted by file name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(|err| Error::io(dir, err))? {
        let entry = entry.map_err(|err| Error::io(dir, err))?;
        let hidden = entry.file_name().as_encoded_bytes().starts_with(b".");
        if !hidden {
            paths.push(entry.path());
        }
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(paths)
}

fn has_image_extension(path: &Path) -> bool {
    path.extension().and_then(OsStr::to_str).is_some_and(|ext| {
        IMAGE_EXTENSIONS
            .iter()
            .any(|known| ext.eq_ignore_ascii_case(known))
    })
}

fn extension_list() -> String {
    IMAGE_EXTENSIONS.map(|ext| format!(".{ext}")).join(", ")
}

/// Reads and decodes one file and converts it to the configured channels, without resizing.
fn decode_image(path: &Path, config: &ImageFolderConfig) -> Result<DecodedImage> {
    let image = ImageReader::open(path)
        .and_then(ImageReader::with_guessed_format)
        .map_err(|err| Error::io(path, err))?
        .decode()
        // A truncated file shows up as an I/O error of the decoder, so every decoder error is
        // reported as invalid data.
        .map_err(|err| Error::invalid_data(path, format!("cannot decode image: {err}")))?;

    let (height, width) = (image.height() as usize, image.width() as usize);
    let pixels = match (config.color, image.color().has_color()) {
        (ColorMode::Grayscale, false) => gray_values(&image),
        (ColorMode::Grayscale, true) => image.to_luma32f().into_raw(),
        (ColorMode::Rgb, false) => gray_values(&image).repeat(3),
        (ColorMode::Rgb, true) => rgb_values(&image),
    };

    Ok(DecodedImage {
        height,
        width,
        pixels,
    })
}

/// Returns the gray channel of an image without color, scaling integer samples by their
/// maximum so that an 8-bit value `x` becomes exactly `x / 255`.
fn gray_values(image: &DynamicImage) -> Vec<f32> {
    match image {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageLumaA8(_) => {
            scale_u8(image.to_luma8().into_raw())
        }
        DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA16(_) => {
            scale_u16(image.to_luma16().into_raw())
        }
        _ => image.to_luma32f().into_raw(),
    }
}

/// Returns the red, green and blue planes of a color image, scaled like [`gray_values`].
fn rgb_values(image: &DynamicImage) -> Vec<f32> {
    let interleaved = match image {
        DynamicImage::ImageRgb8(_) | DynamicImage::ImageRgba8(_) => {
            scale_u8(image.to_rgb8().into_raw())
        }
        DynamicImage::ImageRgb16(_) | DynamicImage::ImageRgba16(_) => {
            scale_u16(image.to_rgb16().into_raw())
        }
        _ => image.to_rgb32f().into_raw(),
    };
    interleaved_to_planar(&interleaved, 3)
}

fn scale_u8(values: Vec<u8>) -> Vec<f32> {
    values.into_iter().map(|x| f32::from(x) / 255.0).collect()
}

fn scale_u16(values: Vec<u16>) -> Vec<f32> {
    values.into_iter().map(|x| f32::from(x) / 65535.0).collect()
}

/// Converts an error of the PNG encoder into this crate's error for `path`.
fn encode_error(path: &Path, err: ImageError) -> Error {
    match err {
        ImageError::IoError(source) => Error::io(path, source),
        other => Error::invalid_data(path, format!("cannot encode PNG: {other}")),
    }
}

/// Reorders interleaved values (`[height, width, channels]`) into `[channels, height, width]`.
fn interleaved_to_planar(interleaved: &[f32], channels: usize) -> Vec<f32> {
    let plane = interleaved.len() / channels;
    let mut planar = vec![0.0; interleaved.len()];
    for (i, pixel) in interleaved.chunks_exact(channels).enumerate() {
        for (c, &value) in pixel.iter().enumerate() {
            planar[c * plane + i] = value;
        }
    }
    planar
}

/// Resizes one `[channels, h, w]` image to `(height, width)` with a triangle filter.
fn resize_pixels(
    image: &DecodedImage,
    channels: usize,
    (height, width): (usize, usize),
) -> Vec<f32> {
    let plane = image.height * image.width;
    let mut out = Vec::with_capacity(channels * height * width);
    for channel in image.pixels.chunks_exact(plane) {
        // Dimensions came from u32 values (decoded sizes) or passed `check_size`.
        let source: ImageBuffer<Luma<f32>, Vec<f32>> =
            ImageBuffer::from_raw(image.width as u32, image.height as u32, channel.to_vec())
                .expect("a channel plane has width * height values");
        let resized = imageops::resize(&source, width as u32, height as u32, FilterType::Triangle);
        out.extend(resized.into_raw().into_iter().map(|v| v.clamp(0.0, 1.0)));
    }
    out
}

/// Returns an error for the first class whose every file was skipped.
fn check_every_class_kept(
    root: &Path,
    class_names: &[String],
    kept: &[(ImageFile, DecodedImage)],
    skipped: &[(PathBuf, String)],
) -> Result<()> {
    let mut kept_per_class = vec![0usize; class_names.len()];
    for (file, _) in kept {
        kept_per_class[file.label] += 1;
    }

    match kept_per_class.iter().position(|&count| count == 0) {
        None => Ok(()),
        Some(label) => {
            let dir = root.join(&class_names[label]);
            let skipped_here = skipped
                .iter()
                .filter(|(path, _)| path.starts_with(&dir))
                .count();
            Err(Error::invalid_data(
                &dir,
                format!(
                    "class folder has no image that could be decoded ({skipped_here} files \
                     skipped); replace the broken files or remove the folder"
                ),
            ))
        }
    }
}

/// Returns the most common `(height, width)` of the images, or an error naming the first image
/// of another size. Ties go to the size seen first.
fn common_size(kept: &[(ImageFile, DecodedImage)]) -> Result<(usize, usize)> {
    let mut counts: HashMap<(usize, usize), usize> = HashMap::new();
    let mut order = Vec::new();
    for (_, image) in kept {
        let size = (image.height, image.width);
        let count = counts.entry(size).or_insert(0);
        if *count == 0 {
            order.push(size);
        }
        *count += 1;
    }

    // `max_by_key` returns the last maximum, so scan in reverse to prefer the first size seen.
    let common = *order
        .iter()
        .rev()
        .max_by_key(|size| counts[size])
        .expect("at least 2 classes with 1 image each were kept");

    let odd = kept
        .iter()
        .find(|(_, image)| (image.height, image.width) != common);
    match odd {
        None => Ok(common),
        Some((file, image)) => {
            let (height, width) = common;
            Err(Error::invalid_data(
                &file.path,
                format!(
                    "image is {}x{} (height x width), but most images in the folder are \
                     {height}x{width}; set `size = [{height}, {width}]` (height, width) in the \
                     image folder config to resize every image to one size",
                    image.height, image.width
                ),
            ))
        }
    }
}

/// Writes grayscale images as 8-bit PNG files under `root/<class name>/<index>.png`, a layout
/// that [`load_image_folder`] reads back.
///
/// `images` has shape `[n, height, width]` with values in `[0, 1]`, and each value `x` is stored
/// as `round(x * 255)`, so values that are multiples of `1/255` (as from
/// [`read_idx_images`](super::read_idx_images)) load back exactly. `index` is the row number,
/// padded with zeros to the width of the largest one so that sorting by name keeps row order.
/// Folders are created as needed, and only for classes that have images, because the loader
/// rejects empty class folders. Existing files with the same names are overwritten.
///
/// # Errors
///
/// - [`Error::Shape`] if `images` is not of rank 3, `labels` has another length than the
///   number of images, or a label is not below `class_names.len()`.
/// - [`Error::InvalidConfig`] if a class name used by a label is empty, `.` or `..`, starts
///   with `.` (the loader ignores hidden folders) or contains `/` or `\`, or if a side of the
///   images is 0 or above `u32::MAX`.
/// - [`Error::InvalidData`] (naming `root`) if a value is NaN or outside `[0, 1]`.
/// - [`Error::Io`] if a folder or file cannot be written.
pub fn write_png_folder(
    images: &Tensor,
    labels: &[usize],
    class_names: &[String],
    root: &Path,
) -> Result<()> {
    const OP: &str = "write_png_folder";

    let &[n, height, width] = images.shape() else {
        return Err(Error::Shape {
            op: OP,
            message: format!(
                "images must have shape [n, height, width], got {:?}",
                images.shape()
            ),
        });
    };
    if labels.len() != n {
        return Err(Error::Shape {
            op: OP,
            message: format!("there are {n} images but {} labels", labels.len()),
        });
    }
    if let Some((row, &label)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &label)| label >= class_names.len())
    {
        return Err(Error::Shape {
            op: OP,
            message: format!(
                "label {label} in row {row} is out of range for {} class names",
                class_names.len()
            ),
        });
    }
    for &label in labels {
        check_class_name(&class_names[label])?;
    }
    let (Ok(png_width @ 1..), Ok(png_height @ 1..)) = (u32::try_from(width), u32::try_from(height))
    else {
        return Err(Error::InvalidConfig(format!(
            "image size {height}x{width} (height x width) cannot be stored as PNG: both sides \
             must be between 1 and {}",
            u32::MAX
        )));
    };
    if let Some((index, &value)) = images
        .data()
        .iter()
        .enumerate()
        .find(|&(_, &value)| !(0.0..=1.0).contains(&value))
    {
        let plane = height * width;
        return Err(Error::invalid_data(
            root,
            format!(
                "image {} has value {value}, which is outside [0, 1]; scale the images to \
                 [0, 1] before writing them as PNG",
                index / plane
            ),
        ));
    }

    let digits = n.saturating_sub(1).to_string().len();
    let plane = height * width;
    for (row, (&label, pixels)) in labels
        .iter()
        .zip(images.data().chunks_exact(plane))
        .enumerate()
    {
        let dir = root.join(&class_names[label]);
        fs::create_dir_all(&dir).map_err(|err| Error::io(&dir, err))?;

        let bytes: Vec<u8> = pixels.iter().map(|&x| (x * 255.0).round() as u8).collect();
        let path = dir.join(format!("{row:0digits$}.png"));
        let image = image::GrayImage::from_raw(png_width, png_height, bytes)
            .expect("a row has height * width values");
        DynamicImage::ImageLuma8(image)
            .save_with_format(&path, ImageFormat::Png)
            .map_err(|err| encode_error(&path, err))?;
    }
    Ok(())
}

fn check_class_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.starts_with('.') {
        Some("it starts with `.`, and hidden folders are ignored when loading")
    } else if name.contains(['/', '\\']) {
        Some("it contains a path separator")
    } else {
        None
    };

    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidConfig(format!(
            "class name {name:?} cannot be used as a folder name because {reason}"
        ))),
    }
}
