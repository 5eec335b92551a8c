"""``mefn report``: rebuild the cohort tables of a `mefn segment` output folder."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Read every <case>_report.json in DIR (written by `mefn segment`) and write, without
segmenting again, OUTDIR/cases.csv (one row per case: lesion count, MTV mL, TLG, SUVmax,
lesions to review, uncertainty, model, seconds, inputs; plus unsegmented_hot_spots when the
reports list hot spots) and OUTDIR/lesions.csv (one row per lesion: every lesion field of
the reports, centroid in LPS mm). Rows are sorted by case id. These are the tables
`mefn segment` writes beside its reports, byte for byte. A missing field (a report from
another mefn version) is an empty cell; a file that is not a mefn report is an error.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="rebuild cases.csv and lesions.csv from a folder of case reports",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", metavar="DIR", help="output folder of `mefn segment`")
    p.add_argument(
        "-o", "--output", metavar="OUTDIR", help="where to write the two tables (default: DIR)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mefn.cohort import rebuild_cohort_tables

    tables = rebuild_cohort_tables(args.folder, args.output)
    if not args.quiet:
        print(
            f"{tables.n_cases} case(s), {tables.n_lesions} lesion(s) -> {tables.cases_csv}, "
            f"{tables.lesions_csv}"
        )
    return 0
