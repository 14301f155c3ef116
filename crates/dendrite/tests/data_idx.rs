//! IDX reading against the MNIST files in `data/mnist`, round trips through the writer, the
//! fixture of gzip data under raw names, and one test per kind of bad input.

use std::path::{Path, PathBuf};

use dendrite::data::{
    MNIST_NUM_CLASSES, load_idx_dataset, read_idx_images, read_idx_labels, write_idx_images,
    write_idx_labels,
};
use dendrite::error::Error;
use dendrite::tensor::Tensor;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// A temporary directory that is removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dendrite-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds raw IDX bytes: the magic number, the dimension sizes and the payload.
fn idx_bytes(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut bytes = magic.to_be_bytes().to_vec();
    for size in dims {
        bytes.extend_from_slice(&size.to_be_bytes());
    }
    bytes.extend_from_slice(payload);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;

    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Returns 3 images of 2x3 pixels whose values are multiples of 1/255.
fn sample_images() -> Tensor {
    let pixels = (0..18u32).map(|i| (i * 15) as f32 / 255.0).collect();
    Tensor::from_vec(&[3, 2, 3], pixels)
}

fn class_counts(labels: &[usize]) -> Vec<usize> {
    let mut counts = vec![0; MNIST_NUM_CLASSES];
    for &label in labels {
        counts[label] += 1;
    }
    counts
}

#[test]
fn round_trip_raw() {
    let dir = TempDir::new("round-trip-raw");
    let (images_path, labels_path) = (dir.0.join("images"), dir.0.join("labels"));

    write_idx_images(&images_path, &sample_images(), false).unwrap();
    write_idx_labels(&labels_path, &[2, 0, 1], false).unwrap();

    assert_eq!(
        std::fs::read(&labels_path).unwrap(),
        idx_bytes(0x801, &[3], &[2, 0, 1])
    );
    assert_eq!(read_idx_images(&images_path).unwrap(), sample_images());
    assert_eq!(read_idx_labels(&labels_path).unwrap(), vec![2, 0, 1]);
}

#[test]
fn round_trip_gzip() {
    let dir = TempDir::new("round-trip-gzip");
    let (images_path, labels_path) = (dir.0.join("images.gz"), dir.0.join("labels.gz"));

    write_idx_images(&images_path, &sample_images(), true).unwrap();
    write_idx_labels(&labels_path, &[2, 0, 1], true).unwrap();

    assert_eq!(&std::fs::read(&images_path).unwrap()[..2], &[0x1F, 0x8B]);
    assert_eq!(read_idx_images(&images_path).unwrap(), sample_images());
    assert_eq!(read_idx_labels(&labels_path).unwrap(), vec![2, 0, 1]);

    let dataset = load_idx_dataset(&images_path, &labels_path, 3).unwrap();
    assert_eq!(dataset.features, sample_images());
    assert_eq!(dataset.labels(), Some(&[2, 0, 1][..]));
    assert_eq!(dataset.class_names().unwrap(), ["0", "1", "2"]);
}

#[test]
fn mnist_train_counts() {
    let dataset = load_idx_dataset(
        repo_path("data/mnist/train-images-idx3-ubyte.gz"),
        repo_path("data/mnist/train-labels-idx1-ubyte.gz"),
        MNIST_NUM_CLASSES,
    )
    .unwrap();

    assert_eq!(dataset.features.shape(), &[10_000, 28, 28]);
    assert_eq!(dataset.feature_shape(), &[28, 28]);
    assert_eq!(dataset.num_classes(), Some(10));
    assert!(
        dataset
            .features
            .data()
            .iter()
            .all(|v| (0.0..=1.0).contains(v))
    );
    assert_eq!(
        class_counts(dataset.labels().unwrap()),
        vec![1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    );
}

#[test]
fn mnist_test_counts() {
    let dataset = load_idx_dataset(
        repo_path("data/mnist/t10k-images-idx3-ubyte.gz"),
        repo_path("data/mnist/t10k-labels-idx1-ubyte.gz"),
        MNIST_NUM_CLASSES,
    )
    .unwrap();

    assert_eq!(dataset.features.shape(), &[10_000, 28, 28]);
    assert_eq!(
        class_counts(dataset.labels().unwrap()),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
}

#[test]
fn gzip_under_raw_name() {
    let images = read_idx_images(fixture("gzip-under-raw-name/train-images-idx3-ubyte")).unwrap();
    let labels = read_idx_labels(fixture("gzip-under-raw-name/train-labels-idx1-ubyte")).unwrap();
    let reference_images = read_idx_images(fixture(
        "gzip-under-raw-name/reference/train-images-idx3-ubyte",
    ))
    .unwrap();
    let reference_labels = read_idx_labels(fixture(
        "gzip-under-raw-name/reference/train-labels-idx1-ubyte",
    ))
    .unwrap();

    assert_eq!(images.shape(), &[6, 4, 4]);
    assert_eq!(images, reference_images);
    assert_eq!(labels, vec![0, 1, 2, 0, 1, 2]);
    assert_eq!(labels, reference_labels);
}

#[test]
fn missing_file_names_path() {
    let path = repo_path("data/mnist/no-such-images-idx3-ubyte.gz");

    let err = read_idx_images(&path).unwrap_err();

    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("no-such-images-idx3-ubyte.gz"),
        "{err}"
    );
}

#[test]
fn truncated_gzip_is_an_error() {
    let dir = TempDir::new("truncated-gzip");
    let compressed = gzip(&idx_bytes(0x803, &[2, 4, 4], &[7; 32]));

    // Cut inside the deflate data, and cut only the 8-byte trailer (CRC and length).
    for (name, len) in [
        ("half", compressed.len() / 2),
        ("no-trailer", compressed.len() - 8),
    ] {
        let path = dir.file(name, &compressed[..len]);

        let err = read_idx_images(&path).unwrap_err();

        let message = err.to_string();
        assert!(
            matches!(err, Error::InvalidData { .. }),
            "{name}: {message}"
        );
        assert!(
            message.contains(&path.display().to_string()),
            "{name}: {message}"
        );
        assert!(
            message.contains("corrupt or truncated"),
            "{name}: {message}"
        );
    }
}

#[test]
fn corrupt_gzip_is_an_error() {
    let dir = TempDir::new("corrupt-gzip");
    let mut compressed = gzip(&idx_bytes(0x801, &[64], &[1; 64]));
    let crc_position = compressed.len() - 8;
    compressed[crc_position] ^= 0xFF;
    let path = dir.file("labels.gz", &compressed);

    let message = read_idx_labels(&path).unwrap_err().to_string();

    assert!(message.contains("corrupt or truncated"), "{message}");
}

#[test]
fn truncated_payload_is_an_error() {
    let dir = TempDir::new("truncated-payload");
    let path = dir.file("images", &idx_bytes(0x803, &[2, 4, 4], &[7; 20]));

    let message = read_idx_images(&path).unwrap_err().to_string();

    assert!(message.contains("payload is truncated"), "{message}");
    assert!(message.contains("expected 32 bytes"), "{message}");
    assert!(message.contains("found 20"), "{message}");
}

#[test]
fn wrong_magic_shows_hex() {
    let dir = TempDir::new("wrong-magic");
    let path = dir.file("images", &idx_bytes(0x1234_5678, &[], &[]));

    let message = read_idx_images(&path).unwrap_err().to_string();

    assert!(
        message.contains("wrong magic number 0x12345678, expected 0x00000803 (IDX images)"),
        "{message}"
    );
}

#[test]
fn swapped_files_show_both_magics() {
    let labels = repo_path("data/mnist/t10k-labels-idx1-ubyte.gz");

    let message = read_idx_images(&labels).unwrap_err().to_string();

    assert!(
        message.contains("0x00000801, expected 0x00000803"),
        "{message}"
    );
}

#[test]
fn wrong_element_type_is_named() {
    let dir = TempDir::new("wrong-type");
    let path = dir.file("images", &idx_bytes(0x0C03, &[1, 1, 1], &[0; 4]));

    let message = read_idx_images(&path).unwrap_err().to_string();

    assert!(message.contains("0x0C (32-bit integer)"), "{message}");
    assert!(message.contains("not supported"), "{message}");
}

#[test]
fn count_mismatch_names_both_files() {
    let dir = TempDir::new("count-mismatch");
    let images = dir.file("images", &idx_bytes(0x803, &[3, 1, 1], &[0; 3]));
    let labels = dir.file("labels", &idx_bytes(0x801, &[2], &[0; 2]));

    let message = load_idx_dataset(&images, &labels, 10)
        .unwrap_err()
        .to_string();

    assert!(
        message.contains(&format!("{}: contains 3 images", images.display())),
        "{message}"
    );
    assert!(
        message.contains(&format!("{} contains 2 labels", labels.display())),
        "{message}"
    );
}

#[test]
fn label_out_of_range_is_named() {
    let dir = TempDir::new("label-range");
    let images = dir.file("images", &idx_bytes(0x803, &[3, 1, 1], &[0; 3]));
    let labels = dir.file("labels", &idx_bytes(0x801, &[3], &[9, 0, 10]));

    let message = load_idx_dataset(&images, &labels, 10)
        .unwrap_err()
        .to_string();

    assert!(
        message.starts_with(&labels.display().to_string()),
        "{message}"
    );
    assert!(message.contains("label 10 at index 2"), "{message}");
    assert!(message.contains("for 10 classes"), "{message}");
}

#[test]
fn zero_classes_is_invalid_config() {
    let err = load_idx_dataset("images", "labels", 0).unwrap_err();

    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}
