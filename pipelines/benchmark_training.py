"""Where a training step goes, and two training recipes side by side in one run (issue 20).

    python -m pipelines.benchmark_training                      # phantoms_small vs phantoms_fast
    python -m pipelines.benchmark_training --steps 60 --last 20 --threads 2 --json out.json
    python -m pipelines.benchmark_training --recipes configs/train/a.yaml configs/train/b.yaml

A recipe is a training config (``configs/train/*.yaml``) and the model config it names. Both
recipes train from the same seed on the same small phantom set (``--cases`` small phantoms,
written to a temporary folder and cached in each recipe's model space), the later recipes'
networks starting from the first one's weights wherever a parameter's name and shape agree
(``share_initial_weights``; ``--independent-init``: each drawn from the seed alone), each with
its own ``PatchSampler`` seeded alike, AdamW (``mefn.training.make_adamw``) at the recipe's lr
and weight decay, gradient clipping at its ``grad_clip``, and one learning-rate schedule for
both: ``mefn.training.lr_factor`` over ``--steps`` steps with a tenth of them warm-up (the recipes' own schedules span hundreds of
epochs). The epoch handed to the loss (KL and uncertainty annealing) is
``step // steps_per_epoch``. The step is the one of ``mefn.training.train``: sample, forward,
loss, backward, clip, optimiser step.

A recipe with ``processes`` > 1 (data-parallel, as ``mefn train`` runs it) steps in that
many processes: this one as rank 0 and helpers started for the run, each with its own
sampler (seed + 1000 x rank), ``batch_size`` patches and ``threads`` threads, gradients
averaged by DistributedDataParallel over gloo; its step is rank 0's wall time (the ranks meet
at every gradient reduction), its voxels those of all ranks, its loss the ranks' mean.

The recipes alternate step by step (A B A B ...), so load from other processes on a shared
machine hits them alike; every step is timed by phase (patch sampling and augmentation,
forward, loss, backward, optimiser), and the figures are medians over the steps after
``--warmup``. Reported per recipe:

- training voxels per second: patch voxels of a step (batch x patch) / its wall time,
  sampling and augmentation included; the network-only rate leaves sampling out;
- GFLOP/s: FLOPs of forward + loss + backward (``torch.utils.flop_counter``: convolutions and
  matrix products, one multiply-add = 2 FLOPs) / the time of those phases, against a float32
  ``torch.matmul`` of ``--matmul`` squared timed once per round with the same threads;
- idle: core-seconds the process left unused, ``threads x wall - process CPU time``, as a
  fraction of ``threads x wall`` (single-threaded sampling, waits, time taken by others);
- the loss: mean over the first and the last ``--last`` steps, and every step in the JSON;
- a breakdown of one extra profiled step (``torch.profiler``): per phase, the ops' own time by
  kind (convolution, normalisation, activation, evidential special functions, matmul and
  attention, resampling, copies and layout, other element-wise and reductions) and the time
  outside any op (Python, dispatch). Profiling slows small ops: read it for shares.

``--json`` writes everything (machine, settings, per-step times and losses) to a file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipelines._bench import REPO, machine_info, repo_relative

DEFAULT_RECIPES = [
    str(REPO / "configs/train/phantoms_small.yaml"),
    str(REPO / "configs/train/phantoms_fast.yaml"),
]
PHASES = ("sample", "forward", "loss", "backward", "optimizer")
KINDS = (
    "convolution",
    "normalisation",
    "activation",
    "evidential special functions",
    "matmul and attention",
    "resampling",
    "copies and layout",
    "element-wise and reductions",
)


def op_kind(name: str) -> str:
    """The kind of a profiled op (``aten::mkldnn_convolution`` -> ``convolution``)."""
    op = name.split("::", 1)[-1]
    if "conv" in op:
        return "convolution"
    if "norm" in op:
        return "normalisation"
    if any(a in op for a in ("relu", "sigmoid", "softplus", "gelu", "elu", "tanh")):
        return "activation"
    if any(f in op for f in ("digamma", "polygamma", "lgamma")):
        return "evidential special functions"
    if op in ("mm", "bmm", "addmm", "matmul", "baddbmm") or "softmax" in op or "attention" in op:
        return "matmul and attention"
    if "upsample" in op or "interp" in op or "grid_sampler" in op:
        return "resampling"
    if any(
        c in op
        for c in ("copy", "contiguous", "clone", "cat", "stack", "fill", "zero", "empty", "pad")
    ):
        return "copies and layout"
    return "element-wise and reductions"


@dataclass
class Recipe:
    """One recipe's model, optimiser, sampler and measurements."""

    name: str
    cfg: Any
    model_cfg: Any
    model: Any
    loss_fn: Any
    optimizer: Any
    params: list[Any]
    sampler: Any
    voxels_per_step: int
    forward: Any = None  # the model, or DistributedDataParallel around it
    processes: int = 1
    threads: int = 1
    gflop_per_step: float = math.nan
    times: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})
    wall: list[float] = field(default_factory=list)
    idle: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)


def _cases(entries: list[Any], preprocess: Any, cache_root: Path) -> list[Any]:
    from mefn.data.cache import cache_case, preprocess_fingerprint
    from mefn.io.discovery import load_case

    folder = cache_root / preprocess_fingerprint(preprocess)
    return [
        cache_case(
            load_case(ct=e.ct, pet=e.pet, label=e.label, case_id=e.case_id), preprocess, folder
        )
        for e in entries
    ]


def build_recipe(
    path: str, entries: list[Any], cache_root: Path, args: argparse.Namespace, rank: int = 0
) -> Recipe:
    """Model, loss, optimiser and sampler of the training config at ``path``, seeded (the
    sampler of data-parallel rank ``rank`` by ``seed + 1000 * rank``). A recipe of
    ``processes`` > 1 steps in that many processes of ``threads`` threads each (its own, else
    ``--threads`` shared out), the batch per process."""
    import torch

    from mefn.model import build_loss, build_model
    from mefn.training import load_train_config, make_adamw, make_sampler, resolve_model_config

    cfg = load_train_config(path)
    if args.patch:
        cfg = replace(cfg, patch_size_vox=(args.patch,) * 3)
    if args.batch:
        cfg = replace(cfg, batch_size=args.batch)
    model_cfg = resolve_model_config(cfg.model, Path(path).parent)
    torch.manual_seed(args.seed)
    model = build_model(model_cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    sampler = make_sampler(
        cfg, _cases(entries, cfg.preprocess, cache_root), seed=args.seed + 1000 * rank
    )
    return Recipe(
        name=f"{Path(path).stem} ({cfg.model})",
        cfg=cfg,
        model_cfg=model_cfg,
        model=model,
        loss_fn=build_loss(model_cfg),
        optimizer=make_adamw(params, cfg.lr, cfg.weight_decay),
        params=params,
        sampler=sampler,
        voxels_per_step=cfg.processes * cfg.batch_size * math.prod(cfg.patch_size_vox),
        forward=model,
        processes=cfg.processes,
        threads=(cfg.threads or max(1, args.threads // cfg.processes))
        if cfg.processes > 1
        else args.threads,
    )


def share_initial_weights(first: Any, other: Any) -> tuple[int, int]:
    """Copy into ``other`` every parameter and buffer of ``first`` with the same name and
    shape (in place: the optimiser keeps its tensors); (values shared, values of ``other``).

    Two networks drawn from one seed differ wherever their layer lists differ, and with them
    the starting loss (mefn_small against mefn_fast, seed 2: 5.74 against 6.09 at the first
    step); started from the same weights where they agree, the recipes' losses differ by
    what the recipes do, not by the draw.
    """
    import torch

    source = {**dict(first.named_parameters()), **dict(first.named_buffers())}
    shared = total = 0
    with torch.no_grad():
        for name, tensor in [*other.named_parameters(), *other.named_buffers()]:
            total += tensor.numel()
            src = source.get(name)
            if src is not None and src.shape == tensor.shape:
                tensor.copy_(src)
                shared += tensor.numel()
    return shared, total


def count_gflop(recipe: Recipe) -> float:
    """FLOPs of forward + loss + backward of one batch (the model's gradients are cleared)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x_np, y_np = recipe.sampler.batch(recipe.cfg.batch_size)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    counter = FlopCounterMode(display=False)
    # A batch of one takes a direct oneDNN call the counter cannot see: count on aten's path.
    with counter, torch.backends.mkldnn.flags(enabled=x.shape[0] > 1):
        recipe.loss_fn(recipe.model(x), y, x, 0)["loss"].backward()
    recipe.model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops()) / 1e9


def train_step(
    recipe: Recipe,
    step: int,
    total_steps: int,
    timer: Callable[[str], Any] | None = None,
) -> float:
    """One training step as in ``mefn.training.train``; returns the loss. ``timer(phase)``
    gives a context manager around each phase (timing or profiling)."""
    import contextlib

    import torch

    from mefn.errors import CheckpointError
    from mefn.training import lr_factor

    cfg = recipe.cfg

    def phase(name: str) -> Any:
        return timer(name) if timer is not None else contextlib.nullcontext()

    for group in recipe.optimizer.param_groups:
        group["lr"] = cfg.lr * lr_factor(step, total_steps, max(1, total_steps // 10))
    epoch = step // cfg.steps_per_epoch
    with phase("sample"):
        x_np, y_np = recipe.sampler.batch(cfg.batch_size)
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    with phase("forward"):
        output = (recipe.forward or recipe.model)(x)
    with phase("loss"):
        loss = recipe.loss_fn(output, y, x, epoch)["loss"]
        value = float(loss.detach())
        if recipe.processes > 1:  # the mean over the ranks, as the batch's loss
            import torch.distributed as dist

            mean = loss.detach().reshape(1) / recipe.processes
            dist.all_reduce(mean)
            value = float(mean)
    if not math.isfinite(value):
        raise CheckpointError(f"{recipe.name} diverged at step {step} (loss {value})")
    with phase("backward"):
        recipe.optimizer.zero_grad(set_to_none=True)
        loss.backward()
    with phase("optimizer"):
        torch.nn.utils.clip_grad_norm_(recipe.params, cfg.grad_clip)
        recipe.optimizer.step()
    return value


def timed_step(recipe: Recipe, step: int, total_steps: int, keep: bool) -> None:
    import contextlib

    spans: dict[str, float] = {}

    @contextlib.contextmanager
    def timer(name: str) -> Any:
        t0 = time.perf_counter()
        yield
        spans[name] = time.perf_counter() - t0

    _start_step(recipe, step, total_steps)
    cpu0, t0 = time.process_time(), time.perf_counter()
    recipe.losses.append(train_step(recipe, step, total_steps, timer))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if keep:
        recipe.wall.append(wall)
        recipe.idle.append(max(0.0, 1.0 - cpu / (recipe.threads * wall)))
        for name in PHASES:
            recipe.times[name].append(spans[name])


def profiled_breakdown(recipe: Recipe, step: int, total_steps: int) -> dict[str, dict[str, float]]:
    """Per phase: milliseconds by op kind, ``outside ops`` and ``wall`` (one profiled step)."""
    import contextlib

    from torch.profiler import ProfilerActivity, profile

    out: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def timer(name: str) -> Any:
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            yield
        wall_ms = (time.perf_counter() - t0) * 1e3
        kinds = dict.fromkeys(KINDS, 0.0)
        for event in prof.key_averages():
            if event.key.startswith("aten::"):
                kinds[op_kind(event.key)] += event.self_cpu_time_total / 1e3
        in_ops = sum(kinds.values())
        out[name] = {**kinds, "outside ops": max(0.0, wall_ms - in_ops), "wall": wall_ms}

    _start_step(recipe, step, total_steps)
    train_step(recipe, step, total_steps, timer)
    return out


# --- data-parallel recipes: this process is rank 0, helpers are the other ranks ---------------
_STEP, _STOP = 1, 0


def _start_step(recipe: Recipe, step: int, total_steps: int) -> None:
    """This process at the recipe's thread count, its helper ranks told to step with it."""
    import torch

    torch.set_num_threads(recipe.threads)
    _tell_helpers(recipe, _STEP, step, total_steps)


def _tell_helpers(recipe: Recipe, command: int, step: int = 0, total_steps: int = 0) -> None:
    """Rank 0 tells the helper ranks of a data-parallel recipe what to do next."""
    if recipe.processes > 1:
        import torch
        import torch.distributed as dist

        dist.broadcast(torch.tensor([command, step, total_steps]), src=0)


HELPER_FLAG = "--_helper"


def _join(recipe: Recipe, rank: int, port: int) -> None:
    """Join the recipe's process group as ``rank`` and wrap its model for averaged gradients
    (a rank that never comes fails the others after two minutes instead of hanging)."""
    import datetime

    import torch
    import torch.distributed as dist

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=recipe.processes,
        timeout=datetime.timedelta(seconds=120),
    )
    recipe.forward = torch.nn.parallel.DistributedDataParallel(recipe.model)


def helper_rank(spec: dict[str, Any]) -> None:
    """A helper rank of a data-parallel recipe (``python -m pipelines.benchmark_training
    --_helper SPEC``, started by ``start_helpers``): steps whenever rank 0 says so, until told
    to stop. It reads the phantoms and the patch cache rank 0 wrote."""
    import numpy as np
    import torch
    import torch.distributed as dist

    from mefn.data.datasets import index_dataset

    args = argparse.Namespace(**spec["args"])
    rank = int(spec["rank"])
    entries = index_dataset(Path(spec["data"]), layout="nnunet")
    recipe = build_recipe(spec["recipe"], entries, Path(spec["cache"]), args, rank=rank)
    recipe.sampler.rng = np.random.default_rng(args.seed + 1000 * rank)
    torch.set_num_threads(recipe.threads)
    _join(recipe, rank, int(spec["port"]))
    while True:
        command = torch.zeros(3, dtype=torch.int64)
        dist.broadcast(command, src=0)
        if int(command[0]) == _STOP:
            break
        train_step(recipe, int(command[1]), int(command[2]))
    # Leave at once: tearing the gloo group down from both sides can wait on each other.
    sys.stdout.flush()
    os._exit(0)


def start_helpers(
    recipe: Recipe, path: str, data: Path, cache_root: Path, args: argparse.Namespace
) -> list[Any]:
    """Start ranks 1.. of a data-parallel recipe (fresh processes from the repository root)
    and join them as rank 0."""
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    shared = {"seed": args.seed, "patch": args.patch, "batch": args.batch, "threads": args.threads}
    env = {**os.environ, "OMP_NUM_THREADS": str(recipe.threads)}
    helpers = []
    for rank in range(1, recipe.processes):
        spec = {"recipe": str(Path(path).resolve()), "data": str(data), "cache": str(cache_root)}
        spec.update(args=shared, rank=rank, port=port)  # type: ignore[arg-type]
        command = [sys.executable, "-m", "pipelines.benchmark_training", HELPER_FLAG]
        helpers.append(subprocess.Popen([*command, json.dumps(spec)], cwd=REPO, env=env))
    _join(recipe, 0, port)
    return helpers


def stop_helpers(recipe: Recipe, helpers: list[Any]) -> None:
    import subprocess

    import torch.distributed as dist

    _tell_helpers(recipe, _STOP)
    dist.destroy_process_group()
    for helper in helpers:
        try:
            helper.wait(timeout=60)
        except subprocess.TimeoutExpired:
            helper.kill()


def matmul_gflops(size: int) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    t0 = time.perf_counter()
    torch.matmul(a, b)
    return 2 * size**3 / (time.perf_counter() - t0) / 1e9


def summarise(recipe: Recipe, last: int) -> dict[str, Any]:
    med = {name: statistics.median(v) for name, v in recipe.times.items()}
    wall = statistics.median(recipe.wall)
    net = statistics.median(
        [sum(recipe.times[p][i] for p in PHASES if p != "sample") for i in range(len(recipe.wall))]
    )
    compute = statistics.median(
        [
            sum(recipe.times[p][i] for p in ("forward", "loss", "backward"))
            for i in range(len(recipe.wall))
        ]
    )
    k = min(last, len(recipe.losses))
    return {
        "recipe": recipe.name,
        "model": recipe.cfg.model,
        "patch_size_vox": list(recipe.cfg.patch_size_vox),
        "batch_size": recipe.cfg.batch_size,
        "processes": recipe.processes,
        "threads": recipe.threads,
        "params": sum(p.numel() for p in recipe.model.parameters()),
        "step_seconds": wall,
        "phase_seconds": med,
        "voxels_per_second": recipe.voxels_per_step / wall,
        "network_voxels_per_second": recipe.voxels_per_step / net,
        "gflop_per_step": recipe.gflop_per_step,
        "gflops_achieved": recipe.gflop_per_step / compute,
        "idle_fraction": statistics.median(recipe.idle),
        "loss_first": statistics.fmean(recipe.losses[:k]),
        "loss_last": statistics.fmean(recipe.losses[-k:]),
        "losses": recipe.losses,
        "step_times": recipe.wall,
        "breakdown_ms": recipe.breakdown,
    }


def _report(rows: list[dict[str, Any]], matmul: float, args: argparse.Namespace) -> list[str]:
    lines = []
    for r in rows:
        ph = "  ".join(f"{p} {r['phase_seconds'][p]:.3f}" for p in PHASES)
        lines += [
            f"{r['recipe']}: {r['params']:,d} parameters, batch {r['batch_size']} x "
            f"{'x'.join(map(str, r['patch_size_vox']))}"
            + (
                f" in each of {r['processes']} data-parallel processes"
                if r["processes"] > 1
                else ""
            )
            + f", {r['threads']} thread(s) each",
            f"  step {r['step_seconds']:.3f} s  ({ph} s)",
            f"  {r['voxels_per_second'] / 1e3:.1f} k training voxels/s (network only "
            f"{r['network_voxels_per_second'] / 1e3:.1f} k); {r['gflop_per_step']:.1f} GFLOP "
            f"per step at {r['gflops_achieved']:.1f} GFLOP/s ({r['gflops_achieved'] / matmul:.0%}"
            f" of matmul); idle {r['idle_fraction']:.0%} of rank 0's {r['threads']} thread(s)",
            f"  loss: mean of the first {args.last} steps {r['loss_first']:.4f}, of the last "
            f"{args.last} {r['loss_last']:.4f}",
        ]
        for name, kinds in r["breakdown_ms"].items():
            parts = [f"{k} {v:.0f}" for k, v in kinds.items() if k != "wall" and v >= 0.5]
            lines.append(f"  profiled {name} {kinds['wall']:.0f} ms: " + ", ".join(parts))
    a, b = rows[0], rows[-1]
    lines += [
        f"matmul {args.matmul}^2 float32: {matmul:.1f} GFLOP/s (median of the rounds)",
        f"ratio {b['recipe']} / {a['recipe']}: training voxels/s "
        f"{b['voxels_per_second'] / a['voxels_per_second']:.2f}x, network-only "
        f"{b['network_voxels_per_second'] / a['network_voxels_per_second']:.2f}x; "
        f"loss over the last {args.last} steps {b['loss_last']:.4f} vs {a['loss_last']:.4f} "
        f"({'no worse' if b['loss_last'] <= a['loss_last'] else 'worse'})",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES, help="train configs")
    parser.add_argument("--steps", type=int, default=60, help="training steps per recipe")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of the timings")
    parser.add_argument("--last", type=int, default=20, help="steps the loss is averaged over")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", type=int, default=4, help="small phantoms to train on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patch", type=int, default=0, help="cubic patch edge (0: recipe's)")
    parser.add_argument("--batch", type=int, default=0, help="patches per step (0: recipe's)")
    parser.add_argument("--matmul", type=int, default=1536, help="reference matmul size")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled step")
    parser.add_argument(
        "--independent-init",
        action="store_true",
        help="draw each recipe's network from the seed alone (default: the later recipes start "
        "from the first one's weights wherever name and shape agree)",
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [HELPER_FLAG]:
        helper_rank(json.loads(argv[1]))
        return 0
    args = parser.parse_args(argv)
    if args.steps <= args.warmup or len(args.recipes) < 2:
        parser.error("need --steps > --warmup and at least two --recipes")

    import warnings

    import torch

    from mefn.data.datasets import index_dataset
    from mefn.data.phantom_layouts import write_phantoms

    warnings.filterwarnings("ignore", message=".*TF32.*")
    torch.set_num_threads(args.threads)
    info = machine_info(threads=args.threads)
    print(
        f"torch {info['torch']}, CPU capability {info['cpu_capability']}, {info['cpu']}, "
        f"{args.threads} threads, load {info['load_average']}; {args.steps} steps per recipe "
        f"interleaved, timings are medians after {args.warmup}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="mefn_bench_train_") as tmp:
        data = Path(tmp) / "data"
        write_phantoms(data, n=args.cases, layout="nnunet", seed=args.seed, small=True)
        entries = index_dataset(data, layout="nnunet")
        recipes = [build_recipe(p, entries, Path(tmp) / "cache", args) for p in args.recipes]
        if not args.independent_init:  # before the helpers start: DDP sends rank 0's weights
            for recipe in recipes[1:]:
                shared, total = share_initial_weights(recipes[0].model, recipe.model)
                print(
                    f"{recipe.name}: {shared:,} of {total:,} weights start as "
                    f"{recipes[0].name}'s (same name and shape), the rest from seed {args.seed}",
                    flush=True,
                )
        parallel = [(r, p) for r, p in zip(recipes, args.recipes, strict=True) if r.processes > 1]
        if len(parallel) > 1:
            parser.error("at most one recipe may have processes > 1")
        for recipe in recipes:
            recipe.gflop_per_step = count_gflop(recipe) * recipe.processes
        # the FLOP count drew a batch: re-seed every sampler alike
        import numpy as np

        for recipe in recipes:
            recipe.sampler.rng = np.random.default_rng(args.seed)
        helpers = [
            (recipe, start_helpers(recipe, path, data, Path(tmp) / "cache", args))
            for recipe, path in parallel
        ]
        matmul: list[float] = []
        try:
            for step in range(args.steps):
                for recipe in recipes:
                    timed_step(recipe, step, args.steps, keep=step >= args.warmup)
                if step >= args.warmup:
                    torch.set_num_threads(args.threads)
                    matmul.append(matmul_gflops(args.matmul))
            if not args.no_profile:
                for recipe in recipes:
                    recipe.breakdown = profiled_breakdown(recipe, args.steps, args.steps)
        except BaseException:  # the helpers may be waiting inside a step: end them
            for _, started in helpers:
                for helper in started:
                    helper.kill()
            raise
        for recipe, started in helpers:
            stop_helpers(recipe, started)
    rows = [summarise(r, args.last) for r in recipes]
    matmul_med = statistics.median(matmul)
    for line in _report(rows, matmul_med, args):
        print(line)
    if args.json:
        from mefn.fileutil import atomic_write_text

        payload = {
            "machine": info,
            "settings": {
                **{k: v for k, v in vars(args).items() if k not in ("json", "recipes")},
                "recipes": [repo_relative(p) for p in args.recipes],
            },
            "matmul_gflops": matmul_med,
            "recipes": rows,
            "ratio_voxels_per_second": rows[-1]["voxels_per_second"] / rows[0]["voxels_per_second"],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
