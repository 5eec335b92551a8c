"""DICOM series: ordering, geometry, HU and SUVbw, on tiny series written here and real data."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from support import DRO_IDS, dro_row

from mefn.errors import InputError
from mefn.io.dicom import DicomSeries, find_dicom_series, read_dicom_series, select_series
from mefn.io.readers import read_volume

Writer = Callable[..., Path]


def test_ct_series_geometry_and_hu(
    tmp_path: Path, dicom_writer: Writer, kit: SimpleNamespace
) -> None:
    stored = np.arange(7 * 9 * 5, dtype=np.int16).reshape(7, 9, 5)
    origin = (-20.0, 15.0, 40.0)
    dicom_writer(tmp_path / "ct", stored, "CT", intercept=-1024.0, origin=origin)
    vol = read_dicom_series(tmp_path / "ct")
    assert vol.modality == "CT" and vol.units == "HU"
    assert vol.shape == (7, 9, 5)
    np.testing.assert_array_equal(vol.array, stored.astype(np.float32) - 1024.0)
    assert vol.spacing_mm == pytest.approx((1.5, 2.0, 3.0))
    np.testing.assert_allclose(
        vol.geometry.direction_matrix, np.stack([kit.ROW, kit.COL, kit.NORMAL], 1), atol=1e-9
    )
    # voxel (2, 3, 4) lies at origin + 2*1.5 row + 3*2 col + 4*3 normal
    expected = np.asarray(origin) + 3.0 * kit.ROW + 6.0 * kit.COL + 12.0 * kit.NORMAL
    np.testing.assert_allclose(vol.geometry.index_to_world([2, 3, 4]), expected, atol=1e-6)
    assert vol.meta["n_slices"] == 5


def test_slices_sorted_along_the_normal_not_by_name(tmp_path: Path, dicom_writer: Writer) -> None:
    stored = np.zeros((5, 3, 7), dtype=np.int16)
    stored[..., :] = np.arange(7)[None, None, :] * 10  # slice k holds 10 k
    # a flipped normal: the column cosine reversed makes the normal point -z
    dicom_writer(
        tmp_path / "s", stored, "CT", row=np.array([1.0, 0, 0]), col=np.array([0, -1.0, 0])
    )
    vol = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(vol.array[0, 0, :], np.arange(7) * 10.0)
    assert vol.geometry.direction_matrix[:, 2] == pytest.approx([0, 0, -1])


def test_pet_series_per_slice_slope_to_suv(
    tmp_path: Path, dicom_writer: Writer, kit: SimpleNamespace
) -> None:
    stored = np.full((5, 7, 3), 100, dtype=np.int16)
    slopes = [
        kit.BQML_PER_SUV / 100.0,
        2 * kit.BQML_PER_SUV / 100.0,
        0.5 * kit.BQML_PER_SUV / 100.0,
    ]
    dicom_writer(tmp_path / "pt", stored, "PT", slopes=slopes, tags=kit.PET_TAGS)
    vol = read_dicom_series(tmp_path / "pt")
    assert vol.units == "SUVbw"
    # stored 100 x slope_k: SUV 1, 2 and 0.5 on slices 0, 1, 2
    np.testing.assert_allclose(vol.array[2, 3, :], [1.0, 2.0, 0.5], rtol=1e-5)
    assert vol.meta["suv"]["decay_correction"] == "START"
    assert vol.meta["suv"]["weight_kg"] == 70.0
    assert len(vol.meta["rescale_slopes"]) == 3


def test_folder_with_ct_and_pet_series(
    tmp_path: Path, dicom_writer: Writer, kit: SimpleNamespace
) -> None:
    dicom_writer(tmp_path / "study" / "a", np.zeros((5, 5, 3), np.int16) - 1000, "CT")
    dicom_writer(tmp_path / "study" / "b", np.ones((3, 3, 3), np.int16), "PT", tags=kit.PET_TAGS)
    (tmp_path / "study" / "notes.txt").write_text("not dicom")
    found = find_dicom_series(tmp_path / "study")
    assert [s.modality for s in found] == ["CT", "PT"]
    assert read_dicom_series(tmp_path / "study", modality="PT").shape == (3, 3, 3)
    assert read_volume(tmp_path / "study", modality="CT").array.max() == -1000.0
    with pytest.raises(InputError, match="no MR DICOM series under .*found series: CT"):
        read_dicom_series(tmp_path / "study", modality="MR")


def test_read_volume_from_one_file_of_the_series(tmp_path: Path, dicom_writer: Writer) -> None:
    dicom_writer(tmp_path / "ct", np.zeros((5, 5, 4), np.int16), "CT")
    one = sorted((tmp_path / "ct").iterdir())[0]
    assert read_volume(one).shape == (5, 5, 4)


def test_pet_without_dose_names_the_tag(
    tmp_path: Path, dicom_writer: Writer, kit: SimpleNamespace
) -> None:
    tags = {k: v for k, v in kit.PET_TAGS.items() if k != "RadionuclideTotalDose"}
    dicom_writer(tmp_path / "pt", np.ones((3, 3, 3), np.int16), "PT", tags=tags)
    with pytest.raises(InputError, match="lacks the DICOM tag RadionuclideTotalDose"):
        read_dicom_series(tmp_path / "pt")


def test_missing_slice_is_refused(tmp_path: Path, dicom_writer: Writer) -> None:
    dicom_writer(tmp_path / "ct", np.zeros((3, 3, 6), np.int16), "CT", skip=(2,))
    with pytest.raises(InputError, match="uneven slice spacing .* a slice is missing"):
        read_dicom_series(tmp_path / "ct")


def test_two_slices_at_one_position_are_refused(tmp_path: Path, dicom_writer: Writer) -> None:
    dicom_writer(tmp_path / "ct", np.zeros((3, 3, 2), np.int16), "CT", series_uid="1.2.3")
    dicom_writer(tmp_path / "ct" / "again", np.zeros((3, 3, 1), np.int16), "CT", series_uid="1.2.3")
    with pytest.raises(InputError, match="two slices at the same position"):
        read_dicom_series(tmp_path / "ct")


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM image series found"):
        read_dicom_series(tmp_path)


# --- real data --------------------------------------------------------------------------------


@pytest.mark.parametrize("dro", DRO_IDS)
def test_suv_dro_min_median_max(shared_data: Path, dro: str) -> None:
    row = dro_row(shared_data, dro)
    folder = shared_data / "suv_dro" / dro
    vol = read_dicom_series(folder / "PT")
    mask = read_volume(folder / "mask" / "DRO_mask.nii.gz")
    assert mask.geometry.same_grid(vol.geometry)
    values = vol.array[mask.array > 0]
    got = (float(values.min()), float(np.median(values)), float(values.max()))
    expected = tuple(
        float(row[k]) for k in ("SUVmin_expected", "SUVmed_expected", "SUVmax_expected")
    )
    if dro == "DRO_2_3":
        # CM2ML stores SUVbsa rounded to its rescale slope 0.01 (0.05, 0.26, 1.05): no single
        # factor maps those to 0.20, 1.00, 4.00 at two decimals. We allow one storage step
        # (0.01 x weight / BSA = 0.038 SUVbw).
        step = 0.01 * vol.meta["suv"]["suv_factor"]
        np.testing.assert_allclose(got, expected, atol=step)
    else:
        assert tuple(round(v, 2) for v in got) == expected


def test_sts_pet_dicom_matches_the_published_suv_image(shared_data: Path) -> None:
    from mefn.io.geometry import resample_to

    sts = shared_data / "sts" / "STS_001"
    vol = read_dicom_series(sts / "PET_raw_dicom")
    assert vol.shape == (128, 128, 267)
    assert vol.meta["suv"]["reference_source"] == "SeriesDateTime"
    assert vol.meta["suv"]["injected_dose_bq"] == pytest.approx(3.88777472e8)
    reference = read_volume(sts / "PET" / "image.nii.gz")
    on_grid = resample_to(vol, reference.geometry, interpolation="linear")
    assert float(np.abs(on_grid.array - reference.array).max()) < 1e-3
    assert float(reference.array.max()) > 20.0  # the tumour is in the crop


# --- choosing the PET series (AC over NAC, --pet-series) ---------------------------------------


def _series(
    uid: str, n: int, corrected: tuple[str, ...] | None, description: str = "", modality: str = "PT"
) -> DicomSeries:
    files = tuple(Path(f"/study/{uid}/{k}.dcm") for k in range(n))
    return DicomSeries(uid, modality, files, description=description, corrected_image=corrected)


AC = ("DECY", "ATTN", "SCAT")
NAC = ("DECY", "SCAT")


def test_corrected_image_is_read_with_the_series(
    tmp_path: Path, dicom_writer: Writer, kit: SimpleNamespace
) -> None:
    stored = np.ones((3, 4, 2), np.int16)
    for name, corrected in (("ac", ["DECY", "ATTN"]), ("nac", "DECY"), ("plain", None)):
        tags = dict(kit.PET_TAGS, SeriesDescription=f"PET {name}")
        if corrected is not None:
            tags["CorrectedImage"] = corrected
        dicom_writer(tmp_path / name, stored, "PT", tags=tags)
    found = {s.description: s for s in find_dicom_series(tmp_path)}
    assert found["PET ac"].corrected_image == ("DECY", "ATTN")
    assert found["PET nac"].corrected_image == ("DECY",)
    assert found["PET plain"].corrected_image is None
    assert [found[f"PET {n}"].attenuation_corrected for n in ("ac", "nac", "plain")] == [
        True,
        False,
        None,
    ]


def test_attenuation_corrected_pet_wins_before_the_size_rule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    where = Path("/study")
    ac, nac = _series("1.1", 5, AC, "PET AC"), _series("1.2", 5, NAC, "PET NAC")
    with caplog.at_level(logging.INFO, logger="mefn"):
        assert select_series([nac, ac], "PT", where) is ac
    assert "using PET series 'PET AC' 1.1 (5 files, AC)" in caplog.text
    assert "preferred to 'PET NAC' 1.2 (5 files, NAC)" in caplog.text
    # AC wins even when the NAC series is larger
    big_nac = _series("1.3", 9, NAC)
    assert select_series([big_nac, ac], "PT", where) is ac
    # a series that does not say stands between AC and NAC
    unknown = _series("1.4", 5, None)
    assert select_series([nac, unknown], "PT", where) is unknown
    assert select_series([unknown, ac], "PT", where) is ac
    # among AC series the size rule still holds
    small_ac = _series("1.5", 3, AC)
    assert select_series([small_ac, big_nac, ac], "PT", where) is ac
    # CT series have no such standing: most files, as before
    ct_small, ct_big = _series("2.1", 2, None, modality="CT"), _series("2.2", 7, NAC, modality="CT")
    assert select_series([ct_small, ct_big], "CT", where) is ct_big


def test_ambiguous_pet_series_are_listed_with_the_flag_that_picks_one() -> None:
    where = Path("/study")
    one, two = _series("1.1", 5, AC, "PET WB"), _series("1.2", 5, AC, "PET WB 2")
    nac = _series("1.3", 5, NAC, "PET NAC")
    with pytest.raises(InputError) as info:
        select_series([one, two, nac], "PT", where)
    message = str(info.value)
    assert message == (
        "/study holds 2 PET series of equal size and attenuation correction ("
        "'PET WB' 1.1 (5 files, AC); 'PET WB 2' 1.2 (5 files, AC)); choose one with "
        "--pet-series followed by its SeriesInstanceUID or SeriesDescription"
    )
    with pytest.raises(InputError, match=r"\(5 files\)\); choose one with --series followed"):
        select_series(
            [_series("1.4", 5, None), _series("1.5", 5, None)], "PT", where, option="--series"
        )
    cts = [_series("2.1", 4, None, "CT", "CT"), _series("2.2", 4, None, "CT 2", "CT")]
    with pytest.raises(InputError, match="2 CT series of equal size .*put each series in its own"):
        select_series(cts, "CT", where)


def test_a_pet_series_chosen_by_uid_or_description() -> None:
    where = Path("/study")
    ac, nac = _series("1.1", 5, AC, "PET AC"), _series("1.2", 5, NAC, "PET NAC")
    ct = _series("2.1", 5, None, "CT", "CT")
    pool = [ct, ac, nac]
    assert select_series(pool, "PT", where, choice="1.2") is nac  # the user's word over AC
    assert select_series(pool, "PT", where, choice=" pet nac ") is nac
    assert select_series(pool, "PT", where, choice="PET AC") is ac
    with pytest.raises(
        InputError,
        match=r"no PET series under /study has SeriesInstanceUID or SeriesDescription 'CT'; "
        r"its PET series are: 'PET AC' 1.1 \(5 files, AC\); 'PET NAC' 1.2",
    ):
        select_series(pool, "PT", where, choice="CT")
    twin = _series("1.3", 4, AC, "pet ac")
    with pytest.raises(
        InputError,
        match=r"2 PET series under /study are described 'PET AC' \('PET AC' 1.1 .*'pet ac' 1.3 "
        r"\(4 files, AC\)\); choose one by its SeriesInstanceUID instead",
    ):
        select_series([*pool, twin], "PT", where, choice="PET AC")
    # a choice that matches nothing is an error even with one PET series
    with pytest.raises(InputError, match="has SeriesInstanceUID or SeriesDescription '9.9'"):
        select_series([ct, ac], "PT", where, choice="9.9")
