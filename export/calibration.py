"""Calibration samples for the quantiser: training prompts with their chosen answers, as the server renders them.

GPTQ and AWQ fit each layer to the activations they see during calibration, so the samples should look like
production traffic: the model's chat template applied to prompt + chosen response (the answer we want the model
to keep giving), not raw web text.
"""

from __future__ import annotations

import logging
from typing import Any

from orpo_deploy.data.load import DatasetError, load_preference_dataset
from orpo_deploy.export.config import ExportError

logger = logging.getLogger(__name__)


def evenly_spaced(rows: list[Any], n: int) -> list[Any]:
    """A deterministic subset of ``n`` rows spread over the list (our splits are grouped by topic)."""
    if n >= len(rows):
        return rows
    return [rows[i * len(rows) // n] for i in range(n)]


def as_messages(prompt: Any, response: Any) -> list[dict[str, str]]:
    """One conversation from a conversational or a plain-string pair."""
    prompt_msgs = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    response_msgs = response if isinstance(response, list) else [{"role": "assistant", "content": str(response)}]
    return list(prompt_msgs) + list(response_msgs)


def calibration_samples(tokenizer, dataset: str | None, size: int, max_tokens: int) -> list[dict[str, list[int]]]:
    """``size`` tokenised samples (``input_ids`` + ``attention_mask``), truncated to ``max_tokens``."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ExportError("the model's tokenizer has no chat template, so calibration cannot match served prompts")
    try:
        rows = load_preference_dataset(dataset, split="train").to_list()
    except DatasetError as e:
        raise ExportError(f"calibration data: {e}") from None
    if len(rows) < size:
        logger.warning("calibration: only %d pairs available, fewer than --calibration-size %d", len(rows), size)
    samples = []
    for row in evenly_spaced(rows, size):
        text = tokenizer.apply_chat_template(as_messages(row["prompt"], row["chosen"]), tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_tokens)["input_ids"]
        if ids:
            samples.append({"input_ids": ids, "attention_mask": [1] * len(ids)})
    if not samples:
        raise ExportError(f"calibration data {dataset or 'train split'}: no non-empty samples")
    lengths = [len(s["input_ids"]) for s in samples]
    logger.info(
        "calibration: %d samples, %d-%d tokens (mean %.0f)",
        len(samples),
        min(lengths),
        max(lengths),
        sum(lengths) / len(lengths),
    )
    return samples
