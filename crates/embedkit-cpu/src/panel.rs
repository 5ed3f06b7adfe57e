//! An f32 linear layer with weights packed once at load into column panels: the one copy of an f32 layer.
//!
//! `gemm` repacks the weight matrix on every call, which for a handful of tokens (one query) costs as much
//! as the arithmetic. Here `Wᵀ` is stored as `[n / 64][k][64]` panels: a task streams one contiguous panel
//! and keeps a tile of accumulators in registers (6 rows × 64 columns with AVX-512, in intrinsics; 4 rows in
//! the portable body the other levels compile), with no packing at run time. Batches above the panel limit
//! run `gemm` on the same panels ([`PanelLinear::forward_gemm`]), so no second copy in `gemm`'s layout is
//! kept (it was +85 MB for all-MiniLM-L6-v2, +340 MB for all-mpnet-base-v2).

use crate::kernels::OutPtr;
use crate::simd::{MulAdd, SimdLevel};
use rayon::prelude::*;

/// Columns per panel.
const PANEL: usize = 64;
/// Rows per register tile.
const ROWS: usize = 4;

/// `y = x·Wᵀ + b` with `Wᵀ` in panels.
pub(crate) struct PanelLinear {
    n: usize,
    k: usize,
    panels: Vec<f32>,
    bias: Vec<f32>,
}

impl PanelLinear {
    /// Packs `weight` (`[n × k]`, PyTorch layout).
    pub(crate) fn new(weight: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Self {
        let count = n.div_ceil(PANEL);
        let mut panels = vec![0.0f32; count * k * PANEL];
        for row in 0..n {
            let (p, c) = (row / PANEL, row % PANEL);
            for col in 0..k {
                panels[(p * k + col) * PANEL + c] = weight[row * k + col];
            }
        }
        Self {
            n,
            k,
            panels,
            bias: bias.map_or_else(|| vec![0.0; n], <[f32]>::to_vec),
        }
    }

    /// `y[m × n] = x[m × k]·Wᵀ + b`, panels in parallel.
    pub(crate) fn forward(&self, x: &[f32], m: usize, y: &mut [f32], level: SimdLevel) {
        debug_assert_eq!(x.len(), m * self.k);
        debug_assert_eq!(y.len(), m * self.n);
        let out = OutPtr(y.as_mut_ptr());
        let panels = self.n.div_ceil(PANEL);
        // Tasks: every panel × blocks of up to 64 rows, so both a single text and a large batch spread over
        // the threads.
        let row_blocks = m.div_ceil(64).max(1);
        (0..panels * row_blocks).into_par_iter().for_each(|task| {
            let (p, rb) = (task % panels, task / panels);
            let rows = rb * 64..((rb + 1) * 64).min(m);
            let t = PanelTask {
                layer: self,
                x,
                panel: p,
                rows,
                out,
            };
            #[cfg(target_arch = "x86_64")]
            if level == SimdLevel::Avx512 {
                // SAFETY: an Avx512 level comes only from SimdLevel::supported()/capped(), i.e. the CPU has
                // AVX-512F and FMA.
                unsafe { avx512::panel_task(&t) };
                return;
            }
            panel_task(level, &t);
        });
    }
}

impl PanelLinear {
    /// `y[m × n] = x[m × k]·Wᵀ + b` through `gemm`, one call per panel (a `k × 64` matrix with rows 64 apart),
    /// for batches where `gemm`'s cache blocking pays: the same packed weights serve both paths, so no second
    /// copy of the layer is kept in `gemm`'s own layout.
    pub(crate) fn forward_gemm(
        &self,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        parallelism: gemm::Parallelism,
    ) {
        let (n, k) = (self.n, self.k);
        assert_eq!(x.len(), m * k, "input of {m} rows × {k}");
        assert_eq!(y.len(), m * n, "output of {m} rows × {n}");
        for row in y.chunks_exact_mut(n) {
            row.copy_from_slice(&self.bias);
        }
        for p in 0..n.div_ceil(PANEL) {
            let col0 = p * PANEL;
            let cols = (n - col0).min(PANEL);
            let panel = &self.panels[p * k * PANEL..(p + 1) * k * PANEL];
            // SAFETY: y is m × n with rows n apart and the columns col0 .. col0 + cols < n; x is m × k with rows
            // k apart; the panel is k × 64 with rows 64 apart, of which the first `cols` columns are read.
            unsafe {
                gemm::gemm(
                    m,
                    cols,
                    k,
                    y.as_mut_ptr().add(col0),
                    1,
                    n as isize,
                    true,
                    x.as_ptr(),
                    1,
                    k as isize,
                    panel.as_ptr(),
                    1,
                    PANEL as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
        }
    }
}

pub(crate) struct PanelTask<'a> {
    layer: &'a PanelLinear,
    x: &'a [f32],
    panel: usize,
    rows: std::ops::Range<usize>,
    out: OutPtr,
}

crate::simd::multiversion!(panel_task(task: &PanelTask<'_>) => fma panel_task_body);

#[inline(always)]
fn panel_task_body<M: MulAdd>(task: &PanelTask<'_>) {
    let l = task.layer;
    let k = l.k;
    let panel = &l.panels[task.panel * k * PANEL..(task.panel + 1) * k * PANEL];
    let col0 = task.panel * PANEL;
    let valid = (l.n - col0).min(PANEL);
    let mut r = task.rows.start;
    while r < task.rows.end {
        let rows = (task.rows.end - r).min(ROWS);
        // Rows past the end repeat the last one: the tile stays a fixed 4 × 64, which the compiler keeps in
        // registers; those results are not stored.
        let xr: [&[f32]; ROWS] = std::array::from_fn(|i| {
            let row = r + i.min(rows - 1);
            &task.x[row * k..(row + 1) * k]
        });
        let mut acc = [[0.0f32; PANEL]; ROWS];
        for (kk, w) in panel.chunks_exact(PANEL).enumerate() {
            let w: &[f32; PANEL] = w.try_into().expect("chunks_exact yields PANEL values");
            for i in 0..ROWS {
                let a = xr[i][kk];
                for c in 0..PANEL {
                    acc[i][c] = M::mul_add(a, w[c], acc[i][c]);
                }
            }
        }
        for (i, acc_row) in acc.iter().enumerate().take(rows) {
            for (c, (&v, &b)) in acc_row.iter().zip(&l.bias[col0..col0 + valid]).enumerate() {
                // SAFETY: row r + i < m and column col0 + c < n: inside the m × n output, in the rows and
                // columns only this task writes.
                unsafe { *task.out.get().add((r + i) * l.n + col0 + c) = v + b };
            }
        }
        r += rows;
    }
}

/// The AVX-512 kernel in intrinsics. The portable body above, compiled for AVX-512, spills its 4 × 64
/// accumulator array to the stack on every step of `k` (LLVM does not keep a 1 KiB array in registers); here
/// the tile is 6 rows × 4 registers, 24 of the 32 zmm registers, and stays there.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{PANEL, PanelTask};
    use crate::kernels::OutPtr;
    use std::arch::x86_64::*;

    /// Rows per register tile: 6 × 4 accumulators + 4 weight registers + 1 broadcast ≤ 32 registers.
    const TILE: usize = 6;

    /// # Safety
    /// The CPU must support AVX-512F and FMA.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn panel_task(task: &PanelTask<'_>) {
        let l = task.layer;
        let k = l.k;
        let panel = &l.panels[task.panel * k * PANEL..(task.panel + 1) * k * PANEL];
        let col0 = task.panel * PANEL;
        let valid = (l.n - col0).min(PANEL);
        let masks = column_masks(valid);
        let mut r = task.rows.start;
        while r < task.rows.end {
            let rows = (task.rows.end - r).min(TILE);
            let xr: [*const f32; TILE] = tile_rows(task.x, r, rows, k);
            let mut acc = [[_mm512_setzero_ps(); 4]; TILE];
            let w = panel.as_ptr();
            for kk in 0..k {
                // SAFETY: the panel holds k · PANEL values, so 64 at kk · 64 are inside it; each xr row has k
                // values and kk < k.
                unsafe {
                    let w0 = _mm512_loadu_ps(w.add(kk * PANEL));
                    let w1 = _mm512_loadu_ps(w.add(kk * PANEL + 16));
                    let w2 = _mm512_loadu_ps(w.add(kk * PANEL + 32));
                    let w3 = _mm512_loadu_ps(w.add(kk * PANEL + 48));
                    for i in 0..TILE {
                        let a = _mm512_set1_ps(*xr[i].add(kk));
                        acc[i][0] = _mm512_fmadd_ps(a, w0, acc[i][0]);
                        acc[i][1] = _mm512_fmadd_ps(a, w1, acc[i][1]);
                        acc[i][2] = _mm512_fmadd_ps(a, w2, acc[i][2]);
                        acc[i][3] = _mm512_fmadd_ps(a, w3, acc[i][3]);
                    }
                }
            }
            // SAFETY: rows r.. r + rows < m and the masked columns are this task's part of the m × n output;
            // the bias has n values.
            unsafe { store_tile(acc, rows, masks, &l.bias, task.out, r, l.n, col0) };
            r += rows;
        }
    }

    /// Where each of a tile's `R` rows of `k` values starts in `x`, from row `r`, of which `rows` (1..=R) are
    /// real: the rest repeat the last one so the tile keeps its fixed shape (their results are not stored).
    /// A plain loop, not `array::from_fn`, whose closure was not inlined into the `target_feature` kernels: a
    /// call per tile that stored the row slices to the stack (2 % of a 512-token f32 profile).
    #[inline(always)]
    pub(crate) fn tile_rows<T, const R: usize>(
        x: &[T],
        r: usize,
        rows: usize,
        k: usize,
    ) -> [*const T; R] {
        let mut starts = [x.as_ptr(); R];
        for (i, start) in starts.iter_mut().enumerate() {
            let row = r + i.min(rows - 1);
            *start = x[row * k..(row + 1) * k].as_ptr();
        }
        starts
    }

    /// Per 16-column register of a 64-column panel: which columns are real (the last panel of a layer may be
    /// partial, `valid` < 64).
    pub(crate) fn column_masks(valid: usize) -> [__mmask16; 4] {
        std::array::from_fn(|q| {
            let cols = valid.saturating_sub(q * 16).min(16);
            if cols == 16 {
                0xffff
            } else {
                (1u16 << cols) - 1
            }
        })
    }

    /// Stores the first `rows` rows of a tile of accumulators (`acc[i]` is row `row0 + i`, 64 columns from
    /// `col0`) plus the bias into the row-major output with `n` columns, writing only the columns `masks`
    /// allow. The tile comes by value and the function is always inlined into its `target_feature` callers
    /// (so it cannot carry the attribute itself, and its intrinsics take the caller's features), so a
    /// kernel's accumulators go from registers to the output: passed as a slice to a function of its own,
    /// the tile lived in a stack array that every tile first zeroed with a `memset` call (1.5–2 % of a
    /// 512-token f32 profile).
    ///
    /// # Safety
    /// Called only from functions compiled with AVX-512F; rows `row0 .. row0 + rows` and the masked columns
    /// must lie inside the output, and no other task may write them at the same time; `bias` must cover the
    /// masked columns.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn store_tile<const R: usize>(
        acc: [[__m512; 4]; R],
        rows: usize,
        masks: [__mmask16; 4],
        bias: &[f32],
        out: OutPtr,
        row0: usize,
        n: usize,
        col0: usize,
    ) {
        for (i, acc_row) in acc.iter().enumerate().take(rows) {
            for (q, &v) in acc_row.iter().enumerate() {
                if masks[q] == 0 {
                    continue;
                }
                let c = col0 + q * 16;
                // SAFETY: the caller guarantees the masked columns of row row0 + i are inside the output and
                // the bias, and that only this task writes them.
                unsafe {
                    let b = _mm512_maskz_loadu_ps(masks[q], bias.as_ptr().add(c));
                    let dst = out.get().add((row0 + i) * n + c);
                    _mm512_mask_storeu_ps(dst, masks[q], _mm512_add_ps(v, b));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Not a test: panels against `gemm` (on the panels, and on the PyTorch layout) on MiniLM's layer shapes, fastest of 20 runs, one thread, for a batch
    /// of `rows` tokens (`cargo test --release -p embedkit-cpu --lib panel_vs_gemm_timing -- --ignored
    /// --nocapture`); decides where the panel kernel hands over to `gemm`.
    #[test]
    #[ignore]
    fn panel_vs_gemm_timing() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        for m in [26, 64, 208, 832, 4096] {
            let (mut panel_total, mut gemm_total, mut on_panels_total) = (0.0, 0.0, 0.0);
            for (n, k) in [(1152, 384), (384, 384), (1536, 384), (384, 1536)] {
                let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
                let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
                let b = vec![0.5f32; n];
                let p = PanelLinear::new(&w, Some(&b), n, k);
                let mut y = vec![0.0; m * n];
                fn best(y: &mut [f32], f: &mut dyn FnMut(&mut [f32])) -> f64 {
                    (0..20)
                        .map(|_| {
                            let t = std::time::Instant::now();
                            f(y);
                            t.elapsed().as_secs_f64()
                        })
                        .fold(f64::INFINITY, f64::min)
                }
                let level = SimdLevel::detect();
                panel_total += pool.install(|| best(&mut y, &mut |y| p.forward(&x, m, y, level)));
                on_panels_total += pool.install(|| {
                    best(&mut y, &mut |y| {
                        p.forward_gemm(&x, m, y, gemm::Parallelism::None)
                    })
                });
                gemm_total += pool.install(|| {
                    best(&mut y, &mut |y| {
                        crate::kernels::linear(
                            &x,
                            m,
                            k,
                            &w,
                            Some(&b),
                            n,
                            y,
                            gemm::Parallelism::None,
                        )
                    })
                });
            }
            println!(
                "{m} rows: panels {:.3} ms, gemm on the panels {:.3} ms, gemm {:.3} ms per layer",
                panel_total * 1e3,
                on_panels_total * 1e3,
                gemm_total * 1e3
            );
        }
    }

    #[test]
    fn matches_naive_at_every_level() {
        for (m, n, k) in [(1, 64, 3), (5, 70, 33), (70, 130, 384)] {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
            let l = PanelLinear::new(&w, Some(&b), n, k);
            for level in [SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512] {
                let level = SimdLevel::capped(level);
                let mut y = vec![0.0; m * n];
                l.forward(&x, m, &mut y, level);
                let mut g = vec![0.0; m * n];
                l.forward_gemm(&x, m, &mut g, gemm::Parallelism::None);
                for (a, b) in y.iter().zip(&g) {
                    assert!(
                        (a - b).abs() < 1e-3,
                        "{m}x{n}x{k}: panels {a} vs gemm on panels {b}"
                    );
                }
                for r in 0..m {
                    for c in 0..n {
                        let want: f32 =
                            (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum::<f32>() + b[c];
                        assert!(
                            (y[r * n + c] - want).abs() < 1e-3,
                            "{m}x{n}x{k} {level:?} [{r},{c}]"
                        );
                    }
                }
            }
        }
    }
}
