"""``mefn evaluate``: score predictions against references by the challenges' own rules."""

from __future__ import annotations

import argparse
import sys
from typing import Any

DESCRIPTION = """\
Score a folder of predicted masks against a folder of references, exactly as the challenge
organisers' evaluation code does, and write OUT/per_case.csv and OUT/summary.json.

  autopet  Dice, false-positive and false-negative volume (mL), 18-connected components;
           --year 2022 (also 2023) or 2024 (also 2025) selects the empty-case rules.
           With --uncertainty-dir: calibration (ECE, Brier, NLL), uncertainty-error overlap,
           AUROC of uncertainty for errors, lesion referral curve, and PNG plots.
  hecktor  HECKTOR 2022 aggregated Dice (DSCagg) for GTVp (1) and GTVn (2).

Predictions are matched by file name: <case>.nii.gz or <case>_mask.nii.gz for the
reference <case>.nii.gz. A reference may also be <case>.dcm: an RTSTRUCT, rasterised onto
the prediction's grid (the CT grid; --reference-roi names the ROI when it holds several),
or a DICOM SEG whose frames lie on the prediction's grid (another grid is an error).
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score predictions with the AutoPET or HECKTOR challenge metrics",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    challenges = p.add_subparsers(dest="challenge", metavar="CHALLENGE")
    for name, help_text in (
        ("autopet", "AutoPET Dice / FPV / FNV (+ calibration with uncertainty maps)"),
        ("hecktor", "HECKTOR 2022 DSCagg"),
    ):
        c = challenges.add_parser(name, help=help_text, description=help_text)
        c.add_argument("reference_dir", metavar="REF_DIR", help="folder of reference masks")
        c.add_argument("prediction_dir", metavar="PRED_DIR", help="folder of predicted masks")
        c.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
        c.add_argument("--no-plots", action="store_true", help="do not write PNG figures")
        c.add_argument(
            "--reference-roi",
            metavar="NAME",
            help="ROI of RTSTRUCT references (<case>.dcm) that hold several",
        )
        if name == "autopet":
            c.add_argument(
                "--year",
                type=int,
                default=2022,
                choices=(2022, 2023, 2024, 2025),
                help="challenge year whose empty-case rules apply (default %(default)s)",
            )
            c.add_argument(
                "--uncertainty-dir",
                metavar="DIR",
                help="folder of <case>_uncertainty.nii.gz maps (adds calibration metrics)",
            )
            c.add_argument(
                "--probability-dir",
                metavar="DIR",
                help="folder of <case>_probabilities.nii.gz (4D, one volume per class)",
            )
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from mefn.metrics.evaluate import attach_maps, evaluate_autopet, evaluate_hecktor, match_cases

    if not getattr(args, "challenge", None):
        args._parser.print_help(sys.stderr)
        return 2
    cases = match_cases(args.reference_dir, args.prediction_dir)
    plots = not args.no_plots
    if args.challenge == "autopet":
        if args.probability_dir and not args.uncertainty_dir:
            from mefn.errors import InputError

            raise InputError("--probability-dir needs --uncertainty-dir as well")
        cases = attach_maps(cases, args.uncertainty_dir, args.probability_dir)
        s = evaluate_autopet(
            cases, args.output, year=args.year, plots=plots, reference_roi=args.reference_roi
        )
        if not args.quiet:
            print(
                f"AutoPET {args.year}: {s['n_cases']} cases ({s['n_cases_with_lesions']} with "
                f"lesions): Dice {s['dice_mean']:.4f}, FPV {s['fpv_ml_mean']:.3f} mL, "
                f"FNV {s['fnv_ml_mean']:.3f} mL -> {args.output}",
                file=sys.stderr,
            )
    else:
        s = evaluate_hecktor(cases, args.output, plots=plots, reference_roi=args.reference_roi)
        if not args.quiet:
            print(
                f"HECKTOR 2022: {s['n_cases']} cases: DSCagg GTVp {s['dscagg_gtvp']:.4f}, "
                f"GTVn {s['dscagg_gtvn']:.4f}, mean {s['dscagg_mean']:.4f} -> {args.output}",
                file=sys.stderr,
            )
    return 0
