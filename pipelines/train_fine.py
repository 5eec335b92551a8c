"""Train the fine stage of the coarse-to-fine model as a resumable campaign.

    python -m pipelines.train_fine                   # crops, then train (resumes by itself)
    python -m pipelines.train_fine --minutes 60      # this invocation's training budget

Steps: (1) cut boxes around the lesions, hot structures and body voxels of ``--n`` whole-body
phantoms (training seeds ``study_seed(--seed, i)``, never those of the test phantoms) and of
``--n-val`` validation phantoms (``--seed + 1``) straight into a cache on the fine grid
(:func:`mefn.data.phantoms.crops.cache_phantom_crops`; ``work_data/fine_crops``, made again
on a fresh machine, the same boxes for the same seeds); (2) train
``configs/train/phantoms_fine.yaml`` on them as a campaign in ``--campaign`` (checkpoints
every ``checkpoint_minutes``: commit the folder, run the same command to continue). The
weights are ``<campaign>/model.safetensors`` with their card; ``mefn.cascade`` runs them as
the fine stage behind the bundled coarse weights.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipelines._bench import REPO

DEFAULT_CONFIG = REPO / "configs" / "train" / "phantoms_fine.yaml"
DEFAULT_CAMPAIGN = REPO / "campaigns" / "fine"
DEFAULT_CACHE = REPO / "work_data" / "fine_crops"


def say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--campaign", default=str(DEFAULT_CAMPAIGN))
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    parser.add_argument("--n", type=int, default=100, help="training phantoms (default 100)")
    parser.add_argument("--n-val", type=int, default=8, help="validation phantoms (default 8)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the training phantoms")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--minutes", type=float, help="training budget of this invocation")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    from mefn.config import replace_from_overrides
    from mefn.data.phantoms.crops import cache_phantom_crops
    from mefn.errors import ConfigError, MefnError
    from mefn.training import load_train_config, train_on_cases

    try:
        cfg = load_train_config(args.config)
        # kept relative (the campaign's saved config must match on any clone): from the root
        if cfg.init_weights and not Path(cfg.init_weights).is_file():
            raise ConfigError(
                f"init_weights {cfg.init_weights} not found from {Path.cwd()}; run "
                "python -m pipelines.train_fine from the repository root"
            )
        overrides: dict[str, Any] = {}
        if args.minutes is not None:
            overrides["max_minutes"] = args.minutes
        if overrides:
            cfg = replace_from_overrides(cfg, overrides)
        t0 = time.monotonic()

        def done(i: int, n: int, boxes: int, seconds: float) -> None:
            if i == n or i % 20 == 0:
                say(f"[crops] {i}/{n} studies ({boxes} boxes, {seconds:.1f} s the last)")

        cache = Path(args.cache_dir)
        train_cases = cache_phantom_crops(
            cache / "train", args.n, args.seed, cfg.preprocess, workers=args.workers,
            progress=done,
        )  # fmt: skip
        val_cases = cache_phantom_crops(
            cache / "val", args.n_val, args.seed + 1, cfg.preprocess, workers=args.workers
        )
        say(
            f"[crops] {len(train_cases)} training and {len(val_cases)} validation boxes in "
            f"{time.monotonic() - t0:.0f} s"
        )
        cfg = replace(cfg, data=replace(cfg.data, root=f"crops of phantoms, seed {args.seed}"))

        def progress(event: dict[str, Any]) -> None:
            if event["event"] == "epoch":
                dice = event.get("val_dice")
                extra = f", validation Dice {dice:.3f}" if dice is not None else ""
                say(
                    f"[train] epoch {event['epoch']}: loss {event.get('loss', math.nan):.4f}, "
                    f"{event['seconds']:.0f} s{extra}"
                )

        result = train_on_cases(
            cfg, args.campaign, train_cases, val_cases, progress=progress, campaign=True,
            config_dir=Path(args.config).resolve().parent,
        )  # fmt: skip
    except MefnError as exc:
        print(f"train_fine: error: {exc}", file=sys.stderr)
        return exc.exit_code
    say(
        f"[done] {result.epochs_done} epochs ({result.stopped}); best validation Dice "
        f"{result.best_dice:.3f} at epoch {result.best_epoch}; {args.campaign}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
