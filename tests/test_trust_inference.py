"""A card's lesion confidence and voxel error map in segmentation: what the Predictor
delivers, what the files and the report say, how the review flag follows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support import make_tiny_weights

from mefn.confidence import (
    Calibrator,
    IsotonicMap,
    LesionConfidence,
    LogisticModel,
    VoxelErrorMap,
    trust_record,
)
from mefn.inference import UNCERTAINTY_CALIBRATED, UNCERTAINTY_EVIDENTIAL, Predictor


def _case():
    from mefn.data.phantoms import generate_study
    from mefn.io.case import Case

    study = generate_study(7, kind="wholebody", small=True)
    return Case(
        case_id="p7",
        ct=study.ct,
        pet=study.pet,
        label=study.label_pet,
        output_geometry=study.pet.geometry,
    )


def _trusted_weights(folder: Path, review_below: float = 0.5) -> Path:
    """Tiny weights whose card holds a hand-made lesion confidence (rising with SUVmax) and
    voxel error map (rising with the network's own error probability)."""
    weights = make_tiny_weights(folder)
    lesion = LesionConfidence(
        LogisticModel(("log_suv_max",), np.zeros(1), np.ones(1), np.asarray([2.0]), -3.0)
    )
    rising = Calibrator(
        LogisticModel(
            ("logit_network_error", "log_u"),
            np.zeros(2),
            np.ones(2),
            np.asarray([1.0, 0.0]),
            0.0,
        ),
        IsotonicMap(np.asarray([0.0, 1.0]), np.asarray([0.0, 0.8])),
    )
    voxel = VoxelErrorMap(rising, rising)
    summary = {"cases": 1, "lesions_true": 1, "lesions_false": 1, "lesion_l2": 1.0}
    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card.update(trust_record(lesion, voxel, summary, review_below=review_below))
    card["lesion_threshold"] = 0.3  # untrained weights: low enough to find lesions
    card_path.write_text(json.dumps(card))
    return weights


def test_a_trusted_card_gives_confidences_and_an_error_probability_map(tmp_path) -> None:
    case = _case()
    plain = Predictor(make_tiny_weights(_mk(tmp_path / "plain")), device="cpu")
    assert plain.lesion_confidence is None and not plain.calibrated
    predictor = Predictor(_trusted_weights(_mk(tmp_path / "trusted")), device="cpu")
    assert predictor.calibrated and predictor.review_below == 0.5
    pred = predictor.predict(case)
    assert pred.evidential_u is not None
    assert pred.uncertainty.dtype == np.float32
    assert float(pred.uncertainty.min()) >= 0.0 and float(pred.uncertainty.max()) <= 0.8
    lesions = pred.lesions.lesions
    assert lesions, "the low lesion threshold should find lesions"
    for lesion in lesions:
        assert lesion.confidence is not None and 0.0 < lesion.confidence < 1.0
        expected = 1 / (1 + np.exp(3.0 - 2.0 * np.log(lesion.suv_max + 1.0)))
        assert lesion.confidence == pytest.approx(expected, rel=1e-4)
        assert lesion.review == (lesion.confidence < 0.5)
    report = pred.report(case)
    assert report["uncertainty"]["map"] == UNCERTAINTY_CALIBRATED
    assert report["review_below"] == 0.5 and report["review_rule"] == "confidence below 50%"
    assert report["settings"]["calibrated_uncertainty"] is True
    assert report["settings"]["review_below"] == 0.5
    assert all("confidence" in les for les in report["lesions"])
    # --review-below moves the flag, not the confidences
    strict = Predictor(predictor.weights_path, device="cpu", review_below=0.99).predict(case)
    assert [les.confidence for les in strict.lesions.lesions] == [les.confidence for les in lesions]
    assert all(les.review for les in strict.lesions.lesions)


def test_without_trust_the_map_is_the_evidential_u(tmp_path) -> None:
    pred = Predictor(make_tiny_weights(tmp_path), device="cpu").predict(_case())
    assert pred.evidential_u is None
    report = pred.report()
    assert report["uncertainty"]["map"] == UNCERTAINTY_EVIDENTIAL
    assert report["review_below"] is None and report["review_rule"].startswith("mean u >= ")
    assert report["settings"]["calibrated_uncertainty"] is False
    assert report["settings"]["review_below"] is None
    assert all(les["confidence"] is None for les in report["lesions"])


def test_extra_outputs_name_the_raw_evidential_u(tmp_path) -> None:
    from mefn.outputs import save_prediction

    case = _case()
    pred = Predictor(_trusted_weights(_mk(tmp_path / "w")), device="cpu").predict(
        case, keep_extra=True
    )
    paths = save_prediction(pred, tmp_path / "out", case, extra=True)
    assert paths["evidential_u"].name == "p7_evidential_u.nii.gz"
    from mefn.io.readers import read_volume

    raw = read_volume(paths["evidential_u"]).array
    assert pred.evidential_u is not None
    assert np.allclose(raw, pred.evidential_u)
    assert not np.allclose(read_volume(paths["uncertainty"]).array, raw)


def test_review_below_must_be_a_probability(tmp_path) -> None:
    from mefn.errors import InputError

    with pytest.raises(InputError, match="review_below must be a probability"):
        Predictor(make_tiny_weights(tmp_path), device="cpu", review_below=1.5)


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_tables_name_the_calibrated_map_and_show_confidences(tmp_path) -> None:
    from mefn import viz

    pred = Predictor(_trusted_weights(_mk(tmp_path / "w")), device="cpu").predict(_case())
    text = viz.format_lesion_table(pred.lesions)
    assert "p wrong mean" in text and "confidence" in text and "%" in text
    assert "confidence below 50% flagged for review" in text
    plain = Predictor(make_tiny_weights(_mk(tmp_path / "p")), device="cpu").predict(_case())
    assert viz.lesion_columns(plain.lesions) == viz.LESION_COLUMNS
    # the figure's table: long names on two lines, columns sized to their text, the axes' width
    fig = viz.plot_lesion_table(pred.lesions)
    drawn = fig.axes[0].tables[0]
    header = [drawn[0, c].get_text().get_text() for c in range(len(viz.LESION_COLUMNS))]
    assert "p wrong\nmean" in header and "confidence" in header
    widths = [drawn[0, c].get_width() for c in range(len(header))]
    assert sum(widths) == pytest.approx(1.0)
    assert widths[header.index("confidence")] > widths[header.index("#")]


def test_a_confidence_floor_removes_lesions_and_the_report_lists_them(tmp_path) -> None:
    case = _case()
    weights = _trusted_weights(_mk(tmp_path / "w"))
    everything = Predictor(weights, device="cpu").predict(case)
    found = everything.lesions.lesions
    assert found and everything.dropped == ()
    # a floor above the most confident lesion removes every lesion (the untrained weights
    # find a single one on this case), one below the least confident none
    top = max(les.confidence or 0.0 for les in found)
    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["min_confidence"] = floor = min(0.99, top + 0.05)
    card_path.write_text(json.dumps(card))
    predictor = Predictor(weights, device="cpu")
    assert predictor.min_confidence == floor
    pred = predictor.predict(case)
    assert pred.lesions.lesions == () and not pred.mask.any()
    assert len(pred.dropped) == len(found)
    assert sorted(d.volume_ml for d in pred.dropped) == pytest.approx(
        sorted(les.volume_ml for les in found)
    )
    assert [d.confidence for d in pred.dropped] == pytest.approx([les.confidence for les in found])
    report = pred.report(case)
    assert report["settings"]["min_confidence"] == floor
    assert report["n_dropped"] == len(found) == len(report["dropped_lesions"])
    low = min(les.confidence or 0.0 for les in found) - 0.01
    assert Predictor(weights, device="cpu", min_confidence=low).predict(case).dropped == ()
    assert Predictor(weights, device="cpu", min_confidence=0.0).predict(case).dropped == ()
    # weights without a lesion confidence model have no floor, whatever their card says
    plain = make_tiny_weights(_mk(tmp_path / "plain"))
    plain_card = json.loads(plain.with_suffix(".json").read_text())
    plain.with_suffix(".json").write_text(json.dumps({**plain_card, "min_confidence": 0.9}))
    assert Predictor(plain, device="cpu").min_confidence == 0.0


def test_the_base_cards_confidence_levels_do_not_reach_an_adapters_model(tmp_path) -> None:
    from support import TINY_MODEL

    from mefn.adapters import AdapterConfig, inject_adapters, save_adapter
    from mefn.config import from_dict
    from mefn.fileutil import file_sha256
    from mefn.model import ModelConfig, build_model

    weights = _trusted_weights(_mk(tmp_path / "w"))
    card_path = weights.with_suffix(".json")
    card_path.write_text(
        json.dumps(
            {**json.loads(card_path.read_text()), "min_confidence": 0.4, "review_below": 0.3}
        )
    )
    net = build_model(from_dict(ModelConfig, TINY_MODEL))
    inject_adapters(net, from_dict(AdapterConfig, {"type": "bottleneck"}))
    adapter = save_adapter(net, tmp_path / "adapter", base_model_hash=file_sha256(weights))
    # the adapter brings a confidence model of its own, fitted without a floor
    base_card = json.loads(card_path.read_text())
    (adapter / "card.json").write_text(
        json.dumps({k: base_card[k] for k in ("lesion_confidence", "voxel_error")})
    )
    base = Predictor(weights, device="cpu")
    assert base.min_confidence == 0.4 and base.review_below == 0.3
    tuned = Predictor(weights, adapter=adapter, device="cpu")
    assert tuned.lesion_confidence is not None and tuned.min_confidence == 0.0
    assert tuned.review_below == 0.5  # the default, not the base card's level
    (adapter / "card.json").write_text(
        json.dumps({**json.loads((adapter / "card.json").read_text()),
                    "postprocess": {"min_confidence": 0.2}})
    )  # fmt: skip
    assert Predictor(weights, adapter=adapter, device="cpu").min_confidence == 0.2
    assert (
        Predictor(weights, adapter=adapter, device="cpu", min_confidence=0.3).min_confidence == 0.3
    )


def test_a_confidence_model_that_reads_the_ct_gets_it_on_the_output_grid(tmp_path) -> None:
    from mefn.confidence import CT_FEATURES, EvidenceMaps, lesion_evidence
    from mefn.inference import ct_on_grid

    case = _case()
    weights = _trusted_weights(_mk(tmp_path / "w"))
    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    model = LogisticModel(CT_FEATURES, np.zeros(3), np.ones(3), np.asarray([-3.0, 1.0, 2.0]), 0.5)
    card["lesion_confidence"] = {**LesionConfidence(model).to_json(), "fitted_on": {}}
    card_path.write_text(json.dumps(card))
    pred = Predictor(weights, device="cpu").predict(case, keep_extra=True)
    assert "ct" in pred.timings and pred.lesions.lesions
    ct = ct_on_grid(case, pred.geometry)
    assert ct.shape == pred.mask.shape and ct.dtype == np.float32
    maps = EvidenceMaps(pred.suv, pred.suv, pred.suv, pred.geometry.spacing_mm, ct=ct)
    from mefn.confidence import iter_lesions

    expected = sorted(
        LesionConfidence(model)(lesion_evidence(box, les, maps))
        for _l, box, les in iter_lesions(pred.mask)
    )
    assert sorted(les.confidence or 0.0 for les in pred.lesions.lesions) == pytest.approx(expected)
    # a model without CT features does not pay for the CT
    plain = Predictor(_trusted_weights(_mk(tmp_path / "p")), device="cpu").predict(case)
    assert "ct" not in plain.timings
