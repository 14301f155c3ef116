//! Backward rules of the recurrent and sequence ops against central finite differences, with
//! the same method as `autograd_gradcheck.rs`: a scalar from the op's output (mean squared
//! error against a fixed random target), differentiated by the tape and compared with
//! `(f(p + h) - f(p - h)) / 2h` for every parameter value, the input sequence included.

use dendrite::autograd::{
    Conv2dParams, Graph, Parameters, RecurrentCell, RecurrentWeights, Var, Workspace,
};
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
fn check(name: &str, shapes: &[Vec<usize>], op: impl Fn(&mut Graph<'_>, &[Var]) -> Var) {
    let mut rng = Rng::new(11);
    let mut params = Parameters::new();
    for (i, shape) in shapes.iter().enumerate() {
        params.push(format!("p{i}"), random_tensor(shape, &mut rng));
    }
    let mut workspace = Workspace::new();

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
        let t = graph.input(&target);
        let loss = graph.mse(out, t);
        let value = graph.value(loss)[0];
        if backward {
            graph.backward(loss);
        }
        value
    };

    loss_of(&params, &mut workspace, true);
    let analytic: Vec<Vec<f32>> = workspace.gradients().to_vec();

    for (id, analytic) in analytic.iter().enumerate() {
        assert!(
            analytic.iter().any(|&g| g != 0.0),
            "{name}: the gradient of p{id} is all zeros"
        );
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

/// The input `[batch, time, features]` and the four weights of a recurrent layer with
/// `gates` gates and hidden size `hidden`.
fn recurrent_shapes(
    batch: usize,
    time: usize,
    features: usize,
    hidden: usize,
    gates: usize,
) -> Vec<Vec<usize>> {
    vec![
        vec![batch, time, features],
        vec![gates * hidden, features],
        vec![gates * hidden, hidden],
        vec![gates * hidden],
        vec![gates * hidden],
    ]
}

fn recurrent_weights(v: &[Var], first: usize) -> RecurrentWeights {
    RecurrentWeights {
        weight_ih: v[first],
        weight_hh: v[first + 1],
        bias_ih: v[first + 2],
        bias_hh: v[first + 3],
    }
}

const CELLS: [RecurrentCell; 3] = [RecurrentCell::Rnn, RecurrentCell::Lstm, RecurrentCell::Gru];

#[test]
fn recurrent_gradients() {
    for cell in CELLS {
        let shapes = recurrent_shapes(2, 4, 3, 3, cell.gates());
        for return_sequences in [false, true] {
            let name = format!("{} return_sequences={return_sequences}", cell.name());
            check(&name, &shapes, |g, v| {
                g.recurrent(v[0], recurrent_weights(v, 1), cell, return_sequences)
            });
        }
    }
}

#[test]
fn stacked_recurrent_gradients() {
    for cell in CELLS {
        let gates = cell.gates();
        let mut shapes = recurrent_shapes(2, 3, 2, 3, gates);
        shapes.extend([
            vec![gates * 2, 3],
            vec![gates * 2, 2],
            vec![gates * 2],
            vec![gates * 2],
        ]);
        let name = format!("two stacked {} layers", cell.name());
        check(&name, &shapes, |g, v| {
            let sequence = g.recurrent(v[0], recurrent_weights(v, 1), cell, true);
            g.recurrent(sequence, recurrent_weights(v, 5), cell, false)
        });
    }
}

#[test]
fn recurrent_long_sequence_gradient() {
    // Twelve steps, so that gradients flow back through many recurrent products.
    for cell in CELLS {
        let shapes = recurrent_shapes(1, 12, 1, 2, cell.gates());
        let name = format!("{} over 12 steps", cell.name());
        check(&name, &shapes, |g, v| {
            g.recurrent(v[0], recurrent_weights(v, 1), cell, false)
        });
    }
}

#[test]
fn swap_last_axes_gradient() {
    check("swap_last_axes", &[vec![2, 3, 4]], |g, v| {
        g.swap_last_axes(v[0])
    });
    check("swap_last_axes used twice", &[vec![2, 3, 4]], |g, v| {
        let once = g.swap_last_axes(v[0]);
        let twice = g.swap_last_axes(once);
        g.add(twice, v[0])
    });
}

#[test]
fn conv1d_composition_gradient() {
    // A 1-D convolution over [batch, time, channels] as the conv1d layer records it.
    check(
        "conv1d",
        &[vec![2, 7, 3], vec![4, 3, 1, 3], vec![4]],
        |g, v| {
            let channels_first = g.swap_last_axes(v[0]);
            let images = g.reshape(channels_first, &[2, 3, 1, 7]);
            let params = Conv2dParams {
                stride: (1, 2),
                padding: (0, 1),
                ..Conv2dParams::default()
            };
            let y = g.conv2d(images, v[1], Some(v[2]), params);
            let y = g.reshape(y, &[2, 4, 4]);
            g.swap_last_axes(y)
        },
    );
}

#[test]
fn swap_last_axes_moves_values() {
    let params = Parameters::new();
    let mut workspace = Workspace::new();
    let mut graph = Graph::new(&params, &mut workspace, false);
    let x = graph.input(&Tensor::from_vec(&[1, 2, 3], vec![1., 2., 3., 4., 5., 6.]));
    let y = graph.swap_last_axes(x);
    assert_eq!(graph.shape(y), &[1, 3, 2]);
    assert_eq!(graph.value(y), &[1., 4., 2., 5., 3., 6.]);
}

#[test]
fn rnn_matches_hand_computation() {
    // One unit, one feature, weights 0.5 (input) and -1 (recurrent), biases 0.1 and 0.
    let mut params = Parameters::new();
    let w_ih = params.push("w_ih", Tensor::from_vec(&[1, 1], vec![0.5]));
    let w_hh = params.push("w_hh", Tensor::from_vec(&[1, 1], vec![-1.0]));
    let b_ih = params.push("b_ih", Tensor::from_vec(&[1], vec![0.1]));
    let b_hh = params.push("b_hh", Tensor::from_vec(&[1], vec![0.0]));
    let mut workspace = Workspace::new();
    let mut graph = Graph::new(&params, &mut workspace, false);
    let x = graph.input(&Tensor::from_vec(&[1, 2, 1], vec![1.0, 2.0]));
    let weights = RecurrentWeights {
        weight_ih: graph.param(w_ih),
        weight_hh: graph.param(w_hh),
        bias_ih: graph.param(b_ih),
        bias_hh: graph.param(b_hh),
    };
    let y = graph.recurrent(x, weights, RecurrentCell::Rnn, true);
    let h1 = (0.5f32 + 0.1).tanh();
    let h2 = (1.0f32 + 0.1 - h1).tanh();
    assert_eq!(graph.shape(y), &[1, 2, 1]);
    assert!((graph.value(y)[0] - h1).abs() < 1e-6);
    assert!((graph.value(y)[1] - h2).abs() < 1e-6);
}
