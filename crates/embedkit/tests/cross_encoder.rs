//! Cross-encoders end to end with the real binary: `rerank --model CE --json` against sentence-transformers'
//! `CrossEncoder.rank`, `embed`/`models info` on a cross-encoder folder, the server's TEI `/rerank` and
//! `/predict` over loopback (curl), and `eval --rerank` on the project's retrieval set against
//! sentence-transformers' own reranking of the same first-stage run (tests/fixtures/cross_encoder, made by
//! tools/make_tiny_cross_encoders.py).

#[path = "support/server.rs"]
mod server;
use serde_json::{Value, json};
use server::Server;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn ce(name: &str) -> String {
    fixtures()
        .join("cross_encoder")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("cross_encoder/expected.json")).unwrap())
        .unwrap()
}

fn embedkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_embedkit"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the embedkit binary runs")
}

fn ok_json(args: &[&str]) -> Value {
    let o = embedkit(args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON output")
}

fn fails(args: &[&str]) -> String {
    let o = embedkit(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    err
}

#[test]
fn rerank_json_equals_cross_encoder_rank() {
    let all = expected();
    let dir = tempfile::tempdir().unwrap();
    for name in ["bert-msmarco", "bert-legacy", "xlmr-bge"] {
        let e = &all[name];
        let docs: Vec<&str> = e["rank_documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        let path = dir.path().join("docs.jsonl");
        let lines: Vec<String> = docs
            .iter()
            .map(|d| json!({"text": d}).to_string())
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let got = ok_json(&[
            "rerank",
            "-q",
            "--json",
            "--model",
            &ce(name),
            "--query",
            e["rank_query"].as_str().unwrap(),
            "--docs",
            path.to_str().unwrap(),
        ]);
        let got = got.as_array().unwrap();
        let want = e["rank"].as_array().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g["index"], w["corpus_id"], "{name}: order");
            let (gs, ws) = (g["score"].as_f64().unwrap(), w["score"].as_f64().unwrap());
            assert!((gs - ws).abs() < 1e-5, "{name}: {gs} vs {ws}");
        }
    }
    // --raw-scores: the logits (predict with Identity) of the first pair, a one-document ranking.
    let e = &all["bert-msmarco"];
    let path = dir.path().join("one.txt");
    std::fs::write(&path, format!("{}\n", e["pairs"][0][1].as_str().unwrap())).unwrap();
    let got = ok_json(&[
        "rerank",
        "-q",
        "--json",
        "--raw-scores",
        "--model",
        &ce("bert-msmarco"),
        "--query",
        e["pairs"][0][0].as_str().unwrap(),
        "--docs",
        path.to_str().unwrap(),
    ]);
    let raw = e["raw_scores"][0].as_f64().unwrap();
    assert!((got[0]["score"].as_f64().unwrap() - raw).abs() < 1e-5);
}

#[test]
fn a_cross_encoder_folder_is_not_a_bi_encoder() {
    let err = fails(&["embed", "-q", "--model", &ce("bert-msmarco"), "a text"]);
    assert!(
        err.contains("is a cross-encoder") && err.contains("BertForSequenceClassification"),
        "{err}"
    );
    assert!(err.contains("rerank"), "{err}");
    // rerank options for bi-encoders are refused, not ignored.
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("d.txt");
    std::fs::write(&docs, "a\nb\n").unwrap();
    let d = docs.to_str().unwrap();
    let err = fails(&[
        "rerank",
        "-q",
        "--model",
        &ce("xlmr-bge"),
        "--query",
        "q",
        "--docs",
        d,
        "--mode",
        "cosine",
    ]);
    assert!(err.contains("is a cross-encoder"), "{err}");
    let err = fails(&[
        "rerank",
        "-q",
        "--model",
        &ce("bert-nli"),
        "--query",
        "q",
        "--docs",
        d,
    ]);
    assert!(err.contains("3 labels"), "{err}");
}

#[test]
fn models_info_names_the_cross_encoder() {
    let o = embedkit(&["models", "info", &ce("bert-msmarco")]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for part in [
        "BertForSequenceClassification (BERT encoder)",
        "cross-encoder, 1 label, sigmoid activation",
        "pooler (dense + tanh on [CLS]) + classifier",
        "48 per pair",
    ] {
        assert!(text.contains(part), "{part:?} not in\n{text}");
    }
    let info = ok_json(&["models", "info", "--json", &ce("bert-nli")]);
    assert_eq!(info["kind"], "cross-encoder");
    assert_eq!(info["num_labels"], 3);
    assert_eq!(info["activation"], "identity");
    assert_eq!(
        info["labels"],
        json!(["contradiction", "entailment", "neutral"])
    );
    let info = ok_json(&["models", "info", "--json", &ce("xlmr-bge")]);
    assert_eq!(info["architecture"], "XLMRobertaForSequenceClassification");
    assert_eq!(info["encoder"], "XLM-RoBERTa");
    let info = ok_json(&["models", "info", "--json", &ce("bert-legacy")]);
    assert_eq!(info["activation"], "identity");
}

/// `embedkit serve --threads 2 --model M…` for each of `models` (see support/server.rs).
fn serve(models: &[&str]) -> Server {
    let mut args = vec!["--threads", "2"];
    for m in models {
        args.extend(["--model", m]);
    }
    Server::start(&args)
}

/// POSTs `body` to the server with curl; (status, JSON body).
fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let o = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["-d", &body.to_string()])
        .arg(server.url(path))
        .output()
        .expect("curl runs");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, status) = out.rsplit_once('\n').expect("status line");
    (
        status.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[test]
fn server_rerank_and_predict_use_the_cross_encoder() {
    let all = expected();
    let e = &all["bert-msmarco"];
    // The cross-encoder beside a bi-encoder: /rerank without a model name uses the cross-encoder.
    let bi = fixtures().join("tiny/bert-mean");
    let server = serve(&[&ce("bert-msmarco"), bi.to_str().unwrap(), &ce("bert-nli")]);
    let docs = e["rank_documents"].clone();
    let (status, got) = post(
        &server,
        "/rerank",
        &json!({"query": e["rank_query"], "texts": docs, "return_text": true}),
    );
    assert_eq!(status, 200, "{got}");
    let want = e["rank"].as_array().unwrap();
    for (g, w) in got.as_array().unwrap().iter().zip(want) {
        assert_eq!(g["index"], w["corpus_id"]);
        assert!((g["score"].as_f64().unwrap() - w["score"].as_f64().unwrap()).abs() < 1e-5);
        assert_eq!(g["text"], docs[g["index"].as_u64().unwrap() as usize]);
    }
    // raw_scores: the logits; no text unless asked.
    let (status, got) = post(
        &server,
        "/rerank",
        &json!({"query": e["pairs"][0][0], "texts": [e["pairs"][0][1]], "raw_scores": true}),
    );
    assert_eq!(status, 200, "{got}");
    assert!(
        (got[0]["score"].as_f64().unwrap() - e["raw_scores"][0].as_f64().unwrap()).abs() < 1e-5
    );
    assert!(got[0].get("text").is_none());
    // truncate: false refuses a pair past the limit.
    let long = "word ".repeat(100);
    let (status, got) = post(
        &server,
        "/rerank",
        &json!({"query": "q", "texts": ["short", long], "truncate": false}),
    );
    assert_eq!(status, 422, "{got}");
    assert!(got["error"].as_str().unwrap().contains("pair 1"), "{got}");
    // /predict: one pair → [{label, score}], a batch → a list of those.
    let (status, got) = post(&server, "/predict", &json!({"inputs": e["pairs"][2]}));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got[0]["label"], "LABEL_0");
    assert!((got[0]["score"].as_f64().unwrap() - e["scores"][2].as_f64().unwrap()).abs() < 1e-5);
    let nli = &all["bert-nli"];
    let (status, got) = post(
        &server,
        "/predict",
        &json!({"inputs": nli["pairs"].as_array().unwrap()[..3], "model": "bert-nli"}),
    );
    assert_eq!(status, 200, "{got}");
    let labels = ["contradiction", "entailment", "neutral"];
    for (i, row) in got.as_array().unwrap().iter().enumerate() {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), 3);
        assert!(
            row[0]["score"].as_f64() >= row[1]["score"].as_f64(),
            "best first"
        );
        for p in row {
            let l = labels.iter().position(|l| p["label"] == *l).unwrap();
            let want = nli["scores"][i][l].as_f64().unwrap();
            assert!((p["score"].as_f64().unwrap() - want).abs() < 1e-5);
        }
    }
    // Clear 4xx for what a cross-encoder cannot do, and for a bi-encoder asked to /predict.
    let (status, got) = post(&server, "/predict", &json!({"inputs": "one text"}));
    assert_eq!(status, 422, "{got}");
    assert!(got["error"].as_str().unwrap().contains("pairs"), "{got}");
    let (status, got) = post(
        &server,
        "/predict",
        &json!({"inputs": ["a", "b"], "model": "bert-mean"}),
    );
    assert_eq!(status, 422, "{got}");
    assert!(
        got["error"]
            .as_str()
            .unwrap()
            .contains("not a cross-encoder"),
        "{got}"
    );
    let (status, got) = post(
        &server,
        "/rerank",
        &json!({"query": "q", "texts": ["a"], "model": "bert-nli"}),
    );
    assert_eq!(status, 422, "{got}");
    assert!(got["error"].as_str().unwrap().contains("3 labels"), "{got}");
    // The bi-encoder is still served: /rerank naming it ranks by cosine, /embed works.
    let (status, got) = post(
        &server,
        "/rerank",
        &json!({"query": "q", "texts": ["a", "b"], "model": "bert-mean"}),
    );
    assert_eq!(status, 200, "{got}");
    let (status, got) = post(&server, "/embed", &json!({"inputs": "hello"}));
    assert_eq!(status, 200, "{got}");
    assert_eq!(got[0].as_array().unwrap().len(), 32);
}

#[test]
fn a_server_of_only_a_cross_encoder_answers_info_and_refuses_embed() {
    let server = serve(&[&ce("xlmr-bge")]);
    let (status, got) = post(&server, "/embed", &json!({"inputs": "hello"}));
    assert_eq!(status, 422, "{got}");
    assert!(
        got["error"].as_str().unwrap().contains("cross-encoders"),
        "{got}"
    );
    let o = Command::new("curl")
        .args(["-s", &format!("http://{}/info", server.addr)])
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        info["model_type"]["reranker"]["id2label"]["0"], "LABEL_0",
        "{info}"
    );
    assert_eq!(info["max_input_length"], 40);
}

#[test]
fn eval_rerank_changes_ndcg_as_sentence_transformers_reranking_does() {
    let reference: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("cross_encoder/rerank.json")).unwrap(),
    )
    .unwrap();
    let debian = fixtures().join("eval/debian-desc");
    let cache = tempfile::tempdir().unwrap();
    let report = ok_json(&[
        "eval",
        "-q",
        "--json",
        "--cache",
        cache.path().to_str().unwrap(),
        "-m",
        "all-MiniLM-L6-v2",
        "--task",
        &format!("retrieval:{}", debian.display()),
        "--rerank",
        &ce("bert-msmarco"),
        "--rerank-depth",
        "100",
    ]);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{report}");
    let first = results[0]["metrics"]["ndcg@10"].as_f64().unwrap();
    let second = &results[1]["metrics"];
    assert!(
        results[1]["model"].as_str().unwrap().contains("(top 100)"),
        "{}",
        results[1]["model"]
    );
    let reranked = second["ndcg@10"].as_f64().unwrap();
    let (want_first, want_reranked, want_change) = (
        reference["ndcg@10_first_stage"].as_f64().unwrap(),
        reference["ndcg@10_reranked"].as_f64().unwrap(),
        reference["ndcg@10_change"].as_f64().unwrap(),
    );
    eprintln!(
        "nDCG@10 first stage {first:.6} (ST {want_first:.6}), reranked {reranked:.6} (ST {want_reranked:.6}), \
         change {:.6} (ST {want_change:.6})",
        reranked - first
    );
    assert_eq!(second["first_stage_ndcg@10"].as_f64().unwrap(), first);
    assert!((first - want_first).abs() < 1e-4);
    assert!((reranked - want_reranked).abs() < 1e-4);
    assert!(((reranked - first) - want_change).abs() < 1e-4);
}
