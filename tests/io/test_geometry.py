"""Overlap and unit checks, resampling with flipped and oblique grids, model-space grids."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from mefn.errors import GeometryError, InputError
from mefn.io.geometry import (
    check_ct_units,
    check_pair,
    check_pet_units,
    check_pet_uptake,
    reference_grid,
    resample_to,
)
from mefn.io.volume import Geometry, Volume


def _rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def test_pair_that_overlaps(kit: SimpleNamespace) -> None:
    ct, pet = kit.ct_pet_pair()
    found = check_pair(ct, pet)
    # CT box: x -31.25..1.25, y -26.25..1.25, z -21.25..1.25 (13x11x9 voxels of 2.5 mm)
    # PET box: x -30..6, y -24..4, z -20..8 (9x7x7 voxels of 4 mm)
    assert found.overlap_lo_mm == pytest.approx((-30.0, -24.0, -20.0))
    assert found.overlap_hi_mm == pytest.approx((1.25, 1.25, 1.25))
    assert found.fraction_of_ct == pytest.approx((31.25 * 25.25 * 21.25) / (32.5 * 27.5 * 22.5))
    assert not found.same_grid


def test_pair_without_overlap_names_both_extents() -> None:
    ct = Volume.from_array(
        np.full((5, 5, 40), -1000.0), spacing_mm=(2, 2, 10), origin_mm=(0, 0, 905)
    )
    pet = Volume.from_array(np.ones((5, 5, 20)), spacing_mm=(2, 2, 20), origin_mm=(0, 0, 10))
    with pytest.raises(
        GeometryError,
        match=r"PET and CT do not overlap: PET covers z 0 to 400 mm, CT covers z 900 to 1300 mm; "
        r"are these the same study\?",
    ):
        check_pair(ct, pet)


def test_ct_units(caplog: pytest.LogCaptureFixture) -> None:
    ok = Volume.from_array(np.linspace(-1000, 1500, 60).reshape(3, 4, 5))
    check_ct_units(ok)
    raw = Volume.from_array(np.linspace(0, 4095, 60).reshape(3, 4, 5))
    with pytest.raises(InputError, match="CT values range 0 to 4095, all >= 0: this is not in HU"):
        check_ct_units(raw)
    # a crop of a few centimetres inside soft tissue (users do crop): HU, all >= 0, accepted
    # with a warning
    crop = Volume.from_array(np.linspace(49.5, 149.0, 60).reshape(3, 4, 5))
    with caplog.at_level(logging.WARNING, logger="mefn"):
        check_ct_units(crop)
    assert "no air, lung or fat in view" in caplog.text


def test_pet_units() -> None:
    check_pet_units(Volume.from_array(np.linspace(0, 35, 60).reshape(3, 4, 5)))
    bqml = Volume.from_array(np.linspace(0, 25000, 60).reshape(3, 4, 5))
    with pytest.raises(InputError, match="PET maximum is 25000: this looks like Bq/mL"):
        check_pet_units(bqml)
    with pytest.raises(InputError, match="PET minimum is -1000: this looks like a CT in HU"):
        check_pet_units(Volume.from_array(np.linspace(-1000, 1500, 60).reshape(3, 4, 5)))
    check_pet_units(Volume.from_array(np.linspace(-2, 35, 60).reshape(3, 4, 5)))  # ringing
    with pytest.raises(InputError, match="looks like Bq/mL"):
        check_pair(
            Volume.from_array(np.full((3, 3, 3), -1000.0)),
            Volume.from_array(np.full((3, 3, 3), 3000.0)),
        )


def test_resample_onto_the_same_grid_is_a_copy() -> None:
    vol = Volume.from_array(
        np.arange(60, dtype=np.float32).reshape(3, 4, 5), direction=_rot_z(30).ravel()
    )
    out = resample_to(vol, vol.geometry)
    np.testing.assert_array_equal(out.array, vol.array)
    assert out.array is not vol.array


def test_flipped_axis_resampled_onto_identity_grid_is_reversed() -> None:
    arr = np.arange(7 * 5 * 3, dtype=np.float32).reshape(7, 5, 3)
    # x axis flipped: voxel i sits at x = 12 - 2 i
    flipped = Volume.from_array(
        arr, spacing_mm=(2, 1, 1), origin_mm=(12, 0, 0), direction=np.diag([-1.0, 1, 1])
    )
    grid = Geometry(shape=(7, 5, 3), spacing_mm=(2, 1, 1), origin_mm=(0, 0, 0))
    for interpolation in ("linear", "nearest"):
        out = resample_to(flipped, grid, interpolation=interpolation)
        np.testing.assert_allclose(out.array, arr[::-1], atol=1e-4)
        assert out.geometry == grid


def test_oblique_linear_field_is_reproduced_exactly() -> None:
    # f(p) = 2 x - y + 0.5 z is linear, so linear interpolation reproduces it wherever the
    # target voxel lies inside the source
    src_geo = Geometry(
        shape=(31, 33, 35),
        spacing_mm=(1.0, 1.2, 1.5),
        origin_mm=(-10, -12, 5),
        direction=tuple(_rot_z(35).ravel()),
    )
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in src_geo.shape], indexing="ij"), -1)
    pts = src_geo.index_to_world(idx)
    field = (2 * pts[..., 0] - pts[..., 1] + 0.5 * pts[..., 2]).astype(np.float32)
    src = Volume(array=field, geometry=src_geo, modality="PT", units="SUVbw")
    target = Geometry(
        shape=(9, 11, 13),
        spacing_mm=(1.3, 1.1, 1.7),
        origin_mm=(-8, 2, 12),
        direction=tuple(_rot_z(-20).ravel()),
    )
    out = resample_to(src, target, default_value=-999.0)
    tpts = target.index_to_world(
        np.stack(np.meshgrid(*[np.arange(n) for n in target.shape], indexing="ij"), -1)
    )
    inside = out.array != -999.0
    assert inside.mean() > 0.9
    expected = 2 * tpts[..., 0] - tpts[..., 1] + 0.5 * tpts[..., 2]
    np.testing.assert_allclose(out.array[inside], expected[inside], atol=1e-3)
    assert out.units == "SUVbw" and out.geometry.direction == target.direction


def test_oblique_label_round_trip_with_nearest() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, size=(9, 10, 11)).astype(np.uint8)
    geo = Geometry(
        shape=(9, 10, 11),
        spacing_mm=(2, 2, 2),
        origin_mm=(1, 2, 3),
        direction=tuple(_rot_z(40).ravel()),
    )
    vol = Volume(array=labels, geometry=geo)
    # a finer grid with the same axes: each source voxel becomes 2x2x2 target voxels
    fine = Geometry(
        shape=(18, 20, 22),
        spacing_mm=(1, 1, 1),
        origin_mm=tuple(geo.index_to_world([-0.25, -0.25, -0.25])),
        direction=geo.direction,
    )
    up = resample_to(vol, fine, interpolation="nearest")
    assert up.array.dtype == np.uint8
    back = resample_to(up, geo, interpolation="nearest")
    np.testing.assert_array_equal(back.array, labels)


def test_outside_voxels_get_the_default_value() -> None:
    vol = Volume.from_array(np.ones((3, 3, 3), np.float32))
    far = Geometry(shape=(3, 3, 3), origin_mm=(100, 100, 100))
    assert float(resample_to(vol, far, default_value=-1000.0).array.max()) == -1000.0
    with pytest.raises(ValueError, match="interpolation must be"):
        resample_to(vol, far, interpolation="cubic")


def test_reference_grid_identity_covers_the_extent() -> None:
    # 10 voxels of 2 mm: box from -1 to 19 mm on each axis (20 mm); at 3 mm: 7 voxels (21 mm)
    vol = Volume.from_array(np.zeros((10, 10, 10)), spacing_mm=(2, 2, 2))
    grid = reference_grid(vol, (3.0, 3.0, 3.0))
    assert grid.shape == (7, 7, 7)
    # centred: covers -1.5..19.5, first voxel centre at 0.0
    assert grid.origin_mm == pytest.approx((0.0, 0.0, 0.0))
    lo, hi = grid.extent_mm()
    assert np.all(lo <= -1.0) and np.all(hi >= 19.0)


def test_reference_grid_of_a_flipped_oblique_volume() -> None:
    direction = _rot_z(30) @ np.diag([1.0, -1.0, 1.0])
    vol = Volume.from_array(
        np.zeros((11, 13, 7)),
        spacing_mm=(1.5, 1.5, 4.0),
        origin_mm=(5, -3, 20),
        direction=direction.ravel(),
    )
    own = reference_grid(vol, (3.0, 3.0, 2.0), direction="source")
    assert own.direction == pytest.approx(tuple(direction.ravel()))
    assert own.shape == (6, 7, 14)  # ceil(16.5/3), ceil(19.5/3), ceil(28/2)
    # the centre of the box is the same point
    centre = vol.geometry.index_to_world((np.asarray(vol.shape) - 1) / 2)
    np.testing.assert_allclose(
        own.index_to_world((np.asarray(own.shape) - 1) / 2), centre, atol=1e-9
    )
    axis_aligned = reference_grid(vol, (2.0, 2.0, 2.0))
    assert axis_aligned.direction == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    vlo, vhi = vol.geometry.extent_mm()
    glo, ghi = axis_aligned.extent_mm()
    assert np.all(glo <= vlo + 1e-9) and np.all(ghi >= vhi - 1e-9)
    with pytest.raises(GeometryError, match="grid spacing must be three positive numbers"):
        reference_grid(vol, (0.0, 1.0, 1.0))


# --- a PET that cannot be one -------------------------------------------------------------------


def test_a_pet_without_any_voxel_above_zero_is_refused() -> None:
    for values in (np.zeros((3, 4, 5)), np.full((3, 4, 5), -0.5), np.full((3, 4, 5), np.nan)):
        with pytest.raises(InputError, match="PET has no voxel above 0 .*cannot be a PET"):
            check_pet_units(Volume.from_array(values))
    with pytest.raises(InputError, match=r"no voxel above 0 \(values 0 to 0\)"):
        check_pair(
            Volume.from_array(np.full((3, 3, 3), -1000.0)), Volume.from_array(np.zeros((3, 3, 3)))
        )
    partly_nan = np.linspace(0, 5, 60).reshape(3, 4, 5)
    partly_nan[0, 0, 1] = np.nan
    check_pet_units(Volume.from_array(partly_nan))  # some uptake: accepted


def _in_body(ct: Volume, pet: Volume) -> np.ndarray:
    """Which PET voxels have their centre in a CT voxel above -500 HU (nearest voxel)."""
    index = np.indices(pet.shape).reshape(3, -1).T
    at = np.rint(ct.geometry.world_to_index(pet.geometry.index_to_world(index))).astype(int)
    inside = np.all((at >= 0) & (at < np.asarray(ct.shape)), axis=1)
    hit = np.zeros(len(index), bool)
    hit[inside] = ct.array[tuple(at[inside].T)] > -500
    return hit.reshape(pet.shape)


def test_a_pet_positive_only_outside_the_body_is_refused(kit: SimpleNamespace) -> None:
    ct, pet = kit.ct_pet_pair()  # CT flipped in x at 2.5 mm, PET at 4 mm, shifted
    body = np.full(ct.shape, -1000.0, np.float32)
    body[3:9, 3:8, 2:7] = 40.0
    ct = ct.with_array(body)
    in_body = _in_body(ct, pet)
    assert 0 < in_body.sum() < in_body.size
    outside = pet.with_array(np.where(in_body, 0.0, 3.0).astype(np.float32))
    message = r"PET has no voxel above 0 inside the body seen on the CT \(CT above -500 HU"
    with pytest.raises(InputError, match=message + r", where the two overlap; PET max 3\)"):
        check_pet_uptake(ct, outside)
    with pytest.raises(InputError, match=message):
        check_pair(ct, outside)
    one = outside.array.copy()
    one[tuple(np.argwhere(in_body)[0])] = 0.1  # one voxel of uptake in the body is enough
    check_pair(ct, outside.with_array(one))


def test_uptake_is_looked_for_where_pet_and_ct_overlap(kit: SimpleNamespace) -> None:
    ct, pet = kit.ct_pet_pair()  # CT box x -31.25..1.25 mm, PET voxel centres x -28..4 mm
    soft = ct.with_array(np.full(ct.shape, 40.0, np.float32))  # body everywhere on the CT
    beyond = np.zeros(pet.shape, np.float32)
    beyond[-1] = 5.0  # PET slab at x = 4 mm, beyond the CT
    with pytest.raises(InputError, match="no voxel above 0 inside the body"):
        check_pet_uptake(soft, pet.with_array(beyond))
    beyond[-2] = 5.0  # x = 0 mm: inside the CT
    check_pet_uptake(soft, pet.with_array(beyond))
    # the body threshold: -450 HU is body, -550 HU is not
    check_pet_uptake(ct.with_array(np.full(ct.shape, -450.0, np.float32)), pet)
    with pytest.raises(InputError, match="inside the body"):
        check_pet_uptake(ct.with_array(np.full(ct.shape, -550.0, np.float32)), pet)
