//! Multi-head self-attention over unpadded sequences.

use crate::kernels::{OutPtr, fast_exp, matmul_ab, matmul_abt, softmax, sum16};
use crate::simd::MulAdd;
use embedkit_model::EncoderConfig;
use rayon::prelude::*;
use tiles::{Product, product_tiles};

mod tiles;

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

    /// Adds the bias to `len` query rows of `keys` scores each (`keys ≤ len`), rows `stride` apart.
    fn add_to(&self, head: usize, len: usize, keys: usize, stride: usize, scores: &mut [f32]) {
        let span = (2 * self.max_len).saturating_sub(1);
        let row_bias = &self.by_distance[head * span..(head + 1) * span];
        for i in 0..len {
            // j − i + max_len − 1 for j = 0 is max_len − 1 − i.
            let start = self.max_len - 1 - i;
            for (s, b) in scores[i * stride..i * stride + keys]
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

/// Sequences up to this length use the direct kernel; longer ones go through `gemm` per head. The direct
/// kernel matched or beat `gemm` at every length measured (Zen 4, 2 threads: 128, 256 and 384 tokens), so the
/// limit only keeps its per-thread scratch (Q, Kᵀ, V of every head and one head's scores) bounded for the long
/// contexts of ModernBERT.
const DIRECT_MAX_LEN: usize = 512;

/// `ctx[t × hidden] = softmax(Q·Kᵀ/√d + bias)·V` per sequence and head, from the fused `qkv[t × 3·hidden]`.
///
/// With enough sequences to keep every thread busy, a task is one sequence with all its heads: the sequence's
/// rows of `qkv` are one contiguous block, read once front to back (which the hardware prefetcher follows)
/// into per-head buffers. With few sequences (one query, a handful of texts) each (sequence, head) pair is its
/// own task, so a single text still uses every thread.
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
    let per_sequence = seq_lens.len() >= 4 * rayon::current_num_threads();
    let mut tasks = Vec::with_capacity(seq_lens.len() * heads);
    let mut start = 0;
    for (s, &len) in seq_lens.iter().enumerate() {
        let keys = key_lens
            .and_then(|k| k.get(s).copied())
            .unwrap_or(len)
            .clamp(1.min(len), len);
        if per_sequence {
            tasks.push((start, len, keys, 0..heads));
        } else {
            tasks.extend((0..heads).map(|head| (start, len, keys, head..head + 1)));
        }
        start += len;
    }
    assert_eq!(
        ctx.len(),
        start * h,
        "ctx holds hidden_size values per token"
    );
    // Each (sequence, head) task writes a disjoint set of `ctx` elements through it.
    let out = OutPtr(ctx.as_mut_ptr());
    let d = cfg.head_dim();
    let scale = 1.0 / (d as f32).sqrt();
    tasks.par_iter().for_each(|(start, len, keys, task_heads)| {
        let (start, len, keys) = (*start, *len, *keys);
        if len == 0 {
            return; // nothing to attend over, and nothing to write
        }
        let rows = &qkv[start * 3 * h..(start + len) * 3 * h];
        let write_row = |i: usize, head: usize, r: &[f32]| {
            let offset = (start + i) * h + head * d;
            assert!(offset + d <= (start + len) * h && r.len() >= d);
            // SAFETY: in bounds of ctx (its length was asserted to be total · h and start + len ≤ total);
            // this task alone writes columns head·d..(head+1)·d of its sequence's rows.
            unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), out.get().add(offset), d) };
        };
        if len <= DIRECT_MAX_LEN {
            let task = SeqTask {
                rows,
                len,
                keys,
                hidden: h,
                head_dim: d,
                heads: task_heads.clone(),
                scale,
                rel_bias,
                level,
            };
            SCRATCH.with(|cell| {
                let mut scratch = cell.borrow_mut();
                attend_direct_level(level, &task, &mut scratch, &mut |i, head, r| {
                    write_row(i, head, r)
                });
            });
            return;
        }
        for head in task_heads.clone() {
            let mut scores = vec![0.0f32; len * keys];
            let mut head_out = vec![0.0f32; len * d];
            let q = &rows[head * d..];
            let k = &rows[h + head * d..];
            let v = &rows[2 * h + head * d..];
            matmul_abt(len, keys, d, q, 3 * h, k, 3 * h, &mut scores, scale);
            if let Some(bias) = rel_bias {
                bias.add_to(head, len, keys, keys, &mut scores);
            }
            for row in scores.chunks_exact_mut(keys.max(1)) {
                softmax(row);
            }
            matmul_ab(len, d, keys, &scores, v, 3 * h, &mut head_out, d);
            for (i, r) in head_out.chunks_exact(d).enumerate() {
                write_row(i, head, r);
            }
        }
    });
}

/// Lanes of one score or output chunk: one AVX-512 register, two AVX2 registers.
const LANES: usize = 16;
/// Query rows per register tile of the portable direct kernel: 4 rows × 16 lanes of accumulators.
const TILE_ROWS: usize = 4;
/// Query rows are padded to a multiple of this: the portable tiles take 4 rows, the AVX-512 ones 4 or 8.
const ROW_PAD: usize = 8;

thread_local! {
    /// The direct kernel's buffers, kept per worker thread so tasks allocate nothing.
    static SCRATCH: std::cell::RefCell<HeadScratch> = std::cell::RefCell::new(HeadScratch::default());
}

/// Buffers of one task, padded to whole tiles: rows to [`ROW_PAD`], keys and head dimensions to [`LANES`]
/// (with zeros, so padded lanes add nothing).
#[derive(Default)]
pub(crate) struct HeadScratch {
    /// `[heads][rows_pad][d]` queries times the softmax scale.
    q: Vec<f32>,
    /// `[heads][d][keys_pad]` keys, transposed.
    kt: Vec<f32>,
    /// `[heads][keys][d_pad]` values.
    v: Vec<f32>,
    /// `[rows_pad][keys_pad]` one head's scores, then probabilities.
    scores: Vec<f32>,
    /// `[rows_pad][d_pad]` one head's output.
    out: Vec<f32>,
}

/// `buf` as `len` elements, keeping its allocation; old contents stay where they were.
fn resized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    &mut buf[..len]
}

/// One short sequence and a range of its heads, for the direct kernel.
pub(crate) struct SeqTask<'a> {
    /// The sequence's rows of the fused `qkv` matrix.
    rows: &'a [f32],
    len: usize,
    /// Tokens attended to: the first `keys` of the sequence.
    keys: usize,
    hidden: usize,
    head_dim: usize,
    heads: std::ops::Range<usize>,
    scale: f32,
    rel_bias: Option<&'a RelativeBias>,
    /// The level the kernel runs at: AVX-512 takes the intrinsics tiles of `tiles::avx512`.
    level: crate::simd::SimdLevel,
}

/// Receives `(row, head, values)`: the head's `head_dim` outputs for one row of the sequence.
type RowSink<'a> = dyn FnMut(usize, usize, &[f32]) + 'a;

crate::simd::multiversion!(attend_direct_level(task: &SeqTask<'_>, scratch: &mut HeadScratch, sink: &mut RowSink<'_>) => fma attend_direct);

/// Attention of one short sequence in register tiles. The sequence's rows are read once, in order, into
/// per-head Q, Kᵀ and V buffers; then per head, scores as 4 query rows × 16 keys at a time
/// (`Σ_c q[r][c]·Kᵀ[c][·]`, a broadcast and a vector FMA, no horizontal sums), softmax, and the output as 4
/// rows × 16 dimensions (`Σ_j p[r][j]·V[j][·]`). Keys and dimensions are zero-padded to whole vectors so every
/// loop runs on full registers; padded keys get probability 0.
#[inline(always)]
fn attend_direct<M: MulAdd>(task: &SeqTask<'_>, scratch: &mut HeadScratch, sink: &mut RowSink<'_>) {
    let SeqTask {
        rows,
        len,
        keys,
        hidden: h,
        head_dim: d,
        ref heads,
        scale,
        rel_bias,
        level,
    } = *task;
    let nh = heads.len();
    let kp = keys.div_ceil(LANES) * LANES;
    let dp = d.div_ceil(LANES) * LANES;
    let lp = len.div_ceil(ROW_PAD) * ROW_PAD;
    let HeadScratch {
        q,
        kt,
        v,
        scores,
        out,
    } = scratch;
    // Only padding must be zero: every other element is written below before it is read.
    let q = resized(q, nh * lp * d);
    let kt = resized(kt, nh * d * kp);
    let v = resized(v, nh * keys * dp);
    let scores = resized(scores, lp * kp);
    let out = resized(out, lp * dp);
    for (i, row) in rows.chunks_exact(3 * h).enumerate() {
        for (hi, head) in heads.clone().enumerate() {
            let q_row = &mut q[(hi * lp + i) * d..(hi * lp + i + 1) * d];
            for (dst, &x) in q_row.iter_mut().zip(&row[head * d..(head + 1) * d]) {
                *dst = x * scale;
            }
            if i < keys {
                let kt_head = &mut kt[hi * d * kp..(hi + 1) * d * kp];
                for (c, &x) in row[h + head * d..h + (head + 1) * d].iter().enumerate() {
                    kt_head[c * kp + i] = x;
                }
                let v_row = &mut v[(hi * keys + i) * dp..(hi * keys + i + 1) * dp];
                v_row[..d].copy_from_slice(&row[2 * h + head * d..2 * h + (head + 1) * d]);
                v_row[d..].fill(0.0);
            }
        }
    }
    for hi in 0..nh {
        q[(hi * lp + len) * d..(hi + 1) * lp * d].fill(0.0);
        if kp > keys {
            for k_row in kt[hi * d * kp..(hi + 1) * d * kp].chunks_exact_mut(kp) {
                k_row[keys..].fill(0.0);
            }
        }
    }
    for (hi, head) in heads.clone().enumerate() {
        let q_head = &q[hi * lp * d..(hi + 1) * lp * d];
        let kt_head = &kt[hi * d * kp..(hi + 1) * d * kp];
        let v_head = &v[hi * keys * dp..(hi + 1) * keys * dp];
        let qk = Product {
            a: q_head,
            a_stride: d,
            b: kt_head,
            b_stride: kp,
            inner: d,
            cols: kp,
        };
        product_level::<M>(level, &qk, scores, kp);
        if let Some(bias) = rel_bias {
            bias.add_to(head, len, keys, kp, scores);
        }
        for row in scores.chunks_exact_mut(kp).take(len) {
            softmax_padded::<M>(row, keys);
        }
        let pv = Product {
            a: scores,
            a_stride: kp,
            b: v_head,
            b_stride: dp,
            inner: keys,
            cols: dp,
        };
        product_level::<M>(level, &pv, out, dp);
        for (i, o_row) in out.chunks_exact(dp).take(len).enumerate() {
            sink(i, head, &o_row[..d]);
        }
    }
}

/// `c = a·b` (see [`Product`]) with AVX-512's tiles where `level` allows, else the portable ones.
#[inline(always)]
fn product_level<M: MulAdd>(
    level: crate::simd::SimdLevel,
    m: &Product<'_>,
    c: &mut [f32],
    c_stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if level == crate::simd::SimdLevel::Avx512 {
        // SAFETY: an Avx512 level comes only from SimdLevel::supported()/capped(), i.e. the CPU has AVX-512F
        // and FMA.
        unsafe { tiles::avx512::product(m, c, c_stride) };
        return;
    }
    let _ = level;
    product_tiles::<M>(m, c, c_stride);
}

/// Softmax over the first `valid` entries of a row padded to whole [`LANES`]; the padding comes out 0.
#[inline(always)]
fn softmax_padded<M: MulAdd>(row: &mut [f32], valid: usize) {
    row[valid..].fill(f32::NEG_INFINITY);
    let mut max = [f32::NEG_INFINITY; LANES];
    for c in row.chunks_exact(LANES) {
        for l in 0..LANES {
            max[l] = if c[l] > max[l] { c[l] } else { max[l] };
        }
    }
    let max = max.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for x in row.iter_mut() {
        *x = fast_exp::<M>(*x - max);
    }
    // fast_exp clamps its argument, so the padding's e^-∞ came out tiny rather than 0.
    row[valid..].fill(0.0);
    let inv = 1.0 / sum16(row);
    for x in row.iter_mut() {
        *x *= inv;
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
