//! x86-64 kernels for two levels: AVX2 + FMA (+ POPCNT) and AVX-512 (F + BW, with VPOPCNTDQ when present).
//!
//! Every function of the two levels (`avx2`, `avx512`) is a safe `#[target_feature]` function: calling one
//! is `unsafe` only because the CPU must have the features, which [`super::Kernels::new`] checks once at run
//! time. Inside, the only unsafe operations are unaligned loads whose bounds are argued in each SAFETY comment.
//!
//! The block kernels compute an `R rows × Q queries` tile of dot products at once: each row chunk loaded into
//! a register is reused for `Q` queries and each query chunk for `R` rows, which turns the scan from
//! load-bound into FMA-bound when several queries are searched together.

use std::arch::x86_64::*;

/// Asks the CPU to start loading `bytes` into L1 (one hint per cache line). The tile kernels walk a few
/// rows at once, a pattern the hardware prefetcher does not follow well, so the driver prefetches the next
/// tile's rows while the current tile computes.
pub(crate) fn prefetch(bytes: &[u8]) {
    for i in (0..bytes.len()).step_by(64) {
        // SAFETY: the pointer is inside `bytes`; a prefetch is only a hint and never faults or writes.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().add(i).cast()) };
    }
}

mod avx2;
mod avx512;

pub(crate) use avx2::*;
pub(crate) use avx512::*;
