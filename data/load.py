"""Load a user's preference dataset (or ours) into trl's prompt/chosen/rejected form, with clear errors.

Accepted: JSONL/JSON lines, Parquet, a ``datasets`` folder from ``save_to_disk``, a hub id when online, or
``None`` for our committed split. Rows may be standard (strings), conversational (lists of
``{"role", "content"}`` messages) or implicit-prompt (only chosen/rejected, HH-RLHF style); the prompt of an
implicit-prompt pair is their shared prefix, as trl's ``extract_prompt`` does. Every problem names the file,
row (1-based, as editors count lines) and column.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orpo_deploy.core.errors import UsageError
from orpo_deploy.data.splits import split_path

FIELDS = ("prompt", "chosen", "rejected")


class DatasetError(UsageError):
    """A dataset that cannot be used; the message names the file, row and column."""


def default_split_path(split: str = "train", conversational: bool = True) -> Path:
    """Our committed split; conversational by default so trainers apply the model's chat template."""
    path = split_path(f"{split}_conversational" if conversational else split)
    if not path.is_file():
        raise DatasetError(
            f"{path}: our {split!r} split is missing (rebuild it with `python -m orpo_deploy.data.build`)"
        )
    return path


def load_preference_dataset(spec: str | os.PathLike | None = None, split: str = "train"):
    """A ``datasets.Dataset`` with prompt/chosen/rejected columns (other columns are kept)."""
    from datasets import Dataset

    source = str(spec) if spec is not None else str(default_split_path(split))
    rows = list(_read_rows(source, split))
    if not rows:
        raise DatasetError(f"{source}: no rows")
    normalised = [normalise_pair(row, source, i) for i, row in enumerate(rows, start=1)]
    return Dataset.from_list(normalised)


def _read_rows(source: str, split: str) -> Iterable[dict[str, Any]]:
    path = Path(source).expanduser()
    if path.is_dir():
        yield from _read_saved_dataset(path, split)
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json", ".ndjson"):
            yield from _read_jsonl(path)
        elif suffix == ".parquet":
            yield from _read_parquet(path)
        else:
            raise DatasetError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .parquet or a datasets folder)")
    elif source.startswith((".", "/", "~")) or source.count("/") != 1 or Path(source).suffix:
        raise DatasetError(f"{source}: no such file or folder")
    else:
        yield from _read_hub(source, split)


def _read_jsonl(path: Path) -> Iterable[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: unreadable ({e.__class__.__name__}: {e})") from None
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array rather than JSON lines
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        yield from (_as_row(item, path, i) for i, item in enumerate(data, start=1))
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: row {lineno}: not valid JSON ({e.msg})") from None
        yield _as_row(item, path, lineno)


def _as_row(item: Any, path: Path, row: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise DatasetError(f"{path}: row {row}: expected a JSON object, got {type(item).__name__}")
    return item


def _read_parquet(path: Path) -> Iterable[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise DatasetError(f"{path}: unreadable Parquet ({e.__class__.__name__}: {e})") from None
    yield from table.to_pylist()


def _read_saved_dataset(path: Path, split: str) -> Iterable[dict[str, Any]]:
    from datasets import DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as e:  # FileNotFoundError or datasets' own errors for a folder it did not write
        raise DatasetError(f"{path}: not a datasets save_to_disk folder ({e.__class__.__name__}: {e})") from None
    if isinstance(ds, DatasetDict):
        if split not in ds:
            raise DatasetError(f"{path}: no split {split!r} (has {', '.join(ds)})")
        ds = ds[split]
    yield from ds


def _read_hub(repo_id: str, split: str) -> Iterable[dict[str, Any]]:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise DatasetError(f"{repo_id}: no such file, and HF_HUB_OFFLINE is set so hub datasets are not fetched")
    from datasets import load_dataset

    try:
        ds = load_dataset(repo_id, split=split)
    except Exception as e:  # network, auth and missing-repo errors all land here
        raise DatasetError(f"{repo_id}: could not load from the hub ({e.__class__.__name__}: {e})") from None
    yield from ds


def normalise_pair(row: dict[str, Any], source: str, index: int) -> dict[str, Any]:
    """Check one row and return it with an explicit prompt; raise DatasetError naming row and column."""
    where = f"{source}: row {index}"
    for column in ("chosen", "rejected"):
        if column not in row or row[column] is None:
            raise DatasetError(f"{where}: column {column!r} is missing")
    row = dict(row)
    if row.get("prompt") is None:
        row.update(extract_prompt(row["chosen"], row["rejected"], where))
    conversational = isinstance(row["chosen"], list)
    for column in FIELDS:
        _check_field(row[column], conversational, f"{where}: column {column!r}")
    if row["chosen"] == row["rejected"]:
        raise DatasetError(f"{where}: chosen and rejected are identical")
    return row


def _check_field(value: Any, conversational: bool, where: str) -> None:
    if conversational:
        if not isinstance(value, list):
            raise DatasetError(f"{where}: expected a list of messages, got {type(value).__name__}")
        if not value:
            raise DatasetError(f"{where}: empty")
        for j, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise DatasetError(f"{where}: message {j} needs a string 'role'")
            if not isinstance(message.get("content"), str) or not message["content"].strip():
                raise DatasetError(f"{where}: message {j} has an empty or non-string 'content'")
        return
    if not isinstance(value, str):
        raise DatasetError(f"{where}: expected a string, got {type(value).__name__}")
    if not value.strip():
        raise DatasetError(f"{where}: empty")


def extract_prompt(chosen: Any, rejected: Any, where: str) -> dict[str, Any]:
    """Split an implicit-prompt pair at the end of its shared prefix (trl's ``extract_prompt`` rule)."""
    if isinstance(chosen, list) and isinstance(rejected, list):
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        if n == 0:
            raise DatasetError(f"{where}: no 'prompt' column and chosen/rejected share no leading messages")
        return {"prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}
    if isinstance(chosen, str) and isinstance(rejected, str):
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        if n > 0 and chosen[n - 1] == " ":  # the space belongs to the response, as in trl
            n -= 1
        if n == 0:
            raise DatasetError(f"{where}: no 'prompt' column and chosen/rejected share no prefix")
        return {"prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}
    raise DatasetError(f"{where}: chosen and rejected must both be strings or both be message lists")
