"""``mefn demo``: generate a PET/CT phantom study, segment it and draw its review figure."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Generate a synthetic PET/CT study (a phantom with known lesions) and run mefn on it:
writes OUT/input/demo_0000.nii.gz (CT), demo_0001.nii.gz (PET, SUV) and
demo_reference_mask.nii.gz (the phantom's lesions), then runs `mefn info` on the study,
`mefn segment` (the bundled default weights, or --model) into OUT/segmentation, and `mefn review`
against the reference into OUT/review.png. What `make demo` runs.
"""


def add_parser(sub: Any) -> None:
    # the description is one paragraph: argparse wraps it to the terminal
    help_line = "segment a generated PET/CT phantom and draw its review figure"
    p = sub.add_parser("demo", help=help_line, description=DESCRIPTION)
    p.add_argument("-o", "--out", default="demo_output", help="output folder (default %(default)s)")
    p.add_argument("--seed", type=int, default=2026, help="phantom seed (default %(default)s)")
    p.add_argument(
        "--kind",
        default="wholebody",
        choices=["wholebody", "headneck"],
        help="phantom kind (default %(default)s)",
    )
    p.add_argument(
        "--small",
        action="store_true",
        help="a phantom on a coarser grid: quicker to generate and resample (the network's "
        "work, set by the phantom's extent, stays the same)",
    )
    p.add_argument(
        "--model",
        default="default",
        help="weights to segment with, as for `mefn segment --model` (default: the bundled "
        "default weights)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mefn.cli import main as mefn_main
    from mefn.demo import write_demo_study

    quiet = bool(getattr(args, "quiet", False))
    # the steps are mefn commands of their own: they inherit -q and --debug
    flags = [*(["--debug"] if getattr(args, "debug", False) else []), *(["-q"] if quiet else [])]

    def say(text: str) -> None:
        if not quiet:
            print(f"[demo] {text}", flush=True)

    def step(*argv: str) -> int:
        say(f"$ mefn {' '.join(argv)}")
        return mefn_main([*flags, *argv])

    out = Path(args.out)
    inp = out / "input"
    say(f"generating a {args.kind} PET/CT phantom (seed {args.seed}) ...")
    study = write_demo_study(inp, seed=args.seed, kind=args.kind, small=args.small)
    say(f"wrote {study.ct_path} (CT) and {study.pet_path.name} (PET, SUV);")
    say(f"the phantom holds {study.n_lesions} lesion(s); reference: {study.reference_path.name}")
    code = step("info", str(study.ct_path))
    if code != 0:
        return code
    from mefn.registry import list_models

    if args.model == "default" and "mefn_default" not in list_models():
        say("no bundled default weights yet: segmentation skipped")
        return 0
    seg_out = out / "segmentation"
    model = [] if args.model == "default" else ["--model", str(args.model)]
    code = step("segment", str(study.ct_path), "-o", str(seg_out), *model, "--overwrite", "--extra")
    if code != 0:
        return code
    review = out / "review.png"
    case = ["--case", str(study.ct_path), "--reference", str(study.reference_path)]
    code = step("review", str(seg_out), *case, "-o", str(review), "--overwrite")
    say(f"outputs in {seg_out.resolve()}:")
    if not quiet:
        for path in sorted(seg_out.iterdir()):
            print(f"         {path.name}")
    if code == 0:
        say(f"review figure: {review.resolve()}")
    return code
