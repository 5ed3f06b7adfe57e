"""Ray Data integration: :class:`Embedder`, a callable class for ``Dataset.map_batches``.

::

    import ray
    from embedkit.ray import Embedder

    ds = ray.data.read_parquet("corpus/")                       # a column of texts (and ids)
    ds = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"model": "all-MiniLM-L6-v2", "text_column": "text"},
        compute=ray.data.ActorPoolStrategy(size=4),              # 4 actors; each loads the model once
        num_cpus=2,                                              # CPUs per actor = its compute threads
        batch_size=256,                                          # rows per call
        batch_format="pyarrow",
    )
    ds.write_parquet("vectors/")                                 # id, text, embedding

(``concurrency=4`` in place of ``compute=`` does the same; Ray 2.51 and later warn that it is deprecated.)
Each actor loads the model once, in its constructor, and computes with as many threads as Ray gave it CPUs
(``num_cpus``), so actors on one machine do not oversubscribe its cores.

A text's vector does not depend on the actor, node or thread count that computed it, and a re-executed block
(after a node was lost) gives the same bytes. It can depend on the batch in the last bit: embedkit's f32 linear
layers use a panel kernel for batches of up to 1024 tokens and gemm for larger ones, which round differently
(cosine >= 0.9999999 to each other). ``EMBEDKIT_PANEL_MAX_ROWS=0`` in the workers' environment (gemm always)
makes every vector bit-identical whatever its batch. ``cache="redis://host:6379/0"`` shares vectors between all
actors of all nodes: a re-executed block, or the same text in two places, is then a cache read.

``ray`` and ``pyarrow`` are imported only when used: ``import embedkit`` never needs them
(``pip install "embedkit-rs[ray]"`` installs both).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import SentenceTransformer, __version__

__all__ = ["Embedder", "MissingColumnError", "ray_assigned_cpus"]

_ELEMENT = {
    "float32": np.float32,
    "int8": np.int8,
    "uint8": np.uint8,
    "binary": np.int8,  # sign bits packed 8 per byte, minus 128 (sentence-transformers' bytes)
    "ubinary": np.uint8,
}

class MissingColumnError(KeyError):
    """The batch has no column of that name (the message names the column and the columns present)."""

    def __str__(self) -> str:  # KeyError's would quote the whole message
        return str(self.args[0]) if self.args else ""


Batch = Any  # a pyarrow.Table, a pandas.DataFrame or a dict of numpy arrays (Ray's batch formats)


def ray_assigned_cpus() -> Optional[int]:
    """CPUs Ray assigned to the calling task or actor, rounded down and at least 1; ``None`` outside Ray (or
    when Ray assigned no CPU resource)."""
    try:
        import ray
    except ImportError:
        return None
    try:
        if not ray.is_initialized():
            return None
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # a driver, or a Ray version without the call: not an actor with CPUs
        return None
    if cpus is None or cpus <= 0:
        return None
    return max(1, int(math.floor(cpus)))


def _load_ranges(ranges: Union[None, str, "os.PathLike[str]", Sequence[Sequence[float]], np.ndarray]):
    """int8/uint8 ranges: an array-like of shape (2, dims) (min row, max row), or a file written by
    ``embedkit embed --save-ranges`` (``.json``) or ``np.save`` (``.npy``)."""
    if ranges is None:
        return None
    if isinstance(ranges, (str, os.PathLike)):
        path = os.fspath(ranges)
        if path.lower().endswith(".npy"):
            arr = np.load(path)
        else:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, dict) or "min" not in data or "max" not in data:
                raise ValueError(f"ranges file {path!r}: expected JSON {{\"min\": [...], \"max\": [...]}}")
            arr = np.array([data["min"], data["max"]])
    else:
        arr = np.asarray(ranges)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != 2:
        raise ValueError(f"ranges must have shape (2, dims) (a min row and a max row), not {arr.shape}")
    return arr


class Embedder:
    """Adds an embedding column to each batch of a Ray Dataset; use it as the class of ``map_batches``.

    Args:
        model: a catalog name, model folder, ``hf:org/name`` or API model, as :class:`embedkit.SentenceTransformer`.
        text_column: the column of texts (strings, no nulls).
        embedding_column: the column to add (an error if the batch has it already).
        batch_size: texts per forward pass inside one call (Ray's own ``batch_size`` is rows per call).
        compute: ``"f32"`` (exact) or ``"int8"`` (the int8 engine).
        threads: compute threads; default: the CPUs Ray assigned this actor (``num_cpus``, rounded down, at least
            1), else ``OMP_NUM_THREADS`` (which Ray also sets), else ``RAYON_NUM_THREADS``, else every core.
        cache: a folder or ``redis://host:port/db`` URL shared by every actor (vectors keyed by model, options
            and text, so repeated or retried work is a cache read).
        prompt_name / prompt: as ``encode``'s (e.g. ``prompt_name="document"``).
        normalize_embeddings: L2-normalize (after ``truncate_dim``).
        precision: ``"float32"`` (a ``fixed_size_list<float>`` column), ``"int8"``/``"uint8"`` (needs ``ranges``:
            per-batch calibration would make a text's bytes depend on its batch), ``"binary"``/``"ubinary"``
            (packed sign bits, ``dims / 8`` bytes, int8/uint8).
        ranges: int8/uint8 calibration ranges: an array of shape (2, dims) or a ``.json``/``.npy`` file (as
            ``embedkit embed --save-ranges`` writes).
        **kwargs: more :class:`embedkit.SentenceTransformer` arguments (``truncate_dim``, ``base_url``,
            ``prompts``, ``default_prompt_name`` …).

    A call takes a ``pyarrow.Table`` (``batch_format="pyarrow"``: the column added is
    ``fixed_size_list<item: float not null>[dims]``, int8/uint8 for those precisions, with the model, fingerprint
    and precision in the field's metadata), a ``pandas.DataFrame`` (``batch_format="pandas"``: one numpy vector per
    row, which Ray stores as a tensor column) or a dict of numpy arrays (``batch_format="numpy"``: a 2-D
    array), and returns the same kind with the column added.
    """

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        text_column: str = "text",
        embedding_column: str = "embedding",
        batch_size: int = 32,
        compute: str = "f32",
        threads: Optional[int] = None,
        cache: Optional[str] = None,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
        normalize_embeddings: bool = False,
        precision: str = "float32",
        ranges: Union[None, str, "os.PathLike[str]", Sequence[Sequence[float]], np.ndarray] = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(text_column, str) or not text_column:
            raise ValueError(f"text_column must be a column name, not {text_column!r}")
        if not isinstance(embedding_column, str) or not embedding_column:
            raise ValueError(f"embedding_column must be a column name, not {embedding_column!r}")
        if text_column == embedding_column:
            raise ValueError(f"text_column and embedding_column are both {text_column!r}")
        if precision not in _ELEMENT:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(_ELEMENT)}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
        self.ranges: Optional[np.ndarray] = _load_ranges(ranges)
        if precision in ("int8", "uint8") and self.ranges is None:
            raise ValueError(
                f"precision={precision!r} needs fixed ranges=(a (2, dims) array, or the .json/.npy file that "
                "`embedkit embed --save-ranges` writes): ranges calibrated on each batch would make a text's "
                "bytes depend on the batch it landed in"
            )
        if self.ranges is not None and precision not in ("int8", "uint8"):
            raise ValueError(f"ranges= is only used by precision='int8' or 'uint8', not {precision!r}")
        if threads is None:
            threads = ray_assigned_cpus()  # None outside Ray: OMP_NUM_THREADS etc. decide
        self.text_column = text_column
        self.embedding_column = embedding_column
        self.batch_size = batch_size
        self.prompt_name = prompt_name
        self.prompt = prompt
        self.normalize_embeddings = bool(normalize_embeddings)
        self.precision = precision
        self.model = SentenceTransformer(model, compute=compute, threads=threads, cache=cache, **kwargs)
        if prompt_name is not None:
            self.model._resolve_prompt(prompt_name, prompt)  # an unknown prompt name fails here, not per batch
        dims = self.model.get_embedding_dimension()
        if dims is None:  # an API model that has not said yet: one text tells
            dims = int(self.model.encode(["dimensions"], show_progress_bar=False).shape[1])
        if self.ranges is not None and self.ranges.shape[1] != dims:
            raise ValueError(f"ranges have {self.ranges.shape[1]} dimensions but the model gives {dims}")
        self.width: int = (dims + 7) // 8 if precision in ("binary", "ubinary") else dims
        self.element = _ELEMENT[precision]
        self.metadata: Dict[str, str] = {
            "embedkit.model": model,
            "embedkit.fingerprint": self.model.fingerprint,
            "embedkit.precision": precision,
            "embedkit.dims": str(dims),
            "embedkit.compute": compute,
            "embedkit.normalize": "true" if self.normalize_embeddings else "false",
            "embedkit.version": __version__,
        }
        if self.model.truncate_dim is not None:
            self.metadata["embedkit.truncate_dim"] = str(self.model.truncate_dim)
        if prompt_name is not None:
            self.metadata["embedkit.prompt_name"] = prompt_name
        if prompt is not None:
            self.metadata["embedkit.prompt"] = prompt

    def __repr__(self) -> str:
        return (
            f"Embedder({self.model!r}, text_column={self.text_column!r}, "
            f"embedding_column={self.embedding_column!r}, precision={self.precision!r})"
        )

    @property
    def threads(self) -> int:
        """Compute threads of this actor's model."""
        return self.model.threads

    # -- the work ----------------------------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The vectors of ``texts``: shape (len(texts), width), of this embedder's element type."""
        if len(texts) == 0:
            return np.zeros((0, self.width), dtype=self.element)
        vectors = self.model.encode(
            list(texts),
            prompt_name=self.prompt_name,
            prompt=self.prompt,
            batch_size=self.batch_size,
            show_progress_bar=False,
            normalize_embeddings=self.normalize_embeddings,
        )
        if self.precision != "float32":
            from .util import quantize_embeddings

            vectors = quantize_embeddings(vectors, self.precision, ranges=self.ranges)
        return np.ascontiguousarray(vectors, dtype=self.element)

    def __call__(self, batch: Batch) -> Batch:
        """Embeds ``batch[text_column]`` and returns the batch with ``embedding_column`` added."""
        kind = type(batch).__module__.split(".")[0]
        if kind == "pyarrow":
            return self._arrow(batch)
        if kind == "pandas":
            return self._pandas(batch)
        if isinstance(batch, Mapping):
            return self._numpy(batch)
        raise TypeError(
            f"Embedder takes a pyarrow.Table, a pandas.DataFrame or a dict of numpy arrays "
            f"(map_batches' batch_format 'pyarrow', 'pandas' or 'numpy'), not {type(batch).__name__}"
        )

    def _check_columns(self, columns: List[str]) -> None:
        if self.text_column not in columns:
            raise MissingColumnError(
                f"text column {self.text_column!r} is not in the batch; its columns are {columns!r} "
                f"(set text_column= in fn_constructor_kwargs)"
            )
        if self.embedding_column in columns:
            raise ValueError(
                f"the batch already has a column {self.embedding_column!r}: choose another embedding_column= "
                f"or drop it first (ds.drop_columns([{self.embedding_column!r}]))"
            )

    def _texts(self, values: Sequence[Any]) -> List[str]:
        texts = list(values)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                what = "null" if t is None or (isinstance(t, float) and math.isnan(t)) else type(t).__name__
                raise TypeError(
                    f"text column {self.text_column!r}: row {i} of this batch is {what}, not a string"
                )
        return texts

    def _arrow(self, table: Any) -> Any:
        import pyarrow as pa

        self._check_columns(list(table.column_names))
        column = table.column(self.text_column)
        t = column.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or _is_string_view(pa, t)):
            raise TypeError(f"text column {self.text_column!r} holds {column.type}, not strings")
        vectors = self.embed(self._texts(column.to_pylist()))
        return table.append_column(self._arrow_field(pa), self._arrow_array(pa, vectors))

    def _arrow_field(self, pa: Any) -> Any:
        return pa.field(self.embedding_column, self._arrow_type(pa), nullable=False, metadata=self.metadata)

    def _arrow_type(self, pa: Any) -> Any:
        item = pa.field("item", pa.from_numpy_dtype(self.element), nullable=False)
        return pa.list_(item, self.width)

    def _arrow_array(self, pa: Any, vectors: np.ndarray) -> Any:
        values = pa.array(vectors.reshape(-1), type=pa.from_numpy_dtype(self.element))
        try:
            return pa.FixedSizeListArray.from_arrays(values, type=self._arrow_type(pa))
        except TypeError:  # pyarrow < 13: no type=, items nullable
            return pa.FixedSizeListArray.from_arrays(values, self.width)

    def _pandas(self, frame: Any) -> Any:
        self._check_columns([str(c) for c in frame.columns])
        vectors = self.embed(self._texts(frame[self.text_column].tolist()))
        out = frame.copy(deep=False)
        out[self.embedding_column] = list(vectors)  # one 1-D array per row: Ray stores a tensor column
        return out

    def _numpy(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
        self._check_columns([str(c) for c in batch.keys()])
        values = batch[self.text_column]
        vectors = self.embed(self._texts(np.asarray(values, dtype=object).reshape(-1).tolist()))
        out = dict(batch)
        out[self.embedding_column] = vectors  # (rows, width)
        return out


def _is_string_view(pa: Any, t: Any) -> bool:
    check = getattr(pa.types, "is_string_view", None)
    return bool(check and check(t))

