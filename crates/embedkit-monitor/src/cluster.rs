//! Where the mass moved: k-means clusters of the reference (k-means++ seeding, Lloyd iterations, all seeded),
//! each cluster's share of the reference and of the current sample, the Hellinger distance between the two share
//! vectors and a χ² test of homogeneity on the counts. A cluster is named by its most central reference rows
//! (the caller turns them into texts).

use crate::rng::SplitMix64;
use crate::stats::chi2_sf;
use embedkit_vectors::simd;
use rayon::prelude::*;
use serde::Serialize;

/// One reference cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    /// Cluster number (0-based).
    pub id: usize,
    /// Share of the reference vectors nearest this centre.
    pub reference_share: f64,
    /// Share of the current vectors nearest this centre.
    pub current_share: f64,
    /// Reference rows nearest the centre, closest first (indices into the reference given to [`cluster_shift`]).
    pub central: Vec<usize>,
}

/// The cluster report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterShift {
    /// The clusters, largest change of share first.
    pub clusters: Vec<Cluster>,
    /// Hellinger distance between the reference and current share vectors (0 = same mix, 1 = disjoint).
    pub hellinger: f64,
    /// χ² statistic of homogeneity of the 2 × K count table.
    pub chi2: f64,
    /// Its p-value (K' − 1 degrees of freedom, K' = clusters holding any vector).
    pub chi2_p_value: f64,
    /// The cluster centres, `k × d` row-major (for profiles: new samples are assigned to them).
    #[serde(skip)]
    pub centres: Vec<f32>,
}

/// k-means of `x` (`n × d`) into `k` clusters: centres (`k' × d`, k' = min(k, n)) and the assignment of each row.
pub fn kmeans(
    x: &[f32],
    n: usize,
    d: usize,
    k: usize,
    seed: u64,
    max_iter: usize,
) -> (Vec<f32>, Vec<usize>) {
    let k = k.min(n).max(1);
    let mut rng = SplitMix64::stream(seed, 0x6B6D);
    let row = |i: usize| &x[i * d..(i + 1) * d];
    // k-means++: each next centre drawn with probability proportional to the squared distance to the nearest one.
    let mut centres = Vec::with_capacity(k * d);
    centres.extend_from_slice(row(rng.below(n)));
    let mut nearest = vec![f64::INFINITY; n];
    for c in 1..k {
        let last = &centres[(c - 1) * d..c * d];
        nearest.par_iter_mut().enumerate().for_each(|(i, best)| {
            *best = best.min(sq_dist(row(i), last));
        });
        let total: f64 = nearest.iter().sum();
        let pick = if total > 0.0 {
            let mut target = rng.next_f64() * total;
            let mut chosen = n - 1;
            for (i, &w) in nearest.iter().enumerate() {
                if target < w {
                    chosen = i;
                    break;
                }
                target -= w;
            }
            chosen
        } else {
            rng.below(n)
        };
        centres.extend_from_slice(row(pick));
    }
    let mut assign = assign_to(x, n, d, &centres);
    for _ in 0..max_iter {
        let mut sums = vec![0.0f64; k * d];
        let mut counts = vec![0usize; k];
        for (i, &c) in assign.iter().enumerate() {
            counts[c] += 1;
            for (s, &v) in sums[c * d..(c + 1) * d].iter_mut().zip(row(i)) {
                *s += v as f64;
            }
        }
        for c in 0..k {
            // An emptied cluster keeps its old centre rather than collapsing to the origin.
            if counts[c] > 0 {
                for j in 0..d {
                    centres[c * d + j] = (sums[c * d + j] / counts[c] as f64) as f32;
                }
            }
        }
        let next = assign_to(x, n, d, &centres);
        if next == assign {
            break;
        }
        assign = next;
    }
    (centres, assign)
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| ((x - y) as f64).powi(2))
        .sum()
}

/// The nearest centre of every row of `x` (`n × d`).
pub fn assign_to(x: &[f32], n: usize, d: usize, centres: &[f32]) -> Vec<usize> {
    let kern = simd::active();
    let k = centres.len() / d;
    let cnorm: Vec<f32> = (0..k)
        .map(|c| kern.dot(&centres[c * d..(c + 1) * d], &centres[c * d..(c + 1) * d]))
        .collect();
    (0..n)
        .into_par_iter()
        .map(|i| {
            let r = &x[i * d..(i + 1) * d];
            // ‖r − c‖² = ‖r‖² − 2r·c + ‖c‖²; ‖r‖² is the same for every c.
            (0..k)
                .map(|c| {
                    (
                        c,
                        cnorm[c] - 2.0 * kern.dot(r, &centres[c * d..(c + 1) * d]),
                    )
                })
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(c, _)| c)
        })
        .collect()
}

/// Clusters the reference `x` (`nx × d`) into `k` and compares its cluster shares with those of `y` (`ny × d`).
pub fn cluster_shift(
    x: &[f32],
    nx: usize,
    y: &[f32],
    ny: usize,
    d: usize,
    k: usize,
    seed: u64,
) -> ClusterShift {
    let (centres, ax) = kmeans(x, nx, d, k, seed, 100);
    compare_shares(x, nx, &ax, y, ny, d, centres)
}

/// Shares, Hellinger and χ² of a reference whose rows were assigned to `centres` (`ax`) against `y`.
pub fn compare_shares(
    x: &[f32],
    nx: usize,
    ax: &[usize],
    y: &[f32],
    ny: usize,
    d: usize,
    centres: Vec<f32>,
) -> ClusterShift {
    let k = centres.len() / d;
    let ay = assign_to(y, ny, d, &centres);
    let mut cx = vec![0usize; k];
    let mut cy = vec![0usize; k];
    ax.iter().for_each(|&c| cx[c] += 1);
    ay.iter().for_each(|&c| cy[c] += 1);
    let (hellinger, chi2, chi2_p_value) = share_tests(&cx, &cy);
    let mut clusters: Vec<Cluster> = (0..k)
        .map(|c| {
            let centre = &centres[c * d..(c + 1) * d];
            let mut members: Vec<(usize, f64)> = (0..nx)
                .filter(|&i| ax[i] == c)
                .map(|i| (i, sq_dist(&x[i * d..(i + 1) * d], centre)))
                .collect();
            members.sort_by(|a, b| a.1.total_cmp(&b.1));
            Cluster {
                id: c,
                reference_share: cx[c] as f64 / nx.max(1) as f64,
                current_share: cy[c] as f64 / ny.max(1) as f64,
                central: members.iter().take(3).map(|m| m.0).collect(),
            }
        })
        .collect();
    clusters.sort_by(|a, b| {
        let da = (a.current_share - a.reference_share).abs();
        let db = (b.current_share - b.reference_share).abs();
        db.total_cmp(&da)
    });
    ClusterShift {
        clusters,
        hellinger,
        chi2,
        chi2_p_value,
        centres,
    }
}

/// Hellinger distance of the two count vectors' shares, and the χ² test of homogeneity of the 2 × K table
/// (columns empty in both dropped), as `scipy.stats.chi2_contingency` computes it for more than one dof.
pub fn share_tests(cx: &[usize], cy: &[usize]) -> (f64, f64, f64) {
    let (nx, ny) = (
        cx.iter().sum::<usize>() as f64,
        cy.iter().sum::<usize>() as f64,
    );
    let bc: f64 = cx
        .iter()
        .zip(cy)
        .map(|(&a, &b)| ((a as f64 / nx) * (b as f64 / ny)).sqrt())
        .sum();
    let hellinger = (1.0 - bc).max(0.0).sqrt();
    let n = nx + ny;
    let mut chi2 = 0.0;
    let mut cols = 0usize;
    for (&a, &b) in cx.iter().zip(cy) {
        let col = (a + b) as f64;
        if col == 0.0 {
            continue;
        }
        cols += 1;
        let ea = nx * col / n;
        let eb = ny * col / n;
        chi2 += (a as f64 - ea).powi(2) / ea + (b as f64 - eb).powi(2) / eb;
    }
    let dof = cols.saturating_sub(1);
    let p = if dof == 0 {
        1.0
    } else {
        chi2_sf(chi2, dof as f64)
    };
    (hellinger, chi2, p)
}
