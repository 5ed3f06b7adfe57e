//! Similarity functions and exhaustive top-k search.
//!
//! Every metric is a *similarity*: higher means closer. Distances are negated, as sentence-transformers'
//! `similarity_fn_name = "euclidean"` does, so one ranking rule (descending) serves all metrics.

use crate::Embeddings;
use std::cmp::Ordering;
use std::str::FromStr;

/// How two vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// Cosine of the angle, in [-1, 1].
    #[default]
    Cosine,
    /// Dot product (equals cosine on unit vectors).
    Dot,
    /// Negative Euclidean (L2) distance.
    Euclidean,
    /// Negative Manhattan (L1) distance.
    Manhattan,
}

/// A metric name that is not one of cosine, dot, euclidean, manhattan.
#[derive(Debug, thiserror::Error)]
#[error("unknown metric '{0}': expected cosine, dot, euclidean or manhattan")]
pub struct UnknownMetric(pub String);

impl FromStr for Metric {
    type Err = UnknownMetric;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // sentence-transformers writes these names into config_sentence_transformers.json.
        match s.to_ascii_lowercase().as_str() {
            "cosine" | "cos" => Ok(Metric::Cosine),
            "dot" | "dot_product" => Ok(Metric::Dot),
            "euclidean" | "l2" => Ok(Metric::Euclidean),
            "manhattan" | "l1" => Ok(Metric::Manhattan),
            _ => Err(UnknownMetric(s.to_string())),
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::Euclidean => "euclidean",
            Metric::Manhattan => "manhattan",
        })
    }
}

impl Metric {
    /// Similarity of `a` and `b` (equal lengths; extra components of the longer one are ignored).
    pub fn score(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Dot => dot(a, b),
            Metric::Cosine => {
                let denom = (dot(a, a).sqrt() * dot(b, b).sqrt()).max(1e-12);
                dot(a, b) / denom
            }
            Metric::Euclidean => -a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>()
                .sqrt(),
            Metric::Manhattan => -a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>(),
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorize without reassociating one long chain.
    let mut acc = [0.0f32; 8];
    let chunks = a.len().min(b.len()) / 8;
    for i in 0..chunks {
        for l in 0..8 {
            acc[l] += a[i * 8 + l] * b[i * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len().min(b.len()) {
        s += a[i] * b[i];
    }
    s
}

/// The `a.rows() × b.rows()` matrix of similarities, row-major.
pub fn similarity_matrix(a: &Embeddings, b: &Embeddings, metric: Metric) -> Vec<Vec<f32>> {
    a.iter()
        .map(|x| b.iter().map(|y| metric.score(x, y)).collect())
        .collect()
}

/// The `k` rows of `corpus` most similar to `query`, best first, as `(row, score)`. Ties keep the lower row
/// first, so results are deterministic.
pub fn top_k(query: &[f32], corpus: &Embeddings, k: usize, metric: Metric) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = corpus
        .iter()
        .enumerate()
        .map(|(i, row)| (i, metric.score(query, row)))
        .collect();
    let by_score = |a: &(usize, f32), b: &(usize, f32)| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(Ordering::Equal)
            .then(a.0.cmp(&b.0))
    };
    if k < scored.len() {
        scored.select_nth_unstable_by(k, by_score);
        scored.truncate(k);
    }
    scored.sort_by(by_score);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_on_known_vectors() {
        let a = [1.0, 2.0, 2.0];
        let b = [2.0, 0.0, 0.0];
        assert!((Metric::Dot.score(&a, &b) - 2.0).abs() < 1e-6);
        assert!((Metric::Cosine.score(&a, &b) - 1.0 / 3.0).abs() < 1e-6);
        assert!((Metric::Euclidean.score(&a, &b) + 3.0).abs() < 1e-6);
        assert!((Metric::Manhattan.score(&a, &b) + 5.0).abs() < 1e-6);
    }

    #[test]
    fn dot_handles_lengths_not_multiple_of_eight() {
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        let expected: f32 = a.iter().map(|x| x * x).sum();
        assert_eq!(Metric::Dot.score(&a, &a), expected);
    }

    #[test]
    fn top_k_orders_and_breaks_ties_by_row() {
        let corpus = Embeddings::from_rows(vec![
            vec![0.0, 1.0],
            vec![1.0, 0.0],
            vec![1.0, 0.0],
            vec![0.7, 0.7],
        ])
        .unwrap();
        let hits = top_k(&[1.0, 0.0], &corpus, 3, Metric::Cosine);
        let rows: Vec<usize> = hits.iter().map(|h| h.0).collect();
        assert_eq!(rows, vec![1, 2, 3]);
        assert_eq!(top_k(&[1.0, 0.0], &corpus, 10, Metric::Dot).len(), 4);
    }

    #[test]
    fn metric_names_parse() {
        assert_eq!("Cosine".parse::<Metric>().unwrap(), Metric::Cosine);
        assert_eq!("dot".parse::<Metric>().unwrap(), Metric::Dot);
        assert!("hamming".parse::<Metric>().is_err());
    }
}
