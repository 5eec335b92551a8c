"""``mefn calibrate``: fit the post-processing and the trust of trained weights (or an adapter)
on validation cases."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """\
Segment each labelled case of DIR and choose, for the weights of MODEL (a training run
folder or a .safetensors file with its .json card; with --adapter, that adapter on them),
the lesion probability threshold, the PET check of each lesion and the minimum lesion volume
with the best mean Dice (AutoPET 2022) among those whose mean false-positive volume stays
within 3 mL (or within the plain argmax's). Then segment them again with that choice and fit
the lesion confidence (the probability that a predicted lesion is real) and the voxel error
map (the probability that a voxel's label is wrong) that `mefn segment` reports. Everything
is written into the card (the adapter's card.json with --adapter), atomically. Give
validation cases, never the cases you will report results on.
"""

EPILOG = """\
examples:
  mefn calibrate runs/autopet --data /data/autopet_val
  mefn calibrate runs/sts --data sts_validation/ --layout sts --tta x --max-cases 10
  mefn calibrate default --adapter runs/my_centre/adapter --data my_centre_val/
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "calibrate",
        help="choose the post-processing of trained weights on validation cases",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model", metavar="MODEL", help="training run folder, .safetensors file or bundled name"
    )
    p.add_argument(
        "--adapter",
        default=None,
        metavar="DIR",
        help="calibrate this adapter (a mefn finetune output) on MODEL; written to its card.json",
    )
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
    p.add_argument(
        "--tta-scales",
        default="1",
        metavar="SCALES",
        help="test-time scales to calibrate for and store in the card (mefn segment "
        "--tta-scales; e.g. 1,1.5,2; default 1: the model grid only)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mefn.data.datasets import index_dataset
    from mefn.errors import InputError
    from mefn.inference import parse_tta_axes, parse_tta_scales
    from mefn.registry import ADAPTER_CARD, WEIGHTS_DIR, resolve_adapter, resolve_weights

    tta_axes = parse_tta_axes(args.tta)
    tta_scales = parse_tta_scales(args.tta_scales)
    weights, card = resolve_weights(args.model)
    adapter = None
    if args.adapter is not None:
        adapter = resolve_adapter(args.adapter)
        card = adapter / ADAPTER_CARD
    elif card.resolve().parent == WEIGHTS_DIR.resolve():
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

    return calibrate_and_report(
        "mefn calibrate", weights, entries, card, adapter=adapter, tta_axes=tta_axes,
        tta_scales=tta_scales, quiet=args.quiet, data=str(Path(args.data).resolve()), layout=args.layout,
    )  # fmt: skip


def calibrate_and_report(
    command: str,
    model: Any,
    entries: Any,
    card: Any,
    adapter: Any = None,
    tta_axes: tuple[int, ...] = (),
    quiet: bool = False,
    tta_scales: tuple[float, ...] = (1.0,),
    **record: Any,
) -> int:
    """Run :func:`mefn.calibration.calibrate_card` and say what it chose (progress on stderr,
    the choice on stdout, a warning when the trust could not be fitted); the exit status."""
    import sys

    from mefn.calibration import calibrate_card, summary, trust_summary

    def progress(line: str) -> None:
        if not quiet:
            print(f"calibrate: {line}", file=sys.stderr, flush=True)

    calibration, trust, why = calibrate_card(
        model, entries, card, adapter=adapter, tta_axes=tta_axes, progress=progress,
        tta_scales=tta_scales, **record,
    )  # fmt: skip
    if not quiet:
        print(f"{card}: {summary(calibration)}")
        if trust is not None:
            print(f"{card}: {trust_summary(trust)}")
    if why is not None:
        print(
            f"{command}: warning: lesion confidence and voxel error map not fitted ({why}); "
            "the card flags lesions by mean u",
            file=sys.stderr,
        )
    return 0
