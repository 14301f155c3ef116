//! Field cases: softmax on large logits and cross-entropy where a probability underflows.
//! The vectors come from `tests/fixtures/softmax-overflow` and `tests/fixtures/log-zero`.

use dendrite::autograd::{Graph, Parameters, Workspace};
use dendrite::tensor::Tensor;

fn parse_list(field: &str) -> Vec<f32> {
    field
        .trim_matches('"')
        .split(';')
        .map(|v| v.parse().unwrap())
        .collect()
}

/// Splits a CSV line whose quoted fields contain no commas.
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out
}

fn fixture(path: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(fields)
        .collect()
}

#[test]
fn softmax_and_cross_entropy_on_large_logits() {
    let rows = fixture("softmax-overflow/softmax_vectors.csv");
    assert_eq!(rows.len(), 4);
    for row in rows {
        let (case, logits, target) = (
            &row[0],
            parse_list(&row[1]),
            row[2].parse::<usize>().unwrap(),
        );
        let (expected_probs, expected_ce) = (parse_list(&row[3]), row[4].parse::<f32>().unwrap());

        let params = Parameters::new();
        let mut workspace = Workspace::new();
        let mut graph = Graph::new(&params, &mut workspace, false);
        let x = graph.input(&Tensor::from_vec(&[1, logits.len()], logits.clone()));
        let probs = graph.softmax(x);
        for (got, want) in graph.value(probs).iter().zip(&expected_probs) {
            assert!(
                (got - want).abs() < 1e-6,
                "{case}: softmax {got}, expected {want}"
            );
        }
        let log_probs = graph.log_softmax(x);
        assert!(
            graph
                .value(log_probs)
                .iter()
                .all(|v| v.is_finite() || *v == f32::NEG_INFINITY),
            "{case}: log-softmax"
        );
        let loss = graph.cross_entropy(x, &[target]);
        let got = graph.value(loss)[0];
        assert!(
            (got - expected_ce).abs() < 1e-5,
            "{case}: cross-entropy {got}, expected {expected_ce}"
        );
    }
}

#[test]
fn losses_from_logits_never_take_log_zero() {
    let rows = fixture("log-zero/logzero_vectors.csv");
    assert_eq!(rows.len(), 5);
    for row in rows {
        let (case, kind, logits, target) = (
            &row[0],
            row[1].as_str(),
            parse_list(&row[2]),
            row[3].parse::<usize>().unwrap(),
        );
        let (expected_loss, expected_grad) = (row[4].parse::<f32>().unwrap(), parse_list(&row[5]));

        let mut params = Parameters::new();
        params.push("logits", Tensor::from_vec(&[1, logits.len()], logits));
        let mut workspace = Workspace::new();
        let mut graph = Graph::new(&params, &mut workspace, true);
        let x = graph.param(0);
        let loss = match kind {
            "softmax_ce" => graph.cross_entropy(x, &[target]),
            "sigmoid_bce" => {
                let t = graph.input(&Tensor::from_vec(&[1, 1], vec![target as f32]));
                graph.binary_cross_entropy(x, t)
            }
            other => panic!("unknown kind {other}"),
        };
        let got = graph.value(loss)[0];
        assert!(got.is_finite(), "{case}: loss {got}");
        assert!(
            (got - expected_loss).abs() < 1e-4,
            "{case}: loss {got}, expected {expected_loss}"
        );
        graph.backward(loss);
        let grad = workspace.gradient(0);
        for (g, want) in grad.iter().zip(&expected_grad) {
            assert!(
                (g - want).abs() < 1e-6,
                "{case}: gradient {grad:?}, expected {expected_grad:?}"
            );
        }
    }
}
