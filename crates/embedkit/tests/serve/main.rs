//! `embedkit serve` end to end over loopback: the real binary with the real all-MiniLM-L6-v2, hit with curl,
//! the official `openai` Python package and a raw HTTP client; vectors compared with `embedkit embed`.

#[path = "../support/python.rs"]
mod python;
#[path = "../support/server.rs"]
mod server;

mod clients;
mod robustness;

use embedkit_server::client::{Client, rss_bytes};
use python::python_with;
use serde_json::{Value, json};
use server::Server;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const MODEL: &str = "all-MiniLM-L6-v2";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_embedkit")
}

/// `embedkit serve --model all-MiniLM-L6-v2 EXTRA…` (see support/server.rs).
fn serve(extra: &[&str]) -> Server {
    Server::start(&[&["--model", MODEL], extra].concat())
}

/// Texts with what tends to break things: unicode, empty after stripping, very long (truncated at 256).
fn texts() -> Vec<String> {
    vec![
        "The quick brown fox jumps over the lazy dog.".into(),
        "  Leading and trailing spaces  ".into(),
        "Ünïcödé, 日本語のテキスト, emoji 🚀".into(),
        "".into(),
        "a".into(),
        "word ".repeat(400),
        "Embeddings turn text into vectors that can be compared.".into(),
    ]
}

/// `embedkit embed` on the same texts: the reference every route must reproduce.
fn reference(texts: &[String], extra: &[&str]) -> Vec<Vec<f32>> {
    let out = Command::new(bin())
        .args([
            "embed",
            "--quiet",
            "--no-cache",
            "--model",
            MODEL,
            "--format",
            "jsonl",
        ])
        .args(extra)
        .args(texts)
        .output()
        .expect("embedkit embed runs");
    assert!(
        out.status.success(),
        "embed failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| floats(&serde_json::from_str::<Value>(l).expect("jsonl")["embedding"]))
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: dims of row {i}");
        let diff = g
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff <= 1e-6, "{what}: row {i} differs by {diff}");
    }
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs (apt-get install curl)");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.parse().expect("status"), body.to_string())
}

/// POSTs `body` as JSON to `url` with curl: the status and the body.
fn curl_post_json(url: &str, body: &Value) -> (u16, String) {
    curl(&[
        url,
        "-H",
        "content-type: application/json",
        "-d",
        &body.to_string(),
    ])
}

/// The float vectors of an OpenAI embeddings answer, `data[i].embedding` in order.
fn embedding_rows(answer: &Value) -> Vec<Vec<f32>> {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| floats(&d["embedding"]))
        .collect()
}

/// The model's token ids for `texts`, from the server's /tokenize.
fn tokenize_ids(client: &mut Client, texts: &[String]) -> Vec<Vec<u64>> {
    let r = client
        .post_json("/tokenize", &json!({ "inputs": texts }))
        .unwrap();
    assert_eq!(r.status, 200);
    r.json()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|toks| {
            toks.as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_u64().unwrap())
                .collect()
        })
        .collect()
}

fn decode_base64_f32(s: &str) -> Vec<f32> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn curl_routes_give_embed_vectors() {
    let texts = texts();
    let want = reference(&texts, &[]);
    let server = serve(&[]);
    let (code, out) = curl_post_json(
        &server.url("/v1/embeddings"),
        &json!({"input": texts, "model": MODEL, "encoding_format": "float"}),
    );
    assert_eq!(code, 200, "{out}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], MODEL);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 256);
    let got: Vec<Vec<f32>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            floats(&d["embedding"])
        })
        .collect();
    assert_close(&got, &want, "/v1/embeddings float");

    // base64 is little-endian float32, bit for bit the same numbers.
    let (code, out) = curl_post_json(
        &server.url("/v1/embeddings"),
        &json!({"input": texts, "encoding_format": "base64"}),
    );
    assert_eq!(code, 200, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let got: Vec<Vec<f32>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| decode_base64_f32(d["embedding"].as_str().unwrap()))
        .collect();
    assert_close(&got, &want, "/v1/embeddings base64");

    // TEI /embed, one string and a list.
    let (code, out) = curl_post_json(&server.url("/embed"), &json!({"inputs": texts}));
    assert_eq!(code, 200, "{out}");
    let got: Vec<Vec<f32>> = serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    assert_close(&got, &want, "/embed");

    // dimensions = Matryoshka truncation then normalization, as embed --truncate-dim does.
    let want128 = reference(&texts[..2], &["--truncate-dim", "128"]);
    let (code, out) = curl_post_json(
        &server.url("/v1/embeddings"),
        &json!({"input": &texts[..2], "dimensions": 128}),
    );
    assert_eq!(code, 200, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let got = embedding_rows(&v);
    assert_close(&got, &want128, "dimensions=128");

    // Token ids from /tokenize give the text's vector back through input: [[int]].
    let mut client = server.client();
    let ids = tokenize_ids(&mut client, &[texts[0].clone(), texts[2].clone()]);
    assert_eq!(ids[0].first(), Some(&101), "[CLS] first");
    let r = client
        .post_json("/v1/embeddings", &json!({"input": ids}))
        .unwrap();
    assert_eq!(r.status, 200);
    let got = embedding_rows(&r.json().unwrap());
    assert_close(&got, &[want[0].clone(), want[2].clone()], "token-id input");

    // Timing headers and a request id on every answer.
    let r = client.post_json("/embed", &json!({"inputs": "x"})).unwrap();
    for h in [
        "x-request-id",
        "x-tokenization-time",
        "x-queue-time",
        "x-inference-time",
        "x-compute-time",
    ] {
        assert!(r.header(h).is_some(), "missing {h}");
    }
    let r = client.get("/metrics").unwrap();
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("embedkit_inference_seconds_count"), "{text}");
    assert!(
        text.contains("embedkit_requests_total{route=\"/embed\",status=\"200\"}"),
        "{text}"
    );
    let r = client.get("/v1/models").unwrap();
    assert_eq!(r.json().unwrap()["data"][0]["id"], MODEL);
    let r = client.get("/openapi.json").unwrap();
    assert!(r.json().unwrap()["paths"]["/v1/embeddings"].is_object());
}

#[test]
fn requests_batched_together_give_their_own_vectors() {
    // Small token budget and many concurrent clients: texts of different requests share forward passes,
    // and every vector still equals embed's for that text.
    let texts = texts();
    let want = reference(&texts, &[]);
    let server = serve(&["--max-batch-tokens", "300"]);
    let addr = server.addr;
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let texts = texts.clone();
            let want = want.clone();
            std::thread::spawn(move || {
                let mut c = Client::new(addr).with_timeout(Duration::from_secs(120));
                for round in 0..6 {
                    let i = (t + round) % texts.len();
                    let j = (t * 3 + round) % texts.len();
                    let r = c
                        .post_json("/embed", &json!({"inputs": [texts[i], texts[j]]}))
                        .unwrap();
                    assert_eq!(r.status, 200);
                    let got: Vec<Vec<f32>> = r
                        .json()
                        .unwrap()
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(floats)
                        .collect();
                    assert_close(&got, &[want[i].clone(), want[j].clone()], "concurrent");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("client thread");
    }
    // Some forward pass held texts of more than one request (each request has 2 texts, so > 2 texts).
    let text = String::from_utf8(server.client().get("/metrics").unwrap().body).unwrap();
    let bucket = |le: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(&format!("embedkit_batch_texts_bucket{{le=\"{le}\"}}")))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    assert!(
        bucket("+Inf") > bucket("2"),
        "no forward pass mixed requests: {text}"
    );
}

/// The texts and vectors sentence-transformers computed for all-MiniLM-L6-v2 (tools/make_golden.py):
/// `embeddings` (normalized) and `unnormalized` (pooled, before Normalize).
struct Golden {
    texts: Vec<String>,
    embeddings: Vec<Vec<f32>>,
    unnormalized: Vec<Vec<f32>>,
}

fn golden() -> Golden {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/golden")
        .join(format!("{MODEL}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text).expect("golden JSON");
    let rows = |k: &str| -> Vec<Vec<f32>> { v[k].as_array().unwrap().iter().map(floats).collect() };
    Golden {
        texts: v["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect(),
        embeddings: rows("embeddings"),
        unnormalized: rows("unnormalized"),
    }
}

/// Runs `script` with `python`, the server's base URL and `args`; the script prints one JSON value.
fn run_python(python: &PathBuf, script: &str, args: &[String]) -> Value {
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        // No telemetry calls to the Hub. (HF_HUB_OFFLINE=1 would refuse the loopback server as well.)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "python printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Every row of `got` points the way sentence-transformers' row does (cosine ≥ 0.9999): the bar the golden
/// tests hold `embedkit embed` to, so a client that gets these vectors gets sentence-transformers' vectors.
fn assert_cosine(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: dims of row {i}");
        let dot: f64 = g.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|x| *x as f64 * *x as f64).sum::<f64>().sqrt();
        let cos = dot / (norm(g) * norm(w)).max(1e-30);
        assert!(
            cos >= 0.9999,
            "{what}: row {i} has cosine {cos} with sentence-transformers"
        );
    }
}

#[test]
fn embed_with_an_openai_model_pointed_at_serve_gives_the_local_vectors() {
    let server = serve(&[]);
    let texts = texts();
    let want = reference(&texts, &[]);
    let base = server.url("/v1");
    let model = format!("openai:{MODEL}");
    let out = Command::new(bin())
        .args([
            "embed",
            "--quiet",
            "--no-cache",
            "--model",
            &model,
            "--base-url",
            &base,
            "--format",
            "jsonl",
        ])
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .args(&texts)
        .output()
        .expect("embedkit embed runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Vec<f32>> = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| floats(&serde_json::from_str::<Value>(l).expect("jsonl")["embedding"]))
        .collect();
    // The provider sends "" as " " (OpenAI refuses empty strings); both strip to nothing, as the model does.
    assert_close(&got, &want, "openai provider via embedkit serve");
}
