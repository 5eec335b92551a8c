"""HECKTOR 2022 (checks, resampling, DSCagg) and 2021 (Dice, HD95) on hand-built cases."""

from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pytest

from mefn.errors import ConfigError, GeometryError, InputError
from mefn.io.challenge_io import hecktor2022_overlap, read_hecktor2021_pair
from mefn.io.sitk_bridge import write_volume
from mefn.io.volume import Volume
from mefn.metrics.hecktor import (
    aggregate_hecktor2021,
    aggregate_hecktor2022,
    hecktor2021_case_metrics,
    hecktor2022_case_metrics,
    robust_hausdorff,
    surface_distances,
)

SHAPE = (13, 14, 15)
SPACING = (0.9, 1.1, 3.0)
C, S = math.cos(0.3), math.sin(0.3)
DIRECTION = (C, -S, 0.0, S, C, 0.0, 0.0, 0.0, 1.0)
ORIGIN = (-20.0, 15.0, 40.0)
VOXVOL = 0.9 * 1.1 * 3.0


def _write(path, array, spacing=SPACING, origin=ORIGIN):
    vol = Volume.from_array(array, spacing_mm=spacing, origin_mm=origin, direction=DIRECTION)
    write_volume(vol, path, dtype=array.dtype)
    return path


def _pair(tmp_path):
    ref = np.zeros(SHAPE, np.uint8)
    pred = np.zeros(SHAPE, np.uint8)
    ref[2:4, 2:4, 2:4] = 1  # GTVp: 8 voxels
    pred[2:4, 2:4, 2] = 1  # 4 of them predicted
    ref[8, 8, 8:10] = 2  # GTVn: 2 voxels
    pred[8, 8, 9:11] = 2  # 2 predicted, 1 overlapping
    return _write(tmp_path / "ref.nii.gz", ref), _write(tmp_path / "pred.nii.gz", pred)


def test_overlap_and_case_metrics_by_hand(tmp_path):
    ov = hecktor2022_overlap(*_pair(tmp_path), case="CHUP-001")
    assert ov.dice == pytest.approx((2 / 3, 1 / 2), abs=1e-12)
    assert ov.reference_voxels == (8, 2) and ov.predicted_voxels == (4, 2)
    m = hecktor2022_case_metrics(
        ov.dice, ov.reference_voxels, ov.predicted_voxels, ov.voxel_volume_mm3
    )
    assert m.vol_sum_gtvp == pytest.approx(12 * VOXVOL) and m.tp_gtvp == pytest.approx(4 * VOXVOL)
    assert m.tp_gtvn == pytest.approx(1 * VOXVOL)


def test_dscagg_by_hand():
    a = hecktor2022_case_metrics((2 / 3, 0.0), (8, 0), (4, 0), 2.0, "a")  # GTVn absent: nothing
    b = hecktor2022_case_metrics((0.0, 0.5), (0, 2), (0, 2), 2.0, "b")
    s = aggregate_hecktor2022([a, b])
    assert s["dscagg_gtvp"] == pytest.approx(2 / 3, abs=1e-15)
    assert s["dscagg_gtvn"] == pytest.approx(1 / 2, abs=1e-15)
    assert s["dscagg_mean"] == pytest.approx(7 / 12, abs=1e-15)


def test_label_outside_0_1_2_is_an_error_naming_the_case(tmp_path):
    ref, _ = _pair(tmp_path)
    bad = np.zeros(SHAPE, np.uint8)
    bad[1, 1, 1] = 3
    pred = _write(tmp_path / "bad.nii.gz", bad)
    with pytest.raises(InputError, match=r"case CHUV-007: prediction labels .* found \[0, 3\]"):
        hecktor2022_overlap(ref, pred, case="CHUV-007")


def test_float_labels_are_truncated_by_the_uint8_cast(tmp_path):
    ref, _ = _pair(tmp_path)
    arr = np.zeros(SHAPE, np.float32)
    arr[2:4, 2:4, 2:4] = 1.7  # cast to 1, as the notebook's CastImageFilter does
    ov = hecktor2022_overlap(ref, _write(tmp_path / "f.nii.gz", arr))
    assert ov.dice[0] == 1.0


def test_spacing_check_uses_the_notebooks_tolerance(tmp_path):
    ref, _ = _pair(tmp_path)
    arr = np.zeros(SHAPE, np.uint8)
    arr[2:4, 2:4, 2:4] = 1
    off = _write(tmp_path / "off.nii.gz", arr, spacing=(0.9, 1.1, 3.001))
    with pytest.raises(
        GeometryError, match=r"case MDA-010: prediction spacing .* differs from the reference CT"
    ):
        hecktor2022_overlap(ref, off, case="MDA-010")
    # np.allclose(atol=1e-6) keeps NumPy's rtol=1e-5: 3.00002 passes, as in the notebook
    near = _write(tmp_path / "near.nii.gz", arr, spacing=(0.9, 1.1, 3.00002))
    assert hecktor2022_overlap(ref, near).dice[0] == 1.0


def test_prediction_is_resampled_onto_the_reference_grid(tmp_path):
    ref, _ = _pair(tmp_path)
    # a smaller prediction whose origin sits 2 voxels along i and 1 along k inside the CT grid
    small = np.zeros((6, 6, 6), np.uint8)
    small[0:2, 2:4, 1:3] = 1  # = reference indices [2:4, 2:4, 2:4]
    d = np.asarray(DIRECTION).reshape(3, 3)
    origin = tuple(np.asarray(ORIGIN) + d @ (np.asarray(SPACING) * np.array([2, 0, 1])))
    pred = _write(tmp_path / "small.nii.gz", small, origin=origin)
    ov = hecktor2022_overlap(ref, pred)
    assert ov.dice[0] == 1.0 and ov.predicted_voxels == (8, 0)


def test_missing_file(tmp_path):
    ref, _ = _pair(tmp_path)
    with pytest.raises(InputError, match="case X: prediction file .* not found"):
        hecktor2022_overlap(ref, tmp_path / "nope.nii.gz", case="X")


# --- 2021: HD95 ---------------------------------------------------------------------------------


needs_table = pytest.mark.skipif(
    importlib.util.find_spec("surface_distance") is None,
    reason="surface-distance-based-measures (the surface-element table) is not installed",
)


@needs_table
def test_hd95_of_two_single_voxels():
    a = np.zeros((15, 5, 5), bool)
    b = np.zeros_like(a)
    a[2, 2, 2] = True
    b[12, 2, 2] = True
    # corners of a at i = 2, 3 and of b at 12, 13: distances 9 and 10 voxels of 2 mm, equal areas
    sd = surface_distances(a, b, (2.0, 1.0, 1.0))
    assert sd["a_to_b"].tolist() == [18.0] * 4 + [20.0] * 4
    assert robust_hausdorff(a, b, (2.0, 1.0, 1.0)) == 20.0


@needs_table
def test_hd95_identical_and_empty():
    a = np.zeros((9, 10, 11), bool)
    a[2:6, 3:7, 4:9] = True
    assert robust_hausdorff(a, a, (1.0, 2.0, 3.0)) == 0.0
    assert robust_hausdorff(a, np.zeros_like(a), (1.0, 1.0, 1.0)) == math.inf
    r = hecktor2021_case_metrics(a.astype(np.uint8), np.zeros_like(a, np.uint8), (1, 1, 1))
    assert (r["dice"], r["hd95_mm"]) == (0.0, 0.0)
    r = hecktor2021_case_metrics(a.astype(np.uint8), None, (1, 1, 1))
    assert (r["dice"], r["hd95_mm"]) == (0.0, math.inf)
    agg = aggregate_hecktor2021(
        [
            {"dice": 1.0, "hd95_mm": 2.0},
            {"dice": 0.0, "hd95_mm": math.inf},
            {"dice": 0.5, "hd95_mm": 3.0},
        ]
    )
    assert agg == pytest.approx(
        {
            "challenge": "hecktor",
            "year": 2021,
            "n_cases": 3,
            "dice_mean": 0.5,
            "hd95_mm_median": 3.0,
        }
    )


@needs_table
def test_surface_distances_with_one_empty_mask():
    a = np.zeros((7, 8, 9), bool)
    a[2:4, 3:6, 4:5] = True
    spacing = (1.5, 1.0, 2.5)
    own = surface_distances(a, a, spacing)
    sd = surface_distances(a, np.zeros_like(a), spacing)
    # a's surface elements, each infinitely far from the empty surface; none the other way
    assert np.array_equal(sd["areas_a"], own["areas_a"]) and len(sd["areas_a"]) > 0
    assert np.all(np.isinf(sd["a_to_b"])) and len(sd["a_to_b"]) == len(sd["areas_a"])
    assert len(sd["b_to_a"]) == 0 and len(sd["areas_b"]) == 0
    swapped = surface_distances(np.zeros_like(a), a, spacing)
    assert np.array_equal(swapped["areas_b"], own["areas_a"]) and len(swapped["a_to_b"]) == 0
    # against itself every distance is 0, so the list is sorted by area alone
    assert np.all(own["a_to_b"] == 0) and np.all(np.diff(own["areas_a"]) >= 0)
    assert robust_hausdorff(np.zeros_like(a), a, spacing) == math.inf


@needs_table
def test_hd95_raises_no_warning_of_the_reference_package():
    import warnings

    a = np.zeros((9, 9, 9), bool)
    b = np.zeros_like(a)
    a[2:5, 2:5, 2:5] = True
    b[3:7, 2:5, 2:6] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hd = robust_hausdorff(a, b, (1.0, 1.0, 1.0), 100.0)
    # the farthest corner of b's box, (7, 5, 6), lies 2 (i) and 1 (k) beyond a's corner (5, 5, 5)
    assert hd == pytest.approx(math.sqrt(5.0))


def test_surface_distances_shape_error():
    with pytest.raises(ConfigError, match=r"two 3D masks of one shape .* found \(3, 3, 3\)"):
        surface_distances(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 4), bool), (1, 1, 1))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_hd95_agrees_with_the_reference_package():
    sd_pkg = pytest.importorskip("surface_distance")
    rng = np.random.default_rng(0)
    from scipy import ndimage

    a = ndimage.binary_dilation(rng.random((17, 19, 21)) > 0.995, iterations=2)
    b = ndimage.binary_dilation(rng.random((17, 19, 21)) > 0.995, iterations=2)
    spacing = (0.98, 0.98, 3.0)
    ours = robust_hausdorff(a, b, spacing)
    theirs = sd_pkg.compute_robust_hausdorff(sd_pkg.compute_surface_distances(a, b, spacing), 95)
    assert ours == theirs and ours > 0


def test_2021_reading_keeps_the_organisers_axis_order(tmp_path):
    ref, pred = _pair(tmp_path)
    r, p, spacing = read_hecktor2021_pair(ref, pred)
    assert r.shape == SHAPE[::-1] and spacing == pytest.approx(SPACING)
    bbox = (*ORIGIN, ORIGIN[0] + 9.0, ORIGIN[1] + 11.0, ORIGIN[2] + 30.0)
    r, _, _ = read_hecktor2021_pair(ref, pred, bbox_mm=bbox)
    assert r.shape == (10, 10, 10)
    with pytest.raises(GeometryError, match="bounding box .* is empty"):
        read_hecktor2021_pair(ref, pred, bbox_mm=(*ORIGIN, *ORIGIN), case="Y")


def test_hd95_without_the_table_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "surface_distance", None)
    a = np.zeros((5, 5, 5), bool)
    a[2, 2, 2] = True
    with pytest.raises(ConfigError, match="pip install surface-distance-based-measures"):
        robust_hausdorff(a, a, (1.0, 1.0, 1.0))
