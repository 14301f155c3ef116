//! Image folder loading: layout and ordering, color conversion, resizing, a round trip of MNIST
//! digits through PNG files, the fixture of images with different sizes, and one test per kind
//! of bad input.

use std::path::{Path, PathBuf};

use dendrite::data::{
    BadFilePolicy, ColorMode, ImageFolder, ImageFolderConfig, load_image_folder, read_idx_images,
    read_idx_labels, write_png_folder,
};
use dendrite::error::Error;
use dendrite::tensor::Tensor;
use image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/image-folder")
        .join(relative)
}

/// A temporary directory that is removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "dendrite-image-folder-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Creates the folder `relative` (and its parents) and returns its path.
    fn dir(&self, relative: &str) -> PathBuf {
        let path = self.0.join(relative);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// Writes `contents` to `relative`, creating parent folders, and returns its path.
    fn file(&self, relative: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Writes a grayscale PNG of `height x width` pixels, all set to `value`.
    fn gray_png(&self, relative: &str, (height, width): (u32, u32), value: u8) -> PathBuf {
        let image = GrayImage::from_pixel(width, height, Luma([value]));
        self.save(relative, image.into())
    }

    /// Writes an RGB PNG of `height x width` pixels, all set to `rgb`.
    fn rgb_png(&self, relative: &str, (height, width): (u32, u32), rgb: [u8; 3]) -> PathBuf {
        let image = RgbImage::from_pixel(width, height, Rgb(rgb));
        self.save(relative, image.into())
    }

    /// Saves `image` in the format given by the extension of `relative`.
    fn save(&self, relative: &str, image: image::DynamicImage) -> PathBuf {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let format = image::ImageFormat::from_path(&path).unwrap();
        image.save_with_format(&path, format).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gray() -> ImageFolderConfig {
    ImageFolderConfig {
        color: ColorMode::Grayscale,
        ..ImageFolderConfig::default()
    }
}

fn rgb() -> ImageFolderConfig {
    ImageFolderConfig {
        color: ColorMode::Rgb,
        ..ImageFolderConfig::default()
    }
}

fn file_names(folder: &ImageFolder) -> Vec<String> {
    folder
        .paths
        .iter()
        .map(|path| {
            let class = path
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap();
            let file = path.file_name().unwrap().to_str().unwrap();
            format!("{class}/{file}")
        })
        .collect()
}

fn class_counts(folder: &ImageFolder) -> Vec<usize> {
    let mut counts = vec![0; folder.dataset.num_classes().unwrap()];
    for &label in folder.dataset.labels().unwrap() {
        counts[label] += 1;
    }
    counts
}

fn assert_invalid_data_at(err: &Error, expected_path: &Path) {
    match err {
        Error::InvalidData { path, .. } => assert_eq!(path, expected_path, "{err}"),
        other => panic!(
            "expected InvalidData for {}, got {other:?}",
            expected_path.display()
        ),
    }
}

#[test]
fn classes_and_files_sorted_by_name() {
    let dir = TempDir::new("sorted");
    dir.gray_png("zebra/b.png", (2, 2), 10);
    dir.gray_png("zebra/a.PNG", (2, 2), 20);
    dir.gray_png("ant/10.png", (2, 2), 30);
    dir.gray_png("ant/9.png", (2, 2), 40);
    dir.save(
        "ant/photo.JPG",
        GrayImage::from_pixel(2, 2, Luma([128])).into(),
    );

    let folder = load_image_folder(dir.path(), &gray()).unwrap();

    assert_eq!(
        folder.dataset.class_names().unwrap(),
        &["ant".to_string(), "zebra".to_string()]
    );
    assert_eq!(
        file_names(&folder),
        [
            "ant/10.png",
            "ant/9.png",
            "ant/photo.JPG",
            "zebra/a.PNG",
            "zebra/b.png"
        ]
    );
    assert_eq!(folder.dataset.labels().unwrap(), &[0, 0, 0, 1, 1]);
    assert_eq!(folder.dataset.features.shape(), &[5, 1, 2, 2]);
    assert_eq!(folder.dataset.features.data()[0], 30.0 / 255.0);
    assert_eq!(folder.dataset.features.data()[12], 20.0 / 255.0);
    assert!(folder.skipped.is_empty());
    assert!(folder.resized.is_empty());
}

#[test]
fn jpeg_values_are_close() {
    let dir = TempDir::new("jpeg");
    dir.save("a/x.jpeg", GrayImage::from_pixel(8, 8, Luma([100])).into());
    dir.gray_png("b/y.png", (8, 8), 0);

    let folder = load_image_folder(dir.path(), &gray()).unwrap();

    let first = &folder.dataset.features.data()[..64];
    for &value in first {
        assert!((value - 100.0 / 255.0).abs() < 3.0 / 255.0, "{value}");
    }
}

#[test]
fn other_and_hidden_entries_ignored() {
    let dir = TempDir::new("ignored");
    dir.gray_png("a/x.png", (2, 2), 1);
    dir.gray_png("b/y.png", (2, 2), 2);
    dir.file("a/notes.txt", b"not an image");
    dir.file("a/README", b"no extension");
    dir.file("a/.hidden.png", b"hidden and not a PNG");
    dir.gray_png("a/nested/z.png", (2, 2), 3);
    dir.gray_png(".cache/w.png", (2, 2), 4);
    dir.file("labels.csv", b"file next to the class folders");

    let folder = load_image_folder(dir.path(), &gray()).unwrap();

    assert_eq!(file_names(&folder), ["a/x.png", "b/y.png"]);
    assert_eq!(folder.dataset.num_classes(), Some(2));
}

#[test]
fn gray_and_rgb_mix_as_grayscale() {
    let dir = TempDir::new("mix-gray");
    dir.gray_png("a/gray.png", (2, 3), 51);
    dir.rgb_png("b/color.png", (2, 3), [255, 0, 0]);
    let rgba = RgbaImage::from_pixel(3, 2, Rgba([0, 255, 0, 7]));
    dir.save("b/with-alpha.png", rgba.into());

    let folder = load_image_folder(dir.path(), &gray()).unwrap();
    let data = folder.dataset.features.data();

    assert_eq!(folder.dataset.features.shape(), &[3, 1, 2, 3]);
    assert!(data[..6].iter().all(|&v| v == 51.0 / 255.0), "{data:?}");
    // Rec. 709 luma is 0.2126 for pure red and 0.7152 for pure green. The alpha value does
    // not matter.
    assert!(
        data[6..12].iter().all(|&v| (v - 0.2126).abs() < 1e-4),
        "{data:?}"
    );
    assert!(
        data[12..].iter().all(|&v| (v - 0.7152).abs() < 1e-4),
        "{data:?}"
    );
}

#[test]
fn gray_and_rgb_mix_as_rgb() {
    let dir = TempDir::new("mix-rgb");
    dir.gray_png("a/gray.png", (2, 3), 51);
    dir.rgb_png("b/color.png", (2, 3), [255, 0, 102]);

    let folder = load_image_folder(dir.path(), &rgb()).unwrap();
    let data = folder.dataset.features.data();

    assert_eq!(folder.dataset.features.shape(), &[2, 3, 2, 3]);
    assert!(data[..18].iter().all(|&v| v == 51.0 / 255.0), "{data:?}");
    assert!(data[18..24].iter().all(|&v| v == 1.0), "{data:?}");
    assert!(data[24..30].iter().all(|&v| v == 0.0), "{data:?}");
    assert!(data[30..36].iter().all(|&v| v == 102.0 / 255.0), "{data:?}");
}

#[test]
fn rgb_features_are_nchw() {
    let dir = TempDir::new("nchw");
    let mut image = RgbImage::new(2, 1);
    image.put_pixel(0, 0, Rgb([10, 20, 30]));
    image.put_pixel(1, 0, Rgb([40, 50, 60]));
    dir.save("a/x.png", image.into());
    dir.rgb_png("b/y.png", (1, 2), [0, 0, 0]);

    let folder = load_image_folder(dir.path(), &rgb()).unwrap();

    let expected: Vec<f32> = [10, 40, 20, 50, 30, 60]
        .iter()
        .map(|&v| v as f32 / 255.0)
        .collect();
    assert_eq!(&folder.dataset.features.data()[..6], &expected[..]);
}

#[test]
fn mnist_round_trip_through_png() {
    let images = read_idx_images(repo_path("data/mnist/t10k-images-idx3-ubyte.gz")).unwrap();
    let labels = read_idx_labels(repo_path("data/mnist/t10k-labels-idx1-ubyte.gz")).unwrap();
    let count = 30;
    let images = images.gather_rows(&(0..count).collect::<Vec<_>>());
    let labels: Vec<usize> = labels[..count].iter().map(|&l| usize::from(l)).collect();
    let class_names: Vec<String> = (0..10).map(|digit| digit.to_string()).collect();
    let dir = TempDir::new("mnist");

    write_png_folder(&images, &labels, &class_names, dir.path()).unwrap();
    let folder = load_image_folder(dir.path(), &gray()).unwrap();

    assert_eq!(folder.dataset.features.shape(), &[count, 1, 28, 28]);
    let loaded_names = folder.dataset.class_names().unwrap();
    let loaded_labels = folder.dataset.labels().unwrap();
    let pixels = 28 * 28;
    for (row, path) in folder.paths.iter().enumerate() {
        // The file name is the row index in the IDX file.
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let index: usize = stem.parse().unwrap();
        assert_eq!(stem.len(), 2, "indices are padded to 2 digits: {stem}");
        assert_eq!(
            loaded_names[loaded_labels[row]],
            class_names[labels[index]],
            "{}",
            path.display()
        );
        assert_eq!(
            &folder.dataset.features.data()[row * pixels..(row + 1) * pixels],
            &images.data()[index * pixels..(index + 1) * pixels],
            "{}",
            path.display()
        );
    }
}

#[test]
fn write_png_folder_rejects_bad_input() {
    let dir = TempDir::new("write-bad");
    let names: Vec<String> = vec!["a".into(), "b".into()];
    let images = Tensor::full(&[2, 2, 2], 0.5);

    let err = write_png_folder(&Tensor::zeros(&[2, 4]), &[0, 1], &names, dir.path()).unwrap_err();
    assert!(err.to_string().contains("[n, height, width]"), "{err}");

    let err = write_png_folder(&images, &[0], &names, dir.path()).unwrap_err();
    assert!(err.to_string().contains("2 images but 1 labels"), "{err}");

    let err = write_png_folder(&images, &[0, 2], &names, dir.path()).unwrap_err();
    assert!(err.to_string().contains("label 2 in row 1"), "{err}");

    let hidden: Vec<String> = vec!["a".into(), ".b".into()];
    let err = write_png_folder(&images, &[0, 1], &hidden, dir.path()).unwrap_err();
    assert!(err.to_string().contains("starts with `.`"), "{err}");

    let nested: Vec<String> = vec!["a".into(), "b/c".into()];
    let err = write_png_folder(&images, &[0, 1], &nested, dir.path()).unwrap_err();
    assert!(err.to_string().contains("path separator"), "{err}");

    let too_bright = Tensor::full(&[2, 2, 2], 1.5);
    let err = write_png_folder(&too_bright, &[0, 1], &names, dir.path()).unwrap_err();
    assert!(err.to_string().contains("outside [0, 1]"), "{err}");

    let empty = std::fs::read_dir(dir.path()).unwrap().next().is_none();
    assert!(empty, "a rejected call wrote files");
}

#[test]
fn config_reads_from_toml() {
    let config: ImageFolderConfig = toml::from_str(
        r#"
        color = "grayscale"
        size = [28, 32]
        on_bad_file = "skip"
        "#,
    )
    .unwrap();

    assert_eq!(
        config,
        ImageFolderConfig {
            color: ColorMode::Grayscale,
            size: Some((28, 32)),
            on_bad_file: BadFilePolicy::Skip,
        }
    );
    let empty: ImageFolderConfig = toml::from_str("").unwrap();
    assert_eq!(empty, ImageFolderConfig::default());
    assert_eq!(empty.color, ColorMode::Rgb);
    assert_eq!(empty.on_bad_file, BadFilePolicy::Stop);

    let err = toml::from_str::<ImageFolderConfig>("colour = \"rgb\"").unwrap_err();
    assert!(err.to_string().contains("unknown field `colour`"), "{err}");
    let err = toml::from_str::<ImageFolderConfig>("color = \"RGB\"").unwrap_err();
    assert!(err.to_string().contains("unknown variant `RGB`"), "{err}");
}

// Bad input, one test per kind.

#[test]
fn missing_root_is_io_error() {
    let dir = TempDir::new("missing-root");
    let root = dir.path().join("does-not-exist");

    let err = load_image_folder(&root, &gray()).unwrap_err();

    match &err {
        Error::Io { path, source } => {
            assert_eq!(path, &root);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn root_that_is_file_rejected() {
    let dir = TempDir::new("root-file");
    let file = dir.gray_png("a.png", (2, 2), 0);

    let err = load_image_folder(&file, &gray()).unwrap_err();

    assert_invalid_data_at(&err, &file);
    assert!(err.to_string().contains("is not a folder"), "{err}");
}

#[test]
fn empty_class_folder_rejected() {
    let dir = TempDir::new("empty-class");
    dir.gray_png("a/x.png", (2, 2), 0);
    let empty = dir.dir("b");
    dir.file("b/notes.txt", b"not an image");

    let err = load_image_folder(dir.path(), &gray()).unwrap_err();

    assert_invalid_data_at(&err, &empty);
    assert!(err.to_string().contains("contains no images"), "{err}");
}

#[test]
fn one_class_rejected() {
    let dir = TempDir::new("one-class");
    dir.gray_png("digits/x.png", (2, 2), 0);

    let err = load_image_folder(dir.path(), &gray()).unwrap_err();

    assert_invalid_data_at(&err, dir.path());
    let expected = format!(
        "found 1 class folder (digits) in {}; a classifier needs at least 2",
        dir.path().display()
    );
    assert!(err.to_string().contains(&expected), "{err}");
}

#[test]
fn no_class_rejected() {
    let dir = TempDir::new("no-class");
    dir.gray_png("loose.png", (2, 2), 0);

    let err = load_image_folder(dir.path(), &gray()).unwrap_err();

    assert!(err.to_string().contains("found 0 class folders"), "{err}");
}

#[test]
fn corrupt_png_stops_by_default() {
    let dir = TempDir::new("corrupt-stop");
    dir.gray_png("a/good.png", (2, 2), 0);
    dir.gray_png("b/good.png", (2, 2), 0);
    let bad = dir.file(
        "b/bad.png",
        &[0x13, 0x7F, 0xA2, 0x00, 0x5C, 0xE1, 0x09, 0x44],
    );

    let err = load_image_folder(dir.path(), &gray()).unwrap_err();

    assert_invalid_data_at(&err, &bad);
    assert!(err.to_string().contains("cannot decode image"), "{err}");
}

#[test]
fn truncated_png_stops_with_decoder_message() {
    let dir = TempDir::new("truncated");
    let good = dir.gray_png("a/good.png", (4, 4), 9);
    dir.gray_png("b/good.png", (4, 4), 0);
    let bytes = std::fs::read(&good).unwrap();
    let bad = dir.file("b/cut.png", &bytes[..bytes.len() / 2]);

    let err = load_image_folder(dir.path(), &gray()).unwrap_err();

    let message = err.to_string();
    assert!(message.starts_with(&bad.display().to_string()), "{message}");
    assert!(message.contains("cannot decode image: "), "{message}");
}

#[test]
fn corrupt_png_skipped_with_skip() {
    let dir = TempDir::new("corrupt-skip");
    dir.gray_png("a/good.png", (2, 2), 0);
    dir.gray_png("b/good.png", (2, 2), 0);
    let bad = dir.file(
        "b/bad.png",
        &[0x13, 0x7F, 0xA2, 0x00, 0x5C, 0xE1, 0x09, 0x44],
    );
    let config = ImageFolderConfig {
        on_bad_file: BadFilePolicy::Skip,
        ..gray()
    };

    let folder = load_image_folder(dir.path(), &config).unwrap();

    assert_eq!(folder.dataset.len(), 2);
    assert_eq!(file_names(&folder), ["a/good.png", "b/good.png"]);
    assert_eq!(folder.skipped.len(), 1);
    assert_eq!(folder.skipped[0].0, bad);
    assert!(
        folder.skipped[0].1.contains("cannot decode image"),
        "{}",
        folder.skipped[0].1
    );
}

#[test]
fn class_with_only_bad_files_rejected() {
    let dir = TempDir::new("all-skipped");
    dir.gray_png("a/good.png", (2, 2), 0);
    let class_dir = dir.dir("b");
    dir.file("b/bad.png", b"not a PNG");
    let config = ImageFolderConfig {
        on_bad_file: BadFilePolicy::Skip,
        ..gray()
    };

    let err = load_image_folder(dir.path(), &config).unwrap_err();

    assert_invalid_data_at(&err, &class_dir);
    assert!(err.to_string().contains("1 files skipped"), "{err}");
}

#[test]
fn different_sizes_without_size_rejected() {
    let dir = TempDir::new("sizes-error");
    dir.gray_png("a/1.png", (4, 4), 0);
    let odd = dir.gray_png("a/2.png", (3, 5), 0);
    dir.gray_png("b/1.png", (4, 4), 0);

    let err = load_image_folder(dir.path(), &gray()).unwrap_err();

    assert_invalid_data_at(&err, &odd);
    let message = err.to_string();
    assert!(
        message.contains("image is 3x5 (height x width)"),
        "{message}"
    );
    assert!(
        message.contains("most images in the folder are 4x4"),
        "{message}"
    );
    assert!(message.contains("set `size = [4, 4]`"), "{message}");
}

#[test]
fn odd_first_image_named() {
    let dir = TempDir::new("sizes-first");
    let odd = dir.gray_png("a/1.png", (6, 6), 0);
    dir.gray_png("a/2.png", (4, 4), 0);
    dir.gray_png("b/1.png", (4, 4), 0);

    let err = load_image_folder(dir.path(), &gray()).unwrap_err();

    assert_invalid_data_at(&err, &odd);
}

#[test]
fn different_sizes_resized_with_size() {
    let dir = TempDir::new("sizes-resize");
    dir.gray_png("a/1.png", (4, 4), 200);
    let odd = dir.gray_png("a/2.png", (3, 5), 100);
    dir.rgb_png("b/1.png", (8, 2), [0, 0, 0]);
    let config = ImageFolderConfig {
        size: Some((4, 4)),
        ..gray()
    };

    let folder = load_image_folder(dir.path(), &config).unwrap();

    assert_eq!(folder.dataset.features.shape(), &[3, 1, 4, 4]);
    let data = folder.dataset.features.data();
    assert!(data[..16].iter().all(|&v| v == 200.0 / 255.0));
    // Resizing a constant image keeps its value.
    for &value in &data[16..32] {
        assert!((value - 100.0 / 255.0).abs() < 1e-6, "{value}");
    }
    let resized: Vec<_> = folder
        .resized
        .iter()
        .map(|image| (image.path.clone(), image.original_size))
        .collect();
    assert_eq!(
        resized,
        [(odd, (3, 5)), (dir.path().join("b/1.png"), (8, 2))]
    );
}

#[test]
fn zero_size_config_rejected() {
    let dir = TempDir::new("zero-size");
    dir.gray_png("a/1.png", (2, 2), 0);
    dir.gray_png("b/1.png", (2, 2), 0);
    let config = ImageFolderConfig {
        size: Some((0, 4)),
        ..gray()
    };

    let err = load_image_folder(dir.path(), &config).unwrap_err();

    assert!(matches!(err, Error::InvalidConfig(_)), "{err:?}");
    assert!(err.to_string().contains("[0, 4]"), "{err}");
}

// The fixture `different-sizes` contains eight 8x8 RGB PNGs and one 12x10 (width x height) PNG,
// `dog/dog_big.png`. Loading must either resize every image to one size and report the
// resized file, or fail before training with the file name and its size.

#[test]
fn fixture_different_sizes_error_names_file() {
    let root = fixture("different-sizes");

    let err = load_image_folder(&root, &rgb()).unwrap_err();

    assert_invalid_data_at(&err, &root.join("dog/dog_big.png"));
    let message = err.to_string();
    assert!(message.contains("dog_big.png"), "{message}");
    assert!(
        message.contains("image is 10x12 (height x width)"),
        "{message}"
    );
    assert!(message.contains("set `size = [8, 8]`"), "{message}");
}

#[test]
fn fixture_different_sizes_resized() {
    let root = fixture("different-sizes");
    let config = ImageFolderConfig {
        size: Some((8, 8)),
        ..rgb()
    };

    let folder = load_image_folder(&root, &config).unwrap();

    assert_eq!(folder.dataset.features.shape(), &[9, 3, 8, 8]);
    assert_eq!(
        folder.dataset.class_names().unwrap(),
        &["cat".to_string(), "dog".to_string()]
    );
    assert_eq!(class_counts(&folder), [4, 5]);
    assert_eq!(folder.resized.len(), 1);
    assert_eq!(folder.resized[0].path, root.join("dog/dog_big.png"));
    assert_eq!(folder.resized[0].original_size, (10, 12));
    let features = &folder.dataset.features;
    assert!(features.is_finite());
    assert!(features.data().iter().all(|v| (0.0..=1.0).contains(v)));
}
