//! Similarity with the SIMD kernels: one pair, pairwise (row i with row i), the full matrix, and exact top-k.
//!
//! Every [`Metric`] is a similarity — higher is closer; Euclidean and Manhattan are negated distances — with
//! the same meaning as `embedkit_core::Metric::score`, which stays the portable reference.

use crate::simd::{self, Kernels};
use crate::topk::{Hit, TopK};
use embedkit_core::{Embeddings, Metric};
use rayon::prelude::*;

/// Rows scored per block in matrix and top-k scans: a block of 384-dim f32 rows (~384 KiB) stays in L2 while
/// every query tile passes over it.
const BLOCK_ROWS: usize = 256;

/// Similarity of `a` and `b` under `metric`, with the active kernels.
pub fn score(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    score_with(simd::active(), metric, a, b)
}

/// [`score`] with explicit kernels.
pub fn score_with(k: Kernels, metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::Dot => k.dot(a, b),
        Metric::Cosine => {
            // The norms are clamped like torch's normalize so a zero vector scores 0, not NaN.
            let denom = (k.dot(a, a).sqrt() * k.dot(b, b).sqrt()).max(1e-12);
            k.dot(a, b) / denom
        }
        Metric::Euclidean => -k.l2_squared(a, b).sqrt(),
        Metric::Manhattan => -k.l1(a, b),
    }
}

/// Similarity of row `i` of `a` with row `i` of `b`, for every `i` up to the shorter of the two
/// (sentence-transformers' `pairwise_*` functions).
pub fn pairwise(metric: Metric, a: &Embeddings, b: &Embeddings) -> Vec<f32> {
    let k = simd::active();
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| score_with(k, metric, x, y))
        .collect()
}

/// Inverse L2 norms, clamped like torch's `normalize` (1e-12).
fn inv_norms(k: Kernels, e: &Embeddings) -> Vec<f32> {
    e.iter()
        .map(|r| 1.0 / k.dot(r, r).sqrt().max(1e-12))
        .collect()
}

/// The `a.rows() × b.rows()` similarity matrix, row-major (`out[i * b.rows() + j]`), computed in parallel.
///
/// Cosine is computed as dot products of the raw vectors divided by both norms, so it can differ from
/// [`score`] in the last bits.
pub fn matrix(metric: Metric, a: &Embeddings, b: &Embeddings) -> Vec<f32> {
    let k = simd::active();
    let (na, nb) = (a.rows(), b.rows());
    let mut out = vec![0.0f32; na * nb];
    if na == 0 || nb == 0 || a.dims() != b.dims() {
        // Mismatched dims compare the common prefix, as `score` does.
        for (i, x) in a.iter().enumerate() {
            for (j, y) in b.iter().enumerate() {
                out[i * nb + j] = score_with(k, metric, x, y);
            }
        }
        return out;
    }
    let dims = a.dims();
    match metric {
        Metric::Dot | Metric::Cosine => {
            let (ia, ib) = if metric == Metric::Cosine {
                (inv_norms(k, a), inv_norms(k, b))
            } else {
                (Vec::new(), Vec::new())
            };
            // Parallel over blocks of `a` rows; each block is a many-to-many kernel call.
            out.par_chunks_mut(BLOCK_ROWS * nb)
                .enumerate()
                .for_each(|(blk, o)| {
                    let r0 = blk * BLOCK_ROWS;
                    let rows = o.len() / nb;
                    k.dot_many(
                        &a.as_slice()[r0 * dims..(r0 + rows) * dims],
                        b.as_slice(),
                        dims,
                        o,
                    );
                    if metric == Metric::Cosine {
                        for (i, row) in o.chunks_exact_mut(nb).enumerate() {
                            for (v, nbv) in row.iter_mut().zip(&ib) {
                                *v *= ia[r0 + i] * nbv;
                            }
                        }
                    }
                });
        }
        Metric::Euclidean | Metric::Manhattan => {
            out.par_chunks_mut(nb).enumerate().for_each(|(i, o)| {
                let x = a.row(i);
                for (v, y) in o.iter_mut().zip(b.iter()) {
                    *v = score_with(k, metric, x, y);
                }
            });
        }
    }
    out
}

/// The `k` rows of `corpus` most similar to each query, best first; ties keep the lower row first. Scans the
/// corpus once for all queries, in parallel over blocks of rows.
pub fn top_k(queries: &Embeddings, corpus: &Embeddings, k: usize, metric: Metric) -> Vec<Vec<Hit>> {
    let kern = simd::active();
    let nq = queries.rows();
    if nq == 0 {
        return Vec::new();
    }
    let nr = corpus.rows();
    let dims = corpus.dims();
    let same_dims = queries.dims() == dims && dims > 0;
    let (query_norm, corpus_norm) = if metric == Metric::Cosine && same_dims {
        (inv_norms(kern, queries), inv_norms(kern, corpus))
    } else {
        (Vec::new(), Vec::new())
    };
    let blocks = nr.div_ceil(BLOCK_ROWS);
    let empty = || (0..nq).map(|_| TopK::new(k)).collect::<Vec<_>>();
    let merged = (0..blocks)
        .into_par_iter()
        .fold(empty, |mut heaps, blk| {
            let r0 = blk * BLOCK_ROWS;
            let r1 = (r0 + BLOCK_ROWS).min(nr);
            let n = r1 - r0;
            let mut scores = vec![0.0f32; nq * n];
            if same_dims && matches!(metric, Metric::Dot | Metric::Cosine) {
                kern.dot_many(
                    queries.as_slice(),
                    &corpus.as_slice()[r0 * dims..r1 * dims],
                    dims,
                    &mut scores,
                );
                if metric == Metric::Cosine {
                    for (qi, s) in scores.chunks_exact_mut(n).enumerate() {
                        for (v, cn) in s.iter_mut().zip(&corpus_norm[r0..r1]) {
                            *v *= query_norm[qi] * cn;
                        }
                    }
                }
            } else {
                for (qi, q) in queries.iter().enumerate() {
                    for (j, r) in (r0..r1).enumerate() {
                        scores[qi * n + j] = score_with(kern, metric, q, corpus.row(r));
                    }
                }
            }
            for (heap, s) in heaps.iter_mut().zip(scores.chunks_exact(n.max(1))) {
                heap.push_slice(r0, s);
            }
            heaps
        })
        .reduce(empty, |mut a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                x.merge(y);
            }
            a
        });
    merged.into_iter().map(TopK::into_sorted).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(rows: usize, dims: usize, seed: u64) -> Embeddings {
        let mut s = seed;
        let v = (0..rows * dims)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect();
        Embeddings::new(v, rows, dims).unwrap()
    }

    #[test]
    fn agrees_with_core_reference() {
        let a = data(9, 37, 1);
        let b = data(600, 37, 2);
        for metric in [
            Metric::Cosine,
            Metric::Dot,
            Metric::Euclidean,
            Metric::Manhattan,
        ] {
            let m = matrix(metric, &a, &b);
            for i in 0..a.rows() {
                for j in 0..b.rows() {
                    let want = metric.score(a.row(i), b.row(j));
                    let got = m[i * b.rows() + j];
                    assert!(
                        (want - got).abs() <= 1e-4 * want.abs().max(1.0),
                        "{metric} {i} {j}"
                    );
                }
            }
            let hits = top_k(&a, &b, 5, metric);
            for (i, h) in hits.iter().enumerate() {
                let reference = embedkit_core::top_k(a.row(i), &b, 5, metric);
                let got: Vec<usize> = h.iter().map(|x| x.row).collect();
                let want: Vec<usize> = reference.iter().map(|x| x.0).collect();
                assert_eq!(got, want, "{metric} query {i}");
            }
            let p = pairwise(metric, &a, &b);
            assert_eq!(p.len(), 9);
            assert!((p[3] - metric.score(a.row(3), b.row(3))).abs() < 1e-4);
        }
    }
}
