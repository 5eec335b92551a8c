"""A GPU burst: phantoms on every CPU core, a larger MEFN trained with AMP for a fixed wall-clock
budget, calibrated, weights and card in one folder.

    python -m pipelines.gpu_burst runs/burst                    # 96 phantoms, 8 minutes of training
    python -m pipelines.gpu_burst runs/burst --minutes 20 --n 160
    mefn segment CASE -o out --model runs/burst                 # the weights it wrote

Steps: (1) ``--n`` whole-body phantoms (seeds from ``--seed``, as ``mefn phantoms --layout
nnunet``) generated in ``--workers`` processes straight into the training cache in model
space (:func:`mefn.data.phantom_cache.cache_phantoms`: no NIfTI files); (2) a few probe steps
measure the machine's speed, and ``epochs`` is set so the cosine schedule ends with the budget
(``--minutes`` of training; the run also stops there); (3) ``mefn.training.train_on_cases``
with ``configs/train/phantoms_burst.yaml`` (model ``mefn_burst``: 2.5 mm grid, twice
mefn_small's width, one level deeper; bf16 autocast on CUDA, fp32 on a CPU); (4) on the
validation split, in model space, the lesion threshold and lesion floor are chosen as
``pipelines.train_phantoms`` chooses them (without a PET check: no cc3d here) and written into the
card; (5) ``<out>/model.safetensors`` + ``<out>/model.json``, loadable by ``mefn segment
--model <out>``. Progress goes to stdout as it happens.

Nothing on this path imports SimpleITK, nibabel or cc3d, which a bare GPU machine lacks:
phantoms are resampled with scipy, validation and calibration use
``mefn.model.sliding_window`` (``mefn.inference`` loads ``mefn.postprocess`` and with it
cc3d), lesions are labelled with ``scipy.ndimage.label`` (18-connectivity, as AutoPET).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mefn.data.cache import CachedCase
    from mefn.training import TrainConfig

from mefn.calibration import (
    FPV_LIMIT_ML,
    LESION_THRESHOLD_CANDIDATES,
    MIN_LESION_CANDIDATES_ML,
    choose_postprocessing,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "train" / "phantoms_burst.yaml"
PROBE_STEPS = 4  # the first is a warm-up (CUDA kernels, allocator); the rest are timed


def say(text: str) -> None:
    print(text, flush=True)


def lesion_mask(prob: np.ndarray, threshold: float | None) -> np.ndarray:
    """Foreground where P(not background) >= ``threshold`` (None: the argmax), uint8."""
    if threshold is None:
        return (prob.argmax(0) > 0).astype(np.uint8)
    return ((1.0 - prob[0]) >= threshold).astype(np.uint8)


def case_scores(
    pred: np.ndarray, ref: np.ndarray, voxel_ml: float
) -> tuple[float | None, float, float]:
    """(Dice or None without reference lesions, false-positive volume mL, false-negative
    volume mL) with the AutoPET 2022 definitions: a component (18-connected) is false when
    it touches nothing of the other mask."""
    from scipy import ndimage

    structure = ndimage.generate_binary_structure(3, 2)
    p, r = pred > 0, ref > 0
    dice = None
    if r.any():
        dice = 2.0 * float(np.logical_and(p, r).sum()) / float(p.sum() + r.sum())

    def missed_volume(a: np.ndarray, b: np.ndarray) -> float:
        labels, n = ndimage.label(a, structure=structure)
        if n == 0:
            return 0.0
        touched = np.zeros(n + 1, bool)
        touched[np.unique(labels[b & a])] = True
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        return float(sizes[1:][~touched[1:]].sum()) * voxel_ml

    return dice, missed_volume(p, r), missed_volume(r, p)


def drop_small(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """``mask`` without its 18-connected components under ``min_voxels``."""
    from scipy import ndimage

    if min_voxels <= 1 or not mask.any():
        return mask
    labels, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 2))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_voxels
    keep[0] = False
    return keep[labels].astype(np.uint8)


def calibrate(
    run_dir: Path, val_cases: list[CachedCase], cfg: TrainConfig, model_cfg: Any, device: Any
) -> dict[str, Any]:
    """Lesion threshold and lesion floor for ``run_dir``'s weights, chosen on ``val_cases``
    in model space by ``mefn.calibration.choose_postprocessing`` (no PET check)."""
    import torch
    from safetensors.torch import load_file

    from mefn.data.preprocess import normalise
    from mefn.model import build_model
    from mefn.model.sliding_window import sliding_window_predict

    net = build_model(model_cfg)
    net.load_state_dict(load_file(str(run_dir / "model.safetensors")))
    net.to(device).eval()
    keys = [
        (t, "none", floor)
        for t in LESION_THRESHOLD_CANDIDATES
        for floor in MIN_LESION_CANDIDATES_ML
    ]
    per: dict[Any, list[tuple[float | None, float, float]]] = {k: [] for k in keys}
    for case in val_cases:
        image = normalise(
            np.asarray(case.ct_hu, np.float32), np.asarray(case.suv, np.float32), cfg.preprocess
        )
        out = sliding_window_predict(
            net, torch.from_numpy(image)[None], cfg.patch_size_vox, cfg.sw_overlap,
            cfg.sw_batch_size, device, keys=("prob",),
        )  # fmt: skip
        prob = out["prob"][0].numpy()
        voxel_ml = case.grid.voxel_volume_ml
        for t in LESION_THRESHOLD_CANDIDATES:
            mask = lesion_mask(prob, t)
            for floor in MIN_LESION_CANDIDATES_ML:
                kept = drop_small(mask, int(math.ceil(floor / voxel_ml)) if floor else 0)
                per[t, "none", floor].append(case_scores(kept, case.label, voxel_ml))
        say(f"[calibrate] {case.case_id}: scored")
    scores: dict[Any, dict[str, float]] = {}
    for key, rows in per.items():
        dice = [d for d, _, _ in rows if d is not None]
        fnv = [f for d, _, f in rows if d is not None]
        scores[key] = {
            "mean_dice": float(np.mean(dice)) if dice else math.nan,
            "mean_fpv_ml": float(np.mean([fp for _, fp, _ in rows])),
            "mean_fnv_ml": float(np.mean(fnv)) if fnv else math.nan,
        }
    best = choose_postprocessing(scores)
    return {
        "cases": len(val_cases),
        "space": "model grid (the card's preprocess spacing), without test-time mirroring",
        "lesion_threshold": best[0],
        "min_lesion_ml": best[2],
        "rule": "the lesion_threshold (null: argmax) and min_lesion_ml with the best mean Dice "
        f"among those whose mean false-positive volume is <= {FPV_LIMIT_ML} mL or <= that of the "
        "plain argmax (AutoPET 2022 definitions, 18-connected components)",
        "scores": [
            {"lesion_threshold": t, "min_lesion_ml": floor, **scores[t, name, floor]}
            for t, name, floor in keys
        ],
    }


def probe_step_seconds(
    cfg: TrainConfig, model_cfg: Any, train_cases: list[CachedCase], work: Path
) -> float:
    """Seconds per training step on this machine: PROBE_STEPS real steps of the same loop
    (AMP, batch, patch), the first left out of the timing."""
    from mefn.training import train_on_cases

    stamps: list[float] = []

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "step":
            stamps.append(time.monotonic())

    probe = replace(cfg, epochs=1, steps_per_epoch=PROBE_STEPS, warmup_steps=1, max_minutes=None)
    shutil.rmtree(work, ignore_errors=True)
    train_on_cases(probe, work, train_cases, [], progress=progress, model_cfg=model_cfg)
    shutil.rmtree(work, ignore_errors=True)
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", metavar="OUT", help="folder for model.safetensors + model.json")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="training YAML")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    parser.add_argument("--n", type=int, default=96, help="phantoms (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1000, help="first phantom seed")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="phantom processes (all cores)"
    )
    parser.add_argument(
        "--minutes", type=float, default=8.0, help="training budget, wall clock (default 8)"
    )
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--cache-dir", help="phantom cache (default OUT/cache)")
    parser.add_argument("--small", action="store_true", help="small phantoms (CPU tests)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    import torch
    import yaml

    from mefn.config import replace_from_overrides
    from mefn.data.phantom_cache import cache_phantoms
    from mefn.errors import ConfigError, MefnError
    from mefn.training import load_train_config, resolve_model_config, train_on_cases

    t0 = time.monotonic()
    out = Path(args.out)
    try:
        cfg = load_train_config(args.config)
        overrides: dict[str, Any] = {"device": args.device, "max_minutes": args.minutes}
        for item in args.set:
            if "=" not in item:
                raise ConfigError(f"--set expects KEY=VALUE, found {item!r}")
            key, value = item.split("=", 1)
            overrides[key.strip()] = yaml.safe_load(value)
        cfg = replace_from_overrides(cfg, overrides)
        if cfg.hot_negative_balance == "structure":
            raise ConfigError(
                "hot_negative_balance structure needs cc3d, which a bare GPU machine lacks; "
                "use voxel for the burst"
            )
        model_cfg = resolve_model_config(cfg.model, Path(args.config).resolve().parent)
        cuda = torch.cuda.is_available() and args.device != "cpu"
        where = (
            torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} threads)"
        )
        amp = ("fp16" if cfg.amp == "fp16" else "bf16") if cuda and cfg.amp != "off" else "fp32"
        say(f"[burst] {where}, {amp}; {args.n} phantoms on {args.workers} processes")

        def phantom_done(i: int, n: int, p: Any) -> None:
            shape = "x".join(str(s) for s in p.shape)
            what = "cached before" if p.reused else f"{p.seconds:.1f} s"
            say(f"[phantoms] {i}/{n} {p.case_id}: {p.lesions} lesions, {shape} voxels, {what}")

        t_data = time.monotonic()
        cases = cache_phantoms(
            Path(args.cache_dir) if args.cache_dir else out / "cache", args.n, args.seed,
            cfg.preprocess, workers=args.workers, progress=phantom_done, small=args.small,
        )  # fmt: skip
        data_seconds = time.monotonic() - t_data
        n_val = min(max(1, round(len(cases) * cfg.data.val_fraction)), len(cases) - 1)
        if n_val < 1:
            raise ConfigError(f"--n must be at least 2 (training and validation), found {args.n}")
        train_cases, val_cases = cases[:-n_val], cases[-n_val:]
        say(
            f"[phantoms] {len(cases)} in {data_seconds:.0f} s: {len(train_cases)} training, {n_val} validation"
        )

        t_train = time.monotonic()
        step_s = probe_step_seconds(cfg, model_cfg, train_cases, out / "probe")
        left_s = args.minutes * 60.0 - (time.monotonic() - t_train)
        epochs = max(1, int(left_s * 0.9 / (step_s * cfg.steps_per_epoch)))
        total = epochs * cfg.steps_per_epoch
        cfg = replace(
            cfg,
            epochs=epochs,
            val_every=epochs,  # validated once, at the end: the budget goes to training
            early_stop_patience=epochs + 1,
            warmup_steps=min(cfg.warmup_steps, max(1, total // 10)),
            max_minutes=max(left_s / 60.0, 0.0),
        )
        say(f"[train] {step_s:.2f} s per step: {epochs} epochs of {cfg.steps_per_epoch} steps")

        def progress(event: dict[str, Any]) -> None:
            if event["event"] == "epoch":
                dice = event.get("val_dice")
                extra = f", validation Dice {dice:.3f}" if dice is not None else ""
                say(
                    f"[train] epoch {event['epoch']}/{epochs}: loss {event.get('loss', math.nan):.4f}"
                    f", {event['seconds']:.0f} s{extra}"
                )

        result = train_on_cases(
            cfg, out, train_cases, val_cases, progress=progress, model_cfg=model_cfg
        )
        train_seconds = time.monotonic() - t_train
        say(f"[train] {result.epochs_done} epochs ({result.stopped}) in {train_seconds:.0f} s")

        device = torch.device("cuda" if cuda else "cpu")
        trained_cfg = resolve_model_config(str(out / "model_config.yaml"))
        calibration = calibrate(out, val_cases, cfg, trained_cfg, device)
    except MefnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    from mefn.fileutil import atomic_write_text

    card = json.loads((out / "model.json").read_text())
    card.update(
        {
            "name": "mefn_burst",
            "trained_on": f"synthetic PET/CT phantoms only ({len(train_cases)} whole-body studies, "
            f"seeds from {args.seed}, as `mefn phantoms --layout nnunet`); no real patient data",
            "tta_axes": [],
            "lesion_threshold": calibration["lesion_threshold"],
            "min_lesion_ml": calibration["min_lesion_ml"],
            "calibration": calibration,
            "burst": {
                "device": where,
                "amp": amp,
                "workers": args.workers,
                "phantoms": args.n,
                "phantom_seconds": round(data_seconds, 1),
                "step_seconds": round(step_s, 4),
                "budget_minutes": args.minutes,
                "train_seconds": round(train_seconds, 1),
                "total_seconds": round(time.monotonic() - t0, 1),
            },
        }
    )
    atomic_write_text(out / "model.json", json.dumps(card, indent=1))
    say(
        f"[done] {out / 'model.safetensors'} + model.json in {time.monotonic() - t0:.0f} s; "
        f"validation Dice {result.best_dice:.3f}; lesion threshold "
        f"{calibration['lesion_threshold']}, floor {calibration['min_lesion_ml']} mL"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
