//! `embedkit bench`'s reading of the engine against the machine: the CPU's measured peak (the `peak` loops of
//! embedkit-cpu), the instruction set the kernels took, and the linear layers' achieved rate as a share of that
//! peak.
//!
//! The achieved rate is end to end: the FLOPs of the linear layers (counted from the model's shape and the
//! tokens processed) divided by the whole throughput run's time, which also holds the tokenizer, attention,
//! LayerNorm, GELU and pooling. It is therefore a lower bound on the linear layers' own rate.

use crate::{DEFAULT_MODEL, ModelArgs, input, load_model, progress, providers_cli};
use anyhow::{Result, bail};
use clap::Args;
use embedkit_core::Embedder;
use embedkit_cpu::{Compute, SimdLevel, peak::Peak};
use embedkit_cuda::Device;
use embedkit_model::{Architecture, EncoderConfig};
use std::io::Write;

/// `embedkit bench`: speed of local and API models beside the machine's peak.
#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Models to measure (repeat for several).
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    model: Vec<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Linear-layer arithmetic: f32, int8 or bf16 (bf16 only on CPUs with AVX512_BF16).
    #[arg(long, default_value = "f32")]
    compute: Compute,
    /// Skip measuring the CPU's peak (and the linear layers' share of it).
    #[arg(long)]
    no_peak: bool,
    /// Where the models run: cpu, cuda[:N] or auto (see `embed --help`).
    #[arg(long, default_value = "cpu", value_name = "cpu|auto|cuda[:N]")]
    device: Device,
    /// Corpus, one text per line (default: the built-in 2,000 news sentences).
    #[arg(long, short, value_name = "FILE")]
    input: Option<String>,
    /// Batch size of the throughput run.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Single-text encodes for the latency percentiles.
    #[arg(long, default_value_t = 200)]
    latency_runs: usize,
    /// Skip the length and batch-size sweeps.
    #[arg(long)]
    no_sweeps: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    api: providers_cli::ApiArgs,
}

/// The default benchmark corpus: real news sentences (tools/make_bench_corpus.py).
pub(crate) const BENCH_SENTENCES: &str = include_str!("../../../bench/sentences.txt");
/// Long texts for the length sweep.
pub(crate) const BENCH_LONG: &str = include_str!("../../../bench/long.txt");

/// Runs `embedkit bench`: throughput, latency percentiles, the length and batch sweeps and peak RSS of each
/// model, then the machine's peak and the linear layers' share of it.
pub(crate) fn run(args: BenchArgs, quiet: bool) -> Result<()> {
    let texts: Vec<String> = match &args.input {
        Some(path) => input::read_texts(path, None, "text")?,
        None => BENCH_SENTENCES.lines().map(str::to_string).collect(),
    };
    if texts.is_empty() {
        bail!("the benchmark corpus is empty");
    }
    let long_text: String = BENCH_LONG.lines().take(6).collect::<Vec<_>>().join(" ");
    let config = embedkit_eval::speed::SpeedConfig {
        batch_size: args.batch_size,
        latency_runs: args.latency_runs,
        lengths: if args.no_sweeps {
            vec![]
        } else {
            vec![16, 32, 64, 128, 256, 512]
        },
        batch_sizes: if args.no_sweeps {
            vec![]
        } else {
            vec![1, 8, 32, 128, 256]
        },
        ..Default::default()
    };
    let mut reports = Vec::new();
    // Requests, tokens and cost of each API model's whole run, beside the speed of local ones.
    let mut usages: Vec<(String, Option<embedkit_core::Usage>)> = Vec::new();
    // Each local model's linear-layer cost, for its share of the CPU's peak.
    let mut costs: Vec<Option<LinearCost>> = Vec::new();
    for spec in &args.model {
        let start = std::time::Instant::now();
        if let Some(api) = providers_cli::load(spec, &args.api)? {
            let load_ms = start.elapsed().as_secs_f64() * 1e3;
            // API models take no per-call token cap, so there is no length sweep.
            let api_config = embedkit_eval::speed::SpeedConfig {
                lengths: vec![],
                ..config.clone()
            };
            let report = embedkit_eval::speed::run_speed(
                &api,
                &texts,
                &long_text,
                &providers_cli::count_tokens,
                &api_config,
                |phase| progress::phase(quiet, &format!("{spec}: {phase}…")),
            )?;
            let rss = embedkit_eval::speed::peak_rss_bytes().unwrap_or(0);
            usages.push((spec.clone(), api.usage()));
            costs.push(None);
            reports.push((report, load_ms, rss, providers_cli::backend(&api)));
            continue;
        }
        let model = load_model(
            &ModelArgs {
                model: spec.clone(),
                threads: args.threads,
                compute: args.compute,
                device: args.device,
                api: Default::default(),
            },
            quiet,
        )?;
        let load_ms = start.elapsed().as_secs_f64() * 1e3;
        let count = |t: &str, max: Option<usize>| {
            model
                .tokenizer()
                .encode_batch(&[t.to_string()], max)
                .map_or(0, |e| e.first().map_or(0, |x| x.ids.len()))
        };
        let report = embedkit_eval::speed::run_speed(
            &model,
            &texts,
            &long_text,
            &count,
            &config,
            |phase| progress::phase(quiet, &format!("{spec}: {phase}…")),
        )?;
        let rss = embedkit_eval::speed::peak_rss_bytes().unwrap_or(0);
        usages.push((spec.clone(), None));
        costs.push(linear_cost(model.config()));
        reports.push((report, load_ms, rss, model.info().backend));
    }
    // Measured after the models ran, so the loops do not share the cores with loading.
    let machine = (!args.no_peak).then(|| {
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        Machine::measure(threads)
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        let v: Vec<_> = reports
            .iter()
            .zip(&usages)
            .zip(&costs)
            .map(|(((r, load_ms, rss, backend), (_, usage)), cost)| {
                let mut v = serde_json::to_value(r).expect("a speed report serializes");
                v["usage"] = providers_cli::usage_json(usage.as_ref());
                v["load_ms"] = serde_json::json!(load_ms);
                v["peak_rss_bytes"] = serde_json::json!(rss);
                v["backend"] = serde_json::json!(backend);
                v["threads"] = serde_json::json!(args.threads);
                if let Some(m) = &machine {
                    v["machine"] = m.json();
                    v["linear"] = m.linear_json(*cost, r.tokens_per_s, args.compute);
                }
                v
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "| model | backend | texts/s | tokens/s | p50 ms | p99 ms | load ms | peak RSS MB | dims | bytes/vector |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (r, load_ms, rss, backend) in &reports {
        writeln!(
            out,
            "| {} | {} | {:.1} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {} | {} |",
            r.model,
            backend,
            r.sentences_per_s,
            r.tokens_per_s,
            r.latency_p50_ms,
            r.latency_p99_ms,
            load_ms,
            *rss as f64 / 1e6,
            r.dims,
            r.bytes_per_vector
        )?;
    }
    writeln!(
        out,
        "\n{} texts, {:.1} tokens each on average, batch size {}",
        reports[0].0.texts, reports[0].0.mean_tokens, reports[0].0.batch_size
    )?;
    providers_cli::usage_table(&usages, &mut out)?;
    if let Some(m) = &machine {
        let rows: Vec<_> = reports
            .iter()
            .zip(&costs)
            .map(|((r, ..), c)| (r.model.clone(), *c, r.tokens_per_s))
            .collect();
        m.write_table(&mut out, &rows, args.compute)?;
    }
    for (r, ..) in &reports {
        if !r.by_length.is_empty() {
            writeln!(
                out,
                "\n{}: tokens/s by text length (batch {})",
                r.model, r.batch_size
            )?;
            writeln!(out, "| tokens | texts/s | tokens/s |\n|---:|---:|---:|")?;
            for p in &r.by_length {
                writeln!(
                    out,
                    "| {} | {:.1} | {:.0} |",
                    p.x, p.sentences_per_s, p.tokens_per_s
                )?;
            }
        }
        if !r.by_batch.is_empty() {
            writeln!(out, "\n{}: throughput by batch size", r.model)?;
            writeln!(out, "| batch | texts/s | tokens/s |\n|---:|---:|---:|")?;
            for p in &r.by_batch {
                writeln!(
                    out,
                    "| {} | {:.1} | {:.0} |",
                    p.x, p.sentences_per_s, p.tokens_per_s
                )?;
            }
        }
    }
    Ok(())
}

/// What the linear layers of one model cost per token.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinearCost {
    /// Multiply-adds per token (FLOPs are twice this).
    pub macs_per_token: f64,
}

/// Multiply-adds of every linear layer for one token, from the config; `None` for shapes not counted here.
pub(crate) fn linear_cost(config: &EncoderConfig) -> Option<LinearCost> {
    let (h, inter, layers) = (
        config.hidden_size as f64,
        config.intermediate_size as f64,
        config.num_layers as f64,
    );
    let per_layer = match config.architecture {
        // Q, K, V and the attention output (4·h²), then up and down (2·h·inter).
        Architecture::Bert | Architecture::XlmRoberta | Architecture::MPNet => {
            4.0 * h * h + 2.0 * h * inter
        }
        // GeGLU: the up projection is h → 2·inter (gate and value), the down one inter → h.
        Architecture::ModernBert => 4.0 * h * h + 3.0 * h * inter,
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    Some(LinearCost {
        macs_per_token: per_layer * layers,
    })
}

/// The machine the benchmark ran on.
pub(crate) struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// The element-wise kernels' instruction set (`EMBEDKIT_SIMD` honoured).
    pub simd: SimdLevel,
    /// Measured peaks on the benchmark's threads.
    pub peak: Peak,
}

impl Machine {
    /// Reads the CPU's name and measures its peak on `threads` threads (about a second).
    pub(crate) fn measure(threads: usize) -> Self {
        Self {
            cpu: cpu_model(),
            simd: SimdLevel::detect(),
            peak: embedkit_cpu::peak::measure(threads),
        }
    }

    /// The peak the linear layers of `compute` are read against, and its unit.
    fn peak_for(&self, compute: Compute) -> (Option<f64>, &'static str) {
        match compute {
            Compute::F32 => (self.peak.f32_gflops(), "GFLOP/s"),
            // With AMX on, the int8 and bf16 linear layers run on tiles: their peak is the tiles'.
            Compute::Int8 => (
                self.peak.amx_int8_gmacs.or(self.peak.int8_vnni_gmacs),
                "GMAC/s",
            ),
            Compute::Bf16 => (
                self.peak.amx_bf16_gflops.or(self.peak.bf16_gflops),
                "GFLOP/s",
            ),
        }
    }

    /// The linear layers' achieved rate at `tokens_per_s` in `compute`'s unit (GMAC/s for int8, GFLOP/s
    /// otherwise), and its share of the matching peak.
    pub(crate) fn achieved(
        &self,
        cost: LinearCost,
        tokens_per_s: f64,
        compute: Compute,
    ) -> (f64, Option<f64>, &'static str) {
        let (peak, unit) = self.peak_for(compute);
        let macs = cost.macs_per_token * tokens_per_s / 1e9;
        let rate = if compute == Compute::Int8 {
            macs
        } else {
            2.0 * macs
        };
        (rate, peak.map(|p| rate / p), unit)
    }

    /// The machine as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "cpu": self.cpu,
            "simd": format!("{:?}", self.simd),
            "threads": self.peak.threads,
            "peak": {
                "f32_avx512_gflops": self.peak.f32_avx512_gflops,
                "f32_avx2_gflops": self.peak.f32_avx2_gflops,
                "int8_vnni_gmacs": self.peak.int8_vnni_gmacs,
                "bf16_gflops": self.peak.bf16_gflops,
                "amx_bf16_gflops": self.peak.amx_bf16_gflops,
                "amx_int8_gmacs": self.peak.amx_int8_gmacs,
            },
            "amx": embedkit_cpu::amx::status().to_string(),
        })
    }

    /// One model's linear-layer efficiency as JSON (`null` fields where not counted).
    pub(crate) fn linear_json(
        &self,
        cost: Option<LinearCost>,
        tokens_per_s: f64,
        compute: Compute,
    ) -> serde_json::Value {
        let Some(cost) = cost else {
            return serde_json::Value::Null;
        };
        let (rate, share, unit) = self.achieved(cost, tokens_per_s, compute);
        serde_json::json!({
            "compute": compute_name(compute),
            "macs_per_token": cost.macs_per_token,
            "achieved": rate,
            "unit": unit,
            "share_of_peak": share,
            "timing": "end to end: linear-layer FLOPs over the whole throughput run",
        })
    }

    /// The machine line and one efficiency row per model, as Markdown.
    pub(crate) fn write_table(
        &self,
        out: &mut dyn Write,
        rows: &[(String, Option<LinearCost>, f64)],
        compute: Compute,
    ) -> std::io::Result<()> {
        let fmt =
            |v: Option<f64>, unit: &str| v.map_or("—".to_string(), |v| format!("{v:.1} {unit}"));
        writeln!(
            out,
            "\nCPU: {} · SIMD path {:?} · AMX {} · peak on {} threads: f32 {} (AVX-512 {}, AVX2 {}), int8 VNNI {}, bf16 {}, AMX bf16 {}, AMX int8 {}",
            self.cpu,
            self.simd,
            embedkit_cpu::amx::status(),
            self.peak.threads,
            fmt(self.peak.f32_gflops(), "GFLOP/s"),
            fmt(self.peak.f32_avx512_gflops, "GFLOP/s"),
            fmt(self.peak.f32_avx2_gflops, "GFLOP/s"),
            fmt(self.peak.int8_vnni_gmacs, "GMAC/s"),
            fmt(self.peak.bf16_gflops, "GFLOP/s"),
            fmt(self.peak.amx_bf16_gflops, "GFLOP/s"),
            fmt(self.peak.amx_int8_gmacs, "GMAC/s"),
        )?;
        writeln!(
            out,
            "\nLinear layers, {} (their FLOPs over the end-to-end throughput time):",
            compute_name(compute)
        )?;
        writeln!(
            out,
            "| model | MMAC/token | achieved | share of peak |\n|---|---:|---:|---:|"
        )?;
        for (model, cost, tokens_per_s) in rows {
            match cost {
                Some(c) => {
                    let (rate, share, unit) = self.achieved(*c, *tokens_per_s, compute);
                    writeln!(
                        out,
                        "| {model} | {:.1} | {rate:.1} {unit} | {} |",
                        c.macs_per_token / 1e6,
                        share.map_or("—".to_string(), |s| format!("{:.0} %", s * 100.0))
                    )?;
                }
                None => writeln!(out, "| {model} | — | — | — |")?,
            }
        }
        Ok(())
    }
}

/// The `--compute` spelling.
fn compute_name(compute: Compute) -> &'static str {
    match compute {
        Compute::F32 => "f32",
        Compute::Int8 => "int8",
        Compute::Bf16 => "bf16",
    }
}

/// The CPU's `model name` (the first one in /proc/cpuinfo), or what the OS does not tell.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| format!("unknown ({})", std::env::consts::ARCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minilm_costs_what_the_docs_say() {
        // all-MiniLM-L6-v2: 6 layers of 1,769,472 multiply-adds per token (docs/PERFORMANCE.md).
        let config = EncoderConfig {
            hidden_size: 384,
            intermediate_size: 1536,
            num_layers: 6,
            ..test_config()
        };
        let cost = linear_cost(&config).expect("BERT is counted");
        assert_eq!(cost.macs_per_token, 6.0 * 1_769_472.0);
    }

    fn test_config() -> EncoderConfig {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/tiny/bert-mean/config.json");
        EncoderConfig::from_file(&dir).expect("tiny BERT config")
    }
}
