"""Train the bundled default weights on synthetic phantoms, then score them on fresh phantoms.

    python -m pipelines.train_phantoms                       # the whole recipe, about 2 h on 2 cores
    python -m pipelines.train_phantoms --resume              # continue an interrupted run
    python -m pipelines.train_phantoms --evaluate-only       # re-score runs/phantoms_fast

Steps: (1) write ``--n`` training phantoms (seeds from ``--seed``) in the nnU-Net layout;
(2) ``mefn.training.train`` with ``configs/train/phantoms_fast.yaml`` (the fast recipe of
``docs/benchmarks.md``; the bundled weights were trained with ``--config
configs/train/phantoms_small.yaml --run runs/phantoms_small``, then its stage 2, as their
card's ``reproduce`` says); (3) on the validation
split and the simple phantoms of ``pipelines.eval_simple_phantoms``, choose the lesion threshold, the
PET check (mefn.postprocess.PetCheck), the lesion floor and the review threshold for
segmentation with test-time mirroring (``--tta``,
default xyz), all stored in the card so ``mefn segment`` uses what was calibrated; (4) segment
``--n-test`` fresh phantoms whose seeds were never used for training and score them with the
AutoPET 2022 metrics; (5) copy the weights to ``mefn/weights/mefn_default.safetensors`` with a
model card that holds the data, config, commit, validation and test figures and the training
time.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mefn.data.datasets import DatasetEntry
    from mefn.data.phantoms import PhantomStudy
    from mefn.io.case import Case
    from mefn.io.volume import Volume
    from mefn.training import TrainConfig

from mefn.calibration import FPV_LIMIT_ML, mean_scores, write_calibration
from pipelines._bench import REPO, git_commit, repo_relative

TEST_SEED0 = 10_000_000  # test phantoms: seeds far from any training seed


#: the recipe and run folder of a plain ``python -m pipelines.train_phantoms``
DEFAULT_CONFIG = "configs/train/phantoms_fast.yaml"
DEFAULT_RUN = "runs/phantoms_fast"


def make_training_data(root: Path, n: int, seed: int) -> None:
    from mefn.data.phantoms import write_phantoms

    done = sorted((root / "imagesTr").glob("*_0000.nii.gz")) if root.is_dir() else []
    if len(done) >= n:
        print(f"[data] {len(done)} phantoms already in {root}", flush=True)
        return
    t0 = time.monotonic()
    write_phantoms(root, n=n, layout="nnunet", seed=seed)
    print(f"[data] wrote {n} phantoms to {root} in {time.monotonic() - t0:.0f} s", flush=True)


def _share(rows: list[dict[str, object]], key: str, total: int) -> float | None:
    return sum(int(r[key]) for r in rows) / total if total else None  # type: ignore[call-overload]


def grid_ceiling_dice(label: Volume, spacing_mm: tuple[float, float, float]) -> float:
    """The Dice left after a round trip of the reference through the ``spacing_mm`` model grid.

    The reference is sampled onto the model grid (trilinear, a lesion fraction per coarse
    voxel) and back onto its own grid, where voxels above one half are lesion; its Dice
    against the reference (AutoPET 2022) is what the grid costs a model that predicts each
    coarse voxel's lesion fraction exactly: a ceiling for such a model (one that overstates a
    tiny lesion can do a little better on it). NaN for a label without lesions.
    """
    from mefn.data.preprocess import model_grid
    from mefn.io.geometry import resample_to
    from mefn.io.volume import Volume
    from mefn.metrics.autopet import autopet_case_metrics

    ref = label.array > 0
    if not ref.any():
        return math.nan
    fraction = Volume(ref.astype(np.float32), label.geometry, modality="SEG", units="label")
    coarse = resample_to(fraction, model_grid(label.geometry, spacing_mm), "linear", 0.0)
    back = resample_to(coarse, label.geometry, "linear", 0.0).array > 0.5
    return autopet_case_metrics(
        ref.astype(np.uint8), back.astype(np.uint8), label.geometry.spacing_mm, year=2022
    ).dice


def fresh_phantom(seed: int) -> tuple[PhantomStudy, Case]:
    """The fresh whole-body test phantom of ``seed`` and its case (outputs on the PET grid,
    labelled with the PET-grid label)."""
    from mefn.data.phantoms import generate_study
    from mefn.io.case import Case

    study = generate_study(seed, kind="wholebody")
    case = Case(
        case_id=f"test_{seed}",
        ct=study.ct,
        pet=study.pet,
        label=study.label_pet,
        output_geometry=study.pet.geometry,
    )
    return study, case


def validation_entries(cfg: TrainConfig, max_cases: int) -> list[DatasetEntry]:
    """The first ``max_cases`` of the training config's validation split (its data root is
    taken from the repository root when relative)."""
    from mefn.data.datasets import index_dataset, split_by_patient

    data = cfg.data
    _, val = split_by_patient(
        index_dataset(REPO / data.root, layout=data.layout), data.val_fraction, data.split_seed
    )
    return val[:max_cases]


def evaluate(
    run_dir: Path,
    n_test: int,
    out_dir: Path,
    tta_axes: tuple[int, ...] = (),
    ceiling_spacing_mm: tuple[float, float, float] | None = None,
    keep_dir: Path | None = None,
) -> dict[str, object]:
    """Segment fresh phantoms and score them (AutoPET 2022 definitions), with test-time
    mirroring along ``tta_axes``.

    Each case also gets ``grid_ceiling_dice`` (:func:`grid_ceiling_dice` at the model's
    spacing, or ``ceiling_spacing_mm``: a cascade's finest grid), so the summary says how much
    of the Dice the model grid leaves reachable. With ``keep_dir``, what the trust calibration
    reads of each prediction is kept there as ``<seed>.npz``
    (:func:`pipelines.trust_phantoms.keep_prediction`: its test stage scores them).
    """
    from mefn.inference import Predictor
    from mefn.metrics.lesions import predicted_lesion_errors
    from mefn.metrics.scoring import score_cases

    predictor = Predictor(run_dir, device="cpu", tta_axes=tta_axes)
    ceiling = ceiling_spacing_mm or predictor.preprocess.spacing_mm
    seeds = [TEST_SEED0 + i for i in range(n_test)]
    n_lesions: dict[str, int] = {}  # case id -> lesions painted (the study is not kept)

    def load(seed: int) -> Case:
        study, case = fresh_phantom(seed)
        n_lesions[case.case_id] = len(study.lesions)
        return case

    def lesion_flags(case: Case, pred: Any, label: np.ndarray) -> dict[str, Any]:
        assert case.label is not None  # fresh phantoms are labelled
        if keep_dir is not None:
            from mefn.inference import ct_on_grid
            from pipelines.trust_phantoms import keep_prediction

            seed = case.case_id.removeprefix("test_")
            keep_prediction(
                keep_dir / f"{seed}.npz", pred, label > 0, ct_on_grid(case, pred.geometry)
            )
        u, fp, _ = predicted_lesion_errors(
            (label > 0).astype(np.uint8), pred.mask, pred.uncertainty
        )
        row = {
            "grid_ceiling_dice": grid_ceiling_dice(case.label, ceiling),
            "predicted_lesions": len(u),
            "false_positive_lesions": int(sum(fp)),
            "dropped_lesions": len(pred.dropped),
        }
        if predictor.lesion_confidence is None:  # the mean-u flag; the confidence flag is
            flags = u >= predictor.review_threshold  # scored by pipelines.trust_phantoms
            row["flagged_false_positive"] = int((flags & fp).sum())
            row["flagged_true"] = int((flags & ~fp).sum())
        return row

    scores = score_cases(
        predictor,
        [functools.partial(load, seed) for seed in seeds],
        "autopet2022",
        extra=lesion_flags,
        keep_extra=keep_dir is not None,
        progress=lambda i, s: print(f"[test] {seeds[i]}: {s.metrics}", flush=True),
    )
    metrics = [s.metrics for s in scores]
    rows = [
        {"seed": seed, "lesions": n_lesions[s.case_id], **s.metrics.to_dict(), **s.extra}
        for seed, s in zip(seeds, scores)
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "test_phantoms.json").write_text(json.dumps(rows, indent=1, default=float))
    with_lesions = [r for r, m in zip(rows, metrics) if m.has_lesions]
    n_fp = sum(int(r["false_positive_lesions"]) for r in rows)
    n_tp = sum(int(r["predicted_lesions"]) - int(r["false_positive_lesions"]) for r in rows)
    summary = {
        "n_cases": len(rows),
        "n_with_lesions": len(with_lesions),
        "seeds": [TEST_SEED0, TEST_SEED0 + n_test - 1],
        **mean_scores(metrics),  # mean_dice, mean_fpv_ml, mean_fnv_ml (AutoPET 2022)
        "grid_ceiling_mean_dice": float(np.nanmean([r["grid_ceiling_dice"] for r in with_lesions])),
        "definitions": "AutoPET 2022: Dice and FNV over cases with lesions, FPV over all cases",
        "review_threshold": predictor.review_threshold,
        "lesion_threshold": predictor.lesion_threshold,
        "min_lesion_ml": predictor.min_lesion_ml,
        "pet_check": predictor.pet_check.to_json(),
        "tta_axes": list(predictor.tta_axes),
        "false_positive_lesions": n_fp,
        "true_lesions": n_tp,
    }
    if predictor.lesion_confidence is None:
        summary["false_positive_lesions_flagged"] = _share(rows, "flagged_false_positive", n_fp)
        summary["true_lesions_flagged"] = _share(rows, "flagged_true", n_tp)
    else:
        summary["min_confidence"] = predictor.min_confidence
        summary["dropped_lesions"] = sum(int(r["dropped_lesions"]) for r in rows)
    return summary


def reproduce_command(config: str, run: str, init_weights: str | None, tta: str = "xyz") -> str:
    """The command that reproduces a run, with the run its ``init_weights`` come from first."""
    cmd = "python -m pipelines.train_phantoms"
    default = REPO / DEFAULT_CONFIG
    if Path(config).resolve() != default.resolve():
        cmd += f" --config {repo_relative(config)} --run {repo_relative(run)}"
    if tta != "xyz":
        cmd += f" --tta {tta}"
    if init_weights:
        cmd = f"(after the run that wrote {init_weights}) {cmd}"
    return cmd


def init_lineage(init_weights: Path, training: dict[str, Any]) -> dict[str, object]:
    """Where a run's initial weights come from, and the training time of both runs together.

    ``init_weights`` is resolved from the repository root; the card beside it (``model.json``
    of that run) gives its training figures and, recursively, its own ``init_from``.
    """
    from mefn.fileutil import file_sha256

    path = init_weights if init_weights.is_absolute() else REPO / init_weights
    lineage: dict[str, object] = {"weights": str(init_weights), "sha256": file_sha256(path)}
    seconds = float(training["seconds"])
    steps = int(training["steps"])
    parent_card = path.parent / "model.json"
    if parent_card.is_file():
        parent = json.loads(parent_card.read_text())
        parent_training = parent.get("training", {})
        lineage["training"] = {
            k: parent_training.get(k) for k in ("epochs", "steps", "seconds", "stopped")
        }
        lineage["validation"] = parent.get("validation")
        # the parent's own total (its training and its ancestors') when it had an init, too
        before = parent.get("init_from", {}).get("total", parent_training)
        seconds += float(before.get("seconds", 0.0))
        steps += int(before.get("steps", 0))
        if "init_from" in parent:
            lineage["init_from"] = parent["init_from"]
    # the parent's steps are those it ran, past its best epoch too: the time actually spent
    lineage["total"] = {"steps": steps, "seconds": round(seconds, 1)}
    return lineage


def calibrate_postprocessing(
    run_dir: Path,
    cfg: TrainConfig,
    max_cases: int = 20,
    tta_axes: tuple[int, ...] = (),
    simple_phantoms: bool = True,
) -> dict[str, Any]:
    """:func:`mefn.calibration.calibrate_postprocessing` on the run's validation split (at most
    ``max_cases``, never test cases) and, with ``simple_phantoms``, the phantoms of
    eval_simple_phantoms.py as the second set the false-positive limit must hold on."""
    val = validation_entries(cfg, max_cases)
    return calibrate_postprocessing_on(run_dir, val, tta_axes, simple_phantoms)


def calibrate_postprocessing_on(
    run_dir: Path,
    val: list[Any],
    tta_axes: tuple[int, ...] = (),
    simple_phantoms: bool = True,
) -> dict[str, Any]:
    """:func:`calibrate_postprocessing` on the labelled validation cases ``val``."""
    from mefn.calibration import calibrate_postprocessing as calibrate

    second = None
    if simple_phantoms:
        from pipelines.eval_simple_phantoms import PHANTOMS, phantom_case

        second = (
            [functools.partial(phantom_case, *p[1:]) for p in PHANTOMS],
            [f"simple phantom {p[0]}" for p in PHANTOMS],
        )
    calibration = calibrate(
        run_dir, val, tta_axes, second, lambda line: print(f"[calibrate] {line}", flush=True)
    )
    for row in calibration["scores"]:
        print(f"[calibrate] {row}", flush=True)
    return calibration


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(REPO / DEFAULT_CONFIG))
    parser.add_argument("--run", default=str(REPO / DEFAULT_RUN))
    parser.add_argument("--n", type=int, default=200, help="training phantoms")
    parser.add_argument("--seed", type=int, default=1000, help="first training seed")
    parser.add_argument("--n-test", type=int, default=20)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--no-install", action="store_true", help="do not copy into mefn/weights")
    parser.add_argument(
        "--tta",
        default="xyz",
        metavar="AXES",
        help="test-time mirroring the post-processing is calibrated with and the card sets as "
        "its default (`mefn segment --tta`; default xyz, 8 passes; none: one pass)",
    )
    args = parser.parse_args()
    from mefn.inference import parse_tta_axes

    tta_axes = parse_tta_axes(args.tta)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from mefn.training import load_train_config, train

    cfg = load_train_config(args.config)
    run_dir = Path(args.run)
    from dataclasses import replace

    cfg = replace(cfg, data=replace(cfg.data, root=str(REPO / cfg.data.root)))
    if not args.evaluate_only:
        make_training_data(Path(cfg.data.root), args.n, args.seed)

        def progress(event: dict) -> None:
            if event["event"] == "epoch":
                print(f"[train] {json.dumps(event, default=float)}", flush=True)

        result = train(cfg, run_dir, resume=args.resume, progress=progress)
        print(f"[train] {result}", flush=True)
    # post-processing and the review flag's threshold, chosen on the validation split
    calibration = calibrate_postprocessing(run_dir, cfg, tta_axes=tta_axes)
    print(f"[calibrate] {json.dumps(calibration)}", flush=True)
    write_calibration(
        run_dir / "model.json",
        calibration,
        rule="the lesion_threshold (null: argmax), pet_check (of pet_checks) and "
        "min_lesion_ml with the best mean of the validation split's mean Dice and the simple "
        "phantoms' (pipelines/eval_simple_phantoms.py), among those whose mean false-positive "
        f"volume on both is <= {FPV_LIMIT_ML} mL or <= that of the plain argmax (no PET check, "
        "no floor); then a lesion is flagged when its mean u >= review_threshold, the threshold "
        "that maximises Youden's J (share of false detections flagged - share of true lesions "
        "flagged)",
    )
    summary = evaluate(run_dir, args.n_test, run_dir / "evaluation", tta_axes)
    print(f"[test] summary {json.dumps(summary)}", flush=True)
    card = json.loads((run_dir / "model.json").read_text())
    card["name"] = "mefn_default"
    card["trained_on"] = (
        f"synthetic PET/CT phantoms only ({args.n} whole-body studies, seeds {args.seed}-"
        f"{args.seed + args.n - 1}, `mefn phantoms --layout nnunet`); no real patient data"
    )
    card["commit"] = git_commit()
    card["test_fresh_phantoms"] = summary
    card["reproduce"] = reproduce_command(args.config, args.run, cfg.init_weights, args.tta)
    if cfg.init_weights:
        card["init_from"] = init_lineage(Path(cfg.init_weights), card["training"])
    (run_dir / "model.json").write_text(json.dumps(card, indent=1))
    if not args.no_install:
        dest = REPO / "mefn" / "weights"
        shutil.copyfile(run_dir / "model.safetensors", dest / "mefn_default.safetensors")
        (dest / "mefn_default.json").write_text(json.dumps(card, indent=1))
        print(f"[install] {dest / 'mefn_default.safetensors'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
