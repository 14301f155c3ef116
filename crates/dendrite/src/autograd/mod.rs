//! Reverse-mode automatic differentiation on a tape.
//!
//! A [`Graph`] records each operation of the forward pass as a node that keeps its output and
//! what its backward rule needs. [`Graph::backward`] walks the nodes in reverse and writes the
//! gradient of a scalar loss with respect to every parameter into the [`Workspace`].
//!
//! The workspace outlives the graph and keeps its buffers, so after the first training step a
//! step of the same shapes allocates no new tensor memory.
//!
//! ```
//! use dendrite::autograd::{Graph, Parameters, Workspace};
//! use dendrite::tensor::Tensor;
//!
//! let mut params = Parameters::new();
//! let w = params.push("w", Tensor::from_vec(&[1, 2], vec![0.5, -1.0]));
//! let mut workspace = Workspace::new();
//! let mut graph = Graph::new(&params, &mut workspace, true);
//! let x = graph.input(&Tensor::from_vec(&[1, 2], vec![2.0, 3.0]));
//! let wv = graph.param(w);
//! let y = graph.linear(x, wv, None); // [1, 1]: 0.5 * 2 - 1 * 3 = -2
//! let target = graph.input(&Tensor::from_vec(&[1, 1], vec![0.0]));
//! let loss = graph.mse(y, target); // (-2)^2 = 4
//! assert_eq!(graph.value(loss), &[4.0]);
//! graph.backward(loss);
//! assert_eq!(workspace.gradient(w), &[-8.0, -12.0]); // 2 * (-2) * x
//! ```

mod backward;
mod conv;
mod norm;
mod ops;
mod params;
mod recurrent;

pub use conv::Conv2dParams;
pub use norm::{BatchNormState, BatchStatistics};
pub use ops::Activation;
pub use params::{ParamId, Parameters};
pub use recurrent::{RecurrentCell, RecurrentWeights};

use crate::rng::Rng;
use crate::tensor::Tensor;

/// A handle to a value recorded on a [`Graph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var(usize);

/// The shape of a recorded value: up to 6 dimensions, stored inline so that recording a node
/// allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    dims: [usize; 6],
    rank: usize,
}

impl Shape {
    pub(crate) fn new(dims: &[usize]) -> Self {
        assert!(
            dims.len() <= 6,
            "tensors have at most 6 dimensions, got shape {dims:?}"
        );
        let mut inline = [0; 6];
        inline[..dims.len()].copy_from_slice(dims);
        Shape {
            dims: inline,
            rank: dims.len(),
        }
    }

    pub(crate) fn dims(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    pub(crate) fn numel(&self) -> usize {
        self.dims().iter().product()
    }

    /// Rows and columns when the first dimension is the batch and the others are flattened.
    pub(crate) fn dims2(&self) -> (usize, usize) {
        match self.dims().split_first() {
            Some((&rows, rest)) => (rows, rest.iter().product()),
            None => (1, 1),
        }
    }
}

/// The operation that produced a node, with the inputs its backward rule needs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    /// Data fed in from outside; it gets no gradient.
    Input,
    /// A trainable parameter; its value lives in [`Parameters`], its gradient in the workspace.
    Param(ParamId),
    /// `a · b` for `a: m x k`, `b: k x n`.
    MatMul(Var, Var),
    /// `x · wᵀ + b` for `x: batch x in`, `w: out x in`, `b: out`.
    Linear(Var, Var, Option<Var>),
    /// `a + b`, where `b` has the shape of `a` or is one row broadcast over the rows of `a`.
    Add(Var, Var),
    /// An elementwise activation.
    Activation(Var, Activation),
    /// Softmax over the last dimension.
    Softmax(Var),
    /// Log-softmax over the last dimension.
    LogSoftmax(Var),
    /// Mean cross-entropy of logits against class indices `labels[start..start + rows]`; the
    /// node's auxiliary buffer keeps the softmax probabilities.
    CrossEntropy { logits: Var, labels_start: usize },
    /// Mean binary cross-entropy of logits against targets in `[0, 1]`.
    BinaryCrossEntropy(Var, Var),
    /// Mean squared error.
    Mse(Var, Var),
    /// The same values with another shape.
    Reshape(Var),
    /// Inverted dropout; the node's auxiliary buffer keeps the mask, 0 or `1 / (1 - rate)`.
    Dropout(Var),
    /// 2-D convolution of `x: [n, c_in, h, w]` with `weight: [c_out, c_in / groups, kh, kw]`
    /// and an optional `bias: [c_out]`. In a training pass where the weight needs a gradient
    /// and the convolution goes through im2col, the node's auxiliary buffer keeps the im2col
    /// matrices of all images. Otherwise it is empty. With `relu` true, the node's value is
    /// `max(conv, 0)`.
    Conv2d {
        x: Var,
        weight: Var,
        bias: Option<Var>,
        params: Conv2dParams,
        relu: bool,
    },
    /// 2-D max pooling. The node's auxiliary buffer keeps, for each output value, the index
    /// of its maximum within its input plane (`ih * w + iw`) as an exact `f32`.
    MaxPool2d {
        x: Var,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    },
    /// 2-D average pooling, dividing by the full kernel area.
    AvgPool2d {
        x: Var,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
    },
    /// The mean of each channel of `[n, c, h, w]` over its positions, giving `[n, c]`.
    GlobalAvgPool2d(Var),
    /// Batch normalization of `x: [n, c, ...]` over every dimension but 1, with
    /// `weight: [c]` and `bias: [c]`. The node's auxiliary buffer keeps the normalized input
    /// followed by `1 / sqrt(var + epsilon)` of each channel. `training` records whether the
    /// batch statistics (which depend on `x`) or constant running statistics were used.
    BatchNorm {
        x: Var,
        weight: Var,
        bias: Var,
        training: bool,
    },
    /// A recurrent layer over `x: [batch, time, features]` (see [`Graph::recurrent`]). The
    /// node's auxiliary buffer keeps the hidden states, the activated gates and the LSTM cell
    /// states or GRU recurrent products of every step.
    Recurrent {
        x: Var,
        weights: RecurrentWeights,
        cell: RecurrentCell,
        return_sequences: bool,
    },
    /// The last two axes of a 3-D value swapped.
    SwapLastAxes(Var),
}

#[derive(Debug)]
pub(crate) struct Node {
    op: Op,
    shape: Shape,
    /// Output values; empty for [`Op::Param`], whose value lives in [`Parameters`].
    value: Vec<f32>,
    /// Extra values the backward rule needs (softmax probabilities for cross-entropy).
    aux: Vec<f32>,
    /// Gradient of the loss with respect to this node's output; empty until written.
    grad: Vec<f32>,
    needs_grad: bool,
}

/// Buffers that persist across training steps: recorded nodes, recycled memory and the
/// parameter gradients of the last backward pass.
#[derive(Debug)]
pub struct Workspace {
    nodes: Vec<Node>,
    pool: Vec<Vec<f32>>,
    labels: Vec<usize>,
    param_grads: Vec<Vec<f32>>,
    param_grad_written: Vec<bool>,
    /// The batch statistics recorded by batch normalizations in the last training pass.
    batch_stats: Vec<norm::BatchStatistics>,
    /// The generator behind dropout masks; it carries over from step to step.
    rng: Rng,
}

impl Workspace {
    /// Creates an empty workspace whose dropout masks come from seed 0.
    pub fn new() -> Self {
        Workspace::default()
    }

    /// Creates an empty workspace whose dropout masks come from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        Workspace {
            rng: Rng::new(seed),
            ..Workspace::default()
        }
    }

    /// Restarts the dropout masks from `seed`, keeping the buffers. The masks drawn next are
    /// those of a new workspace created with [`Workspace::with_seed`].
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
    }

    /// The gradient of parameter `id` from the last [`Graph::backward`].
    ///
    /// # Panics
    ///
    /// Panics if no backward pass has run since the workspace was created.
    pub fn gradient(&self, id: ParamId) -> &[f32] {
        &self.param_grads[id]
    }

    /// The gradients of all parameters from the last backward pass, in id order, each laid
    /// out like its parameter.
    pub fn gradients(&self) -> &[Vec<f32>] {
        &self.param_grads
    }

    /// The total capacity, in values, of every buffer the workspace holds. After the first
    /// step of a fixed-shape training loop it stays the same.
    pub fn capacity(&self) -> usize {
        let nodes: usize = self
            .nodes
            .iter()
            .map(|n| n.value.capacity() + n.aux.capacity() + n.grad.capacity())
            .sum();
        let pool: usize = self.pool.iter().map(Vec::capacity).sum();
        let grads: usize = self.param_grads.iter().map(Vec::capacity).sum();
        nodes + pool + grads + self.batch_statistics_capacity()
    }

    /// Takes a buffer of `len` values with unspecified contents, reusing a returned one when
    /// possible.
    fn take_buffer(&mut self, len: usize) -> Vec<f32> {
        take_from_pool(&mut self.pool, len)
    }

    /// Returns every node's buffers to the pool and clears the tape.
    fn recycle(&mut self) {
        for node in self.nodes.drain(..) {
            for buffer in [node.value, node.aux, node.grad] {
                if buffer.capacity() > 0 {
                    self.pool.push(buffer);
                }
            }
        }
        self.labels.clear();
        self.recycle_batch_statistics();
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Workspace {
            nodes: Vec::new(),
            pool: Vec::new(),
            labels: Vec::new(),
            param_grads: Vec::new(),
            param_grad_written: Vec::new(),
            batch_stats: Vec::new(),
            rng: Rng::new(0),
        }
    }
}

/// Takes a buffer of `len` values from `pool`: the smallest one that fits, so that a step that
/// repeats the previous step's requests gets every buffer back without allocating. The values
/// are left over from the buffer's last use, so every caller writes all of them before
/// reading any.
pub(crate) fn take_from_pool(pool: &mut Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let best = pool
        .iter()
        .enumerate()
        .filter(|(_, b)| b.capacity() >= len)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i);
    let mut buffer = match best {
        Some(i) => pool.swap_remove(i),
        None => Vec::with_capacity(len),
    };
    if buffer.len() >= len {
        buffer.truncate(len);
    } else {
        buffer.resize(len, 0.0);
    }
    buffer
}

/// The tape of one forward pass over a set of [`Parameters`].
///
/// Creating a graph clears the workspace's previous tape. With `training` false, layers that
/// behave differently in evaluation (dropout, batch normalization) take their evaluation path.
pub struct Graph<'a> {
    params: &'a Parameters,
    ws: &'a mut Workspace,
    training: bool,
}

impl<'a> Graph<'a> {
    /// Starts a new tape over `params`, reusing the buffers of `workspace`.
    pub fn new(params: &'a Parameters, workspace: &'a mut Workspace, training: bool) -> Self {
        workspace.recycle();
        Graph {
            params,
            ws: workspace,
            training,
        }
    }

    /// Whether this pass is a training pass.
    pub fn is_training(&self) -> bool {
        self.training
    }

    /// The parameters this graph reads.
    pub fn params(&self) -> &Parameters {
        self.params
    }

    /// The values of `var`, row-major.
    pub fn value(&self, var: Var) -> &[f32] {
        let node = &self.ws.nodes[var.0];
        match node.op {
            Op::Param(id) => self.params.get(id).data(),
            _ => &node.value,
        }
    }

    /// The shape of `var`.
    pub fn shape(&self, var: Var) -> &[usize] {
        let node = &self.ws.nodes[var.0];
        node.shape.dims()
    }

    /// Copies `var` out as a tensor.
    pub fn to_tensor(&self, var: Var) -> Tensor {
        Tensor::from_vec(self.shape(var), self.value(var).to_vec())
    }

    /// The gradient of the loss with respect to `var` after [`Graph::backward`], or `None` if
    /// the loss does not depend on it. Parameter gradients are read from the workspace.
    pub fn grad(&self, var: Var) -> Option<&[f32]> {
        let node = &self.ws.nodes[var.0];
        match node.op {
            Op::Param(id) => self.ws.param_grads.get(id).map(Vec::as_slice),
            _ if node.grad.is_empty() => None,
            _ => Some(&node.grad),
        }
    }

    /// Records a constant input; it receives no gradient.
    pub fn input(&mut self, tensor: &Tensor) -> Var {
        let mut value = self.ws.take_buffer(tensor.numel());
        value.copy_from_slice(tensor.data());
        self.push(Op::Input, Shape::new(tensor.shape()), value, false)
    }

    /// Records a constant input given as a shape and row-major values.
    ///
    /// # Panics
    ///
    /// Panics if the number of values does not match the shape.
    pub fn input_slice(&mut self, shape: &[usize], values: &[f32]) -> Var {
        let shape = Shape::new(shape);
        assert_eq!(
            shape.numel(),
            values.len(),
            "input of shape {:?} needs {} values",
            shape.dims(),
            shape.numel()
        );
        let mut value = self.ws.take_buffer(values.len());
        value.copy_from_slice(values);
        self.push(Op::Input, shape, value, false)
    }

    /// Records a constant input of `shape` whose values `fill` writes in place, which saves a
    /// copy when the caller gathers a batch. `fill` must write every value, because the
    /// buffer it gets contains whatever a previous step left there.
    pub fn input_with(&mut self, shape: &[usize], fill: impl FnOnce(&mut [f32])) -> Var {
        let shape = Shape::new(shape);
        let mut value = self.ws.take_buffer(shape.numel());
        fill(&mut value);
        self.push(Op::Input, shape, value, false)
    }

    /// Records a trainable parameter.
    pub fn param(&mut self, id: ParamId) -> Var {
        let shape = Shape::new(self.params.get(id).shape());
        self.push(Op::Param(id), shape, Vec::new(), true)
    }

    fn node(&self, var: Var) -> &Node {
        &self.ws.nodes[var.0]
    }

    fn push(&mut self, op: Op, shape: Shape, value: Vec<f32>, needs_grad: bool) -> Var {
        self.ws.nodes.push(Node {
            op,
            shape,
            value,
            aux: Vec::new(),
            grad: Vec::new(),
            needs_grad,
        });
        Var(self.ws.nodes.len() - 1)
    }
}
