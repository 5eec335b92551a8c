"""Model space: the two-channel array the network sees, and the way back to the input grid.

A :class:`~mefn.io.Case` holds CT and PET on their own grids. :func:`to_model_space`
resamples both onto one axis-aligned (identity-direction, LPS) grid at the model spacing
that covers the case's output grid, then scales intensities:

- channel 0, CT: ``clip(HU, *ct_window_hu) / ct_scale_hu``;
- channel 1, PET: ``log1p(clip(SUV, 0, pet_clip_suv))`` (or ``SUV / pet_scale_suv`` when
  ``pet_transform = "linear"``).

:func:`to_output_grid` undoes the resampling for network outputs (linear interpolation of
probabilities and uncertainties), so masks are taken on the user's own grid and orientation.

MONAI's ScaleIntensityRange is not used for the CT window: its ``(x - lo) / (hi - lo) * (b_max -
b_min) + b_min`` differs from ``clip(x) / scale`` in the last bits of float32 (the bundled
weights saw the latter), and MONAI has no ``log1p`` intensity transform for the PET channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from mefn.io.case import Case
from mefn.io.geometry import resample_to
from mefn.io.volume import Geometry, Volume

__all__ = [
    "ModelInput",
    "PreprocessConfig",
    "model_grid",
    "normalise",
    "normalise_ct",
    "normalise_pet",
    "resample_case",
    "to_model_space",
    "to_output_grid",
]

AIR_HU = -1000.0


@dataclass(frozen=True)
class PreprocessConfig:
    """How a case is put into model space (written into every model card)."""

    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0)
    ct_window_hu: tuple[float, float] = (-1000.0, 1500.0)
    ct_scale_hu: float = 500.0
    pet_transform: Literal["log1p", "linear"] = "log1p"
    pet_clip_suv: float = 100.0
    pet_scale_suv: float = 5.0

    def __post_init__(self) -> None:
        if min(self.spacing_mm) <= 0:
            raise ValueError(f"spacing_mm must be positive, found {self.spacing_mm}")
        if self.ct_window_hu[0] >= self.ct_window_hu[1]:
            raise ValueError(f"ct_window_hu must be (low, high), found {self.ct_window_hu}")


@dataclass(frozen=True, eq=False)
class ModelInput:
    """A case in model space: ``image`` (2, X, Y, Z) float32, optional ``label`` (X, Y, Z)."""

    case_id: str
    image: np.ndarray
    grid: Geometry
    label: np.ndarray | None = None


def normalise_ct(hu: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    lo, hi = cfg.ct_window_hu
    return (np.clip(hu, lo, hi) / cfg.ct_scale_hu).astype(np.float32)


def normalise_pet(suv: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    clipped = np.clip(suv, 0.0, cfg.pet_clip_suv)
    if cfg.pet_transform == "log1p":
        return np.log1p(clipped).astype(np.float32)
    return (clipped / cfg.pet_scale_suv).astype(np.float32)


def model_grid(target: Geometry, spacing_mm: tuple[float, float, float]) -> Geometry:
    """Identity-direction grid at ``spacing_mm`` whose voxels cover ``target``'s whole extent."""
    lo, hi = target.extent_mm()
    size = hi - lo
    shape = tuple(max(1, int(math.ceil(s / sp - 1e-6))) for s, sp in zip(size, spacing_mm))
    # centre the grid on the target's box
    covered = np.asarray(shape) * np.asarray(spacing_mm)
    start = lo - (covered - size) / 2.0 + np.asarray(spacing_mm) / 2.0
    return Geometry(
        shape=shape,  # type: ignore[arg-type]
        spacing_mm=spacing_mm,
        origin_mm=tuple(start),  # type: ignore[arg-type]
    )


def centred_grid(
    centre_mm: np.ndarray,
    size_mm: np.ndarray,
    spacing_mm: tuple[float, float, float],
    min_vox: tuple[int, int, int] = (1, 1, 1),
) -> Geometry:
    """Identity-direction grid at ``spacing_mm`` centred on ``centre_mm`` (LPS) whose voxels
    cover ``size_mm`` (at least ``min_vox`` voxels along each axis)."""
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    shape = np.maximum(np.ceil(np.asarray(size_mm) / spacing - 1e-6).astype(int), min_vox)
    origin = np.asarray(centre_mm, dtype=np.float64) - (shape - 1) * spacing / 2.0
    return Geometry(
        shape=tuple(int(v) for v in shape),  # type: ignore[arg-type]
        spacing_mm=spacing_mm,
        origin_mm=tuple(float(v) for v in origin),  # type: ignore[arg-type]
    )


def resample_case(
    case: Case, grid: Geometry, with_label: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """CT (HU), PET (SUV) and label resampled onto ``grid``, in physical units.

    Voxels outside the CT are air (-1000 HU); outside the PET, SUV 0; the label is
    resampled nearest-neighbour.
    """
    ct = resample_to(case.ct, grid, interpolation="linear", default_value=AIR_HU).array
    pet = resample_to(case.pet, grid, interpolation="linear", default_value=0.0).array
    label = None
    if with_label and case.label is not None:
        lab = resample_to(case.label, grid, interpolation="nearest", default_value=0)
        label = lab.array.astype(np.uint8)
    return ct.astype(np.float32), pet.astype(np.float32), label


def normalise(ct_hu: np.ndarray, suv: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """The network's two-channel input ``(2, X, Y, Z)`` from HU and SUV arrays."""
    return np.stack([normalise_ct(ct_hu, cfg), normalise_pet(suv, cfg)])


def to_model_space(
    case: Case,
    cfg: PreprocessConfig,
    grid: Geometry | None = None,
    with_label: bool = True,
) -> ModelInput:
    """Resample and scale a case into the network's two-channel input.

    The grid defaults to :func:`model_grid` over ``case.target_geometry``.
    """
    grid = grid if grid is not None else model_grid(case.target_geometry, cfg.spacing_mm)
    ct, pet, label = resample_case(case, grid, with_label=with_label)
    image = normalise(ct, pet, cfg)
    return ModelInput(case_id=case.case_id, image=image, grid=grid, label=label)


def to_output_grid(
    maps: np.ndarray,
    grid: Geometry,
    target: Geometry,
    default_values: tuple[float, ...] | None = None,
) -> np.ndarray:
    """Linearly resample model-space maps ``(C, X, Y, Z)`` onto ``target``: ``(C, *target.shape)``.

    ``default_values`` (one per channel, default 0) fill voxels of the target outside the
    model grid.
    """
    if maps.ndim != 4:
        raise ValueError(f"expected maps (C, X, Y, Z), found shape {maps.shape}")
    defaults = default_values or (0.0,) * maps.shape[0]
    out = np.empty((maps.shape[0], *target.shape), dtype=np.float32)
    for c in range(maps.shape[0]):
        vol = Volume(array=np.ascontiguousarray(maps[c], dtype=np.float32), geometry=grid)
        out[c] = resample_to(
            vol, target, interpolation="linear", default_value=float(defaults[c])
        ).array
    return out
