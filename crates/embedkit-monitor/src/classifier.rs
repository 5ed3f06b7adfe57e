//! The domain classifier test: can a logistic regression tell current vectors from reference vectors better
//! than chance? k-fold cross-validated (stratified, seeded), each fold standardized on its training part, and
//! scored by ROC-AUC on the held-out part.
//!
//! The p-value comes from the held-out folds: within one fold, the model was fitted without that fold, so under
//! the null (both samples from one distribution) the fold's scores are exchangeable between its two classes and
//! its Mann–Whitney U has the exact rank distribution, mean `n₁n₀/2`, variance `n₁n₀(n+1)/12`. The folds'
//! U's are summed and the one-sided normal tail taken. Pooling all out-of-fold scores into one AUC instead mixes
//! k different models' score scales and is biased below 0.5 under the null, which would make the test too
//! conservative to be calibrated.

use crate::rng::SplitMix64;
use crate::stats::{mann_whitney_u, normal_sf};
use embedkit_vectors::simd;
use rayon::prelude::*;

/// Settings of the domain classifier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassifierOptions {
    /// Number of cross-validation folds (≥ 2).
    pub folds: usize,
    /// L2 penalty on the mean log-loss, `λ/2·‖w‖²` (sklearn's `C` is `1/(λ·n_train)`).
    pub l2: f64,
    /// L-BFGS iterations at most; the fit stops earlier once the gradient norm is below 1e-6.
    pub max_iter: usize,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        Self { folds: 5, l2: 1e-2, max_iter: 100 }
    }
}

/// What the domain classifier found.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierResult {
    /// ROC-AUC over the held-out folds (the within-fold U's over the within-fold pair counts).
    pub auc: f64,
    /// One-sided p-value of AUC > 0.5.
    pub p_value: f64,
    /// The held-out decision score of every row (reference rows first), for reports.
    pub scores: Vec<f64>,
}

/// Cross-validated domain classifier of `x` (`nx × d`, label 0) against `y` (`ny × d`, label 1).
pub fn domain_classifier(
    x: &[f32],
    nx: usize,
    y: &[f32],
    ny: usize,
    d: usize,
    opts: &ClassifierOptions,
    seed: u64,
) -> ClassifierResult {
    let n = nx + ny;
    let row = |i: usize| if i < nx { &x[i * d..(i + 1) * d] } else { &y[(i - nx) * d..(i - nx + 1) * d] };
    let k = opts.folds.max(2);
    // Stratified folds: each class shuffled and dealt round-robin, so every fold has both classes.
    let mut rng = SplitMix64::stream(seed, 0xC1A5);
    let mut fold_of = vec![0usize; n];
    for (lo, hi) in [(0, nx), (nx, n)] {
        let mut idx: Vec<usize> = (lo..hi).collect();
        rng.shuffle(&mut idx);
        for (pos, &i) in idx.iter().enumerate() {
            fold_of[i] = pos % k;
        }
    }
    let per_fold: Vec<(Vec<usize>, Vec<f64>)> = (0..k)
        .into_par_iter()
        .map(|f| {
            let train: Vec<usize> = (0..n).filter(|&i| fold_of[i] != f).collect();
            let test: Vec<usize> = (0..n).filter(|&i| fold_of[i] == f).collect();
            let model = fit_fold(&train, nx, &row, opts);
            let scores = test.iter().map(|&i| model.decision(row(i))).collect();
            (test, scores)
        })
        .collect();
    let (mut u_sum, mut mean_sum, mut var_sum, mut pairs) = (0.0, 0.0, 0.0, 0.0);
    let mut scores = vec![0.0; n];
    for (test, s) in &per_fold {
        let labels: Vec<bool> = test.iter().map(|&i| i >= nx).collect();
        let (u, n1, n0) = mann_whitney_u(s, &labels);
        let (n1, n0) = (n1 as f64, n0 as f64);
        u_sum += u;
        mean_sum += n1 * n0 / 2.0;
        var_sum += n1 * n0 * (n1 + n0 + 1.0) / 12.0;
        pairs += n1 * n0;
        for (&i, &v) in test.iter().zip(s) {
            scores[i] = v;
        }
    }
    let auc = if pairs > 0.0 { u_sum / pairs } else { 0.5 };
    let p_value = if var_sum > 0.0 { normal_sf((u_sum - mean_sum) / var_sum.sqrt()) } else { 1.0 };
    ClassifierResult { auc, p_value, scores }
}

/// A logistic regression fitted on standardized features: `decision(v) = w·((v − μ)/s) + b`. Features are
/// standardized with the training rows' mean and (population) standard deviation, as `StandardScaler` does.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticModel {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    /// Weights on the standardized features.
    pub coef: Vec<f64>,
    /// The intercept (not penalized).
    pub intercept: f64,
}

impl LogisticModel {
    /// Fits `rows` (each `d` long) to `labels` minimizing mean log-loss + `l2`/2·‖w‖² with at most `max_iter`
    /// L-BFGS iterations — sklearn's `LogisticRegression(C = 1/(l2·n))` on the standardized rows.
    pub fn fit(rows: &[&[f32]], labels: &[bool], l2: f64, max_iter: usize) -> Self {
        let m = rows.len();
        let d = rows.first().map_or(0, |r| r.len());
        let mut mean = vec![0.0f64; d];
        let mut sq = vec![0.0f64; d];
        for r in rows {
            for (j, &v) in r.iter().enumerate() {
                mean[j] += v as f64;
                sq[j] += (v as f64) * (v as f64);
            }
        }
        let mean: Vec<f32> = mean.iter().map(|s| (s / m as f64) as f32).collect();
        let inv_std: Vec<f32> = sq
            .iter()
            .zip(&mean)
            .map(|(s, &mu)| {
                let var = s / m as f64 - (mu as f64) * (mu as f64);
                // A constant feature carries nothing; 1 keeps it at zero instead of dividing by zero.
                if var > 1e-20 { (1.0 / var.sqrt()) as f32 } else { 1.0 }
            })
            .collect();
        let mut xs = vec![0.0f32; m * d];
        for (r, row) in rows.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                xs[r * d + j] = (v - mean[j]) * inv_std[j];
            }
        }
        let y: Vec<f64> = labels.iter().map(|&l| if l { 1.0 } else { 0.0 }).collect();
        let theta = lbfgs(&xs, &y, d, l2, max_iter);
        Self { mean, inv_std, coef: theta[..d].to_vec(), intercept: theta[d] }
    }

    /// The decision score (log-odds of the positive class) of `v`.
    pub fn decision(&self, v: &[f32]) -> f64 {
        let mut s = self.intercept;
        for j in 0..v.len() {
            s += ((v[j] - self.mean[j]) * self.inv_std[j]) as f64 * self.coef[j];
        }
        s
    }
}

fn fit_fold<'a>(
    train: &[usize],
    nx: usize,
    row: &dyn Fn(usize) -> &'a [f32],
    opts: &ClassifierOptions,
) -> LogisticModel {
    // Standardized on the training part only, so nothing of the held-out fold leaks into the model.
    let rows: Vec<&[f32]> = train.iter().map(|&i| row(i)).collect();
    let labels: Vec<bool> = train.iter().map(|&i| i >= nx).collect();
    LogisticModel::fit(&rows, &labels, opts.l2, opts.max_iter)
}

/// Mean log-loss + λ/2‖w‖² (intercept unpenalized) and its gradient at `theta = [w; b]`.
fn loss_grad(xs: &[f32], y: &[f64], d: usize, l2: f64, theta: &[f64], grad: &mut [f64]) -> f64 {
    let kern = simd::active();
    let m = y.len();
    let w32: Vec<f32> = theta[..d].iter().map(|&v| v as f32).collect();
    let b = theta[d];
    grad.iter_mut().for_each(|g| *g = 0.0);
    let mut gw = vec![0.0f32; d];
    let mut loss = 0.0;
    let mut gb = 0.0;
    for r in 0..m {
        let xr = &xs[r * d..(r + 1) * d];
        let z = kern.dot(xr, &w32) as f64 + b;
        // log(1 + e^z) − y·z, written to stay finite for large |z|.
        loss += if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() } - y[r] * z;
        let p = 1.0 / (1.0 + (-z).exp());
        let resid = (p - y[r]) as f32;
        for (g, &v) in gw.iter_mut().zip(xr) {
            *g += resid * v;
        }
        gb += p - y[r];
    }
    let inv_m = 1.0 / m as f64;
    let mut pen = 0.0;
    for j in 0..d {
        grad[j] = gw[j] as f64 * inv_m + l2 * theta[j];
        pen += theta[j] * theta[j];
    }
    grad[d] = gb * inv_m;
    loss * inv_m + 0.5 * l2 * pen
}

/// L-BFGS (memory 10) with a backtracking Armijo line search: the objective is smooth and strongly convex
/// (λ > 0), so this converges to the unique optimum sklearn's lbfgs solver finds.
fn lbfgs(xs: &[f32], y: &[f64], d: usize, l2: f64, max_iter: usize) -> Vec<f64> {
    const MEM: usize = 10;
    let p = d + 1;
    let mut theta = vec![0.0; p];
    let mut grad = vec![0.0; p];
    let mut f = loss_grad(xs, y, d, l2, &theta, &mut grad);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let dotp = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut new_grad = vec![0.0; p];
    for _ in 0..max_iter {
        if dotp(&grad, &grad).sqrt() < 1e-6 {
            break;
        }
        // Two-loop recursion for the quasi-Newton direction.
        let mut q = grad.clone();
        let mut alphas = Vec::with_capacity(s_hist.len());
        for (s, yv) in s_hist.iter().zip(&y_hist).rev() {
            let rho = 1.0 / dotp(yv, s);
            let a = rho * dotp(s, &q);
            q.iter_mut().zip(yv).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push((a, rho));
        }
        if let (Some(s), Some(yv)) = (s_hist.last(), y_hist.last()) {
            let scale = dotp(s, yv) / dotp(yv, yv);
            q.iter_mut().for_each(|v| *v *= scale);
        }
        for ((s, yv), (a, rho)) in s_hist.iter().zip(&y_hist).zip(alphas.into_iter().rev()) {
            let b = rho * dotp(yv, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let dir: Vec<f64> = q.iter().map(|v| -v).collect();
        let slope = dotp(&grad, &dir);
        if slope >= 0.0 {
            // Not a descent direction (curvature lost): restart from steepest descent.
            s_hist.clear();
            y_hist.clear();
            continue;
        }
        let mut step = 1.0;
        let mut next;
        let mut f_new;
        loop {
            next = theta.iter().zip(&dir).map(|(t, dv)| t + step * dv).collect::<Vec<_>>();
            f_new = loss_grad(xs, y, d, l2, &next, &mut new_grad);
            if f_new <= f + 1e-4 * step * slope || step < 1e-10 {
                break;
            }
            step *= 0.5;
        }
        let s: Vec<f64> = next.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = new_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let converged = (f - f_new).abs() <= 1e-12 * f.abs().max(1.0);
        if dotp(&s, &yv) > 1e-12 {
            s_hist.push(s);
            y_hist.push(yv);
            if s_hist.len() > MEM {
                s_hist.remove(0);
                y_hist.remove(0);
            }
        }
        theta = next;
        grad.copy_from_slice(&new_grad);
        f = f_new;
        if converged {
            break;
        }
    }
    theta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_classes_give_auc_near_one_and_tiny_p() {
        let mut rng = SplitMix64::new(5);
        let d = 8;
        let x: Vec<f32> = (0..200 * d).map(|_| rng.next_f64() as f32).collect();
        let y: Vec<f32> = (0..100 * d).map(|i| rng.next_f64() as f32 + if i % d == 0 { 1.5 } else { 0.0 }).collect();
        let r = domain_classifier(&x, 200, &y, 100, d, &ClassifierOptions::default(), 1);
        assert!(r.auc > 0.99, "{}", r.auc);
        assert!(r.p_value < 1e-10, "{}", r.p_value);
    }

    #[test]
    fn same_distribution_gives_auc_near_half() {
        let mut rng = SplitMix64::new(6);
        let d = 8;
        let x: Vec<f32> = (0..300 * d).map(|_| rng.next_f64() as f32).collect();
        let y: Vec<f32> = (0..300 * d).map(|_| rng.next_f64() as f32).collect();
        let r = domain_classifier(&x, 300, &y, 300, d, &ClassifierOptions::default(), 1);
        assert!((r.auc - 0.5).abs() < 0.07, "{}", r.auc);
    }
}
