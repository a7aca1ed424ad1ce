"""The ORPO objective as a pure function (torch only).

Hong, Lee & Thorne 2024, "ORPO: Monolithic Preference Optimization without Reference Model", arXiv:2403.07691.
With the length-averaged log-likelihood ``ℓ = (1/m) Σ_t log P(y_t | x, y_<t)``, ``P = exp(ℓ)`` and
``odds(y|x) = P / (1 - P)`` (the paper's preliminaries):

- eq. (6): ``L_ORPO = E[L_SFT + λ · L_OR]``
- eq. (7): ``L_OR = -log σ(log(odds(y_w|x) / odds(y_l|x)))``
- eq. (8): ``∇L_OR = δ(d) · h(d)``; autograd reproduces it, so it is not written out here.

In log space ``log odds = ℓ - log(1 - exp(ℓ))``; ``log(1 - exp(ℓ))`` is where naive code loses precision, hence
:func:`log1mexp`. trl calls λ ``beta`` and logs ``log σ(·)`` under the name ``log_odds_ratio``; the metric names
below are trl's, so our ``metrics.jsonl`` and this function speak the same language.
``tests/train/test_loss.py`` pins this function to ``trl.experimental.orpo.ORPOTrainer.odds_ratio_loss``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

_MINUS_LN2 = -math.log(2.0)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate everywhere (Mächler 2012, "Accurately computing log(1-exp(-|a|))").

    Near 0, ``1 - exp(x)`` cancels: use ``log(-expm1(x))``. Far below 0, ``exp(x)`` is tiny and ``log1p`` keeps its
    digits: use ``log1p(-exp(x))``. The switch point -ln 2 is where both are equally good. ``x = 0`` gives ``-inf``
    (a sequence with probability 1 has infinite odds); ``x > 0`` gives NaN.
    """
    return torch.where(x > _MINUS_LN2, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class ORPOLoss(NamedTuple):
    loss: torch.Tensor  # () : L_SFT + λ · mean(L_OR); differentiable
    or_losses: torch.Tensor  # (B,) : per-pair L_OR = -log σ(log odds ratio), unscaled by λ
    metrics: dict[str, torch.Tensor]  # detached scalars, keyed like trl's logs


def orpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    chosen_nll: torch.Tensor,
    beta: float = 0.1,
) -> ORPOLoss:
    """ORPO loss from per-sequence length-averaged log-probabilities.

    Args:
        chosen_logps: (B,) mean log-prob per response token of the chosen responses, all < 0.
        rejected_logps: (B,) the same for the rejected responses.
        chosen_nll: () or (B,) the SFT negative log-likelihood of the chosen sequences (trl uses one token-averaged
            cross-entropy over the whole batch, prompt tokens included); a (B,) tensor is averaged.
        beta: λ, the weight of the odds-ratio term (eq. 6). 0 gives plain SFT.

    Returns:
        ``ORPOLoss(loss, or_losses, metrics)``; ``metrics`` has ``nll_loss``, ``log_odds_ratio`` (mean log σ),
        ``log_odds_chosen`` (mean log odds ratio), ``rewards/{chosen,rejected,accuracies,margins}`` (reward =
        λ · ℓ, as trl) and ``logps/{chosen,rejected}``.
    """
    if chosen_logps.shape != rejected_logps.shape or chosen_logps.dim() != 1:
        raise ValueError(
            f"expected two (B,) tensors, got {tuple(chosen_logps.shape)} and {tuple(rejected_logps.shape)}"
        )
    # fp32 at least: in bf16 the log-odds of two nearby likelihoods is mostly rounding noise.
    dtype = torch.promote_types(chosen_logps.dtype, torch.float32)
    chosen = chosen_logps.to(dtype)
    rejected = rejected_logps.to(dtype)

    log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))  # log(odds_w / odds_l)
    log_sigmoid = F.logsigmoid(log_odds)
    or_losses = -log_sigmoid  # eq. (7)
    nll = chosen_nll.to(dtype).mean()
    loss = nll + beta * or_losses.mean()  # eq. (6)

    chosen_rewards = beta * chosen.detach()
    rejected_rewards = beta * rejected.detach()
    metrics = {
        "nll_loss": nll.detach(),
        "log_odds_ratio": log_sigmoid.detach().mean(),
        "log_odds_chosen": log_odds.detach().mean(),
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).to(dtype).mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "logps/chosen": chosen.detach().mean(),
        "logps/rejected": rejected.detach().mean(),
    }
    return ORPOLoss(loss, or_losses, metrics)
