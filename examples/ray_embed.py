"""Embed a Parquet corpus with Ray Data and write the vectors to Parquet.

    pip install ./crates/embedkit-python "ray[data]" pyarrow     # or: pip install "./crates/embedkit-python[ray]"

    # a small corpus to try it on (2,000 news sentences from bench/sentences.txt, columns id and text):
    python examples/ray_embed.py --demo-input corpus.parquet
    python examples/ray_embed.py --input corpus.parquet --output vectors/ --actors 1 --cpus-per-actor 1

    # on a cluster: RAY_ADDRESS=ray://head:10001, input/output on shared storage (s3://…, gs://…, NFS),
    # and a cache every actor shares, so a retried block costs a cache read:
    python examples/ray_embed.py --input s3://bucket/corpus/ --output s3://bucket/vectors/ \
        --actors 32 --cpus-per-actor 4 --cache redis://cache-host:6379/0

Each actor loads the model once and computes with as many threads as its CPUs (--cpus-per-actor). The output
has the input's id and text columns and ``embedding``, a fixed_size_list<float>[dims] column (the model, its
fingerprint and the precision are in the field's metadata); a text's vector does not depend on which actor,
node or batch computed it. Ray Data writes one file per block, in no particular order: join on the id.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import List, Optional

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from embedkit.ray import Embedder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_demo_input(path: str) -> None:
    """A corpus Parquet file: ``id`` (int64) and ``text`` (the lines of bench/sentences.txt)."""
    with open(os.path.join(REPO, "bench", "sentences.txt"), encoding="utf-8") as f:
        texts = [line.strip() for line in f if line.strip()]
    pq.write_table(pa.table({"id": pa.array(range(len(texts)), pa.int64()), "text": texts}), path)
    print(f"wrote {len(texts)} texts to {path}")


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-input", metavar="PATH", help="write a small corpus Parquet file to PATH and stop")
    p.add_argument("--input", help="Parquet file or folder with the texts")
    p.add_argument("--output", help="folder for the output Parquet files")
    p.add_argument("--text-column", default="text")
    p.add_argument("--id-column", default="id")
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--actors", type=int, default=1, help="embedding actors (each loads the model once)")
    p.add_argument("--cpus-per-actor", type=int, default=1, help="CPUs (= compute threads) per actor")
    p.add_argument("--rows-per-call", type=int, default=256, help="rows per map_batches call (and per block)")
    p.add_argument("--cache", help="vector cache shared by all actors: redis://host:6379/0 or a shared folder")
    p.add_argument("--normalize", action="store_true", help="L2-normalize the vectors")
    args = p.parse_args(argv)

    if args.demo_input:
        write_demo_input(args.demo_input)
        return
    if not args.input or not args.output:
        p.error("--input and --output are required (or --demo-input PATH to make a corpus)")

    ray.init()  # RAY_ADDRESS, if set, names the cluster; else a local one
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if args.actors * args.cpus_per_actor >= cpus:
        # Actors hold their CPUs for the whole job; reading and writing Parquet are tasks that need one too.
        p.error(
            f"{args.actors} actor(s) x {args.cpus_per_actor} CPU(s) would take all {cpus} CPUs of this Ray cluster "
            "and leave none for Ray Data's read and write tasks (the job would hang): use fewer"
        )
    start = time.perf_counter()
    ds = ray.data.read_parquet(args.input, columns=[args.id_column, args.text_column])
    # Ray Data packs small Parquet files into one read task, hence one block for one actor: cut the blocks
    # (streaming, no shuffle) so that every actor gets work.
    ds = ds.repartition(target_num_rows_per_block=args.rows_per_call)
    ds = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={
            "model": args.model,
            "text_column": args.text_column,
            "embedding_column": "embedding",
            "cache": args.cache,
            "normalize_embeddings": args.normalize,
        },
        compute=ray.data.ActorPoolStrategy(size=args.actors),  # concurrency=args.actors before Ray 2.51
        num_cpus=args.cpus_per_actor,  # each actor computes with this many threads
        batch_size=args.rows_per_call,
        batch_format="pyarrow",
    )
    ds.write_parquet(args.output)
    seconds = time.perf_counter() - start

    written = pq.read_table(args.output, columns=[args.id_column, "embedding"])
    dims = written.schema.field("embedding").type.list_size
    ids = written.column(args.id_column)
    print(
        f"{written.num_rows} vectors of {dims} dims ({len(set(ids.to_pylist()))} distinct ids) in "
        f"{args.output}, {seconds:.1f} s, {written.num_rows / seconds:.0f} texts/s with {args.actors} actor(s) "
        f"of {args.cpus_per_actor} CPU(s)"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
