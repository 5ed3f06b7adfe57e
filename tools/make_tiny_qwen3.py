"""Make tiny random decoder embedders (Qwen3-Embedding, and Qwen2 / Mistral style) with their expected outputs,
and optionally a full-size random Qwen3-Embedding-0.6B for speed measurements.

Writes, from the repository root:

- ``tests/fixtures/tiny/qwen3-embedding/``: Qwen/Qwen3-Embedding-0.6B's config scaled down (3 layers, hidden 64,
  4 query heads of 32 dimensions (so heads × head_dim ≠ hidden, as in the real model), 2 key/value heads,
  q_norm/k_norm, tied embeddings, rope_theta 1e6, rms_norm_eps 1e-6), bf16 weights as the real one ships,
  wrapped as its sentence-transformers folder: lasttoken pooling, Normalize, the real prompts.
- ``tests/fixtures/tiny/qwen2-embedding/``: gte-Qwen2 style (q/k/v biases, no q/k norm, head_dim = hidden/heads).
- ``tests/fixtures/tiny/mistral-embedding/``: e5-mistral style (no biases, no q/k norm, sliding_window set).
- ``tests/fixtures/tiny/qwen3-expected.json``: the texts; per model the token ids without and with the query
  prompt, and sentence-transformers' vectors for both (``encode(texts, batch_size=4)`` on f32 weights upcast
  from the saved bf16 ones: ``model_kwargs={"dtype": torch.float32}``).

The tokenizer cannot be Qwen's (the hub is unreachable): it is a byte-level BPE trained here with ``tokenizers``
on the fixture texts, with Qwen2's pre-tokenizer regex, NFC normalizer, ``<|endoftext|>`` as pad token and a
TemplateProcessing post-processor that appends ``<|endoftext|>`` to every sequence, as Qwen3-Embedding's
tokenizer.json does; padding on the left as its tokenizer_config.json says.

    tools/.venv/bin/python tools/make_tiny_qwen3.py
    tools/.venv/bin/python tools/make_tiny_qwen3.py --full-size .tmp/bench-models/qwen3-0.6b-random

``--full-size DIR`` also saves a random model with Qwen3-Embedding-0.6B's real config (28 layers, hidden 1024,
vocab 151669) in bf16, with a byte-level BPE (up to 32k entries) trained on bench/*.txt, for
tools/bench_decoder.py. The fixtures are rewritten too (identically: everything is seeded).
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
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "fixtures" / "tiny"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tiny_models import TINY_TEXTS, corpus  # noqa: E402

EOS = "<|endoftext|>"
# Qwen2's pre-tokenizer split (tokenizer.json of every Qwen2/Qwen3 model).
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
QUERY_PROMPT = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"
PROMPTS = {"query": QUERY_PROMPT, "document": ""}

# Qwen/Qwen3-Embedding-0.6B's config.json (the fields that shape the network).
REAL_QWEN3 = dict(
    hidden_size=1024,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    intermediate_size=3072,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    vocab_size=151669,
    tie_word_embeddings=True,
    max_position_embeddings=32768,
    hidden_act="silu",
    attention_bias=False,
    use_sliding_window=False,
)
MAX_SEQ = 96
BATCH = 4

TEXTS: list[str] = TINY_TEXTS + [
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "a",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Line one\nLine two\r\nLine three",
    "12345 67890 3.14159",
]


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A:0 {EOS}:0", pair=f"$A:0 {EOS}:0 $B:1 {EOS}:1", special_tokens=[(EOS, eos_id)]
    )
    return tok


def save_tokenizer(tok, folder: Path, max_len: int) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, padding_side="left", model_max_length=max_len
    )
    fast.save_pretrained(str(folder))
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["padding_side"] = "left"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter from a seeded normal: norms around 1, the rest small, so nothing is a trivial 0/1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)


def make_config(kind: str, vocab_size: int, full: bool = False):
    from transformers import MistralConfig, Qwen2Config, Qwen3Config

    common = dict(vocab_size=vocab_size, max_position_embeddings=32768, rms_norm_eps=1e-6, hidden_act="silu",
                  tie_word_embeddings=True, bos_token_id=None, eos_token_id=0, pad_token_id=0)
    if kind == "qwen3":
        if full:
            fields = {k: v for k, v in REAL_QWEN3.items() if k != "rope_theta"}
            return Qwen3Config(**fields, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                               bos_token_id=None, eos_token_id=0, pad_token_id=0)
        return Qwen3Config(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                           head_dim=32, intermediate_size=192, attention_bias=False, use_sliding_window=False,
                           rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, **common)
    if kind == "qwen2":
        # gte-Qwen2: biases on q/k/v, head_dim = hidden / heads.
        return Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           intermediate_size=160, use_sliding_window=False,
                           rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, **common)
    if kind == "mistral":
        # e5-mistral: sliding_window 4096, rope_theta 10000, no biases.
        return MistralConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                             head_dim=16, intermediate_size=160, sliding_window=4096,
                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                             **{**common, "tie_word_embeddings": False})
    raise ValueError(kind)


def build_folder(kind: str, tok, folder: Path, seed: int, max_seq: int, full: bool = False) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    from sentence_transformers.base.modules import Transformer
    from transformers import AutoModel

    if folder.exists():
        shutil.rmtree(folder)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        vocab = REAL_QWEN3["vocab_size"] if full else tok.get_vocab_size()
        config = make_config(kind, vocab, full)
        torch.manual_seed(seed)
        model = AutoModel.from_config(config, dtype=torch.float32)
        randomize(model, seed)
        model = model.to(torch.bfloat16)
        model.save_pretrained(str(work), safe_serialization=True)
        save_tokenizer(tok, work, max_seq)
        transformer = Transformer(str(work), max_seq_length=max_seq, model_kwargs={"dtype": torch.float32})
        dim = transformer.get_embedding_dimension()
        pooling = Pooling(dim, pooling_mode="lasttoken")
        st = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu", prompts=PROMPTS)
        st.save(str(folder), safe_serialization=False)
    # sentence-transformers re-saves the weights from the f32 copy it loaded: put the bf16 file back.
    model.save_pretrained(str(folder), safe_serialization=True)
    for f in folder.iterdir():
        if f.name in ("generation_config.json", "README.md", "pytorch_model.bin"):
            f.unlink()


def load_reference(folder: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu", model_kwargs={"dtype": torch.float32})


def f32_rows(a) -> list[list[float]]:
    return [[float(np.float32(x)) for x in row] for row in np.asarray(a, dtype=np.float32)]


def compute_expected(folder: Path) -> dict:
    st = load_reference(folder)
    dtype = next(st[0].auto_model.parameters()).dtype
    assert dtype == torch.float32, dtype
    tok = st.tokenizer

    def ids(text: str) -> list[int]:
        return st.tokenize([text])["input_ids"][0].tolist()

    plain = st.encode(TEXTS, batch_size=BATCH, convert_to_numpy=True)
    query = st.encode(TEXTS, batch_size=BATCH, convert_to_numpy=True, prompt_name="query")
    return {
        "dim": int(plain.shape[1]),
        "eos_id": tok.convert_tokens_to_ids(EOS),
        "token_ids": [ids(t) for t in TEXTS],
        "query_token_ids": [ids(QUERY_PROMPT + t) for t in TEXTS],
        "embeddings": f32_rows(plain),
        "query_embeddings": f32_rows(query),
    }


def check_tokenizer(folder: Path, entry: dict) -> None:
    """tokenizer.json alone (as embedkit reads it) gives sentence-transformers' ids, end token included."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(MAX_SEQ)
    for text, want in zip(TEXTS, entry["token_ids"]):
        got = tok.encode(text).ids
        assert got == want, (text, got, want)
        assert got[-1] == entry["eos_id"], text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full-size", type=Path, help="also save a full-size random Qwen3-Embedding-0.6B here")
    ap.add_argument("--corpus", type=Path, action="append",
                    help="texts to train the full-size model's 32k tokenizer on, one per line (default: "
                         "bench/sentences.txt and bench/long.txt)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tok = train_tokenizer(corpus() + TEXTS, 1000)
    expected = {"texts": TEXTS, "prompts": PROMPTS, "max_seq_length": MAX_SEQ, "models": {}}
    for name, kind, seed in [("qwen3-embedding", "qwen3", 17), ("qwen2-embedding", "qwen2", 18),
                             ("mistral-embedding", "mistral", 19)]:
        folder = OUT_DIR / name
        build_folder(kind, tok, folder, seed, MAX_SEQ)
        entry = compute_expected(folder)
        check_tokenizer(folder, entry)
        expected["models"][name] = entry
        print(f"{name}: dim {entry['dim']}, {len(TEXTS)} texts, "
              f"max tokens {max(len(i) for i in entry['token_ids'])}")
    with open(OUT_DIR / "qwen3-expected.json", "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    if args.full_size:
        paths = args.corpus or [ROOT / "bench" / "sentences.txt", ROOT / "bench" / "long.txt"]
        lines = [l for p in paths for l in p.read_text(encoding="utf-8").splitlines() if l.strip()]
        big_tok = train_tokenizer(lines, 32000)
        build_folder("qwen3", big_tok, args.full_size, 23, 512, full=True)
        print(f"full-size Qwen3-Embedding-0.6B (random) in {args.full_size}")


if __name__ == "__main__":
    main()
