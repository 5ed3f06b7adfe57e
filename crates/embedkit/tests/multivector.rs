//! `embedkit index build --multi-vector` + `embedkit search` end to end: MaxSim over stored token vectors equals
//! sentence-transformers' `util.maxsim` (tests/fixtures/maxsim) for all-MiniLM-L6-v2 and the reference scores of
//! the tiny ColBERT models (tests/fixtures/colbert), at float32, int8 and binary precision.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn embedkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .args(args)
        .output()
        .expect("the embedkit binary runs")
}

fn ok(args: &[&str]) -> String {
    let o = embedkit(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn read(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(rel)).unwrap()).unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// (query_id, doc_id) → score from `search --format jsonl`.
fn scores(jsonl: &str) -> std::collections::HashMap<(usize, usize), f64> {
    jsonl
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let q = v["query_id"].as_str().unwrap().parse().unwrap();
            let d = v["doc_id"].as_str().unwrap().parse().unwrap();
            ((q, d), v["score"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn minilm_token_index_scores_like_util_maxsim() {
    let meta = read("maxsim/meta.json");
    let docs = strings(&meta["documents"]);
    let queries = strings(&meta["queries"]);
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("docs.txt");
    std::fs::write(&corpus, docs.join("\n") + "\n").unwrap();
    let qfile = dir.path().join("queries.txt");
    std::fs::write(&qfile, queries.join("\n") + "\n").unwrap();
    // A single-vector index searched with a queries file (reading it used to reserve usize::MAX documents).
    let single = dir.path().join("single.idx");
    ok(&[
        "index",
        "build",
        "-q",
        "--input",
        corpus.to_str().unwrap(),
        "--output",
        single.to_str().unwrap(),
    ]);
    let hits = scores(&ok(&[
        "search",
        "-q",
        "--index",
        single.to_str().unwrap(),
        "--queries",
        qfile.to_str().unwrap(),
        "-k",
        "1",
        "--format",
        "jsonl",
    ]));
    assert_eq!(hits.len(), queries.len());
    for (precision, tol) in [("float32", 1e-4), ("int8", 0.05), ("binary", 0.05)] {
        let idx = dir.path().join(format!("{precision}.idx"));
        ok(&[
            "index",
            "build",
            "-q",
            "--multi-vector",
            "--input",
            corpus.to_str().unwrap(),
            "--precision",
            precision,
            "--output",
            idx.to_str().unwrap(),
        ]);
        let got = scores(&ok(&[
            "search",
            "-q",
            "--index",
            idx.to_str().unwrap(),
            "--queries",
            qfile.to_str().unwrap(),
            "-k",
            "100",
            "--format",
            "jsonl",
        ]));
        assert_eq!(got.len(), queries.len() * docs.len());
        for q in 0..queries.len() {
            let mut best = (0, f64::MIN);
            for d in 0..docs.len() {
                let want = meta["scores"]["normalized"][q][d].as_f64().unwrap();
                let g = got[&(q, d)];
                assert!(
                    (g - want).abs() <= tol * want.abs().max(1.0),
                    "{precision} q{q} d{d}: {g} vs {want}"
                );
                if want > best.1 {
                    best = (d, want);
                }
            }
            // Quantized token vectors keep the best document first.
            let top = (0..docs.len())
                .max_by(|&a, &b| got[&(q, a)].total_cmp(&got[&(q, b)]))
                .unwrap();
            assert_eq!(top, best.0, "{precision} q{q}");
        }
    }
}

#[test]
fn colbert_token_index_scores_like_the_reference() {
    let expected = read("colbert/expected.json");
    let dir = tempfile::tempdir().unwrap();
    for name in ["pylate", "stanford"] {
        let want = &expected[name];
        let texts = |side: &str| -> Vec<String> {
            want[side]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["text"].as_str().unwrap().to_string())
                .collect()
        };
        let corpus = dir.path().join(format!("{name}-docs.txt"));
        std::fs::write(&corpus, texts("documents").join("\n") + "\n").unwrap();
        let model = fixtures().join("colbert").join(name);
        let idx = dir.path().join(format!("{name}.idx"));
        ok(&[
            "index",
            "build",
            "-q",
            "--multi-vector",
            "--model",
            model.to_str().unwrap(),
            "--input",
            corpus.to_str().unwrap(),
            "--output",
            idx.to_str().unwrap(),
        ]);
        let queries = texts("queries");
        let args: Vec<&str> = [
            "search",
            "-q",
            "--index",
            idx.to_str().unwrap(),
            "-k",
            "100",
            "--format",
            "jsonl",
        ]
        .into_iter()
        .chain(queries.iter().map(String::as_str).filter(|q| !q.is_empty()))
        .collect();
        let got = scores(&ok(&args));
        let nonempty: Vec<usize> = (0..queries.len())
            .filter(|&i| !queries[i].is_empty())
            .collect();
        for (qi, &q) in nonempty.iter().enumerate() {
            for d in 0..texts("documents").len() {
                let w = want["maxsim"][q][d].as_f64().unwrap();
                let g = got[&(qi, d)];
                assert!((g - w).abs() < 1e-5, "{name} q{q} d{d}: {g} vs {w}");
            }
        }
        // Another model's queries are refused.
        let o = embedkit(&[
            "search",
            "-q",
            "--index",
            idx.to_str().unwrap(),
            "--model",
            "all-MiniLM-L6-v2",
            "x",
        ]);
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("was built with model"));
    }
}
