//! Prometheus counters and histograms, written by hand in the text exposition format (a few atomics; no
//! registry crate needed for this many series).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the batch-size (texts) and batch-tokens histograms.
const SIZE_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0, 16384.0,
];

/// A cumulative histogram with fixed buckets.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum in millionths, so that it fits an atomic integer.
    sum_micro: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if v <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micro
            .fetch_add((v.max(0.0) * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Everything `/metrics` reports.
pub struct Metrics {
    /// Requests by (route, status).
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Requests refused with 429.
    pub rejected: AtomicU64,
    /// Texts embedded.
    pub texts: AtomicU64,
    /// Tokens run through a model.
    pub tokens: AtomicU64,
    /// Requests waiting for or in a forward pass.
    pub in_flight: AtomicU64,
    /// Jobs dropped because their client went away.
    pub cancelled: AtomicU64,
    /// Tokenization time per request.
    pub tokenize: Histogram,
    /// Time from queueing to the first forward pass that includes the request.
    pub queue: Histogram,
    /// Forward-pass time of the batches a request was in.
    pub inference: Histogram,
    /// Whole request time.
    pub total: Histogram,
    /// Texts per forward pass.
    pub batch_texts: Histogram,
    /// Tokens per forward pass.
    pub batch_tokens: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            rejected: AtomicU64::new(0),
            texts: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            tokenize: Histogram::new(&LATENCY_BUCKETS),
            queue: Histogram::new(&LATENCY_BUCKETS),
            inference: Histogram::new(&LATENCY_BUCKETS),
            total: Histogram::new(&LATENCY_BUCKETS),
            batch_texts: Histogram::new(&SIZE_BUCKETS),
            batch_tokens: Histogram::new(&SIZE_BUCKETS),
        }
    }
}

impl Metrics {
    /// Counts one answered request.
    pub fn count_request(&self, route: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), status)).or_insert(0) += 1;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP embedkit_requests_total Requests answered, by route and status.\n");
        out.push_str("# TYPE embedkit_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "embedkit_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let counters = [
            (
                "embedkit_rejected_total",
                "Requests refused with 429 (queue full).",
                &self.rejected,
            ),
            ("embedkit_texts_total", "Texts embedded.", &self.texts),
            (
                "embedkit_tokens_total",
                "Tokens run through a model.",
                &self.tokens,
            ),
            (
                "embedkit_cancelled_total",
                "Queued work dropped because its client disconnected.",
                &self.cancelled,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP embedkit_queue_requests Requests tokenizing, queued or in a forward pass.\n\
             # TYPE embedkit_queue_requests gauge\nembedkit_queue_requests {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        self.tokenize.write(
            &mut out,
            "embedkit_tokenize_seconds",
            "Tokenization time per request.",
        );
        self.queue.write(
            &mut out,
            "embedkit_queue_seconds",
            "Time from queueing to the request's first forward pass.",
        );
        self.inference.write(
            &mut out,
            "embedkit_inference_seconds",
            "Forward-pass time of the batches a request was in.",
        );
        self.total.write(
            &mut out,
            "embedkit_request_seconds",
            "Whole request time, parsing to response.",
        );
        self.batch_texts
            .write(&mut out, "embedkit_batch_texts", "Texts per forward pass.");
        self.batch_tokens.write(
            &mut out,
            "embedkit_batch_tokens",
            "Tokens per forward pass.",
        );
        out
    }
}
