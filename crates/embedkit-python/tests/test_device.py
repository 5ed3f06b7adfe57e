"""device=: "cuda" without a usable GPU raises a RuntimeError that says what is missing; "auto" (and None)
fall back to the CPU with its exact vectors. On a machine with a usable GPU the no-GPU checks are skipped
(scripts/gpu-check covers the GPU itself)."""

import ctypes.util
import os
from pathlib import Path

import numpy as np
import pytest

import embedkit

TINY = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "tiny" / "bert-mean"


def _gpu_usable() -> bool:
    # A GPU is usable only with the driver's library; without it the answer is certainly no.
    if ctypes.util.find_library("cuda") is None and not os.path.exists("/usr/lib/x86_64-linux-gnu/libcuda.so.1"):
        return False
    try:
        return embedkit.SentenceTransformer(str(TINY), device="auto").device.startswith("cuda")
    except Exception:
        return False


no_gpu = pytest.mark.skipif(_gpu_usable(), reason="a CUDA device is usable here")


@no_gpu
def test_cuda_without_a_gpu_is_a_clear_runtime_error():
    # The message names the device as parsed (ordinal and type filled in), then what is missing.
    for device, named in [("cuda", "cuda:0+f16"), ("cuda:1", "cuda:1+f16"), ("cuda+bf16", "cuda:0+bf16")]:
        with pytest.raises(RuntimeError) as info:
            embedkit.SentenceTransformer(str(TINY), device=device)
        message = str(info.value)
        assert message.startswith(f"device '{named}': "), message
        assert "no NVIDIA driver" in message or "no CUDA device" in message or "cannot be loaded" in message
        assert "\n" not in message


@no_gpu
def test_auto_falls_back_to_the_cpu_vectors():
    texts = ["first text", "a second, longer text"]
    cpu = embedkit.SentenceTransformer(str(TINY), device="cpu")
    for device in ["auto", None, "auto+f32"]:
        model = embedkit.SentenceTransformer(str(TINY), device=device)
        assert model.device == "cpu"
        np.testing.assert_array_equal(model.encode(texts), cpu.encode(texts))
    assert cpu.to("cpu") is cpu
    with pytest.raises(ValueError, match="this model is on cpu"):
        cpu.to("cuda")


def test_device_must_be_spelt_right():
    with pytest.raises(ValueError, match="expected cpu, auto or cuda"):
        embedkit.SentenceTransformer(str(TINY), device="gpu")
    with pytest.raises(TypeError, match="device must be a string"):
        embedkit.SentenceTransformer(str(TINY), device=0)
