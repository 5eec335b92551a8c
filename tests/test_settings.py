"""PostprocessSettings: built from a card (loose keys or a postprocess mapping) and overrides."""

from __future__ import annotations

import pytest

from mefn.errors import CheckpointError, InputError
from mefn.postprocess import HotSpotCheck, PetCheck
from mefn.settings import PostprocessSettings


def test_defaults_and_loose_card_keys_read_like_a_postprocess_mapping() -> None:
    assert PostprocessSettings() == PostprocessSettings.from_card({})
    loose = {
        "tta_axes": [2, 0, 2],
        "lesion_threshold": 0.4,
        "min_lesion_ml": 0.5,
        "review_threshold": 0.0014,
        "pet_check": {"min_suv": 1.0, "min_contrast": 2.0},
        "model": {"architecture": "mefn"},  # not a post-processing key: ignored
    }
    settings = PostprocessSettings.from_card(loose)
    assert settings.tta_axes == (0, 2)  # sorted, without repeats
    assert settings.tta_scales == (1.0,)  # the model grid alone unless a card says otherwise
    assert PostprocessSettings.from_card({"tta_scales": [2, 1, 1.5, 2]}).tta_scales == (1, 1.5, 2)
    assert settings.lesion_threshold == 0.4 and settings.min_lesion_ml == 0.5
    assert settings.review_threshold == 0.0014
    assert settings.pet_check == PetCheck(min_suv=1.0, min_contrast=2.0)
    assert settings.hot_spots == HotSpotCheck()
    nested = {k: v for k, v in loose.items() if k != "model"}
    assert PostprocessSettings.from_card({"postprocess": nested}) == settings
    assert PostprocessSettings.from_card({"postprocess": settings.to_json()}) == settings


def test_a_card_over_a_base_replaces_only_what_it_names_and_overrides_come_last() -> None:
    base = PostprocessSettings.from_card(
        {"tta_axes": [0, 1, 2], "pet_check": {"min_suv": 1.0, "min_contrast": 2.0}}
    )
    adapter = PostprocessSettings.from_card(
        {"postprocess": {"tta_axes": [], "pet_check": {"refine_fraction": 0.4}}}, base=base
    )
    assert adapter.tta_axes == ()
    assert adapter.pet_check == PetCheck(1.0, 2.0, 0.4, 8.0)
    chosen = adapter.with_overrides(
        lesion_threshold=0.3, tta_axes=None, pet_check={"min_suv": 0.0}, hot_spots={"min_suv": 3}
    )
    assert chosen.lesion_threshold == 0.3 and chosen.tta_axes == ()  # None: left as it is
    assert chosen.pet_check == PetCheck(0.0, 2.0, 0.4, 8.0)
    assert chosen.hot_spots == HotSpotCheck(min_suv=3.0)
    assert adapter.with_overrides(pet_check=PetCheck()).pet_check == PetCheck()


def test_a_bad_card_is_the_cards_fault_and_a_bad_override_the_callers() -> None:
    with pytest.raises(CheckpointError, match=r"unknown settings \['tta'\]"):
        PostprocessSettings.from_card({"postprocess": {"tta": [0]}})
    with pytest.raises(CheckpointError, match="postprocess 3 is not a mapping"):
        PostprocessSettings.from_card({"postprocess": 3})
    with pytest.raises(CheckpointError, match="tta_axes must be among 0, 1, 2"):
        PostprocessSettings.from_card({"tta_axes": [3]})
    with pytest.raises(CheckpointError, match=r"from 1 to 4, 1 among them .* found \(1.5,\)"):
        PostprocessSettings.from_card({"postprocess": {"tta_scales": [1.5]}})
    with pytest.raises(CheckpointError, match="tta_scales expects numbers"):
        PostprocessSettings.from_card({"tta_scales": 2})
    with pytest.raises(InputError, match=r"found \(1.0, 5.0\)"):
        PostprocessSettings().with_overrides(tta_scales=(1.0, 5.0))
    with pytest.raises(CheckpointError, match="card's pet_check"):
        PostprocessSettings.from_card({"pet_check": {"min_suv": -1}})
    with pytest.raises(InputError, match=r"unknown post-processing settings \['floor'\]"):
        PostprocessSettings().with_overrides(floor=1.0)
    with pytest.raises(InputError, match="min_lesion_ml must be a number >= 0, found -1"):
        PostprocessSettings().with_overrides(min_lesion_ml=-1.0)
    with pytest.raises(InputError, match="override names unknown fields"):
        PostprocessSettings().with_overrides(hot_spots={"min_sv": 1.0})


def test_min_confidence_is_a_probability_below_one_and_null_means_none() -> None:
    assert PostprocessSettings().min_confidence == 0.0
    assert PostprocessSettings.from_card({"min_confidence": 0.25}).min_confidence == 0.25
    assert (
        PostprocessSettings.from_card({"postprocess": {"min_confidence": None}}).min_confidence
        == 0.0
    )
    assert (
        PostprocessSettings().with_overrides(min_confidence=0.1).to_json()["min_confidence"] == 0.1
    )
    with pytest.raises(CheckpointError, match=r"min_confidence must be a probability in \[0, 1\)"):
        PostprocessSettings.from_card({"min_confidence": 1.0})
    with pytest.raises(InputError, match="found 'high'"):
        PostprocessSettings().with_overrides(min_confidence="high")


def test_the_small_lesion_core_needs_both_a_volume_and_a_threshold() -> None:
    card = {"postprocess": {"small_lesion_ml": 400, "small_lesion_threshold": 0.8}}
    settings = PostprocessSettings.from_card(card)
    assert (settings.small_lesion_ml, settings.small_lesion_threshold) == (400.0, 0.8)
    assert PostprocessSettings.from_card({"postprocess": settings.to_json()}) == settings
    assert settings.with_overrides(small_lesion_threshold=0.9).small_lesion_threshold == 0.9
    assert settings.with_overrides(small_lesion_ml=0).small_lesion_ml == 0.0  # off
    # the volume alone cuts at the default core; a card's None is that default
    assert PostprocessSettings.from_card({"small_lesion_ml": 400}) == settings
    none = {"small_lesion_ml": 400, "small_lesion_threshold": None}
    assert PostprocessSettings.from_card(none) == settings
    with pytest.raises(CheckpointError, match="small_lesion_threshold must be a probability"):
        PostprocessSettings.from_card({**card["postprocess"], "small_lesion_threshold": 1.0})
    with pytest.raises(InputError, match="small_lesion_ml must be a number >= 0, found -1"):
        PostprocessSettings(small_lesion_ml=-1, small_lesion_threshold=0.8)
    with pytest.raises(InputError, match="which is 0 .* give small_lesion_ml too"):
        PostprocessSettings().with_overrides(small_lesion_threshold=0.8)
    both = PostprocessSettings().with_overrides(small_lesion_ml=2, small_lesion_threshold=0.7)
    assert (both.small_lesion_ml, both.small_lesion_threshold) == (2.0, 0.7)
