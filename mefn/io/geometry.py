"""Physical-space checks on a PET/CT pair and resampling between grids (SimpleITK).

Extents are the axis-aligned boxes (LPS mm) around each image's voxel *boundaries*;
two scans overlap when their boxes intersect on all three axes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mefn.errors import GeometryError, InputError
from mefn.io.volume import Geometry, Volume

__all__ = [
    "PairCheck",
    "check_ct_units",
    "check_pair",
    "check_pet_uptake",
    "check_pet_units",
    "overlap_box_mm",
    "reference_grid",
    "resample_to",
]

logger = logging.getLogger(__name__)

_AXES = ("x", "y", "z")
# PET whose maximum is above this is not SUV (Bq/mL of a clinical scan are in the thousands).
PET_MAX_SUV = 1000.0
# A CT with nothing below this (no air, lung or fat) is unusual; >= 0 everywhere is not HU.
CT_LOW_HU = -100.0
# PET (SUV) may dip a little below 0 where reconstruction rings; air-like values are CT.
PET_MIN_SUV = -50.0
# CT above this is inside the body (soft tissue, bone, fat, tumour); lung and air are below.
BODY_MIN_HU = -500.0


@dataclass(frozen=True)
class PairCheck:
    """What :func:`check_pair` found: the overlap box and its share of each image."""

    overlap_lo_mm: tuple[float, float, float]
    overlap_hi_mm: tuple[float, float, float]
    fraction_of_ct: float
    fraction_of_pet: float
    same_grid: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "overlap_lo_mm": list(self.overlap_lo_mm),
            "overlap_hi_mm": list(self.overlap_hi_mm),
            "fraction_of_ct": self.fraction_of_ct,
            "fraction_of_pet": self.fraction_of_pet,
            "same_grid": self.same_grid,
        }


def _geometry(item: Volume | Geometry) -> Geometry:
    return item.geometry if isinstance(item, Volume) else item


def overlap_box_mm(a: Volume | Geometry, b: Volume | Geometry) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of the intersection of the two extents; hi <= lo on an axis means none."""
    alo, ahi = _geometry(a).extent_mm()
    blo, bhi = _geometry(b).extent_mm()
    return np.maximum(alo, blo), np.minimum(ahi, bhi)


def _box_volume(lo: np.ndarray, hi: np.ndarray) -> float:
    return float(np.prod(np.clip(hi - lo, 0.0, None)))


RAW_CT_SOFT_TISSUE = 900.0  # stored CT values of soft tissue are about 1000 and above


def check_ct_units(ct: Volume, name: str = "CT") -> None:
    """InputError when the CT cannot be in HU; a warning when unusual.

    Stored (unsigned) CT values put soft tissue near 1000 and nothing below 0; a CT in HU has
    air, lung or fat below 0 unless it is a small crop inside soft tissue, whose values then
    stay well below 900 (soft tissue is 0 to 100 HU). So "nothing below 0 and something at or
    above 900" is refused, and "nothing below 0" alone is only a warning.
    """
    if ct.array.size == 0:
        raise InputError(f"{name} is empty")
    lo, hi = float(np.min(ct.array)), float(np.max(ct.array))
    if lo >= 0.0 and hi >= RAW_CT_SOFT_TISSUE:
        raise InputError(
            f"{name} values range {lo:g} to {hi:g}, all >= 0: this is not in HU (air is -1000); "
            "apply the DICOM rescale slope/intercept or give the CT in HU"
        )
    if lo > CT_LOW_HU:
        logger.warning(
            "%s minimum is %g HU: no air, lung or fat in view; is it really a CT in HU?", name, lo
        )


def check_pet_units(pet: Volume, name: str = "PET") -> None:
    """InputError when the PET looks like Bq/mL or counts, or like a CT, rather than SUV,
    or holds no uptake at all (nothing above 0: an empty or failed reconstruction)."""
    if pet.array.size == 0:
        raise InputError(f"{name} is empty")
    lo, hi = float(np.min(pet.array)), float(np.max(pet.array))
    if lo < PET_MIN_SUV:
        raise InputError(
            f"{name} minimum is {lo:g}: this looks like a CT in HU (air is -1000), not SUV "
            f"(expected above {PET_MIN_SUV:g}); check that CT and PET are not swapped "
            "(nnU-Net: _0000 is CT, _0001 is PET; or give --ct and --pet)"
        )
    if hi > PET_MAX_SUV:
        raise InputError(
            f"{name} maximum is {hi:g}: this looks like Bq/mL (or counts), not SUV (expected "
            f"below {PET_MAX_SUV:g}); give the PET DICOM series (converted to SUVbw from its "
            "tags) or a PET already in SUV (AutoPET: SUV.nii.gz, not PET.nii.gz)"
        )
    if not np.any(pet.array > 0.0):
        raise InputError(
            f"{name} has no voxel above 0 (values {lo:g} to {hi:g}): an image without any "
            "uptake cannot be a PET; check the PET file (an empty or failed reconstruction?)"
        )


def _positive_pet_in_body(ct: Volume, pet: Volume, body_min_hu: float) -> bool:
    """True when a PET voxel above 0 has its centre in a CT voxel above ``body_min_hu``.

    Only the PET block around the CT's box is looked at; the CT is sampled (nearest voxel)
    at the centres of its positive voxels, one PET slice at a time from the middle out,
    stopping at the first hit: no resampled copy of either image.
    """
    corners = pet.geometry.world_to_index(ct.geometry.corners_world())
    lo = np.maximum(np.floor(corners.min(axis=0)), 0).astype(int)
    hi = np.minimum(np.ceil(corners.max(axis=0)), np.asarray(pet.shape) - 1).astype(int)
    if np.any(hi < lo):
        return False
    pet_to_ct = np.linalg.inv(ct.geometry.affine_lps) @ pet.geometry.affine_lps
    rot, shift = pet_to_ct[:3, :3], pet_to_ct[:3, 3]
    ct_shape = np.asarray(ct.shape)
    block = pet.array[lo[0] : hi[0] + 1, lo[1] : hi[1] + 1]
    middle = (lo[2] + hi[2]) / 2.0
    for k in sorted(range(lo[2], hi[2] + 1), key=lambda k: abs(k - middle)):
        i, j = np.nonzero(block[:, :, k] > 0)
        if i.size == 0:
            continue
        index = np.stack([i + lo[0], j + lo[1], np.full_like(i, k)], axis=1).astype(np.float64)
        at = np.rint(index @ rot.T + shift).astype(np.int64)
        at = at[np.all((at >= 0) & (at < ct_shape), axis=1)]
        if at.size and bool(np.any(ct.array[at[:, 0], at[:, 1], at[:, 2]] > body_min_hu)):
            return True
    return False


def _finite_max(array: np.ndarray) -> float:
    return float(np.max(array, initial=-np.inf, where=np.isfinite(array)))


def check_pet_uptake(
    ct: Volume, pet: Volume, body_min_hu: float = BODY_MIN_HU, name: str = "PET"
) -> None:
    """InputError when no PET voxel above 0 lies inside the body the CT shows.

    The body is the CT above ``body_min_hu`` (HU), sampled where PET and CT overlap: a PET
    whose uptake lies only in the air around the patient (or outside the CT) is not this
    CT's PET, or not a PET at all.
    """
    if not _positive_pet_in_body(ct, pet, body_min_hu):
        raise InputError(
            f"{name} has no voxel above 0 inside the body seen on the CT (CT above "
            f"{body_min_hu:g} HU, where the two overlap; PET max {_finite_max(pet.array):g}): "
            "its uptake lies only outside the patient; check that CT and PET are the same "
            "study and that the PET is a real PET image"
        )


def check_pair(ct: Volume, pet: Volume, check_units: bool = True) -> PairCheck:
    """Check a CT and a PET belong together; returns the overlap found.

    Raises :class:`GeometryError` when they do not overlap in physical space (both
    extents in the message) and, with ``check_units``, :class:`InputError` when the CT is
    not in HU, the PET not in SUV, or the PET has no voxel above 0 inside the CT's body
    (:func:`check_pet_units`, :func:`check_pet_uptake`).
    """
    lo, hi = overlap_box_mm(ct, pet)
    if np.any(hi <= lo):
        axis = int(np.argmin(hi - lo))
        clo, chi = ct.geometry.extent_mm()
        plo, phi = pet.geometry.extent_mm()
        ax = _AXES[axis]
        raise GeometryError(
            f"PET and CT do not overlap: PET covers {ax} {plo[axis]:.0f} to {phi[axis]:.0f} mm, "
            f"CT covers {ax} {clo[axis]:.0f} to {chi[axis]:.0f} mm; are these the same study?"
        )
    inter = _box_volume(lo, hi)
    fct = inter / max(_box_volume(*ct.geometry.extent_mm()), 1e-12)
    fpet = inter / max(_box_volume(*pet.geometry.extent_mm()), 1e-12)
    if fct < 0.5:
        logger.warning(
            "the PET covers only part of the CT (%.0f%% of the CT box, %.0f%% of the PET box)",
            100 * fct,
            100 * fpet,
        )
    if check_units:
        check_ct_units(ct)
        check_pet_units(pet)
        check_pet_uptake(ct, pet)
    return PairCheck(
        overlap_lo_mm=tuple(float(v) for v in lo),  # type: ignore[arg-type]
        overlap_hi_mm=tuple(float(v) for v in hi),  # type: ignore[arg-type]
        fraction_of_ct=fct,
        fraction_of_pet=fpet,
        same_grid=ct.geometry.same_grid(pet.geometry),
    )


def resample_to(
    volume: Volume,
    geometry: Geometry,
    interpolation: str = "linear",
    default_value: float = 0.0,
) -> Volume:
    """``volume`` resampled onto ``geometry`` (physical space, identity transform).

    ``"linear"`` for images (output float32), ``"nearest"`` for labels (dtype kept).
    Voxels of ``geometry`` outside ``volume`` get ``default_value``. The output carries
    exactly ``geometry`` (direction included) and the input's modality, units and meta.
    """
    import SimpleITK as sitk

    from mefn.io.sitk_bridge import array_from_sitk, to_sitk

    if interpolation not in ("linear", "nearest"):
        raise ValueError(f"interpolation must be 'linear' or 'nearest', found {interpolation!r}")
    src = volume
    if interpolation == "linear" and src.array.dtype != np.float32:
        src = src.with_array(src.array.astype(np.float32))
    if src.geometry.same_grid(geometry, atol_mm=1e-4, atol_dir=1e-7):
        return src.with_array(src.array.copy(), geometry=geometry)
    image = to_sitk(src)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(s) for s in geometry.shape])
    resampler.SetOutputSpacing(geometry.spacing_mm)
    resampler.SetOutputOrigin(geometry.origin_mm)
    resampler.SetOutputDirection(geometry.direction)
    resampler.SetInterpolator(
        sitk.sitkLinear if interpolation == "linear" else sitk.sitkNearestNeighbor
    )
    resampler.SetDefaultPixelValue(float(default_value))
    resampler.SetTransform(sitk.Transform())
    out = resampler.Execute(image)
    array = array_from_sitk(out)
    return src.with_array(array, geometry=geometry)


def reference_grid(
    source: Volume | Geometry,
    spacing_mm: tuple[float, float, float],
    direction: Literal["identity", "source"] = "identity",
) -> Geometry:
    """A grid of ``spacing_mm`` whose voxels cover ``source``'s whole physical extent.

    ``direction="identity"``: axis-aligned (LPS) grid around the source's bounding box;
    ``"source"``: the source's own axes (flips and obliquity kept). Either way the new grid
    is centred on the region it covers.
    """
    geo = _geometry(source)
    sp = np.asarray(spacing_mm, dtype=np.float64)
    if sp.shape != (3,) or np.any(sp <= 0) or not np.all(np.isfinite(sp)):
        raise GeometryError(f"grid spacing must be three positive numbers, found {spacing_mm}")
    if direction == "identity":
        frame = np.eye(3)
        lo, hi = geo.extent_mm()
        size = hi - lo
        start_world = lo
    elif direction == "source":
        frame = geo.direction_matrix
        size = np.asarray(geo.shape) * np.asarray(geo.spacing_mm)
        start_world = geo.index_to_world(np.full(3, -0.5))
    else:
        raise ValueError(f"direction must be 'identity' or 'source', found {direction!r}")
    shape = tuple(max(1, math.ceil(s / d - 1e-6)) for s, d in zip(size, sp))
    covered = np.asarray(shape) * sp
    offset = -(covered - size) / 2.0 + sp / 2.0  # in the grid's own frame
    origin = start_world + frame @ offset
    return Geometry(
        shape=shape,  # type: ignore[arg-type]
        spacing_mm=tuple(float(v) for v in sp),  # type: ignore[arg-type]
        origin_mm=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=tuple(frame.ravel()),
    )
