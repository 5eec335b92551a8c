"""``mefn calibrate``: the post-processing of any weights chosen on labelled cases, written
into their card (atomically), and its refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support import make_tiny_weights

from mefn.calibration import (
    LESION_THRESHOLD_CANDIDATES,
    MIN_LESION_CANDIDATES_ML,
    PET_CHECK_CANDIDATES,
)
from mefn.cli import main
from mefn.confidence import (
    VOXEL_FEATURES,
    Calibrator,
    IsotonicMap,
    LesionConfidence,
    LogisticModel,
    VoxelErrorMap,
    trust_record,
)
from mefn.data.phantom_layouts import write_phantoms


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("val")
    write_phantoms(root, n=2, layout="nnunet", seed=5, small=True)
    return root


def test_calibrate_writes_the_choice_into_the_card(tmp_path, phantoms, capsys) -> None:
    weights = make_tiny_weights(_folder(tmp_path / "run"))
    card_path = weights.with_suffix(".json")
    before = json.loads(card_path.read_text())
    args = ["calibrate", str(weights), "--data", str(phantoms), "--tta", "x"]
    assert main([*args, "--tta-scales", "1,2"]) == 0
    out, err = capsys.readouterr()
    assert str(card_path) in out and "mean Dice" in out
    card = json.loads(card_path.read_text())
    record = card["calibration"]
    assert record["cases"] == 2 and record["data"] == str(phantoms.resolve())
    n = len(LESION_THRESHOLD_CANDIDATES) * len(PET_CHECK_CANDIDATES)
    assert len(record["scores"]) == n * len(MIN_LESION_CANDIDATES_ML)
    # what mefn segment reads, from the chosen setting
    assert card["tta_axes"] == [0] and card["tta_scales"] == record["tta_scales"] == [1.0, 2.0]
    assert card["lesion_threshold"] == record["lesion_threshold"]
    assert card["min_lesion_ml"] == record["min_lesion_ml"]
    assert card["pet_check"] == record["pet_check"]
    chosen = [
        r
        for r in record["scores"]
        if (r["lesion_threshold"], r["pet_check"], r["min_lesion_ml"])
        == (record["lesion_threshold"], record["pet_check_name"], record["min_lesion_ml"])
    ]
    assert len(chosen) == 1 and f"mean Dice {chosen[0]['mean_dice']:.3f}" in out
    # the rest of the card is kept, and no temporary file is left
    assert card["model"] == before["model"]
    assert sorted(p.name for p in card_path.parent.iterdir()) == sorted(
        [weights.name, card_path.name]
    )
    # the calibrated card loads for segmentation
    from mefn.inference import Predictor

    predictor = Predictor(weights)
    assert predictor.tta_axes == (0,) and predictor.tta_scales == (1.0, 2.0)
    # the untrained weights' lesions on these cases are both true and false: trust is fitted
    assert "lesion confidence fitted on" in out and "warning" not in err
    assert card["review_below"] == 0.5
    assert predictor.lesion_confidence is not None and predictor.voxel_error is not None
    fitted = card["lesion_confidence"]["fitted_on"]
    assert fitted["cases"] == 2 and fitted["lesions_true"] and fitted["lesions_false"]
    # the confidence floor, chosen on out-of-fold confidences among the candidates
    floors = [row["min_confidence"] for row in fitted["min_confidence_scores"]]
    assert card["min_confidence"] in floors and predictor.min_confidence == card["min_confidence"]


def test_calibrate_drops_a_stale_trust_calibration(tmp_path, phantoms, capsys) -> None:
    """A confidence model fitted for other post-processing must not survive a recalibration."""
    weights = make_tiny_weights(_folder(tmp_path / "run"))
    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    stale = LogisticModel(("p_max",), np.zeros(1), np.ones(1), np.ones(1), 0.0)
    iso = IsotonicMap(np.asarray([0.0, 1.0]), np.asarray([0.0, 1.0]))
    n = len(VOXEL_FEATURES)
    voxel = Calibrator(LogisticModel(VOXEL_FEATURES, np.zeros(n), np.ones(n), np.ones(n), 0.0), iso)
    old = trust_record(
        LesionConfidence(stale), VoxelErrorMap(voxel, voxel), {}, review_below=0.2,
        min_confidence=0.45,
    )  # fmt: skip
    card.update(old)
    card_path.write_text(json.dumps(card))
    assert main(["calibrate", str(weights), "--data", str(phantoms), "--max-cases", "1"]) == 0
    card = json.loads(card_path.read_text())
    assert card.get("lesion_confidence") != old["lesion_confidence"]
    assert card.get("voxel_error") != old["voxel_error"]
    if "lesion_confidence" not in card:  # one case may not have both kinds of lesion
        assert "not fitted" in capsys.readouterr().err
        assert "review_below" not in card and "min_confidence" not in card
    else:
        scores = card["lesion_confidence"]["fitted_on"]["min_confidence_scores"]
        assert card["min_confidence"] in [row["min_confidence"] for row in scores]  # not 0.45


def test_calibrate_refusals(tmp_path, phantoms, capsys) -> None:
    assert main(["calibrate", "default", "--data", str(phantoms)]) == 2
    err = capsys.readouterr().err
    assert "bundled model whose card is part of the package" in err and err.count("\n") == 1
    weights = make_tiny_weights(_folder(tmp_path / "run"))
    assert main(["calibrate", str(weights), "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["calibrate", str(weights), "--data", str(phantoms), "--max-cases", "0"]) == 2
    assert "--max-cases must be at least 1" in capsys.readouterr().err
    assert main(["calibrate", str(weights), "--data", str(phantoms), "--tta-scales", "2"]) == 2
    assert "1 among them" in capsys.readouterr().err
    empty = tmp_path / "empty"
    shutil.copytree(phantoms, empty)
    for label in (empty / "labelsTr").glob("*"):
        label.unlink()
    assert main(["calibrate", str(weights), "--data", str(empty)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
