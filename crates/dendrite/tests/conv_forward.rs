//! Forward values of convolution and pooling against hand-computed results, batch
//! invariance of convolution, and the fused convolution with ReLU against its two-op form.

use dendrite::autograd::{Activation, Conv2dParams, Graph, Parameters, Workspace};
use dendrite::rng::Rng;
use dendrite::tensor::{Tensor, single_threaded};

/// Returns the 3x3 input 1..=9 as one image with one channel.
fn three_by_three() -> Tensor {
    Tensor::from_vec(&[1, 1, 3, 3], (1..=9).map(|v| v as f32).collect())
}

fn conv_values(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, params: Conv2dParams) -> Tensor {
    let params_set = Parameters::new();
    let mut workspace = Workspace::new();
    let mut graph = Graph::new(&params_set, &mut workspace, false);
    let x = graph.input(x);
    let w = graph.input(weight);
    let b = bias.map(|b| graph.input(b));
    let y = graph.conv2d(x, w, b, params);
    graph.to_tensor(y)
}

#[test]
fn conv2d_matches_hand_computed_values() {
    let weight = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let bias = Tensor::from_vec(&[1], vec![0.5]);
    let y = conv_values(
        &three_by_three(),
        &weight,
        Some(&bias),
        Conv2dParams::default(),
    );
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    // Top left: 1*1 + 2*2 + 4*3 + 5*4 = 37, plus the bias.
    assert_eq!(y.data(), &[37.5, 47.5, 67.5, 77.5]);
}

#[test]
fn conv2d_with_padding_and_stride() {
    let weight = Tensor::from_vec(&[1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let params = Conv2dParams {
        stride: (2, 2),
        padding: (1, 1),
        ..Conv2dParams::default()
    };
    let y = conv_values(&three_by_three(), &weight, None, params);
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    // The top left window covers only input 1, under weight 4. The bottom right one covers
    // 5, 6, 8 and 9.
    assert_eq!(y.data(), &[4.0, 18.0, 36.0, 77.0]);
}

#[test]
fn conv2d_with_dilation_and_groups() {
    // With two channels in two groups, each output channel reads only its own input channel.
    let mut data: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    data.extend((1..=9).map(|v| -(v as f32)));
    let x = Tensor::from_vec(&[1, 2, 3, 3], data);
    let weight = Tensor::from_vec(&[2, 1, 2, 2], vec![1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0]);
    let params = Conv2dParams {
        dilation: (2, 2),
        groups: 2,
        ..Conv2dParams::default()
    };
    let y = conv_values(&x, &weight, None, params);
    assert_eq!(y.shape(), &[1, 2, 1, 1]);
    // Channel 0 reads taps (0, 0) and (2, 2), giving 1 + 9. Channel 1 reads (0, 2) and (2, 0),
    // giving -3 - 7.
    assert_eq!(y.data(), &[10.0, -10.0]);
}

#[test]
fn conv2d_is_batch_invariant() {
    let mut rng = Rng::new(3);
    let mut random = |shape: &[usize]| {
        let n = shape.iter().product();
        Tensor::from_vec(shape, (0..n).map(|_| rng.normal()).collect())
    };
    let (batch, image) = (5, [8, 12, 12]);
    let x = random(&[batch, image[0], image[1], image[2]]);
    let weight = random(&[16, 8, 3, 3]);
    let bias = random(&[16]);
    let params = Conv2dParams {
        padding: (1, 1),
        ..Conv2dParams::default()
    };
    let together = conv_values(&x, &weight, Some(&bias), params);
    let sequential = single_threaded(|| conv_values(&x, &weight, Some(&bias), params));
    assert_eq!(together.data(), sequential.data());

    let image_len: usize = image.iter().product();
    let out_len = together.numel() / batch;
    for i in 0..batch {
        let alone = Tensor::from_vec(
            &[1, image[0], image[1], image[2]],
            x.data()[i * image_len..(i + 1) * image_len].to_vec(),
        );
        let y = conv_values(&alone, &weight, Some(&bias), params);
        assert_eq!(
            y.data(),
            &together.data()[i * out_len..(i + 1) * out_len],
            "image {i}"
        );
    }
}

#[test]
fn max_pool2d_pads_with_negative_infinity() {
    let params = Parameters::new();
    let mut workspace = Workspace::new();
    let mut graph = Graph::new(&params, &mut workspace, false);
    let x = graph.input(&Tensor::full(&[1, 1, 2, 2], -5.0));
    let y = graph.max_pool2d(x, (3, 3), (1, 1), (1, 1));
    assert_eq!(graph.shape(y), &[1, 1, 2, 2]);
    assert_eq!(graph.value(y), &[-5.0; 4]);
}

#[test]
fn max_pool2d_sends_tie_gradient_to_first_maximum() {
    let mut params = Parameters::new();
    params.push(
        "x",
        Tensor::from_vec(&[1, 1, 2, 2], vec![1.0, 3.0, 3.0, 2.0]),
    );
    let mut workspace = Workspace::new();
    let mut graph = Graph::new(&params, &mut workspace, true);
    let x = graph.param(0);
    let y = graph.max_pool2d(x, (2, 2), (2, 2), (0, 0));
    assert_eq!(graph.value(y), &[3.0]);
    let target = graph.input(&Tensor::zeros(&[1, 1, 1, 1]));
    let loss = graph.mse(y, target);
    graph.backward(loss);
    assert_eq!(workspace.gradient(0), &[0.0, 6.0, 0.0, 0.0]);
}

#[test]
fn avg_pool2d_counts_padding() {
    let params = Parameters::new();
    let mut workspace = Workspace::new();
    let mut graph = Graph::new(&params, &mut workspace, false);
    let x = graph.input(&Tensor::full(&[1, 1, 2, 2], 1.0));
    let y = graph.avg_pool2d(x, (2, 2), (1, 1), (1, 1));
    assert_eq!(graph.shape(y), &[1, 1, 3, 3]);
    assert_eq!(
        graph.value(y),
        &[0.25, 0.5, 0.25, 0.5, 1.0, 0.5, 0.25, 0.5, 0.25]
    );
}

#[test]
fn global_avg_pool2d_averages_each_channel() {
    let params = Parameters::new();
    let mut workspace = Workspace::new();
    let mut graph = Graph::new(&params, &mut workspace, false);
    let x = graph.input(&Tensor::from_vec(&[1, 2, 1, 2], vec![1.0, 3.0, -2.0, 6.0]));
    let y = graph.global_avg_pool2d(x);
    assert_eq!(graph.shape(y), &[1, 2]);
    assert_eq!(graph.value(y), &[2.0, 2.0]);
}

#[test]
#[should_panic(expected = "does not fit input [1, 3, 8, 8] with 1 groups")]
fn conv2d_rejects_wrong_weight_channels() {
    let weight = Tensor::zeros(&[4, 2, 3, 3]);
    conv_values(
        &Tensor::zeros(&[1, 3, 8, 8]),
        &weight,
        None,
        Conv2dParams::default(),
    );
}

/// Returns the output and the gradients of x, the weight and the bias of a padded convolution
/// followed by a ReLU, fused into one node or recorded as two.
fn conv_relu_run(fused: bool) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut rng = Rng::new(3);
    let mut random = |shape: &[usize]| {
        let len = shape.iter().product();
        Tensor::from_vec(shape, (0..len).map(|_| rng.normal()).collect())
    };
    let mut params = Parameters::new();
    params.push("x", random(&[3, 2, 6, 6]));
    params.push("w", random(&[4, 2, 3, 3]));
    params.push("b", random(&[4]));
    let target = random(&[3, 4, 6, 6]);
    let conv = Conv2dParams {
        padding: (1, 1),
        ..Conv2dParams::default()
    };
    let mut workspace = Workspace::new();
    let mut graph = Graph::new(&params, &mut workspace, true);
    let (x, w, b) = (graph.param(0), graph.param(1), graph.param(2));
    let y = if fused {
        graph.conv2d_relu(x, w, Some(b), conv)
    } else {
        let y = graph.conv2d(x, w, Some(b), conv);
        graph.activation(y, Activation::Relu)
    };
    let values = graph.value(y).to_vec();
    let target = graph.input(&target);
    let loss = graph.mse(y, target);
    graph.backward(loss);
    (values, workspace.gradients().to_vec())
}

#[test]
fn conv2d_relu_matches_two_ops() {
    let (fused_values, fused_grads) = conv_relu_run(true);
    let (values, grads) = conv_relu_run(false);
    assert!(values.contains(&0.0), "some outputs should be clipped to 0");
    assert!(
        values.iter().any(|&v| v > 0.0),
        "some outputs should be positive"
    );
    assert_eq!(fused_values, values, "output values");
    for (name, (fused, two_ops)) in ["x", "weight", "bias"]
        .iter()
        .zip(fused_grads.iter().zip(&grads))
    {
        assert_eq!(fused, two_ops, "gradient of {name}");
    }
}
