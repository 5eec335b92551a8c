"""Small building blocks shared by MEFN and the baselines (MONAI blocks underneath)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torch.nn.grad
from monai.networks.blocks import Convolution
from monai.networks.blocks.dynunet_block import (
    UnetBasicBlock,
    UnetOutBlock,
    UnetResBlock,
    UnetUpBlock,
    get_conv_layer,
)
from torch import Tensor, nn

from mefn.errors import InputError

__all__ = [
    "ACT",
    "NORM",
    "Decoder",
    "Encoder",
    "OneDnnConv3d",
    "UpStage",
    "check_input",
    "out_conv",
    "pad_to_divisor",
    "use_onednn_convolutions",
]

#: Normalisation and activation of every block (those of nnU-Net / MONAI DynUNet).
NORM: tuple[str, dict[str, bool]] = ("INSTANCE", {"affine": True})
ACT: tuple[str, dict[str, object]] = ("leakyrelu", {"inplace": True, "negative_slope": 0.01})


def pad_to_divisor(
    x: Tensor, divisor: int, mode: str = "replicate"
) -> tuple[Tensor, tuple[slice, ...]]:
    """Pad the spatial axes of ``(B, C, *spatial)`` at their ends up to multiples of ``divisor``.

    Returns the padded tensor and the index ``crop`` such that ``y[crop]`` gives a network
    output ``y`` of the padded input back on the original spatial size.
    """
    if x.ndim < 3:
        raise InputError(
            f"pad_to_divisor expects (B, C, *spatial), found a {x.ndim}D tensor {tuple(x.shape)}"
        )
    if divisor < 1:
        raise InputError(f"divisor must be >= 1, found {divisor}")
    spatial = tuple(int(s) for s in x.shape[2:])
    pad: list[int] = []
    for size in reversed(spatial):
        pad += [0, (-size) % divisor]
    crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)
    if not any(pad):
        return x, crop
    return F.pad(x, pad, mode=mode), crop


def check_input(x: Tensor, divisor: int) -> None:
    """Refuse anything but a (B, 2, X, Y, Z) float tensor with sizes multiple of ``divisor``."""
    if x.ndim != 5 or x.shape[1] != 2:
        raise InputError(
            f"model input must be (B, 2, X, Y, Z) with channel 0 = CT and 1 = PET, found shape "
            f"{tuple(x.shape)}"
        )
    if not torch.is_floating_point(x):
        raise InputError(f"model input must be a float tensor, found {x.dtype}")
    bad = [int(s) for s in x.shape[2:] if s % divisor]
    if bad:
        raise InputError(
            f"spatial size {tuple(int(s) for s in x.shape[2:])} is not a multiple of the "
            f"model's size_divisor {divisor}; pad with mefn.model.pad_to_divisor(x, {divisor})"
        )


class Encoder(nn.Module):
    """Residual encoder: a UnetResBlock per level, stride 2 from the second level on.

    With ``light_first=True`` the first (full-resolution) level is a single convolution
    (conv, norm, activation) instead of a two-convolution residual block.
    """

    def __init__(
        self, in_channels: int, widths: tuple[int, ...], light_first: bool = False
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        cin = in_channels
        for level, width in enumerate(widths):
            if level == 0 and light_first:
                stages.append(
                    Convolution(3, cin, width, kernel_size=3, act=ACT, norm=NORM, bias=False)
                )
            else:
                stages.append(
                    UnetResBlock(
                        3,
                        cin,
                        width,
                        kernel_size=3,
                        stride=1 if level == 0 else 2,
                        norm_name=NORM,
                        act_name=ACT,
                    )
                )
            cin = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps of every level, finest first (call the stages one by one to interleave)."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class Decoder(nn.Module):
    """U-Net decoder built from the encoder widths (transposed conv, concat skip, conv block)."""

    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        ups = []
        for level in range(len(widths) - 1, 0, -1):
            ups.append(
                UnetUpBlock(
                    3,
                    widths[level],
                    widths[level - 1],
                    kernel_size=3,
                    stride=1,
                    upsample_kernel_size=2,
                    norm_name=NORM,
                    act_name=ACT,
                    trans_bias=False,
                )
            )
        self.ups = nn.ModuleList(ups)

    def forward(self, skips: list[Tensor]) -> Tensor:
        """Full-resolution features (width ``widths[0]``) from the encoder's feature list."""
        x = skips[-1]
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            x = up(x, skip)
        return x


class UpStage(nn.Module):
    """Transposed convolution x2, concatenation with a skip, then ``convs`` conv-norm-act layers.

    MONAI's ``UnetUpBlock`` with the skip's width free and one or two 3x3x3 convolutions; with
    two and a skip as wide as the output, its parameters and state-dict keys are
    ``UnetUpBlock``'s (``transp_conv.*``, ``conv_block.conv1.*`` ...).
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        convs: int = 2,
        pointwise: bool = False,
    ) -> None:
        super().__init__()
        if convs not in (1, 2):
            raise InputError(f"UpStage takes 1 or 2 convolutions, found {convs}")
        self.transp_conv = get_conv_layer(
            3,
            in_channels,
            out_channels,
            kernel_size=2,
            stride=2,
            bias=False,
            act=None,
            norm=None,
            conv_only=False,
            is_transposed=True,
        )
        cin = out_channels + skip_channels
        # ``pointwise``: the concatenation is first projected to ``out_channels`` by a 1x1x1
        # convolution, so the 3x3x3 convolutions run out -> out instead of cin -> out.
        self.project: nn.Module = (
            nn.Conv3d(cin, out_channels, kernel_size=1, bias=False) if pointwise else nn.Identity()
        )
        cin = out_channels if pointwise else cin
        self.conv_block: nn.Module = (
            UnetBasicBlock(3, cin, out_channels, 3, 1, norm_name=NORM, act_name=ACT)
            if convs == 2
            else Convolution(3, cin, out_channels, kernel_size=3, act=ACT, norm=NORM, bias=False)
        )

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        out: Tensor = self.conv_block(self.project(torch.cat((self.transp_conv(x), skip), dim=1)))
        return out


def out_conv(in_channels: int, out_channels: int) -> nn.Module:
    """1x1x1 convolution with bias (MONAI's UnetOutBlock)."""
    return UnetOutBlock(3, in_channels, out_channels)


class _FrozenWeightConv3d(torch.autograd.Function):
    """3D convolution by a weight that takes no gradient, keeping only the weight for backward.

    ``aten::convolution`` saves its input for the backward pass even when only the input's
    gradient is wanted (the input is needed for the weight's gradient alone). Behind frozen
    weights (adapter and head-only fine-tuning) that input is dead weight: one saved activation
    per convolution. This function saves the weight (and the input's shape) only; the input's
    gradient is the transposed convolution of the output's gradient, the bias's is its sum.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        input: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        conv: OneDnnConv3d,
    ) -> Tensor:
        ctx.save_for_backward(weight)
        ctx.input_shape = input.shape
        ctx.conv_args = (conv.stride, conv.padding, conv.dilation, conv.groups)
        with torch.no_grad():
            return conv._fast_conv(input, weight, bias)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor | None, None, Tensor | None, None]:
        (weight,) = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv_args
        grad_input = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.nn.grad.conv3d_input(  # type: ignore[attr-defined]
                ctx.input_shape,
                weight,
                grad,
                stride,
                padding,
                dilation,
                groups,
            )
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 2, 3, 4))
        return grad_input, None, grad_bias, None


class OneDnnConv3d(nn.Conv3d):
    """``nn.Conv3d`` with faster CPU paths for the small 3D layers of these networks, and a
    lean backward behind frozen weights.

    PyTorch's CPU dispatcher picks its slow im2col kernel for a batch of one whenever
    ``N * C * D * H <= 20480`` (a heuristic tuned for 2D), which makes narrow or coarse 3D
    layers 5-20x slower at inference than oneDNN (measured on torch 2.13, 2 threads). This
    subclass calls ``torch.mkldnn_convolution`` in exactly that case; the weights, the state
    dict and the results (to float rounding) are those of ``nn.Conv3d``.

    A 1x1x1 convolution with few channels (``in * out <= 64``, e.g. an output head) runs as a
    matrix product, which is 3-10x faster on CPU than either convolution kernel, unless its
    weight trains: with the backward pass the convolution is faster (8 -> 2 channels on
    2 x 48^3 voxels, 1 thread: 3.6 ms against 9.5 ms forward and backward).

    When the weight is frozen but gradients flow through (adapter fine-tuning: the base is
    frozen, adapters before it train), the input is not kept for the backward pass
    (:class:`_FrozenWeightConv3d`): the same gradients, one saved activation fewer per layer.
    """

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if (
            torch.is_grad_enabled()
            and not weight.requires_grad
            and (input.requires_grad or (bias is not None and bias.requires_grad))
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and input.ndim == 5
            and not torch.is_autocast_enabled(input.device.type)
        ):
            out: Tensor = _FrozenWeightConv3d.apply(input, weight, bias, self)
            return out
        return self._fast_conv(input, weight, bias)

    def _fast_conv(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if (
            input.device.type == "cpu"
            and self.kernel_size == (1, 1, 1)
            and self.stride == (1, 1, 1)
            and self.groups == 1
            and not isinstance(self.padding, str)
            and tuple(self.padding) == (0, 0, 0)
            and self.in_channels * self.out_channels <= 64
            and input.ndim == 5
            and not (torch.is_grad_enabled() and weight.requires_grad)
        ):
            b, c = input.shape[:2]
            out = torch.matmul(weight.reshape(self.out_channels, c), input.reshape(b, c, -1))
            if bias is not None:
                out = out + bias.reshape(1, -1, 1)
            return out.reshape(b, self.out_channels, *input.shape[2:])
        if (
            input.device.type == "cpu"
            and input.dtype == torch.float32
            and weight.dtype == torch.float32
            and input.ndim == 5
            and input.shape[0] == 1
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
        ):
            return torch.mkldnn_convolution(
                input.contiguous(),
                weight.contiguous(),
                bias,
                list(self.padding),
                list(self.stride),
                list(self.dilation),
                self.groups,
            )
        return super()._conv_forward(input, weight, bias)


def use_onednn_convolutions(module: nn.Module) -> nn.Module:
    """Turn every plain ``nn.Conv3d`` inside ``module`` into :class:`OneDnnConv3d` (in place)."""
    for child in module.modules():
        if type(child) is nn.Conv3d:
            child.__class__ = OneDnnConv3d
    return module
