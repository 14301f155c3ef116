//! Batch normalization layers: forward values in training and evaluation, running statistics
//! against PyTorch's update rule, saving and loading, training with `fit`, and layer specs.

use dendrite::Error;
use dendrite::autograd::{Graph, Parameters, Workspace};
use dendrite::data::{Dataset, Targets};
use dendrite::model::{self, Task};
use dendrite::nn::{Activation, Init, LayerSpec, Loss, Sequential};
use dendrite::rng::Rng;
use dendrite::tensor::Tensor;
use dendrite::train::{self, Silent, TrainConfig};

const TOLERANCE: f32 = 1e-4;

fn assert_close(got: &[f32], expected: &[f32], label: &str) {
    assert_eq!(got.len(), expected.len(), "{label}: length");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!(
            (g - e).abs() < TOLERANCE,
            "{label}[{i}]: got {g}, expected {e}"
        );
    }
}

fn batch_norm1d() -> LayerSpec {
    LayerSpec::BatchNorm1d {
        momentum: 0.1,
        epsilon: 1e-5,
    }
}

fn batch_norm2d() -> LayerSpec {
    LayerSpec::BatchNorm2d {
        momentum: 0.1,
        epsilon: 1e-5,
    }
}

/// Runs one forward pass of `model` on `x` and returns the output values.
fn forward(model: &Sequential, x: &Tensor, workspace: &mut Workspace, training: bool) -> Vec<f32> {
    let mut graph = Graph::new(model.params(), workspace, training);
    let input = graph.input(x);
    let y = model.forward(&mut graph, input);
    graph.value(y).to_vec()
}

fn buffer(model: &Sequential, name: &str) -> Vec<f32> {
    let buffers = model.buffers();
    buffers.get(buffers.find(name).unwrap()).data().to_vec()
}

/// Input `[4, 2]`: channel 0 is 1, 2, 3, 4 and channel 1 is 2, 2, 2, 6.
fn rows() -> Tensor {
    Tensor::from_vec(&[4, 2], vec![1.0, 2.0, 2.0, 2.0, 3.0, 2.0, 4.0, 6.0])
}

#[test]
fn batch_norm1d_training_forward_and_running_stats() {
    let mut model = Sequential::new(&[2], vec![batch_norm1d()], 0).unwrap();
    assert_eq!(
        model.params().get(0).data(),
        &[1.0, 1.0],
        "weight starts at 1"
    );
    assert_eq!(
        model.params().get(1).data(),
        &[0.0, 0.0],
        "bias starts at 0"
    );
    assert_eq!(buffer(&model, "layers.0.running_mean"), [0.0, 0.0]);
    assert_eq!(buffer(&model, "layers.0.running_var"), [1.0, 1.0]);
    model
        .params_mut()
        .get_mut(0)
        .data_mut()
        .copy_from_slice(&[2.0, 1.0]);
    model
        .params_mut()
        .get_mut(1)
        .data_mut()
        .copy_from_slice(&[0.5, -1.0]);

    let mut workspace = Workspace::new();
    let output = forward(&model, &rows(), &mut workspace, true);
    // Channel 0: mean 2.5, biased variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25, so
    // x_hat = (x - 2.5) / sqrt(1.25) = -1.341641, -0.447214, 0.447214, 1.341641 and
    // y = 2 * x_hat + 0.5. Channel 1: mean 3, biased variance (1 + 1 + 1 + 9) / 4 = 3, so
    // x_hat = (x - 3) / sqrt(3) = -0.57735 (three times), 1.732051 and y = x_hat - 1.
    // Epsilon 1e-5 moves these by less than 1e-5.
    let expected = [
        -2.183282, -1.57735, -0.394427, -1.57735, 1.394427, -1.57735, 3.183282, 0.732051,
    ];
    assert_close(&output, &expected, "training output");

    let statistics = workspace.batch_statistics();
    assert_eq!(statistics.len(), 1);
    assert_eq!(statistics[0].key(), 0);
    assert_eq!(statistics[0].count(), 4);
    model.update_running_stats(&[statistics]);
    // PyTorch: running = (1 - momentum) * running + momentum * batch, with the unbiased
    // variance for running_var. Mean: 0.9 * 0 + 0.1 * [2.5, 3] = [0.25, 0.3]. Unbiased
    // variance: [5 / 3, 12 / 3] = [1.666667, 4], so running_var = 0.9 * 1 + 0.1 * that =
    // [1.066667, 1.3].
    assert_close(
        &buffer(&model, "layers.0.running_mean"),
        &[0.25, 0.3],
        "running_mean",
    );
    assert_close(
        &buffer(&model, "layers.0.running_var"),
        &[1.066667, 1.3],
        "running_var",
    );
}

#[test]
fn batch_norm1d_evaluation_uses_running_stats() {
    // An epsilon below f32 resolution at these variances keeps the expected values exact.
    let spec = LayerSpec::BatchNorm1d {
        momentum: 0.1,
        epsilon: 1e-9,
    };
    let mut model = Sequential::new(&[2], vec![spec], 0).unwrap();
    model
        .params_mut()
        .get_mut(0)
        .data_mut()
        .copy_from_slice(&[2.0, 1.0]);
    model
        .params_mut()
        .get_mut(1)
        .data_mut()
        .copy_from_slice(&[0.5, -1.0]);
    let buffers = model.buffers_mut();
    let mean = buffers.find("layers.0.running_mean").unwrap();
    let var = buffers.find("layers.0.running_var").unwrap();
    buffers
        .get_mut(mean)
        .data_mut()
        .copy_from_slice(&[1.0, -2.0]);
    buffers
        .get_mut(var)
        .data_mut()
        .copy_from_slice(&[4.0, 0.25]);

    let mut workspace = Workspace::new();
    let output = forward(&model, &rows(), &mut workspace, false);
    // Channel 0: 2 * (x - 1) / 2 + 0.5 = x - 0.5. Channel 1: (x + 2) / 0.5 - 1 = 2x + 3.
    let expected = [0.5, 7.0, 1.5, 7.0, 2.5, 7.0, 3.5, 15.0];
    assert_close(&output, &expected, "evaluation output");
    assert!(
        workspace.batch_statistics().is_empty(),
        "evaluation records no batch statistics"
    );
    assert_eq!(model.predict(&rows(), 1).data(), output.as_slice());
}

#[test]
fn batch_norm2d_training_forward_and_running_stats() {
    let mut model = Sequential::new(&[2, 1, 2], vec![batch_norm2d()], 0).unwrap();
    // Images [2, 2, 1, 2]: channel 0 has 1, 3 and 5, 7; channel 1 has 0, 0 and 0, 4.
    let x = Tensor::from_vec(&[2, 2, 1, 2], vec![1.0, 3.0, 0.0, 0.0, 5.0, 7.0, 0.0, 4.0]);
    let mut workspace = Workspace::new();
    let output = forward(&model, &x, &mut workspace, true);
    // Channel 0: mean 4, biased variance (9 + 1 + 1 + 9) / 4 = 5, x_hat = (x - 4) / sqrt(5).
    // Channel 1: mean 1, biased variance (1 + 1 + 1 + 9) / 4 = 3, x_hat = (x - 1) / sqrt(3).
    let expected = [
        -1.341641, -0.447214, -0.57735, -0.57735, 0.447214, 1.341641, -0.57735, 1.732051,
    ];
    assert_close(&output, &expected, "training output");
    assert_eq!(workspace.batch_statistics()[0].count(), 4);

    model.update_running_stats(&[workspace.batch_statistics()]);
    // Mean: 0.1 * [4, 1] = [0.4, 0.1]. Unbiased variance over the 4 values per channel:
    // [20 / 3, 12 / 3], so running_var = 0.9 + 0.1 * [6.666667, 4] = [1.566667, 1.3].
    assert_close(
        &buffer(&model, "layers.0.running_mean"),
        &[0.4, 0.1],
        "running_mean",
    );
    assert_close(
        &buffer(&model, "layers.0.running_var"),
        &[1.566667, 1.3],
        "running_var",
    );
}

#[test]
fn shard_statistics_combine_into_batch_statistics() {
    let spec = LayerSpec::BatchNorm1d {
        momentum: 0.5,
        epsilon: 1e-5,
    };
    let mut whole = Sequential::new(&[2], vec![spec.clone()], 0).unwrap();
    let mut sharded = Sequential::new(&[2], vec![spec], 0).unwrap();
    let data = rows();

    let mut workspace = Workspace::new();
    forward(&whole, &data, &mut workspace, true);
    whole.update_running_stats(&[workspace.batch_statistics()]);

    // Shards of 1 and 3 rows, as uneven as training can make them.
    let first = Tensor::from_vec(&[1, 2], data.data()[..2].to_vec());
    let rest = Tensor::from_vec(&[3, 2], data.data()[2..].to_vec());
    let (mut a, mut b) = (Workspace::new(), Workspace::new());
    forward(&sharded, &first, &mut a, true);
    forward(&sharded, &rest, &mut b, true);
    sharded.update_running_stats(&[a.batch_statistics(), b.batch_statistics()]);

    for name in ["layers.0.running_mean", "layers.0.running_var"] {
        assert_close(&buffer(&sharded, name), &buffer(&whole, name), name);
    }
}

#[test]
fn single_value_batch_keeps_running_var() {
    let mut model = Sequential::new(&[2], vec![batch_norm1d()], 0).unwrap();
    let x = Tensor::from_vec(&[1, 2], vec![3.0, -4.0]);
    let mut workspace = Workspace::new();
    let output = forward(&model, &x, &mut workspace, true);
    assert_eq!(
        output,
        [0.0, 0.0],
        "one value per channel normalizes to the bias"
    );
    model.update_running_stats(&[workspace.batch_statistics()]);
    assert_close(
        &buffer(&model, "layers.0.running_mean"),
        &[0.3, -0.4],
        "running_mean",
    );
    assert_eq!(buffer(&model, "layers.0.running_var"), [1.0, 1.0]);
}

/// Random images `[rows, 1, 8, 8]` with a mean of 2, in three classes.
fn images(rows: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let features = (0..rows * 64).map(|_| 2.0 + rng.normal()).collect();
    Dataset::new(
        Tensor::from_vec(&[rows, 1, 8, 8], features),
        Targets::Classes {
            labels: (0..rows).map(|i| i % 3).collect(),
            class_names: vec!["a".into(), "b".into(), "c".into()],
        },
    )
    .unwrap()
}

fn conv_model() -> Sequential {
    let specs = vec![
        LayerSpec::Conv2d {
            filters: 4,
            kernel_size: 3,
            stride: 1,
            padding: 1,
            dilation: 1,
            groups: 1,
            activation: None,
            init: Init::GlorotUniform,
            bias: true,
        },
        batch_norm2d(),
        LayerSpec::Activation {
            activation: Activation::Relu,
        },
        LayerSpec::Dropout { rate: 0.3 },
        LayerSpec::Flatten,
        LayerSpec::Dense {
            units: 3,
            activation: None,
            init: Init::GlorotUniform,
            bias: true,
        },
    ];
    Sequential::new(&[1, 8, 8], specs, 5).unwrap()
}

fn train_config(epochs: usize, batch_size: usize) -> TrainConfig {
    let text = format!(
        "epochs = {epochs}\nbatch_size = {batch_size}\nloss = \"cross_entropy\"\n\
         [optimizer]\ntype = \"sgd\"\nlearning_rate = 0.05\n"
    );
    toml::from_str(&text).unwrap()
}

#[test]
fn conv_batch_norm_model_round_trips() {
    let mut model = conv_model();
    let data = images(96, 1);
    train::fit(&mut model, &data, None, &train_config(2, 32), &mut Silent).unwrap();
    let mean = buffer(&model, "layers.1.running_mean");
    assert!(
        mean.iter().all(|&m| m != 0.0),
        "training moved running_mean: {mean:?}"
    );

    let dir = std::env::temp_dir().join(format!("dendrite-batch-norm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let task = Task::Classification {
        class_names: vec!["a".into(), "b".into(), "c".into()],
    };
    model::save(
        &dir,
        &model,
        &model::ModelInfo::new(Loss::CrossEntropy, task),
    )
    .unwrap();
    let loaded = model::load(&dir).unwrap().model;
    assert_eq!(loaded.params(), model.params());
    assert_eq!(loaded.buffers(), model.buffers());

    let inputs = images(64, 2).features;
    let before = model.predict(&inputs, 64);
    let after = loaded.predict(&inputs, 64);
    assert_eq!(before.data(), after.data(), "predictions after loading");

    // Evaluation uses the running statistics, so each image is independent of its batch.
    let row_len = 3;
    for i in [0, 17, 63] {
        let image = Tensor::from_vec(&[1, 1, 8, 8], inputs.data()[i * 64..(i + 1) * 64].to_vec());
        let alone = loaded.predict(&image, 1);
        assert_eq!(
            alone.data(),
            &before.data()[i * row_len..(i + 1) * row_len],
            "image {i} alone"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fit_moves_running_mean() {
    // Two features with means 3 and -2; one epoch of 4 batches of 32 rows.
    let mut rng = Rng::new(4);
    let rows = 128;
    let mut features = Vec::with_capacity(rows * 2);
    for _ in 0..rows {
        features.push(3.0 + rng.normal());
        features.push(-2.0 + 0.5 * rng.normal());
    }
    let data = Dataset::new(
        Tensor::from_vec(&[rows, 2], features),
        Targets::Classes {
            labels: (0..rows).map(|i| i % 2).collect(),
            class_names: vec!["a".into(), "b".into()],
        },
    )
    .unwrap();
    let specs = vec![
        batch_norm1d(),
        LayerSpec::Dense {
            units: 2,
            activation: None,
            init: Init::GlorotUniform,
            bias: true,
        },
    ];
    let mut model = Sequential::new(&[2], specs, 0).unwrap();
    train::fit(&mut model, &data, None, &train_config(1, 32), &mut Silent).unwrap();

    // After 4 steps with momentum 0.1, running_mean = (1 - 0.9^4) * mean = 0.3439 * mean,
    // about [1.03, -0.69].
    let mean = buffer(&model, "layers.0.running_mean");
    assert!((mean[0] - 1.03).abs() < 0.2, "running_mean {mean:?}");
    assert!((mean[1] + 0.69).abs() < 0.2, "running_mean {mean:?}");
    let var = buffer(&model, "layers.0.running_var");
    assert_ne!(var[0], 1.0, "running_var {var:?}");
    assert_ne!(var[1], 1.0, "running_var {var:?}");
}

#[test]
fn buffers_are_counted_apart_from_parameters() {
    let model = conv_model();
    assert_eq!(model.buffers().numel(), 8);
    assert_eq!(
        model.params().numel(),
        (4 * 9 + 4) + (4 + 4) + (3 * 256 + 3)
    );
    let summary = model.summary();
    assert_eq!(summary[1].name, "layers.1 (batch_norm2d)");
    assert_eq!(summary[1].parameters, 8);
    assert_eq!(summary[1].buffers, 8);
    assert_eq!(summary[0].buffers, 0);
    assert_eq!(summary[1].output_shape, [4, 8, 8]);
}

#[test]
fn from_parameters_requires_buffers() {
    let model = Sequential::new(&[2], vec![batch_norm1d()], 0).unwrap();
    let mut saved = Parameters::new();
    for (name, tensor) in model.params().iter() {
        saved.push(name, tensor.clone());
    }
    let rebuilt =
        |saved: &Parameters| Sequential::from_parameters(&[2], vec![batch_norm1d()], saved);

    let message = rebuilt(&saved).unwrap_err().to_string();
    assert!(
        message.contains("buffer layers.0.running_mean is missing"),
        "{message}"
    );

    saved.push("layers.0.running_mean", Tensor::zeros(&[2]));
    saved.push("layers.0.running_var", Tensor::zeros(&[3]));
    let error = rebuilt(&saved).unwrap_err();
    assert!(matches!(error, Error::Shape { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("buffer layers.0.running_var has shape [3], the layer needs [2]"),
        "{message}"
    );

    let mut complete = Parameters::new();
    for (name, tensor) in model.params().iter().chain(model.buffers().iter()) {
        complete.push(name, tensor.clone());
    }
    let loaded = rebuilt(&complete).unwrap();
    assert_eq!(loaded.buffers(), model.buffers());
}

#[test]
fn batch_norm_specs_parse_from_toml_and_json() {
    #[derive(serde::Deserialize)]
    struct Layers {
        layers: Vec<LayerSpec>,
    }
    let text = r#"
        layers = [
            { type = "batch_norm2d" },
            { type = "batch_norm1d", momentum = 0.01, epsilon = 1e-3 },
        ]
    "#;
    let specs = toml::from_str::<Layers>(text).unwrap().layers;
    assert_eq!(specs[0], batch_norm2d());
    assert_eq!(
        specs[1],
        LayerSpec::BatchNorm1d {
            momentum: 0.01,
            epsilon: 1e-3,
        }
    );

    let json = serde_json::to_string(&specs).unwrap();
    let round_trip: Vec<LayerSpec> = serde_json::from_str(&json).unwrap();
    assert_eq!(round_trip, specs);
    let unknown = r#"{"type": "batch_norm2d", "eps": 0.1}"#;
    assert!(serde_json::from_str::<LayerSpec>(unknown).is_err());
}

#[test]
fn batch_norm_shapes_are_inferred_and_checked() {
    let model = Sequential::new(&[6, 6], vec![batch_norm2d()], 0).unwrap();
    assert_eq!(
        model.output_shape(),
        &[1, 6, 6],
        "[h, w] input is one channel"
    );
    assert_eq!(model.params().get(0).shape(), &[1]);
    let model = Sequential::new(&[5], vec![batch_norm1d()], 0).unwrap();
    assert_eq!(model.output_shape(), &[5]);

    let cases: Vec<(Vec<usize>, Vec<LayerSpec>, &str)> = vec![
        (
            vec![1, 4, 4],
            vec![LayerSpec::Flatten, batch_norm2d()],
            "layer 1 (batch_norm2d) needs input of shape [channels, height, width]",
        ),
        (
            vec![2, 4, 4],
            vec![batch_norm1d()],
            "layer 0 (batch_norm1d) needs input of shape [channels]",
        ),
        (
            vec![4],
            vec![LayerSpec::BatchNorm1d {
                momentum: 1.5,
                epsilon: 1e-5,
            }],
            "layer 0 (batch_norm1d) has momentum = 1.5",
        ),
        (
            vec![1, 4, 4],
            vec![LayerSpec::BatchNorm2d {
                momentum: 0.1,
                epsilon: 0.0,
            }],
            "layer 0 (batch_norm2d) has epsilon = 0",
        ),
    ];
    for (input, specs, expected) in cases {
        let error = Sequential::new(&input, specs, 0).unwrap_err();
        assert!(matches!(error, Error::InvalidConfig(_)), "{error}");
        let message = error.to_string();
        assert!(message.contains(expected), "{message}");
    }
}
