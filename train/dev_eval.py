"""Instruction following on the eval split *while training*: greedy answers from the model being trained, scored by
our verifiers (relevance included), so steps and checkpoints are chosen on what the model does, not on the loss.

Preference accuracy on pairs whose chosen and rejected share most tokens is the training objective, not a quality
measure (it passes 0.9 while answers stay unchanged); the dev figures here are the ones a checkpoint is picked by.
Answer length and the share cut at the token limit are logged beside them: an aligned model ends its answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from orpo_deploy.core.errors import UsageError
from orpo_deploy.core.messages import as_messages

logger = logging.getLogger(__name__)

# What one evaluation logs (prefixed eval_ by transformers); ``if_mean`` is the mean of the four IFEval figures.
GENERATION_METRICS = (
    "if_prompt_strict",
    "if_instruction_strict",
    "if_mean",
    "if_relevant",
    "answer_tokens",
    "answer_hit_limit",
)


class GenerationEvalError(UsageError):
    """Eval rows that cannot be scored by generation (no constraints); the message says which."""


class GenerationEval:
    """Greedy answers to ``n`` evenly spaced eval rows (every topic, not the first few), scored with our verifiers."""

    def __init__(self, rows: Sequence[dict[str, Any]], n: int, max_new_tokens: int = 256, batch_size: int = 16):
        from orpo_deploy.evaluation.runner import subset

        usable = [r for r in rows if r.get("constraints")]
        if not usable:
            raise GenerationEvalError(
                "eval_generate needs eval rows with a 'constraints' column (our dev split has them); this eval "
                "dataset has none"
            )
        self.rows = subset(usable, n)
        self.prompts = [as_messages(r["prompt"]) for r in self.rows]
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def __call__(self, model, tokenizer) -> dict[str, float]:
        import torch

        from orpo_deploy.evaluation.generate import generate_hf

        started = time.perf_counter()
        was_training = model.training
        model.eval()  # no dropout: greedy answers are then a function of the weights
        try:
            with torch.no_grad():
                out = generate_hf(model, tokenizer, self.prompts, self.max_new_tokens, self.batch_size)
        finally:
            model.train(was_training)
        return figures(self.rows, out, time.perf_counter() - started)


def figures(rows: Sequence[dict[str, Any]], generations: Sequence, seconds: float = 0.0) -> dict[str, float]:
    """The logged figures of one evaluation from its rows and ``Generation``s (pure: tested by hand)."""
    from orpo_deploy.evaluation.instruct import summarize, verdicts

    scores = summarize(verdicts(rows, [g.text for g in generations]))
    n = max(len(generations), 1)
    return {
        "if_prompt_strict": scores["prompt_strict"],
        "if_instruction_strict": scores["instruction_strict"],
        "if_mean": scores["mean"],
        "if_relevant": scores["relevance_rate"],
        "answer_tokens": sum(g.tokens or 0 for g in generations) / n,
        "answer_hit_limit": sum(g.finish_reason == "length" for g in generations) / n,
        "generation_seconds": round(seconds, 1),
    }
