"""``mefn review``: a one-page static figure for reviewing a segmentation and its uncertainty."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Write a one-page review of one case as PNG or PDF: PET/CT fusion with the mask outlined, the
voxel uncertainty u, the CT-versus-PET disagreement (outputs of `mefn segment --extra`), a
coronal PET MIP with each lesion and its mean u, the lesion table sorted by uncertainty with
the review flag, and, with --reference, the reliability diagram and risk-coverage curve.

OUTPUTS_OR_CASE is either a `mefn segment` output folder (then --case gives the input case it
was made from) or an input case (then it is segmented first with --model).
"""

logger = logging.getLogger(__name__)

FIGURE_SUFFIXES = (".png", ".pdf")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "review",
        help="write a static review figure (PNG/PDF) of a case's mask and uncertainty",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", metavar="OUTPUTS_OR_CASE", help="`mefn segment` output folder or a case")
    p.add_argument("-o", "--output", required=True, help="figure file, .png or .pdf")
    p.add_argument("--case", help="the input case of an output folder (CT and PET)")
    p.add_argument("--case-id", help="which case of an output folder holding several")
    p.add_argument("--reference", help="reference mask on the case grid: adds calibration plots")
    p.add_argument(
        "--slice",
        default="auto",
        help="I,J,K voxel the three planes go through, or auto: the most uncertain flagged "
        "lesion, else the largest (default %(default)s)",
    )
    p.add_argument(
        "--model", default="default", help="weights used when a case is given (default %(default)s)"
    )
    p.add_argument(
        "--device", default="auto", help="auto, cpu, cuda or cuda:N (default %(default)s)"
    )
    p.add_argument("--dpi", type=int, default=110, help="PNG resolution (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing figure")
    p.set_defaults(func=run)


def parse_slice(text: str) -> tuple[int, int, int] | None:
    """``"auto"`` -> None; ``"I,J,K"`` -> a voxel index."""
    from mefn.errors import InputError

    if text.strip().lower() == "auto":
        return None
    parts = text.split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or min(values) < 0:
        raise InputError(
            f"--slice expects auto or three voxel indices I,J,K (e.g. 40,52,100), found {text!r}"
        )
    return (values[0], values[1], values[2])


def find_output_case(folder: Path, case_id: str | None) -> str:
    """The case id of the `mefn segment` outputs in ``folder``."""
    from mefn.errors import InputError

    found = sorted(p.name[: -len("_mask.nii.gz")] for p in folder.glob("*_mask.nii.gz"))
    if case_id is not None:
        if case_id not in found:
            raise InputError(
                f"no {case_id}_mask.nii.gz in {folder}; cases there: {', '.join(found) or 'none'}"
            )
        return case_id
    if not found:
        raise InputError(
            f"{folder} holds no <case>_mask.nii.gz: expected a `mefn segment` output folder"
        )
    if len(found) > 1:
        raise InputError(
            f"{folder} holds outputs of {len(found)} cases ({', '.join(found[:5])}"
            f"{', ...' if len(found) > 5 else ''}); choose one with --case-id"
        )
    return found[0]


def _on_grid(volume: Any, geometry: Any, what: str, interpolation: str, default: float) -> Any:
    """``volume``'s array on ``geometry``, resampled when its grid differs."""
    if volume.geometry.same_grid(geometry):
        return volume.array
    from mefn.io.geometry import resample_to

    logger.info("resampling %s onto the prediction grid (%s)", what, interpolation)
    return resample_to(volume, geometry, interpolation=interpolation, default_value=default).array


def _review_from_outputs(args: argparse.Namespace, folder: Path) -> Any:
    import numpy as np

    from mefn.errors import InputError
    from mefn.io.discovery import load_case
    from mefn.io.readers import read_volume
    from mefn.postprocess import lesion_table
    from mefn.viz import ReviewData

    case_id = find_output_case(folder, args.case_id)
    paths = {
        key: folder / f"{case_id}_{key}.nii.gz"
        for key in ("mask", "uncertainty", "uncertainty_ct", "uncertainty_pet")
    }
    if not paths["uncertainty"].is_file():
        raise InputError(
            f"{paths['uncertainty']} is missing beside {paths['mask'].name}; "
            "rerun `mefn segment` for this case"
        )
    if args.case is None:
        raise InputError(
            f"{folder} is an output folder: pass the input case it was made from with --case "
            "(the CT and PET are not stored with the outputs)"
        )
    case_path = Path(args.case)
    if not case_path.exists():
        raise InputError(f"--case {case_path} does not exist; check the path")
    _check_reference_path(args.reference)

    mask_vol = read_volume(paths["mask"])
    geo = mask_vol.geometry
    uncertainty = read_volume(paths["uncertainty"])
    if not uncertainty.geometry.same_grid(geo):
        raise InputError(
            f"{paths['uncertainty'].name} and {paths['mask'].name} are on different grids; "
            "both must come from one `mefn segment` run"
        )
    extra: dict[str, Any] = {}
    for key in ("uncertainty_ct", "uncertainty_pet"):
        if paths[key].is_file():
            vol = read_volume(paths[key])
            extra[key] = vol.array if vol.geometry.same_grid(geo) else None
    if extra.get("uncertainty_ct") is None or extra.get("uncertainty_pet") is None:
        extra = {}
    threshold = _review_threshold(folder / f"{case_id}_report.json")
    case = load_case(case_path)
    ct = _on_grid(case.ct, geo, "CT", "linear", -1000.0)
    suv = np.asarray(_on_grid(case.pet, geo, "PET", "linear", 0.0), dtype=np.float32)
    mask = np.asarray(mask_vol.array, dtype=np.uint8)
    unc = np.asarray(uncertainty.array, dtype=np.float32)
    table = lesion_table(mask, suv, unc, geo, review_threshold=threshold)
    return ReviewData(
        geometry=geo,
        ct=ct,
        suv=suv,
        mask=mask,
        uncertainty=unc,
        lesions=table,
        reference=_read_reference(args.reference, geo),
        case_id=case_id,
        **extra,
    )


def _review_from_case(args: argparse.Namespace, case_path: Path) -> Any:
    from mefn.io.discovery import load_case
    from mefn.viz import ReviewData

    _check_reference_path(args.reference)
    case = load_case(case_path)
    from mefn.inference import Predictor

    prediction = Predictor(args.model, device=args.device).predict(case, keep_extra=True)
    geo = prediction.geometry
    ct = _on_grid(case.ct, geo, "CT", "linear", -1000.0)
    return ReviewData.from_prediction(
        prediction, ct, reference=_read_reference(args.reference, geo)
    )


def _review_threshold(report_path: Path) -> float:
    if not report_path.is_file():
        return 0.3
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        return float(report.get("review_threshold", 0.3))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, AttributeError):
        logger.warning("%s is not a mefn report; using review threshold 0.3", report_path)
        return 0.3


def _check_reference_path(reference: str | None) -> None:
    from mefn.errors import InputError

    if reference is not None and not Path(reference).is_file():
        raise InputError(f"--reference {reference} does not exist; give the reference mask file")


def _read_reference(reference: str | None, geometry: Any) -> Any:
    if reference is None:
        return None
    import numpy as np

    from mefn.io.readers import read_volume

    vol = read_volume(Path(reference))
    return np.asarray(_on_grid(vol, geometry, "reference", "nearest", 0.0)).astype(np.uint8)


def run(args: argparse.Namespace) -> int:
    from mefn.errors import InputError, OutputError

    out = Path(args.output)
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise InputError(f"-o must name a .png or .pdf file, found {out.name!r}")
    if out.exists() and not args.overwrite:
        raise OutputError(
            f"{out} already exists; pass --overwrite to replace it or choose another -o"
        )
    if not out.parent.is_dir():
        raise OutputError(f"folder {out.parent} does not exist; create it first")
    point = parse_slice(args.slice)
    if args.dpi < 10:
        raise InputError(f"--dpi must be at least 10, found {args.dpi}")
    path = Path(args.path)
    if not path.exists():
        raise InputError(f"{path} does not exist; give a `mefn segment` output folder or a case")

    if path.is_dir() and any(path.glob("*_mask.nii.gz")):
        data = _review_from_outputs(args, path)
    else:
        if args.case is not None:
            raise InputError(
                f"--case goes with an output folder, but {path} holds no <case>_mask.nii.gz"
            )
        data = _review_from_case(args, path)

    if point is not None and not all(p < n for p, n in zip(point, data.geometry.shape)):
        raise InputError(
            f"--slice {','.join(map(str, point))} is outside the image of shape "
            f"{data.geometry.shape}"
        )
    from mefn.viz import review_figure, save_figure

    fig = review_figure(data, point=point)
    save_figure(fig, out, dpi=args.dpi)
    if not args.quiet:
        table = data.lesion_table()
        print(
            f"{data.case_id}: {len(table.lesions)} lesion(s), {table.n_review} flagged for "
            f"review -> {out}"
        )
    return 0
