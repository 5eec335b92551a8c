"""Adapter files: ``adapter_model.safetensors`` plus ``adapter_config.json`` in one folder.

The JSON says what the tensors are: format marker and version, adapter type and resolved
config, the adapted module names, the hash of the base model the adapter was trained on,
the mefn version, aliases for tensors shared by several modules (stored once), the bit
packing layout of low-bit adapters, new output heads (their module names, ``num_classes`` and
class ``labels``) and the sha256 of the safetensors file. Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mefn.adapters.config import AdapterConfig
from mefn.adapters.inject import (
    AdapterHandle,
    _handle_of,
    _inject,
    plan_targets,
    remove_adapters,
)
from mefn.adapters.quant import (
    dequantize,
    pack_codes,
    quantize_codes,
    scales_fit_half,
    unpack_codes,
)
from mefn.config import from_dict, to_dict
from mefn.errors import CheckpointError, ConfigError
from mefn.fileutil import atomic_path, atomic_write_text, check_writable_dir, file_sha256

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "load_adapter", "model_hash", "save_adapter"]

log = logging.getLogger(__name__)

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT = "mefn-adapter"
FORMAT_VERSION = 1
PACKED_CODES = "__packed__.codes"
PACKED_SCALES = "__packed__.scales"
LAE_PREFIX = "__lae_offline__."


def model_hash(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the sorted tensor names, each with its dtype, shape and raw bytes."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode("utf-8"))
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _resolve(model_or_handle: nn.Module | AdapterHandle) -> AdapterHandle:
    if isinstance(model_or_handle, AdapterHandle):
        return model_or_handle
    handle = _handle_of(model_or_handle)
    if handle is None:
        raise ConfigError(
            "this model carries no adapters (or they were merged); call inject_adapters first"
        )
    return handle


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """One entry per distinct tensor; aliases map the other names to the kept one."""
    first_by_id: dict[int, str] = {}
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, t in state.items():
        if id(t) in first_by_id:
            aliases[name] = first_by_id[id(t)]
        else:
            first_by_id[id(t)] = name
            unique[name] = t
    return unique, aliases


def save_adapter(
    model_or_handle: nn.Module | AdapterHandle,
    directory: str | os.PathLike[str],
    base_model_hash: str,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Write the adapter of a model (or handle) to ``directory``; returns the folder.

    ``base_model_hash`` identifies the base weights (e.g. :func:`model_hash` of the base
    state dict, or the sha256 of the weights file); :func:`load_adapter` refuses any other.
    MoSA adapters are saved dense; low-bit adapters with ``quant.packed`` as packed codes.
    New output heads (``config.heads``) are saved whole; ``labels`` (class index as a string
    -> name, e.g. ``{"1": "GTVp", "2": "GTVn"}``) names their classes.
    """
    handle = _resolve(model_or_handle)
    num_classes = handle.num_classes
    if labels is not None and num_classes is not None and len(labels) != num_classes:
        raise ConfigError(
            f"labels name {len(labels)} classes but the adapter's heads have {num_classes}; "
            "give one name per class, background included"
        )
    folder = check_writable_dir(directory)
    cfg = handle.config
    unique, aliases = _dedupe(handle.adapter_state())
    dense = handle.mosa.dense_weights() if handle.mosa is not None else contextlib.nullcontext()
    with dense:  # MoSA: the merged dense adapter, not the active sparse part
        tensors = {n: t.detach().cpu().clone().contiguous() for n, t in unique.items()}

    packing: dict[str, Any] | None = None
    if cfg.quant.bits and cfg.quant.packed:
        bits = cfg.quant.bits
        qnames = sorted({aliases.get(n, n) for n in handle.quantised_names()})
        codes, scales, layout = [], [], []
        for name in qnames:
            c, mean, std = quantize_codes(tensors.pop(name), bits)
            layout.append([name, list(c.shape)])
            codes.append(c.reshape(-1))
            scales.append(torch.stack([mean, std]))
        tensors[PACKED_CODES] = pack_codes(torch.cat(codes), bits)
        stacked = torch.stack(scales).to(torch.float32)
        # float16 when that is exact (quantize_codes rounds to it): 4 bytes per tensor, not 8
        tensors[PACKED_SCALES] = stacked.half() if scales_fit_half(stacked) else stacked
        packing = {"bits": bits, "tensors": layout}

    lae: dict[str, Any] | None = None
    if handle.lae is not None:
        for name, t in handle.lae.offline.items():
            tensors[LAE_PREFIX + name] = t.detach().cpu().clone().contiguous()
        lae = {"sites": list(handle.lae.sites), "steps": handle.lae.steps}

    from safetensors.torch import save_file

    import mefn

    weights_path = folder / WEIGHTS_NAME
    with atomic_path(weights_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mefn_version": mefn.__version__,
        "type": cfg.type,
        "config": to_dict(cfg),
        "targets": handle.targets,
        "base_model_hash": base_model_hash,
        "num_parameters": handle.num_trainable(),
        "aliases": aliases,
        "packing": packing,
        "lae": lae,
        "num_classes": num_classes,
        "heads": sorted(handle.base_heads),
        "labels": dict(labels) if labels is not None else handle.labels,
        "weights_sha256": file_sha256(weights_path),
    }
    atomic_write_text(folder / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
    log.info("saved %s adapter (%d tensors) to %s", cfg.type, len(tensors), folder)
    return folder


def _read_meta(folder: Path) -> dict[str, Any]:
    if not folder.is_dir():
        raise CheckpointError(
            f"adapter folder {folder} does not exist; give the folder written by save_adapter"
        )
    cfg_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise CheckpointError(
                f"adapter folder {folder} has no {path.name}; expected {CONFIG_NAME} and "
                f"{WEIGHTS_NAME} as written by save_adapter"
            )
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{cfg_path} is not valid JSON ({type(exc).__name__}); the adapter folder is "
            "corrupt, save the adapter again"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            f"{cfg_path} is not a mefn adapter config (format {found!r}, expected {FORMAT!r}); "
            "use a folder written by mefn's save_adapter"
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path} has adapter format version {version!r}; this mefn reads up to "
            f"{FORMAT_VERSION}, upgrade mefn"
        )
    return meta


def load_adapter(
    model: nn.Module, directory: str | os.PathLike[str], expected_base_hash: str
) -> AdapterHandle:
    """Inject the adapter saved in ``directory`` into ``model`` (a fresh base) and load it.

    Raises CheckpointError when the adapter was trained on another base model (its recorded
    hash differs from ``expected_base_hash``), when a file is corrupt or foreign, or when the
    tensors do not fit the model. On error the model is left as it was.
    """
    folder = Path(directory)
    meta = _read_meta(folder)
    stored = meta.get("base_model_hash")
    if stored != expected_base_hash:
        raise CheckpointError(
            f"adapter {folder} was trained on base model {str(stored)[:16]}..., but this model "
            f"is {expected_base_hash[:16]}...; load it onto the base weights it was trained on"
        )
    weights_path = folder / WEIGHTS_NAME
    if meta.get("weights_sha256") != file_sha256(weights_path):
        raise CheckpointError(
            f"{weights_path} does not match the checksum in {CONFIG_NAME}: the file is corrupt "
            "or was replaced; save the adapter again"
        )
    try:
        saved = meta.get("config")
        if isinstance(saved, dict) and saved.get("type") == "ia3" and "ia3_scale" not in saved:
            saved = {**saved, "ia3_scale": "output"}  # saved before ia3_scale: output scales
        cfg = from_dict(AdapterConfig, saved, where=f"{CONFIG_NAME} config")
    except ConfigError as exc:
        raise CheckpointError(f"{folder}: invalid adapter config ({exc})") from None
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{weights_path} is not a readable safetensors file ({exc}); save the adapter again"
        ) from None

    plan = plan_targets(model, cfg)
    if plan != meta.get("targets"):
        saved = sorted(meta.get("targets") or {})
        missing = [n for n in saved if n not in plan]
        extra = [n for n in plan if n not in saved]
        raise CheckpointError(
            f"adapter {folder} was made for other layers than this model has (missing here: "
            f"{missing[:3]}, new here: {extra[:3]}); is this the model it was trained for?"
        )
    handle = _inject(model, cfg, for_loading=True, plan=plan)
    try:
        _fill(handle, tensors, meta, folder)
    except BaseException:
        remove_adapters(model)
        raise
    labels = meta.get("labels")
    if isinstance(labels, dict):
        handle.labels = {str(k): str(v) for k, v in labels.items()}
    log.info("loaded %s adapter from %s (%d targets)", cfg.type, folder, len(plan))
    return handle


def _fill(
    handle: AdapterHandle, tensors: dict[str, torch.Tensor], meta: dict[str, Any], folder: Path
) -> None:
    packing = meta.get("packing")
    if packing:
        bits = int(packing["bits"])
        codes_all = tensors.pop(PACKED_CODES, None)
        scales = tensors.pop(PACKED_SCALES, None)
        if scales is not None:
            scales = scales.to(torch.float32)
        layout = packing["tensors"]
        if codes_all is None or scales is None or scales.shape != (len(layout), 2):
            raise CheckpointError(
                f"{folder / WEIGHTS_NAME} lacks the packed codes its config describes; "
                "the adapter is corrupt"
            )
        total = sum(int(torch.Size(shape).numel()) for _, shape in layout)
        codes_flat = unpack_codes(codes_all, bits, total)
        offset = 0
        for i, (name, shape) in enumerate(layout):
            count = int(torch.Size(shape).numel())
            codes = codes_flat[offset : offset + count].reshape(shape)
            offset += count
            tensors[name] = dequantize(codes, scales[i, 0], scales[i, 1], bits)
        handle.set_quant_bits(0)  # the weights are quantised already
    offline = {
        n[len(LAE_PREFIX) :]: tensors.pop(n) for n in list(tensors) if n.startswith(LAE_PREFIX)
    }
    for alias, canonical in (meta.get("aliases") or {}).items():
        if canonical in tensors:
            tensors[alias] = tensors[canonical]
    expected = handle.adapter_state()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{folder / WEIGHTS_NAME} does not fit this adapter (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); the file is corrupt or from another adapter"
        )
    with torch.no_grad():
        for name, target in expected.items():
            value = tensors[name]
            if value.shape != target.shape:
                raise CheckpointError(
                    f"{folder / WEIGHTS_NAME}: tensor {name} has shape {tuple(value.shape)}, "
                    f"the model expects {tuple(target.shape)}; the adapter belongs to another model"
                )
            target.copy_(value.to(target.dtype))
    if handle.lae is not None:
        params = handle.lae.params
        if set(offline) != set(params):
            raise CheckpointError(
                f"{folder / WEIGHTS_NAME} lacks the LAE offline adapter; the file is corrupt"
            )
        for name, value in offline.items():
            handle.lae.offline[name] = value.to(params[name].device, params[name].dtype).clone()
        lae_meta = meta.get("lae") or {}
        handle.lae.sites = list(lae_meta.get("sites", []))
        handle.lae.steps = int(lae_meta.get("steps", 0))
