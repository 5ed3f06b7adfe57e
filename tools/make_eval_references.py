"""Reference quality numbers from sentence-transformers + scipy + pytrec_eval: tests/fixtures/eval/references.json.

    tools/.venv/bin/python tools/make_eval_references.py                       # both models (mpnet: ~5x slower)
    tools/.venv/bin/python tools/make_eval_references.py --model all-MiniLM-L6-v2
    tools/.venv/bin/python tools/make_eval_references.py --bm25                # only the BM25 baseline

Each run updates its own entries in references.json (read, update, atomic rewrite), so the models may be run one at
a time. Models load from ~/.cache/embedkit/models/<name> with SentenceTransformer(path, device="cpu").

What is measured, per model:
- lee: gensim's Lee-50 (lee.cor, ISO-8859-1, one document per line; similarities0-1.txt, a 50x50 matrix of mean human
  similarity whose upper triangle i < j holds the 1,225 pairs). Each document is encoded as its line with the line
  ending removed (no other change). Pearson and Spearman (scipy.stats) between the human score and, per pair:
  cosine, dot, -euclidean distance, -manhattan distance of the (un-normalised) sentence-transformers embeddings.
  (Spearman is rank-based, so the sign convention matters: larger = more similar for all four.)
- wordsim353 / simlex999: gensim's wordsim353.tsv and simlex999.txt; lines starting with '#' skipped; columns
  word1 TAB word2 TAB gold, the gold score is column 3 (the human mean, 0-10). Each word encoded alone; Pearson and
  Spearman of cosine (and dot, -euclidean, -manhattan) against column 3.
- debian-desc (tests/fixtures/eval/debian-desc, split test): exact search over the whole corpus as MTEB does it:
  documents encoded as (title + " " + text).strip() if title is non-empty else text.strip() (MTEB's _corpus_to_dict;
  every title here is empty), queries encoded as their text unchanged, batch size 32, no prompts; score =
  model.similarity (cosine for both models) in float32; the top 1000 per query kept; metrics by pytrec_eval with
  MTEB's measure strings and MTEB's own MRR@k (see tools/make_metric_fixtures.py for the exact definitions). Means are
  unrounded (MTEB rounds nDCG/MAP/Recall/P means to 5 decimals when it reports; MRR it does not).
  The run for all-MiniLM-L6-v2 (top 100 per query) is written to tests/fixtures/eval/metrics/debian-desc/run.json for
  make_metric_fixtures.py.
- bm25 (--bm25, no model): rank_bm25.BM25Okapi (k1=1.5, b=0.75, epsilon=0.25 defaults) over lower-cased \\w+ tokens,
  to show that keyword matching does not solve debian-desc.
"""
import argparse
import importlib.metadata as md
import json
import math
import os
import platform
import re
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENSIM = os.path.join(ROOT, ".tmp", "gensim", "gensim", "test", "test_data")
EVAL = os.path.join(ROOT, "tests", "fixtures", "eval")
DATASET = os.path.join(EVAL, "debian-desc")
OUT = os.path.join(EVAL, "references.json")
MODELS = ["all-MiniLM-L6-v2", "all-mpnet-base-v2"]
KS = [1, 3, 5, 10, 100, 1000]
TOP_K = 1000
RUN_FIXTURE_DEPTH = 100
BATCH = 32


def load_beir(path: str, split: str):
    corpus = [json.loads(line) for line in open(os.path.join(path, "corpus.jsonl"), encoding="utf-8")]
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(os.path.join(path, "queries.jsonl"), encoding="utf-8"))}
    qrels = {}
    with open(os.path.join(path, "qrels", f"{split}.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            q, d, s = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(s)
    return corpus, queries, qrels


def doc_text(doc: dict) -> str:
    """MTEB's corpus text rule (mteb _corpus_to_dict)."""
    title = doc.get("title") or ""
    return (title + " " + doc["text"]).strip() if len(title) > 0 else doc["text"].strip()


def mteb_mrr(qrels, run, k):
    """MTEB's mrr() (since MTEB PR #5136): hits sorted by (score, doc id) descending, 1/rank of the first doc with
    qrels grade > 0 within the top k, else 0; averaged over the queries of the run."""
    out = {}
    for q, docs in run.items():
        rel = {d for d, g in qrels[q].items() if g > 0}
        hits = sorted(docs.items(), key=lambda x: (x[1], x[0]), reverse=True)[:k]
        out[q] = next((1.0 / (i + 1) for i, (d, _) in enumerate(hits) if d in rel), 0.0)
    return out


def retrieval_metrics(qrels, run):
    import pytrec_eval

    measures = {f"{m}." + ",".join(map(str, KS)) for m in ("ndcg_cut", "map_cut", "recall", "P")}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    n = len(per_query)
    out = {}
    for k in KS:
        for name, key in (("ndcg", "ndcg_cut"), ("map", "map_cut"), ("recall", "recall"), ("precision", "P")):
            out[f"{name}@{k}"] = math.fsum(v[f"{key}_{k}"] for v in per_query.values()) / n
        mrr = mteb_mrr(qrels, run, k)
        out[f"mrr@{k}"] = math.fsum(mrr.values()) / len(mrr)
    out["queries"] = n
    return out


def similarity_columns(a: np.ndarray, b: np.ndarray) -> dict:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = np.sum(a64 * b64, 1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    return {
        "cosine": cos,
        "dot": np.sum(a64 * b64, 1),
        "euclidean": -np.linalg.norm(a64 - b64, axis=1),
        "manhattan": -np.sum(np.abs(a64 - b64), 1),
    }


def correlations(gold, columns: dict) -> dict:
    from scipy.stats import pearsonr, spearmanr

    return {name: {"pearson": float(pearsonr(gold, s)[0]), "spearman": float(spearmanr(gold, s)[0])}
            for name, s in columns.items()}


def lee_data():
    docs = open(os.path.join(GENSIM, "lee.cor"), encoding="iso-8859-1").read().splitlines()
    assert len(docs) == 50, len(docs)
    sim = np.loadtxt(os.path.join(GENSIM, "similarities0-1.txt"))
    assert sim.shape == (50, 50)
    pairs = [(i, j) for i in range(50) for j in range(i + 1, 50)]
    return docs, pairs, np.array([sim[i, j] for i, j in pairs])


def word_pairs(name: str):
    rows = []
    for line in open(os.path.join(GENSIM, name), encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        w1, w2, gold = line.rstrip("\n").split("\t")[:3]
        rows.append((w1, w2, float(gold)))
    return rows


def eval_model(name: str) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    path = os.path.expanduser(f"~/.cache/embedkit/models/{name}")
    model = SentenceTransformer(path, device="cpu")
    enc = lambda texts: model.encode(texts, batch_size=BATCH, convert_to_numpy=True, show_progress_bar=False)
    res = {"path": f"~/.cache/embedkit/models/{name}", "max_seq_length": model.max_seq_length,
           "similarity_fn": str(model.similarity_fn_name), "dims": model.get_embedding_dimension()}

    t = time.time()
    docs, pairs, gold = lee_data()
    e = enc(docs)
    i, j = np.array(pairs).T
    res["lee"] = {"pairs": len(pairs), **correlations(gold, similarity_columns(e[i], e[j]))}
    print(f"{name} lee {res['lee']['cosine']} ({time.time() - t:.0f}s)", file=sys.stderr)

    for task, file in (("wordsim353", "wordsim353.tsv"), ("simlex999", "simlex999.txt")):
        rows = word_pairs(file)
        words = sorted({w for r in rows for w in r[:2]})
        ew = dict(zip(words, enc(words)))
        a = np.stack([ew[r[0]] for r in rows])
        b = np.stack([ew[r[1]] for r in rows])
        res[task] = {"pairs": len(rows), **correlations([r[2] for r in rows], similarity_columns(a, b))}
        print(f"{name} {task} {res[task]['cosine']}", file=sys.stderr)

    t = time.time()
    corpus, queries, qrels = load_beir(DATASET, "test")
    cache = os.path.join(ROOT, ".tmp", "eval-cache")
    os.makedirs(cache, exist_ok=True)
    cpath = os.path.join(cache, f"{name}.debian-desc.corpus.npy")
    texts = [doc_text(d) for d in corpus]
    if os.path.exists(cpath):
        d_emb = np.load(cpath)
    else:
        d_emb = enc(texts)
        np.save(cpath, d_emb)
    qids = sorted(qrels, key=lambda q: int(q[3:]))
    q_emb = enc([queries[q] for q in qids])
    scores = model.similarity(torch.as_tensor(q_emb), torch.as_tensor(d_emb))  # float32, like MTEB
    vals, idx = torch.topk(scores, min(TOP_K, len(corpus)), dim=1)
    run = {q: {corpus[c]["_id"]: float(s) for s, c in zip(vals[r].tolist(), idx[r].tolist())}
           for r, q in enumerate(qids)}
    res["debian-desc"] = {"split": "test", "top_k": TOP_K, **retrieval_metrics(qrels, run)}
    print(f"{name} debian-desc ndcg@10 {res['debian-desc']['ndcg@10']} ({time.time() - t:.0f}s)", file=sys.stderr)
    if name == "all-MiniLM-L6-v2":
        out = os.path.join(EVAL, "metrics", "debian-desc")
        os.makedirs(out, exist_ok=True)
        short = {q: dict(sorted(docs.items(), key=lambda x: -x[1])[:RUN_FIXTURE_DEPTH]) for q, docs in run.items()}
        write_json(os.path.join(out, "run.json"), short, indent=None)
    return res


def eval_bm25() -> dict:
    from rank_bm25 import BM25Okapi

    corpus, queries, qrels = load_beir(DATASET, "test")
    tok = lambda s: re.findall(r"\w+", s.lower())
    bm = BM25Okapi([tok(doc_text(d)) for d in corpus])
    run = {}
    for q in qrels:
        s = bm.get_scores(tok(queries[q]))
        top = np.argsort(-s, kind="stable")[:TOP_K]
        run[q] = {corpus[i]["_id"]: float(s[i]) for i in top}
    return {"debian-desc": {"split": "test", "tokenizer": "re.findall(r'\\w+', text.lower())",
                            **retrieval_metrics(qrels, run)}}


def write_json(path: str, obj, indent=1) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def versions() -> dict:
    out = {"python": platform.python_version()}
    for p in ("torch", "sentence-transformers", "transformers", "tokenizers", "numpy", "scipy", "pytrec_eval-terrier",
              "rank_bm25"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


CONVENTIONS = {
    "retrieval_doc_text": "(title + ' ' + text).strip() if title non-empty else text.strip()",
    "retrieval_query_text": "text unchanged",
    "retrieval_score": "model.similarity (cosine), float32, exact over the whole corpus, top 1000",
    "retrieval_metrics": "pytrec_eval ndcg_cut/map_cut/recall/P + MTEB mrr; unrounded means over the queries",
    "sts": "texts encoded separately (batch 32, embeddings not normalised); cosine, dot, -euclidean, -manhattan"
           " in float64 from the float32 embeddings; scipy pearsonr/spearmanr against the gold column",
    "lee": "lee.cor ISO-8859-1 lines (line ending removed), upper triangle i<j of similarities0-1.txt",
    "word_sets": "skip lines starting with '#'; columns word1, word2, gold (3rd column)",
    "batch_size": BATCH,
}


def update(key: str, value) -> None:
    """Re-reads references.json and sets one entry, so separate runs (one per model) do not undo each other."""
    ref = json.load(open(OUT)) if os.path.exists(OUT) else {}
    ref["conventions"] = CONVENTIONS
    ref["versions"] = versions()
    if key == "bm25":
        ref["bm25"] = value
    else:
        ref.setdefault("models", {})[key] = value
    write_json(OUT, ref)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", choices=MODELS)
    ap.add_argument("--bm25", action="store_true", help="only the BM25 baseline")
    args = ap.parse_args()
    if args.bm25:
        res = eval_bm25()
        print(f"bm25 ndcg@10 {res['debian-desc']['ndcg@10']}", file=sys.stderr)
        update("bm25", res)
        return
    import torch

    for name in args.model or MODELS:
        res = eval_model(name)
        res["torch_threads"] = torch.get_num_threads()
        update(name, res)


if __name__ == "__main__":
    main()
