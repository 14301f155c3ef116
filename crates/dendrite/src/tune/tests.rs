use super::*;

fn config(strategy: Strategy, trials: usize) -> SearchConfig {
    SearchConfig {
        strategy,
        trials: Some(trials),
        time_budget_seconds: None,
        seed: 11,
        metric: None,
        parallel: None,
        retrain: true,
        grid_points: 3,
        reduction_factor: 3,
        min_epochs: 1,
        startup_trials: None,
        parameters: vec![
            ParameterSpec {
                key: "training.optimizer.learning_rate".into(),
                distribution: "log_uniform".into(),
                low: Some(1e-3),
                high: Some(1.0),
                values: None,
            },
            ParameterSpec {
                key: "training.batch_size".into(),
                distribution: "categorical".into(),
                low: None,
                high: None,
                values: Some(vec![Value::from(16), Value::from(32)]),
            },
        ],
    }
}

/// Runs a search to the end with a made-up score: the closer the learning rate is to 0.03,
/// the better.
fn run(search: &Search, max_epochs: usize, wave: usize) -> Vec<TrialRecord> {
    let mut records: Vec<TrialRecord> = Vec::new();
    loop {
        let proposals = search.next_wave(&records, max_epochs, wave);
        if proposals.is_empty() {
            return records;
        }
        for proposal in proposals {
            let rate = proposal.values["training.optimizer.learning_rate"]
                .as_f64()
                .unwrap();
            let score = -(rate / 0.03).ln().abs() + proposal.epochs as f64 * 0.01;
            records.push(TrialRecord {
                trial: proposal.trial,
                rung: proposal.rung,
                epochs: proposal.epochs,
                values: proposal.values,
                val_loss: Some(-score),
                val_accuracy: None,
                score: Some(score),
                seconds: 0.0,
                error: None,
            });
        }
    }
}

#[test]
fn same_seed_proposes_same_trials() {
    for strategy in [
        Strategy::Random,
        Strategy::Tpe,
        Strategy::Grid,
        Strategy::Halving,
    ] {
        let search = Search::new(config(strategy, 12)).unwrap();
        let first = run(&search, 9, 2);
        let second = run(&search, 9, 2);
        assert!(!first.is_empty());
        assert_eq!(first, second, "{strategy:?}");
    }
}

#[test]
fn resumed_search_proposes_what_remains() {
    let search = Search::new(config(Strategy::Tpe, 12)).unwrap();
    let whole = run(&search, 5, 2);
    assert_eq!(whole.len(), 12);

    // A search stopped after 7 trials (in the middle of a wave) continues with trials 8 to
    // 12, with the values an uninterrupted search proposed.
    let mut resumed = whole[..7].to_vec();
    loop {
        let wave = search.next_wave(&resumed, 5, 2);
        if wave.is_empty() {
            break;
        }
        for proposal in wave {
            if resumed.iter().any(|r| r.trial == proposal.trial) {
                continue;
            }
            let record = whole.iter().find(|r| r.trial == proposal.trial).unwrap();
            assert_eq!(proposal.values, record.values, "trial {}", proposal.trial);
            resumed.push(record.clone());
        }
    }
    assert_eq!(resumed.len(), 12);
}

#[test]
fn tpe_beats_its_startup_trials() {
    let search = Search::new(config(Strategy::Tpe, 30)).unwrap();
    let records = run(&search, 1, 1);
    let best = |records: &[TrialRecord]| {
        records
            .iter()
            .filter_map(|r| r.score)
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let startup = best(&records[..6]);
    let model_based = best(&records[6..]);
    assert!(model_based >= startup, "{model_based} < {startup}");
}

#[test]
fn grid_covers_every_combination() {
    let search = Search::new(config(Strategy::Grid, 100)).unwrap();
    assert_eq!(search.max_trials(), Some(6));
    let records = run(&search, 1, 4);
    let mut points: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(&r.values).unwrap())
        .collect();
    points.sort();
    points.dedup();
    assert_eq!(points.len(), 6);
}

#[test]
fn halving_keeps_a_third_per_rung() {
    let search = Search::new(config(Strategy::Halving, 9)).unwrap();
    assert_eq!(search.rung_epochs(9), vec![1, 3, 9]);
    let records = run(&search, 9, 4);
    let per_rung: Vec<usize> = (0..3)
        .map(|rung| records.iter().filter(|r| r.rung == rung).count())
        .collect();
    assert_eq!(per_rung, vec![9, 3, 1]);

    // The configs of rung 1 are the best three of rung 0.
    let mut rung0: Vec<&TrialRecord> = records.iter().filter(|r| r.rung == 0).collect();
    rung0.sort_by(|a, b| b.score.unwrap().total_cmp(&a.score.unwrap()));
    let mut expected: Vec<usize> = rung0[..3].iter().map(|r| r.trial).collect();
    expected.sort_unstable();
    let promoted: Vec<usize> = records
        .iter()
        .filter(|r| r.rung == 1)
        .map(|r| r.trial)
        .collect();
    assert_eq!(promoted, expected);
    let best = best_trial(&records, 9).unwrap();
    assert_eq!(best.rung, 2);
}

#[test]
fn invalid_searches_name_the_setting() {
    let mut duplicate = config(Strategy::Random, 4);
    duplicate.parameters.push(duplicate.parameters[0].clone());
    let error = Search::new(duplicate).unwrap_err().to_string();
    assert!(
        error.contains("training.optimizer.learning_rate is given twice"),
        "{error}"
    );

    let mut unbounded = config(Strategy::Tpe, 4);
    unbounded.trials = None;
    let error = Search::new(unbounded).unwrap_err().to_string();
    assert!(error.contains("search.trials"), "{error}");

    let mut empty = config(Strategy::Random, 4);
    empty.parameters[1].values = Some(Vec::new());
    let error = Search::new(empty).unwrap_err().to_string();
    assert!(
        error.contains("search parameter training.batch_size"),
        "{error}"
    );
}

#[test]
fn journal_keeps_finished_trials() {
    let dir = std::env::temp_dir().join(format!("dendrite-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("journal.jsonl");
    let search = Search::new(config(Strategy::Random, 3)).unwrap();
    let records = run(&search, 2, 1);

    let (mut journal, loaded) = Journal::open(&path, "abc").unwrap();
    assert!(loaded.is_empty());
    for record in &records[..2] {
        journal.append(record).unwrap();
    }
    drop(journal);

    // A line cut off by a kill is dropped and overwritten.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"search\":\"abc\",\"tri");
    std::fs::write(&path, text).unwrap();
    let (mut journal, loaded) = Journal::open(&path, "abc").unwrap();
    assert_eq!(loaded, records[..2]);
    journal.append(&records[2]).unwrap();
    drop(journal);
    let (_, loaded) = Journal::open(&path, "abc").unwrap();
    assert_eq!(loaded, records);

    let error = Journal::open(&path, "other").unwrap_err().to_string();
    assert!(error.contains("belongs to another search"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}
