"""Where the committed splits live and how to read them (stdlib only, safe to import anywhere)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SPLITS_DIR = Path(__file__).with_name("splits")
SPLIT_NAMES = ("train", "dev", "test", "train_conversational", "dev_conversational", "test_conversational")


def split_path(name: str, splits_dir: Path = SPLITS_DIR) -> Path:
    """The JSON-lines file of split `name` (one of SPLIT_NAMES)."""
    if name not in SPLIT_NAMES:
        raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLIT_NAMES)}")
    return splits_dir / f"{name}.jsonl"


def load_split(name: str, splits_dir: Path = SPLITS_DIR) -> list[dict[str, Any]]:
    """Rows of a committed split: prompt, chosen, rejected and metadata (id, topic, base_prompt, ...)."""
    path = split_path(name, splits_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; rebuild it with: python -m orpo_deploy.data.build")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
