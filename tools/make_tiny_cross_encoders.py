"""Make tiny random cross-encoders (sequence-classification models) with sentence-transformers' own outputs.

Writes ``tests/fixtures/cross_encoder/``:

* ``bert-msmarco/``  BertForSequenceClassification shaped like cross-encoder/ms-marco-MiniLM-L6-v2 (BERT, GELU,
                     absolute positions, 2 token types, ``num_labels`` 1, id2label {0: LABEL_0}) scaled down to
                     2 layers × 32 hidden, 4 heads, the tiny BERT vocabulary of tests/fixtures/tiny/bert-mean;
                     ``CrossEncoder(..., max_length=48).save(...)``: sentence-transformers 6.2's layout
                     (modules.json with one Transformer, ``transformer_task: sequence-classification``,
                     ``activation_fn`` = Sigmoid in config_sentence_transformers.json, the limit in
                     tokenizer_config.json's ``model_max_length``).
* ``bert-legacy/``   the same weights as a plain transformers folder, the way the hub's ms-marco cross-encoders
                     are stored: no modules.json, ``sbert_ce_default_activation_function`` = Identity in
                     config.json (so predict gives raw logits), ``model_max_length`` 48.
* ``xlmr-bge/``      XLMRobertaForSequenceClassification shaped like BAAI/bge-reranker-base (XLM-R, layer_norm_eps
                     1e-5, 1 token type, positions offset past pad 1, ``num_labels`` 1, head dense+tanh+out_proj)
                     scaled down the same way, the tiny XLM-R unigram vocabulary of tests/fixtures/tiny/xlmr-mean,
                     max_length 40.
* ``bert-nli/``      a 3-label BertForSequenceClassification (id2label contradiction / entailment / neutral, as the
                     NLI cross-encoders), default activation Identity (logits out), max_length 48.
* ``modernbert/``    ModernBertForSequenceClassification (head dense+GELU+LayerNorm, then classifier, CLS pooling),
                     only when transformers has it; embedkit tests it once its ModernBERT encoder exists.
* ``expected.json``  per model: the pairs, each pair's token ids and type ids as CrossEncoder tokenizes it,
                     ``predict`` with the default activation and raw (Identity), ``rank`` of a query over documents
                     (num_labels 1), and the activation name.
* ``rerank.json``    the reranking figure: the committed all-MiniLM-L6-v2 first-stage run on debian-desc
                     (tests/fixtures/eval/metrics/debian-desc/run.json, top 100) reranked by ``bert-msmarco`` with
                     ``CrossEncoder.predict`` (depth 100), nDCG@10 before and after by pytrec_eval.

Run from the repository root (deterministic: seeded weights, one thread):

    tools/.venv/bin/python tools/make_tiny_cross_encoders.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import json
import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from sentence_transformers import CrossEncoder
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "cross_encoder"
TINY = ROOT / "tests" / "fixtures" / "tiny"
EVAL = ROOT / "tests" / "fixtures" / "eval"
DEPTH = 100

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=128, vocab_size=1000, initializer_range=0.2)

LONG_DOC = ("Kubernetes clusters are configured with kubectl, YAML manifests and helm charts; the control plane "
            "schedules pods onto nodes, restarts failed containers, and exposes services through load balancers "
            "and ingress controllers, which takes many more tokens than the limit allows.")
LONG_QUERY = ("a very long query that keeps going well past the limit so that longest-first truncation must cut "
              "the query and not only the document when both are long enough to matter here")

PAIRS = [
    ["how do I set up kubernetes?", "Kubernetes is set up with kubeadm or a managed service."],
    ["how do I set up kubernetes?", "The tilt of Earth's axis gives us summer and winter."],
    ["seasons on earth", "The tilt of Earth's axis (about 23.4 degrees) gives us summer and winter!"],
    ["seasons on earth", "ok"],
    ["", "an empty query"],
    ["an empty document", ""],
    ["short", LONG_DOC],
    [LONG_QUERY, "short document"],
    [LONG_QUERY, LONG_DOC],
    ["  leading and trailing spaces  ", "  kept as the tokenizer sees them "],
    ["Café, crème brûlée & naïve résumé!", "Ünïcödé tëxt wïth äccents"],
    ["numbers 12345 and 3.14159", "dates like 2024-01-31 and times 12:30"],
    ["UPPER CASE QUERY", "lower case document"],
    ["a query", "a query"],
    ["what is python?", "Python is a programming language; pip installs its packages."],
    ["what is rust?", "Rust is a systems programming language with cargo as its build tool."],
    ["zyxwvut qqqq", "Unknown words like zyxwvut and qqqq become unknown pieces."],
    ["tabs\tand\nnewlines", "in\tthe\ndocument"],
    ["same document twice", LONG_DOC],
    [LONG_DOC + " The first text is the longer one here, so longest-first cuts it more.", LONG_QUERY],
]

RANK_QUERY = "how do I set up kubernetes?"
RANK_DOCS = [p[1] for p in PAIRS[:8]] + [LONG_DOC]


def save_cross_encoder(model, tokenizer_dir: Path, out: Path, max_length: int) -> CrossEncoder:
    """Save `model` with the tokenizer, load it as CrossEncoder with `max_length`, save that into `out`."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp)
        ce = CrossEncoder(tmp, max_length=max_length)
        if out.exists():
            shutil.rmtree(out)
        ce.save(str(out))
    (out / "README.md").unlink(missing_ok=True)
    return CrossEncoder(str(out))


def references(ce: CrossEncoder) -> dict:
    """Token ids and CrossEncoder outputs for PAIRS (and RANK_* when num_labels is 1)."""
    features = [ce.preprocess([p]) for p in PAIRS]
    tokens = []
    for f in features:
        ids = f["input_ids"][0].tolist()
        types = f["token_type_ids"][0].tolist() if "token_type_ids" in f else [0] * len(ids)
        tokens.append({"ids": ids, "type_ids": types})
    out = {
        "num_labels": ce.num_labels,
        "max_length": ce.max_seq_length,
        "activation": type(ce.activation_fn).__name__,
        "pairs": PAIRS,
        "tokens": tokens,
        "scores": ce.predict(PAIRS, batch_size=32).tolist(),
        "raw_scores": ce.predict(PAIRS, batch_size=32, activation_fn=torch.nn.Identity()).tolist(),
    }
    if ce.num_labels == 1:
        out["rank_query"] = RANK_QUERY
        out["rank_documents"] = RANK_DOCS
        out["rank"] = [{"corpus_id": int(r["corpus_id"]), "score": float(r["score"])}
                       for r in ce.rank(RANK_QUERY, RANK_DOCS)]
    return out


def bert_msmarco() -> BertForSequenceClassification:
    torch.manual_seed(1701)
    cfg = BertConfig(**SMALL, type_vocab_size=2, pad_token_id=0, hidden_act="gelu", layer_norm_eps=1e-12,
                     num_labels=1)
    return BertForSequenceClassification(cfg).eval()


def xlmr_bge() -> XLMRobertaForSequenceClassification:
    torch.manual_seed(1702)
    cfg = XLMRobertaConfig(**SMALL, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                           hidden_act="gelu", layer_norm_eps=1e-5, num_labels=1)
    return XLMRobertaForSequenceClassification(cfg).eval()


def bert_nli() -> BertForSequenceClassification:
    torch.manual_seed(1703)
    labels = {0: "contradiction", 1: "entailment", 2: "neutral"}
    cfg = BertConfig(**SMALL, type_vocab_size=2, pad_token_id=0, hidden_act="gelu", layer_norm_eps=1e-12,
                     num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()})
    return BertForSequenceClassification(cfg).eval()


def modernbert():
    """A tiny ModernBertForSequenceClassification (Answer.AI's config scaled down), or None without it."""
    if not hasattr(transformers, "ModernBertForSequenceClassification"):
        return None
    from transformers import ModernBertConfig, ModernBertForSequenceClassification
    torch.manual_seed(1704)
    cfg = ModernBertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                           intermediate_size=48, max_position_embeddings=128, pad_token_id=0, cls_token_id=2,
                           sep_token_id=3, bos_token_id=2, eos_token_id=3, global_attn_every_n_layers=3,
                           local_attention=16, hidden_activation="gelu", classifier_pooling="cls",
                           classifier_activation="gelu", initializer_range=0.2, num_labels=1,
                           attn_implementation="eager")
    return ModernBertForSequenceClassification(cfg).eval()


def legacy_copy(src: Path, out: Path) -> None:
    """The hub's older cross-encoder layout: a transformers folder, the activation in config.json."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    for name in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(src / name, out / name)
    cfg = json.loads((out / "config.json").read_text())
    cfg["sbert_ce_default_activation_function"] = "torch.nn.modules.linear.Identity"
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def rerank_reference(ce: CrossEncoder) -> dict:
    """nDCG@10 of the committed first-stage run, and of the same run's top DEPTH reranked by `ce`."""
    import pytrec_eval

    corpus = {}
    with open(EVAL / "debian-desc" / "corpus.jsonl") as f:
        for line in f:
            d = json.loads(line)
            # MTEB / embedkit: title + " " + text, stripped, when there is a title.
            corpus[d["_id"]] = (f"{d['title']} {d['text']}" if d.get("title") else d["text"]).strip()
    queries = {}
    with open(EVAL / "debian-desc" / "queries.jsonl") as f:
        for line in f:
            q = json.loads(line)
            queries[q["_id"]] = q["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(EVAL / "debian-desc" / "qrels" / "test.tsv") as f:
        next(f)
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[did] = int(score)
    run = json.loads((EVAL / "metrics" / "debian-desc" / "run.json").read_text())
    pairs, keys = [], []
    for qid, docs in run.items():
        # pytrec_eval's order: score descending, then doc id descending.
        ranked = sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:DEPTH]
        for did, _ in ranked:
            pairs.append([queries[qid], corpus[did]])
            keys.append((qid, did))
    scores = ce.predict(pairs, batch_size=32)
    reranked: dict[str, dict[str, float]] = {}
    for (qid, did), s in zip(keys, scores.tolist()):
        reranked.setdefault(qid, {})[did] = float(s)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"})

    def mean_ndcg(r):
        per = evaluator.evaluate(r)
        return sum(v["ndcg_cut_10"] for v in per.values()) / len(per)

    before, after = mean_ndcg(run), mean_ndcg(reranked)
    return {
        "first_stage": "tests/fixtures/eval/metrics/debian-desc/run.json (all-MiniLM-L6-v2, cosine, top 100)",
        "cross_encoder": "bert-msmarco",
        "depth": DEPTH,
        "pairs": len(pairs),
        "ndcg@10_first_stage": before,
        "ndcg@10_reranked": after,
        "ndcg@10_change": after - before,
        "scorer": f"pytrec_eval {getattr(pytrec_eval, '__version__', '')}".strip(),
    }


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    expected = {"versions": {"sentence_transformers": __import__("sentence_transformers").__version__,
                             "transformers": transformers.__version__, "torch": torch.__version__}}
    ce = save_cross_encoder(bert_msmarco(), TINY / "bert-mean", OUT / "bert-msmarco", 48)
    expected["bert-msmarco"] = references(ce)
    legacy_copy(OUT / "bert-msmarco", OUT / "bert-legacy")
    expected["bert-legacy"] = references(CrossEncoder(str(OUT / "bert-legacy")))
    expected["xlmr-bge"] = references(save_cross_encoder(xlmr_bge(), TINY / "xlmr-mean", OUT / "xlmr-bge", 40))
    expected["bert-nli"] = references(save_cross_encoder(bert_nli(), TINY / "bert-mean", OUT / "bert-nli", 48))
    mb = modernbert()
    if mb is not None:
        expected["modernbert"] = references(save_cross_encoder(mb, TINY / "bert-mean", OUT / "modernbert", 48))
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    rerank = rerank_reference(ce)
    (OUT / "rerank.json").write_text(json.dumps(rerank, indent=1) + "\n")
    print(json.dumps(rerank, indent=1))


if __name__ == "__main__":
    main()
