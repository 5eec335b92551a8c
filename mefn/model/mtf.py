"""Multi-modal trusted fusion (MTF): mutual attention and the uncertainty calibrator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MutualAttention", "UncertaintyCalibrator"]


class _CrossAttention(nn.Module):
    """Queries from one stream, keys and values from the other; multi-head, residual."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm_q = nn.GroupNorm(1, channels)
        self.norm_kv = nn.GroupNorm(1, channels)
        self.q = nn.Conv3d(channels, channels, kernel_size=1)
        self.kv = nn.Conv3d(channels, 2 * channels, kernel_size=1)
        self.proj = nn.Conv3d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor, other: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        n = x.shape[2] * x.shape[3] * x.shape[4]
        d = c // self.heads
        q = self.q(self.norm_q(x)).reshape(b, self.heads, d, n).transpose(2, 3)
        k, v = self.kv(self.norm_kv(other)).reshape(b, 2, self.heads, d, n).unbind(1)
        attended = F.scaled_dot_product_attention(q, k.transpose(2, 3), v.transpose(2, 3))
        attended = attended.transpose(2, 3).reshape(b, c, *spatial)
        return x + self.proj(attended)


class MutualAttention(nn.Module):
    """Each stream attends to the other: ``ct' = ct + A(ct <- pet)``, ``pet' = pet + A(pet <- ct)``.

    A depth-wise 3x3x3 convolution adds position information before the attention (token
    order is otherwise invisible to it). Used only at the coarse levels, where the token count
    (voxels of the feature map) is small.
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.pos_ct = nn.Conv3d(channels, channels, 3, padding=1, groups=channels)
        self.pos_pet = nn.Conv3d(channels, channels, 3, padding=1, groups=channels)
        self.ct_from_pet = _CrossAttention(channels, heads)
        self.pet_from_ct = _CrossAttention(channels, heads)

    def forward(self, ct: Tensor, pet: Tensor) -> tuple[Tensor, Tensor]:
        ct = ct + self.pos_ct(ct)
        pet = pet + self.pos_pet(pet)
        return self.ct_from_pet(ct, pet), self.pet_from_ct(pet, ct)


class UncertaintyCalibrator(nn.Module):
    """Per-voxel fusion weights of the two streams from their uncertainty masses.

    ``w = 2 softmax(conv3x3x3([u_ct, u_pet]))`` over the two streams. The convolution starts as
    ``-4 u`` on the centre tap (the more uncertain stream gets the smaller weight; equal
    uncertainties give weights 1 and 1) and learns to recalibrate from the neighbourhood.
    """

    def __init__(self, sharpness: float = 4.0) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 2, kernel_size=3, padding=1, bias=False)
        # a learned prior preference of one stream over the other, zero at the start
        self.bias = nn.Parameter(torch.zeros(1, 2, 1, 1, 1))
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0, 1, 1, 1] = -sharpness
            self.conv.weight[1, 1, 1, 1, 1] = -sharpness

    def forward(self, u_ct: Tensor, u_pet: Tensor) -> tuple[Tensor, Tensor]:
        """Weights ``(w_ct, w_pet)``, each ``(B, 1, ...)`` in (0, 2), summing to 2."""
        weights = 2.0 * torch.softmax(self.conv(torch.cat([u_ct, u_pet], dim=1)) + self.bias, dim=1)
        return weights[:, :1], weights[:, 1:]
