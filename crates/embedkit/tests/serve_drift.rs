//! `embedkit serve --drift-reference` end to end: the real binary serving the real all-MiniLM-L6-v2 over
//! loopback, fed with Debian package descriptions (tests/fixtures/drift/debian-sections). The profile is made
//! by `embedkit drift profile` from the committed vectors of half the descriptions of 24 sections; the traffic
//! is the other half (in distribution) and then descriptions of 8 sections the reference never saw (switched).
//! Checked: 20 in-distribution windows raise no alert, switched traffic raises it within 1,000 requests (with a
//! small window and with the default 500), `/metrics` parses with the Prometheus project's own Python parser,
//! `/drift` has `embedkit drift --json`'s shape, and the periodic canary passes for the served model and flags
//! a canary recorded with int8 compute.

#[path = "support/python.rs"]
mod python;
#[path = "support/server.rs"]
mod server;

use embedkit_server::client::Client;
use python::python_with;
use serde_json::{Value, json};
use server::Server;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MODEL: &str = "all-MiniLM-L6-v2";
/// Sections kept out of the reference: the switched traffic.
const NOVEL: [&str; 8] = [
    "games", "fonts", "haskell", "sound", "php", "lisp", "mail", "ocaml",
];
/// The two tests each run a server on the same 2 cores: one at a time.
static ONE_SERVER: Mutex<()> = Mutex::new(());

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/drift/debian-sections")
}

fn embedkit(args: &[&str]) {
    let o = Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .args(args)
        .output()
        .expect("embedkit runs");
    assert!(
        o.status.success(),
        "embedkit {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The corpus split: reference rows (their committed vectors) and texts for in-distribution and switched
/// traffic, in a seeded order.
struct Split {
    in_distribution: Vec<String>,
    switched: Vec<String>,
}

/// Writes the profile (reference vectors + canary recorded with `canary_args`) into `dir` and returns the split.
/// Only descriptions of at most `max_chars` characters take part (short texts keep the test fast).
fn profile(dir: &Path, canary_args: &[&str], max_chars: usize) -> (PathBuf, Split) {
    let arr =
        embedkit_vectors::npy::read_npy(&corpus_dir().join("vectors.f16.npy")).expect("vectors");
    let (dims, vectors) = (arr.shape[1], arr.to_f32_values().expect("f16"));
    let read = |f: &str| -> Vec<String> {
        std::fs::read_to_string(corpus_dir().join(f))
            .expect(f)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let (sections, texts) = (read("sections.txt"), read("texts.txt"));
    // A fixed pseudo-random order (an LCG): which half of each section is reference is arbitrary but fixed.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    let mut state = 16u64;
    for i in (1..order.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        order.swap(i, (state >> 33) as usize % (i + 1));
    }
    let (mut reference, mut split) = (
        Vec::new(),
        Split {
            in_distribution: Vec::new(),
            switched: Vec::new(),
        },
    );
    for (k, &i) in order.iter().enumerate() {
        if texts[i].chars().count() > max_chars {
            continue;
        }
        if NOVEL.contains(&sections[i].as_str()) {
            split.switched.push(texts[i].clone());
        } else if k % 2 == 0 {
            reference.push(i);
        } else {
            split.in_distribution.push(texts[i].clone());
        }
    }
    let ref_path = dir.join("reference.npy");
    let data: Vec<u8> = reference
        .iter()
        .flat_map(|&i| {
            vectors[i * dims..(i + 1) * dims]
                .iter()
                .flat_map(|v| v.to_le_bytes())
        })
        .collect();
    let mut f = std::fs::File::create(&ref_path).expect("create npy");
    embedkit_vectors::npy::write_npy(&mut f, "<f4", &[reference.len(), dims], &data).expect("npy");
    let canary_texts = dir.join("canary.txt");
    std::fs::write(
        &canary_texts,
        "How do I reset my password?\nA library for parsing JSON in Rust\nThe weather in Paris tomorrow\n\
         Install the package with apt\nAn open-source font family for code\n",
    )
    .unwrap();
    let canary = dir.join("canary.json");
    let mut args = vec![
        "drift",
        "canary",
        "record",
        "--quiet",
        "-m",
        MODEL,
        "--texts",
        canary_texts.to_str().unwrap(),
        "--output",
        canary.to_str().unwrap(),
    ];
    args.extend_from_slice(canary_args);
    embedkit(&args);
    let out = dir.join("profile");
    embedkit(&[
        "drift",
        "profile",
        "-i",
        ref_path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--canary",
        canary.to_str().unwrap(),
    ]);
    (out, split)
}

fn drift(c: &mut Client) -> Value {
    let r = c.get("/drift").expect("GET /drift");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json().expect("/drift is JSON")
}

/// Sends `texts` as `per_request` texts a request from 4 clients at once; returns the requests sent.
fn send(server: &Server, texts: &[String], per_request: usize) -> usize {
    let requests: Vec<&[String]> = texts.chunks(per_request).collect();
    std::thread::scope(|s| {
        for part in requests.chunks(requests.len().div_ceil(4)) {
            s.spawn(move || {
                let mut c = server.client();
                for r in part {
                    let body = if r.len() == 1 {
                        json!({"inputs": r[0]})
                    } else {
                        json!({"inputs": r})
                    };
                    let resp = c.post_json("/embed", &body).expect("POST /embed");
                    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
                }
            });
        }
    });
    requests.len()
}

/// Waits until the monitor has checked `windows` windows; returns /drift then.
fn wait_checked(c: &mut Client, windows: u64) -> Value {
    let start = Instant::now();
    loop {
        let d = drift(c);
        if d["window"]["checked"].as_u64() >= Some(windows) {
            return d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "window {windows} never checked: {d}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends switched traffic one text a request, a window at a time, until the alert is up; returns the
/// requests it took and the /drift document then.
fn switch_until_alert(
    server: &Server,
    split: &Split,
    window: usize,
    checked: u64,
) -> (usize, Value) {
    let mut c = server.client();
    let mut sent = 0;
    for (k, texts) in split.switched.chunks(window).enumerate() {
        assert_eq!(texts.len(), window, "not enough switched texts");
        sent += send(server, texts, 1);
        let d = wait_checked(&mut c, checked + k as u64 + 1);
        eprintln!(
            "switched window {}: drift {} p {} alert {}",
            k + 1,
            d["drift"],
            d["p_value"],
            d["alert"]
        );
        if d["alert"]["active"] == json!(true) || sent >= 1000 {
            return (sent, d);
        }
    }
    panic!("ran out of switched texts after {sent} requests without an alert");
}

/// The Prometheus samples of /metrics as the `prometheus_client` parser reads them: `[name, labels, value]`.
fn parse_metrics(python: &Path, text: &str) -> Vec<(String, Value, f64)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.txt");
    std::fs::write(&path, text).unwrap();
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let o = Command::new(python)
        .args(["-c", script, path.to_str().unwrap()])
        .output()
        .expect("python runs");
    assert!(
        o.status.success(),
        "prometheus_client cannot parse /metrics: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Vec<(String, Value, f64)> = serde_json::from_slice(&o.stdout).expect("parser output");
    v
}

fn sample(samples: &[(String, Value, f64)], name: &str, labels: Value) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| l.get(k) == Some(v))
        })
        .map(|s| s.2)
}

#[test]
fn twenty_in_distribution_windows_do_not_alert_and_switched_topics_do() {
    let _one = ONE_SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let python = python_with(&["prometheus_client"]);
    let dir = tempfile::tempdir().unwrap();
    // Descriptions of up to 300 characters: 818 reference vectors, 792 traffic and 551 switched texts.
    let (profile, split) = profile(dir.path(), &[], 300);
    let window = 50;
    let server = Server::start(&[
        "--model",
        MODEL,
        "--drift-reference",
        profile.to_str().unwrap(),
        "--drift-window",
        &window.to_string(),
        "--drift-canary-interval",
        "2s",
        // Check every window at once (the default rests 19× a check's time between checks).
        "--drift-max-cpu",
        "1",
    ]);
    let mut c = server.client();
    let d = drift(&mut c);
    assert_eq!(d["window"]["checked"], json!(0));
    assert_eq!(d["drift"], json!(false));
    assert_eq!(d["window"]["size"], json!(window));
    assert!(
        d["reference"]["rows"].as_u64().is_some_and(|r| r > 800),
        "{d}"
    );

    // 20 windows of in-distribution traffic: no alert at any point.
    let pool = &split.in_distribution;
    let mut drifting = Vec::new();
    for k in 0..20 {
        let texts: Vec<String> = (0..window)
            .map(|i| pool[(k * window + i) % pool.len()].clone())
            .collect();
        send(&server, &texts, 10);
        let d = wait_checked(&mut c, k as u64 + 1);
        assert_eq!(d["alert"]["active"], json!(false), "window {k}: {d}");
        if d["drift"] == json!(true) {
            drifting.push(k);
        }
        eprintln!(
            "in-distribution window {k}: drift {} p {}",
            d["drift"], d["p_value"]
        );
    }
    let d = drift(&mut c);
    assert_eq!(d["window"]["checked"], json!(20));
    assert_eq!(d["alert"]["raised"], json!(0), "{d}");
    assert_eq!(d["window"]["vectors_dropped"], json!(0), "{d}");
    eprintln!("in-distribution windows flagged as drift: {drifting:?} of 20 (alert never raised)");

    // The same shape as `embedkit drift --json`, plus the monitor's own fields.
    for m in ["mmd", "classifier", "centroid", "ks"] {
        for f in ["p_value", "statistic", "drift"] {
            assert!(!d["methods"][m][f].is_null(), "methods.{m}.{f} in {d}");
        }
    }
    assert_eq!(d["clusters"].as_array().map(Vec::len), Some(16), "{d}");
    assert!(d["novel"].is_array() && d["cluster_shift"]["hellinger"].is_number());

    // Traffic switched to 8 sections the reference never saw.
    let (requests, d) = switch_until_alert(&server, &split, window, 20);
    eprintln!("switched traffic: alert after {requests} single-text requests (window {window})");
    assert_eq!(d["alert"]["active"], json!(true), "{d}");
    assert!(requests <= 1000, "{requests}");
    assert_eq!(d["alert"]["raised"], json!(1));

    // /metrics parses as Prometheus text, and says the same.
    let text = String::from_utf8(c.get("/metrics").unwrap().body).unwrap();
    let Some(python) = python else { return };
    let samples = parse_metrics(&python, &text);
    let model = json!({"model": MODEL});
    assert_eq!(
        sample(&samples, "embedkit_drift_alert", model.clone()),
        Some(1.0)
    );
    assert_eq!(
        sample(&samples, "embedkit_drift_detected", model.clone()),
        Some(1.0)
    );
    for m in ["overall", "mmd", "classifier", "centroid", "ks"] {
        let p = sample(
            &samples,
            "embedkit_drift_p_value",
            json!({"model": MODEL, "method": m}),
        );
        assert!(p.is_some_and(|p| p > 0.0 && p < 1.0), "{m}: {p:?}");
    }
    let served = 20 * window + requests;
    assert_eq!(
        sample(&samples, "embedkit_drift_vector_norm_count", model.clone()),
        Some(served as f64)
    );
    assert!(
        sample(
            &samples,
            "embedkit_drift_centroid_distance",
            json!({"kind": "euclidean"})
        )
        .is_some()
    );
    assert_eq!(
        sample(&samples, "embedkit_drift_canary_changed", model.clone()),
        Some(0.0)
    );
    let cos = sample(&samples, "embedkit_drift_canary_min_cosine", model).unwrap();
    assert!(cos >= 0.9999, "{cos}");
    // The rest of the exposition still parses too (the request counters are there).
    assert!(samples.iter().any(|s| s.0 == "embedkit_requests_total"));
}

#[test]
fn the_default_window_alerts_within_1000_requests_and_the_canary_flags_int8() {
    let _one = ONE_SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // The canary recorded with int8 compute; the server runs f32: the canary must say "changed".
    let (profile, split) = profile(dir.path(), &["--compute", "int8"], usize::MAX);
    let server = Server::start(&[
        "--model",
        MODEL,
        "--drift-reference",
        profile.to_str().unwrap(),
    ]);
    let mut c = server.client();
    assert_eq!(drift(&mut c)["window"]["size"], json!(500));
    let (requests, d) = switch_until_alert(&server, &split, 500, 0);
    eprintln!("default window: alert after {requests} single-text requests");
    assert_eq!(d["alert"]["active"], json!(true), "{d}");
    assert!(requests <= 1000, "{requests}");
    assert_eq!(d["window"]["vectors_dropped"], json!(0), "{d}");
    // The canary ran at start: int8 vectors are not the recorded f32 ones.
    assert_eq!(d["canary"]["changed"], json!(true), "{d}");
    assert!(d["canary"]["min_cosine"].as_f64().unwrap() < 0.9999, "{d}");
    // Monitoring an unknown model, or from a folder that is no profile, stops the start with a message.
    let o = Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .args(["serve", "--quiet", "--port", "0", "--drift-reference"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("profile.json"));
}
