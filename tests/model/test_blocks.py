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
    y1.square().sum().backward()
    y2.square().sum().backward()
    assert plain.weight.grad is not None and fast.weight.grad is not None
    assert torch.allclose(plain.weight.grad, fast.weight.grad, rtol=1e-4, atol=1e-4)
    assert x.grad is not None and x2.grad is not None
    assert torch.allclose(x.grad, x2.grad, atol=1e-4)
    assert set(fast.state_dict()) == set(plain.state_dict())
