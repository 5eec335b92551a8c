"""The confidence floor: chosen on out-of-fold confidences, by the AutoPET 2022 means."""

from __future__ import annotations

import numpy as np
import pytest

from mefn.calibration import (
    FPV_LIMIT_ML,
    MIN_CONFIDENCE_CANDIDATES,
    choose_min_confidence,
    fit_trust_record,
)
from mefn.confidence import LesionOutcomes


def _case(lesions: list[tuple[int, int]], reference: list[int]) -> LesionOutcomes:
    """Predicted lesions as (voxels, voxels inside reference component 0 or -1 for none)."""
    voxels = np.asarray([v for v, _ in lesions])
    touches = tuple(np.asarray([0]) if ref >= 0 else np.asarray([], int) for _, ref in lesions)
    overlap = np.asarray([v if ref >= 0 else 0 for v, ref in lesions])
    return LesionOutcomes(
        evidence=tuple({} for _ in lesions),
        true=overlap > 0,
        voxels=voxels,
        overlap=overlap,
        touches=touches,
        reference_voxels=np.asarray(reference),
        voxel_ml=1.0,
    )


def test_the_floor_removes_unconfident_false_lesions_and_keeps_true_ones() -> None:
    # two positive cases: a true lesion (confident) and a false one (not); one negative case
    # with a false lesion of 10 mL at confidence 0.12
    cases = [_case([(10, 0), (6, -1)], [10]), _case([(8, 0)], [8]), _case([(10, -1)], [])]
    conf = [np.asarray([0.9, 0.08]), np.asarray([0.35]), np.asarray([0.12])]
    floor, rows = choose_min_confidence(cases, conf)
    by_floor = {r["min_confidence"]: r for r in rows}
    assert [r["min_confidence"] for r in rows] == list(MIN_CONFIDENCE_CANDIDATES)
    assert by_floor[0.0]["mean_dice"] == pytest.approx((20 / 26 + 1.0) / 2)
    assert by_floor[0.0]["mean_fpv_ml"] == pytest.approx(16 / 3)
    # 0.1 drops the 6 mL false lesion; 0.15 also the negative case's 10 mL one (FPV 0);
    # 0.4 would drop the true 8 mL lesion too
    assert by_floor[0.1]["mean_dice"] == pytest.approx(1.0) and by_floor[0.1]["dropped"] == 1
    assert by_floor[0.15]["mean_fpv_ml"] == 0.0
    assert by_floor[0.4]["mean_dice"] == pytest.approx(0.5)
    assert by_floor[0.4]["mean_fnv_ml"] == pytest.approx(4.0)
    assert floor == 0.15  # the best Dice, then the smaller FPV, then the lower floor


def test_the_floor_does_not_buy_false_positive_volume_with_true_lesions() -> None:
    big_false = 3 * FPV_LIMIT_ML + 3  # one case's false lesion: mean FPV over 3 cases > limit
    cases = [_case([(10, 0)], [10]), _case([(10, 0)], [10]), _case([(int(big_false), -1)], [])]
    # the false lesion is more confident than one true lesion: removing it costs Dice
    conf = [np.asarray([0.9]), np.asarray([0.2]), np.asarray([0.3])]
    floor, rows = choose_min_confidence(cases, conf)
    by_floor = {r["min_confidence"]: r for r in rows}
    assert by_floor[0.4]["mean_fpv_ml"] == 0.0 and by_floor[0.4]["mean_dice"] == 0.5
    assert floor == 0.0  # Dice 1.0 with the false lesion rather than 0.5 without


def test_fit_trust_record_chooses_a_floor_on_held_out_lesions() -> None:
    from test_confidence import _synthetic_cases

    record = fit_trust_record(_synthetic_cases(30, 4), review_below=0.5)
    scores = record["lesion_confidence"]["fitted_on"]["min_confidence_scores"]
    assert record["min_confidence"] in MIN_CONFIDENCE_CANDIDATES
    assert len(scores) == len(MIN_CONFIDENCE_CANDIDATES)
    # the synthetic false lesions are mostly cold: a floor removes some of them
    assert record["min_confidence"] > 0
    chosen = next(s for s in scores if s["min_confidence"] == record["min_confidence"])
    assert chosen["mean_fpv_ml"] < scores[0]["mean_fpv_ml"]
    plain = fit_trust_record(_synthetic_cases(30, 4), review_below=0.5, floor=False)
    assert plain["min_confidence"] == 0.0
    assert "min_confidence_scores" not in plain["lesion_confidence"]["fitted_on"]
