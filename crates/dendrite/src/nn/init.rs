//! Weight initializers.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::tensor::Tensor;

/// A weight initializer: the distribution a weight tensor is drawn from before training. `fan_in` and `fan_out` are the number of
/// inputs and outputs of one unit: for a dense weight of shape `[out, in]`, `in` and `out`.
///
/// The normal variants draw from an untruncated normal distribution, as PyTorch's `init`
/// functions do (Keras truncates at two standard deviations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Uniform on `±sqrt(6 / (fan_in + fan_out))` (Glorot and Bengio, 2010). Keras's default.
    #[default]
    GlorotUniform,
    /// Normal with standard deviation `sqrt(2 / (fan_in + fan_out))`.
    GlorotNormal,
    /// Uniform on `±sqrt(6 / fan_in)` (He et al., 2015), for ReLU layers.
    HeUniform,
    /// Normal with standard deviation `sqrt(2 / fan_in)`, for ReLU layers.
    HeNormal,
    /// Normal with standard deviation `sqrt(1 / fan_in)` (LeCun, 1998), for SELU and tanh.
    LecunNormal,
    /// A random orthogonal matrix (Saxe et al., 2014): the weight, seen as `[shape[0],
    /// rest]`, has orthonormal rows or columns, whichever are fewer, drawn by Gram-Schmidt on
    /// a normal matrix as PyTorch's `orthogonal_` does by QR. Keras's default for recurrent
    /// weights.
    Orthogonal,
    /// All zeros.
    Zeros,
}

impl Init {
    /// Creates a tensor of `shape` filled by this initializer from `rng`.
    pub fn tensor(self, shape: &[usize], fan_in: usize, fan_out: usize, rng: &mut Rng) -> Tensor {
        let numel: usize = shape.iter().product();
        let (fan_in, fan_out) = (fan_in.max(1) as f32, fan_out.max(1) as f32);
        let data: Vec<f32> = match self {
            Init::GlorotUniform => {
                let bound = (6.0 / (fan_in + fan_out)).sqrt();
                (0..numel)
                    .map(|_| rng.uniform_range(-bound, bound))
                    .collect()
            }
            Init::GlorotNormal => {
                let std = (2.0 / (fan_in + fan_out)).sqrt();
                (0..numel).map(|_| std * rng.normal()).collect()
            }
            Init::HeUniform => {
                let bound = (6.0 / fan_in).sqrt();
                (0..numel)
                    .map(|_| rng.uniform_range(-bound, bound))
                    .collect()
            }
            Init::HeNormal => {
                let std = (2.0 / fan_in).sqrt();
                (0..numel).map(|_| std * rng.normal()).collect()
            }
            Init::LecunNormal => {
                let std = (1.0 / fan_in).sqrt();
                (0..numel).map(|_| std * rng.normal()).collect()
            }
            Init::Orthogonal => orthogonal(shape, rng),
            Init::Zeros => vec![0.0; numel],
        };
        Tensor::from_vec(shape, data)
    }
}

/// Draws a matrix of `shape` (flattened to `[shape[0], rest]`) with orthonormal rows or
/// columns, whichever are fewer.
fn orthogonal(shape: &[usize], rng: &mut Rng) -> Vec<f32> {
    let rows = shape.first().copied().unwrap_or(1);
    let cols: usize = shape.iter().skip(1).product();
    // Orthonormal vectors of length `long`, `short` of them, in f64 for a clean basis.
    let (short, long) = if rows < cols {
        (rows, cols)
    } else {
        (cols, rows)
    };
    let mut vectors: Vec<Vec<f64>> = Vec::with_capacity(short);
    while vectors.len() < short {
        let mut v: Vec<f64> = (0..long).map(|_| rng.normal() as f64).collect();
        for u in &vectors {
            let dot: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            for (a, b) in v.iter_mut().zip(u) {
                *a -= dot * b;
            }
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        // A draw that is (nearly) in the span of the previous vectors is drawn again.
        if norm > 1e-6 {
            v.iter_mut().for_each(|a| *a /= norm);
            vectors.push(v);
        }
    }
    let mut data = vec![0.0f32; rows * cols];
    for (k, v) in vectors.iter().enumerate() {
        for (l, &value) in v.iter().enumerate() {
            let (r, c) = if rows < cols { (k, l) } else { (l, k) };
            data[r * cols + c] = value as f32;
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(t: &Tensor) -> (f64, f64) {
        let n = t.numel() as f64;
        let mean = t.data().iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = t
            .data()
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    #[test]
    fn initializers_have_expected_spread() {
        let (fan_in, fan_out) = (400, 200);
        let cases = [
            (Init::GlorotUniform, (6.0f64 / 600.0).sqrt() / 3f64.sqrt()),
            (Init::GlorotNormal, (2.0f64 / 600.0).sqrt()),
            (Init::HeUniform, (6.0f64 / 400.0).sqrt() / 3f64.sqrt()),
            (Init::HeNormal, (2.0f64 / 400.0).sqrt()),
            (Init::LecunNormal, (1.0f64 / 400.0).sqrt()),
        ];
        for (init, expected_std) in cases {
            let t = init.tensor(&[fan_out, fan_in], fan_in, fan_out, &mut Rng::new(3));
            let (mean, std) = moments(&t);
            assert!(mean.abs() < 0.05 * expected_std, "{init:?}: mean {mean}");
            assert!(
                (std / expected_std - 1.0).abs() < 0.02,
                "{init:?}: std {std}, expected {expected_std}"
            );
        }
    }

    #[test]
    fn uniform_initializers_stay_in_bounds() {
        let t = Init::GlorotUniform.tensor(&[50, 50], 50, 50, &mut Rng::new(1));
        let bound = (6.0f32 / 100.0).sqrt();
        assert!(t.data().iter().all(|v| v.abs() <= bound));
    }

    #[test]
    fn same_seed_gives_same_weights() {
        let a = Init::HeNormal.tensor(&[8, 8], 8, 8, &mut Rng::new(42));
        let b = Init::HeNormal.tensor(&[8, 8], 8, 8, &mut Rng::new(42));
        let c = Init::HeNormal.tensor(&[8, 8], 8, 8, &mut Rng::new(43));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn orthogonal_columns_are_orthonormal() {
        for shape in [[12, 3], [3, 12], [5, 5]] {
            let t = Init::Orthogonal.tensor(&shape, shape[1], shape[0], &mut Rng::new(2));
            let (rows, cols) = (shape[0], shape[1]);
            let (count, len) = (rows.min(cols), rows.max(cols));
            let at = |k: usize, l: usize| {
                if rows < cols {
                    t.data()[k * cols + l] as f64
                } else {
                    t.data()[l * cols + k] as f64
                }
            };
            for a in 0..count {
                for b in 0..count {
                    let dot: f64 = (0..len).map(|l| at(a, l) * at(b, l)).sum();
                    let expected = if a == b { 1.0 } else { 0.0 };
                    assert!(
                        (dot - expected).abs() < 1e-5,
                        "{shape:?}: dot of vectors {a} and {b} is {dot}"
                    );
                }
            }
        }
    }

    #[test]
    fn zeros_are_zero() {
        let t = Init::Zeros.tensor(&[3, 4], 4, 3, &mut Rng::new(0));
        assert!(t.data().iter().all(|&v| v == 0.0));
    }
}
