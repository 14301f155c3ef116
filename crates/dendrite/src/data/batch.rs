//! Mini-batch order: which rows go into each batch of an epoch.
//!
//! [`Batches`] keeps one index buffer and reuses it every epoch, so planning an epoch does not
//! allocate. Pair each index slice with [`Dataset::gather_into`](super::Dataset::gather_into)
//! to fill a reusable feature buffer.

use std::slice::Chunks;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Returns the row order of one epoch over `n` rows: `0..n`, shuffled with `rng` if `shuffle`
/// is true. Without shuffling, `rng` is not used.
pub fn epoch_order(n: usize, shuffle: bool, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        rng.shuffle(&mut order);
    }
    order
}

/// The batch plan for a dataset of a fixed number of rows.
///
/// Each epoch visits every row exactly once. All batches have `batch_size` rows except the
/// last, which has the remaining `n % batch_size` rows when `n` is not a multiple.
#[derive(Debug, Clone)]
pub struct Batches {
    order: Vec<usize>,
    batch_size: usize,
    shuffle: bool,
}

impl Batches {
    /// Creates a batch plan for `num_rows` rows.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] if `batch_size` is 0.
    pub fn new(num_rows: usize, batch_size: usize, shuffle: bool) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::InvalidConfig(
                "batch size must be at least 1, got 0".to_string(),
            ));
        }

        Ok(Batches {
            order: (0..num_rows).collect(),
            batch_size,
            shuffle,
        })
    }

    /// Starts an epoch and returns its batches as slices of row indices.
    ///
    /// With shuffling, the order is the same as [`epoch_order`] returns for the same `rng`
    /// state, so one seed gives the same order on every run. Without shuffling, the rows come
    /// in order `0..n` and `rng` is not used.
    pub fn epoch(&mut self, rng: &mut Rng) -> BatchIter<'_> {
        if self.shuffle {
            for (position, row) in self.order.iter_mut().enumerate() {
                *row = position;
            }
            rng.shuffle(&mut self.order);
        }

        BatchIter {
            chunks: self.order.chunks(self.batch_size),
        }
    }

    /// Returns the row order of the current epoch.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Replaces the row order of the current epoch, as a resumed run does with the order its
    /// checkpoint stored.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidConfig`] if `order` is not a permutation of `0..num_rows`.
    pub fn set_order(&mut self, order: Vec<usize>) -> Result<()> {
        let mut seen = vec![false; self.order.len()];
        let valid = order.len() == self.order.len()
            && order
                .iter()
                .all(|&row| row < seen.len() && !std::mem::replace(&mut seen[row], true));
        if !valid {
            return Err(Error::InvalidConfig(format!(
                "the stored row order is not a permutation of the {} training rows",
                self.order.len()
            )));
        }
        self.order = order;
        Ok(())
    }

    /// Returns batch `index` of the current epoch as row indices.
    ///
    /// # Panics
    ///
    /// Panics if `index >= self.num_batches()`.
    pub fn batch(&self, index: usize) -> &[usize] {
        let start = index * self.batch_size;
        &self.order[start..(start + self.batch_size).min(self.order.len())]
    }

    /// Returns the number of rows per full batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Returns the number of rows in one epoch.
    pub fn num_rows(&self) -> usize {
        self.order.len()
    }

    /// Returns the number of batches per epoch, counting the last partial batch.
    pub fn num_batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }
}

/// The batches of one epoch, each a slice of row indices.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    chunks: Chunks<'a, usize>,
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = &'a [usize];

    fn next(&mut self) -> Option<Self::Item> {
        self.chunks.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for BatchIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect_epoch(batches: &mut Batches, rng: &mut Rng) -> Vec<Vec<usize>> {
        batches.epoch(rng).map(<[usize]>::to_vec).collect()
    }

    #[test]
    fn last_batch_is_partial() {
        let mut batches = Batches::new(10, 4, false).unwrap();

        let epoch = collect_epoch(&mut batches, &mut Rng::new(0));

        let sizes: Vec<usize> = epoch.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        assert_eq!(batches.num_batches(), 3);
        assert_eq!(epoch.concat(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn shuffled_epochs_cover_each_row_once() {
        let mut batches = Batches::new(10, 4, true).unwrap();
        let mut rng = Rng::new(3);

        let first = collect_epoch(&mut batches, &mut rng).concat();
        let second = collect_epoch(&mut batches, &mut rng).concat();

        for order in [&first, &second] {
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        }
        assert_ne!(first, second, "two epochs had the same order");
        assert_ne!(
            first,
            (0..10).collect::<Vec<_>>(),
            "shuffled order is the identity"
        );
    }

    #[test]
    fn same_seed_same_order() {
        let mut batches = Batches::new(50, 8, true).unwrap();

        let first = collect_epoch(&mut batches, &mut Rng::new(21));
        let second = collect_epoch(&mut batches, &mut Rng::new(21));

        assert_eq!(first, second);
        assert_eq!(first.concat(), epoch_order(50, true, &mut Rng::new(21)));
    }

    #[test]
    fn epoch_order_without_shuffle() {
        assert_eq!(epoch_order(5, false, &mut Rng::new(0)), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn empty_and_invalid_plans() {
        let mut empty = Batches::new(0, 4, true).unwrap();
        assert_eq!(empty.epoch(&mut Rng::new(0)).len(), 0);
        assert_eq!(empty.num_batches(), 0);

        let err = Batches::new(10, 0, false).unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    }
}
