"""Vector utilities with sentence-transformers' names: ``quantize_embeddings``, ``maxsim``, ``cos_sim``,
``dot_score``. numpy in, numpy out."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from . import _embedkit

__all__ = ["quantize_embeddings", "maxsim", "cos_sim", "dot_score"]


def _f32_2d(name: str, x) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        x = x.detach().cpu().float().numpy()
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of embeddings, not shape {a.shape}")
    return np.ascontiguousarray(a)


def quantize_embeddings(
    embeddings,
    precision: str,
    ranges: Optional[np.ndarray] = None,
    calibration_embeddings: Optional[np.ndarray] = None,
) -> np.ndarray:
    """sentence-transformers' ``quantize_embeddings``, byte for byte.

    ``precision``: ``float32``, ``int8``, ``uint8`` (per-dimension ranges from ``ranges`` — shape (2, dims),
    min then max — else from ``calibration_embeddings``, else from ``embeddings`` themselves), ``binary``
    (sign bits packed 8 per byte, minus 128, int8) or ``ubinary`` (the same bits, uint8).
    """
    if precision not in ("float32", "int8", "uint8", "binary", "ubinary"):
        raise ValueError(f"Precision {precision!r} is not supported")
    if np.asarray(embeddings).dtype in (np.int8, np.uint8):
        raise ValueError("Embeddings to quantize must be float rather than int8 or uint8.")
    one = np.ndim(embeddings) == 1
    e = _f32_2d("embeddings", embeddings)
    r = None if ranges is None else np.ascontiguousarray(np.asarray(ranges, dtype=np.float32))
    c = None if calibration_embeddings is None else _f32_2d("calibration_embeddings", calibration_embeddings)
    out = _embedkit.quantize_embeddings(e, precision, ranges=r, calibration_embeddings=c)
    return out[0] if one else out


def maxsim(queries: Sequence[np.ndarray], documents: Sequence[np.ndarray], length_normalize: bool = False):
    """Late-interaction scores, as ``sentence_transformers.util.maxsim``: for each query's token vectors and
    each document's, the sum over query tokens of the best dot product; shape (queries, documents).

    A single (tokens, dims) array on either side counts as one; a document without tokens scores -1e9.
    """
    single_q = isinstance(queries, np.ndarray) and queries.ndim == 2
    single_d = isinstance(documents, np.ndarray) and documents.ndim == 2
    qs = [_f32_2d(f"queries[{i}]", q) for i, q in enumerate([queries] if single_q else queries)]
    ds = [_f32_2d(f"documents[{i}]", d) for i, d in enumerate([documents] if single_d else documents)]
    return _embedkit.maxsim(qs, ds, length_normalize)


def cos_sim(a, b) -> np.ndarray:
    """Cosine similarity matrix of two sets of embeddings."""
    a, b = _f32_2d("a", a), _f32_2d("b", b)
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (na @ nb.T).astype(np.float32)


def dot_score(a, b) -> np.ndarray:
    """Dot-product matrix of two sets of embeddings."""
    a, b = _f32_2d("a", a), _f32_2d("b", b)
    return (a @ b.T).astype(np.float32)
