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

/// Whether this CPU can run the bf16 kernels (AVX-512F with AVX512_BF16).
pub(crate) fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
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
        {
            let (k, k2) = (self.k, self.k2);
            let mut xb = vec![0u32; m * k2];
            xb.par_chunks_mut(ROW_BLOCK * k2)
                .zip(x.par_chunks(ROW_BLOCK * k))
                .for_each(|(dst, src)| {
                    // SAFETY: checked above that the CPU has AVX-512F.
                    unsafe { avx512::convert_rows(src, k, dst, k2) }
                });
            let out = OutPtr(y.as_mut_ptr());
            let panels = self.n.div_ceil(PANEL);
            let row_blocks = m.div_ceil(ROW_BLOCK).max(1);
            (0..panels * row_blocks).into_par_iter().for_each(|task| {
                let (p, rb) = (task % panels, task / panels);
                let rows = rb * ROW_BLOCK..((rb + 1) * ROW_BLOCK).min(m);
                // SAFETY: checked above that the CPU has AVX-512F and AVX512_BF16; `xb` holds m × k2 words;
                // the task writes only rows `rows` × the panel's columns of the m × n output.
                unsafe { avx512::panel_task(self, &xb, p, rows, out) };
            });
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Bf16Linear, PANEL, pair};
    use crate::kernels::OutPtr;
    use crate::panel::avx512::{column_masks, store_tile};
    use std::arch::x86_64::*;

    /// Rows per register tile: 6 × 4 accumulators + 4 weight registers + 1 broadcast ≤ 32 registers.
    const TILE: usize = 6;

    /// Rows of `k` f32 values in `src` to rows of `k2` bf16 pairs in `dst` (compiled for AVX-512, so the
    /// conversion loop vectorizes).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn convert_rows(src: &[f32], k: usize, dst: &mut [u32], k2: usize) {
        for (s, d) in src.chunks_exact(k).zip(dst.chunks_exact_mut(k2)) {
            let mut pairs = s.chunks_exact(2);
            for (o, p) in d.iter_mut().zip(&mut pairs) {
                *o = pair(p[0], p[1]);
            }
            if let [last] = pairs.remainder() {
                d[k2 - 1] = pair(*last, 0.0);
            }
        }
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
            // Rows past the end repeat the last one so the tile keeps its fixed shape; they are not stored.
            let xr: [&[u32]; TILE] = std::array::from_fn(|i| {
                let row = r + i.min(here - 1);
                &xb[row * k2..(row + 1) * k2]
            });
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
                            std::mem::transmute(_mm512_set1_epi32(*xr[i].get_unchecked(j) as i32));
                        acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, w0);
                        acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, w1);
                        acc[i][2] = _mm512_dpbf16_ps(acc[i][2], a, w2);
                        acc[i][3] = _mm512_dpbf16_ps(acc[i][3], a, w3);
                    }
                }
            }
            // SAFETY: rows r .. r + here < m and the masked columns are this task's part of the m × n output;
            // the bias has n values.
            unsafe { store_tile(&acc[..here], masks, &l.bias, out, r, l.n, col0) };
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

    #[test]
    fn matches_f32_within_bf16_rounding() {
        if !supported() {
            eprintln!("skipped: this CPU has no AVX512_BF16");
            return;
        }
        for (m, n, k) in [(1, 64, 3), (5, 70, 33), (70, 130, 384), (7, 1536, 384)] {
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
