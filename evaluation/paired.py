"""Paired differences between two evaluations of the same prompts, read from their ``responses.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from orpo_deploy.evaluation.stats import if_paired_diffs


def read_responses(folder: Path) -> list[dict] | None:
    """An orpo-eval folder's per-answer records, or None when it has none."""
    try:
        lines = (Path(folder) / "responses.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, json.JSONDecodeError):
        return None


def paired_diffs(a_dir: Path, b_dir: Path, keep: Callable[[dict], bool] | None = None) -> dict[str, dict] | None:
    """B minus A for the four figures and their mean over the prompts both answered (paired bootstrap, clustered
    by topic where the records carry one); each with ``excludes_zero``, the only case we call a difference.
    ``keep`` selects records (e.g. one template's rows)."""
    a, b = read_responses(a_dir), read_responses(b_dir)
    if not a or not b:
        return None
    if keep is not None:
        a = [r for r in a if keep(r)]
    if not a:
        return None
    key = "id" if "id" in a[0] else "key"
    by_id = {r[key]: r for r in b}
    pairs = [(r, by_id[r[key]]) for r in a if r[key] in by_id]
    if not pairs:
        return None
    topics = [r.get("topic") for r, _ in pairs]
    return if_paired_diffs([r for r, _ in pairs], [s for _, s in pairs], topics if all(topics) else None)
