"""Make the sentence-transformers 6.2 references for the Python package (``crates/embedkit-python``).

``embedkit.SentenceTransformer`` must behave like sentence-transformers' ``SentenceTransformer``: same
return types, dtypes, shapes and values for ``encode`` (and its options), ``encode_query``,
``encode_document``, ``similarity``, ``similarity_pairwise``, ``tokenize``, the model attributes, and
``quantize_embeddings``. This script calls the real sentence-transformers on a list of cases and writes
what each returned:

* ``tests/fixtures/python/manifest.json``  versions, the texts, and one entry per case: the model, the
  constructor keyword arguments, the method, the keyword arguments (texts and arrays given by reference),
  and a description of the output (Python type, dtype, shape, and the ``.npy`` file holding the values,
  or the value inline). ``tests/fixtures/python/README.md`` describes the schema.
* ``tests/fixtures/python/*.npy``  the arrays (outputs, and the inputs of the similarity and
  quantization cases), each written with ``np.save`` (no pickles).

Models: ``minilm`` is the real all-MiniLM-L6-v2 (``EMBEDKIT_MODEL_DIR``, else
``~/.cache/embedkit/models/all-MiniLM-L6-v2``, else ``.tmp/models/all-MiniLM-L6-v2``; its
model.safetensors sha256 is checked); the others are the tiny random models committed under
``tests/fixtures/tiny/``. Everything runs on CPU, one thread, with no randomness, so reruns give the same
values (bit for bit on the same machine and versions). The texts are 12 of the golden texts
(``tests/fixtures/golden/all-MiniLM-L6-v2.json``); the quantization cases embed all 40 golden texts and
use 64 sentences of ``tests/fixtures/quantization/calibration_texts.txt`` as calibration set.

Run from the repository root (the venv comes from ``tools/requirements.txt``; the HF hub is never used):

    tools/.venv/bin/python tools/make_python_fixtures.py
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import warnings
from pathlib import Path
from collections.abc import Mapping
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import sentence_transformers  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sentence_transformers import SentenceTransformer, quantize_embeddings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "python"
GOLDEN = ROOT / "tests" / "fixtures" / "golden" / "all-MiniLM-L6-v2.json"
CALIBRATION_TEXTS = ROOT / "tests" / "fixtures" / "quantization" / "calibration_texts.txt"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

# Golden text indices used as the 12 texts: "", "   ", accents, CJK, emoji, code, the long text (far past
# max_seq_length), "a", and ordinary English sentences.
TEXT_INDICES = [0, 1, 3, 5, 11, 12, 16, 20, 25, 26, 27, 29]
N_CALIBRATION = 64

PROMPTS = "tests/fixtures/tiny/bert-prompts"  # prompts query/passage/document, default query, dot
PROMPTS_EXCLUDE = "tests/fixtures/tiny/bert-prompts-exclude"  # same, Pooling include_prompt=False
NO_NORMALIZE = "tests/fixtures/tiny/bert-cls"  # Transformer + CLS Pooling, no Normalize module
MEAN = "tests/fixtures/tiny/bert-mean"  # prompts {"query": "", "document": ""}, no default prompt


def minilm_dir() -> Path:
    candidates = [
        os.environ.get("EMBEDKIT_MODEL_DIR"),
        Path.home() / ".cache" / "embedkit" / "models" / "all-MiniLM-L6-v2",
        ROOT / ".tmp" / "models" / "all-MiniLM-L6-v2",
    ]
    for c in candidates:
        if c and (Path(c) / "model.safetensors").is_file():
            return Path(c)
    sys.exit(
        "all-MiniLM-L6-v2 not found: run `embedkit models fetch all-MiniLM-L6-v2` (or "
        "tools/fetch_models_for_tools.py), or set EMBEDKIT_MODEL_DIR"
    )


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Writer:
    """Turns Python results into JSON descriptions, writing arrays as .npy files."""

    def __init__(self) -> None:
        self.files: set[str] = set()

    def save(self, stem: str, arr: np.ndarray) -> str:
        name = f"{stem}.npy"
        assert name not in self.files, f"file name used twice: {name}"
        self.files.add(name)
        np.save(OUT / name, np.ascontiguousarray(arr), allow_pickle=False)
        return name

    def describe(self, obj: Any, stem: str) -> dict:
        if isinstance(obj, torch.Tensor):
            arr = obj.detach().cpu().numpy()
            return {
                "type": "torch.Tensor",
                "dtype": str(obj.dtype),
                "shape": list(obj.shape),
                "device": str(obj.device),
                "file": self.save(stem, arr),
            }
        if isinstance(obj, np.ndarray):
            return {
                "type": "numpy.ndarray",
                "dtype": obj.dtype.name,
                "shape": list(obj.shape),
                "file": self.save(stem, obj),
            }
        if isinstance(obj, list):
            return {"type": "list", "items": [self.describe(x, f"{stem}.{i}") for i, x in enumerate(obj)]}
        if isinstance(obj, Mapping):
            out = {"type": "dict", "items": {k: self.describe(v, f"{stem}.{k}") for k, v in obj.items()}}
            if type(obj) is not dict:
                out["class"] = f"{type(obj).__module__}.{type(obj).__qualname__}"
            return out
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return {"type": type(obj).__name__, "value": obj}
        raise TypeError(f"{stem}: cannot describe {type(obj)}")


def jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(type(v))


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    all_golden = golden["texts"]
    texts = [all_golden[i] for i in TEXT_INDICES]
    calibration_texts = [
        line for line in CALIBRATION_TEXTS.read_text(encoding="utf-8").splitlines() if line
    ][:N_CALIBRATION]

    minilm_path = minilm_dir()
    minilm_hash = sha256_of(minilm_path / "model.safetensors")
    assert minilm_hash == MINILM_SHA256, f"{minilm_path}: unexpected model.safetensors {minilm_hash}"

    # Start from a clean folder, keeping the hand-written README.md.
    OUT.mkdir(parents=True, exist_ok=True)
    for f in OUT.iterdir():
        if f.suffix in (".npy", ".json"):
            f.unlink()
    w = Writer()

    models: dict[tuple, SentenceTransformer] = {}

    def model_for(key: str, ctor: dict) -> SentenceTransformer:
        k = (key, json.dumps(ctor, sort_keys=True))
        if k not in models:
            path = str(minilm_path) if key == "minilm" else str(ROOT / key)
            models[k] = SentenceTransformer(path, device="cpu", **ctor)
        return models[k]

    # Value references in kwargs: {"$texts": "all"}, {"$texts": [i, ...]}, {"$text": i}, {"$npy": file}.
    def resolve(v: Any) -> Any:
        if isinstance(v, dict) and len(v) == 1:
            (tag, x), = v.items()
            if tag == "$texts":
                return list(texts) if x == "all" else [texts[i] for i in x]
            if tag == "$text":
                return texts[x]
            if tag == "$npy":
                return np.load(OUT / x)
        if isinstance(v, list):
            return [resolve(x) for x in v]
        return v

    def input_npy(stem: str, arr: np.ndarray) -> dict:
        return {"$npy": w.save(stem, arr)}

    cases: list[dict] = []
    results: dict[str, Any] = {}

    def case(name: str, model: str | None, method: str, kwargs: dict, ctor: dict | None = None,
             note: str | None = None) -> Any:
        assert all(c["name"] != name for c in cases), name
        ctor = ctor or {}
        real = {k: resolve(v) for k, v in kwargs.items()}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if method == "quantize_embeddings":
                    result = quantize_embeddings(**real)
                else:
                    m = model_for(model, ctor)
                    if method == "attributes":
                        result = {
                            "get_embedding_dimension()": m.get_embedding_dimension(),
                            "get_sentence_embedding_dimension()": m.get_sentence_embedding_dimension(),
                            "max_seq_length": m.max_seq_length,
                            "prompts": dict(m.prompts),
                            "default_prompt_name": m.default_prompt_name,
                            "similarity_fn_name": m.similarity_fn_name,
                            "truncate_dim": m.truncate_dim,
                        }
                    else:
                        result = getattr(m, method)(**real)
            except Exception as exc:  # noqa: BLE001 - the error is the recorded outcome
                result = exc
                output = {"type": "error", "exception": type(exc).__name__, "message": str(exc)}
            else:
                if method == "attributes":
                    output = {"type": "attributes", "values": jsonable(result)}
                else:
                    output = w.describe(result, name)
        entry = {
            "name": name,
            "model": model,
            "constructor_kwargs": ctor,
            "method": method,
            "kwargs": kwargs,
            "output": output,
        }
        ws = [{"category": x.category.__name__, "message": str(x.message)} for x in caught
              if "sentence_transformers" in (x.filename or "") or x.category is FutureWarning]
        if ws:
            entry["warnings"] = ws
        if note:
            entry["note"] = note
        cases.append(entry)
        results[name] = result
        return result

    ALL = {"$texts": "all"}
    ML = "minilm"

    # 1. encode on a list, a single string, an empty list.
    base = case("minilm_encode_list", ML, "encode", {"inputs": ALL})
    case("minilm_encode_single", ML, "encode", {"inputs": {"$text": 3}},
         note="a single string gives a 1-D array (row 3 of minilm_encode_list up to ~1e-6: batch padding)")
    case("minilm_encode_empty", ML, "encode", {"inputs": []},
         note="ST returns np.array([]): float64, shape (0,), not (0, 384)")
    case("minilm_encode_empty_tensor", ML, "encode", {"inputs": [], "convert_to_tensor": True})
    case("minilm_encode_empty_int8", ML, "encode", {"inputs": [], "precision": "int8"},
         note="no quantization happens on an empty result: still float64 (0,)")
    case("minilm_encode_empty_token_embeddings", ML, "encode",
         {"inputs": [], "output_value": "token_embeddings"})
    case("minilm_encode_sentences_alias", ML, "encode", {"sentences": ALL},
         note="6.x renamed the first parameter to `inputs`; `sentences=` still works (logs a deprecation "
              "warning) and gives minilm_encode_list")
    case("minilm_encode_two", ML, "encode", {"inputs": {"$texts": [8, 9]}},
         note="a list of 2 texts (rows 8, 9 of minilm_encode_list up to ~1e-6)")

    # 2. normalize_embeddings on a model without a Normalize module, and on one with it.
    case("nonorm_encode_default", NO_NORMALIZE, "encode", {"inputs": ALL},
         note="bert-cls: Transformer + CLS Pooling, no Normalize: rows are not unit length")
    case("nonorm_encode_normalize_false", NO_NORMALIZE, "encode",
         {"inputs": ALL, "normalize_embeddings": False})
    case("nonorm_encode_normalize_true", NO_NORMALIZE, "encode",
         {"inputs": ALL, "normalize_embeddings": True}, note="rows L2-normalized")
    case("nonorm_encode_single_normalize_true", NO_NORMALIZE, "encode",
         {"inputs": {"$text": 3}, "normalize_embeddings": True})
    case("minilm_encode_normalize_true", ML, "encode", {"inputs": ALL, "normalize_embeddings": True},
         note="MiniLM already ends in Normalize: equals minilm_encode_list within ~1e-7")

    # 3. truncate_dim.
    case("minilm_ctor_truncate128_encode", ML, "encode", {"inputs": ALL}, ctor={"truncate_dim": 128},
         note="first 128 columns of minilm_encode_list, not renormalized")
    case("minilm_encode_truncate64", ML, "encode", {"inputs": ALL, "truncate_dim": 64})
    case("minilm_ctor_truncate128_encode_truncate64", ML, "encode", {"inputs": ALL, "truncate_dim": 64},
         ctor={"truncate_dim": 128}, note="the encode argument wins over the constructor's")
    case("minilm_encode_truncate64_normalize_true", ML, "encode",
         {"inputs": ALL, "truncate_dim": 64, "normalize_embeddings": True},
         note="truncation happens before normalize_embeddings: rows are unit length again")
    case("minilm_encode_truncate1000", ML, "encode", {"inputs": ALL, "truncate_dim": 1000},
         note="a truncate_dim above the dimension keeps all 384")
    case("minilm_ctor_truncate128_encode_single", ML, "encode", {"inputs": {"$text": 3}},
         ctor={"truncate_dim": 128})

    # 4. precision.
    for p in ("int8", "uint8", "binary", "ubinary", "float32"):
        case(f"minilm_encode_precision_{p}", ML, "encode", {"inputs": ALL, "precision": p},
             note=("int8/uint8 ranges are the per-column min/max of this batch's 12 vectors"
                   if p.endswith("int8") else None))
    case("minilm_encode_precision_ubinary_truncate100", ML, "encode",
         {"inputs": ALL, "precision": "ubinary", "truncate_dim": 100},
         note="100 bits packed into 13 bytes (np.packbits pads the last byte with zero bits)")
    case("minilm_encode_precision_int8_truncate64", ML, "encode",
         {"inputs": ALL, "precision": "int8", "truncate_dim": 64})
    case("minilm_encode_precision_binary_single", ML, "encode", {"inputs": {"$text": 3}, "precision": "binary"})
    case("minilm_encode_precision_int8_single", ML, "encode", {"inputs": {"$text": 3}, "precision": "int8"},
         note="one vector cannot calibrate int8: ValueError")
    case("minilm_encode_precision_int8_two", ML, "encode",
         {"inputs": {"$texts": [8, 9]}, "precision": "int8"},
         note="two vectors: per column the smaller maps to -128, the larger to 127, or 126 where "
              "float32 rounding makes (max - min) / step fall just under 255")
    case("minilm_encode_precision_int8_tensor", ML, "encode",
         {"inputs": ALL, "precision": "int8", "convert_to_tensor": True})

    # 5. prompts on bert-prompts (query: "query: ", passage: "passage: ", document: "", default "query").
    T = {"inputs": ALL}
    case("prompts_encode_default", PROMPTS, "encode", T, note="default_prompt_name 'query' applies")
    case("prompts_encode_prompt_name_query", PROMPTS, "encode", {**T, "prompt_name": "query"})
    case("prompts_encode_prompt_name_passage", PROMPTS, "encode", {**T, "prompt_name": "passage"})
    case("prompts_encode_prompt_name_document", PROMPTS, "encode", {**T, "prompt_name": "document"},
         note="the empty prompt: no prefix (default prompt not applied)")
    case("prompts_encode_prompt_custom", PROMPTS, "encode", {**T, "prompt": "custom: "})
    case("prompts_encode_prompt_empty", PROMPTS, "encode", {**T, "prompt": ""},
         note="prompt='' turns the default prompt off")
    case("prompts_encode_prompt_and_prompt_name", PROMPTS, "encode",
         {**T, "prompt": "custom: ", "prompt_name": "passage"},
         note="prompt wins over prompt_name (ST logs a warning)")
    case("prompts_encode_prompt_name_missing", PROMPTS, "encode", {**T, "prompt_name": "nope"})
    case("prompts_encode_query", PROMPTS, "encode_query", T, note="uses prompt_name 'query'")
    case("prompts_encode_document", PROMPTS, "encode_document", T,
         note="first of document/passage/corpus present: 'document' (the empty prompt)")
    case("prompts_encode_query_prompt_name_passage", PROMPTS, "encode_query", {**T, "prompt_name": "passage"})
    case("prompts_encode_document_prompt_custom", PROMPTS, "encode_document", {**T, "prompt": "custom: "})
    case("prompts_encode_query_single", PROMPTS, "encode_query", {"inputs": {"$text": 3}})
    case("prompts_exclude_encode_default", PROMPTS_EXCLUDE, "encode", T,
         note="Pooling include_prompt=False: the 'query: ' tokens are left out of the mean")
    case("prompts_exclude_encode_document", PROMPTS_EXCLUDE, "encode_document", T)
    case("prompts_exclude_encode_prompt_custom", PROMPTS_EXCLUDE, "encode", {**T, "prompt": "custom: "})
    case("prompts_ctor_default_prompt_name_passage", PROMPTS, "encode", T,
         ctor={"default_prompt_name": "passage"})
    case("prompts_ctor_prompts", PROMPTS, "encode", T,
         ctor={"prompts": {"query": "q: ", "other": "other: "}, "default_prompt_name": "other"})
    case("mean_encode_default", MEAN, "encode", T,
         note="bert-mean: prompts {query: '', document: ''}, no default prompt")
    case("mean_encode_query", MEAN, "encode_query", T, note="the empty 'query' prompt: equals the default")
    case("mean_encode_document", MEAN, "encode_document", T)
    case("mean_ctor_prompts_empty_encode_query", MEAN, "encode_query", T, ctor={"prompts": {}},
         note="constructor prompts={} is falsy, so the saved prompts still load")

    # 6. output_value.
    tok_idx = [2, 6, 0, 8]  # accents, the long text (truncated at 256), "", a short sentence
    case("minilm_encode_token_embeddings", ML, "encode",
         {"inputs": {"$texts": tok_idx}, "output_value": "token_embeddings"},
         note="a list of torch tensors, each [n_tokens, 384] with the text's own length (padding cut off)")
    case("minilm_encode_token_embeddings_single", ML, "encode",
         {"inputs": {"$text": 3}, "output_value": "token_embeddings"})
    case("minilm_encode_token_embeddings_truncate64", ML, "encode",
         {"inputs": {"$texts": [2, 8]}, "output_value": "token_embeddings", "truncate_dim": 64},
         note="truncate_dim cuts sentence embeddings only")
    case("minilm_encode_output_none", ML, "encode", {"inputs": {"$texts": [2, 8]}, "output_value": None},
         note="a list of dicts of per-text tensors; input_ids etc. keep the batch's padding")
    case("prompts_encode_output_none", PROMPTS, "encode", {"inputs": {"$texts": [2, 8]}, "output_value": None},
         note="with a prompt there is also prompt_length")
    case("minilm_encode_output_none_single", ML, "encode", {"inputs": {"$text": 8}, "output_value": None})
    case("prompts_encode_token_embeddings", PROMPTS, "encode",
         {"inputs": {"$texts": [2, 8]}, "output_value": "token_embeddings"},
         note="prompt tokens are included in the token embeddings")

    # 7. similarity.
    emb = results["minilm_encode_list"]
    a, b = input_npy("minilm_sim_a", emb[:5]), input_npy("minilm_sim_b", emb[5:])
    case("minilm_similarity", ML, "similarity", {"embeddings1": a, "embeddings2": b})
    pa, pb = input_npy("minilm_simpw_a", emb[:6]), input_npy("minilm_simpw_b", emb[6:])
    case("minilm_similarity_pairwise", ML, "similarity_pairwise", {"embeddings1": pa, "embeddings2": pb})
    v0, v1 = input_npy("minilm_sim_v0", emb[8]), input_npy("minilm_sim_v1", emb[9])
    case("minilm_similarity_1d", ML, "similarity", {"embeddings1": v0, "embeddings2": v1},
         note="1-D inputs give a [1, 1] matrix")
    case("minilm_similarity_pairwise_1d", ML, "similarity_pairwise", {"embeddings1": v0, "embeddings2": v1})
    for fn in ("dot", "euclidean", "manhattan"):
        case(f"minilm_similarity_{fn}", ML, "similarity", {"embeddings1": a, "embeddings2": b},
             ctor={"similarity_fn_name": fn})
        case(f"minilm_similarity_pairwise_{fn}", ML, "similarity_pairwise",
             {"embeddings1": pa, "embeddings2": pb}, ctor={"similarity_fn_name": fn})
    pemb = results["prompts_encode_default"]
    qa, qb = input_npy("prompts_sim_a", pemb[:5]), input_npy("prompts_sim_b", pemb[5:])
    case("prompts_similarity", PROMPTS, "similarity", {"embeddings1": qa, "embeddings2": qb},
         note="bert-prompts' similarity_fn_name is dot")
    qpa, qpb = input_npy("prompts_simpw_a", pemb[:6]), input_npy("prompts_simpw_b", pemb[6:])
    case("prompts_similarity_pairwise", PROMPTS, "similarity_pairwise", {"embeddings1": qpa, "embeddings2": qpb})
    nemb = results["nonorm_encode_default"]
    na, nb = input_npy("nonorm_sim_a", nemb[:5]), input_npy("nonorm_sim_b", nemb[5:])
    case("nonorm_similarity", NO_NORMALIZE, "similarity", {"embeddings1": na, "embeddings2": nb},
         note="cosine on unnormalized vectors")

    # 8. tokenize (deprecated in 6.x in favour of preprocess; same result).
    case("minilm_tokenize", ML, "tokenize", {"texts": ALL},
         note="padded to the longest text in the list; the long text is cut at 256 tokens")
    case("minilm_tokenize_short", ML, "tokenize", {"texts": {"$texts": [8, 9, 0]}})
    case("minilm_preprocess", ML, "preprocess", {"inputs": {"$texts": [8, 9, 0]}})
    case("prompts_tokenize", PROMPTS, "tokenize", {"texts": {"$texts": [8, 9, 0]}},
         note="tokenize never adds the default prompt")
    case("minilm_tokenize_empty", ML, "tokenize", {"texts": []})

    # 9. attributes.
    case("minilm_attributes", ML, "attributes", {})
    case("minilm_ctor_truncate128_attributes", ML, "attributes", {}, ctor={"truncate_dim": 128})
    case("minilm_ctor_truncate1000_attributes", ML, "attributes", {}, ctor={"truncate_dim": 1000})
    case("minilm_ctor_dot_attributes", ML, "attributes", {}, ctor={"similarity_fn_name": "dot"})
    case("prompts_attributes", PROMPTS, "attributes", {})
    case("prompts_ctor_cosine_attributes", PROMPTS, "attributes", {}, ctor={"similarity_fn_name": "cosine"})
    case("prompts_ctor_prompts_attributes", PROMPTS, "attributes", {},
         ctor={"prompts": {"query": "q: ", "other": "other: "}, "default_prompt_name": "other"})
    case("mean_ctor_prompts_empty_attributes", MEAN, "attributes", {}, ctor={"prompts": {}})
    case("nonorm_attributes", NO_NORMALIZE, "attributes", {})
    case("mean_attributes", MEAN, "attributes", {})

    # 10. quantize_embeddings.
    qemb = model_for(ML, {}).encode(all_golden, convert_to_numpy=True)
    qcal = model_for(ML, {}).encode(calibration_texts, convert_to_numpy=True)
    cal_ranges = np.vstack((qcal.min(0), qcal.max(0))).astype(np.float32)
    given = np.vstack((cal_ranges[0] * 0.8, cal_ranges[1] * 0.8)).astype(np.float32)
    e_ref = input_npy("quantize_input", qemb)
    c_ref = input_npy("quantize_calibration", qcal)
    r_ref = input_npy("quantize_ranges", given)
    for p in ("int8", "uint8", "binary", "ubinary"):
        case(f"quantize_{p}", None, "quantize_embeddings", {"embeddings": e_ref, "precision": p})
        case(f"quantize_{p}_calibration", None, "quantize_embeddings",
             {"embeddings": e_ref, "precision": p, "calibration_embeddings": c_ref})
        case(f"quantize_{p}_ranges", None, "quantize_embeddings",
             {"embeddings": e_ref, "precision": p, "ranges": r_ref},
             note="ranges are 0.8 x the calibration min/max: values outside are clipped to 0/255")
        case(f"quantize_{p}_ranges_and_calibration", None, "quantize_embeddings",
             {"embeddings": e_ref, "precision": p, "ranges": r_ref, "calibration_embeddings": c_ref},
             note="ranges win over calibration_embeddings")
    case("quantize_float32", None, "quantize_embeddings", {"embeddings": e_ref, "precision": "float32"})
    one = input_npy("quantize_input_single", qemb[25])
    case("quantize_int8_single_ranges", None, "quantize_embeddings",
         {"embeddings": one, "precision": "int8", "ranges": r_ref})
    case("quantize_int8_single", None, "quantize_embeddings", {"embeddings": one, "precision": "int8"})
    case("quantize_ubinary_single", None, "quantize_embeddings", {"embeddings": one, "precision": "ubinary"})
    odd = input_npy("quantize_input_dim100", qemb[:, :100])
    case("quantize_binary_dim100", None, "quantize_embeddings", {"embeddings": odd, "precision": "binary"})
    case("quantize_int8_input_int8", None, "quantize_embeddings",
         {"embeddings": {"$npy": "quantize_int8.npy"}, "precision": "int8"},
         note="already-quantized input is refused")
    case("quantize_bogus_precision", None, "quantize_embeddings", {"embeddings": e_ref, "precision": "int4"})

    # 11. batch_size.
    case("minilm_encode_batch2", ML, "encode", {"inputs": ALL, "batch_size": 2},
         note="equals minilm_encode_list (batch_size 32) within ~1e-6")
    case("minilm_encode_batch1", ML, "encode", {"inputs": ALL, "batch_size": 1})
    case("minilm_encode_batch0", ML, "encode", {"inputs": ALL, "batch_size": 0})

    # 12. convert_to_tensor / convert_to_numpy.
    case("minilm_encode_convert_to_tensor", ML, "encode", {"inputs": ALL, "convert_to_tensor": True})
    case("minilm_encode_convert_to_tensor_single", ML, "encode", {"inputs": {"$text": 3}, "convert_to_tensor": True})
    case("minilm_encode_convert_to_numpy_false", ML, "encode", {"inputs": {"$texts": [8, 9]}, "convert_to_numpy": False},
         note="a list of 1-D torch tensors")
    case("minilm_encode_precision_binary_numpy_false", ML, "encode",
         {"inputs": {"$texts": [8, 9]}, "precision": "binary", "convert_to_numpy": False})

    # Checks of what the brief expects, so a changed sentence-transformers shows up here.
    def arr(n: str) -> np.ndarray:
        r = results[n]
        return r.numpy() if isinstance(r, torch.Tensor) else r

    assert base.dtype == np.float32 and base.shape == (12, 384)
    assert np.array_equal(arr("minilm_encode_sentences_alias"), base)
    assert np.allclose(arr("minilm_encode_batch2"), base, atol=1e-6)
    assert np.allclose(arr("minilm_encode_batch1"), base, atol=1e-6)
    assert np.allclose(arr("minilm_ctor_truncate128_encode"), base[:, :128], atol=1e-6)
    assert np.allclose(arr("minilm_encode_truncate64"), base[:, :64], atol=1e-6)
    assert np.allclose(arr("minilm_encode_single"), base[3], atol=1e-6)
    assert np.allclose(np.linalg.norm(arr("minilm_encode_truncate64_normalize_true"), axis=1), 1, atol=1e-6)
    assert np.array_equal(arr("minilm_encode_precision_int8"), quantize_embeddings(base, "int8"))
    assert np.array_equal(arr("prompts_encode_default"), arr("prompts_encode_prompt_name_query"))
    assert np.array_equal(arr("prompts_encode_query"), arr("prompts_encode_prompt_name_query"))
    assert np.array_equal(arr("prompts_encode_document"), arr("prompts_encode_prompt_name_document"))
    assert results["minilm_tokenize"]["input_ids"].shape == (12, 256)

    # Cross-references: a case whose single-array output is byte-identical (dtype, shape, values) to an
    # earlier case's names it, so a test can check the relation as well as the values.
    seen: dict[str, str] = {}
    for c in cases:
        o = c["output"]
        if "file" not in o:
            continue
        a = np.load(OUT / o["file"])
        key = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()
        if key in seen:
            c["identical_to"] = seen[key]
        else:
            seen[key] = c["name"]

    versions = {
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    manifest = {
        "generator": "tools/make_python_fixtures.py",
        "versions": versions,
        "models": {
            "minilm": {
                "description": "all-MiniLM-L6-v2 (real weights), e.g. ~/.cache/embedkit/models/all-MiniLM-L6-v2",
                "model_safetensors_sha256": minilm_hash,
            },
            "other": "any other model value is a folder relative to the repository root",
        },
        "constructor": "SentenceTransformer(model_folder, device='cpu', **constructor_kwargs)",
        "texts_source": {"file": "tests/fixtures/golden/all-MiniLM-L6-v2.json", "indices": TEXT_INDICES},
        "texts": texts,
        "quantize_input_texts": "all 40 texts of tests/fixtures/golden/all-MiniLM-L6-v2.json, encoded by minilm",
        "quantize_calibration_texts": f"the first {N_CALIBRATION} lines of "
                                      "tests/fixtures/quantization/calibration_texts.txt, encoded by minilm",
        "cases": cases,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"{len(cases)} cases, {len(list(OUT.iterdir()))} files, {total / 1e6:.2f} MB in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
