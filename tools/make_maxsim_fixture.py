"""Make the MaxSim fixture: real all-MiniLM-L6-v2 token vectors and sentence-transformers' MaxSim scores on them.

Writes ``tests/fixtures/maxsim/``:

* ``tokens.npy``   float32 (total_tokens, 384): the token vectors of every text, one text after another, as
                   ``model.encode(texts, output_value="token_embeddings")`` returns them (not normalized)
* ``meta.json``    the texts, which are queries and which documents, each text's token count (rows of
                   ``tokens.npy``), and the score matrices (queries × documents) of
                   ``sentence_transformers.util.maxsim`` for: the raw vectors (``raw``), L2-normalized token
                   vectors (``normalized``), ``length_normalize=True`` on the normalized vectors
                   (``normalized_mean``), and the raw vectors with an empty (zero-token) document appended
                   (``with_empty_doc``: ST scores it -1e9)

Run from the repository root with the model fetched (``~/.cache/embedkit/models/all-MiniLM-L6-v2``, or set
EMBEDKIT_MODEL_DIR); made with sentence-transformers 6.2 and torch 2.15:

    tools/.venv/bin/python tools/make_maxsim_fixture.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.util import maxsim  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "maxsim"
MODEL = Path(
    os.environ.get("EMBEDKIT_MODEL_DIR", Path.home() / ".cache" / "embedkit" / "models" / "all-MiniLM-L6-v2")
)

QUERIES = [
    "how do I set up kubernetes",
    "cheap flights to Lisbon",
    "what causes the seasons on Earth?",
    "python list comprehension",
]
DOCS = [
    "Kubernetes clusters are configured with kubectl and YAML manifests.",
    "The tilt of Earth's axis, not its distance from the Sun, gives us summer and winter.",
    "Budget airlines fly to Portugal's capital several times a day.",
    "List comprehensions build a new list from an iterable in one expression: [x * x for x in xs].",
    "A recipe for sourdough bread needs flour, water, salt and patience.",
    "Docker containers package an application with its dependencies.",
    "Die Jahreszeiten entstehen durch die Neigung der Erdachse.",
    "ok",
    "Stock prices fell sharply after the central bank raised interest rates by half a point.",
    "To install a helm chart, run helm install with the release name and the chart.",
]


def main() -> None:
    torch.set_num_threads(1)
    model = SentenceTransformer(str(MODEL), device="cpu")
    texts = QUERIES + DOCS
    tokens = model.encode(texts, output_value="token_embeddings", convert_to_numpy=False)
    tokens = [t.float().cpu() for t in tokens]
    q, d = tokens[: len(QUERIES)], tokens[len(QUERIES) :]
    qn = [torch.nn.functional.normalize(t, dim=-1) for t in q]
    dn = [torch.nn.functional.normalize(t, dim=-1) for t in d]
    empty = torch.zeros(0, q[0].shape[1])
    scores = {
        "raw": maxsim(q, d),
        "normalized": maxsim(qn, dn),
        "normalized_mean": maxsim(qn, dn, length_normalize=True),
        "with_empty_doc": maxsim(q, d + [empty]),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(OUT / "tokens.npy", torch.cat(tokens).numpy().astype(np.float32))
    meta = {
        "model": "all-MiniLM-L6-v2",
        "queries": QUERIES,
        "documents": DOCS,
        "token_counts": [int(t.shape[0]) for t in tokens],
        "scores": {k: v.tolist() for k, v in scores.items()},
    }
    (OUT / "meta.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print({k: v.shape for k, v in scores.items()}, sum(meta["token_counts"]), "tokens")


if __name__ == "__main__":
    main()
