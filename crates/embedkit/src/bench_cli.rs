//! `embedkit bench`'s reading of the engine against the machine: the CPU's measured peak (the `peak` loops of
//! embedkit-cpu), the instruction set the kernels took, and the linear layers' achieved rate as a share of that
//! peak.
//!
//! The achieved rate is end to end: the FLOPs of the linear layers (counted from the model's shape and the
//! tokens processed) divided by the whole throughput run's time, which also holds the tokenizer, attention,
//! LayerNorm, GELU and pooling. It is therefore a lower bound on the linear layers' own rate.

use embedkit_cpu::{Compute, SimdLevel, peak::Peak};
use embedkit_model::{Architecture, EncoderConfig};
use std::io::Write;

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
