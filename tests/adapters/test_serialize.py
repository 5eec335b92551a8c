"""Adapter files: hash, format, low-bit packing, and every refusal."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mefn.adapters import (
    AdapterConfig,
    QuantConfig,
    TargetConfig,
    inject_adapters,
    load_adapter,
    load_adapter_config,
    model_hash,
    save_adapter,
)
from mefn.adapters.serialize import CONFIG_NAME, PACKED_CODES, PACKED_SCALES, WEIGHTS_NAME
from mefn.errors import CheckpointError, ConfigError


def test_model_hash_is_sha256_of_sorted_names_dtype_shape_and_bytes() -> None:
    state = {"b": torch.tensor([1.0, 2.0]), "a": torch.tensor([3], dtype=torch.int16)}
    digest = hashlib.sha256()
    digest.update(b"a")
    digest.update(b"torch.int16(1,)")
    digest.update((3).to_bytes(2, "little"))
    digest.update(b"b")
    digest.update(b"torch.float32(2,)")
    digest.update(torch.tensor([1.0, 2.0]).numpy().tobytes())
    assert model_hash(state) == digest.hexdigest()
    assert model_hash(dict(reversed(state.items()))) == digest.hexdigest()
    changed = {"b": torch.tensor([1.0, 2.0000002]), "a": state["a"]}
    assert model_hash(changed) != digest.hexdigest()


def _saved(make_net, x, train, folder: Path, name: str = "lora"):  # type: ignore[no-untyped-def]
    net = make_net()
    base_hash = model_hash(net.state_dict())
    handle = inject_adapters(net, load_adapter_config(name))
    train(net, handle, x, steps=2, lr=0.01)
    save_adapter(handle, folder, base_hash)
    return net, handle, base_hash


def test_config_json_records_what_the_adapter_is(make_net, x, train, tmp_path: Path) -> None:
    _, handle, base_hash = _saved(make_net, x, train, tmp_path / "a")
    meta = json.loads((tmp_path / "a" / CONFIG_NAME).read_text())
    assert meta["format"] == "mefn-adapter" and meta["format_version"] == 1
    assert meta["type"] == "lora" and meta["config"]["rank"] == 4
    assert meta["base_model_hash"] == base_hash
    assert meta["targets"] == handle.targets
    assert meta["mefn_version"]
    assert meta["num_parameters"] == handle.num_trainable()
    tensors = load_file(str(tmp_path / "a" / WEIGHTS_NAME))
    assert set(tensors) == set(handle.adapter_state())
    assert not any("base" in n and "lora" not in n for n in tensors)  # no base weights


def test_mismatched_base_hash_is_refused(make_net, x, train, tmp_path: Path) -> None:
    _saved(make_net, x, train, tmp_path / "a")
    fresh = make_net()
    with pytest.raises(CheckpointError, match="was trained on base model .* but this model is"):
        load_adapter(fresh, tmp_path / "a", expected_base_hash="0" * 64)
    assert not any("lora" in n for n in fresh.state_dict())  # left untouched


def test_corrupt_weights_fail_the_checksum(make_net, x, train, tmp_path: Path) -> None:
    _, _, base_hash = _saved(make_net, x, train, tmp_path / "a")
    weights = tmp_path / "a" / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_adapter(make_net(), tmp_path / "a", base_hash)


def test_unreadable_safetensors_is_reported(make_net, x, train, tmp_path: Path) -> None:
    _, _, base_hash = _saved(make_net, x, train, tmp_path / "a")
    weights = tmp_path / "a" / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[:40])
    meta = json.loads((tmp_path / "a" / CONFIG_NAME).read_text())
    meta["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (tmp_path / "a" / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
        load_adapter(make_net(), tmp_path / "a", base_hash)


def test_foreign_config_is_refused(make_net, x, train, tmp_path: Path) -> None:
    _, _, base_hash = _saved(make_net, x, train, tmp_path / "a")
    (tmp_path / "a" / CONFIG_NAME).write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    with pytest.raises(CheckpointError, match="is not a mefn adapter config"):
        load_adapter(make_net(), tmp_path / "a", base_hash)


def test_invalid_json_is_refused(make_net, x, train, tmp_path: Path) -> None:
    _, _, base_hash = _saved(make_net, x, train, tmp_path / "a")
    (tmp_path / "a" / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="is not valid JSON"):
        load_adapter(make_net(), tmp_path / "a", base_hash)


def test_newer_format_is_refused(make_net, x, train, tmp_path: Path) -> None:
    _, _, base_hash = _saved(make_net, x, train, tmp_path / "a")
    meta = json.loads((tmp_path / "a" / CONFIG_NAME).read_text())
    meta["format_version"] = 99
    (tmp_path / "a" / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format version 99; this mefn reads up to 1"):
        load_adapter(make_net(), tmp_path / "a", base_hash)


def test_invalid_stored_config_is_refused(make_net, x, train, tmp_path: Path) -> None:
    _, _, base_hash = _saved(make_net, x, train, tmp_path / "a")
    meta = json.loads((tmp_path / "a" / CONFIG_NAME).read_text())
    meta["config"]["rnak"] = 3
    (tmp_path / "a" / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="invalid adapter config .*did you mean 'rank'"):
        load_adapter(make_net(), tmp_path / "a", base_hash)


def test_missing_folder_and_files(make_net, x, train, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_adapter(make_net(), tmp_path / "nowhere", "h")
    _, _, base_hash = _saved(make_net, x, train, tmp_path / "a")
    (tmp_path / "a" / WEIGHTS_NAME).unlink()
    with pytest.raises(CheckpointError, match="has no adapter_model.safetensors"):
        load_adapter(make_net(), tmp_path / "a", base_hash)


def test_adapter_for_another_architecture_is_refused(make_net, x, train, tmp_path: Path) -> None:
    _, _, base_hash = _saved(make_net, x, train, tmp_path / "a")
    other = nn.Sequential(nn.Conv3d(2, 4, 3))
    with pytest.raises(CheckpointError, match="made for other layers than this model has"):
        load_adapter(other, tmp_path / "a", base_hash)


def test_shape_mismatch_is_refused_and_model_restored(make_net, x, train, tmp_path: Path) -> None:
    _, _, base_hash = _saved(make_net, x, train, tmp_path / "a")
    other = make_net()
    other.head = nn.Conv3d(8, 3, 1)  # same names, another output size
    expected = other(x)
    with pytest.raises(CheckpointError, match="tensor head.* the adapter belongs to another model"):
        load_adapter(other, tmp_path / "a", base_hash)
    assert isinstance(other.head, nn.Conv3d)
    assert torch.equal(other(x), expected)
    inject_adapters(other, load_adapter_config("lora"))  # and it can take adapters again


def test_saving_a_model_without_adapters_is_refused(make_net, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="carries no adapters"):
        save_adapter(make_net(), tmp_path / "a", "h")


def test_shared_tensors_are_stored_once(make_net, x, train, tmp_path: Path) -> None:
    _, handle, _ = _saved(make_net, x, train, tmp_path / "a", name="compacter")
    meta = json.loads((tmp_path / "a" / CONFIG_NAME).read_text())
    rules = [n for n in handle.adapter_state() if n.endswith("rules.weight")]
    assert len(rules) == 12
    assert len(meta["aliases"]) == 11
    tensors = load_file(str(tmp_path / "a" / WEIGHTS_NAME))
    assert sum(n.endswith("rules.weight") for n in tensors) == 1


def test_paca_is_saved_as_column_indices_and_values(make_net, x, train, tmp_path: Path) -> None:
    net, handle, base_hash = _saved(make_net, x, train, tmp_path / "a", name="paca")
    tensors = load_file(str(tmp_path / "a" / WEIGHTS_NAME))
    columns = tensors["fusion.2.delta.columns"]
    values = tensors["fusion.2.delta.values"]
    assert columns.dtype == torch.int64 and columns.shape == (8,)
    assert values.shape == (8, 8)  # C_out rows x 8 columns
    assert len(torch.unique(columns)) == 8 and int(columns.max()) < 8 * 27
    # the merged kernel differs from the base exactly in those columns
    conv = net.fusion[2]
    before = conv.base.weight.detach().reshape(8, -1).clone()
    delta = conv.delta.delta_weight(conv.base).reshape(8, -1)
    changed = torch.nonzero((delta != 0).any(dim=0)).flatten()
    assert set(changed.tolist()) <= set(columns.tolist()) and len(changed) > 0
    assert torch.equal(before, conv.base.weight.detach().reshape(8, -1))


def _wide_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Conv3d(96, 96, 3, padding=1) for _ in range(6)])


def test_one_bit_file_is_at_most_a_25th_of_fp32(tmp_path: Path) -> None:
    model = _wide_model()
    handle = inject_adapters(model, load_adapter_config("lowbit"))
    with torch.no_grad():  # a trained-looking adapter (the up projections start at zero)
        for p in handle.trainable_parameters().values():
            p.normal_()
    xin = torch.randn(1, 96, 5, 6, 7)
    expected = model(xin)
    save_adapter(handle, tmp_path / "one_bit", "h")
    handle.config = dataclasses.replace(handle.config, quant=QuantConfig(bits=1, packed=False))
    save_adapter(handle, tmp_path / "fp32", "h")
    one_bit = (tmp_path / "one_bit" / WEIGHTS_NAME).stat().st_size
    fp32 = (tmp_path / "fp32" / WEIGHTS_NAME).stat().st_size
    assert fp32 > 4 * handle.num_trainable()
    assert one_bit * 25 <= fp32, (one_bit, fp32)
    tensors = load_file(str(tmp_path / "one_bit" / WEIGHTS_NAME))
    assert set(tensors) == {PACKED_CODES, PACKED_SCALES}
    assert tensors[PACKED_CODES].dtype == torch.uint8
    assert tensors[PACKED_SCALES].dtype == torch.float16  # exact: quantize_codes rounds to it
    assert tensors[PACKED_CODES].numel() == -(-handle.num_trainable() // 8)
    # the 1-bit file reproduces the quantisation-aware forward pass exactly
    fresh = _wide_model()
    load_adapter(fresh, tmp_path / "one_bit", "h")
    assert torch.equal(fresh(xin), expected)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_packed_low_bit_round_trip(bits: int, make_net, x, train, tmp_path: Path) -> None:
    cfg = dataclasses.replace(load_adapter_config("lowbit"), quant=QuantConfig(bits=bits))
    net = make_net()
    handle = inject_adapters(net, cfg)
    train(net, handle, x, steps=2, lr=0.01)
    save_adapter(handle, tmp_path / "a", "h")
    codes = load_file(str(tmp_path / "a" / WEIGHTS_NAME))[PACKED_CODES]
    assert codes.numel() == -(-handle.num_trainable() * bits // 8)
    fresh = make_net()
    load_adapter(fresh, tmp_path / "a", "h")
    assert torch.equal(fresh(x), net(x))


def test_low_bit_lora_uses_own_modules_and_round_trips(make_net, x, train, tmp_path) -> None:
    cfg = AdapterConfig(type="lora", quant=QuantConfig(bits=2), targets=TargetConfig())
    net = make_net()
    handle = inject_adapters(net, cfg)
    assert set(handle.targets.values()) == {"own"}
    train(net, handle, x, steps=2, lr=0.01)
    save_adapter(handle, tmp_path / "a", "h")
    fresh = make_net()
    load_adapter(fresh, tmp_path / "a", "h")
    assert torch.equal(fresh(x), net(x))


def test_ia3_saved_before_ia3_scale_loads_as_the_output_scale_it_was(
    make_net, x, train, tmp_path: Path
) -> None:
    """Adapter files written before ``ia3_scale`` existed scaled output channels."""
    net = make_net()
    base_hash = model_hash(net.state_dict())
    cfg = dataclasses.replace(load_adapter_config("ia3"), ia3_scale="output")
    handle = inject_adapters(net, cfg)
    train(net, handle, x, steps=2, lr=0.01)
    expected = net(x)
    save_adapter(handle, tmp_path / "old", base_hash)
    meta_path = tmp_path / "old" / CONFIG_NAME
    meta = json.loads(meta_path.read_text())
    del meta["config"]["ia3_scale"]
    meta_path.write_text(json.dumps(meta))
    fresh = make_net()
    loaded = load_adapter(fresh, tmp_path / "old", base_hash)
    assert loaded.config.ia3_scale == "output"
    assert torch.allclose(fresh(x), expected, atol=1e-6)
