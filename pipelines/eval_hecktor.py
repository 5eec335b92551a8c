"""Evaluate predictions on the HECKTOR 2022 layout with the official DSCagg.

References: ``ROOT/labelsTr/<Centre>-<nnn>.nii.gz`` (or ROOT itself when it holds the label
files); predictions: ``PRED/<case>.nii.gz`` or ``PRED/<case>_mask.nii.gz`` on the CT grid.

    python -m pipelines.eval_hecktor ROOT PRED -o OUT
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mefn.errors import MefnError
from mefn.metrics.evaluate import evaluate_hecktor, match_cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="HECKTOR dataset root (with labelsTr/)")
    parser.add_argument("predictions", type=Path, help="folder of predicted label maps")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    labels = args.root / "labelsTr" if (args.root / "labelsTr").is_dir() else args.root
    try:
        s = evaluate_hecktor(
            match_cases(labels, args.predictions), args.output, plots=not args.no_plots
        )
    except MefnError as exc:
        print(f"eval_hecktor: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(
        f"HECKTOR 2022: {s['n_cases']} cases, DSCagg GTVp {s['dscagg_gtvp']:.4f}, "
        f"GTVn {s['dscagg_gtvn']:.4f}, mean {s['dscagg_mean']:.4f} -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
