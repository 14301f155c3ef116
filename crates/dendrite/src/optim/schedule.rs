//! Learning-rate schedules, evaluated once per optimizer step.
//!
//! The one-cycle and reduce-on-plateau rules follow PyTorch's `OneCycleLR` (cosine annealing,
//! two phases) and `ReduceLROnPlateau` (mode "min", absolute threshold), version 2.x.

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
    /// One cycle (Smith and Topin, 2017): rises along half a cosine from
    /// `learning_rate / div_factor` to the configured rate over the first `pct_start` of
    /// training, then falls along half a cosine to `learning_rate / (div_factor *
    /// final_div_factor)` at the end of the last epoch.
    OneCycle {
        #[serde(default = "default_pct_start")]
        pct_start: f32,
        #[serde(default = "default_div_factor")]
        div_factor: f32,
        #[serde(default = "default_final_div_factor")]
        final_div_factor: f32,
    },
    /// Multiplies the learning rate by `factor` when the validation loss has not decreased by
    /// more than `min_delta` for `patience` epochs, down to `min_learning_rate`. Needs a
    /// validation split.
    ReduceOnPlateau {
        #[serde(default = "default_plateau_factor")]
        factor: f32,
        #[serde(default = "default_plateau_patience")]
        patience: usize,
        #[serde(default)]
        min_delta: f64,
        #[serde(default)]
        min_learning_rate: f32,
    },
}

/// PyTorch's `OneCycleLR` defaults.
fn default_pct_start() -> f32 {
    0.3
}
fn default_div_factor() -> f32 {
    25.0
}
fn default_final_div_factor() -> f32 {
    1e4
}
/// PyTorch's `ReduceLROnPlateau` factor; its patience of 10 epochs is long for the short runs
/// this toolkit usually makes, so the default here is 3.
fn default_plateau_factor() -> f32 {
    0.1
}
fn default_plateau_patience() -> usize {
    3
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
            Schedule::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                if !(pct_start > 0.0 && pct_start < 1.0) {
                    return invalid(format!(
                        "pct_start = {pct_start}; use a fraction in (0, 1) such as 0.3"
                    ));
                }
                if !(div_factor >= 1.0 && div_factor.is_finite()) {
                    return invalid(format!("div_factor = {div_factor}; use 1 or more"));
                }
                if !(final_div_factor >= 1.0 && final_div_factor.is_finite()) {
                    return invalid(format!(
                        "final_div_factor = {final_div_factor}; use 1 or more"
                    ));
                }
                Ok(())
            }
            Schedule::ReduceOnPlateau {
                factor,
                patience,
                min_delta,
                min_learning_rate,
            } => {
                if !(factor > 0.0 && factor < 1.0) {
                    return invalid(format!(
                        "factor = {factor}; use a fraction in (0, 1) such as 0.1"
                    ));
                }
                if patience == 0 {
                    return invalid("patience = 0; use at least 1".into());
                }
                if !(min_delta >= 0.0 && min_delta.is_finite()) {
                    return invalid(format!("min_delta = {min_delta}; use 0 or more"));
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

    /// Returns true if the schedule reads the validation loss after each epoch.
    pub fn needs_validation(&self) -> bool {
        matches!(self, Schedule::ReduceOnPlateau { .. })
    }

    /// Returns the learning rate for the step at `progress` epochs into training (for example
    /// 2.5 halfway through the third epoch) out of `epochs`, given the configured `base` rate.
    /// Reduce-on-plateau returns `base`: its reductions depend on the validation losses and
    /// are applied by [`LearningRate`].
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
            Schedule::OneCycle {
                pct_start,
                div_factor,
                final_div_factor,
            } => {
                let initial = base / div_factor;
                let last = initial / final_div_factor;
                let t = (progress / epochs.max(1) as f64).clamp(0.0, 1.0);
                let rise = pct_start as f64;
                if t < rise {
                    cosine_between(initial, base, t / rise)
                } else {
                    cosine_between(base, last, (t - rise) / (1.0 - rise))
                }
            }
            Schedule::ReduceOnPlateau { .. } => base,
        }
    }
}

/// Returns the point `t` in `[0, 1]` of half a cosine from `start` to `end`.
fn cosine_between(start: f32, end: f32, t: f64) -> f32 {
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
    end + (start - end) * cosine as f32
}

/// The learning rate of a training run: a [`Schedule`] and, for reduce-on-plateau, the
/// reductions made so far.
#[derive(Debug, Clone)]
pub struct LearningRate {
    schedule: Schedule,
    base: f32,
    epochs: usize,
    /// The factor that plateaus have applied so far (1 until the first reduction).
    plateau_scale: f32,
    best_loss: f64,
    epochs_without_improvement: usize,
}

impl LearningRate {
    /// Creates the learning rate of a run of `epochs` epochs with the configured `base` rate.
    pub fn new(schedule: Schedule, base: f32, epochs: usize) -> Self {
        LearningRate {
            schedule,
            base,
            epochs,
            plateau_scale: 1.0,
            best_loss: f64::INFINITY,
            epochs_without_improvement: 0,
        }
    }

    /// Returns the learning rate for the step at `progress` epochs into training.
    pub fn at(&self, progress: f64) -> f32 {
        let rate = self
            .schedule
            .learning_rate(self.base, progress, self.epochs);
        match self.schedule {
            Schedule::ReduceOnPlateau {
                min_learning_rate, ..
            } => (rate * self.plateau_scale).max(min_learning_rate.min(self.base)),
            _ => rate,
        }
    }

    /// Records the validation loss at the end of an epoch. Reduce-on-plateau multiplies the
    /// rate by its factor after `patience` epochs without a decrease of more than
    /// `min_delta`, then waits `patience` epochs again; other schedules ignore the loss.
    pub fn end_epoch(&mut self, val_loss: f64) {
        let Schedule::ReduceOnPlateau {
            factor,
            patience,
            min_delta,
            ..
        } = self.schedule
        else {
            return;
        };
        if val_loss < self.best_loss - min_delta {
            self.best_loss = val_loss;
            self.epochs_without_improvement = 0;
            return;
        }
        self.epochs_without_improvement += 1;
        if self.epochs_without_improvement >= patience {
            self.plateau_scale *= factor;
            self.epochs_without_improvement = 0;
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
    fn one_cycle_rises_then_falls() {
        // base 1, div_factor 10, final_div_factor 100: starts at 0.1, peaks at 1 after 30% of
        // 10 epochs (epoch 3), ends at 0.001.
        let schedule = Schedule::OneCycle {
            pct_start: 0.3,
            div_factor: 10.0,
            final_div_factor: 100.0,
        };
        assert!((schedule.learning_rate(1.0, 0.0, 10) - 0.1).abs() < 1e-7);
        // Halfway up: 1 + (0.1 - 1) * (1 + cos(pi / 2)) / 2 = 0.55.
        assert!((schedule.learning_rate(1.0, 1.5, 10) - 0.55).abs() < 1e-6);
        assert!((schedule.learning_rate(1.0, 3.0, 10) - 1.0).abs() < 1e-6);
        // Halfway down (epoch 6.5): 0.001 + (1 - 0.001) / 2 = 0.5005.
        assert!((schedule.learning_rate(1.0, 6.5, 10) - 0.5005).abs() < 1e-6);
        assert!((schedule.learning_rate(1.0, 10.0, 10) - 0.001).abs() < 1e-7);
    }

    #[test]
    fn plateau_reduces_after_patience_epochs() {
        let schedule = Schedule::ReduceOnPlateau {
            factor: 0.5,
            patience: 2,
            min_delta: 0.01,
            min_learning_rate: 0.2,
        };
        let mut rate = LearningRate::new(schedule, 1.0, 20);
        assert_eq!(rate.at(0.0), 1.0);

        // 1.0 sets the best loss, 0.995 is not 0.01 lower, 0.999 is the second bad epoch.
        for loss in [1.0, 0.995] {
            rate.end_epoch(loss);
            assert_eq!(rate.at(1.0), 1.0);
        }
        rate.end_epoch(0.999);
        assert_eq!(rate.at(3.0), 0.5);

        // An improvement resets the count, and two more bad epochs halve the rate again.
        rate.end_epoch(0.5);
        rate.end_epoch(0.6);
        assert_eq!(rate.at(5.0), 0.5);
        rate.end_epoch(0.6);
        assert_eq!(rate.at(6.0), 0.25);

        // The rate stops at min_learning_rate.
        rate.end_epoch(0.6);
        rate.end_epoch(0.6);
        assert_eq!(rate.at(8.0), 0.2);
    }

    #[test]
    fn schedules_ignore_plateaus_unless_configured() {
        let mut rate = LearningRate::new(Schedule::Exponential { gamma: 0.5 }, 2.0, 5);
        for _ in 0..5 {
            rate.end_epoch(1.0);
        }
        assert_eq!(rate.at(1.0), 1.0);
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
        let error = Schedule::OneCycle {
            pct_start: 1.5,
            div_factor: 25.0,
            final_div_factor: 1e4,
        }
        .validate()
        .unwrap_err();
        assert!(error.to_string().contains("pct_start = 1.5"), "{error}");
        let error = Schedule::ReduceOnPlateau {
            factor: 2.0,
            patience: 3,
            min_delta: 0.0,
            min_learning_rate: 0.0,
        }
        .validate()
        .unwrap_err();
        assert!(error.to_string().contains("factor = 2"), "{error}");
    }
}
