//! Benchmark of the embedding cache: 10,000 texts with all-MiniLM-L6-v2 at 0 %, 50 % and 100 % hits, for
//! no cache, the on-disk cache and Redis, all in one run so the speed-ups are ratios on the same machine.
//!
//! ```text
//! cargo run --release -p embedkit-cache --example cache_bench [-- --texts 10000 --threads 2]
//! ```
//!
//! The model is read from `$EMBEDKIT_HOME/models/all-MiniLM-L6-v2` (default `~/.cache/embedkit`; fetch it
//! with `embedkit models fetch all-MiniLM-L6-v2`) or `--model DIR`. Redis: `--redis URL`, or else a
//! `redis-server` on a free loopback port is started (and killed) by the benchmark; without one the Redis
//! rows are skipped.

use embedkit_cache::{
    Cache, CacheKey, CachedEmbedder, EmbeddedCache, EmbeddedCacheOptions, KeyBuilder, KeyOptions,
    RedisCache, RedisCacheOptions, decode_f32_into, encode_f32,
};
use embedkit_core::{Embedder, Embeddings, EncodeOptions};
use embedkit_cpu::{CpuBackend, CpuOptions};
use embedkit_model::{Backend, LocalEmbedder};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Texts per embed call, as the CLI streams files.
const CHUNK: usize = 1024;

struct Args {
    model: PathBuf,
    texts: usize,
    threads: usize,
    redis: Option<String>,
}

fn parse_args() -> Args {
    let home = std::env::var_os("EMBEDKIT_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/embedkit")))
        .unwrap_or_else(|| PathBuf::from(".cache/embedkit"));
    let mut a = Args {
        model: home.join("models/all-MiniLM-L6-v2"),
        texts: 10_000,
        threads: 2,
        redis: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--model" => a.model = PathBuf::from(value()),
            "--texts" => a.texts = value().parse().unwrap_or_else(|_| die("--texts N")),
            "--threads" => a.threads = value().parse().unwrap_or_else(|_| die("--threads N")),
            "--redis" => a.redis = Some(value()),
            other => die(&format!("unknown argument {other}")),
        }
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("cache_bench: {msg}");
    std::process::exit(2)
}

/// Distinct sentences of 6 to 30 words from a fixed vocabulary (a deterministic pseudo-random stream).
fn make_texts(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "the", "a", "cache", "vector", "model", "returns", "quickly", "river", "mountain",
        "search", "index", "query", "document", "answer", "people", "walk", "along", "quiet",
        "street", "morning", "computer", "learns", "language", "from", "many", "examples", "city",
        "light", "green", "table", "music", "plays", "softly", "while", "children", "read",
        "books", "about", "history", "science",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|i| {
            let len = 6 + (next() % 25) as usize;
            let mut s = format!("{i}.");
            for _ in 0..len {
                s.push(' ');
                s.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
            }
            s
        })
        .collect()
}

fn embed_all(model: &dyn Embedder, texts: &[String]) -> (Embeddings, Duration) {
    let options = EncodeOptions::default();
    let start = Instant::now();
    let mut out = Embeddings::empty(model.dims());
    for chunk in texts.chunks(CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let e = model
            .embed(&refs, &options)
            .unwrap_or_else(|e| die(&format!("embedding failed: {e}")));
        out.append(&e)
            .unwrap_or_else(|e| die(&format!("shape: {e}")));
    }
    (out, start.elapsed())
}

fn max_diff(a: &Embeddings, b: &Embeddings) -> f32 {
    a.as_slice()
        .iter()
        .zip(b.as_slice())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

struct Row {
    backend: &'static str,
    hits: &'static str,
    time: Duration,
    computed: u64,
}

/// Runs 0 %, 50 % and 100 % hits through `cache`.
fn run_backend(
    backend: &'static str,
    model: &Arc<LocalEmbedder>,
    cache: Arc<dyn Cache>,
    texts: &[String],
    reference: &Embeddings,
    rows: &mut Vec<Row>,
) {
    let cached = CachedEmbedder::new(model.clone(), cache.clone());
    cache
        .clear()
        .unwrap_or_else(|e| die(&format!("clearing {backend}: {e}")));
    let mut record = |hits: &'static str, cached: &CachedEmbedder<Arc<LocalEmbedder>>| {
        let before = cached.counters().computed;
        let (got, time) = embed_all(cached, texts);
        let diff = max_diff(&got, reference);
        if diff > 1e-4 {
            die(&format!(
                "{backend} {hits}: vectors differ from no-cache by {diff}"
            ));
        }
        let computed = cached.counters().computed - before;
        eprintln!(
            "{backend:>9} {hits:>4} hits: {:>8.3} s, computed {computed}",
            time.as_secs_f64()
        );
        rows.push(Row {
            backend,
            hits,
            time,
            computed,
        });
    };
    record("0 %", &cached);
    cache
        .clear()
        .unwrap_or_else(|e| die(&format!("clearing {backend}: {e}")));
    // Warm every other text (not timed), so the next run has exactly 50 % hits.
    let half: Vec<String> = texts.iter().step_by(2).cloned().collect();
    let warm = CachedEmbedder::new(model.clone(), cache.clone());
    embed_all(&warm, &half);
    record("50 %", &cached);
    record("100 %", &cached);
    if cached.counters().errors > 0 {
        die(&format!(
            "{backend}: {} cache errors",
            cached.counters().errors
        ));
    }
}

/// The cost of the hit path alone, per vector: key hashing, one batched lookup, decoding.
fn hit_path_cost(cache: &dyn Cache, fingerprint: &str, texts: &[String], dims: usize) -> Duration {
    let builder = KeyBuilder::new(
        cache.namespace(),
        fingerprint,
        &KeyOptions::from_encode(&EncodeOptions::default()),
    );
    let mut row = vec![0f32; dims];
    let start = Instant::now();
    let mut n = 0usize;
    for chunk in texts.chunks(CHUNK) {
        let keys: Vec<CacheKey> = chunk.iter().map(|t| builder.key(t)).collect();
        let values = cache
            .get_many(&keys)
            .unwrap_or_else(|e| die(&format!("lookup: {e}")));
        for v in values.iter().flatten() {
            if decode_f32_into(v, &mut row) {
                n += 1;
            }
        }
    }
    let t = start.elapsed();
    if n != texts.len() {
        die(&format!("hit path found {n} of {} vectors", texts.len()));
    }
    t / texts.len() as u32
}

/// The benchmark's own redis-server and its folder, removed on drop.
/// The cost of the miss path alone, per vector: key hashing, one batched lookup that finds nothing,
/// encoding, one batched write. (At 0 % hits this is all the cache adds to computing.)
fn miss_path_cost(cache: &dyn Cache, texts: &[String], vectors: &Embeddings) -> Duration {
    let builder = KeyBuilder::new(
        cache.namespace(),
        "cache-bench-miss-path",
        &KeyOptions::from_encode(&EncodeOptions::default()),
    );
    let start = Instant::now();
    for (c, chunk) in texts.chunks(CHUNK).enumerate() {
        let keys: Vec<CacheKey> = chunk.iter().map(|t| builder.key(t)).collect();
        let values = cache
            .get_many(&keys)
            .unwrap_or_else(|e| die(&format!("lookup: {e}")));
        if values.iter().any(Option::is_some) {
            die("miss path found entries");
        }
        let entries: Vec<(CacheKey, Vec<u8>)> = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| (k, encode_f32(vectors.row(c * CHUNK + i))))
            .collect();
        cache
            .put_many(&entries)
            .unwrap_or_else(|e| die(&format!("write: {e}")));
    }
    start.elapsed() / texts.len() as u32
}

struct RedisChild {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for RedisChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> Option<(String, RedisChild)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()?
        .port();
    let dir = tempfile::tempdir().ok()?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let guard = RedisChild { child, _dir: dir };
    let url = format!("redis://127.0.0.1:{port}/0");
    let client = redis::Client::open(url.as_str()).ok()?;
    for _ in 0..200 {
        if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(100))
            && redis::cmd("PING").query::<String>(&mut c).is_ok()
        {
            return Some((url, guard));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

fn main() {
    let args = parse_args();
    if !args.model.join("config.json").exists() {
        die(&format!(
            "no model at {} (run `embedkit models fetch all-MiniLM-L6-v2` or pass --model DIR)",
            args.model.display()
        ));
    }
    let options = CpuOptions {
        threads: Some(args.threads),
        ..Default::default()
    };
    let model = LocalEmbedder::load("all-MiniLM-L6-v2", &args.model, |cfg, w| {
        Ok(Box::new(CpuBackend::new(cfg, w, &options)?) as Box<dyn Backend>)
    })
    .unwrap_or_else(|e| die(&format!("loading {}: {e}", args.model.display())));
    let model = Arc::new(model);
    let texts = make_texts(args.texts);
    let words: usize = texts.iter().map(|t| t.split(' ').count()).sum();
    eprintln!(
        "{} texts ({:.1} words on average), {} threads, batches of {CHUNK}",
        texts.len(),
        words as f64 / texts.len() as f64,
        args.threads
    );

    // Warm-up (page cache, allocator, thread pool), then the no-cache baseline.
    embed_all(&*model, &texts[..texts.len().min(256)]);
    let (reference, base) = embed_all(&*model, &texts);
    eprintln!(" no cache:            {:>8.3} s", base.as_secs_f64());
    let mut rows = Vec::new();
    let mut hit_cost = Vec::new();

    let dir = tempfile::tempdir().unwrap_or_else(|e| die(&format!("temp dir: {e}")));
    let disk: Arc<dyn Cache> = Arc::new(
        EmbeddedCache::open(dir.path(), EmbeddedCacheOptions::default())
            .unwrap_or_else(|e| die(&format!("opening the on-disk cache: {e}"))),
    );
    run_backend(
        "embedded",
        &model,
        disk.clone(),
        &texts,
        &reference,
        &mut rows,
    );
    hit_cost.push((
        "embedded",
        hit_path_cost(&*disk, &model.fingerprint(), &texts, model.dims()),
        miss_path_cost(&*disk, &texts, &reference),
    ));

    let mut _server = None;
    let redis_url = match args.redis.clone() {
        Some(u) => Some(u),
        None => start_redis().map(|(u, child)| {
            _server = Some(child);
            u
        }),
    };
    match redis_url {
        Some(url) => {
            let redis: Arc<dyn Cache> = Arc::new(
                RedisCache::open(&url, RedisCacheOptions::default())
                    .unwrap_or_else(|e| die(&format!("redis: {e}"))),
            );
            run_backend(
                "redis",
                &model,
                redis.clone(),
                &texts,
                &reference,
                &mut rows,
            );
            hit_cost.push((
                "redis",
                hit_path_cost(&*redis, &model.fingerprint(), &texts, model.dims()),
                miss_path_cost(&*redis, &texts, &reference),
            ));
            let _ = redis.clear();
        }
        None => eprintln!("redis-server not found and no --redis URL: Redis rows skipped"),
    }

    // The baseline once more: the spread between the two shows the run-to-run noise of computing.
    let (_, base2) = embed_all(&*model, &texts);
    eprintln!(" no cache (again):    {:>8.3} s", base2.as_secs_f64());

    println!("| cache | hits | time (s) | texts/s | vectors computed | speed-up vs no cache |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| none | – | {:.3} | {:.0} | {} | 1.0× |",
        base.as_secs_f64(),
        texts.len() as f64 / base.as_secs_f64(),
        texts.len()
    );
    println!(
        "| none (again, at the end) | – | {:.3} | {:.0} | {} | {:.1}× |",
        base2.as_secs_f64(),
        texts.len() as f64 / base2.as_secs_f64(),
        texts.len(),
        base.as_secs_f64() / base2.as_secs_f64()
    );
    for r in &rows {
        println!(
            "| {} | {} | {:.3} | {:.0} | {} | {:.1}× |",
            r.backend,
            r.hits,
            r.time.as_secs_f64(),
            texts.len() as f64 / r.time.as_secs_f64(),
            r.computed,
            base.as_secs_f64() / r.time.as_secs_f64()
        );
    }
    println!();
    println!(
        "| cache | hit path per vector (CachedEmbedder, 100 % hits) | lookup + decode only | miss path per vector (lookup + encode + write) | computing per vector |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (backend, hit, miss) in &hit_cost {
        let full = rows
            .iter()
            .find(|r| r.backend == *backend && r.hits == "100 %")
            .map_or(Duration::ZERO, |r| r.time / texts.len() as u32);
        println!(
            "| {backend} | {:.1} µs | {:.1} µs | {:.1} µs | {:.0} µs |",
            full.as_secs_f64() * 1e6,
            hit.as_secs_f64() * 1e6,
            miss.as_secs_f64() * 1e6,
            (base / texts.len() as u32).as_secs_f64() * 1e6
        );
    }
}
