//! Bias + dropout + residual add in one pass, forward and backward.

use super::{input, level, rows_of, rows_per_task, with_data};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use embedkit_cpu::elementwise::multiversion;
use rayon::prelude::*;

/// `(x + bias) · drop + residual`; inputs `(x [.., n], bias [n], residual [.., n])`, the dropout mask (shaped
/// like `x`) held by the op. The sum before each post-attention and post-feed-forward LayerNorm.
struct BiasDropoutAdd {
    drop: Option<Tensor>,
}

#[inline(always)]
fn bias_dropout_add_rows_body(x: &[f32], bias: &[f32], drop: &[f32], res: &[f32], y: &mut [f32]) {
    let n = bias.len();
    for (r, ((xr, rr), yr)) in x
        .chunks_exact(n)
        .zip(res.chunks_exact(n))
        .zip(y.chunks_exact_mut(n))
        .enumerate()
    {
        if drop.is_empty() {
            for (((o, v), c), q) in yr.iter_mut().zip(xr).zip(bias).zip(rr) {
                *o = *v + *c + *q;
            }
        } else {
            let dr = &drop[r * n..(r + 1) * n];
            for ((((o, v), c), q), d) in yr.iter_mut().zip(xr).zip(bias).zip(rr).zip(dr) {
                *o = (*v + *c) * *d + *q;
            }
        }
    }
}
multiversion!(bias_dropout_add_rows(x: &[f32], bias: &[f32], drop: &[f32], res: &[f32], y: &mut [f32]) => bias_dropout_add_rows_body);

/// dx = dy · drop (or dy) and the bias gradient Σ dx over rows, added into `db`.
#[inline(always)]
fn bias_dropout_add_bwd_rows_body(gy: &[f32], drop: &[f32], dx: &mut [f32], db: &mut [f32]) {
    let n = db.len();
    for (r, gr) in gy.chunks_exact(n).enumerate() {
        if drop.is_empty() {
            for (a, g) in db.iter_mut().zip(gr) {
                *a += *g;
            }
        } else {
            let dr = &drop[r * n..(r + 1) * n];
            let xr = &mut dx[r * n..(r + 1) * n];
            for (((o, a), g), d) in xr.iter_mut().zip(db.iter_mut()).zip(gr).zip(dr) {
                *o = *g * *d;
                *a += *o;
            }
        }
    }
}
multiversion!(bias_dropout_add_bwd_rows(gy: &[f32], drop: &[f32], dx: &mut [f32], db: &mut [f32]) => bias_dropout_add_bwd_rows_body);

impl CustomOp3 for BiasDropoutAdd {
    fn name(&self) -> &'static str {
        "fused-bias-dropout-add"
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
        let res = input(op, "residual", s3, l3)?;
        let n = bias.len();
        rows_of(op, l1, n)?;
        if res.len() != x.len() {
            bail!("{op}: residual has {} elements, x {}", res.len(), x.len());
        }
        let mut y = vec![0f32; x.len()];
        let step = rows_per_task(n) * n;
        let run = |drop: &[f32], y: &mut [f32]| {
            y.par_chunks_mut(step).enumerate().for_each(|(i, yc)| {
                let (off, len) = (i * step, yc.len());
                let dc = if drop.is_empty() {
                    drop
                } else {
                    &drop[off..off + len]
                };
                bias_dropout_add_rows(
                    level(),
                    &x[off..off + len],
                    bias,
                    dc,
                    &res[off..off + len],
                    yc,
                )
            })
        };
        match &self.drop {
            None => run(&[], &mut y),
            Some(d) => with_data(op, "dropout mask", d, |drop| {
                if drop.len() != x.len() {
                    bail!(
                        "{op}: dropout mask has {} elements, x {}",
                        drop.len(),
                        x.len()
                    );
                }
                run(drop, &mut y);
                Ok(())
            })?,
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        _residual: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let n = x.elem_count();
        let h = bias.elem_count();
        let packed = grad.apply_op1_no_bwd(&BiasDropoutAddBwd {
            drop: self.drop.clone(),
            width: h,
        })?;
        let (dx, db) = match &self.drop {
            // Without dropout dx is dy itself; only the bias sums were computed.
            None => (grad.clone(), packed.reshape(bias.shape())?),
            Some(_) => (
                packed.narrow(0, 0, n)?.reshape(x.shape())?,
                packed.narrow(0, n, h)?.reshape(bias.shape())?,
            ),
        };
        Ok((Some(dx), Some(db), Some(grad)))
    }
}

/// Bias+dropout+residual's backward: `dy` → `[dx (flattened), dbias]` with dropout, `[dbias]` without.
struct BiasDropoutAddBwd {
    drop: Option<Tensor>,
    width: usize,
}

impl candle_core::CustomOp1 for BiasDropoutAddBwd {
    fn name(&self) -> &'static str {
        "fused-bias-dropout-add-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let gy = input(op, "gradient", s1, l1)?;
        let h = self.width;
        rows_of(op, l1, h)?;
        let step = rows_per_task(h) * h;
        let dx_len = if self.drop.is_some() { gy.len() } else { 0 };
        let mut out = vec![0f32; dx_len + h];
        let (dx, db) = out.split_at_mut(dx_len);
        let partials: Vec<Vec<f32>> = match &self.drop {
            None => gy
                .par_chunks(step)
                .map(|gc| {
                    let mut part = vec![0f32; h];
                    bias_dropout_add_bwd_rows(level(), gc, &[], &mut [], &mut part);
                    part
                })
                .collect(),
            Some(d) => with_data(op, "dropout mask", d, |drop| {
                if drop.len() != gy.len() {
                    bail!(
                        "{op}: dropout mask has {} elements, gradient {}",
                        drop.len(),
                        gy.len()
                    );
                }
                Ok(dx
                    .par_chunks_mut(step)
                    .zip(gy.par_chunks(step))
                    .zip(drop.par_chunks(step))
                    .map(|((dxc, gc), dc)| {
                        let mut part = vec![0f32; h];
                        bias_dropout_add_bwd_rows(level(), gc, dc, dxc, &mut part);
                        part
                    })
                    .collect())
            })?,
        };
        for part in &partials {
            for (a, p) in db.iter_mut().zip(part) {
                *a += *p;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(dx_len + h)))
    }
}

/// `(x + bias) · drop + residual` over `x`'s last dimension, `drop` an optional dropout mask shaped like `x`
/// (0 or 1/(1−p)). Differentiable in `x`, `bias` and `residual`.
pub fn bias_dropout_add(
    x: &Tensor,
    bias: &Tensor,
    drop: Option<&Tensor>,
    residual: &Tensor,
) -> Result<Tensor> {
    let drop = drop.map(|d| d.contiguous()).transpose()?;
    x.contiguous()?.apply_op3(
        &bias.contiguous()?,
        &residual.contiguous()?,
        BiasDropoutAdd { drop },
    )
}
