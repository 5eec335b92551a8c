"""Where a model's false positives lie: per phantom structure, on the validation split.

    python -m pipelines.false_positives_by_structure [--model default] [--tta none]
        [--max-cases 16] [--config configs/train/phantoms_small_stage2.yaml] [-o runs/fp]

Segments the validation phantoms of the training config with the weights' own post-processing
(the card's; ``--tta`` overrides its mirroring, ``--no-pet-check`` turns its PET check off),
rebuilds each phantom's anatomy from its seed (the data root's ``phantoms.json``)
and names the structure at each false lesion's hottest voxel: the last PET layer painted
there ("no uptake" below SUV 0.5, "body" when no layer holds it). Prints the false-positive
volume and count per structure, largest first, and writes ``<out>/false_positives.json``:
what hard negatives in training, or checks after it, should cover.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pipelines._bench import REPO, command_line, git_commit

#: Below this SUV a false lesion's hottest voxel has no uptake to speak of.
NO_UPTAKE_SUV = 0.5


def structure_at(layers: list[Any], point_mm: np.ndarray) -> str:
    """The name of the last layer with a PET value whose shape holds ``point_mm`` (LPS), as
    the scene paints them (a later layer covers an earlier one); "body" when none does."""
    x, y, z = (np.asarray([float(c)]) for c in point_mm)
    name = "body"
    for layer in layers:
        if layer.suv is not None and float(np.asarray(layer.shape.sdf(x, y, z)).ravel()[0]) <= 0:
            name = layer.name
    return name


def false_lesions(
    reference: np.ndarray, mask: np.ndarray, suv: np.ndarray
) -> list[tuple[tuple[int, int, int], int]]:
    """(hottest voxel index, voxel count) of each predicted lesion (18-connected) that touches
    no reference voxel."""
    import cc3d
    from scipy import ndimage

    components = cc3d.connected_components(mask > 0, connectivity=18)
    out = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        lesion = components[box] == index
        if (reference[box][lesion] > 0).any():
            continue
        hottest = np.unravel_index(np.argmax(np.where(lesion, suv[box], -np.inf)), lesion.shape)
        voxel = (
            int(hottest[0]) + box[0].start,
            int(hottest[1]) + box[1].start,
            int(hottest[2]) + box[2].start,
        )
        out.append((voxel, int(lesion.sum())))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--config", default=str(REPO / "configs/train/phantoms_small_stage2.yaml"))
    parser.add_argument("--tta", default=None, help="mirroring axes (default: the card's)")
    parser.add_argument("--no-pet-check", action="store_true", help="turn the card's off")
    parser.add_argument("--max-cases", type=int, default=16, help="validation cases")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("-o", "--output", default=str(REPO / "runs" / "fp_structures"))
    args = parser.parse_args()

    from dataclasses import replace

    from mefn.data.phantoms import study_layers
    from mefn.inference import Predictor, parse_tta_axes
    from mefn.metrics.scoring import case_loaders, score_cases
    from mefn.postprocess import PetCheck
    from mefn.training import load_train_config
    from pipelines.train_phantoms import validation_entries

    cfg = load_train_config(args.config)
    root = Path(cfg.data.root)
    root = root if root.is_absolute() else REPO / root
    cfg = replace(cfg, data=replace(cfg.data, root=str(root)))
    index = json.loads((root / "phantoms.json").read_text())
    studies = {s["name"]: s["seed"] for s in index["studies"]}
    predictor = Predictor(
        args.model,
        device="cpu",
        threads=args.threads,
        tta_axes=None if args.tta is None else parse_tta_axes(args.tta),
        pet_check=PetCheck() if args.no_pet_check else None,
    )
    volume: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    rows = []

    def classify(case: Any, pred: Any, ref: np.ndarray) -> dict[str, Any]:
        """Name the structure under each false lesion of one case; pool it."""
        layers = list(study_layers(studies[case.case_id], **index["options"]))
        voxel_ml = pred.geometry.voxel_volume_ml
        found = 0
        for voxel, n in false_lesions(ref, pred.mask, pred.suv):
            if pred.suv[voxel] < NO_UPTAKE_SUV:
                name = "no uptake"
            else:
                name = structure_at(layers, pred.geometry.index_to_world(np.asarray(voxel)))
            volume[name] += n * voxel_ml
            count[name] += 1
            found += 1
            rows.append({"case": case.case_id, "structure": name, "volume_ml": n * voxel_ml})
        return {"false_lesions": found}

    entries = validation_entries(cfg, args.max_cases)
    for entry in entries:
        if entry.case_id not in studies:
            raise SystemExit(f"{entry.case_id} is not in {root / 'phantoms.json'}")
    score_cases(
        predictor,
        case_loaders(entries),
        None,
        extra=classify,
        progress=lambda _i, s: print(f"[fp] {s.case_id}: {s.extra['false_lesions']}", flush=True),
    )
    order = sorted(volume, key=lambda k: -volume[k])
    for name in order:
        print(f"{name:28s} {volume[name]:8.2f} mL in {count[name]} false lesion(s)")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "command": command_line("pipelines.false_positives_by_structure"),
        "commit": git_commit(),
        "settings": predictor.settings(),
        "cases": args.max_cases,
        "by_structure": {k: {"volume_ml": volume[k], "lesions": count[k]} for k in order},
        "false_lesions": rows,
    }
    (out / "false_positives.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
