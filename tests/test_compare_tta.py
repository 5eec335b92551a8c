"""pipelines/compare_tta.py on real (small) phantoms with a real untrained model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from support import load_pipeline, make_tiny_weights, tiny_phantom_config

SCRIPT = Path(__file__).resolve().parents[1] / "pipelines" / "compare_tta.py"


def test_scores_each_mirroring_on_the_validation_split(tmp_path, monkeypatch) -> None:
    config = tiny_phantom_config(tmp_path)
    weights = make_tiny_weights(tmp_path)
    out = tmp_path / "out"
    argv = ["compare_tta.py", "--model", str(weights), "--config", str(config)]
    argv += ["--tta", "none,x", "-o", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    assert load_pipeline(SCRIPT).main() == 0
    result = json.loads((out / "tta.json").read_text())
    assert set(result["summary"]) == {"none", "x"}
    for name in ("none", "x"):
        val = result["summary"][name]["val"]
        rows = result["cases"][name]["val"]
        lesions = [r for r in rows if r["reference_voxels"] > 0]
        assert val["cases"] == len(rows) >= 1 and val["with_lesions"] == len(lesions)
        if lesions:
            dice = sum(r["dice"] for r in lesions) / len(lesions)
            assert val["mean_dice"] == pytest.approx(dice)
        assert val["mean_fpv_ml"] == pytest.approx(sum(r["fpv_ml"] for r in rows) / len(rows))
    # named by split and case id, the same cases under both settings, in the same order
    assert all(r["case"].startswith("val:") for r in result["cases"]["none"]["val"])
    assert [r["case"] for r in result["cases"]["x"]["val"]] == [
        r["case"] for r in result["cases"]["none"]["val"]
    ]


def test_unknown_setting_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["compare_tta.py", "--tta", "none,w"])
    with pytest.raises(SystemExit, match="--tta: test-time mirroring expects axis letters"):
        load_pipeline(SCRIPT).main()
