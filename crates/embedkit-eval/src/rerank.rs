//! Second-stage reranking of a retrieval run: the first stage's best `depth` documents of every query, scored
//! again by a cross-encoder on (query, document) pairs, then evaluated like the first stage. Documents past the
//! depth are dropped, as MTEB's reranking tasks and sentence-transformers' `CrossEncoder.rank` pipelines do.

use std::time::Instant;

use crate::datasets::RetrievalDataset;
use crate::error::EvalError;
use crate::metrics::{self, Run};
use crate::tasks::{Progress, TaskResult, TaskSettings};

/// Pairs per call of the scorer: small enough for a lively progress bar.
const PAIR_CHUNK: usize = 512;

/// Scores (query, document) pairs, one score per pair, higher is better.
pub type PairScorer<'a> =
    dyn FnMut(&[(&str, &str)]) -> Result<Vec<f32>, Box<dyn std::error::Error + Send + Sync>> + 'a;

/// Reranks the best `depth` documents of each query of `first` (a retrieval result on `ds`) with `score` and
/// evaluates the new run with `settings.ks`. The first stage's order is trec_eval's (score, then id,
/// descending); a document's text is [`crate::datasets::Document::encode_text`]; the query text is as the
/// dataset has it.
pub fn rerank_retrieval(
    ds: &RetrievalDataset,
    first: &TaskResult,
    depth: usize,
    settings: &TaskSettings,
    scorer_name: &str,
    score: &mut PairScorer<'_>,
    progress: &dyn Progress,
) -> Result<TaskResult, EvalError> {
    let run = first.run.as_ref().ok_or_else(|| EvalError::Index {
        reason: "reranking needs a retrieval run".into(),
    })?;
    let texts: std::collections::HashMap<&str, String> = ds
        .corpus
        .iter()
        .map(|d| (d.id.as_str(), d.encode_text()))
        .collect();
    let query_text: std::collections::HashMap<&str, &str> = ds
        .queries
        .iter()
        .map(|(id, t)| (id.as_str(), t.as_str()))
        .collect();
    // (query id, doc id, pair) for every pair to score, query by query.
    let mut keys: Vec<(&str, &str)> = Vec::new();
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for (qid, docs) in run {
        let Some(&q) = query_text.get(qid.as_str()) else {
            continue;
        };
        for (doc, _) in metrics::rank(docs).into_iter().take(depth) {
            let Some(text) = texts.get(doc.as_str()) else {
                continue;
            };
            keys.push((qid.as_str(), doc.as_str()));
            pairs.push((q, text.as_str()));
        }
    }
    let started = Instant::now();
    progress.start(&format!("rerank with {scorer_name}"), pairs.len());
    let mut scores = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(PAIR_CHUNK) {
        let s = score(chunk).map_err(|source| EvalError::Embed {
            model: scorer_name.to_string(),
            source: embedkit_core::EmbedError::Backend(source),
        })?;
        if s.len() != chunk.len() {
            return Err(EvalError::Index {
                reason: format!(
                    "{scorer_name} gave {} scores for {} pairs",
                    s.len(),
                    chunk.len()
                ),
            });
        }
        scores.extend(s);
        progress.advance(chunk.len());
    }
    progress.finish();
    let seconds = started.elapsed().as_secs_f64();
    let mut reranked = Run::new();
    for ((qid, doc), s) in keys.iter().zip(&scores) {
        reranked
            .entry(qid.to_string())
            .or_default()
            .push((doc.to_string(), f64::from(*s)));
    }
    let evaluated = metrics::evaluate(&ds.qrels, &reranked, &settings.ks);
    let mut metrics = evaluated.mean.clone();
    metrics.insert("rerank_depth".into(), depth as f64);
    if let Some(&before) = first.metrics.get("ndcg@10") {
        metrics.insert("first_stage_ndcg@10".into(), before);
    }
    Ok(TaskResult {
        task: first.task.clone(),
        kind: "retrieval",
        main_metric: "ndcg@10",
        metrics,
        texts: pairs.len(),
        encode_seconds: seconds,
        per_query: Some(evaluated),
        run: Some(reranked),
    })
}
