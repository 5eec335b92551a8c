"""Cohort tables from hand-made reports: exact cells, order, tolerance and every error."""

from __future__ import annotations

import csv
import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from mefn.cohort import (
    CASE_COLUMNS,
    HOT_SPOT_COLUMN,
    LESION_COLUMNS,
    case_rows,
    find_reports,
    format_cell,
    lesion_rows,
    read_report,
    rebuild_cohort_tables,
    write_cohort_tables,
)
from mefn.errors import InputError
from mefn.postprocess import Lesion, LesionTable


def _lesion(lesion_id: int, **kw: Any) -> Lesion:
    values: dict[str, Any] = {
        "lesion_id": lesion_id,
        "label": 1,
        "voxels": 7,
        "volume_ml": 0.084,
        "centroid_mm": (-12.345, 6.0, 101.5),
        "suv_max": 8.5,
        "suv_mean": 4.25,
        "suv_peak": 6.125,
        "tlg": 0.357,
        "uncertainty_mean": 0.125,
        "uncertainty_max": 0.5,
        "review": False,
    }
    values.update(kw)
    return Lesion(**values)


def _report(case: str, lesions: tuple[Lesion, ...] = (), **kw: Any) -> dict[str, Any]:
    """A report laid out as Prediction.report writes it, through a JSON round trip."""
    table = LesionTable(
        lesions=lesions,
        mtv_ml=sum(les.volume_ml for les in lesions),
        tlg=sum(les.tlg for les in lesions),
        review_threshold=0.3,
    )
    report: dict[str, Any] = {
        "software": "mefn 0.1.0",
        "case": case,
        "settings": {
            "model": "/w/tiny.safetensors",
            "model_sha256": "ab12",
            "adapter": None,
            "labels": {"0": "background", "1": "GTVp", "2": "GTVn"},
            "lesion_threshold": 0.4,
            "min_lesion_ml": 0.1,
            "tta_axes": [0, 2],
        },
        "input": {"layout": "hecktor", "files": {"ct": f"/d/{case}__CT.nii.gz", "pet": "p,q"}},
        "seconds": 2.5,
        "uncertainty": {"mean_in_mask": 0.1875 if lesions else None, "max": 0.75},
        **table.to_json(),
    }
    report.update(kw)
    return json.loads(json.dumps(report))


def _two_cases() -> list[dict[str, Any]]:
    big = _lesion(
        1, label=2, voxels=1001, volume_ml=12.012, suv_max=3.5, review=True, confidence=0.25
    )
    small = _lesion(2, suv_max=9.75, centroid_mm=(1.0, -2.5, 3.25))
    # given out of order: the tables sort by case id
    return [_report("case_b", (big, small)), _report("case_a")]


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_lesion_columns_cover_every_lesion_field():
    names = {f.name for f in fields(Lesion)} - {"centroid_mm"}
    names |= {"centroid_x_mm", "centroid_y_mm", "centroid_z_mm"}
    assert names <= set(LESION_COLUMNS)
    assert set(LESION_COLUMNS) - names == {"case_id", "label_name"}


def test_two_cases_exact_cells(tmp_path):
    tables = write_cohort_tables(_two_cases(), tmp_path / "out")
    assert (tables.n_cases, tables.n_lesions) == (2, 2)
    assert tables.cases_csv == tmp_path / "out" / "cases.csv"
    cases = _read_csv(tables.cases_csv)
    assert tuple(cases[0]) == CASE_COLUMNS  # no report lists hot spots: no such column
    a, b = (dict(zip(cases[0], row)) for row in cases[1:])
    assert a["case_id"] == "case_a" and b["case_id"] == "case_b"
    assert a["n_lesions"] == "0" and a["mtv_ml"] == "0" and a["suv_max"] == ""
    assert a["uncertainty_mean_in_mask"] == "" and a["uncertainty_max"] == "0.75"
    assert b["n_lesions"] == "2" and b["n_review"] == "1"
    assert b["mtv_ml"] == repr(12.012 + 0.084) and b["tlg"] == repr(0.357 + 0.357)
    assert b["suv_max"] == "9.75"  # the hottest lesion, not the first
    assert b["tta_axes"] == "xz" and b["adapter"] == "" and b["lesion_threshold"] == "0.4"
    assert b["layout"] == "hecktor" and b["ct_input"] == "/d/case_b__CT.nii.gz"
    assert b["pet_input"] == "p,q" and b["software"] == "mefn 0.1.0" and b["seconds"] == "2.5"
    text = tables.lesions_csv.read_text()
    assert text.splitlines() == [
        ",".join(LESION_COLUMNS),
        "case_b,1,2,GTVn,1001,12.012,3.5,4.25,6.125,0.357,0.125,0.5,-12.35,6.0,101.5,0.25,true",
        "case_b,2,1,GTVp,7,0.084,9.75,4.25,6.125,0.357,0.125,0.5,1.0,-2.5,3.25,,false",
    ]
    assert "\r" not in text and '"p,q"' in tables.cases_csv.read_text()  # quoted comma


def test_no_lesion_anywhere_gives_a_header_only_lesion_table(tmp_path):
    tables = write_cohort_tables([_report("z"), _report("y")], tmp_path)
    assert tables.lesions_csv.read_text() == ",".join(LESION_COLUMNS) + "\n"
    assert [r[0] for r in _read_csv(tables.cases_csv)[1:]] == ["y", "z"]


def test_hot_spot_column_counts_and_leaves_absent_keys_empty():
    with_spots = _report("a", hot_spots=[{"spot_id": 1}, {"spot_id": 2}])
    none_found = _report("b", hot_spots=[])
    older = _report("c")
    from mefn.cohort import case_columns

    assert case_columns([older]) == CASE_COLUMNS
    assert case_columns([older, with_spots])[-1] == HOT_SPOT_COLUMN
    rows = case_rows([older, none_found, with_spots])
    assert [r[HOT_SPOT_COLUMN] for r in rows] == [2, 0, None]


def test_old_report_with_missing_fields_gives_empty_cells(tmp_path):
    old = {
        "software": "mefn 0.0.1",
        "case": "old",
        "lesions": [{"lesion_id": 1, "volume_ml": 2.0}],
    }
    tables = write_cohort_tables([old], tmp_path)
    row = dict(zip(*_read_csv(tables.cases_csv)))
    assert row["case_id"] == "old" and row["software"] == "mefn 0.0.1"
    assert row["n_lesions"] == "" and row["model"] == "" and row["suv_max"] == ""
    lesion = dict(zip(*_read_csv(tables.lesions_csv)))
    assert lesion["volume_ml"] == "2.0" and lesion["label"] == "" and lesion["label_name"] == ""
    assert lesion["centroid_x_mm"] == "" and lesion["review"] == ""


def test_rebuild_from_files_equals_writing_the_dicts(tmp_path):
    folder = tmp_path / "seg"
    folder.mkdir()
    reports = _two_cases()
    for r in reports:
        (folder / f"{r['case']}_report.json").write_text(json.dumps(r, indent=1))
    (folder / ".case_c_report.json.x.tmp.json").write_text("{")  # an atomic write's temp file
    direct = write_cohort_tables(reports, tmp_path / "direct")
    rebuilt = rebuild_cohort_tables(folder)
    assert rebuilt.cases_csv.parent == folder
    assert rebuilt.cases_csv.read_bytes() == direct.cases_csv.read_bytes()
    assert rebuilt.lesions_csv.read_bytes() == direct.lesions_csv.read_bytes()
    elsewhere = rebuild_cohort_tables(folder, tmp_path / "else")
    assert elsewhere.lesions_csv.read_bytes() == direct.lesions_csv.read_bytes()
    # every float reads back as the number in the report
    first = next(r for r in lesion_rows(reports) if r["lesion_id"] == 1)
    cell = _read_csv(direct.lesions_csv)[1][LESION_COLUMNS.index("uncertainty_mean")]
    assert float(cell) == first["uncertainty_mean"]


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, ""), (float("nan"), ""), (True, "true"), (0.1 + 0.2, "0.30000000000000004"), (3, "3")],
)
def test_format_cell(value, text):
    assert format_cell(value) == text


def test_format_cell_refuses_containers():
    with pytest.raises(InputError, match="column seconds expects a single value, found list"):
        format_cell([1, 2], "seconds")


def test_folder_errors(tmp_path):
    with pytest.raises(InputError, match=r"no <case>_report.json file in .*output folder"):
        find_reports(tmp_path)
    with pytest.raises(InputError, match="found nothing at"):
        rebuild_cohort_tables(tmp_path / "missing")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(InputError, match="found a file at"):
        find_reports(tmp_path / "f.txt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "holds a JSON list, expected an object"),
        ('{"case": "c", "lesions": []}', 'has software None, expected "mefn <version>"'),
        ('{"software": "other 1", "case": "c", "lesions": []}', "has software 'other 1'"),
        ('{"software": "mefn 9", "case": 3, "lesions": []}', "has case 3, expected a case id"),
        ('{"software": "mefn 9", "case": "c"}', "has lesions NoneType, expected a list"),
        ('{"software": "mefn 9", "case": "c", "lesions": [1]}', "expected a list of objects"),
        ('{"software": "mefn 9", "case": "d", "lesions": []}', "its file name says 'c'"),
        (
            '{"software": "mefn 9", "case": "c", "lesions": [], "hot_spots": 4}',
            "has hot_spots int, expected a list",
        ),
    ],
)
def test_bad_reports(tmp_path, text, message):
    path = tmp_path / "c_report.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_report(path)


def test_bad_values_and_duplicates_leave_old_tables_untouched(tmp_path):
    good = write_cohort_tables(_two_cases(), tmp_path)
    before = good.cases_csv.read_bytes(), good.lesions_csv.read_bytes()
    with pytest.raises(InputError, match="case 'x' has two reports"):
        write_cohort_tables([_report("x"), _report("x")], tmp_path)
    with pytest.raises(InputError, match="case 'x': column seconds expects a single value"):
        write_cohort_tables([_report("x", seconds=[1.0])], tmp_path)
    bent = _report("x", (_lesion(1),))
    bent["lesions"][0]["centroid_mm"] = [1.0, 2.0]
    with pytest.raises(InputError, match=r"lesion 1 has centroid_mm \[1.0, 2.0\], expected"):
        write_cohort_tables([bent], tmp_path)
    with pytest.raises(InputError, match="no report to tabulate"):
        write_cohort_tables([], tmp_path)
    assert (good.cases_csv.read_bytes(), good.lesions_csv.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.csv", "lesions.csv"]
