"""``mefn convert``: a DICOM series to one NIfTI / MHA / NRRD file (CT in HU, PET in SUVbw)."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Convert one DICOM series to an image file. CT is written in HU (rescale slope and intercept
applied); PET in SUVbw (body weight, decay-corrected injected dose; the conversion
parameters are logged and stored beside the image as OUT.json). The output format follows
the file name (.nii.gz, .nii, .mha, .nrrd). An existing output is never replaced without
--overwrite; the file is written atomically.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a DICOM series to NIfTI (CT in HU, PET in SUVbw)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dicom_dir", metavar="DICOM_DIR", help="folder holding the DICOM series")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output image file")
    p.add_argument(
        "--modality",
        choices=("CT", "PT", "PET"),
        type=str.upper,
        help="which series to convert when the folder holds several",
    )
    p.add_argument(
        "--series",
        metavar="UID|DESCRIPTION",
        help="the series to convert: its SeriesInstanceUID, or a SeriesDescription only one "
        "series (of --modality) has; default: the one series of --modality, for PET the "
        "attenuation-corrected one (CorrectedImage lists ATTN), then the largest",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def _series_uid(src: Any, modality: str | None, args: argparse.Namespace) -> str | None:
    """The UID of the series to convert (None when the folder holds no DICOM series: the
    reader says so); an ambiguity error names --series."""
    from mefn.io.dicom import find_dicom_series, select_series

    found = find_dicom_series(src)
    if not found:
        return None
    return select_series(found, modality, src, choice=args.series, option="--series").uid


def run(args: argparse.Namespace) -> int:
    import json
    import logging
    from pathlib import Path

    import numpy as np

    from mefn.errors import InputError, OutputError
    from mefn.fileutil import atomic_write_text
    from mefn.io.dicom import read_dicom_series
    from mefn.io.readers import image_suffix
    from mefn.io.sitk_bridge import write_volume

    log = logging.getLogger("mefn.cli.convert")
    src, out = Path(args.dicom_dir), Path(args.output)
    if not src.is_dir():
        raise InputError(f"DICOM_DIR {src} is not a folder; give the folder holding the series")
    if image_suffix(out) is None:
        raise InputError(
            f"output {out} needs an image suffix (.nii.gz, .nii, .mha, .nrrd) to choose its format"
        )
    if out.exists() and not args.overwrite:
        raise OutputError(f"{out} already exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise OutputError(f"output folder {out.parent} does not exist; create it first")
    modality = "PT" if args.modality == "PET" else args.modality
    volume = read_dicom_series(src, modality=modality, series_uid=_series_uid(src, modality, args))
    write_volume(volume, out, dtype=np.float32, overwrite=True)
    sidecar = {
        "source": str(src),
        "modality": volume.modality,
        "units": volume.units,
        **{k: v for k, v in volume.meta.items() if k != "source"},
    }
    name = out.name[: -len(image_suffix(out) or "")]
    atomic_write_text(out.with_name(name + ".json"), json.dumps(sidecar, indent=2) + "\n")
    log.info(
        "wrote %s: %s %s, %s voxels",
        out,
        volume.modality,
        volume.units,
        "x".join(str(s) for s in volume.shape),
    )
    return 0
