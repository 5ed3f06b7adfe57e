"""Make the analogy fixture: a tiny questions file and vocabulary, all-MiniLM-L6-v2 vectors of the vocabulary,
and what gensim's KeyedVectors make of them.

Writes ``tests/fixtures/analogy/``:

* ``questions.txt``  the first 12 questions of four sections of gensim's questions-words.txt, plus a question
                     with an out-of-vocabulary word, a line that is not four words, and a mixed-case question
* ``vocab.txt``      every word of those questions as written (one a line, in first-appearance order, so "Boy" and
                     "boy" are both there) except "pear", and a few distractors, among them "KING" after "king"
                     (case-insensitive evaluation maps KING to the first occurrence)
* ``vectors.npy``    float32 (words, 384): ``SentenceTransformer.encode(vocab)`` (normalized)
* ``expected.json``  gensim 4.4 on those vectors: ``most_similar`` for a few queries (words and scores),
                     ``evaluate_word_analogies`` per section (correct/incorrect counts) with the default
                     restrict_vocab and with ``restrict_vocab=40``, and the OOV counts

gensim's questions-words.txt is read from GENSIM_TEST_DATA (default /work/main/.tmp/gensim/gensim/test/test_data).
Run from the repository root with the model fetched and ``pip install gensim`` (4.4) in the venv:

    tools/.venv/bin/python tools/make_analogy_fixture.py
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from gensim.models import KeyedVectors  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "analogy"
GENSIM = Path(os.environ.get("GENSIM_TEST_DATA", "/work/main/.tmp/gensim/gensim/test/test_data"))
MODEL = Path(
    os.environ.get("EMBEDKIT_MODEL_DIR", Path.home() / ".cache" / "embedkit" / "models" / "all-MiniLM-L6-v2")
)
SECTIONS = ["capital-common-countries", "family", "gram3-comparative", "gram7-past-tense"]
PER_SECTION = 12
EXTRA = [
    ": extra",
    "apple apples pear pears",  # "pear" is left out of the vocabulary: an OOV question
    "this line is not four words long",
    "Boy King Girl Queen",
]
DISTRACTORS = ["banana", "computer", "river", "KING", "music", "yesterday"]
QUERIES = [
    (["king", "girl"], ["boy"]),
    (["Athens", "Iraq"], ["Greece"]),
    (["bigger"], []),
    (["good", "bad"], ["better"]),
]


def main() -> None:
    torch.set_num_threads(1)
    lines = (GENSIM / "questions-words.txt").read_text(encoding="utf-8").splitlines()
    picked, section = [], None
    counts: dict[str, int] = {}
    for line in lines:
        if line.startswith(": "):
            section = line[2:].strip()
            if section in SECTIONS:
                picked.append(line)
            continue
        if section in SECTIONS and counts.get(section, 0) < PER_SECTION:
            counts[section] = counts.get(section, 0) + 1
            picked.append(line)
    picked += EXTRA
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "questions.txt").write_text("\n".join(picked) + "\n", encoding="utf-8")

    vocab: list[str] = []
    for line in picked:
        if not line.startswith(": ") and len(line.split()) == 4:
            vocab += [w for w in line.split() if w != "pear"]
    vocab = list(dict.fromkeys(vocab + DISTRACTORS))
    (OUT / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")

    model = SentenceTransformer(str(MODEL), device="cpu")
    vectors = model.encode(vocab, batch_size=32, convert_to_numpy=True).astype(np.float32)
    np.save(OUT / "vectors.npy", vectors)

    kv = KeyedVectors(vector_size=vectors.shape[1])
    kv.add_vectors(vocab, vectors)
    logging.basicConfig(level=logging.WARNING)
    expected = {"words": len(vocab), "most_similar": [], "evaluate": {}}
    for pos, neg in QUERIES:
        sims = kv.most_similar(positive=pos, negative=neg, topn=5)
        expected["most_similar"].append(
            {"positive": pos, "negative": neg, "result": [[w, float(s)] for w, s in sims]}
        )
    for name, restrict in (("default", 300000), ("restrict_40", 40)):
        score, sections = kv.evaluate_word_analogies(str(OUT / "questions.txt"), restrict_vocab=restrict)
        n_questions = sum(1 for l in picked if not l.startswith(": ") and len(l.split()) == 4)
        done = sum(len(s["correct"]) + len(s["incorrect"]) for s in sections[:-1])
        expected["evaluate"][name] = {
            "restrict_vocab": restrict,
            "accuracy": score,
            "oov": n_questions - done,
            "sections": [
                {"section": s["section"], "correct": len(s["correct"]), "incorrect": len(s["incorrect"])}
                for s in sections
            ],
        }
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")
    print(len(vocab), "words;", {k: (v["accuracy"], v["oov"]) for k, v in expected["evaluate"].items()})


if __name__ == "__main__":
    main()
