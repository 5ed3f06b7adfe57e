"""Make tiny random-weight sentence-transformers models and their expected outputs.

Writes ``tests/fixtures/tiny/<name>/`` (one full sentence-transformers folder per
model, see ``FOLDERS`` below) and ``tests/fixtures/tiny/expected.json``: for a
fixed list of texts (``TINY_TEXTS``), the token ids and embeddings that
sentence-transformers computes with each folder
(``SentenceTransformer(folder, device="cpu").encode(texts, batch_size=4)``).

The models exercise code paths the real golden models do not: every pooling
mode, Dense layers (Tanh with bias, Identity without bias), prompts with and
without ``include_prompt``, a vocab.txt-only tokenizer, sharded safetensors, a
short max_seq_length, MPNet relative attention and XLM-RoBERTa position ids.
Architecture: hidden 32, 2 layers, 4 heads, intermediate 37, 128 positions.
Tokenizer vocabs (1000 entries each) are built here, deterministically, from the
golden texts plus a few paragraphs below, using the ``tokenizers`` normalizers and
pre-tokenizers, and wrapped in the transformers tokenizer classes.

All weights come from a seeded generator (every parameter, LayerNorm and biases
included, so nothing is a trivial 0/1), the vocabs are built without any
hash-order dependence and torch runs on one thread, so rerunning gives
byte-identical files. Every saved folder is reloaded with SentenceTransformer and compared with the values
written, and each tokenizer.json is checked against ``tokenizers`` loaded from
the file alone.

Run from the repository root:

    tools/.venv/bin/python tools/make_tiny_models.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import json
import math
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
from make_golden import LONG_TEXT, TEXTS as GOLDEN_TEXTS, f32_list  # noqa: E402

HIDDEN = 32
LAYERS = 2
HEADS = 4
INTERMEDIATE = 37
MAX_POS = 128
MAX_SEQ = 64
VOCAB = 1000
BATCH = 4

TINY_TEXTS: list[str] = [
    "",
    "Hello world",
    "Café naïve résumé — señor",
    "我喜欢在周末去公园散步。東京は日本の首都です。",
    "ThIs Is MiXeD cAsE tExT, WITH CAPS and lower case.",
    "   ",
    "I love pizza 🍕🔥👍 and pasta!",
    "def f(x):\n\treturn {'a': x, \"b\": [1, 2, 3]}",
    "Привет, как дела? Москва — столица России.",
    "hello [MASK] world <mask> end",
    "Visit https://example.com/a?b=c or write to someone@example.org",
    "How do I set up a Kubernetes cluster?",
    " ".join(LONG_TEXT.split()[:150]),  # far past 64 tokens
]
# Characters the tokenizers never saw (kept out of their training corpus): unknown tokens.
UNSEEN_TEXT = "Zebra ☃ Ωμέγα ∑ quokka ⅞"
TINY_TEXTS.append(UNSEEN_TEXT)

EXTRA_CORPUS = [
    "Sentence embeddings map a piece of text to a fixed size vector of numbers. "
    "Texts with similar meaning should end up close to each other in that space, "
    "which makes semantic search, clustering and deduplication possible.",
    "The tokenizer first normalizes the text, then splits it into words and finally "
    "into word pieces that exist in its vocabulary. Unknown pieces become a special token.",
    "A transformer encoder reads the token ids, adds position embeddings and runs "
    "several layers of self attention followed by a small feed forward network.",
    "Pooling turns the per token vectors into one vector: the mean of all tokens, the "
    "first token, the last token, the maximum over tokens or a position weighted mean.",
    "Kubernetes clusters, Docker containers and cloud servers: a short setup guide for "
    "beginners who want to deploy their first web application this weekend.",
    "Le café est très bon. Der Kaffee ist sehr gut. El café está muy bueno. "
    "Il caffè è molto buono. O café é muito bom.",
    "Привет мир. Как дела? Всё хорошо, спасибо. Москва, Санкт-Петербург, Казань.",
    "我喜欢喝茶。今天天气很好。北京是中国的首都。東京は日本の首都です。こんにちは。",
    "안녕하세요. 감사합니다. 좋은 하루 되세요.",
    "Numbers like 1, 2, 3, 10, 100, 2024 and 3.14 appear in many documents, as do "
    "symbols such as #, $, %, &, *, @, (parentheses), [brackets] and {braces}.",
    "def main():\n    print('hello world')\n\nfn main() { println!(\"hello\"); }",
    "Visit https://example.com or write an email to someone@example.org for details.",
    "The quick brown fox jumps over the lazy dog. A man is eating food. "
    "Where is the nearest train station? Machine learning is fun.",
]


# ---------------------------------------------------------------------------
# tokenizers


def corpus() -> list[str]:
    return list(GOLDEN_TEXTS) + EXTRA_CORPUS + [t for t in TINY_TEXTS if t != UNSEEN_TEXT]


def _pretokenized_counts(normalizer, pre_tokenizer) -> Counter:
    """Word counts over the corpus after the given normalizer and pre-tokenizer."""
    counts: Counter = Counter()
    for text in corpus():
        if normalizer is not None:
            text = normalizer.normalize_str(text)
        for word, _ in pre_tokenizer.pre_tokenize_str(text):
            counts[word] += 1
    return counts


def _bpe(words: dict[tuple[str, ...], int], vocab: list[str], size: int, join) -> list[str]:
    """Greedy BPE merges until vocab has size entries; ties broken by the pair itself.

    words maps a word, already split into its initial symbols, to its weight; join(a, b)
    names the merged symbol. Returns vocab extended with the merged symbols, in order.
    """
    vocab = list(vocab)
    seen = set(vocab)
    words = {tuple(w): n for w, n in words.items()}
    while len(vocab) < size:
        pairs: Counter = Counter()
        for w, n in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = min(pairs, key=lambda ab: (-pairs[ab], ab))
        merged = join(*best)
        new_words = {}
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
    return vocab


def _damped(counts: Counter) -> dict[str, int]:
    """Cap word weights so the long repetitive text does not dominate the vocab."""
    return {w: min(n, 4) for w, n in counts.items()}


def train_wordpiece(special_tokens: list[str]) -> dict[str, int]:
    """A lowercase BERT-style WordPiece vocab of VOCAB entries; specials get ids 0..n-1.

    The ``tokenizers`` WordPieceTrainer breaks ties in hash order, so two runs can give
    different vocabs. This does the same thing deterministically: the characters seen
    (word-initial and ``##`` forms, most frequent first, at most 400), then BPE merges
    (``a`` + ``##b`` -> ``ab``) with ties broken alphabetically.
    """
    from tokenizers import normalizers, pre_tokenizers

    counts = _pretokenized_counts(
        normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                   strip_accents=None, lowercase=True),
        pre_tokenizers.BertPreTokenizer())
    weights = _damped(counts)
    chars: Counter = Counter()
    split = {}
    for word, n in weights.items():
        symbols = tuple(ch if i == 0 else "##" + ch for i, ch in enumerate(word))
        split[symbols] = split.get(symbols, 0) + n
        chars.update({s: n for s in symbols})
    alphabet = sorted(chars, key=lambda c: (-chars[c], c))[:400]
    allowed = set(alphabet)
    split = {w: n for w, n in split.items() if all(s in allowed for s in w)}
    vocab = _bpe(split, list(special_tokens) + alphabet, VOCAB,
                 lambda a, b: a + (b[2:] if b.startswith("##") else b))
    assert len(vocab) == len(set(vocab)) == VOCAB, len(vocab)
    return {tok: i for i, tok in enumerate(vocab)}


def train_unigram() -> list[tuple[str, float]]:
    """A SentencePiece-style Unigram vocab with XLM-R's special tokens at 0..4.

    Deterministic, like train_wordpiece: the characters seen (at most 400), then BPE
    merges over the Metaspace-split words; each piece scores log(count / total) where
    count is how often it occurs as a substring of the (weighted) words; specials 0.0.
    """
    from tokenizers import pre_tokenizers

    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    # The same pre-tokenizer XLMRobertaTokenizer builds for itself (and no normalizer).
    counts = _pretokenized_counts(None, pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always"),
    ]))
    weights = _damped(counts)
    chars: Counter = Counter()
    for word, n in weights.items():
        chars.update({ch: n * word.count(ch) for ch in set(word)})
    alphabet = sorted(chars, key=lambda c: (-chars[c], c))[:400]
    allowed = set(alphabet)
    split = {tuple(w): n for w, n in weights.items() if all(ch in allowed for ch in w)}
    pieces = _bpe(split, special + alphabet, VOCAB, lambda a, b: a + b)[len(special):]
    freq = {p: sum(n * _count_overlapping(w, p) for w, n in weights.items()) for p in pieces}
    total = sum(freq.values())
    vocab = [(p, 0.0) for p in special]
    vocab += [(p, round(math.log(max(freq[p], 1) / total), 6)) for p in pieces]
    assert len(vocab) == len({p for p, _ in vocab}) == VOCAB, len(vocab)
    return vocab


def _count_overlapping(word: str, piece: str) -> int:
    return sum(1 for i in range(len(word) - len(piece) + 1) if word.startswith(piece, i))


def make_tokenizers(work: Path) -> dict[str, Path]:
    """Build the three HF tokenizers and save each to its own folder under work."""
    from transformers import BertTokenizerFast, MPNetTokenizerFast, XLMRobertaTokenizerFast

    out = {}
    bert_vocab = train_wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    bert_tok = BertTokenizerFast(vocab=bert_vocab, do_lower_case=True, model_max_length=MAX_SEQ)
    out["bert"] = work / "tok-bert"
    bert_tok.save_pretrained(out["bert"])
    # transformers 5 no longer writes vocab.txt itself: write it (one token a line, by id).
    (out["bert"] / "vocab.txt").write_text("".join(t + "\n" for t in bert_vocab), encoding="utf-8")

    # MPNet keeps its own special-token layout: <s>=0 <pad>=1 </s>=2, so pad_token_id 1
    # and position ids start at 2, as in the real all-mpnet-base-v2.
    mpnet_vocab = train_wordpiece(["<s>", "<pad>", "</s>", "[UNK]", "<mask>"])
    mpnet_tok = MPNetTokenizerFast(vocab=mpnet_vocab, do_lower_case=True, model_max_length=MAX_SEQ)
    out["mpnet"] = work / "tok-mpnet"
    mpnet_tok.save_pretrained(out["mpnet"])
    (out["mpnet"] / "vocab.txt").write_text("".join(t + "\n" for t in mpnet_vocab), encoding="utf-8")

    xlmr_vocab = train_unigram()
    xlmr_tok = XLMRobertaTokenizerFast(vocab=xlmr_vocab, model_max_length=MAX_SEQ)
    out["xlmr"] = work / "tok-xlmr"
    xlmr_tok.save_pretrained(out["xlmr"])
    return out


# ---------------------------------------------------------------------------
# transformers


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter with seeded values (LayerNorm weights near 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if "LayerNorm.weight" in name or "layer_norm.weight" in name:
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def make_backbone(kind: str, vocab_size: int, work: Path, tok_dir: Path, seed: int) -> Path:
    """Save a random-weight transformer plus its tokenizer into one folder."""
    from transformers import (BertConfig, BertModel, MPNetConfig, MPNetModel,
                              XLMRobertaConfig, XLMRobertaModel)

    common = dict(vocab_size=vocab_size, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, intermediate_size=INTERMEDIATE,
                  max_position_embeddings=MAX_POS, hidden_act="gelu",
                  hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                  initializer_range=0.2)
    if kind == "bert":
        config = BertConfig(**common, type_vocab_size=2, pad_token_id=0, layer_norm_eps=1e-12)
        model = BertModel(config)
    elif kind == "mpnet":
        config = MPNetConfig(**common, relative_attention_num_buckets=32, pad_token_id=1,
                             bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
        model = MPNetModel(config)
    elif kind == "xlmr":
        config = XLMRobertaConfig(**common, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                                  eos_token_id=2, layer_norm_eps=1e-5)
        model = XLMRobertaModel(config)
    else:
        raise ValueError(kind)
    randomize(model, seed)
    model.eval()
    folder = work / f"backbone-{kind}"
    model.save_pretrained(folder, safe_serialization=True)
    for f in tok_dir.iterdir():
        shutil.copy(f, folder / f.name)
    return folder


# ---------------------------------------------------------------------------
# sentence-transformers folders

# folder name -> backbone, pooling mode and options
FOLDERS: dict[str, dict] = {
    "bert-mean": dict(backbone="bert", pooling="mean", normalize=True),
    "bert-cls": dict(backbone="bert", pooling="cls", legacy_pooling_config=True),
    "bert-max": dict(backbone="bert", pooling="max"),
    "bert-lasttoken": dict(backbone="bert", pooling="lasttoken", legacy_pooling_config=True),
    "bert-mean-sqrt": dict(backbone="bert", pooling="mean_sqrt_len_tokens"),
    "bert-weightedmean": dict(backbone="bert", pooling="weightedmean"),
    "bert-dense": dict(backbone="bert", pooling="mean", normalize=True,
                       dense=dict(out=16, bias=True, activation="tanh", seed=101)),
    "bert-dense-identity": dict(backbone="bert", pooling="mean",
                                dense=dict(out=24, bias=False, activation="identity", seed=102)),
    "bert-prompts": dict(backbone="bert", pooling="mean", normalize=True, prompts=True),
    "bert-prompts-exclude": dict(backbone="bert", pooling="mean", normalize=True, prompts=True,
                                 include_prompt=False),
    "bert-uncased-vocabtxt": dict(backbone="bert", pooling="mean", normalize=True,
                                  drop_tokenizer_json=True),
    "bert-sharded": dict(backbone="bert", pooling="mean", normalize=True, sharded=True),
    "bert-maxlen": dict(backbone="bert", pooling="mean", normalize=True, max_seq_length=16),
    "mpnet-mean": dict(backbone="mpnet", pooling="mean", normalize=True),
    "xlmr-mean": dict(backbone="xlmr", pooling="mean", normalize=True, token_embeddings=True),
    "xlmr-cls": dict(backbone="xlmr", pooling="cls", legacy_pooling_config=True),
}

PROMPTS = {"query": "query: ", "passage": "passage: "}

LEGACY_POOLING_KEYS = {
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
}


def write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def special_tokens_map(tok) -> dict:
    """The classic special_tokens_map.json content (dict form where lstrip/rstrip is set)."""
    out = {}
    for key, value in tok.special_tokens_map.items():
        if not key.endswith("_token"):
            continue
        added = tok.added_tokens_decoder.get(tok.convert_tokens_to_ids(str(value)))
        if added is not None and (added.lstrip or added.rstrip):
            out[key] = {"content": added.content, "lstrip": added.lstrip, "normalized": added.normalized,
                        "rstrip": added.rstrip, "single_word": added.single_word}
        else:
            out[key] = str(value)
    return dict(sorted(out.items()))


def build_folder(name: str, spec: dict, backbones: dict[str, Path]) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    folder = OUT_DIR / name
    if folder.exists():
        shutil.rmtree(folder)
    max_len = spec.get("max_seq_length", MAX_SEQ)
    transformer = Transformer(str(backbones[spec["backbone"]]), max_seq_length=max_len)
    modules = [transformer,
               Pooling(HIDDEN, pooling_mode=spec["pooling"],
                       include_prompt=spec.get("include_prompt", True))]
    if "dense" in spec:
        d = spec["dense"]
        gen = torch.Generator().manual_seed(d["seed"])
        weight = 0.3 * torch.randn(d["out"], HIDDEN, generator=gen)
        bias = 0.3 * torch.randn(d["out"], generator=gen) if d["bias"] else None
        act = torch.nn.Tanh() if d["activation"] == "tanh" else torch.nn.Identity()
        modules.append(Dense(HIDDEN, d["out"], bias=d["bias"], activation_function=act,
                             init_weight=weight, init_bias=bias))
    if spec.get("normalize"):
        modules.append(Normalize())
    kwargs = {}
    if spec.get("prompts"):
        kwargs = dict(prompts=dict(PROMPTS), default_prompt_name="query", similarity_fn_name="dot")
    model = SentenceTransformer(modules=modules, device="cpu", **kwargs)
    model.save(str(folder), safe_serialization=True)
    vocab_txt = backbones[spec["backbone"]] / "vocab.txt"
    if vocab_txt.exists():
        shutil.copy(vocab_txt, folder / "vocab.txt")
    # The generated model card is noise here.
    (folder / "README.md").unlink(missing_ok=True)
    # transformers 5 writes no special_tokens_map.json; write the classic one.
    write_json(folder / "special_tokens_map.json", special_tokens_map(transformer.tokenizer))
    # Drop loader bookkeeping that transformers 5 writes into tokenizer_config.json.
    tc_path = folder / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    for key in ("is_local", "local_files_only"):
        tc.pop(key, None)
    write_json(tc_path, tc)

    # sentence_bert_config.json: ST 6 no longer writes max_seq_length/do_lower_case there
    # (it keeps the length in tokenizer_config.json). Add the classic keys, which every
    # ST version reads and which take precedence over tokenizer_config.json.
    sbc_path = folder / "sentence_bert_config.json"
    sbc = json.loads(sbc_path.read_text())
    sbc = {"max_seq_length": max_len, "do_lower_case": False, **sbc}
    write_json(sbc_path, sbc)
    if max_len != MAX_SEQ:
        # Let tokenizer_config.json disagree on purpose: sentence_bert_config.json must win.
        tc_path = folder / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text())
        tc["model_max_length"] = MAX_SEQ
        write_json(tc_path, tc)

    if spec.get("legacy_pooling_config"):
        # The pre-ST-5 layout that most published models still have.
        pc_path = folder / "1_Pooling" / "config.json"
        pc = json.loads(pc_path.read_text())
        legacy = {"word_embedding_dimension": pc["embedding_dimension"]}
        for mode, key in LEGACY_POOLING_KEYS.items():
            legacy[key] = mode == pc["pooling_mode"]
        legacy["include_prompt"] = pc["include_prompt"]
        write_json(pc_path, legacy)

    if spec.get("drop_tokenizer_json"):
        (folder / "tokenizer.json").unlink()
        tc_path = folder / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text())
        tc["do_lower_case"] = True
        write_json(tc_path, tc)
        assert (folder / "vocab.txt").exists()

    if spec.get("sharded"):
        (folder / "model.safetensors").unlink()
        transformer.auto_model.save_pretrained(str(folder), safe_serialization=True,
                                               max_shard_size="100KB")
        assert (folder / "model.safetensors.index.json").exists()
        assert not (folder / "model.safetensors").exists()
    return folder


# ---------------------------------------------------------------------------
# expected outputs and checks


def compute_expected(name: str, spec: dict, folder: Path) -> dict:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    model.eval()
    expected_len = spec.get("max_seq_length", MAX_SEQ)
    assert model.max_seq_length == expected_len, (name, model.max_seq_length)

    def enc(**kw):
        return model.encode(TINY_TEXTS, batch_size=BATCH, convert_to_numpy=True,
                            show_progress_bar=False, **kw)

    def ids_of(text):
        return model.preprocess([text])["input_ids"][0].tolist()

    out: dict = {}
    emb = enc()
    out["embeddings"] = f32_list(emb)
    if spec.get("prompts"):
        default_prompt = PROMPTS["query"]
        out["token_ids"] = [ids_of(default_prompt + t) for t in TINY_TEXTS]
        out["token_ids_no_prompt"] = [ids_of(t) for t in TINY_TEXTS]
        out["prompt_lengths"] = {k: model[0]._get_prompt_length(v) for k, v in PROMPTS.items()}
        out["prompt_passage"] = f32_list(enc(prompt_name="passage"))
        out["prompt_none"] = f32_list(enc(prompt=""))
    else:
        out["token_ids"] = [ids_of(t) for t in TINY_TEXTS]
    if spec.get("token_embeddings"):
        tes = model.encode(TINY_TEXTS, batch_size=BATCH, output_value="token_embeddings",
                           show_progress_bar=False)
        out["token_embeddings"] = [f32_list(te.float().numpy()) for te in tes]
        for te, ids in zip(out["token_embeddings"], out["token_ids"]):
            assert len(te) == len(ids)
    norms = np.linalg.norm(emb, axis=1)
    out["max_seq_length"] = expected_len
    out["dim"] = int(emb.shape[1])
    out["normalized"] = bool(np.allclose(norms, 1.0, atol=1e-5))
    return out


def check_tokenizer_json(folder: Path, entry: dict, max_len: int, prompt: str = "") -> None:
    """The tokenizers library alone, from tokenizer.json, must give the same ids as ST."""
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.exists():
        return
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_len)
    for text, ids in zip(TINY_TEXTS, entry["token_ids"]):
        got = tok.encode(prompt + text).ids
        assert got == ids, (folder.name, text, got, ids)


def cos_min(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min(num / np.maximum(den, 1e-30)))


def sanity_checks(expected: dict) -> None:
    from sentence_transformers import SentenceTransformer

    models = expected["models"]
    mean_ids = models["bert-mean"]["token_ids"]
    # Same backbone and tokenizer -> same ids; vocab.txt-only must match tokenizer.json.
    for name in ["bert-cls", "bert-max", "bert-lasttoken", "bert-mean-sqrt", "bert-weightedmean",
                 "bert-dense", "bert-dense-identity", "bert-uncased-vocabtxt", "bert-sharded"]:
        assert models[name]["token_ids"] == mean_ids, name
    assert models["bert-prompts"]["token_ids_no_prompt"] == mean_ids
    assert models["bert-maxlen"]["token_ids"] == [ids[:15] + [ids[-1]] if len(ids) > 16 else ids
                                                  for ids in mean_ids]
    assert models["xlmr-cls"]["token_ids"] == models["xlmr-mean"]["token_ids"]
    # Same weights -> same embeddings.
    same = [("bert-uncased-vocabtxt", "bert-mean"), ("bert-sharded", "bert-mean")]
    for a, b in same:
        d = np.abs(np.array(models[a]["embeddings"]) - np.array(models[b]["embeddings"])).max()
        assert d < 1e-6, (a, b, d)
    # No prompt on bert-prompts == bert-mean.
    d = np.abs(np.array(models["bert-prompts"]["prompt_none"])
               - np.array(models["bert-mean"]["embeddings"])).max()
    assert d < 1e-6, d
    # Exclude-prompt differs from include-prompt.
    assert cos_min(models["bert-prompts"]["embeddings"],
                   models["bert-prompts-exclude"]["embeddings"]) < 0.9999
    # Reload every folder once more and compare with what is about to be written.
    for name in FOLDERS:
        model = SentenceTransformer(str(OUT_DIR / name), device="cpu")
        got = model.encode(TINY_TEXTS, batch_size=1, convert_to_numpy=True, show_progress_bar=False)
        c = cos_min(got, models[name]["embeddings"])
        d = float(np.abs(got - np.array(models[name]["embeddings"])).max())
        print(f"  reload {name:24s} dim={got.shape[1]:3d} batch1-vs-batch4 min cos {c:.8f} "
              f"max abs diff {d:.2e}")
        assert c > 0.99999 and d < 1e-4, name


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        toks = make_tokenizers(work)
        backbones = {}
        for seed, kind in enumerate(["bert", "mpnet", "xlmr"], start=1):
            vocab_size = len(json.loads((toks[kind] / "tokenizer.json").read_text())["model"]["vocab"])
            backbones[kind] = make_backbone(kind, vocab_size, work, toks[kind], seed)
            print(f"backbone {kind}: vocab {vocab_size}")

        expected = {"texts": TINY_TEXTS, "batch_size": BATCH, "models": {}}
        for name, spec in FOLDERS.items():
            folder = build_folder(name, spec, backbones)
            entry = compute_expected(name, spec, folder)
            max_len = spec.get("max_seq_length", MAX_SEQ)
            check_tokenizer_json(folder, entry, max_len,
                                 prompt=PROMPTS["query"] if spec.get("prompts") else "")
            expected["models"][name] = entry
            lens = [len(i) for i in entry["token_ids"]]
            print(f"{name}: dim {entry['dim']}, normalized {entry['normalized']}, token counts {lens}")

    sanity_checks(expected)
    out = OUT_DIR / "expected.json"
    with open(out, "w", encoding="utf-8") as f:
        json.dump(expected, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    total = sum(p.stat().st_size for p in OUT_DIR.rglob("*") if p.is_file())
    print(f"wrote {out}; tests/fixtures/tiny holds {total} bytes")


if __name__ == "__main__":
    main()
