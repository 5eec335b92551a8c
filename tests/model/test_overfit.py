"""A tiny overfit run: one synthetic PET/CT case with a bright PET blob as the lesion."""

from __future__ import annotations

import time

import pytest
import torch

from mefn.model import ModelConfig, build_loss, build_model


def _blob_case(size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    grid = torch.stack(
        torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij")
    )
    centre = torch.tensor([9.0, 13.0, 11.0]).view(3, 1, 1, 1)
    lesion = ((grid - centre) ** 2).sum(0) <= 4.5**2
    ct = 0.3 * torch.randn(size, size, size, generator=g) + 0.5 * lesion.float()
    pet = 1.0 + 0.2 * torch.randn(size, size, size, generator=g) + 6.0 * lesion.float()
    x = torch.stack([ct, pet / 5.0])[None]
    return x, lesion.long()[None, None]


@pytest.mark.parametrize("architecture", ["mefn", "dynunet"])
def test_loss_falls_on_a_single_synthetic_case(architecture: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        architecture=architecture,  # type: ignore[arg-type]
        base_width=8,
        depth=3,
        attention_heads=2,
    )
    model = build_model(cfg).train()
    loss_fn = build_loss(cfg)
    x, y = _blob_case()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    t0 = time.monotonic()
    history = []
    epoch = cfg.loss.kl_anneal_epochs  # full weights: annealing would mask the fall
    for _ in range(60):
        losses = loss_fn(model(x), y, x, epoch=epoch)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        history.append(float(losses["loss"].detach()))
    elapsed = time.monotonic() - t0
    assert elapsed < 60
    assert max(history[-5:]) < 0.55 * history[0], history
    model.eval()
    with torch.no_grad():
        prob = model.infer(x)["prob"]  # type: ignore[operator]
    pred = prob.argmax(1, keepdim=True)
    dice = 2 * float(((pred == 1) & (y == 1)).sum()) / float((pred == 1).sum() + (y == 1).sum())
    assert dice > 0.9, dice
