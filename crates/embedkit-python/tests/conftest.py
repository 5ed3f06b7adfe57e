"""Shared set-up of the embedkit package's tests: where the repository, its fixtures and the CLI are."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"
MINILM = "all-MiniLM-L6-v2"


def cli_binary() -> pathlib.Path:
    """The `embedkit` command built from this checkout (EMBEDKIT_BIN, else target/release, else debug)."""
    env = os.environ.get("EMBEDKIT_BIN")
    candidates = [pathlib.Path(env)] if env else [ROOT / "target/release/embedkit", ROOT / "target/debug/embedkit"]
    for c in candidates:
        if c.is_file():
            return c
    pytest.fail(f"no embedkit binary at {candidates}: build it first (cargo build -p embedkit)")


def in_ci() -> bool:
    return os.environ.get("CI", "") not in ("", "0", "false")


def need_tool(name: str) -> str:
    """A program the test needs: in CI its absence fails the test, elsewhere it skips."""
    path = shutil.which(name)
    if path is None:
        if in_ci():
            pytest.fail(f"{name} is not installed (scripts/test installs it)")
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture(scope="session")
def minilm():
    import embedkit

    return embedkit.SentenceTransformer(MINILM)


@pytest.fixture(scope="session")
def minilm_dir() -> pathlib.Path:
    out = subprocess.run(
        [str(cli_binary()), "models", "fetch", MINILM, "--quiet"], check=True, capture_output=True, text=True
    )
    return pathlib.Path(out.stdout.strip().splitlines()[-1])
