"""The one image type of mefn: an array plus the geometry that places it in the patient.

Conventions (those of ITK/DICOM, so nothing is lost through SimpleITK):

- ``Volume.array`` is indexed ``[i, j, k]`` = (x, y, z) index order, the order of
  nibabel and MONAI (SimpleITK's ``GetArrayFromImage`` gives the transpose ``[k, j, i]``).
- Physical space is LPS (DICOM patient coordinates) in millimetres.
- ``Geometry.direction`` is the 3x3 matrix whose *columns* are the unit vectors of the
  i, j, k axes in LPS (ITK's direction matrix, stored row-major).
- The physical point of voxel centre ``(i, j, k)`` is
  ``origin + direction @ (spacing * (i, j, k))``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mefn.errors import GeometryError

__all__ = ["Geometry", "Volume"]

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Geometry:
    """The grid of a 3D image: shape (i, j, k), spacing, origin and direction, in LPS mm."""

    shape: tuple[int, int, int]
    spacing_mm: Vec3 = (1.0, 1.0, 1.0)
    origin_mm: Vec3 = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "origin_mm", tuple(float(s) for s in self.origin_mm))
        object.__setattr__(
            self, "direction", tuple(float(d) for d in np.asarray(self.direction).ravel())
        )
        if len(self.shape) != 3 or len(self.spacing_mm) != 3 or len(self.origin_mm) != 3:
            raise GeometryError(
                f"expected a 3D grid, found shape {self.shape} with spacing {self.spacing_mm}"
            )
        if len(self.direction) != 9:
            raise GeometryError(f"expected 9 direction cosines, found {len(self.direction)}")
        if min(self.spacing_mm) <= 0 or not np.all(np.isfinite(self.spacing_mm)):
            raise GeometryError(f"voxel spacing must be positive, found {self.spacing_mm} mm")

    # --- matrices -------------------------------------------------------------------------
    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix from voxel index (i, j, k, 1) to LPS mm."""
        aff = np.eye(4)
        aff[:3, :3] = self.direction_matrix * np.asarray(self.spacing_mm)[None, :]
        aff[:3, 3] = self.origin_mm
        return aff

    @property
    def affine_ras(self) -> np.ndarray:
        """4x4 matrix from voxel index to RAS mm (the NIfTI / nibabel / MONAI convention)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps

    @property
    def voxel_volume_ml(self) -> float:
        sx, sy, sz = self.spacing_mm
        return sx * sy * sz / 1000.0

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape))

    # --- points ---------------------------------------------------------------------------
    def index_to_world(self, index: np.ndarray | Any) -> np.ndarray:
        """LPS mm of voxel indices (..., 3)."""
        idx = np.asarray(index, dtype=np.float64)
        return idx @ (self.direction_matrix * np.asarray(self.spacing_mm)[None, :]).T + np.asarray(
            self.origin_mm
        )

    def world_to_index(self, points: np.ndarray | Any) -> np.ndarray:
        """Continuous voxel indices of LPS points (..., 3)."""
        pts = np.asarray(points, dtype=np.float64) - np.asarray(self.origin_mm)
        inv = np.linalg.inv(self.direction_matrix * np.asarray(self.spacing_mm)[None, :])
        return pts @ inv.T

    def corners_world(self) -> np.ndarray:
        """The 8 corners of the voxel *boundary* box in LPS mm, shape (8, 3)."""
        lo = np.full(3, -0.5)
        hi = np.asarray(self.shape, dtype=np.float64) - 0.5
        corners = np.array(
            [[c[0], c[1], c[2]] for c in np.array(np.meshgrid(*zip(lo, hi))).reshape(3, -1).T]
        )
        return self.index_to_world(corners)

    def extent_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned bounding box (min, max) of the image in LPS mm."""
        c = self.corners_world()
        return c.min(axis=0), c.max(axis=0)

    def physical_size_mm(self) -> Vec3:
        sx, sy, sz = (n * s for n, s in zip(self.shape, self.spacing_mm))
        return (sx, sy, sz)

    def same_grid(self, other: Geometry, atol_mm: float = 1e-3, atol_dir: float = 1e-5) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.spacing_mm, other.spacing_mm, atol=atol_mm * 1e-2, rtol=1e-5)
            and np.allclose(self.origin_mm, other.origin_mm, atol=atol_mm)
            and np.allclose(self.direction, other.direction, atol=atol_dir)
        )

    def with_shape(self, shape: tuple[int, int, int]) -> Geometry:
        return dataclasses.replace(self, shape=tuple(int(s) for s in shape))  # type: ignore[arg-type]

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "spacing_mm": list(self.spacing_mm),
            "origin_mm": list(self.origin_mm),
            "direction": list(self.direction),
        }

    @classmethod
    def from_affine_lps(cls, affine: np.ndarray, shape: tuple[int, int, int]) -> Geometry:
        m = np.asarray(affine, dtype=np.float64)[:3, :3]
        spacing = np.linalg.norm(m, axis=0)
        return cls(
            shape=shape,
            spacing_mm=tuple(spacing),  # type: ignore[arg-type]
            origin_mm=tuple(np.asarray(affine)[:3, 3]),  # type: ignore[arg-type]
            direction=tuple((m / spacing[None, :]).ravel()),
        )


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image: ``array[i, j, k]`` on ``geometry``, with its modality and units.

    ``modality`` is ``"CT"``, ``"PT"`` (PET) or ``"SEG"`` (a label map) when known;
    ``units`` is ``"HU"``, ``"SUVbw"``, ``"BQML"``, ``"label"`` ... when known.
    """

    array: np.ndarray
    geometry: Geometry
    modality: str | None = None
    units: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise GeometryError(
                f"expected a 3D image array, found {self.array.ndim}D with shape {self.array.shape}"
            )
        if tuple(self.array.shape) != self.geometry.shape:
            raise GeometryError(
                f"array shape {tuple(self.array.shape)} does not match grid shape "
                f"{self.geometry.shape}"
            )

    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        spacing_mm: Vec3 = (1.0, 1.0, 1.0),
        origin_mm: Vec3 = (0.0, 0.0, 0.0),
        direction: tuple[float, ...] | np.ndarray = (1, 0, 0, 0, 1, 0, 0, 0, 1),
        modality: str | None = None,
        units: str | None = None,
    ) -> Volume:
        geo = Geometry(
            shape=tuple(array.shape),  # type: ignore[arg-type]
            spacing_mm=spacing_mm,
            origin_mm=origin_mm,
            direction=tuple(np.asarray(direction, dtype=np.float64).ravel()),
        )
        return cls(array=array, geometry=geo, modality=modality, units=units)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.geometry.shape

    @property
    def spacing_mm(self) -> Vec3:
        return self.geometry.spacing_mm

    def with_array(self, array: np.ndarray, **changes: Any) -> Volume:
        """The same geometry (and metadata unless changed) holding another array."""
        return dataclasses.replace(self, array=array, **changes)
