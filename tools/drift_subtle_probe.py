"""Exploration behind docs/MONITORING.md's "two sections removed" paragraph: can another kernel bandwidth, an
aggregate over bandwidths, or a k-nearest-neighbour test find the subtle shift (reference 1,000 rows from all 32
Debian sections, current 1,000 from 30) more often than the median-heuristic MMD (power 0.33)?

For each seeded trial: MMD (V-statistic without the diagonal) at multiples of the median-heuristic bandwidth,
the min-p aggregate over those bandwidths (MMDAgg-style, calibrated by the same relabellings), and Schilling's
k-NN test (same-sample neighbour pairs, all and reference side only); permutation p-values, B relabellings.

    tools/.venv/bin/python tools/drift_subtle_probe.py --trials 40            # power
    tools/.venv/bin/python tools/drift_subtle_probe.py --trials 40 --null     # calibration check
"""

import argparse
import time

import numpy as np

CORPUS = "tests/fixtures/drift/debian-sections"
MULTS = [0.25, 0.5, 1.0, 2.0, 4.0]
KNN = [5, 10, 20]


def p_of_rows(t):
    """p-value of every row of t (row 0 = observed) against all rows: (#{t >= t_j}) / len(t)."""
    order = np.sort(t)
    return (len(t) - np.searchsorted(order, t, side="left")) / len(t)


def trial(v, sec, names, rng, null, b):
    gone = rng.choice(names, 2, replace=False)
    perm = rng.permutation(len(v))
    ref, rest = perm[:1000], perm[1000:]
    if not null:
        rest = rest[~np.isin(sec[rest], gone)]
    cur = rest[:1000]
    z = np.vstack([v[ref], v[cur]])
    n = len(z)
    sq = (z * z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)
    sigma = np.sqrt(0.5 * np.median(d2[np.triu_indices(n, 1)]))
    lab = np.r_[np.zeros(1000, bool), np.ones(1000, bool)]
    labs = np.array([lab] + [rng.permutation(lab) for _ in range(b)])  # (B+1) x n
    w = np.where(labs, -1 / 1000, 1 / 1000).T  # n x (B+1)
    rows = []
    for m in MULTS:
        k = np.exp(-d2 / (2 * (sigma * m) ** 2))
        np.fill_diagonal(k, 0)
        rows.append(p_of_rows(np.einsum("ib,ib->b", w, k @ w)))
    rows = np.array(rows)
    agg = p_of_rows(-rows.min(0))[0]
    s = -d2
    np.fill_diagonal(s, -np.inf)
    nn = np.argsort(-s, 1)[:, : max(KNN)]
    knn = []
    for k in KNN:
        e = nn[:, :k]
        same = (labs[:, :, None] == labs[:, e]).sum((1, 2))
        refside = ((~labs[:, :, None]) & (~labs[:, e])).sum((1, 2))
        knn += [p_of_rows(same)[0], p_of_rows(refside)[0]]
    return rows[:, 0], agg, np.array(knn)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--permutations", type=int, default=200)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--null", action="store_true", help="no sections removed (calibration)")
    a = ap.parse_args()
    v = np.load(f"{CORPUS}/vectors.f16.npy").astype(np.float64)
    sec = np.array(open(f"{CORPUS}/sections.txt").read().split("\n")[: len(v)])
    names = np.unique(sec)
    rng = np.random.default_rng(a.seed)
    mmd, agg, knn = 0, 0, 0
    t0 = time.time()
    for _ in range(a.trials):
        p_mmd, p_agg, p_knn = trial(v, sec, names, rng, a.null, a.permutations)
        mmd = mmd + (p_mmd < 0.05)
        agg += p_agg < 0.05
        knn = knn + (p_knn < 0.05)
    t = a.trials
    print(f"{'null' if a.null else 'two sections removed'}: {t} trials, B = {a.permutations}, {time.time() - t0:.0f} s")
    for m, r in zip(MULTS, mmd):
        print(f"  MMD at {m:>4} x median bandwidth: {r / t:.2f}")
    print(f"  MMD min-p over the {len(MULTS)} bandwidths: {agg / t:.2f}")
    for i, k in enumerate(KNN):
        print(f"  k-NN k={k:>2}: same-sample pairs {knn[2 * i] / t:.2f}, reference side {knn[2 * i + 1] / t:.2f}")


if __name__ == "__main__":
    main()
