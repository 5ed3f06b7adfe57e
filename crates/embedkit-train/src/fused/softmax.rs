//! Masked, scaled softmax over attention scores, with the dropout mask applied in the same pass.

use super::{input, level, rows_per_task, with_data};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail};
use embedkit_cpu::elementwise::{Unfused, dot16, fast_exp_or_zero, max16, multiversion, sum16};
use rayon::prelude::*;

/// `softmax(scale · scores + mask) · drop` over the last dimension; inputs `(scores [b, .., tq, tk], mask [b, tk])`,
/// the mask additive (0 for real keys, a large negative number for padding) and broadcast over the middle
/// dimensions; `drop` is an optional dropout mask shaped like `scores` (0 or 1/(1−p)), held by the op so the
/// probabilities never exist as a separate undropped tensor.
struct MaskedSoftmax {
    scale: f32,
    drop: Option<Tensor>,
}

/// Softmax of each row of `s` (scaled, plus the mask) into `y`, then times `drop` when it is not empty.
#[inline(always)]
fn softmax_rows_body(s: &[f32], mask: &[f32], drop: &[f32], y: &mut [f32], scale: f32) {
    let tk = mask.len();
    for (r, (sr, yr)) in s.chunks_exact(tk).zip(y.chunks_exact_mut(tk)).enumerate() {
        softmax_row(sr, mask, yr, scale);
        if !drop.is_empty() {
            for (o, d) in yr.iter_mut().zip(&drop[r * tk..(r + 1) * tk]) {
                *o *= *d;
            }
        }
    }
}
multiversion!(softmax_rows(s: &[f32], mask: &[f32], drop: &[f32], y: &mut [f32], scale: f32) => softmax_rows_body);

#[inline(always)]
fn softmax_row(sr: &[f32], mask: &[f32], yr: &mut [f32], scale: f32) {
    for ((o, v), m) in yr.iter_mut().zip(sr).zip(mask) {
        *o = *v * scale + *m;
    }
    let max = max16(yr);
    for o in yr.iter_mut() {
        *o = fast_exp_or_zero::<Unfused>(*o - max);
    }
    let inv = 1.0 / sum16(yr);
    for o in yr.iter_mut() {
        *o *= inv;
    }
}

#[inline(always)]
fn softmax_bwd_rows_body(p: &[f32], gy: &[f32], ds: &mut [f32], tk: usize, scale: f32) {
    for ((pr, gr), dr) in p
        .chunks_exact(tk)
        .zip(gy.chunks_exact(tk))
        .zip(ds.chunks_exact_mut(tk))
    {
        let dot = dot16(pr, gr);
        for ((d, pv), g) in dr.iter_mut().zip(pr).zip(gr) {
            *d = scale * *pv * (*g - dot);
        }
    }
}
multiversion!(softmax_bwd_rows(p: &[f32], gy: &[f32], ds: &mut [f32], tk: usize, scale: f32) => softmax_bwd_rows_body);

/// Backward through dropout and softmax with p recomputed from the scores: dp = dy · drop,
/// ds = scale · p · (dp − Σ p·dp).
#[inline(always)]
fn softmax_dropout_bwd_rows_body(
    s: &[f32],
    mask: &[f32],
    drop: &[f32],
    gy: &[f32],
    ds: &mut [f32],
    scale: f32,
) {
    let tk = mask.len();
    let mut g = vec![0f32; tk];
    for (((sr, dr), gr), dropr) in s
        .chunks_exact(tk)
        .zip(ds.chunks_exact_mut(tk))
        .zip(gy.chunks_exact(tk))
        .zip(drop.chunks_exact(tk))
    {
        softmax_row(sr, mask, dr, scale);
        for ((gv, a), b) in g.iter_mut().zip(gr).zip(dropr) {
            *gv = *a * *b;
        }
        let dot = dot16(dr, &g);
        for (d, gv) in dr.iter_mut().zip(&g) {
            *d = scale * *d * (*gv - dot);
        }
    }
}
multiversion!(softmax_dropout_bwd_rows(s: &[f32], mask: &[f32], drop: &[f32], gy: &[f32], ds: &mut [f32], scale: f32) => softmax_dropout_bwd_rows_body);

/// Checks a `[b, .., tq, tk]` scores layout against a `[b, tk]` mask; returns `(b, tk)`.
fn check_scores(op: &str, l1: &Layout, l2: &Layout) -> Result<(usize, usize)> {
    let dims = l1.dims();
    let (b, tk) = l2.shape().dims2()?;
    if dims.len() < 2 || dims[0] != b || dims[dims.len() - 1] != tk || tk == 0 || b == 0 {
        bail!("{op}: scores {dims:?} do not match a [{b}, {tk}] mask");
    }
    Ok((b, tk))
}

/// Runs `f(offset, mask row, out chunk)` over `out` in parallel chunks of whole rows that never straddle two
/// sequences (so each chunk sees one mask row).
fn for_row_chunks(
    out: &mut [f32],
    mask: &[f32],
    b: usize,
    tk: usize,
    f: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) {
    let per_batch = out.len() / b;
    if per_batch == 0 {
        return;
    }
    let step = rows_per_task(tk) * tk;
    out.par_chunks_mut(per_batch)
        .enumerate()
        .for_each(|(bi, ob)| {
            let m = &mask[bi * tk..(bi + 1) * tk];
            ob.par_chunks_mut(step)
                .enumerate()
                .for_each(|(ci, oc)| f(bi * per_batch + ci * step, m, oc));
        });
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "fused-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let s = input(op, "scores", s1, l1)?;
        let mask = input(op, "mask", s2, l2)?;
        let (b, tk) = check_scores(op, l1, l2)?;
        let mut y = vec![0f32; s.len()];
        let run = |drop: &[f32], y: &mut [f32]| {
            for_row_chunks(y, mask, b, tk, |off, m, yc| {
                let n = yc.len();
                let dc = if drop.is_empty() {
                    drop
                } else {
                    &drop[off..off + n]
                };
                softmax_rows(level(), &s[off..off + n], m, dc, yc, self.scale)
            })
        };
        match &self.drop {
            None => run(&[], &mut y),
            Some(d) => with_data(op, "dropout mask", d, |drop| {
                if drop.len() != s.len() {
                    bail!(
                        "{op}: dropout mask has {} elements, scores {}",
                        drop.len(),
                        s.len()
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
        scores: &Tensor,
        mask: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let ds = match &self.drop {
            None => res.apply_op2_no_bwd(&grad, &SoftmaxBwd { scale: self.scale })?,
            Some(d) => scores.contiguous()?.apply_op3_no_bwd(
                &mask.contiguous()?,
                &grad,
                &SoftmaxDropoutBwd {
                    scale: self.scale,
                    drop: d.clone(),
                },
            )?,
        };
        Ok((Some(ds), None))
    }
}

/// Softmax's backward: `(p, dp)` → `scale · p · (dp − Σ p·dp)` per row.
struct SoftmaxBwd {
    scale: f32,
}

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "fused-masked-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let p = input(op, "probabilities", s1, l1)?;
        let gy = input(op, "gradient", s2, l2)?;
        if p.len() != gy.len() {
            bail!(
                "{op}: gradient has {} elements, output {}",
                gy.len(),
                p.len()
            );
        }
        let tk = l1.dims().last().copied().unwrap_or(1).max(1);
        let mut ds = vec![0f32; p.len()];
        let step = rows_per_task(tk) * tk;
        ds.par_chunks_mut(step)
            .zip(p.par_chunks(step))
            .zip(gy.par_chunks(step))
            .for_each(|((dc, pc), gc)| softmax_bwd_rows(level(), pc, gc, dc, tk, self.scale));
        Ok((CpuStorage::F32(ds), l1.shape().clone()))
    }
}

/// Backward of softmax with dropout: `(scores, mask, dy)` → dscores, recomputing p (the op's output is p · drop,
/// which has lost p where drop is 0).
struct SoftmaxDropoutBwd {
    scale: f32,
    drop: Tensor,
}

impl CustomOp3 for SoftmaxDropoutBwd {
    fn name(&self) -> &'static str {
        "fused-masked-softmax-dropout-backward"
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
        let s = input(op, "scores", s1, l1)?;
        let mask = input(op, "mask", s2, l2)?;
        let gy = input(op, "gradient", s3, l3)?;
        let (b, tk) = check_scores(op, l1, l2)?;
        let mut ds = vec![0f32; s.len()];
        with_data(op, "dropout mask", &self.drop, |drop| {
            if drop.len() != s.len() || gy.len() != s.len() {
                bail!(
                    "{op}: scores have {} elements, dropout mask {}, gradient {}",
                    s.len(),
                    drop.len(),
                    gy.len()
                );
            }
            for_row_chunks(&mut ds, mask, b, tk, |off, m, dc| {
                let n = dc.len();
                softmax_dropout_bwd_rows(
                    level(),
                    &s[off..off + n],
                    m,
                    &drop[off..off + n],
                    &gy[off..off + n],
                    dc,
                    self.scale,
                )
            });
            Ok(())
        })?;
        Ok((CpuStorage::F32(ds), l1.shape().clone()))
    }
}

/// `softmax(scale · scores + mask)` over the last dimension of `scores` (`[b, .., tq, tk]`), with the additive
/// `mask` (`[b, tk]`) broadcast over the middle dimensions, then times the dropout mask `drop` (shaped like
/// `scores`) when given. Differentiable in `scores`; the masks get no gradient.
pub fn masked_softmax(
    scores: &Tensor,
    mask: &Tensor,
    scale: f32,
    drop: Option<&Tensor>,
) -> Result<Tensor> {
    let drop = drop.map(|d| d.contiguous()).transpose()?;
    scores
        .contiguous()?
        .apply_op2(&mask.contiguous()?, MaskedSoftmax { scale, drop })
}
