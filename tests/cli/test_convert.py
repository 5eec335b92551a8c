"""``mefn convert``: a DICOM series to NIfTI, CT in HU and PET in SUVbw."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support import DRO_IDS, dro_row, new_dataset

from mefn.cli import main
from mefn.io.readers import read_volume


def _write_ct(folder: Path, stored: np.ndarray, extra: dict | None = None) -> Path:
    """A tiny axial CT series (2 x 2.5 x 3 mm), intercept -1024."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True)
    series = generate_uid()
    nx, ny, nz = stored.shape
    for k in range(nz):
        ds = new_dataset("1.2.840.10008.5.1.4.1.1.2")
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


# --- SUV reference objects and DecayCorrection NONE -------------------------------------------


@pytest.mark.parametrize("dro", DRO_IDS)
def test_convert_reproduces_every_suv_reference_object(
    shared_data: Path, tmp_path: Path, dro: str
) -> None:
    root = shared_data / "suv_dro"
    row = dro_row(shared_data, dro)
    out = tmp_path / f"{dro}.nii.gz"
    assert main(["convert", str(root / dro / "PT"), "-o", str(out)]) == 0
    vol = read_volume(out)
    mask = read_volume(root / dro / "mask" / "DRO_mask.nii.gz")
    assert mask.geometry.same_grid(vol.geometry)
    values = vol.array[mask.array > 0]
    got = np.array([values.min(), np.median(values), values.max()], dtype=np.float64)
    expected = np.array(
        [float(row[k]) for k in ("SUVmin_expected", "SUVmed_expected", "SUVmax_expected")]
    )
    sidecar = json.loads((tmp_path / f"{dro}.json").read_text())
    assert sidecar["units"] == "SUVbw"
    if dro == "DRO_2_3":
        # CM2ML: the stored SUVbsa are 0.05, 0.26, 1.05 (rescale slope 0.01). The manual of
        # oncoray/suv_computation (docs/suv.docx, SUVbw = SUVbsa x 1000 W / (1e4 BSA), Du Bois)
        # gives 0.19 / 0.98 / 3.98 for them: the listed 0.20 / 1.00 / 4.00 are rounded at the
        # source, so this object is allowed its known 0.01-0.02 at two decimals.
        assert sidecar["suv"]["suv_type"] == "BSA"
        assert [round(float(v), 2) for v in got] == [0.19, 0.98, 3.98]
        np.testing.assert_allclose(np.round(got, 2), expected, atol=0.02 + 1e-9)
    else:
        np.testing.assert_allclose(got, expected, atol=0.005)


def _write_pet_none(folder: Path, frame_ms: int | None) -> dict[int, str]:
    """A 5 x 4 x 5 BQML PET, not decay corrected, slices acquired at three times (3 beds)."""
    import pydicom
    from support import PET_TAGS, write_series

    stored = np.full((5, 4, 5), 1000, dtype=np.int16)  # 1000 Bq/mL everywhere
    write_series(folder, stored, "PT", tags={**PET_TAGS, "DecayCorrection": "NONE"})
    times = {0: "110000", 1: "110000", 2: "110500", 3: "110500", 4: "111000"}
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.AcquisitionTime = times[int(ds.InstanceNumber) - 1]
        if frame_ms is not None:
            ds.ActualFrameDuration = frame_ms
        ds.save_as(path)
    return times


def test_convert_pet_without_decay_correction_scales_each_slice(tmp_path: Path) -> None:
    import math

    _write_pet_none(tmp_path / "pt", frame_ms=300000)
    out = tmp_path / "suv.nii.gz"
    assert main(["convert", str(tmp_path / "pt"), "-o", str(out)]) == 0
    vol = read_volume(out)
    # SUVbw = 1000 Bq/mL x 70000 g / 368.08e6 Bq x lambda T / (1 - exp(-lambda T))
    #         x exp(lambda (t_acq - 10:00:00)), lambda = ln 2 / 6586.2 s, T = 300 s
    lam = math.log(2.0) / 6586.2
    frame = lam * 300.0 / (1.0 - math.exp(-lam * 300.0))
    elapsed_s = [3600.0, 3600.0, 3900.0, 3900.0, 4200.0]
    expected = [1000.0 * 70000.0 / 368.08e6 * frame * math.exp(lam * t) for t in elapsed_s]
    np.testing.assert_allclose(vol.array[2, 1, :], expected, rtol=1e-6)
    np.testing.assert_allclose(vol.array[0, 3, :], expected, rtol=1e-6)
    # the 11:00 beds: 3600 Bq/mL is SUV 1 at 11:00 (DRO values), so 1000 / 3600 x 1.0158694
    assert expected[0] == pytest.approx(0.282186, abs=1e-6)
    sidecar = json.loads((tmp_path / "suv.json").read_text())
    assert sidecar["suv"]["decay_correction"] == "NONE"
    assert sidecar["suv"]["slice_factor_range"] == pytest.approx(
        [expected[0] / 1000.0, expected[-1] / 1000.0], rel=1e-9
    )


def test_convert_pet_without_decay_correction_needs_frame_durations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_pet_none(tmp_path / "pt", frame_ms=None)
    assert main(["convert", str(tmp_path / "pt"), "-o", str(tmp_path / "suv.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "lacks the DICOM tag ActualFrameDuration, needed for DecayCorrection NONE" in err
    assert not (tmp_path / "suv.nii.gz").exists()
