//! The AVX2 + FMA (+ POPCNT) level: distances, R × Q tiles of dot products, and row scans.

// The tile kernels index `acc[k][j]` by row and query on purpose: the loops have constant bounds and unroll
// into straight register code, which iterator chains over two arrays would only obscure.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

/// Horizontal sum of 8 floats.
#[target_feature(enable = "avx2,fma")]
fn hsum256(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let sh = _mm_movehdup_ps(s);
    let s2 = _mm_add_ps(s, sh);
    let sh2 = _mm_movehl_ps(sh, s2);
    _mm_cvtss_f32(_mm_add_ss(s2, sh2))
}

/// Horizontal sum of 8 i32, wrapping like the scalar reference.
#[target_feature(enable = "avx2,fma")]
fn hsum256_epi32(v: __m256i) -> i32 {
    let lo = _mm256_castsi256_si128(v);
    let hi = _mm256_extracti128_si256::<1>(v);
    let s = _mm_add_epi32(lo, hi);
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// `Σ a·b` over the common length.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 32 <= n, so [i + 8l, i + 8l + 8) is inside both slices.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + 8 * l)),
                    _mm256_loadu_ps(pb.add(i + 8 * l)),
                )
            };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum256(v);
    for j in i..n {
        s += a[j] * b[j];
    }
    s
}

/// `Σ (a-b)²` over the common length.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn l2_squared_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16 <= n.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + 8 * l)),
                    _mm256_loadu_ps(pb.add(i + 8 * l)),
                )
            };
            let d = _mm256_sub_ps(x, y);
            *acc = _mm256_fmadd_ps(d, d, *acc);
        }
        i += 16;
    }
    let mut s = hsum256(_mm256_add_ps(acc[0], acc[1]));
    for j in i..n {
        s += (a[j] - b[j]) * (a[j] - b[j]);
    }
    s
}

/// `Σ |a-b|` over the common length.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn l1_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // Clearing the sign bit is |x|.
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16 <= n.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + 8 * l)),
                    _mm256_loadu_ps(pb.add(i + 8 * l)),
                )
            };
            *acc = _mm256_add_ps(*acc, _mm256_and_ps(_mm256_sub_ps(x, y), abs_mask));
        }
        i += 16;
    }
    let mut s = hsum256(_mm256_add_ps(acc[0], acc[1]));
    for j in i..n {
        s += (a[j] - b[j]).abs();
    }
    s
}

/// Eight i8 at `p` widened to f32.
///
/// # Safety
/// `p..p+8` must be readable.
#[target_feature(enable = "avx2,fma")]
unsafe fn load_i8x8_ps(p: *const i8) -> __m256 {
    // SAFETY: the caller guarantees 8 readable bytes; _mm_loadl_epi64 reads exactly 8 and has no alignment need.
    let v = unsafe { _mm_loadl_epi64(p.cast()) };
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// `Σ a·b` with `b` in i8.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn dot_f32_i8_avx2(a: &[f32], b: &[i8]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 2];
    let mut i = 0;
    while i + 16 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16 <= n, so 8 floats and 8 bytes at i + 8l are in bounds.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + 8 * l)),
                    load_i8x8_ps(pb.add(i + 8 * l)),
                )
            };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 16;
    }
    let mut s = hsum256(_mm256_add_ps(acc[0], acc[1]));
    for j in i..n {
        s += a[j] * f32::from(b[j]);
    }
    s
}

/// `Σ a·b` in i32 for i8 inputs.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = _mm256_setzero_si256();
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n; 16 bytes from each slice.
        let (x, y) = unsafe {
            (
                _mm_loadu_si128(pa.add(i).cast()),
                _mm_loadu_si128(pb.add(i).cast()),
            )
        };
        // Widen to i16, multiply pairs and add adjacent products into i32 lanes (never overflows: 2·128²).
        let p = _mm256_madd_epi16(_mm256_cvtepi8_epi16(x), _mm256_cvtepi8_epi16(y));
        acc = _mm256_add_epi32(acc, p);
        i += 16;
    }
    let mut s = hsum256_epi32(acc);
    for j in i..n {
        s = s.wrapping_add(i32::from(a[j]) * i32::from(b[j]));
    }
    s
}

/// Hamming distance with the POPCNT instruction on 64-bit words: the portable body
/// ([`scalar::hamming`](super::super::scalar::hamming)), compiled here with POPCNT enabled.
#[target_feature(enable = "popcnt")]
pub(crate) fn hamming_popcnt(a: &[u8], b: &[u8]) -> u32 {
    super::super::scalar::hamming(a, b)
}

#[target_feature(enable = "avx2,fma")]
pub(crate) fn dot_block_avx2<const R: usize, const Q: usize>(
    q: &[f32],
    r: &[f32],
    d: usize,
    out: &mut [f32],
    stride: usize,
) {
    assert!(q.len() >= Q * d && r.len() >= R * d, "tile out of bounds");
    let (pq, pr) = (q.as_ptr(), r.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); Q]; R];
    let mut i = 0;
    while i + 8 <= d {
        let mut rv = [_mm256_setzero_ps(); R];
        for (k, v) in rv.iter_mut().enumerate() {
            // SAFETY: k < R and i + 8 <= d, so [k*d + i, k*d + i + 8) lies in r (len >= R*d).
            *v = unsafe { _mm256_loadu_ps(pr.add(k * d + i)) };
        }
        for j in 0..Q {
            // SAFETY: j < Q and i + 8 <= d, so the 8 floats lie in q (len >= Q*d).
            let qv = unsafe { _mm256_loadu_ps(pq.add(j * d + i)) };
            for k in 0..R {
                acc[k][j] = _mm256_fmadd_ps(rv[k], qv, acc[k][j]);
            }
        }
        i += 8;
    }
    for k in 0..R {
        for j in 0..Q {
            let mut s = hsum256(acc[k][j]);
            for t in i..d {
                s += r[k * d + t] * q[j * d + t];
            }
            out[j * stride + k] = s;
        }
    }
}

/// An `R × Q` tile of dot products of f32 queries with i8 rows (see [`dot_block_avx2`]).
#[target_feature(enable = "avx2,fma")]
pub(crate) fn dot_f32_i8_block_avx2<const R: usize, const Q: usize>(
    q: &[f32],
    r: &[i8],
    d: usize,
    out: &mut [f32],
    stride: usize,
) {
    assert!(q.len() >= Q * d && r.len() >= R * d, "tile out of bounds");
    let (pq, pr) = (q.as_ptr(), r.as_ptr());
    let mut acc = [[_mm256_setzero_ps(); Q]; R];
    let mut i = 0;
    while i + 8 <= d {
        let mut rv = [_mm256_setzero_ps(); R];
        for (k, v) in rv.iter_mut().enumerate() {
            // SAFETY: k < R and i + 8 <= d, so the 8 bytes at k*d + i lie in r.
            *v = unsafe { load_i8x8_ps(pr.add(k * d + i)) };
        }
        for j in 0..Q {
            // SAFETY: j < Q and i + 8 <= d.
            let qv = unsafe { _mm256_loadu_ps(pq.add(j * d + i)) };
            for k in 0..R {
                acc[k][j] = _mm256_fmadd_ps(rv[k], qv, acc[k][j]);
            }
        }
        i += 8;
    }
    for k in 0..R {
        for j in 0..Q {
            let mut s = hsum256(acc[k][j]);
            for t in i..d {
                s += f32::from(r[k * d + t]) * q[j * d + t];
            }
            out[j * stride + k] = s;
        }
    }
}

// One query, many rows
// With one or two queries a scan is memory-bound: these walk the rows strictly in order (which the hardware
// prefetcher streams best) inside one target-feature function, so the per-row work is the inlined 1 × 1 tile
// and no call or dispatch.

/// `out[i] = q · rows[i]` for consecutive `d`-wide rows.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn dot_rows_avx2(q: &[f32], rows: &[f32], d: usize, out: &mut [f32]) {
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(d)) {
        *o = dot_avx2(&q[..d], r);
    }
}

/// `out[i] = q · rows[i]` for i8 rows.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn dot_f32_i8_rows_avx2(q: &[f32], rows: &[i8], d: usize, out: &mut [f32]) {
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(d)) {
        *o = dot_f32_i8_avx2(&q[..d], r);
    }
}

/// `out[i] = hamming(q, rows[i])` with POPCNT.
#[target_feature(enable = "popcnt")]
pub(crate) fn hamming_rows_popcnt(q: &[u8], rows: &[u8], nb: usize, out: &mut [u32]) {
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(nb)) {
        *o = hamming_popcnt(q, r);
    }
}
