"""API models and caches through the same class: `openai:NAME` against a real `embedkit serve` over
loopback (an OpenAI-compatible server, as vLLM or TEI would be), and `cache="redis://…"` against a real
redis-server."""

from __future__ import annotations

import socket
import subprocess
import time

import numpy as np
import pytest

import embedkit
from conftest import MINILM, cli_binary, need_tool

TEXTS = ["an API model behind the same class", "vectors from a server", "a third text"]


@pytest.fixture(scope="module")
def server():
    proc = subprocess.Popen(
        [str(cli_binary()), "serve", "--quiet", "--port", "0", "--model", MINILM],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = proc.stdout.readline()
    addr = line.split("http://")[1].split()[0]
    yield f"http://{addr}"
    proc.kill()
    proc.wait()


def test_openai_model_through_embed_kit_serve(server, minilm):
    api = embedkit.SentenceTransformer(f"openai:{MINILM}", base_url=f"{server}/v1")
    got = api.encode(TEXTS)
    assert got.shape == (3, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got, minilm.encode(TEXTS), atol=1e-6)
    assert api.get_embedding_dimension() == 384
    assert api.usage()["requests"] >= 1
    # encode_query passes the prompt name on (OpenAI has no input types: the same vectors).
    np.testing.assert_allclose(api.encode_query(TEXTS[0]), minilm.encode(TEXTS[0]), atol=1e-6)
    # Pickled by reference, base URL included.
    import pickle

    again = pickle.loads(pickle.dumps(api))
    np.testing.assert_allclose(again.encode(TEXTS), got, atol=1e-7)


def test_api_model_errors_are_python_exceptions(server):
    with pytest.raises(RuntimeError, match="404|not found|unknown"):
        embedkit.SentenceTransformer("openai:no-such-model", base_url=f"{server}/v1").encode(["x"])
    dead = _free_port()
    with pytest.raises(RuntimeError):
        m = embedkit.SentenceTransformer("openai:text-embedding-3-small", base_url=f"http://127.0.0.1:{dead}/v1")
        m.encode(["x"])
    with pytest.raises(ValueError, match="base_url is for API models"):
        embedkit.SentenceTransformer(MINILM, base_url="http://127.0.0.1:1/v1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = need_tool("redis-server")
    port = _free_port()
    d = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(d)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    proc.kill()
    proc.wait()


def _redis_keys(url: str) -> int:
    port = url.rsplit(":", 1)[1].split("/")[0]
    out = subprocess.run([need_tool("redis-cli"), "-p", port, "dbsize"], check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def test_redis_cache_is_shared_and_exact(redis_url, minilm):
    first = embedkit.SentenceTransformer(MINILM, cache=redis_url)
    a = first.encode(TEXTS)
    stored = _redis_keys(redis_url)
    assert stored >= len(TEXTS)
    # Another model object (as another process or Ray worker would be) reads the same entries.
    second = embedkit.SentenceTransformer(MINILM, cache=redis_url)
    b = second.encode(TEXTS)
    assert np.array_equal(a, b)
    assert _redis_keys(redis_url) == stored  # nothing new was written: every vector was a hit
    np.testing.assert_array_equal(a, minilm.encode(TEXTS))


def test_folder_cache(tmp_path, minilm):
    m = embedkit.SentenceTransformer(MINILM, cache=str(tmp_path / "cache"))
    a = m.encode(TEXTS)
    assert (tmp_path / "cache").is_dir()
    assert np.array_equal(m.encode(TEXTS), a)
    with pytest.raises(RuntimeError, match="cache"):
        embedkit.SentenceTransformer(MINILM, cache="http://example.invalid/cache")
