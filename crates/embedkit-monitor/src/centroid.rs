//! Centroid distance: how far the mean of the current vectors moved from the mean of the reference, as a
//! Euclidean distance and as a cosine distance, each with a permutation null (relabel the pooled vectors, keep
//! the group sizes). Cheap and easy to explain; blind to changes that keep the mean (a topic mix that rotates
//! around the same centre), which is what MMD is for.

use crate::permutation::{NullDistribution, observed_labels};
use rayon::prelude::*;

/// What the centroid test found.
#[derive(Debug, Clone, PartialEq)]
pub struct CentroidResult {
    /// ‖mean(current) − mean(reference)‖ on the observed split and under each relabelling.
    pub euclidean: NullDistribution,
    /// 1 − cos(mean(current), mean(reference)), likewise.
    pub cosine: NullDistribution,
}

/// The centroid test of `x` (`nx × d`) against `y` (`ny × d`) under the shared `relabellings` (`true` = current).
///
/// A relabelling only needs the sum of its smaller group (`|A|·d` additions): the other group's sum is the
/// pooled total minus it.
pub fn centroid_test(
    x: &[f32],
    nx: usize,
    y: &[f32],
    ny: usize,
    d: usize,
    relabellings: &[Vec<bool>],
) -> CentroidResult {
    let n = nx + ny;
    let row = |i: usize| {
        if i < nx {
            &x[i * d..(i + 1) * d]
        } else {
            &y[(i - nx) * d..(i - nx + 1) * d]
        }
    };
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
        let cos = if qa > 0.0 && qb > 0.0 {
            dot / (qa.sqrt() * qb.sqrt())
        } else {
            1.0
        };
        (e.sqrt(), 1.0 - cos)
    };
    let small_label = !small_is_x;
    let group =
        |labels: &[bool]| -> Vec<usize> { (0..n).filter(|&i| labels[i] == small_label).collect() };
    let (e_obs, c_obs) = distances(&group(&observed_labels(nx, ny)));
    let (e_perm, c_perm): (Vec<f64>, Vec<f64>) = relabellings
        .par_iter()
        .map(|l| distances(&group(l)))
        .unzip();
    CentroidResult {
        euclidean: NullDistribution {
            observed: e_obs,
            permuted: e_perm,
        },
        cosine: NullDistribution {
            observed: c_obs,
            permuted: c_perm,
        },
    }
}
