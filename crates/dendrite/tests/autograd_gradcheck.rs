//! Every backward rule against central finite differences.
//!
//! Each check builds a scalar from the op's output (mean squared error against a fixed random
//! target), differentiates it with the tape, and compares every parameter's gradient with
//! `(f(p + h) - f(p - h)) / 2h`. In f32, `h = 1e-2` keeps rounding error well below the
//! tolerance; inputs are kept at least 0.1 away from the kinks of ReLU-like functions.

use dendrite::autograd::{Activation, Graph, Parameters, Var, Workspace};
use dendrite::rng::Rng;
use dendrite::tensor::Tensor;

const STEP: f32 = 1e-2;

fn random_tensor(shape: &[usize], rng: &mut Rng) -> Tensor {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            let v = rng.normal();
            v.signum() * (0.1 + v.abs())
        })
        .collect();
    Tensor::from_vec(shape, data)
}

/// Checks the gradients of `op` with respect to parameters of the given shapes.
fn check(name: &str, shapes: &[&[usize]], op: impl Fn(&mut Graph<'_>, &[Var]) -> Var) {
    let mut rng = Rng::new(7);
    let mut params = Parameters::new();
    for (i, shape) in shapes.iter().enumerate() {
        params.push(format!("p{i}"), random_tensor(shape, &mut rng));
    }
    let mut workspace = Workspace::new();

    // The target is sized on a first pass, then kept fixed.
    let output_shape = {
        let mut graph = Graph::new(&params, &mut workspace, true);
        let vars: Vec<Var> = (0..shapes.len()).map(|i| graph.param(i)).collect();
        let out = op(&mut graph, &vars);
        graph.shape(out).to_vec()
    };
    let target = random_tensor(&output_shape, &mut rng);

    let loss_of = |params: &Parameters, workspace: &mut Workspace, backward: bool| -> f32 {
        let mut graph = Graph::new(params, workspace, true);
        let vars: Vec<Var> = (0..shapes.len()).map(|i| graph.param(i)).collect();
        let out = op(&mut graph, &vars);
        let loss = if graph.shape(out).is_empty() {
            out
        } else {
            let t = graph.input(&target);
            graph.mse(out, t)
        };
        let value = graph.value(loss)[0];
        if backward {
            graph.backward(loss);
        }
        value
    };

    loss_of(&params, &mut workspace, true);
    let analytic: Vec<Vec<f32>> = workspace.gradients().to_vec();

    for (id, analytic) in analytic.iter().enumerate() {
        for (j, &got) in analytic.iter().enumerate() {
            let original = params.get(id).data()[j];
            params.get_mut(id).data_mut()[j] = original + STEP;
            let plus = loss_of(&params, &mut workspace, false) as f64;
            params.get_mut(id).data_mut()[j] = original - STEP;
            let minus = loss_of(&params, &mut workspace, false) as f64;
            params.get_mut(id).data_mut()[j] = original;

            let numeric = (plus - minus) / (2.0 * STEP as f64);
            let got = got as f64;
            let tolerance = 2e-2 * (1.0f64).max(numeric.abs()).max(got.abs());
            assert!(
                (got - numeric).abs() <= tolerance,
                "{name}: d/dp{id}[{j}] backward {got}, finite difference {numeric}"
            );
        }
    }
}

#[test]
fn matmul_gradient() {
    check("matmul", &[&[3, 4], &[4, 5]], |g, v| g.matmul(v[0], v[1]));
}

#[test]
fn linear_gradient() {
    check("linear", &[&[4, 3], &[5, 3], &[5]], |g, v| {
        g.linear(v[0], v[1], Some(v[2]))
    });
    check("linear without bias", &[&[4, 3], &[2, 3]], |g, v| {
        g.linear(v[0], v[1], None)
    });
    check(
        "linear on 3-d input",
        &[&[2, 2, 3], &[4, 6], &[4]],
        |g, v| g.linear(v[0], v[1], Some(v[2])),
    );
}

#[test]
fn add_gradient() {
    check("add", &[&[3, 4], &[3, 4]], |g, v| g.add(v[0], v[1]));
    check("add broadcast", &[&[3, 4], &[4]], |g, v| g.add(v[0], v[1]));
    check("add of one value twice", &[&[3, 4]], |g, v| {
        g.add(v[0], v[0])
    });
}

#[test]
fn activation_gradients() {
    let activations = [
        Activation::Identity,
        Activation::Relu,
        Activation::LeakyRelu { slope: 0.1 },
        Activation::Elu { alpha: 1.0 },
        Activation::Gelu,
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Step,
    ];
    for activation in activations {
        check(&format!("{activation:?}"), &[&[4, 5]], |g, v| {
            g.activation(v[0], activation)
        });
    }
}

#[test]
fn step_gradient_is_zero() {
    let mut params = Parameters::new();
    params.push("x", Tensor::from_vec(&[1, 3], vec![-1.0, 0.5, 2.0]));
    let mut workspace = Workspace::new();
    let mut graph = Graph::new(&params, &mut workspace, true);
    let x = graph.param(0);
    let y = graph.activation(x, Activation::Step);
    assert_eq!(graph.value(y), &[0.0, 1.0, 1.0]);
    let t = graph.input(&Tensor::zeros(&[1, 3]));
    let loss = graph.mse(y, t);
    graph.backward(loss);
    assert_eq!(workspace.gradient(0), &[0.0, 0.0, 0.0]);
}

#[test]
fn softmax_gradients() {
    check("softmax", &[&[3, 4]], |g, v| g.softmax(v[0]));
    check("log_softmax", &[&[3, 4]], |g, v| g.log_softmax(v[0]));
}

#[test]
fn loss_gradients() {
    check("cross_entropy", &[&[4, 3]], |g, v| {
        g.cross_entropy(v[0], &[0, 2, 1, 2])
    });
    check("binary_cross_entropy", &[&[4, 2], &[4, 2]], |g, v| {
        let t = g.activation(v[1], Activation::Sigmoid);
        g.binary_cross_entropy(v[0], t)
    });
    check("mse", &[&[3, 2], &[3, 2]], |g, v| g.mse(v[0], v[1]));
}

#[test]
fn reshape_gradient() {
    check("reshape", &[&[2, 6]], |g, v| {
        let r = g.reshape(v[0], &[3, 4]);
        g.activation(r, Activation::Tanh)
    });
}

#[test]
fn two_layer_network_gradient() {
    check(
        "dense-relu-dense-ce",
        &[&[5, 4], &[6, 4], &[6], &[3, 6], &[3]],
        |g, v| {
            let h = g.linear(v[0], v[1], Some(v[2]));
            let h = g.activation(h, Activation::Relu);
            let logits = g.linear(h, v[3], Some(v[4]));
            g.cross_entropy(logits, &[0, 1, 2, 1, 0])
        },
    );
}

fn conv(
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> dendrite::autograd::Conv2dParams {
    dendrite::autograd::Conv2dParams {
        stride: (stride, stride),
        padding: (padding, padding),
        dilation: (dilation, dilation),
        groups,
    }
}

#[test]
fn conv2d_gradient() {
    check(
        "conv2d stride 1",
        &[&[2, 3, 5, 5], &[4, 3, 3, 3], &[4]],
        |g, v| g.conv2d(v[0], v[1], Some(v[2]), conv(1, 0, 1, 1)),
    );
    check(
        "conv2d stride 2 with padding",
        &[&[2, 2, 6, 5], &[3, 2, 3, 2], &[3]],
        |g, v| {
            let params = dendrite::autograd::Conv2dParams {
                stride: (2, 2),
                padding: (1, 2),
                dilation: (1, 1),
                groups: 1,
            };
            g.conv2d(v[0], v[1], Some(v[2]), params)
        },
    );
    check(
        "conv2d dilation 2",
        &[&[1, 2, 7, 7], &[2, 2, 3, 3], &[2]],
        |g, v| g.conv2d(v[0], v[1], Some(v[2]), conv(1, 1, 2, 1)),
    );
    check(
        "conv2d groups 2",
        &[&[2, 4, 5, 5], &[6, 2, 3, 3], &[6]],
        |g, v| g.conv2d(v[0], v[1], Some(v[2]), conv(1, 1, 1, 2)),
    );
    check(
        "conv2d without bias",
        &[&[2, 2, 4, 4], &[3, 2, 2, 2]],
        |g, v| g.conv2d(v[0], v[1], None, conv(2, 1, 1, 1)),
    );
    check(
        "conv2d input used twice",
        &[&[1, 2, 4, 4], &[2, 2, 3, 3]],
        |g, v| {
            let y = g.conv2d(v[0], v[1], None, conv(1, 1, 1, 1));
            g.add(y, v[0])
        },
    );
}

#[test]
fn conv2d_relu_gradient() {
    check(
        "conv2d_relu stride 1",
        &[&[2, 3, 5, 5], &[4, 3, 3, 3], &[4]],
        |g, v| g.conv2d_relu(v[0], v[1], Some(v[2]), conv(1, 0, 1, 1)),
    );
    check(
        "conv2d_relu with padding and groups",
        &[&[2, 4, 5, 5], &[6, 2, 3, 3], &[6]],
        |g, v| g.conv2d_relu(v[0], v[1], Some(v[2]), conv(1, 1, 1, 2)),
    );
}

#[test]
fn pool_gradients() {
    check("max_pool2d", &[&[2, 3, 6, 6]], |g, v| {
        g.max_pool2d(v[0], (2, 2), (2, 2), (0, 0))
    });
    check(
        "max_pool2d overlapping with padding",
        &[&[1, 2, 5, 5]],
        |g, v| g.max_pool2d(v[0], (3, 3), (2, 2), (1, 1)),
    );
    check("avg_pool2d", &[&[2, 2, 6, 6]], |g, v| {
        g.avg_pool2d(v[0], (2, 2), (2, 2), (0, 0))
    });
    check(
        "avg_pool2d overlapping with padding",
        &[&[1, 2, 5, 4]],
        |g, v| g.avg_pool2d(v[0], (3, 2), (2, 1), (1, 1)),
    );
    check("global_avg_pool2d", &[&[2, 3, 4, 5]], |g, v| {
        g.global_avg_pool2d(v[0])
    });
}

/// Running statistics for a training pass, which does not read them.
fn batch_norm_state(running: &[f32]) -> dendrite::autograd::BatchNormState<'_> {
    dendrite::autograd::BatchNormState {
        running_mean: running,
        running_var: running,
        epsilon: 1e-5,
        key: 0,
    }
}

#[test]
fn batch_norm_gradients() {
    let ones = [1.0; 3];
    check("batch_norm1d", &[&[4, 3], &[3], &[3]], |g, v| {
        g.batch_norm1d(v[0], v[1], v[2], batch_norm_state(&ones))
    });
    check("batch_norm2d", &[&[3, 3, 2, 3], &[3], &[3]], |g, v| {
        g.batch_norm2d(v[0], v[1], v[2], batch_norm_state(&ones))
    });
    check(
        "batch_norm2d with one position per image",
        &[&[3, 2, 1, 1], &[2], &[2]],
        |g, v| g.batch_norm2d(v[0], v[1], v[2], batch_norm_state(&ones[..2])),
    );
    check(
        "batch_norm1d input used twice",
        &[&[5, 2], &[2], &[2]],
        |g, v| {
            let y = g.batch_norm1d(v[0], v[1], v[2], batch_norm_state(&ones[..2]));
            g.add(y, v[0])
        },
    );
}

#[test]
fn batch_norm_evaluation_gradients() {
    // In evaluation the statistics are constants, so the rule is the elementwise one.
    let mut params = Parameters::new();
    let mut rng = Rng::new(3);
    let x = params.push("x", random_tensor(&[3, 2], &mut rng));
    let w = params.push("w", Tensor::from_vec(&[2], vec![2.0, -1.0]));
    let b = params.push("b", Tensor::from_vec(&[2], vec![0.5, 0.0]));
    let (mean, var) = ([0.5, -1.0], [4.0, 0.25]);
    let mut workspace = Workspace::new();
    let mut graph = Graph::new(&params, &mut workspace, false);
    let (xv, wv, bv) = (graph.param(x), graph.param(w), graph.param(b));
    let state = dendrite::autograd::BatchNormState {
        running_mean: &mean,
        running_var: &var,
        epsilon: 0.0,
        key: 0,
    };
    let y = graph.batch_norm1d(xv, wv, bv, state);
    let zeros = graph.input(&Tensor::zeros(&[3, 2]));
    let loss = graph.mse(y, zeros);
    let output = graph.value(y).to_vec();
    graph.backward(loss);
    // loss = mean(y^2) over 6 values, so dloss/dy = y / 3.
    let xs = params.get(x).data();
    for i in 0..6 {
        let c = i % 2;
        let gamma = [2.0, -1.0][c];
        let inv_std = 1.0 / var[c].sqrt();
        let expected_dx = output[i] / 3.0 * gamma * inv_std;
        assert!(
            (workspace.gradient(x)[i] - expected_dx).abs() < 1e-5,
            "dx[{i}]"
        );
        let expected_y = gamma * (xs[i] - mean[c]) * inv_std + [0.5, 0.0][c];
        assert!((output[i] - expected_y).abs() < 1e-5, "y[{i}]");
    }
}
