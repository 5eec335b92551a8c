"""The speed options of issue 20: the fused stage's size, channels-last weights, the KL form."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from monai.networks.blocks.dynunet_block import UnetUpBlock

from mefn.config import from_dict, load_config
from mefn.errors import ConfigError, InputError
from mefn.model import ModelConfig, build_loss, build_model
from mefn.model.blocks import ACT, NORM, UpStage
from mefn.model.losses import edl_kl_misleading

REPO = Path(__file__).resolve().parents[2]
TINY = ModelConfig(base_width=4, depth=3, attention_heads=2)


def _x(b: int = 1) -> torch.Tensor:
    torch.manual_seed(3)
    return torch.randn(b, 2, 12, 16, 8)


def test_default_up_stage_has_unet_up_block_keys_and_shapes() -> None:
    ours = UpStage(8, 6, 6, convs=2).state_dict()
    monai = UnetUpBlock(3, 8, 6, 3, 1, 2, norm_name=NORM, act_name=ACT).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in monai.items()}


def test_one_conv_up_stage_is_lighter_and_keeps_its_width() -> None:
    two, one = UpStage(8, 6, 5, convs=2), UpStage(8, 6, 5, convs=1)
    assert sum(p.numel() for p in one.parameters()) < sum(p.numel() for p in two.parameters())
    out = one(torch.randn(1, 8, 3, 4, 2), torch.randn(1, 6, 6, 8, 4))
    assert out.shape == (1, 5, 6, 8, 4)
    with pytest.raises(InputError, match="UpStage takes 1 or 2 convolutions, found 3"):
        UpStage(8, 6, 5, convs=3)


def test_bundled_weights_still_load_strictly() -> None:
    card = json.loads((REPO / "mefn/weights/mefn_default.json").read_text())
    from safetensors.torch import load_file

    model = build_model(from_dict(ModelConfig, card["model"]))
    weights = load_file(str(REPO / "mefn/weights/mefn_default.safetensors"))
    result = model.load_state_dict(weights, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_fast_config_is_the_small_one_with_a_light_fused_stage() -> None:
    small = load_config(ModelConfig, REPO / "configs/model/mefn_small.yaml")
    fast = load_config(ModelConfig, REPO / "configs/model/mefn_fast.yaml")
    assert (fast.fuse_convs, fast.fused_width, fast.channels_last) == (1, 8, True)
    assert fast.fuse_pointwise and not small.fuse_pointwise
    assert (small.fuse_convs, small.fused_width, small.channels_last) == (2, 12, False)
    same = replace(fast, fuse_convs=2, fuse_width=0, channels_last=False, fuse_pointwise=False)
    assert same == small


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"fuse_convs": 3}, r"fuse_convs must be 1 or 2 convolutions, found 3"),
        ({"fuse_width": -1}, r"fuse_width must be >= 0 .*found -1"),
    ],
)
def test_bad_speed_options_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(ModelConfig, values)


def test_pointwise_up_stage_projects_before_its_convolution() -> None:
    plain, pointwise = UpStage(8, 12, 4, convs=1), UpStage(8, 12, 4, convs=1, pointwise=True)
    assert pointwise.project.weight.shape == (4, 16, 1, 1, 1)
    assert pointwise.conv_block.conv.weight.shape == (4, 4, 3, 3, 3)
    assert plain.conv_block.conv.weight.shape == (4, 16, 3, 3, 3)
    assert isinstance(plain.project, torch.nn.Identity)
    out = pointwise(torch.randn(2, 8, 3, 4, 2), torch.randn(2, 12, 6, 8, 4))
    assert out.shape == (2, 4, 6, 8, 4)
    # the default keeps MONAI UnetUpBlock's state-dict keys (bundled weights load)
    assert not any(k.startswith("project") for k in UpStage(8, 6, 6).state_dict())


@pytest.mark.parametrize("pointwise", [False, True])
def test_channels_last_gives_the_same_outputs_and_gradients(pointwise: bool) -> None:
    cfg = replace(TINY, fuse_convs=1, fuse_width=8, fuse_pointwise=pointwise)
    torch.manual_seed(0)
    plain = build_model(cfg)
    fast = build_model(replace(cfg, channels_last=True))
    fast.load_state_dict(plain.state_dict())
    conv = fast.fuse.conv_block.conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last_3d)
    assert not conv.is_contiguous()
    x = _x(2)
    y = (x[:, 1:] > 1.0).long()
    loss_fn = build_loss(cfg)
    grads = []
    for model in (plain, fast):
        out = model(x)
        loss_fn(out, y, x, 3)["loss"].backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(plain(x).alpha, fast(x).alpha, rtol=1e-4, atol=1e-5)
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-3, atol=1e-5, msg=name)


def _kl_general(alpha: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    k = alpha.shape[1]
    a = y + (1.0 - y) * alpha
    s = a.sum(dim=1, keepdim=True)
    log_norm = (
        torch.lgamma(s)
        - torch.lgamma(torch.tensor(float(k), dtype=a.dtype))
        - torch.lgamma(a).sum(dim=1, keepdim=True)
    )
    return log_norm + ((a - 1.0) * (torch.digamma(a) - torch.digamma(s))).sum(1, keepdim=True)


def test_two_class_kl_closed_form_matches_the_general_formula_and_its_gradient() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 2, 5, 6, 7, dtype=torch.float64) * 4
    alpha = (torch.nn.functional.softplus(logits) + 1.0).requires_grad_()
    y = torch.nn.functional.one_hot(torch.randint(0, 2, (3, 5, 6, 7)), 2).movedim(-1, 1).double()
    fast, general = edl_kl_misleading(alpha, y), _kl_general(alpha, y)
    torch.testing.assert_close(fast, general, rtol=1e-10, atol=1e-12)
    (g_fast,) = torch.autograd.grad(fast.sum(), alpha)
    (g_general,) = torch.autograd.grad(general.sum(), alpha)
    torch.testing.assert_close(g_fast, g_general, rtol=1e-7, atol=1e-9)
    assert float(fast.detach().max()) > 0.1  # some voxels carry misleading evidence
