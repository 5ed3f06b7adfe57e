"""embedkit: sentence-transformers' vectors from embedkit's native engine, without PyTorch.

``from embedkit import SentenceTransformer`` replaces ``from sentence_transformers import SentenceTransformer``:
the same constructor, ``encode`` arguments and outputs (numpy arrays), computed by Rust with the GIL released.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

from . import _embedkit
from ._embedkit import __version__
from .index import Index
from . import util
from .util import quantize_embeddings

__all__ = ["SentenceTransformer", "CrossEncoder", "Index", "quantize_embeddings", "__version__"]

_PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
_OUTPUT_VALUES = ("sentence_embedding", "token_embeddings", None)
_DOCUMENT_PROMPTS = ("document", "passage", "corpus")


def _restore(kwargs: Dict[str, Any], state: Dict[str, Any]) -> "SentenceTransformer":
    """Unpickles a model: loads it again by name and options (pickles carry no weights)."""
    model = SentenceTransformer(**kwargs)
    for name, value in state.items():
        setattr(model, name, value)
    return model


class SentenceTransformer:
    """A sentence embedding model with sentence-transformers' ``SentenceTransformer`` interface.

    Args:
        model_name_or_path: a catalog name (``all-MiniLM-L6-v2``), a model folder in the
            sentence-transformers layout, ``hf:org/name[@revision]``, or an API model
            (``openai:text-embedding-3-small``, ``azure:DEPLOYMENT``, ``cohere:NAME``, ``voyage:NAME``).
        device: ``"cpu"`` (the default), ``"cuda"``/``"cuda:N"`` (an NVIDIA GPU; ``"cuda+bf16"`` or ``"cuda+f32"``
            for another type than f16; a ``RuntimeError`` says what is missing when no GPU can be used), or
            ``"auto"``/``None`` (the GPU when one can be used, else the CPU).
        truncate_dim: keep the first N dimensions of every embedding (after the model's own normalization,
            as sentence-transformers does; not renormalized).
        compute: linear-layer arithmetic, ``"f32"`` (exact) or ``"int8"`` (faster, cosine >= 0.99 to f32).
        threads: compute threads; default ``OMP_NUM_THREADS``, else ``RAYON_NUM_THREADS``, else all cores.
        cache: a folder or ``redis://`` URL to cache vectors in (keys name the model, options and text).
        base_url: server of an API model (an OpenAI-compatible base such as ``http://host:8080/v1``).
    """

    def __init__(
        self,
        model_name_or_path: str = "all-MiniLM-L6-v2",
        device: Optional[str] = "cpu",
        truncate_dim: Optional[int] = None,
        compute: str = "f32",
        threads: Optional[int] = None,
        cache: Optional[str] = None,
        *,
        prompts: Optional[Dict[str, str]] = None,
        default_prompt_name: Optional[str] = None,
        similarity_fn_name: Optional[str] = None,
        base_url: Optional[str] = None,
    ) -> None:
        if device is not None and not isinstance(device, str):
            raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', not {type(device).__name__}")
        if truncate_dim is not None and truncate_dim < 1:
            raise ValueError(f"truncate_dim must be at least 1, not {truncate_dim}")
        os.fspath(model_name_or_path)  # a TypeError for anything that is not a str or path
        self._kwargs: Dict[str, Any] = {
            "model_name_or_path": os.fspath(model_name_or_path),
            "device": device,
            "truncate_dim": truncate_dim,
            "compute": compute,
            "threads": threads,
            "cache": cache,
            "prompts": prompts,
            "default_prompt_name": default_prompt_name,
            "similarity_fn_name": similarity_fn_name,
            "base_url": base_url,
        }
        self._model = _embedkit.Model(
            os.fspath(model_name_or_path),
            compute=compute,
            threads=threads,
            cache=cache,
            base_url=base_url,
            device="auto" if device is None else device,
        )
        info = self._model.info()
        self.truncate_dim: Optional[int] = truncate_dim
        # sentence-transformers 6: every model has the prompts "query" and "document" (empty unless saved or
        # given); the constructor's prompts win over the saved ones, whose new names come last.
        given = dict(prompts or {})
        self.prompts: Dict[str, str] = {"query": "", "document": ""}
        self.prompts.update(given)
        for name, text in info["prompts"].items():
            if name not in given:
                self.prompts[name] = text
        self.default_prompt_name: Optional[str] = (
            default_prompt_name if default_prompt_name is not None else info["default_prompt_name"]
        )
        self._similarity_fn_name: Optional[str] = None
        if similarity_fn_name is not None:
            self.similarity_fn_name = similarity_fn_name
        else:
            self._similarity_fn_name = info["similarity_fn_name"]
        self._model_max_seq_length: Optional[int] = info["max_seq_length"]
        self._max_seq_length: Optional[int] = info["max_seq_length"]
        self._info = info
        if self.default_prompt_name is not None and self.default_prompt_name not in self.prompts:
            raise ValueError(
                f"Default prompt name '{self.default_prompt_name}' is not found in the configured prompts "
                f"dictionary with keys {list(self.prompts.keys())!r}."
            )

    # -- pickling: by reference (name and options), never the weights -------------------------------------
    def __reduce__(self):
        state = {
            "truncate_dim": self.truncate_dim,
            "prompts": self.prompts,
            "default_prompt_name": self.default_prompt_name,
            "_similarity_fn_name": self._similarity_fn_name,
            "_max_seq_length": self._max_seq_length,
        }
        return (_restore, (self._kwargs, state))

    def __repr__(self) -> str:
        return (
            f"SentenceTransformer({self._kwargs['model_name_or_path']!r}, compute={self._model.compute!r}, "
            f"threads={self._model.threads}, dims={self.get_embedding_dimension()})"
        )

    # -- attributes sentence-transformers users read ------------------------------------------------------
    @property
    def device(self) -> str:
        """Where the model computes: ``"cpu"`` or ``"cuda:N"`` (what ``"auto"`` chose)."""
        return self._model.device

    @property
    def threads(self) -> int:
        """Compute threads of this model."""
        return self._model.threads

    @property
    def max_seq_length(self) -> Optional[int]:
        """Tokens per text (special tokens included); longer texts are truncated."""
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        if value is not None and value < 1:
            raise ValueError(f"max_seq_length must be at least 1, not {value}")
        self._max_seq_length = value

    @property
    def similarity_fn_name(self) -> str:
        """``cosine``, ``dot``, ``euclidean`` or ``manhattan`` (default ``cosine``)."""
        return self._similarity_fn_name or "cosine"

    @similarity_fn_name.setter
    def similarity_fn_name(self, value: str) -> None:
        if value not in ("cosine", "dot", "euclidean", "manhattan"):
            raise ValueError(
                f"similarity_fn_name {value!r}: expected one of cosine, dot, euclidean, manhattan"
            )
        self._similarity_fn_name = value

    @property
    def fingerprint(self) -> str:
        """Identifies the weights, modules and arithmetic (what embedkit's caches and indexes key on)."""
        return self._model.fingerprint()

    def get_sentence_embedding_dimension(self) -> Optional[int]:
        """Deprecated in sentence-transformers 6 (a ``FutureWarning``): :meth:`get_embedding_dimension`."""
        warnings.warn(
            "The `get_sentence_embedding_dimension` method has been renamed to `get_embedding_dimension`.",
            FutureWarning,
            stacklevel=2,
        )
        return self.get_embedding_dimension()

    def get_embedding_dimension(self) -> Optional[int]:
        """Width of the vectors ``encode`` returns (``truncate_dim`` when set)."""
        dims = self._model.dims()
        if self.truncate_dim is not None:
            return min(dims, self.truncate_dim)
        return dims

    def get_max_seq_length(self) -> Optional[int]:
        """The same as :attr:`max_seq_length`."""
        return self._max_seq_length

    def to(self, device: Optional[str] = None, *args: Any, **kwargs: Any) -> "SentenceTransformer":
        """A no-op for the model's own device (kept so that code written for sentence-transformers runs
        unchanged); moving a loaded model is not supported: load it with ``device=`` instead."""
        if device not in (None, "auto", self.device) and not (device == "cuda" and self.device == "cuda:0"):
            raise ValueError(f"device {device!r}: this model is on {self.device}; load it with device={device!r}")
        return self

    def eval(self) -> "SentenceTransformer":
        """A no-op: the model is always in inference mode."""
        return self

    # -- encoding ----------------------------------------------------------------------------------------
    def _max_length(self) -> Optional[int]:
        if self._max_seq_length is None or self._max_seq_length == self._model_max_seq_length:
            return None
        return self._max_seq_length

    def _resolve_prompt(self, prompt_name: Optional[str], prompt: Optional[str]) -> Optional[str]:
        # sentence-transformers' rules: an explicit prompt wins; a prompt name must exist; else the default.
        if prompt is None:
            if prompt_name is not None:
                try:
                    return self.prompts[prompt_name]
                except KeyError:
                    raise ValueError(
                        f"Prompt name '{prompt_name}' not found in the configured prompts dictionary with keys "
                        f"{list(self.prompts.keys())!r}."
                    ) from None
            if self.default_prompt_name is not None:
                return self.prompts.get(self.default_prompt_name, None)
            return ""
        return prompt

    def encode(
        self,
        inputs: Union[str, Sequence[str], None] = None,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        output_value: Optional[str] = "sentence_embedding",
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: Optional[str] = None,
        normalize_embeddings: bool = False,
        truncate_dim: Optional[int] = None,
        **kwargs: Any,
    ):
        """Embeds one text (a 1-D array) or a list of texts (a 2-D float32 array, one row per text).

        The arguments are sentence-transformers 6.x's: ``prompt_name``/``prompt`` prepend an instruction,
        ``precision`` quantizes (int8/uint8 calibrated on these embeddings, binary/ubinary packed bits),
        ``normalize_embeddings`` L2-normalizes after ``truncate_dim`` cuts, ``output_value="token_embeddings"``
        gives one (tokens, hidden) array per text, ``output_value=None`` a dict per text.
        """
        if device not in (None, "auto", self.device) and not (device == "cuda" and self.device == "cuda:0"):
            raise ValueError(f"device {device!r}: this model is on {self.device}; load it with device={device!r}")
        inputs = _inputs_argument(inputs, kwargs)
        unknown = set(kwargs) - {"pool", "chunk_size", "task"}
        if unknown:
            raise TypeError(f"encode() got unexpected keyword arguments {sorted(unknown)!r}")
        if precision not in _PRECISIONS:
            raise ValueError(f"Precision {precision!r} is not supported")
        if output_value not in _OUTPUT_VALUES:
            raise ValueError(
                f"output_value {output_value!r}: expected 'sentence_embedding', 'token_embeddings' or None"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        single = isinstance(inputs, str) or not hasattr(inputs, "__len__")
        texts: List[str] = [inputs] if single else list(inputs)  # type: ignore[list-item]
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"inputs[{i}] is {type(t).__name__}, not str")
        if self._info["architecture"] == "api":
            # API models take prompt names as their own input types (Cohere, Voyage): pass them through.
            resolved, api_prompt_name = prompt, prompt_name
        else:
            resolved, api_prompt_name = self._resolve_prompt(prompt_name, prompt), None
        truncate_dim = truncate_dim if truncate_dim is not None else self.truncate_dim
        if convert_to_tensor:
            torch = _import_torch()
        if not texts:
            # What sentence-transformers returns for no inputs: np.array([]) (float64, shape (0,)).
            if output_value != "sentence_embedding":
                return []
            if convert_to_tensor:
                return torch.zeros(0, dtype=torch.float32)
            return np.array([]) if convert_to_numpy else []

        if output_value != "sentence_embedding":
            return self._encode_tokens(texts, resolved, batch_size, output_value, single)

        vectors = self._embed_all(texts, resolved, api_prompt_name, batch_size, show_progress_bar)
        if truncate_dim is not None:
            vectors = np.ascontiguousarray(vectors[:, :truncate_dim])
        if normalize_embeddings:
            vectors = _l2_normalize(vectors)
        if precision != "float32":
            vectors = quantize_embeddings(vectors, precision)
        if convert_to_tensor:
            out = torch.from_numpy(vectors)
            return out[0] if single else out
        if not convert_to_numpy:
            rows = list(vectors)
            return rows[0] if single else rows
        return vectors[0] if single else vectors

    def _embed_all(
        self,
        texts: List[str],
        prompt: Optional[str],
        prompt_name: Optional[str],
        batch_size: int,
        show_progress_bar: Optional[bool],
    ) -> np.ndarray:
        max_length = self._max_length()
        if show_progress_bar is None:
            show_progress_bar = _stderr_is_terminal()
        chunk = max(batch_size * 16, 512)
        if not show_progress_bar or len(texts) <= chunk:
            return self._model.embed(
                texts, prompt=prompt, prompt_name=prompt_name, batch_size=batch_size, max_length=max_length
            )
        # One native call per chunk so that the bar moves; vectors do not depend on how texts are grouped.
        parts = []
        bar = _Progress(len(texts), "Batches")
        for start in range(0, len(texts), chunk):
            part = texts[start : start + chunk]
            parts.append(
                self._model.embed(
                    part, prompt=prompt, prompt_name=prompt_name, batch_size=batch_size, max_length=max_length
                )
            )
            bar.update(len(part))
        bar.close()
        return np.concatenate(parts, axis=0)

    def _encode_tokens(
        self, texts: List[str], prompt: Optional[str], batch_size: int, output_value: Optional[str], single: bool
    ):
        tokens = self._model.embed_tokens(
            texts, prompt=prompt, batch_size=batch_size, max_length=self._max_length()
        )
        if output_value == "token_embeddings":
            out: List[Any] = [vectors for _, vectors in tokens]
        else:
            sentence = self._model.embed(texts, prompt=prompt, batch_size=batch_size, max_length=self._max_length())
            out = [
                {
                    "input_ids": np.asarray(ids, dtype=np.int64),
                    "attention_mask": np.ones(len(ids), dtype=np.int64),
                    "token_embeddings": vectors,
                    "sentence_embedding": sentence[i],
                }
                for i, (ids, vectors) in enumerate(tokens)
            ]
        return out[0] if single else out

    def encode_query(self, inputs=None, prompt_name: Optional[str] = None, prompt: Optional[str] = None, **kwargs):
        """``encode`` with the model's ``query`` prompt when it has one and none is given."""
        inputs = _inputs_argument(inputs, kwargs)
        if prompt_name is None and prompt is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(inputs, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode_document(
        self, inputs=None, prompt_name: Optional[str] = None, prompt: Optional[str] = None, **kwargs
    ):
        """``encode`` with the model's ``document`` (else ``passage``, else ``corpus``) prompt when it has one
        and none is given."""
        if prompt_name is None and prompt is None:
            for name in _DOCUMENT_PROMPTS:
                if name in self.prompts:
                    prompt_name = name
                    break
        inputs = _inputs_argument(inputs, kwargs)
        return self.encode(inputs, prompt_name=prompt_name, prompt=prompt, **kwargs)

    # -- similarity --------------------------------------------------------------------------------------
    def similarity(self, embeddings1, embeddings2) -> np.ndarray:
        """The (n, m) float32 matrix of the model's similarity function between two sets of embeddings (a
        single 1-D embedding counts as one row)."""
        a, b = _as_matrix(embeddings1), _as_matrix(embeddings2)
        return _similarity(a, b, self.similarity_fn_name)

    def similarity_pairwise(self, embeddings1, embeddings2) -> np.ndarray:
        """The similarity of each row of ``embeddings1`` with the same row of ``embeddings2``, shape (n,)
        (a 0-d array for two 1-D embeddings)."""
        if np.ndim(embeddings1) == 1 and np.ndim(embeddings2) == 1:
            return self.similarity_pairwise(_as_matrix(embeddings1), _as_matrix(embeddings2))[0]
        a, b = _as_matrix(embeddings1), _as_matrix(embeddings2)
        name = self.similarity_fn_name
        if a.shape != b.shape:
            raise ValueError(f"similarity_pairwise needs two arrays of one shape, not {a.shape} and {b.shape}")
        if name == "cosine":
            return np.einsum("ij,ij->i", _l2_normalize(a), _l2_normalize(b)).astype(np.float32)
        if name == "dot":
            return np.einsum("ij,ij->i", a, b).astype(np.float32)
        return _embedkit.pairwise_scores(a, b, name, pairwise=True)[:, 0]

    # -- tokenization ------------------------------------------------------------------------------------
    def tokenize(self, texts: Union[str, Sequence[str]]) -> Dict[str, np.ndarray]:
        """Token ids as the model sees them, padded to the longest text: ``input_ids``, ``token_type_ids``
        (BERT-style models), ``attention_mask``; int64 arrays."""
        items = [texts] if isinstance(texts, str) else list(texts)
        ids, types, pad = self._model.tokenize(items, max_length=self._max_length())
        width = max((len(x) for x in ids), default=0)
        input_ids = np.full((len(ids), width), pad, dtype=np.int64)
        type_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, (row, trow) in enumerate(zip(ids, types)):
            input_ids[i, : len(row)] = row
            type_ids[i, : len(trow)] = trow
            mask[i, : len(row)] = 1
        if not items:
            return {}
        out: Dict[str, Any] = {"input_ids": input_ids}
        if self._info.get("architecture") == "BERT":
            out["token_type_ids"] = type_ids
        out["attention_mask"] = mask
        out["modality"] = "text"
        return out

    def preprocess(self, inputs: Union[str, Sequence[str]]) -> Dict[str, Any]:
        """sentence-transformers 6's name for :meth:`tokenize`."""
        return self.tokenize(inputs)

    def usage(self) -> Optional[Dict[str, Any]]:
        """Requests, billed input tokens and US dollars so far (API models), else ``None``."""
        return self._model.usage()


def _inputs_argument(inputs, kwargs: Dict[str, Any]):
    """sentence-transformers 6 renamed ``sentences`` to ``inputs``; the old name still works."""
    if "sentences" in kwargs:
        old = kwargs.pop("sentences")
        if inputs is not None:
            raise TypeError("encode() got both inputs and sentences (the old name of inputs)")
        inputs = old
    if inputs is None:
        raise TypeError("encode() missing required argument: 'inputs'")
    return inputs


def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "convert_to_tensor=True needs PyTorch, which is not installed (pip install torch); embedkit itself "
            "returns numpy arrays and needs no PyTorch"
        ) from None
    return torch


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    # torch.nn.functional.normalize: x / max(||x||, 1e-12)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _as_matrix(x) -> np.ndarray:
    return util._f32_2d("embeddings", x)


def _similarity(a: np.ndarray, b: np.ndarray, name: str) -> np.ndarray:
    if name == "cosine":
        return (_l2_normalize(a) @ _l2_normalize(b).T).astype(np.float32)
    if name == "dot":
        return (a @ b.T).astype(np.float32)
    return _embedkit.pairwise_scores(a, b, name)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _Progress:
    """A progress bar on stderr: tqdm's when it is installed, else one line redrawn in place."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.done, self.desc = total, 0, desc
        try:
            from tqdm.auto import tqdm

            self._tqdm = tqdm(total=total, desc=desc, unit="text")
        except ImportError:
            self._tqdm = None

    def update(self, n: int) -> None:
        self.done += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        else:
            sys.stderr.write(f"\r{self.desc}: {self.done}/{self.total} texts")
            sys.stderr.flush()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
        else:
            sys.stderr.write("\n")


# Last: cross_encoder.py uses the helpers above (_import_torch).
from .cross_encoder import CrossEncoder  # noqa: E402
