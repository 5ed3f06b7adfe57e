"""Expected retrieval metrics, exactly as MTEB computes them, for runs on fixed qrels: tests/fixtures/eval/metrics/.

    tools/.venv/bin/python tools/make_metric_fixtures.py

(after tools/make_eval_references.py --model all-MiniLM-L6-v2, which writes the real run metrics/debian-desc/run.json)

Datasets (each folder has qrels.tsv or uses ../debian-desc/qrels/test.tsv, run.json and expected.json):
- debian-desc: the project's retrieval set (test split, 400 queries, graded 1/2) with a real all-MiniLM-L6-v2 run
  (cosine, float32 scores, top 100 per query; so the @1000 values are those of a 100-deep run).
- synthetic-graded-ties: 40 queries, grades 0-3, scores drawn from 6 values so most scores tie, runs up to 1,200
  documents deep (relevant documents past rank 100 and 1000), document ids whose string order differs from their
  numeric order ("d9" > "d10" > "d1"), mixed case and punctuation.
- synthetic-binary-edge: binary qrels plus edge cases (see EDGE below): no relevant document retrieved, relevant
  documents never retrieved, a relevance-0 row ranked first, a query whose qrels are all 0, an empty result list, a
  judged query absent from the run, a run query without qrels, fewer results than k, negative scores, a tie across
  the cutoff.
- synthetic-float32-ties: scores that differ only below float32 resolution (trec_eval ties them, MTEB's MRR does
  not), 7 queries.
- synthetic-identical-ids: ArguAna-like: query ids that are also document ids and are retrieved for themselves;
  expected.json without and expected_ignore_identical_ids.json with MTEB's ignore_identical_ids.
run.json lists each query's documents in a shuffled order on purpose: the evaluator must rank them itself.

How MTEB (mteb/_evaluators/retrieval_metrics.py calculate_retrieval_scores, RetrievalEvaluator.evaluate) computes
them, and so how every value here is computed (pytrec_eval for the first four, checked against an independent
implementation of the formulas below to 1e-12 on every fixture):
- pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.K", "map_cut.K", "recall.K", "P.K"}) with K = 1,3,5,10,100,1000.
- Ranking (trec_eval): a query's run documents sorted by score descending, the score first cast to a C float
  (float32: trec_eval's TEXT_RESULTS.sim is a float, so scores closer than float32 resolution tie), ties broken by
  document id DESCENDING in byte order (strcmp): "d9" before "d10" before "d1"; run order is ignored. Verified here
  with pytrec_eval-terrier 0.5.11 (see check_tie_breaking()).
- rel(d) = the qrels grade, 0 when the document has no qrels row. "Relevant" means rel >= 1 (relevance_level 1).
  R = number of qrels rows with rel >= 1 (including documents never retrieved).
- P@k = (relevant among the first k) / k, always divided by k, even when fewer than k were retrieved.
- recall@k = (relevant among the first k) / R; 0 when R = 0.
- map@k (map_cut) = sum over relevant documents at ranks i <= k of P@i, divided by R (not by min(k, R)); 0 if R = 0.
- ndcg@k (ndcg_cut) = DCG@k / IDCG@k with DCG@k = sum_{i<=k} rel(d_i) / log2(i + 1) (graded gain = the grade
  itself, no 2^rel - 1), IDCG@k = the same over all qrels grades of the query sorted descending; 0 when IDCG = 0.
- Which queries: pytrec_eval scores the queries present in both the qrels and the run (a query with an empty result
  list {} is present and scores 0; a judged query absent from the run is dropped; a run query without qrels is
  ignored). A query whose qrels rows are all 0 is scored (all metrics 0). MTEB's mean = sum / number of scored
  queries. MTEB rounds the nDCG/MAP/recall/P means to 5 decimals when it reports them; here they are unrounded.
- mrr@k (MTEB's own mrr(), not pytrec_eval's recip_rank): per run query, the run sorted by (score, doc_id) with
  reverse=True, i.e. score descending then document id descending (Python str order = code point order, the same
  as byte order for ASCII ids), first k kept, 1/rank of the first document with qrels grade > 0, else 0; mean over
  the run's queries. (Before MTEB PR #5136, Aug 2026, the sort key was the score alone, and Python's stable sort left
  tied documents in the run dict's insertion order; expected.json also gives that value as mrr_insertion_order@k,
  computed on run.json's order, for information.) MTEB's mrr() looks up qrels[query] for every run query, so a run
  query without qrels raises KeyError in MTEB; here such a query is skipped, like pytrec_eval does. The MRR sort
  compares Python floats (doubles), not float32; all synthetic scores are exact in float32 so the two agree.
- ignore_identical_ids (MTEB RetrievalEvaluator.evaluate, True for ArguAna and a few others): before any metric,
  every run entry whose document id equals its query id is removed from the run (the qrels are unchanged). MTEB's
  exact search keeps top_k + 1 candidates per corpus chunk in a heap of size top_k, so a 1000-deep run may hold 999
  documents after the removal.
"""
import json
import math
import os
import random
import sys

import numpy as np
import pytrec_eval

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL = os.path.join(ROOT, "tests", "fixtures", "eval")
OUT = os.path.join(EVAL, "metrics")
KS = [1, 3, 5, 10, 100, 1000]
NAMES = {"ndcg": "ndcg_cut", "map": "map_cut", "recall": "recall", "precision": "P"}


# ---------------------------------------------------------------- MTEB's computation
def mrr(qrels, run, k, insertion_order=False):
    out = {}
    for q, docs in run.items():
        if q not in qrels:
            continue
        rel = {d for d, g in qrels[q].items() if g > 0}
        key = (lambda x: x[1]) if insertion_order else (lambda x: (x[1], x[0]))
        hits = sorted(docs.items(), key=key, reverse=True)[:k]
        out[q] = next((1.0 / (i + 1) for i, (d, _) in enumerate(hits) if d in rel), 0.0)
    return out


def mteb_metrics(qrels, run, ignore_identical_ids=False):
    if ignore_identical_ids:
        run = {q: {d: s for d, s in docs.items() if d != q} for q, docs in run.items()}
    measures = {f"{m}." + ",".join(map(str, KS)) for m in NAMES.values()}
    scores = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    per_query = {q: {} for q in sorted(scores)}
    for q, v in scores.items():
        for k in KS:
            for name, key in NAMES.items():
                per_query[q][f"{name}@{k}"] = v[f"{key}_{k}"]
    mrrs = {k: mrr(qrels, run, k) for k in KS}
    mrrs_ins = {k: mrr(qrels, run, k, insertion_order=True) for k in KS}
    for q in per_query:
        for k in KS:
            per_query[q][f"mrr@{k}"] = mrrs[k][q]
            per_query[q][f"mrr_insertion_order@{k}"] = mrrs_ins[k][q]
    assert set(mrrs[1]) == set(per_query), "MRR and pytrec_eval saw different queries"
    n = len(per_query)
    mean = {}
    for k in KS:
        for name in list(NAMES) + ["mrr", "mrr_insertion_order"]:
            key = f"{name}@{k}"
            mean[key] = math.fsum(per_query[q][key] for q in per_query) / n
    independent_check(qrels, run, per_query)
    return {"queries": n, "ignore_identical_ids": ignore_identical_ids, "mean": mean, "per_query": per_query}


# ---------------------------------------------------------------- the formulas, written out, checked against it
def trec_ranking(docs):
    # float32 cast, then score desc, then doc id desc (byte order)
    items = [(float(np.float32(s)), d.encode("utf-8"), d) for d, s in docs.items()]
    items.sort(key=lambda x: (x[0], x[1]), reverse=True)
    return [d for _, _, d in items]


def independent_check(qrels, run, per_query):
    for q in per_query:
        ranked = trec_ranking(run[q])
        grades = qrels[q]
        rels = [grades.get(d, 0) for d in ranked]
        big_r = sum(1 for g in grades.values() if g >= 1)
        ideal = sorted(grades.values(), reverse=True)
        for k in KS:
            top = rels[:k]
            hits = sum(1 for g in top if g >= 1)
            p = hits / k
            rec = hits / big_r if big_r else 0.0
            ap, seen = 0.0, 0
            for i, g in enumerate(top):
                if g >= 1:
                    seen += 1
                    ap += seen / (i + 1)
            ap = ap / big_r if big_r else 0.0
            dcg = sum(g / math.log2(i + 2) for i, g in enumerate(top) if g > 0)
            idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]) if g > 0)
            nd = dcg / idcg if idcg > 0 else 0.0
            for name, val in (("precision", p), ("recall", rec), ("map", ap), ("ndcg", nd)):
                exp = per_query[q][f"{name}@{k}"]
                if abs(exp - val) > 1e-12:
                    sys.exit(f"formula mismatch {q} {name}@{k}: pytrec_eval {exp}, formula {val}")
            first = next((i for i, d in enumerate(ranked[:k]) if grades.get(d, 0) > 0), None)
            rr = 1.0 / (first + 1) if first is not None else 0.0
            exact32 = all(float(np.float32(v)) == v for v in run[q].values())
            if exact32 and abs(per_query[q][f"mrr@{k}"] - rr) > 1e-15:
                sys.exit(f"MRR differs from the trec ranking's reciprocal rank: {q} @{k}")


def check_tie_breaking():
    ev = lambda qrels, run: pytrec_eval.RelevanceEvaluator(qrels, {"P.1"}).evaluate(run)["q"]["P_1"]
    tied = {"q": {"d10": 1.0, "d9": 1.0, "d1": 1.0}}
    assert ev({"q": {"d9": 1}}, tied) == 1.0  # "d9" is the largest string: ranked first
    assert ev({"q": {"d10": 1}}, tied) == 0.0
    assert ev({"q": {"a": 1}}, {"q": {"a": 1.0 + 1e-8, "b": 1.0}}) == 0.0  # float32 tie -> "b" first
    assert ev({"q": {"a": 1}}, {"q": {"a": 1.0 + 1e-6, "b": 1.0}}) == 1.0


# ---------------------------------------------------------------- datasets
def q32(x: float) -> float:
    return float(np.float32(x))


def graded_ties():
    rng = random.Random(61)
    ids = [f"d{i}" for i in range(1, 1301)] + ["D5", "d5a", "doc-x", "doc_x", "a", "Z9", "z10"]
    values = [1.0, 0.75, 0.5, 0.25, 0.0, -0.5]
    qrels, run = {}, {}
    for n in range(40):
        q = f"q{n}"
        depth = rng.choice([0, 3, 10, 50, 120, 400, 1200])
        docs = rng.sample(ids, depth)
        run[q] = {d: rng.choice(values) for d in docs}
        judged = rng.sample(ids, rng.randint(1, 12))
        if docs and n % 3 == 0:
            judged += rng.sample(docs, min(len(docs), 3))  # make sure some retrieved docs are judged
        if n % 3 == 1:
            top = [d for d in docs if run[q][d] == 1.0]  # judged docs inside the top tie group
            judged += rng.sample(top, min(len(top), 4))
        qrels[q] = {d: rng.randint(0, 3) for d in judged}
    qrels["q0"]["d9"], qrels["q0"]["d10"] = 3, 1
    run["q0"].update({"d9": 1.0, "d10": 1.0, "d1": 1.0})
    return qrels, run


def binary_edge():
    rng = random.Random(62)
    qrels, run = {}, {}
    pool = [f"p{i}" for i in range(300)]
    for n in range(20):  # ordinary queries, few ties
        q = f"r{n}"
        docs = rng.sample(pool, rng.choice([5, 30, 150]))
        run[q] = {d: q32(rng.uniform(-1, 1)) for d in docs}
        qrels[q] = {d: 1 for d in rng.sample(pool, rng.randint(1, 6))}
    EDGE = {
        "e_none_retrieved": ({"x1": 1, "x2": 1}, {"p1": 0.9, "p2": 0.8}),
        "e_some_never_retrieved": ({"p1": 1, "x3": 1, "x4": 1}, {"p2": 0.9, "p1": 0.8, "p3": 0.7}),
        "e_zero_row_first": ({"p5": 0, "p6": 1}, {"p5": 0.95, "p6": 0.5, "p7": 0.4}),
        "e_all_zero": ({"p8": 0, "p9": 0}, {"p8": 0.7, "p9": 0.6}),
        "e_empty_run": ({"p1": 1}, {}),
        "e_short_run": ({"p10": 1, "p11": 1}, {"p12": 0.3, "p11": 0.2}),
        "e_negative": ({"p13": 1}, {"p14": -0.25, "p13": -0.5, "p15": -2.0}),
        # tie over the cutoff at k=1 and k=3: ids desc -> "p9" > "p40" > "p30" > "p100"
        "e_tie_cutoff": ({"p100": 1, "p40": 1}, {"p100": 0.5, "p30": 0.5, "p40": 0.5, "p9": 0.5, "p2": 0.1}),
    }
    for q, (qr, rn) in EDGE.items():
        qrels[q], run[q] = qr, rn
    qrels["e_absent_from_run"] = {"p1": 1}  # judged, not in the run: not scored
    run["e_not_judged"] = {"p1": 1.0}  # in the run, no qrels: ignored
    return qrels, run


def identical_ids():
    rng = random.Random(63)
    args = [f"arg{i}" for i in range(200)]
    qrels, run = {}, {}
    for n in range(25):
        q = args[n]
        counter = args[(n + 100) % 200]
        qrels[q] = {counter: 1}
        others = rng.sample([a for a in args if a not in (q, counter)], 40)
        run[q] = {d: q32(rng.uniform(0, 0.8)) for d in others}
        run[q][q] = 1.0  # the query's own text retrieved first
        run[q][counter] = q32(rng.uniform(0.3, 0.9))
    return qrels, run


def float32_ties():
    """Scores that differ in float64 but not in float32: pytrec_eval ties them (then doc id desc), MTEB's MRR does
    not. An evaluator that ranks on f64 gets the MRR right and the pytrec_eval metrics wrong, and vice versa."""
    qrels, run = {}, {}
    for n in range(6):
        q = f"f{n}"
        base = 0.5 + n / 16
        # "a" is relevant and scores higher in float64; "b" wins the float32 tie by doc id
        run[q] = {"a": base + 1e-9 * (n + 1), "b": base, "c": base - 0.25}
        qrels[q] = {"a": 1 + n % 2}
    run["f_exact"] = {"a": 0.75, "b": 0.75}
    qrels["f_exact"] = {"a": 1}
    return qrels, run


# ---------------------------------------------------------------- output
def shuffled(run, seed):
    rng = random.Random(seed)
    out = {}
    for q, docs in run.items():
        items = list(docs.items())
        rng.shuffle(items)
        out[q] = dict(items)
    return out


def write_json(path, obj, indent=None):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")
    os.replace(tmp, path)


def write_qrels(path, qrels):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in qrels:
            for d, g in qrels[q].items():
                f.write(f"{q}\t{d}\t{g}\n")
    os.replace(path + ".tmp", path)


def read_qrels(path):
    qrels = {}
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            q, d, g = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(g)
    return qrels


def emit(name, qrels_path, qrels, run, note, ignore_variant=False):
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    rel_qrels = os.path.relpath(qrels_path, folder)
    header = {"dataset": name, "qrels": rel_qrels, "run": "run.json", "k": KS, "note": note,
              "pytrec_eval": "pytrec_eval-terrier " + __import__("importlib.metadata").metadata.version(
                  "pytrec_eval-terrier")}
    res = mteb_metrics(qrels, run)
    write_json(os.path.join(folder, "expected.json"), {**header, **res}, indent=1)
    print(f"{name}: {res['queries']} queries, ndcg@10 {res['mean']['ndcg@10']:.6f}, mrr@10 {res['mean']['mrr@10']:.6f}",
          file=sys.stderr)
    if ignore_variant:
        res = mteb_metrics(qrels, run, ignore_identical_ids=True)
        write_json(os.path.join(folder, "expected_ignore_identical_ids.json"), {**header, **res}, indent=1)
        print(f"{name} (ignore_identical_ids): ndcg@10 {res['mean']['ndcg@10']:.6f}", file=sys.stderr)


def main():
    check_tie_breaking()
    deb_run_path = os.path.join(OUT, "debian-desc", "run.json")
    if not os.path.exists(deb_run_path):
        sys.exit(f"{deb_run_path} missing: run tools/make_eval_references.py --model all-MiniLM-L6-v2 first")
    deb_qrels_path = os.path.join(EVAL, "debian-desc", "qrels", "test.tsv")
    emit("debian-desc", deb_qrels_path, read_qrels(deb_qrels_path), json.load(open(deb_run_path)),
         "all-MiniLM-L6-v2 cosine run (float32 scores), top 100 per query, written by make_eval_references.py")
    for name, make, seed, note, ign in (
        ("synthetic-graded-ties", graded_ties, 1, "grades 0-3, scores from 6 values: heavy ties", False),
        ("synthetic-binary-edge", binary_edge, 2, "binary qrels with edge cases", False),
        ("synthetic-identical-ids", identical_ids, 3, "query ids retrieved as documents (ArguAna-like)", True),
        ("synthetic-float32-ties", float32_ties, 4, "scores equal in float32, different in float64: pytrec_eval "
         "metrics rank them as ties (doc id desc), MTEB's mrr on the float64 values", False),
    ):
        qrels, run = make()
        folder = os.path.join(OUT, name)
        os.makedirs(folder, exist_ok=True)
        run = shuffled(run, seed)
        write_qrels(os.path.join(folder, "qrels.tsv"), qrels)
        write_json(os.path.join(folder, "run.json"), run)
        # read back what was written, so the expected values are those of the files
        emit(name, os.path.join(folder, "qrels.tsv"), read_qrels(os.path.join(folder, "qrels.tsv")),
             json.load(open(os.path.join(folder, "run.json"))), note, ign)


if __name__ == "__main__":
    main()
