//! A time-series CSV file prepared as `SeriesConfig::prepare` does for `format = "series"`:
//! read, fitted, and cut into windows.
//!
//! With two or more header columns the first is the time column and the last the value
//! column. The first input byte picks the missing-value policy, the scaling, differencing,
//! the window sizes and an extra feature column.

#![no_main]

use dendrite::data::SeriesConfig;
use dendrite::data::series::{ForecastStrategy, MissingPolicy, Scaling};
use dendrite::data::tabular::Table;
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let path = common::write_scratch("series.csv", body);
    let header = match Table::read(&path, None) {
        Ok(table) => table.header().to_vec(),
        Err(_) => vec![String::from("value")],
    };
    let Some(value) = header.last().cloned() else {
        return;
    };
    let time_column = (header.len() >= 2).then(|| header[0].clone());
    // A middle column, when there is one, becomes a feature (direct forecasts only).
    let feature_columns = if header.len() >= 3 && mode & 64 != 0 {
        vec![header[1].clone()]
    } else {
        Vec::new()
    };
    let config = SeriesConfig {
        file: path,
        time_column,
        value_columns: vec![value],
        forecast: if feature_columns.is_empty() {
            ForecastStrategy::Recursive
        } else {
            ForecastStrategy::Direct
        },
        feature_columns,
        lookback: 1 + usize::from(mode & 3),
        horizon: 1 + usize::from((mode >> 2) & 1),
        stride: 1,
        difference: usize::from((mode >> 3) & 1),
        scaling: match (mode >> 4) % 3 {
            0 => Scaling::Standard,
            1 => Scaling::MinMax,
            _ => Scaling::None,
        },
        season_length: Some(2),
        test_length: 2,
        validation_length: usize::from(mode >> 7),
        missing: match (mode >> 5) & 3 {
            0 => MissingPolicy::Error,
            1 => MissingPolicy::Drop,
            2 => MissingPolicy::ForwardFill,
            _ => MissingPolicy::Interpolate,
        },
        max_memory_mib: 64,
    };
    let _ = config.prepare();
});
