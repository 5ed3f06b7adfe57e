//! A tiny seedable generator whose whole state is one `u64`, so checkpoints can save and restore it exactly.

/// SplitMix64's state increment (the golden ratio in 64 bits).
pub(crate) const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function of a state.
#[inline(always)]
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `[0, 1)` float `next_f32` makes of 64 random bits.
#[inline(always)]
pub(crate) fn unit_f32(bits: u64) -> f32 {
    (bits >> 40) as f32 / (1u64 << 24) as f32
}

/// SplitMix64 (Steele, Lea & Flood 2014): fast, good enough for dropout masks and shuffling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64 {
    /// The full generator state.
    pub state: u64,
}

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// A uniform float in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        unit_f32(self.next_u64())
    }

    /// Fills `out` with a dropout mask — 0 where the next draw is below `p`, else `keep` — exactly as `out.len()`
    /// calls of `next_f32` would, and leaves the generator where they would. SplitMix64's i-th output depends
    /// only on `state + i·γ`, so the draws are computed in parallel (and vectorized) instead of one by one.
    pub fn dropout_mask(&mut self, out: &mut [f32], p: f32, keep: f32) {
        crate::fused::dropout_fill(self.state, out, p, keep);
        self.state = self
            .state
            .wrapping_add(GAMMA.wrapping_mul(out.len() as u64));
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}
