"""LAE: an online adapter, an offline EMA copy of it, and their ensemble at inference.

Learning: the online adapter trains as usual. Accumulation: after every optimiser step the
offline adapter moves towards it, θ_off <- d θ_off + (1 - d) θ_on (:meth:`LAEController.on_step`).
Ensemble: at inference both are run and their outputs combined per voxel
(:func:`ensemble_logits`). For sequential sites (centre A, then B, ...) call
:meth:`LAEController.begin_site` before training on each; the offline adapter carries what
earlier sites taught while the online one adapts to the new site.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import cast

import torch
from torch import nn

from mefn.errors import ConfigError

__all__ = ["LAEController", "LAEEnsembleModel", "ensemble_logits", "ensemble_maps"]

log = logging.getLogger(__name__)


ENSEMBLE_MODES = ("max_confidence", "mean_logits")


def _checked_mode(mode: str) -> str:
    if mode not in ENSEMBLE_MODES:
        raise ConfigError(
            f"LAE ensemble mode must be 'max_confidence' or 'mean_logits', found {mode!r}"
        )
    return mode


def ensemble_logits(
    online: torch.Tensor, offline: torch.Tensor, mode: str = "max_confidence", dim: int = 1
) -> torch.Tensor:
    """Combine two class-score tensors (classes along ``dim``).

    ``mean_logits``: their average. ``max_confidence``: at each position, the scores of the
    model whose softmax is more confident (higher top probability; ties go to online).
    """
    if online.shape != offline.shape:
        raise ConfigError(
            f"LAE ensemble needs outputs of one shape, found {tuple(online.shape)} and "
            f"{tuple(offline.shape)}"
        )
    if _checked_mode(mode) == "mean_logits":
        return (online + offline) / 2
    conf_on = torch.softmax(online, dim=dim).amax(dim=dim, keepdim=True)
    conf_off = torch.softmax(offline, dim=dim).amax(dim=dim, keepdim=True)
    return torch.where(conf_on >= conf_off, online, offline)


def ensemble_maps(
    online: dict[str, torch.Tensor], offline: dict[str, torch.Tensor], mode: str = "max_confidence"
) -> dict[str, torch.Tensor]:
    """Combine two sets of inference maps (``prob`` (B, K, ...) plus uncertainty maps).

    ``max_confidence``: at each voxel every map comes from the model whose ``prob`` has the
    higher top class probability (ties go to online), so a voxel's probability and its
    uncertainty stay those of one opinion. ``mean_logits``: each map is averaged (for
    probability maps this is the mean of the two predictive distributions).
    """
    if set(online) != set(offline) or "prob" not in online:
        raise ConfigError(
            f"LAE ensemble needs the same maps with a 'prob' from both adapters, found "
            f"{sorted(online)} and {sorted(offline)}"
        )
    if _checked_mode(mode) == "mean_logits":
        return {k: (online[k] + offline[k]) / 2 for k in online}
    pick_online = online["prob"].amax(dim=1, keepdim=True) >= offline["prob"].amax(
        dim=1, keepdim=True
    )
    return {k: torch.where(pick_online, online[k], offline[k]) for k in online}


class LAEEnsembleModel(nn.Module):
    """A model with an LAE adapter whose ``infer`` runs the online and the offline adapter and
    combines their maps (:func:`ensemble_maps`); what ``Predictor`` runs for an LAE adapter."""

    def __init__(self, net: nn.Module, controller: LAEController, mode: str | None = None) -> None:
        super().__init__()
        self.net = net
        self.controller = controller
        self.mode = mode or controller.mode
        self.size_divisor = int(getattr(net, "size_divisor", 1))
        self.num_classes = getattr(net, "num_classes", None)

    def forward(self, x: torch.Tensor) -> object:
        return self.net(x)

    @torch.no_grad()
    def infer(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        infer = cast(Callable[[torch.Tensor], dict[str, torch.Tensor]], self.net.infer)
        online = infer(x)
        with self.controller.offline_weights():
            offline = infer(x)
        return ensemble_maps(online, offline, self.mode)


class LAEController:
    """EMA bookkeeping for the adapter parameters (online = the parameters themselves)."""

    def __init__(self, params: dict[str, nn.Parameter], decay: float, mode: str) -> None:
        self.params = params
        self.decay = decay
        self.mode = mode
        self.offline = {n: p.detach().clone() for n, p in params.items()}
        self.sites: list[str] = []
        self.steps = 0

    def on_step(self) -> None:
        """Move the offline adapter towards the online one (call after optimizer.step())."""
        self.steps += 1
        with torch.no_grad():
            for name, p in self.params.items():
                self.offline[name].mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)

    def begin_site(self, site: str) -> None:
        """Mark the start of training on a new site; the offline adapter keeps the old ones."""
        self.sites.append(site)
        log.info("LAE: site %d (%s) begins after %d steps", len(self.sites), site, self.steps)

    @contextlib.contextmanager
    def offline_weights(self) -> Iterator[None]:
        """Run the model with the offline (EMA) adapter inside this block."""
        saved = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.offline[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(saved[n])

    def ensemble(self, run: Callable[[], torch.Tensor], mode: str | None = None) -> torch.Tensor:
        """``run()`` with the online and the offline adapter, combined by :func:`ensemble_logits`."""
        online = run()
        with self.offline_weights():
            offline = run()
        return ensemble_logits(online, offline, mode or self.mode)
