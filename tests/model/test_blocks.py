"""Padding helper, input checks and the CPU convolution fast paths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mefn.errors import InputError
from mefn.model import pad_to_divisor
from mefn.model.blocks import OneDnnConv3d, check_input, use_onednn_convolutions


def test_pad_to_divisor_odd_sizes_and_crop_back() -> None:
    x = (
        torch.arange(33 * 34 * 35, dtype=torch.float32)
        .reshape(1, 1, 33, 34, 35)
        .repeat(1, 2, 1, 1, 1)
    )
    padded, crop = pad_to_divisor(x, 8)
    assert padded.shape == (1, 2, 40, 40, 40)
    assert torch.equal(padded[crop], x)
    # replicate padding: the last plane is repeated
    assert torch.equal(padded[:, :, 39, :34, :35], x[:, :, 32])
    assert torch.equal(padded[:, :, :33, :34, 38], x[:, :, :, :, 34])
    same, crop2 = pad_to_divisor(padded, 8)
    assert same is padded and torch.equal(same[crop2], padded)


def test_pad_to_divisor_errors() -> None:
    with pytest.raises(InputError, match=r"expects \(B, C, \*spatial\), found a 2D tensor"):
        pad_to_divisor(torch.zeros(3, 4), 8)
    with pytest.raises(InputError, match="divisor must be >= 1, found 0"):
        pad_to_divisor(torch.zeros(1, 1, 4), 0)


def test_check_input_errors() -> None:
    check_input(torch.zeros(1, 2, 8, 16, 24), 8)
    with pytest.raises(
        InputError, match=r"must be \(B, 2, X, Y, Z\) .* found shape \(1, 3, 8, 8, 8\)"
    ):
        check_input(torch.zeros(1, 3, 8, 8, 8), 8)
    with pytest.raises(InputError, match="must be a float tensor, found torch.int64"):
        check_input(torch.zeros(1, 2, 8, 8, 8, dtype=torch.long), 8)
    with pytest.raises(
        InputError, match=r"\(33, 34, 35\) is not a multiple of the model's size_divisor 8; pad"
    ):
        check_input(torch.zeros(1, 2, 33, 34, 35), 8)


@pytest.mark.parametrize(
    ("cin", "cout", "kernel", "stride", "batch"),
    [
        (4, 4, 3, 1, 1),
        (3, 5, 3, 2, 1),
        (4, 2, 1, 1, 1),
        (4, 2, 1, 1, 2),
        (16, 16, 1, 1, 1),
        (2, 3, 3, 1, 2),
    ],
)
def test_onednn_conv_matches_plain_conv(
    cin: int, cout: int, kernel: int, stride: int, batch: int
) -> None:
    torch.manual_seed(0)
    plain = nn.Conv3d(cin, cout, kernel, stride=stride, padding=kernel // 2)
    fast = nn.Conv3d(cin, cout, kernel, stride=stride, padding=kernel // 2)
    fast.load_state_dict(plain.state_dict())
    use_onednn_convolutions(fast)
    assert type(fast) is OneDnnConv3d and isinstance(fast, nn.Conv3d)
    x = torch.randn(batch, cin, 9, 10, 11, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y1, y2 = plain(x), fast(x2)
    assert y1.shape == y2.shape
    assert torch.allclose(y1, y2, atol=1e-5)
    with torch.no_grad():  # inference takes the matmul path of a small 1x1x1 convolution
        assert torch.allclose(plain(x), fast(x), atol=1e-5)
    y1.square().sum().backward()
    y2.square().sum().backward()
    assert plain.weight.grad is not None and fast.weight.grad is not None
    assert torch.allclose(plain.weight.grad, fast.weight.grad, rtol=1e-4, atol=1e-4)
    assert x.grad is not None and x2.grad is not None
    assert torch.allclose(x.grad, x2.grad, atol=1e-4)
    assert set(fast.state_dict()) == set(plain.state_dict())


def _saved_shapes(fn: object) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
    """Run ``fn()`` recording the shape of every tensor autograd saves for backward."""
    saved: list[tuple[int, ...]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()  # type: ignore[operator]
    return out, saved


@pytest.mark.parametrize(
    ("cin", "cout", "kernel", "stride", "dilation", "groups", "batch", "train_bias"),
    [
        (3, 5, 3, 1, 1, 1, 2, False),
        (4, 6, 3, 2, 1, 1, 1, True),  # strided, batch 1 (the oneDNN path), trainable bias
        (4, 4, 3, 1, 2, 2, 2, False),  # dilated, grouped
        (4, 2, 1, 1, 1, 1, 2, True),  # 1x1x1 with few channels (the matmul path)
        (2, 3, 3, 1, 1, 1, 1, False),
    ],
)
def test_frozen_weight_conv_keeps_no_input_and_gives_the_same_gradients(
    cin: int,
    cout: int,
    kernel: int,
    stride: int,
    dilation: int,
    groups: int,
    batch: int,
    train_bias: bool,
) -> None:
    """Behind a frozen weight the input is not saved for backward; gradients are unchanged."""
    torch.manual_seed(0)
    pad = dilation * (kernel // 2)
    plain = nn.Conv3d(cin, cout, kernel, stride, pad, dilation, groups)
    lean = nn.Conv3d(cin, cout, kernel, stride, pad, dilation, groups)
    use_onednn_convolutions(lean)
    lean.load_state_dict(plain.state_dict())
    assert plain.bias is not None and lean.bias is not None
    for param in (plain.weight, lean.weight, plain.bias, lean.bias):
        param.requires_grad_(train_bias and param.ndim == 1)
    x = torch.randn(batch, cin, 9, 10, 11)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, saved_plain = _saved_shapes(lambda: plain(x1))
    y2, saved_lean = _saved_shapes(lambda: lean(x2))
    assert tuple(x.shape) in saved_plain  # what the change removes: aten keeps the input
    assert tuple(x.shape) not in saved_lean and saved_lean == [tuple(plain.weight.shape)]
    assert torch.allclose(y1, y2, atol=1e-5)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    assert x1.grad is not None and x2.grad is not None
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)
    assert lean.weight.grad is None
    if train_bias:
        assert plain.bias.grad is not None and lean.bias.grad is not None
        assert torch.allclose(plain.bias.grad, lean.bias.grad, rtol=1e-5, atol=1e-5)
    else:
        assert lean.bias.grad is None


def test_trainable_or_gradient_free_convolutions_keep_the_standard_path() -> None:
    conv = nn.Conv3d(2, 3, 3, padding=1)
    use_onednn_convolutions(conv)
    assert conv.bias is not None
    x = torch.randn(2, 2, 6, 6, 6, requires_grad=True)
    _, saved = _saved_shapes(lambda: conv(x))
    assert (2, 2, 6, 6, 6) in saved  # the weight trains: its gradient needs the input
    conv.weight.requires_grad_(False)
    conv.bias.requires_grad_(False)
    _, saved = _saved_shapes(lambda: conv(x.detach()))
    assert saved == []  # nothing needs a gradient: no graph at all
    with torch.no_grad():
        assert conv(x).grad_fn is None
