//! Linear layers with bf16 weights and bf16 activations, multiplied by AVX512_BF16's `vdpbf16ps` into f32
//! accumulators (`--compute bf16`). Half the weight memory of f32 and, per instruction, twice the
//! multiply-adds of an f32 FMA; everything outside the linear layers (attention, LayerNorm, softmax, GELU)
//! stays f32.
//!
//! Layout: as the f32 panel kernel ([`crate::panel`]), `Wᵀ` in panels of 64 columns, but the unit along `k`
//! is a pair of bf16 values in one 32-bit word (low half the even `k`, high half the odd one), which is what
//! `vdpbf16ps` multiplies: lane `c` gains `x[2j]·W[c][2j] + x[2j+1]·W[c][2j+1]`. One panel is one
//! `[k/2][64]` block of words, streamed front to back by a task; a row's activations are converted to such
//! pairs once per call, and each pair is broadcast to all lanes. This one layout serves every batch size (no
//! second copy for `gemm`).
//!
//! The intrinsics (`_mm512_dpbf16_ps`, `__m512bh`) are stable since Rust 1.89, with the AVX-512 target
//! features.

use crate::kernels::OutPtr;
use rayon::prelude::*;

/// Columns per panel: four 16-lane registers.
const PANEL: usize = 64;
/// Rows of activations per task.
const ROW_BLOCK: usize = 64;

/// Whether this CPU can run the bf16 kernels (AVX-512F and BW with AVX512_BF16).
pub(crate) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// f32 → bf16 with round-to-nearest-even (what `vcvtneps2bf16` does for every finite value), as the high 16
/// bits.
#[inline(always)]
fn to_bf16(v: f32) -> u32 {
    let bits = v.to_bits();
    (bits + 0x7fff + ((bits >> 16) & 1)) >> 16
}

/// Two values as one word of a bf16 pair: `lo` in the low half.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    to_bf16(lo) | (to_bf16(hi) << 16)
}

/// `y = x·Wᵀ + b` with `Wᵀ` in bf16 pair panels.
pub(crate) struct Bf16Linear {
    n: usize,
    k: usize,
    /// `k` rounded up to pairs.
    k2: usize,
    panels: Vec<u32>,
    bias: Vec<f32>,
}

impl Bf16Linear {
    /// Converts and packs `weight` (`[n × k]`, PyTorch layout); an odd `k` is padded with a zero column.
    pub(crate) fn new(weight: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Self {
        let k2 = k.div_ceil(2);
        let count = n.div_ceil(PANEL);
        let mut panels = vec![0u32; count * k2 * PANEL];
        for row in 0..n {
            let (p, c) = (row / PANEL, row % PANEL);
            let w = &weight[row * k..(row + 1) * k];
            for j in 0..k2 {
                let hi = w.get(2 * j + 1).copied().unwrap_or(0.0);
                panels[(p * k2 + j) * PANEL + c] = pair(w[2 * j], hi);
            }
        }
        Self {
            n,
            k,
            k2,
            panels,
            bias: bias.map_or_else(|| vec![0.0; n], <[f32]>::to_vec),
        }
    }

    /// Bytes of the packed weights.
    #[cfg(test)]
    pub(crate) fn weight_bytes(&self) -> usize {
        self.panels.len() * 4
    }

    /// `y[m × n] = x[m × k]·Wᵀ + b`; panels × blocks of 64 rows in parallel.
    ///
    /// # Panics
    /// When the CPU lacks AVX512_BF16: the backend refuses `Compute::Bf16` there at load, so this is a bug.
    pub(crate) fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) {
        debug_assert_eq!(x.len(), m * self.k);
        debug_assert_eq!(y.len(), m * self.n);
        assert!(
            supported(),
            "bf16 linear layer on a CPU without AVX512_BF16"
        );
        #[cfg(target_arch = "x86_64")]
        if self.amx_fits() {
            self.forward_amx(x, m, y);
        } else {
            self.forward_avx512(x, m, y);
        }
    }

    /// Whether the AMX kernel serves this layer: the CPU has AMX and `k` fills whole tile steps.
    #[cfg(target_arch = "x86_64")]
    fn amx_fits(&self) -> bool {
        crate::amx::available() && self.k2.is_multiple_of(16)
    }

    /// The rows of `x` (`k` values each) as `rows` rows of `k2` bf16 pairs, in parallel; rows past `x`'s
    /// are zero.
    #[cfg(target_arch = "x86_64")]
    fn convert(&self, x: &[f32], rows: usize) -> Vec<u32> {
        let (k, k2) = (self.k, self.k2);
        let mut xb = vec![0u32; rows * k2];
        xb.par_chunks_mut(ROW_BLOCK * k2)
            .zip(x.par_chunks(ROW_BLOCK * k))
            .for_each(|(dst, src)| {
                // SAFETY: `forward` asserted AVX512_BF16 (with AVX-512F). `convert_rows` stops at the
                // shorter of the two, so padding rows stay zero.
                unsafe { avx512::convert_rows(src, k, dst, k2) }
            });
        xb
    }

    /// [`Bf16Linear::forward`] with `vdpbf16ps` (AVX512_BF16).
    #[cfg(target_arch = "x86_64")]
    fn forward_avx512(&self, x: &[f32], m: usize, y: &mut [f32]) {
        let xb = self.convert(x, m);
        let out = OutPtr(y.as_mut_ptr());
        let panels = self.n.div_ceil(PANEL);
        let row_blocks = m.div_ceil(ROW_BLOCK).max(1);
        (0..panels * row_blocks).into_par_iter().for_each(|task| {
            let (p, rb) = (task % panels, task / panels);
            let rows = rb * ROW_BLOCK..((rb + 1) * ROW_BLOCK).min(m);
            // SAFETY: `forward` asserted AVX-512F and AVX512_BF16; `xb` holds m × k2 words;
            // the task writes only rows `rows` × the panel's columns of the m × n output.
            unsafe { avx512::panel_task(self, &xb, p, rows, out) };
        });
    }
}

impl Bf16Linear {
    /// [`Bf16Linear::forward`] on AMX tiles: blocks of 32 rows × 32 columns, `k` in steps of 32 (`k2` must be
    /// a multiple of 16 pairs). The panels serve as the tiles' B operand with a 256-byte row stride.
    #[cfg(target_arch = "x86_64")]
    fn forward_amx(&self, x: &[f32], m: usize, y: &mut [f32]) {
        use crate::amx::BLOCK;
        let n = self.n;
        // Rows up to a whole block, the padding zero, so every tile load stays inside the buffer.
        let xb = self.convert(x, m.div_ceil(BLOCK) * BLOCK);
        let out = OutPtr(y.as_mut_ptr());
        let panels = n.div_ceil(PANEL);
        // A task is up to 128 rows × one panel: a few microseconds of tile work against rayon's overhead.
        let rows_per_task = 4 * BLOCK;
        let row_blocks = m.div_ceil(rows_per_task).max(1);
        (0..panels * row_blocks).into_par_iter().for_each(|task| {
            let (p, rb) = (task % panels, task / panels);
            let rows = rb * rows_per_task..((rb + 1) * rows_per_task).min(m);
            // SAFETY: AMX is available (checked by `amx_fits`), and with it AVX-512F; xb holds whole 32-row
            // blocks; the task writes only rows `rows` × the panel's columns of the m × n output.
            unsafe { avx512::amx_panel_task(self, &xb, p, rows, out) };
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Bf16Linear, PANEL, pair};
    use crate::kernels::OutPtr;
    use crate::panel::avx512::{column_masks, store_tile, tile_rows};
    use std::arch::x86_64::*;

    /// Rows per register tile: 6 × 4 accumulators + 4 weight registers + 1 broadcast ≤ 32 registers.
    const TILE: usize = 6;

    /// Rows of `k` f32 values in `src` to rows of `k2` bf16 pairs in `dst`: 32 values per
    /// `vcvtne2ps2bf16` (round to nearest even, as [`pair`]), the row's tail one pair at a time.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX512_BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn convert_rows(src: &[f32], k: usize, dst: &mut [u32], k2: usize) {
        for (s, d) in src.chunks_exact(k).zip(dst.chunks_exact_mut(k2)) {
            let whole = k / 32;
            for c in 0..whole {
                // SAFETY: values c·32 .. c·32 + 32 < k of the row and words c·16 .. c·16 + 16 < k2.
                unsafe {
                    let lo = _mm512_loadu_ps(s.as_ptr().add(c * 32));
                    let hi = _mm512_loadu_ps(s.as_ptr().add(c * 32 + 16));
                    // The second operand fills the low 16 bf16 values.
                    let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                    _mm512_storeu_si512(d.as_mut_ptr().add(c * 16) as *mut _, v);
                }
            }
            let tail = &s[whole * 32..];
            let mut pairs = tail.chunks_exact(2);
            for (o, p) in d[whole * 16..].iter_mut().zip(&mut pairs) {
                *o = pair(p[0], p[1]);
            }
            if let [last] = pairs.remainder() {
                d[k2 - 1] = pair(*last, 0.0);
            }
        }
    }

    /// Rows `rows` of the output's columns of panel `panel`, on AMX tiles (see [`Bf16Linear::forward_amx`]).
    ///
    /// # Safety
    /// AMX is available (and with it AVX-512F); `xb` holds the converted rows in whole 32-row blocks covering
    /// `rows` (`k2` words each, `k2` a multiple of 16); `out` the `m × n` output, of which this task alone
    /// writes these rows and columns.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn amx_panel_task(
        l: &Bf16Linear,
        xb: &[u32],
        p: usize,
        rows: std::ops::Range<usize>,
        out: OutPtr,
    ) {
        use crate::amx::{BLOCK, Dot, Tiles};
        let (k2, n) = (l.k2, l.n);
        let panel = l.panels[p * k2 * PANEL..(p + 1) * k2 * PANEL].as_ptr() as *const u8;
        let mut acc = [0u32; BLOCK * BLOCK];
        // SAFETY: AMX is available (checked by the caller).
        let tiles = unsafe { Tiles::load() };
        for r0 in rows.clone().step_by(BLOCK) {
            for half in 0..PANEL / BLOCK {
                let col0 = p * PANEL + half * BLOCK;
                if col0 >= n {
                    break;
                }
                // SAFETY: rows r0 .. r0 + 32 ≤ m_pad of xb (k2 words each); the two 16-column tiles of
                // this half lie in the panel's 64-word rows, k2 = 16 · steps of them.
                unsafe {
                    let b0 = panel.add(half * BLOCK * 4);
                    tiles.block(
                        Dot::Bf16,
                        xb.as_ptr().add(r0 * k2) as *const u8,
                        k2 * 4,
                        b0,
                        b0.add(64),
                        PANEL * 4,
                        16 * PANEL * 4,
                        k2 / 16,
                        &mut acc,
                    );
                }
                let cols = (n - col0).min(BLOCK);
                for i in 0..(rows.end - r0).min(BLOCK) {
                    let src = &acc[i * BLOCK..i * BLOCK + cols];
                    let bias = &l.bias[col0..col0 + cols];
                    // SAFETY: row r0 + i < m and columns col0 .. col0 + cols ≤ n are this task's part of
                    // the m × n output.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out.get().add((r0 + i) * n + col0), cols)
                    };
                    for ((d, &v), &b) in dst.iter_mut().zip(src).zip(bias) {
                        *d = f32::from_bits(v) + b;
                    }
                }
            }
        }
        drop(tiles);
    }

    /// Rows `rows` of the output's columns of panel `panel`.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX512_BF16; `xb` must hold the converted rows (`m × k2` words) and
    /// `out` the `m × n` output, of which this task alone writes these rows and columns.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn panel_task(
        l: &Bf16Linear,
        xb: &[u32],
        panel: usize,
        rows: std::ops::Range<usize>,
        out: OutPtr,
    ) {
        let k2 = l.k2;
        let w = l.panels[panel * k2 * PANEL..(panel + 1) * k2 * PANEL].as_ptr();
        let col0 = panel * PANEL;
        let valid = (l.n - col0).min(PANEL);
        let masks = column_masks(valid);
        let mut r = rows.start;
        while r < rows.end {
            let here = (rows.end - r).min(TILE);
            let xr: [*const u32; TILE] = tile_rows(xb, r, here, k2);
            let mut acc = [[_mm512_setzero_ps(); 4]; TILE];
            for j in 0..k2 {
                // SAFETY: the panel holds k2 · PANEL words, so 64 at j · 64 are inside it; each xr row has k2
                // words and j < k2. Words and bf16 pairs have the same size and bits (transmute).
                unsafe {
                    let wj = w.add(j * PANEL) as *const __m512i;
                    let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(wj));
                    let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(wj.add(1)));
                    let w2: __m512bh = std::mem::transmute(_mm512_loadu_si512(wj.add(2)));
                    let w3: __m512bh = std::mem::transmute(_mm512_loadu_si512(wj.add(3)));
                    for i in 0..TILE {
                        let a: __m512bh =
                            std::mem::transmute(_mm512_set1_epi32(*xr[i].add(j) as i32));
                        acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, w0);
                        acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, w1);
                        acc[i][2] = _mm512_dpbf16_ps(acc[i][2], a, w2);
                        acc[i][3] = _mm512_dpbf16_ps(acc[i][3], a, w3);
                    }
                }
            }
            // SAFETY: rows r .. r + here < m and the masked columns are this task's part of the m × n output;
            // the bias has n values.
            unsafe { store_tile(acc, here, masks, &l.bias, out, r, l.n, col0) };
            r += here;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2⁻⁸ is halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
    }

    /// `vcvtne2ps2bf16` rounds every value as the scalar [`pair`] does, ties and the row's tail included.
    #[test]
    fn vector_conversion_equals_scalar() {
        if !supported() {
            eprintln!("skipped: this CPU has no AVX512_BF16");
            return;
        }
        for k in [1usize, 31, 32, 33, 100, 384] {
            let rows = 3;
            let x: Vec<f32> = (0..rows * k)
                .map(|i| match i % 5 {
                    0 => 1.0 + 1.0 / 256.0,
                    1 => -(1.0 + 3.0 / 256.0),
                    _ => (i as f32 * 0.37).sin() * 1e3,
                })
                .collect();
            let k2 = k.div_ceil(2);
            let mut got = vec![0u32; rows * k2];
            // SAFETY: checked `supported()` above.
            unsafe { avx512::convert_rows(&x, k, &mut got, k2) };
            let want: Vec<u32> = x
                .chunks_exact(k)
                .flat_map(|r| {
                    (0..k2).map(move |j| pair(r[2 * j], r.get(2 * j + 1).copied().unwrap_or(0.0)))
                })
                .collect();
            assert_eq!(got, want, "k {k}");
        }
    }

    /// The AMX tiles and `vdpbf16ps` multiply the same bf16 values exactly into f32; only the order of the
    /// f32 sums differs, so the two agree to a few f32 ulps of the sum of magnitudes.
    #[test]
    fn amx_agrees_with_avx512_bf16() {
        if !(supported() && crate::amx::available()) {
            eprintln!("skipped: AMX is {}", crate::amx::status());
            return;
        }
        for (m, n, k) in [
            (1, 64, 32),
            (33, 100, 384),
            (70, 1536, 384),
            (130, 384, 1536),
        ] {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let l = Bf16Linear::new(&w, Some(&b), n, k);
            assert!(l.amx_fits());
            let (mut tiles, mut vector) = (vec![0.0; m * n], vec![0.0; m * n]);
            l.forward_amx(&x, m, &mut tiles);
            l.forward_avx512(&x, m, &mut vector);
            for (i, (a, v)) in tiles.iter().zip(&vector).enumerate() {
                assert!(
                    (a - v).abs() <= 1e-5 * k as f32,
                    "{m}x{n}x{k} [{i}]: {a} vs {v}"
                );
            }
        }
    }

    #[test]
    fn matches_f32_within_bf16_rounding() {
        if !supported() {
            eprintln!("skipped: this CPU has no AVX512_BF16");
            return;
        }
        for (m, n, k) in [
            (1, 64, 3),
            (5, 70, 33),
            (70, 130, 384),
            (7, 1536, 384),
            (40, 100, 64),
        ] {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let l = Bf16Linear::new(&w, Some(&b), n, k);
            assert_eq!(
                l.weight_bytes(),
                n.div_ceil(PANEL) * PANEL * k.div_ceil(2) * 4
            );
            let mut y = vec![0.0; m * n];
            l.forward(&x, m, &mut y);
            for r in 0..m {
                for c in 0..n {
                    let want: f32 = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum::<f32>() + b[c];
                    // Each product carries two bf16 roundings (relative 2⁻⁸ each at worst).
                    let scale: f32 = (0..k).map(|i| (x[r * k + i] * w[c * k + i]).abs()).sum();
                    assert!(
                        (y[r * n + c] - want).abs() <= 8e-3 * scale + 1e-5,
                        "{m}x{n}x{k} [{r},{c}]: {} vs {want}",
                        y[r * n + c]
                    );
                }
            }
        }
    }
}
