"""MoSA sparse parts and LAE online/offline ensembles."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mefn.adapters import (
    ensemble_logits,
    inject_adapters,
    load_adapter,
    load_adapter_config,
    merge_adapters,
    save_adapter,
)
from mefn.errors import ConfigError


def test_mosa_parts_are_disjoint_and_cover_every_weight(make_net) -> None:
    handle = inject_adapters(make_net(), load_adapter_config("mosa"))
    mosa = handle.mosa
    assert mosa is not None and mosa.parts == 4
    for name in mosa.params:
        cover = sum(mosa.mask(name, j).int() for j in range(4))
        assert torch.all(cover == 1), name
        sizes = [int(mosa.mask(name, j).sum()) for j in range(4)]
        assert max(sizes) - min(sizes) <= 1  # random but balanced


def test_mosa_trains_one_part_per_step_and_merges_dense(make_net, x) -> None:
    net = make_net()
    handle = inject_adapters(net, load_adapter_config("mosa"))
    mosa = handle.mosa
    assert mosa is not None
    optim = torch.optim.SGD(handle.trainable_parameters().values(), lr=0.1)
    for _ in range(4):
        active = mosa.active
        dense_before = mosa.dense_values()
        for name, p in mosa.params.items():  # the forward pass sees only the active part
            assert torch.equal(p.detach(), dense_before[name] * mosa.mask(name))
        optim.zero_grad()
        net(x).square().mean().backward()
        optim.step()
        handle.on_step()
        changed_any = False
        for name in mosa.params:
            changed = mosa.dense[name] != dense_before[name]
            assert not torch.any(changed & ~mosa.mask(name, active)), name
            changed_any |= bool(changed.any())
        assert changed_any
    dense = mosa.dense_values()
    assert merge_adapters(net) == list(handle.targets)  # bottleneck with GELU: not foldable
    assert mosa.finished
    for name, p in mosa.params.items():
        assert torch.equal(p.detach(), dense[name])


def test_mosa_saves_the_dense_adapter(make_net, x, train, tmp_path: Path) -> None:
    net = make_net()
    handle = inject_adapters(net, load_adapter_config("mosa"))
    train(net, handle, x, steps=4, lr=0.05)
    assert handle.mosa is not None
    dense = handle.mosa.dense_values()
    save_adapter(handle, tmp_path / "a", "h")
    fresh = make_net()
    loaded = load_adapter(fresh, tmp_path / "a", "h")
    assert loaded.mosa is None
    state = fresh.state_dict()
    for name, value in dense.items():
        assert torch.equal(state[name], value)


def test_ensemble_logits_by_hand() -> None:
    online = torch.tensor([[[2.0, 0.0]], [[0.0, 0.1]]])  # (classes=2, 1, 2 voxels)
    offline = torch.tensor([[[0.0, 3.0]], [[0.5, 0.0]]])
    online, offline = online.unsqueeze(0), offline.unsqueeze(0)
    best = ensemble_logits(online, offline, "max_confidence")
    # voxel 0: online softmax max 0.88 vs offline 0.62 -> online; voxel 1: offline wins
    assert best[0, :, 0, 0].tolist() == [2.0, 0.0]
    assert best[0, :, 0, 1].tolist() == [3.0, 0.0]
    torch.testing.assert_close(
        ensemble_logits(online, offline, "mean_logits"), (online + offline) / 2
    )
    with pytest.raises(ConfigError, match="ensemble mode must be"):
        ensemble_logits(online, offline, "vote")
    with pytest.raises(ConfigError, match="outputs of one shape"):
        ensemble_logits(online, offline[..., :1], "mean_logits")


def test_lae_offline_is_the_ema_of_online(make_net, x) -> None:
    net = make_net()
    cfg = load_adapter_config("lae")
    handle = inject_adapters(net, cfg)
    lae = handle.lae
    assert lae is not None and lae.decay == 0.99
    name, p = next((n, p) for n, p in lae.params.items() if "lora" in n.lower())
    start = p.detach().clone()
    with torch.no_grad():
        p.add_(1.0)
    lae.on_step()
    torch.testing.assert_close(lae.offline[name], 0.99 * start + 0.01 * (start + 1.0))
    with lae.offline_weights():
        torch.testing.assert_close(p.detach(), lae.offline[name])
    torch.testing.assert_close(p.detach(), start + 1.0)


def test_lae_sequential_sites_and_ensemble_round_trip(make_net, x, train, tmp_path: Path) -> None:
    net = make_net()
    handle = inject_adapters(net, load_adapter_config("lae"))
    lae = handle.lae
    assert lae is not None
    lae.begin_site("centre_a")
    train(net, handle, x, steps=3, lr=0.01)
    lae.begin_site("centre_b")
    train(net, handle, x, steps=2, lr=0.01)
    online = net(x)
    with lae.offline_weights():
        offline = net(x)
    assert (online - offline).abs().max() > 1e-5
    combined = lae.ensemble(lambda: net(x))
    assert torch.equal(combined, ensemble_logits(online, offline, "max_confidence"))
    save_adapter(handle, tmp_path / "a", "h")
    fresh = make_net()
    loaded = load_adapter(fresh, tmp_path / "a", "h")
    assert loaded.lae is not None
    assert loaded.lae.sites == ["centre_a", "centre_b"] and loaded.lae.steps == 5
    assert torch.equal(loaded.lae.ensemble(lambda: fresh(x)), combined)


def test_lae_with_mosa_is_refused() -> None:
    cfg = load_adapter_config("lae")
    with pytest.raises(ConfigError, match="lae and mosa cannot be combined"):
        dataclasses.replace(cfg, mosa=dataclasses.replace(cfg.mosa, parts=2))


def test_predictor_runs_the_lae_ensemble(tmp_path: Path) -> None:
    """An LAE adapter at segmentation time: every map comes, voxel by voxel, from whichever of
    the online and offline adapters is more confident there (LAE's ensemble), not from the
    online adapter alone."""
    from support import make_tiny_weights

    from mefn.adapters import LAEEnsembleModel, ensemble_maps, save_adapter
    from mefn.fileutil import file_sha256
    from mefn.inference import Predictor

    weights = make_tiny_weights(tmp_path)
    base = Predictor(weights, device="cpu").net
    handle = inject_adapters(base, load_adapter_config("lae"))
    lae = handle.lae
    assert lae is not None
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # online and offline adapters that disagree
        for name, p in lae.params.items():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
            lae.offline[name] = p.detach() - 0.6 * torch.randn(p.shape, generator=gen)
    save_adapter(handle, tmp_path / "lae", file_sha256(weights))

    predictor = Predictor(weights, adapter=tmp_path / "lae", device="cpu")
    assert isinstance(predictor.net, LAEEnsembleModel)
    image = torch.randn((2, *predictor.roi), generator=gen).numpy()  # one window: no blending
    got = predictor.predict_model_space(image)
    x = torch.from_numpy(image)[None]
    online = predictor.net.net.infer(x)
    with predictor.net.controller.offline_weights():
        offline = predictor.net.net.infer(x)
    pick = online["prob"].amax(1, keepdim=True) >= offline["prob"].amax(1, keepdim=True)
    assert 0 < int(pick.sum()) < pick.numel()  # both adapters win somewhere
    want = ensemble_maps(online, offline)
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key][0].numpy(), atol=1e-5)
    mean = ensemble_maps(online, offline, "mean_logits")
    torch.testing.assert_close(mean["prob"], (online["prob"] + offline["prob"]) / 2)
    with pytest.raises(ConfigError, match="mode must be"):
        ensemble_maps(online, offline, "vote")
