//! Per-channel standardization of image features.

use serde::{Deserialize, Serialize};

use crate::tensor::Tensor;

/// The smallest standard deviation used for scaling. A channel whose standard deviation is
/// below it, such as a constant channel, gets a standard deviation of 1, so standardizing only
/// subtracts the mean and never divides by zero.
pub const MIN_CHANNEL_STD: f32 = 1e-6;

/// The mean and standard deviation of each channel of image features, for standardizing them
/// as `(x - mean[c]) / std[c]`.
///
/// Compute the statistics on the training rows only and store them with the model, so that
/// prediction applies the same scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelStats {
    /// The mean of each channel.
    pub mean: Vec<f32>,

    /// The population standard deviation of each channel, or 1 where it is below
    /// [`MIN_CHANNEL_STD`].
    pub std: Vec<f32>,
}

impl ChannelStats {
    /// Computes the mean and population standard deviation of each channel over all images and
    /// pixels of `features`, which has shape `[n, c, h, w]`. Sums are taken in `f64`.
    ///
    /// A channel whose standard deviation is below [`MIN_CHANNEL_STD`] gets a standard
    /// deviation of 1. A channel without values (`n`, `h` or `w` is 0) gets mean 0 and
    /// standard deviation 1. So the statistics are always finite for finite features.
    ///
    /// # Panics
    ///
    /// Panics if `features` is not of rank 4.
    pub fn compute(features: &Tensor) -> ChannelStats {
        let (n, channels, plane) = nchw_dims(features, "ChannelStats::compute");
        let data = features.data();
        let count = (n * plane) as f64;

        let mut mean = Vec::with_capacity(channels);
        let mut std = Vec::with_capacity(channels);
        for c in 0..channels {
            let values = || {
                (0..n).flat_map(move |i| {
                    let start = (i * channels + c) * plane;
                    data[start..start + plane].iter().map(|&v| f64::from(v))
                })
            };

            if count == 0.0 {
                mean.push(0.0);
                std.push(1.0);
                continue;
            }

            // Two passes, because subtracting the mean first keeps the variance accurate
            // when the mean is large compared with the spread.
            let channel_mean = values().sum::<f64>() / count;
            let variance = values().map(|v| (v - channel_mean).powi(2)).sum::<f64>() / count;
            let channel_std = variance.sqrt() as f32;

            mean.push(channel_mean as f32);
            std.push(if channel_std < MIN_CHANNEL_STD {
                1.0
            } else {
                channel_std
            });
        }

        ChannelStats { mean, std }
    }

    /// Returns the number of channels.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Standardizes `features` (shape `[n, c, h, w]`) in place as `(x - mean[c]) / std[c]`.
    ///
    /// # Panics
    ///
    /// Panics if `features` is not of rank 4 or its channel count differs from the number of
    /// channels in the statistics.
    pub fn apply(&self, features: &mut Tensor) {
        let (_, channels, plane) = nchw_dims(features, "ChannelStats::apply");
        assert_eq!(
            channels,
            self.channels(),
            "ChannelStats::apply: features have {channels} channels but the statistics have {}",
            self.channels()
        );

        for (index, channel) in features
            .data_mut()
            .chunks_exact_mut(plane.max(1))
            .enumerate()
        {
            let c = index % channels;
            let (mean, inv_std) = (self.mean[c], 1.0 / self.std[c]);
            for value in channel {
                *value = (*value - mean) * inv_std;
            }
        }
    }
}

/// Returns `(n, c, h * w)` of a rank-4 tensor.
fn nchw_dims(features: &Tensor, op: &str) -> (usize, usize, usize) {
    let &[n, c, h, w] = features.shape() else {
        panic!(
            "{op}: features must have shape [n, c, h, w], got {:?}",
            features.shape()
        );
    };
    (n, c, h * w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_known_tensor() {
        // Two images, two channels of 2 pixels. Channel 0 contains 1, 3, 5, 7 and channel 1
        // contains 10, 10, 20, 20.
        let features = Tensor::from_vec(
            &[2, 2, 1, 2],
            vec![1.0, 3.0, 10.0, 10.0, 5.0, 7.0, 20.0, 20.0],
        );

        let stats = ChannelStats::compute(&features);

        assert_eq!(stats.mean, vec![4.0, 15.0]);
        assert!(
            (stats.std[0] - 5.0f32.sqrt()).abs() < 1e-6,
            "{:?}",
            stats.std
        );
        assert_eq!(stats.std[1], 5.0);
    }

    #[test]
    fn apply_gives_zero_mean_unit_std() {
        let mut features = Tensor::from_vec(
            &[2, 2, 1, 2],
            vec![1.0, 3.0, 10.0, 10.0, 5.0, 7.0, 20.0, 20.0],
        );
        let stats = ChannelStats::compute(&features);

        stats.apply(&mut features);
        let after = ChannelStats::compute(&features);

        for c in 0..2 {
            assert!(after.mean[c].abs() < 1e-6, "mean {:?}", after.mean);
            assert!((after.std[c] - 1.0).abs() < 1e-5, "std {:?}", after.std);
        }
        assert_eq!(&features.data()[2..4], &[-1.0, -1.0]);
    }

    #[test]
    fn constant_channel_stays_finite() {
        let mut features = Tensor::from_vec(&[3, 2, 1, 1], vec![0.3, 0.0, 0.3, 1.0, 0.3, 0.5]);

        let stats = ChannelStats::compute(&features);
        stats.apply(&mut features);

        assert_eq!(stats.std[0], 1.0);
        assert!((stats.mean[0] - 0.3).abs() < 1e-7);
        assert!(features.is_finite(), "{features:?}");
        for i in 0..3 {
            assert!(features.data()[i * 2].abs() < 1e-7);
        }
    }

    #[test]
    fn empty_features_give_unit_std() {
        let stats = ChannelStats::compute(&Tensor::zeros(&[0, 3, 4, 4]));

        assert_eq!(stats.mean, vec![0.0; 3]);
        assert_eq!(stats.std, vec![1.0; 3]);
    }

    #[test]
    fn stats_round_trip_through_json() {
        let stats = ChannelStats {
            mean: vec![0.5, 0.25],
            std: vec![0.125, 1.0],
        };

        let json = serde_json::to_string(&stats).unwrap();
        let back: ChannelStats = serde_json::from_str(&json).unwrap();

        assert_eq!(back, stats);
    }

    #[test]
    #[should_panic(expected = "features have 1 channels but the statistics have 2")]
    fn apply_panics_on_channel_mismatch() {
        let stats = ChannelStats {
            mean: vec![0.0, 0.0],
            std: vec![1.0, 1.0],
        };
        stats.apply(&mut Tensor::zeros(&[1, 1, 2, 2]));
    }
}
