"""MEFN and the baselines: shapes on odd sizes, determinism, gradient flow, switches, infer."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from mefn.errors import InputError
from mefn.model import MEFN, DynUNetBaseline, ModelConfig, build_loss, build_model, pad_to_divisor

TINY = ModelConfig(base_width=4, depth=3, attention_heads=2)  # branches 2-4-8, divisor 4


def _case(
    shape: tuple[int, int, int] = (33, 34, 35), batch: int = 1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2, *shape, generator=g)
    y = (torch.rand(batch, 1, *shape, generator=g) > 0.8).long()
    return x, y


def test_mefn_shapes_and_dtypes_on_odd_sizes_with_padding() -> None:
    torch.manual_seed(0)
    model = build_model(TINY)
    assert isinstance(model, MEFN) and model.size_divisor == 4
    x, _ = _case()
    padded, crop = pad_to_divisor(x, model.size_divisor)
    assert padded.shape[2:] == (36, 36, 36)
    out = model(padded)
    full = (1, 2, 36, 36, 36)
    for name in ("alpha", "alpha_ct", "alpha_pet", "alpha_fused", "belief"):
        tensor = getattr(out, name)
        assert tensor.shape == full and tensor.dtype == torch.float32, name
        if name != "belief":
            assert bool((tensor >= 1).all()), name
    assert out.uncertainty is not None and out.uncertainty.shape == (1, 1, 36, 36, 36)
    assert out.pseudo_ct is not None and out.pseudo_ct.shape == (1, 1, 36, 36, 36)
    assert out.pseudo_pet is not None and out.pseudo_pet.shape == (1, 1, 36, 36, 36)
    assert out.logits is None
    total = out.belief.sum(1, keepdim=True) + out.uncertainty
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    prob = out.probabilities()[crop]
    assert prob.shape == (1, 2, 33, 34, 35)
    assert torch.allclose(prob.sum(1), torch.ones(1, 33, 34, 35), atol=1e-5)
    assert set(out.aux) >= {"uncertainty_ct", "uncertainty_pet", "weight_ct", "weight_pet"}


def test_unpadded_odd_input_is_refused() -> None:
    model = build_model(TINY)
    with pytest.raises(InputError, match="not a multiple of the model's size_divisor 4"):
        model(torch.zeros(1, 2, 33, 34, 35))
    with pytest.raises(InputError, match="channel 0 = CT and 1 = PET"):
        model(torch.zeros(1, 1, 8, 8, 8))


def test_eval_mode_is_deterministic() -> None:
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    x, _ = _case((12, 16, 20))
    with torch.no_grad():
        a, b = model(x), model(x)
    assert a.alpha is not None and b.alpha is not None
    assert torch.equal(a.alpha, b.alpha)
    assert torch.equal(a.uncertainty, b.uncertainty)  # type: ignore[arg-type]


@pytest.mark.parametrize("architecture", ["mefn", "dynunet", "dynunet_mcdropout"])
def test_gradients_reach_every_trainable_parameter(architecture: str) -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, architecture=architecture, dropout=0.1)  # type: ignore[arg-type]
    model = build_model(cfg).train()
    x, y = _case((16, 12, 20), batch=2)
    losses = build_loss(cfg)(model(x), y, x, 5)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    zero = [
        n
        for n, p in model.named_parameters()
        if p.grad is not None and not bool(p.grad.abs().sum() > 0)
    ]
    assert not missing, missing
    assert not zero, zero


SWITCHES = ["cfl", "mutual_attention", "calibrator", "ds_fusion", "uncertainty_loss"]


@pytest.mark.parametrize("off", [*SWITCHES, "all"])
def test_each_ablation_switch_builds_and_runs(off: str) -> None:
    names = SWITCHES if off == "all" else [off]
    cfg = dataclasses.replace(TINY, **{n: False for n in names})
    torch.manual_seed(0)
    model = build_model(cfg)
    x, y = _case((8, 12, 16), batch=2)
    out = model(x)
    losses = build_loss(cfg)(out, y, x, 3)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    assert (out.pseudo_ct is None) == (not cfg.cfl)
    assert ("translation" in losses) == cfg.cfl
    assert ("uncertainty" in losses) == cfg.uncertainty_loss
    assert ("head_combined" in losses) == cfg.ds_fusion
    if not cfg.ds_fusion:
        assert out.alpha is out.alpha_fused
    if not cfg.calibrator:
        assert "weight_ct" not in out.aux
    n_attention = sum(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    assert n_attention == 0  # ours is hand-written on scaled_dot_product_attention
    has_attention = len(model.attention) > 0  # type: ignore[arg-type]
    assert has_attention == cfg.mutual_attention


def test_three_classes_for_hecktor() -> None:
    cfg = dataclasses.replace(TINY, num_classes=3)
    model = build_model(cfg).eval()
    x, _ = _case((8, 8, 12))
    out = model.infer(x)  # type: ignore[operator]
    assert out["prob"].shape == (1, 3, 8, 8, 12)
    y = torch.randint(0, 3, (1, 1, 8, 8, 12))
    assert torch.isfinite(build_loss(cfg)(model(x), y, x, 0)["loss"])


def test_mefn_infer_keys_and_ranges() -> None:
    model = build_model(TINY).eval()
    x, _ = _case((12, 12, 12))
    out = model.infer(x)  # type: ignore[operator]
    assert set(out) == {"prob", "uncertainty", "uncertainty_ct", "uncertainty_pet"}
    assert out["prob"].shape == (1, 2, 12, 12, 12)
    assert torch.allclose(out["prob"].sum(1), torch.ones(1, 12, 12, 12), atol=1e-5)
    for key in ("uncertainty", "uncertainty_ct", "uncertainty_pet"):
        assert out[key].shape == (1, 1, 12, 12, 12)
        assert bool((out[key] >= 0).all() and (out[key] <= 1).all()), key
    # the final (Dempster-Shafer) opinion is no more uncertain than the least uncertain input
    assert bool(
        (
            out["uncertainty"]
            <= torch.minimum(out["uncertainty_ct"], out["uncertainty_pet"]) + 1e-6
        ).all()
    )


def test_dynunet_baseline_output_and_infer() -> None:
    cfg = dataclasses.replace(TINY, architecture="dynunet")
    model = build_model(cfg).eval()
    assert isinstance(model, DynUNetBaseline) and model.size_divisor == 4
    x, _ = _case((8, 12, 16))
    out = model(x)
    assert out.logits is not None and out.logits.shape == (1, 2, 8, 12, 16)
    assert out.alpha is None and out.uncertainty is None
    inferred = model.infer(x)  # type: ignore[operator]
    assert set(inferred) == {"prob", "uncertainty"}
    prob = inferred["prob"]
    assert torch.allclose(prob, torch.softmax(out.logits, 1), atol=1e-6)
    entropy = -(prob * prob.log()).sum(1, keepdim=True) / torch.log(torch.tensor(2.0))
    assert torch.allclose(inferred["uncertainty"], entropy, atol=1e-5)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


def test_mc_dropout_infer_is_stochastic_and_leaves_eval_mode() -> None:
    cfg = dataclasses.replace(TINY, architecture="dynunet_mcdropout", dropout=0.2, mc_samples=4)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 5  # input, downsampling and bottleneck blocks + 2 decoder blocks
    x, _ = _case((8, 8, 8))
    with torch.no_grad():
        assert torch.equal(model(x).logits, model(x).logits)  # type: ignore[arg-type]
    a = model.infer(x)  # type: ignore[operator]
    b = model.infer(x)  # type: ignore[operator]
    assert set(a) == {"prob", "uncertainty", "mutual_information"}
    assert not torch.equal(a["prob"], b["prob"])
    assert all(not m.training for m in dropouts)
    assert bool((a["mutual_information"] >= 0).all())
    assert bool((a["mutual_information"] <= a["uncertainty"] + 1e-6).all())
    assert float(a["mutual_information"].max()) > 0
