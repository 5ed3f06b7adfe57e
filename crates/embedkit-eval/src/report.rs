//! Comparison reports: one markdown table per task, JSON for machines, and a quality-against-throughput plot
//! (marker area grows with the vector's dimensions) like sentence-transformers' model comparison.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use embedkit_core::Usage;
use serde::Serialize;

use crate::tasks::TaskResult;

/// What a report says about one model besides its task scores.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// The name shown in tables (e.g. `all-MiniLM-L6-v2 (int8)`).
    pub name: String,
    /// Output dimensions.
    pub dims: usize,
    /// Texts per second on the speed corpus, when measured.
    pub throughput_texts_per_s: Option<f64>,
    /// Median single-text latency, ms, when measured.
    pub latency_p50_ms: Option<f64>,
    /// Resident memory the model added when loaded, in bytes, when measured.
    pub memory_bytes: Option<u64>,
    /// Requests, tokens and cost, for API models.
    pub usage: Option<UsageSummary>,
}

/// [`Usage`] in a serializable form.
#[derive(Debug, Clone, Serialize)]
pub struct UsageSummary {
    /// HTTP requests.
    pub requests: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// US dollars, when priced.
    pub cost_usd: Option<f64>,
}

impl From<Usage> for UsageSummary {
    fn from(u: Usage) -> Self {
        UsageSummary {
            requests: u.requests,
            input_tokens: u.input_tokens,
            cost_usd: u.cost_usd,
        }
    }
}

/// One model's result on one task.
#[derive(Debug, Clone, Serialize)]
pub struct ModelTaskResult {
    /// The model's display name.
    pub model: String,
    /// The result.
    #[serde(flatten)]
    pub result: TaskResult,
}

/// Everything an `embedkit eval` run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvalReport {
    /// The models, in command-line order.
    pub models: Vec<ModelSummary>,
    /// Every (model, task) result.
    pub results: Vec<ModelTaskResult>,
}

/// Metric keys shown in the markdown table of a task kind (JSON has them all).
fn table_columns(kind: &str) -> Vec<&'static str> {
    match kind {
        "retrieval" => vec![
            "ndcg@10",
            "map@10",
            "recall@10",
            "precision@10",
            "mrr@10",
            "ndcg@100",
            "recall@100",
            "recall@1000",
        ],
        "analogy" => vec!["accuracy", "questions", "oov"],
        _ => vec![
            "spearman",
            "pearson",
            "dot_spearman",
            "euclidean_spearman",
            "manhattan_spearman",
        ],
    }
}

fn fmt_bytes(b: u64) -> String {
    format!("{:.0} MB", b as f64 / 1e6)
}

impl EvalReport {
    /// Task names in first-seen order.
    pub fn tasks(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.results {
            if !out.contains(&r.result.task) {
                out.push(r.result.task.clone());
            }
        }
        out
    }

    /// One markdown table per task (rows: models), then the models table (dims, speed, memory, cost).
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        for task in self.tasks() {
            let rows: Vec<&ModelTaskResult> = self
                .results
                .iter()
                .filter(|r| r.result.task == task)
                .collect();
            let Some(first) = rows.first() else { continue };
            let cols = table_columns(first.result.kind);
            let _ = writeln!(md, "### {task} ({})\n", first.result.kind);
            let _ = writeln!(md, "| model | {} | encode s |", cols.join(" | "));
            let _ = writeln!(md, "|---|{}---:|", "---:|".repeat(cols.len()));
            for r in rows {
                let values: Vec<String> = cols
                    .iter()
                    .map(|c| {
                        r.result
                            .metrics
                            .get(*c)
                            .map_or("–".to_string(), |v| format!("{v:.4}"))
                    })
                    .collect();
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.1} |",
                    r.model,
                    values.join(" | "),
                    r.result.encode_seconds
                );
            }
            md.push('\n');
        }
        if !self.models.is_empty() {
            let _ = writeln!(md, "### models\n");
            let _ = writeln!(
                md,
                "| model | dims | texts/s | p50 ms | memory | requests | tokens | cost |"
            );
            let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
            for m in &self.models {
                let opt =
                    |v: Option<f64>, p: usize| v.map_or("–".to_string(), |v| format!("{v:.p$}"));
                let (req, tok, cost) = match &m.usage {
                    Some(u) => (
                        u.requests.to_string(),
                        u.input_tokens.to_string(),
                        u.cost_usd.map_or("–".to_string(), |c| format!("${c:.4}")),
                    ),
                    None => ("–".into(), "–".into(), "–".into()),
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {req} | {tok} | {cost} |",
                    m.name,
                    m.dims,
                    opt(m.throughput_texts_per_s, 1),
                    opt(m.latency_p50_ms, 2),
                    m.memory_bytes.map_or("–".to_string(), fmt_bytes),
                );
            }
            md.push('\n');
        }
        md
    }

    /// The report as JSON: `{"models": [...], "results": [{"model", "task", "kind", "metrics": {...}, ...}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("an EvalReport holds only strings, numbers and maps")
    }

    /// Main-metric values per task and model: task → [(model, value)].
    fn main_scores(&self) -> BTreeMap<String, Vec<(String, f64)>> {
        let mut out: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        for r in &self.results {
            if let Some(v) = r.result.metrics.get(r.result.main_metric) {
                out.entry(format!("{} — {}", r.result.task, r.result.main_metric))
                    .or_default()
                    .push((r.model.clone(), *v));
            }
        }
        out
    }

    /// Writes `report.md`, `results.json` and `quality_vs_speed.svg` into `dir` (created if missing), each
    /// atomically. Returns the paths written.
    pub fn write_dir(&self, dir: &Path, title: &str) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        let svg_name = "quality_vs_speed.svg";
        let plotted = self
            .models
            .iter()
            .any(|m| m.throughput_texts_per_s.is_some());
        if plotted {
            let svg = self.svg_plot(title);
            written.push(write_atomic(&dir.join(svg_name), svg.as_bytes())?);
        }
        let mut md = format!("# {title}\n\n");
        if plotted {
            let _ = writeln!(md, "![quality against throughput]({svg_name})\n");
        }
        md.push_str(&self.markdown());
        written.push(write_atomic(&dir.join("report.md"), md.as_bytes())?);
        let json = serde_json::to_vec_pretty(&self.to_json())
            .expect("serializing a JSON value to memory cannot fail");
        written.push(write_atomic(&dir.join("results.json"), &json)?);
        Ok(written)
    }

    /// One panel per task: throughput (x, log scale) against the task's main metric (y); each model a
    /// labelled marker whose area is proportional to its dimensions.
    pub fn svg_plot(&self, title: &str) -> String {
        use plotters::prelude::*;
        let scores = self.main_scores();
        let speed: BTreeMap<&str, (f64, usize)> = self
            .models
            .iter()
            .filter_map(|m| {
                m.throughput_texts_per_s
                    .map(|t| (m.name.as_str(), (t, m.dims)))
            })
            .collect();
        let panels = scores.len().max(1);
        let (w, h) = (720u32, 60 + 420 * panels as u32);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            let _ = root.fill(&WHITE);
            let root = root
                .titled(title, ("sans-serif", 22))
                .unwrap_or_else(|_| root.clone());
            let areas = root.split_evenly((panels, 1));
            let max_dims = speed.values().map(|v| v.1).max().unwrap_or(1).max(1) as f64;
            for (area, (task, points)) in areas.iter().zip(&scores) {
                let pts: Vec<(&str, f64, f64, usize)> = points
                    .iter()
                    .filter_map(|(m, v)| {
                        speed.get(m.as_str()).map(|(t, d)| (m.as_str(), *t, *v, *d))
                    })
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                let (xmin, xmax) = pts
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
                let (ymin, ymax) = pts
                    .iter()
                    .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.2), b.max(p.2)));
                let ypad = ((ymax - ymin) * 0.25).max(0.01);
                let chart = ChartBuilder::on(area)
                    .caption(task, ("sans-serif", 16))
                    .margin(20)
                    .x_label_area_size(40)
                    .y_label_area_size(60)
                    .build_cartesian_2d(
                        ((xmin / 2.0).max(1e-3)..xmax * 2.0).log_scale(),
                        (ymin - ypad)..(ymax + ypad),
                    );
                let Ok(mut chart) = chart else { continue };
                let _ = chart
                    .configure_mesh()
                    .x_desc("texts per second (log)")
                    .y_desc(task.rsplit(" — ").next().unwrap_or("score"))
                    .draw();
                for (i, (name, x, y, dims)) in pts.iter().enumerate() {
                    let color = Palette99::pick(i).to_rgba();
                    let radius = (6.0 + 18.0 * (*dims as f64 / max_dims).sqrt()) as i32;
                    let _ = chart.draw_series(std::iter::once(Circle::new(
                        (*x, *y),
                        radius,
                        color.mix(0.5).filled(),
                    )));
                    let _ = chart.draw_series(std::iter::once(Text::new(
                        format!("{name} ({dims}d)"),
                        (*x, *y),
                        ("sans-serif", 13).into_font().color(&BLACK),
                    )));
                }
            }
            let _ = root.present();
        }
        svg
    }
}

/// Writes `bytes` to `path` atomically; returns the path.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    embedkit_core::write_atomic(path, bytes)?;
    Ok(path.to_path_buf())
}
