"""Make tiny random ColBERT models in PyLate's and Stanford ColBERT's folder layouts, with reference token vectors.

Writes ``tests/fixtures/colbert/``:

* ``pylate/``        a PyLate folder: the Transformer at the root (BERT, hidden 32, 2 layers, the tiny BERT
                     vocab of tests/fixtures/tiny plus the added tokens "[Q] " and "[D] "), ``1_Dense`` (a bias-free
                     32 → 16 Identity projection), modules.json without Pooling, and config_sentence_transformers.json
                     with PyLate's keys (query_length 12, document_length 20, attend_to_expansion_tokens false,
                     skiplist_words = string.punctuation, do_query_expansion true)
* ``pylate-attend/`` the same weights with attend_to_expansion_tokens true and query_length 14
* ``stanford/``      a Stanford ColBERT checkpoint: config.json with ``architectures: ["HF_ColBERT"]``,
                     model.safetensors holding ``bert.*`` and the bias-free ``linear.weight`` (16 × 32), the vocab
                     with ``[unused0]``/``[unused1]`` appended, and ``artifact.metadata`` (query_maxlen 10,
                     doc_maxlen 16, mask_punctuation true, attend_to_mask_tokens false)
* ``expected.json``  per model: the queries and documents, each text's token ids and token vectors, and the
                     MaxSim matrix (queries × documents) of ``sentence_transformers.util.maxsim`` on them

PyLate itself is not installed here: ``pip install pylate`` (1.6) would replace sentence-transformers 6.2 with
5.3 and torch 2.15 with 2.11 in the shared venv. So the references are computed twice and must agree:

1. a plain transformers + torch reproduction of PyLate's ``ColBERT.preprocess``/``encode`` (truncate to
   length − 1, pad queries with [MASK] to ``query_length - 1``, insert the prefix id after [CLS] with attention 1
   and token type 0, attention 0 on the expansion unless ``attend_to_expansion_tokens``, BertModel, Dense,
   keep every query token / drop documents' skiplist and padding tokens, L2-normalize) and of Stanford's
   ``QueryTokenizer``/``DocTokenizer``/``ColBERT.query``/``ColBERT.doc`` (". " + text, marker written over
   position 1, [PAD] → [MASK] for queries, ``linear``, punctuation mask, normalize);
2. sentence-transformers 6.2's ``MultiVectorEncoder``, which loads both layouts natively
   (``encode_query``/``encode_document``).

Run from the repository root (deterministic: seeded weights, one thread):

    tools/.venv/bin/python tools/make_tiny_colbert.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import json
import shutil
import string
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, BertTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "colbert"
TINY_BERT = ROOT / "tests" / "fixtures" / "tiny" / "bert-mean"
DIM = 16

QUERIES = [
    "how do I set up kubernetes?",
    "seasons on earth",
    "a very long query that keeps going well past the query length so that it must be truncated here",
    "",
    "Café, crème brûlée & naïve résumé!",
]
DOCS = [
    "Kubernetes clusters are configured with kubectl, YAML manifests and helm charts.",
    "The tilt of Earth's axis (about 23.4 degrees) gives us summer and winter!",
    "ok",
    "... !!! ???",
    "A long document about many things: tokenizers, vectors, late interaction, ColBERT, PyLate, and "
    "Stanford's original code, which is truncated at the document length.",
    "Unknown words like zyxwvut and qqqq become [UNK] pieces.",
]


def seeded_bert(vocab_size: int, seed: int) -> BertModel:
    torch.manual_seed(seed)
    base = json.loads((TINY_BERT / "config.json").read_text())
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=base["hidden_size"],
        num_hidden_layers=base["num_hidden_layers"],
        num_attention_heads=base["num_attention_heads"],
        intermediate_size=base["intermediate_size"],
        max_position_embeddings=base["max_position_embeddings"],
        hidden_act="gelu",
        initializer_range=0.2,
        pad_token_id=0,
    )
    model = BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for p in model.parameters():
            # Every parameter random (LayerNorm and biases too), so nothing is a trivial 0/1.
            p.copy_(torch.randn_like(p) * 0.2)
    return model


def projection(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(DIM, 32, generator=g) * 0.3


# ---------------------------------------------------------------------------------------------------------
# PyLate, reproduced with transformers + torch (pylate/models/colbert.py: preprocess, encode, skiplist_mask).


def pylate_encode(tok, bert, linear_w, cfg: dict, texts: list[str], is_query: bool):
    length = cfg["query_length"] if is_query else cfg["document_length"]
    prefix = cfg["query_prefix"] if is_query else cfg["document_prefix"]
    prefix_id = tok.convert_tokens_to_ids(prefix)
    expansion = is_query and cfg["do_query_expansion"]
    # PyLate: pad_token_id = mask_token_id; the Transformer strips texts and truncates at max_seq_length.
    tok.pad_token = tok.mask_token
    enc = tok(
        [t.strip() for t in texts],
        truncation=True,
        max_length=length - 1,
        padding="max_length" if expansion else True,
        return_tensors="pt",
    )

    def insert(x, value):
        col = torch.full((x.shape[0], 1), value, dtype=x.dtype)
        return torch.cat([x[:, :1], col, x[:, 1:]], dim=1)

    ids = insert(enc["input_ids"], prefix_id)
    att = insert(enc["attention_mask"], 1)
    types = insert(enc["token_type_ids"], 0)
    if is_query and cfg["attend_to_expansion_tokens"]:
        att.fill_(1)
    with torch.no_grad():
        h = bert(input_ids=ids, attention_mask=att, token_type_ids=types).last_hidden_state
        proj = h @ linear_w.T
    skip = [tok.convert_tokens_to_ids(w) for w in cfg["skiplist_words"]]
    out = []
    for i in range(len(texts)):
        if is_query:
            keep = torch.ones_like(ids[i], dtype=torch.bool) if expansion else att[i].bool()
        else:
            keep = att[i].bool() & ~torch.isin(ids[i], torch.tensor(skip))
        out.append((ids[i][keep].tolist(), torch.nn.functional.normalize(proj[i][keep], p=2, dim=1)))
    return out


# ---------------------------------------------------------------------------------------------------------
# Stanford ColBERT, reproduced (colbert/modeling/tokenization/{query,doc}_tokenization.py, colbert/modeling/colbert.py).


def stanford_encode(tok, bert, linear_w, meta: dict, texts: list[str], is_query: bool):
    q_id = tok.convert_tokens_to_ids("[unused0]")
    d_id = tok.convert_tokens_to_ids("[unused1]")
    batch = [". " + t for t in texts]
    if is_query:
        enc = tok(batch, padding="max_length", truncation=True, max_length=meta["query_maxlen"], return_tensors="pt")
        ids, att = enc["input_ids"], enc["attention_mask"]
        ids[:, 1] = q_id
        ids[ids == tok.pad_token_id] = tok.mask_token_id
        if meta["attend_to_mask_tokens"]:
            att[ids == tok.mask_token_id] = 1
    else:
        enc = tok(batch, padding="longest", truncation="longest_first", max_length=meta["doc_maxlen"], return_tensors="pt")
        ids, att = enc["input_ids"], enc["attention_mask"]
        ids[:, 1] = d_id
    with torch.no_grad():
        h = bert(input_ids=ids, attention_mask=att).last_hidden_state
        proj = h @ linear_w.T
    skip = set()
    if not is_query and meta["mask_punctuation"]:
        skip = {tok.encode(s, add_special_tokens=False)[0] for s in string.punctuation}
    out = []
    for i in range(len(texts)):
        keep = torch.tensor([(int(x) not in skip) and (int(x) != tok.pad_token_id) for x in ids[i]])
        out.append((ids[i][keep].tolist(), torch.nn.functional.normalize(proj[i][keep], p=2, dim=1)))
    return out


# ---------------------------------------------------------------------------------------------------------


def write_pylate(dirname: str, tok, bert, linear_w, cfg: dict) -> Path:
    d = OUT / dirname
    shutil.rmtree(d, ignore_errors=True)
    (d / "1_Dense").mkdir(parents=True)
    bert.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    (d / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"},
    ], indent=2))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 179, "do_lower_case": False}))
    (d / "1_Dense" / "config.json").write_text(json.dumps({
        "in_features": 32, "out_features": DIM, "bias": False,
        "activation_function": "torch.nn.modules.linear.Identity",
    }))
    save_file({"linear.weight": linear_w.contiguous()}, d / "1_Dense" / "model.safetensors")
    st = {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "MaxSim", **cfg}
    (d / "config_sentence_transformers.json").write_text(json.dumps(st, indent=2))
    return d


def write_stanford(tok, bert, linear_w, meta: dict) -> Path:
    d = OUT / "stanford"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    bert.config.architectures = ["HF_ColBERT"]
    bert.config.to_json_file(d / "config.json")
    tensors = {f"bert.{k}": v.contiguous() for k, v in bert.state_dict().items()}
    tensors["linear.weight"] = linear_w.contiguous()
    save_file(tensors, d / "model.safetensors")
    tok.save_pretrained(d)
    # transformers 5 no longer writes vocab.txt itself; Stanford's code reads it through the tokenizer.
    (d / "vocab.txt").write_text("".join(t + "\n" for t in tok.convert_ids_to_tokens(list(range(len(tok))))), encoding="utf-8")
    (d / "artifact.metadata").write_text(json.dumps(meta, indent=2))
    return d


def maxsim_matrix(q, d) -> list[list[float]]:
    from sentence_transformers.util import maxsim

    return maxsim([v for _, v in q], [v for _, v in d]).tolist()


def check_against_sentence_transformers(folder: Path, q, d) -> None:
    from sentence_transformers import MultiVectorEncoder

    m = MultiVectorEncoder(str(folder), device="cpu")
    unk = m.tokenizer.unk_token_id
    for ours, theirs in ((q, m.encode_query(QUERIES)),
                         (d, m.encode_document(DOCS))):
        for i, ((ids, a), b) in enumerate(zip(ours, theirs)):
            if ours is d and unk in m.tokenizer(DOCS[i])["input_ids"]:
                # A deliberate difference: sentence-transformers 6.2 drops skiplist words that are not in the
                # vocabulary; PyLate maps them to [UNK] (convert_tokens_to_ids) and so skips [UNK] tokens.
                continue
            b = torch.as_tensor(b)
            assert a.shape == b.shape, (folder.name, a.shape, b.shape)
            cos = torch.nn.functional.cosine_similarity(a, b, dim=1).min().item()
            assert cos > 0.99999, (folder.name, cos)


def record(q, d) -> dict:
    row = lambda t, x: {"text": t, "ids": x[0], "vectors": [[round(float(v), 8) for v in r] for r in x[1]]}  # noqa: E731
    return {
        "queries": [row(t, x) for t, x in zip(QUERIES, q)],
        "documents": [row(t, x) for t, x in zip(DOCS, d)],
        "maxsim": maxsim_matrix(q, d),
    }


def main() -> None:
    torch.set_num_threads(1)
    expected = {}

    # PyLate: the tiny BERT tokenizer with "[Q] " and "[D] " added, as PyLate's constructor adds them.
    tok = BertTokenizerFast.from_pretrained(str(TINY_BERT))
    tok.add_tokens(["[Q] ", "[D] "])
    bert = seeded_bert(len(tok), seed=11)
    w = projection(seed=12)
    cfg = {
        "query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 12, "document_length": 20,
        "attend_to_expansion_tokens": False, "skiplist_words": list(string.punctuation),
        "do_query_expansion": True,
    }
    for name, c in (("pylate", cfg), ("pylate-attend", {**cfg, "attend_to_expansion_tokens": True, "query_length": 14})):
        folder = write_pylate(name, tok, bert, w, c)
        saved = BertTokenizerFast.from_pretrained(str(folder))
        q = pylate_encode(saved, bert, w, c, QUERIES, True)
        d = pylate_encode(saved, bert, w, c, DOCS, False)
        check_against_sentence_transformers(folder, q, d)
        expected[name] = record(q, d)

    # Stanford: the vocab with [unused0]/[unused1] appended (BERT's real vocab has them at 1 and 2).
    vocab = (TINY_BERT / "vocab.txt").read_text(encoding="utf-8").splitlines() + ["[unused0]", "[unused1]"]
    stok = BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True, model_max_length=512)
    assert stok.convert_tokens_to_ids("[unused1]") == len(vocab) - 1
    sbert = seeded_bert(len(vocab), seed=21)
    sw = projection(seed=22)
    meta = {"query_maxlen": 10, "doc_maxlen": 16, "mask_punctuation": True, "attend_to_mask_tokens": False,
            "dim": DIM, "similarity": "cosine", "query_token_id": "[unused0]", "doc_token_id": "[unused1]"}
    folder = write_stanford(stok, sbert, sw, meta)
    saved = BertTokenizerFast.from_pretrained(str(folder))
    q = stanford_encode(saved, sbert, sw, meta, QUERIES, True)
    d = stanford_encode(saved, sbert, sw, meta, DOCS, False)
    check_against_sentence_transformers(folder, q, d)
    expected["stanford"] = record(q, d)

    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")
    for k, v in expected.items():
        print(k, [len(x["ids"]) for x in v["queries"]], [len(x["ids"]) for x in v["documents"]])


if __name__ == "__main__":
    main()
