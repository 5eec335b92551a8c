"""Putting adapters into a model, listing what trains, and folding them back in."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from mefn.adapters.config import AdapterConfig
from mefn.adapters.lae import LAEController
from mefn.adapters.modules import (
    AdaptedModule,
    BoneDelta,
    BottleneckDelta,
    DeltaModule,
    Gate,
    LoRADelta,
    PaCADelta,
    PHMDelta,
    PHMRules,
    ScaleShiftDelta,
)
from mefn.adapters.mosa import MosaController
from mefn.adapters.targets import (
    _under,
    branch_key,
    channels_of,
    replace_submodule,
    select_targets,
)
from mefn.errors import ConfigError

__all__ = [
    "AdapterHandle",
    "inject_adapters",
    "merge_adapters",
    "plan_targets",
    "remove_adapters",
    "trainable_parameters",
]

log = logging.getLogger(__name__)

HANDLE_ATTR = "_mefn_adapter_handle"
PEFT = "peft"
OWN = "own"
CONV_TYPES = (nn.Conv3d, nn.ConvTranspose3d)
CONV_ONLY_TYPES = ("lora", "dora", "paca", "bone")
BASE_CLASSES_ATTR = "_mefn_base_num_classes"
HEAD_SEED_OFFSET = 7919  # new heads draw from seed + this, apart from the adapters' stream


@dataclass(eq=False)
class AdapterHandle:
    """What :func:`inject_adapters` did to a model, and the hooks a training loop calls.

    ``targets`` maps each adapted module's dotted name to ``"peft"`` or ``"own"`` (which
    implementation adapts it). Call :meth:`on_step` after every ``optimizer.step()``
    (MoSA part switching, LAE EMA update). ``base_heads`` maps each replaced head convolution
    (``config.heads``) to the base module it replaced; ``labels`` names the classes of new
    heads when the adapter file records them.
    """

    model: nn.Module
    config: AdapterConfig
    targets: dict[str, str]
    base_ids: set[int] = field(repr=False)
    mosa: MosaController | None = None
    lae: LAEController | None = None
    base_heads: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    labels: dict[str, str] | None = None

    @property
    def num_classes(self) -> int | None:
        """Output classes of the new heads, or None when the base's heads are kept."""
        return self.config.heads.num_classes or None

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Adapter parameters by name (a shared tensor appears once)."""
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters().values())

    def on_step(self) -> None:
        """Call after each optimiser step."""
        if self.mosa is not None:
            self.mosa.on_step()
        if self.lae is not None:
            self.lae.on_step()

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Every tensor of the model's state that is not a base tensor (shared ones repeated)."""
        state = self.model.state_dict(keep_vars=True)
        return {n: t for n, t in state.items() if id(t) not in self.base_ids}

    def own_modules(self) -> Iterator[tuple[str, AdaptedModule]]:
        for name, kind in self.targets.items():
            if kind == OWN:
                module = self.model.get_submodule(name)
                if isinstance(module, AdaptedModule):
                    yield name, module

    def quantised_names(self) -> list[str]:
        """State names of the tensors that the forward pass fake-quantises."""
        names: list[str] = []
        for name, module in self.own_modules():
            names += [f"{name}.delta.{q}" for q in module.delta.quantised_names()]
        return names

    def set_quant_bits(self, bits: int) -> None:
        for _, module in self.own_modules():
            for sub in module.delta.modules():
                if isinstance(sub, DeltaModule):
                    sub.quant_bits = bits


def _handle_of(model: nn.Module) -> AdapterHandle | None:
    handle = model.__dict__.get(HANDLE_ATTR)
    return handle if isinstance(handle, AdapterHandle) else None


def _peft_lora_safe(module: nn.Module) -> bool:
    """peft 0.21.2 merges LoRA/DoRA correctly only on plain Conv3d (see docs/adapters.md)."""
    if not isinstance(module, nn.Conv3d):
        return False
    return (
        module.groups == 1
        and all(d == 1 for d in module.dilation)
        and tuple(module.kernel_size[:2]) != (1, 1)
        and module.padding_mode == "zeros"
    )


def plan_targets(model: nn.Module, cfg: AdapterConfig) -> dict[str, str]:
    """Target name -> implementation (``"peft"`` or ``"own"``), checking each fits the type.

    Type ``none`` has no targets; modules under replaced heads (``cfg.heads``) are never
    targets (the new heads train whole).
    """
    plan: dict[str, str] = {}
    if cfg.type == "none":
        return plan
    targets = cfg.targets
    if cfg.heads.num_classes:
        heads = tuple(p for h in cfg.heads.names for p in (h, f"{h}.*"))
        targets = dataclasses.replace(targets, exclude=targets.exclude + heads)
    for name in select_targets(model, targets):
        module = model.get_submodule(name)
        kind = type(module).__name__
        conv = isinstance(module, CONV_TYPES)
        if cfg.type in CONV_ONLY_TYPES and not conv:
            raise ConfigError(
                f"{cfg.type} adapters need Conv3d or ConvTranspose3d targets, but {name!r} is "
                f"a {kind}; set targets.layer_types to convolution classes"
            )
        if (
            cfg.type == "bottleneck"
            and cfg.placement == "parallel"
            and not isinstance(module, nn.Conv3d)
        ):
            raise ConfigError(
                f"a parallel bottleneck adapter needs Conv3d targets, but {name!r} is a {kind}; "
                "use placement: sequential for blocks and transposed convolutions"
            )
        if cfg.type == "compacter" and cfg.placement == "parallel":
            raise ConfigError("compacter adapters are sequential; set placement: sequential")
        if not cfg.uses_own_modules_only and (
            (cfg.type in ("lora", "dora") and _peft_lora_safe(module))
            or (cfg.type == "ia3" and isinstance(module, nn.Conv3d))
        ):
            plan[name] = PEFT
        else:
            plan[name] = OWN
    return plan


def _inject_peft(model: nn.Module, cfg: AdapterConfig, names: list[str]) -> None:
    from peft import IA3Config, LoraConfig, inject_adapter_in_model

    pattern = "^(?:" + "|".join(re.escape(n) for n in names) + ")$"
    peft_cfg: Any
    if cfg.type == "ia3":
        feedforward: str | list[str] = pattern if cfg.ia3_scale == "input" else []
        peft_cfg = IA3Config(target_modules=pattern, feedforward_modules=feedforward)
    else:
        peft_cfg = LoraConfig(
            r=cfg.rank,
            lora_alpha=cast(int, cfg.alpha),  # peft annotates int; a float works
            lora_dropout=cfg.dropout,
            target_modules=pattern,
            use_dora=cfg.type == "dora",
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        inject_adapter_in_model(peft_cfg, model, adapter_name="default")


def _device_of(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    return torch.device("cpu")


def _hidden(channels: int, reduction: int, multiple: int) -> int:
    hidden = max(channels // reduction, multiple)
    return -(-hidden // multiple) * multiple


def _build_delta(
    cfg: AdapterConfig,
    name: str,
    module: nn.Module,
    generator: torch.Generator,
    rules: PHMRules | None,
) -> DeltaModule:
    c_in, c_out = channels_of(module, name)
    if cfg.type in ("lora", "dora"):
        conv = cast(nn.Conv3d, module)
        return LoRADelta(
            conv, cfg.rank, cfg.alpha, cfg.type == "dora", cfg.dropout, generator, name
        )
    if cfg.type in ("ia3", "norm_bias"):
        return ScaleShiftDelta(c_out, shift=cfg.type == "norm_bias")
    if cfg.type == "bottleneck":
        if cfg.placement == "sequential":
            c_in = c_out
        hidden = _hidden(c_out, cfg.reduction, 1)
        return BottleneckDelta(
            module, c_in, c_out, hidden, cfg.placement, cfg.activation, generator
        )
    if cfg.type == "compacter":
        n = cfg.phm_n
        if c_out % n:
            raise ConfigError(
                f"compacter on {name!r}: its {c_out} channels are not divisible by phm_n={n}; "
                "choose a phm_n that divides every target's channel count or exclude the layer"
            )
        assert rules is not None  # built by the caller for this type
        return PHMDelta(
            c_out, _hidden(c_out, cfg.reduction, n), cfg.rank, rules, cfg.activation, generator
        )
    if cfg.type == "paca":
        return PaCADelta(cast(nn.Conv3d, module), cfg.rank, generator)
    if cfg.type == "bone":
        return BoneDelta(cast(nn.Conv3d, module), cfg.block_size, name)
    raise ConfigError(f"unknown adapter type {cfg.type!r}")  # pragma: no cover


def _placement(cfg: AdapterConfig) -> str:
    if cfg.type in ("ia3", "norm_bias", "compacter"):
        return "sequential"
    if cfg.type == "bottleneck":
        return cfg.placement
    return "parallel"


def _inject_own(model: nn.Module, cfg: AdapterConfig, names: list[str]) -> None:
    generator = torch.Generator().manual_seed(cfg.seed)
    shared_rules = PHMRules(cfg.phm_n, generator) if cfg.type == "compacter" else None
    by_key: dict[str, tuple[str, DeltaModule]] = {}
    share_branches = cfg.share.across_branches and cfg.type in ("bottleneck", "compacter")
    for name in names:
        module = model.get_submodule(name)
        device = _device_of(module)
        key = branch_key(name, cfg.share.branch_prefixes) if share_branches else None
        if key is not None and key in by_key:
            first, delta = by_key[key]
            if channels_of(module, name) != channels_of(model.get_submodule(first), first):
                raise ConfigError(
                    f"cannot share one adapter between {first!r} and {name!r}: their channel "
                    "counts differ; set share.across_branches: false"
                )
        else:
            rules = shared_rules
            if cfg.type == "compacter" and not cfg.share.rules:
                rules = PHMRules(cfg.phm_n, generator)
            delta = _build_delta(cfg, name, module, generator, rules).to(device)
            if key is not None:
                by_key[key] = (name, delta)
        delta.quant_bits = cfg.quant.bits
        gate = None
        if cfg.gate.granularity != "none":
            gate = Gate(channels_of(module, name)[1], cfg.gate.granularity).to(device)
        replace_submodule(model, name, AdaptedModule(module, delta, _placement(cfg), gate))


def inject_adapters(model: nn.Module, cfg: AdapterConfig) -> AdapterHandle:
    """Freeze ``model`` and add the adapters ``cfg`` describes; returns the handle.

    The base tensors are neither copied nor changed. The handle is also kept on the model, so
    :func:`trainable_parameters`, :func:`merge_adapters` and ``save_adapter`` accept either.
    """
    return _inject(model, cfg, for_loading=False)


def _inject(
    model: nn.Module, cfg: AdapterConfig, for_loading: bool, plan: dict[str, str] | None = None
) -> AdapterHandle:
    if _handle_of(model) is not None:
        raise ConfigError(
            "this model already carries adapters; inject into a fresh base model or call "
            "merge_adapters first"
        )
    if cfg.type == "none" and not cfg.heads.num_classes:
        raise ConfigError(
            "adapter type none trains only new output heads, but heads.num_classes is 0; "
            "set heads.num_classes (e.g. 3 for GTVp/GTVn; mefn finetune --num-classes) or "
            "choose an adapter type"
        )
    plan = plan_targets(model, cfg) if plan is None else plan
    heads = [_head_conv(model, h) for h in cfg.heads.names] if cfg.heads.num_classes else []
    base_ids = {id(t) for t in model.state_dict(keep_vars=True).values()}
    for p in model.parameters():
        p.requires_grad_(False)
    peft_names = [n for n, k in plan.items() if k == PEFT]
    own_names = [n for n, k in plan.items() if k == OWN]
    if peft_names:
        _inject_peft(model, cfg, peft_names)
    if own_names:
        _inject_own(model, cfg, own_names)
    handle = AdapterHandle(model=model, config=cfg, targets=dict(plan), base_ids=base_ids)
    params = handle.trainable_parameters()
    if cfg.mosa.parts > 1 and not for_loading:
        generator = torch.Generator().manual_seed(cfg.seed + 1)
        handle.mosa = MosaController(params, cfg.mosa.parts, generator)
    if cfg.lae.enabled:
        handle.lae = LAEController(params, cfg.lae.ema_decay, cfg.lae.ensemble)
    if heads:  # after MoSA/LAE: the new heads train dense and are not ensembled
        handle.base_heads = _replace_heads(model, cfg, heads)
    model.__dict__[HANDLE_ATTR] = handle
    log.info(
        "adapters %s: %d targets (%d via peft), %d new heads, %d trainable parameters",
        cfg.type,
        len(plan),
        len(peft_names),
        len(handle.base_heads),
        handle.num_trainable(),
    )
    return handle


def _head_conv(model: nn.Module, head: str) -> tuple[str, nn.Conv3d]:
    """Dotted name and module of the last Conv3d in (or at) the head module ``head``."""
    names = {n for n, _ in model.named_modules() if n}
    if head not in names:
        top = sorted({n.split(".")[0] for n in names})
        raise ConfigError(
            f"heads.names lists {head!r}, which is no module of the model (top-level modules: "
            f"{', '.join(top)}); set heads.names to the output head modules"
        )
    convs = [
        (n, m) for n, m in model.named_modules() if _under(n, head) and isinstance(m, nn.Conv3d)
    ]
    if not convs:
        raise ConfigError(
            f"output head {head!r} holds no Conv3d to replace; heads.names must name "
            "convolutional output heads"
        )
    return convs[-1]


def _replace_heads(
    model: nn.Module, cfg: AdapterConfig, found: list[tuple[str, nn.Conv3d]]
) -> dict[str, nn.Module]:
    """Put fresh ``heads.num_classes``-output convolutions in place of the heads' last convs.

    The new convolutions copy the old ones' geometry and use PyTorch's default
    initialisation, drawn from ``cfg.seed`` without touching the global random stream.
    Returns the replaced base modules by name (the model's ``num_classes`` follows).
    """
    k = cfg.heads.num_classes
    old: dict[str, nn.Module] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + HEAD_SEED_OFFSET)
        for name, conv in found:
            new = nn.Conv3d(
                conv.in_channels,
                k,
                cast(Any, conv.kernel_size),
                stride=cast(Any, conv.stride),
                padding=cast(Any, conv.padding),
                dilation=cast(Any, conv.dilation),
                groups=1,
                bias=conv.bias is not None,
                padding_mode=conv.padding_mode,
            ).to(device=conv.weight.device, dtype=conv.weight.dtype)
            replace_submodule(model, name, new)
            old[name] = conv
    if isinstance(getattr(model, "num_classes", None), int):
        model.__dict__[BASE_CLASSES_ATTR] = model.num_classes
        setattr(model, "num_classes", k)  # noqa: B010 - nn.Module's attribute is untyped
    return old


def _restore_heads(model: nn.Module, handle: AdapterHandle) -> None:
    for name, module in handle.base_heads.items():
        replace_submodule(model, name, module)
    if BASE_CLASSES_ATTR in model.__dict__:
        setattr(model, "num_classes", model.__dict__.pop(BASE_CLASSES_ATTR))  # noqa: B010
    handle.base_heads = {}


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters an optimiser should update, by name (shared tensors once)."""
    handle = _handle_of(model)
    if handle is not None:
        return handle.trainable_parameters()
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _unwrap(model: nn.Module, name: str) -> None:
    module = model.get_submodule(name)
    if isinstance(module, AdaptedModule):
        replace_submodule(model, name, module.base)
    elif hasattr(module, "get_base_layer"):
        replace_submodule(model, name, cast(Any, module).get_base_layer())


def remove_adapters(model: nn.Module) -> None:
    """Undo an unmerged injection: the base modules go back, the adapters are dropped."""
    handle = _handle_of(model)
    if handle is None:
        return
    for name in handle.targets:
        _unwrap(model, name)
    _restore_heads(model, handle)
    model.__dict__.pop("peft_config", None)
    model.__dict__.pop(HANDLE_ATTR, None)


def merge_adapters(model: nn.Module) -> list[str]:
    """Fold every adapter that allows it into its base module; returns those left unmerged.

    Merged layers become their plain base modules again (with changed weights); new output
    heads (``heads``) stay in place. MoSA parts are merged into dense adapters first. LAE
    adapters stay unmerged (the ensemble needs both the online and the offline adapter).
    """
    handle = _handle_of(model)
    if handle is None:
        return []
    if handle.mosa is not None:
        handle.mosa.finish()
    if handle.lae is not None:
        log.info("LAE adapters are ensembled at inference and are not merged")
        return list(handle.targets)
    unmerged: list[str] = []
    with torch.no_grad():
        for name, kind in handle.targets.items():
            module = model.get_submodule(name)
            if kind == PEFT:
                cast(Any, module).merge()
                _unwrap(model, name)
                continue
            if not isinstance(module, AdaptedModule):  # pragma: no cover - defensive
                unmerged.append(name)
                continue
            found = module.merge_delta()
            if found is None:
                unmerged.append(name)
                continue
            dw, db = found
            base = module.base
            weight = cast(torch.Tensor, base.weight)
            weight.add_(dw.to(weight.dtype))
            if db is not None:
                bias = getattr(base, "bias", None)
                if isinstance(bias, torch.Tensor):
                    bias.add_(db.to(bias.dtype))
                else:
                    base.bias = nn.Parameter(
                        db.detach().clone().to(weight.dtype), requires_grad=False
                    )
            replace_submodule(model, name, base)
    handle.targets = {n: OWN for n in unmerged}
    if not any(k == PEFT for k in handle.targets.values()):
        model.__dict__.pop("peft_config", None)
    if not unmerged:
        model.__dict__.pop(HANDLE_ATTR, None)
    else:
        log.info(
            "%d adapted layers cannot be merged and stay as adapters: %s",
            len(unmerged),
            ", ".join(unmerged),
        )
    return unmerged
