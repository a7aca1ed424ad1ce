"""train.loss: hand-worked numbers, log1mexp accuracy, and parity with trl's ORPO loss (which this pins)."""

import math
from types import SimpleNamespace

import pytest
import torch

from orpo_deploy.train.loss import log1mexp, orpo_loss


def test_hand_worked_example():
    # ℓc = -0.5, ℓr = -1.0, λ = 0.1, NLL = 0.5.
    # P_c = e^-0.5 = 0.606531, odds_c = 0.606531 / 0.393469 -> log odds_c = -0.5 - ln(0.393469) = 0.432752
    # P_r = e^-1   = 0.367879, odds_r = 0.367879 / 0.632121 -> log odds_r = -1.0 - ln(0.632121) = -0.541325
    # log odds ratio = 0.432752 + 0.541325 = 0.974077
    # log σ(0.974077) = -ln(1 + e^-0.974077) = -ln(1.377541) = -0.320300   -> L_OR = 0.320300 (eq. 7)
    # loss = NLL + λ L_OR = 0.5 + 0.0320300 = 0.532030 (eq. 6)
    # rewards: chosen λℓc = -0.05, rejected λℓr = -0.10, margin 0.05, accuracy 1
    out = orpo_loss(torch.tensor([-0.5]), torch.tensor([-1.0]), torch.tensor(0.5), beta=0.1)
    assert out.loss.item() == pytest.approx(0.532030, abs=1e-6)
    assert out.or_losses.item() == pytest.approx(0.320300, abs=1e-6)
    m = {k: v.item() for k, v in out.metrics.items()}
    assert m["log_odds_chosen"] == pytest.approx(0.974077, abs=1e-6)
    assert m["log_odds_ratio"] == pytest.approx(-0.320300, abs=1e-6)
    assert m["nll_loss"] == pytest.approx(0.5)
    assert m["rewards/chosen"] == pytest.approx(-0.05)
    assert m["rewards/rejected"] == pytest.approx(-0.10)
    assert m["rewards/margins"] == pytest.approx(0.05)
    assert m["rewards/accuracies"] == 1.0


def test_beta_zero_is_plain_sft():
    out = orpo_loss(torch.tensor([-0.2, -3.0]), torch.tensor([-0.1, -0.5]), torch.tensor(1.25), beta=0.0)
    assert out.loss.item() == pytest.approx(1.25)


def test_log1mexp_is_accurate_at_both_ends():
    x = torch.tensor([-1e-10, -1e-4, -0.5, -math.log(2), -1.0, -20.0, -60.0], dtype=torch.float64)
    expected = [math.log(-math.expm1(v)) if v > -math.log(2) else math.log1p(-math.exp(v)) for v in x.tolist()]
    assert log1mexp(x).tolist() == pytest.approx(expected, rel=1e-12)
    # near 0 in float32 the naive log(1 - exp(x)) is -inf (exp rounds to 1); log1mexp keeps the digits
    x32 = torch.tensor([-1e-8])
    assert torch.isinf(torch.log(1 - torch.exp(x32))).item()
    assert log1mexp(x32).item() == pytest.approx(math.log(1e-8), rel=1e-5)


def test_gradient_is_finite_and_prefers_chosen():
    chosen = torch.tensor([-0.7, -2.0], requires_grad=True)
    rejected = torch.tensor([-0.9, -1.5], requires_grad=True)
    orpo_loss(chosen, rejected, torch.tensor(0.0), beta=1.0).loss.backward()
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # descent raises ℓc and lowers ℓr (eq. 8)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="two \\(B,\\) tensors"):
        orpo_loss(torch.zeros(2, 1) - 1, torch.zeros(2, 1) - 1, torch.tensor(0.0))


@pytest.mark.parametrize("beta", [0.1, 0.25, 1.0])
def test_parity_with_trl_odds_ratio_loss(beta, monkeypatch):
    """Pins trl.experimental.orpo: same per-pair loss, rewards and logged metrics on random inputs."""
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.orpo import ORPOTrainer

    torch.manual_seed(0)
    chosen = -torch.rand(64, dtype=torch.float64) * 4 - 1e-3  # length-averaged log-probs in (-4, 0)
    rejected = -torch.rand(64, dtype=torch.float64) * 4 - 1e-3
    nll = torch.tensor(1.7, dtype=torch.float64)
    fake_self = SimpleNamespace(beta=beta, accelerator=SimpleNamespace(device=torch.device("cpu")))
    losses, chosen_rewards, rejected_rewards, log_odds_ratio, log_odds_chosen = ORPOTrainer.odds_ratio_loss(
        fake_self, chosen.float(), rejected.float()
    )
    ours = orpo_loss(chosen.float(), rejected.float(), nll.float(), beta=beta)

    # trl: loss = policy_nll_loss - losses.mean(), with losses = beta * logsigmoid(log_odds)
    torch.testing.assert_close(ours.loss, (nll.float() - losses.mean()), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(-beta * ours.or_losses, losses, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.metrics["log_odds_ratio"], log_odds_ratio, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.metrics["log_odds_chosen"], log_odds_chosen, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.metrics["rewards/chosen"], chosen_rewards.mean())
    torch.testing.assert_close(ours.metrics["rewards/rejected"], rejected_rewards.mean())
    accuracies = (chosen_rewards > rejected_rewards).float().mean()
    torch.testing.assert_close(ours.metrics["rewards/accuracies"], accuracies)
