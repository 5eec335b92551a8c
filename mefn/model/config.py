"""Model and loss configuration: frozen dataclasses, loaded from ``configs/model/<name>.yaml``.

Load with ``mefn.config.load_config(ModelConfig, path)``. Every switch that ablates a part of
MEFN lives here, so a run's resolved config says exactly which network was trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mefn.errors import ConfigError

__all__ = ["LossConfig", "ModelConfig"]

Architecture = Literal["mefn", "dynunet", "dynunet_mcdropout"]


@dataclass(frozen=True)
class LossConfig:
    """Weights of the loss terms (see ``mefn.model.losses``).

    Each evidential head (CT, PET, fused, and the Dempster-Shafer combination when
    ``ds_fusion`` is on) gets ``ce_weight * CE + kl_weight * a(epoch) * KL + dice_weight * Dice``,
    scaled by its head weight; ``a(epoch) = min(1, epoch / kl_anneal_epochs)``. The baselines use
    ``ce_weight * CE + dice_weight * Dice``.
    """

    ce_weight: float = 1.0
    dice_weight: float = 1.0
    kl_weight: float = 0.2
    kl_anneal_epochs: int = 10
    modality_weight: float = 0.5
    fused_weight: float = 1.0
    combined_weight: float = 1.0
    uncertainty_weight: float = 0.2
    uncertainty_anneal_epochs: int = 10
    translation_weight: float = 0.2

    def __post_init__(self) -> None:
        for name in (
            "ce_weight",
            "dice_weight",
            "kl_weight",
            "modality_weight",
            "fused_weight",
            "combined_weight",
            "uncertainty_weight",
            "translation_weight",
        ):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(f"loss.{name} must be >= 0, found {value}; use 0 to disable")
        for name in ("kl_anneal_epochs", "uncertainty_anneal_epochs"):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(
                    f"loss.{name} must be >= 0 epochs, found {value}; use 0 for no annealing"
                )


@dataclass(frozen=True)
class ModelConfig:
    """The network: MEFN or a DynUNet baseline.

    ``widths`` gives the feature width at each resolution level (finest first); when empty it
    is ``base_width * 2**level`` for ``depth`` levels, capped at ``max_width``. MEFN's two
    modality branches each use ``round(width * branch_width_ratio)`` channels per level, so with
    the default 0.5 the two branches together are as wide as the baseline's single encoder.
    """

    architecture: Architecture = "mefn"
    num_classes: int = 2
    base_width: int = 8
    depth: int = 4
    widths: tuple[int, ...] = ()
    max_width: int = 320
    branch_width_ratio: float = 0.5
    dropout: float = 0.0
    mc_samples: int = 10
    # MEFN switches
    cfl: bool = True
    mutual_attention: bool = True
    attention_levels: int = 1
    attention_heads: int = 2
    calibrator: bool = True
    ds_fusion: bool = True
    uncertainty_loss: bool = True
    loss: LossConfig = field(default_factory=LossConfig)
    # Speed options (issue 20). The full-resolution fused stage holds most of MEFN's FLOPs:
    # ``fuse_convs`` 3x3x3 convolutions (1 or 2) of width ``fuse_width`` (0: twice the
    # level-0 branch width, i.e. both level-0 streams). ``channels_last`` keeps weights and
    # activations channels-last 3D (NDHWC), which oneDNN convolves and back-propagates much
    # faster on CPU; it changes no result beyond float rounding.
    fuse_convs: int = 2
    fuse_width: int = 0
    fuse_pointwise: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            raise ConfigError(
                f"num_classes must be >= 2 (background + lesion classes), found {self.num_classes}"
            )
        if self.depth < 2:
            raise ConfigError(f"depth must be >= 2 resolution levels, found {self.depth}")
        if self.widths and len(self.widths) != self.depth:
            raise ConfigError(
                f"widths has {len(self.widths)} entries but depth is {self.depth}; "
                "give one width per level or leave widths empty"
            )
        if any(w < 1 for w in self.level_widths):
            raise ConfigError(f"widths must be positive, found {list(self.level_widths)}")
        if self.base_width < 1:
            raise ConfigError(f"base_width must be >= 1, found {self.base_width}")
        if not 0.0 < self.branch_width_ratio <= 2.0:
            raise ConfigError(
                f"branch_width_ratio must be in (0, 2], found {self.branch_width_ratio}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), found {self.dropout}")
        if self.architecture == "dynunet_mcdropout" and self.dropout <= 0.0:
            raise ConfigError(
                f"architecture dynunet_mcdropout needs dropout > 0 (e.g. 0.1), found {self.dropout}"
            )
        if self.mc_samples < 1:
            raise ConfigError(f"mc_samples must be >= 1, found {self.mc_samples}")
        if not 0 <= self.attention_levels <= self.depth:
            raise ConfigError(
                f"attention_levels must be in [0, depth={self.depth}], found {self.attention_levels}"
            )
        if self.attention_heads < 1:
            raise ConfigError(f"attention_heads must be >= 1, found {self.attention_heads}")
        if self.fuse_convs not in (1, 2):
            raise ConfigError(f"fuse_convs must be 1 or 2 convolutions, found {self.fuse_convs}")
        if self.fuse_width < 0:
            raise ConfigError(
                f"fuse_width must be >= 0 (0: twice the level-0 branch width), "
                f"found {self.fuse_width}"
            )
        for w in self.branch_widths[-self.attention_levels :] if self.attention_levels else ():
            if w % self.attention_heads:
                raise ConfigError(
                    f"attention_heads={self.attention_heads} must divide the branch width {w} "
                    "at every attention level; change attention_heads or the widths"
                )

    @property
    def level_widths(self) -> tuple[int, ...]:
        """Feature width at each level, finest first (the baseline's encoder widths)."""
        if self.widths:
            return tuple(self.widths)
        return tuple(min(self.base_width * 2**level, self.max_width) for level in range(self.depth))

    @property
    def branch_widths(self) -> tuple[int, ...]:
        """Width of each MEFN modality branch per level."""
        return tuple(max(1, round(w * self.branch_width_ratio)) for w in self.level_widths)

    @property
    def fused_width(self) -> int:
        """Width of MEFN's full-resolution fused stage."""
        return self.fuse_width or 2 * self.branch_widths[0]

    @property
    def size_divisor(self) -> int:
        """Spatial sizes must be multiples of this (one halving per level below the first)."""
        return int(2 ** (self.depth - 1))


def label_names(num_classes: int) -> dict[str, str]:
    """Default class names: 2 classes = lesion, 3 = HECKTOR's GTVp and GTVn."""
    if num_classes == 3:
        return {"0": "background", "1": "GTVp", "2": "GTVn"}
    if num_classes == 2:
        return {"0": "background", "1": "lesion"}
    return {str(i): f"class_{i}" for i in range(num_classes)}
