"""ORPO's log-probabilities from the final hidden states, in chunks of tokens (torch only).

trl's ORPO forward materialises the logits of every position of chosen and rejected, ``[2B, T, V]`` (V = 49,152 for
SmolLM2), then log-softmax copies of them for the NLL and for the sequence log-probs, all kept for backward. ORPO
only needs one number per supervised position: the log-prob of its label. :func:`label_logps` gets it from the hidden
states ``[N, H]`` and the LM head weight ``[V, H]``, ``chunk_size`` positions at a time, so the largest temporary is
``[chunk_size, V]`` whatever the batch and length.

Backward without the logits: ``d logp_i / d h_i = W[y_i] - p_i @ W`` (``p_i`` = softmax of row i) is an ``[H]``
vector, so the forward pass stores it per position (``[N, H]``, the size of the hidden states) while the chunk's
probabilities are at hand, and backward only scales it by the incoming gradient: one matmul fewer than recomputing
the chunk. A trainable LM head (``W`` needs its gradient, which depends on every ``p_i``) recomputes each chunk's
logits in backward instead. Logits are computed in fp32 (fp64 inputs stay fp64) even under autocast: the log-odds
of two nearby likelihoods is the quantity ORPO differentiates.

:func:`orpo_sequence_logps` applies it at exactly the positions trl's ``concatenated_forward`` uses
(trl.experimental.orpo, trl 1.16): the chosen NLL is a token mean over every non-padding next token of the chosen
sequences (prompt included), the sequence log-probs are per-sequence means over the response labels (``!= -100``),
and the logged ``logits/chosen|rejected`` is the mean logit over all ``[:, :-1]`` positions and the whole vocabulary,
which equals ``h @ mean_v(W) + mean(b)`` and so needs no logits either. ``tests/train/test_lean_orpo.py`` pins all
of it to trl's forward.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from orpo_deploy.core.errors import UsageError

IGNORE_INDEX = -100


class LeanForwardError(UsageError):
    """A model or batch the lean forward cannot handle exactly; the message says to use ``orpo_forward: trl``."""


class _ChunkedLabelLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, grad_hidden, grad_head):
        with torch.autocast(hidden.device.type, enabled=False):
            dtype = torch.promote_types(hidden.dtype, torch.float32)
            w = weight.to(dtype)
            b = None if bias is None else bias.to(dtype)
            n = hidden.shape[0]
            out = torch.empty(n, dtype=dtype, device=hidden.device)
            dlogp_dh = torch.empty(hidden.shape, dtype=dtype, device=hidden.device) if grad_hidden else None
            lse_all = torch.empty(n, dtype=dtype, device=hidden.device) if grad_head else None
            for start in range(0, n, chunk_size):
                rows = slice(start, start + chunk_size)
                h, y = hidden[rows].to(dtype), targets[rows]
                logits = h @ w.T if b is None else torch.addmm(b, h, w.T)
                target_logit = logits.gather(1, y[:, None]).squeeze(1)
                # logsumexp by hand, in place on the one [chunk, V] buffer (torch.logsumexp allocates another)
                top = logits.amax(dim=1, keepdim=True)
                probs = logits.sub_(top).exp_()
                total = probs.sum(dim=1, keepdim=True)
                lse = (top + total.log()).squeeze(1)
                out[rows] = target_logit - lse
                if grad_hidden:
                    probs.div_(total)
                    dlogp_dh[rows] = w[y] - probs @ w
                if grad_head:
                    lse_all[rows] = lse
        ctx.chunk_size = chunk_size
        ctx.hidden_dtype = hidden.dtype
        ctx.has_bias = bias is not None
        ctx.save_for_backward(
            dlogp_dh,
            hidden if grad_head else None,
            weight if grad_head else None,
            bias if grad_head else None,
            targets if grad_head else None,
            lse_all,
        )
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        dlogp_dh, hidden, weight, bias, targets, lse_all = ctx.saved_tensors
        grad_h = grad_w = grad_b = None
        if dlogp_dh is not None:
            grad_h = (dlogp_dh * grad_out.to(dlogp_dh.dtype)[:, None]).to(ctx.hidden_dtype)
        if weight is not None:  # a trainable head: recompute each chunk's probabilities
            with torch.autocast(grad_out.device.type, enabled=False):
                dtype = lse_all.dtype
                w = weight.to(dtype)
                b = None if bias is None else bias.to(dtype)
                g = grad_out.to(dtype)
                grad_w = torch.zeros_like(w)
                grad_b = torch.zeros(w.shape[0], dtype=dtype, device=w.device) if ctx.has_bias else None
                for start in range(0, hidden.shape[0], ctx.chunk_size):
                    rows = slice(start, start + ctx.chunk_size)
                    h, y, gc = hidden[rows].to(dtype), targets[rows], g[rows]
                    logits = h @ w.T if b is None else torch.addmm(b, h, w.T)
                    # d logp_i / d logits_i = onehot(y_i) - p_i, scaled by the incoming gradient
                    dlogits = logits.sub_(lse_all[rows, None]).exp_().mul_(-gc[:, None])
                    dlogits[torch.arange(len(y), device=y.device), y] += gc
                    grad_w.addmm_(dlogits.T, h)
                    if grad_b is not None:
                        grad_b += dlogits.sum(0)
                grad_w = grad_w.to(weight.dtype)
                grad_b = None if grad_b is None else grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None, None


def label_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    targets: torch.Tensor,
    chunk_size: int = 512,
) -> torch.Tensor:
    """``log_softmax(hidden @ weight.T + bias)[i, targets[i]]`` without the ``[N, V]`` logits.

    Args:
        hidden: (N, H) final hidden states (after the model's last norm).
        weight: (V, H) the LM head weight; bias: (V,) or None.
        targets: (N,) int64 label of each row, all in ``[0, V)``.
        chunk_size: rows per chunk; the largest temporary is ``[chunk_size, V]`` in fp32.

    Returns:
        (N,) log-probs in fp32 (fp64 for fp64 inputs), differentiable w.r.t. ``hidden``, ``weight`` and ``bias``.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"expected hidden (N, H) and weight (V, H), got {tuple(hidden.shape)}, {tuple(weight.shape)}")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets must be ({hidden.shape[0]},), got {tuple(targets.shape)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    grad_enabled = torch.is_grad_enabled()  # forward() runs with grad off, so decide here what backward needs
    grad_hidden = grad_enabled and hidden.requires_grad
    grad_head = grad_enabled and (weight.requires_grad or (bias is not None and bias.requires_grad))
    return _ChunkedLabelLogps.apply(hidden, weight, bias, targets, chunk_size, grad_hidden, grad_head)


class SequenceLogps(NamedTuple):
    chosen_logps: torch.Tensor  # (B,) mean log-prob of the chosen response tokens; differentiable
    rejected_logps: torch.Tensor  # (B,) the same for rejected
    chosen_nll: torch.Tensor  # () token-mean NLL of the chosen sequences, prompt included (trl's nll_loss)
    chosen_mean_logit: torch.Tensor  # () detached: mean over chosen[:, :-1] positions and the vocabulary
    rejected_mean_logit: torch.Tensor  # () detached: the same for rejected


def orpo_sequence_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    n_chosen: int,
    chunk_size: int = 512,
) -> SequenceLogps:
    """trl's ORPO quantities for a concatenated batch (chosen rows first), from hidden states.

    Args:
        hidden: (2B, T, H) final hidden states of ``concatenated_input_ids``.
        weight, bias: the LM head, (V, H) and (V,) or None.
        input_ids, attention_mask: (2B, T) trl's ``concatenated_input_ids`` / ``_attention_mask``.
        labels: (2B, T) trl's ``concatenated_labels`` (prompt and padding = -100).
        n_chosen: B, the number of chosen rows at the top.
        chunk_size: positions per chunk (see :func:`label_logps`).
    """
    next_ids, next_labels = input_ids[:, 1:], labels[:, 1:]  # position t predicts token t + 1
    is_chosen = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None] < n_chosen
    nll_mask = (attention_mask[:, 1:] == 1) & is_chosen
    logp_mask = next_labels != IGNORE_INDEX
    # One log-prob per position serves both terms: trl's labels are the input ids with the prompt masked out.
    if (nll_mask & logp_mask & (next_labels != next_ids)).any():
        raise LeanForwardError("labels differ from input_ids at supervised positions; use orpo_forward: trl")
    needed = nll_mask | logp_mask
    targets = torch.where(logp_mask, next_labels, next_ids)[needed]
    h = hidden[:, :-1]
    token_logps = label_logps(h[needed], weight, bias, targets, chunk_size)
    per_position = torch.zeros(needed.shape, dtype=token_logps.dtype, device=token_logps.device)
    per_position = per_position.masked_scatter(needed, token_logps)  # row-major, the order h[needed] used

    seq_logps = (per_position * logp_mask).sum(-1) / logp_mask.sum(-1)
    nll = -(per_position * nll_mask).sum() / nll_mask.sum()
    with torch.no_grad():
        mean_w = weight.to(token_logps.dtype).mean(0)
        mean_logit = h.to(token_logps.dtype) @ mean_w  # (2B, T-1): each position's logit averaged over V
        if bias is not None:
            mean_logit = mean_logit + bias.to(token_logps.dtype).mean()
    return SequenceLogps(
        chosen_logps=seq_logps[:n_chosen],
        rejected_logps=seq_logps[n_chosen:],
        chosen_nll=nll,
        chosen_mean_logit=mean_logit[:n_chosen].mean(),
        rejected_mean_logit=mean_logit[n_chosen:].mean(),
    )
