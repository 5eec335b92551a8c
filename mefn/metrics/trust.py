"""How far a prediction's stated trust can be trusted: lesion-level and voxel-level calibration.

Definitions:

- **Lesion units** are the predicted lesions (18-connected components of each label of the
  mask); a lesion is **true** when it touches a reference lesion, else a false positive. Each has
  a **confidence**, the stated probability that it is true (``<case>_report.json``).
- **Lesion AUROC**: the probability that a true lesion has a higher confidence than a false
  one (Mann-Whitney, ties counting 1/2); NaN unless both kinds are present.
- **Lesion ECE**: :data:`N_LESION_BINS` equal-width confidence bins, right-closed as in
  :mod:`mefn.metrics.calibration`; ``sum_b n_b / N * |true share_b - mean confidence_b|``.
- **Risk-coverage**: lesions are referred to a reader least confident first (ties: in their
  given order); after referring k of n, coverage is ``1 - k / n`` and the risk is the share of
  false positives among the lesions left automatic (0 when none is left). ``area`` is the mean
  risk over the n + 1 points (AURC by the step rule).
- **Voxel ECE near lesions**: the delivered voxel map read as the probability that the voxel's
  label is wrong, over voxels within ``mefn.confidence.NEAR_MM`` of a reference or predicted
  lesion; :data:`N_VOXEL_BINS` equal-width bins of that probability,
  ``sum_b n_b / N * |error rate_b - mean stated probability_b|``. Counts pool over cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mefn.metrics.calibration import _bin_index

__all__ = [
    "N_LESION_BINS",
    "N_VOXEL_BINS",
    "BinnedReliability",
    "binned_reliability",
    "lesion_auroc",
    "lesion_risk_coverage",
    "lesion_trust",
    "voxel_reliability_near_lesions",
]

N_LESION_BINS = 10
N_VOXEL_BINS = 15


@dataclass(frozen=True)
class BinnedReliability:
    """Per bin: the count, the sum of stated probabilities and the sum of outcomes (0/1)."""

    count: np.ndarray
    prob_sum: np.ndarray
    outcome_sum: np.ndarray

    def __add__(self, other: BinnedReliability) -> BinnedReliability:
        return BinnedReliability(
            self.count + other.count,
            self.prob_sum + other.prob_sum,
            self.outcome_sum + other.outcome_sum,
        )

    @property
    def n(self) -> int:
        return int(self.count.sum())

    @property
    def ece(self) -> float:
        if self.n == 0:
            return math.nan
        has = self.count > 0
        gap = np.abs(self.outcome_sum[has] - self.prob_sum[has]) / self.count[has]
        return float(np.sum(self.count[has] / self.n * gap))

    def to_json(self) -> dict[str, Any]:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_p = np.where(self.count > 0, self.prob_sum / np.maximum(self.count, 1), np.nan)
            rate = np.where(self.count > 0, self.outcome_sum / np.maximum(self.count, 1), np.nan)
        return {
            "n": self.n,
            "ece": self.ece,
            "bins": len(self.count),
            "count": [int(c) for c in self.count],
            "mean_probability": [None if math.isnan(v) else float(v) for v in mean_p],
            "observed": [None if math.isnan(v) else float(v) for v in rate],
        }


def binned_reliability(
    prob: np.ndarray, outcome: np.ndarray, n_bins: int, weights: np.ndarray | None = None
) -> BinnedReliability:
    """The reliability counts of stated probabilities ``prob`` against 0/1 ``outcome``."""
    p = np.asarray(prob, dtype=np.float64).ravel()
    y = np.asarray(outcome, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"{p.size} probabilities but {y.size} outcomes")
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    idx = _bin_index(p, n_bins)  # the bins of mefn.metrics.calibration's ECE
    return BinnedReliability(
        np.bincount(idx, weights=w, minlength=n_bins),
        np.bincount(idx, weights=w * p, minlength=n_bins),
        np.bincount(idx, weights=w * y, minlength=n_bins),
    )


def lesion_auroc(confidence: np.ndarray, true: np.ndarray) -> float:
    """P(confidence of a true lesion > that of a false one), ties 1/2; NaN without both."""
    c = np.asarray(confidence, dtype=np.float64).ravel()
    t = np.asarray(true, dtype=bool).ravel()
    pos, neg = c[t], c[~t]
    if pos.size == 0 or neg.size == 0:
        return math.nan
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(order.size)
    values = np.concatenate([pos, neg])[order]
    # average ranks over ties
    _, first, counts = np.unique(values, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def lesion_risk_coverage(confidence: np.ndarray, true: np.ndarray) -> dict[str, Any]:
    """Coverage and risk as the least confident lesions are referred first (module docstring)."""
    c = np.asarray(confidence, dtype=np.float64).ravel()
    t = np.asarray(true, dtype=bool).ravel()
    n = c.size
    order = np.argsort(c, kind="mergesort")  # least confident first
    false_left = (~t).sum() - np.concatenate([[0], np.cumsum(~t[order])])
    left = n - np.arange(n + 1)
    risk = np.where(left > 0, false_left / np.maximum(left, 1), 0.0)
    return {
        "coverage": (left / n) if n else np.ones(1),
        "risk": risk if n else np.zeros(1),
        "referred": np.arange(n + 1),
        "area": float(risk.mean()) if n else math.nan,
    }


def lesion_trust(
    confidence: Sequence[float] | np.ndarray, true: Sequence[bool] | np.ndarray
) -> dict[str, Any]:
    """Lesion-level trust of pooled lesions: counts, AUROC, ECE with its reliability bins and
    the risk-coverage curve."""
    c = np.asarray(confidence, dtype=np.float64).ravel()
    t = np.asarray(true, dtype=bool).ravel()
    rel = binned_reliability(c, t, N_LESION_BINS)
    curve = lesion_risk_coverage(c, t)
    return {
        "n_lesions": int(c.size),
        "n_true": int(t.sum()),
        "n_false": int((~t).sum()),
        "auroc": lesion_auroc(c, t),
        "ece": rel.ece,
        "reliability": rel.to_json(),
        "risk_coverage": {
            "coverage": [float(v) for v in curve["coverage"]],
            "risk": [float(v) for v in curve["risk"]],
            "area": curve["area"],
        },
    }


def voxel_reliability_near_lesions(
    error_probability: np.ndarray,
    mask: np.ndarray,
    reference: np.ndarray,
    spacing_mm: tuple[float, float, float],
) -> BinnedReliability:
    """The reliability counts of a voxel error-probability map over the voxels near lesions
    (:func:`mefn.confidence.near_lesions`); poolable with ``+``."""
    from mefn.confidence import near_lesions

    if not (error_probability.shape == mask.shape == reference.shape):
        raise ValueError(
            f"error map {error_probability.shape}, mask {mask.shape} and reference "
            f"{reference.shape} must share one grid"
        )
    near = near_lesions(mask, reference, spacing_mm)
    wrong = (mask[near] != 0) != (reference[near] != 0)
    return binned_reliability(error_probability[near], wrong, N_VOXEL_BINS)
