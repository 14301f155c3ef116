//! Recurrent layers over batch-first sequences (tanh RNN, LSTM and GRU cells) and their
//! backward rule, backpropagation through time.
//!
//! Shapes, with `G` the number of gates of the cell (1 for the RNN, 4 for the LSTM, 3 for the
//! GRU) and `H` the hidden size:
//!
//! - input `x: [batch, time, features]`;
//! - `weight_ih: [G * H, features]`, `weight_hh: [G * H, H]`, `bias_ih: [G * H]`,
//!   `bias_hh: [G * H]`, with the gates stacked in PyTorch's order (LSTM: input, forget, cell,
//!   output; GRU: reset, update, new);
//! - output `[batch, time, H]` (every hidden state) or `[batch, H]` (the last one).
//!
//! The initial hidden and cell states are zero. The cells follow PyTorch's equations:
//!
//! - RNN: `h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`;
//! - LSTM: `i, f, g, o` from `W_ih x + b_ih + W_hh h + b_hh`, `c' = σ(f) c + σ(i) tanh(g)`,
//!   `h' = σ(o) tanh(c')`;
//! - GRU: `r = σ(x_r + h_r)`, `z = σ(x_z + h_z)`, `n = tanh(x_n + r * h_n)`,
//!   `h' = (1 - z) n + z h`, where `x_*` include `b_ih` and `h_*` include `b_hh`.
//!
//! The input projection of all time steps is one matrix multiply; each step then multiplies
//! the previous hidden state by `weight_hhᵀ`. The backward pass walks the steps in reverse and
//! ends with one multiply each for the input gradient and the two weight gradients.

use serde::{Deserialize, Serialize};

use super::{Graph, Node, Op, Shape, Var, take_from_pool};
use crate::tensor::{Transpose, math, matmul_into, matmul_rows_into, sum_rows_into};

/// The cell of a recurrent layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecurrentCell {
    /// Elman RNN with tanh.
    Rnn,
    /// Long short-term memory (Hochreiter and Schmidhuber, 1997), without peepholes.
    Lstm,
    /// Gated recurrent unit (Cho et al., 2014), in PyTorch's form with the reset gate applied
    /// after the recurrent product.
    Gru,
}

impl RecurrentCell {
    /// The number of gates, which multiplies the hidden size in the weight shapes.
    pub fn gates(self) -> usize {
        match self {
            RecurrentCell::Rnn => 1,
            RecurrentCell::Lstm => 4,
            RecurrentCell::Gru => 3,
        }
    }

    /// The lower-case name used in configs and messages.
    pub fn name(self) -> &'static str {
        match self {
            RecurrentCell::Rnn => "rnn",
            RecurrentCell::Lstm => "lstm",
            RecurrentCell::Gru => "gru",
        }
    }
}

/// The sizes of one recurrent node.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    time: usize,
    features: usize,
    hidden: usize,
    gates: usize,
}

impl Dims {
    fn gate_width(&self) -> usize {
        self.gates * self.hidden
    }

    /// Offsets into the node's auxiliary buffer: the hidden states `h_0..h_T`
    /// (`[time + 1, batch, hidden]`), then the activated gates (`[time, batch, G * H]`), then
    /// the LSTM cell states `c_0..c_T` or the GRU recurrent products `h_n` (`[time, batch,
    /// hidden]`).
    fn aux_layout(&self, cell: RecurrentCell) -> (usize, usize, usize) {
        let states = (self.time + 1) * self.batch * self.hidden;
        let gates = self.time * self.batch * self.gate_width();
        let extra = match cell {
            RecurrentCell::Rnn => 0,
            RecurrentCell::Lstm => (self.time + 1) * self.batch * self.hidden,
            RecurrentCell::Gru => self.time * self.batch * self.hidden,
        };
        (states, gates, extra)
    }
}

/// The parameters of one recurrent layer on the tape.
#[derive(Debug, Clone, Copy)]
pub struct RecurrentWeights {
    /// `[G * H, features]`.
    pub weight_ih: Var,
    /// `[G * H, H]`.
    pub weight_hh: Var,
    /// `[G * H]`.
    pub bias_ih: Var,
    /// `[G * H]`.
    pub bias_hh: Var,
}

impl Graph<'_> {
    /// Records a recurrent layer over `x: [batch, time, features]`, giving `[batch, time, H]`
    /// with `return_sequences` or `[batch, H]` without. See the module documentation for the
    /// shapes of the weights and the equations of each cell.
    ///
    /// # Panics
    ///
    /// Panics, naming the shapes, if `x` is not 3-D, its time dimension is 0, or a weight
    /// does not fit the cell, the hidden size and the features.
    pub fn recurrent(
        &mut self,
        x: Var,
        weights: RecurrentWeights,
        cell: RecurrentCell,
        return_sequences: bool,
    ) -> Var {
        let dims = self.recurrent_dims(x, weights, cell);
        let Dims {
            batch,
            time,
            features,
            hidden,
            ..
        } = dims;
        let width = dims.gate_width();

        // The input projection of every step at once, rows in batch-first order `b * time + t`.
        let mut projected = self.ws.take_buffer(batch * time * width);
        let mut recurrent = self.ws.take_buffer(batch * width);
        let (states_len, gates_len, extra_len) = dims.aux_layout(cell);
        let mut aux = self.ws.take_buffer(states_len + gates_len + extra_len);
        let out_len = if return_sequences {
            batch * time * hidden
        } else {
            batch * hidden
        };
        let mut out = self.ws.take_buffer(out_len);

        let training = self.training;
        let xs = self.value(x);
        let w_ih = self.value(weights.weight_ih);
        let w_hh = self.value(weights.weight_hh);
        let b_ih = self.value(weights.bias_ih);
        let b_hh = self.value(weights.bias_hh);
        for row in projected.chunks_exact_mut(width) {
            row.copy_from_slice(b_ih);
        }
        // Evaluation multiplies row by row so that a prediction does not depend on the other
        // rows of its batch, as in `Graph::linear`.
        if training {
            let rows = batch * time;
            matmul_into(
                &mut projected,
                xs,
                Transpose::No,
                w_ih,
                Transpose::Yes,
                rows,
                features,
                width,
                true,
            );
        } else {
            matmul_rows_into(
                &mut projected,
                xs,
                w_ih,
                Transpose::Yes,
                batch * time,
                features,
                width,
                true,
            );
        }

        let (states, rest) = aux.split_at_mut(states_len);
        let (gates, extra) = rest.split_at_mut(gates_len);
        let step_len = batch * hidden;
        states[..step_len].fill(0.0);
        if cell == RecurrentCell::Lstm {
            extra[..step_len].fill(0.0);
        }
        for t in 0..time {
            for row in recurrent.chunks_exact_mut(width) {
                row.copy_from_slice(b_hh);
            }
            let (done, next) = states.split_at_mut((t + 1) * step_len);
            let previous = &done[t * step_len..];
            let next = &mut next[..step_len];
            if training {
                matmul_into(
                    &mut recurrent,
                    previous,
                    Transpose::No,
                    w_hh,
                    Transpose::Yes,
                    batch,
                    hidden,
                    width,
                    true,
                );
            } else {
                matmul_rows_into(
                    &mut recurrent,
                    previous,
                    w_hh,
                    Transpose::Yes,
                    batch,
                    hidden,
                    width,
                    true,
                );
            }
            let step_gates = &mut gates[t * batch * width..(t + 1) * batch * width];
            for b in 0..batch {
                let input = &projected[(b * time + t) * width..(b * time + t + 1) * width];
                let hidden_part = &recurrent[b * width..(b + 1) * width];
                let acts = &mut step_gates[b * width..(b + 1) * width];
                let h_prev = &previous[b * hidden..(b + 1) * hidden];
                let h = &mut next[b * hidden..(b + 1) * hidden];
                // The activations run over whole slices, which vectorizes them.
                match cell {
                    RecurrentCell::Rnn => {
                        for j in 0..hidden {
                            acts[j] = input[j] + hidden_part[j];
                        }
                        math::tanh_in_place(acts);
                        h.copy_from_slice(acts);
                    }
                    RecurrentCell::Lstm => {
                        let (c_done, c_next) = extra.split_at_mut((t + 1) * step_len);
                        let c_prev = &c_done[t * step_len + b * hidden..][..hidden];
                        let c = &mut c_next[b * hidden..(b + 1) * hidden];
                        for ((a, &x), &r) in acts.iter_mut().zip(input).zip(hidden_part) {
                            *a = x + r;
                        }
                        let (input_forget, rest) = acts.split_at_mut(2 * hidden);
                        let (cell_gate, output_gate) = rest.split_at_mut(hidden);
                        math::sigmoid_in_place(input_forget);
                        math::tanh_in_place(cell_gate);
                        math::sigmoid_in_place(output_gate);
                        for j in 0..hidden {
                            let (i, f, g) =
                                (input_forget[j], input_forget[hidden + j], cell_gate[j]);
                            c[j] = f * c_prev[j] + i * g;
                        }
                        h.copy_from_slice(c);
                        math::tanh_in_place(h);
                        for (h, &o) in h.iter_mut().zip(output_gate.iter()) {
                            *h *= o;
                        }
                    }
                    RecurrentCell::Gru => {
                        let h_n = &mut extra[t * step_len + b * hidden..][..hidden];
                        for j in 0..2 * hidden {
                            acts[j] = input[j] + hidden_part[j];
                        }
                        math::sigmoid_in_place(&mut acts[..2 * hidden]);
                        h_n.copy_from_slice(&hidden_part[2 * hidden..3 * hidden]);
                        for j in 0..hidden {
                            acts[2 * hidden + j] = input[2 * hidden + j] + acts[j] * h_n[j];
                        }
                        math::tanh_in_place(&mut acts[2 * hidden..3 * hidden]);
                        for j in 0..hidden {
                            let (z, n) = (acts[hidden + j], acts[2 * hidden + j]);
                            h[j] = (1.0 - z) * n + z * h_prev[j];
                        }
                    }
                }
            }
        }

        if return_sequences {
            for b in 0..batch {
                for t in 0..time {
                    let h = &states[(t + 1) * step_len + b * hidden..][..hidden];
                    out[(b * time + t) * hidden..][..hidden].copy_from_slice(h);
                }
            }
        } else {
            out.copy_from_slice(&states[time * step_len..]);
        }
        self.ws.pool.push(projected);
        self.ws.pool.push(recurrent);

        let shape = if return_sequences {
            Shape::new(&[batch, time, hidden])
        } else {
            Shape::new(&[batch, hidden])
        };
        let needs_grad = [
            x,
            weights.weight_ih,
            weights.weight_hh,
            weights.bias_ih,
            weights.bias_hh,
        ]
        .iter()
        .any(|&v| self.node(v).needs_grad);
        let var = self.push(
            Op::Recurrent {
                x,
                weights,
                cell,
                return_sequences,
            },
            shape,
            out,
            needs_grad,
        );
        self.ws.nodes[var.0].aux = aux;
        var
    }

    fn recurrent_dims(&self, x: Var, weights: RecurrentWeights, cell: RecurrentCell) -> Dims {
        let sx = self.node(x).shape;
        assert!(
            sx.rank == 3 && sx.dims[1] > 0,
            "{} needs input of shape [batch, time, features] with time > 0, got {:?}",
            cell.name(),
            sx.dims()
        );
        let (batch, time, features) = (sx.dims[0], sx.dims[1], sx.dims[2]);
        let s_hh = self.node(weights.weight_hh).shape;
        let gates = cell.gates();
        assert!(
            s_hh.rank == 2 && s_hh.dims[0] == gates * s_hh.dims[1],
            "{} needs weight_hh of shape [{gates} * hidden, hidden], got {:?}",
            cell.name(),
            s_hh.dims()
        );
        let hidden = s_hh.dims[1];
        let width = gates * hidden;
        let s_ih = self.node(weights.weight_ih).shape;
        assert!(
            s_ih.dims() == [width, features],
            "{} needs weight_ih of shape [{width}, {features}], got {:?}",
            cell.name(),
            s_ih.dims()
        );
        for bias in [weights.bias_ih, weights.bias_hh] {
            assert!(
                self.node(bias).shape.dims() == [width],
                "{} needs biases of shape [{width}], got {:?}",
                cell.name(),
                self.node(bias).shape.dims()
            );
        }
        Dims {
            batch,
            time,
            features,
            hidden,
            gates,
        }
    }

    /// Records the swap of the last two axes of a 3-D value: `[a, b, c]` becomes `[a, c, b]`.
    /// It turns batch-first sequences `[batch, time, channels]` into the channels-first layout
    /// of convolutions and back.
    ///
    /// # Panics
    ///
    /// Panics if `x` is not 3-D.
    pub fn swap_last_axes(&mut self, x: Var) -> Var {
        let shape = self.node(x).shape;
        assert!(
            shape.rank == 3,
            "swap_last_axes needs a 3-D value, got {:?}",
            shape.dims()
        );
        let (a, b, c) = (shape.dims[0], shape.dims[1], shape.dims[2]);
        let mut out = self.ws.take_buffer(shape.numel());
        swap_axes(&mut out, self.value(x), a, b, c);
        let needs_grad = self.node(x).needs_grad;
        self.push(Op::SwapLastAxes(x), Shape::new(&[a, c, b]), out, needs_grad)
    }
}

/// Writes `src: [a, b, c]` into `dst` as `[a, c, b]`.
pub(crate) fn swap_axes(dst: &mut [f32], src: &[f32], a: usize, b: usize, c: usize) {
    for outer in 0..a {
        let src = &src[outer * b * c..(outer + 1) * b * c];
        let dst = &mut dst[outer * b * c..(outer + 1) * b * c];
        for i in 0..b {
            for j in 0..c {
                dst[j * b + i] = src[i * c + j];
            }
        }
    }
}

/// The gradient buffers of a recurrent node's inputs, each `None` if that input needs no
/// gradient, with its accumulate flag.
pub(crate) struct RecurrentGrads<'g> {
    pub(crate) x: Option<(&'g mut [f32], bool)>,
    pub(crate) weight_ih: Option<(&'g mut [f32], bool)>,
    pub(crate) weight_hh: Option<(&'g mut [f32], bool)>,
    pub(crate) bias_ih: Option<(&'g mut [f32], bool)>,
    pub(crate) bias_hh: Option<(&'g mut [f32], bool)>,
}

/// The values a recurrent node's backward rule reads.
pub(crate) struct RecurrentInputs<'v> {
    pub(crate) x: &'v [f32],
    pub(crate) x_shape: &'v [usize],
    pub(crate) weight_ih: &'v [f32],
    pub(crate) weight_hh: &'v [f32],
}

/// Backpropagation through time for one recurrent node with output gradient `g`.
pub(crate) fn recurrent_backward(
    node: &Node,
    g: &[f32],
    inputs: RecurrentInputs<'_>,
    grads: RecurrentGrads<'_>,
    pool: &mut Vec<Vec<f32>>,
) {
    let Op::Recurrent {
        cell,
        return_sequences,
        ..
    } = node.op
    else {
        unreachable!("recurrent_backward called on another op");
    };
    let (batch, time, features) = (inputs.x_shape[0], inputs.x_shape[1], inputs.x_shape[2]);
    let hidden = *node
        .shape
        .dims()
        .last()
        .expect("a recurrent output has a hidden axis");
    let dims = Dims {
        batch,
        time,
        features,
        hidden,
        gates: cell.gates(),
    };
    let width = dims.gate_width();
    let step_len = batch * hidden;
    let (states_len, gates_len, _) = dims.aux_layout(cell);
    let states = &node.aux[..states_len];
    let gates = &node.aux[states_len..states_len + gates_len];
    let extra = &node.aux[states_len + gates_len..];

    // Pre-activation gradients: on the input side in batch-first rows, on the recurrent side
    // in time-major rows, so that each feeds one matrix multiply at the end.
    let mut d_input = take_from_pool(pool, batch * time * width);
    let mut d_recurrent = take_from_pool(pool, time * batch * width);
    let mut dh = take_from_pool(pool, step_len);
    let mut dh_prev = take_from_pool(pool, step_len);
    let mut dc = take_from_pool(pool, step_len);
    let mut tanh_c = take_from_pool(pool, hidden);
    dh.fill(0.0);
    dc.fill(0.0);

    for t in (0..time).rev() {
        if return_sequences {
            for b in 0..batch {
                let src = &g[(b * time + t) * hidden..][..hidden];
                for (d, s) in dh[b * hidden..(b + 1) * hidden].iter_mut().zip(src) {
                    *d += s;
                }
            }
        } else if t == time - 1 {
            for (d, s) in dh.iter_mut().zip(g) {
                *d += s;
            }
        }

        let step_gates = &gates[t * batch * width..(t + 1) * batch * width];
        let d_step = &mut d_recurrent[t * batch * width..(t + 1) * batch * width];
        for b in 0..batch {
            let acts = &step_gates[b * width..(b + 1) * width];
            let dh_b = &dh[b * hidden..(b + 1) * hidden];
            let d_rec = &mut d_step[b * width..(b + 1) * width];
            let d_in = &mut d_input[(b * time + t) * width..][..width];
            match cell {
                RecurrentCell::Rnn => {
                    for j in 0..hidden {
                        let h = acts[j];
                        let da = dh_b[j] * (1.0 - h * h);
                        d_rec[j] = da;
                        d_in[j] = da;
                    }
                }
                RecurrentCell::Lstm => {
                    let c = &extra[(t + 1) * step_len + b * hidden..][..hidden];
                    let c_prev = &extra[t * step_len + b * hidden..][..hidden];
                    let dc_b = &mut dc[b * hidden..(b + 1) * hidden];
                    // The same tanh as the forward pass.
                    tanh_c.copy_from_slice(c);
                    math::tanh_in_place(&mut tanh_c);
                    for j in 0..hidden {
                        let (i, f, g, o) = (
                            acts[j],
                            acts[hidden + j],
                            acts[2 * hidden + j],
                            acts[3 * hidden + j],
                        );
                        let d_o = dh_b[j] * tanh_c[j];
                        let dc_total = dc_b[j] + dh_b[j] * o * (1.0 - tanh_c[j] * tanh_c[j]);
                        let d_i = dc_total * g;
                        let d_f = dc_total * c_prev[j];
                        let d_g = dc_total * i;
                        dc_b[j] = dc_total * f;
                        d_rec[j] = d_i * i * (1.0 - i);
                        d_rec[hidden + j] = d_f * f * (1.0 - f);
                        d_rec[2 * hidden + j] = d_g * (1.0 - g * g);
                        d_rec[3 * hidden + j] = d_o * o * (1.0 - o);
                    }
                    d_in.copy_from_slice(d_rec);
                }
                RecurrentCell::Gru => {
                    let h_n = &extra[t * step_len + b * hidden..][..hidden];
                    let h_prev = &states[t * step_len + b * hidden..][..hidden];
                    for j in 0..hidden {
                        let (r, z, n) = (acts[j], acts[hidden + j], acts[2 * hidden + j]);
                        let d_n = dh_b[j] * (1.0 - z) * (1.0 - n * n);
                        let d_z = dh_b[j] * (h_prev[j] - n) * z * (1.0 - z);
                        let d_r = d_n * h_n[j] * r * (1.0 - r);
                        d_in[j] = d_r;
                        d_in[hidden + j] = d_z;
                        d_in[2 * hidden + j] = d_n;
                        d_rec[j] = d_r;
                        d_rec[hidden + j] = d_z;
                        d_rec[2 * hidden + j] = d_n * r;
                    }
                }
            }
        }

        // dh_{t-1} = d_recurrent_t · W_hh, plus the GRU's direct path z * dh_t.
        if t > 0 {
            matmul_into(
                &mut dh_prev,
                d_step,
                Transpose::No,
                inputs.weight_hh,
                Transpose::No,
                batch,
                width,
                hidden,
                false,
            );
            if cell == RecurrentCell::Gru {
                for b in 0..batch {
                    let z = &step_gates[b * width + hidden..][..hidden];
                    for j in 0..hidden {
                        dh_prev[b * hidden + j] += z[j] * dh[b * hidden + j];
                    }
                }
            }
            std::mem::swap(&mut dh, &mut dh_prev);
        }
    }

    if let Some((dw, accumulate)) = grads.weight_hh {
        // dW_hh = d_recurrentᵀ · [h_0 .. h_{T-1}].
        matmul_into(
            dw,
            &d_recurrent,
            Transpose::Yes,
            &states[..time * step_len],
            Transpose::No,
            width,
            time * batch,
            hidden,
            accumulate,
        );
    }
    if let Some((db, accumulate)) = grads.bias_hh {
        if !accumulate {
            db.fill(0.0);
        }
        sum_rows_into(db, &d_recurrent);
    }
    if let Some((dw, accumulate)) = grads.weight_ih {
        matmul_into(
            dw,
            &d_input,
            Transpose::Yes,
            inputs.x,
            Transpose::No,
            width,
            batch * time,
            features,
            accumulate,
        );
    }
    if let Some((db, accumulate)) = grads.bias_ih {
        if !accumulate {
            db.fill(0.0);
        }
        sum_rows_into(db, &d_input);
    }
    if let Some((dx, accumulate)) = grads.x {
        matmul_into(
            dx,
            &d_input,
            Transpose::No,
            inputs.weight_ih,
            Transpose::No,
            batch * time,
            width,
            features,
            accumulate,
        );
    }
    for buffer in [d_input, d_recurrent, dh, dh_prev, dc, tanh_c] {
        pool.push(buffer);
    }
}
