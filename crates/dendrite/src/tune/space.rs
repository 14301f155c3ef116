//! Search spaces: the distribution of each hyperparameter and how to draw from it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// One searched hyperparameter, as written under `[[search.parameters]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterSpec {
    /// The dotted config key that the parameter sets, with array indices as numbers:
    /// `training.optimizer.learning_rate`, `model.layers.1.units`.
    pub key: String,
    /// `log_uniform`, `uniform`, `int_uniform` or `categorical`.
    pub distribution: String,
    /// The lower bound of a numeric range (inclusive).
    #[serde(default)]
    pub low: Option<f64>,
    /// The upper bound of a numeric range (inclusive).
    #[serde(default)]
    pub high: Option<f64>,
    /// The choices of a categorical parameter.
    #[serde(default)]
    pub values: Option<Vec<Value>>,
}

/// A validated distribution of one hyperparameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// Uniform in `ln(x)` over `[low, high]`, for rates and decays; `low > 0`.
    LogUniform { low: f64, high: f64 },
    /// Uniform over `[low, high]`.
    Uniform { low: f64, high: f64 },
    /// Uniform over the integers `low..=high`.
    IntUniform { low: i64, high: i64 },
    /// One of the values, each with the same probability.
    Categorical { values: Vec<Value> },
}

/// A searched hyperparameter: its config key and distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    /// The dotted config key.
    pub key: String,
    /// The distribution to draw from.
    pub distribution: Distribution,
}

impl Parameter {
    /// Checks a parameter as written in a config.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] naming the parameter's key if the key is empty, the
    /// distribution is unknown, a bound is missing, not finite or not an integer where one is
    /// needed, the range is empty, a log-uniform range is not positive, or a categorical
    /// parameter has no values.
    pub fn from_spec(spec: &ParameterSpec) -> Result<Self> {
        let key = &spec.key;
        let invalid = |message: String| {
            Err(Error::InvalidConfig(format!(
                "search parameter {key}: {message}"
            )))
        };
        if key.trim().is_empty() || key.split('.').any(str::is_empty) {
            return Err(Error::InvalidConfig(format!(
                "search parameter key \"{key}\" is invalid; write a dotted config key such as \
                 training.optimizer.learning_rate"
            )));
        }
        let numeric = matches!(
            spec.distribution.as_str(),
            "log_uniform" | "uniform" | "int_uniform"
        );
        if numeric && spec.values.is_some() {
            return invalid(format!(
                "values are for categorical parameters; a {} parameter takes low and high",
                spec.distribution
            ));
        }
        let bounds = || -> Result<(f64, f64)> {
            let (Some(low), Some(high)) = (spec.low, spec.high) else {
                return Err(Error::InvalidConfig(format!(
                    "search parameter {key}: a {} distribution needs low and high",
                    spec.distribution
                )));
            };
            if !(low.is_finite() && high.is_finite()) {
                return Err(Error::InvalidConfig(format!(
                    "search parameter {key}: low = {low} and high = {high} must be finite"
                )));
            }
            if low >= high {
                return Err(Error::InvalidConfig(format!(
                    "search parameter {key}: the range [{low}, {high}] is empty; low must be \
                     below high"
                )));
            }
            Ok((low, high))
        };
        let distribution = match spec.distribution.as_str() {
            "log_uniform" => {
                let (low, high) = bounds()?;
                if low <= 0.0 {
                    return invalid(format!(
                        "a log_uniform range needs low > 0, got low = {low}; use uniform for \
                         ranges that include 0"
                    ));
                }
                Distribution::LogUniform { low, high }
            }
            "uniform" => {
                let (low, high) = bounds()?;
                Distribution::Uniform { low, high }
            }
            "int_uniform" => {
                let (low, high) = bounds()?;
                if low.fract() != 0.0 || high.fract() != 0.0 {
                    return invalid(format!(
                        "an int_uniform range needs integer bounds, got [{low}, {high}]"
                    ));
                }
                Distribution::IntUniform {
                    low: low as i64,
                    high: high as i64,
                }
            }
            "categorical" => {
                if spec.low.is_some() || spec.high.is_some() {
                    return invalid(
                        "a categorical parameter takes values, not low and high".into(),
                    );
                }
                match &spec.values {
                    Some(values) if !values.is_empty() => Distribution::Categorical {
                        values: values.clone(),
                    },
                    _ => {
                        return invalid(
                            "a categorical parameter needs a non-empty list of values".into(),
                        );
                    }
                }
            }
            other => {
                return invalid(format!(
                    "unknown distribution \"{other}\"; use log_uniform, uniform, int_uniform \
                     or categorical"
                ));
            }
        };
        Ok(Parameter {
            key: key.clone(),
            distribution,
        })
    }

    /// Draws a value at random.
    pub fn sample(&self, rng: &mut Rng) -> Value {
        match &self.distribution {
            Distribution::Categorical { values } => values[rng.below(values.len())].clone(),
            _ => self.from_unit(unit_uniform(rng)),
        }
    }

    /// Maps `u` in `[0, 1]` onto the distribution's range (on the log scale for log-uniform
    /// parameters); categorical parameters take the value at that fraction of the list.
    pub fn from_unit(&self, u: f64) -> Value {
        let u = u.clamp(0.0, 1.0);
        match &self.distribution {
            Distribution::LogUniform { low, high } => {
                number((low.ln() + u * (high.ln() - low.ln())).exp())
            }
            Distribution::Uniform { low, high } => number(low + u * (high - low)),
            Distribution::IntUniform { low, high } => {
                let span = (high - low + 1) as f64;
                Value::from((*low + (u * span).floor() as i64).min(*high))
            }
            Distribution::Categorical { values } => {
                let index = ((u * values.len() as f64) as usize).min(values.len() - 1);
                values[index].clone()
            }
        }
    }

    /// Returns `points` evenly spaced values for a grid search (on the log scale for
    /// log-uniform parameters, both ends included), or every value of a categorical or
    /// small integer parameter.
    pub fn grid(&self, points: usize) -> Vec<Value> {
        match &self.distribution {
            Distribution::Categorical { values } => values.clone(),
            Distribution::IntUniform { low, high } if (high - low + 1) as usize <= points => {
                (*low..=*high).map(Value::from).collect()
            }
            distribution => {
                let points = points.max(2);
                let mut values: Vec<Value> = (0..points)
                    .map(|i| {
                        let u = i as f64 / (points - 1) as f64;
                        match distribution {
                            Distribution::IntUniform { low, high } => {
                                Value::from(low + ((high - low) as f64 * u).round() as i64)
                            }
                            _ => self.from_unit(u),
                        }
                    })
                    .collect();
                values.dedup();
                values
            }
        }
    }
}

/// Returns a uniform float in `[0, 1)` with 53 bits of precision.
pub(crate) fn unit_uniform(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Rounds to 6 significant digits, so that values print and round-trip through TOML short.
fn number(x: f64) -> Value {
    let rounded: f64 = format!("{x:.5e}").parse().unwrap_or(x);
    Value::from(rounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(distribution: &str, low: Option<f64>, high: Option<f64>) -> ParameterSpec {
        ParameterSpec {
            key: "training.optimizer.learning_rate".into(),
            distribution: distribution.into(),
            low,
            high,
            values: None,
        }
    }

    #[test]
    fn errors_name_the_parameter() {
        let cases = [
            (spec("log_uniform", Some(0.1), Some(0.1)), "is empty"),
            (spec("uniform", Some(1.0), Some(0.0)), "is empty"),
            (spec("log_uniform", Some(0.0), Some(1.0)), "low > 0"),
            (
                spec("normal", Some(0.0), Some(1.0)),
                "unknown distribution \"normal\"",
            ),
            (spec("int_uniform", Some(1.5), Some(4.0)), "integer bounds"),
            (spec("uniform", None, Some(1.0)), "needs low and high"),
            (spec("categorical", None, None), "non-empty list"),
        ];
        for (spec, expected) in cases {
            let error = Parameter::from_spec(&spec).unwrap_err().to_string();
            assert!(
                error.contains("search parameter training.optimizer.learning_rate"),
                "{error}"
            );
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn samples_stay_in_range() {
        let log = Parameter::from_spec(&spec("log_uniform", Some(1e-4), Some(1e-1))).unwrap();
        let int = Parameter::from_spec(&spec("int_uniform", Some(2.0), Some(5.0))).unwrap();
        let mut rng = Rng::new(7);
        let mut seen = [false; 4];
        for _ in 0..200 {
            let x = log.sample(&mut rng).as_f64().unwrap();
            assert!((1e-4..=1e-1).contains(&x), "{x}");
            let n = int.sample(&mut rng).as_i64().unwrap();
            assert!((2..=5).contains(&n), "{n}");
            seen[(n - 2) as usize] = true;
        }
        assert_eq!(seen, [true; 4]);
    }

    #[test]
    fn grid_is_log_spaced() {
        let log = Parameter::from_spec(&spec("log_uniform", Some(1e-3), Some(1e-1))).unwrap();
        let grid: Vec<f64> = log.grid(3).iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(grid.len(), 3);
        assert!((grid[0] - 1e-3).abs() < 1e-12);
        assert!((grid[1] - 1e-2).abs() < 1e-12);
        assert!((grid[2] - 1e-1).abs() < 1e-12);
        let int = Parameter::from_spec(&spec("int_uniform", Some(1.0), Some(2.0))).unwrap();
        assert_eq!(int.grid(3), vec![Value::from(1), Value::from(2)]);
    }
}
