from __future__ import annotations

import numpy as np
import pytest

from mefn.errors import InputError
from mefn.io.volume import Geometry
from mefn.postprocess import (
    PetCheck,
    apply_pet_check,
    keep_small_lesion_cores,
    lesion_table,
    mask_from_probabilities,
    reshape_lesions,
    suv_peak,
)
from mefn.settings import PostprocessSettings


def _geo(shape, spacing=(2.0, 2.0, 2.0), origin=(10.0, -5.0, 3.0), direction=None):
    if direction is None:
        direction = (1, 0, 0, 0, -1, 0, 0, 0, 1)  # flipped j axis
    return Geometry(shape=shape, spacing_mm=spacing, origin_mm=origin, direction=direction)


def test_lesion_table_hand_computed_values():
    shape = (21, 22, 23)
    mask = np.zeros(shape, np.uint8)
    suv = np.ones(shape, np.float32)
    unc = np.full(shape, 0.1, np.float32)
    mask[2:5, 3:6, 4:7] = 1  # 27 voxels
    suv[2:5, 3:6, 4:7] = 4.0
    suv[3, 4, 5] = 10.0
    unc[2:5, 3:6, 4:7] = 0.5
    mask[15:17, 15:17, 15:16] = 1  # 4 voxels, far away
    geo = _geo(shape)
    table = lesion_table(mask, suv, unc, geo, review_threshold=0.3)
    assert len(table.lesions) == 2
    big = table.lesions[0]
    assert big.voxels == 27
    assert big.volume_ml == pytest.approx(27 * 0.008)
    assert big.suv_max == pytest.approx(10.0)
    assert big.suv_mean == pytest.approx((26 * 4 + 10) / 27)
    assert big.tlg == pytest.approx(big.suv_mean * 27 * 0.008)
    assert big.uncertainty_mean == pytest.approx(0.5)
    assert big.review is True
    # centroid index (3, 4, 5): x = 10 + 3*2, y = -5 - 4*2 (flipped), z = 3 + 5*2
    assert big.centroid_mm == pytest.approx((16.0, -13.0, 13.0))
    small = table.lesions[1]
    assert small.voxels == 4 and small.suv_max == pytest.approx(1.0)
    assert small.review is False
    assert table.mtv_ml == pytest.approx(31 * 0.008)
    assert table.tlg == pytest.approx(big.tlg + small.tlg)
    assert table.to_json()["n_review"] == 1


def test_components_use_18_connectivity():
    shape = (9, 9, 9)
    geo = _geo(shape)
    ones = np.ones(shape, np.float32)
    edge = np.zeros(shape, np.uint8)
    edge[2, 2, 2] = edge[3, 3, 2] = 1  # share an edge: one lesion under 18-connectivity
    assert len(lesion_table(edge, ones, ones * 0, geo).lesions) == 1
    corner = np.zeros(shape, np.uint8)
    corner[2, 2, 2] = corner[3, 3, 3] = 1  # share a corner only: two lesions
    assert len(lesion_table(corner, ones, ones * 0, geo).lesions) == 2


def test_labels_are_separate_lesions():
    shape = (9, 9, 9)
    mask = np.zeros(shape, np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    mask[3:5, 1:3, 1:3] = 2  # touching, but another label
    t = lesion_table(mask, np.ones(shape), np.zeros(shape), _geo(shape))
    assert sorted(lesion.label for lesion in t.lesions) == [1, 2]


def test_suv_peak_uniform_and_hotspot():
    shape = (31, 32, 33)
    suv = np.full(shape, 5.0)
    lesion = np.zeros(shape, bool)
    lesion[10:20, 10:20, 10:20] = True
    assert suv_peak(suv, lesion, (2.0, 2.0, 2.0)) == pytest.approx(5.0)
    # A single hot voxel: the 1 mL sphere at 2 mm holds 123 voxel centres (radius 6.2 mm)
    suv[15, 15, 15] = 5.0 + 123.0
    assert suv_peak(suv, lesion, (2.0, 2.0, 2.0)) == pytest.approx(6.0)


def test_mask_from_probabilities_removes_small_components():
    prob = np.zeros((2, 10, 11, 12), np.float32)
    prob[0] = 1.0
    prob[:, 1:4, 1:4, 1:4] = [[[[0.2]]], [[[0.8]]]]
    prob[:, 8, 8, 8] = [0.1, 0.9]
    mask = mask_from_probabilities(prob)
    assert mask.sum() == 28
    assert mask_from_probabilities(prob, min_component_voxels=2).sum() == 27


def test_lesion_threshold_on_the_probability_of_not_being_background():
    rng = np.random.default_rng(5)
    raw = rng.random((3, 9, 10, 11)).astype(np.float32)
    prob = raw / raw.sum(0)
    for t in (0.2, 0.5, 0.8):
        mask = mask_from_probabilities(prob, lesion_threshold=t)
        foreground = 1.0 - prob[0] >= t
        expected = np.where(foreground, np.argmax(prob[1:], axis=0) + 1, 0)
        np.testing.assert_array_equal(mask, expected)
    two = prob[:2] / prob[:2].sum(0)
    np.testing.assert_array_equal(mask_from_probabilities(two, lesion_threshold=0.3), two[1] >= 0.3)
    # more voxels as the threshold falls; the small-component floor still applies after it
    assert (mask_from_probabilities(two, lesion_threshold=0.3) > 0).sum() > (
        mask_from_probabilities(two) > 0
    ).sum()
    from mefn.errors import InputError

    with pytest.raises(InputError, match="lesion probability threshold must be between 0 and 1"):
        mask_from_probabilities(two, lesion_threshold=1.0)


def test_shape_mismatch_is_reported():
    with pytest.raises(ValueError, match="must have one shape"):
        lesion_table(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), np.zeros((3, 3, 3)), _geo((3, 3, 3)))


def test_review_threshold_separates_false_from_true_detections() -> None:
    from mefn.postprocess import choose_review_threshold

    u = np.array([0.01, 0.02, 0.03, 0.05, 0.04, 0.20, 0.30, 0.025])
    fp = np.array([False, False, False, False, True, True, True, True])
    t, stats = choose_review_threshold(u, fp)
    # >= 0.025 flags 4/4 false and 2/4 true; >= 0.04 flags 3/4 and 1/4: both J = 0.5, the
    # best; the tie goes to the lower threshold
    assert t == 0.025
    assert stats == {"j": 0.5, "fp_flagged": 1.0, "tp_flagged": 0.5, "n_fp": 4, "n_tp": 4}
    perfect, s = choose_review_threshold(np.array([0.1, 0.2, 0.5, 0.6]), np.array([0, 0, 1, 1]))
    assert perfect == 0.5 and s["j"] == 1.0
    with pytest.raises(ValueError, match="needs both false and true detections"):
        choose_review_threshold(np.array([0.1, 0.2]), np.array([True, True]))
    with pytest.raises(ValueError, match="2 uncertainty values but 3"):
        choose_review_threshold(np.array([0.1, 0.2]), np.array([True, False, True]))


def _blurred_sphere_scene(shape=(48, 48, 40), spacing=(2.0, 2.0, 3.0)):
    """A PET scene: background SUV 1, a 24 mm sphere of SUV 8 with a cold necrotic core and
    a hot 'organ' slab 20 mm from its surface, blurred as by a scanner (6 mm FWHM)."""
    from scipy import ndimage

    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    centre = [24 * 2.0, 24 * 2.0, 20 * 3.0]
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    lesion = r <= 12.0
    truth = np.ones(shape, np.float32)
    truth[lesion] = 8.0
    truth[r <= 4.0] = 0.5  # necrotic core, cold but part of the lesion
    organ = grid[0] >= centre[0] + 12.0 + 20.0
    truth[organ] = 6.0
    sigma = [6.0 / 2.355 / s for s in spacing]
    suv = ndimage.gaussian_filter(truth, sigma).astype(np.float32)
    return suv, lesion, r, organ


def test_pet_check_redraws_an_undersized_lesion_on_the_pet() -> None:
    from mefn.metrics.autopet import autopet_case_metrics

    spacing = (2.0, 2.0, 3.0)
    suv, lesion, r, organ = _blurred_sphere_scene(spacing=spacing)
    core = ((r > 4.0) & (r <= 7.0)).astype(np.uint8)  # the network saw a ring of it
    assert autopet_case_metrics(lesion, core, spacing, 2022).dice < 0.5
    refined = apply_pet_check(core, suv, spacing, PetCheck(refine_fraction=0.45, refine_mm=12.0))
    assert autopet_case_metrics(lesion, refined, spacing, 2022).dice > 0.85
    assert refined[r <= 4.0].all()  # the cold core, enclosed, is filled
    assert not refined[organ].any()  # the hot organ beyond the growth zone stays out
    # growth is bounded: with 2 mm the outline cannot reach the lesion's edge
    short = apply_pet_check(core, suv, spacing, PetCheck(refine_fraction=0.45, refine_mm=2.0))
    assert short.sum() < refined.sum()
    assert core.sum() == int(((r > 4.0) & (r <= 7.0)).sum())  # the input is not modified


def test_pet_check_drops_lesions_without_uptake_or_contrast() -> None:
    spacing = (2.0, 2.0, 3.0)
    suv, lesion, r, organ = _blurred_sphere_scene(spacing=spacing)
    suv[:6] = 0.02  # air at one end of the grid
    mask = lesion.astype(np.uint8) * 2  # label 2 (e.g. GTVn) kept as it is
    mask[1:3, 1:3, 1:3] = 1  # a "lesion" in air
    deep = organ & (np.indices(suv.shape)[0] >= suv.shape[0] - 4)
    mask[deep & (np.indices(suv.shape)[1] < 10)] = 1  # inside the uniform hot organ
    kept = apply_pet_check(mask, suv, spacing, PetCheck(min_suv=1.0))
    assert not kept[1:3, 1:3, 1:3].any()  # no uptake: gone
    assert kept[deep & (np.indices(suv.shape)[1] < 10)].all()  # SUV 6: kept by the floor
    assert (kept[lesion] == 2).all()
    contrast = apply_pet_check(mask, suv, spacing, PetCheck(min_suv=1.0, min_contrast=2.0))
    assert not contrast[organ].any()  # no hotter than its surroundings: gone
    assert (contrast[lesion] == 2).all() and (contrast[~lesion] == 0).all()
    # a refined lesion keeps its label; no check at all changes nothing
    refined = apply_pet_check(mask, suv, spacing, PetCheck(1.0, 2.0, 0.4, 8.0))
    assert (refined[lesion] == 2).mean() > 0.95
    assert (apply_pet_check(mask, suv, spacing, PetCheck()) == mask).all()


def test_pet_check_rejects_bad_values() -> None:
    for kwargs in (
        {"min_suv": -1.0},
        {"min_contrast": float("nan")},
        {"refine_fraction": 0.0},
        {"refine_fraction": 1.0},
        {"refine_mm": -2.0},
    ):
        with pytest.raises(InputError, match="PET check expects"):
            PetCheck(**kwargs)
    with pytest.raises(ValueError, match="one shape"):
        apply_pet_check(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 3)), (1, 1, 1), PetCheck())


# --- PET hot spots outside the mask -------------------------------------------------------


def _hot_scene(shape=(31, 32, 33)):
    """Background SUV 1; a 5x5x5 block at SUV 6 (one voxel 9) and a 3x3x3 block at SUV 1.8."""
    suv = np.ones(shape, np.float32)
    suv[4:9, 5:10, 6:11] = 6.0
    suv[6, 7, 8] = 9.0
    suv[20:23, 20:23, 20:23] = 1.8  # below min_suv: never a hot spot
    return suv


def test_hot_spot_outside_the_mask_is_listed_with_hand_computed_values():
    from mefn.postprocess import HotSpotCheck, find_hot_spots, label_hot_spots

    suv = _hot_scene()
    geo = _geo(suv.shape)
    mask = np.zeros(suv.shape, np.uint8)
    prob = np.full(suv.shape, 0.01, np.float16)
    prob[5, 6, 7] = 0.25
    (spot,) = find_hot_spots(mask, suv, geo, HotSpotCheck(), prob)
    assert spot.spot_id == 1
    assert spot.voxels == 125
    assert spot.volume_ml == pytest.approx(125 * 0.008)
    assert spot.suv_max == pytest.approx(9.0)
    assert spot.suv_mean == pytest.approx((124 * 6 + 9) / 125)
    assert spot.background_suv == pytest.approx(1.0)
    assert spot.contrast == pytest.approx(9.0)
    assert spot.covered_fraction == 0.0
    assert spot.lesion_probability_max == pytest.approx(0.25, abs=1e-3)
    centre = geo.index_to_world(np.array([6.0, 7.0, 8.0]))
    assert spot.centroid_mm == pytest.approx(tuple(centre))
    spots, spot_map = label_hot_spots(mask, suv, geo, HotSpotCheck(), prob)
    assert spots == (spot,)
    assert spot_map.dtype == np.int32
    assert int((spot_map == 1).sum()) == 125 and int((spot_map > 1).sum()) == 0


def test_hot_spot_the_mask_covers_is_not_listed_but_a_sliver_does_not_hide_it():
    from mefn.postprocess import HotSpotCheck, find_hot_spots

    suv = _hot_scene()
    geo = _geo(suv.shape)
    mask = np.zeros(suv.shape, np.uint8)
    mask[4:9, 5:10, 6:9] = 1  # 75 of the 125 voxels: the mask answers for it
    assert find_hot_spots(mask, suv, geo) == ()
    mask[:] = 0
    mask[4:9, 5:10, 6:7] = 1  # 25 of 125: a sliver of a large hot region
    (spot,) = find_hot_spots(mask, suv, geo)
    assert spot.covered_fraction == pytest.approx(0.2)
    assert spot.lesion_probability_max is None  # no probability map given
    # max_covered_fraction 0: only regions the mask does not touch at all
    assert find_hot_spots(mask, suv, geo, HotSpotCheck(max_covered_fraction=0.0)) == ()


def test_hot_spots_need_contrast_volume_and_can_be_switched_off():
    from mefn.postprocess import HotSpotCheck, find_hot_spots

    suv = _hot_scene()
    geo = _geo(suv.shape)
    mask = np.zeros(suv.shape, np.uint8)
    warm = np.where(suv >= 6, 4.0, 2.4).astype(np.float32)  # warm background, below min_suv
    warm[6, 7, 8] = 4.5  # SUVmax 4.5 < 2 x 2.4
    assert find_hot_spots(mask, warm, geo) == ()
    assert len(find_hot_spots(mask, warm, geo, HotSpotCheck(min_contrast=1.5))) == 1
    assert find_hot_spots(mask, suv, geo, HotSpotCheck(min_volume_ml=1.1)) == ()  # 1.0 mL
    assert find_hot_spots(mask, suv, geo, HotSpotCheck(enabled=False)) == ()
    assert find_hot_spots(mask, np.zeros_like(suv), geo) == ()


def test_hot_spots_sorted_hottest_first_and_round_trip_through_json():
    from mefn.postprocess import HotSpot, find_hot_spots

    suv = _hot_scene()
    suv[15:19, 15:19, 25:29] = 12.0  # a second, hotter region
    geo = _geo(suv.shape)
    spots = find_hot_spots(np.zeros(suv.shape, np.uint8), suv, geo)
    assert [s.spot_id for s in spots] == [1, 2]
    assert [s.suv_max for s in spots] == [pytest.approx(12.0), pytest.approx(9.0)]
    import json

    back = HotSpot.from_json(json.loads(json.dumps(spots[0].to_json())))
    assert back.spot_id == 1 and back.voxels == 64
    assert back.suv_max == pytest.approx(12.0) and back.contrast == pytest.approx(12.0)
    assert back.centroid_mm == pytest.approx(spots[0].centroid_mm, abs=0.01)


def test_hot_spot_check_refuses_bad_values():
    from mefn.postprocess import HotSpotCheck

    with pytest.raises(InputError, match=r"hot-spot check expects min_suv > 0, found 0"):
        HotSpotCheck(min_suv=0.0)
    with pytest.raises(InputError, match=r"min_contrast >= 0, found -1"):
        HotSpotCheck(min_contrast=-1.0)
    with pytest.raises(InputError, match=r"max_covered_fraction in \[0, 1\], found 2"):
        HotSpotCheck(max_covered_fraction=2.0)
    with pytest.raises(ValueError, match="must have one shape"):
        from mefn.postprocess import find_hot_spots

        find_hot_spots(np.zeros((3, 3, 3)), np.zeros((3, 3, 4)), _geo((3, 3, 3)))


def test_drop_unconfident_removes_lesions_below_the_floor_and_says_where() -> None:
    from mefn.confidence import EvidenceMaps, LesionConfidence, LogisticModel
    from mefn.postprocess import drop_unconfident

    geo = _geo((20, 20, 20))
    mask = np.zeros(geo.shape, np.uint8)
    suv = np.ones(geo.shape, np.float32)
    mask[2:5, 2:5, 2:5] = 1  # hot: kept
    suv[2:5, 2:5, 2:5] = 9.0
    mask[12:14, 12:14, 12:16] = 1  # faint: dropped
    suv[12:14, 12:14, 12:16] = 1.5
    maps = EvidenceMaps(np.full(geo.shape, 0.6, np.float32), np.full(geo.shape, 0.1, np.float32),
                        suv, geo.spacing_mm)  # fmt: skip
    # confidence rises with SUVmax: log(1 + 9) -> 0.89, log(1 + 1.5) -> 0.33
    model = LesionConfidence(
        LogisticModel(("log_suv_max",), np.zeros(1), np.ones(1), np.asarray([2.0]), -2.5)
    )
    kept, dropped, scored = drop_unconfident(mask, model, maps, geo, 0.5)
    assert kept[3, 3, 3] == 1 and kept[12:14, 12:14, 12:16].sum() == 0
    assert mask[12, 12, 12] == 1  # the input is left as it was
    (gone,) = dropped
    assert gone.label == 1 and gone.volume_ml == pytest.approx(16 * 8 / 1000)
    assert gone.suv_max == pytest.approx(1.5)
    assert gone.confidence == pytest.approx(1 / (1 + np.exp(2.5 - 2 * np.log(2.5))))
    centre = geo.index_to_world(np.asarray([12.5, 12.5, 13.5]))
    assert gone.centroid_mm == pytest.approx(tuple(centre))
    assert gone.to_json()["centroid_mm"] == [round(c, 2) for c in centre]
    # the kept lesion's confidence, as the lesion table would compute it again
    table = lesion_table(kept, suv, np.zeros(geo.shape, np.float32), geo, confidence=(model, maps))
    assert (
        scored
        == [les.confidence for les in table.lesions]
        == [pytest.approx(1 / (1 + np.exp(2.5 - 2 * np.log(10.0))))]
    )
    given = lesion_table(kept, suv, np.zeros(geo.shape, np.float32), geo,
                         confidence=(model, maps), confidences=scored)  # fmt: skip
    assert given == table
    with pytest.raises(ValueError, match="2 confidences given for 1 lesions"):
        lesion_table(kept, suv, np.zeros(geo.shape, np.float32), geo,
                     confidence=(model, maps), confidences=[0.5, 0.5])  # fmt: skip
    same, none, unscored = drop_unconfident(mask, model, maps, geo, 0.0)
    assert same is mask and none == () and unscored is None


def test_reshape_lesions_fills_convex_hulls_and_keeps_the_largest() -> None:
    mask = np.zeros((30, 30, 20), np.uint8)
    # a hollow box with one side open (a rim of uptake around a cold core): not a closed hole
    mask[2:12, 2:12, 2:12] = 1
    mask[4:10, 4:10, 4:12] = 0
    mask[20:23, 20:23, 10:13] = 1  # a small second lesion, 27 voxels
    mask[25, 2:6, 2] = 2  # a line of another label: spans no volume, left as it is
    hull = reshape_lesions(mask, "hull")
    assert (hull[2:12, 2:12, 2:12] == 1).all()  # the cold core is filled
    assert (hull[20:23, 20:23, 10:13] == 1).all() and (hull == 1).sum() == 1000 + 27
    assert (hull == 2).sum() == 4
    largest = reshape_lesions(mask, "largest_hull")
    assert (largest == 1).sum() == 1000 and (largest[20:23, 20:23, 10:13] == 0).all()
    assert (largest == 2).sum() == 4  # each label keeps its own largest lesion
    assert np.array_equal(reshape_lesions(mask, "none"), mask)
    assert (mask[4:10, 4:10, 4:12] == 0).all()  # the input is not changed


def test_reshape_lesions_never_takes_another_label_s_voxels() -> None:
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[1:10, 1:10, 1] = 1
    mask[1:10, 1:10, 9] = 1
    mask[1:10, 1, 1:10] = 1  # a U shape of label 1 whose hull holds the box
    mask[5, 5, 5] = 2
    out = reshape_lesions(mask, "hull")
    assert out[5, 5, 5] == 2 and out[5, 5, 4] == 1


def test_an_unknown_lesion_shape_is_refused_in_one_line() -> None:
    with pytest.raises(InputError, match="lesion_shape must be one of none, hull, largest_hull"):
        reshape_lesions(np.zeros((2, 2, 2), np.uint8), "convex")
    with pytest.raises(InputError, match="found 'fill'"):
        PostprocessSettings(lesion_shape="fill")
    settings = PostprocessSettings.from_card({"postprocess": {"lesion_shape": "hull"}})
    assert settings.lesion_shape == "hull" and settings.to_json()["lesion_shape"] == "hull"


def test_small_lesions_keep_their_cores_and_large_ones_stay_whole() -> None:
    """Two lesions drawn at a low threshold: the small one (27 voxels, 0.216 mL at 2 mm) is cut
    down to its core (p >= 0.8), the large one (512 voxels) keeps its cold rim; a small lesion
    without a core is removed; each label's lesions are judged on their own."""
    mask = np.zeros((24, 24, 24), np.uint8)
    prob = np.zeros(mask.shape, np.float32)
    mask[2:5, 2:5, 2:5] = 1
    prob[2:5, 2:5, 2:5] = 0.4
    prob[3, 3, 3] = 0.9  # the small lesion's core
    mask[10:18, 10:18, 10:18] = 1
    prob[10:18, 10:18, 10:18] = 0.3
    mask[2:5, 20:23, 2:5] = 1
    prob[2:5, 20:23, 2:5] = 0.5  # small, no core
    mask[20:22, 2:4, 20:22] = 2
    prob[20:22, 2:4, 20:22] = 0.95  # another label, small, all core
    out = keep_small_lesion_cores(mask, prob, 0.008, below_ml=1.0, threshold=0.8)
    assert out[3, 3, 3] == 1 and (out[2:5, 2:5, 2:5] > 0).sum() == 1
    assert (out[10:18, 10:18, 10:18] == 1).all()  # 4.1 mL: as drawn
    assert not out[2:5, 20:23, 2:5].any()
    assert (out[20:22, 2:4, 20:22] == 2).all()
    assert mask.sum() == 27 + 512 + 27 + 2 * 8  # the input is not changed
    assert np.array_equal(keep_small_lesion_cores(mask, prob, 0.008, 0.0, 0.8), mask)
    bigger = keep_small_lesion_cores(mask, prob, 0.008, below_ml=5.0, threshold=0.8)
    assert not bigger[10:18, 10:18, 10:18].any()  # now small too, and without a core
    with pytest.raises(ValueError, match="both must be on one grid"):
        keep_small_lesion_cores(mask, prob[:-1], 0.008, 1.0, 0.8)
    with pytest.raises(InputError, match="between 0 and 1"):
        keep_small_lesion_cores(mask, prob, 0.008, 1.0, 1.2)
