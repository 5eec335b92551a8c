"""Calibration and uncertainty quality of voxel-wise probabilities and uncertainty maps.

Everything is accumulated as counts (:class:`CalibrationCounts`), so cases can be pooled
with ``+`` without keeping the volumes, and the per-case and dataset values use the same
definitions.

Definitions (voxels inside ``region``, the whole volume by default):

- **Predicted class** is the delivered mask; **confidence** is the fused probability of
  that class. With a probability map (``C`` classes) that is ``p[mask]``; without one we
  take ``1 - u`` as the probability of the predicted class and ``u / (C - 1)`` for each
  other class (documented stand-in for the evidential belief + uncertainty split).
- **ECE**: 15 equal-width confidence bins, right-closed ``((b-1)/15, b/15]`` with a
  confidence of 0 in the first bin; ``ECE = sum_b n_b / N * |accuracy_b - confidence_b|``
  (Guo et al. 2017, top-label / predicted-class ECE).
- **Brier**: mean over voxels of ``sum_k (p_k - y_k)^2`` (all classes; for two classes this
  is twice the one-class ``(p - y)^2``).
- **NLL**: mean of ``-log(max(p_true, 1e-12))``.
- **Uncertainty-error overlap (UEO**, Jungo et al. 2020): error mask ``E = mask != reference``;
  ``U_t = {u > t}`` for ``t`` in 0.00, 0.01, ..., 0.99; ``UEO = max_t Dice(U_t, E)``, reported
  with the arg-max threshold (the smallest one on ties). Thresholds where both sets are empty
  are skipped.
- **AUROC** of ``u`` as a detector of error voxels: the Mann-Whitney statistic with ties
  counting 1/2, computed from histograms of error and correct voxels over ``2**20`` equal
  bins of ``u`` clipped to [0, 1] (no sorting, no subsampling, 16 MB whatever the volume,
  exactly poolable over cases). It is exact for the scores quantised to ``2**-20`` (about
  1e-6): values closer than that count as ties.
- **Risk-coverage** (lesion referral): units are the 18-connected components of
  ``reference | mask``; they are referred to a reader in order of decreasing mean ``u``
  (ties: larger unit first), and a referred unit is replaced by the reference. The curve
  gives, after referring k units, coverage ``1 - k / n`` and the pooled Dice
  ``2 sum TP / sum(|ref| + |pred|)``, which decomposes over the disjoint units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mefn.errors import ConfigError, GeometryError
from mefn.metrics.autopet import components

__all__ = [
    "N_ECE_BINS",
    "N_AUROC_BINS",
    "UEO_THRESHOLDS",
    "CalibrationCounts",
    "calibration_counts",
    "expected_calibration_error",
    "uncertainty_error_overlap",
    "auroc",
    "LesionUnits",
    "lesion_units",
    "risk_coverage",
]

N_ECE_BINS = 15
N_AUROC_BINS = 2**20
_CHUNK = 1 << 22  # voxels per pass: bounds the temporaries to a few tens of MB
UEO_THRESHOLDS = np.round(np.arange(100) / 100.0, 2)
_EPS = 1e-12


def _bin_index(confidence: np.ndarray, n_bins: int = N_ECE_BINS) -> np.ndarray:
    idx = np.ceil(confidence.astype(np.float64) * n_bins).astype(np.int64) - 1
    return np.clip(idx, 0, n_bins - 1)


@dataclass
class CalibrationCounts:
    """Sufficient statistics of the calibration metrics over any number of voxels and cases."""

    n_voxels: int = 0
    bin_count: np.ndarray = field(default_factory=lambda: np.zeros(N_ECE_BINS, np.int64))
    bin_confidence: np.ndarray = field(default_factory=lambda: np.zeros(N_ECE_BINS))
    bin_correct: np.ndarray = field(default_factory=lambda: np.zeros(N_ECE_BINS, np.int64))
    brier_sum: float = 0.0
    nll_sum: float = 0.0
    n_error: int = 0
    above_all: np.ndarray = field(default_factory=lambda: np.zeros(len(UEO_THRESHOLDS), np.int64))
    above_error: np.ndarray = field(default_factory=lambda: np.zeros(len(UEO_THRESHOLDS), np.int64))
    u_error: np.ndarray = field(default_factory=lambda: np.zeros(N_AUROC_BINS, np.int64))
    u_all: np.ndarray = field(default_factory=lambda: np.zeros(N_AUROC_BINS, np.int64))

    def __add__(self, other: CalibrationCounts) -> CalibrationCounts:
        return CalibrationCounts(
            n_voxels=self.n_voxels + other.n_voxels,
            bin_count=self.bin_count + other.bin_count,
            bin_confidence=self.bin_confidence + other.bin_confidence,
            bin_correct=self.bin_correct + other.bin_correct,
            brier_sum=self.brier_sum + other.brier_sum,
            nll_sum=self.nll_sum + other.nll_sum,
            n_error=self.n_error + other.n_error,
            above_all=self.above_all + other.above_all,
            above_error=self.above_error + other.above_error,
            u_error=self.u_error + other.u_error,
            u_all=self.u_all + other.u_all,
        )

    # --- the metrics ------------------------------------------------------------------------
    @property
    def brier(self) -> float:
        return self.brier_sum / self.n_voxels if self.n_voxels else math.nan

    @property
    def nll(self) -> float:
        return self.nll_sum / self.n_voxels if self.n_voxels else math.nan

    def reliability(self) -> dict[str, np.ndarray]:
        """Per bin: edges, voxel count, mean confidence and accuracy (NaN for empty bins)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            conf = np.where(self.bin_count > 0, self.bin_confidence / self.bin_count, np.nan)
            acc = np.where(self.bin_count > 0, self.bin_correct / self.bin_count, np.nan)
        return {
            "edges": np.linspace(0.0, 1.0, N_ECE_BINS + 1),
            "count": self.bin_count.copy(),
            "confidence": conf,
            "accuracy": acc,
        }

    def summary(self) -> dict[str, Any]:
        ueo, t = uncertainty_error_overlap(self)
        return {
            "n_voxels": int(self.n_voxels),
            "n_error_voxels": int(self.n_error),
            "ece": expected_calibration_error(self),
            "brier": self.brier,
            "nll": self.nll,
            "ueo": ueo,
            "ueo_threshold": t,
            "auroc_uncertainty_error": auroc(self),
        }


def calibration_counts(
    reference: np.ndarray,
    prediction: np.ndarray,
    uncertainty: np.ndarray,
    probabilities: np.ndarray | None = None,
    n_classes: int = 2,
    region: np.ndarray | None = None,
) -> CalibrationCounts:
    """Counts for one case. ``probabilities`` has the class axis first: (C, *shape).

    Voxels are processed in chunks of 4 Mi, so memory stays bounded on whole-body volumes.
    """
    ref = np.asarray(reference)
    pred = np.asarray(prediction)
    u = np.asarray(uncertainty)
    if ref.shape != pred.shape or ref.shape != u.shape:
        raise GeometryError(
            f"reference {ref.shape}, prediction {pred.shape} and uncertainty {u.shape} must "
            "share one grid"
        )
    probs = None
    if probabilities is not None:
        probs = np.asarray(probabilities)
        if probs.ndim != ref.ndim + 1 or probs.shape[1:] != ref.shape:
            raise GeometryError(f"probabilities {probs.shape} must be (classes, {ref.shape})")
        n_classes = probs.shape[0]
    elif n_classes < 2:
        raise ConfigError(f"n_classes must be at least 2, found {n_classes}")
    if region is not None:
        if region.shape != ref.shape:
            raise GeometryError(f"region {region.shape} does not match the images {ref.shape}")
        sel = np.asarray(region, dtype=bool)
        ref, pred, u = ref[sel], pred[sel], u[sel]
        probs = probs[:, sel] if probs is not None else None
    else:
        ref, pred, u = ref.reshape(-1), pred.reshape(-1), u.reshape(-1)
        probs = probs.reshape(n_classes, -1) if probs is not None else None

    total = CalibrationCounts()
    for start in range(0, ref.size, _CHUNK):
        part = slice(start, start + _CHUNK)
        total = total + _chunk_counts(
            ref[part],
            pred[part],
            u[part],
            probs[:, part] if probs is not None else None,
            n_classes,
        )
    return total


def _chunk_counts(
    ref_values: np.ndarray,
    pred_values: np.ndarray,
    u_values: np.ndarray,
    probs: np.ndarray | None,
    n_classes: int,
) -> CalibrationCounts:
    ref = np.rint(ref_values).astype(np.int64)
    pred = np.rint(pred_values).astype(np.int64)
    u = u_values.astype(np.float64)
    correct = ref == pred
    if probs is not None:
        top = max(int(ref.max(initial=0)), int(pred.max(initial=0)))
        if top >= n_classes:
            raise ConfigError(
                f"labels up to {top} but only {n_classes} probability volumes; "
                "give one volume per class"
            )
        p = probs.astype(np.float64)
        cols = np.arange(ref.size)
        confidence = p[pred, cols]
        p_true = p[ref, cols]
        brier = (p**2).sum(axis=0) - 2 * p_true + 1.0  # sum_k (p_k - y_k)^2
    else:
        k1 = n_classes - 1
        confidence = 1.0 - u
        p_other = u / k1
        p_true = np.where(correct, confidence, p_other)
        brier = np.where(
            correct,
            u**2 + k1 * p_other**2,
            (1.0 - u) ** 2 + (p_other - 1.0) ** 2 + (k1 - 1) * p_other**2,
        )

    bins = _bin_index(confidence)
    counts = CalibrationCounts(n_voxels=int(ref.size))
    counts.bin_count = np.bincount(bins, minlength=N_ECE_BINS).astype(np.int64)
    counts.bin_confidence = np.bincount(bins, weights=confidence, minlength=N_ECE_BINS)
    counts.bin_correct = np.bincount(bins, weights=correct, minlength=N_ECE_BINS).astype(np.int64)
    counts.brier_sum = float(np.sum(brier))
    counts.nll_sum = float(np.sum(-np.log(np.maximum(p_true, _EPS))))

    error = ~correct
    counts.n_error = int(np.count_nonzero(error))
    # u > t_j  <=>  j < (number of thresholds strictly below u)
    idx = np.searchsorted(UEO_THRESHOLDS, u, side="left")
    n_t = len(UEO_THRESHOLDS)
    suffix_all = np.cumsum(np.bincount(idx, minlength=n_t + 1)[::-1])[::-1]
    suffix_err = np.cumsum(np.bincount(idx[error], minlength=n_t + 1)[::-1])[::-1]
    counts.above_all = suffix_all[1:].astype(np.int64)
    counts.above_error = suffix_err[1:].astype(np.int64)

    score_bin = np.clip(np.floor(u * N_AUROC_BINS), 0, N_AUROC_BINS - 1).astype(np.int64)
    counts.u_all = np.bincount(score_bin, minlength=N_AUROC_BINS).astype(np.int64)
    counts.u_error = np.bincount(score_bin[error], minlength=N_AUROC_BINS).astype(np.int64)
    return counts


def expected_calibration_error(counts: CalibrationCounts) -> float:
    """ECE over 15 equal-width bins of the predicted-class confidence."""
    if counts.n_voxels == 0:
        return math.nan
    nonempty = counts.bin_count > 0
    n = counts.bin_count[nonempty]
    gap = np.abs(counts.bin_correct[nonempty] - counts.bin_confidence[nonempty])  # n*|acc-conf|
    return float(gap.sum() / counts.n_voxels) if n.size else math.nan


def uncertainty_error_overlap(counts: CalibrationCounts) -> tuple[float, float]:
    """(best Dice between {u > t} and the error mask, the threshold giving it)."""
    denom = counts.above_all + counts.n_error
    valid = denom > 0
    if not valid.any():
        return math.nan, math.nan
    dice = np.full(len(UEO_THRESHOLDS), -1.0)
    dice[valid] = 2.0 * counts.above_error[valid] / denom[valid]
    j = int(np.argmax(dice))
    return float(dice[j]), float(UEO_THRESHOLDS[j])


def auroc(counts: CalibrationCounts) -> float:
    """Exact tie-aware AUROC of uncertainty separating error voxels from correct ones."""
    pos = counts.u_error.astype(np.float64)
    neg = (counts.u_all - counts.u_error).astype(np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return math.nan
    neg_below = np.cumsum(neg) - neg
    return float(np.sum(pos * (neg_below + 0.5 * neg)) / (n_pos * n_neg))


# --- lesion referral -----------------------------------------------------------------------


@dataclass(frozen=True)
class LesionUnits:
    """Per unit (component of reference | prediction): TP, ref and pred voxels, mean u."""

    tp: np.ndarray
    n_ref: np.ndarray
    n_pred: np.ndarray
    mean_u: np.ndarray

    def __add__(self, other: LesionUnits) -> LesionUnits:
        return LesionUnits(
            np.concatenate([self.tp, other.tp]),
            np.concatenate([self.n_ref, other.n_ref]),
            np.concatenate([self.n_pred, other.n_pred]),
            np.concatenate([self.mean_u, other.mean_u]),
        )

    @classmethod
    def empty(cls) -> LesionUnits:
        z = np.zeros(0, np.int64)
        return cls(z, z, z, np.zeros(0))


def lesion_units(
    reference: np.ndarray, prediction: np.ndarray, uncertainty: np.ndarray, connectivity: int = 18
) -> LesionUnits:
    """The referral units of one case (see the module docstring)."""
    ref = np.asarray(reference) != 0
    pred = np.asarray(prediction) != 0
    if ref.shape != pred.shape or ref.shape != np.shape(uncertainty):
        raise GeometryError(
            f"reference {ref.shape}, prediction {pred.shape} and uncertainty "
            f"{np.shape(uncertainty)} must share one grid"
        )
    labels = components(ref | pred, connectivity).ravel()
    n = int(labels.max(initial=0))
    if n == 0:
        return LesionUnits.empty()
    size = np.bincount(labels, minlength=n + 1)[1:]
    tp = np.bincount(labels, weights=(ref & pred).ravel(), minlength=n + 1)[1:]
    n_ref = np.bincount(labels, weights=ref.ravel(), minlength=n + 1)[1:]
    n_pred = np.bincount(labels, weights=pred.ravel(), minlength=n + 1)[1:]
    u_sum = np.bincount(
        labels, weights=np.asarray(uncertainty, np.float64).ravel(), minlength=n + 1
    )[1:]
    return LesionUnits(
        tp.astype(np.int64), n_ref.astype(np.int64), n_pred.astype(np.int64), u_sum / size
    )


def risk_coverage(units: LesionUnits | Sequence[LesionUnits]) -> dict[str, Any]:
    """Dice as the most uncertain units are referred and corrected (pooled over cases).

    Returns ``coverage`` (fraction of units left automatic, from 1 down to 0), ``dice``
    after each referral, ``referred`` (number of units referred) and ``area`` (mean Dice
    over the n + 1 points, the area under the Dice-coverage curve by the step rule).
    """
    if not isinstance(units, LesionUnits):
        total = LesionUnits.empty()
        for u in units:
            total = total + u
        units = total
    n = len(units.tp)
    if n == 0:
        return {
            "coverage": np.ones(1),
            "dice": np.full(1, np.nan),
            "referred": np.zeros(1, int),
            "area": math.nan,
        }
    size = units.n_ref + units.n_pred
    order = np.lexsort((-size, -units.mean_u))  # most uncertain first, then larger
    tp = units.tp.astype(np.float64)
    denom_units = (units.n_ref + units.n_pred).astype(np.float64)
    # referring unit i: TP becomes n_ref, |pred| becomes n_ref
    d_tp = (units.n_ref - units.tp)[order].astype(np.float64)
    d_den = (units.n_ref - units.n_pred)[order].astype(np.float64)
    tp_curve = tp.sum() + np.concatenate([[0.0], np.cumsum(d_tp)])
    den_curve = denom_units.sum() + np.concatenate([[0.0], np.cumsum(d_den)])
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(den_curve > 0, 2.0 * tp_curve / den_curve, np.nan)
    referred = np.arange(n + 1)
    coverage = 1.0 - referred / n
    return {
        "coverage": coverage,
        "dice": dice,
        "referred": referred,
        "area": float(np.nanmean(dice)) if np.any(~np.isnan(dice)) else math.nan,
    }
