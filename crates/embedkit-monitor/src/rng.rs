//! A small seeded generator: every random choice in a drift test (subsamples, permutations, folds, k-means
//! seeds) comes from one `u64` seed, so a run is reproducible bit for bit.

/// SplitMix64 (Steele, Lea & Flood 2014): one `u64` of state, passes BigCrush, and is what embedkit-train uses.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// An independent stream for sub-task `k`: mixing the stream number in keeps, say, the permutations of
    /// one method from depending on how many draws another method made.
    pub fn stream(seed: u64, k: u64) -> Self {
        let mut g = Self::new(seed ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03));
        g.next_u64();
        g
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (Lemire's multiply-shift; the bias is below 2⁻³² for any n used here).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A uniform float in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }

    /// `k` distinct indices of `0..n`, uniformly (a partial Fisher–Yates over `scratch`, which must hold
    /// `0..n` in any order on entry and still holds a permutation of it on return).
    pub fn choose_into<T>(&mut self, scratch: &mut [T], k: usize) {
        let n = scratch.len();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            scratch.swap(i, j);
        }
    }
}

/// `k` distinct indices of `0..n` in increasing order, or all of them when `k ≥ n`.
pub fn subsample(n: usize, k: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if k >= n {
        return idx;
    }
    rng.choose_into(&mut idx, k);
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsample_is_distinct_sorted_and_seeded() {
        let a = subsample(1000, 100, &mut SplitMix64::new(7));
        let b = subsample(1000, 100, &mut SplitMix64::new(7));
        let c = subsample(1000, 100, &mut SplitMix64::new(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            subsample(5, 10, &mut SplitMix64::new(1)),
            vec![0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut g = SplitMix64::new(3);
        let mut counts = [0usize; 10];
        for _ in 0..100_000 {
            counts[g.below(10)] += 1;
        }
        // 10,000 expected each; 5 standard deviations is ±475.
        assert!(
            counts.iter().all(|&c| (9_525..=10_475).contains(&c)),
            "{counts:?}"
        );
    }
}
