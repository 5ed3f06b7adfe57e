//! RedisCache against real redis-server processes on 127.0.0.1 (started and killed by the tests): TTL,
//! keys per model and options, a server killed or frozen mid-run, reconnects, auth, TLS, stats and clear.
//!
//! redis-server must be installed (`apt-get install -y redis-server`); the tests fail, not skip, without it.

mod common;

use common::{Counting, RedisServer, assert_close, eventually, load_tiny, refs, sentences};
use embedkit_cache::{
    Cache, CacheKey, CachedEmbedder, KeyBuilder, KeyOptions, RedisCache, RedisCacheOptions,
    decode_f32, encode_f32,
};
use embedkit_core::{Embedder, EncodeOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn options(ttl: Duration) -> RedisCacheOptions {
    RedisCacheOptions {
        ttl,
        connect_timeout: Duration::from_millis(300),
        io_timeout: Duration::from_millis(300),
        retry_after: Duration::from_millis(100),
        ..Default::default()
    }
}

fn cache(server: &RedisServer) -> Arc<RedisCache> {
    Arc::new(RedisCache::open(&server.url(), options(Duration::from_secs(3600))).unwrap())
}

/// Keys of this namespace on the server.
fn ns_keys(conn: &mut redis::Connection, ns: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{ns}:*"))
        .query(conn)
        .unwrap();
    keys.sort();
    keys
}

#[test]
fn round_trip_with_one_mget_and_ttl_read_back() {
    let server = RedisServer::start();
    let mut conn = server.client();
    let c = cache(&server);
    let k = |s: &str| CacheKey::from_raw(format!("embedkit:{s}"));
    c.put_many(&[
        (k("a"), encode_f32(&[1.0, 2.0])),
        (k("b"), encode_f32(&[3.0])),
    ])
    .unwrap();
    let got = c.get_many(&[k("b"), k("none"), k("a")]).unwrap();
    assert_eq!(decode_f32(got[0].as_ref().unwrap(), 1), Some(vec![3.0]));
    assert!(got[1].is_none());
    assert_eq!(
        decode_f32(got[2].as_ref().unwrap(), 2),
        Some(vec![1.0, 2.0])
    );
    assert!(!c.is_cluster());

    // SET … EX: the server holds the TTL we asked for.
    let ttl: i64 = redis::cmd("TTL")
        .arg("embedkit:a")
        .query(&mut conn)
        .unwrap();
    assert!(ttl > 3500 && ttl <= 3600, "TTL {ttl}");
    let never = RedisCache::open(&server.url(), options(Duration::ZERO)).unwrap();
    never
        .put_many(&[(k("forever"), encode_f32(&[1.0]))])
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("embedkit:forever")
        .query(&mut conn)
        .unwrap();
    assert_eq!(ttl, -1, "ttl 0 means no expiry");
    let short = RedisCache::open(&server.url(), options(Duration::from_secs(1))).unwrap();
    short.put_many(&[(k("short"), encode_f32(&[1.0]))]).unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        short.get_many(&[k("short")]).unwrap()[0].is_none()
    }));
}

#[test]
fn keys_differ_by_model_and_options_and_hits_skip_the_model() {
    let server = RedisServer::start();
    let mut conn = server.client();
    let c = cache(&server);
    let mean = CachedEmbedder::new(Counting::new(load_tiny("bert-mean")), c.clone());
    let cls = CachedEmbedder::new(Counting::new(load_tiny("bert-cls")), c.clone());
    let text = ["the same text"];
    let base = EncodeOptions::default();
    let variants = [
        base.clone(),
        EncodeOptions {
            normalize: Some(false),
            ..base.clone()
        },
        EncodeOptions {
            truncate_dim: Some(8),
            ..base.clone()
        },
        EncodeOptions {
            prompt: Some("query: ".into()),
            ..base.clone()
        },
        EncodeOptions {
            max_length: Some(3),
            ..base.clone()
        },
    ];
    for o in &variants {
        mean.embed(&text, o).unwrap();
    }
    cls.embed(&text, &base).unwrap();
    let keys = ns_keys(&mut conn, "embedkit");
    assert_eq!(keys.len(), variants.len() + 1, "{keys:?}");
    assert_eq!(mean.inner().texts(), variants.len());
    // Everything is a hit now, for both models, and equals what the models compute.
    for o in &variants {
        let got = mean.embed(&text, o).unwrap();
        assert_close(
            "hit",
            &got,
            &load_tiny("bert-mean").embed(&text, o).unwrap(),
            1e-5,
        );
    }
    cls.embed(&text, &base).unwrap();
    assert_eq!(
        (mean.inner().texts(), cls.inner().texts()),
        (variants.len(), 1)
    );
    // The keys are the ones KeyBuilder makes.
    let expect = KeyBuilder::new(
        "embedkit",
        &mean.fingerprint(),
        &KeyOptions::from_encode(&base),
    )
    .key(text[0]);
    assert!(keys.contains(&expect.as_str().to_string()));
}

#[test]
fn redis_killed_mid_run_every_result_still_correct_and_caching_resumes() {
    let mut server = RedisServer::start();
    let c = cache(&server);
    let warnings = Arc::new(Mutex::new(Vec::<String>::new()));
    let w = warnings.clone();
    let cached = CachedEmbedder::new(Counting::new(load_tiny("bert-mean")), c.clone())
        .with_warn_hook(Arc::new(move |m| w.lock().unwrap().push(m.to_string())));
    let plain = load_tiny("bert-mean");
    let o = EncodeOptions::default();
    let texts = sentences(40, "kill");
    let want = plain.embed(&refs(&texts), &o).unwrap();
    let check = |from: usize, n: usize| {
        let batch = refs(&texts[from..from + n]);
        let got = cached.embed(&batch, &o).unwrap();
        for (i, row) in got.iter().enumerate() {
            let diff = row
                .iter()
                .zip(want.row(from + i))
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-5, "text {} wrong by {diff}", from + i);
        }
    };
    check(0, 10); // cached
    assert_eq!(cached.counters().errors, 0);

    // Kill the server while a second thread keeps embedding.
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            for round in 0..30 {
                check((round * 3) % 30, 10);
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        server.kill();
        h.join().unwrap();
    });
    for round in 0..5 {
        check(round * 5, 10);
    }
    let errors_while_down = cached.counters().errors;
    assert!(errors_while_down > 0, "the dead server was noticed");
    assert_eq!(
        warnings.lock().unwrap().len(),
        1,
        "one warning per outage: {:?}",
        warnings.lock().unwrap()
    );

    // Back on the same port (empty): after retry_after the cache is used again.
    server.restart();
    let computed_before = cached.inner().texts();
    assert!(
        eventually(Duration::from_secs(20), || {
            check(30, 10);
            let n = server.client();
            let mut n = n;
            !ns_keys(&mut n, "embedkit").is_empty()
        }),
        "caching did not resume after the restart"
    );
    let computed = cached.inner().texts();
    check(30, 10);
    assert_eq!(cached.inner().texts(), computed, "served from Redis again");
    assert!(computed > computed_before);
    let msgs = warnings.lock().unwrap().clone();
    assert!(msgs.last().unwrap().contains("works again"), "{msgs:?}");
}

#[test]
fn a_frozen_server_times_out_and_vectors_are_computed() {
    let server = RedisServer::start();
    let c = cache(&server);
    let cached = CachedEmbedder::new(Counting::new(load_tiny("bert-mean")), c.clone())
        .with_warn_hook(Arc::new(|_| {}));
    let o = EncodeOptions::default();
    let texts = ["slow one", "slow two"];
    let want = load_tiny("bert-mean").embed(&texts, &o).unwrap();
    assert_close("warm", &cached.embed(&texts, &o).unwrap(), &want, 1e-5);
    server.signal("STOP"); // accepts connections, never answers
    assert_close("frozen", &cached.embed(&texts, &o).unwrap(), &want, 1e-5);
    assert!(cached.counters().errors > 0);
    assert_eq!(cached.inner().texts(), 4, "computed while Redis hangs");
    server.signal("CONT");
    // Once the back-off has passed, a call is served from Redis again: the model sees nothing.
    assert!(
        eventually(Duration::from_secs(20), || {
            let before = cached.inner().texts();
            let got = cached.embed(&texts, &o).unwrap();
            assert_close("after", &got, &want, 1e-5);
            cached.inner().texts() == before
        }),
        "caching did not resume after the server was continued"
    );
}

#[test]
fn stats_and_clear_count_this_namespace() {
    let server = RedisServer::start();
    let mut conn = server.client();
    let _: () = redis::cmd("SET")
        .arg("unrelated")
        .arg("x")
        .query(&mut conn)
        .unwrap();
    let c = cache(&server);
    let cached = CachedEmbedder::new(load_tiny("bert-mean"), c.clone());
    let texts = sentences(5, "stats");
    cached
        .embed(&refs(&texts), &EncodeOptions::default())
        .unwrap();
    cached
        .embed(&refs(&texts[..3]), &EncodeOptions::default())
        .unwrap();
    let s = c.stats().unwrap();
    assert_eq!((s.hits, s.misses, s.entries), (3, 5, 5), "{s:?}");
    assert!(s.bytes > 5 * (4 * cached.dims() as u64));
    // A second handle (another process) sees the same counters.
    let other = cache(&server);
    assert_eq!(other.stats().unwrap(), s);
    assert_eq!(c.clear().unwrap(), 5);
    let s = c.stats().unwrap();
    assert_eq!((s.hits, s.misses, s.entries, s.bytes), (0, 0, 0, 0));
    let kept: Option<String> = redis::cmd("GET").arg("unrelated").query(&mut conn).unwrap();
    assert_eq!(
        kept.as_deref(),
        Some("x"),
        "clear touches only our namespace"
    );
    assert_eq!(c.prune().unwrap().entries, 0);
}

#[test]
fn password_and_database_from_the_url() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let url = format!("redis://:s3cret@127.0.0.1:{}/3", server.port);
    let c = Arc::new(RedisCache::open(&url, options(Duration::from_secs(60))).unwrap());
    assert!(!c.describe().contains("s3cret"));
    let cached = CachedEmbedder::new(Counting::new(load_tiny("bert-mean")), c.clone());
    cached
        .embed(&["x", "y"], &EncodeOptions::default())
        .unwrap();
    cached
        .embed(&["x", "y"], &EncodeOptions::default())
        .unwrap();
    assert_eq!(cached.inner().texts(), 2);
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(
        ns_keys(&mut conn, "embedkit").len(),
        2,
        "stored in database 3"
    );

    // A wrong password is a cache failure, not a failed call.
    let bad = format!("redis://:wrong@127.0.0.1:{}/0", server.port);
    let c = Arc::new(RedisCache::open(&bad, options(Duration::from_secs(60))).unwrap());
    let cached = CachedEmbedder::new(load_tiny("bert-mean"), c).with_warn_hook(Arc::new(|_| {}));
    assert_eq!(
        cached
            .embed(&["x"], &EncodeOptions::default())
            .unwrap()
            .rows(),
        1
    );
    assert!(cached.counters().errors > 0);
}

#[test]
fn connections_are_reused() {
    let server = RedisServer::start();
    let mut conn = server.client();
    let c = cache(&server);
    let k = CacheKey::from_raw("embedkit:reuse");
    for _ in 0..50 {
        c.put_many(&[(k.clone(), encode_f32(&[1.0]))]).unwrap();
        c.get_many(std::slice::from_ref(&k)).unwrap();
    }
    let info: String = redis::cmd("INFO").arg("stats").query(&mut conn).unwrap();
    let total: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    // The test's own connection, the start-up PINGs, and one for the cache.
    assert!(total < 10, "{total} connections for 100 commands");
}

#[test]
fn slots_match_the_servers_keyslot_and_mget_groups_per_slot() {
    // A single node with cluster mode on answers CLUSTER KEYSLOT; compare with our CRC16 for real keys.
    let server = RedisServer::start_with(&["--cluster-enabled", "yes"]);
    let mut conn = server.client();
    let builder = KeyBuilder::new(
        "embedkit",
        "fp",
        &KeyOptions::from_encode(&EncodeOptions::default()),
    );
    let mut keys: Vec<String> = (0..200)
        .map(|i| builder.key(&format!("t{i}")).as_str().to_string())
        .collect();
    keys.extend(
        [
            "{user1000}.following",
            "foo{}{bar}",
            "foo{{bar}}zap",
            "a{b}c",
        ]
        .map(String::from),
    );
    for k in &keys {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(k)
            .query(&mut conn)
            .unwrap();
        assert_eq!(embedkit_cache::key_slot(k.as_bytes()), slot, "slot of {k}");
    }
}

#[test]
fn rediss_tls_with_a_self_signed_certificate() {
    // Debian's redis-server is built with TLS; the certificate comes from the openssl command.
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed for the TLS test (apt-get install -y openssl)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let tls_port = common::free_port();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server = RedisServer::start_with(&[
        "--tls-port",
        &tls_port.to_string(),
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-auth-clients",
        "no",
    ]);
    let _keep = &server;
    // #insecure: the certificate is self-signed.
    let url = format!("rediss://127.0.0.1:{tls_port}/0#insecure");
    // A TLS handshake (RSA-2048) on a 2-core machine that is running the other tests can take longer than
    // the 300 ms the plain-TCP tests allow (CI timed out once at "connecting"); this test is about TLS, not
    // about timeouts, so it waits as a production client would.
    let tls_options = RedisCacheOptions {
        connect_timeout: Duration::from_secs(10),
        io_timeout: Duration::from_secs(10),
        ..options(Duration::from_secs(60))
    };
    let c = Arc::new(RedisCache::open(&url, tls_options).unwrap());
    let k = CacheKey::from_raw("embedkit:tls");
    c.put_many(&[(k.clone(), encode_f32(&[4.0]))]).unwrap();
    let got = c.get_many(std::slice::from_ref(&k)).unwrap();
    assert_eq!(decode_f32(got[0].as_ref().unwrap(), 1), Some(vec![4.0]));
}
