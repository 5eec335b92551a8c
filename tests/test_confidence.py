"""Lesion confidence and voxel error map: the models, the evidence, the fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mefn.confidence import (
    LESION_FEATURES,
    EvidenceMaps,
    IsotonicMap,
    LesionConfidence,
    LogisticModel,
    TrustCase,
    VoxelErrorMap,
    fit_isotonic,
    fit_logistic,
    fit_trust,
    iter_lesions,
    lesion_evidence,
    lesion_truth,
    near_lesions,
    trust_from_card,
    trust_record,
    voxel_features,
)
from mefn.errors import CheckpointError, InputError


def test_logistic_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 2)) * [1.0, 3.0] + [0.5, -1.0]
    z = 0.7 + 1.5 * x[:, 0] - 0.4 * x[:, 1]
    y = rng.random(20000) < 1 / (1 + np.exp(-z))
    model = fit_logistic(x, y, ("a", "b"), l2=1e-6)
    # back to the raw features' scale
    coef = model.coef / model.scale
    intercept = model.intercept - float(np.sum(model.mean * coef))
    assert coef == pytest.approx([1.5, -0.4], abs=0.06)
    assert intercept == pytest.approx(0.7, abs=0.06)


def test_logistic_weights_equal_repeated_samples() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 1))
    y = (x[:, 0] + rng.normal(size=50)) > 0
    w = rng.integers(1, 4, size=50)
    weighted = fit_logistic(x, y, ("a",), l2=0.5, weights=w)
    repeated = fit_logistic(np.repeat(x, w, axis=0), np.repeat(y, w), ("a",), l2=0.5)
    probe = np.linspace(-2, 2, 7)[:, None]
    assert weighted.probability(probe) == pytest.approx(repeated.probability(probe), abs=1e-6)


def test_logistic_json_round_trip_and_refusals() -> None:
    model = LogisticModel(("a", "b"), np.zeros(2), np.ones(2), np.asarray([1.0, -2.0]), 0.3)
    again = LogisticModel.from_json(model.to_json())
    x = np.asarray([[0.1, 0.2], [1.0, -1.0]])
    assert again.probability(x) == pytest.approx(model.probability(x))
    with pytest.raises(CheckpointError, match="features"):
        LogisticModel.from_json({"features": ["a"], "mean": [0.0]})
    with pytest.raises(CheckpointError, match="lengths"):
        LogisticModel.from_json({**model.to_json(), "coef": [1.0]})


def test_isotonic_is_pool_adjacent_violators() -> None:
    iso = fit_isotonic(np.asarray([1.0, 2.0, 3.0, 4.0]), np.asarray([1.0, 0.0, 1.0, 1.0]))
    # (1, 2) pool to 0.5, flat over scores 1 to 2; then 1 at 3 and at 4
    assert iso.x.tolist() == [1.0, 2.0, 3.0, 3.0, 4.0, 4.0]
    assert iso.y.tolist() == [0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert iso(np.asarray([0.0, 1.5, 2.5, 9.0])).tolist() == [0.5, 0.5, 0.75, 1.0]
    assert IsotonicMap.from_json(iso.to_json()).y.tolist() == iso.y.tolist()
    with pytest.raises(CheckpointError, match="increasing"):
        IsotonicMap.from_json({"x": [2.0, 1.0], "y": [0.0, 1.0]})


def _maps(shape: tuple[int, int, int] = (30, 30, 30)) -> EvidenceMaps:
    suv = np.ones(shape, np.float32)
    suv[5:9, 5:9, 5:9] = 8.0  # hot cube: SUVmax 8 over a background of 1
    prob = np.zeros(shape, np.float32)
    prob[5:9, 5:9, 5:9] = 0.9
    u = np.full(shape, 0.01, np.float32)
    u[5:9, 5:9, 5:9] = 0.2
    u_ct = np.full(shape, 0.3, np.float32)
    u_pet = np.full(shape, 0.1, np.float32)
    ct = np.full(shape, 40.0, np.float32)  # soft tissue, but the hot cube is half fat,
    ct[5:7, 5:9, 5:9] = -100.0  # a quarter bone and a quarter air
    ct[7, 5:9, 5:9] = 400.0
    ct[8, 5:9, 5:9] = -800.0
    return EvidenceMaps(prob, u, suv, (2.0, 2.0, 2.0), u_ct, u_pet, ct)


def test_lesion_evidence_reads_the_lesion_and_its_surroundings() -> None:
    maps = _maps()
    mask = np.zeros((30, 30, 30), np.uint8)
    mask[5:9, 5:9, 5:9] = 1
    mask[20:22, 20:22, 20:22] = 1
    found = list(iter_lesions(mask))
    assert len(found) == 2
    _label, box, lesion = found[0]
    ev = lesion_evidence(box, lesion, maps)
    assert set(ev) == set(LESION_FEATURES)
    assert ev["log_volume_ml"] == pytest.approx(math.log(64 * 8 / 1000))
    assert ev["log_suv_max"] == pytest.approx(math.log(9.0))
    assert ev["log_contrast"] == pytest.approx(math.log(8.1 / 1.1))
    assert ev["p_mean"] == pytest.approx(0.9) and ev["p_max"] == pytest.approx(0.9)
    assert ev["log_u_mean"] == pytest.approx(math.log(0.2 + 1e-6), rel=1e-5)
    assert ev["log_modality_disagreement"] == pytest.approx(math.log(0.2 + 1e-6), rel=1e-5)
    assert ev["ct_fat_fraction"] == 0.5 and ev["ct_bone_fraction"] == 0.25
    assert ev["ct_air_fraction"] == 0.25
    assert lesion_evidence(found[1][1], found[1][2], maps)["ct_fat_fraction"] == 0.0
    no_opinions = EvidenceMaps(maps.lesion_probability, maps.uncertainty, maps.suv, (2, 2, 2))
    bare = lesion_evidence(box, lesion, no_opinions)
    assert "log_modality_disagreement" not in bare and "ct_fat_fraction" not in bare
    reference = np.zeros_like(mask)
    reference[8, 8, 8] = 1
    assert lesion_truth(box, lesion, reference)
    assert not lesion_truth(found[1][1], found[1][2], reference)


def test_near_lesions_reaches_ten_mm() -> None:
    mask = np.zeros((40, 3, 3), np.uint8)
    mask[0, 1, 1] = 1
    near = near_lesions(mask, np.zeros_like(mask), (2.0, 2.0, 2.0))
    assert near[5, 1, 1] and not near[6, 1, 1]


def _synthetic_cases(n: int, seed: int) -> list[TrustCase]:
    """Cases whose true lesions are hot and certain, and false ones cold and uncertain."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        shape = (24, 24, 24)
        mask = np.zeros(shape, np.uint8)
        ref = np.zeros(shape, np.uint8)
        suv = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        prob = np.full(shape, 0.02, np.float32)
        u = np.full(shape, 0.02, np.float32)
        for k, corner in enumerate((2, 14)):
            sl = (slice(corner, corner + 4),) * 3
            mask[sl] = 1
            is_true = rng.random() < 0.5 if k else True
            noisy = rng.random() < 0.2  # some evidence lies
            hot = is_true != noisy
            suv[sl] = rng.uniform(5, 9) if hot else rng.uniform(1.0, 2.0)
            prob[sl] = rng.uniform(0.8, 0.95) if hot else rng.uniform(0.5, 0.7)
            u[sl] = rng.uniform(0.01, 0.05) if hot else rng.uniform(0.1, 0.3)
            if is_true:
                ref[sl] = 1
                ref[corner + 4, corner : corner + 4, corner : corner + 4] = 1  # missed edge
        maps = EvidenceMaps(prob, u, suv, (4.0, 4.0, 4.0), u, u)
        cases.append(TrustCase(mask, ref, maps))
    return cases


def test_fit_trust_separates_and_calibrates_on_fresh_cases() -> None:
    from mefn.metrics.trust import lesion_trust, voxel_reliability_near_lesions

    lesion_model, voxel_model, summary = fit_trust(_synthetic_cases(60, 0), n_near=5000)
    assert summary["cases"] == 60
    assert summary["lesions_true"] + summary["lesions_false"] == 120
    conf, true = [], []
    rel = None
    for case in _synthetic_cases(60, 1):
        for _label, box, lesion in iter_lesions(case.mask):
            conf.append(lesion_model(lesion_evidence(box, lesion, case.maps)))
            true.append(lesion_truth(box, lesion, case.reference))
        err = voxel_model(case.mask, case.maps)
        assert err.dtype == np.float32 and err.shape == case.mask.shape
        assert err.min() >= 0.0 and err.max() <= 1.0
        r = voxel_reliability_near_lesions(err, case.mask, case.reference, (4.0, 4.0, 4.0))
        rel = r if rel is None else rel + r
    trust = lesion_trust(conf, true)
    # the evidence lies for a fifth of the lesions: about 0.8 is the best achievable
    assert trust["auroc"] > 0.7
    assert trust["ece"] < 0.15
    assert rel is not None and rel.ece < 0.05


def test_the_voxel_map_is_each_stratum_s_calibrator() -> None:
    from mefn.confidence import INSIDE_FEATURES, OUTSIDE_FEATURES

    _lesions, voxel_model, _ = fit_trust(_synthetic_cases(20, 4), n_near=2000)
    case = _synthetic_cases(1, 5)[0]
    inside = (case.mask != 0).ravel()
    expected = np.empty(case.mask.size)
    for where, calibrator, names in (
        (inside, voxel_model.inside, INSIDE_FEATURES),
        (~inside, voxel_model.outside, OUTSIDE_FEATURES),
    ):
        feats = voxel_features(case.mask, case.maps, names=names).astype(np.float64)
        expected[where] = calibrator(feats[where])
    # one float32 linear score over the shared columns, in chunks smaller than the grid
    err = voxel_model(case.mask, case.maps, chunk=1000)
    np.testing.assert_allclose(err.ravel(), expected, atol=1e-5)
    w, b = voxel_model.inside.model.folded(("edge_out", *INSIDE_FEATURES))
    assert w[0] == 0.0
    x = voxel_features(case.mask, case.maps, names=INSIDE_FEATURES).astype(np.float64)
    np.testing.assert_allclose(
        voxel_model.inside.model.probability(x[:50]), 1 / (1 + np.exp(-(x[:50] @ w[1:] + b)))
    )


def test_fit_trust_refuses_cases_with_one_kind_of_lesion() -> None:
    cases = [c for c in _synthetic_cases(8, 2)]
    only_true = [TrustCase(c.mask, c.mask, c.maps) for c in cases]
    with pytest.raises(InputError, match="both true and false"):
        fit_trust(only_true)


def test_trust_record_round_trips_through_a_card() -> None:
    lesion_model, voxel_model, summary = fit_trust(_synthetic_cases(20, 3), n_near=2000)
    card = trust_record(lesion_model, voxel_model, summary, review_below=0.4)
    les, vox, below = trust_from_card(card)
    assert isinstance(les, LesionConfidence) and isinstance(vox, VoxelErrorMap)
    assert below == 0.4
    assert trust_from_card({}) == (None, None, None)
    ev = {f: 0.0 for f in les.model.features}
    assert les(ev) == pytest.approx(lesion_model(ev))
    with pytest.raises(InputError, match="calibrate"):
        les({})


def test_lesion_outcomes_score_a_case_as_the_autopet_metrics_do() -> None:
    from mefn.confidence import lesion_outcomes
    from mefn.metrics.autopet import autopet_case_metrics

    rng = np.random.default_rng(5)
    for trial in range(6):
        shape = (20, 22, 18)
        ref = (rng.random(shape) > 0.97).astype(np.uint8)
        mask = (rng.random(shape) > 0.96).astype(np.uint8)
        if trial == 0:
            ref[:] = 0  # a case without lesions: Dice 0, FPV counted
        maps = EvidenceMaps(
            rng.random(shape).astype(np.float32),
            rng.uniform(0.01, 0.5, shape).astype(np.float32),
            rng.uniform(0.5, 5.0, shape).astype(np.float32),
            (2.0, 3.0, 4.0),
        )
        case = TrustCase(mask, ref, maps)
        found = lesion_outcomes(case)
        lesions = list(iter_lesions(mask))
        assert len(found.evidence) == len(lesions) == found.voxels.size
        assert list(found.true) == [lesion_truth(b, les, ref) for _l, b, les in lesions]
        drop = rng.random(len(lesions)) < 0.4
        kept = mask.copy()
        for (_label, box, lesion), gone in zip(lesions, drop):
            if gone:
                kept[box][lesion] = 0
        want = autopet_case_metrics(ref, kept, (2.0, 3.0, 4.0), 2022)
        got = found.metrics_without(drop)
        for key in ("fp_voxels", "fn_voxels", "reference_voxels", "predicted_voxels"):
            assert getattr(got, key) == getattr(want, key), key
        assert got.dice == pytest.approx(want.dice)
        assert got.fpv_ml == pytest.approx(want.fpv_ml)
        assert got.fnv_ml == pytest.approx(want.fnv_ml)


def test_out_of_fold_confidence_never_scores_a_case_with_its_own_lesions() -> None:
    from mefn.confidence import lesion_outcomes, out_of_fold_confidence

    cases = [lesion_outcomes(c) for c in _synthetic_cases(10, 6)]
    features = ["log_suv_max", "p_mean"]
    held_out = out_of_fold_confidence(cases, features, l2=1.0, folds=5)
    assert [h.size for h in held_out] == [c.voxels.size for c in cases]
    assert all(((h > 0) & (h < 1)).all() for h in held_out)
    # one case whose labels contradict its evidence: its held-out confidences follow the
    # others (hot is true), an in-sample fit with it alone would say the opposite
    liar = cases[0]
    flipped = type(liar)(**{**liar.__dict__, "true": ~liar.true})
    again = out_of_fold_confidence([flipped, *cases[1:]], features, l2=1.0, folds=10)
    assert np.allclose(again[0], out_of_fold_confidence(cases, features, 1.0, folds=10)[0])


def test_the_ct_features_are_kept_only_where_they_predict_better() -> None:
    from dataclasses import replace

    def with_ct(cases: list[TrustCase], informative: bool) -> list[TrustCase]:
        out = []
        for case in cases:
            ct = np.full(case.mask.shape, 40.0, np.float32)  # soft tissue
            if informative:  # the false lesions lie in fat, as brown fat does
                ct[(case.mask != 0) & (case.reference == 0)] = -100.0
            out.append(replace(case, maps=replace(case.maps, ct=ct)))
        return out

    cases = _synthetic_cases(40, 7)
    _l, _v, told = fit_trust(with_ct(cases, True), n_near=500, n_far=500)
    assert "ct_fat_fraction" in told["lesion_features"]
    losses = told["lesion_feature_sets_cv_log_loss"]
    assert losses["all"] < losses["without_ct"]
    _l, _v, plain = fit_trust(cases, n_near=500, n_far=500)  # no CT: one set
    assert set(plain["lesion_feature_sets_cv_log_loss"]) == {"all"}
    assert not set(plain["lesion_features"]) & {"ct_fat_fraction", "ct_bone_fraction"}
