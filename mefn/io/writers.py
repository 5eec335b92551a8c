"""Writers for multi-volume outputs (class probabilities as one 4D NIfTI)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mefn.fileutil import atomic_path
from mefn.io.sitk_bridge import to_sitk
from mefn.io.volume import Geometry, Volume

__all__ = ["write_multichannel"]


def write_multichannel(
    channels: np.ndarray, geometry: Geometry, path: str | os.PathLike[str]
) -> Path:
    """Write ``(C, X, Y, Z)`` float32 maps as a 4D image (volume c = channel c), atomically."""
    path = Path(path)
    images = [
        to_sitk(Volume(np.ascontiguousarray(c, dtype=np.float32), geometry)) for c in channels
    ]
    joined = sitk.JoinSeries(images)
    with atomic_path(path) as tmp:
        sitk.WriteImage(joined, str(tmp), useCompression=True)
    return path
