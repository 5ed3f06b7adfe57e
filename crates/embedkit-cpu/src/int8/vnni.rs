//! The x86-64 integer kernels: AVX-512 VNNI `vpdpbusd` register tiles, and AMX `tdpbusd` tiles.

use super::{BLOCK, OutPtr, QuantScratch, QuantizedLinear};
use crate::panel::avx512::tile_rows;
use std::arch::x86_64::*;

/// Rows per register tile: 8 rows × 2 blocks = 16 accumulators, plus 2 weight registers and a broadcast
/// (measured against 4 and 6 rows with the `int8_gemm_timing` test: 4–13% faster).
const ROWS: usize = 8;

/// Computes output columns of blocks `first..first+count` (count ≤ 2) for the rows in `row_range`.
///
/// # Safety
/// The CPU must support avx512f, avx512bw and avx512vnni; `out` must point to an `m × l.n` buffer with
/// `row_range.end ≤ m`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn block_pair(
    l: &QuantizedLinear,
    a: &QuantScratch,
    row_range: std::ops::Range<usize>,
    first: usize,
    count: usize,
    out: OutPtr,
) {
    let k4 = l.k_pad / 4;
    let w0 = l.packed[first * k4 * BLOCK * 4..].as_ptr();
    let w1 = if count > 1 {
        l.packed[(first + 1) * k4 * BLOCK * 4..].as_ptr()
    } else {
        w0
    };
    let (mut r, m) = (row_range.start, row_range.end);
    while r < m {
        let rows = (m - r).min(ROWS);
        let mut acc = [[_mm512_setzero_si512(); 2]; ROWS];
        let row_ptr: [*const u8; ROWS] = tile_rows(&a.bytes, r, rows, l.k_pad);
        for kk in 0..k4 {
            // SAFETY: kk < k4, so 64 bytes at kk·64 lie inside each block's k4·64 packed bytes, and 4 bytes
            // at kk·4 inside each row's k_pad bytes.
            unsafe {
                let b0 = _mm512_loadu_si512(w0.add(kk * 64) as *const _);
                let b1 = _mm512_loadu_si512(w1.add(kk * 64) as *const _);
                for i in 0..ROWS {
                    let av =
                        _mm512_set1_epi32((row_ptr[i].add(kk * 4) as *const i32).read_unaligned());
                    acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], av, b0);
                    acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], av, b1);
                }
            }
        }
        for (j, block) in (first..first + count).enumerate() {
            // SAFETY: rows r .. r + rows < m; the caller's promises on `out`.
            unsafe { store_block(l, a, r, rows, block, |i| acc[i][j], out) };
        }
        r += rows;
    }
}

/// Dequantizes the i32 sums of rows `r .. r + rows` and the columns of `block` (`acc(i)` holds row
/// `r + i`'s 16 sums) and stores them, masked to `n` columns. The same operations in the same order as
/// [`super::finish`], so every kernel agrees bit for bit.
///
/// # Safety
/// AVX-512F; rows `r .. r + rows` < m of the `m × l.n` output, whose columns of `block` this task owns.
#[inline(always)]
unsafe fn store_block(
    l: &QuantizedLinear,
    a: &QuantScratch,
    r: usize,
    rows: usize,
    block: usize,
    acc: impl Fn(usize) -> __m512i,
    out: OutPtr,
) {
    let col0 = block * BLOCK;
    let valid = (l.n - col0).min(BLOCK);
    let mask: __mmask16 = if valid == BLOCK {
        0xffff
    } else {
        (1u16 << valid) - 1
    };
    // SAFETY: masked loads/stores touch only columns col0..col0+valid < n of rows r+i < m.
    unsafe {
        let sums = _mm512_maskz_loadu_ps(mask, l.weight_sums.as_ptr().add(col0));
        let wscale = _mm512_maskz_loadu_ps(mask, l.scale.as_ptr().add(col0));
        let bias = _mm512_maskz_loadu_ps(mask, l.bias.as_ptr().add(col0));
        for i in 0..rows {
            let v = _mm512_cvtepi32_ps(acc(i));
            let offset = _mm512_mul_ps(_mm512_set1_ps(a.min[r + i]), sums);
            let t = _mm512_fmadd_ps(v, _mm512_set1_ps(a.scale[r + i]), offset);
            let y = _mm512_fmadd_ps(t, wscale, bias);
            _mm512_mask_storeu_ps(out.get().add((r + i) * l.n + col0), mask, y);
        }
    }
}

/// Output columns of blocks `first..first+count` (count ≤ 2) for the rows in `rows`, on AMX tiles: the
/// packed blocks are the tiles' B operand as they are (`[k/4][16][4]`, 64-byte rows).
///
/// # Safety
/// AMX is available (and with it AVX-512F, BW and VNNI); `k_pad` is a multiple of 64; `a` holds whole
/// 32-row blocks of codes covering `rows`; `out` points to an `m × l.n` buffer with `rows.end ≤ m`, of
/// which this task alone writes these rows and columns.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn amx_block_pair(
    l: &QuantizedLinear,
    a: &QuantScratch,
    rows: std::ops::Range<usize>,
    first: usize,
    count: usize,
    out: OutPtr,
) {
    use crate::amx::{BLOCK as TILE_BLOCK, Dot, STEP_BYTES, Tiles};
    let k4 = l.k_pad / 4;
    let w0 = l.packed[first * k4 * BLOCK * 4..].as_ptr() as *const u8;
    // A lone last block stands in for the missing second one; its columns are not stored.
    let w1 = if count > 1 {
        l.packed[(first + 1) * k4 * BLOCK * 4..].as_ptr() as *const u8
    } else {
        w0
    };
    let mut acc = [0u32; TILE_BLOCK * TILE_BLOCK];
    // SAFETY: AMX is available (the caller's promise).
    let tiles = unsafe { Tiles::load() };
    for r0 in rows.clone().step_by(TILE_BLOCK) {
        // SAFETY: rows r0 .. r0 + 32 of the codes exist (whole blocks), k_pad bytes each; each block
        // holds k4 rows of 64 bytes = 16 · (k_pad / 64) tile rows.
        unsafe {
            tiles.block(
                Dot::U8I8,
                a.bytes.as_ptr().add(r0 * l.k_pad),
                l.k_pad,
                w0,
                w1,
                BLOCK * 4,
                16 * BLOCK * 4,
                l.k_pad / STEP_BYTES,
                &mut acc,
            );
        }
        let here = (rows.end - r0).min(TILE_BLOCK);
        for j in 0..count {
            let sums = |i: usize| {
                // SAFETY: i < 32 rows of 32 values; columns j·16 .. j·16 + 16.
                unsafe {
                    _mm512_loadu_si512(acc.as_ptr().add(i * TILE_BLOCK + j * BLOCK) as *const _)
                }
            };
            // SAFETY: rows r0 .. r0 + here < m; the caller's promises on `out`.
            unsafe { store_block(l, a, r0, here, first + j, sums, out) };
        }
    }
    drop(tiles);
}
