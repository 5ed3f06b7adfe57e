//! Centroid distance: how far the mean of the current vectors moved from the mean of the reference, as a
//! Euclidean distance and as a cosine distance, each with a permutation null (relabel the pooled vectors, keep
//! the group sizes). Cheap and easy to explain; blind to changes that keep the mean (a topic mix that rotates
//! around the same centre), which is what MMD is for.

use crate::rng::SplitMix64;
use rayon::prelude::*;

/// What the centroid test found.
#[derive(Debug, Clone, PartialEq)]
pub struct CentroidResult {
    /// ‖mean(current) − mean(reference)‖.
    pub euclidean: f64,
    /// Permutation p-value of the Euclidean distance.
    pub p_value: f64,
    /// 1 − cos(mean(current), mean(reference)).
    pub cosine: f64,
    /// Permutation p-value of the cosine distance.
    pub cosine_p_value: f64,
}

/// The centroid test of `x` (`nx × d`) against `y` (`ny × d`) with `permutations` relabellings.
///
/// A relabelling only needs the sum of its smaller group (`|A|·d` additions): the other group's sum is the
/// pooled total minus it.
pub fn centroid_test(
    x: &[f32],
    nx: usize,
    y: &[f32],
    ny: usize,
    d: usize,
    permutations: usize,
    seed: u64,
) -> CentroidResult {
    let n = nx + ny;
    let row = |i: usize| if i < nx { &x[i * d..(i + 1) * d] } else { &y[(i - nx) * d..(i - nx + 1) * d] };
    let mut total = vec![0.0f64; d];
    for i in 0..n {
        for (t, &v) in total.iter_mut().zip(row(i)) {
            *t += v as f64;
        }
    }
    let small_is_x = nx <= ny;
    let m = nx.min(ny);
    let distances = |group: &[usize]| -> (f64, f64) {
        let mut sa = vec![0.0f64; d];
        for &i in group {
            for (t, &v) in sa.iter_mut().zip(row(i)) {
                *t += v as f64;
            }
        }
        let (na, nb) = (m as f64, (n - m) as f64);
        let (mut e, mut dot, mut qa, mut qb) = (0.0, 0.0, 0.0, 0.0);
        for j in 0..d {
            let ma = sa[j] / na;
            let mb = (total[j] - sa[j]) / nb;
            e += (ma - mb) * (ma - mb);
            dot += ma * mb;
            qa += ma * ma;
            qb += mb * mb;
        }
        let cos = if qa > 0.0 && qb > 0.0 { dot / (qa.sqrt() * qb.sqrt()) } else { 1.0 };
        (e.sqrt(), 1.0 - cos)
    };
    let observed_group: Vec<usize> = if small_is_x { (0..nx).collect() } else { (nx..n).collect() };
    let (e_obs, c_obs) = distances(&observed_group);
    let (ge, gc) = (0..permutations)
        .into_par_iter()
        .map(|b| {
            let mut rng = SplitMix64::stream(seed, 0xCE00_0000 + b as u64);
            let mut idx: Vec<usize> = (0..n).collect();
            rng.choose_into(&mut idx, m);
            idx.truncate(m);
            let (e, c) = distances(&idx);
            (usize::from(e >= e_obs), usize::from(c >= c_obs))
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let p = |c: usize| (1.0 + c as f64) / (permutations as f64 + 1.0);
    CentroidResult { euclidean: e_obs, p_value: p(ge), cosine: c_obs, cosine_p_value: p(gc) }
}
