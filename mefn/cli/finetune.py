"""``mefn finetune``: train a small adapter file on top of frozen base weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EPILOG = """\
adapter types: lora, dora, ia3, norm_bias, bottleneck, shared_bottleneck, compacter, mosa,
lowbit, paca, bone, gated, lae (configs/adapters/), or a YAML file.

head-only tuning (new heads on the frozen base, no adapter in the body): --adapter none.

another label set: --num-classes N replaces the output heads with fresh ones for N classes
(background included) that train with the adapter and are saved in its file; unset, it is the
base's, or the labels' (largest label + 1) when they hold more classes, e.g. 3 on HECKTOR
(GTVp = 1, GTVn = 2) from a 2-class base.

example:
  mefn finetune --from mefn_default --adapter compacter --data my_centre/ -o adapters/my_centre
  mefn finetune --from mefn_default --adapter lora --data hecktor/ --num-classes 3 -o adapters/hn
  mefn segment case_0000.nii.gz --adapter adapters/my_centre -o results/
"""

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train" / "finetune.yaml"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune an adapter on new data (base weights stay frozen)",
        description="Train an adapter on a labelled dataset; the base weights stay untouched.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--from", dest="base", default="default", help="base weights (name, file or run)"
    )
    p.add_argument("--adapter", required=True, help="adapter type or YAML")
    p.add_argument(
        "--data",
        required=True,
        help="labelled dataset folder (AutoPET, nnU-Net, HECKTOR or sarcoma-crop layout)",
    )
    p.add_argument(
        "--folds",
        default=None,
        help="folds YAML (e.g. configs/datasets/sts_folds.yaml): hold --fold out for validation",
    )
    p.add_argument(
        "--fold",
        type=_fold,
        default=None,
        help="the fold of --folds held out, or 'all': train on every case, no validation (the "
        "final adapter once the folds have chosen its settings; not calibrated)",
    )
    p.add_argument(
        "--config", default=None, help="training YAML (default configs/train/finetune.yaml)"
    )
    p.add_argument("-o", "--output", required=True, help="adapter folder to write")
    p.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classes of the fine-tuned model, background included (new output heads)",
    )
    p.add_argument("--epochs", type=int, help="override epochs")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue an interrupted fine-tuning")
    p.add_argument(
        "--no-calibrate",
        action="store_true",
        help="do not fit the adapter's post-processing, lesion confidence and voxel error map "
        "on (up to 20 of) its validation cases at the end (mefn calibrate --adapter does it "
        "later)",
    )
    p.set_defaults(func=run)


def _fold(text: str) -> int | str:
    """``--fold``: a fold number or ``all``."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fold number (0, 1, ...) or 'all', found {text!r}"
        ) from None


def run(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    from mefn.adapters import load_adapter_config
    from mefn.config import from_dict
    from mefn.data.preprocess import PreprocessConfig
    from mefn.errors import InputError
    from mefn.inference import resolve_weights
    from mefn.model import ModelConfig
    from mefn.training import load_train_config, train

    load_adapter_config(args.adapter)  # an unknown type fails before any data is read
    weights, card_path = resolve_weights(args.base)
    card = json.loads(card_path.read_text())
    model_cfg = from_dict(ModelConfig, card["model"], where="model card")
    preprocess = from_dict(PreprocessConfig, card.get("preprocess", {}), where="model card")
    if not Path(args.data).is_dir():
        raise InputError(f"--data {args.data} is not a folder; give a labelled dataset folder")
    cfg = load_train_config(args.config or DEFAULT_CONFIG)
    patch = card.get("patch_size_vox", list(cfg.patch_size_vox))
    cfg = replace(
        cfg,
        data=replace(
            cfg.data,
            root=str(args.data),
            folds=args.folds if args.folds is not None else cfg.data.folds,
            fold=args.fold if args.fold is not None else cfg.data.fold,
        ),
        preprocess=preprocess,
        patch_size_vox=(int(patch[0]), int(patch[1]), int(patch[2])),
        init_weights=str(weights),
        adapter=args.adapter,
        num_classes=args.num_classes,
        epochs=args.epochs if args.epochs is not None else cfg.epochs,
        device=args.device or cfg.device,
    )

    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "epoch" and not args.quiet:
            dice = event.get("val_dice")
            text = f"epoch {event['epoch']}: loss {event.get('loss', float('nan')):.4f}"
            if dice is not None:
                text += f", validation Dice {dice:.4f}"
            print(text, file=sys.stderr, flush=True)

    result = train(cfg, args.output, resume=args.resume, progress=progress, model_cfg=model_cfg)
    if not args.quiet:
        adapter_dir = Path(args.output) / "adapter"
        size_kb = sum(p.stat().st_size for p in adapter_dir.iterdir()) / 1024
        print(
            f"adapter {args.adapter}: {result.epochs_done} epochs, best validation Dice "
            f"{result.best_dice:.4f}; {adapter_dir} ({size_kb:.1f} KB)"
        )
        meta = json.loads((adapter_dir / "adapter_config.json").read_text())
        if meta.get("labels"):
            names = ", ".join(f"{k} = {v}" for k, v in meta["labels"].items() if k != "0")
            print(f"new output heads for {meta['num_classes']} classes: {names}")
    if args.no_calibrate:
        return 0
    from mefn.cli.calibrate import calibrate_and_report
    from mefn.errors import MefnError
    from mefn.registry import ADAPTER_CARD
    from mefn.training import training_split

    adapter_dir = Path(args.output) / "adapter"
    _, val = training_split(cfg)
    if not val:
        print(
            f"mefn finetune: warning: no validation cases (fold {cfg.data.fold}), so the "
            f"adapter keeps the base's post-processing and has no lesion confidence; run mefn "
            f"calibrate --adapter {adapter_dir} on cases it has not seen",
            file=sys.stderr,
        )
        return 0
    try:
        return calibrate_and_report(
            "mefn finetune", weights, val[:20], adapter_dir / ADAPTER_CARD,
            adapter=adapter_dir, quiet=args.quiet, data="validation split of the fine-tuning",
        )  # fmt: skip
    except MefnError as exc:
        print(
            f"mefn finetune: error: the adapter is saved in {adapter_dir}, but calibrating it "
            f"failed ({exc}); run mefn calibrate --adapter on it",
            file=sys.stderr,
        )
        return 1
