"""HECKTOR segmentation metrics: 2022 aggregated Dice (DSCagg) and 2021 Dice + HD95.

HECKTOR 2022 (voreille/hecktor ``notebooks/evaluate_segmentation2022.ipynb``), per case and
label L (GTVp = 1, GTVn = 2): Dice_L from SimpleITK's ``LabelOverlapMeasuresImageFilter``
(one thread), ``vol_sum_L = (reference count + predicted count) * voxel volume`` in mm3 and
``TP_L = Dice_L * vol_sum_L / 2`` (the official form; a direct count can differ in the last
bit). A label absent from both images gives Dice 0 and contributes nothing.
``DSCagg_L = 2 * sum(TP_L) / sum(vol_sum_L)``; the score is the mean of DSCagg_1 and DSCagg_2.
Reading, label and spacing checks and resampling live in :mod:`mefn.io.challenge_io`.

HECKTOR 2021 (voreille/hecktor ``src/aicrowd_evaluator``): per patient Dice and HD95 (the
larger of the two directed, surface-area-weighted 95th percentiles of surface distances,
google-deepmind ``surface-distance``, which the organisers call and so do we:
``compute_surface_distances`` + ``compute_robust_hausdorff``); an empty prediction scores
Dice 0 and HD95 0, a missing one Dice 0 and HD95 infinite; aggregation: mean Dice, median
HD95. Surface distances with an empty mask are formed here (the package's own empty branch
uses ``np.Inf``, which NumPy 2 removed).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import numpy as np

from mefn.errors import ConfigError

__all__ = [
    "HecktorCaseMetrics",
    "hecktor2022_case_metrics",
    "aggregate_hecktor2022",
    "surface_distances",
    "robust_hausdorff",
    "hecktor2021_case_metrics",
    "aggregate_hecktor2021",
]


@dataclass(frozen=True)
class HecktorCaseMetrics:
    """One HECKTOR 2022 case: Dice, TP and vol_sum (mm3) for GTVp and GTVn."""

    case: str
    dice_gtvp: float
    dice_gtvn: float
    tp_gtvp: float
    tp_gtvn: float
    vol_sum_gtvp: float
    vol_sum_gtvn: float
    reference_voxels: tuple[int, int]
    predicted_voxels: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hecktor2022_case_metrics(
    dice: tuple[float, float],
    reference_voxels: tuple[int, int],
    predicted_voxels: tuple[int, int],
    voxel_volume_mm3: float,
    case: str = "",
) -> HecktorCaseMetrics:
    """TP and vol_sum per label from the filter's Dice and the label counts (official form)."""
    vol_sum = [
        reference_voxels[i] * voxel_volume_mm3 + predicted_voxels[i] * voxel_volume_mm3
        for i in range(2)
    ]
    tp = [dice[i] * vol_sum[i] / 2 for i in range(2)]
    return HecktorCaseMetrics(
        case=case,
        dice_gtvp=float(dice[0]),
        dice_gtvn=float(dice[1]),
        tp_gtvp=float(tp[0]),
        tp_gtvn=float(tp[1]),
        vol_sum_gtvp=float(vol_sum[0]),
        vol_sum_gtvn=float(vol_sum[1]),
        reference_voxels=reference_voxels,
        predicted_voxels=predicted_voxels,
    )


def aggregate_hecktor2022(records: Sequence[HecktorCaseMetrics]) -> dict[str, Any]:
    """DSCagg per label and their mean, as ``compute_agg_dice`` of the official notebook."""
    if not records:
        raise ConfigError("no HECKTOR cases to aggregate; give at least one case")

    def agg(tps: list[float], vols: list[float]) -> float:
        denom = np.sum(vols)
        return float(2 * np.sum(tps) / denom) if denom != 0 else math.nan

    gtvp = agg([r.tp_gtvp for r in records], [r.vol_sum_gtvp for r in records])
    gtvn = agg([r.tp_gtvn for r in records], [r.vol_sum_gtvn for r in records])
    return {
        "challenge": "hecktor",
        "year": 2022,
        "rules": (
            "DSCagg_L = 2 * sum_cases(TP_L) / sum_cases(vol_sum_L) with TP_L = Dice_L * vol_sum_L / 2 "
            "(Dice from SimpleITK LabelOverlapMeasuresImageFilter, one thread; vol_sum in mm3); "
            "score = mean(DSCagg_GTVp, DSCagg_GTVn); predictions cast to uint8, labels in {0,1,2}, "
            "spacing equal to the CT's within 1e-6 mm, resampled nearest-neighbour onto the CT grid"
        ),
        "n_cases": len(records),
        "dscagg_gtvp": gtvp,
        "dscagg_gtvn": gtvn,
        "dscagg_mean": float(np.mean((gtvp, gtvn))),
    }


# --- HECKTOR 2021: surface distances ----------------------------------------------------------


def _surface_distance_module() -> ModuleType:
    """google-deepmind ``surface-distance`` (package ``surface-distance-based-measures``)."""
    try:
        import surface_distance
    except ImportError:
        raise ConfigError(
            "HD95 needs google-deepmind surface-distance, the organisers' implementation; "
            "install it with `pip install surface-distance-based-measures`"
        ) from None
    return surface_distance


def _package_distances(a: np.ndarray, b: np.ndarray, spacing_mm: Sequence[float]) -> dict[str, Any]:
    """``compute_surface_distances(a, b)``; both masks must be non-empty (the package's empty
    branch uses ``np.Inf``, gone from NumPy 2)."""
    package = _surface_distance_module()
    with warnings.catch_warnings():  # it calls scipy.ndimage.filters / .morphology
        warnings.simplefilter("ignore", DeprecationWarning)
        return dict(package.compute_surface_distances(a, b, [float(v) for v in spacing_mm]))


def _boolean_pair(
    mask_a: np.ndarray, mask_b: np.ndarray, spacing_mm: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(mask_a, dtype=bool)
    b = np.asarray(mask_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 3 or len(spacing_mm) != 3:
        raise ConfigError(
            f"surface distances need two 3D masks of one shape and 3 spacings, found "
            f"{a.shape}, {b.shape} and {tuple(spacing_mm)}"
        )
    return a, b


def surface_distances(
    mask_a: np.ndarray, mask_b: np.ndarray, spacing_mm: Sequence[float]
) -> dict[str, np.ndarray]:
    """Directed surface distances A->B and B->A (mm) with the surface-element areas (mm2).

    ``surface_distance.compute_surface_distances`` (the DeepMind construction: 2x2x2
    neighbourhood codes, marching-cubes surface-element areas, a Euclidean distance
    transform with ``sampling=spacing_mm``), renamed: ``a_to_b``, ``b_to_a``, ``areas_a``,
    ``areas_b``, each list sorted by (distance, area). An empty mask gives an empty list, and
    infinite distances from the other side.
    """
    a, b = _boolean_pair(mask_a, mask_b, spacing_mm)
    empty = np.array([], dtype=np.float64)
    if a.any() and b.any():
        raw = _package_distances(a, b, spacing_mm)
        keys = ("distances_gt_to_pred", "distances_pred_to_gt", "surfel_areas_gt")
        a_to_b, b_to_a, areas_a = (np.asarray(raw[k], dtype=np.float64) for k in keys)
        areas_b = np.asarray(raw["surfel_areas_pred"], dtype=np.float64)
        return {"a_to_b": a_to_b, "b_to_a": b_to_a, "areas_a": areas_a, "areas_b": areas_b}
    out = {"a_to_b": empty, "b_to_a": empty, "areas_a": empty, "areas_b": empty}
    for side, other, mask in (("a", "b", a), ("b", "a", b)):
        if mask.any():  # its own surface elements (distance 0 to itself), sorted by area
            areas = _package_distances(mask, mask, spacing_mm)["surfel_areas_gt"]
            out[f"areas_{side}"] = np.asarray(areas, dtype=np.float64)
            out[f"{side}_to_{other}"] = np.full(len(areas), math.inf)
    return out


def robust_hausdorff(
    mask_a: np.ndarray, mask_b: np.ndarray, spacing_mm: Sequence[float], percent: float = 95.0
) -> float:
    """Max of the two directed area-weighted ``percent`` percentiles (HD95 at 95):
    ``surface_distance.compute_robust_hausdorff``; infinite when either mask is empty."""
    a, b = _boolean_pair(mask_a, mask_b, spacing_mm)
    if not (a.any() and b.any()):
        return math.inf
    distances = _package_distances(a, b, spacing_mm)
    return float(_surface_distance_module().compute_robust_hausdorff(distances, percent))


def hecktor2021_case_metrics(
    reference: np.ndarray | None,
    prediction: np.ndarray | None,
    spacing_mm: Sequence[float],
    case: str = "",
) -> dict[str, Any]:
    """Dice and HD95 of one 2021 case (arrays as the organisers passed them, see challenge_io).

    ``prediction=None`` means the prediction is missing (Dice 0, HD95 infinite); an empty
    prediction scores Dice 0 and HD95 0.
    """
    if prediction is None or reference is None:
        return {"case": case, "dice": 0.0, "hd95_mm": math.inf}
    if np.sum(prediction) == 0:
        return {"case": case, "dice": 0.0, "hd95_mm": 0.0}
    dice = (
        2 * np.sum(np.logical_and(reference, prediction)) / (np.sum(reference) + np.sum(prediction))
    )
    hd = robust_hausdorff(reference != 0, prediction != 0, spacing_mm, 95.0)
    return {"case": case, "dice": float(dice), "hd95_mm": float(hd)}


def aggregate_hecktor2021(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean Dice and median HD95 over patients (2021 rules)."""
    return {
        "challenge": "hecktor",
        "year": 2021,
        "n_cases": len(records),
        "dice_mean": float(np.mean([r["dice"] for r in records])) if records else math.nan,
        "hd95_mm_median": float(np.median([r["hd95_mm"] for r in records]))
        if records
        else math.nan,
    }
