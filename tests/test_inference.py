"""Predictor settings that the CLI tests do not reach directly."""

from __future__ import annotations

import SimpleITK as sitk
import torch
from support import make_tiny_weights

from mefn.inference import Predictor


def test_threads_limit_torch_and_simpleitk(tmp_path) -> None:
    before = torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    try:
        Predictor(make_tiny_weights(tmp_path), device="cpu", threads=1)
        assert torch.get_num_threads() == 1
        assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == 1
    finally:
        torch.set_num_threads(before[0])
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before[1])


def test_review_threshold_and_min_lesion_come_from_the_card(tmp_path) -> None:
    import json

    weights = make_tiny_weights(tmp_path)
    assert Predictor(weights, device="cpu").review_threshold == 0.3  # no calibration stored
    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["review_threshold"] = 0.0123
    card["min_lesion_ml"] = 2.0
    card_path.write_text(json.dumps(card))
    calibrated = Predictor(weights, device="cpu")
    assert calibrated.review_threshold == 0.0123 and calibrated.min_lesion_ml == 2.0
    chosen = Predictor(weights, device="cpu", review_threshold=0.5, min_lesion_ml=0.0)
    assert chosen.review_threshold == 0.5 and chosen.min_lesion_ml == 0.0
