//! Bias + split of a projection into attention heads, and its backward (the heads merged back).

use super::{input, rows_per_task};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// `[b·t, heads·d]` projection output plus its bias, rearranged to `[b, heads, t, d]` (the layout the attention
/// matmuls take); inputs `(y, bias [heads·d])`.
struct SplitHeads {
    batch: usize,
    seq: usize,
    heads: usize,
}

impl SplitHeads {
    fn check(&self, op: &str, len: usize, h: usize) -> Result<usize> {
        if h == 0 || !h.is_multiple_of(self.heads) || len != self.batch * self.seq * h {
            bail!(
                "{op}: {len} elements do not split into [{}, {}, {}, {h}/{}]",
                self.batch,
                self.heads,
                self.seq,
                self.heads
            );
        }
        Ok(h / self.heads)
    }
}

impl CustomOp2 for SplitHeads {
    fn name(&self) -> &'static str {
        "fused-bias-split-heads"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let y = input(op, "projection", s1, l1)?;
        let bias = input(op, "bias", s2, l2)?;
        let h = bias.len();
        let d = self.check(op, y.len(), h)?;
        let (t, heads) = (self.seq, self.heads);
        let mut out = vec![0f32; y.len()];
        if !out.is_empty() {
            // One task per (sequence, head): t rows of d.
            out.par_chunks_mut(t * d).enumerate().for_each(|(i, o)| {
                let (bi, hi) = (i / heads, i % heads);
                let bias = &bias[hi * d..(hi + 1) * d];
                for (ti, orow) in o.chunks_exact_mut(d).enumerate() {
                    let src = &y[(bi * t + ti) * h + hi * d..][..d];
                    for ((a, v), c) in orow.iter_mut().zip(src).zip(bias) {
                        *a = *v + *c;
                    }
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from((self.batch, heads, t, d))))
    }

    fn bwd(
        &self,
        y: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = y.elem_count();
        let h = bias.elem_count();
        let packed = grad.contiguous()?.apply_op1_no_bwd(&MergeHeadsBwd {
            batch: self.batch,
            seq: self.seq,
            heads: self.heads,
            width: h,
        })?;
        let dy = packed.narrow(0, 0, n)?.reshape(y.shape())?;
        let db = packed.narrow(0, n, h)?.reshape(bias.shape())?;
        Ok((Some(dy), Some(db)))
    }
}

/// [`SplitHeads`]' backward: `[b, heads, t, d]` gradient → `[dy ([b·t, heads·d], flattened), dbias]`.
struct MergeHeadsBwd {
    batch: usize,
    seq: usize,
    heads: usize,
    width: usize,
}

impl candle_core::CustomOp1 for MergeHeadsBwd {
    fn name(&self) -> &'static str {
        "fused-bias-split-heads-backward"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let g = input(op, "gradient", s1, l1)?;
        let h = self.width;
        let split = SplitHeads {
            batch: self.batch,
            seq: self.seq,
            heads: self.heads,
        };
        let d = split.check(op, g.len(), h)?;
        let (t, heads) = (self.seq, self.heads);
        let n = g.len();
        let mut out = vec![0f32; n + h];
        let (dy, db) = out.split_at_mut(n);
        let rows = rows_per_task(h);
        let partials: Vec<Vec<f32>> = dy
            .par_chunks_mut(rows * h)
            .enumerate()
            .map(|(c, chunk)| {
                let mut part = vec![0f32; h];
                for (k, row) in chunk.chunks_exact_mut(h).enumerate() {
                    let r = c * rows + k;
                    let (bi, ti) = (r / t, r % t);
                    for hi in 0..heads {
                        let src = &g[((bi * heads + hi) * t + ti) * d..][..d];
                        row[hi * d..(hi + 1) * d].copy_from_slice(src);
                    }
                    for (a, v) in part.iter_mut().zip(row.iter()) {
                        *a += *v;
                    }
                }
                part
            })
            .collect();
        for part in &partials {
            for (a, p) in db.iter_mut().zip(part) {
                *a += *p;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n + h)))
    }
}

/// `y + bias` (`y` is `[batch·seq, heads·d]`) rearranged to `[batch, heads, seq, d]`: a query, key or value
/// projection split into attention heads in one pass. Differentiable in `y` and `bias`.
pub fn bias_split_heads(
    y: &Tensor,
    bias: &Tensor,
    batch: usize,
    seq: usize,
    heads: usize,
) -> Result<Tensor> {
    y.contiguous()?
        .apply_op2(&bias.contiguous()?, SplitHeads { batch, seq, heads })
}
