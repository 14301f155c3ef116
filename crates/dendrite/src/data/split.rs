//! Seeded train/holdout splits of row indices.
//!
//! Both splits return `(train, holdout)` index lists, each sorted ascending, that are disjoint
//! and together cover every row once. The same inputs and seed always give the same split.

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
