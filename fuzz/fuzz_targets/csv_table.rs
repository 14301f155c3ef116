//! A CSV training file read with inferred column types, split and preprocessed as
//! `CsvConfig::prepare` does for `format = "csv"`.
//!
//! The target is the last header column. The first input byte picks the task, the
//! missing-value policy, missing indicators and the held-out fractions.

#![no_main]

use dendrite::data::CsvConfig;
use dendrite::data::tabular::{MissingPolicy, Table, TabularTask, TargetColumns};
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let path = common::write_scratch("input.csv", body);
    // The header names the target. Without a header, `prepare` fails as well.
    let target = match Table::read(&path, None) {
        Ok(table) => match table.header().last() {
            Some(name) => name.clone(),
            None => return,
        },
        Err(_) => String::from("y"),
    };
    let task = if mode & 1 == 0 {
        TabularTask::Classification
    } else {
        TabularTask::Regression
    };
    let mut config = CsvConfig::new(&path, TargetColumns::One(target), task);
    config.missing = match (mode >> 1) % 3 {
        0 => MissingPolicy::Error,
        1 => MissingPolicy::Mean,
        _ => MissingPolicy::MostFrequent,
    };
    config.missing_indicator = mode & 8 != 0;
    if mode & 16 != 0 {
        config.validation_split = 0.25;
        config.test_split = 0.25;
    }
    config.standardize = mode & 32 == 0;
    let _ = config.prepare(u64::from(mode));
});
