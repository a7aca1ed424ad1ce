"""The lean ORPO forward (train/lean_logps.py + LeanORPOTrainer) against naive logits and trl's own forward.

Tolerances (fp32 unless said): per-token log-probs and their gradients vs a full log_softmax + gather: 1e-12 in fp64;
loss, nll_loss, log_odds_ratio and every logged metric vs trl's forward: rtol 1e-5 (atol 1e-6); LoRA gradients:
rtol 1e-5 with atol 1e-5 x the largest gradient of the tensor (measured: within 7.5e-7 of it; metrics bit-equal but
the mean logits, 6e-7 relative).
"""

import os

import pytest
import torch
from test_training import tiny_config
from torch import nn

from orpo_deploy.core.models import resolve_model
from orpo_deploy.train.lean_logps import LeanForwardError, label_logps, orpo_sequence_logps

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def naive_logps(hidden, weight, bias, targets):
    logits = hidden @ weight.T + (0 if bias is None else bias)
    return torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)


@pytest.mark.parametrize("chunk_size", [1, 4, 13, 64])  # 13 and 4 do not divide N = 26; 64 > N
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_label_logps_match_full_logits(chunk_size, with_bias):
    gen = torch.Generator().manual_seed(chunk_size)
    n, h, v = 26, 8, 37
    hidden = torch.randn(n, h, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, generator=gen, dtype=torch.float64, requires_grad=True) if with_bias else None
    targets = torch.randint(0, v, (n,), generator=gen)
    upstream = torch.randn(n, generator=gen, dtype=torch.float64)  # a non-uniform incoming gradient
    inputs = [t for t in (hidden, weight, bias) if t is not None]

    got = label_logps(hidden, weight, bias, targets, chunk_size)
    got_grads = torch.autograd.grad((got * upstream).sum(), inputs)
    expected = naive_logps(hidden, weight, bias, targets)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), inputs)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for a, b in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # a frozen head (the LoRA case) takes the precomputed-gradient path alone
    frozen = label_logps(hidden, weight.detach(), None if bias is None else bias.detach(), targets, chunk_size)
    (grad_h,) = torch.autograd.grad((frozen * upstream).sum(), hidden)
    torch.testing.assert_close(grad_h, expected_grads[0], rtol=1e-12, atol=1e-12)


def test_sequence_logps_use_trls_positions():
    """Padding, prompt (-100) and rejected positions are handled as trl does, in plain tensor terms."""
    gen = torch.Generator().manual_seed(0)
    b, t, h, v = 2, 7, 6, 11
    hidden = torch.randn(2 * b, t, h, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, h, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, v, (2 * b, t), generator=gen)
    mask = torch.ones(2 * b, t, dtype=torch.long)
    mask[1, 5:] = 0  # a padded chosen row
    mask[3, 4:] = 0  # a padded rejected row
    labels = torch.where(mask == 1, ids, -100)
    labels[:, :3] = -100  # a 3-token prompt

    out = orpo_sequence_logps(hidden, weight, None, ids, mask, labels, n_chosen=b, chunk_size=3)
    per_token = naive_logps(hidden[:, :-1], weight, None, ids[:, 1:])  # (2B, T-1), position t predicts t+1
    response = labels[:, 1:] != -100
    seq = (per_token * response).sum(-1) / response.sum(-1)
    nll = torch.nn.functional.cross_entropy(
        (hidden[:b, :-1] @ weight.T).reshape(-1, v), torch.where(mask[:b, 1:] == 1, ids[:b, 1:], -100).reshape(-1)
    )
    torch.testing.assert_close(out.chosen_logps, seq[:b], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.rejected_logps, seq[b:], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.chosen_nll, nll, rtol=1e-12, atol=1e-12)
    all_logits = hidden.detach() @ weight.T
    torch.testing.assert_close(out.chosen_mean_logit, all_logits[:b, :-1].mean(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.rejected_mean_logit, all_logits[b:, :-1].mean(), rtol=1e-12, atol=1e-12)
    loss = out.chosen_nll + out.chosen_logps.sum() - out.rejected_logps.sum()
    expected_loss = nll + seq[:b].sum() - seq[b:].sum()
    torch.testing.assert_close(*(torch.autograd.grad(x, hidden)[0] for x in (loss, expected_loss)))


def build(tmp_path, orpo_forward: str, **overrides):
    from transformers import AutoTokenizer

    from orpo_deploy.train.pipeline import load_pairs, prepare_pairs
    from orpo_deploy.train.trainer import build_trainer

    settings = {"orpo_forward": orpo_forward, "lora_dropout": 0.0, "logit_chunk_size": 50, **overrides}
    cfg = tiny_config(tmp_path, **settings)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model))
    pairs, _ = prepare_pairs(load_pairs(cfg.dataset, "train"), tokenizer, cfg, None)
    trainer, _ = build_trainer(cfg, resolve_model(cfg.model), tokenizer, pairs)
    return trainer


def randomize_lora_b(model, seed: int = 1) -> None:
    """peft starts every B at 0, which would leave every lora_A gradient at 0."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)


@pytest.fixture(scope="module")
def stock_and_lean(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("lean")
    stock, lean = build(tmp_path, "trl"), build(tmp_path, "lean")
    assert not hasattr(stock, "lean") and lean.lean
    randomize_lora_b(stock.model)
    lean.model.load_state_dict(stock.model.state_dict())
    rows = [stock.train_dataset[i] for i in range(4)]  # row 0 has the truncated 200-sentence prompt
    batch = stock._prepare_inputs(stock.data_collator(rows))
    assert batch["chosen_input_ids"].shape[1] != batch["rejected_input_ids"].shape[1]  # padding is exercised
    return stock, lean, batch


def loss_metrics_grads(trainer, batch, train_eval="train"):
    trainer.model.train()
    trainer.model.zero_grad()
    loss, metrics = trainer.get_batch_loss_metrics(trainer.model, batch, train_eval=train_eval)
    if train_eval == "eval":
        return loss, metrics, {}
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return loss.detach(), metrics, grads


def test_lean_loss_metrics_and_lora_gradients_equal_trls(stock_and_lean):
    stock, lean, batch = stock_and_lean
    stock_loss, stock_metrics, stock_grads = loss_metrics_grads(stock, batch)
    lean_loss, lean_metrics, lean_grads = loss_metrics_grads(lean, batch)
    torch.testing.assert_close(lean_loss, stock_loss, rtol=1e-5, atol=1e-6)
    assert set(lean_metrics) == set(stock_metrics) >= {"nll_loss", "log_odds_ratio", "logits/chosen", "logps/chosen"}
    for key, value in stock_metrics.items():
        assert lean_metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert set(lean_grads) == set(stock_grads) and any("lora_A" in n for n in stock_grads)
    for name, grad in stock_grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(lean_grads[name], grad, rtol=1e-5, atol=1e-5 * float(grad.abs().max()))


def test_lean_eval_metrics_equal_trls(stock_and_lean):
    stock, lean, batch = stock_and_lean
    with torch.no_grad():
        stock_loss, stock_metrics, _ = loss_metrics_grads(stock, batch, "eval")
        lean_loss, lean_metrics, _ = loss_metrics_grads(lean, batch, "eval")
    torch.testing.assert_close(lean_loss, stock_loss, rtol=1e-5, atol=1e-6)
    assert set(lean_metrics) == set(stock_metrics) and "eval_logits/rejected" in lean_metrics
    for key, value in stock_metrics.items():
        assert lean_metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def saved_for_backward_bytes(trainer, batch) -> int:
    """Bytes of the distinct storages autograd keeps for backward during one forward (deterministic, unlike RSS)."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        trainer.get_batch_loss_metrics(trainer.model, batch)
    return sum(storages.values())


def test_lean_keeps_no_full_vocabulary_tensor_for_backward(stock_and_lean):
    stock, lean, batch = stock_and_lean
    rows, length = 2 * batch["chosen_input_ids"].shape[0], batch["chosen_input_ids"].shape[1]
    full_logits = rows * length * stock.model.config.vocab_size * 4
    stock_bytes, lean_bytes = saved_for_backward_bytes(stock, batch), saved_for_backward_bytes(lean, batch)
    assert stock_bytes > full_logits  # trl keeps at least the logits
    assert lean_bytes < full_logits / 4 and lean_bytes < stock_bytes / 4, (lean_bytes, stock_bytes)


def test_lean_refuses_an_adapted_lm_head(tmp_path):
    with pytest.raises(LeanForwardError, match="plain nn.Linear LM head"):
        build(tmp_path, "lean", lora_target_modules=["q_proj", "lm_head"])


class CappedLogits(nn.Module):
    """A toy causal LM whose logits are soft-capped after the head, like Gemma's final_logit_softcapping."""

    def __init__(self, post) -> None:
        super().__init__()
        self.embed = nn.Embedding(16, 4)
        self.lm_head = nn.Linear(4, 16, bias=False)
        self.post = post

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(self, ids, use_cache=False):
        return type("Out", (), {"logits": self.post(self.lm_head(self.embed(ids)))})


def test_lean_refuses_logits_capped_after_the_head():
    from orpo_deploy.train.trainer import check_lean_forward

    model = CappedLogits(torch.tanh)
    with pytest.raises(LeanForwardError, match="logits are not lm_head"):
        check_lean_forward(model)
    assert type(model.lm_head) is nn.Linear  # the probe put the head back
    # a constant scale after the head (Granite's logits_scaling) lands on the hidden states: exact, accepted
    check_lean_forward(CappedLogits(lambda logits: logits / 8.0))
