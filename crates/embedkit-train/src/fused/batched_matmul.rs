//! Batched matrix products for attention, one matrix pair per thread.

use super::input;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

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
