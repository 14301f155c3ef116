//! Learning-rate schedules, evaluated once per optimizer step.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A learning-rate schedule, as written under `[training.schedule]`.
/// Each schedule scales the optimizer's configured learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// The learning rate stays as configured.
    Constant,
    /// Multiplies the learning rate by `gamma` every `step_epochs` epochs.
    Step { step_epochs: usize, gamma: f32 },
    /// Multiplies the learning rate by `gamma` after every epoch.
    Exponential { gamma: f32 },
    /// Rises linearly from 0 over `warmup_epochs`, then follows half a cosine from the
    /// configured rate down to `min_learning_rate` at the end of the last epoch.
    Cosine {
        #[serde(default)]
        warmup_epochs: f32,
        #[serde(default)]
        min_learning_rate: f32,
    },
}

impl Schedule {
    /// Checks the schedule's settings.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] naming the invalid setting.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| {
            Err(Error::InvalidConfig(format!(
                "training.schedule: {message}"
            )))
        };
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::Step { step_epochs, gamma } => {
                if step_epochs == 0 {
                    return invalid("step_epochs = 0; use at least 1".into());
                }
                if !(gamma > 0.0 && gamma.is_finite()) {
                    return invalid(format!(
                        "gamma = {gamma}; use a positive factor such as 0.1"
                    ));
                }
                Ok(())
            }
            Schedule::Exponential { gamma } => {
                if !(gamma > 0.0 && gamma.is_finite()) {
                    return invalid(format!(
                        "gamma = {gamma}; use a positive factor such as 0.95"
                    ));
                }
                Ok(())
            }
            Schedule::Cosine {
                warmup_epochs,
                min_learning_rate,
            } => {
                if !(warmup_epochs >= 0.0 && warmup_epochs.is_finite()) {
                    return invalid(format!("warmup_epochs = {warmup_epochs}; use 0 or more"));
                }
                if !(min_learning_rate >= 0.0 && min_learning_rate.is_finite()) {
                    return invalid(format!(
                        "min_learning_rate = {min_learning_rate}; use 0 or more"
                    ));
                }
                Ok(())
            }
        }
    }

    /// Returns the learning rate for the step at `progress` epochs into training (for example
    /// 2.5 halfway through the third epoch) out of `epochs`, given the configured `base` rate.
    pub fn learning_rate(&self, base: f32, progress: f64, epochs: usize) -> f32 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { step_epochs, gamma } => {
                let completed = progress.floor() as usize;
                base * gamma.powi((completed / step_epochs) as i32)
            }
            Schedule::Exponential { gamma } => base * gamma.powi(progress.floor() as i32),
            Schedule::Cosine {
                warmup_epochs,
                min_learning_rate,
            } => {
                let warmup = warmup_epochs as f64;
                if progress < warmup {
                    return base * (progress / warmup) as f32;
                }
                let span = (epochs as f64 - warmup).max(1e-9);
                let t = ((progress - warmup) / span).clamp(0.0, 1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                min_learning_rate + (base - min_learning_rate) * cosine as f32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_decay_drops_every_step_epochs() {
        let schedule = Schedule::Step {
            step_epochs: 2,
            gamma: 0.1,
        };
        assert_eq!(schedule.learning_rate(1.0, 0.0, 10), 1.0);
        assert_eq!(schedule.learning_rate(1.0, 1.9, 10), 1.0);
        assert!((schedule.learning_rate(1.0, 2.0, 10) - 0.1).abs() < 1e-7);
        assert!((schedule.learning_rate(1.0, 4.5, 10) - 0.01).abs() < 1e-8);
    }

    #[test]
    fn cosine_warms_up_then_decays_to_minimum() {
        let schedule = Schedule::Cosine {
            warmup_epochs: 1.0,
            min_learning_rate: 0.01,
        };
        assert_eq!(schedule.learning_rate(0.1, 0.0, 11), 0.0);
        assert!((schedule.learning_rate(0.1, 0.5, 11) - 0.05).abs() < 1e-7);
        assert!((schedule.learning_rate(0.1, 1.0, 11) - 0.1).abs() < 1e-7);
        assert!((schedule.learning_rate(0.1, 6.0, 11) - 0.055).abs() < 1e-6);
        assert!((schedule.learning_rate(0.1, 11.0, 11) - 0.01).abs() < 1e-7);
    }

    #[test]
    fn exponential_multiplies_each_epoch() {
        let schedule = Schedule::Exponential { gamma: 0.5 };
        assert_eq!(schedule.learning_rate(1.0, 3.2, 10), 0.125);
    }

    #[test]
    fn invalid_settings_are_named() {
        let error = Schedule::Step {
            step_epochs: 0,
            gamma: 0.5,
        }
        .validate()
        .unwrap_err();
        assert!(error.to_string().contains("step_epochs = 0"), "{error}");
        let error = Schedule::Exponential { gamma: -1.0 }
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("gamma = -1"), "{error}");
    }
}
