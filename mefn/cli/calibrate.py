"""``mefn calibrate``: choose the post-processing of trained weights on validation cases."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Segment each labelled case of DIR once and choose, for the weights of MODEL (a training run
folder or a .safetensors file with its .json card), the lesion probability threshold, the
PET check of each lesion and the minimum lesion volume with the best mean Dice (AutoPET 2022)
among those whose mean false-positive volume stays within 3 mL (or within the plain
argmax's), then the review flag's mean-u threshold. The choice and every setting's scores
are written into the card, atomically; `mefn segment --model MODEL` uses them. Give
validation cases, never the cases you will report results on.
"""

EPILOG = """\
examples:
  mefn calibrate runs/autopet --data /data/autopet_val
  mefn calibrate runs/sts --data sts_validation/ --layout sts --tta x --max-cases 10
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "calibrate",
        help="choose the post-processing of trained weights on validation cases",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="training run folder or .safetensors file")
    p.add_argument("--data", required=True, metavar="DIR", help="labelled validation cases")
    p.add_argument(
        "--layout",
        default="auto",
        choices=("auto", "nnunet", "autopet", "hecktor", "sts"),
        help="layout of DIR (default: detected)",
    )
    p.add_argument(
        "--max-cases", type=int, default=20, help="at most this many cases, sorted by id"
    )
    p.add_argument(
        "--tta",
        default="none",
        help="test-time mirroring to calibrate for and store in the card (none, x, xy, xyz; "
        "default none: one pass)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from mefn.calibration import calibrate_postprocessing, summary, write_calibration
    from mefn.data.datasets import index_dataset
    from mefn.errors import InputError
    from mefn.inference import parse_tta_axes
    from mefn.registry import WEIGHTS_DIR, resolve_weights

    tta_axes = parse_tta_axes(args.tta)
    weights, card = resolve_weights(args.model)
    if card.resolve().parent == WEIGHTS_DIR.resolve():
        raise InputError(
            f"{args.model} is a bundled model whose card is part of the package; copy "
            f"{weights.name} and {card.name} into a folder of your own and calibrate that"
        )
    entries = index_dataset(args.data, layout=args.layout)
    if args.max_cases < 1:
        raise InputError(
            f"--max-cases must be at least 1, found {args.max_cases}; {len(entries)} cases in "
            f"{args.data}"
        )
    entries = entries[: args.max_cases]

    def progress(line: str) -> None:
        if not args.quiet:
            print(f"calibrate: {line}", file=sys.stderr, flush=True)

    calibration = calibrate_postprocessing(weights, entries, tta_axes, progress=progress)
    write_calibration(card, calibration, data=str(Path(args.data).resolve()), layout=args.layout)
    if not args.quiet:
        print(f"{card}: {summary(calibration)}")
    return 0
