"""pipelines/eval_simple_phantoms.py: phantoms written apart from mefn's generator."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from support import load_pipeline

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sp() -> ModuleType:
    return load_pipeline(REPO / "pipelines" / "eval_simple_phantoms.py")


def test_nema_spheres_have_their_volume_and_contrast(sp: ModuleType) -> None:
    hu, suv, label, _ = sp.paint_nema((1.25, 1.25, 1.25), ratio=4.0, background_suv=1.5)
    voxel_ml = 1.25**3 / 1000
    for k, d in enumerate(sp.NEMA_DIAMETERS_MM, start=1):
        volume = (label == k).sum() * voxel_ml
        assert volume == pytest.approx(math.pi / 6 * d**3 / 1000, rel=0.12)
        assert np.all(suv[label == k] == 6.0) and np.all(hu[label == k] == 0.0)
    body = (suv > 0) & (label == 0)
    assert np.all(suv[body] == 1.5)
    assert np.all(hu[(hu < -900)] == -1000.0) and (hu == -800.0).any()  # air and lung insert


def test_torso_lesions_are_labelled_whole_with_their_uptake(sp: ModuleType) -> None:
    _, suv, label, _ = sp.paint_torso((2.5, 2.5, 2.5))
    for k, lesion in enumerate(sp.TORSO_LESIONS, start=1):
        inside = suv[label == k]
        assert inside.size > 0
        if lesion.necrotic:  # a cold core inside the labelled mass
            assert (inside == 1.0).any() and (inside == lesion.suv).any()
        else:
            assert np.all(inside == lesion.suv)
    assert suv.max() == 25.0  # the bladder, hotter than any lesion


def test_flipped_scan_is_the_same_image_in_another_storage_order(sp: ModuleType) -> None:
    scan = sp.Scan((4.0, 4.0, 4.0), (2.5, 2.5, 2.5))
    plain, label = sp.image("nema", scan, ratio=4.0)
    flipped, label_f = sp.image("nema", sp.Scan(**{**scan.__dict__, "flip_xy": True}), ratio=4.0)
    np.testing.assert_array_equal(flipped.pet.array, plain.pet.array[::-1, ::-1])
    np.testing.assert_array_equal(label_f, label[::-1, ::-1])
    # each sphere's centre, in LPS mm, is where it was
    for k in range(1, 7):
        a = plain.pet.geometry.index_to_world(np.argwhere(label == k).mean(0))
        b = flipped.pet.geometry.index_to_world(np.argwhere(label_f == k).mean(0))
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_score_counts_each_lesion(sp: ModuleType) -> None:
    label = np.zeros((20, 20, 20), np.uint8)
    label[2:6, 2:6, 2:6] = 1
    label[10:14, 10:14, 10:14] = 3
    mask = np.zeros_like(label)
    mask[2:4, 2:6, 2:6] = 1  # half of lesion 1; lesion 2 is absent from this grid
    row = sp.score(mask, label, (4.0, 4.0, 4.0), "nema")
    first, second, third = row["lesions"][:3]
    assert first["detected"] and first["recall"] == 0.5
    assert second["voxels"] == 0 and not second["detected"]
    assert not third["detected"] and third["recall"] == 0.0
    assert row["dice"] == pytest.approx(2 * 32 / (32 + 128))


def test_bundled_weights_find_the_larger_nema_spheres(sp: ModuleType) -> None:
    """The default weights, one pass, on the NEMA phantom at 8:1: every sphere of 17 mm and
    more is found, and nothing outside the spheres."""
    from mefn.inference import Predictor

    scan = sp.Scan(ct_spacing_mm=(2.5, 2.5, 2.5))
    case, label = sp.image("nema", scan, ratio=8.0)
    pred = Predictor(device="cpu", tta_axes=()).predict(case)
    row = sp.score(pred.mask, label, case.pet.geometry.spacing_mm, "nema")
    found = {les["lesion"]: les["detected"] for les in row["lesions"]}
    assert all(found[f"sphere {d:g} mm"] for d in (17, 22, 28, 37)), found
    assert row["fpv_ml"] == 0.0
