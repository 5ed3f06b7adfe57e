"""Speed and memory of a decoder embedder (Qwen3-Embedding-0.6B with random weights) on embedkit's CPU engine
beside sentence-transformers, in one run, on the same texts, threads and batch size.

    tools/.venv/bin/python tools/make_tiny_qwen3.py --full-size .tmp/bench-models/qwen3-0.6b-random
    cargo build --release -p embedkit
    tools/.venv/bin/python tools/bench_decoder.py --embedkit target/release/embedkit \\
        --model .tmp/bench-models/qwen3-0.6b-random --texts 256

Every runtime runs in its own process (so peak memory is its own): sentence-transformers (PyTorch) with the
dtype transformers picks for the checkpoint (``dtype="auto"``: bf16 for a bf16 checkpoint, what a user gets) and
with ``dtype=float32`` (the reference embedkit's f32 matches), ONNX Runtime f32 on the transformer exported with
``torch.onnx.export`` (last-token pooling and normalize inside the graph), then ``embedkit bench`` with f32 and
with ``--compute int8``. Throughput is the best of two passes over the texts after one warm-up batch (``embedkit
bench`` does the same).
Memory: peak RSS right after loading the model (``embedkit embed`` of one short text; sentence-transformers
after its constructor) and at the end of the run. The machine's load average is printed before and after.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ST_RUN = r"""
import json, resource, sys, time
import torch
from sentence_transformers import SentenceTransformer
folder, corpus, threads, batch, passes, dtype = sys.argv[1:7]
threads, batch, passes = int(threads), int(batch), int(passes)
torch.set_num_threads(threads)
texts = json.load(open(corpus))
kwargs = {} if dtype == "auto" else {"dtype": getattr(torch, dtype)}
t = time.perf_counter()
model = SentenceTransformer(folder, device="cpu", model_kwargs=kwargs)
load_s = time.perf_counter() - t
rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
used = str(next(model[0].auto_model.parameters()).dtype)
model.encode(texts[:batch], batch_size=batch)
best = float("inf")
for _ in range(passes):
    t = time.perf_counter()
    model.encode(texts, batch_size=batch)
    best = min(best, time.perf_counter() - t)
import numpy as np
np.save(corpus + f".{dtype}.npy", model.encode(texts[:16], batch_size=batch))
print(json.dumps({"sentences_per_s": len(texts) / best, "load_s": load_s, "rss_load": rss_load,
                  "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "dtype": used}))
"""

# The export runs in its own process (torch); the ONNX Runtime run in another, without torch, so its peak RSS is
# ONNX Runtime's own.
ORT_EXPORT = r"""
import os, sys
import torch
from transformers import AutoModel, AutoTokenizer
folder, out_path = sys.argv[1:3]
model = AutoModel.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
tok = AutoTokenizer.from_pretrained(folder)
tok.padding_side = "right"
enc = tok(["a sample sentence", "another one, longer than the first"], padding=True, return_tensors="pt")


# The transformer, then sentence-transformers' lasttoken pooling and Normalize. The last token is the last position
# whose attention mask is 1, so the graph is right for left and right padding alike.
class Embed(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, attention_mask):
        hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device).unsqueeze(0)
        last = (attention_mask * positions).argmax(dim=1)
        pooled = hidden[torch.arange(hidden.shape[0]), last]
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


tmp = out_path + ".tmp"
with torch.no_grad():
    torch.onnx.export(Embed(model), (enc["input_ids"], enc["attention_mask"]), tmp,
                      input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                    "sentence_embedding": {0: "batch"}},
                      opset_version=17, dynamo=False)
os.replace(tmp, out_path)
"""

ORT_RUN = r"""
import json, os, resource, sys, time
import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer
folder, onnx_path, corpus, threads, batch, passes, vectors = sys.argv[1:8]
threads, batch, passes = int(threads), int(batch), int(passes)
texts = json.load(open(corpus))
max_len = json.load(open(os.path.join(folder, "tokenizer_config.json"))).get("model_max_length", 512)
t = time.perf_counter()
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
# tokenizer.json's post-processor appends the end token, as sentence-transformers' tokenize does.
tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
tok.no_padding()
tok.enable_truncation(max_len)
load_s = time.perf_counter() - t
rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(batch_texts):
    encs = tok.encode_batch(batch_texts)
    n = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), n), dtype=np.int64)
    mask = np.zeros((len(encs), n), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, :len(e.ids)] = e.ids
        mask[i, :len(e.ids)] = 1
    return sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def encode(items):
    # Longest first, as sentence-transformers' encode orders its batches.
    order = sorted(range(len(items)), key=lambda i: -len(items[i]))
    out = [None] * len(items)
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        for i, v in zip(idx, run([items[i] for i in idx])):
            out[i] = v
    return np.stack(out)


encode(texts[:batch])
best = float("inf")
for _ in range(passes):
    t = time.perf_counter()
    encode(texts)
    best = min(best, time.perf_counter() - t)
np.save(vectors, encode(texts[:16]))
print(json.dumps({"sentences_per_s": len(texts) / best, "load_s": load_s, "rss_load": rss_load,
                  "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "vectors": vectors}))
"""


def peak_rss_of(cmd):
    """Runs cmd under /usr/bin/time -v; returns its peak RSS in bytes."""
    out = subprocess.run(["/usr/bin/time", "-v", *cmd], check=True, capture_output=True, text=True).stderr
    for line in out.splitlines():
        if "Maximum resident set size" in line:
            return int(line.split()[-1]) * 1024
    raise RuntimeError("no peak RSS in /usr/bin/time output")


def bench_st(folder, texts_json, threads, batch, passes, dtype):
    out = subprocess.run([sys.executable, "-c", ST_RUN, folder, texts_json, str(threads), str(batch), str(passes),
                          dtype], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_ort(folder, texts_json, threads, batch, passes, work):
    """ONNX Runtime f32 on the exported graph; {"error": why, "detail": stderr} when the export or the run fails."""
    # A folder per model: past 2 GB the exporter writes each weight to its own file beside the graph.
    export_dir = os.path.join(work, os.path.basename(os.path.normpath(folder)) + "-onnx")
    onnx_path = os.path.join(export_dir, "model.onnx")
    if not os.path.exists(onnx_path):
        os.makedirs(export_dir, exist_ok=True)
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", ORT_EXPORT, folder, onnx_path], capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            return {"error": "the ONNX export (load, then torch.onnx.export) failed: " + last,
                    "detail": done.stderr[-4000:]}
        print(f"exported {onnx_path} in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    vectors = texts_json + ".onnxruntime.npy"
    done = subprocess.run([sys.executable, "-c", ORT_RUN, folder, onnx_path, texts_json, str(threads), str(batch),
                           str(passes), vectors], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": "onnxruntime run failed: " + (done.stderr.strip().splitlines() or ["?"])[-1],
                "detail": done.stderr[-4000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_embedkit(binary, folder, corpus, threads, batch, extra):
    # Load plus one short text: the memory of the loaded model (embedkit bench's peak adds the batches').
    load_rss = peak_rss_of([binary, "embed", "--quiet", "--no-cache", "--model", folder, "--threads", str(threads),
                            *extra, "hello"])
    out = subprocess.run([binary, "bench", "--quiet", "--json", "--no-sweeps", "--model", folder, "--input", corpus,
                          "--threads", str(threads), "--batch-size", str(batch), "--latency-runs", "3", *extra],
                         check=True, capture_output=True, text=True).stdout
    r = json.loads(out)[0]
    first = corpus + ".first16.txt"
    with open(corpus, encoding="utf-8") as src, open(first, "w", encoding="utf-8") as dst:
        dst.writelines(src.readlines()[:16])
    vectors = corpus + "." + ("-".join(extra) or "f32") + ".npy"
    subprocess.run([binary, "embed", "--quiet", "--no-cache", "--model", folder, "--threads", str(threads), *extra,
                    "--input", first, "--format", "npy", "--output", vectors], check=True)
    return {"sentences_per_s": r["sentences_per_s"], "load_s": r.get("load_ms", 0) / 1e3, "rss_load": load_rss,
            "rss_peak": r["peak_rss_bytes"], "mean_tokens": r["mean_tokens"], "vectors": vectors}


def load_average():
    return os.getloadavg()[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--embedkit", required=True)
    ap.add_argument("--model", required=True, help="the model folder")
    ap.add_argument("--corpus", default="bench/sentences.txt")
    ap.add_argument("--texts", type=int, default=256, help="first N texts of the corpus")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--passes", type=int, default=2, help="sentence-transformers' passes")
    ap.add_argument("--work", default=".tmp/bench-decoder")
    ap.add_argument("--with-bf16", action="store_true", help="also embedkit --compute bf16 (AVX512_BF16 CPUs)")
    ap.add_argument("--skip-st-auto", action="store_true", help="leave out sentence-transformers with dtype=auto")
    ap.add_argument("--skip-ort", action="store_true", help="leave out ONNX Runtime")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    texts = [l.rstrip("\n") for l in open(args.corpus, encoding="utf-8") if l.strip()][: args.texts]
    corpus = os.path.join(args.work, "texts.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
    texts_json = os.path.join(args.work, "texts.json")
    json.dump(texts, open(texts_json, "w"))
    load_before = load_average()
    ort_error = None
    started = time.time()
    rows = []
    st_runs = [("float32", "sentence-transformers f32")]
    if not args.skip_st_auto:
        st_runs.append(("auto", "sentence-transformers dtype=auto"))
    for dtype, label in st_runs:
        print(f"{label}…", file=sys.stderr)
        r = bench_st(args.model, texts_json, args.threads, args.batch_size, args.passes, dtype)
        rows.append((f"{label} ({r['dtype'].replace('torch.', '')})", r))
        print(f"{label}: {json.dumps(r)}", file=sys.stderr)
    if not args.skip_ort:
        print("onnxruntime f32…", file=sys.stderr)
        r = bench_ort(args.model, texts_json, args.threads, args.batch_size, args.passes, args.work)
        if "error" in r:
            print(f"onnxruntime f32 left out: {r['error']}\n{r['detail']}", file=sys.stderr)
            ort_error = r["error"]
        else:
            rows.append(("onnxruntime f32 (torch.onnx.export)", r))
            print(f"onnxruntime f32: {json.dumps(r)}", file=sys.stderr)
    variants = [("embedkit f32", []), ("embedkit int8", ["--compute", "int8"])]
    if args.with_bf16:
        variants.append(("embedkit bf16", ["--compute", "bf16"]))
    for label, extra in variants:
        print(f"{label}…", file=sys.stderr)
        rows.append((label, bench_embedkit(args.embedkit, args.model, corpus, args.threads, args.batch_size,
                                           extra)))
        print(f"{label}: {json.dumps(rows[-1][1])}", file=sys.stderr)
    import numpy as np

    reference = np.load(texts_json + ".float32.npy")
    for label, r in rows:
        if "vectors" in r:
            got = np.load(r["vectors"])[: len(reference)]
            cos = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
            r["min_cos"] = float(cos.min())
            r["max_diff"] = float(np.abs(got - reference).max())
    anchor = rows[0][1]["sentences_per_s"]
    tokens = next((r["mean_tokens"] for _, r in rows if "mean_tokens" in r), float("nan"))
    print(f"\n{len(texts)} texts of {args.corpus} (mean {tokens:.1f} tokens), batch {args.batch_size}, "
          f"{args.threads} threads, {time.time() - started:.0f} s; load average {load_before:.2f} before, "
          f"{load_average():.2f} after\n")
    if ort_error:
        print(f"onnxruntime f32 is not in the table: {ort_error}\n")
    ort = next((r["sentences_per_s"] for label, r in rows if label.startswith("onnxruntime")), None)
    print("| runtime | texts/s | × sentence-transformers f32 | × onnxruntime f32 | load s | peak RSS after load (MB) "
          "| peak RSS (MB) | min cosine to sentence-transformers f32 (16 texts) | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in rows:
        cos = f"{r['min_cos']:.6f} | {r['max_diff']:.1e}" if "min_cos" in r else " |"
        vs_ort = f"{r['sentences_per_s'] / ort:.2f}" if ort else ""
        print(f"| {label} | {r['sentences_per_s']:.2f} | {r['sentences_per_s'] / anchor:.2f} | {vs_ort} | "
              f"{r['load_s']:.1f} | {r['rss_load'] / 1e6:.0f} | {r['rss_peak'] / 1e6:.0f} | {cos} |")


if __name__ == "__main__":
    main()
