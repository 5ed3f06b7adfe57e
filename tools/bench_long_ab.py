"""Long texts, alternated: ONNX Runtime f32 and one or more embedkit binaries take turns on the same texts of
exactly N tokens, round after round, so a busy or drifting machine moves every runtime alike. The fourth and
fifth passes of issue 19 in docs/PERFORMANCE.md were measured this way.

    tools/.venv/bin/python tools/bench_long_ab.py --model all-MiniLM-L6-v2 --tokens 256 --rounds 3 \
        --embedkit new=target/release/embedkit [--embedkit old=/tmp/embedkit-old] [--work .tmp/bench]

Each round: ONNX Runtime (`bench_anchors.bench_ort`, the model exported to ONNX once into --work, best of 3
passes over the 64 texts), then each binary's `embedkit bench` on the same texts repeated --repeat times.
Prints tokens/s per round and, at the end, each binary's best against ONNX Runtime's best.
"""
import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_anchors as ba  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="catalog name or folder")
    ap.add_argument("--embedkit", action="append", required=True, metavar="LABEL=BINARY")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="times embedkit reads the texts per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--work", default=".tmp/bench")
    ap.add_argument("--raise-max-seq-length", action="store_true",
                    help="when --tokens is past the model's max_seq_length, raise it to --tokens for every "
                         "runtime (as `model.max_seq_length = N`), at most to the position embeddings; without it "
                         "every runtime cuts the texts at max_seq_length")
    args = ap.parse_args()

    binaries = []
    for spec in args.embedkit:
        label, sep, binary = spec.partition("=")
        if not sep or not os.access(binary, os.X_OK):
            sys.exit(f"--embedkit {spec!r}: expected LABEL=BINARY with an executable binary")
        binaries.append((label, binary))
    folder = args.model
    if not os.path.isdir(folder):
        fetched = subprocess.run([binaries[0][1], "models", "fetch", folder], check=True, capture_output=True,
                                 text=True).stdout.strip().splitlines()
        folder = fetched[-1]
    name = os.path.basename(os.path.normpath(folder))
    os.makedirs(args.work, exist_ok=True)
    onnx = os.path.join(args.work, f"{name}.onnx")
    if not os.path.exists(onnx):
        ba.export_onnx(folder, onnx)
    path = ba.long_corpus(folder, [args.tokens], args.texts, args.work, name)[args.tokens]
    seen, run_folder = ba.long_run_folder(folder, args.tokens, args.raise_max_seq_length, args.work, name)
    if run_folder != folder:
        folder = run_folder
        print(f"{name}: max_seq_length raised to {seen} ({folder})", file=sys.stderr)
    texts = [line.rstrip("\n") for line in open(path, encoding="utf-8") if line.strip()]
    repeated = os.path.join(args.work, f"{name}-{args.tokens}tok-x{args.repeat}.txt")
    with open(repeated, "w", encoding="utf-8") as f:
        f.write("\n".join(texts * args.repeat) + "\n")

    best = {"onnxruntime f32": 0.0, **{label: 0.0 for label, _ in binaries}}
    print(f"| round | onnxruntime f32 | {' | '.join(label for label, _ in binaries)} |")
    print(f"|---:|---:|{'---:|' * len(binaries)}")
    for r in range(1, args.rounds + 1):
        ort = ba.bench_ort(folder, onnx, texts, args.threads, args.batch_size, 3, seen)
        row = {"onnxruntime f32": ort["sentences_per_s"] * seen}
        for label, binary in binaries:
            report = ba.bench_embedkit(binary, folder, repeated, args.threads, args.batch_size, 3, [])
            row[label] = report["tokens_per_s"]
        for key, value in row.items():
            best[key] = max(best[key], value)
        cells = [f"{row[label]:,.0f} ({row[label] / row['onnxruntime f32']:.2f}×)" for label, _ in binaries]
        print(f"| {r} | {row['onnxruntime f32']:,.0f} | {' | '.join(cells)} |", flush=True)
    for label, _ in binaries:
        print(f"{label}: best {best[label]:,.0f} tokens/s = {best[label] / best['onnxruntime f32']:.2f}× "
              f"ONNX Runtime's best ({best['onnxruntime f32']:,.0f}), {seen}-token texts, "
              f"{args.threads} threads, batch {args.batch_size}")


if __name__ == "__main__":
    main()
