//! The direct attention kernel's two products per head, scores `Q·Kᵀ` and the weighted values `P·V`, as
//! register tiles: a portable body the AVX2 and baseline levels compile, and AVX-512 intrinsics.

use super::{LANES, TILE_ROWS};
use crate::simd::MulAdd;

/// The operands of `c[r][col] = Σ_t a[r][t]·b[t][col]`: `a` has `inner` values per row, `b` `inner` rows of
/// `cols` values (a multiple of [`LANES`]); both row-major with their own row strides. Scores are `Q·Kᵀ` with
/// Q read in place from the sequence's rows and Kᵀ stored `[d][keys]`; the output is `P·V`.
///
/// `c` has whole tiles of rows, `a` only `a_rows` (a sequence's tokens): rows of `c` past them are computed
/// from `a`'s last row again, and the caller ignores them.
pub(super) struct Product<'a> {
    pub(super) a: &'a [f32],
    pub(super) a_stride: usize,
    pub(super) a_rows: usize,
    pub(super) b: &'a [f32],
    pub(super) b_stride: usize,
    pub(super) inner: usize,
    pub(super) cols: usize,
}

/// `c = a·b` (see [`Product`]) for the rows of `c` (`c_stride` apart, a multiple of [`TILE_ROWS`]), 4 rows ×
/// 16 columns at a time: a broadcast and a vector FMA per step, no horizontal sums.
#[inline(always)]
pub(super) fn product_tiles<M: MulAdd>(m: &Product<'_>, c: &mut [f32], c_stride: usize) {
    let rows = c.len() / c_stride;
    for r0 in (0..rows).step_by(TILE_ROWS) {
        let a_rows: [&[f32]; TILE_ROWS] = std::array::from_fn(|r| {
            &m.a[(r0 + r).min(m.a_rows.saturating_sub(1)) * m.a_stride..][..m.inner]
        });
        for c0 in (0..m.cols).step_by(LANES) {
            let mut acc = [[0.0f32; LANES]; TILE_ROWS];
            for t in 0..m.inner {
                let bv = &m.b[t * m.b_stride + c0..][..LANES];
                for (acc_r, a_r) in acc.iter_mut().zip(&a_rows) {
                    let x = a_r[t];
                    for l in 0..LANES {
                        acc_r[l] = M::mul_add(x, bv[l], acc_r[l]);
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                c[(r0 + r) * c_stride + c0..][..LANES].copy_from_slice(acc_r);
            }
        }
    }
}

/// The product in AVX-512 intrinsics with 16-register tiles: the portable tiles keep 4 accumulators, so each
/// step is a load, 4 broadcasts and 4 FMAs chained on the FMA latency; here a step is 4 loads, 4 broadcasts
/// and 16 FMAs (64 columns), or 1–2 loads and 8 broadcasts for 8–16 FMAs (the last 32 or 16 columns).
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use super::super::LANES;
    use super::Product;
    use std::arch::x86_64::*;

    /// `c = a·b` for the rows of `c` (`c_stride` apart, a multiple of 8).
    ///
    /// # Safety
    /// The CPU must support AVX-512F and FMA.
    #[target_feature(enable = "avx512f,fma")]
    pub(in crate::attention) unsafe fn product(m: &Product<'_>, c: &mut [f32], c_stride: usize) {
        let rows = c.len() / c_stride;
        assert!(
            c.len() == rows * c_stride
                && rows.is_multiple_of(8)
                && m.cols.is_multiple_of(LANES)
                && m.cols <= c_stride.min(m.b_stride)
                && m.inner <= m.a_stride
                && m.a_rows >= 1
                && m.a.len() >= (m.a_rows - 1) * m.a_stride + m.inner
                && m.b.len() >= m.inner.saturating_sub(1) * m.b_stride + m.cols,
            "attention product: operands do not match their shapes"
        );
        let mut c0 = 0;
        // SAFETY (all three): the assert above; rows r0..r0 + R ≤ rows and columns c0..c0 + 16·NV ≤ cols.
        while c0 + 64 <= m.cols {
            for r0 in (0..rows).step_by(4) {
                unsafe { tile::<4, 4>(m, c, c_stride, r0, c0) };
            }
            c0 += 64;
        }
        if c0 + 32 <= m.cols {
            for r0 in (0..rows).step_by(8) {
                unsafe { tile::<8, 2>(m, c, c_stride, r0, c0) };
            }
            c0 += 32;
        }
        if c0 < m.cols {
            for r0 in (0..rows).step_by(8) {
                unsafe { tile::<8, 1>(m, c, c_stride, r0, c0) };
            }
        }
    }

    /// `dst[c][t] = src[min(t, src_rows − 1)][c]` for a 16 × 16 block, rows `src_stride` and `dst_stride`
    /// floats apart: 16 loads, 64 in-register shuffles and 16 stores, where element by element it is 256
    /// single-float stores. Rows past `src_rows` (1..=16) repeat the last one, so a sequence's last, partial
    /// block of keys goes through the same shuffles and fills its padding columns with finite values.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(in crate::attention) unsafe fn transpose16(
        src: &[f32],
        src_stride: usize,
        src_rows: usize,
        dst: &mut [f32],
        dst_stride: usize,
    ) {
        assert!(
            (1..=LANES).contains(&src_rows)
                && src.len() >= (src_rows - 1) * src_stride + LANES
                && dst.len() >= 15 * dst_stride + LANES,
            "transpose16: a 16 × 16 block does not fit its operands"
        );
        // SAFETY: the assert above: rows 0..src_rows of 16 floats each are inside `src`, 16 rows inside `dst`.
        let mut r: [__m512; 16] = std::array::from_fn(|i| unsafe {
            _mm512_loadu_ps(src.as_ptr().add(i.min(src_rows - 1) * src_stride))
        });
        let mut t = [_mm512_setzero_ps(); 16];
        // Pairs of rows interleaved per 128-bit lane, then pairs of pairs: each 128-bit lane of r[4g + j]
        // holds column j of rows 4g..4g + 4 for that lane's four columns.
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        for g in 0..4 {
            r[4 * g] = _mm512_shuffle_ps::<0x44>(t[4 * g], t[4 * g + 2]);
            r[4 * g + 1] = _mm512_shuffle_ps::<0xEE>(t[4 * g], t[4 * g + 2]);
            r[4 * g + 2] = _mm512_shuffle_ps::<0x44>(t[4 * g + 1], t[4 * g + 3]);
            r[4 * g + 3] = _mm512_shuffle_ps::<0xEE>(t[4 * g + 1], t[4 * g + 3]);
        }
        // Then the 128-bit lanes themselves, across groups of four rows.
        for half in 0..2 {
            for i in 0..4 {
                let (lo, hi) = (r[8 * half + i], r[8 * half + i + 4]);
                t[8 * half + i] = _mm512_shuffle_f32x4::<0x88>(lo, hi);
                t[8 * half + i + 4] = _mm512_shuffle_f32x4::<0xDD>(lo, hi);
            }
        }
        for i in 0..8 {
            r[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[i + 8]);
            r[i + 8] = _mm512_shuffle_f32x4::<0xDD>(t[i], t[i + 8]);
        }
        for (i, &row) in r.iter().enumerate() {
            // SAFETY: the assert above.
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(i * dst_stride), row) };
        }
    }

    /// `R` rows from `r0` × `NV` vectors of 16 columns from `c0`.
    ///
    /// # Safety
    /// AVX-512F and FMA; rows `r0 .. r0 + R` of `c` (of `a`: those below `a_rows`), and columns `c0 .. c0 +
    /// 16·NV` of `b` and `c`, inside the operands (as [`product`] asserts).
    #[inline]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn tile<const R: usize, const NV: usize>(
        m: &Product<'_>,
        c: &mut [f32],
        c_stride: usize,
        r0: usize,
        c0: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        let b = m.b.as_ptr();
        // SAFETY: rows below a_rows, each with inner ≤ a_stride values inside a (the caller's assert).
        let a_rows: [*const f32; R] = std::array::from_fn(|i| unsafe {
            m.a.as_ptr().add((r0 + i).min(m.a_rows - 1) * m.a_stride)
        });
        for t in 0..m.inner {
            // SAFETY: t < inner rows of b with c0 + 16·NV ≤ cols ≤ b_stride; t < inner values of a's rows.
            unsafe {
                let bv: [__m512; NV] = std::array::from_fn(|v| {
                    _mm512_loadu_ps(b.add(t * m.b_stride + c0 + v * LANES))
                });
                for (acc_r, a_row) in acc.iter_mut().zip(&a_rows) {
                    let x = _mm512_set1_ps(*a_row.add(t));
                    for v in 0..NV {
                        acc_r[v] = _mm512_fmadd_ps(x, bv[v], acc_r[v]);
                    }
                }
            }
        }
        for (i, acc_r) in acc.iter().enumerate() {
            for (v, &x) in acc_r.iter().enumerate() {
                // SAFETY: row r0 + i of c and columns c0 + 16·v + 16 ≤ cols ≤ c_stride.
                unsafe {
                    _mm512_storeu_ps(c.as_mut_ptr().add((r0 + i) * c_stride + c0 + v * LANES), x)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 16 × 16 transpose against element by element, with strides wider than the block.
    #[test]
    fn transpose16_transposes() {
        #[cfg(target_arch = "x86_64")]
        if crate::SimdLevel::supported() == crate::SimdLevel::Avx512 {
            let (src_stride, dst_stride) = (37, 21);
            for src_rows in [16, 10, 1] {
                // `src` ends right after its last row's 16 values, as the last sequence's keys do in `qkv`.
                let src: Vec<f32> = (0..(src_rows - 1) * src_stride + 16)
                    .map(|i| i as f32)
                    .collect();
                let mut dst = vec![-1.0; 16 * dst_stride];
                // SAFETY: the CPU has AVX-512F (checked above).
                unsafe { avx512::transpose16(&src, src_stride, src_rows, &mut dst, dst_stride) };
                for c in 0..16 {
                    for t in 0..16 {
                        assert_eq!(
                            dst[c * dst_stride + t],
                            src[t.min(src_rows - 1) * src_stride + c],
                            "{src_rows} rows: row {t}, column {c}"
                        );
                    }
                    assert!(
                        dst[c * dst_stride + 16..(c + 1) * dst_stride]
                            .iter()
                            .all(|&x| x == -1.0)
                    );
                }
            }
        }
    }

    /// Both bodies against the naive sum on every column tail (16 to 80 columns: the 64-, 32- and 16-column
    /// AVX-512 tiles), with row strides wider than the rows, as the direct kernel's padded buffers have, and
    /// with fewer rows of `a` than tiles of `c` cover.
    #[test]
    fn tiles_match_naive() {
        let value = |i: usize, f: f32| ((i as f32) * f).sin();
        for (rows, a_rows, inner, cols) in [
            (8usize, 8usize, 32usize, 16usize),
            (16, 13, 20, 64),
            (8, 1, 33, 48),
            (24, 19, 64, 32),
            (8, 8, 70, 80),
        ] {
            let (a_stride, b_stride, c_stride) = (inner + 3, cols + 16, cols + 16);
            // a ends right after its last row's values, as a sequence's Q does at the end of `qkv`.
            let a: Vec<f32> = (0..(a_rows - 1) * a_stride + inner)
                .map(|i| value(i, 0.37))
                .collect();
            let b: Vec<f32> = (0..inner * b_stride).map(|i| value(i, 0.11)).collect();
            let m = Product {
                a: &a,
                a_stride,
                a_rows,
                b: &b,
                b_stride,
                inner,
                cols,
            };
            let mut portable = vec![0.0; rows * c_stride];
            product_tiles::<crate::simd::Fused>(&m, &mut portable, c_stride);
            let mut fast = portable.clone();
            #[cfg(target_arch = "x86_64")]
            if crate::SimdLevel::supported() == crate::SimdLevel::Avx512 {
                fast.fill(0.0);
                // SAFETY: the CPU has AVX-512 (checked just above).
                unsafe { avx512::product(&m, &mut fast, c_stride) };
            }
            for r in 0..a_rows {
                for col in 0..cols {
                    let want: f32 = (0..inner)
                        .map(|t| a[r * a_stride + t] * b[t * b_stride + col])
                        .sum();
                    for (body, got) in [("portable", &portable), ("avx512", &fast)] {
                        let got = got[r * c_stride + col];
                        assert!(
                            (got - want).abs() < 1e-4,
                            "{body} {rows}x{inner}x{cols} [{r}][{col}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
