//! A sensor series with 5 empty cells and one `NaN` (`fixtures/series/sensor-missing.csv`,
//! 300 rows of invented values): refused by default with the column and rows named, filled
//! or dropped by an explicit policy, and never inside a window.

use std::path::PathBuf;

use dendrite::data::SeriesConfig;
use dendrite::data::series::{ForecastStrategy, MissingPolicy, Scaling};

fn sensor_config(missing: MissingPolicy) -> SeriesConfig {
    SeriesConfig {
        file: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/series/sensor-missing.csv"),
        time_column: Some("timestamp".into()),
        value_columns: vec!["value".into()],
        feature_columns: Vec::new(),
        lookback: 10,
        horizon: 2,
        stride: 1,
        difference: 0,
        scaling: Scaling::Standard,
        season_length: None,
        test_length: 40,
        validation_length: 20,
        forecast: ForecastStrategy::Recursive,
        missing,
        max_memory_mib: 1024,
    }
}

#[test]
fn missing_values_are_refused_by_default() {
    let message = sensor_config(MissingPolicy::Error)
        .prepare()
        .unwrap_err()
        .to_string();
    assert!(message.contains("sensor-missing.csv"), "{message}");
    assert!(
        message.contains(
            "column \"value\" has 6 missing values, at data rows 57, 58, 120, 201, 202, 250 \
             (file lines 58, 59, 121, 202, 203, 251)"
        ),
        "{message}"
    );
    assert!(message.contains("data.missing"), "{message}");
}

#[test]
fn policies_report_filled_counts() {
    let cases = [
        (MissingPolicy::Interpolate, 6),
        (MissingPolicy::ForwardFill, 6),
        (MissingPolicy::Drop, 0),
    ];
    for (policy, filled) in cases {
        let prepared = sensor_config(policy).prepare().unwrap();
        assert_eq!(
            prepared.series.filled,
            vec![("value".to_string(), filled)],
            "{policy:?}"
        );
        let note = prepared.notes.join("\n");
        assert!(
            note.contains("6 missing values at data rows 57, 58, 120, 201, 202, 250"),
            "{note}"
        );
        assert!(
            note.contains(&format!("{filled} filled, {} left as gaps", 6 - filled)),
            "{note}"
        );
    }
}

#[test]
fn interpolation_is_linear() {
    let prepared = sensor_config(MissingPolicy::Interpolate).prepare().unwrap();
    let values = &prepared.series.values;
    // Data rows 57 and 58 (indices 56 and 57) lie between rows 56 and 59.
    let (before, after) = (values[55], values[58]);
    assert!((values[56] - (before + (after - before) / 3.0)).abs() < 1e-9);
    assert!((values[57] - (before + 2.0 * (after - before) / 3.0)).abs() < 1e-9);
}

#[test]
fn no_window_contains_a_gap() {
    let prepared = sensor_config(MissingPolicy::Drop).prepare().unwrap();
    let gaps = [56usize, 57, 119, 200, 201, 249];
    let mut windows = 0;
    for dataset in [
        Some(&prepared.train),
        prepared.validation.as_ref(),
        Some(&prepared.test),
    ]
    .into_iter()
    .flatten()
    {
        let starts = dataset.windows().unwrap().starts();
        for &start in starts {
            // Inputs and targets: lookback 10 + horizon 2 rows.
            let span = start..start + 12;
            assert!(
                gaps.iter().all(|g| !span.contains(g)),
                "window {span:?} contains a gap"
            );
        }
        let mut inputs = vec![0.0; dataset.len() * 10];
        let all: Vec<usize> = (0..dataset.len()).collect();
        dataset.gather_into_slice(&all, &mut inputs);
        assert!(inputs.iter().all(|v| v.is_finite()));
        windows += dataset.len();
    }
    // 300 rows give 289 windows without gaps; each gap row rules out the 12 windows that
    // cover it, and neighbouring gaps share some.
    assert!(windows < 289, "{windows} windows");
    let interpolated = sensor_config(MissingPolicy::Interpolate).prepare().unwrap();
    let total = interpolated.train.len()
        + interpolated.validation.as_ref().map_or(0, |v| v.len())
        + interpolated.test.len();
    assert!(
        total > windows,
        "interpolation keeps more windows ({total}) than drop ({windows})"
    );
}
