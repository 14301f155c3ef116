//! The Tree-structured Parzen Estimator (Bergstra et al., "Algorithms for Hyper-Parameter
//! Optimization", 2011), one parameter at a time as in hyperopt's default.
//!
//! The finished trials are split by a quantile of their scores into a good and a bad group.
//! Each group gets a Parzen density per parameter: a Gaussian around each observed value plus
//! the prior (uniform over the range) for continuous parameters, smoothed counts for
//! categorical ones. Candidates are drawn from the good density `l(x)`, and the one with the
//! largest `l(x) / g(x)` is proposed.

use serde_json::Value;

use super::space::{Distribution, Parameter, unit_uniform};
use crate::rng::Rng;

/// Fraction of the finished trials that form the good group (hyperopt uses 0.25).
pub const GOOD_FRACTION: f64 = 0.25;

/// Candidates drawn from `l(x)` per parameter (hyperopt's default is 24).
pub const CANDIDATES: usize = 24;

/// Proposes a value of `parameter` from the values of the good and the bad trials.
/// Both groups may be empty, and then the prior alone decides.
pub fn propose(parameter: &Parameter, good: &[&Value], bad: &[&Value], rng: &mut Rng) -> Value {
    if let Distribution::Categorical { values } = &parameter.distribution {
        return propose_categorical(values, good, bad, rng);
    }

    let (low, high) = internal_range(&parameter.distribution);
    let to_internal = |value: &&Value| -> Option<f64> {
        let x = value.as_f64()?;
        match parameter.distribution {
            Distribution::LogUniform { .. } => (x > 0.0).then(|| x.ln()),
            _ => Some(x),
        }
    };
    let good: Vec<f64> = good.iter().filter_map(to_internal).collect();
    let bad: Vec<f64> = bad.iter().filter_map(to_internal).collect();
    let good_density = Parzen::new(&good, low, high);
    let bad_density = Parzen::new(&bad, low, high);

    let mut best = (f64::NEG_INFINITY, low);
    for _ in 0..CANDIDATES {
        let x = good_density.sample(rng);
        let ratio = good_density.log_density(x) - bad_density.log_density(x);
        if ratio > best.0 {
            best = (ratio, x);
        }
    }
    // An integer's range is widened by 1/2 on each side, so each integer gets a unit of it
    // and `from_unit`, which floors, returns the nearest integer.
    parameter.from_unit((best.1 - low) / (high - low))
}

/// Returns the range in which the densities of a numeric parameter live: `ln` of the bounds
/// for log-uniform parameters, the bounds widened by 1/2 for integers.
fn internal_range(distribution: &Distribution) -> (f64, f64) {
    match *distribution {
        Distribution::LogUniform { low, high } => (low.ln(), high.ln()),
        Distribution::Uniform { low, high } => (low, high),
        Distribution::IntUniform { low, high } => (low as f64 - 0.5, high as f64 + 0.5),
        Distribution::Categorical { .. } => unreachable!("categorical parameters have no range"),
    }
}

/// A Parzen density on `[low, high]`: the uniform prior and one Gaussian per observation,
/// each with weight `1 / (n + 1)`.
struct Parzen {
    centers: Vec<f64>,
    /// The standard deviation of each center's Gaussian.
    bandwidths: Vec<f64>,
    low: f64,
    high: f64,
}

impl Parzen {
    /// Builds the density. Each Gaussian is as wide as the larger gap to its neighbors (the
    /// range ends count as neighbors), clipped to `[width / min(100, n + 1), width]`, the rule
    /// of hyperopt and Optuna.
    fn new(observations: &[f64], low: f64, high: f64) -> Self {
        let width = high - low;
        let mut sorted = observations.to_vec();
        sorted.sort_by(f64::total_cmp);
        let narrowest = width / (sorted.len() as f64 + 1.0).min(100.0);
        let bandwidths = (0..sorted.len())
            .map(|i| {
                let left = sorted[i] - if i == 0 { low } else { sorted[i - 1] };
                let right = if i + 1 == sorted.len() {
                    high
                } else {
                    sorted[i + 1]
                } - sorted[i];
                left.max(right).clamp(narrowest, width)
            })
            .collect();
        Parzen {
            centers: sorted,
            bandwidths,
            low,
            high,
        }
    }

    /// Draws from the mixture. A Gaussian draw outside the range is drawn again, up to 16
    /// times, and then clipped.
    fn sample(&self, rng: &mut Rng) -> f64 {
        let component = rng.below(self.centers.len() + 1);
        if component == self.centers.len() {
            return self.low + unit_uniform(rng) * (self.high - self.low);
        }
        let (center, bandwidth) = (self.centers[component], self.bandwidths[component]);
        let mut x = center;
        for _ in 0..16 {
            x = center + bandwidth * rng.normal() as f64;
            if (self.low..=self.high).contains(&x) {
                return x;
            }
        }
        x.clamp(self.low, self.high)
    }

    /// Returns `ln` of the mixture density at `x`.
    // NOTE: the Gaussians are not renormalized for the part of their mass outside the range,
    // which slightly lowers the density near the ends of the range in both groups alike.
    fn log_density(&self, x: f64) -> f64 {
        let weight = 1.0 / (self.centers.len() + 1) as f64;
        let prior = 1.0 / (self.high - self.low);
        let gaussians: f64 = self
            .centers
            .iter()
            .zip(&self.bandwidths)
            .map(|(c, b)| {
                let norm = 1.0 / (b * (2.0 * std::f64::consts::PI).sqrt());
                norm * (-0.5 * ((x - c) / b).powi(2)).exp()
            })
            .sum();
        (weight * (prior + gaussians)).ln()
    }
}

/// Proposes a categorical value: counts smoothed by one per value (the prior) in each group,
/// candidates drawn from the good group's frequencies.
fn propose_categorical(values: &[Value], good: &[&Value], bad: &[&Value], rng: &mut Rng) -> Value {
    let frequencies = |group: &[&Value]| -> Vec<f64> {
        let counts: Vec<f64> = values
            .iter()
            .map(|v| 1.0 + group.iter().filter(|g| **g == v).count() as f64)
            .collect();
        let total: f64 = counts.iter().sum();
        counts.iter().map(|c| c / total).collect()
    };
    let l = frequencies(good);
    let g = frequencies(bad);

    let mut best = (f64::NEG_INFINITY, 0);
    for _ in 0..CANDIDATES {
        let mut u = unit_uniform(rng);
        let mut index = l.len() - 1;
        for (i, p) in l.iter().enumerate() {
            if u < *p {
                index = i;
                break;
            }
            u -= p;
        }
        let ratio = l[index] / g[index];
        if ratio > best.0 {
            best = (ratio, index);
        }
    }
    values[best.1].clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::space::ParameterSpec;

    fn log_rate() -> Parameter {
        Parameter::from_spec(&ParameterSpec {
            key: "training.optimizer.learning_rate".into(),
            distribution: "log_uniform".into(),
            low: Some(1e-4),
            high: Some(1.0),
            values: None,
        })
        .unwrap()
    }

    #[test]
    fn proposals_move_toward_good_values() {
        // Good trials near 0.01, bad ones near 0.5 and 1e-4. The prior alone puts 35% of
        // draws within a factor of 5 of 0.01 (ln 25 / ln 1e4); TPE puts most there.
        let parameter = log_rate();
        let good: Vec<Value> = [0.008, 0.01, 0.012].map(Value::from).to_vec();
        let bad: Vec<Value> = [0.5, 0.6, 0.8, 1e-4, 2e-4, 3e-4].map(Value::from).to_vec();
        let good: Vec<&Value> = good.iter().collect();
        let bad: Vec<&Value> = bad.iter().collect();
        let mut rng = Rng::new(3);
        let near = (0..50)
            .filter(|_| {
                let x = propose(&parameter, &good, &bad, &mut rng).as_f64().unwrap();
                (0.002..0.05).contains(&x)
            })
            .count();
        assert!(near >= 35, "{near} of 50 proposals near 0.01");
    }

    #[test]
    fn categorical_prefers_good_values() {
        let values: Vec<Value> = ["a", "b", "c"].map(Value::from).to_vec();
        let good = [&values[1], &values[1]];
        let bad = [&values[0], &values[2], &values[0]];
        let mut rng = Rng::new(0);
        for _ in 0..10 {
            assert_eq!(
                propose_categorical(&values, &good, &bad, &mut rng),
                values[1]
            );
        }
    }

    #[test]
    fn integer_proposals_are_integers_in_range() {
        let parameter = Parameter::from_spec(&ParameterSpec {
            key: "model.layers.1.units".into(),
            distribution: "int_uniform".into(),
            low: Some(16.0),
            high: Some(32.0),
            values: None,
        })
        .unwrap();
        let good = [Value::from(30)];
        let mut rng = Rng::new(1);
        for _ in 0..50 {
            let n = propose(&parameter, &[&good[0]], &[], &mut rng)
                .as_i64()
                .expect("an integer");
            assert!((16..=32).contains(&n), "{n}");
        }
    }
}
