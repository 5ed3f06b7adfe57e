//! The element-wise building blocks of the engine, public so that training's fused ops (embedkit-train) use
//! the same code: a branch-free `exp`/`erf`, 16-lane sums, and the run-time choice of instruction set.
//!
//! Bodies written over [`MulAdd`] compile to fused multiply-adds with [`Fused`] and to separate multiply and
//! add with [`Unfused`]; the latter gives the same bits at every [`SimdLevel`](crate::SimdLevel), which is
//! what training uses so that a run's losses do not depend on the CPU it ran on.
//!
//! [`multiversion!`](crate::multiversion) defines `fn name(level: SimdLevel, args…)` that runs an
//! `#[inline(always)]` body compiled for AVX-512, AVX2 or the baseline, whichever `level` says.

pub use crate::kernels::{dot16, erf, fast_exp, fast_exp_or_zero, max16, sum16};
pub use crate::multiversion;
pub use crate::simd::{Fused, MulAdd, Unfused};
