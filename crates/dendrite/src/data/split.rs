//! Seeded splits of row indices: train/holdout, train/validation/test, and k folds.
//!
//! Every split returns index lists, each sorted ascending, that are disjoint and together
//! cover every row once. The same inputs and seed always give the same split.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Splits rows into training and holdout indices so that each class keeps its share in both.
///
/// For each class, in ascending label order, the class's row indices are shuffled with one
/// generator seeded by `seed`, and the first `round(fraction * count)` of them go to the
/// holdout. A class with at least 2 rows gives at least 1 row to the holdout when `fraction`
/// is above 0, and keeps at least 1 row for training. A class with a single row always stays
/// in training. Because the split works per class, a file sorted by class still gets every
/// class with 2 or more rows in the holdout.
///
/// # Errors
///
/// Returns [`Error::InvalidConfig`] if `fraction` is not in `[0, 1)`.
pub fn stratified_split(
    labels: &[usize],
    fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    check_fraction(fraction)?;

    let mut rows_by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (row, &label) in labels.iter().enumerate() {
        rows_by_class.entry(label).or_default().push(row);
    }

    let mut rng = Rng::new(seed);
    let mut train = Vec::with_capacity(labels.len());
    let mut holdout = Vec::new();
    for rows in rows_by_class.values_mut() {
        rng.shuffle(rows);
        let holdout_len = holdout_len(rows.len(), fraction);
        holdout.extend_from_slice(&rows[..holdout_len]);
        train.extend_from_slice(&rows[holdout_len..]);
    }

    train.sort_unstable();
    holdout.sort_unstable();
    Ok((train, holdout))
}

/// Splits `0..n` into training and holdout indices at random, for regression targets where
/// there are no classes to stratify by.
///
/// The holdout gets `round(fraction * n)` rows, at least 1 when `n >= 2` and `fraction` is
/// above 0, and at most `n - 1`.
///
/// # Errors
///
/// Returns [`Error::InvalidConfig`] if `fraction` is not in `[0, 1)`.
pub fn random_split(n: usize, fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    check_fraction(fraction)?;

    let mut rows: Vec<usize> = (0..n).collect();
    Rng::new(seed).shuffle(&mut rows);

    let holdout_len = holdout_len(n, fraction);
    let mut holdout = rows[..holdout_len].to_vec();
    let mut train = rows[holdout_len..].to_vec();

    train.sort_unstable();
    holdout.sort_unstable();
    Ok((train, holdout))
}

/// The row indices of a training, validation and test split, each sorted ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSplit {
    /// The rows to train on.
    pub train: Vec<usize>,
    /// The rows to validate on after each epoch; may be empty.
    pub validation: Vec<usize>,
    /// The rows for the final test figures; may be empty.
    pub test: Vec<usize>,
}

/// The random stream of the test split, so that it does not depend on the validation
/// fraction.
const TEST_SPLIT_STREAM: u64 = 11;

/// Splits `n` rows into training, validation and test rows, stratified by class when
/// `labels` are given (see [`stratified_split`]) and at random otherwise (see
/// [`random_split`]).
///
/// The test rows are taken first, `test` of all rows, with a seed derived from `seed`, so
/// that changing the validation fraction does not change them. The validation rows are
/// then `validation` of all rows, taken from the rest with `seed` itself. Without a test
/// fraction, this is the split that [`stratified_split`] or [`random_split`] makes with
/// `seed`.
///
/// # Errors
///
/// Returns [`Error::InvalidConfig`] if a fraction is not in `[0, 1)` or the two add up to 1
/// or more.
///
/// # Panics
///
/// Panics if `labels` is given and its length is not `n`.
pub fn split_rows(
    labels: Option<&[usize]>,
    n: usize,
    validation: f64,
    test: f64,
    seed: u64,
) -> Result<RowSplit> {
    check_fraction(validation)?;
    check_fraction(test)?;
    if validation + test >= 1.0 {
        return Err(Error::InvalidConfig(format!(
            "validation fraction {validation} and test fraction {test} leave no training rows; \
             make their sum less than 1"
        )));
    }
    if let Some(labels) = labels {
        assert_eq!(
            labels.len(),
            n,
            "split_rows got {} labels for {n} rows",
            labels.len()
        );
    }

    let split_subset =
        |rows: &[usize], fraction: f64, seed: u64| -> Result<(Vec<usize>, Vec<usize>)> {
            let (keep, holdout) = match labels {
                Some(labels) => {
                    let subset: Vec<usize> = rows.iter().map(|&row| labels[row]).collect();
                    stratified_split(&subset, fraction, seed)?
                }
                None => random_split(rows.len(), fraction, seed)?,
            };
            Ok((
                keep.into_iter().map(|i| rows[i]).collect(),
                holdout.into_iter().map(|i| rows[i]).collect(),
            ))
        };

    let all: Vec<usize> = (0..n).collect();
    let test_seed = Rng::for_stream(seed, TEST_SPLIT_STREAM).next_u64();
    let (rest, test_rows) = split_subset(&all, test, test_seed)?;
    // The validation fraction is of all rows, so it is scaled up to the rows that remain.
    let (train, validation_rows) = split_subset(&rest, validation / (1.0 - test), seed)?;

    Ok(RowSplit {
        train,
        validation: validation_rows,
        test: test_rows,
    })
}

/// Splits `0..n` into `k` folds of shuffled rows for cross-validation. Fold sizes differ by
/// at most 1.
///
/// # Errors
///
/// Returns [`Error::InvalidConfig`] if `k` is below 2 or above `n`.
pub fn k_fold(n: usize, k: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    check_folds(n, k)?;

    let mut rows: Vec<usize> = (0..n).collect();
    Rng::new(seed).shuffle(&mut rows);

    let mut folds = vec![Vec::with_capacity(n / k + 1); k];
    for (i, row) in rows.into_iter().enumerate() {
        folds[i % k].push(row);
    }
    for fold in &mut folds {
        fold.sort_unstable();
    }
    Ok(folds)
}

/// Splits rows into `k` folds that keep each class's share, for cross-validation.
///
/// The rows of each class, in ascending label order, are shuffled with one generator seeded
/// by `seed` and dealt to the folds in turn, continuing where the previous class stopped. So
/// each class's count differs by at most 1 between folds, and fold sizes differ by at most 1.
/// A class with fewer than `k` rows is missing from some folds.
///
/// # Errors
///
/// Returns [`Error::InvalidConfig`] if `k` is below 2 or above the number of rows.
pub fn stratified_k_fold(labels: &[usize], k: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    check_folds(labels.len(), k)?;

    let mut rows_by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (row, &label) in labels.iter().enumerate() {
        rows_by_class.entry(label).or_default().push(row);
    }

    let mut rng = Rng::new(seed);
    let mut folds = vec![Vec::with_capacity(labels.len() / k + 1); k];
    let mut next = 0;
    for rows in rows_by_class.values_mut() {
        rng.shuffle(rows);
        for &row in rows.iter() {
            folds[next].push(row);
            next = (next + 1) % k;
        }
    }
    for fold in &mut folds {
        fold.sort_unstable();
    }
    Ok(folds)
}

fn check_folds(n: usize, k: usize) -> Result<()> {
    if k < 2 || k > n {
        return Err(Error::InvalidConfig(format!(
            "{k} folds are invalid for {n} rows; use at least 2 folds and at most one per row"
        )));
    }
    Ok(())
}

fn check_fraction(fraction: f64) -> Result<()> {
    if (0.0..1.0).contains(&fraction) {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "holdout fraction {fraction} is invalid: it must be at least 0 and below 1"
        )))
    }
}

/// Returns the number of the `count` rows that go to the holdout.
fn holdout_len(count: usize, fraction: f64) -> usize {
    if count < 2 || fraction == 0.0 {
        return 0;
    }

    let rounded = (fraction * count as f64).round() as usize;
    rounded.clamp(1, count - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3 classes with 50, 30 and 7 rows, sorted by class.
    fn sorted_labels() -> Vec<usize> {
        let mut labels = vec![0; 50];
        labels.extend(vec![1; 30]);
        labels.extend(vec![2; 7]);
        labels
    }

    fn count_class(labels: &[usize], rows: &[usize], class: usize) -> usize {
        rows.iter().filter(|&&row| labels[row] == class).count()
    }

    fn assert_partition(train: &[usize], holdout: &[usize], n: usize) {
        let mut all: Vec<usize> = train.iter().chain(holdout).copied().collect();
        all.sort_unstable();

        assert_eq!(
            all,
            (0..n).collect::<Vec<_>>(),
            "split is not a partition of 0..{n}"
        );
        assert!(train.is_sorted(), "train indices are not sorted");
        assert!(holdout.is_sorted(), "holdout indices are not sorted");
    }

    #[test]
    fn stratified_keeps_class_proportions() {
        let labels = sorted_labels();

        let (train, holdout) = stratified_split(&labels, 0.2, 7).unwrap();

        for (class, count) in [(0, 50), (1, 30), (2, 7)] {
            let expected = 0.2 * count as f64;
            let found = count_class(&labels, &holdout, class) as f64;
            assert!(
                (found - expected).abs() <= 1.0,
                "class {class}: {found} holdout rows, expected about {expected}"
            );
            assert!(
                count_class(&labels, &train, class) > 0,
                "class {class} missing from train"
            );
        }
    }

    #[test]
    fn stratified_sorted_file_fills_every_class() {
        let labels = sorted_labels();

        let (_, holdout) = stratified_split(&labels, 0.05, 1).unwrap();

        for class in 0..3 {
            assert!(
                count_class(&labels, &holdout, class) >= 1,
                "class {class} has no holdout row"
            );
        }
    }

    #[test]
    fn stratified_is_a_sorted_partition() {
        let labels = sorted_labels();

        let (train, holdout) = stratified_split(&labels, 0.3, 3).unwrap();

        assert_partition(&train, &holdout, labels.len());
    }

    #[test]
    fn stratified_same_seed_same_split() {
        let labels: Vec<usize> = (0..200).map(|i| (i * 7) % 5).collect();

        let first = stratified_split(&labels, 0.25, 42).unwrap();
        let second = stratified_split(&labels, 0.25, 42).unwrap();
        let other_seed = stratified_split(&labels, 0.25, 43).unwrap();

        assert_eq!(first, second);
        assert_ne!(
            first.1, other_seed.1,
            "a different seed gave the same holdout"
        );
    }

    #[test]
    fn stratified_keeps_single_rows_in_train() {
        let labels = [0, 0, 0, 0, 1];

        let (train, holdout) = stratified_split(&labels, 0.9, 5).unwrap();

        assert_eq!(holdout.len(), 3, "class 0 must keep one row for training");
        assert!(train.contains(&4), "the only row of class 1 left training");
    }

    #[test]
    fn zero_fraction_keeps_everything() {
        let (train, holdout) = stratified_split(&[0, 1, 0, 1], 0.0, 9).unwrap();

        assert_eq!(train, vec![0, 1, 2, 3]);
        assert!(holdout.is_empty());
    }

    #[test]
    fn random_split_sizes_and_seed() {
        let (train, holdout) = random_split(10, 0.3, 11).unwrap();

        assert_eq!(holdout.len(), 3);
        assert_partition(&train, &holdout, 10);
        assert_eq!(random_split(10, 0.3, 11).unwrap(), (train, holdout));

        assert_eq!(random_split(2, 0.01, 0).unwrap().1.len(), 1);
        assert_eq!(random_split(3, 0.99, 0).unwrap().1.len(), 2);
        assert_eq!(random_split(0, 0.5, 0).unwrap(), (vec![], vec![]));
    }

    /// Asserts that the three parts of `split` are sorted and together cover `0..n` once.
    fn assert_three_way_partition(split: &RowSplit, n: usize) {
        let mut holdout: Vec<usize> = split
            .validation
            .iter()
            .chain(&split.test)
            .copied()
            .collect();
        holdout.sort_unstable();
        assert!(
            split.validation.is_sorted(),
            "validation rows are not sorted"
        );
        assert!(split.test.is_sorted(), "test rows are not sorted");
        assert_partition(&split.train, &holdout, n);
    }

    #[test]
    fn split_rows_sizes_and_strata() {
        let labels = sorted_labels();

        let split = split_rows(Some(&labels), labels.len(), 0.2, 0.2, 4).unwrap();

        assert_three_way_partition(&split, labels.len());
        for (class, count) in [(0, 50), (1, 30), (2, 7)] {
            for (part, rows) in [("validation", &split.validation), ("test", &split.test)] {
                let expected = 0.2 * count as f64;
                let found = count_class(&labels, rows, class) as f64;
                assert!(
                    (found - expected).abs() <= 1.0,
                    "class {class}: {found} {part} rows, expected about {expected}"
                );
            }
        }
    }

    #[test]
    fn split_rows_test_ignores_validation_fraction() {
        let labels = sorted_labels();

        let small = split_rows(Some(&labels), labels.len(), 0.1, 0.2, 9).unwrap();
        let large = split_rows(Some(&labels), labels.len(), 0.3, 0.2, 9).unwrap();

        assert_eq!(small.test, large.test);
        assert!(large.validation.len() > small.validation.len());
    }

    #[test]
    fn split_rows_without_test_matches_two_way() {
        let labels = sorted_labels();

        let split = split_rows(Some(&labels), labels.len(), 0.25, 0.0, 6).unwrap();
        let (train, holdout) = stratified_split(&labels, 0.25, 6).unwrap();
        assert_eq!((split.train, split.validation), (train, holdout));
        assert!(split.test.is_empty());

        let split = split_rows(None, 40, 0.25, 0.0, 6).unwrap();
        assert_eq!(
            (split.train, split.validation),
            random_split(40, 0.25, 6).unwrap()
        );
    }

    #[test]
    fn split_rows_random_for_regression() {
        let split = split_rows(None, 100, 0.15, 0.15, 2).unwrap();

        assert_three_way_partition(&split, 100);
        assert_eq!(split.test.len(), 15);
        assert_eq!(split.validation.len(), 15);
    }

    #[test]
    fn split_rows_rejects_no_training_rows() {
        let err = split_rows(None, 10, 0.5, 0.5, 0).unwrap_err();

        assert!(err.to_string().contains("leave no training rows"), "{err}");
    }

    #[test]
    fn k_fold_partitions_evenly() {
        let folds = k_fold(23, 5, 1).unwrap();

        assert_eq!(folds.len(), 5);
        let sizes: Vec<usize> = folds.iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap(), 1);
        let mut all: Vec<usize> = folds.concat();
        all.sort_unstable();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
        assert!(folds.iter().all(|fold| fold.is_sorted()));
        assert_eq!(k_fold(23, 5, 1).unwrap(), folds);
    }

    #[test]
    fn stratified_k_fold_keeps_class_shares() {
        let labels = sorted_labels();

        let folds = stratified_k_fold(&labels, 5, 3).unwrap();

        let mut all: Vec<usize> = folds.concat();
        all.sort_unstable();
        assert_eq!(all, (0..labels.len()).collect::<Vec<_>>());
        for (class, count) in [(0, 50), (1, 30), (2, 7)] {
            let per_fold: Vec<usize> = folds
                .iter()
                .map(|fold| count_class(&labels, fold, class))
                .collect();
            assert_eq!(per_fold.iter().sum::<usize>(), count);
            let spread = per_fold.iter().max().unwrap() - per_fold.iter().min().unwrap();
            assert!(spread <= 1, "class {class} per fold: {per_fold:?}");
        }
        let sizes: Vec<usize> = folds.iter().map(Vec::len).collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
    }

    #[test]
    fn invalid_fold_counts_are_rejected() {
        for (n, k) in [(10, 1), (10, 0), (3, 4)] {
            let err = k_fold(n, k, 0).unwrap_err();
            assert!(
                matches!(err, Error::InvalidConfig(_)),
                "{n} rows, {k} folds: {err}"
            );
            assert!(stratified_k_fold(&vec![0; n], k, 0).is_err());
        }
    }

    #[test]
    fn invalid_fractions_are_rejected() {
        for fraction in [-0.1, 1.0, 1.5, f64::NAN, f64::INFINITY] {
            let err = stratified_split(&[0, 1], fraction, 0).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig(_)), "{fraction}: {err}");
            assert!(err.to_string().contains("below 1"), "{err}");

            assert!(
                random_split(4, fraction, 0).is_err(),
                "random_split accepted {fraction}"
            );
        }
    }
}
