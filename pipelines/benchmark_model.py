"""Parameters, FLOPs and CPU forward time of MEFN against the DynUNet baseline.

    python -m pipelines.benchmark_model                         # mefn_small vs dynunet_small
    python -m pipelines.benchmark_model --size 96 --runs 7 --threads 2
    python -m pipelines.benchmark_model --configs mefn_small dynunet_small --train-step

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the plain
``aten.convolution`` path (one multiply-add = 2 FLOPs; convolutions and matrix products only).
Forward time is the median of ``--runs`` timed runs after ``--warmup`` untimed ones, in eval
mode under ``torch.no_grad()``. The models are timed round-robin (run 1 of every model, then
run 2, ...) so that load from other processes on a shared machine hits them alike. The first
config is compared with the last (ratio = first / last).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["mefn_small", "dynunet_small"])
    parser.add_argument("--size", type=int, default=96, help="cubic patch edge in voxels")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--train-step", action="store_true", help="also time forward + loss + backward"
    )
    parser.add_argument("--train-size", type=int, default=64, help="patch edge for --train-step")
    args = parser.parse_args(argv)

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mefn.config import load_config
    from mefn.model import ModelConfig, build_loss, build_model

    warnings.filterwarnings("ignore", message=".*TF32.*")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {args.threads} threads, forward input "
        f"({args.batch}, 2, {args.size}, {args.size}, {args.size}); median of {args.runs} runs "
        f"after {args.warmup} warm-up, models timed round-robin"
    )
    x = torch.randn(args.batch, 2, args.size, args.size, args.size)
    rows: list[dict[str, Any]] = []
    for name in args.configs:
        path = Path(name) if name.endswith(".yaml") else REPO / "configs" / "model" / f"{name}.yaml"
        cfg = load_config(ModelConfig, path)
        model = build_model(cfg).eval()
        counter = FlopCounterMode(display=False)
        # The direct oneDNN call is invisible to the counter: count on the plain path.
        with torch.no_grad(), counter, torch.backends.mkldnn.flags(enabled=False):
            model(x)
        rows.append(
            {
                "name": name,
                "cfg": cfg,
                "model": model,
                "params": sum(p.numel() for p in model.parameters()),
                "gflops": counter.get_total_flops() / 1e9,
                "fwd": [],
                "step": [],
            }
        )

    with torch.no_grad():
        for i in range(args.warmup + args.runs):
            for row in rows:
                t0 = time.perf_counter()
                row["model"](x)
                if i >= args.warmup:
                    row["fwd"].append(time.perf_counter() - t0)

    if args.train_step:
        s = args.train_size
        xt = torch.randn(2, 2, s, s, s)
        yt = (torch.rand(2, 1, s, s, s) > 0.9).long()
        for row in rows:
            row["model"].train()
            row["loss"] = build_loss(row["cfg"])
        for i in range(args.warmup + args.runs):
            for row in rows:
                t0 = time.perf_counter()
                row["loss"](row["model"](xt), yt, xt, 5)["loss"].backward()
                row["model"].zero_grad(set_to_none=True)
                if i >= args.warmup:
                    row["step"].append(time.perf_counter() - t0)

    for row in rows:
        row["fwd_s"] = statistics.median(row["fwd"])
        line = (
            f"{row['name']:24s} params {row['params']:>10,d}  GFLOPs {row['gflops']:8.2f}  "
            f"forward {row['fwd_s']:.3f} s (min {min(row['fwd']):.3f})"
        )
        if args.train_step:
            row["step_s"] = statistics.median(row["step"])
            line += f"  train step (2, 2, {args.train_size}^3) {row['step_s']:.2f} s"
        print(line)
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        line = (
            f"ratio {a['name']} / {b['name']}: params {a['params'] / b['params']:.2f}, "
            f"FLOPs {a['gflops'] / b['gflops']:.2f}, forward time {a['fwd_s'] / b['fwd_s']:.2f}"
        )
        if args.train_step:
            line += f", train step {a['step_s'] / b['step_s']:.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
