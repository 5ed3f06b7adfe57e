"""Makes tests/fixtures/drift/reference.json: the numbers embedkit-monitor's statistics must reproduce, computed
by numpy / scipy / scikit-learn.

    tools/.venv/bin/python tools/make_drift_fixtures.py

- mmd: the unbiased MMD² and the median-heuristic bandwidth exactly as alibi-detect 0.12's MMDDrift (PyTorch
  backend) computes them: `GaussianRBF` with `sigma_median` over the pooled sample (`squared_pairwise_distance`
  clamped at 1e-30), then `mmd2_from_kernel_matrix` on the
  zero-diagonal kernel matrix (x = y = the pooled sample there, so sigma = sqrt(0.5 · d[n + (N²-n)//2 - 1]) of the sorted
  distances: the lower median of the distinct pairs). alibi-detect itself is not installed (it pins old TensorFlow/PyTorch); its few
  lines are transcribed below in float64 numpy, the function names kept so they can be compared line by line.
- ks: `scipy.stats.ks_2samp(a, b, method='exact')` statistic and p-value, on samples with ties (float16-rounded
  values, as the committed corpus vectors are) and equal / unequal / coprime sizes.
- bh: `scipy.stats.false_discovery_control(p, method='bh')`.
- auc: `sklearn.metrics.roc_auc_score` on scores with ties.
- chi2: `scipy.stats.chi2_contingency` on 2 × K count tables; `scipy.stats.chi2.sf`.
- normal_sf: `scipy.stats.norm.sf`.
- ks_uniform: `scipy.stats.kstest(u, 'uniform')` (the Rust side is asymptotic; compared loosely).
- classifier: `sklearn.linear_model.LogisticRegression` (lbfgs, L2, C = 1/(λ·n)) on standardized features —
  its held-out decision scores, which the Rust fit must rank the same way (AUC of held-out labels within 0.01).
"""
import json
import os

import numpy as np
import scipy
import sklearn
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "drift", "reference.json")


# --- alibi-detect 0.12 (alibi_detect/utils/pytorch/distance.py, kernels.py), in float64 numpy -----------------
def squared_pairwise_distance(x, y, a_min=1e-30):
    x2 = (x**2).sum(-1, keepdims=True)
    y2 = (y**2).sum(-1, keepdims=True)
    dist = x2 + y2.T - 2.0 * x @ y.T
    return np.maximum(dist, a_min)


def sigma_median(x, y, dist):
    n = min(x.shape[0], y.shape[0])
    n = n if np.all(x[:n] == y[:n]) and x.shape == y.shape else 0
    n_median = n + (np.prod(dist.shape) - n) // 2 - 1
    return (0.5 * np.sort(dist.flatten())[n_median]) ** 0.5


def gaussian_rbf(x, y, sigma=None):
    dist = squared_pairwise_distance(x, y)
    if sigma is None:
        sigma = sigma_median(x, y, dist)
    gamma = 1.0 / (2.0 * sigma**2)
    return np.exp(-gamma * dist), sigma


def mmd2_from_kernel_matrix(kernel_mat, m, zero_diag=True):
    n = kernel_mat.shape[0] - m
    if zero_diag:
        kernel_mat = kernel_mat - np.diag(np.diag(kernel_mat))
    k_xx, k_yy, k_xy = kernel_mat[:-m, :-m], kernel_mat[-m:, -m:], kernel_mat[-m:, :-m]
    c_xx, c_yy = 1 / (n * (n - 1)), 1 / (m * (m - 1))
    return c_xx * k_xx.sum() + c_yy * k_yy.sum() - 2.0 * k_xy.mean()


def mmd_case(rng, nx, ny, d, shift, f16=False):
    x = rng.standard_normal((nx, d)).astype(np.float32)
    y = (rng.standard_normal((ny, d)) + shift).astype(np.float32)
    if f16:  # unit vectors rounded like the corpus
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)
        y = (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)
    # MMDDriftTorch.kernel_matrix: the kernel of the pooled sample with itself, reference rows first.
    z = np.concatenate([x, y]).astype(np.float64)
    k, sigma = gaussian_rbf(z, z)
    k = k - np.diag(np.diag(k))
    mmd2 = mmd2_from_kernel_matrix(k, ny, zero_diag=False)
    return {"x": x.tolist(), "y": y.tolist(), "nx": nx, "ny": ny, "d": d, "sigma": float(sigma), "mmd2": float(mmd2)}


def main():
    rng = np.random.default_rng(16)
    out = {"versions": {"numpy": np.__version__, "scipy": scipy.__version__, "sklearn": sklearn.__version__}}

    out["mmd"] = [
        mmd_case(rng, 60, 40, 16, 0.5),
        mmd_case(rng, 200, 150, 48, 0.15, f16=True),
        mmd_case(rng, 150, 150, 32, 1.0),
    ]

    ks = []
    for n1, n2, shift, f16 in [(1000, 500, 0.1, True), (500, 500, 0.0, True), (37, 53, 0.4, False),
                               (1500, 1500, 0.05, True), (999, 500, 0.2, True), (200, 1200, 0.0, True)]:
        a = rng.standard_normal(n1).astype(np.float32) * 0.05
        b = (rng.standard_normal(n2) * 0.05 + shift * 0.05).astype(np.float32)
        if f16:
            a = a.astype(np.float16).astype(np.float32)
            b = b.astype(np.float16).astype(np.float32)
        r = stats.ks_2samp(a, b, method="exact")
        ks.append({"a": a.tolist(), "b": b.tolist(), "statistic": float(r.statistic), "p_value": float(r.pvalue)})
    out["ks"] = ks

    bh = []
    for m in [10, 384]:
        p = rng.uniform(size=m) ** 3
        p[:3] = p[0]  # ties
        bh.append({"p": p.tolist(), "adjusted": stats.false_discovery_control(p, method="bh").tolist()})
    out["bh"] = bh

    auc = []
    for n in [50, 1000]:
        labels = rng.uniform(size=n) < 0.4
        scores = np.round(rng.standard_normal(n) + 0.5 * labels, 1)  # rounding makes ties
        auc.append({"scores": scores.tolist(), "labels": labels.tolist(),
                    "auc": float(roc_auc_score(labels, scores))})
    out["auc"] = auc

    chi = []
    for k, tilt in [(16, 0.0), (16, 0.8), (5, 0.3)]:
        p_ref = rng.dirichlet(np.ones(k))
        p_cur = p_ref * np.exp(tilt * rng.standard_normal(k))
        p_cur /= p_cur.sum()
        cx = rng.multinomial(1000, p_ref)
        cy = rng.multinomial(500, p_cur)
        keep = (cx + cy) > 0
        r = stats.chi2_contingency(np.array([cx[keep], cy[keep]]), correction=False)
        chi.append({"cx": cx.tolist(), "cy": cy.tolist(), "chi2": float(r.statistic), "p_value": float(r.pvalue)})
    out["chi2"] = chi
    out["chi2_sf"] = [{"x": x, "dof": k, "sf": float(stats.chi2.sf(x, k))}
                      for x, k in [(0.5, 1), (20.0, 15), (100.0, 15), (3.0, 7), (45.0, 2)]]
    out["normal_sf"] = [{"z": z, "sf": float(stats.norm.sf(z))} for z in [-3.0, -0.5, 0.0, 1.0, 1.6448536, 4.0, 9.0]]

    ku = []
    for n, power in [(200, 1.0), (200, 1.3), (500, 1.0)]:
        u = rng.uniform(size=n) ** power
        r = stats.kstest(u, "uniform")
        ku.append({"u": u.tolist(), "statistic": float(r.statistic), "p_value": float(r.pvalue)})
    out["ks_uniform"] = ku

    # The classifier: one train/test split of shifted Gaussians; sklearn's held-out AUC.
    d, lam = 24, 1e-2
    xtr = rng.standard_normal((400, d)).astype(np.float32)
    ytr = (rng.uniform(size=400) < 0.4)
    xtr[ytr, :3] += 0.3
    xte = rng.standard_normal((300, d)).astype(np.float32)
    yte = (rng.uniform(size=300) < 0.4)
    xte[yte, :3] += 0.3
    mu, sd = xtr.mean(0), xtr.std(0)
    clf = LogisticRegression(C=1.0 / (lam * len(xtr)), tol=1e-10, max_iter=10000)
    clf.fit((xtr - mu) / sd, ytr)
    scores = clf.decision_function((xte - mu) / sd)
    out["logistic"] = {"x_train": xtr.tolist(), "y_train": ytr.tolist(), "x_test": xte.tolist(),
                       "y_test": yte.tolist(), "l2": lam, "coef": clf.coef_[0].tolist(),
                       "intercept": float(clf.intercept_[0]), "test_scores": scores.tolist(),
                       "test_auc": float(roc_auc_score(yte, scores))}

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump(out, fh, separators=(",", ":"))
        fh.write("\n")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
