"""pipelines/eval_cascade.py: the cascade's run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import load_pipeline, make_tiny_weights

REPO = Path(__file__).resolve().parents[1]


def _fine_campaign(tmp_path: Path) -> Path:
    """A folder holding weights as a finished train_fine campaign does."""
    fine = tmp_path / "fine"
    fine.mkdir()
    weights = make_tiny_weights(fine)
    weights.rename(fine / "model.safetensors")
    weights.with_suffix(".json").rename(fine / "model.json")
    return fine


def test_the_run_folder_holds_both_stages_and_none_of_the_coarse_choices(tmp_path) -> None:
    eval_cascade = load_pipeline(REPO / "pipelines" / "eval_cascade.py")
    from mefn.inference import Predictor

    fine = _fine_campaign(tmp_path)
    run = tmp_path / "run"
    eval_cascade.assemble(run, fine, {"candidate_threshold": 0.2, "margin_mm": 8.0})
    card = json.loads((run / "model.json").read_text())
    assert card["fine_stage"] == {
        "weights": "fine.safetensors", "candidate_threshold": 0.2, "margin_mm": 8.0
    }  # fmt: skip
    assert not set(eval_cascade.COARSE_ONLY_KEYS) & set(card)
    predictor = Predictor(run, device="cpu")
    assert predictor.fine is not None and predictor.tta_axes == ()
    assert predictor.fine.weights_path == run / "fine.safetensors"
    eval_cascade.assemble(tmp_path / "coarse", None, {})
    assert Predictor(tmp_path / "coarse", device="cpu").fine is None


def test_install_bundles_the_fine_stage_and_the_cascade_choices(tmp_path) -> None:
    eval_cascade = load_pipeline(REPO / "pipelines" / "eval_cascade.py")
    from mefn.inference import Predictor

    fine = _fine_campaign(tmp_path)
    run = tmp_path / "run"
    eval_cascade.assemble(run, fine, {"candidate_threshold": 0.2})
    with pytest.raises(SystemExit, match="no scored cascade"):
        eval_cascade.install(run, tmp_path / "weights")
    card = json.loads((run / "model.json").read_text())
    card.update(
        {"test_fresh_phantoms": {"mean_dice": 0.5}, "lesion_threshold": 0.3, "reproduce": "b"}
    )
    (run / "model.json").write_text(json.dumps(card))
    bundled = tmp_path / "weights"
    bundled.mkdir()
    (bundled / "mefn_default.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    old = json.loads((run / "model.json").read_text())
    old.pop("fine_stage")
    old.update({"tta_axes": [0, 1, 2], "lesion_confidence": {"kind": "x"}, "reproduce": "a"})
    (bundled / "mefn_default.json").write_text(json.dumps(old))
    eval_cascade.install(run, bundled)
    card = json.loads((bundled / "mefn_default.json").read_text())
    assert card["fine_stage"]["weights"] == eval_cascade.STAGE_FILE
    assert card["lesion_threshold"] == 0.3 and "lesion_confidence" not in card
    assert "tta_axes" not in card and card["reproduce"] == "coarse stage: a; cascade: b"
    assert (bundled / eval_cascade.STAGE_FILE).with_suffix(".json").is_file()
    predictor = Predictor(bundled / "mefn_default.safetensors", device="cpu")
    assert predictor.fine is not None and predictor.tta_axes == ()


def test_install_bundles_a_coarse_run_with_its_trust(tmp_path) -> None:
    eval_cascade = load_pipeline(REPO / "pipelines" / "eval_cascade.py")
    from mefn.inference import Predictor

    fine = _fine_campaign(tmp_path)
    run = tmp_path / "run"
    eval_cascade.assemble(run, fine, {})
    card = json.loads((run / "model.json").read_text())
    card.pop("fine_stage")
    card.update({"test_fresh_phantoms": {"mean_dice": 0.3}, "tta_axes": [], "reproduce": "b",
                 "min_confidence": 0.2, "review_below": 0.4})  # fmt: skip
    (run / "model.json").write_text(json.dumps(card))
    bundled = tmp_path / "weights"
    bundled.mkdir()
    (bundled / "mefn_default.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    old = {**card, "tta_axes": [0, 1, 2], "min_confidence": 0.5, "reproduce": "a"}
    (bundled / "mefn_default.json").write_text(json.dumps(old))
    eval_cascade.install(run, bundled)
    card = json.loads((bundled / "mefn_default.json").read_text())
    assert "fine_stage" not in card and not (bundled / eval_cascade.STAGE_FILE).exists()
    assert card["tta_axes"] == [] and card["min_confidence"] == 0.2
    assert card["reproduce"] == "coarse stage: a; post-processing and trust: b"
    assert Predictor(bundled / "mefn_default.safetensors", device="cpu").tta_axes == ()
