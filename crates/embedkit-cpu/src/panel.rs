//! An f32 linear layer with weights packed once at load into column panels, for small batches.
//!
//! `gemm` repacks the weight matrix on every call, which for a handful of tokens (one query) costs as much
//! as the arithmetic. Here `Wᵀ` is stored as `[n / 64][k][64]` panels: a task streams one contiguous panel
//! and keeps a 4-row × 64-column tile of accumulators in registers (16 AVX-512 registers), with no packing
//! at run time.

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
            panel_task(level, &t);
        });
    }
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each task writes its own rows × panel columns of the output.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method so closures capture the whole wrapper, not its raw-pointer field.
    fn get(self) -> *mut f32 {
        self.0
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

#[cfg(test)]
mod tests {
    use super::*;

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
