"""MoSA: train an adapter as a mixture of sparse parts, one random part per step.

Each adapter tensor is split into ``parts`` disjoint random masks that together cover it
(element e belongs to part perm(e) mod parts). Before every step one part j is drawn and the
parameter holds W ⊙ M_j, so the forward pass uses that sparse adapter only; gradients outside
M_j are zeroed, and after the optimiser step the trained entries are folded back into the
dense store. :meth:`MosaController.finish` merges all parts into one dense adapter (the
union of the disjoint parts is the dense tensor, so the merge is exact).

Call :meth:`MosaController.on_step` after every ``optimizer.step()``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["MosaController"]

log = logging.getLogger(__name__)


class MosaController:
    """Holds the dense weights and part masks of the adapter parameters it manages."""

    def __init__(
        self, params: dict[str, nn.Parameter], parts: int, generator: torch.Generator
    ) -> None:
        self.params = params
        self.parts = parts
        self.generator = generator
        self.part_ids: dict[str, torch.Tensor] = {}
        self.dense: dict[str, torch.Tensor] = {}
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self.active = -1
        self.finished = False
        for name, p in params.items():
            perm = torch.randperm(p.numel(), generator=generator)
            self.part_ids[name] = (perm % parts).reshape(p.shape).to(p.device)
            self.dense[name] = p.detach().clone()
            self._hooks.append(p.register_hook(self._grad_mask(name)))
        self._activate(self._draw())

    def _grad_mask(self, name: str):  # type: ignore[no-untyped-def]
        def hook(grad: torch.Tensor) -> torch.Tensor:
            if self.finished:
                return grad
            return grad * (self.part_ids[name] == self.active).to(grad.dtype)

        return hook

    def _draw(self) -> int:
        return int(torch.randint(self.parts, (1,), generator=self.generator).item())

    def mask(self, name: str, part: int | None = None) -> torch.Tensor:
        """Boolean mask of ``part`` (default: the active one) for parameter ``name``."""
        return self.part_ids[name] == (self.active if part is None else part)

    def _fold(self) -> None:
        with torch.no_grad():
            for name, p in self.params.items():
                self.dense[name] = torch.where(self.mask(name), p.detach(), self.dense[name])

    def _activate(self, part: int) -> None:
        self.active = part
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.dense[name] * self.mask(name).to(p.dtype))

    def on_step(self) -> None:
        """Keep what the step trained in the active part, then switch to a new random part."""
        if self.finished:
            return
        self._fold()
        self._activate(self._draw())

    def dense_values(self) -> dict[str, torch.Tensor]:
        """The merged dense tensors as they would be after :meth:`finish` (copies)."""
        if self.finished:
            return {n: p.detach().clone() for n, p in self.params.items()}
        return {
            n: torch.where(self.mask(n), p.detach(), self.dense[n]) for n, p in self.params.items()
        }

    @contextlib.contextmanager
    def dense_weights(self) -> Iterator[None]:
        """Temporarily put the merged dense weights into the parameters."""
        if self.finished:
            yield
            return
        saved = {n: p.detach().clone() for n, p in self.params.items()}
        values = self.dense_values()
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(values[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in self.params.items():
                    p.copy_(saved[n])

    def finish(self) -> None:
        """Merge the parts into one dense adapter and stop sparse training."""
        if self.finished:
            return
        self._fold()
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.dense[name])
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self.finished = True
        log.info(
            "MoSA: merged %d parts of %d tensors into dense adapters", self.parts, len(self.params)
        )
