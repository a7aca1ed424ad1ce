"""Instruction-following rates from generated responses (pure: no model, no I/O).

The four IFEval figures (Zhou et al. 2023, arXiv 2311.07911): prompt-level strict/loose (every instruction of
a prompt followed) and instruction-level strict/loose (each instruction counted on its own).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from data.verifiers import Constraint, check, check_loose


def score_responses(constraints: Sequence[Sequence[Constraint]], responses: Sequence[str]) -> dict[str, Any]:
    """IFEval rates plus a strict rate per constraint kind; ``constraints[i]`` belong to ``responses[i]``."""
    if len(constraints) != len(responses):
        raise ValueError(f"{len(constraints)} constraint lists for {len(responses)} responses")
    prompt_strict = prompt_loose = inst_total = inst_strict = inst_loose = 0
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for cs, response in zip(constraints, responses, strict=True):
        strict = [check(response, c) for c in cs]
        loose = [check_loose(response, c) for c in cs]
        prompt_strict += all(strict)
        prompt_loose += all(loose)
        inst_total += len(cs)
        inst_strict += sum(strict)
        inst_loose += sum(loose)
        for c, ok in zip(cs, strict, strict=True):
            per_kind[c.kind][0] += ok
            per_kind[c.kind][1] += 1
    n = max(len(responses), 1)
    return {
        "prompts": len(responses),
        "instructions": inst_total,
        "prompt_strict": prompt_strict / n,
        "prompt_loose": prompt_loose / n,
        "instruction_strict": inst_strict / max(inst_total, 1),
        "instruction_loose": inst_loose / max(inst_total, 1),
        "per_kind_strict": {k: ok / total for k, (ok, total) in sorted(per_kind.items())},
    }
