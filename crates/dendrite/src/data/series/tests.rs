use std::io::Write;

use super::*;
use crate::data::Targets;

fn write_file(text: &str) -> tempfile_path::TempCsv {
    tempfile_path::TempCsv::new(text)
}

/// A CSV file in the system's temporary folder, removed when dropped.
mod tempfile_path {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct TempCsv(pub PathBuf);

    impl TempCsv {
        pub fn new(text: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "dendrite-series-{}-{}.csv",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let mut file = std::fs::File::create(&path).unwrap();
            super::Write::write_all(&mut file, text.as_bytes()).unwrap();
            TempCsv(path)
        }
    }

    impl Drop for TempCsv {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn config(file: &Path) -> SeriesConfig {
    SeriesConfig {
        file: file.to_path_buf(),
        time_column: Some("t".into()),
        value_columns: vec!["y".into()],
        feature_columns: Vec::new(),
        lookback: 3,
        horizon: 1,
        stride: 1,
        difference: 0,
        scaling: Scaling::None,
        season_length: None,
        test_length: 2,
        validation_length: 2,
        forecast: ForecastStrategy::Recursive,
        missing: MissingPolicy::Error,
        max_memory_mib: 1024,
    }
}

fn ramp(rows: usize) -> String {
    let mut text = String::from("t,y\n");
    for i in 0..rows {
        text.push_str(&format!("{},{}\n", 2000 + i, i * 10));
    }
    text
}

#[test]
fn windows_do_not_cross_parts() {
    let file = write_file(&ramp(12));
    let prepared = config(&file.0).prepare().unwrap();
    // Rows 0..8 train, 8..10 validation, 10..12 test; lookback 3, horizon 1.
    let starts = |d: &Dataset| d.windows().unwrap().starts().to_vec();
    assert_eq!(starts(&prepared.train), vec![0, 1, 2, 3, 4]);
    assert_eq!(starts(prepared.validation.as_ref().unwrap()), vec![5, 6]);
    assert_eq!(starts(&prepared.test), vec![7, 8]);
    for s in starts(&prepared.train) {
        assert!(s + 3 < 8, "training window at {s} reaches past row 8");
    }

    let mut window = vec![0.0; 3];
    prepared.test.gather_into_slice(&[1], &mut window);
    assert_eq!(window, vec![80.0, 90.0, 100.0]);
    assert_eq!(
        prepared.test.targets,
        Targets::Values(Tensor::from_vec(&[2, 1], vec![100.0, 110.0]))
    );
}

#[test]
fn scaling_uses_training_part_only() {
    let file = write_file(&ramp(12));
    let mut cfg = config(&file.0);
    cfg.scaling = Scaling::MinMax;
    let prepared = cfg.prepare().unwrap();
    // Training rows 0..8 hold 0..70.
    assert_eq!(
        prepared.preprocessor.value_scales[0],
        ColumnScale {
            center: 0.0,
            scale: 70.0
        }
    );
}

#[test]
fn stride_counts_back_from_the_end() {
    let file = write_file(&ramp(20));
    let mut cfg = config(&file.0);
    cfg.stride = 3;
    let prepared = cfg.prepare().unwrap();
    // Training part rows 0..16: first targets 15, 12, 9, 6, 3.
    assert_eq!(
        prepared.train.windows().unwrap().starts(),
        &[0, 3, 6, 9, 12]
    );
}

#[test]
fn differencing_round_trips() {
    let file = write_file(&ramp(12));
    let mut cfg = config(&file.0);
    cfg.difference = 1;
    cfg.scaling = Scaling::Standard;
    let prepared = cfg.prepare().unwrap();
    let p = &prepared.preprocessor;
    // The differences are all 10, so the scale falls back to 1 around the mean 10.
    let targets = match &prepared.test.targets {
        Targets::Values(t) => t.data().to_vec(),
        Targets::Classes { .. } => unreachable!(),
    };
    let start = prepared.test.windows().unwrap().starts()[0];
    let values = p.invert(&prepared.series.values, start, &targets[..1]);
    assert_eq!(values, vec![100.0]);
}

#[test]
fn window_longer_than_series_is_rejected() {
    let file = write_file(&ramp(12));
    let mut cfg = config(&file.0);
    cfg.lookback = 20;
    let message = cfg.prepare().unwrap_err().to_string();
    assert!(message.contains("no training window fits"), "{message}");
    assert!(
        message.contains("lookback 20 + horizon 1 = 21 steps"),
        "{message}"
    );
    assert!(message.contains("has 8 steps (rows 1 to 8)"), "{message}");
}

#[test]
fn bad_rows_are_named() {
    let cases = [
        (
            "t,y\n2000,1\n2001,x\n2002,3\n",
            "data row 2 (line 3): value \"x\" in column \"y\" is not a number",
        ),
        (
            "t,y\n2000,1\n2002,2\n2001,3\n",
            "data row 3 (line 4): timestamp \"2001\" is earlier than \"2002\"",
        ),
        (
            "t,y\n2000,1\n2001,2\n2001,3\n",
            "data row 3 (line 4): duplicate timestamp \"2001\"",
        ),
        (
            "t,y\n2000,1\n2001-05,2\n",
            "data row 2 (line 3): time \"2001-05\" in column \"t\" does not have the form",
        ),
        (
            "t,z\n2000,1\n",
            "column \"y\" is missing; the file has columns t, z",
        ),
    ];
    for (text, expected) in cases {
        let file = write_file(text);
        let mut p = SeriesPreprocessor::unfitted(&config(&file.0));
        let message = p.read(&file.0).unwrap_err().to_string();
        assert!(message.contains(expected), "{message}");
        assert!(message.contains(&file.0.display().to_string()), "{message}");
    }
}

#[test]
fn fill_policies_count_values() {
    let mut forward = vec![f64::NAN, 1.0, f64::NAN, f64::NAN, 4.0, f64::NAN];
    assert_eq!(fill_missing(&mut forward, MissingPolicy::ForwardFill), 3);
    assert!(forward[0].is_nan());
    assert_eq!(&forward[1..], &[1.0, 1.0, 1.0, 4.0, 4.0]);

    let mut linear = vec![f64::NAN, 1.0, f64::NAN, f64::NAN, 4.0, f64::NAN];
    assert_eq!(fill_missing(&mut linear, MissingPolicy::Interpolate), 2);
    assert_eq!(&linear[1..5], &[1.0, 2.0, 3.0, 4.0]);
    assert!(linear[0].is_nan());
    assert!(linear[5].is_nan());
}

#[test]
fn memory_limit_stops_before_allocating() {
    let file = write_file(&ramp(12));
    let mut cfg = config(&file.0);
    cfg.max_memory_mib = 1;
    let mut p = SeriesPreprocessor::unfitted(&cfg);
    let series = p.read(&file.0).unwrap();
    p.fit(&series).unwrap();
    let huge = Series {
        times: vec![0; 300_000],
        values: vec![0.0; 300_000],
        features: Vec::new(),
        notes: Vec::new(),
        filled: Vec::new(),
    };
    let message = p.input_matrix(&huge).unwrap_err().to_string();
    assert!(
        message.contains("the series matrix would take 1.1 MiB, over the limit of 1 MiB"),
        "{message}"
    );
}
