//! MaxSim (late interaction): how ColBERT-style models score a query's token vectors against a document's.
//!
//! Exactly `sentence_transformers.util.maxsim` (6.2): `Σ_i max_j (q_i · d_j)` over raw dot products (no
//! normalization here — ColBERT models normalize their token vectors themselves), a document without any
//! token scores [`EMPTY_DOCUMENT_SCORE`], a query without tokens scores 0, and `length_normalize` divides by
//! the number of query tokens (at least 1; MeanMaxSim). Masks become "pass only the rows that count".

use crate::simd::{self, Kernels};
use embedkit_core::Embeddings;
use rayon::prelude::*;

/// The score of a document that has no token vectors (sentence-transformers' `_EMPTY_DOCUMENT_SCORE`): below
/// any real MaxSim score.
pub const EMPTY_DOCUMENT_SCORE: f32 = -1e9;

/// Document tokens scored per block: a block of 128-dim or 384-dim rows stays in L1/L2 while every query
/// token passes over it, and the `query_tokens × BLOCK` dot products fit a small buffer.
const BLOCK: usize = 64;

/// MaxSim of one query (`query.rows()` token vectors) against one document, with the active kernels.
///
/// Both must have the same dimensions; a mismatch compares the common prefix like the other similarity
/// functions, so callers check dims where a mismatch is a user error.
pub fn maxsim(query: &Embeddings, doc: &Embeddings) -> f32 {
    maxsim_with(
        simd::active(),
        query.as_slice(),
        doc.as_slice(),
        query.dims().min(doc.dims()),
        query.dims(),
        doc.dims(),
    )
}

/// [`maxsim`] over raw row-major slices: `query` holds rows of `q_stride` values, `doc` rows of
/// `d_stride` values, and the first `dims` of each row are compared.
pub fn maxsim_with(
    k: Kernels,
    query: &[f32],
    doc: &[f32],
    dims: usize,
    q_stride: usize,
    d_stride: usize,
) -> f32 {
    let nq = query.len().checked_div(q_stride).unwrap_or(0);
    let nd = doc.len().checked_div(d_stride).unwrap_or(0);
    if nd == 0 {
        return EMPTY_DOCUMENT_SCORE;
    }
    if nq == 0 {
        return 0.0;
    }
    let mut best = vec![f32::NEG_INFINITY; nq];
    if q_stride == dims && d_stride == dims {
        // Blocks of document tokens against all query tokens in one kernel call: the query tokens stay in
        // registers/L1 while a block of document rows streams past.
        let mut buf = vec![0.0f32; nq * BLOCK];
        for block in doc.chunks(BLOCK * dims) {
            let nb = block.len() / dims;
            let out = &mut buf[..nq * nb];
            k.dot_many(query, block, dims, out);
            for (b, row) in best.iter_mut().zip(out.chunks_exact(nb)) {
                *b = row.iter().copied().fold(*b, f32::max);
            }
        }
    } else {
        for (b, q) in best.iter_mut().zip(query.chunks_exact(q_stride)) {
            for d in doc.chunks_exact(d_stride) {
                *b = b.max(k.dot(&q[..dims], &d[..dims]));
            }
        }
    }
    // Summed in f64: a 32-token query of unnormalized vectors sums to hundreds, where f32 rounding shows.
    best.iter().map(|&x| x as f64).sum::<f64>() as f32
}

/// Options of a MaxSim matrix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaxSimOptions {
    /// Divide each score by the query's token count (MeanMaxSim), so scores of different queries compare.
    pub length_normalize: bool,
}

/// The `queries.len() × docs.len()` MaxSim matrix, row-major (`out[q * docs.len() + d]`), documents scored in
/// parallel.
pub fn maxsim_matrix(
    queries: &[Embeddings],
    docs: &[Embeddings],
    options: MaxSimOptions,
) -> Vec<f32> {
    let k = simd::active();
    let nd = docs.len();
    let mut out = vec![0.0f32; queries.len() * nd];
    if nd == 0 {
        return out;
    }
    out.par_chunks_mut(nd)
        .zip(queries.par_iter())
        .for_each(|(row, q)| {
            let div = if options.length_normalize {
                q.rows().max(1) as f32
            } else {
                1.0
            };
            for (o, d) in row.iter_mut().zip(docs) {
                let s = maxsim_with(
                    k,
                    q.as_slice(),
                    d.as_slice(),
                    q.dims().min(d.dims()),
                    q.dims(),
                    d.dims(),
                );
                *o = s / div;
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(rows: Vec<Vec<f32>>) -> Embeddings {
        Embeddings::from_rows(rows).unwrap()
    }

    #[test]
    fn sums_the_best_match_of_each_query_token() {
        let q = e(vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        let d = e(vec![vec![0.5, 0.5], vec![2.0, -1.0], vec![-1.0, 3.0]]);
        // token 0: max(0.5, 2, -1) = 2; token 1: max(0.5, -1, 3) = 3.
        assert_eq!(maxsim(&q, &d), 5.0);
    }

    #[test]
    fn negative_best_matches_are_kept_not_clamped() {
        let q = e(vec![vec![1.0, 0.0]]);
        let d = e(vec![vec![-0.5, 0.0], vec![-2.0, 1.0]]);
        assert_eq!(maxsim(&q, &d), -0.5);
    }

    #[test]
    fn empty_document_and_empty_query() {
        let q = e(vec![vec![1.0, 0.0]]);
        assert_eq!(maxsim(&q, &Embeddings::empty(2)), EMPTY_DOCUMENT_SCORE);
        assert_eq!(maxsim(&Embeddings::empty(2), &q), 0.0);
    }

    #[test]
    fn blocks_longer_than_one_kernel_call_match_the_scalar_loop() {
        let dims = 7;
        let rows = |n: usize, seed: f32| -> Embeddings {
            e((0..n)
                .map(|i| {
                    (0..dims)
                        .map(|j| ((i * 31 + j * 17) as f32 * seed).sin())
                        .collect()
                })
                .collect())
        };
        let (q, d) = (rows(5, 0.37), rows(3 * BLOCK + 5, 0.11));
        let want: f64 = q
            .iter()
            .map(|qr| {
                d.iter()
                    .map(|dr| qr.iter().zip(dr).map(|(a, b)| a * b).sum::<f32>())
                    .fold(f32::NEG_INFINITY, f32::max) as f64
            })
            .sum();
        assert!((maxsim(&q, &d) as f64 - want).abs() < 1e-4);
        let m = maxsim_matrix(
            &[q.clone(), q.clone()],
            std::slice::from_ref(&d),
            MaxSimOptions {
                length_normalize: true,
            },
        );
        assert!((m[1] as f64 - want / 5.0).abs() < 1e-4);
    }
}
