//! Fused LayerNorm: one pass forward, one backward (with the weight and bias gradients summed per chunk in order).

use super::{input, level, rows_of, rows_per_task};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use embedkit_cpu::elementwise::{dot16, multiversion, sum16};
use rayon::prelude::*;

/// `y = (x − mean) / sqrt(var + eps) · weight + bias` over the last dimension; inputs `(x, weight, bias)`.
struct LayerNormOp {
    eps: f32,
}

#[inline(always)]
fn layer_norm_rows_body(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], eps: f32) {
    let h = w.len();
    let inv_h = 1.0 / h as f32;
    for (xr, yr) in x.chunks_exact(h).zip(y.chunks_exact_mut(h)) {
        let mean = sum16(xr) * inv_h;
        for (o, v) in yr.iter_mut().zip(xr) {
            *o = *v - mean;
        }
        let var = dot16(yr, yr) * inv_h;
        let rstd = 1.0 / (var + eps).sqrt();
        for ((o, g), c) in yr.iter_mut().zip(w).zip(b) {
            *o = *o * rstd * *g + *c;
        }
    }
}
multiversion!(layer_norm_rows(x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], eps: f32) => layer_norm_rows_body);

/// Turns one row of LayerNorm input into x̂ = (z − mean) / sqrt(var + eps) in place; returns 1 / sqrt(var + eps).
#[inline(always)]
fn normalize_row(z: &mut [f32], eps: f32) -> f32 {
    let inv_h = 1.0 / z.len() as f32;
    let mean = sum16(z) * inv_h;
    for v in z.iter_mut() {
        *v -= mean;
    }
    let var = dot16(z, z) * inv_h;
    let rstd = 1.0 / (var + eps).sqrt();
    for v in z.iter_mut() {
        *v *= rstd;
    }
    rstd
}

/// LayerNorm's backward for one row: `xh` holds x̂ on entry and dz on return; adds `dy·x̂` into `dw` and `dy`
/// into `db`. dz = rstd · (g − mean(g) − x̂ · mean(g·x̂)) with g = dy · weight.
#[inline(always)]
fn layer_norm_row_bwd(
    xh: &mut [f32],
    gy: &[f32],
    w: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    rstd: f32,
) {
    let inv_h = 1.0 / w.len() as f32;
    for ((x, g), (dwv, dbv)) in xh.iter().zip(gy).zip(dw.iter_mut().zip(db.iter_mut())) {
        *dwv += *g * *x;
        *dbv += *g;
    }
    // Σ g·w and Σ g·w·x̂ in 16 lanes (vectorizable), the tail separately.
    let mut s_g = [0f32; 16];
    let mut s_gx = [0f32; 16];
    let (cg, cw, cx) = (gy.chunks_exact(16), w.chunks_exact(16), xh.chunks_exact(16));
    let (rg, rw, rx) = (cg.remainder(), cw.remainder(), cx.remainder());
    for ((g16, w16), x16) in cg.zip(cw).zip(cx) {
        for l in 0..16 {
            let gw = g16[l] * w16[l];
            s_g[l] += gw;
            s_gx[l] += gw * x16[l];
        }
    }
    let mut sg = s_g.iter().sum::<f32>();
    let mut sgx = s_gx.iter().sum::<f32>();
    for ((g, wv), x) in rg.iter().zip(rw).zip(rx) {
        let gw = *g * *wv;
        sg += gw;
        sgx += gw * *x;
    }
    let (mg, mgx) = (sg * inv_h, sgx * inv_h);
    for ((d, g), wv) in xh.iter_mut().zip(gy).zip(w) {
        *d = rstd * (*g * *wv - mg - *d * mgx);
    }
}

/// Backward of one chunk of rows: writes `dx` and adds this chunk's `dweight`, `dbias` into `dwb` (`[2h]`).
#[inline(always)]
fn layer_norm_bwd_rows_body(
    x: &[f32],
    w: &[f32],
    gy: &[f32],
    dx: &mut [f32],
    dwb: &mut [f32],
    eps: f32,
) {
    let h = w.len();
    let (dw, db) = dwb.split_at_mut(h);
    for ((xr, gr), dr) in x
        .chunks_exact(h)
        .zip(gy.chunks_exact(h))
        .zip(dx.chunks_exact_mut(h))
    {
        dr.copy_from_slice(xr);
        let rstd = normalize_row(dr, eps);
        layer_norm_row_bwd(dr, gr, w, dw, db, rstd);
    }
}
multiversion!(layer_norm_bwd_rows(x: &[f32], w: &[f32], gy: &[f32], dx: &mut [f32], dwb: &mut [f32], eps: f32) => layer_norm_bwd_rows_body);

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let x = input(op, "x", s1, l1)?;
        let w = input(op, "weight", s2, l2)?;
        let b = input(op, "bias", s3, l3)?;
        let h = w.len();
        if b.len() != h {
            bail!("{op}: weight has {h} elements, bias {}", b.len());
        }
        rows_of(op, l1, h)?;
        let mut y = vec![0f32; x.len()];
        let step = rows_per_task(h) * h;
        y.par_chunks_mut(step)
            .zip(x.par_chunks(step))
            .for_each(|(yc, xc)| layer_norm_rows(level(), xc, w, b, yc, self.eps));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let x = x.contiguous()?;
        let grad = grad.contiguous()?;
        let h = w.elem_count();
        let n = x.elem_count();
        let packed =
            x.apply_op3_no_bwd(&w.contiguous()?, &grad, &LayerNormBwd { eps: self.eps })?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dw = packed.narrow(0, n, h)?.reshape(w.shape())?;
        let db = packed.narrow(0, n + h, h)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// LayerNorm's backward: `(x, weight, dy)` → `[dx (flattened), dweight, dbias]` in one flat tensor.
struct LayerNormBwd {
    eps: f32,
}

impl CustomOp3 for LayerNormBwd {
    fn name(&self) -> &'static str {
        "fused-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let x = input(op, "x", s1, l1)?;
        let w = input(op, "weight", s2, l2)?;
        let gy = input(op, "gradient", s3, l3)?;
        let h = w.len();
        rows_of(op, l1, h)?;
        if gy.len() != x.len() {
            bail!("{op}: gradient has {} elements, x {}", gy.len(), x.len());
        }
        let n = x.len();
        let mut out = vec![0f32; n + 2 * h];
        let (dx, dwb) = out.split_at_mut(n);
        let step = rows_per_task(h) * h;
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(step)
            .zip(x.par_chunks(step))
            .zip(gy.par_chunks(step))
            .map(|((dc, xc), gc)| {
                let mut part = vec![0f32; 2 * h];
                layer_norm_bwd_rows(level(), xc, w, gc, dc, &mut part, self.eps);
                part
            })
            .collect();
        // In chunk order, so the sum is the same whatever the thread count.
        for part in &partials {
            for (a, p) in dwb.iter_mut().zip(part) {
                *a += *p;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n + 2 * h)))
    }
}

/// LayerNorm over the last dimension of `x` with `weight`, `bias` of that width, differentiable in all three.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNormOp { eps },
    )
}
