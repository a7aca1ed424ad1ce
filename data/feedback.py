"""``orpo-data from-feedback URL``: a preference dataset from orpo-serve's record store (``--record``).

Pairs come from what users said, always about one prompt:
- a **preferred** answer: chosen = the user's text, rejected = the answer they were given (choice 0);
- a **choice** among n: chosen = the picked choice, rejected = each choice not picked;
- **ratings**: chosen = an answer rated up (> 0), rejected = an answer to the same prompt rated down (< 0), across
  completions; a rating of a completion with n > 1 choices rates the choice it names (one naming none is skipped).
Identical pairs are kept once; a pair whose sides are equal is dropped. Rows are split into train and dev *by prompt*
(a sha256 of it), so no prompt is in both. Prompts stored as a hash or redacted cannot be trained on and are counted.
The tables are read by reflection: the data stage does not import the server.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

from orpo_deploy.core.errors import UsageError

MAX_RATING_PAIRS_PER_PROMPT = 4


class FeedbackDataError(UsageError):
    """A store that cannot be read, or filters that cannot be used; the message says which."""


def load(url: str, model_sha: str | None = None, since: str | None = None, until: str | None = None):
    """(completions by primary key, feedback rows) from the store, filtered by model version and date."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
            raise FeedbackDataError(f"cannot read the record store: no such file {parsed.database!r}")
        engine = sa.create_engine(url)
        md = sa.MetaData()
        completions = sa.Table("completions", md, autoload_with=engine)
        feedback = sa.Table("feedback", md, autoload_with=engine)
    except FeedbackDataError:
        raise
    except Exception as exc:  # a bad URL, no such table, no server
        raise FeedbackDataError(f"cannot read the record store: {type(exc).__name__}: {exc}") from None
    query = sa.select(completions)
    if model_sha:
        query = query.where(completions.c.model_sha == model_sha)
    for bound, op in ((since, "__ge__"), (until, "__lt__")):
        if bound:
            try:
                when = datetime.fromisoformat(bound)
            except ValueError:
                raise FeedbackDataError(f"{bound!r} is not an ISO date (e.g. 2026-12-01)") from None
            query = query.where(getattr(completions.c.created_at, op)(when))
    with engine.connect() as conn:
        rows = {r["id"]: dict(r) for r in conn.execute(query).mappings()}
        marks = [dict(r) for r in conn.execute(sa.select(feedback).order_by(feedback.c.id)).mappings()]
    engine.dispose()
    return rows, [m for m in marks if m["completion"] in rows]


def build_pairs(rows: dict[int, dict], marks: list[dict], dev_percent: int = 10) -> tuple[dict[str, list], dict]:
    """{"train": [...], "dev": [...]} conversational pair rows, and stats of what was kept and why not."""
    pairs, dropped = [], Counter()
    rated: dict[str, dict[str, list]] = defaultdict(lambda: {"up": [], "down": []})
    for mark in marks:
        row = rows[mark["completion"]]
        if row["prompt_policy"] != "full":
            dropped[f"prompt stored as {row['prompt_policy']}"] += 1
            continue
        texts = [c["text"] for c in sorted(row["choices"], key=lambda c: c["index"])]
        if not texts:
            dropped["no answer recorded"] += 1
            continue
        if mark["kind"] == "preferred":
            pairs.append((row, mark["preferred"], texts[0], "preferred"))
        elif mark["kind"] == "choice":
            pairs += [(row, texts[mark["choice"]], t, "choice") for j, t in enumerate(texts) if j != mark["choice"]]
        elif mark.get("choice") is None and len(texts) > 1:
            dropped["rating of a completion with several choices, no choice named"] += 1
        elif mark.get("choice") is not None and mark["choice"] >= len(texts):
            dropped["rated choice not recorded"] += 1
        elif mark["rating"] != 0:  # the rated answer: the named choice, or the only one
            text = texts[mark["choice"] if mark.get("choice") is not None else 0]
            rated[row["prompt_sha"]]["up" if mark["rating"] > 0 else "down"].append((row, text))
    for sides in rated.values():
        combos = [(u, d) for u in sides["up"] for d in sides["down"]][:MAX_RATING_PAIRS_PER_PROMPT]
        pairs += [(u[0], u[1], d[1], "rating") for u, d in combos]
    out: dict[str, list] = {"train": [], "dev": []}
    seen = set()
    for row, chosen, rejected, source in pairs:
        if chosen.strip() == rejected.strip() or not chosen.strip() or not rejected.strip():
            dropped["chosen equals rejected or is empty"] += 1
            continue
        key = (row["prompt_sha"], chosen, rejected)
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        split = "dev" if int(row["prompt_sha"][:8], 16) % 100 < dev_percent else "train"
        prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
        out[split].append(
            {
                "id": hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16],
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
                "source": source,
                "completion_id": row["completion_id"],
                "model_sha": row["model_sha"],
            }
        )
    stats = {
        "completions": len(rows),
        "feedback": len(marks),
        "feedback_by_kind": dict(Counter(m["kind"] for m in marks)),
        "pairs": {split: len(v) for split, v in out.items()},
        "pairs_by_source": dict(Counter(r["source"] for v in out.values() for r in v)),
        "dropped": dict(dropped),
    }
    return out, stats


def run(url: str, output: str, model_sha: str | None, since: str | None, until: str | None, dev_percent: int) -> Path:
    from orpo_deploy.core.manifest import atomic_output_dir, make_manifest, sha256_file, write_manifest

    if not 0 <= dev_percent <= 50:
        raise FeedbackDataError(f"--dev-percent must be in 0..50, got {dev_percent}")
    rows, marks = load(url, model_sha, since, until)
    splits, stats = build_pairs(rows, marks, dev_percent)
    if not sum(stats["pairs"].values()):
        raise FeedbackDataError(f"no pairs: {stats['feedback']} feedback rows on {stats['completions']} completions "
                                f"(dropped: {stats['dropped'] or 'none'})")  # fmt: skip
    with atomic_output_dir(Path(output), overwrite=True) as tmp:
        for split, items in splits.items():
            (tmp / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items))
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        write_manifest(tmp, make_manifest(
            "feedback_pairs", store=_safe(url), filters={"model_sha": model_sha, "since": since, "until": until},
            dev_percent=dev_percent, stats=stats,
            files={f"{s}.jsonl": sha256_file(tmp / f"{s}.jsonl") for s in splits},
        ))  # fmt: skip
    return Path(output)


def _safe(url: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)
