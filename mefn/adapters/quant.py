"""Low-bit adapter weights: per-tensor standardised quantisation, STE and bit packing.

A tensor w is standardised, z = (w - mean) / std (population std), and each z is replaced
by the nearest of 2**bits levels placed at the quantiles (i + 1/2) / 2**bits of the standard
normal. One bit gives the levels -0.6745 and +0.6745, the values used in "Revisiting the
Parameter Efficiency of Adapters from the Perspective of Precision Redundancy" (Jie et al.
2023); the dequantised weight is mean + std * level. Training runs the forward pass on the
dequantised weights and passes gradients straight through (STE). Storage keeps the codes
bit-packed into uint8 plus the mean and std of each tensor, so 1 bit costs 1/32 of fp32.
The mean and std are rounded to float16 values (when in its range) in training as in storage,
so the file holds them in 4 bytes instead of 8 and loads to exactly the trained weights.
"""

from __future__ import annotations

import functools
import math
from typing import cast

import torch

__all__ = [
    "dequantize",
    "fake_quantize",
    "normal_levels",
    "pack_codes",
    "quantize_codes",
    "scales_fit_half",
    "unpack_codes",
]

_BITS = (1, 2, 4, 8)


@functools.lru_cache(maxsize=8)
def _levels_cpu(bits: int) -> torch.Tensor:
    count = 2**bits
    probs = (torch.arange(count, dtype=torch.float64) + 0.5) / count
    return torch.special.ndtri(probs).to(torch.float32)


def normal_levels(bits: int) -> torch.Tensor:
    """The 2**bits reconstruction levels in standard-deviation units (float32, ascending)."""
    if bits not in _BITS:
        raise ValueError(f"bits must be one of {_BITS}, found {bits}")
    return _levels_cpu(bits).clone()


_HALF_MAX = float(torch.finfo(torch.float16).max)


def _half_rounded(x: torch.Tensor) -> torch.Tensor:
    """``x`` (0-dim float32) rounded to the nearest float16 value, unless beyond its range.
    Tensor ops only: this runs in every quantisation-aware forward pass, and reading the value
    on the host would synchronise a GPU once per quantised tensor."""
    return torch.where(x.abs() <= _HALF_MAX, x.to(torch.float16).to(torch.float32), x)


def scales_fit_half(scales: torch.Tensor) -> bool:
    """Whether every (mean, std) pair is stored exactly as float16."""
    return bool(torch.equal(scales.to(torch.float16).to(torch.float32), scales))


def quantize_codes(t: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes as uint8 with t's shape, mean, std) of ``t``; the two scales are 0-dim float32
    holding float16 values (unless beyond float16's range)."""
    levels = normal_levels(bits).to(t.device)
    flat = t.detach().to(torch.float32)
    mean = _half_rounded(flat.mean())
    std = flat.std(unbiased=False) if flat.numel() > 1 else torch.zeros((), device=t.device)
    std = _half_rounded(std)
    z = (flat - mean) / torch.clamp(std, min=torch.finfo(torch.float32).tiny)
    thresholds = (levels[1:] + levels[:-1]) / 2
    codes = torch.bucketize(z, thresholds).to(torch.uint8)
    return codes, mean, std


def dequantize(
    codes: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, bits: int
) -> torch.Tensor:
    """mean + std * level[code], float32, with the shape of ``codes``."""
    levels = normal_levels(bits).to(codes.device)
    return mean + std * levels[codes.long()]


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: torch.Tensor, bits: int) -> torch.Tensor:  # type: ignore[override]
        codes, mean, std = quantize_codes(t, bits)
        return dequantize(codes, mean, std, bits).to(t.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


def fake_quantize(t: torch.Tensor, bits: int) -> torch.Tensor:
    """The dequantised ``t`` in the forward pass, the identity in the backward pass."""
    return cast(torch.Tensor, _StraightThrough.apply(t, bits))


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes (< 2**bits) packed little-end-first into a 1-D uint8 tensor."""
    if bits not in _BITS:
        raise ValueError(f"bits must be one of {_BITS}, found {bits}")
    per_byte = 8 // bits
    flat = codes.reshape(-1).to(torch.int32).cpu()
    padded = math.ceil(flat.numel() / per_byte) * per_byte
    flat = torch.nn.functional.pad(flat, (0, padded - flat.numel()))
    groups = flat.reshape(-1, per_byte)
    shifts = torch.arange(per_byte, dtype=torch.int32) * bits
    return (groups << shifts).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The first ``count`` codes of a tensor made by :func:`pack_codes` (uint8, 1-D)."""
    if bits not in _BITS:
        raise ValueError(f"bits must be one of {_BITS}, found {bits}")
    per_byte = 8 // bits
    shifts = torch.arange(per_byte, dtype=torch.int32) * bits
    values = (packed.to(torch.int32).reshape(-1, 1) >> shifts) & (2**bits - 1)
    return values.reshape(-1)[:count].to(torch.uint8)
