"""Preference accuracy: does the model give chosen a higher length-averaged log-prob than rejected?

The log-prob is averaged over the response tokens only, the same quantity ORPO's odds ratio uses
(Hong et al. 2024, eq. 3), with the prompt rendered by the model's chat template as trl does for
conversational data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm


def render_pair(tokenizer, prompt: Any, response: Any) -> tuple[str, str]:
    """(prompt text, response text) as the trainer sees them; chat-templated when the pair is conversational."""
    if isinstance(prompt, list):
        prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(prompt + response, tokenize=False)
        if not full.startswith(prompt_text):
            raise ValueError("the chat template renders the prompt differently alone and with a response")
        return prompt_text, full[len(prompt_text) :]
    return prompt, response


@torch.inference_mode()
def mean_response_logprobs(
    model, tokenizer, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 8, max_length: int = 1024
) -> torch.Tensor:
    """Length-averaged log p(response | prompt) per pair, shape ``[len(prompts)]`` (float32)."""
    out: list[torch.Tensor] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(prompts), batch_size):
        ids, masks = [], []
        for p, r in zip(prompts[start : start + batch_size], responses[start : start + batch_size], strict=True):
            p_ids = tokenizer(p, add_special_tokens=False)["input_ids"]
            r_ids = tokenizer(r, add_special_tokens=False)["input_ids"]
            seq = (p_ids + r_ids)[-max_length:]
            n_resp = min(len(r_ids), len(seq) - 1)  # the first token has no prediction
            ids.append(seq)
            masks.append([0] * (len(seq) - n_resp) + [1] * n_resp)
        width = max(map(len, ids))
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in ids])
        attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids])
        loss_mask = torch.tensor([m + [0] * (width - len(m)) for m in masks], dtype=torch.float32)
        input_ids, attention, loss_mask = (t.to(model.device) for t in (input_ids, attention, loss_mask))
        logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
        # gather - logsumexp needs one [B, T] result instead of a second [B, T, V] log_softmax tensor
        token_logps = torch.gather(logits, 2, input_ids[:, 1:, None]).squeeze(2) - logits.logsumexp(-1)
        mask = loss_mask[:, 1:]
        out.append((token_logps * mask).sum(1) / mask.sum(1).clamp(min=1))
    return torch.cat(out).cpu()


def preference_accuracy(model, tokenizer, rows: Sequence[dict], batch_size: int = 8) -> dict[str, Any]:
    """Share of pairs where chosen beats rejected, plus the mean margin of length-averaged log-probs."""
    chosen_logps, rejected_logps = [], []
    for start in tqdm(range(0, len(rows), batch_size), desc="preference", unit="batch"):
        batch = rows[start : start + batch_size]
        chosen = [render_pair(tokenizer, r["prompt"], r["chosen"]) for r in batch]
        rejected = [render_pair(tokenizer, r["prompt"], r["rejected"]) for r in batch]
        chosen_logps.append(mean_response_logprobs(model, tokenizer, *zip(*chosen, strict=True), batch_size))
        rejected_logps.append(mean_response_logprobs(model, tokenizer, *zip(*rejected, strict=True), batch_size))
    c, r = torch.cat(chosen_logps), torch.cat(rejected_logps)
    wins = (c > r).int().tolist()
    return {
        "pairs": len(rows),
        "preference_accuracy": (c > r).float().mean().item(),
        "mean_margin": (c - r).mean().item(),
        "mean_chosen_logp": c.mean().item(),
        "mean_rejected_logp": r.mean().item(),
        "per_rejection": per_rejection(rows, wins),
    }


def per_rejection(rows: Sequence[dict], wins: Sequence[int]) -> dict[str, dict]:
    """Preference accuracy per rejection type (natural, near miss, off topic, vague), each with its interval.

    Near misses differ from chosen by a token or two, so their accuracy is what ORPO optimises directly; it says
    little about answers a model would write. Clustered by topic where rows have one.
    """
    from orpo_deploy.evaluation.stats import ratio_ci

    out = {}
    for kind in sorted({r.get("rejection") for r in rows if r.get("rejection")}):
        idx = [i for i, r in enumerate(rows) if r.get("rejection") == kind]
        topics = [rows[i].get("topic") for i in idx]
        clusters = topics if all(topics) else None
        out[kind] = ratio_ci([wins[i] for i in idx], clusters=clusters).to_dict()
    return out
