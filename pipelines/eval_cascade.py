"""Calibrate and score the coarse-to-fine cascade on phantoms it never saw, in one pass.

    python -m pipelines.eval_cascade --fine campaigns/fine            # the cascade
    python -m pipelines.eval_cascade --coarse-only --run runs/coarse  # the coarse stage alone

Steps: (1) assemble the run folder ``--run``: the bundled coarse weights and their card, its
post-processing and trust removed (they were chosen for the coarse stage alone with eight
mirrored passes), with ``fine_stage`` naming the fine weights of ``--fine`` (a
``pipelines.train_fine`` campaign, copied in as ``fine.safetensors`` + ``fine.json``);
(2) choose the post-processing (:func:`mefn.calibration.calibrate_postprocessing`) in one
pass on ``--n-val`` validation phantoms (``mefn phantoms --layout nnunet --seed 9``: neither
training nor test seeds) and the simple phantoms of ``pipelines.eval_simple_phantoms``, and
write it into the card; (3) segment the fresh test phantoms of ``pipelines.train_phantoms``
(seeds from 10,000,000) in one pass and score them (AutoPET 2022), the grid ceiling taken at
the finest grid of the run. Summary: ``<run>/evaluation/summary.json`` and the card's
``test_fresh_phantoms``.

    python -m pipelines.eval_cascade --install --run runs/cascade   # bundle it

``--install`` makes a scored cascade run the bundled default: the fine weights go to
``mefn/weights/stages/`` and the run card's fine stage, post-processing, calibration and test
figures into ``mefn/weights/mefn_default.json`` (the coarse weights are the bundled ones
already). Its lesion confidence and voxel error map are then fitted by
``pipelines.trust_phantoms``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from pipelines._bench import REPO

#: what the coarse card chose for itself (8 mirrored passes), dropped in the cascade's card
COARSE_ONLY_KEYS = (
    "tta_axes", "lesion_threshold", "pet_check", "min_lesion_ml", "review_threshold",
    "calibration", "lesion_confidence", "voxel_error", "review_below", "test_fresh_phantoms",
    "min_confidence",
)  # fmt: skip
VAL_SEED = 9
#: where --install puts the fine stage's weights, relative to the bundled card
STAGE_FILE = "stages/mefn_default_fine.safetensors"
#: what --install copies from the run card into the bundled one
INSTALLED_KEYS = (
    "fine_stage", "tta_axes", "lesion_threshold", "pet_check", "min_lesion_ml",
    "review_threshold", "calibration", "test_fresh_phantoms", "reproduce",
    "lesion_confidence", "voxel_error", "review_below", "min_confidence",
)  # fmt: skip


def assemble(run: Path, fine: Path | None, fine_settings: dict[str, Any]) -> None:
    """The run folder: coarse weights + card (model.safetensors / model.json), and the fine
    stage's beside them."""
    from mefn.registry import resolve_weights

    weights, card_path = resolve_weights("default")
    run.mkdir(parents=True, exist_ok=True)
    shutil.copy(weights, run / "model.safetensors")
    card = json.loads(Path(card_path).read_text())
    for key in COARSE_ONLY_KEYS:
        card.pop(key, None)
    if fine is not None:
        shutil.copy(fine / "model.safetensors", run / "fine.safetensors")
        shutil.copy(fine / "model.json", run / "fine.json")
        card["fine_stage"] = {"weights": "fine.safetensors", **fine_settings}
    (run / "model.json").write_text(json.dumps(card, indent=1))


def install(run: Path, weights_dir: Path) -> Path:
    """Make the scored run of ``run`` the bundled default (see the module's docstring): a
    cascade, or the coarse stage alone with its one-pass post-processing (and the trust that
    ``pipelines.trust_phantoms`` fitted into the run's card, when it did)."""
    from mefn.fileutil import atomic_write_text

    card = json.loads((run / "model.json").read_text())
    if "test_fresh_phantoms" not in card:
        raise SystemExit(f"eval_cascade: {run} holds no scored cascade; run it without --install")
    if "fine_stage" in card:
        target = weights_dir / STAGE_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / "fine.safetensors", target)
        shutil.copy(run / "fine.json", target.with_suffix(".json"))
        card["fine_stage"] = {**card["fine_stage"], "weights": STAGE_FILE}
    bundled_path = weights_dir / "mefn_default.json"
    bundled = json.loads(bundled_path.read_text())
    coarse_reproduce = bundled.get("reproduce")
    for key in COARSE_ONLY_KEYS:
        bundled.pop(key, None)
    bundled.update({k: card[k] for k in INSTALLED_KEYS if k in card})
    if coarse_reproduce and "reproduce" in card:
        what = "cascade" if "fine_stage" in card else "post-processing and trust"
        bundled["reproduce"] = f"coarse stage: {coarse_reproduce}; {what}: {card['reproduce']}"
    atomic_write_text(bundled_path, json.dumps(bundled, indent=1))
    return bundled_path


def validation_entries(root: Path, n: int) -> list[Any]:
    from mefn.data.datasets import index_dataset
    from mefn.data.phantom_layouts import write_phantoms

    if len(list((root / "imagesTr").glob("*_0000.nii.gz"))) < n:
        write_phantoms(root, n=n, layout="nnunet", seed=VAL_SEED, overwrite=True)
    return index_dataset(root, layout="nnunet")[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fine", help="a pipelines.train_fine campaign (its model.safetensors)")
    parser.add_argument("--coarse-only", action="store_true", help="no fine stage")
    parser.add_argument("--run", default=str(REPO / "runs" / "cascade"))
    parser.add_argument("--val-dir", default=str(REPO / "work_data" / "cascade_val"))
    parser.add_argument("--n-val", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--candidate-threshold", type=float, default=0.1)
    parser.add_argument("--margin-mm", type=float, default=16.0)
    parser.add_argument("--gate-mm", type=float, default=8.0)
    parser.add_argument("--install", action="store_true", help="bundle the scored --run")
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep the test predictions here for pipelines.trust_phantoms --work (its test/)",
    )
    args = parser.parse_args(argv)
    if args.install:
        print(f"[install] {install(Path(args.run), REPO / 'mefn' / 'weights')}")
        return 0
    if args.coarse_only == bool(args.fine):
        parser.error("give --fine CAMPAIGN or --coarse-only")

    from mefn.calibration import write_calibration
    from pipelines.train_phantoms import calibrate_postprocessing_on, evaluate

    t0 = time.monotonic()
    run = Path(args.run)
    fine_settings = {
        "candidate_threshold": args.candidate_threshold,
        "margin_mm": args.margin_mm,
        "gate_mm": args.gate_mm,
    }
    assemble(run, None if args.coarse_only else Path(args.fine), fine_settings)
    val = validation_entries(Path(args.val_dir), args.n_val)
    calibration = calibrate_postprocessing_on(run, val, tta_axes=())
    write_calibration(
        run / "model.json",
        calibration,
        rule=f"as pipelines.train_phantoms, in one pass, on {len(val)} validation phantoms "
        f"(mefn phantoms --layout nnunet --seed {VAL_SEED}) and the simple phantoms",
    )
    spacing = None
    if not args.coarse_only:
        spacing = tuple(json.loads((run / "fine.json").read_text())["preprocess"]["spacing_mm"])
    keep = args.keep / "test" if args.keep else None
    summary = evaluate(run, args.n_test, run / "evaluation", (), spacing, keep)
    summary["calibration"] = {k: calibration[k] for k in ("lesion_threshold", "pet_check",
                                                           "min_lesion_ml")}  # fmt: skip
    card = json.loads((run / "model.json").read_text())
    summary["fine_stage"] = card.get("fine_stage")
    summary["seconds"] = round(time.monotonic() - t0, 1)
    text = json.dumps(summary, indent=1, default=float)
    (run / "evaluation" / "summary.json").write_text(text)
    card["test_fresh_phantoms"] = json.loads(text)
    command = "python -m pipelines.eval_cascade "
    command += "--coarse-only" if args.coarse_only else f"--fine {args.fine}"
    card["reproduce"] = (
        command if args.coarse_only else f"python -m pipelines.train_fine, then {command}"
    )
    (run / "model.json").write_text(json.dumps(card, indent=1))
    print(f"[test] summary {json.dumps(summary, default=float)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
