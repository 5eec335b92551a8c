"""Hand-written adapter modules for 3D convolutions (what peft lacks or gets wrong).

Every adapter is a :class:`DeltaModule` that computes a change Δ to the output of the module
it adapts; :class:`AdaptedModule` wraps the frozen base module and adds Δ to its output:

- ``parallel``:   y = base(x) + gate(Δ(x))
- ``sequential``: h = base(x); y = h + gate(Δ(h))

Weight-space adapters (DoRA, PaCA, Bone) define Δ through a weight change ΔW and, without a
gate, run one convolution with W + ΔW. Where Δ is linear in the input and has the base's
geometry, :meth:`DeltaModule.merge_delta` returns the (weight, bias) change that folds the
adapter into the base module.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mefn.adapters.quant import fake_quantize
from mefn.errors import ConfigError

__all__ = [
    "AdaptedModule",
    "BoneDelta",
    "BottleneckDelta",
    "DeltaModule",
    "Gate",
    "LoRADelta",
    "PHMDelta",
    "PHMRules",
    "PaCADelta",
    "ScaleShiftDelta",
    "conv_like",
]

Conv = nn.Conv3d | nn.ConvTranspose3d
MergeDelta = tuple[Tensor, Tensor | None]


def _as_conv(base: nn.Module) -> nn.Conv3d | nn.ConvTranspose3d:
    if not isinstance(base, nn.Conv3d | nn.ConvTranspose3d):
        raise TypeError(f"expected a Conv3d or ConvTranspose3d, found {type(base).__name__}")
    return base


def conv_like(
    base: nn.Module,
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    groups: int | None = None,
) -> Tensor:
    """``base``'s convolution (stride, padding, dilation, padding mode) with another weight."""
    conv = _as_conv(base)
    g = conv.groups if groups is None else groups
    if isinstance(conv, nn.ConvTranspose3d):
        return F.conv_transpose3d(
            x,
            weight,
            bias,
            conv.stride,
            cast(tuple[int, ...], conv.padding),
            conv.output_padding,
            g,
            conv.dilation,
        )
    if conv.padding_mode != "zeros":
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        return F.conv3d(x, weight, bias, conv.stride, 0, conv.dilation, g)
    return F.conv3d(x, weight, bias, conv.stride, conv.padding, conv.dilation, g)


def _channel_view(v: Tensor, ndim: int) -> Tensor:
    return v.reshape(1, -1, *([1] * (ndim - 2)))


def scale_out_channels(weight: Tensor, base: nn.Module, scale: Tensor) -> Tensor:
    """``weight`` (laid out like ``base.weight``) times ``scale`` per output channel."""
    if isinstance(base, nn.ConvTranspose3d):
        g = base.groups
        w = weight.reshape(g, base.in_channels // g, base.out_channels // g, -1)
        return (w * scale.reshape(g, 1, -1, 1)).reshape(weight.shape)
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))


def _activation(name: str) -> nn.Module:
    return {"gelu": nn.GELU(), "relu": nn.ReLU(), "none": nn.Identity()}[name]


def _weight_matrix(base: nn.Module) -> Tensor:
    """The kernel viewed as a matrix: (dim 0, everything else), e.g. (C_out, C_in * k^3)."""
    weight = cast(Tensor, _as_conv(base).weight)
    return weight.reshape(weight.shape[0], -1)


class DeltaModule(nn.Module):
    """Base class: computes the adapter's change Δ to the wrapped module's output."""

    #: True when Δ comes from a weight change ΔW (one conv with W + ΔW is enough).
    weight_space = False

    def __init__(self) -> None:
        super().__init__()
        #: 0 = full precision; else the weights listed by quantised_names() are
        #: fake-quantised to this many bits in the forward pass.
        self.quant_bits = 0

    def q(self, t: Tensor) -> Tensor:
        """``t`` fake-quantised when low-bit training is on, else ``t``."""
        return fake_quantize(t, self.quant_bits) if self.quant_bits else t

    def quantised_names(self) -> tuple[str, ...]:
        """Names (relative to this module) of the tensors that go through :meth:`q`."""
        return ()

    def forward(self, inp: Tensor, base: nn.Module) -> Tensor:
        if self.weight_space:
            return conv_like(base, inp, self.delta_weight(base))
        raise NotImplementedError

    def delta_weight(self, base: nn.Module) -> Tensor:
        """ΔW laid out like ``base.weight`` (weight-space adapters)."""
        raise NotImplementedError

    def adapted_weight(self, base: nn.Module) -> Tensor:
        return cast(Tensor, _as_conv(base).weight) + self.delta_weight(base)

    def full_forward(self, x: Tensor, base: nn.Module) -> Tensor:
        """base(x) with W replaced by W + ΔW, in one convolution."""
        return conv_like(base, x, self.adapted_weight(base), _as_conv(base).bias)

    def merge_delta(self, base: nn.Module) -> MergeDelta | None:
        """(ΔW, Δb) folding this adapter into ``base``, or None when it cannot be folded."""
        return None


class LoRADelta(DeltaModule):
    """LoRA (and DoRA) for Conv3d / ConvTranspose3d of any kernel, dilation and groups.

    A is a convolution with the base's geometry (C_in -> r, same groups), B a grouped
    1x1x1 convolution (r -> C_out) initialised to zero; Δ = (alpha / rank) * B(A(x)). With
    groups g the rank is rounded up to a multiple of g so ΔW keeps the base's group
    structure and always merges. DoRA: W' = m * (W + ΔW) / ||W + ΔW|| with the norm over
    each output channel's weights and m initialised to ||W||.
    """

    def __init__(
        self,
        base: Conv,
        rank: int,
        alpha: float,
        dora: bool,
        dropout: float,
        generator: torch.Generator | None = None,
        name: str = "",
    ) -> None:
        super().__init__()
        g = base.groups
        r = math.ceil(rank / g) * g
        self.scaling = alpha / rank
        self.transposed = isinstance(base, nn.ConvTranspose3d)
        k = tuple(base.kernel_size)
        if self.transposed:
            a_shape: tuple[int, ...] = (base.in_channels, r // g, *k)
        else:
            a_shape = (r, base.in_channels // g, *k)
        self.lora_a = nn.Parameter(torch.empty(a_shape, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5), generator=generator)
        self.lora_b = nn.Parameter(torch.zeros(base.out_channels, r // g, dtype=base.weight.dtype))
        self.dropout: nn.Module = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.dora = dora
        # One conv with W' replaces base + delta, unless dropout must touch the delta only.
        self.weight_space = dora and dropout == 0
        if dora:
            if self.transposed and g > 1:
                raise ConfigError(
                    f"DoRA on {name!r}: grouped ConvTranspose3d (groups={g}) is not supported; "
                    "exclude it or use type: lora"
                )
            self.magnitude = nn.Parameter(self._out_norm(base.weight.detach()).clone())

    def quantised_names(self) -> tuple[str, ...]:
        return ("lora_a", "lora_b")

    def _out_norm(self, weight: Tensor) -> Tensor:
        dims = [d for d in range(weight.dim()) if d != (1 if self.transposed else 0)]
        return torch.linalg.vector_norm(weight, dim=dims)

    def lora_delta_weight(self, base: nn.Module) -> Tensor:
        """scaling * B A laid out like ``base.weight``."""
        conv = _as_conv(base)
        g = conv.groups
        a = self.q(self.lora_a)
        b = self.q(self.lora_b)
        rg = b.shape[1]
        b = b.reshape(g, conv.out_channels // g, rg)
        if self.transposed:
            a = a.reshape(g, conv.in_channels // g, rg, -1)
            dw = torch.einsum("gcrk,gor->gcok", a, b)
        else:
            a = a.reshape(g, rg, conv.in_channels // g, -1)
            dw = torch.einsum("gor,grck->gock", b, a)
        return dw.reshape(conv.weight.shape) * self.scaling

    def adapted_weight(self, base: nn.Module) -> Tensor:
        weight = cast(Tensor, _as_conv(base).weight)
        merged = weight + self.lora_delta_weight(base)
        if not self.dora:
            return merged
        ratio = self.magnitude / self._out_norm(merged)
        if self.transposed:
            return merged * ratio.reshape(1, -1, *([1] * (weight.dim() - 2)))
        return merged * ratio.reshape(-1, *([1] * (weight.dim() - 1)))

    def delta_weight(self, base: nn.Module) -> Tensor:
        if not self.dora:
            return self.lora_delta_weight(base)
        return self.adapted_weight(base) - cast(Tensor, _as_conv(base).weight)

    def forward(self, inp: Tensor, base: nn.Module) -> Tensor:
        inp = self.dropout(inp)
        if self.dora:
            return conv_like(base, inp, self.delta_weight(base))
        conv = _as_conv(base)
        a = conv_like(conv, inp, self.q(self.lora_a))
        b = self.q(self.lora_b)
        return F.conv3d(a, b.reshape(*b.shape, 1, 1, 1), groups=conv.groups) * self.scaling

    def full_forward(self, x: Tensor, base: nn.Module) -> Tensor:
        return conv_like(base, self.dropout(x), self.adapted_weight(base), _as_conv(base).bias)

    def merge_delta(self, base: nn.Module) -> MergeDelta | None:
        return self.delta_weight(base), None


class ScaleShiftDelta(DeltaModule):
    """Per-channel scale (init 1) and optional shift (init 0) of the output: y = s * h + t.

    With a shift this is BitFit plus norm-affine tuning (for a conv with bias, t is the bias
    change; after a norm layer, s and t compose with its affine parameters) without writing to
    the base tensors. Without a shift it is IA3's output rescaling. Δ(h) = (s - 1) h + t.
    """

    def __init__(self, channels: int, shift: bool) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels)) if shift else None

    def forward(self, inp: Tensor, base: nn.Module) -> Tensor:
        out = _channel_view(self.scale - 1, inp.dim()) * inp
        if self.shift is not None:
            out = out + _channel_view(self.shift, inp.dim())
        return out

    def merge_delta(self, base: nn.Module) -> MergeDelta | None:
        weight = getattr(base, "weight", None)
        bias = getattr(base, "bias", None)
        if not isinstance(weight, Tensor):
            return None  # a norm without affine parameters, or a block
        if isinstance(base, nn.Conv3d | nn.ConvTranspose3d):
            dw = scale_out_channels(weight, base, self.scale - 1)
        elif isinstance(base, nn.BatchNorm3d | nn.InstanceNorm3d | nn.GroupNorm):
            dw = weight * (self.scale - 1)
        else:
            return None
        db = (self.scale - 1) * bias if isinstance(bias, Tensor) else None
        if self.shift is not None:
            db = self.shift if db is None else db + self.shift
        return dw, db


class BottleneckDelta(DeltaModule):
    """1x1x1 down (C_in -> m), depthwise conv, activation, 1x1x1 up (m -> C_out, zero init).

    Sequential: on the target's output, depthwise 3x3x3 with padding 1. Parallel: on the
    target's input, the depthwise conv copies the target's kernel, stride, padding and
    dilation so Δ has exactly the target's output shape; without an activation Δ is then a
    conv with the target's geometry and merges into it.
    """

    def __init__(
        self,
        base: nn.Module,
        c_in: int,
        c_out: int,
        hidden: int,
        placement: str,
        activation: str,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.placement = placement
        self.hidden = hidden
        if placement == "parallel":
            kernel = tuple(_as_conv(base).kernel_size)
        else:
            kernel = (3, 3, 3)
        self.down = nn.Parameter(torch.empty(hidden, c_in))
        self.depthwise = nn.Parameter(torch.empty(hidden, 1, *kernel))
        self.up = nn.Parameter(torch.zeros(c_out, hidden))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5), generator=generator)
        nn.init.kaiming_uniform_(self.depthwise, a=math.sqrt(5), generator=generator)
        self.activation_name = activation
        self.act = _activation(activation)

    def quantised_names(self) -> tuple[str, ...]:
        return ("down", "depthwise", "up")

    def forward(self, inp: Tensor, base: nn.Module) -> Tensor:
        down = self.q(self.down)
        h = F.conv3d(inp, down.reshape(*down.shape, 1, 1, 1))
        if self.placement == "parallel":
            h = conv_like(base, h, self.q(self.depthwise), groups=self.hidden)
        else:
            h = F.conv3d(h, self.q(self.depthwise), padding=1, groups=self.hidden)
        h = self.act(h)
        up = self.q(self.up)
        return F.conv3d(h, up.reshape(*up.shape, 1, 1, 1))

    def merge_delta(self, base: nn.Module) -> MergeDelta | None:
        if self.placement != "parallel" or self.activation_name != "none":
            return None
        conv = _as_conv(base)
        if isinstance(conv, nn.ConvTranspose3d) or conv.groups != 1:
            return None
        dw = self.q(self.depthwise).reshape(self.hidden, -1)
        delta = torch.einsum("om,mk,mc->ock", self.q(self.up), dw, self.q(self.down))
        return delta.reshape(conv.weight.shape), None


class PHMRules(nn.Module):
    """Compacter's slow weights: n rule matrices A_i (n x n), shared by every PHM layer."""

    def __init__(self, n: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, n, n, generator=generator) / math.sqrt(n))


def phm_matrix(rules: Tensor, s: Tensor, t: Tensor) -> Tensor:
    """Σ_i A_i ⊗ (s_i t_i^T): rules (n, n, n), s (n, p, r), t (n, q, r) -> (n p, n q)."""
    n, p, q = rules.shape[0], s.shape[1], t.shape[1]
    return torch.einsum("iab,icr,idr->acbd", rules, s, t).reshape(n * p, n * q)


class PHMDelta(DeltaModule):
    """Compacter adapter: PHM 1x1x1 down (C -> m), activation, PHM 1x1x1 up (m -> C).

    Each weight is Σ_i A_i ⊗ (s_i t_i^T): the A_i come from a shared :class:`PHMRules`
    (one tensor for all layers and both branches), s_i, t_i are this layer's rank-r fast
    weights. The up projection's t starts at zero, so Δ = 0 at initialisation.
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        rank: int,
        rules: PHMRules,
        activation: str,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        n = rules.weight.shape[0]
        self.rules = rules
        std = (1.0 / (rank * channels)) ** 0.25
        self.down_s = nn.Parameter(torch.randn(n, hidden // n, rank, generator=generator) * std)
        self.down_t = nn.Parameter(torch.randn(n, channels // n, rank, generator=generator) * std)
        self.up_s = nn.Parameter(torch.randn(n, channels // n, rank, generator=generator) * std)
        self.up_t = nn.Parameter(torch.zeros(n, hidden // n, rank))
        self.act = _activation(activation)

    def quantised_names(self) -> tuple[str, ...]:
        return ("rules.weight", "down_s", "down_t", "up_s", "up_t")

    def forward(self, inp: Tensor, base: nn.Module) -> Tensor:
        rules = self.q(self.rules.weight)
        down = phm_matrix(rules, self.q(self.down_s), self.q(self.down_t))
        up = phm_matrix(rules, self.q(self.up_s), self.q(self.up_t))
        h = self.act(F.conv3d(inp, down.reshape(*down.shape, 1, 1, 1)))
        return F.conv3d(h, up.reshape(*up.shape, 1, 1, 1))


class PaCADelta(DeltaModule):
    """PaCA: train ``count`` random columns of the kernel viewed as (dim 0, rest).

    For Conv3d that is (C_out, C_in/groups * k^3): each column is one input connection.
    The trained values live in ``values`` (rows x count, zero = unchanged) at the column
    indices in the ``columns`` buffer: a sparse delta, merged by adding it to W.
    """

    weight_space = True

    def __init__(self, base: Conv, count: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        rows, cols = _weight_matrix(base).shape
        chosen = torch.randperm(cols, generator=generator)[: min(count, cols)]
        self.register_buffer("columns", torch.sort(chosen).values)
        self.values = nn.Parameter(torch.zeros(rows, chosen.numel(), dtype=base.weight.dtype))

    def delta_weight(self, base: nn.Module) -> Tensor:
        matrix = _weight_matrix(base)
        columns = cast(Tensor, self.columns)
        delta = torch.zeros_like(matrix).index_copy(1, columns, self.values)
        return delta.reshape(cast(Tensor, _as_conv(base).weight).shape)

    def merge_delta(self, base: nn.Module) -> MergeDelta | None:
        return self.delta_weight(base), None


class BoneDelta(DeltaModule):
    """Bone (block-affine) on the kernel matrix (dim 0, rest) cut into b x b blocks W_ij:
    W'_ij = W_ij (I + B_i) + B_i, one trained B_i per block row (zero init). When b does not
    divide a side, the trailing rows or columns (side mod b) are left unchanged."""

    weight_space = True

    def __init__(self, base: Conv, block: int, name: str = "") -> None:
        super().__init__()
        rows, cols = _weight_matrix(base).shape
        if rows < block or cols < block:
            raise ConfigError(
                f"Bone on {name!r}: its weight matrix ({rows} x {cols}) is smaller than one "
                f"{block} x {block} block; lower block_size or exclude the layer"
            )
        self.block = block
        self.blocks = nn.Parameter(
            torch.zeros(rows // block, block, block, dtype=base.weight.dtype)
        )

    def delta_weight(self, base: nn.Module) -> Tensor:
        matrix = _weight_matrix(base)
        rows, cols = matrix.shape
        b = self.block
        r_fit, c_fit = rows // b * b, cols // b * b
        tiles = matrix[:r_fit, :c_fit].reshape(rows // b, b, cols // b, b).permute(0, 2, 1, 3)
        bones = self.blocks.unsqueeze(1)
        fitted = (tiles @ bones + bones).permute(0, 2, 1, 3).reshape(r_fit, c_fit)
        delta = F.pad(fitted, (0, cols - c_fit, 0, rows - r_fit))
        return delta.reshape(cast(Tensor, _as_conv(base).weight).shape)

    def merge_delta(self, base: nn.Module) -> MergeDelta | None:
        return self.delta_weight(base), None


class Gate(nn.Module):
    """VL-PET-style gate g in (0, 2) multiplying the adapter output, 1 at initialisation.

    ``channel``: g_c = 2 sigmoid(v_c), one learned value per output channel (static, merges).
    ``voxel``: g = 2 sigmoid(w . Δ(voxel) + b), one value per voxel from the adapter output.
    ``sample``: g = 2 sigmoid(w . mean_voxels(Δ) + b), one value per sample.
    """

    def __init__(self, channels: int, granularity: str) -> None:
        super().__init__()
        self.granularity = granularity
        self.weight = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(1)) if granularity != "channel" else None

    def forward(self, delta: Tensor) -> Tensor:
        if self.granularity == "channel":
            return delta * _channel_view(2 * torch.sigmoid(self.weight), delta.dim())
        bias = cast(Tensor, self.bias)
        if self.granularity == "voxel":
            logit = torch.einsum("bc...,c->b...", delta, self.weight).unsqueeze(1) + bias
        else:
            pooled = delta.flatten(2).mean(dim=2)
            logit = (pooled @ self.weight + bias).reshape(-1, *([1] * (delta.dim() - 1)))
        return delta * (2 * torch.sigmoid(logit))

    def static_scale(self) -> Tensor | None:
        """The per-channel factor when the gate does not depend on the input, else None."""
        return 2 * torch.sigmoid(self.weight) if self.granularity == "channel" else None


class AdaptedModule(nn.Module):
    """A frozen ``base`` module plus an adapter ``delta`` (and optional gate)."""

    def __init__(
        self, base: nn.Module, delta: DeltaModule, placement: str, gate: Gate | None = None
    ) -> None:
        super().__init__()
        self.base = base
        self.delta = delta
        self.placement = placement
        self.gate = gate

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        if self.placement == "parallel":
            if self.delta.weight_space and self.gate is None and not args and not kwargs:
                return self.delta.full_forward(x, self.base)
            y = self.base(x, *args, **kwargs)
            d = self.delta(x, self.base)
        else:
            y = self.base(x, *args, **kwargs)
            d = self.delta(y, self.base)
        if self.gate is not None:
            d = self.gate(d)
        return y + d

    def merge_delta(self) -> MergeDelta | None:
        """(ΔW, Δb) that fold adapter and gate into the base module, or None."""
        found = self.delta.merge_delta(self.base)
        if found is None or self.gate is None:
            return found
        scale = self.gate.static_scale()
        if scale is None:
            return None
        dw, db = found
        return scale_out_channels(dw, self.base, scale), None if db is None else db * scale
