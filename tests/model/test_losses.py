"""Loss terms on hand-computed values, annealing, and the error paths."""

from __future__ import annotations

import math

import pytest
import torch

from mefn.errors import InputError
from mefn.model import ModelConfig, ModelOutput, build_loss
from mefn.model.losses import (
    BaselineLoss,
    EvidentialLoss,
    edl_cross_entropy,
    edl_kl_misleading,
    soft_dice_loss,
    uncertainty_perceptual_loss,
)


def _vox(*alphas: tuple[float, ...]) -> torch.Tensor:
    """(1, K, N) from N per-voxel alpha tuples."""
    return torch.tensor(alphas, dtype=torch.float64).T[None]


def _y(*labels: int, k: int = 2) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(labels), k).T[None].double()


def test_edl_cross_entropy_hand_value() -> None:
    # alpha (2, 1), y = class 0: psi(3) - psi(2) = 1/2
    ce = edl_cross_entropy(_vox((2.0, 1.0)), _y(0))
    assert ce.item() == pytest.approx(0.5)
    # more evidence for the right class lowers it, for the wrong class raises it
    assert edl_cross_entropy(_vox((10.0, 1.0)), _y(0)).item() < 0.5
    assert edl_cross_entropy(_vox((1.0, 10.0)), _y(0)).item() > 0.5


@pytest.mark.parametrize("k", [2, 3])
def test_edl_cross_entropy_one_hot_path_matches_the_sum_and_its_gradient(k: int) -> None:
    torch.manual_seed(2)
    alpha = torch.nn.functional.softplus(torch.randn(2, k, 4, 5, 3).double() * 3) + 1.0
    alpha.requires_grad_()
    labels = torch.randint(0, k, (2, 4, 5, 3))
    y = torch.nn.functional.one_hot(labels, k).movedim(-1, 1).double()
    fast, plain = edl_cross_entropy(alpha, y, one_hot=True), edl_cross_entropy(alpha, y)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)
    (g_fast,) = torch.autograd.grad(fast.sum(), alpha)
    (g_plain,) = torch.autograd.grad(plain.sum(), alpha)
    torch.testing.assert_close(g_fast, g_plain, rtol=1e-12, atol=1e-12)


def test_edl_kl_misleading_hand_values() -> None:
    # the right class's evidence is removed: alpha (5, 1), y = 0 -> Dir(1, 1) -> KL 0
    assert edl_kl_misleading(_vox((5.0, 1.0)), _y(0)).item() == pytest.approx(0.0, abs=1e-12)
    # alpha (1, 3), y = 0: KL(Dir(1,3) || Dir(1,1)) = ln 6 - ln 2 + 2 (psi(3) - psi(4)) = ln 3 - 2/3
    kl = edl_kl_misleading(_vox((1.0, 3.0)), _y(0)).item()
    assert kl == pytest.approx(math.log(3) - 2 / 3)


def test_soft_dice_hand_values() -> None:
    y = _y(0, 1, 1, 0)
    assert soft_dice_loss(y.clone(), y).item() == pytest.approx(0.0, abs=1e-6)
    prob = _vox((0.5, 0.5), (0.5, 0.5), (0.5, 0.5), (0.5, 0.5))
    # foreground: intersection 1.0, sum p 2.0 + sum y 2 -> 1 - 2/4 = 0.5
    assert soft_dice_loss(prob, y).item() == pytest.approx(0.5, abs=1e-5)


def test_uncertainty_loss_rewards_low_u_when_right_and_high_u_when_wrong() -> None:
    y = _y(0)
    right_certain = uncertainty_perceptual_loss(_vox((100.0, 1.0)), y).item()
    right_unsure = uncertainty_perceptual_loss(_vox((1.5, 1.0)), y).item()
    wrong_certain = uncertainty_perceptual_loss(_vox((1.0, 100.0)), y).item()
    wrong_unsure = uncertainty_perceptual_loss(_vox((1.0, 1.5)), y).item()
    assert right_certain < right_unsure
    assert wrong_unsure < wrong_certain
    # hand value, right voxel alpha (3, 1): p = 3/4, u = 2/4 -> -(3/4) ln(1/2)
    assert uncertainty_perceptual_loss(_vox((3.0, 1.0)), y).item() == pytest.approx(
        0.75 * math.log(2)
    )


def _mefn_like_output(alpha: torch.Tensor) -> ModelOutput:
    return ModelOutput(alpha=alpha, alpha_ct=alpha, alpha_pet=alpha, alpha_fused=alpha)


def test_kl_is_annealed_over_epochs() -> None:
    cfg = ModelConfig(base_width=4, depth=3, attention_heads=1)
    loss_fn = EvidentialLoss(cfg)
    alpha = torch.ones(1, 2, 3, 3, 3) + torch.rand(1, 2, 3, 3, 3) * 5
    target = torch.zeros(1, 1, 3, 3, 3, dtype=torch.long)
    images = torch.zeros(1, 2, 3, 3, 3)
    out = _mefn_like_output(alpha)
    first = loss_fn(out, target, images, 0)
    later = loss_fn(out, target, images, cfg.loss.kl_anneal_epochs)
    assert later["kl"].item() > 0
    assert later["loss"].item() > first["loss"].item()
    assert loss_fn(out, target, images, 100)["loss"].item() == pytest.approx(later["loss"].item())
    assert "translation" not in first  # no pseudo images in this output


def test_baseline_loss_is_ce_plus_dice() -> None:
    logits = torch.tensor([[[2.0, -1.0], [0.0, 1.0]]])  # (1, K=2, N=2)
    target = torch.tensor([[[0, 1]]])
    out = BaselineLoss(ModelConfig(architecture="dynunet"))(
        ModelOutput(logits=logits), target, torch.zeros(1, 2, 2), 0
    )
    p0 = torch.softmax(torch.tensor([2.0, 0.0]), 0)[0].item()
    p1 = torch.softmax(torch.tensor([-1.0, 1.0]), 0)[1].item()
    assert out["ce"].item() == pytest.approx(-(math.log(p0) + math.log(p1)) / 2, rel=1e-5)
    q = torch.softmax(logits, 1)[0, 1]  # foreground probabilities
    dice = 1 - (2 * q[1] + 1e-5) / (q.sum() + 1 + 1e-5)
    assert out["dice"].item() == pytest.approx(dice.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(out["ce"].item() + out["dice"].item(), rel=1e-6)


def test_build_loss_picks_by_architecture() -> None:
    assert isinstance(build_loss(ModelConfig()), EvidentialLoss)
    assert isinstance(build_loss(ModelConfig(architecture="dynunet")), BaselineLoss)


def test_target_with_wrong_shape_is_refused() -> None:
    loss_fn = EvidentialLoss(ModelConfig())
    alpha = torch.ones(1, 2, 3, 3, 3)
    with pytest.raises(InputError, match=r"target must be \(B, 1, \*spatial\)"):
        loss_fn(_mefn_like_output(alpha), torch.zeros(1, 3, 3, 3), torch.zeros(1, 2, 3, 3, 3), 0)


def test_target_labels_out_of_range_are_refused() -> None:
    loss_fn = EvidentialLoss(ModelConfig())
    target = torch.full((1, 1, 3, 3, 3), 2)
    with pytest.raises(InputError, match=r"labels must be in 0\.\.1 .* found values 2\.\.2"):
        loss_fn(_mefn_like_output(torch.ones(1, 2, 3, 3, 3)), target, torch.zeros(1, 2, 3, 3, 3), 0)


def test_wrong_output_kind_is_refused() -> None:
    zeros = torch.zeros(1, 1, 2, 2, 2, dtype=torch.long)
    with pytest.raises(InputError, match="needs a MEFN output"):
        EvidentialLoss(ModelConfig())(
            ModelOutput(logits=torch.zeros(1, 2, 2, 2, 2)), zeros, zeros, 0
        )
    with pytest.raises(InputError, match="needs an output with logits"):
        BaselineLoss(ModelConfig(architecture="dynunet"))(ModelOutput(), zeros, zeros, 0)


def test_uncertainty_loss_never_asks_to_withhold_the_right_evidence() -> None:
    # a wrong voxel: true class 0, alpha (2, 5) predicts class 1
    alpha = _vox((2.0, 5.0)).requires_grad_(True)
    uncertainty_perceptual_loss(alpha, _y(0)).backward()
    assert alpha.grad is not None
    assert alpha.grad[0, 0, 0].item() == 0.0  # the true class's evidence is left alone
    assert alpha.grad[0, 1, 0].item() > 0.0  # the misleading evidence is pushed down
    # hand value: p = 5/7, u_wrong = 2 / (2 + 5) -> -(5/7) ln(2/7)
    value = uncertainty_perceptual_loss(_vox((2.0, 5.0)), _y(0)).item()
    assert value == pytest.approx(-(5 / 7) * math.log(2 / 7))
