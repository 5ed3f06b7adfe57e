"""Make the quantization fixture: real all-MiniLM-L6-v2 vectors and what sentence-transformers makes of them.

Writes ``tests/fixtures/quantization/``:

* ``texts.txt`` / ``calibration_texts.txt``  1,000 and 200 distinct English sentences from Python's own
                      reference manual (``pydoc_data.topics``, shipped with every CPython), one per line
* ``embeddings.npy``  float32 (1000, 384): ``model.encode(texts)`` (the model normalizes)
* ``calibration.npy`` float32 (200, 384): the calibration set, embedded the same way
* ``ranges.npy``      float32 (2, 384): min and max of ``embeddings`` (the "from the data" ranges)
* ``ranges_calibration.json``  ``{"min": [...], "max": [...]}`` of ``calibration`` (a saved ranges file)
* ``int8.npy``, ``binary.npy``, ``ubinary.npy``          ``quantize_embeddings(embeddings, precision)``
* ``int8_calibration.npy``  ``quantize_embeddings(embeddings, "int8", calibration_embeddings=calibration)``
* ``digests.json``    sha256 of the raw C-order bytes, shape and dtype of every output, including those not
                      stored whole to keep the fixture small: ``uint8``, ``uint8_calibration``,
                      ``float16`` (numpy ``astype(np.float16)``) and ``bfloat16`` (torch ``.to(torch.bfloat16)``,
                      as uint16 bits; sentence-transformers itself has no float16/bfloat16 precision)

The script is deterministic (single thread, fixed sentence order). The sentences depend on the Python
version's manual; the committed fixture was made with CPython 3.11.7, sentence-transformers 6.2, torch
2.15 and numpy 2.4. Run from the repository root with the model fetched
(``~/.cache/embedkit/models/all-MiniLM-L6-v2``, or set EMBEDKIT_MODEL_DIR):

    tools/.venv/bin/python tools/make_quantization_fixture.py
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pydoc_data.topics import topics  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.util.quantization import (  # noqa: E402
    _get_quantization_ranges,
    quantize_embeddings,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "quantization"
MODEL = Path(
    os.environ.get(
        "EMBEDKIT_MODEL_DIR",
        Path.home() / ".cache" / "embedkit" / "models" / "all-MiniLM-L6-v2",
    )
)
N_MAIN = 1000
N_CALIBRATION = 200


def sentences() -> list[str]:
    """Distinct prose sentences of the Python reference manual, in a fixed order."""
    text = "\n".join(topics[k] for k in sorted(topics))
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    out, seen = [], set()
    for p in paragraphs:
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", p):
            # Prose only: no code prompts, reST markup or tables.
            if not (40 <= len(s) <= 300 and s[0].isupper() and s[-1] in ".!?"):
                continue
            if re.search(r">>>|::|\|", s) or s in seen:
                continue
            seen.add(s)
            out.append(s)
    return out


def digest(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {
        "sha256": hashlib.sha256(a.tobytes()).hexdigest(),
        "shape": list(a.shape),
        "dtype": a.dtype.str,
    }


def main() -> None:
    torch.set_num_threads(1)
    texts = sentences()
    if len(texts) < N_MAIN + N_CALIBRATION:
        sys.exit(f"only {len(texts)} sentences found, need {N_MAIN + N_CALIBRATION}")
    # Interleave so both sets span the whole manual rather than its first topics.
    main_texts = [t for i, t in enumerate(texts) if i % 3 != 2][:N_MAIN]
    calibration_texts = [t for i, t in enumerate(texts) if i % 3 == 2][:N_CALIBRATION]

    model = SentenceTransformer(str(MODEL), device="cpu")
    emb = model.encode(main_texts, batch_size=32, convert_to_numpy=True)
    cal = model.encode(calibration_texts, batch_size=32, convert_to_numpy=True)
    assert emb.dtype == np.float32 and emb.shape == (N_MAIN, 384), emb.shape

    outputs = {
        "int8": quantize_embeddings(emb, "int8"),
        "uint8": quantize_embeddings(emb, "uint8"),
        "binary": quantize_embeddings(emb, "binary"),
        "ubinary": quantize_embeddings(emb, "ubinary"),
        "int8_calibration": quantize_embeddings(emb, "int8", calibration_embeddings=cal),
        "uint8_calibration": quantize_embeddings(emb, "uint8", calibration_embeddings=cal),
        "float16": emb.astype(np.float16),
        "bfloat16": torch.from_numpy(emb).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16),
    }
    # encode(precision=...) must agree with quantize_embeddings on the whole set (it calls it).
    for p in ("int8", "uint8", "binary", "ubinary"):
        enc = model.encode(main_texts, batch_size=32, convert_to_numpy=True, precision=p)
        assert np.array_equal(enc, outputs[p]), p

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "texts.txt").write_text("\n".join(main_texts) + "\n", encoding="utf-8")
    (OUT / "calibration_texts.txt").write_text("\n".join(calibration_texts) + "\n", encoding="utf-8")
    np.save(OUT / "embeddings.npy", emb)
    np.save(OUT / "calibration.npy", cal)
    np.save(OUT / "ranges.npy", _get_quantization_ranges(emb, "int8", None).astype(np.float32))
    cal_ranges = _get_quantization_ranges(cal, "int8", None).astype(np.float32)
    # repr of a float32 widened to float64 is exact, so the JSON reads back to the same float32 bits.
    (OUT / "ranges_calibration.json").write_text(
        json.dumps({"min": [float(x) for x in cal_ranges[0]], "max": [float(x) for x in cal_ranges[1]]})
        + "\n"
    )
    for name in ("int8", "binary", "ubinary", "int8_calibration"):
        np.save(OUT / f"{name}.npy", outputs[name])
    (OUT / "digests.json").write_text(
        json.dumps({k: digest(v) for k, v in outputs.items()}, indent=2, sort_keys=True) + "\n"
    )
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total / 1e6:.2f} MB, to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
