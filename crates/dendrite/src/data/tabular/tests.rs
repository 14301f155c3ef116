use super::*;
use crate::data::Targets;
use crate::error::Error;
use std::path::Path;

/// A folder under the system temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("dendrite-tabular-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loan applications: an ID, a numeric age, a categorical city, a numeric-looking code that
/// is overridden to categorical, an ignored note and a text label.
const LOANS: &str = "\
client,age,city,code,note,decision
c1,30,Paris,1,first,yes
c2,40,Lyon,2,,no
c3,50,Paris,1,x,yes
c4,60,Nice,3,,no
";

fn loans_config() -> CsvConfig {
    let mut config = CsvConfig::new(
        "loans.csv",
        TargetColumns::One("decision".into()),
        TabularTask::Classification,
    );
    config.id_column = Some("client".into());
    config.ignore = vec!["note".into()];
    config.column_types = BTreeMap::from([("code".into(), ColumnKind::Categorical)]);
    config
}

fn table(text: &str) -> Table {
    Table::parse("loans.csv", text.as_bytes(), None).unwrap()
}

fn source(text: &str, config: &CsvConfig) -> TabularSource {
    TabularSource::from_table(table(text), config).unwrap_or_else(|e| panic!("{e}"))
}

fn source_error(text: &str, config: &CsvConfig) -> String {
    TabularSource::from_table(table(text), config)
        .expect_err("the source must be rejected")
        .to_string()
}

fn all_rows(source: &TabularSource) -> Vec<usize> {
    (0..source.len()).collect()
}

fn fit_all(text: &str, config: &CsvConfig) -> (TabularSource, TabularPreprocessor) {
    let source = source(text, config);
    let preprocessor = source
        .fit(&all_rows(&source), config)
        .unwrap_or_else(|e| panic!("{e}"));
    (source, preprocessor)
}

fn transform(preprocessor: &TabularPreprocessor, text: &str) -> Result<Vec<f32>> {
    let (features, _) = preprocessor.transform(&table(text))?;
    Ok(features.into_vec())
}

fn assert_close(found: &[f32], expected: &[f32]) {
    assert_eq!(found.len(), expected.len(), "{found:?} vs {expected:?}");
    for (a, b) in found.iter().zip(expected) {
        assert!(
            (a - b).abs() < 1e-6,
            "found {found:?}, expected {expected:?}"
        );
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| name.to_string()).collect()
}

#[test]
fn roles_and_inferred_kinds() {
    let source = source(LOANS, &loans_config());

    assert_eq!(
        source.feature_columns(),
        [
            ("age", ColumnKind::Numeric),
            ("city", ColumnKind::Categorical),
            ("code", ColumnKind::Categorical),
        ]
    );
    assert_eq!(source.class_names(), Some(&names(&["no", "yes"])[..]));
    assert_eq!(source.labels(), Some(&[1, 0, 1, 0][..]));
}

#[test]
fn standardize_and_one_hot_by_hand() {
    let config = loans_config();
    let (_, preprocessor) = fit_all(LOANS, &config);

    // Ages 30, 40, 50, 60: mean 45, population variance (225 + 25 + 25 + 225) / 4 = 125.
    let scale = 125f64.sqrt();
    assert_eq!(
        preprocessor.columns[0].encoding,
        ColumnEncoding::Numeric {
            center: 45.0,
            scale,
            fill: None
        }
    );
    assert_eq!(
        preprocessor.feature_names(),
        [
            "age",
            "city=Lyon",
            "city=Nice",
            "city=Paris",
            "code=1",
            "code=2",
            "code=3"
        ]
    );
    assert_eq!(preprocessor.width(), 7);

    let features = transform(&preprocessor, LOANS).unwrap();
    let z = |age: f64| ((age - 45.0) / scale) as f32;
    #[rustfmt::skip]
    let expected = [
        z(30.0), 0.0, 0.0, 1.0, 1.0, 0.0, 0.0,
        z(40.0), 1.0, 0.0, 0.0, 0.0, 1.0, 0.0,
        z(50.0), 0.0, 0.0, 1.0, 1.0, 0.0, 0.0,
        z(60.0), 0.0, 1.0, 0.0, 0.0, 0.0, 1.0,
    ];
    assert_close(&features, &expected);
}

#[test]
fn without_standardization_values_pass_through() {
    let mut config = loans_config();
    config.standardize = false;
    let (_, preprocessor) = fit_all(LOANS, &config);

    let features = transform(&preprocessor, LOANS).unwrap();

    assert_eq!(features[0], 30.0);
    assert_eq!(features[7], 40.0);
}

#[test]
fn constant_column_stays_finite() {
    let config = CsvConfig::new(
        "c.csv",
        TargetColumns::One("y".into()),
        TabularTask::Regression,
    );
    let text = "a,b,y\n0.1,7,1\n0.1,8,2\n0.1,9,3\n";
    let (_, preprocessor) = fit_all(text, &config);

    let features = transform(&preprocessor, text).unwrap();

    assert!(features.iter().all(|v| v.is_finite()), "{features:?}");
    for row in 0..3 {
        assert!(features[row * 2].abs() < 1e-6, "{features:?}");
    }
    let ColumnEncoding::Numeric { scale, .. } = preprocessor.columns[0].encoding else {
        panic!("column a is numeric");
    };
    assert_eq!(scale, 1.0);
}

#[test]
fn columns_map_by_name_in_any_order() {
    let config = loans_config();
    let (_, preprocessor) = fit_all(LOANS, &config);
    let reordered = "\
extra,code,decision,city,age
a,1,yes,Paris,30
b,2,no,Lyon,40
c,1,yes,Paris,50
d,3,no,Nice,60
";

    assert_eq!(
        transform(&preprocessor, reordered).unwrap(),
        transform(&preprocessor, LOANS).unwrap()
    );
}

#[test]
fn preprocessor_round_trips_through_json() {
    let mut config = loans_config();
    config.missing = MissingPolicy::Mean;
    config.missing_indicator = true;
    let text =
        "client,age,city,code,note,decision\nc1,30,Paris,1,,yes\nc2,NA,Lyon,2,,no\nc3,50,,1,,yes\n";
    let (_, preprocessor) = fit_all(text, &config);

    let json = serde_json::to_string(&preprocessor).unwrap();
    let back: TabularPreprocessor = serde_json::from_str(&json).unwrap();

    assert_eq!(back, preprocessor);
    assert_eq!(
        transform(&back, text).unwrap(),
        transform(&preprocessor, text).unwrap()
    );
}

#[test]
fn missing_values_are_rejected_by_default() {
    let text = "client,age,city,code,note,decision\nc1,30,Paris,1,,yes\nc2,?,Lyon,2,,no\n";
    let source = source(text, &loans_config());

    let message = source
        .fit(&all_rows(&source), &loans_config())
        .unwrap_err()
        .to_string();

    assert!(message.contains("loans.csv"), "{message}");
    assert!(message.contains("line 3, column \"age\""), "{message}");
    assert!(message.contains("missing value (\"?\")"), "{message}");
    assert!(message.contains("data.missing = \"mean\""), "{message}");
}

#[test]
fn mean_imputation_with_indicator() {
    let mut config = loans_config();
    config.missing = MissingPolicy::Mean;
    config.missing_indicator = true;
    config.standardize = false;
    // Age is missing in row 2, and the mean of 30, 50 and 70 is 50. City is missing in
    // row 3, and Paris is the most frequent city.
    let text = "\
client,age,city,code,note,decision
c1,30,Paris,1,,yes
c2,NA,Lyon,2,,no
c3,50,,1,,yes
c4,70,Paris,3,,no
";
    let (_, preprocessor) = fit_all(text, &config);

    assert_eq!(
        preprocessor.feature_names(),
        [
            "age",
            "age_missing",
            "city=Lyon",
            "city=Paris",
            "city_missing",
            "code=1",
            "code=2",
            "code=3"
        ]
    );
    let (features, report) = preprocessor.transform(&table(text)).unwrap();
    let features = features.into_vec();
    assert_close(&features[8..13], &[50.0, 1.0, 1.0, 0.0, 0.0]);
    assert_close(&features[16..21], &[50.0, 0.0, 0.0, 1.0, 1.0]);
    assert_eq!(
        report.imputed,
        BTreeMap::from([("age".to_string(), 1), ("city".to_string(), 1)])
    );
    let note = report.imputed_note("train").unwrap();
    assert!(
        note.contains("imputed 2 missing values (age: 1, city: 1)"),
        "{note}"
    );
}

#[test]
fn most_frequent_imputation_of_numbers() {
    let mut config = CsvConfig::new(
        "m.csv",
        TargetColumns::One("y".into()),
        TabularTask::Regression,
    );
    config.missing = MissingPolicy::MostFrequent;
    config.standardize = false;
    // 2 and 5 both occur twice; the smaller wins the tie.
    let text = "x,y\n5,1\n2,1\n5,1\n2,1\n9,1\n,1\n";
    let (_, preprocessor) = fit_all(text, &config);

    let features = transform(&preprocessor, text).unwrap();

    assert_eq!(features[5], 2.0);
    assert!(!preprocessor.columns[0].missing_indicator);
}

#[test]
fn unknown_category_is_rejected_by_default() {
    let config = loans_config();
    let (_, preprocessor) = fit_all(LOANS, &config);
    let text = "client,age,city,code,decision\nc9,33,Paris,1,yes\nc10,44,Berlin,2,no\n";

    let message = transform(&preprocessor, text).unwrap_err().to_string();

    assert!(message.contains("line 3, column \"city\""), "{message}");
    assert!(message.contains("category \"Berlin\""), "{message}");
    assert!(
        message.contains("unknown_category = \"ignore\""),
        "{message}"
    );
}

#[test]
fn ignored_unknown_category_is_all_zeros() {
    let mut config = loans_config();
    config.unknown_category = UnknownCategoryPolicy::Ignore;
    let (_, preprocessor) = fit_all(LOANS, &config);
    let text =
        "client,age,city,code,decision\nc9,45,Berlin,1,yes\nc10,45,Rome,9,no\nc11,45,Nice,2,no\n";

    let (features, report) = preprocessor.transform(&table(text)).unwrap();

    assert_close(&features.data()[1..7], &[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    assert_close(&features.data()[8..14], &[0.0; 6]);
    assert_eq!(report.rows_with_unknown, 2);
    assert_eq!(
        report.unknown,
        BTreeMap::from([("city".to_string(), 2), ("code".to_string(), 1)])
    );
    let warning = report.unknown_warning("new.csv").unwrap();
    assert!(warning.starts_with("new.csv: 2 of 3 rows"), "{warning}");
    assert!(warning.contains("city: 2, code: 1"), "{warning}");
}

#[test]
fn missing_feature_columns_are_all_named() {
    let (_, preprocessor) = fit_all(LOANS, &loans_config());

    let message = transform(&preprocessor, "client,city\nc1,Paris\n")
        .unwrap_err()
        .to_string();

    assert!(
        message.contains("missing feature columns \"age\", \"code\""),
        "{message}"
    );
    assert!(
        message.contains("the file has the columns \"client\", \"city\""),
        "{message}"
    );
}

#[test]
fn non_numeric_cell_in_numeric_column() {
    let (_, preprocessor) = fit_all(LOANS, &loans_config());
    let text = "client,age,city,code,decision\nc1,thirty,Paris,1,yes\n";

    let message = transform(&preprocessor, text).unwrap_err().to_string();

    assert!(message.contains("line 2, column \"age\""), "{message}");
    assert!(
        message.contains("value \"thirty\" is not a finite number"),
        "{message}"
    );
    assert!(
        message.contains("data.column_types.age = \"categorical\""),
        "{message}"
    );
}

#[test]
fn overridden_numeric_column_rejects_text() {
    let mut config = loans_config();
    config
        .column_types
        .insert("city".into(), ColumnKind::Numeric);
    let source = source(LOANS, &config);

    let message = source
        .fit(&all_rows(&source), &config)
        .unwrap_err()
        .to_string();

    assert!(message.contains("line 2, column \"city\""), "{message}");
    assert!(
        message.contains("\"Paris\" is not a finite number"),
        "{message}"
    );
}

#[test]
fn id_column_is_read_for_output() {
    let (_, preprocessor) = fit_all(LOANS, &loans_config());

    let ids = preprocessor.read_ids(&table(LOANS)).unwrap();

    assert_eq!(ids, Some(names(&["c1", "c2", "c3", "c4"])));
    let message = preprocessor
        .read_ids(&table("age,city,code\n1,Paris,1\n"))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("missing ID column \"client\""),
        "{message}"
    );
}

#[test]
fn classes_sort_as_integers_or_text() {
    let config = CsvConfig::new(
        "c.csv",
        TargetColumns::One("label".into()),
        TabularTask::Classification,
    );

    let numeric = source("x,label\n1,10\n2,2\n3,-1\n4,2.0\n", &config);
    assert_eq!(numeric.class_names(), Some(&names(&["-1", "2", "10"])[..]));
    assert_eq!(numeric.labels(), Some(&[2, 1, 0, 1][..]));

    let text = source("x,label\n1,b\n2,B\n3,a\n4,10\n", &config);
    assert_eq!(text.class_names(), Some(&names(&["10", "B", "a", "b"])[..]));
    assert_eq!(text.labels(), Some(&[3, 1, 2, 0][..]));

    assert_eq!(class_index("2.0", &names(&["-1", "2"])), Some(1));
    assert_eq!(class_index("3", &names(&["-1", "2"])), None);
}

#[test]
fn target_problems_name_the_line() {
    let config = CsvConfig::new(
        "c.csv",
        TargetColumns::One("label".into()),
        TabularTask::Classification,
    );
    let message = source_error("x,label\n1,a\n2,NA\n", &config);
    assert!(message.contains("line 3, column \"label\""), "{message}");
    assert!(message.contains("the target is missing"), "{message}");

    let config = CsvConfig::new(
        "c.csv",
        TargetColumns::One("y".into()),
        TabularTask::Regression,
    );
    let message = source_error("x,y\n1,2\n2,high\n", &config);
    assert!(message.contains("line 3, column \"y\""), "{message}");
    assert!(
        message.contains("\"high\" is not a finite number"),
        "{message}"
    );
}

#[test]
fn configured_columns_must_exist() {
    let config = CsvConfig::new(
        "c.csv",
        TargetColumns::One("label".into()),
        TabularTask::Classification,
    );
    let message = source_error("x1,x2,y\n0,0,0\n", &config);
    assert!(
        message.contains("column \"label\" of data.target is not in the header"),
        "{message}"
    );
    assert!(message.contains("\"x1\", \"x2\", \"y\""), "{message}");

    let mut config = loans_config();
    config.ignore = vec!["comment".into()];
    let message = source_error(LOANS, &config);
    assert!(message.contains("\"comment\" of data.ignore"), "{message}");
}

#[test]
fn no_feature_or_empty_column_is_rejected() {
    let config = CsvConfig::new(
        "c.csv",
        TargetColumns::One("y".into()),
        TabularTask::Regression,
    );
    let message = source_error("y\n1\n", &config);
    assert!(message.contains("no feature column is left"), "{message}");

    let message = source_error("x,z,y\n1,,2\n3,NA,4\n", &config);
    assert!(message.contains("column \"z\" has no values"), "{message}");
    assert!(message.contains("data.ignore"), "{message}");
}

#[test]
fn mostly_distinct_text_column_draws_warning() {
    let config = CsvConfig::new(
        "c.csv",
        TargetColumns::One("y".into()),
        TabularTask::Regression,
    );
    let mut text = String::from("amount,y\n");
    for i in 0..40 {
        text.push_str(&format!("\"{i},5\",{i}\n"));
    }

    let source = source(&text, &config);

    assert_eq!(
        source.feature_columns(),
        [("amount", ColumnKind::Categorical)]
    );
    assert_eq!(source.warnings().len(), 1);
    assert!(
        source.warnings()[0].contains("column \"amount\""),
        "{:?}",
        source.warnings()
    );
}

/// An edit of a config, for a table of invalid configs.
type ConfigChange = Box<dyn Fn(&mut CsvConfig)>;

#[test]
fn config_validation_names_the_setting() {
    let base = loans_config();
    let cases: Vec<(ConfigChange, &str)> = vec![
        (
            Box::new(|c| c.validation_split = 1.0),
            "data.validation_split = 1",
        ),
        (Box::new(|c| c.test_split = -0.1), "data.test_split = -0.1"),
        (
            Box::new(|c| {
                c.validation_split = 0.5;
                c.test_split = 0.5;
            }),
            "leave no training rows",
        ),
        (
            Box::new(|c| {
                c.test = Some("test.csv".into());
                c.test_split = 0.2;
            }),
            "data.test and data.test_split are both set",
        ),
        (
            Box::new(|c| c.target = TargetColumns::Many(vec![])),
            "data.target is empty",
        ),
        (
            Box::new(|c| c.target = TargetColumns::Many(names(&["a", "b"]))),
            "exactly one target column",
        ),
        (
            Box::new(|c| c.ignore.push("decision".into())),
            "\"decision\" is named in both data.target and data.ignore",
        ),
        (
            Box::new(|c| c.ignore.push("note".into())),
            "\"note\" is listed twice in data.ignore",
        ),
        (
            Box::new(|c| {
                c.column_types.insert("client".into(), ColumnKind::Numeric);
            }),
            "data.column_types names \"client\", which is in data.id_column",
        ),
        (Box::new(|c| c.delimiter = Some('"')), "data.delimiter"),
        (
            Box::new(|c| {
                c.task = TabularTask::Regression;
                c.class_weights = Some(ClassWeights::Balanced);
            }),
            "the task is regression",
        ),
    ];

    assert!(base.validate().is_ok());
    for (change, expected) in cases {
        let mut config = base.clone();
        change(&mut config);
        let err = config.validate().unwrap_err();
        assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        assert!(
            err.to_string().contains(expected),
            "{expected:?} missing from: {err}"
        );
    }
}

#[test]
fn config_parses_from_toml_with_defaults() {
    let config: CsvConfig = toml::from_str(
        r#"
train = "credit.csv"
target = "risk"
task = "classification"
delimiter = "\t"
column_types = { rate = "categorical" }
class_weights = "balanced"
"#,
    )
    .unwrap();

    assert_eq!(config.target_names(), ["risk"]);
    assert_eq!(config.delimiter_byte().unwrap(), Some(b'\t'));
    assert_eq!(config.missing_values, ["", "NA", "?"]);
    assert_eq!(config.missing, MissingPolicy::Error);
    assert_eq!(config.unknown_category, UnknownCategoryPolicy::Error);
    assert!(config.standardize);
    assert_eq!(config.class_weights, Some(ClassWeights::Balanced));

    let err = toml::from_str::<CsvConfig>(
        "train = \"a.csv\"\ntarget = \"y\"\ntask = \"regression\"\nstandardise = true\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown field `standardise`"), "{err}");
}

#[test]
fn prepare_with_test_file_and_class_weights() {
    let dir = TempDir::new("prepare");
    let mut config = loans_config();
    config.train = dir.write("train.csv", LOANS);
    config.test = Some(dir.write(
        "test.csv",
        "decision;age;code;city;client\nno;35;2;Lyon;t1\nyes;55;1;Paris;t2\n",
    ));
    config.class_weights = Some(ClassWeights::Balanced);

    let prepared = config.prepare(0).unwrap();

    assert_eq!(prepared.train.len(), 4);
    assert!(prepared.validation.is_none());
    let test = prepared.test.expect("the test file is read");
    assert_eq!(test.labels(), Some(&[0, 1][..]));
    assert_eq!(test.class_names(), Some(&names(&["no", "yes"])[..]));
    assert_eq!(test.features.shape(), &[2, 7]);
    assert_eq!(prepared.class_weights, Some(vec![1.0, 1.0]));
}

#[test]
fn prepare_rejects_unknown_class_in_test_file() {
    let dir = TempDir::new("unknown-class");
    let mut config = loans_config();
    config.train = dir.write("train.csv", LOANS);
    config.test = Some(dir.write(
        "test.csv",
        "client,age,city,code,decision\nt1,35,Lyon,2,maybe\n",
    ));

    let message = config.prepare(0).unwrap_err().to_string();

    assert!(message.contains("test.csv"), "{message}");
    assert!(message.contains("line 2, column \"decision\""), "{message}");
    assert!(
        message.contains("class \"maybe\" did not occur"),
        "{message}"
    );
}

#[test]
fn prepare_fits_on_training_rows_only() {
    let dir = TempDir::new("fit-train-only");
    let mut config = CsvConfig::new(
        dir.write(
            "d.csv",
            "x,y\n0,0\n0,0\n0,0\n0,0\n1000,1\n1000,1\n1000,1\n1000,1\n",
        ),
        TargetColumns::One("y".into()),
        TabularTask::Regression,
    );
    config.test_split = 0.25;

    let prepared = config.prepare(5).unwrap();

    // The mean of x over all rows is 500; over the training rows alone it differs unless
    // the test rows are balanced, and it must be the training rows' mean.
    let train_x: Vec<f64> = (0..prepared.train.len())
        .map(|row| {
            let Targets::Values(values) = &prepared.train.targets else {
                panic!("regression targets");
            };
            f64::from(values.data()[row]) * 1000.0
        })
        .collect();
    let mean = train_x.iter().sum::<f64>() / train_x.len() as f64;
    let ColumnEncoding::Numeric { center, .. } = prepared.preprocessor.columns[0].encoding else {
        panic!("x is numeric");
    };
    assert_eq!(prepared.train.len(), 6);
    assert_eq!(prepared.test.as_ref().map(|t| t.len()), Some(2));
    assert!(
        (center - mean).abs() < 1e-9,
        "center {center}, training mean {mean}"
    );
}

#[test]
fn tiny_example_files_read_unchanged() {
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/tiny");

    let mut linear = CsvConfig::new(
        tiny.join("linear7.csv"),
        TargetColumns::One("y".into()),
        TabularTask::Regression,
    );
    linear.standardize = false;
    let prepared = linear.prepare(0).unwrap();
    assert_eq!(
        prepared.train.features.data(),
        &[1., 2., 3., 4., 5., 6., 7.]
    );
    let Targets::Values(values) = &prepared.train.targets else {
        panic!("regression targets");
    };
    assert_eq!(values.data()[0], 2.82);
    assert_eq!(values.data()[6], 14.56);

    let mut xor = CsvConfig::new(
        tiny.join("xor.csv"),
        TargetColumns::One("y".into()),
        TabularTask::Classification,
    );
    xor.standardize = false;
    let prepared = xor.prepare(0).unwrap();
    assert_eq!(
        prepared.train.features.data(),
        &[0., 0., 0., 1., 1., 0., 1., 1.]
    );
    assert_eq!(prepared.train.labels(), Some(&[0, 1, 1, 0][..]));
    assert_eq!(prepared.train.class_names(), Some(&names(&["0", "1"])[..]));
}

#[test]
fn cv_splits_leave_out_the_test_split() {
    let mut text = String::from("x,label\n");
    for i in 0..40 {
        text.push_str(&format!(
            "{i},{}\n",
            if i % 4 == 0 { "rare" } else { "common" }
        ));
    }
    let mut config = CsvConfig::new(
        "cv.csv",
        TargetColumns::One("label".into()),
        TabularTask::Classification,
    );
    config.test_split = 0.25;
    config.validation_split = 0.15;
    let source = source(&text, &config);

    let outer = source.split(&config, 3).unwrap();
    let splits = source.cv_splits(&config, 3, 3).unwrap();

    assert_eq!(splits.len(), 3);
    let mut held_out: Vec<usize> = splits.iter().flat_map(|s| s.test.clone()).collect();
    held_out.sort_unstable();
    let mut development: Vec<usize> = outer
        .train
        .iter()
        .chain(&outer.validation)
        .copied()
        .collect();
    development.sort_unstable();
    assert_eq!(
        held_out, development,
        "the folds cover the rows outside the test split once"
    );

    for split in &splits {
        let mut all: Vec<usize> = split
            .train
            .iter()
            .chain(&split.validation)
            .chain(&split.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, development);
        assert!(!split.validation.is_empty());
        let labels = source.labels().unwrap();
        assert!(
            split.test.iter().any(|&row| labels[row] == 0),
            "each fold has a common row"
        );
        assert!(
            split.test.iter().any(|&row| labels[row] == 1),
            "each fold has a rare row"
        );
    }
}
