"""Segment the real sarcoma FDG PET/CT (TCIA STS_001 crop) and score it against its GTV.

    python pipelines/eval_sts.py [--data ../shared/data/sts/STS_001] [--model default] [-o runs/sts]
                                 [--tta xyz]

Runs ``mefn segment --ct CT/image.nii.gz --pet PET/image.nii.gz`` (outputs on the CT grid) and
compares the mask with ``CT/mask.nii.gz`` (Dice, volumes, AutoPET false-positive and
false-negative volumes), and with ``PET/mask.nii.gz`` after nearest-neighbour resampling of
the prediction onto the PET grid, and gives the mean uncertainty u inside the reference
tumour and outside it (does u warn where the mask is wrong?) and the highest lesion probability
inside it. The figures go to
``<out>/sts_scores.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / total) if total else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "sts" / "STS_001"))
    parser.add_argument("--model", default="default")
    parser.add_argument("-o", "--output", default=str(REPO / "runs" / "sts"))
    parser.add_argument("--tta", default="", help="test-time mirroring axes (mefn segment --tta)")
    args = parser.parse_args()

    from mefn.cli import main as mefn
    from mefn.io.geometry import resample_to
    from mefn.io.readers import read_volume, read_volumes
    from mefn.metrics.autopet import autopet_case_metrics

    data, out = Path(args.data), Path(args.output)
    code = mefn(
        [
            "segment",
            "--ct",
            str(data / "CT/image.nii.gz"),
            "--pet",
            str(data / "PET/image.nii.gz"),
            "-o",
            str(out),
            "--model",
            args.model,
            "--overwrite",
            "--extra",
            *(["--tta", args.tta] if args.tta else []),
        ]
    )
    if code != 0:
        return code
    (mask_path,) = out.glob("*_mask.nii.gz")
    pred = read_volume(mask_path)
    ref_ct = read_volume(data / "CT/mask.nii.gz")
    ref_pet = read_volume(data / "PET/mask.nii.gz")
    pred_on_pet = resample_to(pred, ref_pet.geometry, interpolation="nearest")
    in_tumour, predicted = ref_ct.array > 0, pred.array > 0
    m = autopet_case_metrics(
        in_tumour.astype(np.uint8), predicted.astype(np.uint8), ref_ct.geometry.spacing_mm, 2022
    )
    report = json.loads(next(out.glob("*_report.json")).read_text())
    # does u warn where the answer is wrong? mean u inside the reference tumour and outside it
    (u_path,) = out.glob("*_uncertainty.nii.gz")
    u = read_volume(u_path).array
    (p_path,) = out.glob("*_probabilities.nii.gz")  # written by --extra: (background, lesion)
    lesion_p = read_volumes(p_path)[1].array
    scores = {
        "model": args.model,
        "tta": args.tta,
        "dice_ct_grid": m.dice,  # the AutoPET Dice below, on the CT grid of the contour
        "dice_pet_grid": dice(pred_on_pet.array > 0, ref_pet.array > 0),
        "reference_volume_ml": float(in_tumour.sum() * ref_ct.geometry.voxel_volume_ml),
        "predicted_volume_ml": float(predicted.sum() * pred.geometry.voxel_volume_ml),
        "autopet_2022": m.to_dict(),
        "max_lesion_probability_in_reference": float(lesion_p[in_tumour].max()),
        "mean_u_in_reference": float(u[in_tumour].mean()),
        "mean_u_outside_reference": float(u[~in_tumour].mean()),
        "n_lesions": report["n_lesions"],
        "lesions": report["lesions"][:5],
    }
    (out / "sts_scores.json").write_text(json.dumps(scores, indent=1, default=float))
    print(json.dumps({k: v for k, v in scores.items() if k != "lesions"}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
