"""Make the golden reference vectors for the two real models.

Writes ``tests/fixtures/golden/all-MiniLM-L6-v2.json`` and
``tests/fixtures/golden/all-mpnet-base-v2.json``: for one fixed list of edge-case
texts (``TEXTS`` below), what sentence-transformers computes with each model:

* ``embeddings``        model.encode(texts, batch_size=1), default options (the
                         model's own Normalize module applies; float32)
* ``token_ids``         input_ids of each text tokenized alone (special tokens,
                         truncated at max_seq_length)
* ``token_embeddings``  output_value="token_embeddings" for 3 texts (short, CJK,
                         long), each [n_tokens][dim]
* ``truncate_dim``      encode(texts, truncate_dim=128), exactly as ST returns it,
                         plus ``normalized_after_truncate`` (do rows have unit norm?)
* ``unnormalized``      Transformer + Pooling only (the modules before Normalize)

Floats are written as the shortest decimal that round-trips the float32 value.
The script is deterministic (single thread, no randomness).

Needs the models fetched first (see tools/fetch_models_for_tools.py). Run from the
repository root:

    tools/.venv/bin/python tools/fetch_models_for_tools.py
    tools/.venv/bin/python tools/make_golden.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / ".tmp" / "models"
OUT_DIR = ROOT / "tests" / "fixtures" / "golden"

MODEL_NAMES = ["all-MiniLM-L6-v2", "all-mpnet-base-v2"]
TRUNCATE_DIM = 128


def _long_text() -> str:
    """A deterministic English text of well over 3000 words (far past 384 tokens)."""
    subjects = ["The engineer", "A curious student", "Our team", "The old librarian",
                "Every morning the baker", "The research group", "My neighbour",
                "The city council"]
    verbs = ["carefully reviewed", "quickly summarised", "patiently explained",
             "completely rewrote", "happily shared", "briefly discussed",
             "thoroughly tested", "slowly translated"]
    objects = ["the quarterly report on renewable energy",
               "a long list of unanswered questions",
               "the design of the new embedding service",
               "several chapters of an unfinished novel",
               "the results of the latest benchmark run",
               "an article about mountain ecosystems",
               "the instructions for the coffee machine",
               "a proposal to improve public transport"]
    tails = ["before lunch.", "while it was raining outside.", "for the third time this week.",
             "without any help.", "and then took a short walk.",
             "so that everyone could follow along.", "in front of a small audience.",
             "although nobody had asked for it."]
    sentences = []
    for i in range(260):
        s = (f"{subjects[i % 8]} {verbs[(i * 3) % 8]} {objects[(i * 5 + 1) % 8]} "
             f"{tails[(i * 7 + 2) % 8]}")
        if i % 10 == 9:
            s += f" Paragraph {i // 10 + 1} ends here."
        sentences.append(s)
    return " ".join(sentences)


LONG_TEXT = _long_text()

TEXTS: list[str] = [
    # 0-2: empty and whitespace only
    "",
    "   ",
    "\t\n",
    # 3-4: accents, precomposed and decomposed (NFD: e + U+0301)
    "Café naïve résumé — señor",
    "Cafe\u0301 nai\u0308ve re\u0301sume\u0301",
    # 5-10: other scripts
    "我喜欢在周末去公园散步，然后喝一杯茶。",
    "東京は日本の首都です。ひらがなとカタカナも使います。",
    "안녕하세요, 만나서 반갑습니다. 오늘 날씨가 좋네요.",
    "Привет, как дела? Москва — столица России.",
    "مرحبا بالعالم، كيف حالك اليوم؟",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    # 11: emoji
    "I love pizza 🍕🔥👍",
    # 12-13: code
    'def greet(name: str) -> str:\n    """Say hi."""\n    return f"Hello, {name}!"  # done\n',
    'fn main() {\n    let s = String::from("say \\"hi\\"");\n    println!("{}", s);\n}',
    # 14: URL and email
    "Visit https://example.com/path/to?query=1&lang=en#section or mail john.doe+tag@example.org",
    # 15: tabs and newlines inside a sentence
    "First line\twith a tab\nsecond line\r\nthird line\t\tend",
    # 16: far past the max length
    LONG_TEXT,
    # 17-18: case
    "THIS SENTENCE IS WRITTEN ENTIRELY IN CAPITAL LETTERS!",
    "ThIs Is MiXeD cAsE tExT with CamelCaseWords and snake_case_names",
    # 19: numbers and punctuation
    "Order #12345: 3.14159 × 2 = 6.28318; total $1,234.56 (−15%) on 2024-01-31 at 23:59:59!",
    # 20: single character
    "a",
    # 21: a single 500-character word
    ("pneumonoultramicroscopicsilicovolcanoconiosis" * 12)[:500],
    # 22: repeated punctuation
    "!!!???...",
    # 23: HTML
    '<div class="note"><p>Hello <b>world</b> &amp; friends</p><br/></div>',
    # 24: markdown table
    "| Name | Age | City |\n|------|-----|------|\n| Alice | 30 | Paris |\n| Bob | 25 | Berlin |",
    # 25-26: ordinary English, related queries
    "How do I set up a Kubernetes cluster?",
    "k8s setup guide",
    # 27-28: near-duplicate pair
    "The quick brown fox jumps over the lazy dog.",
    "The quick brown fox jumped over the lazy dog!",
    # 29-31: ordinary sentences
    "A man is eating food.",
    "Machine learning models turn text into dense vectors.",
    "Where is the nearest train station?",
    # 32: mixed scripts in one text
    "Hello 世界, مرحبا, мир and नमस्ते 🌍",
    # 33: German sharp s and umlauts
    "Straße, Mädchen, Größe — über alles.",
    # 34: zero-width space, no-break space, control character
    "zero\u200bwidth\u00a0space and a bell\u0007 here",
    # 35: special-token strings typed in the text
    "hello [MASK] world <mask> [CLS] </s>",
    # 36: leading and trailing whitespace
    "   padded on both sides   ",
    # 37: quotes and brackets
    "Is it (really) [that] {simple}? 'Single' and \"double\" quotes… yes; no: maybe.",
    # 38: repeated word
    " ".join(["buffalo"] * 40),
    # 39: Hindi
    "नमस्ते दुनिया, आप कैसे हैं?",
]

# Texts whose per-token embeddings are recorded: a short one, a CJK one, the long one.
TOKEN_EMBEDDING_INDICES = [25, 5, 16]


def f32_list(arr):
    """Nested list of Python floats, each the shortest decimal that round-trips float32."""
    import numpy as np

    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 1:
        return [float(str(v)) for v in arr]
    return [f32_list(a) for a in arr]


def make_one(name: str) -> dict:
    import numpy as np
    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    folder = MODELS_DIR / name
    if not (folder / "model.safetensors").is_file():
        sys.exit(f"{folder} missing: run tools/fetch_models_for_tools.py first")
    model = SentenceTransformer(str(folder), device="cpu")
    model.eval()
    max_len = model.max_seq_length
    print(f"{name}: {model}")
    print(f"{name}: max_seq_length={max_len}")

    emb = model.encode(TEXTS, batch_size=1, convert_to_numpy=True, show_progress_bar=False)
    emb64 = model.encode(TEXTS, batch_size=64, convert_to_numpy=True, show_progress_bar=False)
    assert emb.dtype == np.float32 and emb.shape[0] == len(TEXTS)
    diff = float(np.abs(emb - emb64).max())
    cos = (emb * emb64).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(emb64, axis=1))
    print(f"{name}: batch 1 vs 64: max abs diff {diff:.3g}, min cosine {cos.min():.8f}")
    assert diff < 1e-4 and cos.min() > 0.99999, "batched and single encodings disagree"

    token_ids = []
    untruncated = []
    for t in TEXTS:
        ids = model.preprocess([t])["input_ids"][0].tolist()
        assert len(ids) <= max_len
        token_ids.append(ids)
        untruncated.append(len(model.tokenizer(t, truncation=False)["input_ids"]))
    long_idx = TEXTS.index(LONG_TEXT)
    print(f"{name}: long text: {len(LONG_TEXT.split())} words, {untruncated[long_idx]} tokens "
          f"untruncated, {len(token_ids[long_idx])} after truncation")
    assert untruncated[long_idx] > max_len and len(token_ids[long_idx]) == max_len

    tok_embs = model.encode([TEXTS[i] for i in TOKEN_EMBEDDING_INDICES], batch_size=1,
                            output_value="token_embeddings", show_progress_bar=False)
    tok_values = []
    for i, te in zip(TOKEN_EMBEDDING_INDICES, tok_embs):
        te = te.float().cpu().numpy()
        assert te.shape[0] == len(token_ids[i]), (te.shape, len(token_ids[i]))
        tok_values.append(f32_list(te))

    trunc = model.encode(TEXTS, batch_size=1, truncate_dim=TRUNCATE_DIM, convert_to_numpy=True,
                         show_progress_bar=False)
    assert trunc.shape == (len(TEXTS), TRUNCATE_DIM)
    assert np.array_equal(trunc, emb[:, :TRUNCATE_DIM]), "truncate_dim is not a plain prefix"
    trunc_norms = np.linalg.norm(trunc, axis=1)
    normalized_after_truncate = bool(np.allclose(trunc_norms, 1.0, atol=1e-4))
    print(f"{name}: truncate_dim={TRUNCATE_DIM} norms in [{trunc_norms.min():.4f}, "
          f"{trunc_norms.max():.4f}] -> normalized_after_truncate={normalized_after_truncate}")

    # Everything before the Normalize module: Transformer + Pooling.
    modules = list(model)
    assert type(modules[-1]).__name__ == "Normalize", modules
    unnorm_model = SentenceTransformer(modules=modules[:-1], device="cpu")
    unnorm = unnorm_model.encode(TEXTS, batch_size=1, convert_to_numpy=True, show_progress_bar=False)
    renorm = unnorm / np.linalg.norm(unnorm, axis=1, keepdims=True)
    assert np.abs(renorm - emb).max() < 1e-5, "unnormalized output does not normalize to embeddings"

    return {
        "model": name,
        "sentence_transformers_version": sentence_transformers.__version__,
        "torch_version": torch.__version__,
        "max_seq_length": max_len,
        "texts": TEXTS,
        "embeddings": f32_list(emb),
        "token_ids": token_ids,
        "untruncated_token_counts": untruncated,
        "token_embeddings": {"indices": TOKEN_EMBEDDING_INDICES, "values": tok_values},
        "truncate_dim": {"dim": TRUNCATE_DIM, "normalized_after_truncate": normalized_after_truncate,
                         "embeddings": f32_list(trunc)},
        "unnormalized": f32_list(unnorm),
    }


def main() -> None:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    assert len(TEXTS) >= 34 and len(set(TEXTS)) == len(TEXTS)
    for name in MODEL_NAMES:
        data = make_one(name)
        out = OUT_DIR / f"{name}.json"
        with open(out, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")
        print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
