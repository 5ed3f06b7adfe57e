//! The activations of an encoder forward pass, kept between batches.
//!
//! A batch of 32 short texts needs ~13 MB of activations for all-MiniLM-L6-v2 (Q/K/V, attention context,
//! attention output, the feed-forward layer); allocated and zeroed per batch they were 2–3 % of an int8 run on
//! a Zen 5 (`memset` and the page faults of memory the allocator had handed back to the system). A backend
//! keeps a few sets here and a batch borrows one: every kernel writes all of the rows it is given, so a
//! reused buffer's old contents are never read.

use crate::int8::QuantScratch;
use std::sync::{Mutex, PoisonError};

/// Buffer sets above this many bytes go back to the allocator after their batch instead of to the pool: a
/// server that once embedded a batch of long texts should not hold its activations (hundreds of MB for
/// all-mpnet-base-v2) for good, and at that size allocation is a vanishing part of the batch's time.
const KEEP_AT_MOST_BYTES: usize = 64 << 20;

/// One batch's activation buffers, sized by [`ForwardBuffers::prepare`].
#[derive(Default)]
pub(crate) struct ForwardBuffers {
    /// Q, K and V of every token (`tokens × 3·hidden`).
    pub(crate) qkv: Vec<f32>,
    /// Attention's output before its projection (`tokens × hidden`).
    pub(crate) context: Vec<f32>,
    /// A projection's output, swapped with the hidden states after each residual LayerNorm.
    pub(crate) projected: Vec<f32>,
    /// The feed-forward layer's intermediate activations (`tokens × intermediate`).
    pub(crate) intermediate: Vec<f32>,
    /// int8 layers' quantized activations.
    pub(crate) scratch: QuantScratch,
}

impl ForwardBuffers {
    /// Sizes every buffer for `tokens` tokens. Only growth is zero-filled: contents left from an earlier
    /// batch stay, and the kernels overwrite them.
    pub(crate) fn prepare(&mut self, tokens: usize, hidden: usize, intermediate: usize) {
        self.qkv.resize(tokens * 3 * hidden, 0.0);
        self.context.resize(tokens * hidden, 0.0);
        self.projected.resize(tokens * hidden, 0.0);
        self.intermediate.resize(tokens * intermediate, 0.0);
    }

    /// Bytes the f32 buffers hold.
    fn bytes(&self) -> usize {
        (self.qkv.capacity()
            + self.context.capacity()
            + self.projected.capacity()
            + self.intermediate.capacity())
            * std::mem::size_of::<f32>()
    }
}

/// Buffer sets free for the next batch: at most one per batch that ran at the same time.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: Mutex<Vec<ForwardBuffers>>,
}

impl BufferPool {
    /// A free set, or a new empty one.
    pub(crate) fn take(&self) -> ForwardBuffers {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default()
    }

    /// Returns a set after its batch; sets above [`KEEP_AT_MOST_BYTES`] are freed instead.
    pub(crate) fn give_back(&self, buffers: ForwardBuffers) {
        if buffers.bytes() <= KEEP_AT_MOST_BYTES {
            self.free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(buffers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sets_are_reused_and_large_ones_freed() {
        let pool = BufferPool::default();
        let mut small = pool.take();
        small.prepare(10, 4, 8);
        let qkv_ptr = small.qkv.as_ptr();
        pool.give_back(small);
        let again = pool.take();
        assert_eq!(again.qkv.as_ptr(), qkv_ptr, "the small set comes back");
        assert_eq!(again.qkv.len(), 120);

        let mut large = again;
        // 3·h + h + h + i = 6·1024 + 4096 floats per token, 40 KiB: 2,000 tokens are ~80 MB.
        large.prepare(2_000, 1_024, 4_096);
        assert!(large.bytes() > KEEP_AT_MOST_BYTES);
        pool.give_back(large);
        assert!(
            pool.take().qkv.is_empty(),
            "the large set was freed, not kept"
        );
    }
}
