//! `exp`, `tanh` and the logistic sigmoid for `f32` without branches, so that loops over
//! slices of them vectorize.
//!
//! `f32::tanh` and `f32::exp` call the C library one value at a time, which no compiler can
//! vectorize. In an LSTM they took half of the training time. The functions here use the
//! range reduction and polynomials of the Cephes library's `expf` and `tanhf`, written as
//! selects instead of branches, with plain multiplies and adds (no fused multiply-add), so a
//! value gives the same bits in the slice functions as in the scalar ones, on every CPU.
//! Their error against the exact result is a few units in the last place (the tests bound it).

/// `log2(e)`.
const LOG2_E: f32 = std::f32::consts::LOG2_E;

/// `ln(2)` split in two parts whose sum is exact to about 1e-11, for the range reduction.
const LN_2_HIGH: f32 = 0.693_359_4;
const LN_2_LOW: f32 = -2.121_944_4e-4;

/// Inputs of `exp` beyond these give infinity or 0 in `f32`, so `exp` clamps to them.
const EXP_MAX: f32 = 88.376_26;
const EXP_MIN: f32 = -87.336_55;

/// Adding and subtracting this rounds an `f32` of magnitude below 2^22 to an integer.
const ROUND: f32 = 12_582_912.0;

/// Below this magnitude `tanh` uses its own polynomial instead of `exp`, where the
/// subtraction `1 - 2 / (e^2x + 1)` would lose precision.
const TANH_SMALL: f32 = 0.625;

/// Returns `e^x`, 0 for inputs below about -87.3, infinity above about 88.4 (where `f32`
/// overflows) and NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let clamped = x.clamp(EXP_MIN, EXP_MAX);

    // x = n ln 2 + r with |r| <= ln 2 / 2.
    let n = (clamped * LOG2_E + ROUND) - ROUND;
    let r = (clamped - n * LN_2_HIGH) - n * LN_2_LOW;

    // e^r on the reduced range.
    let z = r * r;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e_r = p * z + r + 1.0;

    // 2^n from its exponent bits, in two halves so that n = 128 does not overflow them.
    let half = n as i32 / 2;
    let scale_a = f32::from_bits(((half + 127) as u32) << 23);
    let scale_b = f32::from_bits(((n as i32 - half + 127) as u32) << 23);
    let value = e_r * scale_a * scale_b;

    let value = if x > EXP_MAX { f32::INFINITY } else { value };
    let value = if x < EXP_MIN { 0.0 } else { value };
    if x.is_nan() { x } else { value }
}

/// Returns `tanh(x)`: ±1 for large inputs and NaN for NaN.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();

    // Small inputs: x + x^3 P(x^2).
    let z = x * x;
    let mut p = -5.704_988_7e-3;
    p = p * z + 2.063_909e-2;
    p = p * z - 5.373_971_6e-2;
    p = p * z + 1.333_144_2e-1;
    p = p * z - 3.333_328e-1;
    let small = p * z * x + x;

    // Larger inputs: 1 - 2 / (e^2|x| + 1), with the sign of x.
    let large = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    let large = if x < 0.0 { -large } else { large };

    let value = if a < TANH_SMALL { small } else { large };
    if x.is_nan() { x } else { value }
}

/// Returns the logistic sigmoid `1 / (1 + e^-x)`: 0 and 1 for large inputs and NaN for NaN.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Replaces every value of `values` by its [`tanh`].
pub fn tanh_in_place(values: &mut [f32]) {
    pulp::Arch::new().dispatch(Map {
        values,
        function: Function::Tanh,
    });
}

/// Replaces every value of `values` by its [`sigmoid`].
pub fn sigmoid_in_place(values: &mut [f32]) {
    pulp::Arch::new().dispatch(Map {
        values,
        function: Function::Sigmoid,
    });
}

/// The functions [`Map`] applies.
#[derive(Clone, Copy)]
enum Function {
    Tanh,
    Sigmoid,
}

/// A function applied to every value of a slice, under the widest instruction set the CPU
/// has, so that the compiler vectorizes the loop.
struct Map<'a> {
    values: &'a mut [f32],
    function: Function,
}

impl pulp::WithSimd for Map<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        match self.function {
            Function::Tanh => {
                for v in self.values.iter_mut() {
                    *v = tanh(*v);
                }
            }
            Function::Sigmoid => {
                for v in self.values.iter_mut() {
                    *v = sigmoid(*v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs from -100 to 100, dense near 0, plus the edges of each branch.
    fn inputs() -> Vec<f32> {
        let mut values: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 5e-4).collect();
        values.extend((-1000..=1000).map(|i| i as f32 * 0.1));
        values.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            1e-8,
            0.625,
            -0.625,
            0.624_999_9,
            44.0,
            87.3,
            88.3,
            88.4,
            -87.3,
            -87.4,
            -103.0,
            200.0,
        ]);
        values
    }

    /// Returns the error of `got` against `exact` in units of `f32::EPSILON` relative to
    /// `max(|exact|, floor)`.
    fn error(got: f32, exact: f64, floor: f64) -> f64 {
        (f64::from(got) - exact).abs() / (exact.abs().max(floor) * f64::from(f32::EPSILON))
    }

    #[test]
    fn exp_is_within_a_few_ulps() {
        let mut worst = 0.0f64;
        for x in inputs().into_iter().filter(|x| x.abs() < 87.0) {
            let exact = f64::from(x).exp();
            worst = worst.max(error(exp(x), exact, f64::MIN_POSITIVE));
        }
        assert!(worst < 3.0, "worst exp error {worst} epsilons");
    }

    #[test]
    fn tanh_and_sigmoid_are_within_a_few_ulps() {
        let (mut worst_tanh, mut worst_sigmoid) = (0.0f64, 0.0f64);
        for x in inputs() {
            let exact_tanh = f64::from(x).tanh();
            worst_tanh = worst_tanh.max(error(tanh(x), exact_tanh, 1e-30));
            let exact_sigmoid = 1.0 / (1.0 + (-f64::from(x)).exp());
            // Below about 1e-30, sigmoid is compared in absolute terms.
            worst_sigmoid = worst_sigmoid.max(error(sigmoid(x), exact_sigmoid, 1e-30));
        }
        assert!(worst_tanh < 4.0, "worst tanh error {worst_tanh} epsilons");
        assert!(
            worst_sigmoid < 4.0,
            "worst sigmoid error {worst_sigmoid} epsilons"
        );
    }

    #[test]
    fn special_values_follow_the_limits() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanh(30.0), 1.0);
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(f32::INFINITY), 1.0);
        assert_eq!(sigmoid(f32::NEG_INFINITY), 0.0);
        assert!(sigmoid(f32::NAN).is_nan());
    }

    #[test]
    fn slices_match_the_scalar_functions_bit_for_bit() {
        let values = inputs();
        let mut tanh_values = values.clone();
        tanh_in_place(&mut tanh_values);
        let mut sigmoid_values = values.clone();
        sigmoid_in_place(&mut sigmoid_values);
        for ((&x, &t), &s) in values.iter().zip(&tanh_values).zip(&sigmoid_values) {
            assert_eq!(t.to_bits(), tanh(x).to_bits(), "tanh({x})");
            assert_eq!(s.to_bits(), sigmoid(x).to_bits(), "sigmoid({x})");
        }
    }
}
