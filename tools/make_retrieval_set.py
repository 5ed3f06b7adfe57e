"""Makes the project's real retrieval set, tests/fixtures/eval/debian-desc/, in the BEIR layout.

    tools/.venv/bin/python tools/make_retrieval_set.py      # needs only the Python standard library + network

Source: Debian 12 "bookworm" (point release 12.15) main/amd64 package index and its English descriptions, fetched
from deb.debian.org and pinned by the sha256 the bookworm Release file gives for them (a different file is refused:
should a later point release change them, take the 12.15 files from snapshot.debian.org).

The task: given a package's one-line synopsis (what a user would type: "Real-time strategy game of ancient
warfare"), find the package's long description among a few thousand others.

- corpus.jsonl: one document per distinct long description (the paragraphs after the synopsis line, joined with
  single spaces; " ." paragraph marks dropped). title is always "" so that no package name leaks in. Identical long
  descriptions (common among sibling packages) are merged into one document so that no two documents have the same
  text (their embeddings, and so their scores, would tie exactly).
- Documents are all binary packages of a deterministic random sample of source packages (the Source: field of
  Packages, the package itself when absent), so a document's siblings are always in the corpus.
- queries.jsonl: synopses of sampled packages. Graded qrels:
    2 = the document holding the package's own long description,
    1 = documents holding the long description of a sibling binary package (same source package),
  so a ranking must both find the software and pick the right part of it (library, -dev, -doc, data ...).
- Leakage removed: a query is not used when its synopsis contains the package's or its source's name as a word,
  when the synopsis (normalised: lower case, single spaces, no final period) occurs verbatim inside any corpus
  document, when it has fewer than 4 words, or when more than half of its content words (\w+ runs, lower case,
  a short stop list removed) occur in its own long description: the kept queries need more than word matching
  (on all candidates BM25 reaches nDCG@10 0.78; on the kept ones far less, see tests/fixtures/eval/README.md).
  Identical synopses are used at most once.
- Splits by source package, so no source package has queries in both: qrels/test.tsv (400 queries) and
  qrels/train.tsv (the rest, up to 800) for fine-tuning experiments. At most 2 queries per source package.
"""
import hashlib
import json
import lzma
import os
import random
import re
import sys
import urllib.request
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, ".tmp", "debian")
OUT = os.path.join(ROOT, "tests", "fixtures", "eval", "debian-desc")
MIRROR = "http://deb.debian.org/debian/dists/bookworm/main/"
FILES = {
    # path under MIRROR: sha256 from the bookworm 12.15 Release file
    "binary-amd64/Packages.xz": "9e0b5aabb2465b3d2e7a7fe27f9913846277833f7a2826e7767acccff5b588c5",
    "i18n/Translation-en.xz": "a3d4a0bfd8e9242810b0885eda7c1a6e05dac15b333ddbaab03ba56f2dfa4bf0",
}
SEED = 6
TARGET_DOCS = 4000
N_TEST = 400
N_TRAIN = 800
MAX_QUERIES_PER_SOURCE = 2
MAX_OVERLAP = 0.5
STOPWORDS = set("a an the of for and or to in on with from by is are be as at it its this that into using via".split())
MIN_DOC_CHARS = 80
MAX_DOC_CHARS = 1200  # about 250 word pieces at most: all-MiniLM-L6-v2 truncates at 256


def fetch(rel: str, sha: str) -> bytes:
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, os.path.basename(rel))
    if not os.path.exists(path):
        tmp = path + ".part"
        with urllib.request.urlopen(MIRROR + rel, timeout=120) as r, open(tmp, "wb") as f:
            f.write(r.read())
        os.replace(tmp, path)
    data = open(path, "rb").read()
    got = hashlib.sha256(data).hexdigest()
    if got != sha:
        sys.exit(f"{path}: sha256 {got}, expected {sha} (bookworm 12.15); remove it or fetch it from snapshot.debian.org")
    return lzma.decompress(data)


def stanzas(text: str):
    """Yields the fields of each deb822 stanza as {field: value}; continuation lines are kept with their newline."""
    for block in text.split("\n\n"):
        fields, key = {}, None
        for line in block.split("\n"):
            if not line:
                continue
            if line[0] in " \t" and key is not None:
                fields[key] += "\n" + line
            else:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields


def long_text(description: str) -> str:
    """The long description (the lines after the synopsis) as one line: ' .' paragraph marks dropped."""
    words = []
    for line in description.split("\n")[1:]:
        line = line[1:] if line.startswith(" ") else line
        if line.strip() == ".":
            continue
        words.extend(line.split())
    return " ".join(words)


def norm(s: str) -> str:
    return " ".join(s.lower().split()).rstrip(".")


def main() -> None:
    packages = fetch("binary-amd64/Packages.xz", FILES["binary-amd64/Packages.xz"]).decode("utf-8")
    translations = fetch("i18n/Translation-en.xz", FILES["i18n/Translation-en.xz"]).decode("utf-8")

    # Translation-en is keyed by (package, Description-md5); Packages says which md5 each amd64 package uses.
    descs = {}
    for f in stanzas(translations):
        if "Description-en" in f:
            descs[(f["Package"], f["Description-md5"])] = f["Description-en"]
    source_of, synopsis, text_of = {}, {}, {}
    for f in stanzas(packages):
        name = f["Package"]
        d = descs.get((name, f.get("Description-md5", "")))
        if d is None:
            continue
        src = f.get("Source", name).split(" ")[0]
        syn = d.split("\n")[0].strip()
        body = long_text(d)
        if not (MIN_DOC_CHARS <= len(body) <= MAX_DOC_CHARS):
            continue
        source_of[name], synopsis[name], text_of[name] = src, syn, body

    by_source = defaultdict(list)
    for name in sorted(source_of):
        by_source[source_of[name]].append(name)
    rng = random.Random(SEED)
    sources = sorted(by_source)
    rng.shuffle(sources)

    # Whole source packages until the corpus has TARGET_DOCS distinct texts; texts already taken by an earlier source
    # are merged (the document then holds packages of several sources).
    doc_of_text, doc_packages, chosen = {}, [], []
    for src in sources:
        if len(doc_of_text) >= TARGET_DOCS:
            break
        chosen.append(src)
        for name in by_source[src]:
            t = text_of[name]
            if t not in doc_of_text:
                doc_of_text[t] = len(doc_packages)
                doc_packages.append([])
            doc_packages[doc_of_text[t]].append(name)
    texts = [None] * len(doc_packages)
    for t, i in doc_of_text.items():
        texts[i] = t
    doc_id = [f"d{i}" for i in range(len(texts))]
    doc_of_pkg = {p: i for i, ps in enumerate(doc_packages) for p in ps}
    low_texts = [norm(t) for t in texts]

    def leaks(name: str) -> bool:
        syn = synopsis[name]
        if len(syn.split()) < 4:
            return True
        for n in {name, source_of[name]}:
            if re.search(r"(?<![\w.+-])" + re.escape(n.lower()) + r"(?![\w+-])", syn.lower()):
                return True
        q = norm(syn)
        if any(q in t for t in low_texts):
            return True
        # Keep only queries that need more than word matching: at most half of the synopsis' content words may
        # occur in the package's own long description.
        words = [w for w in re.findall(r"\w+", syn.lower()) if w not in STOPWORDS]
        own = set(re.findall(r"\w+", low_texts[doc_of_pkg[name]]))
        return not words or sum(w in own for w in words) > MAX_OVERLAP * len(words)

    def qrels_of(name: str) -> dict:
        rel = {}
        for sib in by_source[source_of[name]]:
            rel[doc_id[doc_of_pkg[sib]]] = 1
        rel[doc_id[doc_of_pkg[name]]] = 2
        return rel

    # Candidate queries per chosen source, in the shuffled order; split by source.
    seen_syn = set()
    test, train = [], []
    order = list(chosen)
    rng.shuffle(order)
    for src in order:
        # a source's queries all go to one split
        bucket, cap = (test, N_TEST) if len(test) < N_TEST else (train, N_TRAIN)
        if len(bucket) >= cap:
            break
        names = [n for n in by_source[src] if not leaks(n)]
        rng.shuffle(names)
        taken = 0
        for n in names:
            key = norm(synopsis[n])
            if key in seen_syn or taken >= MAX_QUERIES_PER_SOURCE or len(bucket) >= cap:
                continue
            seen_syn.add(key)
            bucket.append(n)
            taken += 1
    assert len(test) == N_TEST, len(test)

    os.makedirs(os.path.join(OUT, "qrels"), exist_ok=True)
    with open(os.path.join(OUT, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"_id": doc_id[i], "title": "", "text": t}, ensure_ascii=False) + "\n")
    qid = {}
    with open(os.path.join(OUT, "queries.jsonl"), "w", encoding="utf-8") as f:
        for split, names in (("test", test), ("train", train)):
            for j, n in enumerate(names):
                qid[n] = f"q{split[:2]}{j}"
                f.write(json.dumps({"_id": qid[n], "text": synopsis[n]}, ensure_ascii=False) + "\n")
    for split, names in (("test", test), ("train", train)):
        with open(os.path.join(OUT, "qrels", f"{split}.tsv"), "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for n in names:
                for d, g in sorted(qrels_of(n).items(), key=lambda x: (-x[1], int(x[0][1:]))):
                    f.write(f"{qid[n]}\t{d}\t{g}\n")
    # Provenance, not needed by the evaluator: which package(s) each document and query came from.
    with open(os.path.join(OUT, "provenance.json"), "w", encoding="utf-8") as f:
        json.dump({
            "source": "Debian bookworm 12.15 main amd64: " + ", ".join(f"{MIRROR}{k} sha256 {v}" for k, v in FILES.items()),
            "documents": {doc_id[i]: ps for i, ps in enumerate(doc_packages)},
            "queries": {qid[n]: n for n in test + train},
        }, f, indent=0, sort_keys=True)
        f.write("\n")

    grades = defaultdict(int)
    for n in test:
        for g in qrels_of(n).values():
            grades[g] += 1
    print(f"{len(texts)} documents from {len(chosen)} source packages; {len(test)} test queries, "
          f"{len(train)} train queries; test qrels by grade: {dict(sorted(grades.items()))}", file=sys.stderr)


if __name__ == "__main__":
    main()
