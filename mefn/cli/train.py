"""``mefn train``: train a model from a YAML run configuration (also under torchrun)."""

from __future__ import annotations

import argparse
import os
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
        "--no-calibrate",
        action="store_true",
        help="skip choosing the post-processing on the validation cases at the end "
        "(mefn calibrate does it later)",
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
    if cfg.processes > 1 and "WORLD_SIZE" not in os.environ and _on_cpu(cfg.device):
        return _run_data_parallel(args.argv, cfg.processes, cfg.threads)

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
    if not args.no_calibrate and os.environ.get("RANK", "0") == "0":
        from mefn.errors import MefnError

        try:
            _calibrate(cfg, Path(result.output_dir), args.quiet)
        except MefnError as exc:
            print(
                f"mefn train: error: the weights are saved in {result.output_dir}, but choosing "
                f"their post-processing failed ({exc}); run mefn calibrate on them",
                file=sys.stderr,
            )
            return 1
    return 0


def _calibrate(cfg: Any, run: Path, quiet: bool) -> None:
    """The post-processing and trust of the run's weights fitted on (up to 20 of) its
    validation cases (mefn.calibration), written into its card."""
    from mefn.cli.calibrate import calibrate_and_report
    from mefn.training import training_split

    _, val = training_split(cfg)
    if not val:
        print(
            f"mefn train: warning: no validation cases (fold {cfg.data.fold}), so the weights "
            f"keep the default post-processing and have no lesion confidence; run mefn "
            f"calibrate {run} on cases they have not seen",
            file=sys.stderr,
        )
        return
    calibrate_and_report(
        "mefn train", run, val[:20], run / "model.json", quiet=quiet,
        data="validation split of the run",
    )  # fmt: skip


def _on_cpu(device: str) -> bool:
    import torch

    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


_GRACE_SECONDS = 3.0


def _run_data_parallel(argv: list[str], processes: int, threads: int | None) -> int:
    """This command again in ``processes`` data-parallel ranks on this machine (what torchrun
    does, without its launcher): rank 0 talks to the terminal, the others stay quiet unless
    they fail. The first failure stops the others after a short grace; returns rank 0's exit
    code, or the failed rank's when rank 0 did not fail on its own."""
    import contextlib
    import socket
    import subprocess
    import tempfile
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    per_rank = threads or max(1, (os.cpu_count() or 1) // processes)
    with contextlib.ExitStack() as stack:
        procs: list[subprocess.Popen[bytes]] = []
        logs = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(processes)]
        for rank in range(processes):
            env = {
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(processes),
                "LOCAL_WORLD_SIZE": str(processes),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": str(per_rank),
            }
            quiet = {"stdout": subprocess.DEVNULL, "stderr": logs[rank]} if rank else {}
            command = [sys.executable, "-m", "mefn", *argv]
            procs.append(subprocess.Popen(command, env=env, **quiet))  # type: ignore[call-overload]
        try:
            failed_at = None
            while any(p.poll() is None for p in procs):
                if failed_at is None and any(p.poll() not in (None, 0) for p in procs):
                    failed_at = time.monotonic()
                # Ranks that fail on the same input fail within moments of each other: they get
                # a grace period to exit on their own, so rank 0 is never killed between
                # printing its error line and exiting (two lines for one failure).
                if failed_at is not None and time.monotonic() - failed_at > _GRACE_SECONDS:
                    for p in procs:
                        if p.poll() is None:
                            p.terminate()
                time.sleep(0.2)
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()
            raise
        codes = [p.wait() for p in procs]
        failed = next((r for r, c in enumerate(codes) if c > 0), None)
        if codes[0] > 0 or failed is None:
            return codes[0] if codes[0] >= 0 else 1
        logs[failed].seek(0)
        lines = logs[failed].read().decode(errors="replace").strip().splitlines()
    print(lines[-1] if lines else f"mefn train: error: rank {failed} failed", file=sys.stderr)
    return codes[failed]
