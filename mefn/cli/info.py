"""``mefn info``: what mefn finds in an input, before any model runs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DESCRIPTION = """\
Show the files mefn finds for one study (layout, CT, PET, label), and for each image its
modality, size, spacing, physical extent, units and value range, and whether CT and PET
overlap. INPUT is anything `mefn segment` accepts: a 4D NIfTI, a <case>_0000/_0001 file or
stem, a HECKTOR <case>__CT/__PT file, an AutoPET study folder, a DICOM folder, or use
--ct and --pet. A single image file that is not part of a pair is described on its own.

Exit codes: 0 fine; 1 the images load but `mefn segment` would refuse them (CT not in HU,
PET not in SUV, no overlap); 2 the input cannot be found or read.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="describe the images of a study (files, grid, units, overlap)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", nargs="?", metavar="INPUT", help="study file, stem or folder")
    p.add_argument("--ct", metavar="PATH", help="CT image or DICOM folder")
    p.add_argument("--pet", metavar="PATH", help="PET image or DICOM folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def _describe(volume: Any, path: Any) -> dict[str, Any]:
    import numpy as np

    geo = volume.geometry
    lo, hi = geo.extent_mm()
    arr = volume.array
    return {
        "path": str(path),
        "modality": volume.modality,
        "units": volume.units,
        "shape": list(geo.shape),
        "spacing_mm": [round(float(s), 6) for s in geo.spacing_mm],
        "origin_mm": [round(float(s), 4) for s in geo.origin_mm],
        "direction": [round(float(d), 6) for d in geo.direction],
        "extent_mm": {
            "min": [round(float(v), 2) for v in lo],
            "max": [round(float(v), 2) for v in hi],
        },
        "dtype": str(arr.dtype),
        "min": float(np.min(arr)),
        "max": float(np.max(arr)),
        "mean": float(np.mean(arr)),
        **({"suv_conversion": volume.meta["suv"]} if "suv" in volume.meta else {}),
    }


def _text(report: dict[str, Any]) -> str:
    lines = []
    if "case_id" in report:
        lines.append(f"case      {report['case_id']}  (layout {report['layout']})")
    for key in ("ct", "pet", "label", "image"):
        d = report.get(key)
        if not d:
            continue
        lo, hi = d["extent_mm"]["min"], d["extent_mm"]["max"]
        extent = ", ".join(f"{a} {x:.1f} to {y:.1f}" for a, x, y in zip("xyz", lo, hi))
        lines += [
            f"{key.upper():<9} {d['path']}",
            f"  modality {d['modality'] or '?'}, units {d['units'] or '?'}, dtype {d['dtype']}",
            f"  size {' x '.join(str(s) for s in d['shape'])} voxels, spacing "
            f"{' x '.join(f'{s:g}' for s in d['spacing_mm'])} mm",
            f"  extent (LPS mm) {extent}",
            f"  values {d['min']:.4g} to {d['max']:.4g} (mean {d['mean']:.4g})",
        ]
        if "suv_conversion" in d:
            s = d["suv_conversion"]
            lines.append(
                f"  SUVbw from {s['units']}: factor {s['suv_factor']:.6g}, decay correction "
                f"{s['decay_correction']}, reference {s['reference_time']} "
                f"({s['reference_source']})"
            )
    if "overlap" in report:
        o = report["overlap"]
        lines.append(
            f"overlap   {100 * o['fraction_of_ct']:.0f}% of the CT box, "
            f"{100 * o['fraction_of_pet']:.0f}% of the PET box"
            + (" (same grid)" if o["same_grid"] else "")
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mefn.errors import InputError
    from mefn.io.discovery import find_case_files, load_case
    from mefn.io.readers import read_volume

    if args.input is None and not (args.ct or args.pet):
        raise InputError("no input given: pass INPUT, or --ct and --pet")
    if args.input is not None and (args.ct or args.pet):
        raise InputError("give INPUT or --ct/--pet, not both")
    report: dict[str, Any]
    if args.input is None and (args.ct is None or args.pet is None):
        single = args.ct or args.pet
        vol = read_volume(single, modality="CT" if args.ct else "PT")
        report = {"image": _describe(vol, single)}
    else:
        try:
            files = find_case_files(args.input, ct=args.ct, pet=args.pet)
        except InputError:
            path = Path(args.input) if args.input else None
            if path is None or not path.is_file():
                raise
            # a lone image: describe it alone
            report = {"image": _describe(read_volume(path), path)}
        else:
            case = load_case(files=files, check_units=False)
            report = {
                "case_id": case.case_id,
                "layout": case.layout,
                "files": files.to_json(),
                "ct": _describe(case.ct, files.ct),
                "pet": _describe(case.pet, files.pet),
                "overlap": case.provenance["overlap"],
                "output_grid": "PET" if files.output_on_pet else "CT",
            }
            if case.label is not None:
                report["label"] = _describe(case.label, files.label)
            from mefn.io.geometry import check_ct_units, check_pet_units

            problems = []
            for check, vol in ((check_ct_units, case.ct), (check_pet_units, case.pet)):
                try:
                    check(vol)
                except InputError as exc:
                    problems.append(str(exc))
            report["problems"] = problems
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_text(report))
        for problem in report.get("problems", []):
            print(f"warning: {problem}", file=sys.stderr)
    return 1 if report.get("problems") else 0
