//! The direct kernel's softmax of one row of scores, without its division: `e^(scale·x + bias − max)` over
//! the row's keys, returning `1 / Σ` for the caller to apply to the row's `head_dim` outputs instead of its
//! `keys` probabilities. A portable body the AVX2 and baseline levels compile, and AVX-512 intrinsics.

use super::LANES;
use crate::kernels::{fast_exp_or_zero, max16, sum16};
use crate::simd::MulAdd;

/// The softmax of `row` (a multiple of [`LANES`] long) over its first `valid` entries, each taken as
/// `scale·x + bias[j]` (MPNet's relative position bias, `valid` values) or `scale·x`; returns `1 / Σ`. Every
/// entry of the row ends as its unnormalized probability, the padding as 0.
#[inline(always)]
pub(super) fn unnormalized_level<M: MulAdd>(
    level: crate::simd::SimdLevel,
    row: &mut [f32],
    valid: usize,
    scale: f32,
    bias: Option<&[f32]>,
) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if level == crate::simd::SimdLevel::Avx512 {
        // SAFETY: an Avx512 level comes only from SimdLevel::supported()/capped(), i.e. the CPU has AVX-512F
        // and FMA.
        return unsafe { avx512::unnormalized(row, valid, scale, bias) };
    }
    let _ = level;
    unnormalized::<M>(row, valid, scale, bias)
}

/// The portable body of [`unnormalized_level`].
#[inline(always)]
fn unnormalized<M: MulAdd>(row: &mut [f32], valid: usize, scale: f32, bias: Option<&[f32]>) -> f32 {
    let scale = match bias {
        Some(bias) => {
            for (x, b) in row[..valid].iter_mut().zip(bias) {
                *x = M::mul_add(*x, scale, *b);
            }
            1.0
        }
        None => scale,
    };
    row[valid..].fill(f32::NEG_INFINITY);
    let max = max16(row);
    // scale > 0, so the maximum of the scaled scores is scale · max.
    let shift = -scale * max;
    for x in row.iter_mut() {
        *x = fast_exp_or_zero::<M>(M::mul_add(*x, scale, shift));
    }
    // A second pass over the row (in L1): summed inside the loop above, the lanes' sums went through the stack.
    1.0 / sum16(row)
}

/// The softmax in AVX-512 registers: the maximum and the sum in vector accumulators with one horizontal
/// reduction each, the bias added on the way in, the padded tail masked. The portable body spent more time on
/// a short text's rows (32 keys: two vectors) in its scalar reductions, the padding fill and the bias pass
/// than in the exponentials.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::LANES;
    use crate::kernels::fast_exp_or_zero;
    use crate::simd::Fused;
    use std::arch::x86_64::*;

    /// `e^x` (0 below −87) lane by lane through the crate's one exponential, which LLVM keeps in a register.
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    fn exp(x: __m512) -> __m512 {
        // SAFETY: __m512 and [f32; 16] have the same size, and every bit pattern is valid for both.
        let lanes: [f32; LANES] = unsafe { std::mem::transmute(x) };
        // A loop, not `lanes.map(…)`: `map` is not inlined here, so its body would lose this function's
        // target features (and `mul_add` its FMA instruction).
        let mut out = [0.0f32; LANES];
        for (o, &x) in out.iter_mut().zip(&lanes) {
            *o = fast_exp_or_zero::<Fused>(x);
        }
        // SAFETY: as above.
        unsafe { std::mem::transmute(out) }
    }

    /// `step(acc, i, mask)` over vectors `0..full` (all lanes) and then vector `full` (the lanes of `tail`, when
    /// any), into two accumulators, for two dependency chains instead of one; the caller combines them. They
    /// are named, not an array indexed by `i % 2`, which put them on the stack.
    #[inline(always)]
    fn two_chains(
        full: usize,
        tail: __mmask16,
        init: __m512,
        mut step: impl FnMut(__m512, usize, __mmask16) -> __m512,
    ) -> (__m512, __m512) {
        let (mut a, mut b) = (init, init);
        let mut i = 0;
        while i + 2 <= full {
            a = step(a, i, 0xFFFF);
            b = step(b, i + 1, 0xFFFF);
            i += 2;
        }
        if i < full {
            a = step(a, i, 0xFFFF);
        }
        if tail != 0 {
            b = step(b, full, tail);
        }
        (a, b)
    }

    /// [`super::unnormalized_level`] for CPUs with AVX-512F and FMA.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and FMA.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn unnormalized(
        row: &mut [f32],
        valid: usize,
        scale: f32,
        bias: Option<&[f32]>,
    ) -> f32 {
        assert!(
            row.len().is_multiple_of(LANES)
                && valid <= row.len()
                && row.len() - valid < LANES
                && bias.is_none_or(|b| b.len() >= valid),
            "attention softmax: a row of {} scores, {valid} of them keys",
            row.len()
        );
        let full = valid / LANES;
        // Lanes of the last, partial vector of keys (0 when the keys fill whole vectors).
        let tail: __mmask16 = (1u32 << (valid % LANES)).wrapping_sub(1) as __mmask16;
        let scale_v = _mm512_set1_ps(scale);
        let zero = _mm512_setzero_ps();
        let p = row.as_mut_ptr();
        // `scale·x + bias` of vector `i`, the lanes of `mask` loaded (the others 0).
        let logits = |i: usize, mask: __mmask16| {
            // SAFETY: vector i lies in the row; masked-off lanes are not read, so the bias's last, partial
            // vector reads only its `valid` values.
            unsafe {
                let x = _mm512_maskz_loadu_ps(mask, p.add(i * LANES));
                match bias {
                    Some(b) => _mm512_fmadd_ps(
                        x,
                        scale_v,
                        _mm512_maskz_loadu_ps(mask, b.as_ptr().add(i * LANES)),
                    ),
                    None => _mm512_mul_ps(x, scale_v),
                }
            }
        };
        let (max_a, max_b) = two_chains(
            full,
            tail,
            _mm512_set1_ps(f32::NEG_INFINITY),
            |acc, i, mask| _mm512_mask_max_ps(acc, mask, acc, logits(i, mask)),
        );
        let max_v = _mm512_set1_ps(_mm512_reduce_max_ps(_mm512_max_ps(max_a, max_b)));
        let (sum_a, sum_b) = two_chains(full, tail, zero, |acc, i, mask| {
            let e = _mm512_maskz_mov_ps(mask, exp(_mm512_sub_ps(logits(i, mask), max_v)));
            // SAFETY: vector i lies in the row.
            unsafe { _mm512_storeu_ps(p.add(i * LANES), e) };
            _mm512_add_ps(acc, e)
        });
        1.0 / _mm512_reduce_add_ps(_mm512_add_ps(sum_a, sum_b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{Fused, SimdLevel};

    /// Both bodies against f64 for rows of 16 to 80 entries with every count of padding, with and without a
    /// bias.
    #[test]
    fn softmax_matches_f64() {
        for len in [16usize, 32, 48, 80] {
            for valid in len - 15..=len {
                let scores: Vec<f32> = (0..len).map(|i| 4.0 * ((i as f32) * 0.7).sin()).collect();
                let bias: Vec<f32> = (0..valid).map(|i| ((i as f32) * 0.3).cos()).collect();
                for with_bias in [false, true] {
                    let logit = |j: usize| {
                        f64::from(scores[j]) * 0.125
                            + if with_bias { f64::from(bias[j]) } else { 0.0 }
                    };
                    let max = (0..valid).map(logit).fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = (0..valid).map(|j| (logit(j) - max).exp()).sum();
                    for level in [SimdLevel::Baseline, SimdLevel::Avx512] {
                        if SimdLevel::capped(level) != level {
                            continue;
                        }
                        let mut row = scores.clone();
                        let b = with_bias.then_some(&bias[..]);
                        let inv = unnormalized_level::<Fused>(level, &mut row, valid, 0.125, b);
                        for (j, &p) in row.iter().enumerate() {
                            let want = if j < valid {
                                (logit(j) - max).exp() / sum
                            } else {
                                0.0
                            };
                            let got = f64::from(p * inv);
                            assert!(
                                (got - want).abs() < 1e-6,
                                "{level:?}, {valid} of {len}, bias {with_bias}, [{j}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
