//! Load generator for `embedkit serve`: N concurrent keep-alive clients post texts for a while; reports
//! throughput, latency percentiles, answers by status and the server's RSS over time (JSON on stdout).
//!
//! ```sh
//! cargo run --release -p embedkit-server --example loadgen -- \
//!     --addr 127.0.0.1:8080 --clients 64 --duration 60 --input bench/sentences.txt --pid $(pidof embedkit)
//! ```

use embedkit_server::client::{Client, rss_bytes};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    input: String,
    texts_per_request: usize,
    pid: Option<u32>,
    route: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:8080".parse().map_err(|e| format!("{e}"))?,
        clients: 64,
        duration: Duration::from_secs(60),
        input: "bench/sentences.txt".into(),
        texts_per_request: 1,
        pid: None,
        route: "/v1/embeddings".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |flag: &str, v: &str| format!("{flag}: cannot parse '{v}'");
        match flag.as_str() {
            "--addr" => {
                let v = value()?;
                a.addr = v.parse().map_err(|_| bad("--addr", &v))?;
            }
            "--clients" => {
                let v = value()?;
                a.clients = v.parse().map_err(|_| bad("--clients", &v))?;
            }
            "--duration" => {
                let v = value()?;
                a.duration = Duration::from_secs_f64(v.parse().map_err(|_| bad("--duration", &v))?);
            }
            "--input" => a.input = value()?,
            "--texts-per-request" => {
                let v = value()?;
                a.texts_per_request = v.parse().map_err(|_| bad("--texts-per-request", &v))?;
            }
            "--pid" => {
                let v = value()?;
                a.pid = Some(v.parse().map_err(|_| bad("--pid", &v))?);
            }
            "--route" => a.route = value()?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if a.clients == 0 || a.texts_per_request == 0 {
        return Err("--clients and --texts-per-request must be at least 1".into());
    }
    Ok(a)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let texts: Vec<String> = match std::fs::read_to_string(&args.input) {
        Ok(s) => s
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.input);
            std::process::exit(2);
        }
    };
    if texts.is_empty() {
        eprintln!("error: {} has no texts", args.input);
        std::process::exit(2);
    }
    let texts = Arc::new(texts);
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let statuses = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let texts_done = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + args.duration;
    let open = args.route.starts_with("/v1");
    let handles: Vec<_> = (0..args.clients)
        .map(|_| {
            let (texts, next, latencies, statuses, texts_done) = (
                texts.clone(),
                next.clone(),
                latencies.clone(),
                statuses.clone(),
                texts_done.clone(),
            );
            let route = args.route.clone();
            let (addr, k) = (args.addr, args.texts_per_request);
            std::thread::spawn(move || {
                let mut client = Client::new(addr).with_timeout(Duration::from_secs(120));
                let mut local = Vec::new();
                while Instant::now() < deadline {
                    let batch: Vec<&String> = (0..k)
                        .map(|_| &texts[next.fetch_add(1, Ordering::Relaxed) % texts.len()])
                        .collect();
                    let body = if open {
                        json!({"input": batch, "model": ""})
                    } else {
                        json!({"inputs": batch})
                    };
                    let t = Instant::now();
                    let key = match client.post_json(&route, &body) {
                        Ok(r) => {
                            if r.status == 200 {
                                local.push(t.elapsed().as_secs_f64() * 1e3);
                                texts_done.fetch_add(k, Ordering::Relaxed);
                            }
                            r.status.to_string()
                        }
                        Err(e) => format!("io: {}", e.kind()),
                    };
                    if let Ok(mut s) = statuses.lock() {
                        *s.entry(key).or_insert(0) += 1;
                    }
                }
                if let Ok(mut l) = latencies.lock() {
                    l.extend(local);
                }
            })
        })
        .collect();
    // RSS of the server once a second while the load runs.
    let mut rss = Vec::new();
    while Instant::now() < deadline {
        if let Some(pid) = args.pid
            && let Some(b) = rss_bytes(pid)
        {
            rss.push((start.elapsed().as_secs_f64().round(), b as f64 / 1e6));
        }
        std::thread::sleep(
            Duration::from_secs(1).min(deadline.saturating_duration_since(Instant::now())),
        );
    }
    for h in handles {
        let _ = h.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_by(f64::total_cmp);
    let done = texts_done.load(Ordering::Relaxed);
    let report = json!({
        "clients": args.clients,
        "texts_per_request": args.texts_per_request,
        "route": args.route,
        "seconds": elapsed,
        "ok_requests": lat.len(),
        "texts": done,
        "texts_per_s": done as f64 / elapsed,
        "latency_ms": {
            "p50": percentile(&lat, 0.50),
            "p90": percentile(&lat, 0.90),
            "p99": percentile(&lat, 0.99),
            "max": lat.last().copied().unwrap_or(0.0),
        },
        "answers_by_status": statuses.lock().map(|s| s.clone()).unwrap_or_default(),
        "rss_mb_over_time": rss,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
}
