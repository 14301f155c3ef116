//! Classification metrics: accuracy, precision, recall and F1 per class and macro-averaged,
//! the confusion matrix, and ROC AUC for two classes.

use serde::Serialize;

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// Correct predictions of the class among all predictions of it; 0 if it was never
    /// predicted.
    pub precision: f64,
    /// Correct predictions of the class among its rows; 0 if it has no rows.
    pub recall: f64,
    /// The harmonic mean of precision and recall; 0 if both are 0.
    pub f1: f64,
    /// The number of rows of the class.
    pub support: usize,
}

/// The classification metrics of one set of predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationMetrics {
    /// Correct predictions among all rows; 0 for no rows.
    pub accuracy: f64,
    /// The metrics of each class, in class order.
    pub per_class: Vec<ClassMetrics>,
    /// The unweighted mean of the precisions of the classes that occur in the labels or
    /// the predictions.
    pub macro_precision: f64,
    /// The same mean of the recalls.
    pub macro_recall: f64,
    /// The same mean of the F1 scores.
    pub macro_f1: f64,
    /// `confusion[true_class][predicted_class]` counts rows.
    pub confusion: Vec<Vec<usize>>,
}

/// Computes the classification metrics of `predicted` classes against true `labels`, for
/// `classes` classes.
///
/// A class that is never predicted has precision 0, and one without rows has recall 0, as
/// scikit-learn does with `zero_division=0`. The macro averages leave out classes that occur
/// neither in `labels` nor in `predicted`, as scikit-learn does when no class list is given.
///
/// # Panics
///
/// Panics if the two slices differ in length or a class is not below `classes`.
pub fn classification_metrics(
    labels: &[usize],
    predicted: &[usize],
    classes: usize,
) -> ClassificationMetrics {
    assert_eq!(
        labels.len(),
        predicted.len(),
        "classification_metrics got {} labels and {} predictions",
        labels.len(),
        predicted.len()
    );

    let mut confusion = vec![vec![0usize; classes]; classes];
    for (&truth, &guess) in labels.iter().zip(predicted) {
        confusion[truth][guess] += 1;
    }

    let ratio = |numerator: usize, denominator: usize| {
        if denominator == 0 {
            0.0
        } else {
            numerator as f64 / denominator as f64
        }
    };
    let mut per_class = Vec::with_capacity(classes);
    let mut occurring = Vec::with_capacity(classes);
    for class in 0..classes {
        let correct = confusion[class][class];
        let support: usize = confusion[class].iter().sum();
        let predicted_count: usize = confusion.iter().map(|row| row[class]).sum();

        let precision = ratio(correct, predicted_count);
        let recall = ratio(correct, support);
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        per_class.push(ClassMetrics {
            precision,
            recall,
            f1,
            support,
        });
        occurring.push(support > 0 || predicted_count > 0);
    }

    let macro_mean = |value: fn(&ClassMetrics) -> f64| {
        let values: Vec<f64> = per_class
            .iter()
            .zip(&occurring)
            .filter(|(_, occurs)| **occurs)
            .map(|(metrics, _)| value(metrics))
            .collect();
        if values.is_empty() {
            0.0
        } else {
            values.iter().sum::<f64>() / values.len() as f64
        }
    };
    let correct: usize = (0..classes).map(|class| confusion[class][class]).sum();

    ClassificationMetrics {
        accuracy: ratio(correct, labels.len()),
        macro_precision: macro_mean(|m| m.precision),
        macro_recall: macro_mean(|m| m.recall),
        macro_f1: macro_mean(|m| m.f1),
        per_class,
        confusion,
    }
}

/// Computes the area under the ROC curve of `scores` for rows whose `positive` flag is set.
///
/// The area is the probability that a random positive row scores higher than a random
/// negative one, with ties counted as one half. This is the Mann-Whitney U statistic divided
/// by the product of the two counts. Returns `None` if there are no positive or no negative
/// rows.
///
/// # Panics
///
/// Panics if the two slices differ in length.
pub fn roc_auc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    assert_eq!(
        scores.len(),
        positive.len(),
        "roc_auc got {} scores and {} flags",
        scores.len(),
        positive.len()
    );
    let positives = positive.iter().filter(|&&p| p).count();
    let negatives = positive.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }

    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));

    // Ranks count from 1; the rows of a group of equal scores all get the group's mean rank.
    let mut positive_rank_sum = 0.0f64;
    let mut rank_before = 0usize;
    for group in order.chunk_by(|&a, &b| scores[a] == scores[b]) {
        let mean_rank = rank_before as f64 + (group.len() as f64 + 1.0) / 2.0;
        let group_positives = group.iter().filter(|&&row| positive[row]).count();
        positive_rank_sum += mean_rank * group_positives as f64;
        rank_before += group.len();
    }

    let positives = positives as f64;
    let u = positive_rank_sum - positives * (positives + 1.0) / 2.0;
    Some(u / (positives * negatives as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(found: f64, expected: f64) {
        assert!(
            (found - expected).abs() < 1e-12,
            "found {found}, expected {expected}"
        );
    }

    #[test]
    fn metrics_by_hand_three_classes() {
        // true:      0 0 0 1 1 2
        // predicted: 0 0 1 1 0 2
        let metrics = classification_metrics(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 0, 2], 3);

        assert_eq!(
            metrics.confusion,
            vec![vec![2, 1, 0], vec![1, 1, 0], vec![0, 0, 1]]
        );
        assert_close(metrics.accuracy, 4.0 / 6.0);
        // Class 0: precision 2/3, recall 2/3. Class 1: 1/2 and 1/2. Class 2: 1 and 1.
        let expected = [(2.0 / 3.0, 2.0 / 3.0, 3), (0.5, 0.5, 2), (1.0, 1.0, 1)];
        for (class, (precision, recall, support)) in expected.into_iter().enumerate() {
            let found = metrics.per_class[class];
            assert_close(found.precision, precision);
            assert_close(found.recall, recall);
            assert_close(found.f1, precision);
            assert_eq!(found.support, support);
        }
        assert_close(metrics.macro_precision, (2.0 / 3.0 + 0.5 + 1.0) / 3.0);
        assert_close(metrics.macro_f1, (2.0 / 3.0 + 0.5 + 1.0) / 3.0);
    }

    #[test]
    fn class_never_predicted_scores_zero() {
        // Class 1 has two rows, but the model only ever predicts class 0.
        let metrics = classification_metrics(&[0, 0, 1, 1], &[0, 0, 0, 0], 2);

        let never = metrics.per_class[1];
        assert_eq!((never.precision, never.recall, never.f1), (0.0, 0.0, 0.0));
        assert_eq!(never.support, 2);
        // Class 0: precision 2/4, recall 1, F1 = 2 * 0.5 * 1 / 1.5 = 2/3.
        assert_close(metrics.per_class[0].f1, 2.0 / 3.0);
        assert_close(metrics.macro_f1, (2.0 / 3.0 + 0.0) / 2.0);
        assert_close(metrics.macro_recall, 0.5);
        assert_close(metrics.accuracy, 0.5);
    }

    #[test]
    fn absent_class_leaves_macro_average() {
        // Class 2 is neither in the labels nor in the predictions.
        let metrics = classification_metrics(&[0, 1], &[0, 1], 3);

        assert_close(metrics.macro_f1, 1.0);
        assert_eq!(metrics.per_class[2].support, 0);
    }

    #[test]
    fn roc_auc_by_hand_with_ties() {
        // Positives score 0.8, 0.4 and 0.4; negatives 0.4 and 0.1. Pairs (positive,
        // negative): 0.8 > 0.4 and 0.8 > 0.1 count 1 each, 0.4 = 0.4 counts 1/2 twice, and
        // 0.4 > 0.1 counts 1 twice. So AUC = (2 + 1 + 2) / (3 * 2) = 5/6.
        let scores = [0.4, 0.8, 0.1, 0.4, 0.4];
        let positive = [true, true, false, false, true];

        assert_close(roc_auc(&scores, &positive).unwrap(), 5.0 / 6.0);
    }

    #[test]
    fn roc_auc_extremes() {
        assert_close(roc_auc(&[0.1, 0.9], &[false, true]).unwrap(), 1.0);
        assert_close(roc_auc(&[0.9, 0.1], &[false, true]).unwrap(), 0.0);
        assert_close(
            roc_auc(&[0.5; 4], &[false, true, true, false]).unwrap(),
            0.5,
        );
        assert_eq!(roc_auc(&[0.2, 0.3], &[true, true]), None);
        assert_eq!(roc_auc(&[], &[]), None);
    }
}
