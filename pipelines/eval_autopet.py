"""Evaluate predictions on an AutoPET dataset in its own layout, by the challenge rules.

References are found in either release:
- NIfTI release: ``ROOT/PETCT_<id>/<study>/SEG.nii.gz``; the case is ``PETCT_<id>_<study>``
  (the study folder name as it is, spaces included, as ``mefn.data.datasets`` names it);
- nnU-Net release: ``ROOT/labelsTr/<case>.nii.gz``.
Predictions are ``PRED/<case>.nii.gz`` or ``PRED/<case>_mask.nii.gz``; uncertainty maps
``<case>_uncertainty.nii.gz`` in --uncertainty-dir (often PRED itself).

    python -m pipelines.eval_autopet ROOT PRED -o OUT [--year 2024] [--uncertainty-dir PRED]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mefn.errors import MefnError
from mefn.metrics.evaluate import attach_maps, evaluate_autopet, match_predictions


def autopet_references(root: Path) -> dict[str, Path]:
    """case -> SEG path for either AutoPET release layout."""
    labels = root / "labelsTr"
    if labels.is_dir():
        refs = {p.name[: -len(".nii.gz")]: p for p in sorted(labels.glob("*.nii.gz"))}
    else:
        refs = {
            f"{seg.parent.parent.name}_{seg.parent.name}": seg
            for seg in sorted(root.glob("PETCT_*/*/SEG.nii.gz"))
        }
    if not refs:
        raise MefnError(
            f"no references under {root}: expected PETCT_*/<study>/SEG.nii.gz or labelsTr/*.nii.gz"
        )
    return refs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="AutoPET dataset root")
    parser.add_argument("predictions", type=Path, help="folder of predicted masks")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--year", type=int, default=2022, choices=(2022, 2023, 2024, 2025))
    parser.add_argument("--uncertainty-dir", type=Path)
    parser.add_argument("--probability-dir", type=Path)
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cases = match_predictions(
            autopet_references(args.root), args.predictions, where=str(args.root)
        )
        cases = attach_maps(cases, args.uncertainty_dir, args.probability_dir)
        s = evaluate_autopet(cases, args.output, year=args.year, plots=not args.no_plots)
    except MefnError as exc:
        print(f"eval_autopet: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(
        f"AutoPET {args.year}: {s['n_cases']} cases, Dice {s['dice_mean']:.4f}, "
        f"FPV {s['fpv_ml_mean']:.3f} mL, FNV {s['fnv_ml_mean']:.3f} mL -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
