//! The arithmetic of one encoder layer, on row-major f32 buffers.

use crate::simd::{MulAdd, SimdLevel, Unfused};
use gemm::Parallelism;

/// Row-major `y[t × n] = x[t × k] · wᵀ + bias`, with `w` stored `[n × k]` as in PyTorch.
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear(
    x: &[f32],
    t: usize,
    k: usize,
    w: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    y: &mut [f32],
    parallelism: Parallelism,
) {
    debug_assert_eq!(x.len(), t * k);
    debug_assert_eq!(w.len(), n * k);
    debug_assert_eq!(y.len(), t * n);
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(n) {
            row.copy_from_slice(b);
        }
    }
    // SAFETY: the asserts above (and the callers' buffer sizes) guarantee every index the strides reach is
    // inside `x`, `w` and `y`; `y` does not alias the inputs because it is a distinct &mut.
    unsafe {
        gemm::gemm(
            t,
            n,
            k,
            y.as_mut_ptr(),
            1,
            n as isize,
            bias.is_some(),
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `c[m × n] = scale · a[m × k] · b[n × k]ᵀ`, with row strides given (for per-head views into wider rows).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_abt(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    b: &[f32],
    b_rs: usize,
    c: &mut [f32],
    scale: f32,
) {
    debug_assert!(m == 0 || a.len() >= (m - 1) * a_rs + k);
    debug_assert!(n == 0 || b.len() >= (n - 1) * b_rs + k);
    debug_assert!(c.len() >= m * n);
    // SAFETY: bounds follow from the asserts; c is a distinct &mut.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            a_rs as isize,
            b.as_ptr(),
            b_rs as isize,
            1,
            0.0,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// `c[m × n] (row stride c_rs) = a[m × k] · b[k × n]` with `b`'s rows `b_rs` apart.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_ab(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    b_rs: usize,
    c: &mut [f32],
    c_rs: usize,
) {
    debug_assert!(a.len() >= m * k);
    debug_assert!(k == 0 || b.len() >= (k - 1) * b_rs + n);
    debug_assert!(m == 0 || c.len() >= (m - 1) * c_rs + n);
    // SAFETY: bounds follow from the asserts; c is a distinct &mut.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_rs as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            b_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// Sum of a slice in 16 independent lanes: f32 addition is not associative, so a plain `sum()` stays one
/// serial chain; explicit lanes let it vectorize. The tail is added to the lane total one value at a time.
#[inline(always)]
pub fn sum16(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            lanes[l] += c[l];
        }
    }
    let mut s = lanes.iter().sum::<f32>();
    for v in chunks.remainder() {
        s += *v;
    }
    s
}

/// `Σ a·b` in 16 lanes, vectorizable like [`sum16`] (no fused multiply-add, so every level gives the same
/// bits).
#[inline(always)]
pub fn dot16(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((s, p), q) in lanes.iter_mut().zip(x).zip(y) {
            *s += *p * *q;
        }
    }
    let mut s = lanes.iter().sum::<f32>();
    for (p, q) in ra.iter().zip(rb) {
        s += *p * *q;
    }
    s
}

/// The largest value, in 16 lanes like [`sum16`]; −∞ for an empty slice, and NaNs are skipped (as
/// `f32::max` does). Plain comparisons rather than `f32::max`, whose NaN rule costs extra instructions per
/// lane, and the lanes are folded as a tree (8, 4, 2, 1: four vector steps) rather than one serial chain of
/// 15 scalar maxima, which was most of the softmax's max for the 32-key rows of short texts.
#[inline(always)]
pub fn max16(x: &[f32]) -> f32 {
    // `a` when it is larger, else `b`: a NaN `a` loses, and the operands are in `maxps` order.
    #[inline(always)]
    fn larger(a: f32, b: f32) -> f32 {
        if a > b { a } else { b }
    }
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = larger(*v, *l);
        }
    }
    for (l, v) in lanes.iter_mut().zip(chunks.remainder()) {
        *l = larger(*v, *l);
    }
    let mut width = 8;
    while width > 0 {
        for l in 0..width {
            lanes[l] = larger(lanes[l + width], lanes[l]);
        }
        width /= 2;
    }
    lanes[0]
}

/// A raw pointer to an output buffer that parallel tasks share. Each task writes only its own disjoint part
/// (rows, column blocks, heads), which is what makes sending it across threads sound; every use says which.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: tasks holding copies write disjoint elements; see each use.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method, so closures capture the whole (Sync) wrapper rather than its raw-pointer field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// `x = LayerNorm(x + residual)` row by row (pass an empty residual to skip the add).
#[inline(always)]
pub(crate) fn add_layer_norm(
    x: &mut [f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let h = gamma.len();
    for (r, row) in x.chunks_exact_mut(h).enumerate() {
        if !residual.is_empty() {
            for (v, res) in row.iter_mut().zip(&residual[r * h..(r + 1) * h]) {
                *v += res;
            }
        }
        let mean = sum16(row) / h as f32;
        let mut sq = [0.0f32; 16];
        let mut chunks = row.chunks_exact(16);
        for c in &mut chunks {
            for l in 0..16 {
                sq[l] += (c[l] - mean) * (c[l] - mean);
            }
        }
        let tail: f32 = chunks
            .remainder()
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum();
        let var = (sq.iter().sum::<f32>() + tail) / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// In-place softmax of one row.
#[inline(always)]
pub(crate) fn softmax(row: &mut [f32]) {
    let max = max16(row);
    for v in row.iter_mut() {
        *v = fast_exp::<Unfused>(*v - max);
    }
    let inv = 1.0 / sum16(row);
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `e^x` with relative error below 2e-7, written without branches or calls so loops over it vectorize
/// (libm's `expf` is a call per element and kept GELU and softmax scalar). `M` decides whether the
/// polynomial uses fused multiply-adds (half the instructions where the CPU has FMA).
#[inline(always)]
pub fn fast_exp<M: MulAdd>(x: f32) -> f32 {
    // e^x = 2^n · e^r with n = round(x / ln 2) and |r| ≤ ln2 / 2; ln 2 split in two so r keeps full precision.
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer without a call to roundf.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = M::mul_add(x, LOG2E, ROUND);
    let n = shifted - ROUND;
    // n as an integer, read from the mantissa bits of `shifted` (whose low bits hold 2²² + n): `n as i32`
    // would be a saturating conversion, which LLVM does one lane at a time.
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = M::mul_add(-n, LN2_LO, M::mul_add(-n, LN2_HI, x));
    // Taylor terms to r^7: the truncation error on |r| ≤ 0.347 is below 1e-8 relative.
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = M::mul_add(p, r, c);
    }
    // |x| ≤ 88 keeps n in −126..=127, a normal exponent.
    let scale = f32::from_bits(((n_int + 127) as u32) << 23);
    p * scale
}

/// [`fast_exp`], but exactly 0 below −87 (as `exp` gives for masked-out attention logits of −∞ or −1e4)
/// instead of e^−87; a select, not a branch, so loops still vectorize.
#[inline(always)]
pub fn fast_exp_or_zero<M: MulAdd>(x: f32) -> f32 {
    let e = fast_exp::<M>(x);
    if x < -87.0 { 0.0 } else { e }
}

/// erf by Abramowitz & Stegun 7.1.26 (the formula PyTorch's vectorized CPU erf uses): max absolute error
/// 1.5e-7 in exact arithmetic, 5.4e-7 evaluated in f32 (tested below); branch-free so the loop vectorizes. It computes `1 − poly·e^{−x²}`, which keeps GELU's tiny outputs
/// for large negative inputs accurate; a cheaper exp-free rational fit (Eigen's) was tried and lost that
/// (GELU(−5.58) off by 6e-7).
#[inline(always)]
pub fn erf<M: MulAdd>(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / M::mul_add(0.327_591_1, a, 1.0);
    let mut poly = 1.061_405_4;
    for c in [-1.453_152_1, 1.421_413_7, -0.284_496_74, 0.254_829_6] {
        poly = M::mul_add(poly, t, c);
    }
    let y = M::mul_add(-(poly * t), fast_exp::<M>(-a * a), 1.0);
    y.copysign(x)
}

/// Elements per parallel task of the element-wise kernels: big enough to amortize scheduling.
const ELEMENTWISE_CHUNK: usize = 16 * 1024;

#[inline(always)]
fn activate_body<M: MulAdd>(chunk: &mut [f32], act: embedkit_model::Activation) {
    use embedkit_model::Activation;
    match act {
        Activation::Gelu => chunk
            .iter_mut()
            .for_each(|v| *v = 0.5 * *v * (1.0 + erf::<M>(*v * std::f32::consts::FRAC_1_SQRT_2))),
        Activation::GeluTanh => chunk.iter_mut().for_each(|v| {
            // tanh(u) = 1 − 2 / (e^{2u} + 1), through fast_exp so the loop vectorizes.
            let u = 0.797_884_6 * (*v + 0.044_715 * *v * *v * *v);
            let t = 1.0 - 2.0 / (fast_exp::<M>(2.0 * u) + 1.0);
            *v = 0.5 * *v * (1.0 + t);
        }),
        Activation::Relu => chunk.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Silu => chunk
            .iter_mut()
            .for_each(|v| *v /= 1.0 + fast_exp::<M>(-*v)),
    }
}

crate::simd::multiversion!(activate_chunk(chunk: &mut [f32], act: embedkit_model::Activation) => fma activate_body);

crate::simd::multiversion!(layer_norm_chunk(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) => add_layer_norm);

/// Applies the feed-forward activation in place, in parallel chunks.
pub(crate) fn activate(level: SimdLevel, x: &mut [f32], act: embedkit_model::Activation) {
    use rayon::prelude::*;
    if x.len() <= ELEMENTWISE_CHUNK {
        activate_chunk(level, x, act);
    } else {
        x.par_chunks_mut(ELEMENTWISE_CHUNK)
            .for_each(|c| activate_chunk(level, c, act));
    }
}

/// `x = LayerNorm(x + residual)` over rows of `gamma.len()`, rows in parallel.
pub(crate) fn add_layer_norm_parallel(
    level: SimdLevel,
    x: &mut [f32],
    residual: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    use rayon::prelude::*;
    let h = gamma.len();
    let rows_per_task = (ELEMENTWISE_CHUNK / h).max(1);
    if x.len() <= ELEMENTWISE_CHUNK {
        layer_norm_chunk(level, x, residual, gamma, beta, eps);
        return;
    }
    x.par_chunks_mut(rows_per_task * h)
        .enumerate()
        .for_each(|(i, chunk)| {
            let start = i * rows_per_task * h;
            let res = if residual.is_empty() {
                &[][..]
            } else {
                &residual[start..start + chunk.len()]
            };
            layer_norm_chunk(level, chunk, res, gamma, beta, eps);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lane tree against a serial `f32::max` fold on every tail length, with NaNs (skipped by both),
    /// infinities and the maximum in every position.
    #[test]
    fn max16_is_the_largest_value() {
        assert_eq!(max16(&[]), f32::NEG_INFINITY);
        assert_eq!(max16(&[f32::NAN, f32::NEG_INFINITY]), f32::NEG_INFINITY);
        for len in 1..70 {
            for peak in 0..len {
                let mut x: Vec<f32> = (0..len).map(|i| ((i * 7) as f32 * 0.61).sin()).collect();
                x[peak] = 3.0 + peak as f32;
                if len > 2 {
                    x[(peak + 1) % len] = f32::NAN;
                }
                let want = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(max16(&x), want, "{len} values, largest at {peak}");
            }
        }
        assert_eq!(max16(&[1.0, f32::INFINITY, 2.0]), f32::INFINITY);
    }

    #[test]
    fn erf_is_accurate() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
            (4.0, 1.0),
        ] {
            for got in [erf::<Unfused>(x), erf::<crate::simd::Fused>(x)] {
                assert!((got - want).abs() < 3e-7, "erf({x}) = {got}");
            }
        }
    }

    #[test]
    fn erf_sweep_is_accurate() {
        let mut worst = 0.0f64;
        for i in -6000..=6000 {
            let x = i as f32 * 0.001;
            let want = libm_erf(x as f64);
            for got in [erf::<Unfused>(x), erf::<crate::simd::Fused>(x)] {
                worst = worst.max((got as f64 - want).abs());
            }
        }
        assert!(worst < 6e-7, "worst absolute error {worst}");
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in -8700..8800 {
            let x = i as f32 * 0.01;
            let want = (x as f64).exp();
            for got in [fast_exp::<Unfused>(x), fast_exp::<crate::simd::Fused>(x)] {
                worst = worst.max(((got as f64 - want) / want).abs());
            }
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(fast_exp::<Unfused>(-1000.0), (-87.0f32).exp());
    }

    #[test]
    fn gelu_matches_the_erf_definition() {
        let xs: Vec<f32> = (-600..600).map(|i| i as f32 * 0.01).collect();
        let mut y = xs.clone();
        activate(
            SimdLevel::detect(),
            &mut y,
            embedkit_model::Activation::Gelu,
        );
        for (x, y) in xs.iter().zip(&y) {
            let want = 0.5 * *x as f64 * (1.0 + libm_erf(*x as f64 / std::f64::consts::SQRT_2));
            assert!(
                (*y as f64 - want).abs() < 5e-7,
                "gelu({x}) = {y}, want {want}"
            );
        }
    }

    /// erf in f64 by its Taylor series (converges fast for |x| < 5), as an independent reference.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 5.0 {
            return x.signum();
        }
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn linear_matches_naive() {
        let (t, k, n) = (3, 5, 4);
        let x: Vec<f32> = (0..t * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let b: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut y = vec![0.0; t * n];
        linear(&x, t, k, &w, Some(&b), n, &mut y, Parallelism::None);
        for r in 0..t {
            for c in 0..n {
                let want: f32 = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum::<f32>() + b[c];
                assert!((y[r * n + c] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn layer_norm_standardizes() {
        let mut x = vec![1.0, 2.0, 3.0, 4.0];
        add_layer_norm(&mut x, &[1.0, 1.0, 1.0, 1.0], &[1.0; 4], &[0.0; 4], 1e-12);
        let mean: f32 = x.iter().sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6);
        assert!((x[3] - 1.341_640_8).abs() < 1e-5);
    }
}
