//! `dendrite cv`: k-fold cross-validation of a CSV config.

use std::path::Path;

use anyhow::{Context, Result, bail};
use dendrite::data::TabularSource;
use dendrite::model;
use dendrite::nn::Sequential;
use dendrite::train::{self, Callback, FitOptions};
use serde_json::json;

use crate::config::{Config, DataConfig, name_config};
use crate::train::{decision_threshold, task_of};

/// Prints the warnings of training runs, prefixed with the fold.
struct FoldWarnings {
    fold: usize,
}

impl Callback for FoldWarnings {
    fn on_warning(&mut self, message: &str) {
        eprintln!("warning: fold {}: {message}", self.fold);
    }
}

/// Runs `dendrite cv CONFIG [--folds K] [--json FILE]`.
///
/// Each fold fits the preprocessing and trains a new model on the other folds (less their
/// validation rows), then evaluates it on the fold. The test split of the config is set
/// aside and never used, and a separate test file is not read.
pub fn run(config_path: &Path, folds: usize, json: Option<&Path>) -> Result<()> {
    let config = Config::load(config_path)?;
    let DataConfig::Csv(csv) = &config.data else {
        bail!(
            "{}: dendrite cv needs [data] format = \"csv\"",
            config_path.display()
        );
    };
    let seed = config.training.seed;

    let source = TabularSource::read(csv)?;
    for warning in source.warnings() {
        eprintln!("warning: {warning}");
    }
    let splits = source
        .cv_splits(csv, folds, seed)
        .map_err(|e| name_config(e.into(), config_path))?;
    let rows: usize = splits.iter().map(|split| split.test.len()).sum();
    println!(
        "{folds}-fold cross-validation on {rows} of the {} rows of {}{}",
        source.len(),
        csv.train.display(),
        if rows < source.len() {
            " (the test split is left out)"
        } else {
            ""
        }
    );

    let mut fold_metrics = Vec::with_capacity(splits.len());
    for (i, split) in splits.iter().enumerate() {
        let fold = i + 1;
        let prepared = source
            .prepare(csv, split)
            .map_err(|e| name_config(e.into(), config_path))
            .with_context(|| format!("fold {fold}"))?;
        for warning in &prepared.warnings[source.warnings().len()..] {
            eprintln!("warning: fold {fold}: {warning}");
        }

        let task = task_of(&prepared.train, prepared.preprocessor.targets.clone());
        let stored = decision_threshold(&config.model, &task)
            .with_context(|| format!("{}: [model]", config_path.display()))?;
        let decision = model::binary_decision(&task, stored.as_ref())?;
        let mut model = Sequential::new(
            prepared.train.feature_shape(),
            config.model.layers.clone(),
            seed,
        )
        .with_context(|| format!("{}: [model]", config_path.display()))?;

        let options = FitOptions {
            class_weights: prepared.class_weights.clone(),
            ..FitOptions::default()
        };
        train::fit_with(
            &mut model,
            &prepared.train,
            prepared.validation.as_ref(),
            &config.training,
            &options,
            &mut FoldWarnings { fold },
        )
        .with_context(|| format!("fold {fold}"))?;

        let held_out = prepared
            .test
            .as_ref()
            .expect("every fold has at least one row");
        let batch = config.training.batch_size.max(256);
        let evaluation =
            train::evaluate_with(&model, held_out, config.training.loss, batch, decision);
        let metrics = evaluation.to_map();
        let line: Vec<String> = metrics
            .iter()
            .map(|(name, value)| format!("{name} {value:.4}"))
            .collect();
        println!(
            "fold {fold}/{folds}: {} training rows, {} validation rows, {} held out; {}",
            prepared.train.len(),
            prepared.validation.as_ref().map_or(0, |v| v.len()),
            held_out.len(),
            line.join(", ")
        );
        fold_metrics.push(metrics);
    }

    let summary = train::summarize_folds(&fold_metrics);
    println!(
        "\nmean and sample standard deviation over the folds:\n{}",
        crate::report::folds_table(&summary)
    );

    if let Some(path) = json {
        let object = json!({
            "folds": folds,
            "rows": rows,
            "metrics": summary,
        });
        let mut bytes = serde_json::to_vec_pretty(&object)?;
        bytes.push(b'\n');
        model::write_atomic(path, &bytes)?;
    }
    Ok(())
}
