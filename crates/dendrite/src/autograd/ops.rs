//! Forward rules of the recorded operations.

use serde::{Deserialize, Serialize};

use super::{Graph, Op, Shape, Var};
use crate::tensor::{Transpose, add_row_broadcast, matmul_into, matmul_rows_into};

/// Elementwise activation functions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Activation {
    /// `x`.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `x` for `x > 0`, else `slope * x`.
    LeakyRelu { slope: f32 },
    /// `x` for `x > 0`, else `alpha * (exp(x) - 1)`.
    Elu { alpha: f32 },
    /// `x * Φ(x)` with the exact normal CDF Φ (PyTorch's default GELU).
    Gelu,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// The Heaviside step: 1 for `x >= 0`, else 0. Its gradient is 0 everywhere it exists, so
    /// gradient descent cannot train through it; the perceptron rule can.
    Step,
}

impl Activation {
    /// Applies the function to one value.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu { slope } => {
                if x > 0.0 {
                    x
                } else {
                    slope * x
                }
            }
            Activation::Elu { alpha } => {
                if x > 0.0 {
                    x
                } else {
                    alpha * x.exp_m1()
                }
            }
            Activation::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => x.tanh(),
            Activation::Step => {
                if x >= 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// Returns the derivative at input `x`, given the output `y = apply(x)`.
    pub fn derivative(self, x: f32, y: f32) -> f32 {
        match self {
            Activation::Identity => 1.0,
            Activation::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu { slope } => {
                if x > 0.0 {
                    1.0
                } else {
                    slope
                }
            }
            Activation::Elu { alpha } => {
                if x > 0.0 {
                    1.0
                } else {
                    y + alpha
                }
            }
            Activation::Gelu => {
                let cdf = 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2));
                let pdf = (-0.5 * x * x).exp()
                    * (0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2);
                cdf + x * pdf
            }
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Tanh => 1.0 - y * y,
            Activation::Step => 0.0,
        }
    }
}

/// The logistic function, written so that neither branch overflows.
pub(crate) fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Writes the softmax of each row of `src` into `dst`; the row maximum is subtracted first so
/// that large logits do not overflow.
pub(crate) fn softmax_rows(dst: &mut [f32], src: &[f32], cols: usize) {
    for (out, row) in dst.chunks_exact_mut(cols).zip(src.chunks_exact(cols)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for (o, &x) in out.iter_mut().zip(row) {
            *o = (x - max).exp();
            sum += *o;
        }
        let inv = 1.0 / sum;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// Returns the row maximum and `ln(sum(exp(row - max)))`. Callers write `x - lse` as
/// `(x - max) - ln_sum`, which is exact for the row maximum even when the logits are large.
pub(crate) fn max_and_log_sum(row: &[f32]) -> (f32, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    (max, sum.ln())
}

impl Graph<'_> {
    /// Records `a · b` for `a: m x k` and `b: k x n`, giving `m x n`.
    ///
    /// # Panics
    ///
    /// Panics if either operand is not 2-D or the inner dimensions differ.
    pub fn matmul(&mut self, a: Var, b: Var) -> Var {
        let (sa, sb) = (self.node(a).shape, self.node(b).shape);
        assert!(
            sa.rank == 2 && sb.rank == 2 && sa.dims[1] == sb.dims[0],
            "matmul needs m x k and k x n, got {:?} and {:?}",
            sa.dims(),
            sb.dims()
        );
        let (m, k, n) = (sa.dims[0], sa.dims[1], sb.dims[1]);
        let mut out = self.ws.take_buffer(m * n);
        matmul_into(
            &mut out,
            self.value(a),
            Transpose::No,
            self.value(b),
            Transpose::No,
            m,
            k,
            n,
            false,
        );
        let needs_grad = self.node(a).needs_grad || self.node(b).needs_grad;
        self.push(Op::MatMul(a, b), Shape::new(&[m, n]), out, needs_grad)
    }

    /// Records a dense layer, `x · wᵀ + bias`, for `x: batch x in`, `w: out x in` and
    /// `bias: out`, giving `batch x out`. Inputs of higher rank are flattened after the batch
    /// dimension.
    ///
    /// # Panics
    ///
    /// Panics if the shapes do not fit.
    pub fn linear(&mut self, x: Var, w: Var, bias: Option<Var>) -> Var {
        let (batch, inputs) = self.node(x).shape.dims2();
        let sw = self.node(w).shape;
        assert!(
            sw.rank == 2 && sw.dims[1] == inputs,
            "linear layer with weight {:?} cannot take input of shape {:?}",
            sw.dims(),
            self.node(x).shape.dims()
        );
        let outputs = sw.dims[0];
        let mut out = self.ws.take_buffer(batch * outputs);
        if let Some(bias) = bias {
            assert_eq!(
                self.node(bias).shape.dims(),
                &[outputs],
                "bias shape must be [{outputs}]"
            );
            // The buffer's old contents are overwritten with the bias, then the product is added.
            for row in out.chunks_exact_mut(outputs.max(1)) {
                row.copy_from_slice(self.value(bias));
            }
        }
        if self.training {
            matmul_into(
                &mut out,
                self.value(x),
                Transpose::No,
                self.value(w),
                Transpose::Yes,
                batch,
                inputs,
                outputs,
                bias.is_some(),
            );
        } else {
            // Evaluation multiplies row by row so that a prediction does not depend on the
            // other rows of its batch.
            let (xs, ws) = (self.value(x), self.value(w));
            matmul_rows_into(
                &mut out,
                xs,
                ws,
                Transpose::Yes,
                batch,
                inputs,
                outputs,
                bias.is_some(),
            );
        }
        let needs_grad = self.node(x).needs_grad
            || self.node(w).needs_grad
            || bias.is_some_and(|b| self.node(b).needs_grad);
        self.push(
            Op::Linear(x, w, bias),
            Shape::new(&[batch, outputs]),
            out,
            needs_grad,
        )
    }

    /// Records `a + b`, where `b` has the shape of `a` or is a 1-D row as long as the last
    /// dimension of `a` and is added to every row.
    ///
    /// # Panics
    ///
    /// Panics if the shapes do not fit either form.
    pub fn add(&mut self, a: Var, b: Var) -> Var {
        let (sa, sb) = (self.node(a).shape, self.node(b).shape);
        let cols = *sa.dims().last().unwrap_or(&1);
        let broadcast = sa != sb;
        assert!(
            !broadcast || (sb.rank == 1 && sb.dims[0] == cols),
            "add needs equal shapes or a row of {cols} values, got {:?} and {:?}",
            sa.dims(),
            sb.dims()
        );
        let mut out = self.ws.take_buffer(sa.numel());
        if broadcast {
            add_row_broadcast(&mut out, Some(self.value(a)), self.value(b));
        } else {
            for ((o, x), y) in out.iter_mut().zip(self.value(a)).zip(self.value(b)) {
                *o = x + y;
            }
        }
        let needs_grad = self.node(a).needs_grad || self.node(b).needs_grad;
        self.push(Op::Add(a, b), sa, out, needs_grad)
    }

    /// Records an elementwise activation.
    pub fn activation(&mut self, x: Var, activation: Activation) -> Var {
        let shape = self.node(x).shape;
        let mut out = self.ws.take_buffer(shape.numel());
        match activation {
            // The common case gets a loop the compiler can vectorize.
            Activation::Relu => {
                for (o, &v) in out.iter_mut().zip(self.value(x)) {
                    *o = v.max(0.0);
                }
            }
            _ => {
                for (o, &v) in out.iter_mut().zip(self.value(x)) {
                    *o = activation.apply(v);
                }
            }
        }
        let needs_grad = self.node(x).needs_grad;
        self.push(Op::Activation(x, activation), shape, out, needs_grad)
    }

    /// Records the softmax over the last dimension.
    pub fn softmax(&mut self, x: Var) -> Var {
        let shape = self.node(x).shape;
        let cols = *shape.dims().last().unwrap_or(&1);
        let mut out = self.ws.take_buffer(shape.numel());
        softmax_rows(&mut out, self.value(x), cols);
        let needs_grad = self.node(x).needs_grad;
        self.push(Op::Softmax(x), shape, out, needs_grad)
    }

    /// Records the log-softmax over the last dimension, computed as `x - logsumexp(x)` so that
    /// it stays finite for any finite logits.
    pub fn log_softmax(&mut self, x: Var) -> Var {
        let shape = self.node(x).shape;
        let cols = *shape.dims().last().unwrap_or(&1);
        let mut out = self.ws.take_buffer(shape.numel());
        for (o, row) in out
            .chunks_exact_mut(cols)
            .zip(self.value(x).chunks_exact(cols))
        {
            let (max, log_sum) = max_and_log_sum(row);
            for (o, &v) in o.iter_mut().zip(row) {
                *o = (v - max) - log_sum;
            }
        }
        let needs_grad = self.node(x).needs_grad;
        self.push(Op::LogSoftmax(x), shape, out, needs_grad)
    }

    /// Records the mean cross-entropy between `logits: batch x classes` and class indices,
    /// fused with log-softmax so that huge logits give a finite loss. Returns a scalar.
    ///
    /// # Panics
    ///
    /// Panics if `labels.len()` differs from the batch size or a label is not below the
    /// number of classes.
    pub fn cross_entropy(&mut self, logits: Var, labels: &[usize]) -> Var {
        let (batch, classes) = self.node(logits).shape.dims2();
        assert_eq!(
            labels.len(),
            batch,
            "cross-entropy got {} labels for a batch of {batch}",
            labels.len()
        );
        let labels_start = self.ws.labels.len();
        self.ws.labels.extend_from_slice(labels);

        let mut probs = self.ws.take_buffer(batch * classes);
        let mut total = 0.0f64;
        for ((p, row), &label) in probs
            .chunks_exact_mut(classes)
            .zip(self.value(logits).chunks_exact(classes))
            .zip(labels)
        {
            assert!(
                label < classes,
                "label {label} is not below the {classes} classes"
            );
            let (max, log_sum) = max_and_log_sum(row);
            for (p, &v) in p.iter_mut().zip(row) {
                *p = ((v - max) - log_sum).exp();
            }
            total += (log_sum - (row[label] - max)) as f64;
        }
        let mut out = self.ws.take_buffer(1);
        out[0] = (total / batch.max(1) as f64) as f32;

        let needs_grad = self.node(logits).needs_grad;
        let var = self.push(
            Op::CrossEntropy {
                logits,
                labels_start,
            },
            Shape::new(&[]),
            out,
            needs_grad,
        );
        self.ws.nodes[var.0].aux = probs;
        var
    }

    /// Records the mean binary cross-entropy between logits and targets of the same shape,
    /// computed as `max(x, 0) - x * t + ln(1 + exp(-|x|))` so that it never takes `log(0)`.
    /// Returns a scalar.
    ///
    /// # Panics
    ///
    /// Panics if the shapes differ.
    pub fn binary_cross_entropy(&mut self, logits: Var, targets: Var) -> Var {
        let shape = self.node(logits).shape;
        assert_eq!(
            shape.numel(),
            self.node(targets).shape.numel(),
            "binary cross-entropy: logits and targets differ in size"
        );
        let total: f64 = self
            .value(logits)
            .iter()
            .zip(self.value(targets))
            .map(|(&x, &t)| (x.max(0.0) - x * t + (-x.abs()).exp().ln_1p()) as f64)
            .sum();
        let mut out = self.ws.take_buffer(1);
        out[0] = (total / shape.numel().max(1) as f64) as f32;
        let needs_grad = self.node(logits).needs_grad || self.node(targets).needs_grad;
        self.push(
            Op::BinaryCrossEntropy(logits, targets),
            Shape::new(&[]),
            out,
            needs_grad,
        )
    }

    /// Records the mean squared error between two values of the same size. Returns a scalar.
    ///
    /// # Panics
    ///
    /// Panics if the sizes differ.
    pub fn mse(&mut self, prediction: Var, target: Var) -> Var {
        let numel = self.node(prediction).shape.numel();
        assert_eq!(
            numel,
            self.node(target).shape.numel(),
            "mse: prediction and target differ in size"
        );
        let total: f64 = self
            .value(prediction)
            .iter()
            .zip(self.value(target))
            .map(|(&p, &t)| ((p - t) as f64).powi(2))
            .sum();
        let mut out = self.ws.take_buffer(1);
        out[0] = (total / numel.max(1) as f64) as f32;
        let needs_grad = self.node(prediction).needs_grad || self.node(target).needs_grad;
        self.push(
            Op::Mse(prediction, target),
            Shape::new(&[]),
            out,
            needs_grad,
        )
    }

    /// Records the same values under a new shape with the same number of elements.
    ///
    /// # Panics
    ///
    /// Panics if the element counts differ.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Var {
        let shape = Shape::new(shape);
        assert_eq!(
            shape.numel(),
            self.node(x).shape.numel(),
            "cannot reshape {:?} to {:?}",
            self.node(x).shape.dims(),
            shape.dims()
        );
        let mut out = self.ws.take_buffer(shape.numel());
        out.copy_from_slice(self.value(x));
        let needs_grad = self.node(x).needs_grad;
        self.push(Op::Reshape(x), shape, out, needs_grad)
    }

    /// Records inverted dropout: in a training pass each value is zeroed with probability
    /// `rate` and the rest are scaled by `1 / (1 - rate)`, so the expected value is unchanged.
    /// In an evaluation pass it returns `x` itself.
    ///
    /// # Panics
    ///
    /// Panics if `rate` is not in `[0, 1)`.
    pub fn dropout(&mut self, x: Var, rate: f32) -> Var {
        assert!(
            (0.0..1.0).contains(&rate),
            "dropout rate must be in [0, 1), got {rate}"
        );
        if !self.training || rate == 0.0 {
            return x;
        }
        let shape = self.node(x).shape;
        let scale = 1.0 / (1.0 - rate);
        let mut mask = self.ws.take_buffer(shape.numel());
        for m in mask.iter_mut() {
            *m = if self.ws.rng.uniform() < rate {
                0.0
            } else {
                scale
            };
        }
        let mut out = self.ws.take_buffer(shape.numel());
        for ((o, &v), &m) in out.iter_mut().zip(self.value(x)).zip(&mask) {
            *o = v * m;
        }
        let needs_grad = self.node(x).needs_grad;
        let var = self.push(Op::Dropout(x), shape, out, needs_grad);
        self.ws.nodes[var.0].aux = mask;
        var
    }
}
