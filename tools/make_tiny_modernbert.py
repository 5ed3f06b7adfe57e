"""Make tiny random-weight ModernBERT sentence-transformers models and their expected outputs; optionally a
full-size random ModernBERT-base for speed measurements.

Writes ``tests/fixtures/tiny/modernbert-gte/`` and ``tests/fixtures/tiny/modernbert-embed/`` and
``tests/fixtures/tiny/modernbert-expected.json`` (token ids and sentence-transformers vectors for
``TEXTS``, ``SentenceTransformer(folder, device="cpu").encode(texts, batch_size=4)``), in the layout and
conventions of ``tools/make_tiny_models.py``.

The two models are scaled-down copies of real configs (written from the published config.json files):

* ``modernbert-gte``: Alibaba-NLP/gte-modernbert-base — CLS pooling, Normalize, both RoPE bases 160,000;
  its config.json is rewritten in the hub's form (``global_rope_theta``, ``local_rope_theta``,
  ``global_attn_every_n_layers``), as the published file has it.
* ``modernbert-embed``: nomic-ai/modernbert-embed-base — mean pooling, Normalize, prompts
  ``search_query: `` / ``search_document: ``, RoPE bases 160,000 (global) and 10,000 (local); its config.json
  stays in the form transformers 5 writes (``layer_types``, ``rope_parameters``).

Both: hidden 64, 4 heads, intermediate 96 (Wi is 2 × 96: GeGLU), global attention every 3rd layer,
``local_attention`` 16 (a window of ±8 tokens, so it matters on most texts here), no biases, LayerNorms
without bias, max_seq_length 8,192. ModernBERT's tokenizer is a GPT-NeoX byte-level BPE that cannot be
downloaded here, so a small one is trained below, deterministically, with the same pipeline (NFC,
ByteLevel without prefix space, ``[CLS] $A [SEP]`` template) and ModernBERT's special tokens after the
BPE vocab ([UNK] [CLS] [SEP] [PAD] [MASK], [MASK] with lstrip), the embedding table padded to a multiple of
64 as ModernBERT's 50,368 is.

Run from the repository root:

    tools/.venv/bin/python tools/make_tiny_modernbert.py
    tools/.venv/bin/python tools/make_tiny_modernbert.py --full-size .tmp/modernbert-base   # 22 layers, 768
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse
import json
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "fixtures" / "tiny"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_golden import LONG_TEXT, f32_list  # noqa: E402
from make_tiny_models import TINY_TEXTS, corpus, cos_min, write_json  # noqa: E402

BATCH = 4
MAX_SEQ = 8192
BPE_VOCAB = 1200
SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]

TEXTS: list[str] = list(TINY_TEXTS) + [
    "search_query: what is a sliding window?",
    "A short one.",
    "Rotary position embeddings rotate each query and key by an angle that grows with the token's position, "
    "so attention scores depend on how far apart two tokens are rather than where they sit.",
    " ".join(LONG_TEXT.split()[:260]),  # a few hundred tokens: many windows
    "tokens " * 40,
    LONG_TEXT + " " + LONG_TEXT,  # past 8,192 tokens: truncated there; global layers run in query blocks
]

# Scaled-down configs. Field names and values follow the published config.json files.
TINY = dict(hidden_size=64, num_attention_heads=4, intermediate_size=96, local_attention=16,
            global_attn_every_n_layers=3, max_position_embeddings=8192)
MODELS: dict[str, dict] = {
    "modernbert-gte": dict(layers=6, global_rope_theta=160000.0, local_rope_theta=160000.0,
                           pooling="cls", hub_config=True, seed=11),
    "modernbert-embed": dict(layers=5, global_rope_theta=160000.0, local_rope_theta=10000.0,
                             pooling="mean", seed=12,
                             prompts={"query": "search_query: ", "document": "search_document: "}),
}


# ---------------------------------------------------------------------------
# tokenizer


def train_byte_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE (vocab, merges): the 256 byte symbols, then merges with ties broken by the pair."""
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.NFC()
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    counts: Counter = Counter()
    for text in corpus() + TEXTS[len(TINY_TEXTS):]:
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)):
            counts[word] += 1
    words = {tuple(w): min(n, 4) for w, n in counts.items()}
    vocab = sorted(pre_tokenizers.ByteLevel.alphabet())
    seen = set(vocab)
    merges = []
    while len(vocab) < BPE_VOCAB:
        pairs: Counter = Counter()
        for w, n in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = min(pairs, key=lambda ab: (-pairs[ab], ab))
        merged = best[0] + best[1]
        merges.append(best)
        new_words: dict = {}
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + n
        words = new_words
        if merged not in seen:
            seen.add(merged)
            vocab.append(merged)
    return {t: i for i, t in enumerate(vocab)}, merges


def make_tokenizer(work: Path, big_corpus: list[str] | None = None):
    """The tiny byte-level BPE; with big_corpus, one of 16,000 entries trained on it by the tokenizers
    library instead (for the full-size model: about as many tokens per text as a real 50k vocabulary)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    if big_corpus is None:
        vocab, merges = train_byte_bpe()
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    else:
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.train_from_iterator(big_corpus, BpeTrainer(
            vocab_size=16000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, lstrip=(t == "[MASK]"), normalized=False) for t in SPECIALS])
    ids = {t: tok.token_to_id(t) for t in SPECIALS}
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]",
                                   bos_token="[CLS]", eos_token="[SEP]", model_max_length=MAX_SEQ)
    folder = work / "tok"
    fast.save_pretrained(folder)
    return folder, ids, tok.get_vocab_size()


# ---------------------------------------------------------------------------
# model


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Every parameter from a seeded generator; LayerNorm weights near 1."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.15 * noise)


def modernbert_config(vocab_size: int, ids: dict, layers: int, global_theta: float, local_theta: float,
                      **shape):
    from transformers import ModernBertConfig

    return ModernBertConfig(
        vocab_size=vocab_size, num_hidden_layers=layers, hidden_activation="gelu", norm_eps=1e-5,
        norm_bias=False, attention_bias=False, mlp_bias=False, initializer_range=0.02,
        pad_token_id=ids["[PAD]"], bos_token_id=ids["[CLS]"], eos_token_id=ids["[SEP]"],
        cls_token_id=ids["[CLS]"], sep_token_id=ids["[SEP]"], global_rope_theta=global_theta,
        local_rope_theta=local_theta, classifier_pooling="mean", **shape)


def to_hub_config(path: Path, spec: dict) -> None:
    """Rewrite a transformers-5 config.json in the form the published ModernBERT configs have."""
    cfg = json.loads(path.read_text())
    cfg.pop("layer_types", None)
    cfg.pop("rope_parameters", None)
    cfg.update(global_attn_every_n_layers=TINY["global_attn_every_n_layers"],
               global_rope_theta=spec["global_rope_theta"], local_rope_theta=spec["local_rope_theta"],
               position_embedding_type="absolute", layer_norm_eps=1e-5)
    write_json(path, dict(sorted(cfg.items())))


def build_folder(name: str, spec: dict, tok_dir: Path, ids: dict, vocab_size: int, out: Path,
                 shape: dict) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import ModernBertModel

    config = modernbert_config(vocab_size, ids, spec["layers"], spec["global_rope_theta"],
                               spec["local_rope_theta"], **shape)
    model = ModernBertModel(config)
    randomize(model, spec["seed"])
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        backbone = Path(tmp) / "backbone"
        model.save_pretrained(backbone, safe_serialization=True)
        if spec.get("hub_config"):
            to_hub_config(backbone / "config.json", spec)
        for f in tok_dir.iterdir():
            shutil.copy(f, backbone / f.name)
        transformer = Transformer(str(backbone), max_seq_length=MAX_SEQ)
        modules = [transformer, Pooling(shape["hidden_size"], pooling_mode=spec["pooling"]), Normalize()]
        kwargs = {}
        if "prompts" in spec:
            kwargs = dict(prompts=dict(spec["prompts"]), default_prompt_name=None)
        st = SentenceTransformer(modules=modules, device="cpu", **kwargs)
        if out.exists():
            shutil.rmtree(out)
        st.save(str(out), safe_serialization=True)
    (out / "README.md").unlink(missing_ok=True)
    tc_path = out / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    for key in ("is_local", "local_files_only"):
        tc.pop(key, None)
    write_json(tc_path, tc)
    sbc_path = out / "sentence_bert_config.json"
    sbc = json.loads(sbc_path.read_text())
    write_json(sbc_path, {"max_seq_length": MAX_SEQ, "do_lower_case": False, **sbc})
    if spec.get("hub_config"):
        # ST's save may have rewritten config.json in the transformers-5 form again.
        to_hub_config(out / "config.json", spec)
    return out


# ---------------------------------------------------------------------------
# expected outputs


def compute_expected(folder: Path, spec: dict) -> dict:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    model = SentenceTransformer(str(folder), device="cpu")
    model.eval()
    assert model.max_seq_length == MAX_SEQ, model.max_seq_length
    assert type(model[0].auto_model).__name__ == "ModernBertModel"

    def enc(**kw):
        return model.encode(TEXTS, batch_size=BATCH, convert_to_numpy=True, show_progress_bar=False, **kw)

    def ids_of(text):
        return model.preprocess([text])["input_ids"][0].tolist()

    out: dict = {"embeddings": f32_list(enc()), "token_ids": [ids_of(t) for t in TEXTS]}
    for name, prompt in spec.get("prompts", {}).items():
        out[f"prompt_{name}"] = f32_list(enc(prompt_name=name))
        out[f"token_ids_prompt_{name}"] = [ids_of(prompt + t) for t in TEXTS]
    out["dim"] = len(out["embeddings"][0])
    out["max_seq_length"] = MAX_SEQ
    out["sliding_layers"] = [t == "sliding_attention" for t in model[0].auto_model.config.layer_types]
    # The tokenizers library alone, from tokenizer.json, gives the same ids.
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_SEQ)
    for text, ids in zip(TEXTS, out["token_ids"]):
        assert tok.encode(text).ids == ids, text[:80]
    # Batch-independent: one at a time gives the same vectors.
    one = model.encode(TEXTS, batch_size=1, convert_to_numpy=True, show_progress_bar=False)
    c = cos_min(one, out["embeddings"])
    assert c > 0.99999, c
    return out


def window_matters(folder: Path, texts: list[str]) -> float:
    """Smallest cosine between the model as saved and with every layer global: the window must change
    the long texts' vectors, or the fixture would not test it."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    want = model.encode(texts, convert_to_numpy=True)
    cfg = model[0].auto_model.config
    cfg.local_attention = 1 << 20
    for layer in model[0].auto_model.layers:
        if layer.attn.sliding_window is not None:
            layer.attn.sliding_window = cfg.local_attention // 2 + 1
    got = model.encode(texts, convert_to_numpy=True)
    return cos_min(want, got)


def make_tiny() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    expected = {"texts": TEXTS, "batch_size": BATCH, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir, ids, tok_vocab = make_tokenizer(Path(tmp))
        vocab_size = (tok_vocab + 63) // 64 * 64
        print(f"tokenizer: {tok_vocab} tokens, specials {ids}; embedding rows {vocab_size}")
        for name, spec in MODELS.items():
            folder = build_folder(name, spec, tok_dir, ids, vocab_size, OUT_DIR / name, TINY)
            entry = compute_expected(folder, spec)
            expected["models"][name] = entry
            lens = [len(i) for i in entry["token_ids"]]
            print(f"{name}: dim {entry['dim']}, sliding {entry['sliding_layers']}, token counts {lens}")
    long_texts = [t for t, ids in zip(TEXTS, expected["models"]["modernbert-gte"]["token_ids"]) if len(ids) > 40]
    for name in MODELS:
        c = window_matters(OUT_DIR / name, long_texts)
        print(f"{name}: min cosine with the window removed, long texts: {c:.6f}")
        assert c < 0.999, (name, c)
    path = OUT_DIR / "modernbert-expected.json"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {path}")


def make_full_size(out: Path) -> None:
    """ModernBERT-base's shape (22 layers, 768 wide, 12 heads, intermediate 1,152, global every 3rd layer,
    window 128, vocab 50,368) with random weights, as gte-modernbert-base (CLS, Normalize), with a 16,000-entry
    byte-level BPE trained on the bench corpus (ModernBERT's own cannot be downloaded here)."""
    torch.manual_seed(0)
    bench = (ROOT / "bench" / "sentences.txt").read_text(encoding="utf-8").splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir, ids, _ = make_tokenizer(Path(tmp), big_corpus=bench + corpus())
        shape = dict(hidden_size=768, num_attention_heads=12, intermediate_size=1152, local_attention=128,
                     global_attn_every_n_layers=3, max_position_embeddings=8192)
        spec = dict(MODELS["modernbert-gte"], layers=22, seed=21)
        build_folder("modernbert-base", spec, tok_dir, ids, 50368, out, shape)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full-size", type=Path, help="write a full-size random ModernBERT-base here instead")
    args = ap.parse_args()
    if args.full_size:
        make_full_size(args.full_size)
    else:
        make_tiny()


if __name__ == "__main__":
    main()
