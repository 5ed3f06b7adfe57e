//! Ranking metrics exactly as trec_eval (and so pytrec_eval and MTEB) computes them.
//!
//! Conventions, each checked against pytrec_eval by the fixtures of `tools/make_metric_fixtures.py`:
//! - A run's documents are ranked by score, highest first, the score first cast to `f32` (trec_eval keeps it in
//!   a C `float`, so scores closer than f32 resolution tie); equal scores are ordered by document id in
//!   *descending* byte order (trec_eval's `comp_sim_docno`), whatever order the run lists them in.
//! - A document is relevant when its qrels grade is ≥ 1; unjudged documents count as grade 0.
//! - nDCG@k: gain = the grade, discount log2(rank + 1); the ideal ranking sorts all judged grades.
//! - MAP@k: the sum of precision at each relevant rank ≤ k, divided by *all* relevant documents of the query.
//! - Recall@k: relevant documents in the top k over all relevant documents; Precision@k divides by k even when
//!   fewer than k documents were retrieved.
//! - MRR@k (MTEB's own function, not trec_eval's): the reciprocal rank of the first relevant document in the top
//!   k (0 if none), ranking by the full `f64` score, then document id descending.
//! - Only queries present in both the qrels and the run are scored, and means are over those queries (MTEB
//!   averages pytrec_eval's per-query values the same way). A query with no relevant documents scores 0.

use std::collections::{BTreeMap, HashMap};

/// The k values MTEB reports for retrieval tasks.
pub const DEFAULT_KS: [usize; 6] = [1, 3, 5, 10, 100, 1000];

/// Relevance judgements: query id → document id → grade (0 = judged not relevant).
pub type Qrels = BTreeMap<String, BTreeMap<String, i32>>;

/// Retrieved documents with scores per query: query id → [(document id, score)], in any order.
pub type Run = BTreeMap<String, Vec<(String, f64)>>;

/// A measure of ranking quality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Measure {
    /// Normalized discounted cumulative gain (graded).
    Ndcg,
    /// Mean average precision, cut at k.
    Map,
    /// Recall at k.
    Recall,
    /// Precision at k.
    Precision,
    /// Mean reciprocal rank, cut at k.
    Mrr,
}

impl Measure {
    /// Every measure, in report order.
    pub const ALL: [Measure; 5] = [
        Measure::Ndcg,
        Measure::Map,
        Measure::Recall,
        Measure::Precision,
        Measure::Mrr,
    ];

    /// The name used in metric keys (`ndcg`, `map`, `recall`, `precision`, `mrr`).
    pub fn name(self) -> &'static str {
        match self {
            Measure::Ndcg => "ndcg",
            Measure::Map => "map",
            Measure::Recall => "recall",
            Measure::Precision => "precision",
            Measure::Mrr => "mrr",
        }
    }

    /// The metric key for cut-off `k`, e.g. `ndcg@10`.
    pub fn key(self, k: usize) -> String {
        format!("{}@{k}", self.name())
    }
}

/// Per-query and mean values of every measure at every k, keyed like `ndcg@10`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RankingScores {
    /// Mean over the scored queries.
    pub mean: BTreeMap<String, f64>,
    /// Query id → metric key → value.
    pub per_query: BTreeMap<String, BTreeMap<String, f64>>,
}

/// Ranks `docs` the trec_eval way: score (as `f32`) descending, then document id descending. Later duplicates
/// of a document are dropped (trec_eval rejects them; a dictionary-based run cannot have them).
pub fn rank(docs: &[(String, f64)]) -> Vec<&(String, f64)> {
    rank_by(docs, |s| f64::from(s as f32))
}

/// Ranks by a key of the score, descending, then document id descending, dropping later duplicates.
fn rank_by(docs: &[(String, f64)], key: impl Fn(f64) -> f64) -> Vec<&(String, f64)> {
    let mut seen = std::collections::HashSet::with_capacity(docs.len());
    let mut ranked: Vec<&(String, f64)> = docs.iter().filter(|(d, _)| seen.insert(d)).collect();
    ranked.sort_by(|a, b| {
        key(b.1)
            .total_cmp(&key(a.1))
            .then_with(|| b.0.as_bytes().cmp(a.0.as_bytes()))
    });
    ranked
}

/// Every measure at every `k` for one query's ranked grades (`grades[i]` = grade of the document at rank i+1),
/// given the grades of all judged documents of the query.
/// `first_relevant` is the 0-based rank of the first relevant document in MTEB's MRR order.
fn score_query(
    grades: &[i32],
    first_relevant: Option<usize>,
    judged: &[i32],
    ks: &[usize],
    out: &mut BTreeMap<String, f64>,
) {
    let num_rel = judged.iter().filter(|&&g| g >= 1).count();
    let mut ideal: Vec<i32> = judged.iter().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let discount = |i: usize| ((i + 2) as f64).log2();
    for &k in ks {
        let top = &grades[..grades.len().min(k)];
        let dcg: f64 = top
            .iter()
            .enumerate()
            .filter(|(_, g)| **g > 0)
            .map(|(i, &g)| g as f64 / discount(i))
            .sum();
        let idcg: f64 = ideal
            .iter()
            .take(k)
            .enumerate()
            .map(|(i, &g)| g as f64 / discount(i))
            .sum();
        let mut hits = 0usize;
        let mut ap_sum = 0.0;
        for (i, &g) in top.iter().enumerate() {
            if g >= 1 {
                hits += 1;
                ap_sum += hits as f64 / (i + 1) as f64;
            }
        }
        let ratio = |num: f64, den: usize| if den == 0 { 0.0 } else { num / den as f64 };
        out.insert(
            Measure::Ndcg.key(k),
            if idcg > 0.0 { dcg / idcg } else { 0.0 },
        );
        out.insert(Measure::Map.key(k), ratio(ap_sum, num_rel));
        out.insert(Measure::Recall.key(k), ratio(hits as f64, num_rel));
        out.insert(Measure::Precision.key(k), ratio(hits as f64, k));
        out.insert(
            Measure::Mrr.key(k),
            first_relevant
                .filter(|&i| i < k)
                .map_or(0.0, |i| 1.0 / (i + 1) as f64),
        );
    }
}

/// Removes every retrieved document whose id equals its query's id (MTEB's `ignore_identical_ids`, used for
/// ArguAna, where each query is also a corpus document).
pub fn drop_identical_ids(run: &mut Run) {
    for (query, docs) in run.iter_mut() {
        docs.retain(|(d, _)| d != query);
    }
}

/// Scores `run` against `qrels` at every cut-off in `ks` (see the module docs for the conventions).
pub fn evaluate(qrels: &Qrels, run: &Run, ks: &[usize]) -> RankingScores {
    let mut scores = RankingScores::default();
    for (query, docs) in run {
        let Some(judgements) = qrels.get(query) else {
            continue;
        };
        let ranked = rank(docs);
        let grades: Vec<i32> = ranked
            .iter()
            .map(|(d, _)| judgements.get(d).copied().unwrap_or(0))
            .collect();
        let first_relevant = rank_by(docs, |s| s)
            .iter()
            .position(|(d, _)| judgements.get(d).is_some_and(|&g| g > 0));
        let judged: Vec<i32> = judgements.values().copied().collect();
        let mut values = BTreeMap::new();
        score_query(&grades, first_relevant, &judged, ks, &mut values);
        scores.per_query.insert(query.clone(), values);
    }
    let n = scores.per_query.len();
    if n > 0 {
        let mut sums: HashMap<&str, f64> = HashMap::new();
        for values in scores.per_query.values() {
            for (key, v) in values {
                *sums.entry(key.as_str()).or_default() += v;
            }
        }
        scores.mean = sums
            .into_iter()
            .map(|(k, s)| (k.to_string(), s / n as f64))
            .collect();
    }
    scores
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qrels(rows: &[(&str, &str, i32)]) -> Qrels {
        let mut q = Qrels::new();
        for (qid, did, g) in rows {
            q.entry(qid.to_string())
                .or_default()
                .insert(did.to_string(), *g);
        }
        q
    }

    fn run(rows: &[(&str, &str, f64)]) -> Run {
        let mut r = Run::new();
        for (qid, did, s) in rows {
            r.entry(qid.to_string())
                .or_default()
                .push((did.to_string(), *s));
        }
        r
    }

    #[test]
    fn ties_rank_by_descending_doc_id() {
        let docs = vec![
            ("a".to_string(), 1.0),
            ("c".to_string(), 1.0),
            ("b".to_string(), 2.0),
        ];
        let ids: Vec<&str> = rank(&docs).iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(ids, ["b", "c", "a"]);
    }

    #[test]
    fn hand_computed_graded_query() {
        // Ranking d3 (grade 0), d1 (grade 2), d2 (grade 1); ideal: 2, 1.
        let q = qrels(&[("q", "d1", 2), ("q", "d2", 1), ("q", "d3", 0)]);
        let r = run(&[("q", "d1", 0.8), ("q", "d2", 0.7), ("q", "d3", 0.9)]);
        let s = evaluate(&q, &r, &[1, 3]);
        let dcg3 = 2.0 / 3f64.log2() + 1.0 / 4f64.log2();
        let idcg3 = 2.0 + 1.0 / 3f64.log2();
        assert!((s.mean["ndcg@3"] - dcg3 / idcg3).abs() < 1e-12);
        assert_eq!(s.mean["ndcg@1"], 0.0);
        assert!((s.mean["map@3"] - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!(s.mean["recall@1"], 0.0);
        assert_eq!(s.mean["recall@3"], 1.0);
        assert!((s.mean["precision@3"] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.mean["mrr@3"], 0.5);
    }

    #[test]
    fn queries_missing_from_either_side_are_not_scored() {
        let q = qrels(&[("q1", "d1", 1), ("q2", "d1", 1)]);
        let r = run(&[("q1", "d1", 1.0), ("q3", "d1", 1.0)]);
        let s = evaluate(&q, &r, &[10]);
        assert_eq!(s.per_query.len(), 1);
        assert_eq!(s.mean["ndcg@10"], 1.0);
        // Precision divides by k even when fewer were retrieved.
        assert!((s.mean["precision@10"] - 0.1).abs() < 1e-12);
    }
}
