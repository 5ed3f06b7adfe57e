"""Type stubs of the native module (crates/embedkit-python/src). Use the public API in ``embedkit`` instead."""

from os import PathLike
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str

def resolve_threads(threads: Optional[int] = None) -> int:
    """``threads``, else OMP_NUM_THREADS, else RAYON_NUM_THREADS, else every core."""

class Model:
    """A loaded embedder: local (on its own thread pool), an API model, either behind a cache."""

    def __init__(
        self,
        name: str,
        compute: str = "f32",
        threads: Optional[int] = None,
        cache: Optional[str] = None,
        base_url: Optional[str] = None,
        device: str = "cpu",
    ) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def compute(self) -> str: ...
    @property
    def cache(self) -> Optional[str]: ...
    @property
    def base_url(self) -> Optional[str]: ...
    def fingerprint(self) -> str: ...
    def dims(self) -> int: ...
    def is_api(self) -> bool: ...
    def info(self) -> Dict[str, Any]: ...
    def embed(
        self,
        texts: Sequence[str],
        prompt: Optional[str] = None,
        prompt_name: Optional[str] = None,
        batch_size: int = 32,
        max_length: Optional[int] = None,
        normalize: Optional[bool] = None,
    ) -> npt.NDArray[np.float32]: ...
    def embed_tokens(
        self,
        texts: Sequence[str],
        prompt: Optional[str] = None,
        prompt_name: Optional[str] = None,
        batch_size: int = 32,
        max_length: Optional[int] = None,
    ) -> List[Tuple[List[int], npt.NDArray[np.float32]]]: ...
    def tokenize(
        self, texts: Sequence[str], max_length: Optional[int] = None
    ) -> Tuple[List[List[int]], List[List[int]], int]: ...
    def usage(self) -> Optional[Dict[str, Any]]: ...

class CrossModel:
    """A loaded cross-encoder (a ``*ForSequenceClassification`` folder) on the CPU engine, on its own thread pool."""

    def __init__(self, name: str, compute: str = "f32", threads: Optional[int] = None) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def threads(self) -> int: ...
    @property
    def num_labels(self) -> int: ...
    def info(self) -> Dict[str, Any]:
        """num_labels, labels, activation, max_length, architecture, path, hidden_size, backend."""
    def predict(
        self,
        pairs: Sequence[Tuple[str, str]],
        batch_size: int = 32,
        activation: Optional[str] = None,
        max_length: Optional[int] = None,
    ) -> npt.NDArray[np.float32]:
        """float32 (len(pairs), num_labels); ``activation`` (identity, sigmoid, tanh, relu, gelu, silu)
        overrides the model's."""

class Index:
    """An embedkit index file, memory-mapped."""

    def __init__(self, path: Union[str, PathLike]) -> None: ...
    @staticmethod
    def write(
        path: Union[str, PathLike],
        embeddings: npt.NDArray[np.float32],
        ids: Optional[Sequence[str]] = None,
        precision: str = "float32",
        rescore_vectors: Optional[str] = None,
        metric: str = "cosine",
        model: str = "",
        fingerprint: str = "",
    ) -> int: ...
    def __len__(self) -> int: ...
    def meta(self) -> Dict[str, Any]: ...
    def search_vectors(
        self, queries: npt.NDArray[np.float32], top_k: int = 10, rescore: int = 4
    ) -> Tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...
    def ids(self, rows: Sequence[int]) -> List[Optional[str]]: ...

def quantize_embeddings(
    embeddings: npt.NDArray[np.float32],
    precision: str,
    ranges: Optional[npt.NDArray[np.float32]] = None,
    calibration_embeddings: Optional[npt.NDArray[np.float32]] = None,
) -> np.ndarray: ...
def pairwise_scores(
    a: npt.NDArray[np.float32], b: npt.NDArray[np.float32], metric: str, pairwise: bool = False
) -> npt.NDArray[np.float32]: ...
def maxsim(
    queries: Sequence[npt.NDArray[np.float32]],
    documents: Sequence[npt.NDArray[np.float32]],
    length_normalize: bool = False,
) -> npt.NDArray[np.float32]: ...
