//! Fused LayerNorm, masked scaled softmax and bias+GELU as candle custom ops with hand-written backward passes.
//!
//! Spelled out from candle's element-wise ops, each of these is 5–10 ops forward and as many backward, every
//! one allocating a fresh tensor and making a full pass over it; in training that was more time than the
//! matmuls' own share (docs/PERFORMANCE.md, "Training throughput"). Here each is one pass forward and one
//! backward, parallel over rows on the current rayon pool (the trainer's `--threads` pool), with loops written
//! so they vectorize (fixed-width partial sums, a branch-free `exp`/`erf`) and compiled for AVX2/AVX-512 when
//! the CPU has them. Work is split into chunks of a fixed number of rows and per-chunk partial sums are added in
//! order, so results do not depend on the thread count or on scheduling: a run and its resume stay identical.
//!
//! The ops take contiguous f32 CPU tensors (what the BERT in `model` feeds them) and say so in their error
//! otherwise.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor, bail};
use embedkit_cpu::SimdLevel;
use embedkit_cpu::elementwise::{
    Unfused, dot16, erf, fast_exp_or_zero, max16, multiversion, sum16,
};
use rayon::prelude::*;

/// Elements per parallel task: big enough to amortize scheduling, small enough to balance two threads.
const TASK_ELEMS: usize = 16 * 1024;

/// Rows of `width` elements per parallel task.
fn rows_per_task(width: usize) -> usize {
    (TASK_ELEMS / width.max(1)).max(1)
}

/// The contiguous f32 data of one op input.
fn input<'a>(op: &str, what: &str, s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        bail!("{op}: {what} must be f32, got {:?}", s.dtype())
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("{op}: {what} must be contiguous"),
    }
}

/// The instruction set the kernels below run with: embedkit-cpu's choice (`EMBEDKIT_SIMD` caps it), made once.
/// Their bodies use separate multiplies and adds ([`Unfused`]), so every level computes the same bits and a
/// run's losses do not depend on the CPU.
fn level() -> SimdLevel {
    SimdLevel::cached()
}

// ---------------------------------------------------------------------------------------------------------
// LayerNorm

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

/// The width (last dimension) and row count of `l`, checked against a `[width]` parameter.
fn rows_of(op: &str, l: &Layout, width: usize) -> Result<usize> {
    let dims = l.dims();
    match dims.last() {
        Some(&w) if w == width && w > 0 => Ok(l.shape().elem_count() / w),
        _ => bail!("{op}: input of shape {dims:?} does not end in the parameters' {width}"),
    }
}

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

// ---------------------------------------------------------------------------------------------------------
// Masked scaled softmax

/// `softmax(scale · scores + mask) · drop` over the last dimension; inputs `(scores [b, .., tq, tk], mask [b, tk])`,
/// the mask additive (0 for real keys, a large negative number for padding) and broadcast over the middle
/// dimensions; `drop` is an optional dropout mask shaped like `scores` (0 or 1/(1−p)), held by the op so the
/// probabilities never exist as a separate undropped tensor.
struct MaskedSoftmax {
    scale: f32,
    drop: Option<Tensor>,
}

/// Runs `f` on the contiguous f32 data of a tensor the op holds (not one of its inputs).
fn with_data<R>(
    op: &str,
    what: &str,
    t: &Tensor,
    f: impl FnOnce(&[f32]) -> Result<R>,
) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cs) => f(input(op, what, cs, layout)?),
        _ => bail!("{op}: {what} must be on the CPU"),
    }
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

// ---------------------------------------------------------------------------------------------------------
// Bias + dropout + residual

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

// ---------------------------------------------------------------------------------------------------------
// Bias + GELU

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

// ---------------------------------------------------------------------------------------------------------
// Bias + split into heads

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

// ---------------------------------------------------------------------------------------------------------
// Dropout masks

/// Draws `start .. start + out.len()` of the SplitMix64 stream that begins at `state` into a dropout mask.
#[inline(always)]
fn dropout_fill_body(state: u64, start: u64, out: &mut [f32], p: f32, keep: f32) {
    use crate::rng::{GAMMA, mix, unit_f32};
    for (i, o) in out.iter_mut().enumerate() {
        // The (start + i)-th call of next_u64 first adds γ, so it sees state + (start + i + 1)·γ.
        let s = state.wrapping_add(GAMMA.wrapping_mul(start + i as u64 + 1));
        *o = if unit_f32(mix(s)) < p { 0.0 } else { keep };
    }
}
multiversion!(dropout_fill_chunk(state: u64, start: u64, out: &mut [f32], p: f32, keep: f32) => dropout_fill_body);

/// A dropout mask equal to `out.len()` successive `SplitMix64::next_f32` draws from `state`, in parallel.
pub(crate) fn dropout_fill(state: u64, out: &mut [f32], p: f32, keep: f32) {
    out.par_chunks_mut(TASK_ELEMS)
        .enumerate()
        .for_each(|(i, c)| dropout_fill_chunk(level(), state, (i * TASK_ELEMS) as u64, c, p, keep));
}

// ---------------------------------------------------------------------------------------------------------
// Batched matmul for attention

/// `op(a) · op(b)` for each of `batch` pairs of matrices, `op` a transpose where asked; inputs `a [batch, ., .]`,
/// `b [batch, ., .]`, both contiguous. candle runs a batched matmul as one gemm call per matrix pair, each split
/// over all threads: for attention that is 192 small `[256×32]·[32×256]` products per call, each paying a
/// thread synchronisation. Here whole pairs go to threads and each gemm runs on one.
struct BatchedMatmul {
    ta: bool,
    tb: bool,
}

impl BatchedMatmul {
    /// `(batch, m, k, n)` of the product, checked.
    fn dims(&self, op: &str, la: &Layout, lb: &Layout) -> Result<(usize, usize, usize, usize)> {
        let (ba, ra, ca) = la.shape().dims3()?;
        let (bb, rb, cb) = lb.shape().dims3()?;
        let (m, k) = if self.ta { (ca, ra) } else { (ra, ca) };
        let (k2, n) = if self.tb { (cb, rb) } else { (rb, cb) };
        if ba != bb || k != k2 {
            bail!(
                "{op}: cannot multiply {:?} by {:?} (transposed: {}, {})",
                la.dims(),
                lb.dims(),
                self.ta,
                self.tb
            );
        }
        Ok((ba, m, k, n))
    }
}

impl CustomOp2 for BatchedMatmul {
    fn name(&self) -> &'static str {
        "batched-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let op = self.name();
        let a = input(op, "lhs", s1, l1)?;
        let b = input(op, "rhs", s2, l2)?;
        let (batch, m, k, n) = self.dims(op, l1, l2)?;
        let mut c = vec![0f32; batch * m * n];
        if m * n > 0 {
            // Strides (row, column) of op(a) [m, k] and op(b) [k, n] in their row-major storage.
            let (a_rs, a_cs) = if self.ta { (1, m) } else { (k, 1) };
            let (b_rs, b_cs) = if self.tb { (1, k) } else { (n, 1) };
            c.par_chunks_mut(m * n).enumerate().for_each(|(i, ci)| {
                let ai = &a[i * m * k..(i + 1) * m * k];
                let bi = &b[i * k * n..(i + 1) * k * n];
                // SAFETY: the pointers cover m·k, k·n and m·n elements laid out with the strides given
                // (checked by `dims` against the inputs' shapes); `ci` is this task's own output block.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        ci.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        ai.as_ptr(),
                        a_cs as isize,
                        a_rs as isize,
                        bi.as_ptr(),
                        b_cs as isize,
                        b_rs as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            });
        }
        Ok((CpuStorage::F32(c), Shape::from((batch, m, n))))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        if self.ta {
            bail!("{}: no backward for a transposed lhs", self.name());
        }
        let g = grad.contiguous()?;
        let mm = |x: &Tensor, y: &Tensor, ta: bool, tb: bool| {
            x.apply_op2_no_bwd(y, &BatchedMatmul { ta, tb })
        };
        let (da, db) = if self.tb {
            // C = A·Bᵀ: dA = dC·B, dB = dCᵀ·A.
            (mm(&g, b, false, false)?, mm(&g, a, true, false)?)
        } else {
            // C = A·B: dA = dC·Bᵀ, dB = Aᵀ·dC.
            (mm(&g, b, false, true)?, mm(a, &g, true, false)?)
        };
        Ok((Some(da), Some(db)))
    }
}

/// `a · bᵀ` (with `transpose_b`) or `a · b` for each matrix pair of 3-D `a`, `b`, one pair per thread at a time.
/// Differentiable in both.
pub fn batched_matmul(a: &Tensor, b: &Tensor, transpose_b: bool) -> Result<Tensor> {
    a.contiguous()?.apply_op2(
        &b.contiguous()?,
        BatchedMatmul {
            ta: false,
            tb: transpose_b,
        },
    )
}
