"""Which adapter adapts MEFN to real sarcoma PET/CT: every type, cross-validated by patient.

    python -m pipelines.sts_adapters --stage screen      # every type on fold 0
    python -m pipelines.sts_adapters --stage folds       # all 5 folds: full, scratch, 3 best
    python -m pipelines.sts_adapters --report            # rewrite the table from the results
    python -m pipelines.sts_adapters --stage screen --types compacter full --steps 100
    python -m pipelines.sts_adapters --stage ship --types compacter   # the bundled `sts`

Data: the 25 real FDG PET/CT crops of ``../shared/data/sts`` (TCIA Soft-tissue-Sarcoma,
Vallieres et al. 2015, DOI 10.7937/K9/TCIA.2015.7GO2GSKS, CC BY 3.0; IBSI crops), split by
the fixed folds of ``configs/datasets/sts_folds.yaml`` (5 cases held out per fold).

Rows, each trained from the bundled weights (``--base``) with ``configs/train/
sts_finetune.yaml`` (adapters) or ``configs/train/sts_full.yaml`` (full, scratch) and the same
budget (``--steps`` steps of 2 patches of 48^3 voxels at 4 mm, seed 0): every adapter type of
``configs/adapters/`` (the base frozen), ``full`` (every weight), ``head_only`` (adapter type
``none``: only the output heads train), ``scratch`` (MEFN from random weights on the crops
alone) and ``frozen`` (the base as it is, no training). Each row reports: trainable parameters
and their share of the base, the adapter file size, peak resident memory of the training
process, seconds per step (median, first step left out), and the Dice of each held-out case
on its CT grid against ``CT/mask.nii.gz`` (``mefn.inference.Predictor`` in one pass, with the
card's other post-processing; the mean and median over the held-out cases).

``--stage screen`` runs every row on ``--screen-fold``; ``--stage folds`` runs the remaining
folds for ``full``, ``scratch`` and the three adapter types with the best screening Dice among
those with at most 2 % trainable parameters (or ``--types``).

``--stage ship`` trains the one type of ``--types`` (whose five folds must be done at the same
``--steps``) on all 25 cases (fold ``all``: no validation, the last weights) and installs it as
the bundled adapter ``mefn/weights/adapters/sts/`` (``mefn segment --adapter sts``) with a
``card.json`` that names the data, its licence and attribution, the folds and their figures.
The adapter keeps the base card's post-processing except the test-time mirroring: one pass,
as the folds scored it.

Resumable and kept: each run is a folder ``<out>/<row>/fold<k>/`` whose ``result.json`` marks
it done (a run without one resumes its training where it stopped). The default ``--out`` is
``campaigns/sts_adapters`` in the repository: the results and the small adapter files are
meant to be committed (the full fine-tuning and scratch weights, the caches and the logs are
left out by the folder's ``.gitignore``), so a later session continues the table.
The table is written into the generated section of ``--doc`` (``docs/adapters.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import _bench

REPO = _bench.REPO
DEFAULT_DATA = REPO.parent / "shared" / "data" / "sts"
DEFAULT_OUT = REPO / "campaigns" / "sts_adapters"
DEFAULT_DOC = REPO / "docs" / "adapters.md"
FOLDS = REPO / "configs" / "datasets" / "sts_folds.yaml"
ADAPTER_CONFIG = REPO / "configs" / "train" / "sts_finetune.yaml"
FULL_CONFIG = REPO / "configs" / "train" / "sts_full.yaml"
ADAPTERS = (
    "compacter",
    "shared_bottleneck",
    "norm_bias",
    "ia3",
    "bone",
    "lora",
    "dora",
    "bottleneck",
    "mosa",
    "lowbit",
    "paca",
    "gated",
    "lae",
)
FULL, SCRATCH, HEAD_ONLY, FROZEN = "full", "scratch", "head_only", "frozen"
#: the first campaign's budget: its rows' folders carry no suffix, other budgets' ``<type>@<steps>``
BASE_STEPS = 200
SHIPPED = "sts"  # the bundled adapter's name: mefn/weights/adapters/sts
ALL = "all"  # the fold of the shipped adapter: every case trains
REFERENCES = (FULL, SCRATCH, HEAD_ONLY, FROZEN)
MAX_TRAINABLE_PERCENT = 2.0
#: plain SUV >= 2.5 on the 25 cases, Dice on the CT grid (pipelines.eval_sts, 2026-12-04)
SUV25_DICE_MEAN = 0.456
CHILD_FLAG = "--_child"
RESULT_TAG = "STS_ADAPTERS_RESULT "
BEGIN = "<!-- sts_adapters.py: generated section begins -->"
END = "<!-- sts_adapters.py: generated section ends -->"
GITIGNORE = "# written by pipelines/sts_adapters.py: keep results and adapters, not these\n" + (
    "*/*/cache/\n*/*/tensorboard/\n*/*/checkpoints/\n*/*/*.safetensors\n"
)


def log(msg: str) -> None:
    print(f"[sts-adapters {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# one run (a child process)
# --------------------------------------------------------------------------------------------
def train_config(spec: dict[str, Any]) -> Any:
    """The TrainConfig of one row and fold, at the run's step budget."""
    from dataclasses import replace

    from mefn.config import from_dict
    from mefn.data.preprocess import PreprocessConfig
    from mefn.training import load_train_config

    kind = spec["kind"]
    base = load_train_config(FULL_CONFIG if kind in (FULL, SCRATCH) else ADAPTER_CONFIG)
    steps = int(spec["steps"])
    per_epoch = min(base.steps_per_epoch, steps)
    return replace(
        base,
        data=replace(
            base.data,
            root=spec["data"],
            folds=str(FOLDS),
            fold=spec["fold"] if spec["fold"] == ALL else int(spec["fold"]),
            cache_dir=None,
        ),
        preprocess=from_dict(PreprocessConfig, spec["preprocess"], where="base card"),
        epochs=max(1, math.ceil(steps / per_epoch)),
        steps_per_epoch=per_epoch,
        val_every=10**6,  # held-out cases are scored after training, on their CT grid
        val_max_cases=0,
        early_stop_patience=10**6,
        threads=int(spec["threads"]),
        device="cpu",
        init_weights=None if kind == SCRATCH else spec["base_weights"],
        adapter=None if kind in (FULL, SCRATCH) else ("none" if kind == HEAD_ONLY else kind),
        checkpoint_minutes=10.0,
    )


def child_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one row on one fold (unless frozen), then score its held-out cases."""
    import torch

    from mefn.config import from_dict
    from mefn.model import ModelConfig
    from mefn.training import train

    torch.set_num_threads(int(spec["threads"]))
    run_dir = Path(spec["run_dir"])
    kind = spec["kind"]
    result: dict[str, Any] = {"kind": kind, "fold": spec["fold"], "steps": 0}
    if kind != FROZEN:
        cfg = train_config(spec)
        times: list[float] = []

        def progress(event: dict[str, Any]) -> None:
            if event["event"] == "step":
                times.append(time.perf_counter())

        resume = (run_dir / "checkpoints" / "last_state.json").is_file()
        res = train(
            cfg,
            run_dir,
            resume=resume,
            progress=progress,
            model_cfg=from_dict(ModelConfig, spec["model"], where="base card"),
        )
        steps = np.diff(times)
        result.update(
            steps=cfg.epochs * cfg.steps_per_epoch,
            seconds_per_step=float(np.median(steps)) if steps.size else math.nan,
            train_seconds=res.seconds,
            peak_rss_mib=_bench.proc_status_kib("VmHWM") / 1024,
            resumed=resume,
            load_average=_bench.load_average(),
        )
    result.update(describe(run_dir, kind, spec))
    if spec["fold"] == ALL:  # nothing held out to score
        return result
    t0 = time.perf_counter()
    result["cases"] = evaluate(run_dir, kind, spec)
    result["eval_seconds"] = time.perf_counter() - t0
    dices = [c["dice"] for c in result["cases"]]
    result["dice_mean"] = float(np.mean(dices))
    result["dice_median"] = float(np.median(dices))
    return result


def describe(run_dir: Path, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Trainable parameters and the file a user would ship for this row."""
    if kind == FROZEN:
        return {"trainable": 0, "file_bytes": 0}
    if kind in (FULL, SCRATCH):
        weights = run_dir / "model.safetensors"
        return {"trainable": int(spec["base_parameters"]), "file_bytes": weights.stat().st_size}
    from mefn.adapters.serialize import CONFIG_NAME, WEIGHTS_NAME

    folder = run_dir / "adapter"
    meta = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    return {
        "trainable": int(meta["num_parameters"]),
        "file_bytes": (folder / WEIGHTS_NAME).stat().st_size,
        "targets": len(meta["targets"]),
    }


def evaluate(run_dir: Path, kind: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Dice of each held-out case on its CT grid (``eval_sts.score_case``), one pass (no
    test-time mirroring), the card's other post-processing."""
    from mefn.data.datasets import load_folds
    from mefn.inference import Predictor

    if kind in (FULL, SCRATCH):
        predictor = Predictor(run_dir, device="cpu", threads=int(spec["threads"]), tta_axes=())
    else:
        predictor = Predictor(
            spec["base_weights"],
            adapter=None if kind == FROZEN else run_dir / "adapter",
            device="cpu",
            threads=int(spec["threads"]),
            tta_axes=(),
        )
    held_out = load_folds(FOLDS)[int(spec["fold"])]
    data = Path(spec["data"])
    from pipelines.eval_sts import score_case

    return [score_case(predictor, data / case) for case in held_out]


# --------------------------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------------------------
def base_spec(args: argparse.Namespace) -> dict[str, Any]:
    from mefn.inference import resolve_weights

    weights, card_path = resolve_weights(args.base)
    card = json.loads(card_path.read_text(encoding="utf-8"))
    from safetensors.torch import load_file

    n_params = sum(int(t.numel()) for t in load_file(str(weights)).values())
    return {
        "base_weights": str(weights),
        "model": card["model"],
        "preprocess": card.get("preprocess", {}),
        "base_parameters": n_params,
        "data": str(Path(args.data).resolve()),
        "steps": args.steps,
        "threads": args.threads,
    }


def row_name(kind: str, steps: int) -> str:
    """The folder (and table row) of ``kind`` trained for ``steps`` steps."""
    return kind if steps == BASE_STEPS or kind == FROZEN else f"{kind}@{steps}"


def run_one(out: Path, kind: str, fold: int | str, spec: dict[str, Any]) -> dict[str, Any]:
    run_dir = out / row_name(kind, spec["steps"]) / (ALL if fold == ALL else f"fold{fold}")
    done = run_dir / "result.json"
    if done.is_file():
        saved: dict[str, Any] = json.loads(done.read_text(encoding="utf-8"))
        if saved.get("steps_budget") == spec["steps"] or kind == FROZEN:
            return saved
        log(f"{kind} fold {fold}: saved with another step budget; run again")
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"{kind} fold {fold}: {'scoring' if kind == FROZEN else 'training'} ...")
    result = _bench.run_module_child(
        "pipelines.sts_adapters",
        CHILD_FLAG,
        RESULT_TAG,
        {**spec, "kind": kind, "fold": fold, "run_dir": str(run_dir)},
        threads=int(spec["threads"]),
    )
    result["steps_budget"] = spec["steps"]
    result["process_seconds"] = result.pop("process_wall_seconds")
    from mefn.fileutil import atomic_write_text

    atomic_write_text(done, json.dumps(result, indent=1))
    if "dice_mean" in result:
        log(
            f"{kind} fold {fold}: Dice mean {result['dice_mean']:.3f}, "
            f"median {result['dice_median']:.3f}"
        )
    return result


def load_results(out: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """Each row's (folder's, :func:`row_name`) results by fold."""
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(out.glob("*/fold*/result.json")):
        res = json.loads(path.read_text(encoding="utf-8"))
        results.setdefault(path.parent.parent.name, {})[int(res["fold"])] = res
    return results


def best_adapters(results: dict[str, Any], fold: int, steps: int, n: int = 3) -> list[str]:
    """The ``n`` adapter types with the best Dice on ``fold`` at ``steps`` steps within the
    parameter limit."""
    first: dict[str, Any] = next(iter(results.get(FULL, {}).values()), {})
    base = first.get("trainable")
    ranked = []
    for kind in ADAPTERS:
        res = results.get(row_name(kind, steps), {}).get(fold)
        if res is None:
            continue
        share = 100.0 * res["trainable"] / base if base else 0.0
        if share <= MAX_TRAINABLE_PERCENT:
            ranked.append((res["dice_mean"], kind))
    return [kind for _, kind in sorted(ranked, reverse=True)[:n]]


def _base_checks(base_weights: str) -> dict[str, Any]:
    """The PET check and lesion floor of the base card (the bundled one's when
    ``base_weights`` is not a file), as an adapter card pins them."""
    from mefn.registry import read_model_card, resolve_weights
    from mefn.settings import PostprocessSettings

    base = base_weights if Path(base_weights).is_file() else "default"
    settings = PostprocessSettings.from_card(read_model_card(resolve_weights(base)[1])[0])
    return {"pet_check": settings.pet_check.to_json(), "min_lesion_ml": settings.min_lesion_ml}


def ship(out: Path, kind: str, spec: dict[str, Any], target: Path) -> Path:
    """Train ``kind`` on every case and install it as the bundled adapter ``target``.

    The card written holds no lesion threshold and no trust: ``python -m pipelines.trust_sts
    --stage card`` adds them from the folds' held-out predictions, after this."""
    from mefn.fileutil import atomic_write_text

    row = row_name(kind, spec["steps"])
    folds = load_results(out).get(row, {})
    budgets = {r.get("steps_budget") for r in folds.values()}
    if kind in REFERENCES or sorted(folds) != list(range(5)) or budgets != {spec["steps"]}:
        raise SystemExit(
            f"sts_adapters: --stage ship needs an adapter type whose 5 folds are done at "
            f"--steps {spec['steps']}; {kind} has folds {sorted(folds)} at {sorted(map(str, budgets))} steps"
            " (run --stage folds --types it first)"
        )
    result = run_one(out, kind, ALL, spec)
    source = out / row / ALL / "adapter"
    dices = [c["dice"] for r in folds.values() for c in r["cases"]]
    card = {
        "name": SHIPPED,
        "description": "MEFN adapted to FDG PET/CT of soft-tissue sarcomas of the extremities "
        "(GTV incl. non-avid parts), fields of view cropped about 5 cm around the tumour",
        "adapter_type": kind,
        "trainable_parameters": result["trainable"],
        "data": {
            "cases": 25,
            "source": "TCIA Soft-tissue-Sarcoma (IBSI crops of oncoray/mirp and theibsi/data_sets"
            "), one scanner (GE Discovery ST), contour CT/mask.nii.gz",
            "licence": "CC BY 3.0",
            "attribution": "Vallieres M, et al. (2015). Data from: A radiomics model from joint "
            "FDG-PET and MRI texture features for the prediction of lung metastases in soft-tissue "
            "sarcomas of the extremities. The Cancer Imaging Archive, DOI "
            "10.7937/K9/TCIA.2015.7GO2GSKS; Vallieres et al., Phys. Med. Biol. 60:5471 (2015); "
            "Clark et al., J. Digit. Imaging 26:1045 (2013)",
        },
        "training": {
            "base": Path(spec["base_weights"]).name,
            "steps": spec["steps"],
            "patches_per_step": 2,
            "seconds": result.get("train_seconds"),
            "config": "configs/train/sts_finetune.yaml (fold all)",
            "command": _command(),
        },
        "cross_validation": {
            "folds": "configs/datasets/sts_folds.yaml",
            "dice_mean": float(np.mean(dices)),
            "dice_median": float(np.median(dices)),
            "per_fold": {str(k): folds[k]["dice_mean"] for k in sorted(folds)},
            "per_case": {
                c["case"]: round(c["dice"], 4) for r in folds.values() for c in r["cases"]
            },
            "scored": "one pass, the base card's post-processing, Dice on the CT grid",
            "suv_2_5_dice_mean": SUV25_DICE_MEAN,
        },
        # the folds were scored in one pass: so is the adapter run (--tta mirrors); the base
        # card's PET check and floor they were scored with are pinned here, so that another
        # base card (e.g. a recalibrated one) leaves the adapter's results as they were
        "postprocess": {"tta_axes": [], **_base_checks(spec["base_weights"])},
        "note": "Not calibrated on sarcoma: no lesion confidence; lesions are flagged by mean u.",
    }
    target.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (target / name).write_bytes((source / name).read_bytes())
    atomic_write_text(target / "card.json", json.dumps(card, indent=1) + "\n")
    log(f"{kind}: trained on all 25 cases, installed as {target}")
    return target


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _steps(result: dict[str, Any]) -> int:
    """The step budget a run was made with (0: frozen, no training)."""
    if result["kind"] == FROZEN:
        return 0
    return int(result.get("steps_budget") or result.get("steps") or 0)


def _budgets(results: dict[str, Any]) -> str:
    """The step budgets of the runs in the table (one number when they agree)."""
    found = sorted({_steps(r) for folds in results.values() for r in folds.values()} - {0})
    return "/".join(str(b) for b in found) or "no"


def render_report(results: dict[str, Any], spec: dict[str, Any], command: str) -> str:
    base = int(spec["base_parameters"])
    lines = [
        BEGIN,
        "",
        "## Real sarcoma PET/CT: which adapter (generated by `pipelines/sts_adapters.py`)",
        "",
        f"Command: `{command}`  ",
        "Machine: {cpu} ({cores} cores, torch CPU capability {cpu_capability}), torch {torch}, "
        "mefn {mefn} (commit {commit}), {date_utc}.  ".format(**_bench.machine_info()),
        f"Base: `{Path(spec['base_weights']).name}` ({base:,} parameters). Budget per run: "
        f"{_budgets(results)} steps of 2 patches of 48^3 voxels at 4 mm, seed 0, "
        f"{spec['threads']} thread(s). Data: 25 real FDG PET/CT crops (TCIA Soft-tissue-Sarcoma, "
        "Vallieres et al. 2015, CC BY 3.0), fixed folds `configs/datasets/sts_folds.yaml`, 5 "
        "held-out cases per fold, Dice on the CT grid against `CT/mask.nii.gz`. Plain SUV >= 2.5 "
        f"on the same cases: mean Dice {SUV25_DICE_MEAN}.",
        "",
        "| row | steps | trainable | % of base | file KB | peak RSS MiB | s/step | folds | "
        "Dice mean | Dice median | per fold |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = [*REFERENCES, *ADAPTERS]

    def rank(row: str) -> tuple[int, int]:
        first = next(iter(results[row].values()))
        kind = first["kind"]
        return (order.index(kind) if kind in order else len(order), _steps(first))

    for row in sorted(results, key=rank):
        folds = results[row]
        dices = [c["dice"] for r in folds.values() for c in r["cases"]]
        first = next(iter(folds.values()))
        steps = [r["seconds_per_step"] for r in folds.values() if "seconds_per_step" in r]
        rss = [r["peak_rss_mib"] for r in folds.values() if "peak_rss_mib" in r]
        per_fold = ", ".join(f"{k}: {folds[k]['dice_mean']:.3f}" for k in sorted(folds))
        lines.append(
            f"| {first['kind']} | {_steps(first) or '-'} | {first['trainable']:,} | "
            f"{100 * first['trainable'] / base:.2f} | "
            f"{first['file_bytes'] / 1024:.1f} | {_f(max(rss) if rss else None, 0)} | "
            f"{_f(statistics.median(steps) if steps else None, 2)} | {len(folds)} | "
            f"{_f(float(np.mean(dices)))} | {_f(float(np.median(dices)))} | {per_fold} |"
        )
    lines += ["", END]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--stage", choices=("screen", "folds", "ship"), default="screen")
    p.add_argument("--types", nargs="*", default=None, help="rows to run (default: the stage's)")
    p.add_argument("--screen-fold", type=int, default=0)
    p.add_argument(
        "--steps",
        type=int,
        default=BASE_STEPS,
        help=f"training steps per run (rows of other budgets than {BASE_STEPS}: <type>@<steps>)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--base", default="default")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--doc", default=str(DEFAULT_DOC))
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("--report", action="store_true", help="only rewrite the table")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [CHILD_FLAG]:
        print(RESULT_TAG + json.dumps(child_run(json.loads(argv[1]))), flush=True)
        return 0
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    spec = base_spec(args)
    if args.stage == "ship" and not args.report:
        if not args.types or len(args.types) != 1:
            build_parser().error("--stage ship takes one adapter type in --types")
        from mefn.registry import ADAPTERS_DIR

        ship(out, args.types[0], spec, ADAPTERS_DIR / SHIPPED)
        return 0
    if not args.report:
        if args.stage == "screen":
            plan = [(k, args.screen_fold) for k in (args.types or [*REFERENCES, *ADAPTERS])]
        else:
            rows = args.types or [
                FULL,
                SCRATCH,
                *best_adapters(load_results(out), args.screen_fold, args.steps),
            ]
            plan = [(k, f) for k in rows for f in range(5)]
        for kind, fold in plan:
            run_one(out, kind, fold, spec)
            if not args.no_doc:
                _write(args, load_results(out), spec)
    results = load_results(out)
    if not results:
        build_parser().error(f"no results in {out}; run a stage first")
    if not args.no_doc:
        _write(args, results, spec)
    print(render_report(results, spec, _command()))
    return 0


def _write(args: argparse.Namespace, results: dict[str, Any], spec: dict[str, Any]) -> None:
    _bench.write_generated_section(
        Path(args.doc), BEGIN, END, render_report(results, spec, _command()), "Adapters"
    )


def _command() -> str:
    return _bench.command_line("pipelines.sts_adapters")


if __name__ == "__main__":
    sys.exit(main())
