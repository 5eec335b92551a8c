"""``mefn review``: a one-page static figure for reviewing a segmentation and its uncertainty."""

from __future__ import annotations

import argparse
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
    p.add_argument("--reference", help="reference mask: adds the calibration plots")
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
    try:
        values = [int(p) for p in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or min(values) < 0:
        raise InputError(
            f"--slice expects auto or three voxel indices I,J,K (e.g. 40,52,100), found {text!r}"
        )
    return (values[0], values[1], values[2])


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
    if args.reference is not None and not Path(args.reference).is_file():
        raise InputError(f"--reference {args.reference} does not exist; give the mask file")

    from mefn import viz

    if path.is_dir() and any(path.glob("*_mask.nii.gz")):
        viz.output_case_id(path, args.case_id)  # fails fast on an ambiguous folder
        if args.case is None:
            raise InputError(
                f"{path} is an output folder: pass the input case it was made from with --case "
                "(the CT and PET are not stored with the outputs)"
            )
        if not Path(args.case).exists():
            raise InputError(f"--case {args.case} does not exist; check the path")
        data = viz.load_review(path, args.case, reference=args.reference, case_id=args.case_id)
    else:
        if args.case is not None:
            raise InputError(
                f"--case goes with an output folder, but {path} holds no <case>_mask.nii.gz"
            )
        from mefn.inference import resolve_weights

        resolve_weights(args.model)  # a bad model name fails before the case is read
        data = viz.prepare_review(
            case=path, reference=args.reference, model=args.model, device=args.device
        )

    if point is not None and not all(p < n for p, n in zip(point, data.geometry.shape)):
        raise InputError(
            f"--slice {','.join(map(str, point))} is outside the image of shape "
            f"{data.geometry.shape}"
        )
    fig = viz.review_figure(data, point=point)
    viz.save_figure(fig, out, dpi=args.dpi)
    if not args.quiet:
        table = data.lesion_table()
        print(
            f"{data.case_id}: {len(table.lesions)} lesion(s), {table.n_review} flagged for "
            f"review -> {out}"
        )
    return 0
