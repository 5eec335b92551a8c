"""Low-bit quantiser: levels, codes, packing, straight-through gradient (hand-checked)."""

from __future__ import annotations

import math

import pytest
import torch

from mefn.adapters.quant import (
    dequantize,
    fake_quantize,
    normal_levels,
    pack_codes,
    quantize_codes,
    scales_fit_half,
    unpack_codes,
)


def test_levels_are_normal_quantiles() -> None:
    torch.testing.assert_close(normal_levels(1), torch.tensor([-0.6745, 0.6745]), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        normal_levels(2), torch.tensor([-1.1503, -0.3186, 0.3186, 1.1503]), atol=1e-4, rtol=0
    )
    assert normal_levels(8).shape == (256,)
    with pytest.raises(ValueError, match="bits must be one of"):
        normal_levels(3)


def test_one_bit_quantisation_by_hand() -> None:
    t = torch.tensor([1.0, 2.0, 3.0, 4.0])
    codes, mean, std = quantize_codes(t, 1)
    assert codes.tolist() == [0, 0, 1, 1]
    assert float(mean) == 2.5
    # the std, sqrt(1.25), is kept as its nearest float16 value (what the file stores)
    assert float(std) == float(torch.tensor(math.sqrt(1.25)).half())
    assert math.isclose(float(std), math.sqrt(1.25), rel_tol=1e-3)
    step = 0.6744897 * float(std)
    expected = torch.tensor([2.5 - step, 2.5 - step, 2.5 + step, 2.5 + step])
    torch.testing.assert_close(dequantize(codes, mean, std, 1), expected, atol=1e-5, rtol=0)


def test_scales_beyond_float16_stay_float32() -> None:
    t = torch.tensor([1e5, 3e5])
    _, mean, std = quantize_codes(t, 1)
    assert float(mean) == 2e5 and float(std) == 1e5  # not float16 values: kept as they are
    assert not scales_fit_half(torch.stack([mean, std]))
    assert scales_fit_half(torch.tensor([[2.5, 1.1181640625]]))


def test_two_bit_codes_pick_the_nearest_level() -> None:
    # standardised values near each level of [-1.15, -0.32, 0.32, 1.15]
    z = torch.tensor([-1.2, -0.3, 0.3, 1.2, -1.2, -0.3, 0.3, 1.2])
    codes, _, _ = quantize_codes(z, 2)
    assert codes.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]


def test_zero_tensor_stays_zero() -> None:
    z = torch.zeros(3, 4)
    assert torch.equal(fake_quantize(z, 1), z)


def test_fake_quantize_equals_stored_form_and_passes_gradients() -> None:
    t = torch.randn(5, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = fake_quantize(t, 2)
    assert torch.equal(out, dequantize(*quantize_codes(t, 2), bits=2))
    assert len(torch.unique(out)) <= 4
    (out * torch.arange(35.0).reshape(5, 7)).sum().backward()
    assert torch.equal(t.grad, torch.arange(35.0).reshape(5, 7))


def test_pack_by_hand() -> None:
    codes = torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1], dtype=torch.uint8)
    assert pack_codes(codes, 1).tolist() == [13, 1]
    assert pack_codes(torch.tensor([3, 0, 1, 2, 1]), 2).tolist() == [3 + 1 * 16 + 2 * 64, 1]


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_pack_unpack_round_trip(bits: int) -> None:
    codes = torch.randint(0, 2**bits, (37,), generator=torch.Generator().manual_seed(bits))
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(37 * bits / 8)
    assert torch.equal(unpack_codes(packed, bits, 37), codes.to(torch.uint8))
