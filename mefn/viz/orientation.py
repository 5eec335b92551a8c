"""Orientation on screen: re-orienting ``[i, j, k]`` arrays and cutting display planes.

Arrays are indexed ``[i, j, k]`` on a grid whose direction matrix gives each axis in LPS
(see :mod:`mefn.io.volume`). For display, each array is re-oriented (axes permuted and
flipped, never resampled) to the LPS axis nearest to each of its axes, then shown in the
radiological convention: axial seen from the feet with anterior up and the patient's
right on the left of the screen; coronal seen from the front with the head up and the
patient's right on the left; sagittal seen from the patient's left with the head up and
anterior on the left. Oblique grids are shown on their nearest axes (the obliquity is
logged, not corrected). Pixels keep their physical aspect ratio.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mefn.errors import GeometryError
from mefn.io.volume import Geometry

__all__ = [
    "PLANES",
    "DisplayOrientation",
    "display_orientation",
    "move_point",
    "n_slices",
    "slice_index",
    "slice_planes",
]

logger = logging.getLogger(__name__)

PLANES: tuple[str, str, str] = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class DisplayOrientation:
    """How to turn an ``[i, j, k]`` array into one indexed along (L, P, S).

    Canonical axis ``a`` is original axis ``perm[a]``, reversed when ``flip[a]``; so canonical
    index 0 along axis 0 is the patient's rightmost voxel, along 1 the most anterior, along 2
    the most inferior.
    """

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    oblique_deg: float

    def apply(self, array: np.ndarray) -> np.ndarray:
        """The canonical view of a 3D array (a view, not a copy, where possible)."""
        out = np.transpose(array, self.perm)
        for axis, flipped in enumerate(self.flip):
            if flipped:
                out = np.flip(out, axis=axis)
        return out

    def to_canonical(self, point: Sequence[int]) -> tuple[int, int, int]:
        """Canonical index of an original voxel index."""
        out = []
        for a in range(3):
            value = int(point[self.perm[a]])
            out.append(self.shape[a] - 1 - value if self.flip[a] else value)
        return (out[0], out[1], out[2])

    def from_canonical(self, point: Sequence[int]) -> tuple[int, int, int]:
        """Original voxel index of a canonical index."""
        out = [0, 0, 0]
        for a in range(3):
            value = int(point[a])
            out[self.perm[a]] = self.shape[a] - 1 - value if self.flip[a] else value
        return (out[0], out[1], out[2])


def display_orientation(geometry: Geometry) -> DisplayOrientation:
    """The axis permutation and flips that bring ``geometry``'s array nearest to LPS."""
    direction = geometry.direction_matrix  # columns: array axes in LPS
    weights = np.abs(direction)
    perm = [-1, -1, -1]
    used_axes: set[int] = set()
    # Greedy assignment, largest cosine first: robust to oblique and tied directions.
    for flat in np.argsort(-weights, axis=None):
        lps, axis = divmod(int(flat), 3)
        if perm[lps] == -1 and axis not in used_axes:
            perm[lps] = axis
            used_axes.add(axis)
    flip = tuple(bool(direction[lps, perm[lps]] < 0) for lps in range(3))
    cosines = [abs(direction[lps, perm[lps]]) for lps in range(3)]
    oblique = float(np.degrees(np.arccos(np.clip(min(cosines), -1.0, 1.0))))
    if oblique > 1.0:
        logger.debug("grid is oblique by %.1f degrees; shown on its nearest axes", oblique)
    shape = tuple(geometry.shape[p] for p in perm)
    spacing = tuple(geometry.spacing_mm[p] for p in perm)
    return DisplayOrientation(
        perm=(perm[0], perm[1], perm[2]),
        flip=(flip[0], flip[1], flip[2]),
        shape=(shape[0], shape[1], shape[2]),
        spacing_mm=(spacing[0], spacing[1], spacing[2]),
        oblique_deg=oblique,
    )


def _plane_axes(plane: str) -> tuple[int, int, int]:
    """(canonical axis held fixed, axis along screen rows, axis along screen columns)."""
    if plane == "axial":
        return 2, 1, 0
    if plane == "coronal":
        return 1, 2, 0
    if plane == "sagittal":
        return 0, 2, 1
    raise ValueError(f"plane must be one of {PLANES}, found {plane!r}")


def _canonical_plane(canon: np.ndarray, plane: str, index: int) -> np.ndarray:
    fixed, rows, _ = _plane_axes(plane)
    image = np.take(canon, index, axis=fixed)  # remaining axes in increasing order
    # After removing `fixed`, put `rows` first.
    remaining = [a for a in range(3) if a != fixed]
    if remaining[0] != rows:
        image = image.T
    if rows == 2:  # superior at the top of the screen
        image = image[::-1, :]
    return image


def _plane_aspect(orient: DisplayOrientation, plane: str) -> float:
    _, rows, cols = _plane_axes(plane)
    return orient.spacing_mm[rows] / orient.spacing_mm[cols]


def _screen_position(
    orient: DisplayOrientation, plane: str, canon_point: Sequence[int]
) -> tuple[float, float]:
    """(column, row) on screen of a canonical point in a plane's image."""
    _, rows, cols = _plane_axes(plane)
    row = canon_point[rows]
    if rows == 2:
        row = orient.shape[2] - 1 - row
    return float(canon_point[cols]), float(row)


def slice_planes(
    array: np.ndarray, geometry: Geometry, point: Sequence[int]
) -> dict[str, np.ndarray]:
    """The axial, coronal and sagittal images through voxel ``point`` as shown on screen.

    Row 0 is the top of the screen: anterior (axial) or superior (coronal, sagittal).
    """
    _check_grid(array, geometry, "image")
    _check_point(point, geometry)
    orient = display_orientation(geometry)
    canon = orient.apply(array)
    cpoint = orient.to_canonical(point)
    return {
        plane: _canonical_plane(canon, plane, cpoint[_plane_axes(plane)[0]]) for plane in PLANES
    }


def n_slices(geometry: Geometry, plane: str) -> int:
    """Number of display slices in ``plane`` (e.g. axial slices from feet to head)."""
    orient = display_orientation(geometry)
    return orient.shape[_plane_axes(plane)[0]]


def slice_index(geometry: Geometry, point: Sequence[int], plane: str) -> int:
    """The display slice of ``plane`` that ``point`` lies in (inverse of :func:`move_point`)."""
    orient = display_orientation(geometry)
    return orient.to_canonical(point)[_plane_axes(plane)[0]]


def move_point(
    geometry: Geometry, point: Sequence[int], plane: str, index: int
) -> tuple[int, int, int]:
    """``point`` moved to display slice ``index`` of ``plane`` (axial 0 = most inferior,
    coronal 0 = most anterior, sagittal 0 = patient's rightmost), as an ``[i, j, k]`` index."""
    orient = display_orientation(geometry)
    fixed = _plane_axes(plane)[0]
    if not 0 <= index < orient.shape[fixed]:
        raise ValueError(f"{plane} slice {index} is outside 0..{orient.shape[fixed] - 1}")
    canon = list(orient.to_canonical(point))
    canon[fixed] = int(index)
    return orient.from_canonical(canon)


def _check_grid(array: np.ndarray | None, geometry: Geometry, name: str) -> None:
    if array is not None and tuple(array.shape) != geometry.shape:
        raise GeometryError(
            f"{name} has shape {tuple(array.shape)} but the review grid is {geometry.shape}; "
            "resample it onto the prediction's grid first"
        )


def _check_point(point: Sequence[int], geometry: Geometry) -> None:
    if len(point) != 3 or not all(0 <= int(p) < n for p, n in zip(point, geometry.shape)):
        raise ValueError(
            f"slice point {tuple(point)} is outside the image of shape {geometry.shape}"
        )
