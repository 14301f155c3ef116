//! A long series (`fixtures/series/long-series.csv`, 100,000 invented values) with windows of
//! 2,048 steps at stride 1: 97,953 windows, which stored one by one would take about 0.8 GB
//! in f32. Windows are gathered by index from one shared matrix, so the process stays far
//! below that. This test is alone in its binary so that the peak resident memory it reads
//! from `/proc/self/status` is its own.

use std::path::PathBuf;

use dendrite::data::SeriesConfig;
use dendrite::data::series::{ForecastStrategy, MissingPolicy, Scaling};

/// The peak resident set size of this process in KiB (`VmHWM`), where Linux reports it.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn long_series_windows_are_not_materialised() {
    let config = SeriesConfig {
        file: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/series/long-series.csv"),
        time_column: None,
        value_columns: vec!["value".into()],
        feature_columns: Vec::new(),
        lookback: 2047,
        horizon: 1,
        stride: 1,
        difference: 0,
        scaling: Scaling::Standard,
        season_length: None,
        test_length: 1,
        validation_length: 0,
        forecast: ForecastStrategy::Recursive,
        missing: MissingPolicy::Error,
        max_memory_mib: 256,
    };
    let prepared = config.prepare().unwrap();
    let windows = prepared.train.len() + prepared.test.len();
    assert_eq!(windows, 97_953);

    let train = prepared.train.windows().unwrap();
    assert!(
        train.materialized_bytes() > 780_000_000,
        "{}",
        train.materialized_bytes()
    );
    assert_eq!(train.matrix_bytes(), 400_000);

    // One pass over every window in batches of 64, as an epoch gathers them.
    let all: Vec<usize> = (0..prepared.train.len()).collect();
    let mut batch = Vec::new();
    let mut checksum = 0.0f64;
    for chunk in all.chunks(64) {
        prepared.train.gather_into(chunk, &mut batch);
        checksum += batch[0] as f64;
    }
    assert!(checksum.is_finite());

    if let Some(peak) = peak_rss_kib() {
        assert!(peak < 300 * 1024, "peak resident memory {peak} KiB");
    }
}

#[test]
fn windows_over_the_memory_limit_are_refused() {
    let config = SeriesConfig {
        file: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/series/long-series.csv"),
        time_column: None,
        value_columns: vec!["value".into()],
        feature_columns: Vec::new(),
        lookback: 16,
        horizon: 1,
        stride: 1,
        difference: 0,
        scaling: Scaling::Standard,
        season_length: None,
        test_length: 100,
        validation_length: 0,
        forecast: ForecastStrategy::Recursive,
        missing: MissingPolicy::Error,
        max_memory_mib: 1,
    };
    let message = config.prepare().unwrap_err().to_string();
    assert!(message.contains("over the limit of 1 MiB"), "{message}");
    assert!(message.contains("data.max_memory_mib"), "{message}");
}
