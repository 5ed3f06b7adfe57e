//! What a server must survive: out-of-vocabulary token ids, limits, a full queue, SIGTERM with requests in
//! flight, fuzzed bodies and clients that leave, each answered with a JSON error and never a crash.

use super::*;

#[test]
fn token_ids_outside_the_vocabulary_are_a_400_naming_input_id_and_size() {
    let g = golden();
    let server = serve(&[]);
    let mut client = server.client();
    // The model's own ids, from /tokenize, for two golden texts.
    let picked = [g.texts[27].clone(), g.texts[29].clone()];
    let ids = tokenize_ids(&mut client, &picked);
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
    let got = embedding_rows(&v);
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
