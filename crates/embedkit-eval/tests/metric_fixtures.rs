//! Every ranking metric against MTEB's values (pytrec_eval + MTEB's MRR) on the fixtures of
//! tools/make_metric_fixtures.py: a real MiniLM run on the project's retrieval set and synthetic runs with graded
//! qrels, heavy ties, float32-only ties, edge cases and ArguAna-style identical ids.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use embedkit_eval::datasets::load_qrels;
use embedkit_eval::metrics::{DEFAULT_KS, Run, drop_identical_ids, evaluate};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/eval/metrics")
}

fn load_run(path: &Path) -> Run {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut run = Run::new();
    for (q, docs) in v.as_object().unwrap() {
        let list = run.entry(q.clone()).or_default();
        for (d, s) in docs.as_object().unwrap() {
            list.push((d.clone(), s.as_f64().unwrap()));
        }
    }
    run
}

fn check(dataset: &str, expected_file: &str, ignore_identical_ids: bool) -> usize {
    let dir = fixtures().join(dataset);
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join(expected_file)).unwrap()).unwrap();
    let qrels_path = dir.join(expected["qrels"].as_str().unwrap());
    let qrels = load_qrels(&qrels_path).unwrap();
    let mut run = load_run(&dir.join(expected["run"].as_str().unwrap()));
    if ignore_identical_ids {
        drop_identical_ids(&mut run);
    }
    let got = evaluate(&qrels, &run, &DEFAULT_KS);
    let want_per_query = expected["per_query"].as_object().unwrap();
    assert_eq!(
        got.per_query.keys().collect::<Vec<_>>(),
        want_per_query.keys().collect::<Vec<_>>(),
        "{dataset}: scored queries differ"
    );
    let mut compared = 0;
    let mut worst = 0.0f64;
    let mut cmp =
        |what: &str, got: &BTreeMap<String, f64>, want: &serde_json::Map<String, Value>| {
            for (key, w) in want {
                if key.starts_with("mrr_insertion_order") {
                    continue; // informational: MTEB's MRR before it broke ties by document id
                }
                let w = w.as_f64().unwrap();
                let g = *got
                    .get(key)
                    .unwrap_or_else(|| panic!("{dataset} {what}: no {key}"));
                let diff = (g - w).abs();
                worst = worst.max(diff);
                assert!(diff <= 1e-9, "{dataset} {what} {key}: got {g}, MTEB {w}");
                compared += 1;
            }
        };
    for (q, want) in want_per_query {
        cmp(q, &got.per_query[q], want.as_object().unwrap());
    }
    cmp("mean", &got.mean, expected["mean"].as_object().unwrap());
    eprintln!("{dataset} ({expected_file}): {compared} values, worst |diff| {worst:.2e}");
    compared
}

#[test]
fn real_minilm_run_on_debian_descriptions() {
    assert!(check("debian-desc", "expected.json", false) > 400 * 30);
}

#[test]
fn graded_qrels_with_heavy_ties() {
    assert!(check("synthetic-graded-ties", "expected.json", false) > 0);
}

#[test]
fn binary_qrels_edge_cases() {
    assert!(check("synthetic-binary-edge", "expected.json", false) > 0);
}

#[test]
fn scores_that_tie_only_in_float32() {
    assert!(check("synthetic-float32-ties", "expected.json", false) > 0);
}

#[test]
fn identical_ids_kept_and_ignored() {
    check("synthetic-identical-ids", "expected.json", false);
    check(
        "synthetic-identical-ids",
        "expected_ignore_identical_ids.json",
        true,
    );
}
