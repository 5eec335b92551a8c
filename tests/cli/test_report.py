"""`mefn segment` writes cohort tables; `mefn report` rebuilds them byte for byte."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support import make_tiny_weights

from mefn.cli import main
from mefn.io.sitk_bridge import write_volume
from mefn.io.volume import Volume


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("weights"))


def _write_case(folder: Path, name: str, seed: int, pet_origin_z: float = -12.0) -> None:
    """An nnU-Net pair: CT (HU) on a flipped 2 x 2 x 3 mm grid, PET (SUV) 4 x 4 x 5 mm with a
    hot block; ``folder`` is made when absent."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ct = rng.normal(40, 10, (33, 30, 19)).astype(np.float32)
    pet = rng.gamma(4, 0.25, (17, 15, 11)).astype(np.float32)
    pet[6:11, 6:10, 4:8] = 10.0 + seed
    direction = (-1, 0, 0, 0, -1, 0, 0, 0, 1)
    write_volume(
        Volume.from_array(ct, (2.0, 2.0, 3.0), (32.0, 30.0, -10.0), direction),
        folder / f"{name}_0000.nii.gz",
    )
    write_volume(
        Volume.from_array(pet, (4.0, 4.0, 5.0), (-34.0, -30.0, pet_origin_z)),
        folder / f"{name}_0001.nii.gz",
    )


def _segment(inputs: Path, out: Path, weights: Path, quiet: bool = False) -> int:
    flags = ["-q"] if quiet else []
    return main([*flags, "segment", str(inputs), "-o", str(out), "--model", str(weights)])


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_two_case_segment_then_report_gives_identical_bytes(tmp_path, tiny_weights, capsys):
    images = tmp_path / "imagesTs"
    _write_case(images, "pt_02", seed=2)
    _write_case(images, "pt_01", seed=1)
    out = tmp_path / "out"
    assert _segment(images, out, tiny_weights) == 0
    assert "cohort tables: 2 case(s)" in capsys.readouterr().out
    cases = _rows(out / "cases.csv")
    assert [r["case_id"] for r in cases] == ["pt_01", "pt_02"]
    reports = {
        r["case_id"]: json.loads((out / f"{r['case_id']}_report.json").read_text()) for r in cases
    }
    lesions = _rows(out / "lesions.csv")
    assert lesions  # the untrained tiny model finds some: the lesion checks below run
    for row in cases:
        report = reports[row["case_id"]]
        assert int(row["n_lesions"]) == report["n_lesions"]
        assert float(row["mtv_ml"]) == report["mtv_ml"] and float(row["tlg"]) == report["tlg"]
        assert int(row["n_review"]) == report["n_review"]
        assert float(row["seconds"]) == report["seconds"]
        assert row["model"] == str(tiny_weights) and row["layout"] == "nnunet"
        mine = [les for les in lesions if les["case_id"] == row["case_id"]]
        assert len(mine) == report["n_lesions"]
        for les, expected in zip(mine, report["lesions"]):
            assert int(les["lesion_id"]) == expected["lesion_id"]
            assert float(les["suv_peak"]) == expected["suv_peak"]
            assert [float(les[f"centroid_{a}_mm"]) for a in "xyz"] == expected["centroid_mm"]
            assert les["review"] == ("true" if expected["review"] else "false")
        if report["lesions"]:
            assert float(row["suv_max"]) == max(les["suv_max"] for les in report["lesions"])
    assert len(lesions) == sum(r["n_lesions"] for r in reports.values())

    written = {name: (out / name).read_bytes() for name in ("cases.csv", "lesions.csv")}
    for name in written:
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    summary = capsys.readouterr().out.strip()
    assert summary == (
        f"2 case(s), {len(lesions)} lesion(s) -> {out / 'cases.csv'}, {out / 'lesions.csv'}"
    )
    assert {name: (out / name).read_bytes() for name in written} == written
    elsewhere = tmp_path / "tables"
    assert main(["-q", "report", str(out), "-o", str(elsewhere)]) == 0
    assert capsys.readouterr().out == ""
    assert {name: (elsewhere / name).read_bytes() for name in written} == written


def test_failed_cases_are_left_out_and_earlier_reports_kept(tmp_path, tiny_weights, capsys):
    first = tmp_path / "first"
    _write_case(first, "early", seed=3)
    out = tmp_path / "out"
    assert _segment(first, out, tiny_weights, quiet=True) == 0
    second = tmp_path / "second"
    _write_case(second, "late", seed=4)
    _write_case(second, "far", seed=5, pet_origin_z=5000.0)  # does not overlap its CT
    assert _segment(second, out, tiny_weights, quiet=True) == 1
    assert "do not overlap" in capsys.readouterr().err
    # the earlier run's case stays in the tables of the folder, the failed one is absent
    assert [r["case_id"] for r in _rows(out / "cases.csv")] == ["early", "late"]
    tables = {name: (out / name).read_bytes() for name in ("cases.csv", "lesions.csv")}
    assert main(["-q", "report", str(out)]) == 0
    assert {name: (out / name).read_bytes() for name in tables} == tables


def test_a_foreign_report_fails_the_tables_not_the_cases(tmp_path, tiny_weights, capsys):
    images = tmp_path / "in"
    _write_case(images, "c1", seed=6)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes_report.json").write_text('{"software": "other", "case": "notes"}')
    assert _segment(images, out, tiny_weights, quiet=True) == 1
    err = capsys.readouterr().err
    assert "failed: cohort tables: report" in err and 'expected "mefn <version>"' in err
    assert (out / "c1_report.json").is_file() and not (out / "cases.csv").exists()
    assert main(["-q", "report", str(out)]) == 2
    assert "notes_report.json has software 'other'" in capsys.readouterr().err


def test_report_usage_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("mefn report: error: no <case>_report.json file in") and err.count("\n") == 1
    )
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "found nothing at" in capsys.readouterr().err
    shutil.copy(__file__, tmp_path / "x_report.json")
    assert main(["report", str(tmp_path)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
