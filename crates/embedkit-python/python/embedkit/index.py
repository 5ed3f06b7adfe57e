"""embedkit's index files from Python: build from texts or vectors, open (memory-mapped), search."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

import numpy as np

from . import _embedkit

if TYPE_CHECKING:  # pragma: no cover
    from . import SentenceTransformer

__all__ = ["Index"]


class Index:
    """An embedkit index file: exact float32 or int8 vectors, or binary ones rescored with the float query.

    The same files as ``embedkit index build`` / ``embedkit search``. Build one with :meth:`Index.build`, open
    one with :meth:`Index.open`; :meth:`search` takes query texts (embedded with the index's model) or vectors.
    """

    def __init__(self, path: Union[str, os.PathLike], model: Optional["SentenceTransformer"] = None) -> None:
        self._native = _embedkit.Index(os.fspath(path))
        self.meta: Dict[str, Any] = dict(self._native.meta())
        self._model = model

    @classmethod
    def open(cls, path: Union[str, os.PathLike], model: Optional["SentenceTransformer"] = None) -> "Index":
        """Opens an index; ``model`` embeds query texts (default: the model the index was built with)."""
        return cls(path, model)

    @classmethod
    def build(
        cls,
        path: Union[str, os.PathLike],
        texts: Optional[Sequence[str]] = None,
        *,
        model: Optional["SentenceTransformer"] = None,
        embeddings: Optional[np.ndarray] = None,
        ids: Optional[Sequence[str]] = None,
        precision: str = "float32",
        rescore_vectors: Optional[str] = None,
        metric: str = "cosine",
        batch_size: int = 32,
        prompt_name: Optional[str] = None,
    ) -> "Index":
        """Writes an index to ``path`` (atomically) and opens it.

        Give ``texts`` and a ``model`` (the texts are embedded as documents), or ready ``embeddings``.
        ``precision``: float32, int8 (ranges from these vectors), binary or ubinary; ``rescore_vectors``
        (binary only): int8 or float32 copies kept for rescoring. ``ids`` default to row numbers.
        """
        if (texts is None) == (embeddings is None):
            raise ValueError("give either texts (with model=) or embeddings")
        name = fingerprint = ""
        if texts is not None:
            if model is None:
                raise ValueError("texts need a model to embed them: Index.build(path, texts, model=...)")
            if isinstance(texts, str):
                raise TypeError("texts must be a list of strings, not one string")
            embeddings = model.encode_document(
                list(texts), batch_size=batch_size, prompt_name=prompt_name, show_progress_bar=False
            )
        if model is not None:
            name = model._kwargs["model_name_or_path"]
            fingerprint = model.fingerprint
        e = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
        if e.ndim != 2:
            raise ValueError(f"embeddings must be a 2-D array, not shape {e.shape}")
        _embedkit.Index.write(
            os.fspath(path),
            e,
            ids=None if ids is None else [str(i) for i in ids],
            precision=precision,
            rescore_vectors=rescore_vectors,
            metric=metric,
            model=name,
            fingerprint=fingerprint,
        )
        return cls(path, model)

    def __len__(self) -> int:
        return len(self._native)

    def _query_model(self) -> "SentenceTransformer":
        if self._model is None:
            if not self.meta["model"]:
                raise ValueError("this index was built from vectors without a model: pass query vectors, or model=")
            from . import SentenceTransformer

            self._model = SentenceTransformer(self.meta["model"])
        if self.meta["fingerprint"] and self._model.fingerprint != self.meta["fingerprint"]:
            raise ValueError(
                f"index '{self.meta['path']}' was built with another model or arithmetic than "
                f"{self._model._kwargs['model_name_or_path']!r} (fingerprints differ)"
            )
        return self._model

    def search(
        self,
        queries: Union[str, Sequence[str], np.ndarray],
        top_k: int = 10,
        rescore: int = 4,
        prompt_name: Optional[str] = None,
    ) -> List[List[Dict[str, Any]]]:
        """The ``top_k`` best documents per query, best first, as sentence-transformers' ``semantic_search``
        gives them: ``[{"corpus_id": row, "score": s, "id": id}, …]`` per query.

        ``queries``: texts (embedded as queries by the model) or an array of vectors. ``rescore``: binary
        indexes keep ``rescore × top_k`` candidates by Hamming distance and rescore them (0: Hamming only).
        """
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {top_k}")
        if isinstance(queries, str):
            queries = [queries]
        if isinstance(queries, np.ndarray):
            q = np.asarray(queries, dtype=np.float32)
            q = q[None, :] if q.ndim == 1 else q
        else:
            q = self._query_model().encode_query(list(queries), prompt_name=prompt_name, show_progress_bar=False)
        rows, scores = self._native.search_vectors(np.ascontiguousarray(q, dtype=np.float32), top_k, rescore)
        out = []
        for r, s in zip(rows, scores):
            keep = r >= 0
            ids = self._native.ids([int(x) for x in r[keep]])
            out.append(
                [{"corpus_id": int(c), "score": float(v), "id": i} for c, v, i in zip(r[keep], s[keep], ids)]
            )
        return out
