"""What the networks return: a small frozen dataclass of tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from mefn.model.evidential import expected_probability

__all__ = ["ModelOutput"]


@dataclass(frozen=True)
class ModelOutput:
    """Outputs of one forward pass; every map is ``(B, C, X, Y, Z)``.

    MEFN fills the evidential fields: Dirichlet ``alpha_ct``, ``alpha_pet`` (per-modality
    heads), ``alpha_fused`` (head on the fused features) and ``alpha`` (the Dempster-Shafer
    combination of the three opinions, or ``alpha_fused`` when ``ds_fusion`` is off), ``belief``
    (``K`` channels) and ``uncertainty`` (1 channel) of ``alpha``, and ``pseudo_ct`` /
    ``pseudo_pet`` (CFL translations, None when CFL is off). The baselines fill ``logits`` only.
    ``aux`` holds anything else (per-modality uncertainty, calibrator weights, ...).
    """

    alpha: Tensor | None = None
    alpha_ct: Tensor | None = None
    alpha_pet: Tensor | None = None
    alpha_fused: Tensor | None = None
    belief: Tensor | None = None
    uncertainty: Tensor | None = None
    pseudo_ct: Tensor | None = None
    pseudo_pet: Tensor | None = None
    logits: Tensor | None = None
    aux: dict[str, Tensor] = field(default_factory=dict)

    def probabilities(self) -> Tensor:
        """Class probabilities ``(B, K, ...)``: ``alpha / S`` (MEFN) or softmax of the logits."""
        if self.alpha is not None:
            return expected_probability(self.alpha)
        if self.logits is not None:
            return torch.softmax(self.logits.float(), dim=1)
        raise ValueError("ModelOutput holds neither alpha nor logits")


def _register_pytree() -> None:
    """Let torch (DDP's output handling, torch.export) see the tensors inside a ModelOutput."""
    try:
        from torch.utils import _pytree

        _pytree.register_dataclass(ModelOutput)
    except (AttributeError, ValueError, TypeError):  # pragma: no cover - older torch
        pass


_register_pytree()
