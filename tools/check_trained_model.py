"""Check that a folder written by `embedkit train` loads in sentence-transformers and gives embedkit's vectors.

Encodes the texts of a CSV/JSONL data file (or built-in sentences) with ``SentenceTransformer(folder)`` and with
``embedkit embed --model folder`` (the CPU engine), and fails unless every vector agrees within --tol (max
absolute difference). Also reports the held-out Spearman of cosine for a pairs file, measured by
sentence-transformers, so the training result is confirmed outside embedkit.

    tools/.venv/bin/python tools/check_trained_model.py FOLDER [--data heldout.csv] [--embedkit target/release/embedkit]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The cat sits outside.",
    "Where is the nearest train station?",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--data", help="CSV with text1,text2,label (pairs)")
    ap.add_argument("--embedkit", default=str(ROOT / "target" / "release" / "embedkit"))
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()

    texts = list(SENTENCES)
    pairs = []
    if args.data:
        with open(args.data, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                pairs.append((row["text1"], row["text2"], float(row["label"])))
        seen = {}
        for a, b, _ in pairs:
            seen.setdefault(a, None)
            seen.setdefault(b, None)
        texts += list(seen)

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.folder, device="cpu")
    st = model.encode(texts, batch_size=16, convert_to_numpy=True)

    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "texts.jsonl"
        inp.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        out = Path(tmp) / "vectors.npy"
        subprocess.run(
            [args.embedkit, "-q", "embed", "--model", args.folder, "--input", str(inp), "--format", "npy", "--output", str(out)],
            check=True,
        )
        ek = np.load(out)
    diff = float(np.abs(ek - st).max())
    print(f"{len(texts)} texts, dims {st.shape[1]}: max |embedkit - sentence-transformers| = {diff:.2e}")
    if pairs:
        from scipy.stats import spearmanr

        index = {t: i for i, t in enumerate(texts)}
        a = st[[index[p[0]] for p in pairs]]
        b = st[[index[p[1]] for p in pairs]]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        print(f"sentence-transformers spearman_cosine on {len(pairs)} pairs: {spearmanr(cos, [p[2] for p in pairs]).statistic:.4f}")
    if not diff <= args.tol:
        sys.exit(f"FAIL: vectors differ by {diff:.2e} > {args.tol:.0e}")
    print("OK")


if __name__ == "__main__":
    main()
