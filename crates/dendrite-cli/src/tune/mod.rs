//! `dendrite tune`: hyperparameter search on the validation split, then one evaluation of
//! the best config on the test split.

mod leak;
pub mod overrides;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use dendrite::data::Targets;
use dendrite::nn::Sequential;
use dendrite::train::{self, FitOptions, Silent};
use dendrite::tune::{
    Journal, Metric, Proposal, Search, SearchConfig, Strategy, TrialRecord, best_trial, fingerprint,
};
use serde_json::Value;
use toml::Table;

use crate::config::{Config, PreparedData, name_config, toml_error};
use overrides::{TEST_KEYS, check_searchable, set_key, to_toml};

/// Options of `dendrite tune`.
#[derive(Debug)]
pub struct TuneOptions {
    /// The output folder (default: runs/<config name>-tune).
    pub out: Option<PathBuf>,
    /// Skip the retraining of the best config and its test evaluation.
    pub no_retrain: bool,
}

/// A config read for a search: its table without `[search]`, and the search.
pub struct SearchSetup {
    /// The config table without `[search]`, test keys included.
    pub table: Table,
    /// The checked search.
    pub search: Search,
}

/// Reads the config at `path`, checks it as `dendrite train` would, and checks its
/// `[search]` table and every parameter against the config.
///
/// # Errors
///
/// Fails naming the file and the parameter or key for an invalid config, a missing or
/// invalid `[search]` table, a parameter that changes the held-out rows, an unknown key or a
/// value the config rejects at either end of a parameter's range.
pub fn read_search(path: &Path) -> Result<SearchSetup> {
    Config::load(path)?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let mut table: Table =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!(toml_error(path, &text, &e)))?;
    let Some(search_value) = table.remove("search") else {
        bail!(
            "{}: no [search] table; add one with a strategy, trials and [[search.parameters]] \
             (see dendrite tune --help)",
            path.display()
        );
    };
    let search_config: SearchConfig = search_value.try_into().map_err(|e: toml::de::Error| {
        anyhow::anyhow!(
            "{}: [search]: {}",
            path.display(),
            e.message().trim().replace('\n', " ")
        )
    })?;
    let search = Search::new(search_config).with_context(|| path.display().to_string())?;

    // Each parameter at both ends of its range must give a valid config, so that a typo in
    // a key fails now, naming the parameter, and not in every trial.
    let trial_base = trial_table(&table);
    for parameter in search.parameters() {
        check_searchable(&parameter.key).with_context(|| path.display().to_string())?;
        for u in [0.0, 1.0] {
            let value = parameter.from_unit(u);
            let values = BTreeMap::from([(parameter.key.clone(), value.clone())]);
            let edited = apply(&trial_base, &values, None)?;
            Config::from_table(path, edited)
                .with_context(|| format!("search parameter {} = {value}", parameter.key))?;
        }
    }
    Ok(SearchSetup { table, search })
}

/// Reads the config at `path` as a table without `[search]` and without a separate test
/// source, for commands that must not read test rows.
///
/// # Errors
///
/// Fails naming the file and key if the config is invalid.
pub fn read_config_without_test(path: &Path) -> Result<Table> {
    Config::load(path)?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let mut table: Table =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!(toml_error(path, &text, &e)))?;
    table.remove("search");
    Ok(trial_table(&table))
}

/// Returns the config table of the trials: the table without a separate test source, so
/// that no trial reads a test row.
fn trial_table(table: &Table) -> Table {
    let mut trial = table.clone();
    if let Some(toml::Value::Table(data)) = trial.get_mut("data") {
        for key in TEST_KEYS {
            data.remove(key);
        }
    }
    trial
}

/// Returns `base` with the searched `values` and, if given, the epochs set.
fn apply(base: &Table, values: &BTreeMap<String, Value>, epochs: Option<usize>) -> Result<Table> {
    let mut table = base.clone();
    for (key, value) in values {
        set_key(&mut table, key, to_toml(key, value)?)?;
    }
    if let Some(epochs) = epochs {
        set_key(
            &mut table,
            "training.epochs",
            toml::Value::Integer(epochs as i64),
        )?;
    }
    Ok(table)
}

/// Runs `dendrite tune CONFIG`.
pub fn run(config_path: &Path, options: TuneOptions) -> Result<()> {
    let started = Instant::now();
    let SearchSetup { table, search } = read_search(config_path)?;
    let base_config = Config::load(config_path)?;
    for warning in leak::check_test_source(&base_config.data)? {
        eprintln!("warning: {warning}");
    }

    let trial_base = trial_table(&table);
    let trial_config = Config::from_table(config_path, trial_base.clone())?;
    let max_epochs = trial_config.training.epochs;
    let searches_data = search
        .parameters()
        .iter()
        .any(|p| p.key.starts_with("data."));
    let shared = if searches_data {
        None
    } else {
        Some(prepare(config_path, &trial_config)?)
    };
    let metric = match (search.config().metric, &shared) {
        (Some(metric), _) => metric,
        (None, Some(data)) if matches!(data.train.targets, Targets::Values(_)) => Metric::Loss,
        (None, Some(_)) => Metric::Accuracy,
        (None, None) => bail!(
            "{}: set search.metric (\"accuracy\" or \"loss\") when the search sets data keys",
            config_path.display()
        ),
    };

    let out_dir = options.out.clone().unwrap_or_else(|| {
        let stem = config_path
            .file_stem()
            .map_or_else(|| "run".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from("runs").join(format!("{stem}-tune"))
    });
    let journal_path = out_dir.join("journal.jsonl");
    let text = std::fs::read(config_path)
        .with_context(|| format!("cannot read config {}", config_path.display()))?;
    let (journal, mut records) = Journal::open(&journal_path, &fingerprint(&text))?;
    if !records.is_empty() {
        println!(
            "continuing the search in {}: {} trials finished earlier",
            journal_path.display(),
            records.len()
        );
    }

    let cores = rayon::current_num_threads();
    let parallel = search
        .config()
        .parallel
        .unwrap_or((cores / 2).max(1))
        .min(cores);
    let threads = (cores / parallel).max(1);
    // Each trial's matrix products use the threads of its own pool.
    dendrite::tensor::set_gemm_threads(0);
    let total = search
        .max_trials()
        .map_or_else(|| "until the time budget".to_string(), |n| n.to_string());
    println!(
        "searching {} parameters with strategy {}, {} configs, {parallel} at a time on \
         {threads} threads each; selecting on validation {}",
        search.parameters().len(),
        strategy_name(search.config().strategy),
        total,
        metric_name(metric)
    );

    let journal = Mutex::new(journal);
    let mut timed_out = false;
    loop {
        if let Some(budget) = search.config().time_budget_seconds
            && started.elapsed().as_secs_f64() >= budget
        {
            timed_out = true;
            break;
        }
        let wave = search.next_wave(&records, max_epochs, parallel);
        if wave.is_empty() {
            break;
        }
        let pending: Vec<Proposal> = wave
            .into_iter()
            .filter(|p| {
                !records
                    .iter()
                    .any(|r| r.trial == p.trial && r.rung == p.rung)
            })
            .collect();
        let finished: Vec<TrialRecord> = std::thread::scope(|scope| {
            let handles: Vec<_> = pending
                .iter()
                .map(|proposal| {
                    let (trial_base, shared, journal) = (&trial_base, shared.as_ref(), &journal);
                    let total = search.max_trials();
                    scope.spawn(move || -> Result<TrialRecord> {
                        let record =
                            run_trial(config_path, trial_base, proposal, shared, metric, threads);
                        println!("{}", report::trial_line(&record, total));
                        journal
                            .lock()
                            .expect("no trial panics while holding the journal")
                            .append(&record)?;
                        Ok(record)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("trials do not panic"))
                .collect::<Result<Vec<_>>>()
        })?;
        records.extend(finished);
    }
    if timed_out {
        println!(
            "the time budget of {} s is spent; no new trials are started",
            search.config().time_budget_seconds.unwrap_or_default()
        );
    }

    records.sort_by_key(|r| (r.rung, r.trial));
    report::finish(
        config_path,
        &table,
        &search,
        &records,
        max_epochs,
        metric,
        &out_dir,
        options.no_retrain || !search.config().retrain,
    )
}

fn strategy_name(strategy: Strategy) -> &'static str {
    match strategy {
        Strategy::Grid => "grid",
        Strategy::Random => "random",
        Strategy::Halving => "halving",
        Strategy::Tpe => "tpe",
    }
}

fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Accuracy => "accuracy",
        Metric::Loss => "loss",
    }
}

/// Prepares the training and validation splits of a trial config.
///
/// # Errors
///
/// Fails if the data cannot be read, or if there is no validation split to select on.
fn prepare(config_path: &Path, config: &Config) -> Result<PreparedData> {
    let prepared = config
        .data
        .prepare(config.training.seed)
        .map_err(|e| name_config(e, config_path))?;
    if prepared.validation.as_ref().is_none_or(|v| v.is_empty()) {
        bail!(
            "{}: dendrite tune selects on the validation split, but data.validation_split is 0; \
             set it to a fraction such as 0.2",
            config_path.display()
        );
    }
    Ok(prepared)
}

/// Trains one trial on `threads` threads and scores it on the validation split. A trial that
/// fails (a loss that becomes NaN, a config the values make invalid) is recorded with its
/// error and no score.
fn run_trial(
    config_path: &Path,
    trial_base: &Table,
    proposal: &Proposal,
    shared: Option<&PreparedData>,
    metric: Metric,
    threads: usize,
) -> TrialRecord {
    let started = Instant::now();
    let mut record = TrialRecord {
        trial: proposal.trial,
        rung: proposal.rung,
        epochs: proposal.epochs,
        values: proposal.values.clone(),
        val_loss: None,
        val_accuracy: None,
        score: None,
        seconds: 0.0,
        error: None,
    };
    let outcome = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|pool| {
            pool.install(|| train_and_validate(config_path, trial_base, proposal, shared))
        });
    match outcome {
        Ok((val_loss, val_accuracy)) => {
            record.val_loss = Some(val_loss);
            record.val_accuracy = val_accuracy;
            record.score = match metric {
                Metric::Accuracy => val_accuracy,
                Metric::Loss => Some(-val_loss),
            };
            if record.score.is_none() {
                record.error = Some("metric accuracy needs class labels".into());
            }
        }
        Err(error) => record.error = Some(crate::one_line(&error)),
    }
    record.seconds = started.elapsed().as_secs_f64();
    record
}

/// Returns the validation loss and accuracy of a trial's trained model.
fn train_and_validate(
    config_path: &Path,
    trial_base: &Table,
    proposal: &Proposal,
    shared: Option<&PreparedData>,
) -> Result<(f64, Option<f64>)> {
    let table = apply(trial_base, &proposal.values, Some(proposal.epochs))?;
    let config = Config::from_table(config_path, table)?;
    let own;
    let data = match shared {
        Some(data) => data,
        None => {
            own = prepare(config_path, &config)?;
            &own
        }
    };
    let validation = data
        .validation
        .as_ref()
        .expect("prepare checks the validation split");
    let mut model = Sequential::new(
        data.train.feature_shape(),
        config.model.layers.clone(),
        config.training.seed,
    )?;
    let options = FitOptions {
        class_weights: data.class_weights.clone(),
        ..FitOptions::default()
    };
    train::fit_with(
        &mut model,
        &data.train,
        Some(validation),
        &config.training,
        &options,
        &mut Silent,
    )?;
    let batch = config.training.batch_size.max(256);
    let evaluation = train::evaluate(&model, validation, config.training.loss, batch);
    Ok((evaluation.loss, evaluation.accuracy()))
}

/// Returns the best trial trained for the full epochs.
fn best(records: &[TrialRecord], max_epochs: usize) -> Option<&TrialRecord> {
    best_trial(records, max_epochs)
}

/// Returns true for strategies that train configs at several rungs.
fn has_rungs(search: &Search) -> bool {
    search.config().strategy == Strategy::Halving
}
