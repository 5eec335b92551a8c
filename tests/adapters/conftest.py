"""Tiny MEFN-shaped models for the adapter tests (MONAI blocks, two modality branches)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import pytest
import torch
from monai.networks.blocks import Convolution, ResidualUnit
from torch import nn

NORM = ("instance", {"affine": True})


def _encoder() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            stage0=Convolution(3, 1, 8, strides=1, norm=NORM),
            stage1=ResidualUnit(3, 8, 8, strides=2, subunits=2, norm=NORM),
        )
    )


class TwoBranchNet(nn.Module):
    """enc_ct / enc_pet (MONAI blocks), a fusion with a 1x1x1, a dilated and a grouped
    conv, a decoder with a ConvTranspose3d and a replicate-padded conv, and a 1x1x1 head."""

    def __init__(self) -> None:
        super().__init__()
        self.enc_ct = _encoder()
        self.enc_pet = _encoder()
        self.fusion = nn.Sequential(
            nn.Conv3d(16, 8, 1),
            nn.GELU(),
            nn.Conv3d(8, 8, 3, padding=2, dilation=2),
            nn.Conv3d(8, 8, 3, padding=1, groups=2),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose3d(8, 8, 2, stride=2),
            nn.Conv3d(8, 8, 3, padding=1, padding_mode="replicate", bias=False),
            nn.BatchNorm3d(8),
        )
        self.head = nn.Conv3d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ct = self.enc_ct(x[:, :1])
        pet = self.enc_pet(x[:, 1:])
        fused = self.fusion(torch.cat([ct, pet], dim=1))
        up = self.decoder(fused)[..., : x.shape[2], : x.shape[3], : x.shape[4]]
        return self.head(up)


@pytest.fixture
def make_net() -> Callable[[], TwoBranchNet]:
    def build() -> TwoBranchNet:
        torch.manual_seed(1234)
        net = TwoBranchNet()
        with torch.no_grad():  # non-trivial BatchNorm statistics and affine values
            bn = net.decoder[2]
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
        return net.eval()

    return build


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(2, 2, 9, 10, 11, generator=torch.Generator().manual_seed(7))


@pytest.fixture
def train() -> Callable[..., None]:
    """A few Adam steps towards a random target, calling the handle's step hook."""

    def run(model: nn.Module, handle, x: torch.Tensor, steps: int = 3, lr: float = 0.05) -> None:  # type: ignore[no-untyped-def]
        params = list(handle.trainable_parameters().values())
        optim = torch.optim.Adam(params, lr=lr)
        target = torch.randn(model(x).shape, generator=torch.Generator().manual_seed(3))
        for _ in range(steps):
            optim.zero_grad()
            loss = ((model(x) - target) ** 2).mean()
            loss.backward()
            optim.step()
            handle.on_step()

    return run
