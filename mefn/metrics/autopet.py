"""AutoPET per-case metrics and their aggregation, agreeing with the organisers' code.

Per case (``compute_metrics`` of lab-midas/autoPET ``val_script.py`` for 2022/2023 and of
autoPETIII / autoPETCTIV ``evaluation_metrics.py`` for 2024/2025):

- masks are used as read (``get_fdata()``), not binarised;
- Dice = 2 * sum(ref * pred) / (sum(ref) + sum(pred)) over the whole volume;
- connected components with 18-connectivity (``cc3d``; faces and edges, not corners);
  in 2022 the float array goes to cc3d as it is, in 2024 it is cast with ``astype(int)``;
- false-positive volume: voxels of predicted components touching no reference voxel,
  times the voxel volume; false-negative volume: voxels of reference components touching no
  predicted voxel, times the voxel volume; one touching voxel is enough;
- empty cases by year:

  ==========================  =================  ==================
  case                        2022               2024 / 2025
  ==========================  =================  ==================
  both empty                  (NaN, 0, 0)        (NaN, 0, NaN)
  reference empty only        (0, FPV, 0)        (NaN, FPV, NaN)
  prediction empty only       (0, 0, FNV)        (0, 0, FNV)
  ==========================  =================  ==================

The official loops test each component with ``np.isin``; we count all components at once
with ``np.bincount``, which gives the same voxel counts (masks are assumed non-negative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mefn.errors import ConfigError, GeometryError

__all__ = [
    "AUTOPET_YEARS",
    "AutopetCaseMetrics",
    "autopet_case_metrics",
    "aggregate_autopet",
    "normalise_year",
    "voxel_volume_ml_from_spacing",
    "components",
    "unmatched_component_voxels",
]

AUTOPET_YEARS = (2022, 2023, 2024, 2025)


def voxel_volume_ml_from_spacing(spacing_mm: Sequence[float]) -> float:
    """The AutoPET voxel volume of an (x, y, z) spacing: float32 product, float64 / 1000.

    The same formula as :func:`mefn.io.challenge_io.autopet_voxel_volume_ml` applies to the
    NIfTI pixdim (the header stores spacings as float32).
    """
    sx, sy, sz = (np.float32(v) for v in spacing_mm)
    return float(np.float64(sx * sy * sz) / 1000.0)


def normalise_year(year: int) -> int:
    """2022 and 2023 share the 2022 rules; 2024 and 2025 share the 2024 rules."""
    if int(year) not in AUTOPET_YEARS:
        raise ConfigError(f"AutoPET year must be one of {AUTOPET_YEARS}, found {year}")
    return 2022 if int(year) <= 2023 else 2024


def components(mask: np.ndarray, connectivity: int = 18) -> np.ndarray:
    """Connected components labelled by cc3d (distinct values form distinct components)."""
    import cc3d

    if connectivity not in (6, 18, 26):
        raise ConfigError(f"connectivity must be 6, 18 or 26, found {connectivity}")
    return np.asarray(cc3d.connected_components(mask, connectivity=connectivity))  # type: ignore[call-overload]


def unmatched_component_voxels(
    source: np.ndarray, other: np.ndarray, connectivity: int = 18
) -> int:
    """Voxels of the components of ``source`` that touch no non-zero voxel of ``other``."""
    labels = components(source, connectivity)
    n = int(labels.max())
    if n == 0:
        return 0
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=n + 1)
    touching = np.bincount(flat, weights=(other.ravel() != 0), minlength=n + 1)
    missed = touching[1:] == 0
    return int(sizes[1:][missed].sum())


@dataclass(frozen=True)
class AutopetCaseMetrics:
    """One case: the three official numbers plus the voxel counts behind them.

    ``fp_voxels`` / ``fn_voxels`` are None exactly where the year makes FPV / FNV NaN.
    """

    case: str
    year: int
    dice: float
    fpv_ml: float
    fnv_ml: float
    fp_voxels: int | None
    fn_voxels: int | None
    reference_voxels: int
    predicted_voxels: int
    voxel_volume_ml: float

    @property
    def has_lesions(self) -> bool:
        return self.reference_voxels > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def autopet_case_metrics(
    reference: np.ndarray,
    prediction: np.ndarray,
    voxel_volume_ml: float | Sequence[float],
    year: int = 2022,
    case: str = "",
    connectivity: int = 18,
) -> AutopetCaseMetrics:
    """Dice, FPV and FNV of one case under the given year's rules (see the module docstring).

    ``reference`` and ``prediction`` are the arrays as read (float64 from ``get_fdata``);
    ``voxel_volume_ml`` is the reference's (the official scripts use the reference header),
    or its (x, y, z) spacing in mm, turned into a volume by
    :func:`voxel_volume_ml_from_spacing`.
    """
    rules = normalise_year(year)
    if reference.shape != prediction.shape:
        raise GeometryError(
            f"case {case}: prediction shape {prediction.shape} differs from reference shape "
            f"{reference.shape}; resample the prediction onto the reference grid"
        )
    ref_sum = float(reference.sum())
    pred_sum = float(prediction.sum())
    ref_voxels = int(np.count_nonzero(reference))
    pred_voxels = int(np.count_nonzero(prediction))
    overlap = float((reference * prediction).sum())
    total = ref_sum + pred_sum

    if rules == 2022:
        ref_cc, pred_cc = reference, prediction
        dice = 2 * overlap / total if total != 0 else math.nan
        fn = unmatched_component_voxels(ref_cc, prediction, connectivity)
        fp = unmatched_component_voxels(pred_cc, reference, connectivity)
        fn_voxels: int | None = fn
        fp_voxels: int | None = fp
    else:
        if ref_sum == 0:
            dice = math.nan
            fn_voxels = None
        else:
            dice = 2 * overlap / total
            fn_voxels = unmatched_component_voxels(reference.astype(int), prediction, connectivity)
        if pred_sum == 0:
            fp_voxels = 0
        else:
            fp_voxels = unmatched_component_voxels(prediction.astype(int), reference, connectivity)

    vox = (
        voxel_volume_ml_from_spacing(voxel_volume_ml)
        if isinstance(voxel_volume_ml, Sequence)
        else float(voxel_volume_ml)
    )
    return AutopetCaseMetrics(
        case=case,
        year=int(year),
        dice=float(dice),
        fpv_ml=math.nan if fp_voxels is None else float(fp_voxels) * vox,
        fnv_ml=math.nan if fn_voxels is None else float(fn_voxels) * vox,
        fp_voxels=fp_voxels,
        fn_voxels=fn_voxels,
        reference_voxels=ref_voxels,
        predicted_voxels=pred_voxels,
        voxel_volume_ml=vox,
    )


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


AGGREGATION_RULES = (
    "mean over cases; Dice and false-negative volume over cases with lesions (non-empty "
    "reference) only; false-positive volume over all cases. Per-case Dice/FPV/FNV follow the "
    "{year} empty-case rules: {empty}."
)
_EMPTY = {
    2022: "both empty (NaN, 0, 0), reference empty (0, FPV, 0), prediction empty (0, 0, FNV)",
    2024: "both empty (NaN, 0, NaN), reference empty (NaN, FPV, NaN), prediction empty (0, 0, FNV)",
}


def aggregate_autopet(records: Sequence[AutopetCaseMetrics], year: int) -> dict[str, Any]:
    """Challenge aggregation: means, with Dice and FNV over cases with lesions only.

    Also reports the mean FPV over negative cases (the 2023 page's view) and the voxel
    totals, so the means can be re-derived.
    """
    rules = normalise_year(year)
    positive = [r for r in records if r.has_lesions]
    negative = [r for r in records if not r.has_lesions]
    return {
        "challenge": "autopet",
        "year": int(year),
        "rules": AGGREGATION_RULES.format(
            year=rules if rules == 2022 else "2024/2025", empty=_EMPTY[rules]
        ),
        "connectivity": 18,
        "n_cases": len(records),
        "n_cases_with_lesions": len(positive),
        "n_cases_without_lesions": len(negative),
        "dice_mean": _mean([r.dice for r in positive]),
        "fnv_ml_mean": _mean([r.fnv_ml for r in positive]),
        "fpv_ml_mean": _mean([r.fpv_ml for r in records]),
        "fpv_ml_mean_negative_cases": _mean([r.fpv_ml for r in negative]),
        "fp_voxels_total": int(sum(r.fp_voxels or 0 for r in records)),
        "fn_voxels_total": int(sum(r.fn_voxels or 0 for r in records)),
    }
