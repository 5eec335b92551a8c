"""Sliding-window inference over a model-space tensor (MONAI), with nothing but torch and MONAI.

:func:`sliding_window_predict` is what :class:`mefn.inference.Predictor`, validation during
training and the GPU burst's calibration run; it lives here rather than in
:mod:`mefn.inference` because that module loads :mod:`mefn.postprocess` (cc3d) and the image
readers' chain at import, which a training machine without cc3d or SimpleITK must not need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["sliding_window_predict"]


def sliding_window_predict(
    model: Any,
    image: Any,
    roi_size: tuple[int, int, int],
    overlap: float,
    sw_batch_size: int,
    device: Any,
    keys: Sequence[str] | None = None,
) -> dict[str, Any]:
    """MONAI sliding-window inference of ``model.infer`` over a (1, 2, X, Y, Z) tensor.

    The input is padded to a multiple of the model's size divisor and of the window, and
    the outputs are cropped back. Tiles are blended with a Gaussian weight, on the CPU. A
    window is at least two size divisors along one axis: at one divisor on every axis the
    deepest features would be a single voxel, which instance normalisation refuses.
    ``keys`` keeps only those outputs of ``model.infer`` (default: all of them).

    All kept maps travel through MONAI as one tensor (their channels concatenated), so the
    blending runs once per tile and one count map serves them all (MONAI keeps a full-size
    count map per output otherwise); the values are those of blending each map alone.
    """
    import torch
    from monai.inferers import sliding_window_inference

    divisor = int(getattr(model, "size_divisor", 1))
    shape = image.shape[2:]
    roi = tuple(
        max(divisor, min(r, int(math.ceil(s / divisor)) * divisor)) for r, s in zip(roi_size, shape)
    )
    if divisor > 1 and all(r == divisor for r in roi) and max(roi_size) > divisor:
        roi = (2 * divisor, *roi[1:])  # a case smaller than one divisor along every axis
    target = [max(r, int(math.ceil(s / divisor)) * divisor) for r, s in zip(roi, shape)]
    pad: list[int] = []
    for s, t in reversed(list(zip(shape, target))):
        pad += [0, t - s]
    padded = torch.nn.functional.pad(image, pad, mode="replicate") if any(pad) else image

    channels: dict[str, tuple[int, int]] = {}  # output name -> its channels in the blend

    def predictor(x: Any) -> Any:
        maps = model.infer(x.to(device))
        if not channels:
            start = 0
            for key, value in maps.items():
                if keys is None or key in keys:
                    channels[key] = (start, start + int(value.shape[1]))
                    start += int(value.shape[1])
        return torch.cat([maps[key].float() for key in channels], dim=1)

    with torch.no_grad():
        blended: Any = sliding_window_inference(
            padded,
            roi_size=roi,
            sw_batch_size=sw_batch_size,
            predictor=predictor,
            overlap=overlap,
            mode="gaussian",
            sw_device=device,
            device=torch.device("cpu"),
        )
    crop = tuple(slice(0, s) for s in shape)
    return {key: blended[(slice(None), slice(a, b), *crop)] for key, (a, b) in channels.items()}
