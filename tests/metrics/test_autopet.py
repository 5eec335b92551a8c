"""AutoPET metrics: the organisers' golden values, empty-case rules per year, connectivity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mefn.errors import ConfigError, GeometryError
from mefn.io.challenge_io import autopet_voxel_volume_ml, read_autopet_mask
from mefn.metrics.autopet import (
    aggregate_autopet,
    autopet_case_metrics,
    voxel_volume_ml_from_spacing,
)

REF = "test_orig_psma_95b833d46f153cd2_2018-04-16.nii.gz"
NNUNET = "test_expected_output_nnUNet_psma_95b833d46f153cd2_2018-04-16.nii.gz"


@pytest.fixture(scope="module")
def psma(shared_data):
    folder = shared_data / "autopet_psma_labels"
    return read_autopet_mask(folder / REF), read_autopet_mask(folder / NNUNET)


@pytest.mark.parametrize("year", [2022, 2023, 2024, 2025])
def test_golden_values_of_the_official_scripts(psma, year):
    ref, pred = psma
    m = autopet_case_metrics(ref.array, pred.array, ref.voxel_volume_ml, year=year)
    assert m.dice == 0.6967340590979783  # exact, as the official scripts print it
    assert m.fpv_ml == pytest.approx(2.7535990257263188, rel=1e-6)
    assert m.fnv_ml == pytest.approx(25.01462247467041, rel=1e-6)
    assert (m.fp_voxels, m.fn_voxels) == (83, 754)
    assert m.fp_voxels * m.voxel_volume_ml == m.fpv_ml


def test_six_connectivity_would_give_another_fnv(psma):
    ref, pred = psma
    m6 = autopet_case_metrics(ref.array, pred.array, ref.voxel_volume_ml, connectivity=6)
    assert m6.fnv_ml == pytest.approx(25.91, abs=0.01)
    assert m6.fn_voxels == 781


def test_voxel_volume_is_float32_product_divided_in_float64():
    pixdim = np.array([1.0, 4.07283, 4.07283, 2.0, 1, 1, 1, 1], dtype=np.float32)
    vol = autopet_voxel_volume_ml(pixdim)
    assert vol == 0.033175891876220706
    # neither float64 throughout nor float32 throughout (NumPy 2) gives this number
    assert vol != 4.07283 * 4.07283 * 2.0 / 1000
    assert vol != float(np.float32(pixdim[1] * pixdim[2] * pixdim[3]) / np.float32(1000))
    assert voxel_volume_ml_from_spacing((4.07283, 4.07283, 2.0)) == vol


def test_spacing_instead_of_voxel_volume(psma):
    ref, pred = psma
    m = autopet_case_metrics(ref.array, pred.array, (4.07283, 4.07283, 2.0))
    assert m.fnv_ml == 25.01462247467041


def _masks(ref_idx, pred_idx, shape=(9, 10, 11)):
    ref = np.zeros(shape)
    pred = np.zeros(shape)
    for i in ref_idx:
        ref[i] = 1.0
    for i in pred_idx:
        pred[i] = 1.0
    return ref, pred


FP3 = [(1, 1, 1), (1, 1, 2), (1, 2, 2)]
REF4 = [(6, 6, 6), (6, 6, 7), (6, 7, 7), (7, 7, 7)]
EMPTY_CASES = [
    # (reference voxels, predicted voxels, year, expected dice, fpv, fnv)
    ([], [], 2022, math.nan, 0.0, 0.0),
    ([], [], 2024, math.nan, 0.0, math.nan),
    ([], FP3, 2022, 0.0, 1.5, 0.0),
    ([], FP3, 2024, math.nan, 1.5, math.nan),
    (REF4, [], 2022, 0.0, 0.0, 2.0),
    (REF4, [], 2024, 0.0, 0.0, 2.0),
]


@pytest.mark.parametrize(("ref_idx", "pred_idx", "year", "dice", "fpv", "fnv"), EMPTY_CASES)
def test_empty_case_rules(ref_idx, pred_idx, year, dice, fpv, fnv):
    ref, pred = _masks(ref_idx, pred_idx)
    m = autopet_case_metrics(ref, pred, 0.5, year=year)
    for got, want in ((m.dice, dice), (m.fpv_ml, fpv), (m.fnv_ml, fnv)):
        assert (math.isnan(got) and math.isnan(want)) or got == want
    assert (m.fn_voxels is None) == math.isnan(fnv)


def test_2025_follows_2024_rules():
    ref, pred = _masks([], FP3)
    m = autopet_case_metrics(ref, pred, 0.5, year=2025)
    assert math.isnan(m.dice) and math.isnan(m.fnv_ml) and m.fpv_ml == 1.5


def test_corner_contact_is_one_lesion_with_26_but_two_with_18():
    # reference: two voxels touching only at a corner; prediction covers the first only
    ref, pred = _masks([(4, 4, 4), (5, 5, 5)], [(4, 4, 4)])
    m18 = autopet_case_metrics(ref, pred, 0.5)
    m26 = autopet_case_metrics(ref, pred, 0.5, connectivity=26)
    assert (m18.fn_voxels, m18.fnv_ml) == (1, 0.5)
    assert (m26.fn_voxels, m26.fnv_ml) == (0, 0.0)
    # an edge contact is already one component with 18-connectivity
    ref, pred = _masks([(4, 4, 4), (5, 5, 4)], [(4, 4, 4)])
    assert autopet_case_metrics(ref, pred, 0.5).fn_voxels == 0


def test_one_touching_voxel_detects_a_whole_lesion():
    ref, pred = _masks(REF4 + [(1, 1, 1)], [(7, 7, 7), (7, 8, 8), (7, 8, 9), (0, 9, 0)])
    m = autopet_case_metrics(ref, pred, 0.25)
    # the reference lesion REF4 is touched by one voxel; (1,1,1) is missed
    assert m.fn_voxels == 1 and m.fnv_ml == 0.25
    # prediction component at (7,7,7)-(7,8,9) touches; (0,9,0) is a false positive
    assert m.fp_voxels == 1
    assert m.dice == 2 * 1 / (5 + 4)


def test_masks_are_used_as_read_not_binarised():
    # a prediction with value 2 counts twice in the official Dice
    ref, pred = _masks([(2, 2, 2), (2, 2, 3)], [(2, 2, 2)])
    pred[2, 2, 2] = 2.0
    m = autopet_case_metrics(ref, pred, 1.0)
    assert m.dice == 2 * 2 / (2 + 2)


def test_aggregation_uses_cases_with_lesions_for_dice_and_fnv():
    a = autopet_case_metrics(*_masks(REF4, REF4[:2]), 0.5, year=2022, case="a")
    b = autopet_case_metrics(*_masks([], FP3), 0.5, year=2022, case="b")
    s = aggregate_autopet([a, b], 2022)
    assert s["dice_mean"] == a.dice == 2 * 2 / 6
    assert s["fnv_ml_mean"] == 0.0
    assert s["fpv_ml_mean"] == (0.0 + 1.5) / 2
    assert s["fpv_ml_mean_negative_cases"] == 1.5
    assert (s["n_cases"], s["n_cases_with_lesions"]) == (2, 1)


def test_bad_year_and_grid():
    ref, pred = _masks(REF4, REF4)
    with pytest.raises(ConfigError, match="year must be one of"):
        autopet_case_metrics(ref, pred, 1.0, year=2021)
    with pytest.raises(GeometryError, match="case x: prediction shape"):
        autopet_case_metrics(ref, pred[:-1], 1.0, case="x")
    with pytest.raises(ConfigError, match="connectivity must be 6, 18 or 26"):
        autopet_case_metrics(ref, pred, 1.0, connectivity=8)
