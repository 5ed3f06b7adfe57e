//! L2-penalized logistic regression, fitted by L-BFGS to the optimum sklearn's `LogisticRegression(solver=
//! 'lbfgs')` finds (checked against it on the fixtures). The drift test's domain classifier uses its one-step
//! (IRLS-from-the-prior) form, see [`crate::classifier`]; this full fit is what that form approximates.

use embedkit_vectors::simd;

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
                if var > 1e-20 {
                    (1.0 / var.sqrt()) as f32
                } else {
                    1.0
                }
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
        Self {
            mean,
            inv_std,
            coef: theta[..d].to_vec(),
            intercept: theta[d],
        }
    }

    /// The decision score (log-odds of the positive class) of `v`.
    pub fn decision(&self, v: &[f32]) -> f64 {
        let mut s = self.intercept;
        for (((&x, &mu), &inv), &w) in v.iter().zip(&self.mean).zip(&self.inv_std).zip(&self.coef) {
            s += ((x - mu) * inv) as f64 * w;
        }
        s
    }
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
        loss += if z > 0.0 {
            z + (-z).exp().ln_1p()
        } else {
            z.exp().ln_1p()
        } - y[r] * z;
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
            next = theta
                .iter()
                .zip(&dir)
                .map(|(t, dv)| t + step * dv)
                .collect::<Vec<_>>();
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
