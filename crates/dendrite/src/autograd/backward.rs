//! Backward rules: one match arm per recorded operation.

use super::conv::{self, ConvGeometry, PoolGeometry};
use super::norm;
use super::ops::sigmoid;
use super::recurrent::{self, RecurrentGrads, RecurrentInputs};
use super::{Activation, Graph, Node, Op, Var, take_from_pool};
use crate::autograd::Parameters;
use crate::tensor::{Transpose, matmul_into, sum_rows_into};

/// Access to the gradients and values of the nodes recorded before the one being
/// differentiated, and to the parameter gradients.
struct Sink<'s> {
    lower: &'s mut [Node],
    params: &'s Parameters,
    pool: &'s mut Vec<Vec<f32>>,
    param_grads: &'s mut [Vec<f32>],
    written: &'s mut [bool],
}

impl Sink<'_> {
    fn value(&self, var: Var) -> &[f32] {
        let node = &self.lower[var.0];
        match node.op {
            Op::Param(id) => self.params.get(id).data(),
            _ => &node.value,
        }
    }

    /// Takes the gradient buffer of `var` out for writing, with `true` if it already contains a
    /// contribution that must be added to, or `None` if `var` needs no gradient.
    fn take(&mut self, var: Var) -> Option<(Vec<f32>, bool)> {
        let node = &mut self.lower[var.0];
        if !node.needs_grad {
            return None;
        }
        if let Op::Param(id) = node.op {
            let accumulate = self.written[id];
            self.written[id] = true;
            return Some((std::mem::take(&mut self.param_grads[id]), accumulate));
        }
        if node.grad.is_empty() {
            Some((take_from_pool(self.pool, node.shape.numel()), false))
        } else {
            Some((std::mem::take(&mut node.grad), true))
        }
    }

    /// Puts a buffer taken with [`Sink::take`] back.
    fn put(&mut self, var: Var, buffer: Vec<f32>) {
        let node = &mut self.lower[var.0];
        match node.op {
            Op::Param(id) => self.param_grads[id] = buffer,
            _ => node.grad = buffer,
        }
    }

    /// Adds (or writes, for a fresh buffer) `f(i)` to element `i` of the gradient of `var`.
    fn write_each(&mut self, var: Var, f: impl Fn(usize) -> f32) {
        if let Some((mut grad, accumulate)) = self.take(var) {
            if accumulate {
                for (i, g) in grad.iter_mut().enumerate() {
                    *g += f(i);
                }
            } else {
                for (i, g) in grad.iter_mut().enumerate() {
                    *g = f(i);
                }
            }
            self.put(var, grad);
        }
    }
}

impl Graph<'_> {
    /// Computes the gradient of the scalar `loss` with respect to every parameter and every
    /// recorded value it depends on. Parameter gradients are then read with
    /// [`super::Workspace::gradient`]; parameters the loss does not depend on get zeros.
    ///
    /// # Panics
    ///
    /// Panics if `loss` does not hold exactly one value.
    pub fn backward(&mut self, loss: Var) {
        let ws = &mut *self.ws;
        assert_eq!(
            ws.nodes[loss.0].shape.numel(),
            1,
            "backward needs a scalar loss"
        );

        // The first pass, or a new parameter set, sizes the parameter gradients.
        let params = self.params;
        let sizes_match = ws.param_grads.len() == params.len()
            && ws
                .param_grads
                .iter()
                .zip(params.values())
                .all(|(g, p)| g.len() == p.numel());
        if !sizes_match {
            ws.param_grads = params
                .values()
                .iter()
                .map(|p| vec![0.0; p.numel()])
                .collect();
        }
        ws.param_grad_written.clear();
        ws.param_grad_written.resize(params.len(), false);

        let mut seed = take_from_pool(&mut ws.pool, 1);
        seed[0] = 1.0;
        ws.nodes[loss.0].grad = seed;

        for i in (0..=loss.0).rev() {
            let (lower, rest) = ws.nodes.split_at_mut(i);
            let node = &rest[0];
            if node.grad.is_empty() || !node.needs_grad {
                continue;
            }
            let mut sink = Sink {
                lower,
                params,
                pool: &mut ws.pool,
                param_grads: &mut ws.param_grads,
                written: &mut ws.param_grad_written,
            };
            backward_node(node, &ws.labels, &mut sink);
        }

        for (grad, written) in ws.param_grads.iter_mut().zip(&ws.param_grad_written) {
            if !written {
                grad.fill(0.0);
            }
        }
    }
}

/// Applies the backward rule of `node`, whose output gradient is `node.grad`.
fn backward_node(node: &Node, labels: &[usize], sink: &mut Sink<'_>) {
    let g = node.grad.as_slice();
    match node.op {
        Op::Input | Op::Param(_) => {}

        Op::MatMul(a, b) => {
            let (sa, sb) = (sink.lower[a.0].shape, sink.lower[b.0].shape);
            let (m, k, n) = (sa.dims[0], sa.dims[1], sb.dims[1]);
            // dA = G · Bᵀ, dB = Aᵀ · G.
            if let Some((mut da, accumulate)) = sink.take(a) {
                matmul_into(
                    &mut da,
                    g,
                    Transpose::No,
                    sink.value(b),
                    Transpose::Yes,
                    m,
                    n,
                    k,
                    accumulate,
                );
                sink.put(a, da);
            }
            if let Some((mut db, accumulate)) = sink.take(b) {
                matmul_into(
                    &mut db,
                    sink.value(a),
                    Transpose::Yes,
                    g,
                    Transpose::No,
                    k,
                    m,
                    n,
                    accumulate,
                );
                sink.put(b, db);
            }
        }

        Op::Linear(x, w, bias) => {
            let (batch, inputs) = sink.lower[x.0].shape.dims2();
            let outputs = sink.lower[w.0].shape.dims[0];
            // dX = G · W, dW = Gᵀ · X, dbias = column sums of G.
            if let Some((mut dx, accumulate)) = sink.take(x) {
                matmul_into(
                    &mut dx,
                    g,
                    Transpose::No,
                    sink.value(w),
                    Transpose::No,
                    batch,
                    outputs,
                    inputs,
                    accumulate,
                );
                sink.put(x, dx);
            }
            if let Some((mut dw, accumulate)) = sink.take(w) {
                matmul_into(
                    &mut dw,
                    g,
                    Transpose::Yes,
                    sink.value(x),
                    Transpose::No,
                    outputs,
                    batch,
                    inputs,
                    accumulate,
                );
                sink.put(w, dw);
            }
            if let Some(bias) = bias
                && let Some((mut db, accumulate)) = sink.take(bias)
            {
                if !accumulate {
                    db.fill(0.0);
                }
                sum_rows_into(&mut db, g);
                sink.put(bias, db);
            }
        }

        Op::Add(a, b) => {
            sink.write_each(a, |i| g[i]);
            let broadcast = sink.lower[a.0].shape != sink.lower[b.0].shape;
            if broadcast {
                if let Some((mut db, accumulate)) = sink.take(b) {
                    if !accumulate {
                        db.fill(0.0);
                    }
                    sum_rows_into(&mut db, g);
                    sink.put(b, db);
                }
            } else {
                sink.write_each(b, |i| g[i]);
            }
        }

        Op::Activation(x, activation) => {
            let Some((mut dx, accumulate)) = sink.take(x) else {
                return;
            };
            let (input, output) = (sink.value(x), node.value.as_slice());
            match (activation, accumulate) {
                (Activation::Relu, false) => {
                    for ((d, &y), &gy) in dx.iter_mut().zip(output).zip(g) {
                        *d = if y > 0.0 { gy } else { 0.0 };
                    }
                }
                (_, false) => {
                    for (i, d) in dx.iter_mut().enumerate() {
                        *d = g[i] * activation.derivative(input[i], output[i]);
                    }
                }
                (_, true) => {
                    for (i, d) in dx.iter_mut().enumerate() {
                        *d += g[i] * activation.derivative(input[i], output[i]);
                    }
                }
            }
            sink.put(x, dx);
        }

        Op::Softmax(x) => {
            let cols = *node.shape.dims().last().unwrap_or(&1);
            let y = node.value.as_slice();
            // dx_i = y_i * (g_i - sum_j g_j y_j), row by row.
            let dots: Vec<f32> = g
                .chunks_exact(cols)
                .zip(y.chunks_exact(cols))
                .map(|(gr, yr)| gr.iter().zip(yr).map(|(a, b)| a * b).sum())
                .collect();
            sink.write_each(x, |i| y[i] * (g[i] - dots[i / cols]));
        }

        Op::LogSoftmax(x) => {
            let cols = *node.shape.dims().last().unwrap_or(&1);
            let y = node.value.as_slice();
            // dx_i = g_i - softmax_i * sum_j g_j, where softmax_i = exp(y_i).
            let sums: Vec<f32> = g.chunks_exact(cols).map(|row| row.iter().sum()).collect();
            sink.write_each(x, |i| g[i] - y[i].exp() * sums[i / cols]);
        }

        Op::CrossEntropy {
            logits,
            labels_start,
        } => {
            let (batch, classes) = sink.lower[logits.0].shape.dims2();
            let labels = &labels[labels_start..labels_start + batch];
            let probs = node.aux.as_slice();
            let scale = g[0] / batch.max(1) as f32;
            // dlogits = (softmax - one_hot(label)) / batch.
            sink.write_each(logits, |i| {
                let one_hot = if labels[i / classes] == i % classes {
                    1.0
                } else {
                    0.0
                };
                scale * (probs[i] - one_hot)
            });
        }

        Op::BinaryCrossEntropy(logits, targets) => {
            let scale = g[0] / node_numel(sink, logits).max(1) as f32;
            let x = sink.value(logits).to_vec();
            let t = sink.value(targets).to_vec();
            sink.write_each(logits, |i| scale * (sigmoid(x[i]) - t[i]));
            sink.write_each(targets, |i| -scale * x[i]);
        }

        Op::Mse(prediction, target) => {
            let scale = 2.0 * g[0] / node_numel(sink, prediction).max(1) as f32;
            let diff: Vec<f32> = sink
                .value(prediction)
                .iter()
                .zip(sink.value(target))
                .map(|(p, t)| p - t)
                .collect();
            sink.write_each(prediction, |i| scale * diff[i]);
            sink.write_each(target, |i| -scale * diff[i]);
        }

        Op::Reshape(x) => sink.write_each(x, |i| g[i]),

        Op::Dropout(x) => {
            let mask = node.aux.as_slice();
            sink.write_each(x, |i| g[i] * mask[i]);
        }

        Op::Conv2d {
            x,
            weight,
            bias,
            params,
            relu,
        } => {
            let geo = ConvGeometry::new(
                sink.lower[x.0].shape.dims(),
                sink.lower[weight.0].shape.dims(),
                params,
            );
            let mut dx = sink.take(x);
            let mut dw = sink.take(weight);
            let mut db = bias.and_then(|b| sink.take(b));
            let (dx_ref, dw_ref, db_ref) = (as_grad(&mut dx), as_grad(&mut dw), as_grad(&mut db));
            conv::conv2d_backward(
                &geo,
                g,
                values_of(sink.lower, sink.params, x),
                values_of(sink.lower, sink.params, weight),
                &node.aux,
                relu.then_some(node.value.as_slice()),
                dx_ref,
                dw_ref,
                db_ref,
                sink.pool,
            );
            if let Some((buffer, _)) = dx {
                sink.put(x, buffer);
            }
            if let Some((buffer, _)) = dw {
                sink.put(weight, buffer);
            }
            if let (Some(b), Some((buffer, _))) = (bias, db) {
                sink.put(b, buffer);
            }
        }

        Op::MaxPool2d {
            x,
            kernel,
            stride,
            padding,
        } => {
            let geo = PoolGeometry::new(
                "max_pool2d",
                sink.lower[x.0].shape.dims(),
                kernel,
                stride,
                padding,
            );
            if let Some((mut dx, accumulate)) = sink.take(x) {
                conv::max_pool2d_backward(&mut dx, accumulate, g, &node.aux, &geo);
                sink.put(x, dx);
            }
        }

        Op::AvgPool2d {
            x,
            kernel,
            stride,
            padding,
        } => {
            let geo = PoolGeometry::new(
                "avg_pool2d",
                sink.lower[x.0].shape.dims(),
                kernel,
                stride,
                padding,
            );
            if let Some((mut dx, accumulate)) = sink.take(x) {
                if !accumulate {
                    dx.fill(0.0);
                }
                conv::avg_pool2d_backward(&mut dx, g, &geo);
                sink.put(x, dx);
            }
        }

        Op::GlobalAvgPool2d(x) => {
            let dims = sink.lower[x.0].shape.dims();
            let plane = dims[2] * dims[3];
            let scale = 1.0 / plane as f32;
            sink.write_each(x, |i| g[i / plane] * scale);
        }

        Op::BatchNorm {
            x,
            weight,
            bias,
            training,
        } => {
            let dims = sink.lower[x.0].shape.dims();
            let plane: usize = dims[2..].iter().product();
            let dims = (dims[0], dims[1], plane);
            let mut dx = sink.take(x);
            let mut dgamma = sink.take(weight);
            let mut dbeta = sink.take(bias);
            norm::batch_norm_backward(
                g,
                &node.aux,
                values_of(sink.lower, sink.params, weight),
                dims,
                training,
                as_grad(&mut dx),
                as_grad(&mut dgamma),
                as_grad(&mut dbeta),
            );
            for (var, buffer) in [(x, dx), (weight, dgamma), (bias, dbeta)] {
                if let Some((buffer, _)) = buffer {
                    sink.put(var, buffer);
                }
            }
        }

        Op::Recurrent { .. } => backward_recurrent(node, sink),

        Op::SwapLastAxes(x) => {
            let dims = node.shape.dims();
            let (a, c, b) = (dims[0], dims[1], dims[2]);
            if let Some((mut dx, accumulate)) = sink.take(x) {
                // The output is [a, c, b]; swapping its gradient back gives [a, b, c].
                let mut swapped = take_from_pool(sink.pool, dx.len());
                recurrent::swap_axes(&mut swapped, g, a, c, b);
                if accumulate {
                    for (d, s) in dx.iter_mut().zip(&swapped) {
                        *d += s;
                    }
                } else {
                    dx.copy_from_slice(&swapped);
                }
                sink.pool.push(swapped);
                sink.put(x, dx);
            }
        }
    }
}

/// Applies the backward rule of a recurrent node.
fn backward_recurrent(node: &Node, sink: &mut Sink<'_>) {
    let Op::Recurrent { x, weights, .. } = node.op else {
        unreachable!("backward_recurrent called on another op");
    };
    let mut dx = sink.take(x);
    let mut dw_ih = sink.take(weights.weight_ih);
    let mut dw_hh = sink.take(weights.weight_hh);
    let mut db_ih = sink.take(weights.bias_ih);
    let mut db_hh = sink.take(weights.bias_hh);
    let inputs = RecurrentInputs {
        x: values_of(sink.lower, sink.params, x),
        x_shape: sink.lower[x.0].shape.dims(),
        weight_ih: values_of(sink.lower, sink.params, weights.weight_ih),
        weight_hh: values_of(sink.lower, sink.params, weights.weight_hh),
    };
    let grads = RecurrentGrads {
        x: as_grad(&mut dx),
        weight_ih: as_grad(&mut dw_ih),
        weight_hh: as_grad(&mut dw_hh),
        bias_ih: as_grad(&mut db_ih),
        bias_hh: as_grad(&mut db_hh),
    };
    recurrent::recurrent_backward(node, &node.grad, inputs, grads, sink.pool);
    let buffers = [
        (x, dx),
        (weights.weight_ih, dw_ih),
        (weights.weight_hh, dw_hh),
        (weights.bias_ih, db_ih),
        (weights.bias_hh, db_hh),
    ];
    for (var, buffer) in buffers {
        if let Some((buffer, _)) = buffer {
            sink.put(var, buffer);
        }
    }
}

/// Borrows a buffer from [`Sink::take`] as a slice and its accumulate flag.
fn as_grad(buffer: &mut Option<(Vec<f32>, bool)>) -> Option<(&mut [f32], bool)> {
    buffer
        .as_mut()
        .map(|(values, accumulate)| (values.as_mut_slice(), *accumulate))
}

/// The values of `var`, read from the fields of a [`Sink`] so that its pool can be borrowed
/// mutably at the same time.
fn values_of<'n>(lower: &'n [Node], params: &'n Parameters, var: Var) -> &'n [f32] {
    let node = &lower[var.0];
    match node.op {
        Op::Param(id) => params.get(id).data(),
        _ => &node.value,
    }
}

fn node_numel(sink: &Sink<'_>, var: Var) -> usize {
    sink.lower[var.0].shape.numel()
}
