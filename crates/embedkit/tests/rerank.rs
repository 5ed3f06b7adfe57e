//! `embedkit rerank` end to end: MaxSim over real all-MiniLM-L6-v2 token vectors against
//! sentence-transformers' `util.maxsim` (tests/fixtures/maxsim), ColBERT models (tests/fixtures/colbert), and
//! bad input as one-line errors.

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

fn json(args: &[&str]) -> Vec<serde_json::Value> {
    let o = embedkit(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .expect("JSON output")
        .as_array()
        .expect("an array of hits")
        .clone()
}

fn read(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(rel)).expect("fixture")).expect("json")
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Scores by document index from rerank's JSON.
fn by_index(hits: &[serde_json::Value], n: usize) -> Vec<f64> {
    let mut s = vec![f64::NAN; n];
    for h in hits {
        s[h["index"].as_u64().unwrap() as usize] = h["score"].as_f64().unwrap();
    }
    s
}

#[test]
fn maxsim_on_minilm_token_vectors_matches_sentence_transformers() {
    let meta = read("maxsim/meta.json");
    let queries = strings(&meta["queries"]);
    let docs = strings(&meta["documents"]);
    let dir = tempfile::tempdir().unwrap();
    let docs_path = dir.path().join("docs.txt");
    std::fs::write(&docs_path, docs.join("\n") + "\n").unwrap();
    let docs_arg = docs_path.to_str().unwrap();
    for (qi, q) in queries.iter().enumerate() {
        // Raw token states (as `encode(output_value="token_embeddings")`): sums in the hundreds, so relative.
        let raw = by_index(
            &json(&[
                "rerank",
                "-q",
                "--mode",
                "maxsim",
                "--no-normalize",
                "--json",
                "--query",
                q,
                "--docs",
                docs_arg,
            ]),
            docs.len(),
        );
        // Normalized token vectors, the default for a plain model.
        let norm = by_index(
            &json(&[
                "rerank", "-q", "--mode", "maxsim", "--json", "--query", q, "--docs", docs_arg,
            ]),
            docs.len(),
        );
        for d in 0..docs.len() {
            let want_raw = meta["scores"]["raw"][qi][d].as_f64().unwrap();
            assert!(
                (raw[d] - want_raw).abs() / want_raw.abs() < 1e-5,
                "raw q{qi} d{d}: {} vs {want_raw}",
                raw[d]
            );
            let want = meta["scores"]["normalized"][qi][d].as_f64().unwrap();
            assert!(
                (norm[d] - want).abs() < 1e-4,
                "normalized q{qi} d{d}: {} vs {want}",
                norm[d]
            );
        }
    }
}

#[test]
fn colbert_models_rerank_by_maxsim_like_the_reference() {
    let expected = read("colbert/expected.json");
    for name in ["pylate", "stanford"] {
        let want = &expected[name];
        let docs: Vec<String> = want["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["text"].as_str().unwrap().to_string())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let docs_path = dir.path().join("docs.txt");
        std::fs::write(&docs_path, docs.join("\n") + "\n").unwrap();
        let model = fixtures().join("colbert").join(name);
        let query = want["queries"][0]["text"].as_str().unwrap();
        let hits = json(&[
            "rerank",
            "-q",
            "--json",
            "--model",
            model.to_str().unwrap(),
            "--query",
            query,
            "--docs",
            docs_path.to_str().unwrap(),
        ]);
        let got = by_index(&hits, docs.len());
        for (d, g) in got.iter().enumerate() {
            let w = want["maxsim"][0][d].as_f64().unwrap();
            assert!((g - w).abs() < 1e-5, "{name} d{d}: {g} vs {w}");
        }
        // Ranked best first.
        let ranked: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
        assert!(ranked.windows(2).all(|w| w[0] >= w[1]), "{ranked:?}");
    }
}

#[test]
fn top_k_and_errors() {
    let docs = fixtures().join("../../examples/docs.txt");
    let hits = json(&[
        "rerank",
        "-q",
        "--json",
        "--top-k",
        "2",
        "--query",
        "kubernetes setup",
        "--docs",
        docs.to_str().unwrap(),
    ]);
    assert_eq!(hits.len(), 2);
    assert!(hits[0]["text"].as_str().unwrap().contains("Kubernetes"));
    let colbert = fixtures().join("colbert/pylate");
    for (args, want) in [
        (
            vec![
                "rerank",
                "--model",
                colbert.to_str().unwrap(),
                "--mode",
                "cosine",
                "--query",
                "x",
                "--docs",
                docs.to_str().unwrap(),
            ],
            "ColBERT model",
        ),
        (
            vec!["rerank", "--query", "x", "--docs", "/nonexistent/docs.txt"],
            "/nonexistent/docs.txt",
        ),
    ] {
        let o = embedkit(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn embed_tokens_of_a_colbert_model_follow_the_query_and_document_roles() {
    let expected = read("colbert/expected.json");
    let model = fixtures().join("colbert/stanford");
    for (side, role) in [("queries", "query"), ("documents", "document")] {
        let want = &expected["stanford"][side][1];
        let o = embedkit(&[
            "embed",
            "-q",
            "--no-cache",
            "--tokens",
            "--model",
            model.to_str().unwrap(),
            "--prompt-name",
            role,
            want["text"].as_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(got["token_ids"], want["ids"], "{side}");
        assert_eq!(
            got["embeddings"].as_array().unwrap().len(),
            want["vectors"].as_array().unwrap().len()
        );
    }
    let o = embedkit(&[
        "embed",
        "-q",
        "--no-cache",
        "--model",
        model.to_str().unwrap(),
        "x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ColBERT model"));
}
