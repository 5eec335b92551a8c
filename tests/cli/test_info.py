"""``mefn info``: text and JSON descriptions, and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mefn.cli import main
from mefn.io.sitk_bridge import write_volume
from mefn.io.volume import Volume


def _write_pair(folder: Path, name: str, pet_scale: float = 1.0, pet_z: float = -18.0) -> Path:
    rng = np.random.default_rng(2)
    ct = Volume.from_array(
        rng.uniform(-1000, 300, (13, 11, 9)).astype(np.float32),
        spacing_mm=(2.5, 2.5, 2.5),
        origin_mm=(0.0, -25.0, -20.0),
        direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1),
    )
    pet_arr = np.linspace(0, 12.5, 9 * 7 * 7, dtype=np.float32).reshape(9, 7, 7) * pet_scale
    pet = Volume.from_array(pet_arr, spacing_mm=(4.0, 4.0, 4.0), origin_mm=(-28.0, -22.0, pet_z))
    folder.mkdir(parents=True, exist_ok=True)
    write_volume(ct, folder / f"{name}_0000.nii.gz")
    write_volume(pet, folder / f"{name}_0001.nii.gz")
    return folder / f"{name}_0000.nii.gz"


def test_info_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_pair(tmp_path, "case a")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "case      case a  (layout nnunet)" in out
    assert "size 13 x 11 x 9 voxels, spacing 2.5 x 2.5 x 2.5 mm" in out
    assert "values 0 to 12.5" in out
    assert "overlap" in out


def test_info_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_pair(tmp_path, "c")
    assert main(["info", str(tmp_path / "c"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["layout"] == "nnunet" and report["case_id"] == "c"
    assert report["pet"]["shape"] == [9, 7, 7]
    assert report["pet"]["max"] == pytest.approx(12.5)
    # CT flipped in x: box from x -31.25 to 1.25 mm
    assert report["ct"]["extent_mm"]["min"][0] == pytest.approx(-31.25)
    assert report["ct"]["direction"][0] == -1.0
    assert report["output_grid"] == "CT" and report["problems"] == []
    assert report["files"]["ct"] == str(path)


def test_info_single_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_pair(tmp_path, "c")
    lone = tmp_path / "lone.nii.gz"
    lone.write_bytes(path.read_bytes())
    assert main(["info", str(lone), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["image"]["shape"] == [13, 11, 9]


def test_info_pet_in_bqml_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_pair(tmp_path, "bq", pet_scale=4000.0)
    assert main(["info", str(path)]) == 1
    captured = capsys.readouterr()
    assert "warning: PET maximum is 50000: this looks like Bq/mL" in captured.err


def test_info_no_overlap_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_pair(tmp_path, "far", pet_z=900.0)
    assert main(["info", str(path)]) == 1
    assert "PET and CT do not overlap: PET covers z 898 to 926 mm" in capsys.readouterr().err


def test_info_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 2
    assert "no input given" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "ghost")]) == 2
    assert "no case files start with it" in capsys.readouterr().err
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not an image")
    assert main(["info", "--ct", str(bad)]) == 2
    assert "is not gzip-compressed" in capsys.readouterr().err
