//! Multi-head self-attention over unpadded sequences.

use crate::kernels::{OutPtr, matmul_ab, matmul_abt, softmax};
use crate::simd::MulAdd;
use embedkit_model::EncoderConfig;
use rayon::prelude::*;
use tiles::{Product, product_tiles};

mod softmax;
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

    /// The bias of query `query` against keys `0..keys` of head `head`.
    fn row(&self, head: usize, query: usize, keys: usize) -> &[f32] {
        let span = (2 * self.max_len).saturating_sub(1);
        // j − i + max_len − 1 for j = 0 is max_len − 1 − i.
        let start = head * span + self.max_len - 1 - query;
        &self.by_distance[start..start + keys]
    }

    /// `score · scale + bias` for `len` query rows of `keys` scores each (`keys ≤ len`), rows `stride` apart.
    fn add_to(
        &self,
        head: usize,
        len: usize,
        keys: usize,
        stride: usize,
        scale: f32,
        scores: &mut [f32],
    ) {
        for i in 0..len {
            for (s, b) in scores[i * stride..i * stride + keys]
                .iter_mut()
                .zip(self.row(head, i, keys))
            {
                *s = *s * scale + b;
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
/// With enough sequences to keep every thread busy, a task is one sequence with all its heads, one head after
/// the other (the sequence's rows of `qkv` stay in L2 while its heads take their columns). With few sequences
/// (one query, a handful of texts) each (sequence, head) pair is its own task, so a single text still uses
/// every thread.
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
        // Row `i` of one head's output, times `scale` (the direct kernel's softmax leaves its rows unnormalized
        // and divides here, `d` products per row instead of one per key).
        let mut write_row = |i: usize, head: usize, r: &[f32], scale: f32| {
            let offset = (start + i) * h + head * d;
            assert!(offset + d <= (start + len) * h && r.len() >= d);
            // SAFETY: in bounds of ctx (its length was asserted to be total · h and start + len ≤ total);
            // this task alone writes (and holds a slice of) columns head·d..(head+1)·d of its sequence's rows.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add(offset), d) };
            for (o, &x) in dst.iter_mut().zip(r) {
                *o = x * scale;
            }
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
                attend_direct_level(level, &task, &mut scratch, &mut write_row);
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
                bias.add_to(head, len, keys, keys, 1.0, &mut scores);
            }
            for row in scores.chunks_exact_mut(keys.max(1)) {
                softmax(row);
            }
            matmul_ab(len, d, keys, &scores, v, 3 * h, &mut head_out, d);
            for (i, r) in head_out.chunks_exact(d).enumerate() {
                write_row(i, head, r, 1.0);
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

/// Buffers of one head, padded to whole tiles: rows to [`ROW_PAD`], keys and head dimensions to [`LANES`]
/// (with zeros where padded lanes would otherwise add something). Q, and V when the head size is a whole
/// number of registers, are read where they are.
#[derive(Default)]
pub(crate) struct HeadScratch {
    /// `[d][keys_pad]` one head's keys, transposed.
    kt: Vec<f32>,
    /// `[keys][d_pad]` one head's values, for head sizes that are not whole registers.
    v: Vec<f32>,
    /// `[block_rows][keys_pad]` one block of query rows' scores, then probabilities.
    scores: Vec<f32>,
    /// `[block_rows]` one block of query rows' `1 / Σ`, the softmax's division applied to their outputs.
    row_scale: Vec<f32>,
    /// `[block_rows][d_pad]` one block of query rows' output.
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

/// Receives `(row, head, values, scale)`: the head's `head_dim` outputs for one row of the sequence, to be
/// multiplied by `scale`.
type RowSink<'a> = dyn FnMut(usize, usize, &[f32], f32) + 'a;

crate::simd::multiversion!(attend_direct_level(task: &SeqTask<'_>, scratch: &mut HeadScratch, sink: &mut RowSink<'_>) => fma attend_direct);

/// Attention of one short sequence in register tiles, head by head: the head's Kᵀ (transposed 16 tokens at a
/// time), scores as tiles of query rows × 16 keys (`Σ_c q[r][c]·Kᵀ[c][·]`, a broadcast and a vector FMA, no
/// horizontal sums) with Q read in place, softmax without its division, and the output as tiles of rows × 16
/// dimensions (`Σ_j p[r][j]·V[j][·]`), divided by the row's sum on its way out. Keys and dimensions are padded
/// to whole vectors so every loop runs on full registers; padded keys get probability 0. Query rows go a block
/// at a time, so the scores scratch is ~32 KiB rather than `len × keys` (1 MiB a thread at 512 tokens); on Zen
/// 5 that measured the same speed as whole heads (L2 kept up), and it keeps the scratch out of the weights' way.
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
    let kp = keys.div_ceil(LANES) * LANES;
    let dp = d.div_ceil(LANES) * LANES;
    let lp = len.div_ceil(ROW_PAD) * ROW_PAD;
    let HeadScratch {
        kt,
        v,
        scores,
        row_scale,
        out,
    } = scratch;
    // Only padding must be zero: every other element is written below before it is read.
    let kt = resized(kt, d * kp);
    // With whole-register heads (MiniLM's 32, MPNet's 64 dimensions) `P·V` reads V where it is, in the
    // sequence's rows of `qkv`; only other head sizes copy it into a zero-padded buffer.
    let v_in_rows = d == dp;
    let v = resized(v, if v_in_rows { 0 } else { keys * dp });
    let block_rows = rows_per_block(kp).min(lp);
    let scores = resized(scores, block_rows * kp);
    let row_scale = resized(row_scale, block_rows);
    let out = resized(out, block_rows * dp);
    if kp > keys {
        for k_row in kt.chunks_exact_mut(kp) {
            k_row[keys..].fill(0.0);
        }
    }
    for head in heads.clone() {
        transpose_keys(rows, keys, h + head * d, 3 * h, d, kt, kp, level);
        if !v_in_rows {
            for (v_row, row) in v.chunks_exact_mut(dp).zip(rows.chunks_exact(3 * h)) {
                v_row[..d].copy_from_slice(&row[2 * h + head * d..2 * h + (head + 1) * d]);
                v_row[d..].fill(0.0);
            }
        }
        let (v_head, v_stride) = if v_in_rows {
            (&rows[2 * h + head * d..], 3 * h)
        } else {
            (&v[..], dp)
        };
        // A block of query rows at a time, its scores in L1 from `Q·Kᵀ` through the softmax to `P·V`.
        for r0 in (0..len).step_by(block_rows) {
            let rows_here = block_rows.min(len - r0);
            let padded = rows_here.div_ceil(ROW_PAD) * ROW_PAD;
            let scores = &mut scores[..padded * kp];
            let row_scale = &mut row_scale[..rows_here];
            // Q where it is; the scale goes into the softmax.
            let qk = Product {
                a: &rows[r0 * 3 * h + head * d..],
                a_stride: 3 * h,
                a_rows: rows_here,
                b: kt,
                b_stride: kp,
                inner: d,
                cols: kp,
            };
            product_level::<M>(level, &qk, scores, kp);
            for (i, (row, out_scale)) in scores
                .chunks_exact_mut(kp)
                .zip(row_scale.iter_mut())
                .enumerate()
            {
                let bias = rel_bias.map(|b| b.row(head, r0 + i, keys));
                *out_scale = softmax::unnormalized_level::<M>(level, row, keys, scale, bias);
            }
            let pv = Product {
                a: scores,
                a_stride: kp,
                a_rows: rows_here,
                b: v_head,
                b_stride: v_stride,
                inner: keys,
                cols: dp,
            };
            let out = &mut out[..padded * dp];
            product_level::<M>(level, &pv, out, dp);
            for (i, (o_row, &out_scale)) in out.chunks_exact(dp).zip(row_scale.iter()).enumerate() {
                sink(r0 + i, head, &o_row[..d], out_scale);
            }
        }
    }
}

/// Query rows per block of the direct kernel: as many as keep a block's scores (`rows × kp` floats) within
/// about 32 KiB of L1, a multiple of [`ROW_PAD`], at least one.
fn rows_per_block(kp: usize) -> usize {
    ((SCORES_BLOCK_FLOATS / kp) / ROW_PAD).max(1) * ROW_PAD
}

/// The floats of scores one block of query rows may take (32 KiB).
const SCORES_BLOCK_FLOATS: usize = 8192;

/// `kt[c][t] = rows[t][col + c]` for the first `keys` rows (`stride` apart) and `d` columns: one head's Kᵀ,
/// rows `kp` apart. A block of 16 tokens at a time, so each of the `d` rows of Kᵀ gets a whole cache line of
/// stores, where a token at a time scatters `d` single floats `kp · 4` bytes apart (at 256 tokens, 1 KiB:
/// every store a different line, all aliasing in 4 KiB); AVX-512 transposes whole 16 × 16 blocks in registers,
/// the last, partial one too (its padding columns get copies of the last key, finite scores the softmax masks:
/// element by element, a 26-token text's last 10 keys were 5 % of a short-text int8 profile).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transpose_keys(
    rows: &[f32],
    keys: usize,
    col: usize,
    stride: usize,
    d: usize,
    kt: &mut [f32],
    kp: usize,
    level: crate::simd::SimdLevel,
) {
    for block_start in (0..keys).step_by(LANES) {
        let block_len = LANES.min(keys - block_start);
        let block = &rows[block_start * stride + col..];
        #[cfg(target_arch = "x86_64")]
        if level == crate::simd::SimdLevel::Avx512 && d.is_multiple_of(LANES) {
            for c0 in (0..d).step_by(LANES) {
                // SAFETY: an Avx512 level comes only from SimdLevel::supported()/capped().
                unsafe {
                    tiles::avx512::transpose16(
                        &block[c0..],
                        stride,
                        block_len,
                        &mut kt[c0 * kp + block_start..],
                        kp,
                    )
                };
            }
            continue;
        }
        let _ = level;
        for c in 0..d {
            let dst = &mut kt[c * kp + block_start..c * kp + block_start + block_len];
            for (t, x) in dst.iter_mut().enumerate() {
                *x = block[t * stride + c];
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::SimdLevel;
    use embedkit_model::{Activation, Architecture};

    fn config(hidden_size: usize, num_heads: usize) -> EncoderConfig {
        EncoderConfig {
            architecture: Architecture::Bert,
            model_type: "bert".into(),
            hidden_size,
            num_layers: 1,
            num_heads,
            intermediate_size: 4 * hidden_size,
            activation: Activation::Gelu,
            layer_norm_eps: 1e-12,
            vocab_size: 10,
            max_position_embeddings: 1024,
            type_vocab_size: 0,
            position_offset: 0,
            relative_attention_num_buckets: None,
            modernbert: None,
            decoder: None,
        }
    }

    /// A deterministic `[tokens × 3·hidden]` fused Q/K/V matrix with values in [-2, 2].
    fn qkv(tokens: usize, hidden: usize) -> Vec<f32> {
        (0..tokens * 3 * hidden)
            .map(|i| 2.0 * ((i as f32) * 0.618_034).sin())
            .collect()
    }

    /// `softmax(Q·Kᵀ/√d)·V` per sequence and head, in f64 loops.
    fn naive(qkv: &[f32], seq_lens: &[usize], key_lens: &[usize], cfg: &EncoderConfig) -> Vec<f32> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim());
        let total: usize = seq_lens.iter().sum();
        let mut ctx = vec![0.0f32; total * h];
        let mut start = 0;
        for (&len, &keys) in seq_lens.iter().zip(key_lens) {
            let at = |t: usize, part: usize, head: usize, c: usize| {
                f64::from(qkv[(start + t) * 3 * h + part * h + head * d + c])
            };
            for head in 0..cfg.num_heads {
                for i in 0..len {
                    let scores: Vec<f64> = (0..keys)
                        .map(|j| {
                            (0..d)
                                .map(|c| at(i, 0, head, c) * at(j, 1, head, c))
                                .sum::<f64>()
                        })
                        .map(|s| s / (d as f64).sqrt())
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = exps.iter().sum();
                    for c in 0..d {
                        let o: f64 = (0..keys).map(|j| exps[j] / sum * at(j, 2, head, c)).sum();
                        ctx[(start + i) * h + head * d + c] = o as f32;
                    }
                }
            }
            start += len;
        }
        ctx
    }

    /// The direct kernel (V read in place for 32-dimension heads, copied and padded for 24) and the `gemm`
    /// path (a 600-token sequence) against the naive sums, with key masks, per (sequence, head) tasks (two
    /// sequences) and per sequence tasks (eight), at every SIMD level this CPU has.
    #[test]
    fn attention_matches_naive_sums() {
        for (hidden, heads) in [(128usize, 4usize), (96, 4)] {
            let cfg = config(hidden, heads);
            for (seq_lens, key_lens) in [
                (vec![5usize, 600], vec![5usize, 590]),
                (
                    vec![1, 17, 40, 70, 3, 9, 33, 16],
                    vec![1, 17, 31, 70, 2, 9, 33, 16],
                ),
            ] {
                let total: usize = seq_lens.iter().sum();
                let input = qkv(total, hidden);
                let want = naive(&input, &seq_lens, &key_lens, &cfg);
                for level in [SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512] {
                    if SimdLevel::capped(level) != level {
                        continue;
                    }
                    let mut got = vec![f32::NAN; total * hidden];
                    attend(
                        &input,
                        &seq_lens,
                        Some(&key_lens),
                        &cfg,
                        None,
                        &mut got,
                        level,
                    );
                    let worst =
                        got.iter()
                            .zip(&want)
                            .map(|(g, w)| (g - w).abs())
                            .fold(
                                0.0f32,
                                |a, b| if b.is_nan() { f32::INFINITY } else { a.max(b) },
                            );
                    assert!(
                        worst < 2e-4,
                        "hidden {hidden}, lens {seq_lens:?}, {level:?}: worst difference {worst}"
                    );
                }
            }
        }
    }

    /// Attention alone at MiniLM's shape (12 heads of 32), 32 sequences of `EMBEDKIT_ATTENTION_TOKENS` (256)
    /// tokens, best of `EMBEDKIT_ATTENTION_RUNS` (20), on the rayon pool (`RAYON_NUM_THREADS`): `cargo test
    /// --release -p embedkit-cpu --lib attention_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, not a check"]
    fn attention_timing() {
        let setting = |name: &str, default: usize| -> usize {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let tokens = setting("EMBEDKIT_ATTENTION_TOKENS", 256);
        let runs = setting("EMBEDKIT_ATTENTION_RUNS", 20);
        let cfg = config(384, 12);
        let seq_lens = vec![tokens; 32];
        let input = qkv(32 * tokens, 384);
        let mut ctx = vec![0.0f32; 32 * tokens * 384];
        let level = SimdLevel::supported();
        let best = (0..runs)
            .map(|_| {
                let t = std::time::Instant::now();
                attend(&input, &seq_lens, None, &cfg, None, &mut ctx, level);
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        let flops = 32.0 * 12.0 * 4.0 * (tokens * tokens * 32) as f64;
        println!(
            "attention, 32 x {tokens} tokens, {level:?}: {:.2} ms, {:.1} GFLOP/s in the two products",
            best * 1e3,
            flops / best / 1e9
        );
    }

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
