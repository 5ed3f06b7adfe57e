"""Training throughput of sentence-transformers on CPU: the anchor for `embedkit train`'s pairs/s.

Runs the steps `SentenceTransformer.fit` runs — tokenize each column, forward in train mode (dropout on),
CosineSimilarityLoss, backward, clip_grad_norm_(1.0), AdamW (weight-decay groups as fit builds them), linear
warmup schedule — over the first --steps batches of a pairs CSV (text1,text2,label), in file order, and prints
pairs/s after --warmup untimed steps. Same data, batch size, max_seq_length and threads as the embedkit run
it is compared with (scripts: docs/PERFORMANCE.md).

    tools/.venv/bin/python tools/bench_train_st.py MODEL_DIR DATA.csv --batch-size 16 --threads 2 --steps 10
"""

from __future__ import annotations

import argparse
import csv
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import losses


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--max-seq-length", type=int)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with open(args.data, newline="", encoding="utf-8") as f:
        rows = [(r["text1"], r["text2"], float(r["label"])) for r in csv.DictReader(f)]
    model = SentenceTransformer(args.model, device="cpu")
    if args.max_seq_length:
        model.max_seq_length = args.max_seq_length
    model.train()
    loss_fn = losses.CosineSimilarityLoss(model)
    named = list(model.named_parameters())
    no_decay = ["bias", "LayerNorm.bias", "LayerNorm.weight"]
    groups = [
        {"params": [p for n, p in named if not any(nd in n for nd in no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in named if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=2e-5)
    total = args.steps + args.warmup
    sched = transformers.get_linear_schedule_with_warmup(opt, max(1, total // 10), total)
    done, start = 0, None
    for step in range(total):
        if step == args.warmup:
            start = time.perf_counter()
        batch = rows[(step * args.batch_size) % len(rows):][: args.batch_size]
        feats = [model.tokenize([r[0] for r in batch]), model.tokenize([r[1] for r in batch])]
        labels = torch.tensor([r[2] for r in batch])
        loss = loss_fn(feats, labels)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step >= args.warmup:
            done += len(batch)
    elapsed = time.perf_counter() - start
    print(f"sentence-transformers: {done} pairs in {elapsed:.2f} s = {done / elapsed:.2f} pairs/s "
          f"(batch {args.batch_size}, threads {args.threads}, max_seq_length {model.max_seq_length})")


if __name__ == "__main__":
    main()
