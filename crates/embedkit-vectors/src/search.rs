//! Exhaustive scans over row-major corpora in f32, i8 or packed bits, for a batch of queries at once.
//!
//! The corpus is cut into blocks; rayon hands blocks to threads, each thread keeps one bounded heap per query
//! ([`TopK`]) and a scratch score buffer, and the heaps are merged at the end. Ties rank the lower row first
//! whatever the thread split, so results are deterministic.

use crate::simd::Kernels;
use crate::topk::{Hit, TopK};
use rayon::prelude::*;

/// Rows per block: enough work per rayon task to amortize scheduling, little enough scratch
/// (queries × block scores) to stay in cache.
const BLOCK_ROWS: usize = 1024;

/// Scans `nr` rows in parallel blocks: `fill(r0, r1, scores)` writes the `nq × (r1 - r0)` scores of rows
/// `r0..r1` (query-major), and the best `top` of each query are kept.
fn scan(
    nq: usize,
    nr: usize,
    top: usize,
    fill: impl Fn(usize, usize, &mut Vec<f32>) + Sync,
) -> Vec<TopK> {
    let blocks = nr.div_ceil(BLOCK_ROWS);
    let empty = || (0..nq).map(|_| TopK::new(top)).collect::<Vec<_>>();
    (0..blocks)
        .into_par_iter()
        .fold(
            || (empty(), Vec::new()),
            |(mut heaps, mut scores), blk| {
                let r0 = blk * BLOCK_ROWS;
                let r1 = (r0 + BLOCK_ROWS).min(nr);
                fill(r0, r1, &mut scores);
                let n = r1 - r0;
                for (h, s) in heaps.iter_mut().zip(scores.chunks_exact(n)) {
                    h.push_slice(r0, s);
                }
                (heaps, scores)
            },
        )
        .map(|(heaps, _)| heaps)
        .reduce(empty, |mut a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                x.merge(y);
            }
            a
        })
}

/// The best `top` rows by dot product for each query (`queries` holds whole `dims`-vectors).
pub(crate) fn exact_f32(
    k: Kernels,
    queries: &[f32],
    dims: usize,
    corpus: &[f32],
    top: usize,
) -> Vec<TopK> {
    let nq = queries.len() / dims;
    let nr = corpus.len() / dims;
    scan(nq, nr, top, |r0, r1, scores| {
        scores.resize(nq * (r1 - r0), 0.0);
        k.dot_many(queries, &corpus[r0 * dims..r1 * dims], dims, scores);
    })
}

/// The best `top` rows by `bias[q] + weights[q] · row` for i8 rows.
pub(crate) fn exact_i8(
    k: Kernels,
    weights: &[f32],
    bias: &[f32],
    dims: usize,
    corpus: &[i8],
    top: usize,
) -> Vec<TopK> {
    let nq = weights.len() / dims;
    let nr = corpus.len() / dims;
    scan(nq, nr, top, |r0, r1, scores| {
        let n = r1 - r0;
        scores.resize(nq * n, 0.0);
        k.dot_f32_i8_many(weights, &corpus[r0 * dims..r1 * dims], dims, scores);
        for (s, b) in scores.chunks_exact_mut(n).zip(bias) {
            for v in s {
                *v += b;
            }
        }
    })
}

/// The `top` rows nearest in Hamming distance for each packed query; score = −distance.
pub(crate) fn hamming(
    k: Kernels,
    queries: &[u8],
    row_bytes: usize,
    corpus: &[u8],
    top: usize,
) -> Vec<TopK> {
    let nq = queries.len() / row_bytes;
    let nr = corpus.len() / row_bytes;
    scan(nq, nr, top, |r0, r1, scores| {
        let n = r1 - r0;
        let mut dist = vec![0u32; nq * n];
        k.hamming_many(
            queries,
            &corpus[r0 * row_bytes..r1 * row_bytes],
            row_bytes,
            &mut dist,
        );
        scores.clear();
        // Distances are < 2^24 for any realistic width, so the f32 conversion is exact.
        scores.extend(dist.iter().map(|&d| -(d as f32)));
    })
}

/// Re-ranks `candidates` by `score(row)` and keeps the best `top`, ties to the lower row.
pub(crate) fn rescore(candidates: &[Hit], top: usize, score: impl Fn(usize) -> f32) -> Vec<Hit> {
    let mut t = TopK::new(top);
    for c in candidates {
        t.push(c.row, score(c.row));
    }
    t.into_sorted()
}
