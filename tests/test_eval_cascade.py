"""pipelines/eval_cascade.py: the cascade's run folder."""

from __future__ import annotations

import json
from pathlib import Path

from support import load_pipeline, make_tiny_weights

REPO = Path(__file__).resolve().parents[1]


def test_the_run_folder_holds_both_stages_and_none_of_the_coarse_choices(tmp_path) -> None:
    eval_cascade = load_pipeline(REPO / "pipelines" / "eval_cascade.py")
    from mefn.inference import Predictor

    fine = tmp_path / "fine"
    fine.mkdir()
    weights = make_tiny_weights(fine)
    weights.rename(fine / "model.safetensors")
    weights.with_suffix(".json").rename(fine / "model.json")
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
