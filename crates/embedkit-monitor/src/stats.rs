//! The scalar statistics the drift tests are built from, each matched to its scipy / scikit-learn reference by
//! the fixtures of `tools/make_drift_fixtures.py`: ROC-AUC (`sklearn.metrics.roc_auc_score`), the two-sample
//! Kolmogorov–Smirnov test (`scipy.stats.ks_2samp`, exact mode), Benjamini–Hochberg adjusted p-values
//! (`scipy.stats.false_discovery_control`), the χ² survival function (`scipy.stats.chi2.sf`) and the normal one.

/// `P(Z > z)` for a standard normal `Z` (via `erfc`, accurate in the far tail where `1 - Φ(z)` would cancel).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// The area under the ROC curve of `scores` for the binary `labels` (`true` = positive), ties counted one half
/// — what `sklearn.metrics.roc_auc_score` returns. `None` when one class is empty (sklearn raises then).
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let (u, n_pos, n_neg) = mann_whitney_u(scores, labels);
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// The Mann–Whitney U of the positives (pairs positive > negative, ties ½) and the class sizes.
pub fn mann_whitney_u(scores: &[f64], labels: &[bool]) -> (f64, usize, usize) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks (1-based) over runs of equal scores: the rank-sum form of U counts a tie as ½.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum_pos += avg_rank * order[i..j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j;
    }
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    let u = rank_sum_pos - (n_pos as f64) * (n_pos as f64 + 1.0) / 2.0;
    (u, n_pos, n_neg)
}

/// Benjamini–Hochberg adjusted p-values, in the input's order (`scipy.stats.false_discovery_control(p,
/// method='bh')`): `p_(i)·m/i`, made monotone from the largest down, capped at 1.
pub fn bh_adjust(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut out = vec![0.0; m];
    let mut running = 1.0f64;
    for rank in (0..m).rev() {
        let k = order[rank];
        running = running.min(p[k] * m as f64 / (rank + 1) as f64);
        out[k] = running.min(1.0);
    }
    out
}

/// Bonferroni adjusted p-values: `min(1, m·p)`.
pub fn bonferroni_adjust(p: &[f64]) -> Vec<f64> {
    let m = p.len() as f64;
    p.iter().map(|&x| (x * m).min(1.0)).collect()
}

/// Simes' combined p-value `min_i m·p_(i)/i` for the global null "no hypothesis is false" (the smallest
/// Benjamini–Hochberg adjusted p-value). Valid under independence and positive dependence (Sarkar 1998), which
/// is how drift tests on the same two samples behave: they tend to fire together.
pub fn simes(p: &[f64]) -> f64 {
    bh_adjust(p).into_iter().fold(1.0, f64::min)
}

/// The survival function of the χ² distribution with `dof` degrees of freedom, `scipy.stats.chi2.sf`.
pub fn chi2_sf(x: f64, dof: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    gamma_q(dof / 2.0, x / 2.0)
}

/// The regularized upper incomplete gamma `Q(a, x)`: the series below `a + 1`, Lentz's continued fraction above
/// (Numerical Recipes §6.2), both to full double precision.
fn gamma_q(a: f64, x: f64) -> f64 {
    let log_prefactor = a * x.ln() - x - libm::lgamma(a);
    if x < a + 1.0 {
        let (mut term, mut sum, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..10_000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-17 {
                break;
            }
        }
        (1.0 - sum * log_prefactor.exp()).max(0.0)
    } else {
        let tiny = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..10_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-17 {
                break;
            }
        }
        (log_prefactor.exp() * h).min(1.0)
    }
}

/// The two-sample KS statistic of two **sorted** samples as an integer numerator: `D = h / lcm(n₁, n₂)`, where
/// `h = max |i·(n₂/g) - j·(n₁/g)|` over the empirical CDFs (`g = gcd`), ties stepping together as
/// `np.searchsorted(side='right')` makes them. Integers keep `D` exact, which the exact p-value needs.
pub fn ks_statistic_sorted(a: &[f32], b: &[f32]) -> u64 {
    let (n1, n2) = (a.len() as u64, b.len() as u64);
    let g = gcd(n1, n2);
    let (w1, w2) = (n2 / g, n1 / g);
    let (mut i, mut j) = (0usize, 0usize);
    let mut best = 0i64;
    while i < a.len() || j < b.len() {
        // The next distinct value and every copy of it on both sides.
        let v = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        let diff = i as i64 * w1 as i64 - j as i64 * w2 as i64;
        best = best.max(diff.abs());
    }
    best as u64
}

/// `P(D ≥ h / lcm)` under the null for samples of sizes `n1`, `n2` — scipy's exact two-sided `ks_2samp`
/// p-value: `_compute_prob_outside_square` for equal sizes, else Hodges' inside method in Viehmann's
/// numerically stable form (the probability of staying strictly inside, complemented column by column).
pub fn ks_pvalue_exact(n1: usize, n2: usize, h: u64) -> f64 {
    if h == 0 {
        return 1.0;
    }
    if n1 == n2 {
        return prob_outside_square(n1 as u64, h);
    }
    let g = gcd(n1 as u64, n2 as u64);
    let (m, n) = if n1 >= n2 {
        (n1 as u64, n2 as u64)
    } else {
        (n2 as u64, n1 as u64)
    };
    outer_prob_inside(m, n, g, h)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// scipy's `_compute_prob_outside_square(n, h)`: `2·Σ(-1)^(k-1) C(2n, n-kh)/C(2n, n)` in Horner form.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let mut p = 0.0;
    let mut k = (n / h) as i64;
    while k >= 0 {
        let kh = k as u64 * h;
        let mut p1 = 1.0;
        for j in 0..h {
            // n - kh - j can go negative in scipy's float arithmetic only when the term is already zero.
            let num = n as f64 - kh as f64 - j as f64;
            p1 = num * p1 / (n as f64 + kh as f64 + j as f64 + 1.0);
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// scipy's `_compute_outer_prob_inside_method(m, n, g, h)` (m ≥ n): one sliding column of the lattice-path
/// table, each entry holding 1 − (paths inside)/(all paths) so no binomial coefficient is ever formed.
fn outer_prob_inside(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (mg, ng) = (m / g, n / g);
    let ceil_div = |a: u64, b: u64| a.div_ceil(b);
    let mut minj: u64 = 0;
    let mut maxj: u64 = ceil_div(h, mg).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0f64; len_a];
    for v in a.iter_mut().take(maxj as usize) {
        *v = 0.0;
    }
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        // floor((ng·i − h)/mg) + 1, clamped to [0, n], in signed arithmetic as numpy's floor does.
        let lo = (ng as i64 * i as i64 - h as i64).div_euclid(mg as i64) + 1;
        minj = (lo.max(0) as u64).min(n);
        maxj = ceil_div(ng * i + h, mg).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            val = (a[(jj + minj - lastminj) as usize] * i as f64 + val * j as f64) / (i + j) as f64;
            a[jj as usize] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let from = (maxj - minj) as usize;
            let to = (from + (lastlen - curlen) as usize).min(a.len());
            for v in &mut a[from..to] {
                *v = 1.0;
            }
        }
    }
    a[(maxj - minj - 1) as usize]
}

/// The Kolmogorov–Smirnov test of `values` against the uniform distribution on [0, 1]: the statistic and an
/// asymptotic p-value (Kolmogorov's limit with Stephens' finite-n correction, within about 0.01 of scipy's exact
/// `kstest(values, 'uniform')` for n ≥ 50). Used to check that drift p-values are uniform under the null.
pub fn ks_uniform(values: &[f64]) -> (f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let d = v
        .iter()
        .enumerate()
        .map(|(i, &x)| ((i as f64 + 1.0) / n - x).max(x - i as f64 / n))
        .fold(0.0, f64::max);
    let t = d * (n.sqrt() + 0.12 + 0.11 / n.sqrt());
    (d, kolmogorov_sf(t))
}

/// `P(K > t)` for Kolmogorov's limiting distribution: `2 Σ (-1)^(k-1) e^(-2k²t²)`.
fn kolmogorov_sf(t: f64) -> f64 {
    if t < 0.2 {
        return 1.0;
    }
    let mut s = 0.0;
    for k in 1..=100 {
        let term = (-2.0 * (k * k) as f64 * t * t).exp();
        s += if k % 2 == 1 { term } else { -term };
        if term < 1e-18 {
            break;
        }
    }
    (2.0 * s).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_half() {
        // Positives 0.5 and 0.8, negatives 0.5 and 0.1: pairs (0.5,0.5)=½, (0.5,0.1)=1, (0.8,·)=2 → 3.5/4.
        let auc = roc_auc(&[0.5, 0.8, 0.5, 0.1], &[true, true, false, false]).unwrap();
        assert_eq!(auc, 0.875);
        assert_eq!(roc_auc(&[1.0, 2.0], &[true, true]), None);
    }

    #[test]
    fn bh_is_monotone_and_simes_is_its_minimum() {
        let p = [0.01, 0.04, 0.03, 0.5];
        let adj = bh_adjust(&p);
        // sorted 0.01,0.03,0.04,0.5 → 0.04, 0.04(0.0533→min with 0.0533)...: p·4/rank then cumulative min.
        assert_eq!(
            adj,
            vec![0.04, 0.05333333333333334, 0.05333333333333334, 0.5]
        );
        assert_eq!(simes(&p), 0.04);
    }

    #[test]
    fn ks_statistic_handles_ties_and_unequal_sizes() {
        // a = {1,2,3}, b = {2,2,4,5}: after 1: 1/3 vs 0; after 2: 2/3 vs 2/4; after 3: 1 vs 2/4 → D = 1/2.
        let h = ks_statistic_sorted(&[1.0, 2.0, 3.0], &[2.0, 2.0, 4.0, 5.0]);
        assert_eq!(h, 6); // lcm 12 → 6/12
    }

    #[test]
    fn chi2_sf_known_values() {
        // chi2.sf(3.84145882069412, 1) = 0.05; chi2.sf(2, 2) = e^-1.
        assert!((chi2_sf(3.841_458_820_694_124, 1.0) - 0.05).abs() < 1e-12);
        assert!((chi2_sf(2.0, 2.0) - (-1.0f64).exp()).abs() < 1e-14);
    }
}
