//! Fused LayerNorm, masked scaled softmax, bias + dropout + residual, bias + GELU and the split into heads as
//! candle custom ops with hand-written backward passes, and attention's batched matmuls (one module each).
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
use candle_core::{CpuStorage, Layout, Result, Storage, Tensor, bail};
use embedkit_cpu::SimdLevel;

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

/// The instruction set the kernels run with: embedkit-cpu's choice (`EMBEDKIT_SIMD` caps it), made once. Their
/// bodies use separate multiplies and adds ([`Unfused`](embedkit_cpu::elementwise::Unfused)), so every level
/// computes the same bits and a run's losses do not depend on the CPU.
fn level() -> SimdLevel {
    SimdLevel::cached()
}

/// The width (last dimension) and row count of `l`, checked against a `[width]` parameter.
fn rows_of(op: &str, l: &Layout, width: usize) -> Result<usize> {
    let dims = l.dims();
    match dims.last() {
        Some(&w) if w == width && w > 0 => Ok(l.shape().elem_count() / w),
        _ => bail!("{op}: input of shape {dims:?} does not end in the parameters' {width}"),
    }
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

mod batched_matmul;
mod bias_dropout_add;
mod bias_gelu;
mod dropout;
mod heads;
mod layer_norm;
mod softmax;

pub use batched_matmul::batched_matmul;
pub use bias_dropout_add::bias_dropout_add;
pub use bias_gelu::bias_gelu;
pub(crate) use dropout::dropout_fill;
pub use heads::bias_split_heads;
pub use layer_norm::layer_norm;
pub use softmax::masked_softmax;
