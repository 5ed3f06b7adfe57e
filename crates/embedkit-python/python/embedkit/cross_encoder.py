"""``embedkit.CrossEncoder``: sentence-transformers 6.2's ``CrossEncoder`` (``predict``, ``rank``) for text pairs,
scored by embedkit's CPU engine (the model of ``embedkit rerank``) with the GIL released, without PyTorch."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _embedkit

# Arguments of sentence-transformers' constructor that change nothing here (where the model comes from is
# embedkit's catalog or a folder; the engine is always embedkit's).
_IGNORED_INIT_ARGS = (
    "cache_folder",
    "trust_remote_code",
    "local_files_only",
    "token",
    "model_kwargs",
    "processor_kwargs",
    "config_kwargs",
    "model_card_data",
    "backend",
    "keep_in_fp32_modules",
)


def _restore(kwargs: Dict[str, Any], max_length: Optional[int]) -> "CrossEncoder":
    """Unpickles a cross-encoder: loads it again by name and options (pickles carry no weights)."""
    model = CrossEncoder(**kwargs)
    model.max_length = max_length
    return model


def _activation(fn: Any) -> Tuple[Optional[str], Optional[Callable]]:
    """What the engine applies (a name) or what runs on the logits here (a callable), for ``activation_fn``:
    ``None`` (the model's own), a name (``"sigmoid"``, ``"identity"``, ``"tanh"``, ``"relu"``, ``"gelu"``,
    ``"silu"``), a ``torch.nn`` activation module of one of those classes, or any callable on a float32 array
    (it gets the logits, shape ``(n, num_labels)``)."""
    if fn is None:
        return None, None
    if isinstance(fn, str):
        return fn, None
    # torch.nn.Sigmoid() and friends: computed natively, so that torch is never needed to score.
    if type(fn).__module__.startswith("torch.nn") and type(fn).__name__ in (
        "Identity",
        "Sigmoid",
        "Tanh",
        "ReLU",
        "GELU",
        "SiLU",
    ):
        return type(fn).__name__.lower(), None
    if callable(fn):
        return "identity", fn
    raise TypeError(f"activation_fn must be a name, a torch.nn activation or a callable, not {type(fn).__name__}")


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)


def _is_single(inputs: Any) -> bool:
    # sentence-transformers' is_singular_input: a list/tuple whose first item is not a list/tuple is one pair;
    # a 1-D string array is one pair; an empty list is an empty batch.
    if isinstance(inputs, (list, tuple)):
        return len(inputs) > 0 and not isinstance(inputs[0], (list, tuple))
    if isinstance(inputs, np.ndarray) and inputs.dtype.kind in ("U", "O"):
        return inputs.size > 0 and inputs.ndim < 2
    return True


def _pairs(inputs: Any) -> Tuple[List[Tuple[str, str]], bool]:
    """The pairs of ``inputs`` and whether it was one pair; a TypeError/ValueError names a bad item."""
    if isinstance(inputs, str):
        raise TypeError(
            "predict() takes a (query, document) pair or a list of pairs, not a str; use [(query, document)]"
        )
    if isinstance(inputs, np.ndarray):
        inputs = inputs.tolist()
    single = _is_single(inputs)
    if single:
        items: List[Any] = [inputs]
    else:
        try:
            items = list(inputs)
        except TypeError:
            raise TypeError(
                f"predict() takes a (query, document) pair or a list of pairs, not {type(inputs).__name__}"
            ) from None
    pairs: List[Tuple[str, str]] = []
    for i, item in enumerate(items):
        where = "the pair" if single else f"inputs[{i}]"
        if isinstance(item, str) or not isinstance(item, (list, tuple)):
            raise TypeError(f"{where} is {type(item).__name__}, not a (query, document) pair")
        if len(item) != 2:
            raise ValueError(f"{where} has {len(item)} texts; a cross-encoder pair is two (query, document)")
        for j, text in enumerate(item):
            if not isinstance(text, str):
                raise TypeError(f"{where}[{j}] is {type(text).__name__}, not str")
        pairs.append((item[0], item[1]))
    return pairs, single


class CrossEncoder:
    """A cross-encoder with sentence-transformers' ``CrossEncoder`` interface: ``predict`` scores (query,
    document) pairs, ``rank`` sorts documents by their score against a query.

    Args:
        model_name_or_path: a catalog name, a model folder (a ``*ForSequenceClassification`` model, as
            sentence-transformers saves a cross-encoder) or ``hf:org/name[@revision]``.
        device: ``"cpu"``, ``"auto"`` or ``None`` (cross-encoders run on the CPU engine).
        max_length: tokens per pair (special tokens included); longer pairs are cut longest-first. Default:
            the model's limit, which is also the most it can be.
        activation_fn: the activation on the logits (see :meth:`predict`); default the model's own, chosen as
            sentence-transformers 6.2 chooses it (Sigmoid for one label unless the model says otherwise,
            Identity for more).
        num_labels: the model's number of labels, checked (the head cannot be replaced here).
        compute: linear-layer arithmetic, ``"f32"`` (exact), ``"int8"`` or ``"bf16"``.
        threads: compute threads; default ``OMP_NUM_THREADS``, else ``RAYON_NUM_THREADS``, else all cores.
    """

    def __init__(
        self,
        model_name_or_path: str,
        *,
        device: Optional[str] = None,
        max_length: Optional[int] = None,
        activation_fn: Any = None,
        num_labels: Optional[int] = None,
        compute: str = "f32",
        threads: Optional[int] = None,
        prompts: Optional[Dict[str, str]] = None,
        default_prompt_name: Optional[str] = None,
        revision: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        unknown = set(kwargs) - set(_IGNORED_INIT_ARGS)
        if unknown:
            raise TypeError(f"CrossEncoder() got unexpected keyword arguments {sorted(unknown)!r}")
        if device is not None and not isinstance(device, str):
            raise TypeError(f"device must be a string such as 'cpu', not {type(device).__name__}")
        if device not in (None, "auto", "cpu"):
            raise ValueError(f"device {device!r}: embedkit's cross-encoders run on the CPU (device='cpu')")
        if revision is not None:
            raise ValueError(f"revision={revision!r}: name the revision in the model, hf:org/name@{revision}")
        if prompts or default_prompt_name is not None:
            raise ValueError("prompts are not supported by embedkit's CrossEncoder")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be at least 1, not {max_length}")
        self._kwargs: Dict[str, Any] = {
            "model_name_or_path": os.fspath(model_name_or_path),
            "device": device,
            "activation_fn": activation_fn,
            "num_labels": num_labels,
            "compute": compute,
            "threads": threads,
        }
        self._model = _embedkit.CrossModel(os.fspath(model_name_or_path), compute=compute, threads=threads)
        info = self._model.info()
        self._info = info
        if num_labels is not None and num_labels != info["num_labels"]:
            raise ValueError(
                f"num_labels={num_labels}: '{model_name_or_path}' has {info['num_labels']} "
                f"({', '.join(info['labels'])}); its classification head cannot be replaced here"
            )
        self._activation(activation_fn)  # a bad activation fails here, not at the first predict
        self.activation_fn = activation_fn if activation_fn is not None else info["activation"]
        self._model_max_length: int = info["max_length"]
        self.max_length = max_length

    def __reduce__(self):
        return (_restore, (self._kwargs, self._max_length))

    def __repr__(self) -> str:
        return (
            f"CrossEncoder({self._kwargs['model_name_or_path']!r}, num_labels={self.num_labels}, "
            f"max_length={self.max_length}, threads={self._model.threads})"
        )

    # -- attributes sentence-transformers users read ------------------------------------------------------
    @property
    def num_labels(self) -> int:
        """Scores per pair."""
        return self._info["num_labels"]

    @property
    def labels(self) -> List[str]:
        """The label names (config.json's ``id2label``)."""
        return list(self._info["labels"])

    @property
    def config(self) -> Any:
        """The model's facts as attributes (``num_labels``, ``id2label``, ``label2id``, ``architectures``)."""
        from types import SimpleNamespace

        id2label = dict(enumerate(self._info["labels"]))
        return SimpleNamespace(
            num_labels=self.num_labels,
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            architectures=[self._info["architecture"]],
            hidden_size=self._info["hidden_size"],
        )

    @property
    def max_length(self) -> int:
        """Tokens per pair (special tokens included); longer pairs are cut longest-first."""
        return self._max_length if self._max_length is not None else self._model_max_length

    @max_length.setter
    def max_length(self, value: Optional[int]) -> None:
        if value is not None and value < 1:
            raise ValueError(f"max_length must be at least 1, not {value}")
        self._max_length = value

    @property
    def device(self) -> str:
        """Where the model computes: always ``"cpu"``."""
        return "cpu"

    @property
    def threads(self) -> int:
        """Compute threads of this model."""
        return self._model.threads

    def to(self, device: Optional[str] = None, *args: Any, **kwargs: Any) -> "CrossEncoder":
        """A no-op for the CPU (kept so that code written for sentence-transformers runs unchanged)."""
        if device not in (None, "auto", "cpu"):
            raise ValueError(f"device {device!r}: embedkit's cross-encoders run on the CPU")
        return self

    def eval(self) -> "CrossEncoder":
        """A no-op: the model is always in inference mode."""
        return self

    # -- scoring -------------------------------------------------------------------------------------------
    def _activation(self, fn: Any) -> Tuple[Optional[str], Optional[Callable]]:
        name, call = _activation(fn)
        if name is not None and name.lower() not in ("identity", "sigmoid", "tanh", "relu", "gelu", "silu"):
            raise ValueError(
                f"activation_fn {fn!r}: expected identity, sigmoid, tanh, relu, gelu, silu, a torch.nn "
                "activation or a callable"
            )
        return name, call

    def _scores(self, pairs: List[Tuple[str, str]], batch_size: int, activation_fn: Any) -> np.ndarray:
        """Scores, float32 (len(pairs), num_labels)."""
        name, call = self._activation(activation_fn if activation_fn is not None else self.activation_fn)
        max_length = self._max_length if self._max_length != self._model_max_length else None
        scores = self._model.predict(pairs, batch_size=batch_size, activation=name, max_length=max_length)
        if call is not None:
            scores = np.asarray(call(scores), dtype=np.float32)
        return scores

    def predict(
        self,
        inputs: Any = None,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        activation_fn: Any = None,
        apply_softmax: Optional[bool] = False,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: Optional[str] = None,
        **kwargs: Any,
    ):
        """Scores one (query, document) pair (a float32 scalar, or ``(num_labels,)``) or a list of pairs
        (float32 ``(n,)`` for one label, ``(n, num_labels)`` otherwise), as sentence-transformers 6.2 does.

        ``activation_fn`` overrides the model's activation for this call (a name such as ``"identity"`` for
        the logits, a ``torch.nn`` activation, or a callable on the float32 logits); ``apply_softmax`` turns
        each pair's scores into probabilities when the model has more than one label. No pairs give
        ``np.array([])``, as in sentence-transformers.
        """
        if "sentences" in kwargs:
            if inputs is not None:
                raise TypeError("predict() got both inputs and sentences (the old name of inputs)")
            inputs = kwargs.pop("sentences")
        if "activation_fct" in kwargs:
            activation_fn = kwargs.pop("activation_fct")
        kwargs.pop("num_workers", None)
        unknown = set(kwargs) - {"pool", "chunk_size"}
        if unknown:
            raise TypeError(f"predict() got unexpected keyword arguments {sorted(unknown)!r}")
        if inputs is None:
            raise TypeError("predict() missing required argument: 'inputs'")
        if prompt or prompt_name:
            raise ValueError("prompts are not supported by embedkit's CrossEncoder")
        if device not in (None, "auto", "cpu"):
            raise ValueError(f"device {device!r}: embedkit's cross-encoders run on the CPU")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        pairs, single = _pairs(inputs)
        if convert_to_tensor:
            from . import _import_torch

            torch = _import_torch()
        if not pairs:
            if convert_to_tensor:
                return torch.tensor([])
            return np.array([]) if convert_to_numpy else []
        scores = self._scores(pairs, batch_size, activation_fn)
        if self.num_labels == 1:
            scores = scores[:, 0]
        elif apply_softmax:
            scores = _softmax(scores)
        if convert_to_tensor:
            out = torch.from_numpy(scores)
        elif convert_to_numpy:
            out = scores
        else:
            out = list(scores)
        return out[0] if single else out

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: Optional[int] = None,
        return_documents: bool = False,
        prompt_name: Optional[str] = None,
        prompt: Optional[str] = None,
        batch_size: int = 32,
        show_progress_bar: Optional[bool] = None,
        activation_fn: Any = None,
        device: Optional[str] = None,
        **kwargs: Any,
    ) -> List[Dict[str, Union[int, float, str]]]:
        """The documents sorted by their score against ``query``, best first (equal scores keep their order):
        ``[{"corpus_id": i, "score": s}, …]`` with ``"text"`` when ``return_documents``, cut to ``top_k``.
        The model must have one label (a ``ValueError`` otherwise, as in sentence-transformers)."""
        if "activation_fct" in kwargs:
            activation_fn = kwargs.pop("activation_fct")
        for ignored in ("num_workers", "apply_softmax", "convert_to_numpy", "convert_to_tensor", "pool", "chunk_size"):
            kwargs.pop(ignored, None)
        if kwargs:
            raise TypeError(f"rank() got unexpected keyword arguments {sorted(kwargs)!r}")
        if self.num_labels != 1:
            raise ValueError(
                "CrossEncoder.rank() only works for models with num_labels=1. "
                "Consider using CrossEncoder.predict() with input pairs instead."
            )
        if not isinstance(query, str):
            raise TypeError(f"query is {type(query).__name__}, not str")
        if isinstance(documents, str):
            raise TypeError("documents must be a list of str, not one str")
        documents = list(documents)
        if not documents:
            return []
        scores = self.predict(
            [(query, d) for d in documents],
            prompt_name=prompt_name,
            prompt=prompt,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            activation_fn=activation_fn,
            device=device,
        ).tolist()
        results: List[Dict[str, Union[int, float, str]]] = []
        for i, score in enumerate(scores):
            results.append({"corpus_id": i, "score": score})
            if return_documents:
                results[-1]["text"] = documents[i]
        results = sorted(results, key=lambda x: x["score"], reverse=True)
        return results[:top_k]
