"""mefn.metrics.scoring: the one predict-and-score loop, on hand-made predictions and a real
(tiny, untrained) Predictor."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mefn.errors import ConfigError, InputError
from mefn.inference import Prediction
from mefn.io.case import Case
from mefn.io.volume import Geometry, Volume
from mefn.metrics.autopet import aggregate_autopet, autopet_case_metrics
from mefn.metrics.calibration import calibration_counts
from mefn.metrics.scoring import (
    CalibrationPool,
    DiceCaseMetrics,
    aggregate_scores,
    reference_on_grid,
    score_cases,
)
from mefn.postprocess import LesionTable

SHAPE = (13, 11, 9)
GRID = Geometry(
    SHAPE, (2.0, 1.5, 3.0), (-10.0, 5.0, 20.0), (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
)


class FakePredictor:
    """Returns the mask it was given for each case, with stage timings; records the calls."""

    def __init__(self, masks: dict[str, np.ndarray]) -> None:
        self.masks = masks
        self.calls: list[tuple[str, bool]] = []

    def predict(self, case: Case, keep_extra: bool = False) -> Prediction:
        self.calls.append((case.case_id, keep_extra))
        mask = self.masks[case.case_id]
        unc = np.where(mask > 0, 0.6, 0.1).astype(np.float32)
        prob = np.stack([1.0 - 0.8 * (mask > 0), 0.8 * (mask > 0) + 0.0]).astype(np.float32)
        return Prediction(
            case_id=case.case_id,
            geometry=case.target_geometry,
            mask=mask,
            uncertainty=unc,
            suv=np.zeros(SHAPE, np.float32),
            lesions=LesionTable((), 0.0, 0.0, 0.3),
            probabilities=prob if keep_extra else None,
            seconds=1.5,
            timings={"network": 1.0, "resample": 0.25},
        )


def _case(case_id: str, label: np.ndarray | None, label_grid: Geometry = GRID) -> Case:
    image = Volume(np.zeros(SHAPE, np.float32), GRID)
    ref = None if label is None else Volume(label, label_grid, modality="SEG", units="label")
    return Case(case_id=case_id, ct=image, pet=image, label=ref)


def _masks() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros(SHAPE, np.uint8)
    ref[2:5, 2:5, 2:5] = 1  # 27 voxels, found in part
    ref[9:11, 7:9, 6:8] = 2  # 8 voxels of another class, missed
    pred = np.zeros(SHAPE, np.uint8)
    pred[3:5, 2:5, 2:5] = 1  # 18 voxels inside the first lesion
    pred[11, 0:3, 0] = 1  # 3 voxels touching nothing
    return ref, pred


def test_autopet_rows_match_the_metric_and_carry_the_timings() -> None:
    ref, pred = _masks()
    predictor = FakePredictor({"a": pred, "b": np.zeros(SHAPE, np.uint8)})
    loaded: list[str] = []

    def loader(case_id: str, label: np.ndarray):
        def load() -> Case:
            loaded.append(case_id)
            return _case(case_id, label)

        return load

    seen: list[tuple[int, str, list[str]]] = []
    scores = score_cases(
        predictor,
        [loader("a", ref), loader("b", np.zeros(SHAPE, np.uint8))],
        "autopet2022",
        detection=True,
        progress=lambda i, s: seen.append((i, s.case_id, list(loaded))),
    )
    # each case is read just before it is segmented (one at a time), without keep_extra
    assert seen == [(0, "a", ["a"]), (1, "b", ["a", "b"])]
    assert predictor.calls == [("a", False), ("b", False)]
    expected = autopet_case_metrics((ref > 0).astype(np.uint8), pred, GRID.spacing_mm, 2022, "a")
    assert scores[0].metrics == expected
    assert expected.dice == pytest.approx(2 * 18 / (35 + 21))
    assert expected.fpv_ml == pytest.approx(3 * 9e-3) and expected.fn_voxels == 8
    row = scores[0].row()
    assert row["case"] == "a" and row["dice"] == expected.dice and row["seconds"] == 1.5
    assert row["timings"] == {"network": 1.0, "resample": 0.25}
    assert (row["lesion_n_reference"], row["lesion_n_predicted"]) == (2, 2)
    assert row["lesion_detected_reference"] == 1 and row["lesion_false_positive_lesions"] == 1
    agg = aggregate_scores(scores)
    assert agg["metric"] == aggregate_autopet([s.metrics for s in scores], 2022)
    assert agg["metric"]["n_cases_with_lesions"] == 1
    assert agg["detection"]["n_reference"] == 2 and agg["detection"]["sensitivity"] == 0.5


def test_a_label_on_another_grid_is_put_on_the_prediction_grid() -> None:
    ref, pred = _masks()
    # the same label stored with i reversed: another grid, the same voxels in space
    flipped = Geometry(
        SHAPE,
        GRID.spacing_mm,
        tuple(GRID.index_to_world(np.array([SHAPE[0] - 1, 0, 0]))),
        (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0),  # GRID's first axis reversed
    )
    assert not flipped.same_grid(GRID)
    case = _case("a", np.ascontiguousarray(ref[::-1]), flipped)
    np.testing.assert_array_equal(reference_on_grid(case, GRID), ref)
    (score,) = score_cases(FakePredictor({"a": pred}), [case], "autopet2024")
    assert score.metrics == autopet_case_metrics(
        (ref > 0).astype(np.uint8), pred, GRID.spacing_mm, 2024, "a"
    )


def test_hecktor_and_plain_dice() -> None:
    ref, pred = _masks()
    pred = pred.copy()
    pred[9:11, 7:9, 6:7] = 2  # half of the GTVn
    (h,) = score_cases(FakePredictor({"a": pred}), [_case("a", ref)], "hecktor2022")
    assert h.metrics.dice_gtvp == pytest.approx(2 * 18 / (27 + 21))
    assert h.metrics.dice_gtvn == pytest.approx(2 * 4 / (8 + 4))
    assert h.metrics.reference_voxels == (27, 8) and h.metrics.predicted_voxels == (21, 4)
    assert h.metrics.vol_sum_gtvp == pytest.approx((27 + 21) * 9.0)  # mm3
    # GTVn absent from both: Dice 0 (the official rule), nothing to aggregate for it
    only_p = np.where(ref == 1, 1, 0).astype(np.uint8)
    (e,) = score_cases(FakePredictor({"b": only_p}), [_case("b", only_p)], "hecktor2022")
    assert (e.metrics.dice_gtvp, e.metrics.dice_gtvn) == (1.0, 0.0)
    agg = aggregate_scores([h, e])["metric"]
    assert agg["dscagg_gtvn"] == pytest.approx(2 * 4 / 12)
    (d,) = score_cases(FakePredictor({"a": pred}), [_case("a", ref)], "dice")
    assert d.metrics == DiceCaseMetrics("a", 2 * 22 / (35 + 25), 35, 25)
    empty = np.zeros(SHAPE, np.uint8)
    (n,) = score_cases(FakePredictor({"c": empty}), [_case("c", empty)], "dice")
    assert math.isnan(n.metrics.dice)
    dice_agg = aggregate_scores([d, n])["metric"]
    assert dice_agg["dice_mean"] == pytest.approx(d.metrics.dice)  # the NaN case left out


def test_calibration_pool_and_extra_fields() -> None:
    ref, pred = _masks()
    predictor = FakePredictor({"a": pred, "b": (ref > 0).astype(np.uint8)})
    cases = [_case("a", ref), _case("b", ref)]

    def near(reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return (reference > 0) | (mask > 0)

    pool = CalibrationPool({"all": None, "near": near})
    scores = score_cases(
        predictor,
        cases,
        None,
        calibration=pool,
        keep_extra=True,
        extra=lambda case, p, reference: {"classes": sorted(np.unique(reference).tolist())},
    )
    assert [s.metrics for s in scores] == [None, None]
    assert scores[0].extra == {"classes": [0, 1, 2]}  # the raw label, classes kept
    assert predictor.calls == [("a", True), ("b", True)]
    binary = (ref > 0).astype(np.uint8)
    preds = [predictor.predict(c, keep_extra=True) for c in cases]
    first = calibration_counts(binary, pred, preds[0].uncertainty, preds[0].probabilities)
    both = first + calibration_counts(
        binary, preds[1].mask, preds[1].uncertainty, preds[1].probabilities
    )
    assert pool.summary(1)["all"] == first.summary()
    assert pool.summary()["all"] == both.summary() == pool.summary(5)["all"]
    # wrong voxels of case a: 9 of the first lesion and the 8 of the second missed, 3 false
    assert pool.summary(1)["all"]["n_error_voxels"] == 9 + 8 + 3
    assert pool.summary()["near"]["n_voxels"] == int(near(ref, pred).sum() + (ref > 0).sum())
    assert aggregate_scores(scores)["metric"] is None


def test_real_predictor_rows_hold_its_stage_timings(tmp_path: Path) -> None:
    from support import make_tiny_weights

    from mefn.inference import Predictor

    rng = np.random.default_rng(0)
    grid = Geometry((33, 34, 35), (4.0, 4.5, 5.0), (-60.0, -70.0, 10.0))
    ct = Volume(rng.normal(0, 50, grid.shape).astype(np.float32), grid)
    pet = Volume(rng.random(grid.shape).astype(np.float32) * 3, grid)
    label = np.zeros(grid.shape, np.uint8)
    label[10:15, 10:15, 10:15] = 1
    case = Case("tiny", ct, pet, label=Volume(label, grid))
    predictor = Predictor(make_tiny_weights(tmp_path), device="cpu", tta_axes=())
    (score,) = score_cases(predictor, [case], "autopet2022")
    assert {"resample", "network", "to_output_grid", "lesion_table"} <= set(score.timings)
    assert all(s >= 0 for s in score.timings.values())
    assert sum(score.timings.values()) <= score.seconds + 0.05
    assert score.metrics.reference_voxels == 125


def test_errors_name_what_is_wrong() -> None:
    ref, pred = _masks()
    predictor = FakePredictor({"a": pred})
    with pytest.raises(ConfigError, match="unknown metric 'autopet2021'; expected one of"):
        score_cases(predictor, [_case("a", ref)], "autopet2021")
    with pytest.raises(InputError, match="case a has no reference label; scoring needs one"):
        score_cases(predictor, [_case("a", None)], "dice")
    # nothing needs the reference: an unlabelled case is segmented all the same
    (plain,) = score_cases(predictor, [_case("a", None)], None)
    assert plain.metrics is None and plain.timings == {"network": 1.0, "resample": 0.25}
    with pytest.raises(ConfigError, match="no scored cases to aggregate"):
        aggregate_scores([])
    a = score_cases(predictor, [_case("a", ref)], "dice")
    b = score_cases(predictor, [_case("a", ref)], "autopet2022")
    with pytest.raises(ConfigError, match=r"scores mix metrics \['autopet2022', 'dice'\]"):
        aggregate_scores(a + b)
    with pytest.raises(ConfigError, match="needs at least one region"):
        CalibrationPool({})
    pool = CalibrationPool()
    with pytest.raises(ConfigError, match="no case was added to the CalibrationPool"):
        pool.summary()
    score_cases(predictor, [_case("a", ref)], None, calibration=pool)
    with pytest.raises(ConfigError, match="n_cases must be at least 1, found 0"):
        pool.summary(0)
