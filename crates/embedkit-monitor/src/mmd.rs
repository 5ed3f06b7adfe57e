//! Maximum mean discrepancy with a Gaussian RBF kernel, as alibi-detect's `MMDDrift` computes it: the kernel's
//! bandwidth by the median heuristic over the pooled sample, the unbiased MMD² estimate, and a permutation
//! p-value `(1 + #{MMD²_perm ≥ MMD²_obs}) / (B + 1)` (alibi-detect's own `#{≥}/B` can be 0, which no test with B
//! permutations can honestly report). The same kernel matrix gives the witness function: which current vectors
//! the reference explains worst, and which reference vectors the current sample no longer covers.

use crate::permutation::{NullDistribution, observed_labels};
use embedkit_vectors::simd;
use rayon::prelude::*;

/// The pooled kernel matrix of a reference sample (rows `0..nx`) and a current sample (rows `nx..nx+ny`).
#[derive(Debug, Clone)]
pub struct KernelMatrix {
    nx: usize,
    ny: usize,
    /// `k(zᵢ, zⱼ)` row-major, diagonal zeroed (the unbiased estimate never pairs a vector with itself).
    k: Vec<f32>,
    /// Row sums of `k`, in f64.
    row_sums: Vec<f64>,
    /// The bandwidth σ of `exp(-‖x-y‖² / (2σ²))`.
    pub sigma: f64,
}

/// Squared Euclidean distances of all rows of `z` (`n × d`, row-major) to each other, through the Gram matrix
/// (`‖x‖² + ‖y‖² - 2x·y`, clamped at 1e-30 as alibi-detect's `squared_pairwise_distance` clamps).
pub fn pairwise_sq_distances(z: &[f32], n: usize, d: usize) -> Vec<f32> {
    let kern = simd::active();
    let mut g = vec![0.0f32; n * n];
    // Blocks of 64 rows against all rows: `dot_many` tiles them in registers; rayon spreads the blocks.
    const BLOCK: usize = 64;
    g.par_chunks_mut(BLOCK * n)
        .enumerate()
        .for_each(|(b, out)| {
            let rows = out.len() / n;
            let q = &z[b * BLOCK * d..(b * BLOCK + rows) * d];
            kern.dot_many(q, z, d, out);
        });
    let norms: Vec<f32> = (0..n).map(|i| g[i * n + i]).collect();
    g.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, v) in row.iter_mut().enumerate() {
            let dist = norms[i] as f64 + norms[j] as f64 - 2.0 * *v as f64;
            *v = dist.max(1e-30) as f32;
        }
    });
    g
}

/// The median-heuristic bandwidth exactly as alibi-detect's `sigma_median` when the kernel is evaluated on the
/// pooled sample against itself (as `MMDDrift` does): `sqrt(0.5 · s[N + (N² − N)/2 − 1])`, `s` the sorted flattened
/// N×N distance matrix. With the N near-zero diagonal entries first and every pair twice, that element is pair
/// number `(P − 1) / 2` in ascending order, `P = N(N−1)/2` (the lower median of the pairs).
pub fn median_sigma(dist: &[f32], n: usize) -> f64 {
    let mut upper: Vec<f32> = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        upper.extend_from_slice(&dist[i * n + i + 1..(i + 1) * n]);
    }
    if upper.is_empty() {
        return 0.0;
    }
    let t = (upper.len() - 1) / 2;
    let (_, v, _) = upper.select_nth_unstable_by(t, f32::total_cmp);
    (0.5 * *v as f64).sqrt()
}

impl KernelMatrix {
    /// The kernel matrix of `x` (`nx × d`) stacked over `y` (`ny × d`); `sigma` = `None` for the median heuristic.
    pub fn new(x: &[f32], nx: usize, y: &[f32], ny: usize, d: usize, sigma: Option<f64>) -> Self {
        let n = nx + ny;
        let mut z = Vec::with_capacity(n * d);
        z.extend_from_slice(x);
        z.extend_from_slice(y);
        let mut k = pairwise_sq_distances(&z, n, d);
        drop(z);
        let sigma = sigma.unwrap_or_else(|| median_sigma(&k, n));
        // σ = 0 only when over half the pairs are identical vectors; any positive bandwidth then tells them apart.
        let gamma = if sigma > 0.0 {
            1.0 / (2.0 * sigma * sigma)
        } else {
            1.0
        };
        k.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            for (j, v) in row.iter_mut().enumerate() {
                *v = if i == j {
                    0.0
                } else {
                    (-(*v as f64) * gamma).exp() as f32
                };
            }
        });
        let row_sums = k
            .par_chunks(n)
            .map(|row| row.iter().map(|&v| v as f64).sum())
            .collect();
        Self {
            nx,
            ny,
            k,
            row_sums,
            sigma,
        }
    }

    fn n(&self) -> usize {
        self.nx + self.ny
    }

    fn row(&self, i: usize) -> &[f32] {
        let n = self.n();
        &self.k[i * n..(i + 1) * n]
    }

    /// Sums of the kernel over (x, x), (y, y) and (x, y) pairs of the observed split, in f64.
    fn block_sums(&self) -> (f64, f64, f64) {
        let (nx, n) = (self.nx, self.n());
        let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
        for i in 0..n {
            let row = self.row(i);
            let left: f64 = row[..nx].iter().map(|&v| v as f64).sum();
            let right: f64 = row[nx..].iter().map(|&v| v as f64).sum();
            if i < nx {
                sxx += left;
                sxy += right;
            } else {
                syy += right;
            }
        }
        (sxx, syy, sxy)
    }

    /// The unbiased MMD² of the observed split (alibi-detect's `mmd2_from_kernel_matrix`).
    pub fn mmd2(&self) -> f64 {
        let (sxx, syy, sxy) = self.block_sums();
        mmd2_from_sums(sxx, syy, sxy, self.nx, self.ny)
    }

    /// The statistic on the observed split and under each relabelling (`true` = current), for the permutation
    /// p-value `(1 + #{≥ observed}) / (B + 1)`.
    ///
    /// Only the smaller group `A` of a relabelling is summed: `S_AA = Σ_{i∈A} kᵢ·1_A` costs `|A|·N` (a SIMD dot of
    /// each row with a 0/1 mask), and the other two block sums follow from the row sums: `S_AB = Σ_{i∈A} Rᵢ −
    /// S_AA`, `S_BB = S − 2·S_AB − S_AA`. The observed split goes through the same arithmetic, so rounding can
    /// never decide a comparison one way for the observation and the other way for an identical relabelling.
    pub fn null_distribution(&self, relabellings: &[Vec<bool>]) -> NullDistribution {
        let small_is_x = self.nx <= self.ny;
        // The smaller sample's label: false = reference (x), true = current (y).
        let small_label = !small_is_x;
        let group = |labels: &[bool]| -> Vec<usize> {
            (0..labels.len())
                .filter(|&i| labels[i] == small_label)
                .collect()
        };
        let observed = self.stat_for_group(&group(&observed_labels(self.nx, self.ny)), small_is_x);
        let permuted = relabellings
            .par_iter()
            .map(|l| self.stat_for_group(&group(l), small_is_x))
            .collect();
        NullDistribution { observed, permuted }
    }

    /// MMD² when `group` (of the smaller size) plays the smaller sample.
    fn stat_for_group(&self, group: &[usize], small_is_x: bool) -> f64 {
        let n = self.n();
        let kern = simd::active();
        let mut mask = vec![0.0f32; n];
        for &i in group {
            mask[i] = 1.0;
        }
        let mut s_aa = 0.0f64;
        let mut r_a = 0.0f64;
        for &i in group {
            s_aa += kern.dot(self.row(i), &mask) as f64;
            r_a += self.row_sums[i];
        }
        let total: f64 = self.row_sums.iter().sum();
        let s_ab = r_a - s_aa;
        let s_bb = total - 2.0 * s_ab - s_aa;
        if small_is_x {
            mmd2_from_sums(s_aa, s_bb, s_ab, self.nx, self.ny)
        } else {
            mmd2_from_sums(s_bb, s_aa, s_ab, self.nx, self.ny)
        }
    }

    /// The witness function at every vector, `mean_x k(·, x) − mean_y k(·, y)` (leaving the vector itself out):
    /// negative where the current sample is denser than the reference. Returns (reference, current) values.
    pub fn witness(&self) -> (Vec<f64>, Vec<f64>) {
        let (nx, ny, n) = (self.nx, self.ny, self.n());
        let w: Vec<f64> = (0..n)
            .into_par_iter()
            .map(|i| {
                let row = self.row(i);
                let sx: f64 = row[..nx].iter().map(|&v| v as f64).sum();
                let sy: f64 = row[nx..].iter().map(|&v| v as f64).sum();
                let (cx, cy) = if i < nx { (nx - 1, ny) } else { (nx, ny - 1) };
                sx / cx.max(1) as f64 - sy / cy.max(1) as f64
            })
            .collect();
        let (a, b) = w.split_at(nx);
        (a.to_vec(), b.to_vec())
    }
}

/// `S_xx/(nx(nx−1)) + S_yy/(ny(ny−1)) − 2·S_xy/(nx·ny)` with zero-diagonal block sums.
fn mmd2_from_sums(sxx: f64, syy: f64, sxy: f64, nx: usize, ny: usize) -> f64 {
    let (nx, ny) = (nx as f64, ny as f64);
    sxx / (nx * (nx - 1.0)) + syy / (ny * (ny - 1.0)) - 2.0 * sxy / (nx * ny)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::rng::SplitMix64;

    #[test]
    fn permuted_group_arithmetic_matches_direct_sums() {
        // The row-sum shortcut must give the directly summed statistic for the observed split.
        let mut rng = SplitMix64::new(1);
        let d = 5;
        let x: Vec<f32> = (0..12 * d).map(|_| rng.next_f64() as f32).collect();
        let y: Vec<f32> = (0..7 * d).map(|_| rng.next_f64() as f32 + 0.3).collect();
        let km = KernelMatrix::new(&x, 12, &y, 7, d, None);
        let direct = km.mmd2();
        let via_group = km.stat_for_group(&(12..19).collect::<Vec<_>>(), false);
        assert!(
            (direct - via_group).abs() < 1e-6 * direct.abs().max(1e-3),
            "{direct} vs {via_group}"
        );
        let km2 = KernelMatrix::new(&y, 7, &x, 12, d, None);
        let via_x = km2.stat_for_group(&(0..7).collect::<Vec<_>>(), true);
        assert!((km2.mmd2() - via_x).abs() < 1e-6 * via_x.abs().max(1e-3));
    }
}
