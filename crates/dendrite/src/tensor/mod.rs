//! The tensor type and its CPU kernels.
//!
//! A [`Tensor`] is a contiguous, row-major block of `f32` values with a shape. Kernels that
//! need a transposed operand (the matrix multiply in a dense layer's backward pass) read it
//! through strides instead of copying it.

mod kernels;
pub mod math;
mod matmul;

pub use kernels::{add_row_broadcast, argmax_rows, sum_rows_into};
pub(crate) use matmul::is_single_threaded;
pub use matmul::{Transpose, matmul_into, matmul_rows_into, set_gemm_threads, single_threaded};

use std::fmt;

/// A contiguous row-major `f32` tensor with a shape.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// Creates a tensor from a shape and its values in row-major order.
    ///
    /// # Panics
    ///
    /// Panics if `data.len()` differs from the product of `shape`.
    #[track_caller]
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Self {
        let numel: usize = shape.iter().product();
        assert_eq!(
            numel,
            data.len(),
            "tensor of shape {shape:?} needs {numel} values, got {}",
            data.len()
        );
        Tensor {
            shape: shape.to_vec(),
            data,
        }
    }

    /// Creates a tensor filled with zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        let numel = shape.iter().product();
        Tensor {
            shape: shape.to_vec(),
            data: vec![0.0; numel],
        }
    }

    /// Creates a tensor filled with `value`.
    pub fn full(shape: &[usize], value: f32) -> Self {
        let numel = shape.iter().product();
        Tensor {
            shape: shape.to_vec(),
            data: vec![value; numel],
        }
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The values in row-major order.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The values in row-major order, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the tensor and returns its values.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Returns the number of rows and columns when the tensor is seen as a matrix whose rows are
    /// the first dimension and whose columns are all other dimensions flattened.
    pub fn dims2(&self) -> (usize, usize) {
        match self.shape.split_first() {
            Some((&rows, rest)) => (rows, rest.iter().product()),
            None => (1, 1),
        }
    }

    /// Returns the same values with a new shape.
    ///
    /// # Panics
    ///
    /// Panics if the number of elements differs.
    #[track_caller]
    pub fn reshape(self, shape: &[usize]) -> Self {
        Tensor::from_vec(shape, self.data)
    }

    /// Copies the rows listed in `indices` (along the first dimension) into a new tensor.
    ///
    /// # Panics
    ///
    /// Panics if an index is out of range.
    pub fn gather_rows(&self, indices: &[usize]) -> Tensor {
        let (rows, cols) = self.dims2();
        let mut data = Vec::with_capacity(indices.len() * cols);
        for &i in indices {
            assert!(i < rows, "row index {i} out of range for {rows} rows");
            data.extend_from_slice(&self.data[i * cols..(i + 1) * cols]);
        }
        let mut shape = self.shape.clone();
        shape[0] = indices.len();
        Tensor { shape, data }
    }

    /// Returns true if every value is finite (neither NaN nor infinite).
    pub fn is_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        write!(f, "Tensor{:?} [", self.shape)?;
        for (i, v) in self.data.iter().take(SHOWN).enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{v}")?;
        }
        if self.data.len() > SHOWN {
            write!(f, ", ...")?;
        }
        write!(f, "]")
    }
}
