"""Segment the real sarcoma FDG PET/CT studies (TCIA Soft-tissue-Sarcoma crops) and score them.

    python -m pipelines.eval_sts [--data ../shared/data/sts] [--model default] [--adapter DIR]
                                 [--cases STS_001,STS_004] [--tta none] [-o runs/sts]

``--data`` is the folder of cases (``<case>/CT/image.nii.gz``, ``CT/mask.nii.gz``,
``PET/image.nii.gz``; see ``../shared/data/README.md``) or one case folder. Each case is
segmented on its CT grid, as ``mefn segment --ct CT/image.nii.gz --pet PET/image.nii.gz``
does, and scored against ``CT/mask.nii.gz``:

- ``dice``: Dice of the mask against the contour (all lesions together, as AutoPET);
- ``hot_spot_listed``: whether a PET hot spot outside the mask that the report lists
  (:class:`mefn.postprocess.HotSpotCheck`) overlaps the contour, with its SUVmax and the
  network's highest lesion probability inside;
- ``found``: Dice > 0.3 or the tumour listed among the hot spots (the bar of the real-scans
  issue: a reader must see the tumour either way);
- ``suv25_dice``: the plain SUV >= 2.5 threshold's Dice on the same grid, for reference.

Per-case rows go to ``<out>/sts_cases.csv``, the summary to ``<out>/sts_summary.json``.
Data: Vallières et al. 2015, TCIA DOI 10.7937/K9/TCIA.2015.7GO2GSKS (CC BY 3.0).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipelines._bench import REPO

DEFAULT_DATA = REPO.parent / "shared" / "data" / "sts"
FOUND_DICE = 0.3


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return float(2 * np.logical_and(a, b).sum() / total) if total else float("nan")


def case_folders(data: Path, only: list[str] | None = None) -> list[Path]:
    """The case folders under ``data`` (or ``data`` itself when it is one case)."""
    if (data / "CT" / "image.nii.gz").is_file():
        found = [data]
    else:
        found = sorted(p for p in data.iterdir() if (p / "CT" / "image.nii.gz").is_file())
    if only:
        names = set(only)
        found = [p for p in found if p.name in names]
        missing = names - {p.name for p in found}
        if missing:
            raise SystemExit(f"eval_sts: no case {sorted(missing)} under {data}")
    if not found:
        raise SystemExit(f"eval_sts: no <case>/CT/image.nii.gz under {data}")
    return found


def load_sts_case(folder: Path) -> Any:
    """One case folder as a :class:`mefn.io.case.Case`, its label the CT-grid contour."""
    from mefn.io.discovery import load_case

    case = load_case(
        ct=folder / "CT" / "image.nii.gz",
        pet=folder / "PET" / "image.nii.gz",
        label=folder / "CT" / "mask.nii.gz",
        case_id=folder.name,
    )
    assert case.label is not None  # given just above
    return case


def score_case(predictor: Any, folder: Path) -> dict[str, Any]:
    """Segment one case folder and score it (see the module docstring)."""
    from mefn.postprocess import label_hot_spots

    case = load_sts_case(folder)
    prediction = predictor.predict(case)
    reference = case.label.array > 0
    predicted = prediction.mask > 0
    _, spot_map = label_hot_spots(
        prediction.mask, prediction.suv, prediction.geometry, predictor.hot_spots
    )
    listed_ids = sorted({int(v) for v in np.unique(spot_map[reference]) if v})
    listed = [s for s in prediction.hot_spots if s.spot_id in listed_ids]
    case_dice = dice(predicted, reference)
    return {
        "case": folder.name,
        "reference_ml": float(reference.sum() * prediction.geometry.voxel_volume_ml),
        "predicted_ml": float(predicted.sum() * prediction.geometry.voxel_volume_ml),
        "dice": case_dice,
        "n_lesions": len(prediction.lesions.lesions),
        "n_hot_spots": len(prediction.hot_spots),
        "hot_spot_listed": bool(listed),
        "listed_suv_max": max((s.suv_max for s in listed), default=None),
        "listed_lesion_probability_max": max(
            (s.lesion_probability_max or 0.0 for s in listed), default=None
        ),
        "found": bool(case_dice > FOUND_DICE or listed),
        "suv_max_in_reference": float(prediction.suv[reference].max()),
        "suv25_dice": dice(prediction.suv >= 2.5, reference),
        "seconds": round(prediction.seconds, 1),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    dices = np.asarray([r["dice"] for r in rows], dtype=np.float64)
    return {
        "n_cases": len(rows),
        "dice_mean": float(np.nanmean(dices)),
        "dice_median": float(np.nanmedian(dices)),
        "n_dice_over_0.3": int((dices > FOUND_DICE).sum()),
        "n_hot_spot_listed": sum(bool(r["hot_spot_listed"]) for r in rows),
        "n_found": sum(bool(r["found"]) for r in rows),
        "not_found": [r["case"] for r in rows if not r["found"]],
        "suv25_dice_mean": float(np.nanmean([r["suv25_dice"] for r in rows])),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--cases", default="", help="comma-separated case names (default all)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--tta", default=None, help="mirroring axes, or none (default: card)")
    parser.add_argument("-o", "--output", default=str(REPO / "runs" / "sts"))
    args = parser.parse_args(argv)

    from mefn.inference import Predictor, parse_tta_axes

    folders = case_folders(Path(args.data), [c for c in args.cases.split(",") if c])
    predictor = Predictor(
        args.model,
        adapter=args.adapter,
        tta_axes=None if args.tta is None else parse_tta_axes(args.tta),
    )
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for folder in folders:
        row = score_case(predictor, folder)
        rows.append(row)
        print(
            f"{row['case']}: Dice {row['dice']:.3f} (SUV>=2.5: {row['suv25_dice']:.3f}), "
            f"{row['n_lesions']} lesion(s), hot spot on the tumour: {row['hot_spot_listed']}, "
            f"{row['seconds']} s",
            flush=True,
        )
    with open(out / "sts_cases.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "model": args.model,
        "adapter": args.adapter,
        "settings": predictor.settings(),
        **summarise(rows),
    }
    (out / "sts_summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(json.dumps({k: v for k, v in summary.items() if k != "settings"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
