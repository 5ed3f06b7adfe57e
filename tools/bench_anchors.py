"""Measures the anchors embedkit's speed is compared against, on the same corpus and machine, and embedkit
itself in the same run, then prints a markdown table of ratios.

    scripts/bench-anchors            # makes the venv, fetches the models, runs this

Anchors: sentence-transformers on PyTorch, and ONNX Runtime on the same transformer exported to ONNX here
(tokenized with the model's fast tokenizer, batches sorted by length and padded per batch like
sentence-transformers, mean pooling and normalization in numpy). Every runtime gets the same thread count.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def percentile(values, q):
    s = sorted(values)
    k = max(1, min(len(s), int(np.ceil(q * len(s)))))
    return s[k - 1]


def bench_st(folder, texts, threads, batch, latency_runs):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(folder, device="cpu")
    model.encode(texts[:batch], batch_size=batch)
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        model.encode(texts, batch_size=batch)
        best = min(best, time.perf_counter() - t)
    lat = []
    for i in range(latency_runs):
        t = time.perf_counter()
        model.encode([texts[i % len(texts)]], batch_size=1)
        lat.append((time.perf_counter() - t) * 1e3)
    return {"sentences_per_s": len(texts) / best, "latency_p50_ms": percentile(lat, 0.5),
            "latency_p99_ms": percentile(lat, 0.99)}


def export_onnx(folder, out_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    if os.path.exists(out_path):
        return
    model = AutoModel.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(["a sample sentence", "another one, longer than the first"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]

    class ByName(torch.nn.Module):
        """Calls the model with keyword arguments: transformers' positional order differs between versions."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors):
            return self.inner(**dict(zip(names, tensors))).last_hidden_state

    tmp = out_path + ".tmp"
    with torch.no_grad():
        torch.onnx.export(ByName(model), tuple(enc[n] for n in names), tmp, input_names=names,
                          output_names=["last_hidden_state"],
                          dynamic_axes={**{n: {0: "batch", 1: "seq"} for n in names},
                                        "last_hidden_state": {0: "batch", 1: "seq"}},
                          opset_version=17, dynamo=False)
    os.replace(tmp, out_path)


def export_ort_int8(folder, onnx_path, out_path):
    """ONNX Runtime's own int8, as a user would make it: the transformer-optimized graph (fused attention,
    LayerNorm, GELU) from `onnxruntime.transformers.optimizer`, then `quantize_dynamic` (int8 weights,
    activations quantized per call)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    if os.path.exists(out_path):
        return
    cfg = json.load(open(os.path.join(folder, "config.json")))
    opt_path = out_path + ".opt.onnx"
    model = optimizer.optimize_model(onnx_path, model_type="bert", num_heads=cfg["num_attention_heads"],
                                     hidden_size=cfg["hidden_size"])
    model.save_model_to_file(opt_path)
    tmp = out_path + ".tmp"
    # The fused ops (com.microsoft BiasGelu, Attention, ...) defeat ONNX's shape inference; their outputs are
    # f32, which the quantizer is told instead of failing.
    quantize_dynamic(opt_path, tmp, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    os.replace(tmp, out_path)


def long_corpus(folder, lengths, count, work, name):
    """For each length L, `count` texts of exactly L tokens (special tokens included) with the model's
    tokenizer: consecutive texts of bench/long.txt joined, cut to L − 2 word pieces and decoded. Every runtime
    reads the same files, so none needs its own truncation. Returns {L: path}."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    here = os.path.dirname(os.path.abspath(__file__))
    lines = [l.strip() for l in open(os.path.join(here, "..", "bench", "long.txt"), encoding="utf-8")
             if l.strip()]
    paths = {}
    for length in lengths:
        out = []
        i = 0
        while len(out) < count:
            text = " ".join(lines[(i + j) % len(lines)] for j in range(3))
            i += 1
            ids = tok.encode(text, add_special_tokens=False).ids[:length - 2]
            cut = tok.decode(ids)
            if len(tok.encode(cut).ids) == length:
                out.append(cut.replace("\n", " "))
        path = os.path.join(work, f"{name}-{length}tok.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(out) + "\n")
        paths[length] = path
    return paths


def position_limit(folder):
    """The longest input the model's position embeddings take: max_position_embeddings, less the padding
    offset of RoBERTa-style models (position ids start at pad_token_id + 1)."""
    cfg = json.load(open(os.path.join(folder, "config.json")))
    limit = cfg["max_position_embeddings"]
    if cfg.get("model_type") in ("roberta", "xlm-roberta", "mpnet", "camembert"):
        limit -= cfg.get("pad_token_id", 1) + 1
    return limit


def model_with_max_seq_length(folder, max_seq_length, work, name):
    """A view of the model folder with sentence_bert_config.json's max_seq_length set to `max_seq_length`
    (what `model.max_seq_length = 512` does in sentence-transformers): every other file a symlink to the
    original, so the weights are the same. For long-text rows past the model's own max_seq_length (256 for
    all-MiniLM-L6-v2, 384 for all-mpnet-base-v2) but within its position embeddings; every runtime loads
    this folder, so all cut at the same length."""
    limit = position_limit(folder)
    if max_seq_length > limit:
        sys.exit(f"{name}: {max_seq_length} tokens is past its {limit} position embeddings")
    view = os.path.abspath(os.path.join(work, f"{name}-max{max_seq_length}"))
    os.makedirs(view, exist_ok=True)
    for entry in os.listdir(folder):
        if entry == "sentence_bert_config.json":
            continue
        link = os.path.join(view, entry)
        if not os.path.lexists(link):
            os.symlink(os.path.abspath(os.path.join(folder, entry)), link)
    cfg = json.load(open(os.path.join(folder, "sentence_bert_config.json")))
    cfg["max_seq_length"] = max_seq_length
    with open(os.path.join(view, "sentence_bert_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return view


def long_run_folder(folder, length, raise_max_seq_length, work, name):
    """(tokens each runtime sees, folder every runtime loads) for texts of `length` tokens: cut at the model's
    max_seq_length (sentence-transformers and embedkit do it themselves; ONNX Runtime is told), so a 512-token
    text is 256 tokens for all-MiniLM-L6-v2, unless `raise_max_seq_length`: then max_seq_length goes up to
    the length, within the position embeddings, through a view of the folder that says so."""
    max_seq_length = json.load(open(os.path.join(folder, "sentence_bert_config.json")))["max_seq_length"]
    seen = min(length, max_seq_length)
    if raise_max_seq_length and seen < length:
        seen = min(length, position_limit(folder))
        return seen, model_with_max_seq_length(folder, seen, work, name)
    return seen, folder


def bench_ort(folder, onnx_path, texts, threads, batch, latency_runs, max_len):
    import onnxruntime as ort
    from tokenizers import Tokenizer

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
    input_names = {i.name for i in sess.get_inputs()}
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_len)

    def run(batch_texts):
        encs = tok.encode_batch([t.strip() for t in batch_texts])
        n = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), n), dtype=np.int64)
        mask = np.zeros((len(encs), n), dtype=np.int64)
        for i, e in enumerate(encs):
            ids[i, :len(e.ids)] = e.ids
            mask[i, :len(e.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in input_names:
            feed["token_type_ids"] = np.zeros_like(ids)
        hidden = sess.run(None, feed)[0]
        m = mask[:, :, None].astype(np.float32)
        pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    def encode_all():
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = [None] * len(texts)
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            for i, v in zip(idx, run([texts[i] for i in idx])):
                out[i] = v
        return out

    run(texts[:batch])
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        encode_all()
        best = min(best, time.perf_counter() - t)
    lat = []
    for i in range(latency_runs):
        t = time.perf_counter()
        run([texts[i % len(texts)]])
        lat.append((time.perf_counter() - t) * 1e3)
    return {"sentences_per_s": len(texts) / best, "latency_p50_ms": percentile(lat, 0.5),
            "latency_p99_ms": percentile(lat, 0.99)}


def bench_embedkit(binary, model, corpus, threads, batch, latency_runs, extra, peak=False):
    """`embedkit bench` in its own process; with `peak`, also the CPU's measured peak and the linear layers'
    share of it (its "machine" and "linear" fields)."""
    out = subprocess.run([binary, "bench", "--quiet", "--json", "--no-sweeps", "--model", model, "--input", corpus,
                          "--threads", str(threads), "--batch-size", str(batch), "--latency-runs",
                          str(latency_runs), *([] if peak else ["--no-peak"]), *extra],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)[0]


PY_ENCODE = r"""
import json, sys, time
import numpy as np
import embedkit
folder, corpus, threads, batch, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
texts = [l.rstrip("\n") for l in open(corpus, encoding="utf-8") if l.strip()]
model = embedkit.SentenceTransformer(folder, threads=threads)
model.encode(texts[:batch], batch_size=batch)
best = float("inf")
for _ in range(2):
    t = time.perf_counter()
    model.encode(texts, batch_size=batch, show_progress_bar=False)
    best = min(best, time.perf_counter() - t)
lat = []
for i in range(runs):
    t = time.perf_counter()
    model.encode([texts[i % len(texts)]], batch_size=1)
    lat.append((time.perf_counter() - t) * 1e3)
lat.sort()
pick = lambda q: lat[max(1, min(len(lat), int(np.ceil(q * len(lat))))) - 1]
print(json.dumps({"sentences_per_s": len(texts) / best, "latency_p50_ms": pick(0.5), "latency_p99_ms": pick(0.99)}))
"""

FIRST_VECTOR = {
    "embedkit": "import embedkit; embedkit.SentenceTransformer({folder!r}).encode(['hello'])",
    "sentence-transformers": "from sentence_transformers import SentenceTransformer; "
    "SentenceTransformer({folder!r}, device='cpu').encode(['hello'])",
}


def bench_python_package(python, folder, corpus, threads, batch, latency_runs):
    """embedkit.SentenceTransformer.encode in its own process, measured as bench_st measures PyTorch."""
    out = subprocess.run([python, "-c", PY_ENCODE, folder, corpus, str(threads), str(batch), str(latency_runs)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def first_vector_seconds(python, which, folder, runs=3):
    """Wall time of a fresh interpreter from start to the first vector (import, load, encode), best of runs."""
    code = FIRST_VECTOR[which].format(folder=folder)
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([python, "-c", code], check=True, capture_output=True)
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--embedkit", required=True)
    ap.add_argument("--model", action="append", required=True, help="name=folder")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--latency-runs", type=int, default=200)
    ap.add_argument("--work", required=True, help="folder for ONNX exports")
    ap.add_argument("--embedkit-variant", action="append", default=[],
                    help="label=extra args for embedkit bench, e.g. 'int8=--compute int8'")
    ap.add_argument("--no-ort-int8", action="store_true",
                    help="skip ONNX Runtime's int8 (optimized graph + quantize_dynamic)")
    ap.add_argument("--long-lengths", default="",
                    help="comma-separated token lengths (e.g. 128,256,512): also measure texts of exactly that "
                         "many tokens with every runtime")
    ap.add_argument("--long-texts", type=int, default=64, help="texts per long length")
    ap.add_argument("--long-raise-max-seq-length", action="store_true",
                    help="long lengths past a model's max_seq_length run with it raised to the length (as "
                         "`model.max_seq_length = 512`), up to the position embeddings; without it every "
                         "runtime cuts them at max_seq_length")
    ap.add_argument("--python-package", metavar="PYTHON",
                    help="a Python with the embedkit wheel (and sentence-transformers) installed: adds "
                         "embedkit.SentenceTransformer.encode and import-to-first-vector times")
    args = ap.parse_args()
    texts = [l.rstrip("\n") for l in open(args.corpus, encoding="utf-8") if l.strip()]
    rows = []
    first = {}
    machines = []
    long_rows = []
    lengths = [int(x) for x in args.long_lengths.split(",") if x.strip()]
    for spec in args.model:
        name, folder = spec.split("=", 1)
        cfg = json.load(open(os.path.join(folder, "sentence_bert_config.json")))
        onnx_path = os.path.join(args.work, name + ".onnx")
        export_onnx(folder, onnx_path)
        print(f"{name}: sentence-transformers…", file=sys.stderr)
        st = bench_st(folder, texts, args.threads, args.batch_size, args.latency_runs)
        print(f"{name}: onnxruntime…", file=sys.stderr)
        ort_r = bench_ort(folder, onnx_path, texts, args.threads, args.batch_size, args.latency_runs,
                          cfg["max_seq_length"])
        ort_q = None
        if not args.no_ort_int8:
            print(f"{name}: onnxruntime int8…", file=sys.stderr)
            q_path = os.path.join(args.work, name + ".opt.int8.onnx")
            export_ort_int8(folder, onnx_path, q_path)
            ort_q = bench_ort(folder, q_path, texts, args.threads, args.batch_size, args.latency_runs,
                              cfg["max_seq_length"])
        print(f"{name}: embedkit…", file=sys.stderr)
        variants = [("f32", [])] + [(v.split("=", 1)[0], v.split("=", 1)[1].split()) for v in args.embedkit_variant]
        rows.append((name, "sentence-transformers (PyTorch)", st, None))
        rows.append((name, "onnxruntime", ort_r, None))
        if ort_q is not None:
            rows.append((name, "onnxruntime int8 (optimized + quantize_dynamic)", ort_q, (st, ort_r)))
        for label, extra in variants:
            # Each run ends with the CPU peak loops (about a second), for the linear layers' share of peak.
            ek = bench_embedkit(args.embedkit, folder, args.corpus, args.threads, args.batch_size,
                                args.latency_runs, extra, peak=True)
            rows.append((name, f"embedkit {label}", ek, (st, ort_r)))
            if ek.get("machine"):
                machines.append(ek["machine"])
            if label == "f32":
                cli = ek
        if lengths:
            for length, path in long_corpus(folder, lengths, args.long_texts, args.work, name).items():
                long_texts = [l.rstrip("\n") for l in open(path, encoding="utf-8") if l.strip()]
                print(f"{name}: {length}-token texts…", file=sys.stderr)
                seen, run_folder = long_run_folder(folder, length, args.long_raise_max_seq_length, args.work,
                                                   name)
                runs = [("sentence-transformers (PyTorch)",
                         bench_st(run_folder, long_texts, args.threads, args.batch_size, 3)),
                        ("onnxruntime", bench_ort(run_folder, onnx_path, long_texts, args.threads,
                                                  args.batch_size, 3, seen))]
                if ort_q is not None:
                    runs.append(("onnxruntime int8", bench_ort(run_folder, q_path, long_texts, args.threads,
                                                               args.batch_size, 3, seen)))
                for label, extra in variants:
                    runs.append((f"embedkit {label}",
                                 bench_embedkit(args.embedkit, run_folder, path, args.threads, args.batch_size,
                                                3, extra)))
                long_rows.append((name, seen, runs))
        if args.python_package:
            print(f"{name}: embedkit Python package…", file=sys.stderr)
            py = bench_python_package(args.python_package, folder, args.corpus, args.threads, args.batch_size,
                                      args.latency_runs)
            py["vs_cli"] = py["sentences_per_s"] / cli["sentences_per_s"]
            rows.append((name, "embedkit Python encode", py, (st, ort_r)))
            first[name] = {w: first_vector_seconds(args.python_package, w, folder) for w in FIRST_VECTOR}
    print(f"\n{len(texts)} texts from {args.corpus}, batch {args.batch_size}, {args.threads} threads\n")
    print("| model | runtime | texts/s | p50 ms | p99 ms | × sentence-transformers | × onnxruntime |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, runtime, r, anchors in rows:
        ratios = ("", "") if anchors is None else (
            f"{r['sentences_per_s'] / anchors[0]['sentences_per_s']:.2f}",
            f"{r['sentences_per_s'] / anchors[1]['sentences_per_s']:.2f}")
        print(f"| {name} | {runtime} | {r['sentences_per_s']:.1f} | {r['latency_p50_ms']:.2f} | "
              f"{r['latency_p99_ms']:.2f} | {ratios[0]} | {ratios[1]} |")
    for name, r in [(n, r) for n, rt, r, _ in rows if r.get("linear")]:
        lin = r["linear"]
        share = "" if lin["share_of_peak"] is None else f"{100 * lin['share_of_peak']:.0f} %"
        print(f"- {name} {lin['compute']}: linear layers {lin['achieved']:.1f} {lin['unit']} end to end, {share} of "
              f"the measured peak")
    for name in dict.fromkeys(n for n, *_ in rows):
        by = {rt: r for n, rt, r, _ in rows if n == name}
        q = by.get("onnxruntime int8 (optimized + quantize_dynamic)")
        for rt, r in by.items():
            if q and rt.startswith("embedkit ") and "Python" not in rt:
                print(f"- {name} {rt} / onnxruntime int8: {r['sentences_per_s'] / q['sentences_per_s']:.2f}×")
    if machines:
        m = machines[0]
        print(f"- CPU: {m['cpu']}, SIMD path {m['simd']}, peak on {m['threads']} threads: {json.dumps(m['peak'])}")
    if long_rows:
        print("\n| model | tokens per text | runtime | texts/s | tokens/s | × sentence-transformers | × onnxruntime |")
        print("|---|---:|---|---:|---:|---:|---:|")
        for name, length, runs in long_rows:
            st_r, ort_r = runs[0][1], runs[1][1]
            for label, r in runs:
                sps = r["sentences_per_s"]
                ratios = ("", "") if label in ("sentence-transformers (PyTorch)", "onnxruntime") else (
                    f"{sps / st_r['sentences_per_s']:.2f}", f"{sps / ort_r['sentences_per_s']:.2f}")
                print(f"| {name} | {length} | {label} | {sps:.1f} | {sps * length:.0f} | {ratios[0]} | {ratios[1]} |")
    py_rows = [(n, r) for n, rt, r, _ in rows if rt == "embedkit Python encode"]
    if py_rows:
        print("\n| model | Python encode / CLI (embedkit bench) throughput |")
        print("|---|---:|")
        for name, r in py_rows:
            print(f"| {name} | {r['vs_cli']:.3f} |")
    if first:
        print("\n| model | import → first vector, sentence-transformers (s) | embedkit (s) | ratio |")
        print("|---|---:|---:|---:|")
        for name, f in first.items():
            st_s, ek_s = f["sentence-transformers"], f["embedkit"]
            print(f"| {name} | {st_s:.2f} | {ek_s:.2f} | {st_s / ek_s:.1f}× faster |")


if __name__ == "__main__":
    main()
