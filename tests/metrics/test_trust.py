"""Lesion-level and voxel-level trust metrics, by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mefn.metrics.trust import (
    binned_reliability,
    lesion_auroc,
    lesion_risk_coverage,
    lesion_trust,
    voxel_reliability_near_lesions,
)


def test_lesion_auroc_is_the_pairwise_count_with_ties_half() -> None:
    rng = np.random.default_rng(0)
    conf = np.round(rng.random(40), 1)  # many ties
    true = rng.random(40) < 0.5
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p, n in itertools.product(conf[true], conf[~true])
    ]
    assert lesion_auroc(conf, true) == pytest.approx(float(np.mean(pairs)))
    assert lesion_auroc([0.9, 0.1], [True, False]) == 1.0
    assert math.isnan(lesion_auroc([0.9, 0.8], [True, True]))


def test_ece_by_hand() -> None:
    # bin (0.1, 0.2]: 0.15, 0.15 with outcomes 1, 0 -> |0.5 - 0.15|; bin (0.9, 1]: 0.95, true
    rel = binned_reliability(np.asarray([0.15, 0.15, 0.95]), np.asarray([1, 0, 1]), 10)
    assert rel.ece == pytest.approx((2 * 0.35 + 1 * 0.05) / 3)
    data = rel.to_json()
    assert data["count"][1] == 2 and data["count"][9] == 1 and data["observed"][1] == 0.5
    assert data["mean_probability"][0] is None
    # a probability of 0 falls in the first bin
    assert binned_reliability(np.zeros(2), np.zeros(2), 10).count[0] == 2
    pooled = rel + rel
    assert pooled.n == 6 and pooled.ece == pytest.approx(rel.ece)


def test_risk_coverage_refers_the_least_confident_first() -> None:
    curve = lesion_risk_coverage(np.asarray([0.9, 0.2, 0.6, 0.1]), np.asarray([1, 0, 1, 1], bool))
    # referred: 0.1 (true), 0.2 (false), 0.6, 0.9
    assert curve["risk"].tolist() == pytest.approx([0.25, 1 / 3, 0.0, 0.0, 0.0])
    assert curve["coverage"].tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert curve["area"] == pytest.approx((0.25 + 1 / 3) / 5)


def test_lesion_trust_summary() -> None:
    out = lesion_trust([0.9, 0.8, 0.3], [True, True, False])
    assert out["n_lesions"] == 3 and out["n_true"] == 2 and out["auroc"] == 1.0
    assert out["ece"] == pytest.approx((0.1 + 0.2 + 0.3) / 3)


def test_voxel_reliability_counts_only_voxels_near_lesions() -> None:
    mask = np.zeros((30, 3, 3), np.uint8)
    ref = np.zeros_like(mask)
    mask[0:2, 1, 1] = 1
    ref[1:3, 1, 1] = 1  # voxel 0: false positive, voxel 2: missed
    err = np.full(mask.shape, 0.5, np.float32)
    rel = voxel_reliability_near_lesions(err, mask, ref, (2.0, 2.0, 2.0))
    # near: within 10 mm of voxels 0-2: rows 0-6 whole (corners of row 6 are 8.5 mm from
    # voxel 2) and the centre of row 7 (10 mm; its neighbours are 10.2 mm away)
    assert rel.n == 7 * 9 + 1
    assert rel.outcome_sum.sum() == 2
    with pytest.raises(ValueError, match="one grid"):
        voxel_reliability_near_lesions(err[:2], mask, ref, (2.0, 2.0, 2.0))
