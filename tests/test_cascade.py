"""The coarse-to-fine cascade: candidates, boxes, composition on the output grid."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy import ndimage
from support import make_tiny_weights, tiny_case

from mefn.cascade import Box, FineStageSettings, box_grid, candidate_boxes, paste_maps
from mefn.errors import CheckpointError, InputError
from mefn.io.volume import Geometry


def test_candidates_are_boxes_around_regions_above_the_threshold_highest_first() -> None:
    grid = Geometry(shape=(20, 20, 20), spacing_mm=(4.0, 4.0, 4.0), origin_mm=(-10.0, 0.0, 5.0))
    prob = np.zeros(grid.shape, dtype=np.float32)
    prob[2:4, 2:5, 2:3] = 0.3  # region 1, peak 0.3
    prob[10:15, 10:12, 10:11] = 0.6  # region 2, peak 0.9
    prob[12, 11, 10] = 0.9
    prob[18, 18, 18] = 0.05  # below the threshold
    boxes = candidate_boxes(prob, grid, threshold=0.1, margin_mm=8.0, max_candidates=10)
    assert [b.peak for b in boxes] == pytest.approx([0.9, 0.3])
    # region 2: voxels 10..14 along x: centres -10 + 4 * (10, 14) = 30, 46; edges 28, 48; +8
    assert boxes[0].lo_mm[0] == pytest.approx(20.0) and boxes[0].hi_mm[0] == pytest.approx(56.0)
    assert boxes[1].lo_mm[2] == pytest.approx(5 + 8 - 2 - 8) and boxes[1].hi_mm[2] == pytest.approx(
        23.0
    )
    assert boxes[0].gate is None
    assert len(candidate_boxes(prob, grid, 0.1, 8.0, max_candidates=1)) == 1
    # with a gate: the region widened by 4 mm (one voxel), on a part of the coarse grid
    gated = candidate_boxes(prob, grid, 0.1, 8.0, 10, gate_mm=4.0)[1].gate
    assert gated is not None and gated.geometry.spacing_mm == grid.spacing_mm
    index = np.stack(np.indices(gated.geometry.shape), -1)
    on_grid = np.round(grid.world_to_index(gated.geometry.index_to_world(index))).astype(int)
    region = np.zeros(grid.shape, bool)
    region[2:4, 2:5, 2:3] = True
    near = ndimage.distance_transform_edt(~region, sampling=4.0) <= 4.0
    valid = np.all((on_grid >= 0) & (on_grid < 20), axis=-1)
    expected = np.zeros(gated.geometry.shape, bool)
    expected[valid] = near[tuple(on_grid[valid].T)]
    assert np.array_equal(gated.array > 0, expected) and expected.sum() > region.sum()
    assert candidate_boxes(prob, grid, 0.95, 8.0, 10) == []


def test_box_grid_covers_the_box_and_is_at_least_one_window() -> None:
    box = Box(np.array([0.0, 0.0, 0.0]), np.array([40.0, 10.0, 100.0]), 0.5)
    grid = box_grid(box, (2.0, 2.0, 2.0), (16, 16, 16))
    assert grid.shape == (20, 16, 50)
    lo, hi = grid.extent_mm()
    assert np.all(lo <= box.lo_mm + 1e-6) and np.all(hi >= box.hi_mm - 1e-6)


def test_fine_maps_replace_the_coarse_ones_inside_their_grid_only() -> None:
    # a target whose axes are permuted and flipped against the fine grid's
    direction = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    target = Geometry(
        shape=(30, 30, 10), spacing_mm=(2.0, 2.0, 3.0), origin_mm=(50, -20, 0), direction=direction
    )
    maps = np.full((2, *target.shape), -1.0, dtype=np.float32)
    fine = Geometry(shape=(10, 8, 6), spacing_mm=(1.0, 1.0, 1.0), origin_mm=(10.0, 12.0, 6.0))
    fine_maps = np.stack([np.full(fine.shape, 3.0), np.full(fine.shape, 4.0)]).astype(np.float32)
    paste_maps(maps, target, fine_maps, fine)
    centres = target.index_to_world(np.stack(np.indices(target.shape), -1))
    index = fine.world_to_index(centres)
    inside = np.all((index >= -0.5) & (index <= np.asarray(fine.shape) - 0.5), axis=-1)
    assert inside.sum() > 0
    assert np.all(maps[0][inside] == 3.0) and np.all(maps[1][inside] == 4.0)
    assert np.all(maps[:, ~inside] == -1.0)
    far = Geometry(shape=(4, 4, 4), origin_mm=(1000.0, 1000.0, 1000.0))
    paste_maps(maps, target, np.zeros((2, 4, 4, 4), np.float32), far)  # no overlap: no change
    assert np.all(maps[:, ~inside] == -1.0)


def test_fine_stage_entries_are_checked() -> None:
    assert FineStageSettings.from_card({"weights": "w"}, "card").candidate_threshold == 0.1
    with pytest.raises(CheckpointError, match="found margin, weights"):
        FineStageSettings.from_card({"weights": "w", "margin": 3}, "card")
    with pytest.raises(CheckpointError, match="candidate_threshold must be in"):
        FineStageSettings.from_card({"weights": "w", "candidate_threshold": 1.5}, "card")
    with pytest.raises(CheckpointError, match="gate_mm >= 0"):
        FineStageSettings.from_card({"weights": "w", "gate_mm": -1.0}, "card")
    assert FineStageSettings.from_card({"weights": "w", "gate_mm": None}, "c").gate_mm is None


def test_predictor_runs_the_fine_stage_its_card_names(tmp_path) -> None:
    from mefn.inference import Predictor

    coarse = make_tiny_weights(tmp_path)
    fine_dir = tmp_path / "fine"
    fine_dir.mkdir()
    shutil.copy(coarse, fine_dir / "fine.safetensors")
    card = json.loads(coarse.with_suffix(".json").read_text())
    card["preprocess"]["spacing_mm"] = [4.0, 4.0, 4.0]  # the fine grid
    card["patch_size_vox"] = [16, 16, 16]
    (fine_dir / "fine.json").write_text(json.dumps(card))
    case = tiny_case(tmp_path)
    alone = Predictor(coarse, device="cpu").predict(case, keep_extra=True)
    assert "fine_stage" not in alone.timings and alone.settings["fine_stage"] is None
    with pytest.raises(InputError, match="names no fine stage"):
        Predictor(coarse, device="cpu", fine_stage=True)

    coarse_card = json.loads(coarse.with_suffix(".json").read_text())
    coarse_card["fine_stage"] = {"weights": "fine/fine.safetensors", "candidate_threshold": 0.999}
    coarse.with_suffix(".json").write_text(json.dumps(coarse_card))
    none = Predictor(coarse, device="cpu").predict(case, keep_extra=True)  # no candidate
    assert none.settings["fine_stage"]["weights"] == str(fine_dir / "fine.safetensors")
    assert np.array_equal(none.probabilities, alone.probabilities)

    lesion_prob = 1.0 - alone.probabilities[0]
    low = float(np.quantile(lesion_prob, 0.5))
    cascade = Predictor(coarse, device="cpu", fine_stage={"candidate_threshold": low})
    pred = cascade.predict(case, keep_extra=True)
    assert pred.timings["fine_stage"] > 0.0
    assert not np.allclose(pred.probabilities, alone.probabilities)  # the fine maps came in
    assert np.allclose(pred.probabilities.sum(axis=0), 1.0, atol=1e-4)
    assert pred.mask.shape == case.target_geometry.shape
    assert Predictor(coarse, device="cpu", fine_stage=False).fine is None  # switched off


def test_segment_runs_the_cascade_and_no_fine_stage_switches_it_off(tmp_path) -> None:
    from support import ct_pet_pair

    from mefn.cli import main
    from mefn.io.sitk_bridge import write_volume

    coarse = make_tiny_weights(tmp_path)
    shutil.copy(coarse, tmp_path / "fine.safetensors")
    shutil.copy(coarse.with_suffix(".json"), tmp_path / "fine.json")
    card = json.loads(coarse.with_suffix(".json").read_text())
    card["fine_stage"] = {"weights": "fine.safetensors", "candidate_threshold": 0.01}
    coarse.with_suffix(".json").write_text(json.dumps(card))
    ct, pet = ct_pet_pair()
    write_volume(ct, tmp_path / "c_0000.nii.gz")
    write_volume(pet, tmp_path / "c_0001.nii.gz")
    base = ["-q", "segment", str(tmp_path / "c_0000.nii.gz"), "--model", str(coarse)]
    assert main([*base, "-o", str(tmp_path / "both")]) == 0
    report = json.loads((tmp_path / "both" / "c_report.json").read_text())
    assert report["settings"]["fine_stage"]["weights"] == str(tmp_path / "fine.safetensors")
    assert main([*base, "-o", str(tmp_path / "coarse"), "--no-fine-stage"]) == 0
    report = json.loads((tmp_path / "coarse" / "c_report.json").read_text())
    assert report["settings"]["fine_stage"] is None


def test_a_fine_stage_of_another_label_set_is_refused(tmp_path) -> None:
    from support import TINY_MODEL

    from mefn.inference import Predictor

    coarse = make_tiny_weights(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    make_tiny_weights(other, {**TINY_MODEL, "num_classes": 3})
    with pytest.raises(CheckpointError, match="has 3 classes"):
        Predictor(coarse, device="cpu", fine_stage={"weights": str(other / "tiny.safetensors")})
