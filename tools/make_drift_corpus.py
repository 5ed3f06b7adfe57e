"""Makes the drift calibration corpus, tests/fixtures/drift/debian-sections/: Debian package descriptions labelled
with their archive Section (a real topic label), and their all-MiniLM-L6-v2 vectors.

    # 1. the two Debian index files, through apt itself (no other download):
    mkdir -p /tmp/aptlists/partial
    apt-get update -o Dir::State::Lists=/tmp/aptlists -o Acquire::Languages=en
    /usr/lib/apt/apt-helper cat-file /tmp/aptlists/*_debian_dists_bookworm_main_binary-amd64_Packages.lz4 > /tmp/Packages
    /usr/lib/apt/apt-helper cat-file /tmp/aptlists/*_debian_dists_bookworm_main_i18n_Translation-en.lz4 > /tmp/Translation-en
    # 2. the texts (standard library only):
    tools/.venv/bin/python tools/make_drift_corpus.py texts /tmp/Packages /tmp/Translation-en
    # 3. the vectors, made by embedkit itself (the product's own engine, f32, normalized):
    target/release/embedkit embed --model all-MiniLM-L6-v2 --input tests/fixtures/drift/debian-sections/texts.txt \
        --format npy --output /tmp/drift-vectors.npy
    tools/.venv/bin/python tools/make_drift_corpus.py vectors /tmp/drift-vectors.npy

The files must be Debian 12 "bookworm" 12.15 main/amd64 (the sha256 its Release file gives; checked). Step 3 is
the only step that needs numpy: it stores the vectors as float16 (half the bytes; the statistics do not need more
than 3 significant digits, and the Rust tests read float16 .npy).

Selection: SECTIONS below (topical sections; libs, libdevel, misc, metapackages are not topics), one binary
package per source package (siblings share most of their description) and per distinct text, at most PER_SECTION
a section, drawn with a fixed seed. A text is the synopsis, then the long description (paragraph marks dropped),
cut at a word boundary below MAX_CHARS (all-MiniLM-L6-v2 reads 256 word pieces).

Outputs: texts.txt (one text a line, for `embedkit embed --input`), sections.txt (the Section of each line),
packages.txt (the package name of each line), vectors.f16.npy and provenance.json.
"""
import hashlib
import json
import os
import random
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "drift", "debian-sections")
SHA256 = {
    "Packages": "515e692f2c4121c6fcec444ef100cc18f79a991910615f3a88c8b7becfc94d2f",
    "Translation-en": "62f59c3cdca9786e4f7adf9002f9f5729a684adcb4667e58e448dec9b5a46c7f",
}
SECTIONS = sorted(
    "admin database devel doc editors fonts games gnome gnu-r golang graphics haskell java javascript kde lisp "
    "mail math net ocaml perl php python ruby rust science sound text utils video web x11".split()
)
PER_SECTION = 160
MAX_CHARS = 1000
MIN_CHARS = 60
SEED = 16


def stanzas(text):
    """Yields the fields of each deb822 stanza as {field: value}; continuation lines keep their newline."""
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


def description_text(description):
    """Synopsis + long description on one line, ' .' paragraph marks dropped, cut at a word below MAX_CHARS."""
    lines = description.split("\n")
    words = lines[0].split()
    for line in lines[1:]:
        line = line[1:] if line.startswith(" ") else line
        if line.strip() == ".":
            continue
        words.extend(line.split())
    text = ""
    for w in words:
        if len(text) + 1 + len(w) > MAX_CHARS:
            break
        text = f"{text} {w}" if text else w
    return text


def read_checked(path, name):
    data = open(path, "rb").read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[name]:
        sys.exit(f"{path}: sha256 {digest} is not bookworm 12.15's {name} ({SHA256[name]})")
    return data.decode("utf-8")


def make_texts(packages_path, translation_path):
    packages = read_checked(packages_path, "Packages")
    translations = read_checked(translation_path, "Translation-en")
    descs = {}
    for f in stanzas(translations):
        if "Description-en" in f:
            descs[(f["Package"], f["Description-md5"])] = f["Description-en"]
    by_section = defaultdict(dict)  # section -> source -> (package, text); first package of a source wins
    seen_texts = set()
    for f in stanzas(packages):
        section = f.get("Section", "")
        if section not in SECTIONS:
            continue
        name = f["Package"]
        d = descs.get((name, f.get("Description-md5", "")))
        if d is None:
            continue
        text = description_text(d)
        src = f.get("Source", name).split(" ")[0]
        if len(text) < MIN_CHARS or text in seen_texts or src in by_section[section]:
            continue
        seen_texts.add(text)
        by_section[section][src] = (name, text)
    rng = random.Random(SEED)
    rows = []
    for section in SECTIONS:
        items = sorted(by_section[section].values())
        rng.shuffle(items)
        rows.extend((section, name, text) for name, text in items[:PER_SECTION])
    rng.shuffle(rows)  # no order by section: a test that takes a prefix must not get one topic
    os.makedirs(OUT, exist_ok=True)
    for fname, col in (("sections.txt", 0), ("packages.txt", 1), ("texts.txt", 2)):
        with open(os.path.join(OUT, fname), "w", encoding="utf-8") as fh:
            fh.writelines(r[col] + "\n" for r in rows)
    counts = defaultdict(int)
    for r in rows:
        counts[r[0]] += 1
    prov = {
        "source": "Debian 12 bookworm 12.15 main/amd64 Packages + i18n/Translation-en (via apt-get update)",
        "sha256": SHA256,
        "sections": dict(sorted(counts.items())),
        "rows": len(rows),
        "per_section": PER_SECTION,
        "max_chars": MAX_CHARS,
        "seed": SEED,
    }
    with open(os.path.join(OUT, "provenance.json"), "w") as fh:
        json.dump(prov, fh, indent=1)
        fh.write("\n")
    print(f"{len(rows)} texts in {len(counts)} sections -> {OUT}")


def store_vectors(npy_path):
    import numpy as np

    v = np.load(npy_path).astype(np.float32)
    n_texts = sum(1 for _ in open(os.path.join(OUT, "texts.txt"), encoding="utf-8"))
    if v.shape[0] != n_texts:
        sys.exit(f"{npy_path}: {v.shape[0]} vectors for {n_texts} texts")
    norms = np.linalg.norm(v, axis=1)
    np.save(os.path.join(OUT, "vectors.f16.npy"), v.astype(np.float16))
    prov_path = os.path.join(OUT, "provenance.json")
    prov = json.load(open(prov_path))
    prov["vectors"] = {
        "model": "all-MiniLM-L6-v2",
        "made_with": "embedkit embed (f32, the model's Normalize module), stored as float16",
        "shape": list(v.shape),
        "norm_min": float(norms.min()),
        "norm_max": float(norms.max()),
    }
    with open(prov_path, "w") as fh:
        json.dump(prov, fh, indent=1)
        fh.write("\n")
    print(f"vectors {v.shape} -> vectors.f16.npy")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "texts":
        make_texts(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "vectors":
        store_vectors(sys.argv[2])
    else:
        sys.exit(__doc__)
