//! Reading and writing IDX files, the format of the MNIST digit images and labels.
//!
//! An IDX file is a 4-byte magic number, one big-endian `u32` size per dimension, then the
//! elements in row-major order. The magic number is two zero bytes, an element type code and
//! the number of dimensions, so MNIST images start with `0x00000803` (unsigned bytes, 3
//! dimensions) and labels with `0x00000801`. Only the unsigned byte type (code `0x08`) is
//! supported.
//!
//! Files are often distributed gzip-compressed. The readers detect gzip by its first two
//! bytes (`1F 8B`), not by the file name, and decompress it transparently.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

use super::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The number of classes in MNIST (the digits 0 to 9).
pub const MNIST_NUM_CLASSES: usize = 10;

const GZIP_MAGIC: [u8; 2] = [0x1F, 0x8B];
const UNSIGNED_BYTE: u8 = 0x08;
const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// The kind of IDX file a reader expects.
#[derive(Clone, Copy)]
struct IdxKind {
    magic: u32,
    description: &'static str,
}

const IMAGES: IdxKind = IdxKind {
    magic: IMAGES_MAGIC,
    description: "IDX images",
};

const LABELS: IdxKind = IdxKind {
    magic: LABELS_MAGIC,
    description: "IDX labels",
};

/// Reads an IDX image file (magic `0x00000803`, raw or gzip) and scales each byte `x` to
/// `x / 255`, so every value is in `[0, 1]`.
///
/// Returns a tensor of shape `[n, rows, cols]`.
///
/// # Errors
///
/// Returns [`Error::Io`] if the file cannot be read. Returns [`Error::InvalidData`] if
///
/// - the file starts like gzip but the gzip stream is corrupt or truncated,
/// - the magic number is not `0x00000803` or the element type is not unsigned byte,
/// - the image height or width is 0,
/// - or the payload is shorter or longer than the header declares.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<Tensor> {
    let path = path.as_ref();
    let (dims, payload) = read_idx(path, IMAGES)?;

    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(Error::invalid_data(
            path,
            format!("image size {rows}x{cols} is invalid: both sides must be at least 1"),
        ));
    }

    let pixels = payload.iter().map(|&x| f32::from(x) / 255.0).collect();
    Ok(Tensor::from_vec(&[count, rows, cols], pixels))
}

/// Reads an IDX label file (magic `0x00000801`, raw or gzip) and returns one byte per label.
///
/// # Errors
///
/// Returns [`Error::Io`] if the file cannot be read. Returns [`Error::InvalidData`] if
///
/// - the file starts like gzip but the gzip stream is corrupt or truncated,
/// - the magic number is not `0x00000801` or the element type is not unsigned byte,
/// - or the payload is shorter or longer than the header declares.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let (_, payload) = read_idx(path.as_ref(), LABELS)?;
    Ok(payload)
}

/// Loads an image file and a label file in IDX format into a classification dataset.
///
/// Features have shape `[n, rows, cols]` with values in `[0, 1]`, and the class names are
/// `"0"` to `num_classes - 1`. Pass [`MNIST_NUM_CLASSES`] for MNIST.
///
/// # Errors
///
/// Returns the errors of [`read_idx_images`] and [`read_idx_labels`],
/// [`Error::InvalidConfig`] if `num_classes` is 0, and [`Error::InvalidData`] if the files
/// hold different numbers of rows or a label is not below `num_classes`.
pub fn load_idx_dataset(
    images: impl AsRef<Path>,
    labels: impl AsRef<Path>,
    num_classes: usize,
) -> Result<Dataset> {
    let (images_path, labels_path) = (images.as_ref(), labels.as_ref());
    if num_classes == 0 {
        return Err(Error::InvalidConfig(
            "the number of classes must be at least 1, got 0".to_string(),
        ));
    }

    let features = read_idx_images(images_path)?;
    let raw_labels = read_idx_labels(labels_path)?;

    let image_count = features.shape()[0];
    if image_count != raw_labels.len() {
        return Err(Error::invalid_data(
            images_path,
            format!(
                "contains {image_count} images but {} contains {} labels; \
                 use the image and label files of the same split",
                labels_path.display(),
                raw_labels.len()
            ),
        ));
    }

    let mut labels = Vec::with_capacity(raw_labels.len());
    for (index, &label) in raw_labels.iter().enumerate() {
        let label = usize::from(label);
        if label >= num_classes {
            return Err(Error::invalid_data(
                labels_path,
                format!(
                    "label {label} at index {index} is out of range for {num_classes} classes \
                     (valid labels are 0 to {})",
                    num_classes - 1
                ),
            ));
        }
        labels.push(label);
    }

    let class_names = (0..num_classes).map(|c| c.to_string()).collect();
    Dataset::new(
        features,
        Targets::Classes {
            labels,
            class_names,
        },
    )
}

/// Writes images of shape `[n, rows, cols]` with values in `[0, 1]` as an IDX image file,
/// gzip-compressed if `gzip` is true. Each value is stored as the nearest byte to `x * 255`,
/// so [`read_idx_images`] returns the same tensor when every value is a multiple of 1/255.
///
/// # Errors
///
/// Returns [`Error::Shape`] if `images` is not of rank 3 or a size does not fit in a `u32`,
/// [`Error::InvalidData`] if a value is NaN or outside `[0, 1]`, and [`Error::Io`] if
/// writing fails.
pub fn write_idx_images(path: impl AsRef<Path>, images: &Tensor, gzip: bool) -> Result<()> {
    let path = path.as_ref();
    if images.rank() != 3 {
        return Err(Error::Shape {
            op: "write_idx_images",
            message: format!(
                "images must have shape [n, rows, cols], got {:?}",
                images.shape()
            ),
        });
    }

    let mut bytes = Vec::with_capacity(images.numel());
    for (index, &x) in images.data().iter().enumerate() {
        if !(0.0..=1.0).contains(&x) {
            return Err(Error::invalid_data(
                path,
                format!("cannot write pixel value {x} at index {index}: values must be in [0, 1]"),
            ));
        }
        bytes.push((x * 255.0).round() as u8);
    }

    write_idx(path, "write_idx_images", images.shape(), &bytes, gzip)
}

/// Writes labels as an IDX label file, gzip-compressed if `gzip` is true.
///
/// # Errors
///
/// Returns [`Error::Shape`] if there are more than `u32::MAX` labels and [`Error::Io`] if
/// writing fails.
pub fn write_idx_labels(path: impl AsRef<Path>, labels: &[u8], gzip: bool) -> Result<()> {
    write_idx(
        path.as_ref(),
        "write_idx_labels",
        &[labels.len()],
        labels,
        gzip,
    )
}

/// Reads the file, decompresses it if it is gzip, checks the header against `kind` and
/// returns the dimension sizes and the payload.
fn read_idx(path: &Path, kind: IdxKind) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = read_maybe_gzip(path)?;
    let dims = parse_header(path, &bytes, kind)?;

    let header_len = 4 + 4 * dims.len();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::invalid_data(path, format!("the header is invalid: the product of the dimension sizes {dims:?} overflows usize"))
        })?;
    let found = bytes.len() - header_len;
    if found != expected {
        let (problem, advice) = if found < expected {
            (
                "the payload is truncated",
                "download or copy the file again",
            )
        } else {
            (
                "the file has trailing bytes",
                "check that it contains a single IDX array",
            )
        };
        return Err(Error::invalid_data(
            path,
            format!(
                "{problem}: the header declares dimensions {dims:?}, so expected {expected} bytes \
                 after the {header_len}-byte header, found {found}; {advice}"
            ),
        ));
    }

    let mut payload = bytes;
    payload.drain(..header_len);
    Ok((dims, payload))
}

/// Reads the whole file and, if it starts with the gzip magic bytes, decompresses it.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(bytes);
    }

    let mut decompressed = Vec::new();
    MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut decompressed)
        .map_err(|e| {
            Error::invalid_data(
                path,
                format!(
                    "the file starts with the gzip magic bytes 1F 8B, but the gzip stream is \
                     corrupt or truncated ({e}); download or copy the file again"
                ),
            )
        })?;
    Ok(decompressed)
}

/// Checks the magic number against `kind` and returns the dimension sizes.
fn parse_header(path: &Path, bytes: &[u8], kind: IdxKind) -> Result<Vec<usize>> {
    let Some(magic_bytes) = bytes.first_chunk::<4>() else {
        return Err(Error::invalid_data(
            path,
            format!(
                "the file is {} bytes long, too short for the 4-byte magic number of {}",
                bytes.len(),
                kind.description
            ),
        ));
    };
    let magic = u32::from_be_bytes(*magic_bytes);

    // A valid magic has two zero bytes first. Check the element type before the number of
    // dimensions, because an IDX file of another element type deserves a clearer message
    // than a bare magic mismatch.
    if magic_bytes[..2] == [0, 0] && magic_bytes[2] != UNSIGNED_BYTE {
        let type_code = magic_bytes[2];
        return Err(Error::invalid_data(
            path,
            format!(
                "element type code 0x{type_code:02X} ({}) is not supported; {} must contain \
                 unsigned bytes (type code 0x08)",
                element_type_name(type_code),
                kind.description
            ),
        ));
    }
    if magic != kind.magic {
        return Err(Error::invalid_data(path, wrong_magic_message(magic, kind)));
    }

    let num_dims = usize::from(magic_bytes[3]);
    let header_len = 4 + 4 * num_dims;
    if bytes.len() < header_len {
        return Err(Error::invalid_data(
            path,
            format!(
                "the header is truncated: expected {header_len} bytes for the magic number and \
                 {num_dims} dimension sizes, found {}",
                bytes.len()
            ),
        ));
    }

    let dims = bytes[4..header_len]
        .chunks_exact(4)
        .map(|size| u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize)
        .collect();
    Ok(dims)
}

fn wrong_magic_message(found: u32, kind: IdxKind) -> String {
    let mut message = format!(
        "wrong magic number 0x{found:08X}, expected 0x{:08X} ({})",
        kind.magic, kind.description
    );

    // Decompressed content that starts with 1F 8B again was compressed twice.
    if found.to_be_bytes()[..2] == GZIP_MAGIC {
        message.push_str(
            "; the decompressed content starts with the gzip magic bytes 1F 8B again, so the \
             file is compressed twice: decompress it once with gunzip",
        );
    } else if found == IMAGES_MAGIC || found == LABELS_MAGIC {
        message.push_str("; check that the image and label paths are not swapped");
    }
    message
}

fn element_type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "16-bit integer",
        0x0C => "32-bit integer",
        0x0D => "32-bit float",
        0x0E => "64-bit float",
        _ => "unknown type",
    }
}

fn write_idx(
    path: &Path,
    op: &'static str,
    dims: &[usize],
    payload: &[u8],
    gzip: bool,
) -> Result<()> {
    let mut header = vec![0, 0, UNSIGNED_BYTE];
    let num_dims = u8::try_from(dims.len()).map_err(|_| Error::Shape {
        op,
        message: format!("IDX files have at most 255 dimensions, got {}", dims.len()),
    })?;
    header.push(num_dims);
    for &size in dims {
        let size = u32::try_from(size).map_err(|_| Error::Shape {
            op,
            message: format!("IDX dimension sizes must fit in a u32, got {size}"),
        })?;
        header.extend_from_slice(&size.to_be_bytes());
    }

    let io_err = |e| Error::io(path, e);
    let file = BufWriter::new(File::create(path).map_err(io_err)?);
    if gzip {
        let mut encoder = GzEncoder::new(file, Compression::default());
        encoder.write_all(&header).map_err(io_err)?;
        encoder.write_all(payload).map_err(io_err)?;
        encoder.finish().map_err(io_err)?.flush().map_err(io_err)?;
    } else {
        let mut file = file;
        file.write_all(&header).map_err(io_err)?;
        file.write_all(payload).map_err(io_err)?;
        file.flush().map_err(io_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path in the temporary directory whose file is removed when dropped.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str) -> Self {
            let name = format!("dendrite-idx-unit-{}-{name}", std::process::id());
            TempFile(std::env::temp_dir().join(name))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn header_error(bytes: &[u8], kind: IdxKind) -> String {
        parse_header(Path::new("test.idx"), bytes, kind)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn header_parses_dimensions() {
        let bytes = [0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 5];

        let dims = parse_header(Path::new("test.idx"), &bytes, IMAGES).unwrap();

        assert_eq!(dims, vec![2, 4, 5]);
    }

    #[test]
    fn header_rejects_wrong_magic() {
        let message = header_error(&[0x12, 0x34, 0x56, 0x78], IMAGES);

        assert!(
            message.contains("wrong magic number 0x12345678, expected 0x00000803 (IDX images)"),
            "{message}"
        );
    }

    #[test]
    fn header_hints_at_swapped_files() {
        let message = header_error(&[0, 0, 8, 3], LABELS);

        assert!(
            message.contains("0x00000803, expected 0x00000801"),
            "{message}"
        );
        assert!(message.contains("swapped"), "{message}");
    }

    #[test]
    fn header_hints_at_double_gzip() {
        let message = header_error(&[0x1F, 0x8B, 8, 0], LABELS);

        assert!(message.contains("0x1F8B0800"), "{message}");
        assert!(message.contains("compressed twice"), "{message}");
    }

    #[test]
    fn header_names_element_type() {
        let message = header_error(&[0, 0, 0x0D, 3], IMAGES);

        assert!(
            message.contains("type code 0x0D (32-bit float)"),
            "{message}"
        );
    }

    #[test]
    fn header_rejects_short_inputs() {
        let message = header_error(&[0, 0], IMAGES);
        assert!(message.contains("2 bytes long"), "{message}");

        let message = header_error(&[0, 0, 8, 3, 0, 0, 0, 1], IMAGES);
        assert!(message.contains("expected 16 bytes"), "{message}");
        assert!(message.contains("found 8"), "{message}");
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let file = TempFile::new("trailing-labels");
        std::fs::write(&file.0, [0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3]).unwrap();

        let message = read_idx_labels(&file.0).unwrap_err().to_string();

        assert!(message.contains("trailing bytes"), "{message}");
        assert!(message.contains("expected 2 bytes"), "{message}");
        assert!(message.contains("found 3"), "{message}");
    }

    #[test]
    fn zero_sized_images_are_rejected() {
        let file = TempFile::new("zero-width-images");
        std::fs::write(&file.0, [0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 0]).unwrap();

        let message = read_idx_images(&file.0).unwrap_err().to_string();

        assert!(message.contains("image size 4x0 is invalid"), "{message}");
    }

    #[test]
    fn writer_rejects_out_of_range_pixels() {
        let images = Tensor::from_vec(&[1, 1, 2], vec![0.5, 1.5]);

        let file = TempFile::new("bad-pixels");

        let message = write_idx_images(&file.0, &images, false)
            .unwrap_err()
            .to_string();

        assert!(message.contains("pixel value 1.5 at index 1"), "{message}");
    }

    #[test]
    fn labels_round_trip() {
        let file = TempFile::new("labels-round-trip.gz");
        let labels = [3, 1, 4, 1, 5];

        write_idx_labels(&file.0, &labels, true).unwrap();

        assert_eq!(read_idx_labels(&file.0).unwrap(), labels);
    }
}
