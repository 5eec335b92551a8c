"""Every adapter type on a two-branch MONAI toy net: identity at init, frozen base, save ->
load round trip, merge; routing between peft and the hand-written modules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from monai.networks.blocks import ResidualUnit
from monai.networks.nets import BasicUNet
from torch import nn

from mefn.adapters import (
    AdapterConfig,
    ShareConfig,
    TargetConfig,
    inject_adapters,
    load_adapter,
    load_adapter_config,
    merge_adapters,
    model_hash,
    save_adapter,
    trainable_parameters,
)
from mefn.adapters.config import CONFIG_DIR
from mefn.adapters.inject import plan_targets
from mefn.adapters.modules import AdaptedModule, PHMDelta
from mefn.errors import ConfigError

CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
# Configs whose every adapted layer folds into its convolution / norm.
MERGEABLE = {"lora", "dora", "ia3", "norm_bias", "paca", "bone"}


def test_every_documented_type_has_a_config() -> None:
    assert {"lora", "dora", "ia3", "norm_bias", "bottleneck", "compacter", "paca", "bone"} <= set(
        CONFIGS
    )
    assert {"mosa", "lowbit", "gated", "lae", "shared_bottleneck"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_output_equals_base_at_initialisation(name: str, make_net, x) -> None:
    net = make_net()
    expected = net(x)
    handle = inject_adapters(net, load_adapter_config(name))
    assert handle.num_trainable() > 0
    torch.testing.assert_close(net(x), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", CONFIGS)
def test_training_moves_output_but_not_base(name: str, make_net, x, train) -> None:
    net = make_net()
    before = net(x).detach()
    base = {n: (t, t.detach().clone()) for n, t in net.state_dict(keep_vars=True).items()}
    handle = inject_adapters(net, load_adapter_config(name))
    train(net, handle, x, steps=3, lr=0.05)
    assert (net(x) - before).abs().max() > 1e-4  # the adapter did learn something
    for n, (tensor, original) in base.items():
        assert not tensor.requires_grad, n
        assert torch.equal(tensor, original), f"base tensor {n} changed"
    names = set(trainable_parameters(net))
    assert names and not names & {n for n, t in net.named_parameters() if id(t) in handle.base_ids}


@pytest.mark.parametrize("name", CONFIGS)
def test_save_load_round_trip_is_exact(name: str, make_net, x, train, tmp_path: Path) -> None:
    net = make_net()
    base_hash = model_hash(net.state_dict())
    handle = inject_adapters(net, load_adapter_config(name))
    train(net, handle, x, steps=3, lr=0.01)
    save_adapter(net, tmp_path / "adapter", base_hash)
    if handle.mosa is not None:  # the file holds the merged dense adapter
        handle.mosa.finish()
    fresh = make_net()
    loaded = load_adapter(fresh, tmp_path / "adapter", expected_base_hash=base_hash)
    assert loaded.targets == handle.targets
    assert torch.equal(fresh(x), net(x))
    if handle.lae is not None:
        assert loaded.lae is not None
        with handle.lae.offline_weights(), loaded.lae.offline_weights():
            assert torch.equal(fresh(x), net(x))


@pytest.mark.parametrize("name", CONFIGS)
def test_merge_matches_unmerged(name: str, make_net, x, train) -> None:
    net = make_net()
    handle = inject_adapters(net, load_adapter_config(name))
    train(net, handle, x, steps=3, lr=0.01)
    if handle.mosa is not None:
        handle.mosa.finish()
    adapted = net(x).detach()
    targets = list(handle.targets)
    unmerged = merge_adapters(net)
    torch.testing.assert_close(net(x), adapted, atol=1e-5, rtol=1e-5)
    if name in MERGEABLE:
        assert unmerged == []
        assert not any(isinstance(m, AdaptedModule) for m in net.modules())
        assert not any("lora" in n or "ia3" in n for n, _ in net.named_parameters())
        assert not hasattr(net, "peft_config")
    else:
        assert unmerged == targets


def test_routing_peft_only_where_its_merge_is_correct(make_net) -> None:
    plan = plan_targets(make_net(), load_adapter_config("lora"))
    own = {n for n, k in plan.items() if k == "own"}
    assert own == {
        "fusion.0",  # 1x1x1
        "fusion.2",  # dilated
        "fusion.3",  # grouped
        "decoder.0",  # ConvTranspose3d
        "decoder.1",  # replicate padding
        "head",  # 1x1x1
    }
    assert plan["enc_ct.stage0.conv"] == "peft"
    assert plan["enc_pet.stage1.conv.unit0.conv"] == "peft"  # strided 3x3x3
    ia3 = plan_targets(make_net(), load_adapter_config("ia3"))
    assert {n for n, k in ia3.items() if k == "own"} == {"decoder.0"}
    gated = plan_targets(make_net(), load_adapter_config("gated"))
    assert set(gated.values()) == {"own"}


def test_peft_on_1x1x1_dilated_and_replicate_convs() -> None:
    """The reason for the routing above. peft up to 0.21 gets LoRA wrong on these three
    convolutions; 0.22 gets them right. plan_targets keeps them on mefn's own LoRA, which is
    right with every peft the package accepts (pyproject: peft >= 0.13). If a release breaks
    them again, this says which."""
    import peft
    from packaging.version import Version
    from peft import LoraConfig, inject_adapter_in_model

    def peft_lora(conv: nn.Module) -> nn.Module:
        model = nn.Sequential(conv)
        inject_adapter_in_model(LoraConfig(r=2, target_modules=["0"]), model)
        with torch.no_grad():
            model[0].lora_B["default"].weight.normal_(generator=torch.Generator().manual_seed(0))
        return model

    def merged_minus_unmerged(model: nn.Module) -> float:
        with torch.no_grad():
            unmerged = model(xin)
            model[0].merge()
            return float((model(xin) - unmerged).abs().max())

    xin = torch.randn(1, 4, 5, 6, 7)
    one = peft_lora(nn.Conv3d(4, 4, 1))
    dilated = nn.Conv3d(4, 4, 3, padding=2, dilation=2)
    replicate = peft_lora(nn.Conv3d(4, 4, 3, padding=1, padding_mode="replicate"))
    if Version(peft.__version__) >= Version("0.22"):
        assert merged_minus_unmerged(one) < 1e-4
        assert merged_minus_unmerged(peft_lora(dilated)) < 1e-4
        assert merged_minus_unmerged(replicate) < 1e-4
        return
    one(xin)
    with pytest.raises(RuntimeError, match="must match the size"):
        one[0].merge()  # kernel (1, 1, k) is taken for a 2D 1x1 kernel
    with pytest.raises(RuntimeError, match="must match the size"):
        peft_lora(dilated)(xin)  # lora_A drops the dilation
    # lora_A zero-pads: merging silently changes the border voxels
    assert merged_minus_unmerged(replicate) > 1e-2


def test_lora_on_basic_unet_merges(x) -> None:
    torch.manual_seed(0)
    net = BasicUNet(spatial_dims=3, in_channels=2, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    net.eval()
    xin = torch.randn(1, 2, 33, 34, 35)
    base = net(xin).detach()
    handle = inject_adapters(net, load_adapter_config("lora"))
    assert sum(k == "peft" for k in handle.targets.values()) == 18
    assert sum(k == "own" for k in handle.targets.values()) == 5  # 4 deconvs + final 1x1x1
    torch.testing.assert_close(net(xin), base, atol=1e-6, rtol=0)
    with torch.no_grad():
        for n, p in handle.trainable_parameters().items():
            if "lora_b" in n.lower():
                p.normal_(0, 0.05)
    adapted = net(xin).detach()
    assert (adapted - base).abs().max() > 1e-3
    assert merge_adapters(net) == []
    torch.testing.assert_close(net(xin), adapted, atol=1e-5, rtol=1e-5)


LAYER = (8, 12)  # in, out channels of the single-conv model below


def _one_conv() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(LAYER[0], LAYER[1], 3, padding=1))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"type": "lora", "rank": 4}, 4 * (8 * 27 + 12)),
        ({"type": "lora", "rank": 4, "backend": "own"}, 4 * (8 * 27 + 12)),
        ({"type": "dora", "rank": 4}, 4 * (8 * 27 + 12) + 12),
        ({"type": "dora", "rank": 4, "backend": "own"}, 4 * (8 * 27 + 12) + 12),
        ({"type": "ia3"}, 8),  # input channels (the default ia3_scale)
        ({"type": "ia3", "ia3_scale": "output"}, 12),
        ({"type": "ia3", "ia3_scale": "output", "backend": "own"}, 12),
        ({"type": "norm_bias"}, 24),
        ({"type": "bottleneck", "reduction": 4}, 3 * 12 + 3 * 27 + 12 * 3),
        ({"type": "bottleneck", "placement": "parallel"}, 3 * 8 + 3 * 27 + 12 * 3),
        ({"type": "compacter", "phm_n": 4, "rank": 1}, 4**3 + 4 * (1 + 3 + 3 + 1)),
        ({"type": "paca", "rank": 8}, 12 * 8),
        ({"type": "bone", "block_size": 4}, 12 * 4),
        ({"type": "lora", "rank": 4, "gate": {"granularity": "voxel"}}, 4 * (8 * 27 + 12) + 13),
        ({"type": "lora", "rank": 4, "gate": {"granularity": "channel"}}, 4 * (8 * 27 + 12) + 12),
    ],
)
def test_trainable_parameter_counts_follow_the_documented_formulas(
    overrides: dict, expected: int
) -> None:
    from mefn.config import from_dict

    handle = inject_adapters(_one_conv(), from_dict(AdapterConfig, overrides))
    assert handle.num_trainable() == expected


def test_compacter_rules_are_one_tensor_for_all_layers_and_both_branches(
    make_net, x, train
) -> None:
    net = make_net()
    handle = inject_adapters(net, load_adapter_config("compacter"))
    deltas = [m for m in net.modules() if isinstance(m, PHMDelta)]
    assert len(deltas) == 12
    rules = {id(d.rules.weight) for d in deltas}
    assert len(rules) == 1
    ct = net.enc_ct.stage0.conv.delta
    pet = net.enc_pet.stage0.conv.delta
    assert ct.rules.weight is pet.rules.weight
    assert ct.rules.weight.data_ptr() == pet.rules.weight.data_ptr()
    assert ct.down_s is not pet.down_s  # fast weights stay per layer
    # after one step (the up projections start at zero) gradients reach the one tensor
    train(net, handle, x, steps=1, lr=0.01)
    ct.rules.weight.grad = None
    net(x).square().mean().backward()
    assert ct.rules.weight.grad is not None and ct.rules.weight.grad.abs().sum() > 0


def test_shared_bottleneck_is_one_module_in_both_branches(make_net, x, tmp_path: Path) -> None:
    net = make_net()
    handle = inject_adapters(net, load_adapter_config("shared_bottleneck"))
    ct = net.enc_ct.stage0.conv
    pet = net.enc_pet.stage0.conv
    assert isinstance(ct, AdaptedModule) and ct.delta is pet.delta
    assert ct.delta.up.data_ptr() == pet.delta.up.data_ptr()
    # 4 convs of 8 channels per branch, m = 2: m (2C + 27) each, stored once for both branches
    assert len(handle.targets) == 8 and handle.num_trainable() == 4 * 2 * (2 * 8 + 27)
    save_adapter(handle, tmp_path / "a", "h")
    fresh = make_net()
    load_adapter(fresh, tmp_path / "a", "h")
    assert fresh.enc_ct.stage0.conv.delta is fresh.enc_pet.stage0.conv.delta


def test_parallel_linear_bottleneck_and_channel_gate_merge(make_net, x, train) -> None:
    cfg = dataclasses.replace(
        load_adapter_config("bottleneck"),
        placement="parallel",
        activation="none",
        targets=TargetConfig(layer_types=("Conv3d",), exclude=("fusion.3",)),
    )
    cfg = dataclasses.replace(cfg, gate=dataclasses.replace(cfg.gate, granularity="channel"))
    net = make_net()
    handle = inject_adapters(net, cfg)
    train(net, handle, x, steps=3, lr=0.01)
    adapted = net(x).detach()
    assert merge_adapters(net) == []
    torch.testing.assert_close(net(x), adapted, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("granularity", ["voxel", "sample"])
def test_input_dependent_gates_do_not_merge(granularity: str, make_net, x, train) -> None:
    cfg = load_adapter_config("gated")
    cfg = dataclasses.replace(cfg, gate=dataclasses.replace(cfg.gate, granularity=granularity))
    net = make_net()
    handle = inject_adapters(net, cfg)
    train(net, handle, x, steps=2, lr=0.01)
    adapted = net(x).detach()
    assert merge_adapters(net) == list(handle.targets)
    torch.testing.assert_close(net(x), adapted, atol=0, rtol=0)


# --- errors -----------------------------------------------------------------------------


def test_injecting_twice_is_refused(make_net) -> None:
    net = make_net()
    inject_adapters(net, load_adapter_config("lora"))
    with pytest.raises(ConfigError, match="already carries adapters"):
        inject_adapters(net, load_adapter_config("ia3"))


def test_unknown_prefix_suggests_the_nearest(make_net) -> None:
    cfg = AdapterConfig(targets=TargetConfig(prefixes=("enc_tc",)))
    with pytest.raises(ConfigError, match="did you mean 'enc_ct'"):
        inject_adapters(make_net(), cfg)


def test_no_matching_layer_lists_what_the_model_has(make_net) -> None:
    cfg = AdapterConfig(targets=TargetConfig(layer_types=("Conv2d",)))
    with pytest.raises(ConfigError, match=r"no module matches .*Conv3d x\d+"):
        inject_adapters(make_net(), cfg)


def test_conv_only_types_refuse_norm_targets(make_net) -> None:
    cfg = AdapterConfig(type="lora", targets=TargetConfig(layer_types=("InstanceNorm3d",)))
    with pytest.raises(ConfigError, match="need Conv3d or ConvTranspose3d targets"):
        inject_adapters(make_net(), cfg)


def test_parallel_bottleneck_refuses_blocks(make_net) -> None:
    cfg = AdapterConfig(
        type="bottleneck",
        placement="parallel",
        targets=TargetConfig(layer_types=("ResidualUnit",)),
    )
    with pytest.raises(ConfigError, match="parallel bottleneck adapter needs Conv3d"):
        inject_adapters(make_net(), cfg)


def test_sequential_bottleneck_wraps_blocks(make_net, x) -> None:
    net = make_net()
    expected = net(x)
    cfg = AdapterConfig(type="bottleneck", targets=TargetConfig(layer_types=("ResidualUnit",)))
    handle = inject_adapters(net, cfg)
    assert set(handle.targets) == {"enc_ct.stage1", "enc_pet.stage1"}
    assert isinstance(net.enc_ct.stage1, AdaptedModule)
    assert isinstance(net.enc_ct.stage1.base, ResidualUnit)
    torch.testing.assert_close(net(x), expected, atol=1e-6, rtol=0)


def test_compacter_errors(make_net) -> None:
    with pytest.raises(ConfigError, match="compacter adapters are sequential"):
        inject_adapters(make_net(), AdapterConfig(type="compacter", placement="parallel"))
    cfg = AdapterConfig(type="compacter", phm_n=3, targets=TargetConfig(exclude=("*head*",)))
    with pytest.raises(ConfigError, match="8 channels are not divisible by phm_n=3"):
        inject_adapters(make_net(), cfg)


def test_bone_refuses_matrices_smaller_than_a_block(make_net) -> None:
    cfg = AdapterConfig(type="bone", block_size=4)  # the head has 2 output channels
    with pytest.raises(ConfigError, match="'head'.*smaller than one 4 x 4 block"):
        inject_adapters(make_net(), cfg)


def test_sharing_needs_equal_channels() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc_ct = nn.Sequential(nn.Conv3d(1, 4, 3))
            self.enc_pet = nn.Sequential(nn.Conv3d(1, 8, 3))

    cfg = AdapterConfig(type="bottleneck", share=ShareConfig(across_branches=True))
    with pytest.raises(ConfigError, match="cannot share one adapter between 'enc_ct.0'"):
        inject_adapters(Net(), cfg)


def test_dora_refuses_grouped_transposed_conv() -> None:
    model = nn.Sequential(nn.ConvTranspose3d(4, 4, 2, stride=2, groups=2))
    with pytest.raises(ConfigError, match="DoRA on '0': grouped ConvTranspose3d"):
        cfg = AdapterConfig(type="dora", targets=TargetConfig(layer_types=("ConvTranspose3d",)))
        inject_adapters(model, cfg)


def test_channel_count_of_a_target_must_be_known() -> None:
    model = nn.Sequential(nn.Conv3d(1, 4, 3), nn.GELU())
    cfg = AdapterConfig(type="norm_bias", targets=TargetConfig(layer_types=("GELU",)))
    with pytest.raises(ConfigError, match="cannot tell the channel count of target '1'"):
        inject_adapters(model, cfg)


@pytest.mark.parametrize(("scale", "changes"), [("input", True), ("output", False)])
def test_ia3_input_scale_survives_the_instance_norm_after_a_convolution(
    scale: str, changes: bool
) -> None:
    """conv -> instance norm (every MEFN / nnU-Net block): the norm cancels a per-output-channel
    scale, so only IA3's input form can change the block's output."""
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv3d(4, 6, 3, padding=1), nn.InstanceNorm3d(6, affine=True))
    x = torch.randn(2, 4, 8, 8, 8)
    before = block(x).detach()
    cfg = AdapterConfig(type="ia3", ia3_scale=scale, targets=TargetConfig(layer_types=("Conv3d",)))  # type: ignore[arg-type]
    handle = inject_adapters(block, cfg)
    with torch.no_grad():
        for p in handle.trainable_parameters().values():
            p.uniform_(0.5, 1.5)
    after = block(x)
    assert torch.allclose(after, before, atol=1e-4) is not changes
