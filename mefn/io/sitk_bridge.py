"""Conversions between :class:`~mefn.io.volume.Volume` and SimpleITK images, and basic writing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mefn.errors import OutputError
from mefn.fileutil import atomic_path
from mefn.io.volume import Geometry, Volume

__all__ = [
    "array_from_sitk",
    "geometry_from_sitk",
    "set_threads",
    "to_sitk",
    "from_sitk",
    "write_volume",
]


def geometry_from_sitk(image: sitk.Image) -> Geometry:
    if image.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, found {image.GetDimension()}D")
    return Geometry(
        shape=tuple(image.GetSize()),  # type: ignore[arg-type]
        spacing_mm=tuple(image.GetSpacing()),  # type: ignore[arg-type]
        origin_mm=tuple(image.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(image.GetDirection()),
    )


def array_from_sitk(image: sitk.Image) -> np.ndarray:
    """The voxels of a 3D image as a C-contiguous ``[i, j, k]`` array, copied once.

    ``GetArrayFromImage`` would copy to ``[k, j, i]`` and the transpose copy again; the view
    avoids the first copy (it is read before ``image`` can go away).
    """
    return np.ascontiguousarray(sitk.GetArrayViewFromImage(image).transpose(2, 1, 0))


def from_sitk(image: sitk.Image, modality: str | None = None, units: str | None = None) -> Volume:
    """A Volume from a 3D SimpleITK image (array transposed to [i, j, k])."""
    geo = geometry_from_sitk(image)
    array = array_from_sitk(image)
    return Volume(array=array, geometry=geo, modality=modality, units=units)


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK image carrying the volume's array and exact geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    geo = volume.geometry
    image.SetSpacing(geo.spacing_mm)
    image.SetOrigin(geo.origin_mm)
    image.SetDirection(geo.direction)
    return image


def write_volume(
    volume: Volume,
    path: str | os.PathLike[str],
    dtype: np.dtype | type | None = None,
    overwrite: bool = True,
    compress: bool = True,
) -> Path:
    """Write a volume (NIfTI, MHA/MHD, NRRD by extension), atomically.

    ``dtype`` casts the array first (``np.uint8`` for masks, ``np.float32`` for maps).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path} already exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise OutputError(f"folder {path.parent} does not exist; create it first")
    vol = volume if dtype is None else volume.with_array(volume.array.astype(dtype, copy=False))
    image = to_sitk(vol)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return path


def set_threads(threads: int) -> None:
    """SimpleITK's default number of threads for every filter (a process-wide setting)."""
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
