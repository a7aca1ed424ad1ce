"""Training-loop hooks (transformers only, no trl): token counting and the ``metrics.jsonl`` log."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

# The keys trl's ORPOTrainer logs that we keep in metrics.jsonl and plot (eval_* variants are kept too).
ORPO_KEYS = (
    "loss",
    "nll_loss",
    "log_odds_ratio",
    "log_odds_chosen",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "learning_rate",
    "tokens_per_second",
)
# Dev instruction following while training (logged by evaluations only, as eval_*; train/dev_eval.py): plotted too.
DEV_KEYS = ("if_mean", "if_prompt_strict", "answer_tokens", "answer_hit_limit")


class TokenCountingCollator:
    """Wraps a collator and counts the non-padding tokens (chosen + rejected) of every batch it builds.

    trl's ORPO batches have no ``input_ids`` key, so transformers' ``include_num_input_tokens_seen`` cannot count
    them. The count is local to this process; the dataloader may run one batch ahead of the optimizer. ``keys``
    names the masks to sum: trl's SFT and DPO batches carry one ``attention_mask`` (DPO's holds prompt+chosen and
    prompt+rejected rows, so its count equals ORPO's for the same pairs).
    """

    def __init__(self, collator, keys: tuple[str, ...] = ("chosen_attention_mask", "rejected_attention_mask")) -> None:
        self.collator = collator
        self.keys = keys
        self.tokens = 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(features)
        for key in self.keys:
            if key in batch:
                self.tokens += int(batch[key].sum())
        return batch


class MetricsLogCallback(TrainerCallback):
    """Appends every log event to ``metrics.jsonl`` (main process only), with training tokens/s since the last one.

    Evaluation time and tokens are left out of tokens/s (the same collator builds eval batches). On resume,
    records after the checkpoint's step are dropped first: those steps run again. tokens/s = this process's
    count x the number of processes (data-parallel ranks see equal-sized batches).
    """

    def __init__(self, path: Path, counter: TokenCountingCollator, world_size: int = 1) -> None:
        self.path = Path(path)
        self.counter = counter
        self.world_size = world_size
        self._skip_tokens = 0  # eval tokens, not training throughput
        self._skip_time = 0.0
        self._start = self._last = (time.perf_counter(), 0)
        self._step_end = self._start
        self.last_train_record: dict[str, Any] = {}
        self.last_eval_record: dict[str, Any] = {}
        self.tokens_per_second = 0.0

    def _now(self) -> tuple[float, int]:
        """(training seconds, training tokens) so far in this session."""
        return time.perf_counter() - self._skip_time, self.counter.tokens - self._skip_tokens

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = self._last = self._step_end = self._now()
        if state.is_world_process_zero and self.path.exists():
            records = read_metrics(self.path)
            kept = [r for r in records if r.get("step", 0) <= state.global_step]
            if len(kept) < len(records):
                logger.info(
                    "resuming at step %d: dropping %d later log record(s)", state.global_step, len(records) - len(kept)
                )
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def on_step_end(self, args, state, control, **kwargs):
        self._step_end = (time.perf_counter(), self.counter.tokens)

    def on_evaluate(self, args, state, control, **kwargs):
        self._skip_time += time.perf_counter() - self._step_end[0]
        self._skip_tokens += self.counter.tokens - self._step_end[1]

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        record: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch, "time": time.time()}
        now = self._now()
        if "loss" in logs:  # a training log: throughput since the previous one
            record["tokens_per_second"] = self._rate(self._last, now)
            self._last = now
        if "train_runtime" in logs:  # the end-of-training summary: throughput of this session
            self.tokens_per_second = self._rate(self._start, now)
            record["tokens_per_second_session"] = self.tokens_per_second
        record.update(logs)
        if "loss" in logs:
            self.last_train_record = record
        elif any(k.startswith("eval_") for k in logs):
            self.last_eval_record = record
        if state.is_world_process_zero:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def _rate(self, since: tuple[float, int], now: tuple[float, int]) -> float:
        return (now[1] - since[1]) * self.world_size / max(now[0] - since[0], 1e-9)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a torn last line (killed mid-write) is skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
