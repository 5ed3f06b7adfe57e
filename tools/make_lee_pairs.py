"""Make train / held-out similarity pairs from the Lee (2005) corpus shipped with gensim's tests.

lee.cor holds 50 news documents (ISO-8859-1, one per line); similarities0-1.txt the 50×50 matrix of mean human
similarity ratings (upper triangle). The documents are split by a fixed seed into 35 train and 15 held-out
documents; every pair inside each side becomes a row ``text1,text2,label`` with the human rating as label, so
no held-out document is ever seen in training.

    tools/.venv/bin/python tools/make_lee_pairs.py [--gensim-data DIR] [--out DIR] [--seed N]

Writes OUT/train.csv (595 pairs) and OUT/heldout.csv (105 pairs). The data stays out of the repository.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gensim-data", default="/work/main/.tmp/gensim/gensim/test/test_data")
    ap.add_argument("--out", default=str(ROOT / "target" / "lee"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-docs", type=int, default=35)
    args = ap.parse_args()
    data = Path(args.gensim_data)
    docs = [l.strip() for l in (data / "lee.cor").read_text(encoding="iso-8859-1").splitlines() if l.strip()]
    sims = [[float(x) for x in l.split()] for l in (data / "similarities0-1.txt").read_text().splitlines() if l.strip()]
    assert len(docs) == 50 and len(sims) == 50, (len(docs), len(sims))
    ids = list(range(50))
    random.Random(args.seed).shuffle(ids)
    splits = {"train": sorted(ids[: args.train_docs]), "heldout": sorted(ids[args.train_docs :])}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        with open(out / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text1", "text2", "label"])
            n = 0
            for a in range(len(part)):
                for b in range(a + 1, len(part)):
                    i, j = part[a], part[b]
                    w.writerow([docs[i], docs[j], sims[min(i, j)][max(i, j)]])
                    n += 1
        print(f"{out / (name + '.csv')}: {n} pairs from {len(part)} documents")


if __name__ == "__main__":
    main()
