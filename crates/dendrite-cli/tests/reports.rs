//! What a user sees after training: `inspect`, the charts and `report.html` (opened in
//! headless Chromium), `dendrite report`, and the TensorBoard event files (read by
//! TensorBoard itself).
//!
//! The Chromium and TensorBoard tests need `/usr/bin/chromium` (Debian's `chromium` package)
//! and a Python environment with TensorBoard at `/tmp/tbenv` (or `$DENDRITE_TENSORBOARD_PYTHON`);
//! `.ci/run` installs both. They fail, never skip, when either is missing.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::{TempDir, dendrite, example_config, repo_path, train};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Hosts of Chromium's own services (clock, component updater, sign-in), which the browser
/// contacts at start-up even with background networking turned off. Requests to them reach
/// the test's proxy and go no further; they are not counted as the page's requests. A page
/// request to such a host still shows in the probe's list of fetched resources.
const BROWSER_SERVICE_HOSTS: [&str; 2] = [".google.com", ".googleapis.com"];

#[test]
fn inspect_lenet_counts_like_pytorch() {
    let dir = TempDir::new("inspect-lenet");
    let config = example_config(&dir, "mnist-cnn", &[("epochs = ", "epochs = 1")]);
    let out = dir.join("run");
    train(&config, &out).assert_success();

    let inspect = dendrite(["inspect".as_ref(), out.as_os_str()]);
    inspect.assert_success();
    // PyTorch 2 counts the same network as 61,706 values:
    //   nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    //                 nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    //                 nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
    //                 nn.Linear(84, 10))
    //   sum(p.numel() for p in model.parameters())  # 61706
    assert!(
        inspect.stdout.contains("total parameters 61,706"),
        "{}",
        inspect.stdout
    );
    for row in [
        "layers.0 (conv2d)      [6, 28, 28]          156",
        "layers.2 (conv2d)      [16, 10, 10]       2,416",
        "layers.6 (dense)       [120]             48,120",
        "layers.9 (dense)       [10]                 850",
    ] {
        assert!(
            inspect.stdout.contains(row),
            "no row {row:?} in\n{}",
            inspect.stdout
        );
    }
    assert!(
        inspect
            .stdout
            .contains("input        IDX images, grayscale"),
        "{}",
        inspect.stdout
    );
}

#[test]
fn inspect_shows_csv_preprocessing() {
    let dir = TempDir::new("inspect-csv");
    let config = example_config(&dir, "iris", &[("epochs = ", "epochs = 2")]);
    let out = dir.join("run");
    train(&config, &out).assert_success();

    let inspect = dendrite(["inspect".as_ref(), out.as_os_str()]);
    inspect.assert_success();
    assert!(
        inspect.stdout.contains("total parameters 15"),
        "{}",
        inspect.stdout
    );
    assert!(
        inspect
            .stdout
            .contains("CSV columns  4 features from 4 columns; targets species"),
        "{}",
        inspect.stdout
    );
    assert!(
        inspect.stdout.contains("numeric, (x - "),
        "{}",
        inspect.stdout
    );
}

#[test]
fn report_and_inspect_reject_bad_run_folders() {
    let dir = TempDir::new("report-bad");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let report = dendrite(["report".as_ref(), empty.as_os_str()]);
    assert_eq!(report.code, Some(2), "{}", report.stderr);
    assert!(
        report.stderr.contains("metrics.jsonl") && report.stderr.contains("dendrite train"),
        "{}",
        report.stderr
    );

    let config = example_config(&dir, "iris", &[("epochs = ", "epochs = 2")]);
    let out = dir.join("run");
    train(&config, &out).assert_success();
    std::fs::write(out.join("model.json"), "{ not json").unwrap();
    let report = dendrite(["report".as_ref(), out.as_os_str()]);
    assert_eq!(report.code, Some(2), "{}", report.stderr);
    assert!(report.stderr.contains("model.json"), "{}", report.stderr);
    let inspect = dendrite(["inspect".as_ref(), out.as_os_str()]);
    assert_eq!(inspect.code, Some(2), "{}", inspect.stderr);
    assert!(inspect.stderr.contains("model.json"), "{}", inspect.stderr);
    assert!(!inspect.stderr.contains("panicked"), "{}", inspect.stderr);
}

#[test]
fn regression_report_plots_predictions() {
    let dir = TempDir::new("report-regression");
    let config = example_config(&dir, "diabetes", &[("epochs = ", "epochs = 3")]);
    let out = dir.join("run");
    let run = train(&config, &out);
    run.assert_success();
    assert!(run.stdout.contains("report written to"), "{}", run.stdout);

    let predictions = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    let header = predictions.lines().next().unwrap();
    assert!(
        header.contains("_actual") && header.contains("_predicted"),
        "{header}"
    );
    for file in [
        "loss",
        "learning_rate",
        "gradient_norms",
        "metric_r2",
        "predicted_vs_actual_0",
    ] {
        for extension in ["svg", "png"] {
            let path = out.join(format!("plots/{file}.{extension}"));
            assert!(path.exists(), "{} is missing", path.display());
        }
    }
    assert!(!out.join("plots/confusion_matrix.svg").exists());

    // `dendrite report` rebuilds the page from the files alone.
    std::fs::remove_file(out.join("report.html")).unwrap();
    let report = dendrite(["report".as_ref(), out.as_os_str()]);
    report.assert_success();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("predicted against actual"),
        "no scatter chart"
    );
    assert!(html.contains("<h2>Config</h2>"));
}

/// Trains the MNIST example into `target/ci-artifacts/mnist-mlp`, which stays after the test,
/// and returns the folder.
fn train_mnist_example() -> PathBuf {
    let out = repo_path("target/ci-artifacts/mnist-mlp");
    let _ = std::fs::remove_dir_all(&out);
    let run = train(&repo_path("examples/mnist-mlp.toml"), &out);
    run.assert_success();
    let report = out.join("report.html");
    assert!(
        run.stdout
            .contains(&format!("report written to {}", report.display())),
        "train does not print the report path:\n{}",
        run.stdout
    );
    out
}

#[test]
fn mnist_report_loads_offline_in_chromium() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing; install it with `apt-get install -y chromium` (.ci/run does)"
    );
    let out = train_mnist_example();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for section in [
        "<h2>Data</h2>",
        "<h2>Final metrics</h2>",
        "<h2>Timing</h2>",
        "<h2>Config</h2>",
        "<h2>Most wrong test images</h2>",
    ] {
        assert!(html.contains(section), "report.html has no {section}");
    }
    for absent in ["<script", "<link", "http://", "https://", "@import", "url("] {
        assert!(!html.contains(absent), "report.html contains {absent}");
    }
    let images = html.matches("<img ").count();
    // 8 charts (loss, 4 metrics, learning rate, gradient norms, confusion matrix) and 24
    // misclassified test digits.
    assert_eq!(images, 32, "images in report.html");

    let scratch = TempDir::new("chromium");
    let probe = probe_page(&scratch, &html);
    let (dom, requests) = chromium_with_proxy(&scratch, &["--dump-dom".into(), file_url(&probe)]);
    let result = probe_result(&dom);
    assert_eq!(result, format!("images={images} broken=0 requests=[]"));
    assert_eq!(requests, Vec::<String>::new(), "requests left the page");

    let screenshot = out.join("report-screenshot.png");
    let _ = std::fs::remove_file(&screenshot);
    let (_, requests) = chromium_with_proxy(
        &scratch,
        &[
            format!("--screenshot={}", screenshot.display()),
            "--window-size=1400,6000".into(),
            "--hide-scrollbars".into(),
            file_url(&out.join("report.html")),
        ],
    );
    assert_eq!(requests, Vec::<String>::new(), "requests left the page");
    let image = image::open(&screenshot)
        .unwrap_or_else(|e| panic!("{} is not an image: {e}", screenshot.display()))
        .to_rgb8();
    assert_eq!(image.dimensions(), (1400, 6000));
    let ink = image.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(
        ink > 100_000,
        "the screenshot is nearly blank: {ink} pixels"
    );
}

#[test]
fn chromium_probe_catches_network_image() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing; install it with `apt-get install -y chromium` (.ci/run does)"
    );
    // The same checks on a page with one remote image must report it broken and requested,
    // so the report test above cannot pass by checking nothing.
    let scratch = TempDir::new("chromium-control");
    let page = "<!DOCTYPE html><html><body><img src=\"http://example.invalid/a.png\">\
                <img src=\"data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7\"></body></html>";
    let probe = probe_page(&scratch, page);
    let (dom, requests) = chromium_with_proxy(&scratch, &["--dump-dom".into(), file_url(&probe)]);
    let result = probe_result(&dom);
    assert!(result.starts_with("images=2 broken=1 "), "{result}");
    assert!(
        requests.iter().any(|r| r.contains("example.invalid")),
        "the proxy saw no request: {requests:?}"
    );
}

/// Writes `html` with a script that, once the page has loaded, appends the number of images,
/// the number that did not load and the URLs of the resources fetched other than data URIs.
fn probe_page(dir: &TempDir, html: &str) -> PathBuf {
    let script = "<script>window.addEventListener('load', () => {\n\
        const images = Array.from(document.images);\n\
        const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).length;\n\
        const requests = performance.getEntriesByType('resource').map(e => e.name)\n\
            .filter(n => !n.startsWith('data:'));\n\
        const out = document.createElement('pre'); out.id = 'probe';\n\
        out.textContent = 'images=' + images.length + ' broken=' + broken\n\
            + ' requests=' + JSON.stringify(requests);\n\
        document.body.appendChild(out);\n});</script>";
    let page = html.replace("</body>", &format!("{script}</body>"));
    assert!(page.contains("id = 'probe'"), "the page has no </body>");
    dir.write("probe.html", page)
}

fn probe_result(dom: &str) -> String {
    let start = dom
        .find("<pre id=\"probe\">")
        .unwrap_or_else(|| panic!("the probe did not run; DOM:\n{dom}"))
        + "<pre id=\"probe\">".len();
    let end = dom[start..].find("</pre>").expect("the probe output ends") + start;
    dom[start..end].replace("&quot;", "\"")
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// Runs headless Chromium with `args` behind an HTTP proxy on a loopback port that sends no
/// response and records the first line of every request. Returns standard output and the
/// recorded requests.
fn chromium_with_proxy(dir: &TempDir, args: &[String]) -> (String, Vec<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port is free");
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(Mutex::new(false));
    let proxy = {
        let requests = Arc::clone(&requests);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            while !*done.lock().unwrap() {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream
                            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
                            .unwrap();
                        let mut line = String::new();
                        let _ = BufReader::new(stream).read_line(&mut line);
                        requests.lock().unwrap().push(line.trim().to_string());
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
                }
            }
        })
    };

    let profile = dir.join(&format!("profile-{}", port));
    let output = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-domain-reliability",
            "--no-pings",
            "--virtual-time-budget=10000",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--proxy-server=http://127.0.0.1:{port}"),
        ])
        .args(args)
        .output()
        .expect("chromium starts");
    *done.lock().unwrap() = true;
    proxy.join().unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let requests = requests
        .lock()
        .unwrap()
        .iter()
        .filter(|line| !is_browser_service(line))
        .cloned()
        .collect();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        requests,
    )
}

/// Returns whether a request line such as `CONNECT update.googleapis.com:443 HTTP/1.1` or
/// `GET http://clients2.google.com/time HTTP/1.1` goes to one of [`BROWSER_SERVICE_HOSTS`].
fn is_browser_service(line: &str) -> bool {
    let target = line.split_whitespace().nth(1).unwrap_or_default();
    let authority = target
        .strip_prefix("http://")
        .unwrap_or(target)
        .split('/')
        .next()
        .unwrap_or_default();
    let host = authority.split(':').next().unwrap_or_default();
    BROWSER_SERVICE_HOSTS
        .iter()
        .any(|suffix| host.ends_with(suffix))
}

/// The Python interpreter of the environment with TensorBoard installed.
fn tensorboard_python() -> PathBuf {
    let python = std::env::var_os("DENDRITE_TENSORBOARD_PYTHON")
        .map_or_else(|| PathBuf::from("/tmp/tbenv/bin/python"), PathBuf::from);
    assert!(
        python.exists(),
        "{} is missing; create it with `python3 -m venv /tmp/tbenv && /tmp/tbenv/bin/pip \
         install tensorboard` (.ci/run does)",
        python.display()
    );
    python
}

#[test]
fn tensorboard_reads_scalars_of_short_run() {
    let python = tensorboard_python();
    let dir = TempDir::new("tensorboard");
    let config = example_config(&dir, "iris", &[("epochs = ", "epochs = 5")]);
    let out = dir.join("run");
    let run = dendrite([
        "train".as_ref(),
        config.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--quiet".as_ref(),
        "--tensorboard".as_ref(),
    ]);
    run.assert_success();

    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value =
        serde_json::from_str(metrics.lines().last().expect("metrics.jsonl has lines")).unwrap();
    let total_steps = last["steps"].as_u64().expect("the steps of the last epoch");
    assert_eq!(metrics.lines().count(), 5);

    let script = r#"
import json, sys
from tensorboard.backend.event_processing import event_accumulator
accumulator = event_accumulator.EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
accumulator.Reload()
print(json.dumps({tag: [event.step for event in accumulator.Scalars(tag)]
                  for tag in accumulator.Tags()["scalars"]}))
"#;
    let output = Command::new(&python)
        .args(["-c", script])
        .arg(out.join("tensorboard"))
        .output()
        .expect("python starts");
    assert!(
        output.status.success(),
        "TensorBoard failed to read the events: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tags: std::collections::BTreeMap<String, Vec<i64>> =
        serde_json::from_slice(&output.stdout).expect("the script prints JSON");

    let epochs: Vec<i64> = (1..=5).collect();
    for tag in [
        "loss/train",
        "loss/validation",
        "learning_rate",
        "validation/accuracy",
        "validation/macro_f1",
    ] {
        assert_eq!(
            tags.get(tag),
            Some(&epochs),
            "steps of {tag}; all tags: {tags:?}"
        );
    }
    let batch_steps: Vec<i64> = (1..=total_steps as i64).collect();
    assert_eq!(
        tags.get("batch/loss"),
        Some(&batch_steps),
        "steps of batch/loss"
    );
}
