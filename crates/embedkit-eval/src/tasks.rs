//! Running evaluation tasks on an embedder: retrieval over a BEIR folder, correlation with human scores for
//! sentence, document and word pairs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use embedkit_core::{Embedder, Embeddings, EncodeOptions, Metric};
use serde::Serialize;

use crate::datasets::{LeeDocuments, RetrievalDataset, ScoredPairs, load_word_pairs};
use crate::error::EvalError;
use crate::metrics::{self, RankingScores, Run};
use crate::stats::{pearson, spearman};

/// Texts per `embed` call: small enough for a lively progress bar, large enough to keep batches full.
const ENCODE_CHUNK: usize = 256;

/// Told how far encoding has got, for progress bars. Every method has a no-op default.
pub trait Progress {
    /// Starts a phase that will encode `total` texts.
    fn start(&self, what: &str, total: usize) {
        let _ = (what, total);
    }
    /// `n` more texts are done.
    fn advance(&self, n: usize) {
        let _ = n;
    }
    /// The phase is over.
    fn finish(&self) {}
}

/// A [`Progress`] that shows nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// An evaluation task, as `embedkit eval --task` names it.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// A BEIR/MTEB retrieval folder and its qrels split.
    Retrieval {
        /// The folder.
        dir: PathBuf,
        /// The qrels split (`test` unless given as `retrieval:DIR@SPLIT`).
        split: String,
    },
    /// Scored sentence pairs (TSV, CSV or JSONL).
    Sts {
        /// The file.
        path: PathBuf,
    },
    /// gensim's Lee-50 documents with human similarities (folder holding `lee.cor`).
    Lee {
        /// The folder.
        dir: PathBuf,
    },
    /// Word analogies in word2vec's questions-words.txt format ("king − man + woman ≈ queen"), scored like gensim's
    /// `evaluate_word_analogies` over the vocabulary of the questions' own words.
    Analogy {
        /// The questions file.
        path: PathBuf,
    },
    /// Word pairs with human similarity (WordSim-353, SimLex-999 …).
    WordPairs {
        /// Short name for reports (`wordsim`, `simlex`).
        name: String,
        /// The file.
        path: PathBuf,
    },
}

impl Task {
    /// A short name for tables: the folder or file name, or the data set's name.
    pub fn name(&self) -> String {
        let stem = |p: &Path| {
            p.file_stem()
                .or_else(|| p.file_name())
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string())
        };
        match self {
            Task::Retrieval { dir, split } => {
                let name = dir
                    .canonicalize()
                    .ok()
                    .as_deref()
                    .map(stem)
                    .unwrap_or_else(|| stem(dir));
                if split == "test" {
                    name
                } else {
                    format!("{name}@{split}")
                }
            }
            Task::Sts { path } => stem(path),
            Task::Lee { .. } => "lee".to_string(),
            Task::Analogy { .. } => "analogy".to_string(),
            Task::WordPairs { name, .. } => name.clone(),
        }
    }

    /// The metric a comparison ranks models by: nDCG@10 for retrieval, cosine Spearman otherwise (as MTEB).
    pub fn main_metric(&self) -> &'static str {
        match self {
            Task::Retrieval { .. } => "ndcg@10",
            Task::Analogy { .. } => "accuracy",
            _ => "spearman",
        }
    }
}

/// How texts are encoded and what retrieval scores.
#[derive(Debug, Clone)]
pub struct TaskSettings {
    /// Options for queries (and for both sides of pair tasks).
    pub query: EncodeOptions,
    /// Options for corpus documents.
    pub document: EncodeOptions,
    /// Cut-offs for ranking metrics.
    pub ks: Vec<usize>,
    /// Drop a retrieved document whose id equals the query's id (MTEB does for ArguAna).
    pub ignore_identical_ids: bool,
    /// Similarity for retrieval.
    pub metric: Metric,
    /// Search through a quantized index (built in a temp folder with the same code as `embedkit index build`)
    /// instead of exact f32 search, to measure what quantization costs in quality.
    pub index: Option<IndexSearch>,
}

/// How [`TaskSettings::index`] searches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexSearch {
    /// Primary precision: `F32`, `Int8` or `Ubinary` (packed sign bits).
    pub precision: embedkit_vectors::Precision,
    /// Binary indexes: rescore `rescore × k` Hamming candidates (0 = rank by Hamming distance alone).
    pub rescore: usize,
    /// Binary indexes: what the candidates are rescored against (`Int8` or `F32`; `None` = the bits).
    pub rescore_precision: Option<embedkit_vectors::Precision>,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            query: EncodeOptions::default(),
            document: EncodeOptions::default(),
            ks: metrics::DEFAULT_KS.to_vec(),
            ignore_identical_ids: false,
            metric: Metric::Cosine,
            index: None,
        }
    }
}

/// The outcome of one task for one model.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    /// The task's name.
    pub task: String,
    /// `retrieval`, `sts`, `lee` or `word-pairs`.
    pub kind: &'static str,
    /// The key of the metric that ranks models.
    pub main_metric: &'static str,
    /// Metric key → value (`ndcg@10`, `spearman` …).
    pub metrics: BTreeMap<String, f64>,
    /// Texts embedded (corpus + queries, or unique pair texts).
    pub texts: usize,
    /// Wall time spent embedding.
    pub encode_seconds: f64,
    /// Per-query ranking values, for retrieval (not serialized into reports by default).
    #[serde(skip)]
    pub per_query: Option<RankingScores>,
    /// The run, for retrieval (query → ranked (doc, score)), to save as a TREC run file.
    #[serde(skip)]
    pub run: Option<Run>,
}

/// Embeds `texts` in chunks, reporting progress.
pub fn encode_all(
    embedder: &dyn Embedder,
    texts: &[&str],
    options: &EncodeOptions,
    what: &str,
    progress: &dyn Progress,
) -> Result<Embeddings, EvalError> {
    progress.start(what, texts.len());
    let dims = options.truncate_dim.unwrap_or(embedder.dims());
    let mut out = Embeddings::empty(dims);
    for chunk in texts.chunks(ENCODE_CHUNK) {
        let vectors = embedder
            .embed(chunk, options)
            .map_err(|source| EvalError::Embed {
                model: embedder.name().to_string(),
                source,
            })?;
        if out.is_empty() && vectors.dims() != out.dims() {
            out = Embeddings::empty(vectors.dims());
        }
        out.append(&vectors).map_err(|e| EvalError::Embed {
            model: embedder.name().to_string(),
            source: embedkit_core::EmbedError::Backend(Box::new(e)),
        })?;
        progress.advance(chunk.len());
    }
    progress.finish();
    Ok(out)
}

/// Runs `task` on `embedder`.
pub fn run_task(
    embedder: &dyn Embedder,
    task: &Task,
    settings: &TaskSettings,
    progress: &dyn Progress,
) -> Result<TaskResult, EvalError> {
    match task {
        Task::Retrieval { dir, split } => {
            let ds = RetrievalDataset::load(dir, split)?;
            let mut result = run_retrieval(embedder, &ds, settings, progress)?;
            result.task = task.name();
            Ok(result)
        }
        Task::Sts { path } => {
            let pairs = ScoredPairs::load(path)?;
            run_pairs(embedder, &pairs, &settings.query, task, "sts", progress)
        }
        Task::Lee { dir } => {
            let lee = LeeDocuments::load(dir)?;
            let started = Instant::now();
            let refs: Vec<&str> = lee.documents.iter().map(String::as_str).collect();
            let vectors = encode_all(embedder, &refs, &settings.query, "lee documents", progress)?;
            let seconds = started.elapsed().as_secs_f64();
            let pairs: Vec<(usize, usize, f64)> = lee.pairs.clone();
            let mut result = correlate(&vectors, &pairs, task, "lee");
            result.texts = refs.len();
            result.encode_seconds = seconds;
            Ok(result)
        }
        Task::Analogy { path } => run_analogy(embedder, path, &settings.query, task, progress),
        Task::WordPairs { path, .. } => {
            let pairs = load_word_pairs(path)?;
            run_pairs(
                embedder,
                &pairs,
                &settings.query,
                task,
                "word-pairs",
                progress,
            )
        }
    }
}

fn run_pairs(
    embedder: &dyn Embedder,
    pairs: &ScoredPairs,
    options: &EncodeOptions,
    task: &Task,
    kind: &'static str,
    progress: &dyn Progress,
) -> Result<TaskResult, EvalError> {
    let texts = pairs.unique_texts();
    let row: HashMap<&str, usize> = texts.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let started = Instant::now();
    let vectors = encode_all(embedder, &texts, options, "pair texts", progress)?;
    let seconds = started.elapsed().as_secs_f64();
    let indexed: Vec<(usize, usize, f64)> = pairs
        .pairs
        .iter()
        .map(|(a, b, s)| (row[a.as_str()], row[b.as_str()], *s))
        .collect();
    let mut result = correlate(&vectors, &indexed, task, kind);
    result.texts = texts.len();
    result.encode_seconds = seconds;
    Ok(result)
}

/// Pearson and Spearman of each similarity function against the gold scores. `spearman`/`pearson` are the
/// cosine ones; `dot_*`, `euclidean_*`, `manhattan_*` use the other functions (distances negated).
fn correlate(
    vectors: &Embeddings,
    pairs: &[(usize, usize, f64)],
    task: &Task,
    kind: &'static str,
) -> TaskResult {
    let gold: Vec<f64> = pairs.iter().map(|p| p.2).collect();
    let mut out = BTreeMap::new();
    for metric in [
        Metric::Cosine,
        Metric::Dot,
        Metric::Euclidean,
        Metric::Manhattan,
    ] {
        let predicted: Vec<f64> = pairs
            .iter()
            .map(|&(i, j, _)| f64::from(metric.score(vectors.row(i), vectors.row(j))))
            .collect();
        let (p, s) = (pearson(&predicted, &gold), spearman(&predicted, &gold));
        out.insert(format!("{metric}_pearson"), p);
        out.insert(format!("{metric}_spearman"), s);
        if metric == Metric::Cosine {
            out.insert("pearson".to_string(), p);
            out.insert("spearman".to_string(), s);
        }
    }
    out.insert("pairs".to_string(), pairs.len() as f64);
    TaskResult {
        task: task.name(),
        kind,
        main_metric: task.main_metric(),
        metrics: out,
        texts: 0,
        encode_seconds: 0.0,
        per_query: None,
        run: None,
    }
}

/// Exact search of every judged query over the whole corpus, scored with [`metrics::evaluate`].
pub fn run_retrieval(
    embedder: &dyn Embedder,
    ds: &RetrievalDataset,
    settings: &TaskSettings,
    progress: &dyn Progress,
) -> Result<TaskResult, EvalError> {
    let started = Instant::now();
    let doc_texts: Vec<String> = ds.corpus.iter().map(|d| d.encode_text()).collect();
    let doc_refs: Vec<&str> = doc_texts.iter().map(String::as_str).collect();
    let docs = encode_all(embedder, &doc_refs, &settings.document, "corpus", progress)?;
    let query_refs: Vec<&str> = ds.queries.iter().map(|(_, t)| t.as_str()).collect();
    let queries = encode_all(embedder, &query_refs, &settings.query, "queries", progress)?;
    let seconds = started.elapsed().as_secs_f64();

    let max_k = settings.ks.iter().copied().max().unwrap_or(10);
    // One extra hit per query in case the query's own id is dropped.
    let want = max_k + usize::from(settings.ignore_identical_ids);
    let hits = match &settings.index {
        None => embedkit_vectors::similarity::top_k(&queries, &docs, want, settings.metric),
        Some(index) => search_index(embedder, &docs, &queries, want, settings.metric, index)?,
    };
    let mut run = Run::new();
    for ((qid, _), hits) in ds.queries.iter().zip(hits) {
        let ranked: Vec<(String, f64)> = hits
            .into_iter()
            .map(|h| (ds.corpus[h.row].id.clone(), f64::from(h.score)))
            .filter(|(d, _)| !(settings.ignore_identical_ids && d == qid))
            .take(max_k)
            .collect();
        run.insert(qid.clone(), ranked);
    }
    let scores = metrics::evaluate(&ds.qrels, &run, &settings.ks);
    Ok(TaskResult {
        task: ds
            .dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        kind: "retrieval",
        main_metric: "ndcg@10",
        metrics: scores.mean.clone(),
        texts: doc_refs.len() + query_refs.len(),
        encode_seconds: seconds,
        per_query: Some(scores),
        run: Some(run),
    })
}

/// Writes `docs` into a temporary index with `index`'s precision and searches it.
fn search_index(
    embedder: &dyn Embedder,
    docs: &Embeddings,
    queries: &Embeddings,
    top_k: usize,
    metric: Metric,
    index: &IndexSearch,
) -> Result<Vec<Vec<embedkit_vectors::Hit>>, EvalError> {
    use embedkit_vectors::{
        CalibrationRanges, Index, IndexSpec, IndexWriter, Precision, SearchOptions,
    };
    let fail = |reason: String| EvalError::Index { reason };
    let needs_ranges =
        index.precision == Precision::Int8 || index.rescore_precision == Some(Precision::Int8);
    let ranges = if needs_ranges {
        Some(CalibrationRanges::from_embeddings(docs).map_err(|e| fail(e.to_string()))?)
    } else {
        None
    };
    let dir = tempfile::tempdir().map_err(|e| fail(format!("cannot create a temp folder: {e}")))?;
    let path = dir.path().join("eval.idx");
    let spec = IndexSpec {
        model: embedder.name().to_string(),
        fingerprint: embedder.fingerprint(),
        precision: index.precision,
        rescore: index.rescore_precision,
        metric,
        dims: docs.dims(),
        ranges,
        extra: Default::default(),
    };
    let mut writer = IndexWriter::create(&path, spec).map_err(|e| fail(e.to_string()))?;
    writer.add_unnamed(docs).map_err(|e| fail(e.to_string()))?;
    writer.finish().map_err(|e| fail(e.to_string()))?;
    let opened = Index::open(&path).map_err(|e| fail(e.to_string()))?;
    let opts = SearchOptions {
        top_k,
        rescore: index.rescore,
        ..Default::default()
    };
    opened
        .search(queries, &opts)
        .map_err(|e| fail(e.to_string()))
}

/// Analogy accuracy: every distinct word of the questions is embedded once and is a candidate answer.
fn run_analogy(
    embedder: &dyn Embedder,
    path: &Path,
    options: &EncodeOptions,
    task: &Task,
    progress: &dyn Progress,
) -> Result<TaskResult, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    let words = embedkit_vectors::question_words(&text);
    if words.is_empty() {
        return Err(EvalError::dataset(
            path,
            "no analogy questions (lines of four words)",
        ));
    }
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let started = Instant::now();
    let vectors = encode_all(embedder, &refs, options, "analogy words", progress)?;
    let seconds = started.elapsed().as_secs_f64();
    let fail = |e: embedkit_vectors::AnalogyError| EvalError::dataset(path, e.to_string());
    let vocab = embedkit_vectors::WordVectors::new(words.clone(), vectors).map_err(fail)?;
    let report = vocab
        .evaluate(&text, embedkit_vectors::EvaluateOptions::default())
        .map_err(fail)?;
    let mut metrics = BTreeMap::new();
    metrics.insert("accuracy".to_string(), report.total.accuracy());
    metrics.insert("questions".to_string(), report.questions as f64);
    metrics.insert("oov".to_string(), report.oov as f64);
    for section in &report.sections {
        metrics.insert(format!("accuracy:{}", section.section), section.accuracy());
    }
    Ok(TaskResult {
        task: task.name(),
        kind: "analogy",
        main_metric: "accuracy",
        metrics,
        texts: words.len(),
        encode_seconds: seconds,
        per_query: None,
        run: None,
    })
}
