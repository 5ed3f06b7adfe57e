"""embedkit.SentenceTransformer against sentence-transformers 6.2's own outputs on the same calls.

Every case of tests/fixtures/python/manifest.json (made by tools/make_python_fixtures.py with
sentence-transformers, torch and the same model folders) is replayed here with embedkit, which has no
PyTorch: torch tensors in the references are compared with embedkit's numpy arrays of the same dtype.
"""

from __future__ import annotations

import json
import warnings
from typing import Any, Dict

import numpy as np
import pytest

import embedkit
from conftest import FIXTURES, MINILM, ROOT

PY_FIXTURES = FIXTURES / "python"
MANIFEST = json.loads((PY_FIXTURES / "manifest.json").read_text())
TEXTS = MANIFEST["texts"]

_models: Dict[str, embedkit.SentenceTransformer] = {}


def model_for(case) -> embedkit.SentenceTransformer:
    key = json.dumps([case["model"], case["constructor_kwargs"]], sort_keys=True)
    if key not in _models:
        name = MINILM if case["model"] == "minilm" else str(ROOT / case["model"])
        _models[key] = embedkit.SentenceTransformer(name, **case["constructor_kwargs"])
    return _models[key]


def resolve(value):
    """The manifest's references ($texts, $text, $npy) as Python values."""
    if isinstance(value, dict) and len(value) == 1:
        (k, v), = value.items()
        if k == "$texts":
            return list(TEXTS) if v == "all" else [TEXTS[i] for i in v]
        if k == "$text":
            return TEXTS[v]
        if k == "$npy":
            return np.load(PY_FIXTURES / v)
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    return value


def numpy_dtype(node) -> np.dtype:
    return np.dtype(node["dtype"].replace("torch.", ""))


def check_array(got, node, path: str, quantized: bool) -> None:
    want = np.load(PY_FIXTURES / node["file"])
    got = np.asarray(got)
    assert got.dtype == numpy_dtype(node), f"{path}: dtype {got.dtype}, sentence-transformers {node['dtype']}"
    assert list(got.shape) == node["shape"], f"{path}: shape {got.shape}, sentence-transformers {node['shape']}"
    if want.dtype.kind == "f":
        if want.ndim == 2 and want.shape[0] > 0 and np.all(np.linalg.norm(want, axis=1) > 0):
            # Rows are vectors: the project's bar is cosine >= 0.9999 per row, and values within 1e-4.
            cos = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
            assert cos.min() >= 0.9999, f"{path}: min cosine {cos.min()}"
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=path)
    elif quantized and node["dtype"] in ("int8", "uint8", "torch.int8", "torch.uint8"):
        # Quantized by encode from embedkit's own floats (1e-7 from PyTorch's): a value on a bucket edge may
        # land one level away (with two rows every value is on an edge); packed bits may differ only where a
        # component is within rounding of 0. quantize_embeddings on the same floats is byte-exact (its cases).
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        if "binary" in path:
            assert np.mean(got == want) >= 0.995, f"{path}: {np.mean(got != want):.4f} of bytes differ"
        else:
            assert diff.max() <= 1, f"{path}: a value {diff.max()} levels away"
    else:
        np.testing.assert_array_equal(got, want, err_msg=path)


def check(got, node, path: str, quantized: bool = False) -> None:
    kind = node["type"]
    if kind in ("numpy.ndarray", "torch.Tensor"):
        if kind == "torch.Tensor" and hasattr(got, "numpy"):
            got = got.numpy()
        check_array(got, node, path, quantized)
    elif kind == "list":
        assert isinstance(got, list), f"{path}: {type(got).__name__}, sentence-transformers gives a list"
        assert len(got) == len(node["items"]), f"{path}: {len(got)} items, sentence-transformers {len(node['items'])}"
        for i, (g, n) in enumerate(zip(got, node["items"])):
            check(g, n, f"{path}[{i}]", quantized)
    elif kind == "dict":
        assert hasattr(got, "keys"), f"{path}: {type(got).__name__}, sentence-transformers gives a mapping"
        for key, n in node["items"].items():
            assert key in got, f"{path}: no key {key!r} (sentence-transformers has {list(node['items'])})"
            check(got[key], n, f"{path}.{key}", quantized)
    elif kind in ("int", "str", "float", "bool", "NoneType"):
        assert got == node["value"], f"{path}: {got!r}, sentence-transformers {node['value']!r}"
    else:
        raise AssertionError(f"{path}: unknown node type {kind}")


def output_none_unpadded(case) -> bool:
    # sentence-transformers pads output_value=None results to the batch; embedkit's batches are unpadded, so
    # each text's arrays are its own tokens. The references are compared on those tokens (see below).
    return case["method"].startswith("encode") and "output_value" in case["kwargs"] and case["kwargs"]["output_value"] is None


def call(case) -> Any:
    kwargs = {k: resolve(v) for k, v in case["kwargs"].items()}
    method = case["method"]
    if method == "quantize_embeddings":
        return embedkit.quantize_embeddings(**kwargs)
    model = model_for(case)
    if method == "attributes":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            old = model.get_sentence_embedding_dimension()
        assert any(issubclass(w.category, FutureWarning) for w in caught), "no FutureWarning"
        return {
            "get_embedding_dimension()": model.get_embedding_dimension(),
            "get_sentence_embedding_dimension()": old,
            "max_seq_length": model.max_seq_length,
            "prompts": model.prompts,
            "default_prompt_name": model.default_prompt_name,
            "similarity_fn_name": model.similarity_fn_name,
            "truncate_dim": model.truncate_dim,
        }
    return getattr(model, method)(**kwargs)


CASES = [c for c in MANIFEST["cases"]]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case):
    out = case["output"]
    try:
        import torch  # noqa: F401

        has_torch = True
    except ImportError:
        has_torch = False
    if case["kwargs"].get("convert_to_tensor") and not has_torch:
        with pytest.raises(ImportError, match="PyTorch"):
            call(case)
        return
    if out["type"] == "error":
        expected = {"ValueError": ValueError, "Exception": Exception, "TypeError": TypeError}[out["exception"]]
        with pytest.raises(expected) as info:
            call(case)
        assert str(info.value), "an error without a message"
        if out["exception"] == "ValueError" and "quantization ranges" not in out["message"]:
            assert str(info.value) == out["message"]
        return
    got = call(case)
    # quantize_embeddings gets sentence-transformers' own floats, so its bytes must be equal exactly.
    quantized = case["kwargs"].get("precision", "float32") != "float32"
    if out["type"] == "attributes":
        assert got == out["values"]
    elif output_none_unpadded(case):
        items = out["items"] if out["type"] == "list" else [out]
        gots = got if out["type"] == "list" else [got]
        assert len(gots) == len(items)
        for i, (g, node) in enumerate(zip(gots, items)):
            mask = np.load(PY_FIXTURES / node["items"]["attention_mask"]["file"]).astype(bool)
            for key in ("input_ids", "token_embeddings"):
                want = np.load(PY_FIXTURES / node["items"][key]["file"])[mask]
                if want.dtype.kind == "f":
                    np.testing.assert_allclose(g[key], want, rtol=1e-4, atol=1e-4, err_msg=f"[{i}].{key}")
                else:
                    np.testing.assert_array_equal(g[key], want, err_msg=f"[{i}].{key}")
            want = np.load(PY_FIXTURES / node["items"]["sentence_embedding"]["file"])
            np.testing.assert_allclose(g["sentence_embedding"], want, rtol=1e-4, atol=1e-4)
    else:
        check(got, out, case["name"], quantized)
