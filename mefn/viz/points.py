"""Where to look: the CT-versus-PET disagreement map and the points a review starts from.

``u`` is the fused evidential uncertainty mass in [0, 1] (1 = no evidence either way).
The CT-versus-PET map is the signed difference ``u_ct - u_pet`` of the two modality
opinions' uncertainty (:func:`modality_disagreement`): red where the CT branch is less
sure than the PET branch, blue where PET is less sure; near zero where they agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mefn.errors import GeometryError
from mefn.io.volume import Geometry

if TYPE_CHECKING:  # pragma: no cover
    from mefn.postprocess import LesionTable

__all__ = ["auto_point", "lesion_point", "modality_disagreement"]


def modality_disagreement(u_ct: np.ndarray, u_pet: np.ndarray, signed: bool = True) -> np.ndarray:
    """CT-versus-PET disagreement: ``u_ct - u_pet`` (or its absolute value), float32.

    Positive where the CT opinion is less certain than the PET opinion, negative where the
    PET opinion is less certain; both maps must be on one grid.
    """
    if u_ct.shape != u_pet.shape:
        raise GeometryError(
            f"CT uncertainty {u_ct.shape} and PET uncertainty {u_pet.shape} must share a grid"
        )
    diff = u_ct.astype(np.float32) - u_pet.astype(np.float32)
    return np.abs(diff) if not signed else diff


def lesion_point(table: LesionTable, lesion_id: int, geometry: Geometry) -> tuple[int, int, int]:
    """Voxel index (clipped into the image) of a lesion's centroid."""
    for lesion in table.lesions:
        if lesion.lesion_id == lesion_id:
            index = np.rint(geometry.world_to_index(np.asarray(lesion.centroid_mm)))
            clipped = np.clip(index, 0, np.asarray(geometry.shape) - 1).astype(int)
            return (int(clipped[0]), int(clipped[1]), int(clipped[2]))
    known = [lesion.lesion_id for lesion in table.lesions]
    raise ValueError(f"no lesion {lesion_id} in the table; lesions are {known}")


def auto_point(
    geometry: Geometry,
    lesions: LesionTable | None = None,
    suv: np.ndarray | None = None,
) -> tuple[int, int, int]:
    """Where a review starts: the least confident (or, without confidences, most uncertain)
    lesion flagged for review, else the largest lesion, else the hottest PET voxel, else the
    centre of the image."""
    if lesions is not None and lesions.lesions:
        flagged = [lesion for lesion in lesions.lesions if lesion.review]
        if flagged:
            pick = max(
                flagged,
                key=lambda lesion: (
                    -lesion.confidence if lesion.confidence is not None else lesion.uncertainty_mean
                ),
            )
        else:
            pick = max(lesions.lesions, key=lambda lesion: lesion.voxels)
        return lesion_point(lesions, pick.lesion_id, geometry)
    if suv is not None and suv.size and np.isfinite(suv).any():
        flat = int(np.nanargmax(suv))
        index = np.unravel_index(flat, suv.shape)
        return (int(index[0]), int(index[1]), int(index[2]))
    return (geometry.shape[0] // 2, geometry.shape[1] // 2, geometry.shape[2] // 2)
