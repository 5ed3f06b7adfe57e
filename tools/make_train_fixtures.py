"""Make the gradient-parity fixtures for `embedkit-train`.

One training step of sentence-transformers on the tiny random BERT folder
``tests/fixtures/tiny/bert-mean`` (made by ``make_tiny_models.py``: hidden 32, 2 layers, 4 heads,
mean pooling, Normalize), with dropout off (``model.eval()``), on fixed small data, for:

* ``cosine``            CosineSimilarityLoss on (text1, text2, label) pairs
* ``mnrl``              MultipleNegativesRankingLoss (scale 20, cosine) on (anchor, positive, negative)
* ``matryoshka_cosine`` MatryoshkaLoss([32, 16, 8]) around CosineSimilarityLoss
* ``matryoshka_mnrl``   MatryoshkaLoss([32, 16]) around MultipleNegativesRankingLoss (anchor, positive only)

For each case it writes ``tests/fixtures/train/<case>.safetensors`` holding the gradient of every
parameter that gets one (named as in the model's safetensors file), and ``cases.json`` with the data and the
loss. It also writes ``adamw.safetensors``: the parameters after two optimizer steps on the ``cosine`` case the
way ``SentenceTransformer.fit`` sets the optimizer up (torch AdamW, weight decay on all but bias/LayerNorm,
gradient clipping to norm 1, linear warmup then decay) with a large learning rate so the step is visible.

Run from the repository root:

    tools/.venv/bin/python tools/make_train_fixtures.py
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import json
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import losses

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "tests" / "fixtures" / "tiny" / "bert-mean"
OUT_DIR = ROOT / "tests" / "fixtures" / "train"

PAIRS = [
    ("A man is eating food.", "A man is eating a piece of bread.", 0.8),
    ("The quick brown fox jumps over the lazy dog.", "Machine learning is fun.", 0.1),
    ("Where is the nearest train station?", "How do I set up a Kubernetes cluster?", 0.3),
    ("Hello world", "Sentence embeddings map a piece of text to a fixed size vector of numbers.", 0.5),
]
TRIPLETS = [
    ("A man is eating food.", "A man is eating a piece of bread.", "The quick brown fox jumps over the lazy dog."),
    ("Where is the nearest train station?", "Visit https://example.com for details.", "Machine learning is fun."),
    ("Le café est très bon.", "Der Kaffee ist sehr gut.", "Hello world"),
]

ADAMW = dict(lr=1e-3, weight_decay=0.01, warmup_steps=1, total_steps=4, max_grad_norm=1.0)


def load() -> SentenceTransformer:
    torch.manual_seed(0)
    model = SentenceTransformer(str(MODEL_DIR), device="cpu")
    model.eval()  # dropout off
    return model


def features(model: SentenceTransformer, columns: list[list[str]]) -> list[dict]:
    return [model.tokenize(col) for col in columns]


def case_loss(model: SentenceTransformer, case: str):
    if case in ("cosine", "matryoshka_cosine"):
        cols = [[p[0] for p in PAIRS], [p[1] for p in PAIRS]]
        labels = torch.tensor([p[2] for p in PAIRS], dtype=torch.float32)
        loss = losses.CosineSimilarityLoss(model)
        data = {"text1": cols[0], "text2": cols[1], "label": labels.tolist()}
        if case == "matryoshka_cosine":
            loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=[32, 16, 8])
            data["matryoshka_dims"] = [32, 16, 8]
    else:
        if case == "mnrl":
            cols = [[t[0] for t in TRIPLETS], [t[1] for t in TRIPLETS], [t[2] for t in TRIPLETS]]
            data = {"anchor": cols[0], "positive": cols[1], "negative": cols[2]}
        else:
            cols = [[t[0] for t in TRIPLETS], [t[1] for t in TRIPLETS]]
            data = {"anchor": cols[0], "positive": cols[1]}
        labels = torch.zeros(len(cols[0]))
        loss = losses.MultipleNegativesRankingLoss(model, scale=20.0)
        if case == "matryoshka_mnrl":
            loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=[32, 16])
            data["matryoshka_dims"] = [32, 16]
    return loss, features(model, cols), labels, data


def main() -> None:
    torch.set_num_threads(1)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    cases = {}
    for case in ["cosine", "mnrl", "matryoshka_cosine", "matryoshka_mnrl"]:
        model = load()
        loss_fn, feats, labels, data = case_loss(model, case)
        model.zero_grad()
        loss = loss_fn(feats, labels)
        loss.backward()
        grads = {
            name: p.grad.detach().contiguous().clone()
            for name, p in model[0].auto_model.named_parameters()
            if p.grad is not None
        }
        save_file(grads, str(OUT_DIR / f"{case}.safetensors"))
        data["loss"] = float(loss.item())
        data["grad_names"] = sorted(grads)
        cases[case] = data
        print(case, data["loss"], len(grads), "gradients")

    # Two AdamW steps on the cosine case, set up as SentenceTransformer.fit sets them up.
    model = load()
    loss_fn, feats, labels, _ = case_loss(model, "cosine")
    named = list(model[0].auto_model.named_parameters())
    no_decay = ["bias", "LayerNorm.bias", "LayerNorm.weight"]
    groups = [
        {"params": [p for n, p in named if not any(nd in n for nd in no_decay)], "weight_decay": ADAMW["weight_decay"]},
        {"params": [p for n, p in named if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=ADAMW["lr"])
    sched = transformers.get_linear_schedule_with_warmup(opt, ADAMW["warmup_steps"], ADAMW["total_steps"])
    for _ in range(2):
        opt.zero_grad()
        loss = loss_fn(feats, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), ADAMW["max_grad_norm"])
        opt.step()
        sched.step()
    params = {n: p.detach().contiguous().clone() for n, p in named if p.grad is not None}
    save_file(params, str(OUT_DIR / "adamw.safetensors"))
    cases["adamw"] = dict(ADAMW, steps=2, case="cosine")

    (OUT_DIR / "cases.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
