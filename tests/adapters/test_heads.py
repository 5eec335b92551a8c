"""New output heads for another label set: a 2-class MEFN fine-tuned to 3 classes (GTVp, GTVn)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from support import TINY_MODEL

from mefn.adapters import (
    AdapterConfig,
    HeadsConfig,
    MosaConfig,
    inject_adapters,
    load_adapter,
    load_adapter_config,
    merge_adapters,
    model_hash,
    remove_adapters,
    save_adapter,
)
from mefn.adapters.serialize import CONFIG_NAME
from mefn.config import from_dict
from mefn.errors import CheckpointError, ConfigError
from mefn.model import MEFN, ModelConfig, build_model

HN_LABELS = {"0": "background", "1": "GTVp", "2": "GTVn"}
HEADS = ["head_ct.conv.conv", "head_fused.conv.conv", "head_pet.conv.conv"]


def _base() -> tuple[MEFN, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    net = build_model(from_dict(ModelConfig, TINY_MODEL))
    assert isinstance(net, MEFN)
    return net.eval(), {k: v.clone() for k, v in net.state_dict().items()}


def _fresh(state: dict[str, torch.Tensor]) -> MEFN:
    net = build_model(from_dict(ModelConfig, TINY_MODEL))
    net.load_state_dict(state)
    assert isinstance(net, MEFN)
    return net.eval()


def _with_heads(name: str = "lora", k: int = 3) -> AdapterConfig:
    return dataclasses.replace(load_adapter_config(name), heads=HeadsConfig(num_classes=k))


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(1, 2, 16, 16, 16, generator=torch.Generator().manual_seed(3))


def _train(net: torch.nn.Module, handle: Any, x: torch.Tensor, steps: int = 2) -> None:
    optim = torch.optim.Adam(list(handle.trainable_parameters().values()), lr=0.05)
    target = torch.randint(0, 3, (1, 16, 16, 16), generator=torch.Generator().manual_seed(5))
    net.train()
    for _ in range(steps):
        out = net(x)
        loss = torch.nn.functional.nll_loss(torch.log(out.alpha / out.alpha.sum(1, True)), target)
        optim.zero_grad()
        loss.backward()
        optim.step()
        handle.on_step()
    net.eval()


def test_new_heads_give_three_classes_and_train_with_the_adapter(x) -> None:
    net, state = _base()
    base_out = net(x).alpha
    assert base_out.shape[1] == 2
    handle = inject_adapters(net, _with_heads())
    assert sorted(handle.base_heads) == HEADS and handle.num_classes == 3 == net.num_classes
    assert not any(n.startswith("head_") for n in handle.targets)  # no adapter on the heads
    trainable = handle.trainable_parameters()
    head_params = [n for n in trainable if n.startswith("head_")]
    assert len(head_params) == 6  # weight and bias of three 1x1x1 convs
    # head_ct/head_pet read the 4-channel half-resolution streams, head_fused 2 x 2 channels
    assert sum(trainable[n].numel() for n in head_params) == 3 * (4 * 3 + 3)
    out = net(x)
    for alpha in (out.alpha, out.alpha_ct, out.alpha_pet, out.alpha_fused):
        assert alpha is not None and alpha.shape == (1, 3, 16, 16, 16)
    # the base tensors are untouched and the base model comes back whole
    _train(net, handle, x)
    remove_adapters(net)
    assert net.num_classes == 2
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert torch.allclose(net(x).alpha, base_out, rtol=1e-5, atol=1e-5)  # frozen: oneDNN path


def test_new_heads_are_seeded_and_leave_the_global_random_stream_alone() -> None:
    _, state = _base()
    torch.manual_seed(42)
    a = _fresh(state)
    inject_adapters(a, _with_heads("lora"))
    after_a = torch.rand(1)
    torch.manual_seed(42)
    b = _fresh(state)
    inject_adapters(b, _with_heads("lora"))
    assert torch.equal(after_a, torch.rand(1))
    for name in HEADS:
        wa = a.get_submodule(name).weight
        assert torch.equal(wa, b.get_submodule(name).weight)
    other = _fresh(state)
    inject_adapters(other, dataclasses.replace(_with_heads("lora"), seed=1))
    assert not torch.equal(a.head_ct.conv.conv.weight, other.head_ct.conv.conv.weight)


@pytest.mark.parametrize("name", ["lora", "lowbit", "compacter", "none"])
def test_heads_round_trip_exactly_through_the_adapter_file(tmp_path: Path, x, name) -> None:
    net, state = _base()
    base_hash = model_hash(state)
    cfg = (
        _with_heads(name)
        if name != "none"
        else AdapterConfig(type="none", heads=HeadsConfig(num_classes=3))
    )
    handle = inject_adapters(net, cfg)
    _train(net, handle, x)
    trained = net(x).alpha
    save_adapter(handle, tmp_path / "ad", base_hash, labels=HN_LABELS)
    meta = json.loads((tmp_path / "ad" / CONFIG_NAME).read_text())
    assert meta["num_classes"] == 3 and meta["heads"] == HEADS and meta["labels"] == HN_LABELS
    assert meta["config"]["heads"]["num_classes"] == 3
    assert meta["num_parameters"] == handle.num_trainable()
    fresh = _fresh(state)
    loaded = load_adapter(fresh, tmp_path / "ad", base_hash)
    assert loaded.num_classes == 3 and loaded.labels == HN_LABELS
    assert torch.equal(fresh(x).alpha, trained)
    unmerged = merge_adapters(fresh)  # the heads stay; sequential GELU adapters stay too
    assert fresh.num_classes == 3 and (unmerged == []) == (name in ("lora", "none"))
    assert torch.allclose(fresh(x).alpha, trained, rtol=1e-4, atol=1e-5)


def test_head_only_tuning_trains_the_heads_alone(x) -> None:
    net, state = _base()
    handle = inject_adapters(net, AdapterConfig(type="none", heads=HeadsConfig(num_classes=3)))
    assert handle.targets == {} and handle.num_trainable() == 45
    _train(net, handle, x)
    kept = {k: v for k, v in net.state_dict().items() if not k.startswith("head_")}
    assert all(torch.equal(v, state[k]) for k, v in kept.items())


def test_mosa_leaves_the_new_heads_dense(x) -> None:
    net, _ = _base()
    cfg = dataclasses.replace(_with_heads("bottleneck"), mosa=MosaConfig(parts=4))
    handle = inject_adapters(net, cfg)
    assert handle.mosa is not None and not any(n.startswith("head_") for n in handle.mosa.params)
    before = net.head_fused.conv.conv.weight.detach().clone()
    _train(net, handle, x, steps=1)
    assert bool((net.head_fused.conv.conv.weight != before).all())  # every entry moved


def test_the_base_hash_is_still_checked(tmp_path: Path, x) -> None:
    net, state = _base()
    handle = inject_adapters(net, _with_heads())
    save_adapter(handle, tmp_path / "ad", model_hash(state))
    fresh = _fresh(state)
    with pytest.raises(CheckpointError, match="was trained on base model"):
        load_adapter(fresh, tmp_path / "ad", "0" * 64)
    assert fresh.num_classes == 2 and fresh(x).alpha.shape[1] == 2


def test_heads_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="heads.num_classes must be 0 .* or at least 2"):
        AdapterConfig(heads=HeadsConfig(num_classes=1))
    with pytest.raises(ConfigError, match="heads.names is empty"):
        AdapterConfig(heads=HeadsConfig(num_classes=3, names=()))
    net, state = _base()
    with pytest.raises(ConfigError, match="type none trains only new output heads"):
        inject_adapters(net, AdapterConfig(type="none"))
    cfg = AdapterConfig(heads=HeadsConfig(num_classes=3, names=("head_ct", "head_fusd")))
    with pytest.raises(ConfigError, match="'head_fusd', which is no module of the model"):
        inject_adapters(net, cfg)
    # a failed injection leaves the model as it was
    assert net.num_classes == 2 and all(p.requires_grad for p in net.parameters())
    cfg = AdapterConfig(heads=HeadsConfig(num_classes=3, names=("fuse.transp_conv",)))
    with pytest.raises(ConfigError, match="holds no Conv3d to replace"):
        inject_adapters(net, cfg)
    handle = inject_adapters(net, _with_heads())
    with pytest.raises(ConfigError, match="labels name 2 classes but the adapter's heads have 3"):
        save_adapter(handle, tmp_path / "ad", model_hash(state), labels={"0": "a", "1": "b"})
    assert load_adapter_config("none") == AdapterConfig(type="none")
