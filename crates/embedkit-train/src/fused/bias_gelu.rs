//! Bias + exact (erf) GELU in one pass, forward and backward.

use super::{input, level, rows_of, rows_per_task};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail};
use embedkit_cpu::elementwise::{Unfused, erf, fast_exp_or_zero, multiversion};
use rayon::prelude::*;

/// `gelu(x + bias)` with BERT's exact (erf) GELU; inputs `(x [.., n], bias [n])`.
struct BiasGelu;

#[inline(always)]
fn bias_gelu_rows_body(x: &[f32], bias: &[f32], y: &mut [f32]) {
    let n = bias.len();
    for (xr, yr) in x.chunks_exact(n).zip(y.chunks_exact_mut(n)) {
        for ((o, v), c) in yr.iter_mut().zip(xr).zip(bias) {
            let u = *v + *c;
            *o = 0.5 * u * (1.0 + erf::<Unfused>(u * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}
multiversion!(bias_gelu_rows(x: &[f32], bias: &[f32], y: &mut [f32]) => bias_gelu_rows_body);

/// Writes `dx = dy · gelu'(x + bias)` and adds `Σ dx` over the rows into `db`.
#[inline(always)]
fn bias_gelu_bwd_rows_body(x: &[f32], bias: &[f32], gy: &[f32], dx: &mut [f32], db: &mut [f32]) {
    let n = bias.len();
    // 1 / sqrt(2π)
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    for ((xr, gr), dr) in x
        .chunks_exact(n)
        .zip(gy.chunks_exact(n))
        .zip(dx.chunks_exact_mut(n))
    {
        for ((((d, v), c), g), acc) in dr.iter_mut().zip(xr).zip(bias).zip(gr).zip(db.iter_mut()) {
            let u = *v + *c;
            let cdf = 0.5 * (1.0 + erf::<Unfused>(u * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = INV_SQRT_2PI * fast_exp_or_zero::<Unfused>(-0.5 * u * u);
            *d = *g * (cdf + u * pdf);
            *acc += *d;
        }
    }
}
multiversion!(bias_gelu_bwd_rows(x: &[f32], bias: &[f32], gy: &[f32], dx: &mut [f32], db: &mut [f32]) => bias_gelu_bwd_rows_body);

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "fused-bias-gelu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let x = input(op, "x", s1, l1)?;
        let bias = input(op, "bias", s2, l2)?;
        let n = bias.len();
        rows_of(op, l1, n)?;
        let mut y = vec![0f32; x.len()];
        let step = rows_per_task(n) * n;
        y.par_chunks_mut(step)
            .zip(x.par_chunks(step))
            .for_each(|(yc, xc)| bias_gelu_rows(level(), xc, bias, yc));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let x = x.contiguous()?;
        let n = x.elem_count();
        let packed = x.apply_op3_no_bwd(&bias.contiguous()?, &grad.contiguous()?, &BiasGeluBwd)?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let db = packed
            .narrow(0, n, bias.elem_count())?
            .reshape(bias.shape())?;
        Ok((Some(dx), Some(db)))
    }
}

/// Bias+GELU's backward: `(x, bias, dy)` → `[dx (flattened), dbias]` in one flat tensor.
struct BiasGeluBwd;

impl CustomOp3 for BiasGeluBwd {
    fn name(&self) -> &'static str {
        "fused-bias-gelu-backward"
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
        let bias = input(op, "bias", s2, l2)?;
        let gy = input(op, "gradient", s3, l3)?;
        let n = bias.len();
        rows_of(op, l1, n)?;
        if gy.len() != x.len() {
            bail!("{op}: gradient has {} elements, x {}", gy.len(), x.len());
        }
        let len = x.len();
        let mut out = vec![0f32; len + n];
        let (dx, db) = out.split_at_mut(len);
        let step = rows_per_task(n) * n;
        let partials: Vec<Vec<f32>> = dx
            .par_chunks_mut(step)
            .zip(x.par_chunks(step))
            .zip(gy.par_chunks(step))
            .map(|((dc, xc), gc)| {
                let mut part = vec![0f32; n];
                bias_gelu_bwd_rows(level(), xc, bias, gc, dc, &mut part);
                part
            })
            .collect();
        for part in &partials {
            for (a, p) in db.iter_mut().zip(part) {
                *a += *p;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(len + n)))
    }
}

/// `gelu(x + bias)` over `x`'s last dimension with BERT's exact (erf) GELU, differentiable in `x` and `bias`.
pub fn bias_gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op2(&bias.contiguous()?, BiasGelu)
}
