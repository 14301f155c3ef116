use super::*;
use crate::nn::{Activation, Init};

fn small_model() -> Sequential {
    let specs = vec![
        LayerSpec::Dense {
            units: 5,
            activation: Some(Activation::Relu),
            init: Init::HeNormal,
            bias: true,
        },
        LayerSpec::Dense {
            units: 3,
            activation: None,
            init: Init::GlorotUniform,
            bias: true,
        },
    ];
    Sequential::new(&[4], specs, 11).unwrap()
}

fn classification() -> Task {
    Task::Classification {
        class_names: vec!["a".into(), "b".into(), "c".into()],
    }
}

fn info() -> ModelInfo {
    ModelInfo::new(Loss::CrossEntropy, classification())
}

#[test]
fn save_then_load_gives_identical_predictions() {
    let dir = tempdir("roundtrip");
    let model = small_model();
    save(&dir, &model, &info()).unwrap();
    let loaded = load(&dir).unwrap();

    let inputs = Tensor::from_vec(&[2, 4], vec![0.1, -0.2, 0.3, 0.4, 1.0, 2.0, -3.0, 0.5]);
    assert_eq!(
        model.predict(&inputs, 2).data(),
        loaded.model.predict(&inputs, 2).data()
    );
    assert_eq!(loaded.meta.task, classification());
    assert_eq!(loaded.model.params(), model.params());
    // Loading through the path of model.json works too.
    assert!(load(&dir.join(META_FILE)).is_ok());
}

#[test]
fn load_rejects_missing_tensor() {
    let dir = tempdir("missing-tensor");
    save(&dir, &small_model(), &info()).unwrap();
    let mut other = Parameters::new();
    other.push("layers.0.weight", Tensor::zeros(&[5, 4]));
    let bytes: Vec<u8> = vec![0; 5 * 4 * 4];
    let view = TensorView::new(Dtype::F32, vec![5, 4], &bytes).unwrap();
    fs::write(
        dir.join(WEIGHTS_FILE),
        safetensors::serialize(vec![("layers.0.weight", view)], None).unwrap(),
    )
    .unwrap();
    let message = load(&dir).unwrap_err().to_string();
    assert!(message.contains("layers.0.bias is missing"), "{message}");
}

#[test]
fn load_rejects_truncated_weights() {
    let dir = tempdir("truncated");
    save(&dir, &small_model(), &info()).unwrap();
    let path = dir.join(WEIGHTS_FILE);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let message = load(&dir).unwrap_err().to_string();
    assert!(message.contains("model.safetensors"), "{message}");
}

#[test]
fn load_rejects_unknown_format_version() {
    let dir = tempdir("version");
    save(&dir, &small_model(), &info()).unwrap();
    let path = dir.join(META_FILE);
    let text = fs::read_to_string(&path)
        .unwrap()
        .replace("\"format_version\": 2", "\"format_version\": 99");
    fs::write(&path, text).unwrap();
    let message = load(&dir).unwrap_err().to_string();
    assert!(message.contains("format version 99"), "{message}");
}

fn binary_model(decision_threshold: Option<DecisionThreshold>) -> (Sequential, ModelInfo) {
    let specs = vec![LayerSpec::Dense {
        units: 1,
        activation: None,
        init: Init::GlorotUniform,
        bias: true,
    }];
    let model = Sequential::new(&[2], specs, 3).unwrap();
    let mut info = ModelInfo::new(
        Loss::BinaryCrossEntropy,
        Task::Classification {
            class_names: vec!["bad".into(), "good".into()],
        },
    );
    info.decision_threshold = decision_threshold;
    (model, info)
}

#[test]
fn decision_threshold_round_trips() {
    let dir = tempdir("threshold");
    let (model, info) = binary_model(Some(DecisionThreshold {
        positive_class: "bad".into(),
        threshold: 0.3,
    }));

    save(&dir, &model, &info).unwrap();
    let loaded = load(&dir).unwrap();

    assert_eq!(loaded.meta.decision_threshold, info.decision_threshold);
    assert_eq!(
        loaded.meta.binary_decision().unwrap(),
        Some(BinaryDecision::new(0, 0.3).unwrap())
    );
}

#[test]
fn binary_model_without_threshold_uses_default() {
    let dir = tempdir("default-threshold");
    let (model, info) = binary_model(None);

    save(&dir, &model, &info).unwrap();

    let decision = load(&dir).unwrap().meta.binary_decision().unwrap();
    assert_eq!(decision, Some(BinaryDecision::default()));
}

#[test]
fn load_rejects_unknown_positive_class() {
    let dir = tempdir("bad-positive");
    let (model, info) = binary_model(Some(DecisionThreshold {
        positive_class: "ugly".into(),
        threshold: 0.5,
    }));
    save(&dir, &model, &info).unwrap();

    let message = load(&dir).unwrap_err().to_string();

    assert!(message.contains("model.json"), "{message}");
    assert!(
        message.contains("\"ugly\" is not one of the classes bad, good"),
        "{message}"
    );
}

/// The `model.json` of a CSV classifier as format version 1 wrote it.
const VERSION_1_CSV_META: &str = r#"{
  "format_version": 1,
  "dendrite_version": "0.1.0",
  "input_shape": [2],
  "layers": [{ "type": "dense", "units": 1 }],
  "loss": "binary_cross_entropy",
  "task": { "kind": "classification", "class_names": ["0", "1"] },
  "columns": { "features": ["x1", "x2"], "targets": ["y"] }
}
"#;

#[test]
fn version_1_csv_model_loads_as_passthrough() {
    let dir = tempdir("version-1");
    let (model, info) = binary_model(None);
    save(&dir, &model, &info).unwrap();
    fs::write(dir.join(META_FILE), VERSION_1_CSV_META).unwrap();

    let loaded = load(&dir).unwrap();

    assert_eq!(loaded.meta.format_version, 1);
    assert_eq!(loaded.meta.columns, None);
    let tabular = loaded
        .meta
        .tabular
        .expect("the columns become a preprocessing");
    assert_eq!(
        tabular,
        TabularPreprocessor::passthrough(vec!["x1".into(), "x2".into()], vec!["y".into()])
    );
    assert_eq!(tabular.feature_names(), ["x1", "x2"]);
    assert_eq!(loaded.model.params(), model.params());
}

#[test]
fn failed_write_keeps_previous_file() {
    let dir = tempdir("atomic");
    let path = dir.join("file.txt");
    write_atomic(&path, b"first").unwrap();
    // A path inside a directory that does not exist cannot be written.
    assert!(write_atomic(&dir.join("missing/file.txt"), b"second").is_err());
    assert_eq!(fs::read(&path).unwrap(), b"first");
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn failed_second_write_keeps_first_file() {
    let dir = tempdir("atomic-all");
    let first = dir.join("first.txt");
    write_atomic(&first, b"old").unwrap();

    let blocked = dir.join("missing/second.txt");
    let result = write_atomic_all(&[(&first, b"new"), (&blocked, b"new")]);

    assert!(matches!(result, Err(Error::Io { ref path, .. }) if *path == blocked));
    assert_eq!(fs::read(&first).unwrap(), b"old");
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["first.txt"], "no temporary file is left");
}

fn tempdir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("dendrite-model-test-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}
