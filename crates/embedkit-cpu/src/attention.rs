//! Multi-head self-attention over unpadded sequences.

use crate::kernels::{matmul_ab, matmul_abt, softmax};
use embedkit_model::EncoderConfig;
use rayon::prelude::*;

/// MPNet's relative position bias, expanded for sequences up to `max_len`: `bias[head][i][j]` depends only on
/// `j - i`, so it is stored per head and relative distance.
pub(crate) struct RelativeBias {
    /// `[heads][2·max_len − 1]`, index `(j − i) + max_len − 1`.
    by_distance: Vec<f32>,
    max_len: usize,
}

impl RelativeBias {
    pub(crate) fn new(table: &[f32], num_buckets: usize, heads: usize, max_len: usize) -> Self {
        let span = (2 * max_len).saturating_sub(1);
        let mut by_distance = vec![0.0; heads * span];
        for d in 0..span {
            let rel = d as i64 - (max_len as i64 - 1);
            let bucket = relative_position_bucket(rel, num_buckets, 128);
            for h in 0..heads {
                by_distance[h * span + d] = table[bucket * heads + h];
            }
        }
        Self {
            by_distance,
            max_len,
        }
    }

    /// Adds the bias to `len` query rows of `keys` scores each (`keys ≤ len`).
    fn add_to(&self, head: usize, len: usize, keys: usize, scores: &mut [f32]) {
        let span = (2 * self.max_len).saturating_sub(1);
        let row_bias = &self.by_distance[head * span..(head + 1) * span];
        for i in 0..len {
            // j − i + max_len − 1 for j = 0 is max_len − 1 − i.
            let start = self.max_len - 1 - i;
            for (s, b) in scores[i * keys..(i + 1) * keys]
                .iter_mut()
                .zip(&row_bias[start..start + keys])
            {
                *s += b;
            }
        }
    }
}

/// T5/MPNet bidirectional bucketing of `relative = key_pos − query_pos`. Computed in f32 like PyTorch, since
/// the bucket boundaries come from truncating a float.
fn relative_position_bucket(relative: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = (num_buckets / 2) as i64;
    let n = -relative;
    let mut ret = if n < 0 { half } else { 0 };
    let n = n.abs();
    let max_exact = half / 2;
    if n < max_exact {
        ret += n;
    } else {
        let log_ratio = ((n as f32) / max_exact as f32).ln();
        let denom = ((max_distance as f64) / max_exact as f64).ln() as f32;
        let large = max_exact + (log_ratio / denom * (half - max_exact) as f32) as i64;
        ret += large.min(half - 1);
    }
    ret as usize
}

/// Sequences up to this length use the direct kernel; longer ones go through GEMM, whose packing cost only
/// pays off on bigger tiles.
const DIRECT_MAX_LEN: usize = 64;

/// A raw pointer that may cross threads: each (sequence, head) task writes a disjoint set of `ctx` elements.
#[derive(Clone, Copy)]
struct CtxPtr(*mut f32);
// SAFETY: tasks write disjoint elements (rows of their own sequence × columns of their own head).
unsafe impl Send for CtxPtr {}
unsafe impl Sync for CtxPtr {}

impl CtxPtr {
    /// Through a method, so closures capture the whole (Sync) wrapper rather than its raw-pointer field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `ctx[t × hidden] = softmax(Q·Kᵀ/√d + bias)·V` per sequence and head, from the fused `qkv[t × 3·hidden]`.
/// Every (sequence, head) pair is its own parallel task, so a single text still uses all threads.
///
/// `key_lens`, when given, limits sequence `s` to attending to its first `key_lens[s]` tokens (every token still
/// gets an output): an attention mask that is 0 on a tail, as ColBERT's unattended [MASK] query expansion.
pub(crate) fn attend(
    qkv: &[f32],
    seq_lens: &[usize],
    key_lens: Option<&[usize]>,
    cfg: &EncoderConfig,
    rel_bias: Option<&RelativeBias>,
    ctx: &mut [f32],
    level: crate::simd::SimdLevel,
) {
    let h = cfg.hidden_size;
    let heads = cfg.num_heads;
    let d = cfg.head_dim();
    let scale = 1.0 / (d as f32).sqrt();
    let mut tasks = Vec::with_capacity(seq_lens.len() * heads);
    let mut start = 0;
    for (s, &len) in seq_lens.iter().enumerate() {
        let keys = key_lens
            .and_then(|k| k.get(s).copied())
            .unwrap_or(len)
            .clamp(1.min(len), len);
        for head in 0..heads {
            tasks.push((start, len, keys, head));
        }
        start += len;
    }
    assert_eq!(
        ctx.len(),
        start * h,
        "ctx holds hidden_size values per token"
    );
    let out = CtxPtr(ctx.as_mut_ptr());
    tasks.par_iter().for_each(|&(start, len, keys, head)| {
        let rows = &qkv[start * 3 * h..(start + len) * 3 * h];
        let mut scores = vec![0.0f32; len * keys];
        let mut head_out = vec![0.0f32; len * d];
        if len <= DIRECT_MAX_LEN {
            let task = HeadTask {
                rows,
                len,
                keys,
                hidden: h,
                head_dim: d,
                head,
                scale,
                rel_bias,
            };
            attend_direct_level(level, &task, &mut scores, &mut head_out);
        } else {
            let q = &rows[head * d..];
            let k = &rows[h + head * d..];
            let v = &rows[2 * h + head * d..];
            matmul_abt(len, keys, d, q, 3 * h, k, 3 * h, &mut scores, scale);
            if let Some(bias) = rel_bias {
                bias.add_to(head, len, keys, &mut scores);
            }
            for row in scores.chunks_exact_mut(keys.max(1)) {
                softmax(row);
            }
            matmul_ab(len, d, keys, &scores, v, 3 * h, &mut head_out, d);
        }
        for (i, r) in head_out.chunks_exact(d).enumerate() {
            let offset = (start + i) * h + head * d;
            // SAFETY: offset + d ≤ (start + len) * h ≤ ctx.len() (asserted above); this task alone writes
            // columns head·d..(head+1)·d of its sequence's rows.
            unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), out.get().add(offset), d) };
        }
    });
}

/// One (sequence, head) of attention for the direct kernel.
pub(crate) struct HeadTask<'a> {
    /// The sequence's rows of the fused `qkv` matrix.
    rows: &'a [f32],
    len: usize,
    /// Tokens attended to: the first `keys` of the sequence.
    keys: usize,
    hidden: usize,
    head_dim: usize,
    head: usize,
    scale: f32,
    rel_bias: Option<&'a RelativeBias>,
}

crate::simd::multiversion!(attend_direct_level(task: &HeadTask<'_>, scores: &mut [f32], out: &mut [f32]) => attend_direct);

/// Attention of one short sequence and head with plain loops: Kᵀ and V copied contiguous, scores built as
/// `Σ_c q[c]·Kᵀ[c][·]` (vectorized across keys, no horizontal sums), output as `Σ_j p[j]·V[j][·]`.
#[inline(always)]
fn attend_direct(task: &HeadTask<'_>, scores: &mut [f32], out: &mut [f32]) {
    let HeadTask {
        rows,
        len,
        keys,
        hidden: h,
        head_dim: d,
        head,
        scale,
        rel_bias,
    } = *task;
    let mut kt = vec![0.0f32; d * keys];
    let mut v = vec![0.0f32; keys * d];
    for j in 0..keys {
        let row = &rows[j * 3 * h..(j + 1) * 3 * h];
        for (c, &x) in row[h + head * d..h + (head + 1) * d].iter().enumerate() {
            kt[c * keys + j] = x;
        }
        v[j * d..(j + 1) * d].copy_from_slice(&row[2 * h + head * d..2 * h + (head + 1) * d]);
    }
    for i in 0..len {
        let q = &rows[i * 3 * h + head * d..i * 3 * h + (head + 1) * d];
        let s = &mut scores[i * keys..(i + 1) * keys];
        s.fill(0.0);
        for (c, &qc) in q.iter().enumerate() {
            let qc = qc * scale;
            for (sj, kj) in s.iter_mut().zip(&kt[c * keys..(c + 1) * keys]) {
                *sj += qc * kj;
            }
        }
    }
    if let Some(bias) = rel_bias {
        bias.add_to(head, len, keys, scores);
    }
    for i in 0..len {
        let s = &mut scores[i * keys..(i + 1) * keys];
        softmax(s);
        let o = &mut out[i * d..(i + 1) * d];
        o.fill(0.0);
        for (j, &p) in s.iter().enumerate() {
            for (oj, vj) in o.iter_mut().zip(&v[j * d..(j + 1) * d]) {
                *oj += p * vj;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_mpnet_reference() {
        // Values from transformers' MPNet relative_position_bucket(num_buckets=32, max_distance=128).
        let cases = [
            (0, 0),
            (-1, 1),
            (1, 17),
            (-7, 7),
            (-8, 8),
            (-15, 9),
            (-16, 10),
            (-31, 11),
            (-32, 12),
            (-64, 14),
            (-127, 15),
            (-500, 15),
            (8, 24),
            (16, 26),
            (500, 31),
        ];
        for (rel, want) in cases {
            assert_eq!(
                relative_position_bucket(rel, 32, 128),
                want,
                "relative {rel}"
            );
        }
    }
}
