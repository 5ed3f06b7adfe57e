//! The speed benchmark: throughput, single-text latency, and how cost grows with text length and batch size.

use embedkit_core::{EmbedError, Embedder, EncodeOptions};
use serde::Serialize;
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone)]
pub struct SpeedConfig {
    /// Batch size of the throughput run.
    pub batch_size: usize,
    /// Single-text encodes for the latency percentiles.
    pub latency_runs: usize,
    /// Token lengths for the length sweep (capped at the model's limit by the caller).
    pub lengths: Vec<usize>,
    /// Batch sizes for the batch sweep.
    pub batch_sizes: Vec<usize>,
    /// Texts per point of the sweeps.
    pub sweep_texts: usize,
    /// Passes over the corpus for the throughput figure (the best pass counts).
    pub passes: usize,
}

impl Default for SpeedConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            latency_runs: 200,
            lengths: vec![16, 32, 64, 128, 256, 512],
            batch_sizes: vec![1, 8, 32, 128, 256],
            sweep_texts: 256,
            passes: 2,
        }
    }
}

/// One point of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    /// Tokens per text (length sweep) or texts per batch (batch sweep).
    pub x: usize,
    /// Texts per second.
    pub sentences_per_s: f64,
    /// Tokens per second.
    pub tokens_per_s: f64,
}

/// The result of [`run_speed`].
#[derive(Debug, Clone, Serialize)]
pub struct SpeedReport {
    /// The embedder's name.
    pub model: String,
    /// Texts in the throughput corpus.
    pub texts: usize,
    /// Mean tokens per text of the corpus.
    pub mean_tokens: f64,
    /// Batch size of the throughput run.
    pub batch_size: usize,
    /// Corpus texts per second (best pass).
    pub sentences_per_s: f64,
    /// Corpus tokens per second (best pass).
    pub tokens_per_s: f64,
    /// Median single-text latency, ms.
    pub latency_p50_ms: f64,
    /// 99th percentile single-text latency, ms.
    pub latency_p99_ms: f64,
    /// Output dimensions.
    pub dims: usize,
    /// Bytes of one f32 vector.
    pub bytes_per_vector: usize,
    /// Tokens/s by text length.
    pub by_length: Vec<SweepPoint>,
    /// Texts/s by batch size.
    pub by_batch: Vec<SweepPoint>,
}

/// Runs the benchmark. `count_tokens` gives the tokens of one text (special tokens included) as the model sees
/// them; `long_text` is a text longer than the longest length in the sweep, cut to each length with
/// `max_length`.
pub fn run_speed(
    embedder: &dyn Embedder,
    texts: &[String],
    long_text: &str,
    count_tokens: &dyn Fn(&str, Option<usize>) -> usize,
    config: &SpeedConfig,
    mut progress: impl FnMut(&str),
) -> Result<SpeedReport, EmbedError> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let total_tokens: usize = refs.iter().map(|t| count_tokens(t, None)).sum();
    let opts = EncodeOptions {
        batch_size: Some(config.batch_size),
        ..Default::default()
    };
    // Warm-up: page in weights, grow buffers.
    embedder.embed(&refs[..refs.len().min(config.batch_size)], &opts)?;
    progress("throughput");
    let mut best = Duration::MAX;
    for _ in 0..config.passes.max(1) {
        let start = Instant::now();
        embedder.embed(&refs, &opts)?;
        best = best.min(start.elapsed());
    }
    let secs = best.as_secs_f64();

    progress("latency");
    let mut latencies = Vec::with_capacity(config.latency_runs);
    let single = EncodeOptions::default();
    for i in 0..config.latency_runs {
        let t = refs[i % refs.len().max(1)];
        let start = Instant::now();
        embedder.embed(&[t], &single)?;
        latencies.push(start.elapsed().as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);

    if !config.lengths.is_empty() {
        progress("length sweep");
    }
    let mut by_length = Vec::new();
    for &len in &config.lengths {
        let batch: Vec<&str> = vec![long_text; config.sweep_texts];
        let o = EncodeOptions {
            batch_size: Some(config.batch_size),
            max_length: Some(len),
            ..Default::default()
        };
        let tokens = count_tokens(long_text, Some(len));
        if by_length.iter().any(|p: &SweepPoint| p.x == tokens) {
            continue; // the model's limit capped this length to one already measured
        }
        let start = Instant::now();
        embedder.embed(&batch, &o)?;
        let s = start.elapsed().as_secs_f64();
        by_length.push(SweepPoint {
            x: tokens,
            sentences_per_s: batch.len() as f64 / s,
            tokens_per_s: (batch.len() * tokens) as f64 / s,
        });
    }

    let mut by_batch = Vec::new();
    if !config.batch_sizes.is_empty() {
        progress("batch sweep");
    }
    // Without batch sizes (`--no-sweeps`) the sweep's texts are not even tokenized for their count.
    let sweep: Vec<&str> = if config.batch_sizes.is_empty() {
        Vec::new()
    } else {
        refs.iter()
            .copied()
            .cycle()
            .take(config.sweep_texts.max(1))
            .collect()
    };
    let sweep_tokens: usize = sweep.iter().map(|t| count_tokens(t, None)).sum();
    for &b in &config.batch_sizes {
        let o = EncodeOptions {
            batch_size: Some(b),
            ..Default::default()
        };
        let start = Instant::now();
        embedder.embed(&sweep, &o)?;
        let s = start.elapsed().as_secs_f64();
        by_batch.push(SweepPoint {
            x: b,
            sentences_per_s: sweep.len() as f64 / s,
            tokens_per_s: sweep_tokens as f64 / s,
        });
    }

    Ok(SpeedReport {
        model: embedder.name().to_string(),
        texts: refs.len(),
        mean_tokens: total_tokens as f64 / refs.len().max(1) as f64,
        batch_size: config.batch_size,
        sentences_per_s: refs.len() as f64 / secs,
        tokens_per_s: total_tokens as f64 / secs,
        latency_p50_ms: percentile(&latencies, 0.50),
        latency_p99_ms: percentile(&latencies, 0.99),
        dims: embedder.dims(),
        bytes_per_vector: embedder.dims() * 4,
        by_length,
        by_batch,
    })
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Peak resident memory of this process in bytes (Linux `VmHWM`), if the OS tells.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// Resident memory of this process now in bytes (Linux `VmRSS`), if the OS tells.
pub fn current_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

/// A `kB` field of /proc/self/status, in bytes.
fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn peak_rss_is_reported_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap() > 1 << 20);
        }
    }
}
