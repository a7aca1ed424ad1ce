"""A prompt as chat messages: the one conversion every reader of prompts shares (datasets, on-policy sampling,
evaluation, load-test workloads)."""

from __future__ import annotations

from typing import Any


def as_messages(prompt: Any) -> list[dict[str, Any]] | None:
    """A non-blank string as one user message, a non-empty list of messages with content as is; else None."""
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) and m.get("content") for m in prompt):
        return prompt
    return None
