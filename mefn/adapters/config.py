"""``AdapterConfig``: what to inject, where, and how (frozen dataclasses read from YAML).

One adapter *type* (``lora``, ``dora``, ``ia3``, ``norm_bias``, ``bottleneck``,
``compacter``, ``paca``, ``bone``, or ``none`` for head-only tuning) plus optional *modifiers*
that work on top of it: MoSA sparse training (``mosa``), low-bit weights (``quant``),
VL-PET-style gates (``gate``) and the LAE online/offline pair (``lae``); ``heads`` replaces the
output heads for another label set (they train with the adapter and are saved in its file).
``configs/adapters/<name>.yaml`` holds one ready configuration per method; see
``docs/adapters.md`` for the maths and parameter counts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from mefn.config import load_config
from mefn.errors import ConfigError

__all__ = [
    "ADAPTER_TYPES",
    "AdapterConfig",
    "GateConfig",
    "HeadsConfig",
    "LAEConfig",
    "MosaConfig",
    "QuantConfig",
    "ShareConfig",
    "TargetConfig",
    "load_adapter_config",
]

AdapterType = Literal[
    "lora", "dora", "ia3", "norm_bias", "bottleneck", "compacter", "paca", "bone", "none"
]
ADAPTER_TYPES: tuple[str, ...] = get_args(AdapterType)

#: The bundled adapter YAML files (``mefn/configs/adapters``, inside the package).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "adapters"

# Types whose weights go through the quantiser (hand-written modules with weight matrices).
QUANTISABLE_TYPES = ("lora", "dora", "bottleneck", "compacter")


@dataclass(frozen=True)
class TargetConfig:
    """Which modules receive an adapter.

    A module is a target when its class name is in ``layer_types``, its dotted name starts
    with one of ``prefixes`` (all modules when empty) and matches none of the ``exclude``
    glob patterns (``fnmatch`` syntax on the dotted name, e.g. ``"*final_conv"``). When a
    target contains another target, the outer one wins.
    """

    layer_types: tuple[str, ...] = ("Conv3d",)
    prefixes: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShareConfig:
    """Weight sharing between layers and between the two modality branches.

    ``rules``: Compacter's slow Kronecker factors (the A_i) are one tensor for every layer
    and both branches. ``across_branches``: targets whose names agree once the branch prefix
    is removed (``enc_ct.stage1`` and ``enc_pet.stage1``) use one adapter module
    (bottleneck and compacter types).
    """

    rules: bool = True
    across_branches: bool = False
    branch_prefixes: tuple[str, ...] = ("enc_ct", "enc_pet")


@dataclass(frozen=True)
class MosaConfig:
    """MoSA: split each adapter tensor into ``parts`` random disjoint masks; 1 turns it off."""

    parts: int = 1


@dataclass(frozen=True)
class QuantConfig:
    """Low-bit adapter weights: 0 = full precision, else 1, 2, 4 or 8 bits per weight.

    Training uses the quantised weights in the forward pass with a straight-through gradient;
    ``packed`` stores the saved file as bit-packed codes plus a mean and std per tensor.
    """

    bits: int = 0
    packed: bool = True


@dataclass(frozen=True)
class GateConfig:
    """A learned gate multiplying the adapter's output: per voxel, channel or sample."""

    granularity: Literal["none", "voxel", "channel", "sample"] = "none"


@dataclass(frozen=True)
class LAEConfig:
    """LAE: an online adapter trained as usual and an offline EMA copy, ensembled at inference."""

    enabled: bool = False
    ema_decay: float = 0.999
    ensemble: Literal["max_confidence", "mean_logits"] = "max_confidence"


@dataclass(frozen=True)
class HeadsConfig:
    """New output heads for another label set (e.g. a 2-class base fine-tuned on HECKTOR).

    ``num_classes`` 0 keeps the base's heads (frozen). At 2 or more, the last convolution of
    each module in ``names`` (MEFN's three evidential heads by default) is replaced by a
    freshly initialised one with ``num_classes`` outputs (seeded by the adapter's ``seed``);
    the new heads train with the adapter, are saved in its file, and no adapter is put on them.
    """

    num_classes: int = 0
    names: tuple[str, ...] = ("head_ct", "head_pet", "head_fused")


@dataclass(frozen=True)
class AdapterConfig:
    """Everything that decides an adapter's structure; saved beside its weights.

    ``rank``: LoRA/DoRA rank, PaCA column count, Compacter fast-weight rank.
    ``alpha``: LoRA/DoRA scaling numerator (scaling = alpha / rank).
    ``reduction``: bottleneck/Compacter hidden channels = channels // reduction (at least
    ``phm_n`` for Compacter, rounded up to a multiple of it).
    ``placement``: bottleneck adapter beside the target (``parallel``, same input) or after it
    (``sequential``, on its output). ``activation`` sits between down and up projections.
    ``phm_n``: number of Kronecker terms / size of each rule matrix (Compacter).
    ``block_size``: Bone block size. ``backend``: ``auto`` uses peft where it is correct for
    the layer (LoRA/DoRA/IA3 on plain Conv3d) and the hand-written modules elsewhere;
    ``own`` uses the hand-written modules everywhere. ``type: none`` puts no adapter in the
    body: only new heads train (head-only tuning; injecting it needs ``heads.num_classes``).
    ``ia3_scale``: IA3 on a Conv3d scales its ``input`` channels (peft's feedforward form) or
    its ``output`` channels. In the conv -> instance-norm blocks of MEFN and nnU-Net-style
    networks the norm divides every output channel by its own spread, cancelling an output
    scale, so ``input`` is the form that can adapt them (transposed convolutions, which no
    norm follows, keep the hand-written output scale; ``input`` needs ``backend: auto``).
    ``lr_scale``: multiplies the training learning rate for this adapter's parameters (new
    heads included). Adapters with few parameters move the output little per step: at the
    fine-tuning lr of 2e-3, norm/bias tuning on 5 head-and-neck phantoms (200 steps) stayed at
    DSCagg 0.000, at 1e-2 it reached 0.250 (``docs/adapters.md``); the bundled configs of IA3,
    norm/bias, Compacter and the shared bottleneck set 5.
    """

    type: AdapterType = "lora"
    rank: int = 4
    alpha: float = 8.0
    dropout: float = 0.0
    reduction: int = 4
    placement: Literal["parallel", "sequential"] = "sequential"
    activation: Literal["gelu", "relu", "none"] = "gelu"
    phm_n: int = 4
    block_size: int = 4
    backend: Literal["auto", "own"] = "auto"
    ia3_scale: Literal["input", "output"] = "input"
    lr_scale: float = 1.0
    seed: int = 0
    targets: TargetConfig = field(default_factory=TargetConfig)
    share: ShareConfig = field(default_factory=ShareConfig)
    mosa: MosaConfig = field(default_factory=MosaConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    lae: LAEConfig = field(default_factory=LAEConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)

    def __post_init__(self) -> None:
        if self.type not in ADAPTER_TYPES:
            raise ConfigError(
                f"adapter type must be one of {', '.join(ADAPTER_TYPES)}, found {self.type!r}"
            )
        for name in ("rank", "reduction", "phm_n", "block_size"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"adapter {name} must be at least 1, found {value}")
        if not (math.isfinite(self.lr_scale) and self.lr_scale > 0):
            raise ConfigError(f"adapter lr_scale must be a positive number, found {self.lr_scale}")
        if self.type == "ia3" and self.ia3_scale == "input" and self.backend == "own":
            raise ConfigError(
                "IA3 input scaling (ia3_scale: input) comes from peft; set backend: auto, or "
                "ia3_scale: output for the hand-written output scale"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"adapter dropout must be in [0, 1), found {self.dropout}")
        if self.mosa.parts < 1:
            raise ConfigError(f"mosa.parts must be at least 1 (1 = off), found {self.mosa.parts}")
        if self.quant.bits not in (0, 1, 2, 4, 8):
            raise ConfigError(f"quant.bits must be 0 (off), 1, 2, 4 or 8, found {self.quant.bits}")
        if self.quant.bits and self.type not in QUANTISABLE_TYPES:
            raise ConfigError(
                f"quant.bits applies to {', '.join(QUANTISABLE_TYPES)} adapters, not "
                f"{self.type!r}; set quant.bits: 0"
            )
        if not 0.0 < self.lae.ema_decay < 1.0:
            raise ConfigError(f"lae.ema_decay must be in (0, 1), found {self.lae.ema_decay}")
        if self.lae.enabled and self.mosa.parts > 1:
            raise ConfigError(
                "lae and mosa cannot be combined (the EMA would average masked weights); "
                "set mosa.parts: 1 or lae.enabled: false"
            )
        if self.heads.num_classes == 1 or self.heads.num_classes < 0:
            raise ConfigError(
                f"heads.num_classes must be 0 (keep the base's heads) or at least 2 (background "
                f"+ classes), found {self.heads.num_classes}"
            )
        if self.heads.num_classes and not self.heads.names:
            raise ConfigError("heads.names is empty; name the output head modules to replace")
        if not self.targets.layer_types:
            raise ConfigError("targets.layer_types is empty; name at least one layer class")

    @property
    def uses_own_modules_only(self) -> bool:
        """True when every target must use the hand-written modules (no peft)."""
        return self.backend == "own" or self.gate.granularity != "none" or self.quant.bits > 0


def load_adapter_config(path_or_name: str | os.PathLike[str]) -> AdapterConfig:
    """Read an ``AdapterConfig`` from a YAML path, or from a bundled name like ``"lora"``.

    ``"none"`` (no file) is head-only tuning: ``AdapterConfig(type="none")``.
    """
    if str(path_or_name) == "none":
        return AdapterConfig(type="none")
    path = Path(path_or_name)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        candidate = CONFIG_DIR / f"{path_or_name}.yaml"
        if not candidate.is_file():
            known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) + ["none"]
            raise ConfigError(
                f"no adapter config named {str(path_or_name)!r}; give a .yaml path or one of "
                f"{', '.join(known)}"
            )
        path = candidate
    return load_config(AdapterConfig, path)
