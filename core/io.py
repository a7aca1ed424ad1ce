"""The one atomic file writer: a temp file in the same folder, then ``os.replace``, so a reader (or a killed run)
never sees half a file. Folders are written atomically by ``core.manifest.atomic_output_dir``."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike, data: str | bytes, mode: int = 0o644) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)  # mkstemp makes 0600; our outputs are read by other users (containers)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, data: Any, sort_keys: bool = False) -> Path:
    """``data`` as indented JSON (``default=str`` for dates and paths), atomically."""
    return write_atomic(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """(line number, value) for each non-blank line; ValueError naming the file and line for one that is not JSON."""
    rows = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((i, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {i}: not JSON ({exc.msg})") from None
    return rows
