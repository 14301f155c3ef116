//! Helpers shared by the integration tests: running the real `dendrite` binary, temporary
//! folders, and configs that point at the MNIST files in `data/mnist`.

// Each test file compiles this module on its own and uses only some of the helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Returns the repository root, which contains `data/` and `examples/`.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// Returns the absolute path of `relative` under the repository root.
pub fn repo_path(relative: &str) -> PathBuf {
    repo_root().join(relative)
}

/// Returns the path of `relative` under this crate's `tests/fixtures`.
pub fn fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// A temporary folder, removed when dropped. Each instance gets its own folder, so tests
/// that run in parallel do not share files.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(test: &str) -> Self {
        static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("dendrite-cli-{test}-{}-{id}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("the temporary folder can be created");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the path of `name` inside the folder, without creating it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the folder and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, contents).expect("the temporary file can be written");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The outcome of one run of the binary.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with both output streams unless the command exited with 0.
    pub fn assert_success(&self) {
        assert_eq!(
            self.code,
            Some(0),
            "dendrite failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `dendrite ARGS` in the repository root, as a user of the checkout would.
pub fn dendrite<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = Command::new(env!("CARGO_BIN_EXE_dendrite"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("the dendrite binary starts");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `dendrite train CONFIG --out OUT --quiet`.
pub fn train(config: &Path, out: &Path) -> Run {
    dendrite([
        "train".as_ref(),
        config.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--quiet".as_ref(),
    ])
}

/// Writes a config for a network without hidden layers (flattened image to `units` logits)
/// on IDX images and labels, trained for 1 epoch. `extra_data` is added to the `[data]` table.
pub fn idx_config(
    dir: &TempDir,
    images: &Path,
    labels: &Path,
    extra_data: &str,
    units: usize,
) -> PathBuf {
    let text = format!(
        r#"[data]
format = "idx"
train_images = "{images}"
train_labels = "{labels}"
{extra_data}

[model]
layers = [
  {{ type = "flatten" }},
  {{ type = "dense", units = {units} }},
]

[training]
epochs = 1
batch_size = 64
loss = "cross_entropy"

[training.optimizer]
type = "sgd"
learning_rate = 0.05
"#,
        images = toml_path(images),
        labels = toml_path(labels),
    );
    dir.write("config.toml", text)
}

/// Writes a copy of `examples/mnist-mlp.toml` with absolute data paths and the given
/// `epochs` and SGD `learning_rate`.
pub fn mnist_config(dir: &TempDir, epochs: usize, learning_rate: &str) -> PathBuf {
    let example = std::fs::read_to_string(repo_path("examples/mnist-mlp.toml"))
        .expect("examples/mnist-mlp.toml is readable");
    let data_dir = toml_path(&repo_path("data"));
    let mut lines = Vec::new();
    for line in example.lines() {
        let line = if line.starts_with("epochs = ") {
            format!("epochs = {epochs}")
        } else if line.starts_with("learning_rate = ") {
            format!("learning_rate = {learning_rate}")
        } else {
            line.replace("\"../data", &format!("\"{data_dir}"))
        };
        lines.push(line);
    }
    let text = lines.join("\n");
    assert!(
        text.contains(&format!("epochs = {epochs}"))
            && text.contains(&format!("learning_rate = {learning_rate}"))
            && !text.contains("../data"),
        "examples/mnist-mlp.toml changed its layout; update mnist_config:\n{text}"
    );
    dir.write("mnist.toml", text)
}

/// Writes a copy of `examples/<name>.toml` into `dir` with absolute data paths.
///
/// Each change `(prefix, text)` replaces the first line that starts with `prefix` by `text`,
/// which may span several lines. A prefix that no line has panics, so the tests notice when
/// an example changes its layout.
pub fn example_config(dir: &TempDir, name: &str, changes: &[(&str, &str)]) -> PathBuf {
    let path = repo_path(&format!("examples/{name}.toml"));
    let example = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let data_dir = toml_path(&repo_path("data"));

    let mut lines: Vec<String> = example
        .lines()
        .map(|line| line.replace("\"../data", &format!("\"{data_dir}")))
        .collect();
    for (prefix, text) in changes {
        let line = lines
            .iter_mut()
            .find(|line| line.starts_with(prefix))
            .unwrap_or_else(|| panic!("examples/{name}.toml has no line starting with {prefix:?}"));
        *line = text.to_string();
    }
    dir.write(&format!("{name}.toml"), lines.join("\n") + "\n")
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Formats a path for a TOML basic string.
pub fn toml_path(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// Loads the model in `dir` through the library and returns each parameter's name, shape
/// and values.
pub fn load_params(dir: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let saved = dendrite::model::load(dir)
        .unwrap_or_else(|e| panic!("cannot load the model in {}: {e}", dir.display()));
    saved
        .model
        .params()
        .iter()
        .map(|(name, tensor)| {
            (
                name.to_string(),
                tensor.shape().to_vec(),
                tensor.data().to_vec(),
            )
        })
        .collect()
}

/// Parses the CSV that `dendrite predict` writes and returns the `predicted` column.
pub fn predicted_column(csv: &str) -> Vec<String> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("a header row").split(',').collect();
    let column = header
        .iter()
        .position(|&name| name == "predicted")
        .unwrap_or_else(|| panic!("no predicted column in header {header:?}"));
    lines
        .map(|line| {
            line.split(',')
                .nth(column)
                .expect("a predicted cell")
                .to_string()
        })
        .collect()
}
