//! Rotary position embeddings and gated feed-forward activations (GeGLU), for the architectures that use
//! them (ModernBERT).

use crate::kernels::erf;
use crate::simd::{MulAdd, SimdLevel};
use rayon::prelude::*;

/// cos and sin of `position · inv_freq[i]` for positions `0..len` and `i < head_dim / 2`, computed in f32 as
/// transformers does (`inv_freq = 1 / θ^(2i/d)`, the product in f32, then cos/sin), so positions far out
/// (8,192) round the same way.
pub(crate) struct RopeTable {
    half: usize,
    /// `[len][half]`.
    cos: Vec<f32>,
    /// `[len][half]`.
    sin: Vec<f32>,
}

impl RopeTable {
    pub(crate) fn new(theta: f32, head_dim: usize, len: usize) -> Self {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let mut cos = vec![0.0f32; len * half];
        let mut sin = vec![0.0f32; len * half];
        cos.par_chunks_mut(half)
            .zip(sin.par_chunks_mut(half))
            .enumerate()
            .for_each(|(p, (c, s))| {
                for ((c, s), f) in c.iter_mut().zip(s.iter_mut()).zip(&inv_freq) {
                    let angle = p as f32 * f;
                    *c = angle.cos();
                    *s = angle.sin();
                }
            });
        Self { half, cos, sin }
    }

    /// Rotates one head's `2·half` values by position `pos` (a decoder's heads, whose q and k parts have
    /// different widths, go one at a time).
    #[inline]
    pub(crate) fn rotate(&self, head: &mut [f32], pos: usize) {
        let half = self.half;
        let (cos, sin) = (&self.cos[pos * half..], &self.sin[pos * half..]);
        let (x1, x2) = head[..2 * half].split_at_mut(half);
        for i in 0..half {
            let (u, v) = (x1[i], x2[i]);
            x1[i] = u * cos[i] - v * sin[i];
            x2[i] = v * cos[i] + u * sin[i];
        }
    }
}

/// Rows of `qkv` per parallel task of [`apply_rope`].
const ROPE_ROWS: usize = 64;

/// Rotates the query and key parts of every row of the fused `qkv[t × 3·hidden]` (Q, K, V, each `heads ×
/// head_dim`) by its token's position: `x·cos + rotate_half(x)·sin` per head, halves not interleaved
/// (transformers' `rotate_half`, as ModernBERT, Llama and Qwen use it).
pub(crate) fn apply_rope(
    level: SimdLevel,
    qkv: &mut [f32],
    positions: &[usize],
    hidden: usize,
    table: &RopeTable,
) {
    qkv.par_chunks_mut(ROPE_ROWS * 3 * hidden)
        .zip(positions.par_chunks(ROPE_ROWS))
        .for_each(|(rows, pos)| rope_rows(level, rows, pos, hidden, table));
}

crate::simd::multiversion!(rope_rows(rows: &mut [f32], positions: &[usize], hidden: usize, table: &RopeTable) => rope_rows_body);

#[inline(always)]
fn rope_rows_body(rows: &mut [f32], positions: &[usize], hidden: usize, table: &RopeTable) {
    let half = table.half;
    for (row, &p) in rows.chunks_exact_mut(3 * hidden).zip(positions) {
        let cos = &table.cos[p * half..(p + 1) * half];
        let sin = &table.sin[p * half..(p + 1) * half];
        // Q and K: the first 2·hidden values, head_dim = 2·half apart.
        for head in row[..2 * hidden].chunks_exact_mut(2 * half) {
            let (x1, x2) = head.split_at_mut(half);
            for (((a, b), &c), &s) in x1.iter_mut().zip(x2.iter_mut()).zip(cos).zip(sin) {
                let (u, v) = (*a, *b);
                *a = u * c - v * s;
                *b = v * c + u * s;
            }
        }
    }
}

/// Elements of the output per parallel task of [`geglu`].
const GLU_CHUNK: usize = 16 * 1024;

/// `out[r][j] = gelu(x[r][j]) · x[r][inter + j]` for `x[t × 2·inter]`: the up projection's first half through
/// exact GELU, gated by its second half (ModernBERT's `act(input) * gate` after `chunk(2)`).
pub(crate) fn geglu(level: SimdLevel, x: &[f32], inter: usize, out: &mut [f32]) {
    debug_assert_eq!(x.len(), 2 * out.len());
    let rows = (GLU_CHUNK / inter).max(1);
    out.par_chunks_mut(rows * inter)
        .zip(x.par_chunks(rows * 2 * inter))
        .for_each(|(o, x)| geglu_rows(level, x, inter, o));
}

crate::simd::multiversion!(geglu_rows(x: &[f32], inter: usize, out: &mut [f32]) => fma geglu_body);

#[inline(always)]
fn geglu_body<M: MulAdd>(x: &[f32], inter: usize, out: &mut [f32]) {
    for (src, dst) in x.chunks_exact(2 * inter).zip(out.chunks_exact_mut(inter)) {
        let (input, gate) = src.split_at(inter);
        for ((o, &a), &g) in dst.iter_mut().zip(input).zip(gate) {
            *o = 0.5 * a * (1.0 + erf::<M>(a * std::f32::consts::FRAC_1_SQRT_2)) * g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_rotates_each_half_pair() {
        // One token, one head of 4 at position 3, θ = 10: pairs (0, 2) and (1, 3) rotate by 3·θ^(−2i/4).
        let table = RopeTable::new(10.0, 4, 4);
        let hidden = 4;
        let mut qkv: Vec<f32> = (1..=12).map(|v| v as f32).collect();
        apply_rope(SimdLevel::detect(), &mut qkv, &[3], hidden, &table);
        for (base, x) in [(0usize, [1.0f64, 2.0, 3.0, 4.0]), (4, [5.0, 6.0, 7.0, 8.0])] {
            for i in 0..2 {
                let angle = 3.0 * 10f64.powf(-(2.0 * i as f64) / 4.0);
                let (u, v) = (x[i], x[i + 2]);
                let want = [
                    u * angle.cos() - v * angle.sin(),
                    v * angle.cos() + u * angle.sin(),
                ];
                assert!((qkv[base + i] as f64 - want[0]).abs() < 1e-5);
                assert!((qkv[base + i + 2] as f64 - want[1]).abs() < 1e-5);
            }
        }
        // V is untouched.
        assert_eq!(&qkv[8..], &[9.0, 10.0, 11.0, 12.0]);
    }

    #[test]
    fn geglu_gates_gelu_of_the_first_half() {
        let x = [1.0f32, -2.0, 3.0, 0.5];
        let mut out = [0.0f32; 2];
        geglu(SimdLevel::detect(), &x, 2, &mut out);
        // The reference: the feed-forward GELU kernel (tested against erf in kernels.rs), times the gate.
        let mut gelu = [1.0f32, -2.0];
        crate::kernels::activate(
            SimdLevel::detect(),
            &mut gelu,
            embedkit_model::Activation::Gelu,
        );
        assert_eq!(out, [gelu[0] * 3.0, gelu[1] * 0.5]);
    }
}
