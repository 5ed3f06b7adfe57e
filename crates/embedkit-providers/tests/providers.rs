//! The API embedders against local servers speaking each provider's documented wire format, over real HTTP:
//! batching to limits, order, retries and their exact counts, final errors, keys, usage and cost, the cache.

mod common;

use common::fake::{Dialect, FakeServer, Fault, fake_tokens, fake_vector};
use embedkit_core::{EmbedError, Embedder, EncodeOptions};
use embedkit_providers::{ApiEmbedder, ProviderConfig, ProviderError, RetryPolicy, Secret};
use std::time::{Duration, Instant};

const KEY: &str = "sk-test-0123456789abcdefSECRET";

fn config(server: &FakeServer, key: Option<&str>) -> ProviderConfig {
    ProviderConfig {
        base_url: Some(server.base_url()),
        api_key: key.map(Secret::new),
        // Generous: CI machines are loaded; tests of timeouts set their own.
        timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(10),
            max_retry_after: Duration::from_secs(5),
        },
        concurrency: 4,
        ..ProviderConfig::default()
    }
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("text number {i} with {} words", i % 7))
        .collect()
}

fn refs(t: &[String]) -> Vec<&str> {
    t.iter().map(String::as_str).collect()
}

/// Every row is the server's vector for its own text: nothing lost, duplicated or out of order.
fn assert_rows(
    e: &embedkit_core::Embeddings,
    texts: &[&str],
    input_type: Option<&str>,
    dims: usize,
) {
    assert_eq!(e.rows(), texts.len());
    assert_eq!(e.dims(), dims);
    for (i, t) in texts.iter().enumerate() {
        let want = fake_vector(input_type, t, dims);
        assert_eq!(e.row(i), &want[..], "row {i} ({t:?})");
    }
}

/// The chain of an `EmbedError` down to the provider's error.
fn provider_error(e: &EmbedError) -> &ProviderError {
    match e {
        EmbedError::Backend(b) => b
            .downcast_ref::<ProviderError>()
            .expect("a provider error inside"),
        other => panic!("expected a backend error, got {other:?}"),
    }
}

fn opts() -> EncodeOptions {
    EncodeOptions::default()
}

#[test]
fn openai_batches_by_limit_in_parallel_and_sorts_by_index() {
    let server = FakeServer::start(Dialect::OpenAi, 8, Some(KEY));
    server.shuffle(true);
    // A name the table does not know (an OpenAI-compatible server's model): one probe learns the dimensions.
    let e = ApiEmbedder::new("openai:fake-model", &config(&server, Some(KEY))).unwrap();
    assert_eq!(e.dims(), 8);
    assert_eq!(server.requests(), 1);
    server.reset();
    let before = e.usage().unwrap();

    let t = texts(5000);
    let r = refs(&t);
    let out = e.embed(&r, &opts()).unwrap();
    assert_rows(&out, &r, None, 8);
    // 2048 inputs per request: 2048 + 2048 + 904.
    let seen = server.seen();
    let mut sizes: Vec<usize> = seen.iter().map(|s| s.texts().len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![904, 2048, 2048]);
    for s in &seen {
        assert_eq!(
            s.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(s.body["model"], "fake-model");
        assert_eq!(s.body["encoding_format"], "float");
        assert!(s.body.get("dimensions").is_none());
    }
    let u = e.usage().unwrap();
    assert_eq!(u.requests - before.requests, 3);
    let tokens: u64 = r.iter().map(|t| fake_tokens(t)).sum();
    assert_eq!(u.input_tokens - before.input_tokens, tokens);
    assert_eq!(u.cost_usd, None, "no price for an unknown model");

    // --batch-size caps the inputs per request.
    server.reset();
    let small = EncodeOptions {
        batch_size: Some(100),
        ..opts()
    };
    let out = e.embed(&r[..950], &small).unwrap();
    assert_rows(&out, &r[..950], None, 8);
    assert_eq!(server.requests(), 10);
}

#[test]
fn price_table_gives_cost() {
    let server = FakeServer::start(Dialect::OpenAi, 1536, Some(KEY));
    let e = ApiEmbedder::new("openai:text-embedding-ada-002", &config(&server, Some(KEY))).unwrap();
    assert_eq!(server.requests(), 0, "a known model needs no probe");
    let t = texts(10);
    e.embed(&refs(&t), &opts()).unwrap();
    let u = e.usage().unwrap();
    let tokens: u64 = t.iter().map(|t| fake_tokens(t)).sum();
    assert_eq!((u.requests, u.input_tokens), (1, tokens));
    // ada-002: $0.10 per million tokens ($0.0001 / 1K).
    let cost = u.cost_usd.unwrap();
    assert!((cost - tokens as f64 * 0.10 / 1e6).abs() < 1e-15, "{cost}");
}

#[test]
fn request_token_limit_splits_batches() {
    // voyage-large-2: 120K tokens per request; 300 texts of 1,000 bytes are bounded at 1,001 tokens each.
    let server = FakeServer::start(Dialect::Voyage, 1536, Some(KEY));
    let e = ApiEmbedder::new("voyage:voyage-large-2", &config(&server, Some(KEY))).unwrap();
    let t: Vec<String> = (0..300)
        .map(|i| format!("{i:04}{}", "x".repeat(996)))
        .collect();
    let r = refs(&t);
    let out = e.embed(&r, &opts()).unwrap();
    assert_rows(&out, &r, None, 1536);
    let mut sizes: Vec<usize> = server.seen().iter().map(|s| s.texts().len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![62, 119, 119]);
}

#[test]
fn transient_failures_are_retried_exactly() {
    let server = FakeServer::start(Dialect::OpenAi, 8, Some(KEY));
    let mut cfg = config(&server, Some(KEY));
    cfg.dims = Some(8);
    cfg.timeout = Duration::from_millis(1000);
    cfg.retry.max_retries = 6;
    let e = ApiEmbedder::new("openai:fake", &cfg).unwrap();
    server.inject([
        Fault::Status(429, vec![("Retry-After".into(), "0".into())]),
        Fault::Status(500, vec![]),
        Fault::Status(503, vec![]),
        Fault::Sleep(Duration::from_millis(3000)),
        Fault::Truncate,
        Fault::Drop,
    ]);
    let t = texts(20);
    let r = refs(&t);
    let out = e.embed(&r, &opts()).unwrap();
    assert_rows(&out, &r, None, 8);
    // Six failures, then the answer: seven attempts, all counted as requests.
    assert_eq!(server.requests(), 7);
    assert_eq!(e.usage().unwrap().requests, 7);
    // Only the answered request is billed.
    let tokens: u64 = r.iter().map(|t| fake_tokens(t)).sum();
    assert_eq!(e.usage().unwrap().input_tokens, tokens);
}

#[test]
fn retry_after_is_honoured_in_seconds_http_date_and_ms() {
    let server = FakeServer::start(Dialect::Cohere, 4, Some(KEY));
    let mut cfg = config(&server, Some(KEY));
    cfg.dims = Some(4);
    let e = ApiEmbedder::new("cohere:fake", &cfg).unwrap();
    let t = ["one", "two"];

    server.inject([Fault::Status(429, vec![("Retry-After".into(), "1".into())])]);
    let start = Instant::now();
    e.embed(&t, &opts()).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.requests(), 2);

    // An HTTP-date two seconds ahead (whole seconds, so at least one second away).
    let at = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2));
    server.inject([Fault::Status(503, vec![("Retry-After".into(), at)])]);
    let start = Instant::now();
    e.embed(&t, &opts()).unwrap();
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(server.requests(), 4);

    // retry-after-ms wins over Retry-After.
    server.inject([Fault::Status(
        429,
        vec![
            ("retry-after-ms".into(), "300".into()),
            ("Retry-After".into(), "30".into()),
        ],
    )]);
    let start = Instant::now();
    e.embed(&t, &opts()).unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(server.requests(), 6);
}

#[test]
fn retries_run_out_with_a_clear_error() {
    let server = FakeServer::start(Dialect::OpenAi, 8, Some(KEY));
    let mut cfg = config(&server, Some(KEY));
    cfg.dims = Some(8);
    cfg.retry.max_retries = 2;
    let e = ApiEmbedder::new("openai:fake", &cfg).unwrap();
    server.inject((0..5).map(|_| Fault::Status(503, vec![])));
    let err = e.embed(&["a"], &opts()).unwrap_err();
    assert_eq!(server.requests(), 3);
    match provider_error(&err) {
        ProviderError::Http {
            provider,
            status,
            message,
            attempts,
        } => {
            assert_eq!((*provider, *status, *attempts), ("openai", 503, 3));
            assert_eq!(message, "injected failure (503)");
        }
        other => panic!("{other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("openai: HTTP 503 after 3 attempts: injected failure (503)"),
        "{text}"
    );

    // Timeouts every time: a transport error naming the provider and the timeout.
    server.reset();
    cfg.timeout = Duration::from_millis(200);
    let e = ApiEmbedder::new("openai:fake", &cfg).unwrap();
    server.inject((0..3).map(|_| Fault::Sleep(Duration::from_millis(600))));
    let err = e.embed(&["a"], &opts()).unwrap_err();
    assert_eq!(server.requests(), 3);
    let text = err.to_string();
    assert!(
        text.contains("openai: request failed after 3 attempts"),
        "{text}"
    );
    assert!(text.to_lowercase().contains("timeout"), "{text}");
}

#[test]
fn client_errors_are_not_retried() {
    let server = FakeServer::start(Dialect::Voyage, 4, Some(KEY));
    let mut cfg = config(&server, Some(KEY));
    cfg.dims = Some(4);
    let e = ApiEmbedder::new("voyage:fake", &cfg).unwrap();
    for status in [400, 401, 403, 404, 422] {
        server.reset();
        server.inject([Fault::Status(
            status,
            vec![("Retry-After".into(), "0".into())],
        )]);
        let err = e.embed(&["a"], &opts()).unwrap_err();
        assert_eq!(server.requests(), 1, "status {status} was retried");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "voyage: HTTP {status} after 1 attempt: injected failure ({status})"
            )),
            "{text}"
        );
    }
}

#[test]
fn bad_bodies_fail_clearly_without_retry() {
    let server = FakeServer::start(Dialect::OpenAi, 8, Some(KEY));
    let mut cfg = config(&server, Some(KEY));
    cfg.dims = Some(8);
    let e = ApiEmbedder::new("openai:fake", &cfg).unwrap();
    server.inject([Fault::Malformed]);
    let err = e.embed(&["a", "b"], &opts()).unwrap_err().to_string();
    assert!(
        err.contains("openai: unexpected response: malformed JSON"),
        "{err}"
    );
    assert_eq!(server.requests(), 1);

    server.reset();
    server.inject([Fault::MissingVector]);
    let err = e.embed(&["a", "b"], &opts()).unwrap_err().to_string();
    assert!(
        err.contains("openai: unexpected response: 1 vectors for 2 inputs"),
        "{err}"
    );
    assert_eq!(server.requests(), 1);

    // Cohere's array form is checked the same way.
    let server = FakeServer::start(Dialect::Cohere, 4, Some(KEY));
    let mut cfg = config(&server, Some(KEY));
    cfg.dims = Some(4);
    let e = ApiEmbedder::new("cohere:fake", &cfg).unwrap();
    server.inject([Fault::MissingVector]);
    let err = e.embed(&["a", "b", "c"], &opts()).unwrap_err().to_string();
    assert!(
        err.contains("cohere: unexpected response: 2 vectors for 3 inputs"),
        "{err}"
    );

    // Vectors of another width than the model's.
    let server = FakeServer::start(Dialect::OpenAi, 8, Some(KEY));
    let mut cfg = config(&server, Some(KEY));
    cfg.dims = Some(16);
    let e = ApiEmbedder::new("openai:fake", &cfg).unwrap();
    let err = e.embed(&["a"], &opts()).unwrap_err().to_string();
    assert!(
        err.contains("vector 0 has 8 dimensions, expected 16"),
        "{err}"
    );
}

#[test]
fn parallel_batches_with_faults_lose_and_duplicate_nothing() {
    let server = FakeServer::start(Dialect::OpenAi, 8, Some(KEY));
    server.shuffle(true);
    let mut cfg = config(&server, Some(KEY));
    cfg.dims = Some(8);
    let e = ApiEmbedder::new("openai:fake", &cfg).unwrap();
    server.inject([
        Fault::Status(429, vec![("Retry-After".into(), "0".into())]),
        Fault::Status(500, vec![]),
        Fault::Truncate,
        Fault::Status(502, vec![]),
        Fault::Drop,
    ]);
    let t = texts(1000);
    let r = refs(&t);
    let o = EncodeOptions {
        batch_size: Some(50),
        ..opts()
    };
    let out = e.embed(&r, &o).unwrap();
    assert_rows(&out, &r, None, 8);
    // 20 batches + 5 failed attempts.
    assert_eq!(server.requests(), 25);
    // Billed tokens: each text exactly once.
    let tokens: u64 = r.iter().map(|t| fake_tokens(t)).sum();
    assert_eq!(e.usage().unwrap().input_tokens, tokens);
}

#[test]
fn per_call_usage_through_the_hook() {
    use std::sync::{Arc, Mutex};
    let server = FakeServer::start(Dialect::OpenAi, 3072, Some(KEY));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let sink = calls.clone();
    let e = ApiEmbedder::new("openai:text-embedding-3-large", &config(&server, Some(KEY)))
        .unwrap()
        .with_call_hook(Arc::new(move |c| sink.lock().unwrap().push(c.clone())));
    server.inject([Fault::Status(500, vec![])]);
    let t = texts(25);
    let r = refs(&t);
    let o = EncodeOptions {
        batch_size: Some(10),
        ..opts()
    };
    e.embed(&r, &o).unwrap();
    let mut calls = calls.lock().unwrap().clone();
    calls.sort_by_key(|c| c.texts);
    assert_eq!(
        calls.iter().map(|c| c.texts).collect::<Vec<_>>(),
        vec![5, 10, 10]
    );
    assert_eq!(calls.iter().map(|c| c.attempts).sum::<u32>(), 4);
    let total: u64 = calls.iter().map(|c| c.input_tokens).sum();
    assert_eq!(total, e.usage().unwrap().input_tokens);
    for c in &calls {
        let want = c.input_tokens as f64 * 0.13 / 1e6;
        assert!((c.cost_usd.unwrap() - want).abs() < 1e-15);
    }
}

#[test]
fn concurrency_limit_holds() {
    let server = FakeServer::start(Dialect::Voyage, 4, Some(KEY));
    server.delay(Duration::from_millis(150));
    let mut cfg = config(&server, Some(KEY));
    cfg.dims = Some(4);
    cfg.concurrency = 3;
    let e = ApiEmbedder::new("voyage:fake", &cfg).unwrap();
    let t = texts(90);
    let r = refs(&t);
    let o = EncodeOptions {
        batch_size: Some(10),
        ..opts()
    };
    let out = e.embed(&r, &o).unwrap();
    assert_rows(&out, &r, None, 4);
    assert_eq!(server.requests(), 9);
    // Never more than the limit at once; requests that wait 150 ms each do overlap.
    let most = server.max_in_flight();
    assert!((2..=3).contains(&most), "{most} in flight");
}

#[test]
fn a_failing_batch_fails_the_call() {
    let server = FakeServer::start(Dialect::OpenAi, 8, Some(KEY));
    let mut cfg = config(&server, Some(KEY));
    cfg.dims = Some(8);
    cfg.concurrency = 1;
    let e = ApiEmbedder::new("openai:fake", &cfg).unwrap();
    let t = texts(30);
    let r = refs(&t);
    let o = EncodeOptions {
        batch_size: Some(10),
        ..opts()
    };
    // The first batch succeeds, the second is refused: the call fails and the third batch is never sent.
    server.inject([Fault::Pass, Fault::Status(401, vec![])]);
    let err = e.embed(&r, &o).unwrap_err();
    assert_eq!(server.requests(), 2);
    assert!(err.to_string().contains("HTTP 401"), "{err}");
}

#[test]
fn cohere_input_types_dimensions_and_limits() {
    let server = FakeServer::start(Dialect::Cohere, 1536, Some(KEY));
    let e = ApiEmbedder::new("cohere:embed-v4.0", &config(&server, Some(KEY))).unwrap();
    let t = texts(200);
    let r = refs(&t);
    // Default input type: search_document. 96 texts per call.
    let out = e.embed(&r, &opts()).unwrap();
    assert_rows(&out, &r, Some("search_document"), 1536);
    let mut sizes: Vec<usize> = server.seen().iter().map(|s| s.texts().len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![8, 96, 96]);
    let tokens: u64 = r.iter().map(|t| fake_tokens(t)).sum();
    let u = e.usage().unwrap();
    assert_eq!(u.input_tokens, tokens, "billed_units.input_tokens");
    assert!((u.cost_usd.unwrap() - tokens as f64 * 0.12 / 1e6).abs() < 1e-15);

    // prompt_name query → input_type search_query; output_dimension for a width v4 has.
    server.reset();
    let q = EncodeOptions {
        prompt_name: Some("query".into()),
        truncate_dim: Some(256),
        ..opts()
    };
    let out = e.embed(&r[..3], &q).unwrap();
    let seen = server.seen();
    assert_eq!(seen[0].body["input_type"], "search_query");
    assert_eq!(seen[0].body["output_dimension"], 256);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let mut want = fake_vector(Some("search_query"), r[0], 1536);
    want.truncate(256);
    embedkit_core::l2_normalize(&mut want);
    assert_eq!(out.row(0), &want[..]);

    // A width v4 does not have: the full vector is cut here and renormalized.
    server.reset();
    let odd = EncodeOptions {
        prompt_name: Some("classification".into()),
        truncate_dim: Some(100),
        ..opts()
    };
    let out = e.embed(&r[..2], &odd).unwrap();
    let seen = server.seen();
    assert_eq!(seen[0].body["input_type"], "classification");
    assert!(seen[0].body.get("output_dimension").is_none());
    assert_eq!(out.dims(), 100);
    let norm: f32 = out.row(0).iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);

    // --max-length becomes Cohere's per-text `max_tokens`.
    server.reset();
    let capped = EncodeOptions {
        max_length: Some(128),
        ..opts()
    };
    e.embed(&r[..1], &capped).unwrap();
    assert_eq!(server.seen()[0].body["max_tokens"], 128);

    let bad = EncodeOptions {
        prompt_name: Some("poem".into()),
        ..opts()
    };
    let err = e.embed(&r[..1], &bad).unwrap_err().to_string();
    assert!(err.contains("'poem' is not a Cohere input type"), "{err}");
}

#[test]
fn voyage_input_type_and_output_dimension() {
    let server = FakeServer::start(Dialect::Voyage, 1024, Some(KEY));
    let e = ApiEmbedder::new("voyage:voyage-3.5", &config(&server, Some(KEY))).unwrap();
    let t = texts(5);
    let r = refs(&t);
    let out = e.embed(&r, &opts()).unwrap();
    assert_rows(&out, &r, None, 1024);
    assert!(server.seen()[0].body.get("input_type").is_none());
    server.reset();
    let d = EncodeOptions {
        prompt_name: Some("document".into()),
        truncate_dim: Some(512),
        ..opts()
    };
    let out = e.embed(&r, &d).unwrap();
    assert_eq!(out.dims(), 512);
    let body = &server.seen()[0].body;
    assert_eq!(body["input_type"], "document");
    assert_eq!(body["output_dimension"], 512);
    let u = e.usage().unwrap();
    let tokens: u64 = r.iter().map(|t| fake_tokens(t)).sum::<u64>() * 2;
    assert_eq!(u.input_tokens, tokens, "usage.total_tokens");
    assert!((u.cost_usd.unwrap() - tokens as f64 * 0.06 / 1e6).abs() < 1e-15);
}

#[test]
fn openai_dimensions_only_for_v3_models() {
    let server = FakeServer::start(Dialect::OpenAi, 1536, Some(KEY));
    let cfg = config(&server, Some(KEY));
    let small = ApiEmbedder::new("openai:text-embedding-3-small", &cfg).unwrap();
    let o = EncodeOptions {
        truncate_dim: Some(256),
        ..opts()
    };
    let out = small.embed(&["x"], &o).unwrap();
    assert_eq!(out.dims(), 256);
    assert_eq!(server.seen()[0].body["dimensions"], 256);

    server.reset();
    let ada = ApiEmbedder::new("openai:text-embedding-ada-002", &cfg).unwrap();
    let out = ada.embed(&["x"], &o).unwrap();
    assert_eq!(out.dims(), 256);
    assert!(server.seen()[0].body.get("dimensions").is_none());
    // Cut on the client and renormalized: the same as the server's `dimensions` does.
    let mut want = fake_vector(None, "x", 1536);
    want.truncate(256);
    embedkit_core::l2_normalize(&mut want);
    assert_eq!(out.row(0), &want[..]);

    let too_wide = EncodeOptions {
        truncate_dim: Some(4096),
        ..opts()
    };
    let err = small.embed(&["x"], &too_wide).unwrap_err().to_string();
    assert!(
        err.contains("4096 is more than openai:text-embedding-3-small's 1536"),
        "{err}"
    );
    // Query and document roles are the same for OpenAI: accepted, nothing sent.
    server.reset();
    let q = small
        .embed(
            &["x"],
            &EncodeOptions {
                prompt_name: Some("query".into()),
                ..opts()
            },
        )
        .unwrap();
    assert_eq!(q.row(0), &fake_vector(None, "x", 1536)[..]);
    assert!(server.seen()[0].body.get("input_type").is_none());
    let err = small
        .embed(
            &["x"],
            &EncodeOptions {
                prompt_name: Some("classification".into()),
                ..opts()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has no input types ('classification')"),
        "{err}"
    );
    let err = small
        .embed(
            &["x"],
            &EncodeOptions {
                max_length: Some(16),
                ..opts()
            },
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_length"), "{err}");
}

#[test]
fn literal_prompts_and_empty_texts() {
    let server = FakeServer::start(Dialect::OpenAi, 8, None);
    let mut cfg = config(&server, None);
    cfg.dims = Some(8);
    let e = ApiEmbedder::new("openai:fake", &cfg).unwrap();
    let o = EncodeOptions {
        prompt: Some("query: ".into()),
        ..opts()
    };
    let out = e.embed(&["a cat", ""], &o).unwrap();
    assert_eq!(server.seen()[0].texts(), vec!["query: a cat", "query: "]);
    assert_eq!(out.row(0), &fake_vector(None, "query: a cat", 8)[..]);
    server.reset();
    let out = e.embed(&[""], &opts()).unwrap();
    assert_eq!(server.seen()[0].texts(), vec![" "]);
    assert_eq!(out.rows(), 1);
    assert_eq!(e.embed(&[], &opts()).unwrap().rows(), 0);
    // No key for a self-hosted server: no Authorization header at all.
    assert!(server.seen()[0].header("authorization").is_none());
}

#[test]
fn usage_is_estimated_when_the_server_reports_none() {
    let server = FakeServer::start(Dialect::OpenAi, 8, None);
    server.report_usage(false);
    let mut cfg = config(&server, None);
    cfg.dims = Some(8);
    cfg.price_usd_per_mtok = Some(1.0);
    let e = ApiEmbedder::new("openai:fake", &cfg).unwrap();
    e.embed(&["abcdefgh", "abc"], &opts()).unwrap();
    let u = e.usage().unwrap();
    assert_eq!((u.requests, u.input_tokens), (1, 3));
    assert_eq!(u.cost_usd, Some(3e-6));
}

#[test]
fn azure_deployment_path_api_key_and_version() {
    let server = FakeServer::start(Dialect::Azure, 1536, Some(KEY));
    let mut cfg = config(&server, Some(KEY));
    cfg.api_version = Some("2024-06-01".into());
    let e = ApiEmbedder::new("azure:text-embedding-3-small", &cfg).unwrap();
    assert_eq!(
        e.dims(),
        1536,
        "a deployment named after its model gets the model's facts"
    );
    let out = e.embed(&["hello"], &opts()).unwrap();
    assert_rows(&out, &["hello"], None, 1536);
    let s = &server.seen()[0];
    assert_eq!(
        s.target,
        "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-06-01"
    );
    assert_eq!(s.header("api-key"), Some(KEY));
    assert!(s.header("authorization").is_none());
    // Without a key, Azure is refused before any request.
    let err = ApiEmbedder::new("azure:x", &config(&server, None)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "azure: no API key; set AZURE_OPENAI_API_KEY"
    );
}

#[test]
fn keys_stay_out_of_debug_errors_and_env_handling() {
    let server = FakeServer::start(Dialect::OpenAi, 8, Some(KEY));
    let mut cfg = config(&server, Some(KEY));
    cfg.dims = Some(8);
    cfg.retry.max_retries = 1;
    assert!(!format!("{cfg:?}").contains(KEY));
    let e = ApiEmbedder::new("openai:fake", &cfg).unwrap();
    assert!(!format!("{e:?}").contains(KEY), "{e:?}");
    assert!(format!("{e:?}").contains("<redacted>"));

    let mut errors = Vec::new();
    // A wrong key: the server's 401.
    let wrong = ApiEmbedder::new(
        "openai:fake",
        &ProviderConfig {
            api_key: Some(Secret::new(format!("{KEY}-wrong"))),
            ..cfg.clone()
        },
    )
    .unwrap();
    let err = wrong.embed(&["a"], &opts()).unwrap_err();
    assert!(
        err.to_string()
            .contains("HTTP 401 after 1 attempt: Incorrect API key provided")
    );
    errors.push(format!("{err} {err:?}"));
    server.inject([Fault::Status(500, vec![]), Fault::Status(500, vec![])]);
    let err = e.embed(&["a"], &opts()).unwrap_err();
    errors.push(format!("{err} {err:?}"));
    server.inject([Fault::Truncate, Fault::Drop]);
    let err = e.embed(&["a"], &opts()).unwrap_err();
    errors.push(format!("{err} {err:?}"));
    server.inject([Fault::Malformed]);
    let err = e.embed(&["a"], &opts()).unwrap_err();
    errors.push(format!("{err} {err:?}"));
    for text in errors {
        assert!(!text.contains(KEY), "key in error: {text}");
        assert!(!text.contains("0123456789abcdef"), "key in error: {text}");
    }

    // Keys and base URLs come from the environment as the SDKs read them; the vendor's URL needs a key.
    let env = |k: &str| match k {
        "CO_API_KEY" => Some(String::new()),
        "COHERE_API_KEY" => Some("from-env".to_string()),
        _ => None,
    };
    let c = ProviderConfig::default().fill_from_env(embedkit_providers::Provider::Cohere, &env);
    assert_eq!(c.api_key, Some(Secret::new("from-env")));
    let c = ProviderConfig::default().fill_from_env(embedkit_providers::Provider::OpenAi, &env);
    let err = ApiEmbedder::new("openai:text-embedding-3-small", &c).unwrap_err();
    assert_eq!(err.to_string(), "openai: no API key; set OPENAI_API_KEY");
    let env = |k: &str| (k == "OPENAI_BASE_URL").then(|| server.base_url());
    let c = ProviderConfig::default().fill_from_env(embedkit_providers::Provider::OpenAi, &env);
    assert_eq!(c.base_url, Some(server.base_url()));
}

#[test]
fn cache_in_front_makes_the_second_run_free() {
    use embedkit_cache::{Cache, CachedEmbedder, EmbeddedCache, EmbeddedCacheOptions};
    use std::sync::Arc;
    let server = FakeServer::start(Dialect::OpenAi, 1536, Some(KEY));
    let dir = tempfile::tempdir().unwrap();
    let t = texts(300);
    let r = refs(&t);
    let o = EncodeOptions {
        batch_size: Some(64),
        ..opts()
    };
    let run = || {
        let cache: Arc<dyn Cache> =
            Arc::new(EmbeddedCache::open(dir.path(), EmbeddedCacheOptions::default()).unwrap());
        let api =
            ApiEmbedder::new("openai:text-embedding-3-small", &config(&server, Some(KEY))).unwrap();
        let cached = CachedEmbedder::new(api, cache);
        let out = cached.embed(&r, &o).unwrap();
        (out, cached.usage().unwrap())
    };
    let (first, u1) = run();
    assert_rows(&first, &r, None, 1536);
    assert_eq!(server.requests(), 5);
    assert_eq!(u1.requests, 5);
    // A new process' worth of objects on the same cache: no HTTP at all, the same vectors.
    server.reset();
    let (second, u2) = run();
    assert_eq!(server.requests(), 0);
    assert_eq!(u2.requests, 0);
    assert_eq!(first, second);
}
