"""The wheel runs on x86-64 CPUs without AVX-512 or AVX2: every kernel that uses them (embedkit's own, gemm's,
the Hamming/int8 search kernels) must be chosen at run time. Checked by running the installed package under
QEMU's user-mode emulation with older CPU models (numpy 2.4 itself needs x86-64-v2, so Nehalem is the floor).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, need_tool

SCRIPT = r"""
import sys
import numpy as np
import embedkit
m = embedkit.SentenceTransformer(sys.argv[1], threads=1)
v = m.encode(["a first text for an old CPU", "and a second, longer one to make a batch of two"])
# 40 texts of the tiny model's 64 tokens in one batch: over 1,024 tokens, so the linear layers take gemm's
# path instead of the panel kernel; and the int8 engine (VNNI or the portable loop).
long = [" ".join(f"word{i} number{j}" for j in range(40)) for i in range(40)]
g = m.encode(long, batch_size=40)
i8 = embedkit.SentenceTransformer(sys.argv[1], threads=1, compute="int8").encode(long[:4])
v = np.concatenate([v, g, i8])
q = embedkit.quantize_embeddings(v, "ubinary")
idx = embedkit.Index.build(sys.argv[3], embeddings=v, precision="ubinary", rescore_vectors="int8")
hits = idx.search(v[:2], top_k=1)
assert [h[0]["corpus_id"] for h in hits] == [0, 1], hits
np.save(sys.argv[2], v)
"""


@pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 only")
@pytest.mark.parametrize("cpu", ["Nehalem", "Haswell"])  # SSE4.2 only; AVX2 without AVX-512
def test_runs_without_avx512_or_avx2(cpu, tmp_path):
    qemu = need_tool("qemu-x86_64")
    model = str(ROOT / "tests/fixtures/tiny/bert-mean")
    native, emulated = tmp_path / "native.npy", tmp_path / "emulated.npy"
    subprocess.run([sys.executable, "-c", SCRIPT, model, str(native), str(tmp_path / "a.idx")], check=True)
    run = subprocess.run(
        [qemu, "-cpu", cpu, sys.executable, "-c", SCRIPT, model, str(emulated), str(tmp_path / "b.idx")],
        capture_output=True, text=True,
        # numpy's bundled OpenBLAS picks its kernels by the host's CPU, not the emulated one (on a Zen 5 host
        # it chose AVX code, and numpy's import-time check died of SIGILL under Nehalem): name the core.
        env={**os.environ, "PYTHONFAULTHANDLER": "1", "OPENBLAS_CORETYPE": cpu},
    )
    assert run.returncode == 0, f"under {cpu}: exit {run.returncode}\n{run.stderr[-2000:]}"
    a, b = np.load(native), np.load(emulated)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.9999, cos
