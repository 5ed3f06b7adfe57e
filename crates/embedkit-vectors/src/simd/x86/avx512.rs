//! The AVX-512 (F + BW, VPOPCNTDQ when present) level: distances, R × Q tiles of dot products and Hamming
//! distances, and row scans.

// The tile kernels index `acc[k][j]` by row and query on purpose: the loops have constant bounds and unroll
// into straight register code, which iterator chains over two arrays would only obscure.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

/// Mask of the low `n` lanes (n < 16).
fn mask16(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// Mask of the lanes still to process when `rem` elements remain: all 16, or the low `rem`.
fn lanes16(rem: usize) -> __mmask16 {
    if rem >= 16 { 0xffff } else { mask16(rem) }
}

/// `Σ a·b` with four independent accumulators: one dependent chain of FMAs would take 4 cycles each (the
/// FMA latency), which made a 384-dim row cost ~96 cycles, slower than memory delivers it.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 64 <= n, so the 16 floats at i + 16l are inside both slices.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_ps(pa.add(i + 16 * l)),
                    _mm512_loadu_ps(pb.add(i + 16 * l)),
                )
            };
            *acc = _mm512_fmadd_ps(x, y, *acc);
        }
        i += 64;
    }
    let mut l = 0;
    while i < n {
        let m = lanes16(n - i);
        // SAFETY: the mask enables only lanes below n; masked-off lanes are not read.
        let (x, y) = unsafe {
            (
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
            )
        };
        acc[l] = _mm512_fmadd_ps(x, y, acc[l]);
        l = (l + 1) % 4;
        i += 16;
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s)
}

/// `Σ (a-b)²` over the common length.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn l2_squared_avx512(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 2];
    let mut i = 0;
    while i + 32 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 32 <= n.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_ps(pa.add(i + 16 * l)),
                    _mm512_loadu_ps(pb.add(i + 16 * l)),
                )
            };
            let d = _mm512_sub_ps(x, y);
            *acc = _mm512_fmadd_ps(d, d, *acc);
        }
        i += 32;
    }
    while i < n {
        let m = lanes16(n - i);
        // SAFETY: masked-off lanes are not read (AVX-512 masked loads suppress faults); the lanes read are < n.
        let (x, y) = unsafe {
            (
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
            )
        };
        let d = _mm512_sub_ps(x, y);
        acc[0] = _mm512_fmadd_ps(d, d, acc[0]);
        i += 16;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
}

/// `Σ |a-b|` over the common length.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn l1_avx512(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 2];
    let mut i = 0;
    while i + 32 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 32 <= n.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_ps(pa.add(i + 16 * l)),
                    _mm512_loadu_ps(pb.add(i + 16 * l)),
                )
            };
            *acc = _mm512_add_ps(*acc, _mm512_abs_ps(_mm512_sub_ps(x, y)));
        }
        i += 32;
    }
    while i < n {
        let m = lanes16(n - i);
        // SAFETY: masked loads read only lanes < n and suppress faults on the rest.
        let (x, y) = unsafe {
            (
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
            )
        };
        acc[0] = _mm512_add_ps(acc[0], _mm512_abs_ps(_mm512_sub_ps(x, y)));
        i += 16;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1]))
}

/// `Σ a·b` with `b` in i8, with four independent accumulators (see [`dot_avx512`]).
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn dot_f32_i8_avx512(a: &[f32], b: &[i8]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 64 <= n, so 16 floats and 16 bytes at i + 16l are inside the slices.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_ps(pa.add(i + 16 * l)),
                    _mm_loadu_si128(pb.add(i + 16 * l).cast()),
                )
            };
            let y = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(y));
            *acc = _mm512_fmadd_ps(x, y, *acc);
        }
        i += 64;
    }
    let mut l = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        let (x, y) = unsafe {
            (
                _mm512_loadu_ps(pa.add(i)),
                _mm_loadu_si128(pb.add(i).cast()),
            )
        };
        acc[l] = _mm512_fmadd_ps(x, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(y)), acc[l]);
        l = (l + 1) % 4;
        i += 16;
    }
    let v = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    let mut s = _mm512_reduce_add_ps(v);
    for j in i..n {
        s += a[j] * f32::from(b[j]);
    }
    s
}

/// `Σ a·b` in i32 for i8 inputs.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn dot_i8_avx512(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = _mm512_setzero_si512();
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: i + 32 <= n; 32 bytes from each slice.
        let (x, y) = unsafe {
            (
                _mm256_loadu_si256(pa.add(i).cast()),
                _mm256_loadu_si256(pb.add(i).cast()),
            )
        };
        let p = _mm512_madd_epi16(_mm512_cvtepi8_epi16(x), _mm512_cvtepi8_epi16(y));
        acc = _mm512_add_epi32(acc, p);
        i += 32;
    }
    let mut s = _mm512_reduce_add_epi32(acc);
    for j in i..n {
        s = s.wrapping_add(i32::from(a[j]) * i32::from(b[j]));
    }
    s
}

/// An `R × Q` tile of f32 dot products (layout as [`dot_block_avx2`]); the dimension tail uses masked loads.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn dot_block_avx512<const R: usize, const Q: usize>(
    q: &[f32],
    r: &[f32],
    d: usize,
    out: &mut [f32],
    stride: usize,
) {
    assert!(q.len() >= Q * d && r.len() >= R * d, "tile out of bounds");
    let (pq, pr) = (q.as_ptr(), r.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); Q]; R];
    let mut i = 0;
    while i + 16 <= d {
        let mut rv = [_mm512_setzero_ps(); R];
        for (k, v) in rv.iter_mut().enumerate() {
            // SAFETY: k < R and i + 16 <= d, so [k*d + i, k*d + i + 16) lies in r (len >= R*d).
            *v = unsafe { _mm512_loadu_ps(pr.add(k * d + i)) };
        }
        for j in 0..Q {
            // SAFETY: j < Q and i + 16 <= d, so the 16 floats lie in q (len >= Q*d).
            let qv = unsafe { _mm512_loadu_ps(pq.add(j * d + i)) };
            for k in 0..R {
                acc[k][j] = _mm512_fmadd_ps(rv[k], qv, acc[k][j]);
            }
        }
        i += 16;
    }
    if i < d {
        let m = mask16(d - i);
        let mut rv = [_mm512_setzero_ps(); R];
        for (k, v) in rv.iter_mut().enumerate() {
            // SAFETY: the mask enables lanes i..d of row k only, all inside r; masked-off lanes are not read.
            *v = unsafe { _mm512_maskz_loadu_ps(m, pr.add(k * d + i)) };
        }
        for j in 0..Q {
            // SAFETY: as above, lanes i..d of query j.
            let qv = unsafe { _mm512_maskz_loadu_ps(m, pq.add(j * d + i)) };
            for k in 0..R {
                acc[k][j] = _mm512_fmadd_ps(rv[k], qv, acc[k][j]);
            }
        }
    }
    if R == 4 && Q == 4 {
        store_tile_4x4(&acc, out, stride);
        return;
    }
    for k in 0..R {
        for j in 0..Q {
            out[j * stride + k] = _mm512_reduce_add_ps(acc[k][j]);
        }
    }
}

/// Writes the sums of a 4 rows × 4 queries tile of accumulators: `out[j * stride + k] = Σ acc[k][j]`.
#[target_feature(enable = "avx512f")]
fn store_tile_4x4<const R: usize, const Q: usize>(
    acc: &[[__m512; Q]; R],
    out: &mut [f32],
    stride: usize,
) {
    let mut v = [_mm512_setzero_ps(); 16];
    for j in 0..Q.min(4) {
        for k in 0..R.min(4) {
            v[4 * j + k] = acc[k][j];
        }
    }
    let sums = hsum16_ps(v);
    for j in 0..4 {
        out[j * stride..j * stride + 4].copy_from_slice(&sums[4 * j..4 * j + 4]);
    }
}

/// The 16 horizontal sums of 16 vectors, in order: a transpose-add tree of 45 operations instead of 16
/// separate reductions of ~8 dependent operations each (which cost a quarter of a 4 × 4 tile's time).
#[target_feature(enable = "avx512f")]
fn hsum16_ps(v: [__m512; 16]) -> [f32; 16] {
    // Pairs: per 128-bit lane [a0+a2, b0+b2, a1+a3, b1+b3].
    let pair = |a, b| _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    let t: [__m512; 8] = std::array::from_fn(|i| pair(v[2 * i], v[2 * i + 1]));
    // Quads: per 128-bit lane the partial sums of 4 vectors, [v4m, v4m+1, v4m+2, v4m+3].
    let quad = |a, b| {
        _mm512_add_ps(
            _mm512_shuffle_ps::<0b01_00_01_00>(a, b),
            _mm512_shuffle_ps::<0b11_10_11_10>(a, b),
        )
    };
    let x: [__m512; 4] = std::array::from_fn(|m| quad(t[2 * m], t[2 * m + 1]));
    // Adds 128-bit lanes (0,1) and (2,3) of a, then of b.
    let fold = |a, b| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b),
        )
    };
    let z = fold(fold(x[0], x[1]), fold(x[2], x[3]));
    let mut out = [0.0f32; 16];
    // SAFETY: `out` is 64 writable bytes; the store is unaligned.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), z) };
    out
}

/// An `R × Q` tile of dot products of f32 queries with i8 rows (layout as [`dot_block_avx2`]).
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn dot_f32_i8_block_avx512<const R: usize, const Q: usize>(
    q: &[f32],
    r: &[i8],
    d: usize,
    out: &mut [f32],
    stride: usize,
) {
    assert!(q.len() >= Q * d && r.len() >= R * d, "tile out of bounds");
    let (pq, pr) = (q.as_ptr(), r.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); Q]; R];
    let mut i = 0;
    while i + 16 <= d {
        let mut rv = [_mm512_setzero_ps(); R];
        for (k, v) in rv.iter_mut().enumerate() {
            // SAFETY: k < R and i + 16 <= d, so the 16 bytes at k*d + i lie in r.
            let b = unsafe { _mm_loadu_si128(pr.add(k * d + i).cast()) };
            *v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
        }
        for j in 0..Q {
            // SAFETY: j < Q and i + 16 <= d.
            let qv = unsafe { _mm512_loadu_ps(pq.add(j * d + i)) };
            for k in 0..R {
                acc[k][j] = _mm512_fmadd_ps(rv[k], qv, acc[k][j]);
            }
        }
        i += 16;
    }
    if R == 4 && Q == 4 && i == d {
        store_tile_4x4(&acc, out, stride);
        return;
    }
    for k in 0..R {
        for j in 0..Q {
            let mut s = _mm512_reduce_add_ps(acc[k][j]);
            for t in i..d {
                s += f32::from(r[k * d + t]) * q[j * d + t];
            }
            out[j * stride + k] = s;
        }
    }
}

/// An `R × Q` tile of Hamming distances between packed bit rows of `nb` bytes, with VPOPCNTDQ.
#[target_feature(enable = "avx512f,avx512bw,avx512vpopcntdq")]
pub(crate) fn hamming_block_avx512<const R: usize, const Q: usize>(
    q: &[u8],
    r: &[u8],
    nb: usize,
    out: &mut [u32],
    stride: usize,
) {
    assert!(q.len() >= Q * nb && r.len() >= R * nb, "tile out of bounds");
    let (pq, pr) = (q.as_ptr(), r.as_ptr());
    let mut acc = [[_mm512_setzero_si512(); Q]; R];
    let mut i = 0;
    while i < nb {
        let rem = nb - i;
        // Full 64-byte chunks use all lanes; the last partial chunk enables only its bytes.
        let m: __mmask64 = if rem >= 64 {
            u64::MAX
        } else {
            (1u64 << rem) - 1
        };
        let mut rv = [_mm512_setzero_si512(); R];
        for (k, v) in rv.iter_mut().enumerate() {
            // SAFETY: the mask enables bytes i..min(i+64, nb) of row k only, all inside r (len >= R*nb);
            // masked-off bytes are not read.
            *v = unsafe { _mm512_maskz_loadu_epi8(m, pr.add(k * nb + i).cast()) };
        }
        for j in 0..Q {
            // SAFETY: as above, bytes of query j inside q (len >= Q*nb).
            let qv = unsafe { _mm512_maskz_loadu_epi8(m, pq.add(j * nb + i).cast()) };
            for k in 0..R {
                let x = _mm512_xor_si512(rv[k], qv);
                acc[k][j] = _mm512_add_epi64(acc[k][j], _mm512_popcnt_epi64(x));
            }
        }
        i += 64;
    }
    if R == 4 && Q.is_multiple_of(2) {
        // Reduce 8 accumulators at a time (rows 0..4 of queries j and j+1) with one transpose-add tree.
        for j in (0..Q).step_by(2) {
            let sums = hsum8_epi64([
                acc[0][j],
                acc[1][j],
                acc[2][j],
                acc[3][j],
                acc[0][j + 1],
                acc[1][j + 1],
                acc[2][j + 1],
                acc[3][j + 1],
            ]);
            out[j * stride..j * stride + 4].copy_from_slice(&sums[..4]);
            out[(j + 1) * stride..(j + 1) * stride + 4].copy_from_slice(&sums[4..]);
        }
        return;
    }
    for k in 0..R {
        for j in 0..Q {
            out[j * stride + k] = _mm512_reduce_add_epi64(acc[k][j]) as u32;
        }
    }
}

/// The 8 horizontal sums of 8 vectors of u64 lanes, in order, as u32: a transpose-add tree of 22 operations
/// instead of 8 separate reductions of ~6 dependent operations each.
#[target_feature(enable = "avx512f")]
fn hsum8_epi64(v: [__m512i; 8]) -> [u32; 8] {
    // Pairs: 128-bit lane k of t_i holds [v_2i[2k] + v_2i[2k+1], v_2i+1[2k] + v_2i+1[2k+1]].
    let pair = |a, b| _mm512_add_epi64(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
    let t = [
        pair(v[0], v[1]),
        pair(v[2], v[3]),
        pair(v[4], v[5]),
        pair(v[6], v[7]),
    ];
    // Adds 128-bit lanes (0,1) and (2,3) of a, then of b: [a.L0+a.L1, a.L2+a.L3, b.L0+b.L1, b.L2+b.L3].
    let fold = |a, b| {
        _mm512_add_epi64(
            _mm512_shuffle_i64x2::<0b10_00_10_00>(a, b),
            _mm512_shuffle_i64x2::<0b11_01_11_01>(a, b),
        )
    };
    let u = [fold(t[0], t[1]), fold(t[2], t[3])];
    // Lane k now holds the full sums of v_2k and v_2k+1.
    let w = fold(u[0], u[1]);
    let mut out = [0u32; 8];
    // SAFETY: `out` is 32 writable bytes; the store is unaligned.
    unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), _mm512_cvtepi64_epi32(w)) };
    out
}

// One query, many rows
// With one or two queries a scan is memory-bound: these walk the rows strictly in order (which the hardware
// prefetcher streams best) inside one target-feature function, so the per-row work is the inlined 1 × 1 tile
// and no call or dispatch.

/// `out[i] = q · rows[i]` for consecutive `d`-wide rows.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn dot_rows_avx512(q: &[f32], rows: &[f32], d: usize, out: &mut [f32]) {
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(d)) {
        *o = dot_avx512(&q[..d], r);
    }
}

/// `out[i] = q · rows[i]` for i8 rows.
#[target_feature(enable = "avx512f,avx512bw")]
pub(crate) fn dot_f32_i8_rows_avx512(q: &[f32], rows: &[i8], d: usize, out: &mut [f32]) {
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(d)) {
        *o = dot_f32_i8_avx512(&q[..d], r);
    }
}

/// `out[i] = hamming(q, rows[i])` with VPOPCNTDQ.
#[target_feature(enable = "avx512f,avx512bw,avx512vpopcntdq")]
pub(crate) fn hamming_rows_avx512(q: &[u8], rows: &[u8], nb: usize, out: &mut [u32]) {
    if nb == 0 || nb > 64 || q.len() < nb {
        for (o, r) in out.iter_mut().zip(rows.chunks_exact(nb.max(1))) {
            hamming_block_avx512::<1, 1>(q, r, nb, std::slice::from_mut(o), 1);
        }
        return;
    }
    // Rows of up to 512 bits (the usual case) fit one register: load the query and the mask once.
    let m: __mmask64 = if nb == 64 { u64::MAX } else { (1u64 << nb) - 1 };
    // SAFETY: the mask enables bytes 0..nb, and q has at least nb bytes (checked above).
    let qv = unsafe { _mm512_maskz_loadu_epi8(m, q.as_ptr().cast()) };
    for (o, r) in out.iter_mut().zip(rows.chunks_exact(nb)) {
        // SAFETY: `r` has exactly nb bytes and the mask enables bytes 0..nb only.
        let rv = unsafe { _mm512_maskz_loadu_epi8(m, r.as_ptr().cast()) };
        *o = _mm512_reduce_add_epi64(_mm512_popcnt_epi64(_mm512_xor_si512(rv, qv))) as u32;
    }
}
