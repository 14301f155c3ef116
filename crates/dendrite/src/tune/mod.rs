//! Hyperparameter search on a validation split: search spaces, the grid, random, successive
//! halving and TPE strategies, and a journal that lets a stopped search continue.
//!
//! The search proposes trials in waves of up to `parallel` trials. The proposals of a wave
//! depend only on the search seed, the trial number and the results of the earlier waves, so
//! two runs with the same seed and `parallel` propose the same trials, and a search continued
//! from its journal proposes what an uninterrupted one would have.

mod journal;
mod space;
mod tpe;

pub use journal::{Journal, fingerprint};
pub use space::{Distribution, Parameter, ParameterSpec};

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// The `[search]` table of a config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// The strategy that proposes trials (random by default).
    #[serde(default)]
    pub strategy: Strategy,
    /// The number of trials: configs for grid, random and TPE (the grid is cut to it), the
    /// configs of the first rung for successive halving.
    #[serde(default)]
    pub trials: Option<usize>,
    /// Start no new wave of trials after this many seconds.
    #[serde(default)]
    pub time_budget_seconds: Option<f64>,
    /// Seed of the proposals; the training seed stays as configured.
    #[serde(default)]
    pub seed: u64,
    /// What the search maximizes on the validation split: `accuracy` (default for
    /// classifiers) or `loss` (minimized; default for regression).
    #[serde(default)]
    pub metric: Option<Metric>,
    /// Trials that train at the same time (default: one per 2 cores, at least 1).
    #[serde(default)]
    pub parallel: Option<usize>,
    /// Whether to retrain the best config at the end and evaluate it once on the test split.
    #[serde(default = "default_true")]
    pub retrain: bool,
    /// Values per numeric parameter for the grid strategy.
    #[serde(default = "default_grid_points")]
    pub grid_points: usize,
    /// Successive halving keeps one trial in `reduction_factor` at each rung, and trains the
    /// kept ones `reduction_factor` times longer.
    #[serde(default = "default_reduction_factor")]
    pub reduction_factor: usize,
    /// Successive halving: the fewest epochs of the first rung.
    #[serde(default = "default_min_epochs")]
    pub min_epochs: usize,
    /// TPE: random trials before the first model-based proposal (default: the larger of 5
    /// and a quarter of the trials, capped at the trials).
    #[serde(default)]
    pub startup_trials: Option<usize>,
    /// The searched hyperparameters.
    #[serde(default)]
    pub parameters: Vec<ParameterSpec>,
}

fn default_true() -> bool {
    true
}
fn default_grid_points() -> usize {
    3
}
fn default_reduction_factor() -> usize {
    3
}
fn default_min_epochs() -> usize {
    1
}

/// A search strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Every combination of `grid_points` values per numeric parameter and all values of
    /// categorical ones, in order (the last parameter changes fastest).
    Grid,
    /// Independent draws from each parameter's distribution.
    #[default]
    Random,
    /// Successive halving: random configs trained for few epochs, the best `1 /
    /// reduction_factor` trained again for `reduction_factor` times more, up to the
    /// configured epochs. Poor trials stop at the early rungs.
    Halving,
    /// Tree-structured Parzen Estimator after `startup_trials` random trials.
    Tpe,
}

/// The validation metric a search selects on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Validation accuracy, maximized.
    Accuracy,
    /// Validation loss, minimized.
    Loss,
}

/// A finished trial, as stored in the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// The trial number, from 1. A config keeps its number through the rungs of successive
    /// halving.
    pub trial: usize,
    /// The rung of successive halving, from 0; 0 for the other strategies.
    pub rung: usize,
    /// The epochs the trial trained for.
    pub epochs: usize,
    /// The value of each searched config key.
    pub values: BTreeMap<String, Value>,
    /// The loss on the validation split, if training finished.
    pub val_loss: Option<f64>,
    /// The accuracy on the validation split, for classifiers.
    pub val_accuracy: Option<f64>,
    /// The selection score, higher is better (the accuracy, or minus the loss); `None` for a
    /// failed trial.
    pub score: Option<f64>,
    /// Wall time of the trial in seconds.
    pub seconds: f64,
    /// The reason the trial failed, such as a loss that became NaN.
    pub error: Option<String>,
}

/// A trial to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// The trial number, from 1.
    pub trial: usize,
    /// The rung of successive halving (0 otherwise).
    pub rung: usize,
    /// The epochs to train for.
    pub epochs: usize,
    /// The value of each searched config key.
    pub values: BTreeMap<String, Value>,
}

/// A validated search: its settings and parameters.
#[derive(Debug, Clone)]
pub struct Search {
    config: SearchConfig,
    parameters: Vec<Parameter>,
}

impl Search {
    /// Checks a `[search]` table.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] naming the parameter or setting that is invalid: no
    /// parameters, a key given twice, an invalid distribution or range, no trial count or
    /// time budget, or a reduction factor, grid size or parallel count that is too small.
    pub fn new(config: SearchConfig) -> Result<Self> {
        let invalid = |message: String| Err(Error::InvalidConfig(format!("search.{message}")));
        if config.parameters.is_empty() {
            return invalid(
                "parameters is empty; add [[search.parameters]] tables with key and \
                 distribution"
                    .into(),
            );
        }
        let mut keys = HashSet::new();
        let mut parameters = Vec::with_capacity(config.parameters.len());
        for spec in &config.parameters {
            if !keys.insert(spec.key.as_str()) {
                return Err(Error::InvalidConfig(format!(
                    "search parameter {} is given twice; keep one",
                    spec.key
                )));
            }
            parameters.push(Parameter::from_spec(spec)?);
        }
        if config.trials == Some(0) {
            return invalid("trials = 0; run at least 1 trial".into());
        }
        if let Some(seconds) = config.time_budget_seconds
            && !(seconds > 0.0 && seconds.is_finite())
        {
            return invalid(format!(
                "time_budget_seconds = {seconds}; use a positive number of seconds"
            ));
        }
        match config.strategy {
            Strategy::Random | Strategy::Tpe
                if config.trials.is_none() && config.time_budget_seconds.is_none() =>
            {
                return invalid(
                    "trials is missing; set trials, time_budget_seconds or both".into(),
                );
            }
            Strategy::Halving if config.trials.is_none_or(|n| n < 2) => {
                return invalid(
                    "trials must be at least 2 for strategy = \"halving\" (the configs of \
                     the first rung)"
                        .into(),
                );
            }
            _ => {}
        }
        if config.reduction_factor < 2 {
            return invalid(format!(
                "reduction_factor = {}; use 2 or more (3 is common)",
                config.reduction_factor
            ));
        }
        if config.min_epochs == 0 {
            return invalid("min_epochs = 0; use at least 1".into());
        }
        if config.grid_points < 2 {
            return invalid(format!(
                "grid_points = {}; use 2 or more",
                config.grid_points
            ));
        }
        if config.parallel == Some(0) {
            return invalid("parallel = 0; run at least 1 trial at a time".into());
        }
        Ok(Search { config, parameters })
    }

    /// The settings of the search.
    pub fn config(&self) -> &SearchConfig {
        &self.config
    }

    /// The searched parameters, in config order.
    pub fn parameters(&self) -> &[Parameter] {
        &self.parameters
    }

    /// Returns the number of configs the search tries at most (`None` for random and TPE
    /// searches bounded by time only).
    pub fn max_trials(&self) -> Option<usize> {
        match self.config.strategy {
            Strategy::Grid => {
                let size = self.grid_size();
                Some(self.config.trials.map_or(size, |n| n.min(size)))
            }
            _ => self.config.trials,
        }
    }

    fn grid_size(&self) -> usize {
        self.parameters
            .iter()
            .map(|p| p.grid(self.config.grid_points).len())
            .fold(1usize, usize::saturating_mul)
    }

    /// Returns the next wave of up to `wave` trials after the `finished` ones, for a search
    /// whose config trains for `max_epochs`. Trials of the wave that are already finished are
    /// included with their recorded values; the caller skips them. Returns an empty list
    /// when the search is complete.
    pub fn next_wave(
        &self,
        finished: &[TrialRecord],
        max_epochs: usize,
        wave: usize,
    ) -> Vec<Proposal> {
        let wave = wave.max(1);
        if self.config.strategy == Strategy::Halving {
            return self.next_halving_wave(finished, max_epochs, wave);
        }

        let done: HashSet<usize> = finished
            .iter()
            .filter(|r| r.rung == 0)
            .map(|r| r.trial)
            .collect();
        let total = self.max_trials().unwrap_or(usize::MAX);
        let Some(first) = (1..=total).find(|id| !done.contains(id)) else {
            return Vec::new();
        };
        let start = (first - 1) / wave * wave + 1;
        let end = (start + wave - 1).min(total);
        let history: Vec<&TrialRecord> = finished
            .iter()
            .filter(|r| r.rung == 0 && r.trial < start)
            .collect();
        (start..=end)
            .map(|trial| {
                let values = match finished.iter().find(|r| r.rung == 0 && r.trial == trial) {
                    Some(record) => record.values.clone(),
                    None => self.propose(trial, &history),
                };
                Proposal {
                    trial,
                    rung: 0,
                    epochs: max_epochs,
                    values,
                }
            })
            .collect()
    }

    /// Proposes the values of `trial` from the trials of the earlier waves.
    fn propose(&self, trial: usize, history: &[&TrialRecord]) -> BTreeMap<String, Value> {
        let mut rng = Rng::for_stream(self.config.seed, trial as u64);
        match self.config.strategy {
            Strategy::Grid => self.grid_point(trial - 1),
            Strategy::Tpe if history.len() >= self.startup_trials() => {
                let (good, bad) = split_by_quantile(history);
                self.parameters
                    .iter()
                    .map(|parameter| {
                        let good_values = values_of(&good, &parameter.key);
                        let bad_values = values_of(&bad, &parameter.key);
                        let value = tpe::propose(parameter, &good_values, &bad_values, &mut rng);
                        (parameter.key.clone(), value)
                    })
                    .collect()
            }
            _ => self
                .parameters
                .iter()
                .map(|parameter| (parameter.key.clone(), parameter.sample(&mut rng)))
                .collect(),
        }
    }

    fn startup_trials(&self) -> usize {
        self.config.startup_trials.unwrap_or_else(|| {
            let quarter = self.config.trials.unwrap_or(20) / 4;
            quarter.max(5).min(self.config.trials.unwrap_or(usize::MAX))
        })
    }

    /// Returns point `index` of the grid, the last parameter changing fastest.
    fn grid_point(&self, mut index: usize) -> BTreeMap<String, Value> {
        let grids: Vec<Vec<Value>> = self
            .parameters
            .iter()
            .map(|p| p.grid(self.config.grid_points))
            .collect();
        let mut values = BTreeMap::new();
        for (parameter, grid) in self.parameters.iter().zip(&grids).rev() {
            values.insert(parameter.key.clone(), grid[index % grid.len()].clone());
            index /= grid.len();
        }
        values
    }

    /// Returns the epochs of each rung of successive halving for a config of `max_epochs`:
    /// the last rung trains for `max_epochs`, each earlier one `reduction_factor` times
    /// fewer, and no rung fewer than `min_epochs`.
    pub fn rung_epochs(&self, max_epochs: usize) -> Vec<usize> {
        let eta = self.config.reduction_factor;
        let n = self.config.trials.unwrap_or(1);
        let mut epochs = vec![max_epochs];
        let mut configs = n;
        let mut rung_epochs = max_epochs;
        while configs >= eta && rung_epochs / eta >= self.config.min_epochs {
            configs /= eta;
            rung_epochs /= eta;
            epochs.push(rung_epochs);
        }
        epochs.reverse();
        epochs
    }

    fn next_halving_wave(
        &self,
        finished: &[TrialRecord],
        max_epochs: usize,
        wave: usize,
    ) -> Vec<Proposal> {
        let eta = self.config.reduction_factor;
        let n = self.config.trials.unwrap_or(1);
        let epochs = self.rung_epochs(max_epochs);
        let mut members: Vec<usize> = (1..=n).collect();
        for (rung, &rung_epochs) in epochs.iter().enumerate() {
            if rung > 0 {
                // Keep the best 1 / eta of the previous rung; failed trials rank last.
                let mut ranked: Vec<&TrialRecord> =
                    finished.iter().filter(|r| r.rung == rung - 1).collect();
                ranked.sort_by(|a, b| compare_scores(b, a).then(a.trial.cmp(&b.trial)));
                let keep = (members.len() / eta).max(1);
                members = ranked.iter().take(keep).map(|r| r.trial).collect();
                members.sort_unstable();
            }
            let done: HashSet<usize> = finished
                .iter()
                .filter(|r| r.rung == rung)
                .map(|r| r.trial)
                .collect();
            let Some(position) = members.iter().position(|id| !done.contains(id)) else {
                continue;
            };
            let start = position / wave * wave;
            return members[start..(start + wave).min(members.len())]
                .iter()
                .map(|&trial| {
                    let values = finished
                        .iter()
                        .find(|r| r.trial == trial)
                        .map(|r| r.values.clone())
                        .unwrap_or_else(|| self.propose(trial, &[]));
                    Proposal {
                        trial,
                        rung,
                        epochs: rung_epochs,
                        values,
                    }
                })
                .collect();
        }
        Vec::new()
    }
}

/// Orders two trials by score; a failed trial is below any finished one.
fn compare_scores(a: &TrialRecord, b: &TrialRecord) -> std::cmp::Ordering {
    match (a.score, b.score) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Greater,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

/// Returns the values of `key` in `records`.
fn values_of<'a>(records: &[&'a TrialRecord], key: &str) -> Vec<&'a Value> {
    records.iter().filter_map(|r| r.values.get(key)).collect()
}

/// Splits trials into the best [`tpe::GOOD_FRACTION`] (at least one) and the rest.
fn split_by_quantile<'a>(
    history: &[&'a TrialRecord],
) -> (Vec<&'a TrialRecord>, Vec<&'a TrialRecord>) {
    let mut ranked = history.to_vec();
    ranked.sort_by(|a, b| compare_scores(b, a).then(a.trial.cmp(&b.trial)));
    let good = ((ranked.len() as f64 * tpe::GOOD_FRACTION).ceil() as usize).max(1);
    let bad = ranked.split_off(good.min(ranked.len()));
    (ranked, bad)
}

/// Returns the best trial that trained for the full `max_epochs` (for successive halving,
/// a trial of the last rung), the earliest one on ties; `None` if all failed.
pub fn best_trial(records: &[TrialRecord], max_epochs: usize) -> Option<&TrialRecord> {
    records
        .iter()
        .filter(|r| r.score.is_some() && r.epochs == max_epochs)
        .max_by(|a, b| compare_scores(a, b).then(b.trial.cmp(&a.trial)))
}

#[cfg(test)]
mod tests;
