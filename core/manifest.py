"""The small JSON manifest every artefact folder carries, and atomic folder writes.

Each stage writes ``orpo_manifest.json`` beside its outputs: what made the folder, from which inputs (with
sha256), with which library versions, and the sha256 of its weights. The next stage reads it to chain
provenance and to decide whether an output is already up to date.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MANIFEST_NAME = "orpo_manifest.json"
SCHEMA_VERSION = 1
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """sha256 of a JSON value with sorted keys: the one fingerprint of settings, inputs and file lists."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def weights_sha256(model_dir: str | os.PathLike) -> dict[str, str]:
    """sha256 of every weight file directly in ``model_dir``, keyed by file name."""
    root = Path(model_dir)
    return {p.name: sha256_file(p) for p in sorted(root.iterdir()) if p.suffix in WEIGHT_SUFFIXES and p.is_file()}


def library_versions(*names: str) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def make_manifest(stage: str, **fields: Any) -> dict[str, Any]:
    """A manifest dict with the fields every stage shares; ``fields`` adds stage-specific ones."""
    return {
        "schema_version": SCHEMA_VERSION,
        "stage": stage,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **fields,
    }


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    from orpo_deploy.core.io import write_json

    return write_json(Path(folder) / MANIFEST_NAME, manifest, sort_keys=True)


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's manifest, or None when it has none (e.g. a model folder made by another tool)."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text())


@contextlib.contextmanager
def atomic_output_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; rename it to ``final`` only if the block finishes.

    An interrupted or failed run leaves no folder at ``final`` that looks complete: the temp folder
    (``.NAME.tmp-XXXX``) is removed on error, and the rename is atomic on one file system.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise FileExistsError(f"output folder already exists: {final} (pass overwrite to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; model folders are read by other users (containers)
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
