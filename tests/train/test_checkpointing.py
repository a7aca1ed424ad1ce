"""Selective activation checkpointing (train/checkpointing.py): same loss and gradients, the intended ops kept.

Tolerance: loss and LoRA gradients with checkpointing (full or selective) vs without: rtol 1e-5, atol 1e-5 x the
largest gradient of the tensor, in fp32 with LoRA dropout on (so the recomputed dropout masks must be the forward's).
"""

import os

import pytest
import torch
from test_lean_orpo import build, randomize_lora_b
from test_training import tiny_config
from torch.utils.checkpoint import CheckpointPolicy

from orpo_deploy.train.checkpointing import MIN_SAVED_INNER_DIM, _policy, checkpointing_kwargs, selective_context
from orpo_deploy.train.config import ConfigError
from orpo_deploy.train.lora_dropout import DropoutLinear

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
aten = torch.ops.aten


def test_policy_keeps_large_matmuls_and_attention_and_recomputes_the_rest():
    x, big, rank = torch.empty(8, 576), torch.empty(576, 1536), torch.empty(16, 576)
    assert _policy(None, aten.mm.default, x, big) is CheckpointPolicy.MUST_SAVE
    assert _policy(None, aten.addmm.default, torch.empty(1536), x, big) is CheckpointPolicy.MUST_SAVE
    # LoRA's up-projection from rank r: (N, r) @ (r, out) is cheaper to redo than its (N, out) output is to keep
    assert 16 < MIN_SAVED_INNER_DIM
    assert _policy(None, aten.mm.default, torch.empty(8, 16), rank) is CheckpointPolicy.PREFER_RECOMPUTE
    flash = aten._scaled_dot_product_flash_attention_for_cpu.default
    assert _policy(None, flash, x, x, x) is CheckpointPolicy.MUST_SAVE
    for op in (aten.silu.default, aten.mul.Tensor, aten.native_dropout.default, aten.rsqrt.default):
        assert _policy(None, op, x) is CheckpointPolicy.PREFER_RECOMPUTE


def test_kwargs_for_transformers(tmp_path):
    assert checkpointing_kwargs("full") == {"use_reentrant": False}
    assert checkpointing_kwargs("selective") == {"use_reentrant": False, "context_fn": selective_context}
    with pytest.raises(ConfigError, match="checkpoint_policy must be one of full, selective"):
        tiny_config(tmp_path, checkpoint_policy="some")


def lean_trainer(tmp_path, **overrides):
    trainer = build(tmp_path, "lean", lora_dropout=0.1, **overrides)
    # the lean path fuses LoRA dropout (train/lora_dropout.py): its masks are what recomputation must redraw
    assert any(isinstance(m, DropoutLinear) for m in trainer.model.modules())
    if trainer.args.gradient_checkpointing:  # what Trainer.train() does before the first step
        trainer.model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs
        )
    return trainer


def loss_and_grads(trainer, batch):
    trainer.model.train()
    trainer.model.zero_grad()
    torch.manual_seed(123)  # the same dropout masks in every run
    loss, _ = trainer.get_batch_loss_metrics(trainer.model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def test_checkpointed_gradients_equal_plain(tmp_path):
    plain = lean_trainer(tmp_path, output_dir=str(tmp_path / "plain"))
    randomize_lora_b(plain.model)
    batch = plain._prepare_inputs(plain.data_collator([plain.train_dataset[i] for i in range(4)]))
    expected_loss, expected = loss_and_grads(plain, batch)
    for policy in ("full", "selective"):
        trainer = lean_trainer(
            tmp_path, output_dir=str(tmp_path / policy), gradient_checkpointing=True, checkpoint_policy=policy
        )
        trainer.model.load_state_dict(plain.model.state_dict())
        assert trainer.model.base_model.model.model.gradient_checkpointing
        loss, grads = loss_and_grads(trainer, batch)
        torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
        assert set(grads) == set(expected) and any("lora_A" in n for n in grads)
        for name, grad in expected.items():
            assert grad.abs().max() > 0, name
            torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-5 * float(grad.abs().max()), msg=name)


def test_selective_checkpointing_trains_saves_and_resumes(tmp_path):
    """The policy travels inside TrainingArguments, which transformers pickles into every checkpoint."""
    from orpo_deploy.train.pipeline import run_training

    cfg = tiny_config(tmp_path, gradient_checkpointing=True, checkpoint_policy="selective", max_steps=2, save_steps=1)
    assert run_training(cfg).is_dir()
    checkpoints = sorted((cfg.run_dir / "checkpoints").glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-1", "checkpoint-2"]
    assert (checkpoints[-1] / "training_args.bin").is_file()
    more = tiny_config(tmp_path, gradient_checkpointing=True, checkpoint_policy="selective", max_steps=3, save_steps=1)
    assert run_training(more, resume=True).is_dir()
    assert (cfg.run_dir / "checkpoints" / "checkpoint-3").is_dir()
