"""Cross-modal feature learning (CFL): tumour-guided attention and modality translation heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mefn.model.blocks import out_conv

__all__ = ["TranslationHead", "TumourGate"]


class TumourGate(nn.Module):
    """Spatial attention from the PET stream that re-weights both streams.

    ``g = sigmoid(conv1x1(pet))`` (one channel); both feature maps become ``f * (1 + g)``, so
    the gate can highlight voxels with tumour-like uptake but never silences a stream.
    """

    def __init__(self, pet_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(pet_channels, 1, kernel_size=1)

    def forward(self, ct: Tensor, pet: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Gated (ct, pet) and the gate itself ``(B, 1, ...)``."""
        gate = torch.sigmoid(self.conv(pet))
        return ct * (1.0 + gate), pet * (1.0 + gate), gate


class TranslationHead(nn.Module):
    """Maps one modality's half-resolution decoder features to the other modality's image.

    A 1x1x1 convolution to one channel, then trilinear upsampling x2 to the input grid. It is
    deliberately weak: the translation has to be carried by the modality's own encoder and
    decoder, which is what makes them learn the other modality's structure.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.out = out_conv(channels, 1)

    def forward(self, features: Tensor) -> Tensor:
        return F.interpolate(
            self.out(features), scale_factor=2.0, mode="trilinear", align_corners=False
        )
