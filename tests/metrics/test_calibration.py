"""Calibration and uncertainty metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mefn.errors import ConfigError, GeometryError
from mefn.metrics.calibration import (
    CalibrationCounts,
    auroc,
    calibration_counts,
    expected_calibration_error,
    lesion_units,
    risk_coverage,
    uncertainty_error_overlap,
)

# six voxels: confidences 1 - u avoid bin edges (multiples of 1/15)
PRED = np.array([1, 1, 0, 0, 1, 0])
REF = np.array([1, 0, 0, 0, 1, 1])
U = np.array([0.1, 0.1, 0.3, 0.45, 0.05, 0.3])


def _counts():
    shape = (1, 2, 3)
    return calibration_counts(REF.reshape(shape), PRED.reshape(shape), U.reshape(shape))


def test_ece_by_hand():
    # bins: conf 0.9 (acc 1/2): 2*0.4; conf 0.7 (acc 1/2): 2*0.2; 0.55 (acc 1): 0.45; 0.95: 0.05
    assert expected_calibration_error(_counts()) == pytest.approx(1.7 / 6, abs=1e-12)
    rel = _counts().reliability()
    assert rel["count"][13] == 2 and rel["accuracy"][13] == 0.5
    assert rel["confidence"][10] == pytest.approx(0.7)
    assert np.isnan(rel["accuracy"][0])


def test_brier_and_nll_by_hand_without_probabilities():
    c = _counts()
    # two classes, p(pred) = 1 - u: correct 2u^2, wrong 2(1-u)^2
    assert c.brier == pytest.approx((0.02 + 1.62 + 0.18 + 0.405 + 0.005 + 0.98) / 6, abs=1e-12)
    nll = -(
        math.log(0.9)
        + math.log(0.1)
        + math.log(0.7)
        + math.log(0.55)
        + math.log(0.95)
        + math.log(0.3)
    )
    assert c.nll == pytest.approx(nll / 6, abs=1e-12)


def test_uncertainty_error_overlap_by_hand():
    # errors at u = 0.1 and 0.3; u > 0.05 selects 5 voxels holding both errors: 2*2/(5+2)
    ueo, t = uncertainty_error_overlap(_counts())
    assert ueo == pytest.approx(4 / 7, abs=1e-12)
    assert t == 0.05


def test_auroc_by_hand_with_ties():
    # errors {0.1, 0.3} vs correct {0.1, 0.3, 0.45, 0.05}: (0.5+0+0+1) + (1+0.5+0+1) = 4 of 8
    assert auroc(_counts()) == 0.5
    c = calibration_counts(
        np.array([0, 0, 0, 0]).reshape(1, 1, 4),
        np.array([0, 1, 1, 0]).reshape(1, 1, 4),
        np.array([0.2, 0.2, 0.8, 0.4]).reshape(1, 1, 4),
    )
    assert auroc(c) == 0.625


def test_auroc_equals_pairwise_count_and_pooling_is_exact():
    rng = np.random.default_rng(3)
    shape = (7, 9, 11)
    ref = rng.integers(0, 2, shape)
    pred = rng.integers(0, 2, shape)
    u = rng.integers(0, 6, shape) / 5.0  # many ties
    c = calibration_counts(ref, pred, u)
    err = (ref != pred).ravel()
    pos, neg = u.ravel()[err], u.ravel()[~err]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert auroc(c) == pytest.approx(pairwise, abs=1e-12)
    # pooling two halves gives the counts of the whole
    half = shape[0] // 2
    a = calibration_counts(ref[:half], pred[:half], u[:half])
    b = calibration_counts(ref[half:], pred[half:], u[half:])
    pooled = a + b
    assert pooled.summary() == pytest.approx(c.summary())


def test_probabilities_give_brier_nll_and_confidence():
    probs = np.array([[0.8, 0.3], [0.2, 0.7]]).reshape(2, 1, 1, 2)  # (classes, shape)
    ref = np.array([0, 0]).reshape(1, 1, 2)
    pred = np.array([0, 1]).reshape(1, 1, 2)
    c = calibration_counts(ref, pred, np.array([0.1, 0.2]).reshape(1, 1, 2), probabilities=probs)
    # voxel 1: (0.8-1)^2 + 0.2^2 = 0.08; voxel 2: (0.3-1)^2 + 0.7^2 = 0.98
    assert c.brier == pytest.approx((0.08 + 0.98) / 2)
    assert c.nll == pytest.approx(-(math.log(0.8) + math.log(0.3)) / 2)
    # confidence of the predicted class: 0.8 (correct) and 0.7 (wrong)
    assert expected_calibration_error(c) == pytest.approx((0.2 + 0.7) / 2)


def test_three_classes_without_probabilities():
    c = calibration_counts(
        np.array([2]).reshape(1, 1, 1),
        np.array([1]).reshape(1, 1, 1),
        np.full((1, 1, 1), 0.4),
        n_classes=3,
    )
    # p(pred) = 0.6, others 0.2 each; truth is an "other" class
    assert c.brier == pytest.approx(0.6**2 + 0.8**2 + 0.2**2)
    assert c.nll == pytest.approx(-math.log(0.2))


def test_errors():
    with pytest.raises(GeometryError, match="must share one grid"):
        calibration_counts(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    with pytest.raises(ConfigError, match="one volume per class"):
        calibration_counts(
            np.full((1, 1, 2), 2),
            np.zeros((1, 1, 2)),
            np.zeros((1, 1, 2)),
            np.full((2, 1, 1, 2), 0.5),
        )
    empty = CalibrationCounts()
    assert math.isnan(expected_calibration_error(empty)) and math.isnan(auroc(empty))


def test_risk_coverage_by_hand():
    shape = (5, 13, 7)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    u = np.zeros(shape)
    ref[1, 1:5, 1] = 1  # unit A: ref 4, pred 4, overlap 2, mean u 0.2
    pred[1, 3:7, 1] = 1
    u[1, 1:7, 1] = 0.2
    pred[3, 10:12, 5] = 1  # unit B: false positive of 2 voxels, u 0.9
    u[3, 10:12, 5] = 0.9
    ref[1, 10:13, 5] = 1  # unit C: missed lesion of 3 voxels, u 0.5
    u[1, 10:13, 5] = 0.5
    units = lesion_units(ref, pred, u)
    assert sorted(units.mean_u.tolist()) == pytest.approx([0.2, 0.5, 0.9])
    curve = risk_coverage(units)
    # refer B, then C, then A
    assert curve["dice"] == pytest.approx([4 / 13, 4 / 11, 10 / 14, 1.0])
    assert curve["coverage"] == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert curve["area"] == pytest.approx((4 / 13 + 4 / 11 + 10 / 14 + 1.0) / 4)
    # pooling over a list of cases equals the sum
    both = risk_coverage([units, units])
    assert both["dice"][0] == pytest.approx(4 / 13) and len(both["dice"]) == 7
