//! Text tables of evaluation and cross-validation results.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dendrite::train::{Evaluation, FoldSummary};

/// Formats an evaluation of `rows` rows: the loss and the overall metrics, then for
/// classifiers the per-class table (with the macro averages) and the confusion matrix, and
/// for several regression outputs a table per output. `names` are the class or target names.
pub fn evaluation_table(evaluation: &Evaluation, rows: usize, names: &[String]) -> String {
    let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| i.to_string());
    let mut text = format!("rows      {rows}\nloss      {:.4}\n", evaluation.loss);
    for (metric, value) in &evaluation.metrics {
        if !metric.starts_with("macro_") {
            line(&mut text, format_args!("{metric:<9} {value:.4}"));
        }
    }

    if let Some(per_class) = &evaluation.per_class {
        let width = (0..per_class.len())
            .map(|i| name(i).len())
            .chain(["macro avg".len()])
            .max()
            .unwrap_or(0);
        line(
            &mut text,
            format_args!("\n{:<width$}  precision  recall      f1  support", "class"),
        );
        for (i, class) in per_class.iter().enumerate() {
            line(
                &mut text,
                format_args!(
                    "{:<width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}",
                    name(i),
                    class.precision,
                    class.recall,
                    class.f1,
                    class.support
                ),
            );
        }
        let metric = |key: &str| evaluation.metrics.get(key).copied().unwrap_or(0.0);
        line(
            &mut text,
            format_args!(
                "{:<width$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}",
                "macro avg",
                metric("macro_precision"),
                metric("macro_recall"),
                metric("macro_f1"),
                rows
            ),
        );
    }

    if let Some(per_output) = evaluation.per_output.as_ref().filter(|p| p.len() > 1) {
        let width = (0..per_output.len())
            .map(|i| name(i).len())
            .max()
            .unwrap_or(0)
            .max(6);
        line(
            &mut text,
            format_args!(
                "\n{:<width$}  {:>12}  {:>12}  {:>12}  {:>8}",
                "output", "mse", "rmse", "mae", "r2"
            ),
        );
        for (i, output) in per_output.iter().enumerate() {
            let r2 = output.r2.map_or("-".to_string(), |r2| format!("{r2:.4}"));
            line(
                &mut text,
                format_args!(
                    "{:<width$}  {:>12.4}  {:>12.4}  {:>12.4}  {r2:>8}",
                    name(i),
                    output.mse,
                    output.rmse,
                    output.mae
                ),
            );
        }
    }

    if let Some(confusion) = &evaluation.confusion {
        line(
            &mut text,
            format_args!("\n{}", confusion_table(confusion, names)),
        );
    }
    text
}

/// Formats the mean, standard deviation and per-fold values of each metric over
/// cross-validation folds.
pub fn folds_table(summary: &BTreeMap<String, FoldSummary>) -> String {
    let width = summary.keys().map(String::len).max().unwrap_or(0).max(6);
    let folds = summary.values().next().map_or(0, |s| s.folds.len());

    let mut text = format!("{:<width$}  {:>10}  {:>10}", "metric", "mean", "std");
    for fold in 1..=folds {
        write!(text, "  {:>10}", format!("fold {fold}")).expect("writing to a String cannot fail");
    }
    text.push('\n');
    for (metric, fold_summary) in summary {
        write!(
            text,
            "{metric:<width$}  {:>10.4}  {:>10.4}",
            fold_summary.mean, fold_summary.std
        )
        .expect("writing to a String cannot fail");
        for value in &fold_summary.folds {
            write!(text, "  {value:>10.4}").expect("writing to a String cannot fail");
        }
        text.push('\n');
    }
    text
}

fn line(text: &mut String, args: std::fmt::Arguments<'_>) {
    text.write_fmt(args)
        .expect("writing to a String cannot fail");
    text.push('\n');
}

/// Formats a confusion matrix with true classes as rows and predicted classes as columns.
fn confusion_table(confusion: &[Vec<usize>], names: &[String]) -> String {
    let label = |i: usize| names.get(i).cloned().unwrap_or_else(|| i.to_string());
    let width = confusion
        .iter()
        .flatten()
        .map(|c| c.to_string().len())
        .chain((0..confusion.len()).map(|i| label(i).len()))
        .max()
        .unwrap_or(1)
        .max(4);
    let mut table = format!(
        "confusion matrix (rows: true class, columns: predicted)\n{:>width$}",
        ""
    );
    for j in 0..confusion.len() {
        write!(table, " {:>width$}", label(j)).expect("writing to a String cannot fail");
    }
    for (i, row) in confusion.iter().enumerate() {
        write!(table, "\n{:>width$}", label(i)).expect("writing to a String cannot fail");
        for count in row {
            write!(table, " {count:>width$}").expect("writing to a String cannot fail");
        }
    }
    table
}
