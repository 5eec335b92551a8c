"""The MEFN network, its DynUNet baselines, evidential maths and losses (torch + MONAI only)."""

from __future__ import annotations

import torch
from torch import nn

import mefn.model._monai  # noqa: F401  # first: MONAI without transformers (see there)
from mefn.model.baselines import DynUNetBaseline
from mefn.model.blocks import pad_to_divisor, use_onednn_convolutions
from mefn.model.config import LossConfig, ModelConfig
from mefn.model.evidential import (
    alpha_to_opinion,
    combine_opinions,
    evidence_to_opinion,
    opinion_to_alpha,
)
from mefn.model.losses import build_loss
from mefn.model.mefn import MEFN
from mefn.model.output import ModelOutput

__all__ = [
    "MEFN",
    "DynUNetBaseline",
    "LossConfig",
    "ModelConfig",
    "ModelOutput",
    "alpha_to_opinion",
    "build_loss",
    "build_model",
    "combine_opinions",
    "evidence_to_opinion",
    "opinion_to_alpha",
    "pad_to_divisor",
]


def build_model(cfg: ModelConfig) -> nn.Module:
    """The network named by ``cfg.architecture``; it has ``size_divisor`` and ``infer(x)``."""
    model: nn.Module = MEFN(cfg) if cfg.architecture == "mefn" else DynUNetBaseline(cfg)
    use_onednn_convolutions(model)
    if cfg.channels_last:
        # Module.to converts every 5D parameter; its stubs do not list memory_format
        model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    return model
