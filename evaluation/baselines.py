"""The floor beside every quality table: the best of a few constant answers, scored like a model.

A model that answers every prompt with the same text follows nothing, so whatever it scores is what the
checkers give away for free (IFEval: "no commas", "all lowercase" or "at most N words" pass on a short constant
answer). The candidates cover the cheap tricks seen so far: a bare word, an uppercase layout, a lowercase
sentence, a JSON object, a numbered list. The best of them, by the mean of the four figures, is the row shown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CONSTANT_ANSWERS = (
    "SURE.",
    "SURE. HERE IS MY ANSWER.\n\n1. THE FIRST POINT.\n2. THE SECOND POINT.\n3. THE THIRD POINT.",
    "sure, here is the answer to your question.",
    '{"answer": "Here is the answer to your question."}',
    "Here is my answer.\n\n1. The first point.\n2. The second point.\n3. The third point.",
)


def best_constant(score: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """``score(answer)`` for each constant answer; the best one's figures, with the answer and every mean."""
    scored = [(answer, score(answer)) for answer in CONSTANT_ANSWERS]
    answer, figures = max(scored, key=lambda item: _mean(item[1]))
    return {"answer": answer, "candidates": {a: _mean(f) for a, f in scored}, **figures}


def _mean(figures: dict[str, Any]) -> float:
    mean = figures["mean"]
    return mean["value"] if isinstance(mean, dict) else mean
