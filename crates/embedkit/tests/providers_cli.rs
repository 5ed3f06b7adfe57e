//! The `embedkit` binary with API models (`--model openai:…`, `cohere:…`, `voyage:…`) against a local server
//! speaking the provider's documented wire format over real HTTP.

#[path = "../../embedkit-providers/tests/common/fake.rs"]
mod fake;

use fake::{Dialect, FakeServer, Fault, fake_vector};
use std::path::Path;
use std::process::{Command, Output};

const KEY: &str = "sk-cli-test-key-9876543210SECRET";

/// Runs embedkit with a private EMBEDKIT_HOME (its cache) and the given environment.
fn embedkit(home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_embedkit"));
    cmd.args(args)
        .env("EMBEDKIT_HOME", home)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("CO_API_KEY")
        .env_remove("VOYAGE_API_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("embedkit runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).expect("UTF-8")
}

fn rows(out: &Output) -> Vec<Vec<f32>> {
    text(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSONL row");
            v["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|x| x.as_f64().expect("a number") as f32)
                .collect()
        })
        .collect()
}

#[test]
fn embed_with_openai_model_and_base_url_then_from_the_cache() {
    let server = FakeServer::start(Dialect::OpenAi, 1536, Some(KEY));
    let home = tempfile::tempdir().unwrap();
    let base = server.base_url();
    let args = [
        "embed",
        "--model",
        "openai:text-embedding-3-small",
        "--base-url",
        &base,
        "a cat sat on the mat",
        "stock prices fell",
        "",
    ];
    let out = embedkit(home.path(), &[("OPENAI_API_KEY", KEY)], &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = rows(&out);
    assert_eq!(got.len(), 3);
    for (i, t) in ["a cat sat on the mat", "stock prices fell", " "]
        .iter()
        .enumerate()
    {
        assert_eq!(got[i], fake_vector(None, t, 1536), "row {i}");
    }
    assert_eq!(server.requests(), 1);
    let seen = &server.seen()[0];
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(seen.body["model"], "text-embedding-3-small");
    assert!(!text(&out.stderr).contains(KEY));

    // The same texts again: all from the cache, not one request.
    server.reset();
    let again = embedkit(home.path(), &[("OPENAI_API_KEY", KEY)], &args);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(rows(&again), got);
    assert_eq!(server.requests(), 0);

    // --truncate-dim becomes OpenAI's `dimensions`.
    let out = embedkit(
        home.path(),
        &[("OPENAI_API_KEY", KEY), ("OPENAI_BASE_URL", &base)],
        &[
            "embed",
            "--no-cache",
            "--model",
            "openai:text-embedding-3-small",
            "--truncate-dim",
            "64",
            "x",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(rows(&out)[0].len(), 64);
    assert_eq!(server.seen()[0].body["dimensions"], 64);
}

#[test]
fn api_errors_are_one_line_without_the_key() {
    let server = FakeServer::start(Dialect::OpenAi, 8, Some(KEY));
    let home = tempfile::tempdir().unwrap();
    let base = server.base_url();
    let wrong = format!("{KEY}-wrong");
    let out = embedkit(
        home.path(),
        &[("OPENAI_API_KEY", &wrong)],
        &[
            "embed",
            "--model",
            "openai:text-embedding-3-small",
            "--base-url",
            &base,
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("openai: HTTP 401 after 1 attempt: Incorrect API key provided (401)"),
        "{err}"
    );
    assert!(!err.contains(KEY), "{err}");
    assert_eq!(server.requests(), 1);

    // Retries run out: --max-retries 1 means two attempts, and the error says so.
    server.reset();
    server.inject([Fault::Status(503, vec![]), Fault::Status(503, vec![])]);
    let out = embedkit(
        home.path(),
        &[("OPENAI_API_KEY", KEY)],
        &[
            "embed",
            "--model",
            "openai:text-embedding-3-small",
            "--base-url",
            &base,
            "--max-retries",
            "1",
            "x",
        ],
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("openai: HTTP 503 after 2 attempts: injected failure (503)"),
        "{err}"
    );
    assert_eq!(server.requests(), 2);

    // The vendor's endpoint without a key fails before any request, naming the variable.
    let out = embedkit(
        home.path(),
        &[],
        &["embed", "--model", "cohere:embed-english-v3.0", "x"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cohere: no API key; set CO_API_KEY or COHERE_API_KEY"),
        "{err}"
    );
}

#[test]
fn bench_reports_requests_tokens_and_cost() {
    let server = FakeServer::start(Dialect::Voyage, 1536, Some(KEY));
    let home = tempfile::tempdir().unwrap();
    let corpus = home.path().join("corpus.txt");
    let lines: Vec<String> = (0..40)
        .map(|i| format!("sentence number {i} about things"))
        .collect();
    std::fs::write(&corpus, lines.join("\n")).unwrap();
    let base = server.base_url();
    let corpus = corpus.to_str().unwrap();
    let common = [
        "bench",
        "--model",
        "voyage:voyage-large-2",
        "--base-url",
        &base,
        "--input",
        corpus,
        "--latency-runs",
        "3",
        "--no-sweeps",
        "--batch-size",
        "16",
    ];
    let out = embedkit(
        home.path(),
        &[("VOYAGE_API_KEY", KEY)],
        &[&common[..], &["--json"]].concat(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let usage = &v[0]["usage"];
    // Warm-up (1 request of 16) + 2 passes × 3 requests + 3 latency requests.
    assert_eq!(usage["requests"], 10);
    assert_eq!(
        usage["requests"].as_u64().unwrap() as usize,
        server.requests()
    );
    let tokens = usage["input_tokens"].as_u64().unwrap();
    assert!(tokens > 0);
    let cost = usage["cost_usd"].as_f64().unwrap();
    assert!((cost - tokens as f64 * 0.12 / 1e6).abs() < 1e-12, "{cost}");
    assert_eq!(v[0]["backend"], "api (voyage)");

    let out = embedkit(home.path(), &[("VOYAGE_API_KEY", KEY)], &common);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("| model | requests | input tokens | cost USD |"),
        "{table}"
    );
    assert!(table.contains("| voyage:voyage-large-2 | 10 |"), "{table}");
}

#[test]
fn index_build_search_and_similarity_with_an_api_model() {
    let server = FakeServer::start(Dialect::Cohere, 16, None);
    let home = tempfile::tempdir().unwrap();
    let docs = home.path().join("docs.txt");
    std::fs::write(
        &docs,
        "kubernetes setup guide\nbaking bread at home\nstock market news\n",
    )
    .unwrap();
    let index = home.path().join("docs.idx");
    let base = server.base_url();
    let out = embedkit(
        home.path(),
        &[("CO_API_URL", &base)],
        &[
            "index",
            "build",
            "--model",
            "cohere:my-model",
            "--input",
            docs.to_str().unwrap(),
            "--output",
            index.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The query is the document text itself: with the same input type it is the same vector, so it ranks first.
    let out = embedkit(
        home.path(),
        &[("CO_API_URL", &base)],
        &[
            "search",
            "--index",
            index.to_str().unwrap(),
            "--top-k",
            "1",
            "--format",
            "jsonl",
            "baking bread at home",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hit: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let score = hit["score"].as_f64().unwrap();
    assert!((score - 1.0).abs() < 1e-5, "{hit}");
    // search embeds with the documents' input type unless --prompt-name says otherwise.
    assert_eq!(
        server.seen().last().unwrap().body["input_type"],
        "search_document"
    );

    let out = embedkit(
        home.path(),
        &[],
        &[
            "similarity",
            "--model",
            "cohere:my-model",
            "--base-url",
            &base,
            "--json",
            "a",
            "b",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metric"], "cosine");
    let a = fake_vector(Some("search_document"), "a", 16);
    let b = fake_vector(Some("search_document"), "b", 16);
    let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let got = v["matrix"][0][1].as_f64().unwrap() as f32;
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}

#[test]
fn models_info_for_api_models_needs_no_key() {
    let home = tempfile::tempdir().unwrap();
    let out = embedkit(
        home.path(),
        &[],
        &["models", "info", "openai:text-embedding-ada-002", "--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dims"], 1536);
    assert_eq!(v["max_inputs_per_request"], 2048);
    assert_eq!(v["max_tokens_per_request"], 300_000);
    assert_eq!(v["price_usd_per_mtok"], 0.10);
    let out = embedkit(home.path(), &[], &["models", "info", "cohere:embed-v4.0"]);
    let t = text(&out.stdout);
    assert!(t.contains("inputs/request  96"), "{t}");
    assert!(
        t.contains("[256, 512, 1024, 1536] (output_dimension)"),
        "{t}"
    );
}

/// A real local model behind the OpenAI wire format (what `embedkit serve` will be): `embed --model openai:NAME
/// --base-url …` gives the vectors `embed --model FOLDER` gives.
#[test]
fn openai_client_returns_a_served_local_models_vectors() {
    use embedkit_core::{Embedder, EncodeOptions};
    use embedkit_cpu::{CpuBackend, CpuOptions};
    use embedkit_model::{Backend, LocalEmbedder};
    use std::sync::Arc;
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tiny/bert-mean");
    let dir_str = dir.to_str().unwrap().to_string();
    let local = LocalEmbedder::load("bert-mean", &dir, |config, weights| {
        Ok(Box::new(CpuBackend::new(config, weights, &CpuOptions::default())?) as Box<dyn Backend>)
    })
    .unwrap();
    let dims = local.dims();
    let local = Arc::new(local);
    let served = local.clone();
    let server = FakeServer::start_with(
        Dialect::OpenAi,
        dims,
        None,
        Some(Arc::new(move |_, texts: &[&str]| {
            let e = served.embed(texts, &EncodeOptions::default()).unwrap();
            e.iter().map(<[f32]>::to_vec).collect()
        })),
    );
    let home = tempfile::tempdir().unwrap();
    let base = server.base_url();
    let texts = [
        "a cat sat on the mat",
        "Ünïcödé and emoji 🎉",
        "stock prices fell sharply today",
    ];
    let via_api = embedkit(
        home.path(),
        &[],
        &[
            &[
                "embed",
                "--no-cache",
                "--model",
                "openai:bert-mean",
                "--base-url",
                &base,
            ][..],
            &texts[..],
        ]
        .concat(),
    );
    assert!(via_api.status.success(), "{}", text(&via_api.stderr));
    let direct = embedkit(
        home.path(),
        &[],
        &[
            &["embed", "--no-cache", "--model", &dir_str][..],
            &texts[..],
        ]
        .concat(),
    );
    assert!(direct.status.success(), "{}", text(&direct.stderr));
    let (a, b) = (rows(&via_api), rows(&direct));
    assert_eq!(a.len(), 3);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.len(), y.len());
        let diff = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(diff <= 1e-6, "max |Δ| {diff}");
    }
    // One probe (the name is the server's, so dimensions are asked) and one embedding request.
    assert_eq!(server.requests(), 2);
}

#[test]
fn eval_with_an_api_model_scores_its_vectors_and_reports_usage() {
    let server = FakeServer::start(Dialect::OpenAi, 1536, Some(KEY));
    let home = tempfile::tempdir().unwrap();
    let pairs = [
        ("A man plays a guitar.", "Someone plays music.", 4.2),
        ("A cat sleeps.", "The stock market fell.", 0.1),
        ("A dog runs.", "A puppy is running.", 4.8),
        ("Rain is falling.", "It is raining.", 4.9),
        ("He cooks pasta.", "A chef prepares noodles.", 3.7),
        ("The car is red.", "Bananas are yellow.", 0.3),
    ];
    let file = home.path().join("pairs.tsv");
    let body: String = pairs
        .iter()
        .map(|(a, b, s)| format!("{a}\t{b}\t{s}\n"))
        .collect();
    std::fs::write(&file, body).unwrap();
    let base = server.base_url();
    let task = format!("sts:{}", file.display());
    let args = [
        "eval",
        "-q",
        "--json",
        "-m",
        "openai:text-embedding-3-small",
        "--base-url",
        &base,
        "--task",
        &task,
    ];
    let out = embedkit(home.path(), &[("OPENAI_API_KEY", KEY)], &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // The same statistic computed here from the vectors the server gave out.
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum();
        let n = |v: &[f32]| v.iter().map(|x| f64::from(x * x)).sum::<f64>().sqrt();
        dot / (n(a) * n(b))
    };
    let predicted: Vec<f64> = pairs
        .iter()
        .map(|(a, b, _)| cos(&fake_vector(None, a, 1536), &fake_vector(None, b, 1536)))
        .collect();
    let gold: Vec<f64> = pairs.iter().map(|p| p.2).collect();
    let want = embedkit_eval::stats::spearman(&predicted, &gold);
    let got = report["results"][0]["metrics"]["spearman"]
        .as_f64()
        .unwrap();
    assert!((got - want).abs() < 1e-9, "spearman {got} vs {want}");

    let usage = &report["models"][0]["usage"];
    assert!(usage["requests"].as_u64().unwrap() >= 1, "{report}");
    assert!(usage["input_tokens"].as_u64().unwrap() > 0, "{report}");
    assert!(usage["cost_usd"].as_f64().unwrap() > 0.0, "{report}");
    let md_run = embedkit(
        home.path(),
        &[("OPENAI_API_KEY", KEY)],
        &args
            .iter()
            .copied()
            .filter(|a| *a != "--json")
            .collect::<Vec<_>>(),
    );
    // The second run is served from the cache: no new request, and the cost column says what was paid now.
    assert!(md_run.status.success(), "{}", text(&md_run.stderr));
    assert_eq!(
        server.requests(),
        usage["requests"].as_u64().unwrap() as usize
    );
    assert!(text(&md_run.stdout).contains("| openai:text-embedding-3-small |"));
}
