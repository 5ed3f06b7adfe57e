//! Real clients against `embedkit serve`: the official `openai` package, huggingface_hub's InferenceClient
//! and LangChain's OpenAIEmbeddings, each getting sentence-transformers' vectors (the golden fixture).

use super::*;

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
