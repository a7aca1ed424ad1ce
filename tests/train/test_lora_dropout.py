"""LoRA dropout fused into lora_A (train/lora_dropout.py): its masks, its gradients, and peft models fused in place."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from orpo_deploy.train.lora_dropout import DropoutLinear, _DropoutLinearFn, fuse_lora_dropout, keep_mask

CPU = torch.device("cpu")


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_keep_mask_rate_and_seed(p):
    mask = keep_mask((1000, 1001), p, seed=3, device=CPU)  # odd size: the last word is partly used
    expected = 1 - round(p * 65536) / 65536
    # 1e6 Bernoulli draws: the standard error of the rate is <= 5e-4, so 3e-3 is 6 sigma
    assert abs(mask.float().mean().item() - expected) < 3e-3
    # every int16 lane of the 64-bit words, the sign lane included, drops at the same rate
    lanes = mask.flatten()[: 1000 * 1000].view(-1, 4).float().mean(0)
    assert torch.allclose(lanes, torch.full((4,), expected), atol=3e-3), lanes
    assert torch.equal(mask, keep_mask((1000, 1001), p, seed=3, device=CPU))
    assert not torch.equal(mask, keep_mask((1000, 1001), p, seed=4, device=CPU))


def test_keep_mask_columns_are_not_correlated():
    """Neighbouring elements come from one 64-bit word: their drops must still be independent."""
    mask = ~keep_mask((250_000, 4), 0.5, seed=11, device=CPU)
    both = (mask[:, :-1] & mask[:, 1:]).float().mean().item()
    assert abs(both - 0.25) < 5e-3  # P(drop, drop) = p^2 if independent; SE ~ 9e-4


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.mark.parametrize("device", DEVICES)
def test_fused_dropout_linear_is_linear_of_masked_input(device):
    """Output and both gradients equal autograd through ``linear(x * keep / (1 - p), W)`` with the same mask."""
    torch.manual_seed(0)
    x = torch.randn(3, 5, 7, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(4, 7, dtype=torch.float64, device=device, requires_grad=True)
    p, seed = 0.3, 1234
    out = _DropoutLinearFn.apply(x, w, p, seed)
    keep = keep_mask(x.shape, p, seed, x.device)
    assert 0 < (~keep).sum() < keep.numel()  # some dropped, some kept
    expected = nn.functional.linear(x * keep / (1 - p), w)
    torch.testing.assert_close(out, expected)
    g = torch.randn_like(out)
    torch.testing.assert_close(torch.autograd.grad(out, (x, w), g), torch.autograd.grad(expected, (x, w), g))
    assert torch.autograd.gradcheck(lambda a, b: _DropoutLinearFn.apply(a, b, p, seed), (x, w))


def test_fused_dropout_linear_under_bf16_autocast():
    """Like an autocast linear: bf16 matmul, bf16 output, gradients in the inputs' own (fp32) dtypes."""
    torch.manual_seed(0)
    x = torch.randn(6, 32, requires_grad=True)
    w = torch.randn(8, 32, requires_grad=True)
    keep = keep_mask(x.shape, 0.1, 7, CPU)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = _DropoutLinearFn.apply(x, w, 0.1, 7)
        expected = nn.functional.linear(x * keep, w) / 0.9
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected.float(), rtol=2e-2, atol=2e-2)
    gx, gw = torch.autograd.grad(out.float().sum(), (x, w))
    ex, ew = torch.autograd.grad(expected.float().sum(), (x, w))
    assert gx.dtype == gw.dtype == torch.float32
    torch.testing.assert_close(gx, ex, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gw, ew, rtol=2e-2, atol=5e-2)


def test_dropout_linear_draws_from_the_global_seed_and_is_identity_in_eval():
    torch.manual_seed(0)
    layer = nn.Linear(16, 4, bias=False)
    layer.__class__ = DropoutLinear
    layer.p = 0.25
    x = torch.randn(8, 16)
    torch.manual_seed(5)
    a = layer(x)
    torch.manual_seed(5)
    b = layer(x)
    c = layer(x)  # the generator moved on: another mask
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    layer.eval()
    torch.testing.assert_close(layer(x), x @ layer.weight.T)


def tiny_lora_model(lora_dropout: float, use_dora: bool = False):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2,
    )  # fmt: skip
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=lora_dropout, target_modules="all-linear", use_dora=use_dora)
    model = get_peft_model(LlamaForCausalLM(config), lora)
    with torch.no_grad():  # B starts at 0 in peft: make the LoRA branch matter
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    return model


def test_fuse_lora_dropout_on_a_peft_model(tmp_path):
    model = tiny_lora_model(lora_dropout=0.2)
    ids = torch.randint(0, 64, (2, 9))
    model.eval()
    before = model(ids).logits
    keys = set(model.state_dict())
    assert fuse_lora_dropout(model) == 2 * 7  # q k v o gate up down per layer
    assert fuse_lora_dropout(model) == 0  # already fused: nothing left to move
    assert set(model.state_dict()) == keys  # the adapter saves and loads as before
    torch.testing.assert_close(model(ids).logits, before)  # eval: no dropout either way
    model.train()
    torch.manual_seed(1)
    a = model(ids).logits
    torch.manual_seed(1)
    b = model(ids).logits
    torch.testing.assert_close(a, b)  # masks follow torch.manual_seed
    assert not torch.allclose(a, before)  # and dropout acts in training
    a.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_A" in n)
    model.save_pretrained(tmp_path)  # peft's own save path, with the swapped class
    assert (tmp_path / "adapter_model.safetensors").is_file()


def test_fuse_skips_dora_and_zero_dropout():
    assert fuse_lora_dropout(tiny_lora_model(lora_dropout=0.0)) == 0  # peft already uses an identity
    assert fuse_lora_dropout(tiny_lora_model(lora_dropout=0.1, use_dora=True)) == 0  # DoRA reads lora_A.weight
