"""pipelines/train_phantoms.py: the model-grid Dice ceiling and the reproduce command."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from support import load_pipeline

from mefn import calibration
from mefn.io.volume import Geometry, Volume

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "pipelines" / "train_phantoms.py"


@pytest.fixture(scope="module")
def tp() -> ModuleType:
    return load_pipeline(SCRIPT)


def _ball(radius_mm: float, spacing: float = 2.0, n: int = 40) -> Volume:
    geo = Geometry(shape=(n, n, n), spacing_mm=(spacing,) * 3, origin_mm=(-n * spacing / 2,) * 3)
    c = (np.arange(n) + 0.5) * spacing - n * spacing / 2
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    inside = (x**2 + y**2 + z**2) <= radius_mm**2
    return Volume(inside.astype(np.uint8), geo, modality="SEG", units="label")


def test_grid_ceiling_falls_with_lesion_size(tp: ModuleType) -> None:
    big = tp.grid_ceiling_dice(_ball(25.0), (4.0, 4.0, 4.0))
    small = tp.grid_ceiling_dice(_ball(3.0), (4.0, 4.0, 4.0))
    same_grid = tp.grid_ceiling_dice(_ball(3.0), (2.0, 2.0, 2.0))
    assert big > 0.95  # a 5 cm ball loses only its rim
    assert small < 0.5  # a 6 mm lesion is lost in 4 mm voxels: no coarse voxel half lesion
    assert same_grid == pytest.approx(1.0)  # no change of grid, nothing lost


def test_grid_ceiling_of_an_empty_label_is_nan(tp: ModuleType) -> None:
    empty = _ball(0.0)
    empty.array[:] = 0
    assert math.isnan(tp.grid_ceiling_dice(empty, (4.0, 4.0, 4.0)))


def test_reproduce_command_names_config_run_and_base(tp: ModuleType) -> None:
    default = str(REPO / "configs/train/phantoms_fast.yaml")
    assert tp.reproduce_command(default, str(REPO / "runs/x"), None) == (
        "python -m pipelines.train_phantoms"
    )
    cmd = tp.reproduce_command(
        str(REPO / "configs/train/phantoms_small_stage2.yaml"),
        str(REPO / "runs/phantoms_stage2"),
        "runs/phantoms_small/model.safetensors",
    )
    assert cmd == (
        "(after the run that wrote runs/phantoms_small/model.safetensors) python -m "
        "pipelines.train_phantoms --config configs/train/phantoms_small_stage2.yaml "
        "--run runs/phantoms_stage2"
    )
    # the bundled weights' first stage is no longer the default: named in full
    small = str(REPO / "configs/train/phantoms_small.yaml")
    assert tp.reproduce_command(small, str(REPO / "runs/phantoms_small"), None) == (
        "python -m pipelines.train_phantoms --config configs/train/phantoms_small.yaml "
        "--run runs/phantoms_small"
    )
    # a mirroring other than the default is part of the recipe
    assert tp.reproduce_command(default, str(REPO / "runs/x"), None, "none") == (
        "python -m pipelines.train_phantoms --tta none"
    )


def test_init_lineage_adds_the_parent_runs_training(tp: ModuleType, tmp_path: Path) -> None:
    grand = {"training": {"epochs": 10, "steps": 400, "seconds": 600.0, "stopped": "epochs"}}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.json").write_text(json.dumps(grand))
    (tmp_path / "a" / "model.safetensors").write_bytes(b"a")
    parent_training = {"epochs": 20, "steps": 800, "seconds": 1200.0, "stopped": "time_budget"}
    parent = {
        "training": parent_training,
        "validation": {"dice": 0.1, "epoch": 15},
        "init_from": tp.init_lineage(tmp_path / "a" / "model.safetensors", parent_training),
    }
    assert parent["init_from"]["total"] == {"steps": 1200, "seconds": 1800.0}
    assert "init_from" not in parent["init_from"]  # the first run had no init of its own
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model.json").write_text(json.dumps(parent))
    (tmp_path / "b" / "model.safetensors").write_bytes(b"b")
    mine = {"epochs": 5, "steps": 200, "seconds": 300.0}
    lineage = tp.init_lineage(tmp_path / "b" / "model.safetensors", mine)
    assert lineage["sha256"] == hashlib.sha256(b"b").hexdigest()
    assert lineage["validation"] == {"dice": 0.1, "epoch": 15}
    assert lineage["training"]["steps"] == 800
    # this run + the parent + what the parent's own init had cost
    assert lineage["total"] == {"steps": 200 + 800 + 400, "seconds": 300.0 + 1200.0 + 600.0}
    assert lineage["init_from"]["weights"].endswith("a/model.safetensors")


def test_postprocessing_choice_keeps_false_positives_within_the_target(tp: ModuleType) -> None:
    scores = {
        (None, "none", 0.0): {"mean_dice": 0.50, "mean_fpv_ml": 2.0},
        (0.3, "none", 0.0): {"mean_dice": 0.60, "mean_fpv_ml": 2.9},
        (0.3, "none", 1.0): {"mean_dice": 0.60, "mean_fpv_ml": 1.0},  # same Dice, fewer FP: chosen
        (0.1, "none", 0.0): {"mean_dice": 0.70, "mean_fpv_ml": 9.0},  # best Dice, too many FP
    }
    assert calibration.choose_postprocessing(scores) == (0.3, "none", 1.0)
    # the plain argmax is over the target: the limit is its own false-positive volume
    over = {k: {**v, "mean_fpv_ml": v["mean_fpv_ml"] + 5} for k, v in scores.items()}
    assert calibration.choose_postprocessing(over) == (0.3, "none", 1.0)
    over[0.1, "none", 0.0]["mean_fpv_ml"] = 7.0  # as many as the argmax's 7.0 mL: allowed
    assert calibration.choose_postprocessing(over) == (0.1, "none", 0.0)
    # a PET check is one more dimension of the same choice
    scores[0.3, "contrast", 0.0] = {"mean_dice": 0.65, "mean_fpv_ml": 0.5}
    assert calibration.choose_postprocessing(scores) == (0.3, "contrast", 0.0)


def test_postprocessing_choice_weighs_the_simple_phantoms_too(tp: ModuleType) -> None:
    scores = {
        (None, "none", 0.0): {"mean_dice": 0.36, "mean_fpv_ml": 2.0},
        (None, "none", 2.0): {"mean_dice": 0.37, "mean_fpv_ml": 1.2},  # best on validation alone
        (0.4, "none", 0.5): {"mean_dice": 0.40, "mean_fpv_ml": 4.1},  # over the limit on validation
    }
    simple = {
        (None, "none", 0.0): {"mean_dice": 0.56, "mean_fpv_ml": 0.0},  # a floor hides small lesions
        (None, "none", 2.0): {"mean_dice": 0.50, "mean_fpv_ml": 0.0},
        (0.4, "none", 0.5): {"mean_dice": 0.63, "mean_fpv_ml": 0.0},
    }
    assert calibration.choose_postprocessing(scores) == (None, "none", 2.0)
    assert calibration.choose_postprocessing(scores, simple) == (None, "none", 0.0)
    simple[None, "none", 0.0]["mean_fpv_ml"] = 3.5  # over 3 mL there: the limit is its own
    simple[None, "none", 2.0]["mean_fpv_ml"] = 3.6  # ... which this exceeds
    assert calibration.choose_postprocessing(scores, simple) == (None, "none", 0.0)


def test_settings_metrics_on_the_box_equal_the_whole_grid(tp: ModuleType) -> None:
    """The PET checks read SUV around each lesion and may grow it: the scoring box is wide
    enough that every setting scores as on the whole grid."""
    from scipy import ndimage

    from mefn.metrics.autopet import autopet_case_metrics
    from mefn.postprocess import (
        PetCheck,
        apply_pet_check,
        mask_from_probabilities,
        remove_small_components,
    )

    shape, spacing = (90, 80, 70), (2.0, 2.0, 3.0)
    truth = np.ones(shape, np.float32)
    ref = np.zeros(shape, bool)
    ref[40:50, 30:40, 30:36] = True  # a lesion of SUV 7
    truth[ref] = 7.0
    truth[60:90, :, :] = 4.0  # a hot organ
    suv = ndimage.gaussian_filter(truth, 1.5).astype(np.float32)
    lesion_p = np.zeros(shape, np.float32)
    lesion_p[42:48, 32:38, 31:35] = 0.8  # the network saw its core ...
    lesion_p[70:73, 10:13, 10:13] = 0.6  # ... and a false positive in the organ
    lesion_p[5:7, 5:7, 5:7] = 0.45  # ... and a faint one in the background
    prob = np.stack([1.0 - lesion_p, lesion_p])
    per_case: dict = {
        (t, n, v): []
        for t in calibration.LESION_THRESHOLD_CANDIDATES
        for n in calibration.PET_CHECK_CANDIDATES
        for v in calibration.MIN_LESION_CANDIDATES_ML
    }
    voxel_ml = 2.0 * 2.0 * 3.0 / 1000
    calibration._settings_metrics(
        prob, ref, np.zeros(shape), suv, spacing, voxel_ml, per_case, None
    )
    for (t, name, floor), got in per_case.items():
        mask = mask_from_probabilities(prob, 0, t)
        mask = apply_pet_check(
            mask, suv, spacing, PetCheck(**calibration.PET_CHECK_CANDIDATES[name])
        )
        mask = remove_small_components(mask, int(np.ceil(floor / voxel_ml)) if floor else 0)
        whole = autopet_case_metrics(ref.astype(np.uint8), mask, spacing, 2022)
        assert got[0].to_dict() == whole.to_dict(), (t, name, floor)
    refined = per_case[None, "refine40", 0.0][0]
    assert refined.dice > per_case[None, "none", 0.0][0].dice  # the core grew to the lesion


def test_foreground_box_keeps_every_metric(tp: ModuleType) -> None:
    from mefn.metrics.autopet import autopet_case_metrics

    ref = np.zeros((30, 31, 32), np.uint8)
    pred = np.zeros_like(ref)
    ref[5:9, 6:10, 7:9] = 1
    pred[6:10, 6:9, 7:9] = 1
    pred[20:22, 25:27, 30:32] = 1  # a false positive at the grid's edge
    box = calibration._foreground_box(ref, pred)
    whole = autopet_case_metrics(ref, pred, (2.0, 2.0, 3.0), 2022)
    cropped = autopet_case_metrics(ref[box], pred[box], (2.0, 2.0, 3.0), 2022)
    assert cropped.to_dict() == whole.to_dict()
    assert ref[box].size < ref.size
    empty = calibration._foreground_box(ref * 0, pred * 0)
    assert empty == (slice(0, 1),) * 3
    assert math.isnan(autopet_case_metrics(ref[empty], pred[empty], (2.0, 2.0, 3.0), 2022).dice)


def test_mean_scores_follow_the_autopet_2022_aggregation(tp: ModuleType) -> None:
    from mefn.metrics.autopet import autopet_case_metrics

    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:4, 2:4, 2:4] = 1
    pred = np.zeros_like(ref)
    pred[2:4, 2:4, 2:3] = 1
    pred[8, 8, 8] = 1  # a 1-voxel false positive
    empty = np.zeros_like(ref)
    spacing = (10.0, 10.0, 10.0)  # 1 mL voxels
    cases = [
        autopet_case_metrics(ref, pred, spacing, 2022),
        autopet_case_metrics(empty, empty, spacing, 2022),  # no lesion, none predicted
        autopet_case_metrics(empty, pred, spacing, 2022),  # no lesion, 5 mL predicted
    ]
    scores = calibration.mean_scores(cases)
    assert scores["mean_dice"] == pytest.approx(2 * 4 / (8 + 5))  # the case with lesions only
    assert scores["mean_fpv_ml"] == pytest.approx((1 + 0 + 5) / 3)  # every case
    assert scores["mean_fnv_ml"] == 0.0


@pytest.mark.slow  # a whole-body phantom: about 30 s
def test_evaluate_scores_fresh_phantoms_and_keeps_them_for_the_trust(tp, tmp_path) -> None:
    from support import make_tiny_weights

    trust = load_pipeline(REPO / "pipelines" / "trust_phantoms.py")
    weights = make_tiny_weights(tmp_path)
    keep = tmp_path / "keep"
    summary = tp.evaluate(weights, 1, tmp_path / "out", (), (2.0, 2.0, 2.0), keep)
    assert summary["n_cases"] == 1 and summary["tta_axes"] == []
    rows = json.loads((tmp_path / "out" / "test_phantoms.json").read_text())
    assert rows[0]["seed"] == tp.TEST_SEED0
    kept = trust.load_kept(keep / f"{tp.TEST_SEED0}.npz")
    assert kept.mask.shape == kept.reference.shape == kept.maps.suv.shape
    assert kept.maps.ct is not None and kept.maps.ct.shape == kept.mask.shape
    assert kept.reference.any()  # the first test phantom has lesions


def test_the_trust_test_stage_records_its_figures_in_the_card(tmp_path) -> None:
    trust = load_pipeline(REPO / "pipelines" / "trust_phantoms.py")
    card = tmp_path / "model.json"
    card.write_text(json.dumps({
        "reproduce": "python -m pipelines.eval_cascade --coarse-only",
        "test_fresh_phantoms": {"grid_ceiling_mean_dice": 0.85, "true_lesions_flagged": 0.5},
    }))  # fmt: skip
    result = {
        "cases": 2,
        "seeds": [10, 11],
        "min_confidence": 0.2,
        "segmentation": {"mean_dice": 0.3, "mean_fpv_ml": 4.0, "mean_fnv_ml": 3.0},
        "segmentation_as_kept": {"mean_dice": 0.25, "mean_fpv_ml": 14.0, "mean_fnv_ml": 3.0},
        "lesions": {"auroc": 0.9, "ece": 0.12},
        "voxels_near_lesions": {"ece": 0.2},
        "per_lesion": [{"true": True}, {"true": False}, {"true": False}],
    }
    trust.record_in_card(card, result, Path("work_data/w"))
    record = json.loads(card.read_text())
    fresh = record["test_fresh_phantoms"]
    assert fresh["mean_dice"] == 0.3 and fresh["without_floor"]["mean_fpv_ml"] == 14.0
    assert fresh["grid_ceiling_mean_dice"] == 0.85 and "true_lesions_flagged" not in fresh
    assert (fresh["true_lesions"], fresh["false_positive_lesions"]) == (1, 2)
    assert fresh["trust"]["lesion_auroc"] == 0.9 and fresh["trust"]["lesions"] == 3
    assert record["reproduce"].startswith("python -m pipelines.eval_cascade --coarse-only, then")
    trust.record_in_card(card, result, Path("work_data/w2"))  # the commands are added once
    reproduce = json.loads(card.read_text())["reproduce"]
    assert reproduce.count("trust_phantoms") == 1 and "work_data/w2" in reproduce
    assert "work_data/w " not in reproduce


def test_kept_cases_skip_files_still_being_written(tmp_path) -> None:
    trust = load_pipeline(REPO / "pipelines" / "trust_phantoms.py")
    folder = tmp_path / "val"
    folder.mkdir()
    for name in ("12.npz", "3.npz", ".13.npz.x1y2.tmp.npz"):  # the last: a predict stage writing
        (folder / name).write_bytes(b"")
    assert [p.name for p in trust._kept("val", tmp_path)] == ["3.npz", "12.npz"]
