//! A 2-D picture of both samples for the report: the first two principal components of the pooled rows (power
//! iteration with deflation, seeded start), at most 500 rows a side.

use crate::rng::SplitMix64;
use serde::Serialize;

/// One row in the plane of the first two principal components.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// First component.
    pub x: f32,
    /// Second component.
    pub y: f32,
    /// A current row (else a reference row).
    pub current: bool,
}

/// Projects the first `min(500, nx)` rows of `x` and `min(500, ny)` of `y` (both `· × d`) onto the top two
/// principal directions of those rows.
pub fn project(x: &[f32], nx: usize, y: &[f32], ny: usize, d: usize, seed: u64) -> Vec<Point> {
    let (kx, ky) = (nx.min(500), ny.min(500));
    let rows: Vec<(&[f32], bool)> = (0..kx)
        .map(|i| (&x[i * d..(i + 1) * d], false))
        .chain((0..ky).map(|i| (&y[i * d..(i + 1) * d], true)))
        .collect();
    if rows.is_empty() || d == 0 {
        return Vec::new();
    }
    let n = rows.len() as f64;
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.iter().map(|(r, _)| r[j] as f64).sum::<f64>() / n)
        .collect();
    let centred: Vec<Vec<f64>> = rows
        .iter()
        .map(|(r, _)| r.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect())
        .collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let mut rng = SplitMix64::stream(seed, 0x9CA);
    let mut dirs: Vec<Vec<f64>> = Vec::new();
    for _ in 0..2 {
        let mut v: Vec<f64> = (0..d).map(|_| rng.next_f64() - 0.5).collect();
        for _ in 0..50 {
            // v ← Cᵀ C v, minus the directions already found (deflation), normalized.
            let mut next = vec![0.0; d];
            for r in &centred {
                let s = dot(r, &v);
                next.iter_mut().zip(r).for_each(|(a, &b)| *a += s * b);
            }
            for u in &dirs {
                let s = dot(&next, u);
                next.iter_mut().zip(u).for_each(|(a, &b)| *a -= s * b);
            }
            let norm = dot(&next, &next).sqrt();
            if norm == 0.0 {
                break;
            }
            v = next.into_iter().map(|a| a / norm).collect();
        }
        dirs.push(v);
    }
    centred
        .iter()
        .zip(&rows)
        .map(|(r, &(_, current))| Point {
            x: dot(r, &dirs[0]) as f32,
            y: dot(r, &dirs[1]) as f32,
            current,
        })
        .collect()
}
