"""Preference pairs -> chat-formatted strings -> pre-truncated pairs that trl cannot over-truncate.

trl's ORPO tokenises ``prompt + response`` and, since ``max_prompt_length`` was removed, cuts only the response
(trl issue #6548): a long prompt leaves an empty response, which reaches the loss as a pair with no signal. Here,
before trl sees the data, the prompt keeps its *tail* within ``max_prompt_length`` (the question and the assistant
header survive; a long system preamble goes) and each response keeps its head within ``max_length - prompt``.
Lengths count the BOS/EOS tokens trl adds. Every dropped or truncated pair is counted.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from datasets import Dataset

from orpo_deploy.core.errors import UsageError

logger = logging.getLogger(__name__)

PAIR_COLUMNS = ("prompt", "chosen", "rejected")


class PairFormatError(UsageError):
    """A row that is not a prompt/chosen/rejected preference pair we can format."""


@dataclasses.dataclass
class TruncationStats:
    pairs_in: int = 0
    pairs_out: int = 0
    prompts_truncated: int = 0
    responses_truncated: int = 0  # pairs with the chosen and/or the rejected response cut
    dropped_empty: int = 0  # a response was empty before any truncation
    dropped_truncated: int = 0  # drop_truncated was on and a response did not fit
    dropped_identical: int = 0  # chosen == rejected after truncation: no preference left

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def is_conversational(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m for m in value)


def format_pairs(dataset: Dataset, tokenizer, chat_template: bool = True) -> Dataset:
    """Rows with prompt/chosen/rejected (strings or message lists) -> the same three columns as strings.

    Conversational rows and, with ``chat_template``, plain-string rows (one user turn, one assistant turn) are
    rendered with the tokenizer's chat template, exactly as trl's ``apply_chat_template`` would, except that the
    newline after the response's end-of-turn token is dropped: otherwise trl appends a second EOS after it.
    """
    missing = [c for c in PAIR_COLUMNS if c not in dataset.column_names]
    if missing:
        raise PairFormatError(f"dataset lacks column(s) {', '.join(missing)}; has {', '.join(dataset.column_names)}")
    use_template = chat_template and getattr(tokenizer, "chat_template", None)
    if len(dataset) and is_conversational(dataset[0]["prompt"]) and not getattr(tokenizer, "chat_template", None):
        raise PairFormatError("conversational pairs need a tokenizer with a chat template; this one has none")

    def render(row: dict[str, Any], idx: int) -> dict[str, str]:
        prompt, chosen, rejected = (row[c] for c in PAIR_COLUMNS)
        conversational = is_conversational(prompt)
        if conversational != is_conversational(chosen) or conversational != is_conversational(rejected):
            raise PairFormatError(f"row {idx}: prompt, chosen and rejected mix plain strings and message lists")
        if not conversational:
            if not all(isinstance(v, str) for v in (prompt, chosen, rejected)):
                raise PairFormatError(f"row {idx}: prompt/chosen/rejected must be strings or message lists")
            if not use_template:
                return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
            prompt = [{"role": "user", "content": prompt}]
            chosen = [{"role": "assistant", "content": chosen}]
            rejected = [{"role": "assistant", "content": rejected}]
        prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        out = {"prompt": prompt_text}
        for key, answer in (("chosen", chosen), ("rejected", rejected)):
            full = tokenizer.apply_chat_template(prompt + answer, tokenize=False)
            if not full.startswith(prompt_text):
                raise PairFormatError(f"row {idx}: the chat template renders the prompt differently with an answer")
            out[key] = _strip_after_eos(full[len(prompt_text) :], tokenizer.eos_token)
        return out

    extra = [c for c in dataset.column_names if c not in PAIR_COLUMNS]
    return dataset.map(render, with_indices=True, remove_columns=extra, desc="chat template")


def _strip_after_eos(text: str, eos: str | None) -> str:
    if eos and text.rstrip().endswith(eos):
        return text.rstrip()
    return text


def truncate_pairs(
    dataset: Dataset,
    tokenizer,
    max_length: int,
    max_prompt_length: int,
    drop_truncated: bool = False,
) -> tuple[Dataset, TruncationStats]:
    """Pre-truncate string pairs so that trl keeps ``prompt <= max_prompt_length`` and a non-empty response.

    Returns the kept pairs and the counts; see the module docstring for the rule.
    """
    stats = TruncationStats(pairs_in=len(dataset))
    bos_room = 0 if tokenizer.bos_token_id is None else 1
    rows = []
    for row in dataset:
        prompt = row["prompt"]
        if _n_tokens(tokenizer, prompt) + _bos_extra(tokenizer, prompt) > max_prompt_length:
            prompt = _keep_tail(tokenizer, prompt, max_prompt_length - bos_room)
            stats.prompts_truncated += 1
        room = max_length - _n_tokens(tokenizer, prompt) - _bos_extra(tokenizer, prompt)
        answers, cut = {}, False
        for key in ("chosen", "rejected"):
            answers[key], was_cut = _fit_response(tokenizer, row[key], room)
            cut |= was_cut
        if any(not _content(tokenizer, row[key]) for key in ("chosen", "rejected")):
            stats.dropped_empty += 1
            continue
        if cut:
            stats.responses_truncated += 1
            if drop_truncated:
                stats.dropped_truncated += 1
                continue
        if answers["chosen"] == answers["rejected"]:
            stats.dropped_identical += 1
            continue
        rows.append({"prompt": prompt, **answers})
    stats.pairs_out = len(rows)
    logger.info("pre-truncation (max_length %d, max_prompt_length %d): %s", max_length, max_prompt_length, stats)
    if not rows:
        raise PairFormatError(f"no training pairs left after truncation ({stats.as_dict()})")
    return Dataset.from_list(rows), stats


def _ids(tokenizer, text: str, offsets: bool = False):
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=offsets)
    return (enc["input_ids"], enc["offset_mapping"]) if offsets else enc["input_ids"]


def _n_tokens(tokenizer, text: str) -> int:
    return len(_ids(tokenizer, text))


def _content(tokenizer, answer: str) -> str:
    return answer.replace(tokenizer.eos_token, "").strip() if tokenizer.eos_token else answer.strip()


def _bos_extra(tokenizer, prompt: str) -> int:
    """1 if trl will prepend BOS to this prompt (it does unless the prompt already starts with it)."""
    bos = tokenizer.bos_token_id
    return 0 if bos is None or _ids(tokenizer, prompt)[:1] == [bos] else 1


def _fit_response(tokenizer, answer: str, room: int) -> tuple[str, bool]:
    """The answer if it fits in ``room`` tokens with the EOS trl appends, else its longest head that does."""
    ids, offsets = _ids(tokenizer, answer, offsets=True)
    eos = tokenizer.eos_token_id
    eos_room = 0 if eos is None or ids[-1:] == [eos] else 1
    if len(ids) + eos_room <= room:
        return answer, False
    budget = room - (0 if eos is None else 1)  # a cut answer never ends with EOS: trl appends one
    for keep in range(budget, 0, -1):
        head = answer[: offsets[keep - 1][1]]
        # Cutting inside a word can re-tokenise into more pieces; shrink until it really fits.
        if _n_tokens(tokenizer, head) <= budget:
            return head, True
    return "", True


def _keep_tail(tokenizer, text: str, budget: int) -> str:
    ids, offsets = _ids(tokenizer, text, offsets=True)
    for start in range(len(ids) - budget, len(ids)):
        tail = text[offsets[start][0] :]
        if _n_tokens(tokenizer, tail) <= budget:
            return tail
    return ""
