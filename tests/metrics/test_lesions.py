"""Lesion-wise detection counts on a hand-built case."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mefn.errors import GeometryError
from mefn.metrics.lesions import aggregate_detection, lesion_detection, predicted_lesion_errors
from mefn.postprocess import remove_small_components


def _case():
    ref = np.zeros((11, 12, 13), np.uint8)
    pred = np.zeros_like(ref)
    ref[1:3, 1:3, 1:3] = 1  # lesion A, hit by one predicted voxel
    pred[2, 2, 2] = 1
    ref[6:8, 6:8, 6:8] = 1  # lesion B, missed
    pred[9, 1, 1] = 1  # false positive 1
    pred[9, 10, 11] = 1  # false positive 2
    ref[4, 10, 10] = 1  # lesion C and D touch at a corner only: two lesions with 18-connectivity
    ref[5, 11, 11] = 1
    pred[4, 10, 10] = 1
    return ref, pred


def test_counts_and_ratios():
    d = lesion_detection(*_case())
    assert (d.n_reference, d.n_predicted) == (4, 4)
    assert (d.detected_reference, d.true_positive_predicted) == (2, 2)
    assert (d.missed_lesions, d.false_positive_lesions) == (2, 2)
    assert d.sensitivity == 0.5 and d.precision == 0.5 and d.f1 == 0.5


def test_corner_contact_with_26_connectivity():
    d = lesion_detection(*_case(), connectivity=26)
    assert d.n_reference == 3 and d.detected_reference == 2


def test_empty_prediction_and_pooling():
    ref, _ = _case()
    d = lesion_detection(ref, np.zeros_like(ref))
    assert d.sensitivity == 0.0 and math.isnan(d.precision) and math.isnan(d.f1)
    s = aggregate_detection([lesion_detection(*_case()), d])
    assert s["n_reference"] == 8 and s["detected_reference"] == 2
    assert s["false_positive_lesions_per_case"] == 1.0
    assert s["sensitivity"] == 0.25 and s["precision"] == 0.5


def test_shape_mismatch():
    ref, pred = _case()
    with pytest.raises(GeometryError, match="differs from reference shape"):
        lesion_detection(ref, pred[1:])


def test_predicted_lesion_errors_hand_case() -> None:
    ref = np.zeros((12, 12, 12), np.uint8)
    pred = np.zeros_like(ref)
    unc = np.zeros(ref.shape, np.float32)
    ref[1:4, 1:4, 1:4] = 1
    pred[2:5, 2:5, 2:5] = 1  # touches the reference: a true detection
    unc[2:5, 2:5, 2:5] = 0.1
    pred[8:10, 8:10, 8:10] = 1  # far from it: a false positive
    unc[8:10, 8:10, 8:10] = 0.5
    unc[8, 8, 8] = 0.9
    u, fp, voxels = predicted_lesion_errors(ref, pred, unc)
    assert sorted(zip(u.round(4).tolist(), fp.tolist(), voxels.tolist())) == [
        (0.1, False, 27),
        (0.55, True, 8),
    ]
    # a size floor keeps exactly the entries whose voxel count reaches it
    filtered = remove_small_components(pred.copy(), 10)
    u10, fp10, voxels10 = predicted_lesion_errors(ref, filtered, unc)
    keep = voxels >= 10
    assert np.array_equal(u10, u[keep]) and np.array_equal(fp10, fp[keep])
    empty_u, empty_fp, empty_v = predicted_lesion_errors(ref, np.zeros_like(ref), unc)
    assert empty_u.size == 0 and empty_fp.size == 0 and empty_v.size == 0
    with pytest.raises(GeometryError, match="must share one grid"):
        predicted_lesion_errors(ref, pred, unc[:5])
