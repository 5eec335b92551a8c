"""Cohort tables: ``cases.csv`` and ``lesions.csv`` built from ``<case>_report.json`` files.

>>> from mefn.cohort import rebuild_cohort_tables
>>> tables = rebuild_cohort_tables("mefn_output")     # every report in the folder
>>> tables.cases_csv.name, tables.n_cases
('cases.csv', 12)

``cases.csv`` has one row per case (:data:`CASE_COLUMNS`, then ``unsegmented_hot_spots``
when any report lists ``hot_spots``); ``lesions.csv`` one row per lesion
(:data:`LESION_COLUMNS`), header only when no case has a lesion. Rows are sorted by case id
(then lesion id, as in the report). Both are built from the report JSON as written, with one
cell format (:func:`format_cell`: floats as Python's shortest round-trip ``repr``), so
``mefn segment`` and ``mefn report`` give the same bytes for the same reports.

``mefn segment`` rewrites both tables at the end of every run in which a case succeeded, one
case included, from every report in its output folder (reports of earlier runs into the same
folder too): it calls :func:`rebuild_cohort_tables`, as ``mefn report`` does. Under torchrun
each rank rewrites them when it ends; run ``mefn report`` once all ranks are done.

Tolerance: a file that is not a mefn report (not JSON, no ``"software": "mefn ..."``, no
``case``, no ``lesions`` list, a case id other than its file name says) is an
:class:`~mefn.errors.InputError`. A report from another mefn version may lack fields or
have more: a missing field is an empty cell, an unknown one is ignored, and the version is
in the ``software`` column. A field holding a list or mapping where a single value is
expected is an InputError. Empty cells also stand for JSON ``null`` and NaN.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mefn.errors import InputError
from mefn.fileutil import atomic_write_text, check_writable_dir

__all__ = [
    "CASE_COLUMNS",
    "CASES_CSV",
    "CohortTables",
    "HOT_SPOT_COLUMN",
    "LESION_COLUMNS",
    "LESIONS_CSV",
    "REPORT_SUFFIX",
    "case_columns",
    "case_rows",
    "find_reports",
    "format_cell",
    "lesion_rows",
    "read_report",
    "rebuild_cohort_tables",
    "table_text",
    "write_cohort_tables",
]

REPORT_SUFFIX = "_report.json"
CASES_CSV = "cases.csv"
LESIONS_CSV = "lesions.csv"

#: cases.csv columns, in order
CASE_COLUMNS: tuple[str, ...] = (
    "case_id",
    "n_lesions",
    "mtv_ml",
    "tlg",
    "suv_max",
    "n_review",
    "n_dropped",
    "review_threshold",
    "review_below",
    "uncertainty_mean_in_mask",
    "uncertainty_max",
    "seconds",
    "model",
    "model_sha256",
    "adapter",
    "lesion_threshold",
    "min_lesion_ml",
    "min_confidence",
    "tta_axes",
    "layout",
    "ct_input",
    "pet_input",
    "software",
)
#: the last cases.csv column, present when any report carries a "hot_spots" list
HOT_SPOT_COLUMN = "unsegmented_hot_spots"

#: lesions.csv columns, in order: the report's lesion fields, centroid_mm split in x, y, z
LESION_COLUMNS: tuple[str, ...] = (
    "case_id",
    "lesion_id",
    "label",
    "label_name",
    "voxels",
    "volume_ml",
    "suv_max",
    "suv_mean",
    "suv_peak",
    "tlg",
    "uncertainty_mean",
    "uncertainty_max",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
    "confidence",
    "review",
)

# lesion columns copied field by field from the report's lesion entry
_LESION_FIELDS = tuple(
    c
    for c in LESION_COLUMNS
    if c not in ("case_id", "label_name") and not c.startswith("centroid_")
)


@dataclass(frozen=True)
class CohortTables:
    """What :func:`write_cohort_tables` wrote."""

    cases_csv: Path
    lesions_csv: Path
    n_cases: int
    n_lesions: int


# --- reading ----------------------------------------------------------------------------------


def find_reports(folder: str | os.PathLike[str]) -> list[Path]:
    """The ``*_report.json`` files directly in ``folder``, sorted by name; InputError if the
    folder is missing or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(
            f"expected a folder of <case>{REPORT_SUFFIX} files from `mefn segment`, "
            f"found {'a file' if folder.exists() else 'nothing'} at {folder}; check the path"
        )
    paths = sorted(
        p for p in folder.glob(f"*{REPORT_SUFFIX}") if p.is_file() and not p.name.startswith(".")
    )
    if not paths:
        raise InputError(
            f"no <case>{REPORT_SUFFIX} file in {folder}; expected the output folder of "
            "`mefn segment`"
        )
    return paths


def read_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """One ``<case>_report.json``, checked to be a mefn report for the case its name says."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read report {path} ({exc}); check the file") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"report {path} is not valid JSON ({exc}); rewrite it with `mefn segment --overwrite`"
        ) from None
    _check_report(data, str(path))
    expected = path.name[: -len(REPORT_SUFFIX)] if path.name.endswith(REPORT_SUFFIX) else None
    if expected is not None and data["case"] != expected:
        raise InputError(
            f"report {path} is for case {data['case']!r} but its file name says {expected!r}; "
            f"name it {data['case']}{REPORT_SUFFIX}"
        )
    return data


def _check_report(data: Any, where: str) -> None:
    """InputError unless ``data`` has what every mefn report has: software, case, lesions."""
    if not isinstance(data, dict):
        raise InputError(
            f"report {where} holds a JSON {type(data).__name__}, expected an object written by "
            "`mefn segment`"
        )
    software = data.get("software")
    if not (isinstance(software, str) and software.startswith("mefn ")):
        raise InputError(
            f'report {where} has software {software!r}, expected "mefn <version>"; is it a '
            "report from `mefn segment`?"
        )
    case = data.get("case")
    if not (isinstance(case, str) and case):
        raise InputError(f"report {where} has case {case!r}, expected a case id (a string)")
    lesions = data.get("lesions")
    if not (isinstance(lesions, list) and all(isinstance(les, dict) for les in lesions)):
        raise InputError(
            f"report {where} has lesions {type(lesions).__name__}, expected a list of objects "
            f"({software})"
        )
    hot_spots = data.get("hot_spots")
    if hot_spots is not None and not isinstance(hot_spots, list):
        raise InputError(
            f"report {where} has hot_spots {type(hot_spots).__name__}, expected a list"
        )


# --- rows -------------------------------------------------------------------------------------


def _sorted(reports: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    for i, report in enumerate(reports):
        _check_report(report, f"#{i + 1} ({report.get('case', '?')})")
    ordered = sorted(reports, key=lambda r: str(r["case"]))
    for a, b in zip(ordered, ordered[1:]):
        if a["case"] == b["case"]:
            raise InputError(
                f"case {a['case']!r} has two reports, expected one per case; keep one of them"
            )
    return ordered


def _get(data: Any, *keys: str) -> Any:
    """``data[k0][k1]...``, or None where a level is missing or not a mapping."""
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _tta_letters(axes: Any) -> str | None:
    if not isinstance(axes, list):
        return axes  # None, or a value format_cell will refuse
    if not axes:
        return "none"
    return "".join("xyz"[a] if isinstance(a, int) and 0 <= a < 3 else str(a) for a in axes)


def _suv_max(lesions: Sequence[Mapping[str, Any]]) -> float | None:
    values = [
        float(v)
        for v in (les.get("suv_max") for les in lesions)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ]
    return max(values) if values else None


def case_columns(reports: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """:data:`CASE_COLUMNS`, plus :data:`HOT_SPOT_COLUMN` when any report lists hot spots."""
    if any("hot_spots" in r for r in reports):
        return (*CASE_COLUMNS, HOT_SPOT_COLUMN)
    return CASE_COLUMNS


def case_rows(reports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row (column -> value) per case, sorted by case id; missing fields are None."""
    rows = []
    for r in _sorted(reports):
        lesions = r["lesions"]
        settings = r.get("settings")
        row: dict[str, Any] = {
            "case_id": r["case"],
            "n_lesions": r.get("n_lesions"),
            "mtv_ml": r.get("mtv_ml"),
            "tlg": r.get("tlg"),
            "suv_max": _suv_max(lesions),
            "n_review": r.get("n_review"),
            "n_dropped": r.get("n_dropped"),
            "review_threshold": r.get("review_threshold"),
            "review_below": r.get("review_below"),
            "uncertainty_mean_in_mask": _get(r, "uncertainty", "mean_in_mask"),
            "uncertainty_max": _get(r, "uncertainty", "max"),
            "seconds": r.get("seconds"),
            "model": _get(settings, "model"),
            "model_sha256": _get(settings, "model_sha256"),
            "adapter": _get(settings, "adapter"),
            "lesion_threshold": _get(settings, "lesion_threshold"),
            "min_lesion_ml": _get(settings, "min_lesion_ml"),
            "min_confidence": _get(settings, "min_confidence"),
            "tta_axes": _tta_letters(_get(settings, "tta_axes")),
            "layout": _get(r, "input", "layout"),
            "ct_input": _get(r, "input", "files", "ct"),
            "pet_input": _get(r, "input", "files", "pet"),
            "software": r["software"],
        }
        hot_spots = r.get("hot_spots")
        row[HOT_SPOT_COLUMN] = len(hot_spots) if isinstance(hot_spots, list) else None
        rows.append(row)
    return rows


def lesion_rows(reports: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row (column -> value) per lesion, by case id then in the report's order."""
    rows = []
    for r in _sorted(reports):
        labels = _get(r, "settings", "labels")
        for lesion in r["lesions"]:
            row: dict[str, Any] = {"case_id": r["case"]}
            row.update({key: lesion.get(key) for key in _LESION_FIELDS})
            label = lesion.get("label")
            row["label_name"] = _get(labels, str(label)) if label is not None else None
            centroid = lesion.get("centroid_mm")
            if centroid is not None and not (isinstance(centroid, list) and len(centroid) == 3):
                raise InputError(
                    f"report of case {r['case']!r}: lesion {lesion.get('lesion_id')} has "
                    f"centroid_mm {centroid!r}, expected a list [x, y, z] in mm"
                )
            for axis, value in zip("xyz", centroid or (None, None, None)):
                row[f"centroid_{axis}_mm"] = value
            rows.append(row)
    return rows


# --- writing ----------------------------------------------------------------------------------


def format_cell(value: Any, column: str = "") -> str:
    """A CSV cell: None and NaN empty; booleans ``true`` / ``false`` (as in the JSON);
    floats as ``repr`` (shortest text that reads back as the same float); lists and mappings
    are an InputError naming ``column``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    raise InputError(
        f"column {column or '?'} expects a single value, found {type(value).__name__} "
        f"{value!r:.60}; is the report from this mefn version?"
    )


def table_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV text: a header of ``columns``, then one line per row (``\\n`` line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        cells = []
        for column in columns:
            try:
                cells.append(format_cell(row.get(column), column))
            except InputError as exc:
                raise InputError(f"case {row.get('case_id')!r}: {exc}") from None
        writer.writerow(cells)
    return buf.getvalue()


def write_cohort_tables(
    reports: Sequence[Mapping[str, Any]], outdir: str | os.PathLike[str]
) -> CohortTables:
    """Write ``outdir/cases.csv`` and ``outdir/lesions.csv`` (each atomically) from report
    dicts as read from their JSON files. Both texts are built before either is written."""
    if not reports:
        raise InputError("no report to tabulate; expected at least one case report")
    columns = case_columns(reports)
    cases = case_rows(reports)
    lesions = lesion_rows(reports)
    cases_text = table_text(columns, cases)
    lesions_text = table_text(LESION_COLUMNS, lesions)
    out = check_writable_dir(outdir)
    tables = CohortTables(out / CASES_CSV, out / LESIONS_CSV, len(cases), len(lesions))
    atomic_write_text(tables.cases_csv, cases_text)
    atomic_write_text(tables.lesions_csv, lesions_text)
    return tables


def rebuild_cohort_tables(
    folder: str | os.PathLike[str], outdir: str | os.PathLike[str] | None = None
) -> CohortTables:
    """The cohort tables of every ``*_report.json`` in ``folder``, written into ``outdir``
    (default: ``folder``)."""
    reports = [read_report(p) for p in find_reports(folder)]
    return write_cohort_tables(reports, folder if outdir is None else outdir)
