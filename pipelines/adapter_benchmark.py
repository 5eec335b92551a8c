"""Adapter benchmark: fine-tune a 2-class base to head and neck (GTVp, GTVn), every adapter type.

    python -m pipelines.adapter_benchmark                  # the whole table (~110 min, 1 thread)
    python -m pipelines.adapter_benchmark --cases 5 --steps 40 --types lora lowbit full
    python -m pipelines.adapter_benchmark --report         # rewrite the doc from saved results

From the base weights (``--base``, default the bundled ``mefn_default``: background / lesion),
every adapter type of ``configs/adapters/`` is fine-tuned with new output heads for three
classes (background, GTVp, GTVn; ``AdapterConfig.heads``) on head-and-neck phantoms in the
HECKTOR layout, with 5, 10 and 25 training cases (``--cases``), plus full fine-tuning (every
weight, new heads) and head-only tuning (the frozen base with new heads, ``type: none``; this
is also the "frozen base" row, since a 2-class base cannot segment GTVp and GTVn as it is;
a base that already has the target's classes gets a ``base`` row scored as it is).

Data: ``--train-pool`` training phantoms (seeds 8,100,000,000 + i; the first N + 1 form the
folder for N cases, and ``mefn.training`` holds one of them out, unscored, so exactly N train)
and ``--val-cases`` validation phantoms (seeds 8,200,000,000 + i), the same for every run.
Studies are HECKTOR-2021-style crops (``--crop-mm`` boxes around a lesion, so a window or two
per case) unless ``--fov full``.

Every run uses ``mefn.training.train`` (the ``mefn finetune`` loop, ``configs/train/
finetune.yaml``) with the same budget: ``--steps`` steps of ``--batch`` patches of ``--patch``
voxels, the same learning rate and seed. Each run is a fresh subprocess (``--threads``
threads), which reports: unique trainable parameters (the adapter's ``num_parameters``, new
heads included) and their share of the base's parameters; the adapter file size
(``adapter_model.safetensors``; the full fine-tuning row: its weights file); peak memory while
training (CPU: the process's ``VmHWM``, peak resident memory, and its rise over the resident
memory before training; GPU: ``torch.cuda.max_memory_allocated``); seconds per step (median
over the steps after the first: a fresh process spends its first few steps creating oneDNN
kernels); and the validation score: ``Predictor(base, adapter=...)`` segments
each validation case on its CT grid and the HECKTOR 2022 aggregated Dice (DSCagg of GTVp and
of GTVn over all cases, and their mean; ``mefn.metrics.hecktor``; per-case Dice counted with
numpy rather than SimpleITK's filter, the same number up to rounding).

Targets, checked and printed: (1) at least one adapter type within 0.02 DSCagg of full
fine-tuning at every case count, with at most 2 % trainable parameters and a lower peak
memory than full fine-tuning; (2) the 1-bit adapter's file at most 1/25 of the same adapter
saved in fp32.

Resumable: each run's folder (``runs/<settings hash>/n<N>/<type>``) holds ``result.json``
when done and is skipped; an interrupted training resumes at its last epoch. Results go to
``--out`` (default ``runs/adapter_benchmark``); the table is printed and written into the
generated section of ``--doc`` (default ``docs/adapters.md``) after every run. Shrink with
``--types``, ``--cases``, ``--steps``, ``--val-cases``, ``--patch``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import _bench

REPO = _bench.REPO
DEFAULT_OUT = REPO / "runs" / "adapter_benchmark"
DEFAULT_DOC = REPO / "docs" / "adapters.md"
ADAPTERS = (
    "lora",
    "dora",
    "ia3",
    "norm_bias",
    "bottleneck",
    "shared_bottleneck",
    "compacter",
    "mosa",
    "lowbit",
    "paca",
    "bone",
    "gated",
    "lae",
)
FULL, HEAD_ONLY, BASE = "full", "head_only", "base"
TYPES = ADAPTERS + (FULL, HEAD_ONLY, BASE)
TRAIN_SEED = 81_000  # study seeds 8,100,000,000 + i (mefn.data.phantom_layouts.study_seed)
VAL_SEED = 82_000  # study seeds 8,200,000,000 + i
NUM_CLASSES = 3  # background, GTVp, GTVn
CHILD_FLAG = "--_child"
RESULT_TAG = "ADAPTER_BENCHMARK_RESULT "
BEGIN = "<!-- adapter_benchmark.py: generated section begins; edit the script, not this -->"
END = "<!-- adapter_benchmark.py: generated section ends -->"
TARGETS = {"dice_gap": 0.02, "trainable_pct": 2.0, "lowbit_ratio": 25.0}


def machine_info() -> dict[str, Any]:
    import peft

    return _bench.machine_info(peft=peft.__version__)


def peak_rss_mib() -> float:
    return _bench.proc_status_kib("VmHWM") / 1024


def rss_mib() -> float:
    return _bench.proc_status_kib("VmRSS") / 1024


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    result = _bench.run_module_child(
        "pipelines.adapter_benchmark", CHILD_FLAG, RESULT_TAG, spec, threads=int(spec["threads"])
    )
    result["process_seconds"] = result.pop("process_wall_seconds")
    return result


def write_doc(doc: Path, generated: str) -> None:
    """Replace the generated section of ``doc`` (or append it), keeping the rest."""
    _bench.write_generated_section(doc, BEGIN, END, generated, "Adapters")


def log(msg: str) -> None:
    print(f"[adapter-benchmark {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# machine and provenance
# --------------------------------------------------------------------------------------------
# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def ensure_phantoms(folder: Path, n: int, seed: int, fov: str, crop_mm: float) -> list[Path]:
    """``n`` head-and-neck phantoms in the HECKTOR layout (kept when already there)."""
    from mefn.data.phantoms import write_phantoms

    manifest = folder / "benchmark_phantoms.json"
    wanted = {"n": n, "seed": seed, "fov": fov, "crop_mm": crop_mm}
    if manifest.is_file() and json.loads(manifest.read_text()).get("spec") == wanted:
        return [Path(p) for p in json.loads(manifest.read_text())["ct"]]
    t0 = time.monotonic()
    options: dict[str, Any] = {"fov": fov}
    if fov == "crop":
        options["crop_mm"] = crop_mm
    paths = write_phantoms(
        folder, n=n, layout="hecktor", seed=seed, kind="headneck", overwrite=True, **options
    )
    manifest.write_text(json.dumps({"spec": wanted, "ct": [str(p) for p in paths]}, indent=1))
    log(f"wrote {n} phantoms to {folder} in {time.monotonic() - t0:.0f} s")
    return paths


def _partners(ct: Path) -> tuple[Path, Path, str]:
    """(PET image, label, case id) of a HECKTOR-layout ``<case>__CT.nii.gz``."""
    case_id = ct.name[: -len("__CT.nii.gz")]
    pet = ct.with_name(f"{case_id}__PT.nii.gz")
    label = ct.parent.parent / "labelsTr" / f"{case_id}.nii.gz"
    return pet, label, case_id


def subset_folder(root: Path, cts: list[Path]) -> Path:
    """A HECKTOR-layout folder of links to ``cts`` (and their PET and labels)."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for ct in cts:
        pet, label, case_id = _partners(ct)
        for src, dst in (
            (ct, root / "imagesTr" / ct.name),
            (pet, root / "imagesTr" / pet.name),
            (label, root / "labelsTr" / label.name),
        ):
            if not dst.exists():
                dst.symlink_to(src.resolve())
    return root


def precache(cts: list[Path], preprocess: Any, cache: Path) -> None:
    """Cache the training cases in model space once, outside the measured processes."""
    from mefn.data.cache import cache_case
    from mefn.io.discovery import load_case

    t0 = time.monotonic()
    for ct in cts:
        pet, label, case_id = _partners(ct)
        loader = functools.partial(load_case, ct=ct, pet=pet, label=label, case_id=case_id)
        cache_case(loader, preprocess, cache, case_id=case_id)
    log(f"cached {len(cts)} training cases in {time.monotonic() - t0:.0f} s")


# --------------------------------------------------------------------------------------------
# one run (in a fresh process)
# --------------------------------------------------------------------------------------------
def adapter_config(kind: str) -> Any:
    """The AdapterConfig of a row: a bundled adapter, or ``none`` (head-only), new heads.

    Bone also leaves out MEFN's 1- and 2-channel convolutions (tumour gates, translation
    heads, calibrator): their kernel matrices are smaller than one 4 x 4 block.
    """
    from mefn.adapters import HeadsConfig, load_adapter_config

    cfg = load_adapter_config("none" if kind == HEAD_ONLY else kind)
    return dataclasses.replace(cfg, heads=HeadsConfig(num_classes=NUM_CLASSES))


def train_config(spec: dict[str, Any]) -> Any:
    from mefn.config import from_dict
    from mefn.data.preprocess import PreprocessConfig
    from mefn.training import load_train_config

    base = load_train_config(REPO / "configs" / "train" / "finetune.yaml")
    steps = int(spec["steps"])
    per_epoch = min(base.steps_per_epoch, steps)
    epochs = max(1, math.ceil(steps / per_epoch))
    patch = int(spec["patch"])
    return dataclasses.replace(
        base,
        data=dataclasses.replace(
            base.data,
            root=spec["data"],
            layout="hecktor",
            val_fraction=1e-6,  # exactly one case held out (never scored: val_max_cases 0)
            cache_dir=spec["cache"],
        ),
        preprocess=from_dict(PreprocessConfig, spec["preprocess"], where="base card"),
        patch_size_vox=(patch, patch, patch),
        batch_size=int(spec["batch"]),
        epochs=epochs,
        steps_per_epoch=per_epoch,
        warmup_steps=min(base.warmup_steps, max(1, steps // 5)),
        lr=float(spec["lr"]),
        val_max_cases=0,
        early_stop_patience=10**6,
        seed=int(spec["seed"]),
        device=spec["device"],
        threads=int(spec["threads"]),
        init_weights=spec["base_weights"],
        adapter=spec["adapter_yaml"],
        num_classes=NUM_CLASSES,
    )


def child_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one row (unless ``base``), record its cost, then score the validation cases."""
    import torch

    from mefn.config import from_dict
    from mefn.model import ModelConfig
    from mefn.training import train

    torch.set_num_threads(int(spec["threads"]))
    run_dir = Path(spec["run_dir"])
    kind = spec["kind"]
    result: dict[str, Any] = {"kind": kind, "n_cases": spec["n_cases"]}
    cuda = spec["device"].startswith("cuda") and torch.cuda.is_available()
    if kind != BASE:
        cfg = train_config(spec)
        model_cfg = from_dict(ModelConfig, spec["model"], where="base card")
        times: list[float] = []

        def progress(event: dict[str, Any]) -> None:
            if event["event"] == "step":
                times.append(time.perf_counter())

        result["load_before"] = os.getloadavg()[0]
        rss_before = rss_mib()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        resume = (run_dir / "checkpoints" / "last_state.json").is_file()
        res = train(cfg, run_dir, resume=resume, progress=progress, model_cfg=model_cfg)
        result["peak_rss_mib"] = peak_rss_mib()
        result["rss_before_mib"] = rss_before
        result["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
        steps = np.diff(times)  # the first step (and its set-up) is left out
        result["seconds_per_step"] = float(np.median(steps)) if steps.size else math.nan
        result["seconds_per_step_mean"] = float(steps.mean()) if steps.size else math.nan
        result["steps_timed"] = int(steps.size)
        result["steps"] = cfg.epochs * cfg.steps_per_epoch
        result["train_seconds"] = res.seconds
        result["load_after"] = os.getloadavg()[0]
        result["resumed"] = resume
        result.update(_describe(run_dir, kind, spec))
    t0 = time.perf_counter()
    result["validation"] = evaluate(run_dir, kind, spec)
    result["eval_seconds"] = time.perf_counter() - t0
    return result


def _describe(run_dir: Path, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Trainable parameters, file size, and (1-bit) the fp32 size of the same adapter."""
    if kind == FULL:
        card = json.loads((run_dir / "model.json").read_text())
        weights = run_dir / "model.safetensors"
        return {
            "trainable": int(spec["base_parameters"])
            - int(spec["base_head_parameters"])
            + int(spec["new_head_parameters"]),
            "head_parameters": int(spec["new_head_parameters"]),
            "file_bytes": weights.stat().st_size,
            "train_cases": card["training"]["train_cases"],
        }
    from mefn.adapters.serialize import CONFIG_NAME, WEIGHTS_NAME

    folder = run_dir / "adapter"
    meta = json.loads((folder / CONFIG_NAME).read_text())
    card = json.loads((folder / "training.json").read_text())
    out: dict[str, Any] = {
        "trainable": int(meta["num_parameters"]),
        "head_parameters": int(spec["new_head_parameters"]),
        "file_bytes": (folder / WEIGHTS_NAME).stat().st_size,
        "train_cases": card["training"]["train_cases"],
        "targets": len(meta["targets"]),
    }
    if meta["config"]["quant"]["bits"]:
        out.update(_fp32_sizes(folder, spec))
    return out


def _fp32_sizes(folder: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """The low-bit adapter saved again unpacked (fp32), with and without the new heads."""
    from safetensors.torch import load_file, save_file

    from mefn.adapters import load_adapter, save_adapter
    from mefn.adapters.serialize import WEIGHTS_NAME
    from mefn.config import from_dict
    from mefn.fileutil import file_sha256
    from mefn.model import ModelConfig, build_model

    net = build_model(from_dict(ModelConfig, spec["model"], where="base card"))
    net.load_state_dict(load_file(spec["base_weights"]))
    base_hash = file_sha256(Path(spec["base_weights"]))
    handle = load_adapter(net, folder, base_hash)
    handle.config = dataclasses.replace(
        handle.config, quant=dataclasses.replace(handle.config.quant, packed=False)
    )
    fp32 = folder.parent / "adapter_fp32"
    save_adapter(handle, fp32, base_hash)
    tensors = load_file(str(fp32 / WEIGHTS_NAME))
    heads = tuple(f"{h}." for h in handle.config.heads.names)
    body = {k: v for k, v in tensors.items() if not k.startswith(heads)}
    packed = load_file(str(folder / WEIGHTS_NAME))
    packed_body = {k: v for k, v in packed.items() if not k.startswith(heads)}
    sizes = {}
    for name, state in (("fp32_body", body), ("packed_body", packed_body)):
        path = folder.parent / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        sizes[f"{name}_bytes"] = path.stat().st_size
        path.unlink()
    return {"fp32_file_bytes": (fp32 / WEIGHTS_NAME).stat().st_size, **sizes}


def evaluate(run_dir: Path, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """HECKTOR 2022 DSCagg of the run's model on the validation phantoms."""
    from mefn.inference import Predictor
    from mefn.io.discovery import load_case
    from mefn.metrics.hecktor import aggregate_hecktor2022
    from mefn.metrics.scoring import score_cases

    if kind == FULL:
        predictor = Predictor(run_dir, device=spec["device"], threads=int(spec["threads"]))
    elif kind == BASE:
        predictor = Predictor(
            spec["base_weights"], device=spec["device"], threads=int(spec["threads"])
        )
    else:
        predictor = Predictor(
            spec["base_weights"],
            adapter=run_dir / "adapter",
            device=spec["device"],
            threads=int(spec["threads"]),
        )
    if predictor.num_classes != NUM_CLASSES:
        raise RuntimeError(f"{kind}: the model has {predictor.num_classes} classes, not 3")
    loaders = []
    for ct_name in spec["val"]:
        pet, label_path, case_id = _partners(Path(ct_name))
        loaders.append(
            functools.partial(
                load_case, ct=Path(ct_name), pet=pet, label=label_path, case_id=case_id
            )
        )
    records = [s.metrics for s in score_cases(predictor, loaders, "hecktor2022")]
    cases = [r.to_dict() for r in records]
    summary = aggregate_hecktor2022(records)
    return {
        "dscagg_gtvp": summary["dscagg_gtvp"],
        "dscagg_gtvn": summary["dscagg_gtvn"],
        "dscagg_mean": summary["dscagg_mean"],
        "labels": predictor.labels,
        "cases": cases,
    }


# --------------------------------------------------------------------------------------------
# the whole table
# --------------------------------------------------------------------------------------------
def base_description(base: str) -> dict[str, Any]:
    """Weights path, card, model config, parameter counts of the base and of new heads."""
    from mefn.adapters import HeadsConfig
    from mefn.config import from_dict
    from mefn.fileutil import file_sha256
    from mefn.inference import resolve_weights
    from mefn.model import ModelConfig, build_model

    weights, card_path = resolve_weights(base)
    card = json.loads(card_path.read_text())
    model_cfg = from_dict(ModelConfig, card["model"], where="model card")
    net = build_model(model_cfg)
    heads = tuple(f"{h}." for h in HeadsConfig().names)
    params = dict(net.named_parameters())
    head_params = sum(p.numel() for n, p in params.items() if n.startswith(heads))
    new_heads = build_model(dataclasses.replace(model_cfg, num_classes=NUM_CLASSES))
    new_head_params = sum(p.numel() for n, p in new_heads.named_parameters() if n.startswith(heads))
    return {
        "weights": str(weights),
        "sha256": file_sha256(weights),
        "card": card,
        "model": card["model"],
        "num_classes": int(model_cfg.num_classes),
        "parameters": sum(p.numel() for p in params.values()),
        "head_parameters": int(head_params),
        "new_head_parameters": int(new_head_params),
    }


def plan_rows(types: list[str], base_classes: int) -> list[str]:
    rows = [t for t in types if t != BASE]
    if BASE in types:
        if base_classes == NUM_CLASSES:
            rows.append(BASE)
        else:
            log(
                f"base row left out: the base has {base_classes} classes, the target "
                f"{NUM_CLASSES}; the head_only row is the frozen base with new heads"
            )
    return rows


def run_all(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    base = base_description(args.base)
    cases = sorted(set(args.cases))
    pool = max(cases) + 1
    train_cts = ensure_phantoms(out / "data" / "train", pool, TRAIN_SEED, args.fov, args.crop_mm)
    val_cts = ensure_phantoms(
        out / "data" / "val", args.val_cases, VAL_SEED, args.fov, args.crop_mm
    )
    from mefn.config import from_dict
    from mefn.data.preprocess import PreprocessConfig

    preprocess = from_dict(PreprocessConfig, base["card"].get("preprocess", {}), where="card")
    cache = out / "cache" / (args.fov + (f"-{args.crop_mm:g}mm" if args.fov == "crop" else ""))
    precache(train_cts, preprocess, cache)
    rows = plan_rows(list(args.types), base["num_classes"])
    settings = {
        "base": args.base,
        "steps": args.steps,
        "batch": args.batch,
        "patch": args.patch,
        "lr": args.lr,
        "seed": args.seed,
        "threads": args.threads,
        "device": args.device,
        "cases": cases,
        "val_cases": args.val_cases,
        "fov": args.fov,
        "crop_mm": args.crop_mm,
        "train_seed": TRAIN_SEED,
        "val_seed": VAL_SEED,
    }
    # runs with other settings (or another base) live in another folder: never mixed up
    tag = hashlib.sha256(
        json.dumps({**settings, "cases": None, "base": base["sha256"]}, sort_keys=True).encode()
    ).hexdigest()[:10]
    results: dict[str, Any] = {
        "settings": settings,
        "runs_folder": str(out / "runs" / tag),
        "base": {k: v for k, v in base.items() if k != "card"},
        "machine": machine_info(),
        "command": _command(),
        "runs": {},
    }
    t_all = time.monotonic()
    todo = [
        (n, kind)
        for n in cases
        for kind in rows
        if not (out / "runs" / tag / f"n{n:02d}" / kind / "result.json").is_file()
    ]
    log(f"{len(todo)} of {len(cases) * len(rows)} runs to do ({out / 'runs' / tag})")
    ran = 0
    for n in cases:
        data = subset_folder(out / "data" / f"train_n{n}", train_cts[: n + 1])
        for kind in rows:
            run_dir = out / "runs" / tag / f"n{n:02d}" / kind
            key = f"{kind}/n{n}"
            done = run_dir / "result.json"
            if done.is_file():
                results["runs"][key] = json.loads(done.read_text())
                log(f"{key}: done already")
                continue
            run_dir.mkdir(parents=True, exist_ok=True)
            spec = {
                "kind": kind,
                "n_cases": n,
                "run_dir": str(run_dir),
                "data": str(data),
                "cache": str(cache),
                "val": [str(p) for p in val_cts],
                "base_weights": base["weights"],
                "model": base["model"],
                "preprocess": base["card"].get("preprocess", {}),
                "base_parameters": base["parameters"],
                "base_head_parameters": base["head_parameters"],
                "new_head_parameters": base["new_head_parameters"],
                "adapter_yaml": _adapter_yaml(run_dir, kind),
                **{k: settings[k] for k in ("steps", "batch", "patch", "lr", "seed")},
                "threads": args.threads,
                "device": args.device,
            }
            log(f"{key}: training {args.steps} steps")
            try:
                res = run_child(spec)
            except RuntimeError as exc:
                log(f"{key}: FAILED: {exc}")
                (run_dir / "error.txt").write_text(str(exc) + "\n")
                results["runs"][key] = {"kind": kind, "n_cases": n, "error": str(exc)}
                continue
            done.write_text(json.dumps(res, indent=1))
            results["runs"][key] = res
            ran += 1
            per_run = (time.monotonic() - t_all) / ran
            log(f"{key}: {_summary_line(res)}")
            log(
                f"{ran}/{len(todo)} runs in {(time.monotonic() - t_all) / 60:.1f} min, about "
                f"{per_run * (len(todo) - ran) / 60:.0f} min to go"
            )
            if res.get("train_cases", n) != n:
                log(f"{key}: WARNING trained on {res['train_cases']} cases, not {n}")
            (out / "results.json").write_text(json.dumps(results, indent=1))
            if not args.no_doc:
                write_doc(Path(args.doc), render_report(results))
    results["seconds"] = time.monotonic() - t_all
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def _adapter_yaml(run_dir: Path, kind: str) -> str | None:
    """Write the row's resolved adapter config beside the run (None: full fine-tuning)."""
    if kind in (FULL, BASE):
        return None
    from mefn.config import save_config

    path = run_dir / "adapter_config.yaml"
    save_config(adapter_config(kind), path)
    return str(path)


def _summary_line(res: dict[str, Any]) -> str:
    val = res["validation"]
    text = f"DSCagg {val['dscagg_mean']:.3f} (GTVp {val['dscagg_gtvp']:.3f}, "
    text += f"GTVn {val['dscagg_gtvn']:.3f})"
    if "trainable" in res:
        text += f", {res['trainable']} trainable, {res['file_bytes'] / 1024:.1f} KB"
        text += f", {res['seconds_per_step']:.2f} s/step, peak {res['peak_rss_mib']:.0f} MiB"
    return text


# --------------------------------------------------------------------------------------------
# table, targets, report
# --------------------------------------------------------------------------------------------
def table_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per type: cost figures (median over case counts) and DSCagg per case count."""
    runs = results["runs"]
    cases = results["settings"]["cases"]
    base_params = results["base"]["parameters"]
    kinds: list[str] = []
    for key in runs:
        kind = key.split("/")[0]
        if kind not in kinds:
            kinds.append(kind)
    rows = []
    for kind in kinds:
        mine = [runs.get(f"{kind}/n{n}") for n in cases]
        ok = [r for r in mine if r and "error" not in r]
        trained = [r for r in ok if "trainable" in r]

        def med(key: str, pool: list[dict[str, Any]] = trained) -> float:
            vals = [float(r[key]) for r in pool if r.get(key) is not None]
            return statistics.median(vals) if vals else math.nan

        row: dict[str, Any] = {
            "type": kind,
            "trainable": int(med("trainable")) if trained else 0,
            "trainable_pct": 100.0 * med("trainable") / base_params if trained else 0.0,
            "file_kb": med("file_bytes") / 1024 if trained else math.nan,
            "peak_rss_mib": max((r["peak_rss_mib"] for r in trained), default=math.nan),
            "delta_rss_mib": max(
                (r["peak_rss_mib"] - r["rss_before_mib"] for r in trained), default=math.nan
            ),
            "gpu_peak_mib": med("gpu_peak_mib"),
            "seconds_per_step": med("seconds_per_step"),
            "dice": {},
            "dice_gtvp": {},
            "dice_gtvn": {},
            "errors": [r.get("error") for r in mine if r and "error" in r],
        }
        for n, r in zip(cases, mine):
            if r and "error" not in r:
                row["dice"][n] = r["validation"]["dscagg_mean"]
                row["dice_gtvp"][n] = r["validation"]["dscagg_gtvp"]
                row["dice_gtvn"][n] = r["validation"]["dscagg_gtvn"]
        fp32 = [r for r in trained if "fp32_file_bytes" in r]
        if fp32:
            r = fp32[-1]
            row["fp32_ratio"] = r["fp32_file_bytes"] / r["file_bytes"]
            row["fp32_body_ratio"] = r["fp32_body_bytes"] / r["packed_body_bytes"]
        rows.append(row)
    return rows


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The two targets, each with its value, whether it is met, and the qualifying types."""
    rows = {r["type"]: r for r in table_rows(results)}
    cases = results["settings"]["cases"]
    checks: list[dict[str, Any]] = []
    full = rows.get(FULL)
    if full is not None and full["dice"]:
        qualifying, details = [], []
        for kind, row in rows.items():
            if kind not in ADAPTERS:
                continue
            gaps = [full["dice"][n] - row["dice"][n] for n in cases if n in row["dice"]]
            if len(gaps) != len([n for n in cases if n in full["dice"]]) or not gaps:
                continue
            memory_key = "gpu_peak_mib" if not math.isnan(full["gpu_peak_mib"]) else "peak_rss_mib"
            ok = (
                max(gaps) <= TARGETS["dice_gap"]
                and row["trainable_pct"] <= TARGETS["trainable_pct"]
                and row[memory_key] < full[memory_key]
            )
            details.append(
                f"{kind}: gap {max(gaps):+.3f}, {row['trainable_pct']:.2f} %, "
                f"{row[memory_key]:.0f} vs {full[memory_key]:.0f} MiB"
            )
            if ok:
                qualifying.append(kind)
        checks.append(
            {
                "what": (
                    f"an adapter within {TARGETS['dice_gap']} DSCagg of full fine-tuning at every "
                    f"case count, <= {TARGETS['trainable_pct']} % trainable, lower peak memory"
                ),
                "met": bool(qualifying),
                "value": ", ".join(qualifying) or "none",
                "details": details,
            }
        )
    low = rows.get("lowbit")
    if low is not None and "fp32_ratio" in low:
        checks.append(
            {
                "what": f"1-bit adapter file <= 1/{TARGETS['lowbit_ratio']:.0f} of its fp32 size",
                "met": low["fp32_ratio"] >= TARGETS["lowbit_ratio"],
                "value": (
                    f"1/{low['fp32_ratio']:.1f} (whole file, fp32 new heads included); "
                    f"adapter tensors alone 1/{low['fp32_body_ratio']:.1f}"
                ),
                "details": [],
            }
        )
    return checks


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def _dice_cell(results: dict[str, Any], row: dict[str, Any], n: int) -> str:
    """DSCagg of one type at ``n`` cases; ``failed`` for a run that failed, ``not run`` for one
    still to do (a report written part-way)."""
    if n in row["dice"]:
        return _f(row["dice"][n])
    return "failed" if f"{row['type']}/n{n}" in results["runs"] else "not run"


def render_table(results: dict[str, Any]) -> str:
    cases = results["settings"]["cases"]
    gpu = results["settings"]["device"].startswith("cuda")
    mem_head = "GPU peak MiB" if gpu else "peak RSS MiB (rise)"
    head = ["type", "trainable", "% of base", "file KB", mem_head, "s/step"]
    head += [f"DSCagg n={n}" for n in cases]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table_rows(results):
        if gpu:
            mem = _f(row["gpu_peak_mib"], 0)
        else:
            mem = f"{_f(row['peak_rss_mib'], 0)} ({_f(row['delta_rss_mib'], 0)})"
        cells = [
            row["type"],
            f"{row['trainable']:,}",
            _f(row["trainable_pct"], 2),
            _f(row["file_kb"], 1),
            mem,
            _f(row["seconds_per_step"], 2),
        ]
        cells += [_dice_cell(results, row, n) for n in cases]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_report(results: dict[str, Any]) -> str:
    s, m, b = results["settings"], results["machine"], results["base"]
    cases = s["cases"]
    parts = [
        BEGIN,
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {m['cpu']} ({m['cores']} cores), GPU {m['gpu'] or 'none'}, device "
        f"{s['device']}, {s['threads']} threads; load average {m['load_average']} at the start.  ",
        f"Versions: mefn {m['mefn']} (commit {m['commit']}), torch {m['torch']}, MONAI "
        f"{m['monai']}, peft {m['peft']}, Python {m['python']}; {m['date_utc']}.  ",
        f"Base: `{s['base']}` ({b['num_classes']} classes, {b['parameters']:,} parameters, sha256 "
        f"{b['sha256'][:12]}...). New heads for background / GTVp / GTVn: "
        f"{b['new_head_parameters']} parameters, counted in every row.  ",
        f"Budget per run: {s['steps']} steps x {s['batch']} patches of {s['patch']}^3 voxels, "
        f"lr {s['lr']}, seed {s['seed']}. Data: head-and-neck phantoms (HECKTOR layout, "
        f"{s['fov']} field of view"
        + (f", {s['crop_mm']:.0f} mm boxes" if s["fov"] == "crop" else "")
        + f"), {', '.join(str(n) for n in cases)} training cases (seeds {s['train_seed']}), "
        f"{s['val_cases']} fixed validation cases (seeds {s['val_seed']}).",
        "",
        "DSCagg: HECKTOR 2022 aggregated Dice, mean of GTVp and GTVn over the validation cases. "
        "Parameters, file size, memory and time: median over the case counts (memory: the "
        "largest). Peak RSS is the whole training process (Python, torch, MONAI, cached data "
        "included); the rise is over its resident memory just before training.",
        "",
        render_table(results),
        "",
    ]
    rows = table_rows(results)
    n = cases[-1]
    if any(n in r["dice"] for r in rows):
        parts += ["Per label at the largest case count (DSCagg GTVp / GTVn):", ""]
        parts.append(
            ", ".join(
                f"{r['type']} {_f(r['dice_gtvp'].get(n))} / {_f(r['dice_gtvn'].get(n))}"
                for r in rows
                if n in r["dice"]
            )
            + "."
        )
        parts.append("")
    checks = check_targets(results)
    if checks:
        parts += ["Targets:", ""]
        for c in checks:
            parts.append(f"- {'met' if c['met'] else 'MISSED'}: {c['what']}: {c['value']}")
        parts.append("")
    failed = [r for r in rows if r["errors"]]
    for r in failed:
        parts.append(f"- {r['type']} failed: {r['errors'][0][:200]}")
    loads = [
        r[k] for r in results["runs"].values() for k in ("load_before", "load_after") if k in r
    ]
    if loads:
        parts.append(
            f"1-minute load average sampled before and after each training: at most "
            f"{max(loads):.2f} (the benchmark's own training adds about {s['threads']}; much "
            "more means other work shared the cores and inflated the timings)."
        )
        parts.append("")
    if "seconds" in results:
        parts.append(
            f"Last invocation: {results['seconds'] / 60:.1f} min (runs done before skipped)."
        )
        parts.append("")
    parts.append(END)
    return "\n".join(parts)


def print_report(results: dict[str, Any]) -> None:
    print(render_table(results))
    for c in check_targets(results):
        print(f"target {'met' if c['met'] else 'MISSED'}: {c['what']}: {c['value']}")
        for d in c["details"]:
            print(f"    {d}")


def _command() -> str:
    return _bench.command_line("pipelines.adapter_benchmark")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--base", default="default", help="base weights (name, file or run folder)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="results folder (%(default)s)")
    p.add_argument("--doc", default=str(DEFAULT_DOC), help="report to update (%(default)s)")
    p.add_argument("--no-doc", action="store_true", help="leave the doc alone")
    p.add_argument("--report", action="store_true", help="only rewrite the doc from results")
    p.add_argument("--types", nargs="+", default=list(TYPES[:-1]), choices=TYPES)
    p.add_argument("--cases", nargs="+", type=int, default=[5, 10, 25], help="training cases")
    p.add_argument("--val-cases", type=int, default=8, help="fixed validation phantoms")
    p.add_argument("--steps", type=int, default=200, help="training steps per run (all types)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--patch", type=int, default=48, help="patch edge in voxels")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fov", choices=("crop", "full", "random"), default="crop")
    p.add_argument("--crop-mm", type=float, default=144.0, help="crop box side (%(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (%(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [CHILD_FLAG]:
        result = child_run(json.loads(argv[1]))
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0
    args = build_parser().parse_args(argv)
    if min(args.cases) < 1 or args.val_cases < 1 or args.steps < 1:
        build_parser().error("--cases, --val-cases and --steps must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from mefn.errors import MefnError

    try:
        return _main(args, out)
    except MefnError as exc:
        print(f"adapter_benchmark: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _main(args: argparse.Namespace, out: Path) -> int:
    if args.report:
        saved = out / "results.json"
        if not saved.is_file():
            build_parser().error(f"no saved results in {saved}; run the benchmark first")
        results = json.loads(saved.read_text())
    else:
        results = run_all(args, out)
    if not args.no_doc:
        write_doc(Path(args.doc), render_report(results))
    print_report(results)
    log(f"results in {out}" + ("" if args.no_doc else f", report in {args.doc}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
