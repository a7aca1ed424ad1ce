"""Workloads from a file: one request per JSONL row, in order (so two servers see the same requests).

A row may be ours (``prompt``: a string or a message list, as in data/splits/*_conversational.jsonl), an OpenAI-style
``messages`` list, or a ShareGPT-style ``conversations`` list (``{"from": "human"|"gpt", "value": ...}``: the first
human turn is the prompt, and the gpt turn's length sets the target output length, as ``vllm bench serve`` does with
ShareGPT). ``max_tokens`` in a row sets its output length. Rows without a usable prompt are an error naming the row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orpo_deploy.core.errors import UsageError
from orpo_deploy.core.io import read_jsonl
from orpo_deploy.core.messages import as_messages

TOKENS_PER_WORD = 1.3  # a rough English ratio, for ShareGPT's target lengths when no tokenizer is at hand


class WorkloadError(UsageError):
    """A workload file that cannot be used; the message names the row."""


def parse_row(row: Any, where: str) -> dict[str, Any]:
    """{"messages": [...], "max_tokens": int | None} from one row."""
    if not isinstance(row, dict):
        raise WorkloadError(f"{where}: expected an object")
    max_tokens = row.get("max_tokens")
    if "conversations" in row:
        turns = row["conversations"] or []
        human = next((t.get("value") for t in turns if t.get("from") in ("human", "user")), None)
        reply = next((t.get("value") for t in turns if t.get("from") in ("gpt", "assistant")), None)
        if not isinstance(human, str) or not human.strip():
            raise WorkloadError(f"{where}: a ShareGPT row needs a human turn")
        messages = [{"role": "user", "content": human}]
        if max_tokens is None and isinstance(reply, str) and reply.strip():
            max_tokens = max(1, round(len(reply.split()) * TOKENS_PER_WORD))
    else:
        messages = as_messages(row.get("prompt", row.get("messages")))
        if messages is None:
            raise WorkloadError(f"{where}: needs 'prompt' (a string or messages), 'messages' or 'conversations'")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise WorkloadError(f"{where}: max_tokens must be a positive integer, got {max_tokens!r}")
    return {"messages": messages, "max_tokens": max_tokens}


def load(path: str | Path) -> list[dict[str, Any]]:
    try:
        lines = read_jsonl(path)
    except ValueError as exc:
        raise WorkloadError(str(exc)) from None
    rows = [parse_row(row, f"{path}: line {i}") for i, row in lines]
    if not rows:
        raise WorkloadError(f"{path}: no requests")
    return rows
