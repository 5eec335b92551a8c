"""``mefn train``: train a model from a YAML run configuration (also under torchrun)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EPILOG = """\
examples:
  mefn phantoms data/phantoms --n 120 --layout nnunet --seed 1
  mefn train --config configs/train/phantoms_small.yaml -o runs/small
  mefn train --config configs/train/phantoms_small.yaml -o runs/small --resume
  mefn train --config configs/train/phantoms_small.yaml --campaign campaigns/small --max-minutes 110
      (a campaign: run the same command again, on any clone, to continue; docs/training.md)
  torchrun --nproc_per_node 4 -m mefn train --config configs/train/autopet.yaml -o runs/autopet
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML configuration",
        description="Train MEFN (or a baseline) on an AutoPET, HECKTOR or phantom dataset.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="training YAML (see configs/train/)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", help="run folder (checkpoints, logs, weights)")
    where.add_argument(
        "--campaign",
        metavar="FOLDER",
        help="campaign folder tracked by git (e.g. campaigns/NAME): started when new, else "
        "continued from its checkpoint; only under the config it was started with",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in the output folder")
    p.add_argument("--data", help="override data.root")
    p.add_argument("--epochs", type=int, help="override epochs")
    p.add_argument("--device", help="override device (auto, cpu, cuda)")
    p.add_argument("--max-minutes", type=float, help="stop cleanly after this many minutes")
    p.add_argument(
        "--checkpoint-minutes",
        type=float,
        help="write the resumable state at most this often (and at the end; default 30)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set lr=1e-3 --set data.val_fraction=0.1",
    )
    p.set_defaults(func=run)


def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def run(args: argparse.Namespace) -> int:
    from mefn.config import replace_from_overrides
    from mefn.errors import ConfigError
    from mefn.training import load_train_config, train

    cfg = load_train_config(args.config)
    overrides: dict[str, Any] = {}
    if args.data:
        overrides["data.root"] = args.data
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.device:
        overrides["device"] = args.device
    if args.max_minutes is not None:
        overrides["max_minutes"] = args.max_minutes
    if args.checkpoint_minutes is not None:
        overrides["checkpoint_minutes"] = args.checkpoint_minutes
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, found {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = _parse_value(value)
    if overrides:
        cfg = replace_from_overrides(cfg, overrides)

    from tqdm import tqdm

    total = cfg.epochs * cfg.steps_per_epoch
    bar = tqdm(
        total=total, unit="step", file=sys.stderr, disable=not sys.stderr.isatty() or args.quiet
    )

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "step":
            bar.n = event["step"]
            bar.set_postfix(epoch=event["epoch"] + 1, loss=f"{event['loss']:.3f}", refresh=False)
            bar.refresh()
        elif not args.quiet:
            dice = event.get("val_dice")
            text = f"epoch {event['epoch']}: loss {event.get('loss', float('nan')):.4f}"
            if dice is not None:
                text += f", validation Dice {dice:.4f}"
            text += f" ({event['seconds']:.0f} s)"
            if bar.disable:
                print(text, file=sys.stderr, flush=True)
            else:
                bar.write(text, file=sys.stderr)

    campaign = args.campaign is not None
    result = train(
        cfg,
        args.campaign if campaign else args.output,
        resume=args.resume,
        progress=progress,
        config_dir=Path(args.config).resolve().parent,
        campaign=campaign,
    )
    bar.close()
    if campaign and result.stopped == "time_budget":
        if not args.quiet:
            print(
                f"campaign {args.campaign}: {result.epochs_done} of {cfg.epochs} epochs after "
                f"{result.seconds / 3600:.2f} h; commit the folder, then run the same command "
                "to continue"
            )
        return 0
    if not args.quiet:
        print(
            f"trained {result.epochs_done} epochs ({result.stopped}) in {result.seconds / 60:.1f} min; "
            f"best validation Dice {result.best_dice:.4f} at epoch {result.best_epoch}; "
            f"weights: {Path(result.output_dir) / 'model.safetensors'}"
        )
    return 0
