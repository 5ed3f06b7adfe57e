//! Dropout masks drawn in parallel from the trainer's SplitMix64 stream, equal to drawing them one by one.

use super::{TASK_ELEMS, level};
use embedkit_cpu::elementwise::multiversion;
use rayon::prelude::*;

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
