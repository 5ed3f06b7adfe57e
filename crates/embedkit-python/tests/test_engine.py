"""The package against the `embedkit` command and the golden sentence-transformers vectors; errors."""

from __future__ import annotations

import json
import pickle
import subprocess

import numpy as np
import pytest

import embedkit
from conftest import FIXTURES, MINILM, ROOT, cli_binary

GOLDEN = json.loads((FIXTURES / "golden" / f"{MINILM}.json").read_text())


def cli_vectors(texts, *args) -> np.ndarray:
    """`embedkit embed` of `texts` (one per line on stdin) as .npy, through the CLI's own output writer."""
    import tempfile

    lines = "\n".join(t.replace("\n", " ") for t in texts) + "\n"
    with tempfile.TemporaryDirectory() as d:
        out = f"{d}/v.npy"
        subprocess.run(
            [str(cli_binary()), "embed", "--quiet", "--no-cache", "--input", "-", "--format", "npy", "--output", out, *args],
            input=lines.encode(),
            check=True,
        )
        return np.load(out)


def test_bit_equal_to_the_cli_on_the_golden_texts(minilm):
    texts = [t for t in GOLDEN["texts"] if "\n" not in t and t.strip()]
    assert len(texts) >= 30
    ours = minilm.encode(texts)
    theirs = cli_vectors(texts)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    assert np.array_equal(ours, theirs), f"max difference {np.abs(ours - theirs).max()}"


def test_int8_bit_equal_to_the_cli():
    texts = [t for t in GOLDEN["texts"] if "\n" not in t and t.strip()][:16]
    model = embedkit.SentenceTransformer(MINILM, compute="int8")
    assert np.array_equal(model.encode(texts), cli_vectors(texts, "--compute", "int8"))


def test_golden_vectors_of_sentence_transformers(minilm):
    ours = minilm.encode(GOLDEN["texts"])
    ref = np.asarray(GOLDEN["embeddings"], dtype=np.float32)
    cos = np.sum(ours * ref, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.9999, cos.min()


def test_one_text_equals_the_same_text_in_a_batch(minilm):
    texts = GOLDEN["texts"][:20]
    batch = minilm.encode(texts, batch_size=7)
    for i, t in enumerate(texts):
        np.testing.assert_allclose(minilm.encode(t), batch[i], atol=1e-6)


def test_a_list_is_zero_copy_float32_c_contiguous(minilm):
    v = minilm.encode(["a", "b", "c"])
    assert v.flags["C_CONTIGUOUS"] and v.flags["OWNDATA"] is False  # the buffer is Rust's, not a copy
    assert v.base is not None


def test_token_embeddings_match_the_cli_token_vectors(minilm):
    texts = ["late interaction needs token vectors", "a second, longer text with more tokens in it"]
    ours = minilm.encode(texts, output_value="token_embeddings")
    out = subprocess.run(
        [str(cli_binary()), "embed", "--quiet", "--no-cache", "--tokens", *texts], check=True, capture_output=True, text=True
    )
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    for o, r in zip(ours, rows):
        np.testing.assert_array_equal(o, np.asarray(r["embeddings"], dtype=np.float32))


def test_pickles_by_reference_and_unpickles_to_equal_vectors(minilm):
    data = pickle.dumps(minilm)
    assert len(data) < 1024, len(data)
    assert b"safetensors" not in data
    again = pickle.loads(data)
    texts = GOLDEN["texts"][:8]
    assert np.array_equal(again.encode(texts), minilm.encode(texts))


def test_pickle_keeps_options():
    m = embedkit.SentenceTransformer(MINILM, truncate_dim=64, compute="int8", threads=1)
    m.max_seq_length = 32
    again = pickle.loads(pickle.dumps(m))
    assert again.truncate_dim == 64 and again.threads == 1 and again.max_seq_length == 32
    assert np.array_equal(again.encode(["options survive pickling"]), m.encode(["options survive pickling"]))


def test_max_seq_length_truncates(minilm_dir):
    m = embedkit.SentenceTransformer(str(minilm_dir))
    long = " ".join(["token"] * 100)
    full = m.encode(long)
    m.max_seq_length = 16
    assert m.tokenize([long])["input_ids"].shape == (1, 16)
    cut = m.encode(long)
    assert not np.allclose(full, cut)
    np.testing.assert_allclose(cut, cli_vectors([long], "--max-length", "16")[0], atol=1e-6)


def test_missing_model_is_file_not_found():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        embedkit.SentenceTransformer(str(ROOT / "no" / "such" / "model"))
    with pytest.raises(FileNotFoundError, match="unknown model"):
        embedkit.SentenceTransformer("not-a-catalog-model")


def test_bad_options_are_value_errors(minilm):
    with pytest.raises(ValueError, match="compute"):
        embedkit.SentenceTransformer(MINILM, compute="int4")
    with pytest.raises(ValueError, match="threads"):
        embedkit.SentenceTransformer(MINILM, threads=0)
    with pytest.raises(ValueError, match="expected cpu, auto or cuda"):
        embedkit.SentenceTransformer(MINILM, device="gpu")
    with pytest.raises(ValueError, match="Prompt name 'nope'"):
        minilm.encode(["x"], prompt_name="nope")
    with pytest.raises(ValueError, match="Precision"):
        minilm.encode(["x"], precision="int4")
    with pytest.raises(TypeError, match=r"inputs\[1\]"):
        minilm.encode(["x", 3])
    with pytest.raises(ValueError, match="single embedding"):
        minilm.encode("one text", precision="int8")


def test_a_file_is_not_a_model_folder(tmp_path):
    f = tmp_path / "model.txt"
    f.write_text("not a model")
    with pytest.raises(ValueError, match="file"):
        embedkit.SentenceTransformer(str(f))


def test_convert_to_tensor_without_torch_is_a_clear_error(minilm):
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs PyTorch"):
            minilm.encode(["x"], convert_to_tensor=True)
    else:
        t = minilm.encode(["x"], convert_to_tensor=True)
        assert tuple(t.shape) == (1, 384)


def test_quantize_embeddings_bytes_equal_sentence_transformers():
    # The committed quantization fixtures (tools/make_quantization_fixture.py): real vectors, ST's bytes.
    q = FIXTURES / "quantization"
    emb = np.load(q / "embeddings.npy")
    for precision in ("int8", "binary", "ubinary"):
        want = np.load(q / f"{precision}.npy")
        got = embedkit.quantize_embeddings(emb, precision)
        assert got.dtype == want.dtype and np.array_equal(got, want), precision
    calib = np.load(q / "calibration.npy")
    want = np.load(q / "int8_calibration.npy")
    assert np.array_equal(embedkit.quantize_embeddings(emb, "int8", calibration_embeddings=calib), want)


def test_maxsim_equals_sentence_transformers_util_maxsim():
    # tools/make_maxsim_fixture.py: real MiniLM token vectors (queries then documents, token_counts rows
    # each) and sentence_transformers.util.maxsim's scores on them.
    meta = json.loads((FIXTURES / "maxsim" / "meta.json").read_text())
    tokens = np.load(FIXTURES / "maxsim" / "tokens.npy").astype(np.float32)
    ends = np.cumsum(meta["token_counts"])
    arrays = [tokens[e - n : e] for n, e in zip(meta["token_counts"], ends)]
    nq = len(meta["queries"])
    queries, docs = arrays[:nq], arrays[nq:]
    np.testing.assert_allclose(embedkit.util.maxsim(queries, docs), meta["scores"]["raw"], rtol=1e-5)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(
        embedkit.util.maxsim([unit(q) for q in queries], [unit(d) for d in docs]), meta["scores"]["normalized"], rtol=1e-5
    )
    empty = np.zeros((0, tokens.shape[1]), dtype=np.float32)
    got = embedkit.util.maxsim(queries, docs + [empty])
    np.testing.assert_allclose(got, meta["scores"]["with_empty_doc"], rtol=1e-5)


def test_index_build_and_search(tmp_path, minilm):
    corpus = [t for t in GOLDEN["texts"] if t.strip()][:30]
    ids = [f"doc-{i}" for i in range(len(corpus))]
    for precision, rescore in (("float32", None), ("int8", None), ("ubinary", "float32")):
        path = tmp_path / f"{precision}.idx"
        index = embedkit.Index.build(path, corpus, model=minilm, ids=ids, precision=precision, rescore_vectors=rescore)
        assert len(index) == len(corpus) and index.meta["precision"] in (precision, "binary")
        hits = embedkit.Index.open(path, model=minilm).search(corpus[:5], top_k=3)
        for i, h in enumerate(hits):
            assert h[0]["id"] == f"doc-{i}" and h[0]["corpus_id"] == i, (precision, h)
            assert h[0]["score"] >= h[1]["score"] >= h[2]["score"]
    # Built with the model, reopened without: the index's own model embeds the queries.
    again = embedkit.Index.open(tmp_path / "float32.idx").search("x" + corpus[3], top_k=1)
    assert again[0][0]["id"] == "doc-3"
    # Exact float32 scores equal the model's cosine similarity.
    vecs = minilm.encode(corpus)
    hits = embedkit.Index.open(tmp_path / "float32.idx", model=minilm).search(vecs[:2], top_k=2)
    sims = minilm.similarity(vecs[:2], vecs)
    for qi, h in enumerate(hits):
        for hit in h:
            assert abs(hit["score"] - sims[qi, hit["corpus_id"]]) < 1e-5


def test_index_refuses_another_model(tmp_path, minilm):
    path = tmp_path / "f32.idx"
    embedkit.Index.build(path, ["a", "b", "c"], model=minilm)
    other = embedkit.SentenceTransformer(MINILM, compute="int8")
    with pytest.raises(ValueError, match="another model"):
        embedkit.Index.open(path, model=other).search(["a"])
