"""embedkit.CrossEncoder against sentence-transformers 6.2's CrossEncoder on the same pairs.

The references are tests/fixtures/cross_encoder/expected.json (made by tools/make_tiny_cross_encoders.py with
sentence-transformers 6.2 and torch): `predict` scores (with the model's activation and raw), and `rank` of one
query over nine documents, for tiny BERT, XLM-R and ModernBERT cross-encoders with one label (Sigmoid, and the
hub's legacy Identity) and a BERT NLI model with three labels (Identity).
"""

from __future__ import annotations

import json
import multiprocessing
import pickle

import numpy as np
import pytest

import embedkit
from conftest import FIXTURES, MINILM

CROSS = FIXTURES / "cross_encoder"
EXPECTED = json.loads((CROSS / "expected.json").read_text())
MODELS = ["bert-msmarco", "bert-legacy", "xlmr-bge", "bert-nli", "modernbert"]
RANKED = [m for m in MODELS if "rank" in EXPECTED[m]]

_models = {}


def model(name: str) -> embedkit.CrossEncoder:
    if name not in _models:
        _models[name] = embedkit.CrossEncoder(str(CROSS / name), threads=2)
    return _models[name]


def pairs(name: str):
    return [tuple(p) for p in EXPECTED[name]["pairs"]]


@pytest.mark.parametrize("name", MODELS)
def test_predict_equals_sentence_transformers(name):
    e = EXPECTED[name]
    m = model(name)
    assert m.num_labels == e["num_labels"]
    assert m.max_length == e["max_length"]
    assert m.activation_fn == e["activation"].lower()
    scores = m.predict(pairs(name))
    want = np.array(e["scores"], dtype=np.float64)
    # sentence-transformers: (n,) for one label, (n, num_labels) otherwise; float32.
    assert scores.dtype == np.float32
    assert scores.shape == want.shape
    assert np.abs(scores - want).max() < 1e-5
    raw = m.predict(pairs(name), activation_fn="identity")
    assert np.abs(raw - np.array(e["raw_scores"])).max() < 1e-5
    # Lists of lists (what most callers pass) and a numpy array of strings are the same batch.
    as_lists = m.predict([list(p) for p in pairs(name)], batch_size=3)
    assert np.abs(as_lists - scores).max() < 1e-5
    as_array = m.predict(np.array(e["pairs"]))
    assert np.abs(as_array - scores).max() < 1e-5


@pytest.mark.parametrize("name", ["bert-msmarco", "xlmr-bge", "bert-nli"])
def test_one_pair_equals_it_in_a_batch(name):
    m = model(name)
    batch = m.predict(pairs(name))
    for i, pair in enumerate(pairs(name)):
        alone = m.predict(pair)
        # One pair: a float32 scalar for one label, (num_labels,) otherwise, as sentence-transformers.
        assert np.shape(alone) == np.shape(batch[i])
        assert np.abs(alone - batch[i]).max() < 1e-5


@pytest.mark.parametrize("name", RANKED)
def test_rank_equals_sentence_transformers(name):
    e = EXPECTED[name]
    got = model(name).rank(e["rank_query"], e["rank_documents"])
    assert [r["corpus_id"] for r in got] == [r["corpus_id"] for r in e["rank"]]
    for g, w in zip(got, e["rank"]):
        assert set(g) == {"corpus_id", "score"}
        assert isinstance(g["score"], float)
        assert abs(g["score"] - w["score"]) < 1e-5
    top = model(name).rank(e["rank_query"], e["rank_documents"], top_k=3, return_documents=True)
    assert [r["corpus_id"] for r in top] == [r["corpus_id"] for r in e["rank"][:3]]
    assert [r["text"] for r in top] == [e["rank_documents"][r["corpus_id"]] for r in top]


def test_softmax_and_activations_on_three_labels():
    m = model("bert-nli")
    raw = np.array(EXPECTED["bert-nli"]["raw_scores"], dtype=np.float64)
    want = np.exp(raw) / np.exp(raw).sum(axis=1, keepdims=True)
    probs = m.predict(pairs("bert-nli"), apply_softmax=True)
    assert probs.shape == (len(raw), 3)
    assert np.abs(probs - want).max() < 1e-5
    assert np.abs(probs.sum(axis=1) - 1).max() < 1e-5
    # A callable gets the logits (torch modules of the known classes run natively; no torch here).
    doubled = m.predict(pairs("bert-nli"), activation_fn=lambda x: 2 * x)
    assert np.abs(doubled - 2 * raw).max() < 1e-5
    sig = m.predict(pairs("bert-nli"), activation_fn="Sigmoid")
    assert np.abs(sig - 1 / (1 + np.exp(-raw))).max() < 1e-5
    # apply_softmax changes nothing on one label (sentence-transformers softmaxes only 2-D scores).
    one = model("bert-msmarco")
    assert np.array_equal(one.predict(pairs("bert-msmarco"), apply_softmax=True), one.predict(pairs("bert-msmarco")))


def test_output_types_and_empty_input():
    m = model("bert-msmarco")
    p = pairs("bert-msmarco")[:3]
    rows = m.predict(p, convert_to_numpy=False)
    assert isinstance(rows, list) and len(rows) == 3
    empty = m.predict([])
    assert isinstance(empty, np.ndarray) and empty.shape == (0,)
    assert m.rank("q", []) == []
    assert m.predict(sentences=p).shape == (3,)


def test_max_length_cuts_pairs():
    m = embedkit.CrossEncoder(str(CROSS / "bert-msmarco"), max_length=12, threads=1)
    assert m.max_length == 12
    long_pairs = pairs("bert-msmarco")[6:9]
    cut = m.predict(long_pairs)
    full = model("bert-msmarco").predict(long_pairs)
    assert np.abs(cut - full).max() > 1e-4
    m.max_length = None
    assert m.max_length == EXPECTED["bert-msmarco"]["max_length"]
    assert np.abs(m.predict(long_pairs) - full).max() < 1e-5


def test_bad_input_is_a_clear_error():
    m = model("bert-msmarco")
    with pytest.raises(TypeError, match="not a str"):
        m.predict("just one text")
    with pytest.raises(ValueError, match="3 texts"):
        m.predict([("a", "b", "c")])
    with pytest.raises(TypeError, match=r"inputs\[1\] is str"):
        m.predict([("a", "b"), "c"])
    with pytest.raises(TypeError, match=r"inputs\[0\]\[1\] is int"):
        m.predict([("a", 3)])
    with pytest.raises(ValueError, match="batch_size"):
        m.predict([("a", "b")], batch_size=0)
    with pytest.raises(ValueError, match="activation_fn"):
        m.predict([("a", "b")], activation_fn="softplus")
    with pytest.raises(ValueError, match="num_labels=1"):
        model("bert-nli").rank("q", ["a", "b"])
    with pytest.raises(TypeError, match="documents"):
        m.rank("q", "one document")


def test_loading_errors():
    with pytest.raises(FileNotFoundError):
        embedkit.CrossEncoder(str(CROSS / "no-such-model"))
    with pytest.raises(ValueError, match="num_labels=2"):
        embedkit.CrossEncoder(str(CROSS / "bert-msmarco"), num_labels=2)
    with pytest.raises(ValueError, match="CPU"):
        embedkit.CrossEncoder(str(CROSS / "bert-msmarco"), device="cuda")
    with pytest.raises(TypeError, match="unexpected keyword"):
        embedkit.CrossEncoder(str(CROSS / "bert-msmarco"), no_such_option=1)
    # An embedding model is not a cross-encoder: an error, never a panic.
    with pytest.raises(RuntimeError, match="not a cross-encoder"):
        embedkit.CrossEncoder(MINILM)


def _score_in_child():
    # The parent's model object, inherited through fork() (not pickled).
    return model("bert-msmarco").predict(pairs("bert-msmarco")).tolist()


def test_pickle_and_fork():
    m = model("bert-msmarco")
    want = m.predict(pairs("bert-msmarco"))
    again = pickle.loads(pickle.dumps(m))
    assert np.abs(again.predict(pairs("bert-msmarco")) - want).max() < 1e-5
    # A forked child loads its own copy (the parent's worker threads do not exist there).
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got = pool.apply_async(_score_in_child).get(timeout=120)
    assert np.abs(np.array(got) - want).max() < 1e-5
