"""Reference masks from DICOM: RTSTRUCT rasterisation, DICOM SEG, dispatch and load_case."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from dicom_refs_support import square, write_ct_series, write_rtstruct, write_seg
from support import COL, NORMAL, ROW

from mefn.errors import GeometryError, InputError
from mefn.io import load_case, read_reference, read_volume
from mefn.io.dicom_refs import (
    rasterise_contours,
    read_dicom_seg,
    read_rtstruct,
    rtstruct_roi_names,
)
from mefn.io.sitk_bridge import write_volume
from mefn.io.volume import Geometry, Volume

OBLIQUE = Geometry(
    shape=(13, 11, 7),
    spacing_mm=(1.5, 2.0, 3.0),
    origin_mm=(-20.0, 15.0, 40.0),
    direction=tuple(np.column_stack([ROW, COL, NORMAL]).ravel()),
)
FLIPPED = Geometry(
    shape=(13, 11, 7),
    spacing_mm=(0.8, 1.25, 2.5),
    origin_mm=(30.0, -12.0, 7.0),
    direction=(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
)
GRIDS = pytest.mark.parametrize("grid", [OBLIQUE, FLIPPED], ids=["oblique", "flipped"])


def _world(grid: Geometry, *polygons: np.ndarray) -> list[np.ndarray]:
    return [grid.index_to_world(p) for p in polygons]


# --- rasterisation on hand-made contours ---------------------------------------------------


@GRIDS
def test_square_with_square_hole(grid):
    outer = square((1.5, 0.5), (9.5, 8.5), 3)  # centres i 2..9, j 1..8: 64
    hole = square((3.5, 2.5), (6.5, 5.5), 3)[::-1]  # i 4..6, j 3..5: 9, drawn the other way
    mask = rasterise_contours(_world(grid, outer, hole), grid)
    assert mask.shape == grid.shape
    assert mask.sum() == 64 - 9
    assert mask[:, :, 3].sum() == 55 and mask[:, :, [0, 1, 2, 4, 5, 6]].sum() == 0
    assert not mask[5, 4, 3] and mask[2, 1, 3] and mask[9, 8, 3] and not mask[10, 8, 3]


@GRIDS
def test_two_contours_on_one_slice_and_other_slices(grid):
    a = square((0.5, 0.5), (3.5, 2.5), 2)  # 3 x 2
    b = square((6.5, 5.5), (10.5, 9.5), 2)  # 4 x 4
    c = square((4.5, 4.5), (5.5, 5.5), 6)  # one voxel on the last slice
    mask = rasterise_contours(_world(grid, a, b, c), grid)
    assert mask[:, :, 2].sum() == 6 + 16
    assert mask[:, :, 6].sum() == 1 and mask[5, 5, 6]
    assert mask.sum() == 23


def test_overlapping_contours_cancel_by_even_odd():
    a = square((0.5, 0.5), (4.5, 4.5), 1)  # 16
    b = square((2.5, 2.5), (6.5, 6.5), 1)  # 16, sharing a 2 x 2 block
    mask = rasterise_contours(_world(OBLIQUE, a, b), OBLIQUE)
    assert mask.sum() == 16 + 16 - 2 * 4
    assert not mask[3, 3, 1] and mask[1, 1, 1] and mask[6, 6, 1]


@GRIDS
def test_centres_on_the_outline_follow_the_half_open_rule(grid):
    # vertices on voxel centres: left and low edges are inside, right and high edges outside
    # for rows (j 2..5), while for columns the left edge is out, the right edge in (i 3..6)
    mask = rasterise_contours(_world(grid, square((2, 2), (6, 6), 4)), grid)
    assert mask.sum() == 16
    assert mask[3:7, 2:6, 4].all()


def test_triangle_matches_an_independent_point_in_polygon_test():
    tri = np.array([[0.3, 0.6, 5], [11.7, 1.2, 5], [2.2, 9.8, 5]])
    mask = rasterise_contours(_world(OBLIQUE, tri), OBLIQUE)
    i, j = np.meshgrid(np.arange(13), np.arange(11), indexing="ij")
    inside = np.ones_like(i, dtype=bool)
    for (x0, y0, _), (x1, y1, _) in zip(tri, np.roll(tri, -1, axis=0)):
        side = (x1 - x0) * (j - y0) - (y1 - y0) * (i - x0)
        assert np.abs(side).min() > 1e-6  # no centre on an edge: the oracle is unambiguous
        inside &= side > 0  # counter-clockwise in (i, j)
    assert inside.sum() > 30
    assert np.array_equal(mask[:, :, 5], inside)
    assert mask.sum() == inside.sum()


def test_contour_across_slices_is_a_geometry_error():
    tilted = square((1.5, 1.5), (5.5, 5.5), 2)
    tilted[2:, 2] = 3  # half the points on the next slice
    with pytest.raises(GeometryError, match="does not lie in one slice .* drawn on"):
        rasterise_contours(_world(OBLIQUE, tilted), OBLIQUE)
    with pytest.raises(GeometryError, match="up to 0.50 slices from"):
        rasterise_contours(_world(OBLIQUE, square((1.5, 1.5), (5.5, 5.5), 2.5)), OBLIQUE)


def test_contour_with_too_few_points_is_an_input_error():
    with pytest.raises(InputError, match=r"contour 0 has shape \(2, 3\); expected"):
        rasterise_contours([np.zeros((2, 3))], OBLIQUE)


def test_contours_outside_the_grid_are_left_out_and_clipped():
    far = square((1.5, 1.5), (3.5, 3.5), 40)
    wide = square((-5.5, -5.5), (2.5, 1.5), 0)  # centres i 0..2, j 0..1 inside the grid
    mask = rasterise_contours(_world(OBLIQUE, far, wide), OBLIQUE)
    assert mask.sum() == 3 * 2


# --- RTSTRUCT files --------------------------------------------------------------------------


def _square_with_hole(grid: Geometry) -> list[np.ndarray]:
    return _world(grid, square((1.5, 0.5), (9.5, 8.5), 3), square((3.5, 2.5), (6.5, 5.5), 3))


def test_read_rtstruct_single_roi(tmp_path):
    rs = write_rtstruct(tmp_path / "rs.dcm", {"GTV": _square_with_hole(OBLIQUE)})
    reference = Volume(np.zeros(OBLIQUE.shape, np.float32), OBLIQUE)
    vol = read_rtstruct(rs, reference)
    assert vol.array.dtype == np.uint8 and vol.geometry == OBLIQUE
    assert vol.array.sum() == 55 and set(np.unique(vol.array)) == {0, 1}
    assert vol.modality == "SEG" and vol.meta["roi"] == "GTV"
    assert rtstruct_roi_names(rs) == ["GTV"]


def test_read_rtstruct_chooses_roi_by_name(tmp_path):
    rois = {
        "GTV": _square_with_hole(OBLIQUE),
        "Lung": _world(OBLIQUE, square((0.5, 0.5), (2.5, 2.5), 1)),
    }
    rs = write_rtstruct(tmp_path / "rs.dcm", rois)
    with pytest.raises(InputError, match=r"holds 2 ROIs \('GTV', 'Lung'\); choose one by name"):
        read_rtstruct(rs, OBLIQUE)
    assert read_rtstruct(rs, OBLIQUE, roi="lung").array.sum() == 4
    assert read_rtstruct(rs, OBLIQUE, roi="GTV").array.sum() == 55
    with pytest.raises(InputError, match=r"no ROI named 'PTV'; its ROIs are 'GTV', 'Lung'"):
        read_rtstruct(rs, OBLIQUE, roi="PTV")


def test_read_rtstruct_errors(tmp_path):
    points = write_rtstruct(
        tmp_path / "points.dcm",
        {"marker": _world(OBLIQUE, square((1.5, 1.5), (2.5, 2.5), 1))},
        kinds={"marker": "POINT"},
    )
    with pytest.raises(InputError, match="'marker' has no closed planar contour .*1 open"):
        read_rtstruct(points, OBLIQUE)
    other = write_rtstruct(tmp_path / "ct.dcm", {"GTV": []}, modality="CT")
    with pytest.raises(InputError, match="is a DICOM CT, expected an RTSTRUCT"):
        read_rtstruct(other, OBLIQUE)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"not dicom at all" * 3)
    with pytest.raises(InputError, match="cannot read RTSTRUCT .* as DICOM"):
        read_rtstruct(garbage, OBLIQUE)
    far = write_rtstruct(
        tmp_path / "far.dcm", {"GTV": _world(OBLIQUE, square((1.5, 1.5), (3.5, 3.5), 40))}
    )
    with pytest.raises(GeometryError, match="does not cover any voxel centre"):
        read_rtstruct(far, OBLIQUE)
    with pytest.raises(InputError, match="does not exist"):
        read_rtstruct(tmp_path / "missing.dcm", OBLIQUE)


# --- DICOM SEG -------------------------------------------------------------------------------


@pytest.fixture
def ct_series(tmp_path) -> tuple[Path, Volume]:
    folder = write_ct_series(tmp_path / "ct")
    return folder, read_volume(folder)


def _labels(shape: tuple[int, int, int]) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[1:4, 2:6, 1:3] = 1  # 24 voxels on slices 1-2
    labels[5:8, 0:3, 4:6] = 2  # 18 voxels on slices 4-5; slices 0, 3 and 6 empty
    labels[0, 7, 5] = 1  # a lone voxel in a corner
    return labels


def test_seg_read_back_voxel_for_voxel(ct_series, tmp_path):
    folder, ct = ct_series
    labels = _labels(ct.shape)
    seg = write_seg(tmp_path / "seg.dcm", folder, labels)
    on_ct = read_dicom_seg(seg, ct)
    assert on_ct.geometry == ct.geometry
    assert on_ct.array.dtype == np.uint8 and on_ct.units == "label"
    assert np.array_equal(on_ct.array, labels)
    assert np.array_equal(read_reference(seg, ct.geometry).array, labels)


def test_seg_own_grid_spans_its_frames(ct_series, tmp_path):
    folder, ct = ct_series
    labels = _labels(ct.shape)
    vol = read_dicom_seg(write_seg(tmp_path / "seg.dcm", folder, labels))
    assert vol.shape == (9, 8, 5)  # slices 1..5 (3 is empty but inside the span)
    assert np.allclose(vol.geometry.origin_mm, ct.geometry.index_to_world([0, 0, 1]), atol=1e-4)
    assert np.allclose(vol.geometry.direction, ct.geometry.direction, atol=1e-6)
    assert np.array_equal(vol.array, labels[:, :, 1:6])


def test_seg_onto_a_flipped_grid_of_the_same_voxels(ct_series, tmp_path):
    folder, ct = ct_series
    labels = _labels(ct.shape)
    g = ct.geometry
    d = g.direction_matrix.copy()
    d[:, 0] *= -1
    flipped = dataclasses.replace(
        g, origin_mm=tuple(g.index_to_world([g.shape[0] - 1, 0, 0])), direction=tuple(d.ravel())
    )
    vol = read_dicom_seg(write_seg(tmp_path / "seg.dcm", folder, labels), flipped)
    assert np.array_equal(vol.array, labels[::-1])


def test_seg_onto_a_cropped_and_a_permuted_grid(ct_series, tmp_path, caplog):
    folder, ct = ct_series
    labels = _labels(ct.shape)
    seg = write_seg(tmp_path / "seg.dcm", folder, labels)
    g = ct.geometry
    cropped = dataclasses.replace(g, shape=(4, 8, 7), origin_mm=tuple(g.index_to_world([2, 0, 0])))
    vol = read_dicom_seg(seg, cropped)
    assert np.array_equal(vol.array, labels[2:6])
    assert "labelled voxels lie outside the reference grid" in caplog.text
    d = g.direction_matrix[:, [1, 0, 2]]
    swapped = Geometry(
        shape=(8, 9, 7),
        spacing_mm=(g.spacing_mm[1], g.spacing_mm[0], g.spacing_mm[2]),
        origin_mm=g.origin_mm,
        direction=tuple(d.ravel()),
    )
    assert np.array_equal(read_dicom_seg(seg, swapped).array, labels.transpose(1, 0, 2))


def test_seg_on_another_grid_is_an_error_unless_resampled(ct_series, tmp_path):
    folder, ct = ct_series
    labels = _labels(ct.shape)
    seg = write_seg(tmp_path / "seg.dcm", folder, labels)
    g = ct.geometry
    shifted = dataclasses.replace(g, origin_mm=tuple(g.index_to_world([0.6, 0.0, 0.0])))
    with pytest.raises(GeometryError, match="on another grid than the reference .*resample=True"):
        read_dicom_seg(seg, shifted)
    resampled = read_dicom_seg(seg, shifted, resample=True)
    assert resampled.geometry == shifted
    # nearest neighbour 0.6 voxel along i: voxel i takes the SEG's voxel i + 1
    assert np.array_equal(resampled.array[:-1], labels[1:])
    assert not resampled.array[-1].any()


def test_fractional_seg_is_thresholded(ct_series, tmp_path):
    folder, ct = ct_series
    labels = _labels(ct.shape)
    seg = write_seg(tmp_path / "frac.dcm", folder, labels, segment_type="FRACTIONAL")
    assert np.array_equal(read_dicom_seg(seg, ct).array, labels)


def test_overlapping_segments_are_an_input_error(ct_series, tmp_path):
    folder, ct = ct_series
    labels = _labels(ct.shape)
    extra = labels == 2  # segment 1 also covers segment 2
    seg = write_seg(tmp_path / "overlap.dcm", folder, labels, overlap=extra)
    with pytest.raises(InputError, match="segments overlap; a label map needs disjoint"):
        read_dicom_seg(seg, ct)


def test_seg_reader_refuses_other_objects(tmp_path):
    rs = write_rtstruct(tmp_path / "rs.dcm", {"GTV": _square_with_hole(OBLIQUE)})
    with pytest.raises(InputError, match="is a DICOM RTSTRUCT, expected a SEG"):
        read_dicom_seg(rs)


# --- read_reference dispatch -----------------------------------------------------------------


def test_read_reference_dispatch(tmp_path):
    rs = write_rtstruct(tmp_path / "rs.dcm", {"GTV": _square_with_hole(OBLIQUE)})
    assert read_reference(rs, OBLIQUE).array.sum() == 55
    with pytest.raises(InputError, match="contours need a grid .*pass reference="):
        read_reference(rs)
    labels = np.zeros((5, 6, 7), np.uint8)
    labels[1:3, 2:4, 3] = 1
    nifti = write_volume(Volume.from_array(labels, spacing_mm=(2, 2, 3)), tmp_path / "m.nii.gz")
    got = read_reference(nifti, OBLIQUE)  # an image keeps its own grid
    assert got.shape == (5, 6, 7) and got.array.sum() == 4 and got.units == "label"
    ct_file = write_rtstruct(tmp_path / "ct.dcm", {"GTV": []}, modality="CT")
    with pytest.raises(InputError, match="is a DICOM CT; a reference mask must be a SEG or an"):
        read_reference(ct_file, OBLIQUE)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="is not a reference mask: expected an image"):
        read_reference(text, OBLIQUE)
    with pytest.raises(InputError, match="does not exist"):
        read_reference(tmp_path / "nothing.dcm", OBLIQUE)


# --- load_case and dataset indexing (train / finetune) -----------------------------------------


def _pet_on(ct: Volume, path: Path) -> Path:
    pet = np.random.default_rng(4).uniform(0.0, 5.0, ct.shape).astype(np.float32)
    return write_volume(Volume(pet, ct.geometry), path)


def test_load_case_reads_dicom_labels_onto_the_ct_grid(ct_series, tmp_path):
    folder, ct = ct_series
    pet = _pet_on(ct, tmp_path / "pet.nii.gz")
    labels = _labels(ct.shape)
    seg = write_seg(tmp_path / "seg.dcm", folder, labels)
    case = load_case(ct=folder, pet=pet, label=seg)
    assert case.label is not None and case.label.geometry == case.ct.geometry
    assert np.array_equal(case.label.array, labels)

    ct_nifti = write_volume(ct, tmp_path / "c_0000.nii.gz")
    g = ct.geometry
    rs = write_rtstruct(
        tmp_path / "rs.dcm",
        {"GTV": [g.index_to_world(square((1.5, 0.5), (6.5, 5.5), 2))]},  # 5 x 5
    )
    case = load_case(ct=ct_nifti, pet=pet, label=rs)
    assert case.label is not None and case.label.geometry.same_grid(case.ct.geometry)
    assert case.label.array.sum() == 25 and case.label.array[2:7, 1:6, 2].all()


def test_index_dataset_accepts_dcm_labels(tmp_path):
    from mefn.data.datasets import index_dataset

    images, labels = tmp_path / "imagesTr", tmp_path / "labelsTr"
    images.mkdir()
    labels.mkdir()
    for case in ("a_1_1", "b_2_1", "c_3_1"):
        for channel in ("0000", "0001"):
            (images / f"{case}_{channel}.nii.gz").write_bytes(b"x")
    (labels / "a_1_1.dcm").write_bytes(b"x")
    (labels / "b_2_1.nii.gz").write_bytes(b"x")
    (labels / "b_2_1.dcm").write_bytes(b"x")  # NIfTI wins when both exist
    entries = {e.case_id: e for e in index_dataset(tmp_path, require_labels=False)}
    assert entries["a_1_1"].label == labels / "a_1_1.dcm"
    assert entries["b_2_1"].label == labels / "b_2_1.nii.gz"
    assert entries["c_3_1"].label is None
    with pytest.raises(InputError, match="1 case.* have no label \\(first: c_3_1\\)"):
        index_dataset(tmp_path)


# --- real data: MIRP's rasterisation of the same RTSTRUCT ----------------------------------


@pytest.mark.parametrize("case", ["STS_004", "STS_042"])
def test_rtstruct_matches_mirp_mask(shared_data, case):
    base = shared_data / "sts" / case
    ct = read_volume(base / "CT_dicom" / "image")
    mirp = read_volume(base / "CT" / "mask.nii.gz")
    assert ct.geometry.same_grid(mirp.geometry)
    ours = read_rtstruct(base / "CT_dicom" / "mask" / "RS.dcm", ct, roi="GTV_Mass_CT")
    a, b = ours.array > 0, mirp.array > 0
    dice = 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))
    assert dice >= 0.99, f"{case}: Dice {dice:.5f} against MIRP's mask"
