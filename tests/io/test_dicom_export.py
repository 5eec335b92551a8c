"""DICOM SEG and Parametric Map outputs: round trips through highdicom and pydicom on a tiny
oblique CT series, coded terms, references to the CT, and every refusal."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import config as pydicom_config
from pydicom.uid import generate_uid
from support import BQML_PER_SUV, PET_TAGS, write_series

from mefn import __version__
from mefn.errors import GeometryError, InputError
from mefn.io.dicom import read_dicom_series
from mefn.io.dicom_export import (
    AlgorithmInfo,
    is_dicom_ct,
    read_source_ct,
    require_dicom_ct,
    segment_code,
    write_dicom_seg,
    write_parametric_map,
)
from mefn.io.discovery import find_case_files, load_case
from mefn.io.sitk_bridge import write_volume
from mefn.io.volume import Geometry, Volume

SHAPE = (9, 7, 6)  # columns (i), rows (j), slices (k): odd and all different
SPACING = (1.5, 2.0, 3.0)
ALGORITHM = AlgorithmInfo(model_name="tiny_hecktor", weights_sha256="ab" * 32)
HECKTOR = {"0": "background", "1": "GTVp", "2": "GTVn"}


def _ct_series(folder: Path, **tags: Any) -> tuple[Geometry, list[Any]]:
    """An oblique CT series (shuffled file names) and its grid and datasets as read back."""
    rng = np.random.default_rng(3)
    stored = rng.integers(0, 2000, SHAPE).astype(np.int16)
    all_tags = {"FrameOfReferenceUID": generate_uid(), **tags}
    write_series(folder, stored, "CT", spacing=SPACING, intercept=-1024.0, tags=all_tags)
    geometry = read_dicom_series(folder).geometry
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]
    return geometry, datasets


def _slice_order(datasets: list[Any], geometry: Geometry) -> list[Any]:
    normal = geometry.direction_matrix[:, 2]
    return sorted(
        datasets, key=lambda ds: float(np.asarray(ds.ImagePositionPatient, float) @ normal)
    )


@contextlib.contextmanager
def _strict_reading() -> Iterator[None]:
    """pydicom raises on any invalid value while reading (instead of warning)."""
    before = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.RAISE
    try:
        yield
    finally:
        pydicom_config.settings.reading_validation_mode = before


def _two_label_mask() -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[1:4, 2:5, 1:3] = 1
    mask[6:8, 0:2, 3:5] = 2
    mask[8, 6, 5] = 1  # the last corner voxel: catches a flipped axis
    return mask


def test_seg_round_trip_two_labels_on_the_ct_grid(tmp_path: Path) -> None:
    geometry, datasets = _ct_series(tmp_path / "ct")
    mask = _two_label_mask()
    out = write_dicom_seg(mask, geometry, datasets, tmp_path / "c_seg.dcm", HECKTOR, ALGORITHM)
    assert out == tmp_path / "c_seg.dcm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c_seg.dcm", "ct"]  # no temp file

    with _strict_reading():
        ds = pydicom.dcmread(out)
    seg = hd.seg.Segmentation.from_dataset(ds)
    ordered = _slice_order(datasets, geometry)
    uids = [d.SOPInstanceUID for d in ordered]
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    np.testing.assert_array_equal(frames.transpose(2, 1, 0), mask)

    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and ds.SegmentationType == "BINARY"
    assert ds.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    assert ds.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert ds.PatientID == "P1" and ds.SeriesInstanceUID != datasets[0].SeriesInstanceUID
    (ref,) = ds.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == datasets[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence} == set(uids)
    # each stored frame sits exactly on the CT slice it references
    position = {d.SOPInstanceUID: np.asarray(d.ImagePositionPatient, float) for d in ordered}
    assert ds.NumberOfFrames < 2 * SHAPE[2]  # empty frames were left out
    for frame in ds.PerFrameFunctionalGroupsSequence:
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        placed = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float)
        np.testing.assert_allclose(placed, position[source], atol=1e-4)

    first, second = ds.SegmentSequence
    assert (first.SegmentLabel, second.SegmentLabel) == ("GTVp", "GTVn")
    for item in (first, second):
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "mefn" and algorithm.AlgorithmVersion == __version__
        assert "tiny_hecktor" in algorithm.AlgorithmParameters
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == "372087000"
    assert second.SegmentedPropertyTypeCodeSequence[0].CodeValue == "14799000"
    assert second.AnatomicRegionSequence[0].CodeValue == "59441001"
    assert "AnatomicRegionSequence" not in first
    assert ds.ManufacturerModelName == "tiny_hecktor" and ds.DeviceSerialNumber == "ab" * 8


def test_seg_of_an_empty_mask_and_caller_datasets_untouched(tmp_path: Path) -> None:
    geometry, datasets = _ct_series(tmp_path / "ct")
    assert "PatientName" not in datasets[0]  # a Type 2 attribute highdicom needs
    mask = np.zeros(SHAPE, dtype=np.uint8)
    labels = {"0": "background", "1": "lesion"}
    path = write_dicom_seg(mask, geometry, datasets, tmp_path / "e_seg.dcm", labels, ALGORITHM)
    seg = hd.seg.segread(path)
    uids = [d.SOPInstanceUID for d in _slice_order(datasets, geometry)]
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    assert frames.shape == (SHAPE[2], SHAPE[1], SHAPE[0]) and not frames.any()
    (item,) = seg.SegmentSequence
    assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"  # Neoplasm
    assert seg.PatientName == ""
    assert "PatientName" not in datasets[0]


def test_unknown_label_names_are_coded_as_lesion() -> None:
    assert segment_code("GTVp").type[0] == "372087000"
    assert segment_code(" gtvn ").anatomic_region == ("59441001", "SCT", "Lymph node")
    assert segment_code("Tumour").type[0] == "108369006"
    other = segment_code("class_3")
    assert other.type == ("52988006", "SCT", "Lesion") and other.anatomic_region is None


def test_parametric_map_round_trip_in_float32(tmp_path: Path) -> None:
    geometry, datasets = _ct_series(tmp_path / "ct")
    rng = np.random.default_rng(5)
    u = rng.random(SHAPE).astype(np.float32)
    u[0, 0, 0], u[-1, -1, -1], u[4, 3, 2] = 0.0, 1.0, np.float32(1e-7)
    path = write_parametric_map(u, geometry, datasets, tmp_path / "c_pm.dcm", ALGORITHM)

    with _strict_reading():
        ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30" and ds.BitsAllocated == 32
    assert "FloatPixelData" in ds and ds.NumberOfFrames == SHAPE[2]
    assert ds.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == datasets[0].SeriesInstanceUID
    index = {d.SOPInstanceUID: k for k, d in enumerate(_slice_order(datasets, geometry))}
    pixels = ds.pixel_array
    assert pixels.dtype == np.float32
    back = np.full(SHAPE, np.nan, dtype=np.float32)
    for n, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        back[:, :, index[source]] = pixels[n].T
    np.testing.assert_array_equal(back, u)

    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    unit = mapping.MeasurementUnitsCodeSequence[0]
    assert (unit.CodeValue, unit.CodingSchemeDesignator) == ("1", "UCUM")
    assert (mapping.RealWorldValueSlope, mapping.RealWorldValueIntercept) == (1.0, 0.0)
    quantity = mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0]
    assert quantity.CodeMeaning == "Evidential uncertainty"
    # highdicom reads it back, real world values applied
    volume = hd.pm.ParametricMap.from_dataset(ds).get_volume()
    assert volume.spatial_shape == (SHAPE[2], SHAPE[1], SHAPE[0])
    assert float(volume.array.max()) == 1.0 and float(volume.array.min()) == 0.0


def test_a_calibrated_map_says_it_is_an_error_probability(tmp_path: Path) -> None:
    geometry, datasets = _ct_series(tmp_path / "ct")
    u = np.full(SHAPE, 0.25, np.float32)
    path = write_parametric_map(
        u, geometry, datasets, tmp_path / "p.dcm", ALGORITHM, calibrated=True
    )
    with _strict_reading():
        ds = pydicom.dcmread(path)
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.LUTLabel == "p_wrong"
    assert "probability that the voxel's label is wrong" in mapping.LUTExplanation
    quantity = mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0]
    assert quantity.CodeMeaning == "Probability of a wrong label"


def test_refusals(tmp_path: Path) -> None:
    geometry, datasets = _ct_series(tmp_path / "ct")
    mask = _two_label_mask()
    seg = tmp_path / "x_seg.dcm"
    with pytest.raises(GeometryError, match=r"shape \(9, 7, 5\) but its grid is \(9, 7, 6\)"):
        write_dicom_seg(mask[:, :, :5], geometry, datasets, seg, HECKTOR, ALGORITHM)
    shifted = Geometry(SHAPE, SPACING, (0.0, 0.0, 0.0), geometry.direction)
    with pytest.raises(GeometryError, match="not the grid of CT series .*slice positions"):
        write_dicom_seg(mask, shifted, datasets, seg, HECKTOR, ALGORITHM)
    other_grid = Geometry((7, 9, 6), SPACING, geometry.origin_mm, geometry.direction)
    with pytest.raises(GeometryError, match=r"shape \(7, 9, 6\) vs the CT's \(9, 7, 6\)"):
        write_dicom_seg(mask.transpose(1, 0, 2), other_grid, datasets, seg, HECKTOR, ALGORITHM)
    with pytest.raises(InputError, match=r"label\(s\) \[2\] that the labels .* do not name"):
        write_dicom_seg(mask, geometry, datasets, seg, {"1": "lesion"}, ALGORITHM)
    with pytest.raises(InputError, match="name no foreground class"):
        write_dicom_seg(mask, geometry, datasets, seg, {"0": "background"}, ALGORITHM)
    with pytest.raises(InputError, match="'one' .* is not an integer label value"):
        write_dicom_seg(mask, geometry, datasets, seg, {"one": "lesion"}, ALGORITHM)
    with pytest.raises(InputError, match="no source CT images given"):
        write_dicom_seg(mask, geometry, [], seg, HECKTOR, ALGORITHM)
    u = np.full(SHAPE, 0.5, dtype=np.float32)
    pm = tmp_path / "x_pm.dcm"
    u[2, 2, 2] = 1.5
    with pytest.raises(InputError, match=r"spans 0.5-1.5; expected u in \[0, 1\]"):
        write_parametric_map(u, geometry, datasets, pm, ALGORITHM)
    u[2, 2, 2] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        write_parametric_map(u, geometry, datasets, pm, ALGORITHM)
    for ds in datasets:
        del ds.FrameOfReferenceUID
    with pytest.raises(InputError, match="has no FrameOfReferenceUID"):
        write_parametric_map(np.zeros(SHAPE, np.float32), geometry, datasets, pm, ALGORITHM)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct"]  # nothing written


def _dicom_study(folder: Path) -> Geometry:
    geometry, _ = _ct_series(folder / "ct")
    pet = np.full((5, 5, 4), 2.0, dtype=np.float32)
    write_series(
        folder / "pet",
        np.round(pet * BQML_PER_SUV / 0.5).astype(np.int16),
        "PT",
        spacing=(3.0, 3.0, 4.0),
        origin=(-18.0, 14.0, 41.0),
        slopes=[0.5] * 4,
        tags=dict(PET_TAGS),
    )
    return geometry


def test_source_ct_of_a_dicom_case_and_of_other_cases(tmp_path: Path) -> None:
    geometry = _dicom_study(tmp_path / "study")
    files = find_case_files(tmp_path / "study")
    assert is_dicom_ct(files)
    require_dicom_ct(files)  # no error
    case = load_case(files=files)
    sources = read_source_ct(case)
    assert len(sources) == SHAPE[2] and "PixelData" not in sources[0]
    positions = np.array([np.asarray(ds.ImagePositionPatient, float) for ds in sources])
    corners = geometry.index_to_world(np.array([[0, 0, k] for k in range(SHAPE[2])]))
    np.testing.assert_allclose(positions, corners, atol=1e-6)

    ct = Volume(np.zeros((11, 9, 7), np.float32), Geometry((11, 9, 7), (2.0, 2.0, 3.0)))
    pet = Volume(np.ones((11, 9, 7), np.float32), Geometry((11, 9, 7), (2.0, 2.0, 3.0)))
    write_volume(ct, tmp_path / "n_0000.nii.gz")
    write_volume(pet, tmp_path / "n_0001.nii.gz")
    nifti = find_case_files(tmp_path / "n_0000.nii.gz")
    assert not is_dicom_ct(nifti)
    with pytest.raises(InputError, match="DICOM outputs need a DICOM CT series as input.*n_0000"):
        require_dicom_ct(nifti)
    with pytest.raises(InputError, match="DICOM outputs need a DICOM CT series as input.*n_0000"):
        read_source_ct(load_case(files=nifti))


def test_round_trips_on_a_real_ct_series(shared_data: Path, tmp_path: Path) -> None:
    """A real CT (STS_004, 85 slices): its headers carry everything the objects copy."""
    folder = shared_data / "sts" / "STS_004" / "CT_dicom" / "image"
    ct = read_dicom_series(folder)
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]
    mask = (ct.array > 200).astype(np.uint8)  # bone as a stand-in lesion
    u = np.clip((ct.array + 1000.0) / 3000.0, 0.0, 1.0).astype(np.float32)
    labels = {"0": "background", "1": "lesion"}
    seg_path = write_dicom_seg(mask, ct.geometry, datasets, tmp_path / "s.dcm", labels, ALGORITHM)
    pm_path = write_parametric_map(u, ct.geometry, datasets, tmp_path / "u.dcm", ALGORITHM)
    ordered = _slice_order(datasets, ct.geometry)
    seg = hd.seg.segread(seg_path)
    frames = seg.get_pixels_by_source_instance(
        [d.SOPInstanceUID for d in ordered], combine_segments=True
    )
    np.testing.assert_array_equal(frames.transpose(2, 1, 0), mask)
    assert seg.PatientID == datasets[0].PatientID
    pm = pydicom.dcmread(pm_path)
    index = {d.SOPInstanceUID: k for k, d in enumerate(ordered)}
    back = np.full(u.shape, np.nan, dtype=np.float32)
    for n, frame in enumerate(pm.PerFrameFunctionalGroupsSequence):
        source = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        back[:, :, index[source]] = pm.pixel_array[n].T
    np.testing.assert_array_equal(back, u)


def _validator_errors(path: Path) -> list[str]:
    """The error lines of dciodvfy (dicom3tools, Debian's ``dicom3tools`` package) on ``path``."""
    import subprocess

    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.skipif(
    __import__("shutil").which("dciodvfy") is None,
    reason="dciodvfy (apt-get install dicom3tools) is not installed",
)
@pytest.mark.parametrize("real", [False, True], ids=["tiny_series", "sts_004"])
def test_seg_and_parametric_map_pass_the_dicom3tools_validator(
    real: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Both objects pass dciodvfy without an error, on a synthetic oblique series and on a
    real CT whose Study ID is longer than a Short String allows (cut to 16 characters)."""
    if real:
        folder = request.getfixturevalue("shared_data") / "sts" / "STS_004" / "CT_dicom" / "image"
        ct = read_dicom_series(folder)
        geometry = ct.geometry
        files = sorted(folder.glob("*.dcm"))
        datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
        assert len(str(datasets[0].StudyID)) > 16  # the case the cut is for
        mask = (ct.array > 200).astype(np.uint8)
    else:
        geometry, datasets = _ct_series(tmp_path / "ct")
        mask = _two_label_mask()
    labels = {"0": "background", "1": "lesion"} if real else HECKTOR
    u = np.linspace(0.0, 1.0, mask.size, dtype=np.float32).reshape(mask.shape)
    seg = write_dicom_seg(mask, geometry, datasets, tmp_path / "s.dcm", labels, ALGORITHM)
    pm = write_parametric_map(u, geometry, datasets, tmp_path / "u.dcm", ALGORITHM)
    assert _validator_errors(seg) == []
    assert _validator_errors(pm) == []
    if real:
        for path in (seg, pm):
            assert pydicom.dcmread(path).StudyID == str(datasets[0].StudyID)[:16]
