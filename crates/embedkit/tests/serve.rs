//! `embedkit serve` end to end over loopback: the real binary with the real all-MiniLM-L6-v2, hit with curl,
//! the official `openai` Python package and a raw HTTP client; vectors compared with `embedkit embed`.

#[path = "support/python.rs"]
mod python;
#[path = "support/server.rs"]
mod server;
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
    let body = json!({"input": texts, "model": MODEL, "encoding_format": "float"}).to_string();
    let (code, out) = curl(&[
        &server.url("/v1/embeddings"),
        "-H",
        "content-type: application/json",
        "-d",
        &body,
    ]);
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
    let body = json!({"input": texts, "encoding_format": "base64"}).to_string();
    let (code, out) = curl(&[
        &server.url("/v1/embeddings"),
        "-H",
        "content-type: application/json",
        "-d",
        &body,
    ]);
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
    let body = json!({"inputs": texts}).to_string();
    let (code, out) = curl(&[
        &server.url("/embed"),
        "-H",
        "content-type: application/json",
        "-d",
        &body,
    ]);
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
    let body = json!({"input": &texts[..2], "dimensions": 128}).to_string();
    let (code, out) = curl(&[
        &server.url("/v1/embeddings"),
        "-H",
        "content-type: application/json",
        "-d",
        &body,
    ]);
    assert_eq!(code, 200, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let got: Vec<Vec<f32>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| floats(&d["embedding"]))
        .collect();
    assert_close(&got, &want128, "dimensions=128");

    // Token ids from /tokenize give the text's vector back through input: [[int]].
    let mut client = server.client();
    let r = client
        .post_json(
            "/tokenize",
            &json!({"inputs": [texts[0].clone(), texts[2].clone()]}),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let ids: Vec<Vec<u64>> = r
        .json()
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
        .collect();
    assert_eq!(ids[0].first(), Some(&101), "[CLS] first");
    let r = client
        .post_json("/v1/embeddings", &json!({"input": ids}))
        .unwrap();
    assert_eq!(r.status, 200);
    let got: Vec<Vec<f32>> = r.json().unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| floats(&d["embedding"]))
        .collect();
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
fn official_openai_client_gets_embed_vectors() {
    let Some(python) = python_with(&["openai"]) else {
        return;
    };
    let texts = texts();
    let want = reference(&texts, &[]);
    let want64 = reference(&texts[..3], &["--truncate-dim", "64"]);
    let server = serve(&["--api-key", "sk-test-key"]);
    let script = r#"
import json, sys, openai
base, texts = sys.argv[1], json.loads(sys.argv[2])
c = openai.OpenAI(base_url=base + "/v1", api_key="sk-test-key")
default = c.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # the client asks for base64
floats = c.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="float", user="u1")
short = c.embeddings.create(model="all-MiniLM-L6-v2", input=texts[:3], dimensions=64)
try:
    openai.OpenAI(base_url=base + "/v1", api_key="wrong").embeddings.create(model="all-MiniLM-L6-v2", input="x")
    auth = "no error"
except openai.AuthenticationError as e:
    auth = e.status_code
try:
    c.embeddings.create(model="no-such-model", input="x")
    missing = "no error"
except openai.NotFoundError as e:
    missing = e.body
print(json.dumps({
    "default": [d.embedding for d in default.data],
    "float": [d.embedding for d in floats.data],
    "short": [d.embedding for d in short.data],
    "tokens": default.usage.prompt_tokens,
    "auth": auth,
    "missing": missing,
    "models": [m.id for m in c.models.list()],
}))
"#;
    let out = Command::new(&python)
        .args([
            "-c",
            script,
            &format!("http://{}", server.addr),
            &serde_json::to_string(&texts).unwrap(),
        ])
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json from python");
    let rows = |k: &str| -> Vec<Vec<f32>> { v[k].as_array().unwrap().iter().map(floats).collect() };
    assert_close(&rows("default"), &want, "openai client default (base64)");
    assert_close(&rows("float"), &want, "openai client float");
    assert_close(&rows("short"), &want64, "openai client dimensions=64");
    assert!(v["tokens"].as_u64().unwrap() > 256);
    assert_eq!(v["auth"], 401);
    assert_eq!(v["missing"]["param"], "model", "{}", v["missing"]);
    assert_eq!(v["models"], json!([MODEL]));
}

#[test]
fn huggingface_hub_inference_client_gets_sentence_transformers_vectors() {
    let Some(python) = python_with(&["huggingface_hub", "numpy"]) else {
        return;
    };
    let g = golden();
    let server = serve(&["--api-key", "sk-test-key"]);
    // feature_extraction posts {"inputs": …, and any options at the top level} to the base URL itself, which
    // is TEI's root route, and reads the JSON answer as a float32 array.
    let script = r#"
import json, sys
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
base, texts = sys.argv[1], json.loads(sys.argv[2])
c = InferenceClient(base_url=base, api_key="sk-test-key")
many = c.feature_extraction(texts)
one = c.feature_extraction(texts[29])
raw = c.feature_extraction(texts[:4], normalize=False)
try:
    c.feature_extraction(texts[16], truncate=False)
    long = "no error"
except HfHubHTTPError as e:
    long = {"status": e.response.status_code, "message": str(e)}
try:
    InferenceClient(base_url=base, api_key="wrong").feature_extraction("x")
    auth = "no error"
except HfHubHTTPError as e:
    auth = e.response.status_code
print(json.dumps({
    "many": many.tolist(), "one": one.tolist(), "raw": raw.tolist(),
    "dtype": str(many.dtype), "long": long, "auth": auth,
}))
"#;
    let v = run_python(
        &python,
        script,
        &[
            format!("http://{}", server.addr),
            serde_json::to_string(&g.texts).unwrap(),
        ],
    );
    let rows = |k: &str| -> Vec<Vec<f32>> { v[k].as_array().unwrap().iter().map(floats).collect() };
    assert_eq!(v["dtype"], "float32");
    assert_cosine(
        &rows("many"),
        &g.embeddings,
        "InferenceClient.feature_extraction(texts)",
    );
    // One string comes back as one row, as TEI answers it.
    assert_cosine(
        &rows("one"),
        &g.embeddings[29..30],
        "feature_extraction(text)",
    );
    // normalize=False reaches the server: pooled vectors, sentence-transformers' lengths included.
    let raw = rows("raw");
    assert_cosine(
        &raw,
        &g.unnormalized[..4],
        "feature_extraction(normalize=False)",
    );
    for (i, (r, w)) in raw.iter().zip(&g.unnormalized).enumerate() {
        let len = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let (a, b) = (len(r), len(w));
        assert!(
            (a - b).abs() <= 1e-3 * b,
            "normalize=False row {i}: length {a}, sentence-transformers {b}"
        );
    }
    // Errors reach the client with the server's message.
    assert_eq!(v["long"]["status"], 422, "{}", v["long"]);
    assert!(
        v["long"]["message"]
            .as_str()
            .unwrap()
            .contains("256 tokens"),
        "{}",
        v["long"]
    );
    assert_eq!(v["auth"], 401);
}

#[test]
fn langchain_openai_embeddings_get_sentence_transformers_vectors() {
    let Some(python) = python_with(&["langchain_openai"]) else {
        return;
    };
    let g = golden();
    let server = serve(&["--api-key", "sk-test-key"]);
    // check_embedding_ctx_length=False makes LangChain send the texts. By default it tokenizes them with
    // tiktoken first and sends tiktoken's token ids, which are not this model's ids (the server answers 400,
    // see token_ids_outside_the_vocabulary_are_a_400_naming_input_id_and_size); tiktoken would also have to
    // download its encoding on first use, and nothing here reaches the internet.
    let script = r#"
import json, sys
from langchain_openai import OpenAIEmbeddings
base, texts = sys.argv[1], json.loads(sys.argv[2])
e = OpenAIEmbeddings(model="all-MiniLM-L6-v2", base_url=base + "/v1", api_key="sk-test-key",
                     check_embedding_ctx_length=False)
print(json.dumps({
    "documents": e.embed_documents(texts),
    "chunked": e.embed_documents(texts, chunk_size=7),
    "query": e.embed_query(texts[25]),
}))
"#;
    let v = run_python(
        &python,
        script,
        &[
            format!("http://{}", server.addr),
            serde_json::to_string(&g.texts).unwrap(),
        ],
    );
    let rows = |k: &str| -> Vec<Vec<f32>> { v[k].as_array().unwrap().iter().map(floats).collect() };
    assert_cosine(
        &rows("documents"),
        &g.embeddings,
        "OpenAIEmbeddings.embed_documents",
    );
    assert_cosine(
        &rows("chunked"),
        &g.embeddings,
        "embed_documents(chunk_size=7)",
    );
    assert_cosine(
        &[floats(&v["query"])],
        &g.embeddings[25..26],
        "OpenAIEmbeddings.embed_query",
    );
}

#[test]
fn token_ids_outside_the_vocabulary_are_a_400_naming_input_id_and_size() {
    let g = golden();
    let server = serve(&[]);
    let mut client = server.client();
    // The model's own ids, from /tokenize, for two golden texts.
    let picked = [g.texts[27].clone(), g.texts[29].clone()];
    let r = client
        .post_json("/tokenize", &json!({"inputs": picked}))
        .unwrap();
    assert_eq!(r.status, 200);
    let ids: Vec<Vec<u64>> = r
        .json()
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
        .collect();
    let want = [g.embeddings[27].clone(), g.embeddings[29].clone()];

    // 30522 is the first id all-MiniLM-L6-v2 has no row for; 100257 is tiktoken's <|endoftext|>, as
    // LangChain's OpenAIEmbeddings would send it by default.
    for (bad, batched) in [(30522u64, true), (100257, true), (100257, false)] {
        let mut list = ids[1].clone();
        list.insert(2, bad);
        let input = if batched {
            json!([ids[0], list])
        } else {
            json!(list)
        };
        for route in ["/v1/embeddings", "/embeddings"] {
            let r = client.post_json(route, &json!({"input": input})).unwrap();
            let (status, v) = status_and_json(&r);
            assert_eq!(status, 400, "{route} {v}");
            let e = &v["error"];
            assert_eq!(e["type"], "invalid_request_error", "{v}");
            assert_eq!(e["param"], "input", "{v}");
            let message = e["message"].as_str().unwrap();
            let which = if batched { "input[1]" } else { "input" };
            for part in [
                format!("{which} has token id {bad} at position 2"),
                "vocabulary of 30522 tokens".to_string(),
                MODEL.to_string(),
            ] {
                assert!(message.contains(&part), "{part:?} not in {message:?}");
            }
        }
    }
    // Numbers that are no token id at all name the input too, instead of serde's "no variant matched".
    for bad in [json!(-1), json!(2.5)] {
        let r = client
            .post_json("/v1/embeddings", &json!({"input": [[101, bad, 102]]}))
            .unwrap();
        let (status, v) = status_and_json(&r);
        assert_eq!(status, 400, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("input[0] has {bad} at position 1")),
            "{v}"
        );
    }
    // The server is still fine, and ids from /tokenize still give sentence-transformers' vectors.
    let r = client
        .post_json("/v1/embeddings", &json!({"input": ids, "model": MODEL}))
        .unwrap();
    let (status, v) = status_and_json(&r);
    assert_eq!(status, 200, "{v}");
    let got: Vec<Vec<f32>> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| floats(&d["embedding"]))
        .collect();
    assert_cosine(&got, &want, "token ids from /tokenize (raw client)");

    // The same through the official openai client: a BadRequestError carrying the message.
    let Some(python) = python_with(&["openai"]) else {
        return;
    };
    let script = r#"
import json, sys, openai
base, ids = sys.argv[1], json.loads(sys.argv[2])
c = openai.OpenAI(base_url=base + "/v1", api_key="unused")
good = c.embeddings.create(model="all-MiniLM-L6-v2", input=ids)
try:
    c.embeddings.create(model="all-MiniLM-L6-v2", input=[ids[0], ids[1][:2] + [100257] + ids[1][2:]])
    bad = "no error"
except openai.BadRequestError as e:
    bad = {"status": e.status_code, "body": e.body, "message": e.message}
print(json.dumps({"good": [d.embedding for d in good.data], "bad": bad}))
"#;
    let v = run_python(
        &python,
        script,
        &[
            format!("http://{}", server.addr),
            serde_json::to_string(&ids).unwrap(),
        ],
    );
    let good: Vec<Vec<f32>> = v["good"].as_array().unwrap().iter().map(floats).collect();
    assert_cosine(&good, &want, "token ids from /tokenize (openai client)");
    let bad = &v["bad"];
    assert_eq!(bad["status"], 400, "{bad}");
    assert_eq!(bad["body"]["param"], "input", "{bad}");
    let message = bad["message"].as_str().unwrap();
    assert!(
        message.contains("input[1] has token id 100257 at position 2")
            && message.contains("vocabulary of 30522"),
        "{message}"
    );
}

fn status_and_json(r: &embedkit_server::client::Response) -> (u16, Value) {
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or_else(|_| {
            panic!(
                "status {} body is not JSON: {:?}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )
        }),
    )
}

#[test]
fn limits_and_errors_are_json() {
    let server = serve(&[
        "--api-key",
        "secret",
        "--max-client-batch-size",
        "4",
        "--max-body-bytes",
        "10000",
    ]);
    let mut c = server.client();
    let auth = [
        ("content-type", "application/json"),
        ("authorization", "Bearer secret"),
    ];
    let post = |c: &mut Client, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        status_and_json(&c.request("POST", path, headers, body).unwrap())
    };
    // 401: no key, wrong key (same length and not), in OpenAI's shape on /v1.
    let (s, v) = post(
        &mut c,
        "/v1/embeddings",
        &[("content-type", "application/json")],
        br#"{"input":"x"}"#,
    );
    assert_eq!(s, 401);
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    for wrong in ["Bearer secreT", "Bearer s", "Basic secret"] {
        let (s, _) = post(
            &mut c,
            "/embed",
            &[
                ("content-type", "application/json"),
                ("authorization", wrong),
            ],
            br#"{"inputs":"x"}"#,
        );
        assert_eq!(s, 401, "{wrong}");
    }
    assert_eq!(c.get("/health").unwrap().status, 200, "health needs no key");
    // 200 with the key.
    let (s, _) = post(&mut c, "/embed", &auth, br#"{"inputs":"x"}"#);
    assert_eq!(s, 200);
    // 400 not JSON, 415 not declared JSON, 422 wrong shape (OpenAI shape with param where known).
    let (s, v) = post(&mut c, "/v1/embeddings", &auth, b"{\"input\": ");
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    let (s, _) = post(
        &mut c,
        "/embed",
        &[
            ("content-type", "text/plain"),
            ("authorization", "Bearer secret"),
        ],
        br#"{"inputs":"x"}"#,
    );
    assert_eq!(s, 415);
    let (s, v) = post(&mut c, "/v1/embeddings", &auth, br#"{"input": {"a": 1}}"#);
    assert_eq!(s, 422, "{v}");
    let (s, v) = post(
        &mut c,
        "/v1/embeddings",
        &auth,
        br#"{"input": "x", "encoding_format": "hex"}"#,
    );
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (422, Some("encoding_format"))
    );
    let (s, v) = post(
        &mut c,
        "/v1/embeddings",
        &auth,
        br#"{"input": "x", "dimensions": 1000}"#,
    );
    assert_eq!((s, v["error"]["param"].as_str()), (422, Some("dimensions")));
    let (s, v) = post(
        &mut c,
        "/v1/embeddings",
        &auth,
        br#"{"input": [[1, 2, 999999]]}"#,
    );
    // A token id past the vocabulary is a 400 (OpenAI's status for a bad input), not 422.
    assert_eq!(
        (s, v["error"]["param"].as_str()),
        (400, Some("input")),
        "{v}"
    );
    let (s, _) = post(&mut c, "/v1/embeddings", &auth, br#"{"input": []}"#);
    assert_eq!(s, 422);
    let (s, v) = post(
        &mut c,
        "/v1/embeddings",
        &auth,
        br#"{"input": "x", "model": "nope"}"#,
    );
    assert_eq!((s, v["error"]["param"].as_str()), (404, Some("model")));
    // 413: too many inputs, too many bytes.
    let (s, _) = post(
        &mut c,
        "/embed",
        &auth,
        br#"{"inputs": ["a","b","c","d","e"]}"#,
    );
    assert_eq!(s, 413);
    let big = json!({"inputs": "y".repeat(20_000)}).to_string();
    let (s, v) = post(&mut c, "/embed", &auth, big.as_bytes());
    assert_eq!(s, 413, "{v}");
    // Over-long input: truncated by default, 422 with truncate=false.
    let long = json!({"inputs": "word ".repeat(300), "truncate": false}).to_string();
    let (s, v) = post(&mut c, "/embed", &auth, long.as_bytes());
    assert_eq!(s, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("256 tokens"), "{v}");
    let ok = json!({"inputs": "word ".repeat(300)}).to_string();
    assert_eq!(post(&mut c, "/embed", &auth, ok.as_bytes()).0, 200);
    // Exactly at the limit is not "too long".
    let exact = json!({"inputs": "word ".repeat(254), "truncate": false}).to_string();
    assert_eq!(post(&mut c, "/embed", &auth, exact.as_bytes()).0, 200);
    // 404 and 405 are JSON too.
    assert_eq!(
        status_and_json(&c.request("GET", "/nope", &auth, b"").unwrap()).0,
        404
    );
    assert_eq!(
        status_and_json(&c.request("GET", "/embed", &auth, b"").unwrap()).0,
        405
    );
}

#[test]
fn full_queue_answers_429_with_retry_after() {
    // One request at a time: while a slow request holds the only slot, others are refused at once.
    let server = serve(&["--max-concurrent-requests", "1"]);
    let addr = server.addr;
    let slow = std::thread::spawn(move || {
        let texts: Vec<String> = (0..64)
            .map(|i| format!("{i} {}", "long text ".repeat(100)))
            .collect();
        Client::new(addr)
            .with_timeout(Duration::from_secs(300))
            .post_json("/embed", &json!({"inputs": texts}))
            .unwrap()
            .status
    });
    let mut c = server.client();
    wait_for_metric(&mut c, |l| l == "embedkit_queue_requests 1");
    let r = c
        .post_json("/v1/embeddings", &json!({"input": "x"}))
        .unwrap();
    assert_eq!(r.status, 429, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json().unwrap()["error"]["type"], "rate_limit_error");
    assert_eq!(slow.join().unwrap(), 200);
    assert_eq!(
        c.post_json("/v1/embeddings", &json!({"input": "x"}))
            .unwrap()
            .status,
        200
    );
}

#[test]
fn sigterm_drains_requests_in_flight() {
    let mut server = serve(&[]);
    let addr = server.addr;
    let texts: Vec<String> = (0..32)
        .map(|i| format!("{i} {}", "some text to embed ".repeat(20)))
        .collect();
    let n = texts.len();
    let inflight = std::thread::spawn(move || {
        Client::new(addr)
            .with_timeout(Duration::from_secs(300))
            .post_json("/embed", &json!({"inputs": texts}))
            .unwrap()
    });
    // Wait until the server has the request, then ask it to stop.
    let mut c = server.client();
    wait_for_metric(&mut c, |l| l == "embedkit_queue_requests 1");
    drop(c);
    let term = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let r = inflight.join().unwrap();
    assert_eq!(r.status, 200, "the request in flight was answered");
    assert_eq!(r.json().unwrap().as_array().unwrap().len(), n);
    let start = Instant::now();
    while server.alive() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "server did not exit after draining"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.wait().code(), Some(0));
}

/// Polls /metrics until a line satisfies `pred` (60 s at most).
fn wait_for_metric(c: &mut Client, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = String::from_utf8(c.get("/metrics").unwrap().body).unwrap();
        if m.lines().any(&pred) {
            return m;
        }
        assert!(Instant::now() < deadline, "the metric never showed: {m}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// xorshift64*: reproducible random bodies without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_json(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth > 4 { 5 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.below(2) == 1),
        2 => json!(rng.next() as i64),
        3 => json!(
            f64::from_bits(rng.next())
                .is_finite()
                .then(|| rng.below(1000) as f64 / 7.0)
        ),
        4 => {
            let n = rng.below(20) as usize;
            Value::String(
                (0..n)
                    .map(|_| char::from_u32(rng.below(0x3000) as u32).unwrap_or('?'))
                    .collect(),
            )
        }
        5 | 6 => Value::Array(
            (0..rng.below(5))
                .map(|_| random_json(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let keys = [
                "input",
                "inputs",
                "model",
                "dimensions",
                "encoding_format",
                "truncate",
                "normalize",
                "query",
                "texts",
                "precision",
            ];
            Value::Object(
                (0..rng.below(5))
                    .map(|_| {
                        (
                            keys[rng.below(keys.len() as u64) as usize].to_string(),
                            random_json(rng, depth + 1),
                        )
                    })
                    .collect(),
            )
        }
    }
}

fn fuzz_body(rng: &mut Rng) -> (Vec<u8>, &'static str) {
    let ct = [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=utf-8",
    ];
    let content_type = if rng.below(5) == 0 {
        ct[rng.below(4) as usize]
    } else {
        "application/json"
    };
    let body = match rng.below(9) {
        0 => random_json(rng, 0).to_string().into_bytes(),
        1 => {
            // Deep nesting, past serde_json's recursion limit.
            let d = 100 + rng.below(5000) as usize;
            format!("{{\"input\": {}1{}}}", "[".repeat(d), "]".repeat(d)).into_bytes()
        }
        2 => {
            // Invalid UTF-8 inside a string.
            let mut b = br#"{"input": ""#.to_vec();
            b.extend((0..rng.below(64)).map(|_| 0x80 | (rng.next() as u8 & 0x7f)));
            b.extend_from_slice(br#""}"#);
            b
        }
        3 => {
            // A huge string: over the body limit or a long text to truncate.
            let n = rng.below(300_000) as usize;
            json!({"inputs": "z".repeat(n)}).to_string().into_bytes()
        }
        4 => (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
        5 => json!({"input": [rng.next() as i64, -1, 1e30]}).to_string().into_bytes(),
        6 => json!({"input": "x", "dimensions": rng.next() as i64}).to_string().into_bytes(),
        7 => {
            let mut s = random_json(rng, 0).to_string().into_bytes();
            let cut = rng.below(s.len() as u64 + 1) as usize;
            s.truncate(cut);
            s
        }
        _ => json!({"inputs": {"source_sentence": random_json(rng, 3), "sentences": random_json(rng, 3)}})
            .to_string()
            .into_bytes(),
    };
    (body, content_type)
}

#[test]
fn fuzzed_bodies_never_crash_and_memory_stays_flat() {
    let mut server = serve(&["--max-body-bytes", "200000"]);
    let mut c = server.client();
    let routes = [
        "/v1/embeddings",
        "/embed",
        "/embed_all",
        "/similarity",
        "/rerank",
        "/tokenize",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let run = |c: &mut Client, rng: &mut Rng, n: usize| {
        let mut statuses = std::collections::BTreeMap::new();
        for _ in 0..n {
            let route = routes[rng.below(routes.len() as u64) as usize];
            let (body, ct) = fuzz_body(rng);
            let r = c
                .request("POST", route, &[("content-type", ct)], &body)
                .unwrap_or_else(|e| panic!("no answer on {route}: {e}"));
            assert!(
                r.status < 500,
                "{route} answered {} to {:?}",
                r.status,
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
            if r.status >= 400 {
                let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|_| {
                    panic!(
                        "{route} {} body is not JSON: {:?}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    )
                });
                assert!(v.get("error").is_some(), "{v}");
            }
            *statuses.entry(r.status).or_insert(0) += 1;
        }
        statuses
    };
    // Warm up (allocator pools, first batches), then measure across the bulk of the run.
    run(&mut c, &mut rng, 300);
    let before = rss_bytes(server.pid()).expect("RSS from /proc");
    let statuses = run(&mut c, &mut rng, 3000);
    let after = rss_bytes(server.pid()).expect("RSS from /proc");
    eprintln!(
        "fuzz statuses {statuses:?}; RSS {:.1} MB -> {:.1} MB",
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    assert!(server.alive(), "the server died");
    assert!(
        statuses.keys().any(|&s| s >= 400),
        "the fuzzer never hit an error path"
    );
    assert!(
        after < before + 64 * 1024 * 1024,
        "RSS grew from {before} to {after} bytes over the fuzz run"
    );
    assert_eq!(
        c.post_json("/embed", &json!({"inputs": "still alive"}))
            .unwrap()
            .status,
        200
    );
}

#[test]
fn a_client_that_disconnects_has_its_work_dropped() {
    let server = serve(&["--max-batch-tokens", "256"]);
    // Many texts that each fill a batch: the request takes many forward passes; close the socket at once.
    let texts: Vec<String> = (0..64)
        .map(|i| format!("{i} {}", "word ".repeat(300)))
        .collect();
    let body = json!({"inputs": texts}).to_string();
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    write!(
        s,
        "POST /embed HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
    let mut c = server.client();
    wait_for_metric(&mut c, |l| {
        l.starts_with("embedkit_cancelled_total ") && !l.ends_with(" 0")
    });
    // Whatever was in a forward pass finishes; nothing more of the request is computed.
    std::thread::sleep(Duration::from_secs(2));
    let m = wait_for_metric(&mut c, |l| l.starts_with("embedkit_tokens_total "));
    let tokens: u64 = m
        .lines()
        .find(|l| l.starts_with("embedkit_tokens_total "))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        tokens < 32 * 256,
        "{tokens} tokens computed for a client that left"
    );
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
