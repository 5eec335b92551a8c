"""Predictor settings that the CLI tests do not reach directly."""

from __future__ import annotations

import SimpleITK as sitk
import torch
from support import make_tiny_weights, tiny_case

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


def test_review_threshold_min_lesion_and_mirroring_come_from_the_card(tmp_path) -> None:
    import json

    weights = make_tiny_weights(tmp_path)
    uncalibrated = Predictor(weights, device="cpu")  # no calibration stored
    assert uncalibrated.review_threshold == 0.3 and uncalibrated.tta_axes == ()
    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["review_threshold"] = 0.0123
    card["min_lesion_ml"] = 2.0
    card["tta_axes"] = [2, 0]
    card_path.write_text(json.dumps(card))
    calibrated = Predictor(weights, device="cpu")
    assert calibrated.review_threshold == 0.0123 and calibrated.min_lesion_ml == 2.0
    assert calibrated.tta_axes == (0, 2)
    chosen = Predictor(weights, device="cpu", review_threshold=0.5, min_lesion_ml=0.0, tta_axes=())
    assert chosen.review_threshold == 0.5 and chosen.min_lesion_ml == 0.0
    assert chosen.tta_axes == ()


def test_tta_averages_the_mirrored_passes_mapped_back(tmp_path) -> None:
    """With tta_axes, each output is the mean over every mirroring, each flipped back, so a
    mirrored case gets the mirrored maps (the plain pass alone is not mirror-symmetric)."""
    import numpy as np

    weights = make_tiny_weights(tmp_path)
    rng = np.random.default_rng(3)
    image = rng.normal(0.0, 1.0, (2, 40, 36, 44)).astype(np.float32)
    plain = Predictor(weights, device="cpu")
    assert plain.settings()["tta_axes"] == []
    tta = Predictor(weights, device="cpu", tta_axes=(2, 0))
    assert tta.tta_axes == (0, 2)
    got = tta.predict_model_space(image)
    expected = {k: np.zeros_like(v) for k, v in plain.predict_model_space(image).items()}
    for axes in ((), (1,), (3,), (1, 3)):  # array axes of x and z in (channel, x, y, z)
        out = plain.predict_model_space(np.flip(image, axes) if axes else image)
        for k, v in out.items():
            expected[k] += (np.flip(v, axes) if axes else v) / 4
    assert set(got) == set(expected)
    for k in got:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6)
    mirrored = tta.predict_model_space(np.ascontiguousarray(image[:, ::-1]))
    np.testing.assert_allclose(mirrored["prob"], got["prob"][:, ::-1], rtol=1e-4, atol=1e-6)
    assert not np.allclose(
        plain.predict_model_space(np.ascontiguousarray(image[:, ::-1]))["prob"],
        plain.predict_model_space(image)["prob"][:, ::-1],
        atol=1e-4,
    )


def test_tta_scales_give_each_voxel_the_maps_of_its_most_lesion_like_scale(tmp_path) -> None:
    """Each voxel of the model grid takes every map of the scale with the lower p(background):
    with constant maps per scale, the coarse scale's where it is more lesion-like, the
    model grid's where it is not; with a real network, never a lower lesion probability."""
    import numpy as np

    weights = make_tiny_weights(tmp_path)
    case = tiny_case(tmp_path)

    def constant(p_background: dict[int, float], u: dict[int, float]):
        calls: list[int] = []

        def fake(image, keys=None):  # the model grid first, then the coarser one
            scale = 1 if not calls else 2
            calls.append(scale)
            shape = image.shape[1:]
            lesion = 1 - np.full(shape, p_background[scale])
            maps = {
                "prob": np.stack([1 - lesion, lesion]).astype(np.float32),
                "uncertainty": np.full((1, *shape), u[scale], np.float32),
            }
            return {k: v for k, v in maps.items() if keys is None or k in keys}

        return fake

    both = Predictor(weights, device="cpu", tta_scales=(2.0, 1.0))
    assert both.tta_scales == (1.0, 2.0) and both.settings()["tta_scales"] == [1.0, 2.0]
    both.predict_model_space = constant({1: 0.9, 2: 0.2}, {1: 0.1, 2: 0.7})  # type: ignore[method-assign]
    pred = both.predict(case, keep_extra=True)
    assert pred.probabilities is not None
    np.testing.assert_allclose(pred.probabilities[1], 0.8, atol=1e-5)  # the coarse scale's
    np.testing.assert_allclose(pred.uncertainty, 0.7, atol=1e-5)  # the tiny card: raw u
    both.predict_model_space = constant({1: 0.3, 2: 0.6}, {1: 0.1, 2: 0.7})  # type: ignore[method-assign]
    pred = both.predict(case, keep_extra=True)
    assert pred.probabilities is not None
    np.testing.assert_allclose(pred.probabilities[1], 0.7, atol=1e-5)  # the model grid's
    np.testing.assert_allclose(pred.uncertainty, 0.1, atol=1e-5)

    plain = Predictor(weights, device="cpu").predict(case, keep_extra=True)
    scaled = Predictor(weights, device="cpu", tta_scales=(1.0, 2.0)).predict(case, keep_extra=True)
    assert plain.probabilities is not None and scaled.probabilities is not None
    gain = plain.probabilities[0] - scaled.probabilities[0]  # p(background) can only drop
    assert gain.min() > -1e-5 and gain.max() > 1e-3


def test_a_case_smaller_than_one_size_divisor_on_every_axis_is_segmented(tmp_path) -> None:
    """The window grows to two divisors along one axis: one divisor everywhere would leave a
    single voxel to instance normalisation, which raises."""
    import numpy as np

    predictor = Predictor(make_tiny_weights(tmp_path), device="cpu")
    image = np.random.default_rng(0).normal(0, 1, (2, 3, 2, 2)).astype(np.float32)
    out = predictor.predict_model_space(image)
    assert out["prob"].shape == (2, 3, 2, 2)
    np.testing.assert_allclose(out["prob"].sum(axis=0), 1.0, atol=1e-5)


def test_tta_scales_parse_and_refuse(tmp_path) -> None:
    import pytest

    from mefn.errors import InputError
    from mefn.inference import parse_tta_scales

    assert parse_tta_scales("1,1.5,2") == parse_tta_scales(" 2, 1.5,1,1 ") == (1.0, 1.5, 2.0)
    assert parse_tta_scales("1") == (1.0,)
    for bad in ("1,x", "1.5,2", "1,0.5", "1,9", "", "1,nan"):
        with pytest.raises(InputError, match="tta_scales expects|test-time scales expect"):
            parse_tta_scales(bad)
    with pytest.raises(InputError, match="1 among them"):
        Predictor(make_tiny_weights(tmp_path), device="cpu", tta_scales=(2.0,))


def test_tta_axes_outside_xyz_are_refused(tmp_path) -> None:
    import pytest

    from mefn.errors import InputError

    with pytest.raises(InputError, match="tta_axes must be among 0, 1, 2"):
        Predictor(make_tiny_weights(tmp_path), device="cpu", tta_axes=(3,))


def test_tta_letters() -> None:
    import pytest

    from mefn.errors import InputError
    from mefn.inference import parse_tta_axes

    assert parse_tta_axes("xyz") == (0, 1, 2)
    assert parse_tta_axes(" ZX ") == (2, 0)
    assert parse_tta_axes("none") == parse_tta_axes("") == ()
    for bad in ("xw", "xx", "0"):
        with pytest.raises(InputError, match="axis letters among x, y and z"):
            parse_tta_axes(bad)


def test_pet_check_comes_from_the_card_and_can_be_overridden(tmp_path) -> None:
    import json

    import pytest

    from mefn.errors import CheckpointError, InputError
    from mefn.postprocess import PetCheck

    weights = make_tiny_weights(tmp_path)
    assert Predictor(weights, device="cpu").pet_check == PetCheck()  # no card entry: none
    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["pet_check"] = {"min_suv": 1.0, "min_contrast": 2.0, "refine_fraction": 0.4}
    card_path.write_text(json.dumps(card))
    from_card = Predictor(weights, device="cpu")
    assert from_card.pet_check == PetCheck(1.0, 2.0, 0.4, 8.0)
    assert from_card.settings()["pet_check"]["refine_fraction"] == 0.4
    # a dict replaces only the fields it names; a PetCheck replaces the card's
    partial = Predictor(weights, device="cpu", pet_check={"refine_fraction": None})
    assert partial.pet_check == PetCheck(1.0, 2.0, None, 8.0)
    assert Predictor(weights, device="cpu", pet_check=PetCheck()).pet_check == PetCheck()
    # a user's bad override is an input error; a bad card (unknown field, value out of
    # range, not a mapping) is the card's fault
    with pytest.raises(InputError, match="unknown fields"):
        Predictor(weights, device="cpu", pet_check={"min_sv": 1.0})
    with pytest.raises(InputError, match="min_contrast >= 0"):
        Predictor(weights, device="cpu", pet_check={"min_contrast": -1.0})
    for bad in ({"min_sv": 1.0}, {"min_suv": -1.0}, [1.0, 2.0]):
        card["pet_check"] = bad
        card_path.write_text(json.dumps(card))
        with pytest.raises(
            CheckpointError, match="model card's pet_check .* not a (valid )?PET check"
        ):
            Predictor(weights, device="cpu")


def test_hot_spot_listing_comes_from_the_card_and_can_be_overridden(tmp_path) -> None:
    import json

    import pytest

    from mefn.errors import CheckpointError, InputError
    from mefn.postprocess import HotSpotCheck

    weights = make_tiny_weights(tmp_path)
    assert Predictor(weights, device="cpu").hot_spots == HotSpotCheck()  # defaults
    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["hot_spots"] = {"min_suv": 3.0, "min_contrast": 1.5}
    card_path.write_text(json.dumps(card))
    from_card = Predictor(weights, device="cpu")
    assert from_card.hot_spots == HotSpotCheck(min_suv=3.0, min_contrast=1.5)
    assert from_card.settings()["hot_spots"]["min_suv"] == 3.0
    partial = Predictor(weights, device="cpu", hot_spots={"min_volume_ml": 1.0})
    assert partial.hot_spots == HotSpotCheck(3.0, 1.5, 1.0)
    with pytest.raises(InputError, match=r"override names unknown fields \['min_sv'\]"):
        Predictor(weights, device="cpu", hot_spots={"min_sv": 1.0})
    card["hot_spots"] = {"min_suv": -1}
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="card's hot_spots .* not a valid hot-spot check"):
        Predictor(weights, device="cpu")


STAGES = (
    "resample",
    "network",
    "to_output_grid",
    "mask",
    "suv",
    "pet_check",
    "lesion_floor",
    "lesion_table",
    "hot_spots",
)


def test_predict_times_every_stage_and_reports_them(tmp_path) -> None:
    case = tiny_case(tmp_path)
    predictor = Predictor(make_tiny_weights(tmp_path), device="cpu", pet_check={"min_suv": 1.0})
    prediction = predictor.predict(case)
    timings = prediction.timings
    assert tuple(timings) == STAGES
    assert all(isinstance(s, float) and s >= 0.0 for s in timings.values())
    # the stages are disjoint parts of predict: together no longer than the whole
    assert sum(timings.values()) <= prediction.seconds + 0.01
    assert timings["network"] > 0.0
    report = prediction.report(case)
    assert report["timings"] == {k: round(v, 3) for k, v in timings.items()}


def test_predict_looks_up_its_stages_where_the_benchmark_times_them(tmp_path, monkeypatch) -> None:
    """pipelines/benchmark.py wraps mefn.inference.resample_case and .lesion_table and
    mefn.data.preprocess.to_output_grid: predict must call those very names."""
    import mefn.data.preprocess as preprocess_module
    import mefn.inference as inference_module

    calls: dict[str, int] = {}

    def counted(name, fn):
        def wrapper(*a, **k):
            calls[name] = calls.get(name, 0) + 1
            return fn(*a, **k)

        return wrapper

    for module, name in (
        (inference_module, "resample_case"),
        (inference_module, "lesion_table"),
        (preprocess_module, "to_output_grid"),
    ):
        monkeypatch.setattr(module, name, counted(name, getattr(module, name)))
    Predictor(make_tiny_weights(tmp_path), device="cpu").predict(tiny_case(tmp_path))
    # to_output_grid: the probabilities, then the uncertainty
    assert calls == {"resample_case": 1, "to_output_grid": 2, "lesion_table": 1}


def test_names_moved_out_of_inference_still_import_from_it() -> None:
    import mefn.inference as inference_module
    from mefn import outputs, registry

    used_elsewhere = {  # every name imported from mefn.inference in mefn/, pipelines/, tests/
        "Prediction",
        "Predictor",
        "list_adapters",
        "list_models",
        "output_paths",
        "parse_tta_axes",
        "parse_tta_scales",
        "resolve_weights",
        "save_prediction",
        "sliding_window_predict",
    }
    moved = {"resolve_adapter", "adapter_card", "WEIGHTS_DIR", "ADAPTERS_DIR", "resolve_pet_check"}
    assert used_elsewhere | moved <= set(inference_module.__all__)
    assert all(hasattr(inference_module, name) for name in inference_module.__all__)
    n_moved = 0
    for name in inference_module.__all__:
        for module in (registry, outputs):
            if name in module.__all__:  # the same object, not a copy
                assert getattr(inference_module, name) is getattr(module, name), name
                n_moved += 1
    assert n_moved == 13


def test_the_lesion_shape_comes_from_the_card_and_fills_the_hull(tmp_path) -> None:
    """A lesion drawn with a cold tunnel through it: "hull" fills the tunnel, "none" keeps
    it; the card's ``lesion_shape`` is the default, the argument overrides it."""
    import json

    import numpy as np

    weights = make_tiny_weights(tmp_path)
    case = tiny_case(tmp_path)

    def fake(image, keys=None):
        shape = image.shape[1:]
        lesion = np.zeros(shape, np.float32)
        box = tuple(slice(n // 4, n // 4 + max(6, n // 2)) for n in shape)
        lesion[box] = 0.9
        inner = tuple(slice(b.start + 2, b.stop - 2) for b in box[:2])
        lesion[inner[0], inner[1], box[2]] = 0.0  # a tunnel along z: open, not a hole
        maps = {
            "prob": np.stack([1 - lesion, lesion]),
            "uncertainty": np.full((1, *shape), 0.1, np.float32),
        }
        return {k: v for k, v in maps.items() if keys is None or k in keys}

    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["lesion_shape"] = "hull"
    card_path.write_text(json.dumps(card))
    hull = Predictor(weights, device="cpu")
    plain = Predictor(weights, device="cpu", lesion_shape="none")
    assert hull.lesion_shape == "hull" and hull.settings()["lesion_shape"] == "hull"
    masks = {}
    for name, predictor in (("hull", hull), ("none", plain)):
        predictor.predict_model_space = fake  # type: ignore[method-assign]
        masks[name] = predictor.predict(case).mask > 0
    assert masks["none"].any() and (masks["hull"] >= masks["none"]).all()
    assert masks["hull"].sum() > masks["none"].sum()


def test_small_lesions_are_cut_to_their_cores_from_the_card(tmp_path) -> None:
    """A low threshold draws the whole (20 mL) case as one lesion around a hot core: with the
    card's ``small_lesion_ml`` above its volume only the core stays; below it, or with the
    setting turned off by the caller, the lesion stays whole."""
    import json

    import numpy as np

    weights = make_tiny_weights(tmp_path)
    case = tiny_case(tmp_path)

    def fake(image, keys=None):
        lesion = np.full(image.shape[1:], 0.4, np.float32)
        lesion[1:3, 1:3, 1:2] = 0.95
        maps = {
            "prob": np.stack([1 - lesion, lesion]),
            "uncertainty": np.full((1, *lesion.shape), 0.1, np.float32),
        }
        return {k: v for k, v in maps.items() if keys is None or k in keys}

    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["postprocess"] = {
        "lesion_threshold": 0.3,
        "small_lesion_ml": 30,
        "small_lesion_threshold": 0.8,
        "hot_spots": {"enabled": False},  # the cores alone need the lesion probability
    }
    card_path.write_text(json.dumps(card))
    sizes = {}
    for name, kwargs in (
        ("cores", {}),
        ("large", {"small_lesion_ml": 10.0}),
        ("off", {"small_lesion_ml": 0.0}),
    ):
        predictor = Predictor(weights, device="cpu", **kwargs)
        predictor.predict_model_space = fake  # type: ignore[method-assign]
        pred = predictor.predict(case)
        sizes[name] = int((pred.mask > 0).sum())
        assert pred.settings["small_lesion_threshold"] == 0.8
        assert ("small_lesions" in pred.timings) == (name != "off")
    whole = int(np.prod(case.target_geometry.shape))
    assert sizes["large"] == sizes["off"] == whole
    assert 0 < sizes["cores"] < whole // 4
