"""Parameters, FLOPs and CPU forward time of MEFN against the DynUNet baseline.

    python pipelines/benchmark_model.py                         # mefn_small vs dynunet_small
    python pipelines/benchmark_model.py --size 96 --runs 5 --threads 2
    python pipelines/benchmark_model.py --configs mefn_small dynunet_small --train-step

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix
products; one multiply-add = 2 FLOPs). Forward time is the median of ``--runs`` timed runs after
``--warmup`` untimed ones, in eval mode under ``torch.no_grad()``. The first config is compared
with the last (ratio = first / last).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["mefn_small", "dynunet_small"])
    parser.add_argument("--size", type=int, default=96, help="cubic patch edge in voxels")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
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

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {args.threads} threads, input "
        f"({args.batch}, 2, {args.size}, {args.size}, {args.size}), median of {args.runs} runs "
        f"after {args.warmup} warm-up"
    )
    results = []
    for name in args.configs:
        path = Path(name) if name.endswith(".yaml") else REPO / "configs" / "model" / f"{name}.yaml"
        cfg = load_config(ModelConfig, path)
        model = build_model(cfg).eval()
        params = sum(p.numel() for p in model.parameters())
        x = torch.randn(args.batch, 2, args.size, args.size, args.size)
        with torch.no_grad():
            counter = FlopCounterMode(display=False)
            # Count on the plain aten.convolution path (the direct oneDNN call is invisible to
            # the counter); 1x1 heads run as matrix products and are counted as such.
            with counter, torch.backends.mkldnn.flags(enabled=False):
                model(x)
            flops = counter.get_total_flops()
            for _ in range(args.warmup):
                model(x)
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
        row = {
            "name": name,
            "params": params,
            "gflops": flops / 1e9,
            "fwd_s": statistics.median(times),
        }
        if args.train_step:
            model.train()
            loss_fn = build_loss(cfg)
            s = args.train_size
            xt = torch.randn(2, 2, s, s, s)
            yt = (torch.rand(2, 1, s, s, s) > 0.9).long()
            step_times = []
            for i in range(args.warmup + args.runs):
                t0 = time.perf_counter()
                loss = loss_fn(model(xt), yt, xt, 5)["loss"]
                loss.backward()
                model.zero_grad(set_to_none=True)
                if i >= args.warmup:
                    step_times.append(time.perf_counter() - t0)
            row["step_s"] = statistics.median(step_times)
        results.append(row)
        extra = (
            f", train step (2, 2, {args.train_size}^3) {row['step_s']:.2f} s"
            if args.train_step
            else ""
        )
        print(
            f"{name:28s} params {params:>10,d}  GFLOPs {row['gflops']:8.2f}  "
            f"forward {row['fwd_s']:.3f} s{extra}"
        )
    if len(results) >= 2:
        a, b = results[0], results[-1]
        print(
            f"ratio {a['name']} / {b['name']}: params {a['params'] / b['params']:.2f}, "
            f"FLOPs {a['gflops'] / b['gflops']:.2f}, forward time {a['fwd_s'] / b['fwd_s']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
