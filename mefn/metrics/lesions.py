"""Lesion-wise detection: components matched by overlap (one shared voxel), 18-connectivity.

A reference lesion is *detected* when at least one of its voxels is predicted; a predicted
lesion is a *true positive* when at least one of its voxels is in the reference (the
AutoPET FPV/FNV rule applied to counts). Hence

- sensitivity = detected reference lesions / reference lesions,
- precision = predicted lesions touching the reference / predicted lesions,
- F1 = 2 * precision * sensitivity / (precision + sensitivity),
- false-positive lesions = predicted lesions touching no reference voxel.

Undefined ratios (no reference lesion, no predicted lesion) are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mefn.errors import GeometryError
from mefn.metrics.autopet import components

__all__ = ["LesionDetection", "lesion_detection", "aggregate_detection", "predicted_lesion_errors"]


@dataclass(frozen=True)
class LesionDetection:
    """Lesion counts of one case (or of several, summed)."""

    n_reference: int
    n_predicted: int
    detected_reference: int
    true_positive_predicted: int

    @property
    def false_positive_lesions(self) -> int:
        return self.n_predicted - self.true_positive_predicted

    @property
    def missed_lesions(self) -> int:
        return self.n_reference - self.detected_reference

    @property
    def sensitivity(self) -> float:
        return self.detected_reference / self.n_reference if self.n_reference else math.nan

    @property
    def precision(self) -> float:
        return self.true_positive_predicted / self.n_predicted if self.n_predicted else math.nan

    @property
    def f1(self) -> float:
        p, s = self.precision, self.sensitivity
        if math.isnan(p) or math.isnan(s):
            return math.nan
        return 2 * p * s / (p + s) if (p + s) > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            false_positive_lesions=self.false_positive_lesions,
            missed_lesions=self.missed_lesions,
            sensitivity=self.sensitivity,
            precision=self.precision,
            f1=self.f1,
        )
        return d


def _touching(labels: np.ndarray, other: np.ndarray) -> tuple[int, int]:
    n = int(labels.max())
    if n == 0:
        return 0, 0
    hits = np.bincount(labels.ravel(), weights=(other.ravel() != 0), minlength=n + 1)[1:]
    return n, int(np.count_nonzero(hits))


def lesion_detection(
    reference: np.ndarray, prediction: np.ndarray, connectivity: int = 18
) -> LesionDetection:
    """Count reference and predicted lesions and which of them overlap the other mask."""
    if reference.shape != prediction.shape:
        raise GeometryError(
            f"prediction shape {prediction.shape} differs from reference shape {reference.shape}"
        )
    ref = np.asarray(reference) != 0
    pred = np.asarray(prediction) != 0
    n_ref, det = _touching(components(ref, connectivity), pred)
    n_pred, tp = _touching(components(pred, connectivity), ref)
    return LesionDetection(n_ref, n_pred, det, tp)


def predicted_lesion_errors(
    reference: np.ndarray, prediction: np.ndarray, uncertainty: np.ndarray, connectivity: int = 18
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per predicted lesion (component of ``prediction``): its mean ``uncertainty``, whether
    it is a false positive (touches no reference voxel, as in the AutoPET false-positive
    volume), and its voxel count. Three arrays in component order; what the review threshold
    is calibrated on. A minimum lesion size (``mefn.postprocess.remove_small_components``,
    18-connected too) keeps exactly the entries whose count reaches it."""
    if not reference.shape == prediction.shape == np.shape(uncertainty):
        raise GeometryError(
            f"reference {reference.shape}, prediction {prediction.shape} and uncertainty "
            f"{np.shape(uncertainty)} must share one grid"
        )
    labels = components(np.asarray(prediction) != 0, connectivity).ravel()
    n = int(labels.max(initial=0))
    size = np.bincount(labels, minlength=n + 1)[1:]
    u_sum = np.bincount(
        labels, weights=np.asarray(uncertainty, np.float64).ravel(), minlength=n + 1
    )
    hits = np.bincount(labels, weights=(np.asarray(reference) != 0).ravel(), minlength=n + 1)
    return u_sum[1:] / np.maximum(size, 1), hits[1:] == 0, size


def aggregate_detection(records: Sequence[LesionDetection]) -> dict[str, Any]:
    """Pooled counts and ratios over cases, plus the mean false-positive lesions per case."""
    total = LesionDetection(
        sum(r.n_reference for r in records),
        sum(r.n_predicted for r in records),
        sum(r.detected_reference for r in records),
        sum(r.true_positive_predicted for r in records),
    )
    out = total.to_dict()
    out["false_positive_lesions_per_case"] = (
        total.false_positive_lesions / len(records) if records else math.nan
    )
    out["rule"] = "18-connected components; one overlapping voxel matches; counts pooled over cases"
    return out
