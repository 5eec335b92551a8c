"""Every input form of a study, and the cases of a folder of many."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mefn.errors import GeometryError, InputError
from mefn.io.discovery import find_case_files, find_cases, load_case
from mefn.io.sitk_bridge import to_sitk, write_volume
from mefn.io.volume import Volume

STUDY = "05-12-2002-NA-PET-CT Ganzkoerper  primaer mit KM-10445"  # spaces, a double one


@pytest.fixture
def vols(kit: SimpleNamespace) -> tuple[Volume, Volume, Volume]:
    ct, pet = kit.ct_pet_pair()
    label = pet.with_array((pet.array > 9).astype(np.uint8))
    return ct, pet, label


def _pair(folder: Path, name: str, ct: Volume, pet: Volume, ct_sfx: str, pet_sfx: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_volume(ct, folder / f"{name}{ct_sfx}.nii.gz")
    write_volume(pet, folder / f"{name}{pet_sfx}.nii.gz")
    return folder


def test_nnunet_pair_from_either_file_or_the_stem(tmp_path: Path, vols: tuple) -> None:
    ct, pet, label = vols
    name = "fdg_0a1b  c2_study 1"
    images = _pair(tmp_path / "imagesTr", name, ct, pet, "_0000", "_0001")
    (tmp_path / "labelsTr").mkdir()
    write_volume(label, tmp_path / "labelsTr" / f"{name}.nii.gz")
    for given in (images / f"{name}_0000.nii.gz", images / f"{name}_0001.nii.gz", images / name):
        files = find_case_files(given)
        assert files.case_id == name and files.layout == "nnunet"
        assert files.ct.name == f"{name}_0000.nii.gz" and files.pet.name == f"{name}_0001.nii.gz"
        assert files.label == tmp_path / "labelsTr" / f"{name}.nii.gz"
    case = load_case(images / f"{name}_0001.nii.gz")
    np.testing.assert_array_equal(case.ct.array, ct.array)
    np.testing.assert_array_equal(case.pet.array, pet.array)
    assert case.ct.units == "HU" and case.pet.units == "SUVbw"
    assert case.label is not None and int(case.label.array.sum()) == int(label.array.sum())
    assert case.target_geometry.same_grid(ct.geometry)  # results on the CT grid
    assert case.provenance["layout"] == "nnunet"
    assert case.provenance["files"]["pet"].endswith(f"{name}_0001.nii.gz")


def test_hecktor_pair_from_either_file(tmp_path: Path, vols: tuple) -> None:
    ct, pet, label = vols
    images = _pair(tmp_path / "imagesTr", "CHUM-013", ct, pet, "__CT", "__PT")
    (tmp_path / "labelsTr").mkdir()
    write_volume(label, tmp_path / "labelsTr" / "CHUM-013.nii.gz")
    for given in ("CHUM-013__CT.nii.gz", "CHUM-013__PT.nii.gz"):
        files = find_case_files(images / given)
        assert (files.case_id, files.layout) == ("CHUM-013", "hecktor")
        assert files.label is not None
    assert load_case(images / "CHUM-013__CT.nii.gz").case_id == "CHUM-013"


def test_four_d_nifti(tmp_path: Path, vols: tuple) -> None:
    import SimpleITK as sitk

    ct, pet, _ = vols
    pet_on_ct = ct.with_array(np.linspace(0, 9, ct.array.size, dtype=np.float32).reshape(ct.shape))
    path = tmp_path / "case 7.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([to_sitk(ct), to_sitk(pet_on_ct)]), str(path))
    files = find_case_files(path)
    assert files.is_4d and files.layout == "4d" and files.case_id == "case 7"
    case = load_case(path)
    np.testing.assert_array_equal(case.ct.array, ct.array)
    np.testing.assert_array_equal(case.pet.array, pet_on_ct.array)
    assert case.provenance["overlap"]["same_grid"]


def test_four_d_with_three_volumes_is_refused(tmp_path: Path, vols: tuple) -> None:
    import SimpleITK as sitk

    ct = vols[0]
    path = tmp_path / "three.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([to_sitk(ct)] * 3), str(path))
    with pytest.raises(
        InputError, match="is 4D with 3 volumes; a CT\\+PET 4D image must hold exactly 2"
    ):
        find_case_files(path)


def _autopet_study(
    root: Path,
    patient: str,
    ct: Volume,
    pet: Volume,
    label: Volume | None,
    names: tuple[str, str] = ("CTres", "SUV"),
) -> Path:
    study = root / patient / STUDY
    study.mkdir(parents=True)
    write_volume(ct, study / f"{names[0]}.nii.gz")
    write_volume(pet, study / f"{names[1]}.nii.gz")
    if label is not None:
        write_volume(label, study / "SEG.nii.gz")
    return study


def test_autopet_study_folder(tmp_path: Path, vols: tuple) -> None:
    ct, pet, label = vols
    study = _autopet_study(tmp_path, "PETCT_0af7ffe12a", ct, pet, label)
    files = find_case_files(study)
    assert files.layout == "autopet" and files.output_on_pet
    assert files.case_id == f"PETCT_0af7ffe12a_{STUDY}"
    assert files.ct.name == "CTres.nii.gz" and files.label is not None
    assert find_case_files(study / "SUV.nii.gz") == files  # a file of the study works too
    case = load_case(study)
    assert case.output_geometry is not None and case.target_geometry.same_grid(pet.geometry)
    assert case.label is not None


def test_autopet_ct_and_pet_names(tmp_path: Path, vols: tuple) -> None:
    ct, pet, _ = vols
    study = _autopet_study(tmp_path, "PETCT_1", ct, pet, None, names=("CT", "PET"))
    files = find_case_files(study)
    assert (files.ct.name, files.pet.name, files.label) == ("CT.nii.gz", "PET.nii.gz", None)


def test_autopet_study_without_pet(tmp_path: Path, vols: tuple) -> None:
    study = tmp_path / "PETCT_2" / STUDY
    study.mkdir(parents=True)
    write_volume(vols[0], study / "CTres.nii.gz")
    with pytest.raises(InputError, match=r"has no PET \(SUV or PET\): looked for .*SUV\{\.nii\.gz"):
        find_case_files(study)


def test_dicom_folder_with_ct_and_pt(tmp_path: Path, kit: SimpleNamespace) -> None:
    folder = tmp_path / "patient 1"
    stored_ct = np.full((9, 7, 5), 24, np.int16)  # 24 - 1024 = -1000 HU
    stored_ct[2:7, 2:5] = 1064  # a body of 40 HU in the air
    kit.write_series(folder / "ct", stored_ct, "CT", intercept=-1024.0, spacing=(2, 2, 3))
    stored_pt = np.full((5, 5, 3), 200, np.int16)
    kit.write_series(
        folder / "pt",
        stored_pt,
        "PT",
        slopes=[kit.BQML_PER_SUV / 100] * 3,
        spacing=(4, 4, 4),
        tags=kit.PET_TAGS,
    )
    files = find_case_files(folder)
    assert files.layout == "dicom" and files.ct_series and files.pet_series
    case = load_case(folder)
    assert (float(case.ct.array.min()), float(case.ct.array.max())) == (-1000.0, 40.0)
    np.testing.assert_allclose(case.pet.array, 2.0, rtol=1e-5)
    assert case.provenance["suv_conversion"]["units"] == "BQML"


def test_dicom_folder_without_pet(tmp_path: Path, kit: SimpleNamespace) -> None:
    kit.write_series(tmp_path / "p", np.zeros((3, 3, 3), np.int16), "CT")
    with pytest.raises(InputError, match="must hold a CT and a PT series, found CT"):
        find_case_files(tmp_path / "p")


def test_explicit_ct_and_pet(tmp_path: Path, vols: tuple) -> None:
    ct, pet, label = vols
    write_volume(ct, tmp_path / "my ct.nrrd")
    write_volume(pet, tmp_path / "my pet.mha")
    write_volume(label, tmp_path / "lab.nii.gz")
    case = load_case(
        ct=tmp_path / "my ct.nrrd",
        pet=tmp_path / "my pet.mha",
        label=tmp_path / "lab.nii.gz",
        case_id="x1",
    )
    assert (case.case_id, case.layout) == ("x1", "explicit")
    assert case.label is not None
    with pytest.raises(InputError, match="PET .*nope.mha does not exist"):
        find_case_files(ct=tmp_path / "my ct.nrrd", pet=tmp_path / "nope.mha")
    with pytest.raises(InputError, match="found only ct"):
        find_case_files(ct=tmp_path / "my ct.nrrd")


def test_ct_without_its_pet(tmp_path: Path, vols: tuple) -> None:
    write_volume(vols[0], tmp_path / "case_0000.nii.gz")
    with pytest.raises(
        InputError,
        match=r"found case_0000.nii.gz but not its PET: looked for .*case_0001\{\.nii\.gz",
    ):
        find_case_files(tmp_path / "case_0000.nii.gz")
    write_volume(vols[0], tmp_path / "h__CT.nii.gz")
    with pytest.raises(InputError, match="not its PET: looked for .*h__PT"):
        find_case_files(tmp_path / "h")


def test_lone_image_and_unknown_stem(tmp_path: Path, vols: tuple) -> None:
    write_volume(vols[0], tmp_path / "ct.nii.gz")
    with pytest.raises(InputError, match="single 3D image and its partner cannot be found"):
        find_case_files(tmp_path / "ct.nii.gz")
    with pytest.raises(InputError, match="does not exist, and no case files start with it"):
        find_case_files(tmp_path / "ghost")


def test_non_overlapping_pair_and_pet_in_bqml(tmp_path: Path, kit: SimpleNamespace) -> None:
    ct, pet = kit.ct_pet_pair(pet_origin=(-28.0, -22.0, 500.0))
    _pair(tmp_path, "far", ct, pet, "_0000", "_0001")
    with pytest.raises(
        GeometryError, match="PET and CT do not overlap: PET covers z 498 to 526 mm"
    ):
        load_case(tmp_path / "far_0000.nii.gz")
    ct, pet = kit.ct_pet_pair()
    _pair(tmp_path, "bq", ct, pet.with_array(pet.array * 5000), "_0000", "_0001")
    with pytest.raises(InputError, match="looks like Bq/mL"):
        load_case(tmp_path / "bq")


def test_find_cases_nnunet_and_hecktor(tmp_path: Path, vols: tuple) -> None:
    ct, pet, _ = vols
    for name in ("b  case", "a case"):
        _pair(tmp_path / "nn" / "imagesTr", name, ct, pet, "_0000", "_0001")
    cases = find_cases(tmp_path / "nn")
    assert [c.case_id for c in cases] == ["a case", "b  case"]
    for name in ("MDA-002", "CHUP-001"):
        _pair(tmp_path / "hk", name, ct, pet, "__CT", "__PT")
    assert [c.case_id for c in find_cases(tmp_path / "hk")] == ["CHUP-001", "MDA-002"]
    with pytest.raises(InputError, match="holds 2 cases, not one"):
        find_case_files(tmp_path / "hk")


def test_find_cases_autopet_root_and_study_folders(tmp_path: Path, vols: tuple) -> None:
    ct, pet, label = vols
    _autopet_study(tmp_path / "root", "PETCT_b", ct, pet, label)
    _autopet_study(tmp_path / "root", "PETCT_a", ct, pet, None)
    cases = find_cases(tmp_path / "root")
    assert [c.case_id for c in cases] == [f"PETCT_a_{STUDY}", f"PETCT_b_{STUDY}"]
    assert all(c.layout == "autopet" for c in cases)
    # a folder of study folders
    flat = tmp_path / "flat"
    for name in ("s1", "s2"):
        (flat / name).mkdir(parents=True)
        write_volume(ct, flat / name / "CTres.nii.gz")
        write_volume(pet, flat / name / "SUV.nii.gz")
    assert [c.case_id for c in find_cases(flat)] == ["s1", "s2"]
    assert find_cases(tmp_path / "root" / "PETCT_a" / STUDY / "..") != []
    (tmp_path / "empty").mkdir()
    assert find_cases(tmp_path / "empty") == []
    with pytest.raises(InputError, match="is not a folder"):
        find_cases(tmp_path / "missing")


def test_find_cases_reports_a_ct_without_pet(tmp_path: Path, vols: tuple) -> None:
    _pair(tmp_path, "ok", vols[0], vols[1], "_0000", "_0001")
    write_volume(vols[0], tmp_path / "lonely_0000.nii.gz")
    with pytest.raises(InputError, match="found lonely_0000.nii.gz but not its PET"):
        find_cases(tmp_path)


# --- the right PET series, and a PET that cannot be one ---------------------------------------


def _ac_nac_study(
    folder: Path, kit: SimpleNamespace, nac: tuple[str, ...] = ("DECY",)
) -> dict[str, str]:
    """A DICOM study: CT (a 40 HU body in air), an AC PET of SUV 2 and a PET of SUV 0.5
    whose CorrectedImage is ``nac``, both 5x5x3 files. Returns the PET UIDs by name."""
    stored_ct = np.full((9, 7, 5), 24, np.int16)
    stored_ct[2:7, 2:5] = 1064
    kit.write_series(folder / "ct", stored_ct, "CT", intercept=-1024.0, spacing=(2, 2, 3))
    uids = {}
    for name, suv, corrected in (("ac", 2.0, ("DECY", "ATTN")), ("nac", 0.5, nac)):
        uids[name] = f"1.2.826.0.1.3680043.8.498.{len(uids) + 7}"
        kit.write_series(
            folder / name,
            np.full((5, 5, 3), 100, np.int16),
            "PT",
            slopes=[suv * kit.BQML_PER_SUV / 100] * 3,
            spacing=(4, 4, 4),
            series_uid=uids[name],
            tags={
                **kit.PET_TAGS,
                "SeriesDescription": f"PET {name.upper()}",
                "CorrectedImage": list(corrected),
            },
        )
    return uids


def test_dicom_study_with_ac_and_nac_pet_takes_the_ac_one(
    tmp_path: Path, kit: SimpleNamespace
) -> None:
    folder = tmp_path / "study"
    uids = _ac_nac_study(folder, kit)
    files = find_case_files(folder)
    assert files.pet_series == uids["ac"]
    np.testing.assert_allclose(load_case(files=files).pet.array, 2.0, rtol=1e-5)
    # the same study seen as a folder of cases (its series in subfolders) is one case
    (found,) = find_cases(folder)
    assert (found.case_id, found.pet_series) == ("study", uids["ac"])
    # --pet-series picks the other, by description or by UID
    for choice in ("pet nac", uids["nac"]):
        files = find_case_files(folder, pet_series=choice)
        assert files.pet_series == uids["nac"]
    np.testing.assert_allclose(load_case(files=files).pet.array, 0.5, rtol=1e-5)
    assert find_cases(folder, pet_series="PET NAC")[0].pet_series == uids["nac"]
    # explicit --ct/--pet with a PET DICOM folder
    files = find_case_files(ct=folder / "ct", pet=folder, pet_series="PET NAC")
    assert (files.layout, files.pet_series) == ("explicit", uids["nac"])
    np.testing.assert_allclose(load_case(files=files).pet.array, 0.5, rtol=1e-5)
    # without a choice the explicit PET folder is read with the same rule: AC
    case = load_case(ct=folder / "ct", pet=folder)
    assert case.pet.meta["series_uid"] == uids["ac"]


def test_two_ac_pet_series_of_one_size_are_ambiguous(tmp_path: Path, kit: SimpleNamespace) -> None:
    folder = tmp_path / "study"
    uids = _ac_nac_study(folder, kit, nac=("ATTN",))
    expected = (
        r"holds 2 PET series of equal size and attenuation correction \('PET AC' "
        + uids["ac"]
        + r" \(3 files, AC\); 'PET NAC' .* choose one with --pet-series followed by its "
        r"SeriesInstanceUID or SeriesDescription$"
    )
    with pytest.raises(InputError, match=expected):
        find_case_files(folder)
    with pytest.raises(InputError, match=expected):  # not "study/ct must hold a CT and a PT"
        find_cases(folder)
    with pytest.raises(InputError, match="no PET series under .* 'PET MAC'; its PET series are"):
        find_case_files(folder, pet_series="PET MAC")


def test_a_pet_series_choice_needs_dicom_input(
    tmp_path: Path, kit: SimpleNamespace, vols: tuple
) -> None:
    _pair(tmp_path / "nn", "c", vols[0], vols[1], "_0000", "_0001")
    with pytest.raises(InputError, match=r"PET series \('PET AC'\) was chosen, but .* is a nnunet"):
        find_case_files(tmp_path / "nn" / "c_0000.nii.gz", pet_series="PET AC")
    with pytest.raises(InputError, match="the cases in .* are not DICOM series; drop --pet"):
        find_cases(tmp_path / "nn", pet_series="PET AC")
    with pytest.raises(InputError, match=r"but the PET .*c_0001.nii.gz is not a folder of DICOM"):
        find_case_files(
            ct=tmp_path / "nn" / "c_0000.nii.gz",
            pet=tmp_path / "nn" / "c_0001.nii.gz",
            pet_series="PET AC",
        )


def test_a_folder_of_dicom_studies_with_one_pet_description(
    tmp_path: Path, kit: SimpleNamespace
) -> None:
    uids = {name: _ac_nac_study(tmp_path / "root" / name, kit) for name in ("p2", "p1")}
    cases = find_cases(tmp_path / "root")
    assert [(c.case_id, c.pet_series) for c in cases] == [
        ("p1", uids["p1"]["ac"]),
        ("p2", uids["p2"]["ac"]),
    ]
    cases = find_cases(tmp_path / "root", pet_series="PET NAC")
    assert [c.pet_series for c in cases] == [uids["p1"]["nac"], uids["p2"]["nac"]]


def test_a_pet_without_uptake_in_the_body_is_refused(tmp_path: Path, kit: SimpleNamespace) -> None:
    ct, pet = kit.ct_pet_pair()
    _pair(tmp_path, "zero", ct, pet.with_array(np.zeros_like(pet.array)), "_0000", "_0001")
    with pytest.raises(InputError, match=r"PET has no voxel above 0 \(values 0 to 0\)"):
        load_case(tmp_path / "zero_0000.nii.gz")
    air = ct.with_array(np.full_like(ct.array, -1000.0))
    _pair(tmp_path, "air", air, pet, "_0000", "_0001")
    with pytest.raises(InputError, match="no voxel above 0 inside the body seen on the CT"):
        load_case(tmp_path / "air_0000.nii.gz")
    # `mefn info` reads without the checks and reports them itself
    assert load_case(tmp_path / "air_0000.nii.gz", check_units=False).case_id == "air"
