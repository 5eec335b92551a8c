"""``mefn convert``: a DICOM series to NIfTI, CT in HU and PET in SUVbw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mefn.cli import main
from mefn.io.readers import read_volume


def _write_ct(folder: Path, stored: np.ndarray, extra: dict | None = None) -> Path:
    """A tiny axial CT series (2 x 2.5 x 3 mm), intercept -1024."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    series = generate_uid()
    nx, ny, nz = stored.shape
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = (
            meta.MediaStorageSOPClassUID,
            meta.MediaStorageSOPInstanceUID,
        )
        ds.Modality, ds.SeriesInstanceUID = "CT", series
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-10.0, 20.0, 100.0 - 3.0 * k]  # written head to feet
        ds.PixelSpacing = [2.5, 2.0]
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T.astype("<i2")).tobytes()
        pydicom.dcmwrite(folder / f"{k:02d}.dcm", ds, enforce_file_format=True)
    return folder


def test_convert_ct_to_hu(tmp_path: Path) -> None:
    stored = np.arange(5 * 7 * 3, dtype=np.int16).reshape(5, 7, 3)
    src = _write_ct(tmp_path / "dicom ct", stored)
    out = tmp_path / "ct.nii.gz"
    assert main(["convert", str(src), "-o", str(out)]) == 0
    vol = read_volume(out)
    # slices sorted feet to head: z 94, 97, 100 -> stored slices 2, 1, 0
    np.testing.assert_array_equal(vol.array, stored[:, :, ::-1].astype(np.float32) - 1024)
    assert vol.spacing_mm == pytest.approx((2.0, 2.5, 3.0))
    assert vol.geometry.origin_mm == pytest.approx((-10.0, 20.0, 94.0))
    sidecar = json.loads((tmp_path / "ct.json").read_text())
    assert sidecar["units"] == "HU" and sidecar["n_slices"] == 3


def test_convert_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write_ct(tmp_path / "d", np.zeros((3, 3, 3), np.int16))
    out = tmp_path / "x.nii.gz"
    out.write_text("keep me")
    assert main(["convert", str(src), "-o", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert main(["convert", str(src), "-o", str(out), "--overwrite"]) == 0
    assert read_volume(out).shape == (3, 3, 3)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_convert_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(tmp_path / "none"), "-o", str(tmp_path / "o.nii.gz")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    src = _write_ct(tmp_path / "d", np.zeros((3, 3, 3), np.int16))
    assert main(["convert", str(src), "-o", str(tmp_path / "o.png")]) == 2
    assert "needs an image suffix" in capsys.readouterr().err
    assert main(["convert", str(src), "-o", str(tmp_path / "o.nii.gz"), "--modality", "PT"]) == 2
    assert "no PT DICOM series under" in capsys.readouterr().err


def test_convert_pet_without_tags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write_ct(
        tmp_path / "pt", np.ones((3, 3, 3), np.int16), extra={"Modality": "PT", "Units": "BQML"}
    )
    assert main(["convert", str(src), "-o", str(tmp_path / "pet.nii.gz")]) == 2
    assert "lacks the DICOM tag PatientWeight" in capsys.readouterr().err
    assert not (tmp_path / "pet.nii.gz").exists()


def test_convert_real_pet_to_suv(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "suv_dro" / "DRO_3_2" / "PT"
    out = tmp_path / "suv.nii.gz"
    assert main(["convert", str(src), "-o", str(out), "--modality", "PET"]) == 0
    vol = read_volume(out)
    assert float(np.median(vol.array[vol.array > 0])) == pytest.approx(1.0, abs=5e-3)
    sidecar = json.loads((tmp_path / "suv.json").read_text())
    assert sidecar["suv"]["reference_source"].startswith("earliest AcquisitionDateTime")
