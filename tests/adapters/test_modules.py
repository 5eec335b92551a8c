"""Hand-written adapter modules checked against direct computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mefn.adapters.modules import (
    AdaptedModule,
    BoneDelta,
    Gate,
    LoRADelta,
    PHMRules,
    ScaleShiftDelta,
    conv_like,
    phm_matrix,
)

GEN = torch.Generator().manual_seed(0)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv3d(4, 6, 3, padding=2, dilation=2, groups=2),
        nn.Conv3d(4, 6, 1, stride=2),
        nn.Conv3d(4, 6, 3, padding=1, padding_mode="circular"),
        nn.ConvTranspose3d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
        nn.ConvTranspose3d(4, 6, 2, stride=2),
    ],
)
def test_lora_delta_weight_equals_the_low_rank_path(conv: nn.Module) -> None:
    delta = LoRADelta(conv, rank=3, alpha=6.0, dora=False, dropout=0.0, generator=GEN)
    with torch.no_grad():
        delta.lora_b.normal_(generator=GEN)
    xin = torch.randn(2, 4, 5, 6, 7, generator=GEN)
    low_rank = delta(xin, conv)
    full = conv_like(conv, xin, delta.lora_delta_weight(conv))
    torch.testing.assert_close(low_rank, full, atol=1e-5, rtol=1e-5)
    assert delta.lora_a.shape[0 if isinstance(conv, nn.Conv3d) else 1] % conv.groups == 0


def test_dora_keeps_the_magnitude_per_output_channel() -> None:
    conv = nn.Conv3d(3, 5, 3)
    delta = LoRADelta(conv, rank=2, alpha=2.0, dora=True, dropout=0.0, generator=GEN)
    with torch.no_grad():
        delta.lora_b.normal_(generator=GEN)
        delta.magnitude.copy_(torch.arange(1.0, 6.0))
    adapted = delta.adapted_weight(conv)
    norms = torch.linalg.vector_norm(adapted.reshape(5, -1), dim=1)
    torch.testing.assert_close(norms, torch.arange(1.0, 6.0))


def test_bone_block_affine_by_hand() -> None:
    conv = nn.Conv3d(4, 4, 1, bias=False)
    delta = BoneDelta(conv, block=2)
    b0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b1 = torch.tensor([[0.5, 0.0], [0.0, -1.0]])
    with torch.no_grad():
        delta.blocks.copy_(torch.stack([b0, b1]))
    w = conv.weight.detach().reshape(4, 4)
    dw = delta.delta_weight(conv).reshape(4, 4)
    for i, b in enumerate((b0, b1)):
        for j in range(2):
            tile = w[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            torch.testing.assert_close(dw[2 * i : 2 * i + 2, 2 * j : 2 * j + 2], tile @ b + b)


def test_bone_leaves_trailing_columns_unchanged() -> None:
    conv = nn.Conv3d(1, 4, 3)  # matrix 4 x 27: 27 = 6 blocks of 4 + 3 left over
    delta = BoneDelta(conv, block=4)
    with torch.no_grad():
        delta.blocks.fill_(0.3)
    dw = delta.delta_weight(conv).reshape(4, 27)
    assert torch.all(dw[:, 24:] == 0) and torch.all(dw[:, :24] != 0)


def test_phm_matrix_is_a_sum_of_kronecker_products() -> None:
    rules = torch.randn(3, 3, 3, generator=GEN)
    s = torch.randn(3, 2, 2, generator=GEN)
    t = torch.randn(3, 4, 2, generator=GEN)
    expected = sum(torch.kron(rules[i], s[i] @ t[i].T) for i in range(3))
    torch.testing.assert_close(phm_matrix(rules, s, t), expected)
    assert PHMRules(4, GEN).weight.shape == (4, 4, 4)


def test_gates_start_at_one_and_have_their_granularity() -> None:
    d = torch.randn(2, 3, 4, 5, 6, generator=GEN)
    for granularity in ("voxel", "channel", "sample"):
        gate = Gate(3, granularity)
        assert torch.equal(gate(d), d)
    gate = Gate(3, "voxel")
    with torch.no_grad():
        gate.weight.copy_(torch.tensor([1.0, -1.0, 0.5]))
    g = gate(d) / d
    expected = 2 * torch.sigmoid(torch.einsum("bcxyz,c->bxyz", d, gate.weight))
    torch.testing.assert_close(g, expected.unsqueeze(1).expand_as(d))
    sample = Gate(3, "sample")
    with torch.no_grad():
        sample.weight.fill_(1.0)
    ratio = (sample(d) / d).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1])  # one value per sample
    assert Gate(3, "voxel").static_scale() is None
    torch.testing.assert_close(Gate(3, "channel").static_scale(), torch.ones(3))


def test_scale_shift_merges_into_affine_norm_but_not_into_plain_norm() -> None:
    norm = nn.InstanceNorm3d(3, affine=True)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        norm.bias.copy_(torch.tensor([0.5, 0.0, -0.5]))
    delta = ScaleShiftDelta(3, shift=True)
    with torch.no_grad():
        delta.scale.copy_(torch.tensor([2.0, 1.0, 0.5]))
        delta.shift.copy_(torch.tensor([1.0, 1.0, 1.0]))
    dw, db = delta.merge_delta(norm)
    torch.testing.assert_close(dw, torch.tensor([1.0, 0.0, -1.5]))
    torch.testing.assert_close(db, torch.tensor([1.5, 1.0, 1.25]))
    assert delta.merge_delta(nn.InstanceNorm3d(3)) is None
    wrapped = AdaptedModule(nn.InstanceNorm3d(3), delta, "sequential")
    xin = torch.randn(1, 3, 4, 5, 6, generator=GEN)
    expected = F.instance_norm(xin) * delta.scale.reshape(1, 3, 1, 1, 1) + 1.0
    torch.testing.assert_close(wrapped(xin), expected)
