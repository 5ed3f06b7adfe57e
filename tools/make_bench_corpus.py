"""Makes the benchmark corpora in bench/ from real news text (gensim's lee_background.cor, 300 documents).

    python3 tools/make_bench_corpus.py        # needs only pip (downloads the gensim wheel, no install)

bench/sentences.txt: 2,000 ordinary English sentences (5-30 words, about 24 tokens each).
bench/long.txt: 200 texts of about 190 words (about 250 tokens), consecutive sentences joined.
Deterministic: the same wheel gives the same files.
"""
import glob
import os
import re
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".tmp", "gensim")


def lee_background() -> str:
    os.makedirs(CACHE, exist_ok=True)
    wheels = glob.glob(os.path.join(CACHE, "gensim-4.4.0-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "gensim==4.4.0", "-d", CACHE],
                       check=True)
        wheels = glob.glob(os.path.join(CACHE, "gensim-4.4.0-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        return z.read("gensim/test/test_data/lee_background.cor").decode("latin-1")


def main() -> None:
    sentences = []
    for doc in lee_background().splitlines():
        for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", doc.strip()):
            s = " ".join(s.split())
            if s:
                sentences.append(s)
    short = [s for s in sentences if 5 <= len(s.split()) <= 30][:2000]
    assert len(short) == 2000, len(short)
    long_texts, current = [], []
    for s in sentences:
        current.append(s)
        if sum(len(x.split()) for x in current) >= 190:
            long_texts.append(" ".join(current))
            current = []
        if len(long_texts) == 200:
            break
    os.makedirs(os.path.join(ROOT, "bench"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "sentences.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(short) + "\n")
    with open(os.path.join(ROOT, "bench", "long.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(long_texts) + "\n")
    print(f"{len(short)} sentences, {len(long_texts)} long texts")


if __name__ == "__main__":
    main()
