"""Train the bundled default weights on synthetic phantoms, then score them on fresh phantoms.

    python -m pipelines.train_phantoms                       # the whole recipe, about 2 h on 2 cores
    python -m pipelines.train_phantoms --resume              # continue an interrupted run
    python -m pipelines.train_phantoms --evaluate-only       # re-score runs/phantoms_small

Steps: (1) write ``--n`` training phantoms (seeds from ``--seed``) in the nnU-Net layout;
(2) ``mefn.training.train`` with ``configs/train/phantoms_small.yaml``; (3) on the validation
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

from pipelines._bench import REPO, git_commit, repo_relative

TEST_SEED0 = 10_000_000  # test phantoms: seeds far from any training seed


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
    run_dir: Path, n_test: int, out_dir: Path, tta_axes: tuple[int, ...] = ()
) -> dict[str, object]:
    """Segment fresh phantoms and score them (AutoPET 2022 definitions), with test-time
    mirroring along ``tta_axes``.

    Each case also gets ``grid_ceiling_dice`` (:func:`grid_ceiling_dice` at the model's
    spacing), so the summary says how much of the Dice the model grid leaves reachable.
    """
    from mefn.inference import Predictor
    from mefn.metrics.lesions import predicted_lesion_errors
    from mefn.metrics.scoring import score_cases

    predictor = Predictor(run_dir, device="cpu", tta_axes=tta_axes)
    seeds = [TEST_SEED0 + i for i in range(n_test)]
    n_lesions: dict[str, int] = {}  # case id -> lesions painted (the study is not kept)

    def load(seed: int) -> Case:
        study, case = fresh_phantom(seed)
        n_lesions[case.case_id] = len(study.lesions)
        return case

    def lesion_flags(case: Case, pred: Any, label: np.ndarray) -> dict[str, Any]:
        assert case.label is not None  # fresh phantoms are labelled
        u, fp, _ = predicted_lesion_errors(
            (label > 0).astype(np.uint8), pred.mask, pred.uncertainty
        )
        flags = u >= predictor.review_threshold
        return {
            "grid_ceiling_dice": grid_ceiling_dice(case.label, predictor.preprocess.spacing_mm),
            "predicted_lesions": len(u),
            "false_positive_lesions": int(sum(fp)),
            "flagged_false_positive": int((flags & fp).sum()),
            "flagged_true": int((flags & ~fp).sum()),
        }

    scores = score_cases(
        predictor,
        [functools.partial(load, seed) for seed in seeds],
        "autopet2022",
        extra=lesion_flags,
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
        **_mean_scores(metrics),  # mean_dice, mean_fpv_ml, mean_fnv_ml (AutoPET 2022)
        "grid_ceiling_mean_dice": float(np.nanmean([r["grid_ceiling_dice"] for r in with_lesions])),
        "definitions": "AutoPET 2022: Dice and FNV over cases with lesions, FPV over all cases",
        "review_threshold": predictor.review_threshold,
        "lesion_threshold": predictor.lesion_threshold,
        "min_lesion_ml": predictor.min_lesion_ml,
        "pet_check": predictor.pet_check.to_json(),
        "tta_axes": list(predictor.tta_axes),
        "false_positive_lesions": n_fp,
        "false_positive_lesions_flagged": _share(rows, "flagged_false_positive", n_fp),
        "true_lesions": n_tp,
        "true_lesions_flagged": _share(rows, "flagged_true", n_tp),
    }
    return summary


def reproduce_command(config: str, run: str, init_weights: str | None, tta: str = "xyz") -> str:
    """The command that reproduces a run, with the run its ``init_weights`` come from first."""
    cmd = "python -m pipelines.train_phantoms"
    default = REPO / "configs/train/phantoms_small.yaml"
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


MIN_LESION_CANDIDATES_ML = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0)
#: None: the argmax (for two classes, lesion probability above 0.5).
LESION_THRESHOLD_CANDIDATES = (None, 0.4, 0.3, 0.2, 0.15, 0.1)
#: What a lesion must show on PET, and whether its outline is redrawn on the PET
#: (mefn.postprocess.PetCheck): none; uptake (SUVmax >= 1); uptake and contrast (SUVmax >= 1
#: and >= 2x its surroundings); the same with the outline redrawn at 40 % (grown up to 8 mm)
#: or 30 % (16 mm) of the way from background to SUVmax.
PET_CHECK_CANDIDATES: dict[str, dict[str, float | None]] = {
    "none": {},
    "uptake": {"min_suv": 1.0},
    "contrast": {"min_suv": 1.0, "min_contrast": 2.0},
    "refine40": {"min_suv": 1.0, "min_contrast": 2.0, "refine_fraction": 0.4, "refine_mm": 8.0},
    "refine30": {"min_suv": 1.0, "min_contrast": 2.0, "refine_fraction": 0.3, "refine_mm": 16.0},
}
#: The plain argmax, without PET check or floor: the reference of choose_postprocessing.
PLAIN = (None, "none", 0.0)
#: The default weights' target for the mean false-positive volume (issue 4), in mL.
FPV_LIMIT_ML = 3.0

Setting = tuple[float | None, str, float]  # (lesion threshold, PET check name, floor in mL)


def _foreground_box(*masks: np.ndarray, margin: int = 2) -> tuple[slice, ...]:
    """The bounding box of the union of ``masks`` (with ``margin`` voxels); one voxel (of
    background) when they are all empty.

    Every AutoPET metric and component count of masks inside it equals that of the whole
    grid (components are of foreground only), at a fraction of the cost."""
    union = np.logical_or.reduce([m != 0 for m in masks])
    nz = [np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(n) == 0 for n in nz):
        return (slice(0, 1),) * 3
    return tuple(slice(max(int(n[0]) - margin, 0), int(n[-1]) + margin + 1) for n in nz)


def choose_postprocessing(
    scores: dict[Setting, dict[str, float]],
    simple: dict[Setting, dict[str, float]] | None = None,
) -> Setting:
    """The (lesion threshold, PET check, lesion floor) with the best Dice among those whose
    mean false-positive volume is within FPV_LIMIT_ML, or within that of the plain argmax
    (PLAIN, which must be scored) when that is larger: post-processing may add Dice, never
    false positives beyond both. ``scores`` are the validation split's; with ``simple`` (the
    same settings on eval_simple_phantoms.py's phantoms, written apart from the generator)
    the limit holds on both and the Dice is the mean of the two, so a setting that only suits
    the generator's studies does not win. On a tie, the smaller false-positive volume on the
    validation split."""
    sets = [scores] if simple is None else [scores, simple]
    limits = [max(FPV_LIMIT_ML, s[PLAIN]["mean_fpv_ml"]) for s in sets]
    within = [k for k in scores if all(s[k]["mean_fpv_ml"] <= lim for s, lim in zip(sets, limits))]
    return max(
        within,
        key=lambda k: (
            round(float(np.mean([s[k]["mean_dice"] for s in sets])), 4),
            -scores[k]["mean_fpv_ml"],
        ),
    )


def _settings_metrics(
    prob: np.ndarray,
    ref: np.ndarray,
    unc: np.ndarray,
    suv: np.ndarray,
    spacing: tuple[float, float, float],
    voxel_ml: float,
    per_case: dict[Setting, list[Any]],
    lesions: dict[Setting, list[tuple[np.ndarray, np.ndarray]]] | None,
) -> None:
    """Append one case's AutoPET metrics (and its lesions' mean u and false-positive flags)
    under every (lesion threshold, PET check, lesion floor) setting, on the foreground's
    bounding box, widened by the reach of the PET checks (their background shell and
    growth) so every check reads what it would on the whole grid."""
    from mefn.metrics.autopet import autopet_case_metrics
    from mefn.metrics.lesions import predicted_lesion_errors
    from mefn.postprocess import (
        BACKGROUND_GAP_MM,
        BACKGROUND_SHELL_MM,
        PetCheck,
        apply_pet_check,
        mask_from_probabilities,
        remove_small_components,
    )

    checks = {name: PetCheck(**fields) for name, fields in PET_CHECK_CANDIDATES.items()}
    grown = [c.refine_mm for c in checks.values() if c.refine_fraction is not None]
    reach = max([BACKGROUND_GAP_MM, *grown])
    margin = int(np.ceil((reach + BACKGROUND_SHELL_MM) / min(spacing))) + 2
    lowest = min(t for t in LESION_THRESHOLD_CANDIDATES if t is not None)
    box = _foreground_box(ref, mask_from_probabilities(prob, 0, lowest), margin=margin)
    prob = np.ascontiguousarray(prob[(slice(None), *box)])
    ref = ref[box].astype(np.uint8)
    unc = unc[box]
    suv = suv[box]
    for t in LESION_THRESHOLD_CANDIDATES:
        thresholded = mask_from_probabilities(prob, 0, t)
        for name, check in checks.items():
            raw = apply_pet_check(thresholded, suv, spacing, check)
            # the lesions of the mask before the floor; a floor keeps those with enough voxels
            u, fp, voxels = predicted_lesion_errors(ref, raw, unc)
            for min_ml in MIN_LESION_CANDIDATES_ML:
                min_vox = int(np.ceil(min_ml / voxel_ml)) if min_ml else 0
                mask = remove_small_components(raw.copy(), min_vox)
                per_case[t, name, min_ml].append(autopet_case_metrics(ref, mask, spacing, 2022))
                if lesions is not None:
                    keep = voxels >= min_vox
                    lesions[t, name, min_ml].append((u[keep], fp[keep]))


def _mean_scores(metrics: list[Any]) -> dict[str, float]:
    """The AutoPET 2022 means (mefn.metrics.autopet.aggregate_autopet) under the names the
    card's calibration scores use."""
    from mefn.metrics.autopet import aggregate_autopet

    agg = aggregate_autopet(metrics, 2022)
    return {
        "mean_dice": agg["dice_mean"],
        "mean_fpv_ml": agg["fpv_ml_mean"],
        "mean_fnv_ml": agg["fnv_ml_mean"],
    }


def _score_settings(
    predictor: Any,
    cases: list[Any],
    settings: list[Setting],
    lesions: dict[Setting, list[tuple[np.ndarray, np.ndarray]]] | None,
    names: list[str],
) -> dict[Setting, dict[str, float]]:
    """Segment ``cases`` once each (probabilities kept) and score every post-processing
    setting on them (:func:`_settings_metrics`): the mean AutoPET 2022 scores per setting.
    A case's prediction is dropped once scored (a whole validation split would not fit)."""
    from mefn.metrics.scoring import score_cases

    per_case: dict[Setting, list[Any]] = {k: [] for k in settings}

    def every_setting(case: Any, pred: Any, ref: np.ndarray) -> dict[str, Any]:
        if pred.probabilities is None:  # pragma: no cover - keep_extra keeps them
            raise RuntimeError(f"{case.case_id}: the prediction kept no probabilities")
        geo = pred.geometry
        _settings_metrics(
            pred.probabilities, ref > 0, pred.uncertainty, pred.suv, geo.spacing_mm,
            geo.voxel_volume_ml, per_case, lesions,
        )  # fmt: skip
        return {}

    score_cases(
        predictor,
        cases,
        None,
        extra=every_setting,
        keep_extra=True,
        progress=lambda i, _s: print(f"[calibrate] {names[i]}: scored", flush=True),
    )
    return {key: _mean_scores(metrics) for key, metrics in per_case.items()}


def calibrate_postprocessing(
    run_dir: Path,
    cfg: TrainConfig,
    max_cases: int = 20,
    tta_axes: tuple[int, ...] = (),
    simple_phantoms: bool = True,
) -> dict[str, object]:
    """Post-processing chosen on the validation split (never on test cases), for
    segmentation with test-time mirroring along ``tta_axes``.

    ``lesion_threshold``, ``pet_check`` and ``min_lesion_ml``: of LESION_THRESHOLD_CANDIDATES x
    PET_CHECK_CANDIDATES x MIN_LESION_CANDIDATES_ML, the setting :func:`choose_postprocessing`
    picks from the mean Dice
    over the validation cases with lesions and the mean false-positive volume over all (AutoPET
    2022 definitions) and, with ``simple_phantoms``, the same on the phantoms of
    eval_simple_phantoms.py. ``review_threshold``: on the validation split's lesions left, the
    mean-u threshold that maximises Youden's J between false and true detections
    (mefn.postprocess.choose_review_threshold).
    """
    from mefn.inference import Predictor
    from mefn.metrics.scoring import case_loaders
    from mefn.postprocess import choose_review_threshold

    val = validation_entries(cfg, max_cases)
    # every threshold, PET check and floor is applied below to the kept probabilities; the
    # mask predict() makes is not used, so its settings only need to be valid, not the card's
    from mefn.postprocess import PetCheck

    predictor = Predictor(
        run_dir,
        device="cpu",
        min_lesion_ml=0.0,
        tta_axes=tta_axes,
        lesion_threshold=0.5,
        pet_check=PetCheck(),
    )
    settings: list[Setting] = [
        (t, name, v)
        for t in LESION_THRESHOLD_CANDIDATES
        for name in PET_CHECK_CANDIDATES
        for v in MIN_LESION_CANDIDATES_ML
    ]
    # per setting: each predicted lesion's (mean u, false?) on the validation split
    lesions: dict[Setting, list[tuple[np.ndarray, np.ndarray]]] = {k: [] for k in settings}
    names = [e.case_id for e in val]
    scores = _score_settings(predictor, case_loaders(val), settings, lesions, names)
    simple: dict[Setting, dict[str, float]] | None = None
    if simple_phantoms:
        from pipelines.eval_simple_phantoms import PHANTOMS, phantom_case

        phantoms = [functools.partial(phantom_case, *p[1:]) for p in PHANTOMS]
        names = [f"simple phantom {p[0]}" for p in PHANTOMS]
        simple = _score_settings(predictor, phantoms, settings, None, names)
    for key in settings:
        extra = f"; simple phantoms {simple[key]}" if simple else ""
        print(f"[calibrate] threshold, PET check, floor {key}: {scores[key]}{extra}", flush=True)
    best = choose_postprocessing(scores, simple)
    u_means = np.concatenate([u for u, _ in lesions[best]])
    false_pos = np.concatenate([fp for _, fp in lesions[best]])
    try:
        threshold, stats = choose_review_threshold(u_means, false_pos)
    except ValueError as exc:  # all detections false (or all true): nothing to separate
        print(f"[calibrate] review threshold not calibrated: {exc}", flush=True)
        threshold, stats = (
            None,
            {"n_fp": int(false_pos.sum()), "n_tp": int((~false_pos).sum())},
        )
    return {
        "cases": len(val),
        "tta_axes": list(tta_axes),
        "lesion_threshold": best[0],
        "pet_check": PetCheck(**PET_CHECK_CANDIDATES[best[1]]).to_json(),
        "min_lesion_ml": best[2],
        "scores": [
            {
                "lesion_threshold": t,
                "pet_check": name,
                "min_lesion_ml": v,
                **scores[t, name, v],
                **({"simple_phantoms": simple[t, name, v]} if simple else {}),
            }
            for t, name, v in settings
        ],
        "pet_checks": PET_CHECK_CANDIDATES,
        "review_threshold": threshold,
        "review": stats,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(REPO / "configs/train/phantoms_small.yaml"))
    parser.add_argument("--run", default=str(REPO / "runs/phantoms_small"))
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
    card = json.loads((run_dir / "model.json").read_text())
    card["tta_axes"] = list(tta_axes)
    card["lesion_threshold"] = calibration["lesion_threshold"]
    card["pet_check"] = calibration["pet_check"]
    card["min_lesion_ml"] = calibration["min_lesion_ml"]
    if calibration["review_threshold"] is not None:
        card["review_threshold"] = calibration["review_threshold"]
    card["calibration"] = {
        **calibration,
        "rule": "the lesion_threshold (null: argmax), pet_check (of pet_checks) and "
        "min_lesion_ml with the best mean of the validation split's mean Dice and the simple "
        "phantoms' (pipelines/eval_simple_phantoms.py), among those whose mean false-positive "
        f"volume on both is <= {FPV_LIMIT_ML} mL or <= that of the plain argmax (no PET check, "
        "no floor); then a lesion "
        "is flagged when its mean u >= review_threshold, the threshold that maximises Youden's J "
        "(share of false detections flagged - share of true lesions flagged)",
    }
    (run_dir / "model.json").write_text(json.dumps(card, indent=1))
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
